/* The emulator's stand-in for src/backend/cuda/mma.cuh (emu.cpp executes them for the whole warp). */
#ifndef SSM_CUDA_MMA_CUH
#define SSM_CUDA_MMA_CUH
#include <stdint.h>
static inline void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { emu_mma(d, a, b0, b1); }
static inline void ldsm_x4(uint32_t (&r)[4], const void *p) { emu_ldsm(r, p, false); }
static inline void ldsm_x4_trans(uint32_t (&r)[4], const void *p) { emu_ldsm(r, p, true); }
#endif
