/* Byte-level BPE tokenizer compatible with Hugging Face `tokenizers` (GPT-2 / GPT-NeoX tokenizer.json).
 * The encode pipeline follows TokenizerImpl::encode with add_special_tokens=False:
 *   1. AddedVocabulary::extract_and_normalize: split the raw text on the non-normalized added tokens
 *      (Aho-Corasick leftmost-longest, then single_word / lstrip / rstrip), NFC-normalize each piece
 *      between them, split those on the normalized added tokens;
 *   2. the pre-tokenizer on every remaining piece: optional Split steps with the GPT-2 regex, then
 *      ByteLevel (prefix space per piece, the GPT-2 regex, bytes -> printable characters);
 *   3. BPE on every pre-token: the priority-queue merge of models/bpe/word.rs (lowest rank, then
 *      leftmost), with its exact rule for stale queue entries.
 * Text is handled as bytes: invalid UTF-8 bytes are single-byte characters of no Unicode class, so
 * every input encodes and decodes back to its bytes. */
#include "io/tokenizer.h"

#include <string.h>

#include "common.h"
#include "io/fileio.h"
#include "io/json.h"
#include "io/unicode_tables.h"

/* The only Split pattern supported: the GPT-2 regex, as ByteLevel(use_regex=true) uses it. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

#define MAX_PRE_STEPS 8
#define INVALID_BYTE_CP 0x110000u /* + byte: a byte that is not part of well-formed UTF-8 */

/* ---------------------------------------------------------------- Unicode */

/* Decodes the character at s[i] (i < n): its length, and *cp (INVALID_BYTE_CP + byte for a byte that
 * does not start a well-formed sequence: overlong, surrogate, past U+10FFFF, truncated). */
static size_t utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp) {
    unsigned c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    uint32_t v;
    if (c >= 0xc2 && c <= 0xdf) len = 2, v = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        *cp = INVALID_BYTE_CP + c;
        return 1;
    }
    if (i + len > n) {
        *cp = INVALID_BYTE_CP + c;
        return 1;
    }
    for (size_t k = 1; k < len; k++) {
        unsigned b = s[i + k];
        if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) {
            *cp = INVALID_BYTE_CP + c;
            return 1;
        }
        v = (v << 6) | (b & 0x3f);
    }
    *cp = v;
    return len;
}

static size_t utf8_put(uint32_t cp, unsigned char *out) {
    if (cp >= INVALID_BYTE_CP) {
        out[0] = (unsigned char)(cp - INVALID_BYTE_CP);
        return 1;
    }
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

static uint32_t range_lookup(const uni_range *r, int count, uint32_t cp) {
    int lo = 0, hi = count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid - 1;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return r[mid].value;
    }
    return 0;
}

static unsigned uni_class(uint32_t cp) {
    if (cp < 128) return uni_ascii_class[cp];
    if (cp >= INVALID_BYTE_CP) return 0;
    return range_lookup(uni_class_ranges, uni_class_count, cp);
}

static unsigned uni_ccc(uint32_t cp) {
    if (cp < 0x300 || cp >= INVALID_BYTE_CP) return 0;
    return range_lookup(uni_ccc_ranges, uni_ccc_count, cp);
}

enum { HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7 };
enum { HANGUL_LCOUNT = 19, HANGUL_VCOUNT = 21, HANGUL_TCOUNT = 28, HANGUL_SCOUNT = 11172 };

static const uni_triple *decomp_find(uint32_t cp) {
    int lo = 0, hi = uni_decomp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < uni_decomp[mid].a) hi = mid - 1;
        else if (cp > uni_decomp[mid].a) lo = mid + 1;
        else return &uni_decomp[mid];
    }
    return NULL;
}

typedef struct {
    uint32_t *cp;
    size_t n, cap;
} cpvec;

static void cp_push(cpvec *v, uint32_t cp) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->cp = xrealloc_array(v->cp, v->cap, sizeof *v->cp);
    }
    v->cp[v->n++] = cp;
}

/* Full canonical decomposition of cp appended to v (the tables hold one level; recursion is shallow). */
static void decompose(uint32_t cp, cpvec *v) {
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SCOUNT) {
        uint32_t s = cp - HANGUL_S;
        cp_push(v, HANGUL_L + s / (HANGUL_VCOUNT * HANGUL_TCOUNT));
        cp_push(v, HANGUL_V + (s % (HANGUL_VCOUNT * HANGUL_TCOUNT)) / HANGUL_TCOUNT);
        if (s % HANGUL_TCOUNT) cp_push(v, HANGUL_T + s % HANGUL_TCOUNT);
        return;
    }
    const uni_triple *d = cp >= 0xC0 && cp < INVALID_BYTE_CP ? decomp_find(cp) : NULL;
    if (!d) {
        cp_push(v, cp);
        return;
    }
    decompose(d->b, v);
    if (d->c) decompose(d->c, v);
}

/* The primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V && b < HANGUL_V + HANGUL_VCOUNT)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 && b > HANGUL_T &&
        b < HANGUL_T + HANGUL_TCOUNT)
        return a + (b - HANGUL_T);
    int lo = 0, hi = uni_comp_count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const uni_triple *c = &uni_comp[mid];
        if (a < c->a || (a == c->a && b < c->b)) hi = mid - 1;
        else if (a > c->a || b > c->b) lo = mid + 1;
        else return c->c;
    }
    return 0;
}

typedef struct {
    unsigned char *data;
    size_t len, cap;
} bytevec;

static void bytes_reserve(bytevec *b, size_t extra) {
    if (b->len + extra > b->cap) {
        size_t cap = b->cap * 2 > 64 ? b->cap * 2 : 64;
        b->cap = cap > b->len + extra ? cap : b->len + extra;
        b->data = xrealloc_array(b->data, b->cap, 1);
    }
}

static void bytes_append(bytevec *b, const void *p, size_t n) {
    bytes_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* NFC of s[0..n) into out (cleared first): canonical decomposition, canonical ordering, canonical
 * composition (UAX #15). Invalid bytes are starters that compose with nothing. */
static void nfc(const unsigned char *s, size_t n, bytevec *out, cpvec *work) {
    out->len = 0;
    /* Below U+0300 every character is a starter that nothing composes onto: such text is in NFC. */
    size_t i = 0;
    while (i < n && s[i] < 0xcc) i++;
    if (i == n) {
        bytes_append(out, s, n);
        return;
    }
    work->n = 0;
    for (i = 0; i < n;) {
        uint32_t cp;
        i += utf8_next(s, n, i, &cp);
        decompose(cp, work);
    }
    uint32_t *c = work->cp;
    size_t m = work->n;
    /* Each entry carries its combining class in bits 24..31 (code points need 21 bits). */
    for (size_t k = 0; k < m; k++) c[k] |= uni_ccc(c[k]) << 24;
    /* Canonical ordering: a stable sort of each run of non-starters by class; a counting sort for
     * long runs, so a text of nothing but marks stays linear. */
    for (size_t k = 0; k < m;) {
        if (!(c[k] >> 24)) {
            k++;
            continue;
        }
        size_t end = k;
        while (end < m && (c[end] >> 24)) end++;
        size_t run = end - k;
        if (run <= 16) {
            for (size_t a = k + 1; a < end; a++) {
                uint32_t x = c[a];
                size_t b = a;
                while (b > k && (c[b - 1] >> 24) > (x >> 24)) c[b] = c[b - 1], b--;
                c[b] = x;
            }
        } else {
            size_t count[257] = {0};
            uint32_t *sorted = xmalloc(run * sizeof *sorted);
            for (size_t a = k; a < end; a++) count[(c[a] >> 24) + 1]++;
            for (int cc = 1; cc < 257; cc++) count[cc] += count[cc - 1];
            for (size_t a = k; a < end; a++) sorted[count[c[a] >> 24]++] = c[a];
            memcpy(c + k, sorted, run * sizeof *sorted);
            free(sorted);
        }
        k = end;
    }
    /* Canonical composition: a character joins the last starter unless something in between has a
     * class of 0 or at least its own. */
    if (m > 0) {
        size_t starter = 0, w = 1;
        unsigned last = (c[0] >> 24) ? 256 : 0;
        for (size_t k = 1; k < m; k++) {
            uint32_t ch = c[k];
            unsigned cc = ch >> 24;
            uint32_t comp = compose(c[starter] & 0x1fffff, ch & 0x1fffff);
            if (comp && (last < cc || last == 0)) {
                c[starter] = comp | uni_ccc(comp) << 24;
                continue;
            }
            if (cc == 0) starter = w;
            last = cc;
            c[w++] = ch;
        }
        m = w;
    }
    bytes_reserve(out, 4 * m);
    for (size_t k = 0; k < m; k++) out->len += utf8_put(c[k] & 0x1fffff, out->data + out->len);
}

/* ---------------------------------------------------------------- GPT-2 pre-tokenizer regex */

/* End of the match of the GPT-2 regex starting at s[p] (p < n), emulating the Oniguruma /
 * fancy-regex backtracking search: alternatives tried in order, the first that matches wins. Every
 * character starts a match, so the matches tile the text. */
static size_t gpt2_match(const unsigned char *s, size_t n, size_t p) {
    if (s[p] == '\'' && p + 1 < n) { /* 's|'t|'re|'ve|'m|'ll|'d */
        unsigned char c = s[p + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return p + 2;
        if (p + 2 < n && ((c == 'r' && s[p + 2] == 'e') || (c == 'v' && s[p + 2] == 'e') || (c == 'l' && s[p + 2] == 'l')))
            return p + 3;
    }
    uint32_t cp;
    size_t q = p, len = utf8_next(s, n, p, &cp);
    unsigned cls = uni_class(cp);
    if (s[p] == ' ' && p + 1 < n) { /* " ?" takes the space when the class after it matches */
        uint32_t cp2;
        size_t len2 = utf8_next(s, n, p + 1, &cp2);
        unsigned cls2 = uni_class(cp2);
        if (!(cls2 & UNI_SPACE)) q = p + 1, len = len2, cls = cls2;
    }
    if (!(cls & UNI_SPACE)) {
        /* \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+ from q: the longest run of the same kind. */
        unsigned kind = cls & (UNI_LETTER | UNI_NUMBER);
        size_t e = q + len;
        while (e < n) {
            size_t l = utf8_next(s, n, e, &cp);
            unsigned c = uni_class(cp);
            if (kind ? !(c & kind) : (c & (UNI_LETTER | UNI_NUMBER | UNI_SPACE)) != 0) break;
            e += l;
        }
        return e;
    }
    /* \s+(?!\S) | \s+ : the whole run when it ends the text; else all but its last character (which
     * is followed by \S), unless that leaves nothing, where \s+ takes the single character. */
    size_t e = p, last = p;
    while (e < n) {
        size_t l = utf8_next(s, n, e, &cp);
        if (!(uni_class(cp) & UNI_SPACE)) break;
        last = e;
        e += l;
    }
    if (e == n || last == p) return e;
    return last;
}

/* ---------------------------------------------------------------- hash maps */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* String -> int, open addressing; keys are borrowed (owned by the tokenizer's tables). */
typedef struct {
    const char *key;
    size_t len;
    int value;
} str_slot;
typedef struct {
    str_slot *slots;
    size_t cap, count; /* cap: power of two */
} strmap;

static void strmap_init(strmap *m, size_t expected) {
    m->cap = 16;
    while (m->cap < 2 * expected + 16) m->cap *= 2;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    m->count = 0;
}

static str_slot *strmap_slot(const strmap *m, const char *key, size_t len) {
    size_t i = hash_bytes(key, len) & (m->cap - 1);
    for (;;) {
        str_slot *s = &m->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, key, len) == 0)) return s;
        i = (i + 1) & (m->cap - 1);
    }
}

static int strmap_get(const strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    const str_slot *s = strmap_slot(m, key, len);
    return s->key ? s->value : -1;
}

/* Inserts or overwrites. */
static void strmap_put(strmap *m, const char *key, size_t len, int value) {
    if (2 * (m->count + 1) > m->cap) {
        strmap old = *m;
        m->cap *= 2;
        m->slots = xcalloc(m->cap, sizeof *m->slots);
        m->count = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key) *strmap_slot(m, old.slots[i].key, old.slots[i].len) = old.slots[i], m->count++;
        free(old.slots);
    }
    str_slot *s = strmap_slot(m, key, len);
    if (!s->key) m->count++;
    s->key = key, s->len = len, s->value = value;
}

/* u64 -> (int, int), open addressing; UINT64_MAX marks an empty slot. */
typedef struct {
    uint64_t key;
    int a, b;
} u64_slot;
typedef struct {
    u64_slot *slots;
    size_t cap, count;
} u64map;

static void u64map_alloc(u64map *m, size_t cap) {
    m->cap = cap;
    m->slots = xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
    m->count = 0;
}

static u64_slot *u64map_slot(const u64map *m, uint64_t key) {
    size_t i = hash_u64(key) & (m->cap - 1);
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

static const u64_slot *u64map_get(const u64map *m, uint64_t key) {
    if (!m->slots) return NULL;
    const u64_slot *s = u64map_slot(m, key);
    return s->key == key ? s : NULL;
}

static void u64map_put(u64map *m, uint64_t key, int a, int b) {
    if (!m->slots) u64map_alloc(m, 64);
    if (2 * (m->count + 1) > m->cap) {
        u64map old = *m;
        u64map_alloc(m, old.cap * 2);
        for (size_t i = 0; i < old.cap; i++)
            if (old.slots[i].key != UINT64_MAX) *u64map_slot(m, old.slots[i].key) = old.slots[i], m->count++;
        free(old.slots);
    }
    u64_slot *s = u64map_slot(m, key);
    if (s->key != key) m->count++;
    s->key = key, s->a = a, s->b = b;
}

/* ---------------------------------------------------------------- the ssm_tokenizer */

typedef struct {
    char *content; /* UTF-8 as in tokenizer.json */
    size_t len;
    int id;
    int single_word, lstrip, rstrip, normalized, special;
} added_token;

/* Byte trie over added-token patterns for Aho-Corasick's leftmost-longest matching. */
typedef struct {
    u64map edges;   /* (node << 8 | byte) -> child in .a */
    int *terminal;  /* [n_nodes] added-token index or -1 */
    int n_nodes;
    unsigned char first[256]; /* bytes a pattern can start with */
    int n_patterns;
} trie;

enum { STEP_SPLIT_GPT2, STEP_BYTE_LEVEL };

struct ssm_tokenizer {
    char *name;
    int n_ids;               /* one more than the largest id */
    char **vocab_str;        /* [n_ids] model vocabulary strings, NULL where the model has no such id */
    size_t *vocab_len;       /* [n_ids] */
    unsigned char **piece;   /* [n_ids] bytes after the ByteLevel decoder, NULL for unused ids */
    size_t *piece_len;       /* [n_ids] */
    strmap vocab;            /* model vocabulary string -> id */
    strmap added_map;        /* added-token content -> index in added */
    u64map merges;           /* (left id << 32 | right id) -> (rank, merged id) */
    int byte_id[256];        /* id of the single byte-level character of each byte, or -1 */
    int unk_id, fuse_unk, ignore_merges;
    int nfc;
    int n_steps;
    int step_kind[MAX_PRE_STEPS];
    int add_prefix_space, use_regex; /* of the final ByteLevel step */
    added_token *added;
    int n_added;
    trie raw_trie, norm_trie; /* patterns of normalized=false / normalized=true added tokens */
};

/* GPT-2's bytes_to_unicode: the printable bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand for themselves;
 * the other 68 (0x00-0x20, 0x7F-0xA0, 0xAD), in order, for U+0100..U+0143. */
static uint32_t byte_char(unsigned b) {
    if (b <= 0x20) return 256 + b;
    if (b >= 0x7f && b <= 0xa0) return 256 + 33 + (b - 0x7f);
    if (b == 0xad) return 256 + 67;
    return b;
}

/* The inverse: the byte a character stands for, or -1. */
static int char_byte(uint32_t cp) {
    if (cp < 256) return byte_char(cp) == cp ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(cp - 256 - 33 + 0x7f);
    return cp == 256 + 67 ? 0xad : -1;
}

/* The ByteLevel decoder on one token: each character back to its byte; a token with any character
 * outside the table stays as its UTF-8 text (decoders/byte_level.rs does the same). */
static unsigned char *byte_level_decode(const char *s, size_t n, size_t *out_len) {
    unsigned char *out = xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += utf8_next((const unsigned char *)s, n, i, &cp);
        if (char_byte(cp) < 0) {
            memcpy(out, s, n);
            m = n;
            break;
        }
        out[m++] = (unsigned char)char_byte(cp);
    }
    out[m] = 0;
    *out_len = m;
    return out;
}

static void trie_init(trie *tr) {
    memset(tr, 0, sizeof *tr);
    tr->n_nodes = 1;
    tr->terminal = xmalloc(sizeof(int));
    tr->terminal[0] = -1;
}

static void trie_add(trie *tr, const unsigned char *p, size_t n, int index) {
    int node = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = (uint64_t)node << 8 | p[i];
        const u64_slot *s = u64map_get(&tr->edges, key);
        if (s) {
            node = s->a;
            continue;
        }
        tr->terminal = xrealloc_array(tr->terminal, (size_t)tr->n_nodes + 1, sizeof(int));
        tr->terminal[tr->n_nodes] = -1;
        u64map_put(&tr->edges, key, tr->n_nodes, 0);
        node = tr->n_nodes++;
    }
    tr->first[p[0]] = 1;
    tr->terminal[node] = index; /* a repeated content keeps the later token's options, as tokenizers does */
    tr->n_patterns++;
}

/* The leftmost, then longest, pattern occurrence in s[from..n): 1 with [*ms, *me) and the token index. */
static int trie_find(const trie *tr, const unsigned char *s, size_t n, size_t from, size_t *ms, size_t *me,
                     int *index) {
    if (!tr->n_patterns) return 0;
    for (size_t p = from; p < n; p++) {
        if (!tr->first[s[p]]) continue;
        int node = 0, best = -1;
        size_t best_end = 0;
        for (size_t i = p; i < n; i++) {
            const u64_slot *e = u64map_get(&tr->edges, (uint64_t)node << 8 | s[i]);
            if (!e) break;
            node = e->a;
            if (tr->terminal[node] >= 0) best = tr->terminal[node], best_end = i + 1;
        }
        if (best >= 0) {
            *ms = p, *me = best_end, *index = best;
            return 1;
        }
    }
    return 0;
}

static void trie_free(trie *tr) {
    free(tr->edges.slots);
    free(tr->terminal);
}

void ssm_tokenizer_free(ssm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_ids; i++) {
        if (t->vocab_str) free(t->vocab_str[i]);
        if (t->piece) free(t->piece[i]);
    }
    free(t->vocab_str);
    free(t->vocab_len);
    free(t->piece);
    free(t->piece_len);
    free(t->vocab.slots);
    free(t->added_map.slots);
    free(t->merges.slots);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    trie_free(&t->raw_trie);
    trie_free(&t->norm_trie);
    free(t->name);
    free(t);
}

/* ---------------------------------------------------------------- loading */

static const char *type_of(const json_value *v) {
    const json_value *ty = json_get(v, "type");
    return ty && ty->type == JSON_STRING ? ty->string : NULL;
}

/* An optional boolean member: 0 and *out (default kept when absent or null), or -1 with an error. */
static int opt_bool(const ssm_tokenizer *t, const json_value *obj, const char *where, const char *key, int *out) {
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_BOOL) return ssm_error("%s: %s.%s must be true or false", t->name, where, key);
    *out = v->boolean;
    return 0;
}

/* A non-negative integer id that fits an int. */
static int parse_id(const ssm_tokenizer *t, const json_value *v, const char *what, const char *token, int *out) {
    /* Ids index tables of (largest id + 1) entries; no model has more than SSM_MAX_VOCAB tokens, so a
     * larger id is an error rather than a huge allocation. */
    if (!v || v->type != JSON_NUMBER || !(v->number >= 0 && v->number < SSM_MAX_VOCAB) ||
        v->number != (double)(int)v->number)
        return ssm_error("%s: %s '%s' has id %s, expected an integer in [0, %d)", t->name, what, token,
                         v && v->type == JSON_NUMBER ? "out of range" : "that is not a number", SSM_MAX_VOCAB);
    *out = (int)v->number;
    return 0;
}

static int load_normalizer(ssm_tokenizer *t, const json_value *n) {
    if (!n || n->type == JSON_NULL) return 0;
    const char *type = type_of(n);
    if (type && strcmp(type, "NFC") == 0) {
        t->nfc = 1;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(n, "normalizers");
        if (!list || list->type != JSON_ARRAY)
            return ssm_error("%s: normalizer Sequence needs a 'normalizers' array", t->name);
        for (size_t i = 0; i < list->count; i++)
            if (load_normalizer(t, &list->items[i]) != 0) return -1;
        return 0;
    }
    return ssm_error("%s: unsupported normalizer '%s' (only NFC, or a Sequence of NFC, is supported)", t->name,
                     type ? type : "(no type)");
}

static int load_pre_step(ssm_tokenizer *t, const json_value *p, int last) {
    const char *type = type_of(p);
    if (t->n_steps >= MAX_PRE_STEPS) return ssm_error("%s: too many pre-tokenizer steps", t->name);
    if (type && strcmp(type, "ByteLevel") == 0) {
        if (!last) return ssm_error("%s: ByteLevel must be the last pre-tokenizer of the Sequence", t->name);
        t->add_prefix_space = 1, t->use_regex = 1; /* ByteLevel::default() */
        if (opt_bool(t, p, "pre_tokenizer", "add_prefix_space", &t->add_prefix_space) != 0 ||
            opt_bool(t, p, "pre_tokenizer", "use_regex", &t->use_regex) != 0)
            return -1;
        t->step_kind[t->n_steps++] = STEP_BYTE_LEVEL;
        return 0;
    }
    if (type && strcmp(type, "Split") == 0) {
        const json_value *pat = json_get(p, "pattern");
        const json_value *re = json_get(pat, "Regex");
        const json_value *str = json_get(pat, "String");
        const json_value *behavior = json_get(p, "behavior");
        const json_value *invert = json_get(p, "invert");
        if (!re || re->type != JSON_STRING || strcmp(re->string, GPT2_PATTERN) != 0)
            return ssm_error("%s: unsupported Split pattern %s%s%s (only the GPT-2 regex is supported)", t->name,
                             re && re->type == JSON_STRING ? "'" : str ? "String " : "",
                             re && re->type == JSON_STRING ? re->string : str && str->type == JSON_STRING ? str->string : "(missing)",
                             re && re->type == JSON_STRING ? "'" : "");
        if (!behavior || behavior->type != JSON_STRING || strcmp(behavior->string, "Isolated") != 0)
            return ssm_error("%s: unsupported Split behavior '%s' (only Isolated is supported)", t->name,
                             behavior && behavior->type == JSON_STRING ? behavior->string : "(missing)");
        if (invert && !(invert->type == JSON_BOOL && !invert->boolean))
            return ssm_error("%s: Split with invert=true is not supported", t->name);
        t->step_kind[t->n_steps++] = STEP_SPLIT_GPT2;
        return 0;
    }
    return ssm_error("%s: unsupported pre_tokenizer '%s' (expected ByteLevel, or a Sequence of the GPT-2 Split "
                     "and ByteLevel)", t->name, type ? type : "(no type)");
}

static int load_pre_tokenizer(ssm_tokenizer *t, const json_value *p) {
    if (!p || p->type == JSON_NULL)
        return ssm_error("%s: pre_tokenizer is null; only ByteLevel tokenizers are supported", t->name);
    const char *type = type_of(p);
    if (type && strcmp(type, "Sequence") == 0) {
        const json_value *list = json_get(p, "pretokenizers");
        if (!list || list->type != JSON_ARRAY || list->count == 0)
            return ssm_error("%s: pre_tokenizer Sequence needs a non-empty 'pretokenizers' array", t->name);
        for (size_t i = 0; i < list->count; i++)
            if (load_pre_step(t, &list->items[i], i + 1 == list->count) != 0) return -1;
        if (t->step_kind[t->n_steps - 1] != STEP_BYTE_LEVEL)
            return ssm_error("%s: pre_tokenizer Sequence must end with ByteLevel", t->name);
        return 0;
    }
    return load_pre_step(t, p, 1);
}

/* Splits a legacy "a b" merge at its single space; 0 when it is not exactly two parts. */
static int split_legacy_merge(const json_value *m, size_t *space) {
    const char *sp = memchr(m->string, ' ', m->string_len);
    if (!sp || memchr(sp + 1, ' ', m->string_len - (size_t)(sp - m->string) - 1)) return 0;
    *space = (size_t)(sp - m->string);
    return 1;
}

static int load_model(ssm_tokenizer *t, const json_value *model) {
    if (!model || model->type != JSON_OBJECT) return ssm_error("%s: missing \"model\" object", t->name);
    const char *type = type_of(model);
    if (json_get(model, "type") && (!type || strcmp(type, "BPE") != 0))
        return ssm_error("%s: unsupported model type '%s' (only BPE is supported)", t->name, type ? type : "?");
    const json_value *dropout = json_get(model, "dropout");
    if (dropout && dropout->type != JSON_NULL)
        return ssm_error("%s: BPE dropout is not supported (model.dropout must be null)", t->name);
    int byte_fallback = 0;
    if (opt_bool(t, model, "model", "byte_fallback", &byte_fallback) != 0 ||
        opt_bool(t, model, "model", "fuse_unk", &t->fuse_unk) != 0 ||
        opt_bool(t, model, "model", "ignore_merges", &t->ignore_merges) != 0)
        return -1;
    if (byte_fallback) return ssm_error("%s: BPE byte_fallback is not supported", t->name);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const json_value *v = json_get(model, affixes[k]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->string_len == 0))
            return ssm_error("%s: BPE %s is not supported (must be null or empty)", t->name, affixes[k]);
    }

    const json_value *vocab = json_get(model, "vocab");
    if (!vocab || vocab->type != JSON_OBJECT) return ssm_error("%s: missing model.vocab object", t->name);
    int max_id = -1;
    for (size_t i = 0; i < vocab->count; i++) {
        int id = 0;
        if (parse_id(t, &vocab->items[i], "vocabulary token", vocab->keys[i], &id) != 0) return -1;
        max_id = imax(max_id, id);
    }
    t->n_ids = max_id + 1;
    t->vocab_str = xcalloc((size_t)t->n_ids, sizeof *t->vocab_str);
    t->vocab_len = xcalloc((size_t)t->n_ids, sizeof *t->vocab_len);
    strmap_init(&t->vocab, vocab->count);
    for (size_t i = 0; i < vocab->count; i++) {
        int id = (int)vocab->items[i].number;
        /* JSON object keys are NUL-terminated; a key with \u0000 in it would be cut here. */
        if (t->vocab_str[id])
            return ssm_error("%s: duplicate id %d in model.vocab ('%s' and '%s')", t->name, id, t->vocab_str[id],
                             vocab->keys[i]);
        t->vocab_str[id] = xstrdup(vocab->keys[i]);
        t->vocab_len[id] = strlen(vocab->keys[i]);
        strmap_put(&t->vocab, t->vocab_str[id], t->vocab_len[id], id);
    }
    for (int b = 0; b < 256; b++) {
        unsigned char buf[4];
        size_t n = utf8_put(byte_char((unsigned)b), buf);
        t->byte_id[b] = strmap_get(&t->vocab, (const char *)buf, n);
    }

    t->unk_id = -1;
    const json_value *unk = json_get(model, "unk_token");
    if (unk && unk->type == JSON_STRING) {
        t->unk_id = strmap_get(&t->vocab, unk->string, unk->string_len);
        if (t->unk_id < 0) return ssm_error("%s: unk_token '%s' is not in model.vocab", t->name, unk->string);
    } else if (unk && unk->type != JSON_NULL) {
        return ssm_error("%s: model.unk_token must be a string or null", t->name);
    }

    const json_value *merges = json_get(model, "merges");
    if (!merges || merges->type != JSON_ARRAY) return ssm_error("%s: missing model.merges array", t->name);
    u64map_alloc(&t->merges, 64);
    int rank = 0;
    for (size_t i = 0; i < merges->count; i++) {
        const json_value *m = &merges->items[i];
        const char *a, *b;
        size_t alen, blen;
        if (m->type == JSON_STRING) {
            if (m->string_len >= 8 && memcmp(m->string, "#version", 8) == 0) continue;
            size_t sp;
            if (!split_legacy_merge(m, &sp))
                return ssm_error("%s: merge %zu '%s' is not two tokens separated by one space", t->name, i,
                                 m->string);
            a = m->string, alen = sp, b = m->string + sp + 1, blen = m->string_len - sp - 1;
        } else if (m->type == JSON_ARRAY && m->count == 2 && m->items[0].type == JSON_STRING &&
                   m->items[1].type == JSON_STRING) {
            a = m->items[0].string, alen = m->items[0].string_len;
            b = m->items[1].string, blen = m->items[1].string_len;
        } else {
            return ssm_error("%s: merge %zu must be a string \"a b\" or a pair [\"a\", \"b\"]", t->name, i);
        }
        /* The merged token is a followed by b (no continuing_subword_prefix to strip). */
        char *merged = xmalloc(alen + blen + 1);
        memcpy(merged, a, alen);
        memcpy(merged + alen, b, blen);
        merged[alen + blen] = 0;
        int ia = strmap_get(&t->vocab, a, alen), ib = strmap_get(&t->vocab, b, blen);
        int im = strmap_get(&t->vocab, merged, alen + blen);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *what = ia < 0 ? a : ib < 0 ? b : merged;
            int what_len = (int)(ia < 0 ? alen : ib < 0 ? blen : alen + blen);
            ssm_error("%s: merge %zu '%.*s %.*s' names unknown token '%.*s'", t->name, i, (int)alen, a, (int)blen, b,
                      what_len, what);
            free(merged);
            return -1;
        }
        free(merged);
        /* A repeated pair keeps its last rank: tokenizers collects the merges into a HashMap. */
        u64map_put(&t->merges, (uint64_t)ia << 32 | (uint32_t)ib, rank, im);
        rank++;
    }
    return 0;
}

static int load_added_tokens(ssm_tokenizer *t, const json_value *list) {
    if (!list || list->type == JSON_NULL) return 0;
    if (list->type != JSON_ARRAY) return ssm_error("%s: added_tokens must be an array", t->name);
    t->added = xcalloc(list->count ? list->count : 1, sizeof *t->added);
    strmap_init(&t->added_map, list->count);
    size_t vocab_count = t->vocab.count;
    int max_added = -1;
    for (size_t i = 0; i < list->count; i++) {
        const json_value *o = &list->items[i];
        const json_value *content = json_get(o, "content");
        if (o->type != JSON_OBJECT || !content || content->type != JSON_STRING)
            return ssm_error("%s: added_tokens[%zu] needs a string \"content\"", t->name, i);
        int id = 0;
        if (parse_id(t, json_get(o, "id"), "added token", content->string, &id) != 0) return -1;
        added_token tok = {.id = id, .normalized = 1};
        if (opt_bool(t, o, "added_tokens", "single_word", &tok.single_word) != 0 ||
            opt_bool(t, o, "added_tokens", "lstrip", &tok.lstrip) != 0 ||
            opt_bool(t, o, "added_tokens", "rstrip", &tok.rstrip) != 0 ||
            opt_bool(t, o, "added_tokens", "normalized", &tok.normalized) != 0 ||
            opt_bool(t, o, "added_tokens", "special", &tok.special) != 0)
            return -1;
        if (content->string_len == 0) continue; /* tokenizers ignores empty added tokens */
        /* The id AddedVocabulary::add_tokens gives it: an existing token keeps its id, a new one gets
         * the next id past the model vocabulary. The file's id must agree, or we could not know which
         * one the model was trained with. */
        int prev = strmap_get(&t->added_map, content->string, content->string_len);
        int expected = prev >= 0 ? t->added[prev].id : strmap_get(&t->vocab, content->string, content->string_len);
        if (expected < 0)
            expected = max_added < 0 ? (int)vocab_count
                                     : (max_added >= (int)vocab_count || vocab_count == 0 ? max_added + 1 : (int)vocab_count);
        if (id != expected)
            return ssm_error("%s: added token '%s' has id %d, but tokenizers would give it id %d (duplicate or "
                             "out-of-order id)", t->name, content->string, id, expected);
        /* a new token given an id the vocabulary holds for another string (the vocabulary's ids leave a gap below
         * it): one id, two strings, and no way to decode it as both */
        if (id < t->n_ids && t->vocab_str[id] &&
            (t->vocab_len[id] != content->string_len || memcmp(t->vocab_str[id], content->string, t->vocab_len[id])))
            return ssm_error("%s: added token '%s' has id %d, which model.vocab gives to '%s': one id for two strings "
                             "(model.vocab's ids leave a gap below it)", t->name, content->string, id, t->vocab_str[id]);
        max_added = imax(max_added, id);
        tok.len = content->string_len;
        tok.content = xmalloc(tok.len + 1);
        memcpy(tok.content, content->string, tok.len + 1);
        if (prev >= 0) { /* the same content again: its latest options win */
            char *old = t->added[prev].content; /* (the map's key until the put below: freed after it) */
            t->added[prev] = tok;
            strmap_put(&t->added_map, tok.content, tok.len, prev);
            free(old);
        } else {
            t->added[t->n_added] = tok;
            strmap_put(&t->added_map, tok.content, tok.len, t->n_added);
            t->n_added++;
        }
    }
    return 0;
}

/* The id table (decoded bytes of every id) and the two added-token tries. */
static void build_tables(ssm_tokenizer *t) {
    int n = t->n_ids;
    for (int i = 0; i < t->n_added; i++) n = imax(n, t->added[i].id + 1);
    if (n > t->n_ids) {
        t->vocab_str = xrealloc_array(t->vocab_str, (size_t)n, sizeof *t->vocab_str);
        t->vocab_len = xrealloc_array(t->vocab_len, (size_t)n, sizeof *t->vocab_len);
        for (int i = t->n_ids; i < n; i++) t->vocab_str[i] = NULL, t->vocab_len[i] = 0;
        t->n_ids = n;
    }
    t->piece = xcalloc((size_t)n, sizeof *t->piece);
    t->piece_len = xcalloc((size_t)n, sizeof *t->piece_len);
    for (int i = 0; i < n; i++)
        if (t->vocab_str[i]) t->piece[i] = byte_level_decode(t->vocab_str[i], t->vocab_len[i], &t->piece_len[i]);
    /* Added tokens decode from their content (the same string when they are also in the vocabulary). */
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        free(t->piece[a->id]);
        t->piece[a->id] = byte_level_decode(a->content, a->len, &t->piece_len[a->id]);
    }
    trie_init(&t->raw_trie);
    trie_init(&t->norm_trie);
    bytevec normalized = {0};
    cpvec work = {0};
    for (int i = 0; i < t->n_added; i++) {
        added_token *a = &t->added[i];
        if (!a->normalized) {
            trie_add(&t->raw_trie, (const unsigned char *)a->content, a->len, i);
        } else if (t->nfc) { /* matched against normalized text, so as its normalized form */
            nfc((const unsigned char *)a->content, a->len, &normalized, &work);
            if (normalized.len) trie_add(&t->norm_trie, normalized.data, normalized.len, i);
        } else {
            trie_add(&t->norm_trie, (const unsigned char *)a->content, a->len, i);
        }
    }
    free(normalized.data);
    free(work.cp);
}

ssm_tokenizer *ssm_tokenizer_load_buffer(const char *text, size_t len, const char *name) {
    json_value *root = json_parse_named(text, len, name);
    if (!root) return NULL;
    ssm_tokenizer *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->unk_id = -1;
    const json_value *decoder = json_get(root, "decoder");
    const char *dtype = type_of(decoder);
    int ok = 0;
    if (root->type != JSON_OBJECT) {
        ssm_error("%s: expected a JSON object at the top level", name);
    } else if (decoder && decoder->type != JSON_NULL && !(dtype && strcmp(dtype, "ByteLevel") == 0)) {
        ssm_error("%s: unsupported decoder '%s' (only ByteLevel is supported)", name, dtype ? dtype : "(no type)");
    } else if (load_model(t, json_get(root, "model")) == 0 && load_normalizer(t, json_get(root, "normalizer")) == 0 &&
               load_pre_tokenizer(t, json_get(root, "pre_tokenizer")) == 0 &&
               load_added_tokens(t, json_get(root, "added_tokens")) == 0) {
        ok = 1;
    }
    json_free(root);
    if (!ok) {
        ssm_tokenizer_free(t);
        return NULL;
    }
    build_tables(t);
    return t;
}

ssm_tokenizer *ssm_tokenizer_load(const char *path) {
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len) != 0) return NULL;
    ssm_tokenizer *t = ssm_tokenizer_load_buffer(text, len, path);
    free(text);
    return t;
}

int ssm_tokenizer_vocab_size(const ssm_tokenizer *t) { return t->n_ids; }

int ssm_tokenizer_is_lossless(const ssm_tokenizer *t) {
    if (t->nfc || t->add_prefix_space) return 0;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) return 0;
    for (int i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (a->lstrip || a->rstrip || t->piece_len[a->id] != a->len || memcmp(t->piece[a->id], a->content, a->len))
            return 0;
    }
    return 1;
}

const char *ssm_tokenizer_token_bytes(const ssm_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !t->piece[id]) return NULL;
    if (len) *len = t->piece_len[id];
    return (const char *)t->piece[id];
}

int ssm_tokenizer_token_id(const ssm_tokenizer *t, const char *content) {
    size_t n = strlen(content);
    int a = strmap_get(&t->added_map, content, n);
    if (a >= 0) return t->added[a].id;
    return strmap_get(&t->vocab, content, n);
}

int ssm_tokenizer_decode(const ssm_tokenizer *t, const int *ids, size_t n, char **out, size_t *len) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->piece[ids[i]])
            return ssm_error("%s: cannot decode id %d: not in the vocabulary (size %d)", t->name, ids[i], t->n_ids);
        total += t->piece_len[ids[i]];
    }
    char *buf = xmalloc(total + 1);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(buf + at, t->piece[ids[i]], t->piece_len[ids[i]]);
        at += t->piece_len[ids[i]];
    }
    buf[at] = 0;
    *out = buf;
    if (len) *len = at;
    return 0;
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    size_t start, end;
    int id; /* added-token id, or -1 for text */
} segment;

typedef struct {
    segment *seg;
    size_t n, cap;
} segvec;

typedef struct {
    int rank, pos, new_id;
} merge_entry;

typedef struct {
    int *ids;
    size_t n, cap;
    bytevec normalized, prefixed, mapped;
    cpvec work;
    segvec outer, inner;
    size_t *ranges; /* pre-token [start, end) pairs */
    size_t n_ranges, cap_ranges;
    size_t *ranges2;
    size_t cap_ranges2;
    int *sym_c, *sym_prev, *sym_next, *sym_len; /* BPE symbols of one word */
    size_t cap_sym;
    merge_entry *heap;
    size_t n_heap, cap_heap;
} encoder;

static void emit(encoder *e, int id) {
    if (e->n == e->cap) {
        e->cap = e->cap ? 2 * e->cap : 256;
        e->ids = xrealloc_array(e->ids, e->cap, sizeof *e->ids);
    }
    e->ids[e->n++] = id;
}

static void seg_push(segvec *v, size_t start, size_t end, int id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->seg = xrealloc_array(v->seg, v->cap, sizeof *v->seg);
    }
    v->seg[v->n++] = (segment){start, end, id};
}

static int merge_less(const merge_entry *a, const merge_entry *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(encoder *e, merge_entry m) {
    if (e->n_heap == e->cap_heap) {
        e->cap_heap = e->cap_heap ? 2 * e->cap_heap : 64;
        e->heap = xrealloc_array(e->heap, e->cap_heap, sizeof *e->heap);
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&m, &e->heap[parent])) break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = m;
}

static merge_entry heap_pop(encoder *e) {
    merge_entry top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && merge_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!merge_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void push_pair(encoder *e, const ssm_tokenizer *t, int pos, int left, int right) {
    const u64_slot *m = u64map_get(&t->merges, (uint64_t)left << 32 | (uint32_t)right);
    if (m) heap_push(e, (merge_entry){m->a, pos, m->b});
}

/* BPE on one pre-token of raw bytes (models/bpe/model.rs merge_word + word.rs merge_all). */
static void bpe_word(const ssm_tokenizer *t, encoder *e, const unsigned char *w, size_t n) {
    if (t->ignore_merges) {
        e->mapped.len = 0;
        bytes_reserve(&e->mapped, 2 * n);
        for (size_t i = 0; i < n; i++) e->mapped.len += utf8_put(byte_char(w[i]), e->mapped.data + e->mapped.len);
        int id = strmap_get(&t->vocab, (const char *)e->mapped.data, e->mapped.len);
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    if (n > e->cap_sym) {
        e->cap_sym = n + n / 2;
        e->sym_c = xrealloc_array(e->sym_c, e->cap_sym, sizeof(int));
        e->sym_prev = xrealloc_array(e->sym_prev, e->cap_sym, sizeof(int));
        e->sym_next = xrealloc_array(e->sym_next, e->cap_sym, sizeof(int));
        e->sym_len = xrealloc_array(e->sym_len, e->cap_sym, sizeof(int));
    }
    int *c = e->sym_c, *prev = e->sym_prev, *next = e->sym_next, *len = e->sym_len;
    int m = 0, unk_len = 0;
#define ADD_SYMBOL(id_, len_)                                                                                  \
    do {                                                                                                       \
        c[m] = (id_), len[m] = (len_), prev[m] = m - 1, next[m] = -1;                                          \
        if (m > 0) next[m - 1] = m;                                                                            \
        m++;                                                                                                   \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_id[w[i]];
        if (id >= 0) {
            if (unk_len) {
                ADD_SYMBOL(t->unk_id, unk_len);
                unk_len = 0;
            }
            ADD_SYMBOL(id, 1);
        } else if (t->unk_id >= 0) {
            if (unk_len && !t->fuse_unk) {
                ADD_SYMBOL(t->unk_id, unk_len);
                unk_len = 0;
            }
            unk_len++;
        } /* else: no unk token, the character is dropped, as tokenizers does */
    }
    if (unk_len) ADD_SYMBOL(t->unk_id, unk_len);
#undef ADD_SYMBOL

    e->n_heap = 0;
    for (int i = 0; i + 1 < m; i++) push_pair(e, t, i, c[i], c[i + 1]);
    while (e->n_heap) {
        merge_entry top = heap_pop(e);
        int pos = top.pos;
        if (len[pos] == 0 || next[pos] < 0) continue;
        int right = next[pos];
        /* An entry is stale unless the pair now at pos still merges into the same token. */
        const u64_slot *cur = u64map_get(&t->merges, (uint64_t)c[pos] << 32 | (uint32_t)c[right]);
        if (!cur || cur->b != top.new_id) continue;
        c[pos] = top.new_id;
        len[pos] += len[right];
        next[pos] = next[right];
        len[right] = 0;
        if (next[right] >= 0) prev[next[right]] = pos;
        if (prev[pos] >= 0) push_pair(e, t, prev[pos], c[prev[pos]], c[pos]);
        if (next[pos] >= 0) push_pair(e, t, pos, c[pos], c[next[pos]]);
    }
    for (int i = 0; i < m; i++)
        if (len[i]) emit(e, c[i]);
}

static void ranges_push(size_t **r, size_t *n, size_t *cap, size_t start, size_t end) {
    if (*n + 2 > *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *r = xrealloc_array(*r, *cap, sizeof **r);
    }
    (*r)[(*n)++] = start;
    (*r)[(*n)++] = end;
}

/* The pre-tokenizer and the model on one normalized piece s[0..n) (n > 0). */
static void encode_piece(const ssm_tokenizer *t, encoder *e, const unsigned char *s, size_t n) {
    e->n_ranges = 0;
    ranges_push(&e->ranges, &e->n_ranges, &e->cap_ranges, 0, n);
    for (int k = 0; k + 1 < t->n_steps; k++) { /* Split(GPT-2 regex, Isolated) steps */
        size_t n2 = 0;
        for (size_t r = 0; r < e->n_ranges; r += 2) {
            size_t lo = e->ranges[r], hi = e->ranges[r + 1];
            for (size_t p = lo; p < hi;) {
                size_t q = lo + gpt2_match(s + lo, hi - lo, p - lo);
                ranges_push(&e->ranges2, &n2, &e->cap_ranges2, p, q);
                p = q;
            }
        }
        size_t *tmp = e->ranges;
        e->ranges = e->ranges2, e->ranges2 = tmp;
        size_t tcap = e->cap_ranges;
        e->cap_ranges = e->cap_ranges2, e->cap_ranges2 = tcap;
        e->n_ranges = n2;
    }
    /* ByteLevel on every split: the prefix space, then the regex, then the model on each match. */
    for (size_t r = 0; r < e->n_ranges; r += 2) {
        const unsigned char *p = s + e->ranges[r];
        size_t m = e->ranges[r + 1] - e->ranges[r];
        if (t->add_prefix_space && p[0] != ' ') {
            e->prefixed.len = 0;
            bytes_append(&e->prefixed, " ", 1);
            bytes_append(&e->prefixed, p, m);
            p = e->prefixed.data, m = e->prefixed.len;
        }
        if (!t->use_regex) {
            bpe_word(t, e, p, m);
            continue;
        }
        for (size_t i = 0; i < m;) {
            size_t j = gpt2_match(p, m, i);
            bpe_word(t, e, p + i, j - i);
            i = j;
        }
    }
}

static int ends_with_word(const unsigned char *s, size_t end) {
    if (end == 0) return 0;
    size_t start = end - 1;
    while (start > 0 && end - start < 4 && (s[start] & 0xc0) == 0x80) start--;
    uint32_t cp;
    size_t l = utf8_next(s, end, start, &cp);
    if (start + l != end) utf8_next(s, end, end - 1, &cp); /* the last byte is not a whole character */
    return (uni_class(cp) & UNI_WORD) != 0;
}

static size_t space_run_back(const unsigned char *s, size_t end) {
    /* Start of the trailing run of white space of s[0..end) (regex \s*$). */
    size_t p = 0, run = 0;
    int in_run = 0;
    while (p < end) {
        uint32_t cp;
        size_t l = utf8_next(s, end, p, &cp);
        if (uni_class(cp) & UNI_SPACE) {
            if (!in_run) run = p, in_run = 1;
        } else {
            in_run = 0;
        }
        p += l;
    }
    return in_run ? run : end;
}

/* AddedVocabulary::find_matches: the added tokens of one trie in s[0..n) as segments, with text
 * segments between them. */
static void find_matches(const ssm_tokenizer *t, const trie *tr, const unsigned char *s, size_t n, segvec *out) {
    out->n = 0;
    size_t start_offset = 0, from = 0, ms, me;
    int index;
    while (trie_find(tr, s, n, from, &ms, &me, &index)) {
        from = me;
        const added_token *a = &t->added[index];
        size_t start = ms, stop = me;
        if (a->single_word) {
            uint32_t cp = 0;
            int start_space = ms == 0 || !ends_with_word(s, ms);
            int stop_space = me == n || (utf8_next(s, n, me, &cp), !(uni_class(cp) & UNI_WORD));
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t newstart = space_run_back(s, start);
            start = newstart > start_offset ? newstart : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                size_t l = utf8_next(s, n, stop, &cp);
                if (!(uni_class(cp) & UNI_SPACE)) break;
                stop += l;
            }
        }
        if (start_offset < start) seg_push(out, start_offset, start, -1);
        seg_push(out, start, stop, a->id);
        start_offset = stop;
    }
    if (start_offset != n) seg_push(out, start_offset, n, -1);
}

static void encoder_free(encoder *e) {
    free(e->normalized.data);
    free(e->prefixed.data);
    free(e->mapped.data);
    free(e->work.cp);
    free(e->outer.seg);
    free(e->inner.seg);
    free(e->ranges);
    free(e->ranges2);
    free(e->sym_c);
    free(e->sym_prev);
    free(e->sym_next);
    free(e->sym_len);
    free(e->heap);
}

int ssm_tokenizer_encode(const ssm_tokenizer *t, const char *text, size_t len, int **ids, size_t *n) {
    encoder e = {0};
    const unsigned char *s = (const unsigned char *)text;
    find_matches(t, &t->raw_trie, s, len, &e.outer);
    for (size_t i = 0; i < e.outer.n; i++) {
        segment so = e.outer.seg[i];
        if (so.id >= 0) {
            emit(&e, so.id);
            continue;
        }
        const unsigned char *piece = s + so.start;
        size_t plen = so.end - so.start;
        if (t->nfc) {
            nfc(piece, plen, &e.normalized, &e.work);
            piece = e.normalized.data, plen = e.normalized.len;
        }
        find_matches(t, &t->norm_trie, piece, plen, &e.inner);
        for (size_t k = 0; k < e.inner.n; k++) {
            segment si = e.inner.seg[k];
            if (si.id >= 0) emit(&e, si.id);
            else if (si.end > si.start) encode_piece(t, &e, piece + si.start, si.end - si.start);
        }
    }
    *ids = e.ids ? e.ids : xmalloc(sizeof(int));
    *n = e.n;
    e.ids = NULL;
    encoder_free(&e);
    return 0;
}
