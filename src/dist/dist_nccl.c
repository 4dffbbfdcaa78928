/* NCCL for the data-parallel job (dist_nccl.h and dist.h's dist_device_*): one communicator, one GPU per rank
 * (llm.c's way: one process per GPU keeps every CUDA context and stream of the backend single-device).
 *
 * Device collectives go on cudaStreamPerThread, the stream the CUDA backend queues all its work on (Makefile:
 * --default-stream per-thread), so they are ordered after the backward that wrote the gradient and before the
 * AdamW step that reads it, with no synchronization of the host. Control-plane collectives on host memory (the
 * --gpus world, which has no MPI) go through a staging buffer on a stream of their own and are waited for by
 * polling, so that a peer that never answers ends the job after a timeout instead of hanging it. A watchdog thread
 * polls ncclCommGetAsyncError: a peer gone (its process killed, its GPU lost) surfaces there, and the process then
 * aborts the communicator and exits with one line. It also bounds the device collectives: each is followed on the
 * stream by an event, and one not reached SSM_NCCL_TIMEOUT seconds after it was queued (a peer stuck without dying,
 * which NCCL does not report) ends the job the same way. Compiled where the build has NCCL (SSM_NCCL). */
#ifdef SSM_NCCL
#include "dist/dist_nccl.h"
#include "common.h"
#include "dist/dist.h"
#include "ops/ops_cuda.h" /* w16_refresh, w16_note_write */

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(ncclUniqueId) == NCCL_ID_BYTES, "NCCL_ID_BYTES is not sizeof(ncclUniqueId)");

#define NCCL_CHECK(call)                                                                                           \
    do {                                                                                                           \
        const ncclResult_t nccl_rc_ = (call);                                                                      \
        CHECK(nccl_rc_ == ncclSuccess, "%s: %s", #call, ncclGetErrorString(nccl_rc_));                           \
    } while (0)
#define CUDA_OK(call)                                                                                              \
    do {                                                                                                           \
        const cudaError_t cuda_rc_ = (call);                                                                       \
        CHECK(cuda_rc_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(cuda_rc_));                           \
    } while (0)

enum { STAGE_BYTES = 16 << 20 }; /* the host collectives' staging buffer: their buffers go through in pieces */

static ncclComm_t comm;
static int comm_rank, comm_size, comm_device = -1, comm_up;
static void *stage;           /* [STAGE_BYTES] device memory on comm_device */
static cudaStream_t stage_stream;
static cudaEvent_t training_done; /* the backend's stream up to here: staged collectives start after it */
static pthread_t watchdog;
static volatile int watchdog_stop;
/* the last device collective: an event after it on the backend's stream and when it was queued (watchdog reads,
 * the training thread writes: under dev_lock) */
static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;
static cudaEvent_t dev_done;
static double dev_queued;
static int dev_pending;

static double seconds_now(void);

/* the collectives' time limit, seconds (SSM_NCCL_TIMEOUT; rank 0 validates and checkpoints while the others wait) */
static double nccl_timeout(void) {
    const char *env = getenv("SSM_NCCL_TIMEOUT");
    return env && atof(env) > 0 ? atof(env) : 1800;
}

int nccl_gpu_count(void) {
    int n = 0;
    const cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) return 0;
    if (rc != cudaSuccess) return ssm_error("cannot count the GPUs: %s", cudaGetErrorString(rc));
    return n;
}

int nccl_new_id(unsigned char id[NCCL_ID_BYTES]) {
    ncclUniqueId u;
    const ncclResult_t rc = ncclGetUniqueId(&u);
    if (rc != ncclSuccess) return ssm_error("ncclGetUniqueId: %s", ncclGetErrorString(rc));
    memcpy(id, &u, sizeof u);
    return 0;
}

/* One line, the communicator aborted (so that NCCL's own threads stop too), and out: a peer is gone and every
 * collective from here would wait for it. _exit: the exit handlers would try collectives again. */
static int end_claimed;
int nccl_claim_end(void) { return __atomic_exchange_n(&end_claimed, 1, __ATOMIC_SEQ_CST) == 0; }

static void __attribute__((noreturn)) end_job(const char *why) {
    if (!nccl_claim_end())
        for (;;) pause(); /* another thread is ending the job, with its line */
    fprintf(stderr, "ssm: rank %d: %s: ending the job\n", comm_rank, why);
    fflush(stderr);
    if (comm_up) ncclCommAbort(comm);
    _exit(1);
}

/* Whether the last device collective has been waited for longer than the limit (its event not reached). */
static int dev_overdue(double limit) {
    pthread_mutex_lock(&dev_lock);
    int overdue = 0;
    if (dev_pending) {
        const cudaError_t q = cudaEventQuery(dev_done);
        if (q == cudaSuccess) dev_pending = 0;
        else overdue = q == cudaErrorNotReady && seconds_now() - dev_queued > limit;
    }
    pthread_mutex_unlock(&dev_lock);
    return overdue;
}

static void *watch_async_errors(void *unused) {
    (void)unused;
    const double limit = nccl_timeout();
    cudaSetDevice(comm_device); /* this thread's queries of dev_done */
    while (!watchdog_stop) {
        ncclResult_t async = ncclSuccess;
        char why[200];
        if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
            snprintf(why, sizeof why, "NCCL reports %s (another rank died or its GPU failed)",
                     ncclGetErrorString(async));
            end_job(why);
        }
        if (dev_overdue(limit)) {
            snprintf(why, sizeof why, "a collective on the GPU has not finished after %.0f s (SSM_NCCL_TIMEOUT): "
                     "another rank is stuck", limit);
            end_job(why);
        }
        usleep(200 * 1000);
    }
    return NULL;
}

/* After a device collective is queued: its event, for the watchdog. */
static void dev_queued_now(void) {
    pthread_mutex_lock(&dev_lock);
    CUDA_OK(cudaEventRecord(dev_done, cudaStreamPerThread));
    dev_queued = seconds_now(), dev_pending = 1;
    pthread_mutex_unlock(&dev_lock);
}

/* ncclCommInitRank in a thread of its own, which the caller waits for with a timeout: the init is collective, and a
 * rank that never joins (failed before it, under mpirun) would otherwise hold the others in it for good. */
typedef struct {
    ncclComm_t comm;
    ncclUniqueId id;
    int size, rank, device;
    ncclResult_t rc;
    int done; /* atomic */
} init_job;

static void *init_comm(void *p) {
    init_job *j = p;
    j->rc = cudaSetDevice(j->device) == cudaSuccess ? ncclCommInitRank(&j->comm, j->size, j->id, j->rank)
                                                    : ncclUnhandledCudaError;
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

int nccl_start(int rank, int size, int device, const unsigned char id[NCCL_ID_BYTES]) {
    if (comm_up) return 0;
    cudaError_t crc = cudaSetDevice(device);
    if (crc != cudaSuccess) return ssm_error("rank %d: cannot use GPU %d: %s", rank, device, cudaGetErrorString(crc));
    static init_job job; /* static: a thread left in NCCL after a timeout still owns it until the process exits */
    memset(&job, 0, sizeof job);
    memcpy(&job.id, id, sizeof job.id);
    job.size = size, job.rank = rank, job.device = device;
    pthread_t t;
    if (pthread_create(&t, NULL, init_comm, &job)) return ssm_error("rank %d: cannot start a thread", rank);
    const double limit = nccl_timeout(), t0 = seconds_now();
    while (!__atomic_load_n(&job.done, __ATOMIC_ACQUIRE)) {
        if (seconds_now() - t0 > limit)
            return ssm_error("rank %d: the NCCL communicator of %d ranks was not made in %.0f s (SSM_NCCL_TIMEOUT): "
                             "another rank did not join (it failed before, or its GPU is gone)", rank, size, limit);
        usleep(1000);
    }
    pthread_join(t, NULL);
    if (job.rc != ncclSuccess)
        return ssm_error("rank %d: ncclCommInitRank of %d ranks on GPU %d failed: %s", rank, size, device,
                         ncclGetErrorString(job.rc));
    comm = job.comm;
    comm_rank = rank, comm_size = size, comm_device = device, comm_up = 1;
    CUDA_OK(cudaMalloc(&stage, STAGE_BYTES));
    CUDA_OK(cudaStreamCreateWithFlags(&stage_stream, cudaStreamNonBlocking));
    CUDA_OK(cudaEventCreateWithFlags(&training_done, cudaEventDisableTiming));
    CUDA_OK(cudaEventCreateWithFlags(&dev_done, cudaEventDisableTiming));
    dev_pending = 0;
    watchdog_stop = 0;
    CHECK(pthread_create(&watchdog, NULL, watch_async_errors, NULL) == 0, "cannot start the NCCL watchdog thread");
    return 0;
}

static void timing_report(void);

int nccl_active(void) { return comm_up; }
int nccl_device(void) { return comm_device; }

void nccl_stop(void) {
    if (!comm_up) return;
    watchdog_stop = 1;
    pthread_join(watchdog, NULL);
    CUDA_OK(cudaSetDevice(comm_device));
    CUDA_OK(cudaStreamSynchronize(cudaStreamPerThread)); /* the last collectives queued by the backend's thread */
    timing_report();
    NCCL_CHECK(ncclCommDestroy(comm));
    cudaFree(stage), cudaStreamDestroy(stage_stream), cudaEventDestroy(training_done), cudaEventDestroy(dev_done);
    stage = NULL, comm_up = 0, comm_device = -1;
}

void nccl_abort(void) {
    if (!comm_up) return;
    comm_up = 0;
    ncclCommAbort(comm);
}

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits for the staging stream, watching for NCCL errors and the timeout (a peer that never joins this collective:
 * stuck, or gone without NCCL noticing). */
static void stage_wait(void) {
    const double limit = nccl_timeout(), t0 = seconds_now();
    for (;;) {
        const cudaError_t q = cudaStreamQuery(stage_stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) end_job(cudaGetErrorString(q));
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
            end_job(ncclGetErrorString(async));
        if (seconds_now() - t0 > limit) {
            char why[160];
            snprintf(why, sizeof why, "no answer from the other ranks for %.0f s (SSM_NCCL_TIMEOUT)", limit);
            end_job(why);
        }
        usleep(100);
    }
}

/* A staged collective goes after the device collectives this thread already queued on the backend's stream (the
 * weight gather of the step before a stop check): every rank then runs the communicator's operations in the order
 * they were issued, whichever stream NCCL would otherwise let run first. */
static void order_after_training(void) {
    CUDA_OK(cudaEventRecord(training_done, cudaStreamPerThread));
    CUDA_OK(cudaStreamWaitEvent(stage_stream, training_done, 0));
}

static ncclDataType_t nccl_type(int type, size_t *elem) {
    switch (type) {
    case NCCL_T_DOUBLE: *elem = sizeof(double); return ncclFloat64;
    case NCCL_T_INT: *elem = sizeof(int); return ncclInt32;
    default: *elem = sizeof(float); return ncclFloat32;
    }
}

void nccl_host_reduce(void *x, size_t n, int type, int op) {
    CHECK(comm_up, "a NCCL collective without a communicator");
    size_t elem;
    const ncclDataType_t t = nccl_type(type, &elem);
    const ncclRedOp_t o = op == NCCL_OP_MIN ? ncclMin : op == NCCL_OP_MAX ? ncclMax : ncclSum;
    CUDA_OK(cudaSetDevice(comm_device));
    order_after_training();
    for (size_t at = 0; at < n;) {
        const size_t k = n - at < STAGE_BYTES / elem ? n - at : STAGE_BYTES / elem;
        CUDA_OK(cudaMemcpyAsync(stage, (char *)x + at * elem, k * elem, cudaMemcpyHostToDevice, stage_stream));
        NCCL_CHECK(ncclAllReduce(stage, stage, k, t, o, comm, stage_stream));
        CUDA_OK(cudaMemcpyAsync((char *)x + at * elem, stage, k * elem, cudaMemcpyDeviceToHost, stage_stream));
        stage_wait();
        at += k;
    }
}

void nccl_host_broadcast(void *buf, size_t bytes, int root) {
    CHECK(comm_up, "a NCCL collective without a communicator");
    CUDA_OK(cudaSetDevice(comm_device));
    order_after_training();
    for (size_t at = 0; at < bytes;) {
        const size_t k = bytes - at < STAGE_BYTES ? bytes - at : STAGE_BYTES;
        if (comm_rank == root)
            CUDA_OK(cudaMemcpyAsync(stage, (char *)buf + at, k, cudaMemcpyHostToDevice, stage_stream));
        NCCL_CHECK(ncclBroadcast(stage, stage, k, ncclUint8, root, comm, stage_stream));
        if (comm_rank != root && buf)
            CUDA_OK(cudaMemcpyAsync((char *)buf + at, stage, k, cudaMemcpyDeviceToHost, stage_stream));
        stage_wait();
        at += k;
    }
}

/* ---- dist.h's device side --------------------------------------------------------------------------------- */

/* This rank's place among the ranks of its machine: the launcher's word for it, else the rank (one machine). */
static int local_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    if (!getenv("SSM_DIST_RANK"))
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
            const char *v = getenv(vars[i]);
            if (v && *v) return atoi(v);
        }
    return dist_rank();
}

int dist_device_pick(const char *device, char *name, size_t cap) {
    snprintf(name, cap, "%s", device);
    if (dist_size() == 1 || strncmp(device, "cuda", 4)) return 0;
    if (strcmp(device, "cuda"))
        return ssm_error("--device %s with %d ranks: give --device cuda, and rank r uses the r-th GPU of its machine",
                         device, dist_size());
    const int gpus = nccl_gpu_count(), local = local_rank();
    if (gpus < 0) return -1;
    /* a launcher that gives each rank one GPU (CUDA_VISIBLE_DEVICES per rank, slurm's --gpus-per-task=1) */
    const int index = gpus == 1 ? 0 : local;
    if (index >= gpus)
        return ssm_error("rank %d is rank %d of its machine, which has %d GPU%s: start at most %d ranks per machine",
                         dist_rank(), local, gpus, gpus == 1 ? "" : "s", gpus);
    snprintf(name, cap, "cuda:%d", index);
    return 0;
}

int dist_device_start(int device) {
    if (dist_size() == 1) return 0;
    if (comm_up) { /* the --gpus world made it at dist_start */
        if (device != comm_device)
            return ssm_error("rank %d trains on GPU %d, but its NCCL communicator is on GPU %d", dist_rank(), device,
                             comm_device);
        return 0;
    }
    unsigned char id[NCCL_ID_BYTES] = {0};
    const int bad = dist_rank() == 0 && nccl_new_id(id);
    if (dist_first_failure(bad) >= 0) return bad ? -1 : ssm_error("rank 0 could not make a NCCL id");
    dist_broadcast(id, sizeof id); /* over MPI: the world this communicator joins */
    return nccl_start(dist_rank(), dist_size(), device, id);
}

int dist_device_ready(void) { return comm_up && comm_size > 1; }

/* SSM_NCCL_TIMING=1: the gradient all-reduce timed by events around it on the stream (read at the next call, when
 * the host has long waited for later work; so nothing is synchronized for it), summed up on rank 0 at the end
 * (bench/multi_gpu_bench.sh reads the line). */
static struct {
    int on, pending;
    cudaEvent_t start, stop;
    double ms;
    long count;
    size_t bytes;
} timing;

static void timing_collect(void) {
    float ms;
    if (timing.pending && cudaEventElapsedTime(&ms, timing.start, timing.stop) == cudaSuccess)
        timing.ms += ms, timing.count++;
    timing.pending = 0;
}

static void timing_report(void) {
    if (!timing.on) return;
    timing_collect();
    if (comm_rank == 0 && timing.count > 0) {
        const double mean = timing.ms / timing.count, alg = timing.bytes / (mean * 1e-3) / 1e9;
        fprintf(stderr, "nccl all-reduce: %ld of %.1f MB, mean %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n",
                timing.count, timing.bytes / 1e6, mean, alg, alg * 2.0 * (comm_size - 1) / comm_size);
    }
    cudaEventDestroy(timing.start), cudaEventDestroy(timing.stop);
    timing.on = 0;
}

void dist_device_allreduce_sum(float *d, size_t n) {
    if (!dist_device_ready()) return;
    if (!timing.on && getenv("SSM_NCCL_TIMING") && atoi(getenv("SSM_NCCL_TIMING")) > 0) {
        CUDA_OK(cudaEventCreate(&timing.start));
        CUDA_OK(cudaEventCreate(&timing.stop));
        timing.on = 1;
    }
    if (timing.on) {
        timing_collect();
        CUDA_OK(cudaEventRecord(timing.start, cudaStreamPerThread));
    }
    NCCL_CHECK(ncclAllReduce(d, d, n, ncclFloat32, ncclSum, comm, cudaStreamPerThread));
    dev_queued_now();
    if (timing.on) {
        CUDA_OK(cudaEventRecord(timing.stop, cudaStreamPerThread));
        timing.pending = 1, timing.bytes = n * sizeof(float);
    }
}

/* Shards of unequal size (dist_shard's last one is shorter), so not ncclAllGather (equal counts): one broadcast
 * per rank from its shard, grouped into one launch, which moves the same bytes. */
void dist_device_allgather(float *d, size_t n) {
    if (!dist_device_ready()) return;
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < comm_size; r++) {
        size_t lo, hi;
        dist_shard(n, r, &lo, &hi);
        if (hi > lo) NCCL_CHECK(ncclBroadcast(d + lo, d + lo, hi - lo, ncclFloat32, r, comm, cudaStreamPerThread));
    }
    NCCL_CHECK(ncclGroupEnd());
    dev_queued_now();
    /* weights16.cu's rule: a write into the shadowed range drops the shadow; then all of it is rounded again */
    w16_note_write(d, n * sizeof(float));
    w16_refresh(d, n);
}

void dist_device_broadcast(void *d, size_t bytes) {
    if (!dist_device_ready()) return;
    NCCL_CHECK(ncclBroadcast(d, d, bytes, ncclUint8, 0, comm, cudaStreamPerThread));
    dev_queued_now();
}
#endif
