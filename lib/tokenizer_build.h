/* tokenizer_build.h: the constructor interface the vocabulary loaders use (lib/ only).
 *
 *   gpt_tokenizer *tk = gpt_tk_new("name");
 *   gpt_tk_add_token(tk, id, bytes, len);      // ordinary tokens, any order
 *   gpt_tk_add_merge(tk, left_id, right_id);   // optional: merge-list BPE (HF / vocab.bpe)
 *   gpt_tk_add_special(tk, "<|endoftext|>", id);
 *   gpt_tk_finish(tk, pattern, n_vocab, &err); // builds tables, checks, compiles the pattern
 *
 * Without merges the BPE is tiktoken's: repeatedly merge the adjacent pair whose concatenation
 * has the lowest rank (id). With merges it is Hugging Face's: the pair that comes first in the
 * merge list. Leftmost wins ties in both. */
#ifndef GPT_TOKENIZER_BUILD_H
#define GPT_TOKENIZER_BUILD_H

#include "tokenizer.h"

gpt_tokenizer *gpt_tk_new(const char *name);
/* Errors: duplicate id or bytes, empty token. */
int gpt_tk_add_token(gpt_tokenizer *tk, uint32_t id, const void *bytes, size_t len, gpt_err *err);
/* Merges are ranked in call order. Both ids must be ordinary tokens added before finish; their
 * concatenation must be a token too (checked in finish). */
int gpt_tk_add_merge(gpt_tokenizer *tk, uint32_t left, uint32_t right, gpt_err *err);
/* Largest id added so far (ordinary or special), 0 when none. */
uint32_t gpt_tk_max_id(const gpt_tokenizer *tk);
/* Whole-piece lookup before merging (HF "ignore_merges"; always on without merges). */
void gpt_tk_set_ignore_merges(gpt_tokenizer *tk, int on);
int gpt_tk_add_special(gpt_tokenizer *tk, const char *text, uint32_t id, gpt_err *err);
/* n_vocab 0 = one past the largest id. Requires all 256 single bytes to be tokens. Ids below
 * n_vocab that are neither ordinary nor special decode as "<|reserved_N|>" text. */
int gpt_tk_finish(gpt_tokenizer *tk, const char *pattern, uint32_t n_vocab, gpt_err *err);

/* The built-in patterns, in tiktoken's syntax. */
extern const char gpt_pat_r50k[], gpt_pat_cl100k[], gpt_pat_o200k[];

/* Loaders (one file each). */
gpt_tokenizer *gpt_load_tiktoken(const char *path, const char *name, const char *pattern, gpt_err *err);
gpt_tokenizer *gpt_load_gpt2_files(const char *vocab_bpe, const char *encoder_json, gpt_err *err);
gpt_tokenizer *gpt_load_hf_json(const char *path, gpt_err *err);
/* Parses a tiktoken rank file held in memory (for fuzzing): calls gpt_tk_add_token. */
int gpt_parse_tiktoken(gpt_tokenizer *tk, const unsigned char *data, size_t len, const char *where,
                       gpt_err *err);

/* GPT-2's byte <-> printable-unicode mapping used by vocab.bpe, encoder.json and tokenizer.json:
 * decodes a UTF-8 string of mapped characters into raw bytes. Returns the byte count or -1. */
long gpt_bytelevel_decode(const char *s, size_t len, unsigned char *out, size_t cap);

#endif
