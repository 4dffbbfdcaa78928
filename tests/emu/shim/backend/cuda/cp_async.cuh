/* The emulator's stand-in for src/backend/cuda/cp_async.cuh (emu.cpp queues the copies per thread). */
#ifndef SSM_CUDA_CP_ASYNC_CUH
#define SSM_CUDA_CP_ASYNC_CUH
static inline void cp_async4(void *dst, const void *src, int bytes) { emu_cp_async(dst, src, bytes, 4); }
static inline void cp_async8(void *dst, const void *src, int bytes) { emu_cp_async(dst, src, bytes, 8); }
static inline void cp_async16(void *dst, const void *src, int bytes) { emu_cp_async(dst, src, bytes, 16); }
static inline void cp_async_commit() { emu_cp_commit(); }
static inline void cp_async_wait_prev() { emu_cp_wait(1); }
static inline void cp_async_wait_all() { emu_cp_wait(0); }
template <int N> static inline void cp_async_wait_pending() { emu_cp_wait(N); }
#endif
