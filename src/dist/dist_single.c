/* The one-process world (see dist.h): a build without MPI. Every collective is the identity, so the training
 * loop has one code path for one rank and for many. */
#ifndef SSM_MPI
#include "dist/dist.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

/* The process count mpirun or srun announced (0: not started by them). */
static long launched_size(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}; /* OpenMPI's mpirun; MPICH, slurm's PMI */
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return strtol(v, NULL, 10);
    }
    return 0;
}

int dist_start(void) {
    /* several copies of a one-process build would each train alone into the same run directory */
    const long n = launched_size();
    if (n > 1)
        return ssm_error("started by mpirun with %ld processes, but this ssm was built without MPI: rebuild it with "
                         "`make MPI=1` (needs libopenmpi-dev), or run it without mpirun", n);
    return 0;
}
void dist_stop(void) {}
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
const char *dist_name(void) { return "single"; }
void dist_allreduce_sum(float *x, size_t n) { (void)x, (void)n; }
void dist_allreduce_sum_f64(double *x, size_t n) { (void)x, (void)n; }
void dist_allgather(float *x, size_t n) { (void)x, (void)n; }
void dist_gather(float *all, const float *mine, size_t n) {
    if (all != mine) memcpy(all, mine, n * sizeof(float));
}
void dist_broadcast(void *buf, size_t bytes) { (void)buf, (void)bytes; }
void dist_barrier(void) {}
int dist_first_failure(int failed) { return failed ? 0 : -1; }
int dist_max(int x) { return x; }
void dist_abort(int code) { exit(code); }
#endif
