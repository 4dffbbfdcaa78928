/* The CUDA flash attention kernels (src/backend/cuda/attention_flash_{fwd,bwd}.cu), run by the emulator (emu.h) on
 * the CPU, against the CPU's attention on the same bf16 inputs: o and lse, then dq, dk, dv, within bf16 tolerances;
 * and the float32 forward of attention.cu over a decode state's cache (T queries after nk[b] keys, the keys cut into
 * splits, SSM_ATTN_SPLITS), and its float32 training forward and backward, against the CPU's scalar definition;
 * every operand surrounded by guard zones (NaN around inputs, so that a read outside shows in the results; a
 * sentinel around outputs, checked after). Built and run by tests/emu/run.sh. */
#include "backend/cuda/attention_flash.cuh"
#include "ops/ops_cuda.h"

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

/* the largest difference over the largest |ref| of columns [c0, c0 + cols) of rows rows at ld (float32 both) */
/* The attention operands of a packed buffer of rows q | k | v (W wide, as the model's q, k, v projections write them),
 * float32 or bf16. */
static mat mat_of(const float *p, int ld) { return mat_f32(p, ld); }
static mat mat_of(const uint16_t *p, int ld) { return mat_bf16(p, ld); }
template <typename E>
static attn_args packed_args(const E *qkv, int W, int B, int T, int H, int KV, int hd, int window) {
    const int qd = H * hd, kvd = KV * hd;
    attn_args a = {};
    a.q = mat_of(qkv, W), a.k = mat_of(qkv + qd, W), a.v = mat_of(qkv + qd + kvd, W);
    a.kv_bstride = (size_t)T * W, a.B = B, a.T = T, a.H = H, a.KV = KV, a.hd = hd, a.window = window;
    return a;
}

static double rel_err32(const float *a, const float *ref, size_t rows, int c0, int cols, int ld) {
    double num = 0, den = 0;
    for (size_t r = 0; r < rows; r++)
        for (int c = c0; c < c0 + cols; c++) {
            const double d = fabs((double)a[r * ld + c] - ref[r * ld + c]);
            if (!(d <= num)) num = d; /* NaN wins */
            den = fmax(den, fabs((double)ref[r * ld + c]));
        }
    return den > 0 ? num / den : num;
}

/* rel_err32's measure for rows x cols at ld, bf16 both */
static double rel_err16(const uint16_t *a, const uint16_t *ref, size_t rows, int cols, int ld) {
    std::vector<float> x(rows * cols), y(rows * cols);
    for (size_t r = 0; r < rows; r++) {
        host_f32_from_bf16(x.data() + r * cols, a + r * ld, cols);
        host_f32_from_bf16(y.data() + r * cols, ref + r * ld, cols);
    }
    return rel_err32(x.data(), y.data(), rows, 0, cols, cols);
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
    attn_args a = packed_args(qkv.p, W, B, T, H, KV, hd, window);

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

/* attention.cu's bf16 paths widen through convert_rows_cuda (elementwise.cu, not emulated): never reached here */
extern "C" void convert_rows_cuda(mat dst, mat src, int rows, int cols) {
    (void)dst, (void)src, (void)rows, (void)cols;
    fprintf(stderr, "emu: convert_rows_cuda is not emulated\n");
    exit(2);
}

/* The float32 forward over a cache of capacity cap rows a sequence: B sequences with nk[b] keys, T queries each (the
 * last T positions), the keys cut into `splits` runs */
static void run_f32_case(int B, int T, int H, int KV, int hd, int cap, int splits) {
    case_failures = 0;
    rng_t rng = {0xdec0de00u + (uint64_t)(B * 131 + T * 7 + H * 3 + KV + hd + cap + splits)};
    const int qd = H * hd, kvd = KV * hd, ldkv = kvd + 4, ldo = qd + 8;
    buf32 q((size_t)B * T * qd, NAN), k((size_t)B * cap * ldkv, NAN), v((size_t)B * cap * ldkv, NAN);
    buf32 o((size_t)B * T * ldo, -7.0f), o_ref((size_t)B * T * ldo, -7.0f), lse((size_t)B * T * H, -7.0f),
        lse_ref((size_t)B * T * H, -7.0f);
    std::vector<int> nk(B);
    for (int b = 0; b < B; b++)
        nk[b] = cap - 3 * b > T ? cap - 3 * b : T; /* different lengths, none past cap */
    for (size_t i = 0; i < (size_t)B * T * qd; i++)
        q.p[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    for (int b = 0; b < B; b++) /* the rows a sequence holds (the rest stay NaN: a read past nk[b] shows) */
        for (int j = 0; j < nk[b]; j++)
            for (int c = 0; c < kvd; c++) {
                const size_t at = ((size_t)b * cap + j) * ldkv + c;
                k.p[at] = 2.0f * rng_uniform(&rng) - 1.0f, v.p[at] = 2.0f * rng_uniform(&rng) - 1.0f;
            }
    attn_args a = {};
    a.q = mat_f32(q.p, qd), a.k = mat_f32(k.p, ldkv), a.v = mat_f32(v.p, ldkv);
    a.kv_bstride = (size_t)cap * ldkv, a.B = B, a.T = T, a.H = H, a.KV = KV, a.hd = hd, a.nk = nk.data();
    a.lse = lse_ref.p;
    cpu_attn_fwd_ref(&a, mat_f32(o_ref.p, ldo));
    char sp[16];
    snprintf(sp, sizeof sp, "%d", splits);
    if (splits > 0) setenv("SSM_ATTN_SPLITS", sp, 1); /* (0: the kernel's own choice; the tiled one from T 32) */
    a.lse = lse.p;
    attn_fwd_cuda(&a, mat_f32(o.p, ldo));
    unsetenv("SSM_ATTN_SPLITS");
    const double eo = rel_err32(o.p, o_ref.p, (size_t)B * T, 0, qd, ldo);
    double el = 0;
    for (size_t i = 0; i < (size_t)B * T * H; i++) {
        const double d = fabs((double)lse.p[i] - lse_ref.p[i]);
        if (!(d <= el)) el = d;
    }
    EXPECT(eo <= 1e-5, "o: rel err %.3g", eo);
    EXPECT(el <= 1e-5, "lse: abs err %.3g", el);
    bool pad_kept = true; /* the columns between rows of o stay as they were */
    for (int r = 0; r < B * T; r++)
        for (int c = qd; c < ldo; c++)
            pad_kept = pad_kept && o.p[(size_t)r * ldo + c] == -7.0f;
    EXPECT(pad_kept && o.guards_intact(-7.0f) && lse.guards_intact(-7.0f), "the forward wrote outside o or lse");
    printf("%s - emulated float32 attention over a cache: B %d T %d H %d KV %d hd %d, %d keys, %d splits: o, lse "
           "against the CPU's definition\n  # rel err o %.3g, lse abs err %.3g\n",
           case_failures ? "FAIL" : "ok", B, T, H, KV, hd, cap, splits, eo, el);
    failures += case_failures;
}

/* The float32 training attention of attention.cu (the kernels a float32 or widened step runs: the forward, split
 * where its queries are few, then the backward's dq and dk/dv kernels) on the queries' own positions, against the
 * CPU's scalar definition: o, lse, dq, dk, dv */
static void run_f32_train_case(int B, int T, int H, int KV, int hd, int window) {
    case_failures = 0;
    rng_t rng = {0x7a11u + (uint64_t)(B * 131 + T * 7 + H * 3 + KV + hd + window)};
    const int qd = H * hd, kvd = KV * hd, W = qd + 2 * kvd + 4, ldo = qd + 8;
    const size_t rows = (size_t)B * T;
    buf32 qkv(rows * W, NAN), o(rows * ldo, -7.0f), o_ref(rows * ldo, -7.0f), dout(rows * ldo, NAN);
    buf32 d(rows * W, -7.0f), d_ref(rows * W, -7.0f), lse(rows * H, -7.0f), lse_ref(rows * H, -7.0f);
    for (size_t r = 0; r < rows; r++) {
        for (int c = 0; c < qd + 2 * kvd; c++)
            qkv.p[r * W + c] = 2.0f * rng_uniform(&rng) - 1.0f;
        for (int c = 0; c < qd; c++)
            dout.p[r * ldo + c] = 2.0f * rng_uniform(&rng) - 1.0f;
    }
    attn_args a = packed_args(qkv.p, W, B, T, H, KV, hd, window);
    a.lse = lse_ref.p;
    cpu_attn_fwd_ref(&a, mat_f32(o_ref.p, ldo));
    a.lse = lse.p;
    attn_fwd_cuda(&a, mat_f32(o.p, ldo));
    a.lse = lse_ref.p;
    cpu_attn_bwd_ref(&a, mat_f32(o_ref.p, ldo), mat_f32(dout.p, ldo), mat_f32(d_ref.p, W), mat_f32(d_ref.p + qd, W),
                     mat_f32(d_ref.p + qd + kvd, W));
    a.lse = lse.p;
    attn_bwd_cuda(&a, mat_f32(o.p, ldo), mat_f32(dout.p, ldo), mat_f32(d.p, W), mat_f32(d.p + qd, W),
                  mat_f32(d.p + qd + kvd, W));
    const double eo = rel_err32(o.p, o_ref.p, rows, 0, qd, ldo), el = rel_err32(lse.p, lse_ref.p, rows, 0, H, H),
                 eq = rel_err32(d.p, d_ref.p, rows, 0, qd, W), ek = rel_err32(d.p, d_ref.p, rows, qd, kvd, W),
                 ev = rel_err32(d.p, d_ref.p, rows, qd + kvd, kvd, W);
    EXPECT(eo <= 1e-5 && el <= 1e-5, "o %.3g lse %.3g", eo, el);
    EXPECT(eq <= 1e-5 && ek <= 1e-5 && ev <= 1e-5, "dq %.3g dk %.3g dv %.3g", eq, ek, ev);
    EXPECT(o.guards_intact(-7.0f) && lse.guards_intact(-7.0f) && d.guards_intact(-7.0f), "a write outside o, lse, d");
    printf("%s - emulated float32 attention, training: B %d T %d H %d KV %d hd %d window %d: o, lse, dq, dk, dv "
           "against the CPU's definition\n  # rel err o %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g\n",
           case_failures ? "FAIL" : "ok", B, T, H, KV, hd, window, eo, el, eq, ek, ev);
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
    /* B, T, H, KV, hd, cache rows, splits: decode (T 1) and a prefill's chunk (T 5); key runs not multiples of the
     * kernel's keys a step; head sizes of each lane width */
    const int f32_cases[][7] = {{2, 1, 4, 2, 64, 300, 1}, {2, 1, 4, 2, 64, 300, 7}, {1, 1, 2, 1, 128, 77, 3},
                                {3, 5, 4, 4, 32, 203, 5}, {1, 1, 3, 3, 200, 41, 2}, {2, 1, 2, 1, 16, 129, 16},
                                /* more splits than the combine's warps take in one round; splits without keys */
                                {1, 1, 4, 2, 64, 300, 70}, {2, 1, 2, 2, 128, 41, 64},
                                /* a prefill's chunk after earlier ones, tiled (splits 0: not forced): queries not a
                                 * multiple of its tiles, keys not of its key tiles, every head size it takes */
                                {2, 77, 4, 2, 64, 300, 0}, {1, 100, 2, 1, 128, 160, 0}, {2, 33, 3, 3, 32, 33, 0},
                                {1, 40, 2, 2, 16, 101, 0}};
    for (int i = 0; i < (int)(sizeof f32_cases / sizeof f32_cases[0]); i++)
        if (only < 0 || only == i) {
            const int *c = f32_cases[i];
            run_f32_case(c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
        }
    /* B, T, H, KV, hd, window: GQA, a window, head sizes of each lane width, runs not multiples of a step's keys */
    /* (T >= 32: the tiled forward, a window shorter and longer than its key tiles; T < 32 and head_dim 200: the
     * warp-per-query one) */
    const int train_cases[][6] = {{2, 37, 4, 2, 64, 0}, {1, 150, 2, 1, 32, 0}, {1, 77, 2, 2, 128, 20},
                                  {2, 45, 3, 3, 16, 0},  {1, 200, 2, 1, 64, 45}, {2, 20, 2, 1, 64, 0},
                                  {1, 40, 2, 2, 200, 0}};
    for (int i = 0; i < (int)(sizeof train_cases / sizeof train_cases[0]); i++)
        if (only < 0 || only == i) {
            const int *c = train_cases[i];
            run_f32_train_case(c[0], c[1], c[2], c[3], c[4], c[5]);
        }
    return failures ? 1 : 0;
}
