/* The optimizer: AdamW with torch.optim.AdamW's arithmetic over the flat parameter buffer (moments on the
 * model's backend), the learning-rate schedule and global-norm clipping. Used by the training loop
 * (src/train.c) and saved by checkpoints (src/io/checkpoint.c). */
#ifndef SSM_OPTIM_H
#define SSM_OPTIM_H

#include "model.h"

typedef struct {
    const backend *be;          /* the model's backend: m, v and decay_mask live there, */
    int device;                 /* on this device of it (cuda:N) */
    const ssm_model *model;     /* in whose device context (adamw_free binds it) */
    float *m, *v;               /* [hi - lo] first and second moments of parameters [lo, hi) */
    size_t lo, hi;              /* the parameters whose moments this process holds and updates: all of them
                                   (0, layout.total), or one rank's shard (ZeRO-1, src/train_dist.c) */
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
void adamw_free(adamw_state *s); /* before the model is freed */
/* Moves the moments to the model's backend (after ssm_model_set_device); all of them (not a shard). */
void adamw_follow_model(adamw_state *s, const ssm_model *m);
/* Host copies of the moments (for checkpoints), all n of them (not a shard); the caller frees them. */
void adamw_download(const adamw_state *s, size_t n, float **m, float **v);
/* One AdamW step with torch.optim.AdamW's arithmetic; decay only on tensors marked decay. Updates the parameters
 * [lo, hi) whose moments s holds (a shard: the caller gathers the others' afterwards). */
void adamw_update(ssm_model *m, adamw_state *s, const ssm_optim_config *o, float lr);

#endif
