/* Byte-level BPE tokenizers read from Hugging Face tokenizer.json files (the GPT-2 / GPT-NeoX family):
 * added and special tokens split out first, optional NFC normalizer, the ByteLevel pre-tokenizer with
 * its regex, BPE merges by rank, and the ByteLevel decoder back to bytes. Without a tokenizer, models
 * read raw bytes (ids 0..255) and none of this is used. */
#ifndef SSM_TOKENIZER_H
#define SSM_TOKENIZER_H

#include <stddef.h>

typedef struct tokenizer tokenizer;

/* Loads and validates a tokenizer.json. NULL with a one-line ssm_error() naming the file and what is
 * wrong (invalid JSON, not a BPE model, a merge naming an unknown token, an unsupported normalizer,
 * pre-tokenizer or decoder, duplicate ids, ...). Supported: model BPE (no dropout, byte_fallback,
 * subword prefix or suffix; unk_token, fuse_unk and ignore_merges honoured), normalizer null / NFC /
 * Sequence of NFC, pre_tokenizer ByteLevel or a Sequence of Split(GPT-2 regex, Isolated) steps ending
 * in ByteLevel, decoder ByteLevel or null; post_processor, truncation and padding are ignored. */
tokenizer *tokenizer_load(const char *path);
/* The same from json[0..len) in memory; `name` stands for the file in messages. */
tokenizer *tokenizer_load_buffer(const char *json, size_t len, const char *name);
void tokenizer_free(tokenizer *t);

/* One more than the largest id of the vocabulary and the added tokens. */
int tokenizer_vocab_size(const tokenizer *t);

/* Encodes text[0..len) exactly as tokenizers' Tokenizer.encode(text, add_special_tokens=False) does
 * for valid UTF-8. Bytes that are not part of well-formed UTF-8 are kept, each as a one-byte character
 * of no Unicode class (not a letter, number or space), so they still reach the model as their raw
 * bytes and round-trip. *ids is malloc'd ([*n]). Returns 0 (allocation failure exits). */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int **ids, size_t *n);

/* The bytes a token stands for after the ByteLevel decoder (may be part of a UTF-8 sequence). Added
 * tokens decode from their content through the same decoder, as tokenizers does: ASCII contents
 * without spaces give themselves. NULL for an id outside the vocabulary. */
const char *tokenizer_token_bytes(const tokenizer *t, int id, size_t *len);

/* Decodes ids to bytes (the concatenation of tokenizer_token_bytes; special tokens included), malloc'd,
 * NUL-terminated. Returns 0, or -1 with ssm_error() for an id outside the vocabulary. */
int tokenizer_decode(const tokenizer *t, const int *ids, size_t n, char **out, size_t *len);

/* The id of a token given by its content (vocabulary or added token), or -1. */
int tokenizer_token_id(const tokenizer *t, const char *content);

/* 1 when decode(encode(text)) == text for every byte string: no normalizer, no prefix space, every
 * byte in the vocabulary, and no added token that strips white space or decodes to other bytes. */
int tokenizer_is_lossless(const tokenizer *t);

#endif
