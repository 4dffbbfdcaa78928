/* Linear layers on the CPU: GEMMs through OpenBLAS (the matmul_* ops of ops_list.h) and their bias add/gradient. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

/* y = beta*y + x w^T, all float32 */
static void xwT_f32(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta) {
    if (M == 1) { /* decode of one sequence: a matrix-vector product, bound by reading w once */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, beta, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, ldx, w, K, beta, y, ldy);
}

static void xwT_bf16w(float *y, int ldy, const float *x, int ldx, const uint16_t *w, const float *scale, int M, int N,
                      int K, float beta);
static void xwT_w8(float *y, int ldy, const float *x, int ldx, const int8_t *w, const float *scale, int M, int N, int K,
                   float beta);

/* The bf16 operands are widened into float32 copies first, and a bf16 result rounded from float32: the CPU runs
 * these forms to test the lean path (and the decode's bf16 weights, read as they are by xwT_w16). */
void cpu_matmul_xwT(mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta) {
    float *xw = mat_h(x) ? host_f32_from_bf16_rows(mat_h(x), x.ld, M, K) : NULL;
    const float *xf = xw ? xw : mat_f(x);
    const int ldx = xw ? K : x.ld;
    if (mat_h(y)) { /* the product in float32, the bias, then the rounding */
        float *t = xmalloc(sizeof(float) * ((size_t)M * N + 1));
        cpu_matmul_xwT(mat_f32(t, N), mat_f32(xf, ldx), w, bias, M, N, K, 0.0f);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < M; r++) host_bf16_from_f32(mat_h(y) + (size_t)r * y.ld, t + (size_t)r * N, (size_t)N);
        free(t);
    } else if (mat_h(w)) {
        xwT_bf16w(mat_f(y), y.ld, xf, ldx, mat_h(w), NULL, M, N, K, beta);
    } else if (mat_q(w)) {
        xwT_w8(mat_f(y), y.ld, xf, ldx, mat_q(w), w.scale, M, N, K, beta);
    } else {
        xwT_f32(mat_f(y), y.ld, xf, ldx, mat_f(w), M, N, K, beta);
    }
    if (bias && mat_f(y)) cpu_bias_add(mat_f(y), y.ld, bias, M, N);
    free(xw);
}

void cpu_matmul_bwd(mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N, int K) {
    if (mat_h(dx)) { /* dx in float32 (from dx widened when beta != 0), then rounded */
        float *t = beta != 0.0f ? host_f32_from_bf16_rows(mat_h(dx), dx.ld, (size_t)M, K)
                                : xmalloc(sizeof(float) * ((size_t)M * K + 1));
        cpu_matmul_bwd(mat_f32(t, K), beta, dw, dy, x, w, M, N, K);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < M; r++) host_bf16_from_f32(mat_h(dx) + (size_t)r * dx.ld, t + (size_t)r * K, (size_t)K);
        free(t);
        return;
    }
    float *dyw = mat_h(dy) ? host_f32_from_bf16_rows(mat_h(dy), dy.ld, M, N) : NULL;
    float *xw = mat_h(x) && dw ? host_f32_from_bf16_rows(mat_h(x), x.ld, M, K) : NULL;
    const float *dyf = dyw ? dyw : mat_f(dy), *xf = xw ? xw : mat_f(x);
    const int lddy = dyw ? N : dy.ld, ldx = xw ? K : x.ld;
    if (dx.p) /* dx = beta dx + dy w */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dyf, lddy, w, K, beta, mat_f(dx), dx.ld);
    if (dw) /* dw += dy^T x */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dyf, lddy, xf, ldx, 1.0f, dw, K);
    free(dyw);
    free(xw);
}

void cpu_bias_add(float *y, int ldy, const float *bias, int rows, int N) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < N; j++) y[(size_t)r * ldy + j] += bias[j];
}

void cpu_bias_grad_acc(float *db, const float *dy, int lddy, int rows, int N) {
    /* columns split across threads, rows in order inside: deterministic, no reduction */
#pragma omp parallel for schedule(static)
    for (int j0 = 0; j0 < N; j0 += 64)
        for (int r = 0; r < rows; r++)
            for (int j = j0; j < N && j < j0 + 64; j++) db[j] += dy[(size_t)r * lddy + j];
}

typedef uint16_t vh __attribute__((vector_size(VW * 2), aligned(2)));
typedef uint32_t vu __attribute__((vector_size(VW * 4), aligned(4)));

/* 16 bf16 values widened to float32: a bf16 is the upper half of the float32 with the same value. */
static inline vf bf16_load16(const uint16_t *p) {
#if defined(__AVX512F__) && VW == 16 /* one vpmovzxwd where the generic form takes four instructions */
    __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
    vf v;
    memcpy(&v, &u, sizeof v);
    return v;
#else
    vh h;
    memcpy(&h, p, sizeof h);
    return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define LOWP_MAX_M 16 /* rows of x handled per pass over w: decode batches up to 16 read w once */

/* acc[0..3] (vf) = the dot products of x [K16] with the 4 weight rows wr[0..3], 16 lanes each (lane i sums the
 * elements k = i mod 16). Generic: vf arithmetic, each 16 weights widened by LOAD16. With AVX2 but not AVX-512, GCC
 * keeps arrays of 64-byte vectors in memory and turns the widening into scalar code (bf16 and int8 decode ran slower
 * than float32 there): the same lanes as pairs of 8-wide registers, widened by WIDEN2, the same FMAs in the same
 * order, so the same bits. */
#if defined(__AVX2__) && !defined(__AVX512F__) && VW == 16
#define LOWP_DOT4(acc, wr, x, K16, LOAD16, WIDEN2)                                                                   \
    do {                                                                                                           \
        __m256 lo[4], hi[4];                                                                                       \
        for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();                                           \
        for (int k = 0; k < (K16); k += 16) {                                                                      \
            const __m256 x0 = _mm256_loadu_ps((x) + k), x1 = _mm256_loadu_ps((x) + k + 8);                        \
            for (int j = 0; j < 4; j++) {                                                                          \
                __m256 w0, w1;                                                                                     \
                WIDEN2((wr)[j] + k, &w0, &w1);                                                                     \
                lo[j] = _mm256_fmadd_ps(w0, x0, lo[j]);                                                            \
                hi[j] = _mm256_fmadd_ps(w1, x1, hi[j]);                                                            \
            }                                                                                                      \
        }                                                                                                          \
        for (int j = 0; j < 4; j++) {                                                                              \
            memcpy(&(acc)[j], &lo[j], sizeof lo[j]);                                                               \
            memcpy((char *)&(acc)[j] + sizeof lo[j], &hi[j], sizeof hi[j]);                                        \
        }                                                                                                          \
    } while (0)
/* acc[0..mn) = the dot products of one weight row wr with x rows 0 .. mn-1 (row stride ldx), in groups of 4 rows
 * (8 registers of sums), each group widening the row again: the same lanes and FMAs as the generic form below. */
#define LOWP_ROWS(acc, wr, x, ldx, mn, K16, LOAD16, WIDEN2)                                                          \
    do {                                                                                                           \
        for (int g = 0; g < (mn); g += 4) {                                                                        \
            const float *xr[4];                                                                                    \
            for (int j = 0; j < 4; j++) xr[j] = (x) + (size_t)(g + imin(j, (mn) - g - 1)) * (ldx);                 \
            __m256 lo[4], hi[4];                                                                                   \
            for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();                                       \
            for (int k = 0; k < (K16); k += 16) {                                                                  \
                __m256 w0, w1;                                                                                     \
                WIDEN2((wr) + k, &w0, &w1);                                                                        \
                for (int j = 0; j < 4; j++) {                                                                      \
                    lo[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[j] + k), lo[j]);                                \
                    hi[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr[j] + k + 8), hi[j]);                            \
                }                                                                                                  \
            }                                                                                                      \
            for (int j = 0; j < 4 && g + j < (mn); j++) {                                                          \
                memcpy(&(acc)[g + j], &lo[j], sizeof lo[j]);                                                       \
                memcpy((char *)&(acc)[g + j] + sizeof lo[j], &hi[j], sizeof hi[j]);                               \
            }                                                                                                      \
        }                                                                                                          \
    } while (0)
static inline void bf16_widen2(const uint16_t *p, __m256 *a, __m256 *b) {
    *a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    *b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 8))), 16));
}
static inline void i8_widen2(const int8_t *p, __m256 *a, __m256 *b) {
    const __m128i q = _mm_loadu_si128((const __m128i *)p);
    *a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    *b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
}
#else
#define LOWP_ROWS(acc, wr, x, ldx, mn, K16, LOAD16, WIDEN2)                                                          \
    do {                                                                                                           \
        for (int m = 0; m < (mn); m++) (acc)[m] = vf_set1(0.0f);                                                   \
        for (int k = 0; k < (K16); k += VW) {                                                                      \
            const vf wv = LOAD16((wr) + k);                                                                        \
            for (int m = 0; m < (mn); m++) (acc)[m] += wv * vf_load((x) + (size_t)m * (ldx) + k);                  \
        }                                                                                                          \
    } while (0)
#define LOWP_DOT4(acc, wr, x, K16, LOAD16, WIDEN2)                                                                   \
    do {                                                                                                           \
        for (int k = 0; k < (K16); k += VW) {                                                                      \
            const vf xv = vf_load((x) + k);                                                                        \
            (acc)[0] += LOAD16((wr)[0] + k) * xv;                                                                  \
            (acc)[1] += LOAD16((wr)[1] + k) * xv;                                                                  \
            (acc)[2] += LOAD16((wr)[2] + k) * xv;                                                                  \
            (acc)[3] += LOAD16((wr)[3] + k) * xv;                                                                  \
        }                                                                                                          \
    } while (0)
#endif

/* The decode GEMMs on low-precision weights w [N, K] of element type T (bf16, or int8 with a float32 scale per row;
 * scale NULL: none), widened 16 at a time by LOAD16 and one at a time by TO_F32, accumulated in float32:
 *   GEMV(y, x, w, scale, N, K, beta): one x row (batch-1 decode), 4 weight rows at a time, so each x vector loaded
 *     from L1 feeds 4 independent FMA chains while the weights stream in;
 *   XWT(y, ldy, x, ldx, w, scale, M, N, K, beta): up to LOWP_MAX_M x rows per pass over w. */
#define DEFINE_LOWP_GEMM(GEMV, XWT, T, LOAD16, TO_F32, WIDEN2)                                                       \
    static void GEMV(float *y, const float *x, const T *w, const float *scale, int N, int K, float beta) {          \
        const int K16 = K / VW * VW;                                                                               \
        _Pragma("omp parallel for schedule(static)") for (int n0 = 0; n0 < N; n0 += 4) {                          \
            const int nn = imin(4, N - n0);                                                                        \
            vf acc[4] = {vf_set1(0.0f), vf_set1(0.0f), vf_set1(0.0f), vf_set1(0.0f)};                              \
            const T *wr[4];                                                                                        \
            for (int j = 0; j < 4; j++) wr[j] = w + (size_t)(n0 + (j < nn ? j : 0)) * K;                           \
            LOWP_DOT4(acc, wr, x, K16, LOAD16, WIDEN2);                                                            \
            for (int j = 0; j < nn; j++) {                                                                         \
                float sum = vf_sum(acc[j]);                                                                        \
                for (int k = K16; k < K; k++) sum += TO_F32(wr[j][k]) * x[k];                                      \
                if (scale) sum *= scale[n0 + j];                                                                   \
                y[n0 + j] = beta == 0.0f ? sum : beta * y[n0 + j] + sum;                                           \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    static void XWT(float *y, int ldy, const float *x, int ldx, const T *w, const float *scale, int M, int N, int K, \
                    float beta) {                                                                                  \
        if (M == 1) {                                                                                              \
            GEMV(y, x, w, scale, N, K, beta);                                                                      \
            return;                                                                                                \
        }                                                                                                          \
        for (int m0 = 0; m0 < M; m0 += LOWP_MAX_M) {                                                               \
            const int mn = imin(LOWP_MAX_M, M - m0), K16 = K / VW * VW;                                            \
            _Pragma("omp parallel for schedule(static)") for (int n = 0; n < N; n++) {                            \
                const T *wr = w + (size_t)n * K;                                                                   \
                vf acc[LOWP_MAX_M];                                                                                \
                LOWP_ROWS(acc, wr, x + (size_t)m0 * ldx, ldx, mn, K16, LOAD16, WIDEN2);                            \
                for (int m = 0; m < mn; m++) {                                                                     \
                    float sum = vf_sum(acc[m]);                                                                    \
                    for (int k = K16; k < K; k++) sum += TO_F32(wr[k]) * x[(size_t)(m0 + m) * ldx + k];            \
                    if (scale) sum *= scale[n];                                                                    \
                    float *out = y + (size_t)(m0 + m) * ldy + n;                                                   \
                    *out = beta == 0.0f ? sum : beta * *out + sum;                                                 \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }

static inline float i8_to_f32(int8_t q) { return (float)q; }

DEFINE_LOWP_GEMM(gemv_bf16, xwT_bf16w, uint16_t, bf16_load16, bf16_to_f32, bf16_widen2)

float *host_f32_from_bf16_rows(const uint16_t *src, int ld, size_t rows, int cols) {
    float *x = xmalloc(sizeof(float) * rows * cols);
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++)
        host_f32_from_bf16(x + r * cols, src + r * ld, (size_t)cols);
    return x;
}

void host_bf16_from_f32_rows(uint16_t *dst, int ld, const float *src, size_t rows, int cols) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++)
        host_bf16_from_f32(dst + r * ld, src + r * cols, (size_t)cols);
}

void cpu_convert_rows(mat dst, mat src, int rows, int cols) {
    const size_t eb = mat_elem_bytes(dst.dt);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        if (mat_h(dst) && mat_f(src))
            host_bf16_from_f32(mat_h(dst) + (size_t)r * dst.ld, mat_f(src) + (size_t)r * src.ld, (size_t)cols);
        else if (mat_f(dst) && mat_h(src))
            host_f32_from_bf16(mat_f(dst) + (size_t)r * dst.ld, mat_h(src) + (size_t)r * src.ld, (size_t)cols);
        else
            memmove((char *)dst.p + r * eb * dst.ld, (const char *)src.p + r * eb * src.ld, eb * cols);
    }
}

void host_f32_from_bf16(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, sizeof u);
    }
}

void host_bf16_from_f32(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], sizeof u);
        if ((u & 0x7fffffff) > 0x7f800000) dst[i] = (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
        else dst[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }
}

/* ---- int8 weights with per-row scales (ssm_model_use_int8): a quarter of float32's bytes to read per step ---- */

typedef int8_t vq __attribute__((vector_size(VW), aligned(1)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4)));

/* 16 int8 values widened to float32 (exactly) */
static inline vf i8_load16(const int8_t *p) {
#if defined(__AVX512F__) && VW == 16 /* vpmovsxbd + vcvtdq2ps */
    return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
#else
    vq q;
    memcpy(&q, p, sizeof q);
    return __builtin_convertvector(__builtin_convertvector(q, vi), vf);
#endif
}

DEFINE_LOWP_GEMM(gemv_i8, xwT_w8, int8_t, i8_load16, i8_to_f32, i8_widen2)

void host_i8_from_f32_rows(int8_t *dst, float *scale, const float *src, size_t rows, int cols) {
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *s = src + r * cols;
        float amax = 0.0f;
        for (int c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(s[c]));
        const float sc = amax > 0.0f ? amax / 127.0f : 1.0f, inv = 1.0f / sc;
        scale[r] = sc;
        for (int c = 0; c < cols; c++) dst[r * cols + c] = (int8_t)lrintf(fminf(127.0f, fmaxf(-127.0f, s[c] * inv)));
    }
}
