/* libFuzzer harness for the tokenizer: the input is a tokenizer.json, a NUL byte, and a text. It loads
 * the JSON from memory (most inputs fail to load, which must not leak or crash), encodes the text,
 * checks every id decodes, and, when the tokenizer is lossless, that decode(encode(text)) == text.
 * Built by `make fuzz`; run by tests/fuzz/run.sh with tests/fuzz/corpus_tokenizer/ and tokenizer.dict. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t text_len = nul ? size - json_len - 1 : 0;
    ssm_tokenizer *t = ssm_tokenizer_load_buffer((const char *)data, json_len, "fuzz.json");
    if (!t) return 0;
    int *ids;
    size_t n;
    if (ssm_tokenizer_encode(t, text, text_len, &ids, &n) != 0) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= ssm_tokenizer_vocab_size(t) || !ssm_tokenizer_token_bytes(t, ids[i], NULL)) abort();
    char *out;
    size_t out_len;
    if (ssm_tokenizer_decode(t, ids, n, &out, &out_len) != 0) abort();
    if (ssm_tokenizer_is_lossless(t) && (out_len != text_len || memcmp(out, text, text_len) != 0)) abort();
    free(out);
    free(ids);
    ssm_tokenizer_free(t);
    return 0;
}
