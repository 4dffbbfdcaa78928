/* Token embedding lookup and its scatter-add gradient (CUDA). The gradient is deterministic without
 * atomics: a stable radix sort groups the rows by token (rows in order within a token), then the sorted rows are cut
 * into chunks of EMB_CHUNK. A block a chunk, a thread a column, adds each token's rows in order: a token whose rows
 * all fall in one chunk is added to the table there, in the sequential CPU loop's order (the same bits); a token
 * spanning chunks leaves a partial sum per chunk, which a second kernel adds in chunk order. (One thread a (token,
 * column) over all of its rows, as before 2026-12-06, made a frequent token a chain of dependent reads as long as
 * its count: 51K rows of MQAR's padding at 256 x 256, ~25 ms a step; selective copying's noise, more.) */
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

#define EMB_CHUNK 256 /* sorted rows a block adds: short chains, few partial sums */

/* Block k adds the sorted rows [k C, k C + C), a thread a column d (strided). A segment (a token's rows within the
 * chunk) that is its token's whole run goes to the table; one that continues into the next chunk (only the chunk's
 * last) is left in tail[k]; one that continues a run from the previous chunk and ends here (only the first) in
 * head[k]. keys [rows] sorted tokens, order [rows] their rows; tail, head [chunks, D]. */
__global__ static void embedding_bwd_chunks(float *dtable, float *tail, float *head, const float *dout,
                                            const int *keys, const int *order, int rows, int D) {
    __shared__ int k_sh[EMB_CHUNK], o_sh[EMB_CHUNK];
    const int s = blockIdx.x * EMB_CHUNK, n = min(EMB_CHUNK, rows - s);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        k_sh[i] = keys[s + i], o_sh[i] = order[s + i];
    __syncthreads();
    const int before = s > 0 ? keys[s - 1] : -1, after = s + n < rows ? keys[s + n] : -1;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        for (int j = 0; j < n;) {
            const int tok = k_sh[j], first = j;
            const int starts = tok != before || first > 0; /* the segment starts its token's run */
            int end = j;                                   /* the segment: [first, end) */
            while (end < n && k_sh[end] == tok) end++;
            const int continues = end == n && after == tok;
            float *dst = dtable + (size_t)tok * D + d;
            float acc = starts && !continues ? *dst : 0.0f; /* the table's own value first: the CPU's order */
            for (; j + 4 <= end; j += 4) {                  /* four reads in flight, added in order */
                const float a = dout[(size_t)o_sh[j] * D + d], b = dout[(size_t)o_sh[j + 1] * D + d],
                            c = dout[(size_t)o_sh[j + 2] * D + d], e = dout[(size_t)o_sh[j + 3] * D + d];
                acc = (((acc + a) + b) + c) + e;
            }
            for (; j < end; j++) acc += dout[(size_t)o_sh[j] * D + d];
            if (starts && !continues) *dst = acc; /* the token's whole run: this thread owns (tok, d) */
            else if (continues) tail[(size_t)blockIdx.x * D + d] = acc;
            else head[(size_t)blockIdx.x * D + d] = acc;
        }
    }
}

/* A thread a (chunk k, column d): where chunk k's last segment starts a run that continues, adds that run's partial
 * sums in chunk order (tail of each chunk the run fills, then the head of the chunk it ends in) to the table. */
__global__ static void embedding_bwd_spans(float *dtable, const float *tail, const float *head, const int *keys,
                                           int rows, int D, int chunks) {
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)chunks * D) return;
    const int k = (int)(idx / D), d = (int)(idx % D);
    const int s = k * EMB_CHUNK, e = min(s + EMB_CHUNK, rows), tok = keys[e - 1];
    if (e == rows || keys[e] != tok) return;                       /* the last segment ends in this chunk */
    if (s > 0 && keys[s - 1] == tok && keys[s] == tok) return;     /* it began in an earlier chunk */
    float acc = tail[(size_t)k * D + d];
    for (int c = k + 1;; c++) {
        const int cs = c * EMB_CHUNK, ce = min(cs + EMB_CHUNK, rows);
        if (ce < rows && keys[ce - 1] == tok && keys[ce] == tok) { /* the run fills chunk c and goes on */
            acc += tail[(size_t)c * D + d];
            continue;
        }
        acc += head[(size_t)c * D + d]; /* it ends in chunk c */
        break;
    }
    dtable[(size_t)tok * D + d] += acc;
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
    const int chunks = cdiv(rows, EMB_CHUNK), threads = D >= 1024 ? 1024 : (D + 31) / 32 * 32;
    float *parts; /* tail, head [chunks, D] each */
    CUDA_CHECK(cudaMallocAsync((void **)&parts, sizeof(float) * 2 * (size_t)chunks * D, 0));
    embedding_bwd_chunks<<<chunks, threads>>>(dtable, parts, parts + (size_t)chunks * D, dout, keys, order, rows, D);
    CUDA_CHECK_LAUNCH();
    const size_t n = (size_t)chunks * D;
    embedding_bwd_spans<<<(unsigned)((n + 255) / 256), 256>>>(dtable, parts, parts + n, keys, rows, D, chunks);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaFreeAsync(parts, 0));
    CUDA_CHECK(cudaFreeAsync(temp, 0));
    CUDA_CHECK(cudaFreeAsync(buf, 0));
}
