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
