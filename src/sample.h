/* Generation: prefill a prompt with the sequence scan, then one recurrent step per token, sampling
 * with temperature, top-k and top-p (nucleus). */
#ifndef SSM_SAMPLE_H
#define SSM_SAMPLE_H

#include "common.h"
#include "ssm.h"

typedef struct {
    float temperature; /* 0: greedy (argmax) */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    uint64_t seed;
} sample_options;

/* Picks a token from logits [V] (logits is used as scratch). */
int sample_token(float *logits, int V, const sample_options *o, rng_t *rng);

/* Feeds the prompt (at least one token), then generates n tokens, calling emit for each as it is made.
 * Returns 0. */
int generate(const ssm_model *m, const int *prompt, int prompt_len, int n, const sample_options *o,
             void (*emit)(int token, void *ctx), void *ctx);

#endif
