/* The weights' bf16 shadow (weights16.cu), which AdamW keeps for the bf16 GEMMs, against what it must hold: bf16(w)
 * bitwise while valid, dropped by any write into w. (grad_norm and adamw_step themselves are cases of the op runner,
 * tests/test_ops.c.) Prints "skip - ..." where there is no GPU. */
#include "test.h"
#include "gpu/gpu_test.h"
#include "backend/cpu/cpu_ops.h"
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"

#include <cuda_runtime.h>
#include <string.h>

static unsigned long long rng_state = 0x2545f4914f6cdd1dull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}
#define FB(n) (sizeof(float) * (size_t)(n))

/* weights16.cu: the bf16 shadow AdamW keeps of the parameter buffer for the bf16 GEMMs. */
static void test_weights16(void) {
    TEST_BEGIN("CUDA weights' bf16 shadow: AdamW writes bf16(w) bitwise once wanted; writes into w (upload, copy, "
               "zero, free) drop it, writes elsewhere do not");
    const size_t n = 1000;
    float *w0 = rand_vec(n, 1.0f), *g = rand_vec(n, 0.5f), *w = malloc(FB(n));
    unsigned char *mask = calloc(n, 1);
    float *d_w = cuda_alloc(FB(n)), *d_m = cuda_alloc(FB(n)), *d_v = cuda_alloc(FB(n)), *d_g = cuda_alloc(FB(n)),
          *other = cuda_alloc(FB(n));
    unsigned char *d_mask = cuda_alloc(n);
    cuda_upload(d_w, w0, FB(n)), cuda_upload(d_g, g, FB(n)), cuda_upload(d_mask, mask, n);
    adamw_step_cuda(d_w, d_g, 1.0f, d_m, d_v, d_mask, n, 1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, 1);
    EXPECT(!w16_lookup(d_w, n), "a shadow before a bf16 GEMM asked for one");
    w16_want();
    adamw_step_cuda(d_w, d_g, 1.0f, d_m, d_v, d_mask, n, 1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, 2);
    const uint16_t *s = w16_lookup(d_w + 16, 100);
    EXPECT(s != NULL, "no shadow after a step");
    if (s) {
        uint16_t got[100], want[n];
        cuda_download(w, d_w, FB(n));
        host_bf16_from_f32(want, w, n);
        CUDA_CHECK(cudaMemcpy(got, s, sizeof got, cudaMemcpyDeviceToHost));
        EXPECT(!memcmp(got, want + 16, sizeof got), "the shadow is not bf16(w)");
    }
    EXPECT(!w16_lookup(d_w, n + 1) && !w16_lookup(d_w - 1, 2), "a range reaching outside w found a shadow");
    cuda_upload(other, w0, FB(n)), cuda_zero(other, FB(1)), cuda_copy(other, d_w, FB(2));
    EXPECT(w16_lookup(d_w, n) != NULL, "writes elsewhere dropped the shadow");
    for (int k = 0; k < 4; k++) { /* each kind of write into w's last element, then a step to restore it */
        if (k == 0) cuda_upload(d_w + n - 1, w0, FB(1));
        if (k == 1) cuda_copy(d_w + n - 1, other, FB(1));
        if (k == 2) cuda_zero(d_w + n - 1, FB(1));
        if (k == 3) cuda_release(d_w);
        EXPECT(!w16_lookup(d_w, 1), "write %d into w kept the shadow", k);
        if (k < 3) adamw_step_cuda(d_w, d_g, 1.0f, d_m, d_v, d_mask, n, 1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, 3 + k);
        if (k < 3) EXPECT(w16_lookup(d_w, n) != NULL, "no shadow after step %d", 3 + k);
    }
    cuda_release(d_m), cuda_release(d_v), cuda_release(d_g), cuda_release(other), cuda_release(d_mask);
    free(w0), free(g), free(w), free(mask);
    TEST_END();
}

/* ZeRO-1 on several GPUs (src/dist/dist_nccl.c): AdamW steps one rank's shard, the gather writes the rest of w, and
 * w16_refresh must leave a valid shadow of all of w, bitwise bf16(w). The gather is an upload here (NCCL needs two
 * GPUs; tests/gpu/test_nccl.sh runs the real one). */
static void test_weights16_refresh(void) {
    TEST_BEGIN("CUDA weights' bf16 shadow after a ZeRO-1 gather: w16_refresh shadows all of w again, bitwise bf16(w)");
    const size_t n = 1000, lo = 512; /* this rank's shard: [lo, n) */
    float *w0 = rand_vec(n, 1.0f), *g = rand_vec(n, 0.5f), *others = rand_vec(lo, 2.0f), *w = malloc(FB(n));
    unsigned char *mask = calloc(n, 1);
    float *d_w = cuda_alloc(FB(n)), *d_m = cuda_alloc(FB(n)), *d_v = cuda_alloc(FB(n)), *d_g = cuda_alloc(FB(n));
    unsigned char *d_mask = cuda_alloc(n);
    cuda_upload(d_w, w0, FB(n)), cuda_upload(d_g, g, FB(n)), cuda_upload(d_mask, mask, n);
    w16_want();
    adamw_step_cuda(d_w + lo, d_g + lo, 1.0f, d_m, d_v, d_mask + lo, n - lo, 1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, 1);
    EXPECT(w16_lookup(d_w + lo, n - lo) != NULL && !w16_lookup(d_w, n), "AdamW on a shard shadows that shard alone");
    cuda_upload(d_w, others, FB(lo)); /* the other ranks' shards arrive */
    w16_refresh(d_w, n);
    const uint16_t *s = w16_lookup(d_w, n);
    EXPECT(s != NULL, "no shadow of the whole buffer after w16_refresh");
    if (s) {
        uint16_t *got = malloc(sizeof(uint16_t) * n), *want = malloc(sizeof(uint16_t) * n);
        cuda_download(w, d_w, FB(n));
        host_bf16_from_f32(want, w, n);
        CUDA_CHECK(cudaMemcpy(got, s, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
        EXPECT(!memcmp(got, want, sizeof(uint16_t) * n), "the refreshed shadow is not bf16(w)");
        free(got), free(want);
    }
    cuda_release(d_w), cuda_release(d_m), cuda_release(d_v), cuda_release(d_g), cuda_release(d_mask);
    free(w0), free(g), free(others), free(w), free(mask);
    TEST_END();
}

int main(void) {
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA weight shadow: %s\n", why);
        return 0;
    }
    test_weights16();
    test_weights16_refresh();
    return test_failures;
}
