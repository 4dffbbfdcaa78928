/* Shared helpers for the whole library: error reporting, checked allocation, small math. */
#ifndef SSM_COMMON_H
#define SSM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" { /* the CUDA backend's .cu files use ssm_error */
#endif

/* Internal invariant or resource failure (out of memory, I/O on a file we just made): report file and
 * line, then exit. Errors a user can cause go through ssm_error() and a -1/NULL return instead. */
#define CHECK(cond, ...)                                                                                \
    do {                                                                                                \
        if (!(cond)) {                                                                                  \
            fprintf(stderr, "ssm: internal error at %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fputc('\n', stderr);                                                                        \
            exit(2);                                                                                    \
        }                                                                                               \
    } while (0)

/* Records a one-line, user-facing message for the current thread; always returns -1 so callers can
 * write `return ssm_error(...)`. ssm_last_error() (include/ssm.h) reads it back. */
int ssm_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void *xmalloc(size_t bytes);          /* exits with file/line on failure */
void *xcalloc(size_t n, size_t size); /* zeroed */
char *xstrdup(const char *s);
void *xrealloc_array(void *p, size_t n, size_t size); /* n * size bytes, overflow-checked; exits on failure */

/* 64-bit counter-based RNG (splitmix64 stream): deterministic across platforms and thread counts. */
typedef struct {
    uint64_t state;
} rng_t;
uint64_t rng_next(rng_t *r);
float rng_uniform(rng_t *r);              /* [0, 1) */
float rng_normal(rng_t *r);               /* N(0, 1), Box-Muller */

/* The largest vocabulary a model (and so a tokenizer) may have: ids are below this. */
#define SSM_MAX_VOCAB (1 << 20)

static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int imin(int a, int b) { return a < b ? a : b; }

#ifdef __cplusplus
}
#endif

#endif
