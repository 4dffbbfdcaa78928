/* The CUDA attention alone at the Transformer baseline's shape (t768x12: 12 heads of 64; batch 8 x 2048 by default):
 * milliseconds and TFLOP/s of the forward (with lse, as training runs it) and of the backward, on bf16 operands laid
 * out as the model has them (q | k | v rows of W = (H + 2 KV) hd), through attn_fwd_cuda and attn_bwd_cuda: the flash
 * kernels where they apply (SSM_ATTN_FLASH=0: the widened float32 kernels instead). With "f32" also the float32
 * kernels on float32 operands, the float32 model's path.
 *   build/gpu/bench_cuda_attn [B T H KV hd [window [f32]]]
 * FLOPs as FlashAttention counts them: the forward 4 hd per visible (query, key) pair and head (S = Q K^T and P V), the
 * backward 2.5 times that (its 5 products; ours computes 7, S and dP twice: the deterministic dQ). PyTorch's SDPA at
 * the same shapes: bench/torch_attn_bench.py. */
#include "common.h"
#include "ops/ops_cuda.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *dev_alloc(size_t bytes) {
    void *d;
    if (cudaMalloc(&d, bytes) != cudaSuccess) {
        printf("cudaMalloc of %zu bytes failed\n", bytes);
        exit(1);
    }
    return d;
}

/* n floats uniform in (-scale, scale) on the device, and their bf16 rounding in *d16 */
static float *dev_random(size_t n, float scale, uint16_t **d16, rng_t *r) {
    float *h = xmalloc(sizeof(float) * n), *d = dev_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) h[i] = scale * (2.0f * rng_uniform(r) - 1.0f);
    cudaMemcpy(d, h, sizeof(float) * n, cudaMemcpyHostToDevice);
    free(h);
    *d16 = dev_alloc(sizeof(uint16_t) * n);
    convert_rows_cuda(mat_bf16(*d16, 1), mat_f32(d, 1), (int)n, 1); /* (rows of one: any n) */
    return d;
}

static int cmp(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of `reps` runs of `call` (after 2 warmups), timed with CUDA events. */
#define TIME_MS(out, reps, call)                                                                                      \
    do {                                                                                                              \
        float t_[64];                                                                                                 \
        cudaEvent_t a_, b_;                                                                                           \
        cudaEventCreate(&a_), cudaEventCreate(&b_);                                                                   \
        for (int i_ = -2; i_ < (reps); i_++) {                                                                        \
            cudaEventRecord(a_, cudaStreamPerThread);                                                                 \
            call;                                                                                                     \
            cudaEventRecord(b_, cudaStreamPerThread);                                                                 \
            cudaEventSynchronize(b_);                                                                                 \
            if (i_ >= 0) cudaEventElapsedTime(&t_[i_], a_, b_);                                                       \
        }                                                                                                             \
        qsort(t_, (reps), sizeof(float), cmp);                                                                        \
        out = t_[(reps) / 2];                                                                                         \
    } while (0)

int main(int argc, char **argv) {
    const char *why;
    if (!cuda_device_available(&why)) {
        printf("no GPU: %s\n", why);
        return 1;
    }
    int B = 8, T = 2048, H = 12, KV = 12, hd = 64, window = 0, f32 = 0;
    if (argc >= 6) B = atoi(argv[1]), T = atoi(argv[2]), H = atoi(argv[3]), KV = atoi(argv[4]), hd = atoi(argv[5]);
    if (argc >= 7) window = atoi(argv[6]);
    if (argc >= 8) f32 = !strcmp(argv[7], "f32");
    const int qd = H * hd, kvd = KV * hd, W = qd + 2 * kvd;
    const size_t rows = (size_t)B * T;
    rng_t r = {1};
    uint16_t *qkv16, *dout16;
    float *qkv = dev_random(rows * W, 2.0f, &qkv16, &r), *dout = dev_random(rows * qd, 1.0f, &dout16, &r);
    uint16_t *o16 = dev_alloc(2 * rows * qd), *d16 = dev_alloc(2 * rows * W);
    float *lse = dev_alloc(4 * rows * H);
    attn_args a = {.q = mat_bf16(qkv16, W), .k = mat_bf16(qkv16 + qd, W), .v = mat_bf16(qkv16 + qd + kvd, W),
                   .kv_bstride = (size_t)T * W, .lse = lse, .B = B, .T = T, .H = H, .KV = KV, .hd = hd,
                   .window = window};
    const mat o = mat_bf16(o16, qd), dmo = mat_bf16(dout16, qd);
    const mat dq = mat_bf16(d16, W), dk = mat_bf16(d16 + qd, W), dv = mat_bf16(d16 + qd + kvd, W);
    float fwd, bwd, fwd32 = 0, bwd32 = 0;
    TIME_MS(fwd, 9, attn_fwd_cuda(&a, o));
    TIME_MS(bwd, 9, attn_bwd_cuda(&a, o, dmo, dq, dk, dv));
    if (f32) {
        float *o32 = dev_alloc(4 * rows * qd), *d32 = dev_alloc(4 * rows * W);
        attn_args a32 = a;
        a32.q = mat_f32(qkv, W), a32.k = mat_f32(qkv + qd, W), a32.v = mat_f32(qkv + qd + kvd, W);
        TIME_MS(fwd32, 3, attn_fwd_cuda(&a32, mat_f32(o32, qd)));
        TIME_MS(bwd32, 3, attn_bwd_cuda(&a32, mat_f32(o32, qd), mat_f32(dout, qd), mat_f32(d32, W),
                                        mat_f32(d32 + qd, W), mat_f32(d32 + qd + kvd, W)));
    }
    const cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
        printf("CUDA error: %s\n", cudaGetErrorString(err));
        return 1;
    }
    double pairs = 0; /* visible (query, key) pairs of one sequence and head */
    for (int i = 0; i < T; i++) pairs += window > 0 && window < i + 1 ? window : i + 1;
    const double fwd_flop = 4.0 * hd * pairs * B * H, bwd_flop = 2.5 * fwd_flop;
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    const char *flash = getenv("SSM_ATTN_FLASH");
    printf("%s: attention B %d, T %d, H %d, KV %d, hd %d, window %d (bf16 operands%s)\n", prop.name, B, T, H, KV, hd,
           window, flash && !strcmp(flash, "0") ? ", SSM_ATTN_FLASH=0: widened to float32" : "");
    printf("%-26s %10s %10s\n", "pass", "ms", "TFLOP/s");
    printf("%-26s %10.3f %10.1f\n", "forward (bf16)", fwd, fwd_flop / (fwd * 1e-3) / 1e12);
    printf("%-26s %10.3f %10.1f\n", "backward (bf16)", bwd, bwd_flop / (bwd * 1e-3) / 1e12);
    printf("%-26s %10.3f %10.1f\n", "forward + backward (bf16)", fwd + bwd,
           (fwd_flop + bwd_flop) / ((fwd + bwd) * 1e-3) / 1e12);
    if (f32) {
        printf("%-26s %10.3f %10.1f\n", "forward (float32)", fwd32, fwd_flop / (fwd32 * 1e-3) / 1e12);
        printf("%-26s %10.3f %10.1f\n", "backward (float32)", bwd32, bwd_flop / (bwd32 * 1e-3) / 1e12);
    }
    return 0;
}
