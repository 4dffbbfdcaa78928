/* Training (ssm_train in include/ssm.h): the loop with gradient accumulation, validation (bits per byte, or a task's
 * loss and accuracy), metrics, atomic checkpoints and the run directory; the optimizer is src/optim.c, the batches
 * src/io/source.c, the scoring src/eval.c. */
#include "common.h"
#include "eval.h"
#include "io/checkpoint.h"
#include "io/metrics_log.h"
#include "io/run_dir.h"
#include "io/source.h"
#include "model.h"
#include "optim.h"
#include "train_dist.h"
#include "dist/dist.h"

#include <math.h>
#include <omp.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    t->val_seqs = 256;
    ssm_optim_config_default(&t->optim);
}

static double now_seconds(void) { return omp_get_wtime(); }

static void format_eta(char *buf, size_t n, double seconds) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, n, "%ld:%02ld", s / 60, s % 60);
}

/* ---- the loop ------------------------------------------------------------------------------------------ */

static volatile sig_atomic_t stop_signal; /* set by ssm_train_interrupt, read at step boundaries */

void ssm_train_interrupt(int sig) { stop_signal = sig > 0 ? sig : SIGINT; }

int ssm_train_interrupted(void) { return stop_signal; }

/* Every option in range, named as the command line names it (the library's callers get the same words). */
static int train_options_check(const ssm_train_options *t) {
    const ssm_optim_config *o = &t->optim;
#define NEED(cond, ...) \
    if (!(cond)) return ssm_error(__VA_ARGS__)
    NEED(t->batch >= 1 && t->seq_len >= 1 && t->grad_accum >= 1 && o->steps >= 1,
         "--batch, --seq-len, --grad-accum and --steps must be at least 1");
    NEED((long long)t->batch * t->seq_len <= (1LL << 30), "--batch x --seq-len = %lld bytes per micro-batch is too "
         "many (at most 2^30); use --grad-accum for larger batches", (long long)t->batch * t->seq_len);
    NEED(o->lr > 0 && isfinite(o->lr), "--lr must be positive (got %g)", o->lr);
    NEED(o->min_lr >= 0 && o->min_lr <= o->lr, "--min-lr must be in [0, --lr = %g] (got %g)", o->lr, o->min_lr);
    NEED(o->warmup >= 0, "--warmup must be 0 or more steps (got %d)", o->warmup);
    NEED(o->weight_decay >= 0 && isfinite(o->weight_decay), "--weight-decay must be 0 or more (got %g)",
         o->weight_decay);
    NEED(o->clip >= 0 && isfinite(o->clip), "--clip must be 0 (off) or positive (got %g)", o->clip);
    NEED(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1 && o->eps > 0,
         "AdamW needs 0 <= beta1, beta2 < 1 and eps > 0");
    NEED(t->eval_every >= 1, "--eval-every must be at least 1 step (got %d)", t->eval_every);
    NEED(t->eval_bytes >= 0, "--eval-bytes must be 0 (all) or positive (got %ld)", t->eval_bytes);
    NEED(t->val_fraction >= 0 && t->val_fraction < 1, "--val-fraction must be in [0, 1) (got %g)", t->val_fraction);
    NEED(t->stop_after >= 0, "--stop-after must be 0 (off) or positive (got %d)", t->stop_after);
    NEED(t->val_seqs >= 1, "--val-seqs must be at least 1 (got %d)", t->val_seqs);
#undef NEED
    return 0;
}

/* Parameters, gradients and the two AdamW moments, all float32: the least a training run holds in host
 * memory on the CPU. Refused before allocating when the machine cannot hold it. */
static int train_memory_check(const ssm_config *cfg, const char *device) {
    if (strcmp(device, "cpu")) return 0; /* the GPU backend reports its own out-of-memory, in one line */
    ssm_model *shape = model_layout_new(cfg);
    if (!shape) return -1;
    const double need = 4.0 * sizeof(float) * shape->layout.total;
    ssm_model_free(shape);
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const double have = pages > 0 && page > 0 ? (double)pages * page : 0;
    if (have > 0 && need > have)
        return ssm_error("this model needs %.1f GB for its parameters, gradients and AdamW moments, more than the "
                         "%.1f GB of this machine: use a smaller --d-model or --n-layer", need / 1e9, have / 1e9);
    return 0;
}

/* A collapse to a uniform output: every logit equal (loss ln V) and no gradient left to move away from it.
 * Nothing is NaN, so only this test sees it; training cannot recover from it. */
static int collapsed(double loss, double gnorm, int vocab) {
    return gnorm == 0 || (fabs(loss - log((double)vocab)) < 1e-4 && gnorm < 1e-4);
}

/* The run directory for this invocation: locked, and either resumed (cfg NULL or the checkpoint's shape) or
 * new (refusing to replace an earlier run unless t->overwrite). Opens the model, optimizer and metrics. */
typedef struct {
    run_lock lock;
    char ckpt_dir[PATH_CAP], best_dir[PATH_CAP], metrics_path[PATH_CAP];
    ssm_model *m;
    adamw_state opt;
    train_progress prog;
    metrics_log metrics;
    int new_metrics; /* this invocation created metrics.jsonl */
    char device[32]; /* the device this rank trains on (dist_device_pick: cuda:<rank on its machine>) */
} train_run;

/* The same tensors: the shared shape, the pattern and each kind's sub-config (norm_eps is not a shape). */
static int same_shape(const ssm_config *a, const ssm_config *b) {
    ssm_config x = *a, y = *b;
    if (ssm_config_resolve(&x) || ssm_config_resolve(&y)) return 0;
    return x.vocab_size == y.vocab_size && x.d_model == y.d_model && x.n_layer == y.n_layer &&
           x.tie_embeddings == y.tie_embeddings && !strcmp(x.layer_pattern, y.layer_pattern) &&
           !memcmp(&x.mamba1, &y.mamba1, sizeof x.mamba1);
}

static int run_open(train_run *r, const ssm_train_options *t, const ssm_config *cfg, const batch_source *src) {
    const dataset *d = &src->data;
    path_join(r->ckpt_dir, t->out_dir, "checkpoint");
    path_join(r->best_dir, t->out_dir, "best");
    path_join(r->metrics_path, t->out_dir, "metrics.jsonl");
    r->metrics.fd = -1;
    r->prog.best_val_loss = NAN;
    const int lead = dist_rank() == 0; /* rank 0 alone writes the run directory; the others read a checkpoint */
    if (lead && run_lock_take(&r->lock, t->out_dir)) return -1;
    if (t->resume) {
        if (ckpt_load(r->ckpt_dir, &r->m, &r->opt, &r->prog)) return -1;
        if (r->prog.step >= t->optim.steps)
            return ssm_error("%s is at step %ld and --steps is %d: raise --steps to train further",
                             r->ckpt_dir, r->prog.step, t->optim.steps);
        if (cfg && !same_shape(cfg, &r->m->cfg)) {
            const ssm_config *c = &r->m->cfg;
            return ssm_error("%s holds a model of d_model %d, %d layers \"%s\", d_state %d: a resumed run keeps its "
                             "model's shape; drop the shape options, or start a new run with another --out",
                             r->ckpt_dir, c->d_model, c->n_layer, c->layer_pattern, c->mamba1.d_state);
        }
        if (!lead) return 0;
        /* notes, not progress: printed even when quiet (a task has no file to compare) */
        if (!src->task.kind && r->prog.data_path[0] && strcmp(r->prog.data_path, t->data_path))
            fprintf(stderr, "note: resuming on %s, not the checkpoint's %s: from here the data differ from an "
                            "uninterrupted run\n", t->data_path, r->prog.data_path);
        else if (!src->task.kind && r->prog.data_bytes >= 0 && (size_t)r->prog.data_bytes != d->len)
            fprintf(stderr, "note: %s is %zu bytes, %lld when the checkpoint was saved: from here the data differ "
                            "from an uninterrupted run\n", t->data_path, d->len, r->prog.data_bytes);
        int dropped = 0;
        if (metrics_resume(&r->metrics, r->metrics_path, r->prog.step, &dropped)) return -1;
        if (dropped)
            fprintf(stderr, "note: %s: dropped %d line%s written after the checkpoint (step %ld) or torn by the "
                            "interruption\n", r->metrics_path, dropped, dropped == 1 ? "" : "s", r->prog.step);
        return 0;
    }
    if (lead && run_dir_has_run(t->out_dir)) {
        if (!t->overwrite)
            return ssm_error("%s already holds a training run: continue it with --resume, start a new one with "
                             "another --out, or replace it with --overwrite", t->out_dir);
        if (run_dir_clear(t->out_dir)) return -1;
    }
    if (train_memory_check(cfg, t->device ? t->device : "cpu")) return -1;
    if (!(r->m = ssm_model_new(cfg, t->seed))) return -1;
    adamw_init(&r->opt, r->m);
    r->prog.data_rng = t->seed ^ 0xDA7A5EEDull;
    if (!lead) return 0;
    if (metrics_create(&r->metrics, r->metrics_path)) return -1;
    r->new_metrics = 1;
    return 0;
}

/* A new run that failed or was stopped before its first step leaves nothing behind: no empty metrics.jsonl,
 * and no run directory if it made it. */
static void run_close(train_run *r) {
    struct stat st;
    metrics_close(&r->metrics);
    if (r->new_metrics && stat(r->metrics_path, &st) == 0 && st.st_size == 0) unlink(r->metrics_path);
    adamw_free(&r->opt);
    ssm_model_free(r->m);
    run_lock_release(&r->lock);
}

/* The last validation: a file's loss in bits per (real) byte, or a task's loss and accuracy (NaN: none yet). */
typedef struct {
    double loss, bpb, acc;
} validation;

/* A task: val_seqs sequences of the fixed validation stream; a file: its held-out stream (filler inserted). */
static int validate(const ssm_model *m, const batch_source *src, const ssm_train_options *t, validation *v,
                    char *line, size_t cap, long step) {
    char n1[32], n2[32];
    if (src->task.kind) {
        rng_t rng = {SSM_VALIDATION_SEED};
        double sum;
        long count, hits;
        if (eval_task(m, &src->task, &rng, t->val_seqs, t->batch, t->seq_len, 0, &sum, &count, &hits)) return -1;
        v->loss = sum / count, v->acc = (double)hits / count;
        snprintf(line, cap, "{\"step\": %ld, \"val_loss\": %s, \"val_acc\": %s}", step,
                 metrics_number(n1, sizeof n1, "%.6f", v->loss), metrics_number(n2, sizeof n2, "%.6f", v->acc));
        return 0;
    }
    v->loss = eval_split_streams(m, src->val_tokens, src->val_targets, src->val_len, t->batch, t->seq_len);
    v->bpb = v->loss / M_LN2;
    snprintf(line, cap, "{\"step\": %ld, \"val_loss\": %s, \"val_bpb\": %s}", step,
             metrics_number(n1, sizeof n1, "%.6f", v->loss), metrics_number(n2, sizeof n2, "%.6f", v->bpb));
    return 0;
}

/* The progress line's training loss and last validation: bits per byte, per real byte (filler), or a task's loss
 * and accuracy ("-" before the first validation). */
static void progress_losses(char *lossv, size_t lcap, char *valv, size_t vcap, const batch_source *src, double loss,
                            const validation *v) {
    const char *unit = src->noise_rate > 0 ? "bits/real byte" : "bpb";
    if (src->task.kind) snprintf(lossv, lcap, "%.4f", loss);
    else snprintf(lossv, lcap, "%.4f (%.3f %s)", loss, loss / M_LN2, unit);
    if (src->task.kind && isnan(v->loss)) snprintf(valv, vcap, "-");
    else if (src->task.kind) snprintf(valv, vcap, "loss %.4f acc %.3f", v->loss, v->acc);
    else if (isnan(v->loss)) snprintf(valv, vcap, "- %s", unit);
    else snprintf(valv, vcap, "%.3f %s", v->bpb, unit);
}

/* Validates, saves the checkpoint (the model and opt's moments, all of them) and, when the validation loss is the
 * best so far, best/. */
static int run_checkpoint(train_run *r, const adamw_state *opt, const ssm_train_options *t, const batch_source *src,
                          validation *v) {
    char line[256];
    if (src->task.kind || src->val_len > 0) { /* --val-fraction 0: nothing held out, nothing to validate */
        if (validate(r->m, src, t, v, line, sizeof line, r->prog.step)) return -1;
        const double vl = v->loss;
        if (metrics_write(&r->metrics, line)) return -1;
        if (isfinite(vl) && !(vl >= r->prog.best_val_loss)) { /* NaN best: the first validation */
            r->prog.best_val_loss = vl, r->prog.best_step = r->prog.step;
            if (ckpt_save(r->ckpt_dir, r->m, opt, &r->prog, t)) return -1;
            return ckpt_save_best(r->ckpt_dir, r->best_dir, r->prog.step, vl, v->acc);
        }
    }
    return ckpt_save(r->ckpt_dir, r->m, opt, &r->prog, t);
}

/* Everything a run needs before its first step, on this rank: options checked, data or task open, the run directory
 * (rank 0's alone: its lock, metrics and checkpoints) and the model and optimizer, new or resumed. 0 or -1. */
static int train_prepare(ssm_train_options *opts, const ssm_config *cfg, batch_source *src, train_run *r) {
    const ssm_train_options *t = opts;
    if (opts->task && ssm_task_check(opts->task, &opts->seq_len)) return -1;
    if (opts->batch_is_global && opts->batch >= 1) { /* a checkpoint's batch is the job's, over all ranks */
        if (opts->batch % dist_size())
            return ssm_error("the run's batch of %d sequences does not divide among %d ranks: give --batch (per rank)",
                             opts->batch, dist_size());
        opts->batch /= dist_size();
    }
    if (opts->val_data_path && !opts->val_data_path[0]) opts->val_data_path = NULL; /* "" (a checkpoint's): none */
    if (train_options_check(t)) return -1;
    if ((long long)t->batch * dist_size() * t->seq_len > (1LL << 30))
        return ssm_error("--batch x ranks x --seq-len is more than 2^30 bytes per micro-batch: use a smaller --batch");
    if (!t->resume && !cfg) return ssm_error("a new run needs a model config");
    /* the device and precision are checked before anything is created on disk */
    const char *device = t->device ? t->device : "cpu";
    if (!backend_by_name(device, NULL)) return -1;
    if (t->bf16 && !strcmp(device, "cpu"))
        return ssm_error("--bf16 training needs --device cuda (the CPU trains in float32)");
    /* several ranks on GPUs: "cuda" becomes this rank's GPU of its machine (refused without NCCL in the build) */
    if (dist_device_pick(device, r->device, sizeof r->device)) return -1;
    opts->device = r->device;
    if (source_open(src, t)) return -1;
    if (src->task.kind) opts->task = src->task_name, opts->data_path = "";
    if (run_open(r, t, cfg, src)) return -1;
    r->prog.data_bytes = src->task.kind ? -1 : (long long)src->data.len;
    return 0;
}

int ssm_train(const ssm_train_options *options, const ssm_config *cfg) {
    ssm_train_options opts = *options; /* with a task, its sequence length and canonical SPEC */
    const ssm_train_options *t = &opts;
    const int rank = dist_rank(), ranks = dist_size(), lead = rank == 0;
    if (!lead) opts.quiet = 1; /* rank 0 speaks for the job */
    batch_source src;
    memset(&src, 0, sizeof src);
    train_run r = {.lock = {.fd = -1}, .metrics = {.fd = -1}};
    int *tok = NULL, *tgt = NULL;
    /* every failure before the first step is agreed on by all ranks: one message, no rank left waiting */
    int rc = train_dist_fail_together(train_prepare(&opts, cfg, &src, &r) != 0);
    if (!rc) rc = train_dist_fail_together(train_dist_check_same_run(t, r.m, &src) != 0);
    if (rc) goto out;
    train_dist_share_state(r.m, &r.opt, &r.prog);
    ssm_model *m = r.m;
    const char *device = t->device ? t->device : "cpu";
    if (t->bf16) ssm_model_use_bf16(m);
    const int B = t->batch, T = t->seq_len, BN = B * ranks; /* this rank's rows; the job's */
    int failed = ssm_model_set_device(m, device) != 0;
    if (!failed) adamw_follow_model(&r.opt, m);
    if (!failed && src.task.vocab > m->cfg.vocab_size)
        failed = ssm_error("the task's ids reach %d, past the model's vocabulary of %d", src.task.vocab - 1,
                           m->cfg.vocab_size);
    /* the job's whole micro-batch, drawn on every rank as one process would draw it; this rank trains on its rows */
    if (!failed && (!(tok = calloc((size_t)BN * T, sizeof(int))) || !(tgt = calloc((size_t)BN * T, sizeof(int)))))
        failed = ssm_error("cannot allocate a batch of %d x %d bytes: use a smaller --batch or --seq-len (and "
                           "--grad-accum for a larger batch)", BN, T);
    if ((rc = train_dist_fail_together(failed))) goto out;
    if (!backend_is_host(m->be)) { /* several GPUs: their NCCL communicator (collective; nothing with one rank) */
        model_bind(m);
        if ((rc = train_dist_fail_together(dist_device_start(m->device) != 0))) goto out;
    }
    rc = -1;
    train_dist_shard_optimizer(&r.opt);
    adamw_state full; /* all the moments, gathered from the ranks' shards when a checkpoint needs them */
    const dataset *d = &src.data;
    const ssm_config *c = &m->cfg;
    if (!t->quiet) {
        fprintf(stderr, "model: %d x %s, d_model %d, d_state %d: %.2fM parameters, %.1f KiB inference state; on %s "
                "(%s)\n", c->n_layer, c->layer_pattern, c->d_model, c->mamba1.d_state, ssm_model_n_params(m) / 1e6,
                ssm_model_state_bytes(m, -1) / 1024.0, m->be->name,
                strcmp(m->be->precision, "bf16") ? "float32" : "bf16 mixed precision");
        if (ranks > 1)
            fprintf(stderr, "data parallel: %d ranks over %s, %d sequences each: a batch of %d\n", ranks, dist_name(),
                    B, BN);
        if (src.task.kind)
            fprintf(stderr, "task: %s: %d answers per sequence, the loss on them alone; validation: %d sequences of a "
                    "fixed stream%s\n", src.task_name, task_answers(&src.task), t->val_seqs,
                    t->resume ? "; resuming" : "");
        else if (t->val_data_path)
            fprintf(stderr, "data: %s: %zu bytes to train on; validation: %s: %zu bytes%s\n", t->data_path,
                    d->train_len, t->val_data_path, d->len - d->train_len, t->resume ? "; resuming" : "");
        else
            fprintf(stderr, "data: %s: %zu bytes (%zu train, %zu validation)%s\n", t->data_path, d->len, d->train_len,
                    d->len - d->train_len, t->resume ? "; resuming" : "");
        if (src.noise_rate > 0)
            fprintf(stderr, "noise: filler byte %d at a fraction %g of the stream; loss and bits per byte count real "
                    "bytes alone (bits per real byte)\n", src.noise_byte, src.noise_rate);
    }
    ssm_train_options job = opts; /* the options as one process would have them: the batch of all ranks, which */
    job.batch = BN;                /* the checkpoint records and validation reads in */
    const int *my_tok = tok + (size_t)rank * B * T, *my_tgt = tgt + (size_t)rank * B * T;
    rng_t data_rng = {r.prog.data_rng};
    const long first = r.prog.step;
    long saved = r.prog.step; /* the step of the checkpoint on disk */
    const double t0 = now_seconds();
    validation val = {NAN, NAN, NAN};
    double last_print = 0;
    const int tty = isatty(2);
    int warned_collapse = 0;
    int stop = 0; /* the job's decision to stop, which every rank takes at the same step boundary */
    for (long step = r.prog.step; step < t->optim.steps; step++) {
        /* a signal reaches the ranks at different moments: all stop at the first step boundary any of them saw. The
         * decision is the agreed value alone: the handler may set stop_signal on one rank after it has contributed
         * 0 to the agreement, and that rank acting on it then would leave the others in the next step's collectives
         * (a hang) */
        stop = stop_signal;
        if (ranks > 1) stop = dist_max(stop);
        if (stop) {
            stop_signal = stop; /* (every rank reports the interruption) */
            break;
        }
        const double ts = now_seconds();
        model_zero_grad(m);
        double loss = 0;
        /* one rank alone may drop a long accumulation part-way; ranks finish the step they all began */
        for (int a = 0; a < t->grad_accum && (ranks > 1 || !stop_signal); a++) {
            source_sample_batch(&src, &data_rng, BN, T, tok, tgt);
            const double mine = model_train_forward(m, my_tok, my_tgt, B, T);
            double micro;
            const float scale = train_dist_micro_batch(mine, m->acts.n_targets, t->grad_accum, &micro);
            loss += micro;
            model_train_backward(m, scale);
        }
        if (stop_signal && ranks == 1) { /* mid-step: drop the partial step, keep the last whole one */
            stop = stop_signal;
            break;
        }
        loss /= t->grad_accum;
        train_dist_reduce_grads(m);
        const double gnorm = grad_clip(m, t->optim.clip);
        const float lr = lr_at(&t->optim, step);
        const double now = now_seconds(), elapsed = now - t0;
        const double bps = (double)BN * T * t->grad_accum * (step + 1 - first) / elapsed;
        char line[320], n1[32], n2[32], n3[32];
        snprintf(line, sizeof line, "{\"step\": %ld, \"loss\": %s, \"bpb\": %s, \"lr\": %.6g, \"grad_norm\": %s, "
                 "\"step_ms\": %.2f, \"bytes_per_s\": %.1f}", step + 1, metrics_number(n1, sizeof n1, "%.8f", loss),
                 metrics_number(n2, sizeof n2, "%.8f", loss / M_LN2), lr, metrics_number(n3, sizeof n3, "%.6g", gnorm),
                 (now - ts) * 1e3, bps);
        if (!isfinite(loss) || !isfinite(gnorm)) { /* logged, but never applied: the checkpoint stays good */
            if (lead) metrics_write(&r.metrics, line);
            char kept[96] = "no checkpoint was saved yet";
            if (saved > 0) snprintf(kept, sizeof kept, "the checkpoint of step %ld is intact", saved);
            ssm_error("training diverged at step %ld (loss %g, gradient norm %g): %s; lower --lr or raise --warmup",
                      step + 1, loss, gnorm, kept);
            rc = train_dist_fail_together(lead); /* the loss and norm are the job's: every rank sees it */
            goto out;
        }
        adamw_update(m, &r.opt, &t->optim, lr);
        train_dist_gather_weights(m);
        r.prog.step = step + 1;
        r.prog.data_rng = data_rng.state;
        r.prog.tokens_seen += (double)BN * T * t->grad_accum;
        if (lead && metrics_write(&r.metrics, line)) goto out;
        if (!warned_collapse && collapsed(loss, gnorm, c->vocab_size)) {
            warned_collapse = 1;
            if (lead)
                fprintf(stderr, "%swarning: step %ld: the model's output collapsed to uniform (loss %.4f = ln %d, "
                        "gradient norm %g) and is unlikely to recover: lower --lr and start again%s%s\n",
                        tty ? "\r\033[K" : "", r.prog.step, loss, c->vocab_size, gnorm, isfinite(r.prog.best_val_loss)
                        ? "; the best model so far is in " : "", isfinite(r.prog.best_val_loss) ? r.best_dir : "");
        }
        const int last = r.prog.step == t->optim.steps || (t->stop_after > 0 && r.prog.step - first == t->stop_after);
        if (r.prog.step % t->eval_every == 0 || last) {
            const adamw_state *moments = train_dist_moments(&r.opt, &full);
            const int bad = lead && run_checkpoint(&r, moments, &job, &src, &val);
            train_dist_moments_free(moments, &full);
            if (bad) goto out;
            saved = r.prog.step;
        }
        if (!t->quiet && (now - last_print > 0.5 || last || !tty)) {
            char eta[32];
            format_eta(eta, sizeof eta, (t->optim.steps - r.prog.step) * elapsed / (r.prog.step - first));
            char lossv[64], valv[64];
            progress_losses(lossv, sizeof lossv, valv, sizeof valv, &src, loss, &val);
            if (tty || last || r.prog.step % 50 == 0 || r.prog.step % t->eval_every == 0)
                fprintf(stderr, "%sstep %ld/%d | loss %s | val %s | %.1f KB/s | ETA %s%s", tty ? "\r\033[K" : "",
                        r.prog.step, t->optim.steps, lossv, valv, bps / 1e3, eta, tty && !last ? "" : "\n");
            last_print = now;
        }
        if (last) break;
    }
    if (stop) { /* at a step boundary: save what was trained since the last checkpoint, then stop */
        if (tty && !t->quiet) fprintf(stderr, "\r\033[K");
        rc = 1;
        if (r.prog.step == 0) { /* before the first step: nothing to keep, as if the run had not started */
            if (lead) fprintf(stderr, "interrupted before the first step: nothing saved\n");
            goto out;
        }
        if (r.prog.step > saved) { /* every rank knows: all stopped at this step */
            const adamw_state *moments = train_dist_moments(&r.opt, &full);
            const int bad = lead && ckpt_save(r.ckpt_dir, m, moments, &r.prog, &job);
            train_dist_moments_free(moments, &full);
            if (bad) {
                rc = -1;
                goto out;
            }
        }
        if (lead)
            fprintf(stderr, "interrupted at step %ld: checkpoint saved in %s; continue with --resume\n", r.prog.step,
                    r.ckpt_dir);
        goto out;
    }
    if (!t->quiet) {
        char valv[96];
        if (src.task.kind) snprintf(valv, sizeof valv, "loss %.4f, accuracy %.4f", val.loss, val.acc);
        else snprintf(valv, sizeof valv, "%.4f bits/%sbyte", val.bpb, src.noise_rate > 0 ? "real " : "");
        fprintf(stderr, "done: %ld steps in %.1f s, validation %s; model in %s%s%s\n", r.prog.step - first,
                now_seconds() - t0, valv, r.ckpt_dir, isfinite(r.prog.best_val_loss) ? ", best in " : "",
                isfinite(r.prog.best_val_loss) ? r.best_dir : "");
    }
    rc = 0;
out:
    free(tok);
    free(tgt);
    run_close(&r);
    source_close(&src);
    return rc;
}
