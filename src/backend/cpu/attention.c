/* Attention's ops on the CPU: rotary positions, the KV cache's append, and causal grouped-query softmax attention
 * forward and backward (ops_list.h has their semantics, ops.h the attn_args).
 *
 * cpu_attn_fwd and cpu_attn_bwd run the tiled float32 kernels of attention_tiled.c (OpenBLAS GEMMs on tiles, online
 * softmax). This file keeps the scalar definition they are tested against (cpu_attn_fwd_ref, cpu_attn_bwd_ref): one
 * query's scores at a time (a row of the T x T matrix) in a per-thread buffer, exact softmax with the row's maximum,
 * then the weighted sum of values; the backward recomputes the probabilities from each query's log-sum-exp, one query
 * row at a time, one (sequence, key/value head) per thread (deterministic, no atomics).
 *
 * bf16 operands (the lean path's, which the CPU runs only as the tests' reference for the GPU's): widened into dense
 * float32 copies, the float32 kernels, the outputs rounded once. */
#include "backend/cpu/cpu_ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* HF Llama's inverse frequencies, float32: 1 / theta^(2i/hd) */
static float rope_inv_freq(float theta, int i, int hd) { return (float)(1.0 / pow((double)theta, 2.0 * i / hd)); }

/* Rotates row r (float32) of x in place. */
static void rope_row(float *row, float p, int n_heads, int hd, float theta, int inverse) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const float a = p * rope_inv_freq(theta, i, hd), c = cosf(a), s = inverse ? -sinf(a) : sinf(a);
        for (int h = 0; h < n_heads; h++) {
            float *xh = row + (size_t)h * hd;
            const float x1 = xh[i], x2 = xh[i + half];
            xh[i] = x1 * c - x2 * s;
            xh[i + half] = x2 * c + x1 * s;
        }
    }
}

void cpu_rope(mat x, const int *pos, int B, int T, int n_heads, int hd, float theta, int inverse) {
    const int cols = n_heads * hd;
#pragma omp parallel for schedule(static) if ((size_t)B * T * n_heads * hd > 32768)
    for (int r = 0; r < B * T; r++) {
        const int b = r / T, t = r % T;
        const float p = (float)(t + (pos ? pos[b] : 0));
        if (mat_f(x)) {
            rope_row(mat_f(x) + (size_t)r * x.ld, p, n_heads, hd, theta, inverse);
        } else { /* bf16: widened, rotated, rounded */
            uint16_t *row16 = mat_h(x) + (size_t)r * x.ld;
            float *row = xmalloc(sizeof(float) * (cols + 1));
            host_f32_from_bf16(row, row16, cols);
            rope_row(row, p, n_heads, hd, theta, inverse);
            host_bf16_from_f32(row16, row, cols);
            free(row);
        }
    }
}

void cpu_kv_append(float *k_cache, float *v_cache, int *pos, const float *k, const float *v, int ldkv, int B, int T,
                   int cap, int kvd) {
    for (int b = 0; b < B; b++) {
        CHECK(pos[b] >= 0 && pos[b] + T <= cap, "kv_append: %d + %d positions in a cache of %d", pos[b], T, cap);
        for (int t = 0; t < T; t++) {
            const size_t at = ((size_t)b * cap + pos[b] + t) * kvd, row = (size_t)b * T + t;
            memcpy(k_cache + at, k + row * ldkv, sizeof(float) * kvd);
            memcpy(v_cache + at, v + row * ldkv, sizeof(float) * kvd);
        }
        pos[b] += T;
    }
}

/* The keys query t of sequence b sees: [*lo, *hi) */
static void attn_range(const attn_args *a, int b, int t, int *lo, int *hi) {
    const int n = a->nk ? a->nk[b] : a->T, i = n - a->T + t; /* the query's position */
    *hi = i + 1;
    *lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0;
}

static float dotf(const float *x, const float *y, int n) {
    float s = 0;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* The most keys a sequence has */
static int attn_max_keys(const attn_args *a) {
    int n = a->T;
    for (int b = 0; a->nk && b < a->B; b++)
        n = imax(n, a->nk[b]);
    return n;
}

static void attn_fwd_ref_f32(const attn_args *a, float *o, int ldo) {
    const int B = a->B, T = a->T, H = a->H, hd = a->hd, group = a->H / a->KV, nmax = attn_max_keys(a);
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel
    {
        float *p = xmalloc(sizeof(float) * (nmax + 1));
#pragma omp for schedule(dynamic, 16)
        for (long job = 0; job < (long)B * H * T; job++) {
            const int b = (int)(job / ((long)H * T)), h = (int)(job / T % H), t = (int)(job % T), kh = h / group;
            int lo, hi;
            attn_range(a, b, t, &lo, &hi);
            const float *q = mat_f(a->q) + ((size_t)b * T + t) * a->q.ld + (size_t)h * hd;
            const float *kb = mat_f(a->k) + b * a->kv_bstride + (size_t)kh * hd,
                        *vb = mat_f(a->v) + b * a->kv_bstride + (size_t)kh * hd;
            float mx = -INFINITY;
            for (int j = lo; j < hi; j++) {
                p[j - lo] = dotf(q, kb + (size_t)j * a->k.ld, hd) * scale;
                mx = fmaxf(mx, p[j - lo]);
            }
            double sum = 0;
            for (int j = lo; j < hi; j++)
                sum += p[j - lo] = expf(p[j - lo] - mx);
            const float inv = (float)(1.0 / sum);
            float *oh = o + ((size_t)b * T + t) * ldo + (size_t)h * hd;
            memset(oh, 0, sizeof(float) * hd);
            for (int j = lo; j < hi; j++) {
                const float w = p[j - lo] * inv, *vj = vb + (size_t)j * a->v.ld;
                for (int d = 0; d < hd; d++)
                    oh[d] += w * vj[d];
            }
            if (a->lse) a->lse[((size_t)b * H + h) * T + t] = mx + (float)log(sum);
        }
        free(p);
    }
}

static void attn_bwd_ref_f32(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                             float *dk, float *dv, int ldd) {
    const int B = a->B, T = a->T, H = a->H, KV = a->KV, hd = a->hd, group = H / KV;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int job = 0; job < B * KV; job++) {
        const int b = job / KV, kh = job % KV;
        const float *kb = mat_f(a->k) + b * a->kv_bstride + (size_t)kh * hd,
                    *vb = mat_f(a->v) + b * a->kv_bstride + (size_t)kh * hd;
        float *dkb = dk + (size_t)b * T * ldd + (size_t)kh * hd, *dvb = dv + (size_t)b * T * ldd + (size_t)kh * hd;
        for (int j = 0; j < T; j++) {
            memset(dkb + (size_t)j * ldd, 0, sizeof(float) * hd);
            memset(dvb + (size_t)j * ldd, 0, sizeof(float) * hd);
        }
        for (int h = kh * group; h < (kh + 1) * group; h++)
            for (int t = 0; t < T; t++) {
                int lo, hi;
                attn_range(a, b, t, &lo, &hi);
                const size_t row = (size_t)b * T + t;
                const float *q = mat_f(a->q) + row * a->q.ld + (size_t)h * hd,
                            *doh = dout + row * lddo + (size_t)h * hd;
                const float Di = dotf(doh, o + row * ldo + (size_t)h * hd, hd),
                            lse = a->lse[((size_t)b * H + h) * T + t];
                float *dqh = dq + row * ldd + (size_t)h * hd;
                memset(dqh, 0, sizeof(float) * hd);
                for (int j = lo; j < hi; j++) {
                    const float *kj = kb + (size_t)j * a->k.ld, *vj = vb + (size_t)j * a->v.ld;
                    const float p = expf(dotf(q, kj, hd) * scale - lse);
                    const float ds = p * (dotf(doh, vj, hd) - Di) * scale;
                    float *dkj = dkb + (size_t)j * ldd, *dvj = dvb + (size_t)j * ldd;
                    for (int d = 0; d < hd; d++) {
                        dqh[d] += ds * kj[d];
                        dkj[d] += ds * q[d];
                        dvj[d] += p * doh[d];
                    }
                }
            }
    }
}

/* ---- the ops: float32 as they are; bf16 widened, computed in float32, rounded ---- */

/* All operands of one dtype (ops.h): 1 for bf16, 0 for float32; n mats besides q, k, v */
static int attn_dtype(const char *op, const attn_args *a, const mat *m, int n) {
    const mat_dtype dt = a->q.dt;
    int same = a->k.dt == dt && a->v.dt == dt && (dt == MAT_F32 || dt == MAT_BF16);
    for (int i = 0; i < n; i++)
        same &= m[i].dt == dt;
    CHECK(same, "%s: q, k, v and the outputs must all be float32 or all bf16", op);
    return dt == MAT_BF16;
}

/* A dense float32 copy [rows, cols] of bf16 rows (ld elements apart) */
static float *widen(const mat m, size_t rows, int cols) { return host_f32_from_bf16_rows(mat_h(m), m.ld, rows, cols); }

/* The float32 arguments of a bf16 a: q [B*T, H*hd], k and v [B, n, KV*hd] dense (n = the most keys a sequence has),
 * the caller frees q, k, v. */
static attn_args widen_args(const attn_args *a) {
    attn_args w = *a;
    const int kvd = a->KV * a->hd, n = attn_max_keys(a);
    w.q = mat_f32(widen(a->q, (size_t)a->B * a->T, a->H * a->hd), a->H * a->hd);
    float *k = xmalloc(sizeof(float) * ((size_t)a->B * n * kvd + 1)),
          *v = xmalloc(sizeof(float) * ((size_t)a->B * n * kvd + 1));
    for (int b = 0; b < a->B; b++) {
        const int nb = a->nk ? a->nk[b] : a->T;
        const mat kb = mat_bf16(mat_h(a->k) + b * a->kv_bstride, a->k.ld),
                  vb = mat_bf16(mat_h(a->v) + b * a->kv_bstride, a->v.ld);
        float *kw = widen(kb, nb, kvd), *vw = widen(vb, nb, kvd);
        memcpy(k + (size_t)b * n * kvd, kw, sizeof(float) * nb * kvd);
        memcpy(v + (size_t)b * n * kvd, vw, sizeof(float) * nb * kvd);
        free(kw), free(vw);
    }
    w.k = mat_f32(k, kvd), w.v = mat_f32(v, kvd), w.kv_bstride = (size_t)n * kvd;
    return w;
}

static void widen_free(attn_args *w) { free(mat_f(w->q)), free(mat_f(w->k)), free(mat_f(w->v)); }

typedef void attn_fwd_f32(const attn_args *a, float *o, int ldo);
typedef void attn_bwd_f32(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq,
                          float *dk, float *dv, int ldd);

static void attn_fwd_any(attn_fwd_f32 *kernel, const attn_args *a, mat o) {
    if (!attn_dtype("attn_fwd", a, &o, 1)) {
        kernel(a, mat_f(o), o.ld);
        return;
    }
    attn_args w = widen_args(a);
    const size_t rows = (size_t)a->B * a->T;
    const int qd = a->H * a->hd;
    float *of = xmalloc(sizeof(float) * (rows * qd + 1));
    kernel(&w, of, qd);
    host_bf16_from_f32_rows(mat_h(o), o.ld, of, rows, qd);
    free(of);
    widen_free(&w);
}

static void attn_bwd_any(attn_bwd_f32 *kernel, const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    CHECK(!a->nk && a->lse, "attn_bwd: training's attention alone (no cache), after a forward that kept lse");
    const mat outs[] = {o, dout, dq, dk, dv};
    if (!attn_dtype("attn_bwd", a, outs, 5)) {
        CHECK(dk.ld == dq.ld && dv.ld == dq.ld, "attn_bwd: dq, dk, dv of one row stride (float32)");
        kernel(a, mat_f(o), o.ld, mat_f(dout), dout.ld, mat_f(dq), mat_f(dk), mat_f(dv), dq.ld);
        return;
    }
    attn_args w = widen_args(a);
    const size_t rows = (size_t)a->B * a->T;
    const int qd = a->H * a->hd, kvd = a->KV * a->hd, W = qd + 2 * kvd;
    float *of = widen(o, rows, qd), *dof = widen(dout, rows, qd), *d = xmalloc(sizeof(float) * (rows * W + 1));
    kernel(&w, of, qd, dof, qd, d, d + qd, d + qd + kvd, W);
    for (size_t r = 0; r < rows; r++) {
        host_bf16_from_f32(mat_h(dq) + r * dq.ld, d + r * W, qd);
        host_bf16_from_f32(mat_h(dk) + r * dk.ld, d + r * W + qd, kvd);
        host_bf16_from_f32(mat_h(dv) + r * dv.ld, d + r * W + qd + kvd, kvd);
    }
    free(of), free(dof), free(d);
    widen_free(&w);
}

void cpu_attn_fwd(const attn_args *a, mat o) { attn_fwd_any(cpu_attn_fwd_tiled, a, o); }
void cpu_attn_bwd(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    attn_bwd_any(cpu_attn_bwd_tiled, a, o, dout, dq, dk, dv);
}
void cpu_attn_fwd_ref(const attn_args *a, mat o) { attn_fwd_any(attn_fwd_ref_f32, a, o); }
void cpu_attn_bwd_ref(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv) {
    attn_bwd_any(attn_bwd_ref_f32, a, o, dout, dq, dk, dv);
}
