/* libFuzzer harness for the training-checkpoint loader, ckpt_load and ckpt_load_options (make fuzz;
 * tests/fuzz/run.sh). Once, at start, it saves a valid checkpoint of a tiny model with ckpt_save into a
 * temporary directory. Each input then replaces one of its files: the first byte picks the file (its
 * value mod 4: train_state.json, optimizer.safetensors, config.json, model.safetensors) and the rest is
 * the new content; an input of that byte alone removes the file. Whatever the loaders do with it, they
 * must not crash, leak or read out of bounds, and must say why when they refuse; a checkpoint they
 * accept must be safe to use: moments of the model's size, and a forward pass that runs.
 * With SSM_FUZZ_SEED_DIR set (tests/fuzz/run.sh sets it to the corpus), it also writes each file of
 * the fresh checkpoint there as a seed, so the seeds follow the format ckpt_save writes today. */
#include <ftw.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "io/fileio.h"
#include "model.h"
#include "ssm.h"
#include "io/checkpoint.h"

static const char *const files[] = {"train_state.json", "optimizer.safetensors", "config.json", "model.safetensors"};
#define N_FILES ((int)(sizeof files / sizeof files[0]))

static char root[PATH_CAP];     /* the temporary directory */
static char ckpt[PATH_CAP];     /* root/checkpoint */
static char *pristine[N_FILES]; /* each file as ckpt_save wrote it */
static size_t pristine_len[N_FILES];

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb"); /* not file_write_atomic: no fsync for every input */
    CHECK(f, "cannot write %s", path);
    CHECK(fwrite(data, 1, len, f) == len && fclose(f) == 0, "cannot write %s", path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }
static void remove_root(void) { nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    omp_set_num_threads(1); /* one input at a time; threads over tensors this small only cost time */
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/ssm_fuzz_checkpoint.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CHECK(mkdtemp(root), "cannot create %s", root);
    atexit(remove_root);
    path_join(ckpt, root, "checkpoint");

    /* two layers (so names with a layer index other than 0 appear), every size small */
    ssm_config c;
    ssm_config_default(&c);
    c.vocab_size = 8, c.d_model = 4, c.n_layer = 2, c.mamba1.d_state = 2, c.mamba1.d_conv = 2, c.mamba1.expand = 2;
    ssm_model *m = ssm_model_new(&c, 1);
    CHECK(m, "tiny model: %s", ssm_last_error());
    adamw_state opt;
    adamw_init(&opt, m);
    for (size_t i = 0; i < m->layout.total; i++) opt.m[i] = 1e-3f * (float)(i % 7), opt.v[i] = 1e-6f * (float)(i % 5);
    opt.step = 3;
    ssm_train_options t;
    ssm_train_options_default(&t);
    t.data_path = "data/tiny.txt";
    train_progress p = {.step = 3, .data_rng = 12345, .tokens_seen = 96};
    CHECK(ckpt_save(ckpt, m, &opt, &p, &t) == 0, "ckpt_save: %s", ssm_last_error());
    adamw_free(&opt);
    ssm_model_free(m);

    const char *seeds = getenv("SSM_FUZZ_SEED_DIR");
    for (int k = 0; k < N_FILES; k++) {
        char path[PATH_CAP];
        path_join(path, ckpt, files[k]);
        CHECK(file_read_all(path, &pristine[k], &pristine_len[k]) == 0, "%s", ssm_last_error());
        if (seeds && *seeds) { /* "<k><content>": the file as it is, for the fuzzer to change */
            char *seed = xmalloc(pristine_len[k] + 1);
            seed[0] = (char)k;
            memcpy(seed + 1, pristine[k], pristine_len[k]);
            char name[64];
            snprintf(name, sizeof name, "fresh-%s", files[k]);
            path_join(path, seeds, name);
            write_file(path, seed, pristine_len[k] + 1);
            free(seed);
        }
    }
    return 0;
}

/* Runs a few tokens through a model the loader accepted. */
static void forward_once(const ssm_model *m) {
    const int V = ssm_model_config(m)->vocab_size;
    int tokens[3] = {0, 1 % V, (V - 1) % V};
    float *logits = xmalloc((size_t)V * sizeof *logits);
    ssm_state *s = ssm_state_new(m, 1);
    ssm_forward(m, s, tokens, 3, logits, 1);
    ssm_step(m, s, tokens, logits);
    ssm_state_free(s);
    free(logits);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const int k = data[0] % N_FILES;
    char path[PATH_CAP];
    path_join(path, ckpt, files[k]);
    if (size == 1) unlink(path);
    else write_file(path, data + 1, size - 1);

    ssm_model *m = NULL;
    adamw_state opt;
    memset(&opt, 0, sizeof opt);
    train_progress p;
    ssm_error("%s", ""); /* clear the message so a refusal without one shows as "unknown error" */
    if (ckpt_load(ckpt, &m, &opt, &p) != 0) {
        CHECK(strcmp(ssm_last_error(), "unknown error") != 0, "ckpt_load refused the input without a message");
    } else {
        CHECK(m && opt.m && opt.v && p.step >= 0, "ckpt_load succeeded with m %p, moments %p %p, step %ld", (void *)m,
              (void *)opt.m, (void *)opt.v, p.step);
        volatile float sum = 0; /* touch every moment so ASan checks they span the whole layout */
        for (size_t i = 0; i < m->layout.total; i++) sum += opt.m[i] + opt.v[i];
        (void)sum;
        forward_once(m);
        adamw_free(&opt);
        ssm_model_free(m);
    }

    ssm_train_options t;
    ssm_train_options_default(&t);
    char data_buf[64]; /* small, so a long data path must be cut to fit */
    ssm_error("%s", "");
    if (ckpt_load_options(ckpt, &t, data_buf, sizeof data_buf) != 0)
        CHECK(strcmp(ssm_last_error(), "unknown error") != 0, "ckpt_load_options refused the input without a message");
    else if (t.data_path == data_buf)
        CHECK(memchr(data_buf, 0, sizeof data_buf), "data path not terminated");

    write_file(path, pristine[k], pristine_len[k]); /* the next input starts from the valid checkpoint */
    return 0;
}
