/* The emulator's stand-in for src/backend/cuda/ktime.h: no kernel times on the CPU. */
#ifndef SSM_KTIME_H
#define SSM_KTIME_H
static inline void ktime_start(void) {}
static inline void ktime_mark(const char *name) { (void)name; }
#endif
