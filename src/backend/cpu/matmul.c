/* Linear-layer GEMMs through OpenBLAS (CPU backend of ops.h's matmul_*). */
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
