/* bf16 conversions of host arrays (src/backend/cpu/matmul.c): for any layer, on host memory only (a backend's
 * buffers are converted by its ops). Round to nearest even; bf16 -> float32 is exact. */
#ifndef SSM_HOST_BF16_H
#define SSM_HOST_BF16_H

#include <stddef.h>
#include <stdint.h>

void host_bf16_from_f32(uint16_t *dst, const float *src, size_t n);
void host_f32_from_bf16(float *dst, const uint16_t *src, size_t n);
/* A dense float32 copy [rows, cols] of bf16 rows with stride ld (the caller frees it): the CPU's bf16-operand
 * forms widen their operands first (the CPU runs them only to test the lean path). */
float *host_f32_from_bf16_rows(const uint16_t *src, int ld, size_t rows, int cols);
/* The rows [rows, cols] of dst (ld elements apart) = bf16(src [rows, cols] dense): a bf16-operand form's result. */
void host_bf16_from_f32_rows(uint16_t *dst, int ld, const float *src, size_t rows, int cols);
/* Rows [rows, cols] quantized to int8 with one scale per row: scale[r] = max |src[r, :]| / 127 (1 for a zero row),
 * dst = round(src / scale): the decode weights of ssm_model_use_int8. */
void host_i8_from_f32_rows(int8_t *dst, float *scale, const float *src, size_t rows, int cols);

#endif
