// The tensor-core pieces shared by the flash attention kernels (attention_flash_fwd.cu, attention_flash_bwd.cu), and
// their entry points for attention.cu, which calls them for bf16 operands.
//
// Tiles live in shared memory as rows of HD bf16 padded by 8 elements (16 bytes): ldmatrix reads 8 rows of 16 bytes
// per 8x8 matrix, and with a row stride of HD + 8 elements those 8 rows start in 8 different 16-byte bank groups
// (row r at byte 16 r modulo 128), so no read conflicts; cp.async writes 16-byte chunks, which the padding keeps
// aligned.
//
// The product is mma.sync m16n8k16 (bf16 in, float32 accumulators). Per warp, with g = lane / 4 and c = lane % 4:
//   A (16 x 16, row-major) 4 registers of 2 bf16: a0 (row g, cols 2c, 2c+1), a1 (row g+8, same cols),
//     a2 (row g, cols 2c+8, 2c+9), a3 (row g+8, cols 2c+8, 2c+9);
//   B (16 x 8, "col": element (k, n)) 2 registers: b0 (k 2c, 2c+1; n g), b1 (k 2c+8, 2c+9; n g);
//   C (16 x 8 float) 4 floats: c0, c1 (row g, cols 2c, 2c+1), c2, c3 (row g+8, cols 2c, 2c+1).
// So the accumulators of two neighbouring 8-column blocks are, rounded to bf16, exactly the A operand of the next
// product over those 16 columns (P V after Q K^T): no shuffle, no trip through shared memory.
// ldmatrix.x4 loads four 8x8 matrices whose row addresses come from lanes 0-7, 8-15, 16-23, 24-31; lane l receives
// (row l/4, cols 2(l%4), 2(l%4)+1) of each, or with .trans of each matrix's transpose. The helpers below name which
// lane points where.
#ifndef SSM_CUDA_ATTENTION_FLASH_CUH
#define SSM_CUDA_ATTENTION_FLASH_CUH

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/mma.cuh"
#include "ops/ops.h"

#include <cuda_bf16.h>
#include <stdint.h>

// The flash kernels' entry points: 1 when they ran the op (bf16 operands, a->nk NULL, head_dim 64 or 128, rows
// 16-byte aligned), 0 when the shapes are not theirs and nothing was queued (the caller falls back).
int attn_flash_fwd(const attn_args *a, mat o);
int attn_flash_bwd(const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv);

// log2(e): the kernels keep scores in base 2 (exp2 is the hardware's), scale * log2(e) folded into one multiply
#define FLASH_LOG2E 1.4426950408889634f

namespace flash {

typedef __nv_bfloat16 bf16;
using ::ldsm_x4;
using ::ldsm_x4_trans;
using ::mma;

// Two floats as a bf16 pair (round to nearest even), lo in the low half: the element of the smaller column.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return (uint32_t)__bfloat16_as_ushort(v.x) | (uint32_t)__bfloat16_as_ushort(v.y) << 16;
}

// The A operand (16 rows x 16 columns from column c0) of a row-major tile in shared memory with row stride LDS:
// lanes 0-7 point at rows 0-7, lanes 8-15 at rows 8-15 (both column c0), lanes 16-31 the same rows at c0 + 8.
template <int LDS> __device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16 *tile, int c0, int lane) {
    ldsm_x4(a, tile + ((lane & 7) + 8 * ((lane >> 3) & 1)) * LDS + c0 + 8 * (lane >> 4));
}

// The B operands of two neighbouring 8-column blocks n0 .. n0 + 15 at k-step k0 .. k0 + 15, from a tile stored
// [n][k] (row n holds column n of B: K's rows for S = Q K^T): b[0], b[1] for block n0, b[2], b[3] for n0 + 8.
// Lanes 0-7 point at rows n0 + 0-7 column k0, 8-15 the same rows at k0 + 8, 16-23 rows n0 + 8-15 at k0, 24-31 at
// k0 + 8.
template <int LDS> __device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16 *tile, int n0, int k0,
                                                           int lane) {
    ldsm_x4(b, tile + (n0 + (lane & 7) + 8 * (lane >> 4)) * LDS + k0 + 8 * ((lane >> 3) & 1));
}

// The same from a tile stored [k][n] (V's rows for O = P V: k the key, n the dimension), through .trans: lanes 0-7
// point at rows k0 + 0-7 column n0, 8-15 rows k0 + 8-15 at n0, 16-23 rows k0 + 0-7 at n0 + 8, 24-31 rows k0 + 8-15
// at n0 + 8.
template <int LDS> __device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16 *tile, int n0, int k0,
                                                           int lane) {
    ldsm_x4_trans(b, tile + (k0 + (lane & 7) + 8 * ((lane >> 3) & 1)) * LDS + n0 + 8 * (lane >> 4));
}

// The A operand over columns 16 kk .. 16 kk + 15 made of accumulators acc [blocks of 8 columns][4] (C layout)
template <int NB> __device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&acc)[NB][4], int kk) {
    a[0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

// Asynchronous copy of rows [0, ROWS) of HD bf16 (global rows `ld` elements apart) into a padded tile; rows at or past
// `valid` are zero-filled (their source is row 0, never read: cp.async reads no byte when told to copy none).
// NT threads share the copy, 16 bytes each per step. Row 0 must be a valid address.
template <int ROWS, int HD, int NT>
__device__ __forceinline__ void tile_load(bf16 *tile, const bf16 *src, size_t ld, int valid, int tid) {
    constexpr int CPR = HD / 8, LDS = HD + 8;
#pragma unroll
    for (int i = tid; i < ROWS * CPR; i += NT) {
        const int r = i / CPR, c = (i % CPR) * 8;
        const bool ok = r < valid;
        cp_async16(tile + r * LDS + c, src + (ok ? r * ld : 0) + c, ok ? 16 : 0);
    }
}

// Writes rows [0, 16) of a warp's output tile (bf16, padded rows in shared memory, already written by the warp) to
// global rows `ld` apart, 16 bytes per lane; rows at or past `valid` are not written.
template <int HD>
__device__ __forceinline__ void warp_store_rows(bf16 *dst, size_t ld, const bf16 *tile, int valid, int lane) {
    constexpr int CPR = HD / 8, LDS = HD + 8;
#pragma unroll
    for (int i = lane; i < 16 * CPR; i += 32) {
        const int r = i / CPR, c = (i % CPR) * 8;
        if (r < valid) *(uint4 *)(dst + r * ld + c) = *(const uint4 *)(tile + r * LDS + c);
    }
}

// A warp's accumulators [16 rows x 8 NB columns] (C layout), times the row factors f0 (row g) and f1 (row g + 8),
// into its padded bf16 tile in shared memory (then warp_store_rows). Row g of the 8 quads spans all 32 banks: no
// conflict.
template <int NB, int LDS>
__device__ __forceinline__ void warp_acc_to_smem(bf16 *tile, const float (&acc)[NB][4], float f0, float f1, int lane) {
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nb = 0; nb < NB; nb++) {
        *(uint32_t *)(tile + g * LDS + 8 * nb + 2 * c) = pack_bf16(acc[nb][0] * f0, acc[nb][1] * f0);
        *(uint32_t *)(tile + (g + 8) * LDS + 8 * nb + 2 * c) = pack_bf16(acc[nb][2] * f1, acc[nb][3] * f1);
    }
}

// Whether query position i sees key j (training: positions from the sequence's start, T of each)
__device__ __forceinline__ bool visible(int i, int j, int T, int window) {
    return j <= i && j < T && (window <= 0 || i - j < window);
}

} // namespace flash

// Whether the flash kernels take these operands: bf16 (all of them, ops.h), training's keys (a->nk NULL), head_dim 64
// or 128, and every row 16-byte aligned (cp.async and the 16-byte stores): pointers, row strides (ld, kv_bstride)
// in multiples of 8 elements. n mats besides q, k, v.
static inline bool flash_supports(const attn_args *a, const mat *m, int n) {
    if (a->nk || a->q.dt != MAT_BF16 || (a->hd != 64 && a->hd != 128) || a->kv_bstride % 8) return false;
    const mat qkv[3] = {a->q, a->k, a->v};
    for (int i = 0; i < 3 + n; i++) {
        const mat &x = i < 3 ? qkv[i] : m[i - 3];
        if (x.dt != MAT_BF16 || ((uintptr_t)x.p & 15) || x.ld % 8) return false;
    }
    return true;
}

// Raises a kernel's dynamic shared-memory limit past the default 48 KB once per device: the limit is the kernel's on
// the current device, shared by every context there (as scan.cu's smem_limit). Devices past the table set it at every
// launch.
#define FLASH_SMEM_DEVICES 16
static inline void flash_smem_limit(const void *kernel, size_t bytes, size_t (*set)[FLASH_SMEM_DEVICES]) {
    if (bytes <= 48 * 1024) return;
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    if (device < FLASH_SMEM_DEVICES && bytes <= (*set)[device]) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (device < FLASH_SMEM_DEVICES) (*set)[device] = bytes;
}

#endif
