/* The CUDA backend's tables (float32, and bf16 mixed precision): device memory (memory.cu) and the _cuda
 * kernels of ops_cuda.h. Built only when nvcc is found (the Makefile then defines SSM_CUDA and links the
 * CUDA runtime and cuBLASLt). */
#include "backend/backend.h"
#include "ops/ops_cuda.h"

extern const backend backend_cuda, backend_cuda_bf16;

/* One table; MM picks the GEMMs: matmul_*_cuda (float32) or matmul_*_cuda_bf16 (mixed precision). */
#define CUDA_BACKEND(MM, PRECISION, LEAN)                                                          \
    {                                                                                              \
        .name = "cuda",                                                                            \
        .precision = PRECISION,                                                                    \
        .lean_acts = LEAN,                                                                         \
        .fp32 = &backend_cuda,                                                                     \
        .bf16 = &backend_cuda_bf16,                                                                \
        .alloc = cuda_alloc,                                                                       \
        .release = cuda_release,                                                                   \
        .zero = cuda_zero,                                                                         \
        .copy = cuda_copy,                                                                         \
        .upload = cuda_upload,                                                                     \
        .download = cuda_download,                                                                 \
        .sync = cuda_sync,                                                                         \
        .mem_in_use = cuda_mem_in_use,                                                             \
        .graph_begin = cuda_graph_begin,                                                           \
        .graph_end = cuda_graph_end,                                                               \
        .graph_launch = cuda_graph_launch,                                                         \
        .graph_free = cuda_graph_free,                                                             \
        .matmul_xwT = matmul_xwT_##MM,                                                             \
        .matmul_dyw = matmul_dyw_##MM,                                                             \
        .matmul_dw_acc = matmul_dw_acc_##MM,                                                       \
        .matmul_bwd = matmul_bwd_##MM,                                                             \
        .matmul_xwT_y16 = matmul_xwT_y16_##MM,                                                     \
        .round_bf16_rows = round_bf16_rows_cuda,                                                   \
        .matmul_bwd16 = matmul_bwd16_##MM,                                                         \
        .matmul_xwT_x16 = matmul_xwT_x16_##MM,                                                     \
        .matmul_dw_acc_x16 = matmul_dw_acc_x16_##MM,                                               \
        .bias_add = bias_add_cuda,                                                                 \
        .bias_grad_acc = bias_grad_acc_cuda,                                                       \
        .embedding_fwd = embedding_fwd_cuda,                                                       \
        .embedding_bwd = embedding_bwd_cuda,                                                       \
        .rmsnorm_fwd = rmsnorm_fwd_cuda,                                                           \
        .add_rmsnorm_fwd = add_rmsnorm_fwd_cuda,                                                   \
        .rmsnorm_bwd = rmsnorm_bwd_cuda,                                                           \
        .conv1d_silu_fwd = conv1d_silu_fwd_cuda,                                                   \
        .conv1d_silu_bwd = conv1d_silu_bwd_cuda,                                                   \
        .conv1d_state_update = conv1d_state_update_cuda,                                           \
        .conv1d_silu_step = conv1d_silu_step_cuda,                                                 \
        .scan_fwd = scan_fwd_cuda,                                                                 \
        .scan_bwd = scan_bwd_cuda,                                                                 \
        .neg_exp_transpose = neg_exp_transpose_cuda,                                               \
        .xent_fwd_bwd = xent_fwd_bwd_cuda,                                                         \
        .grad_norm = grad_norm_cuda,                                                               \
        .adamw_step = adamw_step_cuda,                                                             \
    }

const backend backend_cuda = CUDA_BACKEND(cuda, "fp32", 0);
/* Mixed precision: bf16 tensor-core GEMMs with float32 accumulation, lean (bf16) saved activations; everything
 * else as backend_cuda. */
const backend backend_cuda_bf16 = CUDA_BACKEND(cuda_bf16, "bf16", 1);
