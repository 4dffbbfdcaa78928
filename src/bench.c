/* Throughput measurements (see bench.h). Medians of repeated runs; nothing here is a test. */
#include "bench.h"
#include "common.h"
#include "model.h"
#include "train.h"

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

double bench_train_step(const ssm_config *cfg, int B, int T, int steps) {
    ssm_model *m = ssm_model_new(cfg, 1);
    if (!m) return -1;
    adamw_state opt;
    adamw_init(&opt, m);
    optim_config oc;
    optim_config_default(&oc);
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
        adamw_step(m, &opt, &oc, 1e-4f);
        if (s >= 0) times[s] = omp_get_wtime() - t0;
    }
    double med = median(times, steps);
    free(times), free(tok), free(tgt);
    adamw_free(&opt);
    ssm_model_free(m);
    return med;
}

double bench_decode_step(const ssm_model *m, int n_seq, int steps) {
    const int V = ssm_model_config(m)->vocab_size;
    ssm_state *s = ssm_state_new(m, n_seq);
    int *tok = xmalloc(sizeof(int) * n_seq);
    float *logits = xmalloc(sizeof(float) * n_seq * V);
    double *times = xmalloc(sizeof(double) * steps);
    for (int i = 0; i < n_seq; i++) tok[i] = 'a' + i % 26;
    for (int st = -3; st < steps; st++) {
        double t0 = omp_get_wtime();
        ssm_step(m, s, tok, logits);
        if (st >= 0) times[st] = omp_get_wtime() - t0;
        for (int i = 0; i < n_seq; i++) tok[i] = (tok[i] + 1) % V;
    }
    double med = median(times, steps);
    free(times), free(tok), free(logits);
    ssm_state_free(s);
    return med;
}

double bench_copy_bandwidth(void) {
    const size_t n = (size_t)64 << 20; /* 256 MiB per buffer: far beyond any cache */
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)i, b[i] = 0;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t lo = n * id / nt, hi = n * (id + 1) / nt;
            memcpy(b + lo, a + lo, (hi - lo) * sizeof(float));
        }
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    volatile float sink = b[n - 1];
    (void)sink;
    free(a), free(b);
    return 2.0 * n * sizeof(float) / best;
}
