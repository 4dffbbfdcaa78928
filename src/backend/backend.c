/* The CPU backend's table (host memory, src/backend/cpu ops), the op names, and the lookup of a backend by name. */
#include "backend/backend.h"
#include "common.h"
#include "backend/cpu/cpu_ops.h"

#include <string.h>

/* Sizes here follow the user's --batch and --seq-len: running out is their error to fix, not an internal one
 * (the CUDA backend says the same of GPU memory). */
static void *host_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "ssm: out of memory allocating %.1f MiB: use a smaller --batch or --seq-len, or a smaller "
                "model\n", bytes / 1048576.0);
        exit(1);
    }
    return p;
}
static void host_release(void *p) { free(p); }
static void host_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void host_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void host_sync(void) {}
static size_t host_mem_in_use(void) { return 0; }

const backend backend_cpu = {
    .name = "cpu",
    .precision = "fp32",
    .fp32 = &backend_cpu,
    .bf16 = &backend_cpu, /* the CPU's bf16 is decode weights (ssm_model_use_bf16), not a table */
    .alloc = host_alloc,
    .release = host_release,
    .zero = host_zero,
    .copy = host_copy,
    .upload = host_copy,
    .download = host_copy,
    .sync = host_sync,
    .mem_in_use = host_mem_in_use,
    .graph_begin = NULL, /* no graphs: ops run as they are called */
#define OP(ret, name, params, args, group) .name = cpu_##name,
#include "backend/ops_list.h"
#undef OP
};

const char *const backend_op_names[BACKEND_OP_COUNT] = {
#define OP(ret, name, params, args, group) #name,
#include "backend/ops_list.h"
#undef OP
};
const char *const backend_op_groups[BACKEND_OP_COUNT] = {
#define OP(ret, name, params, args, group) #group,
#include "backend/ops_list.h"
#undef OP
};

int backend_has_op(const backend *be, int op) {
    switch (op) {
#define OP(ret, name, params, args, group)                                                                            \
    case BACKEND_OP_##name: return be->name != NULL;
#include "backend/ops_list.h"
#undef OP
    }
    return 0;
}

int backend_check_op(const backend *be, int op, const void *args) {
    if (!backend_has_op(be, op))
        return ssm_error("the %s backend has no %s kernel; use --device cpu", be->name,
                         op >= 0 && op < BACKEND_OP_COUNT ? backend_op_names[op] : "such");
    return be->check_op ? be->check_op(op, args) : 0;
}

#ifdef SSM_CUDA
extern const backend backend_cuda;
/* 0 when GPU `device` is present and usable, else -1 with the reason (src/backend/cuda/memory.cu). */
int cuda_backend_check(int device);
#endif

/* The GPU index of "cuda" (0) or "cuda:N" (N in decimal digits alone, below 2^20), else -1. */
static int cuda_index(const char *name) {
    if (!strcmp(name, "cuda")) return 0;
    if (strncmp(name, "cuda:", 5) || !name[5]) return -1;
    int n = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || n >= 1 << 20) return -1;
        n = n * 10 + (*p - '0');
    }
    return n < 1 << 20 ? n : -1;
}

const backend *backend_by_name(const char *name, int *device) {
    const int cpu = !strcmp(name, "cpu"), index = cpu ? 0 : cuda_index(name);
    if (index < 0) { /* the name first: a typo is reported as one on any machine */
        ssm_error("unknown device '%s' (expected cpu, cuda, or cuda:N for GPU N)", name);
        return NULL;
    }
    if (device) *device = index;
    if (cpu) return &backend_cpu;
#ifdef SSM_CUDA
    return cuda_backend_check(index) ? NULL : &backend_cuda;
#else
    ssm_error("this ssm was built without CUDA (no nvcc at build time): use --device cpu, or install the "
              "CUDA toolkit and rebuild");
    return NULL;
#endif
}
