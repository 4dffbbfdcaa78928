/* Fused elementwise ops of the Mamba-1 mixer (CPU): dt softplus with bias, and the SiLU output gate. */
#include "ops/ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>

static inline float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

void softplus_bias_fwd(float *dt, const float *bias, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e++) {
            float v = dt[(size_t)r * E + e] + bias[e];
            dt[(size_t)r * E + e] = v > 20.0f ? v : log1pf(expf(v)); /* torch.nn.functional.softplus */
        }
}

void softplus_bias_bwd(float *ddt, float *dbias, const float *dt, int rows, int E) {
    int nt = omp_get_max_threads();
    float *partial = xcalloc((size_t)nt * E, sizeof(float));
#pragma omp parallel
    {
        float *p = partial + (size_t)omp_get_thread_num() * E;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++)
            for (int e = 0; e < E; e++) {
                size_t i = (size_t)r * E + e;
                /* sigmoid(pre) = 1 - exp(-softplus(pre)); exact enough and needs no saved `pre` */
                float g = ddt[i] * -expm1f(-dt[i]);
                ddt[i] = g;
                p[e] += g;
            }
    }
    for (int t = 0; t < nt; t++)
        for (int e = 0; e < E; e++) dbias[e] += partial[(size_t)t * E + e];
    free(partial);
}

void gate_fwd(float *out, const float *y, const float *z, int ldz, int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e++) {
            float zv = z[(size_t)r * ldz + e];
            out[(size_t)r * E + e] = y[(size_t)r * E + e] * zv * sigmoidf(zv);
        }
}

void gate_bwd(float *dy, float *dz, int lddz, const float *dout, const float *y, const float *z, int ldz,
              int rows, int E) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int e = 0; e < E; e++) {
            float zv = z[(size_t)r * ldz + e], s = sigmoidf(zv), g = dout[(size_t)r * E + e];
            dy[(size_t)r * E + e] = g * zv * s;
            dz[(size_t)r * lddz + e] = g * y[(size_t)r * E + e] * s * (1.0f + zv * (1.0f - s));
        }
}
