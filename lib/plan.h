/* plan.h: per-rank training memory, computed from a config and a device mesh without allocating
 * (gpt-train --plan).
 *
 *   gpt_plan_mesh mesh = {.dp = 8, .tp = 1, .pp = 1, .ep = 1};
 *   gpt_plan_opts po = {.micro_batch = 1, .seq_len = 4096, .grad_accum = 8, .act_bytes = 4, ...};
 *   gpt_plan plan;
 *   gpt_plan_compute(&cfg.model, &mesh, &po, &plan, &err);
 *   plan.stage[s].total ...                             // bytes on each rank of stage s
 *   gpt_plan_free(&plan);
 *
 * The mesh is Megatron-style: world = dp * tp * pp. Tensor parallelism splits attention by heads
 * (q, sinks, the o projection's input; k and v by min(tp, n_kv_heads) as KV heads are replicated
 * past that), dense MLPs by their hidden width, and the embedding and output head by vocabulary
 * rows; norms, routers and row-parallel biases are replicated. Pipeline parallelism gives stage s
 * layers [s L / pp, (s + 1) L / pp); the embeddings live on the first stage, the final norm and
 * head on the last (a tied embedding on both). Expert parallelism splits the experts over ep
 * ranks of the data-parallel group (ep divides dp; an expert's gradients are then reduced over
 * dp / ep ranks), and each expert's hidden width over tp.
 *
 * What one rank holds, in bytes:
 *   params      its parameter shard (param_bytes each)
 *   grads       the same count (grad_bytes each)
 *   optim       AdamW m and v (fp32); optim_zero1 is the same sharded over the data-parallel group
 *               (ZeRO-1; expert parameters over their dp / ep ranks)
 *   acts        what lib/model.c's alloc_acts allocates for one micro-batch of B x T rows, times
 *               the micro-batches a 1F1B pipeline keeps in flight on that stage (pp - s), plus the
 *               backward scratch (one copy)
 *   host        the trainer's host copies (lib/train.c: fp32 parameters and gradients, padded to a
 *               multiple of dp) that AdamW and the collectives work on; the parameters there are
 *               the fp32 master copy, so no separate master term
 *   comm        collective buffers: the ZeRO-1 reduce-scatter receive buffer, pipeline send/recv of
 *               one micro-batch's hidden states, expert all-to-all dispatch and combine
 *   save        the whole AdamW state (m, v) that a checkpoint save copies or gathers on top
 * total = params + grads + optim + acts + host + comm + save (total_zero1 with optim_zero1 and the
 * ZeRO receive buffer). Allocator slack, the runtime's own libraries and the token files' mapped pages
 * are not counted. */
#ifndef GPT_PLAN_H
#define GPT_PLAN_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "error.h"

typedef struct gpt_plan_mesh {
    int dp, tp, pp, ep;
} gpt_plan_mesh;

typedef struct gpt_plan_opts {
    int micro_batch, seq_len, grad_accum;
    int param_bytes, grad_bytes, act_bytes; /* 4 4 4 for fp32; 2 4 2 for bf16 with fp32 master */
} gpt_plan_opts;

typedef struct gpt_plan_stage {
    int layer_lo, layer_hi; /* [lo, hi) */
    int in_flight;          /* micro-batches whose activations are held */
    uint64_t n_params;      /* parameters on one rank of this stage */
    uint64_t n_expert;      /* of which expert parameters (reduced over dp / ep) */
    double params, grads, optim, optim_zero1, acts, host, comm, comm_zero1, save, total, total_zero1;
} gpt_plan_stage;

typedef struct gpt_plan {
    gpt_plan_mesh mesh;
    gpt_plan_opts opts;
    int world;
    uint64_t n_total;       /* parameters of the whole model (padding rows included) */
    int n_stages;
    gpt_plan_stage *stage;  /* pp entries */
    int max_stage, max_stage_zero1; /* the stage with the largest total */
} gpt_plan;

/* Fails on a mesh the model cannot be split over (heads, widths or experts not divisible, more
 * stages than layers, ep not dividing dp), naming the constraint. */
int gpt_plan_compute(const gpt_model_config *c, const gpt_plan_mesh *mesh, const gpt_plan_opts *o, gpt_plan *plan,
                     gpt_err *err);
void gpt_plan_free(gpt_plan *plan);
/* A human-readable table (GiB), one row per stage (long pipelines: the first, last and largest),
 * ending with "peak per rank: N bytes (ZeRO-1: M bytes)". */
void gpt_plan_print(const gpt_plan *plan, const char *name, FILE *f);

#endif
