/* Throughput measurements behind `ssm bench`: training bytes/s, decode bytes/s, memory bandwidth. */
#ifndef SSM_BENCH_H
#define SSM_BENCH_H

#include "ssm.h"

/* Median seconds per training step (forward + backward + AdamW) over `steps` after 2 warmup steps, on
 * `device` ("cpu", "cuda"), in mixed precision when bf16 (CUDA); -1 with ssm_last_error() when the model
 * cannot be made there. *mem_in_use: peak device memory allocated (0 on the CPU). profile: then `steps`
 * more steps through the profiling backend, whose totals profile_print shows (backend/profile.h). */
double bench_train_step(const ssm_config *cfg, const char *device, int bf16, int B, int T, int steps,
                        size_t *mem_in_use, int profile);
/* Median seconds per decode step of n_seq sequences over `steps` after a warmup. */
double bench_decode_step(const ssm_model *m, int n_seq, int steps);
/* Memory bandwidth over 256 MiB buffers, all threads, best of 5, in bytes/s: *copy = bytes copied per
 * second by memcpy (STREAM's "Copy" figure counts twice that: read + write); *read = bytes read per
 * second by a vectorized sum, the operation batch-1 decode is bound by. */
void bench_memory_bandwidth(double *copy, double *read);

/* Bytes of weights one batch-1 decode step reads: every matrix (bf16 ones at 2 bytes when the model
 * keeps a bf16 copy on the CPU; CUDA's bf16 GEMMs read the float32 weights), the small per-channel tensors, and only one row of an untied embedding. */
double bench_decode_weight_bytes(const ssm_model *m);

#endif
