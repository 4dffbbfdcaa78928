/* The CUDA selective scan's speed at the reference shape (batch 8 x 2048 bytes, d_inner 1536,
 * d_state 16: one layer of the d_model 768 byte model): milliseconds per forward and backward, and the
 * bandwidth each achieves on the bytes it must move at least once, against the device's measured
 * device-to-device copy bandwidth. Then the same 16,384 positions as 2 x 8192 and 1 x 16384, and 1 x 65536, where
 * the kernels cut time into segments (scan.cu, "time segments"): the time per position should stay flat.
 * Run on the GPU machine: build/gpu/bench_cuda_scan [B T E N] (one shape); SSM_SCAN_SEGMENTS=1 times the
 * unsegmented kernels. */
#include "common.h"
#include "ops/ops_cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

static void dev_alloc(void **p, size_t bytes);
static float *dev_random(size_t n, float lo, float hi, rng_t *r) {
    float *h = xmalloc(sizeof(float) * n), *d;
    for (size_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * rng_uniform(r);
    dev_alloc((void **)&d, sizeof(float) * n);
    cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice);
    free(h);
    return d;
}

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of `reps` runs of fn (after 3 warmups), timed with CUDA events. */
#define TIME_MS(out, reps, call)                                                                   \
    do {                                                                                           \
        float t_[64];                                                                              \
        cudaEvent_t a_, b_;                                                                        \
        cudaEventCreate(&a_), cudaEventCreate(&b_);                                                \
        for (int i_ = -3; i_ < (reps); i_++) {                                                     \
            cudaEventRecord(a_, 0);                                                                \
            call;                                                                                  \
            cudaEventRecord(b_, 0);                                                                \
            cudaEventSynchronize(b_);                                                              \
            if (i_ >= 0) cudaEventElapsedTime(&t_[i_], a_, b_);                                    \
        }                                                                                          \
        qsort(t_, (reps), sizeof(float), cmp);                                                     \
        out = t_[(reps) / 2];                                                                      \
    } while (0)

/* the device buffers of one shape, freed after it */
static void *bufs[32];
static int n_bufs;
static void dev_alloc(void **p, size_t bytes) {
    if (cudaMalloc(p, bytes) != cudaSuccess) {
        printf("out of device memory (%.1f MB)\n", bytes / 1e6);
        exit(1);
    }
    bufs[n_bufs++] = *p;
}

static int bench_shape(int B, int T, int E, int N) {
    rng_t r = {1};
    const size_t nx = (size_t)B * T * E, nbc = (size_t)B * T * 2 * N;
    /* the model's case (lean bf16 training): x in bf16 (as the conv writes it), dt before softplus(dt + bias) in
     * 0.001 .. 0.1, the gate z the second half of xz [B*T, 2E] in bf16, the output in bf16 */
    float *x = dev_random(nx, -1, 1, &r), *dt = dev_random(nx, -7, -2.3f, &r), *bias = dev_random(E, 0, 0, &r),
          *At = dev_random((size_t)N * E, -16, -1, &r), *xz = dev_random(2 * nx, -2, 2, &r);
    float *bc = dev_random(nbc, -1, 1, &r), *Dv = dev_random(E, 0.5f, 1.5f, &r), *dy = dev_random(nx, -1, 1, &r);
    float *y, *dx, *dbc, *dA, *dD, *db;
    dev_alloc((void **)&y, nx * 4), dev_alloc((void **)&dx, nx * 4);
    dev_alloc((void **)&dbc, nbc * 4), dev_alloc((void **)&dA, (size_t)N * E * 4), dev_alloc((void **)&dD, E * 4);
    dev_alloc((void **)&db, E * 4);
    uint16_t *xz16, *x16, *dt16, *dxz16, *ddt16, *dy16, *dx16;
    dev_alloc((void **)&xz16, 2 * nx * 2), dev_alloc((void **)&x16, nx * 2), dev_alloc((void **)&dt16, nx * 2);
    dev_alloc((void **)&dy16, nx * 2), dev_alloc((void **)&dx16, nx * 2);
    const int rows = B * T; /* the bf16 operands rounded as the model's producers write them */
    convert_rows_cuda(mat_bf16(dy16, E), mat_f32(dy, E), rows, E);
    dev_alloc((void **)&dxz16, 2 * nx * 2), dev_alloc((void **)&ddt16, nx * 2);
    convert_rows_cuda(mat_bf16(xz16, 2 * E), mat_f32(xz, 2 * E), rows, 2 * E);
    convert_rows_cuda(mat_bf16(x16, E), mat_f32(x, E), rows, E);
    convert_rows_cuda(mat_bf16(dt16, E), mat_f32(dt, E), rows, E);
    uint16_t *hk; /* training's state checkpoints, as the lean model passes them */
    dev_alloc((void **)&hk, (size_t)B * SCAN_HK_COUNT(T) * N * E * 2);
    const scan_args s = {.x = mat_bf16(x16, E), .dt = mat_bf16(dt16, E), .dt_bias = bias, .At = At, .Bm = bc,
                         .Cm = bc + N, .ldbc = 2 * N, .Dv = Dv, .z = mat_bf16(xz16 + E, 2 * E), .B = B, .T = T, .E = E,
                         .N = N, .hk = hk};
    const scan_grads g = {.dx = mat_bf16(dx16, E), .ddt = mat_bf16(ddt16, E), .dBm = mat_f32(dbc, 2 * N),
                          .dCm = mat_f32(dbc + N, 2 * N), .dAt = dA, .dDv = dD, .ddt_bias = db,
                          .dz = mat_bf16(dxz16 + E, 2 * E), .out = mat_bf16((uint16_t *)y, E)};
    const mat dout = mat_bf16(dy16, E);
    scan_args s0 = s; /* the same without the checkpoints: the backward then recomputes every chunk's start state */
    s0.hk = NULL;
    float fwd, bwd, fwd0, bwd0, copy;
    TIME_MS(fwd, 21, scan_fwd_cuda(&s, mat_bf16((uint16_t *)y, E), NULL));
    TIME_MS(bwd, 21, scan_bwd_cuda(&s, &g, dout));
    TIME_MS(fwd0, 21, scan_fwd_cuda(&s0, mat_bf16((uint16_t *)y, E), NULL));
    TIME_MS(bwd0, 21, scan_bwd_cuda(&s0, &g, dout));
    TIME_MS(copy, 21, cudaMemcpy(dx, x, nx * 4, cudaMemcpyDeviceToDevice));
    cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
        printf("CUDA error: %s\n", cudaGetErrorString(err));
        return 1;
    }
    /* the bytes each pass must move at least once, in the lean training form (bf16 x, dt, z, dout in; bf16 out, dx,
     * ddt, dz out): fwd reads x, dt, z, B, C and writes out; bwd reads dout, x, dt, z, B, C and writes dx, ddt, dz,
     * out, dB, dC (parameters are negligible) */
    const double fwd_bytes = 2.0 * 4 * nx + 4.0 * nbc, bwd_bytes = 2.0 * 8 * nx + 4.0 * 2 * nbc,
                 copy_bw = 2.0 * nx * 4 / (copy * 1e-3);
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("%s: B %d, T %d, E %d, N %d (%.3f ms forward + backward per 16,384 positions)\n", prop.name, B, T, E, N,
           (fwd + bwd) * 16384.0 / ((double)B * T));
    printf("device copy: %.0f GB/s (read + write, cudaMemcpy device to device, %.1f MB)\n", copy_bw / 1e9,
           nx * 4 / 1e6);
    printf("%-28s %10s %12s %10s\n", "pass", "ms", "GB/s", "of copy");
    const char *names[4] = {"forward", "backward", "forward, no checkpoints", "backward, no checkpoints"};
    const float ms[4] = {fwd, bwd, fwd0, bwd0};
    for (int i = 0; i < 4; i++) {
        const double bytes = i % 2 ? bwd_bytes : fwd_bytes;
        printf("%-28s %10.3f %12.0f %9.0f%%\n", names[i], ms[i], bytes / (ms[i] * 1e-3) / 1e9,
               100 * bytes / (ms[i] * 1e-3) / copy_bw);
    }
    for (int i = 0; i < n_bufs; i++) cudaFree(bufs[i]);
    n_bufs = 0;
    return 0;
}

int main(int argc, char **argv) {
    const char *why;
    if (!cuda_device_available(&why)) {
        printf("no GPU: %s\n", why);
        return 1;
    }
    if (argc == 5) return bench_shape(atoi(argv[1]), atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    const int shapes[][2] = {{8, 2048}, {2, 8192}, {1, 16384}, {1, 65536}};
    for (int i = 0; i < 4; i++) {
        if (i) printf("\n");
        if (bench_shape(shapes[i][0], shapes[i][1], 1536, 16)) return 1;
    }
    return 0;
}
