/* The CPU attention's forward and backward at t768x12's shape (H 12 heads of hd 64, no grouping), B 1, training's
 * q | k | v rows: the scalar definition (cpu_attn_fwd_ref, cpu_attn_bwd_ref) against the tiled ops, and one decode
 * step (T 1) from a cache of the same length.
 *   make build/bench_cpu_attn && OMP_NUM_THREADS=2 build/bench_cpu_attn [T ...]   (default 2048 8192)
 * SSM_BENCH_NO_REF=1 skips the scalar definition (minutes at T 8192). */
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

static attn_args A, D; /* training's, and a decode step's (T 1 from a cache of A.T keys) */
static float *O, *DO, *DQKV, *OD;
enum { H = 12, KV = 12, HD = 64, W = (H + 2 * KV) * HD };
static mat dq(void) { return mat_f32(DQKV, W); }
static mat dk(void) { return mat_f32(DQKV + H * HD, W); }
static mat dv(void) { return mat_f32(DQKV + (H + KV) * HD, W); }
static void fwd_ref(void) { cpu_attn_fwd_ref(&A, mat_f32(O, H * HD)); }
static void fwd(void) { cpu_attn_fwd(&A, mat_f32(O, H * HD)); }
static void bwd_ref(void) { cpu_attn_bwd_ref(&A, mat_f32(O, H * HD), mat_f32(DO, H * HD), dq(), dk(), dv()); }
static void bwd(void) { cpu_attn_bwd(&A, mat_f32(O, H * HD), mat_f32(DO, H * HD), dq(), dk(), dv()); }
static void step_ref(void) { cpu_attn_fwd_ref(&D, mat_f32(OD, H * HD)); }
static void step(void) { cpu_attn_fwd(&D, mat_f32(OD, H * HD)); }

static double rel_err(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++)
        num += (x[i] - ref[i]) * (double)(x[i] - ref[i]), den += ref[i] * (double)ref[i];
    return sqrt(num / den);
}

static void bench(int T, int with_ref) {
    const size_t rows = T, no = rows * H * HD;
    unsigned st = 1;
    float *qkv = xmalloc(sizeof(float) * rows * W), *lse = xmalloc(sizeof(float) * H * T);
    for (size_t i = 0; i < rows * W; i++)
        qkv[i] = 2.0f * frand(&st);
    O = xmalloc(sizeof(float) * no), DO = xmalloc(sizeof(float) * no), DQKV = xcalloc(rows * W, sizeof(float));
    OD = xmalloc(sizeof(float) * H * HD);
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
    D = A, D.T = 1, D.q = mat_f32(qkv + (size_t)(T - 1) * W, W), D.nk = &nk, D.lse = NULL;
    float *o_ref = xmalloc(sizeof(float) * no), *d_ref = xmalloc(sizeof(float) * rows * W), od_ref[H * HD];
    double f_ref = 0, b_ref = 0, s_ref = 0;
    if (with_ref) {
        best_ms(1, fwd_ref, &f_ref);
        memcpy(o_ref, O, sizeof(float) * no);
        best_ms(1, bwd_ref, &b_ref);
        memcpy(d_ref, DQKV, sizeof(float) * rows * W);
        best_ms(20, step_ref, &s_ref);
        memcpy(od_ref, OD, sizeof od_ref);
    }
    const double f = best_ms(3, fwd, NULL), b = best_ms(3, bwd, NULL), s = best_ms(20, step, NULL);
    printf("T %5d  scalar: fwd %9.1f ms  bwd %9.1f ms  step %6.3f ms\n", T, f_ref, b_ref, s_ref);
    printf("T %5d  tiled:  fwd %9.1f ms  bwd %9.1f ms  step %6.3f ms", T, f, b, s);
    if (with_ref)
        printf("  (rel err o %.1e, dq|dk|dv %.1e, step %.1e)", rel_err(O, o_ref, no), rel_err(DQKV, d_ref, rows * W),
               rel_err(OD, od_ref, H * HD));
    printf("\n");
    free(qkv), free(lse), free(O), free(DO), free(DQKV), free(OD), free(o_ref), free(d_ref);
}

int main(int argc, char **argv) {
    const char *no_ref = getenv("SSM_BENCH_NO_REF");
    const int with_ref = !(no_ref && *no_ref && strcmp(no_ref, "0"));
    printf("threads %d, B 1 H %d KV %d hd %d, causal (fwd, bwd best of 3; step: T 1 from a cache of T keys, best of "
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
