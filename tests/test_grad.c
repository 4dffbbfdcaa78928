/* Finite-difference gradient checks: every op on its own, then the whole model. Each check compares
 * the analytic directional derivative <grad, v> with (L(w + eps v) - L(w - eps v)) / (2 eps) for
 * random directions v, where L = sum(out * R) for a fixed random R (or the model's loss). float32
 * central differences with eps = 1e-3 resolve about 3 digits, hence the 1e-2 relative tolerance;
 * the PyTorch comparison (tests/torch_ref.py) checks the same gradients to 1e-4. */
#include "model.h"
#include "backend/cpu/cpu_ops.h"
#include "test.h"

#include <omp.h>
#include <string.h>

#define TOL 1e-2
#define EPS 1e-3f

static rng_t rng = {42};

static float *randn(size_t n, float scale) {
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = scale * rng_normal(&rng);
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* A differentiable function of `n_in` float arrays, reduced to a scalar by the caller's R. */
typedef double (*loss_fn)(void *ctx);

/* Checks d loss / d x against grad along a random direction, scaled to the tensor's RMS so the step
 * is relatively small for tiny tensors (the 0.02-scale embedding) and large enough for big ones. */
static void check_dir(const char *what, float *x, size_t n, const float *grad, loss_fn f, void *ctx) {
    float scale = (float)sqrt(dot(x, x, n) / n);
    float *v = randn(n, scale > 1e-2f ? scale : 1e-2f), *saved = xmalloc(sizeof(float) * n);
    memcpy(saved, x, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = saved[i] + EPS * v[i];
    double lp = f(ctx);
    for (size_t i = 0; i < n; i++) x[i] = saved[i] - EPS * v[i];
    double lm = f(ctx);
    memcpy(x, saved, sizeof(float) * n);
    double fd = (lp - lm) / (2.0 * EPS), an = dot(grad, v, n);
    double rel = fabs(fd - an) / fmax(fabs(an), 1e-3);
    EXPECT(rel < TOL, "%s: analytic %.6g vs finite difference %.6g (rel %.2e)", what, an, fd, rel);
    free(v);
    free(saved);
}

/* ---- scan ---------------------------------------------------------------------------------------- */
enum { SB = 2, ST = 70, SE = 19, SN = 19, SLDZ = 23 }; /* T > one 64-step chunk; E, N not multiples of 16 */
static struct {
    float *x, *dt, *bias, *At, *bc, *Dv, *z, *R, *y;
    scan_args s;
} sc;

static double scan_loss(void *unused) {
    cpu_scan_fwd(&sc.s, mat_f32(sc.y, SE), NULL);
    return dot(sc.y, sc.R, (size_t)SB * ST * SE);
}

/* The step of one (sequence, time) row of sc.s as a batch of one: the decode path. */
static scan_args scan_row(const scan_args *s, size_t row) {
    scan_args r = *s;
    r.x.p = mat_f(r.x) + row * SE, r.dt.p = mat_f(r.dt) + row * SE, r.Bm += row * 2 * SN, r.Cm += row * 2 * SN;
    if (r.z.p) r.z.p = mat_f(r.z) + row * SLDZ;
    r.B = r.T = 1;
    return r;
}

/* Backward of sc.s from sc.R into fresh buffers, concatenated: dx, ddt, dB|dC, dA, dD, d(dt bias), dz. */
static float *scan_grads_all(const scan_args *s, size_t nx, size_t nz) {
    const size_t nbc = (size_t)SB * ST * 2 * SN, na = (size_t)SN * SE;
    float *all = xcalloc(2 * nx + nbc + na + 2 * SE + nz, sizeof(float)), *p = all;
    scan_grads g = {.dx = mat_f32(p, SE),
                    .ddt = mat_f32(p + nx, SE),
                    .dBm = mat_f32(p + 2 * nx, 2 * SN),
                    .dCm = mat_f32(p + 2 * nx + SN, 2 * SN),
                    .dAt = p + 2 * nx + nbc,
                    .dDv = p + 2 * nx + nbc + na,
                    .ddt_bias = p + 2 * nx + nbc + na + SE,
                    .dz = mat_f32(p + 2 * nx + nbc + na + 2 * SE, SLDZ)};
    cpu_scan_bwd(s, &g, mat_f32(sc.R, SE));
    return all;
}

/* Training's state checkpoints (scan_args.hk): the forward stores the states at steps 32 and 64 rounded to bf16, and
 * the backward that restarts from them stays within bf16 rounding of the plain one. */
static void test_scan_checkpoints(size_t nx, size_t nz) {
    TEST_BEGIN("scan checkpoints: the forward stores bf16(states every 32 steps); the backward from them within 1e-2");
    const size_t nk = (size_t)SB * SCAN_HK_COUNT(ST) * SN * SE,
                 ng = 2 * nx + (size_t)SB * ST * 2 * SN + (size_t)SN * SE + 2 * SE + nz;
    uint16_t *hk = xmalloc(sizeof(uint16_t) * nk), *want = xmalloc(sizeof(uint16_t) * nk);
    scan_args sk = sc.s;
    sk.hk = hk;
    cpu_scan_fwd(&sk, mat_f32(sc.y, SE), NULL);
    float *h = xcalloc((size_t)SE * SN, sizeof(float)), *y = xmalloc(sizeof(float) * ST * SE);
    const int nj = SCAN_HK_COUNT(ST);
    for (int b = 0; b < SB; b++)
        for (int j = 0; j < nj; j++) { /* the first (j + 1) * 32 steps as a sequence of their own: its final state */
            scan_args r = sc.s;
            const size_t row = (size_t)b * ST;
            r.x.p = mat_f(r.x) + row * SE, r.dt.p = mat_f(r.dt) + row * SE, r.Bm += row * 2 * SN;
            r.Cm += row * 2 * SN, r.z.p = mat_f(r.z) + row * SLDZ;
            r.B = 1, r.T = (j + 1) * SCAN_HK_STEPS;
            memset(h, 0, sizeof(float) * SE * SN);
            cpu_scan_fwd(&r, mat_f32(y, SE), h); /* h [E, N] */
            for (int n = 0; n < SN; n++)
                for (int e = 0; e < SE; e++)
                    host_bf16_from_f32(want + (((size_t)b * nj + j) * SN + n) * SE + e, h + (size_t)e * SN + n, 1);
        }
    EXPECT(!memcmp(hk, want, sizeof(uint16_t) * nk), "the checkpoints are not the rounded states");
    float *plain = scan_grads_all(&sc.s, nx, nz), *from_hk = scan_grads_all(&sk, nx, nz);
    const double e = test_rel_err(from_hk, plain, ng);
    EXPECT(e < 1e-2 && e > 0, "gradients from the checkpoints: rel err %.2e (0: not used)", e);
    printf("  # gradients from the checkpoints: rel err %.1e\n", e);
    free(hk), free(want), free(h), free(y), free(plain), free(from_hk);
    TEST_END();
}

static void test_scan_case(int gated) {
    TEST_BEGIN(gated ? "gated scan_bwd matches finite differences (x, dt, dt bias, A, B, C, D, z)"
                     : "scan_bwd matches finite differences (x, dt, dt bias, A, B, C, D)");
    size_t nx = (size_t)SB * ST * SE, nz = (size_t)SB * ST * SLDZ;
    sc.x = randn(nx, 1), sc.dt = randn(nx, 1), sc.bias = randn(SE, 0.5f), sc.At = randn((size_t)SN * SE, 1);
    sc.bc = randn((size_t)SB * ST * 2 * SN, 1), sc.Dv = randn(SE, 1), sc.z = randn(nz, 1.5f);
    sc.R = randn(nx, 1), sc.y = xmalloc(sizeof(float) * nx);
    for (int i = 0; i < SE; i++) sc.bias[i] -= 1.0f; /* steps softplus(dt + bias) mostly in 0.1 .. 1.5 */
    for (int i = 0; i < SN * SE; i++) sc.At[i] = -0.1f - fabsf(sc.At[i]);
    sc.s = (scan_args){.x = mat_f32(sc.x, SE), .dt = mat_f32(sc.dt, SE), .dt_bias = sc.bias, .At = sc.At,
                       .Bm = sc.bc, .Cm = sc.bc + SN, .ldbc = 2 * SN, .Dv = sc.Dv,
                       .z = gated ? mat_f32(sc.z, SLDZ) : mat_none(), .B = SB, .T = ST, .E = SE, .N = SN};
    float *dx = xmalloc(sizeof(float) * nx), *ddt = xmalloc(sizeof(float) * nx), *out = xmalloc(sizeof(float) * nx);
    float *dbc = xcalloc((size_t)SB * ST * 2 * SN, sizeof(float)), *dAt = xcalloc((size_t)SN * SE, sizeof(float));
    float *dD = xcalloc(SE, sizeof(float)), *dbias = xcalloc(SE, sizeof(float)), *dz = xcalloc(nz, sizeof(float));
    scan_grads g = {.dx = mat_f32(dx, SE), .ddt = mat_f32(ddt, SE), .dBm = mat_f32(dbc, 2 * SN),
                    .dCm = mat_f32(dbc + SN, 2 * SN), .dAt = dAt, .dDv = dD, .ddt_bias = dbias,
                    .dz = mat_f32(dz, SLDZ), .out = gated ? mat_f32(out, SE) : mat_none()};
    cpu_scan_bwd(&sc.s, &g, mat_f32(sc.R, SE));
    check_dir("x", sc.x, nx, dx, scan_loss, NULL);
    check_dir("dt", sc.dt, nx, ddt, scan_loss, NULL);
    check_dir("dt bias", sc.bias, SE, dbias, scan_loss, NULL);
    check_dir("A", sc.At, (size_t)SN * SE, dAt, scan_loss, NULL);
    check_dir("B and C", sc.bc, (size_t)SB * ST * 2 * SN, dbc, scan_loss, NULL);
    check_dir("D", sc.Dv, SE, dD, scan_loss, NULL);
    if (gated) {
        check_dir("z", sc.z, nz, dz, scan_loss, NULL);
        scan_loss(NULL);
        EXPECT(test_rel_err(out, sc.y, nx) < 1e-6, "recomputed output: rel err %.2e", test_rel_err(out, sc.y, nx));
        /* the bf16 outputs are the float32 ones rounded, bitwise */
        uint16_t *want = xmalloc(sizeof(uint16_t) * nx), *o16 = xmalloc(sizeof(uint16_t) * nx);
        host_bf16_from_f32(want, sc.y, nx);
        cpu_scan_fwd(&sc.s, mat_bf16(o16, SE), NULL);
        EXPECT(!memcmp(o16, want, sizeof(uint16_t) * nx), "forward bf16 output differs from the rounded float32 one");
        host_bf16_from_f32(want, out, nx);
        uint16_t *dz16 = xcalloc(nz, sizeof(uint16_t)), *wantz = xcalloc(nz, sizeof(uint16_t));
        for (size_t r = 0; r < (size_t)SB * ST; r++)
            host_bf16_from_f32(wantz + r * SLDZ, dz + r * SLDZ, SE);
        g.out = mat_bf16(o16, SE), g.dz = mat_bf16(dz16, SLDZ);
        cpu_scan_bwd(&sc.s, &g, mat_f32(sc.R, SE));
        EXPECT(!memcmp(o16, want, sizeof(uint16_t) * nx), "backward bf16 output differs from the rounded float32 one");
        EXPECT(!memcmp(dz16, wantz, sizeof(uint16_t) * nz), "bf16 dz differs from the rounded float32 one");
        free(dz16), free(wantz);
        free(want), free(o16);
        /* a bf16 gate (the lean path's xz) gives what the gate widened to float32 gives, bitwise */
        uint16_t *z16 = xmalloc(sizeof(uint16_t) * nz);
        float *zw = xmalloc(sizeof(float) * nz), *y16z = xmalloc(sizeof(float) * nx),
              *ywz = xmalloc(sizeof(float) * nx);
        host_bf16_from_f32(z16, sc.z, nz);
        host_f32_from_bf16(zw, z16, nz);
        scan_args s16 = sc.s, sw = sc.s;
        s16.z = mat_bf16(z16, SLDZ), sw.z = mat_f32(zw, SLDZ);
        cpu_scan_fwd(&s16, mat_f32(y16z, SE), NULL);
        cpu_scan_fwd(&sw, mat_f32(ywz, SE), NULL);
        EXPECT(!memcmp(y16z, ywz, sizeof(float) * nx), "bf16 gate: forward differs");
        free(z16), free(zw), free(y16z), free(ywz);
    }
    TEST_END();

    TEST_BEGIN(gated ? "gated scan_fwd equals the sequential definition, with state carried across calls"
                     : "scan_fwd equals the sequential definition, with state carried across calls");
    float *yref = xmalloc(sizeof(float) * nx), *h = xcalloc((size_t)SB * SE * SN, sizeof(float));
    float *href = xcalloc((size_t)SB * SE * SN, sizeof(float)), *ysplit = xmalloc(sizeof(float) * nx);
    cpu_scan_fwd_ref(&sc.s, yref, href);
    cpu_scan_fwd(&sc.s, mat_f32(sc.y, SE), NULL);
    EXPECT(test_rel_err(sc.y, yref, nx) < 1e-6, "whole sequence: rel err %.2e", test_rel_err(sc.y, yref, nx));
    /* one time step at a time, batch by batch, carrying h: the decode path */
    for (int b = 0; b < SB; b++)
        for (int t = 0; t < ST; t++) {
            size_t row = (size_t)b * ST + t;
            scan_args r = scan_row(&sc.s, row);
            cpu_scan_fwd(&r, mat_f32(ysplit + row * SE, SE), h + (size_t)b * SE * SN);
        }
    EXPECT(test_rel_err(ysplit, yref, nx) < 1e-6, "stepwise: rel err %.2e", test_rel_err(ysplit, yref, nx));
    EXPECT(test_rel_err(h, href, (size_t)SB * SE * SN) < 1e-6, "final state: rel err %.2e",
           test_rel_err(h, href, (size_t)SB * SE * SN));
    TEST_END();
    if (gated) test_scan_checkpoints(nx, nz);
    free(sc.x), free(sc.dt), free(sc.bias), free(sc.At), free(sc.bc), free(sc.Dv), free(sc.z), free(sc.R);
    free(sc.y), free(dx), free(ddt), free(out), free(dbc), free(dAt), free(dD), free(dbias), free(dz), free(yref);
    free(h), free(href), free(ysplit);
}

static void test_scan(void) {
    test_scan_case(0);
    test_scan_case(1);
}

/* ---- conv1d + silu -------------------------------------------------------------------------------- */
enum { CB = 2, CT = 9, CC = 5, CK = 4, CLD = 7 };
static struct {
    float *x, *w, *b, *R, *out;
} cv;

static double conv_loss(void *unused) {
    cpu_conv1d_silu_fwd(mat_f32(cv.out, CC), mat_f32(cv.x, CLD), NULL, cv.w, cv.b, CB, CT, CC, CK);
    return dot(cv.out, cv.R, (size_t)CB * CT * CC);
}

static void test_conv(void) {
    TEST_BEGIN("conv1d_silu_bwd matches finite differences (x, weight, bias)");
    size_t n = (size_t)CB * CT * CC;
    cv.x = randn((size_t)CB * CT * CLD, 1), cv.w = randn(CC * CK, 0.5f), cv.b = randn(CC, 0.5f), cv.R = randn(n, 1);
    cv.out = xmalloc(sizeof(float) * n);
    float *dx = xcalloc((size_t)CB * CT * CLD, sizeof(float)), *dw = xcalloc(CC * CK, sizeof(float));
    float *db = xcalloc(CC, sizeof(float));
    conv_loss(NULL);
    cpu_conv1d_silu_bwd(mat_f32(dx, CLD), dw, db, mat_f32(cv.R, CC), mat_f32(cv.x, CLD), cv.w, cv.b, CB, CT, CC, CK);
    check_dir("x", cv.x, (size_t)CB * CT * CLD, dx, conv_loss, NULL);
    check_dir("weight", cv.w, CC * CK, dw, conv_loss, NULL);
    check_dir("bias", cv.b, CC, db, conv_loss, NULL);
    TEST_END();

    TEST_BEGIN("conv1d with a carried state equals the whole sequence");
    float *st = xcalloc((size_t)CB * CC * (CK - 1), sizeof(float));
    float *out1 = xmalloc(sizeof(float) * n), *piece = xmalloc(sizeof(float) * n);
    cpu_conv1d_silu_fwd(mat_f32(out1, CC), mat_f32(cv.x, CLD), NULL, cv.w, cv.b, CB, CT, CC, CK);
    for (int b = 0; b < CB; b++)
        for (int t = 0; t < CT; t += 2) { /* pieces of 2 steps (and a last one of 1) */
            int len = imin(2, CT - t);
            const float *xs = cv.x + ((size_t)b * CT + t) * CLD;
            cpu_conv1d_silu_fwd(mat_f32(piece + ((size_t)b * CT + t) * CC, CC), mat_f32(xs, CLD),
                                st + (size_t)b * CC * (CK - 1), cv.w, cv.b, 1, len, CC, CK);
            cpu_conv1d_state_update(st + (size_t)b * CC * (CK - 1), xs, CLD, 1, len, CC, CK);
        }
    EXPECT(test_rel_err(piece, out1, n) == 0, "rel err %.2e", test_rel_err(piece, out1, n));
    TEST_END();

    TEST_BEGIN("conv1d with a bf16 input equals it on the input widened to float32 (forward and backward, bitwise)");
    const size_t nxx = (size_t)CB * CT * CLD;
    uint16_t *x16 = xmalloc(sizeof(uint16_t) * nxx);
    float *xw = xmalloc(sizeof(float) * nxx), *o16 = xmalloc(sizeof(float) * n), *ow = xmalloc(sizeof(float) * n);
    host_bf16_from_f32(x16, cv.x, nxx);
    host_f32_from_bf16(xw, x16, nxx);
    cpu_conv1d_silu_fwd(mat_f32(o16, CC), mat_bf16(x16, CLD), NULL, cv.w, cv.b, CB, CT, CC, CK);
    cpu_conv1d_silu_fwd(mat_f32(ow, CC), mat_f32(xw, CLD), NULL, cv.w, cv.b, CB, CT, CC, CK);
    EXPECT(!memcmp(o16, ow, sizeof(float) * n), "forward differs");
    uint16_t *ob16 = xmalloc(sizeof(uint16_t) * n), *obw = xmalloc(sizeof(uint16_t) * n);
    cpu_conv1d_silu_fwd(mat_bf16(ob16, CC), mat_bf16(x16, CLD), NULL, cv.w, cv.b, CB, CT, CC, CK);
    host_bf16_from_f32(obw, ow, n);
    EXPECT(!memcmp(ob16, obw, sizeof(uint16_t) * n), "the bf16 output is not the float32 one rounded");
    free(ob16), free(obw);
    float *dx16 = xcalloc(nxx, sizeof(float)), *dxw = xcalloc(nxx, sizeof(float));
    float *dw16 = xcalloc(CC * CK, sizeof(float)), *dww = xcalloc(CC * CK, sizeof(float));
    float *db16 = xcalloc(CC, sizeof(float)), *dbw = xcalloc(CC, sizeof(float));
    cpu_conv1d_silu_bwd(mat_f32(dx16, CLD), dw16, db16, mat_f32(cv.R, CC), mat_bf16(x16, CLD), cv.w, cv.b, CB, CT, CC,
                        CK);
    cpu_conv1d_silu_bwd(mat_f32(dxw, CLD), dww, dbw, mat_f32(cv.R, CC), mat_f32(xw, CLD), cv.w, cv.b, CB, CT, CC, CK);
    EXPECT(!memcmp(dx16, dxw, sizeof(float) * nxx) && !memcmp(dw16, dww, sizeof(float) * CC * CK) &&
               !memcmp(db16, dbw, sizeof(float) * CC),
           "backward differs");
    /* dx in bf16: the float32 dx rounded */
    uint16_t *gx16 = xcalloc(nxx, sizeof(uint16_t)), *want = xcalloc(nxx, sizeof(uint16_t));
    cpu_conv1d_silu_bwd(mat_bf16(gx16, CLD), dww, dbw, mat_f32(cv.R, CC), mat_f32(xw, CLD), cv.w, cv.b, CB, CT, CC, CK);
    for (size_t r = 0; r < (size_t)CB * CT; r++)
        host_bf16_from_f32(want + r * CLD, dxw + r * CLD, CC);
    EXPECT(!memcmp(gx16, want, sizeof(uint16_t) * nxx), "bf16 dx is not the float32 one rounded");
    free(gx16), free(want);
    free(x16), free(xw), free(o16), free(ow), free(dx16), free(dxw), free(dw16), free(dww), free(db16), free(dbw);
    TEST_END();
}

/* ---- rmsnorm, softplus, gate, cross-entropy ------------------------------------------------------- */
enum { RR = 6, RD = 11 };
static struct {
    float *x, *w, *R, *y, *rstd;
} rn;

static double rms_loss(void *u) {
    cpu_rmsnorm_fwd(mat_f32(rn.y, RD), rn.rstd, rn.x, rn.w, RR, RD, 1e-5f);
    return dot(rn.y, rn.R, RR * RD);
}

static struct {
    float *logits;
    int targets[RR];
} xe;

static double xent_loss(void *u) {
    double s;
    int n;
    cpu_xent_fwd_bwd(&s, &n, NULL, xe.logits, xe.targets, RR, RD, 0);
    return s / n;
}

static void test_small_ops(void) {
    TEST_BEGIN("rmsnorm_bwd matches finite differences (x, weight)");
    rn.x = randn(RR * RD, 1), rn.w = randn(RD, 1), rn.R = randn(RR * RD, 1);
    rn.y = xmalloc(sizeof(float) * RR * RD), rn.rstd = xmalloc(sizeof(float) * RR);
    float *dx = xcalloc(RR * RD, sizeof(float)), *dw = xcalloc(RD, sizeof(float));
    rms_loss(NULL);
    cpu_rmsnorm_bwd(dx, NULL, dw, mat_f32(rn.R, RD), rn.x, rn.w, rn.rstd, RR, RD, 0);
    check_dir("x", rn.x, RR * RD, dx, rms_loss, NULL);
    check_dir("weight", rn.w, RD, dw, rms_loss, NULL);
    TEST_END();

    TEST_BEGIN("cross-entropy gradient matches finite differences");
    xe.logits = randn(RR * RD, 2);
    for (int r = 0; r < RR; r++) xe.targets[r] = (r * 5) % RD;
    float *dl = xmalloc(sizeof(float) * RR * RD);
    double s;
    int n;
    cpu_xent_fwd_bwd(&s, &n, dl, xe.logits, xe.targets, RR, RD, 1.0f / RR);
    check_dir("logits", xe.logits, RR * RD, dl, xent_loss, NULL);
    TEST_END();
}


/* ---- SwiGLU, rotary positions, attention ------------------------------------------------------------ */
enum { GR = 7, GI = 13, GLD = 2 * GI + 3 };
static struct {
    float *gu, *R, *h;
} sw;

static double swiglu_loss(void *u) {
    cpu_swiglu_fwd(mat_f32(sw.h, GI), mat_f32(sw.gu, GLD), GR, GI);
    return dot(sw.h, sw.R, GR * GI);
}

/* relu2 on the first GI columns of gu's rows (ld GLD) */
static double relu2_loss(void *u) {
    cpu_relu2_fwd(mat_f32(sw.h, GI), mat_f32(sw.gu, GLD), GR, GI);
    return dot(sw.h, sw.R, GR * GI);
}

/* attention over AB sequences of AT positions: AH query heads in groups over AKV key/value heads of AHD, the q | k | v
 * rows of AW columns (as the mixer has them) */
enum { AB = 2, AT = 11, AH = 4, AKV = 2, AHD = 6, AW = (AH + 2 * AKV) * AHD + 1 };
static struct {
    float *qkv, *R, *o, *lse;
    int window;
} at;

static attn_args attn_of(void) {
    return (attn_args){.q = mat_f32(at.qkv, AW), .k = mat_f32(at.qkv + AH * AHD, AW),
                       .v = mat_f32(at.qkv + (AH + AKV) * AHD, AW), .kv_bstride = (size_t)AT * AW, .lse = at.lse,
                       .B = AB, .T = AT, .H = AH, .KV = AKV, .hd = AHD, .window = at.window};
}

static double attn_loss(void *u) {
    const attn_args a = attn_of();
    cpu_attn_fwd(&a, mat_f32(at.o, AH * AHD));
    return dot(at.o, at.R, (size_t)AB * AT * AH * AHD);
}

/* rope then the loss on the rotated rows (all AW columns: the last one is not a head's and stays) */
static double rope_loss(void *u) {
    float *x = xmalloc(sizeof(float) * AB * AT * AW);
    memcpy(x, at.qkv, sizeof(float) * AB * AT * AW);
    cpu_rope(mat_f32(x, AW), NULL, AB, AT, AH + AKV, AHD, 100.0f, 0);
    double l = dot(x, at.R, (size_t)AB * AT * AW);
    free(x);
    return l;
}

/* The tiled attention's promise (attention_tiled.c): the same bits at any thread count. Shapes over several tiles;
 * B * KV 1 and 2 split the backward's query blocks into parts, 8 does not. */
static void test_attention_threads(void) {
    TEST_BEGIN("attn_fwd, attn_bwd: the same bits at 1, 2 and 3 threads (several tiles, a window, parts)");
    const int shapes[][6] = {{1, 300, 4, 1, 64, 0}, {2, 200, 4, 1, 32, 70}, {2, 150, 8, 4, 16, 0}};
    for (int i = 0; i < 3; i++) {
        const int B = shapes[i][0], T = shapes[i][1], H = shapes[i][2], KV = shapes[i][3], hd = shapes[i][4];
        const int W = (H + 2 * KV) * hd, qd = H * hd;
        const size_t rows = (size_t)B * T;
        float *qkv = xmalloc(sizeof(float) * rows * W), *dout = xmalloc(sizeof(float) * rows * qd), *out[3];
        /* a generator of its own: the tests after this one keep their draws from the shared one */
        rng_t own = {7};
        for (size_t j = 0; j < rows * W; j++) qkv[j] = rng_normal(&own);
        for (size_t j = 0; j < rows * qd; j++) dout[j] = rng_normal(&own);
        const attn_args a = {.q = mat_f32(qkv, W), .k = mat_f32(qkv + qd, W), .v = mat_f32(qkv + qd + KV * hd, W),
                             .kv_bstride = (size_t)T * W, .lse = xmalloc(sizeof(float) * B * H * T), .B = B, .T = T,
                             .H = H, .KV = KV, .hd = hd, .window = shapes[i][5]};
        const int saved = omp_get_max_threads();
        for (int n = 1; n <= 3; n++) { /* o | dq | dk | dv */
            omp_set_num_threads(n);
            float *r = out[n - 1] = xmalloc(sizeof(float) * rows * (qd + W));
            cpu_attn_fwd(&a, mat_f32(r, qd));
            cpu_attn_bwd(&a, mat_f32(r, qd), mat_f32(dout, qd), mat_f32(r + rows * qd, W),
                         mat_f32(r + rows * qd + qd, W), mat_f32(r + rows * qd + qd + KV * hd, W));
        }
        omp_set_num_threads(saved);
        for (int n = 2; n <= 3; n++)
            EXPECT(!memcmp(out[0], out[n - 1], sizeof(float) * rows * (qd + W)), "B %d T %d H %d KV %d: %d threads differ",
                   B, T, H, KV, n);
        free(qkv), free(dout), free(a.lse), free(out[0]), free(out[1]), free(out[2]);
    }
    TEST_END();
}

static void test_attention_ops(void) {
    TEST_BEGIN("swiglu_bwd matches finite differences (gate | up)");
    sw.gu = randn((size_t)GR * GLD, 1.5f), sw.R = randn(GR * GI, 1), sw.h = xmalloc(sizeof(float) * GR * GI);
    float *dgu = xcalloc((size_t)GR * GLD, sizeof(float));
    swiglu_loss(NULL);
    cpu_swiglu_bwd(mat_f32(dgu, GLD), mat_f32(sw.R, GI), mat_f32(sw.gu, GLD), GR, GI);
    for (int r = 0; r < GR; r++) dgu[r * GLD + 2 * GI] = dgu[r * GLD + 2 * GI + 1] = dgu[r * GLD + 2 * GI + 2] = 0;
    check_dir("gu", sw.gu, (size_t)GR * GLD, dgu, swiglu_loss, NULL);
    free(sw.gu), free(sw.R), free(sw.h), free(dgu);
    TEST_END();


    const size_t nq = (size_t)AB * AT * AW, no = (size_t)AB * AT * AH * AHD;
    TEST_BEGIN("rope's inverse is its transpose (the backward), and a position offset composes");
    at.qkv = randn(nq, 1), at.R = randn(nq, 1);
    float *g = xmalloc(sizeof(float) * nq);
    memcpy(g, at.R, sizeof(float) * nq);
    cpu_rope(mat_f32(g, AW), NULL, AB, AT, AH + AKV, AHD, 100.0f, 1);
    check_dir("x", at.qkv, nq, g, rope_loss, NULL);
    /* rows at positions pos[b] + t equal those of a longer run at t + pos[b] */
    const int pos[AB] = {3, 5};
    float *a = xmalloc(sizeof(float) * AT * AW), *b = xmalloc(sizeof(float) * (AT + 5) * AW);
    for (int s = 0; s < AB; s++) {
        memcpy(a, at.qkv, sizeof(float) * AT * AW);
        for (int t = 0; t < AT + 5; t++) memcpy(b + (size_t)t * AW, at.qkv + (size_t)(t % AT) * AW, sizeof(float) * AW);
        for (int t = 0; t < AT; t++) memcpy(b + (size_t)(t + pos[s]) * AW, a + (size_t)t * AW, sizeof(float) * AW);
        cpu_rope(mat_f32(a, AW), pos + s, 1, AT, AH + AKV, AHD, 100.0f, 0);
        cpu_rope(mat_f32(b, AW), NULL, 1, AT + 5, AH + AKV, AHD, 100.0f, 0);
        EXPECT(test_rel_err(a, b + (size_t)pos[s] * AW, (size_t)AT * AW) < 1e-6, "offset %d: rel err %.2e", pos[s],
               test_rel_err(a, b + (size_t)pos[s] * AW, (size_t)AT * AW));
    }
    free(a), free(b), free(g), free(at.qkv), free(at.R);
    TEST_END();

    for (int window = 0; window <= 4; window += 4) {
        char name[128];
        snprintf(name, sizeof name, "attn_bwd matches finite differences (q, k, v; %d query heads on %d kv heads%s)",
                 AH, AKV, window ? ", sliding window 4" : "");
        TEST_BEGIN(name);
        at.window = window;
        at.qkv = randn(nq, 1), at.R = randn(no, 1);
        at.o = xmalloc(sizeof(float) * no), at.lse = xmalloc(sizeof(float) * AB * AH * AT);
        float *dqkv = xcalloc(nq, sizeof(float));
        attn_loss(NULL);
        const attn_args aa = attn_of();
        cpu_attn_bwd(&aa, mat_f32(at.o, AH * AHD), mat_f32(at.R, AH * AHD), mat_f32(dqkv, AW),
                     mat_f32(dqkv + AH * AHD, AW), mat_f32(dqkv + (AH + AKV) * AHD, AW));
        check_dir("q | k | v", at.qkv, nq, dqkv, attn_loss, NULL);
        attn_loss(NULL); /* o again, of the unperturbed inputs */
        /* the same attention read from a cache holding the keys (nk: the queries are the last AT positions) */
        const size_t nc = (size_t)AB * (AT + 3) * AKV * AHD;
        float *kc = xcalloc(nc, sizeof(float)), *vc = xcalloc(nc, sizeof(float));
        float *oc = xmalloc(sizeof(float) * no);
        int nk[AB] = {0, 0};
        cpu_kv_append(kc, vc, nk, mat_f(aa.k), mat_f(aa.v), AW, AB, AT, AT + 3, AKV * AHD);
        EXPECT(nk[0] == AT && nk[1] == AT, "kv_append left positions %d, %d", nk[0], nk[1]);
        attn_args ac = aa;
        ac.k = mat_f32(kc, AKV * AHD), ac.v = mat_f32(vc, AKV * AHD);
        ac.kv_bstride = (size_t)(AT + 3) * AKV * AHD, ac.nk = nk;
        ac.lse = NULL;
        cpu_attn_fwd(&ac, mat_f32(oc, AH * AHD));
        EXPECT(test_rel_err(oc, at.o, no) == 0, "from the cache: rel err %.2e", test_rel_err(oc, at.o, no));
        free(kc), free(vc), free(oc);
        free(at.qkv), free(at.R), free(at.o), free(at.lse), free(dqkv);
        TEST_END();
    }
    test_attention_threads();
}

/* ---- Mamba-2: the SSD and the gated RMSNorm ------------------------------------------------------------------ */
/* DB sequences of DT positions (not a multiple of the chunk), DH heads of DP in DG groups of DN states */
enum { DB = 2, DT = 29, DH = 4, DP = 3, DN = 5, DG = 2, DLD = DH * DP + 2 * DG * DN + 1, DLDT = DH + 2 };
static struct {
    float *xbc, *dt, *bias, *A_log, *Dv, *R, *y;
    ssd_args s;
} sd;

static double ssd_loss(void *u) {
    cpu_ssd_fwd_f32(&sd.s, sd.y, NULL);
    return dot(sd.y, sd.R, (size_t)DB * DT * DH * DP);
}

static void test_ssd(void) {
    const size_t rows = (size_t)DB * DT, ny = rows * DH * DP;
    for (int lim = 0; lim <= 1; lim++) {
        TEST_BEGIN(lim ? "ssd_bwd matches finite differences, with a dt limit (x, B, C, dt, dt_bias, A_log, D)"
                       : "ssd_bwd matches finite differences (x, B, C, dt, dt_bias, A_log, D; groups, chunk 8)");
        sd.xbc = randn(rows * DLD, 1), sd.dt = randn(rows * DLDT, 1), sd.bias = randn(DH, 0.5f);
        sd.A_log = randn(DH, 0.5f), sd.Dv = randn(DH, 1), sd.R = randn(ny, 1), sd.y = xmalloc(sizeof(float) * ny);
        sd.s = (ssd_args){.x = sd.xbc, .Bm = sd.xbc + DH * DP, .Cm = sd.xbc + DH * DP + DG * DN, .ldx = DLD,
                          .dt = sd.dt, .lddt = DLDT, .dt_bias = sd.bias, .A_log = sd.A_log, .Dv = sd.Dv,
                          .dt_min = lim ? 0.3f : 0.0f, .dt_max = lim ? 1.5f : INFINITY, .B = DB, .T = DT, .H = DH,
                          .P = DP, .N = DN, .G = DG, .chunk = 8};
        float *dxbc = xcalloc(rows * DLD, sizeof(float)), *ddt = xcalloc(rows * DLDT, sizeof(float));
        float *dA = xcalloc(DH, sizeof(float)), *dbias = xcalloc(DH, sizeof(float)), *dD = xcalloc(DH, sizeof(float));
        const ssd_grads g = {.dx = dxbc, .dBm = dxbc + DH * DP, .dCm = dxbc + DH * DP + DG * DN, .ldd = DLD,
                             .ddt = ddt, .ldddt = DLDT, .dA_log = dA, .ddt_bias = dbias, .dDv = dD};
        cpu_ssd_bwd(&sd.s, &g, sd.R);
        for (size_t r = 0; r < rows; r++) { /* the padding columns carry no gradient */
            dxbc[r * DLD + DLD - 1] = 0;
            for (int c = DH; c < DLDT; c++) ddt[r * DLDT + c] = 0;
        }
        check_dir("x | B | C", sd.xbc, rows * DLD, dxbc, ssd_loss, NULL);
        check_dir("dt", sd.dt, rows * DLDT, ddt, ssd_loss, NULL);
        check_dir("dt_bias", sd.bias, DH, dbias, ssd_loss, NULL);
        check_dir("A_log", sd.A_log, DH, dA, ssd_loss, NULL);
        check_dir("D", sd.Dv, DH, dD, ssd_loss, NULL);
        free(dxbc), free(ddt), free(dA), free(dbias), free(dD);
        TEST_END();
        if (lim) break;

        TEST_BEGIN("ssd_fwd (chunked) equals the sequential recurrence: chunks 1..64, lengths not their multiples, "
                   "a carried state, and the decode step");
        float *yref = xmalloc(sizeof(float) * ny), *href = xcalloc((size_t)DB * DH * DP * DN, sizeof(float));
        float *h = xmalloc(sizeof(float) * DB * DH * DP * DN);
        const size_t nh = (size_t)DB * DH * DP * DN;
        for (size_t i = 0; i < nh; i++) href[i] = 0.3f * rng_normal(&rng);
        memcpy(h, href, sizeof(float) * nh);
        float *hstart = xmalloc(sizeof(float) * nh);
        memcpy(hstart, href, sizeof(float) * nh);
        cpu_ssd_fwd_ref(&sd.s, yref, href);
        for (int chunk = 1; chunk <= 64; chunk *= 2) {
            sd.s.chunk = chunk;
            memcpy(h, hstart, sizeof(float) * nh);
            cpu_ssd_fwd_f32(&sd.s, sd.y, h);
            EXPECT(test_rel_err(sd.y, yref, ny) < 1e-5, "chunk %d: y rel err %.2e", chunk, test_rel_err(sd.y, yref, ny));
            EXPECT(test_rel_err(h, href, nh) < 1e-5, "chunk %d: state rel err %.2e", chunk, test_rel_err(h, href, nh));
        }
        /* the same sequence one position at a time through ssd_step (each sequence's row at b*T + t) */
        memcpy(h, hstart, sizeof(float) * nh);
        float *ystep = xmalloc(sizeof(float) * ny), *row = xmalloc(sizeof(float) * DB * DLD);
        float *dtrow = xmalloc(sizeof(float) * DB * DLDT), *yrow = xmalloc(sizeof(float) * DB * DH * DP);
        for (int t = 0; t < DT; t++) {
            for (int b = 0; b < DB; b++) {
                memcpy(row + (size_t)b * DLD, sd.xbc + ((size_t)b * DT + t) * DLD, sizeof(float) * DLD);
                memcpy(dtrow + (size_t)b * DLDT, sd.dt + ((size_t)b * DT + t) * DLDT, sizeof(float) * DLDT);
            }
            ssd_args one = sd.s;
            one.x = row, one.Bm = row + DH * DP, one.Cm = row + DH * DP + DG * DN, one.dt = dtrow, one.T = 1;
            cpu_ssd_step(&one, yrow, h);
            for (int b = 0; b < DB; b++)
                memcpy(ystep + ((size_t)b * DT + t) * DH * DP, yrow + (size_t)b * DH * DP, sizeof(float) * DH * DP);
        }
        EXPECT(test_rel_err(ystep, yref, ny) < 1e-5, "steps: y rel err %.2e", test_rel_err(ystep, yref, ny));
        EXPECT(test_rel_err(h, href, nh) < 1e-5, "steps: state rel err %.2e", test_rel_err(h, href, nh));
        free(yref), free(href), free(h), free(hstart), free(ystep), free(row), free(dtrow), free(yrow);
        TEST_END();

        TEST_BEGIN("ssd_bwd (chunked) equals the sequential reverse recurrence: chunks 1..64, lengths not their "
                   "multiples, groups, a dt limit");
        const size_t nx = rows * DLD, nt = rows * DLDT;
        float *gx[2], *gt[2], *gh[2]; /* [0] the reference, [1] the chunked; gh: dA_log | dt_bias | D */
        for (int k = 0; k < 2; k++)
            gx[k] = xmalloc(sizeof(float) * nx), gt[k] = xmalloc(sizeof(float) * nt), gh[k] = xmalloc(sizeof(float) * 3 * DH);
        for (int l = 0; l <= 1; l++) {
            sd.s.dt_min = l ? 0.3f : 0.0f, sd.s.dt_max = l ? 1.5f : INFINITY;
            for (int chunk = 1; chunk <= 64; chunk *= 2) {
                sd.s.chunk = chunk;
                for (int k = 0; k < 2; k++) {
                    memset(gx[k], 0, sizeof(float) * nx), memset(gt[k], 0, sizeof(float) * nt);
                    for (int i = 0; i < 3 * DH; i++) gh[k][i] = 0.25f; /* the += ones accumulate */
                    const ssd_grads gk = {.dx = gx[k], .dBm = gx[k] + DH * DP, .dCm = gx[k] + DH * DP + DG * DN,
                                         .ldd = DLD, .ddt = gt[k], .ldddt = DLDT, .dA_log = gh[k],
                                         .ddt_bias = gh[k] + DH, .dDv = gh[k] + 2 * DH};
                    (k ? cpu_ssd_bwd : cpu_ssd_bwd_ref)(&sd.s, &gk, sd.R);
                }
                const double ex = test_rel_err(gx[1], gx[0], nx), et = test_rel_err(gt[1], gt[0], nt);
                const double eh = test_rel_err(gh[1], gh[0], 3 * DH);
                EXPECT(ex < 1e-5 && et < 1e-5 && eh < 1e-5, "chunk %d%s: rel err x|B|C %.2e, dt %.2e, A_log|bias|D %.2e",
                       chunk, l ? " dt limit" : "", ex, et, eh);
            }
        }
        for (int k = 0; k < 2; k++) free(gx[k]), free(gt[k]), free(gh[k]);
        free(sd.xbc), free(sd.dt), free(sd.bias), free(sd.A_log), free(sd.Dv), free(sd.R), free(sd.y);
        TEST_END();
    }
}

enum { NR = 5, ND = 12, NG = 3, NLDZ = 15 };
static struct {
    float *y, *z, *w, *R, *out;
} gn;

static double gated_norm_loss(void *u) {
    cpu_gated_rmsnorm_fwd(mat_f32(gn.out, ND), mat_f32(gn.y, ND), mat_f32(gn.z, NLDZ), gn.w, NR, ND, NG, 1e-5f);
    return dot(gn.out, gn.R, NR * ND);
}

static void test_gated_norm(void) {
    TEST_BEGIN("gated_rmsnorm_bwd matches finite differences (y, z, weight; 3 groups)");
    gn.y = randn(NR * ND, 1), gn.z = randn(NR * NLDZ, 1.5f), gn.w = randn(ND, 1), gn.R = randn(NR * ND, 1);
    gn.out = xmalloc(sizeof(float) * NR * ND);
    float *dy = xcalloc(NR * ND, sizeof(float)), *dz = xcalloc(NR * NLDZ, sizeof(float)), *dw = xcalloc(ND, sizeof(float));
    cpu_gated_rmsnorm_bwd(dy, mat_f32(dz, NLDZ), dw, gn.R, mat_f32(gn.y, ND), mat_f32(gn.z, NLDZ), gn.w, NR, ND, NG,
                          1e-5f);
    for (int r = 0; r < NR; r++) dz[r * NLDZ + 12] = dz[r * NLDZ + 13] = dz[r * NLDZ + 14] = 0;
    check_dir("y", gn.y, NR * ND, dy, gated_norm_loss, NULL);
    check_dir("z", gn.z, NR * NLDZ, dz, gated_norm_loss, NULL);
    check_dir("weight", gn.w, ND, dw, gated_norm_loss, NULL);
    free(gn.y), free(gn.z), free(gn.w), free(gn.R), free(gn.out), free(dy), free(dz), free(dw);
    TEST_END();
}

/* ---- whole model ----------------------------------------------------------------------------------- */
static struct {
    ssm_model *m;
    int tokens[2 * 33], targets[2 * 33];
} md;

static double model_loss(void *u) { return model_train_forward(md.m, md.tokens, md.targets, 2, 33); }

/* masked: two targets of three -1 (as a task's non-answers, or filler): the gradient of the mean
 * over the counted ones */
static int md_nemotron; /* NemotronH's layer forms: attention without rotary positions, the relu2 MLP */

static void test_model_masked(int use_bias, int use_conv_bias, int tie, const char *pattern, int masked) {
    char name[240];
    snprintf(name, sizeof name, "whole-model gradient of every parameter tensor matches finite differences "
             "(layers \"%s\", use_bias %d, use_conv_bias %d, tied head %d%s%s)", pattern, use_bias, use_conv_bias, tie,
             masked ? ", 22 of 66 targets counted" : "", md_nemotron ? ", no rope, relu2 MLP" : "");
    TEST_BEGIN(name);
    ssm_config c;
    ssm_config_default(&c);
    c.d_model = 12, c.n_layer = (int)strlen(pattern) > 2 ? (int)strlen(pattern) : 2, c.mamba1.d_state = 4;
    c.vocab_size = 20;
    c.mamba1.use_bias = use_bias, c.mamba1.use_conv_bias = use_conv_bias, c.tie_embeddings = tie;
    strcpy(c.layer_pattern, pattern);
    c.attention.n_heads = 4, c.attention.n_kv_heads = 2, c.attention.head_dim = 4, c.attention.sliding_window = 20;
    c.mlp.intermediate_size = 20;
    c.mamba2.d_state = 5, c.mamba2.head_dim = 6, c.mamba2.n_groups = 2, c.mamba2.chunk_size = 8; /* 4 heads */
    c.mamba2.use_bias = use_bias, c.mamba2.use_conv_bias = use_conv_bias;
    if (md_nemotron) c.attention.rope_theta = 0.0f, c.attention.sliding_window = 0, c.mlp.hidden_act = SSM_MLP_RELU2;
    md.m = ssm_model_new(&c, 7);
    CHECK(md.m, "test_grad: %s", ssm_last_error());
    for (size_t i = 0; i < md.m->layout.total; i++) md.m->w[i] += 0.05f * rng_normal(&rng); /* off the init */
    for (int i = 0; i < 2 * 33; i++) {
        md.tokens[i] = (int)(rng_next(&rng) % 20), md.targets[i] = (int)(rng_next(&rng) % 20);
        if (masked && i % 3 != 1) md.targets[i] = -1;
    }
    model_zero_grad(md.m);
    model_loss(NULL);
    model_train_backward(md.m, 1.0f);
    for (int i = 0; i < md.m->layout.n; i++) {
        const param_info *p = &md.m->layout.items[i];
        check_dir(p->name, md.m->w + p->offset, p->numel, md.m->dw + p->offset, model_loss, NULL);
    }
    ssm_model_free(md.m);
    TEST_END();
}

static void test_model(int use_bias, int use_conv_bias, int tie, const char *pattern) {
    test_model_masked(use_bias, use_conv_bias, tie, pattern, 0);
}

/* Last in main: its draws from the shared generator would move every later test's inputs. */
static void test_relu2(void) {
    float *dgu;
    TEST_BEGIN("relu2_bwd matches finite differences, and in place (du = dh) gives the same");
    sw.gu = randn((size_t)GR * GLD, 1.5f), sw.R = randn(GR * GI, 1), sw.h = xmalloc(sizeof(float) * GR * GI);
    for (size_t i = 0; i < (size_t)GR * GLD; i++) /* off the kink at 0, where the finite difference is one-sided */
        if (fabsf(sw.gu[i]) < 0.05f) sw.gu[i] = 0.3f;
    dgu = xcalloc((size_t)GR * GLD, sizeof(float));
    relu2_loss(NULL);
    cpu_relu2_bwd(mat_f32(dgu, GLD), mat_f32(sw.R, GI), mat_f32(sw.gu, GLD), GR, GI);
    check_dir("u", sw.gu, (size_t)GR * GLD, dgu, relu2_loss, NULL);
    float *inplace = xmalloc(sizeof(float) * GR * GI);
    memcpy(inplace, sw.R, sizeof(float) * GR * GI);
    cpu_relu2_bwd(mat_f32(inplace, GI), mat_f32(inplace, GI), mat_f32(sw.gu, GLD), GR, GI);
    for (int r = 0; r < GR; r++)
        for (int i = 0; i < GI; i++) EXPECT(inplace[r * GI + i] == dgu[r * GLD + i], "in place differs at %d, %d", r, i);
    free(sw.gu), free(sw.R), free(sw.h), free(dgu), free(inplace);
    TEST_END();
}

int main(void) {
    test_scan();
    test_conv();
    test_small_ops();
    test_attention_ops();
    test_model(0, 1, 1, "m");
    test_model(1, 0, 0, "m");
    test_model(0, 1, 1, "maf"); /* a hybrid: GQA attention with a window shorter than the sequence, SwiGLU */
    test_model_masked(0, 1, 1, "ma", 1); /* the loss of a task or of filler: a mean over the counted targets */
    test_ssd();
    test_gated_norm();
    test_model(0, 1, 1, "M"); /* Mamba-2: 4 heads in 2 groups, chunks of 8 over 33 positions */
    test_model(1, 0, 0, "M");
    test_model(0, 1, 1, "Maf");
    md_nemotron = 1; /* NemotronH's M, *, - layers */
    test_model(0, 1, 0, "Maf");
    md_nemotron = 0;
    test_relu2();
    return test_failures ? 1 : 0;
}
