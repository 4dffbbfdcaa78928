/* Whole-file reads and crash-safe writes (tmp file + fsync + rename) for configs, logs and checkpoints. */
#include "io/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

void path_join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, PATH_CAP, "%s/%s", dir, name);
    CHECK(n >= 0 && n < PATH_CAP, "path too long: %s/%s", dir, name);
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int file_open_stat(const char *path, struct stat *st) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ssm_error("%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int err = errno;
        close(fd);
        return ssm_error("%s: cannot stat: %s", path, strerror(err));
    }
    return fd;
}

int file_read_all(const char *path, char **data, size_t *len) {
    struct stat st;
    int fd = file_open_stat(path, &st);
    if (fd < 0) return -1;
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ssm_error("%s: is a directory, expected a file", path);
    }
    /* st_size is only a hint (pipes and /proc report 0), so the buffer grows until read() says EOF. */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, used = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (used + 1 >= cap) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            CHECK(bigger, "out of memory reading %s (%zu bytes)", path, cap);
            buf = bigger;
        }
        ssize_t got = read(fd, buf + used, cap - 1 - used);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return ssm_error("%s: read failed: %s", path, strerror(err));
        }
        if (got == 0) break;
        used += (size_t)got;
    }
    close(fd);
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;
}

int file_write_fully(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t put = write(fd, p, n);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) return -1;
        p += put;
        n -= (size_t)put;
    }
    return 0;
}

/* Some filesystems refuse fsync on directories, and what it protects is already complete and in place,
 * so a failure here is not reported. */
void dir_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

void file_sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = xstrdup(slash ? path : ".");
    if (slash) dir[slash == path ? 1 : slash - path] = '\0';
    dir_sync(dir);
    free(dir);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT) return ssm_error("%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

int dir_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : ssm_error("%s: cannot stat: %s", path, strerror(errno));
    /* depth first (contents before their directory), physical (links are entries, not followed) */
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

const char *dir_or_old(const char *dir, const char *file, char *buf) {
    char p[PATH_CAP], tmp[PATH_CAP];
    snprintf(buf, PATH_CAP, "%s.old", dir);
    snprintf(tmp, PATH_CAP, "%s.tmp", dir);
    for (int attempt = 0; attempt < 200; attempt++) { /* at most ~2 s, and only while a swap is under way */
        path_join(p, dir, file);
        if (file_exists(p)) return dir;
        path_join(p, buf, file);
        if (file_exists(p)) return buf;
        if (!file_exists(buf) && !file_exists(tmp)) { /* no swap under way now: one may just have ended */
            path_join(p, dir, file);
            return file_exists(p) ? dir : NULL;
        }
        usleep(10000);
    }
    return NULL;
}

int dir_create(const char *path) {
    char buf[PATH_CAP];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ssm_error("%s: path too long", path);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || !*p) {
            const char end = *p;
            *p = 0;
            struct stat st;
            if (mkdir(buf, 0777) && errno != EEXIST) return ssm_error("%s: cannot create directory: %s", buf, strerror(errno));
            if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) return ssm_error("%s: exists and is not a directory", buf);
            if (!end) return 0;
            *p = '/';
        }
}

int file_write_atomic_parts(const char *path, const void *const *parts, const size_t *lens, int n) {
    size_t plen = strlen(path);
    char *tmp = xmalloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        free(tmp);
        return ssm_error("%s: cannot create %s.tmp: %s", path, path, strerror(err));
    }
    const char *what = NULL;
    for (int i = 0; i < n && !what; i++)
        if (file_write_fully(fd, parts[i], lens[i]) != 0) what = "write";
    if (!what && fsync(fd) != 0) what = "fsync";
    int err = errno;
    if (close(fd) != 0 && !what) what = "close", err = errno;
    if (!what && rename(tmp, path) != 0) what = "rename", err = errno;
    if (what) {
        /* Leave nothing half-written behind; the destination still holds its old contents, if any. */
        unlink(tmp);
        free(tmp);
        return ssm_error("%s: %s failed: %s", path, what, strerror(err));
    }
    free(tmp);
    file_sync_parent_dir(path);
    return 0;
}

int file_write_atomic(const char *path, const void *data, size_t len) {
    const void *parts[1] = {data};
    size_t lens[1] = {len};
    return file_write_atomic_parts(path, parts, lens, 1);
}
