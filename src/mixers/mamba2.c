/* The Mamba-2 mixer ('M'; state-spaces/mamba `Mamba2`, HF `Mamba2Mixer`): in_proj, the causal conv + SiLU over
 * x | B | C, the SSD (ssd_fwd: the chunked state space dual), the gated RMSNorm and out_proj. Forward, backward,
 * decode step and state size in one place. Shapes: rows = B*T, D = d_model, Di = d_inner = H*P, N = d_state,
 * G = n_groups, K = d_conv, Cd = conv_dim = Di + 2GN, Din = in_proj's width 2Di + 2GN + H ([z, x, B, C, dt]). */
#include "mixers/mixer.h"

#include <stdlib.h>
#include <string.h>

#include <math.h>
#include <stdio.h>

#define GATED_NORM_EPS MAMBA2_GATED_NORM_EPS

typedef struct {
    float *in_proj;  /* [Din, D]    in_proj.weight */
    float *in_b;     /* [Din]       in_proj.bias (use_bias) or NULL */
    float *conv_w;   /* [Cd, 1, K]  conv1d.weight */
    float *conv_b;   /* [Cd]        conv1d.bias (use_conv_bias) or NULL */
    float *dt_bias;  /* [H]         dt_bias */
    float *A_log;    /* [H]         A_log */
    float *D;        /* [H]         D */
    float *norm;     /* [Di]        norm.weight */
    float *out_proj; /* [D, Di]     out_proj.weight */
    float *out_b;    /* [D]         out_proj.bias (use_bias) or NULL */
} mamba2_views;

typedef struct {
    int D, Di, N, K, H, P, G, GN, Cd, Din;
} mamba2_dims;

static mamba2_dims dims_of(const ssm_config *c) {
    const ssm_mamba2_config *m = &c->mamba2;
    mamba2_dims d = {c->d_model, m->expand * c->d_model, m->d_state, m->d_conv, 0, m->head_dim, m->n_groups, 0, 0, 0};
    d.H = d.Di / d.P;
    d.GN = d.G * d.N;
    d.Cd = d.Di + 2 * d.GN;
    d.Din = 2 * d.Di + 2 * d.GN + d.H;
    return d;
}

/* The tensors in declaration order (mamba2_declare); optional ones only when the config has them. */
static mamba2_views views_of(const ssm_config *c, const float *base, const param_info *pi) {
    float *b = (float *)base;
    mamba2_views v;
    int k = 0;
    v.in_proj = b + pi[k++].offset;
    v.in_b = c->mamba2.use_bias ? b + pi[k++].offset : NULL;
    v.conv_w = b + pi[k++].offset;
    v.conv_b = c->mamba2.use_conv_bias ? b + pi[k++].offset : NULL;
    v.dt_bias = b + pi[k++].offset;
    v.A_log = b + pi[k++].offset;
    v.D = b + pi[k++].offset;
    v.norm = b + pi[k++].offset;
    v.out_proj = b + pi[k++].offset;
    v.out_b = c->mamba2.use_bias ? b + pi[k++].offset : NULL;
    return v;
}

static void mamba2_declare(param_layout *L, const ssm_config *c, int layer) {
    const mamba2_dims d = dims_of(c);
    MIXER_PARAM(L, layer, "in_proj.weight", 1, d.Din, d.D);
    if (c->mamba2.use_bias) MIXER_PARAM(L, layer, "in_proj.bias", 0, d.Din);
    MIXER_PARAM(L, layer, "conv1d.weight", 1, d.Cd, 1, d.K);
    if (c->mamba2.use_conv_bias) MIXER_PARAM(L, layer, "conv1d.bias", 0, d.Cd);
    MIXER_PARAM(L, layer, "dt_bias", 0, d.H); /* mamba_ssm: _no_weight_decay on dt_bias, A_log and D */
    MIXER_PARAM(L, layer, "A_log", 0, d.H);
    MIXER_PARAM(L, layer, "D", 0, d.H);
    MIXER_PARAM(L, layer, "norm.weight", 0, d.Di);
    MIXER_PARAM(L, layer, "out_proj.weight", 1, d.D, d.Di);
    if (c->mamba2.use_bias) MIXER_PARAM(L, layer, "out_proj.bias", 0, d.D);
}

/* mamba_ssm's initialization (mamba2.py, mixer_seq_simple._init_weights): nn.Linear/Conv1d defaults (uniform
 * +-1/sqrt(fan_in)), dt_bias = softplus^-1(dt) with dt log-uniform in [1e-3, 0.1] floored at 1e-4, A ~ U[1, 16] per
 * head stored as A_log, D = 1, the norm's weight 1, out_proj scaled by 1/sqrt(n_layer); biases zero. */
static void mamba2_init(const mixer_ctx *ctx, float *w, rng_t *rng) {
    const mamba2_dims d = dims_of(ctx->cfg);
    const mamba2_views v = views_of(ctx->cfg, w, ctx->pi);
    mixer_fill_uniform(v.in_proj, (size_t)d.Din * d.D, 1.0f / sqrtf((float)d.D), rng);
    mixer_fill_uniform(v.conv_w, (size_t)d.Cd * d.K, 1.0f / sqrtf((float)d.K), rng);
    if (v.conv_b) mixer_fill_uniform(v.conv_b, (size_t)d.Cd, 1.0f / sqrtf((float)d.K), rng);
    for (int h = 0; h < d.H; h++) {
        v.dt_bias[h] = mixer_dt_bias_init(rng);
        v.A_log[h] = logf(1.0f + 15.0f * rng_uniform(rng)); /* A_init_range (1, 16) */
        v.D[h] = 1.0f;
    }
    for (int i = 0; i < d.Di; i++) v.norm[i] = 1.0f;
    mixer_fill_uniform(v.out_proj, (size_t)d.D * d.Di, 1.0f / sqrtf((float)d.Di) / sqrtf((float)ctx->cfg->n_layer), rng);
}

/* The activations. Saved: zx [rows, Din] (in_proj's output z | x | B | C | dt) and y [rows, Di] (the SSD's output,
 * D x included); temp, recomputed by the backward: xbc [rows, Cd] (SiLU(conv)), g [rows, Di] (the gated norm's
 * output, out_proj's input); scratch: dzx [rows, Din], dxbc [rows, Cd], dy, dg [rows, Di], float32 in every form but
 * dzx, which lean training without an in_proj bias keeps in bf16 (in_proj's backward GEMMs read it so), its dt columns
 * from a float32 ddt [rows, H] after dg.
 * Lean training (bf16 on a GPU) keeps in_proj's output and y in bf16, as the reference's autocast has them, g too
 * (out_proj rounds it anyway), and saves of in_proj's output only x | B | C | dt (xd16 [rows, Cd + H]): the gate z
 * (z16 [rows, Di], a temp) is recomputed in the backward by its part of in_proj from the layer's input, which the
 * model recomputes anyway: one GEMM of rows x Di x D (about 1% of m2x24's step) for a third of the saved bytes, the
 * peak's largest part. The SSD then reads dt from a float32 copy of its column (dt32 [rows, H]) and writes its
 * output y16 rounded once from its float32 sums; xbc stays float32. */
typedef struct {
    float *zx, *y, *xbc, *g, *dt32;
    uint16_t *xd16, *z16, *y16, *g16;
} mamba2_act;

static mamba2_act act_of(float *saved, float *temp, mamba2_dims d, size_t rows, int form) {
    mamba2_act a = {0};
    a.xbc = temp, temp += rows * d.Cd;
    if (form != MIXER_ACTS_LEAN_TRAIN) {
        a.zx = saved, a.y = saved + rows * d.Din;
        a.g = temp;
        return a;
    }
    a.xd16 = (uint16_t *)saved, saved += mixer_bf16_floats(rows * (d.Cd + d.H));
    a.y16 = (uint16_t *)saved;
    a.dt32 = temp, temp += rows * d.H;
    a.g16 = (uint16_t *)temp, temp += mixer_bf16_floats(rows * d.Di);
    a.z16 = (uint16_t *)temp;
    return a;
}

static size_t mamba2_act_floats(const ssm_config *c, int B, int T, int form) {
    const mamba2_dims d = dims_of(c);
    const size_t rows = (size_t)B * T;
    if (form == MIXER_ACTS_LEAN_TRAIN) return mixer_bf16_floats(rows * (d.Cd + d.H)) + mixer_bf16_floats(rows * d.Di);
    return rows * ((size_t)d.Din + d.Di);
}
static size_t mamba2_temp_floats(const ssm_config *c, int B, int T, int form) {
    const mamba2_dims d = dims_of(c);
    const size_t rows = (size_t)B * T;
    if (form == MIXER_ACTS_LEAN_TRAIN) return rows * ((size_t)d.Cd + d.H) + 2 * mixer_bf16_floats(rows * d.Di);
    return rows * ((size_t)d.Cd + d.Di);
}
static size_t mamba2_scratch_floats(const ssm_config *c, int B, int T, int form) {
    const mamba2_dims d = dims_of(c);
    return (size_t)B * T * ((size_t)d.Din + d.Cd + 2 * (size_t)d.Di + (form == MIXER_ACTS_LEAN_TRAIN ? d.H : 0));
}

/* in_proj's output from column col (0: z, Di: x | B | C, Di + Cd: dt) as the ops take it: float32, or in lean
 * training bf16, z in its temp and the rest in the saved xd16 */
static mat zx_mat(const mamba2_act *a, mamba2_dims d, int col) {
    if (!a->xd16) return mat_f32(a->zx + col, d.Din);
    return col < d.Di ? mat_bf16(a->z16 + col, d.Di) : mat_bf16(a->xd16 + (col - d.Di), d.Cd + d.H);
}
/* zxbcdt = self.in_proj(u), or in lean training only its z part (z_only: the backward's recompute) or both parts */
static void in_proj_fwd(const mixer_ctx *ctx, const mamba2_act *a, const mamba2_views *v, mamba2_dims d, mat u,
                        int rows, int z_only) {
    if (!a->xd16) {
        mixer_linear(ctx, zx_mat(a, d, 0), u, v->in_proj, v->in_b, rows, d.Din, d.D);
        return;
    }
    mixer_linear(ctx, zx_mat(a, d, 0), u, v->in_proj, v->in_b, rows, d.Di, d.D); /* z: in_proj's first Di rows */
    if (!z_only)
        mixer_linear(ctx, zx_mat(a, d, d.Di), u, v->in_proj + (size_t)d.Di * d.D, v->in_b ? v->in_b + d.Di : NULL,
                     rows, d.Cd + d.H, d.D);
}
static mat y_mat(const mamba2_act *a, mamba2_dims d) { return a->y16 ? mat_bf16(a->y16, d.Di) : mat_f32(a->y, d.Di); }
static mat g_mat(const mamba2_act *a, mamba2_dims d) { return a->g16 ? mat_bf16(a->g16, d.Di) : mat_f32(a->g, d.Di); }

/* Per sequence: the conv state [Cd, K-1] (the last K-1 raw x | B | C inputs), then the SSM state [H, P, N]; for B
 * sequences all conv states first, then all SSM states. Fixed, whatever the context. */
static size_t mamba2_state_floats(const ssm_config *c, long max_context) {
    (void)max_context;
    const mamba2_dims d = dims_of(c);
    return (size_t)d.Cd * (d.K - 1) + (size_t)d.H * d.P * d.N;
}
static size_t mamba2_canon_floats(const ssm_config *c) {
    (void)c;
    return 0; /* A = -exp(A_log) is one value per head: the SSD computes it where it reads it */
}
static void mamba2_canonicalize(const mixer_ctx *ctx, float *canon) { (void)ctx, (void)canon; }

/* Mixed precision runs the SSD's chunk products in tf32 on tensor cores (mamba_ssm's kernels take bf16 operands
 * there; tf32 keeps 10 bits of mantissa to bf16's 7), float32 accumulation; SSM_SSD_TF32=0 keeps them in float32
 * FFMA (to compare). */
static int ssd_tf32_on(const backend *be) {
    const char *e = getenv("SSM_SSD_TF32");
    return !strcmp(be->precision, "bf16") && !(e && !strcmp(e, "0"));
}

/* The SSD's operands in a layer's activations: x, B, C from the conv's output, dt the last H columns of in_proj's
 * output (lean training: their float32 copy dt32). */
static ssd_args ssd_args_of(const mixer_ctx *ctx, const mamba2_views *v, const mamba2_act *a, int B, int T) {
    const ssm_config *c = ctx->cfg;
    const mamba2_dims d = dims_of(c);
    return (ssd_args){.x = a->xbc,
                      .Bm = a->xbc + d.Di,
                      .Cm = a->xbc + d.Di + d.GN,
                      .ldx = d.Cd,
                      .dt = a->dt32 ? a->dt32 : a->zx + d.Di + d.Cd,
                      .lddt = a->dt32 ? d.H : d.Din,
                      .dt_bias = v->dt_bias,
                      .A_log = v->A_log,
                      .Dv = v->D,
                      .dt_min = c->mamba2.dt_min,
                      .dt_max = c->mamba2.dt_max,
                      .B = B,
                      .T = T,
                      .H = d.H,
                      .P = d.P,
                      .N = d.N,
                      .G = d.G,
                      .chunk = c->mamba2.chunk_size,
                      .tf32 = ssd_tf32_on(ctx->be)};
}

/* The recomputed temps of lean training: dt's float32 copy (the SSD's operand) */
static void dt32_fill(const mixer_ctx *ctx, const mamba2_act *a, mamba2_dims d, int rows) {
    if (a->dt32) ctx->be->convert_rows(mat_f32(a->dt32, d.H), zx_mat(a, d, d.Di + d.Cd), rows, d.H);
}

static void mamba2_forward(const mixer_ctx *ctx, float *act, float *temp, mat out, mat u, int B, int T, float *state) {
    const mamba2_dims d = dims_of(ctx->cfg);
    const mamba2_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    const backend *be = ctx->be;
    const int rows = B * T;
    const mamba2_act a = act_of(act, temp, d, (size_t)rows, ctx->form);
    float *conv_state = state, *ssd_state = state ? state + (size_t)B * d.Cd * (d.K - 1) : NULL;

    /* zxbcdt = self.in_proj(u) */
    in_proj_fwd(ctx, &a, &v, d, u, rows, 0);
    /* xBC = self.act(self.conv1d(xBC.transpose(1, 2)).transpose(1, 2)[:, :seqlen]) */
    if (conv_state && T == 1) /* (decode: never lean, which is training's) */
        be->conv1d_silu_step(a.xbc, a.zx + d.Di, d.Din, conv_state, v.conv_w, v.conv_b, B, d.Cd, d.K);
    else {
        be->conv1d_silu_fwd(mat_f32(a.xbc, d.Cd), zx_mat(&a, d, d.Di), conv_state, v.conv_w, v.conv_b, B, T, d.Cd,
                            d.K);
        if (conv_state) be->conv1d_state_update(conv_state, a.zx + d.Di, d.Din, B, T, d.Cd, d.K);
    }
    /* y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=self.D, dt_bias=self.dt_bias, dt_softplus=True,
     * dt_limit=self.dt_limit) (decode: selective_state_update); lean: rounded once into the saved y */
    dt32_fill(ctx, &a, d, rows);
    const ssd_args s = ssd_args_of(ctx, &v, &a, B, T);
    if (ssd_state && T == 1) be->ssd_step(&s, a.y, ssd_state); /* (decode: never lean) */
    else be->ssd_fwd(&s, y_mat(&a, d), ssd_state);
    /* y = self.norm(y, z): RMSNormGated(y * silu(z)), per group of Di / G (from the saved y: as the backward will) */
    be->gated_rmsnorm_fwd(g_mat(&a, d), y_mat(&a, d), zx_mat(&a, d, 0), v.norm, rows, d.Di, d.G, GATED_NORM_EPS);
    /* out = self.out_proj(y) */
    mixer_linear(ctx, out, g_mat(&a, d), v.out_proj, v.out_b, rows, d.D, d.Di);
}

/* This layer's part of a fused decode step (m2_decode_args): its tensors in ctx->w (the matrices float32 too: the
 * caller points them at its decode copy) and its state for B sequences (conv state, then SSD state, as
 * mamba2_forward lays them out). */
void mamba2_decode_layer(const mixer_ctx *ctx, float *state, int B, m2_decode_layer *L) {
    const mamba2_dims d = dims_of(ctx->cfg);
    const mamba2_views v = views_of(ctx->cfg, ctx->w, ctx->pi);
    memset(L, 0, sizeof *L);
    L->in_proj = v.in_proj, L->out_proj = v.out_proj, L->in_b = v.in_b, L->out_b = v.out_b;
    L->conv_w = v.conv_w, L->conv_b = v.conv_b, L->dt_bias = v.dt_bias, L->A_log = v.A_log, L->Dv = v.D;
    L->gnorm_w = v.norm;
    L->conv_state = state, L->ssd_state = state + (size_t)B * d.Cd * (d.K - 1);
}

static void mamba2_backward(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, mat du,
                            const float *dout, mat u, int B, int T) {
    const mamba2_dims d = dims_of(ctx->cfg);
    const mamba2_views v = views_of(ctx->cfg, ctx->w, ctx->pi), gr = views_of(ctx->cfg, ctx->dw, ctx->pi);
    const backend *be = ctx->be;
    const int rows = B * T;
    const mamba2_act a = act_of((float *)act, temp, d, (size_t)rows, ctx->form);
    float *dzx = scratch, *dxbc = dzx + (size_t)rows * d.Din, *dy = dxbc + (size_t)rows * d.Cd;
    float *dg = dy + (size_t)rows * d.Di;
    /* lean: dzx in bf16 (its producers round it once; in_proj's GEMMs would round a float32 one the same), the SSD's
     * ddt float32 after dg, then rounded into dzx's dt columns; a bias's gradient needs the float32 dzx */
    uint16_t *dzx16 = a.xd16 && !gr.in_b ? (uint16_t *)dzx : NULL;
    float *ddt32 = dzx16 ? dg + (size_t)rows * d.Di : NULL;
    const mat dzx_m = dzx16 ? mat_bf16(dzx16, d.Din) : mat_f32(dzx, d.Din);
    /* recompute the conv's output and the norm's, from the saved in_proj output and SSD output (lean: z first, from
     * u: the model recomputed the layer's input as the forward had it) */
    if (a.xd16) in_proj_fwd(ctx, &a, &v, d, u, rows, 1);
    be->conv1d_silu_fwd(mat_f32(a.xbc, d.Cd), zx_mat(&a, d, d.Di), NULL, v.conv_w, v.conv_b, B, T, d.Cd, d.K);
    dt32_fill(ctx, &a, d, rows);
    be->gated_rmsnorm_fwd(g_mat(&a, d), y_mat(&a, d), zx_mat(&a, d, 0), v.norm, rows, d.Di, d.G, GATED_NORM_EPS);

    /* lean: dout in bf16 too (ctx->dout16), as out_proj's GEMMs take it */
    const mat dout_m = ctx->dout16 ? mat_bf16(ctx->dout16, d.D) : mat_f32(dout, d.D);
    be->matmul_bwd(mat_f32(dg, d.Di), 0.0f, gr.out_proj, dout_m, g_mat(&a, d), v.out_proj, rows, d.D, d.Di);
    if (gr.out_b) be->bias_grad_acc(gr.out_b, dout, d.D, rows, d.D);
    /* the norm writes dy and dz (z: in_proj's first Di columns) */
    be->gated_rmsnorm_bwd(dy, dzx_m, gr.norm, dg, y_mat(&a, d), zx_mat(&a, d, 0), v.norm, rows, d.Di, d.G,
                          GATED_NORM_EPS);
    const ssd_args s = ssd_args_of(ctx, &v, &a, B, T);
    const ssd_grads sg = {.dx = dxbc,
                          .dBm = dxbc + d.Di,
                          .dCm = dxbc + d.Di + d.GN,
                          .ldd = d.Cd,
                          .ddt = ddt32 ? ddt32 : dzx + d.Di + d.Cd,
                          .ldddt = ddt32 ? d.H : d.Din,
                          .dA_log = gr.A_log,
                          .ddt_bias = gr.dt_bias,
                          .dDv = gr.D};
    be->ssd_bwd(&s, &sg, dy);
    if (ddt32) be->convert_rows(mat_cols(dzx_m, d.Di + d.Cd), mat_f32(ddt32, d.H), rows, d.H);
    be->conv1d_silu_bwd(mat_cols(dzx_m, d.Di), gr.conv_w, gr.conv_b, mat_f32(dxbc, d.Cd), zx_mat(&a, d, d.Di),
                        v.conv_w, v.conv_b, B, T, d.Cd, d.K);
    if (gr.in_b) be->bias_grad_acc(gr.in_b, dzx, d.Din, rows, d.Din);
    be->matmul_bwd(du, 0.0f, gr.in_proj, dzx_m, u, v.in_proj, rows, d.Din, d.D);
}

/* The ops a backend may lack (a NULL entry): refused by name, before the model moves. Both backends have them. */
static int mamba2_check(const ssm_config *cfg, const backend *be) {
    (void)cfg;
    const int ops[] = {BACKEND_OP_ssd_fwd, BACKEND_OP_ssd_bwd, BACKEND_OP_ssd_step, BACKEND_OP_gated_rmsnorm_fwd,
                       BACKEND_OP_gated_rmsnorm_bwd};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (backend_check_op(be, ops[i], NULL)) return -1;
    return 0;
}

const mixer_kind mixer_mamba2 = {
    .name = "mamba2",
    .code = 'M',
    .bf16_acts = 1,
    .declare = mamba2_declare,
    .init = mamba2_init,
    .act_floats = mamba2_act_floats,
    .temp_floats = mamba2_temp_floats,
    .scratch_floats = mamba2_scratch_floats,
    .state_floats = mamba2_state_floats,
    .canon_floats = mamba2_canon_floats,
    .canonicalize = mamba2_canonicalize,
    .forward = mamba2_forward,
    .backward = mamba2_backward,
    .check = mamba2_check,
};
