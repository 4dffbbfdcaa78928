/* 16-wide float vectors (GCC/Clang vector extensions) and a vectorized exp for the CPU kernels.
 * One vector = 16 channels: a single AVX-512 register, or two AVX2 registers elsewhere. */
#ifndef SSM_CPU_VEC_H
#define SSM_CPU_VEC_H

#include <stdint.h>
#include <string.h>

#define VW 16
typedef float vf __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4), aligned(4)));

static inline vf vf_load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vf_set1(float x) { return (vf){0} + x; }
static inline float vf_sum(vf v) { float s = 0; for (int i = 0; i < VW; i++) s += v[i]; return s; }

/* exp(x) for x <= 88: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial
 * (truncation error < 6e-9 relative, below float rounding), then scale by 2^n through the exponent
 * bits. Inputs below -87.3 flush to 0 (the scan only feeds it dt*A <= 0). */
static inline vf vf_select(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

static inline vf vf_exp(vf x) {
    const vf log2e = vf_set1(1.44269504088896341f), ln2_hi = vf_set1(0.693359375f),
             ln2_lo = vf_set1(-2.12194440e-4f);
    vi underflow = x < vf_set1(-87.3f);
    x = vf_select(underflow, vf_set1(-87.3f), x);
    x = vf_select(x > vf_set1(88.3f), vf_set1(88.3f), x);
    vf half_up = x * log2e + 0.5f;                      /* n = floor(x log2e + 1/2) */
    vi n = __builtin_convertvector(half_up, vi);          /* truncates toward zero... */
    n += __builtin_convertvector(n, vf) > half_up;        /* ...so step down where that rounded up */
    vf nf = __builtin_convertvector(n, vf);
    vf r = x - nf * ln2_hi - nf * ln2_lo;
    vf p = vf_set1(1.0f / 5040);
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vi bits = (n + 127) << 23;
    return vf_select(underflow, vf_set1(0.0f), p * (vf)bits);
}

/* log(x) for finite x > 0 (normal range): x = m 2^k with m in [sqrt(1/2), sqrt(2)), then
 * log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, by its odd series to s^9 (error < 1e-9). */
static inline vf vf_log(vf x) {
    vi bits = (vi)x;
    vi k = ((bits >> 23) & 0xff) - 127;
    vf m = (vf)((bits & 0x007fffff) | 0x3f800000); /* [1, 2) */
    vi big = m > vf_set1(1.41421356f);
    m = vf_select(big, m * 0.5f, m);
    k -= big; /* big is -1 where true */
    vf f = m - 1.0f, s = f / (m + 1.0f), s2 = s * s;
    vf poly = vf_set1(1.0f / 9);
    poly = poly * s2 + 1.0f / 7;
    poly = poly * s2 + 1.0f / 5;
    poly = poly * s2 + 1.0f / 3;
    poly = poly * s2 + 1.0f;
    vf kf = __builtin_convertvector(k, vf);
    return kf * 0.693359375f + (kf * -2.12194440e-4f + 2.0f * s * poly);
}

/* exp(x) - 1 without cancellation near 0: a Taylor series where |x| < 0.35, else vf_exp(x) - 1. */
static inline vf vf_expm1(vf x) {
    vf p = vf_set1(1.0f / 362880);
    p = p * x + 1.0f / 40320;
    p = p * x + 1.0f / 5040;
    p = p * x + 1.0f / 720;
    p = p * x + 1.0f / 120;
    p = p * x + 1.0f / 24;
    p = p * x + 1.0f / 6;
    p = p * x + 0.5f;
    p = p * x * x + x;
    vf ax = vf_select(x < vf_set1(0.0f), -x, x);
    return vf_select(ax < vf_set1(0.35f), p, vf_exp(x) - 1.0f);
}

static inline vf vf_sigmoid(vf x) { return 1.0f / (1.0f + vf_exp(-x)); }

/* softplus(x) = log(1 + exp(x)) as torch computes it (x itself above 20). log1p(e) is taken as
 * log(u) * e / (u - 1) with u = 1 + e, which cancels the rounding of u (Goldberg's trick). */
static inline vf vf_softplus(vf x) {
    vf e = vf_exp(x), u = 1.0f + e;
    vf l = vf_select(u == vf_set1(1.0f), e, vf_log(u) * e / (u - 1.0f));
    return vf_select(x > vf_set1(20.0f), x, l);
}

#ifdef __clang__
#define VF_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define VF_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

/* out[i] = sum of the lanes of v[i], i < 16: a transpose-and-add tree, 45 vector ops for 16 sums
 * instead of 16 separate horizontal reductions of 8 ops each. */
static inline void vf_sum16(const vf *v, float *out) {
    vf c[8], d[4], e[2];
    for (int i = 0; i < 8; i++)
        c[i] = VF_SHUFFLE(v[i], v[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               VF_SHUFFLE(v[i], v[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++)
        d[i] = VF_SHUFFLE(c[i], c[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
               VF_SHUFFLE(c[i], c[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++)
        e[i] = VF_SHUFFLE(d[i], d[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
               VF_SHUFFLE(d[i], d[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    vf f = VF_SHUFFLE(e[0], e[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
           VF_SHUFFLE(e[0], e[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    vf_store(out, f);
}

/* out[i] = sum of the lanes of v[i] for i < n, 16 at a time through vf_sum16. */
static inline void vf_sum_many(const vf *v, float *out, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) vf_sum16(v + i, out + i);
    for (; i < n; i++) out[i] = vf_sum(v[i]);
}

/* Loads nw (<= VW) consecutive floats; the missing lanes are 0, so a partial block is harmless. */
static inline vf vf_load_n(const float *p, int nw) {
    if (nw == VW) return vf_load(p);
    float tmp[VW] = {0};
    memcpy(tmp, p, sizeof(float) * nw);
    return vf_load(tmp);
}

static inline void vf_store_n(float *p, vf v, int nw) {
    if (nw == VW) {
        vf_store(p, v);
        return;
    }
    float tmp[VW];
    vf_store(tmp, v);
    memcpy(p, tmp, sizeof(float) * nw);
}

#endif
