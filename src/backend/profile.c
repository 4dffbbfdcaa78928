/* The profiling backend (see profile.h): one wrapper per op, each timing the op between two device
 * synchronizations. */
#include "backend/profile.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>

static const backend *inner;
static backend wrapped;

enum { P_MAX = 32 };
static struct {
    const char *name, *category;
    long calls;
    double seconds;
} totals[P_MAX];

static double prof_begin(void) {
    inner->sync();
    return omp_get_wtime();
}

static void prof_end(int slot, const char *name, const char *category, double t0) {
    inner->sync();
    totals[slot].name = name, totals[slot].category = category;
    totals[slot].calls++;
    totals[slot].seconds += omp_get_wtime() - t0;
}
static void p_matmul_xwT(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta) {
    double t0 = prof_begin();
    inner->matmul_xwT(y, ldy, x, ldx, w, M, N, K, beta);
    prof_end(1, "matmul_xwT", "gemm", t0);
}
static void p_matmul_dyw(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K,
                         float beta) {
    double t0 = prof_begin();
    inner->matmul_dyw(dx, lddx, dy, lddy, w, M, N, K, beta);
    prof_end(2, "matmul_dyw", "gemm", t0);
}
static void p_matmul_dw_acc(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K) {
    double t0 = prof_begin();
    inner->matmul_dw_acc(dw, dy, lddy, x, ldx, M, N, K);
    prof_end(3, "matmul_dw_acc", "gemm", t0);
}
static void p_matmul_bwd(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x,
                         int ldx, const float *w, int M, int N, int K) {
    double t0 = prof_begin();
    inner->matmul_bwd(dx, lddx, beta, dw, dy, lddy, x, ldx, w, M, N, K);
    prof_end(15, "matmul_bwd", "gemm", t0);
}
static void p_matmul_xwT_x16(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K,
                             float beta) {
    double t0 = prof_begin();
    inner->matmul_xwT_x16(y, ldy, x16, ldx, w, M, N, K, beta);
    prof_end(16, "matmul_xwT_x16", "gemm", t0);
}
static void p_matmul_dw_acc_x16(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N,
                                int K) {
    double t0 = prof_begin();
    inner->matmul_dw_acc_x16(dw, dy, lddy, x16, ldx, M, N, K);
    prof_end(17, "matmul_dw_acc_x16", "gemm", t0);
}
static void p_matmul_xwT_y16(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                             const float *bias, int M, int N, int K) {
    double t0 = prof_begin();
    inner->matmul_xwT_y16(y16, ldy, x, x16, ldx, w, bias, M, N, K);
    prof_end(18, "matmul_xwT_y16", "gemm", t0);
}
static void p_round_bf16_rows(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols) {
    double t0 = prof_begin();
    inner->round_bf16_rows(dst, ldd, src, lds, rows, cols);
    prof_end(24, "round_bf16_rows", "other", t0);
}
static void p_matmul_bwd16(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                           const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx, const float *w,
                           int M, int N, int K) {
    double t0 = prof_begin();
    inner->matmul_bwd16(dx, dx16, lddx, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M, N, K);
    prof_end(19, "matmul_bwd16", "gemm", t0);
}
static void p_bias_add(float *y, int ldy, const float *bias, int rows, int N) {
    double t0 = prof_begin();
    inner->bias_add(y, ldy, bias, rows, N);
    prof_end(4, "bias_add", "other", t0);
}
static void p_bias_grad_acc(float *db, const float *dy, int lddy, int rows, int N) {
    double t0 = prof_begin();
    inner->bias_grad_acc(db, dy, lddy, rows, N);
    prof_end(5, "bias_grad_acc", "other", t0);
}
static void p_embedding_fwd(float *out, const int *tokens, const float *table, int rows, int D) {
    double t0 = prof_begin();
    inner->embedding_fwd(out, tokens, table, rows, D);
    prof_end(6, "embedding_fwd", "other", t0);
}
static void p_embedding_bwd(float *dtable, const float *dout, const int *tokens, int rows, int D) {
    double t0 = prof_begin();
    inner->embedding_bwd(dtable, dout, tokens, rows, D);
    prof_end(7, "embedding_bwd", "other", t0);
}
static void p_rmsnorm_fwd(float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D,
                          float eps) {
    double t0 = prof_begin();
    inner->rmsnorm_fwd(y, y16, rstd, x, w, rows, D, eps);
    prof_end(8, "rmsnorm_fwd", "other", t0);
}
static void p_rmsnorm_bwd(float *dx, uint16_t *dx16, float *dw, const float *dy, const uint16_t *dy16, const float *x,
                          const float *w, const float *rstd, int rows, int D, int acc) {
    double t0 = prof_begin();
    inner->rmsnorm_bwd(dx, dx16, dw, dy, dy16, x, w, rstd, rows, D, acc);
    prof_end(9, "rmsnorm_bwd", "other", t0);
}
static void p_conv1d_silu_fwd(float *out, uint16_t *out16, const float *x, const uint16_t *x16, int ldx,
                              const float *init, const float *w, const float *bias, int B, int T, int C, int K) {
    double t0 = prof_begin();
    inner->conv1d_silu_fwd(out, out16, x, x16, ldx, init, w, bias, B, T, C, K);
    prof_end(10, "conv1d_silu_fwd", "other", t0);
}
static void p_conv1d_silu_bwd(float *dx, uint16_t *dx16, int lddx, float *dw, float *dbias, const float *dout,
                              const uint16_t *dout16, const float *x, const uint16_t *x16, int ldx, const float *w,
                              const float *bias, int B, int T, int C, int K) {
    double t0 = prof_begin();
    inner->conv1d_silu_bwd(dx, dx16, lddx, dw, dbias, dout, dout16, x, x16, ldx, w, bias, B, T, C, K);
    prof_end(11, "conv1d_silu_bwd", "other", t0);
}
static void p_conv1d_silu_step(float *out, const float *x, int ldx, float *state, const float *w, const float *bias,
                               int B, int C, int K) {
    double t0 = prof_begin();
    inner->conv1d_silu_step(out, x, ldx, state, w, bias, B, C, K);
    prof_end(26, "conv1d_silu_step", "other", t0);
}
static void p_conv1d_state_update(float *state, const float *x, int ldx, int B, int T, int C, int K) {
    double t0 = prof_begin();
    inner->conv1d_state_update(state, x, ldx, B, T, C, K);
    prof_end(12, "conv1d_state_update", "other", t0);
}
static void p_scan_fwd(const scan_args *s, float *out, uint16_t *out16, float *h) {
    double t0 = prof_begin();
    inner->scan_fwd(s, out, out16, h);
    prof_end(13, "scan_fwd", "scan", t0);
}
static void p_scan_bwd(const scan_args *s, const scan_grads *g, const float *dout) {
    double t0 = prof_begin();
    inner->scan_bwd(s, g, dout);
    prof_end(14, "scan_bwd", "scan", t0);
}
static void p_neg_exp_transpose(float *At, const float *A_log, int E, int N) {
    double t0 = prof_begin();
    inner->neg_exp_transpose(At, A_log, E, N);
    prof_end(23, "neg_exp_transpose", "other", t0);
}
static void p_xent_fwd_bwd(double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows,
                           int V, float scale) {
    double t0 = prof_begin();
    inner->xent_fwd_bwd(sum, count, dlogits, logits, targets, rows, V, scale);
    prof_end(20, "xent_fwd_bwd", "other", t0);
}
static double p_grad_norm(const float *dw, size_t n) {
    double t0 = prof_begin();
    double r = inner->grad_norm(dw, n);
    prof_end(21, "grad_norm", "optim", t0);
    return r;
}
static void p_adamw_step(float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask,
                         size_t n, float lr, float weight_decay, float beta1, float beta2, float eps, long step) {
    double t0 = prof_begin();
    inner->adamw_step(w, g, gscale, m, v, decay_mask, n, lr, weight_decay, beta1, beta2, eps, step);
    prof_end(22, "adamw_step", "optim", t0);
}

static void p_add_rmsnorm_fwd(float *x_out, float *y, uint16_t *y16, float *rstd, const float *x, const float *delta,
                              const uint16_t *delta16, const float *w, int rows, int D, float eps) {
    double t0 = prof_begin();
    inner->add_rmsnorm_fwd(x_out, y, y16, rstd, x, delta, delta16, w, rows, D, eps);
    prof_end(25, "add_rmsnorm_fwd", "other", t0);
}

const backend *profile_wrap(const backend *in) {
    inner = in;
    wrapped = *in; /* memory functions and names pass through */
    wrapped.fp32 = wrapped.bf16 = &wrapped;
    memset(totals, 0, sizeof totals);
    wrapped.matmul_xwT = p_matmul_xwT;
    wrapped.matmul_dyw = p_matmul_dyw;
    wrapped.matmul_dw_acc = p_matmul_dw_acc;
    wrapped.matmul_bwd = p_matmul_bwd;
    wrapped.matmul_xwT_y16 = p_matmul_xwT_y16;
    wrapped.matmul_bwd16 = p_matmul_bwd16;
    wrapped.round_bf16_rows = p_round_bf16_rows;
    wrapped.matmul_xwT_x16 = p_matmul_xwT_x16;
    wrapped.matmul_dw_acc_x16 = p_matmul_dw_acc_x16;
    wrapped.bias_add = p_bias_add;
    wrapped.bias_grad_acc = p_bias_grad_acc;
    wrapped.embedding_fwd = p_embedding_fwd;
    wrapped.embedding_bwd = p_embedding_bwd;
    wrapped.rmsnorm_fwd = p_rmsnorm_fwd;
    wrapped.rmsnorm_bwd = p_rmsnorm_bwd;
    wrapped.conv1d_silu_fwd = p_conv1d_silu_fwd;
    wrapped.conv1d_silu_bwd = p_conv1d_silu_bwd;
    wrapped.conv1d_state_update = p_conv1d_state_update;
    wrapped.conv1d_silu_step = p_conv1d_silu_step;
    wrapped.scan_fwd = p_scan_fwd;
    wrapped.scan_bwd = p_scan_bwd;
    wrapped.neg_exp_transpose = p_neg_exp_transpose;
    wrapped.xent_fwd_bwd = p_xent_fwd_bwd;
    wrapped.grad_norm = p_grad_norm;
    wrapped.adamw_step = p_adamw_step;
    wrapped.add_rmsnorm_fwd = p_add_rmsnorm_fwd;
    return &wrapped;
}

void profile_print(int steps) {
    static const char *const order[] = {"gemm", "scan", "other", "optim"};
    double all = 0, by_cat[4] = {0};
    for (int i = 0; i < P_MAX; i++)
        all += totals[i].seconds;
    printf("%-22s %8s %12s %7s\n", "op (per step)", "calls", "ms", "share");
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < P_MAX; i++) {
            if (!totals[i].calls || strcmp(totals[i].category, order[c])) continue;
            by_cat[c] += totals[i].seconds;
            printf("%-22s %8.1f %12.3f %6.1f%%\n", totals[i].name, (double)totals[i].calls / steps,
                   totals[i].seconds * 1e3 / steps, 100 * totals[i].seconds / all);
        }
    printf("by kind: ");
    for (int c = 0; c < 4; c++)
        printf("%s %.2f ms (%.1f%%)%s", order[c], by_cat[c] * 1e3 / steps, 100 * by_cat[c] / all, c < 3 ? ", " : "\n");
}
