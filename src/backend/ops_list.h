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
 * Operands of several precisions are `mat`s (ops.h): pointer, dtype and row stride; an entry says which dtypes each
 * takes (a backend's check_op may refuse a combination it has no kernel for).
 * The order is the profile's: a group's rows print in list order (ops added later come later).
 *
 * Conventions (src/ops/ops.h has the scan's argument types): backwards write input gradients (`=`) unless named
 * `_acc`, and always accumulate parameter gradients (`+=`), so a caller zeroes the gradient buffer once per step.
 * rows = B*T positions; all matrices row-major; `ld*` is a row stride in elements. Every pointer is the backend's
 * memory unless said otherwise. */

/* ---- matmul ------------------------------------------------------------------------------------------------- */
/* y[M,N] = beta*y + x[M,K] @ w[N,K]^T (+ bias[N] when not NULL): a linear layer with PyTorch's weight layout.
 * x float32 or bf16; y float32, or bf16 (the result rounded once; beta 0); w dense (ld K) float32, or on the CPU bf16
 * or int8 with per-row scales (the host's decode copies of the parameters: ssm_model_use_bf16, ssm_model_use_int8;
 * the CUDA bf16 table reads its own bf16 shadow of the float32 weights instead, and check_op refuses other w). */
OP(void, matmul_xwT, (mat y, mat x, mat w, const float *bias, int M, int N, int K, float beta),
   (y, x, w, bias, M, N, K, beta), gemm)
/* Both gradients of that layer from dy[M,N] (float32 or bf16): dx[M,K] = beta*dx + dy @ w, and dw[N,K] += dy^T @ x.
 * dx float32 or bf16 (bf16: computed in float32 from the widened dx, then rounded), or none: dw alone (w unused);
 * dw NULL: dx alone (x unused, may be none). One op so that a backend can share its work on dy (the CUDA bf16 one
 * rounds dy to bf16 once for both products). */
OP(void, matmul_bwd, (mat dx, float beta, float *dw, mat dy, mat x, const float *w, int M, int N, int K),
   (dx, beta, dw, dy, x, w, M, N, K), gemm)


/* y[rows, N] (ldy) += bias[N] broadcast over rows; db[N] += column sums of dy[rows, N] (lddy). */
OP(void, bias_add, (float *y, int ldy, const float *bias, int rows, int N), (y, ldy, bias, rows, N), other)
OP(void, bias_grad_acc, (float *db, const float *dy, int lddy, int rows, int N), (db, dy, lddy, rows, N), other)

/* ---- embedding: out [rows, D] = table[tokens]; dtable[tokens] += dout ------------------------------------------ */
OP(void, embedding_fwd, (float *out, const int *tokens, const float *table, int rows, int D),
   (out, tokens, table, rows, D), other)
OP(void, embedding_bwd, (float *dtable, const float *dout, const int *tokens, int rows, int D),
   (dtable, dout, tokens, rows, D), other)

/* ---- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w ------------------------------------------------------------- */
/* x, y [rows, D] dense; y float32 or bf16 (ld D); rstd [rows] or NULL. */
OP(void, rmsnorm_fwd, (mat y, float *rstd, const float *x, const float *w, int rows, int D, float eps),
   (y, rstd, x, w, rows, D, eps), other)
/* dx (+)= grad through the norm from dy (float32 or bf16, ld D: bf16 is the lean path's mixer input gradient):
 * accumulate into dx when acc != 0; dw += per-column sums. dx_copy16, when not NULL, also receives dx as it ends
 * (after the accumulation) rounded to bf16 [rows, D]: the lean path's next GEMM operand. */
OP(void, rmsnorm_bwd,
   (float *dx, uint16_t *dx_copy16, float *dw, mat dy, const float *x, const float *w, const float *rstd, int rows,
    int D, int acc),
   (dx, dx_copy16, dw, dy, x, w, rstd, rows, D, acc), other)

/* ---- causal depthwise conv1d (kernel K, left zero padding) + SiLU -------------------------------------------- */
/* x [B, T, C] (rows x.ld apart) float32 or bf16, w [C, K], bias [C] or NULL: out [B, T, C] dense (ld C) = silu(pre),
 * float32 or bf16, pre = conv(x) + bias (the bias first, then the taps oldest first). init [B, C, K-1] holds the
 * inputs before t = 0 (oldest first), or NULL for zeros. */
OP(void, conv1d_silu_fwd,
   (mat out, mat x, const float *init, const float *w, const float *bias, int B, int T, int C, int K),
   (out, x, init, w, bias, B, T, C, K), other)
/* dout [B,T,C] dense (float32 or bf16) -> dx [B,T,C] (rows dx.ld apart, written; float32 or bf16), dw [C,K] +=,
 * dbias [C] += (NULL: no bias); `pre` recomputed from x (float32 or bf16) as the forward did (which started from
 * zeros: training). */
OP(void, conv1d_silu_bwd,
   (mat dx, float *dw, float *dbias, mat dout, mat x, const float *w, const float *bias, int B, int T, int C, int K),
   (dx, dw, dbias, dout, x, w, bias, B, T, C, K), other)
/* Advances the conv state [B, C, K-1] past the T inputs x [B, T, C] (ldx): it keeps the last K-1. */
OP(void, conv1d_state_update, (float *state, const float *x, int ldx, int B, int T, int C, int K),
   (state, x, ldx, B, T, C, K), other)

/* ---- selective scan (Mamba-1; scan_args and scan_grads in ops.h) --------------------------------------------- */
/* out [B, T, E] dense (ld E), float32 or bf16. h: [B, E, N] initial state, updated to the final state; NULL means
 * start from zero and discard. */
OP(void, scan_fwd, (const scan_args *s, mat out, float *h), (s, out, h), scan)
/* Backward from dout (d out, [B, T, E] dense, float32 or bf16), starting from a zero initial state (training). */
OP(void, scan_bwd, (const scan_args *s, const scan_grads *g, mat dout), (s, g, dout), scan)

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
/* dst[r, :cols] = src[r, :cols] in dst's dtype (float32 to bf16 rounds to nearest even, bf16 to float32 is exact;
 * the same dtype copies; not overlapping unless dst is src): an operand that several bf16 GEMMs read, rounded once,
 * and the model's conversion at the boundary of a mixer that takes float32 alone inside a bf16 model. */
OP(void, convert_rows, (mat dst, mat src, int rows, int cols), (dst, src, rows, cols), other)
/* The residual add fused with the next norm: x_out = x + delta (delta [rows, D] dense, float32 or bf16 (the lean path's
 * mixer output), or none: x_out = x), then y, rstd = rmsnorm(x_out) as rmsnorm_fwd. x_out may be x (in place).
 * Bitwise the same as the add then the norm. */
OP(void, add_rmsnorm_fwd,
   (float *x_out, mat y, float *rstd, const float *x, mat delta, const float *w, int rows, int D, float eps),
   (x_out, y, rstd, x, delta, w, rows, D, eps), other)
/* One decode step (T = 1) in one pass: conv1d_silu_fwd(out, x, state, w, bias, B, 1, C, K), then
 * conv1d_state_update(state, x, ldx, B, 1, C, K). */
OP(void, conv1d_silu_step,
   (float *out, const float *x, int ldx, float *state, const float *w, const float *bias, int B, int C, int K),
   (out, x, ldx, state, w, bias, B, C, K), other)

/* ---- MLP (SwiGLU) and attention ----------------------------------------------------------------------------- */
/* h [rows, I] (ld h.ld) = silu(g) * u, where the rows of gu (ld gu.ld) hold g in columns [0, I) and u in [I, 2I):
 * the gated activation of a SwiGLU MLP, down(silu(gate(x)) * up(x)). Operands all float32 or all bf16 (computed in
 * float32, rounded once). */
OP(void, swiglu_fwd, (mat h, mat gu, int rows, int I), (h, gu, rows, I), other)
/* dgu [rows, 2I] (ld dgu.ld, written) = d(g | u) from dh [rows, I] and the forward's gu. */
OP(void, swiglu_bwd, (mat dgu, mat dh, mat gu, int rows, int I), (dgu, dh, gu, rows, I), other)
/* h [rows, I] (ld h.ld) = relu(u)^2 for u [rows, I] (ld u.ld): the squared-ReLU MLP's activation, down(relu(up(x))^2)
 * (NemotronH's "relu2"), no gate. Operands all float32 or all bf16 (computed in float32, rounded once). */
OP(void, relu2_fwd, (mat h, mat u, int rows, int I), (h, u, rows, I), other)
/* du [rows, I] (written) = dh * 2 relu(u), from dh [rows, I] and the forward's u. du may be dh (in place). */
OP(void, relu2_bwd, (mat du, mat dh, mat u, int rows, int I), (du, dh, u, rows, I), other)
/* Rotary positions in place, HF Llama's rotate_half form, on the first n_heads heads of hd columns of every row of
 * x [B*T, x.ld] (float32, or bf16: rotated in float32, rounded once): for i < hd/2, with angle a = p * theta^(-2i/hd)
 * (float32 as HF computes it),
 *   (x_i, x_{i+hd/2}) <- (x_i cos a - x_{i+hd/2} sin a, x_{i+hd/2} cos a + x_i sin a)
 * where row b*T+t has position p = t + (pos ? pos[b] : 0) (pos [B] int32, backend memory: a decode state's counter).
 * inverse != 0 rotates by -a: the transpose, which is the backward. */
OP(void, rope, (mat x, const int *pos, int B, int T, int n_heads, int hd, float theta, int inverse),
   (x, pos, B, T, n_heads, hd, theta, inverse), other)
/* A KV cache's append: rows pos[b] .. pos[b]+T-1 of k_cache and v_cache [B, cap, kvd] (sequence b at b*cap*kvd)
 * = the rows of k and v [B*T, ldkv] of sequence b; then pos[b] += T. The caller has checked that they fit
 * (pos[b] + T <= cap). float32. */
OP(void, kv_append,
   (float *k_cache, float *v_cache, int *pos, const float *k, const float *v, int ldkv, int B, int T, int cap, int kvd),
   (k_cache, v_cache, pos, k, v, ldkv, B, T, cap, kvd), other)
/* Causal grouped-query softmax attention (attn_args in ops.h; its operands all float32 or all bf16):
 * o [B*T, o.ld] (H heads of hd) and a->lse [B, H, T] when not NULL (the log-sum-exp of each query's scaled scores,
 * for the backward). */
OP(void, attn_fwd, (const attn_args *a, mat o), (a, o), other)
/* Its backward (training: a->nk NULL) from dout [B*T, dout.ld], the forward's o and a->lse: dq, dk, dv written (=) in
 * the layouts of q, k and v (each with its own row stride; dk, dv [B*T] rows, one per key). */
OP(void, attn_bwd, (const attn_args *a, mat o, mat dout, mat dq, mat dk, mat dv), (a, o, dout, dq, dk, dv), other)

/* ---- Mamba-2 (SSD; ssd_args and ssd_grads in ops.h): float32 operands ---------------------------------------- */
/* y [B*T, H*P] dense (y.ld = H*P) = the SSD of s (D x included), float32 or bf16 (each value computed in float32,
 * then rounded once: lean training's saved y). state [B, H, P, N]: the initial state, updated to the final one;
 * NULL: zeros, discarded (training). The chunked algorithm: chunks of s->chunk positions, within a chunk the
 * quadratic (attention-like) form as GEMMs, between chunks a scan of the chunk states. */
OP(void, ssd_fwd, (const ssd_args *s, mat y, float *state), (s, y, state), scan)
/* Its backward from dy [B*T, H*P] dense, from a zero initial state (training): ssd_grads. */
OP(void, ssd_bwd, (const ssd_args *s, const ssd_grads *g, const float *dy), (s, g, dy), scan)
/* One decode step (s->T = 1) of B sequences: the recurrence itself, state [B, H, P, N] advanced in place. */
OP(void, ssd_step, (const ssd_args *s, float *y, float *state), (s, y, state), other)
/* The gated RMSNorm of Mamba-2 (norm_before_gate false): v = y * silu(z), out = v / sqrt(mean_group(v^2) + eps) * w,
 * the mean over each of the G groups of D / G columns. out, y, z [rows, D] with their own row strides, each float32 or
 * bf16 (lean training keeps y and z in bf16 and hands out_proj a bf16 out); w [D]. */
OP(void, gated_rmsnorm_fwd, (mat out, mat y, mat z, const float *w, int rows, int D, int G, float eps),
   (out, y, z, w, rows, D, G, eps), other)
/* Its backward from dout [rows, D] dense: dy [rows, D] dense and dz (its own row stride; float32, or bf16 rounded once:
 * lean training's in_proj backward reads it so) written, dw [D] +=; y and z as the forward took them. */
OP(void, gated_rmsnorm_bwd,
   (float *dy, mat dz, float *dw, const float *dout, mat y, mat z, const float *w, int rows, int D, int G, float eps),
   (dy, dz, dw, dout, y, z, w, rows, D, G, eps), other)
/* How many rows with targets[r] >= 0 the logits [rows, V] predict right: the first index of the row's largest logit
 * (torch.argmax's pick) is the target. *hits is a HOST pointer (on a GPU the call waits for the count). The accuracy
 * of a synthetic task (ssm eval --task); a separate op so that xent_fwd_bwd, which every step runs, stays as it is. */
OP(void, argmax_hits, (int *hits, const float *logits, const int *targets, int rows, int V),
   (hits, logits, targets, rows, V), other)
