/* Synthetic tasks and filler bytes (ssm train / eval --task, --noise-rate): the generators put the answers where
 * their papers do and nowhere else, a seed gives the same sequences and validation its own; the loss counts the
 * answers (targets >= 0) alone, as a restriction by hand of the per-position losses says it must; the argmax
 * accuracy; a tiny model learns MQAR; filler leaves the real bytes in order and out of the count; runs with a task
 * or filler resume bitwise, and restore those options from the checkpoint. */
#include "eval.h"
#include "io/fileio.h"
#include "io/noise.h"
#include "io/source.h"
#include "io/tasks.h"
#include "model.h"
#include "test.h"
#include "run_compare.h"
#include "backend/cpu/cpu_ops.h"

#include <omp.h>
#include <string.h>
#include <unistd.h>

static task_spec parse_or_die(const char *spec) {
    task_spec t;
    CHECK(task_parse(&t, spec) == 0, "%s", ssm_last_error());
    return t;
}

static void test_specs(void) {
    TEST_BEGIN("task SPECs: defaults, canonical form, and one-line errors naming what to change");
    char buf[96];
    task_spec t = parse_or_die("mqar");
    task_format(&t, buf, sizeof buf);
    EXPECT(!strcmp(buf, "mqar:seq=256,pairs=16,vocab=256"), "mqar defaults: %s", buf);
    t = parse_or_die("selcopy");
    task_format(&t, buf, sizeof buf);
    EXPECT(!strcmp(buf, "selcopy:seq=4096,tokens=16,vocab=16"), "selcopy defaults: %s", buf);
    t = parse_or_die("induction:seq=256");
    task_format(&t, buf, sizeof buf);
    EXPECT(!strcmp(buf, "induction:seq=256,vocab=16"), "induction: %s", buf);
    const char *specs[] = {"mqar:seq=128,pairs=8", "selcopy:seq=4096,vocab=16,tokens=16", "induction:vocab=5,seq=65536"};
    for (int i = 0; i < 3; i++) { /* the canonical form reads back as the same task */
        task_spec a = parse_or_die(specs[i]), b;
        task_format(&a, buf, sizeof buf);
        EXPECT(task_parse(&b, buf) == 0 && !memcmp(&a, &b, sizeof a), "%s -> %s does not read back", specs[i], buf);
    }
    static const struct {
        const char *spec, *want;
    } bad[] = {
        {"", "unknown task"},
        {"mqa", "unknown task"},
        {"mqar:seq=30,pairs=8", "at least 4 x pairs = 32"},
        {"mqar:seq=63,pairs=4", "must be even"},
        {"mqar:pairs=8,vocab=16", "at most 7 pairs"},
        {"mqar:vocab=2", "vocab must be at least 4"},
        {"mqar:tokens=3", "mqar takes seq, pairs and vocab, not 'tokens'"},
        {"selcopy:pairs=2", "selcopy takes seq, tokens and vocab"},
        {"selcopy:seq=10,tokens=6", "at least 2 x tokens = 12"},
        {"induction:seq=3", "seq must be at least 4"},
        {"induction:vocab=257", "larger than the byte vocabulary"},
        {"induction:seq=abc", "seq needs a whole number"},
        {"induction:seq=-1", "seq needs a whole number"},
        {"induction:seq=99999999999999999999", "seq needs a whole number"},
        {"induction:seq", "seq needs a whole number"},
        {"induction:seq=8,seq=8", "given twice"},
        {"induction:seq=8,", "not ''"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const int rc = task_parse(&t, bad[i].spec);
        const char *e = ssm_last_error();
        EXPECT(rc == -1 && strstr(e, bad[i].want) && strstr(e, "--task") && !strchr(e, '\n'), "'%s': %s", bad[i].spec,
               rc ? e : "accepted");
    }
    TEST_END();
}

/* ---- the generators ---------------------------------------------------------------------------------------- */
enum { N_SEQ = 300 };

static void test_mqar(void) {
    TEST_BEGIN("mqar: distinct keys and values paired first, each key queried once after them, the answer its value");
    const task_spec t = parse_or_die("mqar:seq=64,pairs=8,vocab=32");
    const int P = 8, half = 16;
    int tok[64], tgt[64], small_gaps = 0;
    rng_t rng = {3};
    for (int n = 0; n < N_SEQ; n++) {
        task_sample(&t, &rng, tok, tgt);
        int value_of[32] = {0}, queried[32] = {0}, answers = 0;
        for (int i = 0; i < P; i++) {
            const int k = tok[2 * i], v = tok[2 * i + 1];
            EXPECT(k >= 1 && k < half && v >= half && v < 32, "seq %d pair %d: key %d value %d", n, i, k, v);
            EXPECT(!value_of[k], "seq %d: key %d twice", n, k);
            for (int j = 0; j < i; j++) EXPECT(tok[2 * j + 1] != v, "seq %d: value %d twice", n, v);
            value_of[k] = v;
            EXPECT(tgt[2 * i] == -1 && tgt[2 * i + 1] == -1, "seq %d: a target inside the pairs", n);
        }
        for (int i = 2 * P; i < 64; i++) {
            if (tok[i] == 0) {
                EXPECT(tgt[i] == -1, "seq %d: a target at filler position %d", n, i);
                continue;
            }
            EXPECT((i - 2 * P) % 2 == 0 && value_of[tok[i]] && !queried[tok[i]],
                   "seq %d: query %d at %d is not an unqueried key at an even offset", n, tok[i], i);
            queried[tok[i]] = 1;
            EXPECT(tgt[i] == value_of[tok[i]], "seq %d: the answer at %d is %d, not the value %d", n, i, tgt[i],
                   value_of[tok[i]]);
            answers++, small_gaps += i - 2 * P < 16;
        }
        EXPECT(answers == P && task_answers(&t) == P, "seq %d: %d answers", n, answers);
    }
    /* the power law puts most queries early: 8 of 24 offsets hold well over a third of them */
    EXPECT(small_gaps > N_SEQ * P / 2, "%d of %d queries in the first 8 offsets", small_gaps, N_SEQ * P);
    TEST_END();
}

static void test_selcopy(void) {
    TEST_BEGIN("selcopy: the data tokens among noise, then a marker each; the k-th marker's answer the k-th token");
    const task_spec t = parse_or_die("selcopy:seq=100,tokens=16,vocab=16");
    int tok[100], tgt[100], first_half = 0;
    rng_t rng = {4};
    for (int n = 0; n < N_SEQ; n++) {
        task_sample(&t, &rng, tok, tgt);
        int data[100], nd = 0;
        for (int i = 0; i < 84; i++) {
            EXPECT(tok[i] >= 0 && tok[i] < 15 && tgt[i] == -1, "seq %d pos %d: token %d target %d", n, i, tok[i],
                   tgt[i]);
            if (tok[i]) data[nd++] = tok[i], first_half += i < 42;
        }
        EXPECT(nd == 16, "seq %d: %d data tokens", n, nd);
        for (int k = 0; k < 16 && nd == 16; k++)
            EXPECT(tok[84 + k] == 15 && tgt[84 + k] == data[k], "seq %d marker %d: token %d target %d, wanted %d", n,
                   k, tok[84 + k], tgt[84 + k], data[k]);
    }
    /* the positions are uniform over the 84: about half in the first half */
    EXPECT(abs(first_half - N_SEQ * 8) < N_SEQ * 8 / 5, "%d of %d data tokens in the first half", first_half,
           N_SEQ * 16);
    TEST_END();
}

static void test_induction(void) {
    TEST_BEGIN("induction: the special token once early, followed by x, and last; the one answer is x");
    const task_spec t = parse_or_die("induction:seq=50,vocab=6");
    int tok[50], tgt[50], seen_at[50] = {0};
    rng_t rng = {5};
    for (int n = 0; n < N_SEQ; n++) {
        task_sample(&t, &rng, tok, tgt);
        int specials = 0, p = -1;
        for (int i = 0; i < 50; i++) {
            EXPECT(tok[i] >= 0 && tok[i] < 6, "seq %d: id %d", n, tok[i]);
            if (tok[i] == 5) specials++, p = p < 0 ? i : p;
            EXPECT(i == 49 || tgt[i] == -1, "seq %d: a target at %d", n, i);
        }
        EXPECT(specials == 2 && tok[49] == 5 && p <= 47 && tgt[49] == tok[p + 1],
               "seq %d: %d specials, first at %d, answer %d", n, specials, p, tgt[49]);
        if (p >= 0) seen_at[p]++;
    }
    int covered = 0;
    for (int i = 0; i < 48; i++) covered += seen_at[i] > 0;
    EXPECT(covered >= 44, "the first special at only %d of the 48 possible positions", covered);
    TEST_END();
}

/* Whether two draws of B sequences from the given states are the same. */
static int same_batches(const task_spec *t, uint64_t a, uint64_t b, int B) {
    int *x = xmalloc(sizeof(int) * 2 * B * t->seq), *y = xmalloc(sizeof(int) * 2 * B * t->seq);
    rng_t ra = {a}, rb = {b};
    task_sample_batch(t, &ra, B, x, x + B * t->seq);
    task_sample_batch(t, &rb, B, y, y + B * t->seq);
    const int same = !memcmp(x, y, sizeof(int) * 2 * B * t->seq);
    free(x), free(y);
    return same;
}

static void test_streams(void) {
    TEST_BEGIN("task streams: a seed draws the same sequences; another seed, and the validation stream, others");
    const char *specs[] = {"mqar:seq=64,pairs=8", "selcopy:seq=64,tokens=8", "induction:seq=64"};
    for (int i = 0; i < 3; i++) {
        const task_spec t = parse_or_die(specs[i]);
        const uint64_t train = 1337 ^ 0xDA7A5EEDull; /* ssm_train's data stream for the default --seed */
        EXPECT(same_batches(&t, train, train, 8), "%s: one seed, two draws differ", specs[i]);
        EXPECT(!same_batches(&t, train, 1338 ^ 0xDA7A5EEDull, 8), "%s: seeds 1337 and 1338 draw the same", specs[i]);
        /* no validation sequence is one of the first training ones */
        int *v = xmalloc(sizeof(int) * 2 * 64 * 64), *tr = xmalloc(sizeof(int) * 2 * 64 * 64), overlap = 0;
        rng_t rv = {SSM_VALIDATION_SEED}, rt = {train};
        task_sample_batch(&t, &rv, 64, v, v + 64 * 64);
        task_sample_batch(&t, &rt, 64, tr, tr + 64 * 64);
        for (int a = 0; a < 64; a++)
            for (int b = 0; b < 64; b++) overlap += !memcmp(v + a * 64, tr + b * 64, sizeof(int) * 64);
        EXPECT(overlap == 0, "%s: %d validation sequences among the first 64 training ones", specs[i], overlap);
        free(v), free(tr);
    }
    TEST_END();
}

/* ---- the masked loss --------------------------------------------------------------------------------------- */
static ssm_model *tiny_model(const char *pattern, int max_context) {
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 16, c.n_layer = 2, c.mamba1.d_state = 4, c.attention.n_heads = 2, c.attention.max_context = max_context;
    strcpy(c.layer_pattern, pattern);
    ssm_model *m = ssm_model_new(&c, 11);
    CHECK(m, "%s", ssm_last_error());
    rng_t r = {12};
    for (size_t i = 0; i < m->layout.total; i++) m->w[i] += 0.1f * rng_normal(&r); /* logits that differ */
    return m;
}

/* -log softmax(row)[target] in double: the loss of one position, by hand. */
static double position_loss(const float *row, int V, int target) {
    double mx = row[0], z = 0;
    for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    for (int v = 0; v < V; v++) z += exp(row[v] - mx);
    return mx + log(z) - row[target];
}

static void test_masked_loss(void) {
    TEST_BEGIN("masked loss: the mean over counted targets of the per-position losses, by hand; the gradient of a "
               "masked position is zero");
    enum { B = 3, T = 40, V = 256 };
    ssm_model *m = tiny_model("m", 0);
    int tok[B * T], full[B * T], masked[B * T], counted = 0;
    rng_t r = {13};
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int)(rng_next(&r) % V), full[i] = (int)(rng_next(&r) % V);
        masked[i] = i % 7 == 3 || i % 11 == 0 ? full[i] : -1; /* a sparse, irregular mask, as a task's */
        counted += masked[i] >= 0;
    }
    const double plain = model_train_forward(m, tok, full, B, T);
    double all = 0, restricted = 0;
    for (int i = 0; i < B * T; i++) { /* the logits the forward left, scored by hand */
        const double l = position_loss(m->acts.logits + (size_t)i * V, V, full[i]);
        all += l, restricted += masked[i] >= 0 ? l : 0;
    }
    EXPECT(fabs(plain - all / (B * T)) < 1e-9 * all, "unmasked: %.12f vs by hand %.12f", plain, all / (B * T));
    const double loss = model_train_forward(m, tok, masked, B, T);
    EXPECT(fabs(loss - restricted / counted) < 1e-9 * restricted, "masked: %.12f vs by hand %.12f over %d", loss,
           restricted / counted, counted);
    EXPECT(m->acts.n_targets == counted, "counted %d targets, wanted %d", m->acts.n_targets, counted);
    model_zero_grad(m);
    model_train_backward(m, 1.0f); /* dlogits left in acts.logits: zero exactly where masked */
    int nonzero_masked = 0, zero_counted = 0;
    for (int i = 0; i < B * T; i++) {
        double g = 0;
        for (int v = 0; v < V; v++) g += fabs(m->acts.logits[(size_t)i * V + v]);
        nonzero_masked += masked[i] < 0 && g != 0, zero_counted += masked[i] >= 0 && g == 0;
    }
    EXPECT(nonzero_masked == 0 && zero_counted == 0, "%d masked positions with a gradient, %d counted ones without",
           nonzero_masked, zero_counted);
    ssm_model_free(m);
    TEST_END();
}

static void test_argmax_hits(void) {
    TEST_BEGIN("argmax_hits counts answers whose first largest logit is the target (ties: the first index)");
    enum { R = 200, V = 7 };
    float logits[R * V];
    int tgt[R];
    rng_t r = {14};
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < V; v++) logits[i * V + v] = (float)(rng_next(&r) % 3); /* ties in most rows */
        tgt[i] = i % 5 == 0 ? -1 : (int)(rng_next(&r) % V);
    }
    for (int v = 0; v < 2 * V; v++) logits[v] = 1.0f; /* uniform rows predict 0, and only 0 */
    tgt[0] = 0, tgt[1] = 3;
    int want = 0;
    for (int i = 0; i < R; i++) {
        int best = 0;
        for (int v = 1; v < V; v++) best = logits[i * V + v] > logits[i * V + best] ? v : best;
        want += tgt[i] >= 0 && best == tgt[i];
    }
    int hits = -1;
    cpu_argmax_hits(&hits, logits, tgt, R, V);
    EXPECT(hits == want && want > 10 && want < 150, "hits %d, by hand %d", hits, want);
    TEST_END();
}

/* ---- evaluation and training on tasks -------------------------------------------------------------------------- */
static void test_eval_chunks(void) {
    TEST_BEGIN("task evaluation: chunks carry the state (the same loss and accuracy as whole sequences), and an "
               "attention cache is sized for a sequence longer than max_context");
    const char *patterns[] = {"m", "ma"};
    for (int i = 0; i < 2; i++) {
        ssm_model *m = tiny_model(patterns[i], 32); /* max_context 32: the sequences are 300 */
        const task_spec t = parse_or_die("induction:seq=300");
        double s1, s2;
        long c1, c2, h1, h2;
        rng_t r1 = {15}, r2 = {15};
        EXPECT(eval_task(m, &t, &r1, 5, 2, 300, 0, &s1, &c1, &h1) == 0, "%s whole: %s", patterns[i], ssm_last_error());
        EXPECT(eval_task(m, &t, &r2, 5, 2, 37, 0, &s2, &c2, &h2) == 0, "%s chunks: %s", patterns[i], ssm_last_error());
        EXPECT(c1 == 5 && c2 == 5 && h1 == h2 && fabs(s1 - s2) < 1e-4 * s1,
               "layers %s: whole %.6f (%ld answers, %ld right), in chunks of 37 %.6f (%ld, %ld)", patterns[i], s1, c1,
               h1, s2, c2, h2);
        ssm_model_free(m);
    }
    TEST_END();
}

static double last_number(const char *path, const char *key) {
    char *text, pat[64];
    size_t len;
    if (file_read_all(path, &text, &len)) return NAN;
    double v = NAN;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    for (char *p = strstr(text, pat); p; p = strstr(p + 1, pat)) v = atof(p + strlen(pat));
    free(text);
    return v;
}

static void tiny_task_options(ssm_train_options *t, ssm_config *c, const char *out, const char *task) {
    ssm_train_options_default(t);
    t->task = task, t->out_dir = out, t->batch = 32, t->quiet = 1, t->eval_every = 100, t->val_seqs = 256;
    t->optim.steps = 300, t->optim.warmup = 20, t->optim.lr = 3e-3f;
    ssm_config_default(c);
    c->d_model = 32, c->n_layer = 2, c->attention.n_heads = 2;
    strcpy(c->layer_pattern, "a");
}

static void test_learns_mqar(const char *dir) {
    TEST_BEGIN("a tiny attention model learns mqar:seq=32,pairs=2,vocab=16 above chance in 300 steps (chance 1/8); "
               "ssm_eval_task at the validation seed scores what validation did");
    char out[512], metrics[600];
    snprintf(out, sizeof out, "%s/mqar", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    ssm_train_options t;
    ssm_config c;
    tiny_task_options(&t, &c, out, "mqar:seq=32,pairs=2,vocab=16");
    EXPECT(ssm_train(&t, &c) == 0, "ssm_train: %s", ssm_last_error());
    const double acc = last_number(metrics, "val_acc"), loss = last_number(metrics, "val_loss");
    EXPECT(acc > 0.3, "validation accuracy %.4f", acc);
    EXPECT(loss < 1.5, "validation loss %.4f (ln 8 = 2.08 is a uniform guess among the values)", loss);
    ssm_model *m = ssm_model_load(out);
    ssm_task_score sc;
    EXPECT(m && ssm_eval_task(m, "mqar:seq=32,pairs=2,vocab=16", SSM_VALIDATION_SEED, 256, 32, 1024, 0, &sc) == 0,
           "eval: %s", ssm_last_error());
    EXPECT(sc.answers == 512 && fabs(sc.accuracy - acc) < 1e-6 && fabs(sc.loss - loss) < 1e-5,
           "ssm_eval_task: accuracy %.6f loss %.6f over %ld answers; validation said %.6f, %.6f", sc.accuracy, sc.loss,
           sc.answers, acc, loss);
    EXPECT(ssm_eval_task(m, "mqar:seq=32,pairs=2,vocab=512", 1, 1, 1, 8, 0, &sc) == -1 &&
               strstr(ssm_last_error(), "larger than the byte vocabulary"),
           "a bad spec: %s", ssm_last_error());
    ssm_model_free(m);
    TEST_END();
}

/* ---- filler bytes ------------------------------------------------------------------------------------------------ */
static void test_noise_stream(void) {
    TEST_BEGIN("filler: a fraction rate of the stream, the real bytes in order between, only they are targets; "
               "seeded; rate 0 is the plain stream and the plain batches, bitwise");
    enum { N = 20000 };
    int *ids = xmalloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) ids[i] = 'a' + i % 26;
    const double rates[] = {0.25, 0.5, 0.75};
    for (int k = 0; k < 3; k++) {
        int *tok, *tgt, *tok2, *tgt2;
        rng_t r = {16}, r2 = {16};
        const size_t len = noise_stream(ids, N, rates[k], 0, &r, &tok, &tgt);
        EXPECT(noise_stream(ids, N, rates[k], 0, &r2, &tok2, &tgt2) == len && !memcmp(tok, tok2, sizeof(int) * len),
               "rate %g: one seed, two streams", rates[k]);
        size_t real = 0, counted = 0, bad = 0;
        for (size_t i = 0; i < len; i++) {
            /* a real position holds the next id in order; its target counted exactly when the next is real */
            const int is_real = tok[i] != 0;
            if (is_real) bad += tok[i] != ids[real++];
            if (i + 1 < len) bad += tgt[i] != (tok[i + 1] ? tok[i + 1] : -1);
            counted += tgt[i] >= 0;
        }
        const double frac = 1.0 - (double)N / len;
        EXPECT(real == N && bad == 0 && counted == N - (tok[0] != 0) && tgt[len - 1] == -1,
               "rate %g: %zu real, %zu wrong, %zu counted", rates[k], real, bad, counted);
        EXPECT(fabs(frac - rates[k]) < 0.02, "rate %g: filler is %.4f of the stream", rates[k], frac);
        free(tok), free(tgt), free(tok2), free(tgt2);
    }
    int *tok, *tgt;
    rng_t r = {17};
    EXPECT(noise_stream(ids, N, 0, 0, &r, &tok, &tgt) == N && r.state == 17, "rate 0: drew from the generator");
    int bad = 0;
    for (int i = 0; i < N; i++) bad += tok[i] != ids[i] || tgt[i] != (i + 1 < N ? ids[i + 1] : -1);
    EXPECT(bad == 0, "rate 0: %d positions differ from the plain stream", bad);
    free(tok), free(tgt), free(ids);
    /* the training windows: rate 0 draws what data_sample_batch draws, to the bit and the generator's state */
    dataset d = {.bytes = xmalloc(5000), .len = 5000, .train_len = 4500};
    for (int i = 0; i < 5000; i++) d.bytes[i] = (uint8_t)(i * 7 % 251);
    int a[2][4 * 33], b[2][4 * 33];
    rng_t ra = {18}, rb = {18};
    noise_sample_batch(&d, &ra, 4, 33, 0, 0, a[0], a[1]);
    data_sample_batch(&d, &rb, 4, 33, b[0], b[1]);
    EXPECT(!memcmp(a, b, sizeof a) && ra.state == rb.state, "rate 0: the batch or the generator differs");
    rng_t rn = {18};
    noise_sample_batch(&d, &rn, 4, 33, 0.5, 255, a[0], a[1]);
    int fill = 0, order = 1;
    for (int bb = 0; bb < 4; bb++)
        for (int i = 0; i < 33; i++) {
            const int x = a[0][bb * 33 + i];
            fill += x == 255;
            if (i > 0 && x != 255) order &= a[1][bb * 33 + i - 1] == x;
            if (x == 255 && i > 0) order &= a[1][bb * 33 + i - 1] == -1;
        }
    EXPECT(fill > 30 && fill < 100 && order, "rate 0.5 windows: %d filler of 132, targets in step %d", fill, order);
    free(d.bytes);
    EXPECT(noise_check(1.0, 0) == -1 && strstr(ssm_last_error(), "--noise-rate must be in [0, 1)"), "rate 1: %s",
           ssm_last_error());
    EXPECT(noise_check(-0.1, 0) == -1 && noise_check(NAN, 0) == -1 && noise_check(0.5, 256) == -1 &&
               strstr(ssm_last_error(), "--noise-byte must be a byte"),
           "bad rate or byte accepted: %s", ssm_last_error());
    TEST_END();
}

static void test_noise_eval(void) {
    TEST_BEGIN("bits per real byte: a model on a stream with filler scores the real bytes alone (the per-position "
               "losses restricted by hand)");
    enum { N = 300 };
    ssm_model *m = tiny_model("m", 0);
    int ids[N];
    for (int i = 0; i < N; i++) ids[i] = "the state space model reads bytes "[i % 34];
    int *tok, *tgt;
    size_t len;
    EXPECT(ssm_noise_stream(ids, N, 0.5, 0, 19, &tok, &tgt, &len) == 0, "%s", ssm_last_error());
    long count;
    const double total = ssm_eval_targets(m, tok, tgt, len, 64, 0, &count);
    /* the same stream through ssm_forward: every position's logits, the real targets summed by hand */
    ssm_state *s = ssm_state_new(m, 1);
    float *logits = xmalloc(sizeof(float) * len * 256);
    EXPECT(ssm_forward(m, s, tok, (int)len, logits, 0) == 0, "%s", ssm_last_error());
    double want = 0, filler_targets = 0;
    long real = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        const double l = position_loss(logits + i * 256, 256, tok[i + 1]);
        if (tok[i + 1]) want += l, real++;
        else filler_targets += l;
    }
    EXPECT(count == real && count == N - (tok[0] != 0), "scored %ld, %ld real targets", count, real);
    EXPECT(fabs(total - want) < 1e-4 * want, "scored %.6f, the real targets by hand %.6f (filler's %.3f)", total, want,
           filler_targets);
    EXPECT(ssm_noise_stream(ids, N, 1.0, 0, 19, &tok, &tgt, &len) == -1, "rate 1 accepted");
    ssm_state_free(s);
    free(logits), free(tok), free(tgt);
    ssm_model_free(m);
    TEST_END();
}

static void test_eval_windows(void) {
    TEST_BEGIN("ssm eval --window: every window scored on its own from an empty state, in passes of --chunk, equals "
               "the windows scored one by one (Mamba, attention, a hybrid); 0 is the stream with its state carried");
    enum { N = 301, W = 96, C = 40 };
    int ids[N];
    for (int i = 0; i < N; i++) ids[i] = "the state space model reads bytes "[i % 34];
    const char *patterns[] = {"m", "af", "maf"};
    for (int p = 0; p < 3; p++) {
        ssm_model *m = tiny_model(patterns[p], 0);
        long count, part;
        const double got = ssm_eval_windows(m, ids, ids + 1, N - 1, C, W, 0, &count);
        double want = 0;
        long want_count = 0;
        for (int at = 0; at < N - 1; at += W) { /* each window alone: one pass, a fresh state */
            const int n = N - 1 - at < W ? N - 1 - at : W;
            want += ssm_eval_windows(m, ids + at, ids + at + 1, (size_t)n, W, 0, 0, &part);
            want_count += part;
        }
        EXPECT(count == N - 1 && want_count == N - 1, "%s: scored %ld and %ld of %d", patterns[p], count, want_count,
               N - 1);
        EXPECT(fabs(got - want) < 1e-5 * want, "%s: windows of %d in passes of %d %.6f, one by one %.6f", patterns[p],
               W, C, got, want);
        const double carried = ssm_eval_windows(m, ids, ids + 1, N - 1, C, 0, 0, NULL);
        EXPECT(carried == ssm_eval_targets(m, ids, ids + 1, N - 1, C, 0, NULL), "%s: window 0 is not the stream",
               patterns[p]);
        if (!strchr(patterns[p], 'a')) /* a Mamba state carried through sees more than a window's start does */
            EXPECT(fabs(carried - got) > 1e-6 * got, "Mamba: windows %.6f, carried %.6f: the same", got, carried);
        ssm_model_free(m);
    }
    TEST_END();
}

static void test_eval_strided(void) {
    TEST_BEGIN("ssm eval --window W --stride S: a window every S positions from an empty state, each scoring what the "
               "one before did not reach, equals those windows scored one by one with the rest masked (several "
               "windows a pass: one batch with a short window after it, two batches ending at the stream's end); "
               "S = W is --window alone, bit for bit");
    enum { N = 301, C = 24 };
    const int shapes[2][2] = {{96, 40}, {60, 20}}; /* W, S: 6 whole windows and a short one; 13 whole (8 + 5) */
    int ids[N], masked[N];
    for (int i = 0; i < N; i++) ids[i] = "bytes read in windows that overlap "[i % 35];
    const char *patterns[] = {"m", "af", "maf"};
    for (int p = 0; p < 3; p++) {
        ssm_model *m = tiny_model(patterns[p], 0);
        for (int q = 0; q < 2; q++) {
            const int W = shapes[q][0], S = shapes[q][1];
            long count, part, want_count = 0;
            const double got = ssm_eval_strided(m, ids, ids + 1, N - 1, C, W, S, 0, &count);
            /* by hand: window k is [kS, kS + W) (the last one cut at N - 1), scored from the previous one's end */
            double want = 0;
            for (int ws = 0, prev_end = 0;; ws += S) {
                const int we = ws + W < N - 1 ? ws + W : N - 1;
                for (int i = ws; i < we; i++)
                    masked[i] = i < prev_end ? -1 : ids[i + 1];
                want += ssm_eval_windows(m, ids + ws, masked + ws, (size_t)(we - ws), W, W, 0, &part);
                want_count += part, prev_end = we;
                if (we == N - 1) break;
            }
            EXPECT(count == N - 1 && want_count == N - 1, "%s W %d S %d: scored %ld and %ld of %d", patterns[p], W, S,
                   count, want_count, N - 1);
            EXPECT(fabs(got - want) < 1e-5 * want, "%s W %d S %d: strided %.6f, windows by hand %.6f", patterns[p], W,
                   S, got, want);
            long wc;
            const double side = ssm_eval_windows(m, ids, ids + 1, N - 1, C, W, 0, &wc);
            EXPECT(ssm_eval_strided(m, ids, ids + 1, N - 1, C, W, W, 0, NULL) == side &&
                       ssm_eval_strided(m, ids, ids + 1, N - 1, C, W, 0, 0, NULL) == side,
                   "%s: stride W or 0 is not --window alone", patterns[p]);
            /* overlapping windows give the positions after the first window more context: another loss */
            EXPECT(fabs(got - side) > 1e-6 * side, "%s W %d S %d: strided %.6f, side by side %.6f: the same",
                   patterns[p], W, S, got, side);
        }
        /* int8 decode weights (eval --int8: passes of 16) serve passes of at most 16 positions: the windows go one at a
         * time, as the same windows scored by hand in passes of 16 do (batched, they would read float32 weights) */
        if (p == 0) {
            const int W = 60, S = 20;
            const double f32 = ssm_eval_strided(m, ids, ids + 1, N - 1, 16, W, S, 0, NULL);
            EXPECT(ssm_model_use_int8(m) == 0, "int8: %s", ssm_last_error());
            const double got = ssm_eval_strided(m, ids, ids + 1, N - 1, 16, W, S, 0, NULL);
            double want = 0;
            for (int ws = 0, prev_end = 0;; ws += S) {
                const int we = ws + W < N - 1 ? ws + W : N - 1;
                for (int i = ws; i < we; i++)
                    masked[i] = i < prev_end ? -1 : ids[i + 1];
                want += ssm_eval_windows(m, ids + ws, masked + ws, (size_t)(we - ws), 16, W, 0, NULL);
                prev_end = we;
                if (we == N - 1) break;
            }
            EXPECT(fabs(got - want) < 1e-5 * want && fabs(got - f32) > 1e-5 * f32,
                   "int8: strided %.6f, by hand %.6f, float32 %.6f", got, want, f32);
        }
        ssm_model_free(m);
    }
    TEST_END();
}

/* ---- resuming ---------------------------------------------------------------------------------------------------- */
static void test_resume(const char *dir) {
    TEST_BEGIN("runs with a task or filler resume bitwise, with the task and filler options from the checkpoint");
    char text[512];
    snprintf(text, sizeof text, "%s/text.txt", dir);
    char *buf = xmalloc(20000);
    for (int i = 0; i < 20000; i++) buf[i] = "the state space model reads bytes and learns "[(i * 7 + i / 45) % 45];
    CHECK(file_write_atomic(text, buf, 20000) == 0, "%s", ssm_last_error());
    free(buf);
    for (int k = 0; k < 2; k++) {
        char a[512], b[512], pa[600], pb[600];
        snprintf(a, sizeof a, "%s/resume_%d_a", dir, k);
        snprintf(b, sizeof b, "%s/resume_%d_b", dir, k);
        ssm_train_options t;
        ssm_config c;
        tiny_task_options(&t, &c, a, k == 0 ? "selcopy:seq=48,tokens=6,vocab=8" : NULL);
        strcpy(c.layer_pattern, "m");
        t.optim.steps = 16, t.eval_every = 5, t.val_seqs = 8, t.batch = 4, t.seq_len = 24;
        if (k == 1) t.data_path = text, t.noise_rate = 0.3, t.noise_byte = 7, t.eval_bytes = 2000;
        EXPECT(ssm_train(&t, &c) == 0, "uninterrupted: %s", ssm_last_error());
        t.out_dir = b, t.stop_after = 7;
        EXPECT(ssm_train(&t, &c) == 0, "first part: %s", ssm_last_error());
        /* the resume knows only the directory: everything else from the checkpoint */
        ssm_train_options r;
        char strings[8192];
        ssm_train_options_default(&r);
        r.out_dir = b, r.resume = 1, r.quiet = 1;
        EXPECT(ssm_train_options_load(b, &r, strings, sizeof strings) == 0, "%s", ssm_last_error());
        EXPECT(k == 0 ? r.task && !strcmp(r.task, "selcopy:seq=48,tokens=6,vocab=8") && r.val_seqs == 8
                      : !r.task && r.noise_rate == 0.3 && r.noise_byte == 7,
               "options not restored: task %s, val_seqs %d, noise %g byte %d", r.task ? r.task : "(none)", r.val_seqs,
               r.noise_rate, r.noise_byte);
        r.out_dir = b, r.resume = 1, r.quiet = 1, r.stop_after = 0;
        EXPECT(ssm_train(&r, NULL) == 0, "resumed: %s", ssm_last_error());
        test_expect_same_run(a, b, 16);
        snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
        snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
        const char *key = k == 0 ? "val_acc" : "val_bpb";
        EXPECT(last_number(pa, key) == last_number(pb, key) && isfinite(last_number(pa, key)), "last %s %g vs %g", key,
               last_number(pa, key), last_number(pb, key));
    }
    TEST_END();
}

int main(void) {
    /* tiny models: a second thread adds only its barriers (on a busy 2-core machine, minutes of them) */
    omp_set_num_threads(1);
    char dir[] = "/tmp/ssm_test_tasks_XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    test_specs();
    test_mqar();
    test_selcopy();
    test_induction();
    test_streams();
    test_masked_loss();
    test_argmax_hits();
    test_eval_chunks();
    test_noise_stream();
    test_noise_eval();
    test_eval_windows();
    test_eval_strided();
    test_learns_mqar(dir);
    test_resume(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_failures ? 1 : 0;
}
