/* mesh.h: the device mesh of a parallel run: world = dp x tp x pp ranks, with expert parallelism
 * carved out of the data-parallel ranks (Megatron/DeepSpeed style).
 *
 * Rank order: tp fastest, then dp, then pp:  rank = tp_rank + tp * (dp_rank + dp * pp_rank),
 * so tensor-parallel peers are neighbours (one node). The ep ranks of an expert group are ep
 * consecutive dp ranks: ep_rank = dp_rank % ep; each holds n_experts / ep experts, and attention
 * (everything but the experts) stays replicated across them.
 *
 *   gpt_mesh mesh;
 *   gpt_mesh_init(&mesh, world, dp, tp, pp, ep, &err);   // dp 0: world size / (tp * pp)
 *   model over mesh.tp, gradients all-reduced over mesh.dp, ...
 *   gpt_mesh_free(&mesh);
 *
 * Sub-communicators (each owned by the mesh):
 *   tp    the tp ranks of one (dp, pp) position        (tensor-parallel all-reduces)
 *   dp    the dp ranks of one (tp, pp) position        (gradients of replicated parameters)
 *   pp    the pp stages of one (tp, dp) position       (activations: point-to-point)
 *   ep    the ep ranks of one expert group             (token all-to-all)
 *   edp   ranks holding the same experts: dp / ep of them (gradients of expert parameters) */
#ifndef GPT_MESH_H
#define GPT_MESH_H

#include <stdio.h>

#include "comm.h"
#include "error.h"
#include "yaml_doc.h"

typedef struct gpt_mesh {
    int dp, tp, pp, ep;
    int rank, size;
    int dp_rank, tp_rank, pp_rank, ep_rank;
    gpt_comm *world; /* not owned */
    gpt_comm *tp_comm, *dp_comm, *pp_comm, *ep_comm, *edp_comm;
} gpt_mesh;

/* Collective over world. Sizes must be >= 1 (dp may be 0: inferred); dp * tp * pp must equal the
 * world size and ep must divide dp. */
int gpt_mesh_init(gpt_mesh *m, gpt_comm *world, int dp, int tp, int pp, int ep, gpt_err *err);
/* What gpt_mesh_init checks, without communicating: the same answer on every rank, so a launcher
 * can refuse a bad mesh on all ranks alike. *dp (0: inferred) gets the data-parallel size. */
int gpt_mesh_check(int world_size, int *dp, int tp, int pp, int ep, gpt_err *err);
void gpt_mesh_free(gpt_mesh *m);
/* Reads a parallel: mapping (NULL: nothing): keys dp, tp, pp, ep; present keys overwrite the
 * outputs. Unknown keys and bad values are errors naming FILE:LINE: parallel.KEY. */
int gpt_mesh_opts_read(const gpt_ynode *map, int *dp, int *tp, int *pp, int *ep, gpt_err *err);
/* The world rank at mesh coordinates (dp_rank, tp_rank, pp_rank). */
int gpt_mesh_rank_of(const gpt_mesh *m, int dp_rank, int tp_rank, int pp_rank);
/* One line: "rank R/S: dp D/dp tp T/tp pp P/pp ep E/ep". */
void gpt_mesh_print(const gpt_mesh *m, FILE *f);

#endif
