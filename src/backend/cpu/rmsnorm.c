/* RMSNorm forward/backward (CPU). Column sums for dw use per-thread partials reduced in thread order,
 * so results are deterministic for a fixed thread count. */
#include "backend/cpu/cpu_ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* row r of y and/or y16 = xr * s * w */
static void norm_store(float *y, uint16_t *y16, size_t r, const float *xr, float s, const float *w, int D) {
    for (int i = 0; i < D; i++) {
        const float v = xr[i] * s * w[i];
        if (y) y[r * D + i] = v;
        if (y16) host_bf16_from_f32(y16 + r * D + i, &v, 1);
    }
}

void cpu_rmsnorm_fwd(mat y_m, float *rstd, const float *x, const float *w, int rows, int D, float eps) {
    float *y = mat_f(y_m);
    uint16_t *y16 = mat_h(y_m);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D;
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float s = 1.0f / sqrtf((float)(ss / D) + eps);
        if (rstd) rstd[r] = s;
        norm_store(y, y16, (size_t)r, xr, s, w, D);
    }
}

void cpu_add_rmsnorm_fwd(float *x_out, mat y_m, float *rstd, const float *x, mat delta_m, const float *w, int rows,
                         int D, float eps) {
    if (mat_h(delta_m)) { /* widened first (the CPU runs this form only to test the lean path) */
        float *dw = host_f32_from_bf16_rows(mat_h(delta_m), delta_m.ld, (size_t)rows, D);
        cpu_add_rmsnorm_fwd(x_out, y_m, rstd, x, mat_f32(dw, D), w, rows, D, eps);
        free(dw);
        return;
    }
    float *y = mat_f(y_m);
    uint16_t *y16 = mat_h(y_m);
    const float *delta = mat_f(delta_m);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D, *dr = delta ? delta + (size_t)r * D : NULL;
        float *xo = x_out + (size_t)r * D;
        double ss = 0;
        for (int i = 0; i < D; i++) {
            const float v = dr ? xr[i] + dr[i] : xr[i];
            xo[i] = v;
            ss += (double)v * v;
        }
        float s = 1.0f / sqrtf((float)(ss / D) + eps);
        if (rstd) rstd[r] = s;
        norm_store(y, y16, (size_t)r, xo, s, w, D);
    }
}

void cpu_rmsnorm_bwd(float *dx, uint16_t *dx16, float *dw, mat dy_m, const float *x, const float *w, const float *rstd,
                     int rows, int D, int acc) {
    if (mat_h(dy_m)) { /* widened first, as above */
        float *dyw = host_f32_from_bf16_rows(mat_h(dy_m), dy_m.ld, (size_t)rows, D);
        cpu_rmsnorm_bwd(dx, dx16, dw, mat_f32(dyw, D), x, w, rstd, rows, D, acc);
        free(dyw);
        return;
    }
    const float *dy = mat_f(dy_m);
    int nt = omp_get_max_threads();
    float *partial = xcalloc((size_t)nt * D, sizeof(float));
#pragma omp parallel
    {
        float *dwp = partial + (size_t)omp_get_thread_num() * D;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * D, *dyr = dy + (size_t)r * D;
            float *dxr = dx + (size_t)r * D;
            float s = rstd[r];
            double dot = 0;
            for (int i = 0; i < D; i++) {
                dot += (double)dyr[i] * w[i] * xr[i];
                dwp[i] += dyr[i] * xr[i] * s;
            }
            float c = (float)(dot / D) * s * s * s;
            if (acc)
                for (int i = 0; i < D; i++) dxr[i] += dyr[i] * w[i] * s - xr[i] * c;
            else
                for (int i = 0; i < D; i++) dxr[i] = dyr[i] * w[i] * s - xr[i] * c;
            if (dx16) host_bf16_from_f32(dx16 + (size_t)r * D, dxr, (size_t)D);
        }
    }
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < D; i++) dw[i] += partial[(size_t)t * D + i];
    free(partial);
}
