/* Mamba-1 selective scan on the CPU, fused with the dt softplus before it and the SiLU gate after it (see
 * scan_args in ops.h). Time runs in order; 16 channels at a time share one vector, so the exp, the state
 * update and the output are all 16-wide, and threads split over batch x channel blocks. The forward keeps
 * the state in registers/L1 and never stores it per step; the backward recomputes it chunk by chunk
 * (boundary states first, then each chunk's steps in reverse). */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* backward recompute granularity (2 x 32 x N vectors per thread): its chunks start at the forward's checkpoints */
#define SCAN_CHUNK SCAN_HK_STEPS
#define SCAN_MAX_N 256

static inline void add_lanes(float *p, vf v, int nw) {
    for (int i = 0; i < nw; i++) p[i] += v[i];
}

/* The step of (row, channels e0..e0+nw): softplus(dt + bias). */
static inline vf step_dt(const scan_args *s, size_t row, int e0, int nw, vf bias) {
    return vf_softplus(vf_load_n(mat_f(s->dt) + row * s->E + e0, nw) + bias);
}

/* out (float32 or bf16) at [at, at + nw) = v */
static inline void store_out(mat out, size_t at, vf v, int nw) {
    if (mat_h(out)) {
        float tmp[VW];
        vf_store_n(tmp, v, nw);
        host_bf16_from_f32(mat_h(out) + at, tmp, (size_t)nw);
    } else {
        vf_store_n(mat_f(out) + at, v, nw);
    }
}

static int scan_has_bf16(const scan_args *s) { return mat_h(s->z) || mat_h(s->x) || mat_h(s->dt); }

/* A bf16 gate, input and/or dt widened (the CPU runs that form only to test the lean path): *w is s with z, x and
 * dt in float32, zw[0..2] the copies to free (NULL where s had them in float32). */
static const scan_args *widen_bf16(const scan_args *s, scan_args *w, float **zw) {
    zw[0] = zw[1] = zw[2] = NULL;
    if (!scan_has_bf16(s)) return s;
    *w = *s;
    const size_t rows = (size_t)s->B * s->T;
    if (mat_h(s->z)) zw[0] = host_f32_from_bf16_rows(mat_h(s->z), s->z.ld, rows, s->E), w->z = mat_f32(zw[0], s->E);
    if (mat_h(s->x)) zw[1] = host_f32_from_bf16_rows(mat_h(s->x), s->E, rows, s->E), w->x = mat_f32(zw[1], s->E);
    if (mat_h(s->dt)) zw[2] = host_f32_from_bf16_rows(mat_h(s->dt), s->E, rows, s->E), w->dt = mat_f32(zw[2], s->E);
    return w;
}

/* Checkpoint j of sequence b (channels e0 .. e0 + nw): hk = bf16(hs), or hs = hk widened. */
static void hk_store(const scan_args *s, const vf *hs, int b, int j, int e0, int nw) {
    const size_t at = (size_t)b * SCAN_HK_COUNT(s->T) + j;
    float tmp[VW];
    for (int n = 0; n < s->N; n++) {
        vf_store_n(tmp, hs[n], nw);
        host_bf16_from_f32(s->hk + (at * s->N + n) * s->E + e0, tmp, (size_t)nw);
    }
}
static void hk_load(const scan_args *s, vf *hs, int b, int j, int e0, int nw) {
    const size_t at = (size_t)b * SCAN_HK_COUNT(s->T) + j;
    float tmp[VW];
    for (int n = 0; n < s->N; n++) {
        host_f32_from_bf16(tmp, s->hk + (at * s->N + n) * s->E + e0, (size_t)nw);
        hs[n] = vf_load_n(tmp, nw);
    }
}

/* dA_log[E, N] += dAt[N, E]^T * At[N, E]^T: the gradient of A_log through A = -exp(A_log) (dA/dA_log = A). */
static void alog_grad_acc(float *dA_log, const float *dAt, const float *At, int E, int N) {
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) dA_log[(size_t)e * N + n] += dAt[(size_t)n * E + e] * At[(size_t)n * E + e];
}

/* s with At in place of A_log (neg_exp_transpose into *At, which the caller frees), or s itself */
static const scan_args *with_At(const scan_args *s, scan_args *w, float **At) {
    *At = NULL;
    if (!s->A_log) return s;
    *At = xmalloc(sizeof(float) * ((size_t)s->N * s->E + 1));
    cpu_neg_exp_transpose(*At, s->A_log, s->E, s->N);
    *w = *s, w->At = *At, w->A_log = NULL;
    return w;
}

void cpu_scan_fwd(const scan_args *s, mat out, float *h) {
    if (s->A_log) {
        scan_args w;
        float *At;
        cpu_scan_fwd(with_At(s, &w, &At), out, h);
        free(At);
        return;
    }
    if (scan_has_bf16(s)) { /* bf16 operands widened first */
        scan_args w;
        float *zw[3];
        cpu_scan_fwd(widen_bf16(s, &w, zw), out, h);
        free(zw[0]), free(zw[1]), free(zw[2]);
        return;
    }
    const int B = s->B, T = s->T, E = s->E, N = s->N;
    CHECK(N <= SCAN_MAX_N, "d_state %d exceeds %d", N, SCAN_MAX_N);
    const int nblk = (E + VW - 1) / VW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int blk = 0; blk < nblk; blk++) {
            const int e0 = blk * VW, nw = imin(VW, E - e0);
            vf a[SCAN_MAX_N], hs[SCAN_MAX_N];
            for (int n = 0; n < N; n++) {
                a[n] = vf_load_n(s->At + (size_t)n * E + e0, nw);
                hs[n] = vf_set1(0.0f);
            }
            if (h)
                for (int n = 0; n < N; n++)
                    for (int i = 0; i < nw; i++) hs[n][i] = h[((size_t)b * E + e0 + i) * N + n];
            const vf dv = vf_load_n(s->Dv + e0, nw), bias = vf_load_n(s->dt_bias + e0, nw);
            for (int t = 0; t < T; t++) {
                const size_t row = (size_t)b * T + t;
                if (s->hk && t > 0 && t % SCAN_HK_STEPS == 0) hk_store(s, hs, b, t / SCAN_HK_STEPS - 1, e0, nw);
                const vf dtv = step_dt(s, row, e0, nw, bias), xv = vf_load_n(mat_f(s->x) + row * E + e0, nw);
                const vf dtx = dtv * xv;
                const float *Bt = s->Bm + row * s->ldbc, *Ct = s->Cm + row * s->ldbc;
                vf acc = vf_set1(0.0f);
                for (int n = 0; n < N; n++) {
                    hs[n] = vf_exp(dtv * a[n]) * hs[n] + dtx * Bt[n];
                    acc += hs[n] * Ct[n];
                }
                vf y = acc + dv * xv;
                if (s->z.p) {
                    const vf zv = vf_load_n(mat_f(s->z) + row * s->z.ld + e0, nw);
                    y = y * zv * vf_sigmoid(zv);
                }
                store_out(out, row * E + e0, y, nw);
            }
            if (h)
                for (int n = 0; n < N; n++)
                    for (int i = 0; i < nw; i++) h[((size_t)b * E + e0 + i) * N + n] = hs[n][i];
        }
}

void cpu_scan_fwd_ref(const scan_args *s, float *out, float *h) {
    if (s->A_log) {
        scan_args w;
        float *At;
        cpu_scan_fwd_ref(with_At(s, &w, &At), out, h);
        free(At);
        return;
    }
    if (scan_has_bf16(s)) { /* bf16 operands widened first */
        scan_args w;
        float *zw[3];
        cpu_scan_fwd_ref(widen_bf16(s, &w, zw), out, h);
        free(zw[0]), free(zw[1]), free(zw[2]);
        return;
    }
    const int B = s->B, T = s->T, E = s->E, N = s->N;
    const size_t rows = (size_t)B * T;
    float *hs = xmalloc(sizeof(float) * N), *dt = xmalloc(sizeof(float) * rows * E);
    memcpy(dt, mat_f(s->dt), sizeof(float) * rows * E);
    cpu_softplus_bias_fwd(dt, s->dt_bias, (int)rows, E);
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            for (int n = 0; n < N; n++) hs[n] = h ? h[((size_t)b * E + e) * N + n] : 0.0f;
            for (int t = 0; t < T; t++) {
                const size_t row = (size_t)b * T + t;
                float d = dt[row * E + e], xv = mat_f(s->x)[row * E + e], acc = 0;
                for (int n = 0; n < N; n++) {
                    hs[n] = expf(d * s->At[(size_t)n * E + e]) * hs[n] + d * xv * s->Bm[row * s->ldbc + n];
                    acc += hs[n] * s->Cm[row * s->ldbc + n];
                }
                out[row * E + e] = acc + s->Dv[e] * xv;
            }
            if (h)
                for (int n = 0; n < N; n++) h[((size_t)b * E + e) * N + n] = hs[n];
        }
    if (s->z.p) cpu_gate_fwd(out, out, mat_f(s->z), s->z.ld, (int)rows, E);
    free(hs);
    free(dt);
}

/* Backward of one (sequence, 16-channel block). Writes this block's share of dB/dC into part
 * [T, 2N] (B terms then C terms); the caller sums the blocks in a fixed order. dts [T]: room for the steps
 * (the softplus computed once per step, not in each pass). */
static void scan_bwd_block(const scan_args *s, const scan_grads *gr, const float *dout, float *part, vf *dA, vf *dD,
                           vf *dbias, vf *hb, vf *hloc, vf *daloc, vf *dts, const vf *a, vf dv, vf bias, int b, int e0,
                           int nw) {
    const int T = s->T, E = s->E, N = s->N, ldbc = s->ldbc;
    const int nchunk = (T + SCAN_CHUNK - 1) / SCAN_CHUNK;
    for (int t = 0; t < T; t++) dts[t] = step_dt(s, (size_t)b * T + t, e0, nw, bias);
    /* pass 1: the state at the start of every chunk (from the forward's checkpoints when there are: every chunk
     * starts at one) */
    vf hs[SCAN_MAX_N], dh[SCAN_MAX_N], qB[SCAN_MAX_N], qC[SCAN_MAX_N];
    for (int n = 0; n < N; n++) hs[n] = vf_set1(0.0f);
    for (int c = 0; c < nchunk; c++) {
        if (s->hk && c > 0) {
            hk_load(s, hb + (size_t)c * N, b, c - 1, e0, nw);
            continue;
        }
        memcpy(hb + (size_t)c * N, hs, sizeof(vf) * N);
        if (s->hk) continue;
        if (c == nchunk - 1) break;
        for (int t = c * SCAN_CHUNK; t < (c + 1) * SCAN_CHUNK; t++) {
            const size_t row = (size_t)b * T + t;
            const vf dtv = dts[t], dtx = dtv * vf_load_n(mat_f(s->x) + row * E + e0, nw);
            const float *Bt = s->Bm + row * ldbc;
            for (int n = 0; n < N; n++) hs[n] = vf_exp(dtv * a[n]) * hs[n] + dtx * Bt[n];
        }
    }
    /* pass 2: chunks in reverse; recompute the chunk's states and decays, then step back through it */
    for (int n = 0; n < N; n++) dh[n] = vf_set1(0.0f);
    for (int c = nchunk - 1; c >= 0; c--) {
        const int t0 = c * SCAN_CHUNK, t1 = imin(T, t0 + SCAN_CHUNK);
        memcpy(hs, hb + (size_t)c * N, sizeof(vf) * N);
        for (int t = t0; t < t1; t++) {
            const size_t row = (size_t)b * T + t;
            const vf dtv = dts[t], dtx = dtv * vf_load_n(mat_f(s->x) + row * E + e0, nw);
            const float *Bt = s->Bm + row * ldbc;
            vf *hl = hloc + (size_t)(t - t0) * N, *dl = daloc + (size_t)(t - t0) * N;
            for (int n = 0; n < N; n++) {
                dl[n] = vf_exp(dtv * a[n]);
                hs[n] = dl[n] * hs[n] + dtx * Bt[n];
                hl[n] = hs[n];
            }
        }
        for (int t = t1 - 1; t >= t0; t--) {
            const size_t row = (size_t)b * T + t, at = row * E + e0;
            const vf xv = vf_load_n(mat_f(s->x) + at, nw), dtv = dts[t];
            const float *Bt = s->Bm + row * ldbc, *Ct = s->Cm + row * ldbc;
            const vf *hl = hloc + (size_t)(t - t0) * N, *dl = daloc + (size_t)(t - t0) * N;
            const vf *hprev = t > t0 ? hl - N : hb + (size_t)c * N;
            vf dyv = vf_load_n(dout + at, nw);
            if (s->z.p) { /* through the gate: y recomputed from this step's states */
                const vf zv = vf_load_n(mat_f(s->z) + row * s->z.ld + e0, nw), sg = vf_sigmoid(zv), g = dyv;
                vf y = vf_set1(0.0f);
                for (int n = 0; n < N; n++) y += hl[n] * Ct[n];
                y = y + dv * xv;
                dyv = g * zv * sg;
                store_out(gr->dz, row * gr->dz.ld + e0, g * y * sg * (1.0f + zv * (1.0f - sg)), nw);
                if (gr->out.p) store_out(gr->out, at, y * zv * sg, nw);
            }
            float *pB = part + (size_t)t * 2 * N, *pC = pB + N;
            const vf dtx = dtv * xv;
            vf dxv = dv * dyv, ddtv = vf_set1(0.0f);
            *dD += xv * dyv;
            for (int n = 0; n < N; n++) {
                qC[n] = dyv * hl[n];                  /* lanes summed below: dC */
                vf g = dh[n] + dyv * Ct[n];          /* dL/dh_t */
                vf gd = g * hprev[n] * dl[n];         /* dL/d(dt*A) */
                ddtv += gd * a[n] + g * xv * Bt[n];
                dA[n] += gd * dtv;
                dxv += g * dtv * Bt[n];
                qB[n] = g * dtx;                      /* lanes summed below: dB */
                dh[n] = g * dl[n];                    /* dL/dh_{t-1} through the decay */
            }
            vf_sum_many(qB, pB, N);
            vf_sum_many(qC, pC, N);
            /* through the softplus: sigmoid(pre) = 1 - exp(-softplus(pre)) = -expm1(-dt) */
            ddtv = ddtv * -vf_expm1(-dtv);
            *dbias += ddtv;
            vf_store_n(mat_f(gr->dx) + at, dxv, nw);
            vf_store_n(mat_f(gr->ddt) + at, ddtv, nw);
        }
    }
}

void cpu_scan_bwd(const scan_args *s, const scan_grads *g, mat dout) {
    if (s->A_log) {
        scan_args w;
        float *At;
        cpu_scan_bwd(with_At(s, &w, &At), g, dout);
        free(At);
        return;
    }
    if (scan_has_bf16(s)) { /* bf16 operands widened first */
        scan_args w;
        float *zw[3];
        cpu_scan_bwd(widen_bf16(s, &w, zw), g, dout);
        free(zw[0]), free(zw[1]), free(zw[2]);
        return;
    }
    if (mat_h(dout)) { /* a bf16 dout widened first */
        float *dw = host_f32_from_bf16_rows(mat_h(dout), dout.ld, (size_t)s->B * s->T, s->E);
        cpu_scan_bwd(s, g, mat_f32(dw, s->E));
        free(dw);
        return;
    }
    if (g->dA_log) { /* dAt alone first, then through A = -exp(A_log) */
        float *dAt = xcalloc((size_t)s->N * s->E + 1, sizeof(float));
        scan_grads g32 = *g;
        g32.dAt = dAt, g32.dA_log = NULL;
        cpu_scan_bwd(s, &g32, dout);
        alog_grad_acc(g->dA_log, dAt, s->At, s->E, s->N);
        free(dAt);
        return;
    }
    if (mat_h(g->dBm)) { /* dB and dC in float32 first ([B*T, N] dense), then rounded */
        const int rows = s->B * s->T;
        scan_grads g32 = *g;
        float *bc = xmalloc(sizeof(float) * ((size_t)rows * 2 * s->N + 1));
        g32.dBm = mat_f32(bc, 2 * s->N), g32.dCm = mat_f32(bc + s->N, 2 * s->N);
        cpu_scan_bwd(s, &g32, dout);
        cpu_convert_rows(g->dBm, g32.dBm, rows, s->N);
        cpu_convert_rows(g->dCm, g32.dCm, rows, s->N);
        free(bc);
        return;
    }
    if (mat_h(g->ddt) || mat_h(g->dx) || mat_h(g->dz) || mat_h(g->out)) { /* in float32 first, then rounded */
        const int rows = s->B * s->T;
        scan_grads g32 = *g;
        mat *f32[] = {&g32.ddt, &g32.dx, &g32.dz, &g32.out};
        const mat *want[] = {&g->ddt, &g->dx, &g->dz, &g->out};
        for (int i = 0; i < 4; i++)
            if (mat_h(*want[i])) *f32[i] = mat_f32(xmalloc(sizeof(float) * ((size_t)rows * s->E + 1)), s->E);
        cpu_scan_bwd(s, &g32, dout);
        for (int i = 0; i < 4; i++)
            if (mat_h(*want[i])) cpu_convert_rows(*want[i], *f32[i], rows, s->E), free(f32[i]->p);
        return;
    }
    const int B = s->B, T = s->T, E = s->E, N = s->N;
    CHECK(N <= SCAN_MAX_N, "d_state %d exceeds %d", N, SCAN_MAX_N);
    const int nblk = (E + VW - 1) / VW, nchunk = (T + SCAN_CHUNK - 1) / SCAN_CHUNK;
    float *part = xmalloc(sizeof(float) * (size_t)nblk * T * 2 * N); /* [nblk, T, 2N] for one sequence */
#pragma omp parallel
    {
        vf *hb = xmalloc(sizeof(vf) * (size_t)nchunk * N);
        vf *hloc = xmalloc(sizeof(vf) * (size_t)SCAN_CHUNK * N), *daloc = xmalloc(sizeof(vf) * (size_t)SCAN_CHUNK * N);
        vf *dts = xmalloc(sizeof(vf) * (size_t)(T > 0 ? T : 1));
        for (int b = 0; b < B; b++) {
#pragma omp for schedule(static)
            for (int blk = 0; blk < nblk; blk++) {
                const int e0 = blk * VW, nw = imin(VW, E - e0);
                vf a[SCAN_MAX_N], dA[SCAN_MAX_N], dD = vf_set1(0.0f), dbias = vf_set1(0.0f);
                for (int n = 0; n < N; n++) {
                    a[n] = vf_load_n(s->At + (size_t)n * E + e0, nw);
                    dA[n] = vf_set1(0.0f);
                }
                scan_bwd_block(s, g, mat_f(dout), part + (size_t)blk * T * 2 * N, dA, &dD, &dbias, hb, hloc, daloc, dts, a,
                               vf_load_n(s->Dv + e0, nw), vf_load_n(s->dt_bias + e0, nw), b, e0, nw);
                for (int n = 0; n < N; n++) add_lanes(g->dAt + (size_t)n * E + e0, dA[n], nw);
                add_lanes(g->dDv + e0, dD, nw);
                add_lanes(g->ddt_bias + e0, dbias, nw);
            }
            /* implicit barrier: every block's partial is in; sum them in block order (deterministic) */
#pragma omp for schedule(static)
            for (int t = 0; t < T; t++) {
                float *db = mat_f(g->dBm) + ((size_t)b * T + t) * g->dBm.ld,
                      *dc = mat_f(g->dCm) + ((size_t)b * T + t) * g->dCm.ld;
                for (int n = 0; n < N; n++) db[n] = dc[n] = 0.0f;
                for (int blk = 0; blk < nblk; blk++) {
                    const float *p = part + ((size_t)blk * T + t) * 2 * N;
                    for (int n = 0; n < N; n++) {
                        db[n] += p[n];
                        dc[n] += p[N + n];
                    }
                }
            }
        }
        free(hb);
        free(hloc);
        free(daloc);
        free(dts);
    }
    free(part);
}
