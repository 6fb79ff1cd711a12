/* pp_schedule.h: the pipeline schedules of pipeline.h as op sequences, and a replay of them on
 * an idealized machine, to count the bubble a schedule has by construction (benchmarks, tests).
 *
 * An op is i + 1 for micro-batch i's forward and -(i + 1) for its backward (gpt_pp_stats.order
 * records the ops gpt_pp_run ran in the same encoding, so a run can be checked against this).
 *
 *   int ops[2 * m];
 *   gpt_pp_order(GPT_PP_1F1B, pp, stage, m, ops);
 *   gpt_pp_sim r;
 *   gpt_pp_simulate(GPT_PP_1F1B, pp, m, 1.0, 2.0, &r);   // r.makespan, r.idle[s], r.bubble
 *
 * The replay: each stage runs its ops in order, an op starting as soon as its stage is free and
 * its input exists: a forward needs the previous stage's forward of that micro-batch, a backward
 * the next stage's backward of it (the last stage: its own forward). Every forward takes tf and
 * every backward tb on every stage, sends are buffered and free, recomputation is not modelled.
 * There the idle time of each stage is (pp - 1)(tf + tb) for both schedules and the bubble
 * fraction idle / makespan is (pp - 1) / (m + pp - 1). */
#ifndef GPT_PP_SCHEDULE_H
#define GPT_PP_SCHEDULE_H

#include "pipeline.h"

/* Writes the 2m ops (a training step: forwards and backwards) that stage runs;
 * returns 2m, or -1 on bad arguments (pp < 1, stage outside [0, pp), m < 1). */
int gpt_pp_order(gpt_pp_schedule s, int pp, int stage, int m, int *ops);

typedef struct gpt_pp_sim {
    double makespan;     /* end of the last op on any stage */
    double *idle;        /* pp entries: makespan minus the stage's busy time */
    double bubble;       /* mean over stages of idle / makespan */
    int *max_in_flight;  /* pp entries: most micro-batches forwarded and not yet backwarded */
} gpt_pp_sim;

/* Replays ops[s][0, 2m) for every stage s. Returns 0, or -1 when the orders cannot all complete
 * (a deadlock, or an op missing, repeated or out of range); r's arrays are allocated either way
 * (free with gpt_pp_sim_free). */
int gpt_pp_replay(int pp, int m, const int *const *ops, double tf, double tb, gpt_pp_sim *r);
/* gpt_pp_order for every stage, then gpt_pp_replay. */
int gpt_pp_simulate(gpt_pp_schedule s, int pp, int m, double tf, double tb, gpt_pp_sim *r);
void gpt_pp_sim_free(gpt_pp_sim *r);

#endif
