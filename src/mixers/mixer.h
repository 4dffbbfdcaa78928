/* The mixer interface: one implementation per kind of sequence mixer (Mamba-1 now; Mamba-2,
 * attention, MLP later). The model driver owns memory; a mixer declares its parameters and says how
 * much activation, scratch and state memory it needs, then computes into what it is handed. */
#ifndef SSM_MIXER_H
#define SSM_MIXER_H

#include "backend/backend.h"
#include "common.h"
#include "params.h"
#include "ssm.h"

typedef struct {
    const ssm_config *cfg;
    const backend *be;     /* the ops and memory every pointer here belongs to */
    const float *w;        /* the model's flat parameter buffer (backend memory) */
    float *dw;             /* the flat gradient buffer (backward only) */
    const uint16_t *w16;   /* bf16 copy of w for small-batch decode on the CPU (be->matmul_xwT_bf16), or NULL */
    const param_info *pi;  /* this mixer's tensors, in the order it declared them */
    const float *canon;    /* inference: the mixer's canonical tensors (canonicalize), or NULL: derive them */
    const uint16_t *u16;   /* lean training: the mixer's input in bf16 (the u argument is then NULL), or NULL */
    const uint16_t *dout16; /* lean backward: the gradient of the mixer's output in bf16 as well (dout), or NULL */
    uint16_t *out16;        /* lean training: the forward writes its output in bf16 here (out is then NULL), or NULL */
    uint16_t *du16;         /* lean backward: du written in bf16 here (du is then NULL), or NULL */
} mixer_ctx;

/* The form of a forward's activations (act_floats, temp_floats): float32; a lean backend (the backend's lean_acts,
 * bf16 training on a GPU) running inference (with a state); a lean backend training. */
enum { MIXER_ACTS_PLAIN = 0, MIXER_ACTS_LEAN = 1, MIXER_ACTS_LEAN_TRAIN = 2 };

typedef struct mixer_kind {
    const char *name;
    char code; /* its letter in ssm_config.layer_pattern */
    /* Adds the mixer's tensors under "backbone.layers.<layer>.mixer." and initializes nothing. */
    void (*declare)(param_layout *L, const ssm_config *cfg, int layer);
    /* Reference initialization of this mixer's tensors in the flat buffer w. */
    void (*init)(const mixer_ctx *ctx, float *w, rng_t *rng);
    /* lean: a MIXER_ACTS_* form (below): on a lean backend the backward recomputes more, part of act is stored
     * in bf16, and training's temps are bf16 alone */
    size_t (*act_floats)(const ssm_config *cfg, int B, int T, int lean); /* saved for backward, per layer */
    size_t (*temp_floats)(const ssm_config *cfg, int B, int T, int lean); /* forward intermediates the
                                                                           * backward recomputes: shared */
    size_t (*scratch_floats)(const ssm_config *cfg, int B, int T, int lean); /* backward workspace */
    /* per sequence, for a state of at most max_context positions (0: the least; a kind whose state does not grow
     * ignores it). A kind whose step needs its position inside a replayed decode graph keeps it in this memory. */
    size_t (*state_floats)(const ssm_config *cfg, long max_context);
    /* Tensors derived from the parameters alone (Mamba-1: A = -exp(A_log)), computed once per weights for
     * inference (kept by the state) instead of at every step. */
    size_t (*canon_floats)(const ssm_config *cfg);
    void (*canonicalize)(const mixer_ctx *ctx, float *canon);
    /* out [B*T, d_model] = mixer(u [B*T, d_model]); act receives what backward needs, temp the rest of
     * the intermediates (overwritten by the next layer). state is the layer's state for B sequences
     * (mixer-defined layout), carried in and out, or NULL: start from zero (training). With T = 1 and a
     * state this is the recurrent decode step. */
    void (*forward)(const mixer_ctx *ctx, float *act, float *temp, float *out, const float *u, int B, int T,
                    float *state);
    /* du [B*T, d_model] = grad wrt u (written); parameter grads accumulate into ctx->dw. Recomputes the
     * forward's temp from act first (activation recomputation: memory for a little compute). */
    void (*backward)(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, float *du,
                     const float *dout, const float *u, int B, int T);
    /* 0 when be can run this mixer with cfg, else -1 with ssm_error(): asks be (backend_check_op) about the ops whose
     * sizes cfg sets, before a model moves to be. */
    int (*check)(const ssm_config *cfg, const backend *be);
} mixer_kind;

extern const mixer_kind mixer_mamba1;

/* y[M,N] = x[M,K] @ W^T for the weight W at w (inside ctx->w): float32 SGEMM, or the bf16 copy when
 * there is one and M is a decode-sized batch. */
void mixer_linear(const mixer_ctx *ctx, float *y, int ldy, const float *x, int ldx, const float *w, int M, int N,
                  int K);

/* The mixer for a layer-pattern letter, or NULL. */
const mixer_kind *mixer_by_code(char code);

#endif
