/* Softmax cross-entropy fused with its gradient (CUDA): one block per row (max, then the partition sum
 * in double as on the CPU, each a fixed-order block reduction), per-row losses summed in row-slot order
 * by a second one-block kernel, and the sum and count copied back to the host. The argmax accuracy of the same
 * logits (argmax_hits) is a block per row too: the row's max, then the first index holding it. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

__global__ static void xent_row_kernel(double *loss, int *counted, float *dlogits, const float *logits,
                                       const int *targets, int V, float scale) {
    const size_t r = blockIdx.x;
    const float *l = logits + r * V;
    float *d = dlogits ? dlogits + r * V : nullptr;
    const int target = targets[r];
    if (target < 0) { /* ignored: no loss, no count, zero gradient */
        if (d)
            for (int v = threadIdx.x; v < V; v += RED_THREADS) d[v] = 0.0f;
        if (threadIdx.x == 0) loss[r] = 0.0, counted[r] = 0;
        return;
    }
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += RED_THREADS) mx = l[v] > mx ? l[v] : mx;
    mx = block_reduce(mx, MaxOp());
    double z = 0;
    for (int v = threadIdx.x; v < V; v += RED_THREADS) z += exp((double)(l[v] - mx));
    z = block_reduce(z, SumOp());
    const double lse = mx + log(z);
    if (threadIdx.x == 0) loss[r] = lse - l[target], counted[r] = 1;
    if (d)
        for (int v = threadIdx.x; v < V; v += RED_THREADS) {
            const float g = (float)exp(l[v] - lse) * scale;
            d[v] = v == target ? g - scale : g;
        }
}

/* One block: thread i sums rows i, i + RED_THREADS, ... in order, then a fixed tree. */
__global__ static void xent_total_kernel(double *total, int *count, const double *loss, const int *counted,
                                         int rows) {
    double s = 0;
    int n = 0;
    for (int r = threadIdx.x; r < rows; r += RED_THREADS) {
        s += loss[r];
        n += counted[r];
    }
    s = block_reduce(s, SumOp());
    n = block_reduce(n, SumOp());
    if (threadIdx.x == 0) {
        *total = s;
        *count = n;
    }
}

extern "C" void xent_fwd_bwd_cuda(double *sum, int *count, float *dlogits, const float *logits, const int *targets,
                                  int rows, int V, float scale) {
    if (sum) *sum = 0;
    if (count) *count = 0;
    if (rows <= 0) return;
    double *loss; /* [rows] per-row losses, then the total */
    int *counted; /* [rows] 1 where the row's target counts, then the count */
    CUDA_CHECK(cudaMallocAsync((void **)&loss, sizeof(double) * ((size_t)rows + 1), 0));
    CUDA_CHECK(cudaMallocAsync((void **)&counted, sizeof(int) * ((size_t)rows + 1), 0));
    double *total = loss + rows;
    int *n = counted + rows;
    xent_row_kernel<<<rows, RED_THREADS>>>(loss, counted, dlogits, logits, targets, V, scale);
    CUDA_CHECK_LAUNCH();
    if (sum || count) { /* the totals, read back (the host waits for the device here) */
        xent_total_kernel<<<1, RED_THREADS>>>(total, n, loss, counted, rows);
        CUDA_CHECK_LAUNCH();
        if (sum) CUDA_CHECK(cudaMemcpy(sum, total, sizeof(double), cudaMemcpyDeviceToHost));
        if (count) CUDA_CHECK(cudaMemcpy(count, n, sizeof(int), cudaMemcpyDeviceToHost));
    }
    CUDA_CHECK(cudaFreeAsync(counted, 0));
    CUDA_CHECK(cudaFreeAsync(loss, 0));
}

struct FirstOp { /* the smaller index: the first of equal maxima, as torch.argmax and the CPU twin pick */
    __device__ int operator()(int a, int b) const { return b < a ? b : a; }
};

__global__ static void argmax_row_kernel(int *hit, const float *logits, const int *targets, int V) {
    const size_t r = blockIdx.x;
    const int target = targets[r];
    if (target < 0) { /* not an answer: not counted (the whole block returns together) */
        if (threadIdx.x == 0) hit[r] = 0;
        return;
    }
    const float *l = logits + r * V;
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += RED_THREADS) mx = l[v] > mx ? l[v] : mx;
    mx = block_reduce(mx, MaxOp());
    int first = V;
    for (int v = threadIdx.x; v < V && first == V; v += RED_THREADS)
        if (l[v] == mx) first = v;
    first = block_reduce(first, FirstOp());
    if (threadIdx.x == 0) hit[r] = first == target;
}

/* One block: the per-row hits added in row-slot order. */
__global__ static void hits_total_kernel(int *total, const int *hit, int rows) {
    int n = 0;
    for (int r = threadIdx.x; r < rows; r += RED_THREADS) n += hit[r];
    n = block_reduce(n, SumOp());
    if (threadIdx.x == 0) *total = n;
}

extern "C" void argmax_hits_cuda(int *hits, const float *logits, const int *targets, int rows, int V) {
    *hits = 0;
    if (rows <= 0) return;
    int *hit; /* [rows] 1 where the row is an answer predicted right, then the total */
    CUDA_CHECK(cudaMallocAsync((void **)&hit, sizeof(int) * ((size_t)rows + 1), 0));
    argmax_row_kernel<<<rows, RED_THREADS>>>(hit, logits, targets, V);
    CUDA_CHECK_LAUNCH();
    hits_total_kernel<<<1, RED_THREADS>>>(hit + rows, hit, rows);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaMemcpy(hits, hit + rows, sizeof(int), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFreeAsync(hit, 0));
}
