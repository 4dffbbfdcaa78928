/* Token embedding lookup and its scatter-add gradient (CUDA). The gradient is deterministic without
 * atomics: a stable radix sort groups the rows by token (rows in order within a token), and one thread
 * per (token, column) adds its rows in that order, exactly as the sequential CPU loop does. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cub/device/device_radix_sort.cuh>

__global__ static void embedding_fwd_kernel(float *out, const int *tokens, const float *table, int rows, int D) {
    const size_t n = (size_t)rows * D;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / D, d = i % D;
        out[i] = table[(size_t)tokens[r] * D + d];
    }
}

__global__ static void iota_kernel(int *v, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}

/* One thread per (sorted position i, column d); only the first position of each token's run works. */
__global__ static void embedding_bwd_kernel(float *dtable, const float *dout, const int *keys, const int *order,
                                            int rows, int D) {
    const size_t n = (size_t)rows * D;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx / D), d = (int)(idx % D);
        const int tok = keys[i];
        if (i > 0 && keys[i - 1] == tok) continue;
        float *dst = dtable + (size_t)tok * D + d;
        float acc = *dst;
        for (int j = i; j < rows && keys[j] == tok; j++) acc += dout[(size_t)order[j] * D + d];
        *dst = acc;
    }
}

extern "C" void embedding_fwd_cuda(float *out, const int *tokens, const float *table, int rows, int D) {
    if (rows <= 0 || D <= 0) return;
    embedding_fwd_kernel<<<elem_blocks((size_t)rows * D), ELEM_THREADS>>>(out, tokens, table, rows, D);
    CUDA_CHECK_LAUNCH();
}

extern "C" void embedding_bwd_cuda(float *dtable, const float *dout, const int *tokens, int rows, int D) {
    if (rows <= 0 || D <= 0) return;
    int *buf; /* rows each: row ids in, sorted tokens, sorted row ids */
    CUDA_CHECK(cudaMallocAsync((void **)&buf, sizeof(int) * 3 * (size_t)rows, 0));
    int *ids = buf, *keys = buf + rows, *order = buf + 2 * (size_t)rows;
    iota_kernel<<<cdiv(rows, 256), 256>>>(ids, rows);
    CUDA_CHECK_LAUNCH();
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, tokens, keys, ids, order, rows));
    void *temp;
    CUDA_CHECK(cudaMallocAsync(&temp, temp_bytes ? temp_bytes : 1, 0));
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens, keys, ids, order, rows));
    embedding_bwd_kernel<<<elem_blocks((size_t)rows * D), ELEM_THREADS>>>(dtable, dout, keys, order, rows, D);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaFreeAsync(temp, 0));
    CUDA_CHECK(cudaFreeAsync(buf, 0));
}
