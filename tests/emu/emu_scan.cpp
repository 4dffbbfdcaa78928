/* The CUDA Mamba-1 selective scan (src/backend/cuda/scan.cu: forward, backward, and their time-segmented forms), run
 * by the emulator (emu.h) on the CPU against the CPU's scan on the same float32 inputs (as test_ops's scan cases:
 * gated or not, A as At or from A_log, a carried state, the recomputed output), with the segment count forced
 * (SSM_SCAN_SEGMENTS 1, 3 and the kernels' own choice on the emulator's small GPU), and lean training's form (x,
 * dt and the gate in bf16, the forward writing the state checkpoints hk, the backward restarting from them, as a
 * training step runs them). Inputs between NaN guards, outputs between sentinels. Built and run by tests/emu/run.sh. */
#include "backend/cuda/context.h" /* (C++ names, as context.cu defines them) */
extern "C" {
#include "backend/cpu/cpu_ops.h"
#include "backend/host_bf16.h"
#include "common.h"
#include "ops/ops_cuda.h" /* scan_fwd_cuda, scan_bwd_cuda, cuda_alloc */
}

#include "emu_check.h"

/* what scan.cu asks of the CUDA backend's context and memory: host memory here */
static cuda_ctx emu_ctx;
cuda_ctx *cuda_ctx_now(void) { return &emu_ctx; }
void *cuda_alloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }
void cuda_release(void *p) { free(p); }

static const float SENT = -12345.0f;

/* the largest difference over the largest |ref| of rows x cols at ld (NaN wins) */
static double rel_err(const float *a, const float *ref, size_t rows, int cols, int ld) {
    double num = 0, den = 0;
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            const double d = fabs((double)a[r * ld + c] - ref[r * ld + c]);
            if (!(d <= num)) num = d;
            den = fmax(den, fabs((double)ref[r * ld + c]));
        }
    return den > 0 ? num / den : num;
}

/* form: bit 0 lean (x, dt, z in bf16 and checkpoints hk; not with bit 5), bit 1 ungated, bit 2 A from A_log (else
 * At), bit 5 a carried state (forward) and the recomputed output (backward); segments: SSM_SCAN_SEGMENTS, 0 the
 * kernels' choice */
static char mode[64]; /* the emulator's settings, for the case lines */

static void run_case(int B, int T, int E, int N, int form, int segments) {
    case_failures = 0;
    char seg[16];
    snprintf(seg, sizeof seg, "%d", segments);
    if (segments)
        setenv("SSM_SCAN_SEGMENTS", seg, 1);
    else
        unsetenv("SSM_SCAN_SEGMENTS");
    rng_t rng = {0x5ca7u + (uint64_t)(B * 7 + T * 131 + E * 3 + N + form * 1000 + segments)};
    const size_t rows = (size_t)B * T, nx = rows * E;
    scan_args s = {};
    s.B = B, s.T = T, s.E = E, s.N = N, s.ldbc = 2 * N + 3;
    buf32 x(nx, NAN), dt(nx, NAN), bias(E, NAN), A((size_t)N * E, NAN), bc(rows * s.ldbc, NAN), D(E, NAN);
    buf32 z(rows * 2 * E, NAN), dout(nx, NAN), h0((size_t)B * E * N, NAN);
    fill(x.p, nx, -1, 1, &rng), fill(dt.p, nx, -1, 1, &rng), fill(bias.p, E, -1.5f, -0.5f, &rng);
    if (form & 4)
        fill(A.p, A.n, -2.0f, 0.5f, &rng);
    else
        fill(A.p, A.n, -1.5f, -0.1f, &rng);
    fill(bc.p, bc.n, -1, 1, &rng), fill(D.p, E, -1, 1, &rng), fill(z.p, z.n, -1.5f, 1.5f, &rng);
    fill(dout.p, nx, -1, 1, &rng), fill(h0.p, h0.n, -1, 1, &rng);
    s.x = mat_f32(x.p, E), s.dt = mat_f32(dt.p, E), s.dt_bias = bias.p, s.Bm = bc.p, s.Cm = bc.p + N, s.Dv = D.p;
    if (form & 4)
        s.A_log = A.p;
    else
        s.At = A.p;
    if (!(form & 2)) s.z = mat_f32(z.p, 2 * E);
    const bool lean = form & 1;
    const size_t nhk = (size_t)B * SCAN_HK_COUNT(T) * N * E;
    buf16 x16(nx, 0x7fc0), dt16(nx, 0x7fc0), z16(z.n, 0x7fc0), hk(nhk, 0xbeef), hk_ref(nhk, 0xbeef); /* NaN guards */
    if (lean) { /* both sides read the same bf16 values; each writes its own checkpoints */
        host_bf16_from_f32(x16.p, x.p, nx), host_bf16_from_f32(dt16.p, dt.p, nx), host_bf16_from_f32(z16.p, z.p, z.n);
        s.x = mat_bf16(x16.p, E), s.dt = mat_bf16(dt16.p, E);
        if (!(form & 2)) s.z = mat_bf16(z16.p, 2 * E);
    }

    /* forward */
    buf32 out(nx, SENT), out_ref(nx, SENT), h(h0.n, SENT), h_ref(h0.n, SENT);
    memcpy(h.p, h0.p, 4 * h.n), memcpy(h_ref.p, h0.p, 4 * h.n);
    const bool carry = form & 32;
    if (lean) s.hk = hk_ref.p;
    cpu_scan_fwd(&s, mat_f32(out_ref.p, E), carry ? h_ref.p : NULL);
    if (lean) s.hk = hk.p;
    scan_fwd_cuda(&s, mat_f32(out.p, E), carry ? h.p : NULL);
    const double eo = rel_err(out.p, out_ref.p, rows, E, E), eh = carry ? rel_err(h.p, h_ref.p, B, E * N, E * N) : 0;
    EXPECT(eo <= 1e-5 && eh <= 1e-5, "out %.3g, h %.3g (tolerance 1e-5)", eo, eh);
    EXPECT(out.guards_intact(SENT) && h.guards_intact(SENT), "the forward wrote outside out or h");
    double ehk = 0; /* the checkpoints: bf16 roundings of states summed in different orders (one bf16 step apart) */
    if (lean) {
        std::vector<float> a(nhk), b(nhk);
        host_f32_from_bf16(a.data(), hk.p, nhk), host_f32_from_bf16(b.data(), hk_ref.p, nhk);
        ehk = rel_err(a.data(), b.data(), 1, (int)nhk, (int)nhk);
        EXPECT(ehk <= 1e-2, "checkpoints hk %.3g (tolerance 1e-2)", ehk);
        EXPECT(hk.guards_intact(0xbeef), "the forward wrote outside hk");
    }

    /* backward: each gradient in its own guarded buffer (written ones start as sentinels, sums from 0) */
    const int ldbc = 2 * N + 5;
    struct grads {
        buf32 dx, ddt, dbc, dz, out, dA, dD, dbias;
        scan_grads g = {};
        grads(size_t nx, size_t rows, int E, int N, int ldbc, int form, bool carry)
            : dx(nx, SENT), ddt(nx, SENT), dbc(rows * ldbc, SENT), dz(rows * 2 * E, SENT), out(nx, SENT),
              dA((size_t)N * E, 0.0f), dD(E, 0.0f), dbias(E, 0.0f) {
            g.dx = mat_f32(dx.p, E), g.ddt = mat_f32(ddt.p, E);
            g.dBm = mat_f32(dbc.p, ldbc), g.dCm = mat_f32(dbc.p + N, ldbc);
            if (!(form & 2)) g.dz = mat_f32(dz.p, 2 * E);
            if (carry) g.out = mat_f32(out.p, E);
            if (form & 4)
                g.dA_log = dA.p;
            else
                g.dAt = dA.p;
            g.dDv = dD.p, g.ddt_bias = dbias.p;
        }
    };
    grads got(nx, rows, E, N, ldbc, form, carry), ref(nx, rows, E, N, ldbc, form, carry);
    cpu_scan_bwd(&s, &ref.g, mat_f32(dout.p, E)); /* (lean: both restart from the emulated forward's hk) */
    scan_bwd_cuda(&s, &got.g, mat_f32(dout.p, E));
    const double ex = rel_err(got.dx.p, ref.dx.p, rows, E, E), edt = rel_err(got.ddt.p, ref.ddt.p, rows, E, E);
    const double ebc = rel_err(got.dbc.p, ref.dbc.p, rows, 2 * N, ldbc);
    const double ez = form & 2 ? 0 : rel_err(got.dz.p, ref.dz.p, rows, E, 2 * E);
    const double eout = carry ? rel_err(got.out.p, ref.out.p, rows, E, E) : 0;
    const double eA = rel_err(got.dA.p, ref.dA.p, 1, N * E, N * E);
    const double eDb = fmax(rel_err(got.dD.p, ref.dD.p, 1, E, E), rel_err(got.dbias.p, ref.dbias.p, 1, E, E));
    const double worst = fmax(fmax(fmax(ex, edt), fmax(ebc, ez)), fmax(fmax(eout, eA), eDb));
    EXPECT(worst <= 1e-4, "dx %.3g ddt %.3g dB|dC %.3g dz %.3g out %.3g dA %.3g dD|d(dt bias) %.3g (tolerance 1e-4)",
           ex, edt, ebc, ez, eout, eA, eDb);
    EXPECT(got.dx.guards_intact(SENT) && got.ddt.guards_intact(SENT) && got.dbc.guards_intact(SENT) &&
               got.dz.guards_intact(SENT) && got.out.guards_intact(SENT) && got.dA.guards_intact(0.0f) &&
               got.dD.guards_intact(0.0f) && got.dbias.guards_intact(0.0f),
           "the backward wrote outside its gradients");
    printf("%s - emulated scan B %d T %d E %d N %d%s%s%s%s, segments %s (%s): out, h and every gradient against the "
           "CPU\n  # rel err out %.3g, h %.3g, checkpoints %.3g, gradients %.3g\n",
           case_failures ? "FAIL" : "ok", B, T, E, N, lean ? " lean (bf16 x, dt, z; checkpoints)" : "",
           form & 2 ? " ungated" : "", form & 4 ? " A_log" : " At", carry ? " carried state, recomputed out" : "",
           segments ? seg : "chosen", mode, eo, eh, ehk, worst);
    failures += case_failures;
}

int main(int argc, char **argv) {
    /* B, T, E, N, form, segments: channels past a warp's 32, lengths past the kernels' chunks, segments forced */
    const int cases[][6] = {{1, 200, 64, 16, 4, 1}, {1, 200, 64, 16, 4, 3},  {1, 300, 40, 8, 2 | 32, 3},
                            {2, 97, 64, 16, 0, 0},  {1, 260, 32, 16, 32, 4}, {1, 130, 64, 5, 4 | 32, 2},
                            {2, 300, 64, 16, 1 | 4, 2}, {1, 200, 36, 8, 1 | 2 | 4, 3}, {2, 2048, 64, 16, 1 | 4, 2}};
    const int only = argc > 1 ? atoi(argv[1]) : -1;
    const char *late = getenv("EMU_CP_LATE"), *skew = getenv("EMU_SKEW");
    snprintf(mode, sizeof mode, "cp.async %s, warps %s", late && atoi(late) ? "late" : "early",
             skew && atoi(skew) ? "skewed" : "in step");
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        if (only < 0 || only == i)
            run_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4], cases[i][5]);
    return failures ? 1 : 0;
}
