/* pp-sched: a pipeline schedule's op order and its idealized replay (lib/pp_schedule.h), for
 * t/pipeline-stats.t and scripts/bench-parallel.
 *   pp-sched order gpipe|1f1b PP STAGE M     -> "F0 F1 B1 B0" (the ops gpt_pp_run should run)
 *   pp-sched sim gpipe|1f1b PP M TF TB       -> "makespan X bubble Y idle I0 I1 ... inflight K0 K1 ..." */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_schedule.h"

static int sched_of(const char *s, gpt_pp_schedule *out)
{
    if (strcmp(s, "gpipe") == 0) *out = GPT_PP_GPIPE;
    else if (strcmp(s, "1f1b") == 0) *out = GPT_PP_1F1B;
    else return -1;
    return 0;
}

static int num(const char *s, int lo, int hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < lo || v > hi ? -1 : (int)v;
}

int main(int argc, char **argv)
{
    gpt_pp_schedule s;
    if (argc == 6 && strcmp(argv[1], "order") == 0 && sched_of(argv[2], &s) == 0) {
        int pp = num(argv[3], 1, 4096), stage = num(argv[4], 0, 4095), m = num(argv[5], 1, 1 << 20);
        if (pp < 0 || stage < 0 || m < 0) goto usage;
        int *ops = malloc(2 * (size_t)m * sizeof *ops);
        int n = ops ? gpt_pp_order(s, pp, stage, m, ops) : -1;
        if (n < 0) {
            free(ops);
            goto usage;
        }
        for (int i = 0; i < n; i++) printf("%s%c%d", i ? " " : "", ops[i] > 0 ? 'F' : 'B', abs(ops[i]) - 1);
        putchar('\n');
        free(ops);
        return 0;
    }
    if (argc == 7 && strcmp(argv[1], "sim") == 0 && sched_of(argv[2], &s) == 0) {
        int pp = num(argv[3], 1, 4096), m = num(argv[4], 1, 1 << 20);
        double tf = atof(argv[5]), tb = atof(argv[6]);
        if (pp < 0 || m < 0 || !(tf > 0) || !(tb > 0)) goto usage;
        gpt_pp_sim r;
        if (gpt_pp_simulate(s, pp, m, tf, tb, &r) < 0) {
            fprintf(stderr, "pp-sched: the schedule deadlocks\n");
            gpt_pp_sim_free(&r);
            return 1;
        }
        printf("makespan %g bubble %.6f idle", r.makespan, r.bubble);
        for (int i = 0; i < pp; i++) printf(" %g", r.idle[i]);
        printf(" inflight");
        for (int i = 0; i < pp; i++) printf(" %d", r.max_in_flight[i]);
        putchar('\n');
        gpt_pp_sim_free(&r);
        return 0;
    }
usage:
    fprintf(stderr, "usage: pp-sched order gpipe|1f1b PP STAGE M\n       pp-sched sim gpipe|1f1b PP M TF TB\n");
    return 2;
}
