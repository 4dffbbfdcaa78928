/* Attention's ops on the CPU: rotary positions, the KV cache's append, and causal grouped-query softmax attention
 * forward and backward (ops_list.h has their semantics, ops.h the attn_args).
 *
 * The attention materializes one query's scores at a time (a row of the T x T matrix) in a per-thread buffer:
 * exact softmax with the row's maximum, then the weighted sum of values. The forward keeps each query's
 * log-sum-exp; the backward recomputes the probabilities from it (FlashAttention's recomputation, one query row at
 * a time), so nothing of size T x T is ever stored. Threads split the forward over (sequence, head, query) and the
 * backward over (sequence, key/value head): a key/value head's gradients sum over the query heads of its group and
 * every query, so one thread owns them (deterministic, no atomics). */
#include "backend/cpu/cpu_ops.h"
#include "common.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* HF Llama's inverse frequencies, float32: 1 / theta^(2i/hd) */
static float rope_inv_freq(float theta, int i, int hd) { return (float)(1.0 / pow((double)theta, 2.0 * i / hd)); }

void cpu_rope(float *x, int ldx, const int *pos, int B, int T, int n_heads, int hd, float theta, int inverse) {
    const int half = hd / 2;
#pragma omp parallel for schedule(static) if ((size_t)B * T * n_heads * hd > 32768)
    for (int r = 0; r < B * T; r++) {
        const int b = r / T, t = r % T;
        const float p = (float)(t + (pos ? pos[b] : 0));
        float *row = x + (size_t)r * ldx;
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

static int attn_max_keys(const attn_args *a) {
    int n = a->T;
    for (int b = 0; a->nk && b < a->B; b++)
        n = imax(n, a->nk[b]);
    return n;
}

void cpu_attn_fwd(const attn_args *a, float *o, int ldo) {
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
            const float *q = a->q + ((size_t)b * T + t) * a->ldq + (size_t)h * hd;
            const float *kb = a->k + b * a->kv_bstride + (size_t)kh * hd,
                        *vb = a->v + b * a->kv_bstride + (size_t)kh * hd;
            float mx = -INFINITY;
            for (int j = lo; j < hi; j++) {
                p[j - lo] = dotf(q, kb + (size_t)j * a->ldkv, hd) * scale;
                mx = fmaxf(mx, p[j - lo]);
            }
            double sum = 0;
            for (int j = lo; j < hi; j++)
                sum += p[j - lo] = expf(p[j - lo] - mx);
            const float inv = (float)(1.0 / sum);
            float *oh = o + ((size_t)b * T + t) * ldo + (size_t)h * hd;
            memset(oh, 0, sizeof(float) * hd);
            for (int j = lo; j < hi; j++) {
                const float w = p[j - lo] * inv, *vj = vb + (size_t)j * a->ldkv;
                for (int d = 0; d < hd; d++)
                    oh[d] += w * vj[d];
            }
            if (a->lse) a->lse[((size_t)b * H + h) * T + t] = mx + (float)log(sum);
        }
        free(p);
    }
}

void cpu_attn_bwd(const attn_args *a, const float *o, int ldo, const float *dout, int lddo, float *dq, float *dk,
                  float *dv, int ldd) {
    CHECK(!a->nk && a->lse, "attn_bwd: training's attention alone (no cache), after a forward that kept lse");
    const int B = a->B, T = a->T, H = a->H, KV = a->KV, hd = a->hd, group = H / KV;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1)
    for (int job = 0; job < B * KV; job++) {
        const int b = job / KV, kh = job % KV;
        const float *kb = a->k + b * a->kv_bstride + (size_t)kh * hd, *vb = a->v + b * a->kv_bstride + (size_t)kh * hd;
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
                const float *q = a->q + row * a->ldq + (size_t)h * hd, *doh = dout + row * lddo + (size_t)h * hd;
                const float Di = dotf(doh, o + row * ldo + (size_t)h * hd, hd),
                            lse = a->lse[((size_t)b * H + h) * T + t];
                float *dqh = dq + row * ldd + (size_t)h * hd;
                memset(dqh, 0, sizeof(float) * hd);
                for (int j = lo; j < hi; j++) {
                    const float *kj = kb + (size_t)j * a->ldkv, *vj = vb + (size_t)j * a->ldkv;
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
