/* The model: config, layer stack, parameter layout, and the forward/backward driver over mixers.
 * Internal; include/ssm.h is the public face. */
#ifndef SSM_MODEL_H
#define SSM_MODEL_H

#include "backend/backend.h"
#include "mixers/mixer.h"
#include "params.h"
#include "ssm.h"

typedef struct {
    const mixer_kind *kind;
    int norm;   /* layout index of backbone.layers.<i>.norm.weight */
    int mixer;  /* layout index of the mixer's first tensor */
} model_layer;

/* Everything one training step keeps between forward and backward, sized for B x T; backend memory. */
typedef struct {
    int B, T;
    int lean;              /* sized for a backend with lean_acts */
    int *tokens, *targets; /* [B*T] */
    int n_targets;         /* targets >= 0 in the last forward: the loss is their mean */
    float *resid;   /* [L, B*T, D] residual stream entering each layer */
    float *normed;  /* [B*T, D] rmsnorm(resid) = the mixer input, of one layer at a time (the backward
                     * recomputes it from resid); lean: the input of a bf16_acts layer in bf16 in its first half, and
                     * the residual gradient rounded to bf16 (that layer's ctx.dout16) in its second */
    float *normed32; /* [B*T, D] lean, when a layer's kind takes float32 alone: its input, in float32; else NULL */
    float *rstd;    /* [L, B*T] */
    float *mix_act; /* per-layer mixer activations saved for the backward, at mix_off[l] */
    size_t *mix_off;
    float *mix_temp; /* the mixers' shared temps (mixer_kind.temp_floats), max over layers */
    float *final_x; /* [B*T, D] residual after the last layer */
    float *final_n; /* [B*T, D] after norm_f */
    float *final_rstd; /* [B*T] */
    float *logits;  /* [B*T, V]; backward turns it into dlogits */
    float *dx, *du; /* [B*T, D] backward residual gradient and mixer-input gradient */
    float *scratch; /* mixer backward workspace, max over layers */
} model_acts;

struct ssm_model {
    ssm_config cfg;
    param_layout layout;
    const backend *be;   /* where the model computes: backend_cpu unless ssm_model_set_device moved it */
    int device;          /* the device's index on that backend (cuda:N), 0 on the CPU */
    void *ctx;           /* the backend's device context for this model (be->ctx_new), NULL on the CPU */
    float *w;            /* [layout.total] parameters in host memory: what load and save read and write; on a
                          * device, a mirror of wb brought up to date by model_sync_host */
    float *wb;           /* [layout.total] the parameters the backend computes with: w itself on the CPU */
    float *dw;           /* [layout.total] gradients, backend memory (training only) */
    float grad_coef;     /* grad_clip's scale for the next adamw_update, or 0: none */
    decode_weights dec;  /* the CPU's bf16 or int8 decode copy (dec.dt MAT_F32: none), of the weights of version
                          * dec_version */
    uint64_t dec_version;
    int host_stale;      /* wb changed on the device since w was last refreshed */
    int bf16;            /* ssm_model_use_bf16 was called: bf16 decode weights (CPU), bf16 GEMMs (CUDA) */
    int int8;            /* ssm_model_use_int8 was called: int8 decode weights (the CPU's GEMMs; on a GPU the fused
                          * Mamba-1 decode step) */
    decode_weights dec_dev; /* on a device, the fused decode step's bf16 or int8 copy of wb (decode_fused.c): data
                          * and scale in device memory, row_at the host's (dec's); dt MAT_F32: none. Current while
                          * dec_dev_version == w_version */
    uint64_t dec_dev_version;
    uint64_t w_version;  /* bumped whenever wb changes through the library (optimizer steps, device moves):
                          * states recompute their cached canonical tensors when it moves */
    model_layer *layers; /* [n_layer] */
    int emb, norm_f;     /* layout indices */
    int head;            /* layout index of the LM head: emb when tied, else lm_head.weight */
    model_acts acts;
};

struct ssm_state {
    const ssm_model *model;
    const backend *be; /* the model's backend when the state was made: all buffers below live there */
    int n_seq;
    long max_context;  /* positions the state was sized for (0: only fixed-size layer states) */
    long pos;          /* positions consumed since made or reset (all sequences together); the host's count, for
                        * the capacity check: a kind whose step needs its position keeps its own in data */
    long capacity;     /* positions the state holds (the least of its growing layers'), or 0: any number */
    const char *capacity_kind; /* the kind of the layer that sets capacity, for the message */
    float *data;       /* every layer's state for n_seq sequences, layer by layer */
    size_t *layer_off; /* [n_layer] */
    size_t total;      /* floats */
    /* workspace for ssm_forward/ssm_step, grown on demand */
    float *work;
    size_t work_cap;
    float *canon;          /* every layer's canonical tensors (mixer_kind.canonicalize), at canon_off[l] */
    size_t *canon_off;     /* [n_layer] */
    int canon_valid;       /* canon was computed from weights of version canon_version */
    uint64_t canon_version;
    int *tokens; /* [tok_cap] the tokens of a call, on the backend (unused on the CPU) */
    size_t tok_cap;
    int *targets; /* [tgt_cap] the targets of a model_forward_loss call, likewise */
    size_t tgt_cap;
    /* the decode step (T = 1) as a graph where the backend has them, valid for these buffers and flags */
    void *graph;
    const float *graph_work;
    const int *graph_tokens;
    const backend *graph_be;
    int graph_last_only;
    int graph_warm; /* a T = 1 forward already ran outside a capture (one-time set-up done: cuBLASLt
                     * workspace and plans, kernel attributes) */
    int graph_failed; /* the capture for these buffers failed: steps run op by op without trying again */
};

/* Builds the layout and layers of a config (resolved here); no parameter memory yet. */
ssm_model *model_layout_new(const ssm_config *cfg);
/* The host parameters of a model from model_layout_new (zeroed): 0, or -1 with a user-facing error when
 * they do not fit in memory. Separate so that a loader can check a file's tensors first. */
int model_alloc_weights(ssm_model *m);
/* The forward of ssm_forward (all T positions, state carried) scored on the backend: returns the summed
 * cross-entropy (nats) of targets [n_seq*T] (targets < 0 ignored; *count gets how many were scored) and, when hits is
 * not NULL, how many of them the argmax predicts (argmax_hits). The logits never leave the device. -1 with
 * ssm_error() when the T positions do not fit in the state (nothing run). */
double model_forward_loss(const ssm_model *m, ssm_state *s, const int *tokens, const int *targets, int T,
                          int *count, int *hits);
/* Makes m's device context the calling thread's (backend.h's ctx_bind; nothing on the CPU): first in every entry
 * that queues work on m's memory, so that each model's work uses its own device, handles and scratch. */
void model_bind(const ssm_model *m);
/* Whether a layer's state grows with the context (mixer_kind.context): then a state holds a bounded number of
 * positions, and evaluation and generation size their states for what they feed. */
int model_state_grows(const ssm_model *m);
/* Moves a reset state (ssm_state_reset) to position pos without computing a prefill: each layer that counts its
 * positions (mixer_kind.seek: attention) counts pos, its cache rows zeros; the others keep their zero state. Decode
 * time and memory at a context do not depend on what the cache holds: the bench measures them at long contexts so,
 * without a quadratic prefill. -1 with ssm_error() when pos leaves no room for a step in the state. */
int model_state_seek(const ssm_model *m, ssm_state *s, long pos);
/* Copies the backend's parameters into the host mirror m->w if they changed there (before saving). */
void model_sync_host(const ssm_model *m);
/* Makes m->dec, the host's decode copy of m->w in dt (MAT_BF16 or MAT_I8). */
void model_make_decode_weights(ssm_model *m, mat_dtype dt);
/* The CPU's decode copy of the weights when the model computes on the CPU and has one, else NULL. */
const decode_weights *model_decode_weights(const ssm_model *m);
/* Brings the state's canonical tensors (mixer_kind.canonicalize) up to date with the model's weights. */
void model_canonicalize(const ssm_model *m, ssm_state *s);

/* ---- the fused decode step (decode_fused.c) ---- */
/* The fused kernel a model of these layers takes on be: DECODE_FUSED_M1 (every layer Mamba-1, be has
 * decode_mamba1), DECODE_FUSED_M2 (Mamba-2, decode_mamba2), DECODE_FUSED_T (every layer attention or MLP,
 * decode_transformer), else 0. decode_fused_ready: the same on m's backend for
 * a step of B sequences where the fused step is the faster (or int8 weights need it; decode_fused.c),
 * unless SSM_DECODE_FUSED is 0 (the backend may still decline the sizes: decode_fused_step). */
enum { DECODE_FUSED_M1 = 1, DECODE_FUSED_M2 = 2, DECODE_FUSED_T = 3 };
int decode_fused_kind(const ssm_model *m, const backend *be);
int decode_fused_ready(const ssm_model *m, int B);
/* Scratch floats a fused step of B sequences needs (work below). */
size_t decode_fused_work_floats(const ssm_model *m, int B);
/* A fused step's arguments, for the kind's kernel (m1, m2 or t, their layers in l1, l2 or lt, host memory). */
typedef struct {
    int kind;
    m1_decode_args m1;
    m2_decode_args m2;
    t_decode_args t;
    m1_decode_layer *l1;
    m2_decode_layer *l2;
    t_decode_layer *lt;
} decode_fused_call;
/* The arguments of one step of s: tokens tok [n_seq] and logits lg [n_seq, V] in the backend's memory, work of
 * decode_fused_work_floats. The state's canonical tensors must be current (model_canonicalize). Matrices in int8 when
 * the model is (m->int8), bf16 when it is m->bf16, else float32. decode_fused_call_free releases the layers. */
void decode_fused_args(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work,
                       decode_fused_call *call);
void decode_fused_call_free(decode_fused_call *call);
/* One fused step: 0 when the backend ran it, -1 when it declined these sizes (nothing ran). */
int decode_fused_step(const ssm_model *m, ssm_state *s, const int *tok, float *lg, float *work);

/* A mixer context for layer l (dw may be NULL). */
mixer_ctx model_mixer_ctx(const ssm_model *m, int l);

/* Training: forward over tokens/targets [B*T] (targets < 0 ignored), returns the mean loss in nats
 * and keeps activations; backward accumulates loss_scale * d(mean loss) into m->dw (allocated on
 * first use); loss_scale = 1/k averages k accumulated micro-batches. */
double model_train_forward(ssm_model *m, const int *tokens, const int *targets, int B, int T);
void model_train_backward(ssm_model *m, float loss_scale);
void model_zero_grad(ssm_model *m);

#endif
