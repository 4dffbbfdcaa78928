// Mamba-1 selective scan on the GPU (the CUDA twin of src/backend/cpu/scan.c).
// Threads are laid out as (channel, state): a group of LANES threads (LANES >= N, a power of two <= 32)
// owns one channel of one sequence, each thread one state dimension n, so the recurrence of every h_n
// runs in its own registers and only y = sum_n C_n h_n (and, backward, the sums over n for dx and ddt)
// cross lanes, by warp shuffles. Time runs in order inside the threads; B_t and C_t, shared by all
// channels, are staged through shared memory a chunk of steps at a time. The per-step state is never
// written to device memory: the backward pass stores only chunk-boundary states, recomputes each chunk
// in registers and walks it back. Sums over channels (dB, dC) and sequences (dA, dD) go through
// per-block partials added in a fixed order: no atomics, bitwise reproducible results.
#include "backend/cuda/cuda_common.h"
#include "ops/ops_cuda.h"

#ifndef SCAN_THREADS
#define SCAN_THREADS 256 // per block: SCAN_THREADS / LANES channels
#endif
#ifndef FWD_CHUNK
#define FWD_CHUNK 32 // steps of B/C staged in shared memory per pass (forward)
#endif
#ifndef BWD_CHUNK
#define BWD_CHUNK 16 // steps recomputed in registers and walked back per chunk (backward)
#endif

extern "C" int cuda_device_available(const char **why) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        *why = cudaGetErrorString(err);
        return 0;
    }
    if (n == 0) {
        *why = "no CUDA device";
        return 0;
    }
    *why = "";
    return 1;
}

// Stages B and C of steps [t0, t0 + len) of sequence b into shared memory: Bs[tt * N + n], Cs likewise.
__device__ static void stage_bc(float *Bs, float *Cs, const float *Bm, const float *Cm, int ldbc, int b, int T,
                                int t0, int len, int N) {
    for (int i = threadIdx.x; i < len * N; i += blockDim.x) {
        const int tt = i / N, n = i % N;
        const size_t row = (size_t)b * T + t0 + tt;
        Bs[i] = Bm[row * ldbc + n];
        Cs[i] = Cm[row * ldbc + n];
    }
}

// Stages rows [t0, t0 + len) of the block's channels [e0, e0 + CH) of src [B*T, E] into dst[tt * CH + c]
// with coalesced loads (0 past E), so the steps of a chunk read shared memory instead of waiting on
// global loads one by one.
__device__ static void stage_rows(float *dst, const float *src, int b, int T, int t0, int len, int e0, int CH, int E) {
    for (int i = threadIdx.x; i < len * CH; i += blockDim.x) {
        const int tt = i / CH, c = i % CH;
        dst[i] = e0 + c < E ? src[((size_t)b * T + t0 + tt) * E + e0 + c] : 0.0f;
    }
}

// Writes dst [B*T, E] rows [t0, t0 + len) of channels [e0, e0 + CH) from src[tt * CH + c], coalesced.
__device__ static void unstage_rows(float *dst, const float *src, int b, int T, int t0, int len, int e0, int CH, int E) {
    for (int i = threadIdx.x; i < len * CH; i += blockDim.x) {
        const int tt = i / CH, c = i % CH;
        if (e0 + c < E) dst[((size_t)b * T + t0 + tt) * E + e0 + c] = src[i];
    }
}

// Sum over the LANES threads of one channel group (all of them get it), in a fixed butterfly order.
template <int LANES> __device__ static float lane_sum(float v) {
#pragma unroll
    for (int off = LANES / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off, LANES);
    return v;
}

template <int LANES>
__global__ void scan_fwd_kernel(float *y, float *h, const float *x, const float *dt, const float *At,
                                const float *Bm, const float *Cm, int ldbc, const float *Dv, int T, int E, int N) {
    constexpr int CH = SCAN_THREADS / LANES;
    extern __shared__ float smem[]; // Bs, Cs [FWD_CHUNK][N]; DTs, Xs, Ys [FWD_CHUNK][CH]
    float *Bs = smem, *Cs = Bs + FWD_CHUNK * N, *DTs = Cs + FWD_CHUNK * N, *Xs = DTs + FWD_CHUNK * CH,
          *Ys = Xs + FWD_CHUNK * CH;
    const int b = blockIdx.y, n = threadIdx.x % LANES, cl = threadIdx.x / LANES, e0 = blockIdx.x * CH, e = e0 + cl;
    const bool live = e < E, on = live && n < N;
    const float a = on ? At[(size_t)n * E + e] : 0.0f, d = live ? Dv[e] : 0.0f;
    float hs = on && h ? h[((size_t)b * E + e) * N + n] : 0.0f;
    for (int t0 = 0; t0 < T; t0 += FWD_CHUNK) {
        const int len = min(FWD_CHUNK, T - t0);
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        stage_rows(DTs, dt, b, T, t0, len, e0, CH, E);
        stage_rows(Xs, x, b, T, t0, len, e0, CH, E);
        __syncthreads();
        for (int tt = 0; tt < len; tt++) {
            const float dtv = DTs[tt * CH + cl], xv = Xs[tt * CH + cl];
            float part = 0.0f;
            if (on) {
                hs = expf(dtv * a) * hs + dtv * xv * Bs[tt * N + n];
                part = hs * Cs[tt * N + n];
            }
            const float acc = lane_sum<LANES>(part);
            if (n == 0) Ys[tt * CH + cl] = acc + d * xv;
        }
        __syncthreads();
        unstage_rows(y, Ys, b, T, t0, len, e0, CH, E);
    }
    if (on && h) h[((size_t)b * E + e) * N + n] = hs;
}

template <int LANES>
__global__ void scan_bwd_kernel(float *dx, float *ddt, float *part_bc, float *dA_part, float *dD_part, float *hb,
                                const float *dy, const float *x, const float *dt, const float *At, const float *Bm,
                                const float *Cm, int ldbc, const float *Dv, int T, int E, int N) {
    constexpr int CH = SCAN_THREADS / LANES, WARPS = SCAN_THREADS / 32;
    // Bs, Cs [BWD_CHUNK][N]; red [BWD_CHUNK][2][WARPS][N]; DTs, Xs, DYs, DXs, DDTs [BWD_CHUNK][CH]
    extern __shared__ float smem[];
    float *Bs = smem, *Cs = Bs + BWD_CHUNK * N, *red = Cs + BWD_CHUNK * N, *DTs = red + BWD_CHUNK * 2 * WARPS * N,
          *Xs = DTs + BWD_CHUNK * CH, *DYs = Xs + BWD_CHUNK * CH, *DXs = DYs + BWD_CHUNK * CH,
          *DDTs = DXs + BWD_CHUNK * CH;
    const int b = blockIdx.y, blk = blockIdx.x, nblk = gridDim.x, warp = threadIdx.x / 32;
    const int n = threadIdx.x % LANES, cl = threadIdx.x / LANES, e0 = blk * CH, e = e0 + cl;
    const int nchunk = (T + BWD_CHUNK - 1) / BWD_CHUNK;
    const bool live = e < E, on = live && n < N;
    const float a = on ? At[(size_t)n * E + e] : 0.0f, d = live ? Dv[e] : 0.0f;
    float hs = 0.0f, dh = 0.0f, dA = 0.0f, dD = 0.0f;
    // pass 1: the state at the start of every chunk, to hb[b][c][e][n]
    for (int c = 0; c < nchunk; c++) {
        const int t0 = c * BWD_CHUNK, len = min(BWD_CHUNK, T - t0);
        if (on) hb[(((size_t)b * nchunk + c) * E + e) * N + n] = hs;
        if (c == nchunk - 1) break;
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        stage_rows(DTs, dt, b, T, t0, len, e0, CH, E);
        stage_rows(Xs, x, b, T, t0, len, e0, CH, E);
        __syncthreads();
        if (!on) continue;
        for (int tt = 0; tt < len; tt++) {
            const float dtv = DTs[tt * CH + cl];
            hs = expf(dtv * a) * hs + dtv * Xs[tt * CH + cl] * Bs[tt * N + n];
        }
    }
    // pass 2: chunks in reverse; each chunk's states recomputed into registers, then walked back
    for (int c = nchunk - 1; c >= 0; c--) {
        const int t0 = c * BWD_CHUNK, len = min(BWD_CHUNK, T - t0);
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        stage_rows(DTs, dt, b, T, t0, len, e0, CH, E);
        stage_rows(Xs, x, b, T, t0, len, e0, CH, E);
        stage_rows(DYs, dy, b, T, t0, len, e0, CH, E);
        __syncthreads();
        const float hstart = on ? hb[(((size_t)b * nchunk + c) * E + e) * N + n] : 0.0f;
        float hloc[BWD_CHUNK];
        hs = hstart;
#pragma unroll
        for (int tt = 0; tt < BWD_CHUNK; tt++)
            if (tt < len && on) {
                const float dtv = DTs[tt * CH + cl];
                hs = expf(dtv * a) * hs + dtv * Xs[tt * CH + cl] * Bs[tt * N + n];
                hloc[tt] = hs;
            }
#pragma unroll
        for (int tt = BWD_CHUNK - 1; tt >= 0; tt--) {
            if (tt >= len) continue; // uniform across the block: len is
            const float dyv = DYs[tt * CH + cl], xv = Xs[tt * CH + cl], dtv = DTs[tt * CH + cl];
            float pdx = 0.0f, pddt = 0.0f, qB = 0.0f, qC = 0.0f;
            if (on) {
                const float hp = tt > 0 ? hloc[tt > 0 ? tt - 1 : 0] : hstart, da = expf(dtv * a);
                const float g = dh + dyv * Cs[tt * N + n], gd = g * hp * da;
                pddt = gd * a + g * xv * Bs[tt * N + n];
                pdx = g * dtv * Bs[tt * N + n];
                qB = g * dtv * xv;
                qC = dyv * hloc[tt];
                dA += gd * dtv;
                dh = g * da;
            }
            const float sdx = lane_sum<LANES>(pdx), sddt = lane_sum<LANES>(pddt);
            if (n == 0) {
                DXs[tt * CH + cl] = sdx + d * dyv;
                DDTs[tt * CH + cl] = sddt;
                dD += xv * dyv;
            }
            // dB, dC: the block's channels summed in a fixed order: lanes of equal n within the warp by
            // shuffles now, the warps through shared memory once the chunk is done
#pragma unroll
            for (int off = 16; off >= LANES; off >>= 1) {
                qB += __shfl_down_sync(0xffffffffu, qB, off);
                qC += __shfl_down_sync(0xffffffffu, qC, off);
            }
            if ((threadIdx.x & 31) < LANES && n < N) {
                red[((tt * 2 + 0) * WARPS + warp) * N + n] = qB;
                red[((tt * 2 + 1) * WARPS + warp) * N + n] = qC;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < len * 2 * N; i += blockDim.x) {
            const int tt = i / (2 * N), k = i % (2 * N), kk = k / N, m = k % N;
            float s = 0.0f;
            for (int w = 0; w < WARPS; w++) s += red[((tt * 2 + kk) * WARPS + w) * N + m];
            part_bc[(((size_t)b * nblk + blk) * T + t0 + tt) * 2 * N + k] = s;
        }
        unstage_rows(dx, DXs, b, T, t0, len, e0, CH, E);
        unstage_rows(ddt, DDTs, b, T, t0, len, e0, CH, E);
    }
    if (on) dA_part[((size_t)b * N + n) * E + e] = dA;
    if (live && n == 0) dD_part[(size_t)b * E + e] = dD;
}

// dB, dC [B*T, N] (stride lddbc) = sums of the block partials in block order.
__global__ void scan_bwd_reduce_bc(float *dBm, float *dCm, int lddbc, const float *part_bc, int nblk, int T, int N,
                                   int B) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // over B * T * 2N
    if (i >= (size_t)B * T * 2 * N) return;
    const int k = (int)(i % (2 * N));
    const size_t bt = i / (2 * N), b = bt / T, t = bt % T;
    float s = 0.0f;
    for (int blk = 0; blk < nblk; blk++) s += part_bc[((b * nblk + blk) * T + t) * 2 * N + k];
    if (k < N) dBm[bt * lddbc + k] = s;
    else dCm[bt * lddbc + k - N] = s;
}

// dAt [N, E] += sum over b of dA_part[b]; dDv [E] += sum over b of dD_part[b]; in b order.
__global__ void scan_bwd_reduce_ad(float *dAt, float *dDv, const float *dA_part, const float *dD_part, int B, int N,
                                   int E) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // over N * E + E
    if (i < (size_t)N * E) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dA_part[(size_t)b * N * E + i];
        dAt[i] += s;
    } else if (i < (size_t)N * E + E) {
        const size_t e = i - (size_t)N * E;
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dD_part[(size_t)b * E + e];
        dDv[e] += s;
    }
}

// Grow-only device scratch for the backward's partials (not thread-safe: one model per process for now).
static float *scratch;
static size_t scratch_cap;

static float *scratch_get(size_t floats) {
    if (floats > scratch_cap) {
        if (scratch) CUDA_CHECK(cudaFree(scratch));
        CUDA_CHECK(cudaMalloc(&scratch, floats * sizeof(float)));
        scratch_cap = floats;
    }
    return scratch;
}

// LANES: the smallest power of two >= N (at least 4, at most 32: one warp per channel).
#define DISPATCH_N(N, launch)                                                                      \
    do {                                                                                           \
        if ((N) <= 4) launch(4);                                                                   \
        else if ((N) <= 8) launch(8);                                                              \
        else if ((N) <= 16) launch(16);                                                            \
        else if ((N) <= 32) launch(32);                                                            \
        else {                                                                                     \
            fprintf(stderr, "ssm: the CUDA scan supports d_state <= 32 (got %d)\n", (N));          \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

extern "C" void scan_fwd_cuda(float *y, float *h, const float *x, const float *dt, const float *At, const float *Bm,
                              const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N) {
#define LAUNCH(L)                                                                                  \
    scan_fwd_kernel<L><<<dim3(cdiv(E, SCAN_THREADS / (L)), B), SCAN_THREADS,                      \
                         (2 * FWD_CHUNK * N + 3 * FWD_CHUNK * (SCAN_THREADS / (L))) * sizeof(float)>>>(y, h, x, dt, At, Bm, Cm, ldbc, \
                                                                                      Dv, T, E, N)
    DISPATCH_N(N, LAUNCH);
#undef LAUNCH
    CUDA_CHECK_LAUNCH();
}

extern "C" void scan_bwd_cuda(float *dx, float *ddt, float *dBm, float *dCm, int lddbc, float *dAt, float *dDv,
                              const float *dy, const float *x, const float *dt, const float *At, const float *Bm,
                              const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N) {
    const int lanes = N <= 4 ? 4 : N <= 8 ? 8 : N <= 16 ? 16 : 32;
    const int nblk = cdiv(E, SCAN_THREADS / lanes), nchunk = cdiv(T, BWD_CHUNK);
    const size_t n_bc = (size_t)B * nblk * T * 2 * N, n_a = (size_t)B * N * E, n_d = (size_t)B * E,
                 n_hb = (size_t)B * nchunk * N * E;
    float *part_bc = scratch_get(n_bc + n_a + n_d + n_hb), *dA_part = part_bc + n_bc, *dD_part = dA_part + n_a,
          *hb = dD_part + n_d;
    const dim3 grid(nblk, B);
    const size_t shared =
        (2 * BWD_CHUNK * N + BWD_CHUNK * 2 * N * (SCAN_THREADS / 32) + 5 * BWD_CHUNK * (SCAN_THREADS / lanes)) *
        sizeof(float);
#define LAUNCH(L)                                                                                  \
    scan_bwd_kernel<L><<<grid, SCAN_THREADS, shared>>>(dx, ddt, part_bc, dA_part, dD_part, hb, dy, x, dt, At, Bm, Cm, \
                                                       ldbc, Dv, T, E, N)
    DISPATCH_N(N, LAUNCH);
#undef LAUNCH
    CUDA_CHECK_LAUNCH();
    const size_t nbc = (size_t)B * T * 2 * N, nad = (size_t)N * E + E;
    scan_bwd_reduce_bc<<<(unsigned)((nbc + 255) / 256), 256>>>(dBm, dCm, lddbc, part_bc, nblk, T, N, B);
    CUDA_CHECK_LAUNCH();
    scan_bwd_reduce_ad<<<(unsigned)((nad + 255) / 256), 256>>>(dAt, dDv, dA_part, dD_part, B, N, E);
    CUDA_CHECK_LAUNCH();
}
