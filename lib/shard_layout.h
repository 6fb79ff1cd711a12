/* shard_layout.h: how gpt-shard split cuts each tensor across a (tp, pp, ep) mesh; the contract with the
 * parallel runtime (gpt-checkpoint(5), PARALLEL LAYOUT).
 *
 * Pipeline: stage s holds layers [s*L/pp, (s+1)*L/pp) (integer division), the input embeddings go to
 * stage 0, the final norm and lm_head to the last stage; a tied embedding is stored on both.
 * Expert parallel: tensors of mlp.experts.* are cut on axis 0 (experts) into ep equal ranges; the others
 * are replicated on every ep rank. Tensor parallel (Megatron): column-parallel weights (q/k/v, up,
 * gate_up, c_attn, c_fc, vocab rows) are cut on their output axis, row-parallel weights (o_proj,
 * down_proj, c_proj) on their input axis; biases follow their weight's output axis, except those of
 * row-parallel layers, which are replicated (added once after the all-reduce). A fused axis (GPT-2's
 * c_attn q|k|v) is cut segment by segment and the rank's pieces are concatenated. */
#ifndef GPT_SHARD_LAYOUT_H
#define GPT_SHARD_LAYOUT_H

#include <stdint.h>

#include "config.h"
#include "error.h"
#include "safetensors.h"

#define GPT_LAYOUT_MAX_SEGS 4

typedef struct gpt_layout_rule {
    int stage_first, stage_last; /* pipeline stages holding the tensor (equal unless tied) */
    int ep_dim;                  /* -1: replicated across ep */
    int tp_dim;                  /* -1: replicated across tp */
    int nseg;                    /* segments of the tp axis (1, or 3 for a fused q|k|v) */
    uint64_t seg[GPT_LAYOUT_MAX_SEGS];
} gpt_layout_rule;

/* The rule for a tensor of the full model (name and full shape), checked for divisibility. */
int gpt_layout_rule_for(const gpt_model_config *cfg, const char *name, int ndim, const uint64_t *shape, int tp,
                        int pp, int ep, gpt_layout_rule *r, gpt_err *err);
/* The shape of the piece rank (tpr, epr) holds. */
void gpt_layout_piece_shape(const gpt_layout_rule *r, int ndim, const uint64_t *shape, int tp, int ep, uint64_t *out);
/* Copy rank (tpr, epr)'s piece out of a full tensor (to = 0) or into it (to = 1). */
void gpt_layout_copy(const gpt_layout_rule *r, int ndim, const uint64_t *shape, size_t esize, int tp, int tpr, int ep,
                     int epr, unsigned char *full, unsigned char *piece, int to_full);

#endif
