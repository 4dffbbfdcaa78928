/* Minimal test harness: each test_*.c is one binary; TEST_CASE blocks print "ok"/"FAIL" lines and
 * main returns the failure count. tests/run_tests.sh adds up the "ok"/"FAIL" lines of every binary. */
#ifndef SSM_TEST_H
#define SSM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_failures, test_current_failed;
static const char *test_current;

#define TEST_BEGIN(name) do { test_current = (name); test_current_failed = 0; } while (0)
#define TEST_END()                                                                                 \
    do {                                                                                           \
        printf("%s - %s\n", test_current_failed ? "FAIL" : "ok", test_current);                   \
        fflush(stdout);                                                                            \
        test_failures += test_current_failed;                                                      \
    } while (0)

/* EXPECT records a failure with file/line and the formatted detail but keeps going. */
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  %s:%d: %s: ", __FILE__, __LINE__, test_current);                              \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            test_current_failed = 1;                                                               \
        }                                                                                          \
    } while (0)

/* Largest |a-b| over max(|b|) across the array: the "relative to the tensor's scale" error. */
static inline double test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

#endif
