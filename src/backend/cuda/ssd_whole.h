// The SSD as batched GEMMs, for whole chunks (ssd_whole.cu): ssd.cu's ops call these when ssd_whole_takes says so.
#ifndef SSM_CUDA_SSD_WHOLE_H
#define SSM_CUDA_SSD_WHOLE_H

#include "ops/ops.h"

// every chunk whole (T a multiple of the GPU's chunk), at most 256 heads, and the environment's SSM_SSD_GEMM not 0
bool ssd_whole_takes(const ssd_args *a);
// y float32, or bf16 where the fused output kernel writes it rounded (returns false, nothing run, for a bf16 y
// that the fused kernels do not take: the caller computes a float32 y and rounds it)
bool ssd_whole_fwd(const ssd_args *a, mat y, float *state);
void ssd_whole_bwd(const ssd_args *a, const ssd_grads *gr, const float *dy);

#endif
