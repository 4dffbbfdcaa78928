// A CUDA device context: everything the CUDA backend keeps between calls, per model rather than per process, so
// that two models in one process (or one model per GPU) never share a cuBLASLt plan, a bf16 weight shadow or a
// scratch buffer. A model owns one (backend.h's ctx_new, ctx_free) and binds it (ctx_bind) before it queues work;
// the .cu files read the calling thread's bound context through cuda_ctx_now(). Work still goes on the per-thread
// default stream, which is the bound context's device's once binding has made that device current.
//
// Code that owns no context (the kernel tests and benchmarks, which call the _cuda kernels directly) gets a process
// default on GPU 0, made on first use: as before contexts existed.
#ifndef SSM_CUDA_CONTEXT_H
#define SSM_CUDA_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct lt_state lt_state; // matmul.cu: the cuBLASLt handle, its workspace, the plan cache

// The bf16 shadow of one float32 parameter buffer (weights16.cu has the whole story).
typedef struct {
    int wanted;        // a bf16 GEMM asked for a shadow: AdamW then writes one
    const float *base; // the shadowed float32 buffer
    size_t count;      // its length in floats
    uint16_t *shadow;  // [count] bf16, valid when valid != 0
    size_t cap;        // floats the shadow can hold
    int valid;
} w16_shadow;

// cuda_alloc's live allocations (memory.cu): a model has a few dozen; beyond the table, sizes go uncounted.
#define CUDA_CTX_MAX_ALLOCS 1024

typedef struct cuda_ctx {
    int device;          // the GPU's index (cuda:N): binding makes it current
    lt_state *lt;        // made at the context's first GEMM; NULL before
    void *blas;          // cuBLAS's handle (blas_batched.cu), made at the first batched product; NULL before
    w16_shadow w16;      // of the one parameter buffer this context's AdamW updates
    float *scan_scratch; // [scan_scratch_cap] the scan's grow-only scratch: backward partials, segment maps (scan.cu)
    size_t scan_scratch_cap;
    // bytes handed out by cuda_alloc in this context, live and at peak (mem_in_use)
    size_t alloc_live, alloc_peak;
    struct {
        void *p;
        size_t bytes;
    } alloc_table[CUDA_CTX_MAX_ALLOCS];
    int alloc_n;
    // a small host table's device copy (cuda_ctx_table): the fused decode's layer pointers
    void *table, *table_host;
    size_t table_bytes, table_cap;
    // the fused decode kernel's grid, for the kernel and shared memory it was sized for (decode_mamba1.cu)
    const void *dec_kernel;
    size_t dec_smem;
    int dec_blocks;
    int dec_refused; // a launch was refused: said once
    // the device's attributes that every decode step's launch checks, asked once (dec_device in decode_common.cuh;
    // sms 0: not yet)
    int dev_sms, dev_coop, dev_smem_optin;
} cuda_ctx;

// The calling thread's bound context; the process default (GPU 0) when none is bound, which it then binds.
cuda_ctx *cuda_ctx_now(void);
// A device copy of bytes of host memory at host, kept in c and uploaded again only when those bytes change: tables of
// pointers a kernel reads (a decode step's layers), the same from step to step.
const void *cuda_ctx_table(cuda_ctx *c, const void *host, size_t bytes);
// Frees what lt holds (matmul.cu): plans, workspace, handle. NULL is fine.
void lt_free(lt_state *lt);

#endif
