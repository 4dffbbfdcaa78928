/* The CUDA backend's tables (float32, and bf16 mixed precision): device memory (memory.cu) and the _cuda
 * kernels of ops_cuda.h. Built only when nvcc is found (the Makefile then defines SSM_CUDA and links the
 * CUDA runtime and cuBLASLt). */
#include "backend/backend.h"
#include "ops/ops_cuda.h"
#include "common.h"

extern const backend backend_cuda, backend_cuda_bf16;

/* The kernels' limits (each kernel's check, beside it in its .cu file): the scan's state size, attention's head size. */
static int cuda_check_op(int op, const void *args) {
    switch (op) {
    case BACKEND_OP_scan_fwd:
    case BACKEND_OP_scan_bwd: return scan_check_cuda(args);
    case BACKEND_OP_matmul_xwT: /* args: the weight operand, when the caller asks about its dtype */
        if (args && ((const mat *)args)->dt != MAT_F32)
            return ssm_error("the CUDA matmul_xwT reads float32 weights (bf16 and int8 decode copies are the CPU's)");
        return 0;
    case BACKEND_OP_attn_fwd:
    case BACKEND_OP_attn_bwd: return attn_check_cuda(args);
    default: return 0;
    }
}

/* What the two tables share: the device memory, graphs, limits, device contexts, and each other. */
#define CUDA_COMMON                                                                                                   \
    .name = "cuda", .fp32 = &backend_cuda, .bf16 = &backend_cuda_bf16, .alloc = cuda_alloc, .release = cuda_release, \
    .zero = cuda_zero, .copy = cuda_copy, .upload = cuda_upload, .download = cuda_download, .sync = cuda_sync,       \
    .mem_in_use = cuda_mem_in_use, .graph_begin = cuda_graph_begin, .graph_end = cuda_graph_end,                     \
    .graph_launch = cuda_graph_launch, .graph_free = cuda_graph_free, .check_op = cuda_check_op,                     \
    .ctx_new = cuda_ctx_new, .ctx_free = cuda_ctx_free, .ctx_bind = cuda_ctx_bind,                                   \
    .decode_mamba1 = decode_mamba1_cuda, .decode_mamba2 = decode_mamba2_cuda,                                       \
    .decode_transformer = decode_transformer_cuda

/* An op's kernel in the table whose GEMMs are MM: a GEMM has a float32 and a bf16 tensor-core kernel,
 * matmul_*_cuda and matmul_*_cuda_bf16; every other op one kernel for both tables, <name>_cuda (ops_list.h). */
#define CUDA_KERNEL_gemm(name, MM) name##_##MM
#define CUDA_KERNEL_scan(name, MM) name##_cuda
#define CUDA_KERNEL_other(name, MM) name##_cuda
#define CUDA_KERNEL_optim(name, MM) name##_cuda


const backend backend_cuda = {
    CUDA_COMMON,
    .precision = "fp32",
#define OP(ret, name, params, args, group) .name = CUDA_KERNEL_##group(name, cuda),
#include "backend/ops_list.h"
#undef OP
};

/* Mixed precision: bf16 tensor-core GEMMs with float32 accumulation, lean (bf16) saved activations; everything
 * else as backend_cuda. */
const backend backend_cuda_bf16 = {
    CUDA_COMMON,
    .precision = "bf16",
    .lean_acts = 1,
#define OP(ret, name, params, args, group) .name = CUDA_KERNEL_##group(name, cuda_bf16),
#include "backend/ops_list.h"
#undef OP
};
