// Linear-layer GEMMs on the GPU through cuBLASLt (the CUDA twins of src/backend/cpu/matmul.c). Our
// matrices are row-major; cuBLASLt's are column-major, so each product is computed transposed:
// a row-major [R, C] matrix with row stride ld is the column-major [C, R] matrix with the same ld.
// float32 in, float32 out; FP32 compute (no TF32), or bf16 tensor-core inputs with FP32 accumulation (the _bf16
// variants); one algorithm from the heuristic per call shape, cached with its descriptors.
#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
#include "common.h"
#include "ops/ops_cuda.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <string.h>

#define LT_CHECK(call) CUBLAS_CHECK("cuBLASLt", call)

static const size_t lt_workspace_bytes = (size_t)32 << 20;

// One GEMM shape with its descriptors and the heuristic's algorithm, made once and reused: a training step
// calls a dozen shapes hundreds of times.
typedef struct {
    bool trans_a, trans_b;
    int m, n, k, lda, ldb, ldc;
    unsigned align_a, align_b, align_c; // byte alignment of the pointers (up to 256): the algorithm must allow it
    cublasComputeType_t compute;
    cudaDataType_t ab_type; // CUDA_R_32F, or CUDA_R_16BF (converted copies of the operands)
    cudaDataType_t c_type;  // the output's: CUDA_R_32F, or CUDA_R_16BF (a bf16 y)
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

#define LT_MAX_PLANS 128

// cuBLASLt's state, one per device context (context.h): the handle, made on the context's device, its workspace
// there, and the plans, whose algorithms the heuristic chose for that device.
struct lt_state {
    cublasLtHandle_t handle;
    void *workspace;
    lt_plan plans[LT_MAX_PLANS];
    int n_plans;
};

// The bound context's handle and workspace, as the GEMMs below read them (after lt_init).
#define lt_handle (cuda_ctx_now()->lt->handle)
#define lt_workspace (cuda_ctx_now()->lt->workspace)

static void lt_init(void) {
    cuda_ctx *ctx = cuda_ctx_now();
    if (ctx->lt) return;
    lt_state *lt = (lt_state *)xcalloc(1, sizeof *lt);
    LT_CHECK(cublasLtCreate(&lt->handle));
    CUDA_CHECK(cudaMalloc(&lt->workspace, lt_workspace_bytes));
    ctx->lt = lt;
}

static void lt_plan_destroy(lt_plan *p) {
    cublasLtMatrixLayoutDestroy(p->la), cublasLtMatrixLayoutDestroy(p->lb), cublasLtMatrixLayoutDestroy(p->lc);
    cublasLtMatmulDescDestroy(p->op);
}

void lt_free(lt_state *lt) {
    if (!lt) return;
    for (int i = 0; i < lt->n_plans; i++) lt_plan_destroy(&lt->plans[i]);
    CUDA_CHECK(cudaFree(lt->workspace));
    LT_CHECK(cublasLtDestroy(lt->handle));
    free(lt);
}

// The largest power of two (up to 256) dividing the address: cuBLASLt assumes 256-byte aligned pointers
// unless told otherwise, and our operands are often slices (a column block of a wider row, one tensor of
// the flat parameter buffer).
static unsigned ptr_align(const void *p) {
    unsigned a = 256;
    while (a > 4 && (uintptr_t)p % a) a >>= 1;
    return a;
}

static const lt_plan *lt_plan_get(bool trans_a, bool trans_b, int m, int n, int k, int lda, int ldb, int ldc,
                                  unsigned align_a, unsigned align_b, unsigned align_c, cublasComputeType_t compute,
                                  cudaDataType_t ab_type, cudaDataType_t c_type) {
    lt_init();
    lt_state *lt = cuda_ctx_now()->lt;
    for (int i = 0; i < lt->n_plans; i++) {
        const lt_plan *p = &lt->plans[i];
        if (p->trans_a == trans_a && p->trans_b == trans_b && p->m == m && p->n == n && p->k == k &&
            p->lda == lda && p->ldb == ldb && p->ldc == ldc && p->align_a == align_a && p->align_b == align_b &&
            p->align_c == align_c && p->compute == compute && p->ab_type == ab_type && p->c_type == c_type)
            return p;
    }
    lt_plan tmp, *p = lt->n_plans < LT_MAX_PLANS ? &lt->plans[lt->n_plans++] : &tmp;
    if (p == &tmp) { // full: recycle the oldest slot
        p = &lt->plans[0];
        lt_plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->trans_a = trans_a, p->trans_b = trans_b, p->m = m, p->n = n, p->k = k;
    p->lda = lda, p->ldb = ldb, p->ldc = ldc, p->compute = compute, p->ab_type = ab_type, p->c_type = c_type;
    p->align_a = align_a, p->align_b = align_b, p->align_c = align_c;
    LT_CHECK(cublasLtMatmulDescCreate(&p->op, compute, CUDA_R_32F));
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->la, ab_type, trans_a ? k : m, trans_a ? m : k, lda));
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->lb, ab_type, trans_b ? n : k, trans_b ? k : n, ldb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->lc, c_type, m, n, ldc));
    cublasLtMatmulPreference_t pref;
    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lt_workspace_bytes,
                                                  sizeof lt_workspace_bytes));
    const uint32_t aa = align_a, ab = align_b, ac = align_c;
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    LT_CHECK(cublasLtMatmulAlgoGetHeuristic(lt_handle, p->op, p->la, p->lb, p->lc, p->lc, pref, 1, &heur, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    if (!found) {
        fprintf(stderr, "ssm: cuBLASLt has no algorithm for a %d x %d x %d GEMM\n", m, n, k);
        exit(2);
    }
    p->algo = heur.algo;
    return p;
}

// Mixed precision comes in two forms, chosen by SSM_BF16_GEMM: "convert" (default) rounds both operands into
// dense bf16 copies with one elementwise kernel each and runs a native bf16 x bf16 GEMM (float32 accumulation
// and output); "fast" hands the float32 operands to cuBLASLt's CUBLAS_COMPUTE_32F_FAST_16BF. Same rounding.
static int bf16_convert(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("SSM_BF16_GEMM");
        mode = !(e && !strcmp(e, "fast"));
    }
    return mode;
}

// dst [rows, cols] (row stride ldd) = bf16(src [rows, cols] with row stride ld), round to nearest even: a block per
// row (no index division: this is a pure bandwidth kernel).
__global__ static void to_bf16_dense_kernel(__nv_bfloat16 *dst, const float *src, int cols, int ld, int ldd) {
    const float *s = src + (size_t)blockIdx.x * ld;
    __nv_bfloat16 *d = dst + (size_t)blockIdx.x * ldd;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = __float2bfloat16_rn(s[c]);
}

// Narrow rows (the x_proj output's gradient: 80 columns) a thread per element over the whole matrix instead: a block
// per row would leave most of its threads idle and the pass bound by launching blocks.
__global__ static void to_bf16_narrow_kernel(__nv_bfloat16 *dst, const float *src, int cols, int ld, int ldd,
                                             size_t n) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const size_t r = i / cols, c = i % cols;
    dst[r * ldd + c] = __float2bfloat16_rn(src[r * ld + c]);
}

static void to_bf16_rows(__nv_bfloat16 *dst, int ldd, const float *src, int ld, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    if (cols < 128) {
        const size_t n = (size_t)rows * cols;
        to_bf16_narrow_kernel<<<(unsigned)((n + 255) / 256), 256>>>(dst, src, cols, ld, ldd, n);
    } else {
        to_bf16_dense_kernel<<<rows, cols >= 512 ? 256 : 128>>>(dst, src, cols, ld, ldd);
    }
    CUDA_CHECK_LAUNCH();
}
static void to_bf16_dense(__nv_bfloat16 *dst, const float *src, int rows, int cols, int ld) {
    to_bf16_rows(dst, cols, src, ld, rows, cols);
}

// dst [rows, cols] (row stride ldd) = float32(src [rows, cols] with row stride ld): a block per row
__global__ static void from_bf16_rows_kernel(float *dst, const __nv_bfloat16 *src, int cols, int ld, int ldd) {
    const __nv_bfloat16 *s = src + (size_t)blockIdx.x * ld;
    float *d = dst + (size_t)blockIdx.x * ldd;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = __bfloat162float(s[c]);
}

extern "C" void convert_rows_cuda(mat dst, mat src, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    if (mat_h(dst) && mat_f(src)) {
        to_bf16_rows((__nv_bfloat16 *)mat_h(dst), dst.ld, mat_f(src), src.ld, rows, cols);
    } else if (mat_f(dst) && mat_h(src)) {
        from_bf16_rows_kernel<<<rows, cols >= 512 ? 256 : 128>>>(mat_f(dst), (const __nv_bfloat16 *)mat_h(src), cols,
                                                               src.ld, dst.ld);
        CUDA_CHECK_LAUNCH();
    } else { // the same dtype: a strided copy
        const size_t eb = mat_elem_bytes(dst.dt);
        CUDA_CHECK(cudaMemcpy2DAsync(dst.p, eb * dst.ld, src.p, eb * src.ld, eb * cols, rows, cudaMemcpyDeviceToDevice,
                                     cudaStreamPerThread));
    }
}

// A dense bf16 copy of a column-major float32 matrix (rows x cols, leading dimension ld) from the stream-ordered
// pool (256-byte aligned); bf16_free gives it back. A dense matrix inside the parameter buffer comes from the
// weights' bf16 shadow instead while AdamW keeps it current (weights16.cu: the same bits, no pass).
static __nv_bfloat16 *bf16_copy(const float *src, int rows, int cols, int ld) {
    w16_want();
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(cudaStreamPerThread, &capturing));
    if (ld == rows && capturing == cudaStreamCaptureStatusNone) { // a captured graph outlives the shadow's validity
        const uint16_t *s = w16_lookup(src, (size_t)rows * cols);
        if (s && (uintptr_t)s % 16 == 0) return (__nv_bfloat16 *)s;
    }
    __nv_bfloat16 *p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(__nv_bfloat16) * (size_t)rows * cols, cudaStreamPerThread));
    to_bf16_dense(p, src, cols, rows, ld);
    return p;
}
static void bf16_free(__nv_bfloat16 *p) {
    if (!w16_owns(p)) CUDA_CHECK(cudaFreeAsync(p, cudaStreamPerThread));
}

// C = alpha * op(A) op(B) + beta * C with bf16 A16, B16 (column-major, leading dimensions lda, ldb) and float32
// accumulation and output.
static void lt_gemm_bf16(bool trans_a, bool trans_b, int m, int n, int k, const __nv_bfloat16 *A16, int lda,
                         const __nv_bfloat16 *B16, int ldb, float *C, int ldc, float beta) {
    lt_init();
    const float alpha = 1.0f;
    const lt_plan *p = lt_plan_get(trans_a, trans_b, m, n, k, lda, ldb, ldc, ptr_align(A16), ptr_align(B16),
                                   ptr_align(C), CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_32F);
    LT_CHECK(cublasLtMatmul(lt_handle, p->op, &alpha, A16, p->la, B16, p->lb, &beta, C, p->lc, C, p->lc, &p->algo,
                            lt_workspace, lt_workspace_bytes, cudaStreamPerThread));
}

// Whether a mixed-precision product runs on bf16 copies of its operands: not for skinny products (decode),
// where reading the float32 weights once beats converting them. Dimensions from 32 that are multiples of 8 (dt_proj's
// rank, 48 at d_model 768: its products in training) keep the tensor cores' aligned kernels and take copies too.
static bool bf16_copies(int m, int n, int k) {
    const int lo = m < n ? (m < k ? m : k) : (n < k ? n : k);
    return bf16_convert() && (lo >= 64 || (lo >= 32 && m % 8 == 0 && n % 8 == 0 && k % 8 == 0));
}

// D = C = alpha * op(A) op(B) + beta * C, all column-major float32: op(A) is m x k, op(B) k x n. `compute` is
// CUBLAS_COMPUTE_32F (float32 throughout) or CUBLAS_COMPUTE_32F_FAST_16BF (the inputs rounded to bf16 for the
// tensor cores, products accumulated in float32: mixed precision).
// The product on the float32 operands as they are (FAST_16BF rounds them inside the GEMM).
static void lt_gemm_direct(bool trans_a, bool trans_b, int m, int n, int k, const float *A, int lda, const float *B,
                           int ldb, float *C, int ldc, float beta, cublasComputeType_t compute) {
    lt_init();
    const float alpha = 1.0f;
    const lt_plan *p = lt_plan_get(trans_a, trans_b, m, n, k, lda, ldb, ldc, ptr_align(A), ptr_align(B), ptr_align(C),
                                   compute, CUDA_R_32F, CUDA_R_32F);
    LT_CHECK(cublasLtMatmul(lt_handle, p->op, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, C, p->lc, &p->algo,
                            lt_workspace, lt_workspace_bytes, cudaStreamPerThread));
}

static void lt_gemm(bool trans_a, bool trans_b, int m, int n, int k, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, float beta, cublasComputeType_t compute) {
    if (compute == CUBLAS_COMPUTE_32F_FAST_16BF && bf16_copies(m, n, k)) {
        __nv_bfloat16 *a16 = bf16_copy(A, trans_a ? k : m, trans_a ? m : k, lda),
                      *b16 = bf16_copy(B, trans_b ? n : k, trans_b ? k : n, ldb);
        lt_gemm_bf16(trans_a, trans_b, m, n, k, a16, trans_a ? k : m, b16, trans_b ? n : k, C, ldc, beta);
        bf16_free(a16), bf16_free(b16);
        return;
    }
    lt_gemm_direct(trans_a, trans_b, m, n, k, A, lda, B, ldb, C, ldc, beta, compute);
}

#define F32 CUBLAS_COMPUTE_32F
#define BF16 CUBLAS_COMPUTE_32F_FAST_16BF

// y[M,N] = beta y + x[M,K] w[N,K]^T  <=>  y^T (N x M) = w (op T of stored K x N) * x^T (K x M)
static void xwT_f32(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K,
                                float beta) {
    lt_gemm(true, false, N, M, K, w, K, x, ldx, y, ldy, beta, F32);
}

// dx[M,K] = beta dx + dy[M,N] w[N,K]  <=>  dx^T (K x M) = w^T (stored K x N) * dy^T (stored N x M)
static void dyw_f32(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K,
                                float beta) {
    lt_gemm(false, false, K, M, N, w, K, dy, lddy, dx, lddx, beta, F32);
}

// dw[N,K] += dy[M,N]^T x[M,K]  <=>  dw^T (K x N) += x^T (stored K x M) * dy (op T of stored N x M)
static void dw_acc_f32(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K) {
    lt_gemm(false, true, K, N, M, x, ldx, dy, lddy, dw, K, 1.0f, F32);
}

static void bwd_f32(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x,
                                int ldx, const float *w, int M, int N, int K) {
    if (dx) dyw_f32(dx, lddx, dy, lddy, w, M, N, K, beta);
    if (dw) dw_acc_f32(dw, dy, lddy, x, ldx, M, N, K);
}

// The same with bf16 tensor-core inputs and float32 accumulation and output (backend_cuda_bf16).
// Decode-sized batches (up to a few hundred rows) read the float32 weights once through FAST_16BF: rounding every
// weight into a copy each step would cost more than the product.
#define BF16_COPY_MIN_ROWS 256

static void xwT_bf16(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K,
                                     float beta) {
    if (M < BF16_COPY_MIN_ROWS) lt_gemm_direct(true, false, N, M, K, w, K, x, ldx, y, ldy, beta, BF16);
    else lt_gemm(true, false, N, M, K, w, K, x, ldx, y, ldy, beta, BF16);
}

static void dyw_bf16(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N,
                                     int K, float beta) {
    lt_gemm(false, false, K, M, N, w, K, dy, lddy, dx, lddx, beta, BF16);
}

static void dw_acc_bf16(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N,
                                        int K) {
    lt_gemm(false, true, K, N, M, x, ldx, dy, lddy, dw, K, 1.0f, BF16);
}

// Both gradients from one bf16 copy of dy (the pair of products above in their column-major form: dx^T = w^T dy^T
// and dw^T += x^T dy); skinny products, or one gradient alone, take the single calls.
static void bwd_bf16(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy,
                                     const float *x, int ldx, const float *w, int M, int N, int K) {
    if (!bf16_copies(K, M, N) || !dx || !dw) {
        if (dx) dyw_bf16(dx, lddx, dy, lddy, w, M, N, K, beta);
        if (dw) dw_acc_bf16(dw, dy, lddy, x, ldx, M, N, K);
        return;
    }
    lt_init();
    __nv_bfloat16 *dy16 = bf16_copy(dy, N, M, lddy), *w16 = bf16_copy(w, K, N, K), *x16 = bf16_copy(x, K, M, ldx);
    lt_gemm_bf16(false, false, K, M, N, w16, K, dy16, N, dx, lddx, beta); // dx^T (K x M) = w^T (K x N) dy^T (N x M)
    lt_gemm_bf16(false, true, K, N, M, x16, K, dy16, N, dw, K, 1.0f);    // dw^T (K x N) += x^T (K x M) (dy^T)^T
    bf16_free(dy16), bf16_free(w16), bf16_free(x16);
}

// ---- a bf16 activation operand x16 [M, K] (row stride ldx): the column-major K x M matrix with leading dimension ldx

// float32: x widened into a dense copy, then the float32 product
__global__ static void from_bf16_dense_kernel(float *dst, const __nv_bfloat16 *src, int cols, int ld) {
    const __nv_bfloat16 *s = src + (size_t)blockIdx.x * ld;
    float *d = dst + (size_t)blockIdx.x * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = __bfloat162float(s[c]);
}

static float *widen(const uint16_t *x16, int ldx, int M, int K) {
    float *x;
    CUDA_CHECK(cudaMallocAsync((void **)&x, sizeof(float) * (size_t)M * K, cudaStreamPerThread));
    if (M > 0 && K > 0) {
        from_bf16_dense_kernel<<<M, K >= 512 ? 256 : 128>>>(x, (const __nv_bfloat16 *)x16, K, ldx);
        CUDA_CHECK_LAUNCH();
    }
    return x;
}

static void xwT_x16_f32(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N,
                                    int K, float beta) {
    float *x = widen(x16, ldx, M, K);
    xwT_f32(y, ldy, x, K, w, M, N, K, beta);
    CUDA_CHECK(cudaFreeAsync(x, cudaStreamPerThread));
}

static void dw_acc_x16_f32(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N,
                                       int K) {
    float *x = widen(x16, ldx, M, K);
    dw_acc_f32(dw, dy, lddy, x, K, M, N, K);
    CUDA_CHECK(cudaFreeAsync(x, cudaStreamPerThread));
}

// bf16: x16 read as it is (tensor-core kernels want 16-byte aligned rows: a dense copy where they are not, never
// in the model), the other operand rounded into a bf16 copy
static const __nv_bfloat16 *aligned_x16(const uint16_t *x16, int *ldx, int M, int K, __nv_bfloat16 **copy) {
    *copy = NULL;
    if ((uintptr_t)x16 % 16 == 0 && *ldx % 8 == 0) return (const __nv_bfloat16 *)x16;
    CUDA_CHECK(cudaMallocAsync((void **)copy, sizeof(__nv_bfloat16) * (size_t)M * K, cudaStreamPerThread));
    CUDA_CHECK(cudaMemcpy2DAsync(*copy, sizeof(uint16_t) * K, x16, sizeof(uint16_t) * *ldx, sizeof(uint16_t) * K, M,
                                 cudaMemcpyDeviceToDevice, cudaStreamPerThread));
    *ldx = K;
    return *copy;
}

static void xwT_x16_bf16(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N,
                                         int K, float beta) {
    __nv_bfloat16 *xc, *w16 = bf16_copy(w, K, N, K); // y^T (N x M) = w (op T of stored K x N) * x^T (K x M)
    const __nv_bfloat16 *x = aligned_x16(x16, &ldx, M, K, &xc);
    lt_gemm_bf16(true, false, N, M, K, w16, K, x, ldx, y, ldy, beta);
    bf16_free(w16);
    if (xc) bf16_free(xc);
}

static void dw_acc_x16_bf16(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M,
                                            int N, int K) {
    __nv_bfloat16 *xc, *dy16 = bf16_copy(dy, N, M, lddy); // dw^T (K x N) += x^T (K x M) * dy (op T of stored N x M)
    const __nv_bfloat16 *x = aligned_x16(x16, &ldx, M, K, &xc);
    lt_gemm_bf16(false, true, K, N, M, x, ldx, dy16, N, dw, K, 1.0f);
    bf16_free(dy16);
    if (xc) bf16_free(xc);
}

// ---- a bf16 output: y16 = bf16(x w^T + bias)

// y16 [rows, N] (ldy) = bf16(y [rows, N] dense + bias): a block per row
__global__ static void round_rows_kernel(__nv_bfloat16 *y16, int ldy, const float *y, const float *bias, int N) {
    const float *s = y + (size_t)blockIdx.x * N;
    __nv_bfloat16 *d = y16 + (size_t)blockIdx.x * ldy;
    for (int c = threadIdx.x; c < N; c += blockDim.x) d[c] = __float2bfloat16_rn(bias ? s[c] + bias[c] : s[c]);
}

// The product in float32 (through the table's GEMM), then the bias and the rounding in one pass.
static void y16_through_f32(void (*xwT)(float *, int, const float *, int, const float *, int, int, int, float),
                            uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                            const float *bias, int M, int N, int K) {
    float *y, *xw = x16 ? widen(x16, ldx, M, K) : NULL;
    CUDA_CHECK(cudaMallocAsync((void **)&y, sizeof(float) * (size_t)M * N, cudaStreamPerThread));
    xwT(y, N, xw ? xw : x, xw ? K : ldx, w, M, N, K, 0.0f);
    if (xw) CUDA_CHECK(cudaFreeAsync(xw, cudaStreamPerThread));
    if (M > 0 && N > 0) {
        round_rows_kernel<<<M, N >= 512 ? 256 : 128>>>((__nv_bfloat16 *)y16, ldy, y, bias, N);
        CUDA_CHECK_LAUNCH();
    }
    CUDA_CHECK(cudaFreeAsync(y, cudaStreamPerThread));
}

static void xwT_y16_f32(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx,
                                    const float *w, const float *bias, int M, int N, int K) {
    y16_through_f32(xwT_f32, y16, ldy, x, x16, ldx, w, bias, M, N, K);
}

// bf16: cuBLASLt writes the bf16 output itself (no bias; with a bias, or a skinny product, through float32)
static void xwT_y16_bf16(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx,
                                         const float *w, const float *bias, int M, int N, int K) {
    if (bias || !bf16_copies(N, M, K) || (uintptr_t)y16 % 16 || ldy % 8) {
        y16_through_f32(xwT_bf16, y16, ldy, x, x16, ldx, w, bias, M, N, K);
        return;
    }
    lt_init();
    __nv_bfloat16 *xc = NULL, *w16 = bf16_copy(w, K, N, K);
    const __nv_bfloat16 *xb;
    if (x16) xb = aligned_x16(x16, &ldx, M, K, &xc);
    else xb = xc = bf16_copy(x, K, M, ldx), ldx = K;
    const float alpha = 1.0f, beta = 0.0f; // y^T (N x M) = w (op T of stored K x N) * x^T (K x M)
    const lt_plan *p = lt_plan_get(true, false, N, M, K, K, ldx, ldy, ptr_align(w16), ptr_align(xb), ptr_align(y16),
                                   CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_16BF);
    LT_CHECK(cublasLtMatmul(lt_handle, p->op, &alpha, w16, p->la, xb, p->lb, &beta, y16, p->lc, y16, p->lc, &p->algo,
                            lt_workspace, lt_workspace_bytes, cudaStreamPerThread));
    bf16_free(w16);
    if (xc) bf16_free(xc);
}

// ---- dy and x each in float32 or bf16: both gradients of a layer

// dx16: the input gradient in float32 through dx_via (the table's bwd16 path with dx), then rounded row by row.
typedef void (*bwd16_fn)(float *, uint16_t *, int, float, float *, const float *, const uint16_t *, int, const float *,
                         const uint16_t *, int, const float *, int, int, int);
static void dx16_through_f32(bwd16_fn f, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                             const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx,
                             const float *w, int M, int N, int K) {
    float *t; // (dx16 widened when beta != 0)
    if (beta != 0.0f) t = widen(dx16, lddx, M, K);
    else CUDA_CHECK(cudaMallocAsync((void **)&t, sizeof(float) * (size_t)M * K, cudaStreamPerThread));
    f(t, NULL, K, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M, N, K);
    if (M > 0 && K > 0) {
        round_rows_kernel<<<M, K >= 512 ? 256 : 128>>>((__nv_bfloat16 *)dx16, lddx, t, NULL, K);
        CUDA_CHECK_LAUNCH();
    }
    CUDA_CHECK(cudaFreeAsync(t, cudaStreamPerThread));
}

static void bwd16_f32(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                                  const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx,
                                  const float *w, int M, int N, int K) {
    if (dx16)
        return dx16_through_f32(bwd16_f32, dx16, lddx, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M, N, K);
    float *dyw = dy16 ? widen(dy16, lddy, M, N) : NULL, *xw = x16 && dw ? widen(x16, ldx, M, K) : NULL;
    bwd_f32(dx, lddx, beta, dw, dyw ? dyw : dy, dyw ? N : lddy, xw ? xw : x, xw ? K : ldx, w, M, N, K);
    if (dyw) CUDA_CHECK(cudaFreeAsync(dyw, cudaStreamPerThread));
    if (xw) CUDA_CHECK(cudaFreeAsync(xw, cudaStreamPerThread));
}

static void bwd16_bf16(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy,
                                       const uint16_t *dy16, int lddy, const float *x, const uint16_t *x16, int ldx,
                                       const float *w, int M, int N, int K) {
    // dx16: the dx product writes bf16 itself where its rows are 16-byte aligned (else through float32)
    const bool dx16_direct = dx16 && (uintptr_t)dx16 % 16 == 0 && lddx % 8 == 0;
    if (!bf16_copies(K, M, N) || (dx16 && !dx16_direct)) {
        if (dx16)
            return dx16_through_f32(bwd16_bf16, dx16, lddx, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M,
                                    N, K);
        // skinny: through the float32-operand path
        float *dyw = dy16 ? widen(dy16, lddy, M, N) : NULL, *xw = x16 && dw ? widen(x16, ldx, M, K) : NULL;
        bwd_bf16(dx, lddx, beta, dw, dyw ? dyw : dy, dyw ? N : lddy, xw ? xw : x, xw ? K : ldx, w, M, N, K);
        if (dyw) CUDA_CHECK(cudaFreeAsync(dyw, cudaStreamPerThread));
        if (xw) CUDA_CHECK(cudaFreeAsync(xw, cudaStreamPerThread));
        return;
    }
    __nv_bfloat16 *dyc = NULL, *xc = NULL, *w16 = dx || dx16 ? bf16_copy(w, K, N, K) : NULL;
    const __nv_bfloat16 *dyb, *xb = NULL;
    if (dy16) dyb = aligned_x16(dy16, &lddy, M, N, &dyc);
    else dyb = dyc = bf16_copy(dy, N, M, lddy), lddy = N;
    if (dw && x16) xb = aligned_x16(x16, &ldx, M, K, &xc); // x only for dw
    else if (dw) xb = xc = bf16_copy(x, K, M, ldx), ldx = K;
    if (dx) lt_gemm_bf16(false, false, K, M, N, w16, K, dyb, lddy, dx, lddx, beta); // dx^T = w^T (K x N) dy^T (N x M)
    if (dx16) { // the same product, bf16 out
        lt_init();
        const float alpha = 1.0f; // dx16 = bf16(beta dx16 + the product), in float32
        const lt_plan *p = lt_plan_get(false, false, K, M, N, K, lddy, lddx, ptr_align(w16), ptr_align(dyb),
                                       ptr_align(dx16), CUBLAS_COMPUTE_32F, CUDA_R_16BF, CUDA_R_16BF);
        LT_CHECK(cublasLtMatmul(lt_handle, p->op, &alpha, w16, p->la, dyb, p->lb, &beta, dx16, p->lc, dx16, p->lc,
                                &p->algo, lt_workspace, lt_workspace_bytes, cudaStreamPerThread));
    }
    if (dw) lt_gemm_bf16(false, true, K, N, M, xb, ldx, dyb, lddy, dw, K, 1.0f);    // dw^T += x^T (K x M) (dy^T)^T
    if (w16) bf16_free(w16);
    if (dyc) bf16_free(dyc);
    if (xc) bf16_free(xc);
}

// ---- the ops: one matmul_xwT and one matmul_bwd per table over every operand form (ops_list.h), each form sent to the
// kernel path above that it has always taken (so that the numbers stay those of the twin ops these replaced)

typedef struct {
    void (*xwT)(float *, int, const float *, int, const float *, int, int, int, float);
    void (*xwT_x16)(float *, int, const uint16_t *, int, const float *, int, int, int, float);
    void (*xwT_y16)(uint16_t *, int, const float *, const uint16_t *, int, const float *, const float *, int, int, int);
    void (*bwd)(float *, int, float, float *, const float *, int, const float *, int, const float *, int, int, int);
    void (*dw_acc_x16)(float *, const float *, int, const uint16_t *, int, int, int, int);
    bwd16_fn bwd16;
} gemm_paths;

static const gemm_paths paths_f32 = {xwT_f32, xwT_x16_f32, xwT_y16_f32, bwd_f32, dw_acc_x16_f32, bwd16_f32};
static const gemm_paths paths_bf16 = {xwT_bf16, xwT_x16_bf16, xwT_y16_bf16, bwd_bf16, dw_acc_x16_bf16, bwd16_bf16};

static void xwT_any(const gemm_paths *P, mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta) {
    if (w.dt != MAT_F32 || (mat_h(y) && beta != 0.0f)) {
        fprintf(stderr, "ssm: the CUDA matmul_xwT takes float32 weights and a bf16 output only with beta 0\n");
        exit(2);
    }
    if (mat_h(y)) { // the bias added before the rounding
        P->xwT_y16(mat_h(y), y.ld, mat_f(x), mat_h(x), x.ld, mat_f(w), bias, M, N, K);
        return;
    }
    if (mat_h(x)) P->xwT_x16(mat_f(y), y.ld, mat_h(x), x.ld, mat_f(w), M, N, K, beta);
    else P->xwT(mat_f(y), y.ld, mat_f(x), x.ld, mat_f(w), M, N, K, beta);
    if (bias) bias_add_cuda(mat_f(y), y.ld, bias, M, N);
}

static void bwd_any(const gemm_paths *P, mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N,
                    int K) {
    if (!mat_h(dx) && !mat_h(dy) && !mat_h(x))
        P->bwd(mat_f(dx), dx.ld, beta, dw, mat_f(dy), dy.ld, mat_f(x), x.ld, w, M, N, K);
    else if (!dx.p && mat_f(dy) && mat_h(x)) // dw alone from a bf16 activation
        P->dw_acc_x16(dw, mat_f(dy), dy.ld, mat_h(x), x.ld, M, N, K);
    else
        P->bwd16(mat_f(dx), mat_h(dx), dx.ld, beta, dw, mat_f(dy), mat_h(dy), dy.ld, mat_f(x), mat_h(x), x.ld, w, M, N,
                 K);
}

extern "C" void matmul_xwT_cuda(mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta) {
    xwT_any(&paths_f32, y, x, w, bias, M, N, K, beta);
}
extern "C" void matmul_xwT_cuda_bf16(mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta) {
    xwT_any(&paths_bf16, y, x, w, bias, M, N, K, beta);
}
extern "C" void matmul_bwd_cuda(mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N, int K) {
    bwd_any(&paths_f32, dx, beta, dw, dy, x, w, M, N, K);
}
extern "C" void matmul_bwd_cuda_bf16(mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N,
                                     int K) {
    bwd_any(&paths_bf16, dx, beta, dw, dy, x, w, M, N, K);
}
