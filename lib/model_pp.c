/* model_pp.c: pipeline-parallel stages of gpt_model: construction, the stage entry points, and
 * the stage <-> whole-table conversions (model_pp.h). */
#include "model_pp.h"

#include <stdlib.h>
#include <string.h>

#include "model_tp.h"
#include "shard_layout.h"

/* The stage holding tensor t under pp (first holder: a tied embedding is held by 0 and pp - 1). */
static int holders(const gpt_model_config *c, const gpt_tensor *t, int pp, int *first, int *last)
{
    uint64_t shape[4];
    for (int d = 0; d < t->ndim; d++) shape[d] = (uint64_t)t->shape[d];
    gpt_layout_rule r;
    gpt_err err = {0};
    if (gpt_layout_rule_for(c, t->name, t->ndim, shape, 1, pp, 1, &r, &err) < 0) return -1;
    *first = r.stage_first, *last = r.stage_last;
    return 0;
}

gpt_model *gpt_model_create_pp(const gpt_model_config *full, gpt_backend *be, gpt_comm *tp, int pp, int stage,
                               gpt_err *err)
{
    if (pp <= 1) return gpt_model_create_tp(full, be, tp, err);
    int L = full->n_layers;
    if (pp > L) return gpt_errf(err, "--pp %d: more pipeline stages than layers (%d)", pp, L), NULL;
    if (stage < 0 || stage >= pp) return gpt_errf(err, "pipeline stage %d is outside 0..%d", stage, pp - 1), NULL;
    if (full->mlp == GPT_MLP_MOE && full->activation != GPT_ACT_SWIGLU)
        return gpt_errf(err, "model.mlp: experts need activation swiglu"), NULL;
    gpt_model_config local;
    gpt_param_table all, tab = {0};
    if (gpt_model_tp_config(full, tp ? tp->size : 1, &local, err) < 0 || gpt_params_build(&local, &all, err) < 0)
        return NULL;
    int gpt2 = gpt_params_find(&all, "transformer.wte.weight") != NULL;
    tab.t = gpt_xcalloc((size_t)all.n, sizeof *tab.t);
    for (int i = 0; i < all.n; i++) {
        int f, l;
        if (holders(&local, &all.t[i], pp, &f, &l) < 0) {
            gpt_params_free(&all), free(tab.t);
            return gpt_errf(err, "pipeline layout: no rule for tensor %s", all.t[i].name), NULL;
        }
        if (stage != f && stage != l) continue;
        gpt_tensor t = all.t[i];
        t.offset = tab.total;
        tab.total += t.numel;
        tab.t[tab.n++] = t;
    }
    gpt_params_free(&all);
    int l0 = (int)((long)stage * L / pp), l1 = (int)((long)(stage + 1) * L / pp);
    gpt_model *m = gpt_model_pp_create_(&local, be, &tab, gpt2, pp, stage, l0, l1);
    if (tp && tp->size > 1) gpt_model_tp_attach_(m, tp, full);
    return m;
}

static int aux_on(const gpt_model *m)
{
    const gpt_model_config *c = gpt_model_config_of(m);
    return c->mlp == GPT_MLP_MOE && c->router_aux_loss_coef > 0;
}
size_t gpt_model_pp_fwd_extra(const gpt_model *m) { return aux_on(m) ? 2 * (size_t)gpt_model_config_of(m)->n_experts : 0; }
size_t gpt_model_pp_bwd_extra(const gpt_model *m) { return aux_on(m) ? (size_t)gpt_model_config_of(m)->n_experts : 0; }

int gpt_model_forward_stage(gpt_model *m, const int *tokens, const int *targets, int B, int T,
                            const gpt_forward_opts *opts, const float *x_in, float *x_out, gpt_loss *loss,
                            gpt_err *err)
{
    int stage, pp = gpt_model_pp_info(m, &stage, NULL, NULL);
    if ((stage > 0) != (x_in != NULL) || (stage < pp - 1) != (x_out != NULL))
        return gpt_errf(err, "pipeline stage %d of %d: forward needs %s input and %s output activations", stage, pp,
                        stage > 0 ? "an" : "no", stage < pp - 1 ? "an" : "no");
    gpt_model_pp_io_(m, x_in, x_out, NULL, NULL);
    int rc = gpt_model_forward(m, tokens, targets, B, T, opts, loss, err);
    gpt_model_pp_io_(m, NULL, NULL, NULL, NULL);
    return rc;
}

int gpt_model_backward_stage(gpt_model *m, const float *dx_out, float *dx_in, gpt_err *err)
{
    int stage, pp = gpt_model_pp_info(m, &stage, NULL, NULL);
    if ((stage < pp - 1) != (dx_out != NULL) || (stage > 0) != (dx_in != NULL))
        return gpt_errf(err, "pipeline stage %d of %d: backward needs %s output and %s input gradients", stage, pp,
                        stage < pp - 1 ? "an" : "no", stage > 0 ? "an" : "no");
    gpt_model_pp_io_(m, NULL, NULL, dx_out, dx_in);
    int rc = gpt_model_backward(m, err);
    gpt_model_pp_io_(m, NULL, NULL, NULL, NULL);
    return rc;
}

/* Walks the stage's tensors with their place in the model config's whole table. */
static void each_stage_tensor(const gpt_model *m, void (*fn)(const gpt_tensor *whole, const gpt_tensor *st, int i,
                                                             void *arg), void *arg)
{
    gpt_param_table all;
    gpt_err err = {0};
    if (gpt_params_build(gpt_model_config_of(m), &all, &err) < 0) abort(); /* the model was built from it */
    const gpt_param_table *tab = gpt_model_params(m);
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *w = gpt_params_find(&all, tab->t[i].name);
        if (!w) abort();
        fn(w, &tab->t[i], i, arg);
    }
    gpt_params_free(&all);
}

typedef struct {
    const gpt_model *m;
    const float *src;
    float *dst;
    int to_whole, owned_only;
    unsigned char *shadow;
} conv_arg;

static int is_shadow(const gpt_model *m, const gpt_tensor *t)
{
    int stage, pp = gpt_model_pp_info(m, &stage, NULL, NULL), f, l;
    if (pp <= 1 || holders(gpt_model_config_of(m), t, pp, &f, &l) < 0) return 0;
    return stage != f;
}

static void conv(const gpt_tensor *w, const gpt_tensor *st, int i, void *p)
{
    (void)i;
    conv_arg *a = p;
    if (a->to_whole) {
        if (!a->owned_only || !is_shadow(a->m, st))
            memcpy(a->dst + w->offset, a->src + st->offset, st->numel * sizeof(float));
    } else {
        memcpy(a->dst + st->offset, a->src + w->offset, st->numel * sizeof(float));
    }
}

void gpt_pp_extract(const gpt_model *m, const float *tpbuf, float *local)
{
    conv_arg a = {m, tpbuf, local, 0, 0, NULL};
    each_stage_tensor(m, conv, &a);
}

void gpt_pp_insert(const gpt_model *m, const float *local, float *tpbuf, int owned_only)
{
    conv_arg a = {m, local, tpbuf, 1, owned_only, NULL};
    each_stage_tensor(m, conv, &a);
}

static void mark(const gpt_tensor *w, const gpt_tensor *st, int i, void *p)
{
    (void)w;
    conv_arg *a = p;
    a->shadow[i] = (unsigned char)is_shadow(a->m, st);
}

unsigned char *gpt_pp_shadow_flags(const gpt_model *m)
{
    conv_arg a = {m, NULL, NULL, 0, 0, gpt_xcalloc((size_t)gpt_model_params(m)->n + 1, 1)};
    each_stage_tensor(m, mark, &a);
    return a.shadow;
}

void gpt_model_pp_init_params(gpt_model *m, uint64_t seed)
{
    if (gpt_model_pp_info(m, NULL, NULL, NULL) <= 1) {
        gpt_model_tp_init_params(m, seed);
        return;
    }
    const gpt_model_config *full = gpt_model_full_config(m), *local = gpt_model_config_of(m);
    gpt_comm *tp = gpt_model_tp_comm(m);
    gpt_param_table ft, lt;
    gpt_err err = {0};
    if (gpt_params_build(full, &ft, &err) < 0 || gpt_params_build(local, &lt, &err) < 0) abort();
    float *fh = gpt_xmalloc(ft.total * sizeof *fh), *th = gpt_xcalloc(lt.total, sizeof *th);
    gpt_params_init(full, &ft, seed, fh);
    if (tp)
        gpt_tp_scatter(full, tp->size, tp->rank, fh, th);
    else
        memcpy(th, fh, lt.total * sizeof *th);
    size_t n = gpt_model_params(m)->total;
    float *sh = gpt_xmalloc(n * sizeof *sh);
    gpt_pp_extract(m, th, sh);
    gpt_backend *be = gpt_model_backend(m);
    be->to_device(be, gpt_model_param_data(m), sh, n * sizeof *sh);
    free(sh), free(th), free(fh);
    gpt_params_free(&ft), gpt_params_free(&lt);
}

int gpt_pp_sync_tied(const gpt_model *m, gpt_comm *pp, float *hgrads, gpt_err *err)
{
    int stage, P = gpt_model_pp_info(m, &stage, NULL, NULL);
    const gpt_model_config *c = gpt_model_config_of(m);
    if (P <= 1 || !c->tie_embeddings || (stage != 0 && stage != P - 1)) return 0;
    const gpt_param_table *tab = gpt_model_params(m);
    const gpt_tensor *t = gpt_params_find(tab, "transformer.wte.weight");
    if (!t) t = gpt_params_find(tab, "model.embed_tokens.weight");
    if (!t) return gpt_errf(err, "pipeline: tied embeddings but stage %d holds no embedding tensor", stage);
    float *g = hgrads + t->offset, *other = gpt_xmalloc(t->numel * sizeof *other);
    size_t bytes = t->numel * sizeof *other;
    /* stage 0 sends first, the last stage receives first: no cycle of blocking sends */
    int peer = stage == 0 ? P - 1 : 0, rc;
    if (stage == 0)
        rc = pp->send(pp, g, bytes, peer, 3, err) < 0 || pp->recv(pp, other, bytes, peer, 3, err) < 0 ? -1 : 0;
    else
        rc = pp->recv(pp, other, bytes, peer, 3, err) < 0 || pp->send(pp, g, bytes, peer, 3, err) < 0 ? -1 : 0;
    /* a + b on one, b + a on the other: equal bits (addition commutes) */
    for (size_t i = 0; i < t->numel && rc == 0; i++) g[i] += other[i];
    free(other);
    return rc;
}

gpt_model *gpt_model_pp_from(gpt_model *whole, gpt_comm *tp, int pp, int stage, gpt_err *err)
{
    if (gpt_model_is_mxfp4(whole))
        return gpt_errf(err, "tensor/pipeline-parallel inference cuts fp32 expert weights: use --experts f32"), NULL;
    if (tp && tp->size <= 1) tp = NULL;
    const gpt_model_config *full = gpt_model_config_of(whole);
    gpt_backend *be = gpt_model_backend(whole);
    gpt_model *m = gpt_model_create_pp(full, be, tp, pp, stage, err);
    if (!m) return NULL;
    gpt_model_config local;
    gpt_param_table lt;
    if (gpt_model_tp_config(full, tp ? tp->size : 1, &local, err) < 0 || gpt_params_build(&local, &lt, err) < 0) {
        gpt_model_free(m);
        return NULL;
    }
    size_t nf = gpt_model_params(whole)->total, ns = gpt_model_params(m)->total;
    float *fh = gpt_xmalloc(nf * sizeof *fh), *th = tp ? gpt_xcalloc(lt.total, sizeof *th) : fh;
    float *sh = gpt_xcalloc(ns + 1, sizeof *sh);
    be->to_host(be, fh, gpt_model_param_data(whole), nf * sizeof *fh);
    if (tp) gpt_tp_scatter(full, tp->size, tp->rank, fh, th);
    gpt_pp_extract(m, th, sh);
    be->to_device(be, gpt_model_param_data(m), sh, ns * sizeof *sh);
    if (th != fh) free(th);
    free(fh), free(sh);
    gpt_params_free(&lt);
    return m;
}
