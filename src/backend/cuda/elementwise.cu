/* Elementwise ops (CUDA): dt softplus with bias, the SiLU output gate, bias add and its gradient, and
 * Mamba-1's A = -exp(A_log) transpose. One thread per element; column sums go through colsum_acc.
 * Accurate libm calls (expf, log1pf, expm1f), not the fast intrinsics, to stay within 1e-5 of the CPU. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#define GRID_STRIDE(i, n)                                                                           \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__device__ static inline float sigmoidf_(float p) { return 1.0f / (1.0f + expf(-p)); }

__global__ static void softplus_bias_fwd_kernel(float *dt, const float *bias, int rows, int E) {
    const size_t n = (size_t)rows * E;
    GRID_STRIDE(i, n) {
        const float v = dt[i] + bias[i % E];
        dt[i] = v > 20.0f ? v : log1pf(expf(v)); /* torch's threshold */
    }
}

__global__ static void softplus_bias_bwd_kernel(float *ddt, const float *dt, size_t n) {
    /* sigmoid(pre) = 1 - exp(-softplus(pre)) = -expm1(-dt): needs no saved `pre` */
    GRID_STRIDE(i, n) ddt[i] = ddt[i] * -expm1f(-dt[i]);
}

struct StridedCol { /* column j of a [rows, N] matrix with row stride ld */
    const float *m;
    int ld;
    __device__ float operator()(int r, int j) const { return m[(size_t)r * ld + j]; }
};

__global__ static void gate_fwd_kernel(float *out, const float *y, const float *z, int ldz, int rows, int E) {
    const size_t n = (size_t)rows * E;
    GRID_STRIDE(i, n) {
        const float zv = z[(i / E) * ldz + i % E];
        out[i] = y[i] * zv * sigmoidf_(zv);
    }
}

/* dy may alias dout: each thread reads its element of both before writing. */
__global__ static void gate_bwd_kernel(float *dy, float *dz, int lddz, const float *dout, const float *y,
                                       const float *z, int ldz, int rows, int E) {
    const size_t n = (size_t)rows * E;
    GRID_STRIDE(i, n) {
        const size_t r = i / E, e = i % E;
        const float zv = z[r * ldz + e], s = sigmoidf_(zv), g = dout[i], yv = y[i];
        dy[i] = g * zv * s;
        dz[r * lddz + e] = g * yv * s * (1.0f + zv * (1.0f - s));
    }
}

__global__ static void bias_add_kernel(float *y, int ldy, const float *bias, int rows, int N) {
    const size_t n = (size_t)rows * N;
    GRID_STRIDE(i, n) y[(i / N) * ldy + i % N] += bias[i % N];
}

__global__ static void neg_exp_transpose_kernel(float *At, const float *A_log, int E, int N) {
    const size_t n = (size_t)E * N;
    GRID_STRIDE(i, n) { /* i indexes At [N, E]: writes coalesced */
        const size_t nn = i / E, e = i % E;
        At[i] = -expf(A_log[e * N + nn]);
    }
}

__global__ static void alog_grad_kernel(float *dA_log, const float *dAt, const float *At, int E, int N) {
    const size_t n = (size_t)E * N;
    GRID_STRIDE(i, n) { /* i indexes dA_log [E, N] */
        const size_t e = i / N, nn = i % N;
        dA_log[i] += dAt[nn * E + e] * At[nn * E + e];
    }
}

extern "C" void softplus_bias_fwd_cuda(float *dt, const float *bias, int rows, int E) {
    const size_t n = (size_t)rows * E;
    if (rows <= 0 || E <= 0) return;
    softplus_bias_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dt, bias, rows, E);
    CUDA_CHECK_LAUNCH();
}

/* The backward and its bias column sums in one pass: each thread walks a chunk of rows of one column,
 * rewriting ddt and summing it (colsum_acc's chunks and order, so the same bits as the two-pass form). */
__global__ static void softplus_bias_bwd_partial_kernel(float *__restrict__ ddt, float *__restrict__ partial,
                                                        const float *__restrict__ dt, int rows, int E, int chunk) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= E) return;
    const int r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) {
        const size_t i = (size_t)r * E + j;
        const float v = ddt[i] * -expm1f(-dt[i]);
        ddt[i] = v;
        s += v;
    }
    partial[(size_t)blockIdx.y * E + j] = s;
}

extern "C" void softplus_bias_bwd_cuda(float *ddt, float *dbias, const float *dt, int rows, int E) {
    const size_t n = (size_t)rows * E;
    if (rows <= 0 || E <= 0) return;
    if (!dbias) {
        softplus_bias_bwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(ddt, dt, n);
        CUDA_CHECK_LAUNCH();
        return;
    }
    int chunk = COLSUM_CHUNK;
    if (cdiv(rows, chunk) > 65535) chunk = cdiv(rows, 65535); /* gridDim.y limit */
    const int nchunks = cdiv(rows, chunk);
    float *partial;
    CUDA_CHECK(cudaMallocAsync((void **)&partial, sizeof(float) * (size_t)nchunks * E, 0));
    softplus_bias_bwd_partial_kernel<<<dim3(cdiv(E, 256), nchunks), 256>>>(ddt, partial, dt, rows, E, chunk);
    CUDA_CHECK_LAUNCH();
    colsum_finish(dbias, partial, nchunks, E);
    CUDA_CHECK(cudaFreeAsync(partial, 0));
}

extern "C" void gate_fwd_cuda(float *out, const float *y, const float *z, int ldz, int rows, int E) {
    const size_t n = (size_t)rows * E;
    if (rows <= 0 || E <= 0) return;
    gate_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(out, y, z, ldz, rows, E);
    CUDA_CHECK_LAUNCH();
}

extern "C" void gate_bwd_cuda(float *dy, float *dz, int lddz, const float *dout, const float *y, const float *z,
                              int ldz, int rows, int E) {
    const size_t n = (size_t)rows * E;
    if (rows <= 0 || E <= 0) return;
    gate_bwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dy, dz, lddz, dout, y, z, ldz, rows, E);
    CUDA_CHECK_LAUNCH();
}

extern "C" void bias_add_cuda(float *y, int ldy, const float *bias, int rows, int N) {
    const size_t n = (size_t)rows * N;
    if (rows <= 0 || N <= 0) return;
    bias_add_kernel<<<elem_blocks(n), ELEM_THREADS>>>(y, ldy, bias, rows, N);
    CUDA_CHECK_LAUNCH();
}

extern "C" void bias_grad_acc_cuda(float *db, const float *dy, int lddy, int rows, int N) {
    colsum_acc(db, StridedCol{dy, lddy}, rows, N);
}

extern "C" void neg_exp_transpose_cuda(float *At, const float *A_log, int E, int N) {
    const size_t n = (size_t)E * N;
    if (E <= 0 || N <= 0) return;
    neg_exp_transpose_kernel<<<elem_blocks(n), ELEM_THREADS>>>(At, A_log, E, N);
    CUDA_CHECK_LAUNCH();
}

extern "C" void alog_grad_acc_cuda(float *dA_log, const float *dAt, const float *At, int E, int N) {
    const size_t n = (size_t)E * N;
    if (E <= 0 || N <= 0) return;
    alog_grad_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dA_log, dAt, At, E, N);
    CUDA_CHECK_LAUNCH();
}

__global__ static void bf16_from_f32_kernel(uint16_t *dst, const float *src, size_t n) {
    GRID_STRIDE(i, n) {
        const uint32_t u = __float_as_uint(src[i]);
        dst[i] = (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40) /* NaN stays NaN */
                                                : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
}

__global__ static void f32_from_bf16_kernel(float *dst, const uint16_t *src, size_t n) {
    GRID_STRIDE(i, n) dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

extern "C" void bf16_from_f32_cuda(uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    bf16_from_f32_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dst, src, n);
    CUDA_CHECK_LAUNCH();
}

extern "C" void f32_from_bf16_cuda(float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    f32_from_bf16_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dst, src, n);
    CUDA_CHECK_LAUNCH();
}
