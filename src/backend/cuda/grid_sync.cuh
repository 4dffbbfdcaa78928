// Grid-wide barriers for persistent kernels: grid_sync() inside a kernel launched by coop_launch (a cooperative
// launch, so every block of the grid is resident at once and the barrier cannot deadlock). The barrier also orders
// memory: what a block wrote before it is visible to every block after it. The CPU emulator (tests/emu) has its own
// version of this header.
#ifndef SSM_GRID_SYNC_CUH
#define SSM_GRID_SYNC_CUH

#include "backend/cuda/cuda_common.h"
#include <cooperative_groups.h>

__device__ __forceinline__ static void grid_sync() { cooperative_groups::this_grid().sync(); }

// grid_sync() in two halves: grid_arrive() (after it, every block's writes before it are visible to all blocks once
// they return from grid_wait) and grid_wait(its token), which returns once every block has arrived. Between the two a
// block may read what no block writes in the phase the barrier closes (its weights, its own state), so that those
// reads' latency overlaps the barrier's.
typedef unsigned int grid_token;
__device__ __forceinline__ static grid_token grid_arrive() { return cooperative_groups::this_grid().barrier_arrive(); }
__device__ __forceinline__ static void grid_wait(grid_token t) { cooperative_groups::this_grid().barrier_wait((grid_token &&)t); }

// The block's clock in cycles of its multiprocessor (only differences within one block mean anything)
__device__ __forceinline__ static long long block_clock() { return clock64(); }

// kernel<<<grid, threads, smem>>>(args...) as a cooperative launch on the per-thread stream. The grid must fit on
// the device at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor times the SMs): the launch fails otherwise.
// The arguments are converted to the kernel's parameter types first: the launch takes their addresses. Returns the
// launch's status (the caller decides what a refused launch means).
template <typename... P>
static cudaError_t coop_launch_typed(void (*kernel)(P...), unsigned grid, unsigned threads, size_t smem, P... args) {
    void *params[] = {(void *)&args...};
    return cudaLaunchCooperativeKernel((const void *)kernel, dim3(grid), dim3(threads), params, smem,
                                       cudaStreamPerThread);
}
template <typename... P, typename... A>
static cudaError_t coop_launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t smem, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "coop_launch: one argument per kernel parameter");
    return coop_launch_typed<P...>(kernel, grid, threads, smem, P(args)...);
}

#endif
