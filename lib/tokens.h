/* tokens.h: token stream files, gpt-tokens(5) (written by `gpt-tokenize encode`, read by gpt-train).
 *
 *   24-byte header "GPTTOKNS" | ids, `width` bytes each, little-endian | 24-byte trailer "GPTTKEND"
 *   the whole file optionally one zstd frame.
 *
 *   gpt_tokw *w = gpt_tokw_open("train.tok", 200019, 0, &err);
 *   gpt_tokw_write(w, ids, n, &err) ...;  gpt_tokw_close(w, &err);
 *
 *   gpt_tokr *r = gpt_tokr_open("train.tok", &err);
 *   const void *body = gpt_tokr_map(r, &n);          // random access (plain regular files)
 *   while ((got = gpt_tokr_read(r, buf, cap, &err)) > 0) ...   // any input; 0 = end, verified
 *
 * Readers treat the input as hostile: every failure is an error naming the input and the byte
 * offset or token index, never a crash. */
#ifndef GPT_TOKENS_H
#define GPT_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

#define GPT_TOKENS_MAGIC "GPTTOKNS"
#define GPT_TOKENS_END_MAGIC "GPTTKEND"
#define GPT_TOKENS_VERSION 1u
#define GPT_TOKENS_HEADER_SIZE 24
#define GPT_TOKENS_TRAILER_SIZE 24

/* Bytes per id for a vocabulary: 2 when every id fits in 16 bits (vocab_size <= 65536), else 4. */
int gpt_tokens_width_for(uint32_t vocab_size);

/* ---- writing ---- */
typedef struct gpt_tokw gpt_tokw;

/* path "-" writes stdout; anything else is written atomically (temp file, fsync, rename on
 * close). zstd_level 0 writes the plain format, any other level a single zstd frame (levels as
 * zstd(1), negative ones included). The header is written here, so a pipe reader starts at once. */
gpt_tokw *gpt_tokw_open(const char *path, uint32_t vocab_size, int zstd_level, gpt_err *err);
/* Appends n ids. An id >= vocab_size is an error naming it and its index; nothing of that call
 * is written then and the writer stays usable. A write error makes every later call fail. */
int gpt_tokw_write(gpt_tokw *w, const uint32_t *ids, size_t n, gpt_err *err);
/* Tokens written so far. */
uint64_t gpt_tokw_count(const gpt_tokw *w);
/* Writes the trailer, flushes, fsyncs and renames into place. Frees w, even on error (the
 * temp file is then removed). */
int gpt_tokw_close(gpt_tokw *w, gpt_err *err);
/* Discards the output: removes the temp file (stdout output is left truncated, without a
 * trailer, which every reader rejects). Frees w. NULL is a no-op. */
void gpt_tokw_abort(gpt_tokw *w);

/* ---- reading ---- */
typedef struct gpt_tokr gpt_tokr;

/* path "-" reads stdin. A plain regular file (stdin included when it is one, at offset 0) is
 * mmapped and fully validated here, in one pass: header, trailer, size, body checksum, every
 * id < vocab_size. Other inputs (pipes, zstd) are read sequentially with bounded memory;
 * the header is checked here, the ids as they are read, the trailer at the end. */
gpt_tokr *gpt_tokr_open(const char *path, gpt_err *err);
/* Reads a token stream held in memory (not copied: keep it alive until gpt_tokr_close).
 * `name` is used in messages. Plain data is validated here as for a mapped file. */
gpt_tokr *gpt_tokr_open_mem(const void *data, size_t size, const char *name, gpt_err *err);
/* Reads sequentially from an open descriptor (never mmapped, not closed by gpt_tokr_close). */
gpt_tokr *gpt_tokr_open_fd(int fd, const char *name, gpt_err *err);

const char *gpt_tokr_name(const gpt_tokr *r);
uint32_t gpt_tokr_version(const gpt_tokr *r);
uint32_t gpt_tokr_vocab(const gpt_tokr *r);
int gpt_tokr_width(const gpt_tokr *r);
int gpt_tokr_compressed(const gpt_tokr *r);

/* The validated body (n_tokens ids, gpt_tokr_width bytes each, little-endian, 8-byte aligned
 * for mapped files) when the input was mmapped or opened in memory uncompressed; else NULL.
 * Note: another process truncating a mapped file makes later access fault (SIGBUS). */
const void *gpt_tokr_map(const gpt_tokr *r, uint64_t *n_tokens);
/* Id i of a mapped body. The index is not checked: the caller keeps i < n_tokens. */
uint32_t gpt_tokr_get(const gpt_tokr *r, uint64_t i);
/* Copies body[start, start + n) to ids (u32) from a mapped body; same bounds rule. */
void gpt_tokr_get_range(const gpt_tokr *r, uint64_t start, size_t n, uint32_t *ids);

/* Sequential reading for every kind of input: up to max (> 0) ids into `ids`. Returns the
 * number read, 0 at the end once the trailer (count and checksum) is verified, -1 on error
 * (and on every call after one). Ids of a streamed input are returned before the checksum at
 * its end is known: only a 0 return certifies them. */
long gpt_tokr_read(gpt_tokr *r, uint32_t *ids, size_t max, gpt_err *err);
/* Ids returned by gpt_tokr_read so far. */
uint64_t gpt_tokr_tell(const gpt_tokr *r);
void gpt_tokr_close(gpt_tokr *r);

/* Reads a whole token stream, appending its ids to *out (vocab_size may be NULL). */
int gpt_tokens_read_all(const char *path, gpt_ids *out, uint32_t *vocab_size, gpt_err *err);

#endif
