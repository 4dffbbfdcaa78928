/* Warp-level tensor-core instructions (sm_80+), as the flash attention kernels use them (attention_flash.cuh has the
 * fragment layouts): the bf16 m16n8k16 product with float32 accumulators, and ldmatrix's four 8x8 matrices of 16-bit
 * elements from shared memory, as they are or transposed; and the tf32 m16n8k8 product (the SSD's, ssd.cu). Each is
 * executed by the whole warp. */
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

/* d += a b in tf32 (float32 operands rounded to 10 mantissa bits by tf32()): a 16x8 (4 registers), b 8x8 (2), d 16x8
 * float32 (4 per lane). Lane l = 4 g + c holds a[g][c], a[g + 8][c], a[g][c + 4], a[g + 8][c + 4]; b[c][g],
 * b[c + 4][g]; d[g][2c], d[g][2c + 1], d[g + 8][2c], d[g + 8][2c + 1] (the PTX manual's m16n8k8 .tf32 layouts). */
__device__ __forceinline__ static void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
/* x rounded to tf32 (to nearest, ties away from zero), as mma_tf32's operand */
__device__ __forceinline__ static uint32_t tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
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
