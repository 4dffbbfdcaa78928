/* Byte-level BPE tokenizers (the public API is in include/ssm.h): added and special tokens split out
 * first, optional NFC normalizer, the ByteLevel pre-tokenizer with its regex, BPE merges by rank, and
 * the ByteLevel decoder back to bytes. What only the library and its tests use is declared here. */
#ifndef SSM_TOKENIZER_H
#define SSM_TOKENIZER_H

#include "ssm.h"

/* The same as ssm_tokenizer_load from json[0..len) in memory; `name` stands for the file in messages. */
ssm_tokenizer *ssm_tokenizer_load_buffer(const char *json, size_t len, const char *name);

/* 1 when decode(encode(text)) == text for every byte string: no normalizer, no prefix space, every
 * byte in the vocabulary, and no added token that strips white space or decodes to other bytes. */
int ssm_tokenizer_is_lossless(const ssm_tokenizer *t);

#endif
