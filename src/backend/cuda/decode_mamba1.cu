// One decode step of a stack of Mamba-1 layers as one persistent kernel (m1_decode_args in ops.h; its reference is
// model.c's op-by-op step, which the GPU tests compare it with). At batch 1 a step reads every weight once (d768 x
// 24: 363 MB in float32, 181 MB in bf16, 42 us at the H200's 4.3 TB/s), but op by op it is ~10 kernels a layer whose
// launches and tails, not the reads, set the time (0.59 ms). Here one cooperative launch walks every layer, and
// grid_sync() separates the phases that need a whole vector the previous phase wrote:
//   embed:      x = emb[token]                                                                          | sync
//   per layer:
//   A in_proj:  every block normalizes x into shared memory (u = rmsnorm(x) w: D floats a sequence, recomputed
//               by each block rather than synchronized); a warp per row r of in_proj: v = in_proj[r] . u (+ bias).
//               A row r < E (the x half) goes straight on through channel r's conv step (its K-1 past inputs in
//               conv_state) and SiLU into xs; the rest is the gate z                                     | sync
//   B x_proj:   a block per row p, its warps splitting the E columns (summed in warp order): dbc_p = x_proj[p] . xs
//               (only R + 2N rows: a warp each would leave the grid idle on one long row)                | sync
//   C scan:     NP lanes per channel (N rounded up to a power of two; in the tensor-core form a thread per channel):
//               dt = softplus(dt_w[e] . dt_low + dt_b); h_n = exp(dt A_n) h_n + dt x B_n in place;
//               y = sum_n C_n h_n + D x; g = y silu(z)                                                   | sync
//   D out_proj: every block stages g in shared memory; a warp per row r: x_r += out_proj[r] . g (+ bias): the
//               residual add that op by op the next layer's norm does                                    | sync
//   head:       every block normalizes x (norm_f); a warp per row v: logits_v = head[v] . u.
// (That is the FFMA form; in the tensor-core form below every product is tc_gemm's, 16-row tiles dealt to blocks.)
// Each layer's matrices are asked into L2 (prefetch) as the previous layer starts, so that they stream from memory
// while the grid waits at barriers and its reads hit L2 (m1_decode_args.prefetch; SSM_DECODE_PREFETCH=0: off).
// Weights float32, bf16, or int8 with a scale per row (the sums scaled once, as matmul_xwT's int8 form). Up to
// DEC_MAX_B = 8 sequences share each weight read in FFMA (a warp keeps NB sums, NB = B rounded up to a power of two);
// 9 to 64 (bf16 and int8 weights) take the tensor-core form (tc_gemm: 16-row tiles of m16n8k16 products, the
// activations in bf16 as the op-by-op bf16 GEMMs have them). Every sum has a fixed order (the same bits on every run
// and any grid); rows are dealt to warps or blocks in turn, so the grid's size sets the speed only. The elementwise
// functions are the accurate ones of the CPU (expf, log1pf), not the scan kernels' fast forms: the results match the
// op-by-op step to float rounding, not bitwise.
#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
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
#define DEC_FULL 0xffffffffu

// A weight as a float: float32, or bf16 (stored as its 16 bits: the upper half of the float's)
__device__ __forceinline__ static float wload(const float *w, size_t i) { return w[i]; }
__device__ __forceinline__ static float wload(const uint16_t *w, size_t i) {
    return __uint_as_float((uint32_t)w[i] << 16);
}
__device__ __forceinline__ static float wload(const int8_t *w, size_t i) { return (float)w[i]; }
// a row's scale: int8 weights' (their dot products are scaled once, as matmul_xwT's), 1 for the others
__device__ __forceinline__ static float row_scale(const float *s, int r) { return s ? s[r] : 1.0f; }

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

// A layer's matrices into L2: a layer ahead of their reads, they stream from memory while the grid waits at barriers
template <typename W>
__device__ __forceinline__ static void prefetch_layer(const m1_decode_layer &L, const m1_decode_args &a, size_t gthread,
                                                      size_t nthreads) {
    const size_t D = a.D, E = a.E, P = a.R + 2 * a.N;
    prefetch_range(L.in_proj, sizeof(W) * 2 * E * D, gthread, nthreads);
    prefetch_range(L.x_proj, sizeof(W) * P * E, gthread, nthreads);
    prefetch_range(L.dt_w, sizeof(W) * E * a.R, gthread, nthreads);
    prefetch_range(L.out_proj, sizeof(W) * D * E, gthread, nthreads);
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

// u[b * D + d] = x[b, d] / rms(x_b) * w[d] for b < B into shared memory, a warp per sequence (the squares summed in
// double, as the op-by-op norm sums them); then a block barrier.
__device__ static void block_rmsnorm(float *u, const float *x, const float *w, int B, int D, float eps) {
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    for (int b = warp; b < B; b += DEC_WARPS) {
        const float *xb = x + (size_t)b * D;
        double ss = 0.0;
        for (int d = lane; d < D; d += 32)
            ss += (double)xb[d] * xb[d];
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(DEC_FULL, ss, off);
        const float s = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int d = lane; d < D; d += 32)
            u[(size_t)b * D + d] = xb[d] * s * w[d];
    }
    __syncthreads();
}

__device__ __forceinline__ static float sigmoid_ref(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ static float softplus_ref(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

// ---- the tensor-core form (9 to 64 sequences) ----------------------------------------------------------------
// A product is out[r][b] = w[r] . x_b for 16-row tiles of w (tiles dealt to blocks in turn): x staged in shared
// memory as bf16 [NB][KC + 8] (a chunk of at most TC_KC of the K values at a time; the padding spreads ldmatrix's
// rows over the banks), the block's warps splitting the tile's K in steps of 16 (warp q: steps q, q + 16, ...), each
// step an m16n8k16 product per 8 sequences (A: 16 rows of w from global memory, 4 bytes a lane per register; B: x via
// ldmatrix), the warps' partial tiles then summed in warp order through shared memory. bf16 or int8 weights (int8
// converted exactly to bf16); the activations rounded to bf16, as the op-by-op bf16 GEMMs round them.
#define TC_KC 768
__host__ __device__ static constexpr size_t tc_stage_bytes(int nb, int kc) { return sizeof(uint16_t) * nb * (kc + 8); }
__host__ __device__ static constexpr size_t tc_red_bytes(int nb) { return sizeof(float) * DEC_WARPS * 16 * nb; }

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

template <int NB, typename W, class Stage, class Out>
__device__ static void tc_gemm(const W *w, const float *scale, int rows, int K, int B, unsigned char *sm, Stage stage,
                               Out out) {
    constexpr int NT = NB / 8; // 8-sequence tiles of the product
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, gq = lane >> 2, cq = lane & 3;
    const int KC = K < TC_KC ? K : TC_KC, ldx = KC + 8, chunks = (K + KC - 1) / KC, tiles = (rows + 15) / 16;
    uint16_t *xs = reinterpret_cast<uint16_t *>(sm);                     // [NB][ldx]
    float *red = reinterpret_cast<float *>(sm + tc_stage_bytes(NB, KC)); // [DEC_WARPS][16][NB]
    int staged = -1;
    for (int t = (int)blockIdx.x; t < tiles; t += (int)gridDim.x) {
        const int r0 = t * 16;
        const bool lo = r0 + gq < rows, hi = r0 + gq + 8 < rows;
        const W *w0 = w + (size_t)(r0 + gq) * K + 2 * cq, *w1 = w0 + (size_t)8 * K;
        float acc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
            acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        for (int ch = 0; ch < chunks; ch++) {
            const int k0 = ch * KC, kc = K - k0 < KC ? K - k0 : KC;
            if (staged != ch) { // (one chunk: staged once for all of this block's tiles)
                __syncthreads();
                stage(xs, ldx, k0, kc);
                __syncthreads();
                staged = ch;
            }
            for (int ks = warp * 16; ks < kc; ks += DEC_WARPS * 16) {
                const size_t k = (size_t)k0 + ks;
                uint32_t A[4];
                A[0] = lo ? ld_pair(w0, k) : 0u, A[1] = hi ? ld_pair(w1, k) : 0u;
                A[2] = lo ? ld_pair(w0, k + 8) : 0u, A[3] = hi ? ld_pair(w1, k + 8) : 0u;
#pragma unroll
                for (int j = 0; j < NT; j += 2) { // matrices: (tile j, k 0-7), (j, 8-15), (j + 1, 0-7), (j + 1, 8-15)
                    const int i = lane >> 3;
                    uint32_t Bf[4];
                    ldsm_x4(Bf, xs + (size_t)(8 * (j + (i >> 1)) + (lane & 7)) * ldx + ks + (i & 1) * 8);
                    mma(acc[j], A, Bf[0], Bf[1]);
                    mma(acc[j + 1], A, Bf[2], Bf[3]);
                }
            }
        }
        float *mine = red + (size_t)warp * 16 * NB; // this warp's partial tile [16][NB]
#pragma unroll
        for (int j = 0; j < NT; j++) {
            mine[gq * NB + 8 * j + 2 * cq] = acc[j][0], mine[gq * NB + 8 * j + 2 * cq + 1] = acc[j][1];
            mine[(gq + 8) * NB + 8 * j + 2 * cq] = acc[j][2], mine[(gq + 8) * NB + 8 * j + 2 * cq + 1] = acc[j][3];
        }
        __syncthreads();
        for (int o = (int)threadIdx.x; o < 16 * NB; o += DEC_THREADS) {
            const int r = r0 + o / NB, b = o % NB;
            if (r >= rows || b >= B) continue;
            float v = 0.0f;
            for (int q = 0; q < DEC_WARPS; q++)
                v += red[(size_t)q * 16 * NB + o];
            out(r, b, v * row_scale(scale, r));
        }
        __syncthreads(); // (red is rewritten by the next tile)
    }
}

// rs[b] = 1 / rms(x_b) for b < B, a warp per sequence (the squares summed in double); then a block barrier
__device__ static void block_rstd(float *rs, const float *x, int B, int D, float eps) {
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    for (int b = warp; b < B; b += DEC_WARPS) {
        double ss = 0.0;
        for (int d = lane; d < D; d += 32)
            ss += (double)x[(size_t)b * D + d] * x[(size_t)b * D + d];
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(DEC_FULL, ss, off);
        if (lane == 0) rs[b] = 1.0f / sqrtf((float)(ss / D) + eps);
    }
    __syncthreads();
}

// ---- the kernel ------------------------------------------------------------------------------------------------
// in_proj's value v (scaled) of row r for sequence b: the x half (r < E) through the conv step (conv1d_silu_step's
// order: bias, the K-1 past inputs, this one) and SiLU into xs; the gate half into z
__device__ __forceinline__ static void in_proj_out(const m1_decode_layer &L, int E, int K, float *xs, float *z, int r,
                                                   int b, float v) {
    v += L.in_b ? L.in_b[r] : 0.0f;
    if (r >= E) {
        z[(size_t)b * E + (r - E)] = v;
        return;
    }
    float *st = L.conv_state + ((size_t)b * E + r) * (K - 1);
    const float *wc = L.conv_w + (size_t)r * K;
    float c = L.conv_b ? L.conv_b[r] : 0.0f;
    for (int k = 0; k < K - 1; k++)
        c += wc[k] * st[k];
    c += wc[K - 1] * v;
    xs[(size_t)b * E + r] = c * sigmoid_ref(c);
    for (int k = 0; k + 1 < K - 1; k++)
        st[k] = st[k + 1];
    st[K - 2] = v;
}

template <int NB, typename W, bool TC>
__global__ static void __launch_bounds__(DEC_THREADS)
    m1_decode_kernel(m1_decode_args a, const m1_decode_layer *layers) {
    extern __shared__ __align__(16) unsigned char smem[];
    const int B = a.B, D = a.D, E = a.E, N = a.N, R = a.R, K = a.K, P = R + 2 * N;
    // FFMA form: [DEC_MAX_B, max(D, E)] floats (u, or g), then [DEC_WARPS, NB] (x_proj's per-warp sums); tensor-core
    // form: tc_gemm's stage and partial tiles, then rs [NB] (the rmsnorm's scales)
    float *sh = reinterpret_cast<float *>(smem);
    float *red = sh + (size_t)DEC_MAX_B * (D > E ? D : E);
    const int KCmax = (D > E ? D : E) < TC_KC ? (D > E ? D : E) : TC_KC;
    float *rs = reinterpret_cast<float *>(smem + tc_stage_bytes(NB, KCmax) + tc_red_bytes(NB));
    float *x = a.work, *xs = x + (size_t)B * D, *z = xs + (size_t)B * E, *g = z + (size_t)B * E;
    float *dbc = g + (size_t)B * E; // [B, P]: dt_low | B | C
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int gwarp = (int)blockIdx.x * DEC_WARPS + warp, nwarps = (int)gridDim.x * DEC_WARPS;
    const size_t nthreads = (size_t)gridDim.x * DEC_THREADS, gthread = (size_t)blockIdx.x * DEC_THREADS + threadIdx.x;
    int NP = 1;
    while (NP < N)
        NP <<= 1;
    // the tensor-core form's stages: rows b >= B zero; u = rmsnorm(x) w from rs, or a float32 activation as it is
    auto stage_norm = [&](const float *nw) {
        return [=](uint16_t *st, int ldx, int k0, int kc) {
            for (int i = (int)threadIdx.x; i < NB * kc; i += DEC_THREADS) {
                const int b = i / kc, k = i % kc;
                st[(size_t)b * ldx + k] = b < B ? bf16_rn(x[(size_t)b * D + k0 + k] * rs[b] * nw[k0 + k]) : 0;
            }
        };
    };
    auto stage_act = [&](const float *src, int ld) {
        return [=](uint16_t *st, int ldx, int k0, int kc) {
            for (int i = (int)threadIdx.x; i < NB * kc; i += DEC_THREADS) {
                const int b = i / kc, k = i % kc;
                st[(size_t)b * ldx + k] = b < B ? bf16_rn(src[(size_t)b * ld + k0 + k]) : 0;
            }
        };
    };

    if (a.prefetch) prefetch_layer<W>(layers[0], a, gthread, nthreads);
    for (size_t i = gthread; i < (size_t)B * D; i += nthreads)
        x[i] = a.emb[(size_t)a.tokens[i / D] * D + i % D];
    grid_sync();
    for (int l = 0; l < a.n_layer; l++) {
        const m1_decode_layer &L = layers[l];
        if (a.prefetch && l + 1 < a.n_layer) prefetch_layer<W>(layers[l + 1], a, gthread, nthreads);
        if (a.prefetch && l + 1 == a.n_layer) prefetch_range(a.head, sizeof(W) * a.V * D, gthread, nthreads);
        // A: u = rmsnorm(x) w; xz = in_proj(u) (+ bias); the x half through the conv step and SiLU
        if constexpr (TC) {
            block_rstd(rs, x, B, D, a.eps);
            tc_gemm<NB>((const W *)L.in_proj, L.in_s, 2 * E, D, B, smem, stage_norm(L.norm_w),
                        [&](int r, int b, float v) { in_proj_out(L, E, K, xs, z, r, b, v); });
        } else {
            block_rmsnorm(sh, x, L.norm_w, B, D, a.eps);
            for (int r = gwarp; r < 2 * E; r += nwarps) {
                float acc[NB];
                warp_dot<NB>(acc, (const W *)L.in_proj + (size_t)r * D, sh, D, D, B);
                if (lane < B) in_proj_out(L, E, K, xs, z, r, lane, pick(acc, lane) * row_scale(L.in_s, r));
            }
        }
        grid_sync();
        // B: dbc = x_proj(xs), a block per row (only R + 2N rows: a warp each would leave the grid idle)
        if constexpr (TC) {
            tc_gemm<NB>((const W *)L.x_proj, L.x_s, P, E, B, smem, stage_act(xs, E),
                        [&](int r, int b, float v) { dbc[(size_t)b * P + r] = v; });
        } else {
            for (int p = (int)blockIdx.x; p < P; p += (int)gridDim.x) {
                const W *wr = (const W *)L.x_proj + (size_t)p * E;
                float acc[NB];
#pragma unroll
                for (int b = 0; b < NB; b++)
                    acc[b] = 0.0f;
                for (int k = (int)threadIdx.x * 8; k < E; k += DEC_THREADS * 8) {
                    float v[8];
                    load8(v, wr + k);
                    fma8(acc, v, xs + k, E, B);
                }
                warp_sum(acc);
                if (lane == 0)
#pragma unroll
                    for (int b = 0; b < NB; b++)
                        red[warp * NB + b] = acc[b];
                __syncthreads();
                if ((int)threadIdx.x < B) {
                    float s = 0.0f;
                    for (int w = 0; w < DEC_WARPS; w++)
                        s += red[w * NB + threadIdx.x];
                    dbc[(size_t)threadIdx.x * P + p] = s * row_scale(L.x_s, p);
                }
                __syncthreads();
            }
        }
        grid_sync();
        // C: dt, the scan step and the gate. Many sequences (the tensor-core form): a thread per (sequence, channel),
        // its N states in registers, so that each thread has many independent reads in flight; few: NP lanes per
        // (sequence, channel), so that a batch of one still spreads over the grid; every lane of a warp then takes
        // the same number of turns (base is warp-aligned) for the shuffles
        if constexpr (TC) {
            for (size_t i = gthread; i < (size_t)B * E; i += nthreads) {
                const int b = (int)(i / E), e = (int)(i % E);
                const float *lo = dbc + (size_t)b * P;
                float s = 0.0f;
                for (int r = 0; r < R; r++)
                    s += wload((const W *)L.dt_w, (size_t)e * R + r) * lo[r];
                const float dt = softplus_ref(s * row_scale(L.dt_s, e) + L.dt_b[e]), xv = xs[i];
                float *hp = L.scan_state + i * N, c = 0.0f;
#pragma unroll
                for (int n = 0; n < DEC_MAX_N; n++)
                    if (n < N) {
                        const float h = hp[n] * expf(dt * L.At[(size_t)n * E + e]) + dt * xv * lo[R + n];
                        hp[n] = h;
                        c += lo[R + N + n] * h;
                    }
                const float zv = z[i];
                g[i] = (c + L.Dv[e] * xv) * zv * sigmoid_ref(zv);
            }
        } else {
            for (size_t base = gthread - lane; base < (size_t)B * E * NP; base += nthreads) {
                const size_t t = base + lane, i = t / NP; // i = b * E + e
                const int n = (int)(t % NP);
                const bool live = i < (size_t)B * E;
                const int b = live ? (int)(i / E) : 0, e = live ? (int)(i % E) : 0;
                const float *lo = dbc + (size_t)b * P; // dt_low [R], B [N], C [N]
                float s = 0.0f;
                if (live)
                    for (int r = n; r < R; r += NP)
                        s += wload((const W *)L.dt_w, (size_t)e * R + r) * lo[r];
                for (int off = NP / 2; off > 0; off >>= 1)
                    s += __shfl_xor_sync(DEC_FULL, s, off);
                const float dt = softplus_ref(live ? s * row_scale(L.dt_s, e) + L.dt_b[e] : 0.0f),
                            xv = live ? xs[i] : 0.0f;
                float c = 0.0f;
                if (live && n < N) {
                    float *hp = L.scan_state + i * N + n;
                    const float h = *hp * expf(dt * L.At[(size_t)n * E + e]) + dt * xv * lo[R + n];
                    *hp = h;
                    c = lo[R + N + n] * h;
                }
                for (int off = NP / 2; off > 0; off >>= 1)
                    c += __shfl_xor_sync(DEC_FULL, c, off);
                if (live && n == 0) {
                    const float zv = z[i];
                    g[i] = (c + L.Dv[e] * xv) * zv * sigmoid_ref(zv);
                }
            }
        }
        grid_sync();
        // D: x += out_proj(g) (+ bias)
        auto out_add = [&](int r, int b, float v) { x[(size_t)b * D + r] += v + (L.out_b ? L.out_b[r] : 0.0f); };
        if constexpr (TC) {
            tc_gemm<NB>((const W *)L.out_proj, L.out_s, D, E, B, smem, stage_act(g, E), out_add);
        } else {
            for (size_t i = threadIdx.x; i < (size_t)B * E; i += DEC_THREADS)
                sh[i] = g[i];
            __syncthreads();
            for (int r = gwarp; r < D; r += nwarps) {
                float acc[NB];
                warp_dot<NB>(acc, (const W *)L.out_proj + (size_t)r * E, sh, E, E, B);
                if (lane < B) out_add(r, lane, pick(acc, lane) * row_scale(L.out_s, r));
            }
        }
        grid_sync();
    }
    auto logit = [&](int v, int b, float s) { a.logits[(size_t)b * a.V + v] = s; };
    if constexpr (TC) {
        block_rstd(rs, x, B, D, a.eps);
        tc_gemm<NB>((const W *)a.head, a.head_s, a.V, D, B, smem, stage_norm(a.norm_f), logit);
    } else {
        block_rmsnorm(sh, x, a.norm_f, B, D, a.eps);
        for (int v = gwarp; v < a.V; v += nwarps) {
            float acc[NB];
            warp_dot<NB>(acc, (const W *)a.head + (size_t)v * D, sh, D, D, B);
            if (lane < B) logit(v, lane, pick(acc, lane) * row_scale(a.head_s, v));
        }
    }
}

// Blocks per SM: 1 unless SSM_DECODE_BLOCKS_PER_SM says more (a tuning knob: more warps keep more reads in flight,
// a grid barrier waits for more blocks), at most what fits.
static int blocks_per_sm(int fits) {
    const char *e = getenv("SSM_DECODE_BLOCKS_PER_SM");
    int want = e && atoi(e) > 0 ? atoi(e) : 1;
    return want < fits ? want : fits;
}

template <int NB, typename W, bool TC>
static void launch(const m1_decode_args *a, const m1_decode_layer *layers, size_t smem) {
    void (*kernel)(m1_decode_args, const m1_decode_layer *) = m1_decode_kernel<NB, W, TC>;
    cuda_ctx *c = cuda_ctx_now();
    if (c->dec_kernel != (const void *)kernel || c->dec_smem != smem) { // the grid, once per kernel and size
        CUDA_CHECK(cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        int sms, fits;
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c->device));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fits, (const void *)kernel, DEC_THREADS, smem));
        c->dec_kernel = (const void *)kernel, c->dec_smem = smem;
        c->dec_blocks = fits > 0 ? sms * blocks_per_sm(fits) : 0;
    }
    if (c->dec_blocks == 0) {
        fprintf(stderr, "ssm: the fused decode kernel does not fit on the GPU (%zu bytes of shared memory)\n", smem);
        exit(2);
    }
    coop_launch(kernel, (unsigned)c->dec_blocks, DEC_THREADS, smem, *a, layers);
    CUDA_CHECK_LAUNCH();
}

// Shared memory of the kernel for B sequences (FFMA up to DEC_MAX_B, tensor cores beyond)
static size_t smem_bytes(const m1_decode_args *a) {
    const int wide = a->D > a->E ? a->D : a->E, nb = a->B <= 16 ? 16 : a->B <= 32 ? 32 : 64;
    if (a->B <= DEC_MAX_B) return sizeof(float) * ((size_t)DEC_MAX_B * wide + DEC_WARPS * DEC_MAX_B);
    return tc_stage_bytes(nb, wide < TC_KC ? wide : TC_KC) + tc_red_bytes(nb) + sizeof(float) * nb;
}

// the kernel for B sequences: NB = B rounded up to a power of two (FFMA), or to 16, 32 or 64 (tensor cores: bf16 and
// int8 weights only, float32 would be rounded)
template <typename W> static void launch_b(const m1_decode_args *a, const m1_decode_layer *layers, size_t smem) {
    if (a->B == 1)
        launch<1, W, false>(a, layers, smem);
    else if (a->B == 2)
        launch<2, W, false>(a, layers, smem);
    else if (a->B <= 4)
        launch<4, W, false>(a, layers, smem);
    else if (a->B <= 8)
        launch<8, W, false>(a, layers, smem);
    else if constexpr (!std::is_same<W, float>::value) {
        if (a->B <= 16)
            launch<16, W, true>(a, layers, smem);
        else if (a->B <= 32)
            launch<32, W, true>(a, layers, smem);
        else
            launch<64, W, true>(a, layers, smem);
    }
}

extern "C" int decode_mamba1_cuda(const m1_decode_args *args) {
    m1_decode_args a_ = *args;
    const char *pf = getenv("SSM_DECODE_PREFETCH");
    a_.prefetch = !(pf && strcmp(pf, "0") == 0);
    const m1_decode_args *a = &a_;
    if (a->B < 1 || a->N < 1 || a->N > DEC_MAX_N || a->K < 2 || a->K > DEC_MAX_K || a->R < 1 || a->D % 8 || a->E % 8)
        return -1;
    if (a->B > DEC_MAX_B && (a->B > DEC_TC_MAX_B || a->wdt == MAT_F32 || a->D % 16 || a->E % 16)) return -1;
    cuda_ctx *c = cuda_ctx_now();
    int coop = 0, smem_max = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, c->device));
    CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
    const size_t smem = smem_bytes(a);
    if (!coop || smem > (size_t)smem_max) return -1;
    const m1_decode_layer *layers =
        (const m1_decode_layer *)cuda_ctx_table(c, a->layers, sizeof(m1_decode_layer) * a->n_layer);
    if (a->wdt == MAT_BF16)
        launch_b<uint16_t>(a, layers, smem);
    else if (a->wdt == MAT_I8)
        launch_b<int8_t>(a, layers, smem);
    else
        launch_b<float>(a, layers, smem);
    return 0;
}
