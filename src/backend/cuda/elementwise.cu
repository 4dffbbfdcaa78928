/* Elementwise ops (CUDA): bias add and its gradient, Mamba-1's A = -exp(A_log) transposed,
 * bf16 conversion (the dt softplus and the SiLU gate are fused into the scan, scan.cu). One thread per
 * element; column sums go through colsum_acc. Accurate expf, not the fast intrinsic, to stay within 1e-5 of
 * the CPU. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#define GRID_STRIDE(i, n)                                                                           \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

struct StridedCol { /* column j of a [rows, N] matrix with row stride ld */
    const float *m;
    int ld;
    __device__ float operator()(int r, int j) const { return m[(size_t)r * ld + j]; }
};

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



#define F32_ONLY(cond, op)                                                                              \
    do {                                                                                            \
        if (!(cond)) {                                                                              \
            fprintf(stderr, "ssm: %s:%d: %s takes float32 operands only\n", __FILE__, __LINE__, op);   \
            exit(2);                                                                                \
        }                                                                                           \
    } while (0)

/* SwiGLU's gate (float32 operands): h = silu(g) * u and its backward, one thread per element of h. */
__global__ static void swiglu_fwd_kernel(float *h, int ldh, const float *gu, int ldgu, int rows, int I) {
    const size_t n = (size_t)rows * I;
    GRID_STRIDE(i, n) {
        const size_t r = i / I, c = i % I;
        const float g = gu[r * ldgu + c], u = gu[r * ldgu + I + c];
        h[r * ldh + c] = g / (1.0f + expf(-g)) * u;
    }
}

__global__ static void swiglu_bwd_kernel(float *dgu, int lddgu, const float *dh, int lddh, const float *gu, int ldgu,
                                         int rows, int I) {
    const size_t n = (size_t)rows * I;
    GRID_STRIDE(i, n) {
        const size_t r = i / I, c = i % I;
        const float g = gu[r * ldgu + c], u = gu[r * ldgu + I + c], d = dh[r * lddh + c], s = 1.0f / (1.0f + expf(-g));
        dgu[r * lddgu + c] = d * u * s * (1.0f + g * (1.0f - s));
        dgu[r * lddgu + I + c] = d * g * s;
    }
}

extern "C" void swiglu_fwd_cuda(mat h, mat gu, int rows, int I) {
    F32_ONLY(mat_f(h) && mat_f(gu), "swiglu_fwd");
    const size_t n = (size_t)rows * I;
    if (n == 0) return;
    swiglu_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(mat_f(h), h.ld, mat_f(gu), gu.ld, rows, I);
    CUDA_CHECK_LAUNCH();
}

extern "C" void swiglu_bwd_cuda(mat dgu, mat dh, mat gu, int rows, int I) {
    F32_ONLY(mat_f(dgu) && mat_f(dh) && mat_f(gu), "swiglu_bwd");
    const size_t n = (size_t)rows * I;
    if (n == 0) return;
    swiglu_bwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(mat_f(dgu), dgu.ld, mat_f(dh), dh.ld, mat_f(gu), gu.ld, rows, I);
    CUDA_CHECK_LAUNCH();
}
