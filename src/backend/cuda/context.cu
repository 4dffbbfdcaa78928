// CUDA device contexts (context.h): made, bound and freed for the model through backend.h's ctx_* hooks.
#include "backend/cuda/context.h"
#include "backend/cuda/blas_batched.h"
#include "backend/cuda/cuda_common.h"
#include "common.h"
#include "ops/ops_cuda.h"

#include <string.h>

// The context the .cu files read: per thread, because the CUDA runtime's current device is per thread too.
static thread_local cuda_ctx *bound;

extern "C" void *cuda_ctx_new(int device) {
    // the device's stream-ordered pool (cudaMallocAsync scratch, shared by the contexts there) keeps what it has
    // instead of returning it to the driver at every synchronization: re-mapping it at the next allocation costs
    // more than the kernels that use it
    cudaMemPool_t pool;
    unsigned long long keep = ~0ull;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    cuda_ctx *ctx = (cuda_ctx *)xcalloc(1, sizeof *ctx); // (the rest is made where first needed)
    ctx->device = device;
    return ctx;
}

extern "C" void cuda_ctx_bind(void *ctx) {
    bound = (cuda_ctx *)ctx;
    if (!bound) return;
    // asked, not assumed: the thread's device may have been changed by code other than ours since the last bind
    int current = -1;
    CUDA_CHECK(cudaGetDevice(&current));
    if (current != bound->device) CUDA_CHECK(cudaSetDevice(bound->device));
}

// The context of callers that own none (kernel tests, benchmarks): GPU 0, made once and kept for the process.
static cuda_ctx *cuda_ctx_default(void) {
    static cuda_ctx *const ctx = (cuda_ctx *)cuda_ctx_new(0); // (C++ makes this thread-safe)
    return ctx;
}

cuda_ctx *cuda_ctx_now(void) {
    if (!bound) cuda_ctx_bind(cuda_ctx_default());
    return bound;
}

const void *cuda_ctx_table(cuda_ctx *c, const void *host, size_t bytes) {
    if (c->table && bytes == c->table_bytes && memcmp(host, c->table_host, bytes) == 0) return c->table;
    if (bytes > c->table_cap) {
        cuda_release(c->table);
        free(c->table_host);
        c->table = cuda_alloc(bytes), c->table_host = xmalloc(bytes), c->table_cap = bytes;
    }
    memcpy(c->table_host, host, bytes);
    c->table_bytes = bytes;
    CUDA_CHECK(cudaMemcpyAsync(c->table, host, bytes, cudaMemcpyHostToDevice, cudaStreamPerThread));
    return c->table;
}

extern "C" void cuda_ctx_free(void *p) {
    cuda_ctx *ctx = (cuda_ctx *)p;
    if (!ctx) return;
    cuda_ctx *const was = bound;
    cuda_ctx_bind(ctx); // its buffers are released on its device, counted in its own table
    cuda_release(ctx->scan_scratch);
    cuda_release(ctx->w16.shadow);
    cuda_release(ctx->table);
    free(ctx->table_host);
    lt_free(ctx->lt);
    blas_free(ctx->blas);
    // back to what the thread had bound, unless that was this one (the default takes over at the next call)
    cuda_ctx_bind(was == ctx ? NULL : was);
    free(ctx);
}
