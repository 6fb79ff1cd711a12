/* pipeline.c: GPipe and 1F1B schedules (pipeline.h). */
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_pp.h"

typedef struct {
    gpt_model *m;
    gpt_comm *pp;
    int stage, P, B, T, first, last;
    size_t N, xf, xb; /* rows; floats of a forward / backward message */
    const int *tok, *tgt;
    const gpt_forward_opts *fo;
    float **xin;      /* per micro-batch: the saved stage input (non-first stages) */
    float *xout, *dout, *din;
    int resident, in_flight;
    double *sums;
    gpt_pp_stats *st;
    gpt_err *err;
} pl;

enum { TAG_FWD = 1, TAG_BWD = 2 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
/* rc of a blocking send/recv started at t0, its time charged to waiting */
static int waited(pl *p, double t0, int rc)
{
    p->st->t_wait += now() - t0;
    return rc;
}
static void record(pl *p, int op)
{
    if (p->st->order && p->st->order_len < p->st->order_cap) p->st->order[p->st->order_len] = op;
    p->st->order_len++;
}

static int recv_fwd(pl *p, int i)
{
    if (p->first) return 0;
    p->xin[i] = gpt_xmalloc(p->xf * sizeof(float));
    if (++p->in_flight > p->st->max_in_flight) p->st->max_in_flight = p->in_flight;
    double t0 = now();
    return waited(p, t0, p->pp->recv(p->pp, p->xin[i], p->xf * sizeof(float), p->stage - 1, TAG_FWD, p->err));
}
static int send_fwd(pl *p)
{
    if (p->last) return 0;
    double t0 = now();
    return waited(p, t0, p->pp->send(p->pp, p->xout, p->xf * sizeof(float), p->stage + 1, TAG_FWD, p->err));
}
static int recv_bwd(pl *p)
{
    if (p->last) return 0;
    double t0 = now();
    return waited(p, t0, p->pp->recv(p->pp, p->dout, p->xb * sizeof(float), p->stage + 1, TAG_BWD, p->err));
}
static int send_bwd(pl *p)
{
    if (p->first) return 0;
    double t0 = now();
    return waited(p, t0, p->pp->send(p->pp, p->din, p->xb * sizeof(float), p->stage - 1, TAG_BWD, p->err));
}
/* with the next stage: it receives our output before sending its gradient */
static int send_fwd_recv_bwd(pl *p) { return send_fwd(p) < 0 ? -1 : recv_bwd(p); }
/* with the previous stage: the mirror of its send_fwd_recv_bwd */
static int send_bwd_recv_fwd(pl *p, int i) { return recv_fwd(p, i) < 0 ? -1 : send_bwd(p); }

static int fwd(pl *p, int i, int count)
{
    gpt_loss L;
    size_t o = (size_t)i * p->N;
    double t0 = now();
    int rc = gpt_model_forward_stage(p->m, p->tok + o, p->tgt + o, p->B, p->T, p->fo, p->first ? NULL : p->xin[i],
                                     p->last ? NULL : p->xout, &L, p->err);
    p->st->t_compute += now() - t0;
    if (rc < 0) return -1;
    p->resident = i;
    if (count) p->st->n_fwd++, record(p, i + 1);
    if (p->last && count) {
        p->sums[0] += L.ce * (double)L.n_scored;
        p->sums[1] += L.nll * (double)L.n_scored;
        p->sums[2] += (double)L.n_correct;
        p->sums[3] += (double)L.n_scored;
    }
    return 0;
}

/* The gradient from the next stage is in dout. */
static int bwd(pl *p, int i)
{
    if (p->resident != i) {
        if (fwd(p, i, 0) < 0) return -1;
        p->st->recomputed++;
    }
    double t0 = now();
    int rc = gpt_model_backward_stage(p->m, p->last ? NULL : p->dout, p->first ? NULL : p->din, p->err);
    p->st->t_compute += now() - t0;
    if (rc < 0) return -1;
    p->st->n_bwd++, record(p, -(i + 1));
    p->resident = -1;
    if (!p->first) {
        free(p->xin[i]);
        p->xin[i] = NULL;
        p->in_flight--;
    }
    return 0;
}

static int gpipe(pl *p, int m, int backward)
{
    for (int i = 0; i < m; i++)
        if (recv_fwd(p, i) < 0 || fwd(p, i, 1) < 0 || send_fwd(p) < 0) return -1;
    if (!backward) return 0;
    for (int i = m - 1; i >= 0; i--)
        if (recv_bwd(p) < 0 || bwd(p, i) < 0 || send_bwd(p) < 0) return -1;
    return 0;
}

static int one_f_one_b(pl *p, int m)
{
    int warm = p->P - p->stage - 1 < m ? p->P - p->stage - 1 : m, rem = m - warm;
    for (int i = 0; i < warm; i++)
        if (recv_fwd(p, i) < 0 || fwd(p, i, 1) < 0 || send_fwd(p) < 0) return -1;
    if (rem > 0 && recv_fwd(p, warm) < 0) return -1;
    for (int k = 0; k < rem; k++) {
        if (fwd(p, warm + k, 1) < 0 || send_fwd_recv_bwd(p) < 0 || bwd(p, k) < 0) return -1;
        if (k == rem - 1 ? send_bwd(p) < 0 : send_bwd_recv_fwd(p, warm + k + 1) < 0) return -1;
    }
    for (int k = rem; k < m; k++)
        if (recv_bwd(p) < 0 || bwd(p, k) < 0 || send_bwd(p) < 0) return -1;
    return 0;
}

int gpt_pp_run(gpt_model *m, gpt_comm *pp, gpt_pp_schedule sched, int n_micro, const int *tok, const int *tgt, int B,
               int T, const gpt_forward_opts *fo, int backward, double *sums, gpt_pp_stats *stats, gpt_err *err)
{
    gpt_pp_stats local = {0};
    pl p = {0};
    p.m = m, p.pp = pp, p.B = B, p.T = T, p.tok = tok, p.tgt = tgt, p.fo = fo, p.sums = sums, p.err = err;
    p.st = stats ? stats : &local;
    int *order = p.st->order, order_cap = p.st->order_cap;
    memset(p.st, 0, sizeof *p.st);
    p.st->order = order, p.st->order_cap = order_cap;
    p.P = gpt_model_pp_info(m, &p.stage, NULL, NULL);
    if (p.P != pp->size || p.stage != pp->rank)
        return gpt_errf(err, "pipeline: the model is stage %d of %d but the pp communicator has rank %d of %d",
                        p.stage, p.P, pp->rank, pp->size);
    p.first = p.stage == 0, p.last = p.stage == p.P - 1;
    p.N = (size_t)B * T;
    size_t NC = p.N * (size_t)gpt_model_config_of(m)->d_model;
    p.xf = NC + gpt_model_pp_fwd_extra(m);
    p.xb = NC + gpt_model_pp_bwd_extra(m);
    p.resident = -1;
    p.xin = gpt_xcalloc((size_t)n_micro, sizeof *p.xin);
    p.xout = gpt_xmalloc(p.xf * sizeof(float));
    p.dout = gpt_xmalloc(p.xb * sizeof(float));
    p.din = gpt_xmalloc(p.xb * sizeof(float));
    int rc = backward && sched == GPT_PP_1F1B ? one_f_one_b(&p, n_micro) : gpipe(&p, n_micro, backward);
    for (int i = 0; i < n_micro; i++) free(p.xin[i]);
    free(p.xin), free(p.xout), free(p.dout), free(p.din);
    return rc;
}
