/* Linear layers on the CPU: GEMMs through OpenBLAS (ops.h's matmul_*) and their bias add/gradient. */
#include "ops/ops.h"

#include <cblas.h>

void matmul_xwT(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta) {
    if (M == 1) { /* decode of one sequence: a matrix-vector product, bound by reading w once */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, beta, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, ldx, w, K, beta, y, ldy);
}

void matmul_dyw(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, lddy, w, K, beta, dx, lddx);
}

void matmul_dw_acc(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, lddy, x, ldx, 1.0f, dw, K);
}

void bias_add(float *y, int ldy, const float *bias, int rows, int N) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < N; j++) y[(size_t)r * ldy + j] += bias[j];
}

void bias_grad_acc(float *db, const float *dy, int lddy, int rows, int N) {
    /* columns split across threads, rows in order inside: deterministic, no reduction */
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < N; j0 += 64)
        for (int r = 0; r < rows; r++)
            for (int j = j0; j < N && j < j0 + 64; j++) db[j] += dy[(size_t)r * lddy + j];
}
