/* Evaluation (see eval.h and ssm_eval_* in include/ssm.h): every scoring path runs model_forward_loss, whose loss
 * (xent_fwd_bwd) skips targets < 0; that is the whole of a synthetic task's answer mask and of filler bytes. */
#include "eval.h"
#include "common.h"
#include "io/noise.h"
#include "mixers/mixer.h"

#include <string.h>
#include <unistd.h>

/* SSM_EVAL_TRAIN_FORWARD=1 (a diagnostic, as SSM_SCAN_SEGMENTS is): the whole windows of W scored by the training
 * forward (model_train_forward, 8 windows at a time as a training batch, lean activations in a bf16 model on a GPU)
 * instead of the forward with a state (a last partial window as usual), so that the loss a training step reports can
 * be set beside the scoring forward's on the same held-out bytes. Returns the positions it scored, their loss sum in
 * *total and their count in *scored. */
static size_t eval_windows_train_forward(const ssm_model *m, const int *tokens, const int *targets, size_t n, size_t W,
                                         double *total, long *scored) {
    const char *tf = getenv("SSM_EVAL_TRAIN_FORWARD");
    size_t pos = 0;
    if (!W || !tf || atoi(tf) != 1) return 0;
    while (pos + W <= n) {
        const int B = (int)((n - pos) / W < 8 ? (n - pos) / W : 8);
        const double mean = model_train_forward((ssm_model *)m, tokens + pos, targets + pos, B, (int)W);
        *total += mean * m->acts.n_targets, *scored += m->acts.n_targets;
        pos += (size_t)B * W;
    }
    fprintf(stderr, "SSM_EVAL_TRAIN_FORWARD: %zu windows of %zu scored by the training forward\n", pos / W, W);
    return pos;
}

/* The progress line of a scoring run: pos of n positions through, the mean loss so far */
static void eval_progress(size_t pos, size_t n, double total, long scored) {
    fprintf(stderr, "\reval %5.1f%% | %.4f nats/token so far", 100.0 * pos / n, total / (scored ? scored : 1));
    fflush(stderr);
}

/* Overlapping windows (a stride S < W), several at a time: nb windows as the sequences of one state, their tokens
 * gathered [nb, T] a pass of T <= chunk, the positions before each window's first scored one (the end of the window
 * before; the first window's all scored) masked, -1, as are the positions past a short last window's end and rows of
 * no window (the last batch's: the first window's tokens). The same sums as a window at a time up to the order of float
 * additions, in fewer and larger passes: a window's own pass of S scored positions would run products of S rows
 * (docs/layers.md has the times). nb: at most EVAL_WINDOWS,
 * EVAL_ROWS positions a pass (with the CPU's decode weights, a decode-sized batch), and attention caches of at most
 * EVAL_CACHE_BYTES together. */
#define EVAL_WINDOWS 8
#define EVAL_ROWS 4096
#define EVAL_CACHE_BYTES ((size_t)1 << 30)
typedef struct {
    int nb, T;      /* windows a batch; positions a pass */
    ssm_state *s;   /* [nb] */
    int *tok, *tgt; /* [nb, T] */
} strided_batch;

static strided_batch strided_batch_new(const ssm_model *m, size_t W, int chunk, int grows) {
    strided_batch b = {1, (int)(W < (size_t)chunk ? W : (size_t)chunk), NULL, NULL, NULL};
    b.nb = imax(1, imin(EVAL_WINDOWS, EVAL_ROWS / b.T));
    if (model_decode_weights(m)) /* (the CPU's bf16 or int8 copy serves passes of decode-sized batches only) */
        b.nb = imax(1, imin(b.nb, MIXER_DECODE_ROWS / b.T));
    if (grows) {
        const size_t per = ssm_model_state_bytes_at(m, -1, (long)W);
        while (b.nb > 1 && (size_t)b.nb * per > EVAL_CACHE_BYTES) b.nb--;
    }
    /* (no room for the batch's state: fewer windows at a time) */
    while (!(b.s = ssm_state_new_ctx(m, b.nb, grows ? (long)W : 0)) && b.nb > 1) b.nb = imax(1, b.nb / 2);
    b.tok = xmalloc(sizeof(int) * (size_t)b.nb * b.T), b.tgt = xmalloc(sizeof(int) * (size_t)b.nb * b.T);
    return b;
}

static void strided_batch_free(strided_batch *b) {
    if (b->s) ssm_state_free(b->s);
    free(b->tok), free(b->tgt);
}

/* Scores the windows [ws + jS, + W) (cut at n), j < nb, up to the first that reaches n: returns how many */
static int strided_batch_run(strided_batch *b, const ssm_model *m, const int *tokens, const int *targets, size_t n,
                             size_t ws, size_t W, size_t S, double *total, long *scored) {
    int k = 1;
    while (k < b->nb && ws + (size_t)(k - 1) * S + W < n) k++;
    const size_t len = ws + W < n ? W : n - ws; /* (the first window is the longest) */
    ssm_state_reset(b->s);
    for (size_t p0 = 0; p0 < len; p0 += (size_t)b->T) {
        const int T = (int)(len - p0 < (size_t)b->T ? len - p0 : (size_t)b->T);
        for (int j = 0; j < b->nb; j++) {
            const size_t wj = ws + (size_t)(j < k ? j : 0) * S, end = wj + W < n ? wj + W : n;
            const size_t from = wj == 0 ? 0 : wj - S + W;
            for (int i = 0; i < T; i++) {
                const size_t at = wj + p0 + (size_t)i, in = at < end ? at : ws; /* (past its end: any token) */
                b->tok[(size_t)j * T + i] = tokens[in];
                b->tgt[(size_t)j * T + i] = j < k && at >= from && at < end ? targets[at] : -1;
            }
        }
        int c;
        *total += model_forward_loss(m, b->s, b->tok, b->tgt, T, &c, NULL);
        *scored += c;
    }
    return k;
}

double ssm_eval_strided(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk, long window,
                        long stride, int show_progress, long *count) {
    if (count) *count = 0;
    if (n < 1) return 0;
    /* windows of W positions, each from an empty state. Without --window, a model whose state grows (attention) reads
     * each chunk on its own, with a cache of one chunk: its context is the chunk, as in training; a Mamba-only model
     * carries its fixed-size state through the whole stream (W = 0), which a model trained on windows of T may not
     * read well far past T: asking for windows of T scores every model as it was trained. A stride S < W starts a
     * window every S positions, each scoring only what the one before did not reach (its last S; the first all of
     * its W), so that every position but the first W - S is scored with at least W - S of context */
    const int grows = model_state_grows(m);
    size_t W = window > 0 ? (size_t)window : grows ? (size_t)chunk : 0;
    if (W > n) W = n; /* (an attention cache no larger than the stream) */
    const size_t S = window > 0 && stride > 0 && (size_t)stride < W ? (size_t)stride : W;
    double total = 0;
    long scored = 0, passes = 0;
    if (S < W) {
        strided_batch b = strided_batch_new(m, W, chunk, grows);
        for (size_t ws = 0;; ws += S) {
            ws += (size_t)(strided_batch_run(&b, m, tokens, targets, n, ws, W, S, &total, &scored) - 1) * S;
            if (show_progress) eval_progress(ws + W < n ? ws + W : n, n, total, scored);
            if (ws + W >= n) break;
        }
        strided_batch_free(&b);
    } else {
        ssm_state *s = ssm_state_new_ctx(m, 1, grows ? (long)W : 0);
        for (size_t pos = eval_windows_train_forward(m, tokens, targets, n, window > 0 ? W : 0, &total, &scored);
             pos < n; passes++) {
            size_t T = n - pos < (size_t)chunk ? n - pos : (size_t)chunk;
            if (W && T > W - pos % W) T = W - pos % W; /* a pass never crosses a window's end */
            if (W && pos % W == 0) ssm_state_reset(s);
            int c;
            total += model_forward_loss(m, s, tokens + pos, targets + pos, (int)T, &c, NULL); /* scored where it runs */
            scored += c;
            pos += T;
            if (show_progress && passes % 64 == 0) eval_progress(pos, n, total, scored);
        }
        ssm_state_free(s);
    }
    if (show_progress) fprintf(stderr, "\r\033[K");
    if (count) *count = scored;
    return total;
}

double ssm_eval_windows(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk, long window,
                        int show_progress, long *count) {
    return ssm_eval_strided(m, tokens, targets, n, chunk, window, 0, show_progress, count);
}

double ssm_eval_targets(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk,
                        int show_progress, long *count) {
    return ssm_eval_windows(m, tokens, targets, n, chunk, 0, show_progress, count);
}

double ssm_eval_stream(const ssm_model *m, const int *ids, size_t n, int chunk, int show_progress) {
    return n < 2 ? 0 : ssm_eval_targets(m, ids, ids + 1, n - 1, chunk, show_progress, NULL);
}

double eval_split_streams(const ssm_model *m, const int *tokens, const int *targets, size_t len, int max_streams,
                          int T) {
    const int streams = imax(1, imin(max_streams, (int)(len / (size_t)(T + 1))));
    const size_t seg = len / streams; /* each stream predicts seg - 1 positions */
    /* attention: each chunk of T on its own from an empty state, as in training; that is a training batch, so the
     * training forward reads it (rows past the streams unscored, the batch training's own: no new activations): flash
     * attention and lean activations in a bf16 model on a GPU, where the forward with a cache would prefill every
     * chunk in float32 (the noise experiment's Transformer at 8 x 6144 on an H100: 75 s a validation of 4M positions,
     * against 110 ms a training step of 49K) */
    const int grows = model_state_grows(m), rows = grows ? max_streams : streams;
    ssm_state *s = grows ? NULL : ssm_state_new(m, streams);
    int *tok = xmalloc(sizeof(int) * rows * T), *tgt = xmalloc(sizeof(int) * rows * T);
    double total = 0;
    long count = 0;
    for (size_t pos = 0; pos + 1 < seg; pos += T) {
        int n = (int)(seg - 1 - pos < (size_t)T ? seg - 1 - pos : (size_t)T), c;
        /* a short last chunk is padded with ignored targets so every stream keeps shape [rows, T] */
        for (int b = 0; b < rows; b++)
            for (int i = 0; i < T; i++) {
                size_t at = (size_t)b * seg + pos + i;
                tok[b * T + i] = b < streams && i < n ? tokens[at] : 0;
                tgt[b * T + i] = b < streams && i < n ? targets[at] : -1;
            }
        if (grows) {
            const double mean = model_train_forward((ssm_model *)m, tok, tgt, rows, T);
            total += mean * m->acts.n_targets, count += m->acts.n_targets;
            continue;
        }
        total += model_forward_loss(m, s, tok, tgt, T, &c, NULL);
        count += c;
    }
    free(tok), free(tgt);
    ssm_state_free(s); /* (NULL: nothing) */
    return total / count;
}

/* 0 when n states of `context` positions fit in the CPU's memory (a GPU's allocator reports its own shortage). */
static int state_fits(const ssm_model *m, int n, long context) {
    if (!backend_is_host(m->be)) return 0;
    const double need = (double)n * ssm_model_state_bytes_at(m, -1, context);
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const double have = pages > 0 && page > 0 ? (double)pages * page : 0;
    if (have > 0 && need > have / 2)
        return ssm_error("%d sequences of %ld positions need %.1f GB of attention cache, more than half of this "
                         "machine's %.1f GB: use a smaller --batch", n, context, need / 1e9, have / 1e9);
    return 0;
}

int eval_task(const ssm_model *m, const task_spec *t, rng_t *rng, long n_seqs, int batch, int chunk,
              int show_progress, double *sum, long *count, long *hits) {
    *sum = 0, *count = 0, *hits = 0;
    if (t->vocab > m->cfg.vocab_size)
        return ssm_error("the task's ids reach %d, past the model's vocabulary of %d", t->vocab - 1, m->cfg.vocab_size);
    const int T = t->seq, C = chunk < T ? chunk : T, grows = model_state_grows(m);
    const int B = (int)(n_seqs < batch ? n_seqs : batch);
    if (B < 1) return 0;
    if (grows && state_fits(m, B, T)) return -1;
    /* sizes a user chooses (--batch, seq): a shortage is their error to fix, not an internal one */
    int *tok = malloc(sizeof(int) * (size_t)B * T), *tgt = malloc(sizeof(int) * (size_t)B * T);
    int *ctok = malloc(sizeof(int) * (size_t)B * C), *ctgt = malloc(sizeof(int) * (size_t)B * C);
    ssm_state *s = NULL;
    int rc = 0;
    if (!tok || !tgt || !ctok || !ctgt)
        rc = ssm_error("cannot allocate %d sequences of %d positions: use a smaller --batch", B, T);
    for (long done = 0; done < n_seqs && !rc; done += B) {
        const int nb = (int)(n_seqs - done < B ? n_seqs - done : B);
        if (!s || s->n_seq != nb) { /* the last group may be smaller */
            ssm_state_free(s);
            s = ssm_state_new_ctx(m, nb, grows ? T : 0); /* the cache holds the whole sequence */
        } else {
            ssm_state_reset(s);
        }
        task_sample_batch(t, rng, nb, tok, tgt);
        for (int pos = 0; pos < T; pos += C) { /* every chunk, answers or not: the state must go through it */
            const int n = T - pos < C ? T - pos : C;
            for (int b = 0; b < nb; b++) {
                memcpy(ctok + (size_t)b * n, tok + (size_t)b * T + pos, sizeof(int) * n);
                memcpy(ctgt + (size_t)b * n, tgt + (size_t)b * T + pos, sizeof(int) * n);
            }
            int c, h;
            const double l = model_forward_loss(m, s, ctok, ctgt, n, &c, &h);
            if (l < 0) { /* the state was sized for T: not expected, but reported rather than summed */
                rc = -1;
                break;
            }
            *sum += l, *count += c, *hits += h;
        }
        if (show_progress) {
            fprintf(stderr, "\reval %ld/%ld sequences | accuracy %.4f so far", done + nb, n_seqs,
                    (double)*hits / (*count ? *count : 1));
            fflush(stderr);
        }
    }
    if (show_progress) fprintf(stderr, "\r\033[K");
    ssm_state_free(s);
    free(tok), free(tgt), free(ctok), free(ctgt);
    return rc;
}

int ssm_task_check(const char *spec, int *seq) {
    task_spec t;
    if (!spec || task_parse(&t, spec)) return spec ? -1 : ssm_error("--task needs a SPEC, as mqar:seq=256,pairs=16");
    if (seq) *seq = t.seq;
    return 0;
}

int ssm_eval_task(const ssm_model *m, const char *spec, uint64_t seed, long n_seqs, int batch, int chunk,
                  int show_progress, ssm_task_score *out) {
    task_spec t;
    memset(out, 0, sizeof *out);
    if (ssm_task_check(spec, NULL) || task_parse(&t, spec)) return -1;
    if (n_seqs < 1 || batch < 1 || chunk < 1) return ssm_error("--n-seqs, --batch and --chunk must be at least 1");
    const long group = n_seqs < batch ? n_seqs : batch; /* sequences per forward */
    if ((long long)group * t.seq > (1LL << 30))
        return ssm_error("--batch %d x seq %d positions is too many at once (at most 2^30): use a smaller --batch",
                         batch, t.seq);
    rng_t rng = {seed};
    double sum;
    long hits;
    if (eval_task(m, &t, &rng, n_seqs, batch, chunk, show_progress, &sum, &out->answers, &hits)) return -1;
    out->loss = out->answers ? sum / out->answers : 0;
    out->accuracy = out->answers ? (double)hits / out->answers : 0;
    return 0;
}

int ssm_noise_stream(const int *ids, size_t n, double rate, int filler, uint64_t seed, int **tokens, int **targets,
                     size_t *len) {
    if (noise_check(rate, filler)) return -1;
    rng_t rng = {seed};
    *len = noise_stream(ids, n, rate, filler, &rng, tokens, targets);
    return 0;
}
