/* ssm: byte-level state space language models (Mamba) in C. The public API.
 * Every function that can fail on user input returns -1 or NULL and leaves a one-line message
 * for ssm_last_error(). */
#ifndef SSM_H
#define SSM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The shape of a model. Field names follow HF MambaConfig where one exists. */
typedef struct {
    int vocab_size;        /* 256 for byte models */
    int d_model;           /* hidden_size */
    int n_layer;           /* num_hidden_layers */
    int d_state;           /* state_size (N) */
    int d_conv;            /* conv_kernel */
    int expand;            /* d_inner = expand * d_model */
    int dt_rank;           /* time_step_rank; 0 means ceil(d_model / 16) */
    float norm_eps;        /* layer_norm_epsilon */
    int use_bias;          /* in_proj / out_proj biases (HF use_bias; default 0) */
    int use_conv_bias;     /* conv1d bias (HF use_conv_bias; default 1) */
    int tie_embeddings;    /* LM head shares the embedding (HF tie_word_embeddings; default 1) */
    char layer_pattern[32];/* one letter per layer kind, repeated over the stack: "m" = Mamba-1 */
} ssm_config;

typedef struct ssm_model ssm_model;
typedef struct ssm_state ssm_state; /* the autoregressive state of every layer, for n sequences */

const char *ssm_last_error(void);

/* The default small byte model (about 1M parameters). */
void ssm_config_default(ssm_config *cfg);
/* Fills derived fields (dt_rank 0 -> ceil(d_model/16)) and checks ranges; -1 with a message. */
int ssm_config_resolve(ssm_config *cfg);

ssm_model *ssm_model_new(const ssm_config *cfg, uint64_t seed); /* reference initialization */
ssm_model *ssm_model_load(const char *dir);                      /* config.json + model.safetensors */
int ssm_model_save(const ssm_model *m, const char *dir);         /* atomic; HF MambaForCausalLM form */
void ssm_model_free(ssm_model *m);
const ssm_config *ssm_model_config(const ssm_model *m);
size_t ssm_model_n_params(const ssm_model *m);
/* Keeps a bf16 copy of the weight matrices and uses it for decode steps and small batches (up to 16
 * rows): half the bytes read per token. Results then differ from float32 by bf16 rounding of the
 * weights (exact when the checkpoint was bf16). Training and long prefills stay float32. */
void ssm_model_use_bf16(ssm_model *m);

/* Bytes of autoregressive state one sequence carries in `layer` (or all layers when layer < 0). */
size_t ssm_model_state_bytes(const ssm_model *m, int layer);

/* Inference. The state starts empty (zeros); feed tokens to advance it. */
ssm_state *ssm_state_new(const ssm_model *m, int n_seq);
void ssm_state_reset(ssm_state *s);
void ssm_state_free(ssm_state *s);
/* Runs T tokens per sequence ([n_seq, T]) through the sequence (scan) path, carrying the state;
 * logits [n_seq, T, vocab] for every position, or only the last position when last_only != 0
 * (then logits is [n_seq, vocab]). */
void ssm_forward(const ssm_model *m, ssm_state *s, const int *tokens, int T, float *logits, int last_only);
/* One recurrent step: one token per sequence -> logits [n_seq, vocab]. O(1) in the sequence length. */
void ssm_step(const ssm_model *m, ssm_state *s, const int *tokens, float *logits);

#ifdef __cplusplus
}
#endif
#endif
