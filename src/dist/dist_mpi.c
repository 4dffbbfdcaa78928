/* The MPI world (see dist.h): OpenMPI's collectives over MPI_COMM_WORLD, for CPU training over several
 * processes and machines. Compiled when the Makefile finds MPI (SSM_MPI); dist_single.c otherwise. */
#ifdef SSM_MPI
#include "dist/dist.h"
#include "common.h"
#include "dist/dist_nccl.h"
#include "dist/dist_spawn.h"

#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int world_started, world_stopped, world_rank, world_size = 1;

/* MPI counts are ints: larger buffers go in pieces of at most 2^30 elements */
#define PIECE ((size_t)1 << 30)

/* Started by mpirun or srun: an MPI launcher's variables. Without them MPI is never initialized, so a build
 * with MPI runs alone exactly as a build without (no singleton start-up, no daemons). */
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

/* A rank that leaves through exit() (a user error on it alone, an internal CHECK) before dist_stop: the others
 * would wait in their next collective for good, so the job ends here. */
static void abort_unless_stopped(void) {
    if (world_started && !world_stopped) MPI_Abort(MPI_COMM_WORLD, 1);
}

int dist_start(void) {
    if (spawn_launched()) return spawn_start(); /* `ssm train --gpus N`: no MPI launcher, NCCL alone */
    if (world_started || !launched()) return 0;
    int ok = 0;
    CHECK(MPI_Initialized(&ok) == MPI_SUCCESS, "MPI_Initialized failed");
    if (!ok) CHECK(MPI_Init(NULL, NULL) == MPI_SUCCESS, "MPI_Init failed");
    world_started = 1;
    atexit(abort_unless_stopped);
    CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank) == MPI_SUCCESS, "MPI_Comm_rank failed");
    CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size) == MPI_SUCCESS, "MPI_Comm_size failed");
    const uint64_t mine = dist_build_hash();
    uint64_t root = mine;
    dist_broadcast(&root, sizeof root);
    const int bad = dist_first_failure(root != mine);
    if (bad < 0) return 0;
    int rc = -2; /* the lowest mismatched rank says why; the others leave quietly (dist.h) */
    if (bad == world_rank)
        rc = ssm_error("rank %d runs a different build of ssm than rank 0 (executable hash %016llx, rank 0's %016llx): "
                  "run the same binary on every rank", world_rank, (unsigned long long)mine, (unsigned long long)root);
    else ssm_error("rank %d runs a different build of ssm than rank 0", bad);
    dist_stop();
    return rc;
}

int dist_stop(void) {
    if (spawn_launched()) return spawn_stop();
    if (!world_started || world_stopped) return 0;
    world_stopped = 1;
    nccl_stop(); /* the GPUs' communicator, when training ran on them */
    MPI_Finalize();
    world_rank = 0, world_size = 1;
    return 0;
}

int dist_rank(void) { return spawn_active() ? spawn_rank() : world_rank; }
int dist_size(void) { return spawn_active() ? spawn_size() : world_size; }
const char *dist_name(void) { return spawn_active() ? "nccl" : world_started && !world_stopped ? "mpi" : "single"; }

static int active(void) { return world_started && !world_stopped && world_size > 1; }

static void allreduce(void *x, size_t n, MPI_Datatype type, size_t elem) {
    if (spawn_active()) return spawn_allreduce(x, n, type == MPI_DOUBLE ? NCCL_T_DOUBLE : NCCL_T_FLOAT, NCCL_OP_SUM);
    if (!active()) return;
    for (size_t at = 0; at < n; at += PIECE) {
        const size_t k = n - at < PIECE ? n - at : PIECE;
        CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)x + at * elem, (int)k, type, MPI_SUM, MPI_COMM_WORLD) ==
                  MPI_SUCCESS, "MPI_Allreduce of %zu elements failed", k);
    }
}

void dist_allreduce_sum(float *x, size_t n) { allreduce(x, n, MPI_FLOAT, sizeof(float)); }
void dist_allreduce_sum_f64(double *x, size_t n) { allreduce(x, n, MPI_DOUBLE, sizeof(double)); }

/* every rank's shard of a buffer of n floats, as MPI's counts and displacements (ints: n <= INT_MAX) */
static void shard_counts(size_t n, int *counts, int *displs) {
    CHECK(n <= INT_MAX, "a flat buffer of %zu floats is more than MPI's int counts can shard", n);
    for (int r = 0; r < world_size; r++) {
        size_t lo, hi;
        dist_shard(n, r, &lo, &hi);
        counts[r] = (int)(hi - lo), displs[r] = (int)lo;
    }
}

void dist_allgather(float *x, size_t n) {
    if (spawn_active()) return spawn_allgather(x, n);
    if (!active()) return;
    int *counts = xmalloc(sizeof(int) * world_size), *displs = xmalloc(sizeof(int) * world_size);
    shard_counts(n, counts, displs);
    CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, displs, MPI_FLOAT, MPI_COMM_WORLD) ==
              MPI_SUCCESS, "MPI_Allgatherv of %zu floats failed", n);
    free(counts), free(displs);
}

void dist_gather(float *all, const float *mine, size_t n) {
    if (spawn_active()) return spawn_gather(all, mine, n);
    if (!active()) {
        if (all != mine) memcpy(all, mine, n * sizeof(float));
        return;
    }
    int *counts = xmalloc(sizeof(int) * world_size), *displs = xmalloc(sizeof(int) * world_size);
    shard_counts(n, counts, displs);
    CHECK(MPI_Gatherv(mine, counts[world_rank], MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD) ==
              MPI_SUCCESS, "MPI_Gatherv of %zu floats failed", n);
    free(counts), free(displs);
}

void dist_broadcast(void *buf, size_t bytes) {
    if (spawn_active()) return spawn_broadcast(buf, bytes);
    if (!active()) return;
    for (size_t at = 0; at < bytes; at += PIECE) {
        const size_t k = bytes - at < PIECE ? bytes - at : PIECE;
        CHECK(MPI_Bcast((char *)buf + at, (int)k, MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS,
              "MPI_Bcast of %zu bytes failed", k);
    }
}

void dist_barrier(void) {
    int x = 0;
    if (spawn_active()) spawn_allreduce(&x, 1, NCCL_T_INT, NCCL_OP_SUM);
    else if (active()) CHECK(MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS, "MPI_Barrier failed");
}

int dist_first_failure(int failed) {
    if (spawn_active()) {
        int first = failed ? spawn_rank() : spawn_size();
        spawn_allreduce(&first, 1, NCCL_T_INT, NCCL_OP_MIN);
        return first < spawn_size() ? first : -1;
    }
    if (!active()) return failed ? 0 : -1;
    int first = failed ? world_rank : world_size;
    CHECK(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) == MPI_SUCCESS,
          "MPI_Allreduce failed");
    return first < world_size ? first : -1;
}

int dist_max(int x) {
    if (spawn_active()) spawn_allreduce(&x, 1, NCCL_T_INT, NCCL_OP_MAX);
    else if (active()) CHECK(MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) == MPI_SUCCESS,
                        "MPI_Allreduce failed");
    return x;
}

void dist_abort(int code) {
    if (spawn_active()) spawn_abort(code);
    fflush(stderr);
    if (world_started && !world_stopped) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}
#endif
