/* The emulator's stand-in for src/backend/cuda/cuda_common.h: the runtime's declarations, with the few functions the
 * kernels' hosts call (the pool's allocations, a device, a kernel attribute) defined by emu.cpp on host memory. */
#ifndef SSM_CUDA_COMMON_H
#define SSM_CUDA_COMMON_H
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                                              \
    do {                                                                                                              \
        if ((call) != cudaSuccess) {                                                                                  \
            fprintf(stderr, "emu: %s failed\n", #call);                                                              \
            exit(2);                                                                                                  \
        }                                                                                                             \
    } while (0)
#define CUDA_CHECK_LAUNCH() ((void)0)
static inline int cdiv(int a, int b) { return (a + b - 1) / b; }
#endif
