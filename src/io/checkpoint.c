/* Model directories and training checkpoints (see train.h).
 * A model directory is HF MambaForCausalLM's: config.json + model.safetensors (float32, HF names), so
 * transformers loads it as is. A training checkpoint adds optimizer.safetensors (AdamW moments, flat)
 * and train_state.json (step, data RNG, options). ckpt_save writes a whole new directory DIR.tmp and
 * swaps it in with renames, so a crash leaves the previous checkpoint (at DIR or DIR.old) intact. */
#include "common.h"
#include "io/fileio.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "model.h"
#include "train.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096

static void path_join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);
    CHECK(n >= 0 && n < PATH_CAP, "path too long: %s/%s", dir, name);
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- config.json -------------------------------------------------------------------------------- */

/* A float field of config.json: the shortest decimal that reads back as the same float, always with
 * a '.' or an exponent, since transformers' strict config classes reject 1 where they expect 1.0. */
static void jw_float(json_writer *w, float x) {
    char buf[40];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if ((float)strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".e")) strcat(buf, ".0");
    jw_raw(w, buf);
}

static int config_write(const char *path, const ssm_config *c) {
    json_writer w;
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "architectures"), jw_raw(&w, "[\"MambaForCausalLM\"]");
    jw_key(&w, "model_type"), jw_string(&w, "mamba");
    jw_key(&w, "vocab_size"), jw_int(&w, c->vocab_size);
    jw_key(&w, "pad_vocab_size_multiple"), jw_int(&w, 1);
    jw_key(&w, "hidden_size"), jw_int(&w, c->d_model);
    jw_key(&w, "num_hidden_layers"), jw_int(&w, c->n_layer);
    jw_key(&w, "state_size"), jw_int(&w, c->d_state);
    jw_key(&w, "expand"), jw_int(&w, c->expand);
    jw_key(&w, "intermediate_size"), jw_int(&w, c->expand * c->d_model);
    jw_key(&w, "conv_kernel"), jw_int(&w, c->d_conv);
    jw_key(&w, "time_step_rank"), jw_int(&w, c->dt_rank);
    jw_key(&w, "layer_norm_epsilon"), jw_float(&w, c->norm_eps);
    jw_key(&w, "use_bias"), jw_raw(&w, "false");
    jw_key(&w, "use_conv_bias"), jw_raw(&w, "true");
    jw_key(&w, "tie_word_embeddings"), jw_raw(&w, "true");
    jw_key(&w, "residual_in_fp32"), jw_raw(&w, "true");
    jw_key(&w, "hidden_act"), jw_string(&w, "silu");
    jw_key(&w, "time_step_init_scheme"), jw_string(&w, "random");
    jw_key(&w, "time_step_min"), jw_float(&w, 0.001);
    jw_key(&w, "time_step_max"), jw_float(&w, 0.1);
    jw_key(&w, "time_step_floor"), jw_float(&w, 1e-4);
    jw_key(&w, "time_step_scale"), jw_float(&w, 1.0);
    /* false, although our init does rescale out_proj: transformers 5 re-applies that init to the
     * loaded out_proj weights when this is true, silently replacing them */
    jw_key(&w, "rescale_prenorm_residual"), jw_raw(&w, "false");
    jw_key(&w, "initializer_range"), jw_float(&w, 0.02);
    jw_key(&w, "bos_token_id"), jw_int(&w, 0);
    jw_key(&w, "eos_token_id"), jw_int(&w, 0);
    jw_key(&w, "pad_token_id"), jw_int(&w, 0);
    jw_key(&w, "use_cache"), jw_raw(&w, "true");
    jw_key(&w, "ssm_layer_pattern"), jw_string(&w, c->layer_pattern);
    jw_end_object(&w);
    jw_raw(&w, "\n");
    int rc = file_write_atomic(path, w.data, w.len);
    jw_free(&w);
    return rc;
}

static int config_read(const char *path, ssm_config *c) {
    json_value *root = json_parse_file(path);
    if (!root) return -1;
    int rc = -1;
    if (root->type != JSON_OBJECT) {
        ssm_error("%s: expected a JSON object", path);
        goto out;
    }
    memset(c, 0, sizeof *c);
    const char *type = NULL;
    if (json_get_string(root, "model_type", &type) < 0) goto named;
    if (type && strcmp(type, "mamba") != 0) {
        ssm_error("%s: model_type \"%s\" is not supported (expected \"mamba\")", path, type);
        goto out;
    }
    struct {
        const char *key;
        int *field;
        int required;
    } ints[] = {{"vocab_size", &c->vocab_size, 1}, {"hidden_size", &c->d_model, 1},
                {"num_hidden_layers", &c->n_layer, 1}, {"state_size", &c->d_state, 1},
                {"expand", &c->expand, 1},         {"conv_kernel", &c->d_conv, 1},
                {"time_step_rank", &c->dt_rank, 0}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        long long v;
        int r = json_get_int(root, ints[i].key, &v);
        if (r < 0) goto named;
        if (r == 1 && ints[i].required) {
            ssm_error("%s: missing \"%s\"", path, ints[i].key);
            goto out;
        }
        if (r == 0) {
            if (v < 0 || v > 1 << 24) {
                ssm_error("%s: \"%s\" = %lld is out of range", path, ints[i].key, v);
                goto out;
            }
            *ints[i].field = (int)v;
        }
    }
    double eps = 1e-5;
    if (json_get_double(root, "layer_norm_epsilon", &eps) < 0) goto named;
    c->norm_eps = (float)eps;
    long long inter;
    if (json_get_int(root, "intermediate_size", &inter) == 0 && inter != (long long)c->expand * c->d_model) {
        ssm_error("%s: intermediate_size %lld is not expand * hidden_size = %d", path, inter, c->expand * c->d_model);
        goto out;
    }
    const char *pattern = "m";
    if (json_get_string(root, "ssm_layer_pattern", &pattern) < 0) goto named;
    if (strlen(pattern) >= sizeof c->layer_pattern) {
        ssm_error("%s: ssm_layer_pattern is too long", path);
        goto out;
    }
    strcpy(c->layer_pattern, pattern);
    if (ssm_config_resolve(c)) goto named;
    rc = 0;
    goto out;
named: /* a getter or the resolver left a message without the file name: prefix it */
    {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ssm_last_error());
        ssm_error("%s: %s", path, msg);
    }
out:
    json_free(root);
    return rc;
}

/* ---- model.safetensors ---------------------------------------------------------------------------- */

static int weights_write(const char *path, const param_layout *L, const float *base, const char *key,
                         const char *value) {
    st_tensor *t = xcalloc(L->n, sizeof *t);
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        t[i].name = (char *)p->name;
        t[i].dtype = ST_F32;
        t[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) t[i].shape[d] = p->shape[d];
        t[i].nbytes = p->numel * sizeof(float);
        t[i].data = base + p->offset;
    }
    const char *keys[] = {"format", key}, *values[] = {"pt", value};
    int rc = st_write(path, t, L->n, keys, values, key ? 2 : 1);
    free(t);
    return rc;
}

static const char *shape_str(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Fills m->w from a safetensors file: every tensor of the layout present with its exact shape, no
 * tensor left over, all values finite. */
static int weights_read(const char *path, ssm_model *m) {
    st_file f;
    if (st_open(&f, path)) return -1;
    int rc = -1;
    const param_layout *L = &m->layout;
    for (int i = 0; i < L->n; i++) {
        const param_info *p = &L->items[i];
        const st_tensor *t = st_find(&f, p->name);
        if (!t) {
            ssm_error("%s: missing tensor '%s' (does config.json match these weights?)", path, p->name);
            goto out;
        }
        int64_t want[PARAM_MAX_DIMS];
        int same = t->ndim == p->ndim;
        for (int d = 0; d < p->ndim; d++) {
            want[d] = p->shape[d];
            if (same && t->shape[d] != p->shape[d]) same = 0;
        }
        if (!same) {
            char a[96], b[96];
            ssm_error("%s: tensor '%s' has shape %s but config.json implies %s", path, p->name,
                      shape_str(a, sizeof a, t->shape, t->ndim), shape_str(b, sizeof b, want, p->ndim));
            goto out;
        }
        if (st_read_f32(&f, t, m->w + p->offset, p->numel)) goto out;
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(m->w[p->offset + k])) {
                ssm_error("%s: tensor '%s' holds a non-finite value (%g) at index %zu", path, p->name,
                          m->w[p->offset + k], k);
                goto out;
            }
    }
    for (int i = 0; i < f.n; i++)
        if (!params_find(L, f.tensors[i].name)) {
            ssm_error("%s: unexpected tensor '%s' for this config.json", path, f.tensors[i].name);
            goto out;
        }
    rc = 0;
out:
    st_close(&f);
    return rc;
}

int ssm_model_save(const ssm_model *m, const char *dir) {
    char p[PATH_CAP];
    if (mkdir(dir, 0777) && errno != EEXIST) return ssm_error("%s: cannot create directory: %s", dir, strerror(errno));
    path_join(p, dir, "model.safetensors");
    if (weights_write(p, &m->layout, m->w, NULL, NULL)) return -1;
    path_join(p, dir, "config.json");
    return config_write(p, &m->cfg);
}

/* A run directory (with checkpoint/) is accepted wherever a model directory is. */
static const char *model_dir_resolve(const char *dir, char *buf) {
    char p[PATH_CAP];
    path_join(p, dir, "config.json");
    if (file_exists(p)) return dir;
    path_join(buf, dir, "checkpoint");
    path_join(p, buf, "config.json");
    return file_exists(p) ? buf : dir;
}

ssm_model *ssm_model_load(const char *dir_in) {
    char buf[PATH_CAP], p[PATH_CAP];
    const char *dir = model_dir_resolve(dir_in, buf);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ssm_error("%s: no such model directory", dir);
        return NULL;
    }
    ssm_config c;
    path_join(p, dir, "config.json");
    if (config_read(p, &c)) return NULL;
    ssm_model *m = model_alloc(&c);
    if (!m) return NULL;
    path_join(p, dir, "model.safetensors");
    if (weights_read(p, m)) {
        ssm_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- training checkpoints --------------------------------------------------------------------------- */

static int remove_tree(const char *dir) {
    static const char *const files[] = {"model.safetensors", "config.json", "optimizer.safetensors", "train_state.json"};
    char p[PATH_CAP];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        path_join(p, dir, files[i]);
        unlink(p);
        snprintf(p + strlen(p), PATH_CAP - strlen(p), ".tmp");
        unlink(p);
    }
    if (rmdir(dir) && errno != ENOENT) return ssm_error("%s: cannot remove: %s", dir, strerror(errno));
    return 0;
}

static int state_write(const char *path, const train_progress *pr, const train_options *t) {
    json_writer w;
    char rng[32];
    snprintf(rng, sizeof rng, "%llu", (unsigned long long)pr->data_rng);
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "step"), jw_int(&w, pr->step);
    jw_key(&w, "data_rng"), jw_string(&w, rng); /* a string: a JSON number cannot hold 64 bits */
    jw_key(&w, "tokens_seen"), jw_number(&w, pr->tokens_seen);
    jw_key(&w, "data"), jw_string(&w, t->data_path);
    jw_key(&w, "batch"), jw_int(&w, t->batch);
    jw_key(&w, "seq_len"), jw_int(&w, t->seq_len);
    jw_key(&w, "grad_accum"), jw_int(&w, t->grad_accum);
    jw_key(&w, "val_fraction"), jw_number(&w, t->val_fraction);
    jw_key(&w, "eval_every"), jw_int(&w, t->eval_every);
    jw_key(&w, "eval_bytes"), jw_int(&w, t->eval_bytes);
    jw_key(&w, "seed"), jw_int(&w, (long long)t->seed);
    jw_key(&w, "lr"), jw_number(&w, t->optim.lr);
    jw_key(&w, "min_lr"), jw_number(&w, t->optim.min_lr);
    jw_key(&w, "warmup"), jw_int(&w, t->optim.warmup);
    jw_key(&w, "steps"), jw_int(&w, t->optim.steps);
    jw_key(&w, "weight_decay"), jw_number(&w, t->optim.weight_decay);
    jw_key(&w, "beta1"), jw_number(&w, t->optim.beta1);
    jw_key(&w, "beta2"), jw_number(&w, t->optim.beta2);
    jw_key(&w, "eps"), jw_number(&w, t->optim.eps);
    jw_key(&w, "clip"), jw_number(&w, t->optim.clip);
    jw_end_object(&w);
    jw_raw(&w, "\n");
    int rc = file_write_atomic(path, w.data, w.len);
    jw_free(&w);
    return rc;
}

int ckpt_save(const char *dir, const ssm_model *m, const adamw_state *opt, const train_progress *pr,
              const train_options *t) {
    char tmp[PATH_CAP], old[PATH_CAP], p[PATH_CAP], step[32];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    snprintf(old, sizeof old, "%s.old", dir);
    snprintf(step, sizeof step, "%ld", pr->step);
    if (remove_tree(tmp)) return -1;
    if (mkdir(tmp, 0777)) return ssm_error("%s: cannot create directory: %s", tmp, strerror(errno));
    path_join(p, tmp, "model.safetensors");
    if (weights_write(p, &m->layout, m->w, "step", step)) return -1;
    path_join(p, tmp, "config.json");
    if (config_write(p, &m->cfg)) return -1;
    st_tensor moments[2] = {{.name = "exp_avg", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)m->layout.total},
                             .nbytes = m->layout.total * sizeof(float), .data = opt->m},
                            {.name = "exp_avg_sq", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)m->layout.total},
                             .nbytes = m->layout.total * sizeof(float), .data = opt->v}};
    char adam_step[32];
    snprintf(adam_step, sizeof adam_step, "%ld", opt->step);
    const char *keys[] = {"step", "adam_step"}, *values[] = {step, adam_step};
    path_join(p, tmp, "optimizer.safetensors");
    if (st_write(p, moments, 2, keys, values, 2)) return -1;
    path_join(p, tmp, "train_state.json");
    if (state_write(p, pr, t)) return -1;
    /* swap: DIR -> DIR.old, DIR.tmp -> DIR, drop DIR.old. Each rename is atomic; at every instant a
     * complete checkpoint exists at DIR or DIR.old (ckpt_load falls back to it). */
    if (remove_tree(old)) return -1;
    if (file_exists(dir) && rename(dir, old)) return ssm_error("%s: cannot rename: %s", dir, strerror(errno));
    if (rename(tmp, dir)) return ssm_error("%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    return remove_tree(old);
}

/* The checkpoint to resume: DIR, or DIR.old when a crash came between the two renames of a save. */
static const char *ckpt_dir_resolve(const char *dir, char *old) {
    char p[PATH_CAP];
    snprintf(old, PATH_CAP, "%s.old", dir);
    path_join(p, dir, "train_state.json");
    return !file_exists(p) && file_exists(old) ? old : dir;
}

int ckpt_load(const char *dir_in, ssm_model **out, adamw_state *opt, train_progress *pr) {
    char old[PATH_CAP], p[PATH_CAP];
    const char *dir = ckpt_dir_resolve(dir_in, old);
    path_join(p, dir, "train_state.json");
    if (!file_exists(p)) return ssm_error("%s: no checkpoint to resume (train_state.json missing)", dir_in);
    json_value *st = json_parse_file(p);
    if (!st) return -1;
    long long step = -1;
    const char *rng = NULL;
    double seen = 0;
    if (json_get_int(st, "step", &step) != 0 || json_get_string(st, "data_rng", &rng) != 0 || step < 0) {
        json_free(st);
        return ssm_error("%s: missing or invalid step/data_rng", p);
    }
    json_get_double(st, "tokens_seen", &seen);
    pr->step = step;
    pr->data_rng = strtoull(rng, NULL, 10);
    pr->tokens_seen = seen;
    json_free(st);
    ssm_model *m = ssm_model_load(dir);
    if (!m) return -1;
    path_join(p, dir, "optimizer.safetensors");
    st_file f;
    if (st_open(&f, p)) {
        ssm_model_free(m);
        return -1;
    }
    adamw_init(opt, m);
    const st_tensor *tm = st_find(&f, "exp_avg"), *tv = st_find(&f, "exp_avg_sq");
    const char *as = st_meta(&f, "adam_step");
    int rc = 0;
    if (!tm || !tv || !as) rc = ssm_error("%s: missing exp_avg, exp_avg_sq or adam_step", p);
    else if (st_read_f32(&f, tm, opt->m, m->layout.total) || st_read_f32(&f, tv, opt->v, m->layout.total)) rc = -1;
    if (!rc) opt->step = atol(as);
    st_close(&f);
    if (rc) {
        adamw_free(opt);
        ssm_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int ckpt_load_options(const char *dir_in, train_options *t, char *data_buf, size_t data_cap) {
    char old[PATH_CAP], p[PATH_CAP];
    const char *dir = ckpt_dir_resolve(dir_in, old);
    path_join(p, dir, "train_state.json");
    if (!file_exists(p)) return ssm_error("%s: no checkpoint to resume (train_state.json missing)", dir);
    json_value *st = json_parse_file(p);
    if (!st) return -1;
    long long v;
    double x;
    const char *s;
    if (json_get_string(st, "data", &s) == 0) {
        snprintf(data_buf, data_cap, "%s", s);
        t->data_path = data_buf;
    }
#define INT(key, field) if (json_get_int(st, key, &v) == 0) t->field = (int)v
#define DBL(key, field) if (json_get_double(st, key, &x) == 0) t->field = x
    INT("batch", batch);
    INT("seq_len", seq_len);
    INT("grad_accum", grad_accum);
    DBL("val_fraction", val_fraction);
    INT("eval_every", eval_every);
    if (json_get_int(st, "eval_bytes", &v) == 0) t->eval_bytes = v;
    if (json_get_int(st, "seed", &v) == 0) t->seed = (uint64_t)v;
    DBL("lr", optim.lr);
    DBL("min_lr", optim.min_lr);
    INT("warmup", optim.warmup);
    INT("steps", optim.steps);
    DBL("weight_decay", optim.weight_decay);
    DBL("beta1", optim.beta1);
    DBL("beta2", optim.beta2);
    DBL("eps", optim.eps);
    DBL("clip", optim.clip);
#undef INT
#undef DBL
    json_free(st);
    return 0;
}
