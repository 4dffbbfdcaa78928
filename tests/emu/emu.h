/* A CPU emulation of the CUDA execution model, enough to run warp-synchronous kernels (the flash attention kernels)
 * on a machine without a GPU: every thread of a block is a fiber (ucontext), switched at each collective operation
 * (__syncthreads, __syncwarp, shuffles, ldmatrix, mma), which the scheduler executes once every participant has
 * arrived. Blocks run one after another. Included before the kernel's source (g++ -include emu.h); the shim/
 * headers stand in for cuda_common.h, cp_async.cuh and mma.cuh. What it checks: indexing, masking, tile ranges and
 * the cp.async pipeline (copies done at issue or only at the wait, EMU_CP_LATE=1; warps advancing in step or drifting
 * apart at random, EMU_SKEW=seed) against the CPU reference; shared memory starts as NaN, so a read of an element
 * never written shows. What it cannot check: the hardware's own semantics of ldmatrix and mma (emulated from the PTX
 * manual's fragment layouts, as the kernels were written from), timing, bank conflicts, the launch limits (shared
 * memory per block is checked against 256 KB only). Threads start through ucontext and switch by _setjmp/_longjmp. */
#ifndef SSM_EMU_H
#define SSM_EMU_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_bf16.h>
#include <tuple>

#include <cuda_runtime_api.h> /* dim3, the runtime's types; emu.cpp defines the few functions the kernels' hosts call */

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) /* the emulator's smem is aligned where it is defined */
#define __shared__

using std::max;
using std::min;

struct emu_idx {
    unsigned x, y, z;
};

struct emu_fiber;
extern emu_fiber *emu_cur;
extern emu_idx emu_block_idx, emu_grid_dim, emu_block_dim;
unsigned emu_tid();
#define threadIdx (emu_idx{emu_tid(), 0, 0})
#define blockIdx emu_block_idx
#define gridDim emu_grid_dim
#define blockDim emu_block_dim

void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);
float emu_shfl_xor(float v, int off);
int emu_shfl_xor(int v, int off);
double emu_shfl_xor(double v, int off);
template <typename V> V __shfl_xor_sync(unsigned, V v, int off) { return emu_shfl_xor(v, off); }
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// cp.async (shim/backend/cuda/cp_async.cuh)
void emu_cp_async(void *dst, const void *src, int bytes, int size);
/* a kernel's aligned static shared array (to_cpp.py's `alignas(N) static T a[n]`): shared memory to cp.async and
 * ldmatrix as the dynamic smem is */
void emu_static_smem(const void *p, size_t bytes);
void emu_cp_commit();
void emu_cp_wait(int pending);
// warp matrix ops (shim/backend/cuda/mma.cuh)
void emu_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
void emu_mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
uint32_t emu_tf32(float x);
void emu_ldsm(uint32_t (&r)[4], const void *p, bool trans);

// a grid-wide barrier (shim/backend/cuda/grid_sync.cuh), in kernels launched by emu_launch_coop
void emu_grid_sync();

// launches: blocks in order, each block's threads as fibers
typedef void (*emu_body)(void *);
void emu_run_grid(dim3 grid, unsigned threads, size_t smem, emu_body body, void *arg);
// kernel(args...) as the body of every thread of a run by runner (emu_run_grid or emu_run_grid_coop)
template <typename K, typename... A>
void emu_launch_by(void (*runner)(dim3, unsigned, size_t, emu_body, void *), K kernel, dim3 grid, unsigned threads,
                   size_t smem, A... args) {
    struct pack {
        K k;
        std::tuple<A...> a;
    } p{kernel, std::tuple<A...>(args...)};
    runner(grid, threads, smem, [](void *v) { std::apply(((pack *)v)->k, ((pack *)v)->a); }, &p);
}
template <typename K, typename... A> void emu_launch(K kernel, dim3 grid, unsigned threads, size_t smem, A... args) {
    emu_launch_by(emu_run_grid, kernel, grid, threads, smem, args...);
}

// a cooperative launch: every block's threads at once, the blocks taking turns between grid barriers (in a random
// order with EMU_SKEW, so that a read of another block's result before the barrier that publishes it shows)
void emu_run_grid_coop(dim3 grid, unsigned threads, size_t smem, emu_body body, void *arg);
template <typename K, typename... A> void emu_launch_coop(K kernel, dim3 grid, unsigned threads, size_t smem, A... args) {
    emu_launch_by(emu_run_grid_coop, kernel, grid, threads, smem, args...);
}

#endif
