/* Causal depthwise conv1d + SiLU (CUDA): one thread per (b, t, c) output, the K taps summed in the CPU's
 * order; the weight and bias gradients are column sums over b*T rows through colsum_acc. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

__device__ static inline float sigmoidf_(float p) { return 1.0f / (1.0f + expf(-p)); }

__global__ static void conv1d_silu_fwd_kernel(float *pre, float *out, const float *x, int ldx, const float *init,
                                              const float *w, const float *bias, int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        const size_t bt = i / C;
        const int t = (int)(bt % T), b = (int)(bt / T);
        float acc = bias ? bias[c] : 0.0f;
        for (int k = 0; k < K; k++) {
            const int ts = t - (K - 1) + k;
            if (ts >= 0)
                acc += w[(size_t)c * K + k] * x[((size_t)b * T + ts) * ldx + c];
            else if (init) /* before the sequence: the carried inputs, oldest first */
                acc += w[(size_t)c * K + k] * init[((size_t)b * C + c) * (K - 1) + (K - 1 + ts)];
        }
        pre[i] = acc;
        out[i] = acc * sigmoidf_(acc);
    }
}

/* dpre = dout * silu'(pre), kept for the dx, dw and dbias passes. */
__global__ static void conv1d_dpre_kernel(float *dpre, const float *dout, const float *pre, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float p = pre[i], s = sigmoidf_(p);
        dpre[i] = dout[i] * s * (1.0f + p * (1.0f - s));
    }
}

/* dx[t] = sum_k w[k] dpre[t + K-1-k] */
__global__ static void conv1d_dx_kernel(float *dx, int lddx, const float *dpre, const float *w, int B, int T, int C,
                                        int K) {
    const size_t n = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        const size_t bt = i / C;
        const int t = (int)(bt % T), b = (int)(bt / T);
        float acc = 0.0f;
        for (int k = 0; k < K; k++) {
            const int to = t + (K - 1) - k;
            if (to < T) acc += w[(size_t)c * K + k] * dpre[((size_t)b * T + to) * C + c];
        }
        dx[bt * lddx + c] = acc;
    }
}

struct ConvDw { /* dw[c, k] = sum over (b, t) of dpre[b, t, c] * x[b, t - (K-1) + k, c] */
    const float *dpre, *x;
    int ldx, T, C, K;
    __device__ float operator()(int r, int j) const {
        const int c = j / K, k = j % K, t = r % T, ts = t - (K - 1) + k;
        if (ts < 0) return 0.0f;
        return dpre[(size_t)r * C + c] * x[(size_t)(r - (K - 1) + k) * ldx + c];
    }
};

struct ConvDbias {
    const float *dpre;
    int C;
    __device__ float operator()(int r, int c) const { return dpre[(size_t)r * C + c]; }
};

__global__ static void conv1d_state_update_kernel(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const int S = K - 1;
    const size_t n = (size_t)B * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int b = (int)(i / C), c = (int)(i % C);
        float *st = state + i * S;
        /* ascending k reads st[k + T] before anything at or above it is overwritten */
        for (int k = 0; k < S; k++) st[k] = k + T < S ? st[k + T] : x[((size_t)b * T + (k + T - S)) * ldx + c];
    }
}

extern "C" void conv1d_silu_fwd_cuda(float *pre, float *out, const float *x, int ldx, const float *init,
                                     const float *w, const float *bias, int B, int T, int C, int K) {
    const size_t n = (size_t)B * T * C;
    if (n == 0) return;
    conv1d_silu_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(pre, out, x, ldx, init, w, bias, B, T, C, K);
    CUDA_CHECK_LAUNCH();
}

extern "C" void conv1d_silu_bwd_cuda(float *dx, int lddx, float *dw, float *dbias, const float *dout,
                                     const float *pre, const float *x, int ldx, const float *w, int B, int T,
                                     int C, int K) {
    const size_t n = (size_t)B * T * C;
    if (n == 0) return;
    float *dpre;
    CUDA_CHECK(cudaMallocAsync((void **)&dpre, sizeof(float) * n, 0));
    conv1d_dpre_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dpre, dout, pre, n);
    CUDA_CHECK_LAUNCH();
    conv1d_dx_kernel<<<elem_blocks(n), ELEM_THREADS>>>(dx, lddx, dpre, w, B, T, C, K);
    CUDA_CHECK_LAUNCH();
    colsum_acc(dw, ConvDw{dpre, x, ldx, T, C, K}, B * T, C * K);
    if (dbias) colsum_acc(dbias, ConvDbias{dpre, C}, B * T, C);
    CUDA_CHECK(cudaFreeAsync(dpre, 0));
}

extern "C" void conv1d_state_update_cuda(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const size_t n = (size_t)B * C;
    if (n == 0 || K <= 1) return;
    conv1d_state_update_kernel<<<elem_blocks(n), ELEM_THREADS>>>(state, x, ldx, B, T, C, K);
    CUDA_CHECK_LAUNCH();
}
