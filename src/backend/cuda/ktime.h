/* Per-kernel GPU times, for tuning where no profiler is installed (the device machine this project borrows has no
 * nsys or ncu). With SSM_KERNEL_TIMES=1 in the environment, ktime_mark("name") after a launch records an event on
 * the calling thread's default stream, and the time since the previous mark (or ktime_start) is charged to that
 * name; at exit the totals print to stderr, largest first. Off (the default) each call is one test of a cached
 * flag. Not thread-safe: for one training thread (ssm bench). */
#ifndef SSM_KTIME_H
#define SSM_KTIME_H

#ifdef __cplusplus
extern "C" {
#endif

/* An op begins: the next mark counts from here. */
void ktime_start(void);
/* The kernel(s) launched since the last mark or start are `name` (a string literal: kept, not copied). */
void ktime_mark(const char *name);

#ifdef __cplusplus
}
#endif

#endif
