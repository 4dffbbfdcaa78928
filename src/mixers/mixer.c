/* The registry of mixer kinds, by layer-pattern letter, and what mixers share. */
#include "mixers/mixer.h"

#include <stddef.h>

const mixer_kind *mixer_by_code(char code) {
    static const mixer_kind *const all[] = {&mixer_mamba1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->code == code) return all[i];
    return NULL;
}

void mixer_linear(const mixer_ctx *ctx, mat y, mat x, const float *w, const float *bias, int M, int N, int K) {
    const mat wm = ctx->w16 && M <= 16 ? mat_bf16(ctx->w16 + (w - ctx->w), K) : mat_f32(w, K);
    ctx->be->matmul_xwT(y, x, wm, bias, M, N, K, 0.0f);
}

int mixer_form(const mixer_kind *k, const backend *be, int training) {
    if (!be->lean_acts || !k->bf16_acts) return MIXER_ACTS_PLAIN;
    return training ? MIXER_ACTS_LEAN_TRAIN : MIXER_ACTS_LEAN;
}
