/* libFuzzer harness for the safetensors reader (make fuzz; tests/fuzz/run.sh).
 * Any input goes through st_open_buffer, the same validation st_open runs on a mapped file. Whatever it
 * accepts must be safe to use: every tensor lies inside the input, every floating-point tensor converts
 * with st_read_f32, and lookups by name and metadata key find what the header listed. */
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "io/safetensors.h"
#include "ssm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy of exactly `size` bytes, so ASan flags any read past the end of the file. */
    uint8_t *copy = malloc(size ? size : 1);
    CHECK(copy, "out of memory");
    if (size) memcpy(copy, data, size);
    st_file f;
    ssm_error("%s", "");
    if (st_open_buffer(&f, copy, size, "fuzz.safetensors") != 0) {
        CHECK(strcmp(ssm_last_error(), "unknown error") != 0, "input rejected without a message");
        CHECK(f.tensors == NULL && f.path == NULL && f.map == NULL, "failed open left state behind");
        free(copy);
        return 0;
    }
    for (int i = 0; i < f.n; i++) {
        const st_tensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        CHECK(p >= copy && t->nbytes <= size && (size_t)(p - copy) <= size - t->nbytes, "tensor '%s' outside the file",
              t->name);
        CHECK(st_find(&f, t->name) == t, "st_find('%s') found another tensor", t->name);
        size_t esize = st_dtype_size(t->dtype);
        CHECK(esize > 0, "tensor '%s' has an invalid dtype", t->name);
        size_t count = t->nbytes / esize;
        volatile uint8_t sum = 0; /* touch every byte so ASan checks the whole span */
        for (size_t b = 0; b < t->nbytes; b++) sum += p[b];
        (void)sum;
        int is_float = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64;
        float *out = malloc((count ? count : 1) * sizeof *out);
        CHECK(out, "out of memory");
        int rc = st_read_f32(&f, t, out, count);
        CHECK(rc == (is_float ? 0 : -1), "st_read_f32 on '%s' (%s) returned %d", t->name, st_dtype_name(t->dtype),
              rc);
        if (count > 0) CHECK(st_read_f32(&f, t, out, count - 1) == -1, "wrong element count accepted");
        free(out);
    }
    for (int i = 0; i < f.n_meta; i++) CHECK(st_meta(&f, f.meta_keys[i]) != NULL, "metadata key lost");
    st_close(&f);
    free(copy);
    return 0;
}
