/* The fused decode step (backend.h's decode_mamba1): when every layer of a model is Mamba-1 and its backend has the
 * fused kernel, a decode step (T = 1) runs as that one kernel instead of ~10 ops a layer. The op-by-op step
 * (model.c's forward_compute) stays the definition; the GPU tests and the emulator's compare the two.
 * SSM_DECODE_FUSED=0 turns it off (for those comparisons, and to measure what it buys). */
#include "model.h"

#include <stdlib.h>
#include <string.h>

int decode_fused_ready(const ssm_model *m) {
    if (!m->be->decode_mamba1) return 0;
    const char *e = getenv("SSM_DECODE_FUSED");
    if (e && strcmp(e, "0") == 0) return 0;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->layers[l].kind != &mixer_mamba1) return 0;
    return 1;
}

size_t decode_fused_work_floats(const ssm_model *m, int B) {
    const ssm_config *c = &m->cfg;
    return (m1_decode_work_floats(B, c->d_model, c->mamba1.expand * c->d_model, c->mamba1.d_state, c->mamba1.dt_rank) +
            15) & ~(size_t)15;
}

/* The bf16 copy of the device parameters that a bf16 model's fused step reads (the CPU has its own, m->dec; the
 * op-by-op CUDA step reads float32 weights in decode-sized products), made on first use and again after the weights
 * change (w_version). */
static const uint16_t *device_weights16(const ssm_model *m) {
    ssm_model *mm = (ssm_model *)m; /* a cache of m's weights, as model_sync_host's mirror is */
    if (!mm->wb16) mm->wb16 = m->be->alloc(sizeof(uint16_t) * m->layout.total);
    if (!mm->wb16_valid || mm->wb16_version != m->w_version) {
        for (int i = 0; i < m->layout.n; i++) {
            const param_info *p = &m->layout.items[i];
            m->be->convert_rows(mat_bf16(mm->wb16 + p->offset, (int)p->numel),
                                mat_f32(m->wb + p->offset, (int)p->numel), 1, (int)p->numel);
        }
        mm->wb16_valid = 1, mm->wb16_version = m->w_version;
    }
    return mm->wb16;
}

void decode_fused_args(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work, m1_decode_args *a,
                       m1_decode_layer *layers) {
    const ssm_config *c = &m->cfg;
    const param_info *P = m->layout.items;
    const uint16_t *w16 = NULL;
    if (m->bf16) w16 = backend_is_host(m->be) ? (const uint16_t *)m->dec.data : device_weights16(m);
    if (backend_is_host(m->be) && m->dec.dt != MAT_BF16) w16 = NULL; /* (int8 decode weights: not the kernel's) */
    memset(a, 0, sizeof *a);
    a->B = s->n_seq, a->D = c->d_model, a->E = c->mamba1.expand * c->d_model, a->N = c->mamba1.d_state;
    a->R = c->mamba1.dt_rank, a->K = c->mamba1.d_conv, a->V = c->vocab_size, a->n_layer = c->n_layer;
    a->eps = c->norm_eps;
    a->wdt = w16 ? MAT_BF16 : MAT_F32;
    a->tokens = tok;
    a->emb = m->wb + P[m->emb].offset;
    a->norm_f = m->wb + P[m->norm_f].offset;
    a->head = w16 ? (const void *)(w16 + P[m->head].offset) : (const void *)(m->wb + P[m->head].offset);
    a->layers = layers;
    a->logits = lg;
    a->work = work;
    for (int l = 0; l < c->n_layer; l++) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        ctx.canon = s->canon + s->canon_off[l];
        mamba1_decode_layer(&ctx, w16, s->data + s->layer_off[l], s->n_seq, &layers[l]);
        layers[l].norm_w = m->wb + P[m->layers[l].norm].offset;
    }
}

int decode_fused_step(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work) {
    m1_decode_args a;
    m1_decode_layer *layers = xmalloc(sizeof *layers * (size_t)m->cfg.n_layer);
    decode_fused_args(m, s, tok, lg, work, &a, layers);
    const int rc = m->be->decode_mamba1(&a);
    free(layers);
    return rc;
}
