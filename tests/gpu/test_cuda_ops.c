/* The CUDA ops of ops_cuda.h against their CPU twins in ops.h: random inputs with odd sizes (rows not a
 * multiple of any block size, widths not multiples of 16 or 32, row strides wider than the rows), the
 * largest error relative to the tensor's scale per output, and bitwise determinism (each CUDA op runs
 * twice on the same inputs and the outputs are memcmp'd). Prints "skip - ..." where there is no GPU. */
#include "test.h"
#include "gpu/gpu_test.h"
#include "backend/cpu/cpu_ops.h"
#include "ops/ops_cuda.h"
#include "backend/cuda/cuda_common.h"

#include <cuda_runtime.h>
#include <string.h>

static unsigned long long rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}
static float *copy_vec(const float *src, size_t n) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    memcpy(v, src, sizeof(float) * n);
    return v;
}
#define FB(n) (sizeof(float) * (size_t)(n))

/* Compares the two CUDA runs bitwise and the first with the CPU within tol (relative to the scale). */
static void check(const char *what, float *const gpu[2], const float *cpu, size_t n, double tol) {
    double err = test_rel_err(gpu[0], cpu, n);
    EXPECT(err <= tol, "%s: rel err %.3g > %.1g", what, err, tol);
    EXPECT(memcmp(gpu[0], gpu[1], FB(n)) == 0, "%s: two CUDA runs differ (not deterministic)", what);
}

static void test_embedding(void) {
    const int V = 67, D = 45, rows = 301;
    int tokens[301];
    for (int r = 0; r < rows; r++) tokens[r] = r % 5 == 0 ? 3 : (int)((frand() + 1.0f) * 0.5f * V) % V;
    float *table = rand_vec((size_t)V * D, 1), *dout = rand_vec((size_t)rows * D, 1);
    float *dtable0 = rand_vec((size_t)V * D, 1);

    TEST_BEGIN("CUDA embedding_fwd matches the CPU exactly, repeatable");
    float *out = malloc(FB(rows * D)), *g[2];
    cpu_embedding_fwd(out, tokens, table, rows, D);
    for (int rep = 0; rep < 2; rep++) {
        int *dtok = gpu_to_dev(tokens, sizeof tokens);
        float *dtab = gpu_to_dev(table, FB(V * D)), *dout_d = gpu_to_dev(NULL, FB(rows * D));
        embedding_fwd_cuda(dout_d, dtok, dtab, rows, D);
        gpu_to_host(g[rep] = malloc(FB(rows * D)), dout_d, FB(rows * D));
        cudaFree(dtok), cudaFree(dtab), cudaFree(dout_d);
    }
    check("out", g, out, (size_t)rows * D, 0.0);
    free(out), free(g[0]), free(g[1]);
    TEST_END();

    TEST_BEGIN("CUDA embedding_bwd within 1e-6 of the CPU (same order of additions), repeatable");
    float *dt = copy_vec(dtable0, (size_t)V * D);
    cpu_embedding_bwd(dt, dout, tokens, rows, D);
    for (int rep = 0; rep < 2; rep++) {
        int *dtok = gpu_to_dev(tokens, sizeof tokens);
        float *ddt = gpu_to_dev(dtable0, FB(V * D)), *ddo = gpu_to_dev(dout, FB(rows * D));
        embedding_bwd_cuda(ddt, ddo, dtok, rows, D);
        gpu_to_host(g[rep] = malloc(FB(V * D)), ddt, FB(V * D));
        cudaFree(dtok), cudaFree(ddt), cudaFree(ddo);
    }
    check("dtable", g, dt, (size_t)V * D, 1e-6);
    free(dt), free(g[0]), free(g[1]);
    TEST_END();
    free(table), free(dout), free(dtable0);
}

static void test_rmsnorm(int rows, int D) { /* D over 12288: the backward's weight gradient in a second pass */
    const float eps = 1e-5f;
    float *x = rand_vec((size_t)rows * D, 2), *w = rand_vec(D, 1), *dy = rand_vec((size_t)rows * D, 1);
    float *dx0 = rand_vec((size_t)rows * D, 1), *dw0 = rand_vec(D, 1);

    TEST_BEGIN("CUDA rmsnorm_fwd within 1e-5 relative (y, rstd), repeatable");
    float *y = malloc(FB(rows * D)), *rstd = malloc(FB(rows)), *gy[2], *gr[2];
    cpu_rmsnorm_fwd(y, NULL, rstd, x, w, rows, D, eps);
    for (int rep = 0; rep < 2; rep++) {
        float *dxx = gpu_to_dev(x, FB(rows * D)), *dw_ = gpu_to_dev(w, FB(D)), *dy_ = gpu_to_dev(NULL, FB(rows * D));
        float *dr = gpu_to_dev(NULL, FB(rows));
        rmsnorm_fwd_cuda(dy_, NULL, dr, dxx, dw_, rows, D, eps);
        gpu_to_host(gy[rep] = malloc(FB(rows * D)), dy_, FB(rows * D));
        gpu_to_host(gr[rep] = malloc(FB(rows)), dr, FB(rows));
        rmsnorm_fwd_cuda(dy_, NULL, NULL, dxx, dw_, rows, D, eps); /* rstd may be NULL */
        float *again = malloc(FB(rows * D));
        gpu_to_host(again, dy_, FB(rows * D));
        EXPECT(memcmp(again, gy[rep], FB(rows * D)) == 0, "y differs with rstd == NULL");
        /* y16 alone: y rounded to bf16, bitwise */
        uint16_t *d16, *got = malloc(sizeof(uint16_t) * rows * D), *want = malloc(sizeof(uint16_t) * rows * D);
        CUDA_CHECK(cudaMalloc((void **)&d16, sizeof(uint16_t) * rows * D));
        rmsnorm_fwd_cuda(NULL, d16, NULL, dxx, dw_, rows, D, eps);
        CUDA_CHECK(cudaMemcpy(got, d16, sizeof(uint16_t) * rows * D, cudaMemcpyDeviceToHost));
        host_bf16_from_f32(want, gy[rep], (size_t)rows * D);
        EXPECT(!memcmp(got, want, sizeof(uint16_t) * rows * D), "y16 is not y rounded");
        cudaFree(d16), free(got), free(want);
        free(again);
        cudaFree(dxx), cudaFree(dw_), cudaFree(dy_), cudaFree(dr);
    }
    check("y", gy, y, (size_t)rows * D, 1e-5);
    check("rstd", gr, rstd, rows, 1e-5);
    free(y), free(gy[0]), free(gy[1]), free(gr[0]), free(gr[1]);
    TEST_END();

    TEST_BEGIN("CUDA add_rmsnorm_fwd within 1e-5 relative (x_out exact; in place, separate, no delta, delta in bf16), "
               "repeatable");
    float *delta = rand_vec((size_t)rows * D, 1);
    uint16_t *delta16 = malloc(sizeof(uint16_t) * rows * D);
    host_bf16_from_f32(delta16, delta, (size_t)rows * D);
    for (int variant = 0; variant < 4; variant++) { /* 0: separate x_out, 1: in place, 2: no delta, 3: bf16 delta */
        const float *dl = variant >= 2 ? NULL : delta;
        const uint16_t *dl16 = variant == 3 ? delta16 : NULL;
        float *xo = malloc(FB(rows * D)), *yy = malloc(FB(rows * D)), *rr = malloc(FB(rows)), *gx[2], *gyy[2], *grr[2];
        cpu_add_rmsnorm_fwd(xo, yy, NULL, rr, x, dl, dl16, w, rows, D, eps);
        for (int rep = 0; rep < 2; rep++) {
            float *d_x = gpu_to_dev(x, FB(rows * D)), *d_d = gpu_to_dev(delta, FB(rows * D)),
                  *d_w = gpu_to_dev(w, FB(D));
            uint16_t *d_d16 = gpu_to_dev(delta16, sizeof(uint16_t) * rows * D);
            float *d_o = variant == 1 ? d_x : gpu_to_dev(NULL, FB(rows * D)), *d_y = gpu_to_dev(NULL, FB(rows * D));
            float *d_r = gpu_to_dev(NULL, FB(rows));
            uint16_t *d16, *got = malloc(sizeof(uint16_t) * rows * D), *want = malloc(sizeof(uint16_t) * rows * D);
            CUDA_CHECK(cudaMalloc((void **)&d16, sizeof(uint16_t) * rows * D));
            add_rmsnorm_fwd_cuda(d_o, d_y, d16, d_r, d_x, dl ? d_d : NULL, dl16 ? d_d16 : NULL, d_w, rows, D,
                                 eps); /* y and y16 */
            gpu_to_host(gx[rep] = malloc(FB(rows * D)), d_o, FB(rows * D));
            gpu_to_host(gyy[rep] = malloc(FB(rows * D)), d_y, FB(rows * D));
            CUDA_CHECK(cudaMemcpy(got, d16, sizeof(uint16_t) * rows * D, cudaMemcpyDeviceToHost));
            host_bf16_from_f32(want, gyy[rep], (size_t)rows * D);
            EXPECT(!memcmp(got, want, sizeof(uint16_t) * rows * D), "y16 is not y rounded");
            cudaFree(d16), free(got), free(want);
            gpu_to_host(grr[rep] = malloc(FB(rows)), d_r, FB(rows));
            if (d_o != d_x) cudaFree(d_o);
            cudaFree(d_x), cudaFree(d_d), cudaFree(d_w), cudaFree(d_y), cudaFree(d_r), cudaFree(d_d16);
        }
        check("x_out", gx, xo, (size_t)rows * D, 0.0); /* a float add: exact */
        check("y", gyy, yy, (size_t)rows * D, 1e-5);
        check("rstd", grr, rr, rows, 1e-5);
        free(xo), free(yy), free(rr);
        for (int rep = 0; rep < 2; rep++) free(gx[rep]), free(gyy[rep]), free(grr[rep]);
    }
    free(delta), free(delta16);
    TEST_END();

    char name[160];
    snprintf(name, sizeof name,
             "CUDA rmsnorm_bwd within 1e-5 relative (dx written and accumulated, dw +=; dx16 = "
             "bf16(dx) exactly; dy in bf16), repeatable: rows %d, D %d",
             rows, D);
    TEST_BEGIN(name);
    uint16_t *dy16 = malloc(sizeof(uint16_t) * rows * D);
    host_bf16_from_f32(dy16, dy, (size_t)rows * D);
    for (int form = 0; form < 3; form++) { /* 0: dx written, 1: accumulated, 2: accumulated from a bf16 dy */
        const int acc = form > 0;
        float *dx = copy_vec(dx0, (size_t)rows * D), *dw = copy_vec(dw0, D), *gdx[2], *gdw[2];
        cpu_rmsnorm_bwd(dx, NULL, dw, form == 2 ? NULL : dy, form == 2 ? dy16 : NULL, x, w, rstd, rows, D, acc);
        for (int rep = 0; rep < 2; rep++) {
            float *d_dx = gpu_to_dev(dx0, FB(rows * D)), *d_dw = gpu_to_dev(dw0, FB(D)),
                  *d_dy = gpu_to_dev(dy, FB(rows * D));
            uint16_t *d_dy16 = gpu_to_dev(dy16, sizeof(uint16_t) * rows * D);
            float *d_x = gpu_to_dev(x, FB(rows * D)), *d_w = gpu_to_dev(w, FB(D)), *d_r = gpu_to_dev(rstd, FB(rows));
            uint16_t *d16, *got = malloc(sizeof(uint16_t) * rows * D), *want = malloc(sizeof(uint16_t) * rows * D);
            CUDA_CHECK(cudaMalloc((void **)&d16, sizeof(uint16_t) * rows * D));
            rmsnorm_bwd_cuda(d_dx, rep ? d16 : NULL, d_dw, form == 2 ? NULL : d_dy, form == 2 ? d_dy16 : NULL, d_x, d_w,
                             d_r, rows, D, acc); /* dx16 on rep 1 */
            gpu_to_host(gdx[rep] = malloc(FB(rows * D)), d_dx, FB(rows * D));
            if (rep) {
                CUDA_CHECK(cudaMemcpy(got, d16, sizeof(uint16_t) * rows * D, cudaMemcpyDeviceToHost));
                host_bf16_from_f32(want, gdx[rep], (size_t)rows * D);
                EXPECT(!memcmp(got, want, sizeof(uint16_t) * rows * D), "dx16 is not dx rounded");
            }
            cudaFree(d16), free(got), free(want);
            gpu_to_host(gdw[rep] = malloc(FB(D)), d_dw, FB(D));
            cudaFree(d_dx), cudaFree(d_dw), cudaFree(d_dy), cudaFree(d_x), cudaFree(d_w), cudaFree(d_r),
                cudaFree(d_dy16);
        }
        check(acc ? "dx (acc)" : "dx", gdx, dx, (size_t)rows * D, 1e-5);
        check(acc ? "dw (acc run)" : "dw", gdw, dw, D, 1e-5);
        free(dx), free(dw), free(gdx[0]), free(gdx[1]), free(gdw[0]), free(gdw[1]);
    }
    free(dy16);
    TEST_END();
    free(x), free(w), free(dy), free(dx0), free(dw0), free(rstd);
}

/* K <= 4 takes the sliding-window kernels, K = 5 the general ones. K = 4 with C a multiple of 8 (strides too): the
 * vector kernels (runs of 32 steps: T = 130 and 200 end in a partial run; C = 72 leaves most of a block's channel
 * groups idle); else one channel per thread (chunks of 64 steps: T = 150 crosses two chunk edges). */
static void test_conv1d(int B, int T, int C, int K) {
    const int ldx = C % 8 ? C + 13 : C + 24, lddx = C % 8 ? C + 7 : C + 8;
    char name[200];
    const size_t n = (size_t)B * T * C, nx = (size_t)B * T * ldx, ndx = (size_t)B * T * lddx;
    float *x = rand_vec(nx, 1), *w = rand_vec((size_t)C * K, 1), *bias = rand_vec(C, 1);
    float *init = rand_vec((size_t)B * C * (K - 1), 1), *dout = rand_vec(n, 1);

    snprintf(name, sizeof name, "CUDA conv1d_silu_fwd within 1e-5 relative (with/without init and bias), "
             "repeatable: B %d, T %d, C %d, K %d", B, T, C, K);
    TEST_BEGIN(name);
    for (int variant = 0; variant < 2; variant++) {
        const float *ini = variant ? init : NULL, *bs = variant ? NULL : bias;
        float *out = malloc(FB(n)), *go[2];
        cpu_conv1d_silu_fwd(out, NULL, x, NULL, ldx, ini, w, bs, B, T, C, K);
        for (int rep = 0; rep < 2; rep++) {
            float *d_x = gpu_to_dev(x, FB(nx)), *d_w = gpu_to_dev(w, FB(C * K));
            float *d_b = bs ? gpu_to_dev(bs, FB(C)) : NULL, *d_i = ini ? gpu_to_dev(ini, FB(B * C * (K - 1))) : NULL;
            float *d_o = gpu_to_dev(NULL, FB(n));
            conv1d_silu_fwd_cuda(d_o, NULL, d_x, NULL, ldx, d_i, d_w, d_b, B, T, C, K);
            gpu_to_host(go[rep] = malloc(FB(n)), d_o, FB(n));
            cudaFree(d_x), cudaFree(d_w), cudaFree(d_b), cudaFree(d_i), cudaFree(d_o);
        }
        check(variant ? "out (init, no bias)" : "out (no init, bias)", go, out, n, 1e-5);
        free(out), free(go[0]), free(go[1]);
    }
    TEST_END();

    snprintf(name, sizeof name, "CUDA conv1d_silu_bwd within 1e-5 relative (dx with stride, dw +=, with bias and "
             "dbias += or neither), "
             "repeatable: B %d, T %d, C %d, K %d", B, T, C, K);
    TEST_BEGIN(name);
    float *dx0 = rand_vec(ndx, 1), *dw0 = rand_vec((size_t)C * K, 1), *db0 = rand_vec(C, 1);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        float *dx = copy_vec(dx0, ndx), *dw = copy_vec(dw0, (size_t)C * K), *db = copy_vec(db0, C);
        float *gdx[2], *gdw[2], *gdb[2];
        cpu_conv1d_silu_bwd(dx, NULL, lddx, dw, with_bias ? db : NULL, dout, NULL, x, NULL, ldx, w,
                            with_bias ? bias : NULL, B, T, C, K);
        for (int rep = 0; rep < 2; rep++) {
            float *d_dx = gpu_to_dev(dx0, FB(ndx)), *d_dw = gpu_to_dev(dw0, FB(C * K)), *d_db = gpu_to_dev(db0, FB(C));
            float *d_do = gpu_to_dev(dout, FB(n)), *d_x = gpu_to_dev(x, FB(nx)), *d_w = gpu_to_dev(w, FB(C * K));
            float *d_b = gpu_to_dev(bias, FB(C));
            conv1d_silu_bwd_cuda(d_dx, NULL, lddx, d_dw, with_bias ? d_db : NULL, d_do, NULL, d_x, NULL, ldx, d_w,
                                 with_bias ? d_b : NULL, B, T, C, K);
            gpu_to_host(gdx[rep] = malloc(FB(ndx)), d_dx, FB(ndx));
            gpu_to_host(gdw[rep] = malloc(FB(C * K)), d_dw, FB(C * K));
            gpu_to_host(gdb[rep] = malloc(FB(C)), d_db, FB(C));
            cudaFree(d_dx), cudaFree(d_dw), cudaFree(d_db), cudaFree(d_do), cudaFree(d_b), cudaFree(d_x);
            cudaFree(d_w);
        }
        check("dx", gdx, dx, ndx, 1e-5);
        check("dw", gdw, dw, (size_t)C * K, 1e-5);
        check(with_bias ? "dbias" : "dbias untouched when NULL", gdb, db, C, 1e-5);
        free(dx), free(dw), free(db);
        for (int rep = 0; rep < 2; rep++) free(gdx[rep]), free(gdw[rep]), free(gdb[rep]);
    }
    free(dx0), free(dw0), free(db0);
    TEST_END();

    snprintf(name, sizeof name,
             "CUDA conv1d_silu_fwd/bwd with a bf16 input (strided; also a bf16 second dout term, and one alone) within 1e-5 "
             "relative: B %d, T %d, "
             "C %d, K %d",
             B, T, C, K);
    TEST_BEGIN(name);
    {
        uint16_t *x16 = malloc(sizeof(uint16_t) * nx), *d_x16;
        host_bf16_from_f32(x16, x, nx);
        CUDA_CHECK(cudaMalloc((void **)&d_x16, sizeof(uint16_t) * nx));
        CUDA_CHECK(cudaMemcpy(d_x16, x16, sizeof(uint16_t) * nx, cudaMemcpyHostToDevice));
        float *out = malloc(FB(n)), *dx = calloc(ndx, sizeof(float)), *dw = calloc((size_t)C * K, sizeof(float));
        float *db = calloc(C, sizeof(float)), *go[2], *gdx[2], *gdw[2], *gdb[2];
        cpu_conv1d_silu_fwd(out, NULL, NULL, x16, ldx, NULL, w, bias, B, T, C, K);
        cpu_conv1d_silu_bwd(dx, NULL, lddx, dw, db, dout, NULL, NULL, x16, ldx, w, bias, B, T, C, K);
        for (int rep = 0; rep < 2; rep++) {
            float *d_o = gpu_to_dev(NULL, FB(n)), *d_w = gpu_to_dev(w, FB(C * K)), *d_b = gpu_to_dev(bias, FB(C));
            float *d_dx = gpu_to_dev(NULL, FB(ndx)), *d_dw = gpu_to_dev(NULL, FB(C * K)),
                  *d_db = gpu_to_dev(NULL, FB(C));
            float *d_do = gpu_to_dev(dout, FB(n));
            CUDA_CHECK(cudaMemset(d_dx, 0, FB(ndx)));
            CUDA_CHECK(cudaMemset(d_dw, 0, FB(C * K)));
            CUDA_CHECK(cudaMemset(d_db, 0, FB(C)));
            uint16_t *d_o16, *o16 = malloc(sizeof(uint16_t) * n), *ow16 = malloc(sizeof(uint16_t) * n);
            CUDA_CHECK(cudaMalloc((void **)&d_o16, sizeof(uint16_t) * n));
            conv1d_silu_fwd_cuda(d_o, d_o16, NULL, d_x16, ldx, NULL, d_w, d_b, B, T, C, K);
            conv1d_silu_bwd_cuda(d_dx, NULL, lddx, d_dw, d_db, d_do, NULL, NULL, d_x16, ldx, d_w, d_b, B, T, C, K);
            gpu_to_host(go[rep] = malloc(FB(n)), d_o, FB(n));
            CUDA_CHECK(cudaMemcpy(o16, d_o16, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
            host_bf16_from_f32(ow16, go[rep], n);
            EXPECT(!memcmp(o16, ow16, sizeof(uint16_t) * n), "the bf16 output is not the float32 one rounded");
            CUDA_CHECK(cudaMemset(d_o16, 0xff, sizeof(uint16_t) * n)); /* out16 alone (out NULL): the same bits */
            conv1d_silu_fwd_cuda(NULL, d_o16, NULL, d_x16, ldx, NULL, d_w, d_b, B, T, C, K);
            CUDA_CHECK(cudaMemcpy(o16, d_o16, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost));
            EXPECT(!memcmp(o16, ow16, sizeof(uint16_t) * n), "out16 without out differs");
            cudaFree(d_o16), free(o16), free(ow16);
            gpu_to_host(gdx[rep] = malloc(FB(ndx)), d_dx, FB(ndx));
            gpu_to_host(gdw[rep] = malloc(FB(C * K)), d_dw, FB(C * K));
            gpu_to_host(gdb[rep] = malloc(FB(C)), d_db, FB(C));
            if (rep == 0) { /* dx in bf16: the GPU's float32 dx rounded, bitwise */
                uint16_t *d_dx16, *got = calloc(ndx, sizeof(uint16_t)), *want = calloc(ndx, sizeof(uint16_t));
                CUDA_CHECK(cudaMalloc((void **)&d_dx16, sizeof(uint16_t) * ndx));
                CUDA_CHECK(cudaMemset(d_dx16, 0, sizeof(uint16_t) * ndx));
                conv1d_silu_bwd_cuda(NULL, d_dx16, lddx, d_dw, d_db, d_do, NULL, NULL, d_x16, ldx, d_w, d_b, B, T, C,
                                     K);
                CUDA_CHECK(cudaMemcpy(got, d_dx16, sizeof(uint16_t) * ndx, cudaMemcpyDeviceToHost));
                for (size_t r = 0; r < (size_t)B * T; r++)
                    host_bf16_from_f32(want + r * lddx, gdx[0] + r * lddx, C);
                EXPECT(!memcmp(got, want, sizeof(uint16_t) * ndx), "bf16 dx is not the float32 one rounded");
                cudaFree(d_dx16), free(got), free(want);
            }
            cudaFree(d_o), cudaFree(d_w), cudaFree(d_b), cudaFree(d_dx), cudaFree(d_dw), cudaFree(d_db), cudaFree(d_do);
        }
        check("out", go, out, n, 1e-5);
        check("dx", gdx, dx, ndx, 1e-5);
        check("dw", gdw, dw, (size_t)C * K, 1e-5);
        check("dbias", gdb, db, C, 1e-5);
        for (int rep = 0; rep < 2; rep++) free(go[rep]), free(gdx[rep]), free(gdw[rep]), free(gdb[rep]);
        /* a second gradient term in bf16 (dout16: the lean path's x_proj part), added to dout as it is read */
        uint16_t *g16 = malloc(sizeof(uint16_t) * n), *d_g16;
        float *gsrc = rand_vec(n, 3);
        host_bf16_from_f32(g16, gsrc, n);
        CUDA_CHECK(cudaMalloc((void **)&d_g16, sizeof(uint16_t) * n));
        CUDA_CHECK(cudaMemcpy(d_g16, g16, sizeof(uint16_t) * n, cudaMemcpyHostToDevice));
        for (int alone = 0; alone <= 1; alone++) { /* then dout16 as the whole gradient (dout NULL) */
        memset(dx, 0, FB(ndx)), memset(dw, 0, FB(C * K)), memset(db, 0, FB(C));
        cpu_conv1d_silu_bwd(dx, NULL, lddx, dw, db, alone ? NULL : dout, g16, NULL, x16, ldx, w, bias, B, T, C, K);
        for (int rep = 0; rep < 2; rep++) {
            float *d_w = gpu_to_dev(w, FB(C * K)), *d_b = gpu_to_dev(bias, FB(C)), *d_do = gpu_to_dev(dout, FB(n));
            float *d_dx = gpu_to_dev(NULL, FB(ndx)), *d_dw = gpu_to_dev(NULL, FB(C * K)),
                  *d_db = gpu_to_dev(NULL, FB(C));
            CUDA_CHECK(cudaMemset(d_dx, 0, FB(ndx)));
            CUDA_CHECK(cudaMemset(d_dw, 0, FB(C * K)));
            CUDA_CHECK(cudaMemset(d_db, 0, FB(C)));
            conv1d_silu_bwd_cuda(d_dx, NULL, lddx, d_dw, d_db, alone ? NULL : d_do, d_g16, NULL, d_x16, ldx, d_w, d_b, B,
                                 T, C, K);
            gpu_to_host(gdx[rep] = malloc(FB(ndx)), d_dx, FB(ndx));
            gpu_to_host(gdw[rep] = malloc(FB(C * K)), d_dw, FB(C * K));
            gpu_to_host(gdb[rep] = malloc(FB(C)), d_db, FB(C));
            cudaFree(d_w), cudaFree(d_b), cudaFree(d_do), cudaFree(d_dx), cudaFree(d_dw), cudaFree(d_db);
        }
        check(alone ? "dx (dout16)" : "dx (dout + dout16)", gdx, dx, ndx, 1e-5);
        check(alone ? "dw (dout16)" : "dw (dout + dout16)", gdw, dw, (size_t)C * K, 1e-5);
        check(alone ? "dbias (dout16)" : "dbias (dout + dout16)", gdb, db, C, 1e-5);
        for (int rep = 0; rep < 2; rep++) free(gdx[rep]), free(gdw[rep]), free(gdb[rep]);
        }
        cudaFree(d_g16), free(g16), free(gsrc);
        free(x16), free(out), free(dx), free(dw), free(db);
        cudaFree(d_x16);
    }
    TEST_END();

    snprintf(name, sizeof name, "CUDA conv1d_state_update matches the CPU exactly (T = %d, 2, 1), repeatable: K %d", T,
             K);
    TEST_BEGIN(name);
    const int Ts[3] = {T, 2, 1};
    const size_t ns = (size_t)B * C * (K - 1);
    for (int i = 0; i < 3; i++) {
        float *st = copy_vec(init, ns), *g[2];
        cpu_conv1d_state_update(st, x, ldx, B, Ts[i], C, K);
        for (int rep = 0; rep < 2; rep++) {
            float *d_s = gpu_to_dev(init, FB(ns)), *d_x = gpu_to_dev(x, FB(nx));
            conv1d_state_update_cuda(d_s, d_x, ldx, B, Ts[i], C, K);
            gpu_to_host(g[rep] = malloc(FB(ns)), d_s, FB(ns));
            cudaFree(d_s), cudaFree(d_x);
        }
        check("state", g, st, ns, 0.0);
        free(st), free(g[0]), free(g[1]);
    }
    TEST_END();

    snprintf(name, sizeof name,
             "CUDA conv1d_silu_step = conv1d_silu_fwd then cpu_conv1d_state_update (T = 1) on the GPU "
             "exactly, the CPU's within 1e-5 (state exactly): B %d, C %d, K %d",
             B, C, K);
    TEST_BEGIN(name);
    {
        const size_t no = (size_t)B * C, nx1 = (size_t)B * ldx;
        float *out = malloc(FB(no)), *st = copy_vec(init, ns), *go[2], *gs[2];
        cpu_conv1d_silu_step(out, x, ldx, st, w, bias, B, C, K);
        for (int two = 0; two < 2; two++) { /* 0: the step op, 1: the two ops it replaces */
            float *d_x = gpu_to_dev(x, FB(nx1)), *d_w = gpu_to_dev(w, FB(C * K)), *d_b = gpu_to_dev(bias, FB(C));
            float *d_s = gpu_to_dev(init, FB(ns)), *d_o = gpu_to_dev(NULL, FB(no));
            if (two) {
                conv1d_silu_fwd_cuda(d_o, NULL, d_x, NULL, ldx, d_s, d_w, d_b, B, 1, C, K);
                conv1d_state_update_cuda(d_s, d_x, ldx, B, 1, C, K);
            } else
                conv1d_silu_step_cuda(d_o, d_x, ldx, d_s, d_w, d_b, B, C, K);
            gpu_to_host(go[two] = malloc(FB(no)), d_o, FB(no));
            gpu_to_host(gs[two] = malloc(FB(ns)), d_s, FB(ns));
            cudaFree(d_x), cudaFree(d_w), cudaFree(d_b), cudaFree(d_s), cudaFree(d_o);
        }
        EXPECT(!memcmp(go[0], go[1], FB(no)) && !memcmp(gs[0], gs[1], FB(ns)),
               "the step op differs from conv1d_silu_fwd + conv1d_state_update");
        check("step out", go, out, no, 1e-5);
        check("step state", gs, st, ns, 0.0);
        free(out), free(st), free(go[0]), free(go[1]), free(gs[0]), free(gs[1]);
    }
    TEST_END();
    free(x), free(w), free(bias), free(init), free(dout);
}

static void test_bias(void) {
    const int rows = 517, N = 77, ld = 90;
    const size_t n = (size_t)rows * ld;
    float *y0 = rand_vec(n, 1), *bias = rand_vec(N, 1), *db0 = rand_vec(N, 1);

    TEST_BEGIN("CUDA bias_add matches the CPU exactly (strided rows), repeatable");
    float *y = copy_vec(y0, n), *g[2];
    cpu_bias_add(y, ld, bias, rows, N);
    for (int rep = 0; rep < 2; rep++) {
        float *d_y = gpu_to_dev(y0, FB(n)), *d_b = gpu_to_dev(bias, FB(N));
        bias_add_cuda(d_y, ld, d_b, rows, N);
        gpu_to_host(g[rep] = malloc(FB(n)), d_y, FB(n));
        cudaFree(d_y), cudaFree(d_b);
    }
    check("y", g, y, n, 0.0);
    free(y), free(g[0]), free(g[1]);
    TEST_END();

    TEST_BEGIN("CUDA bias_grad_acc within 1e-5 relative (strided rows, db +=), repeatable");
    float *db = copy_vec(db0, N);
    cpu_bias_grad_acc(db, y0, ld, rows, N);
    for (int rep = 0; rep < 2; rep++) {
        float *d_db = gpu_to_dev(db0, FB(N)), *d_dy = gpu_to_dev(y0, FB(n));
        bias_grad_acc_cuda(d_db, d_dy, ld, rows, N);
        gpu_to_host(g[rep] = malloc(FB(N)), d_db, FB(N));
        cudaFree(d_db), cudaFree(d_dy);
    }
    check("db", g, db, N, 1e-5);
    free(db), free(g[0]), free(g[1]);
    TEST_END();
    free(y0), free(bias), free(db0);
}

static void test_neg_exp_transpose(void) {
    const int E = 77, N = 13;
    float *A_log = rand_vec((size_t)E * N, 2), *At = malloc(FB(E * N)), *g[2];
    TEST_BEGIN("CUDA neg_exp_transpose within 1e-5 relative, repeatable");
    cpu_neg_exp_transpose(At, A_log, E, N);
    for (int rep = 0; rep < 2; rep++) {
        float *d_a = gpu_to_dev(A_log, FB(E * N)), *d_t = gpu_to_dev(NULL, FB(E * N));
        neg_exp_transpose_cuda(d_t, d_a, E, N);
        gpu_to_host(g[rep] = malloc(FB(E * N)), d_t, FB(E * N));
        cudaFree(d_a), cudaFree(d_t);
    }
    check("At", g, At, (size_t)E * N, 1e-5);
    free(A_log), free(At), free(g[0]), free(g[1]);
    TEST_END();
}

static void test_bf16_convert(void) {
    TEST_BEGIN("CUDA bf16_from_f32 / f32_from_bf16 equal the CPU's bitwise (ties, NaN, infinities)");
    const size_t n = 10007;
    float *x = rand_vec(n, 1000);
    x[0] = NAN, x[1] = INFINITY, x[2] = -INFINITY, x[3] = 0.0f, x[4] = -0.0f;
    x[5] = 1.00390625f; /* exactly halfway between two bf16 values: rounds to even */
    x[6] = 3.4e38f;     /* rounds up to infinity */
    uint16_t *h = malloc(sizeof(uint16_t) * n), *g = malloc(sizeof(uint16_t) * n);
    float *back = malloc(FB(n)), *gback = malloc(FB(n));
    host_bf16_from_f32(h, x, n);
    host_f32_from_bf16(back, h, n);
    float *d_x = gpu_to_dev(x, FB(n)), *d_b = gpu_to_dev(NULL, FB(n));
    uint16_t *d_h = gpu_to_dev(NULL, sizeof(uint16_t) * n);
    bf16_from_f32_cuda(d_h, d_x, n);
    f32_from_bf16_cuda(d_b, d_h, n);
    gpu_to_host(g, d_h, sizeof(uint16_t) * n);
    gpu_to_host(gback, d_b, FB(n));
    EXPECT(!memcmp(g, h, sizeof(uint16_t) * n), "bf16 bits differ from the CPU's");
    EXPECT(!memcmp(gback, back, FB(n)), "float32 from bf16 differs from the CPU's");
    cudaFree(d_x), cudaFree(d_b), cudaFree(d_h);
    free(x), free(h), free(g), free(back), free(gback);
    TEST_END();
}

static void test_xent(void) {
    const int rows = 129, V = 259;
    const size_t n = (size_t)rows * V;
    int targets[129], counted = 0;
    for (int r = 0; r < rows; r++) {
        targets[r] = r % 7 == 3 ? -1 : (int)((frand() + 1.0f) * 0.5f * V) % V;
        counted += targets[r] >= 0;
    }
    float *logits = rand_vec(n, 5), *g[2];
    const float scale = 1.0f / counted;
    TEST_BEGIN("CUDA xent_fwd_bwd: sum within 1e-9 relative, count exact, dlogits within 1e-5 (or NULL), repeatable");
    double sum, gsum[2];
    int count, gcount[2];
    float *dl = malloc(FB(n));
    cpu_xent_fwd_bwd(&sum, &count, dl, logits, targets, rows, V, scale);
    for (int with_grad = 1; with_grad >= 0; with_grad--)
        for (int rep = 0; rep < 2; rep++) {
            float *d_l = gpu_to_dev(logits, FB(n)), *d_dl = with_grad ? gpu_to_dev(NULL, FB(n)) : NULL;
            int *d_t = gpu_to_dev(targets, sizeof targets);
            xent_fwd_bwd_cuda(&gsum[rep], &gcount[rep], d_dl, d_l, d_t, rows, V, scale);
            if (with_grad) gpu_to_host(g[rep] = malloc(FB(n)), d_dl, FB(n));
            cudaFree(d_l), cudaFree(d_dl), cudaFree(d_t);
            EXPECT(fabs(gsum[rep] - sum) <= 1e-9 * fabs(sum), "sum %.17g vs CPU %.17g (dlogits %s)", gsum[rep], sum,
                   with_grad ? "on" : "NULL");
            EXPECT(gcount[rep] == count && count == counted, "count %d vs CPU %d, expected %d", gcount[rep], count,
                   counted);
            EXPECT(rep == 0 || memcmp(&gsum[0], &gsum[1], sizeof sum) == 0, "two CUDA sums differ");
        }
    check("dlogits", g, dl, n, 1e-5);
    { /* the gradient alone (sum and count NULL, as the training backward asks): the same bits */
        float *d_l = gpu_to_dev(logits, FB(n)), *d_dl = gpu_to_dev(NULL, FB(n)), *alone = malloc(FB(n));
        int *d_t = gpu_to_dev(targets, sizeof targets);
        xent_fwd_bwd_cuda(NULL, NULL, d_dl, d_l, d_t, rows, V, scale);
        gpu_to_host(alone, d_dl, FB(n));
        EXPECT(!memcmp(alone, g[0], FB(n)), "dlogits without the totals differ");
        cudaFree(d_l), cudaFree(d_dl), cudaFree(d_t), free(alone);
    }
    free(dl), free(g[0]), free(g[1]), free(logits);
    TEST_END();
}

int main(void) {
    const char *why = "";
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA ops: %s\n", why);
        return 0;
    }
    test_embedding();
    test_rmsnorm(203, 333);
    test_rmsnorm(77, 768); /* column pairs (D even; the backward's: D a multiple of 64) */
    test_rmsnorm(5, 12289);
    test_rmsnorm(3, 12352); /* column pairs, the weight gradient in a second pass */
    test_conv1d(3, 37, 75, 4);
    test_conv1d(2, 150, 75, 4);
    test_conv1d(2, 130, 40, 3);
    test_conv1d(2, 130, 40, 4);
    test_conv1d(3, 200, 72, 4);
    test_conv1d(2, 70, 40, 5);
    test_bias();
    test_neg_exp_transpose();
    test_xent();
    test_bf16_convert();
    return test_failures;
}
