/* RMSNorm forward/backward (CUDA): one block per row with a fixed-order (double) block reduction, as the
 * CPU sums in double; dw's column sums go through colsum_acc (per-chunk partials summed in order). */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cuda_bf16.h>

/* y[i] and/or y16[i] = v */
__device__ __forceinline__ static void norm_store(float *y, __nv_bfloat16 *y16, size_t i, float v) {
    if (y) y[i] = v;
    if (y16) y16[i] = __float2bfloat16_rn(v);
}

__global__ static void rmsnorm_fwd_kernel(float *y, __nv_bfloat16 *y16, float *rstd, const float *x, const float *w,
                                          int D, float eps) {
    const size_t r = blockIdx.x;
    const float *xr = x + r * D;
    double ss = 0;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) ss += (double)xr[i] * xr[i];
    ss = block_reduce(ss, SumOp());
    const float s = 1.0f / sqrtf((float)(ss / D) + eps);
    if (rstd && threadIdx.x == 0) rstd[r] = s;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) norm_store(y, y16, r * D + i, xr[i] * s * w[i]);
}

/* x_out = x + delta, then the norm of x_out (one block per row; x_out may be x: each element is read and
 * written by the same thread). */
__global__ static void add_rmsnorm_fwd_kernel(float *x_out, float *y, __nv_bfloat16 *y16, float *rstd, const float *x,
                                              const float *delta, const float *w, int D, float eps) {
    const size_t r = blockIdx.x;
    const float *xr = x + r * D, *dr = delta ? delta + r * D : NULL;
    float *xo = x_out + r * D;
    double ss = 0;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) {
        const float v = dr ? xr[i] + dr[i] : xr[i];
        xo[i] = v;
        ss += (double)v * v;
    }
    ss = block_reduce(ss, SumOp());
    const float s = 1.0f / sqrtf((float)(ss / D) + eps);
    if (rstd && threadIdx.x == 0) rstd[r] = s;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) norm_store(y, y16, r * D + i, xo[i] * s * w[i]);
}

__global__ static void rmsnorm_bwd_dx_kernel(float *dx, const float *dy, const float *x, const float *w,
                                             const float *rstd, int D, int acc) {
    const size_t r = blockIdx.x;
    const float *xr = x + r * D, *dyr = dy + r * D;
    float *dxr = dx + r * D;
    const float s = rstd[r];
    double dot = 0;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) dot += (double)dyr[i] * w[i] * xr[i];
    dot = block_reduce(dot, SumOp());
    const float c = (float)(dot / D) * s * s * s;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) {
        const float g = dyr[i] * w[i] * s - xr[i] * c;
        dxr[i] = acc ? dxr[i] + g : g;
    }
}

struct RmsnormDw { /* dw[i] = sum over rows of dy * x * rstd */
    const float *dy, *x, *rstd;
    int D;
    __device__ float operator()(int r, int i) const {
        const size_t k = (size_t)r * D + i;
        return dy[k] * x[k] * rstd[r];
    }
};

extern "C" void rmsnorm_fwd_cuda(float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D,
                                 float eps) {
    if (rows <= 0 || D <= 0) return;
    rmsnorm_fwd_kernel<<<rows, RED_THREADS>>>(y, (__nv_bfloat16 *)y16, rstd, x, w, D, eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void add_rmsnorm_fwd_cuda(float *x_out, float *y, uint16_t *y16, float *rstd, const float *x,
                                     const float *delta, const float *w, int rows, int D, float eps) {
    if (rows <= 0 || D <= 0) return;
    add_rmsnorm_fwd_kernel<<<rows, RED_THREADS>>>(x_out, y, (__nv_bfloat16 *)y16, rstd, x, delta, w, D, eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void rmsnorm_bwd_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                 const float *rstd, int rows, int D, int acc) {
    if (rows <= 0 || D <= 0) return;
    rmsnorm_bwd_dx_kernel<<<rows, RED_THREADS>>>(dx, dy, x, w, rstd, D, acc);
    CUDA_CHECK_LAUNCH();
    colsum_acc(dw, RmsnormDw{dy, x, rstd, D}, rows, D);
}
