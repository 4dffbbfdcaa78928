// Device memory for the CUDA backend (backend_cuda.c): allocation with a clear out-of-memory error and peak
// accounting, copies on the per-thread default stream, graphs, and the check that a usable GPU is present.
#include "backend/cuda/cuda_common.h"
#include "common.h"
#include "ops/ops_cuda.h"

extern "C" int cuda_backend_check(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0)
        return ssm_error("no usable CUDA GPU (%s): use --device cpu",
                         err != cudaSuccess ? cudaGetErrorString(err) : "no device found");
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    if (p.major < 8)
        return ssm_error("GPU 0 (%s) has compute capability %d.%d; ssm's CUDA kernels need 8.0 or newer (Ampere, "
                         "Hopper): use --device cpu", p.name, p.major, p.minor);
    CUDA_CHECK(cudaSetDevice(0));
    /* the stream-ordered pool (cudaMallocAsync scratch) keeps what it has instead of returning it to the driver at
     * every synchronization: re-mapping it at the next allocation costs more than the kernels that use it */
    cudaMemPool_t pool;
    unsigned long long keep = ~0ull;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    return 0;
}

/* Bytes handed out by cuda_alloc (live and peak): with the stream-ordered pool's high-water mark this is the
 * memory the model uses, comparable to torch.cuda.max_memory_allocated. */
static size_t alloc_live, alloc_peak;
static struct {
    void *p;
    size_t bytes;
} alloc_table[1024]; /* the live allocations (a model has a few dozen); beyond the table, sizes go uncounted */
static int alloc_n;

static void alloc_note(void *p, size_t bytes) {
    if (alloc_n == (int)(sizeof alloc_table / sizeof alloc_table[0])) return;
    alloc_table[alloc_n].p = p, alloc_table[alloc_n].bytes = bytes, alloc_n++;
    alloc_live += bytes;
    if (alloc_live > alloc_peak) alloc_peak = alloc_live;
}

/* Forgets p; returns its size (0 when it was not in the table). */
static size_t alloc_forget(void *p) {
    for (int i = 0; i < alloc_n; i++)
        if (alloc_table[i].p == p) {
            const size_t bytes = alloc_table[i].bytes;
            alloc_live -= bytes;
            alloc_table[i] = alloc_table[--alloc_n];
            return bytes;
        }
    return 0;
}

extern "C" void *cuda_alloc(size_t bytes) {
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
    alloc_note(p, bytes);
    return p;
}

extern "C" void cuda_release(void *p) {
    if (!p) return;
    const size_t bytes = alloc_forget(p);
    w16_note_write(p, bytes ? bytes : ~(size_t)0 >> 1); /* the weights' bf16 shadow (weights16.cu); unknown size: all */
    CUDA_CHECK(cudaFree(p));
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

extern "C" void cuda_sync(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

extern "C" size_t cuda_mem_in_use(void) {
    cudaMemPool_t pool;
    unsigned long long pool_high = 0; /* cuuint64_t */
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &pool_high));
    return alloc_peak + (size_t)pool_high;
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
