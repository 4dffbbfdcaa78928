// Linear-layer GEMMs on the GPU through cuBLASLt (the CUDA twins of src/backend/cpu/matmul.c). Our
// matrices are row-major; cuBLASLt's are column-major, so each product is computed transposed:
// a row-major [R, C] matrix with row stride ld is the column-major [C, R] matrix with the same ld.
// float32 in, float32 out, FP32 compute (no TF32), one algorithm from the heuristic per call shape.
#include "backend/cuda/cuda_common.h"
#include "ops/ops_cuda.h"

#include <cublasLt.h>

#define LT_CHECK(call)                                                                             \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            fprintf(stderr, "ssm: cuBLASLt error %d at %s:%d (%s)\n", (int)st_, __FILE__, __LINE__, #call); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static cublasLtHandle_t lt_handle;
static void *lt_workspace;
static const size_t lt_workspace_bytes = (size_t)32 << 20;

static void lt_init(void) {
    if (lt_handle) return;
    LT_CHECK(cublasLtCreate(&lt_handle));
    CUDA_CHECK(cudaMalloc(&lt_workspace, lt_workspace_bytes));
}

// D = C = alpha * op(A) op(B) + beta * C, all column-major float32: op(A) is m x k, op(B) k x n.
static void lt_gemm(bool trans_a, bool trans_b, int m, int n, int k, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, float beta) {
    lt_init();
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    LT_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, trans_a ? k : m, trans_a ? m : k, lda));
    LT_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, trans_b ? n : k, trans_b ? k : n, ldb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc));
    cublasLtMatmulPreference_t pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt_workspace_bytes,
                                                  sizeof lt_workspace_bytes));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    LT_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_handle, op, la, lb, lc, lc, pref, 1, &heur, &found));
    if (!found) {
        fprintf(stderr, "ssm: cuBLASLt has no algorithm for a %d x %d x %d GEMM\n", m, n, k);
        exit(2);
    }
    const float alpha = 1.0f;
    LT_CHECK(cublasLtMatmul(lt_handle, op, &alpha, A, la, B, lb, &beta, C, lc, C, lc, &heur.algo, lt_workspace,
                            lt_workspace_bytes, 0));
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
}

// y[M,N] = beta y + x[M,K] w[N,K]^T  <=>  y^T (N x M) = w (op T of stored K x N) * x^T (K x M)
extern "C" void matmul_xwT_cuda(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K,
                                float beta) {
    lt_gemm(true, false, N, M, K, w, K, x, ldx, y, ldy, beta);
}

// dx[M,K] = beta dx + dy[M,N] w[N,K]  <=>  dx^T (K x M) = w^T (stored K x N) * dy^T (stored N x M)
extern "C" void matmul_dyw_cuda(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K,
                                float beta) {
    lt_gemm(false, false, K, M, N, w, K, dy, lddy, dx, lddx, beta);
}

// dw[N,K] += dy[M,N]^T x[M,K]  <=>  dw^T (K x N) += x^T (stored K x M) * dy (op T of stored N x M)
extern "C" void matmul_dw_acc_cuda(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K) {
    lt_gemm(false, true, K, N, M, x, ldx, dy, lddy, dw, K, 1.0f);
}
