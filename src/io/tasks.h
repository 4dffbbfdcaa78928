/* Synthetic tasks (ssm train / eval --task SPEC): seeded generators of token sequences in the byte vocabulary whose
 * loss counts only the answer positions (every other target is -1, which the loss ignores). The formats, exactly:
 * docs/tasks.md. */
#ifndef SSM_TASKS_H
#define SSM_TASKS_H

#include <stddef.h>

#include "common.h"

typedef enum { TASK_MQAR = 1, TASK_SELCOPY, TASK_INDUCTION } task_kind;

typedef struct {
    task_kind kind;
    int seq;    /* positions per sequence: tokens and targets [seq] */
    int vocab;  /* every id in [0, vocab) */
    int pairs;  /* mqar: key-value pairs (each key queried once) */
    int tokens; /* selcopy: data tokens to copy */
} task_spec;

/* SPEC = NAME[:key=value,...], NAME mqar (keys seq, pairs, vocab), selcopy (seq, tokens, vocab) or induction (seq,
 * vocab); absent keys take the published setups' values. 0, or -1 with a one-line ssm_error() naming the SPEC and
 * what to change. */
int task_parse(task_spec *t, const char *spec);
/* The canonical SPEC, every key written ("mqar:seq=256,pairs=16,vocab=256"): what a checkpoint stores, so that a
 * resumed run does not depend on today's defaults. */
void task_format(const task_spec *t, char *buf, size_t cap);
/* Answer positions per sequence: pairs (mqar), tokens (selcopy), 1 (induction). */
int task_answers(const task_spec *t);

/* One sequence drawn from rng: tokens [seq], targets [seq] (the answer at an answer position, else -1). */
void task_sample(const task_spec *t, rng_t *rng, int *tokens, int *targets);
/* B sequences, one after another from the same rng: tokens, targets [B, seq]. */
void task_sample_batch(const task_spec *t, rng_t *rng, int B, int *tokens, int *targets);

#endif
