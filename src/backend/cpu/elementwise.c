/* Elementwise ops of the Mamba-1 mixer (CPU): dt softplus with bias and the SiLU output gate (the scan's
 * reference; the scan itself fuses both), and A = -exp(A_log).
 * Rows are processed 16 channels at a time with the vectorized exp/log of vec.h. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <omp.h>

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

/* SwiGLU's gate: h = silu(g) * u, its backward d(g | u). float32 operands only. */
void cpu_swiglu_fwd(mat h, mat gu, int rows, int I) {
    CHECK(mat_f(h) && mat_f(gu), "swiglu_fwd: float32 operands only");
    float *hp = mat_f(h);
    const float *g = mat_f(gu);
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i += VW) {
            const int nw = imin(VW, I - i);
            const vf gv = vf_load_n(g + (size_t)r * gu.ld + i, nw), uv = vf_load_n(g + (size_t)r * gu.ld + I + i, nw);
            vf_store_n(hp + (size_t)r * h.ld + i, gv * vf_sigmoid(gv) * uv, nw);
        }
}

void cpu_swiglu_bwd(mat dgu, mat dh, mat gu, int rows, int I) {
    CHECK(mat_f(dgu) && mat_f(dh) && mat_f(gu), "swiglu_bwd: float32 operands only");
    float *d = mat_f(dgu);
    const float *g = mat_f(gu), *dhp = mat_f(dh);
#pragma omp parallel for schedule(static) if ((size_t)rows * I > 32768)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < I; i += VW) {
            const int nw = imin(VW, I - i);
            const vf gv = vf_load_n(g + (size_t)r * gu.ld + i, nw), uv = vf_load_n(g + (size_t)r * gu.ld + I + i, nw);
            const vf dv = vf_load_n(dhp + (size_t)r * dh.ld + i, nw), sg = vf_sigmoid(gv);
            /* d silu(g) / dg = s (1 + g (1 - s)) */
            vf_store_n(d + (size_t)r * dgu.ld + i, dv * uv * sg * (1.0f + gv * (1.0f - sg)), nw);
            vf_store_n(d + (size_t)r * dgu.ld + I + i, dv * gv * sg, nw);
        }
}
