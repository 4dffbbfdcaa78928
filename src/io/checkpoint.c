/* Training checkpoints (see checkpoint.h): the model directory (src/io/model_dir.c) plus
 * optimizer.safetensors (AdamW moments, flat) and train_state.json (step, data RNG, options). ckpt_save
 * writes a whole new directory DIR.tmp and swaps it in with renames, so a crash leaves the previous
 * checkpoint (at DIR or DIR.old) intact. */
#include "common.h"
#include "io/fileio.h"
#include "io/json.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "model.h"
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- training checkpoints --------------------------------------------------------------------------- */

/* The files a save writes; anything else found in the checkpoint (a user's notes, a tokenizer.json) is
 * carried into the next one rather than lost. */
static const char *const ckpt_files[] = {"model.safetensors", "config.json", "optimizer.safetensors",
                                         "train_state.json", "validation.json"};

static int is_ckpt_file(const char *name) {
    for (size_t i = 0; i < sizeof ckpt_files / sizeof ckpt_files[0]; i++)
        if (!strcmp(name, ckpt_files[i])) return 1;
    return 0;
}

/* dst = a copy of src: a hard link where the filesystem allows (the files of a saved checkpoint are never
 * written again, only replaced), else a copy of the bytes. */
static int file_link_or_copy(const char *src, const char *dst) {
    if (link(src, dst) == 0) return 0;
    char *data;
    size_t len;
    if (file_read_all(src, &data, &len)) return -1;
    int rc = file_write_atomic(dst, data, len);
    free(data);
    return rc;
}

/* Links into `to` the regular files of `from` that `keep` accepts (by name). */
static int carry_files(const char *from, const char *to, int (*keep)(const char *name)) {
    DIR *d = opendir(from);
    if (!d) return errno == ENOENT ? 0 : ssm_error("%s: cannot read: %s", from, strerror(errno));
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        char a[PATH_CAP], b[PATH_CAP];
        struct stat st;
        if (!keep(e->d_name) || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        path_join(a, from, e->d_name);
        if (lstat(a, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        path_join(b, to, e->d_name);
        rc = file_link_or_copy(a, b);
    }
    closedir(d);
    return rc;
}

static int not_ckpt_file(const char *name) { return !is_ckpt_file(name); }
static int model_file(const char *name) { return !strcmp(name, "model.safetensors") || !strcmp(name, "config.json"); }

/* Replaces the directory `dir` by the complete directory `tmp`: dir -> dir.old, tmp -> dir, then dir.old
 * removed. Each rename is atomic, so at every instant a complete copy exists at dir or dir.old (readers fall
 * back to it); tmp's files were fsynced as they were written, tmp itself and the parent are synced here so
 * that a power loss cannot leave a renamed but empty directory. */
static int dir_swap_in(const char *tmp, const char *dir) {
    char old[PATH_CAP];
    snprintf(old, sizeof old, "%s.old", dir);
    dir_sync(tmp);
    /* without dir (a crash came between the renames), dir.old is the only complete copy: kept until the end */
    if (file_exists(dir) && (dir_remove_tree(old) || rename(dir, old)))
        return ssm_error("%s: cannot move aside to %s: %s", dir, old, strerror(errno));
    if (rename(tmp, dir)) return ssm_error("%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    file_sync_parent_dir(dir);
    return dir_remove_tree(old);
}

/* tmp, empty: what a save that died part-way left there removed. */
static int dir_fresh(const char *tmp) {
    if (dir_remove_tree(tmp)) return -1;
    if (mkdir(tmp, 0777)) return ssm_error("%s: cannot create directory: %s", tmp, strerror(errno));
    return 0;
}

/* After a failed save: tmp removed (a full disk must not leave a half copy behind), the first error kept
 * rather than the clean-up's. Returns -1. */
static int save_failed(const char *tmp) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ssm_last_error());
    dir_remove_tree(tmp);
    return ssm_error("%s", msg);
}

static int state_write(const char *path, const train_progress *pr, const ssm_train_options *t) {
    json_writer w;
    char rng[32];
    snprintf(rng, sizeof rng, "%llu", (unsigned long long)pr->data_rng);
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "step"), jw_int(&w, pr->step);
    jw_key(&w, "data_rng"), jw_string(&w, rng); /* a string: a JSON number cannot hold 64 bits */
    jw_key(&w, "tokens_seen"), jw_number(&w, pr->tokens_seen);
    jw_key(&w, "best_step"), jw_int(&w, pr->best_step);
    jw_key(&w, "best_val_loss"), jw_number(&w, pr->best_val_loss); /* null before the first validation */
    jw_key(&w, "data"), jw_string(&w, t->data_path);
    jw_key(&w, "data_bytes"), jw_int(&w, (long long)pr->data_bytes);
    jw_key(&w, "batch"), jw_int(&w, t->batch);
    jw_key(&w, "seq_len"), jw_int(&w, t->seq_len);
    jw_key(&w, "grad_accum"), jw_int(&w, t->grad_accum);
    jw_key(&w, "val_fraction"), jw_number(&w, t->val_fraction);
    jw_key(&w, "val_data"), jw_string(&w, t->val_data_path ? t->val_data_path : ""); /* "": the tail */
    jw_key(&w, "eval_every"), jw_int(&w, t->eval_every);
    jw_key(&w, "eval_bytes"), jw_int(&w, t->eval_bytes);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->seed);
    jw_key(&w, "seed"), jw_string(&w, seed); /* a string, as data_rng */
    jw_key(&w, "lr"), jw_number(&w, t->optim.lr);
    jw_key(&w, "min_lr"), jw_number(&w, t->optim.min_lr);
    jw_key(&w, "warmup"), jw_int(&w, t->optim.warmup);
    jw_key(&w, "steps"), jw_int(&w, t->optim.steps);
    jw_key(&w, "weight_decay"), jw_number(&w, t->optim.weight_decay);
    jw_key(&w, "beta1"), jw_number(&w, t->optim.beta1);
    jw_key(&w, "beta2"), jw_number(&w, t->optim.beta2);
    jw_key(&w, "eps"), jw_number(&w, t->optim.eps);
    jw_key(&w, "clip"), jw_number(&w, t->optim.clip);
    /* what the batches are: a resumed run must draw the same ones (absent in older checkpoints: none) */
    if (t->task) jw_key(&w, "task"), jw_string(&w, t->task);
    jw_key(&w, "val_seqs"), jw_int(&w, t->val_seqs);
    jw_key(&w, "noise_rate"), jw_number(&w, t->noise_rate);
    jw_key(&w, "noise_byte"), jw_int(&w, t->noise_byte);
    jw_end_object(&w);
    jw_raw(&w, "\n");
    int rc = file_write_atomic(path, w.data, w.len);
    jw_free(&w);
    return rc;
}

static int ckpt_write(const char *tmp, const char *dir, const ssm_model *m, const adamw_state *opt,
                      const train_progress *pr, const ssm_train_options *t) {
    char p[PATH_CAP], step[32];
    snprintf(step, sizeof step, "%ld", pr->step);
    if (dir_fresh(tmp) || carry_files(dir, tmp, not_ckpt_file)) return -1;
    path_join(p, tmp, "model.safetensors");
    if (model_weights_write(p, m, "step", step)) return -1;
    path_join(p, tmp, "config.json");
    if (model_config_write(p, &m->cfg)) return -1;
    float *hm, *hv; /* the moments in host memory, wherever the optimizer runs */
    adamw_download(opt, m->layout.total, &hm, &hv);
    st_tensor moments[2] = {{.name = "exp_avg", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)m->layout.total},
                             .nbytes = m->layout.total * sizeof(float), .data = hm},
                            {.name = "exp_avg_sq", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)m->layout.total},
                             .nbytes = m->layout.total * sizeof(float), .data = hv}};
    char adam_step[32];
    snprintf(adam_step, sizeof adam_step, "%ld", opt->step);
    const char *keys[] = {"step", "adam_step"}, *values[] = {step, adam_step};
    path_join(p, tmp, "optimizer.safetensors");
    int st_rc = st_write(p, moments, 2, keys, values, 2);
    free(hm), free(hv);
    if (st_rc) return -1;
    path_join(p, tmp, "train_state.json");
    return state_write(p, pr, t);
}

int ckpt_save(const char *dir, const ssm_model *m, const adamw_state *opt, const train_progress *pr,
              const ssm_train_options *t) {
    char tmp[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    return ckpt_write(tmp, dir, m, opt, pr, t) || dir_swap_in(tmp, dir) ? save_failed(tmp) : 0;
}

int ckpt_save_best(const char *ckpt_dir, const char *best_dir, long step, double val_loss, double val_acc) {
    char tmp[PATH_CAP], p[PATH_CAP];
    snprintf(tmp, sizeof tmp, "%s.tmp", best_dir);
    int rc = dir_fresh(tmp) || carry_files(ckpt_dir, tmp, model_file) ? -1 : 0;
    if (!rc) {
        json_writer w;
        jw_init(&w);
        jw_begin_object(&w);
        jw_key(&w, "step"), jw_int(&w, step);
        jw_key(&w, "val_loss"), jw_number(&w, val_loss);
        jw_key(&w, "val_bpb"), jw_number(&w, val_loss / M_LN2);
        if (!isnan(val_acc)) jw_key(&w, "val_acc"), jw_number(&w, val_acc);
        jw_end_object(&w);
        jw_raw(&w, "\n");
        path_join(p, tmp, "validation.json");
        rc = file_write_atomic(p, w.data, w.len);
        jw_free(&w);
    }
    return rc || dir_swap_in(tmp, best_dir) ? save_failed(tmp) : 0;
}

/* A decimal count from a string field (64-bit values do not fit a JSON number): all digits, in [0, max]. */
static int parse_count(const char *text, unsigned long long max, unsigned long long *out) {
    if (!text || !*text || strspn(text, "0123456789") != strlen(text)) return -1;
    errno = 0;
    unsigned long long v = strtoull(text, NULL, 10);
    if (errno || v > max) return -1;
    *out = v;
    return 0;
}

/* train_state.json of the checkpoint to resume: DIR's, or DIR.old's when a crash came between the two
 * renames of a save. `used` (PATH_CAP) gets the directory it came from. Another process may be saving into
 * DIR now (a reader of a live run's options): a file renamed away between finding and reading it is looked
 * for again. */
static json_value *state_read(const char *dir_in, char *used) {
    char old[PATH_CAP], p[PATH_CAP];
    for (int attempt = 0;; attempt++) {
        const char *dir = dir_or_old(dir_in, "train_state.json", old);
        if (!dir) {
            ssm_error("%s: no checkpoint to resume (train_state.json missing)", dir_in);
            return NULL;
        }
        snprintf(used, PATH_CAP, "%s", dir);
        path_join(p, dir, "train_state.json");
        json_value *st = json_parse_file(p);
        if (st || file_exists(p) || attempt == 100) return st;
    }
}

int ckpt_load(const char *dir_in, ssm_model **out, adamw_state *opt, train_progress *pr) {
    char dir[PATH_CAP], p[PATH_CAP];
    json_value *st = state_read(dir_in, dir);
    if (!st) return -1;
    path_join(p, dir, "train_state.json");
    long long step = -1;
    const char *rng = NULL;
    double seen = 0;
    unsigned long long data_rng;
    if (json_get_int(st, "step", &step) != 0 || step < 0 || step > INT_MAX || json_get_string(st, "data_rng", &rng) != 0 ||
        parse_count(rng, ULLONG_MAX, &data_rng) || json_get_double(st, "tokens_seen", &seen) < 0) {
        json_free(st);
        return ssm_error("%s: missing or invalid step, data_rng or tokens_seen", p);
    }
    pr->step = step;
    pr->data_rng = data_rng;
    pr->tokens_seen = seen;
    /* absent in checkpoints made before they were kept: no best model yet, data size unknown */
    long long best_step = 0, data_bytes = -1;
    double best = NAN;
    const json_value *bv = json_get(st, "best_val_loss");
    if (bv && bv->type == JSON_NUMBER) best = bv->number;
    json_get_int(st, "best_step", &best_step);
    json_get_int(st, "data_bytes", &data_bytes);
    pr->best_val_loss = best;
    pr->best_step = best_step;
    pr->data_bytes = data_bytes;
    const char *data = "";
    json_get_string(st, "data", &data);
    snprintf(pr->data_path, sizeof pr->data_path, "%s", data ? data : "");
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
    unsigned long long adam_step = 0;
    if (!tm || !tv || !as) rc = ssm_error("%s: missing exp_avg, exp_avg_sq or adam_step", p);
    else if (parse_count(as, INT_MAX, &adam_step)) rc = ssm_error("%s: adam_step \"%s\" is not a step count", p, as);
    else if (st_read_f32(&f, tm, opt->m, m->layout.total) || st_read_f32(&f, tv, opt->v, m->layout.total)) rc = -1;
    /* the moments are on the CPU here (the model was just loaded there) */
    for (size_t i = 0; !rc && i < m->layout.total; i++)
        if (!isfinite(opt->m[i]) || !isfinite(opt->v[i]) || opt->v[i] < 0)
            rc = ssm_error("%s: moment %zu is invalid (exp_avg %g, exp_avg_sq %g)", p, i, opt->m[i], opt->v[i]);
    if (!rc) opt->step = (long)adam_step;
    st_close(&f);
    if (rc) {
        adamw_free(opt);
        ssm_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int ckpt_load_options(const char *dir_in, ssm_train_options *t, char *buf, size_t cap) {
    char dir[PATH_CAP], p[PATH_CAP];
    json_value *st = state_read(dir_in, dir);
    if (!st) return -1;
    path_join(p, dir, "train_state.json");
    int rc = 0;
    /* the strings, one after another in buf: the data path, the task, the validation file */
    static const char *const strings[] = {"data", "task", "val_data"};
    const char **where[] = {&t->data_path, &t->task, &t->val_data_path};
    size_t used = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        const char *s;
        if (json_get_string(st, strings[i], &s) != 0) continue;
        if (strlen(s) >= cap - used) {
            rc = ssm_error("%s: \"%s\" is a string too long", p, strings[i]);
            break;
        }
        memcpy(buf + used, s, strlen(s) + 1);
        *where[i] = buf + used;
        used += strlen(s) + 1;
    }
    /* absent fields keep the caller's values; present ones must have their type and fit their field (the
     * ranges that make sense are ssm_train's to check, with the command line's words) */
    static const struct {
        const char *key;
        size_t offset;
        char kind; /* i: int, l: long, d: double, f: float */
    } fields[] = {
#define F(key, field, kind) {key, offsetof(ssm_train_options, field), kind}
        F("batch", batch, 'i'),          F("seq_len", seq_len, 'i'),      F("grad_accum", grad_accum, 'i'),
        F("val_fraction", val_fraction, 'd'), F("eval_every", eval_every, 'i'), F("eval_bytes", eval_bytes, 'l'),
        F("lr", optim.lr, 'f'),          F("min_lr", optim.min_lr, 'f'),  F("warmup", optim.warmup, 'i'),
        F("steps", optim.steps, 'i'),    F("weight_decay", optim.weight_decay, 'f'),
        F("beta1", optim.beta1, 'f'),    F("beta2", optim.beta2, 'f'),    F("eps", optim.eps, 'f'),
        F("clip", optim.clip, 'f'),      F("val_seqs", val_seqs, 'i'),    F("noise_rate", noise_rate, 'd'),
        F("noise_byte", noise_byte, 'i'),
#undef F
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && !rc; i++) {
        char *dst = (char *)t + fields[i].offset;
        long long v;
        double x;
        int got = fields[i].kind == 'i' || fields[i].kind == 'l' ? json_get_int(st, fields[i].key, &v)
                                                                  : json_get_double(st, fields[i].key, &x);
        if (got < 0) rc = ssm_error("%s: %s", p, ssm_last_error());
        if (got != 0) continue;
        switch (fields[i].kind) {
        case 'i':
            if (v < INT_MIN || v > INT_MAX) rc = ssm_error("%s: \"%s\" = %lld is out of range", p, fields[i].key, v);
            else *(int *)dst = (int)v;
            break;
        case 'l': *(long *)dst = (long)v; break;
        case 'd':
        case 'f':
            if (!isfinite(x) || (fields[i].kind == 'f' && fabs(x) > FLT_MAX))
                rc = ssm_error("%s: \"%s\" = %g is out of range", p, fields[i].key, x);
            else if (fields[i].kind == 'd') *(double *)dst = x;
            else *(float *)dst = (float)x;
            break;
        }
    }
    /* the seed: a decimal string (64 bits), or a number in checkpoints written before */
    const json_value *seed = json_get(st, "seed");
    unsigned long long sv;
    if (!rc && seed && seed->type == JSON_STRING) {
        if (parse_count(seed->string, ULLONG_MAX, &sv)) rc = ssm_error("%s: \"seed\" is not a 64-bit count", p);
        else t->seed = sv;
    } else if (!rc && seed) {
        long long v;
        if (json_get_int(st, "seed", &v)) rc = ssm_error("%s: \"seed\" is not an integer", p);
        else t->seed = (uint64_t)v;
    }
    json_free(st);
    return rc;
}

int ssm_train_options_load(const char *out_dir, ssm_train_options *t, char *buf, size_t cap) {
    char dir[PATH_CAP];
    path_join(dir, out_dir, "checkpoint");
    return ckpt_load_options(dir, t, buf, cap);
}
