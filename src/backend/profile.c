/* The profiling backend (see profile.h): one wrapper per op of ops_list.h, each timing the op between two device
 * synchronizations into the op's total. */
#include "backend/profile.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>

static const backend *inner;
static backend wrapped;

static struct {
    long calls;
    double seconds;
    double flops; /* the ops whose count their shapes give (below); 0 for the others */
} totals[BACKEND_OP_COUNT]; /* by BACKEND_OP_* index */

static double prof_begin(void) {
    inner->sync();
    return omp_get_wtime();
}

static void prof_end(int op, double t0) {
    inner->sync();
    totals[op].calls++;
    totals[op].seconds += omp_get_wtime() - t0;
}

/* The wrapper's body by the op's return type (an op returning another type needs its line here). */
#define PROF_CALL_void(op, call)                                                                                      \
    double t0 = prof_begin();                                                                                         \
    call;                                                                                                             \
    prof_end(op, t0);
#define PROF_CALL_double(op, call)                                                                                    \
    double t0 = prof_begin();                                                                                         \
    double result = call;                                                                                             \
    prof_end(op, t0);                                                                                                 \
    return result;

#define OP(ret, name, params, args, group)                                                                            \
    static ret p_##name params { PROF_CALL_##ret(BACKEND_OP_##name, inner->name args) }
#include "backend/ops_list.h"
#undef OP

/* ---- FLOPs (a multiply-add = 2), counted from the shapes for the ops whose work is products ----
 * GEMMs exactly; attention over training's keys (causal, the window's cap; not a decode step's cache, whose length
 * is on the device): QK^T and PV, and the backward at 2.5 times the forward (FlashAttention's convention); the SSD
 * (Mamba-2) as its chunked algorithm's products with chunks of min(chunk, 64) (the GPU's): per position
 * C B^T (G Q N), the masked M X (H P Q), the chunk states (H P N) and C S^T (H P N), the backward at 2.5 times the
 * forward too. The profile then prints each counted op's rate. */
static void f_matmul_xwT(mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta) {
    totals[BACKEND_OP_matmul_xwT].flops += 2.0 * M * N * K;
    p_matmul_xwT(y, x, w, bias, M, N, K, beta);
}
static void f_matmul_bwd(mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N, int K) {
    totals[BACKEND_OP_matmul_bwd].flops += 2.0 * M * N * K * ((dx.p != NULL) + (dw != NULL));
    p_matmul_bwd(dx, beta, dw, dy, x, w, M, N, K);
}
static double attn_flops(const attn_args *a) {
    if (a->nk) return 0; /* (a decode state's cache: its length is on the device) */
    double keys = 0; /* keys seen by the T queries of a sequence */
    for (long i = 0; i < a->T; i++) keys += a->window > 0 && i + 1 > a->window ? a->window : i + 1;
    return 4.0 * a->B * a->H * a->hd * keys;
}
static void f_attn_fwd(const attn_args *a, mat o) {
    totals[BACKEND_OP_attn_fwd].flops += attn_flops(a);
    p_attn_fwd(a, o);
}
static void f_attn_bwd(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    totals[BACKEND_OP_attn_bwd].flops += 2.5 * attn_flops(a);
    p_attn_bwd(a, o, dout, dq, dk, dv);
}
static double ssd_flops(const ssd_args *s) {
    const double Q = s->chunk < 64 ? s->chunk : 64, P = s->P, N = s->N, H = s->H, G = s->G;
    return 2.0 * s->B * s->T * (G * Q * N + H * P * Q + 2 * H * P * N);
}
static void f_ssd_fwd(const ssd_args *s, mat y, float *state) {
    if (s->T > 1) totals[BACKEND_OP_ssd_fwd].flops += ssd_flops(s);
    p_ssd_fwd(s, y, state);
}
static void f_ssd_bwd(const ssd_args *s, const ssd_grads *g, const float *dy) {
    totals[BACKEND_OP_ssd_bwd].flops += 2.5 * ssd_flops(s);
    p_ssd_bwd(s, g, dy);
}

const backend *profile_wrap(const backend *in) {
    inner = in;
    wrapped = *in; /* memory functions and names pass through */
    wrapped.fp32 = wrapped.bf16 = &wrapped;
    memset(totals, 0, sizeof totals);
#define OP(ret, name, params, args, group) wrapped.name = in->name ? p_##name : NULL;
#include "backend/ops_list.h"
#undef OP
#define COUNTED(name) wrapped.name = in->name ? f_##name : NULL
    COUNTED(matmul_xwT), COUNTED(matmul_bwd), COUNTED(attn_fwd), COUNTED(attn_bwd), COUNTED(ssd_fwd), COUNTED(ssd_bwd);
#undef COUNTED
    return &wrapped;
}

void profile_print(int steps) {
    static const char *const order[] = {"gemm", "scan", "other", "optim"};
    double all = 0, by_cat[4] = {0};
    for (int i = 0; i < BACKEND_OP_COUNT; i++)
        all += totals[i].seconds;
    printf("%-22s %8s %12s %7s %10s\n", "op (per step)", "calls", "ms", "share", "TFLOP/s");
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < BACKEND_OP_COUNT; i++) {
            if (!totals[i].calls || strcmp(backend_op_groups[i], order[c])) continue;
            by_cat[c] += totals[i].seconds;
            char rate[32] = "";
            if (totals[i].flops > 0 && totals[i].seconds > 0)
                snprintf(rate, sizeof rate, "%10.2f", totals[i].flops / totals[i].seconds / 1e12);
            printf("%-22s %8.1f %12.3f %6.1f%% %s\n", backend_op_names[i], (double)totals[i].calls / steps,
                   totals[i].seconds * 1e3 / steps, 100 * totals[i].seconds / all, rate);
        }
    printf("by kind: ");
    for (int c = 0; c < 4; c++)
        printf("%s %.2f ms (%.1f%%)%s", order[c], by_cat[c] * 1e3 / steps, 100 * by_cat[c] / all, c < 3 ? ", " : "\n");
}
