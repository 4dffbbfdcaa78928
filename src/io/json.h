/* A small, strict JSON reader (RFC 8259) and a writer for config.json, metrics logs and train state. */
#ifndef SSM_JSON_H
#define SSM_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    int boolean;               /* JSON_BOOL */
    double number;             /* JSON_NUMBER */
    char *string;              /* JSON_STRING: UTF-8, NUL-terminated (escapes decoded) */
    size_t string_len;         /* bytes, excluding the NUL (strings may contain \u0000) */
    struct json_value *items;  /* JSON_ARRAY / JSON_OBJECT: [count] values */
    char **keys;               /* JSON_OBJECT: [count] keys, NUL-terminated */
    size_t count;
} json_value;

/* Parses text[0..len). On error returns NULL and records "<what> at line L, column C" via ssm_error().
 * Rejects trailing garbage, invalid escapes/UTF-16 surrogates, control characters in strings,
 * nesting deeper than 256. */
json_value *json_parse(const char *text, size_t len);
/* The same, with `prefix` put verbatim before the message (e.g. "model.safetensors: invalid JSON header: "). */
json_value *json_parse_prefixed(const char *text, size_t len, const char *prefix);
/* The same with errors starting "<name>: " (a file name, or what stands for one). */
json_value *json_parse_named(const char *text, size_t len, const char *name);
/* Reads and parses a whole file; errors name the file. */
json_value *json_parse_file(const char *path);
/* The same, where the value of a member named inf_key (at any depth, arrays in it included) may also be Python's bare
 * Infinity or -Infinity, a number +-inf: transformers writes Mamba2Config's time_step_limit (0.0, inf) so. Anywhere
 * else they stay errors. */
json_value *json_parse_file_inf(const char *path, const char *inf_key);
void json_free(json_value *v);

/* Object member lookup (NULL when absent or v is not an object). */
const json_value *json_get(const json_value *obj, const char *key);
/* Typed getters for config files: return 0 and store the value, or -1 with ssm_error() naming `key`
 * when present with the wrong type / out of range. When the key is absent they return 1 and leave
 * *out untouched, so callers keep their default. */
int json_get_int(const json_value *obj, const char *key, long long *out);
int json_get_double(const json_value *obj, const char *key, double *out);
int json_get_bool(const json_value *obj, const char *key, int *out);
int json_get_string(const json_value *obj, const char *key, const char **out);

/* Growable output buffer with JSON-aware appenders; used to write config.json and JSON-lines logs. */
typedef struct {
    char *data;
    size_t len, cap;
} json_writer;
void jw_init(json_writer *w);
void jw_free(json_writer *w);
void jw_raw(json_writer *w, const char *s);                  /* appends s verbatim */
void jw_string(json_writer *w, const char *s);               /* appends a quoted, escaped string */
void jw_number(json_writer *w, double x);                    /* shortest round-trip repr ("%.17g" trimmed); NaN/inf -> null */
void jw_int(json_writer *w, long long x);
/* Object helpers: jw_key writes `"key": ` preceded by ", " unless it is the first key after '{'. */
void jw_begin_object(json_writer *w);
void jw_end_object(json_writer *w);
void jw_key(json_writer *w, const char *key);

#endif
