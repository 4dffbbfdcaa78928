/* The one-process world (see dist.h): a build without MPI. Every collective is the identity, so the training
 * loop has one code path for one rank and for many; in the --gpus world (dist_spawn.c) every call goes there. */
#ifndef SSM_MPI
#include "dist/dist.h"
#include "common.h"
#include "dist/dist_nccl.h"
#include "dist/dist_spawn.h"

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
    if (spawn_launched()) return spawn_start(); /* `ssm train --gpus N` */
    /* several copies of a one-process build would each train alone into the same run directory */
    const long n = launched_size();
    if (n > 1)
        return ssm_error("started by mpirun with %ld processes, but this ssm was built without MPI: rebuild it with "
                         "`make MPI=1` (needs libopenmpi-dev), or run it without mpirun", n);
    return 0;
}
int dist_stop(void) { return spawn_launched() ? spawn_stop() : 0; }
int dist_rank(void) { return spawn_rank(); } /* 0 and 1 outside the --gpus world */
int dist_size(void) { return spawn_size(); }
const char *dist_name(void) { return spawn_active() ? "nccl" : "single"; }
void dist_allreduce_sum(float *x, size_t n) {
    if (spawn_active()) spawn_allreduce(x, n, NCCL_T_FLOAT, NCCL_OP_SUM);
}
void dist_allreduce_sum_f64(double *x, size_t n) {
    if (spawn_active()) spawn_allreduce(x, n, NCCL_T_DOUBLE, NCCL_OP_SUM);
}
void dist_allgather(float *x, size_t n) {
    if (spawn_active()) spawn_allgather(x, n);
}
void dist_gather(float *all, const float *mine, size_t n) {
    if (spawn_active()) spawn_gather(all, mine, n);
    else if (all != mine) memcpy(all, mine, n * sizeof(float));
}
void dist_broadcast(void *buf, size_t bytes) {
    if (spawn_active()) spawn_broadcast(buf, bytes);
}
void dist_barrier(void) {
    int x = 0;
    if (spawn_active()) spawn_allreduce(&x, 1, NCCL_T_INT, NCCL_OP_SUM);
}
int dist_first_failure(int failed) {
    if (!spawn_active()) return failed ? 0 : -1;
    int first = failed ? spawn_rank() : spawn_size();
    spawn_allreduce(&first, 1, NCCL_T_INT, NCCL_OP_MIN);
    return first < spawn_size() ? first : -1;
}
int dist_max(int x) {
    if (spawn_active()) spawn_allreduce(&x, 1, NCCL_T_INT, NCCL_OP_MAX);
    return x;
}
void dist_abort(int code) {
    if (spawn_active()) spawn_abort(code);
    exit(code);
}
#endif
