/* The pipeline schedules as op sequences (lib/pp_schedule.h) and their idealized replay: the
 * orders are the definitions (GPipe: all forwards then all backwards in reverse; 1F1B /
 * PipeDream-flush: pp - s - 1 warm-up forwards, one-forward-one-backward, drain), every stage
 * idles (pp - 1)(tf + tb) so the bubble is (pp - 1)/(m + pp - 1) for both, 1F1B holds at most
 * min(pp - s, m) micro-batches on stage s and GPipe m, and a deadlocking order is caught. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pp_schedule.h"
#include "tap.h"

static void order_str(gpt_pp_schedule s, int pp, int stage, int m, char *buf)
{
    int ops[64];
    int n = gpt_pp_order(s, pp, stage, m, ops);
    buf[0] = 0;
    for (int i = 0; i < n; i++)
        sprintf(buf + strlen(buf), "%s%c%d", i ? " " : "", ops[i] > 0 ? 'F' : 'B', abs(ops[i]) - 1);
}

int main(void)
{
    char b[512];
    /* hand-written from the definitions */
    order_str(GPT_PP_GPIPE, 2, 0, 3, b);
    is_str(b, "F0 F1 F2 B2 B1 B0", "GPipe pp 2 m 3 stage 0");
    order_str(GPT_PP_1F1B, 2, 0, 4, b);
    is_str(b, "F0 F1 B0 F2 B1 F3 B2 B3", "1F1B pp 2 m 4 stage 0: one warm-up forward");
    order_str(GPT_PP_1F1B, 2, 1, 4, b);
    is_str(b, "F0 B0 F1 B1 F2 B2 F3 B3", "1F1B pp 2 m 4 last stage: no warm-up");
    order_str(GPT_PP_1F1B, 4, 0, 2, b);
    is_str(b, "F0 F1 B0 B1", "1F1B pp 4 m 2 stage 0: warm-up capped at m");
    order_str(GPT_PP_1F1B, 4, 1, 5, b);
    is_str(b, "F0 F1 F2 B0 F3 B1 F4 B2 B3 B4", "1F1B pp 4 m 5 stage 1");
    int ops[4];
    ok(gpt_pp_order(GPT_PP_GPIPE, 2, 2, 1, ops) < 0 && gpt_pp_order(GPT_PP_1F1B, 2, 0, 0, ops) < 0,
       "bad stage or micro-batch count rejected");

    /* the replay against the analytic bubble, over a grid */
    int bad_idle = 0, bad_bubble = 0, bad_flight = 0, bad_rc = 0, cases = 0;
    const double tfs[2] = {1, 1}, tbs[2] = {1, 2};
    for (int sch = 0; sch < 2; sch++)
        for (int pp = 1; pp <= 8; pp++)
            for (int m = 1; m <= 12; m++)
                for (int t = 0; t < 2; t++) {
                    gpt_pp_sim r;
                    cases++;
                    if (gpt_pp_simulate((gpt_pp_schedule)sch, pp, m, tfs[t], tbs[t], &r) < 0) {
                        bad_rc++;
                        gpt_pp_sim_free(&r);
                        continue;
                    }
                    double want_idle = (pp - 1) * (tfs[t] + tbs[t]);
                    double want_bubble = (double)(pp - 1) / (m + pp - 1);
                    for (int s = 0; s < pp; s++) {
                        if (fabs(r.idle[s] - want_idle) > 1e-9) {
                            if (!bad_idle++)
                                diag("%s pp %d m %d stage %d: idle %g, want %g", sch ? "1f1b" : "gpipe", pp, m, s,
                                     r.idle[s], want_idle);
                        }
                        int want_fl = sch ? (pp - s < m ? pp - s : m) : m;
                        if (r.max_in_flight[s] != want_fl && !bad_flight++)
                            diag("%s pp %d m %d stage %d: in flight %d, want %d", sch ? "1f1b" : "gpipe", pp, m, s,
                                 r.max_in_flight[s], want_fl);
                    }
                    if (fabs(r.bubble - want_bubble) > 1e-9 && !bad_bubble++)
                        diag("%s pp %d m %d: bubble %g, want %g", sch ? "1f1b" : "gpipe", pp, m, r.bubble, want_bubble);
                    gpt_pp_sim_free(&r);
                }
    is_int(bad_rc, 0, "every schedule of %d (pp <= 8, m <= 12, tb = tf and 2 tf) replays to the end", cases);
    is_int(bad_idle, 0, "every stage idles (pp - 1)(tf + tb), both schedules");
    is_int(bad_bubble, 0, "bubble fraction (pp - 1)/(m + pp - 1), both schedules");
    is_int(bad_flight, 0, "in flight: GPipe m, 1F1B min(pp - s, m)");

    /* a concrete makespan: 1F1B pp 4 m 8, tf 1 tb 2 -> (8 + 3) * 3 */
    gpt_pp_sim r;
    int rc = gpt_pp_simulate(GPT_PP_1F1B, 4, 8, 1, 2, &r);
    ok(rc == 0 && fabs(r.makespan - 33) < 1e-9, "1F1B pp 4 m 8: makespan 33 slots (got %g)", r.makespan);
    gpt_pp_sim_free(&r);

    /* stage 0 wants B0 before sending F1, stage 1 wants F1 before B0: a deadlock */
    int s0[4] = {1, -1, 2, -2}, s1[4] = {1, 2, -2, -1};
    const int *dl[2] = {s0, s1};
    ok(gpt_pp_replay(2, 2, dl, 1, 1, &r) < 0, "a deadlocking pair of orders is reported");
    gpt_pp_sim_free(&r);
    int d0[4] = {1, 1, -1, -2}, d1[4] = {1, -1, 2, -2};
    const int *dup[2] = {d0, d1};
    ok(gpt_pp_replay(2, 2, dup, 1, 1, &r) < 0, "a repeated op is reported");
    gpt_pp_sim_free(&r);
    int e0[4] = {-1, 1, 2, -2};
    const int *early[2] = {e0, d1};
    ok(gpt_pp_replay(2, 2, early, 1, 1, &r) < 0, "a backward before its forward is reported");
    gpt_pp_sim_free(&r);
    return done_testing();
}
