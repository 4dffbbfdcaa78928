/* The optimizer's ops over the flat parameter buffer (CPU): global gradient norm and AdamW (the clip's
 * scale folded into AdamW's read of the gradient). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

double cpu_grad_norm(const float *dw, size_t n) {
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static)
    for (size_t i = 0; i < n; i++) ss += (double)dw[i] * dw[i];
    return sqrt(ss);
}

void cpu_adamw_step(float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask,
                    size_t n, float lr, float weight_decay, float beta1, float beta2, float eps, long step) {
    const float bc1 = 1.0f - powf(beta1, (float)step), bc2_sqrt = sqrtf(1.0f - powf(beta2, (float)step));
    const float step_size = lr / bc1, decayed = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float gi = g[i] * gscale;
        w[i] *= decay_mask[i] ? decayed : 1.0f;
        m[i] += (gi - m[i]) * (1.0f - beta1); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
        v[i] = v[i] * beta2 + gi * gi * (1.0f - beta2);
        w[i] -= step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}
