/* model_ep.h: expert parallelism for mixture-of-experts gpt_models (GPT-OSS family).
 *
 * The ep ranks of an expert group (mesh.h: ep consecutive data-parallel ranks, each with its own
 * batch) hold the same attention, norms, embeddings and routers, and each holds a contiguous range
 * of n_experts / ep experts of every MoE layer: rank r holds experts [r E/ep, (r+1) E/ep), as
 * `gpt-shard split --ep` cuts them (shard_layout.h).
 *
 *   gpt_model *m = gpt_model_create_ep(&cfg, be, mesh.ep_comm, &err);
 *   gpt_model_ep_init_params(m, seed);    // the one-rank init, sliced
 *   gpt_model_forward / gpt_model_backward as usual: every rank of the group calls them together
 *
 * Each MoE layer, per micro-batch:
 *   forward:  the router and top-k run on the rank's own tokens (so the router aux loss is the one
 *             the rank would compute without EP); the (token, expert) rows, sorted by expert, are
 *             sent to the experts' owners with one all-to-all (the per-expert counts go first: the
 *             routing is dropless, counts vary); each owner runs its experts on the rows it got,
 *             grouped by expert, senders in rank order within an expert; a second all-to-all
 *             returns the outputs to the rows they came from, which are combined with the routing
 *             weights exactly as without EP.
 *   backward: the output gradients of the rows go to the owners along the same routes, the owners
 *             accumulate their experts' weight gradients and send the input gradients back.
 * Every route and order is fixed by the routing, so the results are deterministic.
 *
 * Parameter layout. The local table lists every replicated tensor first, in the full table's
 * order, then the expert tensors (shape[0] = n_experts / ep), so the buffer is
 * [replicated | expert shard]: gradients of the first part reduce over the data-parallel ranks,
 * those of the second over the ranks holding the same experts (mesh.edp_comm).
 *
 * An EP model is for training: the KV-cache inference path (gpt_model_extend) is not offered on it.
 * Pipeline parallelism combines with it (gpt_model_create_ep_pp); tensor parallelism does not
 * (gpt-train refuses the combination). */
#ifndef GPT_MODEL_EP_H
#define GPT_MODEL_EP_H

#include <stddef.h>
#include <stdint.h>

#include "comm.h"
#include "model.h"

/* A model over the expert group ep (NULL or size 1: gpt_model_create). The config must be MoE with
 * ep dividing n_experts, and ep must offer alltoallv. Parameters start at zero. The group must
 * outlive the model. */
gpt_model *gpt_model_create_ep(const gpt_model_config *cfg, gpt_backend *be, gpt_comm *ep, gpt_err *err);
/* Pipeline stage `stage` of pp of that model (model_pp.h: the stage's layers and tensors, its
 * experts cut as above; pp 1: gpt_model_create_ep). The stage's MoE layers exchange tokens within
 * ep, which holds the ranks of one expert group at this stage. gpt_ep_gather then fills the
 * stage's tensors of the full layout (a shadow copy of a tied embedding left out) and leaves the
 * rest alone: sum over the stages for the model; gpt_ep_scatter takes the stage's tensors. */
gpt_model *gpt_model_create_ep_pp(const gpt_model_config *cfg, gpt_backend *be, gpt_comm *ep, int pp, int stage,
                                  gpt_err *err);
/* The same values as gpt_model_init_params(seed) on one rank, this rank's experts kept. */
void gpt_model_ep_init_params(gpt_model *m, uint64_t seed);
gpt_comm *gpt_model_ep_comm(const gpt_model *m); /* NULL without EP */
/* Floats of the replicated part (the start of the buffer); the rest is the expert shard. Without EP:
 * the whole buffer. */
size_t gpt_model_ep_replicated(const gpt_model *m);

/* Host buffers: the local layout (gpt_model_params(m)) <-> the full model's (gpt_params_build of the
 * config). gather is collective over the ep group; every rank gets the full buffer. */
int gpt_ep_gather(const gpt_model *m, const float *local, float *full, gpt_err *err);
void gpt_ep_scatter(const gpt_model *m, const float *full, float *local);

/* ---- internal (model.c) ---- */
typedef struct gpt_ep_state gpt_ep_state;
void gpt_model_ep_attach_(gpt_model *m, gpt_ep_state *s);
gpt_ep_state *gpt_model_ep_state_(const gpt_model *m);
void gpt_ep_state_free_(gpt_ep_state *s);
/* Layer l's experts on the rows xe (NK, C; sorted by global expert, offsets (E + 1) host) -> ye
 * (NK, C), through the owners. Weights: this rank's shard. */
void gpt_ep_experts_fwd_(gpt_ep_state *s, gpt_backend *be, int l, float *ye, const float *xe, const int *offsets,
                         int NK, const float *gu_w, const float *gu_b, const float *down_w, const float *down_b);
/* The reverse: dye (NK, C) -> dxe (NK, C); the shard's weight gradients accumulate. */
void gpt_ep_experts_bwd_(gpt_ep_state *s, gpt_backend *be, int l, float *dxe, const float *dye, const int *offsets,
                         int NK, const float *gu_w, const float *down_w, float *g_gu_w, float *g_gu_b,
                         float *g_down_w, float *g_down_b);

#endif
