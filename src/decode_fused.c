/* The fused decode step (backend.h's decode_mamba1, decode_mamba2, decode_transformer): when every layer of a model
 * is Mamba-1, or every layer Mamba-2, or every layer attention or MLP, and its backend has the fused kernel, a decode
 * step (T = 1) runs as that one kernel instead of ~10 ops a layer. The op-by-op step
 * (model.c's forward_compute) stays the definition; the GPU tests and the emulator's compare the two.
 * SSM_DECODE_FUSED=0 turns it off (for those comparisons, and to measure what it buys). */
#include "model.h"

#include <stdlib.h>
#include <string.h>

/* DECODE_FUSED_M1 or _M2 when every layer is of that kind, _T when every layer is attention or MLP, else 0 */
static int layers_kind(const ssm_model *m) {
    const mixer_kind *k = m->layers[0].kind;
    int same = 1, transformer = 1;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        same &= m->layers[l].kind == k;
        transformer &= m->layers[l].kind == &mixer_attention || m->layers[l].kind == &mixer_mlp;
    }
    if (transformer) return DECODE_FUSED_T;
    if (!same) return 0;
    return k == &mixer_mamba1 ? DECODE_FUSED_M1 : k == &mixer_mamba2 ? DECODE_FUSED_M2 : 0;
}

int decode_fused_kind(const ssm_model *m, const backend *be) {
    const int k = layers_kind(m);
    return (k == DECODE_FUSED_M1 && be->decode_mamba1) || (k == DECODE_FUSED_M2 && be->decode_mamba2) ||
                   (k == DECODE_FUSED_T && be->decode_transformer)
               ? k
               : 0;
}

/* Measured on an H100 (2026-12-05, d768x24, docs/performance.md): the fused step beats the op-by-op one up to 4
 * sequences (bf16: 0.47 against 0.63 ms at 1, 0.71 against 0.80 at 4) and loses from 8 (1.09 against 0.82; on tensor
 * cores at 64, 3.98 against 1.19): the FFMA form's time grows with the batch, and the tensor-core form is not tuned
 * yet. So by default it runs up to DECODE_FUSED_MAX_B sequences, and for int8 weights (which only it reads on a GPU)
 * at any batch it takes. SSM_DECODE_FUSED=1 runs it at every batch it takes, 0 never. */
#define DECODE_FUSED_MAX_B 4

/* The Transformer kernel (decode_transformer.cu), measured against the op-by-op step on an H100 (2026-12-07, t768x12,
 * docs/performance.md): batch 1 bf16 0.53 against 0.70 ms with an empty cache, 0.67 against 0.90 at 1K, the same at 8K
 * (1.22: the attention over the cache sets both); batch 4 bf16 0.64 against 0.95. So it is the default for models
 * whose layers are all attention and MLP, up to DECODE_FUSED_MAX_B sequences as the others. */

int decode_fused_ready(const ssm_model *m, int B) {
    const char *e = getenv("SSM_DECODE_FUSED");
    if (e && strcmp(e, "0") == 0) return 0;
    if (!(e && strcmp(e, "1") == 0) && !m->int8 && B > DECODE_FUSED_MAX_B) return 0;
    return decode_fused_kind(m, m->be);
}

size_t decode_fused_work_floats(const ssm_model *m, int B) {
    const ssm_config *c = &m->cfg;
    const int kind = layers_kind(m);
    if (kind == DECODE_FUSED_T)
        return (t_decode_work_floats(B, c->d_model, c->attention.n_heads, c->attention.head_dim,
                                     c->mlp.intermediate_size) +
                15) &
               ~(size_t)15;
    const size_t n =
        kind == DECODE_FUSED_M2
            ? m2_decode_work_floats(B, c->d_model, c->mamba2.expand * c->d_model, c->mamba2.d_state,
                                    c->mamba2.expand * c->d_model / c->mamba2.head_dim, c->mamba2.n_groups)
            : m1_decode_work_floats(B, c->d_model, c->mamba1.expand * c->d_model, c->mamba1.d_state, c->mamba1.dt_rank);
    return (n + 15) & ~(size_t)15;
}

/* The layout item holding element offset off (offsets grow in declaration order). */
static int item_at(const param_layout *L, size_t off) {
    int lo = 0, hi = L->n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (L->items[mid].offset <= off)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Rows of all 2-D parameters: the length of an int8 copy's scales. */
static size_t scale_rows(const param_layout *L) {
    size_t rows = 0;
    for (int i = 0; i < L->n; i++)
        rows += L->items[i].ndim == 2 ? (size_t)L->items[i].shape[0] : 0;
    return rows;
}

/* The copy of the weights a fused step reads its matrices from: on the CPU the host's (m->dec); on a device
 * m->dec_dev, made on first use and again after the weights change (w_version): bf16 converted there from wb, int8
 * uploaded from the host's int8 copy. dt MAT_F32: the float32 weights themselves. */
static const decode_weights *decode_copy(const ssm_model *m) {
    const mat_dtype dt = m->int8 ? MAT_I8 : m->bf16 ? MAT_BF16 : MAT_F32;
    if (dt == MAT_F32) return NULL;
    if (backend_is_host(m->be)) return m->dec.dt == dt ? &m->dec : NULL;
    ssm_model *mm = (ssm_model *)m; /* a cache of m's weights, as model_sync_host's mirror is */
    decode_weights *q = &mm->dec_dev;
    const param_layout *L = &m->layout;
    if (q->dt == dt && mm->dec_dev_version == m->w_version) return q;
    if (q->dt != dt) {
        m->be->release(q->data), m->be->release(q->scale);
        memset(q, 0, sizeof *q);
        q->data = m->be->alloc(mat_elem_bytes(dt) * L->total);
        if (dt == MAT_I8) q->scale = m->be->alloc(sizeof(float) * (scale_rows(L) + 1));
    }
    if (dt == MAT_BF16) {
        for (int i = 0; i < L->n; i++) {
            const param_info *p = &L->items[i];
            m->be->convert_rows(mat_bf16((uint16_t *)q->data + p->offset, (int)p->numel),
                                mat_f32(m->wb + p->offset, (int)p->numel), 1, (int)p->numel);
        }
    } else { /* int8: quantized on the host (the CPU's int8 copy, the same bits), then uploaded */
        if (m->dec.dt != MAT_I8 || m->dec_version != m->w_version) {
            model_sync_host(m);
            model_make_decode_weights(mm, MAT_I8);
        }
        m->be->upload(q->data, m->dec.data, L->total);
        m->be->upload(q->scale, m->dec.scale, sizeof(float) * (scale_rows(L) + 1));
        q->row_at = m->dec.row_at;
    }
    q->dt = dt, q->layout = L;
    mm->dec_dev_version = m->w_version;
    return q;
}

/* A float32 matrix of m->wb as the decode copy holds it: the same element offset, and its row scales (int8) */
static const void *matrix_in(const ssm_model *m, const decode_weights *q, const void *w, const float **scale) {
    const size_t off = (size_t)((const float *)w - m->wb);
    *scale = NULL;
    if (!q) return w;
    if (q->dt == MAT_BF16) return (const uint16_t *)q->data + off;
    *scale = q->scale + q->row_at[item_at(&m->layout, off)];
    return (const int8_t *)q->data + off;
}

/* Mamba-1's arguments */
static void args_m1(const ssm_model *m, ssm_state *s, const decode_weights *q, m1_decode_args *a,
                    m1_decode_layer *layers) {
    const ssm_config *c = &m->cfg;
    const param_info *P = m->layout.items;
    a->E = c->mamba1.expand * c->d_model, a->N = c->mamba1.d_state;
    a->R = c->mamba1.dt_rank, a->K = c->mamba1.d_conv;
    for (int l = 0; l < c->n_layer; l++) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        ctx.canon = s->canon + s->canon_off[l];
        m1_decode_layer *L = &layers[l];
        mamba1_decode_layer(&ctx, s->data + s->layer_off[l], s->n_seq, L);
        L->in_proj = matrix_in(m, q, L->in_proj, &L->in_s), L->x_proj = matrix_in(m, q, L->x_proj, &L->x_s);
        L->dt_w = matrix_in(m, q, L->dt_w, &L->dt_s), L->out_proj = matrix_in(m, q, L->out_proj, &L->out_s);
        L->norm_w = m->wb + P[m->layers[l].norm].offset;
    }
}

/* Mamba-2's */
static void args_m2(const ssm_model *m, ssm_state *s, const decode_weights *q, m2_decode_args *a,
                    m2_decode_layer *layers) {
    const ssm_config *c = &m->cfg;
    const param_info *P = m->layout.items;
    a->Di = c->mamba2.expand * c->d_model, a->N = c->mamba2.d_state, a->P = c->mamba2.head_dim;
    a->H = a->Di / a->P, a->G = c->mamba2.n_groups, a->K = c->mamba2.d_conv;
    a->gnorm_eps = MAMBA2_GATED_NORM_EPS, a->dt_min = c->mamba2.dt_min, a->dt_max = c->mamba2.dt_max;
    for (int l = 0; l < c->n_layer; l++) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        m2_decode_layer *L = &layers[l];
        mamba2_decode_layer(&ctx, s->data + s->layer_off[l], s->n_seq, L);
        L->in_proj = matrix_in(m, q, L->in_proj, &L->in_s), L->out_proj = matrix_in(m, q, L->out_proj, &L->out_s);
        L->norm_w = m->wb + P[m->layers[l].norm].offset;
    }
}

/* The Transformer's: each layer's matrices, norm, positions and caches */
static void args_t(const ssm_model *m, ssm_state *s, const decode_weights *q, t_decode_args *a,
                   t_decode_layer *layers) {
    const ssm_config *c = &m->cfg;
    const param_info *P = m->layout.items;
    a->H = c->attention.n_heads, a->KV = c->attention.n_kv_heads, a->hd = c->attention.head_dim;
    a->window = c->attention.sliding_window, a->theta = c->attention.rope_theta;
    a->I = c->mlp.intermediate_size;
    for (int l = 0; l < c->n_layer; l++) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        const mixer_kind *k = m->layers[l].kind;
        ctx.state_ctx = k->context ? k->context(c, s->max_context) : 0;
        t_decode_layer *L = &layers[l];
        if (k == &mixer_attention) {
            attention_decode_layer(&ctx, s->data + s->layer_off[l], s->n_seq, L);
            a->cap = (int)ctx.state_ctx;
            L->q = matrix_in(m, q, L->q, &L->q_s), L->k = matrix_in(m, q, L->k, &L->k_s);
            L->v = matrix_in(m, q, L->v, &L->v_s), L->o = matrix_in(m, q, L->o, &L->o_s);
        } else {
            mlp_decode_layer(&ctx, L);
            if (L->gate) L->gate = matrix_in(m, q, L->gate, &L->gate_s);
            L->up = matrix_in(m, q, L->up, &L->up_s), L->down = matrix_in(m, q, L->down, &L->down_s);
        }
        L->norm_w = m->wb + P[m->layers[l].norm].offset;
    }
}

/* What the kinds share: the batch, the ends of the step, the matrices' form */
static void args_step(const ssm_model *m, const ssm_state *s, const decode_weights *q, const int *tok, float *lg,
                      float *work, decode_step *st) {
    const ssm_config *c = &m->cfg;
    const param_info *P = m->layout.items;
    st->B = s->n_seq, st->D = c->d_model, st->V = c->vocab_size, st->n_layer = c->n_layer, st->eps = c->norm_eps;
    st->wdt = q ? q->dt : MAT_F32;
    st->tokens = tok, st->emb = m->wb + P[m->emb].offset, st->norm_f = m->wb + P[m->norm_f].offset;
    st->head = matrix_in(m, q, m->wb + P[m->head].offset, &st->head_s);
    st->logits = lg, st->work = work;
}

void decode_fused_args(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work,
                       decode_fused_call *call) {
    const ssm_config *c = &m->cfg;
    const decode_weights *q = decode_copy(m);
    memset(call, 0, sizeof *call);
    call->kind = layers_kind(m);
    if (call->kind == DECODE_FUSED_T) {
        call->lt = xcalloc((size_t)c->n_layer, sizeof *call->lt);
        args_step(m, s, q, tok, lg, work, &call->t.st);
        args_t(m, s, q, &call->t, call->lt);
        call->t.layers = call->lt;
    } else if (call->kind == DECODE_FUSED_M2) {
        call->l2 = xcalloc((size_t)c->n_layer, sizeof *call->l2);
        args_step(m, s, q, tok, lg, work, &call->m2.st);
        args_m2(m, s, q, &call->m2, call->l2);
        call->m2.layers = call->l2;
    } else {
        call->l1 = xcalloc((size_t)c->n_layer, sizeof *call->l1);
        args_step(m, s, q, tok, lg, work, &call->m1.st);
        args_m1(m, s, q, &call->m1, call->l1);
        call->m1.layers = call->l1;
    }
}

void decode_fused_call_free(decode_fused_call *call) {
    free(call->l1), free(call->l2), free(call->lt);
    call->l1 = NULL, call->l2 = NULL, call->lt = NULL;
}

int decode_fused_step(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work) {
    decode_fused_call call;
    decode_fused_args(m, s, tok, lg, work, &call);
    const int rc = call.kind == DECODE_FUSED_T    ? m->be->decode_transformer(&call.t)
                   : call.kind == DECODE_FUSED_M2 ? m->be->decode_mamba2(&call.m2)
                                                  : m->be->decode_mamba1(&call.m1);
    decode_fused_call_free(&call);
    return rc;
}
