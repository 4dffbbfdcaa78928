/* A training run's directory (train --out): who owns it, and whether it already holds a run.
 *   RUN/lock           held (flock) by the one process training into RUN; it holds that process's pid
 *   RUN/metrics.jsonl  one JSON object per line (src/io/metrics_log.c)
 *   RUN/checkpoint/    the latest checkpoint; checkpoint.tmp/ and checkpoint.old/ exist only during a save
 *   RUN/best/          the model with the best validation loss so far (config.json + model.safetensors) */
#ifndef SSM_RUN_DIR_H
#define SSM_RUN_DIR_H

#include "io/fileio.h"

typedef struct {
    int fd;              /* the open lock file, -1 when not held */
    int created_dir;     /* RUN did not exist before run_lock_take: a failed start removes it again */
    char dir[PATH_CAP];
    char path[PATH_CAP]; /* RUN/lock */
} run_lock;

/* Creates RUN (and its parents) if needed and takes its lock without waiting. A lock held by another
 * process is a one-line error naming it (pid and host); the lock dies with its process, kill -9 included. */
int run_lock_take(run_lock *l, const char *dir);
/* Drops the lock and its file, and RUN itself when this run created it and it is still empty (a run that
 * failed before it wrote anything leaves nothing behind). */
void run_lock_release(run_lock *l);

/* 1 when RUN holds an earlier run (a checkpoint, a best model or metrics.jsonl), else 0. */
int run_dir_has_run(const char *dir);
/* Removes an earlier run's files (train --overwrite): checkpoint*, best*, metrics.jsonl. */
int run_dir_clear(const char *dir);

#endif
