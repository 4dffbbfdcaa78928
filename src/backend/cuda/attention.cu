// Attention's ops on the GPU (the CUDA twins of src/backend/cpu/attention.c; ops_list.h has their semantics, ops.h
// the attn_args): rotary positions, the KV cache's append, and causal grouped-query softmax attention forward and
// backward. The simple, clearly correct kernels come first (verified on an H200; slow: see docs/cuda.md).
// They take float32 operands; bf16 ones (lean training) go to the tensor-core kernels of attention_flash_fwd.cu and
// attention_flash_bwd.cu where those apply, else are widened for these (the end of this file).
//
// Layout: a query row holds H heads of hd, a key/value row KV heads of hd (query head h reads kv head h / (H/KV)).
// Every attention kernel gives a warp one (row, head) vector: lane l holds elements l, l + 32, ... (NPL = hd / 32
// rounded up to a power of two, at most 8: hd <= ATTN_MAX_HD), so a row's load is coalesced and a dot product is a
// per-lane partial then a butterfly of shuffles (xor: every lane ends with the same bits, so the branches on a
// score are uniform across the warp).
//
// Forward (attn_fwd_kernel): a warp per (sequence b, head h, query t, split s). It walks its keys in order, a few
// a step (their loads in flight together), with an online softmax (running max m, sum l and the weighted sum of
// values acc, rescaled when a step's max exceeds m) and never stores a score. With one split it writes o = acc / l
// and lse = m + log l. A decode step (T = 1 over a long cache) has too few queries to fill the GPU with one warp
// each, so the keys of each query are cut into `splits` equal runs (splits from the sizes alone: the host never
// reads the device's key counts nk[b], and a replayed decode graph stays valid as they grow; each warp computes its
// run from nk[b] on the device); each split leaves (acc, m, l) in a scratch buffer and attn_combine_kernel, a block
// per query, merges the splits (in a fixed order: bitwise repeatable).
// SSM_ATTN_SPLITS=n forces n splits (1: the unsplit kernel, the reference the split one is compared with).
//
// Backward (training: the keys are the queries' own positions), FlashAttention's recomputation from the saved
// lse, in two kernels, both without atomics:
//   attn_bwd_dq_kernel, a warp per (b, h, t): D_t = dO_t . O_t (kept in a scratch buffer for the next kernel),
//     then over the visible keys j in order: p = exp(q.k_j * scale - lse_t), ds = p (dO_t . v_j - D_t) * scale,
//     dq += ds k_j.
//   attn_bwd_dkv_kernel, a warp per (b, kv head, key j): over the query heads of the group in order and, for each,
//     the queries t that see j in order (t = j .. j + window - 1): p and ds recomputed as above, dv += p dO_t,
//     dk += ds q_t.
// Each gradient element is owned by one lane and summed in the CPU's order (the CPU's dq and dk/dv loops run in
// the same orders); only the dot products' order differs (butterfly against sequential), so results are within
// float rounding of the CPU's and bitwise repeatable. Scores are recomputed twice (once per kernel): the T x T
// matrix is never stored.
//
// Where the queries are many (T >= 32: training, a prefill, scoring; head_dim a multiple of 4 up to 128) tiled
// kernels replace these (below attn_fwd_kernel and before attn_bwd_launch): the rows that many warps read staged in
// shared memory once a block, lanes over keys (or queries) for the scores instead of shuffles. SSM_ATTN_TILED=0 keeps
// the kernels above (A/B timing).
//
// Rotary positions: a thread per (row, frequency i), looping over the heads; the angle is computed as the CPU
// computes it (below).
#include "backend/cuda/attention_flash.cuh"
#include "backend/cuda/cuda_common.h"
#include "common.h"
#include "ops/ops_cuda.h"

#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_MAX_HD 256      // 8 elements per lane
#define ATTN_WARPS 4         // warps per block of every attention kernel
#define ATTN_TARGET_WARPS 8192 // split a forward whose queries give fewer warps than this (H200: 132 SMs x 64 warps)
#define ATTN_SPLIT_KEYS 32   // ... into runs of at least this many keys (a warp takes 8 to 16 keys a step)
#define ATTN_MAX_SPLITS 256  // ... and at most this many runs (attn_combine_kernel walks them)

#define GRID_STRIDE(i, n)                                                                                             \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static int grid_blocks(size_t n, int threads) {
    const size_t b = (n + threads - 1) / threads;
    return (int)(b < 65535 * 16 ? b : 65535 * 16); // the grid-stride loops cover the rest
}

#define ATTN_REQUIRE(cond, op)                                                                                       \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            fprintf(stderr, "ssm: %s:%d: %s: %s\n", __FILE__, __LINE__, op, #cond);                                  \
            exit(2);                                                                                                  \
        }                                                                                                             \
    } while (0)

// ---- rope ---------------------------------------------------------------------------------------------------------
// The angle as the CPU computes it: the inverse frequency in double, 1 / pow(theta, 2i / hd), rounded to float, then
// the float product p * inv_freq, then sincosf at full precision (not the __sinf intrinsic). What may differ by an
// ulp: CUDA's double pow (2 ulp, against glibc's correctly rounded one) can round to the neighbouring float in a
// near tie, and CUDA's sincosf is within 2 ulp where glibc's sinf/cosf are within 1; the rotation itself may be
// contracted into FMAs differently by nvcc and the host compiler.
__device__ __forceinline__ static float widen1(float x) { return x; }
__device__ __forceinline__ static float widen1(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ static void narrow1(float &d, float x) { d = x; }
__device__ __forceinline__ static void narrow1(__nv_bfloat16 &d, float x) { d = __float2bfloat16_rn(x); }

// X: float, or __nv_bfloat16 (rotated in float32, rounded once)
template <typename X>
__global__ static void rope_kernel(X *x, int ldx, const int *pos, int B, int T, int n_heads, int hd, float theta,
                                   int inverse) {
    const int half = hd / 2;
    const size_t n = (size_t)B * T * half;
    GRID_STRIDE(idx, n) {
        const size_t r = idx / half;
        const int i = (int)(idx % half), b = (int)(r / T), t = (int)(r % T);
        const float p = (float)(t + (pos ? pos[b] : 0));
        const float inv = (float)(1.0 / pow((double)theta, 2.0 * i / hd));
        const float a = p * inv;
        float s, c;
        sincosf(a, &s, &c);
        if (inverse) s = -s;
        X *row = x + r * ldx;
        for (int h = 0; h < n_heads; h++) {
            X *xh = row + (size_t)h * hd;
            const float x1 = widen1(xh[i]), x2 = widen1(xh[i + half]);
            narrow1(xh[i], x1 * c - x2 * s);
            narrow1(xh[i + half], x2 * c + x1 * s);
        }
    }
}

extern "C" void rope_cuda(mat x, const int *pos, int B, int T, int n_heads, int hd, float theta, int inverse) {
    const size_t n = (size_t)B * T * (hd / 2);
    if (n == 0 || n_heads <= 0) return;
    if (mat_h(x))
        rope_kernel<__nv_bfloat16><<<grid_blocks(n, 256), 256>>>((__nv_bfloat16 *)mat_h(x), x.ld, pos, B, T, n_heads,
                                                                 hd, theta, inverse);
    else
        rope_kernel<float><<<grid_blocks(n, 256), 256>>>(mat_f(x), x.ld, pos, B, T, n_heads, hd, theta, inverse);
    CUDA_CHECK_LAUNCH();
}

// ---- kv_append ----------------------------------------------------------------------------------------------------
// A thread per element of the T new rows, at the position read from pos[b] on the device; then a second kernel
// advances pos[b] (after every read of it: the launches are ordered on the stream). The caller checked that the rows
// fit (ops_list.h); a row that would not is not written, so a wrong count cannot write into another sequence.
__global__ static void kv_append_kernel(float *k_cache, float *v_cache, const int *pos, const float *k, const float *v,
                                        int ldkv, int B, int T, int cap, int kvd) {
    const size_t n = (size_t)B * T * kvd;
    GRID_STRIDE(idx, n) {
        const size_t row = idx / kvd;
        const int c = (int)(idx % kvd), b = (int)(row / T), t = (int)(row % T), p = pos[b] + t;
        if (p < 0 || p >= cap) continue;
        const size_t at = ((size_t)b * cap + p) * kvd + c;
        k_cache[at] = k[row * ldkv + c];
        v_cache[at] = v[row * ldkv + c];
    }
}

__global__ static void kv_advance_kernel(int *pos, int B, int T) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < B) pos[b] += T;
}

extern "C" void kv_append_cuda(float *k_cache, float *v_cache, int *pos, const float *k, const float *v, int ldkv,
                               int B, int T, int cap, int kvd) {
    if (B <= 0 || T <= 0) return;
    const size_t n = (size_t)B * T * kvd;
    if (n > 0) {
        kv_append_kernel<<<grid_blocks(n, 256), 256>>>(k_cache, v_cache, pos, k, v, ldkv, B, T, cap, kvd);
        CUDA_CHECK_LAUNCH();
    }
    kv_advance_kernel<<<cdiv(B, 128), 128>>>(pos, B, T);
    CUDA_CHECK_LAUNCH();
}

// ---- attention: shared pieces -------------------------------------------------------------------------------------
extern "C" int attn_check_cuda(const attn_args *a) {
    if (a && a->hd > ATTN_MAX_HD)
        return ssm_error("head_dim %d: the CUDA attention supports head_dim <= %d; use --device cpu", a->hd,
                         ATTN_MAX_HD);
    return 0;
}

// Elements per lane: hd / 32 rounded up to a power of two (1, 2, 4, 8), or exit for a head the kernels cannot hold
// (attn_check_cuda is the user's one-line answer before a model moves; this is the kernels' own guard).
static int attn_npl(int hd) {
    if (hd <= 0 || hd > ATTN_MAX_HD) {
        fprintf(stderr, "ssm: the CUDA attention supports head_dim <= %d (got %d)\n", ATTN_MAX_HD, hd);
        exit(2);
    }
    return hd <= 32 ? 1 : hd <= 64 ? 2 : hd <= 128 ? 4 : 8;
}

// A float32 operand's pointer (the kernels below read float32 attn_args alone)
__device__ __forceinline__ static const float *f32(const mat &m) { return (const float *)m.p; }

// The same bits in every lane (a + b == b + a exactly), two sums at once (independent chains).
__device__ __forceinline__ static float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
// N sums at once (independent chains), each with warp_sum's bits
template <int N> __device__ __forceinline__ static void warp_sum_n(float (&v)[N]) {
    for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int i = 0; i < N; i++)
            v[i] += __shfl_xor_sync(0xffffffffu, v[i], off);
}
__device__ __forceinline__ static void warp_sum2(float &a, float &b) {
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, off);
        b += __shfl_xor_sync(0xffffffffu, b, off);
    }
}

// r[c] = p[lane + 32c] (0 past hd)
template <int NPL> __device__ __forceinline__ static void load_vec(float (&r)[NPL], const float *p, int lane, int hd) {
#pragma unroll
    for (int c = 0; c < NPL; c++) r[c] = lane + 32 * c < hd ? p[lane + 32 * c] : 0.0f;
}
template <int NPL> __device__ __forceinline__ static void store_vec(float *p, const float (&r)[NPL], int lane, int hd) {
#pragma unroll
    for (int c = 0; c < NPL; c++)
        if (lane + 32 * c < hd) p[lane + 32 * c] = r[c];
}
// this lane's part of r . p[0..hd)
template <int NPL> __device__ __forceinline__ static float dot_part(const float (&r)[NPL], const float *p, int lane,
                                                                    int hd) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < NPL; c++)
        if (lane + 32 * c < hd) s += r[c] * p[lane + 32 * c];
    return s;
}

// The keys query t of sequence b sees, [lo, hi) (the CPU's attn_range; nk read from the device)
__device__ __forceinline__ static void attn_range(const attn_args &a, int b, int t, int &lo, int &hi) {
    const int n = a.nk ? a.nk[b] : a.T, i = n - a.T + t; // the query's position
    hi = i + 1;
    lo = a.window > 0 && i - a.window + 1 > 0 ? i - a.window + 1 : 0;
}

// ---- forward ------------------------------------------------------------------------------------------------------
// A warp per (b, h, t, s), s fastest: neighbouring warps read the same keys. part [B*H*T, splits, hd + 2] when
// splits > 1: each split's acc[hd], then m and l.
template <int NPL>
__global__ static void __launch_bounds__(ATTN_WARPS * 32)
    attn_fwd_kernel(const attn_args a, float *o, int ldo, float scale, int splits, float *part) {
    const int lane = threadIdx.x & 31, T = a.T, H = a.H, hd = a.hd;
    const size_t job = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    if (job >= (size_t)a.B * H * T * splits) return; // the whole warp
    const int s = (int)(job % splits);
    const size_t qi = job / splits; // (b, h, t)
    const int t = (int)(qi % T), h = (int)(qi / T % H), b = (int)(qi / ((size_t)T * H)), kh = h / (H / a.KV);
    int lo, hi;
    attn_range(a, b, t, lo, hi);
    const int chunk = hi > lo ? (hi - lo + splits - 1) / splits : 0, j0 = lo + s * chunk,
              j1 = min(hi, j0 + chunk);
    const size_t row = (size_t)b * T + t;
    float q[NPL], acc[NPL];
    load_vec<NPL>(q, f32(a.q) + row * a.q.ld + (size_t)h * hd, lane, hd);
#pragma unroll
    for (int c = 0; c < NPL; c++) acc[c] = 0.0f;
    const float *kb = f32(a.k) + b * a.kv_bstride + (size_t)kh * hd,
                *vb = f32(a.v) + b * a.kv_bstride + (size_t)kh * hd;
    float m = -INFINITY, l = 0.0f;
    // KB keys a step, their keys' and values' loads issued together at its start (a value row past the run reads the
    // run's last row, in bounds and finite, and is weighted by 0), so that a step waits for one memory latency instead
    // of KB (a decode step's warps walk a cache with nothing else to hide it behind). (The values were read in the
    // weighting loop, after a break: one latency a key, ~107 us a layer at 1K context on an H100, 2026-12-06.)
    constexpr int KB = NPL <= 2 ? 8 : 16 / NPL;
    for (int j = j0; j < j1; j += KB) {
        float sc[KB], vv[KB][NPL];
#pragma unroll
        for (int u = 0; u < KB; u++) {
            sc[u] = j + u < j1 ? dot_part<NPL>(q, kb + (size_t)(j + u) * a.k.ld, lane, hd) : 0.0f;
            load_vec<NPL>(vv[u], vb + (size_t)min(j + u, j1 - 1) * a.v.ld, lane, hd);
        }
        warp_sum_n<KB>(sc);
        float mb = m;
#pragma unroll
        for (int u = 0; u < KB; u++)
            if (j + u < j1) sc[u] *= scale, mb = fmaxf(mb, sc[u]);
        if (mb > m) { // uniform across the warp: the scores have the same bits in every lane
            const float corr = expf(m - mb); // 0 on the first keys (m = -inf)
            l *= corr;
#pragma unroll
            for (int c = 0; c < NPL; c++) acc[c] *= corr;
            m = mb;
        }
#pragma unroll
        for (int u = 0; u < KB; u++) {
            const float p = j + u < j1 ? expf(sc[u] - m) : 0.0f;
            l += p;
#pragma unroll
            for (int c = 0; c < NPL; c++)
                acc[c] += p * vv[u][c];
        }
    }
    if (splits == 1) {
        const float inv = 1.0f / l;
#pragma unroll
        for (int c = 0; c < NPL; c++) acc[c] *= inv;
        store_vec<NPL>(o + row * ldo + (size_t)h * hd, acc, lane, hd);
        if (a.lse && lane == 0) a.lse[((size_t)b * H + h) * T + t] = m + logf(l);
        return;
    }
    float *pp = part + (qi * splits + s) * (size_t)(hd + 2);
    store_vec<NPL>(pp, acc, lane, hd);
    if (lane == 0) pp[hd] = m, pp[hd + 1] = l;
}

// A block of ATTN_WARPS warps per (b, h, t): the splits' (acc, m, l) merged. Every warp finds M = max m_s and
// L = sum l_s exp(m_s - M) over all splits (lanes across the splits, then the butterflies: the same bits in every
// warp); warp w sums exp(m_s - M) acc_s over its splits s = w, w + ATTN_WARPS, ..., COMBINE_UNROLL of them in flight
// at once, and warp 0 adds the warps' sums in warp order. A split without keys has m = -inf, l = 0 and adds nothing.
// (A warp per query walking the splits one by one waited a memory latency per split: at 1K context the decode
// step's attention read the cache at ~200 GB/s, H100, docs/performance.md.)
#define COMBINE_UNROLL 8
template <int NPL>
__global__ static void __launch_bounds__(ATTN_WARPS * 32)
    attn_combine_kernel(const attn_args a, float *o, int ldo, int splits, const float *part) {
    __shared__ float warp_acc[ATTN_WARPS - 1][NPL * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, T = a.T, H = a.H, hd = a.hd;
    const size_t qi = blockIdx.x, stride = (size_t)hd + 2;
    const int t = (int)(qi % T), h = (int)(qi / T % H), b = (int)(qi / ((size_t)T * H));
    const float *pq = part + qi * splits * stride;
    float M = -INFINITY;
    for (int s = lane; s < splits; s += 32) M = fmaxf(M, pq[s * stride + hd]);
    for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
    float L = 0.0f;
    for (int s = lane; s < splits; s += 32) {
        const float ms = pq[s * stride + hd];
        if (ms != -INFINITY) L += pq[s * stride + hd + 1] * expf(ms - M);
    }
    L = warp_sum(L);
    float acc[NPL];
#pragma unroll
    for (int c = 0; c < NPL; c++) acc[c] = 0.0f;
    for (int s0 = warp; s0 < splits; s0 += ATTN_WARPS * COMBINE_UNROLL) {
        float w[COMBINE_UNROLL];
#pragma unroll
        for (int u = 0; u < COMBINE_UNROLL; u++) {
            const int s = s0 + u * ATTN_WARPS;
            const float ms = s < splits ? pq[s * stride + hd] : -INFINITY;
            w[u] = ms == -INFINITY ? 0.0f : expf(ms - M);
        }
#pragma unroll
        for (int u = 0; u < COMBINE_UNROLL; u++) {
            if (w[u] == 0.0f) continue; // uniform across the warp: every lane read the same m_s
            const float *ps = pq + (s0 + u * ATTN_WARPS) * stride;
#pragma unroll
            for (int c = 0; c < NPL; c++)
                if (lane + 32 * c < hd) acc[c] += w[u] * ps[lane + 32 * c];
        }
    }
    if (warp > 0) {
#pragma unroll
        for (int c = 0; c < NPL; c++) warp_acc[warp - 1][lane + 32 * c] = acc[c];
    }
    __syncthreads();
    if (warp > 0) return;
    const float inv = 1.0f / L;
#pragma unroll
    for (int c = 0; c < NPL; c++) {
        float v = acc[c];
        for (int w = 0; w < ATTN_WARPS - 1; w++) v += warp_acc[w][lane + 32 * c];
        acc[c] = v * inv;
    }
    store_vec<NPL>(o + ((size_t)b * T + t) * ldo + (size_t)h * hd, acc, lane, hd);
    if (a.lse && lane == 0) a.lse[((size_t)b * H + h) * T + t] = M + logf(L);
}

// ---- forward, tiled: many queries (training, a prefill, scoring) ------------------------------------------------
// A block of TILE_WARPS warps per (query tile of TILE_WARPS x TILE_Q consecutive queries, head h, sequence b). The keys
// its queries see are walked in tiles of TILE_K, each tile's key and value rows staged in shared memory once for all
// the block's queries (attn_fwd_kernel reads every key row from memory once per query, and a butterfly of shuffles
// per score: ~1.5 TFLOP/s at 1 x 6144 on an H100). In a tile, lane j holds key j's scores against the warp's TILE_Q
// queries (dot products from shared memory, four elements a read, no shuffles); each query's tile maximum takes one
// butterfly; its weights p go through shared memory to the lanes that own the output's elements (lane l: l, l + 32,
// ...), which add p_j v_j. The online softmax is attn_fwd_kernel's (running max m, a lane's partial sum l, the
// weighted values acc, rescaled by exp(m_old - m_new)); the sums' order differs, so results are within float
// rounding of it. head_dim a multiple of 4, at most 32 x NPL (the caller checks).
#define TILE_WARPS 8
#define TILE_Q 8  // queries a warp
#define TILE_K 32 // keys a tile: one a lane

static size_t attn_tiled_smem(int hd, int npl) {
    const size_t ld = (size_t)hd + 4; // rows of whole float4s, 4 banks apart: a lane's float4 reads conflict-free
    return sizeof(float) * ((size_t)TILE_WARPS * TILE_Q * ld + TILE_K * ld + (size_t)TILE_K * 32 * npl +
                            (size_t)TILE_WARPS * TILE_Q * TILE_K);
}

__device__ __forceinline__ static float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

// The tiled kernels' scores: s[u] = x . a_u over the TILE_Q shared rows a_u = a + u ld, x one lane's row, four elements
// a read (ld and hd multiples of 4); with TWO also t[u] = y . b_u (the backward's dO . v beside q . k).
template <bool TWO>
__device__ __forceinline__ static void tile_dots(float (&s)[TILE_Q], float (&t)[TILE_Q], const float *x, const float *a,
                                                 const float *y, const float *b, int ld, int hd) {
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) s[u] = t[u] = 0.0f;
    for (int c = 0; c < hd; c += 4) {
        const float4 x4 = *(const float4 *)(x + c), y4 = TWO ? *(const float4 *)(y + c) : x4;
#pragma unroll
        for (int u = 0; u < TILE_Q; u++) {
            s[u] += dot4(x4, *(const float4 *)(a + u * ld + c)); // (the same address in every lane)
            if (TWO) t[u] += dot4(y4, *(const float4 *)(b + u * ld + c));
        }
    }
}

template <int NPL>
__global__ static void __launch_bounds__(TILE_WARPS * 32)
    attn_fwd_tiled_kernel(const attn_args a, float *o, int ldo, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int hd = a.hd, ld = hd + 4, T = a.T, lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const int h = blockIdx.y, b = blockIdx.z, kh = h / (a.H / a.KV), t0 = blockIdx.x * TILE_WARPS * TILE_Q;
    float *qs = (float *)smem;                        // [TILE_WARPS * TILE_Q][ld] the block's queries
    float *ks = qs + (size_t)TILE_WARPS * TILE_Q * ld; // [TILE_K][ld] a tile's keys
    float *vs = ks + (size_t)TILE_K * ld;              // [TILE_K][32 * NPL] its values
    float *pw = vs + (size_t)TILE_K * 32 * NPL + (size_t)warp * TILE_Q * TILE_K; // [TILE_Q][TILE_K] this warp's p
    // query t's position is pos0 + t (the CPU's attn_range); the block's keys run from its first query's lowest to
    // its last query's own
    const int pos0 = (a.nk ? a.nk[b] : T) - T, t_end = min(T, t0 + TILE_WARPS * TILE_Q);
    const int j_end = pos0 + t_end, j_begin = a.window > 0 ? max(0, pos0 + t0 - a.window + 1) : 0;
    for (int idx = threadIdx.x; idx < TILE_WARPS * TILE_Q * hd; idx += blockDim.x) { // rows past T: zeros
        const int r = idx / hd, c = idx % hd, t = t0 + r;
        qs[r * ld + c] = t < T ? f32(a.q)[((size_t)b * T + t) * a.q.ld + (size_t)h * hd + c] : 0.0f;
    }
    float m[TILE_Q], l[TILE_Q], acc[TILE_Q][NPL];
    int lo[TILE_Q], hi[TILE_Q], wlo = INT_MAX, whi = 0; // each query's keys [lo, hi); the warp's union
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) {
        const int t = t0 + warp * TILE_Q + u, i = pos0 + t;
        hi[u] = t < T ? i + 1 : 0; // (a row past T sees no key)
        lo[u] = t < T && a.window > 0 ? max(0, i - a.window + 1) : 0;
        if (hi[u] > lo[u]) wlo = min(wlo, lo[u]), whi = max(whi, hi[u]);
        m[u] = -INFINITY, l[u] = 0.0f;
#pragma unroll
        for (int c = 0; c < NPL; c++) acc[u][c] = 0.0f;
    }
    const float *kb = f32(a.k) + b * a.kv_bstride + (size_t)kh * hd, *vb = f32(a.v) + b * a.kv_bstride + (size_t)kh * hd;
    for (int j0 = j_begin; j0 < j_end; j0 += TILE_K) {
        __syncthreads(); // the queries staged; the last tile read by every warp
        for (int idx = threadIdx.x; idx < TILE_K * hd; idx += blockDim.x) { // rows past the block's keys: zeros
            const int r = idx / hd, c = idx % hd, j = j0 + r;
            ks[r * ld + c] = j < j_end ? kb[(size_t)j * a.k.ld + c] : 0.0f;
            vs[r * 32 * NPL + c] = j < j_end ? vb[(size_t)j * a.v.ld + c] : 0.0f;
        }
        __syncthreads();
        if (j0 >= whi || j0 + TILE_K <= wlo) continue; // none of the warp's queries sees this tile (uniform)
        float s[TILE_Q], unused[TILE_Q];
        tile_dots<false>(s, unused, ks + lane * ld, qs + (size_t)warp * TILE_Q * ld, NULL, NULL, ld, hd);
        const int j = j0 + lane;
#pragma unroll
        for (int u = 0; u < TILE_Q; u++) {
            const bool seen = j >= lo[u] && j < hi[u];
            const float sc = seen ? s[u] * scale : -INFINITY;
            float mt = sc;
            for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
            float p = 0.0f;
            if (mt != -INFINITY) { // uniform: every lane has the tile's maximum
                const float mn = fmaxf(m[u], mt), corr = expf(m[u] - mn); // 0 on the first keys (m = -inf)
                p = seen ? expf(sc - mn) : 0.0f;
                l[u] = l[u] * corr + p;
#pragma unroll
                for (int c = 0; c < NPL; c++) acc[u][c] *= corr;
                m[u] = mn;
            }
            pw[u * TILE_K + lane] = p;
        }
        __syncwarp();
        for (int k = 0; k < TILE_K; k++)
#pragma unroll
            for (int c = 0; c < NPL; c++) {
                if (lane + 32 * c >= hd) continue;
                const float v = vs[k * 32 * NPL + lane + 32 * c];
#pragma unroll
                for (int u = 0; u < TILE_Q; u++) acc[u][c] += pw[u * TILE_K + k] * v; // (p: the same address in every lane)
            }
        __syncwarp(); // pw is rewritten by the next tile
    }
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) {
        const int t = t0 + warp * TILE_Q + u;
        if (t >= T) continue; // uniform
        const float L = warp_sum(l[u]), inv = 1.0f / L;
#pragma unroll
        for (int c = 0; c < NPL; c++) acc[u][c] *= inv;
        store_vec<NPL>(o + ((size_t)b * T + t) * ldo + (size_t)h * hd, acc[u], lane, hd);
        if (a.lse && lane == 0) a.lse[((size_t)b * a.H + h) * T + t] = m[u] + logf(L);
    }
}

// The tiled forward where it applies: queries enough to fill its tiles (T >= 32), a head of whole float4s up to 128,
// no forced split count (SSM_ATTN_SPLITS, the decode kernels' test knob); SSM_ATTN_TILED=0 turns it off (A/B).
static bool attn_tiled(const attn_args *a) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("SSM_ATTN_TILED");
        on = !(e && !strcmp(e, "0"));
    }
    const char *forced = getenv("SSM_ATTN_SPLITS");
    return on && !(forced && *forced) && a->T >= 32 && a->hd % 4 == 0 && a->hd <= 128;
}

template <int NPL> static void attn_fwd_tiled_launch(const attn_args *a, float *o, int ldo) {
    static size_t smem_set[FLASH_SMEM_DEVICES];
    const size_t smem = attn_tiled_smem(a->hd, NPL);
    flash_smem_limit((const void *)attn_fwd_tiled_kernel<NPL>, smem, &smem_set);
    const dim3 grid((unsigned)cdiv(a->T, TILE_WARPS * TILE_Q), (unsigned)a->H, (unsigned)a->B);
    attn_fwd_tiled_kernel<NPL><<<grid, TILE_WARPS * 32, smem>>>(*a, o, ldo, 1.0f / sqrtf((float)a->hd));
    CUDA_CHECK_LAUNCH();
}

// How many runs to cut each query's keys into: from the sizes alone (never nk's values, which live on the device),
// so that a decode graph captured once stays valid. The most keys a query can see: the window, else the cache's
// capacity (kv_bstride / ldkv: sequence b's keys lie in [b * kv_bstride, (b + 1) * kv_bstride)), else T. Any count
// is correct (each warp splits its own query's keys evenly); this only sets the parallelism.
static int attn_splits(const attn_args *a) {
    const char *env = getenv("SSM_ATTN_SPLITS");
    if (env && *env) {
        const int n = atoi(env);
        if (n >= 1) return n < 4096 ? n : 4096;
    }
    long keys = a->T;
    if (a->nk && a->k.ld > 0 && (long)(a->kv_bstride / a->k.ld) > keys) keys = (long)(a->kv_bstride / a->k.ld);
    if (a->window > 0 && a->window < keys) keys = a->window;
    const long queries = (long)a->B * a->H * a->T;
    if (queries >= ATTN_TARGET_WARPS || keys < 2 * ATTN_SPLIT_KEYS) return 1;
    long n = (ATTN_TARGET_WARPS + queries - 1) / queries;
    if (n > keys / ATTN_SPLIT_KEYS) n = keys / ATTN_SPLIT_KEYS;
    if (n > ATTN_MAX_SPLITS) n = ATTN_MAX_SPLITS;
    return n > 1 ? (int)n : 1;
}

template <int NPL> static void attn_fwd_launch(const attn_args *a, float *o, int ldo) {
    if (NPL <= 4 && attn_tiled(a)) {
        attn_fwd_tiled_launch<NPL <= 4 ? NPL : 4>(a, o, ldo);
        return;
    }
    const float scale = 1.0f / sqrtf((float)a->hd); // as the CPU's
    const int splits = attn_splits(a);
    const size_t queries = (size_t)a->B * a->H * a->T, jobs = queries * splits;
    float *part = NULL;
    if (splits > 1)
        CUDA_CHECK(cudaMallocAsync((void **)&part, sizeof(float) * jobs * (size_t)(a->hd + 2), cudaStreamPerThread));
    attn_fwd_kernel<NPL><<<(unsigned)((jobs + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32>>>(*a, o, ldo, scale,
                                                                                                 splits, part);
    CUDA_CHECK_LAUNCH();
    if (splits > 1) {
        attn_combine_kernel<NPL><<<(unsigned)queries, ATTN_WARPS * 32>>>(*a, o, ldo, splits, part);
        CUDA_CHECK_LAUNCH();
        CUDA_CHECK(cudaFreeAsync(part, cudaStreamPerThread));
    }
}

static void attn_fwd_f32(const attn_args *a, float *o, int ldo) {
    switch (attn_npl(a->hd)) {
    case 1: attn_fwd_launch<1>(a, o, ldo); break;
    case 2: attn_fwd_launch<2>(a, o, ldo); break;
    case 4: attn_fwd_launch<4>(a, o, ldo); break;
    default: attn_fwd_launch<8>(a, o, ldo); break;
    }
}

// ---- backward -----------------------------------------------------------------------------------------------------
// dq and D: a warp per (b, h, t).
template <int NPL>
__global__ static void __launch_bounds__(ATTN_WARPS * 32)
    attn_bwd_dq_kernel(const attn_args a, const float *o, int ldo, const float *dout, int lddo, float *dq, int ldd,
                       float *Dbuf, float scale) {
    const int lane = threadIdx.x & 31, T = a.T, H = a.H, hd = a.hd;
    const size_t qi = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    if (qi >= (size_t)a.B * H * T) return;
    const int t = (int)(qi % T), h = (int)(qi / T % H), b = (int)(qi / ((size_t)T * H)), kh = h / (H / a.KV);
    int lo, hi;
    attn_range(a, b, t, lo, hi);
    const size_t row = (size_t)b * T + t;
    float q[NPL], dO[NPL], g[NPL];
    load_vec<NPL>(q, f32(a.q) + row * a.q.ld + (size_t)h * hd, lane, hd);
    load_vec<NPL>(dO, dout + row * lddo + (size_t)h * hd, lane, hd);
    const float D = warp_sum(dot_part<NPL>(dO, o + row * ldo + (size_t)h * hd, lane, hd));
    const float lse = a.lse[((size_t)b * H + h) * T + t];
    if (lane == 0) Dbuf[qi] = D;
#pragma unroll
    for (int c = 0; c < NPL; c++) g[c] = 0.0f;
    const float *kb = f32(a.k) + b * a.kv_bstride + (size_t)kh * hd,
                *vb = f32(a.v) + b * a.kv_bstride + (size_t)kh * hd;
    // KB keys a step, their key and value rows read at its start (a row past the run reads the run's last, in bounds,
    // and its ds is 0), the sums still in key order: one memory latency a step, not one a key
    constexpr int KB = NPL <= 2 ? 4 : 8 / NPL;
    for (int j = lo; j < hi; j += KB) {
        float kk[KB][NPL], sd[2 * KB]; // sd: the KB scores, then the KB dO . v
#pragma unroll
        for (int u = 0; u < KB; u++) {
            const int jj = min(j + u, hi - 1);
            float vv[NPL];
            load_vec<NPL>(kk[u], kb + (size_t)jj * a.k.ld, lane, hd);
            load_vec<NPL>(vv, vb + (size_t)jj * a.v.ld, lane, hd);
            sd[u] = 0.0f, sd[KB + u] = 0.0f;
#pragma unroll
            for (int c = 0; c < NPL; c++)
                if (lane + 32 * c < hd) sd[u] += q[c] * kk[u][c], sd[KB + u] += dO[c] * vv[c];
        }
        warp_sum_n<2 * KB>(sd);
#pragma unroll
        for (int u = 0; u < KB; u++) {
            if (j + u >= hi) break; // (uniform: every lane has j and hi)
            const float p = expf(sd[u] * scale - lse), ds = p * (sd[KB + u] - D) * scale;
#pragma unroll
            for (int c = 0; c < NPL; c++)
                if (lane + 32 * c < hd) g[c] += ds * kk[u][c];
        }
    }
    store_vec<NPL>(dq + row * ldd + (size_t)h * hd, g, lane, hd);
}

// dk and dv: a warp per (b, kv head, key j), over the group's query heads in order and the queries that see j in
// order. Training: query t's position is t, so j is visible to t in [j, j + window) (all t >= j without a window).
template <int NPL>
__global__ static void __launch_bounds__(ATTN_WARPS * 32)
    attn_bwd_dkv_kernel(const attn_args a, const float *dout, int lddo, float *dk, float *dv, int ldd,
                        const float *Dbuf, float scale) {
    const int lane = threadIdx.x & 31, T = a.T, H = a.H, KV = a.KV, hd = a.hd, group = H / KV;
    const size_t ki = (size_t)blockIdx.x * ATTN_WARPS + threadIdx.x / 32;
    if (ki >= (size_t)a.B * KV * T) return;
    const int j = (int)(ki % T), kh = (int)(ki / T % KV), b = (int)(ki / ((size_t)T * KV));
    const int t_end = a.window > 0 && j + a.window < T ? j + a.window : T;
    float k[NPL], v[NPL], gk[NPL], gv[NPL];
    load_vec<NPL>(k, f32(a.k) + b * a.kv_bstride + (size_t)j * a.k.ld + (size_t)kh * hd, lane, hd);
    load_vec<NPL>(v, f32(a.v) + b * a.kv_bstride + (size_t)j * a.v.ld + (size_t)kh * hd, lane, hd);
#pragma unroll
    for (int c = 0; c < NPL; c++) gk[c] = gv[c] = 0.0f;
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const float *lse = a.lse + ((size_t)b * H + h) * T, *Dh = Dbuf + ((size_t)b * H + h) * T;
        for (int t = j; t < t_end; t++) {
            const size_t row = (size_t)b * T + t;
            const float *qt = f32(a.q) + row * a.q.ld + (size_t)h * hd, *dOt = dout + row * lddo + (size_t)h * hd;
            float sc = dot_part<NPL>(k, qt, lane, hd), dp = dot_part<NPL>(v, dOt, lane, hd);
            warp_sum2(sc, dp);
            const float p = expf(sc * scale - lse[t]), ds = p * (dp - Dh[t]) * scale;
#pragma unroll
            for (int c = 0; c < NPL; c++)
                if (lane + 32 * c < hd) {
                    gv[c] += p * dOt[lane + 32 * c];
                    gk[c] += ds * qt[lane + 32 * c];
                }
        }
    }
    const size_t row = (size_t)b * T + j;
    store_vec<NPL>(dk + row * ldd + (size_t)kh * hd, gk, lane, hd);
    store_vec<NPL>(dv + row * ldd + (size_t)kh * hd, gv, lane, hd);
}

// ---- backward, tiled (as the tiled forward: T >= 32, head_dim a multiple of 4 up to 128) -------------------------
// The same recomputation from lse in two kernels, each staging in shared memory the rows that many warps read:
//   attn_bwd_dq_tiled_kernel, a block per (64 queries, head h, sequence b): D = dO . O per query (to Dbuf), then over
//     tiles of 32 keys: lane j computes key j's score and dO . v_j against each of its warp's 8 queries (float4 reads
//     of the staged rows), p = exp(score * scale - lse) and ds = p (dO . v_j - D) scale; the ds go through shared
//     memory to the lanes that own dq's elements, which add ds_j k_j.
//   attn_bwd_dkv_tiled_kernel, a block per (64 keys, kv head, sequence b): over the group's query heads and tiles of
//     32 queries that see the block's keys: lane t computes query t's score and dO_t . v against each of its warp's 8
//     keys, p and ds likewise; p and ds go through shared memory to the lanes that own dk's and dv's elements, which
//     add ds_t q_t and p_t dO_t.
// No atomics (each gradient element has one owner); the sums' order differs from the CPU's (within rounding).
static size_t attn_bwd_tiled_smem(int hd, int dkv) {
    const size_t ld = (size_t)hd + 4, W = (size_t)TILE_WARPS * TILE_Q;
    return sizeof(float) * (dkv ? 2 * W * ld + 2 * TILE_K * ld + 2 * TILE_K + 2 * W * TILE_K
                                : 2 * W * ld + 2 * TILE_K * ld + W * TILE_K);
}

template <int NPL>
__global__ static void __launch_bounds__(TILE_WARPS * 32)
    attn_bwd_dq_tiled_kernel(const attn_args a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                             int ldd, float *Dbuf, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int hd = a.hd, ld = hd + 4, T = a.T, H = a.H, lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const int h = blockIdx.y, b = blockIdx.z, kh = h / (H / a.KV), t0 = blockIdx.x * TILE_WARPS * TILE_Q;
    float *qs = (float *)smem;                          // [64][ld] the block's queries
    float *dos = qs + (size_t)TILE_WARPS * TILE_Q * ld;  // [64][ld] their output gradients
    float *ks = dos + (size_t)TILE_WARPS * TILE_Q * ld;  // [TILE_K][ld] a tile's keys
    float *vs = ks + (size_t)TILE_K * ld;                // [TILE_K][ld] its values
    float *dsw = vs + (size_t)TILE_K * ld + (size_t)warp * TILE_Q * TILE_K; // [TILE_Q][TILE_K] this warp's ds
    const int t_end = min(T, t0 + TILE_WARPS * TILE_Q), j_begin = a.window > 0 ? max(0, t0 - a.window + 1) : 0;
    for (int idx = threadIdx.x; idx < TILE_WARPS * TILE_Q * hd; idx += blockDim.x) { // rows past T: zeros
        const int r = idx / hd, c = idx % hd, t = t0 + r;
        const size_t row = (size_t)b * T + t;
        qs[r * ld + c] = t < T ? f32(a.q)[row * a.q.ld + (size_t)h * hd + c] : 0.0f;
        dos[r * ld + c] = t < T ? dout[row * lddo + (size_t)h * hd + c] : 0.0f;
    }
    float lse[TILE_Q], D[TILE_Q], g[TILE_Q][NPL];
    int lo[TILE_Q], hi[TILE_Q], wlo = INT_MAX, whi = 0;
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) {
        const int t = t0 + warp * TILE_Q + u;
        hi[u] = t < T ? t + 1 : 0, lo[u] = t < T && a.window > 0 ? max(0, t - a.window + 1) : 0;
        lse[u] = D[u] = 0.0f;
        if (t < T) { // uniform
            const size_t row = (size_t)b * T + t, qi = ((size_t)b * H + h) * T + t;
            float dO[NPL];
            load_vec<NPL>(dO, dout + row * lddo + (size_t)h * hd, lane, hd);
            D[u] = warp_sum(dot_part<NPL>(dO, o + row * ldo + (size_t)h * hd, lane, hd));
            lse[u] = a.lse[qi];
            if (lane == 0) Dbuf[qi] = D[u];
            wlo = min(wlo, lo[u]), whi = max(whi, hi[u]);
        }
#pragma unroll
        for (int c = 0; c < NPL; c++) g[u][c] = 0.0f;
    }
    const float *kb = f32(a.k) + b * a.kv_bstride + (size_t)kh * hd, *vb = f32(a.v) + b * a.kv_bstride + (size_t)kh * hd;
    for (int j0 = j_begin; j0 < t_end; j0 += TILE_K) {
        __syncthreads(); // the queries staged; the last tile read by every warp
        for (int idx = threadIdx.x; idx < TILE_K * hd; idx += blockDim.x) {
            const int r = idx / hd, c = idx % hd, j = j0 + r;
            ks[r * ld + c] = j < t_end ? kb[(size_t)j * a.k.ld + c] : 0.0f;
            vs[r * ld + c] = j < t_end ? vb[(size_t)j * a.v.ld + c] : 0.0f;
        }
        __syncthreads();
        if (j0 >= whi || j0 + TILE_K <= wlo) continue; // (uniform)
        float sc[TILE_Q], dp[TILE_Q]; // lane j: key j's q . k and dO . v against the warp's queries
        tile_dots<true>(sc, dp, ks + lane * ld, qs + (size_t)warp * TILE_Q * ld, vs + lane * ld,
                        dos + (size_t)warp * TILE_Q * ld, ld, hd);
        const int j = j0 + lane;
#pragma unroll
        for (int u = 0; u < TILE_Q; u++) {
            const float p = j >= lo[u] && j < hi[u] ? expf(sc[u] * scale - lse[u]) : 0.0f;
            dsw[u * TILE_K + lane] = p * (dp[u] - D[u]) * scale;
        }
        __syncwarp();
        for (int k = 0; k < TILE_K; k++)
#pragma unroll
            for (int c = 0; c < NPL; c++) {
                if (lane + 32 * c >= hd) continue;
                const float kv = ks[k * ld + lane + 32 * c];
#pragma unroll
                for (int u = 0; u < TILE_Q; u++) g[u][c] += dsw[u * TILE_K + k] * kv;
            }
        __syncwarp(); // dsw is rewritten by the next tile
    }
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) {
        const int t = t0 + warp * TILE_Q + u;
        if (t < T) store_vec<NPL>(dq + ((size_t)b * T + t) * ldd + (size_t)h * hd, g[u], lane, hd);
    }
}

template <int NPL>
__global__ static void __launch_bounds__(TILE_WARPS * 32)
    attn_bwd_dkv_tiled_kernel(const attn_args a, const float *dout, int lddo, float *dk, float *dv, int ldd,
                              const float *Dbuf, float scale) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int hd = a.hd, ld = hd + 4, T = a.T, H = a.H, group = H / a.KV, lane = threadIdx.x & 31,
              warp = threadIdx.x / 32;
    const int kh = blockIdx.y, b = blockIdx.z, j0 = blockIdx.x * TILE_WARPS * TILE_Q;
    float *ks = (float *)smem;                          // [64][ld] the block's keys
    float *vs = ks + (size_t)TILE_WARPS * TILE_Q * ld;   // [64][ld] their values
    float *qs = vs + (size_t)TILE_WARPS * TILE_Q * ld;   // [TILE_K][ld] a tile's queries
    float *dos = qs + (size_t)TILE_K * ld;               // [TILE_K][ld] their output gradients
    float *ls = dos + (size_t)TILE_K * ld, *Ds = ls + TILE_K; // [TILE_K] their lse and D
    float *pw = Ds + TILE_K + (size_t)warp * 2 * TILE_Q * TILE_K, *dsw = pw + TILE_Q * TILE_K; // this warp's p, ds
    const int j_end = min(T, j0 + TILE_WARPS * TILE_Q);
    const int t_stop = a.window > 0 ? min(T, j_end - 1 + a.window) : T; // the last query that sees a key, + 1
    for (int idx = threadIdx.x; idx < TILE_WARPS * TILE_Q * hd; idx += blockDim.x) { // keys past T: zeros
        const int r = idx / hd, c = idx % hd, j = j0 + r;
        const size_t at = b * a.kv_bstride + (size_t)kh * hd + c;
        ks[r * ld + c] = j < T ? f32(a.k)[at + (size_t)j * a.k.ld] : 0.0f;
        vs[r * ld + c] = j < T ? f32(a.v)[at + (size_t)j * a.v.ld] : 0.0f;
    }
    float gk[TILE_Q][NPL], gv[TILE_Q][NPL];
#pragma unroll
    for (int u = 0; u < TILE_Q; u++)
#pragma unroll
        for (int c = 0; c < NPL; c++) gk[u][c] = gv[u][c] = 0.0f;
    const int wj = j0 + warp * TILE_Q, wj_last = min(T, wj + TILE_Q) - 1; // this warp's keys
    for (int h = kh * group; h < (kh + 1) * group; h++)
        for (int t0 = j0; t0 < t_stop; t0 += TILE_K) {
            __syncthreads(); // the keys staged; the last tile read by every warp
            for (int idx = threadIdx.x; idx < TILE_K * hd; idx += blockDim.x) {
                const int r = idx / hd, c = idx % hd, t = t0 + r;
                const size_t row = (size_t)b * T + t;
                qs[r * ld + c] = t < T ? f32(a.q)[row * a.q.ld + (size_t)h * hd + c] : 0.0f;
                dos[r * ld + c] = t < T ? dout[row * lddo + (size_t)h * hd + c] : 0.0f;
            }
            if (threadIdx.x < TILE_K) {
                const int t = t0 + threadIdx.x;
                const size_t qi = ((size_t)b * H + h) * T + t;
                ls[threadIdx.x] = t < T ? a.lse[qi] : 0.0f;
                Ds[threadIdx.x] = t < T ? Dbuf[qi] : 0.0f;
            }
            __syncthreads();
            // (uniform) no key of this warp seen by the tile's queries: all before its first key, or past its window
            if (wj > wj_last || t0 + TILE_K <= wj || (a.window > 0 && t0 >= wj_last + a.window)) continue;
            float sc[TILE_Q], dp[TILE_Q]; // lane t: query t's q . k and dO . v against the warp's keys
            tile_dots<true>(sc, dp, qs + lane * ld, ks + (size_t)warp * TILE_Q * ld, dos + lane * ld,
                            vs + (size_t)warp * TILE_Q * ld, ld, hd);
            const int t = t0 + lane;
#pragma unroll
            for (int u = 0; u < TILE_Q; u++) {
                const int j = wj + u;
                const bool seen = t < T && j < T && t >= j && (a.window <= 0 || t < j + a.window);
                const float p = seen ? expf(sc[u] * scale - ls[lane]) : 0.0f;
                pw[u * TILE_K + lane] = p;
                dsw[u * TILE_K + lane] = p * (dp[u] - Ds[lane]) * scale;
            }
            __syncwarp();
            for (int q = 0; q < TILE_K; q++)
#pragma unroll
                for (int c = 0; c < NPL; c++) {
                    if (lane + 32 * c >= hd) continue;
                    const float dov = dos[q * ld + lane + 32 * c], qv = qs[q * ld + lane + 32 * c];
#pragma unroll
                    for (int u = 0; u < TILE_Q; u++) {
                        gv[u][c] += pw[u * TILE_K + q] * dov;
                        gk[u][c] += dsw[u * TILE_K + q] * qv;
                    }
                }
            __syncwarp(); // pw and dsw are rewritten by the next tile
        }
#pragma unroll
    for (int u = 0; u < TILE_Q; u++) {
        const int j = wj + u;
        if (j >= T) continue;
        const size_t row = (size_t)b * T + j;
        store_vec<NPL>(dk + row * ldd + (size_t)kh * hd, gk[u], lane, hd);
        store_vec<NPL>(dv + row * ldd + (size_t)kh * hd, gv[u], lane, hd);
    }
}

template <int NPL>
static void attn_bwd_tiled_launch(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                                  float *dk, float *dv, int ldd, float *Dbuf, float scale) {
    static size_t set_dq[FLASH_SMEM_DEVICES], set_dkv[FLASH_SMEM_DEVICES];
    const size_t smem_dq = attn_bwd_tiled_smem(a->hd, 0), smem_dkv = attn_bwd_tiled_smem(a->hd, 1);
    flash_smem_limit((const void *)attn_bwd_dq_tiled_kernel<NPL>, smem_dq, &set_dq);
    flash_smem_limit((const void *)attn_bwd_dkv_tiled_kernel<NPL>, smem_dkv, &set_dkv);
    const unsigned tiles = (unsigned)cdiv(a->T, TILE_WARPS * TILE_Q);
    attn_bwd_dq_tiled_kernel<NPL><<<dim3(tiles, (unsigned)a->H, (unsigned)a->B), TILE_WARPS * 32, smem_dq>>>(
        *a, o, ldo, dout, lddo, dq, ldd, Dbuf, scale);
    CUDA_CHECK_LAUNCH();
    attn_bwd_dkv_tiled_kernel<NPL><<<dim3(tiles, (unsigned)a->KV, (unsigned)a->B), TILE_WARPS * 32, smem_dkv>>>(
        *a, dout, lddo, dk, dv, ldd, Dbuf, scale);
    CUDA_CHECK_LAUNCH();
}

template <int NPL>
static void attn_bwd_launch(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                            float *dk, float *dv, int ldd) {
    const float scale = 1.0f / sqrtf((float)a->hd);
    const size_t queries = (size_t)a->B * a->H * a->T, keys = (size_t)a->B * a->KV * a->T;
    float *Dbuf;
    CUDA_CHECK(cudaMallocAsync((void **)&Dbuf, sizeof(float) * queries, cudaStreamPerThread));
    if (NPL <= 4 && attn_tiled(a)) {
        attn_bwd_tiled_launch<NPL <= 4 ? NPL : 4>(a, o, ldo, dout, lddo, dq, dk, dv, ldd, Dbuf, scale);
        CUDA_CHECK(cudaFreeAsync(Dbuf, cudaStreamPerThread));
        return;
    }
    attn_bwd_dq_kernel<NPL><<<(unsigned)((queries + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32>>>(
        *a, o, ldo, dout, lddo, dq, ldd, Dbuf, scale);
    CUDA_CHECK_LAUNCH();
    attn_bwd_dkv_kernel<NPL><<<(unsigned)((keys + ATTN_WARPS - 1) / ATTN_WARPS), ATTN_WARPS * 32>>>(
        *a, dout, lddo, dk, dv, ldd, Dbuf, scale);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaFreeAsync(Dbuf, cudaStreamPerThread));
}

static void attn_bwd_f32(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                         float *dk, float *dv, int ldd) {
    switch (attn_npl(a->hd)) {
    case 1: attn_bwd_launch<1>(a, o, ldo, dout, lddo, dq, dk, dv, ldd); break;
    case 2: attn_bwd_launch<2>(a, o, ldo, dout, lddo, dq, dk, dv, ldd); break;
    case 4: attn_bwd_launch<4>(a, o, ldo, dout, lddo, dq, dk, dv, ldd); break;
    default: attn_bwd_launch<8>(a, o, ldo, dout, lddo, dq, dk, dv, ldd); break;
    }
}

// ---- bf16 operands ------------------------------------------------------------------------------------------------
// The tensor-core kernels (attention_flash_fwd.cu, attention_flash_bwd.cu) where they apply (training's shapes,
// head_dim 64 or 128, aligned rows); SSM_ATTN_FLASH=0 turns them off. Elsewhere (a decode step over a cache, another
// head size) the operands are widened into float32 copies from the stream-ordered pool, the float32 kernels above run,
// and the outputs are rounded once: as the CPU runs bf16 (rare shapes: the copies cost memory and a pass).

// All operands of one dtype (ops.h): 1 for bf16, 0 for float32; n mats besides q, k, v
static int attn_bf16(const char *op, const attn_args *a, const mat *m, int n) {
    const mat_dtype dt = a->q.dt;
    bool same = a->k.dt == dt && a->v.dt == dt && (dt == MAT_F32 || dt == MAT_BF16);
    for (int i = 0; i < n; i++) same = same && m[i].dt == dt;
    if (!same) {
        fprintf(stderr, "ssm: %s: q, k, v and the outputs must all be float32 or all bf16\n", op);
        exit(2);
    }
    return dt == MAT_BF16;
}

static int flash_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("SSM_ATTN_FLASH");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

static float *pool_floats(size_t n) {
    float *p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(float) * (n ? n : 1), cudaStreamPerThread));
    return p;
}

// The float32 arguments of a bf16 a, in pool memory the caller frees (widen_free): q [B*T, H*hd] dense, k and v
// [B, n, KV*hd] dense with n the rows a sequence can have (T, or the cache's capacity kv_bstride / k.ld).
static attn_args widen_args(const attn_args *a) {
    attn_args w = *a;
    const int qd = a->H * a->hd, kvd = a->KV * a->hd;
    const int n = a->nk ? (int)(a->kv_bstride / a->k.ld) : a->T;
    ATTN_REQUIRE(n >= a->T, "attn (bf16 operands widened)");
    float *q = pool_floats((size_t)a->B * a->T * qd), *k = pool_floats((size_t)a->B * n * kvd),
          *v = pool_floats((size_t)a->B * n * kvd);
    convert_rows_cuda(mat_f32(q, qd), a->q, a->B * a->T, qd);
    for (int b = 0; b < a->B; b++) { // (one call per sequence: a cache's rows need not be evenly spaced)
        const size_t at = (size_t)b * a->kv_bstride;
        convert_rows_cuda(mat_f32(k + (size_t)b * n * kvd, kvd), mat_bf16(mat_h(a->k) + at, a->k.ld), n, kvd);
        convert_rows_cuda(mat_f32(v + (size_t)b * n * kvd, kvd), mat_bf16(mat_h(a->v) + at, a->v.ld), n, kvd);
    }
    w.q = mat_f32(q, qd), w.k = mat_f32(k, kvd), w.v = mat_f32(v, kvd), w.kv_bstride = (size_t)n * kvd;
    return w;
}

static void widen_free(const attn_args *w) {
    CUDA_CHECK(cudaFreeAsync(w->q.p, cudaStreamPerThread));
    CUDA_CHECK(cudaFreeAsync(w->k.p, cudaStreamPerThread));
    CUDA_CHECK(cudaFreeAsync(w->v.p, cudaStreamPerThread));
}

extern "C" void attn_fwd_cuda(const attn_args *a, mat o) {
    if ((size_t)a->B * a->H * a->T == 0) return;
    ATTN_REQUIRE(a->KV > 0 && a->H % a->KV == 0, "attn_fwd");
    if (!attn_bf16("attn_fwd", a, &o, 1)) {
        attn_fwd_f32(a, mat_f(o), o.ld);
        return;
    }
    if (flash_enabled() && attn_flash_fwd(a, o)) return;
    const attn_args w = widen_args(a);
    const int qd = a->H * a->hd, rows = a->B * a->T;
    float *of = pool_floats((size_t)rows * qd);
    attn_fwd_f32(&w, of, qd);
    convert_rows_cuda(o, mat_f32(of, qd), rows, qd);
    CUDA_CHECK(cudaFreeAsync(of, cudaStreamPerThread));
    widen_free(&w);
}

extern "C" void attn_bwd_cuda(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    ATTN_REQUIRE(!a->nk && a->lse, "attn_bwd (training's attention alone, after a forward that kept lse)");
    if ((size_t)a->B * a->H * a->T == 0) return;
    ATTN_REQUIRE(a->KV > 0 && a->H % a->KV == 0, "attn_bwd");
    const mat outs[] = {o, dout, dq, dk, dv};
    if (!attn_bf16("attn_bwd", a, outs, 5)) {
        ATTN_REQUIRE(dk.ld == dq.ld && dv.ld == dq.ld, "attn_bwd (float32: dq, dk, dv of one row stride)");
        attn_bwd_f32(a, mat_f(o), o.ld, mat_f(dout), dout.ld, mat_f(dq), mat_f(dk), mat_f(dv), dq.ld);
        return;
    }
    if (flash_enabled() && attn_flash_bwd(a, o, dout, dq, dk, dv)) return;
    const attn_args w = widen_args(a);
    const int qd = a->H * a->hd, kvd = a->KV * a->hd, W = qd + 2 * kvd, rows = a->B * a->T;
    float *of = pool_floats((size_t)rows * qd), *dof = pool_floats((size_t)rows * qd),
          *d = pool_floats((size_t)rows * W);
    convert_rows_cuda(mat_f32(of, qd), o, rows, qd);
    convert_rows_cuda(mat_f32(dof, qd), dout, rows, qd);
    attn_bwd_f32(&w, of, qd, dof, qd, d, d + qd, d + qd + kvd, W);
    convert_rows_cuda(dq, mat_f32(d, W), rows, qd);
    convert_rows_cuda(dk, mat_f32(d + qd, W), rows, kvd);
    convert_rows_cuda(dv, mat_f32(d + qd + kvd, W), rows, kvd);
    CUDA_CHECK(cudaFreeAsync(of, cudaStreamPerThread));
    CUDA_CHECK(cudaFreeAsync(dof, cudaStreamPerThread));
    CUDA_CHECK(cudaFreeAsync(d, cudaStreamPerThread));
    widen_free(&w);
}
