/* Unicode data for the tokenizer, generated into unicode_tables.c by scripts/gen_unicode_tables.py:
 * the classes the GPT-2 pre-tokenizer regex needs (\p{L}, \p{N}, \s) and \w, and NFC's canonical
 * combining classes, decompositions and compositions (Hangul syllables are computed, not listed). */
#ifndef SSM_UNICODE_TABLES_H
#define SSM_UNICODE_TABLES_H

#include <stdint.h>

enum { UNI_LETTER = 1, UNI_NUMBER = 2, UNI_SPACE = 4, UNI_WORD = 8 };

typedef struct {
    uint32_t lo, hi, value;
} uni_range;
typedef struct {
    uint32_t a, b, c;
} uni_triple;

extern const char unicode_tables_version[];
extern const unsigned char uni_ascii_class[128]; /* UNI_* flags of U+0000..U+007F */
extern const uni_range uni_class_ranges[]; /* value: UNI_* flags; white space is Unicode White_Space */
extern const int uni_class_count;
extern const uni_range uni_ccc_ranges[];   /* value: canonical combining class (nonzero only) */
extern const int uni_ccc_count;
extern const uni_triple uni_decomp[];      /* a: code point, b: first, c: second or 0 */
extern const int uni_decomp_count;
extern const uni_triple uni_comp[];        /* a: first, b: second, c: primary composite */
extern const int uni_comp_count;

#endif
