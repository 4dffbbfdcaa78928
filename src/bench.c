/* Throughput measurements (ssm_bench_* in include/ssm.h). Medians of repeated runs; nothing here is a test. */
#include "ssm.h"
#include "backend/profile.h"
#include "common.h"
#include "model.h"
#include "optim.h"

#include <omp.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double ssm_bench_train_step(const ssm_config *cfg, const char *device, int bf16, int B, int T, int steps,
                        size_t *mem_in_use, int profile) {
    ssm_model *m = ssm_model_new(cfg, 1);
    if (!m) return -1;
    if (bf16 && strcmp(device, "cpu")) ssm_model_use_bf16(m);
    if (ssm_model_set_device(m, device)) {
        ssm_model_free(m);
        return -1;
    }
    adamw_state opt;
    adamw_init(&opt, m);
    ssm_optim_config oc;
    ssm_optim_config_default(&oc);
    int *tok = xmalloc(sizeof(int) * B * T), *tgt = xmalloc(sizeof(int) * B * T);
    rng_t rng = {5};
    for (int i = 0; i < B * T; i++) tok[i] = (int)(rng_next(&rng) % cfg->vocab_size), tgt[i] = (int)(rng_next(&rng) % cfg->vocab_size);
    double *times = xmalloc(sizeof(double) * steps);
    for (int s = -2; s < steps; s++) {
        double t0 = omp_get_wtime();
        model_zero_grad(m);
        model_train_forward(m, tok, tgt, B, T);
        model_train_backward(m, 1.0f);
        grad_clip(m, oc.clip);
        adamw_update(m, &opt, &oc, 1e-4f);
        m->be->sync();
        if (s >= 0) times[s] = omp_get_wtime() - t0;
    }
    double med = median(times, steps);
    *mem_in_use = m->be->mem_in_use();
    if (profile) {
        const backend *plain = m->be;
        m->be = profile_wrap(plain);
        for (int s = 0; s < steps; s++) {
            model_zero_grad(m);
            model_train_forward(m, tok, tgt, B, T);
            model_train_backward(m, 1.0f);
            grad_clip(m, oc.clip);
            adamw_update(m, &opt, &oc, 1e-4f);
        }
        m->be = plain; /* the totals stay for profile_print */
    }
    free(times), free(tok), free(tgt);
    adamw_free(&opt);
    ssm_model_free(m);
    return med;
}

double ssm_bench_decode_step(const ssm_model *m, int n_seq, int steps) {
    return ssm_bench_decode_at(m, n_seq, 0, steps, 0);
}

double ssm_bench_decode_at(const ssm_model *m, int n_seq, long context, int steps, int no_prefill) {
    const int V = ssm_model_config(m)->vocab_size;
    ssm_state *s = ssm_state_new_ctx(m, n_seq, model_state_grows(m) ? context + steps + 3 : 0); /* attention */
    if (!s) return -1;
    int *tok = xmalloc(sizeof(int) * n_seq);
    float *logits = xmalloc(sizeof(float) * n_seq * V);
    double *times = xmalloc(sizeof(double) * steps);
    enum { CHUNK = 1024 }; /* the prefill in pieces: its activations stay small whatever the context */
    int *prompt = xmalloc(sizeof(int) * n_seq * CHUNK);
    int rc = 0;
    if (no_prefill) { /* the state at the context's position, its cache zeros (model_state_seek) */
        ssm_state_reset(s);
        rc = model_state_seek(m, s, context);
    }
    for (long done = 0; !no_prefill && !rc && done < context;) {
        const int T = context - done < CHUNK ? (int)(context - done) : CHUNK;
        for (int i = 0; i < n_seq * T; i++) prompt[i] = 'a' + (int)((done + i) % 26);
        rc = ssm_forward(m, s, prompt, T, logits, 1); /* (the state was sized for it: not expected to fail) */
        done += T;
    }
    free(prompt);
    if (rc) {
        free(tok), free(logits), free(times);
        ssm_state_free(s);
        return -1;
    }
    for (int i = 0; i < n_seq; i++) tok[i] = 'a' + i % 26;
    for (int st = -3; st < steps; st++) {
        double t0 = omp_get_wtime();
        ssm_step(m, s, tok, logits); /* waits for the logits */
        if (st >= 0) times[st] = omp_get_wtime() - t0;
        for (int i = 0; i < n_seq; i++) tok[i] = (tok[i] + 1) % V;
    }
    double med = median(times, steps);
    free(times), free(tok), free(logits);
    ssm_state_free(s);
    return med;
}

size_t ssm_bench_device_peak(const ssm_model *m) {
    model_bind(m);
    return m->be->mem_in_use();
}

double ssm_bench_prefill(const ssm_model *m, int n_seq, long len, int chunk) {
    const int V = ssm_model_config(m)->vocab_size;
    const long T = chunk > 0 && chunk < len ? chunk : len;
    if (T * n_seq > (1L << 30)) return ssm_error("prefill: %d x %ld positions in one call is too many", n_seq, T);
    ssm_state *s = ssm_state_new_ctx(m, n_seq, model_state_grows(m) ? len + 1 : 0);
    if (!s) return -1;
    int *prompt = xmalloc(sizeof(int) * n_seq * T);
    float *logits = xmalloc(sizeof(float) * n_seq * V);
    double times[3];
    int rc = 0;
    for (int r = -1; r < 3 && !rc; r++) { /* r = -1: the warmup (one-time set-up: workspaces, plans) */
        ssm_state_reset(s);
        const double t0 = omp_get_wtime();
        for (long done = 0; done < len && !rc; done += T) {
            const int t = (int)(len - done < T ? len - done : T);
            for (int b = 0; b < n_seq; b++)
                for (int i = 0; i < t; i++) prompt[(size_t)b * t + i] = 'a' + (int)((done + i + 7 * b) % 26);
            rc = ssm_forward(m, s, prompt, t, logits, 1); /* waits for the last logits */
        }
        if (r >= 0) times[r] = omp_get_wtime() - t0;
    }
    free(prompt), free(logits);
    ssm_state_free(s);
    return rc ? -1 : median(times, 3);
}

typedef float v16 __attribute__((vector_size(64), aligned(64)));

void ssm_bench_memory_bandwidth(double *copy, double *read) {
    const size_t n = (size_t)64 << 20; /* floats: 256 MiB per buffer, far beyond any cache */
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = 1.0f, b[i] = 0.0f;
    double best_copy = 1e30, best_read = 1e30, sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t lo = n * id / nt, hi = n * (id + 1) / nt;
            memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
        }
        double t1 = omp_get_wtime();
        double total = 0;
#pragma omp parallel reduction(+ : total)
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t lo = n / 64 * id / nt * 64, hi = n / 64 * (id + 1) / nt * 64; /* whole 64-float groups */
            v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            for (size_t i = lo; i < hi; i += 64) {
                s0 += *(const v16 *)(a + i), s1 += *(const v16 *)(a + i + 16);
                s2 += *(const v16 *)(a + i + 32), s3 += *(const v16 *)(a + i + 48);
            }
            v16 s = s0 + s1 + s2 + s3;
            for (int k = 0; k < 16; k++) total += s[k];
        }
        double t2 = omp_get_wtime();
        sink += total + b[n - 1];
        if (t1 - t0 < best_copy) best_copy = t1 - t0;
        if (t2 - t1 < best_read) best_read = t2 - t1;
    }
    CHECK(sink > 0, "bandwidth probe lost its data");
    free(a), free(b);
    *copy = n * sizeof(float) / best_copy;
    *read = n * sizeof(float) / best_read;
}

double ssm_bench_decode_weight_bytes(const ssm_model *m) {
    double bytes = 0;
    /* the matrices' form: the CPU's decode copy, or on a device the fused step's copy (decode_fused.c) */
    const decode_weights *q = model_decode_weights(m);
    mat_dtype dt = q ? q->dt : MAT_F32;
    if (!q && !backend_is_host(m->be) && decode_fused_ready(m, 1)) dt = m->int8 ? MAT_I8 : m->bf16 ? MAT_BF16 : MAT_F32;
    for (int i = 0; i < m->layout.n; i++) {
        const param_info *p = &m->layout.items[i];
        int matrix = p->ndim == 2 && !strstr(p->name, "A_log"); /* read through mixer_linear */
        const double per = matrix ? mat_elem_bytes(dt) + (dt == MAT_I8 ? 4.0 / p->shape[1] : 0) : 4.0;
        if (i == m->emb && m->head != m->emb) bytes += p->shape[1] * 4.0; /* one row */
        else bytes += p->numel * per;
    }
    return bytes;
}

void ssm_bench_profile_print(int steps) { profile_print(steps); }
