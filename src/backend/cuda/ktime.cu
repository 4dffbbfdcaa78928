// SSM_KERNEL_TIMES (ktime.h): events recorded after each marked kernel, resolved in batches (a synchronization
// every KT_BATCH marks, and at exit), their differences summed per name.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/ktime.h"

enum { KT_BATCH = 256, KT_NAMES = 64, KT_EVENTS = 2 * KT_BATCH + 2 };

static struct {
    cudaEvent_t prev;                         // the last start or mark: where the next interval begins
    cudaEvent_t from[KT_BATCH], to[KT_BATCH]; // pending intervals, named pending[i]
    const char *pending[KT_BATCH];
    int n;
    cudaEvent_t made[KT_EVENTS]; // every event since the last resolve (each released there, but prev)
    int n_made;
    const char *name[KT_NAMES];
    double ms[KT_NAMES];
    long calls[KT_NAMES];
    int names;
} kt;
static int kt_enabled = -1; // SSM_KERNEL_TIMES: -1 not read yet

static cudaEvent_t kt_record(void) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    CUDA_CHECK(cudaEventRecord(e, cudaStreamPerThread));
    kt.made[kt.n_made++] = e;
    return e;
}

// waits for the pending intervals, adds them to their names' totals and releases every event but prev
static void kt_resolve(void) {
    if (kt.n_made == 0) return;
    CUDA_CHECK(cudaEventSynchronize(kt.made[kt.n_made - 1]));
    for (int i = 0; i < kt.n; i++) {
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, kt.from[i], kt.to[i]));
        int k = 0;
        while (k < kt.names && strcmp(kt.name[k], kt.pending[i]) != 0)
            k++;
        if (k == kt.names && kt.names < KT_NAMES) kt.name[kt.names++] = kt.pending[i];
        if (k < kt.names) kt.ms[k] += ms, kt.calls[k]++;
    }
    for (int i = 0; i < kt.n_made; i++)
        if (kt.made[i] != kt.prev) CUDA_CHECK(cudaEventDestroy(kt.made[i]));
    kt.n = 0, kt.n_made = 0;
    if (kt.prev) kt.made[kt.n_made++] = kt.prev;
}

static void kt_print(void) {
    kt_resolve();
    double total = 0;
    for (int k = 0; k < kt.names; k++)
        total += kt.ms[k];
    fprintf(stderr, "kernel times (SSM_KERNEL_TIMES):\n%-28s %8s %12s %10s %7s\n", "kernel", "calls", "total ms",
            "ms/call", "share");
    for (int done = 0; done < kt.names; done++) { // largest first: a selection, the table is short
        int best = -1;
        for (int k = 0; k < kt.names; k++)
            if (kt.calls[k] >= 0 && (best < 0 || kt.ms[k] > kt.ms[best])) best = k;
        fprintf(stderr, "%-28s %8ld %12.3f %10.4f %6.1f%%\n", kt.name[best], kt.calls[best], kt.ms[best],
                kt.ms[best] / kt.calls[best], total > 0 ? 100 * kt.ms[best] / total : 0);
        kt.calls[best] = -1;
    }
}

static int kt_on(void) {
    if (kt_enabled < 0) {
        const char *v = getenv("SSM_KERNEL_TIMES");
        kt_enabled = v && strcmp(v, "1") == 0;
        if (kt_enabled) atexit(kt_print);
    }
    return kt_enabled;
}

extern "C" void ktime_start(void) {
    if (!kt_on()) return;
    if (kt.n == KT_BATCH || kt.n_made + 2 > KT_EVENTS) kt_resolve();
    kt.prev = kt_record();
}

extern "C" void ktime_mark(const char *name) {
    if (!kt_on()) return;
    if (kt.n == KT_BATCH || kt.n_made + 2 > KT_EVENTS) kt_resolve();
    if (!kt.prev) kt.prev = kt_record();
    const cudaEvent_t e = kt_record();
    kt.from[kt.n] = kt.prev, kt.to[kt.n] = e, kt.pending[kt.n++] = name;
    kt.prev = e;
}
