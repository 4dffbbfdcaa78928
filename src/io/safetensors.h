/* safetensors files: a validated, memory-mapped reader and an atomic writer.
 * Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]},
 * "__metadata__": {str: str}}, then the data buffer; offsets are relative to the buffer start. */
#ifndef SSM_SAFETENSORS_H
#define SSM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data; /* points into the mapping (read) or caller memory (write) */
} st_tensor;

typedef struct {
    char *path;
    void *map;           /* whole file: mmap'd read-only (st_open) or the caller's buffer (st_open_buffer) */
    size_t map_len;
    int mapped;          /* 1 when st_close must munmap `map` */
    st_tensor *tensors;  /* [n], in header order */
    int n;
    char **meta_keys, **meta_values; /* __metadata__ string pairs, [n_meta] */
    int n_meta;
} st_file;

size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t); /* "F32", "BF16", ... */

/* Opens and validates: header length within the file, valid JSON, known dtypes, shape product *
 * dtype size == data_offsets span, offsets in range and not overlapping, data buffer fully covered.
 * Returns 0, or -1 with a one-line ssm_error() naming the file and the problem. */
int st_open(st_file *f, const char *path);
/* The same validation for a file already in memory (data[0..len), e.g. a fuzzer's input); `name` stands
 * in for the path in messages. Tensors point into `data`, which must outlive f; st_close leaves it alone. */
int st_open_buffer(st_file *f, const void *data, size_t len, const char *name);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_meta(const st_file *f, const char *key); /* NULL when absent */

/* Copies tensor t to `out` as float32, converting F16/BF16/F64 (others: error). n must equal the
 * tensor's element count. */
int st_read_f32(const st_file *f, const st_tensor *t, float *out, size_t n);

/* Writes tensors (data from t[i].data, t[i].nbytes bytes) in the given order, 8-byte aligned header,
 * with optional metadata pairs, to `path` atomically: path.tmp, fsync, rename. */
int st_write(const char *path, const st_tensor *t, int n, const char *const *meta_keys,
             const char *const *meta_values, int n_meta);

#endif
