/* The world of `ssm train --gpus N` (dist_spawn.c): N processes of one machine, one per GPU, started by the first
 * (rank 0) without MPI; their collectives go over NCCL (dist_nccl.h). Used by dist_mpi.c and dist_single.c, which
 * hand every call over to it while it is active, and by dist_api.c (ssm_dist_spawn). */
#ifndef SSM_DIST_SPAWN_H
#define SSM_DIST_SPAWN_H

#include <stddef.h>

/* In the first process: checks the request (a build with NCCL, enough GPUs), then starts processes 1 .. gpus-1
 * (this executable with the same arguments, told their rank by the environment) and returns 0 in it, or -1 with
 * ssm_error(). In a started one (the environment says so) it returns 0 at once. */
int spawn_processes(int gpus, const char *run_dir);
/* Whether this process belongs to a --gpus job (of more than one rank), from the environment. */
int spawn_launched(void);
/* dist_start of that world: the NCCL id through a file of the run directory, the communicator on GPU rank. */
int spawn_start(void);
/* dist_stop: a barrier, the communicator destroyed and, in rank 0, its processes waited for. 1 when one of them
 * exited with an error (so that rank 0's exit status tells), else 0. */
int spawn_stop(void);
int spawn_active(void); /* started and not stopped */
int spawn_rank(void);
int spawn_size(void);
void spawn_abort(int code) __attribute__((noreturn));
/* The collectives of dist.h on host buffers, over NCCL. */
void spawn_allreduce(void *x, size_t n, int type, int op);
void spawn_allgather(float *x, size_t n);
void spawn_gather(float *all, const float *mine, size_t n);
void spawn_broadcast(void *buf, size_t bytes);

#endif
