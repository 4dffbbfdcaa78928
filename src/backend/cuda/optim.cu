/* The optimizer's CUDA kernels over the flat parameter buffer: the global gradient norm (for clipping)
 * and one fused AdamW step doing the CPU adamw_step's arithmetic (cpu/optim.c) per element, the clip's
 * scale applied as it reads the gradient.
 * The norm is a fixed-order two-pass reduction in double: the grid depends only on n, each thread sums a
 * fixed grid-stride subset, blocks reduce by block_reduce's fixed tree, and one block adds the per-block
 * partials in the same way. No atomics, so the same buffer always gives the same bits. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cuda_bf16.h>
#include <math.h>

#define NORM_MAX_BLOCKS 1024 /* partials of the first pass; the second pass is one block over these */
#define NORM_PER_THREAD 8    /* elements a thread sums before the grid saturates (only sets the grid) */

__global__ static void sumsq_partial_kernel(double *partial, const float *x, size_t n) {
    double s = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * x[i]; /* a float square is exact in double, as on the CPU */
    s = block_reduce(s, SumOp());
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ static void sumsq_finish_kernel(double *total, const double *partial, int nparts) {
    double s = 0;
    for (int p = threadIdx.x; p < nparts; p += RED_THREADS) s += partial[p];
    s = block_reduce(s, SumOp());
    if (threadIdx.x == 0) *total = s;
}

extern "C" double grad_norm_cuda(const float *dw, size_t n) {
    if (n == 0) return 0.0;
    const size_t want = (n + (size_t)RED_THREADS * NORM_PER_THREAD - 1) / ((size_t)RED_THREADS * NORM_PER_THREAD);
    const int nparts = want > NORM_MAX_BLOCKS ? NORM_MAX_BLOCKS : (int)want;
    double *partial; /* [nparts] per-block sums of squares, then the total */
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(double) * ((size_t)nparts + 1), 0));
    sumsq_partial_kernel<<<nparts, RED_THREADS>>>(partial, dw, n);
    CUDA_CHECK_LAUNCH();
    sumsq_finish_kernel<<<1, RED_THREADS>>>(partial + nparts, partial, nparts);
    CUDA_CHECK_LAUNCH();
    double ss;
    CUDA_CHECK(cudaMemcpy(&ss, partial + nparts, sizeof ss, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFreeAsync(partial, 0));
    return sqrt(ss);
}

/* shrink_decay = 1 - lr*wd, applied where decay_mask[i] != 0 (elsewhere the shrink is exactly 1). */
/* w16, when not NULL, receives bf16(w) as well: the weights' shadow for the bf16 GEMMs (weights16.cu). */
__global__ static void adamw_kernel(float *w, __nv_bfloat16 *w16, const float *g, float gscale, float *m, float *v,
                                    const unsigned char *decay_mask, size_t n, float shrink_decay, float step_size,
                                    float beta1, float beta2, float eps, float bc2_sqrt) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i] * gscale;
        float wi = w[i], mi = m[i], vi = v[i];
        if (decay_mask[i]) wi *= shrink_decay;
        mi += (gi - mi) * (1.0f - beta1); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
        vi = vi * beta2 + gi * gi * (1.0f - beta2);
        wi -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        w[i] = wi, m[i] = mi, v[i] = vi;
        if (w16) w16[i] = __float2bfloat16_rn(wi);
    }
}

extern "C" void adamw_step_cuda(float *w, const float *g, float gscale, float *m, float *v,
                                const unsigned char *decay_mask, size_t n, float lr, float weight_decay, float beta1,
                                float beta2, float eps, long step) {
    if (n == 0) return;
    /* The scalars exactly as train.c's adamw_step computes them, in float on the host. */
    const float bc1 = 1.0f - powf(beta1, (float)step), bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = lr / bc1, shrink_decay = 1.0f - lr * weight_decay;
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)w16_for_update(w, n);
    adamw_kernel<<<elem_blocks(n), ELEM_THREADS>>>(w, w16, g, gscale, m, v, decay_mask, n, shrink_decay, step_size, beta1,
                                                   beta2, eps, bc2_sqrt);
    CUDA_CHECK_LAUNCH();
    if (w16) w16_updated();
}
