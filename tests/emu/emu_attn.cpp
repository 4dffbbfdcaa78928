/* The CUDA flash attention kernels (src/backend/cuda/attention_flash_{fwd,bwd}.cu), run by the emulator (emu.h) on
 * the CPU, against the CPU's attention on the same bf16 inputs: o and lse, then dq, dk, dv, within bf16 tolerances;
 * every operand surrounded by guard zones (NaN around inputs, so that a read outside shows in the results; a
 * sentinel around outputs, checked after). Built and run by tests/emu/run.sh. */
#include "backend/cuda/attention_flash.cuh"

extern "C" {
#include "backend/cpu/cpu_ops.h"
#include "common.h"
}

#include "emu_check.h"

static const uint16_t NAN16 = 0x7fc1, SENT16 = 0x1234;

static void fill_random(uint16_t *p, size_t n, float scale, rng_t *r) {
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++)
        h[i] = scale * (2.0f * rng_uniform(r) - 1.0f);
    host_bf16_from_f32(p, h.data(), n);
}

/* the largest difference over the largest |ref| of rows x cols at ld (bf16 both) */
static double rel_err16(const uint16_t *a, const uint16_t *ref, size_t rows, int cols, int ld) {
    double num = 0, den = 0;
    std::vector<float> x(cols), y(cols);
    for (size_t r = 0; r < rows; r++) {
        host_f32_from_bf16(x.data(), a + r * ld, cols);
        host_f32_from_bf16(y.data(), ref + r * ld, cols);
        for (int c = 0; c < cols; c++) {
            const double d = fabs((double)x[c] - y[c]);
            if (!(d <= num)) num = d; /* NaN wins */
            den = fmax(den, fabs((double)y[c]));
        }
    }
    return den > 0 ? num / den : num;
}

static void run_case(int B, int T, int H, int KV, int hd, int window, const char *mode) {
    case_failures = 0;
    rng_t rng = {0x5eed1234u + (uint64_t)(B * 131 + T * 7 + H * 3 + KV + hd + window)};
    const int qd = H * hd, kvd = KV * hd, W = qd + 2 * kvd, ldo = qd + 8;
    const size_t rows = (size_t)B * T;
    buf16 qkv(rows * W, NAN16), o(rows * ldo, SENT16), o_ref(rows * ldo, SENT16), dout(rows * ldo, NAN16);
    buf16 d(rows * W, SENT16), d_ref(rows * W, SENT16);
    buf32 lse(rows * H, -12345.0f), lse_ref(rows * H, -12345.0f);
    fill_random(qkv.p, rows * W, 2.0f, &rng);
    fill_random(dout.p, rows * ldo, 1.0f, &rng);
    attn_args a = {};
    a.q = mat_bf16(qkv.p, W), a.k = mat_bf16(qkv.p + qd, W), a.v = mat_bf16(qkv.p + qd + kvd, W);
    a.kv_bstride = (size_t)T * W, a.B = B, a.T = T, a.H = H, a.KV = KV, a.hd = hd, a.window = window;

    a.lse = lse_ref.p;
    cpu_attn_fwd(&a, mat_bf16(o_ref.p, ldo));
    a.lse = lse.p;
    EXPECT(attn_flash_fwd(&a, mat_bf16(o.p, ldo)), "the flash forward refused the shape");
    const double eo = rel_err16(o.p, o_ref.p, rows, qd, ldo);
    double el = 0, dl = 0;
    for (size_t i = 0; i < rows * H; i++)
        el = fmax(el, fabs((double)lse.p[i] - lse_ref.p[i])), dl = fmax(dl, fabs(lse_ref.p[i]));
    EXPECT(eo <= 1.5e-2, "o: rel err %.3g", eo);
    EXPECT(el / dl <= 1e-5, "lse: rel err %.3g", el / dl);
    EXPECT(o.guards_intact(SENT16) && lse.guards_intact(-12345.0f), "the forward wrote outside o or lse");

    /* the backward, each from its own forward (as in training) */
    const mat dq = mat_bf16(d.p, W), dk = mat_bf16(d.p + qd, W), dv = mat_bf16(d.p + qd + kvd, W);
    const mat dq_r = mat_bf16(d_ref.p, W), dk_r = mat_bf16(d_ref.p + qd, W), dv_r = mat_bf16(d_ref.p + qd + kvd, W);
    a.lse = lse_ref.p;
    cpu_attn_bwd(&a, mat_bf16(o_ref.p, ldo), mat_bf16(dout.p, ldo), dq_r, dk_r, dv_r);
    a.lse = lse.p;
    EXPECT(attn_flash_bwd(&a, mat_bf16(o.p, ldo), mat_bf16(dout.p, ldo), dq, dk, dv), "the flash backward refused");
    const double eq = rel_err16(d.p, d_ref.p, rows, qd, W), ek = rel_err16(d.p + qd, d_ref.p + qd, rows, kvd, W),
                 ev = rel_err16(d.p + qd + kvd, d_ref.p + qd + kvd, rows, kvd, W);
    EXPECT(eq <= 3e-2 && ek <= 3e-2 && ev <= 3e-2, "dq %.3g dk %.3g dv %.3g", eq, ek, ev);
    EXPECT(d.guards_intact(SENT16), "the backward wrote outside dq | dk | dv");
    printf("%s - emulated flash attention B %d T %d H %d KV %d hd %d window %d (%s): o, lse, dq, dk, dv against the "
           "CPU\n  # rel err o %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g\n",
           case_failures ? "FAIL" : "ok", B, T, H, KV, hd, window, mode, eo, el / dl, eq, ek, ev);
    failures += case_failures;
}

int main(int argc, char **argv) {
    /* B, T, H, KV, hd, window: as tests/test_ops.c's bf16 attention cases */
    const int cases[][6] = {{2, 37, 4, 4, 64, 0},   {2, 300, 4, 2, 64, 0},   {1, 200, 3, 1, 64, 0},
                            {2, 300, 2, 1, 64, 40}, {1, 512, 2, 2, 64, 0},   {1, 1000, 2, 1, 64, 300},
                            {1, 130, 2, 2, 128, 0}, {3, 257, 4, 2, 128, 100}};
    const int only = argc > 1 ? atoi(argv[1]) : -1;
    char mode[96];
    const char *late = getenv("EMU_CP_LATE"), *skew = getenv("EMU_SKEW");
    snprintf(mode, sizeof mode, "cp.async %s, warps %s", late && atoi(late) ? "late" : "early",
             skew && atoi(skew) ? "skewed" : "in step");
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        if (only < 0 || only == i)
            run_case(cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4], cases[i][5], mode);
    return failures ? 1 : 0;
}
