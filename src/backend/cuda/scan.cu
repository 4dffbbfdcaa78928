// Mamba-1 selective scan on the GPU (the CUDA twin of src/backend/cpu/scan.c), parallel in time, fused with the
// dt softplus before it and the SiLU gate after it (scan_args in ops.h): each thread turns its staged dt into
// softplus(dt + bias) and multiplies its outputs by silu(z); the backward recomputes y (it replays the
// states anyway) for the gate's gradient and the gated output, and takes dt's gradient through the softplus.
//
// Layout: x, dt, y are [B, T, E] with channels contiguous. A block owns (sequence b, 32 channels) and
// walks the sequence in chunks of CH = W * ITEMS steps: lane l of every warp is channel e0 + l, warp w
// the run of ITEMS consecutive steps [w * ITEMS, (w + 1) * ITEMS) of the chunk. Each chunk's x, dt (dy)
// rows and B, C values are copied into shared memory with cp.async (coalesced, 16-byte where aligned)
// while the previous chunk computes (double buffering); B and C, shared by all channels, are laid out
// [n][t] so a warp reads its steps' values of one state as 16-byte broadcasts. x, dt and the gate z are float32
// or bf16 (template types TX, TD, TZ; lean training passes all three in bf16): bf16 x and dt are staged as they
// are (half the bytes) and widened where they are read.
//
// For each state dimension n (NG at a time: independent dependency chains, fewer barriers) the
// recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A_n), b_t = dt_t x_t B_tn) is an affine map per
// step: each thread folds its ITEMS steps into one map (A = prod a_t, computed as exp(A_n sum dt), and
// the state reached from zero), composes the maps of the warps before it (in warp order, through shared
// memory: one barrier per state group) onto the chunk's incoming state, and replays its steps with
// y_t += C_tn h_t. Each a_t is computed once (exp2 on the special-function unit); the carry between
// chunks stays in shared memory. The per-step state is never written to device memory.
//
// The backward runs the adjoint the same way in reverse: with c_t = C_t dy_t and u_t = a_t dh_t,
// u_t = a_t (u_{t+1} + c_t) is again affine, folded per thread alongside the forward map (one barrier
// for both), and dh_t = u_{t+1} + c_t. It first walks the chunks forward to store the chunk-start
// states (hb [B, nchunk, NP, E]), then walks them backward recomputing each chunk's states. In training the
// forward checkpoints the state every SCAN_HK_STEPS steps (scan_args.hk, bf16) and the backward starts the
// chunks that begin at a checkpoint from it: with chunks of SCAN_HK_STEPS, every chunk, and no first pass.
// dB, dC are sums over channels: each warp sums its 32 lanes through shared memory in a fixed order,
// one value per (block, n, step) goes to a partial buffer, and a second kernel adds the blocks in block
// order. dA, dD are summed per thread over steps, then over warps and sequences in order. No atomics:
// every result is bitwise reproducible.
//
// Where B x E/32 blocks are too few for the GPU (small batches of long sequences), both kernels also split time into
// segments run by different blocks, each from its incoming state, found by a cheap fold of every segment and a scan
// over the segments' maps: a two-level scan ("time segments", below).
#include "backend/cuda/context.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/ktime.h"
#include "common.h"
#include "ops/ops_cuda.h"

#include <cuda_bf16.h>

#define SCAN_LOG2E 1.4426950408889634f

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

// 2^v on the special-function unit (relative error ~2^-22; flushes results below 2^-126 to zero).
__device__ __forceinline__ static float ex2(float v) {
#ifdef __CUDA_ARCH__
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
#else
    return exp2f(v); // the CPU emulator (tests/emu)
#endif
}

// torch's softplus (v itself above 20) as max(v, 0) + log1p(t), t = exp(-|v|) <= 1 (on the special-function
// unit), log1p(t) = 2 atanh(s) with s = t / (2 + t) <= 1/3 by its series (eight terms reach float precision):
// branch-free and about a third of log1pf(expf(v))'s instructions; relative error within 2e-6 of the exact value
// (log1pf(expf(v)) in float: 1e-6, both from exp's argument rounding where v is very negative).
// sig receives sigmoid(v) (softplus's derivative) from the same exp: t / (1 + t) below 0, 1 / (1 + t) above.
__device__ __forceinline__ static float softplus_sig_(float v, float &sig) {
    const float t = ex2(-fabsf(v) * SCAN_LOG2E), s = __fdividef(t, 2.0f + t), z = s * s;
    float q = 1.0f / 15;
    q = fmaf(q, z, 1.0f / 13);
    q = fmaf(q, z, 1.0f / 11);
    q = fmaf(q, z, 1.0f / 9);
    q = fmaf(q, z, 1.0f / 7);
    q = fmaf(q, z, 1.0f / 5);
    q = fmaf(q, z, 1.0f / 3);
    q = fmaf(q, z, 1.0f);
    sig = __fdividef(v < 0.0f ? t : 1.0f, 1.0f + t);
    const float r = fmaxf(v, 0.0f) + 2.0f * s * q;
    return v > 20.0f ? v : r;
}
__device__ __forceinline__ static float softplus_(float v) { // (the unused sigmoid is compiled away)
    float sig;
    return softplus_sig_(v, sig);
}
// the logistic function from the fast exp and division (relative error ~1e-6: the result is never small
// through cancellation)
__device__ __forceinline__ static float sigmoid_(float v) { return __fdividef(1.0f, 1.0f + __expf(-v)); }

// A [n][e], the decay rate: At's value, or -exp(A_log [e][n]) where the caller hands A_log (training: each layer's A
// computed where the scan reads it, with the accurate expf of neg_exp_transpose, so the same bits).
__device__ __forceinline__ static float a_rate(const float *At, const float *A_log, int n, int e, int E, int N) {
    return At ? At[(size_t)n * E + e] : -expf(A_log[(size_t)e * N + n]);
}

// The gate z is float32 or bf16 (the lean path's xz): the kernels take its type TZ and read it through gate_ld().
__device__ __forceinline__ static float gate_ld(const float *z, size_t i) { return z[i]; }
__device__ __forceinline__ static float gate_ld(const __nv_bfloat16 *z, size_t i) { return __bfloat162float(z[i]); }

// ---- asynchronous staging (cp.async, cp_async.cuh): chunk k+1 is copied into shared memory while chunk k computes --

// Queues the copy of rows [t0, t0 + CH) of channels [e0, e0 + 32) of src [B*T, E] (row0 = b * T) into
// dst [CH][32], zeros past T or E: 16-byte copies (8 threads a row) when rows are 16-byte aligned, else
// 4-byte ones (a warp a row). Fixed trip counts: each thread always takes the same columns.
template <int W, int ITEMS>
__device__ __forceinline__ static void stage_rows_async(float *dst, const float *src, size_t row0, int t0, int T,
                                                        int E, int e0) {
    if ((E & 3) == 0 && ((size_t)src & 15) == 0) {
        const int j = (threadIdx.x & 7) * 4, nv = min(4, max(0, E - e0 - j));
#pragma unroll
        for (int s = 0; s < ITEMS / 4; s++) {
            const int tt = (threadIdx.x >> 3) + s * 4 * W, t = t0 + tt, bytes = t < T ? nv * 4 : 0;
            cp_async16(dst + tt * 32 + j, bytes ? src + (row0 + t) * E + e0 + j : src, bytes);
        }
    } else {
        const int j = threadIdx.x & 31;
        const bool col = e0 + j < E;
#pragma unroll
        for (int s = 0; s < ITEMS; s++) {
            const int tt = (threadIdx.x >> 5) + s * W, t = t0 + tt;
            const bool ok = col && t < T;
            cp_async4(dst + tt * 32 + j, ok ? src + (row0 + t) * E + e0 + j : src, ok ? 4 : 0);
        }
    }
}

// The bf16 twin (x in lean training; CH rows from t0: a chunk's by default): rows of 32 channels are 64 bytes, copied
// 16 bytes at a time (4 threads a row) when rows are 16-byte aligned, else by plain loads and stores (visible after the
// barrier that follows every staging, like the copies).
template <int W, int ITEMS>
__device__ __forceinline__ static void stage_rows_async(__nv_bfloat16 *dst, const __nv_bfloat16 *src, size_t row0,
                                                        int t0, int T, int E, int e0, int CH = W * ITEMS) {
    if ((E & 7) == 0 && ((size_t)src & 15) == 0) {
        const int j = (threadIdx.x & 3) * 8, nv = min(8, max(0, E - e0 - j));
#pragma unroll
        for (int tt = threadIdx.x >> 2; tt < CH; tt += W * 8) {
            const int t = t0 + tt, bytes = t < T ? nv * 2 : 0;
            cp_async16(reinterpret_cast<float *>(dst + tt * 32 + j),
                       reinterpret_cast<const float *>(bytes ? src + (row0 + t) * E + e0 + j : src), bytes);
        }
    } else {
        const int j = threadIdx.x & 31;
        const bool col = e0 + j < E;
        for (int tt = threadIdx.x >> 5; tt < CH; tt += W) {
            const int t = t0 + tt;
            dst[tt * 32 + j] = col && t < T ? src[(row0 + t) * E + e0 + j] : __float2bfloat16_rn(0.0f);
        }
    }
}

// Where a thread starts in, and how it steps through, the [CH][NP] elements of a B/C chunk (element
// i = tt * NP + n, threads striding by blockDim.x), so staging needs no division per element.
struct BcWalk {
    int tt0, n0, dq, dr; // threadIdx.x = tt0 * NP + n0; blockDim.x = dq * NP + dr
};
__device__ __forceinline__ static BcWalk bc_walk(int NP) {
    return BcWalk{(int)threadIdx.x / NP, (int)threadIdx.x % NP, (int)blockDim.x / NP, (int)blockDim.x % NP};
}

// The steps of a chunk a thread may copy: those before T, none for a padding state.
__device__ __forceinline__ static int nok_steps(bool state_ok, int left, int CH) {
    return state_ok ? min(left, CH) : 0;
}

// Queues the copy of B (and C when Cs) of steps [t0, t0 + CH) as Bs[n * (CH + 4) + tt] (rows padded
// by 4 floats so the transposing writes spread over the banks), zeros past T and for the padding
// states n >= N. Consecutive threads take consecutive n of a step: coalesced reads.
__device__ static void stage_bc_async(float *Bs, float *Cs, const float *Bm, const float *Cm, int ldbc, size_t row0,
                                      int t0, int T, int CH, int N, int NP, BcWalk wk) {
    if (wk.dr == 0) { // blockDim.x a multiple of NP (the usual case): each thread keeps one n, steps dq apart
        const int n = wk.n0, tlim = nok_steps(n < N, T - t0, CH);
        const size_t first = (row0 + t0 + wk.tt0) * ldbc + n, step = (size_t)wk.dq * ldbc;
        const float *bp = Bm + first, *cq = Cm + first; // advanced by pointer steps: no index arithmetic per copy
        int at_s = n * (CH + 4) + wk.tt0;
        for (int tt = wk.tt0; tt < CH; tt += wk.dq, at_s += wk.dq, bp += step, cq += step) {
            const bool ok = tt < tlim;
            cp_async4(Bs + at_s, ok ? bp : Bm, ok ? 4 : 0);
            if (Cs) cp_async4(Cs + at_s, ok ? cq : Cm, ok ? 4 : 0);
        }
        return;
    }
    int tt = wk.tt0, n = wk.n0;
    for (int i = threadIdx.x; i < NP * CH; i += blockDim.x) {
        const int t = t0 + tt, at_s = n * (CH + 4) + tt;
        const bool ok = n < N && t < T;
        const size_t at = (row0 + t) * ldbc + n;
        cp_async4(Bs + at_s, ok ? Bm + at : Bm, ok ? 4 : 0);
        if (Cs) cp_async4(Cs + at_s, ok ? Cm + at : Cm, ok ? 4 : 0);
        tt += wk.dq, n += wk.dr;
        if (n >= NP) n -= NP, tt++;
    }
}

// v[i] = s[(first + i) * 32 + lane]: a thread's steps of one staged [CH][32] array.
template <int ITEMS>
__device__ __forceinline__ static void lds_steps(float (&v)[ITEMS], const float *s, int first, int lane) {
#pragma unroll
    for (int i = 0; i < ITEMS; i++) v[i] = s[(first + i) * 32 + lane];
}
// ... and from a staged bf16 array (x in lean training); sx(p) reads one staged value as float.
template <int ITEMS>
__device__ __forceinline__ static void lds_steps(float (&v)[ITEMS], const __nv_bfloat16 *s, int first, int lane) {
#pragma unroll
    for (int i = 0; i < ITEMS; i++) v[i] = __bfloat162float(s[(first + i) * 32 + lane]);
}
__device__ __forceinline__ static float sx(const float *p) { return *p; }
__device__ __forceinline__ static float sx(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
// v[i] = p[i] with 16-byte loads (p 16-byte aligned; a broadcast: every lane of the warp reads the same p).
template <int ITEMS> __device__ __forceinline__ static void lds_vec(float (&v)[ITEMS], const float *p) {
    static_assert(ITEMS % 4 == 0, "ITEMS must be a multiple of 4");
#pragma unroll
    for (int q = 0; q < ITEMS / 4; q++) {
        const float4 t = reinterpret_cast<const float4 *>(p)[q];
        v[4 * q] = t.x, v[4 * q + 1] = t.y, v[4 * q + 2] = t.z, v[4 * q + 3] = t.w;
    }
}

// v[i] = z[(row + i) * ldz + e] for the steps i < nvalid (0 for the others; all ITEMS when full).
template <int ITEMS, typename TZ>
__device__ __forceinline__ static void load_gate(float (&v)[ITEMS], const TZ *z, int ldz, size_t row, int e, bool full,
                                                 int nvalid) {
    const TZ *zp = z + row * ldz + e;
    if (full)
#pragma unroll
        for (int i = 0; i < ITEMS; i++) v[i] = gate_ld(zp, (size_t)i * ldz);
    else
#pragma unroll
        for (int i = 0; i < ITEMS; i++) v[i] = i < nvalid ? gate_ld(zp, (size_t)i * ldz) : 0.0f;
}

// f(i) for this thread's steps i < left (all ITEMS when full: no per-step test).
template <int ITEMS, typename F> __device__ __forceinline__ static void each_step(bool full, int left, F &f) {
    if (full)
#pragma unroll
        for (int i = 0; i < ITEMS; i++) f(i);
    else
#pragma unroll
        for (int i = 0; i < ITEMS; i++)
            if (i < left) f(i);
}

// ---- forward ---------------------------------------------------------------------------------------
// Shared memory (floats): X, DT [2][CH][32] and BS, CS [2][NP][CH + 4] (double-buffered by chunk parity);
// a2s [NP][32] (A * log2 e); carry [2][NP][32] (the state at a chunk's start, by chunk parity); agg
// [2][NG][2][W][32] (each warp's (A, H) maps, by state-group parity so one barrier per group suffices).
static size_t fwd_smem_floats(int W, int ITEMS, int NG, int NP) {
    const size_t CH = (size_t)W * ITEMS;
    return 4 * CH * 32 + 4 * NP * (CH + 4) + (size_t)3 * NP * 32 + (size_t)2 * NG * 2 * W * 32;
}

template <int W, int ITEMS, int NG, bool SEG, typename TX, typename TD, typename TZ>
__global__ void __launch_bounds__(W * 32)
    scan_fwd_kernel(float *__restrict__ y, __nv_bfloat16 *__restrict__ y16, float *__restrict__ h,
                    __nv_bfloat16 *__restrict__ hk, const TX *__restrict__ x, const TD *__restrict__ dt,
                    const float *__restrict__ dt_bias, const float *__restrict__ At, const float *__restrict__ A_log,
                    const float *__restrict__ Bm, const float *__restrict__ Cm, int ldbc, const float *__restrict__ Dv,
                    const TZ *__restrict__ z, int ldz, int T, int E, int N, const float *__restrict__ hin, int cps) {
    constexpr int CH = W * ITEMS, CHP = CH + 4;
    static_assert(SCAN_HK_STEPS % ITEMS == 0, "the checkpoints must fall on the starts of a thread's steps");
    const int NP = (N + NG - 1) / NG * NG;
    extern __shared__ float4 smem4[];
    float *Xf = (float *)smem4, *DT = Xf + 2 * CH * 32, *BS = DT + 2 * CH * 32, *CS = BS + 2 * NP * CHP,
          *a2s = CS + 2 * NP * CHP, *carry = a2s + NP * 32, *agg = carry + 2 * NP * 32;
    TX *X = reinterpret_cast<TX *>(Xf); // [2][CH][32] in X's float space (bf16: its first half)
    TD *DTs = reinterpret_cast<TD *>(DT); // likewise
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, b = blockIdx.y, e0 = blockIdx.x * 32, e = e0 + lane;
    const bool live = e < E, gate = z != nullptr;
    const size_t row0 = (size_t)b * T;
    // this block's time segment (SEG: see "time segments" below; else the whole sequence, the kernel compiled as it
    // was before segments): chunks [kbeg, kend), entered with the state hin[b][segment] (the carry kernel's) or,
    // unsegmented, h's (or zeros)
    const int nchunk = (T + CH - 1) / CH, kbeg = SEG ? blockIdx.z * cps : 0,
              kend = SEG ? min(nchunk, kbeg + cps) : nchunk;
    const BcWalk wk = bc_walk(NP);
    auto stage = [&](int k, int p) {
        stage_rows_async<W, ITEMS>(X + p * CH * 32, x, row0, k * CH, T, E, e0);
        stage_rows_async<W, ITEMS>(DTs + p * CH * 32, dt, row0, k * CH, T, E, e0);
        stage_bc_async(BS + p * NP * CHP, CS + p * NP * CHP, Bm, Cm, ldbc, row0, k * CH, T, CH, N, NP, wk);
    };
    stage(kbeg, 0);
    cp_async_commit();
    for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
        const int n = i >> 5, l = i & 31;
        const bool ok = n < N && e0 + l < E;
        a2s[i] = ok ? a_rate(At, A_log, n, e0 + l, E, N) * SCAN_LOG2E : 0.0f;
        carry[i] = !ok  ? 0.0f
                   : SEG ? hin[(((size_t)b * gridDim.z + blockIdx.z) * NP + n) * E + e0 + l]
                   : h   ? h[((size_t)b * E + e0 + l) * N + n]
                         : 0.0f;
    }
    const float d = live ? Dv[e] : 0.0f, bias = live ? dt_bias[e] : 0.0f;
    for (int k = kbeg; k < kend; k++) {
        const int p = (k - kbeg) & 1, tw = k * CH + w * ITEMS; // tw: this thread's first step
        if (k + 1 < kend) stage(k + 1, p ^ 1);
        cp_async_commit();
        const bool full = live && tw + ITEMS <= T; // all of this thread's steps exist: no per-step tests
        float zv[ITEMS]; // the gate of this thread's steps, loaded while the chunk lands
        if (gate) load_gate<ITEMS>(zv, z, ldz, row0 + tw, e, full, live ? T - tw : 0);
        cp_async_wait_prev();
        __syncthreads(); // chunk k is in shared memory
        const float *Bs = BS + p * NP * CHP, *Cs = CS + p * NP * CHP;
        float dtv[ITEMS], dtx[ITEMS], yv[ITEMS];
        lds_steps<ITEMS>(dtx, X + p * CH * 32, w * ITEMS, lane);
        lds_steps<ITEMS>(dtv, DTs + p * CH * 32, w * ITEMS, lane);
        float sdt = 0.0f;
#pragma unroll
        for (int i = 0; i < ITEMS; i++) { // branch-free (a select past T): the steps' softplus interleave
            const float sp = softplus_(dtv[i] + bias);
            dtv[i] = tw + i < T ? sp : 0.0f; // steps past T leave the state as it is
            dtx[i] *= dtv[i];
            sdt += dtv[i];
            yv[i] = 0.0f;
        }
        const float *cin = carry + p * NP * 32;
        float *cout = carry + (p ^ 1) * NP * 32;
        // a checkpoint at this thread's first step: the state there, written as the replay starts from it
        __nv_bfloat16 *hkw = hk && tw > 0 && tw < T && tw % SCAN_HK_STEPS == 0 && live
                                 ? hk + ((size_t)b * SCAN_HK_COUNT(T) + tw / SCAN_HK_STEPS - 1) * N * E + e
                                 : nullptr;
        for (int n0 = 0; n0 < NP; n0 += NG) {
            float *ag = agg + ((n0 / NG) & 1) * NG * 2 * W * 32; // [NG][2][W][32]
            float da[NG][ITEMS], bb[NG][ITEMS], hf[NG]; // a_t and b_t of the group's states
#pragma unroll
            for (int g = 0; g < NG; g++) {
                const int n = n0 + g;
                const float a2 = a2s[n * 32 + lane];
                float Bv[ITEMS];
                lds_vec<ITEMS>(Bv, Bs + n * CHP + w * ITEMS);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    da[g][i] = ex2(dtv[i] * a2);
                    bb[g][i] = dtx[i] * Bv[i];
                    s = da[g][i] * s + bb[g][i];
                }
                hf[g] = s;
                ag[((g * 2 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
                ag[((g * 2 + 1) * W + w) * 32 + lane] = s;
            }
            __syncthreads();
#pragma unroll
            for (int g = 0; g < NG; g++) {
                const int n = n0 + g;
                float hc = cin[n * 32 + lane], pa[W], ph[W];
#pragma unroll
                for (int v = 0; v < W - 1; v++) // all loads first (independent), then the chain
                    pa[v] = ag[((g * 2 + 0) * W + v) * 32 + lane], ph[v] = ag[((g * 2 + 1) * W + v) * 32 + lane];
#pragma unroll
                for (int v = 0; v < W - 1; v++)
                    if (v < w) hc = pa[v] * hc + ph[v];
                if (w == W - 1) cout[n * 32 + lane] = ag[((g * 2 + 0) * W + w) * 32 + lane] * hc + hf[g];
                if (hkw && n < N) hkw[(size_t)n * E] = __float2bfloat16_rn(hc);
                float Cv[ITEMS];
                lds_vec<ITEMS>(Cv, Cs + n * CHP + w * ITEMS);
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    hc = da[g][i] * hc + bb[g][i];
                    yv[i] += Cv[i] * hc;
                }
            }
        }
        if (live) {
            const TX *xs = X + p * CH * 32 + w * ITEMS * 32 + lane;
            const size_t at = (row0 + tw) * E + e;
            auto put = [&](int i) {
                float yo = yv[i] + d * sx(xs + i * 32);
                if (gate) yo = yo * (zv[i] * sigmoid_(zv[i]));
                if (y16) y16[at + (size_t)i * E] = __float2bfloat16_rn(yo);
                else y[at + (size_t)i * E] = yo;
            };
            each_step<ITEMS>(full, T - tw, put);
        }
        __syncthreads(); // everyone is done with buffer p before chunk k+2 is staged into it
    }
    if (h && (!SEG || blockIdx.z == gridDim.z - 1)) // the last segment's carry is the final state
        for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
            const int n = i >> 5, l = i & 31;
            if (n < N && e0 + l < E) h[((size_t)b * E + e0 + l) * N + n] = carry[((kend - kbeg) & 1) * NP * 32 + i];
        }
}

// ---- backward --------------------------------------------------------------------------------------
#define RED_STRIDE 36 // a row of 32 lane values + 4 floats of padding: 16-byte reads without bank conflicts

// Shared memory (floats): X, DT, DY [2][CH][32], BS, CS [2][NP][CH + 4] and HB2 [2][NP][32] (the chunk's
// start states; all by chunk parity); a2s, As [NP][32]; cfw [NP][32] (the forward carry of pass 1, last
// warp only); crv [2][NP][32] (u at a chunk's start, by chunk parity); agg [2][NG][3][W][32] ((A, H, Q)
// maps by state-group parity); red [W][2*ITEMS][RED_STRIDE] (dB, dC lane values of each warp's steps);
// dAs [NP][W][32]; dDs, dbs [W][32] (dD and d(dt bias) per warp).
static size_t bwd_smem_floats(int W, int ITEMS, int NG, int NP) {
    const size_t CH = (size_t)W * ITEMS;
    return 6 * CH * 32 + 4 * NP * (CH + 4) + (size_t)7 * NP * 32 + (size_t)2 * NG * 3 * W * 32 +
           (size_t)W * 2 * ITEMS * RED_STRIDE + (size_t)NP * W * 32 + (size_t)2 * W * 32;
}

#ifndef SCAN_BWD_MIN_BLOCKS // at most 168 registers: 3 blocks per SM (as many as shared memory allows), the whole grid
#define SCAN_BWD_MIN_BLOCKS 3 // at once
#endif
template <int W, int ITEMS, int NG, bool SEG, typename TX, typename TD, typename TZ, typename TY>
__global__ void __launch_bounds__(W * 32, SCAN_BWD_MIN_BLOCKS)
    scan_bwd_kernel(float *__restrict__ dx, __nv_bfloat16 *__restrict__ dx16, float *__restrict__ ddt,
                    __nv_bfloat16 *__restrict__ ddt16, float *__restrict__ dz, __nv_bfloat16 *__restrict__ dz16,
                    int lddz, float *__restrict__ out, __nv_bfloat16 *__restrict__ out16, float *__restrict__ part_bc,
                    float *__restrict__ dA_part, float *__restrict__ dD_part, float *__restrict__ db_part,
                    float *__restrict__ hb, const __nv_bfloat16 *__restrict__ hk, const TY *__restrict__ dy,
                    const TX *__restrict__ x, const TD *__restrict__ dt, const float *__restrict__ dt_bias,
                    const float *__restrict__ At, const float *__restrict__ A_log, const float *__restrict__ Bm,
                    const float *__restrict__ Cm, int ldbc, const float *__restrict__ Dv, const TZ *__restrict__ z,
                    int ldz, int T, int E, int N, const float *__restrict__ uend, int cps) {
    constexpr int CH = W * ITEMS, CHP = CH + 4, R = 2 * ITEMS, EVERY = SCAN_HK_STEPS / CH; // chunks per checkpoint
    static_assert(SCAN_HK_STEPS % CH == 0, "the checkpoints must fall on chunk starts");
    const int NP = (N + NG - 1) / NG * NG;
    extern __shared__ float4 smem4[];
    float *Xf = (float *)smem4, *DT = Xf + 2 * CH * 32, *DY = DT + 2 * CH * 32, *BS = DY + 2 * CH * 32,
          *CS = BS + 2 * NP * CHP, *a2s = CS + 2 * NP * CHP, *As = a2s + NP * 32, *cfw = As + NP * 32,
          *crv = cfw + NP * 32, *agg = crv + 2 * NP * 32, *red = agg + 2 * NG * 3 * W * 32,
          *dAs = red + W * R * RED_STRIDE, *dDs = dAs + NP * W * 32, *dbs = dDs + W * 32, *HB2 = dbs + W * 32;
    TX *X = reinterpret_cast<TX *>(Xf); // [2][CH][32] in X's float space (bf16: its first half)
    TD *DTs = reinterpret_cast<TD *>(DT);   // likewise
    TY *DYs = reinterpret_cast<TY *>(DY);   // likewise
    constexpr bool stash = sizeof(TX) == 2; // x in bf16: X's upper half holds each chunk's silu(z) (pass 2)
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, b = blockIdx.y, e0 = blockIdx.x * 32, e = e0 + lane;
    const int nblk = gridDim.x, nchunk = (T + CH - 1) / CH;
    // this block's time segment (SEG; else the whole sequence): chunks [kbeg, kend), partials row seg of dA_part,
    // dD_part, db_part; its start state hb[b][kbeg] (no checkpoints) or a checkpoint, the adjoint at its end uend[seg]
    // (zeros unsegmented)
    const int kbeg = SEG ? blockIdx.z * cps : 0, kend = SEG ? min(nchunk, kbeg + cps) : nchunk,
              seg = SEG ? b * gridDim.z + blockIdx.z : b;
    const bool live = e < E, gate = z != nullptr;
    const size_t row0 = (size_t)b * T;
    const BcWalk wk = bc_walk(NP);
    auto stage1 = [&](int k, int p) { // pass 1 needs x, dt, B
        stage_rows_async<W, ITEMS>(X + p * CH * 32, x, row0, k * CH, T, E, e0);
        stage_rows_async<W, ITEMS>(DTs + p * CH * 32, dt, row0, k * CH, T, E, e0);
        stage_bc_async(BS + p * NP * CHP, nullptr, Bm, Cm, ldbc, row0, k * CH, T, CH, N, NP, wk);
    };
    auto stage2 = [&](int k, int p) { // pass 2: x, dt, dy, B, C
        stage_rows_async<W, ITEMS>(X + p * CH * 32, x, row0, k * CH, T, E, e0);
        stage_rows_async<W, ITEMS>(DTs + p * CH * 32, dt, row0, k * CH, T, E, e0);
        stage_rows_async<W, ITEMS>(DYs + p * CH * 32, dy, row0, k * CH, T, E, e0);
        stage_bc_async(BS + p * NP * CHP, CS + p * NP * CHP, Bm, Cm, ldbc, row0, k * CH, T, CH, N, NP, wk);
        // the chunk's start states hb[b][k][:][e0 .. e0 + 32) (zero for chunk 0), or at a checkpoint hk's, staged as
        // they are (bf16 [NP][32] in the slot's first half)
        if (hk && k > 0 && k % EVERY == 0) {
            const size_t at = (size_t)b * SCAN_HK_COUNT(T) + k / EVERY - 1;
            stage_rows_async<W, ITEMS>(reinterpret_cast<__nv_bfloat16 *>(HB2 + p * NP * 32), hk + at * N * E, 0, 0, N,
                                       E, e0, NP);
            return;
        }
        for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
            const int n = i >> 5, l = i & 31;
            const bool ok = k > 0 && e0 + l < E;
            cp_async4(HB2 + p * NP * 32 + i, ok ? hb + (((size_t)b * nchunk + k) * NP + n) * E + e0 + l : hb,
                      ok ? 4 : 0);
        }
    };
    // pass 1 folds chunk k for its end state unless that end is a checkpoint: the first such chunk from k on
    // (kend - 1 when none is left)
    auto p1_next = [&](int k) {
        while (hk && k + 1 < kend && (k + 1) % EVERY == 0)
            k++;
        return k;
    };
    int k1 = p1_next(kbeg);
    if (k1 + 1 < kend) stage1(k1, 0);
    cp_async_commit();
    for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
        const int n = i >> 5, l = i & 31;
        const bool col = e0 + l < E;
        const float a = n < N && col ? a_rate(At, A_log, n, e0 + l, E, N) : 0.0f;
        As[i] = a;
        a2s[i] = a * SCAN_LOG2E;
        cfw[i] = SEG && kbeg > 0 && !hk && col ? hb[(((size_t)b * nchunk + kbeg) * NP + n) * E + e0 + l] : 0.0f;
        crv[i] = crv[NP * 32 + i] = 0.0f;
        if (SEG) crv[(kend & 1) * NP * 32 + i] = col ? uend[((size_t)seg * NP + n) * E + e0 + l] : 0.0f;
    }
    for (int i = threadIdx.x; i < NP * W * 32; i += blockDim.x) dAs[i] = 0.0f;
    const float d = live ? Dv[e] : 0.0f, bias = live ? dt_bias[e] : 0.0f;
    // hb[b][k][n][e]: the state at the start of chunk k (k >= 1)
#define HB(k, n) hb[(((size_t)b * nchunk + (k)) * NP + (n)) * E + e]

    // pass 1: chunks kbeg .. kend-2 forward; the last warp carries the state and stores each chunk's end. With
    // checkpoints it restarts from the one at a chunk's start and skips the chunks that end at one.
    for (int j1 = 0; k1 + 1 < kend; j1++) {
        const int k = k1, p = j1 & 1;
        k1 = p1_next(k + 1);
        if (k1 + 1 < kend) stage1(k1, p ^ 1);
        cp_async_commit();
        cp_async_wait_prev();
        __syncthreads();
        if (hk && k > 0 && k % EVERY == 0 && w == W - 1) { // the carry restarts (the last warp's own values)
            const size_t at = (size_t)b * SCAN_HK_COUNT(T) + k / EVERY - 1;
            for (int n = 0; n < NP; n++)
                cfw[n * 32 + lane] = n < N && live ? __bfloat162float(hk[(at * N + n) * E + e]) : 0.0f;
        }
        const float *Bs = BS + p * NP * CHP;
        float xv[ITEMS], dtv[ITEMS];
        lds_steps<ITEMS>(xv, X + p * CH * 32, w * ITEMS, lane);
        lds_steps<ITEMS>(dtv, DTs + p * CH * 32, w * ITEMS, lane);
        float sdt = 0.0f;
#pragma unroll
        for (int i = 0; i < ITEMS; i++) {
            dtv[i] = softplus_(dtv[i] + bias); // pass 1 covers whole chunks only: no steps past T
            sdt += dtv[i];
            xv[i] *= dtv[i];
        }
        for (int n0 = 0; n0 < NP; n0 += NG) {
            float *ag = agg + ((n0 / NG) & 1) * NG * 3 * W * 32; // [NG][3][W][32]
#pragma unroll
            for (int g = 0; g < NG; g++) {
                const int n = n0 + g;
                const float a2 = a2s[n * 32 + lane];
                float Bv[ITEMS];
                lds_vec<ITEMS>(Bv, Bs + n * CHP + w * ITEMS);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < ITEMS; i++) s = ex2(dtv[i] * a2) * s + xv[i] * Bv[i];
                ag[((g * 3 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
                ag[((g * 3 + 1) * W + w) * 32 + lane] = s;
            }
            __syncthreads();
            if (w == W - 1)
#pragma unroll
                for (int g = 0; g < NG; g++) {
                    const int n = n0 + g;
                    float hc = cfw[n * 32 + lane];
#pragma unroll
                    for (int v = 0; v < W; v++)
                        hc = ag[((g * 3 + 0) * W + v) * 32 + lane] * hc + ag[((g * 3 + 1) * W + v) * 32 + lane];
                    cfw[n * 32 + lane] = hc;
                    if (live) HB(k + 1, n) = hc;
                }
        }
        __syncthreads(); // everyone is done with buffer p
    }

    // pass 2: chunks in reverse (the j-th one processed is chunk kend-1-j, in buffer j & 1)
    float dD = 0.0f, dbias = 0.0f;
    // the dB, dC reduction: this lane sums PER float4s of row rr (rr < ITEMS: dB of step rr, else dC of step
    // rr - ITEMS) of its warp's red area together with the other LPR - 1 lanes of that row; the first of them
    // stores the sum at pblk[po + chunk start + n * 2T] (part_bc [B][nblk][NP][2][T]: pblk is this block's part,
    // po an int offset in it: cheap to rebuild where registers are short)
    static_assert(32 % R == 0, "2 * ITEMS must divide 32");
    constexpr int LPR = 32 / R, PER = 8 / LPR;
    const int rr = lane / LPR, rpart = lane % LPR, ri = rr % ITEMS;
    const float4 *rrow = reinterpret_cast<const float4 *>(red + (w * R + rr) * RED_STRIDE) + rpart * PER;
    float *const pblk = part_bc + ((size_t)b * nblk + blockIdx.x) * NP * 2 * (size_t)T;
    const int po = rr / ITEMS * T + w * ITEMS + ri;
    stage2(kend - 1, 0);
    cp_async_commit();
    for (int j = 0; j < kend - kbeg; j++) {
        const int k = kend - 1 - j, p = j & 1, tw = k * CH + w * ITEMS;
        if (k > kbeg) stage2(k - 1, p ^ 1);
        cp_async_commit();
        const bool full = live && tw + ITEMS <= T; // all of this thread's steps exist: no per-step tests
        float zv[ITEMS]; // the gate of this thread's steps, loaded while the chunk lands
        if (gate) load_gate<ITEMS>(zv, z, ldz, row0 + tw, e, full, live ? T - tw : 0);
        cp_async_wait_prev();
        __syncthreads(); // chunk k is in shared memory (and pass 1's hb stores are visible)
        const float *Bs = BS + p * NP * CHP, *Cs = CS + p * NP * CHP, *HBs = HB2 + p * NP * 32;
        const bool kchk = hk && k > 0 && k % EVERY == 0; // the start states are a checkpoint's, in bf16
        // this thread's steps of the staged x, dt and dout. Read here, then the thread's own slots carry what the
        // end of the chunk needs (fewer registers held across the state loop): the dt slot sigmoid(dt + bias), the
        // dout slot d(out) silu'(z) (times y: dz), and with x in bf16 the free upper half of x's area silu(z);
        // x itself is read again. (With dt or dout in bf16 its slot is in the free upper half of its area.)
        const TX *xs = X + p * CH * 32 + w * ITEMS * 32 + lane;
        float *dts = DT + (sizeof(TD) == 2 ? CH * 32 : p * CH * 32) + w * ITEMS * 32 + lane,
              *dys = DY + (sizeof(TY) == 2 ? CH * 32 : p * CH * 32) + w * ITEMS * 32 + lane;
        float *sls = Xf + CH * 32 + w * ITEMS * 32 + lane; // [CH][32] floats: only when x is bf16 (stash)
        float dtv[ITEMS], dyv[ITEMS], dtx[ITEMS], gB[ITEMS], aw[ITEMS], yr[ITEMS];
        lds_steps<ITEMS>(dtx, X + p * CH * 32, w * ITEMS, lane);
        lds_steps<ITEMS>(dtv, DTs + p * CH * 32, w * ITEMS, lane);
        lds_steps<ITEMS>(dyv, DYs + p * CH * 32, w * ITEMS, lane);
        float sdt = 0.0f;
#pragma unroll
        for (int i = 0; i < ITEMS; i++) {
            float sg;
            dtv[i] = softplus_sig_(dtv[i] + bias, sg);
            if (tw + i >= T) dtv[i] = 0.0f; // steps past T leave the state as it is
            dts[i * 32] = sg;
            if (gate) { // dy = d(out) silu(z); y for dz is recomputed below
                const float sz = sigmoid_(zv[i]), silu = zv[i] * sz;
                dys[i * 32] = dyv[i] * (sz * (1.0f + zv[i] * (1.0f - sz)));
                if (stash) sls[i * 32] = silu;
                dyv[i] *= silu;
            }
            yr[i] = 0.0f;
            sdt += dtv[i];
            dD += dtx[i] * dyv[i]; // dtx holds x here
            dtx[i] *= dtv[i];
            gB[i] = aw[i] = 0.0f;
        }
        const int pok = po + k * CH;
        const bool pst = rpart == 0 && tw + ri < T;
        const float *uin = crv + ((k + 1) & 1) * NP * 32;
        float *uout = crv + (k & 1) * NP * 32;
        float *rw = red + w * R * RED_STRIDE;
        for (int n0 = 0; n0 < NP; n0 += NG) {
            float *ag = agg + ((n0 / NG) & 1) * NG * 3 * W * 32; // [NG][3][W][32]
            float da[NG][ITEMS], bb[NG][ITEMS]; // a_t and b_t of the group's states
#pragma unroll
            for (int g = 0; g < NG; g++) {
                const int n = n0 + g;
                const float a2 = a2s[n * 32 + lane];
                float Bv[ITEMS], Cv[ITEMS];
                lds_vec<ITEMS>(Bv, Bs + n * CHP + w * ITEMS);
                lds_vec<ITEMS>(Cv, Cs + n * CHP + w * ITEMS);
                float s = 0.0f, q = 0.0f;
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    da[g][i] = ex2(dtv[i] * a2);
                    bb[g][i] = dtx[i] * Bv[i];
                    s = da[g][i] * s + bb[g][i];
                }
#pragma unroll
                for (int i = ITEMS - 1; i >= 0; i--) q = da[g][i] * (q + Cv[i] * dyv[i]);
                ag[((g * 3 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
                ag[((g * 3 + 1) * W + w) * 32 + lane] = s;
                ag[((g * 3 + 2) * W + w) * 32 + lane] = q;
            }
            __syncthreads();
#pragma unroll
            for (int g = 0; g < NG; g++) {
                const int n = n0 + g;
                float Bv[ITEMS], Cv[ITEMS];
                lds_vec<ITEMS>(Bv, Bs + n * CHP + w * ITEMS);
                lds_vec<ITEMS>(Cv, Cs + n * CHP + w * ITEMS);
                const float a = As[n * 32 + lane];
                // incoming forward state: the chunk's start state through the warps before this one
                float hc = kchk ? __bfloat162float(reinterpret_cast<const __nv_bfloat16 *>(HBs)[n * 32 + lane])
                                : HBs[n * 32 + lane],
                      pa[W], ph[W], pq[W];
#pragma unroll
                for (int v = 0; v < W; v++) // all loads first (independent), then the chains
                    pa[v] = ag[((g * 3 + 0) * W + v) * 32 + lane], ph[v] = ag[((g * 3 + 1) * W + v) * 32 + lane],
                    pq[v] = ag[((g * 3 + 2) * W + v) * 32 + lane];
#pragma unroll
                for (int v = 0; v < W - 1; v++)
                    if (v < w) hc = pa[v] * hc + ph[v];
                // incoming adjoint u: from the next chunk through the warps after this one
                float u = uin[n * 32 + lane];
#pragma unroll
                for (int v = W - 1; v > 0; v--)
                    if (v > w) u = pa[v] * u + pq[v];
                if (w == 0) uout[n * 32 + lane] = pa[0] * u + pq[0];
                float hs[ITEMS];
                const float h0 = hc;
#pragma unroll
                for (int i = 0; i < ITEMS; i++) {
                    hc = da[g][i] * hc + bb[g][i];
                    hs[i] = hc;
                }
                float dAacc = 0.0f;
#pragma unroll
                for (int i = ITEMS - 1; i >= 0; i--) {
                    const float gh = u + Cv[i] * dyv[i]; // dh_t
                    u = da[g][i] * gh;
                    const float wv = u * (i > 0 ? hs[i > 0 ? i - 1 : 0] : h0); // dh_t a_t h_{t-1}
                    aw[i] += a * wv;
                    dAacc += dtv[i] * wv;
                    gB[i] += gh * Bv[i];
                    if (gate) yr[i] += Cv[i] * hs[i];
                    rw[i * RED_STRIDE + lane] = gh * dtx[i];              // dB_t, this channel
                    rw[(ITEMS + i) * RED_STRIDE + lane] = dyv[i] * hs[i]; // dC_t, this channel
                }
                dAs[(n * W + w) * 32 + lane] += dAacc;
                __syncwarp();
                // row r (dB or dC of one step) summed over the warp's 32 channels in a fixed order: LPR
                // lanes share a row, each sums PER float4s of it (four running sums, one per component),
                // then a butterfly over the LPR lanes (a + b == b + a exactly, so all agree)
                {
                    float4 s4 = rrow[0];
#pragma unroll
                    for (int c = 1; c < PER; c++) {
                        const float4 v4 = rrow[c];
                        s4.x += v4.x, s4.y += v4.y, s4.z += v4.z, s4.w += v4.w;
                    }
                    float s = (s4.x + s4.y) + (s4.z + s4.w);
#pragma unroll
                    for (int off = 1; off < LPR; off <<= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
                    if (pst) pblk[pok + n * 2 * T] = s;
                }
                __syncwarp();
            }
        }
        if (live) {
            const size_t at = (row0 + tw) * E + e, atz = (row0 + tw) * lddz + e;
            auto put = [&](int i) {
                const float xv = sx(xs + i * 32);
                const float gx = dtv[i] * gB[i] + d * dyv[i];
                if (dx16) dx16[at + (size_t)i * E] = __float2bfloat16_rn(gx);
                else dx[at + (size_t)i * E] = gx;
                // through the softplus: d softplus(pre) / d pre = sigmoid(pre) (in the dt slot)
                const float g = (xv * gB[i] + aw[i]) * dts[i * 32];
                if (ddt16)
                    ddt16[at + (size_t)i * E] = __float2bfloat16_rn(g);
                else
                    ddt[at + (size_t)i * E] = g;
                dbias += g;
                if (gate) {
                    const float y = yr[i] + d * xv, gz = dys[i * 32] * y;
                    const float silu = stash ? sls[i * 32] : zv[i] * sigmoid_(zv[i]);
                    if (dz16) dz16[atz + (size_t)i * lddz] = __float2bfloat16_rn(gz);
                    else dz[atz + (size_t)i * lddz] = gz;
                    if (out16) out16[at + (size_t)i * E] = __float2bfloat16_rn(y * silu);
                    else if (out) out[at + (size_t)i * E] = y * silu;
                }
            };
            each_step<ITEMS>(full, T - tw, put);
        }
        __syncthreads(); // everyone is done with buffer p
    }
#undef HB
    dDs[w * 32 + lane] = dD;
    dbs[w * 32 + lane] = dbias;
    __syncthreads();
    for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
        const int n = i >> 5, l = i & 31;
        if (n >= N || e0 + l >= E) continue;
        float s = 0.0f;
        for (int v = 0; v < W; v++) s += dAs[(n * W + v) * 32 + l];
        dA_part[((size_t)seg * N + n) * E + e0 + l] = s;
    }
    if (threadIdx.x < 32 && e0 + (int)threadIdx.x < E) {
        float s = 0.0f, sb = 0.0f;
        for (int v = 0; v < W; v++) s += dDs[v * 32 + threadIdx.x], sb += dbs[v * 32 + threadIdx.x];
        dD_part[(size_t)seg * E + e0 + threadIdx.x] = s;
        db_part[(size_t)seg * E + e0 + threadIdx.x] = sb;
    }
}

// dB, dC [B*T, N] (stride lddbc) = the block partials part_bc [B][nblk][NP][2][T] summed in block order; or the
// sums rounded to bf16 into dB16, dC16 (lean training: x_proj's backward GEMMs read them so).
__device__ __forceinline__ static void reduce_bc(size_t i, float *dBm, float *dCm, __nv_bfloat16 *dB16,
                                                 __nv_bfloat16 *dC16, int lddbc, const float *part_bc, int nblk, int T,
                                                 int N, int NP, int B) {
    // i over B * N * 2 * T, t fastest
    if (i >= (size_t)B * N * 2 * T) return;
    const int t = (int)(i % T);
    size_t r = i / T;
    const int q = (int)(r % 2);
    r /= 2;
    const int n = (int)(r % N), b = (int)(r / N);
    float s = 0.0f;
    for (int blk = 0; blk < nblk; blk++) s += part_bc[((((size_t)b * nblk + blk) * NP + n) * 2 + q) * T + t];
    const size_t at = ((size_t)b * T + t) * lddbc + n;
    if (dB16)
        (q ? dC16 : dB16)[at] = __float2bfloat16_rn(s);
    else
        (q ? dCm : dBm)[at] = s;
}

// dAt [N, E] += sum over r of dA_part[r] (or dA_log [E, N] += that sum times At, transposed); dDv, dbias [E] += sums
// over r of dD_part[r], db_part[r]; in r order. The rows r < R: one per sequence, or per (sequence, time segment).
__device__ __forceinline__ static void reduce_ad(size_t i, float *dAt, float *dA_log, const float *At,
                                                 const float *A_log, float *dDv, float *dbias, const float *dA_part,
                                                 const float *dD_part, const float *db_part, int R, int N, int E) {
    // i over N * E + E
    if (i < (size_t)N * E) {
        float s = 0.0f;
        for (int r = 0; r < R; r++) s += dA_part[(size_t)r * N * E + i];
        if (dA_log)
            dA_log[(i % E) * N + i / E] += s * a_rate(At, A_log, (int)(i / E), (int)(i % E), E, N);
        else
            dAt[i] += s;
    } else if (i < (size_t)N * E + E) {
        const size_t e = i - (size_t)N * E;
        float s = 0.0f, sb = 0.0f;
        for (int r = 0; r < R; r++) s += dD_part[(size_t)r * E + e], sb += db_part[(size_t)r * E + e];
        dDv[e] += s;
        dbias[e] += sb;
    }
}

// Both in one launch: the first bc_blocks blocks of 256 threads sum dB, dC, the rest dA (or dA_log), dD, dbias.
__global__ void scan_bwd_reduce(unsigned bc_blocks, float *dBm, float *dCm, __nv_bfloat16 *dB16, __nv_bfloat16 *dC16,
                                int lddbc, const float *part_bc, int nblk, int T, float *dAt, float *dA_log,
                                const float *At, const float *A_log, float *dDv, float *dbias, const float *dA_part,
                                const float *dD_part, const float *db_part, int B, int R, int N, int NP, int E) {
    if (blockIdx.x < bc_blocks)
        reduce_bc((size_t)blockIdx.x * blockDim.x + threadIdx.x, dBm, dCm, dB16, dC16, lddbc, part_bc, nblk, T, N, NP,
                  B);
    else
        reduce_ad((size_t)(blockIdx.x - bc_blocks) * blockDim.x + threadIdx.x, dAt, dA_log, At, A_log, dDv, dbias,
                  dA_part, dD_part, db_part, R, N, E);
}

// ---- time segments (a two-level scan) --------------------------------------------------------------------------
// A block walks its sequence serially, so the kernels above have B x E/32 blocks of parallelism: 384 at the
// reference shape (batch 8, d_inner 1536), which fills an H100's or H200's 132 multiprocessors at 3 blocks each, but
// 48 at batch 1. Where the grid is too small to fill the multiprocessors once (scan_segments), time is cut into S
// segments of cps whole chunks, one block per (32 channels, sequence, segment), in three steps:
//   1. scan_fold_kernel folds each segment, from a zero state, into its affine map h -> P h + H (P the product of
//      the decays exp(dt A) over the segment, per channel and state; H the state reached from zero): the forward's
//      over segments 0 .. S-2 (the last one's map is never needed), the adjoint's u -> P u + Q (walking the segment
//      backward, u_t = a_t (u_{t+1} + C_t dy_t)) over segments 1 .. S-1;
//   2. scan_carry_kernel composes the maps in segment order (reversed for the adjoint), a thread per (sequence,
//      state, channel): the state entering each segment (from the op's initial state h, or zeros), or the adjoint
//      entering each from its end;
//   3. the kernels above run each segment from its true incoming state: the forward from hin, the backward's pass 1
//      (without checkpoints) from hb's entry at the segment's start and its pass 2 from uin at the segment's end. A
//      segment starts at a checkpoint (cps a multiple of the chunks per checkpoint), so with them the backward needs
//      no forward fold.
// Recomputing each segment from its incoming state was chosen over patching a zero-state result: the patch needs
// exp(A cumsum dt) C per step and state, as many special-function ops as the recompute, plus a second pass over y.
// The fold costs about half a forward (one exp and two multiply-adds per step and state, no output) and a small part
// of the backward, so segments are used only where the unsegmented grid leaves multiprocessor slots idle; S = 1 runs
// the kernels above exactly as before (the same bits). Every composition has a fixed order, so results are bitwise
// repeatable for a given S, which follows from the shape and the device (its multiprocessors, the kernel's
// occupancy) alone; SSM_SCAN_SEGMENTS=n forces n (1: unsegmented, the reference).

// Shared memory: BS [2][NP][CH + 4] floats (B for the forward, C for the adjoint, by chunk parity); agg [NP][2][W][32]
// (each warp's map (P, H) of each state); a2s [NP][32]; car, prd [NP][32] (the segment's map so far: H or Q, and P);
// then V, DT [2][CH][32] of x or dy and dt in their own types (bf16: half the bytes).
static size_t fold_smem_bytes(int W, int ITEMS, int NP, size_t v_bytes, size_t dt_bytes) {
    const size_t CH = (size_t)W * ITEMS;
    return sizeof(float) * (2 * NP * (CH + 4) + (size_t)NP * 2 * W * 32 + (size_t)3 * NP * 32) +
           2 * CH * 32 * (v_bytes + dt_bytes);
}

// Segment s = s0 + blockIdx.z of sequence blockIdx.y, channels blockIdx.x * 32 ..: Hs, Ps [B][S][NP][E] at s = its
// map. Forward (ADJ false): v is x, bc is B. Adjoint: v is dout (times silu(z) when z), bc is C. NP >= N states (the
// padding ones fold to H = 0, P = 1). Lanes are channels and warps runs of ITEMS steps, as in the kernels above, but
// nothing is replayed, so each chunk takes two barriers rather than one per state: every thread folds its steps for
// all the states (independent chains), then warp w composes the warps' maps onto the carry for states w, w + W, ...
template <int W, int ITEMS, bool ADJ, typename TV, typename TD, typename TZ>
__global__ void __launch_bounds__(W * 32)
    scan_fold_kernel(float *__restrict__ Hs, float *__restrict__ Ps, const TV *__restrict__ v,
                     const TD *__restrict__ dt, const float *__restrict__ dt_bias, const float *__restrict__ At,
                     const float *__restrict__ A_log, const float *__restrict__ bc, int ldbc, const TZ *__restrict__ z,
                     int ldz, int T, int E, int N, int NP, int S, int cps, int s0) {
    constexpr int CH = W * ITEMS, CHP = CH + 4;
    extern __shared__ float4 smem4[];
    float *BS = (float *)smem4, *agg = BS + 2 * NP * CHP, *a2s = agg + NP * 2 * W * 32, *car = a2s + NP * 32,
          *prd = car + NP * 32;
    TV *V = reinterpret_cast<TV *>(prd + NP * 32); // (16-byte aligned: every size above is a multiple of 4 floats)
    TD *DTs = reinterpret_cast<TD *>(V + 2 * CH * 32);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, b = blockIdx.y, e0 = blockIdx.x * 32, e = e0 + lane;
    const int s = s0 + blockIdx.z, nchunk = (T + CH - 1) / CH, kbeg = s * cps, kend = min(nchunk, kbeg + cps);
    const bool live = e < E, gate = ADJ && z != nullptr;
    const size_t row0 = (size_t)b * T;
    const BcWalk wk = bc_walk(NP);
    auto chunk = [&](int j) { return ADJ ? kend - 1 - j : kbeg + j; }; // the j-th chunk folded
    auto stage = [&](int k, int p) {
        stage_rows_async<W, ITEMS>(V + p * CH * 32, v, row0, k * CH, T, E, e0);
        stage_rows_async<W, ITEMS>(DTs + p * CH * 32, dt, row0, k * CH, T, E, e0);
        stage_bc_async(BS + p * NP * CHP, nullptr, bc, bc, ldbc, row0, k * CH, T, CH, N, NP, wk);
    };
    stage(chunk(0), 0);
    cp_async_commit();
    for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
        const int n = i >> 5, l = i & 31;
        a2s[i] = n < N && e0 + l < E ? a_rate(At, A_log, n, e0 + l, E, N) * SCAN_LOG2E : 0.0f;
        car[i] = 0.0f, prd[i] = 1.0f;
    }
    const float bias = live ? dt_bias[e] : 0.0f;
    for (int j = 0; j < kend - kbeg; j++) {
        const int k = chunk(j), p = j & 1, tw = k * CH + w * ITEMS;
        if (j + 1 < kend - kbeg) stage(chunk(j + 1), p ^ 1);
        cp_async_commit();
        float zv[ITEMS];
        if (gate) load_gate<ITEMS>(zv, z, ldz, row0 + tw, e, live && tw + ITEMS <= T, live ? T - tw : 0);
        cp_async_wait_prev();
        __syncthreads(); // chunk k is in shared memory
        float dtv[ITEMS], vv[ITEMS];
        lds_steps<ITEMS>(vv, V + p * CH * 32, w * ITEMS, lane);
        lds_steps<ITEMS>(dtv, DTs + p * CH * 32, w * ITEMS, lane);
        float sdt = 0.0f;
#pragma unroll
        for (int i = 0; i < ITEMS; i++) {
            const float sp = softplus_(dtv[i] + bias);
            dtv[i] = tw + i < T ? sp : 0.0f; // steps past T: the identity map
            sdt += dtv[i];
            if (!ADJ) vv[i] *= dtv[i];                       // dt x
            else if (gate) vv[i] *= zv[i] * sigmoid_(zv[i]); // dy = d(out) silu(z)
        }
        const float *Bs = BS + p * NP * CHP;
#pragma unroll 2
        for (int n = 0; n < NP; n++) {
            const float a2 = a2s[n * 32 + lane];
            float Bv[ITEMS];
            lds_vec<ITEMS>(Bv, Bs + n * CHP + w * ITEMS);
            float m = 0.0f;
            if (!ADJ)
#pragma unroll
                for (int i = 0; i < ITEMS; i++) m = ex2(dtv[i] * a2) * m + vv[i] * Bv[i];
            else
#pragma unroll
                for (int i = ITEMS - 1; i >= 0; i--) m = ex2(dtv[i] * a2) * (m + Bv[i] * vv[i]);
            agg[((n * 2 + 0) * W + w) * 32 + lane] = ex2(a2 * sdt);
            agg[((n * 2 + 1) * W + w) * 32 + lane] = m;
        }
        __syncthreads();
        for (int n = w; n < NP; n += W) {
            float hc = car[n * 32 + lane], pc = prd[n * 32 + lane];
#pragma unroll
            for (int u = 0; u < W; u++) {
                const int o = ADJ ? W - 1 - u : u; // the warps in the walk's order
                const float pa = agg[((n * 2 + 0) * W + o) * 32 + lane];
                hc = pa * hc + agg[((n * 2 + 1) * W + o) * 32 + lane];
                pc *= pa;
            }
            car[n * 32 + lane] = hc, prd[n * 32 + lane] = pc;
        }
        __syncthreads(); // everyone is done with buffer p and agg (and the carry is complete)
    }
    for (int i = threadIdx.x; i < NP * 32; i += blockDim.x) {
        const int n = i >> 5, l = i & 31;
        if (e0 + l >= E) continue;
        const size_t at = (((size_t)b * S + s) * NP + n) * E + e0 + l;
        Hs[at] = car[i], Ps[at] = prd[i];
    }
}

// The state entering each segment s: out + b * ob + s * os ([NP][E] from there) = h0 [B, E, N] (or zeros) through
// the maps (Hs, Ps [B][S][NP][E]) of segments 0 .. s-1 in order; reversed (rev), the adjoint entering segment s from
// its end: zeros through the maps of segments S-1 .. s+1. A thread per (sequence, state, channel).
__global__ void scan_carry_kernel(float *out, size_t ob, size_t os, const float *Hs, const float *Ps, const float *h0,
                                  int B, int S, int N, int NP, int E, int rev) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * NP * E) return;
    const int e = (int)(i % E), n = (int)(i / E % NP), b = (int)(i / ((size_t)NP * E));
    float hc = h0 && n < N ? h0[((size_t)b * E + e) * N + n] : 0.0f;
    const float *hp = Hs + ((size_t)b * S * NP + n) * E + e, *pp = Ps + ((size_t)b * S * NP + n) * E + e;
    float *o = out + b * ob + (size_t)n * E + e;
    const size_t step = (size_t)NP * E;
    enum { WALK = 8 }; // segments whose maps are read at once (the stores of o would otherwise order each read)
    for (int j0 = 0; j0 < S; j0 += WALK) {
        float p[WALK], q[WALK];
#pragma unroll
        for (int k = 0; k < WALK; k++) {
            const int j = j0 + k < S - 1 ? j0 + k : S - 1, s = rev ? S - 1 - j : j;
            p[k] = pp[s * step], q[k] = hp[s * step];
        }
#pragma unroll
        for (int k = 0; k < WALK && j0 + k < S; k++) {
            const int j = j0 + k, s = rev ? S - 1 - j : j;
            o[s * os] = hc;
            if (j + 1 < S) hc = p[k] * hc + q[k];
        }
    }
}

// Grow-only device scratch for the backward's partials and the time segments' maps, the bound device context's
// (context.h): one per model. Nothing in it outlives the op that asked for it.
static float *scratch_get(size_t floats) {
    cuda_ctx *ctx = cuda_ctx_now();
    if (floats > ctx->scan_scratch_cap) { /* through cuda_alloc: a clear out-of-memory error, counted in the peak */
        cuda_release(ctx->scan_scratch);
        ctx->scan_scratch = (float *)cuda_alloc(floats * sizeof(float));
        ctx->scan_scratch_cap = floats;
    }
    return ctx->scan_scratch;
}

// Raises a kernel's dynamic shared-memory limit when it needs more than the default 48 KB and more than the limit
// already set. The limit belongs to the kernel on one device (cudaFuncSetAttribute acts on the current one), shared
// by every context there, so *set (per kernel) remembers it per device: a second model's smaller need must never
// lower it under the first's. Devices past the table set it at every launch.
#define SMEM_DEVICES 16
static void smem_limit(const void *kernel, size_t bytes, size_t (*set)[SMEM_DEVICES]) {
    if (bytes <= 48 * 1024) return;
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    if (device < SMEM_DEVICES && bytes <= (*set)[device]) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (device < SMEM_DEVICES) (*set)[device] = bytes;
}

#ifndef SCAN_SEG_MIN_STEPS // the shortest segment: below it the fold's and the launches' fixed costs dominate
#define SCAN_SEG_MIN_STEPS 256
#endif

// How many blocks of a kernel (threads, smem bytes of shared memory, its limit already raised) the device holds at
// once, remembered per device in *set (per kernel, like smem_limit's).
static int grid_slots(const void *kernel, int threads, size_t smem, int (*set)[SMEM_DEVICES]) {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    if (device < SMEM_DEVICES && (*set)[device]) return (*set)[device];
    int sms = 0, per = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, threads, smem));
    const int slots = sms * (per > 0 ? per : 1);
    if (device < SMEM_DEVICES) (*set)[device] = slots;
    return slots;
}

// The time segments for B sequences of T steps and E channels, on a device holding `slots` blocks of the kernel at
// once: 1 while B x E/32 blocks fill them; else as many as fill them once, each at least SCAN_SEG_MIN_STEPS long
// (SSM_SCAN_SEGMENTS=n forces n). *cps: the chunks of CH steps per segment, a multiple of `every`; the count
// returned is the number of segments that makes.
static int scan_segments(int slots, int B, int T, int E, int CH, int every, int *cps) {
    const int nchunk = cdiv(T, CH);
    int S = 1;
    const char *env = getenv("SSM_SCAN_SEGMENTS");
    if (env && *env && atoi(env) >= 1) {
        S = atoi(env);
    } else {
        const long blocks = (long)B * cdiv(E, 32);
        if (blocks < slots) S = (int)(slots / blocks);
        if (S > T / SCAN_SEG_MIN_STEPS) S = T / SCAN_SEG_MIN_STEPS;
    }
    if (S > nchunk) S = nchunk;
    if (S < 1) S = 1;
    *cps = cdiv(cdiv(nchunk, S), every) * every;
    return cdiv(nchunk, *cps);
}

// Kernel shapes <W warps (runs of steps), ITEMS steps per thread, NG states per barrier>, measured best
// at the reference shape on an H100 (docs/cuda.md): blocks of 128 threads whose registers and shared
// memory let 3 share a multiprocessor, so the whole grid (B x E/32 blocks) is resident at once. The backward's two
// states per barrier (167 registers) gained 1.5% over one (128 registers, the same 3 blocks: shared memory binds).
#ifndef SCAN_FWD_CFG
#define SCAN_FWD_CFG 4, 16, 1
#endif
#ifndef SCAN_BWD_CFG
#define SCAN_BWD_CFG 4, 8, 2
#endif

// The folds (scan_fold_kernel) into Hs, Ps [B][S][NP][E] of the S - 1 segments whose maps the carry composes: the
// forward's 0 .. S-2, the adjoint's 1 .. S-1.
template <int W, int ITEMS, bool ADJ, typename TV, typename TD, typename TZ>
static void scan_fold_launch(const scan_args *s, const TV *v, const TD *dt, const TZ *z, const float *bc, float *Hs,
                             float *Ps, int NP, int S, int cps) {
    const size_t smem = fold_smem_bytes(W, ITEMS, NP, sizeof(TV), sizeof(TD));
    const int s0 = ADJ ? 1 : 0;
    static size_t smem_set[SMEM_DEVICES];
    smem_limit((const void *)scan_fold_kernel<W, ITEMS, ADJ, TV, TD, TZ>, smem, &smem_set);
    scan_fold_kernel<W, ITEMS, ADJ, TV, TD, TZ><<<dim3(cdiv(s->E, 32), s->B, S - 1), W * 32, smem>>>(
        Hs, Ps, v, dt, s->dt_bias, s->At, s->A_log, bc, s->ldbc, z, s->z.ld, s->T, s->E, s->N, NP, S, cps, s0);
    CUDA_CHECK_LAUNCH();
    ktime_mark(ADJ ? "scan fold (adjoint)" : "scan fold");
}

// scan_carry_kernel over B sequences' NP x E states.
static void scan_carry_launch(const scan_args *s, float *out, size_t ob, size_t os, const float *Hs, const float *Ps,
                              const float *h0, int NP, int S, int rev) {
    const size_t threads = (size_t)s->B * NP * s->E;
    scan_carry_kernel<<<(unsigned)((threads + 255) / 256), 256>>>(out, ob, os, Hs, Ps, h0, s->B, S, s->N, NP, s->E,
                                                                    rev);
    CUDA_CHECK_LAUNCH();
    ktime_mark("scan carry");
}

template <int W, int ITEMS, int NG, typename TX, typename TD, typename TZ>
static void scan_fwd_launch(const scan_args *s, const TX *x, const TD *dt, const TZ *z, float *y, __nv_bfloat16 *y16,
                            float *h) {
    const int B = s->B, E = s->E, NP = (s->N + NG - 1) / NG * NG;
    const size_t smem = fwd_smem_floats(W, ITEMS, NG, NP) * sizeof(float);
    static size_t smem_set[SMEM_DEVICES], smem_set_seg[SMEM_DEVICES];
    static int slots_set[SMEM_DEVICES];
    const void *kernel = (const void *)scan_fwd_kernel<W, ITEMS, NG, false, TX, TD, TZ>;
    smem_limit(kernel, smem, &smem_set);
    int cps = 0;
    const int S = scan_segments(grid_slots(kernel, W * 32, smem, &slots_set), B, s->T, E, W * ITEMS, 1, &cps);
    ktime_start();
    if (S == 1) {
        scan_fwd_kernel<W, ITEMS, NG, false, TX, TD, TZ><<<dim3(cdiv(E, 32), B), W * 32, smem>>>(
            y, y16, h, (__nv_bfloat16 *)s->hk, x, dt, s->dt_bias, s->At, s->A_log, s->Bm, s->Cm, s->ldbc, s->Dv, z,
            s->z.ld, s->T, E, s->N, NULL, cps);
        CUDA_CHECK_LAUNCH();
        ktime_mark("scan fwd");
        return;
    }
    const size_t nseg = (size_t)B * S * NP * E;
    float *Hs = scratch_get(3 * nseg), *Ps = Hs + nseg, *hin = Ps + nseg; // hin [B][S][NP][E]: entering each segment
    scan_fold_launch<W, ITEMS, false>(s, x, dt, (const float *)nullptr, s->Bm, Hs, Ps, NP, S, cps);
    scan_carry_launch(s, hin, (size_t)S * NP * E, (size_t)NP * E, Hs, Ps, h, NP, S, 0);
    smem_limit((const void *)scan_fwd_kernel<W, ITEMS, NG, true, TX, TD, TZ>, smem, &smem_set_seg);
    scan_fwd_kernel<W, ITEMS, NG, true, TX, TD, TZ><<<dim3(cdiv(E, 32), B, S), W * 32, smem>>>(
        y, y16, h, (__nv_bfloat16 *)s->hk, x, dt, s->dt_bias, s->At, s->A_log, s->Bm, s->Cm, s->ldbc, s->Dv, z, s->z.ld,
        s->T, E, s->N, hin, cps);
    CUDA_CHECK_LAUNCH();
    ktime_mark("scan fwd (segments)");
}

template <int W, int ITEMS, int NG, typename TX, typename TD, typename TZ, typename TY>
static void scan_bwd_launch(const scan_args *s, const TX *x, const TD *dt, const TZ *z, const scan_grads *g,
                            const TY *dy) {
    const int B = s->B, T = s->T, E = s->E, N = s->N;
    const int NP = (N + NG - 1) / NG * NG, nblk = cdiv(E, 32), nchunk = cdiv(T, W * ITEMS);
    const size_t smem = bwd_smem_floats(W, ITEMS, NG, NP) * sizeof(float);
    static size_t smem_set[SMEM_DEVICES], smem_set_seg[SMEM_DEVICES];
    static int slots_set[SMEM_DEVICES];
    auto *const whole = scan_bwd_kernel<W, ITEMS, NG, false, TX, TD, TZ, TY>,
                *const segmented = scan_bwd_kernel<W, ITEMS, NG, true, TX, TD, TZ, TY>;
    const void *kernel = (const void *)whole;
    smem_limit(kernel, smem, &smem_set);
    ktime_start();
    int cps = 0; // with checkpoints every segment starts at one
    const int S = scan_segments(grid_slots(kernel, W * 32, smem, &slots_set), B, T, E, W * ITEMS,
                                s->hk ? SCAN_HK_STEPS / (W * ITEMS) : 1, &cps);
    const size_t n_bc = (size_t)B * nblk * NP * 2 * T, n_a = (size_t)B * S * N * E, n_d = (size_t)B * S * E,
                 n_hb = s->hk && W * ITEMS == SCAN_HK_STEPS ? 0 : (size_t)B * nchunk * NP * E, // (none to recompute)
                 nseg = S > 1 ? (size_t)B * S * NP * E : 0;
    // (hb: a valid address either way)
    float *part_bc = scratch_get(n_bc + n_a + 2 * n_d + n_hb + 3 * nseg), *dA_part = part_bc + n_bc,
          *dD_part = dA_part + n_a, *db_part = dD_part + n_d, *hb = n_hb ? db_part + n_d : db_part,
          *Hs = db_part + n_d + n_hb, *Ps = Hs + nseg, *uend = S > 1 ? Ps + nseg : NULL;
    if (S > 1) {
        if (!s->hk) { // the forward state entering each segment, into hb at the segment's first chunk
            scan_fold_launch<W, ITEMS, false>(s, x, dt, (const float *)nullptr, s->Bm, Hs, Ps, NP, S, cps);
            scan_carry_launch(s, hb, (size_t)nchunk * NP * E, (size_t)cps * NP * E, Hs, Ps, NULL, NP, S, 0);
        }
        scan_fold_launch<W, ITEMS, true>(s, dy, dt, z, s->Cm, Hs, Ps, NP, S, cps);
        scan_carry_launch(s, uend, (size_t)S * NP * E, (size_t)NP * E, Hs, Ps, NULL, NP, S, 1);
        smem_limit((const void *)segmented, smem, &smem_set_seg);
    }
    (S > 1 ? segmented : whole)<<<dim3(nblk, B, S), W * 32, smem>>>(
        mat_f(g->dx), (__nv_bfloat16 *)mat_h(g->dx), mat_f(g->ddt), (__nv_bfloat16 *)mat_h(g->ddt), mat_f(g->dz),
        (__nv_bfloat16 *)mat_h(g->dz), g->dz.ld, mat_f(g->out), (__nv_bfloat16 *)mat_h(g->out), part_bc, dA_part,
        dD_part, db_part, hb, (const __nv_bfloat16 *)s->hk, dy, x, dt, s->dt_bias, s->At, s->A_log, s->Bm, s->Cm,
        s->ldbc, s->Dv, z, s->z.ld, T, E, N, uend, cps);
    CUDA_CHECK_LAUNCH();
    ktime_mark(S > 1 ? "scan bwd (segments)" : "scan bwd");
    const size_t nbc = (size_t)B * N * 2 * T, nad = (size_t)N * E + E;
    const unsigned bc_blocks = (unsigned)((nbc + 255) / 256), ad_blocks = (unsigned)((nad + 255) / 256);
    scan_bwd_reduce<<<bc_blocks + ad_blocks, 256>>>(
        bc_blocks, mat_f(g->dBm), mat_f(g->dCm), (__nv_bfloat16 *)mat_h(g->dBm), (__nv_bfloat16 *)mat_h(g->dCm),
        g->dBm.ld, part_bc, nblk, T,
        g->dAt, g->dA_log, s->At, s->A_log, g->dDv, g->ddt_bias, dA_part, dD_part, db_part, B, B * S, N, NP, E);
    CUDA_CHECK_LAUNCH();
    ktime_mark("scan bwd reduce");
}

// f(x, dt, z) with each operand as the kernels' type for it: float32 or bf16, each operand's dtype (one kernel
// instantiation per combination). An absent gate is a float32 NULL.
template <typename F> static void with_types(const scan_args *s, F f) {
    auto by_z = [&](auto x, auto dt) {
        if (mat_h(s->z))
            f(x, dt, (const __nv_bfloat16 *)mat_h(s->z));
        else
            f(x, dt, (const float *)mat_f(s->z));
    };
    auto by_dt = [&](auto x) {
        if (mat_h(s->dt))
            by_z(x, (const __nv_bfloat16 *)mat_h(s->dt));
        else
            by_z(x, (const float *)mat_f(s->dt));
    };
    if (mat_h(s->x))
        by_dt((const __nv_bfloat16 *)mat_h(s->x));
    else
        by_dt((const float *)mat_f(s->x));
}

// The scan's limit on the state size N (d_state): the decode step sums a channel's states across the lanes of one
// warp (NP <= 32 below). scan_check_cuda is the backend's answer (check_op), asked before a model moves to the GPU;
// the kernels refuse the rest.
#define SCAN_MAX_N 32

extern "C" int scan_check_cuda(const scan_args *s) {
    if (s->N > SCAN_MAX_N)
        return ssm_error("d_state %d: the CUDA scan supports d_state <= %d; use --device cpu", s->N, SCAN_MAX_N);
    return 0;
}

static void check_state_size(int N) {
    if (N > SCAN_MAX_N) {
        fprintf(stderr, "ssm: the CUDA scan supports d_state <= %d (got %d)\n", SCAN_MAX_N, N);
        exit(2);
    }
}


// One step (T = 1, a decode step): a thread per (sequence, channel, state), the NP >= N lanes of a channel
// consecutive (NP a power of two <= 32, so they share a warp), y summed over them with shuffles. The state h is
// read and written coalesced; the chunked kernel would stage and compose a whole chunk for the one real step.
__global__ static void scan_step_kernel(float *y, __nv_bfloat16 *y16, float *h, const float *x,
                                        const __nv_bfloat16 *x16, const float *dt, const __nv_bfloat16 *dt16,
                                        const float *dt_bias, const float *At, const float *A_log, const float *Bm,
                                        const float *Cm, int ldbc, const float *Dv, const float *z,
                                        const __nv_bfloat16 *z16, int ldg, int B, int E, int N, int NP) {
    const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x, i = t / NP; // i indexes x, dt, y [B, 1, E]
    const int n = (int)(t % NP);
    const bool live = i < (size_t)B * E; // every lane stays for the shuffles
    const int b = live ? (int)(i / E) : 0, e = live ? (int)(i % E) : 0;
    float xv = 0.0f, c = 0.0f;
    if (live) {
        xv = x16 ? __bfloat162float(x16[i]) : x[i];
        if (n < N) {
            const float dv = softplus_((dt16 ? __bfloat162float(dt16[i]) : dt[i]) + dt_bias[e]);
            float *hp = h ? h + i * N + n : NULL; // h [B, E, N]
            const float hn =
                (hp ? *hp * expf(dv * a_rate(At, A_log, n, e, E, N)) : 0.0f) + dv * xv * Bm[(size_t)b * ldbc + n];
            if (hp) *hp = hn;
            c = Cm[(size_t)b * ldbc + n] * hn;
        }
    }
    for (int off = NP / 2; off > 0; off >>= 1) c += __shfl_xor_sync(0xffffffffu, c, off);
    if (!live || n != 0) return;
    float yo = c + Dv[e] * xv;
    if (z || z16) {
        const float zv = z16 ? gate_ld(z16, (size_t)b * ldg + e) : gate_ld(z, (size_t)b * ldg + e);
        yo = yo * zv * sigmoid_(zv);
    }
    if (y16) y16[i] = __float2bfloat16_rn(yo);
    else y[i] = yo;
}

extern "C" void scan_fwd_cuda(const scan_args *s, mat out_m, float *h) {
    float *out = mat_f(out_m);
    __nv_bfloat16 *o16 = (__nv_bfloat16 *)mat_h(out_m);
    check_state_size(s->N);
    if (s->B <= 0 || s->T <= 0 || s->E <= 0) return; // nothing to scan: the state stays as it is
    if (s->T == 1) {
        int NP = 1;
        while (NP < s->N) NP <<= 1;
        const size_t threads = (size_t)s->B * s->E * NP;
        scan_step_kernel<<<(unsigned)((threads + 127) / 128), 128>>>(
            out, o16, h, mat_f(s->x), (const __nv_bfloat16 *)mat_h(s->x), mat_f(s->dt),
            (const __nv_bfloat16 *)mat_h(s->dt), s->dt_bias, s->At, s->A_log, s->Bm, s->Cm, s->ldbc, s->Dv, mat_f(s->z),
            (const __nv_bfloat16 *)mat_h(s->z), s->z.ld, s->B, s->E, s->N, NP);
        CUDA_CHECK_LAUNCH();
        return;
    }
    with_types(s, [&](auto x, auto dt, auto z) { scan_fwd_launch<SCAN_FWD_CFG>(s, x, dt, z, out, o16, h); });
}

extern "C" void scan_bwd_cuda(const scan_args *s, const scan_grads *g, mat dout) {
    check_state_size(s->N);
    if (g->dBm.dt != g->dCm.dt || g->dBm.ld != g->dCm.ld) {
        fprintf(stderr, "ssm: scan_bwd: dB and dC must share a dtype and a row stride\n");
        exit(2);
    }
    if (s->B <= 0 || s->T <= 0 || s->E <= 0) return; // no steps: no gradients to write or add
    with_types(s, [&](auto x, auto dt, auto z) {
        if (mat_h(dout)) scan_bwd_launch<SCAN_BWD_CFG>(s, x, dt, z, g, (const __nv_bfloat16 *)mat_h(dout));
        else scan_bwd_launch<SCAN_BWD_CFG>(s, x, dt, z, g, (const float *)mat_f(dout));
    });
}
