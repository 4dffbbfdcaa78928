/* Byte datasets (see data.h). */
#include "io/data.h"
#include "io/fileio.h"

#include <string.h>

/* The validation file appended to the training bytes: 0, or -1 with a one-line error (buf freed) */
static int append_validation(char **buf, size_t *len, const char *val_path, size_t need) {
    char *vb;
    size_t vlen;
    if (file_read_all(val_path, &vb, &vlen)) {
        free(*buf);
        return -1;
    }
    if (vlen < need) {
        free(*buf), free(vb);
        return ssm_error("%s: %zu bytes is too short for validation: windows of %zu bytes need %zu (lower --seq-len "
                         "or use a larger file)", val_path, vlen, need - 1, need);
    }
    char *all = xrealloc_array(*buf, *len + vlen, 1);
    memcpy(all + *len, vb, vlen);
    free(vb);
    *buf = all, *len += vlen;
    return 0;
}

int data_open(dataset *d, const char *path, const char *val_path, double val_fraction, int min_window) {
    memset(d, 0, sizeof *d);
    char *buf;
    size_t len;
    if (file_read_all(path, &buf, &len)) return -1;
    if (len == 0) {
        free(buf);
        return ssm_error("%s: the data file is empty", path);
    }
    const int file = val_path != NULL; /* validation from its own file, appended: all of path trains */
    const size_t need = (size_t)min_window + 1, val = file ? 0 : (size_t)(len * val_fraction);
    if (len - val < need || (!file && val_fraction > 0 && val < need)) {
        free(buf);
        return ssm_error("%s: %zu bytes is too short: windows of %d bytes need %zu training bytes%s "
                         "(lower --seq-len or use a larger file)", path, len, min_window, need,
                         !file && val_fraction > 0 ? " and as many held out for validation" : "");
    }
    const size_t train_len = len - val;
    if (file && append_validation(&buf, &len, val_path, need)) return -1;
    d->path = xstrdup(path);
    d->bytes = (uint8_t *)buf;
    d->len = len;
    d->train_len = train_len;
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
