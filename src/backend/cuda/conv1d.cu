/* Causal depthwise conv1d + SiLU (CUDA), the K taps summed in the CPU's order. The training shapes (K = 4, channels a
 * multiple of 8) take tiles staged in shared memory; other K <= 4 a thread per channel sliding a window along a chunk
 * of steps; the rest a thread per output. The backward recomputes the pre-activation from x (nothing but the output
 * is stored) in the pass that writes dx for K <= 4 (dw/dbias as per-tile or per-chunk partials added in a fixed
 * order), else in three passes with the weight and bias gradients as column sums (colsum_acc). */
#include "ops/ops_cuda.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cuda_bf16.h>

/* The input x is float32 or bf16 (TX): every kernel reads it through ld(). */
__device__ __forceinline__ static float ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ static float ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
/* ... and the input gradient dx is written float32 or bf16 (TD) through st(). */
__device__ __forceinline__ static void st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ static void st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

/* the logistic function from the fast exp (relative error ~1e-6; the exact expf was a third of the backward's
 * instructions) */
__device__ static inline float sigmoidf_(float p) { return 1.0f / (1.0f + __expf(-p)); }

#define CONV_CHUNK 64 /* steps per thread in the sliding-window kernels */
/* steps whose loads a sliding-window thread issues together (one load at a time per thread leaves the memory
 * system mostly idle: too few bytes in flight per multiprocessor) */
#define CONV_UNROLL 8

/* Slides a window of the last K inputs by one step (xnew the newest) and returns the pre-activation: the bias,
 * then the taps oldest first. The forward and the backward's recompute share it: the same bits by construction. */
template <int K>
__device__ __forceinline__ static float window_step(float (&xwin)[K], const float (&wk)[K], float b0, float xnew) {
#pragma unroll
    for (int k = 0; k < K - 1; k++) xwin[k] = xwin[k + 1];
    xwin[K - 1] = xnew;
    float acc = b0;
#pragma unroll
    for (int k = 0; k < K; k++) acc += wk[k] * xwin[k];
    return acc;
}

/* The pre-activation of output i = (b, t, c): the bias, then the taps oldest first (the CPU's order). */
template <typename TX>
__device__ static float conv_pre(const TX *x, int ldx, const float *init, const float *w, const float *bias,
                                 size_t i, int T, int C, int K) {
    const int c = (int)(i % C);
    const size_t bt = i / C;
    const int t = (int)(bt % T), b = (int)(bt / T);
    float acc = bias ? bias[c] : 0.0f;
    for (int k = 0; k < K; k++) {
        const int ts = t - (K - 1) + k;
        if (ts >= 0)
            acc += w[(size_t)c * K + k] * ld(x, ((size_t)b * T + ts) * ldx + c);
        else if (init) /* before the sequence: the carried inputs, oldest first */
            acc += w[(size_t)c * K + k] * init[((size_t)b * C + c) * (K - 1) + (K - 1 + ts)];
    }
    return acc;
}

template <typename TX>
__global__ static void conv1d_silu_fwd_kernel(float *out, __nv_bfloat16 *out16, const TX *x, int ldx, const float *init,
                                              const float *w, const float *bias, int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float acc = conv_pre(x, ldx, init, w, bias, i, T, C, K), o = acc * sigmoidf_(acc);
        if (out) out[i] = o;
        if (out16) out16[i] = __float2bfloat16_rn(o);
    }
}

/* dpre = dout * silu'(pre), pre recomputed, kept for the dx, dw and dbias passes. */
template <typename TX>
__global__ static void conv1d_dpre_kernel(float *dpre, const float *dout, const __nv_bfloat16 *dout16, const TX *x,
                                          int ldx, const float *w, const float *bias, int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float p = conv_pre(x, ldx, (const float *)NULL, w, bias, i, T, C, K), s = sigmoidf_(p);
        const float g = !dout16 ? dout[i] : dout ? dout[i] + __bfloat162float(dout16[i]) : __bfloat162float(dout16[i]);
        dpre[i] = g * s * (1.0f + p * (1.0f - s));
    }
}

/* dx[t] = sum_k w[k] dpre[t + K-1-k] */
template <typename TD>
__global__ static void conv1d_dx_kernel(TD *dx, int lddx, const float *dpre, const float *w, int B, int T, int C,
                                        int K) {
    const size_t n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        const size_t bt = i / C;
        const int t = (int)(bt % T), b = (int)(bt / T);
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            const int to = t + (K - 1) - k;
            if (to < T) acc += w[(size_t)c * K + k] * dpre[((size_t)b * T + to) * C + c];
        }
        st(dx, bt * lddx + c, acc);
    }
}

template <typename TX> struct ConvDw { /* dw[c, k] = sum over (b, t) of dpre[b, t, c] * x[b, t - (K-1) + k, c] */
    const float *dpre;
    const TX *x;
    int ldx, T, C, K;
    __device__ float operator()(int r, int j) const {
        const int c = j / K, k = j % K, t = r % T, ts = t - (K - 1) + k;
        if (ts < 0) return 0.0f;
        return dpre[(size_t)r * C + c] * ld(x, (size_t)(r - (K - 1) + k) * ldx + c);
    }
};

struct ConvDbias {
    const float *dpre;
    int C;
    __device__ float operator()(int r, int c) const { return dpre[(size_t)r * C + c]; }
};

__global__ static void conv1d_state_update_kernel(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const int S = K - 1;
    const size_t n = (size_t)B * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int b = (int)(i / C), c = (int)(i % C);
        float *st = state + i * S;
        /* ascending k reads st[k + T] before anything at or above it is overwritten */
        for (int k = 0; k < S; k++) st[k] = k + T < S ? st[k + T] : x[((size_t)b * T + (k + T - S)) * ldx + c];
    }
}

/* The forward for a compile-time K: a thread owns channel c over a chunk of CONV_CHUNK steps of sequence b
 * and slides a window of the last K inputs along it, so each input is read once (plus K-1 at the chunk's
 * start), coalesced across the channels of a warp. The same sum, in the same order, as the kernel above. */
template <int K, typename TX>
__global__ static void conv1d_silu_fwd_window_kernel(float *__restrict__ out, __nv_bfloat16 *__restrict__ out16,
                                                     const TX *__restrict__ x, int ldx,
                                                     const float *__restrict__ init, const float *__restrict__ w,
                                                     const float *__restrict__ bias, int T, int C, int nch) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int q = blockIdx.y, b = q / nch, t0 = (q % nch) * CONV_CHUNK, t1 = min(T, t0 + CONV_CHUNK);
    const size_t row0 = (size_t)b * T;
    float wk[K], xwin[K];
#pragma unroll
    for (int k = 0; k < K; k++) {
        wk[k] = w[(size_t)c * K + k];
        const int ts = t0 - 1 - (K - 1) + k; /* the window of step t0 - 1 */
        if (ts >= 0) xwin[k] = ld(x, (row0 + ts) * ldx + c);
        else if (init && ts >= -(K - 1)) xwin[k] = init[((size_t)b * C + c) * (K - 1) + (K - 1 + ts)];
        else xwin[k] = 0.0f;
    }
    const float b0 = bias ? bias[c] : 0.0f;
    for (int t = t0; t < t1; t += CONV_UNROLL) {
        float xn[CONV_UNROLL]; /* the loads of CONV_UNROLL steps first: that many in flight per thread */
#pragma unroll
        for (int u = 0; u < CONV_UNROLL; u++) xn[u] = t + u < t1 ? ld(x, (row0 + t + u) * ldx + c) : 0.0f;
#pragma unroll
        for (int u = 0; u < CONV_UNROLL; u++) {
            if (t + u >= t1) break;
            const float acc = window_step<K>(xwin, wk, b0, xn[u]), o = acc * sigmoidf_(acc);
            if (out) out[(row0 + t + u) * C + c] = o; /* NULL: out16 alone */
            if (out16) out16[(row0 + t + u) * C + c] = __float2bfloat16_rn(o);
        }
    }
}

/* ---- tiles in shared memory (the training shapes: C a multiple of 8, rows 16-byte aligned; K = 4) ---------------
 * A block of CONV_TILE_THREADS stages its rows of CONV_TILE_C channels with 16-byte cp.async copies, all in flight at
 * once, then each thread computes a channel pair over a run of steps from shared memory: the addresses are offsets,
 * and the memory system sees whole rows requested together. */
#define CONV_TILE_C 64        /* channels per tile */
#define CONV_TILE_THREADS 256 /* 32 channel pairs x 8 runs */
#define CONV_TILE_RUNS (CONV_TILE_THREADS / (CONV_TILE_C / 2))

/* a channel pair of a staged row (two elements, 4- or 8-byte aligned) as floats */
__device__ __forceinline__ static float2 lds2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
__device__ __forceinline__ static float2 lds2(const __nv_bfloat16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}
__device__ __forceinline__ static void st2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}
__device__ __forceinline__ static void st2(__nv_bfloat16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}

/* Queues the copy of rows [t, t + rows) of channels [c0, c0 + CONV_TILE_C) of src [B*T, ld] (row0 = b * T) into
 * dst [rows][CONV_TILE_C]; zeros outside [0, T) and past C (C a multiple of 16 / sizeof(T)). */
template <typename T>
__device__ __forceinline__ static void tile_stage(T *dst, const T *src, int ld, size_t row0, int t, int rows, int T_,
                                                  int c0, int C) {
    constexpr int V = 16 / sizeof(T), CPR = CONV_TILE_C / V; /* elements per copy, copies per row */
    for (int i = threadIdx.x; i < rows * CPR; i += CONV_TILE_THREADS) {
        const int r = i / CPR, c = c0 + i % CPR * V, ts = t + r;
        const bool ok = ts >= 0 && ts < T_ && c < C;
        cp_async16(dst + r * CONV_TILE_C + i % CPR * V, ok ? src + (row0 + ts) * ld + c : src, ok ? 16 : 0);
    }
}

/* The forward without carried inputs (training; zeros before the sequence): a tile is CONV_TILE_FWD_T steps, x staged
 * from K-1 rows before it. */
#ifndef CONV_TILE_FWD_T
#define CONV_TILE_FWD_T 128 /* (64: 0.2 ms more per training step, H100) */
#endif
template <int K, typename TX>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
    conv1d_silu_fwd_tile_kernel(float *__restrict__ out, __nv_bfloat16 *__restrict__ out16, const TX *__restrict__ x,
                                int ldx, const float *__restrict__ w, const float *__restrict__ bias, int T, int C,
                                int ntile) {
    constexpr int TT = CONV_TILE_FWD_T, RUN = TT / CONV_TILE_RUNS;
    __shared__ __align__(16) TX xs[(TT + K - 1) * CONV_TILE_C]; /* [TT + K-1][CONV_TILE_C] */
    const int c0 = blockIdx.x * CONV_TILE_C, b = blockIdx.y / ntile, t0 = blockIdx.y % ntile * TT;
    const size_t row0 = (size_t)b * T;
    tile_stage(xs, x, ldx, row0, t0 - (K - 1), TT + K - 1, T, c0, C);
    cp_async_commit();
    const int p = threadIdx.x % (CONV_TILE_C / 2), r = threadIdx.x / (CONV_TILE_C / 2), c = c0 + 2 * p;
    float wa[K], wb[K];
#pragma unroll
    for (int k = 0; k < K; k++)
        wa[k] = c < C ? w[(size_t)c * K + k] : 0.0f, wb[k] = c < C ? w[(size_t)(c + 1) * K + k] : 0.0f;
    const float ba = bias && c < C ? bias[c] : 0.0f, bb = bias && c < C ? bias[c + 1] : 0.0f;
    cp_async_wait_all();
    __syncthreads();
    if (c >= C) return;
#pragma unroll 4
    for (int i = 0; i < RUN; i++) {
        const int tt = r * RUN + i, t = t0 + tt; /* xs row tt + k holds step t - (K-1) + k */
        if (t >= T) break;
        float pa = ba, pb = bb;
#pragma unroll
        for (int k = 0; k < K; k++) {
            const float2 v = lds2(xs + (tt + k) * CONV_TILE_C + 2 * p);
            pa += wa[k] * v.x, pb += wb[k] * v.y;
        }
        const float oa = pa * sigmoidf_(pa), ob = pb * sigmoidf_(pb);
        if (out) st2(out + (row0 + t) * C + c, oa, ob);
        if (out16) st2(out16 + (row0 + t) * C + c, oa, ob);
    }
}

template <int K, typename TX>
static void conv1d_fwd_window(float *out, __nv_bfloat16 *out16, const TX *x, int ldx, const float *init,
                              const float *w, const float *bias, int B, int T, int C) {
    if (K == 4 && !init && C % 8 == 0 && (ldx * sizeof(TX)) % 16 == 0 && (uintptr_t)x % 16 == 0 &&
        (uintptr_t)out % 8 == 0 && (uintptr_t)out16 % 4 == 0) { /* the training shapes: tiles (K = 4 compiled) */
        const int ntile = cdiv(T, CONV_TILE_FWD_T);
        conv1d_silu_fwd_tile_kernel<4, TX>
            <<<dim3(cdiv(C, CONV_TILE_C), B * ntile), CONV_TILE_THREADS>>>(out, out16, x, ldx, w, bias, T, C, ntile);
    } else {
        const int nch = cdiv(T, CONV_CHUNK);
        conv1d_silu_fwd_window_kernel<K, TX><<<dim3(cdiv(C, 128), B * nch), 128>>>(out, out16, x, ldx, init, w, bias,
                                                                                   T, C, nch);
    }
    CUDA_CHECK_LAUNCH();
}

template <typename TX>
static void conv1d_silu_fwd_any(float *out, __nv_bfloat16 *out16, const TX *x, int ldx, const float *init,
                                const float *w, const float *bias, int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    if (n == 0) return;
    if (T > 1) switch (K) { /* long sequences: the sliding window; decode steps (T = 1): one thread per output */
        case 2: return conv1d_fwd_window<2>(out, out16, x, ldx, init, w, bias, B, T, C);
        case 3: return conv1d_fwd_window<3>(out, out16, x, ldx, init, w, bias, B, T, C);
        case 4: return conv1d_fwd_window<4>(out, out16, x, ldx, init, w, bias, B, T, C);
        default: break;
        }
    conv1d_silu_fwd_kernel<TX><<<elem_blocks(n), ELEM_THREADS>>>(out, out16, x, ldx, init, w, bias, B, T, C, K);
    CUDA_CHECK_LAUNCH();
}

extern "C" void conv1d_silu_fwd_cuda(mat out, mat x, const float *init, const float *w, const float *bias, int B, int T,
                                     int C, int K) {
    __nv_bfloat16 *o16 = (__nv_bfloat16 *)mat_h(out);
    if (mat_h(x)) conv1d_silu_fwd_any(mat_f(out), o16, (const __nv_bfloat16 *)mat_h(x), x.ld, init, w, bias, B, T, C, K);
    else conv1d_silu_fwd_any(mat_f(out), o16, mat_f(x), x.ld, init, w, bias, B, T, C, K);
}

/* The whole backward in one pass for a compile-time kernel width K: a thread owns channel c of one chunk of
 * CONV_CHUNK steps of sequence b, walks it once (plus K-1 steps of lookahead for dx), keeps the last K
 * inputs (pre is their weighted sum, as in the forward) and the last K values of dpre = dout * silu'(pre) in
 * registers (dout16, when given, added to dout as it is read), writes dx, and leaves its dw and dbias sums as per-chunk
 * partials [chunk, C*K] and [chunk, C] that a second kernel adds in chunk order. */
template <int K, typename TX, typename TD>
__global__ static void conv1d_bwd_fused_kernel(TD *__restrict__ dx, int lddx, float *__restrict__ part_w,
                                               float *__restrict__ part_b, const float *__restrict__ dout,
                                               const __nv_bfloat16 *__restrict__ dout16, const TX *__restrict__ x,
                                               int ldx, const float *__restrict__ w, const float *__restrict__ bias,
                                               int T, int C, int nch) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int q = blockIdx.y, b = q / nch, t0 = (q % nch) * CONV_CHUNK, t1 = min(T, t0 + CONV_CHUNK);
    const size_t row0 = (size_t)b * T;
    float wk[K], accw[K], xwin[K], dp[K], accb = 0.0f;
    const float b0 = bias ? bias[c] : 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        wk[k] = w[(size_t)c * K + k];
        accw[k] = 0.0f, dp[k] = 0.0f;
        const int ts = t0 - 1 - (K - 1) + k; /* the window of step t0 - 1 */
        xwin[k] = ts >= 0 ? ld(x, (row0 + ts) * ldx + c) : 0.0f;
    }
    const int tend = min(T, t1 + K - 1); /* the last step read, plus one */
    for (int tb = t0; tb < t1 + K - 1; tb += CONV_UNROLL) {
        float xn[CONV_UNROLL], dn[CONV_UNROLL]; /* the loads of CONV_UNROLL steps first, as in the forward */
#pragma unroll
        for (int u = 0; u < CONV_UNROLL; u++) {
            const bool in = tb + u < tend;
            xn[u] = in ? ld(x, (row0 + tb + u) * ldx + c) : 0.0f;
            const size_t at = (row0 + tb + u) * C + c;
            dn[u] = !in         ? 0.0f
                    : !dout16   ? dout[at]
                    : dout      ? dout[at] + __bfloat162float(dout16[at])
                                : __bfloat162float(dout16[at]);
        }
#pragma unroll
        for (int u = 0; u < CONV_UNROLL; u++) {
            const int tp = tb + u;
            if (tp >= t1 + K - 1) break;
            float d = 0.0f;
            if (tp < T) {
                const float p = window_step<K>(xwin, wk, b0, xn[u]), sg = sigmoidf_(p);
                d = dn[u] * sg * (1.0f + p * (1.0f - sg));
            }
            if (tp < t1) { /* dw, dbias: this chunk's own steps */
#pragma unroll
                for (int k = 0; k < K; k++) accw[k] += d * xwin[k];
                accb += d;
            }
#pragma unroll
            for (int k = 0; k < K - 1; k++) dp[k] = dp[k + 1];
            dp[K - 1] = d; /* dp[j] = dpre[tp - (K-1) + j] */
            const int t = tp - (K - 1);
            if (t >= t0) { /* dx[t] = sum_k w[k] dpre[t + K-1-k] */
                float acc = 0.0f;
#pragma unroll
                for (int k = 0; k < K; k++) acc += wk[k] * dp[K - 1 - k];
                st(dx, (row0 + t) * lddx + c, acc);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < K; k++) part_w[(size_t)q * C * K + (size_t)c * K + k] = accw[k];
    if (part_b) part_b[(size_t)q * C + c] = accb;
}

/* dw += and dbias += (when given) the column sums of the per-row partials [nq, C*K] and [nq, C] that
 * launch(part_w, part_b) writes (part_b NULL without dbias), added in row order (one launch for both). */
template <typename F> static void with_partials(float *dw, float *dbias, int nq, int C, int K, F launch) {
    float *part_w, *part_b = NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&part_w, sizeof(float) * (size_t)nq * C * K, 0));
    if (dbias) CUDA_CHECK(cudaMallocAsync((void **)&part_b, sizeof(float) * (size_t)nq * C, 0));
    launch(part_w, part_b);
    CUDA_CHECK_LAUNCH();
    colsum_finish2(dw, (const float *)part_w, C * K, dbias, (const float *)part_b, dbias ? C : 0, nq);
    if (part_b) CUDA_CHECK(cudaFreeAsync(part_b, 0));
    CUDA_CHECK(cudaFreeAsync(part_w, 0));
}

/* The backward: a tile is CONV_TILE_BWD_T steps. Staged: x from K-1 rows before the tile to K-1 after it, dout from the
 * tile's start to K-1 after it (zeros past T, so dpre is 0 there). Pass 1 turns each staged dout row into dpre =
 * dout * silu'(pre) (pre recomputed from x) in shared memory and sums dw, dbias over the tile's own rows; pass 2 writes
 * dx[t] = sum_k w[k] dpre[t + K-1-k]. The dw, dbias sums are added over the block's runs in run order and left as one
 * partial per tile row [gridDim.y, C*K], [gridDim.y, C]. */
#ifndef CONV_TILE_BWD_T
#define CONV_TILE_BWD_T 64
#endif
template <int K, typename TX, typename TG, typename TD>
__global__ static void __launch_bounds__(CONV_TILE_THREADS)
    conv1d_bwd_tile_kernel(TD *__restrict__ dx, int lddx, float *__restrict__ part_w, float *__restrict__ part_b,
                           const TG *__restrict__ dout, const TX *__restrict__ x, int ldx, const float *__restrict__ w,
                           const float *__restrict__ bias, int T, int C, int ntile) {
    constexpr int TT = CONV_TILE_BWD_T, NP = CONV_TILE_C / 2, R = CONV_TILE_RUNS, NV = 2 * (K + 1);
    constexpr int XB = (TT + 2 * (K - 1)) * CONV_TILE_C * sizeof(TX), GB = (TT + K - 1) * CONV_TILE_C * sizeof(TG);
    static_assert(XB % 16 == 0 && GB % 16 == 0 && sizeof(float) * R * NP * NV <= XB + GB, "tile layout");
    __shared__ __align__(16) unsigned char sm[XB + GB + (TT + K - 1) * CONV_TILE_C * sizeof(float)];
    TX *xs = reinterpret_cast<TX *>(sm);                  /* [TT + 2(K-1)][CONV_TILE_C]: step t0 - (K-1) + row */
    TG *gs = reinterpret_cast<TG *>(sm + XB);             /* [TT + K-1][CONV_TILE_C]: step t0 + row */
    float *dps = reinterpret_cast<float *>(sm + XB + GB); /* dpre, likewise */
    float(*red)[NP][NV] = reinterpret_cast<float(*)[NP][NV]>(sm); /* [R][NP][NV] over xs, gs (read by pass 1 only) */
    const int c0 = blockIdx.x * CONV_TILE_C, b = blockIdx.y / ntile, t0 = blockIdx.y % ntile * TT;
    const size_t row0 = (size_t)b * T;
    tile_stage(xs, x, ldx, row0, t0 - (K - 1), TT + 2 * (K - 1), T, c0, C);
    tile_stage(gs, dout, C, row0, t0, TT + K - 1, T, c0, C);
    cp_async_commit();
    const int p = threadIdx.x % NP, r = threadIdx.x / NP, c = c0 + 2 * p;
    const bool live = c < C;
    float wa[K], wb[K];
#pragma unroll
    for (int k = 0; k < K; k++)
        wa[k] = live ? w[(size_t)c * K + k] : 0.0f, wb[k] = live ? w[(size_t)(c + 1) * K + k] : 0.0f;
    const float ba = bias && live ? bias[c] : 0.0f, bb = bias && live ? bias[c + 1] : 0.0f;
    float aw[K], bw[K], ab = 0.0f, bbs = 0.0f; /* dw, dbias sums of the pair */
#pragma unroll
    for (int k = 0; k < K; k++)
        aw[k] = bw[k] = 0.0f;
    cp_async_wait_all();
    __syncthreads();
    /* pass 1: rows r, r + R, ... of dpre (the tile's TT rows and K-1 of lookahead) */
    for (int row = r; row < TT + K - 1; row += R) {
        float pa = ba, pb = bb, xa[K], xb[K];
#pragma unroll
        for (int k = 0; k < K; k++) {
            const float2 v = lds2(xs + (row + k) * CONV_TILE_C + 2 * p);
            xa[k] = v.x, xb[k] = v.y;
            pa += wa[k] * v.x, pb += wb[k] * v.y;
        }
        const float sa = sigmoidf_(pa), sb = sigmoidf_(pb);
        const float2 g = lds2(gs + row * CONV_TILE_C + 2 * p);
        const float da = g.x * sa * (1.0f + pa * (1.0f - sa)), db = g.y * sb * (1.0f + pb * (1.0f - sb));
        st2(dps + row * CONV_TILE_C + 2 * p, da, db);
        if (row < TT) { /* the tile's own steps (past T: dpre is 0) */
#pragma unroll
            for (int k = 0; k < K; k++)
                aw[k] += da * xa[k], bw[k] += db * xb[k];
            ab += da, bbs += db;
        }
    }
    __syncthreads();
    /* pass 2: dx of rows r, r + R, ... */
    if (live)
        for (int row = r; row < TT && t0 + row < T; row += R) {
            float sa = 0.0f, sb = 0.0f;
#pragma unroll
            for (int k = 0; k < K; k++) {
                const float2 v = lds2(dps + (row + K - 1 - k) * CONV_TILE_C + 2 * p);
                sa += wa[k] * v.x, sb += wb[k] * v.y;
            }
            st2(dx + (row0 + t0 + row) * lddx + c, sa, sb);
        }
        /* the pair's sums over the block's runs, in run order */
#pragma unroll
    for (int k = 0; k < K; k++)
        red[r][p][k] = aw[k], red[r][p][K + 1 + k] = bw[k];
    red[r][p][K] = ab, red[r][p][2 * K + 1] = bbs;
    __syncthreads();
    for (int i = threadIdx.x; i < NP * NV; i += CONV_TILE_THREADS) {
        const int pi = i / NV, q = i % NV, cc = c0 + 2 * pi + q / (K + 1), k = q % (K + 1);
        float s = 0.0f;
        for (int rr = 0; rr < R; rr++)
            s += red[rr][pi][q];
        if (cc >= C) continue;
        if (k < K)
            part_w[(size_t)blockIdx.y * C * K + (size_t)cc * K + k] = s;
        else if (part_b)
            part_b[(size_t)blockIdx.y * C + cc] = s;
    }
}

/* The tiled backward for the shapes it takes (K = 4, C a multiple of 8, x or dout in bf16 and dout alone, x's rows
 * 16-byte aligned, dx's pairs aligned); false when they don't fit it. */
template <int K, typename TX, typename TG, typename TD>
static bool conv1d_bwd_tile(TD *dx, int lddx, float *dw, float *dbias, const TG *dout, const TX *x, int ldx,
                            const float *w, const float *bias, int B, int T, int C) {
    if constexpr (sizeof(TX) + sizeof(TG) > 6) { /* float32 x and dout: over 48 KB of shared memory */
        return false;
    } else {
        if (K != 4 || C % 8 || (ldx * sizeof(TX)) % 16 || (uintptr_t)x % 16 || (uintptr_t)dout % 16 || lddx % 2 ||
            (uintptr_t)dx % (2 * sizeof(TD)))
            return false;
        const int ntile = cdiv(T, CONV_TILE_BWD_T), nq = B * ntile;
        with_partials(dw, dbias, nq, C, K, [&](float *part_w, float *part_b) {
            conv1d_bwd_tile_kernel<4, TX, TG, TD><<<dim3(cdiv(C, CONV_TILE_C), nq), CONV_TILE_THREADS>>>(
                dx, lddx, part_w, part_b, dout, x, ldx, w, bias, T, C, ntile);
        });
        return true;
    }
}

template <int K, typename TX, typename TD>
static void conv1d_bwd_fused(TD *dx, int lddx, float *dw, float *dbias, const float *dout, const __nv_bfloat16 *dout16,
                             const TX *x, int ldx, const float *w, const float *bias, int B, int T, int C) {
    const int nch = cdiv(T, CONV_CHUNK), nq = B * nch;
    with_partials(dw, dbias, nq, C, K, [&](float *part_w, float *part_b) {
        conv1d_bwd_fused_kernel<K, TX, TD>
            <<<dim3(cdiv(C, 128), nq), 128>>>(dx, lddx, part_w, part_b, dout, dout16, x, ldx, w, bias, T, C, nch);
    });
}

template <typename TX, typename TD>
static void conv1d_silu_bwd_any(TD *dx, int lddx, float *dw, float *dbias, const float *dout,
                                const __nv_bfloat16 *dout16, const TX *x, int ldx, const float *w, const float *bias,
                                int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    if (n == 0) return;
    switch (K) { /* the common widths in one fused pass; others through the general three-pass path below */
    case 2: return conv1d_bwd_fused<2>(dx, lddx, dw, dbias, dout, dout16, x, ldx, w, bias, B, T, C);
    case 3: return conv1d_bwd_fused<3>(dx, lddx, dw, dbias, dout, dout16, x, ldx, w, bias, B, T, C);
    case 4: /* tiles for the training shapes */
        if (!dout16 ? conv1d_bwd_tile<4>(dx, lddx, dw, dbias, dout, x, ldx, w, bias, B, T, C)
                    : !dout && conv1d_bwd_tile<4>(dx, lddx, dw, dbias, dout16, x, ldx, w, bias, B, T, C))
            return;
        return conv1d_bwd_fused<4>(dx, lddx, dw, dbias, dout, dout16, x, ldx, w, bias, B, T, C);
    default: break;
    }
    float *dpre;
    CUDA_CHECK(cudaMallocAsync((void **)&dpre, sizeof(float) * n, 0));
    conv1d_dpre_kernel<TX><<<elem_blocks(n), ELEM_THREADS>>>(dpre, dout, dout16, x, ldx, w, bias, B, T, C, K);
    CUDA_CHECK_LAUNCH();
    conv1d_dx_kernel<TD><<<elem_blocks(n), ELEM_THREADS>>>(dx, lddx, dpre, w, B, T, C, K);
    CUDA_CHECK_LAUNCH();
    colsum_acc(dw, ConvDw<TX>{dpre, x, ldx, T, C, K}, B * T, C * K);
    if (dbias) colsum_acc(dbias, ConvDbias{dpre, C}, B * T, C);
    CUDA_CHECK(cudaFreeAsync(dpre, 0));
}

extern "C" void conv1d_silu_bwd_cuda(mat dx_m, float *dw, float *dbias, mat dout_m, mat x_m, const float *w,
                                     const float *bias, int B, int T, int C, int K) {
    float *dx = mat_f(dx_m);
    const float *dout = mat_f(dout_m), *x = mat_f(x_m);
    const uint16_t *dx16 = mat_h(dx_m), *x16 = mat_h(x_m);
    const int lddx = dx_m.ld, ldx = x_m.ld;
    __nv_bfloat16 *d16 = (__nv_bfloat16 *)dx16;
    const __nv_bfloat16 *b16 = (const __nv_bfloat16 *)x16, *g16 = (const __nv_bfloat16 *)mat_h(dout_m);
    if (x16 && dx16)
        conv1d_silu_bwd_any(d16, lddx, dw, dbias, dout, g16, b16, ldx, w, bias, B, T, C, K);
    else if (x16)
        conv1d_silu_bwd_any(dx, lddx, dw, dbias, dout, g16, b16, ldx, w, bias, B, T, C, K);
    else if (dx16)
        conv1d_silu_bwd_any(d16, lddx, dw, dbias, dout, g16, x, ldx, w, bias, B, T, C, K);
    else
        conv1d_silu_bwd_any(dx, lddx, dw, dbias, dout, g16, x, ldx, w, bias, B, T, C, K);
}

// A decode step: a thread per (sequence, channel) computes the output from its state and input, as conv_pre does
// (bias, then the taps oldest first), then shifts the state by one in place.
__global__ static void conv1d_silu_step_kernel(float *out, const float *x, int ldx, float *state, const float *w,
                                               const float *bias, int B, int C, int K) {
    const size_t n = (size_t)B * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int b = (int)(i / C), c = (int)(i % C);
        float *st = state + i * (K - 1);
        const float *wc = w + (size_t)c * K, xv = x[(size_t)b * ldx + c];
        float acc = bias ? bias[c] : 0.0f;
        for (int k = 0; k < K - 1; k++)
            acc += wc[k] * st[k];
        acc += wc[K - 1] * xv;
        out[i] = acc * sigmoidf_(acc);
        for (int k = 0; k + 1 < K - 1; k++)
            st[k] = st[k + 1];
        if (K > 1) st[K - 2] = xv;
    }
}

extern "C" void conv1d_silu_step_cuda(float *out, const float *x, int ldx, float *state, const float *w,
                                      const float *bias, int B, int C, int K) {
    const size_t n = (size_t)B * C;
    if (n == 0) return;
    conv1d_silu_step_kernel<<<elem_blocks(n), ELEM_THREADS>>>(out, x, ldx, state, w, bias, B, C, K);
    CUDA_CHECK_LAUNCH();
}

extern "C" void conv1d_state_update_cuda(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const size_t n = (size_t)B * C;
    if (n == 0 || K <= 1) return;
    conv1d_state_update_kernel<<<elem_blocks(n), ELEM_THREADS>>>(state, x, ldx, B, T, C, K);
    CUDA_CHECK_LAUNCH();
}
