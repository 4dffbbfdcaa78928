/* The argument types the ops share (the scan's) and their shapes. The ops themselves, with their shapes and
 * semantics, are the list in src/backend/ops_list.h; mixers and the model call them through a backend (be->scan_fwd),
 * the CPU kernels are cpu_<name> (src/backend/cpu), the CUDA ones <name>_cuda (ops_cuda.h).
 * Shapes: rows = B*T positions; all matrices row-major; `ld*` is a row stride in elements. */
#ifndef SSM_OPS_H
#define SSM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- selective scan (Mamba-1: one decay per channel and state) --------------------------------- */
/* The scan fused with what surrounds it in a Mamba-1 layer (the dt softplus before, the SiLU gate after):
 *   dt_t = softplus(dtp_t + dt_bias)          (torch's threshold 20)
 *   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * x_t * B_t ;  y_t = h_t . C_t + D * x_t
 *   out_t = y_t * silu(z_t)                   (out_t = y_t when z is NULL)
 * The per-step state is never stored; the backward recomputes it (and y) in chunks. */
typedef struct {
    const float *x;       /* [B, T, E] dense: the scan input (SiLU of the conv) */
    const uint16_t *x16;  /* or x in bf16 (exactly one of x, x16): lean training, as the conv writes it */
    const float *dt;      /* [B, T, E] dense: dt_proj's output, before the bias and softplus */
    const uint16_t *dt16; /* or dt in bf16 (exactly one of dt, dt16): lean training, as the reference's autocast */
    const float *dt_bias; /* [E] */
    const float *At;      /* [N, E]: A transposed (state-major, so channels are contiguous) */
    const float *A_log;   /* or [E, N] A_log, A = -exp(A_log) (exactly one of At, A_log): training, whose A changes
                           * every step, hands the parameter and the scan computes A where it reads it */
    const float *Bm, *Cm; /* [B, T, N] with row stride ldbc */
    int ldbc;
    const float *Dv; /* [E] */
    const float *z;  /* [B, T, E] with row stride ldz, or NULL: no gate */
    const uint16_t *z16; /* or the gate in bf16 (at most one of z, z16) */
    int ldz;
    int B, T, E, N;
    /* Training's checkpoints of the state, or NULL: hk [B, SCAN_HK_COUNT(T), N, E] in bf16, entry j the state at step
     * (j + 1) * SCAN_HK_STEPS (before that step). scan_fwd writes them (with h NULL: training); scan_bwd restarts its
     * recompute of the states from them instead of from the sequence start (so it matches a forward that wrote
     * them, up to their rounding). */
    uint16_t *hk;
} scan_args;

#define SCAN_HK_STEPS 32
#define SCAN_HK_COUNT(T) ((T) > 0 ? ((T) - 1) / SCAN_HK_STEPS : 0) /* the checkpoints of T steps */

/* What the backward writes (=) and accumulates (+=). */
typedef struct {
    float *dx, *ddt;      /* [B, T, E] dense =: ddt is the gradient of `dt` (dt_proj's output) */
    uint16_t *dx16;       /* or dx rounded to bf16 (exactly one of dx, dx16) */
    uint16_t *ddt16;      /* or ddt rounded to bf16 (exactly one of ddt, ddt16) */
    float *dBm, *dCm;     /* [B, T, N] stride lddbc = */
    uint16_t *dBm16, *dCm16; /* or both rounded to bf16, stride lddbc (both in place of dBm and dCm) */
    int lddbc;
    float *dAt;           /* [N, E] += */
    float *dA_log;        /* or, in place of dAt: [E, N] += that sum times At, transposed: the gradient of A_log through
                           * A = -exp(A_log), fused (no separate pass over the sum) */
    float *dDv, *ddt_bias; /* [E] += */
    float *dz;            /* [B, T, E] stride lddz =, when z */
    uint16_t *dz16;       /* or dz rounded to bf16 (exactly one of dz, dz16 when z) */
    int lddz;
    float *out;           /* [B, T, E] dense, or NULL: the forward's output, recomputed (=) */
    uint16_t *out16;      /* the same rounded to bf16, or NULL (at most one of out, out16) */
    const uint16_t *dout16; /* an input: d out in bf16 [B, T, E] dense, in place of scan_bwd's dout (then NULL) */
} scan_grads;

#endif
