/* The optimizer (see optim.h): AdamW with torch's arithmetic over the flat parameter buffer, the warmup +
 * cosine schedule and global-norm clipping. */
#include "optim.h"
#include "common.h"

#include <math.h>
#include <string.h>

void ssm_optim_config_default(ssm_optim_config *o) {
    *o = (ssm_optim_config){.lr = 2e-3f, .min_lr = 2e-4f, .warmup = 100, .steps = 2000, .weight_decay = 0.1f,
                        .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .clip = 1.0f};
}

float lr_at(const ssm_optim_config *o, long s) {
    if (s < o->warmup) return o->lr * (float)(s + 1) / (float)o->warmup;
    long span = o->steps - o->warmup > 1 ? o->steps - o->warmup : 1;
    double progress = (double)(s - o->warmup) / (double)span;
    if (progress > 1) progress = 1;
    return (float)(o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(M_PI * progress)));
}

double grad_clip(ssm_model *m, float clip) {
    model_bind(m);
    const size_t n = m->layout.total;
    double norm = m->be->grad_norm(m->dw, n);
    m->grad_coef = 0.0f;
    if (clip > 0) {
        float coef = (float)(clip / (norm + 1e-6));
        if (coef < 1.0f) m->grad_coef = coef; /* the next adamw_update scales as it reads (one pass less) */
    }
    return norm;
}

void adamw_init(adamw_state *s, const ssm_model *m) {
    model_bind(m);
    const backend *be = m->be;
    const size_t n = m->layout.total;
    s->be = be, s->device = m->device, s->model = m;
    s->m = be->alloc(n * sizeof(float));
    s->v = be->alloc(n * sizeof(float));
    unsigned char *mask = xcalloc(n, 1); /* the padding between tensors too: adamw_step reads it */
    for (int t = 0; t < m->layout.n; t++) {
        const param_info *p = &m->layout.items[t];
        memset(mask + p->offset, p->decay ? 1 : 0, p->numel);
    }
    s->decay_mask = be->alloc(n);
    be->upload(s->decay_mask, mask, n);
    free(mask);
    s->step = 0;
    s->lo = 0, s->hi = n;
}

void adamw_free(adamw_state *s) {
    if (s->model) model_bind(s->model);
    if (s->be) {
        s->be->release(s->m);
        s->be->release(s->v);
        s->be->release(s->decay_mask);
    }
    memset(s, 0, sizeof *s);
}

void adamw_download(const adamw_state *s, size_t n, float **m, float **v) {
    CHECK(s->lo == 0 && s->hi == n, "adamw_download of a shard [%zu, %zu) of %zu moments", s->lo, s->hi, n);
    *m = xmalloc(n * sizeof(float));
    *v = xmalloc(n * sizeof(float));
    s->be->download(*m, s->m, n * sizeof(float));
    s->be->download(*v, s->v, n * sizeof(float));
}

void adamw_follow_model(adamw_state *s, const ssm_model *m) {
    model_bind(m);
    if (s->be == m->be && s->device == m->device) return;
    const size_t n = m->layout.total;
    CHECK(s->lo == 0 && s->hi == n, "a shard of the moments cannot move between devices");
    float *hm, *hv;
    adamw_download(s, n, &hm, &hv);
    const long step = s->step;
    adamw_free(s);
    adamw_init(s, m);
    s->be->upload(s->m, hm, n * sizeof(float));
    s->be->upload(s->v, hv, n * sizeof(float));
    s->step = step;
    free(hm), free(hv);
}

void adamw_update(ssm_model *m, adamw_state *s, const ssm_optim_config *o, float lr) {
    s->step++;
    model_bind(m);
    const float gscale = m->grad_coef > 0.0f ? m->grad_coef : 1.0f; /* grad_clip's pending scale */
    m->grad_coef = 0.0f;
    m->be->adamw_step(m->wb + s->lo, m->dw + s->lo, gscale, s->m, s->v, s->decay_mask + s->lo, s->hi - s->lo, lr,
                      o->weight_decay, o->beta1, o->beta2, o->eps, s->step);
    if (m->wb != m->w) m->host_stale = 1;
    m->w_version++;
}

