// Attention backward on tensor cores for bf16 operands: FlashAttention-2's recomputation from the saved lse (Dao 2023),
// the fast twin of attention.cu's attn_bwd_dq_kernel and attn_bwd_dkv_kernel for training's shapes (attn_flash_bwd;
// flash_supports says which). With P = exp(S scale - lse) recomputed from S = Q K^T, dP = dO V^T and D = rowsum(dO o O)
// (o: the elementwise product):
//   dS = P o (dP - D),   dQ = scale dS K,   dK = scale dS^T Q,   dV = P^T dO.
// Two kernels, deterministic without atomics (every gradient element has one owner that sums in a fixed order), as
// the float32 kernels: FlashAttention-2 adds dQ into float32 with atomics from the key-tile blocks, whose order varies
// from run to run; here dQ has its own kernel, which recomputes S and dP a second time (7 tile products against 5).
//
// flash_bwd_dq_kernel: a block per (query tile of BM = 16 R WARPS rows, head, sequence), warp w owning R blocks of 16
//   rows from 16 R w, as the forward: first D for its rows (dO . O, one row at a time across the warp, kept for the
//   next kernel) and lse; then over the key tiles the queries see (two cp.async stages of K and V), per warp and row
//   block S = Q K^T and dP = dO V^T [16 x BN] (Q's and dO's A operands in registers), P and dS in registers, and
//   dQ += dS K [16 x HD] (dS rounded to bf16 from the accumulators, K through ldmatrix.trans). Each K or V fragment
//   read from shared memory feeds the R row blocks' products (as in the forward).
// flash_bwd_dkv_kernel: a block per (key tile of BN = 16 R WARPS keys, kv head, sequence), K and V resident in shared
//   memory, warp w owning R blocks of 16 keys from 16 R w; it walks the query heads of the group and, for each, the
//   query tiles of BQ rows that see the key tile, in order (Q, dO, lse and D in two cp.async stages). Per step each
//   warp computes, per row block, the transposed scores S^T = K Q^T and dP^T = V dO^T [16 keys x BQ queries] (keys as
//   rows, so that P^T and dS^T are the A operands of dV += P^T dO and dK += dS^T Q without a transpose), masked where
//   the step needs it; each Q and dO fragment read feeds the R row blocks' products. GQA sums over the group inside
//   the block, so dK and dV are written once, as bf16.
// Tiles no pair of which is visible are never visited (the causal triangle, the window). Rows past T are loaded as
// zeros and never stored.
#include "backend/cuda/attention_flash.cuh"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_common.h"

#include <math.h>

using namespace flash;

// Block shapes: dQ <HD, WARPS, R row blocks of 16 per warp, BN keys per step, blocks per SM>, dK/dV <HD, WARPS, R,
// BQ queries per step, blocks per SM>. Head_dim 64: steps of 64 keys (dQ, two blocks of 8 warps per SM, ~190 bytes
// spilled) and 64 queries (dK/dV, three blocks of 4 warps), measured 6% faster than steps of 32 without spills
// (bench/flash_shapes.sh, H200, 2026-12-05); head_dim 128: 226 (one block) and 233 registers (two), none spilled. Two
// row blocks a warp (4 warps of 2, steps of 32, 242 and 255 registers, none spilled) measured mixed, so they are not
// taken: the backward 1.206 against 1.155 ms at 8 x 2048, 7.405 against 7.659 at 1 x 16384 (12 heads; H100,
// 2026-12-07). Edit here to try others (bench/flash_shapes.sh; nvcc reads the commas of a -D value as a list).
#define FLASH_DQ_64 64, 8, 1, 64, 2
#define FLASH_DQ_128 128, 8, 1, 32, 1
#define FLASH_DKV_64 64, 4, 1, 64, 3
#define FLASH_DKV_128 128, 4, 1, 32, 2

typedef struct {
    const bf16 *q, *k, *v, *o, *dout; // rows of ldq, ldk, ldv, ldo, lddo; sequence b's keys at k + b * kv_bstride
    bf16 *dq, *dk, *dv;               // rows of lddq, lddk, lddv (dk, dv: B*T rows, one per key)
    const float *lse;                 // [B, H, T]
    float *D;                         // [B, H, T]: dO . O, written by the dQ kernel, read by the dK/dV kernel
    int ldq, ldk, ldv, ldo, lddo, lddq, lddk, lddv;
    size_t kv_bstride;
    int T, H, KV, window;
    float scale, scale_log2;
} bwd_params;

// ---- dQ (and D) ----------------------------------------------------------------------------------------------------
// grid (query tiles, H, B), WARPS * 32 threads, shared memory (2 BM + 4 BN) (HD + 8) bf16: sQ, sdO [BM], then sK and
// sV [2 stages][BN].
template <int HD, int WARPS, int R, int BN, int MINB>
__global__ static void __launch_bounds__(WARPS * 32, MINB) flash_bwd_dq_kernel(const bwd_params p) {
    constexpr int BM = 16 * R * WARPS, LDS = HD + 8, NT = WARPS * 32, KS = HD / 16, SB = BN / 8, OB = HD / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sdO = sQ + BM * LDS, *sK = sdO + BM * LDS, *sV = sK + 2 * BN * LDS;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const int T = p.T, h = blockIdx.y, b = blockIdx.z, kh = h / (p.H / p.KV);
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM, w0 = q0 + 16 * R * warp; // the block's and the warp's first row
    const int hi = min(T, q0 + BM), lo = p.window > 0 ? max(0, q0 - p.window + 1) : 0;
    const int j_first = lo / BN, j_end = (hi + BN - 1) / BN;
    const size_t row_q0 = (size_t)b * T + q0;
    const bf16 *kg = p.k + b * p.kv_bstride + (size_t)kh * HD, *vg = p.v + b * p.kv_bstride + (size_t)kh * HD;

    tile_load<BM, HD, NT>(sQ, p.q + row_q0 * p.ldq + (size_t)h * HD, p.ldq, T - q0, tid);
    tile_load<BM, HD, NT>(sdO, p.dout + row_q0 * p.lddo + (size_t)h * HD, p.lddo, T - q0, tid);
    tile_load<BN, HD, NT>(sK, kg + (size_t)j_first * BN * p.ldk, p.ldk, T - j_first * BN, tid);
    tile_load<BN, HD, NT>(sV, vg + (size_t)j_first * BN * p.ldv, p.ldv, T - j_first * BN, tid);
    cp_async_commit();

    // While the copies fly: D of the warp's 16 R rows (a row at a time: 2 values per lane and step, summed by a
    // butterfly, so every lane has it), kept for this thread's rows g and g + 8 of each row block and stored for the
    // dK/dV kernel; lse in base 2. Rows past T: D = 0, lse 0 (their dO is zero: they add nothing).
    const size_t bh = ((size_t)b * p.H + h) * T;
    float D[R][2], L[R][2];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll 4
        for (int rr = 0; rr < 16; rr++) {
            const int i = w0 + 16 * r + rr;
            float d = 0.0f;
            if (i < T) {
                const bf16 *orow = p.o + ((size_t)b * T + i) * p.ldo + (size_t)h * HD,
                           *drow = p.dout + ((size_t)b * T + i) * p.lddo + (size_t)h * HD;
#pragma unroll
                for (int e = 2 * lane; e < HD; e += 64) {
                    const float2 of = __bfloat1622float2(*(const __nv_bfloat162 *)(orow + e)),
                                 df = __bfloat1622float2(*(const __nv_bfloat162 *)(drow + e));
                    d += of.x * df.x + of.y * df.y;
                }
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                d += __shfl_xor_sync(0xffffffffu, d, off);
            if (rr == g) D[r][0] = d;
            if (rr == g + 8) D[r][1] = d;
            if (lane == 0 && i < T) p.D[bh + i] = d;
        }
        const int row0 = w0 + 16 * r + g, row1 = row0 + 8;
        L[r][0] = row0 < T ? p.lse[bh + row0] * FLASH_LOG2E : 0.0f;
        L[r][1] = row1 < T ? p.lse[bh + row1] * FLASH_LOG2E : 0.0f;
    }

    uint32_t qa[R][KS][4], da[R][KS][4]; // Q's and dO's A operands
    float dq[R][OB][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int ob = 0; ob < OB; ob++)
            dq[r][ob][0] = dq[r][ob][1] = dq[r][ob][2] = dq[r][ob][3] = 0.0f;

    for (int j = j_first; j < j_end; j++) {
        const int st = (j - j_first) & 1, kv0 = j * BN;
        if (j + 1 < j_end) {
            tile_load<BN, HD, NT>(sK + (st ^ 1) * BN * LDS, kg + (size_t)(kv0 + BN) * p.ldk, p.ldk, T - kv0 - BN, tid);
            tile_load<BN, HD, NT>(sV + (st ^ 1) * BN * LDS, vg + (size_t)(kv0 + BN) * p.ldv, p.ldv, T - kv0 - BN, tid);
        }
        cp_async_commit();
        cp_async_wait_prev();
        __syncthreads();
        if (j == j_first) {
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    load_a<LDS>(qa[r][kk], sQ + (w0 - q0 + 16 * r) * LDS, 16 * kk, lane);
                    load_a<LDS>(da[r][kk], sdO + (w0 - q0 + 16 * r) * LDS, 16 * kk, lane);
                }
        }
        const bf16 *ks = sK + st * BN * LDS, *vs = sV + st * BN * LDS;

        // S = Q K^T, dP = dO V^T, each K and V fragment used by the R row blocks
        float s[R][SB][4], dp[R][SB][4];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int sb = 0; sb < SB; sb++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[r][sb][e] = dp[r][sb][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++)
#pragma unroll
            for (int nb = 0; nb < BN / 16; nb++) {
                uint32_t kb[4], vb[4];
                load_b_nk<LDS>(kb, ks, 16 * nb, 16 * kk, lane);
                load_b_nk<LDS>(vb, vs, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(s[r][2 * nb], qa[r][kk], kb[0], kb[1]);
                    mma(s[r][2 * nb + 1], qa[r][kk], kb[2], kb[3]);
                    mma(dp[r][2 * nb], da[r][kk], vb[0], vb[1]);
                    mma(dp[r][2 * nb + 1], da[r][kk], vb[2], vb[3]);
                }
            }
        // P = exp2(S scale log2 e - lse log2 e), 0 where not visible; dS = P (dP - D) (into dp)
        const bool masked = kv0 + BN - 1 > w0 || kv0 + BN > T || (p.window > 0 && kv0 <= w0 + 16 * R - 1 - p.window);
#pragma unroll
        for (int r = 0; r < R; r++) {
#pragma unroll
            for (int sb = 0; sb < SB; sb++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i = w0 + 16 * r + g + (e < 2 ? 0 : 8);
                    float pr = exp2f(fmaf(s[r][sb][e], p.scale_log2, -L[r][e >> 1]));
                    if (masked && !visible(i, kv0 + 8 * sb + 2 * c + (e & 1), T, p.window)) pr = 0.0f;
                    dp[r][sb][e] = pr * (dp[r][sb][e] - D[r][e >> 1]);
                }
        }
        // dQ += dS K, each K fragment used by the R row blocks
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t a[R][4];
#pragma unroll
            for (int r = 0; r < R; r++)
                acc_to_a<SB>(a[r], dp[r], kk);
#pragma unroll
            for (int nb = 0; nb < HD / 16; nb++) {
                uint32_t kb[4];
                load_b_kn<LDS>(kb, ks, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(dq[r][2 * nb], a[r], kb[0], kb[1]);
                    mma(dq[r][2 * nb + 1], a[r], kb[2], kb[3]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < R; r++) { // through the warp's own Q rows, free since the first tile
        const int r0 = w0 + 16 * r;
        bf16 *so = sQ + (r0 - q0) * LDS;
        warp_acc_to_smem<OB, LDS>(so, dq[r], p.scale, p.scale, lane);
        __syncwarp();
        warp_store_rows<HD>(p.dq + ((size_t)b * T + r0) * p.lddq + (size_t)h * HD, p.lddq, so, T - r0, lane);
    }
}

// ---- dK and dV -----------------------------------------------------------------------------------------------------
// grid (key tiles, KV, B), WARPS * 32 threads, shared memory (2 BN + 4 BQ) (HD + 8) bf16 + 4 BQ floats: sK, sV [BN],
// then sQ and sdO [2 stages][BQ], then sL and sD [2 stages][BQ] (lse and D of the step's queries).
template <int HD, int WARPS, int R, int BQ, int MINB>
__global__ static void __launch_bounds__(WARPS * 32, MINB) flash_bwd_dkv_kernel(const bwd_params p) {
    constexpr int BN = 16 * R * WARPS, LDS = HD + 8, NT = WARPS * 32, KS = HD / 16, QB = BQ / 8, OB = HD / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = (bf16 *)smem, *sV = sK + BN * LDS, *sQ = sV + BN * LDS, *sdO = sQ + 2 * BQ * LDS;
    float *sL = (float *)(sdO + 2 * BQ * LDS), *sD = sL + 2 * BQ;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const int T = p.T, kh = blockIdx.y, b = blockIdx.z, group = p.H / p.KV;
    const int k0 = blockIdx.x * BN;    // tile 0, the one most queries see, starts first
    const int w0 = k0 + 16 * R * warp; // the warp's first key
    // the queries that see a key of the tile: [k0, q_end), in tiles of BQ from the one holding query k0
    const int q_start = k0 / BQ * BQ, q_end = p.window > 0 ? min(T, k0 + BN - 1 + p.window) : T;
    const int n_qt = (q_end - q_start + BQ - 1) / BQ, steps = group * n_qt;

    tile_load<BN, HD, NT>(sK, p.k + b * p.kv_bstride + (size_t)k0 * p.ldk + (size_t)kh * HD, p.ldk, T - k0, tid);
    tile_load<BN, HD, NT>(sV, p.v + b * p.kv_bstride + (size_t)k0 * p.ldv + (size_t)kh * HD, p.ldv, T - k0, tid);
    // step s: query head kh * group + s / n_qt, query tile s % n_qt, into stage st
    auto step_load = [&](int s, int st) {
        const int h = kh * group + s / n_qt, q0 = q_start + s % n_qt * BQ;
        const size_t row = (size_t)b * T + q0, bh = ((size_t)b * p.H + h) * T;
        tile_load<BQ, HD, NT>(sQ + st * BQ * LDS, p.q + row * p.ldq + (size_t)h * HD, p.ldq, T - q0, tid);
        tile_load<BQ, HD, NT>(sdO + st * BQ * LDS, p.dout + row * p.lddo + (size_t)h * HD, p.lddo, T - q0, tid);
        for (int r = tid; r < BQ; r += NT) { // rows past T: zeros (masked below)
            const bool ok = q0 + r < T;
            cp_async4(sL + st * BQ + r, p.lse + bh + (ok ? q0 + r : q0), ok ? 4 : 0);
            cp_async4(sD + st * BQ + r, p.D + bh + (ok ? q0 + r : q0), ok ? 4 : 0);
        }
    };
    step_load(0, 0);
    cp_async_commit();

    float dk[R][OB][4], dv[R][OB][4];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int ob = 0; ob < OB; ob++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                dk[r][ob][e] = dv[r][ob][e] = 0.0f;
    const bf16 *kw = sK + (w0 - k0) * LDS, *vw = sV + (w0 - k0) * LDS; // this warp's keys: the A operands' rows

    for (int s = 0; s < steps; s++) {
        const int st = s & 1, q0 = q_start + s % n_qt * BQ;
        if (s + 1 < steps) step_load(s + 1, st ^ 1);
        cp_async_commit();
        cp_async_wait_prev();
        __syncthreads();
        const bf16 *qs = sQ + st * BQ * LDS, *dos = sdO + st * BQ * LDS;
        const float *Ls = sL + st * BQ, *Ds = sD + st * BQ;

        // S^T = K Q^T, dP^T = V dO^T: [16 keys x BQ queries] per row block, each Q and dO fragment used by all R
        float sc[R][QB][4], dp[R][QB][4];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int qb = 0; qb < QB; qb++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    sc[r][qb][e] = dp[r][qb][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t ka[R][4], va[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
                load_a<LDS>(ka[r], kw + 16 * r * LDS, 16 * kk, lane);
                load_a<LDS>(va[r], vw + 16 * r * LDS, 16 * kk, lane);
            }
#pragma unroll
            for (int nb = 0; nb < BQ / 16; nb++) {
                uint32_t qb4[4], ob4[4];
                load_b_nk<LDS>(qb4, qs, 16 * nb, 16 * kk, lane);
                load_b_nk<LDS>(ob4, dos, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(sc[r][2 * nb], ka[r], qb4[0], qb4[1]);
                    mma(sc[r][2 * nb + 1], ka[r], qb4[2], qb4[3]);
                    mma(dp[r][2 * nb], va[r], ob4[0], ob4[1]);
                    mma(dp[r][2 * nb + 1], va[r], ob4[2], ob4[3]);
                }
            }
        }
        // P^T and dS^T = P^T o (dP^T - D): element (key row g or g + 8 of the block, query column 8 qb + 2c + (e & 1))
        const bool masked = q0 < w0 + 16 * R - 1 || q0 + BQ > T || (p.window > 0 && q0 + BQ - 1 - w0 >= p.window);
#pragma unroll
        for (int qb = 0; qb < QB; qb++) {
            const float2 L = *(const float2 *)(Ls + 8 * qb + 2 * c), D = *(const float2 *)(Ds + 8 * qb + 2 * c);
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i = q0 + 8 * qb + 2 * c + (e & 1), j = w0 + 16 * r + g + (e < 2 ? 0 : 8);
                    float pr = exp2f(fmaf(sc[r][qb][e], p.scale_log2, -(e & 1 ? L.y : L.x) * FLASH_LOG2E));
                    if (masked && !visible(i, j, T, p.window)) pr = 0.0f;
                    sc[r][qb][e] = pr;
                    dp[r][qb][e] = pr * (dp[r][qb][e] - (e & 1 ? D.y : D.x));
                }
        }
        // dV += P^T dO, dK += dS^T Q: [16 keys x HD] per row block over the step's BQ queries
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            uint32_t pa[R][4], sa[R][4];
#pragma unroll
            for (int r = 0; r < R; r++) {
                acc_to_a<QB>(pa[r], sc[r], kk);
                acc_to_a<QB>(sa[r], dp[r], kk);
            }
#pragma unroll
            for (int nb = 0; nb < HD / 16; nb++) {
                uint32_t b4[4];
                load_b_kn<LDS>(b4, dos, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(dv[r][2 * nb], pa[r], b4[0], b4[1]);
                    mma(dv[r][2 * nb + 1], pa[r], b4[2], b4[3]);
                }
                load_b_kn<LDS>(b4, qs, 16 * nb, 16 * kk, lane);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    mma(dk[r][2 * nb], sa[r], b4[0], b4[1]);
                    mma(dk[r][2 * nb + 1], sa[r], b4[2], b4[3]);
                }
            }
        }
        __syncthreads();
    }

    // through the warp's own rows of sK and sV (only this warp reads them), 16 bytes per lane
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int r0 = w0 + 16 * r;
        const size_t row = (size_t)b * T + r0;
        bf16 *ko = sK + (r0 - k0) * LDS, *vo = sV + (r0 - k0) * LDS;
        warp_acc_to_smem<OB, LDS>(ko, dk[r], p.scale, p.scale, lane);
        warp_acc_to_smem<OB, LDS>(vo, dv[r], 1.0f, 1.0f, lane);
        __syncwarp();
        warp_store_rows<HD>(p.dk + row * p.lddk + (size_t)kh * HD, p.lddk, ko, T - r0, lane);
        warp_store_rows<HD>(p.dv + row * p.lddv + (size_t)kh * HD, p.lddv, vo, T - r0, lane);
    }
}

// ---- launch --------------------------------------------------------------------------------------------------------
template <int HD, int WARPS, int R, int BN, int MINB> static void dq_launch(const bwd_params &p, int B) {
    constexpr int BM = 16 * R * WARPS;
    const size_t smem = sizeof(bf16) * (2 * BM + 4 * BN) * (HD + 8);
    static size_t smem_set[FLASH_SMEM_DEVICES];
    flash_smem_limit((const void *)flash_bwd_dq_kernel<HD, WARPS, R, BN, MINB>, smem, &smem_set);
    flash_bwd_dq_kernel<HD, WARPS, R, BN, MINB><<<dim3(cdiv(p.T, BM), p.H, B), WARPS * 32, smem>>>(p);
    CUDA_CHECK_LAUNCH();
}

template <int HD, int WARPS, int R, int BQ, int MINB> static void dkv_launch(const bwd_params &p, int B) {
    constexpr int BN = 16 * R * WARPS;
    const size_t smem = sizeof(bf16) * (2 * BN + 4 * BQ) * (HD + 8) + sizeof(float) * 4 * BQ;
    static size_t smem_set[FLASH_SMEM_DEVICES];
    flash_smem_limit((const void *)flash_bwd_dkv_kernel<HD, WARPS, R, BQ, MINB>, smem, &smem_set);
    flash_bwd_dkv_kernel<HD, WARPS, R, BQ, MINB><<<dim3(cdiv(p.T, BN), p.KV, B), WARPS * 32, smem>>>(p);
    CUDA_CHECK_LAUNCH();
}

int attn_flash_bwd(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    const mat m[5] = {o, dout, dq, dk, dv};
    if (!flash_supports(a, m, 5) || !a->lse) return 0;
    bwd_params p;
    p.q = (const bf16 *)a->q.p, p.k = (const bf16 *)a->k.p, p.v = (const bf16 *)a->v.p;
    p.o = (const bf16 *)o.p, p.dout = (const bf16 *)dout.p;
    p.dq = (bf16 *)dq.p, p.dk = (bf16 *)dk.p, p.dv = (bf16 *)dv.p;
    p.lse = a->lse;
    p.ldq = a->q.ld, p.ldk = a->k.ld, p.ldv = a->v.ld, p.ldo = o.ld, p.lddo = dout.ld;
    p.lddq = dq.ld, p.lddk = dk.ld, p.lddv = dv.ld, p.kv_bstride = a->kv_bstride;
    p.T = a->T, p.H = a->H, p.KV = a->KV, p.window = a->window;
    p.scale = 1.0f / sqrtf((float)a->hd), p.scale_log2 = p.scale * FLASH_LOG2E;
    CUDA_CHECK(cudaMallocAsync((void **)&p.D, sizeof(float) * (size_t)a->B * a->H * a->T, cudaStreamPerThread));
    if (a->hd == 64) {
        dq_launch<FLASH_DQ_64>(p, a->B);
        dkv_launch<FLASH_DKV_64>(p, a->B);
    } else {
        dq_launch<FLASH_DQ_128>(p, a->B);
        dkv_launch<FLASH_DKV_128>(p, a->B);
    }
    CUDA_CHECK(cudaFreeAsync(p.D, cudaStreamPerThread));
    return 1;
}
