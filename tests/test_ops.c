/* The cross-backend op runner (ggml's test-backend-ops is the model): each op's cases are written once, against the
 * backend table, and run on every backend this machine has. The CPU's run is the reference; every other backend's
 * outputs must be within the case's tolerance of it (relative to each output's scale; a separate bound for the bf16
 * tensor-core table's GEMMs) and bitwise equal across two runs of the same inputs. On a machine with the CPU alone
 * the CPU is checked for determinism (two runs) and every op of ops_list.h must have a case.
 *
 * A case draws its inputs from the run's generator (the same seed on every backend: the same inputs), allocates them
 * in the backend's memory (out_* and io_* buffers start random too, so an op that fails to write all of an output, or
 * writes past its rows' ends into the padding, is caught), calls the op through the table, and the runner downloads
 * and compares every registered output. A backend that refuses a shape (backend_check_op) skips that case.
 *   build/test_ops            every case on every backend
 *   build/test_ops NAME       the cases whose name contains NAME */
#include "test.h"
#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/host_bf16.h"
#include "common.h"
#include "ssm.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* ---- one run of a case on one backend ------------------------------------------------------------------------ */
#define RUN_MAX_BUFS 48
#define RUN_MAX_OUTS 12

typedef struct {
    const char *name;
    const void *dev; /* backend memory, or NULL: a host scalar */
    size_t n;
    mat_dtype dt;
    double scalar;
} run_out;

typedef struct {
    const backend *be;
    rng_t rng;
    int offset; /* floats each buffer starts into its allocation: operands that are not 256-byte aligned */
    int skipped;
    void *bufs[RUN_MAX_BUFS];
    int n_bufs;
    run_out outs[RUN_MAX_OUTS];
    int n_outs;
} op_run;

static void *run_alloc(op_run *r, size_t bytes) {
    CHECK(r->n_bufs < RUN_MAX_BUFS, "test_ops: more than %d buffers in one case", RUN_MAX_BUFS);
    char *p = r->be->alloc(bytes + sizeof(float) * r->offset + 16);
    r->bufs[r->n_bufs++] = p;
    return p + sizeof(float) * r->offset;
}

/* n floats uniform in [lo, hi), in the backend's memory */
static float *in_range(op_run *r, size_t n, float lo, float hi) {
    float *h = xmalloc(sizeof(float) * (n + 1));
    for (size_t i = 0; i < n; i++)
        h[i] = lo + (hi - lo) * rng_uniform(&r->rng);
    float *d = run_alloc(r, sizeof(float) * n);
    r->be->upload(d, h, sizeof(float) * n);
    free(h);
    return d;
}
static float *in_f32(op_run *r, size_t n, float scale) { return in_range(r, n, -scale, scale); }
static uint16_t *in_bf16(op_run *r, size_t n, float scale) {
    float *h = xmalloc(sizeof(float) * (n + 1));
    uint16_t *h16 = xmalloc(sizeof(uint16_t) * (n + 1));
    for (size_t i = 0; i < n; i++)
        h[i] = scale * (2.0f * rng_uniform(&r->rng) - 1.0f);
    host_bf16_from_f32(h16, h, n);
    uint16_t *d = run_alloc(r, sizeof(uint16_t) * n);
    r->be->upload(d, h16, sizeof(uint16_t) * n);
    free(h), free(h16);
    return d;
}
static int *in_ints(op_run *r, size_t n, int lo, int hi) {
    int *h = xmalloc(sizeof(int) * (n + 1));
    for (size_t i = 0; i < n; i++)
        h[i] = lo + (int)(rng_next(&r->rng) % (uint64_t)(hi - lo));
    int *d = run_alloc(r, sizeof(int) * n);
    r->be->upload(d, h, sizeof(int) * n);
    free(h);
    return d;
}

static void out_add(op_run *r, const char *name, const void *dev, size_t n, mat_dtype dt) {
    CHECK(r->n_outs < RUN_MAX_OUTS, "test_ops: more than %d outputs in one case", RUN_MAX_OUTS);
    r->outs[r->n_outs++] = (run_out){name, dev, n, dt, 0};
}
/* an output (or an accumulator: its random start is what += adds to), compared after the case */
static float *out_f32(op_run *r, const char *name, size_t n) {
    float *d = in_f32(r, n, 1.0f);
    out_add(r, name, d, n, MAT_F32);
    return d;
}
static uint16_t *out_bf16(op_run *r, const char *name, size_t n) {
    uint16_t *d = in_bf16(r, n, 1.0f);
    out_add(r, name, d, n, MAT_BF16);
    return d;
}
static void out_scalar(op_run *r, const char *name, double v) {
    out_add(r, name, NULL, 1, MAT_F32);
    r->outs[r->n_outs - 1].scalar = v;
}
/* 0 when the backend runs op on these sizes; else the case is skipped on it */
static int run_refuses(op_run *r, int op, const void *args) {
    if (backend_check_op(r->be, op, args) == 0) return 0;
    r->skipped = 1;
    return 1;
}

/* The outputs of a finished run, downloaded and widened to float32. */
typedef struct {
    int n;
    int skipped;
    const char *names[RUN_MAX_OUTS];
    float *v[RUN_MAX_OUTS];
    size_t len[RUN_MAX_OUTS];
} run_result;

static void result_free(run_result *res) {
    for (int i = 0; i < res->n; i++)
        free(res->v[i]);
    memset(res, 0, sizeof *res);
}

/* ---- cases ----------------------------------------------------------------------------------------------------- */
typedef struct {
    char name[160];
    int op;          /* the BACKEND_OP_* it tests (the coverage check) */
    double tol;      /* relative to each output's scale, on every backend but the bf16 GEMM table */
    double tol_bf16; /* the bf16 table's GEMMs (0: the case is not a GEMM, run on the float32 table alone) */
    int offset;
    void (*run)(op_run *r, const int *p); /* p: the case's sizes and flags */
    int p[8];
} op_case;

#define MAX_CASES 1024
static op_case cases[MAX_CASES];
static int n_cases;

static void add_case(int op, double tol, double tol_bf16, void (*fn)(op_run *, const int *), const int *p, int np,
                     const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void add_case(int op, double tol, double tol_bf16, void (*fn)(op_run *, const int *), const int *p, int np,
                     const char *fmt, ...) {
    CHECK(n_cases < MAX_CASES, "test_ops: more than %d cases", MAX_CASES);
    op_case *c = &cases[n_cases++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->name, sizeof c->name, fmt, ap);
    va_end(ap);
    c->op = op, c->tol = tol, c->tol_bf16 = tol_bf16, c->run = fn;
    for (int i = 0; i < np && i < 8; i++)
        c->p[i] = p[i];
}
#define P(...) (const int[]){__VA_ARGS__}, (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int))

/* matmul_xwT. p: M, N, K, pad (extra row stride), form (bit 0: x bf16, bit 1: y bf16, bit 2: bias, bit 3: beta 1,
 * bit 4: w bf16, bit 5: w int8 with row scales: the CPU's decode weights, which other backends refuse) */
static void case_xwT(op_run *r, const int *p) {
    const int M = p[0], N = p[1], K = p[2], pad = p[3], form = p[4], ldx = K + pad, ldy = N + pad;
    if (form & 48) {
        mat w = mat_none();
        if (form & 16) w = mat_bf16(in_bf16(r, (size_t)N * K, 1), K);
        else {
            int8_t *q = run_alloc(r, (size_t)N * K);
            int8_t *h = xmalloc((size_t)N * K + 1);
            for (size_t i = 0; i < (size_t)N * K; i++) h[i] = (int8_t)((int)(rng_next(&r->rng) % 255) - 127);
            r->be->upload(q, h, (size_t)N * K);
            free(h);
            w = mat_i8(q, K, in_range(r, N, 0.001f, 0.01f));
        }
        if (run_refuses(r, BACKEND_OP_matmul_xwT, &w)) return;
        const float *x = in_f32(r, (size_t)M * ldx, 1);
        r->be->matmul_xwT(mat_f32(out_f32(r, "y", (size_t)M * ldy), ldy), mat_f32(x, ldx), w, NULL, M, N, K,
                          form & 8 ? 1.0f : 0.0f);
        return;
    }
    const mat x =
        form & 1 ? mat_bf16(in_bf16(r, (size_t)M * ldx, 1), ldx) : mat_f32(in_f32(r, (size_t)M * ldx, 1), ldx);
    const float *w = in_f32(r, (size_t)N * K, 1), *bias = form & 4 ? in_f32(r, N, 1) : NULL;
    const mat y =
        form & 2 ? mat_bf16(out_bf16(r, "y", (size_t)M * ldy), ldy) : mat_f32(out_f32(r, "y", (size_t)M * ldy), ldy);
    r->be->matmul_xwT(y, x, mat_f32(w, K), bias, M, N, K, form & 8 ? 1.0f : 0.0f);
}

/* matmul_bwd. p: M, N, K, pad, form (bit 0: dy bf16, bit 1: x bf16, bit 2: dx bf16, bit 3: beta 1, bit 4: no dx,
 * bit 5: no dw) */
static void case_bwd(op_run *r, const int *p) {
    const int M = p[0], N = p[1], K = p[2], pad = p[3], form = p[4], ldx = K + pad, ldy = N + pad;
    const mat dy =
        form & 1 ? mat_bf16(in_bf16(r, (size_t)M * ldy, 1), ldy) : mat_f32(in_f32(r, (size_t)M * ldy, 1), ldy);
    const mat x =
        form & 2 ? mat_bf16(in_bf16(r, (size_t)M * ldx, 1), ldx) : mat_f32(in_f32(r, (size_t)M * ldx, 1), ldx);
    const float *w = in_f32(r, (size_t)N * K, 1);
    mat dx = mat_none();
    if (!(form & 16))
        dx = form & 4 ? mat_bf16(out_bf16(r, "dx", (size_t)M * ldx), ldx)
                      : mat_f32(out_f32(r, "dx", (size_t)M * ldx), ldx);
    float *dw = form & 32 ? NULL : out_f32(r, "dw", (size_t)N * K);
    r->be->matmul_bwd(dx, form & 8 ? 1.0f : 0.0f, dw, dy, x, w, M, N, K);
}

static void case_bias(op_run *r, const int *p) { /* p: rows, N, pad */
    const int rows = p[0], N = p[1], ld = N + p[2];
    const float *bias = in_f32(r, N, 1), *dy = in_f32(r, (size_t)rows * ld, 1);
    r->be->bias_add(out_f32(r, "y", (size_t)rows * ld), ld, bias, rows, N);
    r->be->bias_grad_acc(out_f32(r, "db", N), dy, ld, rows, N);
}

/* p: V, D, rows, skew (0: tokens uniform; k > 0: token 0 but for one row in k, as MQAR's padding or selective
 * copying's noise: runs of one token over many of the CUDA gradient's chunks of 256 sorted rows) */
static void case_embedding(op_run *r, const int *p) {
    const int V = p[0], D = p[1], rows = p[2], skew = p[3];
    int *tok = in_ints(r, rows, 0, V);
    if (skew) {
        int *h = xmalloc(sizeof(int) * rows);
        r->be->download(h, tok, sizeof(int) * rows);
        for (int i = 0; i < rows; i++)
            if (rng_next(&r->rng) % (uint64_t)skew) h[i] = 0;
        r->be->upload(tok, h, sizeof(int) * rows);
        free(h);
    }
    const float *table = in_f32(r, (size_t)V * D, 1), *dout = in_f32(r, (size_t)rows * D, 1);
    r->be->embedding_fwd(out_f32(r, "out", (size_t)rows * D), tok, table, rows, D);
    r->be->embedding_bwd(out_f32(r, "dtable", (size_t)V * D), dout, tok, rows, D);
}

/* p: rows, D, y bf16 */
static void case_rmsnorm_fwd(op_run *r, const int *p) {
    const int rows = p[0], D = p[1];
    const float *x = in_f32(r, (size_t)rows * D, 2), *w = in_f32(r, D, 1);
    const mat y =
        p[2] ? mat_bf16(out_bf16(r, "y", (size_t)rows * D), D) : mat_f32(out_f32(r, "y", (size_t)rows * D), D);
    r->be->rmsnorm_fwd(y, out_f32(r, "rstd", rows), x, w, rows, D, 1e-5f);
}

/* p: rows, D, form (bit 0: dy bf16, bit 1: dx_copy16, bit 2: acc) */
static void case_rmsnorm_bwd(op_run *r, const int *p) {
    const int rows = p[0], D = p[1], form = p[2];
    const float *x = in_f32(r, (size_t)rows * D, 2), *w = in_f32(r, D, 1), *rstd = in_range(r, rows, 0.3f, 1.5f);
    const mat dy = form & 1 ? mat_bf16(in_bf16(r, (size_t)rows * D, 1), D) : mat_f32(in_f32(r, (size_t)rows * D, 1), D);
    float *dx = out_f32(r, "dx", (size_t)rows * D), *dw = out_f32(r, "dw", D);
    uint16_t *copy = form & 2 ? out_bf16(r, "dx_copy16", (size_t)rows * D) : NULL;
    r->be->rmsnorm_bwd(dx, copy, dw, dy, x, w, rstd, rows, D, form & 4 ? 1 : 0);
}

/* p: rows, D, form (0: in place, 1: separate x_out, 2: no delta, 3: delta in bf16), y bf16 */
static void case_add_rmsnorm(op_run *r, const int *p) {
    const int rows = p[0], D = p[1], form = p[2];
    const size_t n = (size_t)rows * D;
    float *x = form == 0 ? out_f32(r, "x", n) : in_f32(r, n, 2);
    float *x_out = form == 0 ? x : out_f32(r, "x_out", n);
    const mat delta = form == 2 ? mat_none() : form == 3 ? mat_bf16(in_bf16(r, n, 1), D) : mat_f32(in_f32(r, n, 1), D);
    const float *w = in_f32(r, D, 1);
    const mat y = p[3] ? mat_bf16(out_bf16(r, "y", n), D) : mat_f32(out_f32(r, "y", n), D);
    r->be->add_rmsnorm_fwd(x_out, y, out_f32(r, "rstd", rows), x, delta, w, rows, D, 1e-5f);
}

/* conv1d_silu_fwd. p: B, T, C, K, form (bit 0: x bf16, bit 1: out bf16, bit 2: init, bit 3: no bias) */
static void case_conv_fwd(op_run *r, const int *p) {
    const int B = p[0], T = p[1], C = p[2], K = p[3], form = p[4], ldx = 2 * C + 1; /* x inside a wider row */
    const size_t n = (size_t)B * T * C;
    const mat x =
        form & 1 ? mat_bf16(in_bf16(r, (size_t)B * T * ldx, 1), ldx) : mat_f32(in_f32(r, (size_t)B * T * ldx, 1), ldx);
    const float *w = in_f32(r, (size_t)C * K, 0.5f), *bias = form & 8 ? NULL : in_f32(r, C, 0.5f);
    const float *init = form & 4 ? in_f32(r, (size_t)B * C * (K - 1), 1) : NULL;
    const mat out = form & 2 ? mat_bf16(out_bf16(r, "out", n), C) : mat_f32(out_f32(r, "out", n), C);
    r->be->conv1d_silu_fwd(out, x, init, w, bias, B, T, C, K);
}

/* conv1d_silu_bwd. p: B, T, C, K, form (bit 0: x bf16, bit 1: dx bf16, bit 2: dout bf16, bit 3: no bias) */
static void case_conv_bwd(op_run *r, const int *p) {
    const int B = p[0], T = p[1], C = p[2], K = p[3], form = p[4], ld = 2 * C + 1;
    const size_t rows = (size_t)B * T;
    const mat x = form & 1 ? mat_bf16(in_bf16(r, rows * ld, 1), ld) : mat_f32(in_f32(r, rows * ld, 1), ld);
    const mat dout = form & 4 ? mat_bf16(in_bf16(r, rows * C, 1), C) : mat_f32(in_f32(r, rows * C, 1), C);
    const float *w = in_f32(r, (size_t)C * K, 0.5f), *bias = form & 8 ? NULL : in_f32(r, C, 0.5f);
    const mat dx = form & 2 ? mat_bf16(out_bf16(r, "dx", rows * ld), ld) : mat_f32(out_f32(r, "dx", rows * ld), ld);
    float *dw = out_f32(r, "dw", (size_t)C * K), *db = form & 8 ? NULL : out_f32(r, "dbias", C);
    r->be->conv1d_silu_bwd(dx, dw, db, dout, x, w, bias, B, T, C, K);
}

/* conv1d_state_update and conv1d_silu_step. p: B, T, C, K */
static void case_conv_state(op_run *r, const int *p) {
    const int B = p[0], T = p[1], C = p[2], K = p[3], ld = C + 3;
    const float *x = in_f32(r, (size_t)B * T * ld, 1), *w = in_f32(r, (size_t)C * K, 0.5f), *bias = in_f32(r, C, 0.5f);
    r->be->conv1d_state_update(out_f32(r, "state (update)", (size_t)B * C * (K - 1)), x, ld, B, T, C, K);
    float *state = out_f32(r, "state (step)", (size_t)B * C * (K - 1));
    r->be->conv1d_silu_step(out_f32(r, "out (step)", (size_t)B * C), x, ld, state, w, bias, B, C, K);
}

/* The scan's inputs for B x T steps of E channels and N states: dt before a bias of about -1 (steps softplus(dt +
 * bias) mostly 0.1 .. 1.5), A < 0; gate z inside xz's rows (ld 2E) as Mamba-1 has it. form bit 0: x, dt, z in bf16
 * (lean training); bit 1: ungated; bit 2: A from A_log (training) instead of At; bit 3: state checkpoints hk. */
static scan_args scan_inputs(op_run *r, int B, int T, int E, int N, int form) {
    const size_t rows = (size_t)B * T, nx = rows * E;
    const int lean = form & 1;
    scan_args s = {.B = B, .T = T, .E = E, .N = N, .ldbc = 2 * N + 3};
    s.x = lean ? mat_bf16(in_bf16(r, nx, 1), E) : mat_f32(in_f32(r, nx, 1), E);
    s.dt = lean ? mat_bf16(in_bf16(r, nx, 1), E) : mat_f32(in_f32(r, nx, 1), E);
    s.dt_bias = in_range(r, E, -1.5f, -0.5f);
    if (form & 4)
        s.A_log = in_range(r, (size_t)E * N, -2.0f, 0.5f);
    else
        s.At = in_range(r, (size_t)N * E, -1.5f, -0.1f);
    const float *bc = in_f32(r, rows * s.ldbc, 1);
    s.Bm = bc, s.Cm = bc + N;
    s.Dv = in_f32(r, E, 1);
    if (!(form & 2))
        s.z = lean ? mat_bf16(in_bf16(r, rows * 2 * E, 1.5f), 2 * E) : mat_f32(in_f32(r, rows * 2 * E, 1.5f), 2 * E);
    if (form & 8) s.hk = out_bf16(r, "hk", (size_t)B * SCAN_HK_COUNT(T) * N * E);
    return s;
}

/* scan_fwd. p: B, T, E, N, form (scan_inputs' bits; bit 4: out bf16, bit 5: a carried state h) */
static void case_scan_fwd(op_run *r, const int *p) {
    const int B = p[0], T = p[1], E = p[2], N = p[3], form = p[4];
    const scan_args s = scan_inputs(r, B, T, E, N, form);
    if (run_refuses(r, BACKEND_OP_scan_fwd, &s)) return;
    const size_t nx = (size_t)B * T * E;
    const mat out = form & 16 ? mat_bf16(out_bf16(r, "out", nx), E) : mat_f32(out_f32(r, "out", nx), E);
    r->be->scan_fwd(&s, out, form & 32 ? out_f32(r, "h", (size_t)B * E * N) : NULL);
}

/* scan_bwd. p: B, T, E, N, form (scan_inputs' bits; bit 4: gradients and dout in bf16 (lean), bit 5: recomputed out) */
static void case_scan_bwd(op_run *r, const int *p) {
    const int B = p[0], T = p[1], E = p[2], N = p[3], form = p[4], lean = form & 16;
    scan_args s = scan_inputs(r, B, T, E, N, form & ~8);
    if (run_refuses(r, BACKEND_OP_scan_bwd, &s)) return;
    const size_t rows = (size_t)B * T, nx = rows * E;
    if (form & 8) { /* the checkpoints as a forward writes them */
        s.hk = run_alloc(r, sizeof(uint16_t) * ((size_t)B * SCAN_HK_COUNT(T) * N * E + 1));
        r->be->scan_fwd(&s, mat_f32(run_alloc(r, sizeof(float) * nx), E), NULL);
    }
    const mat dout = lean ? mat_bf16(in_bf16(r, nx, 1), E) : mat_f32(in_f32(r, nx, 1), E);
    const int ldbc = 2 * N + 5;
#define G_OUT(name, n, ld) (lean ? mat_bf16(out_bf16(r, name, n), ld) : mat_f32(out_f32(r, name, n), ld))
    scan_grads g = {.dx = G_OUT("dx", nx, E),
                    .ddt = G_OUT("ddt", nx, E),
                    .dDv = out_f32(r, "dD", E),
                    .ddt_bias = out_f32(r, "d(dt bias)", E)};
    const mat dbc = G_OUT("dB, dC", rows * ldbc, ldbc);
    g.dBm = dbc, g.dCm = dbc, g.dCm.p = (char *)dbc.p + mat_elem_bytes(dbc.dt) * N;
    if (s.A_log)
        g.dA_log = out_f32(r, "dA_log", (size_t)E * N);
    else
        g.dAt = out_f32(r, "dAt", (size_t)N * E);
    if (s.z.p) g.dz = G_OUT("dz", rows * 2 * E, 2 * E);
    if (form & 32) g.out = G_OUT("out (recomputed)", nx, E);
#undef G_OUT
    r->be->scan_bwd(&s, &g, dout);
}

/* xent_fwd_bwd. p: rows, V, with dlogits */
static void case_xent(op_run *r, const int *p) {
    const int rows = p[0], V = p[1];
    const float *logits = in_f32(r, (size_t)rows * V, 4);
    int *tgt = in_ints(r, rows, -1, V); /* -1: ignored */
    double sum = 0;
    int count = 0;
    r->be->xent_fwd_bwd(&sum, &count, p[2] ? out_f32(r, "dlogits", (size_t)rows * V) : NULL, logits, tgt, rows, V,
                        1.0f / rows);
    out_scalar(r, "sum", sum);
    out_scalar(r, "count", count);
}

/* argmax_hits. p: rows, V, ties (logits drawn from 3 values: many rows have several maxima, where the first wins) */
static void case_argmax_hits(op_run *r, const int *p) {
    const int rows = p[0], V = p[1];
    float *h = xmalloc(sizeof(float) * rows * V);
    for (size_t i = 0; i < (size_t)rows * V; i++)
        h[i] = p[2] ? (float)(rng_next(&r->rng) % 3) : 8.0f * rng_uniform(&r->rng) - 4.0f;
    float *logits = run_alloc(r, sizeof(float) * rows * V);
    r->be->upload(logits, h, sizeof(float) * rows * V);
    free(h);
    const int *tgt = in_ints(r, rows, -1, p[2] ? 3 : V); /* -1: not an answer; with ties, targets among the first */
    int hits = -1;
    r->be->argmax_hits(&hits, logits, tgt, rows, V);
    out_scalar(r, "hits", hits);
}

/* grad_norm and adamw_step (5 steps). p: n */
static void case_optim(op_run *r, const int *p) {
    const size_t n = (size_t)p[0];
    const float *g = in_f32(r, n, 1);
    out_scalar(r, "grad_norm", r->be->grad_norm(g, n));
    float *w = out_f32(r, "w", n), *m = out_f32(r, "m", n), *v = in_range(r, n, 0.0f, 1.0f);
    out_add(r, "v", v, n, MAT_F32);
    unsigned char *mask_h = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        mask_h[i] = (unsigned char)(i % 3 != 0);
    unsigned char *mask = run_alloc(r, n);
    r->be->upload(mask, mask_h, n);
    free(mask_h);
    for (long step = 1; step <= 5; step++)
        r->be->adamw_step(w, g, step == 3 ? 0.5f : 1.0f, m, v, mask, n, 1e-3f, 0.1f, 0.9f, 0.95f, 1e-8f, step);
}

static void case_neg_exp_transpose(op_run *r, const int *p) { /* p: E, N */
    const float *A_log = in_range(r, (size_t)p[0] * p[1], -2.0f, 2.0f);
    r->be->neg_exp_transpose(out_f32(r, "At", (size_t)p[0] * p[1]), A_log, p[0], p[1]);
}

/* convert_rows. p: rows, cols, form (0: float32 -> bf16, 1: bf16 -> float32, 2: float32 -> float32, 3: bf16 -> bf16);
 * float32 sources hold ties, NaN and infinities among their values */
static void case_convert(op_run *r, const int *p) {
    const int rows = p[0], cols = p[1], form = p[2], lds = cols + 5, ldd = cols + 2;
    const size_t ns = (size_t)rows * lds, nd = (size_t)rows * ldd;
    mat src;
    if (form & 1) {
        src = mat_bf16(in_bf16(r, ns, 3), lds);
    } else {
        float *h = xmalloc(sizeof(float) * ns);
        for (size_t i = 0; i < ns; i++)
            h[i] = 3.0f * (2.0f * rng_uniform(&r->rng) - 1.0f);
        const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x7fc00001u, 0x7f800000u, 0xff800000u, 0x80000000u};
        for (size_t i = 0; i < ns && i < 6; i++)
            memcpy(&h[i * 7 % ns], &special[i], sizeof(float));
        float *d = run_alloc(r, sizeof(float) * ns);
        r->be->upload(d, h, sizeof(float) * ns);
        free(h);
        src = mat_f32(d, lds);
    }
    const int to_bf16 = form == 0 || form == 3;
    const mat dst = to_bf16 ? mat_bf16(out_bf16(r, "dst", nd), ldd) : mat_f32(out_f32(r, "dst", nd), ldd);
    r->be->convert_rows(dst, src, rows, cols);
}

/* swiglu_fwd and swiglu_bwd. p: rows, I, pad (extra row stride of every operand), bf16 (every operand: the lean MLP) */
static void case_swiglu(op_run *r, const int *p) {
    const int rows = p[0], I = p[1], ldgu = 2 * I + p[2], ldh = I + p[2], bf = p[3];
#define SW_IN(n, scale) (bf ? mat_bf16(in_bf16(r, n, scale), 0) : mat_f32(in_f32(r, n, scale), 0))
#define SW_OUT(name, n) (bf ? mat_bf16(out_bf16(r, name, n), 0) : mat_f32(out_f32(r, name, n), 0))
    mat gu = SW_IN((size_t)rows * ldgu, 3), dh = SW_IN((size_t)rows * ldh, 1);
    mat h = SW_OUT("h", (size_t)rows * ldh), dgu = SW_OUT("dgu", (size_t)rows * ldgu);
#undef SW_IN
#undef SW_OUT
    gu.ld = dgu.ld = ldgu, dh.ld = h.ld = ldh;
    r->be->swiglu_fwd(h, gu, rows, I);
    r->be->swiglu_bwd(dgu, dh, gu, rows, I);
}

/* relu2_fwd and relu2_bwd. p: rows, I, pad (extra row stride of every operand), bf16 (every operand: the lean MLP),
 * in place (relu2_bwd's du is its dh, as the MLP calls it) */
static void case_relu2(op_run *r, const int *p) {
    const int rows = p[0], I = p[1], ld = I + p[2], bf = p[3], inplace = p[4];
    const size_t n = (size_t)rows * ld;
    const mat u = bf ? mat_bf16(in_bf16(r, n, 3), ld) : mat_f32(in_f32(r, n, 3), ld);
    const mat h = bf ? mat_bf16(out_bf16(r, "h", n), ld) : mat_f32(out_f32(r, "h", n), ld);
    const mat du = bf ? mat_bf16(out_bf16(r, "du", n), ld) : mat_f32(out_f32(r, "du", n), ld);
    const mat dh = inplace ? du : bf ? mat_bf16(in_bf16(r, n, 1), ld) : mat_f32(in_f32(r, n, 1), ld);
    r->be->relu2_fwd(h, u, rows, I);
    r->be->relu2_bwd(du, dh, u, rows, I);
}

/* rope. p: B, T, heads, hd, form (bit 0: positions from pos, bit 1: inverse, bit 2: x in bf16) */
static void case_rope(op_run *r, const int *p) {
    const int B = p[0], T = p[1], H = p[2], hd = p[3], form = p[4], ld = H * hd + 3;
    if (run_refuses(r, BACKEND_OP_rope, NULL)) return;
    const int *pos = form & 1 ? in_ints(r, B, 0, 5000) : NULL;
    const size_t n = (size_t)B * T * ld;
    const mat x = form & 4 ? mat_bf16(out_bf16(r, "x", n), ld) : mat_f32(out_f32(r, "x", n), ld);
    r->be->rope(x, pos, B, T, H, hd, 10000.0f, form & 2);
}

/* kv_append. p: B, T, cap, kvd */
static void case_kv_append(op_run *r, const int *p) {
    const int B = p[0], T = p[1], cap = p[2], kvd = p[3], ld = 3 * kvd;
    if (run_refuses(r, BACKEND_OP_kv_append, NULL)) return;
    const float *kv = in_f32(r, (size_t)B * T * ld, 1);
    int *pos = in_ints(r, B, 0, cap - T + 1);
    out_add(r, "pos", pos, B, MAT_F32); /* ints compared as bits */
    r->be->kv_append(out_f32(r, "k cache", (size_t)B * cap * kvd), out_f32(r, "v cache", (size_t)B * cap * kvd), pos,
                     kv, kv + kvd, ld, B, T, cap, kvd);
}

/* The attention's inputs: q | k | v rows (training) or q rows and a cache of cap positions holding nk[b] >= T keys.
 * p: B, T, H, KV, hd, window, cap (0: no cache), form (bit 0: every operand bf16, bit 1: output rows of an odd
 * stride, which the CUDA flash kernels refuse) */
static attn_args attn_inputs(op_run *r, const int *p, int with_lse) {
    attn_args a = {.B = p[0], .T = p[1], .H = p[2], .KV = p[3], .hd = p[4], .window = p[5]};
    const int cap = p[6], W = (a.H + 2 * a.KV) * a.hd, bf16 = p[7] & 1;
    const size_t nq = (size_t)a.B * a.T * W;
    a.q = bf16 ? mat_bf16(in_bf16(r, nq, 2), W) : mat_f32(in_f32(r, nq, 2), W);
    if (cap) {
        const size_t n = (size_t)a.B * cap * a.KV * a.hd;
        const int kvd = a.KV * a.hd;
        a.k = bf16 ? mat_bf16(in_bf16(r, n, 2), kvd) : mat_f32(in_f32(r, n, 2), kvd);
        a.v = bf16 ? mat_bf16(in_bf16(r, n, 1), kvd) : mat_f32(in_f32(r, n, 1), kvd);
        a.kv_bstride = (size_t)cap * kvd;
        a.nk = in_ints(r, a.B, a.T, cap + 1);
    } else {
        const size_t es = mat_elem_bytes(a.q.dt);
        a.k = a.q, a.k.p = (char *)a.q.p + es * a.H * a.hd;
        a.v = a.q, a.v.p = (char *)a.q.p + es * (a.H + a.KV) * a.hd;
        a.kv_bstride = (size_t)a.T * W;
    }
    if (with_lse) a.lse = out_f32(r, "lse", (size_t)a.B * a.H * a.T);
    return a;
}

/* rows x ld in the inputs' dtype: an output when name is not NULL, else a scratch */
static mat attn_mat(op_run *r, const attn_args *a, const char *name, size_t rows, int ld) {
    const int bf16 = a->q.dt == MAT_BF16;
    if (name) return bf16 ? mat_bf16(out_bf16(r, name, rows * ld), ld) : mat_f32(out_f32(r, name, rows * ld), ld);
    return mat_make(run_alloc(r, mat_elem_bytes(a->q.dt) * rows * ld), a->q.dt, ld);
}

/* o's row stride: padded past the heads (by 8 for bf16, which the flash kernels need 16-byte aligned; by 1 for
 * float32 and for the odd-stride form) */
static int attn_ldo(const attn_args *a, const int *p) {
    return a->H * a->hd + (a->q.dt == MAT_BF16 && !(p[7] & 2) ? 8 : 1);
}

static void case_attn_fwd(op_run *r, const int *p) {
    const attn_args a = attn_inputs(r, p, !p[6]);
    if (run_refuses(r, BACKEND_OP_attn_fwd, &a)) return;
    r->be->attn_fwd(&a, attn_mat(r, &a, "o", (size_t)a.B * a.T, attn_ldo(&a, p)));
}

static void case_attn_bwd(op_run *r, const int *p) {
    attn_args a = attn_inputs(r, p, 0);
    if (run_refuses(r, BACKEND_OP_attn_bwd, &a)) return;
    const size_t rows = (size_t)a.B * a.T;
    const int qd = a.H * a.hd, W = (a.H + 2 * a.KV) * a.hd, ldo = attn_ldo(&a, p);
    const mat o = attn_mat(r, &a, NULL, rows, ldo);
    a.lse = run_alloc(r, sizeof(float) * (size_t)a.B * a.H * a.T);
    r->be->attn_fwd(&a, o);
    const mat dout =
        a.q.dt == MAT_BF16 ? mat_bf16(in_bf16(r, rows * ldo, 1), ldo) : mat_f32(in_f32(r, rows * ldo, 1), ldo);
    const mat d = attn_mat(r, &a, "dq | dk | dv", rows, W);
    mat dk = d, dv = d;
    dk.p = (char *)d.p + mat_elem_bytes(d.dt) * qd, dv.p = (char *)d.p + mat_elem_bytes(d.dt) * (qd + a.KV * a.hd);
    r->be->attn_bwd(&a, o, dout, d, dk, dv);
}

/* The SSD's inputs, x | B | C in one row of ldx (padded by 3, or by 4 with form bit 3: rows that keep 16-byte
 * alignment, for the CUDA backend's vector loads), dt raw in rows of H + 1. p: B, T, H, P, N, G, chunk, form (bit 2:
 * tf32 products allowed, ssd_args.tf32) */
static ssd_args ssd_inputs(op_run *r, const int *p) {
    ssd_args s = {.B = p[0], .T = p[1], .H = p[2], .P = p[3], .N = p[4], .G = p[5], .chunk = p[6]};
    s.tf32 = !!(p[7] & 4);
    const size_t rows = (size_t)s.B * s.T;
    s.ldx = s.H * s.P + 2 * s.G * s.N + (p[7] & 8 ? 4 : 3), s.lddt = s.H + 1;
    const float *xbc = in_f32(r, rows * s.ldx, 1);
    s.x = xbc, s.Bm = xbc + s.H * s.P, s.Cm = xbc + s.H * s.P + s.G * s.N;
    s.dt = in_range(r, rows * s.lddt, -4.0f, 1.0f);
    s.dt_bias = in_range(r, s.H, -1.0f, 0.0f), s.A_log = in_range(r, s.H, 0.0f, 2.7f), s.Dv = in_f32(r, s.H, 1);
    s.dt_min = 0.0f, s.dt_max = INFINITY;
    return s;
}

/* ssd_fwd. p: B, T, H, P, N, G, chunk, form (bit 0: a carried state, bit 1: a dt limit, bit 2: tf32, bit 4: y
 * bf16, lean training's) */
static void case_ssd_fwd(op_run *r, const int *p) {
    if (run_refuses(r, BACKEND_OP_ssd_fwd, NULL)) return;
    ssd_args s = ssd_inputs(r, p);
    if (p[7] & 2) s.dt_min = 0.05f, s.dt_max = 0.5f;
    const size_t rows = (size_t)s.B * s.T, ny = rows * s.H * s.P;
    float *state = p[7] & 1 ? out_f32(r, "state", (size_t)s.B * s.H * s.P * s.N) : NULL;
    const mat y = p[7] & 16 ? mat_bf16(out_bf16(r, "y", ny), s.H * s.P) : mat_f32(out_f32(r, "y", ny), s.H * s.P);
    r->be->ssd_fwd(&s, y, state);
}

/* ssd_bwd. p: as ssd_fwd's */
static void case_ssd_bwd(op_run *r, const int *p) {
    if (run_refuses(r, BACKEND_OP_ssd_bwd, NULL)) return;
    ssd_args s = ssd_inputs(r, p);
    if (p[7] & 2) s.dt_min = 0.05f, s.dt_max = 0.5f;
    const size_t rows = (size_t)s.B * s.T;
    const float *dy = in_f32(r, rows * s.H * s.P, 1);
    float *dxbc = out_f32(r, "dx | dB | dC", rows * s.ldx);
    const ssd_grads g = {.dx = dxbc,
                         .dBm = dxbc + s.H * s.P,
                         .dCm = dxbc + s.H * s.P + s.G * s.N,
                         .ldd = s.ldx,
                         .ddt = out_f32(r, "ddt", rows * s.lddt),
                         .ldddt = s.lddt,
                         .dA_log = out_f32(r, "dA_log", s.H),
                         .ddt_bias = out_f32(r, "ddt_bias", s.H),
                         .dDv = out_f32(r, "dD", s.H)};
    r->be->ssd_bwd(&s, &g, dy);
}

/* ssd_step. p: B, 1, H, P, N, G */
static void case_ssd_step(op_run *r, const int *p) {
    if (run_refuses(r, BACKEND_OP_ssd_step, NULL)) return;
    const ssd_args s = ssd_inputs(r, p);
    r->be->ssd_step(&s, out_f32(r, "y", (size_t)s.B * s.H * s.P), out_f32(r, "state", (size_t)s.B * s.H * s.P * s.N));
}

/* gated_rmsnorm_fwd and gated_rmsnorm_bwd. p: rows, D, G, form (bit 0: y bf16, bit 1: z bf16, bit 2: out bf16 and dz
 * bf16; y rows padded by 3, z rows by 5, out rows by 7; bit 3: by 2, 6 and 4, even, as a model's rows are: the CUDA
 * forward then takes two bf16 columns at a time) */
static void case_gated_norm(op_run *r, const int *p) {
    if (run_refuses(r, BACKEND_OP_gated_rmsnorm_fwd, NULL)) return;
    const int rows = p[0], D = p[1], G = p[2], form = p[3], even = form & 8;
    const int ldy = D + (even ? 2 : 3), ldz = D + (even ? 6 : 5), ldo = D + (even ? 4 : 7);
    const size_t ny = (size_t)rows * ldy, nz = (size_t)rows * ldz, no = (size_t)rows * ldo;
    const mat y = form & 1 ? mat_bf16(in_bf16(r, ny, 2), ldy) : mat_f32(in_f32(r, ny, 2), ldy);
    const mat z = form & 2 ? mat_bf16(in_bf16(r, nz, 3), ldz) : mat_f32(in_f32(r, nz, 3), ldz);
    const float *w = in_f32(r, D, 1), *dout = in_f32(r, (size_t)rows * D, 1);
    const mat out = form & 4 ? mat_bf16(out_bf16(r, "out", no), ldo) : mat_f32(out_f32(r, "out", no), ldo);
    r->be->gated_rmsnorm_fwd(out, y, z, w, rows, D, G, 1e-5f);
    const mat dz = form & 4 ? mat_bf16(out_bf16(r, "dz", nz), ldz) : mat_f32(out_f32(r, "dz", nz), ldz);
    r->be->gated_rmsnorm_bwd(out_f32(r, "dy", (size_t)rows * D), dz, out_f32(r, "dw", D), dout, y, z, w, rows, D, G,
                             1e-5f);
}

static void cases_make(void) {
    enum { XB = 1, YB = 2, BIAS = 4, BETA = 8 };
    const int mm[][4] = {{37, 53, 29, 3},  {256, 512, 128, 0},   {200, 96, 48, 8},
                         {256, 96, 64, 3}, {2048, 1024, 256, 0}, {1, 3072, 768, 0}};
    for (size_t i = 0; i < sizeof mm / sizeof mm[0]; i++) {
        const int M = mm[i][0], N = mm[i][1], K = mm[i][2], pad = mm[i][3];
        const int xwT_forms[] = {0, BETA, BIAS, XB, YB, YB | BIAS, XB | YB, XB | YB | BIAS, 16, 32, 32 | BETA};
        for (size_t f = 0; f < sizeof xwT_forms / sizeof xwT_forms[0]; f++) {
            const int fm = xwT_forms[f];
            add_case(BACKEND_OP_matmul_xwT, fm & YB ? 1e-2 : 1e-5, fm & YB ? 1.5e-2 : 1e-2, case_xwT,
                     P(M, N, K, pad, fm), "matmul_xwT M %d N %d K %d +%d:%s%s%s%s%s", M, N, K, pad,
                     fm & XB ? " x bf16" : "", fm & YB ? " y bf16" : "", fm & BIAS ? " bias" : "",
                     fm & BETA ? " beta 1" : "", fm & 16 ? " w bf16" : fm & 32 ? " w int8" : "");
        }
        /* bwd: bit 0 dy bf16, 1 x bf16, 2 dx bf16, 3 beta 1, 4 no dx, 5 no dw */
        const int bwd_forms[] = {0, 8, 16, 32, 1, 2, 3, 2 | 16, 4 | 1 | 32, 4 | 8 | 1 | 2, 4 | 32};
        for (size_t f = 0; f < sizeof bwd_forms / sizeof bwd_forms[0]; f++) {
            const int fm = bwd_forms[f];
            add_case(BACKEND_OP_matmul_bwd, fm & 4 ? 1e-2 : 1e-5, fm & 4 ? 1.5e-2 : 1e-2, case_bwd, P(M, N, K, pad, fm),
                     "matmul_bwd M %d N %d K %d +%d:%s%s%s%s%s%s", M, N, K, pad, fm & 1 ? " dy bf16" : "",
                     fm & 2 ? " x bf16" : "", fm & 4 ? " dx bf16" : "", fm & 8 ? " beta 1" : "",
                     fm & 16 ? " dw alone" : "", fm & 32 ? " dx alone" : "");
        }
    }
    /* matmul_xwT's operands 1 and 2 floats into their allocations (slices of a buffer are not 256-byte aligned) */
    for (int off = 1; off <= 2; off++) {
        add_case(BACKEND_OP_matmul_xwT, 1e-5, 1e-2, case_xwT, P(256, 512, 128, 0, 0), "matmul_xwT offset %d", off);
        cases[n_cases - 1].offset = off;
        add_case(BACKEND_OP_matmul_bwd, 1e-5, 1e-2, case_bwd, P(200, 96, 48, 8, 0), "matmul_bwd offset %d", off);
        cases[n_cases - 1].offset = off;
    }
    add_case(BACKEND_OP_bias_add, 1e-5, 0, case_bias, P(301, 75, 5), "bias_add, bias_grad_acc (strided rows)");
    add_case(BACKEND_OP_bias_grad_acc, 1e-5, 0, case_bias, P(7, 1030, 0), "bias_add, bias_grad_acc (wide)");
    add_case(BACKEND_OP_embedding_fwd, 1e-6, 0, case_embedding, P(67, 45, 301, 0), "embedding_fwd, embedding_bwd");
    add_case(BACKEND_OP_embedding_bwd, 1e-6, 0, case_embedding, P(256, 768, 64, 0),
             "embedding_fwd, embedding_bwd (d 768)");
    /* one token over many chunks (partial sums added in chunk order: not the CPU's order, hence 1e-5), the others
     * within one; three tokens: runs ending on, before and after chunk boundaries */
    add_case(BACKEND_OP_embedding_bwd, 1e-5, 0, case_embedding, P(40, 96, 5000, 8),
             "embedding_bwd, one token over 17 of 20 chunks");
    add_case(BACKEND_OP_embedding_bwd, 1e-5, 0, case_embedding, P(3, 33, 1100, 2),
             "embedding_bwd, three tokens over 5 chunks");
    add_case(BACKEND_OP_embedding_bwd, 1e-5, 0, case_embedding, P(5, 1100, 777, 0),
             "embedding_bwd, d 1100 (columns past a block)");
    const int rn[][2] = {{203, 333}, {77, 768}, {5, 12289}, {3, 12352}};
    for (int i = 0; i < 4; i++) {
        for (int y16 = 0; y16 <= 1; y16++)
            add_case(BACKEND_OP_rmsnorm_fwd, y16 ? 1e-2 : 1e-5, 0, case_rmsnorm_fwd, P(rn[i][0], rn[i][1], y16),
                     "rmsnorm_fwd rows %d D %d%s", rn[i][0], rn[i][1], y16 ? " y bf16" : "");
        for (int fm = 0; fm < 8; fm++)
            add_case(BACKEND_OP_rmsnorm_bwd, 1e-5, 0, case_rmsnorm_bwd, P(rn[i][0], rn[i][1], fm),
                     "rmsnorm_bwd rows %d D %d:%s%s%s", rn[i][0], rn[i][1], fm & 1 ? " dy bf16" : "",
                     fm & 2 ? " dx_copy16" : "", fm & 4 ? " acc" : "");
        for (int fm = 0; fm < 4; fm++)
            add_case(BACKEND_OP_add_rmsnorm_fwd, 1e-5, 0, case_add_rmsnorm, P(rn[i][0], rn[i][1], fm, fm == 3),
                     "add_rmsnorm_fwd rows %d D %d: %s", rn[i][0], rn[i][1],
                     (const char *[]){"in place", "separate", "no delta", "delta bf16, y bf16"}[fm]);
    }
    const int cv[][4] = {{3, 37, 75, 4}, {2, 150, 75, 4}, {2, 130, 40, 3}, {3, 200, 72, 4}, {2, 70, 40, 5}};
    for (int i = 0; i < 5; i++) {
        const int B = cv[i][0], T = cv[i][1], C = cv[i][2], K = cv[i][3];
        const int fwd_forms[] = {0, 4, 8, 4 | 8, 1, 2, 1 | 2};
        for (size_t f = 0; f < sizeof fwd_forms / sizeof fwd_forms[0]; f++) {
            const int fm = fwd_forms[f];
            add_case(BACKEND_OP_conv1d_silu_fwd, fm & 2 ? 1e-2 : 1e-5, 0, case_conv_fwd, P(B, T, C, K, fm),
                     "conv1d_silu_fwd B %d T %d C %d K %d:%s%s%s%s", B, T, C, K, fm & 1 ? " x bf16" : "",
                     fm & 2 ? " out bf16" : "", fm & 4 ? " init" : "", fm & 8 ? " no bias" : "");
        }
        const int bwd_forms[] = {0, 8, 1, 2, 4, 1 | 2 | 4};
        for (size_t f = 0; f < sizeof bwd_forms / sizeof bwd_forms[0]; f++) {
            const int fm = bwd_forms[f];
            add_case(BACKEND_OP_conv1d_silu_bwd, fm & 2 ? 1e-2 : 1e-5, 0, case_conv_bwd, P(B, T, C, K, fm),
                     "conv1d_silu_bwd B %d T %d C %d K %d:%s%s%s%s", B, T, C, K, fm & 1 ? " x bf16" : "",
                     fm & 2 ? " dx bf16" : "", fm & 4 ? " dout bf16" : "", fm & 8 ? " no bias" : "");
        }
        add_case(BACKEND_OP_conv1d_state_update, 1e-6, 0, case_conv_state, P(B, T % 3 + 1, C, K),
                 "conv1d_state_update, conv1d_silu_step B %d T %d C %d K %d", B, T % 3 + 1, C, K);
    }
    add_case(BACKEND_OP_conv1d_silu_step, 1e-6, 0, case_conv_state, P(64, 1, 1536, 4),
             "conv1d_state_update, conv1d_silu_step B 64 T 1 C 1536 K 4");
    /* the scan: B, T, E, N; T = 1 is a decode step, T > 64 crosses checkpoints and the backward's chunks. The last
     * three, long sequences of few channels, are the shapes CUDA cuts into time segments (scan.cu): T a multiple of
     * the chunks and not, channels not a multiple of 32, an odd d_state (the backward's padding state), B > 1.
     * (SSM_SCAN_SEGMENTS=n forces n segments on every shape.) */
    const int sc[][4] = {{2, 70, 150, 5},   {1, 33, 128, 16}, {3, 100, 257, 19}, {2, 256, 512, 16}, {1, 17, 40, 32},
                         {2, 1000, 96, 16}, {1, 600, 33, 8},  {3, 1, 150, 16},   {1, 1, 1536, 32},  {1, 40, 64, 64},
                         {1, 4096, 64, 16}, {1, 5000, 40, 5}, {2, 3001, 33, 16}};
    for (size_t i = 0; i < sizeof sc / sizeof sc[0]; i++) {
        const int B = sc[i][0], T = sc[i][1], E = sc[i][2], N = sc[i][3];
        /* fwd: 0 plain, ungated, A_log, lean (bf16 in and out, checkpoints), a carried state */
        const int fwd_forms[] = {0, 2, 4, 1 | 16 | 8 | 4, 32, 32 | 2};
        for (size_t f = 0; f < sizeof fwd_forms / sizeof fwd_forms[0]; f++) {
            const int fm = fwd_forms[f];
            add_case(BACKEND_OP_scan_fwd, fm & 16 ? 1e-2 : 1e-5, 0, case_scan_fwd, P(B, T, E, N, fm),
                     "scan_fwd B %d T %d E %d N %d:%s%s%s%s%s%s", B, T, E, N, fm & 1 ? " bf16 in" : "",
                     fm & 2 ? " ungated" : "", fm & 4 ? " A_log" : "", fm & 8 ? " checkpoints" : "",
                     fm & 16 ? " out bf16" : "", fm & 32 ? " state" : "");
        }
        if (T == 1) continue; /* (training runs whole sequences) */
        const int bwd_forms[] = {0, 2, 32, 4, 1 | 4 | 8 | 16 | 32};
        for (size_t f = 0; f < sizeof bwd_forms / sizeof bwd_forms[0]; f++) {
            const int fm = bwd_forms[f];
            add_case(BACKEND_OP_scan_bwd, fm & 16 ? 2e-2 : 1e-4, 0, case_scan_bwd, P(B, T, E, N, fm),
                     "scan_bwd B %d T %d E %d N %d:%s%s%s%s%s", B, T, E, N, fm & 2 ? " ungated" : "",
                     fm & 4 ? " A_log" : "", fm & 8 ? " checkpoints" : "", fm & 16 ? " lean (bf16)" : "",
                     fm & 32 ? " out" : "");
        }
    }
    add_case(BACKEND_OP_xent_fwd_bwd, 1e-5, 0, case_xent, P(301, 256, 1), "xent_fwd_bwd rows 301 V 256");
    add_case(BACKEND_OP_xent_fwd_bwd, 1e-5, 0, case_xent, P(64, 50280, 0), "xent_fwd_bwd rows 64 V 50280, loss alone");
    add_case(BACKEND_OP_argmax_hits, 0, 0, case_argmax_hits, P(301, 256, 0), "argmax_hits rows 301 V 256");
    add_case(BACKEND_OP_argmax_hits, 0, 0, case_argmax_hits, P(517, 16, 1), "argmax_hits rows 517 V 16, ties");
    add_case(BACKEND_OP_argmax_hits, 0, 0, case_argmax_hits, P(9, 50280, 0), "argmax_hits rows 9 V 50280");
    add_case(BACKEND_OP_grad_norm, 1e-6, 0, case_optim, P(1), "grad_norm, adamw_step n 1");
    add_case(BACKEND_OP_adamw_step, 1e-6, 0, case_optim, P(1000003), "grad_norm, adamw_step n 1000003");
    add_case(BACKEND_OP_neg_exp_transpose, 1e-6, 0, case_neg_exp_transpose, P(1536, 16),
             "neg_exp_transpose E 1536 N 16");
    for (int fm = 0; fm < 4; fm++)
        add_case(BACKEND_OP_convert_rows, 0, 0, case_convert, P(37, fm == 1 ? 80 : 300, fm), "convert_rows: %s",
                 (const char *[]){"float32 to bf16", "bf16 to float32", "float32 copy", "bf16 copy"}[fm]);
    const int sw[][3] = {{37, 75, 3}, {256, 1024, 0}};
    for (int i = 0; i < 2; i++)
        add_case(BACKEND_OP_swiglu_fwd, 1e-5, 0, case_swiglu, P(sw[i][0], sw[i][1], sw[i][2], 0),
                 "swiglu_fwd, swiglu_bwd rows %d I %d +%d", sw[i][0], sw[i][1], sw[i][2]);
    /* bf16 (computed in float32, rounded once: an ulp of expf can move a rounding) */
    for (int i = 0; i < 2; i++)
        add_case(BACKEND_OP_swiglu_fwd, 1e-2, 0, case_swiglu, P(sw[i][0], sw[i][1], sw[i][2], 1),
                 "swiglu_fwd, swiglu_bwd rows %d I %d +%d: bf16", sw[i][0], sw[i][1], sw[i][2]);
    for (int i = 0; i < 2; i++)
        for (int bf = 0; bf < 2; bf++)
            add_case(BACKEND_OP_relu2_fwd, bf ? 1e-2 : 1e-5, 0, case_relu2, P(sw[i][0], sw[i][1], sw[i][2], bf, i),
                     "relu2_fwd, relu2_bwd rows %d I %d +%d%s%s", sw[i][0], sw[i][1], sw[i][2], bf ? ": bf16" : "",
                     i ? ", in place" : "");
    for (int fm = 0; fm < 4; fm++)
        add_case(BACKEND_OP_rope, 1e-5, 0, case_rope, P(3, 37, 6, 16, fm), "rope B 3 T 37 heads 6 hd 16:%s%s",
                 fm & 1 ? " pos" : "", fm & 2 ? " inverse" : "");
    /* bf16 (rotated in float32, rounded once: an ulp of sincosf can move a rounding) */
    for (int fm = 4; fm < 8; fm += 3)
        add_case(BACKEND_OP_rope, 1e-2, 0, case_rope, P(2, 45, 6, 64, fm), "rope B 2 T 45 heads 6 hd 64: bf16%s%s",
                 fm & 1 ? " pos" : "", fm & 2 ? " inverse" : "");
    add_case(BACKEND_OP_kv_append, 0, 0, case_kv_append, P(3, 5, 40, 24), "kv_append B 3 T 5 cap 40 kvd 24");
    add_case(BACKEND_OP_kv_append, 0, 0, case_kv_append, P(2, 1, 9, 128), "kv_append B 2 T 1 cap 9 kvd 128");
    add_case(BACKEND_OP_rope, 1e-5, 0, case_rope, P(2, 9, 10, 128, 1), "rope B 2 T 9 heads 10 hd 128: pos");
    add_case(BACKEND_OP_rope, 1e-5, 0, case_rope, P(1, 64, 3, 64, 3), "rope B 1 T 64 heads 3 hd 64: pos inverse");
    /* B, T, H, KV, hd, window, cache: multi-head, grouped-query, multi-query; a sliding window; decode from a cache.
     * Then the shapes the CUDA kernels treat apart: head_dim 64, 96, 128, 256 (elements per lane 2, 4, 4, 8), T not
     * a multiple of 64, windows shorter and longer than T, and long caches (nk[b] random per sequence, up to the
     * capacity), which the CUDA forward splits across warps and merges (a window bounds the split). */
    const int at[][7] = {{2, 37, 4, 4, 16, 0, 0},     {2, 70, 6, 2, 32, 0, 0},     {1, 50, 4, 1, 8, 16, 0},
                         {3, 1, 4, 2, 16, 0, 64},     {2, 5, 4, 2, 16, 7, 40},     {2, 130, 4, 2, 64, 0, 0},
                         {1, 77, 2, 1, 128, 33, 0},   {2, 40, 4, 2, 16, 100, 0},   {1, 20, 2, 1, 256, 0, 0},
                         {1, 33, 3, 1, 96, 0, 0},     {2, 1, 8, 2, 64, 0, 4096},   {3, 1, 4, 4, 128, 0, 2000},
                         {2, 4, 4, 2, 64, 0, 1500},   {2, 1, 4, 2, 64, 300, 3000}, {1, 3, 2, 1, 256, 0, 700},
    /* the CPU's tiles (64 queries of every head of a group, 128 keys): several of each, T not their multiple, odd,
     * one past a tile and exactly one; windows that cross tile edges; groups of 1, 3 and 8 heads; hd 64 and 128;
     * caches whose queries span several blocks */
                         {1, 300, 4, 4, 64, 0, 0},    {2, 257, 6, 2, 64, 100, 0},  {1, 129, 2, 2, 128, 0, 0},
                         {1, 513, 8, 1, 64, 200, 0},  {1, 128, 2, 1, 64, 64, 0},   {2, 191, 4, 2, 128, 129, 0},
                         {2, 70, 4, 2, 64, 0, 600},   {2, 100, 4, 2, 64, 150, 500}};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        const int *q = at[i];
        add_case(BACKEND_OP_attn_fwd, 1e-5, 0, case_attn_fwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], 0),
                 "attn_fwd B %d T %d H %d KV %d hd %d window %d cache %d", q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
        if (!q[6])
            add_case(BACKEND_OP_attn_bwd, 1e-4, 0, case_attn_bwd, P(q[0], q[1], q[2], q[3], q[4], q[5], 0, 0),
                     "attn_bwd B %d T %d H %d KV %d hd %d window %d", q[0], q[1], q[2], q[3], q[4], q[5]);
    }
    /* bf16 operands (lean training): the CUDA flash kernels for head_dim 64 and 128 with T under one tile, not a
     * multiple of the tiles, and a multiple; grouped-query and multi-query; windows that skip whole tiles; several
     * sequences. Then shapes they refuse, which the CUDA backend widens to float32 for its float32 kernels: head_dim
     * 32, a cache (decode), output rows of an odd stride. Against the CPU on the same bf16 inputs (computed in
     * float32, rounded once): the GPU rounds P and dS to bf16 for the tensor cores, and an output's rounding can move
     * by an ulp (2^-8 of the element). */
    const int ab[][8] = {{2, 37, 4, 4, 64, 0, 0, 1},     {2, 300, 4, 2, 64, 0, 0, 1},    {1, 200, 3, 1, 64, 0, 0, 1},
                         {2, 300, 2, 1, 64, 40, 0, 1},   {1, 512, 2, 2, 64, 0, 0, 1},    {1, 1000, 2, 1, 64, 300, 0, 1},
                         {1, 130, 2, 2, 128, 0, 0, 1},   {3, 257, 4, 2, 128, 100, 0, 1}, {2, 70, 6, 2, 32, 0, 0, 1},
                         {2, 4, 4, 2, 64, 0, 1500, 1},   {2, 150, 4, 2, 64, 0, 0, 3}};
    for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++) {
        const int *q = ab[i];
        add_case(BACKEND_OP_attn_fwd, 1.5e-2, 0, case_attn_fwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]),
                 "attn_fwd bf16 B %d T %d H %d KV %d hd %d window %d cache %d%s", q[0], q[1], q[2], q[3], q[4], q[5],
                 q[6], q[7] & 2 ? " odd ld" : "");
        if (!q[6])
            add_case(BACKEND_OP_attn_bwd, 3e-2, 0, case_attn_bwd, P(q[0], q[1], q[2], q[3], q[4], q[5], 0, q[7]),
                     "attn_bwd bf16 B %d T %d H %d KV %d hd %d window %d%s", q[0], q[1], q[2], q[3], q[4], q[5],
                     q[7] & 2 ? " odd ld" : "");
    }
    /* Mamba-2's SSD: B, T, H, P, N, G, chunk; lengths not multiples of the chunk, groups, one chunk, a chunk of 1; a
     * chunk above the backends' cap of 64 with P and N past one 64-wide tile and 4 heads per group; mamba2-130m's
     * heads (P 64, N 128) over 5 chunks */
    const int sd[][7] = {{2, 37, 4, 8, 16, 1, 16},    {1, 100, 6, 16, 8, 3, 32},   {3, 20, 2, 4, 32, 2, 64},
                         {1, 65, 2, 64, 128, 1, 8},    {2, 9, 3, 5, 7, 1, 1},       {1, 150, 8, 80, 72, 2, 256},
                         {2, 300, 4, 64, 128, 1, 256}};
    for (size_t i = 0; i < sizeof sd / sizeof sd[0]; i++) {
        const int *q = sd[i];
        for (int fm = 0; fm < 4; fm++)
            add_case(BACKEND_OP_ssd_fwd, 1e-5, 0, case_ssd_fwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], fm),
                     "ssd_fwd B %d T %d H %d P %d N %d G %d chunk %d:%s%s", q[0], q[1], q[2], q[3], q[4], q[5], q[6],
                     fm & 1 ? " state" : "", fm & 2 ? " dt limit" : "");
        for (int fm = 0; fm < 4; fm += 2)
            add_case(BACKEND_OP_ssd_bwd, 1e-4, 0, case_ssd_bwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], fm),
                     "ssd_bwd B %d T %d H %d P %d N %d G %d chunk %d:%s", q[0], q[1], q[2], q[3], q[4], q[5], q[6],
                     fm & 2 ? " dt limit" : "");
    }
    /* the same with tf32 products (mixed precision; the CPU computes in float32 whatever the flag): mamba2-130m's
     * heads and tiles past 64. Bounds of tf32's rounding (2^-11) times the problem's conditioning: ddt, differences
     * of row and column sums, moves most (tests/emu/emu_ssd.cpp bounds each output by the conditioning itself) */
    for (size_t i = sizeof sd / sizeof sd[0] - 2; i < sizeof sd / sizeof sd[0]; i++) {
        const int *q = sd[i];
        add_case(BACKEND_OP_ssd_fwd, 3e-3, 0, case_ssd_fwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], 4 | 1),
                 "ssd_fwd tf32 B %d T %d H %d P %d N %d G %d chunk %d: state", q[0], q[1], q[2], q[3], q[4], q[5],
                 q[6]);
        add_case(BACKEND_OP_ssd_bwd, 5e-2, 0, case_ssd_bwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], 4),
                 "ssd_bwd tf32 B %d T %d H %d P %d N %d G %d chunk %d", q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
    }
    /* whole chunks (lengths that are multiples of the chunk: the CUDA backend's batched GEMMs), float32 and tf32:
     * groups of two heads, a chunk of 16, mamba2-130m's heads over 4 chunks of 64, and an odd P with a chunk of 6
     * (the scalar forms of the float4 passes) */
    const int wc[][7] = {
        {2, 128, 4, 16, 32, 2, 64}, {1, 64, 3, 8, 16, 1, 16}, {2, 256, 4, 64, 128, 1, 256}, {2, 36, 3, 5, 8, 1, 6}};
    for (size_t i = 0; i < sizeof wc / sizeof wc[0]; i++) {
        const int *q = wc[i];
        for (int fm = 8; fm < 16; fm += 4) { /* (rows padded by 4: the aligned forms) */
            const char *tf = fm & 4 ? " tf32" : "";
            for (int st = 0; st < 2; st++) /* (a carried state: the pass over chunks; none: its product) */
                add_case(BACKEND_OP_ssd_fwd, fm & 4 ? 3e-3 : 1e-5, 0, case_ssd_fwd,
                         P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], fm | st),
                         "ssd_fwd%s whole chunks B %d T %d H %d P %d N %d G %d chunk %d:%s", tf, q[0], q[1], q[2],
                         q[3], q[4], q[5], q[6], st ? " state" : "");
            add_case(BACKEND_OP_ssd_bwd, fm & 4 ? 5e-2 : 1e-4, 0, case_ssd_bwd,
                     P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], fm | 2),
                     "ssd_bwd%s whole chunks B %d T %d H %d P %d N %d G %d chunk %d: dt limit", tf, q[0], q[1], q[2],
                     q[3], q[4], q[5], q[6]);
        }
        /* y in bf16 (lean training), tf32: the CUDA fused output kernel writes it where P and N are multiples of 32
         * (mamba2-130m's heads), elsewhere a float32 y is rounded after */
        add_case(BACKEND_OP_ssd_fwd, 1e-2, 0, case_ssd_fwd, P(q[0], q[1], q[2], q[3], q[4], q[5], q[6], 8 | 4 | 16),
                 "ssd_fwd tf32 whole chunks B %d T %d H %d P %d N %d G %d chunk %d: y bf16", q[0], q[1], q[2], q[3],
                 q[4], q[5], q[6]);
    }
    /* y in bf16 where the chunks are not whole (a float32 y rounded after) */
    add_case(BACKEND_OP_ssd_fwd, 1e-2, 0, case_ssd_fwd, P(2, 37, 4, 8, 16, 1, 16, 16 | 1),
             "ssd_fwd B 2 T 37 H 4 P 8 N 16 G 1 chunk 16: state, y bf16");
    add_case(BACKEND_OP_ssd_step, 1e-5, 0, case_ssd_step, P(3, 1, 4, 8, 16, 2, 1), "ssd_step B 3 H 4 P 8 N 16 G 2");
    add_case(BACKEND_OP_ssd_step, 1e-5, 0, case_ssd_step, P(1, 1, 24, 64, 128, 1, 1), "ssd_step B 1 H 24 P 64 N 128");
    add_case(BACKEND_OP_ssd_step, 1e-5, 0, case_ssd_step, P(2, 1, 6, 5, 37, 3, 1), "ssd_step B 2 H 6 P 5 N 37 G 3");
    const int gn[][3] = {{37, 96, 1}, {20, 120, 4}, {300, 1536, 1}, {33, 1536, 8}};
    for (size_t i = 0; i < sizeof gn / sizeof gn[0]; i++)
        /* small shapes: every form; large: all or none bf16; then all bf16 with even strides (15) */
        for (int fm = 0; fm < 16; fm = fm == 7 ? 15 : fm + (i < 2 ? 1 : 7))
            add_case(i % 2 ? BACKEND_OP_gated_rmsnorm_bwd : BACKEND_OP_gated_rmsnorm_fwd, fm & 4 ? 1e-2 : 1e-5, 0,
                     case_gated_norm, P(gn[i][0], gn[i][1], gn[i][2], fm),
                     "gated_rmsnorm_fwd, _bwd rows %d D %d G %d%s%s%s%s", gn[i][0], gn[i][1], gn[i][2],
                     fm & 1 ? " y16" : "", fm & 2 ? " z16" : "", fm & 4 ? " out16" : "", fm & 8 ? " even" : "");
}

/* ---- the runner ------------------------------------------------------------------------------------------------ */
static run_result case_run(const op_case *c, const backend *be) {
    op_run r = {.be = be, .rng = {0x5eed0000u + (uint64_t)(c - cases)}, .offset = c->offset};
    c->run(&r, c->p);
    run_result res = {.n = r.n_outs, .skipped = r.skipped};
    for (int i = 0; i < r.n_outs && !r.skipped; i++) {
        const run_out *o = &r.outs[i];
        res.names[i] = o->name, res.len[i] = o->n;
        res.v[i] = xmalloc(sizeof(float) * (o->n + 1));
        if (!o->dev) {
            res.v[i][0] = (float)o->scalar;
        } else if (o->dt == MAT_BF16) {
            uint16_t *h = xmalloc(sizeof(uint16_t) * (o->n + 1));
            be->download(h, o->dev, sizeof(uint16_t) * o->n);
            host_f32_from_bf16(res.v[i], h, o->n);
            free(h);
        } else {
            be->download(res.v[i], o->dev, sizeof(float) * o->n);
        }
    }
    if (r.skipped) res.n = 0;
    for (int i = 0; i < r.n_bufs; i++)
        be->release(r.bufs[i]);
    return res;
}

/* test_rel_err where a NaN or an infinity in both at one position counts as agreement (convert_rows keeps them):
 * the largest difference elsewhere over the largest finite |b| */
static double rel_err_special(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i] || (isnan(a[i]) && isnan(b[i]))) continue;
        const double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d;
    }
    for (size_t i = 0; i < n; i++)
        if (isfinite(b[i]) && fabs((double)b[i]) > den) den = fabs((double)b[i]);
    return den > 0 ? num / den : num;
}

/* 1 when a and b hold the same bits */
static int result_same(const run_result *a, const run_result *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->v[i], b->v[i], sizeof(float) * a->len[i])) return 0;
    return 1;
}

/* Runs c on be twice (bitwise the same) and compares with the CPU's ref within tol. */
static void case_check(const op_case *c, const backend *be, const run_result *ref, double tol) {
    char name[256];
    snprintf(name, sizeof name, "%s [%s %s]", c->name, be->name, be->precision);
    TEST_BEGIN(name);
    run_result a = case_run(c, be), b = case_run(c, be);
    if (a.skipped) {
        printf("skip - %s: the backend refuses the shape (%s)\n", name, ssm_last_error());
        result_free(&a), result_free(&b);
        return;
    }
    EXPECT(result_same(&a, &b), "two runs on the same inputs differ (not deterministic)");
    for (int i = 0; i < a.n && ref; i++) {
        const double e = rel_err_special(a.v[i], ref->v[i], a.len[i]);
        EXPECT(e <= tol, "%s: rel err %.3g > %.2g", a.names[i], e, tol);
    }
    result_free(&a), result_free(&b);
    TEST_END();
}

int main(int argc, char **argv) {
    cases_make();
    /* the CPU with the scalar definitions of the ops that have one (cpu_ops.h): the reference of its fast kernels */
    backend cpu_def = backend_cpu;
    cpu_def.attn_fwd = cpu_attn_fwd_ref, cpu_def.attn_bwd = cpu_attn_bwd_ref;
    const char *filter = argc > 1 ? argv[1] : NULL;
    const backend *others[2] = {NULL, NULL};
    if (ssm_device_available("cuda")) {
        others[0] = backend_by_name("cuda", NULL); /* on the process default context (GPU 0) */
        others[1] = others[0]->bf16;
    } else {
        printf("# no CUDA device (%s): the CPU's determinism and the op list's coverage alone\n", ssm_last_error());
    }

    TEST_BEGIN("test_ops: every op of ops_list.h has a case");
    for (int op = 0; op < BACKEND_OP_COUNT; op++) {
        int found = 0;
        for (int i = 0; i < n_cases; i++)
            found |= cases[i].op == op || strstr(cases[i].name, backend_op_names[op]) != NULL;
        EXPECT(found, "%s has no case in tests/test_ops.c", backend_op_names[op]);
    }
    TEST_END();

    int ran = 0;
    for (int i = 0; i < n_cases; i++) {
        const op_case *c = &cases[i];
        if (filter && !strstr(c->name, filter)) continue;
        ran++;
        run_result ref = case_run(c, &backend_cpu);
        if (c->op == BACKEND_OP_attn_fwd || c->op == BACKEND_OP_attn_bwd) {
            /* the CPU's tiled attention against its scalar definition: 1e-5 in float32; a bf16 output's rounding may
             * move by an ulp, the case's tolerance */
            run_result def = case_run(c, &cpu_def);
            case_check(c, &backend_cpu, &def, c->tol <= 1e-4 ? 1e-5 : c->tol);
            result_free(&def);
        }
        if (!others[0]) {
            case_check(c, &backend_cpu, &ref, 0.0);
        } else {
            case_check(c, others[0], &ref, c->tol);
            if (c->tol_bf16 > 0) case_check(c, others[1], &ref, c->tol_bf16);
        }
        result_free(&ref);
    }
    printf("# %d of %d cases\n", ran, n_cases);
    return test_failures ? 1 : 0;
}
