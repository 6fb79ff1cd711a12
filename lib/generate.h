/* generate.h: the generation engine: a batch of prompts decoded together through one KV cache.
 *
 *   gpt_gen_opts o = gpt_gen_defaults();   o.max_new_tokens = 64;  o.eos = ids; o.n_eos = 1;
 *   gpt_gen_req reqs[2] = {{.prompt = ids0, .n_prompt = n0}, {.prompt = ids1, .n_prompt = n1}};
 *   gpt_generate(model, tokenizer, &o, reqs, 2, &stats, &err);
 *   reqs[i].out (generated ids), reqs[i].text (completion bytes), reqs[i].finish
 *
 * Each sequence has its own length and stops on its own: on an EOS id (GPT_FINISH_STOP; the id
 * is kept in out but not in text), on a stop string (GPT_FINISH_STOP; text ends before it, out
 * keeps every token generated up to the one that completed it), after max_new_tokens or when
 * the context (max_seq_len) is full (GPT_FINISH_LENGTH). Prompts are prefilled in chunks of at
 * most GPT_KV_CHUNK tokens; then every step runs one token of each unfinished sequence in one
 * call. A prompt that leaves no room for one new token is an error (GPT_FINISH_ERROR, message
 * in reqs[i].error); the others still run. num_beams > 1 runs beam search (beam.h) instead. */
#ifndef GPT_GENERATE_H
#define GPT_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "sampling.h"
#include "tokenizer.h"

typedef enum gpt_finish { GPT_FINISH_NONE, GPT_FINISH_STOP, GPT_FINISH_LENGTH, GPT_FINISH_ERROR } gpt_finish;
const char *gpt_finish_name(gpt_finish f); /* "stop", "length", "error" */

/* Streaming: called as soon as a sequence's text has new bytes that no stop string can still
 * take back (len may be 0 when only tokens are wanted: id is the new token). */
typedef void (*gpt_gen_stream_fn)(void *user, int req, uint32_t id, const unsigned char *bytes, size_t len);

typedef struct gpt_gen_opts {
    int max_new_tokens;
    gpt_sampling sampling;
    const uint32_t *eos;      /* stop ids */
    int n_eos;
    const char *const *stop;  /* stop strings */
    int n_stop;
    int num_beams;            /* 1: sample/greedy; > 1: beam search */
    double length_penalty;    /* beam: score = sum logp / (generated length ^ length_penalty) */
    int early_stopping;       /* beam: 1 true, 0 false (HF's heuristic), -1 "never" */
    gpt_gen_stream_fn stream;
    void *stream_user;
    int kv_dtype;             /* GPT_KV_F32 (default), GPT_KV_BF16 or GPT_KV_INT8 (backend.h) */
    /* 1 (the default): without penalties (and without TP), a backend with the sample op (CUDA)
     * picks the tokens where the logits are: the host's tokens for the same seed and logits
     * (t/test_cuda_sample.c, on an H100). 0: the logits come to the host and lib/sampling.c draws. */
    int device_sampling;
} gpt_gen_opts;

gpt_gen_opts gpt_gen_defaults(void);

typedef struct gpt_gen_req {
    const uint32_t *prompt;  /* in */
    size_t n_prompt;
    gpt_ids out;             /* out: generated ids */
    unsigned char *text;     /* out: completion bytes (NUL-terminated), malloc'd */
    size_t text_len;
    gpt_finish finish;
    char *error;             /* out: why, when finish == GPT_FINISH_ERROR */
} gpt_gen_req;

int gpt_gen_is_eos(const gpt_gen_opts *o, uint32_t id); /* id is one of o->eos */
void gpt_gen_req_free(gpt_gen_req *r); /* frees the outputs, not the prompt */

typedef struct gpt_gen_stats {
    long long prefill_tokens, decode_tokens;
    double prefill_s, decode_s;
} gpt_gen_stats;

/* Runs all n requests (batched together). tk may be NULL: then no text and no stop strings.
 * rng is shared by the batch in a fixed order, so a seed gives the same output for the same
 * batch. Returns -1 only when the whole batch failed (model error); per-request problems are
 * reported in the request. */
int gpt_generate(gpt_model *m, const gpt_tokenizer *tk, const gpt_gen_opts *o, gpt_gen_req *reqs, int n,
                 gpt_rng *rng, gpt_gen_stats *st, gpt_err *err);

#endif
