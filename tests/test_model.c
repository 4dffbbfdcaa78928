/* Model-level behaviour: the sequence forward equals step-by-step decoding, training learns a
 * synthetic pattern, checkpoints round-trip bitwise, and a resumed run equals an uninterrupted one. */
#include "backend/profile.h"
#include "eval.h"
#include "io/fileio.h"
#include "model.h"
#include "test.h"
#include "run_compare.h"
#include "causal_check.h"
#include "seek_check.h"
#include "optim.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The CPU's backend table with lean activations (bf16, as a bf16 model's on a GPU): one instance, whose float32 and
 * bf16 forms are itself. */
static const backend *cpu_lean(void) {
    static backend lean;
    lean = backend_cpu;
    lean.lean_acts = 1, lean.fp32 = lean.bf16 = &lean;
    return &lean;
}

static ssm_model *random_model_bias(int d_model, int n_layer, uint64_t seed, int use_bias) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = d_model, c.n_layer = n_layer, c.mamba1.d_state = 8, c.mamba1.use_bias = use_bias;
    ssm_model *m = ssm_model_new(&c, seed);
    rng_t r = {seed + 1};
    for (size_t i = 0; i < m->layout.total; i++) m->w[i] += 0.05f * rng_normal(&r);
    return m;
}

static ssm_model *random_model(int d_model, int n_layer, uint64_t seed) {
    return random_model_bias(d_model, n_layer, seed, 0);
}

static void test_step_equals_forward(void) {
    TEST_BEGIN("sequence forward equals step-by-step decoding (every position, 2 sequences); positions count");
    enum { NS = 2, T = 150 };
    ssm_model *m = random_model(24, 3, 3);
    static int tok[NS * T];
    rng_t r = {8};
    for (int i = 0; i < NS * T; i++) tok[i] = (int)(rng_next(&r) % 256);
    float *full = xmalloc(sizeof(float) * NS * T * 256), *step = xmalloc(sizeof(float) * NS * T * 256);
    float *piece = xmalloc(sizeof(float) * NS * T * 256);
    ssm_state *s = ssm_state_new(m, NS);
    EXPECT(ssm_state_position(s) == 0, "a new state is at position %ld", ssm_state_position(s));
    ssm_forward(m, s, tok, T, full, 0);
    EXPECT(ssm_state_position(s) == T, "after %d positions the state says %ld", T, ssm_state_position(s));
    ssm_state_reset(s);
    EXPECT(ssm_state_position(s) == 0, "a reset state is at position %ld", ssm_state_position(s));
    for (int t = 0; t < T; t++) {
        int cur[NS];
        float lg[NS * 256];
        for (int b = 0; b < NS; b++) cur[b] = tok[b * T + t];
        ssm_step(m, s, cur, lg);
        for (int b = 0; b < NS; b++) memcpy(step + ((size_t)b * T + t) * 256, lg + b * 256, sizeof(float) * 256);
    }
    double e = test_rel_err(step, full, (size_t)NS * T * 256);
    EXPECT(e < 1e-5, "step vs forward: rel err %.2e", e);
    /* prefill a prefix through the scan, then continue in uneven chunks: the state carries exactly */
    ssm_state_reset(s);
    int cuts[] = {0, 70, 71, 100, T};
    for (int k = 0; k + 1 < 5; k++) {
        int len = cuts[k + 1] - cuts[k];
        int *ct = xmalloc(sizeof(int) * NS * len);
        float *cl = xmalloc(sizeof(float) * NS * len * 256);
        for (int b = 0; b < NS; b++) memcpy(ct + b * len, tok + b * T + cuts[k], sizeof(int) * len);
        ssm_forward(m, s, ct, len, cl, 0);
        for (int b = 0; b < NS; b++)
            memcpy(piece + ((size_t)b * T + cuts[k]) * 256, cl + (size_t)b * len * 256, sizeof(float) * len * 256);
        free(ct), free(cl);
    }
    e = test_rel_err(piece, full, (size_t)NS * T * 256);
    EXPECT(e < 1e-5, "chunked vs whole: rel err %.2e", e);
    EXPECT(ssm_state_position(s) == T, "after chunks of %d positions the state says %ld", T, ssm_state_position(s));
    ssm_state_free(s);
    free(full), free(step), free(piece);
    ssm_model_free(m);
    TEST_END();
}

/* test_causal (causal_check.h) on the CPU: every layer kind, sequences crossing Mamba-2's chunks and the scan's
 * checkpoints, weights off their initialization; the scoring forward equals the training forward (1e-5 of scale),
 * and again with lean activations (bf16, as a bf16 model's on a GPU: 2e-2). */
static void test_causal_cpu(const char *pattern) {
    char name[160];
    snprintf(name, sizeof name, "\"%s\": the training forward = scoring with a state, both causal", pattern);
    TEST_BEGIN(name);
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 64, c.n_layer = (int)strlen(pattern), c.mamba2.chunk_size = 32, c.mamba2.head_dim = 16;
    c.attention.n_heads = 4, c.attention.head_dim = 16, c.attention.n_kv_heads = 2;
    strcpy(c.layer_pattern, pattern);
    ssm_model *m = ssm_model_new(&c, 3);
    EXPECT(m, "model: %s", ssm_last_error());
    if (!m) return;
    test_perturb_weights(m, 9);
    for (int form = 0; form <= 1; form++) {
        m->be = form ? cpu_lean() : &backend_cpu;
        const double tol = form ? 2e-2 : 1e-5;
        const causal_result r = test_causal(m, 3, 300, 170, 4);
        EXPECT(r.e_score <= tol, "%s: the scoring forward's logits differ from the training forward's by %.3g",
               form ? "lean" : "plain", r.e_score);
        EXPECT(r.e_one <= 1e-5, "%s: one sequence at a time differs from the batch by %.3g", form ? "lean" : "plain",
               r.e_one);
        printf("  # %s: scoring vs training %.3g, one at a time %.3g\n", form ? "lean" : "plain", r.e_score, r.e_one);
        free(r.train);
    }
    m->be = &backend_cpu;
    ssm_model_free(m);
    TEST_END();
}

/* Training's validation (eval_split_streams) against its definition: each of the split's pieces read by the scoring
 * forward, attention models in windows of T from an empty state (ssm_eval_windows), a Mamba model's state carried
 * (ssm_eval_targets); filler targets (-1) unscored; fewer pieces than the batch (rows left unscored) and a short
 * last chunk. An attention model's validation runs the training forward: plain within 1e-6, lean (bf16) 1e-3 (seen:
 * 3e-5). */
static void test_validation_streams(const char *pattern) {
    char name[160];
    snprintf(name, sizeof name, "\"%s\": training's validation = the scoring forward over its pieces", pattern);
    TEST_BEGIN(name);
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 32, c.n_layer = (int)strlen(pattern), c.attention.n_heads = 2, c.attention.head_dim = 16;
    strcpy(c.layer_pattern, pattern);
    ssm_model *m = ssm_model_new(&c, 5);
    EXPECT(m, "model: %s", ssm_last_error());
    if (!m) return;
    test_perturb_weights(m, 11);
    enum { LEN = 700, T = 48, BATCH = 4 };
    static int tok[LEN], tgt[LEN];
    rng_t r = {17};
    for (int i = 0; i < LEN; i++) tok[i] = (int)(rng_next(&r) % 256);
    for (int i = 0; i < LEN; i++) tgt[i] = i + 1 < LEN && rng_next(&r) % 4 ? tok[i + 1] : -1;
    const size_t lens[] = {LEN, 120}; /* four pieces of 175 (chunks of 48 and a short one); two of 60 in a batch of 4 */
    for (int form = 0; form <= 1; form++)
        for (int k = 0; k < 2; k++) {
            m->be = form ? cpu_lean() : &backend_cpu;
            const size_t len = lens[k];
            const int streams = (int)(len / (T + 1)) < BATCH ? (int)(len / (T + 1)) : BATCH;
            const size_t seg = len / streams;
            const double got = eval_split_streams(m, tok, tgt, len, BATCH, T);
            m->be = &backend_cpu;
            double total = 0;
            long count = 0;
            for (int b = 0; b < streams; b++) {
                long n;
                total += model_state_grows(m) ? ssm_eval_windows(m, tok + b * seg, tgt + b * seg, seg - 1, T, T, 0, &n)
                                              : ssm_eval_targets(m, tok + b * seg, tgt + b * seg, seg - 1, T, 0, &n);
                count += n;
            }
            const double want = total / count, e = fabs(got - want) / want;
            EXPECT(e <= (form ? 1e-3 : 1e-6), "%s, %zu tokens in %d pieces: validation %.7f, the pieces read %.7f "
                   "(%.2g)", form ? "lean" : "plain", len, streams, got, want, e);
        }
    ssm_model_free(m);
    TEST_END();
}

/* A state caches A = -exp(A_log) per layer (mixer canonicalize); an optimizer step must invalidate it: after
 * one, an old state's next forward equals a fresh state's (bitwise: same ops, same order). */
static void test_state_sees_weight_updates(void) {
    TEST_BEGIN("a state's cached A follows optimizer steps (old state == fresh state after an update)");
    ssm_model *m = random_model(16, 2, 21);
    const int T = 9, V = m->cfg.vocab_size;
    int tok[9] = {1, 5, 9, 2, 6, 5, 3, 5, 8}, tgt[9] = {5, 9, 2, 6, 5, 3, 5, 8, 9};
    float *a = xmalloc(sizeof(float) * T * V), *b = xmalloc(sizeof(float) * T * V);
    ssm_state *old = ssm_state_new(m, 1);
    ssm_forward(m, old, tok, T, a, 0); /* caches A */
    ssm_state_reset(old);
    adamw_state opt;
    adamw_init(&opt, m);
    ssm_optim_config oc;
    ssm_optim_config_default(&oc);
    oc.weight_decay = 0.0f, oc.lr = 0.05f;
    model_zero_grad(m);
    model_train_forward(m, tok, tgt, 1, T);
    model_train_backward(m, 1.0f);
    adamw_update(m, &opt, &oc, oc.lr); /* moves A_log among everything else */
    ssm_state *fresh = ssm_state_new(m, 1);
    ssm_forward(m, old, tok, T, a, 0);
    ssm_forward(m, fresh, tok, T, b, 0);
    EXPECT(!memcmp(a, b, sizeof(float) * T * V), "the old state used stale A (max diff %.3g)",
           test_rel_err(a, b, (size_t)T * V));
    adamw_free(&opt);
    ssm_state_free(old), ssm_state_free(fresh);
    free(a), free(b);
    ssm_model_free(m);
    TEST_END();
}

/* The lean-activation path (CUDA's mixed precision) run on the CPU through a copy of the CPU table with
 * lean_acts set, so CI exercises its logic. Lean mode keeps in bf16 the tensors the reference's autocast does (the
 * norm output, xz, xs, dt, g, the mixer output; the gradients dy, dxs, ddt, dxz, du) and the scan's state
 * checkpoints; on the CPU, whose GEMMs are float32, that rounding is all that differs: the loss within 1e-4, every
 * gradient within 3e-2 of its scale (measured 2.1e-2, layer 0's A_log: upstream roundings add up; 1.1e-2 while
 * only the GEMM operands were rounded). With biases (dxz then stays float32 for in_proj's bias gradient) within
 * 5e-2, the GPU's bf16 model test's bound. */
/* A layer kind that takes float32 alone (bf16_acts 0) runs inside a bf16 model: the model converts at its boundary.
 * Mamba-1 declared float32-only stands in for such a kind. On the CPU, whose GEMMs are float32, a lean model of such
 * layers alone is bitwise the plain model; mixed with lean Mamba-1 layers it is within the lean path's bounds. */
static void test_float32_kind_in_bf16_model(void) {
    TEST_BEGIN("a float32-only layer kind in a bf16 (lean) model: converted at its boundary, bitwise plain alone");
    static mixer_kind f32_only;
    f32_only = mixer_mamba1;
    f32_only.bf16_acts = 0;
    const backend *lean = cpu_lean();
    enum { B = 2, T = 70, n = B * T, L = 3 };
    int tok[n], tgt[n];
    for (int i = 0; i < n; i++) tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 53 + 7) % 256;
    ssm_model *plain = random_model(24, L, 41);
    const double lp = model_train_forward(plain, tok, tgt, B, T);
    model_zero_grad(plain);
    model_train_backward(plain, 1.0f);
    for (int mixed = 0; mixed < 2; mixed++) {
        ssm_model *m = random_model(24, L, 41);
        for (int l = 0; l < L; l++)
            if (!mixed || l == 1) m->layers[l].kind = &f32_only; /* mixed: lean, float32-only, lean */
        m->be = lean;
        const double lm = model_train_forward(m, tok, tgt, B, T);
        model_zero_grad(m);
        model_train_backward(m, 1.0f);
        const double e = test_rel_err(m->dw, plain->dw, m->layout.total);
        if (!mixed) {
            EXPECT(lm == lp, "loss %.9g vs plain %.9g", lm, lp);
            EXPECT(e == 0, "gradients differ from the plain model's by %.3g", e);
            EXPECT(m->acts.normed32 != NULL, "no float32 input buffer for the float32-only layers");
        } else {
            EXPECT(fabs(lm - lp) <= 1e-4 * fabs(lp) && lm != lp, "mixed: loss %.9g vs plain %.9g", lm, lp);
            EXPECT(e > 0 && e <= 3e-2, "mixed: gradients differ from the plain ones by %.3g of their scale", e);
        }
        m->be = &backend_cpu;
        ssm_model_free(m);
    }
    ssm_model_free(plain);
    TEST_END();
}

static int hybrid_nemotron; /* random_hybrid's attention without rotary positions and relu2 MLP (NemotronH's) */
static int hybrid_bias; /* random_hybrid's Mamba-2 layers with in_proj and out_proj biases */

/* A model of attention / MLP / Mamba-1 layers: pattern, n_layer, key/value heads (of 4 query heads of 8), window. */
static ssm_model *random_hybrid(const char *pattern, int n_layer, int n_kv, int window, uint64_t seed) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 32, c.n_layer = n_layer, c.mamba1.d_state = 8;
    strcpy(c.layer_pattern, pattern);
    c.attention.n_heads = 4, c.attention.head_dim = 8, c.attention.n_kv_heads = n_kv;
    c.attention.sliding_window = window;
    c.mlp.intermediate_size = 48;
    /* Mamba-2: 4 heads of 16 in 2 groups, chunks of 16 (the sequences and pieces below cross and split them) */
    c.mamba2.d_state = 16, c.mamba2.head_dim = 16, c.mamba2.n_groups = 2, c.mamba2.chunk_size = 16;
    if (hybrid_nemotron) c.attention.rope_theta = 0.0f, c.mlp.hidden_act = SSM_MLP_RELU2;
    c.mamba2.use_bias = hybrid_bias;
    ssm_model *m = ssm_model_new(&c, seed);
    CHECK(m, "random_hybrid: %s", ssm_last_error());
    rng_t r = {seed + 1};
    for (size_t i = 0; i < m->layout.total; i++) m->w[i] += 0.05f * rng_normal(&r);
    return m;
}

/* Decode with a KV cache: step by step, and a prefill in pieces, equal the sequence forward (and the training
 * forward's loss). */
static void test_attention_decode(const char *pattern, int n_layer, int n_kv, int window) {
    char name[200];
    snprintf(name, sizeof name, "layers \"%s\" (%d kv heads of 4, window %d%s): step by step and prefill in pieces "
             "equal the sequence forward", pattern, n_kv, window, hybrid_nemotron ? ", no rope, relu2 MLP" : "");
    TEST_BEGIN(name);
    enum { NS = 2, T = 45, V = 256 };
    ssm_model *m = random_hybrid(pattern, n_layer, n_kv, window, 5);
    int tok[NS * T];
    rng_t r = {9};
    for (int i = 0; i < NS * T; i++) tok[i] = (int)(rng_next(&r) % V);
    float *full = xmalloc(sizeof(float) * NS * T * V), *step = xmalloc(sizeof(float) * NS * T * V);
    float *piece = xmalloc(sizeof(float) * NS * T * V);
    ssm_state *s = ssm_state_new_ctx(m, NS, T);
    EXPECT(ssm_forward(m, s, tok, T, full, 0) == 0, "forward: %s", ssm_last_error());
    ssm_state_reset(s);
    for (int t = 0; t < T; t++) {
        int cur[NS];
        float lg[NS * V];
        for (int b = 0; b < NS; b++) cur[b] = tok[b * T + t];
        EXPECT(ssm_step(m, s, cur, lg) == 0, "step %d: %s", t, ssm_last_error());
        for (int b = 0; b < NS; b++) memcpy(step + ((size_t)b * T + t) * V, lg + b * V, sizeof(float) * V);
    }
    double e = test_rel_err(step, full, (size_t)NS * T * V);
    EXPECT(e < 1e-5, "step vs forward: rel err %.2e", e);
    ssm_state_reset(s);
    const int cuts[] = {0, 20, 21, 33, T};
    for (int k = 0; k + 1 < 5; k++) {
        const int len = cuts[k + 1] - cuts[k];
        int ct[NS * T];
        float *cl = xmalloc(sizeof(float) * NS * len * V);
        for (int b = 0; b < NS; b++) memcpy(ct + b * len, tok + b * T + cuts[k], sizeof(int) * len);
        EXPECT(ssm_forward(m, s, ct, len, cl, 0) == 0, "piece %d: %s", k, ssm_last_error());
        for (int b = 0; b < NS; b++)
            memcpy(piece + ((size_t)b * T + cuts[k]) * V, cl + (size_t)b * len * V, sizeof(float) * len * V);
        free(cl);
    }
    e = test_rel_err(piece, full, (size_t)NS * T * V);
    EXPECT(e < 1e-5, "pieces vs whole: rel err %.2e", e);
    /* the training forward (no state) scores the same logits */
    int tgt[NS * T];
    for (int i = 0; i < NS * T; i++) tgt[i] = tok[(i + 1) % (NS * T)];
    double want = 0;
    for (int i = 0; i < NS * T; i++) {
        const float *lg = full + (size_t)i * V;
        double mx = lg[0], sum = 0;
        for (int v = 1; v < V; v++) mx = fmax(mx, lg[v]);
        for (int v = 0; v < V; v++) sum += exp(lg[v] - mx);
        want += mx + log(sum) - lg[tgt[i]];
    }
    want /= NS * T;
    const double got = model_train_forward(m, tok, tgt, NS, T);
    EXPECT(fabs(got - want) < 1e-5 * want, "training loss %.9g vs the decode forward's %.9g", got, want);
    ssm_state_free(s);
    free(full), free(step), free(piece);
    ssm_model_free(m);
    TEST_END();
}

/* The bench's decode at a context without its prefill (tests/seek_check.h) */
static void test_state_seek(void) {
    TEST_BEGIN("a state moved to position N (no prefill) decodes as after a prefill of N tokens that cache zeros");
    ssm_model *m = random_hybrid("af", 4, 2, 0, 11);
    memset(m->w + m->layout.items[m->emb].offset, 0, sizeof(float) * m->cfg.d_model); /* token 0's row: zeros */
    const double e = seek_vs_zero_prefill(m, 37, 5);
    EXPECT(e == 0, "seek vs prefill: %s", e == -1 ? ssm_last_error() : e == -2 ? "a seek past the state was accepted"
                                                                              : "the logits differ");
    if (e > 0) printf("  relative difference %.2e\n", e);
    ssm_model_free(m);
    TEST_END();
}

/* A forward past the cache is refused before anything runs: the state goes on as if it had not been called. */
static void test_state_capacity(void) {
    TEST_BEGIN("a forward past the attention cache is a one-line error and changes nothing; reset empties it");
    enum { V = 256 };
    ssm_model *m = random_hybrid("maf", 3, 2, 0, 7);
    ssm_model *mamba = random_model(16, 2, 3);
    int tok[12];
    for (int i = 0; i < 12; i++) tok[i] = (i * 31 + 5) % V;
    float *a = xmalloc(sizeof(float) * 12 * V), *b = xmalloc(sizeof(float) * 12 * V);
    ssm_state *s = ssm_state_new_ctx(m, 1, 10), *whole = ssm_state_new_ctx(m, 1, 10);
    EXPECT(ssm_forward(m, s, tok, 8, a, 0) == 0, "8 of 10: %s", ssm_last_error());
    EXPECT(ssm_forward(m, s, tok + 8, 3, a + 8 * V, 0) == -1 &&
               !strcmp(ssm_last_error(), "the attention cache holds 10 positions; this input needs 11: use a larger "
                                         "--max-context"),
           "11 of 10: %s", ssm_last_error());
    EXPECT(ssm_state_position(s) == 8, "a refused forward moved the state to %ld", ssm_state_position(s));
    EXPECT(ssm_forward(m, s, tok + 8, 2, a + 8 * V, 0) == 0, "10 of 10: %s", ssm_last_error());
    EXPECT(ssm_forward(m, whole, tok, 10, b, 0) == 0, "10 at once: %s", ssm_last_error());
    EXPECT(test_rel_err(a, b, 10 * V) < 1e-5, "after the refusal: rel err %.2e", test_rel_err(a, b, 10 * V));
    EXPECT(ssm_step(m, s, tok, a) == -1, "a step past the cache ran");
    int c;
    EXPECT(model_forward_loss(m, s, tok, tok, 1, &c, NULL) == -1, "model_forward_loss past the cache ran");
    ssm_state_reset(s);
    EXPECT(ssm_state_position(s) == 0 && ssm_forward(m, s, tok, 10, a, 0) == 0, "after a reset: %s", ssm_last_error());
    EXPECT(test_rel_err(a, b, 10 * V) == 0, "after a reset: rel err %.2e", test_rel_err(a, b, 10 * V));
    ssm_state_free(s), ssm_state_free(whole);
    /* a Mamba-only state does not grow: any number of positions */
    s = ssm_state_new_ctx(mamba, 1, 4);
    EXPECT(ssm_forward(mamba, s, tok, 12, a, 0) == 0 && ssm_forward(mamba, s, tok, 12, a, 0) == 0,
           "a Mamba-only state refused: %s", ssm_last_error());
    EXPECT(!model_state_grows(mamba) && model_state_grows(m), "model_state_grows");
    ssm_state_free(s);
    free(a), free(b);
    ssm_model_free(m), ssm_model_free(mamba);
    TEST_END();
}

/* A real hybrid (Mamba-1, attention and the MLP; with Mamba-2: all lean) on the lean table: within the lean path's
 * bounds of the plain model (the CPU's attention, SwiGLU and gated norm on bf16 operands widen them: their
 * arithmetic is float32 in both), and no float32 boundary buffer (every kind takes bf16). */
static void test_hybrid_in_bf16_model(const char *pattern) {
    char name[160];
    snprintf(name, sizeof name, "a \"%s\" model%s on the lean (bf16) table: loss within 1e-4, gradients within 3e-2 "
             "of the plain one", pattern, hybrid_bias ? " (Mamba-2 with biases)" : "");
    TEST_BEGIN(name);
    const int L = (int)strlen(pattern);
    const backend *lean = cpu_lean();
    enum { B = 2, T = 70, n = B * T };
    int tok[n], tgt[n];
    for (int i = 0; i < n; i++) tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 53 + 7) % 256;
    ssm_model *a = random_hybrid(pattern, L, 2, 0, 41), *b = random_hybrid(pattern, L, 2, 0, 41);
    b->be = lean;
    const double la = model_train_forward(a, tok, tgt, B, T), lb = model_train_forward(b, tok, tgt, B, T);
    EXPECT(fabs(la - lb) <= 1e-4 * fabs(la) && la != lb, "loss %.9g (lean) vs %.9g", lb, la);
    model_zero_grad(a), model_zero_grad(b);
    model_train_backward(a, 1.0f), model_train_backward(b, 1.0f);
    double worst = 0;
    for (int i = 0; i < a->layout.n; i++) {
        const param_info *p = &a->layout.items[i];
        const double e = test_rel_err(b->dw + p->offset, a->dw + p->offset, p->numel);
        EXPECT(e <= 3e-2, "gradient of %s differs by %.3g of its scale", p->name, e);
        if (e > worst) worst = e;
    }
    EXPECT(worst > 0 && !b->acts.normed32, "the lean path did not run, or converted at a layer's boundary");
    printf("  # worst gradient difference %.3g of scale\n", worst);
    b->be = &backend_cpu;
    ssm_model_free(a), ssm_model_free(b);
    TEST_END();
}

static void test_lean_activations(int use_bias) {
    const double tol = use_bias ? 5e-2 : 3e-2;
    TEST_BEGIN(use_bias ? "lean activations with in_proj/out_proj biases: loss within 1e-4, gradients within 5e-2"
                        : "lean activations (bf16 as the reference's autocast): loss within 1e-4, gradients within 3e-2");
    const backend *lean = cpu_lean();
    ssm_model *a = random_model_bias(24, 2, 31, use_bias), *b = random_model_bias(24, 2, 31, use_bias);
    b->be = lean;
    enum { B = 2, T = 150, n = B * T }; /* T crosses two of the scan's state checkpoints (every 64 steps) */
    int tok[n], tgt[n];
    for (int i = 0; i < n; i++) tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 53 + 7) % 256;
    double la = model_train_forward(a, tok, tgt, B, T), lb = model_train_forward(b, tok, tgt, B, T);
    EXPECT(fabs(la - lb) <= 1e-4 * fabs(la) && la != lb, "loss %.9g (lean) vs %.9g", lb, la);
    model_zero_grad(a), model_zero_grad(b);
    model_train_backward(a, 1.0f), model_train_backward(b, 1.0f);
    double worst = 0;
    for (int i = 0; i < a->layout.n; i++) {
        const param_info *p = &a->layout.items[i];
        double e = test_rel_err(b->dw + p->offset, a->dw + p->offset, p->numel);
        EXPECT(e <= tol, "gradient of %s differs by %.3g of its scale", p->name, e);
        if (e > worst) worst = e;
    }
    EXPECT(worst > 0, "lean gradients are bitwise the plain ones: the lean path did not run");
    printf("  # worst gradient difference %.3g of scale\n", worst);
    b->be = &backend_cpu;
    ssm_model_free(a), ssm_model_free(b);
    TEST_END();
}

/* Logits of step-by-step decoding of ns sequences of T tokens: out [ns, T, 256]. */
static void decode_all(ssm_model *m, const int *tok, int ns, int T, float *out) {
    ssm_state *s = ssm_state_new(m, ns);
    for (int t = 0; t < T; t++) {
        int cur[4];
        float lg[4 * 256];
        for (int b = 0; b < ns; b++) cur[b] = tok[b * T + t];
        ssm_step(m, s, cur, lg);
        for (int b = 0; b < ns; b++) memcpy(out + ((size_t)b * T + t) * 256, lg + b * 256, sizeof(float) * 256);
    }
    ssm_state_free(s);
}

static void test_bf16_decode(void) {
    TEST_BEGIN("bf16 decode: equals float32 when the weights are bf16 values, close otherwise (batch 1 and 3)");
    enum { T = 40 };
    /* d_model 32: every GEMV length a whole number of 16-wide vectors (but dt_rank 2); 24: partial ones */
    const int widths[2] = {32, 24};
    for (int k = 0; k < 2; k++)
        for (int ns = 1; ns <= 3; ns += 2) {
            ssm_model *m = random_model(widths[k], 2, 9 + k);
            int tok[3 * T];
            for (int i = 0; i < ns * T; i++) tok[i] = (i * 37 + 11) % 256;
            float *ref = xmalloc(sizeof(float) * ns * T * 256), *got = xmalloc(sizeof(float) * ns * T * 256);
            decode_all(m, tok, ns, T, ref);
            ssm_model_use_bf16(m);
            decode_all(m, tok, ns, T, got);
            double e = test_rel_err(got, ref, (size_t)ns * T * 256);
            EXPECT(e < 3e-2, "d_model %d batch %d: bf16 rounding error %.2e", widths[k], ns, e);
            /* round the float32 weights to bf16 values: now both paths compute with the same numbers */
            const uint16_t *w16 = m->dec.data;
            for (size_t i = 0; i < m->layout.total; i++) {
                uint32_t u = (uint32_t)w16[i] << 16;
                memcpy(&m->w[i], &u, sizeof u);
            }
            m->bf16 = 0, m->dec.dt = MAT_F32; /* float32 again (the copy stays allocated until the next use) */
            decode_all(m, tok, ns, T, ref);
            ssm_model_use_bf16(m);
            decode_all(m, tok, ns, T, got);
            e = test_rel_err(got, ref, (size_t)ns * T * 256);
            EXPECT(e < 1e-5, "d_model %d batch %d: bf16-valued weights: rel err %.2e", widths[k], ns, e);
            free(ref), free(got);
            ssm_model_free(m);
        }
    TEST_END();
}

/* The CPU's bf16 and int8 decode copies follow the weights: after AdamW steps a decode equals, bitwise, the decode
 * of a model made with the trained weights (before the fix the copy of the initial weights stayed) */
static void test_decode_copy_follows_training(void) {
    TEST_BEGIN("bf16 and int8 decode copies follow AdamW steps on the CPU (bitwise a fresh model's decode)");
    enum { T = 12, B = 2, TT = 16 };
    for (int form = 1; form <= 2; form++) {
        ssm_model *m = random_model(32, 2, 31);
        if (form == 1) ssm_model_use_bf16(m);
        else EXPECT(ssm_model_use_int8(m) == 0, "use_int8: %s", ssm_last_error());
        int tok[B * T], bt[B * TT], tg[B * TT];
        for (int i = 0; i < B * T; i++) tok[i] = (i * 37 + 5) % 256;
        for (int i = 0; i < B * TT; i++) bt[i] = (i * 11 + 3) % 256, tg[i] = bt[i] % 7 + 'a';
        float *before = xmalloc(sizeof(float) * B * T * 256), *after = xmalloc(sizeof(float) * B * T * 256);
        float *fresh = xmalloc(sizeof(float) * B * T * 256);
        decode_all(m, tok, B, T, before);
        ssm_optim_config oc;
        ssm_optim_config_default(&oc);
        oc.warmup = 1, oc.steps = 2, oc.lr = 1e-2f;
        adamw_state opt;
        adamw_init(&opt, m);
        for (int k = 0; k < 2; k++) {
            model_zero_grad(m);
            model_train_forward(m, bt, tg, B, TT);
            model_train_backward(m, 1.0f);
            adamw_update(m, &opt, &oc, lr_at(&oc, k));
        }
        adamw_free(&opt);
        decode_all(m, tok, B, T, after);
        ssm_model *f = random_model(32, 2, 31);
        memcpy(f->w, m->w, sizeof(float) * m->layout.total);
        if (form == 1) ssm_model_use_bf16(f);
        else EXPECT(ssm_model_use_int8(f) == 0, "use_int8: %s", ssm_last_error());
        decode_all(f, tok, B, T, fresh);
        EXPECT(!memcmp(after, fresh, sizeof(float) * B * T * 256), "%s: the decode after training reads a stale copy",
               form == 1 ? "bf16" : "int8");
        EXPECT(memcmp(before, after, sizeof(float) * B * T * 256), "training changed nothing: the check cannot fail");
        free(before), free(after), free(fresh);
        ssm_model_free(m), ssm_model_free(f);
    }
    TEST_END();
}

/* int8 decode weights (a scale per row): close to float32, and the same as float32 on the dequantized weights up to
 * the order of the rounding (scale * sum(q x) against sum((scale q) x)). */
static void test_int8_decode(void) {
    TEST_BEGIN("int8 decode: close to float32, equal to it on the dequantized weights (batch 1 and 3)");
    enum { T = 40 };
    const int widths[2] = {32, 24};
    for (int k = 0; k < 2; k++)
        for (int ns = 1; ns <= 3; ns += 2) {
            ssm_model *m = random_model(widths[k], 2, 19 + k);
            int tok[3 * T];
            for (int i = 0; i < ns * T; i++) tok[i] = (i * 41 + 3) % 256;
            float *ref = xmalloc(sizeof(float) * ns * T * 256), *got = xmalloc(sizeof(float) * ns * T * 256);
            decode_all(m, tok, ns, T, ref);
            EXPECT(ssm_model_use_int8(m) == 0, "use_int8: %s", ssm_last_error());
            decode_all(m, tok, ns, T, got);
            double e = test_rel_err(got, ref, (size_t)ns * T * 256);
            EXPECT(e < 5e-2 && e > 0, "d_model %d batch %d: int8 error %.2e (0: the int8 path did not run)", widths[k],
                   ns, e);
            /* the float32 weights replaced by the dequantized int8 ones: the same numbers in both paths */
            const decode_weights *q = &m->dec;
            for (int i = 0; i < m->layout.n; i++) {
                const param_info *p = &m->layout.items[i];
                if (p->ndim != 2) continue;
                for (int r = 0; r < p->shape[0]; r++)
                    for (int c = 0; c < p->shape[1]; c++) {
                        const size_t at = p->offset + (size_t)r * p->shape[1] + c;
                        m->w[at] = q->scale[q->row_at[i] + r] * (float)((const int8_t *)q->data)[at];
                    }
            }
            m->int8 = 0, m->dec.dt = MAT_F32;
            decode_all(m, tok, ns, T, ref);
            EXPECT(ssm_model_use_int8(m) == 0, "use_int8: %s", ssm_last_error());
            decode_all(m, tok, ns, T, got);
            e = test_rel_err(got, ref, (size_t)ns * T * 256);
            EXPECT(e < 1e-4, "d_model %d batch %d: dequantized weights: rel err %.2e", widths[k], ns, e);
            free(ref), free(got);
            ssm_model_free(m);
        }
    TEST_END();
}

/* The op list: every op named once and in the CPU table; the profiler wraps every op, and training and decoding
 * (plain and lean) through it give the same bits as without it. (Not the bf16 decode weights: the model keeps them
 * for backend_cpu itself, which a wrapped table is not.) */
static void test_op_list(void) {
    TEST_BEGIN("op list: every op named and on the CPU; the profiling backend computes the same bits");
    for (int op = 0; op < BACKEND_OP_COUNT; op++) {
        EXPECT(backend_has_op(&backend_cpu, op), "%s missing", backend_op_names[op]);
        EXPECT(backend_check_op(&backend_cpu, op, NULL) == 0, "%s: %s", backend_op_names[op], ssm_last_error());
        for (int other = 0; other < op; other++)
            EXPECT(strcmp(backend_op_names[op], backend_op_names[other]), "%s twice", backend_op_names[op]);
    }
    const backend *lean = cpu_lean();
    const backend *plain[2] = {&backend_cpu, lean};
    enum { B = 2, T = 40, n = B * T };
    int tok[n], tgt[n];
    for (int i = 0; i < n; i++)
        tok[i] = (i * 37 + 11) % 256, tgt[i] = (i * 53 + 7) % 256;
    for (int k = 0; k < 2; k++) {
        const backend *prof = profile_wrap(plain[k]);
        for (int op = 0; op < BACKEND_OP_COUNT; op++)
            EXPECT(backend_has_op(prof, op), "profiled %s missing", backend_op_names[op]);
        ssm_model *a = random_model(24, 2, 41), *b = random_model(24, 2, 41);
        a->be = plain[k], b->be = prof;
        double la = model_train_forward(a, tok, tgt, B, T), lb = model_train_forward(b, tok, tgt, B, T);
        model_zero_grad(a), model_zero_grad(b);
        model_train_backward(a, 1.0f), model_train_backward(b, 1.0f);
        EXPECT(la == lb, "lean %d: loss %.9g (profiled) vs %.9g", k, lb, la);
        EXPECT(!memcmp(a->dw, b->dw, sizeof(float) * a->layout.total), "lean %d: the profiled gradients differ", k);
        float *ra = xmalloc(sizeof(float) * n * 256), *rb = xmalloc(sizeof(float) * n * 256);
        decode_all(a, tok, B, T, ra), decode_all(b, tok, B, T, rb);
        EXPECT(!memcmp(ra, rb, sizeof(float) * n * 256), "lean %d: the profiled decode differs", k);
        free(ra), free(rb);
        a->be = b->be = &backend_cpu;
        ssm_model_free(a), ssm_model_free(b);
    }
    TEST_END();
}

/* A backend's limits reach the user through the mixer that sets the sizes: a table that refuses scans over 4 states,
 * and one without a kernel. */
static int refuse_big_scans(int op, const void *args) {
    const scan_args *s = args;
    if ((op == BACKEND_OP_scan_fwd || op == BACKEND_OP_scan_bwd) && s->N > 4)
        return ssm_error("d_state %d: this scan supports d_state <= 4", s->N);
    return 0;
}

static void test_limits(void) {
    TEST_BEGIN("a backend's limits: check_op answers through the mixer; a missing kernel is refused by name");
    backend limited = backend_cpu;
    limited.check_op = refuse_big_scans;
    ssm_config c;
    ssm_config_default(&c);
    c.mamba1.d_state = 8;
    EXPECT(mixer_mamba1.check(&c, &backend_cpu) == 0, "the CPU refused d_state 8: %s", ssm_last_error());
    EXPECT(mixer_mamba1.check(&c, &limited) == -1 &&
               !strcmp(ssm_last_error(), "d_state 8: this scan supports d_state <= 4"),
           "d_state 8: %s", ssm_last_error());
    c.mamba1.d_state = 4;
    EXPECT(mixer_mamba1.check(&c, &limited) == 0, "d_state 4 refused: %s", ssm_last_error());
    limited.conv1d_silu_step = NULL;
    EXPECT(backend_check_op(&limited, BACKEND_OP_conv1d_silu_step, NULL) == -1 &&
               strstr(ssm_last_error(), "no conv1d_silu_step kernel"),
           "a missing kernel: %s", ssm_last_error());
    /* an attention layer on a backend without one of its kernels: the missing one, by name */
    c.attention.n_heads = 2;
    limited.attn_fwd = NULL;
    EXPECT(mixer_attention.check(&c, &backend_cpu) == 0, "the CPU refused attention: %s", ssm_last_error());
    EXPECT(mixer_attention.check(&c, &limited) == -1 && strstr(ssm_last_error(), "no attn_fwd kernel"),
           "attention without attn_fwd: %s", ssm_last_error());
    /* Mamba-2 likewise, on a backend without ssd_fwd */
    limited.ssd_fwd = NULL;
    EXPECT(mixer_mamba2.check(&c, &backend_cpu) == 0, "the CPU refused Mamba-2: %s", ssm_last_error());
    EXPECT(mixer_mamba2.check(&c, &limited) == -1 && strstr(ssm_last_error(), "no ssd_fwd kernel"),
           "Mamba-2 without ssd_fwd: %s", ssm_last_error());
    TEST_END();

    TEST_BEGIN("Mamba-2's config: one-line errors for head_dim, n_groups and chunk_size");
    const struct {
        int head_dim, groups, chunk;
        const char *want;
    } bad[] = {{48, 1, 256, "head_dim 48 does not divide d_inner 256"},
               {64, 3, 256, "n_groups 3 does not divide the 4 heads"},
               {64, 1, 0, "chunk_size 0 is not a power of two"},
               {64, 1, 48, "chunk_size 48 is not a power of two"}};
    for (int i = 0; i < 4; i++) {
        ssm_config_default(&c);
        strcpy(c.layer_pattern, "mM");
        c.mamba2.head_dim = bad[i].head_dim, c.mamba2.n_groups = bad[i].groups, c.mamba2.chunk_size = bad[i].chunk;
        EXPECT(ssm_config_resolve(&c) == -1 && strstr(ssm_last_error(), bad[i].want) && !strchr(ssm_last_error(), '\n'),
               "case %d: %s", i, ssm_last_error());
        strcpy(c.layer_pattern, "m"); /* read only when the pattern has an 'M' */
        EXPECT(ssm_config_resolve(&c) == 0, "case %d without 'M': %s", i, ssm_last_error());
    }
    TEST_END();
}

/* A byte stream where each byte is a function of the two before it: learnable exactly. */
static void write_pattern(const char *path, size_t n) {
    char *buf = xmalloc(n);
    int a = 1, b = 2;
    for (size_t i = 0; i < n; i++) {
        int c = (a * 3 + b) % 13;
        buf[i] = (char)('a' + c);
        a = b, b = c;
    }
    CHECK(file_write_atomic(path, buf, n) == 0, "%s", ssm_last_error());
    free(buf);
}

static double last_metric(const char *path, const char *key) {
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len)) return NAN;
    double v = NAN;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    for (char *p = strstr(text, pat); p; p = strstr(p + 1, pat)) v = atof(p + strlen(pat));
    free(text);
    return v;
}

static void test_training_learns(const char *dir) {
    TEST_BEGIN("training learns a synthetic pattern (validation loss < 0.05 nats/byte in 150 steps)");
    char data[512], out[512], metrics[600];
    snprintf(data, sizeof data, "%s/pattern.txt", dir);
    snprintf(out, sizeof out, "%s/pattern_run", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    write_pattern(data, 20000);
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = data, t.out_dir = out, t.batch = 8, t.seq_len = 32, t.quiet = 1, t.eval_every = 50;
    t.optim.steps = 150, t.optim.warmup = 10, t.optim.lr = 1e-2f, t.optim.min_lr = 1e-3f;
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 32, c.n_layer = 2, c.mamba1.d_state = 8;
    EXPECT(ssm_train(&t, &c) == 0, "ssm_train: %s", ssm_last_error());
    double first = NAN, val = last_metric(metrics, "val_loss");
    char *text;
    size_t len;
    if (file_read_all(metrics, &text, &len) == 0) {
        char *p = strstr(text, "\"loss\": ");
        if (p) first = atof(p + 8);
        free(text);
    }
    EXPECT(first > 2.0, "first loss %.4f should be near ln(256) = 5.55", first);
    EXPECT(val < 0.05, "validation loss %.4f nats/byte", val);
    TEST_END();
}

static void test_checkpoints(const char *dir) {
    TEST_BEGIN("model save -> load is bitwise");
    ssm_model *m = random_model(20, 2, 5);
    char p[512];
    snprintf(p, sizeof p, "%s/model", dir);
    EXPECT(ssm_model_save(m, p) == 0, "save: %s", ssm_last_error());
    ssm_model *back = ssm_model_load(p);
    EXPECT(back != NULL, "load: %s", ssm_last_error());
    if (back) {
        EXPECT(back->layout.n == m->layout.n, "tensor count differs");
        for (int i = 0; i < m->layout.n && back->layout.n == m->layout.n; i++) {
            const param_info *p0 = &m->layout.items[i];
            EXPECT(!memcmp(back->w + p0->offset, m->w + p0->offset, sizeof(float) * p0->numel), "%s differs", p0->name);
        }
        EXPECT(!memcmp(&back->cfg, &m->cfg, sizeof m->cfg), "config differs after the round trip");
    }
    ssm_model_free(back);
    ssm_model_free(m);
    TEST_END();

    TEST_BEGIN("a resumed run reproduces the uninterrupted run (losses and final weights bitwise)");
    char data[512], a[512], b[512];
    snprintf(data, sizeof data, "%s/pattern.txt", dir);
    snprintf(a, sizeof a, "%s/run_a", dir);
    snprintf(b, sizeof b, "%s/run_b", dir);
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = data, t.batch = 4, t.seq_len = 24, t.quiet = 1, t.eval_every = 5, t.eval_bytes = 2000;
    t.optim.steps = 16, t.optim.warmup = 4;
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 16, c.n_layer = 2, c.mamba1.d_state = 4;
    t.out_dir = a;
    EXPECT(ssm_train(&t, &c) == 0, "uninterrupted: %s", ssm_last_error());
    t.out_dir = b, t.stop_after = 7; /* stops at 7 with a checkpoint, as a killed job's last save */
    EXPECT(ssm_train(&t, &c) == 0, "first part: %s", ssm_last_error());
    t.stop_after = 0, t.resume = 1;
    EXPECT(ssm_train(&t, &c) == 0, "resumed: %s", ssm_last_error());
    test_expect_same_run(a, b, 16);
    TEST_END();
}

int main(void) {
    char dir[] = "/tmp/ssm_test_model_XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    test_step_equals_forward();
    test_state_sees_weight_updates();
    test_causal_cpu("m");
    test_causal_cpu("M");
    test_causal_cpu("maf");
    test_causal_cpu("Mmaf");
    test_validation_streams("m");
    test_validation_streams("maf");
    test_validation_streams("Mmaf");
    test_lean_activations(0);
    test_lean_activations(1);
    test_float32_kind_in_bf16_model();
    test_hybrid_in_bf16_model("maf");
    test_hybrid_in_bf16_model("MmaMf");
    hybrid_bias = 1; /* (lean Mamba-2 splits in_proj in two GEMMs: the bias too) */
    test_hybrid_in_bf16_model("MmaMf");
    hybrid_bias = 0;
    test_attention_decode("af", 4, 2, 0);  /* a Transformer, grouped-query */
    test_attention_decode("af", 4, 1, 9);  /* multi-query, a sliding window shorter than the sequence */
    test_attention_decode("mmaf", 4, 4, 0); /* a hybrid */
    test_attention_decode("M", 2, 4, 0);    /* Mamba-2 */
    test_attention_decode("Mmaf", 4, 2, 0); /* Mamba-2 in a hybrid */
    hybrid_nemotron = 1;
    test_attention_decode("Maf", 3, 2, 0); /* NemotronH's layer forms */
    hybrid_nemotron = 0;
    test_state_capacity();
    test_state_seek();
    test_bf16_decode();
    test_int8_decode();
    test_decode_copy_follows_training();
    test_op_list();
    test_limits();
    test_training_learns(dir);
    test_checkpoints(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_failures ? 1 : 0;
}
