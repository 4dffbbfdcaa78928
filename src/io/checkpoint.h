/* Training checkpoints: the model directory plus the optimizer's state and the run's progress. */
#ifndef SSM_CHECKPOINT_H
#define SSM_CHECKPOINT_H

#include "model.h"
#include "optim.h"

/* Checkpoints (src/io/checkpoint.c). The model directory holds config.json + model.safetensors (HF
 * MambaForCausalLM form); a training checkpoint adds optimizer.safetensors and train_state.json. The
 * whole directory is replaced atomically (written as DIR.tmp, then renamed); files in it that a save does
 * not write are carried into the next. A failed save leaves the previous checkpoint and no DIR.tmp. */
typedef struct {
    long step;
    uint64_t data_rng;
    double tokens_seen;
    double best_val_loss; /* nats/byte of the model in best/; NaN before the first validation */
    long best_step;
    long long data_bytes; /* size of the data file trained on (-1: unknown) */
    char data_path[4096]; /* the data file trained on, as train_state.json names it (ckpt_load fills it) */
} train_progress;
int ckpt_save(const char *dir, const ssm_model *m, const adamw_state *opt, const train_progress *p,
              const ssm_train_options *t);
/* best_dir = the model of the checkpoint just saved in ckpt_dir (config.json + model.safetensors, linked,
 * not copied) and validation.json (step, val_loss, val_bpb, and a task's val_acc unless NaN), replaced atomically as
 * checkpoints are. */
int ckpt_save_best(const char *ckpt_dir, const char *best_dir, long step, double val_loss, double val_acc);
int ckpt_load(const char *dir, ssm_model **m, adamw_state *opt, train_progress *p);
/* The options a checkpoint was trained with (defaults for --resume); the strings (data path, task) are copied into
 * buf, one after the other. */
int ckpt_load_options(const char *dir, ssm_train_options *t, char *buf, size_t cap);

#endif
