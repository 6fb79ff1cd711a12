/* model_ep.c: expert-parallel model construction, layout conversions, and the token exchange of
 * each MoE layer (model_ep.h). */
#include "model_ep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_pp.h"
#include "shard_layout.h"

/* What one layer's forward keeps for its backward, on the owner side. */
typedef struct {
    int M, cap;            /* rows received (this rank's experts), allocated rows */
    int *rcnt;             /* (ep * El): rows from sender s for local expert j, at s * El + j */
    float *xe, *gu, *h;    /* (cap, C), (cap, 2F), (cap, F): the experts' inputs and activations */
} ep_layer;

struct gpt_ep_state {
    gpt_comm *comm; /* the expert group (not owned) */
    gpt_backend *be;
    int ep, rank, E, El, C, F;
    float alpha, limit;
    size_t n_rep;
    ep_layer *layer;
    int L;
    /* scratch shared by the layers: backend rows (scap) and host staging (hcap floats each) */
    int scap;
    float *ye, *dy, *dh, *dgu, *dx;
    size_t hcap;
    float *hsend, *hrecv;
    size_t *sc, *sd, *rc, *rd; /* (ep) each: counts and displacements in floats */
    int *srows, *sdisp;        /* (ep): rows to each owner and where they start in the sorted rows */
    int *rrows, *rdisp;        /* (ep): rows from each sender, where they start in the received rows */
    int *eoff;                 /* (El + 1): the local experts' row ranges in the grouped rows */
    float *fcnt;               /* (4 ep El) count exchange */
};

/* A lost peer leaves the others waiting forever: every failure ends every rank. */
static void must(gpt_ep_state *s, int rc, const gpt_err *err)
{
    if (rc == 0) return;
    fprintf(stderr, "expert parallel all-to-all: %s\n", err->msg);
    s->comm->abort(s->comm, 1);
}

static int is_expert(const gpt_tensor *t) { return t->expert_dim; }

/* Whether pipeline stage `stage` of pp holds the full model's tensor t (shard_layout.h's rule:
 * what `gpt-shard split --pp` gives the stage). */
static int stage_holds(const gpt_model_config *cfg, const gpt_tensor *t, int pp, int stage, gpt_err *err)
{
    if (pp <= 1) return 1;
    uint64_t shape[4];
    for (int d = 0; d < t->ndim; d++) shape[d] = (uint64_t)t->shape[d];
    gpt_layout_rule r;
    if (gpt_layout_rule_for(cfg, t->name, t->ndim, shape, 1, pp, 1, &r, err) < 0) return -1;
    return stage == r.stage_first || stage == r.stage_last;
}

/* The full table (the tensors stage `stage` of pp holds) with its expert tensors cut to E / ep,
 * moved after the replicated ones. */
static int local_table(const gpt_model_config *cfg, int ep, int pp, int stage, gpt_param_table *lt, size_t *n_rep,
                       gpt_err *err)
{
    gpt_param_table ft;
    if (gpt_params_build(cfg, &ft, err) < 0) return -1;
    lt->t = gpt_xcalloc((size_t)ft.n + 1, sizeof *lt->t);
    lt->n = 0;
    size_t off = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < ft.n; i++) {
            gpt_tensor t = ft.t[i];
            if (is_expert(&t) != pass) continue;
            int held = stage_holds(cfg, &t, pp, stage, err);
            if (held < 0) {
                free(lt->t);
                gpt_params_free(&ft);
                return gpt_err_prefix(err, "pipeline layout of tensor %s", t.name);
            }
            if (!held) continue;
            if (pass) {
                t.shape[0] /= ep;
                t.numel /= (size_t)ep;
            }
            t.offset = off;
            off += t.numel;
            lt->t[lt->n++] = t;
        }
        if (!pass) *n_rep = off;
    }
    lt->total = off;
    gpt_params_free(&ft);
    return 0;
}

gpt_model *gpt_model_create_ep(const gpt_model_config *cfg, gpt_backend *be, gpt_comm *ep, gpt_err *err)
{
    return gpt_model_create_ep_pp(cfg, be, ep, 1, 0, err);
}

gpt_model *gpt_model_create_ep_pp(const gpt_model_config *cfg, gpt_backend *be, gpt_comm *ep, int pp, int stage,
                                  gpt_err *err)
{
    if (!ep || ep->size == 1) return gpt_model_create_pp(cfg, be, NULL, pp, stage, err);
    int L = cfg->n_layers;
    if (pp < 1 || pp > L) return gpt_errf(err, "--pp %d: more pipeline stages than layers (%d)", pp, L), NULL;
    if (stage < 0 || stage >= pp) return gpt_errf(err, "pipeline stage %d is outside 0..%d", stage, pp - 1), NULL;
    if (cfg->mlp != GPT_MLP_MOE) {
        gpt_errf(err, "--ep %d: expert parallelism needs a mixture-of-experts model (model.mlp.type: moe)", ep->size);
        return NULL;
    }
    if (cfg->activation != GPT_ACT_SWIGLU) {
        gpt_errf(err, "model.mlp: experts need activation swiglu");
        return NULL;
    }
    if (cfg->n_experts % ep->size) {
        gpt_errf(err, "--ep %d must divide the %d experts (each rank holds an equal range)", ep->size, cfg->n_experts);
        return NULL;
    }
    if (!ep->alltoallv) {
        gpt_errf(err, "--ep %d: the %s communicator has no all-to-all; expert parallelism runs over MPI", ep->size,
                 ep->name);
        return NULL;
    }
    gpt_param_table lt;
    size_t n_rep = 0;
    if (local_table(cfg, ep->size, pp, stage, &lt, &n_rep, err) < 0) return NULL;
    /* The pipeline's constructor takes any table: one stage of one is the whole model. */
    int gpt2 = gpt_params_find(&lt, "transformer.wte.weight") != NULL;
    gpt_model *m = pp > 1 ? gpt_model_pp_create_(cfg, be, &lt, gpt2, pp, stage, (int)((long)stage * L / pp),
                                                 (int)((long)(stage + 1) * L / pp))
                          : gpt_model_pp_create_(cfg, be, &lt, gpt2, 1, 0, 0, 0);
    gpt_ep_state *s = gpt_xcalloc(1, sizeof *s);
    s->comm = ep;
    s->ep = ep->size;
    s->rank = ep->rank;
    s->E = cfg->n_experts;
    s->El = cfg->n_experts / ep->size;
    s->C = cfg->d_model;
    s->F = cfg->d_expert;
    s->alpha = (float)cfg->swiglu_alpha;
    s->limit = (float)cfg->swiglu_limit;
    s->n_rep = n_rep;
    s->L = cfg->n_layers;
    s->layer = gpt_xcalloc((size_t)s->L, sizeof *s->layer);
    for (int l = 0; l < s->L; l++) s->layer[l].rcnt = gpt_xcalloc((size_t)s->ep * s->El, sizeof(int));
    size_t P = (size_t)s->ep;
    s->sc = gpt_xcalloc(P, sizeof *s->sc), s->sd = gpt_xcalloc(P, sizeof *s->sd);
    s->rc = gpt_xcalloc(P, sizeof *s->rc), s->rd = gpt_xcalloc(P, sizeof *s->rd);
    s->srows = gpt_xcalloc(P, sizeof(int)), s->sdisp = gpt_xcalloc(P, sizeof(int));
    s->rrows = gpt_xcalloc(P, sizeof(int)), s->rdisp = gpt_xcalloc(P, sizeof(int));
    s->eoff = gpt_xcalloc((size_t)s->El + 1, sizeof(int));
    s->fcnt = gpt_xcalloc(4 * P * (size_t)s->El, sizeof(float));
    s->be = be;
    gpt_model_ep_attach_(m, s);
    return m;
}

void gpt_ep_state_free_(gpt_ep_state *s)
{
    if (!s) return;
    gpt_backend *be = s->be;
    for (int l = 0; l < s->L; l++) {
        ep_layer *y = &s->layer[l];
        if (y->xe) be->free(be, y->xe), be->free(be, y->gu), be->free(be, y->h);
        free(y->rcnt);
    }
    if (s->ye) be->free(be, s->ye), be->free(be, s->dy), be->free(be, s->dh), be->free(be, s->dgu), be->free(be, s->dx);
    free(s->layer), free(s->hsend), free(s->hrecv), free(s->sc), free(s->sd), free(s->rc), free(s->rd);
    free(s->srows), free(s->sdisp), free(s->rrows), free(s->rdisp), free(s->eoff), free(s->fcnt);
    free(s);
}

gpt_comm *gpt_model_ep_comm(const gpt_model *m)
{
    gpt_ep_state *s = gpt_model_ep_state_(m);
    return s ? s->comm : NULL;
}

size_t gpt_model_ep_replicated(const gpt_model *m)
{
    gpt_ep_state *s = gpt_model_ep_state_(m);
    return s ? s->n_rep : gpt_model_params(m)->total;
}

/* Local <-> full, tensor by tensor (matched by name). The local buffer is given as its replicated
 * part rep and the expert shard ex (rank's experts), so a gathered shard converts in place. A
 * pipeline stage converts the tensors it holds; to the full layout, not the copy of a tensor
 * another stage owns (a tied embedding on the last stage), so a sum over the stages is the model. */
static void convert(const gpt_model *m, float *rep, float *ex, float *full, int rank, int to_full, int experts_only)
{
    const gpt_param_table *lt = gpt_model_params(m);
    gpt_param_table ft;
    gpt_err err = {0};
    if (gpt_params_build(gpt_model_config_of(m), &ft, &err) < 0) abort(); /* built when the model was */
    const gpt_ep_state *s = gpt_model_ep_state_(m);
    unsigned char *shadow = gpt_pp_shadow_flags(m);
    for (int i = 0; i < ft.n; i++) {
        const gpt_tensor *f = &ft.t[i], *t = gpt_params_find(lt, f->name);
        if (!t) {
            if (gpt_model_pp_info(m, NULL, NULL, NULL) > 1) continue; /* another stage's */
            abort();
        }
        if (!is_expert(f) && experts_only) continue;
        if (to_full && shadow[t - lt->t]) continue;
        /* (E, ...) is contiguous in its first axis: the shard is one range of the full tensor */
        float *fp = full + f->offset + (is_expert(f) ? (size_t)rank * t->numel : 0);
        float *lp = is_expert(f) ? ex + (t->offset - s->n_rep) : rep + t->offset;
        if (to_full)
            memcpy(fp, lp, t->numel * sizeof *fp);
        else
            memcpy(lp, fp, t->numel * sizeof *fp);
    }
    free(shadow);
    gpt_params_free(&ft);
}

void gpt_ep_scatter(const gpt_model *m, const float *full, float *local)
{
    const gpt_ep_state *s = gpt_model_ep_state_(m);
    if (!s) {
        memcpy(local, full, gpt_model_params(m)->total * sizeof *local);
        return;
    }
    convert(m, local, local + s->n_rep, (float *)full, s->rank, 0, 0);
}

int gpt_ep_gather(const gpt_model *m, const float *local, float *full, gpt_err *err)
{
    gpt_ep_state *s = gpt_model_ep_state_(m);
    size_t n = gpt_model_params(m)->total;
    if (!s) {
        memcpy(full, local, n * sizeof *full);
        return 0;
    }
    size_t ns = n - s->n_rep;
    float *all = gpt_xmalloc((size_t)s->ep * ns * sizeof *all + sizeof *all);
    int rc = s->comm->allgather(s->comm, local + s->n_rep, all, ns, err);
    /* the replicated tensors are equal on every rank: this rank's copy */
    for (int r = 0; r < s->ep && rc == 0; r++) convert(m, (float *)local, all + (size_t)r * ns, full, r, 1, r > 0);
    free(all);
    return rc;
}

void gpt_model_ep_init_params(gpt_model *m, uint64_t seed)
{
    if (!gpt_model_ep_state_(m)) {
        gpt_model_init_params(m, seed);
        return;
    }
    const gpt_model_config *c = gpt_model_config_of(m);
    gpt_param_table ft;
    gpt_err err = {0};
    if (gpt_params_build(c, &ft, &err) < 0) abort();
    float *fh = gpt_xmalloc(ft.total * sizeof *fh);
    gpt_params_init(c, &ft, seed, fh);
    size_t n = gpt_model_params(m)->total;
    float *lh = gpt_xmalloc(n * sizeof *lh);
    gpt_ep_scatter(m, fh, lh);
    gpt_backend *be = gpt_model_backend(m);
    be->to_device(be, gpt_model_param_data(m), lh, n * sizeof *lh);
    free(lh);
    free(fh);
    gpt_params_free(&ft);
}

/* ---- the token exchange ---- */

static void host_room(gpt_ep_state *s, size_t floats)
{
    if (floats <= s->hcap) return;
    s->hcap = floats;
    free(s->hsend), free(s->hrecv);
    s->hsend = gpt_xmalloc(floats * sizeof(float));
    s->hrecv = gpt_xmalloc(floats * sizeof(float));
}

static void scratch_room(gpt_ep_state *s, int M)
{
    if (M <= s->scap) return;
    gpt_backend *be = s->be;
    size_t r = (size_t)M, C = (size_t)s->C, F = (size_t)s->F;
    if (s->ye) be->free(be, s->ye), be->free(be, s->dy), be->free(be, s->dh), be->free(be, s->dgu), be->free(be, s->dx);
    s->ye = be->alloc(be, r * C * sizeof(float));
    s->dy = be->alloc(be, r * C * sizeof(float));
    s->dh = be->alloc(be, r * F * sizeof(float));
    s->dgu = be->alloc(be, r * 2 * F * sizeof(float));
    s->dx = be->alloc(be, r * C * sizeof(float));
    s->scap = M;
}

/* The routes of layer l: what this rank sends each owner (from offsets), and, after the count
 * exchange (forward only), what it receives from each sender. */
static void routes(gpt_ep_state *s, int l, const int *offsets, int exchange)
{
    int P = s->ep, El = s->El;
    ep_layer *y = &s->layer[l];
    for (int r = 0; r < P; r++) {
        s->sdisp[r] = offsets[r * El];
        s->srows[r] = offsets[(r + 1) * El] - offsets[r * El];
    }
    if (exchange) {
        /* each count as two 16-bit halves, so the floats carry it exactly */
        float *snd = s->fcnt, *rcv = s->fcnt + (size_t)2 * P * El;
        for (int e = 0; e < s->E; e++) {
            int k = offsets[e + 1] - offsets[e];
            snd[2 * e] = (float)(k >> 16), snd[2 * e + 1] = (float)(k & 0xffff);
        }
        for (int r = 0; r < P; r++) s->sc[r] = s->rc[r] = (size_t)2 * El, s->sd[r] = s->rd[r] = (size_t)2 * r * El;
        gpt_err err = {0};
        must(s, s->comm->alltoallv(s->comm, snd, s->sc, s->sd, rcv, s->rc, s->rd, &err), &err);
        for (int i = 0; i < P * El; i++) y->rcnt[i] = (int)rcv[2 * i] << 16 | (int)rcv[2 * i + 1];
    }
    y->M = 0;
    for (int r = 0; r < P; r++) {
        s->rdisp[r] = y->M;
        s->rrows[r] = 0;
        for (int j = 0; j < El; j++) s->rrows[r] += y->rcnt[r * El + j];
        y->M += s->rrows[r];
    }
    s->eoff[0] = 0;
    for (int j = 0; j < El; j++) {
        s->eoff[j + 1] = s->eoff[j];
        for (int r = 0; r < P; r++) s->eoff[j + 1] += y->rcnt[r * El + j];
    }
}

/* Received rows (sender-major, experts in order within a sender) <-> grouped rows (expert-major,
 * senders in rank order within an expert). */
static void regroup(gpt_ep_state *s, int l, const float *src, float *dst, int to_grouped, int width)
{
    int P = s->ep, El = s->El;
    const int *cnt = s->layer[l].rcnt;
    for (int r = 0; r < P; r++) {
        int at = s->rdisp[r];
        for (int j = 0; j < El; j++) {
            int n = cnt[r * El + j], g = s->eoff[j];
            for (int q = 0; q < r; q++) g += cnt[q * El + j];
            size_t a = (size_t)at * width, b = (size_t)g * width, k = (size_t)n * width;
            if (to_grouped)
                memcpy(dst + b, src + a, k * sizeof *dst);
            else
                memcpy(dst + a, src + b, k * sizeof *dst);
            at += n;
        }
    }
}

/* rows (NK, C; backend, sorted by global expert) -> the owners; grouped (M, C; backend) here. */
static void dispatch(gpt_ep_state *s, int l, const float *rows, int NK, float *grouped)
{
    gpt_backend *be = s->be;
    int P = s->ep, C = s->C, M = s->layer[l].M;
    host_room(s, (size_t)(NK > M ? NK : M) * C + 1);
    be->to_host(be, s->hsend, rows, (size_t)NK * C * sizeof(float));
    for (int r = 0; r < P; r++) {
        s->sc[r] = (size_t)s->srows[r] * C, s->sd[r] = (size_t)s->sdisp[r] * C;
        s->rc[r] = (size_t)s->rrows[r] * C, s->rd[r] = (size_t)s->rdisp[r] * C;
    }
    gpt_err err = {0};
    must(s, s->comm->alltoallv(s->comm, s->hsend, s->sc, s->sd, s->hrecv, s->rc, s->rd, &err), &err);
    regroup(s, l, s->hrecv, s->hsend, 1, C);
    if (M) be->to_device(be, grouped, s->hsend, (size_t)M * C * sizeof(float));
}

/* The reverse: grouped (M, C; backend) back to the senders; rows (NK, C; backend). */
static void combine(gpt_ep_state *s, int l, const float *grouped, int NK, float *rows)
{
    gpt_backend *be = s->be;
    int P = s->ep, C = s->C, M = s->layer[l].M;
    host_room(s, (size_t)(NK > M ? NK : M) * C + 1);
    if (M) be->to_host(be, s->hrecv, grouped, (size_t)M * C * sizeof(float));
    regroup(s, l, s->hrecv, s->hsend, 0, C);
    for (int r = 0; r < P; r++) {
        s->sc[r] = (size_t)s->rrows[r] * C, s->sd[r] = (size_t)s->rdisp[r] * C;
        s->rc[r] = (size_t)s->srows[r] * C, s->rd[r] = (size_t)s->sdisp[r] * C;
    }
    gpt_err err = {0};
    must(s, s->comm->alltoallv(s->comm, s->hsend, s->sc, s->sd, s->hrecv, s->rc, s->rd, &err), &err);
    be->to_device(be, rows, s->hrecv, (size_t)NK * C * sizeof(float));
}

void gpt_ep_experts_fwd_(gpt_ep_state *s, gpt_backend *be, int l, float *ye, const float *xe, const int *offsets,
                         int NK, const float *gu_w, const float *gu_b, const float *down_w, const float *down_b)
{
    ep_layer *y = &s->layer[l];
    int C = s->C, F = s->F;
    routes(s, l, offsets, 1);
    if (y->M > y->cap) { /* grows to the largest share seen; kept for the backward */
        if (y->xe) be->free(be, y->xe), be->free(be, y->gu), be->free(be, y->h);
        y->cap = y->M;
        y->xe = be->alloc(be, (size_t)y->cap * C * sizeof(float));
        y->gu = be->alloc(be, (size_t)y->cap * 2 * F * sizeof(float));
        y->h = be->alloc(be, (size_t)y->cap * F * sizeof(float));
    }
    scratch_room(s, y->M);
    dispatch(s, l, xe, NK, y->xe);
    /* the same ops, in the same order per expert, as the one-rank path (model.c moe_fwd) */
    for (int j = 0; j < s->El; j++) {
        int r0 = s->eoff[j], n = s->eoff[j + 1] - r0;
        if (!n) continue;
        be->gemm(be, 0, 0, n, 2 * F, C, 1.0f, y->xe + (size_t)r0 * C, C, gu_w + (size_t)j * C * 2 * F, 2 * F, 0.0f,
                 y->gu + (size_t)r0 * 2 * F, 2 * F);
        be->bias_fwd(be, y->gu + (size_t)r0 * 2 * F, 2 * F, gu_b + (size_t)j * 2 * F, n, 2 * F);
    }
    if (y->M) be->swiglu_fwd(be, y->h, y->gu, y->M, F, s->alpha, s->limit);
    for (int j = 0; j < s->El; j++) {
        int r0 = s->eoff[j], n = s->eoff[j + 1] - r0;
        if (!n) continue;
        be->gemm(be, 0, 0, n, C, F, 1.0f, y->h + (size_t)r0 * F, F, down_w + (size_t)j * F * C, C, 0.0f,
                 s->ye + (size_t)r0 * C, C);
        be->bias_fwd(be, s->ye + (size_t)r0 * C, C, down_b + (size_t)j * C, n, C);
    }
    combine(s, l, s->ye, NK, ye);
}

void gpt_ep_experts_bwd_(gpt_ep_state *s, gpt_backend *be, int l, float *dxe, const float *dye, const int *offsets,
                         int NK, const float *gu_w, const float *down_w, float *g_gu_w, float *g_gu_b,
                         float *g_down_w, float *g_down_b)
{
    ep_layer *y = &s->layer[l];
    int C = s->C, F = s->F;
    routes(s, l, offsets, 0); /* the forward's counts */
    scratch_room(s, y->M);
    dispatch(s, l, dye, NK, s->dy);
    for (int j = 0; j < s->El; j++) {
        int r0 = s->eoff[j], n = s->eoff[j + 1] - r0;
        if (!n) continue;
        const float *dy = s->dy + (size_t)r0 * C, *h = y->h + (size_t)r0 * F;
        be->gemm(be, 0, 1, n, F, C, 1.0f, dy, C, down_w + (size_t)j * F * C, C, 0.0f, s->dh + (size_t)r0 * F, F);
        be->gemm(be, 1, 0, F, C, n, 1.0f, h, F, dy, C, 1.0f, g_down_w + (size_t)j * F * C, C);
        be->bias_bwd(be, g_down_b + (size_t)j * C, dy, C, n, C);
    }
    if (y->M) be->swiglu_bwd(be, s->dgu, y->gu, s->dh, y->M, F, s->alpha, s->limit);
    for (int j = 0; j < s->El; j++) {
        int r0 = s->eoff[j], n = s->eoff[j + 1] - r0;
        if (!n) continue;
        const float *dgu = s->dgu + (size_t)r0 * 2 * F, *x = y->xe + (size_t)r0 * C;
        be->gemm(be, 0, 1, n, C, 2 * F, 1.0f, dgu, 2 * F, gu_w + (size_t)j * C * 2 * F, 2 * F, 0.0f,
                 s->dx + (size_t)r0 * C, C);
        be->gemm(be, 1, 0, C, 2 * F, n, 1.0f, x, C, dgu, 2 * F, 1.0f, g_gu_w + (size_t)j * C * 2 * F, 2 * F);
        be->bias_bwd(be, g_gu_b + (size_t)j * 2 * F, dgu, 2 * F, n, 2 * F);
    }
    combine(s, l, s->dx, NK, dxe);
}
