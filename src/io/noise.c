/* Filler bytes in a byte stream (see noise.h). */
#include "io/noise.h"

/* One stream position: the filler with probability rate (53-bit uniform; nothing is drawn when rate is 0). */
static int is_filler(rng_t *rng, double rate) { return rate > 0 && (double)(rng_next(rng) >> 11) * 0x1p-53 < rate; }

int noise_check(double rate, int filler) {
    if (!(rate >= 0 && rate < 1))
        return ssm_error("--noise-rate must be in [0, 1): the fraction of the stream that is filler (got %g)", rate);
    if (filler < 0 || filler > 255) return ssm_error("--noise-byte must be a byte, 0 to 255 (got %d)", filler);
    return 0;
}

void noise_sample_batch(const dataset *d, rng_t *rng, int B, int T, double rate, int filler, int *tokens,
                        int *targets) {
    const size_t starts = d->train_len - (size_t)T; /* as data_sample_batch: T+1 real bytes fit after any start */
    for (int b = 0; b < B; b++) {
        const uint8_t *real = d->bytes + rng_next(rng) % starts;
        int *tok = tokens + (size_t)b * T, *tgt = targets + (size_t)b * T;
        for (int i = 0; i <= T; i++) {
            const int fill = is_filler(rng, rate), x = fill ? filler : *real++;
            if (i < T) tok[i] = x;
            if (i > 0) tgt[i - 1] = fill ? -1 : x;
        }
    }
}

size_t noise_stream(const int *ids, size_t n, double rate, int filler, rng_t *rng, int **tokens, int **targets) {
    size_t cap = n + n / 4 + 16, len = 0;
    int *tok = xrealloc_array(NULL, cap, sizeof(int)), *tgt = xrealloc_array(NULL, cap, sizeof(int));
    for (size_t next = 0; next < n;) { /* until every real id is placed */
        if (len == cap) {
            cap += cap / 2;
            tok = xrealloc_array(tok, cap, sizeof(int));
            tgt = xrealloc_array(tgt, cap, sizeof(int));
        }
        const int fill = is_filler(rng, rate);
        tok[len] = fill ? filler : ids[next++];
        if (len > 0) tgt[len - 1] = fill ? -1 : tok[len];
        len++;
    }
    if (len > 0) tgt[len - 1] = -1;
    *tokens = tok, *targets = tgt;
    return len;
}
