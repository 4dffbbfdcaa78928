/* The registry of mixer kinds, by layer-pattern letter, and what mixers share. */
#include "mixers/mixer.h"

#include <stddef.h>

const mixer_kind *mixer_by_code(char code) {
    static const mixer_kind *const all[] = {&mixer_mamba1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->code == code) return all[i];
    return NULL;
}

void mixer_linear(const mixer_ctx *ctx, float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K) {
    if (ctx->w16 && M <= 16) ctx->be->matmul_xwT_bf16(y, ldy, x, ldx, ctx->w16 + (w - ctx->w), M, N, K, 0.0f);
    else ctx->be->matmul_xwT(y, ldy, x, ldx, w, M, N, K, 0.0f);
}
