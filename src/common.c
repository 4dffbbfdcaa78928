/* Error buffer, checked allocation and the RNG used for initialization, sampling and data batches. */
#include "common.h"

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <string.h>

static _Thread_local char last_error[512];

int ssm_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ssm_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

void *xmalloc(size_t bytes) {
    void *p = NULL;
    /* 64-byte alignment keeps every tensor on a cache line and lets AVX-512 loads stay aligned. */
    CHECK(posix_memalign(&p, 64, bytes ? bytes : 1) == 0, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = xmalloc(n * size);
    memset(p, 0, n * size);
    return p;
}

void *xrealloc_array(void *p, size_t n, size_t size) {
    CHECK(size == 0 || n <= SIZE_MAX / size, "allocation size overflow (%zu x %zu)", n, size);
    size_t bytes = n * size;
    void *q = realloc(p, bytes > 0 ? bytes : 1);
    CHECK(q, "out of memory reallocating %zu bytes", bytes);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

uint64_t rng_next(rng_t *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float rng_uniform(rng_t *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }

float rng_normal(rng_t *r) {
    double u1 = ((rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}
