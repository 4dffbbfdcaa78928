// blas_batched.h on the CPU, for the emulated SSD (emu_ssd): each product in float32, its reduction in order (no tf32
// rounding: the emulator checks the kernels around the products, not cuBLAS).
#include "backend/cuda/blas_batched.h"

static void gemm_one(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                     float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += (ta ? A[(long)k * lda + i] : A[(long)i * lda + k]) *
                       (tb ? B[(long)j * ldb + k] : B[(long)k * ldb + j]);
            float *c = C + (long)i * ldc + j;
            *c = beta == 0.0f ? acc : acc + beta * *c;
        }
}

extern "C" void blas_gemm_strided(int ta, int tb, int M, int N, int K, const float *A, int lda, long long sA,
                                  const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                                  int batch, int tf32) {
    (void)tf32;
    for (int i = 0; i < batch; i++)
        gemm_one(ta, tb, M, N, K, A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC, ldc);
}

extern "C" void blas_gemm_ptrs(int ta, int tb, int M, int N, int K, const float *const *A, int lda,
                               const float *const *B, int ldb, float beta, float *const *C, int ldc, int batch,
                               int tf32) {
    (void)tf32;
    for (int i = 0; i < batch; i++)
        gemm_one(ta, tb, M, N, K, A[i], lda, B[i], ldb, beta, C[i], ldc);
}

extern "C" void blas_free(void *state) { (void)state; }
