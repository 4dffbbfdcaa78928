/* The Mamba-1 mixer (state-spaces/mamba `Mamba`, HF `MambaMixer`): forward, backward, decode step
 * and state size in one place. Shapes: rows = B*T, D = d_model, E = d_inner, N = d_state,
 * R = dt_rank, K = d_conv. */
#include "mixers/mixer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    float *in_proj;  /* [2E, D]   in_proj.weight */
    float *in_b;     /* [2E]      in_proj.bias (use_bias) or NULL */
    float *conv_w;   /* [E, 1, K] conv1d.weight */
    float *conv_b;   /* [E]       conv1d.bias (use_conv_bias) or NULL */
    float *x_proj;   /* [R+2N, E] x_proj.weight */
    float *dt_w;     /* [E, R]    dt_proj.weight */
    float *dt_b;     /* [E]       dt_proj.bias */
    float *A_log;    /* [E, N]    A_log */
    float *D;        /* [E]       D */
    float *out_proj; /* [D, E]    out_proj.weight */
    float *out_b;    /* [D]       out_proj.bias (use_bias) or NULL */
} mamba1_views;

typedef struct {
    int D, E, N, R, K, P; /* P = R + 2N, the x_proj width */
} mamba1_dims;

static mamba1_dims dims_of(const ssm_config *c) {
    mamba1_dims d = {c->d_model, c->mamba1.expand * c->d_model, c->mamba1.d_state, c->mamba1.dt_rank, c->mamba1.d_conv, 0};
    d.P = d.R + 2 * d.N;
    return d;
}

/* The tensors in declaration order (mamba1_declare); optional ones only when the config has them. */
static mamba1_views views_of(const ssm_config *c, const float *base, const param_info *pi) {
    float *b = (float *)base;
    mamba1_views v;
    int k = 0;
    v.in_proj = b + pi[k++].offset;
    v.in_b = c->mamba1.use_bias ? b + pi[k++].offset : NULL;
    v.conv_w = b + pi[k++].offset;
    v.conv_b = c->mamba1.use_conv_bias ? b + pi[k++].offset : NULL;
    v.x_proj = b + pi[k++].offset;
    v.dt_w = b + pi[k++].offset;
    v.dt_b = b + pi[k++].offset;
    v.A_log = b + pi[k++].offset;
    v.D = b + pi[k++].offset;
    v.out_proj = b + pi[k++].offset;
    v.out_b = c->mamba1.use_bias ? b + pi[k++].offset : NULL;
    return v;
}

static void mamba1_declare(param_layout *L, const ssm_config *c, int layer) {
    mamba1_dims d = dims_of(c);
    MIXER_PARAM(L, layer, "in_proj.weight", 1, 2 * d.E, d.D);
    if (c->mamba1.use_bias) MIXER_PARAM(L, layer, "in_proj.bias", 0, 2 * d.E);
    MIXER_PARAM(L, layer, "conv1d.weight", 1, d.E, 1, d.K);
    if (c->mamba1.use_conv_bias) MIXER_PARAM(L, layer, "conv1d.bias", 0, d.E);
    MIXER_PARAM(L, layer, "x_proj.weight", 1, d.P, d.E);
    MIXER_PARAM(L, layer, "dt_proj.weight", 1, d.E, d.R);
    MIXER_PARAM(L, layer, "dt_proj.bias", 0, d.E);
    MIXER_PARAM(L, layer, "A_log", 0, d.E, d.N);
    MIXER_PARAM(L, layer, "D", 0, d.E);
    MIXER_PARAM(L, layer, "out_proj.weight", 1, d.D, d.E);
    if (c->mamba1.use_bias) MIXER_PARAM(L, layer, "out_proj.bias", 0, d.D);
}

/* state-spaces/mamba's initialization: nn.Linear/Conv1d defaults (uniform +-1/sqrt(fan_in)),
 * dt_proj weight +-R^-0.5, dt_proj bias = softplus^-1(dt) with dt log-uniform in [1e-3, 0.1] floored
 * at 1e-4, S4D-real A_log = log(1..N), D = 1, out_proj scaled by 1/sqrt(n_layer). */
static void mamba1_init(const mixer_ctx *ctx, float *w, rng_t *rng) {
    mamba1_dims d = dims_of(ctx->cfg);
    mamba1_views v = views_of(ctx->cfg, w, ctx->pi); /* linear biases stay zero, as in the reference */
    mixer_fill_uniform(v.in_proj, (size_t)2 * d.E * d.D, 1.0f / sqrtf((float)d.D), rng);
    mixer_fill_uniform(v.conv_w, (size_t)d.E * d.K, 1.0f / sqrtf((float)d.K), rng);
    if (v.conv_b) mixer_fill_uniform(v.conv_b, (size_t)d.E, 1.0f / sqrtf((float)d.K), rng);
    mixer_fill_uniform(v.x_proj, (size_t)d.P * d.E, 1.0f / sqrtf((float)d.E), rng);
    mixer_fill_uniform(v.dt_w, (size_t)d.E * d.R, 1.0f / sqrtf((float)d.R), rng);
    for (int e = 0; e < d.E; e++) {
        v.dt_b[e] = mixer_dt_bias_init(rng);
        v.D[e] = 1.0f;
        for (int n = 0; n < d.N; n++) v.A_log[(size_t)e * d.N + n] = logf((float)(n + 1));
    }
    mixer_fill_uniform(v.out_proj, (size_t)d.D * d.E, 1.0f / sqrtf((float)d.E) / sqrtf((float)ctx->cfg->n_layer), rng);
}

/* What the forward keeps for the backward (per layer, in order): the in_proj output and the x_proj output (A =
 * -exp(A_log) is computed by the scan where it reads it; inference reads it from ctx->canon). The rest of the
 * intermediates live in a temp area shared by all layers and are recomputed by the backward from these (the conv and
 * dt: cheap elementwise work and one small GEMM; the scan's backward recomputes its output and the gate). Lean (backend
 * lean_acts, bf16 training on a GPU): the GEMM operands a bf16 GEMM rounds anyway are written in bf16 by their
 * producers: in_proj writes xz (as torch's autocast does), which the conv and the scan's gate read as it is; the conv
 * writes xs only in bf16 (xs16), which x_proj's GEMMs and the scan read (torch's autocast hands the scan a bf16 input
 * too); dt_proj writes dt in bf16 (dt16) and the scan's backward its gradient (as the reference's bf16 scan does); the
 * scan writes out_proj's input g16 and checkpoints of its state every SCAN_HK_STEPS steps, from which its backward
 * recomputes the states (half its first pass on the GPU, the whole of it on the CPU); x_proj's dt_low is rounded once
 * (dtl16) for dt_proj's three GEMMs; the backward writes dxz in bf16 for in_proj and x_proj's output gradient
 * (dt_proj's d(dt_low), the scan's dB and dC) in bf16 for x_proj; the model hands the input in bf16 too (ctx->u16). */
typedef struct {
    float *xz;    /* [rows, 2E] saved (temp in a lean backend's inference): in_proj output x | z */
    uint16_t *xz16; /* [rows, 2E] saved when lean: xz in bf16 (training) */
    float *dbc;   /* [rows, P]  saved: x_proj output dt_low | B | C */
    uint16_t *dtl16; /* [rows, R] saved in lean training: dt_low in bf16, rounded once for dt_proj's three GEMMs */
    uint16_t *hk; /* [B, SCAN_HK_COUNT(T), N, E] saved in lean training: the scan's state checkpoints (bf16) */
    float *xs;    /* [rows, E]  temp: SiLU(conv), the scan input */
    float *dt;    /* [rows, E]  temp: dt_proj(dt_low), before the bias and softplus (the scan applies them) */
    float *g;     /* [rows, E]  temp: the scan's gated output y * silu(z), the out_proj input */
    /* lean training's temps instead of xs, dt, g (bf16 alone): */
    uint16_t *xs16; /* [rows, E]  xs, as x_proj's GEMMs and the scan take it */
    uint16_t *dt16; /* [rows, E]  dt */
    uint16_t *g16;  /* [rows, E]  g, as out_proj's GEMMs take it */
} mamba1_act;

/* form: a MIXER_ACTS_* value. Lean training's temps are xs16, dt16 and g16 alone (bf16); inference on a lean backend
 * runs the float32 path with its temps (xz among them). */
static mamba1_act act_of(const float *saved, const float *temp, mamba1_dims d, size_t rows, int form) {
    float *p = (float *)saved, *q = (float *)temp;
    mamba1_act a = {0};
    if (form == MIXER_ACTS_PLAIN) a.xz = p, p += rows * 2 * d.E;
    else a.xz16 = (uint16_t *)p, p += rows * d.E; /* 2E bf16 values in E floats */
    a.dbc = p, p += rows * d.P;
    if (form == MIXER_ACTS_LEAN_TRAIN) {
        const size_t h = mixer_bf16_floats(rows * d.E);
        a.dtl16 = (uint16_t *)p, p += mixer_bf16_floats(rows * d.R);
        a.hk = (uint16_t *)p;
        a.xs16 = (uint16_t *)q, a.dt16 = (uint16_t *)(q + h), a.g16 = (uint16_t *)(q + 2 * h);
        return a;
    }
    if (form == MIXER_ACTS_LEAN) a.xz = q, q += rows * 2 * d.E;
    a.xs = q, q += rows * d.E;
    a.dt = q, q += rows * d.E;
    a.g = q;
    return a;
}

static size_t mamba1_act_floats(const ssm_config *c, int B, int T, int form) {
    mamba1_dims d = dims_of(c);
    size_t rows = (size_t)B * T;
    const int train = form == MIXER_ACTS_LEAN_TRAIN;
    const size_t hk = train ? mixer_bf16_floats((size_t)B * SCAN_HK_COUNT(T) * d.N * d.E) : 0;
    const size_t dtl = train ? mixer_bf16_floats(rows * d.R) : 0;
    return rows * ((form != MIXER_ACTS_PLAIN ? 1 : 2) * (size_t)d.E + d.P) + dtl + hk;
}

static size_t mamba1_temp_floats(const ssm_config *c, int B, int T, int form) {
    mamba1_dims d = dims_of(c);
    const size_t n = (size_t)B * T * d.E;
    if (form == MIXER_ACTS_LEAN_TRAIN) return 3 * mixer_bf16_floats(n); /* xs16, dt16, g16 */
    return form == MIXER_ACTS_LEAN ? 5 * n : 3 * n;                /* (lean inference: xz too) xs, dt, g */
}

/* The backward's workspace, in order: dxz [rows, 2E], dy (d of the gated scan output), dxs, ddt [rows, E], ddbc
 * [rows, P]; lean training writes dxz (without an in_proj bias), dy, dxs, ddt and ddbc in bf16 (half the
 * floats). */
typedef struct {
    float *dxz, *dy, *dxs, *ddt, *ddbc;
    uint16_t *dxz16, *dy16, *dxs16, *ddt16, *ddbc16;
} mamba1_scratch;

static mamba1_scratch scratch_of(float *p, const ssm_config *c, mamba1_dims d, size_t rows, int form) {
    mamba1_scratch w = {0};
    const int lean = form == MIXER_ACTS_LEAN_TRAIN;
    if (lean && !c->mamba1.use_bias) w.dxz16 = (uint16_t *)p, p += mixer_bf16_floats(rows * 2 * d.E);
    else w.dxz = p, p += rows * 2 * d.E;
    if (lean) w.dy16 = (uint16_t *)p, p += mixer_bf16_floats(rows * d.E);
    else w.dy = p, p += rows * d.E;
    if (lean) w.dxs16 = (uint16_t *)p, p += mixer_bf16_floats(rows * d.E);
    else w.dxs = p, p += rows * d.E;
    if (lean) w.ddt16 = (uint16_t *)p, p += mixer_bf16_floats(rows * d.E);
    else w.ddt = p, p += rows * d.E;
    if (lean)
        w.ddbc16 = (uint16_t *)p, p += mixer_bf16_floats(rows * d.P);
    else
        w.ddbc = p, p += rows * d.P;
    return w;
}

static size_t mamba1_scratch_floats(const ssm_config *c, int B, int T, int form) {
    const mamba1_dims d = dims_of(c);
    const size_t rows = (size_t)B * T, lean = form == MIXER_ACTS_LEAN_TRAIN;
    return (lean && !c->mamba1.use_bias ? mixer_bf16_floats(rows * 2 * d.E) : rows * 2 * d.E) +
           3 * (lean ? mixer_bf16_floats(rows * d.E) : rows * d.E) + (lean ? mixer_bf16_floats(rows * d.P) : rows * d.P);
}

/* conv state [E, K-1] per sequence, then the SSM state [E, N] per sequence (each for all B together). */
static size_t mamba1_state_floats(const ssm_config *c, long max_context) {
    (void)max_context; /* fixed: the recurrent state does not grow with the context */
    mamba1_dims d = dims_of(c);
    return (size_t)d.E * (d.K - 1) + (size_t)d.E * d.N;
}

/* The operand of an activation that lean training keeps in bf16 (h) and the other forms in float32 (f), from
 * element off of its row on (the one pointer that is set is offset). */
static mat act_mat_at(int lean, const float *f, const uint16_t *h, size_t off, int ld) {
    return lean ? mat_bf16(h + off, ld) : mat_f32(f + off, ld);
}
static mat act_mat(int lean, const float *f, const uint16_t *h, int ld) { return act_mat_at(lean, f, h, 0, ld); }

/* The scan's operands in a layer's activations: x the SiLU(conv) output, dt the dt_proj output (the scan adds
 * the bias and applies the softplus), B and C from the x_proj output, the gate z the second half of xz; lean
 * training: x, dt and z in bf16 as the conv, dt_proj and in_proj write them. */
static scan_args scan_args_of(const mamba1_act *a, const mamba1_views *v, const float *At, mamba1_dims d, int B,
                              int T, int lean) {
    return (scan_args){.x = lean ? mat_bf16(a->xs16, d.E) : mat_f32(a->xs, d.E),
                       .dt = lean ? mat_bf16(a->dt16, d.E) : mat_f32(a->dt, d.E),
                       .dt_bias = v->dt_b,
                       .At = At,
                       .A_log = At ? NULL : v->A_log,
                       .Bm = a->dbc + d.R,
                       .Cm = a->dbc + d.R + d.N,
                       .ldbc = d.P,
                       .Dv = v->D,
                       .z = act_mat_at(lean, a->xz, a->xz16, d.E, 2 * d.E),
                       .B = B,
                       .T = T,
                       .E = d.E,
                       .N = d.N,
                       .hk = lean ? a->hk : NULL};
}


/* dt = dt_proj(dt_low) [rows, E], in bf16 (dt16, from dt_low rounded once: dtl16) in lean training */
static void dt_proj_fwd(const mixer_ctx *ctx, const mamba1_act *a, const mamba1_views *v, mamba1_dims d, int rows,
                        int lean) {
    if (lean)
        ctx->be->matmul_xwT(mat_bf16(a->dt16, d.E), mat_bf16(a->dtl16, d.R), mat_f32(v->dt_w, d.R), NULL, rows, d.E,
                            d.R, 0.0f);
    else
        mixer_linear(ctx, mat_f32(a->dt, d.E), mat_f32(a->dbc, d.P), v->dt_w, NULL, rows, d.E, d.R);
}

static void mamba1_forward(const mixer_ctx *ctx, float *act, float *temp, mat out, mat u, int B, int T, float *state) {
    mamba1_dims d = dims_of(ctx->cfg);
    mamba1_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    const backend *be = ctx->be;
    const int rows = B * T;
    mamba1_act a = act_of(act, temp, d, rows, ctx->form);
    float *conv_state = state, *scan_state = state ? state + (size_t)B * d.E * (d.K - 1) : NULL;
    const int lean = ctx->form == MIXER_ACTS_LEAN_TRAIN; /* xz, xs (for x_proj), dt and g in bf16; u and out too */
    const mat xz = act_mat(lean, a.xz, a.xz16, 2 * d.E), xs = act_mat(lean, a.xs, a.xs16, d.E);
    const mat g = act_mat(lean, a.g, a.g16, d.E);

    /* xz = in_proj(u) */
    mixer_linear(ctx, xz, u, v.in_proj, v.in_b, rows, 2 * d.E, d.D);
    /* xs = SiLU(conv(x)) */
    if (conv_state && T == 1) /* a decode step: output and state advance in one pass */
        be->conv1d_silu_step(a.xs, a.xz, 2 * d.E, conv_state, v.conv_w, v.conv_b, B, d.E, d.K);
    else {
        be->conv1d_silu_fwd(xs, xz, conv_state, v.conv_w, v.conv_b, B, T, d.E, d.K);
        if (conv_state) be->conv1d_state_update(conv_state, a.xz, 2 * d.E, B, T, d.E, d.K);
    }
    /* dt_low, B, C = x_proj(x) */
    mixer_linear(ctx, mat_f32(a.dbc, d.P), xs, v.x_proj, NULL, rows, d.P, d.E);
    if (lean) be->convert_rows(mat_bf16(a.dtl16, d.R), mat_f32(a.dbc, d.P), rows, d.R);
    dt_proj_fwd(ctx, &a, &v, d, rows, lean); /* dt = dt_proj(dt_low) */
    const scan_args s = scan_args_of(&a, &v, ctx->canon, d, B, T, lean); /* (training: A from A_log in the scan) */
    be->scan_fwd(&s, g, scan_state);                                       /* g = scan(..) * silu(z) */
    mixer_linear(ctx, out, g, v.out_proj, v.out_b, rows, d.D, d.E);      /* out = out_proj(g) */
}

static void mamba1_backward(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, mat du,
                            const float *dout, mat u, int B, int T) {
    mamba1_dims d = dims_of(ctx->cfg);
    mamba1_views v = views_of(ctx->cfg, ctx->w, ctx->pi), gr = views_of(ctx->cfg, ctx->dw, ctx->pi);
    const backend *be = ctx->be;
    const int rows = B * T, lean = ctx->form == MIXER_ACTS_LEAN_TRAIN;
    mamba1_act a = act_of(act, temp, d, rows, ctx->form);
    const mat xz = act_mat(lean, a.xz, a.xz16, 2 * d.E), xs = act_mat(lean, a.xs, a.xs16, d.E);
    /* recompute the temps as the forward did, from the saved xz (lean: in bf16) and dbc: conv + SiLU and dt; the
     * scan's backward recomputes its gated output g */
    be->conv1d_silu_fwd(xs, xz, NULL, v.conv_w, v.conv_b, B, T, d.E, d.K);
    dt_proj_fwd(ctx, &a, &v, d, rows, lean);
    const mamba1_scratch w = scratch_of(scratch, ctx->cfg, d, rows, ctx->form);
    /* lean: dxz in bf16, as in_proj's GEMMs read it (not with an in_proj bias: its gradient sums dxz in float32);
     * dy (for the scan, as the reference's autocast hands it), dxs, ddt and d(dt_low | B | C) in bf16, as the GEMMs
     * that read them take them */
    const mat dxz = w.dxz16 ? mat_bf16(w.dxz16, 2 * d.E) : mat_f32(w.dxz, 2 * d.E);
    const mat dy = act_mat(lean, w.dy, w.dy16, d.E), dxs = act_mat(lean, w.dxs, w.dxs16, d.E);
    const mat ddt = act_mat(lean, w.ddt, w.ddt16, d.E), ddbc = act_mat(lean, w.ddbc, w.ddbc16, d.P);
    /* lean: dout also in bf16 (ctx->dout16), as out_proj's two GEMMs take it: rounded once, by the norm backward */
    const mat dout_m = ctx->dout16 ? mat_bf16(ctx->dout16, d.D) : mat_f32(dout, d.D);

    be->matmul_bwd(dy, 0.0f, NULL, dout_m, mat_none(), v.out_proj, rows, d.D, d.E);
    if (gr.out_b) be->bias_grad_acc(gr.out_b, dout, d.D, rows, d.D);
    const scan_args s = scan_args_of(&a, &v, NULL, d, B, T, lean);
    const scan_grads sg = {.dx = dxs,
                           .ddt = ddt,
                           .dBm = act_mat_at(lean, w.ddbc, w.ddbc16, d.R, d.P),
                           .dCm = act_mat_at(lean, w.ddbc, w.ddbc16, d.R + d.N, d.P),
                           .dA_log = gr.A_log, /* through A = -exp(A_log) */
                           .dDv = gr.D,
                           .ddt_bias = gr.dt_b,
                           .dz = act_mat_at(w.dxz16 != NULL, w.dxz, w.dxz16, d.E, 2 * d.E),
                           .out = act_mat(lean, a.g, a.g16, d.E)};
    be->scan_bwd(&s, &sg, dy); /* also rebuilds g, the out_proj input */
    be->matmul_bwd(mat_none(), 0.0f, gr.out_proj, dout_m, sg.out, NULL, rows, d.D, d.E);
    /* dt_proj: from dt_low (lean: rounded once, dtl16) */
    be->matmul_bwd(ddbc, 0.0f, gr.dt_w, ddt, lean ? mat_bf16(a.dtl16, d.R) : mat_f32(a.dbc, d.P), v.dt_w, rows, d.E,
                   d.R);
    /* x_proj's part of d(xs) added to the scan's (lean: in bf16 by its GEMM, as the reference's autocast sums them) */
    be->matmul_bwd(dxs, 1.0f, gr.x_proj, ddbc, xs, v.x_proj, rows, d.P, d.E);
    be->conv1d_silu_bwd(dxz, gr.conv_w, gr.conv_b, dxs, xz, v.conv_w, v.conv_b, B, T, d.E, d.K);
    if (gr.in_b) be->bias_grad_acc(gr.in_b, w.dxz, 2 * d.E, rows, 2 * d.E);
    be->matmul_bwd(du, 0.0f, gr.in_proj, dxz, u, v.in_proj, rows, 2 * d.E, d.D);
}

/* This layer's part of a fused decode step (m1_decode_args): its tensors in ctx->w (the matrices float32 too: the
 * caller points them at its decode copy), A from ctx->canon, and its state for B sequences (conv state, then scan
 * state, as mamba1_forward lays them out). */
void mamba1_decode_layer(const mixer_ctx *ctx, float *state, int B, m1_decode_layer *L) {
    const mamba1_dims d = dims_of(ctx->cfg);
    const mamba1_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    memset(L, 0, sizeof *L);
    L->in_proj = v.in_proj, L->x_proj = v.x_proj, L->dt_w = v.dt_w, L->out_proj = v.out_proj;
    L->in_b = v.in_b, L->conv_b = v.conv_b, L->out_b = v.out_b;
    L->conv_w = v.conv_w, L->dt_b = v.dt_b, L->At = ctx->canon, L->Dv = v.D;
    L->conv_state = state, L->scan_state = state + (size_t)B * d.E * (d.K - 1);
}

static size_t mamba1_canon_floats(const ssm_config *c) {
    mamba1_dims d = dims_of(c);
    return (size_t)d.N * d.E;
}

/* canon = At [N, E] = -exp(A_log)^T, the scan's decay rates */
static void mamba1_canonicalize(const mixer_ctx *ctx, float *canon) {
    mamba1_dims d = dims_of(ctx->cfg);
    mamba1_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    ctx->be->neg_exp_transpose(canon, v.A_log, d.E, d.N);
}

/* The scan's sizes come from the config (E = d_inner channels, N = d_state); the batch and length are not known yet. */
static int mamba1_check(const ssm_config *cfg, const backend *be) {
    const mamba1_dims d = dims_of(cfg);
    const scan_args shape = {.E = d.E, .N = d.N};
    if (backend_check_op(be, BACKEND_OP_scan_fwd, &shape) || backend_check_op(be, BACKEND_OP_scan_bwd, &shape))
        return -1;
    return 0;
}

const mixer_kind mixer_mamba1 = {
    .name = "mamba1",
    .code = 'm',
    .bf16_acts = 1,
    .declare = mamba1_declare,
    .init = mamba1_init,
    .act_floats = mamba1_act_floats,
    .temp_floats = mamba1_temp_floats,
    .scratch_floats = mamba1_scratch_floats,
    .state_floats = mamba1_state_floats,
    .canon_floats = mamba1_canon_floats,
    .canonicalize = mamba1_canonicalize,
    .forward = mamba1_forward,
    .backward = mamba1_backward,
    .check = mamba1_check,
};
