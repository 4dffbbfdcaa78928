/* The CUDA versions of ops.h's ops (the .cu files in src/backend/cuda): the same names with a _cuda suffix, the
 * same shapes and semantics, every pointer a device pointer, work queued on the default stream.
 * Each is tested against its CPU twin by tests/gpu/test_*.c. */
#ifndef SSM_OPS_CUDA_H
#define SSM_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "ops/ops.h" /* scan_args, scan_grads */

/* 1 when a CUDA device is usable, else 0 with the reason in *why (a static string). */
int cuda_device_available(const char **why);

/* Device memory (memory.cu), for backend_cuda: alloc is zeroed and exits with a one-line error naming the fix
 * when the GPU is out of memory; download waits for the data. */
void *cuda_alloc(size_t bytes);
void cuda_release(void *p);
void cuda_zero(void *p, size_t bytes);
void cuda_copy(void *dst, const void *src, size_t bytes);
void cuda_upload(void *dst, const void *host, size_t bytes);
void cuda_download(void *host, const void *src, size_t bytes);
void cuda_sync(void);
size_t cuda_mem_in_use(void); /* peak bytes from cuda_alloc + the stream-ordered pool's high-water mark */
/* The bf16 shadow of the parameter buffer (weights16.cu): AdamW writes bf16(w) beside w once a bf16 GEMM has
 * asked for it (w16_want); w16_for_update gives AdamW the shadow to fill (NULL: not wanted), w16_updated marks it
 * valid; w16_lookup returns the shadow of p[0..n) while valid, else NULL; w16_owns tells a shadow pointer from a
 * copy; w16_note_write drops the shadow when [dst, dst + bytes) overlaps the shadowed buffer. */
void w16_want(void);
uint16_t *w16_for_update(const float *w, size_t n);
void w16_updated(void);
const uint16_t *w16_lookup(const float *p, size_t n);
int w16_owns(const void *p);
void w16_note_write(const void *dst, size_t bytes);
/* CUDA graphs of the work queued on this thread's default stream (see backend.h). */
void cuda_graph_begin(void);
void *cuda_graph_end(void);
void cuda_graph_launch(void *graph);
void cuda_graph_free(void *graph);
/* 0 when GPU 0 is usable (present, compute capability >= 8.0; made current), else -1 with ssm_error(). */
int cuda_backend_check(void);

/* See matmul_* in ops.h: cuBLASLt, float32 with FP32 compute (no TF32). */
void matmul_xwT_cuda(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta);
void matmul_dyw_cuda(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K, float beta);
void matmul_dw_acc_cuda(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K);
/* Mixed precision: the same GEMMs with the inputs rounded to bf16 for the tensor cores (CUBLAS_COMPUTE_32F_FAST_16BF),
 * float32 accumulation and output. Within 1e-2 of the float32 result relative to its scale. */
void matmul_xwT_cuda_bf16(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta);
void matmul_dyw_cuda_bf16(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K,
                          float beta);
void matmul_dw_acc_cuda_bf16(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K);
/* matmul_xwT_x16 / matmul_dw_acc_x16: float32 (x widened first), and bf16 (x16 read as it is) */
void matmul_xwT_x16_cuda(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K,
                         float beta);
void matmul_dw_acc_x16_cuda(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N, int K);
void matmul_xwT_x16_cuda_bf16(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K,
                              float beta);
void matmul_dw_acc_x16_cuda_bf16(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N,
                                 int K);
void round_bf16_rows_cuda(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols);
/* matmul_xwT_y16: the product (float32, or bf16 inputs) rounded into a bf16 output */
void matmul_xwT_y16_cuda(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                         const float *bias, int M, int N, int K);
void matmul_xwT_y16_cuda_bf16(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                              const float *bias, int M, int N, int K);
/* matmul_bwd16: float32 (bf16 operands widened first), and bf16 (bf16 operands read as they are) */
void matmul_bwd16_cuda(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                       const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx, const float *w,
                       int M, int N, int K);
void matmul_bwd16_cuda_bf16(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                            const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx,
                            const float *w, int M, int N, int K);
/* matmul_bwd: float32, and bf16 with dy rounded once for both products */
void matmul_bwd_cuda(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x, int ldx,
                     const float *w, int M, int N, int K);
void matmul_bwd_cuda_bf16(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x,
                          int ldx, const float *w, int M, int N, int K);

/* See scan_fwd / scan_bwd in ops.h; d_state <= 32. Deterministic: no atomics; reductions in a fixed order. */
void scan_fwd_cuda(const scan_args *s, float *out, uint16_t *out16, float *h);
void scan_bwd_cuda(const scan_args *s, const scan_grads *g, const float *dout);

/* See ops.h for each op's shapes and semantics. All deterministic: no float atomics; column sums are
 * per-chunk partials added in chunk order. Temporaries come from cudaMallocAsync on the default stream. */
void bias_add_cuda(float *y, int ldy, const float *bias, int rows, int N);
void bias_grad_acc_cuda(float *db, const float *dy, int lddy, int rows, int N);

void embedding_fwd_cuda(float *out, const int *tokens, const float *table, int rows, int D);
void embedding_bwd_cuda(float *dtable, const float *dout, const int *tokens, int rows, int D);

void rmsnorm_fwd_cuda(float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D,
                      float eps);
void add_rmsnorm_fwd_cuda(float *x_out, float *y, uint16_t *y16, float *rstd, const float *x, const float *delta,
                          const uint16_t *delta16, const float *w, int rows, int D, float eps);
void rmsnorm_bwd_cuda(float *dx, uint16_t *dx16, float *dw, const float *dy, const uint16_t *dy16, const float *x,
                      const float *w, const float *rstd, int rows, int D, int acc);

void conv1d_silu_fwd_cuda(float *out, uint16_t *out16, const float *x, const uint16_t *x16, int ldx,
                          const float *init, const float *w, const float *bias, int B, int T, int C, int K);
void conv1d_silu_bwd_cuda(float *dx, uint16_t *dx16, int lddx, float *dw, float *dbias, const float *dout,
                          const uint16_t *dout16, const float *x, const uint16_t *x16, int ldx, const float *w,
                          const float *bias, int B, int T, int C, int K);
void conv1d_state_update_cuda(float *state, const float *x, int ldx, int B, int T, int C, int K);
void conv1d_silu_step_cuda(float *out, const float *x, int ldx, float *state, const float *w, const float *bias, int B,
                           int C, int K);

void neg_exp_transpose_cuda(float *At, const float *A_log, int E, int N);
/* Round-to-nearest-even float32 -> bf16 and back (bf16_from_f32 / f32_from_bf16 in ops.h). */
void bf16_from_f32_cuda(uint16_t *dst, const float *src, size_t n);
void f32_from_bf16_cuda(float *dst, const uint16_t *src, size_t n);

/* sum and count are HOST pointers (the call waits for the result); dlogits may be NULL. */
void xent_fwd_bwd_cuda(double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows,
                       int V, float scale);

/* The optimizer over the flat parameter buffer; train.c's grad_clip and adamw_update call these through the
 * backend table. */
/* sqrt of the sum of dw[i]^2 in double, returned to the host (waits for it). Deterministic: a fixed-order
 * two-pass reduction whose grid depends only on n. */
double grad_norm_cuda(const float *dw, size_t n);
/* One AdamW step, the CPU adamw_step's arithmetic (ops.h) per element in one fused kernel: w, m, v [n] updated
 * in place from g [n] * gscale (grad_clip's pending scale, 1 for none); decay_mask [n] (device bytes, built
 * from the layout's per-tensor decay flags) is nonzero where weight decay applies. step is the step count
 * after its increment (1 on the first step). */
void adamw_step_cuda(float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask,
                     size_t n, float lr, float weight_decay, float beta1, float beta2, float eps, long step);

#ifdef __cplusplus
}
#endif
#endif
