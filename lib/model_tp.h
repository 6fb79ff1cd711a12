/* model_tp.h: tensor parallelism (Megatron style) for gpt_model.
 *
 * A model created over a tensor-parallel group of tp ranks holds, on rank r, exactly the piece that
 * `gpt-shard split --tp tp` gives rank r (shard_layout.h, gpt-checkpoint(5)): attention by heads
 * (q/k/v/sinks, and the input axis of o_proj), MLP and expert up-projections by output features,
 * down-projections by input features, embedding and lm_head by vocabulary rows; norms, routers,
 * position embeddings and the biases of row-parallel layers are replicated. Its parameter table is
 * the table of the local config (gpt_model_tp_config), tensor for tensor in the same order as the
 * full model's, so host code converts between the two with gpt_tp_scatter / gpt_tp_gather.
 *
 * Communication, all over the tp group (one all-reduce per row-parallel layer, as in Megatron):
 *   forward:  embedding (vocab rows) -> all-reduce; o_proj, down_proj, experts -> all-reduce, then the
 *             replicated bias once; logits stay split (N, Vp/tp): the cross-entropy reduces the
 *             row max (all-gather), the sum of exponentials, the target logit and the logit sum.
 *   backward: the input gradient of every column-parallel layer (qkv, up, experts, lm_head) -> all-reduce;
 *             routing-weight gradients of the experts -> all-reduce (their outputs are partial).
 * Gradients of replicated parameters come out equal on every tp rank (they see the same inputs).
 *
 * gpt_model_logits of a TP model is the rank's vocabulary slice (N, Vp/tp); gpt_model_extend
 * gathers the full rows (inference). */
#ifndef GPT_MODEL_TP_H
#define GPT_MODEL_TP_H

#include "comm.h"
#include "model.h"

/* The config whose parameter table is one tp rank's piece: heads, kv heads, d_ff, d_expert and
 * padded_vocab_size divided by tp (vocab_size stays the real vocabulary). Checks divisibility. */
int gpt_model_tp_config(const gpt_model_config *full, int tp, gpt_model_config *local, gpt_err *err);

/* A model over the group tp (NULL or size 1: gpt_model_create). Parameters start at zero: upload a
 * piece made by gpt_tp_scatter (or use gpt_model_tp_init_params). The group must outlive the model. */
gpt_model *gpt_model_create_tp(const gpt_model_config *full, gpt_backend *be, gpt_comm *tp, gpt_err *err);
/* A TP model over tp holding this rank's piece of a whole (one-rank) model's weights (inference:
 * every rank loads the whole model, then keeps its piece; the caller may free the whole one). */
gpt_model *gpt_model_tp_from(gpt_model *whole, gpt_comm *tp, gpt_err *err);
/* The full config of a TP model (gpt_model_config_of gives the local one). */
const gpt_model_config *gpt_model_full_config(const gpt_model *m);
gpt_comm *gpt_model_tp_comm(const gpt_model *m); /* NULL without TP */
/* The same values as gpt_model_init_params(seed) on one rank, cut to this rank's piece. */
void gpt_model_tp_init_params(gpt_model *m, uint64_t seed);

/* Host buffers in the layouts of the full table (full) and of rank tpr's table (local). */
void gpt_tp_scatter(const gpt_model_config *full, int tp, int tpr, const float *fullbuf, float *localbuf);
/* Every rank of tp passes its local buffer; every rank gets the full one. */
int gpt_tp_gather(const gpt_model_config *full, gpt_comm *tp, const float *localbuf, float *fullbuf, gpt_err *err);
/* Per tensor of the local table: 1 when it is cut across tp ranks, 0 when replicated (gradient
 * norms count replicated tensors once). Caller frees. */
unsigned char *gpt_tp_split_flags(const gpt_model_config *full, int tp);

/* ---- vocabulary-parallel cross-entropy (host arrays; used by model.c) ----
 * logits (N, Vl) hold vocabulary columns [v0, v0 + Vl) of which those < V are real. Every rank of tp
 * calls it; each gets the full results: losses (label-smoothed), nll, correct (global argmax ==
 * target, ties to the lower index), lse (for the backward). */
int gpt_tp_xent(gpt_comm *tp, const float *logits, const int *targets, int N, int Vl, int v0, int V, float smoothing,
                float *losses, float *nll, int *correct, float *lse, gpt_err *err);
/* dlogits (N, Vl) = the gradient of dscale * sum(losses) w.r.t. this rank's columns (may alias logits). */
void gpt_tp_xent_bwd(float *dlogits, const float *logits, const int *targets, const float *lse, int N, int Vl, int v0,
                     int V, float smoothing, float dscale);

/* Internal (model.c): makes m a TP model. */
void gpt_model_tp_attach_(gpt_model *m, gpt_comm *tp, const gpt_model_config *full);

#endif
