// One decode step of a stack of attention and MLP layers (any order) as one persistent kernel (t_decode_args in
// ops.h; its reference is the op-by-op step through attention_forward and mlp_forward, which the emulator and the GPU
// tests compare it with). Op by op a Transformer layer is ~14 small kernels (t768x12 at batch 1 on an H100: 0.70 ms
// a step with an empty cache, 1.23 ms at 8K keys, where the 945 MB read would take ~0.28 ms). The design is
// decode_mamba1.cu's (the shared parts in decode_common.cuh): one cooperative launch walks every layer, grid
// barriers (|) between the phases that need a whole vector the previous phase wrote.
//   attention layer:
//   A qkv:      every block normalizes x (rmsnorm); a warp per pair of rows (i, i + hd/2) of one head of q | k | v,
//               so that rotate_half applies in registers: the pair rotated to position p = pos[b] (as rope_cuda
//               computes the angle; rope_theta 0: not), q into the work buffer, k and v straight into the caches at
//               p (kv_append's rows)                                                                      | sync
//   B splits:   a warp per (split s, sequence b, head h): the keys [lo, hi) that the query at p sees (hi = p + 1,
//               the window's lo) cut into runs of TD_RUN keys (longer runs where that makes more than
//               T_DECODE_MAX_SPLITS, so the scratch does not grow with the cache); a key a lane, 32 at a time: the
//               score q . k_j / sqrt(hd) from key/value head h / (H / KV), an online softmax (running max m and sum
//               l), then o += p_j v_j with a float4 of v_j a lane and the keys spread over groups of lanes (p_j
//               through shared memory). (m, l, o) of each split into the work buffer                    | sync
//   C merge:    a block per (b, h): M = max m_s, L = sum l_s e^(m_s - M), o = sum o_s e^(m_s - M) / L, each warp
//               over every 16th split, then the warps' sums in warp order (deterministic, any grid)        | sync
//   D o_proj:   x_r += o_proj[r] . o (a warp a row, dec_residual_proj); pos[b] advanced (its last reader was C)
//                                                                                                          | sync
//   MLP layer:
//   E gate|up:  every block normalizes x; a warp per hidden unit i takes its gate and up rows together:
//               h_i = silu(gate_i . u) (up_i . u), relu2: relu(up_i . u)^2                                 | sync
//   F down:     x_r += down[r] . h                                                                         | sync
// then the head (dec_head). Each layer's matrices are asked into L2 a layer ahead (SSM_DECODE_PREFETCH); the caches
// are not (a long context's would not fit). A warp's rows of each layer's first product (A's q | k | v pairs, E's gate
// and up rows) and of its last (D's o_proj, F's down) are also copied into shared memory (cp.async) as soon as it has
// read the previous layer's, as in decode_mamba2.cu (td_stage; SSM_DECODE_STAGE=0: off; float32 weights do not
// fit). The FFMA form only (up to DEC_MAX_B sequences: larger batches run op by op); weights float32, bf16 or int8
// with row scales. Every sum has a fixed order (the same bits on every run and any grid); the elementwise functions
// are the accurate ones (expf, sincosf, pow as rope_cuda): the results match the op-by-op step to float rounding.
#include "backend/cuda/decode_common.cuh"

#include <math.h>

#define TD_MAX_HD 128 // head_dim: a lane holds up to TD_MAX_HD / 32 values of a head's output
#define TD_NPL (TD_MAX_HD / 32)
#define TD_RUN 32 // the shortest run of keys a split: a key a lane

// a warp's scratch in shared memory while it works on a split: q [TD_MAX_HD] and the 32 lanes' p [32] (the merge's
// partials, TD_MAX_HD + 1 a warp, fit in the same room)
#define TD_WARP_SCRATCH (TD_MAX_HD + 32)

// The width of sm.sh's rows (dec_smem): the longest product input, and room for every warp's scratch (phase B)
__host__ __device__ static inline int td_wide(const t_decode_args &a) {
    int w = a.st.D > a.H * a.hd ? a.st.D : a.H * a.hd;
    w = w > a.I ? w : a.I;
    const int nb = dec_nb(a.st.B), scratch = (DEC_WARPS * TD_WARP_SCRATCH + nb - 1) / nb;
    return w > scratch ? w : scratch;
}

// The keys [lo, hi) that sequence b's query sees in a layer whose positions are pos (before this step's advance):
// itself at p = pos[b] and the window's earlier ones (attn_range's), capped by the cache; run: keys a split
__device__ __forceinline__ static int td_keys(const t_decode_args &a, const int *pos, int b, int *lo, int *run) {
    int hi = pos[b] + 1;
    hi = hi < a.cap ? hi : a.cap;
    *lo = a.window > 0 && hi - a.window > 0 ? hi - a.window : 0;
    const int len = hi - *lo, per = (len + T_DECODE_MAX_SPLITS - 1) / T_DECODE_MAX_SPLITS;
    *run = per <= TD_RUN ? TD_RUN : (per + TD_RUN - 1) / TD_RUN * TD_RUN;
    return hi;
}

// acc0[b] = w0 . x_b and acc1[b] = w1 . x_b: warp_dot of two rows at once (their loads in flight together; each sum
// in warp_dot's order)
template <int NB, typename W>
__device__ __forceinline__ static void warp_dot2(float (&acc0)[NB], float (&acc1)[NB], const W *w0, const W *w1,
                                                 const float *x, int ldx, int K, int B) {
#pragma unroll
    for (int b = 0; b < NB; b++)
        acc0[b] = 0.0f, acc1[b] = 0.0f;
#pragma unroll 2
    for (int k = (int)(threadIdx.x % 32) * 8; k < K; k += 256) {
        float v0[8], v1[8];
        load8(v0, w0 + k);
        load8(v1, w1 + k);
        fma8(acc0, v0, x + k, ldx, B);
        fma8(acc1, v1, x + k, ldx, B);
    }
    warp_sum(acc0);
    warp_sum(acc1);
}

template <typename W>
__device__ __forceinline__ static void td_prefetch_layer(const t_decode_layer &L, const t_decode_args &a,
                                                         size_t gthread, size_t nthreads) {
    const size_t D = a.st.D, qd = (size_t)a.H * a.hd, kvd = (size_t)a.KV * a.hd, I = a.I;
    if (L.kind == 'a') {
        prefetch_range(L.q, sizeof(W) * qd * D, gthread, nthreads);
        prefetch_range(L.k, sizeof(W) * kvd * D, gthread, nthreads);
        prefetch_range(L.v, sizeof(W) * kvd * D, gthread, nthreads);
        prefetch_range(L.o, sizeof(W) * D * qd, gthread, nthreads);
    } else {
        if (L.gate) prefetch_range(L.gate, sizeof(W) * I * D, gthread, nthreads);
        prefetch_range(L.up, sizeof(W) * I * D, gthread, nthreads);
        prefetch_range(L.down, sizeof(W) * D * I, gthread, nthreads);
    }
}

// What lane b of the warp on pair task t needs besides the product: sequence b's position p (pos[b], for lanes
// b < B) and, for a rotated pair of q or k (elements (i, i + hd/2) of a head), cos and sin of rope_cuda's angle at p
// (the inverse frequency in double, the product in float, sincosf: its slow path for large angles is the kernel's
// stack frame, ptxas's 32 bytes); c 1 and s 0 where nothing rotates. None of it waits on the phase before A, so the
// first task's is read and computed within the grid barrier.
struct TdRope {
    int p = 0;
    float c = 1.0f, s = 0.0f;
};
__device__ __forceinline__ static TdRope td_rope(const t_decode_args &a, const t_decode_layer &L, int t) {
    const int lane = (int)threadIdx.x % 32, half = a.hd / 2, head = t / half, i = t % half;
    TdRope r;
    if (lane >= a.st.B || t >= (a.H + 2 * a.KV) * half) return r;
    r.p = L.pos[lane];
    if (a.theta != 0.0f && head < a.H + a.KV) {
        const float inv = (float)(1.0 / pow((double)a.theta, 2.0 * i / a.hd)), ang = (float)r.p * inv;
        sincosf(ang, &r.s, &r.c);
    }
    return r;
}

// ---- the weights staged in shared memory ------------------------------------------------------------------------
// The pair of rows (r, r + hd/2) of q | k | v that task t (t < (H + 2 KV) hd/2) takes: its matrix w, row scales sc
template <typename W> struct TdPair {
    const W *w;
    const float *sc;
    int r;
    bool is_q, is_k;
};
template <typename W>
__device__ __forceinline__ static TdPair<W> td_pair(const t_decode_args &a, const t_decode_layer &L, int t) {
    const int half = a.hd / 2, head = t / half, i = t % half, H = a.H, KV = a.KV;
    TdPair<W> p;
    p.is_q = head < H, p.is_k = !p.is_q && head < H + KV;
    p.w = (const W *)(p.is_q ? L.q : p.is_k ? L.k : L.v);
    p.sc = p.is_q ? L.q_s : p.is_k ? L.k_s : L.v_s;
    p.r = (p.is_q ? head : p.is_k ? head - H : head - H - KV) * a.hd + i; // the pair's first row in its matrix
    return p;
}

// A warp's rows as two buffers (decode_mamba2.cu's way, FFMA form): "in" holds the rows of a layer's first product
// (A's pairs of q | k | v rows, or E's gate and up rows of its hidden units: [pin][2][D] a warp), "out" those of its
// last (D's o_proj or F's down rows: [pout][max(qd, I)] a warp). Each is refilled with the next layer's rows as soon as
// this layer's product has read it; its bytes a block for a grid of nblocks (the kernel stages when they fit in
// decode_step.stage).
struct TdStage {
    int pin, pout, kout;
    size_t bytes;
};
__host__ __device__ static inline TdStage td_stage(const t_decode_args &a, size_t wsize, int nblocks) {
    TdStage s;
    const int nwarps = nblocks * DEC_WARPS, pairs = (a.H + 2 * a.KV) * (a.hd / 2), qd = a.H * a.hd;
    const int pa = (pairs + nwarps - 1) / nwarps, pf = (a.I + nwarps - 1) / nwarps;
    s.pin = pa > pf ? pa : pf, s.pout = (a.st.D + nwarps - 1) / nwarps, s.kout = qd > a.I ? qd : a.I;
    s.bytes = wsize * DEC_WARPS * ((size_t)s.pin * 2 * a.st.D + (size_t)s.pout * s.kout);
    return s;
}

// layer L's first product's rows of this warp into its "in" buffer: A's pairs, or E's gate (if any) and up rows
template <typename W>
__device__ static void td_stage_in(W *dst, const t_decode_args &a, const t_decode_layer &L, int gwarp, int nwarps) {
    const int D = a.st.D, half = a.hd / 2;
    if (L.kind == 'a') {
        for (int t = gwarp, k = 0; t < (a.H + 2 * a.KV) * half; t += nwarps, k++) {
            const TdPair<W> pr = td_pair<W>(a, L, t);
            stage_warp_row(dst + (size_t)k * 2 * D, pr.w + (size_t)pr.r * D, D);
            stage_warp_row(dst + (size_t)k * 2 * D + D, pr.w + (size_t)(pr.r + half) * D, D);
        }
    } else {
        for (int i = gwarp, k = 0; i < a.I; i += nwarps, k++) {
            if (L.gate) stage_warp_row(dst + (size_t)k * 2 * D, (const W *)L.gate + (size_t)i * D, D);
            stage_warp_row(dst + (size_t)k * 2 * D + D, (const W *)L.up + (size_t)i * D, D);
        }
    }
}

// ---- the attention phases ----------------------------------------------------------------------------------------
// A: the pairs of rows (i, i + hd/2) of q | k | v (heads 0..H-1 of q, then KV of k, then KV of v) for the
// normalized input in sm.sh, a warp a pair (tasks dealt gwarp, gwarp + nwarps, ...); staged: the warp's pairs as
// td_stage_in copied them, or NULL (read from global memory); first: td_rope of the warp's first task
template <int NB, typename W>
__device__ static void td_qkv(const t_decode_args &a, const t_decode_layer &L, float *q, int gwarp, int nwarps,
                              const float *u, const W *staged, TdRope first) {
    const int B = a.st.B, D = a.st.D, hd = a.hd, half = hd / 2, H = a.H, KV = a.KV, qd = H * hd, kvd = KV * hd;
    const int lane = (int)threadIdx.x % 32;
    for (int t = gwarp, k = 0; t < (H + 2 * KV) * half; t += nwarps, k++) {
        const int head = t / half;
        const TdPair<W> pr = td_pair<W>(a, L, t);
        const bool is_q = pr.is_q, is_k = pr.is_k;
        const float *sc = pr.sc;
        const int r = pr.r;
        const W *w0 = staged ? staged + (size_t)k * 2 * D : pr.w + (size_t)r * D;
        const W *w1 = staged ? w0 + D : pr.w + (size_t)(r + half) * D;
        const TdRope ro = k == 0 ? first : td_rope(a, L, t); // (before the product: off the chain after it)
        float a0[NB], a1[NB];
        warp_dot2<NB>(a0, a1, w0, w1, u, D, D, B);
        if (lane >= B) continue;
        const int b = lane, p = ro.p;
        float x1 = pick(a0, b) * row_scale(sc, r), x2 = pick(a1, b) * row_scale(sc, r + half);
        if (a.theta != 0.0f && head < H + KV) { // rotate_half of the pair
            const float y1 = x1 * ro.c - x2 * ro.s, y2 = x2 * ro.c + x1 * ro.s;
            x1 = y1, x2 = y2;
        }
        if (is_q) {
            q[(size_t)b * qd + r] = x1, q[(size_t)b * qd + r + half] = x2;
        } else if (p >= 0 && p < a.cap) { // (kv_append's: a row outside the cache is not written)
            float *row = (is_k ? L.k_cache : L.v_cache) + ((size_t)b * a.cap + p) * kvd;
            row[r] = x1, row[r + half] = x2;
        }
    }
}

// B: the splits' partial results part [B, H, T_DECODE_MAX_SPLITS, hd + 2] = (m, l, o [hd])
__device__ static void td_splits(const t_decode_args &a, const t_decode_layer &L, const float *q, float *part,
                                 int gwarp, int nwarps, float *scratch) {
    const int B = a.st.B, H = a.H, hd = a.hd, qd = H * hd, kvd = a.KV * hd, group = H / a.KV;
    const int lane = (int)threadIdx.x % 32;
    const float scale = 1.0f / sqrtf((float)hd);
    float *qs = scratch, *ps = scratch + TD_MAX_HD;
    // o += p_j v_j with a float4 of a value row a lane: lpk lanes a key (hd / 4 rounded up to a power of two), kpi
    // keys at once, lane group grp taking keys grp, grp + kpi, ... of each run (four times the bytes in flight of a
    // lane per element at hd 64); c is this lane's first element
    int lpk = 1;
    while (lpk * 4 < hd)
        lpk <<= 1;
    const int kpi = 32 / lpk, grp = lane / lpk, c = (lane % lpk) * 4;
    int most = 0; // the most splits of any sequence: the tasks' range
    for (int b = 0; b < B; b++) {
        int lo, run;
        const int hi = td_keys(a, L.pos, b, &lo, &run), n = (hi - lo + run - 1) / run;
        most = n > most ? n : most;
    }
    for (int t = gwarp; t < most * B * H; t += nwarps) {
        const int s = t / (B * H), b = t / H % B, h = t % H, kh = h / group;
        int lo, run;
        const int hi = td_keys(a, L.pos, b, &lo, &run), k0 = lo + s * run, k1 = k0 + run < hi ? k0 + run : hi;
        if (k0 >= hi) continue;
        for (int d = lane; d < hd; d += 32)
            qs[d] = q[(size_t)b * qd + (size_t)h * hd + d];
        __syncwarp();
        const float *kb = L.k_cache + (size_t)b * a.cap * kvd + (size_t)kh * hd;
        const float *vb = L.v_cache + (size_t)b * a.cap * kvd + (size_t)kh * hd;
        float m = -INFINITY, l = 0.0f;
        float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f); // this lane's 4 values at c of its group's keys' sum
        for (int j0 = k0; j0 < k1; j0 += 32) {
            const int j = j0 + lane;
            float sc = -INFINITY;
            if (j < k1) { // this lane's key: q . k_j over the head's hd values, 4 at a time
                const float *kr = kb + (size_t)j * kvd;
                float dot = 0.0f;
#pragma unroll 4 // (more unrolled, the loads in flight spill the kernel's registers)
                for (int d = 0; d < hd; d += 4) {
                    const float4 kv = *reinterpret_cast<const float4 *>(kr + d);
                    const float4 qv = *reinterpret_cast<const float4 *>(qs + d);
                    dot = fmaf(qv.x, kv.x, dot), dot = fmaf(qv.y, kv.y, dot);
                    dot = fmaf(qv.z, kv.z, dot), dot = fmaf(qv.w, kv.w, dot);
                }
                sc = dot * scale;
            }
            float mx = sc;
            for (int off = 16; off > 0; off >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(DEC_FULL, mx, off));
            const float mn = fmaxf(m, mx), corr = expf(m - mn); // (key j0 is in range: mn is finite; corr 0 at first)
            const float p = j < k1 ? expf(sc - mn) : 0.0f;
            float sum = p;
            for (int off = 16; off > 0; off >>= 1)
                sum += __shfl_xor_sync(DEC_FULL, sum, off);
            l = l * corr + sum, m = mn;
            ps[lane] = p;
            __syncwarp();
            o.x *= corr, o.y *= corr, o.z *= corr, o.w *= corr;
            const int nj = k1 - j0 < 32 ? k1 - j0 : 32;
            if (c < hd) {
#pragma unroll 4
                for (int jj = grp; jj < nj; jj += kpi) { // the group's keys of the run in order
                    const float pj = ps[jj];
                    const float4 v = *reinterpret_cast<const float4 *>(vb + (size_t)(j0 + jj) * kvd + c);
                    o.x = fmaf(pj, v.x, o.x), o.y = fmaf(pj, v.y, o.y), o.z = fmaf(pj, v.z, o.z);
                    o.w = fmaf(pj, v.w, o.w);
                }
            }
            __syncwarp(); // (ps is rewritten by the next run)
        }
        for (int off = lpk; off < 32; off <<= 1) { // the groups' sums (a fixed tree: every group gets the total)
            o.x += __shfl_xor_sync(DEC_FULL, o.x, off), o.y += __shfl_xor_sync(DEC_FULL, o.y, off);
            o.z += __shfl_xor_sync(DEC_FULL, o.z, off), o.w += __shfl_xor_sync(DEC_FULL, o.w, off);
        }
        float *P = part + (((size_t)b * H + h) * T_DECODE_MAX_SPLITS + s) * (hd + 2);
        if (lane == 0) P[0] = m, P[1] = l;
        if (grp == 0 && c < hd) P[2 + c] = o.x, P[3 + c] = o.y, P[4 + c] = o.z, P[5 + c] = o.w;
        __syncwarp(); // (qs is rewritten by the next task)
    }
}

// C: o [B, qd] from the splits, a block per (b, h): its warps take every DEC_WARPS-th split (the common max first,
// through sh), each its partial sums, then warp 0 adds the warps' partials in warp order (deterministic, any grid).
// (A warp per (b, h) walking every split took 33 us a layer at 8K on an H100, 256 splits of a load's latency each,
// while most of the grid idled: 12 heads at batch 1; this form took the t768x12 step at 8K from 1.24 to 0.86 ms.)
// sh: DEC_WARPS * (TD_MAX_HD + 1) floats of shared memory.
__device__ static void td_merge(const t_decode_args &a, const t_decode_layer &L, const float *part, float *o,
                                float *sh) {
    const int B = a.st.B, H = a.H, hd = a.hd, lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
    for (int t = (int)blockIdx.x; t < B * H; t += (int)gridDim.x) {
        const int b = t / H, h = t % H;
        int lo, run;
        const int hi = td_keys(a, L.pos, b, &lo, &run), n = (hi - lo + run - 1) / run;
        const float *P = part + ((size_t)b * H + h) * T_DECODE_MAX_SPLITS * (hd + 2);
        float M = -INFINITY;
        for (int s = (int)threadIdx.x; s < n; s += DEC_THREADS)
            M = fmaxf(M, P[(size_t)s * (hd + 2)]);
        for (int off = 16; off > 0; off >>= 1)
            M = fmaxf(M, __shfl_xor_sync(DEC_FULL, M, off));
        if (lane == 0) sh[warp] = M;
        __syncthreads();
        for (int w = 0; w < DEC_WARPS; w++)
            M = fmaxf(M, sh[w]);
        __syncthreads(); // (sh is rewritten below)
        float Lsum = 0.0f, acc[TD_NPL];
#pragma unroll
        for (int i = 0; i < TD_NPL; i++)
            acc[i] = 0.0f;
        for (int s = warp; s < n; s += DEC_WARPS) { // every lane the same sum of l, and its own elements of o
            const float *Ps = P + (size_t)s * (hd + 2), e = expf(Ps[0] - M);
            Lsum = fmaf(Ps[1], e, Lsum);
#pragma unroll
            for (int i = 0; i < TD_NPL; i++)
                if (lane + 32 * i < hd) acc[i] = fmaf(Ps[2 + lane + 32 * i], e, acc[i]);
        }
        float *row = sh + (size_t)warp * (TD_MAX_HD + 1);
        if (lane == 0) row[0] = Lsum;
#pragma unroll
        for (int i = 0; i < TD_NPL; i++)
            if (lane + 32 * i < hd) row[1 + lane + 32 * i] = acc[i];
        __syncthreads();
        if (warp == 0) {
            Lsum = 0.0f;
#pragma unroll
            for (int i = 0; i < TD_NPL; i++)
                acc[i] = 0.0f;
            for (int w = 0; w < DEC_WARPS; w++) {
                const float *rw = sh + (size_t)w * (TD_MAX_HD + 1);
                Lsum += rw[0];
#pragma unroll
                for (int i = 0; i < TD_NPL; i++)
                    if (lane + 32 * i < hd) acc[i] += rw[1 + lane + 32 * i];
            }
            const float inv = 1.0f / Lsum;
#pragma unroll
            for (int i = 0; i < TD_NPL; i++)
                if (lane + 32 * i < hd) o[(size_t)b * H * hd + (size_t)h * hd + lane + 32 * i] = acc[i] * inv;
        }
        __syncthreads(); // (sh, for the next (b, h))
    }
}

// ---- the kernel ------------------------------------------------------------------------------------------------
template <int NB, typename W>
__global__ static void __launch_bounds__(DEC_THREADS, 1)
    t_decode_kernel(t_decode_args a, const t_decode_layer *layers) {
    const decode_step st = a.st; // (a copy: the kernel parameter stays in its own space)
    int ph = 0;                  // the grid barriers passed (SSM_DECODE_TRACE's index)
    dec_trace_mark(st.trace, 0);
    extern __shared__ __align__(16) unsigned char smem[];
    const int B = st.B, D = st.D, qd = a.H * a.hd, I = a.I;
    const DecSmem sm = dec_smem<NB>(smem, td_wide(a));
    float *x = st.work, *q = x + (size_t)B * D, *o = q + (size_t)B * qd, *hb = o + (size_t)B * qd;
    float *part = hb + (size_t)B * I; // [B, H, T_DECODE_MAX_SPLITS, hd + 2]
    const int warp = (int)threadIdx.x / 32, lane = (int)threadIdx.x % 32;
    const int gwarp = dec_gwarp(), nwarps = (int)gridDim.x * DEC_WARPS;
    const size_t nthreads = (size_t)gridDim.x * DEC_THREADS, gthread = (size_t)blockIdx.x * DEC_THREADS + threadIdx.x;
    double *red = reinterpret_cast<double *>(sm.red);
    auto no_stage = [](uint16_t *, int, int, int) {}; // (the tensor-core form's: not this kernel's)
    // The staged weights (when they fit): a group committed after each layer's first and last products; a product
    // waits for all but the newest group
    const TdStage sg = td_stage(a, sizeof(W), (int)gridDim.x);
    const bool stg = st.stage && sg.bytes <= st.stage;
    W *sIn = reinterpret_cast<W *>(smem + dec_smem_bytes(B, td_wide(a)));
    W *sOut = sIn + (size_t)DEC_WARPS * sg.pin * 2 * D;
    sIn += (size_t)warp * sg.pin * 2 * D, sOut += (size_t)warp * sg.pout * sg.kout;
    auto refill = [&](bool in, int l) { // in: the layer's first product's rows, else its last's
        if (!stg) return;
        if (l < st.n_layer) {
            const t_decode_layer &L = layers[l];
            if (in)
                td_stage_in(sIn, a, L, gwarp, nwarps);
            else
                stage_warp_rows(sOut, (const W *)(L.kind == 'a' ? L.o : L.down), D, L.kind == 'a' ? qd : I, gwarp,
                                nwarps, sg.pout);
        }
        cp_async_commit();
    };
    auto staged = [&]() { // this phase's copies landed (this thread's: no barrier)
        if (stg) cp_async_wait_pending<1>();
    };

    if (st.prefetch) td_prefetch_layer<W>(layers[0], a, gthread, nthreads);
    refill(true, 0), refill(false, 0);
    dec_embed(x, st.emb, st.tokens, B, D);
    // (the barrier before each layer is split: between arrive and wait an attention layer's warps read their first
    // task's positions and compute its rotation, which the closing phase does not write)
    grid_token tok = dec_arrive(st.trace, ph);
    for (int l = 0; l < st.n_layer; l++) {
        const t_decode_layer &L = layers[l];
        if (st.prefetch && l + 1 < st.n_layer) td_prefetch_layer<W>(layers[l + 1], a, gthread, nthreads);
        if (st.prefetch && l + 1 == st.n_layer) prefetch_range(st.head, sizeof(W) * st.V * D, gthread, nthreads);
        const TdRope first = L.kind == 'a' ? td_rope(a, L, gwarp) : TdRope{};
        dec_wait(st.trace, ph, tok);
        block_rmsnorm(sm.sh, red, x, L.norm_w, B, D, st.eps);
        if (L.kind == 'a') {
            staged();
            td_qkv<NB, W>(a, L, q, gwarp, nwarps, sm.sh, stg ? sIn : (const W *)nullptr, first);
            refill(true, l + 1);
            dec_sync(st.trace, ph);
            td_splits(a, L, q, part, gwarp, nwarps, sm.sh + (size_t)warp * TD_WARP_SCRATCH);
            dec_sync(st.trace, ph);
            td_merge(a, L, part, o, sm.sh);
            dec_sync(st.trace, ph);
            if (blockIdx.x == 0 && (int)threadIdx.x < B) L.pos[threadIdx.x] += 1; // (kv_append's advance)
            staged();
            dec_residual_proj<NB, W, false>(x, (const W *)L.o, L.o_s, nullptr, D, qd, B, sm, FillAct{o, (size_t)B * qd},
                                            no_stage, stg ? sOut : (const W *)nullptr);
            refill(false, l + 1);
            tok = dec_arrive(st.trace, ph);
        } else {
            // E: h = silu(gate u) (up u), or relu(up u)^2
            staged();
            for (int i = gwarp, k = 0; i < I; i += nwarps, k++) {
                const W *wg = stg ? sIn + (size_t)k * 2 * D : L.gate ? (const W *)L.gate + (size_t)i * D : nullptr;
                const W *wu = stg ? sIn + (size_t)k * 2 * D + D : (const W *)L.up + (size_t)i * D;
                float g[NB], up[NB];
                if (L.gate)
                    warp_dot2<NB>(g, up, wg, wu, sm.sh, D, D, B);
                else
                    warp_dot<NB>(up, wu, sm.sh, D, D, B);
                if (lane >= B) continue;
                const float uv = pick(up, lane) * row_scale(L.up_s, i);
                float hv;
                if (L.gate) {
                    const float gv = pick(g, lane) * row_scale(L.gate_s, i);
                    hv = gv * sigmoid_ref(gv) * uv; // (the CPU's swiglu: silu(g) * u)
                } else {
                    const float r = uv > 0.0f ? uv : 0.0f;
                    hv = r * r;
                }
                hb[(size_t)lane * I + i] = hv;
            }
            refill(true, l + 1);
            dec_sync(st.trace, ph);
            // F: x += down(h)
            staged();
            dec_residual_proj<NB, W, false>(x, (const W *)L.down, L.down_s, nullptr, D, I, B, sm,
                                            FillAct{hb, (size_t)B * I}, no_stage, stg ? sOut : (const W *)nullptr);
            refill(false, l + 1);
            tok = dec_arrive(st.trace, ph);
        }
    }
    dec_wait(st.trace, ph, tok);
    dec_head<NB, W, false>(st.logits, (const W *)st.head, st.head_s, st.norm_f, x, st.V, D, B, st.eps, sm);
    dec_trace_mark(st.trace, 2 * ph + 1);
}

struct TKernels { // (the tensor-core sizes never launch: decode_transformer_cuda declines more than DEC_MAX_B)
    template <int NB, typename W, bool TC> static auto get() { return t_decode_kernel < TC ? DEC_MAX_B : NB, W > ; }
};

// SSM_DECODE_TRACE's phases: per layer pair when the stack is "af" repeated, else every barrier under one name
static const char *const td_labels_af[6] = {"qkv, rope", "attn splits", "attn merge", "o_proj", "gate, up", "down"};
static const char *const td_labels_any[1] = {"a phase"};

extern "C" int decode_transformer_cuda(const t_decode_args *args) {
    t_decode_args a = *args;
    a.st.prefetch = dec_prefetch_on();
    const int B = a.st.B, D = a.st.D, qd = a.H * a.hd, n = a.st.n_layer;
    if (B < 1 || B > DEC_MAX_B || a.hd < 4 || a.hd > TD_MAX_HD || a.hd % 4 || a.KV < 1 || a.H % a.KV || D % 8 ||
        qd % 8 || a.I % 8)
        return -1;
    int barriers = 1, af = n % 2 == 0;
    for (int l = 0; l < n; l++) {
        const t_decode_layer *L = &a.layers[l];
        af &= L->kind == (l % 2 ? 'f' : 'a');
        barriers += L->kind == 'a' ? 4 : 2;
        if (L->kind == 'a' && (a.cap < 1 || (uintptr_t)L->k_cache % 16 || (uintptr_t)L->v_cache % 16)) return -1;
    }
    a.st.stage = dec_stage_on() ? td_stage(a, mat_elem_bytes(a.st.wdt), dec_sms()).bytes : 0;
    const size_t smem = dec_smem_staged(&a.st, dec_smem_bytes(B, td_wide(a)));
    if (dec_fits(smem)) return -1;
    cuda_ctx *c = cuda_ctx_now();
    const t_decode_layer *layers = (const t_decode_layer *)cuda_ctx_table(c, a.layers, sizeof(t_decode_layer) * n);
    a.st.trace = dec_trace_buffer(barriers, c->device, DEC_THREADS);
    const int rc = dec_launch_w<TKernels>(&a, layers, smem);
    if (rc == 0 && a.st.trace)
        dec_trace_report(a.st.trace, af ? 6 : 1, af ? td_labels_af : td_labels_any, af ? n / 2 : barriers - 1,
                         c->dec_blocks);
    return rc;
}
