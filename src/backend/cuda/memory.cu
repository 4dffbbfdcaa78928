// Device memory for the CUDA backend (backend_cuda.c): allocation with a clear out-of-memory error and peak
// accounting (in the bound device context), copies on the per-thread default stream, graphs, and the check that a
// GPU is present and usable.
#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
#include "common.h"
#include "ops/ops_cuda.h"

extern "C" int cuda_backend_check(int device) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0)
        return ssm_error("no usable CUDA GPU (%s): use --device cpu",
                         err != cudaSuccess ? cudaGetErrorString(err) : "no device found");
    if (device < 0 || device >= n) {
        char have[32] = "cuda:0";
        if (n > 1) snprintf(have, sizeof have, "cuda:0 to cuda:%d", n - 1);
        return ssm_error("no GPU cuda:%d: this machine has %d (%s); use one of those, or --device cpu", device, n,
                         have);
    }
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    if (p.major < 8)
        return ssm_error("GPU cuda:%d (%s) has compute capability %d.%d; ssm's CUDA kernels need 8.0 or newer (Ampere, "
                         "Hopper): use --device cpu", device, p.name, p.major, p.minor);
    return 0;
}

/* Bytes handed out by cuda_alloc, per device context (live and peak): with the stream-ordered pool's high-water mark
 * this is the memory the model uses, comparable to torch.cuda.max_memory_allocated. */
static void alloc_note(cuda_ctx *ctx, void *p, size_t bytes) {
    if (ctx->alloc_n == CUDA_CTX_MAX_ALLOCS) return;
    ctx->alloc_table[ctx->alloc_n].p = p, ctx->alloc_table[ctx->alloc_n].bytes = bytes, ctx->alloc_n++;
    ctx->alloc_live += bytes;
    if (ctx->alloc_live > ctx->alloc_peak) ctx->alloc_peak = ctx->alloc_live;
}

/* Forgets p; returns its size (0 when it was not in the table). */
static size_t alloc_forget(cuda_ctx *ctx, void *p) {
    for (int i = 0; i < ctx->alloc_n; i++)
        if (ctx->alloc_table[i].p == p) {
            const size_t bytes = ctx->alloc_table[i].bytes;
            ctx->alloc_live -= bytes;
            ctx->alloc_table[i] = ctx->alloc_table[--ctx->alloc_n];
            return bytes;
        }
    return 0;
}

extern "C" void *cuda_alloc(size_t bytes) {
    cuda_ctx *ctx = cuda_ctx_now(); /* first: binding makes its device current, where the memory is to be */
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
    if (err == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError(); /* clear the sticky-free error so the query works */
        cudaMemGetInfo(&free_b, &total_b);
        fprintf(stderr,
                "ssm: out of GPU memory allocating %.1f MiB (%.2f of %.2f GiB free): use a smaller --batch or "
                "--seq-len, or --device cpu\n",
                bytes / 1048576.0, free_b / 1073741824.0, total_b / 1073741824.0);
        exit(1);
    }
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, 0));
    alloc_note(ctx, p, bytes);
    return p;
}

extern "C" void cuda_release(void *p) {
    if (!p) return;
    cuda_ctx *ctx = cuda_ctx_now();
    const size_t bytes = alloc_forget(ctx, p);
    w16_note_write(p, bytes ? bytes : ~(size_t)0 >> 1); /* the weights' bf16 shadow (weights16.cu); unknown size: all */
    int device = ctx->device;
    if (!bytes) { /* not made in this context: perhaps on another GPU (left behind by a model that moved since) */
        cudaPointerAttributes at;
        CUDA_CHECK(cudaPointerGetAttributes(&at, p));
        if (at.type == cudaMemoryTypeDevice) device = at.device;
    }
    if (device != ctx->device) CUDA_CHECK(cudaSetDevice(device)); /* freed where it lives */
    CUDA_CHECK(cudaFree(p));
    if (device != ctx->device) CUDA_CHECK(cudaSetDevice(ctx->device));
}

/* Writes into device memory tell the weights' bf16 shadow (weights16.cu), which they may make stale. */
extern "C" void cuda_zero(void *p, size_t bytes) {
    w16_note_write(p, bytes);
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
}

extern "C" void cuda_copy(void *dst, const void *src, size_t bytes) {
    w16_note_write(dst, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}

extern "C" void cuda_upload(void *dst, const void *host, size_t bytes) {
    w16_note_write(dst, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
}

extern "C" void cuda_download(void *host, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void cuda_sync(void) {
    cuda_ctx_now(); /* (its device current: the one to wait for) */
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* The pool is the device's, shared by the contexts on it: its part of the sum is theirs together. */
extern "C" size_t cuda_mem_in_use(void) {
    const cuda_ctx *ctx = cuda_ctx_now();
    cudaMemPool_t pool;
    unsigned long long pool_high = 0; /* cuuint64_t */
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ctx->device));
    CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &pool_high));
    return ctx->alloc_peak + (size_t)pool_high;
}

extern "C" void cuda_graph_begin(void) {
    /* relaxed: a first GEMM may allocate cuBLASLt's workspace inside the capture */
    CUDA_CHECK(cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeRelaxed));
}

extern "C" void *cuda_graph_end(void) {
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t err = cudaStreamEndCapture(cudaStreamPerThread, &graph);
    if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* clear it: the caller runs the ops without a graph */
        return NULL;
    }
    return exec;
}

extern "C" void cuda_graph_launch(void *graph) {
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph, cudaStreamPerThread));
}

extern "C" void cuda_graph_free(void *graph) {
    if (graph) CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)graph));
}
