/* Where a training run's batches and validation come from: a byte file (src/io/data.c), the same with filler bytes
 * (noise.c), or a synthetic task (tasks.c). ssm_train draws every batch through here from its checkpointed RNG, so
 * that a resumed run draws what an uninterrupted one would have. */
#ifndef SSM_SOURCE_H
#define SSM_SOURCE_H

#include "io/data.h"
#include "io/tasks.h"
#include "ssm.h"

typedef struct {
    dataset data;           /* the byte file; empty with a task */
    task_spec task;         /* the task; kind 0: none */
    char task_name[96];     /* its canonical SPEC (task_format), "" without one */
    double noise_rate;      /* filler: a fraction of the stream the model reads (0: none) */
    int noise_byte;
    int *val_tokens;        /* [val_len] a file's validation stream (its held-out tail, filler inserted from */
    int *val_targets;       /* SSM_VALIDATION_SEED), target -1 where filler; NULL with a task or no tail */
    size_t val_len;
} batch_source;

/* Opens the task or the data file of t (windows of t->seq_len), and makes a file's validation stream (at most
 * t->eval_bytes real bytes, 0: all). 0, or -1 with a one-line ssm_error(). */
int source_open(batch_source *s, const ssm_train_options *t);
void source_close(batch_source *s);
/* B sequences of T positions from rng: tokens, targets [B, T] (targets -1 where nothing is scored). */
void source_sample_batch(const batch_source *s, rng_t *rng, int B, int T, int *tokens, int *targets);

#endif
