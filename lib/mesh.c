/* mesh.c: mesh coordinates and sub-communicators (mesh.h). */
#include "mesh.h"

#include <string.h>

int gpt_mesh_rank_of(const gpt_mesh *m, int dp_rank, int tp_rank, int pp_rank)
{
    return tp_rank + m->tp * (dp_rank + m->dp * pp_rank);
}

int gpt_mesh_check(int n, int *dp_io, int tp, int pp, int ep, gpt_err *err)
{
    int dp = *dp_io;
    if (tp < 1 || pp < 1 || ep < 1 || dp < 0)
        return gpt_errf(err, "mesh: --tp %d --pp %d --ep %d --dp %d: sizes must be >= 1", tp, pp, ep, dp);
    if (dp == 0) {
        if (n % (tp * pp))
            return gpt_errf(err, "mesh: %d ranks do not divide into --tp %d x --pp %d; launch a multiple of %d ranks", n,
                            tp, pp, tp * pp);
        dp = n / (tp * pp);
    }
    if ((long)dp * tp * pp != n)
        return gpt_errf(err, "mesh: --dp %d x --tp %d x --pp %d = %ld ranks, but %d were launched (mpirun -np %ld)", dp,
                        tp, pp, (long)dp * tp * pp, n, (long)dp * tp * pp);
    if (dp % ep)
        return gpt_errf(err, "mesh: --ep %d must divide the data-parallel size %d (experts are sharded over dp ranks)",
                        ep, dp);
    *dp_io = dp;
    return 0;
}

int gpt_mesh_init(gpt_mesh *m, gpt_comm *world, int dp, int tp, int pp, int ep, gpt_err *err)
{
    memset(m, 0, sizeof *m);
    int n = world->size;
    if (gpt_mesh_check(n, &dp, tp, pp, ep, err) < 0) return -1;
    m->world = world;
    m->dp = dp, m->tp = tp, m->pp = pp, m->ep = ep;
    m->rank = world->rank, m->size = n;
    m->tp_rank = m->rank % tp;
    m->dp_rank = m->rank / tp % dp;
    m->pp_rank = m->rank / (tp * dp);
    m->ep_rank = m->dp_rank % ep;
    int eg = m->dp_rank / ep; /* expert group within the dp ranks */
    /* Each split is collective over the world, in the same order on every rank. The key is the
     * coordinate along the group's axis, so the sub-rank equals that coordinate. */
    int pos_dp_pp = m->dp_rank + dp * m->pp_rank, pos_tp_pp = m->tp_rank + tp * m->pp_rank;
    int pos_tp_dp = m->tp_rank + tp * m->dp_rank;
    if (!(m->tp_comm = world->split(world, pos_dp_pp, m->tp_rank, err)) ||
        !(m->dp_comm = world->split(world, pos_tp_pp, m->dp_rank, err)) ||
        !(m->pp_comm = world->split(world, pos_tp_dp, m->pp_rank, err)) ||
        !(m->ep_comm = world->split(world, pos_tp_pp * (dp / ep) + eg, m->ep_rank, err)) ||
        !(m->edp_comm = world->split(world, pos_tp_pp * ep + m->ep_rank, eg, err))) {
        gpt_mesh_free(m);
        return gpt_err_prefix(err, "mesh: creating sub-communicators"), -1;
    }
    return 0;
}

void gpt_mesh_free(gpt_mesh *m)
{
    gpt_comm_free(m->edp_comm);
    gpt_comm_free(m->ep_comm);
    gpt_comm_free(m->pp_comm);
    gpt_comm_free(m->dp_comm);
    gpt_comm_free(m->tp_comm);
    memset(m, 0, sizeof *m);
}

void gpt_mesh_print(const gpt_mesh *m, FILE *f)
{
    fprintf(f, "rank %d/%d: dp %d/%d tp %d/%d pp %d/%d ep %d/%d\n", m->rank, m->size, m->dp_rank, m->dp, m->tp_rank,
            m->tp, m->pp_rank, m->pp, m->ep_rank, m->ep);
}

int gpt_mesh_opts_read(const gpt_ynode *map, int *dp, int *tp, int *pp, int *ep, gpt_err *err)
{
    static const char *const keys[] = {"dp", "tp", "pp", "ep", NULL};
    if (!map) return 0;
    if (gpt_ymap_check_keys(map, "parallel", keys, err) < 0) return -1;
    int *out[4] = {dp, tp, pp, ep};
    for (int i = 0; i < 4; i++) {
        int64_t v;
        int r = gpt_yget_int(map, "parallel", keys[i], i == 0 ? 0 : 1, 1 << 20, &v, err);
        if (r < 0) return -1;
        if (r > 0) *out[i] = (int)v;
    }
    return 0;
}
