// What the fused decode kernels share (decode_mamba1.cu, decode_mamba2.cu): the weight loads (float32, bf16, int8
// with row scales), the FFMA row products for up to DEC_MAX_B sequences (warp_dot), the tensor-core products for up
// to DEC_TC_MAX_B (tc_gemm), the per-block RMSNorm, the L2 prefetch, and the cooperative launch with its grid
// chosen once per kernel. decode_mamba1.cu's first comment has the design.
#ifndef SSM_DECODE_COMMON_CUH
#define SSM_DECODE_COMMON_CUH

#include "backend/cuda/context.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/decode_trace.cuh"
#include "backend/cuda/grid_sync.cuh"
#include "backend/cuda/mma.cuh"
#include "ops/ops_cuda.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>

#define DEC_THREADS 512
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_MAX_B 8     // sequences a step in the FFMA form: the register sums of a warp's row
#define DEC_TC_MAX_B 64 // in the tensor-core form (bf16 and int8 weights): x's stage in shared memory
#define DEC_MAX_N 32    // d_state: a channel's states share a warp's lanes
#define DEC_MAX_K 8     // the conv's width
#define DEC_MAX_G 8     // groups of Mamba-2's gated norm: their scales in shared memory
#define DEC_FULL 0xffffffffu

// A weight as a float: float32, or bf16 (stored as its 16 bits: the upper half of the float's)
__device__ __forceinline__ static float wload(const float *w, size_t i) { return w[i]; }
__device__ __forceinline__ static float wload(const uint16_t *w, size_t i) {
    return __uint_as_float((uint32_t)w[i] << 16);
}
__device__ __forceinline__ static float wload(const int8_t *w, size_t i) { return (float)w[i]; }
// a row's scale: int8 weights' (their dot products are scaled once, as matmul_xwT's), 1 for the others
__device__ __forceinline__ static float row_scale(const float *s, int r) { return s ? s[r] : 1.0f; }

// The grid's warps in the order rows are dealt to them: warp w of block b is b + w gridDim.x, so that a product of
// fewer rows than warps, or one more row a warp for some, spreads over every block (and every SM's reads) rather
// than filling the first blocks' warps
__device__ __forceinline__ static int dec_gwarp() { return (int)(threadIdx.x / 32 * gridDim.x + blockIdx.x); }

// Asks for the 128-byte line at p in L2 (a hint: no result, no fault; nothing in the emulator)
__device__ __forceinline__ static void prefetch_l2(const void *p) {
#ifdef __CUDA_ARCH__
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// The lines of [p, p + bytes) into L2, spread over the grid's threads
__device__ __forceinline__ static void prefetch_range(const void *p, size_t bytes, size_t gthread, size_t nthreads) {
    for (size_t o = gthread * 128; o < bytes; o += nthreads * 128)
        prefetch_l2((const char *)p + o);
}

// w[0..7] as floats: one 8-byte read of int8, 16-byte of bf16, two 16-byte of float32 (rows of a multiple of 8
// values at offsets that are multiples of 16 values: params.c aligns every tensor so)
__device__ __forceinline__ static void load8(float (&v)[8], const float *w) {
    const float4 a = reinterpret_cast<const float4 *>(w)[0], b = reinterpret_cast<const float4 *>(w)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ static void load8(float (&v)[8], const uint16_t *w) {
    const uint4 q = *reinterpret_cast<const uint4 *>(w);
    const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
        v[2 * i] = __uint_as_float(u[i] << 16), v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
}

__device__ __forceinline__ static void load8(float (&v)[8], const int8_t *w) {
    const uint2 q = *reinterpret_cast<const uint2 *>(w);
#pragma unroll
    for (int i = 0; i < 4; i++)
        v[i] = (float)(int8_t)(q.x >> (8 * i)), v[4 + i] = (float)(int8_t)(q.y >> (8 * i));
}

// acc[b] += w[0..7] . x[b * ldx + 0..7] for b < B (x 16-byte aligned: shared or global memory)
template <int NB>
__device__ __forceinline__ static void fma8(float (&acc)[NB], const float (&v)[8], const float *x, int ldx, int B) {
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b >= B) break;
        const float4 p = *reinterpret_cast<const float4 *>(x + (size_t)b * ldx);
        const float4 q = *reinterpret_cast<const float4 *>(x + (size_t)b * ldx + 4);
        float s = acc[b];
        s = fmaf(v[0], p.x, s), s = fmaf(v[1], p.y, s), s = fmaf(v[2], p.z, s), s = fmaf(v[3], p.w, s);
        s = fmaf(v[4], q.x, s), s = fmaf(v[5], q.y, s), s = fmaf(v[6], q.z, s), s = fmaf(v[7], q.w, s);
        acc[b] = s;
    }
}

template <int NB> __device__ __forceinline__ static void warp_sum(float (&acc)[NB]) {
#pragma unroll
    for (int b = 0; b < NB; b++)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            acc[b] += __shfl_xor_sync(DEC_FULL, acc[b], off);
}

// acc[b] = w . x_b (b < B) over K values (a multiple of 8), in every lane: lane l reads the 8-value pieces l, l + 32,
// ... of the row (coalesced), x_b at x + b * ldx.
template <int NB, typename W>
__device__ __forceinline__ static void warp_dot(float (&acc)[NB], const W *w, const float *x, int ldx, int K, int B) {
#pragma unroll
    for (int b = 0; b < NB; b++)
        acc[b] = 0.0f;
#pragma unroll 4
    for (int k = (int)(threadIdx.x % 32) * 8; k < K; k += 256) {
        float v[8];
        load8(v, w + k);
        fma8(acc, v, x + k, ldx, B);
    }
    warp_sum(acc);
}

// acc[b] with b a lane's runtime index (registers are not indexed at run time)
template <int NB> __device__ __forceinline__ static float pick(const float (&acc)[NB], int b) {
    float v = 0.0f;
#pragma unroll
    for (int i = 0; i < NB; i++)
        if (i == b) v = acc[i];
    return v;
}

// u[b * D + d] = x[b, d] / rms(x_b) * w[d] for b < B into shared memory: every thread copies its elements of x and
// sums their squares in double (as the op-by-op norm does); the warps' sums meet in part [DEC_WARPS, DEC_MAX_B]
// (added in warp order); every thread scales its own elements. It is on every layer's critical path: one read of x
// a thread, not a warp walking a whole row. Block barriers before part is read and at the end.
__device__ static void block_rmsnorm(float *u, double *part, const float *x, const float *w, int B, int D, float eps) {
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    for (int b = 0; b < B; b++) {
        double ss = 0.0;
        for (int d = (int)threadIdx.x; d < D; d += DEC_THREADS) {
            const float v = x[(size_t)b * D + d];
            u[(size_t)b * D + d] = v;
            ss += (double)v * v;
        }
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(DEC_FULL, ss, off);
        if (lane == 0) part[warp * DEC_MAX_B + b] = ss;
    }
    __syncthreads();
    for (int b = 0; b < B; b++) {
        double ss = 0.0;
        for (int q = 0; q < DEC_WARPS; q++)
            ss += part[q * DEC_MAX_B + b];
        const float s = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int d = (int)threadIdx.x; d < D; d += DEC_THREADS)
            u[(size_t)b * D + d] = u[(size_t)b * D + d] * s * w[d];
    }
    __syncthreads();
}

__device__ __forceinline__ static float sigmoid_ref(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ static float softplus_ref(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

// ---- weights staged in shared memory (the FFMA form) -----------------------------------------------------------
// A phase's rows copied (cp.async) from global memory into shared memory a layer ahead of their product, so that
// after a grid barrier the product reads shared memory instead of waiting on L2 or DRAM. Each piece of 8 weights is
// copied by the thread that later reads it (warp_dot's lane l reads pieces l, l + 32, ... of a row; a block-per-row
// product's thread t pieces t, t + DEC_THREADS, ...), so the thread's own cp.async.wait_group makes it visible: no
// barrier. Every thread commits one group at each refill, empty or not, so that the groups in flight are the same
// count everywhere.
template <typename W> __device__ __forceinline__ static void stage8(W *dst, const W *src) {
    if constexpr (sizeof(W) == 4)
        cp_async16(dst, src, 16), cp_async16(dst + 4, src + 4, 16);
    else if constexpr (sizeof(W) == 2)
        cp_async16(dst, src, 16);
    else
        cp_async8(dst, src, 8);
}
// One row of K values src into dst by a warp: warp_dot's pieces, lane l copying pieces l, l + 32, ...
template <typename W> __device__ __forceinline__ static void stage_warp_row(W *dst, const W *src, int K) {
    for (int c = (int)(threadIdx.x % 32) * 8; c < K; c += 256)
        stage8(dst + c, src + c);
}
// A warp's rows r = gwarp + k nwarps (k < per) of w [rows, K] into dst [per, K]
template <typename W>
__device__ __forceinline__ static void stage_warp_rows(W *dst, const W *w, int rows, int K, int gwarp, int nwarps,
                                                       int per) {
    for (int k = 0; k < per && gwarp + k * nwarps < rows; k++)
        stage_warp_row(dst + (size_t)k * K, w + (size_t)(gwarp + k * nwarps) * K, K);
}
// A block's rows p = blockIdx.x + i gridDim.x (i < per) of w [rows, K] into dst [per, K], thread t's pieces t,
// t + DEC_THREADS, ...
template <typename W>
__device__ __forceinline__ static void stage_block_rows(W *dst, const W *w, int rows, int K, int per) {
    for (int i = 0; i < per && (int)blockIdx.x + i * (int)gridDim.x < rows; i++)
        for (int c = (int)threadIdx.x * 8; c < K; c += DEC_THREADS * 8)
            stage8(dst + (size_t)i * K + c, w + (size_t)((int)blockIdx.x + i * (int)gridDim.x) * K + c);
}

// ---- the conv step of in_proj's output rows --------------------------------------------------------------------
// What a row r of in_proj needs besides its product for sequence b: its bias and, for a conv channel ch (>= 0; -1: a
// row that is not one), the channel's K-1 past inputs, weights and bias. Read before the row's product, so that the
// conv step does not wait on another latency after it.
struct ConvIn {
    float past[DEC_MAX_K - 1], w[DEC_MAX_K], cb, ib;
};
__device__ __forceinline__ static ConvIn conv_in(const float *state, const float *cw, const float *cb,
                                                 const float *in_b, int C, int K, int r, int ch, int b) {
    ConvIn c;
    c.ib = in_b ? in_b[r] : 0.0f;
    c.cb = ch >= 0 && cb ? cb[ch] : 0.0f;
    const float *st = state + ((size_t)b * C + (ch >= 0 ? ch : 0)) * (K - 1), *wc = cw + (size_t)(ch >= 0 ? ch : 0) * K;
#pragma unroll
    for (int k = 0; k < DEC_MAX_K; k++) {
        c.w[k] = ch >= 0 && k < K ? wc[k] : 0.0f;
        if (k < DEC_MAX_K - 1) c.past[k] = ch >= 0 && k < K - 1 ? st[k] : 0.0f;
    }
    return c;
}
// channel ch's conv step on its new input v (conv1d_silu_step's order: bias, the K-1 past inputs, this one): SiLU of
// the sum; the past inputs shifted in state [B, C, K-1]
__device__ __forceinline__ static float conv_step(const ConvIn &ci, float *state, int C, int K, int ch, int b,
                                                  float v) {
    float *st = state + ((size_t)b * C + ch) * (K - 1);
    float c = ci.cb;
#pragma unroll
    for (int k = 0; k < DEC_MAX_K - 1; k++)
        if (k < K - 1) c += ci.w[k] * ci.past[k];
#pragma unroll
    for (int k = 0; k < DEC_MAX_K; k++)
        if (k == K - 1) c += ci.w[k] * v;
#pragma unroll
    for (int k = 0; k + 1 < DEC_MAX_K - 1; k++)
        if (k + 1 < K - 1) st[k] = ci.past[k + 1];
    st[K - 2] = v;
    return c * sigmoid_ref(c);
}

// ---- the tensor-core form (9 to 64 sequences) ----------------------------------------------------------------
// A product is out[r][b] = w[r] . x_b for items of 16 rows of w by NS = NB / G sequences (items dealt to blocks in
// turn, group by group): x's NS rows staged in shared memory as bf16 [NS][KC + 8] (a chunk of at most KC of the K
// values at a time, TC_KC or twice that for smaller items; the padding spreads ldmatrix's rows over the banks), the
// block's warps (or each half of them, TP = 2: two items a block at once) splitting the item's K in steps of 16 (warp
// q of KW: steps q, q + KW, ...), each step an m16n8k16 product per 8 sequences (A: 16 rows of w from global memory,
// 4 bytes a lane per register, all of a chunk's read before its stage; B: x via ldmatrix), the warps' partial tiles
// then summed in warp order through shared memory. G splits the sequences where a product has few row tiles (x_proj,
// out_proj, the head: more blocks share the work, each staging fewer rows); TP = 2 where it has more tiles than
// blocks but fewer than twice (in_proj: one round instead of two). bf16 or int8 weights (int8 converted exactly to
// bf16); the activations rounded to bf16, as the op-by-op bf16 GEMMs round them.
#define TC_KC 768
#define TC_KSW (TC_KC / (16 * DEC_WARPS)) // k-steps of 16 a warp takes in a chunk, at most
__host__ __device__ static constexpr size_t tc_stage_bytes(int nb, int kc) { return sizeof(uint16_t) * nb * (kc + 8); }
// the warps' partial tiles [DEC_WARPS][16][nb + 1] (rows padded to an odd length: the epilogue reads down a column)
__host__ __device__ static constexpr size_t tc_red_bytes(int nb) { return sizeof(float) * DEC_WARPS * 16 * (nb + 1); }

// bf16 of v, rounded to nearest even (finite values)
__device__ __forceinline__ static uint16_t bf16_rn(float v) {
    const uint32_t u = __float_as_uint(v);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// two consecutive weights as a bf16 pair (the lower address in the low half)
__device__ __forceinline__ static uint32_t ld_pair(const uint16_t *w, size_t i) {
    return *reinterpret_cast<const uint32_t *>(w + i);
}
__device__ __forceinline__ static uint32_t ld_pair(const int8_t *w, size_t i) { // int8 is exact in bf16
    const uint16_t q = *reinterpret_cast<const uint16_t *>(w + i);
    return (__float_as_uint((float)(int8_t)(q & 0xff)) >> 16) |
           (__float_as_uint((float)(int8_t)(q >> 8)) & 0xffff0000u);
}

template <int NB, int G = 1, int TP = 1, typename W, class Stage, class Out>
__device__ static void tc_gemm(const W *w, const float *scale, int rows, int K, int B, unsigned char *sm, Stage stage,
                               Out out) {
    constexpr int NS = NB / G;                                 // sequences an item
    constexpr int NT = NS / 8;                                 // 8-sequence tiles of an item's product
    constexpr int KW = DEC_WARPS / TP;                         // warps on an item
    constexpr int KSW = G > 1 || TP > 1 ? 2 * TC_KSW : TC_KSW; // a warp's k-steps in a chunk, at most
    constexpr int LD = NS + 1;                                 // a partial tile's row in red (odd: no bank conflicts)
    static_assert(NS % 16 == 0 && (G == 1 || G % 2 == 0) && (TP == 1 || (TP == 2 && G == 1)),
                  "tc_gemm: items of 16, 32 or 64 sequences; two items a block at once only of all of them");
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, gq = lane >> 2, cq = lane & 3;
    const int slot = warp / KW, kw = warp % KW; // the warp's item of the block's TP, and its place among the KW
    const int KC = K < KSW * 16 * KW ? K : KSW * 16 * KW, ldx = KC + 8, chunks = (K + KC - 1) / KC;
    const int tiles = (rows + 15) / 16, items = tiles * G;
    // (G > 1: NS (KC + 8) <= NB / 2 (2 TC_KC + 8), within the NB (TC_KC + 8) of dec_smem_bytes when K >= TC_KC)
    uint16_t *xs = reinterpret_cast<uint16_t *>(sm);                     // [NS][ldx]
    float *red = reinterpret_cast<float *>(sm + tc_stage_bytes(NS, KC)); // [DEC_WARPS][16][LD]
    int staged = -1;
    for (int base = (int)blockIdx.x * TP; base < items; base += (int)gridDim.x * TP) {
        // items in group order (G > 1, TP 1): an item of no sequence is followed by none that has one
        const int grp = base / tiles, b0 = grp * NS, it = base + slot, r0 = it % tiles * 16;
        if (b0 >= B) break;
        const bool lo = it < items && r0 + gq < rows, hi = it < items && r0 + gq + 8 < rows;
        const W *w0 = w + (size_t)(r0 + gq) * K + 2 * cq, *w1 = w0 + (size_t)8 * K;
        float acc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        for (int ch = 0; ch < chunks; ch++) {
            const int k0 = ch * KC, kc = K - k0 < KC ? K - k0 : KC;
            // the warp's A operands of the chunk (k-steps q: kw + q KW) read before the stage's barriers, all at once:
            // their latency overlaps the stage's
            uint32_t A[KSW][4];
#pragma unroll
            for (int q = 0; q < KSW; q++) {
                const int ks = (kw + q * KW) * 16;
                const size_t k = (size_t)k0 + ks;
                const bool in = ks < kc;
                A[q][0] = in && lo ? ld_pair(w0, k) : 0u, A[q][1] = in && hi ? ld_pair(w1, k) : 0u;
                A[q][2] = in && lo ? ld_pair(w0, k + 8) : 0u, A[q][3] = in && hi ? ld_pair(w1, k + 8) : 0u;
            }
            if (staged != grp * chunks + ch) { // (staged once for all of this block's tiles of the group)
                __syncthreads();
                stage(xs, ldx, k0, kc, b0, NS);
                __syncthreads();
                staged = grp * chunks + ch;
            }
#pragma unroll
            for (int q = 0; q < KSW; q++) {
                const int ks = (kw + q * KW) * 16;
                if (ks >= kc) break;
#pragma unroll
                for (int j = 0; j < NT; j += 2) { // matrices: (tile j, k 0-7), (j, 8-15), (j + 1, 0-7), (j + 1, 8-15)
                    const int i = lane >> 3;
                    uint32_t Bf[4];
                    ldsm_x4(Bf, xs + (size_t)(8 * (j + (i >> 1)) + (lane & 7)) * ldx + ks + (i & 1) * 8);
                    mma(acc[j], A[q], Bf[0], Bf[1]);
                    mma(acc[j + 1], A[q], Bf[2], Bf[3]);
                }
            }
        }
        float *mine = red + (size_t)warp * 16 * LD; // this warp's partial tile [16][LD]
#pragma unroll
        for (int j = 0; j < NT; j++) {
            mine[gq * LD + 8 * j + 2 * cq] = acc[j][0], mine[gq * LD + 8 * j + 2 * cq + 1] = acc[j][1];
            mine[(gq + 8) * LD + 8 * j + 2 * cq] = acc[j][2], mine[(gq + 8) * LD + 8 * j + 2 * cq + 1] = acc[j][3];
        }
        __syncthreads();
        // the block's TP 16 rows by NS sequences, rows fastest: neighbouring threads write (and read, in out)
        // neighbouring addresses of a sequence's row-major output and state, not ones a sequence apart
        for (int o = (int)threadIdx.x; o < TP * 16 * NS; o += DEC_THREADS) {
            const int rr = o % (TP * 16), bb = o / (TP * 16), s = rr / 16; // s: the item of the block's TP
            const int r = (base + s) % tiles * 16 + rr % 16, b = b0 + bb;
            if (base + s >= items || r >= rows || b >= B) continue;
            float v = 0.0f;
            for (int q = 0; q < KW; q++)
                v += red[((size_t)(s * KW + q) * 16 + rr % 16) * LD + bb];
            out(r, b, v * row_scale(scale, r));
        }
        __syncthreads(); // (red is rewritten by the next tile)
    }
}

// rs[b] = 1 / rms(x_b) for b < B, a warp per sequence (the squares summed in double; D a multiple of 4), each lane
// reading float4s, its RSTD_UNROLL reads issued at once; then a block barrier
#define RSTD_UNROLL 6
__device__ static void block_rstd(float *rs, const float *x, int B, int D, float eps) {
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    for (int b = warp; b < B; b += DEC_WARPS) {
        const float *xb = x + (size_t)b * D;
        double ss = 0.0;
        for (int d0 = 4 * lane; d0 < D; d0 += 128 * RSTD_UNROLL) {
            float4 q[RSTD_UNROLL];
#pragma unroll
            for (int u = 0; u < RSTD_UNROLL; u++)
                q[u] =
                    d0 + 128 * u < D ? *reinterpret_cast<const float4 *>(xb + d0 + 128 * u) : make_float4(0, 0, 0, 0);
#pragma unroll
            for (int u = 0; u < RSTD_UNROLL; u++)
                ss += (double)q[u].x * q[u].x + (double)q[u].y * q[u].y + (double)q[u].z * q[u].z +
                      (double)q[u].w * q[u].w;
        }
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(DEC_FULL, ss, off);
        if (lane == 0) rs[b] = 1.0f / sqrtf((float)(ss / D) + eps);
    }
    __syncthreads();
}

// ---- shared memory ---------------------------------------------------------------------------------------------
// FFMA form: sh [NB, wide] floats (a normalized input, or an activation staged), red [DEC_WARPS, DEC_MAX_B]
// doubles (the norm's partial sums; a block-per-row product's per-warp sums, as floats). Tensor-core form: tc_gemm's
// stage and partial tiles, then rs [NB, DEC_MAX_G] (the norms' scales: per sequence, or per sequence and group). wide:
// the longest product input (max(d_model, d_inner)).
struct DecSmem {
    float *sh, *red, *rs;
};
template <int NB> __device__ __forceinline__ static DecSmem dec_smem(unsigned char *smem, int wide) {
    DecSmem m;
    m.sh = reinterpret_cast<float *>(smem);
    m.red = m.sh + (size_t)(NB < DEC_MAX_B ? NB : DEC_MAX_B) * wide;
    m.rs = reinterpret_cast<float *>(smem + tc_stage_bytes(NB, wide < TC_KC ? wide : TC_KC) + tc_red_bytes(NB));
    return m;
}
// The FFMA form's NB for B sequences: B rounded up to a power of two (a warp's sums; sh's rows)
__host__ __device__ static inline int dec_nb(int B) { return B <= 1 ? 1 : B <= 2 ? 2 : B <= 4 ? 4 : 8; }
// its size for B sequences (FFMA up to DEC_MAX_B, NB = dec_nb(B): at batch 1 sh is a row, and the room it leaves
// stages weights; tensor cores beyond: NB 16, 32 or 64)
__host__ __device__ static inline size_t dec_smem_bytes(int B, int wide) {
    const int nb = B <= 16 ? 16 : B <= 32 ? 32 : 64;
    if (B <= DEC_MAX_B) return sizeof(float) * ((size_t)dec_nb(B) * wide + 2 * DEC_WARPS * DEC_MAX_B);
    return tc_stage_bytes(nb, wide < TC_KC ? wide : TC_KC) + tc_red_bytes(nb) + sizeof(float) * nb * DEC_MAX_G;
}

// A stage of tc_gemm, [ns][ldx] bf16 for the kc columns from k0 (kc a multiple of 8) of sequences b0 .. b0 + ns - 1:
// row b - b0 holds f(v, b, k) for b < B, the 8 values from column k (k0 <= k < k0 + kc) of sequence b, rounded; rows of
// b >= B zeros. Each thread takes pieces of 8 in turn, TC_STAGE_UNROLL at once, their loads issued before any of
// their stores: the loads read global memory through generic pointers, which the compiler may not move past a store
// to shared memory, so written one piece at a time each would wait on its own latency. (2, not 4: 4 pieces' 32 floats
// spilled 460 bytes at batch 64, and 2 measured 4% faster there: 1.32-1.34 ms against 1.38, H100, 2026-12-07.)
#define TC_STAGE_UNROLL 2
template <class F>
__device__ __forceinline__ static void tc_stage8(uint16_t *st, int ldx, int k0, int kc, int b0, int ns, int B, F f) {
    const int pr = kc / 8, n = ns * pr; // pieces a row, in all
    for (int i0 = (int)threadIdx.x; i0 < n; i0 += TC_STAGE_UNROLL * DEC_THREADS) {
        float v[TC_STAGE_UNROLL][8];
#pragma unroll
        for (int u = 0; u < TC_STAGE_UNROLL; u++) {
            const int i = i0 + u * DEC_THREADS, b = b0 + i / pr;
            if (i < n && b < B)
                f(v[u], b, k0 + (i % pr) * 8);
            else
#pragma unroll
                for (int j = 0; j < 8; j++)
                    v[u][j] = 0.0f;
        }
#pragma unroll
        for (int u = 0; u < TC_STAGE_UNROLL; u++) {
            const int i = i0 + u * DEC_THREADS;
            if (i < n) {
                uint4 q;
                q.x = bf16_rn(v[u][0]) | (uint32_t)bf16_rn(v[u][1]) << 16;
                q.y = bf16_rn(v[u][2]) | (uint32_t)bf16_rn(v[u][3]) << 16;
                q.z = bf16_rn(v[u][4]) | (uint32_t)bf16_rn(v[u][5]) << 16;
                q.w = bf16_rn(v[u][6]) | (uint32_t)bf16_rn(v[u][7]) << 16;
                *reinterpret_cast<uint4 *>(st + (size_t)(i / pr) * ldx + (i % pr) * 8) = q;
            }
        }
    }
}

// tc_gemm's stages: u = x_b rs_b w, the RMSNorm of x with its scales rs; or an activation as it is (rows of a multiple
// of 8 floats at 32-byte aligned offsets: D and the inner widths are multiples of 16 in the tensor-core form)
struct StageNorm {
    const float *x, *rs, *w;
    int B, D;
    __device__ void operator()(uint16_t *st, int ldx, int k0, int kc, int b0, int ns) const {
        tc_stage8(st, ldx, k0, kc, b0, ns, B, [&](float(&v)[8], int b, int k) {
            float xv[8], wv[8];
            load8(xv, x + (size_t)b * D + k), load8(wv, w + k);
            const float r = rs[b];
#pragma unroll
            for (int j = 0; j < 8; j++)
                v[j] = xv[j] * r * wv[j];
        });
    }
};
struct StageAct {
    const float *src;
    int ld, B;
    __device__ void operator()(uint16_t *st, int ldx, int k0, int kc, int b0, int ns) const {
        tc_stage8(st, ldx, k0, kc, b0, ns, B, [&](float(&v)[8], int b, int k) { load8(v, src + (size_t)b * ld + k); });
    }
};

// dec_residual_proj's FFMA fill of an activation as it is: the n floats of src (dense [B, K]) into sm.sh
struct FillAct {
    const float *src;
    size_t n;
    __device__ void operator()(float *dst) const {
        for (size_t i = threadIdx.x; i < n; i += DEC_THREADS)
            dst[i] = src[i];
    }
};

// ---- the ends of a step ----------------------------------------------------------------------------------------
// x = emb[token] for each sequence (the caller's grid barrier publishes it)
__device__ static void dec_embed(float *x, const float *emb, const int *tokens, int B, int D) {
    const size_t n = (size_t)gridDim.x * DEC_THREADS, t = (size_t)blockIdx.x * DEC_THREADS + threadIdx.x;
    for (size_t i = t; i < (size_t)B * D; i += n)
        x[i] = emb[(size_t)tokens[i / D] * D + i % D];
}

// logits [B, V] = head (rmsnorm(x) norm_w), every block normalizing x itself
template <int NB, typename W, bool TC>
__device__ static void dec_head(float *logits, const W *head, const float *scale, const float *norm_w, const float *x,
                                int V, int D, int B, float eps, const DecSmem &sm) {
    auto logit = [&](int v, int b, float s) { logits[(size_t)b * V + v] = s; };
    if constexpr (TC) {
        extern __shared__ __align__(16) unsigned char smem[];
        block_rstd(sm.rs, x, B, D, eps);
        tc_gemm<NB, NB / 16>(head, scale, V, D, B, smem, StageNorm{x, sm.rs, norm_w, B, D}, logit); // (V / 16 tiles)
    } else {
        const int lane = (int)threadIdx.x % 32, gwarp = dec_gwarp(), nwarps = (int)gridDim.x * DEC_WARPS;
        block_rmsnorm(sm.sh, reinterpret_cast<double *>(sm.red), x, norm_w, B, D, eps);
        for (int v = gwarp; v < V; v += nwarps) {
            float acc[NB];
            warp_dot<NB>(acc, head + (size_t)v * D, sm.sh, D, D, B);
            if (lane < B) logit(v, lane, pick(acc, lane) * row_scale(scale, v));
        }
    }
}

// x [B, D] += w in (+ bias) for the D rows of w [D, K]: FFMA (a warp a row, its input in sm.sh as fill() leaves it,
// [B, K] floats; the warp's rows read from staged [rows, K] when not NULL, stage_warp_rows's copy) or tensor cores
// (tc_gemm, its input through stage): a layer's out_proj with the residual add
template <int NB, typename W, bool TC, class Fill, class Stage>
__device__ static void dec_residual_proj(float *x, const W *w, const float *scale, const float *bias, int D, int K,
                                         int B, const DecSmem &sm, Fill fill, Stage stage, const W *staged) {
    auto out_add = [&](int r, int b, float v) { x[(size_t)b * D + r] += v + (bias ? bias[r] : 0.0f); };
    if constexpr (TC) {
        extern __shared__ __align__(16) unsigned char smem[];
        tc_gemm<NB, NB >= 32 ? 2 : 1>(w, scale, D, K, B, smem, stage, out_add); // (D / 16 tiles, a few dozen)
    } else {
        const int lane = (int)threadIdx.x % 32, gwarp = dec_gwarp(), nwarps = (int)gridDim.x * DEC_WARPS;
        fill(sm.sh);
        __syncthreads();
        for (int r = gwarp, k = 0; r < D; r += nwarps, k++) {
            // x's value and the bias read before the row's product, not after it (one latency less on the chain)
            const float xr = lane < B ? x[(size_t)lane * D + r] : 0.0f, br = bias ? bias[r] : 0.0f;
            float acc[NB];
            warp_dot<NB>(acc, staged ? staged + (size_t)k * K : w + (size_t)r * K, sm.sh, K, K, B);
            if (lane < B) x[(size_t)lane * D + r] = xr + (pick(acc, lane) * row_scale(scale, r) + br);
        }
    }
}

// The bound context with its device's attributes asked (once: a decode step checks them at every launch)
static inline const cuda_ctx *dec_device(void) {
    cuda_ctx *c = cuda_ctx_now();
    if (!c->dev_sms) {
        CUDA_CHECK(cudaDeviceGetAttribute(&c->dev_coop, cudaDevAttrCooperativeLaunch, c->device));
        CUDA_CHECK(cudaDeviceGetAttribute(&c->dev_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
        CUDA_CHECK(cudaDeviceGetAttribute(&c->dev_sms, cudaDevAttrMultiProcessorCount, c->device));
    }
    return c;
}

// the current device's multiprocessors: dec_launch's unit, and the grid (one block each) decode_step.stage is sized for
static inline int dec_sms(void) { return dec_device()->dev_sms; }

// Blocks per SM: 1 unless SSM_DECODE_BLOCKS_PER_SM says more (a tuning knob: more warps keep more reads in flight,
// a grid barrier waits for more blocks), at most what fits.
static int blocks_per_sm(int fits) {
    const char *e = getenv("SSM_DECODE_BLOCKS_PER_SM");
    int want = e && atoi(e) > 0 ? atoi(e) : 1;
    return want < fits ? want : fits;
}

// kernel<<<the grid, DEC_THREADS, smem>>>(*a, layers) as a cooperative launch: one block an SM (or
// SSM_DECODE_BLOCKS_PER_SM), sized once per kernel and shared memory size and kept in the context. 0 when it was
// queued; -1 when the device refused it (said once on stderr; the caller then decodes op by op), the error cleared.
template <typename Args, typename Layer>
static int dec_launch(void (*kernel)(Args, const Layer *), const Args *a, const Layer *layers, size_t smem) {
    cuda_ctx *c = cuda_ctx_now();
    if (c->dec_kernel != (const void *)kernel || c->dec_smem != smem) { // the grid, once per kernel and size
        CUDA_CHECK(cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        const int sms = dec_sms();
        int fits;
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fits, (const void *)kernel, DEC_THREADS, smem));
        c->dec_kernel = (const void *)kernel, c->dec_smem = smem;
        c->dec_blocks = fits > 0 ? sms * blocks_per_sm(fits) : 0;
    }
    const cudaError_t err = c->dec_blocks > 0
                                ? coop_launch(kernel, (unsigned)c->dec_blocks, DEC_THREADS, smem, *a, layers)
                                : cudaErrorCooperativeLaunchTooLarge;
    if (err == cudaSuccess) return 0;
    (void)cudaGetLastError(); // (a launch error is not sticky: clear it for the op-by-op step)
    if (!c->dec_refused)
        fprintf(stderr,
                "ssm: the fused decode kernel was refused (%s, %d blocks, %zu bytes of shared memory): "
                "decoding op by op\n",
                cudaGetErrorString(err), c->dec_blocks, smem);
    c->dec_refused = 1;
    return -1;
}

// The launch of kernel family K (K::get<NB, W, TC>(): the kernel for NB sequences, weights W, tensor cores or not)
// for a->st.B sequences and weights a->st.wdt: NB = B rounded up to a power of two (FFMA), or to 16, 32 or 64 (tensor
// cores: bf16 and int8 weights only, float32 would be rounded; the caller declined those sizes). dec_launch's result.
template <class K, typename W, typename Args, typename Layer>
static int dec_launch_b(const Args *a, const Layer *layers, size_t smem) {
    if (a->st.B == 1) return dec_launch(K::template get<1, W, false>(), a, layers, smem);
    if (a->st.B == 2) return dec_launch(K::template get<2, W, false>(), a, layers, smem);
    if (a->st.B <= 4) return dec_launch(K::template get<4, W, false>(), a, layers, smem);
    if (a->st.B <= 8) return dec_launch(K::template get<8, W, false>(), a, layers, smem);
    if constexpr (!std::is_same<W, float>::value) {
        if (a->st.B <= 16) return dec_launch(K::template get<16, W, true>(), a, layers, smem);
        if (a->st.B <= 32) return dec_launch(K::template get<32, W, true>(), a, layers, smem);
        return dec_launch(K::template get<64, W, true>(), a, layers, smem);
    }
    return -1;
}
template <class K, typename Args, typename Layer>
static int dec_launch_w(const Args *a, const Layer *layers, size_t smem) {
    if (a->st.wdt == MAT_BF16) return dec_launch_b<K, uint16_t>(a, layers, smem);
    if (a->st.wdt == MAT_I8) return dec_launch_b<K, int8_t>(a, layers, smem);
    return dec_launch_b<K, float>(a, layers, smem);
}

// the SSM_DECODE_PREFETCH switch (a tuning knob): 0 off, else (the default) each layer's weights into L2 a layer ahead
static inline int dec_prefetch_on(void) {
    const char *pf = getenv("SSM_DECODE_PREFETCH");
    return !(pf && strcmp(pf, "0") == 0);
}

// the SSM_DECODE_STAGE switch (a tuning knob): 0 off, else (the default) weights staged in shared memory where the
// kind does it and they fit
static inline int dec_stage_on(void) {
    const char *e = getenv("SSM_DECODE_STAGE");
    return !(e && strcmp(e, "0") == 0);
}

// 0 when the GPU takes a cooperative launch with smem bytes of shared memory a block
static inline int dec_fits(size_t smem) {
    const cuda_ctx *c = dec_device();
    return c->dev_coop && smem <= (size_t)c->dev_smem_optin ? 0 : -1;
}

// A kernel's shared memory: its buffers' smem bytes and st->stage's for staged weights, which are dropped (stage 0)
// where the two do not fit together: staging is a choice
static inline size_t dec_smem_staged(decode_step *st, size_t smem) {
    if (st->stage && dec_fits(smem + st->stage)) st->stage = 0;
    return smem + st->stage;
}

// What both entry points do once their kind's limits passed: the tensor-core form's limits (d_model and the inner
// width multiples of 16, no float32 weights), the shared memory and whether it fits, the layer table's device copy,
// the launch. -1 where the sizes or the device decline (nothing queued).
template <class K, typename Layer, typename Args> static int dec_run(const Args *args, int inner) {
    Args a_ = *args;
    const Args *a = &a_;
    const int D = a->st.D;
    if (a->st.B > DEC_MAX_B && (a->st.B > DEC_TC_MAX_B || a->st.wdt == MAT_F32 || D % 16 || inner % 16)) return -1;
    const size_t smem = dec_smem_staged(&a_.st, dec_smem_bytes(a->st.B, D > inner ? D : inner));
    if (dec_fits(smem)) return -1;
    cuda_ctx *c = cuda_ctx_now();
    const Layer *layers = (const Layer *)cuda_ctx_table(c, a->layers, sizeof(Layer) * a->st.n_layer);
    a_.st.trace = dec_trace_buffer(1 + K::period * a->st.n_layer, c->device, DEC_THREADS);
    const int rc = dec_launch_w<K>(a, layers, smem);
    if (rc == 0 && a->st.trace) dec_trace_report(a->st.trace, K::period, K::labels, a->st.n_layer, c->dec_blocks);
    return rc;
}

#endif
