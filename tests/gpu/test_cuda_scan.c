/* The CUDA selective scan against the CPU one (src/backend/cpu/scan.c, itself tested against the
 * sequential recurrence and finite differences): forward with a carried state, backward, for state
 * sizes odd and even up to 32, lengths shorter than one chunk, ending mid-chunk and spanning many
 * chunks, and channel counts that end mid-block; and bitwise determinism of both passes (two runs,
 * memcmp). Prints "skip - ..." without a GPU. */
#include "common.h"
#include "ops/ops.h"
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



static void check_case(int B, int T, int E, int N) {
    char name[160];
    snprintf(name, sizeof name, "CUDA scan vs CPU: B %d, T %d, E %d, N %d (fwd with state and bwd within 1e-5; bitwise repeatable)",
             B, T, E, N);
    TEST_BEGIN(name);
    const size_t nx = (size_t)B * T * E, nbc = (size_t)B * T * 2 * N, nh = (size_t)B * E * N, na = (size_t)N * E;
    float *x = host_randn(nx, 1, 0), *dt = host_randn(nx, 0.3f, 0), *At = host_randn(na, 0.5f, 0),
          *bc = host_randn(nbc, 1, 0), *Dv = host_randn(E, 1, 0), *dy = host_randn(nx, 1, 0), *h0 = host_randn(nh, 1, 0);
    for (size_t i = 0; i < nx; i++) dt[i] = 0.01f + fabsf(dt[i]);
    for (size_t i = 0; i < na; i++) At[i] = -0.05f - fabsf(At[i]);
    /* CPU reference */
    float *y = xmalloc(sizeof(float) * nx), *h = xmalloc(sizeof(float) * nh);
    memcpy(h, h0, sizeof(float) * nh);
    scan_fwd(y, h, x, dt, At, bc, bc + N, 2 * N, Dv, B, T, E, N);
    float *dx = xmalloc(sizeof(float) * nx), *ddt = xmalloc(sizeof(float) * nx), *dbc = xcalloc(nbc, sizeof(float));
    float *dA = xcalloc(na, sizeof(float)), *dD = xcalloc(E, sizeof(float));
    scan_bwd(dx, ddt, dbc, dbc + N, 2 * N, dA, dD, dy, x, dt, At, bc, bc + N, 2 * N, Dv, B, T, E, N);
    /* GPU */
    float *gx = gpu_floats(x, nx), *gdt = gpu_floats(dt, nx), *gA = gpu_floats(At, na), *gbc = gpu_floats(bc, nbc), *gD = gpu_floats(Dv, E);
    float *gdy = gpu_floats(dy, nx), *gy = gpu_floats(NULL, nx), *gh = gpu_floats(h0, nh);
    float *gdx = gpu_floats(NULL, nx), *gddt = gpu_floats(NULL, nx), *gdbc = gpu_floats(NULL, nbc);
    float *zeros = xcalloc(na + E, sizeof(float)), *gdA = gpu_floats(zeros, na), *gdD = gpu_floats(zeros, E);
    /* outputs poisoned with NaN, so an element the kernels miss fails the comparison */
    CUDA_CHECK(cudaMemset(gy, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gdx, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gddt, 0xff, sizeof(float) * nx));
    CUDA_CHECK(cudaMemset(gdbc, 0xff, sizeof(float) * nbc));
    scan_fwd_cuda(gy, gh, gx, gdt, gA, gbc, gbc + N, 2 * N, gD, B, T, E, N);
    scan_bwd_cuda(gdx, gddt, gdbc, gdbc + N, 2 * N, gdA, gdD, gdy, gx, gdt, gA, gbc, gbc + N, 2 * N, gD, B, T, E, N);
    cudaError_t err = cudaDeviceSynchronize();
    EXPECT(err == cudaSuccess, "CUDA error: %s", cudaGetErrorString(err));
    float *ry = host_floats(gy, nx), *rh = host_floats(gh, nh), *rdx = host_floats(gdx, nx), *rddt = host_floats(gddt, nx);
    float *rdbc = host_floats(gdbc, nbc), *rdA = host_floats(gdA, na), *rdD = host_floats(gdD, E);
    double e;
    printf("  rel err: y %.1e, h %.1e, dx %.1e, ddt %.1e, dBC %.1e, dA %.1e, dD %.1e\n", test_rel_err(ry, y, nx),
           test_rel_err(rh, h, nh), test_rel_err(rdx, dx, nx), test_rel_err(rddt, ddt, nx), test_rel_err(rdbc, dbc, nbc),
           test_rel_err(rdA, dA, na), test_rel_err(rdD, dD, E));
    EXPECT((e = test_rel_err(ry, y, nx)) < 1e-5, "y: rel err %.2e", e);
    EXPECT((e = test_rel_err(rh, h, nh)) < 1e-5, "final state: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdx, dx, nx)) < 1e-5, "dx: rel err %.2e", e);
    EXPECT((e = test_rel_err(rddt, ddt, nx)) < 1e-5, "ddt: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdbc, dbc, nbc)) < 1e-5, "dB, dC: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdA, dA, na)) < 1e-5, "dA: rel err %.2e", e);
    EXPECT((e = test_rel_err(rdD, dD, E)) < 1e-5, "dD: rel err %.2e", e);
    /* determinism: the same inputs again give the same bits */
    CUDA_CHECK(cudaMemcpy(gh, h0, sizeof(float) * nh, cudaMemcpyHostToDevice));
    scan_fwd_cuda(gy, gh, gx, gdt, gA, gbc, gbc + N, 2 * N, gD, B, T, E, N);
    float *ry2 = host_floats(gy, nx), *rh2 = host_floats(gh, nh);
    EXPECT(!memcmp(ry2, ry, sizeof(float) * nx) && !memcmp(rh2, rh, sizeof(float) * nh), "a second forward differs");
    cudaMemcpy(gdA, zeros, sizeof(float) * na, cudaMemcpyHostToDevice);
    cudaMemcpy(gdD, zeros, sizeof(float) * E, cudaMemcpyHostToDevice);
    scan_bwd_cuda(gdx, gddt, gdbc, gdbc + N, 2 * N, gdA, gdD, gdy, gx, gdt, gA, gbc, gbc + N, 2 * N, gD, B, T, E, N);
    float *rdx2 = host_floats(gdx, nx), *rddt2 = host_floats(gddt, nx), *rdbc2 = host_floats(gdbc, nbc),
          *rdA2 = host_floats(gdA, na), *rdD2 = host_floats(gdD, E);
    EXPECT(!memcmp(rdx2, rdx, sizeof(float) * nx) && !memcmp(rddt2, rddt, sizeof(float) * nx) &&
               !memcmp(rdbc2, rdbc, sizeof(float) * nbc) && !memcmp(rdA2, rdA, sizeof(float) * na) &&
               !memcmp(rdD2, rdD, sizeof(float) * E),
           "a second backward differs");
    TEST_END();
}

int main(void) {
    const char *why;
    if (!cuda_device_available(&why)) {
        printf("skip - CUDA scan tests: %s\n", why);
        return 0;
    }
    check_case(2, 70, 150, 5);
    check_case(1, 33, 128, 16);
    check_case(3, 100, 257, 19);
    check_case(2, 256, 512, 16);
    check_case(1, 17, 40, 32);
    check_case(2, 1000, 96, 16);
    check_case(1, 600, 33, 8);
    check_case(3, 1, 150, 16); /* a decode step: the forward's one-step kernel */
    check_case(1, 1, 1536, 32);
    return test_failures ? 1 : 0;
}
