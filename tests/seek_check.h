/* model_state_seek (the bench's decode at a context without computing its prefill) against a real prefill that
 * writes zeros into every cache, on any backend (test_model on the CPU, test_cuda_model on a GPU). A Transformer
 * without biases carries a zero embedding as a zero residual stream (rmsnorm(0) = 0, q = k = v = 0, the attention's
 * and the MLP's outputs 0), so n such tokens leave the state a seek to n leaves. Include after test.h, with model.h. */
#ifndef SSM_SEEK_CHECK_H
#define SSM_SEEK_CHECK_H

#include "model.h"

#include <string.h>

/* m: an "af" model whose token 0 embeds as zeros (set its row in m->w before ssm_model_set_device). Prefills two
 * sequences with n zero tokens in one state, seeks another to n, then decodes `steps` tokens in both: the largest
 * relative difference of their logits (0: bitwise equal), or -1 with ssm_last_error() when a call failed. A seek
 * that leaves no room for a step must be refused: -2 if it was not. */
static inline double seek_vs_zero_prefill(const ssm_model *m, int n, int steps) {
    const int V = m->cfg.vocab_size;
    ssm_state *a = ssm_state_new_ctx(m, 2, n + steps), *b = ssm_state_new_ctx(m, 2, n + steps);
    int *zeros = xcalloc((size_t)2 * n, sizeof(int));
    float *la = xmalloc(sizeof(float) * 2 * n * V), *lb = xmalloc(sizeof(float) * 2 * V);
    double worst = 0;
    ssm_state_reset(a), ssm_state_reset(b);
    if (ssm_forward(m, a, zeros, n, la, 0) || model_state_seek(m, b, n) || ssm_state_position(b) != n) worst = -1;
    for (int t = 0; t < steps && worst >= 0; t++) {
        const int tok[2] = {(5 + 17 * t) % V, (200 - t) % V};
        if (ssm_step(m, a, tok, la) || ssm_step(m, b, tok, lb)) worst = -1;
        else if (memcmp(la, lb, sizeof(float) * 2 * V))
            worst = fmax(worst, test_rel_err(lb, la, (size_t)2 * V) + 1e-30);
    }
    ssm_state_reset(b);
    if (worst >= 0 && model_state_seek(m, b, n + steps) != -1) worst = -2;
    ssm_state_free(a), ssm_state_free(b);
    free(zeros), free(la), free(lb);
    return worst;
}

#endif
