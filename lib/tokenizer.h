/* tokenizer.h: byte-level BPE tokenizers (tiktoken, GPT-2 and Hugging Face vocabularies).
 *
 *   gpt_tokenizer *tk = gpt_tokenizer_open("o200k_harmony", NULL, &err);
 *   gpt_ids ids = {0};
 *   gpt_encode(tk, text, len, NULL, &ids, &err);     // NULL: special tokens are plain text
 *   gpt_decode(tk, ids.v, ids.n, &bytes, &nbytes, &err);
 *
 * A tokenizer is immutable once opened and safe to share between threads. */
#ifndef GPT_TOKENIZER_H
#define GPT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct gpt_tokenizer gpt_tokenizer;

/* A growable array of token ids. */
typedef struct gpt_ids {
    uint32_t *v;
    size_t n, cap;
} gpt_ids;

void gpt_ids_push(gpt_ids *a, uint32_t id);
void gpt_ids_append(gpt_ids *a, const uint32_t *v, size_t n);
void gpt_ids_free(gpt_ids *a);

/* `spec` is a built-in encoding name (o200k_harmony, o200k_base, cl100k_base, r50k_base, gpt2)
 * or a file: *.tiktoken (pattern: o200k's unless `pattern` says otherwise), a Hugging Face
 * tokenizer.json, or a GPT-2 vocab.bpe / encoder.json (the other one is looked for beside it).
 * For built-ins the rank file comes from `vocab_file` if non-NULL, else $GPT_TOKENIZER_PATH
 * (colon-separated directories), else the installed share/gpt/tokenizers. */
gpt_tokenizer *gpt_tokenizer_open(const char *spec, const char *vocab_file, gpt_err *err);
/* Like gpt_tokenizer_open for a .tiktoken file, with an explicit pattern (NULL = o200k's). */
gpt_tokenizer *gpt_tokenizer_open_tiktoken(const char *path, const char *pattern, gpt_err *err);
void gpt_tokenizer_free(gpt_tokenizer *tk);

const char *gpt_tokenizer_name(const gpt_tokenizer *tk);
const char *gpt_tokenizer_pattern(const gpt_tokenizer *tk);
/* Number of ids: every id < n_vocab decodes (ordinary, special or reserved). */
uint32_t gpt_tokenizer_n_vocab(const gpt_tokenizer *tk);
/* Number of ordinary (mergeable) tokens. */
uint32_t gpt_tokenizer_n_ordinary(const gpt_tokenizer *tk);
size_t gpt_tokenizer_n_special(const gpt_tokenizer *tk);
/* i-th special token (0 <= i < n_special): its text and id. */
const char *gpt_tokenizer_special(const gpt_tokenizer *tk, size_t i, uint32_t *id);
/* Id of a special token by text, or -1. */
int64_t gpt_tokenizer_special_id(const gpt_tokenizer *tk, const char *text);
/* The end-of-text id (<|endoftext|>), or -1 when the vocabulary has none. */
int64_t gpt_tokenizer_eot(const gpt_tokenizer *tk);
/* Bytes of token `id` (pointer into the tokenizer), or NULL when id is out of range. */
const unsigned char *gpt_tokenizer_token(const gpt_tokenizer *tk, uint32_t id, size_t *len);
/* Id of an ordinary token given its bytes, or -1. */
int64_t gpt_tokenizer_lookup(const gpt_tokenizer *tk, const void *bytes, size_t len);

/* Which special tokens encode as themselves: a mask over special indices. "none" (or NULL
 * spec) gives NULL, "all", or a comma-separated list of texts or names ("endoftext" and
 * "<|endoftext|>" both work). Free with free(). */
int gpt_special_mask(const gpt_tokenizer *tk, const char *spec, unsigned char **mask, gpt_err *err);

/* Appends the ids of text[0..len) to out. `allowed` is NULL or a mask from gpt_special_mask. */
int gpt_encode(const gpt_tokenizer *tk, const void *text, size_t len, const unsigned char *allowed,
               gpt_ids *out, gpt_err *err);
/* Same result as gpt_encode, computed with up to `threads` threads (0 = OpenMP's default) by
 * cutting the text only where a piece boundary is certain. */
int gpt_encode_parallel(const gpt_tokenizer *tk, const void *text, size_t len,
                        const unsigned char *allowed, int threads, gpt_ids *out, gpt_err *err);
/* BPE of one piece (no pre-tokenization): appends its ids. */
void gpt_encode_piece(const gpt_tokenizer *tk, const unsigned char *piece, size_t len, gpt_ids *out);

/* Decodes to exact bytes (malloc'd, *n bytes; also NUL-terminated). An id >= n_vocab is an
 * error naming the id and its position. */
int gpt_decode(const gpt_tokenizer *tk, const uint32_t *ids, size_t n, unsigned char **out,
               size_t *outlen, gpt_err *err);

#endif
