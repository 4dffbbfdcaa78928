// Mamba-2's SSD with whole chunks, fused (ssd_whole.cu takes all but the walks by default, SSM_SSD_FUSED=2: the m2x24
// step 7.5% faster at 8 x 2048 and 1 x 16384 on an H100; =1 the walks too: 5% faster at 8 x 2048, 1% slower at
// 1 x 16384; =0 none; performance.md): tensor-core kernels (tf32 m16n8k8, float32 accumulation) that replace batched
// GEMMs and their elementwise passes where the bytes between them are the cost (every pass of ssd_whole.cu is bound
// by its 100-200 MB copies).
//   the walk: the chunk states and their pass over chunks in one kernel. A block owns a 32 x 32 tile of one head's
//     P x N state and walks the chunks in order, the state in its warps' accumulators: per chunk it writes the state
//     entering the chunk, decays it by exp(a_last) and adds sum_j w_j x_j B_j^T as a product into the same
//     accumulators (w_j = exp(a_last - a_j) dt_j), while the next chunk's rows are copied in. The backward's
//     gradients of the states run the same walk in reverse: G_c = sum_i exp(a_i) dY_i^T C_i, dS_c = exp(a_last)
//     dS_{c+1} + G_{c+1}. No Xw copy, no per-chunk states written and read again by a pass: one write of the states
//     the later products read.
//   the output: Y = exp(a_i) C S_in^T + (CB o exp(a_i - a_j) dt_j, causal, D on the diagonal) X per (sequence,
//     chunk, head), the mask formed in the product's fragments: no M, no C S^T copy, y written once.
//   dX: per (sequence, chunk, head) w B dS^T + M^T dY with the sums the gradients of a and dt need from B dS^T and
//     C S_in^T (x . (B dS^T) and dY . (C S_in^T) per position), both products in the block's accumulators: no Z1,
//     Z2 or M copies, dx written once.
//   dCB: per (sequence, chunk, head) dM = dY X^T in the block's accumulators, then the head's part of dCB and the
//     sums of dM o M the gradients of a and dt need (no dM copy written and read again).
//   dB, dC: per (sequence, chunk, group) the heads' sums sum_h diag(w_h) X_h dS_h and sum_h diag(exp(a_h)) dY_h S_h
//     with the row scales applied as the operands are read (no Xw or dYe copies), then + dCB^T C or dCB B.
// The sums are the batched GEMMs' (the same terms, each rounded to tf32 as a tf32 product rounds it; the emulator's
// cuBLAS does not round, these kernels' products do), in a fixed order: two runs give the same bits. The pass over
// chunks is exact float32 (the GEMM form rounds the states and the decays' products to tf32). Included by
// ssd_whole.cu (and converted, by the CPU emulator: tests/emu/run.sh).
#ifndef SSM_CUDA_SSD_FUSED_CUH
#define SSM_CUDA_SSD_FUSED_CUH

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/ssd_common.cuh"

#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>

#define WALK_TILE 32            // a walk block's state tile: 32 rows of P by 32 columns of N, a warp 16 x 16 of it
#define WALK_LD (WALK_TILE + 8) // its staged rows: the fragments' reads (lanes 4 g + c at [k + c][r + g]) hit 32 banks
#define OUT_PT 64               // an output block's columns of P
#define OUT_NK 16               // the first product's columns of N staged per step
#define FUSED_THREADS 128       // 4 warps: a walk block's 2 x 2 warp tiles, an output block's 4 strips of 16 rows

// Whether the fused kernels take this call, and which: SSM_SSD_FUSED=1 all of them, =2 (the default) all but the
// walks (the states and their gradients then come from the batched products and passes), =0 none. The walks lose
// at batch 1 (a block walks 256 chunks alone) and win little at batch 8 (their tiles read x and B again and again).
// They need tf32 products (mixed precision) and the shapes and addresses they assume: P and N multiples of 32, a
// chunk a multiple of 16, x, B and C (and the backward's dy, when not NULL) rows of 16-byte aligned float4s.
// Returns 0 (none), 1 or 2.
static int ssd_fused_mode(const ssd_args *a, const SsdShape &s, const float *dy) {
    const char *e = getenv("SSM_SSD_FUSED");
    const int mode = e && (e[0] == '0' || e[0] == '1') && !e[1] ? e[0] - '0' : 2;
    const bool a16 = (uintptr_t)a->x % 16 == 0 && (uintptr_t)a->Bm % 16 == 0 && (uintptr_t)a->Cm % 16 == 0 &&
                     (uintptr_t)dy % 16 == 0;
    const bool fits = a->tf32 && s.P % WALK_TILE == 0 && s.N % WALK_TILE == 0 && s.Q % 16 == 0 && s.ldx % 4 == 0;
    return fits && a16 ? mode : 0;
}

// The fused dX kernel, besides: P at most 64 (a block holds a row's every column) and dx rows of float2s.
static bool ssd_fused_dx_on(const ssd_grads *gr, const SsdShape &s) {
    return s.P <= OUT_PT && gr->ldd % 2 == 0 && (uintptr_t)gr->dx % 8 == 0;
}

// rows x cols floats (cols a multiple of 4) of src, rows lds apart, into the shared array dst (its rows as declared):
// a cp.async of 16 bytes a step, the block's threads in turn; the caller commits the group.
template <int R, int LD>
__device__ __forceinline__ static void tile_copy(float (&dst)[R][LD], const float *src, size_t lds, int rows,
                                                 int cols) {
    const int per = cols / 4;
    for (int e = (int)threadIdx.x; e < rows * per; e += FUSED_THREADS) {
        const int r = e / per, q = 4 * (e % per);
        cp_async16(&dst[r][q], src + (size_t)r * lds + q, 16);
    }
}

// ---- the walk ----------------------------------------------------------------------------------------------------
// A walk's steps are sequential (a chunk each), so its time is the chunks times a step's: the chunks' rows are copied
// WALK_STAGES - 1 chunks ahead, so that a step waits on its products rather than on the copy's latency (at batch 1 and
// 16K bytes a walk is 256 steps long; with two stages each step would wait ~1 us for its rows). Measured (H100,
// 2026-12-07, m2x24 8 x 2048): 0.40 ms a call by SSM_KERNEL_TIMES, no gain over the scale pass, product and pass
// it replaces (~0.35 ms by ncu on 2026-12-06, another measure); likely (not profiled) because a block's 32 x 32 tile
// makes every chunk's x rows read 4 times and its B rows 48 times (per head and P tile) through L2.
// Wider tiles cut those reads but leave too few blocks at batch 1; the next form should walk segments of chunks.
#define WALK_STAGES 4
struct WalkStage {
    float u[SSD_Q][WALK_LD], v[SSD_Q][WALK_LD]; // the chunk's rows of x (or dY) and B (or C), the tile's columns
    float sc[SSD_Q], dec, pad[3];               // the rows' scales, the chunk's decay (pad: 16-byte stages)
};

// st [B, nch, H, P, N] = the state entering each chunk (REV: the gradient of the state leaving it), from u's head
// rows scaled per position (x and w; REV: dY and exp(a)) and v's group rows (B; REV: C), rows of ldu and ldv.
// state [B, H, P, N], when not NULL (forward only): the state entering chunk 0, and it receives the one leaving the
// last. Grid (P/32 * N/32, H, B) of FUSED_THREADS, WALK_STAGES * sizeof(WalkStage) of dynamic shared memory.
template <bool REV>
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_walk_kernel(float *st, float *state, const float *u, int ldu, const float *v, int ldv, const float *dts,
                    const float *acs, SsdShape s) {
    extern __shared__ __align__(16) unsigned char smem[];
    WalkStage *sg = reinterpret_cast<WalkStage *>(smem);
    const int ntn = s.N / WALK_TILE, n0 = (int)blockIdx.x % ntn * WALK_TILE, p0 = (int)blockIdx.x / ntn * WALK_TILE;
    const int h = blockIdx.y, b = blockIdx.z;
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4;
    const int pr = wp / 2 * 16, nc = wp % 2 * 16; // the warp's rows (of P) and columns (of N) in the tile
    const size_t PN = (size_t)s.P * s.N;
    const float *ub = u + (size_t)h * s.P + p0, *vb = v + (size_t)(h / s.hpg) * s.N + n0;
    // the walk's step it (chunk c) into its stage: the rows (one copy group, empty past the last chunk), scales, decay
    auto stage = [&](int it) {
        if (it < s.nch) {
            const int c = REV ? s.nch - 1 - it : it;
            WalkStage &t = sg[it % WALK_STAGES];
            const size_t row0 = s.row0(b, c), o = s.bht(b, h, c);
            tile_copy(t.u, ub + row0 * ldu, ldu, s.Q, WALK_TILE);
            tile_copy(t.v, vb + row0 * ldv, ldv, s.Q, WALK_TILE);
            const float last = acs[o + s.Q - 1];
            if ((int)threadIdx.x < s.Q) {
                const int j = threadIdx.x;
                t.sc[j] = REV ? expf(acs[o + j]) : expf(last - acs[o + j]) * dts[o + j];
            }
            if (threadIdx.x == 0) t.dec = expf(last);
        }
        cp_async_commit();
    };
    // lane 4 gq + cq holds, per 8-column n-tile nt, rows pr + gq (+ 8) and columns nc + 8 nt + 2 cq (+ 1)
    auto at = [&](int nt, int i) { return (size_t)(p0 + pr + gq + 8 * (i >> 1)) * s.N + n0 + nc + 8 * nt + 2 * cq; };
    float acc[2][4];
    float *init = state ? state + ((size_t)b * s.H + h) * PN : NULL;
#pragma unroll
    for (int nt = 0; nt < 2; nt++)
#pragma unroll
        for (int i = 0; i < 4; i += 2) {
            const float2 z = init ? *reinterpret_cast<const float2 *>(init + at(nt, i)) : make_float2(0.0f, 0.0f);
            acc[nt][i] = z.x, acc[nt][i + 1] = z.y;
        }
    for (int it = 0; it < WALK_STAGES - 1; it++)
        stage(it);
    for (int it = 0; it < s.nch; it++) {
        const int c = REV ? s.nch - 1 - it : it;
        stage(it + WALK_STAGES - 1);              // (into the stage step it - 1 used: free since its barrier)
        cp_async_wait_pending<WALK_STAGES - 1>(); // (step it's group is complete)
        __syncthreads();
        const WalkStage &t = sg[it % WALK_STAGES];
        float *out = st + (((size_t)b * s.nch + c) * s.H + h) * PN;
        const float dec = t.dec;
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i += 2) {
                *reinterpret_cast<float2 *>(out + at(nt, i)) = make_float2(acc[nt][i], acc[nt][i + 1]);
                acc[nt][i] *= dec, acc[nt][i + 1] *= dec;
            }
        for (int kk = 0; kk < s.Q; kk += 8) { // acc += (scaled u)^T v over the chunk's positions
            const float s0 = t.sc[kk + cq], s1 = t.sc[kk + cq + 4];
            const uint32_t af[4] = {tf32(t.u[kk + cq][pr + gq] * s0), tf32(t.u[kk + cq][pr + gq + 8] * s0),
                                    tf32(t.u[kk + cq + 4][pr + gq] * s1), tf32(t.u[kk + cq + 4][pr + gq + 8] * s1)};
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
                mma_tf32(acc[nt], af, tf32(t.v[kk + cq][nc + 8 * nt + gq]), tf32(t.v[kk + cq + 4][nc + 8 * nt + gq]));
        }
        __syncthreads(); // (this stage is refilled WALK_STAGES - 1 steps on)
    }
    cp_async_wait_all(); // (the empty groups past the last chunk)
    if (init)
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i += 2)
                *reinterpret_cast<float2 *>(init + at(nt, i)) = make_float2(acc[nt][i], acc[nt][i + 1]);
}

// The walk over chunks: forward (rev 0) st = the states entering the chunks, from x, w and B (state: carried in and
// out); backward (rev 1) st = the gradients of the states leaving them, from dY [B*T, H*P], exp(a) and C.
static void ssd_walk(float *st, float *state, const ssd_args *a, const float *dy, const float *dts, const float *acs,
                     int rev, const SsdShape &s) {
    const dim3 grid((unsigned)(s.P / WALK_TILE * (s.N / WALK_TILE)), s.H, s.B);
    const size_t smem = WALK_STAGES * sizeof(WalkStage);
    if (rev) {
        CUDA_CHECK(cudaFuncSetAttribute((const void *)ssd_walk_kernel<true>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        ssd_walk_kernel<true><<<grid, FUSED_THREADS, smem>>>(st, NULL, dy, s.H * s.P, a->Cm, s.ldx, dts, acs, s);
    } else {
        CUDA_CHECK(cudaFuncSetAttribute((const void *)ssd_walk_kernel<false>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        ssd_walk_kernel<false><<<grid, FUSED_THREADS, smem>>>(st, state, a->x, s.ldx, a->Bm, s.ldx, dts, acs, s);
    }
    CUDA_CHECK_LAUNCH();
    ktime_mark(rev ? "ssd bwd dstates walk" : "ssd states walk");
}

// ---- products per (sequence, chunk, head) ----------------------------------------------------------------------
// The output and dX kernels: a block per (b, chunk, head) (and 64 columns of P), warp w the chunk's rows 16 w ..
// 16 w + 15 (rows past Q idle) by all of the block's columns; lane 4 g + c holds, per 8-column n-tile nt, rows
// 16 w + g (+ 8) and columns 8 nt + 2 c (+ 1) in acc[nt] (the m16n8k8 layout).
typedef float ChunkAcc[OUT_PT / 8][4];

// The staged columns of N for a product over N: the chunk's rows of B or C, and the block's rows of a state.
struct NSlices {
    float u[2][SSD_Q][OUT_NK + 4]; // (+ 4: lanes 4 g + c read [r + g][k + c], 32 banks)
    float s[2][OUT_PT][OUT_NK + 4];
};

// acc += U S^T over N: U [Q, N] the chunk's rows (row stride ldu), S [pw, N] (rows of N), OUT_NK columns a step
// with the next step's copies in flight. Copies issued before the call join its first group. Every thread calls it.
__device__ static void rows_by_state(ChunkAcc &acc, NSlices &t, const float *U, int ldu, const float *S, int pw,
                                     const SsdShape &s) {
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    auto stage = [&](int n0, int k) {
        tile_copy(t.u[k], U + n0, ldu, s.Q, OUT_NK);
        tile_copy(t.s[k], S + n0, s.N, pw, OUT_NK);
        cp_async_commit();
    };
    stage(0, 0);
    for (int n0 = 0, k = 0; n0 < s.N; n0 += OUT_NK, k ^= 1) {
        if (n0 + OUT_NK < s.N) {
            stage(n0 + OUT_NK, k ^ 1);
            cp_async_wait_prev();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        if (r0 < s.Q)
#pragma unroll
            for (int kk = 0; kk < OUT_NK; kk += 8) {
                const uint32_t af[4] = {tf32(t.u[k][r0 + gq][kk + cq]), tf32(t.u[k][r0 + gq + 8][kk + cq]),
                                        tf32(t.u[k][r0 + gq][kk + cq + 4]), tf32(t.u[k][r0 + gq + 8][kk + cq + 4])};
#pragma unroll
                for (int nt = 0; nt < OUT_PT / 8; nt++)
                    if (8 * nt < pw)
                        mma_tf32(acc[nt], af, tf32(t.s[k][8 * nt + gq][kk + cq]),
                                 tf32(t.s[k][8 * nt + gq][kk + cq + 4]));
            }
        __syncthreads();
    }
}

// M[i, j] = CB[i, j] exp(a_i - a_j) dt_j for j <= i, plus D on the diagonal, else 0 (exp(a_i - a_j) is never formed
// for j > i): ssd_mask's, from shared cb, a and d.
template <int LD>
__device__ __forceinline__ static float mask_of(const float (*cb)[LD], const float *a, const float *d, float D, int i,
                                                int j) {
    return j <= i ? cb[i][j] * (expf(a[i] - a[j]) * d[j]) + (i == j ? D : 0.0f) : 0.0f;
}

// ---- the output -------------------------------------------------------------------------------------------------
// Shared memory of an output block: x's chunk rows (its columns of P), then the columns of N of C and S_in for the
// first product, whose space CB's chunk takes for the second.
struct OutSmem {
    float x[SSD_Q][OUT_PT + 8]; // (+ 8: lanes 4 g + c read [k + c][n + g], 32 banks)
    union {
        NSlices ns;
        float cb[SSD_Q][SSD_Q + 4]; // (read [r + g][k + c])
    } u;
    float a[SSD_Q], d[SSD_Q];
};

// y [B*T, H*P] = exp(a_i) C S_in^T + M X per (b, chunk, head) and 64 columns of P. Grid (B nch H: the heads of a
// chunk side by side, so that its C and CB are read from L2 after the first; P/64 rounded up) of FUSED_THREADS. y
// float32, or bf16 (lean training's saved y: each sum rounded once as it is written, no float32 copy).
__device__ __forceinline__ static void out_pair(float *p, float u, float v) {
    *reinterpret_cast<float2 *>(p) = make_float2(u, v);
}
__device__ __forceinline__ static void out_pair(__nv_bfloat16 *p, float u, float v) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(u, v);
}
template <typename TY>
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_out_kernel(TY *y, const float *x, const float *Cm, const float *st, const float *CB, const float *dts,
                   const float *acs, const float *Dv, SsdShape s) {
    __shared__ __align__(16) OutSmem sm[1];
    OutSmem &m = sm[0];
    const int bc = (int)(blockIdx.x / s.H), h = (int)(blockIdx.x % s.H), p0 = (int)blockIdx.y * OUT_PT;
    const int pw = min(OUT_PT, s.P - p0);
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    const size_t row0 = s.row0(bc / s.nch, bc % s.nch), o = s.bht(bc / s.nch, h, bc % s.nch);
    const int HP = s.H * s.P;
    if ((int)threadIdx.x < s.Q) m.a[threadIdx.x] = acs[o + threadIdx.x], m.d[threadIdx.x] = dts[o + threadIdx.x];
    tile_copy(m.x, x + row0 * s.ldx + (size_t)h * s.P + p0, s.ldx, s.Q, pw); // (joins the product's first group)
    ChunkAcc acc = {};
    rows_by_state(acc, m.u.ns, Cm + row0 * s.ldx + (size_t)(h / s.hpg) * s.N, s.ldx,
                  st + ((size_t)bc * s.H + h) * s.P * s.N + (size_t)p0 * s.N, pw, s);
    tile_copy(m.u.cb, CB + ((size_t)bc * s.G + h / s.hpg) * s.Q * s.Q, s.Q, s.Q, s.Q);
    cp_async_commit();
    const bool rows = r0 < s.Q; // (Q < 64: the last warps sit out the products)
    const float e0 = rows ? expf(m.a[r0 + gq]) : 0.0f, e1 = rows ? expf(m.a[r0 + gq + 8]) : 0.0f;
#pragma unroll
    for (int nt = 0; nt < OUT_PT / 8; nt++) // (the rows scaled by exp(a_i) while CB is copied in)
        acc[nt][0] *= e0, acc[nt][1] *= e0, acc[nt][2] *= e1, acc[nt][3] *= e1;
    cp_async_wait_all();
    __syncthreads();
    const float D = Dv[h];
    if (!rows) return;
    for (int kk = 0; kk < r0 + 16; kk += 8) { // + M X (the strip's rows reach column r0 + 15 at most)
        const int i = r0 + gq, j = kk + cq;
        const uint32_t af[4] = {tf32(mask_of(m.u.cb, m.a, m.d, D, i, j)), tf32(mask_of(m.u.cb, m.a, m.d, D, i + 8, j)),
                                tf32(mask_of(m.u.cb, m.a, m.d, D, i, j + 4)),
                                tf32(mask_of(m.u.cb, m.a, m.d, D, i + 8, j + 4))};
#pragma unroll
        for (int nt = 0; nt < OUT_PT / 8; nt++)
            if (8 * nt < pw)
                mma_tf32(acc[nt], af, tf32(m.x[kk + cq][8 * nt + gq]), tf32(m.x[kk + cq + 4][8 * nt + gq]));
    }
#pragma unroll
    for (int nt = 0; nt < OUT_PT / 8; nt++)
        if (8 * nt < pw)
#pragma unroll
            for (int i = 0; i < 4; i += 2) {
                const size_t row = row0 + r0 + gq + 8 * (i >> 1);
                out_pair(y + row * HP + (size_t)h * s.P + p0 + 8 * nt + 2 * cq, acc[nt][i], acc[nt][i + 1]);
            }
}

// y = the chunk outputs, from x, C, the states entering the chunks (st) and CB
static void ssd_out(mat y, const ssd_args *a, const ssd_fwd_bufs &f, const SsdShape &s) {
    const dim3 grid((unsigned)(s.B * s.nch * s.H), (unsigned)cdiv(s.P, OUT_PT));
    if (mat_h(y))
        ssd_out_kernel<__nv_bfloat16><<<grid, FUSED_THREADS>>>((__nv_bfloat16 *)mat_h(y), a->x, a->Cm, f.st, f.CB,
                                                               f.dts, f.acs, a->Dv, s);
    else
        ssd_out_kernel<float><<<grid, FUSED_THREADS>>>(mat_f(y), a->x, a->Cm, f.st, f.CB, f.dts, f.acs, a->Dv, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd output fused");
}

// ---- dX ---------------------------------------------------------------------------------------------------------
// Shared memory of a dX block: dY's chunk rows, the columns of N of C and S_in, then of B and dS, whose space CB's
// chunk takes for the third product; the rows' sums.
struct DxSmem {
    float dy[SSD_Q][OUT_PT + 8]; // (read [k + c][n + g])
    union {
        NSlices ns;
        float cb[SSD_Q][SSD_Q + 8]; // (read transposed, [k + c][r + g]: 32 banks at a stride of 72)
    } u;
    float a[SSD_Q], d[SSD_Q], r[SSD_Q], q[SSD_Q];
};

// Per (b, chunk, head), P <= 64: what ssd_dxq_whole_kernel and the M^T dY product give, with Z1 = B dS^T and
// Z2 = C S_in^T in the block's accumulators instead of copies: dx = w Z1 + M^T dY (rows of ldd; D dY from M's
// diagonal), r_j = x_j . Z1_j, q_i = dY_i . Z2_i, <dS, S_in>, D's partial sum into dDp [B, nch, H] (double), and
// daX (-w r + exp(a) q; at the last position also sum w r + exp(a_last) <dS, S_in>), ddX (exp(a_last - a_j) r_j)
// [B, H, T]. Each row's sums over its columns: a lane's in column order, then its four lanes by shuffles. Grid
// B nch H (the heads of a chunk side by side) of FUSED_THREADS; at most 102 registers, so that 5 blocks fit an SM as
// their shared memory allows (4 at 106 registers; ptxas then spills 16 bytes): ncu on an H100 found it bound by
// latency at a quarter of the SM's warps, and the m2x24 step 0.2-0.5 ms faster at 5 (2026-12-07).
__global__ static void __launch_bounds__(FUSED_THREADS, 5)
    ssd_dx_kernel(float *dx, int ldd, float *daX, float *ddX, double *dDp, const float *dy, const float *x,
                  const float *Bm, const float *Cm, const float *st, const float *dst, const float *CB,
                  const float *dts, const float *acs, const float *Dv, SsdShape s) {
    __shared__ __align__(16) DxSmem sm[1];
    DxSmem &m = sm[0];
    const int bc = (int)(blockIdx.x / s.H), h = (int)(blockIdx.x % s.H), b = bc / s.nch, c = bc % s.nch, HP = s.H * s.P;
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    const size_t row0 = s.row0(b, c), o = s.bht(b, h, c), PN = (size_t)s.P * s.N;
    const size_t gcol = (size_t)(h / s.hpg) * s.N, hcol = (size_t)h * s.P, sblk = ((size_t)bc * s.H + h) * PN;
    if ((int)threadIdx.x < s.Q) m.a[threadIdx.x] = acs[o + threadIdx.x], m.d[threadIdx.x] = dts[o + threadIdx.x];
    tile_copy(m.dy, dy + row0 * HP + hcol, HP, s.Q, s.P); // (joins the product's first group)
    const bool rows = r0 < s.Q;
    const int i0 = r0 + gq, i1 = r0 + gq + 8; // this lane's rows
    // Z2 = C S_in^T: q
    ChunkAcc acc = {};
    rows_by_state(acc, m.u.ns, Cm + row0 * s.ldx + gcol, s.ldx, st + sblk, s.P, s);
    float q0 = 0.0f, q1 = 0.0f;
    if (rows)
#pragma unroll
        for (int nt = 0; nt < OUT_PT / 8; nt++)
            if (8 * nt < s.P) {
                const int p = 8 * nt + 2 * cq;
                q0 += m.dy[i0][p] * acc[nt][0] + m.dy[i0][p + 1] * acc[nt][1];
                q1 += m.dy[i1][p] * acc[nt][2] + m.dy[i1][p + 1] * acc[nt][3];
            }
            // Z1 = B dS^T: r, D's partial sum, then dX's first term w Z1
#pragma unroll
    for (int nt = 0; nt < OUT_PT / 8; nt++)
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    rows_by_state(acc, m.u.ns, Bm + row0 * s.ldx + gcol, s.ldx, dst + sblk, s.P, s);
    tile_copy(m.u.cb, CB + ((size_t)bc * s.G + h / s.hpg) * s.Q * s.Q, s.Q, s.Q, s.Q);
    cp_async_commit();
    float r0s = 0.0f, r1s = 0.0f;
    double dDs = 0;
    const float last = m.a[s.Q - 1];
    if (rows) {
#pragma unroll
        for (int nt = 0; nt < OUT_PT / 8; nt++)
            if (8 * nt < s.P) {
                const int p = 8 * nt + 2 * cq;
                const float2 xa = *reinterpret_cast<const float2 *>(x + (row0 + i0) * s.ldx + hcol + p);
                const float2 xb = *reinterpret_cast<const float2 *>(x + (row0 + i1) * s.ldx + hcol + p);
                r0s += xa.x * acc[nt][0] + xa.y * acc[nt][1], r1s += xb.x * acc[nt][2] + xb.y * acc[nt][3];
                dDs += (double)(m.dy[i0][p] * xa.x) + (double)(m.dy[i0][p + 1] * xa.y);
                dDs += (double)(m.dy[i1][p] * xb.x) + (double)(m.dy[i1][p + 1] * xb.y);
            }
        const float w0 = expf(last - m.a[i0]) * m.d[i0], w1 = expf(last - m.a[i1]) * m.d[i1];
#pragma unroll
        for (int nt = 0; nt < OUT_PT / 8; nt++)
            acc[nt][0] *= w0, acc[nt][1] *= w0, acc[nt][2] *= w1, acc[nt][3] *= w1;
    }
    for (int off = 1; off < 4; off <<= 1) { // (a row's four lanes)
        q0 += __shfl_xor_sync(0xffffffffu, q0, off), q1 += __shfl_xor_sync(0xffffffffu, q1, off);
        r0s += __shfl_xor_sync(0xffffffffu, r0s, off), r1s += __shfl_xor_sync(0xffffffffu, r1s, off);
    }
    if (rows && cq == 0) m.r[i0] = r0s, m.r[i1] = r1s, m.q[i0] = q0, m.q[i1] = q1;
    cp_async_wait_all();
    __syncthreads();
    // + M^T dY: row j of M^T is column j of M, nonzero from i = j on
    const float D = Dv[h];
    if (rows) {
        for (int kk = r0; kk < s.Q; kk += 8) {
            const int i = kk + cq;
            const uint32_t af[4] = {
                tf32(mask_of(m.u.cb, m.a, m.d, D, i, i0)), tf32(mask_of(m.u.cb, m.a, m.d, D, i, i1)),
                tf32(mask_of(m.u.cb, m.a, m.d, D, i + 4, i0)), tf32(mask_of(m.u.cb, m.a, m.d, D, i + 4, i1))};
#pragma unroll
            for (int nt = 0; nt < OUT_PT / 8; nt++)
                if (8 * nt < s.P)
                    mma_tf32(acc[nt], af, tf32(m.dy[kk + cq][8 * nt + gq]), tf32(m.dy[kk + cq + 4][8 * nt + gq]));
        }
#pragma unroll
        for (int nt = 0; nt < OUT_PT / 8; nt++)
            if (8 * nt < s.P)
#pragma unroll
                for (int i = 0; i < 4; i += 2) {
                    const size_t row = row0 + (i ? i1 : i0);
                    *reinterpret_cast<float2 *>(dx + row * ldd + hcol + 8 * nt + 2 * cq) =
                        make_float2(acc[nt][i], acc[nt][i + 1]);
                }
    }
    // <dS, S_in>, then the per-position terms and the block's sums (each in a fixed order)
    double sds = 0;
    const float4 *S4 = reinterpret_cast<const float4 *>(st + sblk), *dS4 = reinterpret_cast<const float4 *>(dst + sblk);
    for (size_t e = threadIdx.x; e < PN / 4; e += FUSED_THREADS) {
        const float4 u = S4[e], v = dS4[e];
        sds += (double)(u.x * v.x + u.y * v.y + u.z * v.z + u.w * v.w);
    }
    const int j = threadIdx.x;
    float e = 0.0f, wr = 0.0f, rj = 0.0f;
    if (j < s.Q) rj = m.r[j], e = expf(last - m.a[j]), wr = e * m.d[j] * rj;
    const double dlast = block_reduce<double, SumOp, FUSED_THREADS>((double)wr, SumOp());
    const double sds_all = block_reduce<double, SumOp, FUSED_THREADS>(sds, SumOp());
    const double dD_all = block_reduce<double, SumOp, FUSED_THREADS>(dDs, SumOp());
    if (j < s.Q) {
        float da = -wr + expf(m.a[j]) * m.q[j];
        if (j == s.Q - 1) da += (float)(dlast + expf(last) * sds_all);
        daX[o + j] = da, ddX[o + j] = e * rj;
    }
    if (j == 0) dDp[(size_t)bc * s.H + h] = dD_all;
}

// dX (all of it: w B dS^T + M^T dY with D dY) and the position terms of a's and dt's gradients, D's partial sums
static void ssd_dx(const ssd_args *a, const ssd_grads *gr, const float *dy, float *daX, float *ddX, double *dDp,
                   const float *dst, const ssd_fwd_bufs &f, const SsdShape &s) {
    ssd_dx_kernel<<<(unsigned)(s.B * s.nch * s.H), FUSED_THREADS>>>(gr->dx, gr->ldd, daX, ddX, dDp, dy, a->x, a->Bm,
                                                                    a->Cm, f.st, dst, f.CB, f.dts, f.acs, a->Dv, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dx fused");
}

// ---- dCB's parts -------------------------------------------------------------------------------------------------
// Per (b, chunk, head), what the dM = dY X^T product and ssd_dcb_whole_kernel give, dM in the block's accumulators:
// the head's part of dCB, dM o exp(a_i - a_j) dt_j masked, into dMb [B, nch, H, Q, Q] (ssd_dcb_sum_kernel adds a
// group's heads), daM (rows - columns of dM o M) and ddM (columns of dM o CB o exp(..)) [B, H, T]. A row's sums: a
// lane's columns in order, then its four lanes; a column's: a warp's lanes by shuffles, then the warps in order.
struct DcbSmem {
    float dy[SSD_Q][OUT_PT + 4]; // (read [r + g][k + c])
    float x[SSD_Q][OUT_PT + 4];  // (read [n + g][k + c])
    float a[SSD_Q], d[SSD_Q], colg[4][SSD_Q], cold[4][SSD_Q];
};
// Grid B nch H (the heads of a chunk side by side) of FUSED_THREADS, P <= 64.
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_dcb_kernel(float *dMb, float *daM, float *ddM, const float *dy, const float *x, const float *CB,
                   const float *dts, const float *acs, SsdShape s) {
    __shared__ __align__(16) DcbSmem sm[1];
    DcbSmem &m = sm[0];
    const int bc = (int)(blockIdx.x / s.H), h = (int)(blockIdx.x % s.H), HP = s.H * s.P;
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    const size_t row0 = s.row0(bc / s.nch, bc % s.nch), o = s.bht(bc / s.nch, h, bc % s.nch);
    if ((int)threadIdx.x < s.Q) m.a[threadIdx.x] = acs[o + threadIdx.x], m.d[threadIdx.x] = dts[o + threadIdx.x];
    tile_copy(m.dy, dy + row0 * HP + (size_t)h * s.P, HP, s.Q, s.P);
    tile_copy(m.x, x + row0 * s.ldx + (size_t)h * s.P, s.ldx, s.Q, s.P);
    cp_async_commit();
    const float *cbg = CB + ((size_t)bc * s.G + h / s.hpg) * s.Q * s.Q; // (read where the accumulators are: once)
    cp_async_wait_all();
    __syncthreads();
    const bool rows = r0 < s.Q;
    const int i0 = r0 + gq, i1 = r0 + gq + 8;
    ChunkAcc acc = {}; // dM [Q, Q]: the strip's rows, columns 8 nt + ..
    if (rows)
        for (int kk = 0; kk < s.P; kk += 8) {
            const uint32_t af[4] = {tf32(m.dy[i0][kk + cq]), tf32(m.dy[i1][kk + cq]), tf32(m.dy[i0][kk + cq + 4]),
                                    tf32(m.dy[i1][kk + cq + 4])};
#pragma unroll
            for (int nt = 0; nt < SSD_Q / 8; nt++)
                if (8 * nt < r0 + 16) // (past the strip's diagonal block dM is masked away)
                    mma_tf32(acc[nt], af, tf32(m.x[8 * nt + gq][kk + cq]), tf32(m.x[8 * nt + gq][kk + cq + 4]));
        }
    float rs0 = 0.0f, rs1 = 0.0f; // this lane's part of its two rows' sums of gm
    float *dm = dMb + ((size_t)bc * s.H + h) * s.Q * s.Q;
    float cg[SSD_Q / 8][2], cd[SSD_Q / 8][2]; // this lane's parts of its columns' sums (over its two rows)
#pragma unroll
    for (int nt = 0; nt < SSD_Q / 8; nt++)
#pragma unroll
        for (int u = 0; u < 2; u++) {
            cg[nt][u] = cd[nt][u] = 0.0f;
            const int j = 8 * nt + 2 * cq + u;
            float dcb[2] = {0.0f, 0.0f};
#pragma unroll
            for (int hi = 0; hi < 2; hi++) {
                const int i = hi ? i1 : i0;
                if (rows && j < s.Q && j <= i) {
                    const float dv = acc[nt][2 * hi + u], lw = expf(m.a[i] - m.a[j]), k = cbg[(size_t)i * s.Q + j] * lw;
                    const float gm = dv * (k * m.d[j]);
                    cd[nt][u] += dv * k, cg[nt][u] += gm;
                    dcb[hi] = dv * (lw * m.d[j]);
                    (hi ? rs1 : rs0) += gm;
                }
            }
            if (rows && j < s.Q) dm[(size_t)i0 * s.Q + j] = dcb[0], dm[(size_t)i1 * s.Q + j] = dcb[1];
        }
    for (int off = 1; off < 4; off <<= 1)
        rs0 += __shfl_xor_sync(0xffffffffu, rs0, off), rs1 += __shfl_xor_sync(0xffffffffu, rs1, off);
#pragma unroll
    for (int nt = 0; nt < SSD_Q / 8; nt++)
#pragma unroll
        for (int u = 0; u < 2; u++)
            for (int off = 4; off < 32; off <<= 1) // (the warp's eight row pairs)
                cg[nt][u] += __shfl_xor_sync(0xffffffffu, cg[nt][u], off),
                    cd[nt][u] += __shfl_xor_sync(0xffffffffu, cd[nt][u], off);
    if (gq == 0)
#pragma unroll
        for (int nt = 0; nt < SSD_Q / 8; nt++)
#pragma unroll
            for (int u = 0; u < 2; u++)
                if (8 * nt + 2 * cq + u < s.Q)
                    m.colg[wp][8 * nt + 2 * cq + u] = cg[nt][u], m.cold[wp][8 * nt + 2 * cq + u] = cd[nt][u];
    __syncthreads();
    if (rows && cq == 0) {            // daM's row part, less its column part below
        m.a[i0] = rs0, m.a[i1] = rs1; // (a is read no more)
    }
    __syncthreads();
    const int j = threadIdx.x;
    if (j < s.Q) {
        float csg = 0.0f, csd = 0.0f;
        for (int w = 0; w < FUSED_THREADS / 32; w++)
            csg += m.colg[w][j], csd += m.cold[w][j];
        daM[o + j] = m.a[j] - csg, ddM[o + j] = csd;
    }
}

// dMb = each head's part of dCB, daM, ddM (ssd_dcb_kernel)
static void ssd_dcb(float *dMb, float *daM, float *ddM, const float *dy, const ssd_args *a, const ssd_fwd_bufs &f,
                    const SsdShape &s) {
    ssd_dcb_kernel<<<(unsigned)(s.B * s.nch * s.H), FUSED_THREADS>>>(dMb, daM, ddM, dy, a->x, f.CB, f.dts, f.acs, s);
    CUDA_CHECK_LAUNCH();
}

// ---- dB and dC --------------------------------------------------------------------------------------------------
// dC = sum_h diag(exp(a_h)) dY_h S_in,h + dCB B, dB = sum_h diag(w_h) X_h dS_h + dCB^T C per (b, chunk, group): the
// batched GEMMs' sums with the row scales applied as the operands are read (no dYe or Xw copies). A block per
// (b, chunk, group), one of the two, and 64 columns of N: warp w the chunk's rows 16 w .. 16 w + 15, acc as
// ChunkAcc's. The heads in order, each head's rows and state block copied in while the previous one's product runs.
#define DBC_NT 64 // a dB/dC block's columns of N
struct DbcStage {
    float u[SSD_Q][OUT_PT + 4];  // the head's rows of dY or x [Q, P] (read [r + g][k + c]: 32 banks)
    float s[OUT_PT][DBC_NT + 8]; // its state block [P, 64] (read [k + c][n + g])
    float sc[SSD_Q];             // the rows' scales
};
union DbcSmem {
    DbcStage st[2];
    struct {
        float cb[SSD_Q][SSD_Q + 8]; // dCB (dC reads [r + g][k + c] at a stride of Q + 4, dB [k + c][r + g] at Q + 8)
        float v[SSD_Q][DBC_NT + 8]; // the chunk's rows of B or C, its 64 columns (read [k + c][n + g])
    } t;
};

// Grid B nch G x 2 (dC, dB) x N/64, the last fastest, of FUSED_THREADS, sizeof(DbcSmem) of dynamic shared memory.
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_dbc_kernel(float *dBm, float *dCm, int ldd, const float *dy, const float *x, const float *Bm, const float *Cm,
                   const float *st, const float *dst, const float *dCB, const float *dts, const float *acs,
                   SsdShape s) {
    extern __shared__ __align__(16) unsigned char smem[];
    DbcSmem &m = *reinterpret_cast<DbcSmem *>(smem);
    const int ntiles = s.N / DBC_NT, n0 = (int)(blockIdx.x % ntiles) * DBC_NT, is_b = (int)(blockIdx.x / ntiles % 2);
    const int bc = (int)(blockIdx.x / ntiles / 2 / s.G), g = (int)(blockIdx.x / ntiles / 2 % s.G);
    const int b = bc / s.nch, c = bc % s.nch, HP = s.H * s.P;
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    const size_t row0 = s.row0(b, c), PN = (size_t)s.P * s.N;
    const float *U = is_b ? x : dy, *SS = is_b ? dst : st;
    const int ldu = is_b ? s.ldx : HP;
    // head k of the group (its rows, state block and scales) into stage buffer k & 1 (one copy group)
    auto stage = [&](int k) {
        const int h = g * s.hpg + k;
        DbcStage &t = m.st[k & 1];
        tile_copy(t.u, U + row0 * ldu + (size_t)h * s.P, ldu, s.Q, s.P);
        tile_copy(t.s, SS + ((size_t)bc * s.H + h) * PN + n0, s.N, s.P, DBC_NT);
        cp_async_commit();
        if ((int)threadIdx.x < s.Q) {
            const size_t o = s.bht(b, h, c);
            const int j = threadIdx.x;
            t.sc[j] = is_b ? expf(acs[o + s.Q - 1] - acs[o + j]) * dts[o + j] : expf(acs[o + j]);
        }
    };
    const bool rows = r0 < s.Q;
    ChunkAcc acc = {};
    stage(0);
    for (int k = 0; k < s.hpg; k++) {
        if (k + 1 < s.hpg) {
            stage(k + 1);
            cp_async_wait_prev();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        const DbcStage &t = m.st[k & 1];
        if (rows) {
            const float e0 = t.sc[r0 + gq], e1 = t.sc[r0 + gq + 8];
            for (int kk = 0; kk < s.P; kk += 8) {
                const uint32_t af[4] = {tf32(t.u[r0 + gq][kk + cq] * e0), tf32(t.u[r0 + gq + 8][kk + cq] * e1),
                                        tf32(t.u[r0 + gq][kk + cq + 4] * e0), tf32(t.u[r0 + gq + 8][kk + cq + 4] * e1)};
#pragma unroll
                for (int nt = 0; nt < DBC_NT / 8; nt++)
                    mma_tf32(acc[nt], af, tf32(t.s[kk + cq][8 * nt + gq]), tf32(t.s[kk + cq + 4][8 * nt + gq]));
            }
        }
        __syncthreads(); // (buffer k & 1 is staged again two heads on)
    }
    // + dCB B (dC) or dCB^T C (dB)
    const float *cbg = dCB + ((size_t)bc * s.G + g) * s.Q * s.Q, *V = (is_b ? Cm : Bm) + (size_t)g * s.N + n0;
    tile_copy(m.t.cb, cbg, s.Q, s.Q, s.Q);
    tile_copy(m.t.v, V + row0 * s.ldx, s.ldx, s.Q, DBC_NT);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    if (!rows) return;
    for (int kk = 0; kk < s.Q; kk += 8) {
        const int i = r0 + gq, j = kk + cq;
        uint32_t af[4];
        if (is_b) // (dCB^T: row i of it is column i of dCB)
            af[0] = tf32(m.t.cb[j][i]), af[1] = tf32(m.t.cb[j][i + 8]), af[2] = tf32(m.t.cb[j + 4][i]),
            af[3] = tf32(m.t.cb[j + 4][i + 8]);
        else
            af[0] = tf32(m.t.cb[i][j]), af[1] = tf32(m.t.cb[i + 8][j]), af[2] = tf32(m.t.cb[i][j + 4]),
            af[3] = tf32(m.t.cb[i + 8][j + 4]);
#pragma unroll
        for (int nt = 0; nt < DBC_NT / 8; nt++)
            mma_tf32(acc[nt], af, tf32(m.t.v[kk + cq][8 * nt + gq]), tf32(m.t.v[kk + cq + 4][8 * nt + gq]));
    }
    float *out = (is_b ? dBm : dCm) + (size_t)g * s.N + n0;
#pragma unroll
    for (int nt = 0; nt < DBC_NT / 8; nt++)
#pragma unroll
        for (int i = 0; i < 4; i += 2) {
            const size_t row = row0 + r0 + gq + 8 * (i >> 1);
            *reinterpret_cast<float2 *>(out + row * ldd + 8 * nt + 2 * cq) = make_float2(acc[nt][i], acc[nt][i + 1]);
        }
}

// The fused dB and dC kernel, besides: P at most 64, N a multiple of 64, dB and dC rows of float2s.
static bool ssd_fused_dbc_on(const ssd_grads *gr, const SsdShape &s) {
    return s.P <= OUT_PT && s.N % DBC_NT == 0 && gr->ldd % 2 == 0 && (uintptr_t)gr->dBm % 8 == 0 &&
           (uintptr_t)gr->dCm % 8 == 0;
}

// dB and dC (written), from dy, x, B, C, the states and their gradients, and dCB [B, nch, G, Q, Q]
static void ssd_dbc(const ssd_args *a, const ssd_grads *gr, const float *dy, const float *dst, const float *dCB,
                    const ssd_fwd_bufs &f, const SsdShape &s) {
    const size_t smem = sizeof(DbcSmem);
    CUDA_CHECK(
        cudaFuncSetAttribute((const void *)ssd_dbc_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const unsigned grid = (unsigned)(s.B * s.nch * s.G * 2 * (s.N / DBC_NT));
    ssd_dbc_kernel<<<grid, FUSED_THREADS, smem>>>(gr->dBm, gr->dCm, gr->ldd, dy, a->x, a->Bm, a->Cm, f.st, dst, dCB,
                                                  f.dts, f.acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dB dC fused");
}

#endif
