/* A profiling backend: wraps another backend's table so that every op waits for the device and adds its
 * wall time to a per-op total (for `ssm bench --profile`: where a training step's time goes). Slower than
 * the backend it wraps (one synchronization per op); one profiled backend at a time. */
#ifndef SSM_PROFILE_H
#define SSM_PROFILE_H

#include "backend/backend.h"

/* The profiling twin of inner (its totals reset). */
const backend *profile_wrap(const backend *inner);
/* Prints each op's calls and milliseconds per `steps` (per step), GEMMs first, with their share. */
void profile_print(int steps);

#endif
