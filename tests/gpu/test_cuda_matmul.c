/* The cuBLASLt GEMMs against OpenBLAS (src/backend/cpu/matmul.c): the three linear-layer products,
 * with odd shapes, row strides wider than the rows, beta 0 and 1; within 1e-5 relative (float32,
 * FP32 compute) and bitwise repeatable. Prints "skip - ..." without a GPU. */
#include "common.h"
#include "ops/ops.h"
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



static void check(int M, int N, int K, int pad) {
    char name[128];
    snprintf(name, sizeof name, "cuBLASLt matmul_xwT / dyw / dw_acc vs OpenBLAS: M %d, N %d, K %d, strides +%d", M, N,
             K, pad);
    TEST_BEGIN(name);
    const int ldx = K + pad, ldy = N + pad;
    float *x = randn((size_t)M * ldx), *w = randn((size_t)N * K), *y = randn((size_t)M * ldy);
    float *dy = randn((size_t)M * ldy), *dx = randn((size_t)M * ldx), *dw = randn((size_t)N * K);
    float *gx = gpu_floats(x, (size_t)M * ldx), *gw = gpu_floats(w, (size_t)N * K), *gy = gpu_floats(y, (size_t)M * ldy);
    float *gdy = gpu_floats(dy, (size_t)M * ldy), *gdx = gpu_floats(dx, (size_t)M * ldx), *gdw = gpu_floats(dw, (size_t)N * K);
    for (int beta = 0; beta <= 1; beta++) {
        matmul_xwT(y, ldy, x, ldx, w, M, N, K, (float)beta);
        matmul_xwT_cuda(gy, ldy, gx, ldx, gw, M, N, K, (float)beta);
        matmul_dyw(dx, ldx, dy, ldy, w, M, N, K, (float)beta);
        matmul_dyw_cuda(gdx, ldx, gdy, ldy, gw, M, N, K, (float)beta);
    }
    matmul_dw_acc(dw, dy, ldy, x, ldx, M, N, K);
    matmul_dw_acc_cuda(gdw, gdy, ldy, gx, ldx, M, N, K);
    cudaError_t err = cudaDeviceSynchronize();
    EXPECT(err == cudaSuccess, "CUDA: %s", cudaGetErrorString(err));
    float *ry = host_floats(gy, (size_t)M * ldy), *rdx = host_floats(gdx, (size_t)M * ldx), *rdw = host_floats(gdw, (size_t)N * K);
    double e;
    /* compare only the columns inside each row (the padding is not written by either) */
    for (int r = 0; r < M; r++) memcpy(ry + (size_t)r * ldy + N, y + (size_t)r * ldy + N, sizeof(float) * pad);
    for (int r = 0; r < M; r++) memcpy(rdx + (size_t)r * ldx + K, dx + (size_t)r * ldx + K, sizeof(float) * pad);
    printf("  rel err: y %.1e, dx %.1e, dw %.1e\n", test_rel_err(ry, y, (size_t)M * ldy),
           test_rel_err(rdx, dx, (size_t)M * ldx), test_rel_err(rdw, dw, (size_t)N * K));
    EXPECT((e = test_rel_err(ry, y, (size_t)M * ldy)) < 1e-5, "y: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdx, dx, (size_t)M * ldx)) < 1e-5, "dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdw, dw, (size_t)N * K)) < 1e-5, "dw: rel err %.2e", e);
    /* determinism: recompute y with beta 0 twice */
    matmul_xwT_cuda(gy, ldy, gx, ldx, gw, M, N, K, 0.0f);
    float *a = host_floats(gy, (size_t)M * ldy);
    matmul_xwT_cuda(gy, ldy, gx, ldx, gw, M, N, K, 0.0f);
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
    check(37, 53, 29, 3);
    check(256, 512, 128, 0);
    check(2048, 1024, 256, 0);
    check(1, 3072, 768, 0);
    return test_failures ? 1 : 0;
}
