// One decode step of a stack of Mamba-1 layers as one persistent kernel (m1_decode_args in ops.h; its reference is
// model.c's op-by-op step, which the GPU tests compare it with). At batch 1 a step reads every weight once (d768 x
// 24: 363 MB in float32, 181 MB in bf16, 42 us at the H200's 4.3 TB/s), but op by op it is ~10 kernels a layer whose
// launches and tails, not the reads, set the time (0.59 ms). Here one cooperative launch walks every layer, and
// grid_sync() separates the phases that need a whole vector the previous phase wrote:
//   embed:      x = emb[token]                                                                          | sync
//   per layer:
//   A in_proj:  every block normalizes x into shared memory (u = rmsnorm(x) w: D floats a sequence, recomputed
//               by each block rather than synchronized); a warp per row r of in_proj: v = in_proj[r] . u (+ bias).
//               A row r < E (the x half) goes straight on through channel r's conv step (its K-1 past inputs in
//               conv_state) and SiLU into xs; the rest is the gate z                                     | sync
//   B x_proj:   a block per row p, its warps splitting the E columns (summed in warp order): dbc_p = x_proj[p] . xs
//               (only R + 2N rows: a warp each would leave the grid idle on one long row)                | sync
//   C scan:     NP lanes per channel (N rounded up to a power of two; in the tensor-core form a thread per channel):
//               dt = softplus(dt_w[e] . dt_low + dt_b); h_n = exp(dt A_n) h_n + dt x B_n in place;
//               y = sum_n C_n h_n + D x; g = y silu(z)                                                   | sync
//   D out_proj: every block stages g in shared memory; a warp per row r: x_r += out_proj[r] . g (+ bias): the
//               residual add that op by op the next layer's norm does                                    | sync
//   head:       every block normalizes x (norm_f); a warp per row v: logits_v = head[v] . u.
// (That is the FFMA form; in the tensor-core form below every product is tc_gemm's, 16-row tiles dealt to blocks.)
// Each layer's matrices are asked into L2 (prefetch) as the previous layer starts, so that they stream from memory
// while the grid waits at barriers and its reads hit L2 (m1_decode_args.prefetch; SSM_DECODE_PREFETCH=0: off). In the
// FFMA form the rows of in_proj, x_proj and out_proj that a warp (block, for x_proj) will read are also copied into
// shared memory (cp.async) as soon as it has read the previous layer's, so that after a barrier a product waits on
// no global read but its input's (decode_step.stage: the bytes a block has for it; SSM_DECODE_STAGE=0: off). (Each
// warp's first rows also asked into L1 as a phase starts measured 2-4% slower in bf16 and int8, no faster in float32:
// removed, 2026-12-06, docs/performance.md.)
// Weights float32, bf16, or int8 with a scale per row (the sums scaled once, as matmul_xwT's int8 form). Up to
// DEC_MAX_B = 8 sequences share each weight read in FFMA (a warp keeps NB sums, NB = B rounded up to a power of two);
// 9 to 64 (bf16 and int8 weights) take the tensor-core form (tc_gemm: 16-row tiles of m16n8k16 products, the
// activations in bf16 as the op-by-op bf16 GEMMs have them). Every sum has a fixed order (the same bits on every run
// and any grid); rows are dealt to warps or blocks in turn, so the grid's size sets the speed only. The elementwise
// functions are the accurate ones of the CPU (expf, log1pf), not the scan kernels' fast forms: the results match the
// op-by-op step to float rounding, not bitwise.
#include "backend/cuda/decode_common.cuh"

// A layer's matrices and states into L2: a layer ahead of their reads, they stream from memory while the grid waits at
// barriers
template <typename W>
__device__ __forceinline__ static void prefetch_layer(const m1_decode_layer &L, const m1_decode_args &a, size_t gthread,
                                                      size_t nthreads) {
    const size_t D = a.st.D, E = a.E, P = a.R + 2 * a.N;
    prefetch_range(L.in_proj, sizeof(W) * 2 * E * D, gthread, nthreads);
    prefetch_range(L.x_proj, sizeof(W) * P * E, gthread, nthreads);
    prefetch_range(L.dt_w, sizeof(W) * E * a.R, gthread, nthreads);
    prefetch_range(L.out_proj, sizeof(W) * D * E, gthread, nthreads);
    // and its states (at batch 64 6.3 MB of scan state a layer, more than its bf16 weights)
    prefetch_range(L.conv_state, sizeof(float) * a.st.B * E * (a.K - 1), gthread, nthreads);
    prefetch_range(L.scan_state, sizeof(float) * a.st.B * E * a.N, gthread, nthreads);
}

// ---- the kernel ------------------------------------------------------------------------------------------------
// in_proj's value v (scaled, its conv inputs ci: conv_in's of channel r, or of none for the gate half) of row r for
// sequence b: the x half (r < E) through the conv step and SiLU into xs; the gate half into z
__device__ __forceinline__ static void in_proj_out(const m1_decode_layer &L, const ConvIn &ci, int E, int K, float *xs,
                                                   float *z, int r, int b, float v) {
    v += ci.ib;
    if (r >= E)
        z[(size_t)b * E + (r - E)] = v;
    else
        xs[(size_t)b * E + r] = conv_step(ci, L.conv_state, E, K, r, b, v);
}
__device__ __forceinline__ static ConvIn m1_conv_in(const m1_decode_layer &L, int E, int K, int r, int b) {
    return conv_in(L.conv_state, L.conv_w, L.conv_b, L.in_b, E, K, r, r < E ? r : -1, b);
}

// What a lane's turn of the FFMA scan reads besides dbc: its channel's x and z, dt's bias, D, its state and A, and its
// first SCAN_DTW values of dt_proj's row
#define SCAN_DTW 4
// the tensor-core form's states a lane (two float4s)
#define SCAN_SPL 8
struct ScanIn {
    float xv, zv, dtb, dv, hv, an, dw[SCAN_DTW];
};

// Shared memory that stages a layer's weights (decode_common.cuh): in_proj's rows of each warp [DEC_WARPS, pa, D],
// out_proj's [DEC_WARPS, pd, E], x_proj's of the block [pb, E]; its bytes for a grid of nblocks (the kernel stages
// when they fit in m1_decode_args.st.stage)
struct M1Stage {
    int pa, pd, pb;
    size_t bytes;
};
__host__ __device__ static inline M1Stage m1_stage(int D, int E, int P, size_t wsize, int nblocks) {
    M1Stage s;
    const int nwarps = nblocks * DEC_WARPS;
    s.pa = (2 * E + nwarps - 1) / nwarps, s.pd = (D + nwarps - 1) / nwarps, s.pb = (P + nblocks - 1) / nblocks;
    s.bytes = wsize * (DEC_WARPS * ((size_t)s.pa * D + (size_t)s.pd * E) + (size_t)s.pb * E);
    return s;
}

template <int NB, typename W, bool TC>
__global__ static void __launch_bounds__(DEC_THREADS, 1)
    m1_decode_kernel(m1_decode_args a, const m1_decode_layer *layers) {
    const decode_step st = a.st; // (a copy: the kernel parameter stays in its own space)
    int ph = 0; // the grid barriers passed (SSM_DECODE_TRACE's index)
    dec_trace_mark(st.trace, 0);
    extern __shared__ __align__(16) unsigned char smem[];
    const int B = st.B, D = st.D, E = a.E, N = a.N, R = a.R, K = a.K, P = R + 2 * N;
    const DecSmem sm = dec_smem<NB>(smem, D > E ? D : E);
    float *sh = sm.sh, *red = sm.red, *rs = sm.rs;
    float *x = st.work, *xs = x + (size_t)B * D, *z = xs + (size_t)B * E, *g = z + (size_t)B * E;
    float *dbc = g + (size_t)B * E; // [B, P]: dt_low | B | C
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int gwarp = dec_gwarp(), nwarps = (int)gridDim.x * DEC_WARPS;
    const size_t nthreads = (size_t)gridDim.x * DEC_THREADS, gthread = (size_t)blockIdx.x * DEC_THREADS + threadIdx.x;
    int NP = 1, SL = 1; // N rounded up to a power of two; the tensor-core form's lanes per channel
    while (NP < N)
        NP <<= 1;
    while (SL * SCAN_SPL < N)
        SL <<= 1;
    auto stage_norm = [&](const float *nw) { return StageNorm{x, rs, nw, B, D}; };
    auto stage_act = [&](const float *src, int ld) { return StageAct{src, ld, B}; };
    // The staged weights (FFMA form, when they fit): each phase's rows for layer l + 1 copied as soon as layer l's
    // product has read its own (groups committed after A, B and D; a phase waits for all but the newest 2)
    const M1Stage sg = m1_stage(D, E, P, sizeof(W), (int)gridDim.x);
    const bool stg = !TC && st.stage && sg.bytes <= st.stage;
    W *sA = reinterpret_cast<W *>(smem + dec_smem_bytes(B, D > E ? D : E)), *sD = sA + (size_t)DEC_WARPS * sg.pa * D,
      *sB = sD + (size_t)DEC_WARPS * sg.pd * E;
    sA += (size_t)warp * sg.pa * D, sD += (size_t)warp * sg.pd * E;
    auto refill = [&](int phase, int l) { // phase 0: in_proj, 1: x_proj, 2: out_proj
        if (!stg) return;
        if (l < st.n_layer) {
            const m1_decode_layer &L = layers[l];
            if (phase == 0) stage_warp_rows(sA, (const W *)L.in_proj, 2 * E, D, gwarp, nwarps, sg.pa);
            if (phase == 1) stage_block_rows(sB, (const W *)L.x_proj, P, E, sg.pb);
            if (phase == 2) stage_warp_rows(sD, (const W *)L.out_proj, D, E, gwarp, nwarps, sg.pd);
        }
        cp_async_commit();
    };
    auto staged = [&]() { // this phase's copies landed (this thread's: no barrier)
        if (stg) cp_async_wait_pending<2>();
    };

    if (st.prefetch) prefetch_layer<W>(layers[0], a, gthread, nthreads);
    refill(0, 0), refill(1, 0), refill(2, 0);
    dec_embed(x, st.emb, st.tokens, B, D);
    // (the barriers before A and C are split: between arrive and wait each block reads what the closing phase does
    // not write, the next phase's own state and constants)
    grid_token tok = dec_arrive(st.trace, ph);
    for (int l = 0; l < st.n_layer; l++) {
        const m1_decode_layer &L = layers[l];
        if (st.prefetch && l + 1 < st.n_layer) prefetch_layer<W>(layers[l + 1], a, gthread, nthreads);
        if (st.prefetch && l + 1 == st.n_layer) prefetch_range(st.head, sizeof(W) * st.V * D, gthread, nthreads);
        // A: u = rmsnorm(x) w; xz = in_proj(u) (+ bias); the x half through the conv step and SiLU
        if constexpr (TC) {
            dec_wait(st.trace, ph, tok);
            block_rstd(rs, x, B, D, st.eps);
            tc_gemm<NB, 1, 2>( // (two tiles a block at once: 2E / 16 tiles, more than the blocks, fewer than twice)
                (const W *)L.in_proj, L.in_s, 2 * E, D, B, smem, stage_norm(L.norm_w),
                [&](int r, int b, float v) { in_proj_out(L, m1_conv_in(L, E, K, r, b), E, K, xs, z, r, b, v); });
        } else {
            // (the first row's conv inputs read within the barrier: their latency overlaps its)
            ConvIn ci = lane < B && gwarp < 2 * E ? m1_conv_in(L, E, K, gwarp, lane) : ConvIn{};
            dec_wait(st.trace, ph, tok);
            block_rmsnorm(sh, reinterpret_cast<double *>(red), x, L.norm_w, B, D, st.eps);
            staged();
            for (int r = gwarp, k = 0; r < 2 * E; r += nwarps, k++) {
                if (k > 0 && lane < B) ci = m1_conv_in(L, E, K, r, lane);
                float acc[NB];
                warp_dot<NB>(acc, stg ? sA + (size_t)k * D : (const W *)L.in_proj + (size_t)r * D, sh, D, D, B);
                if (lane < B) in_proj_out(L, ci, E, K, xs, z, r, lane, pick(acc, lane) * row_scale(L.in_s, r));
            }
            refill(0, l + 1);
        }
        dec_sync(st.trace, ph);
        // B: dbc = x_proj(xs), a block per row (only R + 2N rows: a warp each would leave the grid idle)
        if constexpr (TC) {
            tc_gemm<NB, NB / 16>((const W *)L.x_proj, L.x_s, P, E, B, smem, stage_act(xs, E), // (few tiles)
                                 [&](int r, int b, float v) { dbc[(size_t)b * P + r] = v; });
        } else {
            staged();
            for (int p = (int)blockIdx.x, i = 0; p < P; p += (int)gridDim.x, i++) {
                const W *wr = stg ? sB + (size_t)i * E : (const W *)L.x_proj + (size_t)p * E;
                float acc[NB];
#pragma unroll
                for (int b = 0; b < NB; b++)
                    acc[b] = 0.0f;
                for (int k = (int)threadIdx.x * 8; k < E; k += DEC_THREADS * 8) {
                    float v[8];
                    load8(v, wr + k);
                    fma8(acc, v, xs + k, E, B);
                }
                warp_sum(acc);
                if (lane == 0)
#pragma unroll
                    for (int b = 0; b < NB; b++)
                        red[warp * NB + b] = acc[b];
                __syncthreads();
                if ((int)threadIdx.x < B) {
                    float s = 0.0f;
                    for (int w = 0; w < DEC_WARPS; w++)
                        s += red[w * NB + threadIdx.x];
                    dbc[(size_t)threadIdx.x * P + p] = s * row_scale(L.x_s, p);
                }
                __syncthreads();
            }
            refill(1, l + 1);
        }
        tok = dec_arrive(st.trace, ph);
        // C: dt, the scan step and the gate. Many sequences (the tensor-core form): SL lanes per (sequence, channel),
        // each SCAN_SPL states, so that a warp reads and writes whole lines of the state (a thread per channel, its 16
        // states 64 bytes from its neighbour's, took 37 us a layer at batch 64: a request per state and lane) in few
        // turns; few: NP lanes per (sequence, channel), a state each, so that a batch of one still spreads over the
        // grid. Either way every lane of a warp takes the same number of turns (base is warp-aligned) for the
        // shuffles.
        if constexpr (TC) {
            dec_wait(st.trace, ph, tok);
            const bool vec = N % 4 == 0; // (rows of states 16-byte aligned: float4s)
            for (size_t base = gthread - lane; base < (size_t)B * E * SL; base += nthreads) {
                const size_t t = base + lane, i = t / SL; // i = b * E + e
                const int sub = (int)(t % SL), n0 = sub * SCAN_SPL;
                const bool live = i < (size_t)B * E;
                const int b = live ? (int)(i / E) : 0, e = live ? (int)(i % E) : 0;
                const float *lo = dbc + (size_t)b * P; // dt_low [R], B [N], C [N]
                float *hp = L.scan_state + (live ? i : 0) * N + n0;
                // every read first (the states, A, x, z, D, dt's bias), then dt, the update, the stores
                float h[SCAN_SPL], an[SCAN_SPL];
#pragma unroll
                for (int j = 0; j < SCAN_SPL; j += 4) {
                    const bool in = live && n0 + j < N;
                    if (vec) {
                        const float4 q = in ? *reinterpret_cast<const float4 *>(hp + j) : make_float4(0, 0, 0, 0);
                        h[j] = q.x, h[j + 1] = q.y, h[j + 2] = q.z, h[j + 3] = q.w;
                    } else
#pragma unroll
                        for (int k = j; k < j + 4; k++)
                            h[k] = live && n0 + k < N ? hp[k] : 0.0f;
                }
#pragma unroll
                for (int j = 0; j < SCAN_SPL; j++)
                    an[j] = live && n0 + j < N ? L.At[(size_t)(n0 + j) * E + e] : 0.0f;
                const float xv = live ? xs[i] : 0.0f, zv = live ? z[i] : 0.0f;
                const float dv = live ? L.Dv[e] : 0.0f, dtb = live ? L.dt_b[e] : 0.0f;
                // dt = softplus(dt_w[e] . dt_low + dt_b): the SL lanes take pieces of 8 (or single values) in turn
                const W *dw = (const W *)L.dt_w + (size_t)e * R;
                float s = 0.0f;
                if (live) {
                    if (R % 8 == 0) { // (rows of a multiple of 8 at a multiple of 8: load8's reads aligned)
                        for (int r = 8 * sub; r < R; r += 8 * SL) {
                            float w8[8];
                            load8(w8, dw + r);
#pragma unroll
                            for (int j = 0; j < 8; j++)
                                s += w8[j] * lo[r + j];
                        }
                    } else
                        for (int r = sub; r < R; r += SL)
                            s += wload(dw, r) * lo[r];
                }
                for (int off = SL / 2; off > 0; off >>= 1)
                    s += __shfl_xor_sync(DEC_FULL, s, off);
                const float dt = softplus_ref(live ? s * row_scale(L.dt_s, e) + dtb : 0.0f);
                float c = 0.0f;
#pragma unroll
                for (int j = 0; j < SCAN_SPL; j++)
                    if (live && n0 + j < N) {
                        h[j] = h[j] * expf(dt * an[j]) + dt * xv * lo[R + n0 + j];
                        c += lo[R + N + n0 + j] * h[j];
                    }
                for (int off = SL / 2; off > 0; off >>= 1)
                    c += __shfl_xor_sync(DEC_FULL, c, off);
#pragma unroll
                for (int j = 0; j < SCAN_SPL; j += 4) {
                    if (!(live && n0 + j < N)) continue;
                    if (vec)
                        *reinterpret_cast<float4 *>(hp + j) = make_float4(h[j], h[j + 1], h[j + 2], h[j + 3]);
                    else
#pragma unroll
                        for (int k = j; k < j + 4; k++)
                            if (n0 + k < N) hp[k] = h[k];
                }
                if (live && sub == 0) g[i] = (c + dv * xv) * zv * sigmoid_ref(zv);
            }
        } else {
            // what a lane's turn reads that is not dbc (written by B): the first turn's read within the barrier
            auto scan_in = [&](size_t base) {
                ScanIn q;
                const size_t t = base + lane, i = t / NP; // i = b * E + e
                const int n = (int)(t % NP), e = (int)(i % E);
                const bool live = i < (size_t)B * E, mine = live && n < N; // mine: state n is this lane's
                q.xv = live ? xs[i] : 0.0f, q.zv = live ? z[i] : 0.0f, q.dtb = live ? L.dt_b[e] : 0.0f;
                q.dv = live ? L.Dv[e] : 0.0f, q.hv = mine ? L.scan_state[i * N + n] : 0.0f;
                q.an = mine ? L.At[(size_t)n * E + e] : 0.0f;
#pragma unroll
                for (int j = 0; j < SCAN_DTW; j++)
                    q.dw[j] = live && n + j * NP < R ? wload((const W *)L.dt_w, (size_t)e * R + n + j * NP) : 0.0f;
                return q;
            };
            const size_t base0 = gthread - lane;
            ScanIn q = scan_in(base0);
            dec_wait(st.trace, ph, tok);
            for (size_t base = base0; base < (size_t)B * E * NP; base += nthreads) {
                if (base != base0) q = scan_in(base);
                const size_t t = base + lane, i = t / NP; // i = b * E + e
                const int n = (int)(t % NP);
                const bool live = i < (size_t)B * E, mine = live && n < N; // mine: state n is this lane's
                const int b = live ? (int)(i / E) : 0, e = live ? (int)(i % E) : 0;
                const float *lo = dbc + (size_t)b * P; // dt_low [R], B [N], C [N]
                // every read that does not wait on dt first, so that the chain below waits on one latency, not three
                const float xv = q.xv, zv = q.zv, dtb = q.dtb, dv = q.dv, hv = q.hv, an = q.an;
                const float bn = mine ? lo[R + n] : 0.0f, cn = mine ? lo[R + N + n] : 0.0f;
                float s = 0.0f;
                if (live) {
#pragma unroll
                    for (int j = 0; j < SCAN_DTW; j++)
                        if (n + j * NP < R) s += q.dw[j] * lo[n + j * NP];
                    for (int r = n + SCAN_DTW * NP; r < R; r += NP)
                        s += wload((const W *)L.dt_w, (size_t)e * R + r) * lo[r];
                }
                for (int off = NP / 2; off > 0; off >>= 1)
                    s += __shfl_xor_sync(DEC_FULL, s, off);
                const float dt = softplus_ref(live ? s * row_scale(L.dt_s, e) + dtb : 0.0f);
                float c = 0.0f;
                if (mine) {
                    const float h = hv * expf(dt * an) + dt * xv * bn;
                    L.scan_state[i * N + n] = h;
                    c = cn * h;
                }
                for (int off = NP / 2; off > 0; off >>= 1)
                    c += __shfl_xor_sync(DEC_FULL, c, off);
                if (live && n == 0) g[i] = (c + dv * xv) * zv * sigmoid_ref(zv);
            }
        }
        dec_sync(st.trace, ph);
        // D: x += out_proj(g) (+ bias)
        staged();
        dec_residual_proj<NB, W, TC>(x, (const W *)L.out_proj, L.out_s, L.out_b, D, E, B, sm, FillAct{g, (size_t)B * E},
                                     stage_act(g, E), stg ? sD : nullptr);
        refill(2, l + 1);
        tok = dec_arrive(st.trace, ph);
    }
    dec_wait(st.trace, ph, tok);
    dec_head<NB, W, TC>(st.logits, (const W *)st.head, st.head_s, st.norm_f, x, st.V, D, B, st.eps, sm);
    dec_trace_mark(st.trace, 2 * ph + 1);
}

struct M1Kernels {
    static constexpr int period = 4; // grid barriers a layer, and their phases' names (SSM_DECODE_TRACE)
    static constexpr const char *labels[4] = {"in_proj, conv", "x_proj", "scan", "out_proj"};
    template <int NB, typename W, bool TC> static auto get() { return m1_decode_kernel<NB, W, TC>; }
};

extern "C" int decode_mamba1_cuda(const m1_decode_args *args) {
    m1_decode_args a_ = *args;
    a_.st.prefetch = dec_prefetch_on();
    const size_t wsize = mat_elem_bytes(a_.st.wdt);
    // (float32 weights fit since sh is sized by NB, but staged they measured 1-5% slower: d768x24 batch 1 on an
    // H100, 2026-12-07, 0.518-0.538 against 0.505-0.514 ms; Mamba-2's gain 2-4%, docs/performance.md)
    a_.st.stage = a_.st.B <= DEC_MAX_B && dec_stage_on() && wsize < sizeof(float)
                      ? m1_stage(a_.st.D, a_.E, a_.R + 2 * a_.N, wsize, dec_sms()).bytes
                      : 0;
    const m1_decode_args *a = &a_;
    if (a->st.B < 1 || a->N < 1 || a->N > DEC_MAX_N || a->K < 2 || a->K > DEC_MAX_K || a->R < 1 || a->st.D % 8 ||
        a->E % 8)
        return -1;
    return dec_run<M1Kernels, m1_decode_layer>(a, a->E);
}
