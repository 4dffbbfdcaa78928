/* The ssm command: argument parsing and progress output only; the work is in the library, reached through
 * its public API alone (include/ssm.h), as any other program would. */
#include "ssm.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096

/* ---- a small table-driven option parser --------------------------------------------------------- */

typedef enum { OPT_INT, OPT_LONG, OPT_FLOAT, OPT_DOUBLE, OPT_STR, OPT_FLAG, OPT_U64 } opt_type;

typedef struct {
    const char *name; /* "--steps" */
    const char *alias; /* "-n" or NULL */
    opt_type type;
    void *dst;
    const char *help;
    int seen;
} option;

static const char *prog_cmd;

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ssm%s%s: ", prog_cmd ? " " : "", prog_cmd ? prog_cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *checked_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory (%zu bytes)", bytes);
    return p;
}

/* A whole file (data to score): its bytes, NUL-terminated. */
static char *read_file_or_die(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f) die("%s: cannot open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) die("%s: is a directory, expected a file", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = checked_malloc(cap);
    for (size_t got; (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) die("%s: out of memory reading it", path);
            buf = bigger;
        }
    }
    if (ferror(f)) die("%s: read failed: %s", path, strerror(errno));
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void print_help(const char *usage, const char *about, option *opts, int n) {
    printf("usage: ssm %s\n\n%s\n\noptions:\n", usage, about);
    for (int i = 0; i < n; i++) {
        char left[64];
        const char *arg = opts[i].type == OPT_FLAG ? "" : opts[i].type == OPT_STR ? " TEXT" : " N";
        snprintf(left, sizeof left, "%s%s%s%s", opts[i].alias ? opts[i].alias : "", opts[i].alias ? ", " : "",
                 opts[i].name, arg);
        char def[320] = "";
        switch (opts[i].type) {
        case OPT_INT: snprintf(def, sizeof def, " (default %d)", *(int *)opts[i].dst); break;
        case OPT_LONG: snprintf(def, sizeof def, " (default %ld)", *(long *)opts[i].dst); break;
        case OPT_U64: snprintf(def, sizeof def, " (default %llu)", (unsigned long long)*(uint64_t *)opts[i].dst); break;
        case OPT_FLOAT: snprintf(def, sizeof def, " (default %g)", *(float *)opts[i].dst); break;
        case OPT_DOUBLE: snprintf(def, sizeof def, " (default %g)", *(double *)opts[i].dst); break;
        case OPT_STR: { /* control characters shown as C escapes, so a default like "ROMEO:\n" stays on its line */
            const char *v = *(const char **)opts[i].dst;
            if (!v) break;
            char shown[256];
            size_t k = 0;
            for (; *v && k + 3 < sizeof shown; v++) {
                if (*v == '\n') shown[k++] = '\\', shown[k++] = 'n';
                else if (*v == '\t') shown[k++] = '\\', shown[k++] = 't';
                else shown[k++] = *v;
            }
            shown[k] = 0;
            snprintf(def, sizeof def, " (default %s)", shown);
            break;
        }
        case OPT_FLAG: break;
        }
        printf("  %-24s %s%s\n", left, opts[i].help, def);
    }
    printf("  %-24s %s\n", "-h, --help", "show this help");
}

static void parse_number(const option *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_INT:
    case OPT_LONG: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end || errno || (o->type == OPT_INT && (x > 2147483647L || x < -2147483647L)))
            die("%s expects an integer, got '%s'", o->name, v);
        if (o->type == OPT_INT) *(int *)o->dst = (int)x;
        else *(long *)o->dst = x;
        break;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == 0 || *end || errno) die("%s expects a non-negative integer, got '%s'", o->name, v);
        *(uint64_t *)o->dst = x;
        break;
    }
    case OPT_FLOAT:
    case OPT_DOUBLE: {
        double x = strtod(v, &end);
        if (*v == 0 || *end || errno || !isfinite(x)) die("%s expects a number, got '%s'", o->name, v);
        if (o->type == OPT_FLOAT) *(float *)o->dst = (float)x;
        else *(double *)o->dst = x;
        break;
    }
    default: break;
    }
}

/* Parses argv; prints help and exits 0 on -h/--help; exits 1 with one line on anything unknown. */
static void parse_args(int argc, char **argv, const char *usage, const char *about, option *opts, int n) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(usage, about, opts, n);
            exit(0);
        }
        const char *eq = strchr(a, '=');
        size_t len = eq && a[0] == '-' && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
        option *o = NULL;
        for (int k = 0; k < n; k++)
            if ((strlen(opts[k].name) == len && !strncmp(opts[k].name, a, len)) || (opts[k].alias && !strcmp(opts[k].alias, a)))
                o = &opts[k];
        if (!o) die("unknown %s '%s' (see ssm %s --help)", a[0] == '-' ? "option" : "argument", a, prog_cmd);
        o->seen = 1;
        if (o->type == OPT_FLAG) {
            if (eq && a[1] == '-') die("%s takes no value", o->name);
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq && a[1] == '-' ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) die("%s needs a value (see ssm %s --help)", o->name, prog_cmd);
        if (o->type == OPT_STR) *(const char **)o->dst = v;
        else parse_number(o, v);
    }
}

static size_t opt_size(opt_type t) {
    switch (t) {
    case OPT_INT: case OPT_FLAG: return sizeof(int);
    case OPT_LONG: return sizeof(long);
    case OPT_FLOAT: return sizeof(float);
    case OPT_DOUBLE: return sizeof(double);
    case OPT_U64: return sizeof(uint64_t);
    case OPT_STR: return sizeof(const char *);
    }
    return 0;
}

static int opt_seen(option *opts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(opts[i].name, name)) return opts[i].seen;
    return 0;
}

#define NOPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The default data file: $SSM_DATA_DIR/tinyshakespeare.txt, else data/tinyshakespeare.txt. */
static const char *default_data(void) {
    static char buf[4096];
    const char *dir = getenv("SSM_DATA_DIR");
    snprintf(buf, sizeof buf, "%s/tinyshakespeare.txt", dir && *dir ? dir : "data");
    return buf;
}

static ssm_model *load_or_die(const char *dir) {
    if (!dir) die("--model DIR is required");
    ssm_model *m = ssm_model_load(dir);
    if (!m) die("%s", ssm_last_error());
    return m;
}

/* Loads the model and moves it to --device, in bf16 (--bf16) or with int8 decode weights (--int8) where asked. */
static ssm_model *load_on_device_or_die(const char *dir, const char *device, int bf16, int int8) {
    ssm_model *m = load_or_die(dir);
    if (bf16 && int8) die("--bf16 and --int8 are two forms of the decode weights: choose one");
    if (bf16) ssm_model_use_bf16(m);
    if (int8 && ssm_model_use_int8(m)) die("%s", ssm_last_error());
    if (ssm_model_set_device(m, device)) die("%s", ssm_last_error());
    return m;
}

#define DEVICE_HELP "where to compute: cpu, cuda:N (GPU N), or cuda (GPU 0)"
#define TASK_HELP                                                                                                      \
    "mqar:seq=256,pairs=16, selcopy:seq=4096,vocab=16,tokens=16 or induction:seq=256 (docs/tasks.md); loss and "     \
    "accuracy on the answers alone"
#define NOISE_HELP                                                                                                     \
    "make this fraction (in [0, 1)) of the stream filler bytes at random positions; loss and bits per byte count "   \
    "real bytes alone (bits per real byte)"
#define BF16_HELP "bf16: weights for decode on cpu, tensor-core GEMMs on cuda (about 1e-2 from float32)"
#define INT8_HELP                                                                                                     \
    "int8 weights with a scale per row for decode: a quarter of float32's bytes per step (cpu; cuda: Mamba-1 or " \
    "Mamba-2 models, decoding up to 64 sequences)"

/* The model's tokenizer: --tokenizer FILE, else DIR/tokenizer.json when present, else none (bytes). */
static ssm_tokenizer *tokenizer_for(const char *dir, const char *path) {
    char p[PATH_CAP];
    if (!path && dir) {
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        if (access(p, R_OK) == 0) path = p;
    }
    if (!path) return NULL;
    ssm_tokenizer *t = ssm_tokenizer_load(path);
    if (!t) die("%s", ssm_last_error());
    return t;
}

/* text -> ids: the tokenizer's, or one id per byte. Every id must be inside the model's vocabulary. */
static int *encode_or_die(const ssm_model *m, const ssm_tokenizer *tok, const char *text, size_t len, size_t *n) {
    int *ids;
    if (tok) {
        if (ssm_tokenizer_encode(tok, text, len, &ids, n)) die("%s", ssm_last_error());
    } else {
        ids = checked_malloc(sizeof(int) * (len ? len : 1));
        for (size_t i = 0; i < len; i++) ids[i] = (unsigned char)text[i];
        *n = len;
    }
    const int V = ssm_model_config(m)->vocab_size;
    for (size_t i = 0; i < *n; i++)
        if (ids[i] >= V) die("token id %d is outside the model's vocabulary of %d (wrong tokenizer?)", ids[i], V);
    return ids;
}

static void emit_token(int tok, void *ctx) {
    const ssm_tokenizer *t = ctx;
    if (t) {
        size_t len;
        const char *b = ssm_tokenizer_token_bytes(t, tok, &len);
        if (b) fwrite(b, 1, len, stdout); /* ids past the tokenizer (vocabulary padding) print nothing */
    } else {
        putchar(tok & 0xFF);
    }
    fflush(stdout);
}

/* The handler of SIGINT, SIGTERM and SIGHUP, reset to the default once it has run. */
static void on_stop_signals(void (*handler)(int)) {
    struct sigaction sa = {.sa_handler = handler, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* OpenMP threads: 0 keeps the default (all cores). */
static void set_threads(int threads) {
    if (threads < 0 || threads > 1024) die("--threads must be in [0, 1024] (0: all cores), got %d", threads);
    if (threads > 0) omp_set_num_threads(threads);
}

/* The prompt (unless echo is 0), then the generated bytes as they come. A byte-level model's output is
 * exactly those bytes: a newline is added only for a terminal, to leave the shell's prompt on its own line. */
static const char *human_bytes(char *buf, size_t cap, double b);

/* The model's layer kinds, each once in order of first appearance (at most cap): their count. */
static int model_kinds(const ssm_model *m, const char **kinds, int cap) {
    int n = 0;
    for (int l = 0; l < ssm_model_config(m)->n_layer; l++) {
        const char *k = ssm_model_layer_kind(m, l);
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= !strcmp(kinds[j], k);
        if (!seen && n < cap) kinds[n++] = k;
    }
    return n;
}

/* The inference state per sequence of the layers of one kind (NULL: all) holding `context` positions. */
static size_t kind_state_bytes(const ssm_model *m, const char *kind, long context) {
    size_t b = 0;
    for (int l = 0; l < ssm_model_config(m)->n_layer; l++)
        if (!kind || !strcmp(ssm_model_layer_kind(m, l), kind)) b += ssm_model_state_bytes_at(m, l, context);
    return b;
}

/* Returns the positions the state went through: the prompt's tokens and the n generated. */
static long print_sample(const ssm_model *m, const ssm_tokenizer *tok, const char *prompt, int n,
                         const ssm_sample_options *so, int echo) {
    size_t len;
    int *ids = encode_or_die(m, tok, prompt, strlen(prompt), &len);
    if (!len) { /* an empty prompt starts from a newline (bytes) or the end-of-text token */
        int start = tok ? ssm_tokenizer_token_id(tok, "<|endoftext|>") : '\n';
        ids[0] = start < 0 ? 0 : start, len = 1;
    }
    if (echo) fputs(prompt, stdout);
    ssm_generate(m, ids, (int)len, n, so, emit_token, (void *)tok);
    if (isatty(1)) putchar('\n');
    fflush(stdout);
    free(ids);
    return (long)len + n;
}

/* ---- commands -------------------------------------------------------------------------------------- */

static int cmd_train(int argc, char **argv) {
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = default_data();
    ssm_config c;
    ssm_config_default(&c);
    const char *pattern = c.layer_pattern, *prompt = "ROMEO:\n", *mlp_act = "silu";
    int sample_n = 300, threads = 0, gpus = 0;
    option o[] = {
        {"--data", NULL, OPT_STR, &t.data_path, "training text (any bytes); the last --val-fraction is held out"},
        {"--val-data", NULL, OPT_STR, &t.val_data_path,
         "validation text from its own file: all of --data then trains (instead of --val-fraction)"},
        {"--task", NULL, OPT_STR, &t.task, "instead of --data, a synthetic task: " TASK_HELP},
        {"--val-seqs", NULL, OPT_INT, &t.val_seqs, "with --task: validation sequences per pass (a fixed stream)"},
        {"--noise-rate", NULL, OPT_DOUBLE, &t.noise_rate, NOISE_HELP},
        {"--noise-byte", NULL, OPT_INT, &t.noise_byte, "the filler byte of --noise-rate"},
        {"--out", NULL, OPT_STR, &t.out_dir, "run directory: metrics.jsonl and checkpoint/"},
        {"--resume", NULL, OPT_FLAG, &t.resume, "continue the run in --out exactly where its checkpoint stopped"},
        {"--overwrite", NULL, OPT_FLAG, &t.overwrite, "replace an earlier run in --out (its checkpoints and metrics)"},
        {"--stop-after", NULL, OPT_INT, &t.stop_after, "stop after this many steps, with a checkpoint (0: run to --steps)"},
        {"--d-model", NULL, OPT_INT, &c.d_model, "model width"},
        {"--n-layer", NULL, OPT_INT, &c.n_layer, "number of layers"},
        {"--d-state", NULL, OPT_INT, &c.mamba1.d_state, "SSM state size N per channel"},
        {"--d-conv", NULL, OPT_INT, &c.mamba1.d_conv, "short convolution width"},
        {"--expand", NULL, OPT_INT, &c.mamba1.expand, "d_inner = expand * d_model"},
        {"--dt-rank", NULL, OPT_INT, &c.mamba1.dt_rank, "rank of the dt projection (0: ceil(d_model/16))"},
        {"--layers", NULL, OPT_STR, &pattern,
         "layer pattern, one letter per layer, repeated over --n-layer: m = Mamba-1, M = Mamba-2, a = attention, "
         "f = MLP "
         "(\"af\": a Transformer; \"mmmaf\": 3 Mamba-1 layers per Transformer block)"},
        {"--n-heads", NULL, OPT_INT, &c.attention.n_heads, "attention heads (0: d_model / head_dim)"},
        {"--n-kv-heads", NULL, OPT_INT, &c.attention.n_kv_heads,
         "key/value heads, dividing --n-heads (0: as many; 1: multi-query)"},
        {"--head-dim", NULL, OPT_INT, &c.attention.head_dim, "attention head width (0: d_model / n_heads, or 64)"},
        {"--rope-theta", NULL, OPT_FLOAT, &c.attention.rope_theta,
         "rotary position base (0: no rotary positions, as NemotronH's attention)"},
        {"--sliding-window", NULL, OPT_INT, &c.attention.sliding_window,
         "attention sees this many positions back, itself included (0: all)"},
        {"--max-context", NULL, OPT_INT, &c.attention.max_context, "the attention cache a decode state holds"},
        {"--d-ff", NULL, OPT_INT, &c.mlp.intermediate_size, "MLP width (0: 8/3 d_model, to 64)"},
        {"--mlp-act", NULL, OPT_STR, &mlp_act,
         "MLP activation: silu (SwiGLU, down(silu(gate(x)) * up(x))) or relu2 (down(relu(up(x))^2), NemotronH's)"},
        {"--m2-d-state", NULL, OPT_INT, &c.mamba2.d_state, "Mamba-2 state size N per head dimension"},
        {"--m2-head-dim", NULL, OPT_INT, &c.mamba2.head_dim, "Mamba-2 head width P, dividing expand * d_model"},
        {"--m2-groups", NULL, OPT_INT, &c.mamba2.n_groups, "Mamba-2 groups of heads sharing B and C"},
        {"--m2-expand", NULL, OPT_INT, &c.mamba2.expand, "Mamba-2 d_inner = expand * d_model"},
        {"--chunk-size", NULL, OPT_INT, &c.mamba2.chunk_size, "Mamba-2 SSD chunk length (a power of two)"},
        {"--batch", NULL, OPT_INT, &t.batch, "sequences per micro-batch"},
        {"--seq-len", NULL, OPT_INT, &t.seq_len, "bytes per training sequence"},
        {"--grad-accum", NULL, OPT_INT, &t.grad_accum, "micro-batches per optimizer step"},
        {"--steps", NULL, OPT_INT, &t.optim.steps, "optimizer steps"},
        {"--lr", NULL, OPT_FLOAT, &t.optim.lr, "peak learning rate"},
        {"--min-lr", NULL, OPT_FLOAT, &t.optim.min_lr, "final learning rate of the cosine schedule"},
        {"--warmup", NULL, OPT_INT, &t.optim.warmup, "linear warmup steps"},
        {"--weight-decay", NULL, OPT_FLOAT, &t.optim.weight_decay, "AdamW decoupled weight decay (matrices only)"},
        {"--clip", NULL, OPT_FLOAT, &t.optim.clip, "gradient-norm clipping (0: off)"},
        {"--eval-every", NULL, OPT_INT, &t.eval_every, "steps between validation + checkpoint"},
        {"--eval-bytes", NULL, OPT_LONG, &t.eval_bytes, "validation bytes per pass (0: all)"},
        {"--val-fraction", NULL, OPT_DOUBLE, &t.val_fraction, "held-out tail of the data"},
        {"--seed", NULL, OPT_U64, &t.seed, "initialization and data-order seed"},
        {"--threads", NULL, OPT_INT, &threads, "OpenMP threads (0: all cores)"},
        {"--sample", NULL, OPT_INT, &sample_n, "bytes to sample from the trained model (0: none)"},
        {"--prompt", NULL, OPT_STR, &prompt, "prompt for that sample"},
        {"--quiet", NULL, OPT_FLAG, &t.quiet, "no progress output"},
        {"--device", NULL, OPT_STR, &t.device, DEVICE_HELP},
        {"--bf16", NULL, OPT_FLAG, &t.bf16, "mixed precision on cuda: bf16 tensor-core GEMMs, float32 master weights"},
        {"--gpus", NULL, OPT_INT, &gpus, "train on N GPUs of this machine, one process each (without mpirun)"},
    };
    const char *about = "Trains a byte-level model. With no options: a ~1M-parameter Mamba on tinyshakespeare\n"
                        "(`make data` downloads it), then prints a sample. Progress goes to stderr, per-step\n"
                        "metrics to OUT/metrics.jsonl, the model (HF MambaForCausalLM form) to OUT/checkpoint at\n"
                        "every validation, and the best one by validation loss to OUT/best. Ctrl-C (or SIGTERM)\n"
                        "saves a checkpoint at the end of the current step and exits; --resume continues.\n"
                        "--task trains on a synthetic task drawn from --seed (its seq is the --seq-len; validation\n"
                        "writes val_loss and val_acc); --noise-rate inserts filler bytes into --data (validation in\n"
                        "bits per real byte). --resume restores both from the run's checkpoint.\n"
                        "Several processes: `mpirun -np N ssm train ...` (a build with MPI: make MPI=1) trains one\n"
                        "model on N ranks, each on --batch sequences of a batch of N x --batch (as one process with\n"
                        "that batch would); rank 0 writes the run directory, and --resume works with any N\n"
                        "(docs/distributed.md). On GPUs: `mpirun -np N ssm train --device cuda ...` (rank r on GPU r\n"
                        "of its machine), or `ssm train --gpus N ...` on one machine without MPI (it starts the\n"
                        "other N-1 processes itself); gradients and weights then move over NCCL (a CUDA build).\n"
                        "The multi-GPU path has not been run on GPUs yet (docs/distributed.md says what is verified).";
    parse_args(argc, argv, "train [options]", about, o, NOPTS(o));
    set_threads(threads);
    if (sample_n < 0) die("--sample must be 0 (none) or more bytes, got %d", sample_n);
    if (t.resume && t.overwrite) die("--resume and --overwrite contradict each other: choose one");
    if (t.task && opt_seen(o, NOPTS(o), "--data"))
        die("--task draws its own sequences: drop --data (or --task, to train on the file)");
    if (opt_seen(o, NOPTS(o), "--val-data") && opt_seen(o, NOPTS(o), "--val-fraction"))
        die("--val-data is the validation text, --val-fraction a tail of --data held out instead: choose one");
    /* with --resume the model is the checkpoint's: shape options are only accepted if they agree with it */
    static const struct {
        const char *name;
        size_t offset, size; /* the field of ssm_config it sets */
    } shape_opts[] = {
#define SHAPE(name, field) {name, offsetof(ssm_config, field), sizeof(((ssm_config *)0)->field)}
        SHAPE("--d-model", d_model),         SHAPE("--n-layer", n_layer),    SHAPE("--d-state", mamba1.d_state),
        SHAPE("--d-conv", mamba1.d_conv),    SHAPE("--expand", mamba1.expand), SHAPE("--dt-rank", mamba1.dt_rank),
        SHAPE("--layers", layer_pattern),    SHAPE("--n-heads", attention.n_heads),
        SHAPE("--n-kv-heads", attention.n_kv_heads), SHAPE("--head-dim", attention.head_dim),
        SHAPE("--rope-theta", attention.rope_theta), SHAPE("--sliding-window", attention.sliding_window),
        SHAPE("--d-ff", mlp.intermediate_size),      SHAPE("--m2-d-state", mamba2.d_state),
        SHAPE("--m2-head-dim", mamba2.head_dim),     SHAPE("--m2-groups", mamba2.n_groups),
        SHAPE("--m2-expand", mamba2.expand),         SHAPE("--chunk-size", mamba2.chunk_size),
        SHAPE("--mlp-act", mlp.hidden_act),
#undef SHAPE
    };
    const size_t n_shape = sizeof shape_opts / sizeof shape_opts[0];
    int shape_given = 0;
    for (size_t i = 0; i < n_shape; i++) shape_given |= opt_seen(o, NOPTS(o), shape_opts[i].name);
    if (t.resume) { /* the run's own options, overridden by whatever this command line gives again */
        static char strings[8192]; /* the data path and the task of the checkpoint */
        ssm_train_options saved = t;
        if (ssm_train_options_load(t.out_dir, &saved, strings, sizeof strings)) die("%s", ssm_last_error());
        for (int i = 0; i < NOPTS(o); i++) {
            size_t off = (size_t)((char *)o[i].dst - (char *)&t);
            if (o[i].seen && (char *)o[i].dst >= (char *)&t && off < sizeof t)
                memcpy((char *)&saved + off, o[i].dst, opt_size(o[i].type));
        }
        t = saved;
        if (opt_seen(o, NOPTS(o), "--val-fraction")) t.val_data_path = NULL; /* a tail asked for: not the file */
        /* the checkpoint's batch is the whole job's: divided among however many ranks resume it */
        t.batch_is_global = !opt_seen(o, NOPTS(o), "--batch");
    }
    if (t.task) { /* the task's seq is the training length: a different --seq-len is a contradiction, not a choice */
        int seq;
        if (ssm_task_check(t.task, &seq)) die("%s", ssm_last_error());
        if (opt_seen(o, NOPTS(o), "--seq-len") && t.seq_len != seq)
            die("--seq-len %d differs from the task's seq=%d: drop --seq-len (a task's sequences are its seq long)",
                t.seq_len, seq);
        if (!opt_seen(o, NOPTS(o), "--sample")) sample_n = 0; /* a text sample means nothing after a task */
    }
    if (strlen(pattern) >= sizeof c.layer_pattern) die("--layers: pattern too long");
    snprintf(c.layer_pattern, sizeof c.layer_pattern, "%s", pattern);
    if (!strcmp(mlp_act, "silu")) c.mlp.hidden_act = SSM_MLP_SILU;
    else if (!strcmp(mlp_act, "relu2")) c.mlp.hidden_act = SSM_MLP_RELU2;
    else die("--mlp-act \"%s\": silu or relu2", mlp_act);
    if (t.resume && shape_given) { /* the checkpoint's shape with the options given: ssm_train compares */
        ssm_config given = c;
        if (ssm_config_load(t.out_dir, &c)) die("%s", ssm_last_error());
        for (size_t i = 0; i < n_shape; i++)
            if (opt_seen(o, NOPTS(o), shape_opts[i].name))
                memcpy((char *)&c + shape_opts[i].offset, (char *)&given + shape_opts[i].offset, shape_opts[i].size);
    }
    if (opt_seen(o, NOPTS(o), "--gpus")) { /* N processes of this machine, one per GPU: this one is rank 0 */
        if (gpus < 1) die("--gpus must be at least 1 (got %d)", gpus);
        if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK"))
            die("--gpus starts its own processes: drop it under mpirun (mpirun -np N ... --device cuda)");
        if (opt_seen(o, NOPTS(o), "--device") && strcmp(t.device, "cuda"))
            die("--gpus %d trains on GPUs 0..%d: drop --device %s (or --gpus; for several CPU processes use mpirun)",
                gpus, gpus - 1, t.device);
        t.device = "cuda";
        if (ssm_dist_spawn(gpus, t.out_dir)) die("%s", ssm_last_error());
    }
    /* Ctrl-C, kill and a closed terminal: checkpoint at the end of the step, then exit 128 + signal. A second
     * one acts at once (SA_RESETHAND), for a user who does not want to wait for the save. */
    on_stop_signals(ssm_train_interrupt);
    /* under mpirun: join the job (a rank that exits without ssm_dist_stop, as die does, ends it for all) */
    int rc = ssm_dist_start();
    if (rc == 0) rc = ssm_train(&t, t.resume && !shape_given ? NULL : &c);
    on_stop_signals(SIG_DFL); /* the sample after training stops at once */
    /* another rank says why, and its exit status is the job's: mpirun ends the whole job at the first rank that
     * exits non-zero, which could cut the reporting rank off before it printed */
    if (rc == -2) exit(ssm_dist_stop()); /* --gpus: rank 0 waited for the others; 1 when the reporting one failed */
    if (rc < 0) die("%s", ssm_last_error());
    const int rank = ssm_dist_rank();
    if (ssm_dist_stop() && rc == 0) rc = -1; /* a rank started by --gpus failed */
    if (rc < 0) exit(1);
    if (rc > 0) return 128 + ssm_train_interrupted();
    if (sample_n > 0 && rank == 0) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoint", t.out_dir);
        ssm_model *m = load_on_device_or_die(dir, t.device, t.bf16, 0);
        ssm_sample_options so = {.temperature = 0.8f, .top_k = 0, .top_p = 0.95f, .seed = t.seed};
        fprintf(stderr, "sample (temperature 0.8, top-p 0.95):\n");
        print_sample(m, NULL, prompt, sample_n, &so, 1);
        ssm_model_free(m);
    }
    return 0;
}

/* ssm eval --task: accuracy and loss on the answers of n_seqs sequences drawn from seed. */
static void eval_task_or_die(const ssm_model *m, const char *task, uint64_t seed, long n_seqs, int batch, int chunk,
                             int progress) {
    int seq;
    if (ssm_task_check(task, &seq)) die("%s", ssm_last_error());
    ssm_task_score sc;
    if (ssm_eval_task(m, task, seed, n_seqs, batch, chunk, progress, &sc)) die("%s", ssm_last_error());
    printf("accuracy %.6f loss %.6f (nats per answer; %ld answers in %ld sequences of %d positions)\n", sc.accuracy,
           sc.loss, sc.answers, n_seqs, seq);
}

static int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *tok_path = NULL, *device = "cpu", *task = NULL;
    int chunk = 1024, threads = 0, quiet = 0, bf16 = 0, int8 = 0, batch = 16, noise_byte = 0;
    long n_seqs = 256, window = 0, stride = 0;
    double noise_rate = 0;
    uint64_t seed = SSM_VALIDATION_SEED;
    option o[] = {
        {"--model", NULL, OPT_STR, &model, "model directory (config.json + model.safetensors) or run directory"},
        {"--data", NULL, OPT_STR, &data, "file to score, read as one stream"},
        {"--task", NULL, OPT_STR, &task, "or a synthetic task to score: " TASK_HELP},
        {"--n-seqs", NULL, OPT_LONG, &n_seqs, "with --task: sequences to score"},
        {"--batch", NULL, OPT_INT, &batch, "with --task: sequences per forward pass"},
        {"--seed", NULL, OPT_U64, &seed, "the --task sequences' or the --noise-rate filler's seed (default: the "
                                         "validation stream's)"},
        {"--noise-rate", NULL, OPT_DOUBLE, &noise_rate, NOISE_HELP},
        {"--noise-byte", NULL, OPT_INT, &noise_byte, "the filler byte of --noise-rate"},
        {"--tokenizer", NULL, OPT_STR, &tok_path, "tokenizer.json (default: the model directory's, else bytes)"},
        {"--chunk", NULL, OPT_INT, &chunk, "tokens per forward pass (a Mamba state carries across chunks; attention sees its chunk)"},
        {"--window", NULL, OPT_LONG, &window, "score every window of N tokens on its own, from an empty state, whatever "
                                              "the model (as training reads its --seq-len); 0: see above"},
        {"--stride", NULL, OPT_LONG, &stride, "with --window W: a window every N tokens (N < W), each scoring its "
                                              "last N only: every token past the first window sees at least W - N "
                                              "before it (0: windows side by side)"},
        {"--threads", NULL, OPT_INT, &threads, "OpenMP threads (0: all cores)"},
        {"--quiet", NULL, OPT_FLAG, &quiet, "no progress output"},
        {"--device", NULL, OPT_STR, &device, DEVICE_HELP},
        {"--bf16", NULL, OPT_FLAG, &bf16, BF16_HELP},
        {"--int8", NULL, OPT_FLAG, &int8, INT8_HELP " (scored 16 bytes at a time, as decode reads them)"},
    };
    parse_args(argc, argv, "eval --model DIR (--data FILE [--noise-rate R] | --task SPEC)",
               "Scores a file as one stream: a Mamba layer's state carries across chunks, so the model sees its\n"
               "whole past; a model with attention scores each --chunk on its own (its context is the chunk, as\n"
               "in training). --window N scores every model in windows of N tokens, each from an empty state (a\n"
               "model trained on sequences of N may read worse far past N); --stride S starts one every S tokens,\n"
               "each scoring its last S (N / S times the work), so that every token past the first window has at\n"
               "least N - S before it. Prints the mean loss over all predicted bytes (or tokens, and bits per\n"
               "byte); with --noise-rate, over the real bytes of the stream with filler inserted (bits per real\n"
               "byte). --task prints \"accuracy X loss Y\" over the answers of --n-seqs sequences, at any seq\n"
               "(an attention cache is sized for the whole sequence).",
               o, NOPTS(o));
    if (task && data) die("--data and --task are two things to score: choose one");
    if (!data && !task) die("--data FILE or --task SPEC is required");
    if (chunk < 1) die("--chunk must be positive");
    if (window < 0) die("--window must be 0 (none) or a number of tokens (got %ld)", window);
    if (task && window) die("--window is for a --data file (a --task scores each sequence on its own already)");
    if (stride && !window) die("--stride S takes --window N: windows of N tokens, one every S");
    if (stride < 0 || stride > window)
        die("--stride must be between 1 and --window (%ld; equal: windows side by side), got %ld", window, stride);
    if (task && (n_seqs < 1 || batch < 1)) die("--n-seqs and --batch must be at least 1");
    if (task && noise_rate != 0) die("--noise-rate inserts filler into a --data file, not into a --task: drop one");
    if (!(noise_rate >= 0 && noise_rate < 1))
        die("--noise-rate must be in [0, 1): the fraction of the stream that is filler (got %g)", noise_rate);
    if (noise_byte < 0 || noise_byte > 255) die("--noise-byte must be a byte, 0 to 255 (got %d)", noise_byte);
    set_threads(threads);
    if (task && ssm_task_check(task, NULL)) die("%s", ssm_last_error());
    /* the CPU's decode weights serve decode-sized batches: chunks of at most 16 tokens are scored with them */
    if (int8 && strcmp(device, "cpu"))
        die("eval --int8 scores on the CPU (a GPU reads int8 weights in decode steps alone): add --device cpu");
    if ((int8 || (bf16 && !strcmp(device, "cpu"))) && chunk > 16) chunk = 16;
    ssm_model *m = load_on_device_or_die(model, device, bf16, int8);
    if (task) {
        eval_task_or_die(m, task, seed, n_seqs, batch, chunk, !quiet && isatty(2));
        ssm_model_free(m);
        return 0;
    }
    ssm_tokenizer *tok = tokenizer_for(model, tok_path);
    if (tok && noise_rate > 0)
        die("--noise-rate inserts filler bytes: it is for byte-level models (this one has a tokenizer)");
    size_t len, n;
    char *bytes = read_file_or_die(data, &len);
    int *ids = encode_or_die(m, tok, bytes, len, &n);
    if (n < 2) die("%s: needs at least 2 %s to score", data, tok ? "tokens" : "bytes");
    if (noise_rate > 0) { /* the filler is placed by --seed; only real bytes are targets */
        int *stream, *targets;
        size_t positions;
        long scored;
        if (ssm_noise_stream(ids, n, noise_rate, noise_byte, seed, &stream, &targets, &positions))
            die("%s", ssm_last_error());
        double total =
            ssm_eval_strided(m, stream, targets, positions, chunk, window, stride, !quiet && isatty(2), &scored);
        printf("loss %.6f nats/real byte, %.6f bits per real byte (%ld real bytes scored; filler byte %d is %zu of the "
               "%zu stream bytes)\n", total / scored, total / scored / M_LN2, scored, noise_byte, positions - n,
               positions);
        free(stream), free(targets);
    } else {
        double total = ssm_eval_strided(m, ids, ids + 1, n - 1, chunk, window, stride, !quiet && isatty(2), NULL);
        if (tok)
            printf("loss %.6f nats/token, %.6f bits/byte (%zu tokens, %zu bytes)\n", total / (n - 1),
                   total / M_LN2 / len, n, len);
        else
            printf("loss %.6f nats/byte, %.6f bits/byte\n", total / (n - 1), total / (n - 1) / M_LN2);
    }
    free(ids);
    free(bytes);
    ssm_tokenizer_free(tok);
    ssm_model_free(m);
    return 0;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = "", *tok_path = NULL, *device = "cpu";
    int n = 256, threads = 0, bf16 = 0, int8 = 0, no_echo = 0;
    ssm_sample_options so = {.temperature = 0.8f, .top_k = 0, .top_p = 0.95f, .seed = 0};
    int seed_given;
    option o[] = {
        {"--model", NULL, OPT_STR, &model, "model directory or run directory"},
        {"--prompt", NULL, OPT_STR, &prompt, "text to continue"},
        {"--n", "-n", OPT_INT, &n, "bytes (or tokens, with a tokenizer) to generate"},
        {"--tokenizer", NULL, OPT_STR, &tok_path, "tokenizer.json (default: the model directory's, else bytes)"},
        {"--temperature", NULL, OPT_FLOAT, &so.temperature, "sampling temperature (0: greedy)"},
        {"--top-k", NULL, OPT_INT, &so.top_k, "sample among the k most likely (0: off)"},
        {"--top-p", NULL, OPT_FLOAT, &so.top_p, "nucleus sampling mass (1: off)"},
        {"--seed", NULL, OPT_U64, &so.seed, "sampling seed (default: from the clock)"},
        {"--no-echo", NULL, OPT_FLAG, &no_echo, "print only the generated bytes, not the prompt before them"},
        {"--threads", NULL, OPT_INT, &threads, "OpenMP threads (0: all cores)"},
        {"--device", NULL, OPT_STR, &device, DEVICE_HELP},
        {"--bf16", NULL, OPT_FLAG, &bf16, BF16_HELP},
        {"--int8", NULL, OPT_FLAG, &int8, INT8_HELP},
    };
    parse_args(argc, argv, "generate --model DIR --prompt TEXT -n N",
               "Continues the prompt: the prompt runs through the sequence scan, then each new byte is one\n"
               "constant-time recurrent step. Bytes stream to stdout as they are made: the prompt, then\n"
               "exactly the generated bytes (a final newline is added only on a terminal).",
               o, NOPTS(o));
    seed_given = opt_seen(o, NOPTS(o), "--seed");
    if (!seed_given) so.seed = (uint64_t)(omp_get_wtime() * 1e6) ^ (uint64_t)getpid();
    if (n < 0) die("-n must be non-negative");
    if (so.temperature < 0 || so.top_k < 0 || !(so.top_p > 0 && so.top_p <= 1))
        die("need --temperature >= 0, --top-k >= 0 and 0 < --top-p <= 1");
    set_threads(threads);
    ssm_model *m = load_on_device_or_die(model, device, bf16, int8);
    ssm_tokenizer *tok = tokenizer_for(model, tok_path);
    const long positions = print_sample(m, tok, prompt, n, &so, !no_echo);
    /* the state it ended with, per layer kind (stderr: stdout is the text alone) */
    const char *kinds[16];
    const int n_kinds = model_kinds(m, kinds, 16);
    char h[32];
    fprintf(stderr, "ssm: inference state after %ld positions: %s per sequence (", positions,
            human_bytes(h, sizeof h, (double)kind_state_bytes(m, NULL, positions)));
    for (int j = 0; j < n_kinds; j++) {
        const size_t b = kind_state_bytes(m, kinds[j], positions);
        fprintf(stderr, "%s%s %s%s", j ? ", " : "", kinds[j], human_bytes(h, sizeof h, (double)b),
                kind_state_bytes(m, kinds[j], 2 * positions + 1) != b ? ", growing with the context" : ", fixed");
    }
    fprintf(stderr, ")\n");
    ssm_tokenizer_free(tok);
    ssm_model_free(m);
    return 0;
}

/* bytes as B, KiB, MiB or GiB, in buf */
static const char *human_bytes(char *buf, size_t cap, double b) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) b /= 1024, u++;
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
    return buf;
}

/* 1K, 64K, 1M or the number itself */
static const char *context_label(char *buf, size_t cap, long n) {
    if (n % (1L << 20) == 0) snprintf(buf, cap, "%ldM", n >> 20);
    else if (n % 1024 == 0) snprintf(buf, cap, "%ldK", n >> 10);
    else snprintf(buf, cap, "%ld", n);
    return buf;
}

/* The inference state per sequence by layer kind and in total, at the contexts of ctx[0..n): what a decode state
 * holds (a Mamba layer: fixed; attention: a cache that grows with the context). */
static void print_state_table(const ssm_model *m, const long *ctx, int n) {
    const ssm_config *c = ssm_model_config(m);
    printf("inference state per sequence, by context length (positions):\n  %-10s %6s", "kind", "layers");
    for (int i = 0; i < n; i++) {
        char h[32];
        printf(" %11s", context_label(h, sizeof h, ctx[i]));
    }
    printf("\n");
    const char *kinds[16];
    const int n_kinds = model_kinds(m, kinds, 16);
    for (int j = 0; j <= n_kinds; j++) { /* each kind, then the total (kind NULL) */
        const char *kind = j < n_kinds ? kinds[j] : NULL;
        int layers = 0;
        for (int l = 0; l < c->n_layer; l++) layers += !kind || !strcmp(ssm_model_layer_kind(m, l), kind);
        printf("  %-10s %6d", kind ? kind : "total", layers);
        for (int i = 0; i < n; i++) {
            char h[32];
            printf(" %11s", human_bytes(h, sizeof h, (double)kind_state_bytes(m, kind, ctx[i])));
        }
        printf("\n");
    }
}

static void print_info(const ssm_model *m, long context) {
    const ssm_config *c = ssm_model_config(m);
    printf("model: %d layers, pattern \"%s\", vocab %d, d_model %d\n", c->n_layer, c->layer_pattern, c->vocab_size,
           c->d_model);
    if (strchr(c->layer_pattern, 'm'))
        printf("  mamba1: d_inner %d, d_state %d, d_conv %d, dt_rank %d\n", c->mamba1.expand * c->d_model,
               c->mamba1.d_state, c->mamba1.d_conv, c->mamba1.dt_rank);
    if (strchr(c->layer_pattern, 'M'))
        printf("  mamba2: d_inner %d, %d heads of %d, %d groups, d_state %d, d_conv %d, chunk %d\n",
               c->mamba2.expand * c->d_model, c->mamba2.expand * c->d_model / c->mamba2.head_dim, c->mamba2.head_dim,
               c->mamba2.n_groups, c->mamba2.d_state, c->mamba2.d_conv, c->mamba2.chunk_size);
    if (strchr(c->layer_pattern, 'a'))
        printf("  attention: %d query heads, %d key/value heads, head dim %d, rope_theta %g, sliding window %d, "
               "max context %d\n", c->attention.n_heads, c->attention.n_kv_heads, c->attention.head_dim,
               c->attention.rope_theta, c->attention.sliding_window, c->attention.max_context);
    if (strchr(c->layer_pattern, 'f'))
        printf("  mlp: %s, intermediate size %d\n", c->mlp.hidden_act == SSM_MLP_RELU2 ? "relu2" : "SwiGLU",
               c->mlp.intermediate_size);
    printf("parameters: %zu (%.2f MB as float32)\n", ssm_model_n_params(m), ssm_model_n_params(m) * 4 / 1e6);
    const long ctx[] = {1L << 10, 1L << 13, 1L << 16, 1L << 20, context};
    print_state_table(m, ctx, context > 0 ? 5 : 4);
}
/* The named shapes of --config (info, bench): Mamba-1 ones, the Transformer baseline and a hybrid. */
#define CONFIG_NAMES                                                                                                   \
    "default, d256x4, d768x24, hf130m, t768x12 (Transformer), h768x24 (hybrid mmmaf), m2x24 (Mamba-2)"

static int config_by_name(const char *name, ssm_config *c) {
    ssm_config_default(c);
    if (!strcmp(name, "default")) return 0;
    if (!strcmp(name, "d256x4")) return c->d_model = 256, c->n_layer = 4, 0;
    if (!strcmp(name, "d768x24")) return c->d_model = 768, c->n_layer = 24, 0;
    /* the shape of state-spaces/mamba-130m-hf: GPT-NeoX vocabulary padded to 50280, tied head */
    if (!strcmp(name, "hf130m")) return c->d_model = 768, c->n_layer = 24, c->vocab_size = 50280, 0;
    /* the byte-level Transformer baseline (~85M parameters): 12 blocks of attention (12 heads of 64) and a SwiGLU
     * MLP of 2048, tied embedding */
    if (!strcmp(name, "t768x12")) {
        c->d_model = 768, c->n_layer = 24, c->attention.n_heads = 12, c->mlp.intermediate_size = 2048;
        return strcpy(c->layer_pattern, "af"), 0;
    }
    /* a hybrid of the same width: 3 Mamba-1 layers per Transformer block, 24 layers */
    if (!strcmp(name, "h768x24")) return c->d_model = 768, c->n_layer = 24, strcpy(c->layer_pattern, "mmmaf"), 0;
    /* state-spaces/mamba2-130m's shape with the byte vocabulary: 24 Mamba-2 layers, 24 heads of 64, d_state 128 */
    if (!strcmp(name, "m2x24")) return c->d_model = 768, c->n_layer = 24, strcpy(c->layer_pattern, "M"), 0;
    return -1;
}

static int cmd_info(int argc, char **argv) {
    const char *model = NULL, *config = NULL;
    long context = 0;
    option o[] = {
        {"--model", NULL, OPT_STR, &model, "model directory or run directory"},
        {"--config", NULL, OPT_STR, &config, "or a named shape: " CONFIG_NAMES},
        {"--context", NULL, OPT_LONG, &context, "also the state at this many positions (beside 1K, 8K, 64K, 1M)"},
    };
    parse_args(argc, argv, "info --model DIR | --config NAME",
               "Prints a model's shape, parameter count and its inference state per sequence (the\n"
               "autoregressive state), by layer kind, at contexts of 1K, 8K, 64K and 1M positions: fixed\n"
               "for Mamba layers, a cache that grows with the context for attention layers.",
               o, NOPTS(o));
    if (context < 0 || context > (1L << 40)) die("--context must be 0 .. 2^40 positions, got %ld", context);
    ssm_model *m;
    if (config) {
        ssm_config c;
        if (config_by_name(config, &c)) die("unknown --config '%s' (%s)", config, CONFIG_NAMES);
        m = ssm_model_new(&c, 1);
    } else {
        m = load_or_die(model);
    }
    print_info(m, context);
    ssm_tokenizer *tok = model ? tokenizer_for(model, NULL) : NULL;
    if (tok) printf("tokenizer: %s/tokenizer.json, %d tokens\n", model, ssm_tokenizer_vocab_size(tok));
    else printf("tokenizer: none (raw bytes)\n");
    /* where it can run: --device cuda:N works for each N listed */
    if (ssm_device_available("cuda")) {
        printf("devices: cpu, cuda:0 (cuda)");
        char name[32];
        for (int n = 1;; n++) { /* up to the first that is not there (or not usable) */
            snprintf(name, sizeof name, "cuda:%d", n);
            if (!ssm_device_available(name)) break;
            printf(", %s", name);
        }
        printf("\n");
    } else {
        printf("devices: cpu (cuda: %s)\n", ssm_last_error());
    }
    ssm_tokenizer_free(tok);
    ssm_model_free(m);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    const char *config = "d256x4", *what = "all", *model_dir = NULL, *device = "cpu";
    int batch = 8, seq_len = 256, steps = 5, decode_steps = 20, decode_batch = 16, threads = 0, bf16 = 0, profile = 0;
    int int8 = 0, prefill_chunk = 0, no_prefill = 0;
    long prefill = 0;
    const char *contexts = NULL, *prefill_s = NULL;
    option o[] = {
        {"--config", NULL, OPT_STR, &config, "model shape: " CONFIG_NAMES},
        {"--model", NULL, OPT_STR, &model_dir, "or a model directory (decode only; its load time is reported)"},
        {"--what", NULL, OPT_STR, &what, "train, decode or all"},
        {"--batch", NULL, OPT_INT, &batch, "training batch"},
        {"--seq-len", NULL, OPT_INT, &seq_len, "training sequence length"},
        {"--steps", NULL, OPT_INT, &steps, "timed training steps (median reported)"},
        {"--decode-steps", NULL, OPT_INT, &decode_steps, "timed decode steps"},
        {"--decode-batch", NULL, OPT_INT, &decode_batch, "sequences for the batched decode row"},
        {"--contexts", NULL, OPT_STR, &contexts,
         "also decode batch 1 after prefills of these lengths, e.g. 1K,8K,64K,1M (the state by context)"},
        {"--no-prefill", NULL, OPT_FLAG, &no_prefill,
         "with --contexts: start each decode at the context's position without computing the prefill (the cache "
         "that long, zeros): the decode's time and memory there, which do not depend on what the cache holds"},
        {"--prefill", NULL, OPT_STR, &prefill_s,
         "also time a prefill of this many bytes a sequence (e.g. 64K), at batch 1 and --decode-batch: per byte"},
        {"--prefill-chunk", NULL, OPT_INT, &prefill_chunk,
         "positions per forward call of that prefill, the state carried (0: the whole prompt in one call)"},
        {"--bf16", NULL, OPT_FLAG, &bf16, "bf16: decode weights on cpu; mixed precision (bf16 GEMMs) on cuda"},
        {"--int8", NULL, OPT_FLAG, &int8, INT8_HELP " (decode only)"},
        {"--profile", NULL, OPT_FLAG, &profile, "then time each op of the training step (synchronizing after each)"},
        {"--threads", NULL, OPT_INT, &threads, "OpenMP threads (0: all cores)"},
        {"--device", NULL, OPT_STR, &device, DEVICE_HELP},
    };
    parse_args(argc, argv, "bench [--config NAME | --model DIR] [--what train|decode|all] [--prefill 64K]",
               "Measures training and decode throughput for a named model shape or a model directory.", o, NOPTS(o));
    ssm_config c;
    if (config_by_name(config, &c)) die("unknown --config '%s' (%s)", config, CONFIG_NAMES);
    set_threads(threads);
    if (steps < 1 || decode_steps < 1 || batch < 1 || seq_len < 1 || decode_batch < 1) die("counts must be positive");
    if (steps > 100000 || decode_steps > 100000) die("--steps and --decode-steps must be at most 100000");
    if ((long long)batch * seq_len > (1LL << 30) || decode_batch > 65536)
        die("--batch x --seq-len must be at most 2^30 bytes and --decode-batch at most 65536");
    long ctx[16];
    int n_ctx = 0;
    for (const char *p = contexts; p && *p && n_ctx < 16;) { /* N, NK or NM, comma-separated */
        char *end;
        long v = strtol(p, &end, 10);
        if (*end == 'K' || *end == 'k') v <<= 10, end++;
        else if (*end == 'M' || *end == 'm') v <<= 20, end++;
        if (end == p || v < 1 || v > (1L << 24) || (*end && *end != ',')) die("--contexts: expected lengths like 1K,8K,64K,1M");
        ctx[n_ctx++] = v;
        p = *end ? end + 1 : end;
    }
    if (prefill_s) { /* N, NK or NM */
        char *end;
        prefill = strtol(prefill_s, &end, 10);
        if (*end == 'K' || *end == 'k') prefill <<= 10, end++;
        else if (*end == 'M' || *end == 'm') prefill <<= 20, end++;
        if (end == prefill_s || *end || prefill < 1 || prefill > (1L << 24))
            die("--prefill: expected a length like 64K (at most 16M)");
    }
    if (prefill_chunk < 0) die("--prefill-chunk must be 0 (the whole prompt) or positive");
    if (no_prefill && !n_ctx) die("--no-prefill is for the decodes at --contexts: add --contexts (e.g. 1M)");
    int do_train = !strcmp(what, "all") || !strcmp(what, "train"), do_dec = !strcmp(what, "all") || !strcmp(what, "decode");
    if (!do_train && !do_dec) die("--what must be train, decode or all");
    if (model_dir) do_train = 0;
    ssm_model *m;
    double load_s = -1;
    if (model_dir) {
        double t0 = omp_get_wtime();
        m = load_or_die(model_dir);
        load_s = omp_get_wtime() - t0;
        c = *ssm_model_config(m);
    } else {
        m = ssm_model_new(&c, 1);
        if (do_dec) { /* time the real loading path: save this model, load it back */
            char tmp[] = "/tmp/ssm_bench_XXXXXX", p[PATH_CAP];
            if (!mkdtemp(tmp) || ssm_model_save(m, tmp)) die("cannot save a model to /tmp for the load timing");
            double t0 = omp_get_wtime();
            ssm_model *back = load_or_die(tmp);
            load_s = omp_get_wtime() - t0;
            ssm_model_free(m);
            m = back;
            snprintf(p, sizeof p, "%s/model.safetensors", tmp), unlink(p);
            snprintf(p, sizeof p, "%s/config.json", tmp), unlink(p);
            rmdir(tmp);
        }
    }
    if (bf16 && int8) die("--bf16 and --int8 are two forms of the decode weights: choose one");
    if (int8 && do_train) die("--int8 is for decode (training stays float32): add --what decode");
    if (bf16) ssm_model_use_bf16(m);
    if (int8 && ssm_model_use_int8(m)) die("%s", ssm_last_error());
    if (ssm_model_set_device(m, device)) die("%s", ssm_last_error());
    const int on_cpu = !strcmp(device, "cpu");
    const char *unit = c.vocab_size == 256 ? "bytes/s" : "tokens/s";
    printf("%s %s: d_model %d, %d layers, vocab %d, %.2fM parameters, %s%s\n", model_dir ? "model" : "config",
           model_dir ? model_dir : config, c.d_model, c.n_layer, c.vocab_size, ssm_model_n_params(m) / 1e6,
           on_cpu ? "cpu" : device, bf16 ? ", bf16 decode weights" : int8 ? ", int8 decode weights" : "");
    if (on_cpu) printf("threads: %d\n", omp_get_max_threads());
    if (load_s >= 0) printf("load: %.3f s (config.json, memory-mapped safetensors, conversion to float32)\n", load_s);
    printf("%-28s %12s %14s\n", "measurement", "ms/step", unit);
    if (do_train) {
        size_t mem = 0;
        double s = ssm_bench_train_step(&c, device, bf16, batch, seq_len, steps, &mem, profile);
        if (s < 0) die("%s", ssm_last_error());
        char label[64];
        snprintf(label, sizeof label, "train %dx%d", batch, seq_len);
        printf("%-28s %12.2f %14.0f\n", label, s * 1e3, batch * seq_len / s);
        if (profile) ssm_bench_profile_print(steps);
        if (mem)
            printf("device memory: %.2f GiB at peak (ssm's buffers + the stream-ordered pool; the CUDA context and "
                   "cuBLASLt's workspace not counted)\n", mem / 1073741824.0);
    }
    if (do_dec) {
        double weight_bytes = ssm_bench_decode_weight_bytes(m);
        double s1 = ssm_bench_decode_step(m, 1, decode_steps);
        double sb = ssm_bench_decode_step(m, decode_batch, decode_steps);
        char label[64];
        printf("%-28s %12.3f %14.1f\n", "decode batch 1", s1 * 1e3, 1 / s1);
        snprintf(label, sizeof label, "decode batch %d", decode_batch);
        printf("%-28s %12.3f %14.1f\n", label, sb * 1e3, decode_batch / sb);
        for (int k = 0; prefill && k < 2; k++) { /* batch 1, then the batched row's */
            const int ns = k ? decode_batch : 1;
            const double sp = ssm_bench_prefill(m, ns, prefill, prefill_chunk);
            if (sp < 0) die("prefill of %d x %ld: %s", ns, prefill, ssm_last_error());
            char h[32];
            snprintf(label, sizeof label, "prefill %d x %s", ns, context_label(h, sizeof h, prefill));
            printf("%-28s %12.3f %14.0f   %.3f us/byte\n", label, sp * 1e3, ns * prefill / sp,
                   sp * 1e6 / ((double)ns * prefill));
        }
        if (no_prefill && n_ctx)
            printf("(--no-prefill: each context's decode starts at its position, the cache that long and zeros)\n");
        for (int i = 0; i < n_ctx; i++) {
            const double sc = ssm_bench_decode_at(m, 1, ctx[i], decode_steps, no_prefill);
            if (sc < 0) die("decode after %ld positions: %s", ctx[i], ssm_last_error());
            char h[32];
            snprintf(label, sizeof label, "decode batch 1 at %s", context_label(h, sizeof h, ctx[i]));
            /* a step reads the weights and the whole state (an attention layer's cache at that context) */
            const double state = (double)ssm_model_state_bytes_at(m, -1, ctx[i]);
            printf("%-28s %12.3f %14.1f   state %s, reads %.1f MB a step: %.1f GB/s", label, sc * 1e3, 1 / sc,
                   human_bytes(h, sizeof h, state), (weight_bytes + state) / 1e6, (weight_bytes + state) / sc / 1e9);
            /* the state is freed by now: the peak, not a sample of what is live (a short decode's 12 GiB cache can
             * come and go between two samples of nvidia-smi) */
            const size_t peak = ssm_bench_device_peak(m);
            if (peak) printf("; device peak %s", human_bytes(h, sizeof h, (double)peak));
            printf("\n");
        }
        if (on_cpu) {
            double copy_bw, read_bw;
            ssm_bench_memory_bandwidth(&copy_bw, &read_bw);
            printf("memory: copy %.1f GB/s (bytes copied per second; STREAM's read+write count: %.1f), read %.1f "
                   "GB/s\n", copy_bw / 1e9, 2 * copy_bw / 1e9, read_bw / 1e9);
            printf("batch-1 decode reads %.1f MB of weights per step: %.1f GB/s = %.0f%% of copy, %.0f%% of read "
                   "bandwidth (bound %.1f %s)\n", weight_bytes / 1e6, weight_bytes / s1 / 1e9,
                   100 * weight_bytes / s1 / copy_bw, 100 * weight_bytes / s1 / read_bw, read_bw / weight_bytes, unit);
        } else {
            printf("batch-1 decode reads %.1f MB of weights per step: %.1f GB/s\n", weight_bytes / 1e6,
                   weight_bytes / s1 / 1e9);
        }
    }
    ssm_model_free(m);
    return 0;
}

/* OpenBLAS up to 0.3.21 (Debian 12) does not recognise AMD Zen 4 and runs its AVX2 kernels there;
 * its AVX-512 ("SKYLAKEX") kernels make our training step ~17% faster on such a machine. The core type
 * is chosen once, when the library loads, which then publishes its pick in OPENBLAS_CORETYPE ("Haswell"
 * or "Zen" for an AVX2 fallback). So on an AVX-512 CPU that got a fallback we ask for SkylakeX and
 * re-execute ourselves, once (SSM_BLAS_REEXEC guards the loop). A user's own choice is kept: OpenBLAS
 * spells its picks in mixed case, users write them in capitals. If the exec fails we just go on. */
static void prefer_avx512_blas(char **argv) {
#if defined(__x86_64__)
    const char *core = getenv("OPENBLAS_CORETYPE");
    if (getenv("SSM_BLAS_REEXEC") || !core || (strcmp(core, "Haswell") && strcmp(core, "Zen"))) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl"))
        return;
    setenv("SSM_BLAS_REEXEC", "1", 1);
    setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1);
    execv("/proc/self/exe", argv);
#else
    (void)argv;
#endif
}

int main(int argc, char **argv) {
    prefer_avx512_blas(argv);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *help;
    } cmds[] = {
        {"train", cmd_train, "train a model on a byte file (defaults: tinyshakespeare, ~1M parameters)"},
        {"eval", cmd_eval, "bits per byte of a model on a file, read as one stream"},
        {"generate", cmd_generate, "continue a prompt, streaming bytes to stdout"},
        {"info", cmd_info, "model shape, parameter count, inference state size"},
        {"bench", cmd_bench, "training and decode throughput"},
    };
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        printf("usage: ssm COMMAND [options]   (ssm COMMAND --help for its options)\n\ncommands:\n");
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) printf("  %-10s %s\n", cmds[i].name, cmds[i].help);
        return argc < 2 ? 1 : 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) {
            prog_cmd = cmds[i].name;
            return cmds[i].fn(argc - 2, argv + 2);
        }
    fprintf(stderr, "ssm: unknown command '%s' (try ssm --help)\n", argv[1]);
    return 1;
}
