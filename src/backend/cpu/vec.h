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

#endif
