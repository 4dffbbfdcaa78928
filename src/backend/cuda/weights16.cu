// The bf16 shadow of the parameter buffer (mixed precision). Every bf16 GEMM used to round its weight into a
// fresh copy (two per weight and step: the forward and the backward's dx); now AdamW, which rewrites every
// weight anyway, also writes bf16(w) into one shadow buffer beside it, and a GEMM operand that lies inside the
// shadowed range reads the shadow (matmul.cu's bf16_copy). The shadow holds exactly the bits a copy would.
//
// It is valid from an AdamW step until anything else writes into (or frees) the shadowed range: memory.cu
// reports every upload, copy, zeroing and release, and one that touches the range drops the shadow until the
// next step. It is allocated only once a bf16 GEMM has asked for it (w16_want): float32 training never pays
// for it. One shadow per device context (context.h), so per model: two models' optimizer steps keep their own.
#include "backend/cuda/context.h"
#include "backend/cuda/cuda_common.h"
#include "ops/ops_cuda.h"

#include <cuda_bf16.h>
#include <stdint.h>

extern "C" void w16_want(void) { cuda_ctx_now()->w16.wanted = 1; }

extern "C" uint16_t *w16_for_update(const float *w, size_t n) {
    w16_shadow *s = &cuda_ctx_now()->w16;
    if (!s->wanted || n == 0) return NULL;
    if (n > s->cap) {
        cuda_release(s->shadow); // (releases report themselves: harmless here, the shadow is being replaced)
        s->shadow = NULL, s->cap = 0;
        s->shadow = (uint16_t *)cuda_alloc(sizeof(uint16_t) * n);
        s->cap = n;
    }
    s->base = w, s->count = n, s->valid = 0; // valid again once the update is queued (w16_updated)
    return s->shadow;
}

extern "C" void w16_updated(void) {
    w16_shadow *s = &cuda_ctx_now()->w16;
    s->valid = s->shadow != NULL;
}

extern "C" const uint16_t *w16_lookup(const float *p, size_t n) {
    const w16_shadow *s = &cuda_ctx_now()->w16;
    const uintptr_t a = (uintptr_t)p, b = (uintptr_t)s->base;
    if (!s->valid || a < b || (a - b) / sizeof(float) + n > s->count) return NULL;
    return s->shadow + (a - b) / sizeof(float);
}

extern "C" int w16_owns(const void *p) {
    const w16_shadow *s = &cuda_ctx_now()->w16;
    return s->shadow && (const uint16_t *)p >= s->shadow && (const uint16_t *)p < s->shadow + s->cap;
}

extern "C" void w16_note_write(const void *dst, size_t bytes) {
    w16_shadow *s = &cuda_ctx_now()->w16;
    const uintptr_t d = (uintptr_t)dst, b = (uintptr_t)s->base, e = b + s->count * sizeof(float);
    if (s->valid && d < e && (d >= b || bytes > b - d)) s->valid = 0; // [d, d + bytes) meets [b, e)
}

// The gather after a ZeRO-1 step (several GPUs, src/dist/dist_nccl.c) rewrote every rank's shard but this one's,
// while AdamW shadowed only this one's: the whole buffer is rounded again, the same bits AdamW's kernel writes
// (__float2bfloat16_rn), so that every GEMM reads a shadow and none rounds a fresh copy. One pass of 6 bytes per
// parameter, small beside the gather itself.
__global__ static void w16_round_kernel(__nv_bfloat16 *w16, const float *w, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        w16[i] = __float2bfloat16_rn(w[i]);
}

extern "C" void w16_refresh(const float *w, size_t n) {
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)w16_for_update(w, n);
    if (!w16) return;
    const size_t blocks = (n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096;
    w16_round_kernel<<<(unsigned)blocks, 256>>>(w16, w, n);
    CUDA_CHECK_LAUNCH();
    w16_updated();
}
