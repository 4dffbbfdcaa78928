// Attention forward on tensor cores for bf16 operands: FlashAttention-2's algorithm (Dao 2023), the fast twin of
// attention.cu's attn_fwd_kernel for training's shapes (attn_flash_fwd; flash_supports says which).
//
// A block (WARPS warps) owns one tile of BM = 16 R WARPS queries of one head of one sequence; warp w owns rows
// 16 R w .. 16 R (w + 1) - 1 of it, R blocks of 16. The block walks the key/value tiles of BN keys that its queries can
// see, in order, each tile copied into shared memory by cp.async while the previous one computes (two stages). Per
// tile each warp computes, for each of its R row blocks
//   S = Q K^T           [16 x BN]  on the tensor cores (Q's A operands held in registers from the first tile on),
//   masked only where the tile needs it (the diagonal tiles, the window's left edge, the keys past T),
//   an online softmax in registers: running max m and sum l per row (each row spread over a quad of 4 lanes, the
//   max reduced by two shuffles), the accumulated O rescaled when the max grows,
//   O += P V            [16 x HD], P rounded to bf16 straight from S's accumulators (attention_flash.cuh).
// Each K or V fragment read from shared memory (ldmatrix) feeds R products: with R = 2 a tile's reads per product
// halve, where one row block per warp may be bound by shared memory's bandwidth rather than the tensor cores.
// Tiles entirely masked are never visited: the key range of a query tile is [lo, hi) with hi its last query + 1
// (causal) and lo its first query - window + 1. Scores stay in base 2 (exp2 of score * scale * log2 e). At the end O
// is divided by l, staged through the warp's own (now free) rows of the Q tile, and stored 16 bytes per lane; lse =
// m * scale + log(l), natural log as the CPU's.
//
// Numerics against the float32 kernels: Q, K, V are the bf16 operands as given (exact products, float32 sums in the
// tensor cores' order), P is rounded to bf16 for P V (FlashAttention's rounding), O rounded once at the end.
// Deterministic: every sum in a fixed order, no atomics. Query tiles are launched last first (the causal tiles with
// the most keys start first, the short ones fill the tail).
#include "backend/cuda/attention_flash.cuh"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_common.h"

#include <math.h>

using namespace flash;

// Block shapes <HD, WARPS, R row blocks of 16 per warp, BN, blocks per SM (the register cap of __launch_bounds__)>:
// 8 warps, so that 128 queries share each K/V tile read from L2; head_dim 64 with key tiles of 64 at two blocks per SM
// (capped at 128 registers: ~50 bytes spilled, yet 11-13% faster than tiles of 32 without spills: bench/flash_shapes.sh
// on an H200, 2026-12-05, docs/performance.md); head_dim 128 207 registers, one block. head_dim 64 now takes two row
// blocks a warp (4 warps of 2, 241 registers, none spilled), which halve the shared-memory reads per product: 0.275
// against 0.299 ms at 8 x 2048 and 1.802 against 1.981 at 1 x 16384 (12 heads; H100, 2026-12-07). Edit here to try
// others (bench/flash_shapes.sh; nvcc reads the commas of a -D value as a list).
#define FLASH_FWD_64 64, 4, 2, 64, 2
#define FLASH_FWD_128 128, 8, 1, 64, 1

typedef struct {
    const bf16 *q, *k, *v; // rows of ldq, ldk, ldv elements; sequence b's keys at k + b * kv_bstride
    bf16 *o;               // rows of ldo
    float *lse;            // [B, H, T] or NULL
    int ldq, ldk, ldv, ldo;
    size_t kv_bstride;
    int T, H, KV, window;
    float scale, scale_log2; // 1 / sqrt(hd), and times log2(e)
} fwd_params;

// grid (query tiles, H, B), WARPS * 32 threads, shared memory (BM + 4 BN) (HD + 8) bf16: sQ [BM], then sK and sV
// [2 stages][BN], rows of HD + 8.
template <int HD, int WARPS, int R, int BN, int MINB>
__global__ static void __launch_bounds__(WARPS * 32, MINB) flash_fwd_kernel(const fwd_params p) {
    constexpr int BM = 16 * R * WARPS, LDS = HD + 8, NT = WARPS * 32;
    constexpr int KS = HD / 16; // k-steps of S = Q K^T over the head
    constexpr int SB = BN / 8;  // 8-key blocks of S
    constexpr int OB = HD / 8;  // 8-column blocks of O
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sK = sQ + BM * LDS, *sV = sK + 2 * BN * LDS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const int T = p.T, h = blockIdx.y, b = blockIdx.z, kh = h / (p.H / p.KV);
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM, w0 = q0 + 16 * R * warp; // the block's and the warp's first row
    const int hi = min(T, q0 + BM), lo = p.window > 0 ? max(0, q0 - p.window + 1) : 0; // the tile's keys [lo, hi)
    const int j_first = lo / BN, j_end = (hi + BN - 1) / BN;
    const bf16 *kg = p.k + b * p.kv_bstride + (size_t)kh * HD, *vg = p.v + b * p.kv_bstride + (size_t)kh * HD;

    tile_load<BM, HD, NT>(sQ, p.q + ((size_t)b * T + q0) * p.ldq + (size_t)h * HD, p.ldq, T - q0, tid);
    tile_load<BN, HD, NT>(sK, kg + (size_t)j_first * BN * p.ldk, p.ldk, T - j_first * BN, tid);
    tile_load<BN, HD, NT>(sV, vg + (size_t)j_first * BN * p.ldv, p.ldv, T - j_first * BN, tid);
    cp_async_commit();

    uint32_t qa[R][KS][4];  // Q's A operands, from the first tile on
    float o[R][OB][4];      // O's accumulators [16 x HD] per row block (C layout)
    float m[R][2], l[R][2]; // running max (raw scores) of rows g and g + 8, and this lane's sums
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int ob = 0; ob < OB; ob++)
            o[r][ob][0] = o[r][ob][1] = o[r][ob][2] = o[r][ob][3] = 0.0f;
        m[r][0] = m[r][1] = -INFINITY, l[r][0] = l[r][1] = 0.0f;
    }

    for (int j = j_first; j < j_end; j++) {
        const int st = (j - j_first) & 1, kv0 = j * BN;
        if (j + 1 < j_end) { // the next tile into the other stage (free: the barrier ending the last step)
            tile_load<BN, HD, NT>(sK + (st ^ 1) * BN * LDS, kg + (size_t)(kv0 + BN) * p.ldk, p.ldk, T - kv0 - BN, tid);
            tile_load<BN, HD, NT>(sV + (st ^ 1) * BN * LDS, vg + (size_t)(kv0 + BN) * p.ldv, p.ldv, T - kv0 - BN, tid);
        }
        cp_async_commit(); // (an empty group on the last tile: the wait below stays uniform)
        cp_async_wait_prev();
        __syncthreads();
        if (j == j_first) {
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int kk = 0; kk < KS; kk++)
                    load_a<LDS>(qa[r][kk], sQ + (w0 - q0 + 16 * r) * LDS, 16 * kk, lane);
        }
        const bf16 *ks = sK + st * BN * LDS, *vs = sV + st * BN * LDS;

        // S = Q K^T, each K fragment used by the R row blocks
        float s[R][SB][4];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int sb = 0; sb < SB; sb++)
                s[r][sb][0] = s[r][sb][1] = s[r][sb][2] = s[r][sb][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int nb = 0; nb < BN / 16; nb++) {
                uint32_t kb[4];
                load_b_nk<LDS>(kb, ks, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(s[r][2 * nb], qa[r][kk], kb[0], kb[1]);
                    mma(s[r][2 * nb + 1], qa[r][kk], kb[2], kb[3]);
                }
            }
        // the mask, where some (query, key) pair of the warp's rows and the tile is not visible
        const bool masked = kv0 + BN - 1 > w0 || kv0 + BN > T || (p.window > 0 && kv0 <= w0 + 16 * R - 1 - p.window);
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int row0 = w0 + 16 * r + g, row1 = row0 + 8; // the query positions of this thread's two rows
            if (masked) {
#pragma unroll
                for (int sb = 0; sb < SB; sb++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (!visible(e < 2 ? row0 : row1, kv0 + 8 * sb + 2 * c + (e & 1), T, p.window))
                            s[r][sb][e] = -INFINITY;
            }
            // online softmax: the new row maxima (a row's 4 lanes are lanes 4g .. 4g + 3: xor 1 and 2 stay in the quad)
            float mx0 = m[r][0], mx1 = m[r][1];
#pragma unroll
            for (int sb = 0; sb < SB; sb++) {
                mx0 = fmaxf(mx0, fmaxf(s[r][sb][0], s[r][sb][1]));
                mx1 = fmaxf(mx1, fmaxf(s[r][sb][2], s[r][sb][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            // exp2 offsets: a row that has seen no key yet (max -inf) uses 0, so that exp2(-inf - 0) = 0, never NaN
            const float base0 = mx0 == -INFINITY ? 0.0f : mx0 * p.scale_log2;
            const float base1 = mx1 == -INFINITY ? 0.0f : mx1 * p.scale_log2;
            const float corr0 = exp2f(m[r][0] * p.scale_log2 - base0), corr1 = exp2f(m[r][1] * p.scale_log2 - base1);
            m[r][0] = mx0, m[r][1] = mx1;
            l[r][0] *= corr0, l[r][1] *= corr1;
#pragma unroll
            for (int ob = 0; ob < OB; ob++)
                o[r][ob][0] *= corr0, o[r][ob][1] *= corr0, o[r][ob][2] *= corr1, o[r][ob][3] *= corr1;
#pragma unroll
            for (int sb = 0; sb < SB; sb++) {
                s[r][sb][0] = exp2f(fmaf(s[r][sb][0], p.scale_log2, -base0));
                s[r][sb][1] = exp2f(fmaf(s[r][sb][1], p.scale_log2, -base0));
                s[r][sb][2] = exp2f(fmaf(s[r][sb][2], p.scale_log2, -base1));
                s[r][sb][3] = exp2f(fmaf(s[r][sb][3], p.scale_log2, -base1));
                l[r][0] += s[r][sb][0] + s[r][sb][1];
                l[r][1] += s[r][sb][2] + s[r][sb][3];
            }
        }
        // O += P V, each V fragment used by the R row blocks
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[R][4];
#pragma unroll
            for (int r = 0; r < R; r++)
                acc_to_a<SB>(pa[r], s[r], kk);
#pragma unroll
            for (int nb = 0; nb < HD / 16; nb++) {
                uint32_t vb[4];
                load_b_kn<LDS>(vb, vs, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(o[r][2 * nb], pa[r], vb[0], vb[1]);
                    mma(o[r][2 * nb + 1], pa[r], vb[2], vb[3]);
                }
            }
        }
        __syncthreads(); // every warp is done with this stage before the next step refills it
    }

    // the row sums over the quad, O / l, lse; each row block staged through the warp's own Q rows (read into
    // registers at the first tile, free now)
#pragma unroll
    for (int r = 0; r < R; r++) {
        float l0 = l[r][0], l1 = l[r][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const int r0 = w0 + 16 * r; // the row block's first query
        bf16 *so = sQ + (r0 - q0) * LDS;
        warp_acc_to_smem<OB, LDS>(so, o[r], l0 > 0.0f ? 1.0f / l0 : 0.0f, l1 > 0.0f ? 1.0f / l1 : 0.0f, lane);
        __syncwarp();
        warp_store_rows<HD>(p.o + ((size_t)b * T + r0) * p.ldo + (size_t)h * HD, p.ldo, so, T - r0, lane);
        if (p.lse && c == 0) {
            float *lse = p.lse + ((size_t)b * p.H + h) * T;
            const int row0 = r0 + g, row1 = row0 + 8;
            if (row0 < T) lse[row0] = m[r][0] * p.scale + logf(l0);
            if (row1 < T) lse[row1] = m[r][1] * p.scale + logf(l1);
        }
    }
}

template <int HD, int WARPS, int R, int BN, int MINB> static void fwd_launch(const attn_args *a, mat o) {
    constexpr int BM = 16 * R * WARPS;
    const size_t smem = sizeof(bf16) * (BM + 4 * BN) * (HD + 8);
    static size_t smem_set[FLASH_SMEM_DEVICES];
    flash_smem_limit((const void *)flash_fwd_kernel<HD, WARPS, R, BN, MINB>, smem, &smem_set);
    fwd_params p;
    p.q = (const bf16 *)a->q.p, p.k = (const bf16 *)a->k.p, p.v = (const bf16 *)a->v.p, p.o = (bf16 *)o.p;
    p.lse = a->lse;
    p.ldq = a->q.ld, p.ldk = a->k.ld, p.ldv = a->v.ld, p.ldo = o.ld, p.kv_bstride = a->kv_bstride;
    p.T = a->T, p.H = a->H, p.KV = a->KV, p.window = a->window;
    p.scale = 1.0f / sqrtf((float)a->hd), p.scale_log2 = p.scale * FLASH_LOG2E;
    flash_fwd_kernel<HD, WARPS, R, BN, MINB><<<dim3(cdiv(a->T, BM), a->H, a->B), WARPS * 32, smem>>>(p);
    CUDA_CHECK_LAUNCH();
}

int attn_flash_fwd(const attn_args *a, mat o) {
    if (!flash_supports(a, &o, 1)) return 0;
    if (a->hd == 64)
        fwd_launch<FLASH_FWD_64>(a, o);
    else
        fwd_launch<FLASH_FWD_128>(a, o);
    return 1;
}
