/* The data-parallel side of training (see train_dist.h). */
#include "train_dist.h"
#include "common.h"
#include "dist/dist.h"

#include <stdio.h>
#include <string.h>

int train_dist_fail_together(int failed) {
    const int first = dist_first_failure(failed);
    if (first < 0) return 0;
    int rc = -1;
    if (first != dist_rank()) rc = -2, ssm_error("rank %d failed and said why", first);
    dist_stop();
    return rc;
}

void train_dist_share_state(ssm_model *m, adamw_state *opt, train_progress *prog) {
    if (dist_size() == 1) return;
    const size_t n = m->layout.total;
    dist_broadcast(m->w, n * sizeof(float));
    dist_broadcast(opt->m, n * sizeof(float));
    dist_broadcast(opt->v, n * sizeof(float));
    dist_broadcast(&opt->step, sizeof opt->step);
    dist_broadcast(prog, sizeof *prog);
    m->w_version++; /* the weights changed under any cached copy */
}

/* FNV-1a, continued from h */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int train_dist_check_same_run(const ssm_train_options *t, const ssm_model *m, const batch_source *src) {
    if (dist_size() == 1) return 0;
    /* what decides the batches and the steps; the data bytes themselves, since every machine reads its own copy */
    char opts[1024];
    const ssm_optim_config *o = &t->optim;
    snprintf(opts, sizeof opts, "batch %d seq %d accum %d seed %llu steps %d lr %a %a warmup %d wd %a betas %a %a "
             "eps %a clip %a task %s noise %a %d vfrac %a vdata %s", t->batch, t->seq_len, t->grad_accum, (unsigned long long)t->seed,
             o->steps, o->lr, o->min_lr, o->warmup, o->weight_decay, o->beta1, o->beta2, o->eps, o->clip,
             t->task ? t->task : "-", t->noise_rate, t->noise_byte, t->val_fraction,
             t->val_data_path ? "file" : "-");
    uint64_t h[3] = {hash_bytes(0xcbf29ce484222325ull, opts, strlen(opts)),
                     hash_bytes(0xcbf29ce484222325ull, src->data.bytes, src->data.len),
                     0};
    char shape[160]; /* not the config's bytes: its padding is not ours to compare */
    snprintf(shape, sizeof shape, "%s %d %d %zu", m->cfg.layer_pattern, m->cfg.d_model, m->cfg.n_layer,
             m->layout.total);
    h[2] = hash_bytes(0xcbf29ce484222325ull, shape, strlen(shape));
    uint64_t root[3];
    memcpy(root, h, sizeof h);
    dist_broadcast(root, sizeof root);
    if (root[0] != h[0]) return ssm_error("rank %d was given other training options than rank 0 (%s): give every "
                                          "rank the same command line", dist_rank(), opts);
    if (root[1] != h[1]) return ssm_error("rank %d reads other data than rank 0: %s (%zu bytes) differs; give every "
                                          "machine the same file", dist_rank(), t->data_path, src->data.len);
    if (root[2] != h[2]) return ssm_error("rank %d has another model than rank 0 (%s): give every rank the same "
                                          "command line and run directory", dist_rank(), shape);
    return 0;
}

float train_dist_micro_batch(double local_loss, int local, int grad_accum, double *global_loss) {
    if (dist_size() == 1) {
        *global_loss = local_loss;
        return 1.0f / grad_accum;
    }
    double sums[2] = {local_loss * local, (double)local}; /* summed loss, scored positions */
    dist_allreduce_sum_f64(sums, 2);
    *global_loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
    /* the backward divides by its own count: local / global of the 1/grad_accum it would use alone */
    return sums[1] > 0 ? (float)(local / sums[1] / grad_accum) : 0.0f;
}

/* The model's buffers live on a GPU: its collectives go over NCCL (dist_device_*), in the model's device context. */
static int on_device(const ssm_model *m) { return !backend_is_host(m->be); }

void train_dist_reduce_grads(ssm_model *m) {
    if (dist_size() == 1) return;
    if (!on_device(m)) return dist_allreduce_sum(m->dw, m->layout.total);
    model_bind(m);
    dist_device_allreduce_sum(m->dw, m->layout.total); /* queued after the backward, before the clip reads it */
}

void train_dist_shard_optimizer(adamw_state *opt) {
    if (dist_size() == 1) return;
    size_t lo, hi;
    dist_shard(opt->hi - opt->lo, dist_rank(), &lo, &hi);
    const size_t k = hi - lo;
    model_bind(opt->model);
    float *m = opt->be->alloc(k * sizeof(float)), *v = opt->be->alloc(k * sizeof(float));
    opt->be->copy(m, opt->m + lo, k * sizeof(float)); /* host memory, or the GPU's */
    opt->be->copy(v, opt->v + lo, k * sizeof(float));
    opt->be->release(opt->m), opt->be->release(opt->v);
    opt->m = m, opt->v = v, opt->lo = lo, opt->hi = hi;
}

void train_dist_gather_weights(ssm_model *m) {
    if (dist_size() == 1) return;
    if (!on_device(m)) return dist_allgather(m->w, m->layout.total);
    model_bind(m);
    dist_device_allgather(m->wb, m->layout.total); /* and the bf16 shadow rounded again from all of it */
    m->host_stale = 1, m->w_version++;
}

const adamw_state *train_dist_moments(const adamw_state *opt, adamw_state *full) {
    const size_t n = opt->model->layout.total;
    if (opt->lo == 0 && opt->hi == n) return opt;
    *full = *opt;
    full->lo = 0, full->hi = n;
    full->m = dist_rank() == 0 ? xmalloc(n * sizeof(float)) : NULL;
    full->v = dist_rank() == 0 ? xmalloc(n * sizeof(float)) : NULL;
    const float *mine_m = opt->m, *mine_v = opt->v;
    float *host = NULL;
    if (!backend_is_host(opt->be)) { /* a GPU's shard: to host memory first (checkpoints are rare, and small) */
        const size_t k = opt->hi - opt->lo;
        model_bind(opt->model);
        host = xmalloc(2 * k * sizeof(float) + 1);
        opt->be->download(host, opt->m, k * sizeof(float));
        opt->be->download(host + k, opt->v, k * sizeof(float));
        mine_m = host, mine_v = host + k;
        full->be = &backend_cpu; /* the gathered copy is host memory: ckpt_save's adamw_download reads it so */
    }
    dist_gather(full->m, mine_m, n);
    dist_gather(full->v, mine_v, n);
    free(host);
    return dist_rank() == 0 ? full : NULL;
}

void train_dist_moments_free(const adamw_state *moments, adamw_state *full) {
    if (moments != full) return;
    free(full->m), free(full->v);
    full->m = full->v = NULL;
}
