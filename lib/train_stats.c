/* train_stats.c: gpt-train --log-parallel lines (train_stats.h). */
#include "train_stats.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "comm_count.h"
#include "pipeline.h"

/* Room for the op order of steps with up to this many micro-batches (longer ones: truncated). */
enum { ORDER_CAP = 256 };

static void comms(const gpt_trainer *tr, gpt_comm *c[6])
{
    c[0] = tr->comm, c[1] = tr->mesh.dp_comm, c[2] = tr->mesh.tp_comm;
    c[3] = tr->mesh.pp_comm, c[4] = tr->mesh.ep_comm, c[5] = tr->mesh.edp_comm;
}

int gpt_trainer_stats_begin(gpt_trainer *tr, gpt_err *err)
{
    if (!tr->plog) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s.rank%d.jsonl", tr->o.parallel_log, tr->comm->rank);
        if (n < 0 || (size_t)n >= sizeof path)
            return gpt_errf(err, "--log-parallel: the prefix '%s' is too long", tr->o.parallel_log);
        if (!(tr->plog = fopen(path, "a")))
            return gpt_errf(err, "--log-parallel: cannot open %s: %s", path, strerror(errno));
    }
    if (!tr->pp_stats) {
        tr->pp_stats = gpt_xcalloc(1, sizeof *tr->pp_stats);
        tr->pp_stats->order = gpt_xmalloc(ORDER_CAP * sizeof *tr->pp_stats->order);
        tr->pp_stats->order_cap = ORDER_CAP;
    }
    gpt_comm *c[6];
    comms(tr, c);
    for (int i = 0; i < 6; i++) gpt_comm_counts_reset(c[i]);
    return 0;
}

int gpt_trainer_stats_log(gpt_trainer *tr, double step_s, gpt_err *err)
{
    FILE *f = tr->plog;
    const gpt_mesh *m = &tr->mesh;
    struct rusage ru;
    long rss = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
    fprintf(f, "{\"step\":%lld,\"rank\":%d,\"dp\":%d,\"tp\":%d,\"pp\":%d,\"ep\":%d,\"step_s\":%.6f,\"maxrss_kib\":%ld",
            (long long)tr->step, m->rank, m->dp_rank, m->tp_rank, m->pp_rank, m->ep_rank, step_s, rss);
    if (m->pp > 1 && tr->pp_stats) {
        const gpt_pp_stats *s = tr->pp_stats;
        fprintf(f,
                ",\"pipe\":{\"schedule\":\"%s\",\"micro\":%d,\"compute_s\":%.6f,\"wait_s\":%.6f,\"n_fwd\":%d,"
                "\"n_bwd\":%d,\"recomputed\":%d,\"max_in_flight\":%d,\"order\":\"",
                tr->o.pp_schedule == GPT_PP_1F1B ? "1f1b" : "gpipe", tr->o.grad_accum, s->t_compute, s->t_wait,
                s->n_fwd, s->n_bwd, s->recomputed, s->max_in_flight);
        int n = s->order_len < s->order_cap ? s->order_len : s->order_cap;
        for (int i = 0; i < n; i++)
            fprintf(f, "%s%c%d", i ? " " : "", s->order[i] > 0 ? 'F' : 'B', abs(s->order[i]) - 1);
        fprintf(f, "%s\"}", n < s->order_len ? " ..." : "");
    }
    static const char *const cname[6] = {"world", "dp", "tp", "pp", "ep", "edp"};
    gpt_comm *c[6];
    comms(tr, c);
    fputs(",\"comm\":{", f);
    for (int i = 0; i < 6; i++) {
        gpt_comm_counts n;
        gpt_comm_counts_get(c[i], &n);
        fprintf(f, "%s\"%s\":{", i ? "," : "", cname[i]);
        int any = 0;
        for (int k = 0; k < GPT_CC_N; k++)
            if (n.calls[k])
                fprintf(f, "%s\"%s\":[%llu,%llu]", any++ ? "," : "", gpt_comm_count_name(k),
                        (unsigned long long)n.calls[k], (unsigned long long)n.bytes[k]);
        fputc('}', f);
    }
    fputs("}}\n", f);
    if (fflush(f) != 0 || ferror(f))
        return gpt_errf(err, "--log-parallel: writing %s.rank%d.jsonl failed: %s", tr->o.parallel_log, m->rank,
                        strerror(errno));
    return 0;
}

void gpt_trainer_stats_free(gpt_trainer *tr)
{
    if (tr->plog) fclose(tr->plog);
    tr->plog = NULL;
    if (tr->pp_stats) free(tr->pp_stats->order);
    free(tr->pp_stats);
    tr->pp_stats = NULL;
}
