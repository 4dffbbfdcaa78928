/* Data-parallel collectives between the processes (ranks) of one training job: one process per rank, started
 * by mpirun (or slurm), or by `ssm train --gpus N` (dist_spawn.c: rank 0 starts the others). Host buffers: dist_mpi.c
 * (OpenMPI, built with `make MPI=1` or where mpicc is found) or dist_single.c (one process; every collective is the
 * identity); in the --gpus world both hand their calls to dist_spawn.c, which has no MPI and carries them over NCCL.
 * Device buffers (dist_device_*): dist_nccl.c, one NCCL communicator of one GPU per rank, in builds with NCCL.
 *
 * The job is process-wide state on purpose: MPI_COMM_WORLD is, and one process per rank is the design. Until
 * dist_start() has run (or without mpirun) the world is one rank and nothing here talks to anyone.
 *
 * Every collective must be called by every rank in the same order. A rank that cannot go on calls dist_abort
 * (or exits: dist_start installs an exit handler that aborts the job), so that no rank waits for it forever. */
#ifndef SSM_DIST_H
#define SSM_DIST_H

#include <stddef.h>
#include <stdint.h>

/* Joins the job when this process was started by mpirun/srun (MPI_Init), and checks that every rank runs the
 * same build (rank 0's executable hash, broadcast). 0; -1 with a one-line ssm_error() (a build without MPI
 * started by mpirun with several processes, a rank with another build); or -2 on the ranks that stay quiet
 * because another one reported the error (one line for the job, not one per rank). After an error the job
 * is left (dist_stop). Calling it twice is harmless. */
int dist_start(void);
/* Leaves the job cleanly (MPI_Finalize; in the --gpus world a barrier, and rank 0 waits for the others); later
 * collectives are one-rank identities again. 1 when a rank this process started exited with an error, else 0. */
int dist_stop(void);
int dist_rank(void); /* 0 .. dist_size() - 1 */
int dist_size(void); /* 1 without a job */
const char *dist_name(void); /* "single", "mpi" or "nccl" (the --gpus world) */
/* `ssm train --gpus N`, before dist_start: checks that N GPUs exist and starts ranks 1 .. N-1 (see dist_spawn.h). */
int dist_spawn(int gpus, const char *run_dir);

/* x[0..n) = the sum over ranks of every rank's x[0..n), on every rank (in place). */
void dist_allreduce_sum(float *x, size_t n);
void dist_allreduce_sum_f64(double *x, size_t n);
/* The part [*lo, *hi) of a flat buffer of n floats that `rank` owns (ZeRO-1: its AdamW moments): contiguous
 * shards in rank order, of multiples of 16 floats but the last (src/dist/dist_shard.c). */
void dist_shard(size_t n, int rank, size_t *lo, size_t *hi);
/* In place: every rank's shard of x[0..n) to every rank (after each rank updated its shard). */
void dist_allgather(float *x, size_t n);
/* On rank 0, all[0..n) = every rank's shard of a buffer of n floats, from `mine` ([hi - lo], this rank's shard);
 * `all` is not read on the others (may be NULL). */
void dist_gather(float *all, const float *mine, size_t n);
/* bytes of buf from rank 0 to every other rank. */
void dist_broadcast(void *buf, size_t bytes);
void dist_barrier(void);
/* The lowest rank whose `failed` is non-zero, or -1 when none is: every rank learns whether all went well, so
 * that they fail together (cleanly, with one message) instead of some waiting in the next collective. */
int dist_first_failure(int failed);
/* The largest x over ranks (a stop signal any rank received, so that all stop at the same step). */
int dist_max(int x);
/* Ends the whole job at once (MPI_Abort): for a rank that fails where the others cannot know. */
void dist_abort(int code) __attribute__((noreturn));
/* A hash of this process's executable (0 without /proc): ranks compare it at start-up (src/dist/dist_build.c). */
uint64_t dist_build_hash(void);

/* ---- device buffers (GPUs: src/dist/dist_nccl.c; without NCCL, dist_nccl_none.c refuses several GPUs) ---- */
/* The device this rank trains on, into name: `device` itself with one rank or on the CPU; with several ranks
 * "cuda" becomes cuda:<this rank's index on its machine> (0 when the launcher shows each rank one GPU). -1 with
 * ssm_error(): cuda:N given with several ranks, more ranks on a machine than it has GPUs, no NCCL. */
int dist_device_pick(const char *device, char *name, size_t cap);
/* Collectively, once the model is on GPU `device`: the NCCL communicator (its id broadcast over MPI; the --gpus
 * world made it at dist_start). 0 (also with one rank, or on the CPU: nothing to do) or -1 with ssm_error(). */
int dist_device_start(int device);
int dist_device_ready(void); /* device collectives reach other ranks (several ranks, a communicator) */
/* Queued on cudaStreamPerThread, the backend's stream, in the calling thread's current device (bind the model
 * first); the host does not wait. The same contract as the host versions above. */
void dist_device_allreduce_sum(float *d, size_t n);
/* ... and then the bound CUDA context's bf16 weight shadow, when d is the buffer it shadows, rounded again from
 * all of d (weights16.cu: the gather rewrote what AdamW did not shadow). */
void dist_device_allgather(float *d, size_t n);
void dist_device_broadcast(void *d, size_t bytes);

#endif
