/* Synthetic tasks (see tasks.h): multi-query associative recall (Zoology's MQAR), selective copying (Mamba §4.1.1)
 * and induction heads (Mamba §4.1.2), drawn from our splitmix64 generator so that a seed gives the same sequences on
 * every machine and thread count. Ids stay inside the byte vocabulary, in disjoint ranges per role. */
#include "io/tasks.h"

#include <math.h>
#include <string.h>

#define TASK_MAX_SEQ (1 << 24) /* 16M positions: induction heads is tested at 2^16 and beyond */
#define TASK_MAX_VOCAB 256     /* the byte vocabulary */
#define MQAR_POWER_A 0.01      /* Zoology's power_a: query gaps drawn with p(gap g) ~ (g + 1)^(a - 1) */

static const struct {
    const char *name, *keys;
    task_spec defaults;
} task_table[] = {
    {"mqar", "seq, pairs and vocab", {TASK_MQAR, 256, 256, 16, 0}},             /* Zoology Fig. 2, within bytes */
    {"selcopy", "seq, tokens and vocab", {TASK_SELCOPY, 4096, 16, 0, 16}},      /* Mamba Table 1 */
    {"induction", "seq and vocab", {TASK_INDUCTION, 256, 16, 0, 0}},            /* Mamba Table 2 (training) */
};
#define N_TASKS (sizeof task_table / sizeof task_table[0])

/* A positive decimal no larger than TASK_MAX_SEQ from [p, end): 0, or -1. */
static int parse_size(const char *p, const char *end, int *out) {
    long v = 0;
    if (p == end) return -1;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
        if (v > TASK_MAX_SEQ) return -1;
    }
    if (v < 1) return -1;
    *out = (int)v;
    return 0;
}

/* The ranges each task needs; the message says which key to change. */
static int task_check(const task_spec *t, const char *spec) {
#define NEED(cond, ...)                                                                                                \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            char why[256];                                                                                             \
            snprintf(why, sizeof why, __VA_ARGS__);                                                                    \
            return ssm_error("--task %.80s: %s", spec, why);                                                           \
        }                                                                                                              \
    } while (0)
    NEED(t->vocab <= TASK_MAX_VOCAB, "vocab %d is larger than the byte vocabulary (256)", t->vocab);
    switch (t->kind) {
    case TASK_MQAR:
        NEED(t->vocab >= 4, "vocab must be at least 4 (keys in [1, vocab/2), values in [vocab/2, vocab))");
        NEED(t->pairs < t->vocab / 2, "pairs %d needs as many distinct keys in [1, %d): at most %d pairs at vocab %d",
             t->pairs, t->vocab / 2, t->vocab / 2 - 1, t->vocab);
        NEED(t->seq % 2 == 0 && t->seq >= 4 * t->pairs,
             "seq must be even and at least 4 x pairs = %d (the pairs, then a query region as long), got %d",
             4 * t->pairs, t->seq);
        break;
    case TASK_SELCOPY:
        NEED(t->vocab >= 3, "vocab must be at least 3 (noise 0, data in [1, vocab-1), marker vocab-1)");
        NEED(t->seq >= 2 * t->tokens, "seq must be at least 2 x tokens = %d (the tokens among noise, then a marker "
             "per token), got %d", 2 * t->tokens, t->seq);
        break;
    case TASK_INDUCTION:
        NEED(t->vocab >= 3, "vocab must be at least 3 (tokens in [0, vocab-1), the special token vocab-1)");
        NEED(t->seq >= 4, "seq must be at least 4, got %d", t->seq);
        break;
    }
#undef NEED
    return 0;
}

int task_parse(task_spec *t, const char *spec) {
    const char *colon = strchr(spec, ':');
    const size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    size_t k = 0;
    while (k < N_TASKS && !(strlen(task_table[k].name) == name_len && !strncmp(task_table[k].name, spec, name_len))) k++;
    if (k == N_TASKS)
        return ssm_error("--task %.80s: unknown task; expected mqar:seq=256,pairs=16, selcopy:seq=4096,vocab=16,"
                         "tokens=16 or induction:seq=256 (docs/tasks.md)", spec);
    *t = task_table[k].defaults;
    unsigned seen = 0;
    for (const char *p = colon ? colon + 1 : NULL; p;) { /* key=value, comma-separated */
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
        const size_t key_len = eq ? (size_t)(eq - p) : (size_t)(end - p);
        static const char *const keys[] = {"seq", "vocab", "pairs", "tokens"};
        int *fields[] = {&t->seq, &t->vocab, &t->pairs, &t->tokens};
        int j = 0;
        while (j < 4 && !(strlen(keys[j]) == key_len && !strncmp(keys[j], p, key_len))) j++;
        /* each task its own keys: pairs for mqar, tokens for selcopy */
        const int takes = j < 2 || (j == 2 && t->kind == TASK_MQAR) || (j == 3 && t->kind == TASK_SELCOPY);
        if (j == 4 || !takes)
            return ssm_error("--task %.80s: %s takes %s, not '%.*s'", spec, task_table[k].name, task_table[k].keys,
                             (int)(key_len < 40 ? key_len : 40), p);
        if (seen & (1u << j)) return ssm_error("--task %.80s: %s is given twice", spec, keys[j]);
        seen |= 1u << j;
        if (!eq || parse_size(eq + 1, end, fields[j]))
            return ssm_error("--task %.80s: %s needs a whole number in [1, %d], as %s=256", spec, keys[j], TASK_MAX_SEQ,
                             keys[j]);
        p = comma ? comma + 1 : NULL;
    }
    return task_check(t, spec);
}

void task_format(const task_spec *t, char *buf, size_t cap) {
    switch (t->kind) {
    case TASK_MQAR: snprintf(buf, cap, "mqar:seq=%d,pairs=%d,vocab=%d", t->seq, t->pairs, t->vocab); break;
    case TASK_SELCOPY: snprintf(buf, cap, "selcopy:seq=%d,tokens=%d,vocab=%d", t->seq, t->tokens, t->vocab); break;
    case TASK_INDUCTION: snprintf(buf, cap, "induction:seq=%d,vocab=%d", t->seq, t->vocab); break;
    }
}

int task_answers(const task_spec *t) {
    return t->kind == TASK_MQAR ? t->pairs : t->kind == TASK_SELCOPY ? t->tokens : 1;
}

/* ---- the generators -------------------------------------------------------------------------------------------- */

static int draw(rng_t *rng, int n) { return (int)(rng_next(rng) % (uint64_t)n); } /* uniform in [0, n) */

/* k distinct ids of [lo, hi) in random order (the first k of a Fisher-Yates shuffle), into out[k]. */
static void draw_distinct(rng_t *rng, int lo, int hi, int k, int *out) {
    int pool[TASK_MAX_VOCAB];
    const int n = hi - lo;
    for (int i = 0; i < n; i++) pool[i] = lo + i;
    for (int i = 0; i < k; i++) {
        const int j = i + draw(rng, n - i), x = pool[j];
        pool[j] = pool[i], pool[i] = x;
        out[i] = x;
    }
}

/* Zoology's multiquery_ar with a filler of 0 (its Fig. 2): the pairs k0 v0 k1 v1 ... first, then a query region
 * of zeros in which each key appears once, at an even offset 2g drawn without replacement with p(g) ~ (g+1)^(a-1)
 * (most queries come soon after the pairs). At a query the target is the key's value.
 *   tokens  k0 v0 k1 v1 .. | 0 0 k1 0 0 0 k0 0 ..      keys [1, V/2), values [V/2, V), distinct within a sequence
 *   targets -1 ...         | -1 -1 v1 -1 -1 -1 v0 -1 */
static void sample_mqar(const task_spec *t, rng_t *rng, int *tok, int *tgt) {
    const int P = t->pairs, half = t->vocab / 2, space = (t->seq - 2 * P) / 2;
    int keys[TASK_MAX_VOCAB], values[TASK_MAX_VOCAB];
    draw_distinct(rng, 1, half, P, keys);
    draw_distinct(rng, half, t->vocab, P, values);
    for (int i = 0; i < t->seq; i++) tok[i] = 0, tgt[i] = -1;
    for (int i = 0; i < P; i++) tok[2 * i] = keys[i], tok[2 * i + 1] = values[i];
    double *w = xmalloc(sizeof(double) * space); /* the gaps' weights; 0 once drawn */
    for (int g = 0; g < space; g++) w[g] = pow(g + 1.0, MQAR_POWER_A - 1.0);
    for (int i = 0; i < P; i++) {
        double total = 0;
        for (int g = 0; g < space; g++) total += w[g];
        double u = (double)(rng_next(rng) >> 11) * 0x1p-53 * total;
        int gap = -1;
        for (int g = 0; g < space; g++) {
            if (w[g] == 0) continue;
            gap = g; /* the last one left, should rounding carry u past the end */
            if ((u -= w[g]) < 0) break;
        }
        w[gap] = 0;
        const int at = 2 * P + 2 * gap;
        tok[at] = keys[i], tgt[at] = values[i];
    }
    free(w);
}

/* The copying task of S4's copying.py in its selective form (Mamba §4.1.1): `tokens` data ids at random positions
 * (in order) among noise, then one marker per data id; at the k-th marker the target is the k-th data id.
 *   tokens  0 0 d0 0 d1 0 0 d2 0 ... 0 | m m m        noise 0, data [1, V-1), marker V-1
 *   targets -1 ...                     | d0 d1 d2 */
static void sample_selcopy(const task_spec *t, rng_t *rng, int *tok, int *tgt) {
    const int M = t->tokens, span = t->seq - M; /* data positions in [0, span) */
    for (int i = 0; i < t->seq; i++) tok[i] = 0, tgt[i] = -1;
    /* Floyd's sampling of M distinct positions, marked in tok (1: taken; the data ids are written after) */
    for (int j = span - M; j < span; j++) {
        const int p = draw(rng, j + 1);
        tok[tok[p] ? j : p] = 1;
    }
    for (int i = 0, k = 0; i < span; i++)
        if (tok[i]) {
            tok[i] = 1 + draw(rng, t->vocab - 2);
            tgt[span + k++] = tok[i];
        }
    for (int k = 0; k < M; k++) tok[span + k] = t->vocab - 1;
}

/* Induction heads as H3/Mamba's synthetics set it: random ids, the special id once at a random position followed by
 * some id x, and the special id again at the last position, whose target is x.
 *   tokens  r r r s x r r ... r s        ids [0, V-1), special V-1 (nowhere else)
 *   targets -1 ...              x */
static void sample_induction(const task_spec *t, rng_t *rng, int *tok, int *tgt) {
    const int T = t->seq, special = t->vocab - 1;
    for (int i = 0; i < T; i++) tok[i] = draw(rng, special), tgt[i] = -1;
    const int p = draw(rng, T - 2); /* in [0, T-3]: x at p+1 stays before the last position */
    tok[p] = special;
    tok[T - 1] = special, tgt[T - 1] = tok[p + 1];
}

void task_sample(const task_spec *t, rng_t *rng, int *tokens, int *targets) {
    switch (t->kind) {
    case TASK_MQAR: sample_mqar(t, rng, tokens, targets); break;
    case TASK_SELCOPY: sample_selcopy(t, rng, tokens, targets); break;
    case TASK_INDUCTION: sample_induction(t, rng, tokens, targets); break;
    }
}

void task_sample_batch(const task_spec *t, rng_t *rng, int B, int *tokens, int *targets) {
    for (int b = 0; b < B; b++) task_sample(t, rng, tokens + (size_t)b * t->seq, targets + (size_t)b * t->seq);
}
