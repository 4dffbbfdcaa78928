/* Strict JSON (RFC 8259) reader and a small writer: config.json, safetensors headers, metrics logs.
 * The reader rejects anything a lenient parser would guess at (trailing commas, bad UTF-8, lone
 * surrogates, duplicate keys), because a silently misread config trains the wrong model. */
#include "io/json.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "common.h"
#include "io/fileio.h"

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *text;
    size_t len, pos;
    int depth;
    int failed;
    size_t error_pos; /* byte offset the message refers to */
    char error[200];
    const char *inf_key; /* or NULL: the one member whose value may hold Python's bare Infinity (json_parse_file_inf) */
    int in_inf_key;      /* parsing inside that member's value */
} json_parser;

/* Keeps the first failure only: later ones are consequences of it. */
static int json_fail(json_parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int json_fail(json_parser *p, size_t pos, const char *fmt, ...) {
    if (p->failed) return -1;
    p->failed = 1;
    p->error_pos = pos;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
    return -1;
}

/* Describes the byte at pos for messages: "'x'", "byte 0x01" or "end of input". */
static const char *json_describe(const json_parser *p, size_t pos, char *buf, size_t cap) {
    if (pos >= p->len) return "end of input";
    unsigned char c = (unsigned char)p->text[pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, cap, "'%c'", c);
    else
        snprintf(buf, cap, "byte 0x%02x", c);
    return buf;
}

static int json_unexpected(json_parser *p, size_t pos, const char *expected) {
    char buf[16];
    return json_fail(p, pos, "unexpected %s, expected %s", json_describe(p, pos, buf, sizeof buf), expected);
}

static void json_skip_ws(json_parser *p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int json_peek(const json_parser *p) { return p->pos < p->len ? (unsigned char)p->text[p->pos] : -1; }

/* Length of the well-formed UTF-8 sequence at s[0..n) (1..4), or 0: rejects overlong forms,
 * UTF-16 surrogates and code points past U+10FFFF, as RFC 3629 requires. */
static int json_utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c == 0xe0)
        len = 3, lo = 0xa0;
    else if (c == 0xed)
        len = 3, hi = 0x9f;
    else if (c >= 0xe1 && c <= 0xef)
        len = 3;
    else if (c == 0xf0)
        len = 4, lo = 0x90;
    else if (c == 0xf4)
        len = 4, hi = 0x8f;
    else if (c >= 0xf1 && c <= 0xf3)
        len = 4;
    else
        return 0;
    if (n < (size_t)len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

static size_t json_utf8_encode(unsigned cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Reads the 4 hex digits of a \u escape whose backslash is at `at`; -1 on error. */
static long json_hex4(json_parser *p, size_t at) {
    if (at + 6 > p->len) return json_fail(p, at, "invalid \\u escape: expected 4 hex digits");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[at + 2 + i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return json_fail(p, at, "invalid \\u escape: expected 4 hex digits");
        v = v * 16 + (unsigned)d;
    }
    return (long)v;
}

/* Decodes one escape sequence whose backslash is at p->pos into out; returns bytes written or -1. */
static int json_parse_escape(json_parser *p, char *out) {
    size_t at = p->pos;
    if (at + 1 >= p->len) return json_fail(p, at, "unterminated escape sequence");
    char e = p->text[at + 1];
    const char *simple = "\"\\/bfnrt", *decoded = "\"\\/\b\f\n\r\t";
    const char *hit = e ? strchr(simple, e) : NULL;
    if (hit) {
        out[0] = decoded[hit - simple];
        p->pos += 2;
        return 1;
    }
    if (e != 'u') {
        char buf[16];
        return json_fail(p, at, "invalid escape '\\' followed by %s", json_describe(p, at + 1, buf, sizeof buf));
    }
    long cp = json_hex4(p, at);
    if (cp < 0) return -1;
    p->pos += 6;
    if (cp >= 0xdc00 && cp <= 0xdfff) return json_fail(p, at, "unpaired UTF-16 low surrogate \\u%04lx", cp);
    if (cp >= 0xd800 && cp <= 0xdbff) {
        /* Characters outside the BMP arrive as a high + low surrogate pair of escapes. */
        if (p->pos + 1 >= p->len || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return json_fail(p, at, "UTF-16 high surrogate \\u%04lx not followed by a low surrogate", cp);
        long lo = json_hex4(p, p->pos);
        if (lo < 0) return -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return json_fail(p, at, "UTF-16 high surrogate \\u%04lx followed by \\u%04lx, not a low surrogate", cp, lo);
        p->pos += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    return (int)json_utf8_encode((unsigned)cp, out);
}

/* p->pos is at the opening quote. Decoded text never outgrows the raw text, so one allocation of the
 * raw length suffices. */
static int json_parse_string(json_parser *p, char **out, size_t *out_len) {
    size_t start = p->pos, end = start + 1;
    while (end < p->len && p->text[end] != '"') end += p->text[end] == '\\' ? 2 : 1;
    if (end >= p->len) return json_fail(p, start, "unterminated string");
    char *buf = xmalloc(end - start);
    size_t n = 0;
    p->pos = start + 1;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->text[p->pos];
        int w;
        if (c == '\\') {
            w = json_parse_escape(p, buf + n);
            if (w < 0) goto fail;
            n += (size_t)w;
        } else if (c < 0x20) {
            json_fail(p, p->pos, "control character 0x%02x in string (escape it)", c);
            goto fail;
        } else {
            w = json_utf8_len((const unsigned char *)p->text + p->pos, end - p->pos);
            if (w == 0) {
                json_fail(p, p->pos, "invalid UTF-8 in string");
                goto fail;
            }
            memcpy(buf + n, p->text + p->pos, (size_t)w);
            n += (size_t)w;
            p->pos += (size_t)w;
        }
    }
    p->pos = end + 1;
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
fail:
    free(buf);
    return -1;
}

static size_t json_skip_digits(const json_parser *p, size_t i) {
    while (i < p->len && p->text[i] >= '0' && p->text[i] <= '9') i++;
    return i;
}

/* Grammar checked by hand first because strtod accepts more than JSON does (hex, inf, leading '+'). */
static int json_parse_number(json_parser *p, double *out) {
    size_t start = p->pos, i = start;
    if (i < p->len && p->text[i] == '-') i++;
    if (i >= p->len || p->text[i] < '0' || p->text[i] > '9') return json_unexpected(p, i, "a digit");
    if (p->text[i] == '0') {
        i++;
        if (i < p->len && p->text[i] >= '0' && p->text[i] <= '9')
            return json_fail(p, start, "number with a leading zero");
    } else {
        i = json_skip_digits(p, i);
    }
    if (i < p->len && p->text[i] == '.') {
        size_t d = json_skip_digits(p, i + 1);
        if (d == i + 1) return json_unexpected(p, d, "a digit after '.'");
        i = d;
    }
    if (i < p->len && (p->text[i] == 'e' || p->text[i] == 'E')) {
        i++;
        if (i < p->len && (p->text[i] == '+' || p->text[i] == '-')) i++;
        size_t d = json_skip_digits(p, i);
        if (d == i) return json_unexpected(p, d, "a digit in the exponent");
        i = d;
    }
    /* The text is not NUL-terminated, so strtod gets a copy. */
    size_t n = i - start;
    char small[64], *copy = n < sizeof small ? small : xmalloc(n + 1);
    memcpy(copy, p->text + start, n);
    copy[n] = '\0';
    double v = strtod(copy, NULL);
    if (copy != small) free(copy);
    if (isinf(v)) return json_fail(p, start, "number out of range of a double");
    *out = v;
    p->pos = i;
    return 0;
}

static int json_parse_value(json_parser *p, json_value *out);

static int json_enter(json_parser *p) {
    if (++p->depth > JSON_MAX_DEPTH) return json_fail(p, p->pos, "nesting deeper than %d", JSON_MAX_DEPTH);
    p->pos++; /* the '[' or '{' */
    json_skip_ws(p);
    return 0;
}

/* After an element: consumes ',' (rejecting a trailing one) and returns 1, or the closer and returns 0. */
static int json_after_element(json_parser *p, char closer) {
    json_skip_ws(p);
    int c = json_peek(p);
    if (c == ',') {
        size_t comma = p->pos++;
        json_skip_ws(p);
        if (json_peek(p) == closer) return json_fail(p, comma, "trailing comma before '%c'", closer);
        return 1;
    }
    if (c == closer) {
        p->pos++;
        p->depth--;
        return 0;
    }
    return json_unexpected(p, p->pos, closer == ']' ? "',' or ']'" : "',' or '}'");
}

static int json_parse_array(json_parser *p, json_value *out) {
    out->type = JSON_ARRAY;
    if (json_enter(p)) return -1;
    if (json_peek(p) == ']') {
        p->pos++;
        p->depth--;
        return 0;
    }
    size_t cap = 0;
    for (;;) {
        if (out->count == cap) {
            cap = cap ? cap * 2 : 4;
            out->items = xrealloc_array(out->items, cap, sizeof *out->items);
        }
        /* Counted before it is parsed so json_free sees a partially built element after an error. */
        json_value *item = &out->items[out->count++];
        memset(item, 0, sizeof *item);
        if (json_parse_value(p, item)) return -1;
        int more = json_after_element(p, ']');
        if (more <= 0) return more;
    }
}

static int json_has_key(const json_value *obj, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(obj->keys[i], key) == 0) return 1;
    return 0;
}

static int json_parse_object(json_parser *p, json_value *out) {
    out->type = JSON_OBJECT;
    if (json_enter(p)) return -1;
    if (json_peek(p) == '}') {
        p->pos++;
        p->depth--;
        return 0;
    }
    size_t cap = 0;
    for (;;) {
        if (json_peek(p) != '"') return json_unexpected(p, p->pos, "a string key");
        if (out->count == cap) {
            cap = cap ? cap * 2 : 4;
            out->items = xrealloc_array(out->items, cap, sizeof *out->items);
            out->keys = xrealloc_array(out->keys, cap, sizeof *out->keys);
        }
        size_t key_pos = p->pos, key_len, i = out->count++;
        memset(&out->items[i], 0, sizeof out->items[i]);
        out->keys[i] = NULL;
        if (json_parse_string(p, &out->keys[i], &key_len)) return -1;
        /* Keys are handed out NUL-terminated, so an embedded NUL could not be looked up faithfully. */
        if (strlen(out->keys[i]) != key_len) return json_fail(p, key_pos, "object key contains \\u0000");
        /* Objects here are small (configs, tensor headers); a quadratic check stays cheap. A duplicate
         * would otherwise make one of the two values silently win. */
        if (json_has_key(out, i, out->keys[i])) return json_fail(p, key_pos, "duplicate key \"%.60s\"", out->keys[i]);
        json_skip_ws(p);
        if (json_peek(p) != ':') return json_unexpected(p, p->pos, "':'");
        p->pos++;
        json_skip_ws(p);
        const int outer = p->in_inf_key;
        p->in_inf_key = p->inf_key && strcmp(out->keys[i], p->inf_key) == 0;
        if (json_parse_value(p, &out->items[i])) return -1;
        p->in_inf_key = outer;
        int more = json_after_element(p, '}');
        if (more <= 0) return more;
    }
}

static int json_parse_literal(json_parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return json_fail(p, p->pos, "invalid literal (expected %s)", word);
    p->pos += n;
    return 0;
}

static int json_parse_value(json_parser *p, json_value *out) {
    json_skip_ws(p);
    int c = json_peek(p);
    switch (c) {
    case '{': return json_parse_object(p, out);
    case '[': return json_parse_array(p, out);
    case '"': out->type = JSON_STRING; return json_parse_string(p, &out->string, &out->string_len);
    case 't':
    case 'f':
        out->type = JSON_BOOL;
        out->boolean = c == 't';
        return json_parse_literal(p, c == 't' ? "true" : "false");
    case 'n': out->type = JSON_NULL; return json_parse_literal(p, "null");
    case 'I':
    case '-':
        /* Python's json writes an infinite float as a bare Infinity (transformers' time_step_limit): accepted there
         * alone */
        if (p->in_inf_key && (c == 'I' || (p->pos + 1 < p->len && p->text[p->pos + 1] == 'I'))) {
            out->type = JSON_NUMBER;
            out->number = c == '-' ? -INFINITY : INFINITY;
            if (c == '-') p->pos++;
            return json_parse_literal(p, "Infinity");
        }
        /* fall through */
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            out->type = JSON_NUMBER;
            return json_parse_number(p, &out->number);
        }
        return json_unexpected(p, p->pos, "a JSON value");
    }
}

/* 1-based line and column (in characters: UTF-8 continuation bytes do not count) of byte `pos`. */
static void json_line_col(const char *text, size_t len, size_t pos, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos && i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n')
            (*line)++, *col = 1;
        else if ((c & 0xc0) != 0x80)
            (*col)++;
    }
}

static void json_clear(json_value *v) {
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) {
            json_clear(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

void json_free(json_value *v) {
    if (!v) return;
    json_clear(v);
    free(v);
}

static json_value *json_parse_with(const char *text, size_t len, const char *prefix, const char *inf_key) {
    json_parser p = {.text = text, .len = len, .inf_key = inf_key};
    json_value *v = xcalloc(1, sizeof *v);
    if (json_parse_value(&p, v) == 0) {
        json_skip_ws(&p);
        if (p.pos < len) {
            char buf[16];
            json_fail(&p, p.pos, "unexpected %s after the JSON value", json_describe(&p, p.pos, buf, sizeof buf));
        }
    }
    if (!p.failed) return v;
    json_free(v);
    int line, col;
    json_line_col(text, len, p.error_pos, &line, &col);
    ssm_error("%s%s at line %d, column %d", prefix, p.error, line, col);
    return NULL;
}

json_value *json_parse_prefixed(const char *text, size_t len, const char *prefix) {
    return json_parse_with(text, len, prefix, NULL);
}

json_value *json_parse(const char *text, size_t len) { return json_parse_prefixed(text, len, ""); }

json_value *json_parse_named(const char *text, size_t len, const char *name) {
    size_t n = strlen(name);
    char *prefix = xmalloc(n + 3);
    memcpy(prefix, name, n);
    memcpy(prefix + n, ": ", 3);
    json_value *v = json_parse_prefixed(text, len, prefix);
    free(prefix);
    return v;
}

json_value *json_parse_file_inf(const char *path, const char *inf_key) {
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len) != 0) return NULL;
    const size_t n = strlen(path);
    char *prefix = xmalloc(n + 3);
    memcpy(prefix, path, n);
    memcpy(prefix + n, ": ", 3);
    json_value *v = json_parse_with(text, len, prefix, inf_key);
    free(prefix), free(text);
    return v;
}

json_value *json_parse_file(const char *path) { return json_parse_file_inf(path, NULL); }

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

static const char *json_type_name(json_type t) {
    static const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return names[t];
}

int json_get_int(const json_value *obj, const char *key, long long *out) {
    const json_value *v = json_get(obj, key);
    if (!v) return 1;
    if (v->type != JSON_NUMBER) return ssm_error("'%s' must be an integer, not %s", key, json_type_name(v->type));
    /* Beyond 2^53 a double no longer holds every integer, so a larger value may not be what was written. */
    if (v->number != floor(v->number) || fabs(v->number) > 9007199254740992.0)
        return ssm_error("'%s' must be an integer (at most 2^53 in magnitude), got %.17g", key, v->number);
    *out = (long long)v->number;
    return 0;
}

int json_get_double(const json_value *obj, const char *key, double *out) {
    const json_value *v = json_get(obj, key);
    if (!v) return 1;
    if (v->type != JSON_NUMBER) return ssm_error("'%s' must be a number, not %s", key, json_type_name(v->type));
    *out = v->number;
    return 0;
}

int json_get_bool(const json_value *obj, const char *key, int *out) {
    const json_value *v = json_get(obj, key);
    if (!v) return 1;
    if (v->type != JSON_BOOL) return ssm_error("'%s' must be true or false, not %s", key, json_type_name(v->type));
    *out = v->boolean;
    return 0;
}

int json_get_string(const json_value *obj, const char *key, const char **out) {
    const json_value *v = json_get(obj, key);
    if (!v) return 1;
    if (v->type != JSON_STRING) return ssm_error("'%s' must be a string, not %s", key, json_type_name(v->type));
    *out = v->string;
    return 0;
}

/* ---- writer ---- */

void jw_init(json_writer *w) {
    w->cap = 256;
    w->len = 0;
    w->data = xmalloc(w->cap);
    w->data[0] = '\0';
}

void jw_free(json_writer *w) {
    free(w->data);
    w->data = NULL;
    w->len = w->cap = 0;
}

/* Keeps data NUL-terminated so callers can print it directly. */
static void jw_append(json_writer *w, const char *s, size_t n) {
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (w->len + n + 1 > cap) cap *= 2;
        w->data = xrealloc_array(w->data, cap, 1);
        w->cap = cap;
    }
    memcpy(w->data + w->len, s, n);
    w->len += n;
    w->data[w->len] = '\0';
}

void jw_raw(json_writer *w, const char *s) { jw_append(w, s, strlen(s)); }

void jw_string(json_writer *w, const char *s) {
    jw_append(w, "\"", 1);
    const char *run = s; /* bytes that need no escaping are appended in runs */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jw_append(w, run, (size_t)(s - run));
        char esc[8];
        switch (c) {
        case '"': jw_raw(w, "\\\""); break;
        case '\\': jw_raw(w, "\\\\"); break;
        case '\n': jw_raw(w, "\\n"); break;
        case '\r': jw_raw(w, "\\r"); break;
        case '\t': jw_raw(w, "\\t"); break;
        case '\b': jw_raw(w, "\\b"); break;
        case '\f': jw_raw(w, "\\f"); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c); jw_raw(w, esc);
        }
        run = s + 1;
    }
    jw_append(w, run, (size_t)(s - run));
    jw_append(w, "\"", 1);
}

void jw_number(json_writer *w, double x) {
    if (!isfinite(x)) {
        jw_raw(w, "null");
        return;
    }
    /* The fewest digits that read back as the same double: "0.1", not "0.10000000000000001". */
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    jw_raw(w, buf);
}

void jw_int(json_writer *w, long long x) {
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", x);
    jw_raw(w, buf);
}

void jw_begin_object(json_writer *w) { jw_append(w, "{", 1); }
void jw_end_object(json_writer *w) { jw_append(w, "}", 1); }

void jw_key(json_writer *w, const char *key) {
    if (w->len > 0 && w->data[w->len - 1] != '{') jw_raw(w, ", ");
    jw_string(w, key);
    jw_raw(w, ": ");
}
