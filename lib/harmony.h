/* harmony.h: OpenAI's harmony chat format for gpt-oss (prompt rendering and reply parsing).
 *
 * A prompt is rendered as
 *   <|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
 *   Knowledge cutoff: 2024-06
 *   Current date: YYYY-MM-DD
 *
 *   Reasoning: low|medium|high
 *
 *   # Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>
 *   [<|start|>developer<|message|># Instructions\n\nINSTRUCTIONS<|end|>]
 *   <|start|>user<|message|>PROMPT<|end|><|start|>assistant
 * and the model answers with messages like <|channel|>analysis<|message|>...<|end|>
 * <|start|>assistant<|channel|>final<|message|>...<|return|> (or <|call|> for a tool call).
 * Generation stops on <|return|> and <|call|>; the reply shown is the final channel's text. */
#ifndef GPT_HARMONY_H
#define GPT_HARMONY_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

typedef struct gpt_harmony_opts {
    const char *reasoning;    /* "low", "medium" (default), "high" */
    const char *instructions; /* developer instructions (--system), or NULL */
    const char *date;         /* "YYYY-MM-DD", or NULL: today (UTC) */
} gpt_harmony_opts;

/* The special token ids harmony needs. */
typedef struct gpt_harmony_ids {
    uint32_t start, message, channel, end, ret, call, constrain;
} gpt_harmony_ids;

/* Fails naming the missing token when tk has no harmony specials (not an o200k_harmony model). */
int gpt_harmony_lookup(const gpt_tokenizer *tk, gpt_harmony_ids *ids, gpt_err *err);

/* Renders the prompt text (malloc'd); unknown reasoning levels are an error. */
char *gpt_harmony_render(const gpt_harmony_opts *o, const char *user, size_t user_len, gpt_err *err);
/* Renders and encodes (special tokens of the template as themselves; the user's text as plain
 * text, so a "<|end|>" typed by the user cannot break out of the message). */
int gpt_harmony_encode(const gpt_tokenizer *tk, const gpt_harmony_opts *o, const char *user, size_t user_len,
                       gpt_ids *out, gpt_err *err);

/* Incremental reply parser: feed tokens as they come; it says which bytes belong to the final
 * channel. */
typedef struct gpt_harmony_parser {
    gpt_harmony_ids ids;
    int state;          /* 0: header (after <|start|> or at the start), 1: channel name, 2: content */
    char channel[32];
    size_t channel_len;
    int final;          /* the current message's channel is "final" */
} gpt_harmony_parser;

void gpt_harmony_parser_init(gpt_harmony_parser *p, const gpt_harmony_ids *ids);
/* Returns the number of bytes of token id that are final-channel content (*bytes points to
 * them), 0 for anything else. */
size_t gpt_harmony_feed(gpt_harmony_parser *p, const gpt_tokenizer *tk, uint32_t id, const unsigned char **bytes);

#endif
