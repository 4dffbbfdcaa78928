/* The cuBLASLt GEMMs against OpenBLAS (src/backend/cpu/matmul.c): the three linear-layer products,
 * with odd shapes, row strides wider than the rows, beta 0 and 1; within 1e-5 relative (float32,
 * FP32 compute) or 1e-2 (the _bf16 variants: bf16 tensor-core inputs, FP32 accumulation), and bitwise
 * repeatable. Prints "skip - ..." without a GPU. */
#include "common.h"
#include "backend/cpu/cpu_ops.h"
#include "ops/ops_cuda.h"
#include "test.h"
#include "gpu/gpu_test.h"

#include <cuda_runtime.h>
#include <string.h>

static rng_t rng = {77};

static float *randn(size_t n) {
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = rng_normal(&rng);
    return p;
}



/* A device copy of host[0..n) starting `off` floats into its allocation (leaked: the test is short). */
static float *gpu_at(const float *host, size_t n, int off) {
    float *d = gpu_floats(NULL, n + off);
    CUDA_CHECK(cudaMemcpy(d + off, host, sizeof(float) * n, cudaMemcpyHostToDevice));
    return d + off;
}

typedef void (*xwT_fn)(float *, int, const float *, int, const float *, int, int, int, float);
typedef void (*dw_fn)(float *, const float *, int, const float *, int, int, int, int);
typedef void (*xwT16_fn)(float *, int, const uint16_t *, int, const float *, int, int, int, float);
typedef void (*dw16_fn)(float *, const float *, int, const uint16_t *, int, int, int, int);
typedef void (*bwd_fn)(float *, int, float, float *, const float *, int, const float *, int, const float *, int, int,
                       int);

/* off: every device operand starts `off` floats into its allocation (slices are not 256-byte aligned). */
static void check(int M, int N, int K, int pad, int bf16, int off) {
    char name[160];
    snprintf(name, sizeof name,
             "cuBLASLt matmul_xwT / dyw / dw_acc / bwd / x16 variants%s vs OpenBLAS: M %d, N %d, K %d, strides +%d, "
             "offset %d",
             bf16 ? " (bf16)" : "", M, N, K, pad, off);
    TEST_BEGIN(name);
    const xwT_fn xwT = bf16 ? matmul_xwT_cuda_bf16 : matmul_xwT_cuda,
                 dyw = bf16 ? matmul_dyw_cuda_bf16 : matmul_dyw_cuda;
    const dw_fn dw_acc = bf16 ? matmul_dw_acc_cuda_bf16 : matmul_dw_acc_cuda;
    const double tol = bf16 ? 1e-2 : 1e-5;
    const int ldx = K + pad, ldy = N + pad;
    float *x = randn((size_t)M * ldx), *w = randn((size_t)N * K), *y = randn((size_t)M * ldy);
    float *dy = randn((size_t)M * ldy), *dx = randn((size_t)M * ldx), *dw = randn((size_t)N * K);
    float *gx = gpu_at(x, (size_t)M * ldx, off), *gw = gpu_at(w, (size_t)N * K, off),
          *gy = gpu_at(y, (size_t)M * ldy, off);
    float *gdy = gpu_at(dy, (size_t)M * ldy, off), *gdx = gpu_at(dx, (size_t)M * ldx, off);
    float *gdw = gpu_at(dw, (size_t)N * K, off);
    for (int beta = 0; beta <= 1; beta++) {
        cpu_matmul_xwT(y, ldy, x, ldx, w, M, N, K, (float)beta);
        xwT(gy, ldy, gx, ldx, gw, M, N, K, (float)beta);
        cpu_matmul_dyw(dx, ldx, dy, ldy, w, M, N, K, (float)beta);
        dyw(gdx, ldx, gdy, ldy, gw, M, N, K, (float)beta);
    }
    cpu_matmul_dw_acc(dw, dy, ldy, x, ldx, M, N, K);
    dw_acc(gdw, gdy, ldy, gx, ldx, M, N, K);
    cudaError_t err = cudaDeviceSynchronize();
    EXPECT(err == cudaSuccess, "CUDA: %s", cudaGetErrorString(err));
    float *ry = host_floats(gy, (size_t)M * ldy), *rdx = host_floats(gdx, (size_t)M * ldx),
          *rdw = host_floats(gdw, (size_t)N * K);
    double e;
    /* compare only the columns inside each row (the padding is not written by either) */
    for (int r = 0; r < M; r++) memcpy(ry + (size_t)r * ldy + N, y + (size_t)r * ldy + N, sizeof(float) * pad);
    for (int r = 0; r < M; r++) memcpy(rdx + (size_t)r * ldx + K, dx + (size_t)r * ldx + K, sizeof(float) * pad);
    printf("  rel err: y %.1e, dx %.1e, dw %.1e\n", test_rel_err(ry, y, (size_t)M * ldy),
           test_rel_err(rdx, dx, (size_t)M * ldx), test_rel_err(rdw, dw, (size_t)N * K));
    EXPECT((e = test_rel_err(ry, y, (size_t)M * ldy)) < tol, "y: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdx, dx, (size_t)M * ldx)) < tol, "dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdw, dw, (size_t)N * K)) < tol, "dw: rel err %.2e", e);
    /* matmul_bwd: both gradients from one dy (bf16: one rounded copy of it), dx accumulated (beta 1) */
    const bwd_fn bwd = bf16 ? matmul_bwd_cuda_bf16 : matmul_bwd_cuda;
    cpu_matmul_bwd(dx, ldx, 1.0f, dw, dy, ldy, x, ldx, w, M, N, K);
    bwd(gdx, ldx, 1.0f, gdw, gdy, ldy, gx, ldx, gw, M, N, K);
    float *rdx2 = host_floats(gdx, (size_t)M * ldx), *rdw2 = host_floats(gdw, (size_t)N * K);
    for (int r = 0; r < M; r++) memcpy(rdx2 + (size_t)r * ldx + K, dx + (size_t)r * ldx + K, sizeof(float) * pad);
    printf("  matmul_bwd rel err: dx %.1e, dw %.1e\n", test_rel_err(rdx2, dx, (size_t)M * ldx),
           test_rel_err(rdw2, dw, (size_t)N * K));
    EXPECT((e = test_rel_err(rdx2, dx, (size_t)M * ldx)) < tol, "matmul_bwd dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdw2, dw, (size_t)N * K)) < tol, "matmul_bwd dw: rel err %.2e", e);
    /* x in bf16 (x16): against the CPU's x16 variants (x widened, then OpenBLAS) */
    const xwT16_fn xwT16 = bf16 ? matmul_xwT_x16_cuda_bf16 : matmul_xwT_x16_cuda;
    const dw16_fn dw16 = bf16 ? matmul_dw_acc_x16_cuda_bf16 : matmul_dw_acc_x16_cuda;
    uint16_t *x16 = xmalloc(sizeof(uint16_t) * (size_t)M * ldx), *gx16;
    host_bf16_from_f32(x16, x, (size_t)M * ldx);
    CUDA_CHECK(cudaMalloc((void **)&gx16, sizeof(uint16_t) * ((size_t)M * ldx + off)));
    gx16 += off;
    CUDA_CHECK(cudaMemcpy(gx16, x16, sizeof(uint16_t) * (size_t)M * ldx, cudaMemcpyHostToDevice));
    cpu_matmul_xwT_x16(y, ldy, x16, ldx, w, M, N, K, 1.0f);
    xwT16(gy, ldy, gx16, ldx, gw, M, N, K, 1.0f);
    cpu_matmul_dw_acc_x16(dw, dy, ldy, x16, ldx, M, N, K);
    dw16(gdw, gdy, ldy, gx16, ldx, M, N, K);
    float *ry3 = host_floats(gy, (size_t)M * ldy), *rdw3 = host_floats(gdw, (size_t)N * K);
    for (int r = 0; r < M; r++) memcpy(ry3 + (size_t)r * ldy + N, y + (size_t)r * ldy + N, sizeof(float) * pad);
    printf("  x16 rel err: y %.1e, dw %.1e\n", test_rel_err(ry3, y, (size_t)M * ldy),
           test_rel_err(rdw3, dw, (size_t)N * K));
    EXPECT((e = test_rel_err(ry3, y, (size_t)M * ldy)) < tol, "matmul_xwT_x16 y: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdw3, dw, (size_t)N * K)) < tol, "matmul_dw_acc_x16 dw: rel err %.2e", e);
    /* a bf16 output (with a bias, and without): within one bf16 rounding (4e-3) of the CPU's, plus the bf16 GEMM's */
    void (*y16f)(uint16_t *, int, const float *, const uint16_t *, int, const float *, const float *, int, int, int) =
        bf16 ? matmul_xwT_y16_cuda_bf16 : matmul_xwT_y16_cuda;
    float *bias = randn(N), *gbias = gpu_at(bias, N, 0);
    uint16_t *y16 = xmalloc(sizeof(uint16_t) * (size_t)M * ldy), *gy16,
             *ry16 = xmalloc(sizeof(uint16_t) * (size_t)M * ldy);
    CUDA_CHECK(cudaMalloc((void **)&gy16, sizeof(uint16_t) * (size_t)M * ldy));
    for (int variant = 0; variant < 3; variant++) { /* no bias, a bias, x in bf16 */
        const int with_bias = variant == 1;
        memset(y16, 0, sizeof(uint16_t) * (size_t)M * ldy);
        CUDA_CHECK(cudaMemset(gy16, 0, sizeof(uint16_t) * (size_t)M * ldy));
        cpu_matmul_xwT_y16(y16, ldy, variant == 2 ? NULL : x, variant == 2 ? x16 : NULL, ldx, w,
                           with_bias ? bias : NULL, M, N, K);
        y16f(gy16, ldy, variant == 2 ? NULL : gx, variant == 2 ? gx16 : NULL, ldx, gw, with_bias ? gbias : NULL, M, N,
             K);
        CUDA_CHECK(cudaMemcpy(ry16, gy16, sizeof(uint16_t) * (size_t)M * ldy, cudaMemcpyDeviceToHost));
        float *a16 = xmalloc(sizeof(float) * (size_t)M * ldy), *b16 = xmalloc(sizeof(float) * (size_t)M * ldy);
        host_f32_from_bf16(a16, ry16, (size_t)M * ldy), host_f32_from_bf16(b16, y16, (size_t)M * ldy);
        printf("  y16%s rel err: %.1e\n", with_bias ? " (bias)" : variant ? " (x16)" : "",
               test_rel_err(a16, b16, (size_t)M * ldy));
        EXPECT((e = test_rel_err(a16, b16, (size_t)M * ldy)) < (bf16 ? 1.5e-2 : 4e-3), "matmul_xwT_y16: rel err %.2e",
               e);
        free(a16), free(b16);
    }
    cudaFree(gy16), free(y16), free(ry16), free(bias);
    /* matmul_bwd with dy in bf16 (the rows' padding of dy16 is never read) */
    void (*bwd16)(float *, uint16_t *, int, float, float *, const float *, const uint16_t *, int, const float *,
                  const uint16_t *, int, const float *, int, int, int) =
        bf16 ? matmul_bwd16_cuda_bf16 : matmul_bwd16_cuda;
    uint16_t *dy16 = xmalloc(sizeof(uint16_t) * (size_t)M * ldy), *gdy16;
    host_bf16_from_f32(dy16, dy, (size_t)M * ldy);
    CUDA_CHECK(cudaMalloc((void **)&gdy16, sizeof(uint16_t) * ((size_t)M * ldy + off)));
    gdy16 += off;
    CUDA_CHECK(cudaMemcpy(gdy16, dy16, sizeof(uint16_t) * (size_t)M * ldy, cudaMemcpyHostToDevice));
    cpu_matmul_bwd16(dx, NULL, ldx, 1.0f, dw, NULL, dy16, ldy, x, NULL, ldx, w, M, N, K);
    bwd16(gdx, NULL, ldx, 1.0f, gdw, NULL, gdy16, ldy, gx, NULL, ldx, gw, M, N, K);
    cpu_matmul_bwd16(dx, NULL, ldx, 1.0f, dw, dy, NULL, ldy, NULL, x16, ldx, w, M, N, K); /* and x in bf16 */
    bwd16(gdx, NULL, ldx, 1.0f, gdw, gdy, NULL, ldy, NULL, gx16, ldx, gw, M, N, K);
    cpu_matmul_bwd16(dx, NULL, ldx, 1.0f, NULL, NULL, dy16, ldy, NULL, NULL, 0, w, M, N,
                     K); /* one gradient alone: dx */
    bwd16(gdx, NULL, ldx, 1.0f, NULL, NULL, gdy16, ldy, NULL, NULL, 0, gw, M, N, K);
    cpu_matmul_bwd16(NULL, NULL, 0, 0.0f, dw, NULL, dy16, ldy, NULL, x16, ldx, NULL, M, N, K); /* dw */
    bwd16(NULL, NULL, 0, 0.0f, gdw, NULL, gdy16, ldy, NULL, gx16, ldx, NULL, M, N, K);
    float *rdx4 = host_floats(gdx, (size_t)M * ldx), *rdw4 = host_floats(gdw, (size_t)N * K);
    for (int r = 0; r < M; r++) memcpy(rdx4 + (size_t)r * ldx + K, dx + (size_t)r * ldx + K, sizeof(float) * pad);
    printf("  bwd16 rel err: dx %.1e, dw %.1e\n", test_rel_err(rdx4, dx, (size_t)M * ldx),
           test_rel_err(rdw4, dw, (size_t)N * K));
    EXPECT((e = test_rel_err(rdx4, dx, (size_t)M * ldx)) < tol, "matmul_bwd16 dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdw4, dw, (size_t)N * K)) < tol, "matmul_bwd16 dw: rel err %.2e", e);
    /* dx written in bf16 (dx16), with dy in bf16: within one bf16 rounding of the CPU's, plus the bf16 GEMM's; a
     * dense aligned output (the bf16 product writes it) and the strided one (through float32); each written, then
     * added to what dx16 holds (beta 1: the lean path's x_proj part added to the scan's) */
    for (int form = 0; form < 4; form++) {
        const int dense = form & 1;
        const float beta = form >> 1;
        const int ldo = dense ? K : ldx;
        uint16_t *dx16 = xcalloc((size_t)M * ldo, sizeof(uint16_t)), *rdx16 = xcalloc((size_t)M * ldo, sizeof(uint16_t)),
                 *gdx16;
        if (beta != 0.0f) {
            float *init = xmalloc(sizeof(float) * (size_t)M * ldo);
            for (size_t i = 0; i < (size_t)M * ldo; i++) init[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
            host_bf16_from_f32(dx16, init, (size_t)M * ldo);
            free(init);
        }
        CUDA_CHECK(cudaMalloc((void **)&gdx16, sizeof(uint16_t) * (size_t)M * ldo));
        CUDA_CHECK(cudaMemcpy(gdx16, dx16, sizeof(uint16_t) * (size_t)M * ldo, cudaMemcpyHostToDevice));
        cpu_matmul_bwd16(NULL, dx16, ldo, beta, NULL, NULL, dy16, ldy, NULL, NULL, 0, w, M, N, K);
        bwd16(NULL, gdx16, ldo, beta, NULL, NULL, gdy16, ldy, NULL, NULL, 0, gw, M, N, K);
        CUDA_CHECK(cudaMemcpy(rdx16, gdx16, sizeof(uint16_t) * (size_t)M * ldo, cudaMemcpyDeviceToHost));
        float *a16 = xmalloc(sizeof(float) * (size_t)M * ldo), *b16 = xmalloc(sizeof(float) * (size_t)M * ldo);
        host_f32_from_bf16(a16, rdx16, (size_t)M * ldo), host_f32_from_bf16(b16, dx16, (size_t)M * ldo);
        printf("  bwd16 dx16%s%s rel err: %.1e\n", dense ? " (dense)" : "", beta != 0.0f ? " +=" : "",
               test_rel_err(a16, b16, (size_t)M * ldo));
        EXPECT((e = test_rel_err(a16, b16, (size_t)M * ldo)) < (bf16 ? 1.5e-2 : 4e-3), "matmul_bwd16 dx16: rel err %.2e",
               e);
        free(a16), free(b16), cudaFree(gdx16), free(dx16), free(rdx16);
    }
    free(dy16);
    /* determinism: recompute y with beta 0 twice */
    xwT(gy, ldy, gx, ldx, gw, M, N, K, 0.0f);
    float *a = host_floats(gy, (size_t)M * ldy);
    xwT(gy, ldy, gx, ldx, gw, M, N, K, 0.0f);
    float *b = host_floats(gy, (size_t)M * ldy);
    EXPECT(!memcmp(a, b, sizeof(float) * M * ldy), "two runs differ");
    TEST_END();
}

int main(void) {
    const char *why;
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA matmul tests: %s\n", why);
        return 0;
    }
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        check(37, 53, 29, 3, bf16, 0);
        check(256, 512, 128, 0, bf16, 0);
        check(256, 512, 128, 0, bf16, 1);
        check(200, 96, 48, 8, bf16, 2);
        check(256, 96, 64, 3, bf16, 1); /* bf16 copies of rows under 128 wide (a thread per element), strided */
        check(2048, 1024, 256, 0, bf16, 0);
        check(1, 3072, 768, 0, bf16, 0);
    }
    return test_failures ? 1 : 0;
}
