// Batched small products through cuBLAS (blas_batched.h). cuBLASLt (matmul.cu) takes one batch stride; the SSD's
// per-head products need two (chunks and heads), which cuBLAS's pointer-array form takes. Row-major products are
// computed as their column-major transposes: C^T = op(B)^T op(A)^T, the operands swapped.
#include "backend/cuda/blas_batched.h"
#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
#include "common.h"

#include <cublas_v2.h>

#define BLAS_CHECK(call) CUBLAS_CHECK("cuBLAS", call)

// cuBLAS's state in a device context (cuda_ctx.blas): the handle, made on the context's device, on the per-thread
// stream our kernels use, with a workspace of its own (so that cuBLAS never allocates one mid-stream).
typedef struct {
    cublasHandle_t h;
    void *ws;
} blas_state;
static const size_t blas_ws_bytes = (size_t)32 << 20;

static cublasHandle_t blas_handle(void) {
    cuda_ctx *ctx = cuda_ctx_now();
    if (!ctx->blas) {
        blas_state *b = (blas_state *)calloc(1, sizeof *b);
        CHECK(b, "out of memory");
        BLAS_CHECK(cublasCreate(&b->h));
        BLAS_CHECK(cublasSetStream(b->h, cudaStreamPerThread));
        CUDA_CHECK(cudaMalloc(&b->ws, blas_ws_bytes));
        BLAS_CHECK(cublasSetWorkspace(b->h, b->ws, blas_ws_bytes));
        ctx->blas = b;
    }
    return ((blas_state *)ctx->blas)->h;
}

extern "C" void blas_free(void *state) {
    blas_state *b = (blas_state *)state;
    if (!b) return;
    BLAS_CHECK(cublasDestroy(b->h));
    CUDA_CHECK(cudaFree(b->ws));
    free(b);
}

static cublasComputeType_t compute_of(int tf32) { return tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F; }
static cublasOperation_t op_of(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

extern "C" void blas_gemm_strided(int ta, int tb, int M, int N, int K, const float *A, int lda, long long sA,
                                  const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                                  int batch, int tf32) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    const float one = 1.0f;
    BLAS_CHECK(cublasGemmStridedBatchedEx(blas_handle(), op_of(tb), op_of(ta), N, M, K, &one, B, CUDA_R_32F, ldb, sB, A,
                                          CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch, compute_of(tf32),
                                          CUBLAS_GEMM_DEFAULT));
}

extern "C" void blas_gemm_ptrs(int ta, int tb, int M, int N, int K, const float *const *A, int lda,
                               const float *const *B, int ldb, float beta, float *const *C, int ldc, int batch,
                               int tf32) {
    if (batch <= 0 || M <= 0 || N <= 0) return;
    const float one = 1.0f;
    BLAS_CHECK(cublasGemmBatchedEx(blas_handle(), op_of(tb), op_of(ta), N, M, K, &one, (const void *const *)B,
                                   CUDA_R_32F, ldb, (const void *const *)A, CUDA_R_32F, lda, &beta, (void *const *)C,
                                   CUDA_R_32F, ldc, batch, compute_of(tf32), CUBLAS_GEMM_DEFAULT));
}
