/* Deterministic reductions shared by the CUDA kernels: a fixed-order block reduction and column sums
 * over rows (per-chunk partials, then a second kernel that adds them in chunk order). No atomics, so
 * every run of the same launch gives the same bits. Templates, hence defined in this header. */
#ifndef SSM_CUDA_REDUCE_CUH
#define SSM_CUDA_REDUCE_CUH

#include "backend/cuda/cuda_common.h"

#define RED_THREADS 256 /* blockDim.x of every kernel that calls block_reduce (a power of two) */

/* Reduction over the block in a fixed order, every thread getting the result: a butterfly of shuffles within
 * each warp (the same bits in every lane: a + b == b + a), then the warps' results in warp order (one barrier,
 * where a shared-memory tree took eight). May be called more than once per kernel: the trailing barrier guards
 * the buffer's reuse. blockDim.x must be RED_THREADS (or NT). */
template <typename T, typename Op, int NT = RED_THREADS> /* (NT: blockDim.x, a multiple of 32, if not RED_THREADS) */
__device__ T block_reduce(T v, Op op) {
    __shared__ T buf[NT / 32];
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    if ((threadIdx.x & 31) == 0) buf[threadIdx.x >> 5] = v;
    __syncthreads();
    T r = buf[0];
#pragma unroll
    for (int i = 1; i < NT / 32; i++) r = op(r, buf[i]);
    __syncthreads();
    return r;
}

struct SumOp {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
    __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

#define COLSUM_CHUNK 64 /* rows per partial sum */

/* Column sums: F is a functor with `__device__ float operator()(int row, int col) const`. */
template <typename F>
__global__ void colsum_partial_kernel(float *partial, F f, int rows, int N, int chunk) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    const int r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += f(r, j);
    partial[(size_t)blockIdx.y * N + j] = s;
}

/* dst[j] += sum over c of partial[c, j]. A block owns 32 columns; its 8 warps each sum every 8th chunk
 * (warp g: chunks g, g+8, ...: independent loads in flight, coalesced across the lanes), then warp 0 adds
 * the 8 sums in warp order. Fixed order throughout: the same bits every run. */
#define COLSUM_GROUPS 8
/* Up to two such sums in one launch (dst0 [N0] from part0, then dst1 [N1] from part1: the first cdiv(N0, 32) blocks
 * take the first): a layer's weight and bias gradients finish together. */
template <typename T>
__global__ void colsum_finish_kernel(T *dst0, const T *part0, int N0, T *dst1, const T *part1, int N1, int nchunks) {
    __shared__ T sums[COLSUM_GROUPS][32];
    const int blk0 = (N0 + 31) / 32, first = (int)blockIdx.x < blk0;
    T *dst = first ? dst0 : dst1;
    const T *partial = first ? part0 : part1;
    const int N = first ? N0 : N1, lane = threadIdx.x % 32, g = threadIdx.x / 32,
              j = ((int)blockIdx.x - (first ? 0 : blk0)) * 32 + lane;
    T s = 0;
    if (j < N)
        for (int c = g; c < nchunks; c += COLSUM_GROUPS) s += partial[(size_t)c * N + j];
    sums[g][lane] = s;
    __syncthreads();
    if (g == 0 && j < N) {
        T t = sums[0][lane];
        for (int k = 1; k < COLSUM_GROUPS; k++) t += sums[k][lane];
        dst[j] += t;
    }
}

template <typename T>
static void colsum_finish2(T *dst0, const T *part0, int N0, T *dst1, const T *part1, int N1, int nchunks) {
    const int blocks = cdiv(N0, 32) + cdiv(N1, 32);
    if (blocks == 0) return;
    colsum_finish_kernel<T><<<blocks, 32 * COLSUM_GROUPS>>>(dst0, part0, N0, dst1, part1, N1, nchunks);
    CUDA_CHECK_LAUNCH();
}
template <typename T> static void colsum_finish(T *dst, const T *partial, int nchunks, int N) {
    colsum_finish2<T>(dst, partial, N, (T *)NULL, (const T *)NULL, 0, nchunks);
}

/* dst[j] += sum over r < rows of f(r, j), j < N. The chunking depends only on rows, so the order of
 * the additions, and the result, is fixed. */
template <typename F>
static void colsum_acc(float *dst, F f, int rows, int N) {
    if (rows <= 0 || N <= 0) return;
    int chunk = COLSUM_CHUNK;
    if (cdiv(rows, chunk) > 65535) chunk = cdiv(rows, 65535); /* gridDim.y limit */
    const int nchunks = cdiv(rows, chunk);
    float *partial;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)nchunks * N, 0));
    colsum_partial_kernel<F><<<dim3(cdiv(N, 256), nchunks), 256>>>(partial, f, rows, N, chunk);
    CUDA_CHECK_LAUNCH();
    colsum_finish(dst, partial, nchunks, N);
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

/* Threads for one-per-element kernels over n elements (a grid-stride loop covers any n). */
#define ELEM_THREADS 256
static inline int elem_blocks(size_t n) {
    size_t b = (n + ELEM_THREADS - 1) / ELEM_THREADS;
    return b > 65536 * 8 ? 65536 * 8 : (int)b;
}

#endif
