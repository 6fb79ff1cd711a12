/* pp_schedule.c: schedule op sequences and their idealized replay (pp_schedule.h). The orders
 * mirror lib/pipeline.c's gpipe() and one_f_one_b(); t/pipeline-stats.t checks a real run's
 * recorded order against them. */
#include "pp_schedule.h"

#include <stdlib.h>
#include <string.h>

int gpt_pp_order(gpt_pp_schedule s, int pp, int stage, int m, int *ops)
{
    if (pp < 1 || stage < 0 || stage >= pp || m < 1) return -1;
    int k = 0;
    if (s == GPT_PP_1F1B) {
        int warm = pp - stage - 1 < m ? pp - stage - 1 : m, rem = m - warm;
        for (int i = 0; i < warm; i++) ops[k++] = i + 1;
        for (int i = 0; i < rem; i++) ops[k++] = warm + i + 1, ops[k++] = -(i + 1);
        for (int i = rem; i < m; i++) ops[k++] = -(i + 1);
    } else {
        for (int i = 0; i < m; i++) ops[k++] = i + 1;
        for (int i = m - 1; i >= 0; i--) ops[k++] = -(i + 1);
    }
    return k;
}

void gpt_pp_sim_free(gpt_pp_sim *r)
{
    free(r->idle);
    free(r->max_in_flight);
    memset(r, 0, sizeof *r);
}

int gpt_pp_replay(int pp, int m, const int *const *ops, double tf, double tb, gpt_pp_sim *r)
{
    memset(r, 0, sizeof *r);
    if (pp < 1 || m < 1) return -1;
    r->idle = gpt_xcalloc((size_t)pp, sizeof *r->idle);
    r->max_in_flight = gpt_xcalloc((size_t)pp, sizeof *r->max_in_flight);
    size_t nm = (size_t)pp * (size_t)m;
    /* finish times, -1: not run yet */
    double *ff = gpt_xmalloc(nm * sizeof *ff), *fb = gpt_xmalloc(nm * sizeof *fb);
    double *free_at = gpt_xcalloc((size_t)pp, sizeof *free_at), *busy = gpt_xcalloc((size_t)pp, sizeof *busy);
    int *next = gpt_xcalloc((size_t)pp, sizeof *next), *fl = gpt_xcalloc((size_t)pp, sizeof *fl);
    for (size_t i = 0; i < nm; i++) ff[i] = fb[i] = -1;
    int rc = 0, left = 2 * pp * m;
    while (left > 0) {
        int progress = 0;
        for (int s = 0; s < pp; s++) {
            while (next[s] < 2 * m) {
                int op = ops[s][next[s]], i = op > 0 ? op - 1 : -op - 1;
                if (op == 0 || i >= m) goto bad;
                double *mine = op > 0 ? &ff[(size_t)s * m + i] : &fb[(size_t)s * m + i];
                if (*mine >= 0) goto bad; /* repeated */
                double ready;
                if (op > 0) {
                    ready = s == 0 ? 0 : ff[(size_t)(s - 1) * m + i];
                } else {
                    if (ff[(size_t)s * m + i] < 0) goto bad; /* backward before its own forward */
                    ready = s == pp - 1 ? ff[(size_t)s * m + i] : fb[(size_t)(s + 1) * m + i];
                }
                if (ready < 0) break; /* its input does not exist yet: the stage waits */
                double t = op > 0 ? tf : tb, start = ready > free_at[s] ? ready : free_at[s];
                *mine = free_at[s] = start + t;
                busy[s] += t;
                fl[s] += op > 0 ? 1 : -1;
                if (fl[s] > r->max_in_flight[s]) r->max_in_flight[s] = fl[s];
                next[s]++, left--, progress = 1;
            }
        }
        if (!progress) goto bad; /* every stage waits on another: deadlock */
    }
    for (int s = 0; s < pp; s++)
        if (free_at[s] > r->makespan) r->makespan = free_at[s];
    for (int s = 0; s < pp; s++) {
        r->idle[s] = r->makespan - busy[s];
        r->bubble += r->makespan > 0 ? r->idle[s] / r->makespan / pp : 0;
    }
    goto done;
bad:
    rc = -1;
done:
    free(ff), free(fb), free(free_at), free(busy), free(next), free(fl);
    return rc;
}

int gpt_pp_simulate(gpt_pp_schedule s, int pp, int m, double tf, double tb, gpt_pp_sim *r)
{
    if (pp < 1 || m < 1) {
        memset(r, 0, sizeof *r);
        return -1;
    }
    int **ops = gpt_xmalloc((size_t)pp * sizeof *ops);
    for (int st = 0; st < pp; st++) {
        ops[st] = gpt_xmalloc(2 * (size_t)m * sizeof **ops);
        gpt_pp_order(s, pp, st, m, ops[st]);
    }
    int rc = gpt_pp_replay(pp, m, (const int *const *)ops, tf, tb, r);
    for (int st = 0; st < pp; st++) free(ops[st]);
    free(ops);
    return rc;
}
