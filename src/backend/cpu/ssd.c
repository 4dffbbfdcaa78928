/* Mamba-2's state space dual on the CPU (ssd_args in ops.h): the chunked forward, the backward, the decode step, the
 * sequential definition the tests hold them to, and the gated RMSNorm that follows the SSD in a Mamba-2 layer.
 *
 * The backward (cpu_ssd_bwd) is the chunked forward transposed: GEMMs per (sequence, head) and chunk, the chunk states
 * recomputed by the forward's state passing and their gradients passed back chunk to chunk. cpu_ssd_bwd_ref, the
 * tests' reference, walks the recurrence in reverse, one (sequence, group) per thread, recomputing the states from
 * checkpoints every SSD_BWD_BLOCK steps. Both sum across threads in a fixed order: deterministic. */
#include "backend/cpu/cpu_ops.h"
#include "backend/host_bf16.h"
#include "common.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#define SSD_BWD_BLOCK 64
/* The CPU's chunk: s->chunk (the model's chunk_size), at most this, in the forward and the backward. The result does
 * not depend on the chunk (up to rounding); at mamba2-130m's shape (T 1024, 2 threads, bench/cpu_ssd_bench.c) the
 * forward measured 6.3 / 8.2 / 10.0 / 14.9 / 25.4 ms and the backward 34 / 33 / 36 / 48 / 69 ms at chunks 16 / 32 /
 * 64 / 128 / 256 (the default chunk_size): the L x L products grow with the chunk, the P x N state work shrinks. */
#define SSD_CPU_CHUNK 64

/* dt = clamp(softplus(raw + bias)) of (row, head h); *dsp (when not NULL) = d dt / d raw: the softplus's slope
 * (sigmoid, 1 above torch's threshold 20), 0 where the limit clamps. */
static inline float ssd_dt(const ssd_args *s, size_t row, int h, float *dsp) {
    const float pre = s->dt[row * s->lddt + h] + s->dt_bias[h];
    float dt = pre > 20.0f ? pre : log1pf(expf(pre)), d = pre > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-pre));
    if (dt < s->dt_min) dt = s->dt_min, d = 0.0f;
    else if (dt > s->dt_max) dt = s->dt_max, d = 0.0f;
    if (dsp) *dsp = d;
    return dt;
}

/* C B^T of every chunk, once per group (the heads of a group share B and C, and the product is the largest of the
 * chunk's GEMMs: L x L x N against L x L x P and L x P x N): cb [B, G, nch, Q, Q], chunk c's L x L product at ld Q.
 * The forward and the backward read their head's chunk from it. */
static float *ssd_chunk_cb(const ssd_args *s, int Q, int nch) {
    const size_t QQ = (size_t)Q * Q;
    float *cb = xmalloc((size_t)s->B * s->G * nch * QQ * sizeof(float));
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)s->B * s->G * nch; i++) {
        const int c = (int)(i % nch), g = (int)(i / nch % s->G), b = (int)(i / nch / s->G);
        const int t0 = c * Q, L = t0 + Q <= s->T ? Q : s->T - t0;
        const size_t row0 = (size_t)b * s->T + t0;
        const float *Bc = s->Bm + row0 * s->ldx + (size_t)g * s->N, *Cc = s->Cm + row0 * s->ldx + (size_t)g * s->N;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, s->N, 1.0f, Cc, s->ldx, Bc, s->ldx, 0.0f, cb + i * QQ,
                    Q);
    }
    return cb;
}

/* The recurrence, one step at a time (the definition): per (sequence, head), S [P, N]. */
void cpu_ssd_fwd_ref(const ssd_args *s, float *y, float *state) {
    const int H = s->H, P = s->P, N = s->N, T = s->T, hpg = s->H / s->G;
    const size_t PN = (size_t)P * N;
#pragma omp parallel
    {
        float *own = state ? NULL : xmalloc(PN * sizeof(float));
#pragma omp for schedule(static)
        for (int bh = 0; bh < s->B * H; bh++) {
            const int b = bh / H, h = bh % H, g = h / hpg;
            float *S = state ? state + (size_t)bh * PN : own;
            if (!state) memset(S, 0, PN * sizeof(float));
            const float A = -expf(s->A_log[h]), Dh = s->Dv[h];
            for (int t = 0; t < T; t++) {
                const size_t row = (size_t)b * T + t;
                const float dt = ssd_dt(s, row, h, NULL), e = expf(dt * A);
                const float *x = s->x + row * s->ldx + (size_t)h * P;
                const float *Bv = s->Bm + row * s->ldx + (size_t)g * N, *Cv = s->Cm + row * s->ldx + (size_t)g * N;
                float *yr = y + row * H * P + (size_t)h * P;
                for (int p = 0; p < P; p++) {
                    float *Sp = S + (size_t)p * N, acc = 0.0f;
                    const float xp = dt * x[p];
                    for (int n = 0; n < N; n++) {
                        Sp[n] = e * Sp[n] + xp * Bv[n];
                        acc += Sp[n] * Cv[n];
                    }
                    yr[p] = acc + Dh * x[p];
                }
            }
        }
        free(own);
    }
}

void cpu_ssd_step(const ssd_args *s, float *y, float *state) {
    CHECK(s->T == 1, "ssd_step takes one position (T = %d)", s->T);
    cpu_ssd_fwd_ref(s, y, state);
}

/* ---- the chunked forward ------------------------------------------------------------------------------------- */
/* The state space dual (mamba_ssm's ssd_minimal / _mamba_chunk_scan_combined_fwd), per (sequence, head), chunk by
 * chunk of Q = s->chunk positions with a = the inclusive cumsum of dt A within the chunk:
 *   intra-chunk:  Y = (C B^T o exp(a_i - a_j) dt_j, causal) X           (Q x N)(N x Q) then (Q x Q)(Q x P): GEMMs
 *   from state:   Y += exp(a_i) C S^T                                    (Q x N)(N x P): a GEMM
 *   state:        S = exp(a_last) S + (exp(a_last - a_j) dt_j X_j)^T B   (P x Q)(Q x N): a GEMM
 *   plus D x. The state passes from chunk to chunk as it goes (the inter-chunk scan). One thread per (sequence, head),
 *   so C B^T is formed once per head, not once per group (H/G times the work where G < H; a per-group pass would share
 *   it). exp(a_i - a_j) <= 1 for j <= i (a decreases), so no term overflows. */
void cpu_ssd_fwd_f32(const ssd_args *s, float *y, float *state) {
    const int H = s->H, P = s->P, N = s->N, T = s->T, hpg = s->H / s->G, HP = H * P;
    const int Qc = s->chunk < SSD_CPU_CHUNK ? s->chunk : SSD_CPU_CHUNK, Q = Qc < T ? Qc : T, nch = (T + Q - 1) / Q;
    const size_t PN = (size_t)P * N;
    float *cbs = ssd_chunk_cb(s, Q, nch);
#pragma omp parallel
    {
        float *own = state ? NULL : xmalloc(PN * sizeof(float));
        float *CB = xmalloc((size_t)Q * Q * sizeof(float)), *CS = xmalloc((size_t)Q * P * sizeof(float));
        float *Xw = xmalloc((size_t)Q * P * sizeof(float));
        float *a = xmalloc((size_t)Q * sizeof(float)), *dts = xmalloc((size_t)Q * sizeof(float));
#pragma omp for schedule(static)
        for (int bh = 0; bh < s->B * H; bh++) {
            const int b = bh / H, h = bh % H, g = h / hpg;
            float *S = state ? state + (size_t)bh * PN : own;
            if (!state) memset(S, 0, PN * sizeof(float));
            const float A = -expf(s->A_log[h]), Dh = s->Dv[h];
            for (int t0 = 0; t0 < T; t0 += Q) {
                const int L = t0 + Q <= T ? Q : T - t0;
                const size_t row0 = (size_t)b * T + t0;
                const float *X = s->x + row0 * s->ldx + (size_t)h * P;
                const float *Bc = s->Bm + row0 * s->ldx + (size_t)g * N, *Cc = s->Cm + row0 * s->ldx + (size_t)g * N;
                float *Y = y + row0 * HP + (size_t)h * P;
                float acc = 0.0f;
                for (int j = 0; j < L; j++) {
                    dts[j] = ssd_dt(s, row0 + j, h, NULL);
                    acc += dts[j] * A;
                    a[j] = acc;
                }
                /* CB = C B^T (the group's), then the causal decay and dt_j: the chunk's "attention" matrix */
                const float *cb = cbs + (((size_t)b * s->G + g) * nch + t0 / Q) * Q * Q;
                for (int i = 0; i < L; i++) {
                    float *r = CB + (size_t)i * L;
                    const float *q = cb + (size_t)i * Q;
                    for (int j = 0; j <= i; j++) r[j] = q[j] * expf(a[i] - a[j]) * dts[j];
                    for (int j = i + 1; j < L; j++) r[j] = 0.0f;
                }
                /* Y = CB X (intra-chunk); CS = C S^T (the state entering the chunk) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, P, L, 1.0f, CB, L, X, s->ldx, 0.0f, Y, HP);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, P, N, 1.0f, Cc, s->ldx, S, N, 0.0f, CS, P);
                const float last = a[L - 1];
                for (int i = 0; i < L; i++) {
                    const float ea = expf(a[i]), w = expf(last - a[i]) * dts[i];
                    const float *xi = X + (size_t)i * s->ldx;
                    float *yi = Y + (size_t)i * HP, *xw = Xw + (size_t)i * P;
                    const float *cs = CS + (size_t)i * P;
                    for (int p = 0; p < P; p++) {
                        yi[p] += ea * cs[p] + Dh * xi[p];
                        xw[p] = w * xi[p];
                    }
                }
                /* S = exp(a_last) S + Xw^T B */
                const float el = expf(last);
                for (size_t i = 0; i < PN; i++) S[i] *= el;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, N, L, 1.0f, Xw, P, Bc, s->ldx, 1.0f, S, N);
            }
        }
        free(own), free(CB), free(CS), free(Xw), free(a), free(dts);
    }
    free(cbs);
}

/* The op: y float32 as computed, or bf16, rounded once from a float32 copy (lean training's saved y) */
void cpu_ssd_fwd(const ssd_args *s, mat y, float *state) {
    const int HP = s->H * s->P;
    CHECK(y.ld == HP, "ssd_fwd: y is dense [B*T, H*P] (ld %d, H*P %d)", y.ld, HP);
    if (mat_f(y)) {
        cpu_ssd_fwd_f32(s, mat_f(y), state);
        return;
    }
    const size_t rows = (size_t)s->B * s->T;
    float *y32 = xmalloc(rows * HP * sizeof(float));
    cpu_ssd_fwd_f32(s, y32, state);
    cpu_convert_rows(y, mat_f32(y32, HP), (int)rows, HP);
    free(y32);
}

/* ---- the backward ------------------------------------------------------------------------------------------ */
/* Reverse recurrence with ds = dL/dS_t carried back:
 *   ds += dy_t C_t^T;  dC_t += S_t^T dy_t;  dx_t = dt ds B_t + D dy_t;  dB_t += dt ds^T x_t;
 *   d dt = x_t^T ds B_t + <ds, S_{t-1}> e A;  dA += <ds, S_{t-1}> e dt;  ds *= e   (e = exp(dt A)). */
/* dA_log, dD, d(dt bias) [H] += the per-(sequence, head) sums head_sums [B, H, 3], the sequences in order
 * (deterministic whatever the threads) */
static void head_sums_add(const ssd_grads *gr, const double *head_sums, int B, int H) {
    for (int h = 0; h < H; h++) {
        double sa = 0, sd = 0, sb = 0;
        for (int b = 0; b < B; b++) {
            const double *hs = head_sums + ((size_t)b * H + h) * 3;
            sa += hs[0], sd += hs[1], sb += hs[2];
        }
        gr->dA_log[h] += (float)sa, gr->dDv[h] += (float)sd, gr->ddt_bias[h] += (float)sb;
    }
}

void cpu_ssd_bwd_ref(const ssd_args *s, const ssd_grads *gr, const float *dy) {
    const int H = s->H, P = s->P, N = s->N, T = s->T, G = s->G, hpg = H / G, K = SSD_BWD_BLOCK;
    const size_t PN = (size_t)P * N;
    const int nblk = (T + K - 1) / K;
    double *head_sums = xcalloc((size_t)s->B * H * 3, sizeof(double)); /* per (b, h): dA_log, dD, ddt_bias */
#pragma omp parallel
    {
        float *ck = xmalloc((size_t)nblk * PN * sizeof(float));     /* the state entering each block */
        float *buf = xmalloc((size_t)(K + 1) * PN * sizeof(float)); /* a block's states: buf[j] before its step j */
        float *ds = xmalloc(PN * sizeof(float)), *dsB = xmalloc((size_t)P * sizeof(float));
#pragma omp for schedule(static)
        for (int bg = 0; bg < s->B * G; bg++) {
            const int b = bg / G, g = bg % G;
            for (int t = 0; t < T; t++) {
                const size_t row = (size_t)b * T + t;
                memset(gr->dBm + row * gr->ldd + (size_t)g * N, 0, (size_t)N * sizeof(float));
                memset(gr->dCm + row * gr->ldd + (size_t)g * N, 0, (size_t)N * sizeof(float));
            }
            for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                const float A = -expf(s->A_log[h]), Dh = s->Dv[h];
                double dA = 0, dD = 0, dbias = 0;
                /* pass 1: the states entering each block */
                float *S = buf;
                memset(S, 0, PN * sizeof(float));
                for (int t = 0; t < T; t++) {
                    if (t % K == 0) memcpy(ck + (size_t)(t / K) * PN, S, PN * sizeof(float));
                    const size_t row = (size_t)b * T + t;
                    const float dt = ssd_dt(s, row, h, NULL), e = expf(dt * A);
                    const float *x = s->x + row * s->ldx + (size_t)h * P, *Bv = s->Bm + row * s->ldx + (size_t)g * N;
                    for (int p = 0; p < P; p++)
                        for (int n = 0; n < N; n++) S[(size_t)p * N + n] = e * S[(size_t)p * N + n] + dt * x[p] * Bv[n];
                }
                memset(ds, 0, PN * sizeof(float));
                for (int k = nblk - 1; k >= 0; k--) {
                    const int t0 = k * K, t1 = t0 + K < T ? t0 + K : T;
                    memcpy(buf, ck + (size_t)k * PN, PN * sizeof(float));
                    for (int t = t0; t < t1; t++) { /* rebuild the block: buf[j + 1] = S_{t0 + j} */
                        const size_t row = (size_t)b * T + t;
                        const float dt = ssd_dt(s, row, h, NULL), e = expf(dt * A);
                        const float *x = s->x + row * s->ldx + (size_t)h * P;
                        const float *Bv = s->Bm + row * s->ldx + (size_t)g * N;
                        const float *Sp = buf + (size_t)(t - t0) * PN;
                        float *Sn = buf + (size_t)(t - t0 + 1) * PN;
                        for (int p = 0; p < P; p++)
                            for (int n = 0; n < N; n++)
                                Sn[(size_t)p * N + n] = e * Sp[(size_t)p * N + n] + dt * x[p] * Bv[n];
                    }
                    for (int t = t1 - 1; t >= t0; t--) {
                        const size_t row = (size_t)b * T + t;
                        float dsp;
                        const float dt = ssd_dt(s, row, h, &dsp), e = expf(dt * A);
                        const float *x = s->x + row * s->ldx + (size_t)h * P;
                        const float *Bv = s->Bm + row * s->ldx + (size_t)g * N;
                        const float *Cv = s->Cm + row * s->ldx + (size_t)g * N;
                        const float *dyr = dy + row * H * P + (size_t)h * P;
                        const float *Sc = buf + (size_t)(t - t0 + 1) * PN, *Sprev = Sc - PN;
                        float *dxr = gr->dx + row * gr->ldd + (size_t)h * P;
                        float *dBr = gr->dBm + row * gr->ldd + (size_t)g * N, *dCr = gr->dCm + row * gr->ldd + (size_t)g * N;
                        double ddt = 0, de = 0;
                        for (int p = 0; p < P; p++) {
                            float *dsp_ = ds + (size_t)p * N;
                            const float *Sp = Sc + (size_t)p * N, *Pp = Sprev + (size_t)p * N;
                            float acc = 0.0f, dep = 0.0f;
                            for (int n = 0; n < N; n++) {
                                dsp_[n] += dyr[p] * Cv[n];
                                dCr[n] += Sp[n] * dyr[p];
                                acc += dsp_[n] * Bv[n];
                                dep += dsp_[n] * Pp[n];
                            }
                            dsB[p] = acc;
                            dxr[p] = dt * acc + Dh * dyr[p];
                            ddt += (double)x[p] * acc;
                            de += dep;
                            dD += (double)dyr[p] * x[p];
                        }
                        for (int p = 0; p < P; p++) {
                            const float *dsp_ = ds + (size_t)p * N;
                            const float xp = dt * x[p];
                            for (int n = 0; n < N; n++) dBr[n] += xp * dsp_[n];
                        }
                        ddt += de * e * A;
                        dA += de * e * dt;
                        const float draw = (float)ddt * dsp;
                        gr->ddt[row * gr->ldddt + h] = draw;
                        dbias += draw;
                        for (size_t i = 0; i < PN; i++) ds[i] *= e;
                    }
                }
                double *hs = head_sums + ((size_t)b * H + h) * 3;
                hs[0] = dA * A; /* A = -exp(A_log): dA/dA_log = A */
                hs[1] = dD, hs[2] = dbias;
            }
        }
        free(ck), free(buf), free(ds), free(dsB);
    }
    head_sums_add(gr, head_sums, s->B, H);
    free(head_sums);
}

/* ---- the chunked backward ------------------------------------------------------------------------------------ */
/* The transpose of cpu_ssd_fwd, per (sequence, head) and chunk (a, dts, w_j = exp(a_last - a_j) dt_j, M = C B^T o
 * exp(a_i - a_j) dt_j causal, S the state entering the chunk, dS the gradient of the state leaving it):
 *   dM = dY X^T (masked);  dX = M^T dY + diag(w) B dS^T + D dY;  dCB = dM o exp(a_i - a_j) dt_j
 *   dC = dCB B + diag(exp(a)) dY S;  dB = dCB^T C + diag(w) X dS                              all GEMMs
 *   da_i from dM o M (rows +, columns -), the state term exp(a_i) and the chunk's state update; d dts from M, w and
 *   the cumsum (d dts_k += A sum_{i >= k} da_i);  dS entering = exp(a_last) dS + (diag(exp(a)) dY)^T C.
 * The states entering the chunks come from a first pass of the forward's state passing; dS passes backwards chunk
 * to chunk. One thread per head of a sequence; each head's dB and dC go to its own partial, summed over the group's
 * heads in order afterwards (deterministic, whatever the thread count). */
void cpu_ssd_bwd(const ssd_args *s, const ssd_grads *gr, const float *dy) {
    const int H = s->H, P = s->P, N = s->N, T = s->T, hpg = s->H / s->G, HP = H * P, ld = s->ldx;
    const int Qc = s->chunk < SSD_CPU_CHUNK ? s->chunk : SSD_CPU_CHUNK, Q = Qc < T ? Qc : T, nch = (T + Q - 1) / Q;
    const size_t PN = (size_t)P * N, TN = (size_t)T * N;
    double *head_sums = xcalloc((size_t)s->B * H * 3, sizeof(double)); /* per (b, h): dA_log, dD, ddt_bias */
    float *dBp = xmalloc((size_t)H * TN * sizeof(float)), *dCp = xmalloc((size_t)H * TN * sizeof(float)); /* [H,T,N] */
    float *cbs = ssd_chunk_cb(s, Q, nch);
    for (int b = 0; b < s->B; b++) {
#pragma omp parallel
        {
            float *ck = xmalloc((size_t)nch * PN * sizeof(float)), *dS = xmalloc(PN * sizeof(float));
            float *CB = xmalloc((size_t)Q * Q * sizeof(float)), *dM = xmalloc((size_t)Q * Q * sizeof(float));
            float *Tn = xmalloc((size_t)Q * N * sizeof(float)), *U = xmalloc((size_t)Q * P * sizeof(float));
            float *Xw = xmalloc((size_t)Q * P * sizeof(float)), *eY = xmalloc((size_t)Q * P * sizeof(float));
            float *a = xmalloc((size_t)Q * 6 * sizeof(float));
            float *dts = a + Q, *dsp = a + 2 * Q, *ea = a + 3 * Q, *da = a + 4 * Q, *dd = a + 5 * Q;
#pragma omp for schedule(static)
            for (int h = 0; h < H; h++) {
                const int g = h / hpg;
                const float A = -expf(s->A_log[h]), Dh = s->Dv[h];
                double dA = 0, dD = 0, dbias = 0;
                float *dBh = dBp + (size_t)h * TN, *dCh = dCp + (size_t)h * TN;
                /* the forward's state passing: ck[c] = the state entering chunk c */
                memset(ck, 0, PN * sizeof(float));
                for (int c = 0; c + 1 < nch; c++) {
                    const size_t row0 = (size_t)b * T + (size_t)c * Q;
                    const float *X = s->x + row0 * ld + (size_t)h * P, *Bc = s->Bm + row0 * ld + (size_t)g * N;
                    float acc = 0.0f;
                    for (int j = 0; j < Q; j++) dts[j] = ssd_dt(s, row0 + j, h, NULL), acc += dts[j] * A, a[j] = acc;
                    for (int j = 0; j < Q; j++) {
                        const float wj = expf(acc - a[j]) * dts[j];
                        for (int p = 0; p < P; p++) Xw[(size_t)j * P + p] = wj * X[(size_t)j * ld + p];
                    }
                    float *Sn = ck + (size_t)(c + 1) * PN;
                    const float el = expf(acc), *Sc = Sn - PN;
                    for (size_t i = 0; i < PN; i++) Sn[i] = el * Sc[i];
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, N, Q, 1.0f, Xw, P, Bc, ld, 1.0f, Sn, N);
                }
                memset(dS, 0, PN * sizeof(float));
                for (int c = nch - 1; c >= 0; c--) {
                    const int t0 = c * Q, L = t0 + Q <= T ? Q : T - t0;
                    const size_t row0 = (size_t)b * T + t0;
                    const float *X = s->x + row0 * ld + (size_t)h * P, *dY = dy + row0 * HP + (size_t)h * P;
                    const float *Bc = s->Bm + row0 * ld + (size_t)g * N, *Cc = s->Cm + row0 * ld + (size_t)g * N;
                    const float *S = ck + (size_t)c * PN;
                    float *dX = gr->dx + row0 * gr->ldd + (size_t)h * P;
                    float *dBc = dBh + (size_t)t0 * N, *dCc = dCh + (size_t)t0 * N;
                    float acc = 0.0f;
                    for (int j = 0; j < L; j++) {
                        dts[j] = ssd_dt(s, row0 + j, h, &dsp[j]), acc += dts[j] * A, a[j] = acc;
                        ea[j] = expf(a[j]), da[j] = 0.0f, dd[j] = 0.0f;
                    }
                    const float last = a[L - 1], el = expf(last);
                    /* the intra-chunk part: CB -> M, dM -> dCB */
                    const float *cbg = cbs + (((size_t)b * s->G + g) * nch + c) * Q * Q; /* the group's C B^T */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, P, 1.0f, dY, HP, X, ld, 0.0f, dM, L);
                    for (int i = 0; i < L; i++) {
                        float *cb = CB + (size_t)i * L, *dm = dM + (size_t)i * L, dai = 0.0f;
                        const float *q = cbg + (size_t)i * Q;
                        for (int j = 0; j <= i; j++) {
                            const float lw = expf(a[i] - a[j]), k = q[j] * lw, m = k * dts[j], gm = dm[j] * m;
                            dd[j] += dm[j] * k;
                            dai += gm, da[j] -= gm;
                            cb[j] = m, dm[j] *= lw * dts[j];
                        }
                        da[i] += dai;
                        for (int j = i + 1; j < L; j++) cb[j] = 0.0f, dm[j] = 0.0f;
                    }
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, P, L, 1.0f, CB, L, dY, HP, 0.0f, dX, gr->ldd);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, N, L, 1.0f, dM, L, Bc, ld, 0.0f, dCc, N);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, N, L, 1.0f, dM, L, Cc, ld, 0.0f, dBc, N);
                    /* from the state entering the chunk: dC += diag(ea) dY S, da_i += ea_i C_i . (dY S)_i */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, N, P, 1.0f, dY, HP, S, N, 0.0f, Tn, N);
                    for (int i = 0; i < L; i++) {
                        const float *tn = Tn + (size_t)i * N, *ci = Cc + (size_t)i * ld;
                        float *dc = dCc + (size_t)i * N, dot = 0.0f;
                        for (int n = 0; n < N; n++) dot += ci[n] * tn[n], dc[n] += ea[i] * tn[n];
                        da[i] += ea[i] * dot;
                    }
                    /* to the state leaving the chunk: U = B dS^T; dX += diag(w) U; dB += diag(w) X dS */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, P, N, 1.0f, Bc, ld, dS, N, 0.0f, U, P);
                    double dlast = 0;
                    for (int j = 0; j < L; j++) {
                        const float e = expf(last - a[j]), wj = e * dts[j], *u = U + (size_t)j * P;
                        const float *xj = X + (size_t)j * ld, *dyj = dY + (size_t)j * HP;
                        float *dxj = dX + (size_t)j * gr->ldd, *xw = Xw + (size_t)j * P, *ey = eY + (size_t)j * P;
                        float r = 0.0f;
                        for (int p = 0; p < P; p++) {
                            r += xj[p] * u[p];
                            dxj[p] += wj * u[p] + Dh * dyj[p];
                            xw[p] = wj * xj[p], ey[p] = ea[j] * dyj[p];
                            dD += (double)dyj[p] * xj[p];
                        }
                        dd[j] += e * r, da[j] -= wj * r, dlast += wj * r;
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, N, P, 1.0f, Xw, P, dS, N, 1.0f, dBc, N);
                    double sds = 0;
                    for (size_t i = 0; i < PN; i++) sds += (double)dS[i] * S[i];
                    da[L - 1] += (float)(dlast + el * sds);
                    /* dS entering the chunk = el dS + (diag(ea) dY)^T C */
                    for (size_t i = 0; i < PN; i++) dS[i] *= el;
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P, N, L, 1.0f, eY, P, Cc, ld, 1.0f, dS, N);
                    /* through the cumsum a = cumsum(dts A), the clamp and the softplus */
                    float rc = 0.0f;
                    for (int k = L - 1; k >= 0; k--) {
                        rc += da[k];
                        const float draw = (dd[k] + A * rc) * dsp[k];
                        dA += (double)dts[k] * rc;
                        gr->ddt[(row0 + k) * gr->ldddt + h] = draw;
                        dbias += draw;
                    }
                }
                double *hs = head_sums + ((size_t)b * H + h) * 3;
                hs[0] = dA * A, hs[1] = dD, hs[2] = dbias;
            }
            /* the group's heads' dB and dC, summed in head order */
#pragma omp for schedule(static)
            for (int t = 0; t < T; t++) {
                const size_t row = (size_t)b * T + t;
                for (int gg = 0; gg < s->G; gg++) {
                    float *dBr = gr->dBm + row * gr->ldd + (size_t)gg * N, *dCr = gr->dCm + row * gr->ldd + (size_t)gg * N;
                    memcpy(dBr, dBp + (size_t)gg * hpg * TN + (size_t)t * N, (size_t)N * sizeof(float));
                    memcpy(dCr, dCp + (size_t)gg * hpg * TN + (size_t)t * N, (size_t)N * sizeof(float));
                    for (int h = gg * hpg + 1; h < (gg + 1) * hpg; h++) {
                        const float *pb = dBp + (size_t)h * TN + (size_t)t * N, *pc = dCp + (size_t)h * TN + (size_t)t * N;
                        for (int n = 0; n < N; n++) dBr[n] += pb[n], dCr[n] += pc[n];
                    }
                }
            }
            free(ck), free(dS), free(CB), free(dM), free(Tn), free(U), free(Xw), free(eY), free(a);
        }
    }
    head_sums_add(gr, head_sums, s->B, H);
    free(head_sums), free(dBp), free(dCp), free(cbs);
}

/* ---- the gated RMSNorm --------------------------------------------------------------------------------------- */
static inline float silu_of(float z) { return z / (1.0f + expf(-z)); }

/* y and z float32 or bf16 (the lean Mamba-2's saved SSD output and in_proj output): widened first, as the GPU reads
 * them; out float32 or bf16 (rounded once). */
void cpu_gated_rmsnorm_fwd(mat out_m, mat y_m, mat z_m, const float *w, int rows, int D, int G, float eps) {
    CHECK(out_m.dt != MAT_I8 && y_m.dt != MAT_I8 && z_m.dt != MAT_I8, "gated_rmsnorm: float32 or bf16 operands");
    if (mat_h(y_m) || mat_h(z_m) || mat_h(out_m)) {
        float *yw = mat_h(y_m) ? host_f32_from_bf16_rows(mat_h(y_m), y_m.ld, rows, D) : NULL;
        float *zw = mat_h(z_m) ? host_f32_from_bf16_rows(mat_h(z_m), z_m.ld, rows, D) : NULL;
        float *ow = mat_h(out_m) ? xmalloc(sizeof(float) * ((size_t)rows * D + 1)) : NULL;
        const mat o = ow ? mat_f32(ow, D) : out_m, y = yw ? mat_f32(yw, D) : y_m, z = zw ? mat_f32(zw, D) : z_m;
        cpu_gated_rmsnorm_fwd(o, y, z, w, rows, D, G, eps);
        if (ow) host_bf16_from_f32_rows(mat_h(out_m), out_m.ld, ow, rows, D);
        free(yw), free(zw), free(ow);
        return;
    }
    const int gs = D / G;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *yr = mat_f(y_m) + (size_t)r * y_m.ld, *zr = mat_f(z_m) + (size_t)r * z_m.ld;
        float *o = mat_f(out_m) + (size_t)r * out_m.ld;
        for (int g = 0; g < G; g++) {
            double ss = 0;
            for (int i = g * gs; i < (g + 1) * gs; i++) {
                const float v = yr[i] * silu_of(zr[i]);
                o[i] = v;
                ss += (double)v * v;
            }
            const float rs = 1.0f / sqrtf((float)(ss / gs) + eps);
            for (int i = g * gs; i < (g + 1) * gs; i++) o[i] = o[i] * rs * w[i];
        }
    }
}

void cpu_gated_rmsnorm_bwd(float *dy, mat dz_m, float *dw, const float *dout, mat y_m, mat z_m, const float *w,
                           int rows, int D, int G, float eps) {
    CHECK(y_m.dt != MAT_I8 && z_m.dt != MAT_I8 && dz_m.dt != MAT_I8, "gated_rmsnorm: float32 or bf16 operands");
    if (mat_h(y_m) || mat_h(z_m) || mat_h(dz_m)) { /* widened first; dz rounded once after */
        float *yw = mat_h(y_m) ? host_f32_from_bf16_rows(mat_h(y_m), y_m.ld, rows, D) : NULL;
        float *zw = mat_h(z_m) ? host_f32_from_bf16_rows(mat_h(z_m), z_m.ld, rows, D) : NULL;
        float *dzw = mat_h(dz_m) ? xmalloc(sizeof(float) * ((size_t)rows * D + 1)) : NULL;
        cpu_gated_rmsnorm_bwd(dy, dzw ? mat_f32(dzw, D) : dz_m, dw, dout, yw ? mat_f32(yw, D) : y_m,
                              zw ? mat_f32(zw, D) : z_m, w, rows, D, G, eps);
        if (dzw) host_bf16_from_f32_rows(mat_h(dz_m), dz_m.ld, dzw, rows, D);
        free(yw), free(zw), free(dzw);
        return;
    }
    float *dz = mat_f(dz_m);
    const int lddz = dz_m.ld;
    const float *y = mat_f(y_m), *z = mat_f(z_m);
    const int gs = D / G, nt = omp_get_max_threads(), ldy = y_m.ld, ldz = z_m.ld;
    float *partial = xcalloc((size_t)nt * D, sizeof(float));
#pragma omp parallel
    {
        float *dwp = partial + (size_t)omp_get_thread_num() * D;
#pragma omp for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *yr = y + (size_t)r * ldy, *zr = z + (size_t)r * ldz, *dor = dout + (size_t)r * D;
            float *dyr = dy + (size_t)r * D, *dzr = dz + (size_t)r * lddz;
            for (int g = 0; g < G; g++) {
                double ss = 0, dot = 0;
                for (int i = g * gs; i < (g + 1) * gs; i++) {
                    const float v = yr[i] * silu_of(zr[i]);
                    ss += (double)v * v;
                    dot += (double)dor[i] * w[i] * v;
                }
                const float rs = 1.0f / sqrtf((float)(ss / gs) + eps), c = (float)(dot / gs) * rs * rs * rs;
                for (int i = g * gs; i < (g + 1) * gs; i++) {
                    const float sg = 1.0f / (1.0f + expf(-zr[i])), sz = zr[i] * sg, v = yr[i] * sz;
                    const float dv = dor[i] * w[i] * rs - v * c;
                    dwp[i] += dor[i] * v * rs;
                    dyr[i] = dv * sz;
                    dzr[i] = dv * yr[i] * sg * (1.0f + zr[i] * (1.0f - sg));
                }
            }
        }
    }
    for (int t = 0; t < nt; t++)
        for (int i = 0; i < D; i++) dw[i] += partial[(size_t)t * D + i];
    free(partial);
}
