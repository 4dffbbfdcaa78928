/* The MLP layer ('f'), no biases: HF LlamaMLP's SwiGLU, down_proj(silu(gate_proj(x)) * up_proj(x)) (hidden_act
 * "silu", the default), or HF NemotronHMLP's squared ReLU, down_proj(relu(up_proj(x))^2) with no gate_proj (hidden_act
 * "relu2"). Forward, backward and its (empty) state in one place. Shapes: rows = B*T, D = d_model,
 * I = intermediate_size, GU = the width of the saved projection: 2I (gate | up) for SwiGLU, I (up) for relu2. */
#include "mixers/mixer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    float *gate; /* [I, D] gate_proj.weight (SwiGLU; NULL for relu2) */
    float *up;   /* [I, D] up_proj.weight */
    float *down; /* [D, I] down_proj.weight */
} mlp_views;

static int is_relu2(const ssm_config *c) { return c->mlp.hidden_act == SSM_MLP_RELU2; }

/* the columns of the saved projection per row: gate | up, or up alone */
static int gu_width(const ssm_config *c) { return (is_relu2(c) ? 1 : 2) * c->mlp.intermediate_size; }

static mlp_views views_of(const ssm_config *c, const float *base, const param_info *pi) {
    float *b = (float *)base;
    if (is_relu2(c)) return (mlp_views){NULL, b + pi[0].offset, b + pi[1].offset};
    return (mlp_views){b + pi[0].offset, b + pi[1].offset, b + pi[2].offset};
}

static void mlp_declare(param_layout *L, const ssm_config *c, int layer) {
    const int D = c->d_model, I = c->mlp.intermediate_size;
    if (!is_relu2(c)) mixer_param_add(L, layer, "gate_proj.weight", 1, 2, (int[]){I, D});
    mixer_param_add(L, layer, "up_proj.weight", 1, 2, (int[]){I, D});
    mixer_param_add(L, layer, "down_proj.weight", 1, 2, (int[]){D, I});
}

/* nn.Linear's default (uniform +-1/sqrt(fan_in)); down_proj also scaled by 1/sqrt(n_layer), as Mamba-1's out_proj
 * (GPT-2's residual scaling: the layers' outputs add up on the residual stream). */
static void mlp_init(const mixer_ctx *ctx, float *w, rng_t *rng) {
    const int D = ctx->cfg->d_model, I = ctx->cfg->mlp.intermediate_size;
    mlp_views v = views_of(ctx->cfg, w, ctx->pi);
    const float bd = 1.0f / sqrtf((float)D), bi = 1.0f / sqrtf((float)I) / sqrtf((float)ctx->cfg->n_layer);
    if (v.gate) mixer_fill_uniform(v.gate, (size_t)I * D, bd, rng);
    mixer_fill_uniform(v.up, (size_t)I * D, bd, rng);
    mixer_fill_uniform(v.down, (size_t)D * I, bi, rng);
}

/* Float32 (MIXER_ACTS_PLAIN, and inference on a lean backend, MIXER_ACTS_LEAN, which runs the float32 path):
 *   saved: gu [rows, GU] = gate_proj(x) | up_proj(x) (relu2: up_proj(x)); temp: h [rows, I] = silu(g) * u (relu2:
 *   relu(u)^2), recomputed by the backward; scratch: dh [rows, I], dgu [rows, GU] (relu2: none, dgu is dh, in place).
 * Lean training (MIXER_ACTS_LEAN_TRAIN: u, out, du in bf16): the same tensors in bf16, as autocast keeps them, and
 * gate | up one GEMM when the two weights lie back to back. */
typedef struct {
    mat gu;       /* saved */
    mat h;        /* temp */
    mat dh, dgu;  /* scratch */
} mlp_bufs;

static mlp_bufs bufs_of(const float *act, float *temp, float *scratch, int I, int GU, size_t rows, int form) {
    mlp_bufs r = {0};
    const int sep = GU != I; /* SwiGLU: dgu apart from dh */
    if (form == MIXER_ACTS_LEAN_TRAIN) {
        r.gu = mat_bf16((uint16_t *)act, GU), r.h = mat_bf16((uint16_t *)temp, I);
        if (scratch)
            r.dh = mat_bf16((uint16_t *)scratch, I),
            r.dgu = sep ? mat_bf16((uint16_t *)(scratch + mixer_bf16_floats(rows * I)), GU) : r.dh;
        return r;
    }
    r.gu = mat_f32(act, GU), r.h = mat_f32(temp, I);
    if (scratch) r.dh = mat_f32(scratch, I), r.dgu = sep ? mat_f32(scratch + rows * I, GU) : r.dh;
    return r;
}

static size_t mlp_act_floats(const ssm_config *c, int B, int T, int form) {
    const size_t n = (size_t)B * T * gu_width(c);
    return form == MIXER_ACTS_LEAN_TRAIN ? mixer_bf16_floats(n) : n;
}
static size_t mlp_temp_floats(const ssm_config *c, int B, int T, int form) {
    const size_t n = (size_t)B * T * c->mlp.intermediate_size;
    return form == MIXER_ACTS_LEAN_TRAIN ? mixer_bf16_floats(n) : n;
}
static size_t mlp_scratch_floats(const ssm_config *c, int B, int T, int form) {
    const size_t n = (size_t)B * T * c->mlp.intermediate_size;
    if (is_relu2(c)) return form == MIXER_ACTS_LEAN_TRAIN ? mixer_bf16_floats(n) : n;
    return form == MIXER_ACTS_LEAN_TRAIN ? mixer_bf16_floats(n) + mixer_bf16_floats(2 * n) : 3 * n;
}
static size_t mlp_state_floats(const ssm_config *c, long max_context) {
    (void)c, (void)max_context;
    return 0; /* position-wise: nothing carries */
}
static size_t mlp_canon_floats(const ssm_config *c) {
    (void)c;
    return 0;
}
static void mlp_canonicalize(const mixer_ctx *ctx, float *canon) { (void)ctx, (void)canon; }

/* Whether gate_proj and up_proj lie back to back in the parameter buffer (they do unless alignment padding separates
 * them): then they are one weight [2I, D], and gate | up one GEMM (training's; decode keeps one per projection, as the
 * CPU's decode copies hold whole tensors). */
static int gate_up_stacked(const mlp_views v, int I, int D) { return v.gate && v.up == v.gate + (size_t)I * D; }

static void mlp_forward(const mixer_ctx *ctx, float *act, float *temp, mat out, mat u, int B, int T, float *state) {
    (void)state;
    const int D = ctx->cfg->d_model, I = ctx->cfg->mlp.intermediate_size, rows = B * T;
    const mlp_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    const mlp_bufs f = bufs_of(act, temp, NULL, I, gu_width(ctx->cfg), (size_t)rows, ctx->form);
    if (!v.gate) { /* NemotronHMLP */
        mixer_linear(ctx, f.gu, u, v.up, NULL, rows, I, D);    /* up_proj(x) */
        ctx->be->relu2_fwd(f.h, f.gu, rows, I);                /* act_fn: relu(x)^2 */
        mixer_linear(ctx, out, f.h, v.down, NULL, rows, D, I); /* down_proj(...) */
        return;
    }
    if (ctx->form == MIXER_ACTS_LEAN_TRAIN && gate_up_stacked(v, I, D)) {
        mixer_linear(ctx, f.gu, u, v.gate, NULL, rows, 2 * I, D); /* gate_proj(x) | up_proj(x) */
    } else {
        mixer_linear(ctx, f.gu, u, v.gate, NULL, rows, I, D);                 /* gate_proj(x) */
        mixer_linear(ctx, mat_cols(f.gu, I), u, v.up, NULL, rows, I, D);      /* up_proj(x) */
    }
    ctx->be->swiglu_fwd(f.h, f.gu, rows, I);                 /* act_fn(gate) * up */
    mixer_linear(ctx, out, f.h, v.down, NULL, rows, D, I);   /* down_proj(...) */
}

static void mlp_backward(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, mat du, const float *dout,
                         mat u, int B, int T) {
    const int D = ctx->cfg->d_model, I = ctx->cfg->mlp.intermediate_size, rows = B * T;
    const mlp_views v = views_of(ctx->cfg, ctx->w, ctx->pi), gr = views_of(ctx->cfg, ctx->dw, ctx->pi);
    const backend *be = ctx->be;
    const mlp_bufs f = bufs_of(act, temp, scratch, I, gu_width(ctx->cfg), (size_t)rows, ctx->form);
    /* lean: dout also in bf16 (ctx->dout16), as down_proj's two GEMMs take it: rounded once, by the norm backward */
    const mat dout_m = ctx->dout16 ? mat_bf16(ctx->dout16, D) : mat_f32(dout, D);
    if (!v.gate) {
        be->relu2_fwd(f.h, f.gu, rows, I); /* recompute the down_proj input */
        be->matmul_bwd(f.dh, 0.0f, gr.down, dout_m, f.h, v.down, rows, D, I);
        be->relu2_bwd(f.dh, f.dh, f.gu, rows, I); /* in place: d up_proj(x) */
        be->matmul_bwd(du, 0.0f, gr.up, f.dh, u, v.up, rows, I, D);
        return;
    }
    be->swiglu_fwd(f.h, f.gu, rows, I); /* recompute the down_proj input */
    be->matmul_bwd(f.dh, 0.0f, gr.down, dout_m, f.h, v.down, rows, D, I);
    be->swiglu_bwd(f.dgu, f.dh, f.gu, rows, I);
    if (ctx->form == MIXER_ACTS_LEAN_TRAIN && gate_up_stacked(v, I, D)) { /* the forward's one GEMM: its gradients */
        be->matmul_bwd(du, 0.0f, gr.gate, f.dgu, u, v.gate, rows, 2 * I, D);
        return;
    }
    be->matmul_bwd(du, 0.0f, gr.gate, f.dgu, u, v.gate, rows, I, D);
    be->matmul_bwd(du, 1.0f, gr.up, mat_cols(f.dgu, I), u, v.up, rows, I, D);
}

/* This layer's part of a fused decode step (t_decode_layer): its matrices in ctx->w (float32 too: the caller points
 * them at its decode copy); gate NULL for relu2. */
void mlp_decode_layer(const mixer_ctx *ctx, t_decode_layer *L) {
    const mlp_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    memset(L, 0, sizeof *L);
    L->kind = 'f';
    L->gate = v.gate, L->up = v.up, L->down = v.down;
}

const mixer_kind mixer_mlp = {
    .name = "mlp",
    .code = 'f',
    .bf16_acts = 1,
    .declare = mlp_declare,
    .init = mlp_init,
    .act_floats = mlp_act_floats,
    .temp_floats = mlp_temp_floats,
    .scratch_floats = mlp_scratch_floats,
    .state_floats = mlp_state_floats,
    .canon_floats = mlp_canon_floats,
    .canonicalize = mlp_canonicalize,
    .forward = mlp_forward,
    .backward = mlp_backward,
    .check = NULL, /* every op has a kernel on every backend */
};
