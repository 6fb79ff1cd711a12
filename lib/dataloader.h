/* dataloader.h: training windows from memory-mapped token streams (gpt-tokens(5)).
 *
 *   const char *files[] = {"train-*.tok"};                       // globs are expanded, sorted
 *   gpt_dataloader *d = gpt_data_open(files, 1, T, GPT_DATA_RANDOM, seed, &err);
 *   gpt_data_next(d, rank, dp, B, tokens, targets);              // this rank's B windows
 *   gpt_data_pos pos = gpt_data_tell(d);  ...  gpt_data_seek(d, &pos, &err);   // exact resume
 *
 * The files are one virtual stream (their concatenation; each file already ends its documents
 * with <|endoftext|>). A window is T + 1 consecutive tokens: tokens = the first T, targets = the
 * last T, so every position is scored. Windows are numbered by a global sample counter and the
 * window of sample k depends only on (files, T, mode, seed, k): no hidden state, so a position is
 * one integer and any rank can compute any sample.
 *   GPT_DATA_RANDOM      start = hash(seed, k) mod (n_tokens - T): windows anywhere, with repeats.
 *   GPT_DATA_SEQUENTIAL  the stream is cut into floor((n_tokens - 1) / T) windows; epoch e = k / W
 *                        visits all of them in an order permuted by (seed, e) (seed 0: in order).
 * Data parallelism: each call to gpt_data_next consumes dp * B samples; rank r takes samples
 * [r*B, (r+1)*B) of them, so the union over ranks is exactly what one process with dp * B would
 * read, in the same order. */
#ifndef GPT_DATALOADER_H
#define GPT_DATALOADER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum gpt_data_mode { GPT_DATA_RANDOM = 0, GPT_DATA_SEQUENTIAL = 1 } gpt_data_mode;

/* The exact reading position, for checkpoints. Plain data (little-endian u64 fields when stored);
 * seek checks that the data and settings match what wrote it. */
typedef struct gpt_data_pos {
    uint64_t samples;  /* global samples consumed */
    uint64_t seed;
    uint64_t n_tokens; /* of the whole stream: a different data set is refused */
    uint32_t mode;     /* gpt_data_mode */
    uint32_t seq_len;
} gpt_data_pos;

typedef struct gpt_dataloader gpt_dataloader;

/* paths: files or glob patterns (each pattern must match something). The stream must hold at
 * least T + 1 tokens. */
gpt_dataloader *gpt_data_open(const char *const *paths, size_t n_paths, int T, gpt_data_mode mode, uint64_t seed,
                              gpt_err *err);
void gpt_data_close(gpt_dataloader *d);

uint64_t gpt_data_tokens(const gpt_dataloader *d);
/* The largest vocabulary size any file declares. */
uint32_t gpt_data_vocab(const gpt_dataloader *d);
/* Windows per epoch in sequential mode (floor((n_tokens - 1) / T)). */
uint64_t gpt_data_windows_per_epoch(const gpt_dataloader *d);
/* The first token offset of sample k's window. */
uint64_t gpt_data_window_start(const gpt_dataloader *d, uint64_t k);

/* Fills B windows (tokens and targets, B x T each) for samples first .. first + B - 1. */
void gpt_data_fill(const gpt_dataloader *d, uint64_t first, int B, int *tokens, int *targets);
/* This rank's B windows of the next dp * B samples; advances the position by dp * B. */
void gpt_data_next(gpt_dataloader *d, int rank, int dp, int B, int *tokens, int *targets);

gpt_data_pos gpt_data_tell(const gpt_dataloader *d);
/* Restore a position; an error (naming what differs) when the data or settings changed. */
int gpt_data_seek(gpt_dataloader *d, const gpt_data_pos *pos, gpt_err *err);

#endif
