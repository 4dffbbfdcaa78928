/* The CUDA selective scan against the CPU one (src/backend/cpu/scan.c, itself tested against the
 * sequential recurrence and finite differences): forward with a carried state, backward, with and without
 * the gate (the dt softplus always), for state
 * sizes odd and even up to 32, lengths shorter than one chunk, ending mid-chunk and spanning many
 * chunks, and channel counts that end mid-block; and bitwise determinism of both passes (two runs,
 * memcmp). Prints "skip - ..." without a GPU. */
#include "common.h"
#include "backend/cpu/cpu_ops.h"
#include "ops/ops_cuda.h"
#include "test.h"
#include "gpu/gpu_test.h"

#include <cuda_runtime.h>
#include <string.h>

static rng_t rng = {2024};

static float *host_randn(size_t n, float scale, float offset) {
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = offset + scale * rng_normal(&rng);
    return p;
}



/* One case: CPU and GPU from the same random inputs; gated: with a strided gate z (as in a layer's xz) and the
 * recomputed output. */
/* The backward's outputs: device buffers (downloaded) against the CPU's, each within 1e-5 relative; NULL pairs are
 * skipped (outputs written in bf16, compared apart). ns: their sizes (dx, ddt, dB|dC, dA, dD, d(dt bias), dz). */
typedef struct {
    const float *dx, *ddt, *dbc, *dA, *dD, *db, *dz;
} bwd_outs;
static void expect_bwd(const char *what, bwd_outs got_dev, bwd_outs want, const size_t ns[7]) {
    const char *names[7] = {"dx", "ddt", "dB, dC", "dA", "dD", "d(dt bias)", "dz"};
    const float *g[7] = {got_dev.dx, got_dev.ddt, got_dev.dbc, got_dev.dA, got_dev.dD, got_dev.db, got_dev.dz},
                *w[7] = {want.dx, want.ddt, want.dbc, want.dA, want.dD, want.db, want.dz};
    for (int i = 0; i < 7; i++) {
        if (!g[i] || !w[i]) continue;
        float *h = host_floats(g[i], ns[i]);
        const double e = test_rel_err(h, w[i], ns[i]);
        EXPECT(e < 1e-5, "%s: %s rel err %.2e", what, names[i], e);
        free(h);
    }
}

static void check_case(int B, int T, int E, int N, int gated) {
    char name[200];
    snprintf(name, sizeof name,
             "CUDA scan vs CPU: B %d, T %d, E %d, N %d%s (fwd with state and bwd within 1e-5; bitwise repeatable)", B,
             T, E, N, gated ? ", gated (also z, then x and z, then x, dt, z, dout, dx and ddt in bf16)" : "");
    TEST_BEGIN(name);
    const int ldz = 2 * E;
    const size_t nx = (size_t)B * T * E, nbc = (size_t)B * T * 2 * N, nh = (size_t)B * E * N, na = (size_t)N * E,
                 nz = (size_t)B * T * ldz;
    const size_t ns[7] = {nx, nx, nbc, na, (size_t)E, (size_t)E, nz};
    float *x = host_randn(nx, 1, 0), *dt = host_randn(nx, 1, 0), *bias = host_randn(E, 0.5f, -2.0f),
          *At = host_randn(na, 0.5f, 0), *bc = host_randn(nbc, 1, 0), *Dv = host_randn(E, 1, 0),
          *z = host_randn(nz, 1.5f, 0), *dy = host_randn(nx, 1, 0), *h0 = host_randn(nh, 1, 0);
    for (size_t i = 0; i < na; i++) At[i] = -0.05f - fabsf(At[i]);
    const scan_args s = {.x = x, .dt = dt, .dt_bias = bias, .At = At, .Bm = bc, .Cm = bc + N, .ldbc = 2 * N, .Dv = Dv,
                         .z = gated ? z : NULL, .ldz = ldz, .B = B, .T = T, .E = E, .N = N};
    /* CPU reference */
    float *y = xmalloc(sizeof(float) * nx), *h = xmalloc(sizeof(float) * nh);
    memcpy(h, h0, sizeof(float) * nh);
    cpu_scan_fwd(&s, y, NULL, h);
    float *dx = xmalloc(sizeof(float) * nx), *ddt = xmalloc(sizeof(float) * nx), *dbc = xcalloc(nbc, sizeof(float));
    float *dA = xcalloc(na, sizeof(float)), *dD = xcalloc(E, sizeof(float)), *db = xcalloc(E, sizeof(float));
    float *dz = xcalloc(nz, sizeof(float)), *out = xcalloc(nx, sizeof(float));
    const scan_grads g = {.dx = dx, .ddt = ddt, .dBm = dbc, .dCm = dbc + N, .lddbc = 2 * N, .dAt = dA, .dDv = dD,
                          .ddt_bias = db, .dz = dz, .lddz = ldz, .out = out};
    cpu_scan_bwd(&s, &g, dy);
    /* GPU: the same operands on the device */
    float *gx = gpu_floats(x, nx), *gdt = gpu_floats(dt, nx), *gbias = gpu_floats(bias, E), *gA = gpu_floats(At, na),
          *gbc = gpu_floats(bc, nbc), *gD = gpu_floats(Dv, E), *gz = gpu_floats(z, nz);
    float *gdy = gpu_floats(dy, nx), *gy = gpu_floats(NULL, nx), *gh = gpu_floats(h0, nh);
    float *gdx = gpu_floats(NULL, nx), *gddt = gpu_floats(NULL, nx), *gdbc = gpu_floats(NULL, nbc);
    float *zeros = xcalloc(nz + na + E, sizeof(float)), *gdA = gpu_floats(zeros, na), *gdD = gpu_floats(zeros, E),
          *gdb = gpu_floats(zeros, E), *gdz = gpu_floats(zeros, nz), *gout = gpu_floats(NULL, nx);
    const scan_args gs = {.x = gx, .dt = gdt, .dt_bias = gbias, .At = gA, .Bm = gbc, .Cm = gbc + N, .ldbc = 2 * N,
                          .Dv = gD, .z = gated ? gz : NULL, .ldz = ldz, .B = B, .T = T, .E = E, .N = N};
    const scan_grads gg = {.dx = gdx, .ddt = gddt, .dBm = gdbc, .dCm = gdbc + N, .lddbc = 2 * N, .dAt = gdA,
                           .dDv = gdD, .ddt_bias = gdb, .dz = gdz, .lddz = ldz, .out = gout};
    /* outputs poisoned with NaN, so an element the kernels miss fails the comparison */
    CUDA_CHECK(cudaMemset(gy, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gdx, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gddt, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gdbc, 0xff, sizeof(float) * nbc));
    if (gated) CUDA_CHECK(cudaMemset(gout, 0xff, sizeof(float) * nx));
    scan_fwd_cuda(&gs, gy, NULL, gh);
    scan_bwd_cuda(&gs, &gg, gdy);
    cudaError_t err = cudaDeviceSynchronize();
    EXPECT(err == cudaSuccess, "CUDA error: %s", cudaGetErrorString(err));
    float *ry = host_floats(gy, nx), *rh = host_floats(gh, nh), *rdx = host_floats(gdx, nx),
          *rddt = host_floats(gddt, nx);
    float *rdbc = host_floats(gdbc, nbc), *rdA = host_floats(gdA, na), *rdD = host_floats(gdD, E),
          *rdb = host_floats(gdb, E), *rdz = host_floats(gdz, nz), *rout = host_floats(gout, nx);
    double e;
    printf("  rel err: y %.1e, h %.1e, dx %.1e, ddt %.1e, dBC %.1e, dA %.1e, dD %.1e, dbias %.1e",
           test_rel_err(ry, y, nx), test_rel_err(rh, h, nh), test_rel_err(rdx, dx, nx), test_rel_err(rddt, ddt, nx),
           test_rel_err(rdbc, dbc, nbc), test_rel_err(rdA, dA, na), test_rel_err(rdD, dD, E), test_rel_err(rdb, db, E));
    if (gated) printf(", dz %.1e, out %.1e", test_rel_err(rdz, dz, nz), test_rel_err(rout, out, nx));
    printf("\n");
    EXPECT((e = test_rel_err(ry, y, nx)) < 1e-5, "y: rel err %.2e", e);
    EXPECT((e = test_rel_err(rh, h, nh)) < 1e-5, "final state: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdx, dx, nx)) < 1e-5, "dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rddt, ddt, nx)) < 1e-5, "ddt: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdbc, dbc, nbc)) < 1e-5, "dB, dC: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdA, dA, na)) < 1e-5, "dA: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdD, dD, E)) < 1e-5, "dD: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdb, db, E)) < 1e-5, "d(dt bias): rel err %.2e", e);
    if (gated) {
        EXPECT((e = test_rel_err(rdz, dz, nz)) < 1e-5, "dz: rel err %.2e", e);
        EXPECT((e = test_rel_err(rout, out, nx)) < 1e-5, "recomputed output: rel err %.2e", e);
    }
    /* determinism: the same inputs again give the same bits */
    CUDA_CHECK(cudaMemcpy(gh, h0, sizeof(float) * nh, cudaMemcpyHostToDevice));
    scan_fwd_cuda(&gs, gy, NULL, gh);
    float *ry2 = host_floats(gy, nx), *rh2 = host_floats(gh, nh);
    EXPECT(!memcmp(ry2, ry, sizeof(float) * nx) && !memcmp(rh2, rh, sizeof(float) * nh), "a second forward differs");
    cudaMemcpy(gdA, zeros, sizeof(float) * na, cudaMemcpyHostToDevice);
    cudaMemcpy(gdD, zeros, sizeof(float) * E, cudaMemcpyHostToDevice);
    cudaMemcpy(gdb, zeros, sizeof(float) * E, cudaMemcpyHostToDevice);
    scan_bwd_cuda(&gs, &gg, gdy);
    float *rdx2 = host_floats(gdx, nx), *rddt2 = host_floats(gddt, nx), *rdbc2 = host_floats(gdbc, nbc),
          *rdA2 = host_floats(gdA, na), *rdD2 = host_floats(gdD, E), *rdb2 = host_floats(gdb, E),
          *rdz2 = host_floats(gdz, nz);
    EXPECT(!memcmp(rdx2, rdx, sizeof(float) * nx) && !memcmp(rddt2, rddt, sizeof(float) * nx) &&
               !memcmp(rdbc2, rdbc, sizeof(float) * nbc) && !memcmp(rdA2, rdA, sizeof(float) * na) &&
               !memcmp(rdD2, rdD, sizeof(float) * E) && !memcmp(rdb2, rdb, sizeof(float) * E) &&
               !memcmp(rdz2, rdz, sizeof(float) * nz),
           "a second backward differs");
    if (SCAN_HK_COUNT(T) > 0) { /* training's state checkpoints (every SCAN_HK_STEPS steps, bf16): the GPU's are the
                                 * CPU's (rounded from states 1e-6 apart: within a bf16 step), and from the same ones
                                 * the backward matches, every output */
        const size_t nk = (size_t)B * SCAN_HK_COUNT(T) * N * E;
        uint16_t *hk = xmalloc(sizeof(uint16_t) * nk), *got = xmalloc(sizeof(uint16_t) * nk), *ghk;
        CUDA_CHECK(cudaMalloc((void **)&ghk, sizeof(uint16_t) * nk));
        scan_args sk = s, gsk = gs;
        sk.hk = hk, gsk.hk = ghk;
        cpu_scan_fwd(&sk, y, NULL, NULL);
        scan_fwd_cuda(&gsk, gy, NULL, NULL);
        CUDA_CHECK(cudaMemcpy(got, ghk, sizeof(uint16_t) * nk, cudaMemcpyDeviceToHost));
        float *hw = host_f32_from_bf16_rows(hk, (int)nk, 1, (int)nk),
              *gw = host_f32_from_bf16_rows(got, (int)nk, 1, (int)nk);
        float top = 0.0f; /* each within one bf16 step of the CPU's (8 significant bits: 2^-7 of the value), plus
                           * the float32 states' own difference (1e-5 of the largest) */
        for (size_t i = 0; i < nk; i++)
            top = fmaxf(top, fabsf(hw[i]));
        size_t apart = 0;
        for (size_t i = 0; i < nk; i++)
            apart += fabsf(gw[i] - hw[i]) > 0x1p-7f * fabsf(hw[i]) + 1e-5f * top;
        EXPECT(apart == 0, "checkpoints: %zu of %zu more than one bf16 step from the CPU's", apart, nk);
        CUDA_CHECK(cudaMemcpy(ghk, hk, sizeof(uint16_t) * nk, cudaMemcpyHostToDevice));
        memset(dA, 0, sizeof(float) * na), memset(dD, 0, sizeof(float) * E), memset(db, 0, sizeof(float) * E);
        cpu_scan_bwd(&sk, &g, dy);
        CUDA_CHECK(cudaMemcpy(gdA, zeros, sizeof(float) * na, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(gdD, zeros, sizeof(float) * E, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(gdb, zeros, sizeof(float) * E, cudaMemcpyHostToDevice));
        scan_bwd_cuda(&gsk, &gg, gdy);
        expect_bwd("from checkpoints", (bwd_outs){gdx, gddt, gdbc, gdA, gdD, gdb, gated ? gdz : NULL},
                   (bwd_outs){dx, ddt, dbc, dA, dD, db, dz}, ns);
        free(hw), free(gw), free(hk), free(got);
        cudaFree(ghk);
    }
    { /* the A_log gradient fused (dA_log in place of dAt): the dAt sum times A, transposed; and the CPU's */
        float *gdat = gpu_floats(zeros, na), *gdal = gpu_floats(zeros, na), *cpu = xcalloc(na, sizeof(float));
        scan_grads ga = gg, ca = g;
        ga.dAt = gdat;
        scan_bwd_cuda(&gs, &ga, gdy);
        ga.dAt = NULL, ga.dA_log = gdal;
        scan_bwd_cuda(&gs, &ga, gdy);
        float *sum = host_floats(gdat, na), *got = host_floats(gdal, na), *want = xmalloc(sizeof(float) * na);
        size_t differ = 0; /* (compared as values: a zero sum may come out as +0 one way and -0 the other) */
        for (int ee = 0; ee < E; ee++)
            for (int n = 0; n < N; n++) {
                want[(size_t)ee * N + n] = sum[(size_t)n * E + ee] * At[(size_t)n * E + ee];
                differ += got[(size_t)ee * N + n] != want[(size_t)ee * N + n];
            }
        EXPECT(differ == 0, "dA_log: %zu values are not the dAt sum times A, transposed", differ);
        ca.dAt = NULL, ca.dA_log = cpu;
        cpu_scan_bwd(&s, &ca, dy);
        EXPECT((e = test_rel_err(got, cpu, na)) < 1e-5, "dA_log: rel err %.2e against the CPU", e);
        cudaFree(gdat), cudaFree(gdal), free(cpu), free(sum), free(got), free(want);
    }
    { /* A from A_log inside the scan (training): the same bits as from At = neg_exp_transpose(A_log) on the device */
        float *alog = xmalloc(sizeof(float) * na); /* (from At's values: the shared random stream stays as it was) */
        for (size_t i = 0; i < na; i++)
            alog[i] = logf(0.5f + fabsf(At[i]));
        float *galog = gpu_floats(alog, na), *gAt2 = gpu_floats(NULL, na);
        neg_exp_transpose_cuda(gAt2, galog, E, N);
        scan_args s1 = gs, s2 = gs;
        s1.At = gAt2, s2.At = NULL, s2.A_log = galog;
        float *r[2][3];
        for (int v = 0; v < 2; v++) {
            CUDA_CHECK(cudaMemcpy(gdA, zeros, sizeof(float) * na, cudaMemcpyHostToDevice));
            scan_fwd_cuda(v ? &s2 : &s1, gy, NULL, NULL);
            scan_bwd_cuda(v ? &s2 : &s1, &gg, gdy);
            r[v][0] = host_floats(gy, nx), r[v][1] = host_floats(gdx, nx), r[v][2] = host_floats(gdA, na);
        }
        EXPECT(!memcmp(r[0][0], r[1][0], sizeof(float) * nx) && !memcmp(r[0][1], r[1][1], sizeof(float) * nx) &&
                   !memcmp(r[0][2], r[1][2], sizeof(float) * na),
               "the scan from A_log differs from the scan from At");
        for (int v = 0; v < 2; v++)
            free(r[v][0]), free(r[v][1]), free(r[v][2]);
        cudaFree(galog), cudaFree(gAt2), free(alog);
    }
    if (gated) { /* bf16 outputs (the lean path): the float32 ones of the same kernels, rounded */
        uint16_t *g16, *want = xmalloc(sizeof(uint16_t) * nx), *got = xmalloc(sizeof(uint16_t) * nx);
        CUDA_CHECK(cudaMalloc((void **)&g16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMemcpy(gh, h0, sizeof(float) * nh, cudaMemcpyHostToDevice)); /* as for ry */
        scan_fwd_cuda(&gs, NULL, g16, gh);
        CUDA_CHECK(cudaMemcpy(got, g16, sizeof(uint16_t) * nx, cudaMemcpyDeviceToHost));
        host_bf16_from_f32(want, ry, nx);
        EXPECT(!memcmp(got, want, sizeof(uint16_t) * nx), "forward: the bf16 output is not the float32 one rounded");
        scan_grads g16s = gg;
        uint16_t *gdz16, *wantz = xcalloc(nz, sizeof(uint16_t)), *gotz = xcalloc(nz, sizeof(uint16_t));
        CUDA_CHECK(cudaMalloc((void **)&gdz16, sizeof(uint16_t) * nz));
        CUDA_CHECK(cudaMemset(gdz16, 0, sizeof(uint16_t) * nz));
        for (size_t r = 0; r < (size_t)B * T; r++)
            host_bf16_from_f32(wantz + r * ldz, rdz + r * ldz, E);
        g16s.out = NULL, g16s.out16 = g16, g16s.dz = NULL, g16s.dz16 = gdz16;
        CUDA_CHECK(cudaMemset(g16, 0xff, sizeof(uint16_t) * nx));
        scan_bwd_cuda(&gs, &g16s, gdy);
        CUDA_CHECK(cudaMemcpy(got, g16, sizeof(uint16_t) * nx, cudaMemcpyDeviceToHost));
        host_bf16_from_f32(want, rout, nx);
        EXPECT(!memcmp(got, want, sizeof(uint16_t) * nx), "backward: the bf16 output is not the float32 one rounded");
        CUDA_CHECK(cudaMemcpy(gotz, gdz16, sizeof(uint16_t) * nz, cudaMemcpyDeviceToHost));
        EXPECT(!memcmp(gotz, wantz, sizeof(uint16_t) * nz), "backward: the bf16 dz is not the float32 one rounded");
        cudaFree(gdz16), free(wantz), free(gotz);
        cudaFree(g16), free(want), free(got);
        /* the lean path's bf16 operands, GPU vs CPU on the same rounded values, every output: the gate z in bf16
         * (xz), then x in bf16 too (the conv output; staged by 16-byte copies where E % 8 == 0, else plain loads),
         * then dt in bf16 (dt_proj's output) with ddt written in bf16 */
        uint16_t *z16 = xmalloc(sizeof(uint16_t) * nz), *gz16, *x16 = xmalloc(sizeof(uint16_t) * nx), *gx16;
        uint16_t *dt16 = xmalloc(sizeof(uint16_t) * nx), *gdt16, *ddt16 = xmalloc(sizeof(uint16_t) * nx), *gddt16;
        uint16_t *dy16 = xmalloc(sizeof(uint16_t) * nx), *gdy16, *dx16h = xmalloc(sizeof(uint16_t) * nx), *gdx16;
        CUDA_CHECK(cudaMalloc((void **)&gdx16, sizeof(uint16_t) * nx));
        host_bf16_from_f32(z16, z, nz), host_bf16_from_f32(x16, x, nx);
        host_bf16_from_f32(dt16, dt, nx), host_bf16_from_f32(dy16, dy, nx);
        CUDA_CHECK(cudaMalloc((void **)&gdy16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMemcpy(gdy16, dy16, sizeof(uint16_t) * nx, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMalloc((void **)&gdt16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMemcpy(gdt16, dt16, sizeof(uint16_t) * nx, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMalloc((void **)&gddt16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMalloc((void **)&gz16, sizeof(uint16_t) * nz));
        CUDA_CHECK(cudaMemcpy(gz16, z16, sizeof(uint16_t) * nz, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMalloc((void **)&gx16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMemcpy(gx16, x16, sizeof(uint16_t) * nx, cudaMemcpyHostToDevice));
        scan_args s16 = s, gs16 = gs;
        s16.z = NULL, s16.z16 = z16, gs16.z = NULL, gs16.z16 = gz16;
        scan_grads g16c = g, gg16 = gg;
        for (int level = 0; level <= 2; level++) {
            const char *what = level == 2 ? "bf16 x, dt, gate, dout and ddt" : level ? "bf16 x and gate" : "bf16 gate";
            if (level >= 1) s16.x = NULL, s16.x16 = x16, gs16.x = NULL, gs16.x16 = gx16;
            if (level == 2) {
                s16.dt = NULL, s16.dt16 = dt16, gs16.dt = NULL, gs16.dt16 = gdt16;
                g16c.ddt = NULL, g16c.ddt16 = ddt16, gg16.ddt = NULL, gg16.ddt16 = gddt16;
                g16c.dout16 = dy16, gg16.dout16 = gdy16;
                g16c.dx = NULL, g16c.dx16 = dx16h, gg16.dx = NULL, gg16.dx16 = gdx16;
                CUDA_CHECK(cudaMemset(gddt16, 0xff, sizeof(uint16_t) * nx));
            }
            cpu_scan_fwd(&s16, y, NULL, NULL);
            scan_fwd_cuda(&gs16, gy, NULL, NULL);
            memset(dA, 0, sizeof(float) * na), memset(dD, 0, sizeof(float) * E), memset(db, 0, sizeof(float) * E);
            cpu_scan_bwd(&s16, &g16c, level == 2 ? NULL : dy);
            CUDA_CHECK(cudaMemcpy(gdA, zeros, sizeof(float) * na, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(gdD, zeros, sizeof(float) * E, cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(gdb, zeros, sizeof(float) * E, cudaMemcpyHostToDevice));
            scan_bwd_cuda(&gs16, &gg16, level == 2 ? NULL : gdy);
            if (level == 2) { /* ddt in bf16 both sides, widened: the two float32 values rounded (1e-5 apart, so an
                               * element on a rounding boundary may differ by one bf16 step) */
                uint16_t *got16 = xmalloc(sizeof(uint16_t) * nx);
                CUDA_CHECK(cudaMemcpy(got16, gddt16, sizeof(uint16_t) * nx, cudaMemcpyDeviceToHost));
                float *want32 = host_f32_from_bf16_rows(ddt16, E, (size_t)B * T, E),
                      *got32 = host_f32_from_bf16_rows(got16, E, (size_t)B * T, E);
                EXPECT((e = test_rel_err(got32, want32, nx)) < 1e-3, "%s: ddt (bf16) rel err %.2e", what, e);
                printf("  %s: ddt (bf16) rel err %.1e\n", what, e);
                free(got16), free(want32), free(got32);
                got16 = xmalloc(sizeof(uint16_t) * nx); /* dx in bf16 likewise */
                CUDA_CHECK(cudaMemcpy(got16, gdx16, sizeof(uint16_t) * nx, cudaMemcpyDeviceToHost));
                want32 = host_f32_from_bf16_rows(dx16h, E, (size_t)B * T, E),
                got32 = host_f32_from_bf16_rows(got16, E, (size_t)B * T, E);
                EXPECT((e = test_rel_err(got32, want32, nx)) < 1e-3, "%s: dx (bf16) rel err %.2e", what, e);
                free(got16), free(want32), free(got32);
            }
            float *hy = host_floats(gy, nx);
            EXPECT((e = test_rel_err(hy, y, nx)) < 1e-5, "%s: y rel err %.2e", what, e);
            free(hy);
            expect_bwd(what, (bwd_outs){level < 2 ? gdx : NULL, level < 2 ? gddt : NULL, gdbc, gdA, gdD, NULL, gdz},
                       (bwd_outs){dx, ddt, dbc, dA, dD, db, dz}, ns);
        }
        { /* dB and dC in bf16 (lean training's x_proj gradient), GPU and CPU: the float32 sums just checked, rounded */
            float *fbc = host_floats(gdbc, nbc);
            uint16_t *gbc16, *want16 = xmalloc(sizeof(uint16_t) * nbc), *got16 = xmalloc(sizeof(uint16_t) * nbc);
            CUDA_CHECK(cudaMalloc((void **)&gbc16, sizeof(uint16_t) * nbc));
            CUDA_CHECK(cudaMemset(gbc16, 0xff, sizeof(uint16_t) * nbc));
            scan_grads gb = gg16, cb = g16c;
            gb.dBm = gb.dCm = NULL, gb.dBm16 = gbc16, gb.dCm16 = gbc16 + N;
            scan_bwd_cuda(&gs16, &gb, NULL);
            CUDA_CHECK(cudaMemcpy(got16, gbc16, sizeof(uint16_t) * nbc, cudaMemcpyDeviceToHost));
            host_bf16_from_f32(want16, fbc, nbc);
            EXPECT(!memcmp(got16, want16, sizeof(uint16_t) * nbc),
                   "backward: the bf16 dB, dC are not the float32 ones rounded");
            cb.dBm = cb.dCm = NULL, cb.dBm16 = got16, cb.dCm16 = got16 + N;
            cpu_scan_bwd(&s16, &cb, NULL);
            host_bf16_from_f32(want16, dbc, nbc);
            EXPECT(!memcmp(got16, want16, sizeof(uint16_t) * nbc),
                   "CPU backward: the bf16 dB, dC are not the float32 ones rounded");
            cudaFree(gbc16), free(fbc), free(want16), free(got16);
        }
        cudaFree(gx16), free(x16);
        cudaFree(gz16), free(z16);
        cudaFree(gdt16), free(dt16), cudaFree(gddt16), free(ddt16), cudaFree(gdy16), free(dy16), cudaFree(gdx16),
            free(dx16h);
    }
    TEST_END();
}

int main(void) {
    const char *why;
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA scan tests: %s\n", why);
        return 0;
    }
    check_case(2, 70, 150, 5, 0);
    check_case(2, 70, 150, 5, 1);
    check_case(1, 33, 128, 16, 1);
    check_case(3, 100, 257, 19, 0);
    check_case(2, 256, 512, 16, 1);
    check_case(1, 17, 40, 32, 1);
    check_case(2, 1000, 96, 16, 1);
    check_case(1, 600, 33, 8, 0);
    check_case(3, 1, 150, 16, 1); /* a decode step: the forward's one-step kernel */
    check_case(1, 1, 1536, 32, 0);
    return test_failures ? 1 : 0;
}
