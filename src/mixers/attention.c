/* The attention layer ('a'): HF LlamaAttention, causal multi-head self-attention with grouped-query heads
 * (n_kv_heads dividing n_heads; 1 is multi-query), rotary positions (rotate_half, base rope_theta, positions from 0;
 * none with rope_theta 0, as HF NemotronHAttention) and an optional sliding window, no biases. Forward, backward and
 * decode with a KV cache in one place.
 * Shapes: rows = B*T, D = d_model, H = n_heads, KV = n_kv_heads, hd = head_dim, W = (H + 2 KV) hd (q | k | v). */
#include "mixers/mixer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    float *q; /* [H*hd, D]  q_proj.weight */
    float *k; /* [KV*hd, D] k_proj.weight */
    float *v; /* [KV*hd, D] v_proj.weight */
    float *o; /* [D, H*hd]  o_proj.weight */
} attn_views;

typedef struct {
    int D, H, KV, hd, W, window;
    float theta;
} attn_dims;

static attn_dims dims_of(const ssm_config *c) {
    const ssm_attention_config *a = &c->attention;
    return (attn_dims){
        c->d_model,        a->n_heads,   a->n_kv_heads, a->head_dim, (a->n_heads + 2 * a->n_kv_heads) * a->head_dim,
        a->sliding_window, a->rope_theta};
}

static attn_views views_of(const float *base, const param_info *pi) {
    float *b = (float *)base;
    return (attn_views){b + pi[0].offset, b + pi[1].offset, b + pi[2].offset, b + pi[3].offset};
}

static void attention_declare(param_layout *L, const ssm_config *c, int layer) {
    const attn_dims d = dims_of(c);
    const char *names[] = {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"};
    const int shapes[4][2] = {{d.H * d.hd, d.D}, {d.KV * d.hd, d.D}, {d.KV * d.hd, d.D}, {d.D, d.H * d.hd}};
    for (int i = 0; i < 4; i++) mixer_param_add(L, layer, names[i], 1, 2, shapes[i]);
}

/* nn.Linear's default (uniform +-1/sqrt(fan_in)); o_proj also scaled by 1/sqrt(n_layer), as Mamba-1's out_proj. */
static void attention_init(const mixer_ctx *ctx, float *w, rng_t *rng) {
    const attn_dims d = dims_of(ctx->cfg);
    const attn_views v = views_of(w, ctx->pi);
    float *const mats[4] = {v.q, v.k, v.v, v.o};
    const size_t n[4] = {(size_t)d.H * d.hd * d.D, (size_t)d.KV * d.hd * d.D, (size_t)d.KV * d.hd * d.D,
                         (size_t)d.D * d.H * d.hd};
    const float bound[4] = {1.0f / sqrtf((float)d.D), 1.0f / sqrtf((float)d.D), 1.0f / sqrtf((float)d.D),
                            1.0f / sqrtf((float)(d.H * d.hd)) / sqrtf((float)ctx->cfg->n_layer)};
    for (int m = 0; m < 4; m++) mixer_fill_uniform(mats[m], n[m], bound[m], rng);
}

/* Float32 (MIXER_ACTS_PLAIN, and inference on a lean backend, MIXER_ACTS_LEAN, which runs the float32 path):
 *   saved: qkv [rows, W] (q and k after the rotation), o [rows, H*hd] (the o_proj input), lse [B, H, T]; no temps;
 *   scratch: dqkv [rows, W], do [rows, H*hd].
 * Lean training (MIXER_ACTS_LEAN_TRAIN: u, out, du in bf16): the same tensors in bf16 but lse (float32), which the
 * backend's attention takes as bf16 operands (CUDA: the flash kernels), as torch's autocast hands SDPA bf16 q, k, v. */
typedef struct {
    mat qkv, o;  /* saved */
    float *lse;  /* saved */
    mat dqkv, d_o; /* scratch */
} attn_bufs;

static attn_bufs bufs_of(const float *act, float *scratch, attn_dims d, size_t rows, int form) {
    const size_t qd = (size_t)d.H * d.hd;
    float *a = (float *)act;
    attn_bufs r = {0};
    if (form == MIXER_ACTS_LEAN_TRAIN) {
        r.qkv = mat_bf16((uint16_t *)a, d.W), a += mixer_bf16_floats(rows * d.W);
        r.o = mat_bf16((uint16_t *)a, (int)qd), a += mixer_bf16_floats(rows * qd);
        r.lse = a;
        if (scratch) {
            r.dqkv = mat_bf16((uint16_t *)scratch, d.W);
            r.d_o = mat_bf16((uint16_t *)(scratch + mixer_bf16_floats(rows * d.W)), (int)qd);
        }
        return r;
    }
    r.qkv = mat_f32(a, d.W), a += rows * d.W;
    r.o = mat_f32(a, (int)qd), a += rows * qd;
    r.lse = a;
    if (scratch) r.dqkv = mat_f32(scratch, d.W), r.d_o = mat_f32(scratch + rows * d.W, (int)qd);
    return r;
}

static size_t attention_act_floats(const ssm_config *c, int B, int T, int form) {
    const attn_dims d = dims_of(c);
    const size_t rows = (size_t)B * T, qd = (size_t)d.H * d.hd;
    if (form == MIXER_ACTS_LEAN_TRAIN) return mixer_bf16_floats(rows * d.W) + mixer_bf16_floats(rows * qd) + rows * d.H;
    return rows * (d.W + qd + d.H);
}
static size_t attention_temp_floats(const ssm_config *c, int B, int T, int form) {
    (void)c, (void)B, (void)T, (void)form;
    return 0;
}
static size_t attention_scratch_floats(const ssm_config *c, int B, int T, int form) {
    const attn_dims d = dims_of(c);
    const size_t rows = (size_t)B * T, qd = (size_t)d.H * d.hd;
    if (form == MIXER_ACTS_LEAN_TRAIN) return mixer_bf16_floats(rows * d.W) + mixer_bf16_floats(rows * qd);
    return rows * (d.W + qd);
}

/* Positions a state made for max_context holds (0: the config's max_context). */
static long attention_context(const ssm_config *c, long max_context) {
    return max_context > 0 ? max_context : c->attention.max_context;
}

/* The decode state of B sequences: the position counters pos [B] (int32, each in a slot of 16 floats: the step
 * reads its position here, not from the host, so that a replayed decode graph finds it), then the key cache
 * [B, cap, KV*hd] and the value cache [B, cap, KV*hd], keys after the rotation. Per sequence: */
#define POS_SLOT 16
static size_t attention_state_floats(const ssm_config *c, long max_context) {
    const attn_dims d = dims_of(c);
    return POS_SLOT + 2 * (size_t)attention_context(c, max_context) * d.KV * d.hd;
}
static void attention_seek(const mixer_ctx *ctx, float *state, int B, long pos) {
    int *counts = xmalloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) counts[b] = (int)pos;
    ctx->be->upload(state, counts, sizeof(int) * B); /* pos [B] at the state's start (above) */
    free(counts);
}
static size_t attention_canon_floats(const ssm_config *c) {
    (void)c;
    return 0;
}
static void attention_canonicalize(const mixer_ctx *ctx, float *canon) { (void)ctx, (void)canon; }

/* Whether q_proj, k_proj and v_proj lie back to back in the parameter buffer (they do unless alignment padding
 * separates them): then they are one weight [W, D], and q | k | v one GEMM (training's; decode keeps one per
 * projection, as the CPU's decode copies hold whole tensors). */
static int qkv_stacked(const attn_views v, const attn_dims d) {
    return v.k == v.q + (size_t)d.H * d.hd * d.D && v.v == v.k + (size_t)d.KV * d.hd * d.D;
}

/* q | k | v of the rows into qkv [rows, W] (float32 or bf16), each head's q and k rotated to positions pos[b] + t
 * (pos NULL: t) */
static void qkv_forward(const mixer_ctx *ctx, const attn_dims d, mat qkv, mat u, const int *pos, int B, int T,
                        int stack) {
    const attn_views v = views_of(ctx->w, ctx->pi);
    const int rows = B * T, qd = d.H * d.hd, kvd = d.KV * d.hd;
    if (stack && qkv_stacked(v, d)) {
        mixer_linear(ctx, qkv, u, v.q, NULL, rows, d.W, d.D); /* q_proj(x) | k_proj(x) | v_proj(x) */
    } else {
        mixer_linear(ctx, qkv, u, v.q, NULL, rows, qd, d.D);                        /* q_proj(x) */
        mixer_linear(ctx, mat_cols(qkv, qd), u, v.k, NULL, rows, kvd, d.D);         /* k_proj(x) */
        mixer_linear(ctx, mat_cols(qkv, qd + kvd), u, v.v, NULL, rows, kvd, d.D);   /* v_proj(x) */
    }
    /* apply_rotary_pos_emb(q, k, cos, sin): q's H heads and k's KV heads are adjacent, one call. Theta 0: none
     * (NemotronHAttention applies no rotation) */
    if (d.theta != 0.0f) ctx->be->rope(qkv, pos, B, T, d.H + d.KV, d.hd, d.theta, 0);
}

/* The attention's arguments over training's keys (the queries' own positions) in qkv */
static attn_args training_args(const attn_dims d, mat qkv, float *lse, int B, int T) {
    const int qd = d.H * d.hd, kvd = d.KV * d.hd;
    return (attn_args){.q = qkv,
                       .k = mat_cols(qkv, qd),
                       .v = mat_cols(qkv, qd + kvd),
                       .kv_bstride = (size_t)T * d.W,
                       .lse = lse,
                       .B = B,
                       .T = T,
                       .H = d.H,
                       .KV = d.KV,
                       .hd = d.hd,
                       .window = d.window};
}

static void attention_forward(const mixer_ctx *ctx, float *act, float *temp, mat out, mat u, int B, int T,
                              float *state) {
    (void)temp;
    const attn_dims d = dims_of(ctx->cfg);
    const attn_views v = views_of(ctx->w, ctx->pi);
    const int rows = B * T, qd = d.H * d.hd, kvd = d.KV * d.hd, lean = ctx->form == MIXER_ACTS_LEAN_TRAIN;
    const attn_bufs f = bufs_of(act, NULL, d, (size_t)rows, ctx->form);
    attn_args a;
    if (!state) { /* training (or a stateless forward): the keys are the T positions themselves */
        qkv_forward(ctx, d, f.qkv, u, NULL, B, T, lean);
        a = training_args(d, f.qkv, f.lse, B, T);
    } else { /* prefill (T > 1) or a decode step, float32: append to the cache, attend over all of it */
        const long cap = ctx->state_ctx;
        int *pos = (int *)state;
        float *kc = state + (size_t)POS_SLOT * B, *vc = kc + (size_t)B * cap * kvd, *qkv = mat_f(f.qkv);
        qkv_forward(ctx, d, f.qkv, u, pos, B, T, 0);
        ctx->be->kv_append(kc, vc, pos, qkv + qd, qkv + qd + kvd, d.W, B, T, (int)cap, kvd); /* past_key_value.update */
        a = training_args(d, f.qkv, NULL, B, T); /* the queries as in training, the keys from the cache */
        a.k = mat_f32(kc, kvd), a.v = mat_f32(vc, kvd), a.kv_bstride = (size_t)cap * kvd, a.nk = pos;
    }
    ctx->be->attn_fwd(&a, f.o);                                /* softmax(q k^T / sqrt(hd) + mask) v */
    mixer_linear(ctx, out, f.o, v.o, NULL, rows, d.D, qd);     /* o_proj(attn_output) */
}

static void attention_backward(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, mat du,
                               const float *dout, mat u, int B, int T) {
    (void)temp;
    const attn_dims d = dims_of(ctx->cfg);
    const attn_views v = views_of(ctx->w, ctx->pi), gr = views_of(ctx->dw, ctx->pi);
    const backend *be = ctx->be;
    const int rows = B * T, qd = d.H * d.hd, kvd = d.KV * d.hd;
    const attn_bufs f = bufs_of(act, scratch, d, (size_t)rows, ctx->form);
    const attn_args a = training_args(d, f.qkv, f.lse, B, T);
    /* lean: dout also in bf16 (ctx->dout16), as o_proj's two GEMMs take it: rounded once, by the norm backward */
    const mat dout_m = ctx->dout16 ? mat_bf16(ctx->dout16, d.D) : mat_f32(dout, d.D);
    be->matmul_bwd(f.d_o, 0.0f, gr.o, dout_m, f.o, v.o, rows, d.D, qd);
    be->attn_bwd(&a, f.o, f.d_o, f.dqkv, mat_cols(f.dqkv, qd), mat_cols(f.dqkv, qd + kvd));
    if (d.theta != 0.0f) be->rope(f.dqkv, NULL, B, T, d.H + d.KV, d.hd, d.theta, 1); /* the rotation's transpose */
    if (ctx->form == MIXER_ACTS_LEAN_TRAIN && qkv_stacked(v, d)) { /* the forward's one GEMM: its two gradients */
        be->matmul_bwd(du, 0.0f, gr.q, f.dqkv, u, v.q, rows, d.W, d.D);
        return;
    }
    be->matmul_bwd(du, 0.0f, gr.q, f.dqkv, u, v.q, rows, qd, d.D);
    be->matmul_bwd(du, 1.0f, gr.k, mat_cols(f.dqkv, qd), u, v.k, rows, kvd, d.D);
    be->matmul_bwd(du, 1.0f, gr.v, mat_cols(f.dqkv, qd + kvd), u, v.v, rows, kvd, d.D);
}

/* Can this backend run the config? Every op must have a kernel (a backend without one refuses it by name), and the
 * attention kernels' size limits (CUDA: head_dim) are the backend's answer about the config's shape. */
static int attention_check(const ssm_config *cfg, const backend *be) {
    const attn_dims d = dims_of(cfg);
    const attn_args a = {.B = 1, .T = 1, .H = d.H, .KV = d.KV, .hd = d.hd, .window = d.window};
    const int ops[] = {BACKEND_OP_rope, BACKEND_OP_kv_append, BACKEND_OP_attn_fwd, BACKEND_OP_attn_bwd};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const int sized = ops[i] == BACKEND_OP_attn_fwd || ops[i] == BACKEND_OP_attn_bwd;
        if (backend_check_op(be, ops[i], sized ? &a : NULL)) return -1;
    }
    return 0;
}

/* This layer's part of a fused decode step (t_decode_layer): its matrices in ctx->w (float32 too: the caller points
 * them at its decode copy), its positions and caches in the state of B sequences, as attention_forward reads them. */
void attention_decode_layer(const mixer_ctx *ctx, float *state, int B, t_decode_layer *L) {
    const attn_dims d = dims_of(ctx->cfg);
    const attn_views v = views_of(ctx->w, ctx->pi);
    const size_t cache = (size_t)B * ctx->state_ctx * d.KV * d.hd;
    memset(L, 0, sizeof *L);
    L->kind = 'a';
    L->q = v.q, L->k = v.k, L->v = v.v, L->o = v.o;
    L->pos = (int *)state, L->k_cache = state + (size_t)POS_SLOT * B, L->v_cache = L->k_cache + cache;
}

const mixer_kind mixer_attention = {
    .name = "attention",
    .code = 'a',
    .bf16_acts = 1,
    .declare = attention_declare,
    .init = attention_init,
    .act_floats = attention_act_floats,
    .temp_floats = attention_temp_floats,
    .scratch_floats = attention_scratch_floats,
    .state_floats = attention_state_floats,
    .context = attention_context,
    .seek = attention_seek,
    .canon_floats = attention_canon_floats,
    .canonicalize = attention_canonicalize,
    .forward = attention_forward,
    .backward = attention_backward,
    .check = attention_check,
};
