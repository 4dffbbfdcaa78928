// Mamba-2's state space dual on the GPU (the CUDA twin of src/backend/cpu/ssd.c; ssd_args in ops.h): the chunked
// forward and backward, the decode step, and the gated RMSNorm that follows the SSD in a Mamba-2 layer.
//
// The algorithm is the CPU's chunked one (mamba_ssm's ssd_minimal / _mamba_chunk_scan_combined), split into kernels
// the way mamba_ssm's Triton path splits it, each a grid over (sequence, chunk, head) or (sequence, chunk, group):
// per chunk of Q = min(s->chunk, SSD_Q) positions, with a = the inclusive cumsum of dt A within the chunk,
//   dt:        dts, a (and the softplus's slope for the backward)       [B, H, T], a thread per (b, chunk, h)
//   CB:        C B^T per (b, chunk, group)                              [B, nch, G, Q, Q] (shared by the group's heads)
//   states:    S_c = sum_j exp(a_last - a_j) dt_j x_j B_j^T per head    [B, nch, H, P, N]
//   passing:   the states entering each chunk, S_in[c + 1] = exp(a_last) S_in[c] + S_c, in place (a scan over
//              chunks: a thread per (b, h, state element) walks them in order; the op's state is S_in[0] and
//              receives the final state)
//   output:    Y = (CB o exp(a_i - a_j) dt_j, causal) X + exp(a_i) C S_in^T + D x
// The backward is the CPU's chunked backward (cpu_ssd_bwd) with the same per-chunk formulas: it recomputes the
// above (no output), then
//   dstates:   G_c = sum_i exp(a_i) dY_i^T C_i, turned in place by a reverse scan over chunks into dS_c, the
//              gradient of the state leaving chunk c (dS_c = exp(a_last) dS_{c+1} + G_{c+1}; zero after the last)
//   dCB:       per (b, chunk, group) the heads' dM = dY X^T in head order: dCB = sum_h dM o exp(a_i - a_j) dt_j
//              (B and C are the group's, so their gradient needs the sum alone), and per head the rows and
//              columns of dM o M and dM o CB o exp(..) (the gradients of a and dt through M)
//   dx:        per (b, chunk, head) dX = M^T dY + diag(w) B dS^T + D dY, with the terms of a's and dt's gradient
//              that need the whole head (x . (B dS^T) per position, dY . (C S^T), <dS, S>) and D's partial sum
//   dB, dC:    per (b, chunk, group) dC = dCB B + sum_h diag(exp(a_h)) dY_h S_h, dB = dCB^T C + sum_h diag(w_h)
//              X_h dS_h, the heads added inside the product in head order
//   dt:        a reverse cumsum per (b, chunk, head) through a = cumsum(dt A), the clamp and the softplus; then
//              dA_log, dD, d(dt bias) summed over sequences and chunks in order by a thread per head.
//
// Every product is a tile of at most 64 x 64 outputs per block of 256 threads (16 per thread), its operands staged
// through shared memory 16 values of the reduction at a time by loaders that apply the masks and decays as they read
// (gemm_acc). float32 throughout; the products in FFMA (a 4 x 4 block per thread), or with ssd_args.tf32 (mixed
// precision: Mamba-2 in a bf16 model, as mamba_ssm's Triton kernels take bf16 operands) on tensor cores in tf32 with
// float32 accumulation (m16n8k8: each warp a 16 x 32 strip; AccLayout says which outputs a thread holds). Every sum
// has a fixed order (no atomics): two runs give the same bits. exp(a_i - a_j) <= 1 for j <= i and is never formed
// for j > i, so nothing overflows.
//
// When every chunk is whole (T a multiple of the chunk: training's lengths), the products are instead batched GEMMs
// through cuBLAS (blas_batched.h) around elementwise passes (ssd_whole.cu): the m2x24 bf16 step 1.31x the tile
// kernels' (H100, docs/performance.md).
#include "backend/cuda/ssd_common.cuh"
#include "backend/cuda/ssd_whole.h"

#include <cuda_bf16.h>
#include <type_traits>

// Occupancy over registers: these kernels wait on latency, not arithmetic, and more blocks an SM hide it better
// than registers do. On an H200 (2026-12-05, m2x24 bf16 8 x 2048, tf32 products), the step ran 185.6 ms with one
// block an SM guaranteed for the light tile kernels (CB, states, output, dB/dC: 64-97 registers, 2-3 blocks),
// 161.1 ms at three and 151.8 ms at four (64 registers: dB/dC spills 40 bytes); dCB and dX at two blocks (128
// registers) ran 1.6x and 1.13x faster than at one (H100). The float32 FFMA forms keep the compiler's choice: not
// measured at these bounds. Tuning knobs: -DSSD_HEAVY_BLOCKS=n, -DSSD_LIGHT_BLOCKS=n, -DSSD_TK=n (32 ran slower).
#ifndef SSD_HEAVY_BLOCKS
#define SSD_HEAVY_BLOCKS 2 // tf32: the blocks an SM must hold of the two register-heavy kernels (dCB, dX)
#endif
#ifndef SSD_LIGHT_BLOCKS
#define SSD_LIGHT_BLOCKS 4 // tf32: the blocks an SM must hold of the other tile kernels
#endif

// ---- the forward -----------------------------------------------------------------------------------------------
// CB [B, nch, G, Q, Q] = C B^T of each (b, chunk, group): a block each (Q <= SSD_TILE: one tile).
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_LIGHT_BLOCKS : 1)
    ssd_cb_kernel(float *CB, const float *Bm, const float *Cm, SsdShape s) {
    __shared__ SsdTiles t;
    const int bc = blockIdx.x, g = blockIdx.y, b = bc / s.nch, c = bc % s.nch, L = s.len(c);
    const size_t off = s.row0(b, c) * s.ldx + (size_t)g * s.N;
    float acc[4][4] = {};
    gemm_acc<TC>(acc, t, View<true>{Cm + off, (size_t)s.ldx, 1, L}, View<true>{Bm + off, (size_t)s.ldx, 1, L}, s.N);
    float *out = CB + ((size_t)bc * s.G + g) * s.Q * s.Q;
    acc_each<TC>([&](int ri, int ci, int i, int j) {
        if (i < L && j < L) out[(size_t)i * s.Q + j] = AccLayout<TC>::at(acc, ri, ci);
    });
}

// out [B, nch, H, P, N]: per (b, chunk, head) sum_j scale_j U_j V_j^T, U_j head h's P values of row j (row stride
// ldu), V_j group g's N values (row stride ldx); scale_j = exp(a_last - a_j) dt_j (mode 0: the chunk states from x
// and B) or exp(a_j) (mode 1: the backward's G_c from dY and C). A block per 64 x 64 tile of (p, n).
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_LIGHT_BLOCKS : 1)
    ssd_chunk_outer_kernel(float *out, const float *U, int ldu, const float *V, const float *dts, const float *acs,
                           int mode, SsdShape s) {
    __shared__ SsdTiles t;
    __shared__ float sc[SSD_Q];
    const int bc = blockIdx.x, h = blockIdx.y, b = bc / s.nch, c = bc % s.nch, L = s.len(c), g = h / s.hpg;
    const int tiles_n = (s.N + SSD_TILE - 1) / SSD_TILE, p0 = (blockIdx.z / tiles_n) * SSD_TILE,
              n0 = (blockIdx.z % tiles_n) * SSD_TILE;
    const size_t o = s.bht(b, h, c), row0 = s.row0(b, c);
    if ((int)threadIdx.x < L) {
        const float a = acs[o + threadIdx.x];
        sc[threadIdx.x] = mode ? expf(a) : expf(acs[o + L - 1] - a) * dts[o + threadIdx.x];
    }
    __syncthreads();
    float acc[4][4] = {};
    View<false> u{U + row0 * ldu + (size_t)h * s.P + p0, 1, (size_t)ldu, s.P - p0, nullptr, sc};
    View<false> v{V + row0 * s.ldx + (size_t)g * s.N + n0, 1, (size_t)s.ldx, s.N - n0};
    gemm_acc<TC>(acc, t, u, v, L);
    float *dst = out + ((size_t)bc * s.H + h) * s.P * s.N;
    acc_each<TC>([&](int ri, int ci, int i, int j) {
        const int p = p0 + i, n = n0 + j;
        if (p < s.P && n < s.N) dst[(size_t)p * s.N + n] = AccLayout<TC>::at(acc, ri, ci);
    });
}


// y [B*T, H*P] per (b, chunk, head) and 64-column tile of P: M X (the chunk itself) + exp(a_i) C S_in^T (the state
// entering it) + D x.
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_LIGHT_BLOCKS : 1)
    ssd_chunk_scan_kernel(float *y, const float *x, const float *Cm, const float *CB, const float *st, const float *dts,
                          const float *acs, const float *Dv, SsdShape s) {
    __shared__ SsdTiles t;
    __shared__ float sa[SSD_Q], sd[SSD_Q];
    const int bc = blockIdx.x, h = blockIdx.y, p0 = blockIdx.z * SSD_TILE, b = bc / s.nch, c = bc % s.nch;
    const int L = s.len(c), g = h / s.hpg, HP = s.H * s.P;
    const size_t o = s.bht(b, h, c), row0 = s.row0(b, c);
    if ((int)threadIdx.x < L) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
    __syncthreads();
    float acc[4][4] = {}, acc_st[4][4] = {};
    const float *xh = x + row0 * s.ldx + (size_t)h * s.P + p0;
    gemm_acc<TC>(acc, t, MaskView<false>{CB + ((size_t)bc * s.G + g) * s.Q * s.Q, s.Q, sa, sd, L},
                 View<false>{xh, 1, (size_t)s.ldx, s.P - p0}, L);
    gemm_acc<TC>(acc_st, t, View<true>{Cm + row0 * s.ldx + (size_t)g * s.N, (size_t)s.ldx, 1, L},
                 View<true>{st + (((size_t)bc * s.H + h) * s.P + p0) * s.N, (size_t)s.N, 1, s.P - p0}, s.N);
    const float D = Dv[h];
    acc_each<TC>([&](int ri, int ci, int i, int p) {
        if (i < L && p0 + p < s.P)
            y[(row0 + i) * HP + (size_t)h * s.P + p0 + p] =
                AccLayout<TC>::at(acc, ri, ci) +
                (expf(sa[i]) * AccLayout<TC>::at(acc_st, ri, ci) + D * xh[(size_t)i * s.ldx + p]);
    });
}

// ---- the backward ----------------------------------------------------------------------------------------------
// Per (b, chunk, group): dCB [B, nch, G, Q, Q] = sum over the group's heads of dM o exp(a_i - a_j) dt_j, dM = dY X^T
// (masked); per head daM = rows - columns of dM o M (a's gradient through M), ddM = columns of dM o CB o exp(..)
// (dt's), [B, H, T]. Row and column sums through shared memory in a fixed order.
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_HEAVY_BLOCKS : 1)
    ssd_dcb_kernel(float *dCB, float *daM, float *ddM, const float *dy, const float *x, const float *CB,
                   const float *dts, const float *acs, SsdShape s) {
    typedef AccLayout<TC> AL;
    __shared__ SsdTiles t;
    __shared__ float sa[SSD_Q], sd[SSD_Q], rows_gm[SSD_TILE][AL::ROW_SLOTS + 1], cols_gm[SSD_TILE][AL::COL_SLOTS + 1],
        cols_dd[SSD_TILE][AL::COL_SLOTS + 1];
    const int bc = blockIdx.x, g = blockIdx.y, b = bc / s.nch, c = bc % s.nch, L = s.len(c), HP = s.H * s.P;
    const size_t row0 = s.row0(b, c);
    const float *cb = CB + ((size_t)bc * s.G + g) * s.Q * s.Q;
    float cbv[4][4], dcb[4][4] = {};
    acc_each<TC>(
        [&](int ri, int ci, int i, int j) { AL::at(cbv, ri, ci) = i < L && j <= i ? cb[(size_t)i * s.Q + j] : 0.0f; });
    for (int h = g * s.hpg; h < (g + 1) * s.hpg; h++) {
        const size_t o = s.bht(b, h, c);
        __syncthreads(); // the previous head's reads of sa, sd and the sums
        if ((int)threadIdx.x < L) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
        float dm[4][4] = {};
        gemm_acc<TC>(dm, t, View<true>{dy + row0 * HP + (size_t)h * s.P, (size_t)HP, 1, L},
                     View<true>{x + row0 * s.ldx + (size_t)h * s.P, (size_t)s.ldx, 1, L},
                     s.P); // (its barriers publish sa)
        float rg[AL::NR] = {}, cg[AL::NC] = {}, cd[AL::NC] = {};
        acc_each<TC>([&](int ri, int ci, int i, int j) {
            if (i < L && j <= i) {
                const float d = AL::at(dm, ri, ci), lw = expf(sa[i] - sa[j]), k = AL::at(cbv, ri, ci) * lw,
                            m = k * sd[j], gm = d * m;
                cd[ci] += d * k;
                rg[ri] += gm, cg[ci] += gm;
                AL::at(dcb, ri, ci) += d * (lw * sd[j]);
            }
        });
#pragma unroll
        for (int ri = 0; ri < AL::NR; ri++)
            rows_gm[AL::row(ri)][AL::row_slot()] = rg[ri];
#pragma unroll
        for (int ci = 0; ci < AL::NC; ci++)
            cols_gm[AL::col(ci)][AL::col_slot()] = cg[ci], cols_dd[AL::col(ci)][AL::col_slot()] = cd[ci];
        __syncthreads();
        if ((int)threadIdx.x < L) {
            const int i = threadIdx.x;
            float rs = 0.0f, cs = 0.0f, ds = 0.0f;
            for (int q = 0; q < AL::ROW_SLOTS; q++)
                rs += rows_gm[i][q];
            for (int q = 0; q < AL::COL_SLOTS; q++)
                cs += cols_gm[i][q], ds += cols_dd[i][q];
            daM[o + i] = rs - cs, ddM[o + i] = ds;
        }
    }
    float *out = dCB + ((size_t)bc * s.G + g) * s.Q * s.Q;
    acc_each<TC>([&](int ri, int ci, int i, int j) {
        if (i < L && j < L) out[(size_t)i * s.Q + j] = AL::at(dcb, ri, ci); // (0 above the diagonal)
    });
}

// Per (b, chunk, head), all of P in tiles of 64: dX = M^T dY + diag(w) B dS^T + D dY (w_j = exp(a_last - a_j) dt_j;
// S the state entering the chunk, dS the gradient of the one leaving it), and what a's and dt's gradients need of
// the whole head: r_j = x_j . (B dS^T)_j, q_i = dY_i . (C S^T)_i, <dS, S>. Writes daX (-w r + exp(a) q, and at the
// chunk's last position the terms of a_last: sum w r + exp(a_last) <dS, S>), ddX (exp(a_last - a_j) r_j) [B, H, T]
// and D's partial sum dDp [B, nch, H] (double).
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_HEAVY_BLOCKS : 1)
    ssd_dx_kernel(float *dx, int ldd, float *daX, float *ddX, double *dDp, const float *dy, const float *x,
                  const float *Bm, const float *Cm, const float *CB, const float *st, const float *dst,
                  const float *dts, const float *acs, const float *Dv, SsdShape s) {
    typedef AccLayout<TC> AL;
    __shared__ SsdTiles t1;
    __shared__ float sa[SSD_Q], sd[SSD_Q], rows_r[SSD_TILE][AL::ROW_SLOTS + 1], rows_q[SSD_TILE][AL::ROW_SLOTS + 1];
    const int bc = blockIdx.x, h = blockIdx.y, b = bc / s.nch, c = bc % s.nch, L = s.len(c), g = h / s.hpg;
    const int HP = s.H * s.P;
    const size_t o = s.bht(b, h, c), row0 = s.row0(b, c), PN = (size_t)s.P * s.N;
    if ((int)threadIdx.x < L) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
    __syncthreads();
    const float last = sa[L - 1], D = Dv[h];
    const float *cb = CB + ((size_t)bc * s.G + g) * s.Q * s.Q, *S = st + ((size_t)bc * s.H + h) * PN,
                *dS = dst + ((size_t)bc * s.H + h) * PN;
    const View<true> Bv{Bm + row0 * s.ldx + (size_t)g * s.N, (size_t)s.ldx, 1, L},
        Cv{Cm + row0 * s.ldx + (size_t)g * s.N, (size_t)s.ldx, 1, L};
    float r_tot = 0.0f, q_tot = 0.0f, sds = 0.0f, dDs = 0.0f; // r_tot, q_tot: thread i < 64's row i
    for (int p0 = 0; p0 < s.P; p0 += SSD_TILE) {
        const float *dyh = dy + row0 * HP + (size_t)h * s.P + p0, *xh = x + row0 * s.ldx + (size_t)h * s.P + p0;
        const View<true> dSv{dS + (size_t)p0 * s.N, (size_t)s.N, 1, s.P - p0},
            Sv{S + (size_t)p0 * s.N, (size_t)s.N, 1, s.P - p0};
        // the products one after another (dX's two, then C S^T), not side by side: fewer registers live at once
        float rr[AL::NR] = {}, qq[AL::NR] = {};
        {
            float acc1[4][4] = {}, acc2[4][4] = {};
            gemm_acc<TC>(acc1, t1, MaskView<true>{cb, s.Q, sa, sd, L}, View<false>{dyh, 1, (size_t)HP, s.P - p0}, L);
            gemm_acc<TC>(acc2, t1, Bv, dSv, s.N);
            acc_each<TC>([&](int ri, int ci, int j, int p) {
                if (j >= L || p0 + p >= s.P) return;
                const float w = expf(last - sa[j]) * sd[j], a2 = AL::at(acc2, ri, ci);
                const float dyv = dyh[(size_t)j * HP + p], xv = xh[(size_t)j * s.ldx + p];
                dx[(row0 + j) * ldd + (size_t)h * s.P + p0 + p] = AL::at(acc1, ri, ci) + (w * a2 + D * dyv);
                rr[ri] += xv * a2, dDs += dyv * xv;
            });
        }
        {
            float acc3[4][4] = {};
            // C S^T, and <dS, S> from the S values this thread stages and the same elements of dS (each element
            // once: the staging covers every (p, n) of the tile once)
            float vc[SSD_PER_THREAD], vs[SSD_PER_THREAD];
            tile_fetch(vc, Cv, 0, s.N), tile_fetch(vs, Sv, 0, s.N);
            for (int k0 = 0; k0 < s.N; k0 += SSD_TK) { // (as gemm_acc: the next step's reads in flight)
                tile_stash<true>(t1.a, vc), tile_stash<true>(t1.b, vs);
                float vds[SSD_PER_THREAD];
                tile_fetch(vds, dSv, k0, s.N);
#pragma unroll
                for (int q = 0; q < SSD_PER_THREAD; q++)
                    sds += vds[q] * vs[q];
                __syncthreads();
                if (k0 + SSD_TK < s.N) tile_fetch(vc, Cv, k0 + SSD_TK, s.N), tile_fetch(vs, Sv, k0 + SSD_TK, s.N);
                tile_mma<TC>(acc3, t1);
                __syncthreads();
            }
            acc_each<TC>([&](int ri, int ci, int j, int p) {
                if (j < L && p0 + p < s.P) qq[ri] += dyh[(size_t)j * HP + p] * AL::at(acc3, ri, ci);
            });
        }
#pragma unroll
        for (int ri = 0; ri < AL::NR; ri++)
            rows_r[AL::row(ri)][AL::row_slot()] = rr[ri], rows_q[AL::row(ri)][AL::row_slot()] = qq[ri];
        __syncthreads();
        if (threadIdx.x < SSD_TILE)
            for (int q = 0; q < AL::ROW_SLOTS; q++)
                r_tot += rows_r[threadIdx.x][q], q_tot += rows_q[threadIdx.x][q];
        // (the next writes of rows_r follow the next tile's barriers)
    }
    const int j = threadIdx.x;
    float e = 0.0f, wr = 0.0f;
    if (j < L) e = expf(last - sa[j]), wr = e * sd[j] * r_tot;
    const double dlast = block_reduce((double)wr, SumOp()), sds_all = block_reduce((double)sds, SumOp());
    const double dD_all = block_reduce((double)dDs, SumOp());
    if (j < L) {
        float da = -wr + expf(sa[j]) * q_tot;
        if (j == L - 1) da += (float)(dlast + expf(last) * sds_all);
        daX[o + j] = da, ddX[o + j] = e * r_tot;
    }
    if (j == 0) dDp[(size_t)bc * s.H + h] = dD_all;
}

// Per (b, chunk, group) and 64-column tile of N: dC = dCB B + sum_h diag(exp(a_h)) dY_h S_h (blockIdx.y 0) or
// dB = dCB^T C + sum_h diag(w_h) X_h dS_h (1), the heads in order inside one accumulation; rows of ldd.
template <bool TC>
__global__ static void __launch_bounds__(SSD_THREADS, TC ? SSD_LIGHT_BLOCKS : 1)
    ssd_dbc_kernel(float *dBm, float *dCm, int ldd, const float *dy, const float *x, const float *Bm, const float *Cm,
                   const float *dCB, const float *st, const float *dst, const float *dts, const float *acs,
                   SsdShape s) {
    __shared__ SsdTiles t;
    __shared__ float sc[SSD_Q];
    const int bg = blockIdx.x, db = blockIdx.y, n0 = blockIdx.z * SSD_TILE, bc = bg / s.G, g = bg % s.G;
    const int b = bc / s.nch, c = bc % s.nch, L = s.len(c), HP = s.H * s.P;
    const size_t row0 = s.row0(b, c), PN = (size_t)s.P * s.N;
    const float *dcb = dCB + (size_t)bg * s.Q * s.Q;
    const View<false> other{(db ? Cm : Bm) + row0 * s.ldx + (size_t)g * s.N + n0, 1, (size_t)s.ldx, s.N - n0};
    float acc[4][4] = {};
    if (db)
        gemm_acc<TC>(acc, t, View<false>{dcb, 1, (size_t)s.Q, L}, other, L); // dCB^T C
    else
        gemm_acc<TC>(acc, t, View<true>{dcb, (size_t)s.Q, 1, L}, other, L); // dCB B
    for (int h = g * s.hpg; h < (g + 1) * s.hpg; h++) {
        const size_t o = s.bht(b, h, c);
        __syncthreads(); // the previous head's reads of sc
        if ((int)threadIdx.x < L) {
            const float a = acs[o + threadIdx.x];
            sc[threadIdx.x] = db ? expf(acs[o + L - 1] - a) * dts[o + threadIdx.x] : expf(a);
        }
        __syncthreads(); // (the loaders read sc as they stage)
        const float *U = db ? x + row0 * s.ldx + (size_t)h * s.P : dy + row0 * HP + (size_t)h * s.P;
        const float *Sh = (db ? dst : st) + ((size_t)bc * s.H + h) * PN + n0;
        gemm_acc<TC>(acc, t, View<true>{U, (size_t)(db ? s.ldx : HP), 1, L, sc},
                     View<false>{Sh, 1, (size_t)s.N, s.N - n0}, s.P);
    }
    float *out = (db ? dBm : dCm) + row0 * ldd + (size_t)g * s.N + n0;
    acc_each<TC>([&](int ri, int ci, int i, int n) {
        if (i < L && n0 + n < s.N) out[(size_t)i * ldd + n] = AccLayout<TC>::at(acc, ri, ci);
    });
}

// ---- the ops ---------------------------------------------------------------------------------------------------

template <bool TC> static ssd_fwd_bufs ssd_recompute(const ssd_args *a, const SsdShape &s, float *state, int for_bwd) {
    const size_t bht = (size_t)s.B * s.H * s.T, PN = (size_t)s.P * s.N;
    ssd_fwd_bufs f;
    f.dts = scratch_floats(bht), f.acs = scratch_floats(bht), f.dsp = for_bwd ? scratch_floats(bht) : NULL;
    f.CB = scratch_floats((size_t)s.B * s.nch * s.G * s.Q * s.Q);
    f.st = scratch_floats((size_t)s.B * s.nch * s.H * PN);
    ktime_start();
    ssd_dt_launch(a, s, &f);
    ssd_cb_kernel<TC><<<dim3(s.B * s.nch, s.G), SSD_THREADS>>>(f.CB, a->Bm, a->Cm, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd CB");
    const int tiles = cdiv(s.P, SSD_TILE) * cdiv(s.N, SSD_TILE);
    ssd_chunk_outer_kernel<TC>
        <<<dim3(s.B * s.nch, s.H, tiles), SSD_THREADS>>>(f.st, a->x, a->ldx, a->Bm, f.dts, f.acs, 0, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd states");
    ssd_state_pass_kernel<<<dim3((unsigned)cdiv((int)PN, 256), s.H, s.B), 256>>>(f.st, state, f.acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd state pass");
    return f;
}


template <bool TC> static void ssd_fwd_run(const ssd_args *a, float *y, float *state) {
    const SsdShape s = shape_of(a);
    ssd_fwd_bufs f = ssd_recompute<TC>(a, s, state, 0);
    ssd_chunk_scan_kernel<TC><<<dim3(s.B * s.nch, s.H, cdiv(s.P, SSD_TILE)), SSD_THREADS>>>(y, a->x, a->Cm, f.CB, f.st,
                                                                                            f.dts, f.acs, a->Dv, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd output");
    ssd_bufs_free(&f);
}

template <bool TC> static void ssd_bwd_run(const ssd_args *a, const ssd_grads *gr, const float *dy) {
    const SsdShape s = shape_of(a);
    ssd_fwd_bufs f = ssd_recompute<TC>(a, s, NULL, 1);
    const size_t bht = (size_t)s.B * s.H * s.T, PN = (size_t)s.P * s.N, n_bch = (size_t)s.B * s.nch * s.H;
    float *dst = scratch_floats(n_bch * PN), *dCB = scratch_floats((size_t)s.B * s.nch * s.G * s.Q * s.Q);
    float *da_dd = scratch_floats(4 * bht), *daM = da_dd, *ddM = da_dd + bht, *daX = da_dd + 2 * bht,
          *ddX = da_dd + 3 * bht;
    double *part, *dDp;
    CUDA_CHECK(cudaMallocAsync((void **)&part, sizeof(double) * 3 * n_bch, cudaStreamPerThread));
    dDp = part + 2 * n_bch;
    const int tiles = cdiv(s.P, SSD_TILE) * cdiv(s.N, SSD_TILE);
    // the gradients of the states: G_c from dY and C, then the reverse pass over chunks
    ssd_chunk_outer_kernel<TC>
        <<<dim3(s.B * s.nch, s.H, tiles), SSD_THREADS>>>(dst, dy, s.H * s.P, a->Cm, f.dts, f.acs, 1, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dstates");
    ssd_dstate_pass_kernel<<<dim3((unsigned)cdiv((int)PN, 256), s.H, s.B), 256>>>(dst, f.acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dstate pass");
    ssd_dcb_kernel<TC><<<dim3(s.B * s.nch, s.G), SSD_THREADS>>>(dCB, daM, ddM, dy, a->x, f.CB, f.dts, f.acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dCB");
    ssd_dx_kernel<TC><<<dim3(s.B * s.nch, s.H), SSD_THREADS>>>(gr->dx, gr->ldd, daX, ddX, dDp, dy, a->x, a->Bm, a->Cm,
                                                               f.CB, f.st, dst, f.dts, f.acs, a->Dv, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dx");
    ssd_dbc_kernel<TC><<<dim3(s.B * s.nch * s.G, 2, cdiv(s.N, SSD_TILE)), SSD_THREADS>>>(
        gr->dBm, gr->dCm, gr->ldd, dy, a->x, a->Bm, a->Cm, dCB, f.st, dst, f.dts, f.acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dB dC");
    ssd_dt_grads_launch(a, gr, s, f, da_dd, part, dDp);
    scratch_free(dst), scratch_free(dCB), scratch_free(da_dd), scratch_free(part);
    ssd_bufs_free(&f);
}

extern "C" void ssd_fwd_cuda(const ssd_args *a, mat ym, float *state) {
    if (a->B <= 0 || a->T <= 0 || a->H <= 0 || a->P <= 0) return; // nothing to run: the state stays as it is
    const int HP = a->H * a->P;
    CHECK(ym.ld == HP && ym.dt != MAT_I8, "ssd_fwd: y is dense [B*T, H*P] float32 or bf16 (ld %d, H*P %d)", ym.ld, HP);
    const bool whole = ssd_whole_takes(a);
    if (whole && ssd_whole_fwd(a, ym, state)) return; // a float32 y, or a bf16 y the fused output kernel writes
    // else a float32 y, then rounded where y is bf16
    const size_t rows = (size_t)a->B * a->T;
    float *y = mat_f(ym) ? mat_f(ym) : scratch_floats(rows * HP);
    if (whole)
        ssd_whole_fwd(a, mat_f32(y, HP), state);
    else if (a->tf32)
        ssd_fwd_run<true>(a, y, state);
    else
        ssd_fwd_run<false>(a, y, state);
    if (!mat_f(ym)) {
        convert_rows_cuda(ym, mat_f32(y, HP), (int)rows, HP);
        scratch_free(y);
    }
}

extern "C" void ssd_bwd_cuda(const ssd_args *a, const ssd_grads *gr, const float *dy) {
    if (a->B <= 0 || a->T <= 0 || a->H <= 0 || a->P <= 0) return; // no positions: no gradients to write or add
    if (ssd_whole_takes(a))
        ssd_whole_bwd(a, gr, dy);
    else if (a->tf32)
        ssd_bwd_run<true>(a, gr, dy);
    else
        ssd_bwd_run<false>(a, gr, dy);
}

// ---- the decode step -------------------------------------------------------------------------------------------
// A block per (b, head): warp w takes the state's rows p = w, w + 4, ..., its lanes the columns n (coalesced),
// y_p summed over them by a butterfly; dt computed by every thread (one value). The recurrence as the CPU's.
#define SSD_STEP_WARPS 4
__global__ static void __launch_bounds__(SSD_STEP_WARPS * 32)
    ssd_step_kernel(float *y, float *state, const float *x, const float *Bm, const float *Cm, int ldx, const float *dt,
                    int lddt, const float *dt_bias, const float *A_log, const float *Dv, float dt_min, float dt_max,
                    int H, int P, int N, int hpg) {
    const int h = blockIdx.x, b = blockIdx.y, g = h / hpg, lane = threadIdx.x % 32, wp = threadIdx.x / 32;
    float sl;
    const float d = ssd_dt(dt[(size_t)b * lddt + h] + dt_bias[h], dt_min, dt_max, &sl);
    const float e = expf(d * -expf(A_log[h])), D = Dv[h];
    const float *xr = x + (size_t)b * ldx + (size_t)h * P, *Bv = Bm + (size_t)b * ldx + (size_t)g * N,
                *Cv = Cm + (size_t)b * ldx + (size_t)g * N;
    float *S = state + ((size_t)b * H + h) * P * N;
    for (int p = wp; p < P; p += SSD_STEP_WARPS) {
        const float xp = d * xr[p];
        float acc = 0.0f;
        for (int n = lane; n < N; n += 32) {
            const float v = e * S[(size_t)p * N + n] + xp * Bv[n];
            S[(size_t)p * N + n] = v;
            acc += v * Cv[n];
        }
        for (int off = 16; off > 0; off >>= 1)
            acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) y[(size_t)b * H * P + (size_t)h * P + p] = acc + D * xr[p];
    }
}

extern "C" void ssd_step_cuda(const ssd_args *a, float *y, float *state) {
    CHECK(a->T == 1, "ssd_step takes one position (T = %d)", a->T);
    CHECK(a->G >= 1 && a->H % a->G == 0, "ssd_step: %d groups do not divide %d heads", a->G, a->H);
    if (a->B <= 0 || a->H <= 0) return;
    ssd_step_kernel<<<dim3(a->H, a->B), SSD_STEP_WARPS * 32>>>(y, state, a->x, a->Bm, a->Cm, a->ldx, a->dt, a->lddt,
                                                               a->dt_bias, a->A_log, a->Dv, a->dt_min, a->dt_max, a->H,
                                                               a->P, a->N, a->H / a->G);
    CUDA_CHECK_LAUNCH();
}

// ---- the gated RMSNorm -----------------------------------------------------------------------------------------
// A block per row, a fixed-order block reduction per group (sums in double, as the CPU's); the weight's gradient as
// column sums of dout v rstd (colsum_acc: per-chunk partials added in order) from the rstd the backward leaves per
// (row, group). The arithmetic is the CPU's, expression for expression. (A warp per row with a shuffle butterfly,
// tried on 2026-12-05, ran slower on an H100: 0.177 ms a forward and 0.540 a backward at m2x24's 16384 x 1536,
// against this form's 0.131 and 0.371.)
__device__ __forceinline__ static float silu_of(float z) { return z / (1.0f + expf(-z)); }
// y, z and out are float32 or bf16 (lean training's saved y and z, out_proj's operand): read and written through
// these, the arithmetic float32 whatever they are.
__device__ __forceinline__ static float gn_ld(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ static float gn_ld(const __nv_bfloat16 *p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ static void gn_st(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ static void gn_st(__nv_bfloat16 *p, size_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// a group's 1 / rms from its sum of squares (both kernels, both forms)
__device__ __forceinline__ static float gn_rstd(double ss, int gs, float eps) {
    return 1.0f / sqrtf((float)(ss / gs) + eps);
}
// The backward at one element: *dyi and *dzi from y, z, dout, the weight, the group's rstd rs and c (<dout w, v> / gs
// times rs^3); returns v = y silu(z) as the backward forms it, the weight gradient's factor. (Both backward forms.)
// dz float32, or bf16 (lean training: in_proj's backward GEMMs read it so, rounded once here rather than copied).
template <typename TD>
__device__ __forceinline__ static float gn_grad_at(float *dyi, TD *dzi, float yi, float zi, float doi, float wi,
                                                   float rs, float c) {
    const float sg = 1.0f / (1.0f + expf(-zi)), sz = zi * sg, v = yi * sz;
    const float dv = doi * wi * rs - v * c;
    *dyi = dv * sz;
    gn_st(dzi, 0, dv * yi * sg * (1.0f + zi * (1.0f - sg)));
    return v;
}

// The row's v = y silu(z) is computed twice (for the sum, then for the output) rather than stored in out between:
// a bf16 out would round it. (Each thread's first 8 columns of a group held in registers instead, the same bits, ran
// the backward 8.9 -> 14.4 ms a step on an H100: m2x24 bf16 at 8 x 2048, 2026-12-06.)
template <typename TO, typename TY, typename TZ>
__global__ static void __launch_bounds__(RED_THREADS)
    gated_rmsnorm_fwd_kernel(TO *out, int ldo, const TY *y, int ldy, const TZ *z, int ldz, const float *w, int D, int G,
                             float eps) {
    const size_t r = blockIdx.x;
    const int gs = D / G;
    const TY *yr = y + r * ldy;
    const TZ *zr = z + r * ldz;
    TO *o = out + r * ldo;
    for (int g = 0; g < G; g++) {
        double ss = 0;
        for (int i = g * gs + threadIdx.x; i < (g + 1) * gs; i += RED_THREADS) {
            const float v = gn_ld(yr, i) * silu_of(gn_ld(zr, i));
            ss += (double)v * v;
        }
        ss = block_reduce(ss, SumOp());
        const float rs = gn_rstd(ss, gs, eps);
        for (int i = g * gs + threadIdx.x; i < (g + 1) * gs; i += RED_THREADS)
            gn_st(o, i, gn_ld(yr, i) * silu_of(gn_ld(zr, i)) * rs * w[i]);
    }
}

// The same with out, y and z all bf16 and groups of even width: two columns a thread at a time (bf16x2 loads and
// stores, half the instructions of the form above, whose loads and expf kept an H100 at 1.0 TB/s, 66% of its issue
// rate busy: ncu, m2x24 bf16, 2026-12-07; the step 1.2 ms faster with this form). Each element's expressions are the
// form above's; a group's sum is taken in another fixed order (a thread's two columns, then the next pair).
// SSM_GN_PAIRS=0: the form above.
__global__ static void __launch_bounds__(RED_THREADS)
    gated_rmsnorm_fwd_pair_kernel(__nv_bfloat162 *out, int ldo, const __nv_bfloat162 *y, int ldy,
                                  const __nv_bfloat162 *z, int ldz, const float2 *w, int D, int G, float eps) {
    const size_t r = blockIdx.x;
    const int gs = D / G, hp = gs / 2; // (ld* and D in pairs of columns: the caller halves them)
    const __nv_bfloat162 *yr = y + r * ldy, *zr = z + r * ldz;
    __nv_bfloat162 *o = out + r * ldo;
    for (int g = 0; g < G; g++) {
        double ss = 0;
        for (int i = g * hp + threadIdx.x; i < (g + 1) * hp; i += RED_THREADS) {
            const float2 yv = __bfloat1622float2(yr[i]), zv = __bfloat1622float2(zr[i]);
            const float v0 = yv.x * silu_of(zv.x), v1 = yv.y * silu_of(zv.y);
            ss += (double)v0 * v0;
            ss += (double)v1 * v1;
        }
        ss = block_reduce(ss, SumOp());
        const float rs = gn_rstd(ss, gs, eps);
        for (int i = g * hp + threadIdx.x; i < (g + 1) * hp; i += RED_THREADS) {
            const float2 yv = __bfloat1622float2(yr[i]), zv = __bfloat1622float2(zr[i]), wv = w[i];
            o[i] = __floats2bfloat162_rn(yv.x * silu_of(zv.x) * rs * wv.x, yv.y * silu_of(zv.y) * rs * wv.y);
        }
    }
}
static bool gn_pairs_on(const void *o, int ldo, const void *y, int ldy, const void *z, int ldz, const float *w, int D,
                        int G) {
    const char *e = getenv("SSM_GN_PAIRS");
    if (e && e[0] == '0') return false;
    return (D / G) % 2 == 0 && ldo % 2 == 0 && ldy % 2 == 0 && ldz % 2 == 0 && (uintptr_t)o % 4 == 0 &&
           (uintptr_t)y % 4 == 0 && (uintptr_t)z % 4 == 0 && (uintptr_t)w % 8 == 0;
}

template <typename TY, typename TZ, typename TD>
__global__ static void __launch_bounds__(RED_THREADS)
    gated_rmsnorm_bwd_kernel(float *dy, TD *dz, int lddz, float *rstd, const float *dout, const TY *y, int ldy,
                             const TZ *z, int ldz, const float *w, int D, int G, float eps) {
    const size_t r = blockIdx.x;
    const int gs = D / G;
    const TY *yr = y + r * ldy;
    const TZ *zr = z + r * ldz;
    const float *dor = dout + r * D;
    float *dyr = dy + r * D;
    TD *dzr = dz + r * lddz;
    for (int g = 0; g < G; g++) {
        double ss = 0, dot = 0;
        for (int i = g * gs + threadIdx.x; i < (g + 1) * gs; i += RED_THREADS) {
            const float v = gn_ld(yr, i) * silu_of(gn_ld(zr, i));
            ss += (double)v * v;
            dot += (double)dor[i] * w[i] * v;
        }
        ss = block_reduce(ss, SumOp());
        dot = block_reduce(dot, SumOp());
        const float rs = gn_rstd(ss, gs, eps), c = (float)(dot / gs) * rs * rs * rs;
        if (threadIdx.x == 0) rstd[r * G + g] = rs;
        for (int i = g * gs + threadIdx.x; i < (g + 1) * gs; i += RED_THREADS)
            gn_grad_at(dyr + i, dzr + i, gn_ld(yr, i), gn_ld(zr, i), dor[i], w[i], rs, c);
    }
}

// ---- the same with a row in registers (SSM_GN_FUSED=2, the default: the backward alone; =1 both, =0 neither) ------
// On an H100 (2026-12-07) the backward's form took 2.5 ms off the m2x24 step (8 x 2048, bf16), the forward's added 0.5.
// Each thread's columns i = t + 256 k (k < EPT) are read once into registers: the forward reads y and z once, not
// twice; the backward reads dout, y and z once, not three times (its two passes and the weight gradient's column
// sums), summing dout v rstd over GN_ROWS rows a block as it goes (partials, then colsum_finish in order). The
// expressions are the kernels' above, term for term; the sums' orders differ (a group's columns by thread, not
// strided within the group; the weight gradient in chunks of GN_ROWS rows, not 64): fixed, so the same bits every run.
#define GN_ROWS 8    // rows a backward block walks, adding its part of the weight gradient
#define GN_EPT_MAX 8 // columns a thread holds: rows of at most 2048
static bool gn_fused_on(int D, bool bwd) { // SSM_GN_FUSED=1: both kernels; =2 (unset): the backward's alone; =0
    const char *e = getenv("SSM_GN_FUSED");
    const int v = e && *e ? atoi(e) : 2;
    return (v == 1 || (v == 2 && bwd)) && D <= GN_EPT_MAX * RED_THREADS;
}

template <typename TO, typename TY, typename TZ, int EPT>
__global__ static void __launch_bounds__(RED_THREADS)
    gated_rmsnorm_fwd_reg_kernel(TO *out, int ldo, const TY *y, int ldy, const TZ *z, int ldz, const float *w, int D,
                                 int G, float eps) {
    const size_t r = blockIdx.x;
    const int gs = D / G;
    float v[EPT];
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i = (int)threadIdx.x + k * RED_THREADS;
        v[k] = i < D ? gn_ld(y + r * ldy, i) * silu_of(gn_ld(z + r * ldz, i)) : 0.0f;
    }
    for (int g = 0; g < G; g++) {
        double ss = 0;
#pragma unroll
        for (int k = 0; k < EPT; k++) {
            const int i = (int)threadIdx.x + k * RED_THREADS;
            if (i < D && i / gs == g) ss += (double)v[k] * v[k];
        }
        ss = block_reduce(ss, SumOp());
        const float rs = gn_rstd(ss, gs, eps);
#pragma unroll
        for (int k = 0; k < EPT; k++) {
            const int i = (int)threadIdx.x + k * RED_THREADS;
            if (i < D && i / gs == g) gn_st(out + r * ldo, i, v[k] * rs * w[i]);
        }
    }
}

// part [cdiv(rows, GN_ROWS), D]: each block's sum of dout v rstd over its rows
// Both of a group's sums (ss, dot) reduced at once: block_reduce's order for each (the same bits), one barrier pair
// where two calls took two.
__device__ __forceinline__ static void block_reduce_pair(double &a, double &b) {
    __shared__ double buf[2][RED_THREADS / 32];
    for (int off = 16; off > 0; off >>= 1)
        a = a + __shfl_xor_sync(0xffffffffu, a, off), b = b + __shfl_xor_sync(0xffffffffu, b, off);
    if ((threadIdx.x & 31) == 0) buf[0][threadIdx.x >> 5] = a, buf[1][threadIdx.x >> 5] = b;
    __syncthreads();
    a = buf[0][0], b = buf[1][0];
#pragma unroll
    for (int i = 1; i < RED_THREADS / 32; i++)
        a = a + buf[0][i], b = b + buf[1][i];
    __syncthreads();
}

// A row's columns of y, z and dout that this thread holds (0 past D)
template <typename TY, typename TZ, int EPT>
__device__ __forceinline__ static void gn_row_ld(float (&yv)[EPT], float (&zv)[EPT], float (&dov)[EPT], int r,
                                                 const float *dout, const TY *y, int ldy, const TZ *z, int ldz, int D) {
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i = (int)threadIdx.x + k * RED_THREADS;
        yv[k] = i < D ? gn_ld(y + (size_t)r * ldy, i) : 0.0f, zv[k] = i < D ? gn_ld(z + (size_t)r * ldz, i) : 0.0f;
        dov[k] = i < D ? dout[(size_t)r * D + i] : 0.0f;
    }
}

// (Reading the next row's columns before this row's sums are reduced measured slower, 2026-12-07: the m2x24 bf16 step
// 98.4 ms against 96.4 without, an H100, docs/performance.md.)
template <typename TY, typename TZ, typename TD, int EPT>
__global__ static void __launch_bounds__(RED_THREADS)
    gated_rmsnorm_bwd_reg_kernel(float *dy, TD *dz, int lddz, float *part, const float *dout, const TY *y, int ldy,
                                 const TZ *z, int ldz, const float *w, int rows, int D, int G, float eps) {
    const int gs = D / G, r0 = (int)blockIdx.x * GN_ROWS, r1 = min(rows, r0 + GN_ROWS);
    float dw[EPT];
#pragma unroll
    for (int k = 0; k < EPT; k++)
        dw[k] = 0.0f;
    for (int r = r0; r < r1; r++) {
        float yv[EPT], zv[EPT], dov[EPT];
        gn_row_ld(yv, zv, dov, r, dout, y, ldy, z, ldz, D);
        for (int g = 0; g < G; g++) {
            double ss = 0, dot = 0;
#pragma unroll
            for (int k = 0; k < EPT; k++) {
                const int i = (int)threadIdx.x + k * RED_THREADS;
                if (i < D && i / gs == g) {
                    const float v = yv[k] * silu_of(zv[k]);
                    ss += (double)v * v;
                    dot += (double)dov[k] * w[i] * v;
                }
            }
            block_reduce_pair(ss, dot);
            const float rs = gn_rstd(ss, gs, eps), c = (float)(dot / gs) * rs * rs * rs;
#pragma unroll
            for (int k = 0; k < EPT; k++) {
                const int i = (int)threadIdx.x + k * RED_THREADS;
                if (i < D && i / gs == g) {
                    const float v = gn_grad_at(dy + (size_t)r * D + i, dz + (size_t)r * lddz + i, yv[k], zv[k],
                                               dov[k], w[i], rs, c);
                    dw[k] += dov[k] * v * rs;
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i = (int)threadIdx.x + k * RED_THREADS;
        if (i < D) part[(size_t)blockIdx.x * D + i] = dw[k];
    }
}

// The two launches for the columns a thread holds, cdiv(D, RED_THREADS) <= GN_EPT_MAX.
template <typename TO, typename TY, typename TZ, int EPT = 1>
static void gated_fwd_reg(TO *o, int ldo, const TY *y, int ldy, const TZ *z, int ldz, const float *w, int rows, int D,
                          int G, float eps) {
    if constexpr (EPT < GN_EPT_MAX)
        if (cdiv(D, RED_THREADS) > EPT)
            return gated_fwd_reg<TO, TY, TZ, EPT + 1>(o, ldo, y, ldy, z, ldz, w, rows, D, G, eps);
    gated_rmsnorm_fwd_reg_kernel<TO, TY, TZ, EPT><<<rows, RED_THREADS>>>(o, ldo, y, ldy, z, ldz, w, D, G, eps);
}
template <typename TY, typename TZ, typename TD, int EPT = 1>
static void gated_bwd_reg(float *dy, TD *dz, int lddz, float *part, const float *dout, const TY *y, int ldy,
                          const TZ *z, int ldz, const float *w, int rows, int D, int G, float eps) {
    if constexpr (EPT < GN_EPT_MAX)
        if (cdiv(D, RED_THREADS) > EPT)
            return gated_bwd_reg<TY, TZ, TD, EPT + 1>(dy, dz, lddz, part, dout, y, ldy, z, ldz, w, rows, D, G, eps);
    gated_rmsnorm_bwd_reg_kernel<TY, TZ, TD, EPT>
        <<<cdiv(rows, GN_ROWS), RED_THREADS>>>(dy, dz, lddz, part, dout, y, ldy, z, ldz, w, rows, D, G, eps);
}

template <typename TY, typename TZ>
struct GatedNormDw { // dout v rstd of (row, column i): the weight's gradient per element, v as the backward forms it
    const float *dout;
    const TY *y;
    const TZ *z;
    const float *rstd;
    int ldy, ldz, D, G, gs;
    __device__ float operator()(int r, int i) const {
        const float zi = gn_ld(z, (size_t)r * ldz + i), sg = 1.0f / (1.0f + expf(-zi));
        const float v = gn_ld(y, (size_t)r * ldy + i) * (zi * sg);
        return dout[(size_t)r * D + i] * v * rstd[(size_t)r * G + i / gs];
    }
};

// The kernels' forms: out, y and z each float32 or bf16 (a mat's dtype picks its template argument).
template <typename TO, typename TY>
static void gated_fwd_z(mat out, const TY *y, int ldy, mat z, const float *w, int rows, int D, int G, float eps) {
    TO *o = (TO *)out.p;
    if (gn_fused_on(D, false)) {
        if (mat_h(z))
            gated_fwd_reg(o, out.ld, y, ldy, (const __nv_bfloat16 *)mat_h(z), z.ld, w, rows, D, G, eps);
        else
            gated_fwd_reg(o, out.ld, y, ldy, mat_f(z), z.ld, w, rows, D, G, eps);
        return;
    }
    if constexpr (std::is_same<TO, __nv_bfloat16>::value && std::is_same<TY, __nv_bfloat16>::value)
        if (mat_h(z) && gn_pairs_on(o, out.ld, y, ldy, mat_h(z), z.ld, w, D, G)) {
            gated_rmsnorm_fwd_pair_kernel<<<rows, RED_THREADS>>>(
                (__nv_bfloat162 *)o, out.ld / 2, (const __nv_bfloat162 *)y, ldy / 2,
                (const __nv_bfloat162 *)mat_h(z), z.ld / 2, (const float2 *)w, D, G, eps);
            return;
        }
    if (mat_h(z))
        gated_rmsnorm_fwd_kernel<TO, TY, __nv_bfloat16>
            <<<rows, RED_THREADS>>>(o, out.ld, y, ldy, (const __nv_bfloat16 *)mat_h(z), z.ld, w, D, G, eps);
    else
        gated_rmsnorm_fwd_kernel<TO, TY, float><<<rows, RED_THREADS>>>(o, out.ld, y, ldy, mat_f(z), z.ld, w, D, G, eps);
}
template <typename TO>
static void gated_fwd_y(mat out, mat y, mat z, const float *w, int rows, int D, int G, float eps) {
    if (mat_h(y)) gated_fwd_z<TO>(out, (const __nv_bfloat16 *)mat_h(y), y.ld, z, w, rows, D, G, eps);
    else gated_fwd_z<TO>(out, mat_f(y), y.ld, z, w, rows, D, G, eps);
}

extern "C" void gated_rmsnorm_fwd_cuda(mat out, mat y, mat z, const float *w, int rows, int D, int G, float eps) {
    if (rows <= 0 || D <= 0) return;
    CHECK(G >= 1 && D % G == 0, "gated_rmsnorm: %d groups do not divide %d columns", G, D);
    CHECK(out.dt != MAT_I8 && y.dt != MAT_I8 && z.dt != MAT_I8, "gated_rmsnorm: float32 or bf16 operands");
    if (mat_h(out)) gated_fwd_y<__nv_bfloat16>(out, y, z, w, rows, D, G, eps);
    else gated_fwd_y<float>(out, y, z, w, rows, D, G, eps);
    CUDA_CHECK_LAUNCH();
}

template <typename TY, typename TZ, typename TD>
static void gated_bwd_of(float *dy, TD *dz, int lddz, float *dw, const float *dout, const TY *y, int ldy,
                         const TZ *z, int ldz, const float *w, int rows, int D, int G, float eps) {
    if (gn_fused_on(D, true)) {
        const int nblk = cdiv(rows, GN_ROWS);
        float *part = scratch_floats((size_t)nblk * D);
        gated_bwd_reg(dy, dz, lddz, part, dout, y, ldy, z, ldz, w, rows, D, G, eps);
        CUDA_CHECK_LAUNCH();
        colsum_finish(dw, part, nblk, D);
        scratch_free(part);
        return;
    }
    float *rstd = scratch_floats((size_t)rows * G);
    gated_rmsnorm_bwd_kernel<TY, TZ, TD><<<rows, RED_THREADS>>>(dy, dz, lddz, rstd, dout, y, ldy, z, ldz, w, D, G,
                                                                eps);
    CUDA_CHECK_LAUNCH();
    colsum_acc(dw, GatedNormDw<TY, TZ>{dout, y, z, rstd, ldy, ldz, D, G, D / G}, rows, D);
    scratch_free(rstd);
}
template <typename TY>
static void gated_bwd_y(float *dy, float *dz, int lddz, float *dw, const float *dout, const TY *y, int ldy, mat z,
                        const float *w, int rows, int D, int G, float eps) {
    if (mat_h(z))
        gated_bwd_of(dy, dz, lddz, dw, dout, y, ldy, (const __nv_bfloat16 *)mat_h(z), z.ld, w, rows, D, G, eps);
    else gated_bwd_of(dy, dz, lddz, dw, dout, y, ldy, mat_f(z), z.ld, w, rows, D, G, eps);
}

extern "C" void gated_rmsnorm_bwd_cuda(float *dy, mat dz, float *dw, const float *dout, mat y, mat z, const float *w,
                                       int rows, int D, int G, float eps) {
    if (rows <= 0 || D <= 0) return;
    CHECK(G >= 1 && D % G == 0, "gated_rmsnorm: %d groups do not divide %d columns", G, D);
    CHECK(y.dt != MAT_I8 && z.dt != MAT_I8 && dz.dt != MAT_I8, "gated_rmsnorm: float32 or bf16 operands");
    if (mat_h(dz) && mat_h(y) && mat_h(z)) { // lean training's: dz rounded as the kernels write it
        gated_bwd_of(dy, (__nv_bfloat16 *)mat_h(dz), dz.ld, dw, dout, (const __nv_bfloat16 *)mat_h(y), y.ld,
                     (const __nv_bfloat16 *)mat_h(z), z.ld, w, rows, D, G, eps);
        return;
    }
    // a bf16 dz otherwise: a float32 one first, rounded after (the same values)
    float *dzf = mat_f(dz) ? mat_f(dz) : scratch_floats((size_t)rows * D);
    const int lddz = mat_f(dz) ? dz.ld : D;
    if (mat_h(y)) gated_bwd_y(dy, dzf, lddz, dw, dout, (const __nv_bfloat16 *)mat_h(y), y.ld, z, w, rows, D, G, eps);
    else gated_bwd_y(dy, dzf, lddz, dw, dout, mat_f(y), y.ld, z, w, rows, D, G, eps);
    if (!mat_f(dz)) {
        convert_rows_cuda(dz, mat_f32(dzf, D), rows, D);
        scratch_free(dzf);
    }
}
