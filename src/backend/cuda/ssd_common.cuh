// What the SSD's two CUDA forms share (ssd.cu: the tile kernels, for any length; ssd_whole.cu: batched GEMMs, for
// whole chunks): the shape, scratch memory, dt and its cumsum, the passes over chunks, dt's backward and the head
// sums. The algorithm and the buffers' layouts: ssd.cu's opening comment. Included by ssd.cu and ssd_whole.cu (and,
// converted, by the CPU emulator: tests/emu/run.sh).
#ifndef SSM_CUDA_SSD_COMMON_CUH
#define SSM_CUDA_SSD_COMMON_CUH

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/ktime.h"
#include "backend/cuda/reduce.cuh"
#include "backend/cuda/ssd_tiles.cuh"
#include "common.h"
#include "ops/ops_cuda.h"

#define SSD_Q 64   // the GPU's chunk: s->chunk, at most this (the CPU's SSD_CPU_CHUNK: the same chunks)
#define SSD_WALK 8 // the sequential walks (dt's cumsum, the state passes): steps whose reads go out together
static_assert(SSD_THREADS == RED_THREADS, "the SSD kernels call block_reduce"); // (SSD_THREADS: ssd_tiles.cuh)
static_assert(SSD_Q <= SSD_TILE, "a chunk's Q x Q products are one tile");

// ---- shapes ----------------------------------------------------------------------------------------------------
struct SsdShape {
    int B, T, H, P, N, G, hpg, Q, nch, ldx;
    __device__ __host__ int len(int c) const { return min(Q, T - c * Q); } // chunk c's positions
    __device__ __host__ size_t row0(int b, int c) const { return (size_t)b * T + (size_t)c * Q; }
    __device__ __host__ size_t bht(int b, int h, int c) const { return ((size_t)b * H + h) * T + (size_t)c * Q; }
};

static SsdShape shape_of(const ssd_args *s) {
    CHECK(s->chunk >= 1, "ssd: chunk %d", s->chunk);
    CHECK(s->G >= 1 && s->H % s->G == 0, "ssd: %d groups do not divide %d heads", s->G, s->H);
    SsdShape d;
    d.B = s->B, d.T = s->T, d.H = s->H, d.P = s->P, d.N = s->N, d.G = s->G, d.hpg = s->H / s->G;
    d.Q = s->chunk < SSD_Q ? s->chunk : SSD_Q;
    d.nch = (s->T + d.Q - 1) / d.Q;
    d.ldx = s->ldx;
    return d;
}

static float *scratch_floats(size_t n) {
    float *p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(float) * (n ? n : 1), cudaStreamPerThread));
    return p;
}
static void scratch_free(void *p) { CUDA_CHECK(cudaFreeAsync(p, cudaStreamPerThread)); }

// ---- dt and the cumsum -----------------------------------------------------------------------------------------
// dt = clamp(softplus(raw + bias)) as the CPU's ssd_dt (torch's threshold 20, the accurate expf and log1pf); *sl =
// its slope d dt / d raw (0 where the limit clamps).
__device__ __forceinline__ static float ssd_dt(float pre, float dt_min, float dt_max, float *sl) {
    float dt = pre > 20.0f ? pre : log1pf(expf(pre)), d = pre > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-pre));
    if (dt < dt_min)
        dt = dt_min, d = 0.0f;
    else if (dt > dt_max)
        dt = dt_max, d = 0.0f;
    *sl = d;
    return dt;
}

// A thread per (b, chunk, h), h fastest (the dt reads of a row coalesce): dts, acs and (when not NULL) dsp [B, H, T].
__global__ static void ssd_dt_kernel(float *dts, float *acs, float *dsp, const float *dt, int lddt,
                                     const float *dt_bias, const float *A_log, float dt_min, float dt_max, SsdShape s) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)s.B * s.nch * s.H) return;
    const int h = (int)(i % s.H), c = (int)(i / s.H % s.nch), b = (int)(i / s.H / s.nch), L = s.len(c);
    const float A = -expf(A_log[h]), bias = dt_bias[h];
    const size_t row0 = s.row0(b, c), o = s.bht(b, h, c);
    float acc = 0.0f;
    for (int j0 = 0; j0 < L; j0 += SSD_WALK) {
        float raw[SSD_WALK];
#pragma unroll
        for (int j = 0; j < SSD_WALK; j++)
            raw[j] = j0 + j < L ? dt[(row0 + j0 + j) * lddt + h] : 0.0f;
#pragma unroll
        for (int j = 0; j < SSD_WALK && j0 + j < L; j++) {
            float sl;
            const float d = ssd_dt(raw[j] + bias, dt_min, dt_max, &sl);
            acc += d * A;
            dts[o + j0 + j] = d, acs[o + j0 + j] = acc;
            if (dsp) dsp[o + j0 + j] = sl;
        }
    }
}

// The chunks' states st [B, nch, H, P, N] become the states entering each chunk, in place: a thread per (b, h, state
// element) walks the chunks in order. state [B, H, P, N], when not NULL, is the state entering chunk 0 and receives
// the one leaving the last.
__global__ static void ssd_state_pass_kernel(float *st, float *state, const float *acs, SsdShape s) {
    const size_t PN = (size_t)s.P * s.N, e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= PN) return;
    const int h = blockIdx.y, b = blockIdx.z;
    float *init = state ? state + ((size_t)b * s.H + h) * PN + e : NULL;
    float v = init ? *init : 0.0f;
    for (int c0 = 0; c0 < s.nch; c0 += SSD_WALK) {
        float add[SSD_WALK], dec[SSD_WALK];
#pragma unroll
        for (int j = 0; j < SSD_WALK; j++) {
            const int c = c0 + j < s.nch ? c0 + j : s.nch - 1;
            add[j] = st[(((size_t)b * s.nch + c) * s.H + h) * PN + e];
            dec[j] = expf(acs[s.bht(b, h, c) + s.len(c) - 1]);
        }
#pragma unroll
        for (int j = 0; j < SSD_WALK && c0 + j < s.nch; j++) {
            st[(((size_t)b * s.nch + c0 + j) * s.H + h) * PN + e] = v;
            v = dec[j] * v + add[j];
        }
    }
    if (init) *init = v;
}

// The backward's reverse: dst [B, nch, H, P, N] holds G_c (from dY and C) and becomes dS_c, the gradient of the state
// leaving chunk c (zero for the last: training discards the final state).
__global__ static void ssd_dstate_pass_kernel(float *dst, const float *acs, SsdShape s) {
    const size_t PN = (size_t)s.P * s.N, e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= PN) return;
    const int h = blockIdx.y, b = blockIdx.z;
    float d = 0.0f;
    for (int c0 = s.nch - 1; c0 >= 0; c0 -= SSD_WALK) { // chunks c0, c0 - 1, ..., down to 0
        float gc[SSD_WALK], dec[SSD_WALK];
#pragma unroll
        for (int j = 0; j < SSD_WALK; j++) {
            const int c = c0 - j >= 0 ? c0 - j : 0;
            gc[j] = dst[(((size_t)b * s.nch + c) * s.H + h) * PN + e];
            dec[j] = expf(acs[s.bht(b, h, c) + s.len(c) - 1]);
        }
#pragma unroll
        for (int j = 0; j < SSD_WALK && c0 - j >= 0; j++) {
            dst[(((size_t)b * s.nch + c0 - j) * s.H + h) * PN + e] = d;
            d = dec[j] * d + gc[j];
        }
    }
}

// A thread per (b, chunk, h): the reverse cumsum of a's gradient through a = cumsum(dt A), then the clamp and the
// softplus: ddt (rows of ldddt), and the per-chunk sums of dA (sum dt rc) and d(dt bias) in part [B, nch, H, 2].
__global__ static void ssd_dt_bwd_kernel(float *ddt, int ldddt, double *part, const float *daM, const float *ddM,
                                         const float *daX, const float *ddX, const float *dts, const float *dsp,
                                         const float *A_log, SsdShape s) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)s.B * s.nch * s.H) return;
    const int h = (int)(i % s.H), c = (int)(i / s.H % s.nch), b = (int)(i / s.H / s.nch), L = s.len(c);
    const float A = -expf(A_log[h]);
    const size_t row0 = s.row0(b, c), o = s.bht(b, h, c);
    float rc = 0.0f;
    double dA = 0, dbias = 0;
    for (int k0 = L - 1; k0 >= 0; k0 -= SSD_WALK) { // positions k0, k0 - 1, ..., down to 0
        float da[SSD_WALK], dd[SSD_WALK], sl[SSD_WALK], dtv[SSD_WALK];
#pragma unroll
        for (int j = 0; j < SSD_WALK; j++) {
            const int k = k0 - j >= 0 ? k0 - j : 0;
            da[j] = daM[o + k] + daX[o + k], dd[j] = ddM[o + k] + ddX[o + k], sl[j] = dsp[o + k], dtv[j] = dts[o + k];
        }
#pragma unroll
        for (int j = 0; j < SSD_WALK && k0 - j >= 0; j++) {
            rc += da[j];
            const float draw = (dd[j] + A * rc) * sl[j];
            dA += (double)dtv[j] * rc;
            ddt[(row0 + k0 - j) * ldddt + h] = draw;
            dbias += draw;
        }
    }
    part[2 * i] = dA, part[2 * i + 1] = dbias;
}

// A block per head: dA_log, d(dt bias), dD [H] += the per-(b, chunk) partials, each thread's strided share in order,
// then a block reduction (a fixed order). (A thread per head walking them took 0.08 ms a call: a chain of loads.)
__global__ static void __launch_bounds__(RED_THREADS)
    ssd_head_sums_kernel(float *dA_log, float *ddt_bias, float *dDv, const double *part, const double *dDp,
                         const float *A_log, SsdShape s) {
    const int h = blockIdx.x;
    double sa = 0, sb = 0, sdd = 0;
    for (size_t bc = threadIdx.x; bc < (size_t)s.B * s.nch; bc += RED_THREADS) {
        const size_t i = bc * s.H + h;
        sa += part[2 * i], sb += part[2 * i + 1], sdd += dDp[i];
    }
    sa = block_reduce(sa, SumOp()), sb = block_reduce(sb, SumOp()), sdd = block_reduce(sdd, SumOp());
    if (threadIdx.x) return;
    dA_log[h] += (float)(sa * -expf(A_log[h])); // A = -exp(A_log): dA/dA_log = A
    ddt_bias[h] += (float)sb;
    dDv[h] += (float)sdd;
}

// What the forward and the backward share: dt and its cumsum, CB, and the states entering each chunk (st; with
// state: from it, and the final state written back).
typedef struct {
    float *dts, *acs, *dsp, *CB, *st;
} ssd_fwd_bufs;

static void ssd_bufs_free(ssd_fwd_bufs *f) {
    scratch_free(f->dts), scratch_free(f->acs), scratch_free(f->CB), scratch_free(f->st);
    if (f->dsp) scratch_free(f->dsp);
}

// The backward's last steps (both forms): dt's gradient through the cumsum, the clamp and the softplus, from a's and
// dt's partial gradients in da_dd (daM, ddM, daX, ddX, each [B, H, T]); then dA_log, d(dt bias) and dD, each head's
// per-(b, chunk) partials (part [B, nch, H, 2], dDp [B, nch, H]) added in order.
static void ssd_dt_grads_launch(const ssd_args *a, const ssd_grads *gr, const SsdShape &s, const ssd_fwd_bufs &f,
                                const float *da_dd, double *part, const double *dDp) {
    const size_t bht = (size_t)s.B * s.H * s.T, n_bch = (size_t)s.B * s.nch * s.H;
    ssd_dt_bwd_kernel<<<(unsigned)((n_bch + 127) / 128), 128>>>(gr->ddt, gr->ldddt, part, da_dd, da_dd + bht,
                                                                da_dd + 2 * bht, da_dd + 3 * bht, f.dts, f.dsp,
                                                                a->A_log, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dt");
    ssd_head_sums_kernel<<<s.H, RED_THREADS>>>(gr->dA_log, gr->ddt_bias, gr->dDv, part, dDp, a->A_log, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd head sums");
}

// dt, its cumsum and (for the backward) the softplus's slope into f
static void ssd_dt_launch(const ssd_args *a, const SsdShape &s, ssd_fwd_bufs *f) {
    const size_t n_bch = (size_t)s.B * s.nch * s.H;
    ssd_dt_kernel<<<(unsigned)((n_bch + 127) / 128), 128>>>(f->dts, f->acs, f->dsp, a->dt, a->lddt, a->dt_bias,
                                                            a->A_log, a->dt_min, a->dt_max, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd dt");
}

#endif
