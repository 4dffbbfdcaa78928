/* The registry of mixer kinds, by layer-pattern letter, and what mixers share. */
#include "mixers/mixer.h"

#include <stddef.h>

static const mixer_kind *const mixer_all[] = {&mixer_mamba1, &mixer_attention, &mixer_mlp};
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

void mixer_linear(const mixer_ctx *ctx, mat y, mat x, const float *w, const float *bias, int M, int N, int K) {
    const mat wm = ctx->w16 && M <= 16 ? mat_bf16(ctx->w16 + (w - ctx->w), K) : mat_f32(w, K);
    ctx->be->matmul_xwT(y, x, wm, bias, M, N, K, 0.0f);
}

int mixer_form(const mixer_kind *k, const backend *be, int training) {
    if (!be->lean_acts || !k->bf16_acts) return MIXER_ACTS_PLAIN;
    return training ? MIXER_ACTS_LEAN_TRAIN : MIXER_ACTS_LEAN;
}
