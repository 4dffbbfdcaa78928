/* The batches and validation stream of a training run (see source.h). */
#include "io/source.h"
#include "io/noise.h"

#include <string.h>

int source_open(batch_source *s, const ssm_train_options *t) {
    memset(s, 0, sizeof *s);
    if (t->task) {
        if (t->val_data_path)
            return ssm_error("--task validates on its own fixed stream: drop --val-data (or --task)");
        if (t->noise_rate != 0)
            return ssm_error("--noise-rate inserts filler into a --data file, not into a --task: drop one of them");
        if (task_parse(&s->task, t->task)) return -1;
        task_format(&s->task, s->task_name, sizeof s->task_name);
        return 0;
    }
    if (noise_check(t->noise_rate, t->noise_byte)) return -1;
    s->noise_rate = t->noise_rate, s->noise_byte = t->noise_byte;
    if (data_open(&s->data, t->data_path, t->val_data_path, t->val_fraction, t->seq_len)) return -1;
    size_t len = s->data.len - s->data.train_len;
    if (t->eval_bytes > 0 && (size_t)t->eval_bytes < len) len = (size_t)t->eval_bytes;
    if (len > 0) { /* --val-fraction 0 (no --val-data): nothing held out, nothing to validate */
        int *ids = xmalloc(sizeof(int) * len);
        for (size_t i = 0; i < len; i++) ids[i] = s->data.bytes[s->data.train_len + i];
        rng_t rng = {SSM_VALIDATION_SEED}; /* the same filler in every run: validations compare across runs */
        s->val_len = noise_stream(ids, len, s->noise_rate, s->noise_byte, &rng, &s->val_tokens, &s->val_targets);
        free(ids);
    }
    return 0;
}

void source_close(batch_source *s) {
    data_close(&s->data);
    free(s->val_tokens), free(s->val_targets);
    memset(s, 0, sizeof *s);
}

void source_sample_batch(const batch_source *s, rng_t *rng, int B, int T, int *tokens, int *targets) {
    if (s->task.kind) task_sample_batch(&s->task, rng, B, tokens, targets);
    else if (s->noise_rate > 0) noise_sample_batch(&s->data, rng, B, T, s->noise_rate, s->noise_byte, tokens, targets);
    else data_sample_batch(&s->data, rng, B, T, tokens, targets);
}
