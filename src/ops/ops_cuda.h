/* The CUDA kernels of the ops (the .cu files in src/backend/cuda): each op of backend/ops_list.h as <name>_cuda,
 * with the same shapes and semantics, work queued on the default stream; and the device memory, graphs and weight
 * shadow of backend_cuda. Each kernel is tested against its CPU twin (cpu_<name>) by the op runner, tests/test_ops.c. */
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
size_t cuda_mem_in_use(void); /* the bound context's peak bytes from cuda_alloc + its device's pool high-water mark */
/* The bf16 shadow of the parameter buffer (weights16.cu; the bound context's): AdamW writes bf16(w) beside w once
 * a bf16 GEMM has asked for it (w16_want); w16_for_update gives AdamW the shadow to fill (NULL: not wanted),
 * w16_updated marks it valid; w16_lookup returns the shadow of p[0..n) while valid, else NULL; w16_owns tells a
 * shadow pointer from a copy; w16_note_write drops the shadow when [dst, dst + bytes) overlaps the shadowed buffer. */
void w16_want(void);
uint16_t *w16_for_update(const float *w, size_t n);
void w16_updated(void);
const uint16_t *w16_lookup(const float *p, size_t n);
int w16_owns(const void *p);
void w16_note_write(const void *dst, size_t bytes);
/* After something other than AdamW rewrote w[0..n) (the data-parallel weight gather, src/dist/dist_nccl.c): the shadow
 * of all of it recomputed and valid again (nothing when no bf16 GEMM wants one). */
void w16_refresh(const float *w, size_t n);
/* CUDA graphs of the work queued on this thread's default stream (see backend.h). */
void cuda_graph_begin(void);
void *cuda_graph_end(void);
void cuda_graph_launch(void *graph);
void cuda_graph_free(void *graph);
/* 0 when GPU `device` (cuda:device) is usable (present, compute capability >= 8.0), else -1 with ssm_error(). */
int cuda_backend_check(int device);
/* Device contexts (context.cu; backend.h's ctx_new, ctx_free, ctx_bind): what the CUDA backend keeps between calls
 * (cuBLASLt, the weights' bf16 shadow, the scan's scratch, allocation accounting), one per model. Binding one makes
 * it the calling thread's (and its device current); without one bound, a process default on GPU 0 is used. */
void *cuda_ctx_new(int device);
void cuda_ctx_free(void *ctx);
void cuda_ctx_bind(void *ctx);
/* backend.h's decode_mamba1: one cooperative kernel (decode_mamba1.cu); -1 for sizes it does not take (more than 64
 * sequences; more than 8 with float32 weights, or d_model not a multiple of 16; d_model not a multiple of 8;
 * d_state > 32; a conv wider than 8) or a GPU without cooperative launches. */
int decode_mamba1_cuda(const m1_decode_args *a);
/* backend.h's decode_mamba2 (decode_mamba2.cu): the same limits, and at most 8 groups. */
int decode_mamba2_cuda(const m2_decode_args *a);
/* backend.h's decode_transformer (decode_transformer.cu): 1 to 8 sequences (the FFMA form only); d_model, q_proj's
 * and the MLP's widths multiples of 8; head_dim a multiple of 4 (even, for the rotation) up to 128. */
int decode_transformer_cuda(const t_decode_args *a);

/* The ops' kernels, declared from the list (backend/ops_list.h: each op's shapes and semantics): <name>_cuda for
 * every op, and for a gemm also <name>_cuda_bf16, the mixed-precision table's. An op that backend_cuda.c maps to NULL
 * (no CUDA kernel) is declared here but defined nowhere. What is particular to the CUDA kernels:
 * - every pointer is device memory except xent_fwd_bwd's sum and count and argmax_hits' count (host: the call waits
 *   for them) and grad_norm's result (returned to the host: it waits); adamw_step's decay_mask is device bytes;
 * - GEMMs are cuBLASLt: float32 with FP32 compute (no TF32); the _cuda_bf16 ones round their inputs to bf16 for the
 *   tensor cores (CUBLAS_COMPUTE_32F_FAST_16BF) with float32 accumulation and output, within 1e-2 of the float32
 *   result relative to its scale. A bf16 operand is widened first by the float32 kernels and read as it
 *   is by the bf16 ones; the bf16 matmul_bwd rounds dy once for both products;
 * - deterministic: no float atomics; column sums and norms are per-block partials added in a fixed order (the
 *   grid depends only on the sizes), so two runs give the same bits;
 * - temporaries come from cudaMallocAsync on the default stream. */
#define CUDA_KERNELS_gemm(ret, name, params) ret name##_cuda params; ret name##_cuda_bf16 params;
#define CUDA_KERNELS_scan(ret, name, params) ret name##_cuda params;
#define CUDA_KERNELS_other(ret, name, params) ret name##_cuda params;
#define CUDA_KERNELS_optim(ret, name, params) ret name##_cuda params;
#define OP(ret, name, params, args, group) CUDA_KERNELS_##group(ret, name, params)
#include "backend/ops_list.h"
#undef OP

/* The kernels' limits, each beside its kernel (backend_cuda's check_op asks them): 0, or -1 with ssm_error(). */
int scan_check_cuda(const scan_args *s); /* scan.cu: d_state (N) <= 32 */
int attn_check_cuda(const attn_args *a); /* attention.cu: head_dim <= 256 (a NULL a: no sizes to check) */

#ifdef __cplusplus
}
#endif
#endif
