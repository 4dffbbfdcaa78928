/* The CUDA versions of ops.h's ops (the .cu files in src/backend/cuda): the same names with a _cuda suffix, the
 * same shapes and semantics, every pointer a device pointer, work queued on the default stream.
 * Each is tested against its CPU twin by tests/gpu/test_*.c. */
#ifndef SSM_OPS_CUDA_H
#define SSM_OPS_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when a CUDA device is usable, else 0 with the reason in *why (a static string). */
int cuda_device_available(const char **why);

/* See scan_fwd / scan_bwd in ops.h. Deterministic: no atomics; reductions in a fixed order. */
void scan_fwd_cuda(float *y, float *h, const float *x, const float *dt, const float *At, const float *Bm,
                   const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N);
void scan_bwd_cuda(float *dx, float *ddt, float *dBm, float *dCm, int lddbc, float *dAt, float *dDv,
                   const float *dy, const float *x, const float *dt, const float *At, const float *Bm,
                   const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N);

#ifdef __cplusplus
}
#endif
#endif
