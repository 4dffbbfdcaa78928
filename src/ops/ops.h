/* The argument types the ops share (the scan's) and their shapes. The ops themselves, with their shapes and
 * semantics, are the list in src/backend/ops_list.h; mixers and the model call them through a backend (be->scan_fwd),
 * the CPU kernels are cpu_<name> (src/backend/cpu), the CUDA ones <name>_cuda (ops_cuda.h).
 * Shapes: rows = B*T positions; all matrices row-major; `ld*` is a row stride in elements. */
#ifndef SSM_OPS_H
#define SSM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- operands: precision belongs to the operand ------------------------------------------------- */
/* A matrix operand in a backend's memory: rows of `ld` elements of type dt starting at p (row-major; the op's shapes
 * say how many rows and columns it reads). p NULL: no operand (an optional input or output left out). An op takes
 * each dtype its list entry names, so one op covers float32 and bf16 where there used to be a twin pointer (x16) or
 * a twin op (matmul_bwd16). A kernel reads p through mat_f or mat_h: the typed pointer of the operand's dtype, NULL
 * for the other. Written as functions, not compound literals, for the CUDA (C++) sources that include this. */
/* MAT_I8: int8 weights with one float32 scale per row (row r's values are scale[r] * p[r, :]), the CPU's decode
 * weights (ssm_model_use_int8); only matmul_xwT's w takes it. */
typedef enum { MAT_F32 = 0, MAT_BF16 = 1, MAT_I8 = 2 } mat_dtype;
typedef struct {
    void *p;
    mat_dtype dt;
    int ld;
    const float *scale; /* MAT_I8: [rows] */
} mat;

static inline mat mat_make(const void *p, mat_dtype dt, int ld) {
    mat m;
    m.p = (void *)p, m.dt = dt, m.ld = ld; /* an input operand is not written: the const is the op's promise */
    m.scale = NULL;
    return m;
}
static inline mat mat_f32(const float *p, int ld) { return mat_make(p, MAT_F32, ld); }
static inline mat mat_bf16(const uint16_t *p, int ld) { return mat_make(p, MAT_BF16, ld); }
static inline mat mat_i8(const int8_t *p, int ld, const float *scale) {
    mat m = mat_make(p, MAT_I8, ld);
    m.scale = scale;
    return m;
}
static inline mat mat_none(void) { return mat_make(NULL, MAT_F32, 0); }
static inline float *mat_f(mat m) { return m.dt == MAT_F32 ? (float *)m.p : NULL; }
static inline uint16_t *mat_h(mat m) { return m.dt == MAT_BF16 ? (uint16_t *)m.p : NULL; }
static inline int8_t *mat_q(mat m) { return m.dt == MAT_I8 ? (int8_t *)m.p : NULL; }
/* Bytes of one element. */
static inline size_t mat_elem_bytes(mat_dtype dt) { return dt == MAT_BF16 ? 2 : dt == MAT_I8 ? 1 : 4; }
/* m's columns from col on */
static inline mat mat_cols(mat m, int col) {
    m.p = (char *)m.p + mat_elem_bytes(m.dt) * col;
    return m;
}

/* ---- selective scan (Mamba-1: one decay per channel and state) --------------------------------- */
/* The scan fused with what surrounds it in a Mamba-1 layer (the dt softplus before, the SiLU gate after):
 *   dt_t = softplus(dtp_t + dt_bias)          (torch's threshold 20)
 *   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * x_t * B_t ;  y_t = h_t . C_t + D * x_t
 *   out_t = y_t * silu(z_t)                   (out_t = y_t when z is NULL)
 * The per-step state is never stored; the backward recomputes it (and y) in chunks. */
typedef struct {
    mat x;                /* [B, T, E] dense (ld E): the scan input (SiLU of the conv); float32, or bf16 in lean
                           * training (as the conv writes it) */
    mat dt;               /* [B, T, E] dense: dt_proj's output, before the bias and softplus; float32 or bf16 (lean
                           * training, as the reference's autocast) */
    const float *dt_bias; /* [E] */
    const float *At;      /* [N, E]: A transposed (state-major, so channels are contiguous) */
    const float *A_log;   /* or [E, N] A_log, A = -exp(A_log) (exactly one of At, A_log): training, whose A changes
                           * every step, hands the parameter and the scan computes A where it reads it */
    const float *Bm, *Cm; /* [B, T, N] with row stride ldbc */
    int ldbc;
    const float *Dv; /* [E] */
    mat z;           /* [B, T, E] (row stride z.ld), float32 or bf16, or none (p NULL): no gate */
    int B, T, E, N;
    /* Training's checkpoints of the state, or NULL: hk [B, SCAN_HK_COUNT(T), N, E] in bf16, entry j the state at step
     * (j + 1) * SCAN_HK_STEPS (before that step). scan_fwd writes them (with h NULL: training); scan_bwd restarts its
     * recompute of the states from them instead of from the sequence start (so it matches a forward that wrote
     * them, up to their rounding). */
    uint16_t *hk;
} scan_args;

#define SCAN_HK_STEPS 32
#define SCAN_HK_COUNT(T) ((T) > 0 ? ((T) - 1) / SCAN_HK_STEPS : 0) /* the checkpoints of T steps */

/* What the backward writes (=) and accumulates (+=); each written operand float32 or bf16 (rounded once). */
typedef struct {
    mat dx, ddt;          /* [B, T, E] dense =: ddt is the gradient of `dt` (dt_proj's output) */
    mat dBm, dCm;         /* [B, T, N] =, row strides their ld (both of one dtype) */
    float *dAt;           /* [N, E] += */
    float *dA_log;        /* or, in place of dAt: [E, N] += that sum times At, transposed: the gradient of A_log through
                           * A = -exp(A_log), fused (no separate pass over the sum) */
    float *dDv, *ddt_bias; /* [E] += */
    mat dz;               /* [B, T, E] =, when z */
    mat out;              /* [B, T, E] dense, or none: the forward's output, recomputed (=) */
} scan_grads;

/* ---- attention (attn_fwd, attn_bwd) -------------------------------------------------------------- */
/* Causal grouped-query attention of B sequences of T queries over their keys:
 *   o_i = sum_j softmax_j(q_i . k_j / sqrt(hd)) v_j   over the keys j visible to query i:
 *   i - window < j <= i (window 0: every j <= i), positions counted from each sequence's start.
 * Query head h reads key/value head h / (H / KV) (HF's repeat_kv; KV = 1 is multi-query).
 * Operands: q, k, v and the ops' o (attn_bwd: also dout, dq, dk, dv) all float32, or all bf16 (lean training: the
 * arithmetic in float32 inside, each bf16 output rounded once; a backend's kernels may round intermediates, as the
 * CUDA flash kernels round the probabilities for the tensor cores); lse is float32 either way. */
typedef struct {
    mat q;              /* [B*T, q.ld]: H heads of hd per row */
    mat k, v;           /* sequence b's key j at element b * kv_bstride + j * k.ld of k (KV heads of hd), v likewise
                         * (row stride v.ld) */
    size_t kv_bstride;  /* elements */
    /* NULL: the keys are the T positions of the queries themselves (training; kv_bstride T * k.ld). Else nk [B]
     * (backend memory, a decode state's counter after its append): sequence b has nk[b] keys, and its T queries are
     * its last T positions, nk[b] - T + t. */
    const int *nk;
    float *lse; /* [B, H, T]: written by attn_fwd when not NULL, read by attn_bwd */
    int B, T, H, KV, hd, window;
} attn_args;

/* ---- Mamba-2's state space dual (ssd_fwd, ssd_bwd, ssd_step) -------------------------------------------------- */
/* Per sequence b and head h (of group g = h / (H / G)), a state S [P, N] from S_0 (the op's state, or zeros):
 *   dt_t = min(max(softplus(dt_raw_t + dt_bias[h]), dt_min), dt_max)     (torch's softplus threshold 20)
 *   S_t  = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T,   A_h = -exp(A_log[h])
 *   y_t  = S_t C_t + D[h] x_t
 * x_t [P] is head h's slice of a row, B_t and C_t [N] group g's: the layouts of mamba_ssm's x (h p) and B, C (g n). */
typedef struct {
    const float *x;                    /* [B*T, ldx]: head h's P values from column h*P */
    const float *Bm, *Cm;              /* [B*T, ldx]: group g's N values from column g*N (same row stride as x) */
    int ldx;
    const float *dt;                   /* [B*T, lddt]: column h the raw dt, before the bias and the softplus */
    int lddt;
    const float *dt_bias, *A_log, *Dv; /* [H] each */
    float dt_min, dt_max;              /* time_step_limit (0, INFINITY: none) */
    int B, T, H, P, N, G;
    int chunk;                         /* the chunked algorithm's chunk length (a power of two) */
    int tf32;                          /* 1: the chunk products may round their operands to tf32 (CUDA's tensor
                                        * cores; mixed-precision training sets it); 0: float32 products */
} ssd_args;

/* What ssd_bwd writes (=) and accumulates (+=). */
typedef struct {
    float *dx, *dBm, *dCm;                /* = in the layouts of x, Bm and Cm, row stride ldd */
    int ldd;
    float *ddt;                           /* = [B*T, ldddt]: the gradient of the raw dt */
    int ldddt;
    float *dA_log, *ddt_bias, *dDv;       /* [H] += */
} ssd_grads;

/* ---- what the fused decode steps of both kinds share (m1_decode_args.st, m2_decode_args.st) ------------------- */
typedef struct {
    int B, D, V, n_layer;      /* sequences, d_model, vocabulary, layers */
    float eps;                 /* the residual RMSNorms' */
    mat_dtype wdt;             /* every matrix's (the layers' and the head): F32, BF16 or I8 */
    const int *tokens;         /* [B] this step's bytes */
    const float *emb, *norm_f; /* [V, D], [D] */
    const void *head;          /* [V, D] of wdt */
    const float *head_s;       /* MAT_I8: its row scales [V]; else NULL */
    float *logits;             /* [B, V] out */
    float *work;               /* scratch: the kind's m1_decode_work_floats or m2_decode_work_floats */
    int prefetch;              /* the backend's: ask for each layer's weights a layer ahead (a hint) */
    size_t stage;              /* the backend's: shared memory bytes a block for staging weights (0: none) */
    long long *trace;          /* the backend's (CUDA's SSM_DECODE_TRACE=n): each block's clock at every barrier */
} decode_step;

/* ---- one decode step of a stack of Mamba-1 layers, fused (backend.h's decode_mamba1) ---------------------------- */
/* The reference is the op-by-op decode step of model.c: per layer x += out; u = rmsnorm(x) w; xz = in_proj(u);
 * x_conv = SiLU(conv step); dt_low|B|C = x_proj(x_conv); dt = dt_proj(dt_low); the scan step; out = out_proj(g);
 * after the last layer the final norm and the head. A backend may run it as one kernel (decode is read-bound: the
 * op-by-op step spends more time between kernels than in them). Matrices are of decode_step.wdt (MAT_I8: int8 with
 * a float32 scale per row, row r's values scale[r] * w[r, :], as matmul_xwT's); every other tensor float32; all
 * pointers backend memory except layers. */
typedef struct {
    const float *norm_w;                            /* [D] the layer's RMSNorm weight */
    const void *in_proj, *x_proj, *dt_w, *out_proj; /* [2E, D], [R + 2N, E], [E, R], [D, E] */
    const float *in_s, *x_s, *dt_s, *out_s;         /* MAT_I8: their row scales [2E], [R + 2N], [E], [D]; else NULL */
    const float *in_b, *conv_b, *out_b;             /* [2E], [E], [D]: each may be NULL */
    const float *conv_w;                            /* [E, K] */
    const float *dt_b, *At, *Dv;                    /* [E]; [N, E] = -exp(A_log)^T; [E] */
    float *conv_state;                              /* [B, E, K-1] carried in and out */
    float *scan_state;                              /* [B, E, N] carried in and out */
} m1_decode_layer;

typedef struct {
    decode_step st;                /* the batch, the step's ends, the matrices' form */
    int E, N, R, K;                /* d_inner, d_state, dt_rank, d_conv */
    const m1_decode_layer *layers; /* [n_layer], host memory */
} m1_decode_args;

/* Scratch floats of a step: the residual [B, D], the conv output, the gate and the scan output [B, E] each, and
 * dt_low|B|C [B, R + 2N]. */
static inline size_t m1_decode_work_floats(int B, int D, int E, int N, int R) {
    return (size_t)B * ((size_t)D + 3 * (size_t)E + (size_t)R + 2 * (size_t)N);
}

/* ---- one decode step of a stack of Mamba-2 layers, fused (backend.h's decode_mamba2) ---------------------------- */
/* The reference is the op-by-op step through mamba2_forward: per layer x += out; u = rmsnorm(x) w;
 * z | xBC | dt = in_proj(u); xBC = SiLU(conv step); per head the SSD step (dt = softplus(dt + dt_bias) clamped to
 * [dt_min, dt_max], S = exp(dt A) S + dt x B^T, y = S C + D x); g = RMSNorm per group of y silu(z), times its weight
 * (eps gnorm_eps); out = out_proj(g). Di = d_inner = H P; Cd = Di + 2 G N the conv's channels; Din = 2 Di + 2 G N + H
 * in_proj's rows. Matrices of decode_step.wdt, as m1_decode_layer's. */
typedef struct {
    const float *norm_w;             /* [D] the layer's RMSNorm weight */
    const void *in_proj, *out_proj;  /* [Din, D], [D, Di] */
    const float *in_s, *out_s;       /* MAT_I8: their row scales; else NULL */
    const float *in_b, *out_b;       /* [Din], [D]: each may be NULL */
    const float *conv_w, *conv_b;    /* [Cd, K]; [Cd] or NULL */
    const float *dt_bias, *A_log, *Dv; /* [H] each */
    const float *gnorm_w;            /* [Di] the gated RMSNorm's weight */
    float *conv_state;               /* [B, Cd, K-1] carried in and out */
    float *ssd_state;                /* [B, H, P, N] carried in and out */
} m2_decode_layer;

typedef struct {
    decode_step st;                /* the batch, the step's ends, the matrices' form */
    int Di, N, H, P, G, K;
    float gnorm_eps, dt_min, dt_max;
    const m2_decode_layer *layers; /* [n_layer], host memory */
} m2_decode_args;

/* Scratch floats of a step: the residual [B, D], z [B, Di], the gated output [B, Di], xBC [B, Cd], dt [B, H]. */
static inline size_t m2_decode_work_floats(int B, int D, int Di, int N, int H, int G) {
    return (size_t)B * ((size_t)D + 3 * (size_t)Di + 2 * (size_t)G * N + (size_t)H);
}

/* ---- one decode step of a stack of attention and MLP layers, fused (backend.h's decode_transformer) ------------ */
/* The reference is the op-by-op step through attention_forward and mlp_forward: per layer x += out; u = rmsnorm(x) w;
 * then an attention layer ('a'): q | k | v = q_proj(u) | k_proj(u) | v_proj(u), q and k rotated to position pos[b]
 * (rope_theta 0: not), k and v appended to the cache at pos[b] (then pos[b] + 1), o = softmax(q k^T / sqrt(hd) over
 * the window's keys) v per head (query head h reads key/value head h / (H / KV)), out = o_proj(o); or an MLP layer
 * ('f'): out = down_proj(silu(gate_proj(u)) * up_proj(u)), relu2: down_proj(relu(up_proj(u))^2). No biases. Matrices
 * of decode_step.wdt, as m1_decode_layer's. qd = H hd, kvd = KV hd. */
typedef struct {
    int kind;                         /* 'a' attention, 'f' MLP */
    const float *norm_w;              /* [D] the layer's RMSNorm weight */
    const void *q, *k, *v, *o;        /* 'a': [qd, D], [kvd, D], [kvd, D], [D, qd] */
    const float *q_s, *k_s, *v_s, *o_s; /* MAT_I8: their row scales; else NULL */
    int *pos;                         /* 'a': [B] this step's positions (the state's counters: read, then + 1) */
    float *k_cache, *v_cache;         /* 'a': [B, cap, kvd] each, keys after the rotation */
    const void *gate, *up, *down;     /* 'f': [I, D] (NULL for relu2), [I, D], [D, I] */
    const float *gate_s, *up_s, *down_s; /* MAT_I8: their row scales; else NULL */
} t_decode_layer;

typedef struct {
    decode_step st;                /* the batch, the step's ends, the matrices' form */
    int H, KV, hd, window, cap;    /* heads, key/value heads, head_dim, sliding window (0: none), cache positions */
    float theta;                   /* rope_theta; 0: no rotation */
    int I;                         /* intermediate_size (relu2 or SwiGLU: a layer's gate NULL or not) */
    const t_decode_layer *layers;  /* [n_layer], host memory */
} t_decode_args;

/* The most splits of one (sequence, head)'s keys a fused step's attention takes (their partial results sized by it,
 * not by the cache: longer contexts take longer runs of keys a split) */
#define T_DECODE_MAX_SPLITS 256

/* Scratch floats of a step: the residual [B, D], q and the attention output [B, qd] each, the MLP's hidden [B, I],
 * and the splits' partial results (m, l, o [hd]) [B, H, T_DECODE_MAX_SPLITS, hd + 2]. */
static inline size_t t_decode_work_floats(int B, int D, int H, int hd, int I) {
    return (size_t)B * ((size_t)D + 2 * (size_t)H * hd + (size_t)I + (size_t)H * T_DECODE_MAX_SPLITS * (hd + 2));
}

#endif
