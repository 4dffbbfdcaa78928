// Mamba-2's SSD with whole chunks, fused (ssd_whole.cu takes these under SSM_SSD_FUSED=1): two tensor-core kernels
// (tf32 m16n8k8, float32 accumulation) that replace the batched GEMMs and their elementwise passes where the bytes
// between them are the cost (docs/performance.md: every pass of ssd_whole.cu is bound by its 100-200 MB copies).
//   the walk: the chunk states and their pass over chunks in one kernel. A block owns a 32 x 32 tile of one head's
//     P x N state and walks the chunks in order, the state in its warps' accumulators: per chunk it writes the state
//     entering the chunk, decays it by exp(a_last) and adds sum_j w_j x_j B_j^T as a product into the same
//     accumulators (w_j = exp(a_last - a_j) dt_j), while the next chunk's rows are copied in. The backward's
//     gradients of the states run the same walk in reverse: G_c = sum_i exp(a_i) dY_i^T C_i, dS_c = exp(a_last)
//     dS_{c+1} + G_{c+1}. No Xw copy, no per-chunk states written and read again by a pass: one write of the states
//     the later products read.
//   the output: Y = exp(a_i) C S_in^T + (CB o exp(a_i - a_j) dt_j, causal, D on the diagonal) X per (sequence,
//     chunk, head), the mask formed in the product's fragments: no M, no C S^T copy, y written once.
// The sums are the batched GEMMs' (the same terms, each rounded to tf32 as a tf32 product rounds it), in a fixed
// order: two runs give the same bits. The pass over chunks is exact float32 (the GEMM form rounds the states and
// the decays' products to tf32). Included by ssd_whole.cu (and converted, by the CPU emulator: tests/emu/run.sh).
#ifndef SSM_CUDA_SSD_FUSED_CUH
#define SSM_CUDA_SSD_FUSED_CUH

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/ssd_common.cuh"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WALK_TILE 32            // a walk block's state tile: 32 rows of P by 32 columns of N, a warp 16 x 16 of it
#define WALK_LD (WALK_TILE + 8) // its staged rows: the fragments' reads (lanes 4 g + c at [k + c][r + g]) hit 32 banks
#define OUT_PT 64               // an output block's columns of P
#define OUT_NK 16               // the first product's columns of N staged per step
#define FUSED_THREADS 128       // 4 warps: a walk block's 2 x 2 warp tiles, an output block's 4 strips of 16 rows

// Whether the fused kernels take this call: SSM_SSD_FUSED=1 (off by default until timed on a GPU), tf32 products
// (mixed precision), and the shapes and addresses they assume: P and N multiples of 32, a chunk a multiple of 16,
// x, B and C (and the backward's dy, when not NULL) rows of 16-byte aligned float4s.
static bool ssd_fused_on(const ssd_args *a, const SsdShape &s, const float *dy) {
    const char *e = getenv("SSM_SSD_FUSED");
    const bool a16 = (uintptr_t)a->x % 16 == 0 && (uintptr_t)a->Bm % 16 == 0 && (uintptr_t)a->Cm % 16 == 0 &&
                     (uintptr_t)dy % 16 == 0;
    return e && strcmp(e, "1") == 0 && a->tf32 && s.P % WALK_TILE == 0 && s.N % WALK_TILE == 0 && s.Q % 16 == 0 &&
           s.ldx % 4 == 0 && a16;
}

// ---- the walk ---------------------------------------------------------------------------------------------------
// st [B, nch, H, P, N] = the state entering each chunk (REV: the gradient of the state leaving it), from u's head
// rows scaled per position (x and w; REV: dY and exp(a)) and v's group rows (B; REV: C), rows of ldu and ldv.
// state [B, H, P, N], when not NULL (forward only): the state entering chunk 0, and it receives the one leaving the
// last. Grid (P/32 * N/32, H, B) of FUSED_THREADS.
template <bool REV>
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_walk_kernel(float *st, float *state, const float *u, int ldu, const float *v, int ldv, const float *dts,
                    const float *acs, SsdShape s) {
    __shared__ __align__(16) float su[2][SSD_Q][WALK_LD];
    __shared__ __align__(16) float sv[2][SSD_Q][WALK_LD];
    __shared__ float ssc[2][SSD_Q], sdec[2];
    const int ntn = s.N / WALK_TILE, n0 = (int)blockIdx.x % ntn * WALK_TILE, p0 = (int)blockIdx.x / ntn * WALK_TILE;
    const int h = blockIdx.y, b = blockIdx.z;
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4;
    const int pr = wp / 2 * 16, nc = wp % 2 * 16; // the warp's rows (of P) and columns (of N) in the tile
    const size_t PN = (size_t)s.P * s.N;
    const float *ub = u + (size_t)h * s.P + p0, *vb = v + (size_t)(h / s.hpg) * s.N + n0;
    // chunk c's rows into buffer k (one copy group), its scales and decay
    auto stage = [&](int c, int k) {
        const size_t row0 = s.row0(b, c), o = s.bht(b, h, c);
        for (int e = (int)threadIdx.x; e < s.Q * (WALK_TILE / 4); e += FUSED_THREADS) {
            const int j = e / (WALK_TILE / 4), q = 4 * (e % (WALK_TILE / 4));
            cp_async16(&su[k][j][q], ub + (row0 + j) * ldu + q, 16);
            cp_async16(&sv[k][j][q], vb + (row0 + j) * ldv + q, 16);
        }
        cp_async_commit();
        const float last = acs[o + s.Q - 1];
        if ((int)threadIdx.x < s.Q) {
            const int j = threadIdx.x;
            ssc[k][j] = REV ? expf(acs[o + j]) : expf(last - acs[o + j]) * dts[o + j];
        }
        if (threadIdx.x == 0) sdec[k] = expf(last);
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
    stage(REV ? s.nch - 1 : 0, 0);
    for (int it = 0; it < s.nch; it++) {
        const int c = REV ? s.nch - 1 - it : it, k = it & 1;
        if (it + 1 < s.nch) {
            stage(REV ? c - 1 : c + 1, k ^ 1);
            cp_async_wait_prev();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        float *out = st + (((size_t)b * s.nch + c) * s.H + h) * PN;
        const float dec = sdec[k];
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i += 2) {
                *reinterpret_cast<float2 *>(out + at(nt, i)) = make_float2(acc[nt][i], acc[nt][i + 1]);
                acc[nt][i] *= dec, acc[nt][i + 1] *= dec;
            }
        for (int kk = 0; kk < s.Q; kk += 8) { // acc += (scaled u)^T v over the chunk's positions
            const float s0 = ssc[k][kk + cq], s1 = ssc[k][kk + cq + 4];
            const uint32_t af[4] = {tf32(su[k][kk + cq][pr + gq] * s0), tf32(su[k][kk + cq][pr + gq + 8] * s0),
                                    tf32(su[k][kk + cq + 4][pr + gq] * s1), tf32(su[k][kk + cq + 4][pr + gq + 8] * s1)};
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
                mma_tf32(acc[nt], af, tf32(sv[k][kk + cq][nc + 8 * nt + gq]),
                         tf32(sv[k][kk + cq + 4][nc + 8 * nt + gq]));
        }
        __syncthreads(); // (buffer k is staged again two chunks on)
    }
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
    if (rev)
        ssd_walk_kernel<true><<<grid, FUSED_THREADS>>>(st, NULL, dy, s.H * s.P, a->Cm, s.ldx, dts, acs, s);
    else
        ssd_walk_kernel<false><<<grid, FUSED_THREADS>>>(st, state, a->x, s.ldx, a->Bm, s.ldx, dts, acs, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark(rev ? "ssd bwd dstates walk" : "ssd states walk");
}

// ---- the output -------------------------------------------------------------------------------------------------
// Shared memory of an output block: x's chunk rows (its columns of P), then C's and S_in's columns of N for the first
// product, two steps' worth, whose space CB's chunk takes for the second.
struct OutSmem {
    float x[SSD_Q][OUT_PT + 8]; // (+ 8: lanes 4 g + c read [k + c][n + g], 32 banks)
    union {
        struct {
            float c[2][SSD_Q][OUT_NK + 4];  // C [Q, N]'s columns n0 .. n0 + 15 (+ 4: [r + g][k + c], 32 banks)
            float s[2][OUT_PT][OUT_NK + 4]; // S_in [P, N]'s
        } cs;
        float cb[SSD_Q][SSD_Q + 4];
    } u;
    float a[SSD_Q], d[SSD_Q];
};

// y [B*T, H*P] = exp(a_i) C S_in^T + M X per (b, chunk, head) and 64 columns of P: warp w the chunk's rows 16 w ..
// 16 w + 15 (rows past Q idle), all of the block's columns. M[i, j] = CB[i, j] exp(a_i - a_j) dt_j for j <= i, plus
// D on the diagonal (ssd_mask's, formed in the fragments). Grid (B nch, H, P/64 rounded up) of FUSED_THREADS.
__global__ static void __launch_bounds__(FUSED_THREADS)
    ssd_out_kernel(float *y, const float *x, const float *Cm, const float *st, const float *CB, const float *dts,
                   const float *acs, const float *Dv, SsdShape s) {
    __shared__ __align__(16) OutSmem sm[1];
    OutSmem &m = sm[0];
    const int bc = blockIdx.x, h = blockIdx.y, p0 = (int)blockIdx.z * OUT_PT, pw = min(OUT_PT, s.P - p0);
    const int wp = (int)threadIdx.x / 32, gq = (int)threadIdx.x % 32 / 4, cq = (int)threadIdx.x % 4, r0 = 16 * wp;
    const size_t row0 = s.row0(bc / s.nch, bc % s.nch), o = s.bht(bc / s.nch, h, bc % s.nch);
    const float *cg = Cm + (size_t)(h / s.hpg) * s.N, *S = st + ((size_t)bc * s.H + h) * s.P * s.N + (size_t)p0 * s.N;
    const int HP = s.H * s.P;
    if ((int)threadIdx.x < s.Q) m.a[threadIdx.x] = acs[o + threadIdx.x], m.d[threadIdx.x] = dts[o + threadIdx.x];
    for (int e = (int)threadIdx.x; e < s.Q * (pw / 4); e += FUSED_THREADS) { // (the first copy group)
        const int j = e / (pw / 4), q = 4 * (e % (pw / 4));
        cp_async16(&m.x[j][q], x + (row0 + j) * s.ldx + (size_t)h * s.P + p0 + q, 16);
    }
    auto stage = [&](int n0, int k) { // C's and S's columns n0 .. n0 + 15 into buffer k (one copy group)
        for (int e = (int)threadIdx.x; e < (s.Q + pw) * (OUT_NK / 4); e += FUSED_THREADS) {
            const int r = e / (OUT_NK / 4), q = 4 * (e % (OUT_NK / 4));
            if (r < s.Q)
                cp_async16(&m.u.cs.c[k][r][q], cg + (row0 + r) * s.ldx + n0 + q, 16);
            else
                cp_async16(&m.u.cs.s[k][r - s.Q][q], S + (size_t)(r - s.Q) * s.N + n0 + q, 16);
        }
        cp_async_commit();
    };
    const bool rows = r0 < s.Q; // (Q < 64: the last warps sit out the products)
    float acc[OUT_PT / 8][4] = {};
    // C S_in^T over N, 16 columns a step, the next step's copies in flight
    stage(0, 0);
    for (int n0 = 0, k = 0; n0 < s.N; n0 += OUT_NK, k ^= 1) {
        if (n0 + OUT_NK < s.N) {
            stage(n0 + OUT_NK, k ^ 1);
            cp_async_wait_prev();
        } else {
            cp_async_wait_all();
        }
        __syncthreads();
        if (rows)
#pragma unroll
            for (int kk = 0; kk < OUT_NK; kk += 8) {
                const uint32_t af[4] = {tf32(m.u.cs.c[k][r0 + gq][kk + cq]), tf32(m.u.cs.c[k][r0 + gq + 8][kk + cq]),
                                        tf32(m.u.cs.c[k][r0 + gq][kk + cq + 4]),
                                        tf32(m.u.cs.c[k][r0 + gq + 8][kk + cq + 4])};
#pragma unroll
                for (int nt = 0; nt < OUT_PT / 8; nt++)
                    if (8 * nt < pw)
                        mma_tf32(acc[nt], af, tf32(m.u.cs.s[k][8 * nt + gq][kk + cq]),
                                 tf32(m.u.cs.s[k][8 * nt + gq][kk + cq + 4]));
            }
        __syncthreads();
    }
    // then CB's chunk where C and S were; the rows scaled by exp(a_i) meanwhile
    const size_t QQ = (size_t)s.Q * s.Q;
    const float *cbg = CB + ((size_t)bc * s.G + h / s.hpg) * QQ;
    for (int e = (int)threadIdx.x; e < s.Q * (s.Q / 4); e += FUSED_THREADS) {
        const int i = e / (s.Q / 4), q = 4 * (e % (s.Q / 4));
        cp_async16(&m.u.cb[i][q], cbg + (size_t)i * s.Q + q, 16);
    }
    cp_async_commit();
    const float e0 = rows ? expf(m.a[r0 + gq]) : 0.0f, e1 = rows ? expf(m.a[r0 + gq + 8]) : 0.0f;
#pragma unroll
    for (int nt = 0; nt < OUT_PT / 8; nt++)
        acc[nt][0] *= e0, acc[nt][1] *= e0, acc[nt][2] *= e1, acc[nt][3] *= e1;
    cp_async_wait_all();
    __syncthreads();
    const float D = Dv[h];
    // M[i, j] (0 past the diagonal: exp(a_i - a_j) is never formed for j > i)
    auto mask = [&](int i, int j) {
        return j <= i ? m.u.cb[i][j] * (expf(m.a[i] - m.a[j]) * m.d[j]) + (i == j ? D : 0.0f) : 0.0f;
    };
    if (rows)
        for (int kk = 0; kk < r0 + 16; kk += 8) { // (the strip's rows reach column r0 + 15 at most)
            const int i = r0 + gq, j = kk + cq;
            const uint32_t af[4] = {tf32(mask(i, j)), tf32(mask(i + 8, j)), tf32(mask(i, j + 4)),
                                    tf32(mask(i + 8, j + 4))};
#pragma unroll
            for (int nt = 0; nt < OUT_PT / 8; nt++)
                if (8 * nt < pw)
                    mma_tf32(acc[nt], af, tf32(m.x[kk + cq][8 * nt + gq]), tf32(m.x[kk + cq + 4][8 * nt + gq]));
        }
    if (!rows) return;
#pragma unroll
    for (int nt = 0; nt < OUT_PT / 8; nt++)
        if (8 * nt < pw)
#pragma unroll
            for (int i = 0; i < 4; i += 2) {
                const size_t row = row0 + r0 + gq + 8 * (i >> 1);
                *reinterpret_cast<float2 *>(y + row * HP + (size_t)h * s.P + p0 + 8 * nt + 2 * cq) =
                    make_float2(acc[nt][i], acc[nt][i + 1]);
            }
}

// y = the chunk outputs, from x, C, the states entering the chunks (st) and CB
static void ssd_out(float *y, const ssd_args *a, const ssd_fwd_bufs &f, const SsdShape &s) {
    const dim3 grid((unsigned)(s.B * s.nch), s.H, (unsigned)cdiv(s.P, OUT_PT));
    ssd_out_kernel<<<grid, FUSED_THREADS>>>(y, a->x, a->Cm, f.st, f.CB, f.dts, f.acs, a->Dv, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd output fused");
}

#endif
