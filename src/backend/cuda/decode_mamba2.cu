// One decode step of a stack of Mamba-2 layers as one persistent kernel (m2_decode_args in ops.h; its reference is
// the op-by-op step through mamba2_forward, which the GPU tests and the emulator compare it with). The design is
// decode_mamba1.cu's (the shared parts in decode_common.cuh); a Mamba-2 layer needs three grid barriers:
//   A in_proj:  every block normalizes x (rmsnorm); in_proj's rows: z (Di), xBC (Cd: through its conv step and SiLU
//               at once, as Mamba-1's x half), dt (H)                                                    | sync
//   B SSD step: a warp per (sequence, head, state row p), its lanes over the N columns: dt = softplus(dt + dt_bias)
//               clamped, S_p = exp(dt A) S_p + dt x_p B (in place), y_p = S_p . C + D x_p; v = y silu(z) | sync
//   C out_proj: every block takes the gated RMSNorm of v (per group of Di / G, its own sums); out_proj's rows
//               x_r += out_proj[r] . g (+ bias)                                                          | sync
// then the head. The FFMA form up to DEC_MAX_B sequences, the tensor-core form (bf16 and int8 weights) up to
// DEC_TC_MAX_B, as for Mamba-1. The SSD step is ssd_step_cuda's arithmetic; the elementwise functions the accurate
// ones: the results match the op-by-op step to float rounding.
#include "backend/cuda/decode_common.cuh"

#define M2_RUN 4 // the SSD step's columns a lane reads at once (4 x 32: d_state 128 in one run)

// the SSD step's dt: softplus (torch's threshold 20) clamped to [lo, hi], as ssd_dt
__device__ __forceinline__ static float ssd_dt_ref(float pre, float lo, float hi) {
    const float dt = pre > 20.0f ? pre : log1pf(expf(pre));
    return dt < lo ? lo : dt > hi ? hi : dt;
}

// rs[b * G + g] = 1 / rms of v_b's group g (gs values) for b < B, a warp per (sequence, group), the squares summed in
// double as the op-by-op gated norm sums them; then a block barrier
__device__ static void block_group_rstd(float *rs, const float *v, int B, int Di, int G, float eps) {
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32, gs = Di / G;
    for (int q = warp; q < B * G; q += DEC_WARPS) {
        const float *vg = v + (size_t)(q / G) * Di + (size_t)(q % G) * gs;
        double ss = 0.0;
        for (int i = lane; i < gs; i += 32)
            ss += (double)vg[i] * vg[i];
        for (int off = 16; off > 0; off >>= 1)
            ss += __shfl_xor_sync(DEC_FULL, ss, off);
        if (lane == 0) rs[q] = 1.0f / sqrtf((float)(ss / gs) + eps);
    }
    __syncthreads();
}

// tc_gemm's stage of the gated norm's output: v rs w (rows b >= B zero)
struct StageGated {
    const float *v, *rs, *w;
    int B, Di, G;
    __device__ void operator()(uint16_t *st, int ldx, int k0, int kc, int b0, int ns) const {
        tc_stage8(st, ldx, k0, kc, b0, ns, B, [&](float(&u)[8], int b, int k) {
            float vv[8], wv[8];
            load8(vv, v + (size_t)b * Di + k), load8(wv, w + k);
#pragma unroll
            for (int j = 0; j < 8; j++)
                u[j] = vv[j] * rs[b * G + (k + j) / (Di / G)] * wv[j];
        });
    }
};

// in_proj's value v (scaled, its conv inputs ci: m2_conv_in's) of row r for sequence b: z, xBC through its conv step
// and SiLU, or dt
__device__ __forceinline__ static void m2_in_proj_out(const m2_decode_layer &L, const ConvIn &ci, int Di, int Cd, int H,
                                                      int K, float *z, float *xbc, float *dtr, int r, int b, float v) {
    v += ci.ib;
    if (r < Di)
        z[(size_t)b * Di + r] = v;
    else if (r < Di + Cd)
        xbc[(size_t)b * Cd + (r - Di)] = conv_step(ci, L.conv_state, Cd, K, r - Di, b, v);
    else
        dtr[(size_t)b * H + (r - Di - Cd)] = v;
}
__device__ __forceinline__ static ConvIn m2_conv_in(const m2_decode_layer &L, int Di, int Cd, int K, int r, int b) {
    return conv_in(L.conv_state, L.conv_w, L.conv_b, L.in_b, Cd, K, r, r >= Di && r < Di + Cd ? r - Di : -1, b);
}

// Shared memory that stages a layer's weights (decode_common.cuh): in_proj's rows of each warp [DEC_WARPS, pa, D],
// out_proj's [DEC_WARPS, pd, Di]; its bytes for a grid of nblocks (the kernel stages when they fit in st.stage)
struct M2Stage {
    int pa, pd;
    size_t bytes;
};
__host__ __device__ static inline M2Stage m2_stage(int D, int Di, int Din, size_t wsize, int nblocks) {
    M2Stage s;
    const int nwarps = nblocks * DEC_WARPS;
    s.pa = (Din + nwarps - 1) / nwarps, s.pd = (D + nwarps - 1) / nwarps;
    s.bytes = wsize * DEC_WARPS * ((size_t)s.pa * D + (size_t)s.pd * Di);
    return s;
}

template <typename W>
__device__ __forceinline__ static void m2_prefetch_layer(const m2_decode_layer &L, const m2_decode_args &a,
                                                         size_t gthread, size_t nthreads) {
    const size_t Din = 2 * (size_t)a.Di + 2 * (size_t)a.G * a.N + a.H;
    prefetch_range(L.in_proj, sizeof(W) * Din * a.st.D, gthread, nthreads);
    prefetch_range(L.out_proj, sizeof(W) * (size_t)a.st.D * a.Di, gthread, nthreads);
}

template <int NB, typename W, bool TC>
__global__ static void __launch_bounds__(DEC_THREADS, 1)
    m2_decode_kernel(m2_decode_args a, const m2_decode_layer *layers) {
    const decode_step st = a.st; // (a copy: the kernel parameter stays in its own space)
    int ph = 0; // the grid barriers passed (SSM_DECODE_TRACE's index)
    dec_trace_mark(st.trace, 0);
    extern __shared__ __align__(16) unsigned char smem[];
    const int B = st.B, D = st.D, Di = a.Di, N = a.N, H = a.H, P = a.P, G = a.G, K = a.K;
    const int GN = G * N, Cd = Di + 2 * GN, Din = 2 * Di + 2 * GN + H, hpg = H / G, gs = Di / G;
    const DecSmem sm = dec_smem<NB>(smem, D > Di ? D : Di);
    // (v next to z: rows of Di floats 32-byte aligned for the tensor-core form's stage, whatever Cd and H are)
    float *x = st.work, *z = x + (size_t)B * D, *v = z + (size_t)B * Di; // v [B, Di]: y silu(z)
    float *xbc = v + (size_t)B * Di, *dtr = xbc + (size_t)B * Cd;
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int gwarp = dec_gwarp(), nwarps = (int)gridDim.x * DEC_WARPS;
    const size_t nthreads = (size_t)gridDim.x * DEC_THREADS, gthread = (size_t)blockIdx.x * DEC_THREADS + threadIdx.x;
    // The staged weights (FFMA form, when they fit): in_proj's and out_proj's rows for layer l + 1 copied as soon as
    // layer l's product has read its own (a group committed after A and after C; a phase waits for all but the newest)
    const M2Stage sg = m2_stage(D, Di, Din, sizeof(W), (int)gridDim.x);
    const bool stg = !TC && st.stage && sg.bytes <= st.stage;
    W *sA = reinterpret_cast<W *>(smem + dec_smem_bytes(B, D > Di ? D : Di)), *sC = sA + (size_t)DEC_WARPS * sg.pa * D;
    sA += (size_t)warp * sg.pa * D, sC += (size_t)warp * sg.pd * Di;
    auto refill = [&](bool in, int l) { // in: in_proj's rows, else out_proj's
        if (!stg) return;
        if (l < st.n_layer) {
            if (in)
                stage_warp_rows(sA, (const W *)layers[l].in_proj, Din, D, gwarp, nwarps, sg.pa);
            else
                stage_warp_rows(sC, (const W *)layers[l].out_proj, D, Di, gwarp, nwarps, sg.pd);
        }
        cp_async_commit();
    };

    if (st.prefetch) m2_prefetch_layer<W>(layers[0], a, gthread, nthreads);
    refill(true, 0), refill(false, 0);
    dec_embed(x, st.emb, st.tokens, B, D);
    // (the barriers before A and B are split: between arrive and wait each block reads what the closing phase does
    // not write, the next phase's own state and constants)
    grid_token tok = dec_arrive(st.trace, ph);
    for (int l = 0; l < st.n_layer; l++) {
        const m2_decode_layer &L = layers[l];
        if (st.prefetch && l + 1 < st.n_layer) m2_prefetch_layer<W>(layers[l + 1], a, gthread, nthreads);
        if (st.prefetch && l + 1 == st.n_layer) prefetch_range(st.head, sizeof(W) * st.V * D, gthread, nthreads);
        // A: u = rmsnorm(x) w; z | xBC | dt = in_proj(u) (+ bias); xBC through the conv step and SiLU
        if constexpr (TC) {
            dec_wait(st.trace, ph, tok);
            block_rstd(sm.rs, x, B, D, st.eps);
            tc_gemm<NB, 1, 2>((const W *)L.in_proj, L.in_s, Din, D, B, smem, StageNorm{x, sm.rs, L.norm_w, B, D},
                              [&](int r, int b, float val) {
                                  m2_in_proj_out(L, m2_conv_in(L, Di, Cd, K, r, b), Di, Cd, H, K, z, xbc, dtr, r, b,
                                                 val);
                              });
        } else {
            // (the first row's conv inputs read within the barrier: their latency overlaps its)
            ConvIn ci = lane < B && gwarp < Din ? m2_conv_in(L, Di, Cd, K, gwarp, lane) : ConvIn{};
            dec_wait(st.trace, ph, tok);
            block_rmsnorm(sm.sh, reinterpret_cast<double *>(sm.red), x, L.norm_w, B, D, st.eps);
            if (stg) cp_async_wait_pending<1>(); // (this thread's copies: no barrier)
            for (int r = gwarp, k = 0; r < Din; r += nwarps, k++) {
                if (k > 0 && lane < B) ci = m2_conv_in(L, Di, Cd, K, r, lane);
                float acc[NB];
                warp_dot<NB>(acc, stg ? sA + (size_t)k * D : (const W *)L.in_proj + (size_t)r * D, sm.sh, D, D, B);
                if (lane < B)
                    m2_in_proj_out(L, ci, Di, Cd, H, K, z, xbc, dtr, r, lane, pick(acc, lane) * row_scale(L.in_s, r));
            }
            refill(true, l + 1);
        }
        tok = dec_arrive(st.trace, ph);
        // B: the SSD step, a warp per (sequence, head, state row), and the gate. The state row's columns in runs of
        // M2_RUN a lane, each run's reads (S, B, C) issued together before its writes, and the first run's S (with the
        // head's constants) within the barrier: the chain waits on one latency, not one a column
        struct SsdIn {
            float sv[M2_RUN], dtb, alog, dv;
        };
        auto ssd_in = [&](int row, SsdIn &q) {
            const int h = row / P % H;
            const float *S = L.ssd_state + (size_t)row * N; // (row = (b H + h) P + p)
#pragma unroll
            for (int j = 0; j < M2_RUN; j++)
                q.sv[j] = row < B * H * P && 32 * j + lane < N ? S[32 * j + lane] : 0.0f;
            q.dtb = row < B * H * P ? L.dt_bias[h] : 0.0f, q.alog = row < B * H * P ? L.A_log[h] : 0.0f;
            q.dv = row < B * H * P ? L.Dv[h] : 0.0f;
        };
        SsdIn q;
        ssd_in(gwarp, q);
        dec_wait(st.trace, ph, tok);
        for (int row = gwarp; row < B * H * P; row += nwarps) {
            if (row != gwarp) ssd_in(row, q);
            const int b = row / (H * P), h = row / P % H, p = row % P, g = h / hpg;
            const float *Bv = xbc + (size_t)b * Cd + Di + (size_t)g * N, *Cv = Bv + GN;
            float *S = L.ssd_state + (size_t)row * N, acc = 0.0f;
            float bv[M2_RUN], cv[M2_RUN];
            auto load_run = [&](int n0) {
#pragma unroll
                for (int j = 0; j < M2_RUN; j++) {
                    const int n = n0 + 32 * j + lane;
                    if (n0 > 0) q.sv[j] = n < N ? S[n] : 0.0f;
                    bv[j] = n < N ? Bv[n] : 0.0f, cv[j] = n < N ? Cv[n] : 0.0f;
                }
            };
            load_run(0);
            const float dt = ssd_dt_ref(dtr[(size_t)b * H + h] + q.dtb, a.dt_min, a.dt_max);
            const float e = expf(dt * -expf(q.alog)), xr = xbc[(size_t)b * Cd + (size_t)h * P + p], xp = dt * xr;
            for (int n0 = 0; n0 < N; n0 += 32 * M2_RUN) { // (n in increasing order, as one column at a time)
                if (n0 > 0) load_run(n0);
#pragma unroll
                for (int j = 0; j < M2_RUN; j++) {
                    const int n = n0 + 32 * j + lane;
                    if (n < N) {
                        const float s = e * q.sv[j] + xp * bv[j];
                        S[n] = s;
                        acc += s * cv[j];
                    }
                }
            }
            for (int off = 16; off > 0; off >>= 1)
                acc += __shfl_xor_sync(DEC_FULL, acc, off);
            if (lane == 0) {
                const size_t i = (size_t)b * Di + (size_t)h * P + p;
                const float zv = z[i];
                v[i] = (acc + q.dv * xr) * (zv / (1.0f + expf(-zv)));
            }
        }
        dec_sync(st.trace, ph);
        // C: g = the gated RMSNorm of v (per group, every block its own sums); x += out_proj(g) (+ bias)
        float *grs = TC ? sm.rs : sm.red; // [B, G] the groups' scales (FFMA: in red, DEC_MAX_B x DEC_MAX_G floats)
        block_group_rstd(grs, v, B, Di, G, a.gnorm_eps);
        if (stg) cp_async_wait_pending<1>();
        dec_residual_proj<NB, W, TC>(
            x, (const W *)L.out_proj, L.out_s, L.out_b, D, Di, B, sm,
            [&](float *st) {
                for (size_t i = threadIdx.x; i < (size_t)B * Di; i += DEC_THREADS)
                    st[i] = v[i] * grs[(i / Di) * G + (i % Di) / gs] * L.gnorm_w[i % Di];
            },
            StageGated{v, grs, L.gnorm_w, B, Di, G}, stg ? sC : nullptr);
        refill(false, l + 1);
        tok = dec_arrive(st.trace, ph);
    }
    dec_wait(st.trace, ph, tok);
    dec_head<NB, W, TC>(st.logits, (const W *)st.head, st.head_s, st.norm_f, x, st.V, D, B, st.eps, sm);
    dec_trace_mark(st.trace, 2 * ph + 1);
}

struct M2Kernels {
    static constexpr int period = 3; // grid barriers a layer, and their phases' names (SSM_DECODE_TRACE)
    static constexpr const char *labels[3] = {"in_proj, conv", "ssd step", "norm, out_proj"};
    template <int NB, typename W, bool TC> static auto get() { return m2_decode_kernel<NB, W, TC>; }
};

extern "C" int decode_mamba2_cuda(const m2_decode_args *args) {
    m2_decode_args a_ = *args;
    a_.st.prefetch = dec_prefetch_on();
    const size_t wsize = mat_elem_bytes(a_.st.wdt);
    const int Din = 2 * a_.Di + 2 * a_.G * a_.N + a_.H;
    a_.st.stage = a_.st.B <= DEC_MAX_B && dec_stage_on() ? m2_stage(a_.st.D, a_.Di, Din, wsize, dec_sms()).bytes : 0;
    const m2_decode_args *a = &a_;
    if (a->st.B < 1 || a->N < 1 || a->K < 2 || a->K > DEC_MAX_K || a->G < 1 || a->G > DEC_MAX_G || a->H % a->G ||
        a->Di != a->H * a->P || a->st.D % 8 || a->Di % 8)
        return -1;
    return dec_run<M2Kernels, m2_decode_layer>(a, a->Di);
}
