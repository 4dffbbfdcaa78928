// The SSD kernels' block products (ssd.cu): a block of SSD_THREADS threads accumulates one SSD_TILE x SSD_TILE tile
// of A B^T, its operands staged through shared memory SSD_TK values of the reduction at a time by loaders (View,
// MaskView) that apply the masks and decays as they read; the products in FFMA or on tensor cores in tf32
// (AccLayout says which outputs a thread holds in either). Included by ssd.cu (and so by the CPU emulator).
#ifndef SSM_SSD_TILES_CUH
#define SSM_SSD_TILES_CUH

#include "backend/cuda/mma.cuh"

#define SSD_TILE 64     // a block's output tile, SSD_TILE x SSD_TILE
#ifndef SSD_TK
#define SSD_TK 16 // the reduction's values staged per step (a multiple of 8)
#endif
#define SSD_THREADS 256 // 16 x 16 threads of 4 x 4 outputs (FFMA), 8 warps of 16 x 32 (tf32)

// ---- block products ------------------------------------------------------------------------------------------
// An operand is a functor f(r, k): r the output row (or column) it feeds, k the reduction index; k_fast says which
// of the two is contiguous in memory, so the staging reads coalesce. rows bounds r; the product's K bounds k.

// p[r * ldr + k * ldk], times scale_r[r] and scale_k[k] when given (shared-memory vectors: decays, dt)
template <bool KF> struct View {
    static constexpr bool k_fast = KF;
    const float *p;
    size_t ldr, ldk;
    int rows;
    const float *scale_r = nullptr, *scale_k = nullptr;
    __device__ float operator()(int r, int k) const {
        float v = p[(size_t)r * ldr + (size_t)k * ldk];
        if (scale_r) v *= scale_r[r];
        if (scale_k) v *= scale_k[k];
        return v;
    }
};

// The chunk's masked matrix M[i, j] = CB[i, j] exp(a_i - a_j) dt_j for j <= i, else 0 (CB row-major, row stride
// ld): as (i, j) = (r, k) (the forward's M X), or transposed, (j, i) = (r, k) (the backward's M^T dY).
template <bool TR> struct MaskView {
    static constexpr bool k_fast = !TR;
    const float *cb;
    int ld;
    const float *a, *d; // [Q] shared: the cumsum and dt
    int rows;
    __device__ float operator()(int r, int k) const {
        const int i = TR ? k : r, j = TR ? r : k;
        return j <= i ? cb[(size_t)i * ld + j] * (expf(a[i] - a[j]) * d[j]) : 0.0f;
    }
};

// k-major; rows padded by 8: 16-byte reads stay aligned, and the tensor-core fragments' reads (lanes 4 g + c at
// [k0 + c][r0 + g]) fall on 32 different banks
typedef float SsdTile[SSD_TK][SSD_TILE + 8];
struct alignas(16) SsdTiles { // (tile_mma reads float4s: a float array alone is 4-byte aligned in shared memory)
    SsdTile a, b;
};

__device__ __forceinline__ static int thr_row() { return (int)threadIdx.x / 16; } // rows thr_row() * 4 + 0..3
__device__ __forceinline__ static int thr_col() { return (int)threadIdx.x % 16; } // columns thr_col() * 4 + 0..3

// The staging index of this thread's q-th element: (r, kk) in the operand's memory order.
template <bool KF> __device__ __forceinline__ static void tile_slot(int q, int &r, int &kk) {
    const int e = (int)threadIdx.x + q * SSD_THREADS;
    if (KF)
        r = e / SSD_TK, kk = e % SSD_TK;
    else
        r = e % SSD_TILE, kk = e / SSD_TILE;
}

// Staging a tile (dst[kk][r] = f(r, k0 + kk), zero past f.rows or K) in two halves, so that the next step's reads are
// in flight while this step's products run: tile_fetch reads this thread's elements into registers, tile_stash
// stores them.
#define SSD_PER_THREAD (SSD_TILE * SSD_TK / SSD_THREADS)
template <class F>
__device__ __forceinline__ static void tile_fetch(float (&v)[SSD_PER_THREAD], const F &f, int k0, int K) {
#pragma unroll
    for (int q = 0; q < SSD_PER_THREAD; q++) {
        int r, kk;
        tile_slot<F::k_fast>(q, r, kk);
        v[q] = r < f.rows && k0 + kk < K ? f(r, k0 + kk) : 0.0f;
    }
}
template <bool KF> __device__ __forceinline__ static void tile_stash(SsdTile &dst, const float (&v)[SSD_PER_THREAD]) {
#pragma unroll
    for (int q = 0; q < SSD_PER_THREAD; q++) {
        int r, kk;
        tile_slot<KF>(q, r, kk);
        dst[kk][r] = v[q];
    }
}

// Which of the block's 64 x 64 outputs a thread holds in acc[4][4]: NR of the tile's rows by NC of its columns,
// element (ri, ci) at(acc, ri, ci) in row row(ri) and column col(ci); the threads holding a row (a column) are told
// apart by row_slot() < ROW_SLOTS (col_slot() < COL_SLOTS), for sums over rows or columns in a fixed order.
template <bool TC> struct AccLayout;
template <> struct AccLayout<false> { // FFMA: a 4 x 4 block, threads in 16 x 16
    static constexpr int NR = 4, NC = 4, ROW_SLOTS = 16, COL_SLOTS = 16;
    __device__ static int row(int ri) { return thr_row() * 4 + ri; }
    __device__ static int col(int ci) { return thr_col() * 4 + ci; }
    __device__ static float &at(float (&acc)[4][4], int ri, int ci) { return acc[ri][ci]; }
    __device__ static int row_slot() { return thr_col(); }
    __device__ static int col_slot() { return thr_row(); }
};
template <> struct AccLayout<true> { // tf32 m16n8k8: warp w rows 16 (w / 2) + 0..15, columns 32 (w % 2) + 0..31
    static constexpr int NR = 2, NC = 8, ROW_SLOTS = 8, COL_SLOTS = 32;
    __device__ static int warp() { return (int)threadIdx.x / 32; }
    __device__ static int lane() { return (int)threadIdx.x % 32; }
    // lane 4 g + c: rows g, g + 8; acc[nt] n-tile nt's d0..d3, columns 8 nt + 2 c, + 1
    __device__ static int row(int ri) { return warp() / 2 * 16 + lane() / 4 + 8 * ri; }
    __device__ static int col(int ci) { return warp() % 2 * 32 + 8 * (ci >> 1) + 2 * (lane() % 4) + (ci & 1); }
    __device__ static float &at(float (&acc)[4][4], int ri, int ci) { return acc[ci >> 1][2 * ri + (ci & 1)]; }
    __device__ static int row_slot() { return warp() % 2 * 4 + lane() % 4; }
    __device__ static int col_slot() { return warp() / 2 * 8 + lane() / 4; }
};

// acc += the staged tiles' product: acc[i][j] += sum_kk a[kk][i] b[kk][j] over the thread's outputs, kk in order
// (FFMA), or as the tensor cores sum (tf32).
template <bool TC> __device__ __forceinline__ static void tile_mma(float (&acc)[4][4], const SsdTiles &t);
template <> __device__ __forceinline__ void tile_mma<true>(float (&acc)[4][4], const SsdTiles &t) {
    const int w = (int)threadIdx.x / 32, g = (int)threadIdx.x % 32 / 4, c = (int)threadIdx.x % 4;
    const int r0 = w / 2 * 16 + g, c0 = w % 2 * 32 + g;
#pragma unroll
    for (int k = 0; k < SSD_TK; k += 8) {
        const uint32_t a[4] = {tf32(t.a[k + c][r0]), tf32(t.a[k + c][r0 + 8]), tf32(t.a[k + c + 4][r0]),
                               tf32(t.a[k + c + 4][r0 + 8])};
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            mma_tf32(acc[nt], a, tf32(t.b[k + c][c0 + 8 * nt]), tf32(t.b[k + c + 4][c0 + 8 * nt]));
    }
}
template <> __device__ __forceinline__ void tile_mma<false>(float (&acc)[4][4], const SsdTiles &t) {
#pragma unroll
    for (int kk = 0; kk < SSD_TK; kk++) {
        const float4 a = *reinterpret_cast<const float4 *>(&t.a[kk][thr_row() * 4]);
        const float4 b = *reinterpret_cast<const float4 *>(&t.b[kk][thr_col() * 4]);
        const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }
}

// acc[i][j] += sum_k fa(i, k) fb(j, k), k < K: the block's tile of A B^T (acc in AccLayout<TC>). Every thread of
// the block calls it.
template <bool TC, class FA, class FB>
__device__ static void gemm_acc(float (&acc)[4][4], SsdTiles &t, const FA &fa, const FB &fb, int K) {
    float va[SSD_PER_THREAD], vb[SSD_PER_THREAD];
    tile_fetch(va, fa, 0, K), tile_fetch(vb, fb, 0, K);
    for (int k0 = 0; k0 < K; k0 += SSD_TK) {
        tile_stash<FA::k_fast>(t.a, va), tile_stash<FB::k_fast>(t.b, vb);
        __syncthreads();
        if (k0 + SSD_TK < K) tile_fetch(va, fa, k0 + SSD_TK, K), tile_fetch(vb, fb, k0 + SSD_TK, K);
        tile_mma<TC>(acc, t);
        __syncthreads();
    }
}

// f(ri, ci, i, j) for each of the thread's outputs: AccLayout<TC>::at(acc, ri, ci), in the tile's row i and column j.
template <bool TC, class F> __device__ __forceinline__ static void acc_each(F &&f) {
#pragma unroll
    for (int ri = 0; ri < AccLayout<TC>::NR; ri++)
#pragma unroll
        for (int ci = 0; ci < AccLayout<TC>::NC; ci++)
            f(ri, ci, AccLayout<TC>::row(ri), AccLayout<TC>::col(ci));
}

#endif
