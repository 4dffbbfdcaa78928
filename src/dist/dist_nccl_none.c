/* A build without NCCL (CPU-only, or a toolkit without nccl.h): see dist_nccl.h. Several ranks train on the CPU
 * alone; --gpus and several ranks with --device cuda are refused, naming the reason. */
#ifndef SSM_NCCL
#include "common.h"
#include "dist/dist.h"
#include "dist/dist_nccl.h"

#include <stdio.h>
#include <string.h>

static int no_nccl(void) {
    return ssm_error("this ssm was built without NCCL (it needs a CUDA build whose toolkit has nccl.h): several GPUs "
                     "cannot train together; use --device cpu with mpirun, or one GPU");
}

int nccl_gpu_count(void) { return no_nccl(); }
int nccl_new_id(unsigned char id[NCCL_ID_BYTES]) { (void)id; return no_nccl(); }
int nccl_start(int rank, int size, int device, const unsigned char id[NCCL_ID_BYTES]) {
    (void)rank, (void)size, (void)device, (void)id;
    return no_nccl();
}
int nccl_active(void) { return 0; }
int nccl_device(void) { return -1; }
void nccl_stop(void) {}
void nccl_abort(void) {}
int nccl_claim_end(void) {
    static int claimed;
    return __atomic_exchange_n(&claimed, 1, __ATOMIC_SEQ_CST) == 0;
}
void nccl_host_reduce(void *x, size_t n, int type, int op) { (void)x, (void)n, (void)type, (void)op; }
void nccl_host_broadcast(void *buf, size_t bytes, int root) { (void)buf, (void)bytes, (void)root; }

int dist_device_pick(const char *device, char *name, size_t cap) {
    snprintf(name, cap, "%s", device);
    if (dist_size() == 1 || strncmp(device, "cuda", 4)) return 0;
    return no_nccl();
}
int dist_device_start(int device) { (void)device; return dist_size() == 1 ? 0 : no_nccl(); }
int dist_device_ready(void) { return 0; }
void dist_device_allreduce_sum(float *d, size_t n) { (void)d, (void)n; }
void dist_device_allgather(float *d, size_t n) { (void)d, (void)n; }
void dist_device_broadcast(void *d, size_t bytes) { (void)d, (void)bytes; }
#endif
