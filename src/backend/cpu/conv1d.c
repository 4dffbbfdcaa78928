/* Causal depthwise conv1d + SiLU (CPU): the Mamba "short convolution" before the scan. */
#include "ops/ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

static inline float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

void conv1d_silu_fwd(float *pre, float *out, const float *x, int ldx, const float *init, const float *w,
                     const float *bias, int B, int T, int C, int K) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *pr = pre + ((size_t)b * T + t) * C, *o = out + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) pr[c] = bias[c];
            for (int k = 0; k < K; k++) {
                int ts = t - (K - 1) + k;
                if (ts >= 0) {
                    const float *xr = x + ((size_t)b * T + ts) * ldx;
                    for (int c = 0; c < C; c++) pr[c] += w[(size_t)c * K + k] * xr[c];
                } else if (init) { /* before the sequence: the carried inputs, oldest first */
                    const float *st = init + (size_t)b * C * (K - 1) + (K - 1 + ts);
                    for (int c = 0; c < C; c++) pr[c] += w[(size_t)c * K + k] * st[(size_t)c * (K - 1)];
                }
            }
            for (int c = 0; c < C; c++) o[c] = pr[c] * sigmoidf(pr[c]);
        }
}

void conv1d_silu_bwd(float *dx, int lddx, float *dw, float *dbias, const float *dout, const float *pre,
                     const float *x, int ldx, const float *w, int B, int T, int C, int K) {
    /* dpre = dout * silu'(pre); dx[t] = sum_k w[k] dpre[t + K-1-k]; dw, dbias are channel sums,
     * so channels are split across threads and time runs inside (no reduction races). */
#pragma omp parallel
    {
        float *dpre = xmalloc(sizeof(float) * (size_t)T);
#pragma omp for schedule(static)
        for (int c = 0; c < C; c++) {
            for (int b = 0; b < B; b++) {
                const size_t base = (size_t)b * T;
                for (int t = 0; t < T; t++) {
                    float p = pre[(base + t) * C + c], s = sigmoidf(p);
                    dpre[t] = dout[(base + t) * C + c] * s * (1.0f + p * (1.0f - s));
                }
                float db = 0;
                for (int t = 0; t < T; t++) db += dpre[t];
                dbias[c] += db;
                for (int k = 0; k < K; k++) {
                    float acc = 0;
                    for (int t = 0; t < T; t++) {
                        int ts = t - (K - 1) + k;
                        if (ts >= 0) acc += dpre[t] * x[(base + ts) * ldx + c];
                    }
                    dw[(size_t)c * K + k] += acc;
                }
                for (int t = 0; t < T; t++) {
                    float acc = 0;
                    for (int k = 0; k < K; k++) {
                        int to = t + (K - 1) - k;
                        if (to < T) acc += w[(size_t)c * K + k] * dpre[to];
                    }
                    dx[(base + t) * lddx + c] = acc;
                }
            }
        }
        free(dpre);
    }
}

void conv1d_state_update(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const int S = K - 1;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *st = state + ((size_t)b * C + c) * S;
            /* ascending k reads st[k + T] before anything at or above it is overwritten */
            for (int k = 0; k < S; k++)
                st[k] = k + T < S ? st[k + T] : x[((size_t)b * T + (k + T - S)) * ldx + c];
        }
}
