/* beam.h: beam search, with Hugging Face generate's semantics (transformers 5.x _beam_search).
 *
 * Every step takes the top K = max(2, 1 + n_eos) * num_beams continuations of all running
 * beams by accumulated log-probability (log_softmax of each step's logits, penalties applied
 * first). Those among the first num_beams that end in an EOS id (or reach max_new_tokens) are
 * offered to the finished set with score = logp / (generated length incl. the EOS ^
 * length_penalty); the best num_beams finished are kept. The best num_beams continuations
 * that did not finish run on. The search ends when early_stopping is true and num_beams
 * hypotheses are finished; or when the best running beam cannot beat the worst finished one
 * (early_stopping false: estimated at the current length; "never" with length_penalty > 0:
 * at max length); or when every candidate hit a stop. The result is the best finished
 * hypothesis. Ties are broken by the lower flattened index (beam * vocab + id). */
#ifndef GPT_BEAM_H
#define GPT_BEAM_H

#include "generate.h"

/* One request, num_beams = o->num_beams. Fills r->out/text/finish as gpt_generate does
 * (stop strings are not checked in beam search). */
int gpt_beam_search(gpt_model *m, const gpt_tokenizer *tk, const gpt_gen_opts *o, gpt_gen_req *r,
                    gpt_gen_stats *st, gpt_err *err);

#endif
