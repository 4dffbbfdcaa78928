/* Training (see train.h): AdamW with torch's arithmetic, warmup + cosine schedule, global-norm
 * clipping, gradient accumulation, validation in bits per byte, metrics and atomic checkpoints. */
#include "train.h"
#include "common.h"
#include "io/json.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void ssm_optim_config_default(ssm_optim_config *o) {
    *o = (ssm_optim_config){.lr = 2e-3f, .min_lr = 2e-4f, .warmup = 100, .steps = 2000, .weight_decay = 0.1f,
                        .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .clip = 1.0f};
}

float lr_at(const ssm_optim_config *o, long s) {
    if (s < o->warmup) return o->lr * (float)(s + 1) / (float)o->warmup;
    long span = o->steps - o->warmup > 1 ? o->steps - o->warmup : 1;
    double progress = (double)(s - o->warmup) / (double)span;
    if (progress > 1) progress = 1;
    return (float)(o->min_lr + 0.5 * (o->lr - o->min_lr) * (1.0 + cos(M_PI * progress)));
}

double grad_clip(ssm_model *m, float clip) {
    const size_t n = m->layout.total;
    double norm = m->be->grad_norm(m->dw, n);
    m->grad_coef = 0.0f;
    if (clip > 0) {
        float coef = (float)(clip / (norm + 1e-6));
        if (coef < 1.0f) m->grad_coef = coef; /* the next adamw_update scales as it reads (one pass less) */
    }
    return norm;
}

void adamw_init(adamw_state *s, const ssm_model *m) {
    const backend *be = m->be;
    const size_t n = m->layout.total;
    s->be = be;
    s->m = be->alloc(n * sizeof(float));
    s->v = be->alloc(n * sizeof(float));
    unsigned char *mask = xmalloc(n);
    for (int t = 0; t < m->layout.n; t++) {
        const param_info *p = &m->layout.items[t];
        memset(mask + p->offset, p->decay ? 1 : 0, p->numel);
    }
    s->decay_mask = be->alloc(n);
    be->upload(s->decay_mask, mask, n);
    free(mask);
    s->step = 0;
}

void adamw_free(adamw_state *s) {
    if (s->be) {
        s->be->release(s->m);
        s->be->release(s->v);
        s->be->release(s->decay_mask);
    }
    memset(s, 0, sizeof *s);
}

void adamw_download(const adamw_state *s, size_t n, float **m, float **v) {
    *m = xmalloc(n * sizeof(float));
    *v = xmalloc(n * sizeof(float));
    s->be->download(*m, s->m, n * sizeof(float));
    s->be->download(*v, s->v, n * sizeof(float));
}

void adamw_follow_model(adamw_state *s, const ssm_model *m) {
    if (s->be == m->be) return;
    const size_t n = m->layout.total;
    float *hm, *hv;
    adamw_download(s, n, &hm, &hv);
    const long step = s->step;
    adamw_free(s);
    adamw_init(s, m);
    s->be->upload(s->m, hm, n * sizeof(float));
    s->be->upload(s->v, hv, n * sizeof(float));
    s->step = step;
    free(hm), free(hv);
}

void adamw_update(ssm_model *m, adamw_state *s, const ssm_optim_config *o, float lr) {
    s->step++;
    const float gscale = m->grad_coef > 0.0f ? m->grad_coef : 1.0f; /* grad_clip's pending scale */
    m->grad_coef = 0.0f;
    m->be->adamw_step(m->wb, m->dw, gscale, s->m, s->v, s->decay_mask, m->layout.total, lr, o->weight_decay,
                      o->beta1, o->beta2, o->eps, s->step);
    if (m->wb != m->w) m->host_stale = 1;
    m->w_version++;
}

void ssm_train_options_default(ssm_train_options *t) {
    memset(t, 0, sizeof *t);
    t->data_path = "data/tinyshakespeare.txt";
    t->out_dir = "runs/shakespeare";
    t->batch = 16;
    t->seq_len = 128;
    t->grad_accum = 1;
    t->val_fraction = 0.1;
    t->eval_every = 200;
    t->eval_bytes = 0;
    t->seed = 1337;
    t->device = "cpu";
    ssm_optim_config_default(&t->optim);
}

double ssm_eval_stream(const ssm_model *m, const int *ids, size_t n, int chunk, int show_progress) {
    if (n < 2) return 0;
    ssm_state *s = ssm_state_new(m, 1);
    double total = 0;
    long count = 0;
    for (size_t pos = 0; pos + 1 < n; pos += chunk) {
        int T = (int)(n - 1 - pos < (size_t)chunk ? n - 1 - pos : (size_t)chunk), c;
        total += model_forward_loss(m, s, ids + pos, ids + pos + 1, T, &c); /* scored where the model runs */
        count += c;
        if (show_progress && (pos / chunk) % 64 == 0) {
            fprintf(stderr, "\reval %5.1f%% | %.4f nats/token so far", 100.0 * pos / n, total / count);
            fflush(stderr);
        }
    }
    if (show_progress) fprintf(stderr, "\r\033[K");
    ssm_state_free(s);
    return total;
}

/* Validation during training: the held-out tail split into `streams` contiguous pieces, each read
 * as a stream with its state carried (so the model is scored with its natural long context), in
 * one batched pass. Returns nats/byte. */
static double eval_validation(const ssm_model *m, const dataset *d, const ssm_train_options *t) {
    size_t len = d->len - d->train_len;
    if (t->eval_bytes > 0 && (size_t)t->eval_bytes < len) len = (size_t)t->eval_bytes;
    const int streams = imax(1, imin(t->batch, (int)(len / (size_t)(t->seq_len + 1))));
    const size_t seg = len / streams; /* each stream predicts seg - 1 bytes */
    const int T = t->seq_len;
    ssm_state *s = ssm_state_new(m, streams);
    int *tok = xmalloc(sizeof(int) * streams * T), *tgt = xmalloc(sizeof(int) * streams * T);
    const uint8_t *base = d->bytes + d->train_len;
    double total = 0;
    long count = 0;
    for (size_t pos = 0; pos + 1 < seg; pos += T) {
        int n = (int)(seg - 1 - pos < (size_t)T ? seg - 1 - pos : (size_t)T), c;
        /* a short last chunk is padded with ignored targets so every stream keeps shape [streams, T] */
        for (int b = 0; b < streams; b++)
            for (int i = 0; i < T; i++) {
                size_t at = (size_t)b * seg + pos + i;
                tok[b * T + i] = i < n ? base[at] : 0;
                tgt[b * T + i] = i < n ? base[at + 1] : -1;
            }
        total += model_forward_loss(m, s, tok, tgt, T, &c);
        count += c;
    }
    free(tok), free(tgt);
    ssm_state_free(s);
    return total / count;
}

static int mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ssm_error("%s: path too long", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return ssm_error("%s: cannot create directory: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0777) && errno != EEXIST) return ssm_error("%s: cannot create directory: %s", buf, strerror(errno));
    return 0;
}

static double now_seconds(void) { return omp_get_wtime(); }

static void format_eta(char *buf, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, n, "%ld:%02ld", s / 60, s % 60);
}

int ssm_train(const ssm_train_options *t, const ssm_config *cfg) {
    if (t->batch < 1 || t->seq_len < 1 || t->grad_accum < 1 || t->optim.steps < 1)
        return ssm_error("batch, seq-len, grad-accum and steps must be positive");
    if (!(t->val_fraction >= 0 && t->val_fraction < 1)) return ssm_error("--val-fraction must be in [0, 1)");
    /* the device and precision are checked before anything is created on disk */
    const char *device = t->device ? t->device : "cpu";
    if (!backend_by_name(device)) return -1;
    if (t->bf16 && !strcmp(device, "cpu"))
        return ssm_error("--bf16 training needs --device cuda (the CPU trains in float32)");
    dataset d;
    if (data_open(&d, t->data_path, t->val_fraction, t->seq_len)) return -1;
    char ckpt_dir[4096], metrics_path[4096];
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/checkpoint", t->out_dir);
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", t->out_dir);
    ssm_model *m = NULL;
    adamw_state opt = {0};
    train_progress prog = {0};
    int rc = -1;
    if (t->resume) {
        if (ckpt_load(ckpt_dir, &m, &opt, &prog)) goto out;
    } else {
        if (mkdir_p(t->out_dir)) goto out;
        if (!(m = ssm_model_new(cfg, t->seed))) goto out;
        adamw_init(&opt, m);
        prog.data_rng = t->seed ^ 0xDA7A5EEDull;
    }
    if (t->bf16) ssm_model_use_bf16(m);
    if (ssm_model_set_device(m, device)) goto out;
    adamw_follow_model(&opt, m);
    FILE *metrics = fopen(metrics_path, t->resume ? "a" : "w");
    if (!metrics) {
        ssm_error("%s: cannot open for writing: %s", metrics_path, strerror(errno));
        goto out;
    }
    const ssm_config *c = &m->cfg;
    if (!t->quiet)
        fprintf(stderr,
                "model: %d x %s, d_model %d, d_state %d: %.2fM parameters, %.1f KiB inference state; on %s (%s)\n"
                "data: %s: %zu bytes (%zu train, %zu validation)%s\n",
                c->n_layer, c->layer_pattern, c->d_model, c->d_state, ssm_model_n_params(m) / 1e6,
                ssm_model_state_bytes(m, -1) / 1024.0, m->be->name,
                strcmp(m->be->precision, "bf16") ? "float32" : "bf16 mixed precision", t->data_path, d.len,
                d.train_len, d.len - d.train_len, t->resume ? "; resuming" : "");
    const int B = t->batch, T = t->seq_len;
    int *tok = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    rng_t data_rng = {prog.data_rng};
    const long first = prog.step;
    const double t0 = now_seconds();
    double val_bpb = NAN, last_print = 0;
    const int tty = isatty(2);
    for (long step = prog.step; step < t->optim.steps; step++) {
        const double ts = now_seconds();
        model_zero_grad(m);
        double loss = 0;
        for (int a = 0; a < t->grad_accum; a++) {
            data_sample_batch(&d, &data_rng, B, T, tok, tgt);
            loss += model_train_forward(m, tok, tgt, B, T);
            model_train_backward(m, 1.0f / t->grad_accum);
        }
        loss /= t->grad_accum;
        if (!isfinite(loss)) {
            ssm_error("training diverged at step %ld (loss %g); lower --lr or raise --warmup", step, loss);
            fclose(metrics);
            goto out_buffers;
        }
        double gnorm = grad_clip(m, t->optim.clip);
        float lr = lr_at(&t->optim, step);
        adamw_update(m, &opt, &t->optim, lr);
        const double now = now_seconds(), elapsed = now - t0;
        const double bps = (double)B * T * t->grad_accum * (step + 1 - first) / elapsed;
        prog.step = step + 1;
        prog.data_rng = data_rng.state;
        prog.tokens_seen += (double)B * T * t->grad_accum;
        fprintf(metrics, "{\"step\": %ld, \"loss\": %.8f, \"bpb\": %.8f, \"lr\": %.6g, \"grad_norm\": %.6g, "
                "\"step_ms\": %.2f, \"bytes_per_s\": %.1f}\n", prog.step, loss, loss / M_LN2, lr, gnorm,
                (now - ts) * 1e3, bps);
        const int last = prog.step == t->optim.steps || (t->stop_after > 0 && prog.step - first == t->stop_after);
        if (prog.step % t->eval_every == 0 || last) {
            double vl = eval_validation(m, &d, t);
            val_bpb = vl / M_LN2;
            fprintf(metrics, "{\"step\": %ld, \"val_loss\": %.6f, \"val_bpb\": %.6f}\n", prog.step, vl, val_bpb);
            fflush(metrics);
            if (ckpt_save(ckpt_dir, m, &opt, &prog, t)) {
                fclose(metrics);
                goto out_buffers;
            }
        }
        if (!t->quiet && (now - last_print > 0.5 || last || !tty)) {
            char eta[32];
            format_eta(eta, sizeof eta, (t->optim.steps - prog.step) * elapsed / (prog.step - first));
            char val[32] = "-";
            if (!isnan(val_bpb)) snprintf(val, sizeof val, "%.3f", val_bpb);
            if (tty || last || prog.step % 50 == 0 || prog.step % t->eval_every == 0)
                fprintf(stderr, "%sstep %ld/%d | loss %.4f (%.3f bpb) | val %s bpb | %.1f KB/s | ETA %s%s",
                        tty ? "\r\033[K" : "", prog.step, t->optim.steps, loss, loss / M_LN2, val, bps / 1e3, eta,
                        tty && !last ? "" : "\n");
            last_print = now;
        }
        if (last) break;
    }
    fclose(metrics);
    if (!t->quiet)
        fprintf(stderr, "done: %ld steps in %.1f s, validation %.4f bits/byte; model in %s\n", prog.step - first,
                now_seconds() - t0, val_bpb, ckpt_dir);
    rc = 0;
out_buffers:
    free(tok);
    free(tgt);
out:
    adamw_free(&opt);
    ssm_model_free(m);
    data_close(&d);
    return rc;
}
