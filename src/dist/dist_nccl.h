/* NCCL inside src/dist/ (not for the rest of the library, which uses dist.h): one communicator over one GPU per rank.
 * dist_nccl.c implements it where the build has NCCL (SSM_NCCL: CUDA builds whose toolkit has nccl.h),
 * dist_nccl_none.c otherwise (every call refuses, or is never reached). The MPI world creates the communicator when
 * training moves to a GPU (dist_device_start, the id broadcast over MPI); the world of `ssm train --gpus N`
 * (dist_spawn.c) creates it at dist_start and also carries its control plane over it: host buffers staged through
 * a small device buffer (nccl_host_*), since it has no MPI. */
#ifndef SSM_DIST_NCCL_H
#define SSM_DIST_NCCL_H

#include <stddef.h>

enum { NCCL_ID_BYTES = 128 }; /* sizeof(ncclUniqueId), checked in dist_nccl.c */
enum { NCCL_T_FLOAT, NCCL_T_DOUBLE, NCCL_T_INT };
enum { NCCL_OP_SUM, NCCL_OP_MIN, NCCL_OP_MAX };

/* GPUs this process sees; -1 with ssm_error() when none can be counted (no NCCL in this build, no driver). */
int nccl_gpu_count(void);
/* A new unique id (on rank 0, shared with the others by MPI or a file): 0, or -1 with ssm_error(). */
int nccl_new_id(unsigned char id[NCCL_ID_BYTES]);
/* Joins the communicator of `size` ranks as `rank` on GPU `device` (collective): 0 or -1 with ssm_error(). Starts the
 * watchdog that ends this process, with one line, on an asynchronous NCCL error (a peer gone). */
int nccl_start(int rank, int size, int device, const unsigned char id[NCCL_ID_BYTES]);
int nccl_active(void);
int nccl_device(void); /* the GPU of the communicator */
void nccl_stop(void);  /* destroys the communicator (after the queued work) */
void nccl_abort(void); /* ncclCommAbort: for a process about to exit in the middle of the job */
/* 1 for the first caller only: the threads that may end the job (the watchdogs, a timed-out wait) print one line
 * between them; a later caller waits for the first one's _exit. */
int nccl_claim_end(void);
/* Host buffers through the communicator (the --gpus world's control plane), waiting with a timeout
 * (SSM_NCCL_TIMEOUT seconds, 1800 by default) after which the job ends with one line. In place, on every rank. */
void nccl_host_reduce(void *x, size_t n, int type, int op);
/* bytes of buf from `root` to the others; buf NULL on a rank that does not keep them (only passes them on). */
void nccl_host_broadcast(void *buf, size_t bytes, int root);

#endif
