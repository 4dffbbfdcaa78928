// Mamba-2's SSD on the GPU when every chunk is whole (T a multiple of the chunk: training's lengths): the same
// algorithm as ssd.cu's tile kernels (its opening comment), with each product a batch of same-shaped GEMMs through
// cuBLAS (blas_batched.h) and the decays and masks in elementwise passes around them (ssd_whole.h).
#include "backend/cuda/blas_batched.h"
#include "backend/cuda/ssd_common.cuh"
#include "backend/cuda/ssd_fused.cuh"
#include "backend/cuda/ssd_whole.h"

#include <stdlib.h>

// ---- the products as batched GEMMs ------------------------------------------------------------------------------
// When every chunk is whole (T a multiple of Q: training's lengths), each of the tile kernels' products is a batch of
// same-shaped GEMMs, which cuBLAS runs (blas_batched.h) far faster than the tile kernels, whose 64 x 64 tiles wait on
// latency. The decays and masks move out of the products into elementwise passes: copies of x and dY scaled per
// (position, head) (Xw = w x, w_j = exp(a_last - a_j) dt_j; dYe = exp(a_i) dY, token-major like x), and M (or dM)
// materialized per (b, chunk, head) [B, nch, H, Q, Q], M with D on its diagonal. Then, per (b, chunk) and group, the
// heads of a group side by side:
//   CB = C B^T;  S_c = Xw^T B;  Y = exp(a_i) (C S_in^T), then + M X per head
//   G_c = dYe^T C;  dM = dY X^T per head;  Z1 = B dS^T, Z2 = C S_in^T: dX = w Z1 (r, q from them), then + M^T dY
//   dC = dYe S_in + dCB B;  dB = Xw dS + dCB^T C
// (the heads' sums inside dC and dB as the products' reduction over a group's heads x P). The rest (dt, the passes
// over chunks, dCB's and a's and dt's sums) is ssd_common.cuh's kernels or the elementwise ones below.

// The elementwise passes: a block per row (or per (b, chunk, head) matrix), its threads along the row, so that the
// index arithmetic is a few 32-bit operations a thread (64-bit divisions per element cost more than the bytes).
// out [B*T, H*P] (dense) = in (rows of ldi) times the (position, head) scale: mode 0 w_j = exp(a_last - a_j) dt_j,
// mode 1 exp(a_i).
// The row's H scales are formed once (shared), then applied four columns a thread where the rows allow (V4).
#define SSD_MAX_HEADS 256 // (the heads a row's scales hold; more take the tile kernels)
template <bool V4>
__global__ static void ssd_scale_kernel(float *out, const float *in, int ldi, const float *dts, const float *acs,
                                        int mode, SsdShape s) {
    __shared__ float sc[SSD_MAX_HEADS];
    const int HP = s.H * s.P, b = (int)(blockIdx.x / s.T), t = (int)(blockIdx.x % s.T), c = t / s.Q, i = t % s.Q;
    const size_t row = blockIdx.x;
    for (int h = threadIdx.x; h < s.H; h += blockDim.x) {
        const size_t o = s.bht(b, h, c);
        const float a = acs[o + i];
        sc[h] = mode ? expf(a) : expf(acs[o + s.Q - 1] - a) * dts[o + i];
    }
    __syncthreads();
    if (V4) { // (P, HP, ldi multiples of 4, in and out 16-byte aligned: a float4 is one head's)
        const float4 *src = reinterpret_cast<const float4 *>(in + row * ldi);
        float4 *dst = reinterpret_cast<float4 *>(out + row * HP);
        for (int q = threadIdx.x; q < HP / 4; q += blockDim.x) {
            const float f = sc[4 * q / s.P];
            float4 v = src[q];
            v.x *= f, v.y *= f, v.z *= f, v.w *= f;
            dst[q] = v;
        }
    } else {
        for (int col = threadIdx.x; col < HP; col += blockDim.x)
            out[row * HP + col] = in[row * ldi + col] * sc[col / s.P];
    }
}

// out = in times the (position, head) scale (ssd_scale_kernel), in float4s where the shapes and addresses allow.
static void ssd_scale(float *out, const float *in, int ldi, const float *dts, const float *acs, int mode,
                      const SsdShape &s) {
    const bool v4 = s.P % 4 == 0 && ldi % 4 == 0 && (uintptr_t)in % 16 == 0 && (uintptr_t)out % 16 == 0;
    const unsigned rows = (unsigned)((size_t)s.B * s.T);
    if (v4)
        ssd_scale_kernel<true><<<rows, 256>>>(out, in, ldi, dts, acs, mode, s);
    else
        ssd_scale_kernel<false><<<rows, 256>>>(out, in, ldi, dts, acs, mode, s);
    CUDA_CHECK_LAUNCH();
}

// Mb [B, nch, H, Q, Q]: M[i, j] = CB[i, j] exp(a_i - a_j) dt_j for j <= i, else 0 (MaskView's, materialized), plus D
// on the diagonal (M X then holds D x, M^T dY D dY). A block per (b, chunk, head).
// (V4: Q a multiple of 4, four columns a thread in float4s.)
__device__ __forceinline__ static float mask_at(const float *cb, const float *sa, const float *sd, float D, int i,
                                                int j, int e) {
    return j <= i ? cb[e] * (expf(sa[i] - sa[j]) * sd[j]) + (i == j ? D : 0.0f) : 0.0f;
}
template <bool V4>
__global__ static void ssd_mask_kernel(float *Mb, const float *CB, const float *dts, const float *acs, const float *Dv,
                                       SsdShape s) {
    __shared__ float sa[SSD_Q], sd[SSD_Q];
    const int bc = (int)(blockIdx.x / s.H), h = (int)(blockIdx.x % s.H), Q = s.Q;
    const size_t o = s.bht(bc / s.nch, h, bc % s.nch), QQ = (size_t)Q * Q;
    if ((int)threadIdx.x < Q) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
    __syncthreads();
    const float *cb = CB + ((size_t)bc * s.G + h / s.hpg) * QQ;
    float *m = Mb + (size_t)blockIdx.x * QQ;
    const float D = Dv[h];
    if (V4) {
        for (int e = 4 * threadIdx.x; e < Q * Q; e += 4 * blockDim.x) {
            const int i = e / Q, j = e % Q;
            float4 v;
            v.x = mask_at(cb, sa, sd, D, i, j, e), v.y = mask_at(cb, sa, sd, D, i, j + 1, e + 1);
            v.z = mask_at(cb, sa, sd, D, i, j + 2, e + 2), v.w = mask_at(cb, sa, sd, D, i, j + 3, e + 3);
            *reinterpret_cast<float4 *>(m + e) = v;
        }
    } else {
        for (int e = threadIdx.x; e < Q * Q; e += blockDim.x)
            m[e] = mask_at(cb, sa, sd, D, e / Q, e % Q, e);
    }
}

static void ssd_mask(float *Mb, const float *CB, const float *dts, const float *acs, const float *Dv,
                     const SsdShape &s) {
    const unsigned n = (unsigned)(s.B * s.nch * s.H);
    if (s.Q % 4 == 0)
        ssd_mask_kernel<true><<<n, 256>>>(Mb, CB, dts, acs, Dv, s);
    else
        ssd_mask_kernel<false><<<n, 256>>>(Mb, CB, dts, acs, Dv, s);
    CUDA_CHECK_LAUNCH();
}

// The per-(b, chunk, head) operands of a pointer-array product: base + bc s_bc + h s_h (floats).
struct SsdPtrs {
    const float *base;
    long long s_bc, s_h;
};
// p [3][B nch H]: the three operands' pointers, k = bc H + h.
__global__ static void ssd_ptrs_kernel(const float **p, SsdPtrs a, SsdPtrs b, SsdPtrs c, int H, int n) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    const long long bc = k / H, h = k % H;
    p[k] = a.base + bc * a.s_bc + h * a.s_h;
    p[n + k] = b.base + bc * b.s_bc + h * b.s_h;
    p[2 * n + k] = c.base + bc * c.s_bc + h * c.s_h;
}

// The passes over chunks as products, when the chunks are few (the matrix is nch x nch per (b, head)): the states
// entering the chunks S_in = Lc S (rows: chunks), Lc[c][c'] = prod_{c' < k < c} exp(a_last_k) for c' < c; the
// gradients dS = Lc G, Lc[c][c'] = prod_{c < k < c'} exp(a_last_k) for c' > c (rev). Each product of decays as the
// passes form it, a running sum of a_last (then exp) along the column. A block per (b, head), a thread per column c'.
// On tensor cores only (tf32, as the products that read the states round them anyway): in float32 FFMA the product
// of 256 chunks took longer than the pass. On an H100 (m2x24 bf16, 2026-12-05) the passes took 0.166 and 0.484 ms a
// call at 8 x 2048 (32 chunks); as products the step ran 129.7 -> 121.6 ms at 8 x 2048 and 130.1 -> 123.1 ms at
// 1 x 16384 (256 chunks); float32 products ran 124.0 and 152.3 ms. Pass kernels reading 32 chunks at once (not 8),
// against these products (152 us a call at 32 chunks), ran the step slower still (H100, 2026-12-06): 117.6 -> 119.6 ms
// at 8 x 2048, 118.8 -> 120.6 ms at 1 x 16384.
#define SSD_PASS_GEMM_MAX 256 // chunks: past this the products' nch^2 x P x N outweighs the passes' bytes
static bool ssd_pass_as_gemm(const SsdShape &s, int tf32) { return tf32 && s.nch <= SSD_PASS_GEMM_MAX; }
__global__ static void ssd_chunk_decay_kernel(float *Lc, const float *acs, int rev, SsdShape s) {
    const int b = (int)blockIdx.x / s.H, h = (int)blockIdx.x % s.H, n = s.nch;
    float *L = Lc + (size_t)blockIdx.x * n * n;
    const size_t o = s.bht(b, h, 0);
    for (int cp = threadIdx.x; cp < n; cp += blockDim.x) {
        float sum = 0.0f;
        if (!rev) {
            for (int c = 0; c <= cp; c++)
                L[(size_t)c * n + cp] = 0.0f;
            for (int c = cp + 1; c < n; c++) {
                L[(size_t)c * n + cp] = expf(sum);
                sum += acs[o + (size_t)c * s.Q + s.Q - 1];
            }
        } else {
            for (int c = n - 1; c >= cp; c--)
                L[(size_t)c * n + cp] = 0.0f;
            for (int c = cp - 1; c >= 0; c--) {
                L[(size_t)c * n + cp] = expf(sum);
                sum += acs[o + (size_t)c * s.Q + s.Q - 1];
            }
        }
    }
}

// Per (b, chunk, head), from its dM [B, nch, H, Q, Q]: what ssd_dcb_kernel forms after its product, the head's part
// of dCB (dM o exp(a_i - a_j) dt_j, masked: written over dM), and daM (rows - columns of dM o M), ddM (columns of
// dM o CB o exp(..)). Thread (rs, j) holds column j's rows rs, rs + 4, ...; row sums through a shared tile, column sums
// through the four row slots, each in a fixed order. ssd_dcb_sum_kernel then adds a group's heads in order.
#define SSD_DCB_SLOTS (SSD_THREADS / SSD_Q)
__global__ static void __launch_bounds__(SSD_THREADS)
    ssd_dcb_whole_kernel(float *dMb, float *daM, float *ddM, const float *CB, const float *dts, const float *acs,
                         SsdShape s) {
    __shared__ float sa[SSD_Q], sd[SSD_Q], gmt[SSD_Q][SSD_Q + 1], colg[SSD_DCB_SLOTS][SSD_Q],
        cold[SSD_DCB_SLOTS][SSD_Q];
    const int bc = (int)(blockIdx.x / s.H), h = (int)(blockIdx.x % s.H), Q = s.Q;
    const int j = (int)threadIdx.x % SSD_Q, rs = (int)threadIdx.x / SSD_Q;
    const size_t QQ = (size_t)Q * Q, o = s.bht(bc / s.nch, h, bc % s.nch);
    const float *cb = CB + ((size_t)bc * s.G + h / s.hpg) * QQ;
    float *dm = dMb + (size_t)blockIdx.x * QQ;
    if ((int)threadIdx.x < Q) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
    __syncthreads();
    float cg = 0.0f, cd = 0.0f;
    if (j < Q)
        for (int i = rs; i < Q; i += SSD_DCB_SLOTS) {
            float gm = 0.0f, dcb = 0.0f;
            if (j <= i) {
                const float d = dm[(size_t)i * Q + j], lw = expf(sa[i] - sa[j]), k = cb[(size_t)i * Q + j] * lw;
                gm = d * (k * sd[j]);
                cd += d * k, cg += gm;
                dcb = d * (lw * sd[j]);
            }
            gmt[i][j] = gm;
            dm[(size_t)i * Q + j] = dcb; // (0 above the diagonal)
        }
    colg[rs][j] = cg, cold[rs][j] = cd;
    __syncthreads();
    if ((int)threadIdx.x < Q) {
        const int i = threadIdx.x;
        float rsum = 0.0f, cs = 0.0f, ds = 0.0f;
        for (int k = 0; k < Q; k++)
            rsum += gmt[i][k];
        for (int r = 0; r < SSD_DCB_SLOTS; r++)
            cs += colg[r][i], ds += cold[r][i];
        daM[o + i] = rsum - cs, ddM[o + i] = ds;
    }
}

// dCB [B, nch, G, Q, Q] = the sum of the group's heads' parts in dMb, in head order. A thread per element.
__global__ static void ssd_dcb_sum_kernel(float *dCB, const float *dMb, SsdShape s) {
    const int QQ = s.Q * s.Q, e = (int)(blockIdx.y * blockDim.x + threadIdx.x);
    const int bc = (int)blockIdx.x / s.G, g = (int)blockIdx.x % s.G;
    if (e >= QQ) return;
    const float *src = dMb + ((size_t)bc * s.H + (size_t)g * s.hpg) * QQ + e;
    float v = 0.0f;
    for (int k = 0; k < s.hpg; k++)
        v += src[(size_t)k * QQ];
    dCB[(size_t)blockIdx.x * QQ + e] = v;
}

// Columns p and p + 1 of a head's row at `at` (two: p + 1 < P; else the second reads as 0 and is not written): one
// float2 where the rows allow (F2: P, HP, ldx and ldd even, the pointers 8-byte aligned), else one float at a time.
template <bool F2> __device__ __forceinline__ static float2 ld_pair(const float *at, bool two) {
    if (F2) return *reinterpret_cast<const float2 *>(at);
    return make_float2(at[0], two ? at[1] : 0.0f);
}
template <bool F2> __device__ __forceinline__ static void st_pair(float *at, bool two, float2 v) {
    if (F2) {
        *reinterpret_cast<float2 *>(at) = v;
    } else {
        at[0] = v.x;
        if (two) at[1] = v.y;
    }
}

// Per (b, chunk, head), from Z1 = B dS^T and Z2 = C S_in^T [B*T, H*P]: dX = w Z1 (rows of ldd; M^T dY, with D on
// M's diagonal, is added after), r_j = x_j . Z1_j, q_i = dY_i . Z2_i, <dS, S>, D's partial sum into dDp [B, nch, H]
// (double), and what ssd_dx_kernel writes of a's and dt's gradients: daX (-w r + exp(a) q; at the last position also
// sum w r + exp(a_last) <dS, S>), ddX (exp(a_last - a_j) r_j) [B, H, T]. A warp per position, two adjacent columns a
// lane (ld_pair): against one column a lane, the m2x24 bf16 step ran 117.6 -> 116.6 ms at 8 x 2048 on an H100
// (ssd_bwd 50.9 -> 49.7 ms, 2026-12-06).
template <bool F2>
__global__ static void __launch_bounds__(SSD_THREADS)
    ssd_dxq_whole_kernel(float *dx, int ldd, float *daX, float *ddX, double *dDp, const float *Z1, const float *Z2,
                         const float *dy, const float *x, const float *st, const float *dst, const float *dts,
                         const float *acs, SsdShape s) {
    __shared__ float sa[SSD_Q], sd[SSD_Q], sr[SSD_Q], sq[SSD_Q];
    const int bc = blockIdx.x, h = blockIdx.y, b = bc / s.nch, c = bc % s.nch, HP = s.H * s.P;
    const int lane = (int)threadIdx.x % 32, wp = (int)threadIdx.x / 32;
    const size_t o = s.bht(b, h, c), row0 = s.row0(b, c), PN = (size_t)s.P * s.N;
    if ((int)threadIdx.x < s.Q) sa[threadIdx.x] = acs[o + threadIdx.x], sd[threadIdx.x] = dts[o + threadIdx.x];
    __syncthreads();
    const float last = sa[s.Q - 1];
    double dDs = 0;
    for (int j = wp; j < s.Q; j += SSD_THREADS / 32) {
        const size_t row = row0 + j;
        const float w = expf(last - sa[j]) * sd[j];
        float r = 0.0f, q = 0.0f;
        for (int p = 2 * lane; p < s.P; p += 64) {
            const size_t col = (size_t)h * s.P + p, zi = row * HP + col;
            const bool two = p + 1 < s.P;
            const float2 z1 = ld_pair<F2>(Z1 + zi, two), z2 = ld_pair<F2>(Z2 + zi, two),
                         xv = ld_pair<F2>(x + row * s.ldx + col, two), dyv = ld_pair<F2>(dy + zi, two);
            r += xv.x * z1.x + xv.y * z1.y, q += dyv.x * z2.x + dyv.y * z2.y;
            dDs += (double)(dyv.x * xv.x) + (double)(dyv.y * xv.y);
            st_pair<F2>(dx + row * ldd + col, two, make_float2(w * z1.x, w * z1.y));
        }
        for (int off = 16; off > 0; off >>= 1)
            r += __shfl_xor_sync(0xffffffffu, r, off), q += __shfl_xor_sync(0xffffffffu, q, off);
        if (lane == 0) sr[j] = r, sq[j] = q;
    }
    const float *S = st + ((size_t)bc * s.H + h) * PN, *dS = dst + ((size_t)bc * s.H + h) * PN;
    double sds = 0;
    if (PN % 4 == 0) { // (the buffers' (b, chunk, head) blocks start 16-byte aligned)
        const float4 *S4 = reinterpret_cast<const float4 *>(S), *dS4 = reinterpret_cast<const float4 *>(dS);
        for (size_t e = threadIdx.x; e < PN / 4; e += SSD_THREADS) {
            const float4 u = S4[e], v = dS4[e];
            sds += (double)(u.x * v.x + u.y * v.y + u.z * v.z + u.w * v.w);
        }
    } else {
        for (size_t e = threadIdx.x; e < PN; e += SSD_THREADS)
            sds += (double)(dS[e] * S[e]);
    }
    __syncthreads(); // sr, sq
    const int j = threadIdx.x;
    float e = 0.0f, wr = 0.0f, r = 0.0f;
    if (j < s.Q) r = sr[j], e = expf(last - sa[j]), wr = e * sd[j] * r;
    const double dlast = block_reduce((double)wr, SumOp()), sds_all = block_reduce(sds, SumOp());
    const double dD_all = block_reduce(dDs, SumOp());
    if (j < s.Q) {
        float da = -wr + expf(sa[j]) * sq[j];
        if (j == s.Q - 1) da += (float)(dlast + expf(last) * sds_all);
        daX[o + j] = da, ddX[o + j] = e * r;
    }
    if (j == 0) dDp[(size_t)bc * s.H + h] = dD_all;
}

// ---- whole chunks: the ops ---------------------------------------------------------------------------------------
// Whether the batched GEMMs take this call: every chunk whole, and SSM_SSD_GEMM not 0 (the tile kernels, for
// comparison).
bool ssd_whole_takes(const ssd_args *a) {
    const SsdShape s = shape_of(a);
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("SSM_SSD_GEMM");
        on = !(e && e[0] == '0');
    }
    return on && s.T % s.Q == 0 && s.H <= SSD_MAX_HEADS;
}

// Per group g, the heads' rows of a [B, nch, H, P, N] buffer; the columns of a token-major [B*T, H*P] one.
static size_t grp_st(const SsdShape &s, int g) { return (size_t)g * s.hpg * s.P * s.N; }
static size_t grp_hp(const SsdShape &s, int g) { return (size_t)g * s.hpg * s.P; }

// The pointer arrays of a per-(b, chunk, head) product, in p [3][B nch H] (device memory).
static void ssd_ptrs(const float **p, const SsdShape &s, SsdPtrs a, SsdPtrs b, SsdPtrs c) {
    const int n = s.B * s.nch * s.H;
    ssd_ptrs_kernel<<<cdiv(n, 256), 256>>>(p, a, b, c, s.H, n);
    CUDA_CHECK_LAUNCH();
}

// A pass over chunks as a product (SSD_PASS_GEMM_MAX): returns the new [B, nch, H, P, N] (in frees the old), the
// states entering the chunks (rev 0) or the gradients of those leaving them (rev 1).
static float *ssd_pass_gemm(float *in, const float *acs, int rev, const SsdShape &s, int tc) {
    const int n = s.nch, nbh = s.B * s.H;
    const size_t PN = (size_t)s.P * s.N, nn = (size_t)n * n;
    float *Lc = scratch_floats((size_t)nbh * nn), *out = scratch_floats((size_t)s.B * n * s.H * PN);
    ssd_chunk_decay_kernel<<<nbh, 256>>>(Lc, acs, rev, s);
    CUDA_CHECK_LAUNCH();
    const float **p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(float *) * 3 * nbh, cudaStreamPerThread));
    const long long sb = (long long)(n * s.H * PN);
    ssd_ptrs_kernel<<<cdiv(nbh, 256), 256>>>(p, SsdPtrs{Lc, (long long)(s.H * nn), (long long)nn},
                                             SsdPtrs{in, sb, (long long)PN}, SsdPtrs{out, sb, (long long)PN}, s.H,
                                             nbh);
    CUDA_CHECK_LAUNCH();
    blas_gemm_ptrs(0, 0, n, (int)PN, n, p, n, p + nbh, (int)(s.H * PN), 0.0f, (float *const *)(p + 2 * nbh),
                   (int)(s.H * PN), nbh, tc);
    scratch_free(p), scratch_free(Lc), scratch_free(in);
    return out;
}

// The forward's shared part with whole chunks: dt, CB, Xw = w x (kept in Xw [B*T, H*P] for the backward's dB; NULL:
// not wanted), the chunk states and their pass (as ssd_recompute's; walk: the fused walk, which reads x itself).
static ssd_fwd_bufs ssd_recompute_whole(const ssd_args *a, const SsdShape &s, float *state, int for_bwd, float *Xw,
                                        bool walk) {
    const size_t bht = (size_t)s.B * s.H * s.T, PN = (size_t)s.P * s.N;
    const int HP = s.H * s.P, nb = s.B * s.nch, hP = s.hpg * s.P, tc = a->tf32;
    const long long sx = (long long)s.Q * s.ldx, shp = (long long)s.Q * HP, sst = (long long)s.H * PN;
    ssd_fwd_bufs f;
    f.dts = scratch_floats(bht), f.acs = scratch_floats(bht), f.dsp = for_bwd ? scratch_floats(bht) : NULL;
    f.CB = scratch_floats((size_t)nb * s.G * s.Q * s.Q);
    f.st = scratch_floats((size_t)nb * s.H * PN);
    ktime_start();
    ssd_dt_launch(a, s, &f);
    for (int g = 0; g < s.G; g++)
        blas_gemm_strided(0, 1, s.Q, s.Q, s.N, a->Cm + (size_t)g * s.N, s.ldx, sx, a->Bm + (size_t)g * s.N, s.ldx, sx,
                          0.0f, f.CB + (size_t)g * s.Q * s.Q, s.Q, (long long)s.G * s.Q * s.Q, nb, tc);
    ktime_mark("ssd CB");
    if (Xw) ssd_scale(Xw, a->x, s.ldx, f.dts, f.acs, 0, s);
    if (walk) {
        ssd_walk(f.st, state, a, NULL, f.dts, f.acs, 0, s);
        return f;
    }
    for (int g = 0; g < s.G; g++) // S_c = Xw^T B
        blas_gemm_strided(1, 0, hP, s.N, s.Q, Xw + grp_hp(s, g), HP, shp, a->Bm + (size_t)g * s.N, s.ldx, sx, 0.0f,
                          f.st + grp_st(s, g), s.N, sst, nb, tc);
    ktime_mark("ssd states");
    if (!state && ssd_pass_as_gemm(s, tc)) {
        f.st = ssd_pass_gemm(f.st, f.acs, 0, s, tc);
    } else { // (a carried state: the pass takes it in and gives the last one back)
        ssd_state_pass_kernel<<<dim3((unsigned)cdiv((int)PN, 256), s.H, s.B), 256>>>(f.st, state, f.acs, s);
        CUDA_CHECK_LAUNCH();
    }
    ktime_mark("ssd state pass");
    return f;
}

// Z [B*T, H*P] = U V^T per (b, chunk, group): U [Q, N] of the chunk's rows (B or C), V the heads' [P, N] states.
static void ssd_rows_by_states(float *Z, const float *U, const float *V, const SsdShape &s, int tc) {
    const int HP = s.H * s.P;
    for (int g = 0; g < s.G; g++)
        blas_gemm_strided(0, 1, s.Q, s.hpg * s.P, s.N, U + (size_t)g * s.N, s.ldx, (long long)s.Q * s.ldx,
                          V + grp_st(s, g), s.N, (long long)s.H * s.P * s.N, 0.0f, Z + grp_hp(s, g), HP,
                          (long long)s.Q * HP, s.B * s.nch, tc);
}

bool ssd_whole_fwd(const ssd_args *a, mat ym, float *state) {
    const SsdShape s = shape_of(a);
    const int HP = s.H * s.P, nbh = s.B * s.nch * s.H, tc = a->tf32;
    const size_t rows = (size_t)s.B * s.T, QQ = (size_t)s.Q * s.Q;
    const int mode = ssd_fused_mode(a, s, NULL);
    if (mode && (uintptr_t)ym.p % 8 == 0 && (uintptr_t)state % 8 == 0) { // (float2s, or bf16 pairs and more)
        float *Xw0 = mode == 2 ? scratch_floats(rows * HP) : NULL;    // (the states' product reads it)
        ssd_fwd_bufs f = ssd_recompute_whole(a, s, state, 0, Xw0, mode == 1);
        if (Xw0) scratch_free(Xw0);
        ssd_out(ym, a, f, s);
        ssd_bufs_free(&f);
        return true;
    }
    float *y = mat_f(ym);
    if (!y) return false;
    float *Xw = scratch_floats(rows * HP);
    ssd_fwd_bufs f = ssd_recompute_whole(a, s, state, 0, Xw, false);
    scratch_free(Xw);
    ssd_rows_by_states(y, a->Cm, f.st, s, tc); // C S_in^T
    ssd_scale(y, y, HP, f.dts, f.acs, 1, s);   // times exp(a_i), in place
    float *Mb = scratch_floats((size_t)nbh * QQ);
    ssd_mask(Mb, f.CB, f.dts, f.acs, a->Dv, s); // (+ D: M X holds D x)
    const float **p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(float *) * 3 * nbh, cudaStreamPerThread));
    ssd_ptrs(p, s, SsdPtrs{Mb, (long long)(s.H * QQ), (long long)QQ}, SsdPtrs{a->x, (long long)s.Q * s.ldx, s.P},
             SsdPtrs{y, (long long)s.Q * HP, s.P});
    blas_gemm_ptrs(0, 0, s.Q, s.P, s.Q, p, s.Q, p + nbh, s.ldx, 1.0f, (float *const *)(p + 2 * nbh), HP, nbh, tc);
    ktime_mark("ssd output");
    scratch_free(p), scratch_free(Mb);
    ssd_bufs_free(&f);
    return true;
}

static void ssd_dx_whole(const ssd_args *a, const ssd_grads *gr, const float *dy, float *daX, float *ddX, double *dDp,
                         const float *dst, float *Mb, const float **p, const ssd_fwd_bufs &f, const SsdShape &s);

void ssd_whole_bwd(const ssd_args *a, const ssd_grads *gr, const float *dy) {
    const SsdShape s = shape_of(a);
    const int HP = s.H * s.P, nb = s.B * s.nch, nbh = nb * s.H, hP = s.hpg * s.P, tc = a->tf32;
    const size_t rows = (size_t)s.B * s.T, QQ = (size_t)s.Q * s.Q, bht = (size_t)s.B * s.H * s.T;
    const size_t PN = (size_t)s.P * s.N;
    const long long sx = (long long)s.Q * s.ldx, shp = (long long)s.Q * HP, sst = (long long)s.H * PN,
                    sd = (long long)s.Q * gr->ldd, sqq = (long long)s.G * QQ;
    const int mode = ssd_fused_mode(a, s, dy);
    const bool fused = mode != 0, walk = mode == 1, fused_bc = fused && ssd_fused_dbc_on(gr, s);
    const bool copies = !walk || !fused_bc; // (Xw and dYe: the states' products or dB's and dC's read them)
    float *Xw = copies ? scratch_floats(rows * HP) : NULL, *dYe = copies ? scratch_floats(rows * HP) : NULL;
    ssd_fwd_bufs f = ssd_recompute_whole(a, s, NULL, 1, Xw, walk);
    float *dst = scratch_floats((size_t)nbh * PN), *dCB = scratch_floats((size_t)nb * sqq);
    float *Mb = scratch_floats((size_t)nbh * QQ);
    float *da_dd = scratch_floats(4 * bht), *daM = da_dd, *ddM = da_dd + bht, *daX = da_dd + 2 * bht,
          *ddX = da_dd + 3 * bht;
    double *part, *dDp;
    CUDA_CHECK(cudaMallocAsync((void **)&part, sizeof(double) * 3 * nbh, cudaStreamPerThread));
    dDp = part + 2 * nbh;
    const float **p;
    CUDA_CHECK(cudaMallocAsync((void **)&p, sizeof(float *) * 3 * nbh, cudaStreamPerThread));
    // the states' gradients: G_c = dYe^T C, then the reverse pass over chunks
    if (dYe) ssd_scale(dYe, dy, HP, f.dts, f.acs, 1, s);
    if (walk) {
        ssd_walk(dst, NULL, a, dy, f.dts, f.acs, 1, s);
    } else {
        for (int g = 0; g < s.G; g++)
            blas_gemm_strided(1, 0, hP, s.N, s.Q, dYe + grp_hp(s, g), HP, shp, a->Cm + (size_t)g * s.N, s.ldx, sx,
                              0.0f, dst + grp_st(s, g), s.N, sst, nb, tc);
        ktime_mark("ssd bwd dstates");
        if (ssd_pass_as_gemm(s, tc)) {
            dst = ssd_pass_gemm(dst, f.acs, 1, s, tc);
        } else {
            ssd_dstate_pass_kernel<<<dim3((unsigned)cdiv((int)PN, 256), s.H, s.B), 256>>>(dst, f.acs, s);
            CUDA_CHECK_LAUNCH();
        }
        ktime_mark("ssd bwd dstate pass");
    }
    // dM = dY X^T per head, then dCB and the sums through M
    if (fused && s.P <= OUT_PT) {
        ssd_dcb(Mb, daM, ddM, dy, a, f, s);
    } else {
        ssd_ptrs(p, s, SsdPtrs{dy, shp, s.P}, SsdPtrs{a->x, sx, s.P},
                 SsdPtrs{Mb, (long long)(s.H * QQ), (long long)QQ});
        blas_gemm_ptrs(0, 1, s.Q, s.Q, s.P, p, HP, p + nbh, s.ldx, 0.0f, (float *const *)(p + 2 * nbh), s.Q, nbh, tc);
        ssd_dcb_whole_kernel<<<nbh, SSD_THREADS>>>(Mb, daM, ddM, f.CB, f.dts, f.acs, s);
        CUDA_CHECK_LAUNCH();
    }
    ssd_dcb_sum_kernel<<<dim3(nb * s.G, cdiv(s.Q * s.Q, 256)), 256>>>(dCB, Mb, s);
    CUDA_CHECK_LAUNCH();
    ktime_mark("ssd bwd dCB");
    // dC = dYe S_in + dCB B, dB = Xw dS + dCB^T C: a group's heads inside the first product's reduction
    if (fused_bc) {
        ssd_dbc(a, gr, dy, dst, dCB, f, s);
    } else {
        for (int g = 0; g < s.G; g++) {
            const size_t cg = (size_t)g * s.N;
            blas_gemm_strided(0, 0, s.Q, s.N, hP, dYe + grp_hp(s, g), HP, shp, f.st + grp_st(s, g), s.N, sst, 0.0f,
                              gr->dCm + cg, gr->ldd, sd, nb, tc);
            blas_gemm_strided(0, 0, s.Q, s.N, s.Q, dCB + (size_t)g * QQ, s.Q, sqq, a->Bm + cg, s.ldx, sx, 1.0f,
                              gr->dCm + cg, gr->ldd, sd, nb, tc);
            blas_gemm_strided(0, 0, s.Q, s.N, hP, Xw + grp_hp(s, g), HP, shp, dst + grp_st(s, g), s.N, sst, 0.0f,
                              gr->dBm + cg, gr->ldd, sd, nb, tc);
            blas_gemm_strided(1, 0, s.Q, s.N, s.Q, dCB + (size_t)g * QQ, s.Q, sqq, a->Cm + cg, s.ldx, sx, 1.0f,
                              gr->dBm + cg, gr->ldd, sd, nb, tc);
        }
        ktime_mark("ssd bwd dB dC");
    }
    if (Xw) { // (Xw and dYe together; before Z1, Z2: the two largest at once are what the peak holds)
        scratch_free(Xw), scratch_free(dYe);
    }
    if (fused && ssd_fused_dx_on(gr, s)) {
        ssd_dx(a, gr, dy, daX, ddX, dDp, dst, f, s);
    } else {
        ssd_dx_whole(a, gr, dy, daX, ddX, dDp, dst, Mb, p, f, s);
    }
    ssd_dt_grads_launch(a, gr, s, f, da_dd, part, dDp);
    scratch_free(p), scratch_free(part), scratch_free(da_dd), scratch_free(Mb);
    scratch_free(dCB), scratch_free(dst);
    ssd_bufs_free(&f);
}

// dX = w (B dS^T) + M^T dY (D on M's diagonal), with r, q and the terms of a's and dt's gradients, through Z1 = B dS^T
// and Z2 = C S_in^T as copies and M as a product (Mb and p: ssd_whole_bwd's scratch)
static void ssd_dx_whole(const ssd_args *a, const ssd_grads *gr, const float *dy, float *daX, float *ddX, double *dDp,
                         const float *dst, float *Mb, const float **p, const ssd_fwd_bufs &f, const SsdShape &s) {
    const int HP = s.H * s.P, nb = s.B * s.nch, nbh = nb * s.H, tc = a->tf32;
    const size_t rows = (size_t)s.B * s.T, QQ = (size_t)s.Q * s.Q;
    const long long shp = (long long)s.Q * HP, sd = (long long)s.Q * gr->ldd;
    float *Z1 = scratch_floats(rows * HP), *Z2 = scratch_floats(rows * HP);
    // dX = w (B dS^T) + M^T dY (D on M's diagonal), with r, q and the terms of a's and dt's gradients
    ssd_rows_by_states(Z1, a->Bm, dst, s, tc);
    ssd_rows_by_states(Z2, a->Cm, f.st, s, tc);
    const bool f2 = s.P % 2 == 0 && s.ldx % 2 == 0 && gr->ldd % 2 == 0 && (uintptr_t)a->x % 8 == 0 &&
                    (uintptr_t)gr->dx % 8 == 0 && (uintptr_t)dy % 8 == 0;
    if (f2)
        ssd_dxq_whole_kernel<true><<<dim3(nb, s.H), SSD_THREADS>>>(gr->dx, gr->ldd, daX, ddX, dDp, Z1, Z2, dy, a->x,
                                                                    f.st, dst, f.dts, f.acs, s);
    else
        ssd_dxq_whole_kernel<false><<<dim3(nb, s.H), SSD_THREADS>>>(gr->dx, gr->ldd, daX, ddX, dDp, Z1, Z2, dy, a->x,
                                                                     f.st, dst, f.dts, f.acs, s);
    CUDA_CHECK_LAUNCH();
    scratch_free(Z1), scratch_free(Z2);
    ssd_mask(Mb, f.CB, f.dts, f.acs, a->Dv, s);
    ssd_ptrs(p, s, SsdPtrs{Mb, (long long)(s.H * QQ), (long long)QQ}, SsdPtrs{dy, shp, s.P},
             SsdPtrs{gr->dx, sd, s.P});
    blas_gemm_ptrs(1, 0, s.Q, s.P, s.Q, p, s.Q, p + nbh, HP, 1.0f, (float *const *)(p + 2 * nbh), gr->ldd, nbh, tc);
    ktime_mark("ssd bwd dx");
}
