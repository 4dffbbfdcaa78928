/* Tests of the byte-level BPE tokenizer (src/io/tokenizer.c) on small hand-written tokenizer.json
 * files. Expected ids follow the semantics of Hugging Face tokenizers (pre_tokenizers/byte_level.rs,
 * models/bpe/{model,word}.rs, tokenizer/added_vocabulary.rs, normalizers NFC); the split tests give
 * the expected pre-tokens and put each into the vocabulary with ignore_merges, so one id per
 * pre-token comes back exactly when the text was split there. */
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "io/tokenizer.h"
#include "test.h"

const char *ssm_last_error(void);

static char tmp_dir[256];
static int file_counter;

/* GPT-2 bytes_to_unicode, written out independently of the library. */
static unsigned byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return (unsigned)b;
    unsigned n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7e) || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff))) n++;
    return 256 + n;
}

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)need + 1 > b->cap) {
        b->cap = (b->len + (size_t)need + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)need + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)need;
}

/* A JSON string literal of the byte-level form of raw[0..n): every byte as its mapped character. */
static void sb_mapped(sbuf *b, const char *raw, size_t n) {
    sb_add(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned cp = byte_to_cp((unsigned char)raw[i]);
        if (cp == '"' || cp == '\\') sb_add(b, "\\%c", (char)cp);
        else if (cp < 0x80) sb_add(b, "%c", (char)cp);
        else sb_add(b, "\\u%04x", cp);
    }
    sb_add(b, "\"");
}

static const char *BL = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}";
static const char *BL_PREFIX = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}";
static const char *BL_NOREGEX = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}";
#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\\\p{L}+| ?\\\\p{N}+| ?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+"
static const char *SEQ_SPLIT =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" GPT2_RE "\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
    "\"trim_offsets\":false,\"use_regex\":false}]}";
static const char *SEQ_SPLIT_PREFIX =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" GPT2_RE "\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
    "\"trim_offsets\":false,\"use_regex\":false}]}";
static const char *NFC = "{\"type\":\"NFC\"}";

typedef struct {
    const char *const *extra; /* raw byte strings added to the vocabulary as ids 256, 257, ... */
    int n_extra;
    const char *extra_json;   /* more "token": id members (already byte-level), or NULL */
    const char *merges;       /* JSON array, or NULL for [] */
    const char *model_extra;  /* more model members ("ignore_merges": true, ...), or NULL */
    const char *normalizer;   /* JSON or NULL for null */
    const char *pre;          /* JSON or NULL for BL */
    const char *added;        /* JSON array or NULL for [] */
    const char *model_head;   /* replaces the dropout ... byte_fallback members, or NULL */
    const char *omit;         /* bytes left out of the base vocabulary, or NULL */
} spec;

static char *spec_json(const spec *sp) {
    sbuf b = {0};
    sb_add(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":%s,",
           sp->added ? sp->added : "[]");
    sb_add(&b, "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,", sp->normalizer ? sp->normalizer : "null",
           sp->pre ? sp->pre : BL);
    sb_add(&b, "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},");
    sb_add(&b, "\"model\":{%s%s\"vocab\":{",
           sp->model_head ? sp->model_head
                          : "\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
                            "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,",
           sp->model_extra ? sp->model_extra : "");
    for (int i = 0; i < 256; i++) {
        char c = (char)i;
        if (sp->omit && i && strchr(sp->omit, i)) continue;
        sb_mapped(&b, &c, 1);
        sb_add(&b, ":%d,", i);
    }
    for (int i = 0; i < sp->n_extra; i++) {
        sb_mapped(&b, sp->extra[i], strlen(sp->extra[i]));
        sb_add(&b, ":%d,", 256 + i);
    }
    if (sp->extra_json) sb_add(&b, "%s,", sp->extra_json);
    b.s[--b.len] = 0; /* the last comma */
    sb_add(&b, "},\"merges\":%s}}", sp->merges ? sp->merges : "[]");
    return b.s;
}

static char *write_temp(const char *text) {
    char *path = malloc(strlen(tmp_dir) + 32);
    sprintf(path, "%s/tok%d.json", tmp_dir, file_counter++);
    FILE *f = fopen(path, "wb");
    CHECK(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    return path;
}

static ssm_tokenizer *load_spec(const spec *sp) {
    char *json = spec_json(sp);
    char *path = write_temp(json);
    ssm_tokenizer *t = ssm_tokenizer_load(path);
    if (!t) printf("  load failed: %s\n", ssm_last_error());
    free(json);
    unlink(path);
    free(path);
    return t;
}

static int encode_is(const ssm_tokenizer *t, const char *text, size_t len, const int *want, size_t n_want) {
    int *ids;
    size_t n;
    if (ssm_tokenizer_encode(t, text, len, &ids, &n) != 0) return 0;
    int ok = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof(int)) == 0);
    if (!ok) {
        printf("  encode(\"%.*s\") = [", (int)len, text);
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
        printf("], want [");
        for (size_t i = 0; i < n_want; i++) printf("%s%d", i ? ", " : "", want[i]);
        printf("]\n");
    }
    free(ids);
    return ok;
}
#define ENCODE_IS(t, text, ...)                                                                          \
    do {                                                                                                 \
        const int want_[] = {__VA_ARGS__};                                                               \
        EXPECT(encode_is(t, text, strlen(text), want_, sizeof want_ / sizeof *want_), "encode \"%s\"", text); \
    } while (0)

/* Splits `text` and checks that the pre-tokens are exactly `expected` (NULL-terminated). */
static void check_split(const char *pre, const char *normalizer, const char *text, const char *const *expected) {
    const char *extra[64];
    int n_extra = 0, want[64], n_want = 0;
    for (int i = 0; expected[i]; i++) {
        if (strlen(expected[i]) == 1) {
            want[n_want++] = (unsigned char)expected[i][0];
            continue;
        }
        int id = -1;
        for (int k = 0; k < n_extra; k++)
            if (strcmp(extra[k], expected[i]) == 0) id = 256 + k;
        if (id < 0) extra[n_extra] = expected[i], id = 256 + n_extra++;
        want[n_want++] = id;
    }
    spec sp = {.extra = extra, .n_extra = n_extra, .model_extra = "\"ignore_merges\":true,", .pre = pre,
               .normalizer = normalizer};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) return;
    EXPECT(encode_is(t, text, strlen(text), want, (size_t)n_want), "split of \"%s\"", text);
    ssm_tokenizer_free(t);
}
#define SPLIT(pre, norm, text, ...)                                                                      \
    do {                                                                                                 \
        const char *const exp_[] = {__VA_ARGS__, NULL};                                                  \
        check_split(pre, norm, text, exp_);                                                              \
    } while (0)

static void test_byte_round_trip(void) {
    TEST_BEGIN("byte-level mapping: every byte alone, all 256 together, decode back");
    spec sp = {0};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) goto done;
    EXPECT(ssm_tokenizer_vocab_size(t) == 256, "vocab size %d", ssm_tokenizer_vocab_size(t));
    EXPECT(ssm_tokenizer_is_lossless(t), "lossless");
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        const int want = b;
        EXPECT(encode_is(t, &c, 1, &want, 1), "byte %d", b);
        size_t len;
        const char *p = ssm_tokenizer_token_bytes(t, b, &len);
        EXPECT(p && len == 1 && (unsigned char)p[0] == b, "token_bytes(%d)", b);
    }
    EXPECT(ssm_tokenizer_token_id(t, "\xc4\xa0") == ' ', "id of 'Ġ' is the space byte");
    EXPECT(ssm_tokenizer_token_id(t, "\xc4\x8a") == '\n', "id of 'Ċ' is the newline byte");
    EXPECT(ssm_tokenizer_token_id(t, "\xc5\x83") == 0xad, "id of U+0143 is byte 0xAD (the last remapped byte)");
    EXPECT(ssm_tokenizer_token_id(t, "A") == 'A' && ssm_tokenizer_token_id(t, "\xc3\xbf") == 0xff, "identity bytes");
    char all[256];
    for (int b = 0; b < 256; b++) all[b] = (char)b;
    int *ids;
    size_t n;
    ssm_tokenizer_encode(t, all, 256, &ids, &n);
    char *out;
    size_t len;
    EXPECT(ssm_tokenizer_decode(t, ids, n, &out, &len) == 0 && len == 256 && memcmp(out, all, 256) == 0,
           "decode(encode(all bytes))");
    EXPECT(n == 256, "one token per byte without merges (%zu)", n);
    free(out);
    free(ids);
    int bad = 256;
    EXPECT(ssm_tokenizer_decode(t, &bad, 1, &out, &len) == -1 && strstr(ssm_last_error(), "256"), "bad id");
    EXPECT(ssm_tokenizer_token_bytes(t, -1, &len) == NULL && ssm_tokenizer_token_bytes(t, 256, &len) == NULL, "range");
    ssm_tokenizer_encode(t, "", 0, &ids, &n);
    EXPECT(n == 0, "empty text gives no tokens (%zu)", n);
    free(ids);
done:
    ssm_tokenizer_free(t);
    TEST_END();
}

static void test_merge_rank(void) {
    TEST_BEGIN("BPE merges by rank, lowest position first on ties");
    /* ids: ab=256 bc=257 abc=258 aa=259 aaaa=260 */
    const char *extra[] = {"ab", "bc", "abc", "aa", "aaaa"};
    spec sp = {.extra = extra, .n_extra = 5, .merges = "[\"b c\", \"a b\", [\"a\", \"a\"], \"aa aa\"]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) goto done;
    /* Greedy left-to-right would take "ab" first; rank order merges "b c" (rank 0) first. */
    ENCODE_IS(t, "abc", 'a', 257);
    ENCODE_IS(t, "ab", 256);
    ENCODE_IS(t, "abab", 256, 256);
    ENCODE_IS(t, "aaaa", 260);
    ENCODE_IS(t, "aaa", 259, 'a');       /* the leftmost "a a" merges first */
    ENCODE_IS(t, "aaaaa", 260, 'a');
    ENCODE_IS(t, "aaaaaa", 260, 259);
    ENCODE_IS(t, "ab abc", 256, ' ', 'a', 257); /* " abc": Ġ a bc, and no (a, bc) merge */
done:
    ssm_tokenizer_free(t);
    TEST_END();
}


static void test_regex_splits(void) {
    TEST_BEGIN("GPT-2 regex: words, contractions, digits, punctuation, white space, scripts");
    SPLIT(BL, NULL, "Hello world", "Hello", " world");
    SPLIT(BL, NULL, "I'm don't we'll they've she's it'd you're", "I", "'m", " don", "'t", " we", "'ll", " they",
          "'ve", " she", "'s", " it", "'d", " you", "'re");
    SPLIT(BL, NULL, "It'S", "It", "'", "S");          /* contractions are case-sensitive */
    SPLIT(BL, NULL, "'s'S'll've", "'s", "'", "S", "'ll", "'ve");
    SPLIT(BL, NULL, "don''t", "don", "''", "t");      /* a punctuation run eats the apostrophes */
    SPLIT(BL, NULL, "'''s", "'''", "s");
    SPLIT(BL, NULL, "a 's", "a", " '", "s");
    SPLIT(BL, NULL, "abc123 456x", "abc", "123", " 456", "x");
    SPLIT(BL, NULL, "12.5% $100", "12", ".", "5", "%", " $", "100");
    SPLIT(BL, NULL, "Hi!!! ...?", "Hi", "!!!", " ...?");
    SPLIT(BL, NULL, "a ,b", "a", " ,", "b");
    /* \s+(?!\S): a run of white space gives its last character to the next word... */
    SPLIT(BL, NULL, "a   b", "a", "  ", " b");
    SPLIT(BL, NULL, "  hello", " ", " hello");
    SPLIT(BL, NULL, "a \t b", "a", " \t", " b");
    SPLIT(BL, NULL, "x \ny", "x", " ", "\n", "y");
    /* ...but not at the end of the text, and a lone one before a word stays alone (\s+). */
    SPLIT(BL, NULL, "a   ", "a", "   ");
    SPLIT(BL, NULL, "x  \n", "x", "  \n");
    SPLIT(BL, NULL, "a\n\nb", "a", "\n", "\n", "b");
    SPLIT(BL, NULL, "line1\nline2\n", "line", "1", "\n", "line", "2", "\n");
    SPLIT(BL, NULL, "a\xe3\x80\x80" "b", "a", "\xe3\x80\x80", "b");     /* U+3000 is white space */
    SPLIT(BL, NULL, "a\xc2\xa0 b", "a", "\xc2\xa0", " b");             /* so is U+00A0 */
    SPLIT(BL, NULL, "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c ok", "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c",
          " ok");                                                         /* 你好世界: one \p{L}+ run */
    SPLIT(BL, NULL, "hi \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd!", "hi", " \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd!"); /* 👋🏽! */
    SPLIT(BL, NULL, "caf\xc3\xa9 na\xc3\xafve", "caf\xc3\xa9", " na\xc3\xafve");          /* precomposed é, ï */
    SPLIT(BL, NULL, "cafe\xcc\x81s", "cafe", "\xcc\x81", "s"); /* U+0301 is a mark, not a letter */
    SPLIT(BL, NULL, "x\xc2\xb2 \xc2\xbd\xe2\x85\xab", "x", "\xc2\xb2", " \xc2\xbd\xe2\x85\xab"); /* ² ½Ⅻ are \p{N} */
    SPLIT(BL, NULL, "a\xff\xfe" "b\xe4\xbd" "x", "a", "\xff\xfe", "b", "\xe4\xbd", "x"); /* invalid UTF-8: other */
    /* use_regex=false keeps the piece whole; Sequence[Split(GPT-2), ByteLevel] splits like use_regex. */
    SPLIT(BL_NOREGEX, NULL, "Hello world  x", "Hello world  x");
    SPLIT(SEQ_SPLIT, NULL, "Hello world  x", "Hello", " world", " ", " x");
    TEST_END();
}

static void test_prefix_space(void) {
    TEST_BEGIN("add_prefix_space: one space before every piece that lacks one");
    SPLIT(BL_PREFIX, NULL, "Hello world", " Hello", " world");
    SPLIT(BL_PREFIX, NULL, " Hello", " Hello");
    SPLIT(BL_PREFIX, NULL, "\nHi", " ", "\n", "Hi");
    /* In a Sequence the ByteLevel step sees every split of the Split step. */
    SPLIT(SEQ_SPLIT_PREFIX, NULL, "a,b c", " a", " ,", " b", " c");
    /* Around added tokens, each piece between them gets its own space. */
    spec sp = {.pre = BL_PREFIX,
               .added = "[{\"id\":256,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":false,\"special\":true}]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (t) {
        ENCODE_IS(t, "a<s>b", ' ', 'a', 256, ' ', 'b');
        ENCODE_IS(t, "<s>", 256);
        ENCODE_IS(t, "<s> x", 256, ' ', 'x');
        EXPECT(!ssm_tokenizer_is_lossless(t), "prefix space is not lossless");
    }
    ssm_tokenizer_free(t);
    TEST_END();
}

static const char *ADDED =
    "[{\"id\":256,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":257,\"content\":\"<mask>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
    "{\"id\":258,\"content\":\"ab\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false},"
    "{\"id\":259,\"content\":\"abc\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":false},"
    "{\"id\":260,\"content\":\"ony\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false},"
    "{\"id\":261,\"content\":\"<l>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":65,\"content\":\"A\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}]";

static void test_added_tokens(void) {
    TEST_BEGIN("added tokens: longest match first, lstrip/rstrip, single_word, normalized");
    spec sp = {.added = ADDED};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) goto done;
    EXPECT(ssm_tokenizer_vocab_size(t) == 262, "vocab size %d", ssm_tokenizer_vocab_size(t));
    EXPECT(ssm_tokenizer_token_id(t, "<mask>") == 257 && ssm_tokenizer_token_id(t, "A") == 65, "token_id");
    size_t len;
    const char *p = ssm_tokenizer_token_bytes(t, 256, &len);
    EXPECT(p && len == 13 && memcmp(p, "<|endoftext|>", 13) == 0, "added token bytes");
    ENCODE_IS(t, "x<|endoftext|>y", 'x', 256, 'y');
    ENCODE_IS(t, "<|endoftext|><|endoftext|>", 256, 256);
    ENCODE_IS(t, "xabcd", 'x', 259, 'd');
    ENCODE_IS(t, "xabd", 'x', 258, 'd');
    ENCODE_IS(t, "a <mask> b", 'a', 257, 'b');
    ENCODE_IS(t, "a  <mask>  b", 'a', 257, 'b');
    ENCODE_IS(t, "a\xe3\x80\x80<mask>\n", 'a', 257);        /* \s is Unicode white space */
    ENCODE_IS(t, "a <l> b", 'a', 261, ' ', 'b');            /* lstrip only */
    ENCODE_IS(t, "<|endoftext|> <mask>", 256, 257);         /* the space goes to <mask> */
    ENCODE_IS(t, "Anthony ony", 'A', 'n', 't', 'h', 'o', 'n', 'y', ' ', 260);
    ENCODE_IS(t, "ony,", 260, ',');
    ENCODE_IS(t, "onyx", 'o', 'n', 'y', 'x');               /* not a single word */
    ENCODE_IS(t, "\xc3\xa9ony", 0xc3, 0xa9, 'o', 'n', 'y'); /* é is a word character */
    ENCODE_IS(t, "BAB", 'B', 65, 'B');
done:
    ssm_tokenizer_free(t);
    TEST_END();
}

/* The same added token twice (tokenizers keeps one, with the later options): the map's key is the first copy's
 * string until the second replaces it (the fuzzer's use-after-free, 2026-12-06). */
static void test_added_twice(void) {
    TEST_BEGIN("an added token listed twice: one token, the later options win");
    spec sp = {.added = "[{\"id\":256,\"content\":\"<x>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":false,\"special\":true},"
                        "{\"id\":256,\"content\":\"<x>\",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,"
                        "\"normalized\":false,\"special\":true}]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) goto done;
    EXPECT(ssm_tokenizer_vocab_size(t) == 257, "vocab size %d", ssm_tokenizer_vocab_size(t));
    ENCODE_IS(t, "a <x>", 'a', 256); /* lstrip, the second's: the space goes to <x> */
done:
    ssm_tokenizer_free(t);
    TEST_END();
}

#define REPEAT9(x) x x x x x x x x x
#define REPEAT10(x) REPEAT9(x) x

static void test_nfc(void) {
    TEST_BEGIN("NFC: composition, Hangul, canonical reordering, singletons, exclusions");
    SPLIT(BL, NFC, "cafe\xcc\x81s", "caf\xc3\xa9s");
    SPLIT(BL, NFC, "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81");     /* jamo -> 각 */
    SPLIT(BL, NFC, "\xea\xb0\x80\xe1\x86\xa8 \xe1\x84\x80\xe1\x85\xa1", "\xea\xb0\x81", " \xea\xb0\x80"); /* 가+ᆨ, ᄀ+ᅡ */
    SPLIT(BL, NFC, "q\xcc\x87\xcc\xa3", "q", "\xcc\xa3\xcc\x87");             /* ccc 230, 220 -> 220, 230 */
    SPLIT(BL, NFC, "a\xcc\x82\xcc\xa3", "\xe1\xba\xad");                        /* a+̂+̣ -> ậ after reordering */
    SPLIT(BL, NFC, "a" REPEAT10("\xcc\x87\xcc\xa3"), "\xe1\xba\xa1", REPEAT9("\xcc\xa3") REPEAT10("\xcc\x87")); /* long run */
    SPLIT(BL, NFC, "\xe2\x84\xab", "\xc3\x85");                                 /* Å (Angstrom sign) -> Å */
    SPLIT(BL, NFC, "\xe0\xa5\x98", "\xe0\xa4\x95", "\xe0\xa4\xbc");             /* क़ is excluded: stays क + ़ */
    SPLIT(BL, "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}", "e\xcc\x81", "\xc3\xa9");
    /* Normalized added tokens match the normalized text; the others match the raw text. */
    spec sp = {.normalizer = NFC,
               .added = "[{\"id\":256,\"content\":\"\\u00e9t\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":true,\"special\":false},"
                        "{\"id\":257,\"content\":\"o\\u0301\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                        "\"normalized\":false,\"special\":false}]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (t) {
        ENCODE_IS(t, "e\xcc\x81t!", 256, '!');
        ENCODE_IS(t, "\xc3\xa9t", 256);
        ENCODE_IS(t, "xo\xcc\x81", 'x', 257);
        ENCODE_IS(t, "\xc3\xb3", 0xc3, 0xb3); /* ó precomposed is not the raw "o\u0301" */
        EXPECT(!ssm_tokenizer_is_lossless(t), "NFC is not lossless");
    }
    ssm_tokenizer_free(t);
    TEST_END();
}

static void test_ignore_merges_and_unk(void) {
    TEST_BEGIN("ignore_merges; unk_token, fuse_unk, and dropped characters");
    const char *extra[] = {"ab", "abc"};
    spec sp = {.extra = extra, .n_extra = 2, .merges = "[\"a b\"]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (t) ENCODE_IS(t, "abc", 256, 'c');
    ssm_tokenizer_free(t);
    sp.model_extra = "\"ignore_merges\":true,";
    t = load_spec(&sp);
    EXPECT(t, "load");
    if (t) {
        ENCODE_IS(t, "abc", 257);
        ENCODE_IS(t, "abd", 256, 'd');
    }
    ssm_tokenizer_free(t);

    spec u = {.omit = "z", .extra_json = "\"<unk>\":256",
              .model_head = "\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":false,"};
    t = load_spec(&u);
    EXPECT(t, "load");
    if (t) {
        ENCODE_IS(t, "azzb", 'a', 256, 256, 'b');
        EXPECT(!ssm_tokenizer_is_lossless(t), "a missing byte is not lossless");
    }
    ssm_tokenizer_free(t);
    u.model_head = "\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,";
    t = load_spec(&u);
    EXPECT(t, "load");
    if (t) ENCODE_IS(t, "azzb z", 'a', 256, 'b', ' ', 256);
    ssm_tokenizer_free(t);
    u.model_head = "\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,";
    t = load_spec(&u);
    EXPECT(t, "load");
    if (t) ENCODE_IS(t, "azzb", 'a', 'b');
    ssm_tokenizer_free(t);
    TEST_END();
}

static void test_random_round_trip(void) {
    TEST_BEGIN("decode(encode(x)) == x for random byte strings, invalid UTF-8 included");
    /* ids 256.. : " t" " th"... as raw bytes; merges name their byte-level forms (Ġ = U+0120). */
    const char *extra[] = {" t", "he", " the", "in", "\n\n", "  ", "\xc3\xa9", "ing"};
    spec sp = {.extra = extra, .n_extra = 8,
               .merges = "[\"\\u0120 t\", \"h e\", \"\\u0120t he\", \"i n\", \"\\u010a \\u010a\", \"\\u0120 \\u0120\", "
                         "\"\\u00c3 \\u00a9\", \"in g\"]",
               .added = "[{\"id\":264,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,"
                        "\"rstrip\":false,\"normalized\":false,\"special\":true}]"};
    ssm_tokenizer *t = load_spec(&sp);
    EXPECT(t, "load");
    if (!t) goto done;
    EXPECT(ssm_tokenizer_is_lossless(t), "lossless");
    ENCODE_IS(t, " the thing", 258, 256, 'h', 263);
    ENCODE_IS(t, "caf\xc3\xa9\n\n\n", 'c', 'a', 'f', 262, 260, '\n');
    static const char *const pieces[] = {"a", "e", "t", "h", "i", "n", "g", " ", "  ", "\n", "\t", "'s", "'", "1", "9",
                                         "\xc3\xa9", "e\xcc\x81", "\xe4\xbd\xa0", "\xf0\x9f\x98\x80", "\xe3\x80\x80",
                                         "!", ".", "<|endoftext|>", "\xff", "\x80", "\xe4\xbd", "\xc0\xaf"};
    rng_t rng = {12345};
    int failures = 0;
    for (int iter = 0; iter < 3000 && failures < 3; iter++) {
        char buf[512];
        size_t len = 0;
        int parts = (int)(rng_next(&rng) % 24);
        for (int k = 0; k < parts; k++) {
            if (rng_next(&rng) % 8 == 0) { /* a raw random byte, NUL included */
                buf[len++] = (char)(rng_next(&rng) & 0xff);
                continue;
            }
            const char *piece = pieces[rng_next(&rng) % (sizeof pieces / sizeof *pieces)];
            memcpy(buf + len, piece, strlen(piece));
            len += strlen(piece);
        }
        int *ids;
        size_t n;
        char *out = NULL;
        size_t out_len = 0;
        ssm_tokenizer_encode(t, buf, len, &ids, &n);
        int ok = ssm_tokenizer_decode(t, ids, n, &out, &out_len) == 0 && out_len == len && memcmp(out, buf, len) == 0;
        if (!ok) failures++;
        EXPECT(ok, "round trip of a %zu-byte string (iteration %d)", len, iter);
        free(out);
        free(ids);
    }
done:
    ssm_tokenizer_free(t);
    TEST_END();
}

/* Loading `json` fails with a message that names the file and contains `want`. */
static void expect_load_error(const char *json, const char *want) {
    char *path = write_temp(json);
    ssm_tokenizer *t = ssm_tokenizer_load(path);
    const char *msg = ssm_last_error();
    EXPECT(!t && strstr(msg, path) && strstr(msg, want) && !strchr(msg, '\n'), "want an error with '%s', got %s", want,
           t ? "a tokenizer" : msg);
    ssm_tokenizer_free(t);
    unlink(path);
    free(path);
}

static void expect_spec_error(const spec *sp, const char *want) {
    char *json = spec_json(sp);
    expect_load_error(json, want);
    free(json);
}

static void test_errors(void) {
    TEST_BEGIN("load errors: one line naming the file, no leaks");
    expect_load_error("{\"model\": }", "line 1, column 11");
    expect_load_error("[]", "top level");
    expect_load_error("{}", "missing \"model\" object");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "missing model.vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "missing model.merges");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", "unsupported model type 'WordPiece'");
    const char *extra[] = {"ab", "abc"};
    spec sp = {.extra = extra, .n_extra = 2, .merges = "[\"a b\", \"ab c\"]", .omit = "c"};
    expect_spec_error(&sp, "merge 1 'ab c' names unknown token 'c'");
    sp.omit = NULL, sp.n_extra = 1;
    expect_spec_error(&sp, "merge 1 'ab c' names unknown token 'abc'");
    sp.merges = "[\"a b c\"]";
    expect_spec_error(&sp, "merge 0 'a b c' is not two tokens");
    sp.merges = "[[\"a\"]]";
    expect_spec_error(&sp, "merge 0 must be");
    spec d = {.extra_json = "\"zz\":5"};
    expect_spec_error(&d, "duplicate id 5");
    d.extra_json = "\"zz\":-1";
    expect_spec_error(&d, "'zz' has id out of range");
    d.extra_json = "\"zz\":1.5";
    expect_spec_error(&d, "'zz' has id out of range");
    d.extra_json = "\"zz\":\"7\"";
    expect_spec_error(&d, "'zz' has id that is not a number");
    spec m = {.model_head = "\"type\":\"BPE\",\"dropout\":0.1,"};
    expect_spec_error(&m, "dropout is not supported");
    m.model_head = "\"type\":\"BPE\",\"byte_fallback\":true,";
    expect_spec_error(&m, "byte_fallback is not supported");
    m.model_head = "\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",";
    expect_spec_error(&m, "continuing_subword_prefix is not supported");
    m.model_head = "\"type\":\"BPE\",\"end_of_word_suffix\":\"</w>\",";
    expect_spec_error(&m, "end_of_word_suffix is not supported");
    m.model_head = "\"type\":\"BPE\",\"unk_token\":\"<unk>\",";
    expect_spec_error(&m, "unk_token '<unk>' is not in model.vocab");
    spec n = {.normalizer = "{\"type\":\"Lowercase\"}"};
    expect_spec_error(&n, "unsupported normalizer 'Lowercase'");
    n.normalizer = "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"NFKC\"}]}";
    expect_spec_error(&n, "unsupported normalizer 'NFKC'");
    spec p = {.pre = "{\"type\":\"Whitespace\"}"};
    expect_spec_error(&p, "unsupported pre_tokenizer 'Whitespace'");
    p.pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},"
            "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}";
    expect_spec_error(&p, "unsupported Split pattern '\\s+'");
    p.pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" GPT2_RE "\"},"
            "\"behavior\":\"Removed\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}";
    expect_spec_error(&p, "unsupported Split behavior 'Removed'");
    p.pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Split\",\"pattern\":"
            "{\"Regex\":\"" GPT2_RE "\"},\"behavior\":\"Isolated\",\"invert\":false}]}";
    expect_spec_error(&p, "ByteLevel must be the last");
    spec a = {.added = "[{\"id\":300,\"content\":\"<x>\",\"special\":true,\"normalized\":false}]"};
    expect_spec_error(&a, "added token '<x>' has id 300, but tokenizers would give it id 256");
    a.added = "[{\"id\":7,\"content\":\"<x>\",\"special\":true,\"normalized\":false}]";
    expect_spec_error(&a, "added token '<x>' has id 7");
    /* a gap in the vocabulary's ids puts the next added id on a vocabulary string (a fuzzer's find: "e" decoded as the
     * added token's two spaces) */
    spec g = {.extra_json = "\"zz\":257", .added = "[{\"id\":257,\"content\":\"<x>\",\"normalized\":false}]"};
    expect_spec_error(&g, "added token '<x>' has id 257, which model.vocab gives to 'zz'");
    expect_load_error("{\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"vocab\":{},\"merges\":[]}}",
                      "unsupported decoder 'WordPiece'");
    EXPECT(ssm_tokenizer_load("/nonexistent/tokenizer.json") == NULL &&
               strstr(ssm_last_error(), "/nonexistent/tokenizer.json"),
           "missing file: %s", ssm_last_error());
    TEST_END();
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/ssm_test_tokenizer.XXXXXX");
    CHECK(mkdtemp(tmp_dir), "mkdtemp");
    test_byte_round_trip();
    test_merge_rank();
    test_regex_splits();
    test_prefix_space();
    test_added_tokens();
    test_added_twice();
    test_nfc();
    test_ignore_merges_and_unk();
    test_random_round_trip();
    test_errors();
    rmdir(tmp_dir);
    return test_failures;
}
