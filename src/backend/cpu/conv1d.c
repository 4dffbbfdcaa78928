/* Causal depthwise conv1d + SiLU (CPU): the Mamba "short convolution" before the scan. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <omp.h>
#include <string.h>

/* pr[0..C) = the pre-activation of step t of sequence b: bias, then the taps oldest first. */
static void conv_pre_row(float *pr, const float *x, int ldx, const float *init, const float *w, const float *bias,
                         int b, int t, int T, int C, int K) {
    for (int c = 0; c < C; c++) pr[c] = bias ? bias[c] : 0.0f;
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
}

/* bf16 operands are widened first, and a bf16 output rounded from float32 (the CPU runs those forms to test the
 * lean path) */
void cpu_conv1d_silu_fwd(mat out_m, mat x_m, const float *init, const float *w, const float *bias, int B, int T, int C,
                         int K) {
    if (mat_h(x_m)) {
        float *xw = host_f32_from_bf16_rows(mat_h(x_m), x_m.ld, (size_t)B * T, C);
        cpu_conv1d_silu_fwd(out_m, mat_f32(xw, C), init, w, bias, B, T, C, K);
        free(xw);
        return;
    }
    if (mat_h(out_m)) {
        float *o = xmalloc(sizeof(float) * ((size_t)B * T * C + 1));
        cpu_conv1d_silu_fwd(mat_f32(o, C), x_m, init, w, bias, B, T, C, K);
        host_bf16_from_f32(mat_h(out_m), o, (size_t)B * T * C);
        free(o);
        return;
    }
    float *out = mat_f(out_m);
    const float *x = mat_f(x_m);
    const int ldx = x_m.ld;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *o = out + ((size_t)b * T + t) * C;
            conv_pre_row(o, x, ldx, init, w, bias, b, t, T, C, K); /* pre, then silu(pre) in place */
            for (int c = 0; c < C; c += VW) {
                const int nw = imin(VW, C - c);
                vf p = vf_load_n(o + c, nw);
                vf_store_n(o + c, p * vf_sigmoid(p), nw);
            }
        }
}

#define CONV_BLOCK 64 /* channels per task: rows of 256 contiguous bytes, vectorized over channels */

void cpu_conv1d_silu_bwd(mat dx_m, float *dw, float *dbias, mat dout_m, mat x_m, const float *w, const float *bias,
                         int B, int T, int C, int K) {
    const size_t rows = (size_t)B * T;
    if (mat_h(dout_m) || mat_h(x_m)) { /* widened first */
        float *dw32 = mat_h(dout_m) ? host_f32_from_bf16_rows(mat_h(dout_m), dout_m.ld, rows, C) : NULL;
        float *xw = mat_h(x_m) ? host_f32_from_bf16_rows(mat_h(x_m), x_m.ld, rows, C) : NULL;
        cpu_conv1d_silu_bwd(dx_m, dw, dbias, dw32 ? mat_f32(dw32, C) : dout_m, xw ? mat_f32(xw, C) : x_m, w, bias, B,
                            T, C, K);
        free(dw32);
        free(xw);
        return;
    }
    if (mat_h(dx_m)) { /* into float32, then rounded */
        float *dxw = xmalloc(sizeof(float) * (rows * C + 1));
        cpu_conv1d_silu_bwd(mat_f32(dxw, C), dw, dbias, dout_m, x_m, w, bias, B, T, C, K);
        cpu_convert_rows(dx_m, mat_f32(dxw, C), (int)rows, C);
        free(dxw);
        return;
    }
    float *dx = mat_f(dx_m);
    const float *dout = mat_f(dout_m), *x = mat_f(x_m);
    const int lddx = dx_m.ld, ldx = x_m.ld;
    /* dpre = dout * silu'(pre); dx[t] = sum_k w[k] dpre[t + K-1-k]; dw, dbias are sums over b and t.
     * Threads own channel blocks, so those sums need no reduction; time runs inside each block. */
    const int nblk = (C + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel
    {
        float *dp = xmalloc(sizeof(float) * (size_t)T * CONV_BLOCK), pr[CONV_BLOCK];
        float *dwl = xmalloc(sizeof(float) * (size_t)K * CONV_BLOCK), dbl[CONV_BLOCK];
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * CONV_BLOCK, cn = imin(CONV_BLOCK, C - c0);
            memset(dwl, 0, sizeof(float) * (size_t)K * CONV_BLOCK);
            memset(dbl, 0, sizeof dbl);
            for (int b = 0; b < B; b++) {
                const size_t base = (size_t)b * T;
                for (int t = 0; t < T; t++) {
                    const float *go = dout + (base + t) * C + c0;
                    float *d = dp + (size_t)t * CONV_BLOCK;
                    conv_pre_row(pr, x + c0, ldx, NULL, w + (size_t)c0 * K, bias ? bias + c0 : NULL, b, t, T, cn, K);
                    for (int c = 0; c < cn; c += VW) {
                        const int nw = imin(VW, cn - c);
                        vf p = vf_load_n(pr + c, nw), s = vf_sigmoid(p);
                        vf dv = vf_load_n(go + c, nw) * s * (1.0f + p * (1.0f - s));
                        vf_store_n(d + c, dv, nw);
                        vf_store_n(dbl + c, vf_load_n(dbl + c, nw) + dv, nw);
                    }
                    for (int k = 0; k < K; k++) {
                        int ts = t - (K - 1) + k;
                        if (ts < 0) continue;
                        const float *xr = x + (base + ts) * ldx + c0;
                        float *dwk = dwl + (size_t)k * CONV_BLOCK;
                        for (int c = 0; c < cn; c++) dwk[c] += d[c] * xr[c];
                    }
                }
                for (int t = 0; t < T; t++) {
                    float *o = dx + (base + t) * lddx + c0;
                    for (int c = 0; c < cn; c++) o[c] = 0.0f;
                    for (int k = 0; k < K; k++) {
                        int to = t + (K - 1) - k;
                        if (to >= T) continue;
                        const float *d = dp + (size_t)to * CONV_BLOCK;
                        for (int c = 0; c < cn; c++) o[c] += w[(size_t)(c0 + c) * K + k] * d[c];
                    }
                }
            }
            for (int c = 0; c < cn; c++) {
                if (dbias) dbias[c0 + c] += dbl[c];
                for (int k = 0; k < K; k++) dw[(size_t)(c0 + c) * K + k] += dwl[(size_t)k * CONV_BLOCK + c];
            }
        }
        free(dp);
        free(dwl);
    }
}

void cpu_conv1d_state_update(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    const int S = K - 1;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *st = state + ((size_t)b * C + c) * S;
            /* ascending k reads st[k + T] before anything at or above it is overwritten */
            for (int k = 0; k < S; k++)
                st[k] = k + T < S ? st[k + T] : x[((size_t)b * T + (k + T - S)) * ldx + c];
        }
}

void cpu_conv1d_silu_step(float *out, const float *x, int ldx, float *state, const float *w, const float *bias, int B,
                          int C, int K) {
    cpu_conv1d_silu_fwd(mat_f32(out, C), mat_f32(x, ldx), state, w, bias, B, 1, C, K);
    cpu_conv1d_state_update(state, x, ldx, B, 1, C, K);
}
