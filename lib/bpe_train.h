/* bpe_train.h: training a byte-level BPE vocabulary (a tiktoken rank file) from text.
 *
 *   gpt_bpe_train_opts o = {.vocab_size = 4096, .pattern = "o200k"};
 *   gpt_bpe_vocab v;
 *   gpt_bpe_train(&o, texts, lens, n_texts, &v, &err);
 *   gpt_bpe_write_tiktoken("out.tiktoken", &v, &err);
 *   gpt_bpe_vocab_free(&v);
 *
 * Algorithm (documented in gpt-tokenize(1)): each text is pre-tokenized on its own (no piece spans
 * two texts) with the pattern (lib/pretok.h) and the distinct pieces are counted. Ranks 0..255 are
 * the single bytes (rank = byte value). Then, repeatedly, the adjacent token pair that occurs most
 * often over all pieces (every adjacent position counts, weighted by the piece's frequency) is
 * merged everywhere, left to right without overlap, and its concatenation gets the next rank. (A
 * merge cannot rebuild an existing token: wherever a token's bytes lie on token boundaries they
 * were segmented exactly as the token alone was; the trainer still checks and would reuse the id,
 * not duplicate it.) Ties go to the pair whose (left bytes, right bytes) is smallest (bytewise, a
 * prefix before a longer string). Training stops at vocab_size tokens or when no pair occurs at
 * least twice; the latter is not an error (n < vocab_size tells the caller).
 *
 * The result depends only on the inputs, the pattern and vocab_size: never on the thread count.
 * Texts are pre-tokenized in chunks cut at fixed places (a '\n' between a printable non-space
 * ASCII byte and an ASCII letter, at least chunk_bytes apart); no match of the built-in
 * patterns can span such a place, so chunking does not change their pieces. */
#ifndef GPT_BPE_TRAIN_H
#define GPT_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* vocab_size above this is rejected as a likely mistake (ids stay well inside uint32). */
#define GPT_BPE_MAX_VOCAB (1u << 24)

typedef struct gpt_bpe_train_opts {
    uint32_t vocab_size; /* 256 .. GPT_BPE_MAX_VOCAB, counting the 256 byte tokens */
    const char *pattern; /* NULL or "o200k" (default), "cl100k", "r50k"/"gpt2", or a regex */
    int threads;         /* pre-tokenization threads; 0 = OpenMP's default */
    int verbose;         /* progress on stderr */
    size_t chunk_bytes;  /* 0 = default (256 KiB); SIZE_MAX = never cut a text */
} gpt_bpe_train_opts;

/* Tokens in rank order: token i has bytes tok[i][0..len[i]). */
typedef struct gpt_bpe_vocab {
    unsigned char **tok;
    size_t *len;
    uint32_t n;
} gpt_bpe_vocab;

/* Trains; *out is filled (free with gpt_bpe_vocab_free) or, on error, left empty. Errors:
 * vocab_size out of range, no input bytes at all, a pattern that does not compile. */
int gpt_bpe_train(const gpt_bpe_train_opts *o, const unsigned char *const *texts,
                  const size_t *lens, size_t n_texts, gpt_bpe_vocab *out, gpt_err *err);
void gpt_bpe_vocab_free(gpt_bpe_vocab *v);

/* The regex a pattern option stands for: a built-in name maps to its regex, NULL to o200k's,
 * anything else is returned as is. */
const char *gpt_bpe_pattern_regex(const char *pattern);

/* Writes a tiktoken rank file ("BASE64 RANK\n" per token, ranks 0..n-1) atomically; "-" is
 * stdout. */
int gpt_bpe_write_tiktoken(const char *path, const gpt_bpe_vocab *v, gpt_err *err);

/* Standard base64 with padding (tiktoken's encoding): writes 4*ceil(n/3) chars and a NUL to
 * out, which must hold that many + 1. Returns the number of chars. */
size_t gpt_base64_encode(const unsigned char *in, size_t n, char *out);

#endif
