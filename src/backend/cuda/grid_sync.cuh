// Grid-wide barriers for persistent kernels: grid_sync() inside a kernel launched by coop_launch (a cooperative
// launch, so every block of the grid is resident at once and the barrier cannot deadlock). The barrier also orders
// memory: what a block wrote before it is visible to every block after it. The CPU emulator (tests/emu) has its own
// version of this header.
#ifndef SSM_GRID_SYNC_CUH
#define SSM_GRID_SYNC_CUH

#include "backend/cuda/cuda_common.h"
#include <cooperative_groups.h>

__device__ __forceinline__ static void grid_sync() { cooperative_groups::this_grid().sync(); }

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
