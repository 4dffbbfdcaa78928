/* Host <-> device helpers shared by the GPU tests (each test prints "skip - ..." without a device). */
#ifndef SSM_GPU_TEST_H
#define SSM_GPU_TEST_H

#include "backend/cuda/cuda_common.h"

#include <stdlib.h>
#include <string.h>

/* A device copy of host[0..bytes) (zeroed when host is NULL); exits on failure. */
static inline void *gpu_to_dev(const void *host, size_t bytes) {
    void *d;
    CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    if (host && bytes) CUDA_CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    else CUDA_CHECK(cudaMemset(d, 0, bytes ? bytes : 1));
    return d;
}

/* Waits for the device (so a kernel fault shows here), then copies dev[0..bytes) to host. */
static inline void gpu_to_host(void *host, const void *dev, size_t bytes) {
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

/* The same for n floats: a device copy, and a malloc'd host copy. */
static inline float *gpu_floats(const float *host, size_t n) { return (float *)gpu_to_dev(host, sizeof(float) * n); }
static inline float *host_floats(const float *dev, size_t n) {
    float *h = (float *)malloc(sizeof(float) * (n ? n : 1));
    gpu_to_host(h, dev, sizeof(float) * n);
    return h;
}

#endif
