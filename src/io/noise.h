/* Filler bytes in a byte stream (ssm train / eval --noise-rate R --noise-byte B): the stream the model reads holds the
 * filler at random positions, each position independently with probability R (so that a fraction R of the stream is
 * filler, in expectation), the real bytes in their order between. A target that is filler is -1: the loss, its
 * gradient and the bits per byte count real bytes alone ("bits per real byte"). */
#ifndef SSM_NOISE_H
#define SSM_NOISE_H

#include <stddef.h>

#include "common.h"
#include "io/data.h"

/* 0 when rate is in [0, 1) and filler a byte, else -1 with a one-line ssm_error() in the command line's words. */
int noise_check(double rate, int filler);

/* B windows of the noisy stream over d's training part, as data_sample_batch's: each from a random real byte, T+1
 * stream positions (T+1 real bytes at most); tokens = w[0..T), targets = w[1..T] with -1 where w is filler
 * ([B, T] each). */
void noise_sample_batch(const dataset *d, rng_t *rng, int B, int T, double rate, int filler, int *tokens,
                        int *targets);

/* All of ids[0..n) with filler inserted: *tokens and *targets [returned length] (malloc'd), target i the stream's
 * element i+1 where it is real, else -1 (the last: -1). rate 0 gives the ids themselves, every target counted. */
size_t noise_stream(const int *ids, size_t n, double rate, int filler, rng_t *rng, int **tokens, int **targets);

#endif
