/* The model driver: config, layer pattern, parameter layout and the residual stack
 *   x = embed(tokens); for each layer: x += mixer(rmsnorm(x)); logits = rmsnorm_f(x) @ embed^T
 * (HF MambaForCausalLM with a tied head), for training (forward + backward) and inference (state). */
#include "model.h"
#include "common.h"
#include "backend/host_bf16.h"

#include <math.h>
#include <string.h>


static void decode_weights_free(decode_weights *q);

void ssm_config_default(ssm_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 256;
    c->d_model = 128;
    c->n_layer = 8;
    c->mamba1.d_state = 16;
    c->mamba1.d_conv = 4;
    c->mamba1.expand = 2;
    c->mamba1.dt_rank = 0;
    c->norm_eps = 1e-5f;
    c->mamba1.use_bias = 0;
    c->mamba1.use_conv_bias = 1;
    c->tie_embeddings = 1;
    strcpy(c->layer_pattern, "m");
    c->attention.rope_theta = 10000.0f;
    c->attention.max_context = 4096;
    c->mamba2 = (ssm_mamba2_config){.d_state = 128, .d_conv = 4, .expand = 2, .head_dim = 64, .n_groups = 1,
                                    .chunk_size = 256, .dt_min = 0.0f, .dt_max = INFINITY, .use_bias = 0,
                                    .use_conv_bias = 1};
}

/* The attention and MLP sub-configs' derived fields and limits (read only when the pattern has such a layer). */
static int config_resolve_attention(ssm_config *c) {
    ssm_attention_config *a = &c->attention;
    if (a->n_heads < 0 || a->n_kv_heads < 0 || a->head_dim < 0 || a->sliding_window < 0 || a->max_context < 0)
        return ssm_error("config: attention sizes must not be negative");
    if (a->n_heads == 0) {
        if (a->head_dim == 0) a->head_dim = c->d_model < 64 ? c->d_model : 64;
        if (c->d_model % a->head_dim)
            return ssm_error("config: head_dim %d does not divide d_model %d; set --n-heads", a->head_dim, c->d_model);
        a->n_heads = c->d_model / a->head_dim;
    }
    if (a->head_dim == 0) {
        if (c->d_model % a->n_heads)
            return ssm_error("config: n_heads %d does not divide d_model %d; set --head-dim or another --n-heads",
                             a->n_heads, c->d_model);
        a->head_dim = c->d_model / a->n_heads;
    }
    if (a->n_kv_heads == 0) a->n_kv_heads = a->n_heads;
    if (a->n_heads > 4096 || a->head_dim > 4096 || a->n_heads * a->head_dim > 1 << 16)
        return ssm_error("config: %d heads of %d is too large", a->n_heads, a->head_dim);
    if (a->n_heads % a->n_kv_heads)
        return ssm_error("config: n_kv_heads %d does not divide n_heads %d", a->n_kv_heads, a->n_heads);
    /* rope_theta 0: no rotary positions (NemotronH's attention: the Mamba layers carry the order) */
    if (a->rope_theta != 0.0f && !(a->rope_theta > 1.0f && a->rope_theta < 1e12f))
        return ssm_error("config: rope_theta = %g must be 0 (no rotary positions) or in (1, 1e12)", a->rope_theta);
    if (a->rope_theta != 0.0f && a->head_dim % 2)
        return ssm_error("config: head_dim %d is odd; rotary positions need an even one", a->head_dim);
    if (a->max_context == 0) a->max_context = 4096;
    return 0;
}

/* The Mamba-2 sub-config's limits (read only when the pattern has an 'M' layer). */
static int config_resolve_mamba2(ssm_config *c) {
    ssm_mamba2_config *m = &c->mamba2;
    if (m->d_state < 1 || m->d_state > 1024) return ssm_error("config: mamba2 d_state = %d is out of range [1, 1024]", m->d_state);
    if (m->d_conv < 1 || m->d_conv > 64) return ssm_error("config: mamba2 d_conv = %d is out of range [1, 64]", m->d_conv);
    if (m->expand < 1 || m->expand > 64) return ssm_error("config: mamba2 expand = %d is out of range [1, 64]", m->expand);
    const int d_inner = m->expand * c->d_model;
    if (m->head_dim < 1 || d_inner % m->head_dim)
        return ssm_error("config: mamba2 head_dim %d does not divide d_inner %d (expand * d_model); set --m2-head-dim",
                         m->head_dim, d_inner);
    const int heads = d_inner / m->head_dim;
    if (m->n_groups < 1 || heads % m->n_groups)
        return ssm_error("config: mamba2 n_groups %d does not divide the %d heads; set --m2-groups", m->n_groups, heads);
    if (m->chunk_size < 1 || (m->chunk_size & (m->chunk_size - 1)) || m->chunk_size > 4096)
        return ssm_error("config: mamba2 chunk_size %d is not a power of two in [1, 4096]; set --chunk-size",
                         m->chunk_size);
    if (!(m->dt_min >= 0.0f && m->dt_max > m->dt_min))
        return ssm_error("config: mamba2 time_step_limit (%g, %g) is not 0 <= min < max", m->dt_min, m->dt_max);
    return 0;
}

static int config_resolve_mlp(ssm_config *c) {
    ssm_mlp_config *f = &c->mlp;
    if (f->intermediate_size < 0) return ssm_error("config: intermediate_size must not be negative");
    if (f->intermediate_size == 0) f->intermediate_size = ((8 * c->d_model / 3) + 63) / 64 * 64;
    if (f->intermediate_size > 1 << 20) return ssm_error("config: intermediate_size %d is too large", f->intermediate_size);
    if (f->hidden_act != SSM_MLP_SILU && f->hidden_act != SSM_MLP_RELU2)
        return ssm_error("config: mlp hidden_act %d is not silu (%d) or relu2 (%d)", f->hidden_act, SSM_MLP_SILU,
                         SSM_MLP_RELU2);
    return 0;
}

int ssm_config_resolve(ssm_config *c) {
    if (!c->layer_pattern[0]) strcpy(c->layer_pattern, "m");
#define RANGE(field, lo, hi)                                                                       \
    if (c->field < (lo) || c->field > (hi))                                                        \
        return ssm_error("config: " #field " = %d is out of range [%d, %d]", c->field, lo, hi);
    RANGE(vocab_size, 2, SSM_MAX_VOCAB);
    RANGE(d_model, 1, 1 << 16); /* before dt_rank is derived from it (no overflow) */
    if (c->mamba1.dt_rank == 0) c->mamba1.dt_rank = (c->d_model + 15) / 16;
    RANGE(n_layer, 1, 4096);
    RANGE(mamba1.d_state, 1, 256);
    RANGE(mamba1.d_conv, 1, 64);
    RANGE(mamba1.expand, 1, 64);
    RANGE(mamba1.dt_rank, 1, 1 << 16);
#undef RANGE
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return ssm_error("config: norm_eps = %g must be in (0, 1)", c->norm_eps);
    for (const char *p = c->layer_pattern; *p; p++)
        if (!mixer_by_code(*p))
            return ssm_error("config: unknown layer '%c' in the layer pattern \"%s\" (%s)", *p, c->layer_pattern,
                             mixer_codes());
    if (strchr(c->layer_pattern, 'a') && config_resolve_attention(c)) return -1;
    if (strchr(c->layer_pattern, 'f') && config_resolve_mlp(c)) return -1;
    if (strchr(c->layer_pattern, 'M') && config_resolve_mamba2(c)) return -1;
    return 0;
}

mixer_ctx model_mixer_ctx(const ssm_model *m, int l) {
    return (mixer_ctx){&m->cfg, m->be, m->wb, m->dw, model_decode_weights(m),
                       &m->layout.items[m->layers[l].mixer], NULL, MIXER_ACTS_PLAIN, NULL};
}

ssm_model *model_layout_new(const ssm_config *cfg) {
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
    m->be = &backend_cpu;
    return m;
}

int model_alloc_weights(ssm_model *m) {
    const double gb = m->layout.total * sizeof(float) / 1e9;
    m->w = calloc(m->layout.total, sizeof(float)); /* the size comes from a user's config: not a CHECK */
    if (!m->w)
        return ssm_error("cannot allocate %.2f GB for the model's %zu parameters: a smaller model (--d-model, "
                         "--n-layer) or a machine with more memory", gb, m->layout.total);
    m->wb = m->w;
    return 0;
}

ssm_model *ssm_model_new(const ssm_config *cfg, uint64_t seed) {
    ssm_model *m = model_layout_new(cfg);
    if (!m) return NULL;
    if (model_alloc_weights(m)) {
        ssm_model_free(m);
        return NULL;
    }
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
        mixer_ctx ctx = model_mixer_ctx(m, l); /* a new model is on the CPU: init writes host memory */
        m->layers[l].kind->init(&ctx, m->w, &rng);
    }
    const param_info *nf = &m->layout.items[m->norm_f];
    for (size_t i = 0; i < nf->numel; i++) m->w[nf->offset + i] = 1.0f;
    return m;
}

static void acts_free(const backend *be, model_acts *a) {
    void *bufs[] = {a->tokens, a->targets, a->resid, a->normed, a->normed32, a->rstd, a->mix_act, a->mix_temp, a->final_x,
                    a->final_n, a->final_rstd, a->logits, a->dx, a->du, a->scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->release(bufs[i]);
    free(a->mix_off);
    memset(a, 0, sizeof *a);
}

/* Frees what lives on the backend (gradients, activations, the device parameters) and puts the model
 * back on the CPU with its host parameters up to date. */
static void model_release_backend(ssm_model *m) {
    model_sync_host(m);
    acts_free(m->be, &m->acts);
    m->be->release(m->dw);
    m->dw = NULL;
    if (m->wb != m->w) m->be->release(m->wb);
    m->be->release(m->dec_dev.data);
    m->be->release(m->dec_dev.scale);
    memset(&m->dec_dev, 0, sizeof m->dec_dev);
    if (m->ctx) m->be->ctx_free(m->ctx); /* last: the releases above are counted in it */
    m->ctx = NULL, m->device = 0;
    m->be = &backend_cpu;
    m->wb = m->w;
}

void ssm_model_free(ssm_model *m) {
    if (!m) return;
    m->host_stale = 0; /* nothing to save */
    model_release_backend(m);
    params_free(&m->layout);
    free(m->w);
    decode_weights_free(&m->dec);
    free(m->layers);
    free(m);
}

void model_bind(const ssm_model *m) {
    if (m->be->ctx_bind) m->be->ctx_bind(m->ctx);
}

void model_sync_host(const ssm_model *m) {
    model_bind(m);
    if (!m->host_stale || m->wb == m->w) return;
    m->be->download(m->w, m->wb, sizeof(float) * m->layout.total);
    ((ssm_model *)m)->host_stale = 0; /* the mirror is a cache: refreshing it does not change the model */
}

/* int8 decode weights on a device: there only the fused decode steps read them (decode_fused.c) */
static int int8_device_check(const ssm_model *m, const backend *be) {
    if (decode_fused_kind(m, be)) return 0;
    return ssm_error("int8 decode weights on %s run in the fused decode step, for models whose layers are all Mamba-1, "
                     "all Mamba-2, or all attention and MLP: drop --int8, or use --device cpu",
                     be->name);
}

int ssm_model_set_device(ssm_model *m, const char *device) {
    int index = 0;
    const backend *be = backend_by_name(device, &index);
    if (!be) return -1;
    if (m->bf16) be = be->bf16;
    if (backend_same_memory(be, m->be) && index == m->device) {
        m->be = be;
        return 0;
    }
    if (m->int8 && !backend_is_host(be) && int8_device_check(m, be)) return -1;
    for (int l = 0; l < m->cfg.n_layer; l++) /* the backend's limits, asked by each mixer for its sizes */
        if (m->layers[l].kind->check && m->layers[l].kind->check(&m->cfg, be)) return -1;
    model_release_backend(m);
    m->w_version++; /* the weights now live elsewhere: states made before must not be reused, but be safe */
    if (backend_is_host(be) && (m->bf16 || m->int8)) /* the CPU's forms: decode weights from the current ones */
        model_make_decode_weights(m, m->int8 ? MAT_I8 : MAT_BF16);
    if (!backend_is_host(be)) {
        m->be = be, m->device = index;
        m->ctx = be->ctx_new ? be->ctx_new(index) : NULL;
        model_bind(m);
        m->wb = be->alloc(sizeof(float) * m->layout.total);
        be->upload(m->wb, m->w, sizeof(float) * m->layout.total);
    }
    return 0;
}

const char *ssm_model_device(const ssm_model *m) { return m->be->name; }

int ssm_device_available(const char *device) { return backend_by_name(device, NULL) != NULL; }

const char *ssm_model_layer_kind(const ssm_model *m, int layer) {
    return layer >= 0 && layer < m->cfg.n_layer ? m->layers[layer].kind->name : NULL;
}

const ssm_config *ssm_model_config(const ssm_model *m) { return &m->cfg; }

static void decode_weights_free(decode_weights *q) {
    free(q->data), free(q->scale), free(q->row_at);
    memset(q, 0, sizeof *q);
}

const decode_weights *model_decode_weights(const ssm_model *m) {
    return backend_is_host(m->be) && m->dec.dt != MAT_F32 ? &m->dec : NULL;
}

/* The decode copy of the host parameters in dt: bf16 of the whole buffer, or int8 of every 2-D parameter with a
 * scale per row. */
void model_make_decode_weights(ssm_model *m, mat_dtype dt) {
    decode_weights *q = &m->dec;
    decode_weights_free(q);
    m->dec_version = m->w_version;
    const param_layout *L = &m->layout;
    q->dt = dt, q->layout = L;
    if (dt == MAT_BF16) {
        q->data = xmalloc(sizeof(uint16_t) * L->total);
        host_bf16_from_f32(q->data, m->w, L->total);
        return;
    }
    q->data = xcalloc(L->total, 1);
    q->row_at = xmalloc(sizeof(size_t) * L->n);
    size_t rows = 0;
    for (int i = 0; i < L->n; i++) q->row_at[i] = rows, rows += L->items[i].ndim == 2 ? (size_t)L->items[i].shape[0] : 0;
    q->scale = xmalloc(sizeof(float) * (rows + 1));
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        if (p->ndim == 2)
            host_i8_from_f32_rows((int8_t *)q->data + p->offset, q->scale + q->row_at[i], m->w + p->offset,
                                  (size_t)p->shape[0], p->shape[1]);
    }
}

void ssm_model_use_bf16(ssm_model *m) {
    m->bf16 = 1;
    m->be = m->be->bf16;
    if (!backend_is_host(m->be)) return;
    model_sync_host(m);
    model_make_decode_weights(m, MAT_BF16);
}

int ssm_model_use_int8(ssm_model *m) {
    if (!backend_is_host(m->be) && int8_device_check(m, m->be)) return -1;
    m->int8 = 1;
    model_sync_host(m);
    model_make_decode_weights(m, MAT_I8);
    return 0;
}

size_t ssm_model_n_params(const ssm_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->layout.n; i++) n += m->layout.items[i].numel;
    return n;
}

size_t ssm_model_state_bytes_at(const ssm_model *m, int layer, long context) {
    size_t floats = 0;
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (layer < 0 || layer == l) floats += m->layers[l].kind->state_floats(&m->cfg, context > 0 ? context : 0);
    return floats * sizeof(float);
}

size_t ssm_model_state_bytes(const ssm_model *m, int layer) { return ssm_model_state_bytes_at(m, layer, 0); }

/* ---- training ----------------------------------------------------------------------------------- */

static void acts_ensure(ssm_model *m, int B, int T) {
    model_acts *a = &m->acts;
    const backend *be = m->be;
    if (a->B == B && a->T == T && a->lean == be->lean_acts) return;
    acts_free(be, a);
    a->lean = be->lean_acts;
    const ssm_config *c = &m->cfg;
    const size_t rows = (size_t)B * T, D = c->d_model, L = c->n_layer;
    a->B = B, a->T = T;
    a->tokens = be->alloc(sizeof(int) * rows);
    a->targets = be->alloc(sizeof(int) * rows);
    a->resid = be->alloc(sizeof(float) * L * rows * D);
    a->normed = be->alloc(sizeof(float) * rows * D);
    a->rstd = be->alloc(sizeof(float) * L * rows);
    a->mix_off = xmalloc(sizeof(size_t) * L); /* host */
    size_t total = 0, scratch = 0, temp = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const mixer_kind *k = m->layers[l].kind;
        a->mix_off[l] = total;
        const int form = mixer_form(k, be, 1);
        if (a->lean && form == MIXER_ACTS_PLAIN && !a->normed32) a->normed32 = be->alloc(sizeof(float) * rows * D);
        total += (k->act_floats(c, B, T, form) + 15) & ~(size_t)15;
        scratch = k->scratch_floats(c, B, T, form) > scratch ? k->scratch_floats(c, B, T, form) : scratch;
        temp = k->temp_floats(c, B, T, form) > temp ? k->temp_floats(c, B, T, form) : temp;
    }
    a->mix_act = be->alloc(sizeof(float) * total);
    a->mix_temp = be->alloc(sizeof(float) * temp);
    a->scratch = be->alloc(sizeof(float) * scratch);
    a->final_x = be->alloc(sizeof(float) * rows * D);
    a->final_n = be->alloc(sizeof(float) * rows * D);
    a->final_rstd = be->alloc(sizeof(float) * rows);
    a->logits = be->alloc(sizeof(float) * rows * c->vocab_size);
    a->dx = be->alloc(sizeof(float) * rows * D);
    a->du = be->alloc(sizeof(float) * rows * D);
}

/* The input of layer l as its mixer takes it: in bf16 (the first half of normed) for a lean layer, else in float32
 * (normed, or normed32 in a lean model). */
static mat layer_input(const model_acts *a, int lean_layer, int D) {
    if (lean_layer) return mat_bf16((uint16_t *)a->normed, D);
    return mat_f32(a->lean ? a->normed32 : a->normed, D);
}

/* A layer's mixer output, and its input gradient, in du's space: bf16 for a lean layer (as the reference's autocast
 * out_proj and in_proj round them), else float32. */
static mat layer_out(const model_acts *a, int lean_layer, int D) {
    return lean_layer ? mat_bf16((uint16_t *)a->du, D) : mat_f32(a->du, D);
}

static int layer_lean(const ssm_model *m, int l) {
    return mixer_form(m->layers[l].kind, m->be, 1) == MIXER_ACTS_LEAN_TRAIN;
}

double model_train_forward(ssm_model *m, const int *tokens, const int *targets, int B, int T) {
    model_bind(m);
    acts_ensure(m, B, T);
    model_acts *a = &m->acts;
    const ssm_config *c = &m->cfg;
    const size_t rows = (size_t)B * T, D = c->d_model;
    const float *w = m->wb;
    const backend *be = m->be;
    be->upload(a->tokens, tokens, sizeof(int) * rows);
    be->upload(a->targets, targets, sizeof(int) * rows);

    /* the residual stream entering layer l is resid[l] = resid[l-1] + mixer output of layer l-1 (du), each
     * add fused with the next norm; the last add gives final_x */
    be->embedding_fwd(a->resid, a->tokens, w + m->layout.items[m->emb].offset, (int)rows, (int)D);
    mat out = mat_none(); /* the previous layer's output */
    for (int l = 0; l < c->n_layer; l++) {
        float *resid = a->resid + l * rows * D;
        const int lean = layer_lean(m, l);
        const mat u = layer_input(a, lean, (int)D);
        be->add_rmsnorm_fwd(resid, u, a->rstd + l * rows, l ? resid - rows * D : resid, out,
                            w + m->layout.items[m->layers[l].norm].offset, (int)rows, (int)D, c->norm_eps);
        mixer_ctx ctx = model_mixer_ctx(m, l);
        ctx.form = mixer_form(m->layers[l].kind, be, 1);
        out = layer_out(a, lean, (int)D);
        m->layers[l].kind->forward(&ctx, a->mix_act + a->mix_off[l], a->mix_temp, out, u, B, T, NULL);
    }
    be->add_rmsnorm_fwd(a->final_x, mat_f32(a->final_n, (int)D), a->final_rstd, a->resid + (c->n_layer - 1) * rows * D,
                        out, w + m->layout.items[m->norm_f].offset, (int)rows, (int)D, c->norm_eps);
    be->matmul_xwT(mat_f32(a->logits, c->vocab_size), mat_f32(a->final_n, (int)D),
                   mat_f32(w + m->layout.items[m->head].offset, (int)D), NULL, (int)rows, c->vocab_size, (int)D, 0.0f);
    double sum;
    be->xent_fwd_bwd(&sum, &a->n_targets, NULL, a->logits, a->targets, (int)rows, c->vocab_size, 0.0f);
    return a->n_targets ? sum / a->n_targets : 0.0;
}

void model_zero_grad(ssm_model *m) {
    model_bind(m);
    if (!m->dw) m->dw = m->be->alloc(sizeof(float) * m->layout.total);
    else m->be->zero(m->dw, sizeof(float) * m->layout.total);
}

void model_train_backward(ssm_model *m, float loss_scale) {
    model_bind(m);
    if (!m->dw) model_zero_grad(m);
    model_acts *a = &m->acts;
    const ssm_config *c = &m->cfg;
    const int B = a->B, T = a->T, rows = B * T, D = c->d_model, V = c->vocab_size;
    const param_info *P = m->layout.items;
    const float *w = m->wb;
    const backend *be = m->be;
    float *dw = m->dw;

    /* the loss is a mean over the forward's counted positions; logits become dlogits in place (the forward has the
     * loss: no totals here) */
    be->xent_fwd_bwd(NULL, NULL, a->logits, a->logits, a->targets, rows, V,
                     a->n_targets ? loss_scale / a->n_targets : 0.0f);
    float *dlogits = a->logits;
    /* the head's gradients (the embedding's, when tied) */
    be->matmul_bwd(mat_f32(a->du, D), 0.0f, dw + P[m->head].offset, mat_f32(dlogits, V), mat_f32(a->final_n, D),
                   w + P[m->head].offset, rows, V, D);
    /* lean: each norm backward also leaves the residual gradient in bf16, the next lean mixer's dout for its GEMMs,
     * in the unused second half of normed's space */
    uint16_t *dx16 = a->lean ? (uint16_t *)a->normed + (size_t)rows * D : NULL;
    const int last = c->n_layer - 1;
    be->rmsnorm_bwd(a->dx, layer_lean(m, last) ? dx16 : NULL, dw + P[m->norm_f].offset, mat_f32(a->du, D), a->final_x,
                    w + P[m->norm_f].offset, a->final_rstd, rows, D, 0);
    for (int l = last; l >= 0; l--) {
        const int lean = layer_lean(m, l);
        mixer_ctx ctx = model_mixer_ctx(m, l);
        ctx.form = mixer_form(m->layers[l].kind, be, 1);
        ctx.dout16 = lean ? dx16 : NULL;
        const float *resid = a->resid + (size_t)l * rows * D, *norm_w = w + P[m->layers[l].norm].offset;
        const mat u = layer_input(a, lean, D), du = layer_out(a, lean, D);
        be->rmsnorm_fwd(u, a->rstd + (size_t)l * rows, resid, norm_w, rows, D, c->norm_eps); /* again */
        m->layers[l].kind->backward(&ctx, a->mix_act + a->mix_off[l], a->mix_temp, a->scratch, du, a->dx, u, B, T);
        be->rmsnorm_bwd(a->dx, l && layer_lean(m, l - 1) ? dx16 : NULL, dw + P[m->layers[l].norm].offset, du, resid,
                        norm_w, a->rstd + (size_t)l * rows, rows, D, 1);
    }
    be->embedding_bwd(dw + P[m->emb].offset, a->dx, a->tokens, rows, D);
}

/* ---- inference ---------------------------------------------------------------------------------- */

static void state_drop_graph(ssm_state *s) {
    if (s->graph) s->graph_be->graph_free(s->graph);
    s->graph = NULL;
}

ssm_state *ssm_state_new(const ssm_model *m, int n_seq) { return ssm_state_new_ctx(m, n_seq, 0); }

ssm_state *ssm_state_new_ctx(const ssm_model *m, int n_seq, long max_context) {
    model_bind(m);
    ssm_state *s = xcalloc(1, sizeof *s);
    s->model = m;
    s->be = m->be;
    s->n_seq = n_seq;
    s->max_context = max_context > 0 ? max_context : 0;
    s->layer_off = xmalloc(sizeof(size_t) * m->cfg.n_layer);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const mixer_kind *k = m->layers[l].kind;
        s->layer_off[l] = s->total;
        s->total += (size_t)n_seq * k->state_floats(&m->cfg, s->max_context);
        const long held = k->context ? k->context(&m->cfg, s->max_context) : 0;
        if (held > 0 && (!s->capacity || held < s->capacity)) s->capacity = held, s->capacity_kind = k->name;
    }
    s->data = s->be->alloc(sizeof(float) * (s->total ? s->total : 1));
    s->canon_off = xmalloc(sizeof(size_t) * m->cfg.n_layer);
    size_t canon = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        s->canon_off[l] = canon;
        canon += (m->layers[l].kind->canon_floats(&m->cfg) + 15) & ~(size_t)15;
    }
    s->canon = s->be->alloc(sizeof(float) * (canon ? canon : 1));
    return s;
}

/* Brings the state's canonical tensors up to date with the model's weights (once per weights version). */
void model_canonicalize(const ssm_model *m, ssm_state *s) {
    if (s->canon_valid && s->canon_version == m->w_version) return;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        mixer_ctx ctx = model_mixer_ctx(m, l);
        m->layers[l].kind->canonicalize(&ctx, s->canon + s->canon_off[l]);
    }
    s->canon_valid = 1, s->canon_version = m->w_version;
}

void ssm_state_reset(ssm_state *s) {
    model_bind(s->model);
    s->be->zero(s->data, sizeof(float) * s->total);
    s->pos = 0;
}

long ssm_state_position(const ssm_state *s) { return s->pos; }

int model_state_seek(const ssm_model *m, ssm_state *s, long pos) {
    if (pos < 0 || (s->capacity && pos >= s->capacity))
        return ssm_error("the state holds %ld positions: it cannot start at %ld", s->capacity, pos);
    model_bind(m);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const mixer_kind *k = m->layers[l].kind;
        if (!k->seek) continue;
        const mixer_ctx ctx = model_mixer_ctx(m, l);
        k->seek(&ctx, s->data + s->layer_off[l], s->n_seq, pos);
    }
    s->pos = pos;
    return 0;
}

int model_state_grows(const ssm_model *m) {
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->layers[l].kind->context) return 1;
    return 0;
}

/* 0 when T more positions fit in the state, else -1 with ssm_error(): checked before anything runs (a forward
 * that does not fit writes nothing, and the state stays as it was). */
static int state_check_room(const ssm_state *s, int T) {
    if (s->capacity && s->pos + T > s->capacity)
        return ssm_error("the %s cache holds %ld positions; this input needs %ld: use a larger --max-context",
                         s->capacity_kind, s->capacity, s->pos + T);
    return 0;
}

void ssm_state_free(ssm_state *s) {
    if (!s) return;
    model_bind(s->model);
    state_drop_graph(s);
    s->be->release(s->data);
    s->be->release(s->canon);
    free(s->canon_off);
    s->be->release(s->work);
    s->be->release(s->tokens);
    s->be->release(s->targets);
    free(s->layer_off);
    free(s);
}

static float *state_work(ssm_state *s, size_t floats) {
    if (floats > s->work_cap) {
        s->be->release(s->work);
        s->work = s->be->alloc(sizeof(float) * floats);
        s->work_cap = floats;
    }
    return s->work;
}

/* Token ids of a call where the backend reads them: the caller's array on the CPU, else a copy in *buf. */
static const int *state_ints(ssm_state *s, int **buf, size_t *cap, const int *ids, size_t n) {
    if (backend_is_host(s->be)) return ids;
    if (n > *cap) {
        s->be->release(*buf);
        *buf = s->be->alloc(sizeof(int) * n);
        *cap = n;
    }
    s->be->upload(*buf, ids, sizeof(int) * n);
    return *buf;
}

static const int *state_tokens(ssm_state *s, const int *tokens, size_t n) {
    return state_ints(s, &s->tokens, &s->tok_cap, tokens, n);
}

/* The forward's device work: tokens [B*T] already on the backend, logits into lg (backend memory). */
static void forward_compute(const ssm_model *m, ssm_state *s, const int *tok, int T, float *lg, int last_only,
                            float *x, size_t act) {
    const ssm_config *c = &m->cfg;
    const backend *be = m->be;
    const int B = s->n_seq, D = c->d_model, V = c->vocab_size;
    const size_t rows = (size_t)B * T;
    const param_info *P = m->layout.items;
    const float *w = m->wb;
    float *u = x + rows * D, *out = u + rows * D, *mix = out + rows * D, *rstd = mix + act;
    be->embedding_fwd(x, tok, w + P[m->emb].offset, (int)rows, D);
    for (int l = 0; l < c->n_layer; l++) { /* x += the previous layer's output, fused with this layer's norm */
        be->add_rmsnorm_fwd(x, mat_f32(u, D), rstd, x, l ? mat_f32(out, D) : mat_none(),
                            w + P[m->layers[l].norm].offset, (int)rows, D, c->norm_eps);
        mixer_ctx ctx = model_mixer_ctx(m, l);
        ctx.canon = s->canon + s->canon_off[l];
        const mixer_kind *k = m->layers[l].kind;
        ctx.state_ctx = k->context ? k->context(c, s->max_context) : 0;
        ctx.form = mixer_form(k, be, 0);
        k->forward(&ctx, mix, mix + ((k->act_floats(c, B, T, ctx.form) + 15) & ~(size_t)15), mat_f32(out, D),
                   mat_f32(u, D), B, T, s->data + s->layer_off[l]);
    }
    if (last_only) { /* keep one row per sequence: the last position (rows b*T+T-1 and b are disjoint) */
        for (int b = 0; b < B && T > 1; b++) {
            be->copy(x + (size_t)b * D, x + ((size_t)b * T + T - 1) * D, sizeof(float) * D);
            be->copy(out + (size_t)b * D, out + ((size_t)b * T + T - 1) * D, sizeof(float) * D);
        }
        be->add_rmsnorm_fwd(x, mat_f32(u, D), rstd, x, mat_f32(out, D), w + P[m->norm_f].offset, B, D, c->norm_eps);
        mixer_ctx head = {&m->cfg, be, w, NULL, model_decode_weights(m), NULL, NULL, MIXER_ACTS_PLAIN, NULL};
        mixer_linear(&head, mat_f32(lg, V), mat_f32(u, D), w + P[m->head].offset, NULL, B, V, D);
    } else {
        be->add_rmsnorm_fwd(x, mat_f32(u, D), rstd, x, mat_f32(out, D), w + P[m->norm_f].offset, (int)rows, D,
                            c->norm_eps);
        be->matmul_xwT(mat_f32(lg, V), mat_f32(u, D), mat_f32(w + P[m->head].offset, D), NULL, (int)rows, V, D, 0.0f);
    }
}

/* Floats of one layer's saved activations and temps for a B x T forward (reused by every layer). */
static size_t forward_act_floats(const ssm_model *m, int B, int T) {
    const ssm_config *c = &m->cfg;
    size_t act = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const mixer_kind *k = m->layers[l].kind;
        const int form = mixer_form(k, m->be, 0);
        size_t f = ((k->act_floats(c, B, T, form) + 15) & ~(size_t)15) + k->temp_floats(c, B, T, form);
        if (f > act) act = f;
    }
    return act;
}

/* The CPU's decode copy follows the weights: remade before an inference call when optimizer steps changed them since
 * it was made (a cache of m's weights, as model_sync_host's mirror is). */
static void decode_copy_current(const ssm_model *m) {
    if (backend_is_host(m->be) && m->dec.dt != MAT_F32 && m->dec_version != m->w_version)
        model_make_decode_weights((ssm_model *)m, m->dec.dt);
}

double model_forward_loss(const ssm_model *m, ssm_state *s, const int *tokens, const int *targets, int T,
                          int *count, int *hits) {
    model_bind(m);
    decode_copy_current(m);
    const backend *be = m->be;
    CHECK(backend_same_memory(s->be, be), "model_forward_loss: the state was made on %s, the model is now on %s",
          s->be->name, be->name);
    if (state_check_room(s, T)) return -1;
    const int B = s->n_seq, D = m->cfg.d_model, V = m->cfg.vocab_size;
    const size_t rows = (size_t)B * T, act = forward_act_floats(m, B, T);
    float *x = state_work(s, 3 * rows * D + act + rows + rows * V);
    float *lg = x + 3 * rows * D + act + rows;
    const int *tok = state_tokens(s, tokens, rows), *tgt = state_ints(s, &s->targets, &s->tgt_cap, targets, rows);
    model_canonicalize(m, s);
    forward_compute(m, s, tok, T, lg, 0, x, act);
    s->pos += T;
    double sum;
    be->xent_fwd_bwd(&sum, count, NULL, lg, tgt, (int)rows, V, 0.0f);
    if (hits) be->argmax_hits(hits, lg, tgt, (int)rows, V);
    return sum;
}

int ssm_forward(const ssm_model *m, ssm_state *s, const int *tokens, int T, float *logits, int last_only) {
    model_bind(m);
    decode_copy_current(m);
    const ssm_config *c = &m->cfg;
    const backend *be = m->be;
    CHECK(backend_same_memory(s->be, be), "ssm_forward: the state was made on %s, the model is now on %s",
          s->be->name, be->name);
    if (state_check_room(s, T)) return -1;
    const int B = s->n_seq, D = c->d_model, V = c->vocab_size;
    const size_t rows = (size_t)B * T, out_rows = last_only ? (size_t)B : rows;
    const size_t logit_floats = backend_is_host(be) ? 0 : out_rows * V; /* device logits, then downloaded */
    if (T == 1 && decode_fused_ready(m, B)) { /* one kernel for the whole step, where the backend takes it */
        const size_t fw = decode_fused_work_floats(m, B);
        float *work = state_work(s, fw + logit_floats), *lg = logit_floats ? work + fw : logits;
        const int *tok = state_tokens(s, tokens, rows);
        model_canonicalize(m, s);
        if (decode_fused_step(m, s, tok, lg, work) == 0) {
            s->pos += T;
            if (lg != logits) be->download(logits, lg, sizeof(float) * out_rows * V);
            return 0;
        }
    }
    if (T == 1 && m->int8 && !backend_is_host(be) && decode_fused_kind(m, be) == DECODE_FUSED_T)
        return ssm_error("int8 decode on %s runs in the fused decode step, which takes 1 to 8 sequences of attention "
                         "and MLP layers (this state has %d; SSM_DECODE_FUSED=0 turns it off): decode fewer at a time, "
                         "or drop --int8",
                         be->name, B);
    if (T == 1 && m->int8 && !backend_is_host(be)) /* the op-by-op step would read float32 weights: say so */
        return ssm_error("int8 decode on %s runs in the fused decode step, which takes 1 to 64 sequences (beyond 8, "
                         "d_model a multiple of 16; this state has %d; SSM_DECODE_FUSED=0 turns it off): decode fewer "
                         "at a time, or drop --int8",
                         be->name, B);
    const size_t act = forward_act_floats(m, B, T);
    float *x = state_work(s, 3 * rows * D + act + rows + logit_floats);
    float *lg = logit_floats ? x + 3 * rows * D + act + rows : logits;
    const int *tok = state_tokens(s, tokens, rows);
    model_canonicalize(m, s);
    /* A decode step is ~10 small kernels per layer: replaying them as one graph removes the launch gaps.
     * The graph holds the buffers' addresses, so it is rebuilt when any of them (or the flags) change. */
    if (T == 1 && be->graph_begin && !s->graph_warm) {
        forward_compute(m, s, tok, T, lg, last_only, x, act); /* the first step runs as it is, then graphs */
        s->graph_warm = 1;
    } else if (T == 1 && be->graph_begin) {
        const int moved = s->graph_work != x || s->graph_tokens != tok || s->graph_be != be ||
                          s->graph_last_only != last_only;
        if (moved || (!s->graph && !s->graph_failed)) {
            state_drop_graph(s);
            be->graph_begin();
            forward_compute(m, s, tok, T, lg, last_only, x, act);
            s->graph = be->graph_end();
            s->graph_work = x, s->graph_tokens = tok, s->graph_be = be, s->graph_last_only = last_only;
            /* a capture that fails would fail again: not retried (each try records a whole step) until the
             * buffers change; said once a process, since every step then pays its launches */
            s->graph_failed = !s->graph;
            static int said;
            if (!s->graph && !said++)
                fprintf(stderr, "ssm: a decode step could not be captured as a %s graph: its kernels are launched "
                                "one by one\n", be->name);
        }
        if (s->graph) be->graph_launch(s->graph);
        else forward_compute(m, s, tok, T, lg, last_only, x, act); /* the capture failed: run directly */
    } else {
        forward_compute(m, s, tok, T, lg, last_only, x, act);
    }
    s->pos += T;
    if (lg != logits) be->download(logits, lg, sizeof(float) * out_rows * V);
    return 0;
}

int ssm_step(const ssm_model *m, ssm_state *s, const int *tokens, float *logits) {
    return ssm_forward(m, s, tokens, 1, logits, 1);
}
