/* A backend: where the model's buffers live and the ops that compute on them. The model and the mixers
 * are written once against this table; backend_cpu points at src/backend/cpu (ops.h), backend_cuda at the
 * _cuda kernels (ops_cuda.h). Every pointer an op takes is memory of that backend ("device memory");
 * upload/download cross to and from the host. Each op has the shapes and semantics documented in ops.h. */
#ifndef SSM_BACKEND_H
#define SSM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h" /* scan_args, scan_grads */

typedef struct backend {
    const char *name;      /* "cpu" or "cuda" */
    const char *precision; /* "fp32", or "bf16": GEMMs on bf16 tensor cores with float32 accumulation */
    /* The same backend in float32 and in mixed precision (itself where there is no such variant). Both
     * share one memory: a model switches between them without moving its buffers. */
    const struct backend *fp32, *bf16;
    /* Training keeps the largest activations in bf16 and recomputes more in the backward (mixed precision
     * on a GPU: memory is what limits the batch). */
    int lean_acts;

    /* ---- memory ---- */
    /* Zeroed device memory; out of memory is a one-line error naming the fix, and exit(1). */
    void *(*alloc)(size_t bytes);
    void (*release)(void *p); /* NULL is fine */
    void (*zero)(void *p, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes); /* device to device, not overlapping */
    void (*upload)(void *dst, const void *host, size_t bytes);
    void (*download)(void *host, const void *src, size_t bytes); /* waits for the data */
    void (*sync)(void); /* waits for all queued work (for timing) */
    size_t (*mem_in_use)(void); /* peak device bytes this process allocated (0 on the CPU) */
    /* Graphs (NULL where the backend has none): the ops queued between graph_begin and graph_end are
     * recorded, not run, into a graph that graph_launch replays on the same buffers. graph_end returns
     * NULL when the capture failed (the ops then did not run). */
    void (*graph_begin)(void);
    void *(*graph_end)(void);
    void (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);

    /* ---- ops (ops.h) ---- */
    void (*matmul_xwT)(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta);
    void (*matmul_dyw)(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K,
                       float beta);
    void (*matmul_dw_acc)(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K);
    void (*matmul_xwT_x16)(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K,
                           float beta);
    void (*matmul_dw_acc_x16)(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N,
                              int K);
    void (*matmul_bwd16)(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                         const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx, const float *w,
                         int M, int N, int K);
    void (*matmul_xwT_y16)(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                           const float *bias, int M, int N, int K);
    void (*round_bf16_rows)(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols);
    void (*matmul_bwd)(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x,
                       int ldx, const float *w, int M, int N, int K);
    void (*bias_add)(float *y, int ldy, const float *bias, int rows, int N);
    void (*bias_grad_acc)(float *db, const float *dy, int lddy, int rows, int N);
    void (*embedding_fwd)(float *out, const int *tokens, const float *table, int rows, int D);
    void (*embedding_bwd)(float *dtable, const float *dout, const int *tokens, int rows, int D);
    void (*rmsnorm_fwd)(float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D,
                        float eps);
    void (*add_rmsnorm_fwd)(float *x_out, float *y, uint16_t *y16, float *rstd, const float *x, const float *delta,
                            const uint16_t *delta16, const float *w, int rows, int D, float eps);
    void (*rmsnorm_bwd)(float *dx, uint16_t *dx16, float *dw, const float *dy, const uint16_t *dy16, const float *x,
                        const float *w, const float *rstd, int rows, int D, int acc);
    void (*conv1d_silu_fwd)(float *out, uint16_t *out16, const float *x, const uint16_t *x16, int ldx,
                            const float *init, const float *w, const float *bias, int B, int T, int C, int K);
    void (*conv1d_silu_bwd)(float *dx, uint16_t *dx16, int lddx, float *dw, float *dbias, const float *dout,
                            const uint16_t *dout16, const float *x, const uint16_t *x16, int ldx, const float *w,
                            const float *bias, int B, int T, int C, int K);
    void (*conv1d_state_update)(float *state, const float *x, int ldx, int B, int T, int C, int K);
    void (*conv1d_silu_step)(float *out, const float *x, int ldx, float *state, const float *w, const float *bias,
                             int B, int C, int K);
    void (*scan_fwd)(const scan_args *s, float *out, uint16_t *out16, float *h);
    void (*scan_bwd)(const scan_args *s, const scan_grads *g, const float *dout);
    void (*neg_exp_transpose)(float *At, const float *A_log, int E, int N);
    /* sum and count are host pointers */
    void (*xent_fwd_bwd)(double *sum, int *count, float *dlogits, const float *logits, const int *targets,
                         int rows, int V, float scale);
    double (*grad_norm)(const float *dw, size_t n);
    void (*adamw_step)(float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask,
                       size_t n, float lr, float weight_decay, float beta1, float beta2, float eps, long step);
} backend;

extern const backend backend_cpu;

/* The backend called name ("cpu", "cuda"), or NULL with a one-line reason and fix in ssm_last_error():
 * a build without CUDA, no usable GPU, an unsupported GPU. */
const backend *backend_by_name(const char *name);

static inline int backend_is_host(const backend *be) { return be == &backend_cpu; }
/* Whether buffers of a are buffers of b (the fp32 and bf16 tables of one device share memory). */
static inline int backend_same_memory(const backend *a, const backend *b) { return a->alloc == b->alloc; }

#endif
