/* Comparing two training runs' directories, for the resume tests (CPU and CUDA): the final checkpoint files
 * and every logged loss must be bitwise the same. Include after test.h. */
#ifndef SSM_RUN_COMPARE_H
#define SSM_RUN_COMPARE_H

#include "io/fileio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int test_files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (file_read_all(a, &x, &nx)) return 0;
    if (file_read_all(b, &y, &ny)) return free(x), 0;
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x), free(y);
    return eq;
}

/* EXPECTs that run directories a and b end with the same model and optimizer files and logged the same
 * `steps` losses in the same order. */
static inline void test_expect_same_run(const char *a, const char *b, int steps) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/checkpoint/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint/model.safetensors", b);
    EXPECT(test_files_equal(pa, pb), "final weights differ");
    snprintf(pa, sizeof pa, "%s/checkpoint/optimizer.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint/optimizer.safetensors", b);
    EXPECT(test_files_equal(pa, pb), "final optimizer state differs");
    char *ta, *tb;
    size_t la, lb;
    snprintf(pa, sizeof pa, "%s/metrics.jsonl", a);
    snprintf(pb, sizeof pb, "%s/metrics.jsonl", b);
    if (file_read_all(pa, &ta, &la)) return;
    if (file_read_all(pb, &tb, &lb)) return free(ta);
    int n = 0; /* every "loss" of run a appears in the same order in run b */
    for (char *x = strstr(ta, "\"loss\": "), *y = strstr(tb, "\"loss\": "); x;
         x = strstr(x + 1, "\"loss\": "), y = y ? strstr(y + 1, "\"loss\": ") : NULL, n++) {
        EXPECT(y && strncmp(x, y, 20) == 0, "loss at step %d differs: %.20s vs %.20s", n + 1, x, y ? y : "(none)");
        if (!y) break;
    }
    EXPECT(n == steps, "expected %d logged steps, found %d", steps, n);
    free(ta), free(tb);
}

#endif
