/* Linear layers on the CPU: GEMMs through OpenBLAS (the matmul_* ops of ops_list.h) and their bias add/gradient. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <cblas.h>
#include <immintrin.h>
#include <string.h>

void cpu_matmul_xwT(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta) {
    if (M == 1) { /* decode of one sequence: a matrix-vector product, bound by reading w once */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, beta, y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, ldx, w, K, beta, y, ldy);
}

void cpu_matmul_dyw(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K, float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, lddy, w, K, beta, dx, lddx);
}

void cpu_matmul_dw_acc(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, lddy, x, ldx, 1.0f, dw, K);
}

void cpu_matmul_xwT_x16(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K,
                        float beta) {
    float *x = host_f32_from_bf16_rows(x16, ldx, M, K);
    cpu_matmul_xwT(y, ldy, x, K, w, M, N, K, beta);
    free(x);
}

void cpu_matmul_dw_acc_x16(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N, int K) {
    float *x = host_f32_from_bf16_rows(x16, ldx, M, K);
    cpu_matmul_dw_acc(dw, dy, lddy, x, K, M, N, K);
    free(x);
}

void cpu_matmul_bwd16(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy, const uint16_t *dy16,
                      int lddy, const float *x, const uint16_t *x16, int ldx, const float *w, int M, int N, int K) {
    if (dx16) { /* dx in float32 (from dx16 widened when beta != 0), then rounded */
        float *t =
            beta != 0.0f ? host_f32_from_bf16_rows(dx16, lddx, (size_t)M, K) : xmalloc(sizeof(float) * (size_t)M * K);
        cpu_matmul_bwd16(t, NULL, K, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M, N, K);
#pragma omp parallel for schedule(static)
        for (int r = 0; r < M; r++)
            host_bf16_from_f32(dx16 + (size_t)r * lddx, t + (size_t)r * K, (size_t)K);
        free(t);
        return;
    }
    float *dyw = dy16 ? host_f32_from_bf16_rows(dy16, lddy, M, N) : NULL;
    float *xw = x16 && dw ? host_f32_from_bf16_rows(x16, ldx, M, K) : NULL;
    cpu_matmul_bwd(dx, lddx, beta, dw, dyw ? dyw : dy, dyw ? N : lddy, xw ? xw : x, xw ? K : ldx, w, M, N, K);
    free(dyw);
    free(xw);
}

void cpu_matmul_xwT_y16(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                        const float *bias, int M, int N, int K) {
    float *y = xmalloc(sizeof(float) * (size_t)M * N), *xw = x16 ? host_f32_from_bf16_rows(x16, ldx, M, K) : NULL;
    cpu_matmul_xwT(y, N, xw ? xw : x, xw ? K : ldx, w, M, N, K, 0.0f);
    free(xw);
    if (bias) cpu_bias_add(y, N, bias, M, N);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < M; r++)
        host_bf16_from_f32(y16 + (size_t)r * ldy, y + (size_t)r * N, (size_t)N);
    free(y);
}

void cpu_matmul_bwd(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x, int ldx,
                    const float *w, int M, int N, int K) {
    if (dx) cpu_matmul_dyw(dx, lddx, dy, lddy, w, M, N, K, beta);
    if (dw) cpu_matmul_dw_acc(dw, dy, lddy, x, ldx, M, N, K);
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

#define BF16_MAX_M 16 /* rows of x handled per pass over w: decode batches up to 16 read w once */

/* y[n] for one x row (batch-1 decode): 4 weight rows at a time, so each x vector loaded from L1 feeds
 * 4 independent FMA chains while the weights stream in. */
static void gemv_bf16(float *y, const float *x, const uint16_t *w16, int N, int K, float beta) {
    const int K16 = K / VW * VW;
#pragma omp parallel for schedule(static)
    for (int n0 = 0; n0 < N; n0 += 4) {
        const int nn = imin(4, N - n0);
        vf acc[4] = {vf_set1(0.0f), vf_set1(0.0f), vf_set1(0.0f), vf_set1(0.0f)};
        const uint16_t *wr[4];
        for (int j = 0; j < 4; j++) wr[j] = w16 + (size_t)(n0 + (j < nn ? j : 0)) * K;
        for (int k = 0; k < K16; k += VW) {
            const vf xv = vf_load(x + k);
            acc[0] += bf16_load16(wr[0] + k) * xv;
            acc[1] += bf16_load16(wr[1] + k) * xv;
            acc[2] += bf16_load16(wr[2] + k) * xv;
            acc[3] += bf16_load16(wr[3] + k) * xv;
        }
        for (int j = 0; j < nn; j++) {
            float sum = vf_sum(acc[j]);
            for (int k = K16; k < K; k++) sum += bf16_to_f32(wr[j][k]) * x[k];
            y[n0 + j] = beta == 0.0f ? sum : beta * y[n0 + j] + sum;
        }
    }
}

void cpu_matmul_xwT_bf16(float *y, int ldy, const float *x, int ldx, const uint16_t *w16, int M, int N, int K,
                         float beta) {
    if (M == 1) {
        gemv_bf16(y, x, w16, N, K, beta);
        return;
    }
    for (int m0 = 0; m0 < M; m0 += BF16_MAX_M) {
        const int mn = imin(BF16_MAX_M, M - m0), K16 = K / VW * VW;
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const uint16_t *wr = w16 + (size_t)n * K;
            vf acc[BF16_MAX_M];
            for (int m = 0; m < mn; m++) acc[m] = vf_set1(0.0f);
            for (int k = 0; k < K16; k += VW) {
                const vf wv = bf16_load16(wr + k);
                for (int m = 0; m < mn; m++) acc[m] += wv * vf_load(x + (size_t)(m0 + m) * ldx + k);
            }
            for (int m = 0; m < mn; m++) {
                float sum = vf_sum(acc[m]);
                for (int k = K16; k < K; k++) sum += bf16_to_f32(wr[k]) * x[(size_t)(m0 + m) * ldx + k];
                float *out = y + (size_t)(m0 + m) * ldy + n;
                *out = beta == 0.0f ? sum : beta * *out + sum;
            }
        }
    }
}

float *host_f32_from_bf16_rows(const uint16_t *src, int ld, size_t rows, int cols) {
    float *x = xmalloc(sizeof(float) * rows * cols);
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++)
        host_f32_from_bf16(x + r * cols, src + r * ld, (size_t)cols);
    return x;
}

void cpu_round_bf16_rows(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        host_bf16_from_f32(dst + (size_t)r * ldd, src + (size_t)r * lds, (size_t)cols);
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
