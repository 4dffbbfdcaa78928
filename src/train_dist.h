/* The data-parallel side of training (docs/distributed.md): what src/train.c does differently with several ranks
 * (src/dist/). Every rank holds the whole model and a shard of the AdamW moments (ZeRO-1); each computes the
 * gradient of its rows of the global batch, the gradients are summed across ranks, each rank steps its shard of
 * the weights and the shards are gathered, so the weights stay identical everywhere. Rank 0 alone validates,
 * logs and checkpoints. With one rank every function here is the identity, and the loop is the single-process
 * one. */
#ifndef SSM_TRAIN_DIST_H
#define SSM_TRAIN_DIST_H

#include "io/checkpoint.h"
#include "io/source.h"
#include "model.h"
#include "optim.h"

/* Collectively: has any rank failed? 0 when none has. Otherwise the job is left (dist_stop) and this returns -1
 * on the lowest failed rank (whose ssm_error() says why) and -2 on the others (the quiet ones, see ssm.h). */
int train_dist_fail_together(int failed);
/* Rank 0's weights, AdamW moments and progress onto every rank, so that all start from the same bits whatever
 * each one read from disk (a lagging network filesystem, a new run's initialization). Host memory: before the
 * model moves to a device. */
void train_dist_share_state(ssm_model *m, adamw_state *opt, train_progress *prog);
/* -1 with ssm_error() when this rank's options, model shape or data differ from rank 0's (a data file that is not
 * the same on every machine, a command line that differs). Collective. */
int train_dist_check_same_run(const ssm_train_options *t, const ssm_model *m, const batch_source *src);
/* The loss scale for model_train_backward that makes the sum over ranks of the gradients the gradient of the mean
 * over the global micro-batch, and that mean loss (in *global_loss), from this rank's mean loss over its `local`
 * scored positions. The counts may differ between ranks (a task's answers, filler bytes). Collective. */
float train_dist_micro_batch(double local_loss, int local, int grad_accum, double *global_loss);
/* The gradient summed across ranks, in place: host memory over MPI (or the --gpus world's NCCL), a GPU's over NCCL
 * on the backend's stream. */
void train_dist_reduce_grads(ssm_model *m);
/* ZeRO-1: keeps only this rank's shard of the AdamW moments (dist_shard), so that each rank holds and updates
 * 1/ranks of them; adamw_update then steps that shard of the weights, and train_dist_gather_weights sends each
 * rank's updated shard to all (on a GPU over NCCL, then the bf16 weight shadow is rounded again from all of them).
 * Host or device memory: the model's backend's. */
void train_dist_shard_optimizer(adamw_state *opt);
void train_dist_gather_weights(ssm_model *m);
/* All the moments, for a checkpoint: opt itself when it holds them all; else, collectively, a copy gathered from
 * every rank's shard into *full on rank 0 (NULL on the others). Free it with train_dist_moments_free. */
const adamw_state *train_dist_moments(const adamw_state *opt, adamw_state *full);
void train_dist_moments_free(const adamw_state *moments, adamw_state *full);

#endif
