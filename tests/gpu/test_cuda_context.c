/* Per-model device contexts (src/backend/cuda/context.h): two models of different shapes in one process on the
 * CUDA backend, their bf16 training steps and decode steps interleaved, each give bitwise what the same model
 * gives alone (losses, every decode step's logits, the final weights); each reports its own memory peak. With a
 * second GPU: a model on cuda:1 gives bitwise what it gives there alone, interleaved with one on cuda:0, and (on
 * two GPUs of one kind) what it gives on cuda:0; a model moved from cuda:0 to cuda:1 mid-training continues
 * bitwise. A GPU index the machine lacks is a one-line error. Prints "skip - ..." where there is no GPU (and for
 * the second-GPU cases on a machine with one). */
#include "test.h"
#include "common.h"
#include "model.h"
#include "ops/ops_cuda.h"
#include "optim.h"

#include <cuda_runtime.h>
#include <string.h>

#define STEPS 6  /* training steps per run */
#define DECODE 4 /* decode steps after each training step */
#define NSEQ 2   /* sequences decoded together */
#define PROMPT 5 /* tokens per sequence of the prefill (the scan path), before the steps (decode graphs) */

/* Two shapes that share no buffer size, GEMM shape or scan size: d_state 16 and 12 both take more than 48 KB of
 * the forward scan's shared memory, each a different amount (the kernel's limit is the device's, shared). */
static ssm_config config_a(void) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 64, c.n_layer = 2, c.mamba1.d_state = 16;
    return c;
}
static ssm_config config_b(void) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 96, c.n_layer = 3, c.mamba1.d_state = 12, c.mamba1.use_bias = 1, c.tie_embeddings = 0;
    return c;
}

/* What a run produces, compared bitwise. */
typedef struct {
    double loss[STEPS];
    float *logits; /* [STEPS][DECODE][NSEQ][V] every decode step's */
    float *w;      /* [layout.total] the weights after the last step */
    size_t n_logits, n_w;
} record;

static void record_free(record *r) { free(r->logits), free(r->w), memset(r, 0, sizeof *r); }

/* One model's run: its optimizer, and a decode state kept across the training steps. */
typedef struct {
    ssm_model *m;
    adamw_state opt;
    ssm_optim_config oc;
    ssm_state *st;
    int cur[NSEQ]; /* the next decode tokens (greedy) */
    record rec;
} runner;

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* The batch of step s (the same for every run of a shape): random tokens, learnable targets. */
static void batch_of(int *tok, int *tgt, int n, int V, int s) {
    rng_t r = {100 + (uint64_t)s};
    for (int i = 0; i < n; i++) tok[i] = (int)(rng_next(&r) % V), tgt[i] = tok[i] % 7 + 'a';
}

static void train_step(ssm_model *m, adamw_state *opt, const ssm_optim_config *oc, int s, double *loss) {
    enum { B = 4, T = 32 };
    int tok[B * T], tgt[B * T];
    batch_of(tok, tgt, B * T, m->cfg.vocab_size, s);
    model_zero_grad(m);
    *loss = model_train_forward(m, tok, tgt, B, T);
    model_train_backward(m, 1.0f);
    grad_clip(m, oc->clip);
    adamw_update(m, opt, oc, lr_at(oc, s));
}

static void optim_config(ssm_optim_config *oc) {
    ssm_optim_config_default(oc);
    oc->warmup = 2, oc->steps = STEPS, oc->lr = 3e-3f;
}

/* A new model of cfg in bf16 on device, with its optimizer and a prefilled decode state; 0, or -1 on failure. */
static int runner_open(runner *r, const ssm_config *cfg, const char *device) {
    memset(r, 0, sizeof *r);
    r->m = ssm_model_new(cfg, 7);
    ssm_model_use_bf16(r->m);
    if (ssm_model_set_device(r->m, device)) {
        EXPECT(0, "set_device %s: %s", device, ssm_last_error());
        ssm_model_free(r->m);
        r->m = NULL;
        return -1;
    }
    adamw_init(&r->opt, r->m);
    optim_config(&r->oc);
    const int V = cfg->vocab_size;
    r->rec.n_logits = (size_t)STEPS * DECODE * NSEQ * V;
    r->rec.logits = xcalloc(r->rec.n_logits, sizeof(float));
    r->st = ssm_state_new(r->m, NSEQ);
    int prompt[NSEQ * PROMPT];
    for (int i = 0; i < NSEQ * PROMPT; i++) prompt[i] = "the cat sat"[i % 11];
    float *last = xmalloc(sizeof(float) * NSEQ * V);
    ssm_forward(r->m, r->st, prompt, PROMPT, last, 1);
    for (int b = 0; b < NSEQ; b++) r->cur[b] = argmax(last + (size_t)b * V, V);
    free(last);
    return 0;
}

/* Training step s, then DECODE greedy decode steps with the updated weights, the state carried on. */
static void runner_step(runner *r, int s) {
    train_step(r->m, &r->opt, &r->oc, s, &r->rec.loss[s]);
    const int V = r->m->cfg.vocab_size;
    for (int d = 0; d < DECODE; d++) {
        float *out = r->rec.logits + ((size_t)s * DECODE + d) * NSEQ * V;
        ssm_step(r->m, r->st, r->cur, out);
        for (int b = 0; b < NSEQ; b++) r->cur[b] = argmax(out + (size_t)b * V, V);
    }
}

static void runner_close(runner *r) {
    if (!r->m) return;
    model_sync_host(r->m);
    r->rec.n_w = r->m->layout.total;
    r->rec.w = xmalloc(sizeof(float) * r->rec.n_w);
    memcpy(r->rec.w, r->m->w, sizeof(float) * r->rec.n_w);
    ssm_state_free(r->st);
    adamw_free(&r->opt);
    ssm_model_free(r->m);
    r->m = NULL;
}

/* A whole run of cfg on device with nothing else in between. */
static record run_alone(const ssm_config *cfg, const char *device) {
    runner r;
    record none = {{0}};
    if (runner_open(&r, cfg, device)) return none;
    for (int s = 0; s < STEPS; s++) runner_step(&r, s);
    runner_close(&r);
    return r.rec;
}

/* Bitwise equal, or one EXPECT naming the first difference. */
static void expect_same(const record *got, const record *want, const char *what) {
    EXPECT(got->logits && want->logits, "%s: a run did not happen", what);
    if (!got->logits || !want->logits) return;
    for (int s = 0; s < STEPS; s++)
        if (memcmp(&got->loss[s], &want->loss[s], sizeof got->loss[s])) {
            EXPECT(0, "%s: step %d loss %.17g vs %.17g alone", what, s + 1, got->loss[s], want->loss[s]);
            return;
        }
    EXPECT(got->n_logits == want->n_logits && got->n_w == want->n_w, "%s: sizes differ", what);
    for (size_t i = 0; i < got->n_logits && i < want->n_logits; i++)
        if (memcmp(&got->logits[i], &want->logits[i], sizeof(float))) {
            EXPECT(0, "%s: decode logit %zu is %.9g vs %.9g alone", what, i, got->logits[i], want->logits[i]);
            return;
        }
    EXPECT(got->w && want->w && !memcmp(got->w, want->w, sizeof(float) * got->n_w), "%s: the final weights differ",
           what);
}

static record alone_a, alone_b; /* the runs alone on cuda:0, the reference of every case */

static void test_two_models_one_gpu(void) {
    TEST_BEGIN("two models of different shapes on one GPU, bf16 training and decode interleaved: each bitwise as "
               "alone; each context its own memory peak");
    const ssm_config ca = config_a(), cb = config_b();
    alone_a = run_alone(&ca, "cuda");
    alone_b = run_alone(&cb, "cuda:0");
    runner a = {0}, b = {0};
    if (!runner_open(&a, &ca, "cuda") && !runner_open(&b, &cb, "cuda")) {
        for (int s = 0; s < STEPS; s++) runner_step(&a, s), runner_step(&b, s);
        /* the pool's high-water mark is the device's (the same in both); the rest is each context's own */
        model_bind(a.m);
        const size_t mem_a = a.m->be->mem_in_use();
        model_bind(b.m);
        const size_t mem_b = b.m->be->mem_in_use();
        EXPECT(mem_a < mem_b, "the smaller model's peak %zu is not below the larger's %zu", mem_a, mem_b);
        printf("  # losses A %.5f -> %.5f, B %.5f -> %.5f; peaks %.1f and %.1f MiB\n", a.rec.loss[0],
               a.rec.loss[STEPS - 1], b.rec.loss[0], b.rec.loss[STEPS - 1], mem_a / 1048576.0, mem_b / 1048576.0);
    }
    runner_close(&b), runner_close(&a); /* B first: A's context must not care */
    expect_same(&a.rec, &alone_a, "model A beside B");
    expect_same(&b.rec, &alone_b, "model B beside A");
    record_free(&a.rec), record_free(&b.rec);
    TEST_END();
}

static void test_bad_index(int n_gpus) {
    TEST_BEGIN("a GPU index the machine lacks is a one-line error naming how many there are");
    char name[32], want[96];
    snprintf(name, sizeof name, "cuda:%d", n_gpus);
    snprintf(want, sizeof want, "no GPU cuda:%d: this machine has %d (", n_gpus, n_gpus);
    const ssm_config c = config_a();
    ssm_model *m = ssm_model_new(&c, 1);
    EXPECT(ssm_model_set_device(m, name) == -1 && strstr(ssm_last_error(), want) && !strchr(ssm_last_error(), '\n'),
           "%s: %s", name, ssm_last_error());
    EXPECT(!strcmp(ssm_model_device(m), "cpu"), "the model left the CPU: %s", ssm_model_device(m));
    EXPECT(ssm_model_set_device(m, "cuda:x") == -1 && strstr(ssm_last_error(), "unknown device 'cuda:x'"),
           "cuda:x: %s", ssm_last_error());
    ssm_model_free(m);
    TEST_END();
}

static int same_kind(int d0, int d1) {
    struct cudaDeviceProp p0, p1;
    if (cudaGetDeviceProperties(&p0, d0) != cudaSuccess || cudaGetDeviceProperties(&p1, d1) != cudaSuccess) return 0;
    return !strcmp(p0.name, p1.name);
}

static int lives_on(const void *p, int device) {
    struct cudaPointerAttributes at;
    return cudaPointerGetAttributes(&at, p) == cudaSuccess && at.device == device;
}

static void test_second_gpu(void) {
    TEST_BEGIN("a model on cuda:1: its memory there, bitwise as alone beside a model on cuda:0 (and as on cuda:0 "
               "on two GPUs of one kind)");
    const ssm_config ca = config_a(), cb = config_b();
    record on1 = run_alone(&ca, "cuda:1");
    if (same_kind(0, 1)) expect_same(&on1, &alone_a, "model A alone on cuda:1 against cuda:0");
    else printf("  # cuda:0 and cuda:1 differ in kind: not compared with each other\n");
    runner a = {0}, b = {0};
    if (!runner_open(&a, &ca, "cuda:1") && !runner_open(&b, &cb, "cuda:0")) {
        EXPECT(lives_on(a.m->wb, 1) && lives_on(a.st->data, 1), "model A's buffers are not on GPU 1");
        EXPECT(lives_on(b.m->wb, 0), "model B's buffers are not on GPU 0");
        for (int s = 0; s < STEPS; s++) runner_step(&b, s), runner_step(&a, s);
    }
    runner_close(&a), runner_close(&b);
    expect_same(&a.rec, &on1, "model A on cuda:1 beside B on cuda:0");
    expect_same(&b.rec, &alone_b, "model B on cuda:0 beside A on cuda:1");
    record_free(&a.rec), record_free(&b.rec), record_free(&on1);
    TEST_END();
}

/* Training moved from cuda:0 to cuda:1 after 2 steps (weights and AdamW moments follow) against all steps on cuda:0:
 * bitwise on two GPUs of one kind. */
static void test_move_between_gpus(void) {
    TEST_BEGIN("a model moved from cuda:0 to cuda:1 mid-training continues as if it had stayed (bitwise)");
    if (!same_kind(0, 1)) {
        printf("  # cuda:0 and cuda:1 differ in kind: nothing to compare bitwise\n");
        TEST_END();
        return;
    }
    const ssm_config c = config_a();
    ssm_optim_config oc;
    optim_config(&oc);
    double moved[STEPS], stayed[STEPS];
    ssm_model *m1 = ssm_model_new(&c, 7), *m0 = ssm_model_new(&c, 7);
    ssm_model_use_bf16(m1), ssm_model_use_bf16(m0);
    EXPECT(!ssm_model_set_device(m1, "cuda:0") && !ssm_model_set_device(m0, "cuda:0"), "%s", ssm_last_error());
    adamw_state o1, o0;
    adamw_init(&o1, m1), adamw_init(&o0, m0);
    for (int s = 0; s < STEPS; s++) {
        if (s == 2) {
            EXPECT(ssm_model_set_device(m1, "cuda:1") == 0, "to cuda:1: %s", ssm_last_error());
            adamw_follow_model(&o1, m1);
            EXPECT(lives_on(m1->wb, 1) && lives_on(o1.m, 1), "the weights or moments did not move to GPU 1");
        }
        train_step(m1, &o1, &oc, s, &moved[s]);
        train_step(m0, &o0, &oc, s, &stayed[s]);
    }
    EXPECT(!memcmp(moved, stayed, sizeof moved), "losses differ: last %.17g moved vs %.17g stayed", moved[STEPS - 1],
           stayed[STEPS - 1]);
    model_sync_host(m1), model_sync_host(m0);
    EXPECT(!memcmp(m1->w, m0->w, sizeof(float) * m0->layout.total), "the final weights differ");
    adamw_free(&o1), adamw_free(&o0);
    ssm_model_free(m1), ssm_model_free(m0);
    TEST_END();
}

int main(void) {
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA device contexts: %s\n", why);
        return 0;
    }
    int n_gpus = 0;
    CHECK(cudaGetDeviceCount(&n_gpus) == cudaSuccess, "cudaGetDeviceCount");
    test_two_models_one_gpu();
    test_bad_index(n_gpus);
    if (n_gpus >= 2) {
        test_second_gpu();
        test_move_between_gpus();
    } else {
        printf("skip - a model on cuda:1: this machine has one GPU\n");
    }
    record_free(&alone_a), record_free(&alone_b);
    return test_failures ? 1 : 0;
}
