/* The fused Mamba-1 decode step (src/backend/cuda/decode_mamba1.cu: every layer of a step in one cooperative
 * kernel) against its definition, the op-by-op step: on the GPU (SSM_DECODE_FUSED=0) and on the CPU, after a prefill
 * by the sequence forward, the states carried for many steps.
 * - float32 weights (after a prefill): the logits within 1e-5 of their scale of both, at batches 1, 3 and 8; two runs
 *   bitwise equal; ssm_step takes the fused path (bitwise the kernel called directly); 9 sequences (float32 beyond
 *   8) and 65 fall back to the op-by-op step.
 * - 16 to 64 sequences (bf16 and int8: the tensor-core form, activations in bf16): within 2e-2 of both.
 * - bf16 weights (ssm_model_use_bf16): within 1e-5 of the CPU's bf16 decode (the same bf16 weights), within 2e-2 of
 *   the GPU's op-by-op step (which reads float32 weights in decode-sized products); after AdamW steps change the
 *   weights, the bf16 copy follows them.
 * - int8 weights with row scales: within 1e-5 of the CPU's int8 decode; a hybrid model with int8 is refused on the
 *   GPU, and a step of more than 64 sequences is an error (not float32 weights in silence).
 * - the d_model 768 shape of the benchmark (dt_rank 48, x_proj's 80 rows) in float32, bf16 and int8.
 * - Mamba-2 stacks (decode_mamba2.cu) the same way: groups, d_state 32 to 128, a dt limit, float32, bf16 and int8,
 *   1 to 64 sequences, the mamba2-130m layer shape.
 * - Transformer stacks (decode_transformer.cu): attention and MLP layers, grouped-query heads, rotary positions or
 *   none, a sliding window, SwiGLU or relu2, keys past 32 (several splits a head), float32, bf16 and int8, 1 to 8
 *   sequences (the default takes 1 to 4); 9 fall back; int8 takes at most 8 on the GPU.
 * DECODE_TEST_QUICK=1: one case of each form (for compute-sanitizer). Prints "skip - ..." where there is no GPU. */
#include "test.h"
#include "backend/backend.h"
#include "common.h"
#include "model.h"
#include "ops/ops_cuda.h"
#include "optim.h"

#include <stdlib.h>
#include <string.h>

static ssm_config config_of(int d_model, int n_layer, int d_state, int bias) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = d_model, c.n_layer = n_layer, c.mamba1.d_state = d_state, c.mamba1.use_bias = bias;
    c.tie_embeddings = !bias;
    return c;
}

/* wt: 0 float32, 1 bf16, 2 int8 decode weights */
/* Mamba-2 layers ("M"): heads of head_dim in groups, d_state N, a dt limit when dt_max > 0 */
static ssm_config config_m2(int d_model, int n_layer, int N, int head_dim, int groups, int bias, float dt_max) {
    ssm_config c = config_of(d_model, n_layer, 16, bias);
    strcpy(c.layer_pattern, "M");
    c.mamba2.d_state = N, c.mamba2.head_dim = head_dim, c.mamba2.n_groups = groups, c.mamba2.use_bias = bias;
    if (dt_max > 0) c.mamba2.dt_min = 0.002f, c.mamba2.dt_max = dt_max;
    return c;
}

/* attention and MLP layers (pattern of 'a' and 'f'): heads of hd, kv of them for keys and values, a window (0: none),
 * rope_theta (0: none), relu2 or SwiGLU of width I */
static ssm_config config_t(int d_model, int n_layer, const char *pattern, int heads, int kv, int hd, int window,
                           float theta, int relu2, int I) {
    ssm_config c = config_of(d_model, n_layer, 16, 0);
    snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", pattern);
    c.attention.n_heads = heads, c.attention.n_kv_heads = kv, c.attention.head_dim = hd;
    c.attention.sliding_window = window, c.attention.rope_theta = theta, c.attention.max_context = 256;
    c.mlp.hidden_act = relu2 ? SSM_MLP_RELU2 : SSM_MLP_SILU, c.mlp.intermediate_size = I;
    return c;
}

static ssm_model *model_on(const ssm_config *c, uint64_t seed, int wt, const char *device) {
    ssm_model *m = ssm_model_new(c, seed);
    if (wt == 1) ssm_model_use_bf16(m);
    if (wt == 2) CHECK(ssm_model_use_int8(m) == 0, "use_int8: %s", ssm_last_error());
    CHECK(ssm_model_set_device(m, device) == 0, "set_device %s: %s", device, ssm_last_error());
    return m;
}

/* prefill [B, P] tokens through the sequence forward (none when P is 0), then steps ssm_step calls: logits
 * [steps, B, V] */
static void decode(ssm_model *m, ssm_state *s, const int *prefill, int P, const int *tok, int steps, float *out,
                   const char *fused) {
    const int B = s->n_seq, V = m->cfg.vocab_size;
    float *last = xmalloc(sizeof(float) * B * V);
    setenv("SSM_DECODE_FUSED", fused, 1);
    ssm_state_reset(s);
    if (P) CHECK(ssm_forward(m, s, prefill, P, last, 1) == 0, "prefill: %s", ssm_last_error());
    for (int t = 0; t < steps; t++)
        CHECK(ssm_step(m, s, tok + (size_t)t * B, out + (size_t)t * B * V) == 0, "step: %s", ssm_last_error());
    unsetenv("SSM_DECODE_FUSED");
    free(last);
}

/* the same, calling the kernel directly (decode_fused_step): fails the test if the backend declines */
static void decode_direct(ssm_model *m, ssm_state *s, const int *prefill, int P, const int *tok, int steps,
                          float *out) {
    const backend *be = m->be;
    const int B = s->n_seq, V = m->cfg.vocab_size;
    float *last = xmalloc(sizeof(float) * B * V);
    int *tok_d = be->alloc(sizeof(int) * B);
    float *lg = be->alloc(sizeof(float) * B * V), *work = be->alloc(sizeof(float) * decode_fused_work_floats(m, B));
    setenv("SSM_DECODE_FUSED", "0", 1);
    ssm_state_reset(s);
    if (P) CHECK(ssm_forward(m, s, prefill, P, last, 1) == 0, "prefill: %s", ssm_last_error());
    unsetenv("SSM_DECODE_FUSED");
    model_canonicalize(m, s);
    for (int t = 0; t < steps; t++) {
        be->upload(tok_d, tok + (size_t)t * B, sizeof(int) * B);
        EXPECT(decode_fused_step(m, s, tok_d, lg, work) == 0, "the fused kernel declined B %d", B);
        be->download(out + (size_t)t * B * V, lg, sizeof(float) * B * V);
    }
    be->release(tok_d), be->release(lg), be->release(work);
    free(last);
}

static double worst_rel(const float *a, const float *b, int steps, int B, int V) {
    double w = 0;
    for (int i = 0; i < steps * B; i++) {
        const double e = test_rel_err(a + (size_t)i * V, b + (size_t)i * V, V);
        if (e > w || e != e) w = e; /* (a NaN stays) */
    }
    return w;
}

static void random_tokens(int *t, size_t n, uint64_t seed) {
    rng_t r = {seed};
    for (size_t i = 0; i < n; i++)
        t[i] = (int)(rng_next(&r) % 256);
}

/* the fused step against the GPU's op-by-op step and the CPU's, for one config and batch */
static void test_against_op_by_op(ssm_config c, int B, int wt, int steps) {
    char name[256];
    const int bf16 = wt != 0; /* (int8 too: no prefill; the GPU's op-by-op step then reads float32 weights) */
    snprintf(name, sizeof name, "fused decode = op by op: d_model %d x %d, d_state %d, B %d, %s weights%s", c.d_model,
             c.n_layer, c.mamba1.d_state, B,
             wt == 2 ? "int8"
             : wt    ? "bf16"
                     : "float32",
             c.mamba1.use_bias ? ", biases" : "");
    TEST_BEGIN(name);
    const int P = bf16 ? 0 : 17, V = c.vocab_size; /* (a bf16 prefill is bf16 GEMMs on the GPU, float32 on the CPU) */
    ssm_model *g = model_on(&c, 11, wt, "cuda"), *cpu = model_on(&c, 11, wt, "cpu");
    ssm_state *sg = ssm_state_new(g, B), *sc = ssm_state_new(cpu, B);
    int *pre = xmalloc(sizeof(int) * B * P), *tok = xmalloc(sizeof(int) * B * steps);
    random_tokens(pre, (size_t)B * P, 3), random_tokens(tok, (size_t)B * steps, 4);
    const size_t n = (size_t)steps * B * V;
    float *f1 = xmalloc(sizeof(float) * n), *f2 = xmalloc(sizeof(float) * n), *fd = xmalloc(sizeof(float) * n);
    float *op = xmalloc(sizeof(float) * n), *ref = xmalloc(sizeof(float) * n);
    decode(g, sg, pre, P, tok, steps, f1, "1");
    decode(g, sg, pre, P, tok, steps, f2, B <= 4 ? "" : "1"); /* ("": the default) */
    decode_direct(g, sg, pre, P, tok, steps, fd);
    if (wt == 2) { /* int8 on the GPU is the fused step alone: compare with the float32 weights' op-by-op step */
        g->int8 = 0;
        decode(g, sg, pre, P, tok, steps, op, "0");
        g->int8 = 1;
    } else {
        decode(g, sg, pre, P, tok, steps, op, "0");
    }
    decode(cpu, sc, pre, P, tok, steps, ref, "0");
    EXPECT(!memcmp(f1, f2, sizeof(float) * n), "two fused runs differ");
    EXPECT(!memcmp(f1, fd, sizeof(float) * n), "ssm_step did not take the fused kernel (or it is not repeatable)");
    const double e_cpu = worst_rel(f1, ref, steps, B, V), e_op = worst_rel(f1, op, steps, B, V);
    /* (beyond 8 sequences the tensor-core form rounds activations to bf16; beyond 16 the CPU's step reads float32
     * weights) */
    EXPECT(e_cpu <= (B > 8 ? 2e-2 : 1e-5), "fused logits differ from the CPU's by %.3g", e_cpu);
    EXPECT(e_op <= (wt == 2 ? 5e-2
                    : bf16  ? 2e-2
                            : 1e-5),
           "fused logits differ from the GPU's op-by-op step by %.3g", e_op);
    printf("  # %d steps: vs CPU %.3g, vs GPU op by op %.3g\n", steps, e_cpu, e_op);
    ssm_state_free(sg), ssm_state_free(sc);
    ssm_model_free(g), ssm_model_free(cpu);
    free(pre), free(tok), free(f1), free(f2), free(fd), free(op), free(ref);
    TEST_END();
}

/* A Transformer's fused step (SSM_DECODE_FUSED=1; the default up to 4 sequences) against the GPU's op-by-op step and the CPU's, after a prefill of P
 * positions (float32; bf16 and int8 decode from an empty cache, as test_against_op_by_op) */
static void test_transformer(ssm_config c, int B, int wt, int P, int steps) {
    char name[512];
    snprintf(name, sizeof name,
             "fused Transformer decode = op by op: \"%s\" x %d, d_model %d, %d heads of %d, %d kv, window %d, rope %g, "
             "%s, B %d, %s weights, %d + %d positions",
             c.layer_pattern, c.n_layer, c.d_model, c.attention.n_heads, c.attention.head_dim, c.attention.n_kv_heads,
             c.attention.sliding_window, c.attention.rope_theta, c.mlp.hidden_act == SSM_MLP_RELU2 ? "relu2" : "SwiGLU",
             B, wt == 2 ? "int8" : wt ? "bf16" : "float32", P, steps);
    TEST_BEGIN(name);
    const int V = c.vocab_size;
    ssm_model *g = model_on(&c, 21, wt, "cuda"), *cpu = model_on(&c, 21, wt, "cpu");
    ssm_state *sg = ssm_state_new(g, B), *sc = ssm_state_new(cpu, B);
    int *pre = xmalloc(sizeof(int) * (B * P + 1)), *tok = xmalloc(sizeof(int) * B * steps);
    random_tokens(pre, (size_t)B * P, 31), random_tokens(tok, (size_t)B * steps, 32);
    const size_t n = (size_t)steps * B * V;
    float *f1 = xmalloc(sizeof(float) * n), *f2 = xmalloc(sizeof(float) * n), *fd = xmalloc(sizeof(float) * n);
    float *op = xmalloc(sizeof(float) * n), *ref = xmalloc(sizeof(float) * n);
    decode(g, sg, pre, P, tok, steps, f1, "1");
    decode(g, sg, pre, P, tok, steps, f2, B <= 4 ? "" : "1"); /* ("": the default) */
    decode_direct(g, sg, pre, P, tok, steps, fd);
    g->int8 = 0; /* (int8 on the GPU is the fused step alone: the op-by-op step of the float32 weights) */
    decode(g, sg, pre, P, tok, steps, op, "0");
    g->int8 = wt == 2;
    decode(cpu, sc, pre, P, tok, steps, ref, "0");
    EXPECT(!memcmp(f1, f2, sizeof(float) * n), "two fused runs differ");
    EXPECT(!memcmp(f1, fd, sizeof(float) * n), "ssm_step did not take the fused kernel (or it is not repeatable)");
    const double e_cpu = worst_rel(f1, ref, steps, B, V), e_op = worst_rel(f1, op, steps, B, V);
    EXPECT(e_cpu <= 1e-5, "fused logits differ from the CPU's by %.3g", e_cpu);
    EXPECT(e_op <= (wt == 2 ? 5e-2
                    : wt    ? 2e-2
                            : 1e-5),
           "fused logits differ from the GPU's op-by-op step by %.3g", e_op);
    printf("  # %d steps: vs CPU %.3g, vs GPU op by op %.3g\n", steps, e_cpu, e_op);
    ssm_state_free(sg), ssm_state_free(sc);
    ssm_model_free(g), ssm_model_free(cpu);
    free(pre), free(tok), free(f1), free(f2), free(fd), free(op), free(ref);
    TEST_END();
}

/* A Transformer: 9 sequences run op by op (bitwise); int8 moves to the GPU and takes at most 8 sequences a step */
static void test_transformer_limits(void) {
    TEST_BEGIN("fused Transformer decode: 9 sequences fall back; int8 up to 8");
    ssm_config c = config_t(64, 2, "af", 4, 2, 16, 0, 10000.0f, 0, 128);
    const int B = 9, P = 5, steps = 3, V = c.vocab_size;
    ssm_model *g = model_on(&c, 22, 0, "cuda");
    ssm_state *s = ssm_state_new(g, B);
    int *pre = xmalloc(sizeof(int) * B * P), *tok = xmalloc(sizeof(int) * B * steps);
    random_tokens(pre, (size_t)B * P, 33), random_tokens(tok, (size_t)B * steps, 34);
    const size_t n = (size_t)steps * B * V;
    float *a = xmalloc(sizeof(float) * n), *b = xmalloc(sizeof(float) * n);
    decode(g, s, pre, P, tok, steps, a, "1");
    decode(g, s, pre, P, tok, steps, b, "0");
    EXPECT(!memcmp(a, b, sizeof(float) * n), "9 sequences did not run op by op");
    ssm_state_free(s), ssm_model_free(g);
    ssm_model *h = ssm_model_new(&c, 23);
    EXPECT(ssm_model_use_int8(h) == 0, "use_int8 on the CPU: %s", ssm_last_error());
    EXPECT(ssm_model_set_device(h, "cuda") == 0, "int8 Transformer to the GPU: %s", ssm_last_error());
    ssm_state *s9 = ssm_state_new(h, B);
    EXPECT(ssm_step(h, s9, tok, a) != 0 && strstr(ssm_last_error(), "takes 1 to 8 sequences"),
           "int8 Transformer step of 9 sequences: %s", ssm_last_error());
    ssm_state_free(s9), ssm_model_free(h);
    free(pre), free(tok), free(a), free(b);
    TEST_END();
}

/* more sequences than the kernel takes: the op-by-op step, bitwise */
static void test_fallback(int B, int wt) {
    char name[160];
    snprintf(name, sizeof name, "fused decode: %d sequences with %s weights fall back to the op-by-op step", B,
             wt ? "bf16" : "float32");
    TEST_BEGIN(name);
    ssm_config c = config_of(64, 2, 16, 0);
    const int P = 5, steps = 4, V = c.vocab_size;
    ssm_model *g = model_on(&c, 12, wt, "cuda");
    ssm_state *s = ssm_state_new(g, B);
    int *pre = xmalloc(sizeof(int) * B * P), *tok = xmalloc(sizeof(int) * B * steps);
    random_tokens(pre, (size_t)B * P, 5), random_tokens(tok, (size_t)B * steps, 6);
    const size_t n = (size_t)steps * B * V;
    float *a = xmalloc(sizeof(float) * n), *b = xmalloc(sizeof(float) * n);
    decode(g, s, pre, P, tok, steps, a, "1");
    decode(g, s, pre, P, tok, steps, b, "0");
    EXPECT(!memcmp(a, b, sizeof(float) * n), "%d sequences did not run op by op", B);
    ssm_state_free(s), ssm_model_free(g);
    free(pre), free(tok), free(a), free(b);
    TEST_END();
}

/* AdamW changes the weights: the fused step's bf16 copy follows (the CPU model gets the GPU's new weights) */
static void test_after_training(void) {
    TEST_BEGIN("fused decode in bf16 follows the weights after AdamW steps");
    ssm_config c = config_of(64, 2, 16, 0);
    const int B = 2, P = 0, steps = 6, V = c.vocab_size, rows = 4 * 32;
    ssm_model *g = model_on(&c, 13, 1, "cuda");
    ssm_state *s = ssm_state_new(g, B);
    int *pre = xmalloc(sizeof(int) * B * P), *tok = xmalloc(sizeof(int) * B * steps);
    random_tokens(pre, (size_t)B * P, 7), random_tokens(tok, (size_t)B * steps, 8);
    const size_t n = (size_t)steps * B * V;
    float *before = xmalloc(sizeof(float) * n), *after = xmalloc(sizeof(float) * n), *ref = xmalloc(sizeof(float) * n);
    decode(g, s, pre, P, tok, steps, before, "1"); /* makes the bf16 copy */
    ssm_optim_config oc;
    ssm_optim_config_default(&oc);
    oc.warmup = 1, oc.steps = 3, oc.lr = 1e-2f;
    adamw_state opt;
    adamw_init(&opt, g);
    int *bt = xmalloc(sizeof(int) * rows), *tg = xmalloc(sizeof(int) * rows);
    for (int k = 0; k < 3; k++) {
        random_tokens(bt, rows, 20 + k);
        for (int i = 0; i < rows; i++)
            tg[i] = bt[i] % 7 + 'a';
        model_zero_grad(g);
        model_train_forward(g, bt, tg, 4, 32);
        model_train_backward(g, 1.0f);
        adamw_update(g, &opt, &oc, lr_at(&oc, k));
    }
    adamw_free(&opt);
    decode(g, s, pre, P, tok, steps, after, "1");
    model_sync_host(g);
    ssm_model *cpu = ssm_model_new(&c, 13);
    memcpy(cpu->w, g->w, sizeof(float) * g->layout.total);
    ssm_model_use_bf16(cpu); /* its bf16 decode copy, of the trained weights */
    ssm_state *sc = ssm_state_new(cpu, B);
    decode(cpu, sc, pre, P, tok, steps, ref, "0");
    const double e = worst_rel(after, ref, steps, B, V), moved = worst_rel(before, ref, steps, B, V);
    EXPECT(e <= 1e-5, "after training, fused logits differ from the CPU's by %.3g", e);
    EXPECT(moved > 1e-3, "training did not change the logits (%.3g): the check cannot fail", moved);
    printf("  # after 3 AdamW steps: vs CPU %.3g (before them: %.3g)\n", e, moved);
    ssm_state_free(s), ssm_state_free(sc);
    ssm_model_free(g), ssm_model_free(cpu);
    free(pre), free(tok), free(before), free(after), free(ref), free(bt), free(tg);
    TEST_END();
}

/* int8 on the GPU: a model with other layers is refused when it moves there, more than 8 sequences at the step */
static void test_int8_limits(void) {
    TEST_BEGIN("int8 decode on the GPU: Mamba-1 models only, at most 64 sequences, one-line errors");
    ssm_config c = config_of(64, 2, 16, 0);
    strcpy(c.layer_pattern, "ma");
    c.attention.n_heads = 4, c.attention.head_dim = 16;
    ssm_model *h = ssm_model_new(&c, 3);
    EXPECT(ssm_model_use_int8(h) == 0, "use_int8 on the CPU: %s", ssm_last_error());
    EXPECT(ssm_model_set_device(h, "cuda") != 0 && strstr(ssm_last_error(), "all Mamba-1, all Mamba-2"),
           "a hybrid with int8 moved to the GPU (%s)", ssm_last_error());
    ssm_model_free(h);
    ssm_config p = config_of(64, 2, 16, 0);
    ssm_model *m = model_on(&p, 4, 2, "cuda");
    ssm_state *s = ssm_state_new(m, 65);
    int tok[65] = {0};
    float *lg = xmalloc(sizeof(float) * 65 * p.vocab_size);
    EXPECT(ssm_step(m, s, tok, lg) != 0 && strstr(ssm_last_error(), "takes 1 to 64 sequences"),
           "int8 step of 65 sequences: %s", ssm_last_error());
    ssm_state_free(s), ssm_model_free(m), free(lg);
    TEST_END();
}

int main(void) {
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA fused decode: %s\n", why);
        return 0;
    }
    if (getenv("DECODE_TEST_QUICK")) { /* one case of each form, for compute-sanitizer (slow under it) */
        test_against_op_by_op(config_of(64, 2, 16, 1), 2, 1, 3);
        test_against_op_by_op(config_of(64, 2, 16, 0), 16, 2, 2);
        test_against_op_by_op(config_m2(64, 2, 32, 16, 2, 1, 0), 1, 0, 3);
        test_against_op_by_op(config_m2(64, 2, 32, 16, 2, 0, 0), 24, 1, 2);
        test_transformer(config_t(64, 2, "af", 4, 2, 16, 0, 10000.0f, 0, 128), 2, 0, 40, 3);
        return test_failures ? 1 : 0;
    }
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        test_against_op_by_op(config_of(64, 3, 16, 1), 1, bf16, 24);
        test_against_op_by_op(config_of(64, 3, 16, 0), 3, bf16, 16);
        test_against_op_by_op(config_of(64, 2, 12, 1), 8, bf16, 12);
    }
    test_against_op_by_op(config_of(768, 2, 16, 0), 1, 1, 8);
    test_against_op_by_op(config_of(768, 2, 16, 0), 2, 0, 6);
    test_against_op_by_op(config_of(64, 3, 16, 1), 1, 2, 12);
    test_against_op_by_op(config_of(64, 2, 16, 0), 3, 2, 8);
    test_against_op_by_op(config_of(768, 2, 16, 0), 1, 2, 6);
    for (int wt = 1; wt <= 2; wt++) { /* the tensor-core form */
        test_against_op_by_op(config_of(64, 2, 16, 1), 16, wt, 8);
        test_against_op_by_op(config_of(64, 2, 16, 0), 40, wt, 6);
        test_against_op_by_op(config_of(768, 2, 16, 0), 64, wt, 4);
    }
    /* Mamba-2: the mamba2-130m layer shape (d_state 128, heads of 64) and small odd ones */
    test_against_op_by_op(config_m2(64, 3, 32, 16, 2, 1, 0), 1, 0, 16);
    test_against_op_by_op(config_m2(64, 2, 48, 16, 1, 0, 0.05f), 3, 0, 12);
    test_against_op_by_op(config_m2(64, 2, 32, 16, 2, 1, 0), 2, 1, 8);
    test_against_op_by_op(config_m2(64, 2, 32, 8, 4, 0, 0), 1, 2, 8);
    test_against_op_by_op(config_m2(64, 2, 32, 16, 2, 0, 0), 24, 1, 6);
    test_against_op_by_op(config_m2(768, 2, 128, 64, 1, 0, 0), 1, 0, 6);
    test_against_op_by_op(config_m2(768, 2, 128, 64, 1, 0, 0), 1, 1, 6);
    test_against_op_by_op(config_m2(768, 2, 128, 64, 1, 0, 0), 64, 1, 3);
    /* Transformers: keys past 32 (several splits), beyond a window; the t768x12 layer shape */
    test_transformer(config_t(64, 4, "af", 4, 4, 16, 0, 10000.0f, 0, 128), 1, 0, 70, 8);
    test_transformer(config_t(64, 3, "aaf", 4, 2, 16, 24, 0.0f, 1, 96), 3, 0, 40, 6);
    test_transformer(config_t(64, 4, "fa", 4, 1, 32, 40, 10000.0f, 0, 64), 8, 0, 75, 4);
    test_transformer(config_t(64, 2, "af", 4, 2, 16, 0, 10000.0f, 0, 128), 2, 1, 0, 40);
    test_transformer(config_t(64, 2, "af", 4, 1, 32, 20, 500.0f, 1, 64), 5, 2, 0, 36);
    test_transformer(config_t(768, 2, "af", 12, 12, 64, 0, 10000.0f, 0, 2048), 1, 0, 100, 4);
    test_transformer(config_t(768, 2, "af", 12, 12, 64, 0, 10000.0f, 0, 2048), 1, 1, 0, 4);
    test_transformer(config_t(768, 2, "af", 12, 12, 64, 0, 10000.0f, 0, 2048), 4, 2, 0, 4);
    test_transformer_limits();
    test_fallback(9, 0);
    test_fallback(65, 1);
    test_int8_limits();
    test_after_training();
    return test_failures ? 1 : 0;
}
