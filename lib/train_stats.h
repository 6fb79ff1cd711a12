/* train_stats.h: per-rank, per-step statistics of a parallel run (gpt-train --log-parallel), for
 * measuring the pipeline bubble, the communication volume and the peak memory of each rank.
 *
 * With o.parallel_log = PREFIX every rank appends to PREFIX.rankR.jsonl, after each step, one line:
 *   {"step":S,"rank":R,"dp":D,"tp":T,"pp":P,"ep":E,"step_s":seconds of gpt_trainer_step,
 *    "maxrss_kib":peak RSS so far,
 *    "pipe":{"schedule":"gpipe"|"1f1b","micro":M,"compute_s":..,"wait_s":..,"n_fwd":..,"n_bwd":..,
 *            "recomputed":..,"max_in_flight":..,"order":"F0 F1 B1 B0"},        (pp > 1 only)
 *    "comm":{"world":{"allreduce":[calls,bytes],...},"dp":{..},"tp":{..},"pp":{..},"ep":{..},"edp":{..}}}
 * The comm counts are those of the step alone and need counting communicators (comm_count.h: the
 * world wrapped before gpt_trainer_init, so the mesh's splits count too); kinds with no calls
 * are left out. */
#ifndef GPT_TRAIN_STATS_H
#define GPT_TRAIN_STATS_H

#include "train.h"

/* Before a step: opens the file on first use, zeroes the counters. */
int gpt_trainer_stats_begin(gpt_trainer *tr, gpt_err *err);
/* After a step that took step_s seconds: writes the line. */
int gpt_trainer_stats_log(gpt_trainer *tr, double step_s, gpt_err *err);
/* Closes the file and frees the statistics (gpt_trainer_free calls it). */
void gpt_trainer_stats_free(gpt_trainer *tr);

#endif
