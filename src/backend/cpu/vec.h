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
