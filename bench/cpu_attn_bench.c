/* The CPU attention's forward and backward at t768x12's shape (H 12 heads of hd 64, no grouping), B 1, training's
 * q | k | v rows: the scalar definition (cpu_attn_fwd_ref, cpu_attn_bwd_ref) against the tiled ops, and a decode
 * step's attention (T 1) in each of 12 layers, each with its own dense cache of T keys (as a model's: together more
 * than the last-level cache, so the step reads them from memory).
 *   make build/bench_cpu_attn && OMP_NUM_THREADS=2 build/bench_cpu_attn [T ...]   (default 2048 8192)
 * SSM_BENCH_NO_REF=1 skips the scalar definition (minutes at T 8192); SSM_BENCH_STEP_ONLY=1 times the decode step
 * alone. */
#include "backend/cpu/cpu_ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *st) { return (float)((*st = *st * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f; }

static double best_ms(int reps, void (*fn)(void), double *total) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t = omp_get_wtime();
        fn();
        const double ms = (omp_get_wtime() - t) * 1e3;
        if (ms < best) best = ms;
    }
    if (total) *total = best;
    return best;
}

enum { LAYERS = 12 };
static attn_args A, D[LAYERS]; /* training's, and a decode step's layers' (T 1 from a cache of A.T keys) */
static float *O, *DO, *DQKV, *OD;
enum { H = 12, KV = 12, HD = 64, W = (H + 2 * KV) * HD };
static mat dq(void) { return mat_f32(DQKV, W); }
static mat dk(void) { return mat_f32(DQKV + H * HD, W); }
static mat dv(void) { return mat_f32(DQKV + (H + KV) * HD, W); }
static void fwd_ref(void) { cpu_attn_fwd_ref(&A, mat_f32(O, H * HD)); }
static void fwd(void) { cpu_attn_fwd(&A, mat_f32(O, H * HD)); }
static void bwd_ref(void) { cpu_attn_bwd_ref(&A, mat_f32(O, H * HD), mat_f32(DO, H * HD), dq(), dk(), dv()); }
static void bwd(void) { cpu_attn_bwd(&A, mat_f32(O, H * HD), mat_f32(DO, H * HD), dq(), dk(), dv()); }
static void step_ref(void) {
    for (int l = 0; l < LAYERS; l++)
        cpu_attn_fwd_ref(&D[l], mat_f32(OD + (size_t)l * H * HD, H * HD));
}
static void step(void) {
    for (int l = 0; l < LAYERS; l++)
        cpu_attn_fwd(&D[l], mat_f32(OD + (size_t)l * H * HD, H * HD));
}

static double rel_err(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        num += (x[i] - ref[i]) * (double)(x[i] - ref[i]), den += ref[i] * (double)ref[i];
    return sqrt(num / den);
}

static int flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0");
}

static void bench(int T, int with_ref) {
    const int train = !flag("SSM_BENCH_STEP_ONLY");
    const size_t rows = T, no = rows * H * HD;
    unsigned st = 1;
    float *qkv = xmalloc(sizeof(float) * rows * W), *lse = xmalloc(sizeof(float) * H * T);
    for (size_t i = 0; i < rows * W; i++)
        qkv[i] = 2.0f * frand(&st);
    O = xmalloc(sizeof(float) * no), DO = xmalloc(sizeof(float) * no), DQKV = xcalloc(rows * W, sizeof(float));
    OD = xmalloc(sizeof(float) * LAYERS * H * HD);
    for (size_t i = 0; i < no; i++)
        DO[i] = frand(&st);
    A = (attn_args){.q = mat_f32(qkv, W),
                    .k = mat_f32(qkv + H * HD, W),
                    .v = mat_f32(qkv + (H + KV) * HD, W),
                    .kv_bstride = (size_t)T * W,
                    .lse = lse,
                    .B = 1,
                    .T = T,
                    .H = H,
                    .KV = KV,
                    .hd = HD};
    const int nk = T;
    float *cache[LAYERS];
    for (int l = 0; l < LAYERS; l++) { /* k | v [T, KV * HD] each */
        float *c = cache[l] = xmalloc(sizeof(float) * 2 * rows * KV * HD);
        for (size_t t = 0; t < rows; t++) {
            memcpy(c + t * KV * HD, qkv + t * W + H * HD, sizeof(float) * KV * HD);
            memcpy(c + (rows + t) * KV * HD, qkv + t * W + (H + KV) * HD, sizeof(float) * KV * HD);
        }
        D[l] = A, D[l].T = 1, D[l].q = mat_f32(qkv + (size_t)(T - 1) * W, W), D[l].nk = &nk, D[l].lse = NULL;
        D[l].k = mat_f32(c, KV * HD), D[l].v = mat_f32(c + rows * KV * HD, KV * HD);
        D[l].kv_bstride = rows * KV * HD;
    }
    float *o_ref = xmalloc(sizeof(float) * no), *d_ref = xmalloc(sizeof(float) * rows * W), od_ref[H * HD];
    double f_ref = 0, b_ref = 0, s_ref = 0;
    if (with_ref) {
        if (train) {
            best_ms(1, fwd_ref, &f_ref);
            memcpy(o_ref, O, sizeof(float) * no);
            best_ms(1, bwd_ref, &b_ref);
            memcpy(d_ref, DQKV, sizeof(float) * rows * W);
        }
        best_ms(20, step_ref, &s_ref);
        memcpy(od_ref, OD, sizeof od_ref); /* layer 0's */
    }
    const double f = train ? best_ms(3, fwd, NULL) : 0, b = train ? best_ms(3, bwd, NULL) : 0,
                 s = best_ms(20, step, NULL);
    printf("T %5d  scalar: fwd %9.1f ms  bwd %9.1f ms  step %6.3f ms\n", T, f_ref, b_ref, s_ref);
    printf("T %5d  tiled:  fwd %9.1f ms  bwd %9.1f ms  step %6.3f ms", T, f, b, s);
    if (with_ref && train)
        printf("  (rel err o %.1e, dq|dk|dv %.1e, step %.1e)", rel_err(O, o_ref, no), rel_err(DQKV, d_ref, rows * W),
               rel_err(OD, od_ref, H * HD));
    printf("\n");
    for (int l = 0; l < LAYERS; l++)
        free(cache[l]);
    free(qkv), free(lse), free(O), free(DO), free(DQKV), free(OD), free(o_ref), free(d_ref);
}

int main(int argc, char **argv) {
    const int with_ref = !flag("SSM_BENCH_NO_REF");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("threads %d, B 1 H %d KV %d hd %d, causal (fwd, bwd best of 3; step: T 1 from a cache of T keys in each of "
           "12 layers, best of "
           "20; scalar: one run)\n",
           omp_get_max_threads(), H, KV, HD);
    if (argc < 2) {
        bench(2048, with_ref), bench(8192, with_ref);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        bench(atoi(argv[i]), with_ref);
    return 0;
}
