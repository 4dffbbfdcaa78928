/* Byte datasets (see data.h). */
#include "io/data.h"
#include "io/fileio.h"

#include <string.h>

int data_open(dataset *d, const char *path, double val_fraction, int min_window) {
    memset(d, 0, sizeof *d);
    char *buf;
    size_t len;
    if (file_read_all(path, &buf, &len)) return -1;
    if (len == 0) {
        free(buf);
        return ssm_error("%s: the data file is empty", path);
    }
    size_t val = (size_t)(len * val_fraction);
    size_t need = (size_t)min_window + 1;
    if (len - val < need || (val_fraction > 0 && val < need)) {
        free(buf);
        return ssm_error("%s: %zu bytes is too short: windows of %d bytes need %zu training bytes%s "
                         "(lower --seq-len or use a larger file)",
                         path, len, min_window, need, val_fraction > 0 ? " and as many held out for validation" : "");
    }
    d->path = xstrdup(path);
    d->bytes = (uint8_t *)buf;
    d->len = len;
    d->train_len = len - val;
    return 0;
}

void data_close(dataset *d) {
    free(d->path);
    free(d->bytes);
    memset(d, 0, sizeof *d);
}

void data_sample_batch(const dataset *d, rng_t *rng, int B, int T, int *tokens, int *targets) {
    const size_t starts = d->train_len - (size_t)T; /* window start in [0, train_len - T - 1] */
    for (int b = 0; b < B; b++) {
        size_t s = rng_next(rng) % starts;
        for (int t = 0; t < T; t++) {
            tokens[(size_t)b * T + t] = d->bytes[s + t];
            targets[(size_t)b * T + t] = d->bytes[s + t + 1];
        }
    }
}
