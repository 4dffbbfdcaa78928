/* The CPU SSD's forward and backward at one layer of mamba2-130m's shape (H 24, P 64, N 128, G 1), B 1, T 1024:
 * the sequential definitions against the chunked ops, chunks 16..256 (both cap their chunk at 64: above that a row
 * repeats the 64 one).
 *   make build/bench_cpu_ssd && OMP_NUM_THREADS=2 build/bench_cpu_ssd   (make tests builds it too) */
#include "backend/cpu/cpu_ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *st) { return (float)((*st = *st * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f; }

static double best_ms(int reps, void (*fn)(void *), void *u) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t = omp_get_wtime();
        fn(u);
        const double ms = (omp_get_wtime() - t) * 1e3;
        if (ms < best) best = ms;
    }
    return best;
}

static ssd_args S;
static ssd_grads Gr;
static float *Y, *DY;
static void run_fwd_ref(void *u) { cpu_ssd_fwd_ref(&S, Y, NULL); }
static void run_fwd(void *u) { cpu_ssd_fwd_f32(&S, Y, NULL); }
static void run_bwd_ref(void *u) { cpu_ssd_bwd_ref(&S, &Gr, DY); }
static void run_bwd(void *u) { cpu_ssd_bwd(&S, &Gr, DY); }

int main(void) {
    const int B = 1, T = 1024, H = 24, P = 64, N = 128, G = 1, ld = H * P + 2 * G * N;
    const size_t rows = (size_t)B * T;
    unsigned st = 1;
    float *xbc = xmalloc(rows * ld * sizeof(float)), *dt = xmalloc(rows * H * sizeof(float));
    float *bias = xmalloc(H * sizeof(float)), *A_log = xmalloc(H * sizeof(float)), *Dv = xmalloc(H * sizeof(float));
    for (size_t i = 0; i < rows * ld; i++) xbc[i] = frand(&st);
    for (size_t i = 0; i < rows * H; i++) dt[i] = frand(&st) - 3.0f;
    for (int h = 0; h < H; h++) bias[h] = 0.0f, A_log[h] = logf(1.0f + h), Dv[h] = 1.0f;
    Y = xmalloc(rows * H * P * sizeof(float)), DY = xmalloc(rows * H * P * sizeof(float));
    for (size_t i = 0; i < rows * H * P; i++) DY[i] = frand(&st);
    float *dxbc = xcalloc(rows * ld, sizeof(float)), *ddt = xcalloc(rows * H, sizeof(float));
    float *dh = xcalloc(3 * H, sizeof(float)), *ref = xmalloc(rows * ld * sizeof(float));
    S = (ssd_args){.x = xbc, .Bm = xbc + H * P, .Cm = xbc + H * P + G * N, .ldx = ld, .dt = dt, .lddt = H,
                   .dt_bias = bias, .A_log = A_log, .Dv = Dv, .dt_min = 0.0f, .dt_max = INFINITY,
                   .B = B, .T = T, .H = H, .P = P, .N = N, .G = G, .chunk = 64};
    Gr = (ssd_grads){.dx = dxbc, .dBm = dxbc + H * P, .dCm = dxbc + H * P + G * N, .ldd = ld, .ddt = ddt,
                     .ldddt = H, .dA_log = dh, .ddt_bias = dh + H, .dDv = dh + 2 * H};
    printf("threads %d, B %d T %d H %d P %d N %d G %d (best of 3)\n", omp_get_max_threads(), B, T, H, P, N, G);
    printf("fwd sequential %.1f ms\n", best_ms(3, run_fwd_ref, NULL));
    printf("bwd sequential %.1f ms\n", best_ms(3, run_bwd_ref, NULL));
    memcpy(ref, dxbc, rows * ld * sizeof(float));
    for (int q = 16; q <= 256; q *= 2) {
        S.chunk = q;
        const double f = best_ms(3, run_fwd, NULL), b = best_ms(3, run_bwd, NULL);
        double num = 0, den = 0;
        for (size_t i = 0; i < rows * ld; i++) num += (dxbc[i] - ref[i]) * (dxbc[i] - ref[i]), den += ref[i] * ref[i];
        printf("chunk %3d: fwd %.1f ms, bwd %.1f ms (dx|dB|dC rel err vs sequential %.1e)\n", q, f, b, sqrt(num / den));
    }
    return 0;
}
