/* eval.h: scoring a model on text: loss, perplexity, token accuracy, bits per byte, and
 * multiple choice.
 *
 * A long token sequence is scored in windows of seq_len tokens that start every stride tokens
 * (Hugging Face's perplexity recipe): each window scores only the targets no earlier window
 * scored, so every token but the first is scored exactly once, with up to seq_len - stride
 * tokens of extra context. stride == seq_len: disjoint windows; stride 1: every token sees a
 * full window (slow). */
#ifndef GPT_EVAL_H
#define GPT_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"

typedef struct gpt_eval_opts {
    int seq_len; /* 0: the model's max_seq_len */
    int stride;  /* 0: seq_len */
    int batch;   /* windows per forward (0: 1) */
} gpt_eval_opts;

typedef struct gpt_eval_result {
    double sum_nll;       /* nats */
    long long n_scored, n_correct;
} gpt_eval_result;

/* Models across ranks: a tensor-parallel model (model_tp.h) scores with the vocabulary-parallel
 * cross-entropy, every tp rank getting every result; a pipeline stage (model_pp.h) needs its pp
 * communicator (gpt_model_pp_set_comm): every stage makes the same calls and only the last one
 * scores (callbacks, *res, *sum_nll); the others add nothing. */

/* Called for each scored token in order: its position in ids, the target id, -log p (nats),
 * whether it was the argmax (lowest id on a tie). */
typedef void (*gpt_eval_token_fn)(void *user, size_t pos, uint32_t target, double nll, int correct);

/* Adds to *res (zero it first). Ids must be < the model's vocab_size. */
int gpt_eval_tokens(gpt_model *m, const uint32_t *ids, size_t n, const gpt_eval_opts *o, gpt_eval_token_fn cb,
                    void *user, gpt_eval_result *res, gpt_err *err);

/* Data parallel: of the W windows gpt_eval_tokens would run, scores only [shard * W / n_shards,
 * (shard + 1) * W / n_shards): a contiguous range, so the shards' tokens in shard order are one
 * rank's. The caller sums the results over the shards. */
int gpt_eval_tokens_shard(gpt_model *m, const uint32_t *ids, size_t n, const gpt_eval_opts *o, int shard,
                          int n_shards, gpt_eval_token_fn cb, void *user, gpt_eval_result *res, gpt_err *err);

/* -log p(ending | context) summed over the ending's tokens (*n_tokens of them). When context +
 * ending exceed max_seq_len, the oldest context tokens are dropped. */
int gpt_eval_continuation(gpt_model *m, const uint32_t *ctx, size_t n_ctx, const uint32_t *end, size_t n_end,
                          double *sum_nll, gpt_err *err);

#endif
