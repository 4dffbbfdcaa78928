/* The one list of a backend's compute ops, with each op's shapes and semantics. Everything per op is generated from
 * it: the fields of struct backend and the BACKEND_OP_* indices (backend.h), the CPU table (backend.c, the
 * cpu_<name> kernels of cpu/cpu_ops.h), the CUDA tables (cuda/backend_cuda.c, the <name>_cuda kernels of
 * ops_cuda.h), the profiler's wrappers and totals (profile.c) and the op names (backend_op_names). Adding an op is
 * a line here, its CPU kernel, its CUDA kernel (or a NULL entry in backend_cuda.c, which backend_check_op then
 * refuses; a kernel's size limits are its backend's check_op answer), and its cases in the tests.
 *
 * An X-macro list without an include guard: define OP, include this file, undefine OP.
 *   OP(ret, name, (parameters), (arguments), group)
 * arguments: the parameters' names, in order (the profiler's wrapper passes them on). group: the op's row group in
 * `ssm bench --profile`: gemm, scan, other or optim. A gemm has a float32 and a bf16 tensor-core kernel on CUDA
 * (<name>_cuda, <name>_cuda_bf16: the two CUDA tables differ in them); every other op one kernel for both tables.
 * The order is the profile's: a group's rows print in list order (ops added later come later).
 *
 * Conventions (src/ops/ops.h has the scan's argument types): backwards write input gradients (`=`) unless named
 * `_acc`, and always accumulate parameter gradients (`+=`), so a caller zeroes the gradient buffer once per step.
 * rows = B*T positions; all matrices row-major; `ld*` is a row stride in elements. Every pointer is the backend's
 * memory unless said otherwise. */

/* ---- matmul ------------------------------------------------------------------------------------------------- */
/* y[M,N] (ldy) = beta*y + x[M,K] (ldx) @ w[N,K]^T : a linear layer with PyTorch's weight layout. */
OP(void, matmul_xwT, (float *y, int ldy, const float *x, int ldx, const float *w, int M, int N, int K, float beta),
   (y, ldy, x, ldx, w, M, N, K, beta), gemm)
/* dx[M,K] (lddx) = beta*dx + dy[M,N] (lddy) @ w[N,K] : the input gradient of that layer. */
OP(void, matmul_dyw, (float *dx, int lddx, const float *dy, int lddy, const float *w, int M, int N, int K, float beta),
   (dx, lddx, dy, lddy, w, M, N, K, beta), gemm)
/* dw[N,K] += dy[M,N]^T (lddy) @ x[M,K] (ldx) : its weight gradient. */
OP(void, matmul_dw_acc, (float *dw, const float *dy, int lddy, const float *x, int ldx, int M, int N, int K),
   (dw, dy, lddy, x, ldx, M, N, K), gemm)
/* Both gradients of one layer from the same dy: matmul_dyw (dx, beta) then matmul_dw_acc (dw). One op so that a
 * backend can share its work on dy (the CUDA bf16 one rounds dy to bf16 once). */
OP(void, matmul_bwd,
   (float *dx, int lddx, float beta, float *dw, const float *dy, int lddy, const float *x, int ldx, const float *w,
    int M, int N, int K),
   (dx, lddx, beta, dw, dy, lddy, x, ldx, w, M, N, K), gemm)
/* matmul_xwT and matmul_dw_acc with the activation operand x in bf16 (x16, row stride ldx): the lean bf16 training
 * path, where x's producer wrote it rounded (as a bf16 GEMM would round it). */
OP(void, matmul_xwT_x16,
   (float *y, int ldy, const uint16_t *x16, int ldx, const float *w, int M, int N, int K, float beta),
   (y, ldy, x16, ldx, w, M, N, K, beta), gemm)
OP(void, matmul_dw_acc_x16, (float *dw, const float *dy, int lddy, const uint16_t *x16, int ldx, int M, int N, int K),
   (dw, dy, lddy, x16, ldx, M, N, K), gemm)
/* y16[M,N] (ldy) = bf16(x[M,K] @ w[N,K]^T + bias) (bias [N] or NULL): a layer whose output is kept in bf16; x in
 * float32 or x16 in bf16 (exactly one of the two). */
OP(void, matmul_xwT_y16,
   (uint16_t *y16, int ldy, const float *x, const uint16_t *x16, int ldx, const float *w, const float *bias, int M,
    int N, int K),
   (y16, ldy, x, x16, ldx, w, bias, M, N, K), gemm)
/* matmul_bwd with dy and x each in float32 or bf16 (exactly one of dy, dy16 and one of x, x16): the lean path's
 * producers write some of them rounded. dx NULL: only dw (x unused); dw NULL: only dx (x and w unused respectively:
 * x may be NULL, and w when dx is). dx16 instead of dx: the input gradient in bf16, dx16 = bf16(beta dx16 + dy w)
 * (the lean path's x_proj input gradient, added to the scan's). */
OP(void, matmul_bwd16,
   (float *dx, uint16_t *dx16, int lddx, float beta, float *dw, const float *dy, const uint16_t *dy16, int lddy,
    const float *x, const uint16_t *x16, int ldx, const float *w, int M, int N, int K),
   (dx, dx16, lddx, beta, dw, dy, dy16, lddy, x, x16, ldx, w, M, N, K), gemm)
/* matmul_xwT with the weights w16[N,K] in bf16 (the upper halves of float32s), float32 x and y: the CPU's decode,
 * where reading the weights is the cost (w16 is the host's bf16 copy of the parameters, ssm_model_use_bf16). The
 * CUDA backend has none: its bf16 table's matmul_xwT reads its own bf16 shadow of the weights. */
OP(void, matmul_xwT_bf16,
   (float *y, int ldy, const float *x, int ldx, const uint16_t *w16, int M, int N, int K, float beta),
   (y, ldy, x, ldx, w16, M, N, K, beta), gemm)


/* y[rows, N] (ldy) += bias[N] broadcast over rows; db[N] += column sums of dy[rows, N] (lddy). */
OP(void, bias_add, (float *y, int ldy, const float *bias, int rows, int N), (y, ldy, bias, rows, N), other)
OP(void, bias_grad_acc, (float *db, const float *dy, int lddy, int rows, int N), (db, dy, lddy, rows, N), other)

/* ---- embedding: out [rows, D] = table[tokens]; dtable[tokens] += dout ------------------------------------------ */
OP(void, embedding_fwd, (float *out, const int *tokens, const float *table, int rows, int D),
   (out, tokens, table, rows, D), other)
OP(void, embedding_bwd, (float *dtable, const float *dout, const int *tokens, int rows, int D),
   (dtable, dout, tokens, rows, D), other)

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ------------------------------------------------------------- */
/* y in float32 and/or y16 rounded to bf16 (either may be NULL, not both); rstd [rows] or NULL. */
OP(void, rmsnorm_fwd,
   (float *y, uint16_t *y16, float *rstd, const float *x, const float *w, int rows, int D, float eps),
   (y, y16, rstd, x, w, rows, D, eps), other)
/* dx (+)= grad through the norm from dy (or dy16 in bf16, the lean path's mixer input gradient: exactly one of the
 * two): accumulate into dx when acc != 0; dw += per-column sums. dx16, when not NULL, also receives dx as it ends
 * (after the accumulation) rounded to bf16: the lean path's next GEMM operand. */
OP(void, rmsnorm_bwd,
   (float *dx, uint16_t *dx16, float *dw, const float *dy, const uint16_t *dy16, const float *x, const float *w,
    const float *rstd, int rows, int D, int acc),
   (dx, dx16, dw, dy, dy16, x, w, rstd, rows, D, acc), other)

/* ---- causal depthwise conv1d (kernel K, left zero padding) + SiLU -------------------------------------------- */
/* x [B, T, C] (ldx) in float32, or x16 the same in bf16 (exactly one of the two), w [C, K], bias [C] or NULL:
 * out [B, T, C] = silu(pre), pre = conv(x) + bias (the bias first, then the taps oldest first), and out16 (if not
 * NULL) the same rounded to bf16 (out may then be NULL). init [B, C, K-1] holds the inputs before t = 0 (oldest
 * first), or NULL for zeros. */
OP(void, conv1d_silu_fwd,
   (float *out, uint16_t *out16, const float *x, const uint16_t *x16, int ldx, const float *init, const float *w,
    const float *bias, int B, int T, int C, int K),
   (out, out16, x, x16, ldx, init, w, bias, B, T, C, K), other)
/* dout [B,T,C] -> dx [B,T,C] (lddx, written; or dx16 the same rounded to bf16: exactly one of the two), dw [C,K] +=,
 * dbias [C] += (NULL: no bias); `pre` recomputed from x (or x16) as the forward did (which started from zeros:
 * training). dout16, when not NULL, is a gradient term [B,T,C] in bf16 added to dout, or the whole of it with dout
 * NULL (the lean path's). */
OP(void, conv1d_silu_bwd,
   (float *dx, uint16_t *dx16, int lddx, float *dw, float *dbias, const float *dout, const uint16_t *dout16,
    const float *x, const uint16_t *x16, int ldx, const float *w, const float *bias, int B, int T, int C, int K),
   (dx, dx16, lddx, dw, dbias, dout, dout16, x, x16, ldx, w, bias, B, T, C, K), other)
/* Advances the conv state [B, C, K-1] past the T inputs x [B, T, C] (ldx): it keeps the last K-1. */
OP(void, conv1d_state_update, (float *state, const float *x, int ldx, int B, int T, int C, int K),
   (state, x, ldx, B, T, C, K), other)

/* ---- selective scan (Mamba-1; scan_args and scan_grads in ops.h) --------------------------------------------- */
/* out [B, T, E] dense, or out16 the same rounded to bf16 (exactly one of the two). h: [B, E, N] initial state,
 * updated to the final state; NULL means start from zero and discard. */
OP(void, scan_fwd, (const scan_args *s, float *out, uint16_t *out16, float *h), (s, out, out16, h), scan)
/* Backward from dout (d out, [B, T, E] dense; or g->dout16), starting from a zero initial state (training). */
OP(void, scan_bwd, (const scan_args *s, const scan_grads *g, const float *dout), (s, g, dout), scan)

/* ---- loss ------------------------------------------------------------------------------------------------------ */
/* Mean cross-entropy (nats) over rows; when dlogits != NULL writes (softmax - onehot) * scale. targets < 0 are
 * ignored (not counted). Returns the summed (not mean) loss in *sum, count in *count: HOST pointers, and both may be
 * NULL (the gradient alone: on a GPU, no wait for the device). */
OP(void, xent_fwd_bwd,
   (double *sum, int *count, float *dlogits, const float *logits, const int *targets, int rows, int V, float scale),
   (sum, count, dlogits, logits, targets, rows, V, scale), other)

/* ---- optimizer over the flat parameter buffer ---------------------------------------------------------------- */
/* sqrt of the sum of dw[i]^2, accumulated in double (returned to the host). */
OP(double, grad_norm, (const float *dw, size_t n), (dw, n), optim)
/* One AdamW step with torch.optim.AdamW's arithmetic: w, m, v [n] updated in place from the gradient g[i] * gscale
 * (the clip's scale folded in: the float product g[i] * gscale; 1 for none); weight decay where decay_mask[i] != 0;
 * step counts steps taken including this one (1 on the first). */
OP(void, adamw_step,
   (float *w, const float *g, float gscale, float *m, float *v, const unsigned char *decay_mask, size_t n, float lr,
    float weight_decay, float beta1, float beta2, float eps, long step),
   (w, g, gscale, m, v, decay_mask, n, lr, weight_decay, beta1, beta2, eps, step), optim)

/* ---- added later (here for the profile's row order) ---------------------------------------------------------- */
/* At[N, E] = -exp(A_log[E, N])^T: Mamba-1's continuous decay, state-major as scan_fwd wants it. */
OP(void, neg_exp_transpose, (float *At, const float *A_log, int E, int N), (At, A_log, E, N), other)
/* dst[r, :cols] (row stride ldd) = bf16(src[r, :cols]) (row stride lds), round to nearest even: an operand that
 * several bf16 GEMMs read, rounded once. */
OP(void, round_bf16_rows, (uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols),
   (dst, ldd, src, lds, rows, cols), other)
/* The residual add fused with the next norm: x_out = x + delta (delta NULL: x_out = x; delta16: delta in bf16, the
 * lean path's mixer output), then y (or y16), rstd = rmsnorm(x_out) as rmsnorm_fwd. x_out may be x (in place).
 * Bitwise the same as the add then the norm. */
OP(void, add_rmsnorm_fwd,
   (float *x_out, float *y, uint16_t *y16, float *rstd, const float *x, const float *delta, const uint16_t *delta16,
    const float *w, int rows, int D, float eps),
   (x_out, y, y16, rstd, x, delta, delta16, w, rows, D, eps), other)
/* One decode step (T = 1) in one pass: conv1d_silu_fwd(out, NULL, x, NULL, ldx, state, w, bias, B, 1, C, K), then
 * conv1d_state_update(state, x, ldx, B, 1, C, K). */
OP(void, conv1d_silu_step,
   (float *out, const float *x, int ldx, float *state, const float *w, const float *bias, int B, int C, int K),
   (out, x, ldx, state, w, bias, B, C, K), other)
