/* Tests for src/io: the strict JSON reader and writer, safetensors round trips, dtype conversion, every
 * kind of malformed safetensors file, and the atomic-write guarantee (no partial file at the path). */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"
#include "io/fileio.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "test.h"

const char *ssm_last_error(void); /* include/ssm.h declares it; common.c defines it */

static char test_dir[64];

/* Paths under the test's scratch directory; a few rotating buffers so two can be live at once. */
static const char *tpath(const char *name) {
    static char bufs[4][256];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, 256, "%s/%s", test_dir, name);
    return b;
}

static int test_file_exists(const char *path) { return access(path, F_OK) == 0; }

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* The last error is one line and contains `needle`. */
static int error_has(const char *needle) {
    const char *e = ssm_last_error();
    return strchr(e, '\n') == NULL && strstr(e, needle) != NULL;
}

static json_value *parse(const char *s) { return json_parse(s, strlen(s)); }

/* ---------------- JSON reader ---------------- */

static void test_json_nested(void) {
    TEST_BEGIN("json: nested objects and arrays");
    json_value *v = parse(" {\"a\": [1, 2.5, -3e2, {\"b\": null}], \"c\": {\"d\": true, \"e\": false},\n"
                          "  \"s\": \"hi\", \"empty_a\": [], \"empty_o\": {}} ");
    EXPECT(v && v->type == JSON_OBJECT && v->count == 5, "parse failed: %s", ssm_last_error());
    if (v) {
        const json_value *a = json_get(v, "a");
        EXPECT(a && a->type == JSON_ARRAY && a->count == 4, "a");
        if (a && a->count == 4) {
            EXPECT(a->items[0].type == JSON_NUMBER && a->items[0].number == 1, "a[0]");
            EXPECT(a->items[1].number == 2.5 && a->items[2].number == -300, "a[1], a[2]");
            EXPECT(a->items[3].type == JSON_OBJECT && json_get(&a->items[3], "b")->type == JSON_NULL, "a[3].b");
        }
        const json_value *c = json_get(v, "c");
        EXPECT(c && json_get(c, "d")->type == JSON_BOOL && json_get(c, "d")->boolean == 1, "c.d");
        EXPECT(c && json_get(c, "e")->boolean == 0, "c.e");
        EXPECT(strcmp(json_get(v, "s")->string, "hi") == 0 && json_get(v, "s")->string_len == 2, "s");
        EXPECT(json_get(v, "empty_a")->type == JSON_ARRAY && json_get(v, "empty_a")->count == 0, "empty array");
        EXPECT(json_get(v, "empty_o")->type == JSON_OBJECT && json_get(v, "empty_o")->count == 0, "empty object");
        EXPECT(json_get(v, "missing") == NULL && json_get(a, "x") == NULL, "absent key / non-object lookup");
        EXPECT(strcmp(v->keys[0], "a") == 0 && strcmp(v->keys[4], "empty_o") == 0, "keys keep document order");
    }
    json_free(v);
    json_value *scalar = parse("\"top\"");
    EXPECT(scalar && scalar->type == JSON_STRING, "a scalar is a valid document");
    json_free(scalar);
    TEST_END();
}

static void test_json_escapes(void) {
    TEST_BEGIN("json: escapes, \\u and surrogate pairs");
    const char *src =
        "\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t A=\\u0041 e=\\u00e9 euro=\\u20AC smile=\\ud83d\\ude00 raw=\xc3\xa9\"";
    const char *want = "q\" b\\ s/ \b\f\n\r\t A=A e=\xc3\xa9 euro=\xe2\x82\xac smile=\xf0\x9f\x98\x80 raw=\xc3\xa9";
    json_value *v = parse(src);
    EXPECT(v && v->type == JSON_STRING, "parse failed: %s", ssm_last_error());
    if (v) EXPECT(v->string_len == strlen(want) && strcmp(v->string, want) == 0, "decoded to '%s'", v->string);
    json_free(v);
    v = parse("\"a\\u0000b\"");
    EXPECT(v && v->string_len == 3 && memcmp(v->string, "a\0b", 4) == 0, "\\u0000 kept inside the string");
    json_free(v);
    v = parse("\"\\uDBFF\\uDFFF\""); /* U+10FFFF, the last code point */
    EXPECT(v && strcmp(v->string, "\xf4\x8f\xbf\xbf") == 0, "U+10FFFF");
    json_free(v);
    TEST_END();
}

static void test_json_numbers(void) {
    TEST_BEGIN("json: numbers");
    struct {
        const char *text;
        double value;
    } ok[] = {
        {"0", 0},         {"-0", -0.0},  {"1.5e3", 1500}, {"1E-2", 0.01}, {"123456789012", 123456789012.0},
        {"-0.25", -0.25}, {"1e+2", 100}, {"0.1", 0.1},    {"2.5E0", 2.5}, {"9007199254740993", 9007199254740992.0},
        {"1e-400", 0.0},  {"[7]", 7}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        json_value *v = parse(ok[i].text);
        const json_value *n = v && v->type == JSON_ARRAY ? &v->items[0] : v;
        EXPECT(n && n->type == JSON_NUMBER && n->number == ok[i].value, "%s: %s", ok[i].text,
               v ? "" : ssm_last_error());
        json_free(v);
    }
    json_value *v = parse("-0");
    EXPECT(v && signbit(v->number), "-0 keeps its sign");
    json_free(v);
    const char *bad[] = {"01",   "1.",    ".5",  "+1",       "1e",        "1e+",  "-",
                         "0x10", "1e999", "NaN", "Infinity", "-Infinity", "1.e5", "- 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = parse(bad[i]);
        EXPECT(v == NULL && error_has("line 1, column"), "'%s' accepted or bad message: %s", bad[i], ssm_last_error());
        json_free(v);
    }
    TEST_END();
}

/* Parsing `text` fails with a message containing `what` and exactly "at line L, column C". */
static void expect_json_error(const char *text, size_t len, const char *what, int line, int col) {
    json_value *v = json_parse(text, len);
    char where[64];
    snprintf(where, sizeof where, "at line %d, column %d", line, col);
    const char *e = ssm_last_error();
    EXPECT(v == NULL, "accepted invalid JSON '%s'", text);
    EXPECT(v == NULL && strstr(e, what) && strstr(e, where) && !strchr(e, '\n'),
           "'%s': wanted \"%s ... %s\", got \"%s\"", text, what, where, e);
    json_free(v);
}
#define JSON_ERR(text, what, line, col) expect_json_error(text, strlen(text), what, line, col)

static void test_json_errors(void) {
    TEST_BEGIN("json: errors name line and column");
    JSON_ERR("[1, 2,]", "trailing comma", 1, 6);
    JSON_ERR("{\n  \"a\": 1,\n}", "trailing comma", 2, 9);
    JSON_ERR("{\"a\": 1,}", "trailing comma", 1, 8);
    JSON_ERR("[1,,2]", "unexpected ','", 1, 4);
    JSON_ERR("[1 2]", "expected ',' or ']'", 1, 4);
    JSON_ERR("{\"a\" 1}", "expected ':'", 1, 6);
    JSON_ERR("{1: 2}", "expected a string key", 1, 2);
    JSON_ERR("{'a': 2}", "expected a string key", 1, 2);
    JSON_ERR("\"abc", "unterminated string", 1, 1);
    JSON_ERR("[\n\"ok\",\n  \"abc\\\"]", "unterminated string", 3, 3);
    JSON_ERR("\"a\\qb\"", "invalid escape", 1, 3);
    JSON_ERR("\"a\\x41\"", "invalid escape", 1, 3);
    JSON_ERR("\"\\u12g4\"", "invalid \\u escape", 1, 2);
    JSON_ERR("\"\\u12\"", "invalid \\u escape", 1, 2);
    JSON_ERR("\"\\ud800\"", "high surrogate", 1, 2);
    JSON_ERR("\"\\ud800\\u0041\"", "not a low surrogate", 1, 2);
    JSON_ERR("\"x\\udc00\"", "low surrogate", 1, 3);
    JSON_ERR("\"a\nb\"", "control character", 1, 3);
    JSON_ERR("\"a\tb\"", "control character", 1, 3);
    JSON_ERR("\"\xff\"", "invalid UTF-8", 1, 2);
    JSON_ERR("\"\xc0\xaf\"", "invalid UTF-8", 1, 2);     /* overlong '/' */
    JSON_ERR("\"\xed\xa0\x80\"", "invalid UTF-8", 1, 2); /* a surrogate encoded as UTF-8 */
    JSON_ERR("\"\xe2\x82\"", "invalid UTF-8", 1, 2);     /* truncated sequence */
    JSON_ERR("{} x", "after the JSON value", 1, 4);
    JSON_ERR("[1]\n\n  ]", "after the JSON value", 3, 3);
    JSON_ERR("1 2", "after the JSON value", 1, 3);
    JSON_ERR("[\"\xc3\xa9\", x]", "unexpected 'x'", 1, 7); /* columns count characters, not bytes */
    JSON_ERR("{\"a\": 1, \"a\": 2}", "duplicate key", 1, 10);
    JSON_ERR("{\"a\\u0000\": 1}", "\\u0000", 1, 2);
    JSON_ERR("tru", "invalid literal", 1, 1);
    JSON_ERR("[nul]", "invalid literal", 1, 2);
    JSON_ERR("True", "unexpected 'T'", 1, 1);
    JSON_ERR("", "unexpected end of input", 1, 1);
    JSON_ERR("  \n ", "unexpected end of input", 2, 2);
    JSON_ERR("[1, 2", "unexpected end of input", 1, 6);
    JSON_ERR("{\"a\":", "unexpected end of input", 1, 6);
    JSON_ERR("\xef\xbb\xbf{}", "unexpected byte 0xef", 1, 1);
    expect_json_error("[1]\0", 4, "unexpected byte 0x00 after", 1, 4);

    /* Nesting: 256 levels are fine, 257 are refused at the 257th bracket (no stack overflow). */
    char deep[2 * 300 + 1];
    for (int depth = 256; depth <= 257; depth++) {
        memset(deep, '[', (size_t)depth);
        memset(deep + depth, ']', (size_t)depth);
        deep[2 * depth] = '\0';
        json_value *v = parse(deep);
        if (depth == 256)
            EXPECT(v != NULL, "256 levels rejected: %s", ssm_last_error());
        else
            EXPECT(v == NULL && error_has("nesting deeper than 256 at line 1, column 257"), "257 levels: %s",
                   ssm_last_error());
        json_free(v);
    }
    char *objs = xmalloc(300 * 8 + 1);
    size_t n = 0;
    for (int i = 0; i < 300; i++) n += (size_t)sprintf(objs + n, "{\"k\":");
    json_value *v = json_parse(objs, n);
    EXPECT(v == NULL && error_has("nesting deeper than 256"), "deep objects: %s", ssm_last_error());
    json_free(v);
    free(objs);
    TEST_END();
}

static void test_json_getters(void) {
    TEST_BEGIN("json: typed getters");
    json_value *v = parse("{\"n\": 3, \"big\": 1e300, \"half\": 1.5, \"f\": 0.25, \"b\": true, \"s\": \"str\"}");
    long long i = -7;
    double d = -7;
    int b = -7;
    const char *s = NULL;
    EXPECT(json_get_int(v, "n", &i) == 0 && i == 3, "int");
    EXPECT(json_get_int(v, "absent", &i) == 1 && i == 3, "absent keeps the default");
    EXPECT(json_get_int(v, "half", &i) == -1 && error_has("'half'") && i == 3, "non-integer: %s", ssm_last_error());
    EXPECT(json_get_int(v, "big", &i) == -1 && error_has("'big'"), "out of range: %s", ssm_last_error());
    EXPECT(json_get_int(v, "s", &i) == -1 && error_has("'s' must be an integer"), "string as int: %s",
           ssm_last_error());
    EXPECT(json_get_double(v, "f", &d) == 0 && d == 0.25, "double");
    EXPECT(json_get_double(v, "n", &d) == 0 && d == 3, "an integer is a double too");
    EXPECT(json_get_double(v, "b", &d) == -1 && error_has("'b'"), "bool as double");
    EXPECT(json_get_bool(v, "b", &b) == 0 && b == 1, "bool");
    EXPECT(json_get_bool(v, "n", &b) == -1 && error_has("'n'"), "number as bool");
    EXPECT(json_get_string(v, "s", &s) == 0 && strcmp(s, "str") == 0, "string");
    EXPECT(json_get_string(v, "n", &s) == -1 && error_has("'n'"), "number as string");
    EXPECT(json_get_double(NULL, "x", &d) == 1, "NULL object counts as absent");
    json_free(v);
    TEST_END();
}

static void test_json_file(void) {
    TEST_BEGIN("json: parse_file names the file");
    const char *path = tpath("config.json");
    const char *text = "{\n  \"d_model\": 64,\n  \"layers\": [1, 2,]\n}\n";
    EXPECT(file_write_atomic(path, text, strlen(text)) == 0, "write: %s", ssm_last_error());
    json_value *v = json_parse_file(path);
    EXPECT(v == NULL && starts_with(ssm_last_error(), path) &&
               error_has("trailing comma before ']' at line 3, column 18"),
           "got: %s", ssm_last_error());
    json_free(v);
    const char *missing = tpath("no_such.json");
    v = json_parse_file(missing);
    EXPECT(v == NULL && starts_with(ssm_last_error(), missing) && error_has("No such file"), "got: %s",
           ssm_last_error());
    text = "{\"d_model\": 64}";
    file_write_atomic(path, text, strlen(text));
    v = json_parse_file(path);
    long long dm = 0;
    EXPECT(v && json_get_int(v, "d_model", &dm) == 0 && dm == 64, "good file");
    json_free(v);
    TEST_END();
}

/* ---------------- JSON writer ---------------- */

static void test_json_writer(void) {
    TEST_BEGIN("json: writer round trip");
    const char *tricky = "quote\" back\\ nl\n tab\t cr\r bell\x07 esc\x1f del\x7f utf8 \xc3\xa9\xf0\x9f\x98\x80 /";
    json_writer w;
    jw_init(&w);
    jw_begin_object(&w);
    jw_key(&w, "s");
    jw_string(&w, tricky);
    jw_key(&w, "tenth");
    jw_number(&w, 0.1);
    jw_key(&w, "big");
    jw_number(&w, 1e300);
    jw_key(&w, "tiny");
    jw_number(&w, 4.9e-324);
    jw_key(&w, "negzero");
    jw_number(&w, -0.0);
    jw_key(&w, "nan");
    jw_number(&w, NAN);
    jw_key(&w, "inf");
    jw_number(&w, -INFINITY);
    jw_key(&w, "i");
    jw_int(&w, -9007199254740992LL);
    jw_key(&w, "key \"with\" quotes");
    jw_begin_object(&w);
    jw_key(&w, "inner");
    jw_raw(&w, "[1, 2]");
    jw_end_object(&w);
    jw_end_object(&w);
    EXPECT(w.len == strlen(w.data), "data is NUL-terminated at len");
    EXPECT(strstr(w.data, "\"tenth\": 0.1, ") != NULL, "shortest repr and key separators: %s", w.data);
    EXPECT(strncmp(w.data, "{\"s\": ", 6) == 0, "no comma before the first key: %s", w.data);
    json_value *v = json_parse(w.data, w.len);
    EXPECT(v != NULL, "writer output does not parse: %s\n%s", ssm_last_error(), w.data);
    if (v) {
        const json_value *s = json_get(v, "s");
        EXPECT(s && strcmp(s->string, tricky) == 0, "string round trip: '%s'", s ? s->string : "");
        EXPECT(json_get(v, "tenth")->number == 0.1 && json_get(v, "big")->number == 1e300, "numbers");
        EXPECT(json_get(v, "tiny")->number == 4.9e-324, "subnormal");
        EXPECT(json_get(v, "negzero")->number == 0 && signbit(json_get(v, "negzero")->number), "-0");
        EXPECT(json_get(v, "nan")->type == JSON_NULL && json_get(v, "inf")->type == JSON_NULL, "NaN/inf -> null");
        EXPECT(json_get(v, "i")->number == -9007199254740992.0, "int");
        const json_value *o = json_get(v, "key \"with\" quotes");
        EXPECT(o && json_get(o, "inner") && json_get(o, "inner")->count == 2, "nested object");
    }
    json_free(v);
    jw_free(&w);

    /* Random doubles across the whole range come back bit-identical. */
    rng_t rng = {42};
    int mismatches = 0;
    for (int k = 0; k < 2000; k++) {
        uint64_t bits = rng_next(&rng);
        double x;
        memcpy(&x, &bits, 8);
        if (!isfinite(x)) continue;
        jw_init(&w);
        jw_number(&w, x);
        json_value *n = json_parse(w.data, w.len);
        if (!n || n->type != JSON_NUMBER || memcmp(&n->number, &x, 8) != 0) mismatches++;
        json_free(n);
        jw_free(&w);
    }
    EXPECT(mismatches == 0, "%d doubles did not round-trip", mismatches);
    TEST_END();
}

/* ---------------- safetensors ---------------- */

static uint16_t h16(float x) { /* tests only need exactly representable values */
    uint32_t b;
    memcpy(&b, &x, 4);
    return (uint16_t)(b >> 16);
}

static void test_st_round_trip(void) {
    TEST_BEGIN("safetensors: write -> read round trip");
    float f32[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 65504};
    uint16_t f16[4] = {0x3c00, 0xc000, 0x0001, 0x7c00};
    uint16_t bf16[4] = {h16(1), h16(-3), h16(0.5f), h16(256)};
    double f64[3] = {0.1, -1e300, 2};
    int64_t i64[2] = {-1, INT64_MAX};
    int32_t i32 = 123456;
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    uint8_t bools[3] = {1, 0, 1};
    int16_t i16 = -300;
    st_tensor t[] = {
        {.name = "w.f32", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .nbytes = sizeof f32, .data = f32},
        {.name = "u8 odd size", .dtype = ST_U8, .ndim = 1, .shape = {5}, .nbytes = 5, .data = u8},
        {.name = "h", .dtype = ST_F16, .ndim = 1, .shape = {4}, .nbytes = sizeof f16, .data = f16},
        {.name = "b", .dtype = ST_BF16, .ndim = 2, .shape = {2, 2}, .nbytes = sizeof bf16, .data = bf16},
        {.name = "d", .dtype = ST_F64, .ndim = 1, .shape = {3}, .nbytes = sizeof f64, .data = f64},
        {.name = "scalar", .dtype = ST_I32, .ndim = 0, .nbytes = 4, .data = &i32},
        {.name = "empty", .dtype = ST_I8, .ndim = 2, .shape = {3, 0}, .nbytes = 0, .data = NULL},
        {.name = "i64", .dtype = ST_I64, .ndim = 1, .shape = {2}, .nbytes = sizeof i64, .data = i64},
        {.name = "mask", .dtype = ST_BOOL, .ndim = 1, .shape = {3}, .nbytes = 3, .data = bools},
        {.name = "eight\"dims\"",
         .dtype = ST_I16,
         .ndim = 8,
         .shape = {1, 1, 1, 1, 1, 1, 1, 1},
         .nbytes = 2,
         .data = &i16},
    };
    int n = (int)(sizeof t / sizeof t[0]);
    const char *mk[] = {"format", "note"}, *mv[] = {"pt", "quote \" newline\n \xc3\xa9"};
    const char *path = tpath("round.safetensors");
    EXPECT(st_write(path, t, n, mk, mv, 2) == 0, "st_write: %s", ssm_last_error());
    EXPECT(!test_file_exists(tpath("round.safetensors.tmp")), "temporary file left behind");
    st_file f;
    EXPECT(st_open(&f, path) == 0, "st_open: %s", ssm_last_error());
    EXPECT(f.n == n && f.n_meta == 2, "counts %d %d", f.n, f.n_meta);
    for (int i = 0; i < n && i < f.n; i++) {
        const st_tensor *r = &f.tensors[i];
        EXPECT(strcmp(r->name, t[i].name) == 0, "order: %s vs %s", r->name, t[i].name);
        EXPECT(r->dtype == t[i].dtype && r->ndim == t[i].ndim && r->nbytes == t[i].nbytes, "%s: dtype/ndim/nbytes",
               r->name);
        EXPECT(memcmp(r->shape, t[i].shape, sizeof(int64_t) * (size_t)t[i].ndim) == 0, "%s: shape", r->name);
        EXPECT(t[i].nbytes == 0 || memcmp(r->data, t[i].data, t[i].nbytes) == 0, "%s: data", r->name);
        EXPECT(st_find(&f, t[i].name) == r, "st_find(%s)", t[i].name);
    }
    EXPECT(st_find(&f, "nope") == NULL, "st_find of an absent name");
    EXPECT(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "pt") == 0, "meta format");
    EXPECT(st_meta(&f, "note") && strcmp(st_meta(&f, "note"), mv[1]) == 0, "meta note");
    EXPECT(st_meta(&f, "absent") == NULL, "absent meta");
    /* The writer pads the header so the data buffer begins 8-byte aligned. */
    uint64_t hl;
    memcpy(&hl, f.map, 8);
    EXPECT((8 + hl) % 8 == 0 && f.tensors[0].data == (const char *)f.map + 8 + hl, "aligned data start");
    float got[6];
    EXPECT(st_read_f32(&f, st_find(&f, "w.f32"), got, 6) == 0 && memcmp(got, f32, sizeof f32) == 0, "F32 read");
    st_close(&f);
    st_close(&f); /* closing twice is harmless */

    /* Rewriting replaces the file, and a header-only file (no tensors, no metadata) is valid. */
    EXPECT(st_write(path, NULL, 0, NULL, NULL, 0) == 0, "empty write: %s", ssm_last_error());
    EXPECT(st_open(&f, path) == 0 && f.n == 0 && f.n_meta == 0, "empty file: %s", ssm_last_error());
    st_close(&f);
    TEST_END();
}

/* Reference half -> float by arithmetic, independent of the bit manipulation under test. */
static float ref_half(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (float)(s ? -v : v);
}

static void test_st_conversion(void) {
    TEST_BEGIN("safetensors: F16/BF16/F64 -> F32 exact");
    static uint16_t all[65536];
    for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    uint16_t bf[] = {0x3f80, 0xc040, 0x4049, 0x0001, 0x7f80, 0xff80, 0x8000, 0x7f7f, 0x3dcd};
    uint32_t bf_want[] = {0x3f800000, 0xc0400000, 0x40490000, 0x00010000, 0x7f800000,
                          0xff800000, 0x80000000, 0x7f7f0000, 0x3dcd0000};
    double f64[] = {0.5, 0.1, -2, 1e-40, 3.4028234663852886e38};
    int32_t ints[2] = {1, 2};
    st_tensor t[] = {
        {.name = "half", .dtype = ST_F16, .ndim = 1, .shape = {65536}, .nbytes = sizeof all, .data = all},
        {.name = "bf", .dtype = ST_BF16, .ndim = 1, .shape = {9}, .nbytes = sizeof bf, .data = bf},
        {.name = "dbl", .dtype = ST_F64, .ndim = 1, .shape = {5}, .nbytes = sizeof f64, .data = f64},
        {.name = "ints", .dtype = ST_I32, .ndim = 1, .shape = {2}, .nbytes = sizeof ints, .data = ints},
    };
    const char *path = tpath("conv.safetensors");
    EXPECT(st_write(path, t, 4, NULL, NULL, 0) == 0, "st_write: %s", ssm_last_error());
    st_file f;
    EXPECT(st_open(&f, path) == 0, "st_open: %s", ssm_last_error());
    float *out = xmalloc(65536 * sizeof(float));
    EXPECT(st_read_f32(&f, st_find(&f, "half"), out, 65536) == 0, "half read");
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float want = ref_half((uint16_t)i);
        if (isnan(want) ? !isnan(out[i]) : memcmp(&out[i], &want, 4) != 0) {
            if (bad++ < 3) EXPECT(0, "half 0x%04x -> %g, want %g", i, out[i], want);
        }
    }
    EXPECT(bad == 0, "%d of 65536 halves converted wrongly", bad);
    EXPECT(out[0x3c00] == 1 && out[0x7bff] == 65504 && out[0x0001] == ldexpf(1, -24) && out[0x3555] == 0.333251953125f,
           "spot values");
    EXPECT(signbit(out[0x8000]) && isinf(out[0xfc00]) && out[0xfc00] < 0 && isnan(out[0x7e01]),
           "signed zero, -inf, NaN");
    EXPECT(st_read_f32(&f, st_find(&f, "bf"), out, 9) == 0, "bf16 read");
    for (int i = 0; i < 9; i++) EXPECT(memcmp(&out[i], &bf_want[i], 4) == 0, "bf16 0x%04x -> %g", bf[i], out[i]);
    EXPECT(out[2] == 3.140625f, "bf16 pi");
    EXPECT(st_read_f32(&f, st_find(&f, "dbl"), out, 5) == 0, "f64 read");
    for (int i = 0; i < 5; i++) EXPECT(out[i] == (float)f64[i], "f64 %g -> %g", f64[i], out[i]);
    EXPECT(st_read_f32(&f, st_find(&f, "dbl"), out, 4) == -1 && starts_with(ssm_last_error(), path) &&
               error_has("'dbl'"),
           "wrong element count: %s", ssm_last_error());
    EXPECT(st_read_f32(&f, st_find(&f, "ints"), out, 2) == -1 && error_has("I32"), "int tensor: %s", ssm_last_error());
    free(out);
    st_close(&f);
    TEST_END();
}

/* Writes a raw safetensors file: 8-byte length of `header`, the header, then data_len bytes of data. */
static const char *write_raw(const char *name, const char *header, size_t data_len) {
    const char *path = tpath(name);
    size_t hl = strlen(header);
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    char *data = xcalloc(data_len + 1, 1);
    const void *parts[3] = {len_bytes, header, data};
    size_t lens[3] = {8, hl, data_len};
    CHECK(file_write_atomic_parts(path, parts, lens, 3) == 0, "%s", ssm_last_error());
    free(data);
    return path;
}

/* st_open(path) fails with one line that starts with the path and contains `needle`. */
static void expect_st_error(const char *path, const char *needle) {
    st_file f;
    int rc = st_open(&f, path);
    const char *e = ssm_last_error();
    EXPECT(rc == -1, "%s: accepted", path);
    EXPECT(rc == -1 && starts_with(e, path) && error_has(needle), "wanted \"%s\" in \"%s\"", needle, e);
    EXPECT(f.map == NULL && f.tensors == NULL && f.path == NULL, "failed st_open leaves an empty st_file");
    if (rc == 0) st_close(&f);
}

static void test_st_bad_files(void) {
    TEST_BEGIN("safetensors: malformed files are rejected with one-line messages");
    expect_st_error(tpath("missing.safetensors"), "No such file or directory");
    CHECK(file_write_atomic(tpath("empty.safetensors"), "", 0) == 0, "write");
    expect_st_error(tpath("empty.safetensors"), "empty");
    CHECK(file_write_atomic(tpath("short.safetensors"), "\x10\0\0", 3) == 0, "write");
    expect_st_error(tpath("short.safetensors"), "too short");
    expect_st_error(test_dir, "not a regular file");

    /* Header length past the end of the file, including an absurd one (overflow bait). */
    const char *path = write_raw("hl.safetensors", "{}", 0);
    CHECK(file_write_atomic(path, "\x00\x10\0\0\0\0\0\0{}", 10) == 0, "write");
    expect_st_error(path, "header length 4096 runs past the end of the file (10 bytes");
    CHECK(file_write_atomic(path, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10) == 0, "write");
    expect_st_error(path, "header length 18446744073709551615 runs past");

    expect_st_error(write_raw("json.safetensors", "{\"a\": }", 0), "invalid JSON header: unexpected '}'");
    expect_st_error(
        write_raw("json2.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4],}}", 4),
        "trailing comma");
    expect_st_error(write_raw("notobj.safetensors", "[1, 2]", 0), "header is not a JSON object");
    expect_st_error(write_raw("dtype.safetensors",
                              "{\"x\": {\"dtype\": \"F8_E4M3\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2),
                    "tensor 'x' has unknown dtype 'F8_E4M3'");
    expect_st_error(write_raw("nodtype.safetensors", "{\"x\": {\"shape\": [2], \"data_offsets\": [0, 2]}}", 2),
                    "\"dtype\"");

    /* Shape product * dtype size must equal the data_offsets span: the exact message from the brief. */
    path = write_raw("shape.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 12]}}",
                     12);
    expect_st_error(path, "tensor 'x' data_offsets [0, 12] do not match shape [2, 2] of F32 (16 bytes)");
    char want[256];
    snprintf(want, sizeof want, "%s: tensor 'x' data_offsets [0, 12] do not match shape [2, 2] of F32 (16 bytes)",
             path);
    EXPECT(strcmp(ssm_last_error(), want) == 0, "exact message: %s", ssm_last_error());
    expect_st_error(
        write_raw("scalar.safetensors", "{\"x\": {\"dtype\": \"F64\", \"shape\": [], \"data_offsets\": [0, 4]}}", 4),
        "do not match shape [] of F64 (8 bytes)");
    expect_st_error(
        write_raw("backwards.safetensors", "{\"x\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [4, 0]}}", 4),
        "data_offsets [4, 0] do not match");
    expect_st_error(
        write_raw("negdim.safetensors", "{\"x\": {\"dtype\": \"U8\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0),
        "shape entry 0 is not a non-negative integer");
    expect_st_error(
        write_raw("fracdim.safetensors", "{\"x\": {\"dtype\": \"U8\", \"shape\": [1.5], \"data_offsets\": [0, 0]}}", 0),
        "shape entry 0");
    expect_st_error(
        write_raw(
            "ovfdim.safetensors",
            "{\"x\": {\"dtype\": \"F64\", \"shape\": [4294967296, 4294967296, 4294967296], \"data_offsets\": [0, 8]}}",
            8),
        "overflows");
    expect_st_error(write_raw("dims.safetensors",
                              "{\"x\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}",
                              1),
                    "9 dimensions");
    expect_st_error(
        write_raw("offs.safetensors", "{\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0]}}", 1),
        "data_offsets");
    expect_st_error(
        write_raw("negoff.safetensors", "{\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [-1, 0]}}", 1),
        "data_offsets");
    expect_st_error(write_raw("field.safetensors",
                              "{\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1], \"extra\": 1}}",
                              1),
                    "unknown field 'extra'");
    expect_st_error(write_raw("entry.safetensors", "{\"x\": [1]}", 0), "tensor 'x' header entry is not a JSON object");
    expect_st_error(write_raw("meta.safetensors", "{\"__metadata__\": {\"epoch\": 3}}", 0),
                    "__metadata__ value for 'epoch'");
    expect_st_error(write_raw("meta2.safetensors", "{\"__metadata__\": [\"a\"]}", 0),
                    "__metadata__ is not a JSON object");
    expect_st_error(write_raw("dup.safetensors",
                              "{\"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                              " \"x\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
                              2),
                    "duplicate key");

    /* Offsets: out of range, overlapping, gaps, uncovered tail. */
    expect_st_error(
        write_raw("range.safetensors", "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8),
        "tensor 'x' data_offsets [0, 16] run past the end of the 8-byte data buffer");
    expect_st_error(write_raw("overlap.safetensors",
                              "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                              " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                              12),
                    "tensors 'a' [0, 8] and 'b' [4, 12] overlap");
    expect_st_error(write_raw("same.safetensors",
                              "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                              " \"a\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                              8),
                    "overlap");
    expect_st_error(write_raw("gap.safetensors",
                              "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                              " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
                              12),
                    "data bytes [4, 8) are not covered by any tensor");
    expect_st_error(
        write_raw("lead.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8),
        "data bytes [0, 4) are not covered");
    expect_st_error(
        write_raw("tail.safetensors", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 8),
        "data buffer has 8 bytes but the tensors cover only the first 4");
    expect_st_error(write_raw("nodata.safetensors", "{}", 4), "data buffer has 4 bytes");

    /* Out-of-order offsets that do tile the buffer are fine. */
    path = write_raw("order.safetensors",
                     "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]},"
                     " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                     8);
    st_file f;
    EXPECT(st_open(&f, path) == 0 && f.n == 2 && strcmp(f.tensors[0].name, "a") == 0, "reordered: %s",
           ssm_last_error());
    st_close(&f);

    /* Truncation of a valid file, in the data and in the header. */
    float x[16] = {0};
    st_tensor t = {.name = "x", .dtype = ST_F32, .ndim = 1, .shape = {16}, .nbytes = sizeof x, .data = x};
    path = tpath("trunc.safetensors");
    CHECK(st_write(path, &t, 1, NULL, NULL, 0) == 0, "%s", ssm_last_error());
    char *bytes;
    size_t len;
    CHECK(file_read_all(path, &bytes, &len) == 0, "%s", ssm_last_error());
    CHECK(file_write_atomic(path, bytes, len - 3) == 0, "%s", ssm_last_error());
    expect_st_error(path, "truncated file?");
    CHECK(file_write_atomic(path, bytes, 20) == 0, "%s", ssm_last_error());
    expect_st_error(path, "runs past the end of the file (20 bytes");
    free(bytes);
    TEST_END();
}

static void test_atomic_write(void) {
    TEST_BEGIN("atomic writes leave no partial file at the destination");
    const char *path = tpath("atomic.safetensors"), *tmp = tpath("atomic.safetensors.tmp");
    float small[4] = {1, 2, 3, 4};
    st_tensor t = {.name = "w", .dtype = ST_F32, .ndim = 1, .shape = {4}, .nbytes = sizeof small, .data = small};
    EXPECT(st_write(path, &t, 1, NULL, NULL, 0) == 0, "first write: %s", ssm_last_error());
    EXPECT(!test_file_exists(tmp), "no .tmp after success");

    /* A write that fails part-way (file size limit hit after 4 KiB of a 256 KiB file) must leave the old
     * file intact and readable, and remove its temporary file. */
    size_t nbig = 65536;
    float *big = xcalloc(nbig, sizeof(float));
    st_tensor tb = {.name = "w", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)nbig}, .nbytes = nbig * 4, .data = big};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    EXPECT(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit");
    int rc = st_write(path, &tb, 1, NULL, NULL, 0);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", ssm_last_error());
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    EXPECT(rc == -1 && starts_with(msg, path) && strstr(msg, "write failed"), "partial write: rc %d, %s", rc, msg);
    EXPECT(!test_file_exists(tmp), ".tmp left after a failed write");
    st_file f;
    EXPECT(st_open(&f, path) == 0 && f.n == 1 && f.tensors[0].nbytes == sizeof small &&
               memcmp(f.tensors[0].data, small, sizeof small) == 0,
           "old file damaged: %s", ssm_last_error());
    st_close(&f);
    free(big);

    /* Invalid input never creates the destination. */
    const char *fresh = tpath("fresh.safetensors");
    st_tensor bad = t;
    bad.nbytes = 12;
    EXPECT(st_write(fresh, &bad, 1, NULL, NULL, 0) == -1 && starts_with(ssm_last_error(), fresh) &&
               error_has("12 bytes but shape [4] of F32 needs 16"),
           "size mismatch: %s", ssm_last_error());
    st_tensor dup[2] = {t, t};
    EXPECT(st_write(fresh, dup, 2, NULL, NULL, 0) == -1 && error_has("duplicate tensor name 'w'"), "dup: %s",
           ssm_last_error());
    const char *mk[] = {"k", "k"}, *mv[] = {"1", "2"};
    EXPECT(st_write(fresh, &t, 1, mk, mv, 2) == -1 && error_has("duplicate metadata key 'k'"), "dup meta: %s",
           ssm_last_error());
    EXPECT(!test_file_exists(fresh) && !test_file_exists(tpath("fresh.safetensors.tmp")),
           "destination created by a failed write");

    const char *nodir = tpath("no/such/dir/x.safetensors");
    EXPECT(st_write(nodir, &t, 1, NULL, NULL, 0) == -1 && starts_with(ssm_last_error(), nodir), "missing dir: %s",
           ssm_last_error());

    /* file_write_atomic / file_read_all round trip, including bytes past a NUL. */
    const char *raw = tpath("raw.bin");
    EXPECT(file_write_atomic(raw, "a\0b\nc", 5) == 0, "write raw");
    char *data;
    size_t len;
    EXPECT(file_read_all(raw, &data, &len) == 0 && len == 5 && memcmp(data, "a\0b\nc", 6) == 0, "read raw");
    free(data);
    EXPECT(file_read_all(tpath("absent.bin"), &data, &len) == -1 && error_has("absent.bin: cannot open"), "%s",
           ssm_last_error());
    EXPECT(file_read_all(test_dir, &data, &len) == -1 && error_has("directory"), "%s", ssm_last_error());
    TEST_END();
}

static void remove_test_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", test_dir);
}

int main(void) {
    snprintf(test_dir, sizeof test_dir, "/tmp/ssm_test_io_XXXXXX");
    CHECK(mkdtemp(test_dir), "mkdtemp failed");
    test_json_nested();
    test_json_escapes();
    test_json_numbers();
    test_json_errors();
    test_json_getters();
    test_json_file();
    test_json_writer();
    test_st_round_trip();
    test_st_conversion();
    test_st_bad_files();
    test_atomic_write();
    remove_test_dir();
    return test_failures;
}
