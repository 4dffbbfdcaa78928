/* Elementwise ops (CUDA): bias add and its gradient, Mamba-1's A = -exp(A_log) transposed,
 * bf16 conversion (the dt softplus and the SiLU gate are fused into the scan, scan.cu). One thread per
 * element; column sums go through colsum_acc. Accurate expf, not the fast intrinsic, to stay within 1e-5 of
 * the CPU. */
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/reduce.cuh"

#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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


/* SwiGLU's gate: h = silu(g) * u and its backward. X: float, or __nv_bfloat16 for every operand (the lean MLP's:
 * widened, computed in float32, rounded once). A thread takes V consecutive elements of a row: 16 bytes (V = 4 floats,
 * 8 bf16) through one load or store each, where the widths, row strides and pointers allow (the MLP's always do: the
 * kernels are bound by the bytes they move, and 2-byte accesses left half the bandwidth unused), else V = 1. */
__device__ __forceinline__ static float sw_widen(float x) { return x; }
__device__ __forceinline__ static float sw_widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ static void sw_narrow(float &d, float x) { d = x; }
__device__ __forceinline__ static void sw_narrow(__nv_bfloat16 &d, float x) { d = __float2bfloat16_rn(x); }

template <typename X, int V> struct alignas(sizeof(X) * V) sw_vec {
    X v[V];
};
template <typename X, int V> __device__ __forceinline__ static void sw_load(float (&f)[V], const X *p) {
    const sw_vec<X, V> t = *reinterpret_cast<const sw_vec<X, V> *>(p);
#pragma unroll
    for (int k = 0; k < V; k++) f[k] = sw_widen(t.v[k]);
}
template <typename X, int V> __device__ __forceinline__ static void sw_store(X *p, const float (&f)[V]) {
    sw_vec<X, V> t;
#pragma unroll
    for (int k = 0; k < V; k++) sw_narrow(t.v[k], f[k]);
    *reinterpret_cast<sw_vec<X, V> *>(p) = t;
}

template <typename X, int V>
__global__ static void swiglu_fwd_kernel(X *h, int ldh, const X *gu, int ldgu, int rows, int I) {
    const int IV = I / V;
    const size_t n = (size_t)rows * IV;
    GRID_STRIDE(i, n) {
        const size_t r = i / IV, c = (i % IV) * V;
        float g[V], u[V], o[V];
        sw_load<X, V>(g, gu + r * ldgu + c), sw_load<X, V>(u, gu + r * ldgu + I + c);
#pragma unroll
        for (int k = 0; k < V; k++) o[k] = g[k] / (1.0f + expf(-g[k])) * u[k];
        sw_store<X, V>(h + r * ldh + c, o);
    }
}

template <typename X, int V>
__global__ static void swiglu_bwd_kernel(X *dgu, int lddgu, const X *dh, int lddh, const X *gu, int ldgu, int rows,
                                         int I) {
    const int IV = I / V;
    const size_t n = (size_t)rows * IV;
    GRID_STRIDE(i, n) {
        const size_t r = i / IV, c = (i % IV) * V;
        float g[V], u[V], d[V], dg[V], du[V];
        sw_load<X, V>(g, gu + r * ldgu + c), sw_load<X, V>(u, gu + r * ldgu + I + c);
        sw_load<X, V>(d, dh + r * lddh + c);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float s = 1.0f / (1.0f + expf(-g[k]));
            dg[k] = d[k] * u[k] * s * (1.0f + g[k] * (1.0f - s)); /* d silu(g) / dg = s (1 + g (1 - s)) */
            du[k] = d[k] * g[k] * s;
        }
        sw_store<X, V>(dgu + r * lddgu + c, dg), sw_store<X, V>(dgu + r * lddgu + I + c, du);
    }
}

/* Whether rows of width I at these strides and pointers allow 16-byte accesses of elements of eb bytes */
static bool sw_vectorizable(int I, size_t eb, const mat *m, int n) {
    const int V = (int)(16 / eb);
    bool ok = I % V == 0;
    for (int i = 0; i < n; i++) ok = ok && m[i].ld % V == 0 && (uintptr_t)m[i].p % 16 == 0;
    return ok;
}

/* 1 when every mat is bf16, 0 when every one is float32; else the one-line error (SwiGLU's and relu2's operands) */
static int elem_bf16(const char *op, mat a, mat b, mat c) {
    if (a.dt == MAT_BF16 && b.dt == MAT_BF16 && c.dt == MAT_BF16) return 1;
    if (a.dt == MAT_F32 && b.dt == MAT_F32 && c.dt == MAT_F32) return 0;
    fprintf(stderr, "ssm: %s takes operands all float32 or all bf16\n", op);
    exit(2);
}

extern "C" void swiglu_fwd_cuda(mat h, mat gu, int rows, int I) {
    const int bf = elem_bf16("swiglu_fwd", h, gu, gu);
    const mat ms[] = {h, gu};
    if ((size_t)rows * I == 0) return;
    typedef __nv_bfloat16 B16;
#define SW_FWD(X, V)                                                                                                   \
    swiglu_fwd_kernel<X, V><<<elem_blocks((size_t)rows * I / V), ELEM_THREADS>>>((X *)h.p, h.ld, (const X *)gu.p,     \
                                                                                  gu.ld, rows, I)
    if (sw_vectorizable(I, bf ? 2 : 4, ms, 2)) {
        if (bf) SW_FWD(B16, 8);
        else SW_FWD(float, 4);
    } else {
        if (bf) SW_FWD(B16, 1);
        else SW_FWD(float, 1);
    }
#undef SW_FWD
    CUDA_CHECK_LAUNCH();
}

extern "C" void swiglu_bwd_cuda(mat dgu, mat dh, mat gu, int rows, int I) {
    const int bf = elem_bf16("swiglu_bwd", dgu, dh, gu);
    const mat ms[] = {dgu, dh, gu};
    if ((size_t)rows * I == 0) return;
    typedef __nv_bfloat16 B16;
#define SW_BWD(X, V)                                                                                                   \
    swiglu_bwd_kernel<X, V><<<elem_blocks((size_t)rows * I / V), ELEM_THREADS>>>(                                     \
        (X *)dgu.p, dgu.ld, (const X *)dh.p, dh.ld, (const X *)gu.p, gu.ld, rows, I)
    if (sw_vectorizable(I, bf ? 2 : 4, ms, 3)) {
        if (bf) SW_BWD(B16, 8);
        else SW_BWD(float, 4);
    } else {
        if (bf) SW_BWD(B16, 1);
        else SW_BWD(float, 1);
    }
#undef SW_BWD
    CUDA_CHECK_LAUNCH();
}

/* The squared ReLU: h = relu(u)^2 and its backward du = dh * 2 relu(u), one thread per element (du may be dh: each
 * thread reads its element before it writes it). X as for SwiGLU: float, or __nv_bfloat16 for every operand. */
template <typename X>
__global__ static void relu2_fwd_kernel(X *h, int ldh, const X *u, int ldu, int rows, int I) {
    const size_t n = (size_t)rows * I;
    GRID_STRIDE(i, n) {
        const size_t r = i / I, c = i % I;
        const float v = fmaxf(sw_widen(u[r * ldu + c]), 0.0f);
        sw_narrow(h[r * ldh + c], v * v);
    }
}

template <typename X>
__global__ static void relu2_bwd_kernel(X *du, int lddu, const X *dh, int lddh, const X *u, int ldu, int rows, int I) {
    const size_t n = (size_t)rows * I;
    GRID_STRIDE(i, n) {
        const size_t r = i / I, c = i % I;
        const float v = fmaxf(sw_widen(u[r * ldu + c]), 0.0f), d = sw_widen(dh[r * lddh + c]);
        sw_narrow(du[r * lddu + c], d * 2.0f * v);
    }
}

extern "C" void relu2_fwd_cuda(mat h, mat u, int rows, int I) {
    const size_t n = (size_t)rows * I;
    const int bf = elem_bf16("relu2_fwd", h, u, u);
    if (n == 0) return;
    if (bf)
        relu2_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>((__nv_bfloat16 *)mat_h(h), h.ld,
                                                           (const __nv_bfloat16 *)mat_h(u), u.ld, rows, I);
    else
        relu2_fwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(mat_f(h), h.ld, mat_f(u), u.ld, rows, I);
    CUDA_CHECK_LAUNCH();
}

extern "C" void relu2_bwd_cuda(mat du, mat dh, mat u, int rows, int I) {
    const size_t n = (size_t)rows * I;
    const int bf = elem_bf16("relu2_bwd", du, dh, u);
    if (n == 0) return;
    if (bf)
        relu2_bwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>((__nv_bfloat16 *)mat_h(du), du.ld,
                                                           (const __nv_bfloat16 *)mat_h(dh), dh.ld,
                                                           (const __nv_bfloat16 *)mat_h(u), u.ld, rows, I);
    else
        relu2_bwd_kernel<<<elem_blocks(n), ELEM_THREADS>>>(mat_f(du), du.ld, mat_f(dh), dh.ld, mat_f(u), u.ld, rows,
                                                           I);
    CUDA_CHECK_LAUNCH();
}
