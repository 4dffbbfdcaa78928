// Batched products of many small row-major matrices through cuBLAS (blas_batched.cu): the SSD's per-chunk and
// per-head products (ssd.cu). C = op(A) op(B) + beta C for each of batch triples, row-major: op(A) is M x K (A itself,
// rows of lda, or with ta the transpose of a K x M A), op(B) K x N likewise, C M x N in rows of ldc. float32 operands
// and output; tf32 != 0 lets the tensor cores round the operands to tf32 (float32 accumulation). Deterministic: the
// same bits every run on one GPU. The CPU emulator (tests/emu/emu_blas.cpp) implements the same two functions.
#ifndef SSM_CUDA_BLAS_BATCHED_H
#define SSM_CUDA_BLAS_BATCHED_H

#ifdef __cplusplus
extern "C" {
#endif

// triple i at A + i sA, B + i sB, C + i sC (floats)
void blas_gemm_strided(int ta, int tb, int M, int N, int K, const float *A, int lda, long long sA, const float *B,
                       int ldb, long long sB, float beta, float *C, int ldc, long long sC, int batch, int tf32);
// triple i at A[i], B[i], C[i]: device arrays of device pointers
void blas_gemm_ptrs(int ta, int tb, int M, int N, int K, const float *const *A, int lda, const float *const *B, int ldb,
                    float beta, float *const *C, int ldc, int batch, int tf32);
// what a device context holds of cuBLAS (cuda_ctx.blas: the handle and its workspace), freed with it; NULL is fine
void blas_free(void *state);

#ifdef __cplusplus
}
#endif

#endif
