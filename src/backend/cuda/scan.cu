// Mamba-1 selective scan on the GPU (the CUDA twin of src/backend/cpu/scan.c).
// One thread owns one (sequence, channel): its N-dim state lives in registers and time runs in order
// inside the thread, so the per-step state is never written to device memory. B_t and C_t, shared by
// every channel of a sequence, are staged through shared memory a chunk of steps at a time. The
// backward pass stores only the state at chunk boundaries, recomputes each chunk's states, and walks
// it in reverse. Sums over channels (dB, dC) and over sequences (dA, dD) go through per-block partials
// added in a fixed order: no atomics, so results are bitwise reproducible.
// First version: correct and simple; the fused, tuned form is the next step (issue 3).
#include "backend/cuda/cuda_common.h"
#include "ops/ops_cuda.h"

#define SCAN_THREADS 128 // channels per block: 4 warps
#define FWD_CHUNK 32     // steps of B/C staged in shared memory per pass (forward)
#define BWD_CHUNK 16     // steps recomputed and walked back per chunk (backward)

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

template <int NMAX>
__global__ void scan_fwd_kernel(float *y, float *h, const float *x, const float *dt, const float *At,
                                const float *Bm, const float *Cm, int ldbc, const float *Dv, int T, int E, int N) {
    extern __shared__ float smem[]; // [2][FWD_CHUNK][N]
    float *Bs = smem, *Cs = smem + FWD_CHUNK * N;
    const int b = blockIdx.y, e = blockIdx.x * SCAN_THREADS + threadIdx.x;
    const bool live = e < E;
    float a[NMAX], hs[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; n++) {
        a[n] = live && n < N ? At[(size_t)n * E + e] : 0.0f;
        hs[n] = live && n < N && h ? h[((size_t)b * E + e) * N + n] : 0.0f;
    }
    const float d = live ? Dv[e] : 0.0f;
    for (int t0 = 0; t0 < T; t0 += FWD_CHUNK) {
        const int len = min(FWD_CHUNK, T - t0);
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        __syncthreads();
        if (!live) continue;
        for (int tt = 0; tt < len; tt++) {
            const size_t row = (size_t)b * T + t0 + tt;
            const float dtv = dt[row * E + e], xv = x[row * E + e], dtx = dtv * xv;
            float acc = 0.0f;
#pragma unroll
            for (int n = 0; n < NMAX; n++)
                if (n < N) {
                    hs[n] = expf(dtv * a[n]) * hs[n] + dtx * Bs[tt * N + n];
                    acc += hs[n] * Cs[tt * N + n];
                }
            y[row * E + e] = acc + d * xv;
        }
    }
    if (live && h)
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            if (n < N) h[((size_t)b * E + e) * N + n] = hs[n];
}

// Sum of v over the block's SCAN_THREADS threads, into red[warp] slots; the caller syncs and adds.
__device__ static void warp_partial(float *red, float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
}

template <int NMAX>
__global__ void scan_bwd_kernel(float *dx, float *ddt, float *part_bc, float *dA_part, float *dD_part, float *hb,
                                const float *dy, const float *x, const float *dt, const float *At, const float *Bm,
                                const float *Cm, int ldbc, const float *Dv, int T, int E, int N) {
    extern __shared__ float smem[]; // Bs, Cs [BWD_CHUNK][N]; red [2][N][4 warps]
    float *Bs = smem, *Cs = smem + BWD_CHUNK * N, *red = Cs + BWD_CHUNK * N;
    const int b = blockIdx.y, blk = blockIdx.x, e = blk * SCAN_THREADS + threadIdx.x, nblk = gridDim.x;
    const int nchunk = (T + BWD_CHUNK - 1) / BWD_CHUNK, warps = SCAN_THREADS / 32, warp = threadIdx.x >> 5;
    const bool live = e < E;
    float a[NMAX], hs[NMAX], dh[NMAX], dA[NMAX];
#pragma unroll
    for (int n = 0; n < NMAX; n++) {
        a[n] = live && n < N ? At[(size_t)n * E + e] : 0.0f;
        hs[n] = dh[n] = dA[n] = 0.0f;
    }
    const float d = live ? Dv[e] : 0.0f;
    float dD = 0.0f;
    // pass 1: the state at the start of every chunk, to hb[b][c][n][e]
    for (int c = 0; c < nchunk; c++) {
        const int t0 = c * BWD_CHUNK, len = min(BWD_CHUNK, T - t0);
        if (live)
#pragma unroll
            for (int n = 0; n < NMAX; n++)
                if (n < N) hb[(((size_t)b * nchunk + c) * N + n) * E + e] = hs[n];
        if (c == nchunk - 1) break;
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        __syncthreads();
        if (!live) continue;
        for (int tt = 0; tt < len; tt++) {
            const size_t row = (size_t)b * T + t0 + tt;
            const float dtv = dt[row * E + e], dtx = dtv * x[row * E + e];
#pragma unroll
            for (int n = 0; n < NMAX; n++)
                if (n < N) hs[n] = expf(dtv * a[n]) * hs[n] + dtx * Bs[tt * N + n];
        }
    }
    // pass 2: chunks in reverse; each chunk's states recomputed into hloc, then walked back
    float hloc[BWD_CHUNK][NMAX];
    for (int c = nchunk - 1; c >= 0; c--) {
        const int t0 = c * BWD_CHUNK, len = min(BWD_CHUNK, T - t0);
        __syncthreads();
        stage_bc(Bs, Cs, Bm, Cm, ldbc, b, T, t0, len, N);
        __syncthreads();
        float hstart[NMAX];
#pragma unroll
        for (int n = 0; n < NMAX; n++) {
            hstart[n] = live && n < N ? hb[(((size_t)b * nchunk + c) * N + n) * E + e] : 0.0f;
            hs[n] = hstart[n];
        }
        if (live)
            for (int tt = 0; tt < len; tt++) {
                const size_t row = (size_t)b * T + t0 + tt;
                const float dtv = dt[row * E + e], dtx = dtv * x[row * E + e];
#pragma unroll
                for (int n = 0; n < NMAX; n++)
                    if (n < N) {
                        hs[n] = expf(dtv * a[n]) * hs[n] + dtx * Bs[tt * N + n];
                        hloc[tt][n] = hs[n];
                    }
            }
        for (int tt = len - 1; tt >= 0; tt--) {
            const size_t row = (size_t)b * T + t0 + tt;
            const float dyv = live ? dy[row * E + e] : 0.0f, xv = live ? x[row * E + e] : 0.0f;
            const float dtv = live ? dt[row * E + e] : 0.0f, dtx = dtv * xv;
            float dxv = d * dyv, ddtv = 0.0f;
            dD += xv * dyv;
            for (int n = 0; n < N; n++) { // runtime n: the reductions below are per n anyway
                float hn = 0.0f, hp = 0.0f, dhn = 0.0f, an = 0.0f;
#pragma unroll
                for (int k = 0; k < NMAX; k++)
                    if (k == n) {
                        hn = hloc[tt][k];
                        hp = tt > 0 ? hloc[tt - 1][k] : hstart[k];
                        dhn = dh[k];
                        an = a[k];
                    }
                const float da = expf(dtv * an), g = dhn + dyv * Cs[tt * N + n], gd = g * hp * da;
                ddtv += gd * an + g * xv * Bs[tt * N + n];
                dxv += g * dtv * Bs[tt * N + n];
                warp_partial(red + (0 * N + n) * warps, live ? g * dtx : 0.0f);
                warp_partial(red + (1 * N + n) * warps, live ? dyv * hn : 0.0f);
#pragma unroll
                for (int k = 0; k < NMAX; k++)
                    if (k == n) {
                        dA[k] += gd * dtv;
                        dh[k] = g * da;
                    }
            }
            if (live) {
                dx[row * E + e] = dxv;
                ddt[row * E + e] = ddtv;
            }
            __syncthreads();
            for (int i = threadIdx.x; i < 2 * N; i += blockDim.x) { // warps summed in order
                float s = 0.0f;
                for (int w = 0; w < warps; w++) s += red[i * warps + w];
                part_bc[(((size_t)b * nblk + blk) * T + t0 + tt) * 2 * N + i] = s;
            }
            __syncthreads();
        }
        (void)warp;
    }
    if (live) {
#pragma unroll
        for (int n = 0; n < NMAX; n++)
            if (n < N) dA_part[((size_t)b * N + n) * E + e] = dA[n];
        dD_part[(size_t)b * E + e] = dD;
    }
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

#define DISPATCH_N(N, launch)                                                                      \
    do {                                                                                           \
        if ((N) <= 4) launch(4);                                                                   \
        else if ((N) <= 8) launch(8);                                                              \
        else if ((N) <= 16) launch(16);                                                            \
        else if ((N) <= 32) launch(32);                                                            \
        else if ((N) <= 64) launch(64);                                                            \
        else {                                                                                     \
            fprintf(stderr, "ssm: CUDA scan supports d_state <= 64 (got %d)\n", (N));              \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

extern "C" void scan_fwd_cuda(float *y, float *h, const float *x, const float *dt, const float *At, const float *Bm,
                              const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N) {
    const dim3 grid(cdiv(E, SCAN_THREADS), B);
    const size_t shared = 2 * FWD_CHUNK * N * sizeof(float);
#define LAUNCH(NM) scan_fwd_kernel<NM><<<grid, SCAN_THREADS, shared>>>(y, h, x, dt, At, Bm, Cm, ldbc, Dv, T, E, N)
    DISPATCH_N(N, LAUNCH);
#undef LAUNCH
    CUDA_CHECK_LAUNCH();
}

extern "C" void scan_bwd_cuda(float *dx, float *ddt, float *dBm, float *dCm, int lddbc, float *dAt, float *dDv,
                              const float *dy, const float *x, const float *dt, const float *At, const float *Bm,
                              const float *Cm, int ldbc, const float *Dv, int B, int T, int E, int N) {
    const int nblk = cdiv(E, SCAN_THREADS), nchunk = cdiv(T, BWD_CHUNK);
    const size_t n_bc = (size_t)B * nblk * T * 2 * N, n_a = (size_t)B * N * E, n_d = (size_t)B * E,
                 n_hb = (size_t)B * nchunk * N * E;
    float *part_bc = scratch_get(n_bc + n_a + n_d + n_hb), *dA_part = part_bc + n_bc, *dD_part = dA_part + n_a,
          *hb = dD_part + n_d;
    const dim3 grid(nblk, B);
    const size_t shared = (2 * BWD_CHUNK * N + 2 * N * (SCAN_THREADS / 32)) * sizeof(float);
#define LAUNCH(NM)                                                                                 \
    scan_bwd_kernel<NM><<<grid, SCAN_THREADS, shared>>>(dx, ddt, part_bc, dA_part, dD_part, hb, dy, x, dt, At, Bm, \
                                                        Cm, ldbc, Dv, T, E, N)
    DISPATCH_N(N, LAUNCH);
#undef LAUNCH
    CUDA_CHECK_LAUNCH();
    const size_t nbc = (size_t)B * T * 2 * N, nad = (size_t)N * E + E;
    scan_bwd_reduce_bc<<<(unsigned)((nbc + 255) / 256), 256>>>(dBm, dCm, lddbc, part_bc, nblk, T, N, B);
    CUDA_CHECK_LAUNCH();
    scan_bwd_reduce_ad<<<(unsigned)((nad + 255) / 256), 256>>>(dAt, dDv, dA_part, dD_part, B, N, E);
    CUDA_CHECK_LAUNCH();
}
