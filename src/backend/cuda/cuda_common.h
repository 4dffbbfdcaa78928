/* Shared by the CUDA kernels: error checks that name file and line, launch helpers. */
#ifndef SSM_CUDA_COMMON_H
#define SSM_CUDA_COMMON_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CUDA_CHECK(call)                                                                            \
    do {                                                                                            \
        cudaError_t err_ = (call);                                                                  \
        if (err_ == cudaErrorMemoryAllocation) {                                                    \
            fprintf(stderr, "ssm: out of GPU memory (%s:%d): use a smaller --batch or --seq-len, or "  \
                            "--device cpu\n", __FILE__, __LINE__);                                     \
            exit(1);                                                                                \
        }                                                                                           \
        if (err_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "ssm: CUDA error at %s:%d: %s (%s)\n", __FILE__, __LINE__,              \
                    cudaGetErrorString(err_), #call);                                               \
            exit(2);                                                                                \
        }                                                                                           \
    } while (0)

/* A cuBLAS or cuBLASLt call (lib names which): on failure its status, the call and where, and exit, as CUDA_CHECK */
#define CUBLAS_CHECK(lib, call)                                                                             \
    do {                                                                                                    \
        cublasStatus_t st_ = (call);                                                                        \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                                 \
            fprintf(stderr, "ssm: %s error %d at %s:%d (%s)\n", lib, (int)st_, __FILE__, __LINE__, #call); \
            exit(2);                                                                                        \
        }                                                                                                   \
    } while (0)

/* After a launch: configuration errors now, execution errors at the next synchronizing call. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

static inline int cdiv(int a, int b) { return (a + b - 1) / b; }

#endif
