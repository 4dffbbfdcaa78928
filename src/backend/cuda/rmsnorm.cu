/* RMSNorm forward/backward (CUDA), sums in double as the CPU's, in a fixed order: the forward a block per row (a
 * block reduction; a warp per row measured slower, and far slower for decode's few rows), the backward a warp per
 * row (a butterfly of shuffles) with the weight gradient's column sums as per-block partials added in order. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cuda_bf16.h>

/* y[i] and/or y16[i] = v */
__device__ __forceinline__ static void norm_store(float *y, __nv_bfloat16 *y16, size_t i, float v) {
    if (y) y[i] = v;
    if (y16) y16[i] = __float2bfloat16_rn(v);
}

/* v[i] of a float32 or (when v is NULL) bf16 operand */
__device__ __forceinline__ static float ld_either(const float *v, const __nv_bfloat16 *v16, size_t i) {
    return v ? v[i] : __bfloat162float(v16[i]);
}

/* v[2i], v[2i + 1] of a float32 or (when v is NULL) bf16 operand, as one 8- or 4-byte load */
__device__ __forceinline__ static float2 ld2_either(const float *v, const __nv_bfloat16 *v16, size_t i) {
    if (v) return reinterpret_cast<const float2 *>(v)[i];
    return __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(v16)[i]);
}

/* The same bits in every lane: a butterfly (a + b == b + a exactly). */
__device__ __forceinline__ static double warp_sum(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* The plain forward (the backward's recompute of each layer's norm): NORM_FWD_SPLIT rows per block of RED_THREADS,
 * each row's threads summing by a butterfly per warp, then its warps in order (one barrier). Twice the elements
 * per thread of a block per row and half the blocks: the pass is bound by the latency of each block's
 * load-reduce-store, not by bandwidth. */
#define NORM_FWD_SPLIT 2
__global__ static void rmsnorm_fwd_kernel(float *y, __nv_bfloat16 *y16, float *rstd, const float *x, const float *w,
                                          int rows, int D, float eps) {
    constexpr int TPR = RED_THREADS / NORM_FWD_SPLIT, WPR = TPR / 32; // threads and warps per row
    __shared__ double part[RED_THREADS / 32];
    const int half = threadIdx.x / TPR, tid = threadIdx.x % TPR;
    const size_t r = (size_t)blockIdx.x * NORM_FWD_SPLIT + half;
    const bool ok = r < (size_t)rows;
    const float *xr = x + (ok ? r : 0) * D;
    double ss = 0;
    if (ok)
#pragma unroll 4
        for (int i = tid; i < D; i += TPR) ss += (double)xr[i] * xr[i];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    double t = part[half * WPR];
    for (int k = 1; k < WPR; k++) t += part[half * WPR + k];
    if (!ok) return;
    const float s = 1.0f / sqrtf((float)(t / D) + eps);
    if (rstd && tid == 0) rstd[r] = s;
#pragma unroll 4
    for (int i = tid; i < D; i += TPR) norm_store(y, y16, r * D + i, xr[i] * s * w[i]);
}

/* x_out = x + delta, then the norm of x_out (one block per row; x_out may be x: each element is read and
 * written by the same thread). */
__global__ static void add_rmsnorm_fwd_kernel(float *x_out, float *y, __nv_bfloat16 *y16, float *rstd, const float *x,
                                              const float *delta, const __nv_bfloat16 *delta16, const float *w, int D,
                                              float eps) {
    const size_t r = blockIdx.x;
    const float *xr = x + r * D, *dr = delta ? delta + r * D : NULL;
    const __nv_bfloat16 *dr16 = delta16 ? delta16 + r * D : NULL;
    float *xo = x_out + r * D;
    double ss = 0;
    if ((D & 1) == 0) { /* column pairs: 8-byte (bf16: 4-byte) loads and stores */
        const int D2 = D / 2;
        const float2 *x2 = reinterpret_cast<const float2 *>(xr), *w2 = reinterpret_cast<const float2 *>(w);
        float2 *xo2 = reinterpret_cast<float2 *>(xo);
        for (int i = threadIdx.x; i < D2; i += RED_THREADS) {
            float2 v = x2[i];
            if (dr || dr16) {
                const float2 d = ld2_either(dr, dr16, i);
                v.x += d.x, v.y += d.y;
            }
            xo2[i] = v;
            ss += (double)v.x * v.x;
            ss += (double)v.y * v.y;
        }
        ss = block_reduce(ss, SumOp());
        const float s = 1.0f / sqrtf((float)(ss / D) + eps);
        if (rstd && threadIdx.x == 0) rstd[r] = s;
        for (int i = threadIdx.x; i < D2; i += RED_THREADS) {
            const float2 v = xo2[i], wv = w2[i];
            const float a = v.x * s * wv.x, b = v.y * s * wv.y;
            if (y) reinterpret_cast<float2 *>(y + r * D)[i] = make_float2(a, b);
            if (y16) reinterpret_cast<__nv_bfloat162 *>(y16 + r * D)[i] = __floats2bfloat162_rn(a, b);
        }
        return;
    }
    for (int i = threadIdx.x; i < D; i += RED_THREADS) {
        const float v = dr || dr16 ? xr[i] + ld_either(dr, dr16, i) : xr[i];
        xo[i] = v;
        ss += (double)v * v;
    }
    ss = block_reduce(ss, SumOp());
    const float s = 1.0f / sqrtf((float)(ss / D) + eps);
    if (rstd && threadIdx.x == 0) rstd[r] = s;
    for (int i = threadIdx.x; i < D; i += RED_THREADS) norm_store(y, y16, r * D + i, xo[i] * s * w[i]);
}

/* The backward: a warp per row (its dot product summed by shuffles, no block barrier), NORM_BWD_ROWS rows per
 * block. dx (+)= the gradient, dx16 = bf16(dx) when asked; with part_w, each warp adds dy * x * rstd of its rows
 * into its own row of shared memory (lane-owned columns) and the block leaves the sum of those rows, in warp
 * order, in part_w[block, :]: dy and x are read by this pass only. */
#ifndef NORM_BWD_WARPS
#define NORM_BWD_WARPS 8
#endif
#ifndef NORM_BWD_ROWS
#define NORM_BWD_ROWS 32
#endif
__global__ static void __launch_bounds__(NORM_BWD_WARPS * 32)
    rmsnorm_bwd_kernel(float *dx, __nv_bfloat16 *dx16, float *part_w, const float *dy, const __nv_bfloat16 *dy16,
                       const float *x, const float *w, const float *rstd, int rows, int D, int acc) {
    extern __shared__ float dws[]; /* [NORM_BWD_WARPS][D] when part_w */
    const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
    float *mine = dws + (size_t)wp * D;
    if (part_w)
#pragma unroll 4
    for (int i = lane; i < D; i += 32) mine[i] = 0.0f;
    const int r1 = min(rows, (int)(blockIdx.x + 1) * NORM_BWD_ROWS);
    if ((D & 63) == 0) { /* rows of whole pairs for every lane: each lane takes column pairs, 8-byte (bf16: 4-byte) loads */
        const int D2 = D / 2;
        const float2 *w2 = reinterpret_cast<const float2 *>(w);
        float2 *mine2 = reinterpret_cast<float2 *>(mine);
        for (int r = blockIdx.x * NORM_BWD_ROWS + wp; r < r1; r += NORM_BWD_WARPS) {
            const size_t o = (size_t)r * D;
            const float2 *x2 = reinterpret_cast<const float2 *>(x + o);
            const float *dyr = dy ? dy + o : NULL;
            const __nv_bfloat16 *dyr16 = dy16 ? dy16 + o : NULL;
            const float s = rstd[r];
            double dot = 0;
#pragma unroll 4
            for (int i = lane; i < D2; i += 32) {
                const float2 g = ld2_either(dyr, dyr16, i), xv = x2[i], wv = w2[i];
                dot += (double)g.x * wv.x * xv.x;
                dot += (double)g.y * wv.y * xv.y;
                if (part_w) mine2[i].x += g.x * xv.x * s, mine2[i].y += g.y * xv.y * s;
            }
            const float c = (float)(warp_sum(dot) / D) * s * s * s;
            float2 *dx2 = reinterpret_cast<float2 *>(dx + o);
            __nv_bfloat162 *dx162 = dx16 ? reinterpret_cast<__nv_bfloat162 *>(dx16 + o) : NULL;
#pragma unroll 4
            for (int i = lane; i < D2; i += 32) {
                const float2 g = ld2_either(dyr, dyr16, i), xv = x2[i], wv = w2[i];
                float2 v = make_float2(g.x * wv.x * s - xv.x * c, g.y * wv.y * s - xv.y * c);
                if (acc) {
                    const float2 o2 = dx2[i];
                    v.x += o2.x, v.y += o2.y;
                }
                dx2[i] = v;
                if (dx162) dx162[i] = __floats2bfloat162_rn(v.x, v.y);
            }
        }
    } else
    for (int r = blockIdx.x * NORM_BWD_ROWS + wp; r < r1; r += NORM_BWD_WARPS) {
        const float *xr = x + (size_t)r * D, *dyr = dy ? dy + (size_t)r * D : NULL;
        const __nv_bfloat16 *dyr16 = dy16 ? dy16 + (size_t)r * D : NULL;
        float *dxr = dx + (size_t)r * D;
        const float s = rstd[r];
        double dot = 0;
#pragma unroll 4
        for (int i = lane; i < D; i += 32) {
            const float g = ld_either(dyr, dyr16, i);
            dot += (double)g * w[i] * xr[i];
            if (part_w) mine[i] += g * xr[i] * s;
        }
        const float c = (float)(warp_sum(dot) / D) * s * s * s;
#pragma unroll 4
        for (int i = lane; i < D; i += 32) {
            const float g = ld_either(dyr, dyr16, i) * w[i] * s - xr[i] * c, v = acc ? dxr[i] + g : g;
            dxr[i] = v;
            if (dx16) dx16[(size_t)r * D + i] = __float2bfloat16_rn(v);
        }
    }
    if (part_w) {
        __syncthreads();
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            float t = dws[i];
            for (int v = 1; v < NORM_BWD_WARPS; v++) t += dws[(size_t)v * D + i];
            part_w[(size_t)blockIdx.x * D + i] = t;
        }
    }
}

struct RmsnormDw { /* dw[i] = sum over rows of dy * x * rstd (rows too wide for the fused sums) */
    const float *dy;
    const __nv_bfloat16 *dy16;
    const float *x, *rstd;
    int D;
    __device__ float operator()(int r, int i) const {
        const size_t k = (size_t)r * D + i;
        return ld_either(dy, dy16, k) * x[k] * rstd[r];
    }
};

extern "C" void rmsnorm_fwd_cuda(mat y_m, float *rstd, const float *x, const float *w, int rows, int D, float eps) {
    float *y = mat_f(y_m);
    uint16_t *y16 = mat_h(y_m);
    if (rows <= 0 || D <= 0) return;
    rmsnorm_fwd_kernel<<<cdiv(rows, NORM_FWD_SPLIT), RED_THREADS>>>(y, (__nv_bfloat16 *)y16, rstd, x, w, rows, D,
                                                                     eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void add_rmsnorm_fwd_cuda(float *x_out, mat y_m, float *rstd, const float *x, mat delta_m, const float *w,
                                     int rows, int D, float eps) {
    float *y = mat_f(y_m);
    uint16_t *y16 = mat_h(y_m);
    const float *delta = mat_f(delta_m);
    const uint16_t *delta16 = mat_h(delta_m);
    if (rows <= 0 || D <= 0) return;
    add_rmsnorm_fwd_kernel<<<rows, RED_THREADS>>>(x_out, y, (__nv_bfloat16 *)y16, rstd, x, delta,
                                                  (const __nv_bfloat16 *)delta16, w, D, eps);
    CUDA_CHECK_LAUNCH();
}

extern "C" void rmsnorm_bwd_cuda(float *dx, uint16_t *dx16, float *dw, mat dy_m, const float *x, const float *w,
                                 const float *rstd, int rows, int D, int acc) {
    const float *dy = mat_f(dy_m);
    const uint16_t *dy16 = mat_h(dy_m);
    if (rows <= 0 || D <= 0) return;
    const int nblk = cdiv(rows, NORM_BWD_ROWS);
    const size_t smem = sizeof(float) * NORM_BWD_WARPS * (size_t)D;
    const bool fused = smem <= 48 * 1024; /* the weight-gradient sums in shared memory */
    float *part_w = NULL;
    if (fused) CUDA_CHECK(cudaMallocAsync((void **)&part_w, sizeof(float) * (size_t)nblk * D, 0));
    rmsnorm_bwd_kernel<<<nblk, NORM_BWD_WARPS * 32, fused ? smem : 0>>>(
        dx, (__nv_bfloat16 *)dx16, part_w, dy, (const __nv_bfloat16 *)dy16, x, w, rstd, rows, D, acc);
    CUDA_CHECK_LAUNCH();
    if (fused) {
        colsum_finish(dw, part_w, nblk, D);
        CUDA_CHECK(cudaFreeAsync(part_w, 0));
    } else {
        colsum_acc(dw, RmsnormDw{dy, (const __nv_bfloat16 *)dy16, x, rstd, D}, rows, D);
    }
}
