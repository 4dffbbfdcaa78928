/* The CUDA causal conv1d + SiLU (src/backend/cuda/conv1d.cu: the training shapes' shared-memory tiles, the sliding
 * windows with carried inputs, the per-output kernels of other widths; forward and backward), run by the emulator
 * (emu.h) on the CPU against the CPU's conv on the same inputs, and causal: inputs changed from step t0 on leave every
 * output before t0 bit-identical (a tile or a window that read a later row would not). Inputs between NaN guards,
 * outputs between sentinels. Built and run by tests/emu/run.sh. */
extern "C" {
#include "backend/cpu/cpu_ops.h"
#include "backend/host_bf16.h"
#include "common.h"
#include "ops/ops_cuda.h"
}

#include "emu_check.h"

#include <cmath>

static const float SENT = -12345.0f;

/* form: bit 0 x in bf16 (as in_proj writes xz in lean training: rows 2C apart), bit 1 carried inputs (init), bit 2
 * dout in bf16 and dx in bf16, bit 3 no bias */
static void run_case(int B, int T, int C, int K, int form) {
    case_failures = 0;
    rng_t rng = {0xc0417u + (uint64_t)(B * 7 + T * 131 + C * 3 + K + form * 1000)};
    const int ldx = 2 * C, t0 = T * 2 / 3;
    const size_t rows = (size_t)B * T, nx = rows * ldx, n = rows * C;
    const bool x16 = form & 1, carry = form & 2, lean_bwd = form & 4, bias_on = !(form & 8);
    buf32 x(nx, NAN), w((size_t)C * K, NAN), bias(C, NAN), init((size_t)B * C * (K - 1), NAN), dout(n, NAN);
    fill(x.p, nx, -2, 2, &rng), fill(w.p, w.n, -1, 1, &rng), fill(bias.p, C, -0.5f, 0.5f, &rng);
    fill(init.p, init.n, -2, 2, &rng), fill(dout.p, n, -1, 1, &rng);
    buf16 xh(nx, 0x7fc0), douth(n, 0x7fc0);
    if (x16) { /* both sides read the bf16 values: the CPU as the same bf16 matrix */
        host_bf16_from_f32(xh.p, x.p, nx);
        host_f32_from_bf16(x.p, xh.p, nx);
    }
    if (lean_bwd) host_bf16_from_f32(douth.p, dout.p, n), host_f32_from_bf16(dout.p, douth.p, n);
    const mat xm = x16 ? mat_bf16(xh.p, ldx) : mat_f32(x.p, ldx);
    const float *bp = bias_on ? bias.p : NULL, *ip = carry ? init.p : NULL;

    /* forward, then again with the inputs from t0 on changed */
    buf32 out(n, SENT), ref(n, SENT), out2(n, SENT);
    cpu_conv1d_silu_fwd(mat_f32(ref.p, C), xm, ip, w.p, bp, B, T, C, K);
    conv1d_silu_fwd_cuda(mat_f32(out.p, C), xm, ip, w.p, bp, B, T, C, K);
    const double eo = rel_err(out.p, ref.p, n);
    EXPECT(eo <= 1e-6, "out %.3g (tolerance 1e-6)", eo);
    EXPECT(out.guards_intact(SENT), "the forward wrote outside out");
    for (int b = 0; b < B; b++)
        for (int t = t0; t < T; t++)
            for (int c = 0; c < C; c++) {
                const size_t i = ((size_t)b * T + t) * ldx + c;
                x.p[i] = -x.p[i] + 0.5f;
                if (x16) host_bf16_from_f32(xh.p + i, x.p + i, 1);
            }
    conv1d_silu_fwd_cuda(mat_f32(out2.p, C), xm, ip, w.p, bp, B, T, C, K);
    size_t changed = 0;
    for (int b = 0; b < B; b++)
        for (size_t i = (size_t)b * T * C; i < ((size_t)b * T + t0) * C; i++) changed += out.p[i] != out2.p[i];
    EXPECT(changed == 0, "not causal: %zu outputs before step %d changed with the inputs after it", changed, t0);

    /* backward (training: no carried inputs), on the changed inputs */
    double eb = 0;
    if (!carry) {
        buf32 dx(nx, SENT), dx_ref(nx, SENT), dw(w.n, 0.0f), dw_ref(w.n, 0.0f), db(C, 0.0f), db_ref(C, 0.0f);
        buf16 dxh(nx, 0x7777);
        const mat dom = lean_bwd ? mat_bf16(douth.p, C) : mat_f32(dout.p, C);
        /* the CPU writes float32 dx; the GPU's bf16 dx is compared after widening */
        cpu_conv1d_silu_bwd(mat_f32(dx_ref.p, ldx), dw_ref.p, bias_on ? db_ref.p : NULL, dom, xm, w.p, bp, B, T, C, K);
        conv1d_silu_bwd_cuda(lean_bwd ? mat_bf16(dxh.p, ldx) : mat_f32(dx.p, ldx), dw.p, bias_on ? db.p : NULL, dom,
                             xm, w.p, bp, B, T, C, K);
        std::vector<float> got(rows * C), want(rows * C);
        for (size_t r = 0; r < rows; r++)
            for (int c = 0; c < C; c++) {
                float v = dx.p[r * ldx + c];
                if (lean_bwd) host_f32_from_bf16(&v, dxh.p + r * ldx + c, 1);
                got[r * C + c] = v, want[r * C + c] = dx_ref.p[r * ldx + c];
            }
        const double edx = rel_err(got.data(), want.data(), got.size());
        const double edw = fmax(rel_err(dw.p, dw_ref.p, w.n), bias_on ? rel_err(db.p, db_ref.p, C) : 0);
        eb = fmax(edx, edw);
        EXPECT(edx <= (lean_bwd ? 1e-2 : 1e-5) && edw <= 1e-5, "dx %.3g, dw|dbias %.3g", edx, edw);
        EXPECT(dx.guards_intact(SENT) && dxh.guards_intact(0x7777) && dw.guards_intact(0.0f) && db.guards_intact(0.0f),
               "the backward wrote outside its gradients");
    }
    printf("%s - emulated conv1d B %d T %d C %d K %d%s%s%s%s: out against the CPU, causal%s\n  # rel err out %.3g, "
           "backward %.3g\n",
           case_failures ? "FAIL" : "ok", B, T, C, K, x16 ? ", x bf16 (rows 2C apart)" : "",
           carry ? ", carried inputs" : "", lean_bwd ? ", dout and dx bf16" : "", bias_on ? "" : ", no bias",
           carry ? "" : "; gradients", eo, eb);
    failures += case_failures;
}

int main(int argc, char **argv) {
    /* B, T, C, K, form: the tiles (K 4, C a multiple of 8, T past a tile of 128), the windows (other K, or carried
     * inputs), the per-output kernels (K 5) */
    const int cases[][5] = {{2, 300, 64, 4, 1},  {2, 300, 64, 4, 1 | 4}, {1, 260, 128, 4, 0}, {2, 150, 40, 4, 2},
                            {1, 200, 36, 3, 1 | 8}, {2, 70, 24, 5, 0},   {1, 90, 16, 5, 2 | 1}};
    const int only = argc > 1 ? atoi(argv[1]) : -1;
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        if (only < 0 || only == i) run_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4]);
    return failures ? 1 : 0;
}
