/* Warp-level tensor-core instructions (sm_80+), as the flash attention kernels use them (attention_flash.cuh has the
 * fragment layouts): the bf16 m16n8k16 product with float32 accumulators, and ldmatrix's four 8x8 matrices of 16-bit
 * elements from shared memory, as they are or transposed. Each is executed by the whole warp. */
#ifndef SSM_CUDA_MMA_CUH
#define SSM_CUDA_MMA_CUH

#include <stdint.h>

/* d += a b: a 16x16 (4 registers of 2 bf16), b 16x8 (2 registers), d 16x8 float32 (4 per lane) */
__device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* r[i] = this lane's part of matrix i, whose 8 rows (16 bytes each) lanes 8i .. 8i + 7 point at (p: this lane's row) */
__device__ __forceinline__ static void ldsm_x4(uint32_t (&r)[4], const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}
/* the same, each matrix transposed */
__device__ __forceinline__ static void ldsm_x4_trans(uint32_t (&r)[4], const void *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}

#endif
