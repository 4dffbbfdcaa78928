/* The emulator's stand-in for src/backend/cuda/grid_sync.cuh: the barrier and the cooperative launch of emu.cpp. */
#ifndef SSM_GRID_SYNC_CUH
#define SSM_GRID_SYNC_CUH
#include "backend/cuda/cuda_common.h"
static inline void grid_sync() { emu_grid_sync(); }
/* the halves: the whole barrier at the wait (reads between the two run before the other blocks' phase ends) */
typedef unsigned int grid_token;
static inline grid_token grid_arrive() { return 0; }
static inline void grid_wait(grid_token) { emu_grid_sync(); }
static inline long long block_clock() { return 0; }
template <typename... P, typename... A>
static cudaError_t coop_launch(void (*kernel)(P...), unsigned grid, unsigned threads, size_t smem, A... args) {
    static_assert(sizeof...(P) == sizeof...(A), "coop_launch: one argument per kernel parameter");
    emu_launch_coop(kernel, dim3(grid), threads, smem, P(args)...);
    return cudaSuccess;
}
#endif
