/* The training forward against scoring, on any backend (test_model on the CPU, test_cuda_model on a GPU): the
 * training forward's logits equal those of the forward with a state (ssm_forward: a batch, and one sequence at a
 * time as ssm eval reads windows), and both are causal: tokens changed from position t0 on leave every logit before
 * t0 bit-identical. A leak of later positions into earlier ones lowers the training loss and nothing else: no other
 * check sees it. Include after test.h, with model.h. */
#ifndef SSM_CAUSAL_CHECK_H
#define SSM_CAUSAL_CHECK_H

#include "model.h"

#include <string.h>

/* Weights moved off their initialization (each by up to half its tensor's scale, norms and A_log included), so that
 * no term is negligible as some are at the start of training. Host weights: before ssm_model_set_device. */
static inline void test_perturb_weights(ssm_model *m, uint64_t seed) {
    rng_t r = {seed};
    for (int i = 0; i < m->layout.n; i++) {
        const param_info *p = &m->layout.items[i];
        float *w = m->w + p->offset;
        double ss = 0;
        for (size_t j = 0; j < p->numel; j++) ss += (double)w[j] * w[j];
        const float scale = (float)sqrt(ss / (p->numel ? p->numel : 1)) + 0.02f;
        for (size_t j = 0; j < p->numel; j++) w[j] += 0.5f * scale * (2.0f * rng_uniform(&r) - 1.0f);
    }
}

typedef struct {
    double e_score, e_one; /* scoring (batch) vs the training forward; one sequence at a time vs the batch */
    size_t leak_train, leak_score; /* logits before t0 that changed */
    float *train;          /* the training forward's logits [B * T * V], host (the caller frees them) */
} causal_result;

static inline float *test_logits_of(const ssm_model *m, size_t n) {
    float *h = malloc(sizeof(float) * n);
    if (h) m->be->download(h, m->acts.logits, sizeof(float) * n);
    return h;
}

/* B sequences of T random tokens (seed), then the same from t0 on changed; EXPECTs the forward calls succeed. */
static inline causal_result test_causal(ssm_model *m, int B, int T, int t0, uint64_t seed) {
    causal_result r = {0};
    const int V = m->cfg.vocab_size;
    const size_t rows = (size_t)B * T, nl = rows * V;
    int *tok = malloc(sizeof(int) * rows), *tok2 = malloc(sizeof(int) * rows), *tgt = malloc(sizeof(int) * rows);
    float *score = malloc(sizeof(float) * nl), *score2 = malloc(sizeof(float) * nl);
    float *one = malloc(sizeof(float) * (size_t)T * V);
    rng_t g = {seed};
    for (size_t i = 0; i < rows; i++) tok[i] = (int)(rng_next(&g) % V), tgt[i] = (int)(rng_next(&g) % V);
    memcpy(tok2, tok, sizeof(int) * rows);
    for (int b = 0; b < B; b++)
        for (int t = t0; t < T; t++) tok2[(size_t)b * T + t] = (tok[(size_t)b * T + t] + 1 + b) % V;
    model_train_forward(m, tok, tgt, B, T);
    r.train = test_logits_of(m, nl);
    model_train_forward(m, tok2, tgt, B, T);
    float *train2 = test_logits_of(m, nl);
    ssm_state *s = ssm_state_new_ctx(m, B, T), *s1 = ssm_state_new_ctx(m, 1, T);
    EXPECT(s && s1, "state: %s", ssm_last_error());
    if (s && s1) {
        EXPECT(ssm_forward(m, s, tok, T, score, 0) == 0, "forward: %s", ssm_last_error());
        ssm_state_reset(s);
        EXPECT(ssm_forward(m, s, tok2, T, score2, 0) == 0, "forward: %s", ssm_last_error());
        r.e_score = test_rel_err(r.train, score, nl);
        for (int b = 0; b < B; b++) {
            ssm_state_reset(s1);
            EXPECT(ssm_forward(m, s1, tok + (size_t)b * T, T, one, 0) == 0, "forward: %s", ssm_last_error());
            const double e = test_rel_err(one, score + (size_t)b * T * V, (size_t)T * V);
            if (e > r.e_one) r.e_one = e;
        }
        for (int b = 0; b < B; b++)
            for (size_t i = (size_t)b * T * V; i < ((size_t)b * T + t0) * V; i++)
                r.leak_train += r.train[i] != train2[i], r.leak_score += score[i] != score2[i];
    }
    EXPECT(r.leak_train == 0, "the training forward is not causal: %zu logits before position %d changed",
           r.leak_train, t0);
    EXPECT(r.leak_score == 0, "the scoring forward is not causal: %zu logits before position %d changed",
           r.leak_score, t0);
    ssm_state_free(s), ssm_state_free(s1);
    free(tok), free(tok2), free(tgt), free(train2), free(score), free(score2), free(one);
    return r;
}

#endif
