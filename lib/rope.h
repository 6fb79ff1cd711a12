/* rope.h: rotary position tables, plain or YaRN-scaled, computed on the host. */
#ifndef GPT_ROPE_H
#define GPT_ROPE_H

#include "config.h"

/* inv_freq (d_head/2) and the attention factor that multiplies cos and sin. Follows Hugging
 * Face's _compute_yarn_parameters in float32, so tables match to the last bit or two. */
void gpt_rope_inv_freq(const gpt_model_config *cfg, float *inv_freq, float *attn_factor);
/* cos, sin: (T, d_head/2) for positions 0..T-1, attention factor folded in. */
void gpt_rope_tables(const gpt_model_config *cfg, int T, float *cos_t, float *sin_t);

#endif
