/* Writes the dump that tests/torch_ref.py checks against an independent PyTorch model: a small random
 * model, a batch, our logits, loss and every gradient, then the losses and final parameters of ten
 * AdamW steps on that batch. Usage: build/torch_dump OUT.safetensors [LAYERS]
 * LAYERS: the layer pattern (default "m", Mamba-1); with 'a' or 'f' the model has 4 layers (the pattern repeated),
 * grouped-query attention (4 heads of 6 on 2 key/value heads, d_model 20), a sliding window shorter than the
 * sequence, rope_theta 500 and a SwiGLU of 28; with 'M' too, Mamba-2 layers of 4 heads of 10 in 2 groups, d_state 6,
 * chunks of 8 (the oracle recomputes them as the plain recurrence). Usage's third argument "nemotron": NemotronH's
 * layer forms, attention without rotary positions (rope_theta 0) and the relu2 MLP (no gate_proj). */
#include "io/safetensors.h"
#include "model.h"
#include "optim.h"

#include <string.h>

enum { B = 2, T = 37, STEPS = 10 };

/* Appends one tensor per parameter, named prefix + HF name, viewing `base` (a flat buffer). */
static int add_params(st_tensor *out, int n, const param_layout *L, const char *prefix, const float *base) {
    for (int i = 0; i < L->n; i++, n++) {
        const param_info *p = &L->items[i];
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        out[n] = (st_tensor){.name = xstrdup(name), .dtype = ST_F32, .ndim = p->ndim, .nbytes = p->numel * 4,
                             .data = base + p->offset};
        for (int d = 0; d < p->ndim; d++) out[n].shape[d] = p->shape[d];
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4 || (argc == 4 && strcmp(argv[3], "nemotron") != 0)) {
        fprintf(stderr, "usage: %s OUT.safetensors [LAYERS [nemotron]]\n", argv[0]);
        return 2;
    }
    ssm_config c;
    ssm_config_default(&c);
    /* d_inner 40: two full 16-channel blocks and a partial one; T = 37 spans no full scan chunk */
    c.d_model = 20, c.n_layer = 3, c.mamba1.d_state = 6, c.mamba1.dt_rank = 3;
    if (argc >= 3) {
        snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", argv[2]);
        if (strpbrk(argv[2], "afM")) c.n_layer = 4;
    }
    c.attention.n_heads = 4, c.attention.n_kv_heads = 2, c.attention.head_dim = 6, c.attention.rope_theta = 500.0f;
    c.attention.sliding_window = 16, c.mlp.intermediate_size = 28;
    /* Mamba-2: d_inner 40 in 4 heads of 10, 2 groups of d_state 6; chunks of 8 (T = 37 is not a multiple) */
    c.mamba2.d_state = 6, c.mamba2.head_dim = 10, c.mamba2.n_groups = 2, c.mamba2.chunk_size = 8;
    if (argc == 4) c.attention.rope_theta = 0.0f, c.mlp.hidden_act = SSM_MLP_RELU2;
    ssm_model *m = ssm_model_new(&c, 11);
    if (!m) {
        fprintf(stderr, "%s\n", ssm_last_error());
        return 1;
    }
    rng_t rng = {99};
    /* move every tensor off its structured init so nothing is degenerate (A_log distinct, D and biases varied) */
    for (int i = 0; i < m->layout.n; i++) {
        const param_info *p = &m->layout.items[i];
        float scale = strstr(p->name, "norm") ? 0.2f : strstr(p->name, "A_log") ? 0.3f : 0.05f;
        for (size_t k = 0; k < p->numel; k++) m->w[p->offset + k] += scale * rng_normal(&rng);
    }
    static int tokens[B * (T + 1)], inp[B * T], tgt[B * T];
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int)(rng_next(&rng) % 256);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) inp[b * T + t] = tokens[b * (T + 1) + t], tgt[b * T + t] = tokens[b * (T + 1) + t + 1];

    const param_layout *L = &m->layout;
    const int n_out = 3 * L->n + 4;
    st_tensor *out = calloc(n_out, sizeof *out);
    char **names = calloc(n_out, sizeof *names);
    int n = 0;
#define ADD(nm, dt, ptr, bytes, ...)                                                                 \
    do {                                                                                             \
        int64_t shp[] = {__VA_ARGS__};                                                               \
        names[n] = xstrdup(nm);                                                                      \
        out[n] = (st_tensor){.name = names[n], .dtype = dt, .ndim = (int)(sizeof shp / sizeof shp[0]), \
                             .nbytes = (bytes), .data = (ptr)};                                      \
        memcpy(out[n].shape, shp, sizeof shp);                                                       \
        n++;                                                                                         \
    } while (0)
    float *params0 = xmalloc(sizeof(float) * L->total);
    memcpy(params0, m->w, sizeof(float) * L->total);
    n = add_params(out, n, L, "", params0);
    ADD("input.tokens", ST_I32, tokens, sizeof tokens, B, T + 1);

    model_zero_grad(m);
    float loss = (float)model_train_forward(m, inp, tgt, B, T);
    float *logits = xmalloc(sizeof(float) * B * T * 256);
    memcpy(logits, m->acts.logits, sizeof(float) * B * T * 256);
    model_train_backward(m, 1.0f);
    float *grads = xmalloc(sizeof(float) * L->total);
    memcpy(grads, m->dw, sizeof(float) * L->total);
    ADD("out.logits", ST_F32, logits, sizeof(float) * B * T * 256, B, T, 256);
    ADD("out.loss", ST_F32, &loss, 4, 1);
    n = add_params(out, n, L, "grad.", grads);

    ssm_optim_config oc = {.lr = 3e-3f, .min_lr = 3e-4f, .warmup = 3, .steps = STEPS, .weight_decay = 0.1f,
                       .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .clip = 1.0f};
    adamw_state opt;
    adamw_init(&opt, m);
    static float losses[STEPS];
    for (int s = 0; s < STEPS; s++) {
        model_zero_grad(m);
        losses[s] = (float)model_train_forward(m, inp, tgt, B, T);
        model_train_backward(m, 1.0f);
        grad_clip(m, oc.clip);
        adamw_update(m, &opt, &oc, lr_at(&oc, s));
    }
    ADD("adam.losses", ST_F32, losses, sizeof losses, STEPS);
    n = add_params(out, n, L, "final.", m->w);
#undef ADD
    const char *keys[] = {"d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "vocab_size", "norm_eps",
                          "batch", "seq_len", "lr", "min_lr", "warmup", "total_steps", "weight_decay", "beta1",
                          "beta2", "eps", "clip", "adam_steps", "layer_pattern", "n_heads", "n_kv_heads", "head_dim",
                          "rope_theta", "sliding_window", "intermediate_size", "m2_d_state", "m2_d_conv",
                          "m2_expand", "m2_head_dim", "m2_groups", "mlp_act"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    static char vals[NKEYS][140];
    snprintf(vals[0], sizeof vals[0], "%d", c.d_model);
    snprintf(vals[1], sizeof vals[0], "%d", c.n_layer);
    snprintf(vals[2], sizeof vals[0], "%d", c.mamba1.d_state);
    snprintf(vals[3], sizeof vals[0], "%d", m->cfg.mamba1.d_conv);
    snprintf(vals[4], sizeof vals[0], "%d", m->cfg.mamba1.expand);
    snprintf(vals[5], sizeof vals[0], "%d", m->cfg.mamba1.dt_rank);
    snprintf(vals[6], sizeof vals[0], "%d", m->cfg.vocab_size);
    snprintf(vals[7], sizeof vals[0], "%.9g", m->cfg.norm_eps);
    snprintf(vals[8], sizeof vals[0], "%d", B);
    snprintf(vals[9], sizeof vals[0], "%d", T);
    snprintf(vals[10], sizeof vals[0], "%.9g", oc.lr);
    snprintf(vals[11], sizeof vals[0], "%.9g", oc.min_lr);
    snprintf(vals[12], sizeof vals[0], "%d", oc.warmup);
    snprintf(vals[13], sizeof vals[0], "%d", oc.steps);
    snprintf(vals[14], sizeof vals[0], "%.9g", oc.weight_decay);
    snprintf(vals[15], sizeof vals[0], "%.9g", oc.beta1);
    snprintf(vals[16], sizeof vals[0], "%.9g", oc.beta2);
    snprintf(vals[17], sizeof vals[0], "%.9g", oc.eps);
    snprintf(vals[18], sizeof vals[0], "%.9g", oc.clip);
    snprintf(vals[19], sizeof vals[0], "%d", STEPS);
    snprintf(vals[20], sizeof vals[0], "%s", m->cfg.layer_pattern);
    snprintf(vals[21], sizeof vals[0], "%d", m->cfg.attention.n_heads);
    snprintf(vals[22], sizeof vals[0], "%d", m->cfg.attention.n_kv_heads);
    snprintf(vals[23], sizeof vals[0], "%d", m->cfg.attention.head_dim);
    snprintf(vals[24], sizeof vals[0], "%.9g", m->cfg.attention.rope_theta);
    snprintf(vals[25], sizeof vals[0], "%d", m->cfg.attention.sliding_window);
    snprintf(vals[26], sizeof vals[0], "%d", m->cfg.mlp.intermediate_size);
    snprintf(vals[27], sizeof vals[0], "%d", m->cfg.mamba2.d_state);
    snprintf(vals[28], sizeof vals[0], "%d", m->cfg.mamba2.d_conv);
    snprintf(vals[29], sizeof vals[0], "%d", m->cfg.mamba2.expand);
    snprintf(vals[30], sizeof vals[0], "%d", m->cfg.mamba2.head_dim);
    snprintf(vals[31], sizeof vals[0], "%d", m->cfg.mamba2.n_groups);
    snprintf(vals[32], sizeof vals[0], "%s", m->cfg.mlp.hidden_act == SSM_MLP_RELU2 ? "relu2" : "silu");
    const char *values[NKEYS];
    for (int i = 0; i < NKEYS; i++) values[i] = vals[i];
    if (st_write(argv[1], out, n, keys, values, NKEYS)) {
        fprintf(stderr, "%s\n", ssm_last_error());
        return 1;
    }
    return 0;
}
