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

/* See ops.h for each op's shapes and semantics. All deterministic: no float atomics; column sums are
 * per-chunk partials added in chunk order. Temporaries come from cudaMallocAsync on the default stream. */
void bias_add_cuda(float *y, int ldy, const float *bias, int rows, int N);
void bias_grad_acc_cuda(float *db, const float *dy, int lddy, int rows, int N);

void embedding_fwd_cuda(float *out, const int *tokens, const float *table, int rows, int D);
void embedding_bwd_cuda(float *dtable, const float *dout, const int *tokens, int rows, int D);

void rmsnorm_fwd_cuda(float *y, float *rstd, const float *x, const float *w, int rows, int D, float eps);
void rmsnorm_bwd_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                      int rows, int D, int acc);

void conv1d_silu_fwd_cuda(float *pre, float *out, const float *x, int ldx, const float *init, const float *w,
                          const float *bias, int B, int T, int C, int K);
void conv1d_silu_bwd_cuda(float *dx, int lddx, float *dw, float *dbias, const float *dout, const float *pre,
                          const float *x, int ldx, const float *w, int B, int T, int C, int K);
void conv1d_state_update_cuda(float *state, const float *x, int ldx, int B, int T, int C, int K);

void softplus_bias_fwd_cuda(float *dt, const float *bias, int rows, int E);
void softplus_bias_bwd_cuda(float *ddt, float *dbias, const float *dt, int rows, int E);
void gate_fwd_cuda(float *out, const float *y, const float *z, int ldz, int rows, int E);
void gate_bwd_cuda(float *dy, float *dz, int lddz, const float *dout, const float *y, const float *z, int ldz,
                   int rows, int E);
void neg_exp_transpose_cuda(float *At, const float *A_log, int E, int N);

/* sum and count are HOST pointers (the call waits for the result); dlogits may be NULL. */
void xent_fwd_bwd_cuda(double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows,
                       int V, float scale);

#ifdef __cplusplus
}
#endif
#endif
