/* The numeric building blocks shared by mixers and the model driver. Each op has a forward and a
 * backward; backwards write input gradients (`=`) unless named `_acc`, and always accumulate
 * parameter gradients (`+=`), so a caller zeroes the gradient buffer once per step.
 * Shapes: rows = B*T positions; all matrices row-major; `ld*` is a row stride in floats.
 * The CPU implementations live in src/backend/cpu/ under the same names. */
#ifndef SSM_OPS_H
#define SSM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- matmul (BLAS) ------------------------------------------------------------------------- */
/* y[M,N] (ldy) = beta*y + x[M,K] (ldx) @ w[N,K]^T : a linear layer with PyTorch's weight layout. */
void matmul_xwT(float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta);
/* dx[M,K] (lddx) = beta*dx + dy[M,N] (lddy) @ w[N,K] : the input gradient of that layer. */
void matmul_dyw(float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K, float beta);
/* dw[N,K] += dy[M,N]^T (lddy) @ x[M,K] (ldx) : its weight gradient. */
void matmul_dw_acc(float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K);
/* Both gradients of one layer from the same dy: matmul_dyw (dx, beta) then matmul_dw_acc (dw). One op so that a
 * backend can share its work on dy (the CUDA bf16 one rounds dy to bf16 once). */
void matmul_bwd(float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x, int ldx,
                const float *w, int M, int N, int K);

/* The same layer with bf16 weights w16[N,K] (the upper halves of float32s), float32 x and y: for
 * decode, where reading the weights is the cost. */
void matmul_xwT_bf16(float *y, int ldy, const float *x, int ldx, const uint16_t *w16, int M, int N, int K, float beta);
/* matmul_bwd with dy and x each in float32 or bf16 (exactly one of dy, dy16 and one of x, x16): the lean
 * path's producers write some of them rounded. dx NULL: only dw (x unused); dw NULL: only dx (x and w unused
 * respectively: x may be NULL, and w when dx is). dx16 instead of dx: the input gradient in bf16, dx16 = bf16(beta
 * dx16 + dy w) (the lean path's x_proj input gradient, added to the scan's). */
void matmul_bwd16(float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy, const uint16_t *dy16,
                  int lddy, const float *x, const uint16_t *x16, int ldx, const float *w, int M, int N, int K);
/* matmul_xwT and matmul_dw_acc with the activation operand x in bf16 (x16, row stride ldx): the lean bf16
 * training path, where x's producer wrote it rounded (as a bf16 GEMM would round it). */
void matmul_xwT_x16(float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K, float beta);
void matmul_dw_acc_x16(float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N, int K);
/* y16[M,N] (ldy) = bf16(x[M,K] @ w[N,K]^T + bias) (bias [N] or NULL): a layer whose output is kept in bf16;
 * x in float32 or x16 in bf16 (exactly one of the two). */
void matmul_xwT_y16(uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w,
                    const float *bias, int M, int N, int K);
/* Round-to-nearest-even float32 -> bf16, and back (exact). */
void bf16_from_f32(uint16_t *dst, const float *src, size_t n);
void f32_from_bf16(float *dst, const uint16_t *src, size_t n);
/* A dense float32 copy [rows, cols] of bf16 rows with stride ld (the caller frees it): the CPU's bf16-operand
 * forms widen their operands first (the CPU runs them only to test the lean path). */
float *f32_from_bf16_rows(const uint16_t *src, int ld, size_t rows, int cols);
/* dst[r, :cols] (row stride ldd) = bf16(src[r, :cols]) (row stride lds), round to nearest even: an operand that
 * several bf16 GEMMs read, rounded once. */
void round_bf16_rows(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols);

/* y[rows, N] (ldy) += bias[N] broadcast over rows; db[N] += column sums of dy[rows, N] (lddy). */
void bias_add(float *y, int ldy, const float *bias, int rows, int N);
void bias_grad_acc(float *db, const float *dy, int lddy, int rows, int N);

/* ---- embedding ------------------------------------------------------------------------------ */
void embedding_fwd(float *out, const int *tokens, const float *table, int rows, int D); /* out [rows, D] */
void embedding_bwd(float *dtable, const float *dout, const int *tokens, int rows, int D);

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ----------------------------------------------- */
/* y in float32 and/or y16 rounded to bf16 (either may be NULL, not both); rstd [rows] or NULL. */
void rmsnorm_fwd(float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D, float eps);
/* The residual add fused with the next norm: x_out = x + delta (delta NULL: x_out = x; delta16: delta in bf16, the
 * lean path's mixer output), then y (or y16), rstd = rmsnorm(x_out) as rmsnorm_fwd. x_out may be x (in place).
 * Bitwise the same as the add then the norm. */
void add_rmsnorm_fwd(float *x_out, float *y, uint16_t *y16, float *rstd, const float *x, const float *delta,
                     const uint16_t *delta16, const float *w, int rows, int D, float eps);
/* dx (+)= grad through the norm from dy (or dy16 in bf16, the lean path's mixer input gradient: exactly one of the
 * two): accumulate into dx when acc != 0; dw += per-column sums. dx16, when not NULL, also receives dx as it ends
 * (after the accumulation) rounded to bf16: the lean path's next GEMM operand. */
void rmsnorm_bwd(float *dx, uint16_t *dx16, float *dw, const float *dy, const uint16_t *dy16, const float *x,
                 const float *w, const float *rstd, int rows, int D, int acc);

/* ---- causal depthwise conv1d (kernel K, left zero padding) + SiLU ------------------------------ */
/* x [B, T, C] (ldx) in float32, or x16 the same in bf16 (exactly one of the two), w [C, K], bias [C] or NULL:
 * out [B, T, C] = silu(pre), pre = conv(x) + bias (the bias first, then the taps oldest first), and out16 (if
 * not NULL) the same rounded to bf16 (out may then be NULL). init [B, C, K-1] holds the inputs before t = 0
 * (oldest first), or NULL for zeros. */
void conv1d_silu_fwd(float *out, uint16_t *out16, const float *x, const uint16_t *x16, int ldx, const float *init,
                     const float *w, const float *bias, int B, int T, int C, int K);
/* dout [B,T,C] -> dx [B,T,C] (lddx, written; or dx16 the same rounded to bf16: exactly one of the two),
 * dw [C,K] +=, dbias [C] += (NULL: no bias); `pre` recomputed from x (or x16) as the forward did (which started
 * from zeros: training). dout16, when not NULL, is a gradient term [B,T,C] in bf16 added to dout, or the whole of it
 * with dout NULL (the lean path's). */
void conv1d_silu_bwd(float *dx, uint16_t *dx16, int lddx, float *dw, float *dbias, const float *dout,
                     const uint16_t *dout16, const float *x, const uint16_t *x16, int ldx, const float *w,
                     const float *bias, int B, int T, int C, int K);
/* Advances the conv state [B, C, K-1] past the T inputs x [B, T, C] (ldx): it keeps the last K-1. */
void conv1d_state_update(float *state, const float *x, int ldx, int B, int T, int C, int K);
/* One decode step (T = 1) in one pass: conv1d_silu_fwd(out, NULL, x, NULL, ldx, state, w, bias, B, 1, C, K), then
 * conv1d_state_update(state, x, ldx, B, 1, C, K). */
void conv1d_silu_step(float *out, const float *x, int ldx, float *state, const float *w, const float *bias, int B,
                      int C, int K);

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

/* out [B, T, E] dense, or out16 the same rounded to bf16 (exactly one of the two). h: [B, E, N] initial state,
 * updated to the final state; NULL means start from zero and discard. */
void scan_fwd(const scan_args *s, float *out, uint16_t *out16, float *h);
/* Backward from dout (d out, [B, T, E] dense; or g->dout16), starting from a zero initial state (training). */
void scan_bwd(const scan_args *s, const scan_grads *g, const float *dout);
/* The plain sequential definition, for tests: softplus_bias_fwd, then one channel at a time with scalar exp,
 * then gate_fwd. */
void scan_fwd_ref(const scan_args *s, float *out, float *h);

/* ---- elementwise -------------------------------------------------------------------------------- */
/* The two ops the scan fuses, on their own for its sequential definition (scan_fwd_ref):
 * dt = softplus(pre + bias) (torch's threshold 20), in place over [rows, E]. */
void softplus_bias_fwd(float *dt, const float *bias, int rows, int E);
/* out = y * silu(z); y dense rows of E (out may be y), z rows with stride ldz. */
void gate_fwd(float *out, const float *y, const float *z, int ldz, int rows, int E);

/* At[N, E] = -exp(A_log[E, N])^T: Mamba-1's continuous decay, state-major as scan_fwd wants it. */
void neg_exp_transpose(float *At, const float *A_log, int E, int N);

/* ---- loss ----------------------------------------------------------------------------------------- */
/* Mean cross-entropy (nats) over rows; when dlogits != NULL writes (softmax - onehot) * scale.
 * targets < 0 are ignored (not counted). Returns the summed (not mean) loss in *sum, count in *n; both may be NULL
 * (the gradient alone: on a GPU, no wait for the device). */
void xent_fwd_bwd(double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows,
                  int V, float scale);

/* ---- optimizer over the flat parameter buffer ------------------------------------------------------- */
/* sqrt of the sum of dw[i]^2, accumulated in double. */
double grad_norm(const float *dw, size_t n);
/* One AdamW step with torch.optim.AdamW's arithmetic: w, m, v [n] updated in place from the gradient g[i] * gscale
 * (the clip's scale folded in: the float product g[i] * gscale; 1 for none); weight decay where
 * decay_mask[i] != 0; step counts steps taken including this one (1 on the first). */
void adamw_step(float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask, size_t n,
                float lr, float weight_decay, float beta1, float beta2, float eps, long step);

#endif
