/* Training internals: AdamW, the learning-rate schedule, gradient clipping and checkpoints. The loop
 * and streaming evaluation are public (ssm_train, ssm_eval_stream in include/ssm.h). */
#ifndef SSM_TRAIN_H
#define SSM_TRAIN_H

#include "io/data.h"
#include "model.h"


typedef struct {
    const backend *be;          /* the model's backend: m, v and decay_mask live there */
    float *m, *v;               /* [layout.total] first and second moments */
    unsigned char *decay_mask;  /* [layout.total] 1 where weight decay applies (the layout's decay flags) */
    long step;                  /* optimizer steps taken */
} adamw_state;

/* Learning rate for 0-based step s: linear warmup to lr, then cosine to min_lr at `steps`. */
float lr_at(const ssm_optim_config *o, long s);
/* Global L2 norm of the gradient; scales it by clip/(norm+1e-6) when that is < 1 (torch's
 * clip_grad_norm_). clip <= 0 disables clipping. Returns the norm before clipping. The scaling is left to the next
 * adamw_update, which applies it as it reads the gradient (m->dw itself stays unscaled). */
double grad_clip(ssm_model *m, float clip);
/* Zero moments on the model's backend. */
void adamw_init(adamw_state *s, const ssm_model *m);
void adamw_free(adamw_state *s);
/* Moves the moments to the model's backend (after ssm_model_set_device). */
void adamw_follow_model(adamw_state *s, const ssm_model *m);
/* Host copies of the moments (for checkpoints); the caller frees them. */
void adamw_download(const adamw_state *s, size_t n, float **m, float **v);
/* One AdamW step with torch.optim.AdamW's arithmetic; decay only on tensors marked decay. */
void adamw_update(ssm_model *m, adamw_state *s, const ssm_optim_config *o, float lr);


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
 * not copied) and validation.json (step, val_loss, val_bpb), replaced atomically as checkpoints are. */
int ckpt_save_best(const char *ckpt_dir, const char *best_dir, long step, double val_loss);
int ckpt_load(const char *dir, ssm_model **m, adamw_state *opt, train_progress *p);
/* The options a checkpoint was trained with (defaults for --resume); data path copied to data_buf. */
int ckpt_load_options(const char *dir, ssm_train_options *t, char *data_buf, size_t data_cap);

#endif
