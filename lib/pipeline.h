/* pipeline.h: pipeline schedules over the stages of a pipeline-parallel model (model_pp.h).
 *
 * One call runs n_micro micro-batches through the stages of one (tp, dp) position; every stage
 * calls it with the same micro-batches (tok, tgt: n_micro x (B, T), contiguous). Activations move
 * between neighbouring stages with send/recv on the pp communicator (forward tag 1, backward
 * tag 2); a pair exchanging both ways orders its send and receive by stage so no two blocking
 * sends wait on each other.
 *
 *   GPIPE  all forwards (0..m-1), then all backwards (m-1..0).
 *   1F1B   (PipeDream-flush, as Megatron): stage s runs min(pp-s-1, m) warm-up forwards, then
 *          alternates one forward and one backward, then drains the remaining backwards; at most
 *          pp-s micro-batches are in flight on stage s.
 *
 * Activation memory. The model holds one set of activations (those of its latest forward). Each
 * stage keeps, per micro-batch in flight, only its input message (N, C floats + statistics) and
 * re-runs its stage forward right before that micro-batch's backward unless the micro-batch is
 * still the resident one (GPipe's re-materialization at stage granularity). The last stage never
 * recomputes under 1F1B (its forward is followed by its backward) and once under GPipe's first
 * backward. So GPipe keeps m inputs per stage, 1F1B at most pp - s, at the cost of one extra
 * stage forward per micro-batch on the other stages. Recomputation is exact (deterministic ops),
 * so the gradients equal a single rank's up to the order their micro-batches are summed in. */
#ifndef GPT_PIPELINE_H
#define GPT_PIPELINE_H

#include "comm.h"
#include "model.h"

typedef enum gpt_pp_schedule { GPT_PP_GPIPE = 0, GPT_PP_1F1B = 1 } gpt_pp_schedule;

typedef struct gpt_pp_stats {
    int max_in_flight; /* most stage inputs held at once */
    int recomputed;    /* stage forwards re-run for a backward */
    /* Where the stage's time went (seconds, monotonic clock): in the model's stage forward and
     * backward (recomputation included), and blocked in send/recv, which is the pipeline bubble
     * plus the copy itself. Cheap enough to be always on: a clock read per call. */
    double t_compute, t_wait;
    int n_fwd, n_bwd; /* micro-batch forwards (not recomputations) and backwards run */
    /* Optional, the caller's: the ops in the order they ran, i + 1 for micro-batch i's forward,
     * -(i + 1) for its backward (pp_schedule.h's encoding); at most order_cap are stored,
     * order_len counts them all. Kept across the reset at the start of gpt_pp_run. */
    int *order;
    int order_cap, order_len;
} gpt_pp_stats;

/* backward 0: forward only (evaluation). sums (last stage; untouched elsewhere): [0] += ce * n,
 * [1] += nll * n, [2] += correct, [3] += n scored, over the micro-batches. stats may be NULL. */
int gpt_pp_run(gpt_model *m, gpt_comm *pp, gpt_pp_schedule sched, int n_micro, const int *tok, const int *tgt, int B,
               int T, const gpt_forward_opts *fo, int backward, double *sums, gpt_pp_stats *stats, gpt_err *err);

#endif
