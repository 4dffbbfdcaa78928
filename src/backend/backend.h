/* A backend: where the model's buffers live and the ops that compute on them. The model and the mixers
 * are written once against this table; backend_cpu points at src/backend/cpu, backend_cuda at the _cuda kernels
 * (ops_cuda.h). Every pointer an op takes is memory of that backend ("device memory"); upload/download cross to
 * and from the host. The ops are those of ops_list.h, with their shapes and semantics. */
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
    size_t (*mem_in_use)(void); /* peak device bytes of the bound context (below; 0 on the CPU) */
    /* Graphs (NULL where the backend has none): the ops queued between graph_begin and graph_end are
     * recorded, not run, into a graph that graph_launch replays on the same buffers. graph_end returns
     * NULL when the capture failed (the ops then did not run). */
    void (*graph_begin)(void);
    void *(*graph_end)(void);
    void (*graph_launch)(void *graph);
    void (*graph_free)(void *graph);
    /* Device contexts (NULL where the backend keeps no state between calls: the CPU). What a device backend keeps
     * besides the buffers it hands out (library handles and their plans, scratch, the bf16 weight shadow, allocation
     * accounting) lives in a context, one per model, so that models never share it. ctx_new makes one on device
     * `device` (an index backend_by_name accepted); ctx_bind makes it the calling thread's context, which the memory
     * functions, graphs and ops above then use, and its device current; ctx_free releases what it holds (bound or
     * not). The model binds its context before each call that queues work on its buffers. */
    void *(*ctx_new)(int device);
    void (*ctx_free)(void *ctx);
    void (*ctx_bind)(void *ctx);

    /* A fused decode step of a stack of Mamba-1 layers (m1_decode_args, ops.h), NULL where the backend has none: 0
     * when it ran, -1 when it does not take these sizes (nothing queued; the caller runs the step op by op). */
    int (*decode_mamba1)(const m1_decode_args *a);
    int (*decode_mamba2)(const m2_decode_args *a); /* the same for Mamba-2 layers (m2_decode_args) */
    int (*decode_transformer)(const t_decode_args *a); /* for attention and MLP layers (t_decode_args) */
    /* Limits: 0 when this backend runs op (a BACKEND_OP_* index) on arguments of these sizes, else -1 with ssm_error()
     * saying why in one line for the user (the limit, the value, the fix). args: the op's argument struct where it has
     * one (scan_fwd, scan_bwd: a scan_args, whose sizes are read and pointers not; sizes not known yet, such as the
     * batch before a model runs, are 0), else NULL. NULL: no limits. Each backend answers for its own kernels, beside
     * them; callers ask through backend_check_op. */
    int (*check_op)(int op, const void *args);

    /* ---- ops: one pointer per op of ops_list.h, with the shapes and semantics documented there; NULL where the
     * backend has no kernel for it ---- */
#define OP(ret, name, params, args, group) ret(*name) params;
#include "backend/ops_list.h"
#undef OP
} backend;

/* The ops by index (BACKEND_OP_scan_fwd, ...), in the list's order, and their names and profile groups
 * ("matmul_xwT", "gemm"): for the profiler and the tests, which walk every op. */
enum {
#define OP(ret, name, params, args, group) BACKEND_OP_##name,
#include "backend/ops_list.h"
#undef OP
    BACKEND_OP_COUNT
};
extern const char *const backend_op_names[BACKEND_OP_COUNT];
extern const char *const backend_op_groups[BACKEND_OP_COUNT];

extern const backend backend_cpu;

/* Whether be's table has a kernel for op. */
int backend_has_op(const backend *be, int op);
/* 0 when be runs op on arguments of these sizes (see check_op), else -1 with ssm_error(): no kernel, or a limit. */
int backend_check_op(const backend *be, int op, const void *args);

/* The backend of a device name ("cpu", "cuda", "cuda:N"; "cuda" is "cuda:0") and, when device is not NULL, the
 * device's index in *device (0 for the CPU); or NULL with a one-line reason and fix in ssm_last_error(): a malformed
 * name (checked first, whatever the machine), a build without CUDA, no usable GPU, no GPU N, an unsupported GPU. */
const backend *backend_by_name(const char *name, int *device);

static inline int backend_is_host(const backend *be) { return be == &backend_cpu; }
/* Whether buffers of a are buffers of b (the fp32 and bf16 tables of one device share memory). */
static inline int backend_same_memory(const backend *a, const backend *b) { return a->alloc == b->alloc; }

#endif
