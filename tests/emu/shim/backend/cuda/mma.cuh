/* The emulator's stand-in for src/backend/cuda/mma.cuh (emu.cpp executes them for the whole warp). */
#ifndef SSM_CUDA_MMA_CUH
#define SSM_CUDA_MMA_CUH
#include <stdint.h>
static inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { emu_mma(d, a, b0, b1); }
static inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu_mma_tf32(d, a, b0, b1);
}
static inline uint32_t tf32(float x) { return emu_tf32(x); }
static inline void ldsm_x4(uint32_t (&r)[4], const void *p) { emu_ldsm(r, p, false); }
static inline void ldsm_x4_trans(uint32_t (&r)[4], const void *p) { emu_ldsm(r, p, true); }
#endif
