/* The model driver: config, layer pattern, parameter layout and the residual stack
 *   x = embed(tokens); for each layer: x += mixer(rmsnorm(x)); logits = rmsnorm_f(x) @ embed^T
 * (HF MambaForCausalLM with a tied head), for training (forward + backward) and inference (state). */
#include "model.h"
#include "common.h"
#include "ops/ops.h"

#include <math.h>
#include <string.h>

void ssm_config_default(ssm_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 256;
    c->d_model = 128;
    c->n_layer = 8;
    c->d_state = 16;
    c->d_conv = 4;
    c->expand = 2;
    c->dt_rank = 0;
    c->norm_eps = 1e-5f;
    c->use_bias = 0;
    c->use_conv_bias = 1;
    c->tie_embeddings = 1;
    strcpy(c->layer_pattern, "m");
}

int ssm_config_resolve(ssm_config *c) {
    if (c->dt_rank == 0) c->dt_rank = (c->d_model + 15) / 16;
    if (!c->layer_pattern[0]) strcpy(c->layer_pattern, "m");
#define RANGE(field, lo, hi)                                                                       \
    if (c->field < (lo) || c->field > (hi))                                                        \
        return ssm_error("config: " #field " = %d is out of range [%d, %d]", c->field, lo, hi);
    RANGE(vocab_size, 2, SSM_MAX_VOCAB);
    RANGE(d_model, 1, 1 << 16);
    RANGE(n_layer, 1, 4096);
    RANGE(d_state, 1, 256);
    RANGE(d_conv, 1, 64);
    RANGE(expand, 1, 64);
    RANGE(dt_rank, 1, 1 << 16);
#undef RANGE
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return ssm_error("config: norm_eps = %g must be in (0, 1)", c->norm_eps);
    for (const char *p = c->layer_pattern; *p; p++)
        if (!mixer_by_code(*p)) return ssm_error("config: unknown mixer '%c' in layer pattern \"%s\"", *p, c->layer_pattern);
    return 0;
}

mixer_ctx model_mixer_ctx(const ssm_model *m, int l) {
    return (mixer_ctx){&m->cfg, m->w, m->dw, m->w16, &m->layout.items[m->layers[l].mixer]};
}

ssm_model *model_alloc(const ssm_config *cfg) {
    ssm_config c = *cfg;
    if (ssm_config_resolve(&c)) return NULL;
    ssm_model *m = xcalloc(1, sizeof *m);
    m->cfg = c;
    param_layout *L = &m->layout;
    m->emb = L->n;
    params_add(L, "backbone.embeddings.weight", 1, 2, (int[]){c.vocab_size, c.d_model});
    m->layers = xcalloc(c.n_layer, sizeof *m->layers);
    size_t plen = strlen(c.layer_pattern);
    for (int l = 0; l < c.n_layer; l++) {
        char name[96];
        snprintf(name, sizeof name, "backbone.layers.%d.norm.weight", l);
        m->layers[l].kind = mixer_by_code(c.layer_pattern[l % plen]);
        m->layers[l].norm = L->n;
        params_add(L, name, 0, 1, (int[]){c.d_model});
        m->layers[l].mixer = L->n;
        m->layers[l].kind->declare(L, &m->cfg, l);
    }
    m->norm_f = L->n;
    params_add(L, "backbone.norm_f.weight", 0, 1, (int[]){c.d_model});
    m->head = m->emb;
    if (!c.tie_embeddings) {
        m->head = L->n;
        params_add(L, "lm_head.weight", 1, 2, (int[]){c.vocab_size, c.d_model});
    }
    m->w = xcalloc(L->total, sizeof(float));
    return m;
}

ssm_model *ssm_model_new(const ssm_config *cfg, uint64_t seed) {
    ssm_model *m = model_alloc(cfg);
    if (!m) return NULL;
    rng_t rng = {seed};
    const param_info *emb = &m->layout.items[m->emb];
    for (size_t i = 0; i < emb->numel; i++) m->w[emb->offset + i] = 0.02f * rng_normal(&rng);
    if (m->head != m->emb) {
        const param_info *h = &m->layout.items[m->head];
        for (size_t i = 0; i < h->numel; i++) m->w[h->offset + i] = 0.02f * rng_normal(&rng);
    }
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const param_info *nw = &m->layout.items[m->layers[l].norm];
        for (size_t i = 0; i < nw->numel; i++) m->w[nw->offset + i] = 1.0f;
        mixer_ctx ctx = model_mixer_ctx(m, l);
        m->layers[l].kind->init(&ctx, m->w, &rng);
    }
    const param_info *nf = &m->layout.items[m->norm_f];
    for (size_t i = 0; i < nf->numel; i++) m->w[nf->offset + i] = 1.0f;
    return m;
}

static void acts_free(model_acts *a) {
    free(a->tokens);
    free(a->targets);
    free(a->resid);
    free(a->normed);
    free(a->rstd);
    free(a->mix_act);
    free(a->mix_off);
    free(a->final_x);
    free(a->final_n);
    free(a->final_rstd);
    free(a->logits);
    free(a->dx);
    free(a->du);
    free(a->scratch);
    memset(a, 0, sizeof *a);
}

void ssm_model_free(ssm_model *m) {
    if (!m) return;
    acts_free(&m->acts);
    params_free(&m->layout);
    free(m->w);
    free(m->dw);
    free(m->w16);
    free(m->layers);
    free(m);
}

const ssm_config *ssm_model_config(const ssm_model *m) { return &m->cfg; }

void ssm_model_use_bf16(ssm_model *m) {
    if (!m->w16) m->w16 = xmalloc(sizeof(uint16_t) * m->layout.total);
    bf16_from_f32(m->w16, m->w, m->layout.total);
}

size_t ssm_model_n_params(const ssm_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->layout.n; i++) n += m->layout.items[i].numel;
    return n;
}

size_t ssm_model_state_bytes(const ssm_model *m, int layer) {
    size_t floats = 0;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (layer < 0 || layer == l) floats += m->layers[l].kind->state_floats(&m->cfg);
    return floats * sizeof(float);
}

/* ---- training ----------------------------------------------------------------------------------- */

static void acts_ensure(ssm_model *m, int B, int T) {
    model_acts *a = &m->acts;
    if (a->B == B && a->T == T) return;
    acts_free(a);
    const ssm_config *c = &m->cfg;
    const size_t rows = (size_t)B * T, D = c->d_model, L = c->n_layer;
    a->B = B, a->T = T;
    a->tokens = xmalloc(sizeof(int) * rows);
    a->targets = xmalloc(sizeof(int) * rows);
    a->resid = xmalloc(sizeof(float) * L * rows * D);
    a->normed = xmalloc(sizeof(float) * L * rows * D);
    a->rstd = xmalloc(sizeof(float) * L * rows);
    a->mix_off = xmalloc(sizeof(size_t) * L);
    size_t total = 0, scratch = 0;
    for (int l = 0; l < c->n_layer; l++) {
        a->mix_off[l] = total;
        total += (m->layers[l].kind->act_floats(c, B, T) + 15) & ~(size_t)15;
        size_t s = m->layers[l].kind->scratch_floats(c, B, T);
        if (s > scratch) scratch = s;
    }
    a->mix_act = xmalloc(sizeof(float) * total);
    a->scratch = xmalloc(sizeof(float) * scratch);
    a->final_x = xmalloc(sizeof(float) * rows * D);
    a->final_n = xmalloc(sizeof(float) * rows * D);
    a->final_rstd = xmalloc(sizeof(float) * rows);
    a->logits = xmalloc(sizeof(float) * rows * c->vocab_size);
    a->dx = xmalloc(sizeof(float) * rows * D);
    a->du = xmalloc(sizeof(float) * rows * D);
}

double model_train_forward(ssm_model *m, const int *tokens, const int *targets, int B, int T) {
    acts_ensure(m, B, T);
    model_acts *a = &m->acts;
    const ssm_config *c = &m->cfg;
    const size_t rows = (size_t)B * T, D = c->d_model;
    const float *w = m->w;
    memcpy(a->tokens, tokens, sizeof(int) * rows);
    memcpy(a->targets, targets, sizeof(int) * rows);

    float *x = a->final_x; /* the running residual stream; each layer's input is saved in resid */
    embedding_fwd(x, tokens, w + m->layout.items[m->emb].offset, (int)rows, (int)D);
    for (int l = 0; l < c->n_layer; l++) {
        float *resid = a->resid + l * rows * D, *normed = a->normed + l * rows * D;
        memcpy(resid, x, sizeof(float) * rows * D);
        rmsnorm_fwd(normed, a->rstd + l * rows, resid, w + m->layout.items[m->layers[l].norm].offset, (int)rows,
                    (int)D, c->norm_eps);
        mixer_ctx ctx = model_mixer_ctx(m, l);
        m->layers[l].kind->forward(&ctx, a->mix_act + a->mix_off[l], a->du, normed, B, T, NULL);
        for (size_t i = 0; i < rows * D; i++) x[i] += a->du[i];
    }
    rmsnorm_fwd(a->final_n, a->final_rstd, x, w + m->layout.items[m->norm_f].offset, (int)rows, (int)D,
                c->norm_eps);
    matmul_xwT(a->logits, c->vocab_size, a->final_n, (int)D, w + m->layout.items[m->head].offset, (int)rows,
               c->vocab_size, (int)D, 0.0f);
    double sum;
    xent_fwd_bwd(&sum, &a->n_targets, NULL, a->logits, targets, (int)rows, c->vocab_size, 0.0f);
    return a->n_targets ? sum / a->n_targets : 0.0;
}

void model_zero_grad(ssm_model *m) {
    if (!m->dw) m->dw = xmalloc(sizeof(float) * m->layout.total);
    memset(m->dw, 0, sizeof(float) * m->layout.total);
}

void model_train_backward(ssm_model *m, float loss_scale) {
    if (!m->dw) model_zero_grad(m);
    model_acts *a = &m->acts;
    const ssm_config *c = &m->cfg;
    const int B = a->B, T = a->T, rows = B * T, D = c->d_model, V = c->vocab_size;
    const param_info *P = m->layout.items;
    const float *w = m->w;
    float *dw = m->dw;

    double sum;
    int count;
    /* the loss is a mean over the forward's counted positions; logits become dlogits in place */
    xent_fwd_bwd(&sum, &count, a->logits, a->logits, a->targets, rows, V,
                 a->n_targets ? loss_scale / a->n_targets : 0.0f);
    float *dlogits = a->logits;
    matmul_dw_acc(dw + P[m->head].offset, dlogits, V, a->final_n, D, rows, V, D); /* the embedding when tied */
    matmul_dyw(a->du, D, dlogits, V, w + P[m->head].offset, rows, V, D, 0.0f);
    rmsnorm_bwd(a->dx, dw + P[m->norm_f].offset, a->du, a->final_x, w + P[m->norm_f].offset, a->final_rstd, rows, D, 0);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        const float *normed = a->normed + (size_t)l * rows * D;
        m->layers[l].kind->backward(&ctx, a->mix_act + a->mix_off[l], a->scratch, a->du, a->dx, normed, B, T);
        rmsnorm_bwd(a->dx, dw + P[m->layers[l].norm].offset, a->du, a->resid + (size_t)l * rows * D,
                    w + P[m->layers[l].norm].offset, a->rstd + (size_t)l * rows, rows, D, 1);
    }
    embedding_bwd(dw + P[m->emb].offset, a->dx, a->tokens, rows, D);
}

/* ---- inference ---------------------------------------------------------------------------------- */

ssm_state *ssm_state_new(const ssm_model *m, int n_seq) {
    ssm_state *s = xcalloc(1, sizeof *s);
    s->model = m;
    s->n_seq = n_seq;
    s->layer_off = xmalloc(sizeof(size_t) * m->cfg.n_layer);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        s->layer_off[l] = s->total;
        s->total += (size_t)n_seq * m->layers[l].kind->state_floats(&m->cfg);
    }
    s->data = xcalloc(s->total ? s->total : 1, sizeof(float));
    return s;
}

void ssm_state_reset(ssm_state *s) { memset(s->data, 0, sizeof(float) * s->total); }

void ssm_state_free(ssm_state *s) {
    if (!s) return;
    free(s->data);
    free(s->layer_off);
    free(s->work);
    free(s);
}

static float *state_work(ssm_state *s, size_t floats) {
    if (floats > s->work_cap) {
        free(s->work);
        s->work = xmalloc(sizeof(float) * floats);
        s->work_cap = floats;
    }
    return s->work;
}

void ssm_forward(const ssm_model *m, ssm_state *s, const int *tokens, int T, float *logits, int last_only) {
    const ssm_config *c = &m->cfg;
    const int B = s->n_seq, D = c->d_model, V = c->vocab_size;
    const size_t rows = (size_t)B * T;
    const param_info *P = m->layout.items;
    size_t act = 0;
    for (int l = 0; l < c->n_layer; l++) {
        size_t f = m->layers[l].kind->act_floats(c, B, T);
        if (f > act) act = f;
    }
    float *x = state_work(s, 3 * rows * D + act + rows);
    float *u = x + rows * D, *out = u + rows * D, *mix = out + rows * D, *rstd = mix + act;
    embedding_fwd(x, tokens, m->w + P[m->emb].offset, (int)rows, D);
    for (int l = 0; l < c->n_layer; l++) {
        rmsnorm_fwd(u, rstd, x, m->w + P[m->layers[l].norm].offset, (int)rows, D, c->norm_eps);
        mixer_ctx ctx = model_mixer_ctx(m, l);
        m->layers[l].kind->forward(&ctx, mix, out, u, B, T, s->data + s->layer_off[l]);
        for (size_t i = 0; i < rows * D; i++) x[i] += out[i];
    }
    if (last_only) { /* keep one row per sequence: the last position */
        for (int b = 0; b < B; b++)
            memmove(x + (size_t)b * D, x + ((size_t)b * T + T - 1) * D, sizeof(float) * D);
        rmsnorm_fwd(u, rstd, x, m->w + P[m->norm_f].offset, B, D, c->norm_eps);
        mixer_ctx head = {&m->cfg, m->w, NULL, m->w16, NULL};
        mixer_linear(&head, logits, V, u, D, m->w + P[m->head].offset, B, V, D);
    } else {
        rmsnorm_fwd(u, rstd, x, m->w + P[m->norm_f].offset, (int)rows, D, c->norm_eps);
        matmul_xwT(logits, V, u, D, m->w + P[m->head].offset, (int)rows, V, D, 0.0f);
    }
}

void ssm_step(const ssm_model *m, ssm_state *s, const int *tokens, float *logits) {
    ssm_forward(m, s, tokens, 1, logits, 1);
}
