/* model_tp.c: tensor-parallel model construction, the full <-> piece conversions, and the
 * vocabulary-parallel cross-entropy (model_tp.h). */
#include "model_tp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shard_layout.h"

int gpt_model_tp_config(const gpt_model_config *c, int tp, gpt_model_config *out, gpt_err *err)
{
    *out = *c;
    if (tp <= 1) return 0;
    if (c->n_heads % tp || c->n_kv_heads % tp)
        return gpt_errf(err, "--tp %d must divide n_heads (%d) and n_kv_heads (%d) (attention is split by whole heads)",
                        tp, c->n_heads, c->n_kv_heads);
    if (c->padded_vocab_size % tp)
        return gpt_errf(err, "--tp %d must divide padded_vocab_size (%d); set model.padded_vocab_size to a multiple",
                        tp, c->padded_vocab_size);
    if (c->mlp == GPT_MLP_MOE ? c->d_expert % tp : c->d_ff % tp)
        return gpt_errf(err, "--tp %d must divide %s (%d)", tp, c->mlp == GPT_MLP_MOE ? "d_expert" : "d_ff",
                        c->mlp == GPT_MLP_MOE ? c->d_expert : c->d_ff);
    out->n_heads /= tp;
    out->n_kv_heads /= tp;
    out->padded_vocab_size /= tp;
    if (c->mlp == GPT_MLP_MOE)
        out->d_expert /= tp;
    else
        out->d_ff /= tp;
    return 0;
}

gpt_model *gpt_model_create_tp(const gpt_model_config *full, gpt_backend *be, gpt_comm *tp, gpt_err *err)
{
    if (!tp || tp->size == 1) return gpt_model_create(full, be, err);
    gpt_model_config local;
    if (gpt_model_tp_config(full, tp->size, &local, err) < 0) return NULL;
    gpt_model *m = gpt_model_create(&local, be, err);
    if (m) gpt_model_tp_attach_(m, tp, full);
    return m;
}

/* Walks the full and the local table together: the builder emits the same tensors in the same order. */
typedef void (*piece_fn)(const gpt_layout_rule *r, const gpt_tensor *ft, const gpt_tensor *lt, void *arg);

static void each_piece(const gpt_model_config *full, int tp, piece_fn fn, void *arg)
{
    gpt_model_config local;
    gpt_param_table ft, lt;
    gpt_err err = {0};
    /* callers validated the config when they built the model: failures here are bugs */
    if (gpt_model_tp_config(full, tp, &local, &err) < 0 || gpt_params_build(full, &ft, &err) < 0) abort();
    if (gpt_params_build(&local, &lt, &err) < 0 || lt.n != ft.n) abort();
    for (int i = 0; i < ft.n; i++) {
        uint64_t shape[4];
        for (int d = 0; d < ft.t[i].ndim; d++) shape[d] = (uint64_t)ft.t[i].shape[d];
        gpt_layout_rule r;
        if (gpt_layout_rule_for(full, ft.t[i].name, ft.t[i].ndim, shape, tp, 1, 1, &r, &err) < 0) abort();
        fn(&r, &ft.t[i], &lt.t[i], arg);
    }
    gpt_params_free(&ft);
    gpt_params_free(&lt);
}

typedef struct {
    int tp, tpr, to_full, replicated_too;
    float *full, *local;
} copy_arg;

static void copy_piece(const gpt_layout_rule *r, const gpt_tensor *ft, const gpt_tensor *lt, void *p)
{
    copy_arg *a = p;
    if (!a->replicated_too && r->tp_dim < 0) return;
    uint64_t shape[4];
    for (int d = 0; d < ft->ndim; d++) shape[d] = (uint64_t)ft->shape[d];
    gpt_layout_copy(r, ft->ndim, shape, sizeof(float), a->tp, a->tpr, 1, 0, (unsigned char *)(a->full + ft->offset),
                    (unsigned char *)(a->local + lt->offset), a->to_full);
}

void gpt_tp_scatter(const gpt_model_config *full, int tp, int tpr, const float *fullbuf, float *localbuf)
{
    copy_arg a = {tp, tpr, 0, 1, (float *)fullbuf, localbuf};
    each_piece(full, tp, copy_piece, &a);
}

int gpt_tp_gather(const gpt_model_config *full, gpt_comm *tp, const float *localbuf, float *fullbuf, gpt_err *err)
{
    gpt_model_config local;
    gpt_param_table lt;
    if (gpt_model_tp_config(full, tp->size, &local, err) < 0 || gpt_params_build(&local, &lt, err) < 0) return -1;
    size_t n = lt.total;
    gpt_params_free(&lt);
    float *all = gpt_xmalloc((size_t)tp->size * n * sizeof *all);
    if (tp->allgather(tp, localbuf, all, n, err) < 0) {
        free(all);
        return -1;
    }
    for (int r = 0; r < tp->size; r++) {
        /* replicated tensors: rank 0's copy (they are equal on every rank) */
        copy_arg a = {tp->size, r, 1, r == 0, fullbuf, all + (size_t)r * n};
        each_piece(full, tp->size, copy_piece, &a);
    }
    free(all);
    return 0;
}

typedef struct {
    unsigned char *flags;
    int i;
} flag_arg;

static void flag_piece(const gpt_layout_rule *r, const gpt_tensor *ft, const gpt_tensor *lt, void *p)
{
    (void)ft, (void)lt;
    flag_arg *a = p;
    a->flags[a->i++] = r->tp_dim >= 0;
}

unsigned char *gpt_tp_split_flags(const gpt_model_config *full, int tp)
{
    gpt_param_table ft;
    gpt_err err = {0};
    if (gpt_params_build(full, &ft, &err) < 0) abort();
    flag_arg a = {gpt_xcalloc((size_t)ft.n, 1), 0};
    gpt_params_free(&ft);
    if (tp > 1) each_piece(full, tp, flag_piece, &a);
    return a.flags;
}

void gpt_model_tp_init_params(gpt_model *m, uint64_t seed)
{
    gpt_comm *tp = gpt_model_tp_comm(m);
    if (!tp) {
        gpt_model_init_params(m, seed);
        return;
    }
    const gpt_model_config *full = gpt_model_full_config(m);
    gpt_param_table ft;
    gpt_err err = {0};
    if (gpt_params_build(full, &ft, &err) < 0) abort();
    float *fh = gpt_xmalloc(ft.total * sizeof *fh);
    gpt_params_init(full, &ft, seed, fh);
    size_t n = gpt_model_params(m)->total;
    float *lh = gpt_xcalloc(n, sizeof *lh);
    gpt_tp_scatter(full, tp->size, tp->rank, fh, lh);
    gpt_backend *be = gpt_model_backend(m);
    be->to_device(be, gpt_model_param_data(m), lh, n * sizeof *lh);
    free(lh);
    free(fh);
    gpt_params_free(&ft);
}

/* ---- vocabulary-parallel cross-entropy ---- */

int gpt_tp_xent(gpt_comm *tp, const float *logits, const int *targets, int N, int Vl, int v0, int V, float smoothing,
                float *losses, float *nll, int *correct, float *lse, gpt_err *err)
{
    int nv = V - v0 < 0 ? 0 : V - v0 > Vl ? Vl : V - v0; /* real columns held here */
    int P = tp->size;
    float *mine = gpt_xmalloc((size_t)2 * N * sizeof *mine), *all = gpt_xmalloc((size_t)2 * N * P * sizeof *all);
    double *sums = gpt_xmalloc((size_t)3 * N * sizeof *sums);
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vl;
        float mx = -INFINITY;
        int am = -1;
        for (int v = 0; v < nv; v++)
            if (x[v] > mx) mx = x[v], am = v;
        mine[n] = mx;
        mine[N + n] = am < 0 ? -1.0f : (float)(v0 + am); /* exact: vocabularies are < 2^24 */
    }
    int rc = tp->allgather(tp, mine, all, (size_t)2 * N, err);
    for (int n = 0; n < N && rc == 0; n++) {
        /* global max, first (lowest-index) rank on ties: ranks hold increasing vocabulary ranges */
        float mx = -INFINITY;
        int am = -1;
        for (int r = 0; r < P; r++) {
            const float *g = all + (size_t)r * 2 * N;
            if (g[N + n] >= 0 && (am < 0 || g[n] > mx)) mx = g[n], am = (int)g[N + n];
        }
        const float *x = logits + (size_t)n * Vl;
        double s = 0, zs = 0, zt = 0;
        for (int v = 0; v < nv; v++) {
            s += exp((double)(x[v] - mx));
            zs += x[v];
        }
        int t = targets[n];
        if (t >= v0 && t < v0 + nv) zt = x[t - v0];
        sums[3 * n] = s, sums[3 * n + 1] = zs, sums[3 * n + 2] = zt;
        lse[n] = mx; /* the max until the reduction below */
        correct[n] = am;
    }
    if (rc == 0) rc = tp->allreduce_sum_f64(tp, sums, (size_t)3 * N, err);
    for (int n = 0; n < N && rc == 0; n++) {
        double l = lse[n] + log(sums[3 * n]);
        lse[n] = (float)l;
        int t = targets[n];
        if (t < 0) {
            losses[n] = nll[n] = 0;
            correct[n] = 0;
            continue;
        }
        double nl = l - sums[3 * n + 2], uni = l - sums[3 * n + 1] / V;
        nll[n] = (float)nl;
        losses[n] = (float)((1.0 - smoothing) * nl + smoothing * uni);
        correct[n] = correct[n] == t;
    }
    free(mine);
    free(all);
    free(sums);
    return rc;
}

void gpt_tp_xent_bwd(float *dlogits, const float *logits, const int *targets, const float *lse, int N, int Vl, int v0,
                     int V, float smoothing, float dscale)
{
    int nv = V - v0 < 0 ? 0 : V - v0 > Vl ? Vl : V - v0;
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vl;
        float *d = dlogits + (size_t)n * Vl;
        int t = targets[n];
        if (t < 0) {
            memset(d, 0, (size_t)Vl * sizeof *d);
            continue;
        }
        for (int v = 0; v < nv; v++) d[v] = dscale * (expf(x[v] - lse[n]) - smoothing / V);
        for (int v = nv; v < Vl; v++) d[v] = 0;
        if (t >= v0 && t < v0 + nv) d[t - v0] -= dscale * (1.0f - smoothing);
    }
}

gpt_model *gpt_model_tp_from(gpt_model *whole, gpt_comm *tp, gpt_err *err)
{
    const gpt_model_config *full = gpt_model_config_of(whole);
    gpt_backend *be = gpt_model_backend(whole);
    gpt_model *m = gpt_model_create_tp(full, be, tp, err);
    if (!m) return NULL;
    size_t nf = gpt_model_params(whole)->total, nl = gpt_model_params(m)->total;
    float *fh = gpt_xmalloc(nf * sizeof *fh), *lh = gpt_xcalloc(nl, sizeof *lh);
    be->to_host(be, fh, gpt_model_param_data(whole), nf * sizeof *fh);
    gpt_tp_scatter(full, tp->size, tp->rank, fh, lh);
    be->to_device(be, gpt_model_param_data(m), lh, nl * sizeof *lh);
    free(fh), free(lh);
    return m;
}
