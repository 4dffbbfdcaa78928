/* The whole model on the CUDA backend against the same model on the CPU backend (one model definition, two
 * op tables): training-forward logits and loss, every parameter gradient, ten AdamW training steps; on the
 * GPU alone: step-by-step decode equals the sequence forward, two runs are bitwise equal, and a run stopped,
 * saved, reloaded and resumed equals the uninterrupted run bitwise (losses, weights, optimizer state); a synthetic
 * task's validation (loss and accuracy) equals the CPU's scoring of its checkpoint. Mamba-1, Mamba-2 (M, Mmaf),
 * attention and MLP models (af, maf; in bf16 af and afma through the flash kernels).
 * Tolerances (float32 both sides, different GEMM and reduction orders): logits and loss within 1e-5 of the
 * tensor's scale, gradients within 1e-4 of each tensor's scale, ten-step losses within 1e-4 relative. Models with
 * attention and MLP layers ("af", "maf"): logits and gradients within 1e-4, decode equal to the forward on CUDA.
 * Prints "skip - ..." where there is no GPU. */
#include "test.h"
#include "causal_check.h"
#include "seek_check.h"
#include "run_compare.h"
#include "backend/backend.h"
#include "common.h"
#include "io/fileio.h"
#include "model.h"
#include "ops/ops_cuda.h"
#include "optim.h"

#include <string.h>
#include <unistd.h>

/* d_model 64: big enough that the bf16 GEMMs of in_proj and out_proj take the convert-to-bf16 path (every
 * dimension >= 64), small enough for odd shapes elsewhere. */
static ssm_config small_config(int use_bias, int tie) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 64, c.n_layer = 3, c.mamba1.d_state = 16, c.mamba1.use_bias = use_bias, c.tie_embeddings = tie;
    return c;
}

/* Mamba-2 at d_model 64 (pattern "M", or a hybrid such as "Mmaf" with Mamba-1, attention and MLP layers): 8 heads of
 * 16 in 2 groups, d_state 32, chunks of 16 (the batches' 37 and 32 positions cross them, the last chunk partial). */
static ssm_config mamba2_config(const char *pattern, int n_layer, int use_bias, int tie) {
    ssm_config c = small_config(use_bias, tie);
    strcpy(c.layer_pattern, pattern);
    c.n_layer = n_layer;
    c.mamba2.d_state = 32, c.mamba2.head_dim = 16, c.mamba2.n_groups = 2, c.mamba2.chunk_size = 16;
    c.mamba2.use_bias = use_bias;
    c.attention.n_heads = 4, c.attention.head_dim = 16, c.attention.n_kv_heads = 2;
    return c;
}

/* 1 when a model of c moves to the GPU; else 0, after "skip - name: why" where the CUDA backend lacks a kernel the
 * config's kinds need (the test runs once it exists), or a failure of the test for any other refusal. */
static int cuda_takes(const ssm_config *c, const char *name) {
    ssm_model *m = ssm_model_new(c, 1);
    const int ok = m && ssm_model_set_device(m, "cuda") == 0;
    if (!ok && strstr(ssm_last_error(), " kernel; use --device cpu")) {
        printf("skip - %s: %s\n", name, ssm_last_error());
    } else if (!ok) {
        TEST_BEGIN(name);
        EXPECT(0, "the model does not move to the GPU: %s", ssm_last_error());
        TEST_END();
    }
    ssm_model_free(m);
    return ok;
}

static void random_batch(int *tok, int *tgt, int n, int V, uint64_t seed) {
    rng_t r = {seed};
    for (int i = 0; i < n; i++) {
        tok[i] = (int)(rng_next(&r) % V);
        tgt[i] = i % 11 == 5 ? -1 : (int)(rng_next(&r) % V); /* some ignored targets */
    }
}

static float *download_floats(const ssm_model *m, const float *p, size_t n) {
    float *h = xmalloc(sizeof(float) * n);
    m->be->download(h, p, sizeof(float) * n);
    return h;
}

/* bf16: mixed precision on the GPU against the float32 CPU, with bf16's tolerances (loss 1e-2 relative,
 * logits 2e-2 and gradients 5e-2 of their scale: bf16 keeps 8 bits of mantissa). */
static void test_forward_backward_of(ssm_config c, int bf16) {
    char name[320];
    snprintf(name, sizeof name, "CUDA%s model = CPU model: logits, loss and every gradient (%s, bias %d, tied %d)",
             bf16 ? " bf16" : "", c.layer_pattern, strchr(c.layer_pattern, 'M') ? c.mamba2.use_bias : c.mamba1.use_bias,
             c.tie_embeddings);
    if (!cuda_takes(&c, name)) return;
    TEST_BEGIN(name);
    const double tol_loss = bf16 ? 1e-2 : 1e-5, tol_logits = bf16 ? 2e-2 : 1e-5, tol_grad = bf16 ? 5e-2 : 1e-4;
    ssm_model *cpu = ssm_model_new(&c, 7), *gpu = ssm_model_new(&c, 7);
    if (bf16) ssm_model_use_bf16(gpu);
    EXPECT(ssm_model_set_device(gpu, "cuda") == 0, "set_device: %s", ssm_last_error());
    EXPECT(!strcmp(gpu->be->precision, bf16 ? "bf16" : "fp32"), "precision %s", gpu->be->precision);
    const int B = 3, T = 37, V = c.vocab_size, rows = B * T;
    int *tok = xmalloc(sizeof(int) * rows), *tgt = xmalloc(sizeof(int) * rows);
    random_batch(tok, tgt, rows, V, 11);
    double lc = model_train_forward(cpu, tok, tgt, B, T), lg = model_train_forward(gpu, tok, tgt, B, T);
    EXPECT(fabs(lc - lg) <= tol_loss * fabs(lc), "loss %.9g (CUDA) vs %.9g (CPU)", lg, lc);
    float *logits = download_floats(gpu, gpu->acts.logits, (size_t)rows * V);
    double e = test_rel_err(logits, cpu->acts.logits, (size_t)rows * V);
    EXPECT(e <= tol_logits, "logits differ by %.3g of their scale", e);
    printf("  # loss %.9g vs %.9g; logits rel err %.3g\n", lg, lc, e);
    free(logits);
    model_zero_grad(cpu), model_zero_grad(gpu);
    model_train_backward(cpu, 1.0f), model_train_backward(gpu, 1.0f);
    float *dw = download_floats(gpu, gpu->dw, cpu->layout.total);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < cpu->layout.n; i++) {
        const param_info *p = &cpu->layout.items[i];
        double ei = test_rel_err(dw + p->offset, cpu->dw + p->offset, p->numel);
        EXPECT(ei <= tol_grad, "gradient of %s differs by %.3g of its scale", p->name, ei);
        if (ei > worst) worst = ei, worst_name = p->name;
    }
    printf("  # worst gradient rel err %.3g (%s)\n", worst, worst_name);
    free(dw), free(tok), free(tgt);
    ssm_model_free(cpu), ssm_model_free(gpu);
    TEST_END();
}
static void test_forward_backward(int use_bias, int tie, int bf16) {
    test_forward_backward_of(small_config(use_bias, tie), bf16);
}

/* Ten AdamW steps (clipping on) on fresh batches; returns the losses in out[10]. */
static void train_steps(ssm_model *m, double *out, int n) {
    const int B = 4, T = 32, rows = B * T;
    ssm_optim_config oc;
    ssm_optim_config_default(&oc);
    oc.warmup = 2, oc.steps = n, oc.lr = 3e-3f;
    adamw_state opt;
    adamw_init(&opt, m);
    int *tok = xmalloc(sizeof(int) * rows), *tgt = xmalloc(sizeof(int) * rows);
    for (int s = 0; s < n; s++) {
        random_batch(tok, tgt, rows, m->cfg.vocab_size, 100 + s);
        for (int i = 0; i < rows; i++) tgt[i] = tok[i] % 7 + 'a'; /* something learnable */
        model_zero_grad(m);
        out[s] = model_train_forward(m, tok, tgt, B, T);
        model_train_backward(m, 1.0f);
        grad_clip(m, oc.clip);
        adamw_update(m, &opt, &oc, lr_at(&oc, s));
    }
    free(tok), free(tgt);
    adamw_free(&opt);
}

/* float32: the CPU's losses within 1e-4; bf16 (mixed precision): within 2e-2. Both bitwise repeatable. */
static void test_training_steps_of(ssm_config c, int bf16) {
    char name[320];
    snprintf(name, sizeof name, "%s (%s)",
             bf16 ? "ten CUDA bf16 training steps follow the CPU's float32 losses (2e-2), bitwise repeatable"
                  : "ten CUDA training steps give the CPU's losses (1e-4) and are bitwise repeatable",
             c.layer_pattern);
    if (!cuda_takes(&c, name)) return;
    TEST_BEGIN(name);
    const double tol = bf16 ? 2e-2 : 1e-4;
    ssm_model *cpu = ssm_model_new(&c, 3), *g1 = ssm_model_new(&c, 3), *g2 = ssm_model_new(&c, 3);
    if (bf16) ssm_model_use_bf16(g1), ssm_model_use_bf16(g2);
    EXPECT(!ssm_model_set_device(g1, "cuda") && !ssm_model_set_device(g2, "cuda"), "set_device: %s",
           ssm_last_error());
    double lc[10], l1[10], l2[10];
    train_steps(cpu, lc, 10), train_steps(g1, l1, 10), train_steps(g2, l2, 10);
    double worst = 0;
    for (int s = 0; s < 10; s++) {
        double e = fabs(l1[s] - lc[s]) / fabs(lc[s]);
        EXPECT(e <= tol, "step %d: loss %.9g (CUDA) vs %.9g (CPU)", s + 1, l1[s], lc[s]);
        EXPECT(!memcmp(&l1[s], &l2[s], sizeof l1[s]), "step %d: two CUDA runs differ (%.17g, %.17g)", s + 1, l1[s],
               l2[s]);
        if (e > worst) worst = e;
    }
    EXPECT(lc[9] < lc[0], "the loss did not fall (%.4f -> %.4f)", lc[0], lc[9]);
    model_sync_host(g1), model_sync_host(g2);
    EXPECT(!memcmp(g1->w, g2->w, sizeof(float) * g1->layout.total), "two CUDA runs end with different weights");
    printf("  # losses %.5f -> %.5f; worst step rel err %.3g\n", l1[0], l1[9], worst);
    ssm_model_free(cpu), ssm_model_free(g1), ssm_model_free(g2);
    TEST_END();
}
static void test_training_steps(int bf16) { test_training_steps_of(small_config(0, 1), bf16); }

static void test_step_equals_forward_of(ssm_config c) {
    char name[320];
    snprintf(name, sizeof name, "CUDA decode step by step equals the sequence forward (1e-5), and the CPU's logits (%s)",
             c.layer_pattern);
    if (!cuda_takes(&c, name)) return;
    TEST_BEGIN(name);
    ssm_model *cpu = ssm_model_new(&c, 5), *m = ssm_model_new(&c, 5);
    EXPECT(ssm_model_set_device(m, "cuda") == 0, "set_device: %s", ssm_last_error());
    const int B = 2, T = 29, V = c.vocab_size;
    int *tok = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    random_batch(tok, tgt, B * T, V, 9);
    float *seq = xmalloc(sizeof(float) * B * T * V), *ref = xmalloc(sizeof(float) * B * T * V);
    float *step = xmalloc(sizeof(float) * B * V);
    ssm_state *s = ssm_state_new(m, B), *sc = ssm_state_new(cpu, B);
    ssm_forward(m, s, tok, T, seq, 0);
    ssm_forward(cpu, sc, tok, T, ref, 0);
    double e_cpu = test_rel_err(seq, ref, (size_t)B * T * V);
    EXPECT(e_cpu <= 1e-5, "sequence logits differ from the CPU's by %.3g", e_cpu);
    ssm_state_reset(s);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        int cur[2] = {tok[t], tok[T + t]};
        ssm_step(m, s, cur, step);
        for (int b = 0; b < B; b++) {
            double e = test_rel_err(step + (size_t)b * V, seq + ((size_t)b * T + t) * V, V);
            if (e > worst) worst = e;
        }
    }
    EXPECT(worst <= 1e-5, "step logits differ from the sequence forward by %.3g", worst);
    /* prefill with last_only, then continue: the state carried across calls */
    ssm_state_reset(s);
    float *last = xmalloc(sizeof(float) * B * V);
    int *half = xmalloc(sizeof(int) * B * 20);
    for (int b = 0; b < B; b++) memcpy(half + b * 20, tok + b * T, sizeof(int) * 20);
    ssm_forward(m, s, half, 20, last, 1);
    double e_last = 0;
    for (int b = 0; b < B; b++) {
        double e = test_rel_err(last + (size_t)b * V, seq + ((size_t)b * T + 19) * V, V);
        if (e > e_last) e_last = e;
    }
    EXPECT(e_last <= 1e-5, "last_only prefill differs by %.3g", e_last);
    printf("  # vs CPU %.3g; step vs sequence %.3g; prefill %.3g\n", e_cpu, worst, e_last);
    ssm_state_free(s), ssm_state_free(sc);
    free(tok), free(tgt), free(seq), free(ref), free(step), free(last), free(half);
    ssm_model_free(cpu), ssm_model_free(m);
    TEST_END();
}
static void test_step_equals_forward(void) { test_step_equals_forward_of(small_config(1, 0)); }

/* The training forward against scoring at a training shape (8 x 2048 at d_model 384: the chunks, checkpoints and
 * time segments of the experiments' runs; one sequence at a time, as ssm eval scores, cuts time finer): test_causal
 * (causal_check.h) in float32 (1e-5 of scale) and in bf16 mixed precision (2e-2: the scoring forward against the lean
 * training forward), the float32 training forward's logits against the CPU's (1e-4) and the bf16 one's against them
 * (2e-2: a model trained in bf16 is scored in float32 by ssm eval without --bf16). */
static void test_training_shape(const char *pattern) {
    char name[200];
    snprintf(name, sizeof name, "CUDA \"%s\" at 8 x 2048, d_model 384, float32 and bf16: the training forward = "
             "scoring with a state = the CPU, and causal", pattern);
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 384, c.n_layer = (int)strlen(pattern), c.tie_embeddings = 1;
    strcpy(c.layer_pattern, pattern);
    c.attention.n_heads = 6, c.attention.head_dim = 64, c.attention.n_kv_heads = 6;
    if (!cuda_takes(&c, name)) return;
    TEST_BEGIN(name);
    const int B = 8, T = 2048, t0 = 1500;
    const size_t nl = (size_t)B * T * c.vocab_size;
    ssm_model *m[3] = {ssm_model_new(&c, 21), ssm_model_new(&c, 21), ssm_model_new(&c, 21)}; /* CPU, GPU, GPU bf16 */
    causal_result r[3] = {{0}};
    for (int k = 0; k < 3; k++) {
        EXPECT(m[k], "model: %s", ssm_last_error());
        if (!m[k]) continue;
        test_perturb_weights(m[k], 5);
        if (k == 2) ssm_model_use_bf16(m[k]);
        EXPECT(k == 0 || ssm_model_set_device(m[k], "cuda") == 0, "set_device: %s", ssm_last_error());
        r[k] = test_causal(m[k], B, T, t0, 17); /* the same tokens in each */
    }
    for (int k = 1; k < 3; k++) {
        const double tol = k == 2 ? 2e-2 : 1e-5;
        EXPECT(r[k].e_score <= tol, "%s: the scoring forward's logits differ from the training forward's by %.3g",
               k == 2 ? "bf16" : "float32", r[k].e_score);
        EXPECT(r[k].e_one <= tol, "%s: one sequence at a time differs from the batch by %.3g",
               k == 2 ? "bf16" : "float32", r[k].e_one);
    }
    double e_cpu = 0, e_f32 = 0;
    if (r[0].train && r[1].train && r[2].train) {
        e_cpu = test_rel_err(r[1].train, r[0].train, nl);
        EXPECT(e_cpu <= 1e-4, "the training forward's logits differ from the CPU's by %.3g", e_cpu);
        e_f32 = test_rel_err(r[2].train, r[1].train, nl);
        EXPECT(e_f32 <= 2e-2, "the bf16 training forward's logits differ from float32's by %.3g", e_f32);
    }
    printf("  # scoring vs training: float32 %.3g, bf16 %.3g; one at a time vs batch %.3g, %.3g; vs CPU %.3g; bf16 vs "
           "float32 %.3g\n", r[1].e_score, r[2].e_score, r[1].e_one, r[2].e_one, e_cpu, e_f32);
    for (int k = 0; k < 3; k++) free(r[k].train), ssm_model_free(m[k]);
    TEST_END();
}

/* A model of attention / MLP / Mamba-1 layers (4 query heads of 16, n_kv key/value heads, a sliding window or 0). */
static ssm_config hybrid_config(const char *pattern, int n_layer, int n_kv, int window) {
    ssm_config c = small_config(0, 1);
    snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", pattern);
    c.n_layer = n_layer;
    c.attention.n_heads = 4, c.attention.head_dim = 16, c.attention.n_kv_heads = n_kv;
    c.attention.sliding_window = window;
    c.mlp.intermediate_size = 96;
    return c;
}

/* The bench's decode at a context without its prefill (tests/seek_check.h), on the GPU: the position the attention
 * kernels read on the device (decode graphs replay it) set by an upload. Within 1e-6: the cache's zeros from the
 * prefill's GEMMs may carry a sign the seek's do not (bitwise on the CPU). */
static void test_state_seek(void) {
    TEST_BEGIN("CUDA: a state moved to position N (no prefill) decodes as after a prefill of N tokens that cache "
               "zeros");
    ssm_config c = hybrid_config("af", 4, 2, 0);
    ssm_model *m = ssm_model_new(&c, 11);
    EXPECT(m, "model: %s", ssm_last_error());
    if (!m) return;
    memset(m->w + m->layout.items[m->emb].offset, 0, sizeof(float) * c.d_model); /* token 0's row: zeros */
    EXPECT(ssm_model_set_device(m, "cuda") == 0, "set_device: %s", ssm_last_error());
    const double e = seek_vs_zero_prefill(m, 300, 5);
    EXPECT(e >= 0 && e < 1e-6, "seek vs prefill: %s (%.2e)", e == -1 ? ssm_last_error() : "", e);
    ssm_model_free(m);
    TEST_END();
}

/* float32 on both sides: the training forward's loss and logits and every gradient against the CPU (1e-4 of
 * scale); then on the GPU, decode step by step (through the graph, reading its KV cache) equals the sequence
 * forward with a state (1e-5). */
static void test_hybrid(const char *pattern, int n_layer, int n_kv, int window) {
    char name[200];
    snprintf(name, sizeof name, "CUDA model \"%s\" (%d layers, %d kv heads of 4, window %d) = CPU model: logits, "
             "gradients; decode = forward", pattern, n_layer, n_kv, window);
    TEST_BEGIN(name);
    ssm_config c = hybrid_config(pattern, n_layer, n_kv, window);
    ssm_model *cpu = ssm_model_new(&c, 7), *gpu = ssm_model_new(&c, 7);
    EXPECT(cpu && gpu, "model: %s", ssm_last_error());
    if (!cpu || !gpu) return;
    EXPECT(ssm_model_set_device(gpu, "cuda") == 0, "set_device: %s", ssm_last_error());
    const int B = 3, T = 37, V = c.vocab_size, rows = B * T;
    int *tok = xmalloc(sizeof(int) * rows), *tgt = xmalloc(sizeof(int) * rows);
    random_batch(tok, tgt, rows, V, 13);
    const double lc = model_train_forward(cpu, tok, tgt, B, T), lg = model_train_forward(gpu, tok, tgt, B, T);
    EXPECT(fabs(lc - lg) <= 1e-5 * fabs(lc), "loss %.9g (CUDA) vs %.9g (CPU)", lg, lc);
    float *logits = download_floats(gpu, gpu->acts.logits, (size_t)rows * V);
    const double e = test_rel_err(logits, cpu->acts.logits, (size_t)rows * V);
    EXPECT(e <= 1e-4, "logits differ by %.3g of their scale", e);
    free(logits);
    model_zero_grad(cpu), model_zero_grad(gpu);
    model_train_backward(cpu, 1.0f), model_train_backward(gpu, 1.0f);
    float *dw = download_floats(gpu, gpu->dw, cpu->layout.total);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < cpu->layout.n; i++) {
        const param_info *p = &cpu->layout.items[i];
        const double ei = test_rel_err(dw + p->offset, cpu->dw + p->offset, p->numel);
        EXPECT(ei <= 1e-4, "gradient of %s differs by %.3g of its scale", p->name, ei);
        if (ei > worst) worst = ei, worst_name = p->name;
    }
    free(dw);
    /* decode on the GPU: the sequence forward with a state (a prefill through the cache), then step by step */
    float *seq = xmalloc(sizeof(float) * rows * V), *step = xmalloc(sizeof(float) * B * V);
    ssm_state *s = ssm_state_new(gpu, B);
    EXPECT(s, "state: %s", ssm_last_error());
    double e_step = 0;
    if (s) {
        EXPECT(ssm_forward(gpu, s, tok, T, seq, 0) == 0, "forward: %s", ssm_last_error());
        ssm_state_reset(s);
        int cur[3];
        for (int t = 0; t < T; t++) {
            for (int b = 0; b < B; b++) cur[b] = tok[b * T + t];
            EXPECT(ssm_step(gpu, s, cur, step) == 0, "step %d: %s", t, ssm_last_error());
            for (int b = 0; b < B; b++) {
                const double es = test_rel_err(step + (size_t)b * V, seq + ((size_t)b * T + t) * V, V);
                if (es > e_step) e_step = es;
            }
        }
        EXPECT(e_step <= 1e-5, "step logits differ from the sequence forward by %.3g", e_step);
        ssm_state_free(s);
    }
    printf("  # loss %.9g vs %.9g; logits %.3g; worst gradient %.3g (%s); step vs sequence %.3g\n", lg, lc, e, worst,
           worst_name, e_step);
    free(seq), free(step), free(tok), free(tgt);
    ssm_model_free(cpu), ssm_model_free(gpu);
    TEST_END();
}

/* bf16 mixed precision with attention (the lean path: q | k | v, o and their gradients in bf16, the CUDA flash kernels
 * for head_dim 64) against the float32 CPU model, with bf16's tolerances (loss 1e-2 relative, logits 2e-2 and gradients
 * 5e-2 of their scale); two GPU runs bitwise equal (logits and every gradient); then on the GPU the model's inference
 * forward (float32 attention over its cache, in the same bf16 model) within 2e-2 of the training forward's logits. */
static void test_attention_bf16(const char *pattern, int n_kv, int window) {
    char name[200];
    snprintf(name, sizeof name, "CUDA bf16 model \"%s\" (2 heads of 64 on %d kv heads, window %d, T 150) = CPU model "
             "(bf16 tolerances), bitwise repeatable; prefill = training forward", pattern, n_kv, window);
    TEST_BEGIN(name);
    ssm_config c = hybrid_config(pattern, (int)strlen(pattern), n_kv, window);
    c.attention.n_heads = 2, c.attention.head_dim = 64;
    ssm_model *cpu = ssm_model_new(&c, 7), *g1 = ssm_model_new(&c, 7), *g2 = ssm_model_new(&c, 7);
    EXPECT(cpu && g1 && g2, "model: %s", ssm_last_error());
    if (!cpu || !g1 || !g2) return;
    ssm_model_use_bf16(g1), ssm_model_use_bf16(g2);
    EXPECT(!ssm_model_set_device(g1, "cuda") && !ssm_model_set_device(g2, "cuda"), "set_device: %s",
           ssm_last_error());
    const int B = 2, T = 150, V = c.vocab_size, rows = B * T;
    int *tok = xmalloc(sizeof(int) * rows), *tgt = xmalloc(sizeof(int) * rows);
    random_batch(tok, tgt, rows, V, 17);
    const double lc = model_train_forward(cpu, tok, tgt, B, T), l1 = model_train_forward(g1, tok, tgt, B, T),
                 l2 = model_train_forward(g2, tok, tgt, B, T);
    EXPECT(fabs(lc - l1) <= 1e-2 * fabs(lc), "loss %.9g (CUDA) vs %.9g (CPU)", l1, lc);
    EXPECT(!memcmp(&l1, &l2, sizeof l1), "two CUDA runs give different losses (%.17g, %.17g)", l1, l2);
    float *lg1 = download_floats(g1, g1->acts.logits, (size_t)rows * V), *lg2 = download_floats(g2, g2->acts.logits,
                                                                                              (size_t)rows * V);
    const double e = test_rel_err(lg1, cpu->acts.logits, (size_t)rows * V);
    EXPECT(e <= 2e-2, "logits differ by %.3g of their scale", e);
    EXPECT(!memcmp(lg1, lg2, sizeof(float) * rows * V), "two CUDA runs give different logits");
    model_zero_grad(cpu), model_zero_grad(g1), model_zero_grad(g2);
    model_train_backward(cpu, 1.0f), model_train_backward(g1, 1.0f), model_train_backward(g2, 1.0f);
    float *dw1 = download_floats(g1, g1->dw, cpu->layout.total), *dw2 = download_floats(g2, g2->dw, cpu->layout.total);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < cpu->layout.n; i++) {
        const param_info *p = &cpu->layout.items[i];
        const double ei = test_rel_err(dw1 + p->offset, cpu->dw + p->offset, p->numel);
        EXPECT(ei <= 5e-2, "gradient of %s differs by %.3g of its scale", p->name, ei);
        if (ei > worst) worst = ei, worst_name = p->name;
    }
    EXPECT(!memcmp(dw1, dw2, sizeof(float) * cpu->layout.total), "two CUDA runs give different gradients");
    /* inference on the same model: a prefill through the cache (float32 attention, lean backend) */
    float *seq = xmalloc(sizeof(float) * rows * V);
    ssm_state *s = ssm_state_new(g1, B);
    double e_pre = 0;
    EXPECT(s && ssm_forward(g1, s, tok, T, seq, 0) == 0, "forward: %s", ssm_last_error());
    if (s) e_pre = test_rel_err(seq, lg1, (size_t)rows * V);
    EXPECT(e_pre <= 2e-2, "the prefill's logits differ from the training forward's by %.3g", e_pre);
    ssm_state_free(s);
    printf("  # loss %.9g vs %.9g; logits %.3g; worst gradient %.3g (%s); prefill vs training forward %.3g\n", l1, lc,
           e, worst, worst_name, e_pre);
    free(seq), free(lg1), free(lg2), free(dw1), free(dw2), free(tok), free(tgt);
    ssm_model_free(cpu), ssm_model_free(g1), ssm_model_free(g2);
    TEST_END();
}

/* c: a two-layer config (Mamba-1's small one, or Mamba-2's); the runs go into dir/<pattern>_a and _b. */
static void test_resume_bitwise_of(const char *dir, ssm_config c) {
    char name[320];
    snprintf(name, sizeof name,
             "CUDA training: stop, save, reload, resume == uninterrupted (bitwise), and a CPU reload agrees (%s)",
             c.layer_pattern);
    TEST_BEGIN(name);
    char data[512], a[512], b[512];
    snprintf(data, sizeof data, "%s/pattern.txt", dir);
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 4000; i++) fputs(i % 3 ? "abcabd " : "the cat sat. ", f);
    fclose(f);
    snprintf(a, sizeof a, "%s/%s_a", dir, c.layer_pattern);
    snprintf(b, sizeof b, "%s/%s_b", dir, c.layer_pattern);
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = data, t.batch = 4, t.seq_len = 40, t.quiet = 1, t.eval_every = 5, t.eval_bytes = 3000;
    t.optim.steps = 14, t.optim.warmup = 3, t.device = "cuda";
    t.out_dir = a;
    EXPECT(ssm_train(&t, &c) == 0, "uninterrupted: %s", ssm_last_error());
    t.out_dir = b, t.stop_after = 6;
    EXPECT(ssm_train(&t, &c) == 0, "first part: %s", ssm_last_error());
    t.stop_after = 0, t.resume = 1;
    EXPECT(ssm_train(&t, &c) == 0, "resumed: %s", ssm_last_error());
    test_expect_same_run(a, b, 14);
    char pa[600];
    /* the GPU-trained checkpoint on the CPU: the same validation loss as on the GPU */
    snprintf(pa, sizeof pa, "%s/checkpoint", a);
    ssm_model *m = ssm_model_load(pa);
    EXPECT(m, "reload: %s", ssm_last_error());
    if (m) {
        int ids[300];
        for (int i = 0; i < 300; i++) ids[i] = "the cat sat. abcabd "[i % 20];
        double on_cpu = ssm_eval_stream(m, ids, 300, 64, 0);
        EXPECT(ssm_model_set_device(m, "cuda") == 0, "set_device: %s", ssm_last_error());
        double on_gpu = ssm_eval_stream(m, ids, 300, 64, 0);
        EXPECT(fabs(on_cpu - on_gpu) <= 1e-5 * fabs(on_cpu), "eval %.9g (CUDA) vs %.9g (CPU)", on_gpu, on_cpu);
        ssm_model_free(m);
    }
    TEST_END();
}

/* A synthetic task on the GPU (the answers' mask is the loss's ignore index; the accuracy argmax_hits_cuda): the
 * run's last validation equals the CPU's scoring of its checkpoint at the validation seed, and filler bytes train. */
static void test_task_and_filler(const char *dir) {
    TEST_BEGIN("CUDA --task: validation loss and accuracy equal the CPU's scoring of the checkpoint; --noise-rate trains");
    char out[512], metrics[600];
    snprintf(out, sizeof out, "%s/task", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.task = "mqar:seq=64,pairs=8,vocab=64", t.out_dir = out, t.batch = 16, t.quiet = 1, t.eval_every = 20;
    t.val_seqs = 100, t.optim.steps = 20, t.optim.warmup = 3, t.device = "cuda";
    ssm_config c = small_config(0, 1);
    EXPECT(ssm_train(&t, &c) == 0, "task run: %s", ssm_last_error());
    char *text;
    size_t len;
    double val_loss = NAN, val_acc = NAN;
    if (file_read_all(metrics, &text, &len) == 0) {
        char *p = strstr(text, "\"val_loss\": "), *q = strstr(text, "\"val_acc\": ");
        if (p && q) val_loss = atof(p + 12), val_acc = atof(q + 11);
        free(text);
    }
    ssm_model *m = ssm_model_load(out);
    ssm_task_score sc;
    EXPECT(m && ssm_eval_task(m, t.task, SSM_VALIDATION_SEED, 100, 16, 64, 0, &sc) == 0, "%s", ssm_last_error());
    EXPECT(fabs(sc.loss - val_loss) <= 1e-5 * val_loss && fabs(sc.accuracy - val_acc) <= 0.02,
           "CPU loss %.6f accuracy %.4f; the CUDA run's validation %.6f, %.4f", sc.loss, sc.accuracy, val_loss, val_acc);
    ssm_model_free(m);
    ssm_train_options_default(&t);
    char text_path[512];
    snprintf(text_path, sizeof text_path, "%s/text.txt", dir);
    char buf[8000];
    for (int i = 0; i < 8000; i++) buf[i] = "the cat sat on the mat. "[i % 24];
    CHECK(file_write_atomic(text_path, buf, sizeof buf) == 0, "%s", ssm_last_error());
    snprintf(out, sizeof out, "%s/noise", dir);
    t.data_path = text_path, t.out_dir = out, t.noise_rate = 0.5, t.batch = 4, t.seq_len = 64, t.quiet = 1;
    t.eval_every = 30, t.optim.steps = 30, t.optim.warmup = 3, t.device = "cuda";
    EXPECT(ssm_train(&t, &c) == 0, "filler run: %s", ssm_last_error());
    TEST_END();
}

static void test_errors(void) {
    TEST_BEGIN("unsupported shapes and unknown devices are one-line errors");
    ssm_config c = small_config(0, 1);
    c.mamba1.d_state = 64;
    ssm_model *m = ssm_model_new(&c, 1);
    EXPECT(ssm_model_set_device(m, "cuda") == -1 &&
               !strcmp(ssm_last_error(), "d_state 64: the CUDA scan supports d_state <= 32; use --device cpu"),
           "d_state 64 on cuda: %s", ssm_last_error());
    EXPECT(!strcmp(ssm_model_device(m), "cpu"), "the model left the CPU: %s", ssm_model_device(m));
    EXPECT(ssm_model_set_device(m, "tpu") == -1 && strstr(ssm_last_error(), "unknown device"), "tpu: %s",
           ssm_last_error());
    ssm_model_free(m);
    TEST_END();
}

/* The tables and their answers need no GPU: every op has a kernel in both CUDA tables, and an entry left NULL
 * is refused by backend_check_op by name; the scan's and the attention's limits are asked through the mixers as
 * ssm_model_set_device asks them, and answer in the user's words; Mamba-2 is taken. */
static void test_tables(void) {
    extern const backend backend_cuda, backend_cuda_bf16;
    TEST_BEGIN("CUDA tables: every op has a kernel, a missing one is refused by name; the scan's and "
               "attention's limits are the backend's answer; Mamba-2 is taken");
    const backend *tables[2] = {&backend_cuda, &backend_cuda_bf16};
    for (int k = 0; k < 2; k++)
        for (int op = 0; op < BACKEND_OP_COUNT; op++)
            EXPECT(backend_has_op(tables[k], op), "%s %s: no kernel", tables[k]->precision, backend_op_names[op]);
    backend lacking = backend_cuda;
    lacking.conv1d_silu_step = NULL;
    EXPECT(backend_check_op(&lacking, BACKEND_OP_conv1d_silu_step, NULL) == -1 &&
               strstr(ssm_last_error(), "conv1d_silu_step"),
           "a NULL entry: %s", ssm_last_error());
    ssm_config c = small_config(0, 1);
    for (int k = 0; k < 2; k++) {
        c.mamba1.d_state = 32;
        EXPECT(mixer_mamba1.check(&c, tables[k]) == 0, "d_state 32 refused: %s", ssm_last_error());
        c.mamba1.d_state = 33;
        EXPECT(mixer_mamba1.check(&c, tables[k]) == -1 &&
                   !strcmp(ssm_last_error(), "d_state 33: the CUDA scan supports d_state <= 32; use --device cpu"),
               "d_state 33: %s", ssm_last_error());
        c.attention.n_heads = 2, c.attention.n_kv_heads = 1, c.attention.head_dim = 256;
        EXPECT(mixer_attention.check(&c, tables[k]) == 0, "attention, head_dim 256 refused: %s", ssm_last_error());
        c.attention.head_dim = 258;
        EXPECT(mixer_attention.check(&c, tables[k]) == -1 &&
                   !strcmp(ssm_last_error(),
                           "head_dim 258: the CUDA attention supports head_dim <= 256; use --device cpu"),
               "attention, head_dim 258: %s", ssm_last_error());
        const ssm_config m2 = mamba2_config("M", 2, 0, 1);
        EXPECT(mixer_mamba2.check(&m2, tables[k]) == 0, "Mamba-2 refused: %s", ssm_last_error());
    }
    TEST_END();
}

int main(void) {
    test_tables();
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA whole model: %s\n", why);
        return 0;
    }
    char dir[] = "/tmp/ssm_test_cuda_model_XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    test_forward_backward(0, 1, 0);
    test_forward_backward(1, 0, 0);
    test_forward_backward(0, 1, 1);
    test_forward_backward(1, 0, 1);
    test_training_steps(0);
    test_training_steps(1);
    test_step_equals_forward();
    test_training_shape("mm"); /* the experiments' shapes (docs/experiments/hybrid.md) */
    test_training_shape("maf");
    test_training_shape("MM");
    test_hybrid("af", 2, 2, 0);   /* a Transformer, grouped-query */
    test_hybrid("maf", 3, 1, 9);  /* a hybrid: multi-query, a sliding window shorter than the sequence */
    test_state_seek();
    test_attention_bf16("af", 2, 0);   /* a Transformer in bf16: multi-head, the flash kernels */
    test_attention_bf16("afma", 1, 70); /* multi-query, a window shorter than T, beside a Mamba layer */
    /* Mamba-2, alone and in a hybrid */
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        test_forward_backward_of(mamba2_config("M", 3, 0, 1), bf16);
        test_forward_backward_of(mamba2_config("M", 2, 1, 0), bf16);
        test_forward_backward_of(mamba2_config("Mmaf", 4, 0, 1), bf16);
        test_training_steps_of(mamba2_config("M", 3, 0, 1), bf16);
        test_training_steps_of(mamba2_config("Mmaf", 4, 0, 1), bf16);
    }
    test_step_equals_forward_of(mamba2_config("M", 3, 1, 0));
    test_step_equals_forward_of(mamba2_config("Mmaf", 4, 1, 0));
    ssm_config m1 = small_config(0, 1);
    m1.n_layer = 2;
    test_resume_bitwise_of(dir, m1);
    test_resume_bitwise_of(dir, mamba2_config("M", 2, 0, 1));
    test_task_and_filler(dir);
    test_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_failures ? 1 : 0;
}
