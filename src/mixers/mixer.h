/* The mixer interface: one implementation per kind of sequence mixer (Mamba-1 now; Mamba-2,
 * attention, MLP later). The model driver owns memory; a mixer declares its parameters and says how
 * much activation, scratch and state memory it needs, then computes into what it is handed. */
#ifndef SSM_MIXER_H
#define SSM_MIXER_H

#include "backend/backend.h"
#include "common.h"
#include "params.h"
#include "ssm.h"

/* The form of a mixer's activations (act_floats, temp_floats, mixer_ctx.form): float32; inference on a lean backend
 * (backend lean_acts: bf16 training on a GPU); training on a lean backend, where the largest activations are kept in
 * bf16. A kind without bf16_acts is always handed MIXER_ACTS_PLAIN. */
enum { MIXER_ACTS_PLAIN = 0, MIXER_ACTS_LEAN = 1, MIXER_ACTS_LEAN_TRAIN = 2 };

/* The CPU's decode copy of the parameters (ssm_model_use_bf16, ssm_model_use_int8): what matmul_xwT reads in place of
 * the float32 matrices for decode-sized batches, where reading the weights is the cost. */
typedef struct {
    mat_dtype dt;               /* MAT_BF16 or MAT_I8; MAT_F32: none */
    void *data;                 /* [layout.total] elements of dt at the parameters' offsets (MAT_I8: 2-D ones only) */
    float *scale;               /* MAT_I8: one per row of every 2-D parameter, from row_at[i] for layout item i */
    size_t *row_at;             /* [layout.n] (MAT_I8) */
    const param_layout *layout; /* the model's */
} decode_weights;

typedef struct {
    const ssm_config *cfg;
    const backend *be;     /* the ops and memory every pointer here belongs to */
    const float *w;        /* the model's flat parameter buffer (backend memory) */
    float *dw;             /* the flat gradient buffer (backward only) */
    const decode_weights *dec; /* the CPU's bf16 or int8 copy of w for decode-sized batches (mixer_linear), or NULL */
    const param_info *pi;  /* this mixer's tensors, in the order it declared them */
    const float *canon;    /* inference: the mixer's canonical tensors (canonicalize), or NULL: derive them */
    int form;              /* MIXER_ACTS_*: the layout of act and temp, and the dtypes of u, out and du (below) */
    const uint16_t *dout16; /* lean backward: dout rounded to bf16 [rows, d_model] as well, or NULL */
    long state_ctx;        /* forward with a state: the positions it holds (the kind's context(cfg, max_context)) */
} mixer_ctx;

typedef struct mixer_kind {
    const char *name;
    char code; /* its letter in ssm_config.layer_pattern */
    /* 1: implements the lean forms (MIXER_ACTS_LEAN*), where u, out and du are bf16 in training. 0: float32 alone; the
     * model converts at its boundary inside a bf16 model (slower, as correct), and its ops still run the backend's
     * bf16 GEMMs. A new kind starts at 0. */
    int bf16_acts;
    /* Adds the mixer's tensors under "backbone.layers.<layer>.mixer." and initializes nothing. */
    void (*declare)(param_layout *L, const ssm_config *cfg, int layer);
    /* Reference initialization of this mixer's tensors in the flat buffer w. */
    void (*init)(const mixer_ctx *ctx, float *w, rng_t *rng);
    /* form: a MIXER_ACTS_* value (a kind without bf16_acts is asked for MIXER_ACTS_PLAIN alone) */
    size_t (*act_floats)(const ssm_config *cfg, int B, int T, int lean); /* saved for backward, per layer */
    size_t (*temp_floats)(const ssm_config *cfg, int B, int T, int lean); /* forward intermediates the
                                                                           * backward recomputes: shared */
    size_t (*scratch_floats)(const ssm_config *cfg, int B, int T, int lean); /* backward workspace */
    /* per sequence, for a state of at most max_context positions (0: the least; a kind whose state does not grow
     * ignores it). A kind whose step needs its position inside a replayed decode graph keeps it in this memory. */
    size_t (*state_floats)(const ssm_config *cfg, long max_context);
    /* For a kind whose state grows with the context (attention's cache): the positions a state made for max_context
     * holds (0: the kind's default). The driver refuses a forward past them before it runs, and hands the number to
     * forward as ctx->state_ctx. NULL: the state does not grow (any number of positions). */
    long (*context)(const ssm_config *cfg, long max_context);
    /* For a kind whose state counts its positions (attention's cache): sets the count of each of the B sequences to
     * pos, the cache rows below it left as they are (zeros after a reset): the bench's decode at a context without
     * computing its prefill (model_state_seek). NULL: nothing to set. */
    void (*seek)(const mixer_ctx *ctx, float *state, int B, long pos);
    /* Tensors derived from the parameters alone (Mamba-1: A = -exp(A_log)), computed once per weights for
     * inference (kept by the state) instead of at every step. */
    size_t (*canon_floats)(const ssm_config *cfg);
    void (*canonicalize)(const mixer_ctx *ctx, float *canon);
    /* out [B*T, d_model] = mixer(u [B*T, d_model]), both dense (ld d_model): bf16 in MIXER_ACTS_LEAN_TRAIN, else
     * float32. act receives what backward needs, temp the rest of the intermediates (overwritten by the next
     * layer). state is the layer's state for B sequences (mixer-defined layout), carried in and out, or NULL: start
     * from zero (training). With T = 1 and a state this is the recurrent decode step. */
    void (*forward)(const mixer_ctx *ctx, float *act, float *temp, mat out, mat u, int B, int T, float *state);
    /* du [B*T, d_model] = grad wrt u (written; bf16 in MIXER_ACTS_LEAN_TRAIN, else float32) from dout (float32, and
     * ctx->dout16); u as the forward had it; parameter grads accumulate into ctx->dw. Recomputes the forward's temp
     * from act first (activation recomputation: memory for a little compute). */
    void (*backward)(const mixer_ctx *ctx, const float *act, float *temp, float *scratch, mat du, const float *dout,
                     mat u, int B, int T);
    /* 0 when be can run this mixer with cfg, else -1 with ssm_error(): asks be (backend_check_op) about the ops whose
     * sizes cfg sets, before a model moves to be. */
    int (*check)(const ssm_config *cfg, const backend *be);
} mixer_kind;

extern const mixer_kind mixer_mamba1, mixer_mamba2, mixer_attention, mixer_mlp;

/* A Mamba-1 layer's part of a fused decode step (backend.h's decode_mamba1; mamba1.c). */
void mamba1_decode_layer(const mixer_ctx *ctx, float *state, int B, m1_decode_layer *L);
/* A Mamba-2 layer's (backend.h's decode_mamba2; mamba2.c), and the gated norm's eps. */
void mamba2_decode_layer(const mixer_ctx *ctx, float *state, int B, m2_decode_layer *L);
#define MAMBA2_GATED_NORM_EPS 1e-5f /* mamba2.py: RMSNormGated(..., eps=1e-5), fixed */
/* An attention layer's part of a fused Transformer decode step (backend.h's decode_transformer; attention.c): its
 * matrices in ctx->w (the caller points them at its decode copy), its positions and caches in the state of B
 * sequences; and an MLP layer's (mlp.c). */
void attention_decode_layer(const mixer_ctx *ctx, float *state, int B, t_decode_layer *L);
void mlp_decode_layer(const mixer_ctx *ctx, t_decode_layer *L);

/* y[M,N] = x[M,K] @ W^T (+ bias[N], or NULL) for the weight W at w (inside ctx->w): the backend's matmul_xwT on the
 * float32 weights, or on the CPU's bf16 or int8 copy (ctx->dec) when there is one and M is a decode-sized batch (at
 * most MIXER_DECODE_ROWS rows). */
#define MIXER_DECODE_ROWS 16
void mixer_linear(const mixer_ctx *ctx, mat y, mat x, const float *w, const float *bias, int M, int N, int K);
/* The form a layer of kind k runs in on be: training or inference. */
int mixer_form(const mixer_kind *k, const backend *be, int training);

/* What the kinds share when declaring and initializing their tensors: */
/* adds the tensor "backbone.layers.<layer>.mixer.<tensor>" of ndim dimensions (shape) to L */
void mixer_param_add(param_layout *L, int layer, const char *tensor, int decay, int ndim, const int *shape);
/* the same with the shape written out: MIXER_PARAM(L, layer, "in_proj.weight", 1, rows, cols) */
#define MIXER_PARAM(L, layer, tensor, decay, ...)                                                                     \
    mixer_param_add(L, layer, tensor, decay, (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (int[]){__VA_ARGS__})
/* Floats of a bf16 tensor of n values, rounded up to 16 floats (64-byte alignment for the next one): a lean form's
 * share of the float-counted act, temp and scratch memory. */
static inline size_t mixer_bf16_floats(size_t n) { return ((n + 1) / 2 + 15) & ~(size_t)15; }
/* p[0..n) uniform in (-bound, bound): nn.Linear's and nn.Conv1d's default with bound 1/sqrt(fan_in) */
void mixer_fill_uniform(float *p, size_t n, float bound, rng_t *rng);
/* mamba_ssm's dt projection bias: softplus^-1(dt), dt log-uniform in [1e-3, 0.1] and floored at 1e-4 (one draw) */
float mixer_dt_bias_init(rng_t *rng);

/* The mixer for a layer-pattern letter, or NULL. */
const mixer_kind *mixer_by_code(char code);
/* The letters and their kinds, for messages: "m = mamba1, ..." */
const char *mixer_codes(void);

#endif
