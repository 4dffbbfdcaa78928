/* Training: AdamW, the learning-rate schedule, gradient clipping, the loop with validation,
 * metrics and checkpoints, and streaming evaluation. */
#ifndef SSM_TRAIN_H
#define SSM_TRAIN_H

#include "io/data.h"
#include "model.h"

typedef struct {
    float lr, min_lr;       /* peak and final learning rate (cosine from lr to min_lr after warmup) */
    int warmup, steps;      /* warmup steps; total optimizer steps */
    float weight_decay, beta1, beta2, eps, clip;
} optim_config;

typedef struct {
    float *m, *v; /* [layout.total] first and second moments */
    long step;    /* optimizer steps taken */
} adamw_state;

void optim_config_default(optim_config *o);
/* Learning rate for 0-based step s: linear warmup to lr, then cosine to min_lr at `steps`. */
float lr_at(const optim_config *o, long s);
/* Global L2 norm of the gradient; scales it by clip/(norm+1e-6) when that is < 1 (torch's
 * clip_grad_norm_). clip <= 0 disables clipping. Returns the norm before clipping. */
double grad_clip(ssm_model *m, float clip);
void adamw_init(adamw_state *s, const ssm_model *m);
void adamw_free(adamw_state *s);
/* One AdamW step with torch.optim.AdamW's arithmetic; decay only on tensors marked decay. */
void adamw_step(ssm_model *m, adamw_state *s, const optim_config *o, float lr);

typedef struct {
    const char *data_path;
    const char *out_dir;   /* run directory: metrics.jsonl and checkpoint/ */
    int batch, seq_len, grad_accum;
    double val_fraction;
    int eval_every;        /* steps between validation passes (and checkpoints) */
    long eval_bytes;       /* validation bytes per pass (0: the whole split) */
    uint64_t seed;
    int resume;
    int stop_after;        /* >0: stop (with a checkpoint) after this many steps of this invocation */
    int quiet;             /* no progress line */
    optim_config optim;
} train_options;

void train_options_default(train_options *t);
/* Trains per the options (creating or resuming the model in out_dir); returns 0 or -1 with a message.
 * `cfg` is the model shape for a new run (ignored on resume). */
int train_run(const train_options *t, const ssm_config *cfg);

/* Summed loss (nats) of the model on ids[0..n) read as one stream: chunks of `chunk` tokens, the
 * state carried across chunks, every token after the first predicted (n - 1 of them). */
double eval_stream(const ssm_model *m, const int *ids, size_t n, int chunk, int show_progress);

/* Checkpoints (src/io/checkpoint.c). The model directory holds config.json + model.safetensors (HF
 * MambaForCausalLM form); a training checkpoint adds optimizer.safetensors and train_state.json. The
 * whole directory is replaced atomically (written as DIR.tmp, then renamed). */
typedef struct {
    long step;
    uint64_t data_rng;
    double tokens_seen;
} train_progress;
int ckpt_save(const char *dir, const ssm_model *m, const adamw_state *opt, const train_progress *p,
              const train_options *t);
int ckpt_load(const char *dir, ssm_model **m, adamw_state *opt, train_progress *p);
/* The options a checkpoint was trained with (defaults for --resume); data path copied to data_buf. */
int ckpt_load_options(const char *dir, train_options *t, char *data_buf, size_t data_cap);

#endif
