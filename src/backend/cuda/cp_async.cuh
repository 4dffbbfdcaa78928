/* Asynchronous copies from global to shared memory (cp.async, sm_80+), shared by the kernels that stage tiles:
 * queued per thread, committed as a group, waited for before the barrier that publishes them. */
#ifndef SSM_CUDA_CP_ASYNC_CUH
#define SSM_CUDA_CP_ASYNC_CUH

/* 4 bytes; bytes 0 writes a zero */
__device__ __forceinline__ static void cp_async4(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
/* 8 bytes (both addresses 8-byte aligned), through L1; zero-fills past bytes */
__device__ __forceinline__ static void cp_async8(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
/* 16 bytes (both addresses 16-byte aligned); zero-fills past bytes */
__device__ __forceinline__ static void cp_async16(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
__device__ __forceinline__ static void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/* Waits until at most one committed group (the chunk being prefetched) is still in flight. */
__device__ __forceinline__ static void cp_async_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::); }
/* Waits until at most N committed groups (the newest) are still in flight: a pipeline N + 1 stages deep. */
template <int N> __device__ __forceinline__ static void cp_async_wait_pending() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
/* Waits for every committed group. */
__device__ __forceinline__ static void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

#endif
