/* Whole-file reads and crash-safe writes. */
#ifndef SSM_FILEIO_H
#define SSM_FILEIO_H

#include <stddef.h>
#include <sys/stat.h>

#define PATH_CAP 4096

/* out = dir/name (PATH_CAP bytes); a path that does not fit is an internal error. */
void path_join(char *out, const char *dir, const char *name);
int file_exists(const char *path);

/* Opens path read-only and stats it: the descriptor, or -1 with ssm_error() naming the file. */
int file_open_stat(const char *path, struct stat *st);

/* Reads a whole file into a NUL-terminated malloc'd buffer. -1 with ssm_error() naming the file. */
int file_read_all(const char *path, char **data, size_t *len);
/* Writes path.tmp, fsyncs it, renames it over path: readers see the old file or the new, never a part. */
int file_write_atomic(const char *path, const void *data, size_t len);
/* The same for data in n pieces written back to back, so large files (checkpoints) need no joined copy. */
int file_write_atomic_parts(const char *path, const void *const *parts, const size_t *lens, int n);

/* Writes all n bytes to fd (retrying short writes and EINTR): 0, or -1 with errno set. */
int file_write_fully(int fd, const char *p, size_t n);
/* Removes path and everything under it (symbolic links are removed, never followed); a missing path is
 * not an error. -1 with ssm_error() naming what could not be removed. */
int dir_remove_tree(const char *path);
/* fsync of a directory, so that the renames and creations inside it survive a power loss. Best effort:
 * some filesystems refuse fsync on directories. */
void dir_sync(const char *path);
/* dir_sync of path's directory: makes a rename or creation of path itself durable. */
void file_sync_parent_dir(const char *path);
/* Where a directory replaced by dir -> dir.old, dir.tmp -> dir, rm dir.old (checkpoint saves) holds `file`:
 * dir, else dir.old (the complete copy after a crash between the renames); NULL when neither. A swap running
 * now in another process is ridden out: while dir.old or dir.tmp exists, both files are looked for again
 * (for up to 2 s). `buf` (PATH_CAP) holds the dir.old path when that is the answer. */
const char *dir_or_old(const char *dir, const char *file, char *buf);
/* mkdir -p: creates path and its missing parents. -1 with ssm_error() naming the one that failed. */
int dir_create(const char *path);

#endif
