// The bf16 shadow of the parameter buffer (mixed precision). Every bf16 GEMM used to round its weight into a
// fresh copy (two per weight and step: the forward and the backward's dx); now AdamW, which rewrites every
// weight anyway, also writes bf16(w) into one shadow buffer beside it, and a GEMM operand that lies inside the
// shadowed range reads the shadow (matmul.cu's bf16_copy). The shadow holds exactly the bits a copy would.
//
// It is valid from an AdamW step until anything else writes into (or frees) the shadowed range: memory.cu
// reports every upload, copy, zeroing and release, and one that touches the range drops the shadow until the
// next step. It is allocated only once a bf16 GEMM has asked for it (w16_want): float32 training never pays
// for it. One shadow per process: a second model's optimizer step moves it to that model's buffer.
#include "backend/cuda/cuda_common.h"
#include "ops/ops_cuda.h"

#include <stdint.h>

static int wanted;
static const float *base;     // the shadowed float32 buffer
static size_t count;          // its length in floats
static uint16_t *shadow;      // [count] bf16, valid when valid != 0
static size_t shadow_cap;     // floats the shadow can hold
static int valid;

extern "C" void w16_want(void) { wanted = 1; }

extern "C" uint16_t *w16_for_update(const float *w, size_t n) {
    if (!wanted || n == 0) return NULL;
    if (n > shadow_cap) {
        cuda_release(shadow); // (releases report themselves: harmless here, the shadow is being replaced)
        shadow = NULL, shadow_cap = 0;
        shadow = (uint16_t *)cuda_alloc(sizeof(uint16_t) * n);
        shadow_cap = n;
    }
    base = w, count = n, valid = 0; // valid again once the update is queued (w16_updated)
    return shadow;
}

extern "C" void w16_updated(void) { valid = shadow != NULL; }

extern "C" const uint16_t *w16_lookup(const float *p, size_t n) {
    const uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    if (!valid || a < b || (a - b) / sizeof(float) + n > count) return NULL;
    return shadow + (a - b) / sizeof(float);
}

extern "C" int w16_owns(const void *p) {
    return shadow && (const uint16_t *)p >= shadow && (const uint16_t *)p < shadow + shadow_cap;
}

extern "C" void w16_note_write(const void *dst, size_t bytes) {
    const uintptr_t d = (uintptr_t)dst, b = (uintptr_t)base, e = b + count * sizeof(float);
    if (valid && d < e && (d >= b || bytes > b - d)) valid = 0; // [d, d + bytes) meets [b, e)
}
