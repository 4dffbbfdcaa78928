/* The CUDA Mamba-2 SSD (src/backend/cuda/ssd.cu: the chunked forward and backward), run by the emulator (emu.h) on the
 * CPU, against the CPU's chunked SSD on the same inputs: y and the carried state, then dx, dB, dC, ddt, dA_log,
 * d(dt bias), dD; with float32 products (FFMA, within test_ops's tolerances) and with tf32 tensor-core products
 * (ssd_args.tf32, mixed precision). tf32's bound is relative to the problem's conditioning: some outputs (ddt above
 * all: differences of row and column sums, then a cumsum) move far more than their inputs, so the CPU's SSD is run
 * again on x, B, C and dy rounded to tf32, and the kernel's error may be at most TF32_FACTOR times what that rounding
 * alone changes (or 1e-3 of the output's scale, if more). Inputs sit between NaN guard zones (a read outside shows in
 * the results), outputs between sentinels (checked after); with tf32, y asked in bf16 must be the float32 y rounded,
 * bit for bit (the fused output kernel rounds its own sums). Then the gated RMSNorm, float32 and with lean training's
 * bf16 y, z and out. Built and run by tests/emu/run.sh. */
extern "C" {
#include "backend/cpu/cpu_ops.h"
#include "common.h"
#include "ops/ops.h"
void ssd_fwd_cuda(const ssd_args *a, mat y, float *state);
void ssd_bwd_cuda(const ssd_args *a, const ssd_grads *gr, const float *dy);
void gated_rmsnorm_fwd_cuda(mat out, mat y, mat z, const float *w, int rows, int D, int G, float eps);
void gated_rmsnorm_bwd_cuda(float *dy, mat dz, float *dw, const float *dout, mat y, mat z, const float *w, int rows,
                            int D, int G, float eps);
#include "backend/host_bf16.h"
}

/* ssd.cu rounds a float32 result into a bf16 one through convert_rows_cuda where its kernels do not write bf16
 * themselves (matmul.cu, not emulated): the host's rounding, the same round to nearest even */
extern "C" void convert_rows_cuda(mat dst, mat src, int rows, int cols) {
    if (!mat_h(dst) || !mat_f(src)) {
        fprintf(stderr, "emu: convert_rows_cuda is emulated from float32 to bf16 only\n");
        abort();
    }
    for (int r = 0; r < rows; r++)
        host_bf16_from_f32(mat_h(dst) + (size_t)r * dst.ld, mat_f(src) + (size_t)r * src.ld, (size_t)cols);
}

#include "emu_check.h"

static const float SENT = -12345.0f;
#define TF32_FACTOR 4.0

/* the largest relative errors of g against ref: dx | dB | dC (the written columns, not the rows' padding), ddt,
 * and the per-head sums dA_log, d(dt bias), dD */
static void grad_errs(const ssd_args *s, const ssd_grads *g, const ssd_grads *ref, double *ex, double *edt,
                      double *eh) {
    const size_t rows = (size_t)s->B * s->T;
    const int w = s->H * s->P + 2 * s->G * s->N;
    *ex = 0, *edt = 0, *eh = 0;
    for (size_t r = 0; r < rows; r++) {
        *ex = fmax(*ex, rel_err(g->dx + r * g->ldd, ref->dx + r * ref->ldd, w));
        *edt = fmax(*edt, rel_err(g->ddt + r * g->ldddt, ref->ddt + r * ref->ldddt, s->H));
    }
    *eh = fmax(rel_err(g->dA_log, ref->dA_log, s->H),
               fmax(rel_err(g->ddt_bias, ref->ddt_bias, s->H), rel_err(g->dDv, ref->dDv, s->H)));
}


/* q: B, T, H, P, N, G, chunk (as test_ops's SSD cases: x | B | C in rows padded by 3, or 4 for whole chunks, dt raw
 * in rows of H + 1) */
static void run_case(const int *q, int tf32, const char *mode, int fused = 0) {
    case_failures = 0;
    setenv("SSM_SSD_FUSED", fused == 2 ? "2" : fused ? "1" : "0", 1);
    rng_t rng = {0x55d0u + (uint64_t)(q[0] * 7 + q[1] * 131 + q[2] * 3 + q[3] * 17 + q[4] * 5 + q[5] + q[6])};
    ssd_args s = {};
    s.B = q[0], s.T = q[1], s.H = q[2], s.P = q[3], s.N = q[4], s.G = q[5], s.chunk = q[6];
    const size_t rows = (size_t)s.B * s.T, HP = (size_t)s.H * s.P, PN = (size_t)s.P * s.N;
    /* (whole chunks: rows padded by 4, so that the vectorized forms run) */
    s.ldx = s.H * s.P + 2 * s.G * s.N + (s.T % (s.chunk < 64 ? s.chunk : 64) == 0 ? 4 : 3), s.lddt = s.H + 1;
    buf32 xbc(rows * s.ldx, NAN), dt(rows * s.lddt, NAN), bias(s.H, NAN), alog(s.H, NAN), D(s.H, NAN);
    buf32 dy(rows * HP, NAN), state0(s.B * s.H * PN, NAN);
    fill(xbc.p, xbc.n, -1, 1, &rng), fill(dt.p, dt.n, -4, 1, &rng), fill(bias.p, s.H, -1, 0, &rng);
    fill(alog.p, s.H, 0, 2.7f, &rng), fill(D.p, s.H, -1, 1, &rng), fill(dy.p, dy.n, -1, 1, &rng);
    fill(state0.p, state0.n, -1, 1, &rng);
    if (fused) { /* slow decays (A from -0.02 to -1): the states passed between chunks carry weight in y and dx */
        rng_t r2 = {0xdeca7u};
        fill(alog.p, s.H, -4, 0, &r2);
    }
    s.x = xbc.p, s.Bm = xbc.p + HP, s.Cm = xbc.p + HP + (size_t)s.G * s.N;
    s.dt = dt.p, s.dt_bias = bias.p, s.A_log = alog.p, s.Dv = D.p;
    s.dt_min = 0.05f, s.dt_max = 0.5f; /* the limit's clamps and their zero slopes too */

    /* the CPU's results on x | B | C and dy rounded to tf32 (tf32 cases): how much the rounding alone moves them */
    buf32 xbc_r(xbc.n, NAN), dy_r(dy.n, NAN);
    for (size_t i = 0; i < xbc.n; i++)
        xbc_r.p[i] = __uint_as_float(emu_tf32(xbc.p[i]));
    for (size_t i = 0; i < dy.n; i++)
        dy_r.p[i] = __uint_as_float(emu_tf32(dy.p[i]));
    ssd_args s_r = s;
    s_r.x = xbc_r.p, s_r.Bm = xbc_r.p + HP, s_r.Cm = xbc_r.p + HP + (size_t)s.G * s.N;

    /* the forward, from a carried state */
    buf32 y(rows * HP, SENT), y_ref(rows * HP, SENT), st(state0.n, SENT), st_ref(state0.n, SENT);
    memcpy(st.p, state0.p, 4 * st.n), memcpy(st_ref.p, state0.p, 4 * st.n);
    cpu_ssd_fwd_f32(&s, y_ref.p, st_ref.p);
    ssd_args sg = s;
    sg.tf32 = tf32;
    ssd_fwd_cuda(&sg, mat_f32(y.p, (int)HP), st.p);
    const double ey = rel_err(y.p, y_ref.p, y.n), es = rel_err(st.p, st_ref.p, st.n);
    double tol_y = 1e-5, tol_s = 1e-5;
    if (tf32) {
        buf32 y_r(y.n, SENT), st_r(st.n, SENT);
        memcpy(st_r.p, state0.p, 4 * st.n);
        cpu_ssd_fwd_f32(&s_r, y_r.p, st_r.p);
        tol_y = fmax(1e-3, TF32_FACTOR * rel_err(y_r.p, y_ref.p, y.n));
        tol_s = fmax(1e-3, TF32_FACTOR * rel_err(st_r.p, st_ref.p, st.n));
    }
    EXPECT(ey <= tol_y && es <= tol_s, "y %.3g (tolerance %.2g), state %.3g (%.2g)", ey, tol_y, es, tol_s);
    EXPECT(y.guards_intact(SENT) && st.guards_intact(SENT), "the forward wrote outside y or the state");
    if (tf32) { /* y in bf16 (lean training; the fused output kernel writes it itself): y rounded, bit for bit */
        const size_t n = rows * HP, pad = 8;
        std::vector<uint16_t> y16(n + 2 * pad, 0xdeadu), want(n);
        buf32 st2(st.n, SENT);
        memcpy(st2.p, state0.p, 4 * st2.n);
        ssd_fwd_cuda(&sg, mat_bf16(y16.data() + pad, (int)HP), st2.p);
        host_bf16_from_f32(want.data(), y.p, n);
        size_t bad = 0, guards = 0;
        for (size_t i = 0; i < n; i++)
            bad += y16[pad + i] != want[i];
        for (size_t i = 0; i < pad; i++)
            guards += y16[i] != 0xdeadu || y16[pad + n + i] != 0xdeadu;
        EXPECT(!bad && !guards && !memcmp(st2.p, st.p, 4 * st.n),
               "y bf16: %zu of %zu values not y rounded, %zu guards written, state %s", bad, n, guards,
               memcmp(st2.p, st.p, 4 * st.n) ? "differs" : "the same");
    }

    /* the backward (no carried state: training's) */
    buf32 dxbc(rows * s.ldx, SENT), dxbc_ref(rows * s.ldx, SENT), ddt(rows * s.lddt, SENT),
        ddt_ref(rows * s.lddt, SENT), hs(3 * s.H, 0.0f), hs_ref(3 * s.H, 0.0f);
    ssd_grads g = {dxbc.p,     dxbc.p + HP,   dxbc.p + HP + (size_t)s.G * s.N, s.ldx, ddt.p, s.lddt, hs.p,
                   hs.p + s.H, hs.p + 2 * s.H};
    ssd_grads g_ref = {dxbc_ref.p, dxbc_ref.p + HP, dxbc_ref.p + HP + (size_t)s.G * s.N,
                       s.ldx,      ddt_ref.p,       s.lddt,
                       hs_ref.p,   hs_ref.p + s.H,  hs_ref.p + 2 * s.H};
    cpu_ssd_bwd(&s, &g_ref, dy.p);
    ssd_bwd_cuda(&sg, &g, dy.p);
    double ex, edt, eh;
    grad_errs(&s, &g, &g_ref, &ex, &edt, &eh);
    double tol_x = 1e-4, tol_dt = 1e-4, tol_h = 1e-4;
    if (tf32) {
        buf32 dxbc_r(dxbc.n, SENT), ddt_r(ddt.n, SENT), hs_r(3 * s.H, 0.0f);
        ssd_grads g_r = {dxbc_r.p, dxbc_r.p + HP, dxbc_r.p + HP + (size_t)s.G * s.N,
                         s.ldx,    ddt_r.p,       s.lddt,
                         hs_r.p,   hs_r.p + s.H,  hs_r.p + 2 * s.H};
        cpu_ssd_bwd(&s_r, &g_r, dy_r.p);
        double rx, rdt, rh;
        grad_errs(&s, &g_r, &g_ref, &rx, &rdt, &rh);
        tol_x = fmax(1e-3, TF32_FACTOR * rx), tol_dt = fmax(1e-3, TF32_FACTOR * rdt);
        tol_h = fmax(1e-3, TF32_FACTOR * rh);
    }
    EXPECT(ex <= tol_x && edt <= tol_dt && eh <= tol_h,
           "dx|dB|dC %.3g (tolerance %.2g), ddt %.3g (%.2g), dA_log|ddt_bias|dD %.3g (%.2g)", ex, tol_x, edt, tol_dt,
           eh, tol_h);
    EXPECT(dxbc.guards_intact(SENT) && ddt.guards_intact(SENT), "the backward wrote outside its gradients");
    printf("%s - emulated SSD %s B %d T %d H %d P %d N %d G %d chunk %d (%s): y, state and every gradient against "
           "the CPU\n  # rel err y %.3g, state %.3g, dx|dB|dC %.3g, ddt %.3g, head sums %.3g\n",
           case_failures ? "FAIL" : "ok",
           fused == 2 ? "tf32 fused, no walks" : fused ? "tf32 fused" : tf32 ? "tf32" : "float32", s.B, s.T, s.H, s.P,
           s.N, s.G, s.chunk, mode, ey, es, ex, edt, eh);
    failures += case_failures;
}

/* The gated RMSNorm (lean training's form: y and z bf16, out bf16; and all float32) against the CPU's: out, dy, dz, dw.
 * rows 9, D 96 in G groups; y rows padded by 3, z rows by 5 (as in_proj's output holds z); even: by 2 and 6, so
 * that lean training's forward takes two columns at a time (gated_rmsnorm_fwd_pair_kernel), as m2x24's rows do. */
static void run_gated_norm(int G, int lean, int D = 96, int fused = 0, int even = 0) {
    case_failures = 0;
    setenv("SSM_GN_FUSED", fused ? "1" : "0", 1);
    const int R = 9, LDY = D + (even ? 2 : 3), LDZ = D + (even ? 6 : 5);
    rng_t rng = {0x9a7eu + (uint64_t)G};
    std::vector<float> y(R * LDY), z(R * LDZ), w(D), dout(R * D);
    fill(y.data(), y.size(), -2, 2, &rng), fill(z.data(), z.size(), -3, 3, &rng), fill(w.data(), D, 0.5f, 1.5f, &rng);
    fill(dout.data(), dout.size(), -1, 1, &rng);
    std::vector<uint16_t> y16(y.size()), z16(z.size()), o16(R * D), o16_ref(R * D);
    host_bf16_from_f32(y16.data(), y.data(), y.size()), host_bf16_from_f32(z16.data(), z.data(), z.size());
    const mat ym = lean ? mat_bf16(y16.data(), LDY) : mat_f32(y.data(), LDY);
    const mat zm = lean ? mat_bf16(z16.data(), LDZ) : mat_f32(z.data(), LDZ);
    std::vector<float> o(R * D), o_ref(R * D), dy(R * D), dy_ref(R * D), dz(R * LDZ), dz_ref(R * LDZ), dw(D, 0.25f),
        dw_ref(D, 0.25f);
    const mat om = lean ? mat_bf16(o16.data(), D) : mat_f32(o.data(), D);
    const mat om_ref = lean ? mat_bf16(o16_ref.data(), D) : mat_f32(o_ref.data(), D);
    gated_rmsnorm_fwd_cuda(om, ym, zm, w.data(), R, D, G, 1e-5f);
    cpu_gated_rmsnorm_fwd(om_ref, ym, zm, w.data(), R, D, G, 1e-5f);
    gated_rmsnorm_bwd_cuda(dy.data(), mat_f32(dz.data(), LDZ), dw.data(), dout.data(), ym, zm, w.data(), R, D, G,
                           1e-5f);
    cpu_gated_rmsnorm_bwd(dy_ref.data(), mat_f32(dz_ref.data(), LDZ), dw_ref.data(), dout.data(), ym, zm, w.data(), R,
                          D, G, 1e-5f);
    if (lean) { /* dz asked in bf16 (lean training's): the float32 dz rounded, bit for bit; dy the same bits */
        std::vector<float> dy2(R * D), dw2(D, 0.25f);
        std::vector<uint16_t> dz16(R * LDZ, 0xdeadu), want(D);
        gated_rmsnorm_bwd_cuda(dy2.data(), mat_bf16(dz16.data(), LDZ), dw2.data(), dout.data(), ym, zm, w.data(), R, D,
                               G, 1e-5f);
        size_t bad = 0, pads = 0;
        for (int r = 0; r < R; r++) {
            host_bf16_from_f32(want.data(), dz.data() + (size_t)r * LDZ, D);
            for (int i = 0; i < D; i++)
                bad += dz16[(size_t)r * LDZ + i] != want[i];
            for (int i = D; i < LDZ; i++)
                pads += dz16[(size_t)r * LDZ + i] != 0xdeadu;
        }
        EXPECT(!bad && !pads && !memcmp(dy2.data(), dy.data(), 4 * dy.size()) &&
                   !memcmp(dw2.data(), dw.data(), 4 * D),
               "dz bf16: %zu values not dz rounded, %zu pads written; dy, dw %s", bad, pads,
               memcmp(dy2.data(), dy.data(), 4 * dy.size()) || memcmp(dw2.data(), dw.data(), 4 * D) ? "differ"
                                                                                                      : "the same");
    }
    if (lean) {
        host_f32_from_bf16(o.data(), o16.data(), o.size());
        host_f32_from_bf16(o_ref.data(), o16_ref.data(), o.size());
    }
    double ez = 0;
    for (int r = 0; r < R; r++) ez = fmax(ez, rel_err(dz.data() + r * LDZ, dz_ref.data() + r * LDZ, D));
    const double eo = rel_err(o.data(), o_ref.data(), o.size()), ey = rel_err(dy.data(), dy_ref.data(), dy.size());
    const double ew = rel_err(dw.data(), dw_ref.data(), D);
    EXPECT(eo <= (lean ? 1e-2 : 1e-5) && ey <= 1e-5 && ez <= 1e-5 && ew <= 1e-5, "out %.3g, dy %.3g, dz %.3g, dw %.3g",
           eo, ey, ez, ew);
    printf("%s - emulated gated RMSNorm D %d G %d (%s): out, dy, dz, dw against the CPU\n  # rel err %.3g %.3g %.3g "
           "%.3g\n",
           case_failures ? "FAIL" : "ok", D, G,
           fused  ? (lean ? "a row in registers, y, z, out bf16" : "a row in registers")
           : lean ? (even ? "y, z, out bf16, even rows: two columns at a time" : "y, z, out bf16")
                  : "float32",
           eo, ey, ez, ew);
    failures += case_failures;
}

int main(int argc, char **argv) {
    /* some of test_ops's SSD shapes: lengths not multiples of the chunk, groups, P and N past one 64-wide tile, a
     * chunk above the kernels' 64, and mamba2-130m's heads (P 64, N 128); then whole chunks (the batched GEMMs):
     * groups of two heads, a chunk of 16, mamba2-130m's heads, an odd P with a chunk of 6 (the scalar passes) */
    const int cases[][7] = {{2, 37, 4, 8, 16, 1, 16},
                            {1, 100, 6, 16, 8, 3, 32},
                            {1, 65, 2, 64, 128, 1, 8},
                            {1, 150, 4, 80, 72, 2, 256},
                            {2, 9, 3, 5, 7, 1, 1},
                            {2, 128, 4, 16, 32, 2, 64},
                            {1, 64, 3, 8, 16, 1, 16},
                            {1, 128, 2, 64, 128, 1, 32},
                            {2, 36, 3, 5, 8, 1, 6}};
    const int only = argc > 1 ? atoi(argv[1]) : -1;
    char mode[64];
    const char *skew = getenv("EMU_SKEW");
    snprintf(mode, sizeof mode, "warps %s", skew && atoi(skew) ? "skewed" : "in step");
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        if (only < 0 || only == i)
            for (int tf32 = 0; tf32 < 2; tf32++)
                run_case(cases[i], tf32, mode);
    /* the fused kernels (ssd_fused.cuh, SSM_SSD_FUSED=1), with slow decays: mamba2-130m's heads in chunks of 32;
     * groups of two heads in chunks of 64 over four chunks; P 96 (an output block of 64 columns and one of 32) in
     * chunks of 16 (three of an output block's four warps idle) over twelve */
    const int fused[][7] = {{1, 128, 2, 64, 128, 1, 32}, {2, 256, 4, 32, 64, 2, 64}, {1, 192, 3, 96, 32, 1, 16}};
    for (int i = 0; i < (int)(sizeof fused / sizeof fused[0]); i++)
        if (only < 0 || only == i)
            for (int f = 1; f <= 2; f++) /* (2: the states from the batched products, the rest fused) */
                run_case(fused[i], 1, mode, f);
    if (only < 0)
        for (int lean = 0; lean < 2; lean++) {
            run_gated_norm(lean ? 4 : 1, lean), run_gated_norm(lean ? 1 : 3, lean);
            run_gated_norm(1, lean, 2304); /* 9 columns a thread: the block strides along the row */
            /* a row in registers (SSM_GN_FUSED=1): m2x24's rows, in one group and four; three groups of 32 */
            run_gated_norm(1, lean, 1536, 1), run_gated_norm(4, lean, 1536, 1), run_gated_norm(3, lean, 96, 1);
        }
    if (only < 0) /* lean rows of even strides: the forward's bf16x2 form; m2x24's, four groups, three of 32 */
        run_gated_norm(1, 1, 1536, 0, 1), run_gated_norm(4, 1, 1536, 0, 1), run_gated_norm(3, 1, 96, 0, 1);
    return failures ? 1 : 0;
}
