/* gen_internal.h: what generate.c shares with beam.c (not installed API). */
#ifndef GPT_GEN_INTERNAL_H
#define GPT_GEN_INTERNAL_H

#include "generate.h"

/* A sequence's completion text: bytes so far and how many were streamed. */
typedef struct gpt_gen_text {
    unsigned char *buf;
    size_t len, cap, emitted;
} gpt_gen_text;

/* Checks a request's prompt against the model; returns the prompt to run (the <|endoftext|>
 * token for an empty one, in *eot_buf) or NULL after marking the request failed. */
const uint32_t *gpt_gen_check_prompt(const gpt_model_config *c, const gpt_tokenizer *tk, gpt_gen_req *r,
                                     size_t *n_prompt, uint32_t *eot_buf);
/* Adds token id's bytes (none for an EOS); returns 1 when a stop string completed (the text is
 * cut before it). *safe: how many bytes may be shown now (no stop string can take them back). */
int gpt_gen_text_step(const gpt_tokenizer *tk, const gpt_gen_opts *o, gpt_gen_text *t, uint32_t id, int is_eos,
                      size_t *safe);

#endif
