/* The profiling backend (see profile.h): one wrapper per op of ops_list.h, each timing the op between two device
 * synchronizations into the op's total. */
#include "backend/profile.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>

static const backend *inner;
static backend wrapped;

static struct {
    long calls;
    double seconds;
} totals[BACKEND_OP_COUNT]; /* by BACKEND_OP_* index */

static double prof_begin(void) {
    inner->sync();
    return omp_get_wtime();
}

static void prof_end(int op, double t0) {
    inner->sync();
    totals[op].calls++;
    totals[op].seconds += omp_get_wtime() - t0;
}

/* The wrapper's body by the op's return type (an op returning another type needs its line here). */
#define PROF_CALL_void(op, call)                                                                                      \
    double t0 = prof_begin();                                                                                         \
    call;                                                                                                             \
    prof_end(op, t0);
#define PROF_CALL_double(op, call)                                                                                    \
    double t0 = prof_begin();                                                                                         \
    double result = call;                                                                                             \
    prof_end(op, t0);                                                                                                 \
    return result;

#define OP(ret, name, params, args, group)                                                                            \
    static ret p_##name params { PROF_CALL_##ret(BACKEND_OP_##name, inner->name args) }
#include "backend/ops_list.h"
#undef OP

const backend *profile_wrap(const backend *in) {
    inner = in;
    wrapped = *in; /* memory functions and names pass through */
    wrapped.fp32 = wrapped.bf16 = &wrapped;
    memset(totals, 0, sizeof totals);
#define OP(ret, name, params, args, group) wrapped.name = in->name ? p_##name : NULL;
#include "backend/ops_list.h"
#undef OP
    return &wrapped;
}

void profile_print(int steps) {
    static const char *const order[] = {"gemm", "scan", "other", "optim"};
    double all = 0, by_cat[4] = {0};
    for (int i = 0; i < BACKEND_OP_COUNT; i++)
        all += totals[i].seconds;
    printf("%-22s %8s %12s %7s\n", "op (per step)", "calls", "ms", "share");
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < BACKEND_OP_COUNT; i++) {
            if (!totals[i].calls || strcmp(backend_op_groups[i], order[c])) continue;
            by_cat[c] += totals[i].seconds;
            printf("%-22s %8.1f %12.3f %6.1f%%\n", backend_op_names[i], (double)totals[i].calls / steps,
                   totals[i].seconds * 1e3 / steps, 100 * totals[i].seconds / all);
        }
    printf("by kind: ");
    for (int c = 0; c < 4; c++)
        printf("%s %.2f ms (%.1f%%)%s", order[c], by_cat[c] * 1e3 / steps, 100 * by_cat[c] / all, c < 3 ? ", " : "\n");
}
