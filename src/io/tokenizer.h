/* Byte-level BPE tokenizers read from Hugging Face tokenizer.json files (the GPT-2 / GPT-NeoX family):
 * added and special tokens split out first, optional NFC normalizer, the ByteLevel pre-tokenizer with
 * its regex, BPE merges by rank, and the ByteLevel decoder back to bytes. Without a tokenizer, models
 * read raw bytes (ids 0..255) and none of this is used. */
#ifndef SSM_TOKENIZER_H
#define SSM_TOKENIZER_H

#include <stddef.h>

typedef struct tokenizer tokenizer;

/* Loads and validates a tokenizer.json. NULL with a one-line ssm_error() naming the file and what is
 * wrong (invalid JSON, not a BPE model, a merge naming an unknown token, an unsupported normalizer or
 * pre-tokenizer, duplicate ids, ...). */
tokenizer *tokenizer_load(const char *path);
void tokenizer_free(tokenizer *t);

/* One more than the largest id of the vocabulary and the added tokens. */
int tokenizer_vocab_size(const tokenizer *t);

/* Encodes UTF-8 text (len bytes; invalid UTF-8 is encoded byte by byte as U+FFFD would not round-trip,
 * so it is passed through as its raw bytes) exactly as tokenizers' Tokenizer.encode(text,
 * add_special_tokens=False) does. *ids is malloc'd ([*n]). Returns 0, or -1 on allocation failure. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int **ids, size_t *n);

/* The bytes a token stands for after the ByteLevel decoder (may be part of a UTF-8 sequence; added
 * tokens give their content). NULL for an id outside the vocabulary. */
const char *tokenizer_token_bytes(const tokenizer *t, int id, size_t *len);

/* Decodes ids to bytes (the concatenation of tokenizer_token_bytes; special tokens included), malloc'd,
 * NUL-terminated. Returns 0, or -1 with ssm_error() for an id outside the vocabulary. */
int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, char **out, size_t *len);

/* The id of a token given by its content (vocabulary or added token), or -1. */
int tokenizer_token_id(const tokenizer *t, const char *content);

#endif
