/* pretok.h: pre-tokenization, i.e. splitting text into pieces with a PCRE2 pattern before BPE.
 *
 * Semantics (documented in gpt-tokenize(1)):
 *  - the input is cut into maximal runs of valid UTF-8 and maximal runs of invalid bytes;
 *  - each valid run is matched on its own (it is the whole subject, so `$` and lookaheads see its
 *    end), with PCRE2_UTF | PCRE2_UCP and `$` meaning end of subject only, as in Rust's regex;
 *  - every match is a piece; text between matches (none for the built-in patterns) is a piece too;
 *  - each invalid run is one piece. Nothing is ever dropped, so decode(encode(x)) == x. */
#ifndef GPT_PRETOK_H
#define GPT_PRETOK_H

#include <stddef.h>

#include "error.h"

typedef struct gpt_regex gpt_regex;

/* Compiles with JIT. `pattern` is in tiktoken / Rust-regex syntax; \s is widened to Rust's
 * White_Space set (PCRE2's \s lacks U+0085). */
gpt_regex *gpt_regex_compile(const char *pattern, gpt_err *err);
void gpt_regex_free(gpt_regex *re);
const char *gpt_regex_pattern(const gpt_regex *re);

/* Calls fn(piece, len, ctx) for each piece in order; a non-zero return from fn stops the split
 * and is returned. Returns -1 with err set on a matcher failure. Thread-safe for one `re`. */
typedef int (*gpt_piece_fn)(const unsigned char *piece, size_t len, void *ctx);
int gpt_regex_split(const gpt_regex *re, const unsigned char *text, size_t len, gpt_piece_fn fn,
                    void *ctx, gpt_err *err);

/* Length of the valid UTF-8 prefix of s (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
size_t gpt_utf8_valid_prefix(const unsigned char *s, size_t len);

#endif
