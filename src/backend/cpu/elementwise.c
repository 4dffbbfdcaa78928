/* Elementwise ops of the Mamba-1 mixer (CPU): dt softplus with bias and the SiLU output gate (the scan's
 * reference; the scan itself fuses both), and A = -exp(A_log).
 * Rows are processed 16 channels at a time with the vectorized exp/log of vec.h. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "backend/host_bf16.h"
#include "common.h"

#include <omp.h>
#include <stdlib.h>

void cpu_softplus_bias_fwd(float *dt, const float *bias, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e += VW) {
            const int nw = imin(VW, E - e);
            float *p = dt + (size_t)r * E + e;
            vf_store_n(p, vf_softplus(vf_load_n(p, nw) + vf_load_n(bias + e, nw)), nw);
        }
}

void cpu_gate_fwd(float *out, const float *y, const float *z, int ldz, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e += VW) {
            const int nw = imin(VW, E - e);
            vf zv = vf_load_n(z + (size_t)r * ldz + e, nw);
            vf_store_n(out + (size_t)r * E + e, vf_load_n(y + (size_t)r * E + e, nw) * zv * vf_sigmoid(zv), nw);
        }
}

void cpu_neg_exp_transpose(float *At, const float *A_log, int E, int N) {
#pragma omp parallel for schedule(static) if (E * N > 32768)
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n += VW) {
            const int nw = imin(VW, N - n);
            vf a = -vf_exp(vf_load_n(A_log + (size_t)e * N + n, nw));
            for (int i = 0; i < nw; i++) At[(size_t)(n + i) * E + e] = a[i];
        }
}

/* SwiGLU's gate: h = silu(g) * u, its backward d(g | u). Operands all float32, or all bf16 (the lean MLP's, which the
 * CPU runs only as the tests' reference for the GPU's: widened, computed in float32, rounded once). */
static void swiglu_fwd_f32(float *hp, int ldh, const float *g, int ldgu, int rows, int I) {
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i += VW) {
            const int nw = imin(VW, I - i);
            const vf gv = vf_load_n(g + (size_t)r * ldgu + i, nw), uv = vf_load_n(g + (size_t)r * ldgu + I + i, nw);
            vf_store_n(hp + (size_t)r * ldh + i, gv * vf_sigmoid(gv) * uv, nw);
        }
}

static void swiglu_bwd_f32(float *d, int ldd, const float *dhp, int lddh, const float *g, int ldgu, int rows, int I) {
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i += VW) {
            const int nw = imin(VW, I - i);
            const vf gv = vf_load_n(g + (size_t)r * ldgu + i, nw), uv = vf_load_n(g + (size_t)r * ldgu + I + i, nw);
            const vf dv = vf_load_n(dhp + (size_t)r * lddh + i, nw), sg = vf_sigmoid(gv);
            /* d silu(g) / dg = s (1 + g (1 - s)) */
            vf_store_n(d + (size_t)r * ldd + i, dv * uv * sg * (1.0f + gv * (1.0f - sg)), nw);
            vf_store_n(d + (size_t)r * ldd + I + i, dv * gv * sg, nw);
        }
}

/* 1 when a, b, c are all bf16, 0 when all float32 (SwiGLU's and relu2's operands) */
static int elem_bf16(const char *op, mat a, mat b, mat c) {
    const int bf = a.dt == MAT_BF16;
    CHECK(a.dt == b.dt && b.dt == c.dt && (bf || a.dt == MAT_F32), "%s: operands all float32 or all bf16", op);
    return bf;
}

void cpu_swiglu_fwd(mat h, mat gu, int rows, int I) {
    if (!elem_bf16("swiglu_fwd", h, gu, gu)) {
        swiglu_fwd_f32(mat_f(h), h.ld, mat_f(gu), gu.ld, rows, I);
        return;
    }
    float *g = host_f32_from_bf16_rows(mat_h(gu), gu.ld, rows, 2 * I);
    float *hw = xmalloc(sizeof(float) * ((size_t)rows * I + 1));
    swiglu_fwd_f32(hw, I, g, 2 * I, rows, I);
    host_bf16_from_f32_rows(mat_h(h), h.ld, hw, rows, I);
    free(g), free(hw);
}

void cpu_swiglu_bwd(mat dgu, mat dh, mat gu, int rows, int I) {
    if (!elem_bf16("swiglu_bwd", dgu, dh, gu)) {
        swiglu_bwd_f32(mat_f(dgu), dgu.ld, mat_f(dh), dh.ld, mat_f(gu), gu.ld, rows, I);
        return;
    }
    float *g = host_f32_from_bf16_rows(mat_h(gu), gu.ld, rows, 2 * I);
    float *d = host_f32_from_bf16_rows(mat_h(dh), dh.ld, rows, I);
    float *dw = xmalloc(sizeof(float) * ((size_t)rows * 2 * I + 1));
    swiglu_bwd_f32(dw, 2 * I, d, I, g, 2 * I, rows, I);
    host_bf16_from_f32_rows(mat_h(dgu), dgu.ld, dw, rows, 2 * I);
    free(g), free(d), free(dw);
}

/* The squared ReLU: h = relu(u)^2, its backward du = dh * 2 relu(u). Operands all float32, or all bf16 (widened,
 * computed in float32, rounded once, as SwiGLU's). Row by row, so that du may be dh. */
static void relu2_fwd_f32(float *hp, int ldh, const float *u, int ldu, int rows, int I) {
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i++) {
            const float v = u[(size_t)r * ldu + i] > 0.0f ? u[(size_t)r * ldu + i] : 0.0f;
            hp[(size_t)r * ldh + i] = v * v;
        }
}

static void relu2_bwd_f32(float *d, int ldd, const float *dhp, int lddh, const float *u, int ldu, int rows, int I) {
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i++) {
            const float v = u[(size_t)r * ldu + i] > 0.0f ? u[(size_t)r * ldu + i] : 0.0f;
            d[(size_t)r * ldd + i] = dhp[(size_t)r * lddh + i] * 2.0f * v;
        }
}

void cpu_relu2_fwd(mat h, mat u, int rows, int I) {
    if (!elem_bf16("relu2_fwd", h, u, u)) {
        relu2_fwd_f32(mat_f(h), h.ld, mat_f(u), u.ld, rows, I);
        return;
    }
    float *uw = host_f32_from_bf16_rows(mat_h(u), u.ld, rows, I), *hw = xmalloc(sizeof(float) * ((size_t)rows * I + 1));
    relu2_fwd_f32(hw, I, uw, I, rows, I);
    host_bf16_from_f32_rows(mat_h(h), h.ld, hw, rows, I);
    free(uw), free(hw);
}

void cpu_relu2_bwd(mat du, mat dh, mat u, int rows, int I) {
    if (!elem_bf16("relu2_bwd", du, dh, u)) {
        relu2_bwd_f32(mat_f(du), du.ld, mat_f(dh), dh.ld, mat_f(u), u.ld, rows, I);
        return;
    }
    float *uw = host_f32_from_bf16_rows(mat_h(u), u.ld, rows, I);
    float *d = host_f32_from_bf16_rows(mat_h(dh), dh.ld, rows, I);
    relu2_bwd_f32(d, I, d, I, uw, I, rows, I);
    host_bf16_from_f32_rows(mat_h(du), du.ld, d, rows, I);
    free(uw), free(d);
}
