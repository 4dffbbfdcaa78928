/* The optimizer's CUDA kernels (grad_norm_cuda, adamw_step_cuda) against the CPU arithmetic of cpu_grad_norm and
 * cpu_adamw_step (src/backend/cpu/optim.c), on random buffers of odd sizes: the norm within 1e-12 of a double
 * sum, five AdamW steps (decay mask mixing 0 and 1) within 1e-6 relative to each tensor's scale, and each
 * CUDA result bitwise equal across two runs. Prints "skip - ..." where there is no GPU. */
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

static const size_t sizes[] = {1, 4099, 1000003};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_grad_norm(void) {
    TEST_BEGIN("CUDA grad_norm within 1e-12 of the CPU double sum, bitwise repeatable");
    for (size_t k = 0; k < NSIZES; k++) {
        const size_t n = sizes[k];
        float *x = rand_vec(n, 3.0f);
        double ss = 0;
        for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        const double cpu = sqrt(ss);
        float *d = gpu_to_dev(x, FB(n));
        const double g0 = grad_norm_cuda(d, n), g1 = grad_norm_cuda(d, n);
        EXPECT(fabs(g0 - cpu) <= 1e-12 * cpu, "n=%zu: norm %.17g vs CPU %.17g (rel %.3g)", n, g0, cpu,
               fabs(g0 - cpu) / cpu);
        EXPECT(memcmp(&g0, &g1, sizeof g0) == 0, "n=%zu: two CUDA norms differ (%.17g, %.17g)", n, g0, g1);
        cudaFree(d);
        free(x);
    }
    EXPECT(grad_norm_cuda(NULL, 0) == 0.0, "n=0: norm not 0");
    TEST_END();
}

/* cpu/optim.c's adamw_step, one flat buffer with a per-element decay flag in place of the per-tensor one. */
static void adamw_cpu(float *w, const float *g, float *m, float *v, const unsigned char *mask, size_t n, float lr,
                      float wd, float beta1, float beta2, float eps, long step) {
    const float bc1 = 1.0f - powf(beta1, (float)step), bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = lr / bc1;
    for (size_t i = 0; i < n; i++) {
        const float shrink = 1.0f - lr * (mask[i] ? wd : 0.0f);
        w[i] *= shrink;
        m[i] += (g[i] - m[i]) * (1.0f - beta1);
        v[i] = v[i] * beta2 + g[i] * g[i] * (1.0f - beta2);
        w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

static void test_adamw(void) {
    TEST_BEGIN("CUDA adamw_step: 5 steps within 1e-6 relative of the CPU (w, m, v; mixed decay mask; one step's "
               "gradient scaled by the clip's factor as AdamW reads it), repeatable");
    enum { STEPS = 5 };
    const float wd = 0.1f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
    for (size_t k = 0; k < NSIZES; k++) {
        const size_t n = sizes[k];
        float *w0 = rand_vec(n, 1.0f), *grads[STEPS];
        for (int s = 0; s < STEPS; s++) grads[s] = rand_vec(n, s == 2 ? 1e-3f : 0.5f); /* one step of tiny g */
        unsigned char *mask = malloc(n);
        for (size_t i = 0; i < n; i++) mask[i] = (i % 7) < 4; /* n=1: decayed */
        size_t decayed = 0;
        for (size_t i = 0; i < n; i++) decayed += mask[i];

        float *w = malloc(FB(n)), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
        memcpy(w, w0, FB(n));
        const float gscale[STEPS] = {1, 1, 1, 0.37f, 1};
        for (int s = 0; s < STEPS; s++) {
            float *gs = malloc(FB(n));
            for (size_t i = 0; i < n; i++) gs[i] = grads[s][i] * gscale[s]; /* the clip's scale, as AdamW reads g */
            adamw_cpu(w, gs, m, v, mask, n, 1e-3f * (s + 1), wd, beta1, beta2, eps, s + 1);
            free(gs);
        }

        float *gw[2], *gm[2], *gv[2];
        for (int rep = 0; rep < 2; rep++) {
            float *d_w = gpu_to_dev(w0, FB(n)), *d_m = gpu_to_dev(NULL, FB(n)), *d_v = gpu_to_dev(NULL, FB(n));
            float *d_g = gpu_to_dev(NULL, FB(n));
            unsigned char *d_mask = gpu_to_dev(mask, n);
            CUDA_CHECK(cudaMemset(d_m, 0, FB(n)));
            CUDA_CHECK(cudaMemset(d_v, 0, FB(n)));
            for (int s = 0; s < STEPS; s++) {
                CUDA_CHECK(cudaMemcpy(d_g, grads[s], FB(n), cudaMemcpyHostToDevice));
                adamw_step_cuda(d_w, d_g, gscale[s], d_m, d_v, d_mask, n, 1e-3f * (s + 1), wd, beta1, beta2, eps,
                                s + 1);
            }
            gpu_to_host(gw[rep] = malloc(FB(n)), d_w, FB(n));
            gpu_to_host(gm[rep] = malloc(FB(n)), d_m, FB(n));
            gpu_to_host(gv[rep] = malloc(FB(n)), d_v, FB(n));
            cudaFree(d_w), cudaFree(d_m), cudaFree(d_v), cudaFree(d_g), cudaFree(d_mask);
        }
        const char *names[3] = {"w", "m", "v"};
        float **gpu[3] = {gw, gm, gv}, *cpu[3] = {w, m, v};
        for (int t = 0; t < 3; t++) {
            const double err = test_rel_err(gpu[t][0], cpu[t], n);
            EXPECT(err <= 1e-6, "n=%zu (%zu decayed): %s rel err %.3g > 1e-6", n, decayed, names[t], err);
            EXPECT(memcmp(gpu[t][0], gpu[t][1], FB(n)) == 0, "n=%zu: %s differs between two CUDA runs", n,
                   names[t]);
            free(gpu[t][0]), free(gpu[t][1]);
        }
        /* The mask must matter: without decay the decayed elements would land elsewhere. */
        float *w_nodecay = malloc(FB(n)), *m2 = calloc(n, sizeof(float)), *v2 = calloc(n, sizeof(float));
        unsigned char *none = calloc(n, 1);
        memcpy(w_nodecay, w0, FB(n));
        for (int s = 0; s < STEPS; s++)
            adamw_cpu(w_nodecay, grads[s], m2, v2, none, n, 1e-3f * (s + 1), wd, beta1, beta2, eps, s + 1);
        EXPECT(test_rel_err(w_nodecay, w, n) > 1e-6, "n=%zu: decay made no measurable difference", n);
        free(w_nodecay), free(m2), free(v2), free(none);
        for (int s = 0; s < STEPS; s++) free(grads[s]);
        free(w0), free(w), free(m), free(v), free(mask);
    }
    TEST_END();
}

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

int main(void) {
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA optimizer: %s\n", why);
        return 0;
    }
    test_grad_norm();
    test_adamw();
    test_weights16();
    return test_failures;
}
