// Where a fused decode step's time goes (SSM_DECODE_TRACE=n, a diagnostic): thread 0 of every block stamps its
// multiprocessor's clock when the block starts, when all its threads reach each grid barrier, when it leaves the
// barrier, and when it ends; the host reads the stamps back after each step and prints, every n steps,
// per phase (the embedding, each layer's phases by kind, the head) the work of the slowest block and of the mean one
// (arrival minus the previous barrier's release, on one clock) and the barrier's own latency (the wait of the block
// that arrived last: the least wait of any). The stamps add a block barrier before each grid barrier; off, nothing.
// Layout: trace [slot][grid], slot 0 the start, 2i + 1 and 2i + 2 the arrival at and release from barrier i, and
// 2 nb + 1 the end (nb barriers).
#ifndef SSM_DECODE_TRACE_CUH
#define SSM_DECODE_TRACE_CUH

#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/grid_sync.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEC_TRACE_KINDS 8  // a layer's phases at most

// the block's clock into slot s, once all its threads got there
__device__ __forceinline__ static void dec_trace_mark(long long *trace, int s) {
    if (!trace) return;
    __syncthreads();
    if (threadIdx.x == 0) trace[(size_t)s * gridDim.x + blockIdx.x] = block_clock();
}

// grid_sync(), stamped when tracing; ph counts the barriers passed
__device__ __forceinline__ static void dec_sync(long long *trace, int &ph) {
    dec_trace_mark(trace, 2 * ph + 1);
    grid_sync();
    if (trace && threadIdx.x == 0) trace[(size_t)(2 * ph + 2) * gridDim.x + blockIdx.x] = block_clock();
    ph++;
}

// dec_sync in its two halves (grid_arrive, grid_wait): dec_arrive(trace, ph), the block's reads that no block writes in
// the closing phase, then dec_wait(trace, ph, its token)
__device__ __forceinline__ static grid_token dec_arrive(long long *trace, int ph) {
    dec_trace_mark(trace, 2 * ph + 1);
    return grid_arrive();
}
__device__ __forceinline__ static void dec_wait(long long *trace, int &ph, grid_token t) {
    grid_wait(t);
    if (trace && threadIdx.x == 0) trace[(size_t)(2 * ph + 2) * gridDim.x + blockIdx.x] = block_clock();
    ph++;
}

// the steps a report averages: SSM_DECODE_TRACE's n; 0 when not tracing
static int dec_trace_every(void) {
    const char *e = getenv("SSM_DECODE_TRACE");
    return e && atoi(e) > 0 ? atoi(e) : 0;
}

// the device buffer for nb barriers and the largest grid of blocks of `threads` the device holds at once, when
// tracing (grown as needed, kept for the process: a diagnostic); else NULL, asking nothing of the device
static long long *dec_trace_buffer(int nb, int device, int threads) {
    static long long *buf;
    static size_t have;
    if (!dec_trace_every()) return NULL;
    int sms = 0, per_sm = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
    const size_t need = (size_t)(2 * nb + 2) * sms * (per_sm / threads);
    if (need > have) {
        if (buf) CUDA_CHECK(cudaFreeAsync(buf, cudaStreamPerThread));
        CUDA_CHECK(cudaMallocAsync((void **)&buf, need * sizeof *buf, cudaStreamPerThread));
        have = need;
    }
    return buf;
}

// Reads one step's stamps (nb = 1 + period * layers barriers, `grid` blocks) and adds them to the running means;
// prints them every SSM_DECODE_TRACE steps. labels: the `period` phases of a layer.
static void dec_trace_report(const long long *dev, int period, const char *const *labels, int layers, int grid) {
    enum { EMBED = DEC_TRACE_KINDS, HEAD, NK };
    static double work_max[NK], work_mean[NK], lat[NK], step;
    static long n[NK], steps;
    static const char *const *kind; // the labels of the steps summed: other labels (another form of the kernel, whose
    if (labels != kind) {           // phases differ and may be fewer than the counts held) start the sums afresh
        memset(work_max, 0, sizeof work_max), memset(work_mean, 0, sizeof work_mean), memset(lat, 0, sizeof lat);
        memset(n, 0, sizeof n), step = 0, steps = 0, kind = labels;
    }
    const int nb = 1 + period * layers, slots = 2 * nb + 2;
    long long *t = (long long *)malloc(sizeof *t * (size_t)slots * grid);
    if (!t) return;
    CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
    CUDA_CHECK(cudaMemcpy(t, dev, sizeof *t * (size_t)slots * grid, cudaMemcpyDeviceToHost));
    int khz = 0, device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device));
    const double us = 1e3 / (khz > 0 ? khz : 1000000); // microseconds a cycle
    double longest = 0;
    for (int i = 0; i <= nb; i++) { // phase i ends at barrier i (nb: the end)
        const int k = i == 0 ? EMBED : i == nb ? HEAD : (i - 1) % period;
        double wmax = 0, wsum = 0, wait = 1e30;
        for (int b = 0; b < grid; b++) {
            const double w = (double)(t[(size_t)(2 * i + 1) * grid + b] - t[(size_t)(2 * i) * grid + b]);
            wmax = w > wmax ? w : wmax, wsum += w;
            if (i < nb) {
                const double l = (double)(t[(size_t)(2 * i + 2) * grid + b] - t[(size_t)(2 * i + 1) * grid + b]);
                wait = l < wait ? l : wait;
            }
        }
        work_max[k] += wmax * us, work_mean[k] += wsum / grid * us, lat[k] += i < nb ? wait * us : 0, n[k]++;
    }
    for (int b = 0; b < grid; b++) {
        const double d = (double)(t[(size_t)(slots - 1) * grid + b] - t[b]);
        longest = d > longest ? d : longest;
    }
    free(t);
    step += longest * us;
    if (++steps < dec_trace_every()) return;
    fprintf(stderr, "decode trace: %ld steps, %d blocks, %.0f MHz; a step %.1f us (the longest block's clock)\n", steps,
            grid, khz / 1e3, step / steps);
    fprintf(stderr, "  %-16s %6s %12s %12s %12s %10s\n", "phase", "count", "work (max)", "work (mean)", "barrier",
            "us a step");
    for (int j = 0; j < NK; j++) {
        const int k = j == 0 ? EMBED : j == NK - 1 ? HEAD : j - 1; // in the step's order
        if (!n[k]) continue;
        const char *name = k == EMBED ? "embed" : k == HEAD ? "head" : labels[k];
        const double per = (double)n[k] / steps; // this phase's count a step
        fprintf(stderr, "  %-16s %6.0f %9.2f us %9.2f us %9.2f us %10.1f\n", name, per, work_max[k] / n[k],
                work_mean[k] / n[k], lat[k] / n[k], (work_max[k] + lat[k]) / steps);
    }
    memset(work_max, 0, sizeof work_max), memset(work_mean, 0, sizeof work_mean), memset(lat, 0, sizeof lat);
    memset(n, 0, sizeof n), step = 0, steps = 0;
}

#endif
