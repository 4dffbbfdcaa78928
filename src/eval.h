/* Evaluation (src/eval.c): a stream with its state carried, a held-out stream split into parallel pieces, and a
 * synthetic task's loss and accuracy; shared by training's validation and ssm eval. */
#ifndef SSM_EVAL_H
#define SSM_EVAL_H

#include "io/tasks.h"
#include "model.h"

/* Training's validation of a byte stream: tokens, targets [len] (target i: what position i predicts, -1: not scored)
 * split into at most max_streams contiguous pieces, each read as a stream with its state carried, in one batched
 * pass of T positions at a time (a model whose state grows: each T on its own, as in training, by the training
 * forward in a batch of max_streams: m's activations are training's at batch max_streams x T). Returns the mean nats
 * per scored target. */
double eval_split_streams(const ssm_model *m, const int *tokens, const int *targets, size_t len, int max_streams,
                          int T);

/* n_seqs sequences of the task drawn from rng, `batch` at a time from an empty state, `chunk` positions per forward
 * (the state carried): the summed loss, the answers scored and the answers the argmax got right. 0, or -1 with
 * ssm_error() (ids past the model's vocabulary, a cache larger than the machine). */
int eval_task(const ssm_model *m, const task_spec *t, rng_t *rng, long n_seqs, int batch, int chunk,
              int show_progress, double *sum, long *count, long *hits);

#endif
