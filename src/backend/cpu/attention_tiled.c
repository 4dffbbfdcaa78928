/* The CPU's causal grouped-query attention, forward and backward, in float32 (cpu_attn_fwd and cpu_attn_bwd widen
 * bf16 operands to this): FlashAttention's tiling with OpenBLAS GEMMs on the tiles. attention.c keeps the scalar
 * definition (cpu_attn_fwd_ref, cpu_attn_bwd_ref) the tests hold these to.
 *
 * Tiles. A job takes one key/value head kh of one sequence and a block of ATTN_BQ query positions t0.. of every query
 * head of kh's group, stacked into one matrix of M = group * nq rows (row hh * nq + tt: head kh * group + hh, position
 * t0 + tt), so one GEMM reads each key tile once for the whole group. The keys go by in tiles of ATTN_BK from the
 * first any of the block's queries sees to the last (causal: up to the diagonal; a window: from the window's start
 * of the block's last query), so the work is the visible band's, rounded out to tiles. Scores of a tile are masked
 * (-inf) only where the tile straddles the diagonal or a window's edge.
 *
 * Forward: per tile S = Qs K^T (Qs = q / sqrt(hd), packed), the online softmax (a running max and sum per row, the
 * partial output rescaled when the max grows), O += P V; at the end O / sum, and lse = max + log(sum) per row.
 * Backward: per (sequence, key/value head) job, query blocks in order, key tiles in order inside: P = exp(S - lse)
 * recomputed, dV += P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO o)), dQ += dS K, dK += dS^T Qs (the 1/sqrt(hd) of dQ
 * applied once at the end). A job owns its dK, dV rows and its group's dQ rows, so there are no atomics. Where B * KV
 * gives fewer than ATTN_BWD_JOBS jobs, each splits its query blocks into parts of equal work whose dK, dV sums are
 * added in part order afterwards (recomputing P per key block instead, FlashAttention-2's way without atomics, would
 * cost 7 GEMMs per tile for 5). The split is the shape's, never the thread count's: the result depends on the shapes
 * alone, the same bits at any thread count (test_grad checks 1, 2 and 3).
 *
 * Memory: per thread a few M x ATTN_BK and M x hd tiles; nothing T x T. The GEMMs run inside OpenMP parallel regions,
 * where the OpenMP build of OpenBLAS (the Makefile links it) runs each one on the calling thread.
 *
 * Decode (T = 1, one query a sequence over a cache): no GEMMs. A job takes ATTN_DEC_KEYS keys of one sequence for
 * every head, reads each key row once (all key/value heads, contiguous) and then each value row once, so the cache
 * streams from memory; its (max, sum, weighted values) per head are merged in key order afterwards. The pieces are
 * the shape's, not the threads': the same bits at any thread count. */
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vec.h"
#include "common.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#ifndef ATTN_BQ
#define ATTN_BQ 64 /* query positions per block (times the group's heads: a tile's rows) */
#endif
#ifndef ATTN_BK
#define ATTN_BK 128 /* keys per tile: a multiple of VW (rows of scores are processed VW at a time) */
#endif
#ifndef ATTN_DEC_KEYS
#define ATTN_DEC_KEYS 256 /* decode: keys per job (a multiple of VW) */
#endif

/* The keys query t of sequence b sees: [*lo, *hi) (as attention.c's attn_range) */
static void key_range(const attn_args *a, int b, int t, int *lo, int *hi) {
    const int n = a->nk ? a->nk[b] : a->T, i = n - a->T + t;
    *hi = i + 1;
    *lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0;
}

static inline vf vf_max(vf x, vf y) { return vf_select(x > y, x, y); }

static float row_max(const float *s, int w) {
    vf m = vf_set1(-INFINITY);
    for (int c = 0; c < w; c += VW)
        m = vf_max(m, vf_load(s + c));
    float r = m[0];
    for (int i = 1; i < VW; i++)
        r = fmaxf(r, m[i]);
    return r;
}

/* s[c] = exp(s[c] - sub) over w (a multiple of VW) columns; returns their sum */
static float row_exp(float *s, int w, float sub) {
    vf acc = vf_set1(0.0f);
    for (int c = 0; c < w; c += VW) {
        const vf p = vf_exp(vf_load(s + c) - sub);
        vf_store(s + c, p);
        acc += p;
    }
    return vf_sum(acc);
}

/* One query block of a job: where its rows come from and which keys they see. */
typedef struct {
    int b, kh, t0, nq, M;  /* sequence, key/value head, first position, positions, rows (group * nq) */
    int jlo, jhi;          /* the keys any of its queries sees: [jlo, jhi) */
    int lo_last, hi_first; /* keys every query sees: [lo_last, hi_first) (lo and hi grow with t) */
} qblock;

static qblock qblock_of(const attn_args *a, int b, int kh, int t0) {
    qblock qb = {.b = b, .kh = kh, .t0 = t0, .nq = imin(ATTN_BQ, a->T - t0)};
    qb.M = a->H / a->KV * qb.nq;
    key_range(a, b, t0, &qb.jlo, &qb.hi_first);
    key_range(a, b, t0 + qb.nq - 1, &qb.lo_last, &qb.jhi);
    return qb;
}

/* Qs [M, hd] = the block's query rows (heads of kh's group stacked) times scale */
static void pack_q(const attn_args *a, const qblock *qb, float scale, float *qs) {
    const int hd = a->hd, group = a->H / a->KV;
    for (int hh = 0; hh < group; hh++)
        for (int tt = 0; tt < qb->nq; tt++) {
            const float *q =
                mat_f(a->q) + ((size_t)qb->b * a->T + qb->t0 + tt) * a->q.ld + (size_t)(qb->kh * group + hh) * hd;
            float *d = qs + ((size_t)hh * qb->nq + tt) * hd;
            for (int c = 0; c < hd; c++)
                d[c] = q[c] * scale;
        }
}

/* Scores s [M, ATTN_BK] of the keys [j0, j0 + nk) = Qs K^T, the keys a row does not see and the columns from nk up to
 * the next multiple of VW set to -inf. Returns that width. */
static int tile_scores(const attn_args *a, const qblock *qb, const float *qs, const float *kb, int j0, int nk,
                       float *s) {
    const int w = (nk + VW - 1) / VW * VW;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb->M, nk, a->hd, 1.0f, qs, a->hd, kb + (size_t)j0 * a->k.ld,
                a->k.ld, 0.0f, s, ATTN_BK);
    const int whole = j0 >= qb->lo_last && j0 + nk <= qb->hi_first; /* every row sees every key of the tile */
    for (int r = 0; r < qb->M; r++) {
        float *sr = s + (size_t)r * ATTN_BK;
        int lo = 0, hi = nk;
        if (!whole) {
            int klo, khi;
            key_range(a, qb->b, qb->t0 + r % qb->nq, &klo, &khi);
            lo = imin(imax(klo - j0, 0), nk), hi = imax(imin(khi - j0, nk), lo);
        }
        for (int c = 0; c < lo; c++)
            sr[c] = -INFINITY;
        for (int c = hi; c < w; c++)
            sr[c] = -INFINITY;
    }
    return w;
}

/* Per-thread tiles */
typedef struct {
    float *qs, *s, *acc, *m, *l; /* [M, hd], [M, ATTN_BK], [M, hd], [M], [M]; m: the running max (backward: lse) */
    float *dout, *dp, *di;       /* backward: [M, hd], [M, ATTN_BK], [M] */
} attn_tiles;

static attn_tiles tiles_alloc(const attn_args *a, int backward) {
    const size_t M = (size_t)a->H / a->KV * ATTN_BQ, hd = (size_t)a->hd;
    attn_tiles w = {.qs = xcalloc(M * hd, sizeof(float)),
                    .s = xcalloc(M * ATTN_BK, sizeof(float)),
                    .acc = xcalloc(M * hd, sizeof(float)),
                    .m = xcalloc(M, sizeof(float)),
                    .l = xcalloc(M, sizeof(float))};
    if (backward)
        w.dout = xcalloc(M * hd, sizeof(float)), w.dp = xcalloc(M * ATTN_BK, sizeof(float)),
        w.di = xcalloc(M, sizeof(float));
    return w;
}

static void tiles_free(attn_tiles *w) {
    free(w->qs), free(w->s), free(w->acc), free(w->m), free(w->l), free(w->dout), free(w->dp), free(w->di);
}

/* The forward of one query block: its rows of o and lse. */
static void fwd_block(const attn_args *a, const qblock *qb, float *o, int ldo, attn_tiles *w) {
    const int hd = a->hd, group = a->H / a->KV, M = qb->M;
    const float *kb = mat_f(a->k) + qb->b * a->kv_bstride + (size_t)qb->kh * hd,
                *vb = mat_f(a->v) + qb->b * a->kv_bstride + (size_t)qb->kh * hd;
    pack_q(a, qb, 1.0f / sqrtf((float)hd), w->qs);
    memset(w->acc, 0, sizeof(float) * M * hd);
    for (int r = 0; r < M; r++)
        w->m[r] = -INFINITY, w->l[r] = 0.0f;
    for (int j0 = qb->jlo; j0 < qb->jhi; j0 += ATTN_BK) {
        const int nk = imin(ATTN_BK, qb->jhi - j0), wd = tile_scores(a, qb, w->qs, kb, j0, nk, w->s);
        for (int r = 0; r < M; r++) {
            float *sr = w->s + (size_t)r * ATTN_BK;
            const float mnew = fmaxf(w->m[r], row_max(sr, wd));
            if (mnew == -INFINITY) { /* no key of this tile for this row, nor before: P's row is 0 */
                memset(sr, 0, sizeof(float) * wd);
                continue;
            }
            const float corr = expf(w->m[r] - mnew); /* 0 on the row's first keys */
            w->l[r] = w->l[r] * corr + row_exp(sr, wd, mnew);
            w->m[r] = mnew;
            if (corr != 1.0f)
                for (int c = 0; c < hd; c++)
                    w->acc[(size_t)r * hd + c] *= corr;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, hd, nk, 1.0f, w->s, ATTN_BK,
                    vb + (size_t)j0 * a->v.ld, a->v.ld, 1.0f, w->acc, hd);
    }
    for (int r = 0; r < M; r++) {
        const int hh = r / qb->nq, t = qb->t0 + r % qb->nq, h = qb->kh * group + hh;
        const float inv = 1.0f / w->l[r];
        float *orow = o + ((size_t)qb->b * a->T + t) * ldo + (size_t)h * hd;
        for (int c = 0; c < hd; c++)
            orow[c] = w->acc[(size_t)r * hd + c] * inv;
        if (a->lse) a->lse[((size_t)qb->b * a->H + h) * a->T + t] = w->m[r] + logf(w->l[r]);
    }
}

static float dot(const float *x, const float *y, int n) {
    vf acc = vf_set1(0.0f);
    int c = 0;
    for (; c + VW <= n; c += VW)
        acc += vf_load(x + c) * vf_load(y + c);
    if (c < n) acc += vf_load_n(x + c, n - c) * vf_load_n(y + c, n - c);
    return vf_sum(acc);
}

/* One decode job: keys [j0, j0 + nk) of sequence b, every head h: part[h] = (max, sum, sum of weighted values [hd])
 * over them, the scores scaled; s: [H][ATTN_DEC_KEYS] scratch. */
static void dec_piece(const attn_args *a, int b, int j0, int nk, float *s, float *part) {
    const int hd = a->hd, H = a->H, group = H / a->KV, w = (nk + VW - 1) / VW * VW;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *q = mat_f(a->q) + (size_t)b * a->T * a->q.ld, *kb = mat_f(a->k) + b * a->kv_bstride,
                *vb = mat_f(a->v) + b * a->kv_bstride;
    for (int j = 0; j < nk; j++) { /* scores: each key row read once for every head */
        const float *k = kb + (size_t)(j0 + j) * a->k.ld;
        for (int h = 0; h < H; h++)
            s[(size_t)h * ATTN_DEC_KEYS + j] = dot(q + (size_t)h * hd, k + (size_t)(h / group) * hd, hd) * scale;
    }
    for (int h = 0; h < H; h++) {
        float *sh = s + (size_t)h * ATTN_DEC_KEYS, *ph = part + (size_t)h * (hd + 2);
        for (int j = nk; j < w; j++)
            sh[j] = -INFINITY;
        ph[0] = row_max(sh, w);
        ph[1] = row_exp(sh, w, ph[0]);
        memset(ph + 2, 0, sizeof(float) * hd);
    }
    for (int j = 0; j < nk; j++) { /* weighted values: each value row read once for every head */
        const float *v = vb + (size_t)(j0 + j) * a->v.ld;
        for (int h = 0; h < H; h++) {
            const float p = s[(size_t)h * ATTN_DEC_KEYS + j], *vh = v + (size_t)(h / group) * hd;
            float *acc = part + (size_t)h * (hd + 2) + 2;
            for (int c = 0; c < hd; c++)
                acc[c] += p * vh[c];
        }
    }
}

/* The forward at T = 1: the pieces of every sequence as jobs, then each sequence's merged in key order. */
static void fwd_decode(const attn_args *a, float *o, int ldo) {
    const int H = a->H, hd = a->hd;
    /* sequence b's keys [lo[b], hi[b]) are jobs first[b] .. first[b + 1] - 1 */
    int *first = xmalloc(sizeof(int) * (a->B + 1)), *lo = xmalloc(sizeof(int) * a->B),
        *hi = xmalloc(sizeof(int) * a->B);
    first[0] = 0;
    for (int b = 0; b < a->B; b++) {
        key_range(a, b, 0, &lo[b], &hi[b]);
        first[b + 1] = first[b] + (hi[b] - lo[b] + ATTN_DEC_KEYS - 1) / ATTN_DEC_KEYS;
    }
    const int jobs = first[a->B];
    float *parts = xmalloc(sizeof(float) * ((size_t)jobs * H * (hd + 2) + 1));
#pragma omp parallel
    {
        float *s = xmalloc(sizeof(float) * H * ATTN_DEC_KEYS);
#pragma omp for schedule(dynamic, 1)
        for (int job = 0; job < jobs; job++) {
            int b = 0;
            while (first[b + 1] <= job) b++;
            const int j0 = lo[b] + (job - first[b]) * ATTN_DEC_KEYS;
            dec_piece(a, b, j0, imin(ATTN_DEC_KEYS, hi[b] - j0), s, parts + (size_t)job * H * (hd + 2));
        }
        free(s);
    }
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < H; h++) {
            float m = -INFINITY, l = 0.0f, *orow = o + (size_t)b * ldo + (size_t)h * hd;
            for (int job = first[b]; job < first[b + 1]; job++)
                m = fmaxf(m, parts[((size_t)job * H + h) * (hd + 2)]);
            memset(orow, 0, sizeof(float) * hd);
            for (int job = first[b]; job < first[b + 1]; job++) {
                const float *ph = parts + ((size_t)job * H + h) * (hd + 2), corr = expf(ph[0] - m);
                l += ph[1] * corr;
                for (int c = 0; c < hd; c++)
                    orow[c] += ph[2 + c] * corr;
            }
            for (int c = 0; c < hd; c++)
                orow[c] /= l;
            if (a->lse) a->lse[(size_t)b * H + h] = m + logf(l);
        }
    free(parts), free(first), free(lo), free(hi);
}

void cpu_attn_fwd_tiled(const attn_args *a, float *o, int ldo) {
    if (a->T == 1) {
        fwd_decode(a, o, ldo);
        return;
    }
    const int nqb = (a->T + ATTN_BQ - 1) / ATTN_BQ;
    const long jobs = (long)a->B * a->KV * nqb;
#pragma omp parallel
    {
        attn_tiles w = tiles_alloc(a, 0);
        /* the last query blocks, which see the most keys, first: dynamic scheduling then evens out the tail */
#pragma omp for schedule(dynamic, 1)
        for (long job = 0; job < jobs; job++) {
            const int bk = (int)(job % ((long)a->B * a->KV)), qi = nqb - 1 - (int)(job / ((long)a->B * a->KV));
            const qblock qb = qblock_of(a, bk / a->KV, bk % a->KV, qi * ATTN_BQ);
            fwd_block(a, &qb, o, ldo, &w);
        }
        tiles_free(&w);
    }
}

/* The backward of one query block: its dQ rows (=, row stride lddq), its keys' dK, dV rows (+=, row stride ldd). */
static void bwd_block(const attn_args *a, const qblock *qb, const float *o, int ldo, const float *dout, int lddo,
                      float *dq, int lddq, float *dkb, float *dvb, int ldd, attn_tiles *w) {
    const int hd = a->hd, group = a->H / a->KV, M = qb->M;
    const float scale = 1.0f / sqrtf((float)hd);
    const float *kb = mat_f(a->k) + qb->b * a->kv_bstride + (size_t)qb->kh * hd,
                *vb = mat_f(a->v) + qb->b * a->kv_bstride + (size_t)qb->kh * hd;
    pack_q(a, qb, scale, w->qs);
    for (int r = 0; r < M; r++) { /* dO packed, D = rowsum(dO o), lse */
        const int h = qb->kh * group + r / qb->nq, t = qb->t0 + r % qb->nq;
        const size_t row = (size_t)qb->b * a->T + t;
        const float *dor = dout + row * lddo + (size_t)h * hd, *orow = o + row * ldo + (size_t)h * hd;
        float di = 0.0f;
        for (int c = 0; c < hd; c++)
            di += dor[c] * orow[c];
        memcpy(w->dout + (size_t)r * hd, dor, sizeof(float) * hd);
        w->di[r] = di, w->m[r] = a->lse[((size_t)qb->b * a->H + h) * a->T + t];
    }
    memset(w->acc, 0, sizeof(float) * M * hd);
    for (int j0 = qb->jlo; j0 < qb->jhi; j0 += ATTN_BK) {
        const int nk = imin(ATTN_BK, qb->jhi - j0), wd = tile_scores(a, qb, w->qs, kb, j0, nk, w->s);
        for (int r = 0; r < M; r++) /* P = exp(S - lse) */
            row_exp(w->s + (size_t)r * ATTN_BK, wd, w->m[r]);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, M, 1.0f, w->s, ATTN_BK, w->dout, hd, 1.0f,
                    dvb + (size_t)j0 * ldd, ldd); /* dV += P^T dO */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, nk, hd, 1.0f, w->dout, hd, vb + (size_t)j0 * a->v.ld,
                    a->v.ld, 0.0f, w->dp, ATTN_BK); /* dP = dO V^T */
        for (int r = 0; r < M; r++) {               /* dS = P (dP - D), in place of dP */
            const float *pr = w->s + (size_t)r * ATTN_BK;
            float *dr = w->dp + (size_t)r * ATTN_BK;
            const vf di = vf_set1(w->di[r]);
            for (int c = 0; c < wd; c += VW)
                vf_store(dr + c, vf_load(pr + c) * (vf_load(dr + c) - di));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, hd, nk, 1.0f, w->dp, ATTN_BK,
                    kb + (size_t)j0 * a->k.ld, a->k.ld, 1.0f, w->acc, hd); /* dQ += dS K */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, M, 1.0f, w->dp, ATTN_BK, w->qs, hd, 1.0f,
                    dkb + (size_t)j0 * ldd, ldd); /* dK += dS^T Qs */
    }
    for (int r = 0; r < M; r++) {
        const int h = qb->kh * group + r / qb->nq, t = qb->t0 + r % qb->nq;
        float *dqr = dq + ((size_t)qb->b * a->T + t) * lddq + (size_t)h * hd;
        for (int c = 0; c < hd; c++)
            dqr[c] = w->acc[(size_t)r * hd + c] * scale;
    }
}

/* The fewest jobs the backward makes: where B * KV is smaller, each (sequence, key/value head) splits its query blocks
 * into parts of about equal work, each part summing its dK, dV into a buffer of its own, and the parts' buffers are
 * added in order at the end. A count of the shape's alone, so the result does not depend on the thread count. */
#define ATTN_BWD_JOBS 8

/* bounds[0..parts]: the query blocks [bounds[p], bounds[p + 1]) of part p, of about equal work (the keys they see);
 * the same for every sequence (training: no cache) */
static void split_blocks(const attn_args *a, int nqb, int parts, int *bounds) {
    double total = 0, acc = 0;
    for (int i = 0; i < nqb; i++) {
        const qblock qb = qblock_of(a, 0, 0, i * ATTN_BQ);
        total += (double)qb.nq * (qb.jhi - qb.jlo);
    }
    int p = 1;
    bounds[0] = 0;
    for (int i = 0; i < nqb; i++) {
        const qblock qb = qblock_of(a, 0, 0, i * ATTN_BQ);
        acc += (double)qb.nq * (qb.jhi - qb.jlo);
        while (p < parts && acc >= total * p / parts)
            bounds[p++] = i + 1;
    }
    while (p <= parts)
        bounds[p++] = nqb;
}

void cpu_attn_bwd_tiled(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq, float *dk,
                        float *dv, int ldd) {
    const int T = a->T, KV = a->KV, hd = a->hd, nbk = a->B * KV, nqb = (T + ATTN_BQ - 1) / ATTN_BQ;
    const int parts = imax(1, imin(nqb, (ATTN_BWD_JOBS + nbk - 1) / nbk));
    int *bounds = xmalloc(sizeof(int) * (parts + 1));
    split_blocks(a, nqb, parts, bounds);
    /* parts > 1: [B * KV, parts, 2, T, hd], each part's dK then dV */
    float *sums = parts > 1 ? xmalloc(sizeof(float) * (size_t)nbk * parts * 2 * T * hd) : NULL;
#pragma omp parallel
    {
        attn_tiles w = tiles_alloc(a, 1);
#pragma omp for schedule(dynamic, 1)
        for (int job = 0; job < nbk * parts; job++) {
            const int b = job / parts / KV, kh = job / parts % KV, p = job % parts;
            float *dkb = dk + (size_t)b * T * ldd + (size_t)kh * hd, *dvb = dv + (size_t)b * T * ldd + (size_t)kh * hd;
            int ld = ldd;
            if (sums) dkb = sums + (size_t)job * 2 * T * hd, dvb = dkb + (size_t)T * hd, ld = hd;
            for (int j = 0; j < T; j++) {
                memset(dkb + (size_t)j * ld, 0, sizeof(float) * hd);
                memset(dvb + (size_t)j * ld, 0, sizeof(float) * hd);
            }
            for (int qi = bounds[p]; qi < bounds[p + 1]; qi++) {
                const qblock qb = qblock_of(a, b, kh, qi * ATTN_BQ);
                bwd_block(a, &qb, o, ldo, dout, lddo, dq, ldd, dkb, dvb, ld, &w);
            }
        }
        if (sums) { /* the parts' sums in order */
#pragma omp for schedule(static)
            for (long r = 0; r < (long)nbk * T; r++) {
                const int bk = (int)(r / T), j = (int)(r % T), b = bk / KV, kh = bk % KV;
                const size_t at = ((size_t)b * T + j) * ldd + (size_t)kh * hd;
                for (int c = 0; c < hd; c++) {
                    const float *s0 = sums + (size_t)bk * parts * 2 * T * hd + (size_t)j * hd + c;
                    float sk = 0.0f, sv = 0.0f;
                    for (int p = 0; p < parts; p++)
                        sk += s0[(size_t)p * 2 * T * hd], sv += s0[(size_t)(2 * p + 1) * T * hd];
                    dk[at + c] = sk, dv[at + c] = sv;
                }
            }
        }
        tiles_free(&w);
    }
    free(sums), free(bounds);
}
