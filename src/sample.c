/* Generation and sampling (see sample.h). */
#include "sample.h"
#include "model.h"

#include <math.h>
#include <string.h>

typedef struct {
    float p;
    int id;
} prob_id;

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const prob_id *)a)->p, y = ((const prob_id *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const prob_id *)a)->id - ((const prob_id *)b)->id; /* stable for ties: deterministic */
}

int sample_token(float *logits, int V, const ssm_sample_options *o, rng_t *rng) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (o->temperature <= 0) return best;
    prob_id *p = xmalloc(sizeof *p * V);
    double z = 0;
    for (int v = 0; v < V; v++) {
        p[v].id = v;
        p[v].p = expf((logits[v] - logits[best]) / o->temperature);
        z += p[v].p;
    }
    qsort(p, V, sizeof *p, by_prob_desc);
    int keep = V;
    if (o->top_k > 0 && o->top_k < keep) keep = o->top_k;
    if (o->top_p < 1) { /* the smallest prefix whose mass reaches top_p */
        double mass = 0;
        for (int i = 0; i < keep; i++) {
            mass += p[i].p / z;
            if (mass >= o->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept = 0;
    for (int i = 0; i < keep; i++) kept += p[i].p;
    double r = rng_uniform(rng) * kept;
    int tok = p[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        r -= p[i].p;
        if (r < 0) {
            tok = p[i].id;
            break;
        }
    }
    free(p);
    return tok;
}

int ssm_generate(const ssm_model *m, const int *prompt, int prompt_len, int n, const ssm_sample_options *o,
             void (*emit)(int token, void *ctx), void *ctx) {
    const int V = ssm_model_config(m)->vocab_size;
    /* a growing state (attention's cache) sized for the prompt and what is generated */
    ssm_state *s = ssm_state_new_ctx(m, 1, model_state_grows(m) ? (long)prompt_len + n : 0);
    float *logits = xmalloc(sizeof(float) * V);
    rng_t rng = {o->seed};
    ssm_forward(m, s, prompt, prompt_len, logits, 1); /* prefill: the parallel scan path */
    for (int i = 0; i < n; i++) {
        int tok = sample_token(logits, V, o, &rng);
        emit(tok, ctx);
        if (i + 1 < n) ssm_step(m, s, &tok, logits); /* O(1) recurrent step */
    }
    free(logits);
    ssm_state_free(s);
    return 0;
}
