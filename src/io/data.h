/* Byte datasets: a file read into memory, split into a training head and a held-out validation tail (or a training
 * file followed by a validation file), sampled as random windows (training) or walked in order (evaluation). */
#ifndef SSM_DATA_H
#define SSM_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    char *path;
    uint8_t *bytes; /* whole file (with a validation file: the training file, then it) */
    size_t len;
    size_t train_len; /* bytes [0, train_len) train; [train_len, len) validation */
} dataset;

/* Loads `path` and holds out the last val_fraction of it; or, with val_path (not NULL), trains on all of
 * `path` and validates on val_path (val_fraction unused). Needs at least min_window + 1 bytes in each part (none
 * held out: validation is off); errors (missing, empty, too short) are one line naming the file and what is needed. */
int data_open(dataset *d, const char *path, const char *val_path, double val_fraction, int min_window);
void data_close(dataset *d);

/* B random windows of T+1 bytes from the training part: tokens = w[0..T), targets = w[1..T]. */
void data_sample_batch(const dataset *d, rng_t *rng, int B, int T, int *tokens, int *targets);

#endif
