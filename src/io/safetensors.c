/* safetensors reader (mmap + full validation before any offset is trusted) and atomic writer.
 * Checkpoints, exported models and the PyTorch oracle's dumps all pass through here, so every way a
 * file can be malformed gets a one-line message naming the file and the tensor. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "io/fileio.h"
#include "io/json.h"

/* Tensor data is used in place from the mapping, which is only right on a little-endian host. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

/* The reference implementation's limit; a larger "header" is a corrupt length field, not a header. */
#define ST_MAX_HEADER (100u << 20)
/* JSON numbers are doubles: integers above 2^53 cannot be trusted to be what was written. */
#define ST_MAX_EXACT 9007199254740992.0

static const char *const st_names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t st_sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1};
#define ST_NDTYPES ((int)(sizeof st_names / sizeof st_names[0]))

size_t st_dtype_size(st_dtype t) { return (int)t >= 0 && (int)t < ST_NDTYPES ? st_sizes[t] : 0; }
const char *st_dtype_name(st_dtype t) { return (int)t >= 0 && (int)t < ST_NDTYPES ? st_names[t] : "?"; }

static int st_dtype_parse(const char *s, st_dtype *out) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, st_names[i]) == 0) {
            *out = (st_dtype)i;
            return 0;
        }
    return -1;
}

/* "[2, 3]" for messages; "[]" for a 0-d tensor. */
static const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Element count and byte size of a shape; -1 when a dimension is negative or the product overflows. */
static int st_shape_bytes(const int64_t *shape, int ndim, st_dtype dtype, size_t *nbytes) {
    size_t bytes = st_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] > 0 && bytes > SIZE_MAX / (size_t)shape[i]) return -1;
        bytes *= (size_t)shape[i];
    }
    *nbytes = bytes;
    return 0;
}

static size_t st_count(const st_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* A JSON number that is a non-negative integer a double represents exactly. */
static int st_json_uint(const json_value *v, uint64_t *out) {
    if (!v || v->type != JSON_NUMBER || v->number < 0 || v->number != floor(v->number) || v->number > ST_MAX_EXACT)
        return -1;
    *out = (uint64_t)v->number;
    return 0;
}

void st_close(st_file *f) {
    if (f->mapped) munmap(f->map, f->map_len);
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int st_parse_metadata(st_file *f, const json_value *meta) {
    if (meta->type != JSON_OBJECT) return ssm_error("%s: __metadata__ is not a JSON object", f->path);
    f->meta_keys = xcalloc(meta->count ? meta->count : 1, sizeof *f->meta_keys);
    f->meta_values = xcalloc(meta->count ? meta->count : 1, sizeof *f->meta_values);
    for (size_t i = 0; i < meta->count; i++) {
        if (meta->items[i].type != JSON_STRING)
            return ssm_error("%s: __metadata__ value for '%s' is not a string", f->path, meta->keys[i]);
        f->meta_keys[f->n_meta] = xstrdup(meta->keys[i]);
        f->meta_values[f->n_meta] = xstrdup(meta->items[i].string);
        f->n_meta++;
    }
    return 0;
}

/* Fills t from its header entry and checks everything that does not depend on other tensors. */
static int st_parse_tensor(const st_file *f, const char *name, const json_value *info, size_t data_len, st_tensor *t,
                           uint64_t *begin, uint64_t *end) {
    const char *path = f->path;
    if (info->type != JSON_OBJECT) return ssm_error("%s: tensor '%s' header entry is not a JSON object", path, name);
    for (size_t i = 0; i < info->count; i++)
        if (strcmp(info->keys[i], "dtype") && strcmp(info->keys[i], "shape") && strcmp(info->keys[i], "data_offsets"))
            return ssm_error("%s: tensor '%s' has unknown field '%s'", path, name, info->keys[i]);
    const json_value *dtype = json_get(info, "dtype"), *shape = json_get(info, "shape"),
                     *offsets = json_get(info, "data_offsets");
    if (!dtype || dtype->type != JSON_STRING) return ssm_error("%s: tensor '%s' has no string \"dtype\"", path, name);
    if (st_dtype_parse(dtype->string, &t->dtype))
        return ssm_error("%s: tensor '%s' has unknown dtype '%s' (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)",
                         path, name, dtype->string);
    if (!shape || shape->type != JSON_ARRAY) return ssm_error("%s: tensor '%s' has no \"shape\" array", path, name);
    if (shape->count > ST_MAX_DIMS)
        return ssm_error("%s: tensor '%s' has %zu dimensions (at most %d)", path, name, shape->count, ST_MAX_DIMS);
    t->ndim = (int)shape->count;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim;
        if (st_json_uint(&shape->items[d], &dim))
            return ssm_error("%s: tensor '%s' shape entry %d is not a non-negative integer", path, name, d);
        t->shape[d] = (int64_t)dim;
    }
    if (!offsets || offsets->type != JSON_ARRAY || offsets->count != 2 || st_json_uint(&offsets->items[0], begin) ||
        st_json_uint(&offsets->items[1], end))
        return ssm_error("%s: tensor '%s' needs \"data_offsets\": [begin, end] of non-negative integers", path, name);
    char shp[160];
    st_shape_str(t->shape, t->ndim, shp, sizeof shp);
    if (st_shape_bytes(t->shape, t->ndim, t->dtype, &t->nbytes))
        return ssm_error("%s: tensor '%s' shape %s of %s overflows", path, name, shp, st_names[t->dtype]);
    if (*begin > *end || *end - *begin != t->nbytes)
        return ssm_error("%s: tensor '%s' data_offsets [%llu, %llu] do not match shape %s of %s (%zu bytes)", path,
                         name, (unsigned long long)*begin, (unsigned long long)*end, shp, st_names[t->dtype],
                         t->nbytes);
    if (*end > data_len)
        return ssm_error("%s: tensor '%s' data_offsets [%llu, %llu] run past the end of the %zu-byte data buffer "
                         "(truncated file?)",
                         path, name, (unsigned long long)*begin, (unsigned long long)*end, data_len);
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int index;
} st_span;

static int st_span_cmp(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

/* The tensors, sorted by offset, must tile the data buffer exactly: an overlap means two tensors share
 * bytes, and a gap means bytes that no tensor explains (a sign of a broken writer or a spliced file). */
static int st_check_coverage(const st_file *f, st_span *spans, size_t data_len) {
    qsort(spans, (size_t)f->n, sizeof *spans, st_span_cmp);
    uint64_t covered = 0;
    for (int i = 0; i < f->n; i++) {
        const st_span *s = &spans[i];
        if (s->begin < covered) {
            const st_span *prev = &spans[i - 1];
            return ssm_error("%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap", f->path,
                             f->tensors[prev->index].name, (unsigned long long)prev->begin,
                             (unsigned long long)prev->end, f->tensors[s->index].name, (unsigned long long)s->begin,
                             (unsigned long long)s->end);
        }
        if (s->begin > covered)
            return ssm_error("%s: data bytes [%llu, %llu) are not covered by any tensor (gap before '%s')", f->path,
                             (unsigned long long)covered, (unsigned long long)s->begin, f->tensors[s->index].name);
        covered = s->end;
    }
    if (covered != data_len)
        return ssm_error("%s: data buffer has %zu bytes but the tensors cover only the first %llu", f->path, data_len,
                         (unsigned long long)covered);
    return 0;
}

static int st_parse_header(st_file *f, const json_value *root, const unsigned char *data, size_t data_len) {
    if (root->type != JSON_OBJECT) return ssm_error("%s: header is not a JSON object", f->path);
    f->tensors = xcalloc(root->count ? root->count : 1, sizeof *f->tensors);
    st_span *spans = xcalloc(root->count ? root->count : 1, sizeof *spans);
    int rc = 0;
    for (size_t i = 0; i < root->count && rc == 0; i++) {
        if (strcmp(root->keys[i], "__metadata__") == 0) {
            rc = st_parse_metadata(f, &root->items[i]);
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        st_span *s = &spans[f->n];
        rc = st_parse_tensor(f, root->keys[i], &root->items[i], data_len, t, &s->begin, &s->end);
        if (rc) break;
        t->name = xstrdup(root->keys[i]);
        t->data = data + s->begin;
        s->index = f->n++;
    }
    if (rc == 0) rc = st_check_coverage(f, spans, data_len);
    free(spans);
    return rc;
}

/* Maps path read-only into *map / *len. An empty file is not mapped (mmap rejects length 0): *map
 * stays NULL and st_open_buffer reports it like any other too-short file. */
static int st_map_file(const char *path, void **map, size_t *len) {
    struct stat st;
    *map = NULL;
    *len = 0;
    int fd = file_open_stat(path, &st);
    if (fd < 0) return -1;
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ssm_error("%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file alive */
    if (p == MAP_FAILED) return ssm_error("%s: mmap failed: %s", path, strerror(err));
    *map = p;
    *len = (size_t)st.st_size;
    return 0;
}

int st_open_buffer(st_file *f, const void *data, size_t len, const char *name) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(name);
    f->map = (void *)data; /* never written through: tensors hand out const pointers */
    f->map_len = len;
    const char *path = f->path;
    if (len < 8) {
        ssm_error("%s: %s (%zu bytes); a safetensors file starts with an 8-byte header length", path,
                  len == 0 ? "file is empty" : "file too short", len);
        goto fail;
    }
    const unsigned char *bytes = data;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i];
    if (header_len > len - 8) {
        ssm_error("%s: header length %llu runs past the end of the file (%zu bytes; truncated or not safetensors?)",
                  path, (unsigned long long)header_len, len);
        goto fail;
    }
    if (header_len > ST_MAX_HEADER) {
        ssm_error("%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)header_len,
                  ST_MAX_HEADER);
        goto fail;
    }
    size_t plen = strlen(path);
    char *prefix = xmalloc(plen + 24);
    snprintf(prefix, plen + 24, "%s: invalid JSON header: ", path);
    json_value *root = json_parse_prefixed((const char *)bytes + 8, (size_t)header_len, prefix);
    free(prefix);
    if (!root) goto fail;
    int rc = st_parse_header(f, root, bytes + 8 + header_len, len - 8 - (size_t)header_len);
    json_free(root);
    if (rc == 0) return 0;
fail:
    f->map = NULL; /* the caller's buffer: st_close must not unmap it */
    st_close(f);
    return -1;
}

int st_open(st_file *f, const char *path) {
    void *map;
    size_t len;
    memset(f, 0, sizeof *f);
    if (st_map_file(path, &map, &len)) return -1;
    static const unsigned char empty[1];
    if (st_open_buffer(f, map ? map : empty, len, path)) {
        if (map) munmap(map, len);
        return -1;
    }
    f->mapped = map != NULL;
    return 0;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* IEEE half -> float, exact for every input (subnormals, infinities, NaN payloads). */
static float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | mant << 13;
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* Subnormal half: normalize the mantissa into a normal float. */
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while (!(mant & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (mant & 0x3ff) << 13;
    }
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

int st_read_f32(const st_file *f, const st_tensor *t, float *out, size_t n) {
    size_t count = st_count(t);
    if (n != count)
        return ssm_error("%s: tensor '%s' has %zu elements, caller expected %zu", f->path, t->name, count, n);
    const unsigned char *src = t->data;
    switch (t->dtype) {
    case ST_F32: memcpy(out, src, count * 4); return 0;
    case ST_F64:
        for (size_t i = 0; i < count; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < count; i++) {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            if (t->dtype == ST_F16) {
                out[i] = st_f16_to_f32(h);
            } else {
                uint32_t bits = (uint32_t)h << 16; /* bf16 is the top half of a float32 */
                memcpy(&out[i], &bits, 4);
            }
        }
        return 0;
    default:
        return ssm_error("%s: tensor '%s' has dtype %s; expected F32, F16, BF16 or F64", f->path, t->name,
                         st_dtype_name(t->dtype));
    }
}

/* Rejects what st_open would reject, so a bad call fails here instead of producing an unreadable file. */
static int st_check_tensors(const char *path, const st_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        size_t need;
        char shp[160];
        if (!t[i].name || strcmp(t[i].name, "__metadata__") == 0)
            return ssm_error("%s: tensor %d has an invalid name", path, i);
        if (st_dtype_size(t[i].dtype) == 0) return ssm_error("%s: tensor '%s' has an invalid dtype", path, t[i].name);
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS)
            return ssm_error("%s: tensor '%s' has %d dimensions (0 to %d allowed)", path, t[i].name, t[i].ndim,
                             ST_MAX_DIMS);
        st_shape_str(t[i].shape, t[i].ndim, shp, sizeof shp);
        if (st_shape_bytes(t[i].shape, t[i].ndim, t[i].dtype, &need))
            return ssm_error("%s: tensor '%s' shape %s of %s overflows", path, t[i].name, shp,
                             st_dtype_name(t[i].dtype));
        if (need != t[i].nbytes)
            return ssm_error("%s: tensor '%s' has %zu bytes but shape %s of %s needs %zu", path, t[i].name, t[i].nbytes,
                             shp, st_dtype_name(t[i].dtype), need);
        if (t[i].nbytes > 0 && !t[i].data) return ssm_error("%s: tensor '%s' has no data", path, t[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].name, t[j].name) == 0) return ssm_error("%s: duplicate tensor name '%s'", path, t[i].name);
    }
    return 0;
}

static void st_write_header(json_writer *w, const st_tensor *t, int n, const char *const *meta_keys,
                            const char *const *meta_values, int n_meta) {
    jw_begin_object(w);
    if (n_meta > 0) {
        jw_key(w, "__metadata__");
        jw_begin_object(w);
        for (int i = 0; i < n_meta; i++) {
            jw_key(w, meta_keys[i]);
            jw_string(w, meta_values[i]);
        }
        jw_end_object(w);
    }
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        jw_key(w, t[i].name);
        jw_begin_object(w);
        jw_key(w, "dtype");
        jw_string(w, st_dtype_name(t[i].dtype));
        jw_key(w, "shape");
        jw_raw(w, "[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d) jw_raw(w, ", ");
            jw_int(w, t[i].shape[d]);
        }
        jw_raw(w, "]");
        jw_key(w, "data_offsets");
        jw_raw(w, "[");
        jw_int(w, (long long)offset);
        jw_raw(w, ", ");
        offset += t[i].nbytes;
        jw_int(w, (long long)offset);
        jw_raw(w, "]");
        jw_end_object(w);
    }
    jw_end_object(w);
    /* Pad with spaces (valid JSON whitespace) so the data buffer starts 8-byte aligned in the file. */
    while ((8 + w->len) % 8) jw_raw(w, " ");
}

int st_write(const char *path, const st_tensor *t, int n, const char *const *meta_keys, const char *const *meta_values,
             int n_meta) {
    if (n < 0 || n_meta < 0) return ssm_error("%s: negative tensor or metadata count", path);
    if (st_check_tensors(path, t, n)) return -1;
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i]) return ssm_error("%s: metadata entry %d is NULL", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta_keys[i], meta_keys[j]) == 0)
                return ssm_error("%s: duplicate metadata key '%s'", path, meta_keys[i]);
    }
    json_writer w;
    jw_init(&w);
    st_write_header(&w, t, n, meta_keys, meta_values, n_meta);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)w.len >> (8 * i));
    const void **parts = xcalloc((size_t)n + 2, sizeof *parts);
    size_t *lens = xcalloc((size_t)n + 2, sizeof *lens);
    int np = 0;
    parts[np] = len_bytes, lens[np++] = 8;
    parts[np] = w.data, lens[np++] = w.len;
    for (int i = 0; i < n; i++)
        if (t[i].nbytes) parts[np] = t[i].data, lens[np++] = t[i].nbytes;
    int rc = file_write_atomic_parts(path, parts, lens, np);
    free(parts);
    free(lens);
    jw_free(&w);
    return rc;
}
