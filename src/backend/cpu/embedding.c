/* Token embedding lookup and its scatter-add gradient (CPU). */
#include "backend/cpu/cpu_ops.h"

#include <string.h>

void cpu_embedding_fwd(float *out, const int *tokens, const float *table, int rows, int D) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * D, table + (size_t)tokens[r] * D, sizeof(float) * D);
}

void cpu_embedding_bwd(float *dtable, const float *dout, const int *tokens, int rows, int D) {
    /* Sequential on purpose: rows sharing a token would race, and this is a tiny share of a step. */
    for (int r = 0; r < rows; r++) {
        float *dst = dtable + (size_t)tokens[r] * D;
        const float *src = dout + (size_t)r * D;
        for (int i = 0; i < D; i++) dst[i] += src[i];
    }
}
