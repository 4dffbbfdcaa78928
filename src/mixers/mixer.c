/* The registry of mixer kinds, by layer-pattern letter, and what mixers share. */
#include "mixers/mixer.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>

static const mixer_kind *const mixer_all[] = {&mixer_mamba1, &mixer_mamba2, &mixer_attention, &mixer_mlp};
#define MIXER_COUNT (sizeof mixer_all / sizeof mixer_all[0])

const mixer_kind *mixer_by_code(char code) {
    for (size_t i = 0; i < MIXER_COUNT; i++)
        if (mixer_all[i]->code == code) return mixer_all[i];
    return NULL;
}

const char *mixer_codes(void) {
    static char buf[256];
    if (buf[0]) return buf;
    size_t n = 0;
    for (size_t i = 0; i < MIXER_COUNT; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%c = %s", i ? ", " : "", mixer_all[i]->code, mixer_all[i]->name);
    return buf;
}

/* The decode copy of the weight matrix at offset off [N, K], or float32's when there is none for it (an int8 copy
 * holds whole 2-D parameters: a slice of one, or a tensor of another shape, stays float32). */
static mat decode_weight(const decode_weights *q, const float *w, size_t off, int N, int K) {
    if (q->dt == MAT_BF16) return mat_bf16((const uint16_t *)q->data + off, K);
    const param_layout *L = q->layout;
    int lo = 0, hi = L->n - 1; /* the item at this offset: offsets grow in declaration order */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (L->items[mid].offset <= off) lo = mid;
        else hi = mid - 1;
    }
    const param_info *p = &L->items[lo];
    if (q->dt == MAT_I8 && p->offset == off && p->ndim == 2 && p->shape[1] == K && p->shape[0] >= N)
        return mat_i8((const int8_t *)q->data + off, K, q->scale + q->row_at[lo]);
    return mat_f32(w, K);
}

void mixer_linear(const mixer_ctx *ctx, mat y, mat x, const float *w, const float *bias, int M, int N, int K) {
    const decode_weights *q = ctx->dec;
    const mat wm = q && q->dt != MAT_F32 && M <= MIXER_DECODE_ROWS ? decode_weight(q, w, (size_t)(w - ctx->w), N, K)
                                                                    : mat_f32(w, K);
    ctx->be->matmul_xwT(y, x, wm, bias, M, N, K, 0.0f);
}

int mixer_form(const mixer_kind *k, const backend *be, int training) {
    if (!be->lean_acts || !k->bf16_acts) return MIXER_ACTS_PLAIN;
    return training ? MIXER_ACTS_LEAN_TRAIN : MIXER_ACTS_LEAN;
}

void mixer_param_add(param_layout *L, int layer, const char *tensor, int decay, int ndim, const int *shape) {
    char name[96];
    snprintf(name, sizeof name, "backbone.layers.%d.mixer.%s", layer, tensor);
    params_add(L, name, decay, ndim, shape);
}

void mixer_fill_uniform(float *p, size_t n, float bound, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = (2.0f * rng_uniform(rng) - 1.0f) * bound;
}

float mixer_dt_bias_init(rng_t *rng) {
    const double dt_min = 1e-3, dt_max = 0.1, dt_floor = 1e-4;
    double dt = exp(rng_uniform(rng) * (log(dt_max) - log(dt_min)) + log(dt_min));
    if (dt < dt_floor) dt = dt_floor;
    return (float)(dt + log(-expm1(-dt)));
}
