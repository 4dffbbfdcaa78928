/* What the emulator's test programs share (tests/emu/emu_attn.cpp, emu_ssd.cpp): host buffers between guard zones,
 * and EXPECT, which prints a failed check's message and counts it against the case (case_failures; a program adds
 * them up in failures and exits 1 if any). */
#ifndef SSM_EMU_CHECK_H
#define SSM_EMU_CHECK_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

static int failures, case_failures;

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            printf("  # " __VA_ARGS__);                                                                                \
            printf("\n");                                                                                              \
            case_failures++;                                                                                           \
        }                                                                                                              \
    } while (0)

/* n values of T between GUARD guard elements each side, all set to fill; guards_intact: still fill, bit for bit */
#define GUARD 4096
template <typename T> struct guarded {
    std::vector<T> v;
    T *p;
    size_t n;
    guarded(size_t n_, T fill) : v(n_ + 2 * GUARD, fill), p(v.data() + GUARD), n(n_) {}
    bool guards_intact(T fill) const {
        for (size_t i = 0; i < GUARD; i++)
            if (memcmp(&v[i], &fill, sizeof(T)) || memcmp(&v[GUARD + n + i], &fill, sizeof(T))) return false;
        return true;
    }
};
typedef guarded<float> buf32;
typedef guarded<uint16_t> buf16; /* bf16 */

/* n uniform values in [lo, hi) from r (an rng_t, common.h's) */
template <typename R> static void fill(float *p, size_t n, float lo, float hi, R *r) {
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(r);
}

/* the largest difference over the largest |ref| (NaN wins) of n values */
static inline double rel_err(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - ref[i]);
        if (!(d <= num)) num = d;
        den = fmax(den, fabs((double)ref[i]));
    }
    return den > 0 ? num / den : num;
}

#endif
