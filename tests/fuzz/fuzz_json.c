/* libFuzzer harness for the JSON reader and writer (make fuzz; tests/fuzz/run.sh).
 * Any input: json_parse must return a tree or NULL with a message, never crash, leak or read out of
 * bounds. Accepted input: writing the tree with the json_writer and parsing that again must give an
 * equal tree (same types, bit-identical numbers, same strings, keys in the same order). */
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "io/json.h"
#include "ssm.h"

/* Mirrors the writer's API: jw_string takes NUL-terminated strings, so a value with an embedded \u0000
 * (which the reader allows, object keys aside) is written up to its first NUL. */
static void write_value(json_writer *w, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: jw_raw(w, "null"); break;
    case JSON_BOOL: jw_raw(w, v->boolean ? "true" : "false"); break;
    case JSON_NUMBER: jw_number(w, v->number); break;
    case JSON_STRING: jw_string(w, v->string); break;
    case JSON_ARRAY:
        jw_raw(w, "[");
        for (size_t i = 0; i < v->count; i++) {
            if (i) jw_raw(w, ", ");
            write_value(w, &v->items[i]);
        }
        jw_raw(w, "]");
        break;
    case JSON_OBJECT:
        jw_begin_object(w);
        for (size_t i = 0; i < v->count; i++) {
            jw_key(w, v->keys[i]);
            write_value(w, &v->items[i]);
        }
        jw_end_object(w);
        break;
    }
}

static int same_value(const json_value *a, const json_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case JSON_NULL: return 1;
    case JSON_BOOL: return a->boolean == b->boolean;
    case JSON_NUMBER: return memcmp(&a->number, &b->number, sizeof a->number) == 0; /* -0 stays -0 */
    case JSON_STRING: {
        size_t n = strlen(a->string); /* see write_value */
        return b->string_len == n && memcmp(a->string, b->string, n) == 0 && strlen(b->string) == n;
    }
    case JSON_ARRAY:
    case JSON_OBJECT:
        if (a->count != b->count) return 0;
        for (size_t i = 0; i < a->count; i++) {
            if (a->type == JSON_OBJECT && strcmp(a->keys[i], b->keys[i]) != 0) return 0;
            if (!same_value(&a->items[i], &b->items[i])) return 0;
        }
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ssm_error("%s", ""); /* clear the message so a rejection without one shows as "unknown error" */
    json_value *v = json_parse((const char *)data, size);
    if (!v) {
        CHECK(strcmp(ssm_last_error(), "unknown error") != 0, "input rejected without a message");
        return 0;
    }
    json_writer w;
    jw_init(&w);
    write_value(&w, v);
    json_value *again = json_parse(w.data, w.len);
    if (!again) {
        fprintf(stderr, "written JSON does not parse: %s\n%.*s\n", ssm_last_error(), (int)(w.len < 2000 ? w.len : 2000),
                w.data);
        __builtin_trap();
    }
    if (!same_value(v, again)) {
        fprintf(stderr, "round trip changed the tree; written:\n%.*s\n", (int)(w.len < 2000 ? w.len : 2000), w.data);
        __builtin_trap();
    }
    json_free(again);
    json_free(v);
    jw_free(&w);
    return 0;
}
