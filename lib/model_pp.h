/* model_pp.h: pipeline parallelism for gpt_model.
 *
 * Stage s of pp holds exactly what `gpt-shard split --pp pp` gives it (shard_layout.h,
 * gpt-checkpoint(5)): layers [s*L/pp, (s+1)*L/pp) (uneven splits allowed), the input embeddings
 * on stage 0, the final norm and lm_head on the last stage, and a tied embedding on both. Its
 * parameter table is the subset of the (tensor-parallel local) table holding those tensors, in
 * the same order, so gpt_pp_extract / gpt_pp_insert convert between them by name.
 *
 * A stage runs its layer range. Boundary messages are host arrays:
 *   forward   x (N, C) = the residual stream after the previous stage, then gpt_model_pp_fwd_extra
 *             floats: the MoE router statistics (expert counts, probability sums) summed over the
 *             layers so far, because the aux loss couples every layer (0 floats without it);
 *   backward  dx (N, C) = its gradient, then gpt_model_pp_bwd_extra floats: the aux loss's gradient
 *             per expert (set by the last stage's loss; 0 floats without it).
 * The last stage computes the loss exactly as gpt_model_forward does for the whole model. */
#ifndef GPT_MODEL_PP_H
#define GPT_MODEL_PP_H

#include "comm.h"
#include "model.h"

/* Stage `stage` of pp, tensor-parallel over tp (NULL or size 1: none). pp 1 is gpt_model_create_tp.
 * Parameters start at zero: use gpt_model_pp_init_params or upload gpt_pp_extract's piece. */
gpt_model *gpt_model_create_pp(const gpt_model_config *full, gpt_backend *be, gpt_comm *tp, int pp, int stage,
                               gpt_err *err);
/* pp (1 for a whole model); the stage and its layers [l0, l1). Any pointer may be NULL. */
int gpt_model_pp_info(const gpt_model *m, int *stage, int *l0, int *l1);
size_t gpt_model_pp_fwd_extra(const gpt_model *m);
size_t gpt_model_pp_bwd_extra(const gpt_model *m);

/* The forward of one stage over (B, T): tokens and targets as gpt_model_forward (every stage gets
 * them; only the first embeds, only the last scores). x_in: the previous stage's message (NULL
 * on the first stage); x_out: this stage's message (NULL on the last). loss: the last stage's. */
int gpt_model_forward_stage(gpt_model *m, const int *tokens, const int *targets, int B, int T,
                            const gpt_forward_opts *opts, const float *x_in, float *x_out, gpt_loss *loss,
                            gpt_err *err);
/* The backward of the last forward_stage with targets: dx_out from the next stage (NULL on the
 * last), dx_in for the previous one (NULL on the first). Gradients accumulate. */
int gpt_model_backward_stage(gpt_model *m, const float *dx_out, float *dx_in, gpt_err *err);

/* The same values as gpt_model_init_params(seed) on one rank, cut to this rank's (tp, stage) piece. */
void gpt_model_pp_init_params(gpt_model *m, uint64_t seed);
/* tpbuf: a buffer in the layout of the model's config (the tensor-parallel local table, all
 * layers); local: the stage's table. extract copies the stage's tensors out; insert copies them
 * in (owned_only: skip a tied embedding on the last stage, whose owner is stage 0). */
void gpt_pp_extract(const gpt_model *m, const float *tpbuf, float *local);
void gpt_pp_insert(const gpt_model *m, const float *local, float *tpbuf, int owned_only);
/* Per tensor of the stage's table: 1 when stage 0 owns its copy elsewhere (a tied embedding on the
 * last stage: norms and checkpoints count it once). Caller frees. */
unsigned char *gpt_pp_shadow_flags(const gpt_model *m);
/* Sums the tied embedding's gradient between the first and the last stage (host gradients in the
 * stage layout), over pp (the stages of one tp, dp position). No-op without a tied embedding. */
int gpt_pp_sync_tied(const gpt_model *m, gpt_comm *pp, float *hgrads, gpt_err *err);

/* ---- inference across stages ----
 * Every rank loads the whole (one-rank) model and keeps its stage's piece, tensor-parallel over tp
 * (NULL or size 1: none): the stage model's parameters, ready to run. pp 1: gpt_model_tp_from
 * (or a copy of the whole model's parameters when tp is NULL too). The caller frees whole. */
gpt_model *gpt_model_pp_from(gpt_model *whole, gpt_comm *tp, int pp, int stage, gpt_err *err);
/* Gives a stage its pp communicator (the stages of one tp, dp position; not owned, must outlive
 * the model): gpt_model_extend then receives its input rows from the previous stage, sends its
 * output to the next, and the logits the caller asks for come from the last stage, broadcast to
 * every stage (so every stage samples the same tokens). A KV cache of a stage holds only the
 * stage's layers. A no-op on a model of one stage. */
void gpt_model_pp_set_comm(gpt_model *m, gpt_comm *pp);
gpt_comm *gpt_model_pp_comm(const gpt_model *m); /* NULL when none was set */

/* Internal (model.c). */
gpt_model *gpt_model_pp_create_(const gpt_model_config *cfg, gpt_backend *be, const gpt_param_table *tab, int gpt2,
                                int pp, int stage, int l0, int l1);
void gpt_model_pp_io_(gpt_model *m, const float *in, float *out, const float *dout, float *din);

#endif
