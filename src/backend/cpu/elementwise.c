/* Fused elementwise ops of the Mamba-1 mixer (CPU): dt softplus with bias, and the SiLU output gate.
 * Rows are processed 16 channels at a time with the vectorized exp/log of vec.h. */
#include "ops/ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <omp.h>

void softplus_bias_fwd(float *dt, const float *bias, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e += VW) {
            const int nw = imin(VW, E - e);
            float *p = dt + (size_t)r * E + e;
            vf_store_n(p, vf_softplus(vf_load_n(p, nw) + vf_load_n(bias + e, nw)), nw);
        }
}

void softplus_bias_bwd(float *ddt, float *dbias, const float *dt, int rows, int E) {
    int nt = omp_get_max_threads();
    float *partial = xcalloc((size_t)nt * E, sizeof(float));
#pragma omp parallel
    {
        float *part = partial + (size_t)omp_get_thread_num() * E;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++)
            for (int e = 0; e < E; e += VW) {
                const int nw = imin(VW, E - e);
                const size_t i = (size_t)r * E + e;
                /* sigmoid(pre) = 1 - exp(-softplus(pre)) = -expm1(-dt): needs no saved `pre` */
                vf g = vf_load_n(ddt + i, nw) * -vf_expm1(-vf_load_n(dt + i, nw));
                vf_store_n(ddt + i, g, nw);
                vf_store_n(part + e, vf_load_n(part + e, nw) + g, nw);
            }
    }
    for (int t = 0; t < nt; t++)
        for (int e = 0; e < E; e++) dbias[e] += partial[(size_t)t * E + e];
    free(partial);
}

void gate_fwd(float *out, const float *y, const float *z, int ldz, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e += VW) {
            const int nw = imin(VW, E - e);
            vf zv = vf_load_n(z + (size_t)r * ldz + e, nw);
            vf_store_n(out + (size_t)r * E + e, vf_load_n(y + (size_t)r * E + e, nw) * zv * vf_sigmoid(zv), nw);
        }
}

void gate_bwd(float *dy, float *dz, int lddz, const float *dout, const float *y, const float *z, int ldz,
              int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e += VW) {
            const int nw = imin(VW, E - e);
            const size_t i = (size_t)r * E + e;
            vf zv = vf_load_n(z + (size_t)r * ldz + e, nw), s = vf_sigmoid(zv), g = vf_load_n(dout + i, nw);
            vf yv = vf_load_n(y + i, nw); /* read before dy is written: dy may alias dout */
            vf_store_n(dy + i, g * zv * s, nw);
            vf_store_n(dz + (size_t)r * lddz + e, g * yv * s * (1.0f + zv * (1.0f - s)), nw);
        }
}

void neg_exp_transpose(float *At, const float *A_log, int E, int N) {
#pragma omp parallel for schedule(static) if (E * N > 32768)
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n += VW) {
            const int nw = imin(VW, N - n);
            vf a = -vf_exp(vf_load_n(A_log + (size_t)e * N + n, nw));
            for (int i = 0; i < nw; i++) At[(size_t)(n + i) * E + e] = a[i];
        }
}

void alog_grad_acc(float *dA_log, const float *dAt, const float *At, int E, int N) {
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) dA_log[(size_t)e * N + n] += dAt[(size_t)n * E + e] * At[(size_t)n * E + e];
}
