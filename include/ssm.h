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

/* The shape of a Mamba-1 layer ('m' in the layer pattern). Field names follow HF MambaConfig. */
typedef struct {
    int d_state;           /* state_size (N) */
    int d_conv;            /* conv_kernel */
    int expand;            /* d_inner = expand * d_model */
    int dt_rank;           /* time_step_rank; 0 means ceil(d_model / 16) */
    int use_bias;          /* in_proj / out_proj biases (HF use_bias; default 0) */
    int use_conv_bias;     /* conv1d bias (HF use_conv_bias; default 1) */
} ssm_mamba1_config;

/* The shape of an attention layer ('a' in the layer pattern): causal multi-head self-attention with grouped-query
 * heads and rotary positions. Field names follow HF LlamaConfig. */
typedef struct {
    int n_heads;           /* num_attention_heads; 0 means d_model / head_dim */
    int n_kv_heads;        /* num_key_value_heads, dividing n_heads (1: multi-query); 0 means n_heads */
    int head_dim;          /* head_dim; 0 means d_model / n_heads (64 when n_heads is 0 too); even (with RoPE) */
    float rope_theta;      /* rope_theta (default 10000); 0: no rotary positions (NemotronH's attention) */
    int sliding_window;    /* sliding_window: a query sees this many positions, itself included; 0: all */
    int max_context;       /* max_position_embeddings: the cache a decode state holds by default (4096) */
} ssm_attention_config;

/* The shape of a Mamba-2 (SSD) layer ('M' in the layer pattern). Field names follow HF Mamba2Config; d_inner =
 * expand * d_model = n_heads * head_dim, B and C shared by the heads of a group. */
typedef struct {
    int d_state;           /* state_size (N; default 128) */
    int d_conv;            /* conv_kernel (default 4) */
    int expand;            /* d_inner = expand * d_model (default 2) */
    int head_dim;          /* head_dim (P; default 64), dividing d_inner */
    int n_groups;          /* n_groups (G; default 1), dividing the heads d_inner / head_dim */
    int chunk_size;        /* chunk_size of the chunked SSD algorithm (default 256): a power of two */
    float dt_min, dt_max;  /* time_step_limit: dt clamped to [dt_min, dt_max] (default (0, inf): no clamp) */
    int use_bias;          /* in_proj / out_proj biases (HF use_bias; default 0) */
    int use_conv_bias;     /* conv1d bias (HF use_conv_bias; default 1) */
} ssm_mamba2_config;

/* The MLP's activation (ssm_mlp_config.hidden_act): HF's hidden_act / mlp_hidden_act names "silu" and "relu2". */
enum { SSM_MLP_SILU = 0, SSM_MLP_RELU2 = 1 };

/* The shape of an MLP layer ('f' in the layer pattern): SwiGLU, down(silu(gate(x)) * up(x)) (HF LlamaMLP), or the
 * squared ReLU, down(relu(up(x))^2) with no gate_proj (HF NemotronHMLP). */
typedef struct {
    int intermediate_size; /* intermediate_size; 0 means 8/3 d_model rounded up to a multiple of 64 */
    int hidden_act;        /* SSM_MLP_SILU (default: SwiGLU) or SSM_MLP_RELU2 */
} ssm_mlp_config;

/* The shape of a model: what every layer shares, the layer pattern, and each layer kind's own shape (a
 * kind's sub-config is read only by that kind). Field names follow HF configs where one exists. */
typedef struct {
    int vocab_size;        /* 256 for byte models */
    int d_model;           /* hidden_size */
    int n_layer;           /* num_hidden_layers */
    float norm_eps;        /* layer_norm_epsilon */
    int tie_embeddings;    /* LM head shares the embedding (HF tie_word_embeddings; default 1) */
    /* one letter per layer, repeated over the stack: m = Mamba-1, M = Mamba-2, a = attention, f = MLP (feed-forward); "af" is a
     * Transformer, "mmmaf" three Mamba-1 layers then a Transformer block */
    char layer_pattern[128];
    ssm_mamba1_config mamba1;
    ssm_mamba2_config mamba2;
    ssm_attention_config attention;
    ssm_mlp_config mlp;
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
int ssm_config_load(const char *dir, ssm_config *cfg);           /* the config.json alone of a model dir */
int ssm_model_save(const ssm_model *m, const char *dir);         /* atomic; HF MambaForCausalLM form */
void ssm_model_free(ssm_model *m);
const ssm_config *ssm_model_config(const ssm_model *m);
const char *ssm_model_layer_kind(const ssm_model *m, int layer); /* the layer's mixer kind, e.g. "mamba1" */
size_t ssm_model_n_params(const ssm_model *m);
/* bf16 where it pays, with float32 master weights. On the CPU: a bf16 copy of the weight matrices for
 * decode steps and small batches (up to 16 rows), half the bytes read per token; training and long
 * prefills stay float32. On CUDA: mixed precision, every GEMM on bf16 tensor cores with float32
 * accumulation (training included). Results differ from float32 by bf16 rounding (about 1e-2 relative). */
void ssm_model_use_bf16(ssm_model *m);
/* An int8 copy of the weight matrices with one float32 scale per row (max |row| / 127), read in place of the float32
 * ones by decode steps (on the CPU also small batches), a quarter of the bytes per token; training and long prefills
 * stay float32. On CUDA the fused decode step reads them: a model whose layers are all Mamba-1 or all Mamba-2, 1 to
 * 64 sequences a step, or all attention and MLP, 1 to 8 (-1 with ssm_last_error() for another model, or from the
 * step for more sequences). The cost in quality is
 * measured by `ssm eval --int8` (docs/performance.md). */
int ssm_model_use_int8(ssm_model *m);
/* Moves the model's computation to a device, "cpu", "cuda:N" (GPU N) or "cuda" (GPU 0): its parameters,
 * gradients and activations then live there, and states made afterwards too (make states after choosing the
 * device). Each model keeps its own device context (library handles, scratch), so several models, on one GPU or
 * on several, can be used side by side in one process. Inputs and logits stay host arrays; saving copies the
 * parameters back. Returns 0, or -1 with a one-line reason and fix in ssm_last_error()
 * (a malformed device name, no GPU N, an unsupported GPU, a build without CUDA). */
int ssm_model_set_device(ssm_model *m, const char *device);
const char *ssm_model_device(const ssm_model *m); /* "cpu" or "cuda" (whichever GPU) */
/* Whether a device ("cpu", "cuda", "cuda:N") can be used here: 1, or 0 with the reason and fix in
 * ssm_last_error(). */
int ssm_device_available(const char *device);

/* Bytes of autoregressive state one sequence carries in `layer` (or all layers when layer < 0): for a state that
 * holds `context` positions (a Mamba layer's is fixed; an attention layer's cache grows with it), or the least a
 * state holds (ssm_model_state_bytes: a Mamba model's whole state; attention's default cache, max_context). */
size_t ssm_model_state_bytes_at(const ssm_model *m, int layer, long context);
size_t ssm_model_state_bytes(const ssm_model *m, int layer);

/* Inference. The state starts empty (zeros); feed tokens to advance it. */
ssm_state *ssm_state_new(const ssm_model *m, int n_seq);
/* The same for at most max_context positions per sequence: the size of the layers whose state grows with the
 * context (an attention cache); 0 is ssm_state_new's, enough for the layers whose state is fixed (Mamba). */
ssm_state *ssm_state_new_ctx(const ssm_model *m, int n_seq, long max_context);
void ssm_state_reset(ssm_state *s);
/* Positions consumed since the state was made or reset (every sequence of a state advances together). */
long ssm_state_position(const ssm_state *s);
void ssm_state_free(ssm_state *s); /* before its model */
/* Runs T tokens per sequence ([n_seq, T]) through the sequence (scan) path, carrying the state;
 * logits [n_seq, T, vocab] for every position, or only the last position when last_only != 0
 * (then logits is [n_seq, vocab]). Returns 0, or -1 with ssm_last_error() when the T positions do not fit in a
 * state whose attention cache holds fewer (ssm_state_new_ctx): checked first, nothing is run. */
int ssm_forward(const ssm_model *m, ssm_state *s, const int *tokens, int T, float *logits, int last_only);
/* One recurrent step: one token per sequence -> logits [n_seq, vocab]. O(1) in the sequence length for Mamba
 * layers; an attention layer reads its whole cache. 0, or -1 as ssm_forward. */
int ssm_step(const ssm_model *m, ssm_state *s, const int *tokens, float *logits);

/* ---- training ---------------------------------------------------------------------------------------- */
typedef struct { /* AdamW and its schedule */
    float lr, min_lr;       /* peak and final learning rate (cosine from lr to min_lr after warmup) */
    int warmup, steps;      /* warmup steps; total optimizer steps */
    float weight_decay, beta1, beta2, eps, clip;
} ssm_optim_config;
void ssm_optim_config_default(ssm_optim_config *o);

typedef struct {
    const char *data_path;
    const char *out_dir;   /* run directory: metrics.jsonl and checkpoint/ */
    int batch, seq_len, grad_accum;
    double val_fraction;
    /* validation text from its own file: the whole data_path then trains and val_fraction is unused (NULL or "":
     * the val_fraction tail of data_path; ssm_train reads "" as NULL) */
    const char *val_data_path;
    int eval_every;        /* steps between validation passes (and checkpoints) */
    long eval_bytes;       /* validation bytes per pass (0: the whole split) */
    uint64_t seed;
    int resume;            /* continue the run in out_dir from its checkpoint */
    int overwrite;         /* a new run may replace an earlier run in out_dir (otherwise that is an error) */
    int stop_after;        /* >0: stop (with a checkpoint) after this many steps of this invocation */
    int quiet;             /* no progress line */
    const char *device;    /* "cpu" (default), "cuda" or "cuda:N" */
    int bf16;              /* mixed precision (bf16 GEMMs, float32 master weights); needs a "cuda" device */
    ssm_optim_config optim;
    /* a synthetic task instead of data_path (docs/tasks.md): "mqar:seq=256,pairs=16", "selcopy:seq=4096,vocab=16,
     * tokens=16", "induction:seq=256"; sequences drawn from seed, seq_len the task's seq, the loss on answers alone,
     * validation on val_seqs sequences of the fixed stream SSM_VALIDATION_SEED (val_loss, val_acc). NULL: none */
    const char *task;
    int val_seqs;          /* with a task: sequences per validation pass (default 256) */
    /* filler bytes: a fraction noise_rate in [0, 1) of the stream the model reads is the byte noise_byte, at random
     * positions (seeded; validation from SSM_VALIDATION_SEED); loss and bits per byte count real bytes alone */
    double noise_rate;
    int noise_byte;
    /* batch is the whole job's (all ranks together), as a checkpoint records it, and ssm_train divides it among the
     * ranks; 0: batch is per rank (the command line's --batch). Set by a resume that takes the checkpoint's batch. */
    int batch_is_global;
} ssm_train_options;
void ssm_train_options_default(ssm_train_options *t);
/* Trains per the options (creating, or with resume continuing, the model in out_dir); progress on
 * stderr unless quiet. `cfg` is the shape of a new model; with resume it may be NULL, and otherwise must be
 * the checkpoint's shape. One process at a time trains into out_dir (a lock; others get an error).
 * Returns 0 when done, 1 when stopped by ssm_train_interrupt (with a checkpoint of the last step), or -1
 * with ssm_last_error() (a run that diverged leaves its last checkpoint as it was), or -2 on a rank that stays quiet
 * while another reports why the job failed (see ssm_dist_start). */
int ssm_train(const ssm_train_options *t, const ssm_config *cfg);
/* Data parallelism over processes (docs/distributed.md): started by `mpirun -np N ssm train ...`, each process (a
 * rank) trains on its --batch rows of a job batch of N x --batch and the gradients are summed over ranks; rank 0
 * alone validates, logs and checkpoints; on GPUs (--device cuda, a build with NCCL) rank r uses its machine's GPU r and
 * the gradients and weights move over NCCL. Without MPI in the build, or without mpirun (or --gpus), the world is one
 * rank.
 * ssm_dist_start joins the job (before ssm_train) and checks that every rank runs the same build: 0; -1 with
 * ssm_last_error(); or -2 on the ranks that stay quiet because another one reported the error (so the job prints
 * one message; the command line exits 0 on them, so that the job's status is the reporting rank's, which mpirun
 * would otherwise cut off at the first non-zero exit, maybe before it printed). ssm_train also returns -2 so, and
 * -1 for a failure all ranks agreed on (before the first step, a divergence): after those the job is already
 * left. A failure of one rank alone later (rank 0 cannot write a checkpoint) leaves it running: the process then
 * exits without ssm_dist_stop, which ends the whole job (MPI_Abort), so that no rank waits forever for one that
 * failed. After success or an interruption call ssm_dist_stop before exiting. */
int ssm_dist_start(void);
/* Returns 1 when a rank this process started (--gpus) exited with an error (the job's exit status should say so),
 * else 0. Harmless to call again: the answer stays. */
int ssm_dist_stop(void);
/* `ssm train --gpus N` (one machine, no MPI): called before ssm_dist_start in the first process, it checks that N
 * GPUs exist and starts N-1 more copies of this executable with the same arguments, which then train as ranks 1 ..
 * N-1 on GPUs 1 .. N-1 (the NCCL id through a file of run_dir). 0, or -1 with ssm_last_error() (more GPUs than
 * exist, a build without NCCL). In a started copy it returns 0 and does nothing. */
int ssm_dist_spawn(int gpus, const char *run_dir);
int ssm_dist_rank(void);
int ssm_dist_size(void);
/* Asks a running ssm_train to stop at the next step boundary, after saving a checkpoint. Async-signal-safe:
 * meant for a SIGINT/SIGTERM handler. ssm_train_interrupted() returns the signal given (0: none). */
void ssm_train_interrupt(int sig);
int ssm_train_interrupted(void);
/* The options the run in out_dir was trained with (its checkpoint's), over those in *t; the strings (the data path,
 * the task) are copied into buf (cap bytes), which t->data_path and t->task then point into. -1 with
 * ssm_last_error(). */
int ssm_train_options_load(const char *out_dir, ssm_train_options *t, char *buf, size_t cap);

/* Summed loss (nats) of the model on ids[0..n) read as one stream: chunks of `chunk` tokens, the
 * state carried across chunks, every token after the first predicted (n - 1 of them). */
double ssm_eval_stream(const ssm_model *m, const int *ids, size_t n, int chunk, int show_progress);
/* The same for a stream whose targets are given: position i reads tokens[i] and predicts targets[i] (< 0: not
 * scored), n positions. *count (may be NULL) gets the positions scored. ssm_eval_stream(m, ids, n, ...) is
 * ssm_eval_targets(m, ids, ids + 1, n - 1, ...). */
double ssm_eval_targets(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk,
                        int show_progress, long *count);
/* ssm_eval_targets in windows: with window > 0, every window of that many positions scored on its own from an empty
 * state, whatever the model (as training reads its sequences of window bytes), in passes of at most chunk; 0: as
 * ssm_eval_targets. */
double ssm_eval_windows(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk, long window,
                        int show_progress, long *count);
/* ssm_eval_windows with windows that overlap: with 0 < stride < window a window of `window` positions starts every
 * `stride` positions, each from an empty state, and scores only the positions the one before did not reach (its last
 * stride; the first window all of its own), so that each position after the first window is scored with at least
 * window - stride positions before it (the strided perplexity of sliding windows; window / stride times the work).
 * stride 0 or at least window: ssm_eval_windows. */
double ssm_eval_strided(const ssm_model *m, const int *tokens, const int *targets, size_t n, int chunk, long window,
                        long stride, int show_progress, long *count);

/* ---- synthetic tasks and filler bytes (docs/tasks.md) -------------------------------------------------------- */
/* The fixed stream that validation draws from (a task's sequences, a file's filler positions), whatever the
 * training seed; ssm eval's default --seed, so that it scores what validation scored. */
#define SSM_VALIDATION_SEED 20261204u

/* Checks a task SPEC (ssm_train_options.task): 0, with the task's sequence length in *seq (may be NULL), or -1 with a
 * one-line ssm_last_error() naming what to change. */
int ssm_task_check(const char *spec, int *seq);
typedef struct {
    double loss;     /* mean cross-entropy (nats) over the answer positions */
    double accuracy; /* the fraction of answers whose argmax is the answer */
    long answers;    /* answer positions scored */
} ssm_task_score;
/* Scores the model on n_seqs sequences of the task drawn from seed: `batch` sequences at a time, each from an empty
 * state, fed `chunk` positions at a time with the state carried; a state whose cache grows (attention) is sized for
 * the whole sequence, so a task may be scored far beyond the length it was trained at. 0, or -1 with
 * ssm_last_error() (a bad spec, ids outside the model's vocabulary, a cache larger than the machine's memory). */
int ssm_eval_task(const ssm_model *m, const char *spec, uint64_t seed, long n_seqs, int batch, int chunk,
                  int show_progress, ssm_task_score *out);
/* ids[0..n) as a model reads them with filler: each stream position the filler with probability rate (drawn from
 * seed), the ids in order between. *tokens and *targets (malloc'd, [*len]) are ssm_eval_targets' input: target i
 * the stream's element i+1 where it is a real id, else -1. 0, or -1 with ssm_last_error() for a rate outside
 * [0, 1) or a filler that is not a byte. */
int ssm_noise_stream(const int *ids, size_t n, double rate, int filler, uint64_t seed, int **tokens, int **targets,
                     size_t *len);

/* ---- generation ---------------------------------------------------------------------------------------- */
typedef struct {
    float temperature; /* 0: greedy (argmax) */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    uint64_t seed;
} ssm_sample_options;
/* Feeds the prompt (at least one token) through the scan, then makes n tokens one recurrent step each,
 * calling emit for every token as it is made. Returns 0. */
int ssm_generate(const ssm_model *m, const int *prompt, int prompt_len, int n, const ssm_sample_options *o,
                 void (*emit)(int token, void *ctx), void *ctx);

/* ---- benchmarks (ssm bench) ------------------------------------------------------------------------------ */
/* Median seconds per training step (forward + backward + AdamW) over `steps` after 2 warmup steps, on
 * `device` ("cpu", "cuda"), in mixed precision when bf16 (CUDA); -1 with ssm_last_error() when the model
 * cannot be made there. *mem_in_use: peak device memory allocated (0 on the CPU). profile: then `steps`
 * more steps through the profiling backend, whose totals ssm_bench_profile_print shows. */
double ssm_bench_train_step(const ssm_config *cfg, const char *device, int bf16, int B, int T, int steps,
                        size_t *mem_in_use, int profile);
/* Median seconds per decode step of n_seq sequences over `steps` after a warmup. */
double ssm_bench_decode_step(const ssm_model *m, int n_seq, int steps);
/* The same after a prefill of `context` positions (an attention layer's step reads a cache of that length; a Mamba
 * layer's does not depend on it); -1 when the state cannot be made. no_prefill: the state is only moved to the
 * context's position, its cache zeros (the time and memory of decode at that context, whose values do not matter,
 * without the prefill's: quadratic for attention). */
double ssm_bench_decode_at(const ssm_model *m, int n_seq, long context, int steps, int no_prefill);
/* Peak device bytes that m's backend allocated so far in this process (its buffers, states and caches, and the
 * stream-ordered pool's high-water mark; the CUDA context and cuBLASLt's workspace not counted); 0 on the CPU. */
size_t ssm_bench_device_peak(const ssm_model *m);
/* Seconds for a prefill of len positions per sequence into a fresh state of n_seq sequences (ssm_forward with the
 * state, chunk positions per call; 0: the whole prompt in one call), the median of 3 after a warmup; -1 with
 * ssm_last_error() when the state cannot be made or the forward fails. */
double ssm_bench_prefill(const ssm_model *m, int n_seq, long len, int chunk);
/* Memory bandwidth over 256 MiB buffers, all threads, best of 5, in bytes/s: *copy = bytes copied per
 * second by memcpy (STREAM's "Copy" figure counts twice that: read + write); *read = bytes read per
 * second by a vectorized sum, the operation batch-1 decode is bound by. */
void ssm_bench_memory_bandwidth(double *copy, double *read);

/* Bytes of weights one batch-1 decode step reads: every matrix (bf16 ones at 2 bytes when the model
 * keeps a bf16 copy on the CPU; CUDA's bf16 GEMMs read the float32 weights), the small per-channel tensors, and only one row of an untied embedding. */
double ssm_bench_decode_weight_bytes(const ssm_model *m);
/* Each op's calls and milliseconds per step of the profiled steps of ssm_bench_train_step, GEMMs first. */
void ssm_bench_profile_print(int steps);

/* ---- tokenizers ----------------------------------------------------------------------------------------
 * Byte models need none (ids are bytes 0..255). Hugging Face models come with a byte-level BPE
 * tokenizer.json (GPT-2 / GPT-NeoX family), read here to give exactly the ids tokenizers gives. */
typedef struct ssm_tokenizer ssm_tokenizer;

/* Loads and validates a tokenizer.json. NULL with a one-line ssm_error() naming the file and what is
 * wrong (invalid JSON, not a BPE model, a merge naming an unknown token, an unsupported normalizer,
 * pre-tokenizer or decoder, duplicate ids, ...). Supported: model BPE (no dropout, byte_fallback,
 * subword prefix or suffix; unk_token, fuse_unk and ignore_merges honoured), normalizer null / NFC /
 * Sequence of NFC, pre_tokenizer ByteLevel or a Sequence of Split(GPT-2 regex, Isolated) steps ending
 * in ByteLevel, decoder ByteLevel or null; post_processor, truncation and padding are ignored. */
ssm_tokenizer *ssm_tokenizer_load(const char *path);
void ssm_tokenizer_free(ssm_tokenizer *t);

/* One more than the largest id of the vocabulary and the added tokens. */
int ssm_tokenizer_vocab_size(const ssm_tokenizer *t);

/* Encodes text[0..len) exactly as tokenizers' Tokenizer.encode(text, add_special_tokens=False) does
 * for valid UTF-8. Bytes that are not part of well-formed UTF-8 are kept, each as a one-byte character
 * of no Unicode class (not a letter, number or space), so they still reach the model as their raw
 * bytes and round-trip. *ids is malloc'd ([*n]). Returns 0 (allocation failure exits). */
int ssm_tokenizer_encode(const ssm_tokenizer *t, const char *text, size_t len, int **ids, size_t *n);

/* The bytes a token stands for after the ByteLevel decoder (may be part of a UTF-8 sequence). Added
 * tokens decode from their content through the same decoder, as tokenizers does: ASCII contents
 * without spaces give themselves. NULL for an id outside the vocabulary. */
const char *ssm_tokenizer_token_bytes(const ssm_tokenizer *t, int id, size_t *len);

/* Decodes ids to bytes (the concatenation of ssm_tokenizer_token_bytes; special tokens included), malloc'd,
 * NUL-terminated. Returns 0, or -1 with ssm_error() for an id outside the vocabulary. */
int ssm_tokenizer_decode(const ssm_tokenizer *t, const int *ids, size_t n, char **out, size_t *len);

/* The id of a token given by its content (vocabulary or added token), or -1. */
int ssm_tokenizer_token_id(const ssm_tokenizer *t, const char *content);

#ifdef __cplusplus
}
#endif
#endif
