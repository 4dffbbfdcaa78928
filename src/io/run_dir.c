/* A training run's directory (see run_dir.h): its lock and the files of an earlier run. */
#include "io/run_dir.h"
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The names an earlier run leaves in RUN; the .tmp/.old ones exist only if it died in a save. */
static const char *const run_files[] = {"checkpoint", "checkpoint.tmp", "checkpoint.old", "best", "best.tmp",
                                        "best.old", "metrics.jsonl", "metrics.jsonl.tmp"};

static void lock_holder(int fd, char *out, size_t cap) {
    char buf[256];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    snprintf(out, cap, "%s", n > 0 ? buf : "a process that has not written its pid yet");
}

int run_lock_take(run_lock *l, const char *dir) {
    memset(l, 0, sizeof *l);
    l->fd = -1;
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    struct stat st;
    l->created_dir = stat(dir, &st) != 0;
    if (dir_create(dir)) return -1;
    path_join(l->path, dir, "lock");
    /* A run that finishes unlinks the lock file. If that happens between our open and our flock, we hold a
     * lock on a file no longer in the directory, while a third process may create and lock a new one: so
     * after locking, check that the path still names our file, and retry if not. */
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return ssm_error("%s: cannot create the run's lock file: %s", l->path, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            char holder[256];
            lock_holder(fd, holder, sizeof holder);
            close(fd);
            if (err == EWOULDBLOCK)
                return ssm_error("%s is in use by another training run (%s); wait for it to finish or choose "
                                 "another --out", dir, holder);
            return ssm_error("%s: cannot lock: %s", l->path, strerror(err));
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(l->path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
            char me[320], host[256] = "";
            gethostname(host, sizeof host - 1);
            int n = snprintf(me, sizeof me, "pid %ld on %s\n", (long)getpid(), host[0] ? host : "this host");
            if (ftruncate(fd, 0) != 0 || pwrite(fd, me, (size_t)n, 0) != n) { /* only informative: go on */
            }
            l->fd = fd;
            return 0;
        }
        close(fd);
    }
    return ssm_error("%s: cannot lock: the lock file keeps being replaced", l->path);
}

void run_lock_release(run_lock *l) {
    if (l->fd < 0) return;
    unlink(l->path); /* while still holding the lock: see run_lock_take */
    close(l->fd);
    l->fd = -1;
    if (l->created_dir) rmdir(l->dir); /* fails, harmlessly, unless empty */
}

int run_dir_has_run(const char *dir) {
    char p[PATH_CAP];
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; i++) {
        struct stat st;
        path_join(p, dir, run_files[i]);
        /* an empty metrics.jsonl: a run killed before its first step, which holds nothing to lose */
        if (stat(p, &st) == 0 && (S_ISDIR(st.st_mode) || st.st_size > 0)) return 1;
    }
    return 0;
}

int run_dir_clear(const char *dir) {
    char p[PATH_CAP];
    for (size_t i = 0; i < sizeof run_files / sizeof run_files[0]; i++) {
        path_join(p, dir, run_files[i]);
        if (dir_remove_tree(p)) return -1;
    }
    dir_sync(dir);
    return 0;
}
