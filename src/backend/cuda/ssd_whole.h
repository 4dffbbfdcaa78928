// The SSD as batched GEMMs, for whole chunks (ssd_whole.cu): ssd.cu's ops call these when ssd_whole_takes says so.
#ifndef SSM_CUDA_SSD_WHOLE_H
#define SSM_CUDA_SSD_WHOLE_H

#include "ops/ops.h"

// every chunk whole (T a multiple of the GPU's chunk), at most 256 heads, and the environment's SSM_SSD_GEMM not 0
bool ssd_whole_takes(const ssd_args *a);
void ssd_whole_fwd(const ssd_args *a, float *y, float *state);
void ssd_whole_bwd(const ssd_args *a, const ssd_grads *gr, const float *dy);

#endif
