/* model.c: the forward and backward passes, written once against the op interface (backend.h).
 *
 * Shapes: B batch, T time, N = B*T rows, C d_model, H query heads, KV key/value heads, D d_head,
 * QKV = (H + 2 KV) D, A = H D, Vp padded vocabulary, F d_ff or d_expert, E experts, K experts
 * per token. Every buffer below is backend memory unless its name ends in _h. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_ep.h"
#include "model_pp.h"
#include "model_tp.h"
#include "mxfp4.h"
#include "rope.h"

/* Pointers of one layer into the parameter (or gradient) buffer; NULL where the config has no
 * such tensor. io: weights stored (in, out) (GPT-2's Conv1D) instead of (out, in). */
typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    float *qkv_w, *qkv_b;                   /* GPT-2: fused (C, QKV) */
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b; /* gpt-oss: (A | KV D, C) */
    float *o_w, *o_b, *sinks;
    float *fc_w, *fc_b, *proj_w, *proj_b;   /* dense MLP */
    float *router_w, *router_b, *gu_w, *gu_b, *down_w, *down_b; /* MoE, experts (E, in, out) */
} layer_ptrs;

typedef struct {
    float *wte, *wpe, *lnf_w, *lnf_b, *lm_w;
    layer_ptrs *layer;
} model_ptrs;

/* Per-layer activations kept for the backward pass. */
typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N, C), (N), (N) */
    float *qkv;                       /* (N, QKV) after bias and rotation */
    float *att, *lse;                 /* (N, A), (B, H, T) */
    float *mid;                       /* (N, C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fc, *fc_act;               /* dense: (N, F) before and after GELU */
    float *rlogits, *rprobs;          /* MoE: (N, E) router logits and (aux) softmax */
    int *topk_idx;                    /* (N, K) */
    float *topk_w;                    /* (N, K) */
    int *perm_tok, *perm_slot;        /* (N K): rows sorted by expert -> token, -> slot */
    float *pw;                        /* (N K) routing weight of each sorted row */
    float *xe, *gu, *h, *ye;          /* (N K, C), (N K, 2F), (N K, F), (N K, C) */
    int *offsets_h;                   /* (E + 1) row ranges of each expert */
    float *counts_h;                  /* (E) rows routed to each expert */
    float *probsum_h;                 /* (E) column sums of rprobs */
} layer_acts;

struct gpt_model {
    gpt_model_config cfg;
    gpt_backend *be;
    gpt_param_table tab;
    float *params, *grads;
    model_ptrs p, g;
    int gpt2, io;

    /* activations for up to Ncap rows; rope tables for rope_cap positions */
    int Ncap, rope_cap, B, T;
    int *tokens, *targets;            /* (N) */
    float **res;                      /* L + 1 residual streams (N, C) */
    layer_acts *la;
    float *lnf, *lnf_mean, *lnf_rstd; /* (N, C), (N), (N) */
    float *logits;                    /* (N, Vp) */
    float *losses;                    /* (N) */
    int *correct;                     /* (N) */
    float *rope_cos, *rope_sin;       /* (T, D/2) */
    /* backward scratch */
    float *dres, *dln, *datt, *dqkv, *dff, *dye, *dh, *dgu, *dxe, *dpw, *dtw, *drl;
    float *aux_g;                     /* (E) */
    /* MXFP4 experts (inference only): the expert weights are not in the table or `params` but kept
     * as blocks/scales per tensor (backend memory), in gpt-oss's (E, out, in/32, 16) layout. */
    int mxfp4;
    int n_mx;
    gpt_tensor *mx_t;                 /* (n_mx) names and our (E, in, out) shapes */
    uint8_t **mx_blocks, **mx_scales; /* (n_mx) */
    int *mx_of_layer;                 /* (2 L): index of gate_up / down of layer l, or -1 */
    int have_loss;
    double dscale;
    float smoothing;
    /* tensor parallelism (model_tp.h): NULL tp = one rank */
    gpt_comm *tp;
    gpt_model_config full;          /* cfg is this rank's piece */
    int v0;                         /* first vocabulary row held */
    int tp_cap, *tp_rows, *tp_pos;  /* (tp_cap) local embedding rows, positions */
    float *tp_scale, *tp_lse;       /* (tp_cap) 1 where the token's row is here; host: lse per row */
    int *tp_tgt;                    /* host (tp_cap) targets */
    /* pipeline parallelism (model_pp.h): this stage runs layers [pp_l0, pp_l1) (pp_l1 0: all);
     * noembed: the input is pp_in (N, C) + router statistics instead of the embedding; nohead:
     * the output is res[pp_l1] -> pp_out instead of logits; the backward reads pp_dout and writes
     * pp_din (host memory, set by the stage entry points around one call). */
    int pp, pp_stage, pp_l0, pp_l1, pp_noembed, pp_nohead;
    const float *pp_in, *pp_dout;
    float *pp_out, *pp_din;
    gpt_comm *pp_comm; /* inference: gpt_model_extend moves activations stage to stage (not owned) */
    /* expert parallelism (model_ep.h): NULL = every expert here */
    gpt_ep_state *ep;
    /* gpt_model_set_grad_hook: told as backward finishes each range of the gradient buffer */
    gpt_grad_ready_fn grad_ready;
    void *grad_ready_ctx;
};

static int window_of(const gpt_model *m, int l) { return gpt_model_layer_window(&m->cfg, l); }

/* ---- construction ---- */

static float *ptr(const gpt_model *m, float *base, const char *fmt, int l)
{
    char name[GPT_TENSOR_NAME_MAX];
    snprintf(name, sizeof name, fmt, l);
    const gpt_tensor *t = gpt_params_find(&m->tab, name);
    return t ? base + t->offset : NULL;
}

static void bind(gpt_model *m, float *base, model_ptrs *p)
{
    const gpt_model_config *c = &m->cfg;
    p->layer = calloc((size_t)c->n_layers, sizeof *p->layer);
    if (m->gpt2) {
        p->wte = ptr(m, base, "transformer.wte.weight", 0);
        p->wpe = ptr(m, base, "transformer.wpe.weight", 0);
        p->lnf_w = ptr(m, base, "transformer.ln_f.weight", 0);
        p->lnf_b = ptr(m, base, "transformer.ln_f.bias", 0);
        p->lm_w = c->tie_embeddings ? p->wte : ptr(m, base, "lm_head.weight", 0);
        for (int l = 0; l < c->n_layers; l++) {
            layer_ptrs *y = &p->layer[l];
            y->ln1_w = ptr(m, base, "transformer.h.%d.ln_1.weight", l);
            y->ln1_b = ptr(m, base, "transformer.h.%d.ln_1.bias", l);
            y->qkv_w = ptr(m, base, "transformer.h.%d.attn.c_attn.weight", l);
            y->qkv_b = ptr(m, base, "transformer.h.%d.attn.c_attn.bias", l);
            y->o_w = ptr(m, base, "transformer.h.%d.attn.c_proj.weight", l);
            y->o_b = ptr(m, base, "transformer.h.%d.attn.c_proj.bias", l);
            y->ln2_w = ptr(m, base, "transformer.h.%d.ln_2.weight", l);
            y->ln2_b = ptr(m, base, "transformer.h.%d.ln_2.bias", l);
            y->fc_w = ptr(m, base, "transformer.h.%d.mlp.c_fc.weight", l);
            y->fc_b = ptr(m, base, "transformer.h.%d.mlp.c_fc.bias", l);
            y->proj_w = ptr(m, base, "transformer.h.%d.mlp.c_proj.weight", l);
            y->proj_b = ptr(m, base, "transformer.h.%d.mlp.c_proj.bias", l);
        }
        return;
    }
    p->wte = ptr(m, base, "model.embed_tokens.weight", 0);
    p->wpe = ptr(m, base, "model.embed_positions.weight", 0);
    p->lnf_w = ptr(m, base, "model.norm.weight", 0);
    p->lnf_b = ptr(m, base, "model.norm.bias", 0);
    p->lm_w = c->tie_embeddings ? p->wte : ptr(m, base, "lm_head.weight", 0);
    for (int l = 0; l < c->n_layers; l++) {
        layer_ptrs *y = &p->layer[l];
        y->ln1_w = ptr(m, base, "model.layers.%d.input_layernorm.weight", l);
        y->ln1_b = ptr(m, base, "model.layers.%d.input_layernorm.bias", l);
        y->q_w = ptr(m, base, "model.layers.%d.self_attn.q_proj.weight", l);
        y->q_b = ptr(m, base, "model.layers.%d.self_attn.q_proj.bias", l);
        y->k_w = ptr(m, base, "model.layers.%d.self_attn.k_proj.weight", l);
        y->k_b = ptr(m, base, "model.layers.%d.self_attn.k_proj.bias", l);
        y->v_w = ptr(m, base, "model.layers.%d.self_attn.v_proj.weight", l);
        y->v_b = ptr(m, base, "model.layers.%d.self_attn.v_proj.bias", l);
        y->o_w = ptr(m, base, "model.layers.%d.self_attn.o_proj.weight", l);
        y->o_b = ptr(m, base, "model.layers.%d.self_attn.o_proj.bias", l);
        y->sinks = ptr(m, base, "model.layers.%d.self_attn.sinks", l);
        y->ln2_w = ptr(m, base, "model.layers.%d.post_attention_layernorm.weight", l);
        y->ln2_b = ptr(m, base, "model.layers.%d.post_attention_layernorm.bias", l);
        y->router_w = ptr(m, base, "model.layers.%d.mlp.router.weight", l);
        y->router_b = ptr(m, base, "model.layers.%d.mlp.router.bias", l);
        y->gu_w = ptr(m, base, "model.layers.%d.mlp.experts.gate_up_proj", l);
        y->gu_b = ptr(m, base, "model.layers.%d.mlp.experts.gate_up_proj_bias", l);
        y->down_w = ptr(m, base, "model.layers.%d.mlp.experts.down_proj", l);
        y->down_b = ptr(m, base, "model.layers.%d.mlp.experts.down_proj_bias", l);
        y->fc_w = ptr(m, base, "model.layers.%d.mlp.up_proj.weight", l);
        y->fc_b = ptr(m, base, "model.layers.%d.mlp.up_proj.bias", l);
        y->proj_w = ptr(m, base, "model.layers.%d.mlp.down_proj.weight", l);
        y->proj_b = ptr(m, base, "model.layers.%d.mlp.down_proj.bias", l);
    }
}

static int is_expert_weight(const gpt_tensor *t)
{
    size_t n = strlen(t->name);
    return t->expert_dim && ((n > 20 && strcmp(t->name + n - 20, "experts.gate_up_proj") == 0) ||
                             (n > 17 && strcmp(t->name + n - 17, "experts.down_proj") == 0));
}

/* Moves the expert weights out of the table (offsets packed again) into m->mx_*. */
static int split_mxfp4(gpt_model *m, gpt_err *err)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    if (c->mlp != GPT_MLP_MOE) return gpt_errf(err, "MXFP4 experts: the model has no experts (model.mlp is dense)");
    if (!be->mxfp4_matmul)
        return gpt_errf(err, "MXFP4 experts: the %s backend has no MXFP4 kernel; load the experts dequantized to fp32 "
                             "instead", be->name);
    if (c->d_model % 32 || c->d_expert % 32)
        return gpt_errf(err, "MXFP4 experts: d_model (%d) and d_expert (%d) must be multiples of 32 (the block size)",
                        c->d_model, c->d_expert);
    gpt_param_table *tab = &m->tab;
    m->mx_t = gpt_xcalloc((size_t)tab->n, sizeof *m->mx_t);
    m->mx_of_layer = gpt_xmalloc((size_t)2 * c->n_layers * sizeof *m->mx_of_layer);
    for (int i = 0; i < 2 * c->n_layers; i++) m->mx_of_layer[i] = -1;
    int kept = 0;
    size_t off = 0;
    for (int i = 0; i < tab->n; i++) {
        gpt_tensor t = tab->t[i];
        if (is_expert_weight(&t)) {
            int down = strstr(t.name, "down_proj") != NULL;
            if (t.layer >= 0 && t.layer < c->n_layers) m->mx_of_layer[2 * t.layer + down] = m->n_mx;
            t.offset = 0;
            m->mx_t[m->n_mx++] = t;
        } else {
            t.offset = off;
            off += t.numel;
            tab->t[kept++] = t;
        }
    }
    tab->n = kept;
    tab->total = off;
    m->mx_blocks = gpt_xcalloc((size_t)m->n_mx, sizeof *m->mx_blocks);
    m->mx_scales = gpt_xcalloc((size_t)m->n_mx, sizeof *m->mx_scales);
    for (int i = 0; i < m->n_mx; i++) {
        size_t nblk = m->mx_t[i].numel / 32;
        m->mx_blocks[i] = be->alloc(be, nblk * 16);
        m->mx_scales[i] = be->alloc(be, nblk);
    }
    for (int l = 0; l < 2 * c->n_layers; l++)
        if (m->mx_of_layer[l] < 0) return gpt_errf(err, "MXFP4 experts: layer %d has no expert weights", l / 2);
    return 0;
}

gpt_model *gpt_model_create_ex(const gpt_model_config *cfg, gpt_backend *be, const gpt_model_opts *opts, gpt_err *err)
{
    gpt_model *m = gpt_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    if (gpt_params_build(cfg, &m->tab, err) < 0) {
        free(m);
        return NULL;
    }
    m->gpt2 = gpt_params_find(&m->tab, "transformer.wte.weight") != NULL;
    m->io = m->gpt2;
    if (cfg->mlp == GPT_MLP_MOE && cfg->activation != GPT_ACT_SWIGLU) {
        gpt_errf(err, "model.mlp: experts need activation swiglu");
        gpt_model_free(m);
        return NULL;
    }
    m->mxfp4 = opts && opts->mxfp4_experts;
    if (m->mxfp4 && split_mxfp4(m, err) < 0) {
        gpt_model_free(m);
        return NULL;
    }
    m->params = be->alloc(be, m->tab.total * sizeof(float));
    bind(m, m->params, &m->p);
    return m;
}

/* The gradient buffer comes with the first use (zero_grad, grad_data, backward), so a model that
 * only runs inference never holds one: half the memory of the weights-only model. An MXFP4 model is
 * for inference and has none. */
static void ensure_grads(gpt_model *m)
{
    if (m->grads || m->mxfp4) return;
    m->grads = m->be->alloc(m->be, m->tab.total * sizeof(float));
    bind(m, m->grads, &m->g);
}

gpt_model *gpt_model_create(const gpt_model_config *cfg, gpt_backend *be, gpt_err *err)
{
    return gpt_model_create_ex(cfg, be, NULL, err);
}

int gpt_model_is_mxfp4(const gpt_model *m) { return m->mxfp4; }
int gpt_model_mxfp4_count(const gpt_model *m) { return m->n_mx; }
const gpt_tensor *gpt_model_mxfp4_tensor(const gpt_model *m, int i)
{
    return i >= 0 && i < m->n_mx ? &m->mx_t[i] : NULL;
}

int gpt_model_set_mxfp4(gpt_model *m, int i, const uint8_t *blocks, const uint8_t *scales, gpt_err *err)
{
    if (i < 0 || i >= m->n_mx) return gpt_errf(err, "MXFP4 expert tensor %d does not exist (the model has %d)", i, m->n_mx);
    size_t nblk = m->mx_t[i].numel / 32;
    m->be->to_device(m->be, m->mx_blocks[i], blocks, nblk * 16);
    m->be->to_device(m->be, m->mx_scales[i], scales, nblk);
    return 0;
}

int gpt_model_set_mxfp4_f32(gpt_model *m, int i, const float *w, gpt_err *err)
{
    if (i < 0 || i >= m->n_mx) return gpt_errf(err, "MXFP4 expert tensor %d does not exist (the model has %d)", i, m->n_mx);
    const gpt_tensor *t = &m->mx_t[i];
    size_t E = (size_t)t->shape[0], In = (size_t)t->shape[1], Out = (size_t)t->shape[2], nblk = In / 32;
    float *row = gpt_xmalloc(In * sizeof *row);
    uint8_t *b = gpt_xmalloc(E * Out * nblk * 16), *s = gpt_xmalloc(E * Out * nblk);
    for (size_t e = 0; e < E; e++)
        for (size_t o = 0; o < Out; o++) { /* ours (E, in, out) -> rows of (E, out, in) */
            for (size_t k = 0; k < In; k++) row[k] = w[(e * In + k) * Out + o];
            gpt_mxfp4_quantize(row, nblk, b + (e * Out + o) * nblk * 16, s + (e * Out + o) * nblk);
        }
    int rc = gpt_model_set_mxfp4(m, i, b, s, err);
    free(row), free(b), free(s);
    return rc;
}

static void free_acts(gpt_model *m)
{
    gpt_backend *be = m->be;
    if (!m->res) return;
#define F(p) \
    do {     \
        if (p) be->free(be, p); \
    } while (0)
    for (int l = 0; l <= m->cfg.n_layers; l++) F(m->res[l]); /* NULL outside a PP stage */
    for (int l = 0; l < m->cfg.n_layers; l++) {
        layer_acts *a = &m->la[l];
        F(a->ln1); F(a->ln1_mean); F(a->ln1_rstd); F(a->qkv); F(a->att); F(a->lse); F(a->mid);
        F(a->ln2); F(a->ln2_mean); F(a->ln2_rstd); F(a->fc); F(a->fc_act); F(a->rlogits); F(a->rprobs);
        F(a->topk_idx); F(a->topk_w); F(a->perm_tok); F(a->perm_slot); F(a->pw); F(a->xe); F(a->gu);
        F(a->h); F(a->ye);
        free(a->offsets_h);
        free(a->counts_h);
        free(a->probsum_h);
    }
    F(m->tokens); F(m->targets); F(m->lnf); F(m->lnf_mean); F(m->lnf_rstd); F(m->logits); F(m->losses);
    F(m->correct); F(m->dres); F(m->dln); F(m->datt); F(m->dqkv); F(m->dff);
    F(m->dye); F(m->dh); F(m->dgu); F(m->dxe); F(m->dpw); F(m->dtw); F(m->drl); F(m->aux_g);
#undef F
    free(m->res);
    free(m->la);
    m->res = NULL;
    m->la = NULL;
}

void gpt_model_free(gpt_model *m)
{
    if (!m) return;
    if (m->be->frozen_lo == (const void *)m->params) gpt_model_freeze(m, 0); /* the memory may come back */
    free_acts(m);
    if (m->rope_cos) m->be->free(m->be, m->rope_cos);
    if (m->rope_sin) m->be->free(m->be, m->rope_sin);
    if (m->tp_rows) m->be->free(m->be, m->tp_rows), m->be->free(m->be, m->tp_pos), m->be->free(m->be, m->tp_scale);
    free(m->tp_lse);
    free(m->tp_tgt);
    if (m->params) m->be->free(m->be, m->params);
    if (m->grads) m->be->free(m->be, m->grads);
    for (int i = 0; i < m->n_mx; i++) {
        if (m->mx_blocks[i]) m->be->free(m->be, m->mx_blocks[i]);
        if (m->mx_scales[i]) m->be->free(m->be, m->mx_scales[i]);
    }
    free(m->mx_blocks), free(m->mx_scales), free(m->mx_t), free(m->mx_of_layer);
    free(m->p.layer);
    free(m->g.layer);
    gpt_ep_state_free_(m->ep);
    gpt_params_free(&m->tab);
    free(m);
}

const gpt_model_config *gpt_model_config_of(const gpt_model *m) { return &m->cfg; }
gpt_backend *gpt_model_backend(const gpt_model *m) { return m->be; }
const gpt_param_table *gpt_model_params(const gpt_model *m) { return &m->tab; }
float *gpt_model_param_data(gpt_model *m) { return m->params; }

void gpt_model_freeze(gpt_model *m, int on)
{
    m->be->frozen_lo = on ? (const void *)m->params : NULL;
    m->be->frozen_hi = on ? (const void *)(m->params + m->tab.total) : NULL;
    m->be->frozen_epoch++;
}
float *gpt_model_grad_data(gpt_model *m)
{
    ensure_grads(m);
    return m->grads;
}
const float *gpt_model_logits(const gpt_model *m) { return m->logits; }

/* ---- tensor parallelism hooks (model_tp.h) ---- */

void gpt_model_tp_attach_(gpt_model *m, gpt_comm *tp, const gpt_model_config *full)
{
    m->tp = tp;
    m->full = *full;
    m->v0 = tp->rank * m->cfg.padded_vocab_size;
}
const gpt_model_config *gpt_model_full_config(const gpt_model *m) { return m->tp ? &m->full : &m->cfg; }
gpt_comm *gpt_model_tp_comm(const gpt_model *m) { return m->tp; }

/* buf (backend memory) = sum over the tp group. Host memory on the CPU backend; staged otherwise. */
static void tp_sum(gpt_model *m, float *buf, size_t n)
{
    if (!m->tp) return;
    gpt_err err = {0};
    int rc;
    if (strcmp(m->be->name, "cpu") == 0) {
        rc = m->tp->allreduce_sum(m->tp, buf, n, &err);
    } else {
        float *h = gpt_xmalloc(n * sizeof *h);
        m->be->to_host(m->be, h, buf, n * sizeof *h);
        rc = m->tp->allreduce_sum(m->tp, h, n, &err);
        m->be->to_device(m->be, buf, h, n * sizeof *h);
        free(h);
    }
    if (rc < 0) { /* a lost peer: the others would wait forever */
        fprintf(stderr, "tensor parallel all-reduce: %s\n", err.msg);
        m->tp->abort(m->tp, 1);
    }
}

/* Row-parallel output: y holds this rank's partial sum (no bias); reduce, then the bias once. */
static void tp_row_out(gpt_model *m, float *y, int ldy, const float *b, int N, int out)
{
    tp_sum(m, y, (size_t)N * ldy);
    if (b) m->be->bias_fwd(m->be, y, ldy, b, N, out);
}

void gpt_model_init_params(gpt_model *m, uint64_t seed)
{
    float *host = gpt_xmalloc(m->tab.total * sizeof *host);
    gpt_params_init(&m->cfg, &m->tab, seed, host);
    m->be->to_device(m->be, m->params, host, m->tab.total * sizeof *host);
    free(host);
}

void gpt_model_zero_grad(gpt_model *m)
{
    ensure_grads(m);
    if (m->grads) m->be->zero(m->be, m->grads, m->tab.total * sizeof(float));
}

static void alloc_acts(gpt_model *m, int Nrows)
{
    free_acts(m);
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    size_t N = (size_t)Nrows, C = c->d_model, H = c->n_heads, KV = c->n_kv_heads, D = c->d_head;
    size_t QKV = (H + 2 * KV) * D, A = H * D, Vp = c->padded_vocab_size, L = c->n_layers;
    size_t moe = c->mlp == GPT_MLP_MOE, E = c->n_experts, K = c->experts_per_token;
    size_t F = moe ? c->d_expert : c->d_ff, NK = N * K;
#define AF(n) ((float *)be->alloc(be, (n) * sizeof(float)))
#define AI(n) ((int *)be->alloc(be, (n) * sizeof(int)))
    m->res = gpt_xcalloc(L + 1, sizeof *m->res);
    m->la = gpt_xcalloc(L, sizeof *m->la);
    size_t l0 = (size_t)m->pp_l0, l1 = m->pp_l1 ? (size_t)m->pp_l1 : L; /* PP: this stage's layers */
    for (size_t l = l0; l <= l1; l++) m->res[l] = AF(N * C);
    for (size_t l = l0; l < l1; l++) {
        layer_acts *a = &m->la[l];
        a->ln1 = AF(N * C), a->ln1_mean = AF(N), a->ln1_rstd = AF(N);
        a->qkv = AF(N * QKV), a->att = AF(N * A), a->lse = AF(N * H), a->mid = AF(N * C);
        a->ln2 = AF(N * C), a->ln2_mean = AF(N), a->ln2_rstd = AF(N);
        if (moe) {
            a->rlogits = AF(N * E), a->rprobs = AF(N * E), a->topk_idx = AI(NK), a->topk_w = AF(NK);
            a->perm_tok = AI(NK), a->perm_slot = AI(NK), a->pw = AF(NK);
            a->xe = AF(NK * C), a->ye = AF(NK * C);
            if (!m->ep) a->gu = AF(NK * 2 * F), a->h = AF(NK * F); /* EP: the owners keep them (model_ep.c) */
            a->offsets_h = gpt_xcalloc(E + 1, sizeof(int));
            a->counts_h = gpt_xcalloc(E, sizeof(float));
            a->probsum_h = gpt_xcalloc(E, sizeof(float));
        } else {
            a->fc = AF(N * F), a->fc_act = AF(N * F);
        }
    }
    m->tokens = AI(N), m->targets = AI(N);
    m->lnf = AF(N * C), m->lnf_mean = AF(N), m->lnf_rstd = AF(N);
    m->logits = m->pp_nohead ? NULL : AF(N * Vp), m->losses = AF(N), m->correct = AI(N);
    m->dres = AF(N * C), m->dln = AF(N * C), m->datt = AF(N * A), m->dqkv = AF(N * QKV);
    if (moe) {
        m->dye = AF(NK * C), m->dxe = AF(NK * C);
        if (!m->ep) m->dh = AF(NK * F), m->dgu = AF(NK * 2 * F);
        m->dpw = AF(NK), m->dtw = AF(NK), m->drl = AF(N * E), m->aux_g = AF(E);
    } else {
        m->dff = AF(N * F);
    }
#undef AF
#undef AI
    m->Ncap = Nrows;
}

/* cos/sin tables for positions 0..P-1 (grown, never shrunk: decode asks one position at a time). */
static void ensure_rope(gpt_model *m, int P)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    if (c->positions != GPT_POS_ROPE || P <= m->rope_cap) return;
    if (P < 2 * m->rope_cap) P = 2 * m->rope_cap;
    if (P > c->max_seq_len) P = c->max_seq_len;
    size_t half = (size_t)c->d_head / 2, n = (size_t)P * half;
    float *cs = gpt_xmalloc(n * sizeof *cs), *sn = gpt_xmalloc(n * sizeof *sn);
    gpt_rope_tables(c, P, cs, sn);
    if (m->rope_cos) be->free(be, m->rope_cos);
    if (m->rope_sin) be->free(be, m->rope_sin);
    m->rope_cos = be->alloc(be, n * sizeof *cs);
    m->rope_sin = be->alloc(be, n * sizeof *sn);
    be->to_device(be, m->rope_cos, cs, n * sizeof *cs);
    be->to_device(be, m->rope_sin, sn, n * sizeof *sn);
    m->rope_cap = P;
    free(cs);
    free(sn);
}

/* ---- linear layers ---- */

/* y (N, out; ldy) = x (N, in; ldx) W + b. W is (in, out) when io, else (out, in). */
static void linear_fwd(gpt_model *m, float *y, int ldy, const float *x, int ldx, const float *w, const float *b, int N,
                       int in, int out, int io)
{
    m->be->gemm(m->be, 0, !io, N, out, in, 1.0f, x, ldx, w, io ? out : in, 0.0f, y, ldy);
    if (b) m->be->bias_fwd(m->be, y, ldy, b, N, out);
}

/* dx (N, in) = or += dy W^T; dW += x^T dy (in W's layout); db += column sums of dy. */
static void linear_bwd(gpt_model *m, float *dx, int ldx, int accumulate, float *dw, float *db, const float *dy,
                       int ldy, const float *x, int ldxin, const float *w, int N, int in, int out, int io)
{
    gpt_backend *be = m->be;
    if (dx) be->gemm(be, 0, io, N, in, out, 1.0f, dy, ldy, w, io ? out : in, accumulate ? 1.0f : 0.0f, dx, ldx);
    if (io)
        be->gemm(be, 1, 0, in, out, N, 1.0f, x, ldxin, dy, ldy, 1.0f, dw, out);
    else
        be->gemm(be, 1, 0, out, in, N, 1.0f, dy, ldy, x, ldxin, 1.0f, dw, in);
    if (db) be->bias_bwd(be, db, dy, ldy, N, out);
}

/* ---- per-expert GEMMs, gathered into one backend call ---- */

/* The arguments of a run of GEMMs sharing ta, tb, alpha and beta: one entry per expert with rows
 * (host arrays of up to cap entries). */
typedef struct {
    int n, *M, *N, *K, *lda, *ldb, *ldc;
    const float **A, **B;
    float **C;
} gemm_batch;

static void gb_init(gemm_batch *g, int cap)
{
    g->n = 0;
    g->M = gpt_xmalloc((size_t)6 * cap * sizeof *g->M);
    g->N = g->M + cap, g->K = g->N + cap, g->lda = g->K + cap, g->ldb = g->lda + cap, g->ldc = g->ldb + cap;
    g->A = gpt_xmalloc((size_t)2 * cap * sizeof *g->A);
    g->B = g->A + cap;
    g->C = gpt_xmalloc((size_t)cap * sizeof *g->C);
}

static void gb_free(gemm_batch *g)
{
    free(g->M);
    free(g->A);
    free(g->C);
}

static void gb_add(gemm_batch *g, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
                   int ldc)
{
    int i = g->n++;
    g->M[i] = M, g->N[i] = N, g->K[i] = K, g->lda[i] = lda, g->ldb[i] = ldb, g->ldc[i] = ldc;
    g->A[i] = A, g->B[i] = B, g->C[i] = C;
}

/* Runs the batch and empties it: one gemm_grouped call where the backend has one (the GPU launches
 * a layer's experts together instead of one small GEMM each), else the same gemms one by one. */
static void gb_run(gpt_backend *be, gemm_batch *g, int ta, int tb, float alpha, float beta)
{
    if (be->gemm_grouped && g->n)
        be->gemm_grouped(be, ta, tb, g->n, g->M, g->N, g->K, alpha, g->A, g->lda, g->B, g->ldb, beta, g->C, g->ldc);
    else
        for (int i = 0; i < g->n; i++)
            be->gemm(be, ta, tb, g->M[i], g->N[i], g->K[i], alpha, g->A[i], g->lda[i], g->B[i], g->ldb[i], beta,
                     g->C[i], g->ldc[i]);
    g->n = 0;
}

/* ---- MoE routing plan (host): rows sorted by expert, then token, then slot ---- */

static void moe_plan(gpt_model *m, layer_acts *a, int N)
{
    gpt_backend *be = m->be;
    int E = m->cfg.n_experts, K = m->cfg.experts_per_token, NK = N * K;
    int *idx = gpt_xmalloc((size_t)NK * sizeof *idx), *tok = gpt_xmalloc((size_t)NK * sizeof *tok),
        *slot = gpt_xmalloc((size_t)NK * sizeof *slot);
    be->to_host(be, idx, a->topk_idx, (size_t)NK * sizeof *idx);
    int *off = a->offsets_h;
    memset(off, 0, (size_t)(E + 1) * sizeof *off);
    for (int i = 0; i < NK; i++) off[idx[i] + 1]++;
    for (int e = 0; e < E; e++) {
        a->counts_h[e] = (float)off[e + 1];
        off[e + 1] += off[e];
    }
    int *fill = gpt_xmalloc((size_t)E * sizeof *fill);
    memcpy(fill, off, (size_t)E * sizeof *fill);
    for (int i = 0; i < NK; i++) {
        int p = fill[idx[i]]++;
        tok[p] = i / K;
        slot[p] = i;
    }
    be->to_device(be, a->perm_tok, tok, (size_t)NK * sizeof *tok);
    be->to_device(be, a->perm_slot, slot, (size_t)NK * sizeof *slot);
    free(fill);
    free(idx);
    free(tok);
    free(slot);
}

/* out (N, C) = sum over the token's experts of weight * expert_mlp(x). */
static void moe_fwd(gpt_model *m, int l, float *out, const float *x, int N)
{
    gpt_backend *be = m->be;
    const gpt_model_config *c = &m->cfg;
    const layer_ptrs *w = &m->p.layer[l];
    layer_acts *a = &m->la[l];
    int C = c->d_model, E = c->n_experts, K = c->experts_per_token, F = c->d_expert, NK = N * K;
    linear_fwd(m, a->rlogits, E, x, C, w->router_w, w->router_b, N, C, E, 0);    // (N, E)
    be->topk_softmax(be, a->topk_idx, a->topk_w, a->rlogits, N, E, K);           // (N, K)
    if (c->router_aux_loss_coef > 0) {
        be->softmax_rows(be, a->rprobs, a->rlogits, N, E);                        // (N, E)
        float *colsum = be->alloc(be, (size_t)E * sizeof(float));
        be->colsum(be, colsum, a->rprobs, N, E);
        be->to_host(be, a->probsum_h, colsum, (size_t)E * sizeof(float));
        be->free(be, colsum);
    }
    moe_plan(m, a, N);
    be->gather_rows(be, a->pw, a->topk_w, a->perm_slot, NULL, NK, 1);           // (NK)
    be->gather_rows(be, a->xe, x, a->perm_tok, NULL, NK, C);                     // (NK, C)
    int mgu = m->mxfp4 ? m->mx_of_layer[2 * l] : -1, mdn = m->mxfp4 ? m->mx_of_layer[2 * l + 1] : -1;
    if (m->ep) /* EP: the rows go to the experts' owners and come back (model_ep.h) */
        gpt_ep_experts_fwd_(m->ep, be, l, a->ye, a->xe, a->offsets_h, NK, w->gu_w, w->gu_b, w->down_w, w->down_b);
    /* fp32 experts: each projection is one grouped GEMM over the experts with rows, then the biases
     * expert by expert (the same GEMMs and adds as linear_fwd per expert, so the same bits) */
    gemm_batch gb = {0};
    if (!m->ep) gb_init(&gb, E);
    for (int e = 0; e < E && !m->ep; e++) {
        int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
        if (!n) continue;
        if (mgu >= 0) /* MXFP4 rows (2F, C) */
            be->mxfp4_matmul(be, a->gu + (size_t)r0 * 2 * F, 2 * F, a->xe + (size_t)r0 * C, C,
                             m->mx_blocks[mgu] + (size_t)e * 2 * F * C / 2, m->mx_scales[mgu] + (size_t)e * 2 * F * C / 32,
                             w->gu_b + (size_t)e * 2 * F, n, C, 2 * F);
        else
            gb_add(&gb, n, 2 * F, C, a->xe + (size_t)r0 * C, C, w->gu_w + (size_t)e * C * 2 * F, 2 * F,
                   a->gu + (size_t)r0 * 2 * F, 2 * F);                          // (n, 2F)
    }
    if (!m->ep && mgu < 0) {
        gb_run(be, &gb, 0, 0, 1.0f, 0.0f);
        for (int e = 0; e < E; e++) {
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n) be->bias_fwd(be, a->gu + (size_t)r0 * 2 * F, 2 * F, w->gu_b + (size_t)e * 2 * F, n, 2 * F);
        }
    }
    if (!m->ep) be->swiglu_fwd(be, a->h, a->gu, NK, F, (float)c->swiglu_alpha, (float)c->swiglu_limit); // (NK, F)
    int down_bias = !(m->tp && m->tp->rank); /* TP: the bias is added once, on rank 0 */
    for (int e = 0; e < E && !m->ep; e++) {
        int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
        if (!n) continue;
        const float *down_b = down_bias ? w->down_b + (size_t)e * C : NULL;
        if (mdn >= 0) /* MXFP4 rows (C, F) */
            be->mxfp4_matmul(be, a->ye + (size_t)r0 * C, C, a->h + (size_t)r0 * F, F,
                             m->mx_blocks[mdn] + (size_t)e * C * F / 2, m->mx_scales[mdn] + (size_t)e * C * F / 32,
                             down_b, n, F, C);
        else
            gb_add(&gb, n, C, F, a->h + (size_t)r0 * F, F, w->down_w + (size_t)e * F * C, C, a->ye + (size_t)r0 * C,
                   C);                                                           // (n, C)
    }
    if (!m->ep && mdn < 0) {
        gb_run(be, &gb, 0, 0, 1.0f, 0.0f);
        for (int e = 0; e < E; e++) {
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n && down_bias) be->bias_fwd(be, a->ye + (size_t)r0 * C, C, w->down_b + (size_t)e * C, n, C);
        }
    }
    if (!m->ep) gb_free(&gb);
    be->zero(be, out, (size_t)N * C * sizeof(float));
    be->scatter_add_rows(be, out, a->ye, a->perm_tok, a->pw, NK, C);             // (N, C)
    tp_sum(m, out, (size_t)N * C); /* TP: ye are partial sums (the bias on tp rank 0) */
}

/* dx (N, C) = gradient through the MoE block given dout (N, C); parameter grads accumulate. */
static void moe_bwd(gpt_model *m, int l, float *dx, const float *dout, const float *x, int N)
{
    gpt_backend *be = m->be;
    const gpt_model_config *c = &m->cfg;
    const layer_ptrs *w = &m->p.layer[l], *g = &m->g.layer[l];
    layer_acts *a = &m->la[l];
    int C = c->d_model, E = c->n_experts, K = c->experts_per_token, F = c->d_expert, NK = N * K;
    /* combine: out[tok] += pw * ye */
    be->gather_rows(be, m->dye, dout, a->perm_tok, a->pw, NK, C);                // (NK, C)
    be->row_dot(be, m->dpw, dout, a->perm_tok, a->ye, NK, C);                    // (NK)
    tp_sum(m, m->dpw, (size_t)NK); /* TP: each rank dotted its partial ye */
    be->zero(be, m->dtw, (size_t)NK * sizeof(float));
    be->scatter_add_rows(be, m->dtw, m->dpw, a->perm_slot, NULL, NK, 1);         // (N, K)
    if (m->ep)
        gpt_ep_experts_bwd_(m->ep, be, l, m->dxe, m->dye, a->offsets_h, NK, w->gu_w, w->down_w, g->gu_w, g->gu_b,
                            g->down_w, g->down_b);
    if (!m->ep) {
        /* linear_bwd per expert, as grouped GEMMs: dX of every expert, then dW, then the bias
         * gradients; each expert's outputs are its own, so the order changes no bits */
        gemm_batch gb;
        gb_init(&gb, E);
        for (int e = 0; e < E; e++) { /* down: dh (n, F) = dye W^T */
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n)
                gb_add(&gb, n, F, C, m->dye + (size_t)r0 * C, C, w->down_w + (size_t)e * F * C, C,
                       m->dh + (size_t)r0 * F, F);
        }
        gb_run(be, &gb, 0, 1, 1.0f, 0.0f);
        for (int e = 0; e < E; e++) { /* dW (F, C) += h^T dye */
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n)
                gb_add(&gb, F, C, n, a->h + (size_t)r0 * F, F, m->dye + (size_t)r0 * C, C,
                       g->down_w + (size_t)e * F * C, C);
        }
        gb_run(be, &gb, 1, 0, 1.0f, 1.0f);
        for (int e = 0; e < E; e++) {
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n) be->bias_bwd(be, g->down_b + (size_t)e * C, m->dye + (size_t)r0 * C, C, n, C);
        }
        be->swiglu_bwd(be, m->dgu, a->gu, m->dh, NK, F, (float)c->swiglu_alpha, (float)c->swiglu_limit);
        for (int e = 0; e < E; e++) { /* gate_up: dxe (n, C) = dgu W^T */
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n)
                gb_add(&gb, n, C, 2 * F, m->dgu + (size_t)r0 * 2 * F, 2 * F, w->gu_w + (size_t)e * C * 2 * F, 2 * F,
                       m->dxe + (size_t)r0 * C, C);
        }
        gb_run(be, &gb, 0, 1, 1.0f, 0.0f);
        for (int e = 0; e < E; e++) { /* dW (C, 2F) += xe^T dgu */
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n)
                gb_add(&gb, C, 2 * F, n, a->xe + (size_t)r0 * C, C, m->dgu + (size_t)r0 * 2 * F, 2 * F,
                       g->gu_w + (size_t)e * C * 2 * F, 2 * F);
        }
        gb_run(be, &gb, 1, 0, 1.0f, 1.0f);
        for (int e = 0; e < E; e++) {
            int r0 = a->offsets_h[e], n = a->offsets_h[e + 1] - r0;
            if (n) be->bias_bwd(be, g->gu_b + (size_t)e * 2 * F, m->dgu + (size_t)r0 * 2 * F, 2 * F, n, 2 * F);
        }
        gb_free(&gb);
    }
    be->zero(be, dx, (size_t)N * C * sizeof(float));
    be->scatter_add_rows(be, dx, m->dxe, a->perm_tok, NULL, NK, C);              // (N, C)
    /* router: through the top-k softmax, plus the load-balancing loss */
    be->zero(be, m->drl, (size_t)N * E * sizeof(float));
    be->topk_softmax_bwd(be, m->drl, m->dtw, a->topk_w, a->topk_idx, N, E, K);   // (N, E)
    if (c->router_aux_loss_coef > 0) be->softmax_rows_bwd_shared(be, m->drl, a->rprobs, m->aux_g, N, E);
    tp_sum(m, dx, (size_t)N * C); /* TP: column-parallel experts; the router is replicated */
    linear_bwd(m, dx, C, 1, g->router_w, g->router_b, m->drl, E, x, C, w->router_w, N, C, E, 0);
}

/* ---- forward ---- */

/* How a forward pass attends: over its own (B, T) block (training, scoring), or through a KV
 * cache (inference: n rows, each a token of some sequence at some position). */
typedef struct {
    int B, T;                  /* block mode */
    struct gpt_kv_cache *cache; /* cache mode when non-NULL */
    const int *seq, *pos;      /* (n) backend memory */
    int no_head;               /* cache mode: fill the cache only (prefill): no final norm, no logits */
    const int *head_rows;      /* cache mode, non-NULL: logits for these n_head rows only (backend memory) */
    int n_head;
} attn_mode;

struct gpt_kv_cache {
    gpt_model *m;
    int n_seq, max_len;
    int *len;        /* host: tokens held per sequence */
    int *ring;       /* per layer: slots per sequence */
    int dtype;       /* GPT_KV_* */
    void **k, **v;   /* per layer: (n_seq, ring, KV, D) of dtype */
    float **ks, **vs; /* int8: per layer (n_seq, ring, KV) scales */
    int *seq_d, *pos_d, *head_d; /* (rows_cap) staging for a call */
    int rows_cap;
};

/* One transformer block on rows x = res[l] -> res[l + 1]. */
static void layer_fwd(gpt_model *m, int l, int N, const attn_mode *am)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    int C = c->d_model, H = c->n_heads, KV = c->n_kv_heads, D = c->d_head;
    int QKV = (H + 2 * KV) * D, A = H * D;
    int norm = c->norm == GPT_NORM_RMSNORM ? GPT_NORM_OP_RMSNORM : GPT_NORM_OP_LAYERNORM;
    float eps = (float)c->norm_eps, scale = 1.0f / sqrtf((float)D);
    const layer_ptrs *w = &m->p.layer[l];
    layer_acts *a = &m->la[l];
    float *x = m->res[l];
    be->norm_fwd(be, norm, a->ln1, a->ln1_mean, a->ln1_rstd, x, w->ln1_w, w->ln1_b, N, C, eps); // (N, C)
    if (m->gpt2) {
        linear_fwd(m, a->qkv, QKV, a->ln1, C, w->qkv_w, w->qkv_b, N, C, QKV, 1);         // (N, QKV)
    } else {
        linear_fwd(m, a->qkv, QKV, a->ln1, C, w->q_w, w->q_b, N, C, A, 0);              // (N, H D)
        linear_fwd(m, a->qkv + A, QKV, a->ln1, C, w->k_w, w->k_b, N, C, KV * D, 0);     // (N, KV D)
        linear_fwd(m, a->qkv + A + KV * D, QKV, a->ln1, C, w->v_w, w->v_b, N, C, KV * D, 0);
    }
    if (!am->cache) {
        if (c->positions == GPT_POS_ROPE) {
            be->rope(be, a->qkv, QKV, am->B, am->T, H, D, m->rope_cos, m->rope_sin, 0);
            be->rope(be, a->qkv + A, QKV, am->B, am->T, KV, D, m->rope_cos, m->rope_sin, 0);
        }
        be->attn_fwd(be, a->att, a->lse, a->qkv, w->sinks, am->B, am->T, H, KV, D, window_of(m, l), scale); // (N, A)
    } else {
        struct gpt_kv_cache *kc = am->cache;
        if (c->positions == GPT_POS_ROPE) {
            be->rope_pos(be, a->qkv, QKV, N, H, D, m->rope_cos, m->rope_sin, am->pos);
            be->rope_pos(be, a->qkv + A, QKV, N, KV, D, m->rope_cos, m->rope_sin, am->pos);
        }
        if (kc->dtype == GPT_KV_F32) {
            be->kv_store(be, kc->k[l], kc->v[l], a->qkv + A, a->qkv + A + KV * D, QKV, am->seq, am->pos, N,
                         kc->ring[l], KV, D);
            be->attn_cached(be, a->att, a->qkv, QKV, kc->k[l], kc->v[l], am->seq, am->pos, N, kc->ring[l], w->sinks,
                            H, KV, D, window_of(m, l), scale);                             // (N, A)
        } else {
            float *ks = kc->ks ? kc->ks[l] : NULL, *vs = kc->vs ? kc->vs[l] : NULL;
            be->kv_store_q(be, kc->dtype, kc->k[l], kc->v[l], ks, vs, a->qkv + A, a->qkv + A + KV * D, QKV, am->seq,
                           am->pos, N, kc->ring[l], KV, D);
            be->attn_cached_q(be, kc->dtype, a->att, a->qkv, QKV, kc->k[l], kc->v[l], ks, vs, am->seq, am->pos, N,
                              kc->ring[l], w->sinks, H, KV, D, window_of(m, l), scale);   // (N, A)
        }
    }
    linear_fwd(m, a->mid, C, a->att, A, w->o_w, m->tp ? NULL : w->o_b, N, A, C, m->io); // (N, C)
    if (m->tp) tp_row_out(m, a->mid, C, w->o_b, N, C);
    be->axpy(be, a->mid, x, 1.0f, (size_t)N * C);                                       // residual
    be->norm_fwd(be, norm, a->ln2, a->ln2_mean, a->ln2_rstd, a->mid, w->ln2_w, w->ln2_b, N, C, eps);
    float *y = m->res[l + 1];
    if (c->mlp == GPT_MLP_MOE) {
        moe_fwd(m, l, y, a->ln2, N);                                                    // (N, C)
    } else {
        int F = c->d_ff;
        linear_fwd(m, a->fc, F, a->ln2, C, w->fc_w, w->fc_b, N, C, F, m->io);           // (N, F)
        be->gelu_fwd(be, a->fc_act, a->fc, (size_t)N * F);
        linear_fwd(m, y, C, a->fc_act, F, w->proj_w, m->tp ? NULL : w->proj_b, N, F, C, m->io); // (N, C)
        if (m->tp) tp_row_out(m, y, C, w->proj_b, N, C);
    }
    be->axpy(be, y, a->mid, 1.0f, (size_t)N * C);                                       // residual
}

/* TP: the rank's vocabulary rows (others contribute zero rows), summed over the group, then the
 * replicated positions. Keeps the local rows and positions for the backward pass. */
static void tp_embed_fwd(gpt_model *m, int N, const attn_mode *am)
{
    gpt_backend *be = m->be;
    int C = m->cfg.d_model, Vl = m->cfg.padded_vocab_size;
    if (N > m->tp_cap) {
        if (m->tp_rows) be->free(be, m->tp_rows), be->free(be, m->tp_pos), be->free(be, m->tp_scale);
        m->tp_rows = be->alloc(be, (size_t)N * sizeof(int));
        m->tp_pos = be->alloc(be, (size_t)N * sizeof(int));
        m->tp_scale = be->alloc(be, (size_t)N * sizeof(float));
        m->tp_lse = gpt_xrealloc(m->tp_lse, (size_t)N * sizeof(float));
        m->tp_tgt = gpt_xrealloc(m->tp_tgt, (size_t)N * sizeof(int));
        m->tp_cap = N;
    }
    int *tok = gpt_xmalloc((size_t)N * sizeof *tok), *pos = gpt_xmalloc((size_t)N * sizeof *pos);
    float *sc = gpt_xmalloc((size_t)N * sizeof *sc);
    be->to_host(be, tok, m->tokens, (size_t)N * sizeof *tok);
    for (int i = 0; i < N; i++) {
        int r = tok[i] - m->v0, in = r >= 0 && r < Vl;
        tok[i] = in ? r : 0;
        sc[i] = (float)in;
        pos[i] = am->cache ? 0 : i % am->T;
    }
    be->to_device(be, m->tp_rows, tok, (size_t)N * sizeof *tok);
    be->to_device(be, m->tp_scale, sc, (size_t)N * sizeof *sc);
    be->to_device(be, m->tp_pos, pos, (size_t)N * sizeof *pos);
    free(tok), free(pos), free(sc);
    be->gather_rows(be, m->res[0], m->p.wte, m->tp_rows, m->tp_scale, N, C);
    tp_sum(m, m->res[0], (size_t)N * C);
    if (m->p.wpe) {
        float *tmp = be->alloc(be, (size_t)N * C * sizeof(float));
        be->gather_rows(be, tmp, m->p.wpe, am->cache ? am->pos : m->tp_pos, NULL, N, C);
        be->axpy(be, m->res[0], tmp, 1.0f, (size_t)N * C);
        be->free(be, tmp);
    }
}

/* PP, a stage before the last: res[l1] (N, C) -> pp_out, followed by the router statistics summed
 * over the layers so far (counts, then probability sums: 2E floats) when the aux loss is on. */
static void pp_stage_out(gpt_model *m, int N)
{
    const gpt_model_config *c = &m->cfg;
    size_t NC = (size_t)N * c->d_model;
    m->be->to_host(m->be, m->pp_out, m->res[m->pp_l1], NC * sizeof(float));
    if (c->mlp != GPT_MLP_MOE || c->router_aux_loss_coef <= 0) return;
    int E = c->n_experts;
    for (int e = 0; e < E; e++) {
        double cnt = m->pp_noembed ? m->pp_in[NC + e] : 0, ps = m->pp_noembed ? m->pp_in[NC + E + e] : 0;
        for (int l = m->pp_l0; l < m->pp_l1; l++) cnt += m->la[l].counts_h[e], ps += m->la[l].probsum_h[e];
        m->pp_out[NC + e] = (float)cnt;
        m->pp_out[NC + E + e] = (float)ps;
    }
}

/* Embedding, every block, final norm, logits (N, Vp). */
static void model_fwd(gpt_model *m, int N, const attn_mode *am)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    int C = c->d_model, L = c->n_layers, Vp = c->padded_vocab_size;
    int norm = c->norm == GPT_NORM_RMSNORM ? GPT_NORM_OP_RMSNORM : GPT_NORM_OP_LAYERNORM;
    int l0 = m->pp_l0, l1 = m->pp_l1 ? m->pp_l1 : L;
    if (m->pp_noembed) {
        be->to_device(be, m->res[l0], m->pp_in, (size_t)N * C * sizeof(float)); /* PP: the previous stage's output */
        if (m->tp && N > m->tp_cap) { /* the TP loss's host scratch (tp_embed_fwd sizes it on stage 0) */
            m->tp_lse = gpt_xrealloc(m->tp_lse, (size_t)N * sizeof(float));
            m->tp_tgt = gpt_xrealloc(m->tp_tgt, (size_t)N * sizeof(int));
        }
    } else if (m->tp) {
        tp_embed_fwd(m, N, am);
    } else if (am->cache && m->p.wpe) {
        /* learned positions by explicit position: a gather of wpe rows added to the token rows */
        be->embed_fwd(be, m->res[0], m->tokens, m->p.wte, NULL, 1, N, C);
        float *tmp = be->alloc(be, (size_t)N * C * sizeof(float));
        be->gather_rows(be, tmp, m->p.wpe, am->pos, NULL, N, C);
        be->axpy(be, m->res[0], tmp, 1.0f, (size_t)N * C);
        be->free(be, tmp);
    } else {
        be->embed_fwd(be, m->res[0], m->tokens, m->p.wte, m->p.wpe, am->cache ? 1 : am->B, am->cache ? N : am->T, C);
    }
    for (int l = l0; l < l1; l++) layer_fwd(m, l, N, am);
    if (m->pp_nohead) {
        pp_stage_out(m, N);
        return;
    }
    if (am->no_head) return; /* prefill: the LM head would be a third of a small model's work, unread */
    const float *hid = m->res[L];                                                         // (N, C)
    float *picked = NULL;
    if (am->head_rows) { /* a prompt's last rows only: their logits are the ones sampled from */
        picked = be->alloc(be, (size_t)am->n_head * C * sizeof(float));
        be->gather_rows(be, picked, hid, am->head_rows, NULL, am->n_head, C);          // (n_head, C)
        hid = picked, N = am->n_head;
    }
    be->norm_fwd(be, norm, m->lnf, m->lnf_mean, m->lnf_rstd, hid, m->p.lnf_w, m->p.lnf_b, N, C, (float)c->norm_eps);
    be->gemm(be, 0, 1, N, Vp, C, 1.0f, m->lnf, C, m->p.lm_w, C, 0.0f, m->logits, Vp);   // (N, Vp)
    if (picked) be->free(be, picked);
}

int gpt_model_forward(gpt_model *m, const int *tokens, const int *targets, int B, int T, const gpt_forward_opts *opts,
                      gpt_loss *loss, gpt_err *err)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    if (B <= 0 || T <= 0 || T > c->max_seq_len)
        return gpt_errf(err, "forward: batch %d x %d tokens is outside 1..max_seq_len %d", B, T, c->max_seq_len);
    int N = B * T, L = c->n_layers, V = c->vocab_size, Vp = c->padded_vocab_size;
    for (int i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return gpt_errf(err, "forward: token %d at position %d is outside the vocabulary (%d)", tokens[i], i, V);
    if (!m->res || N > m->Ncap) alloc_acts(m, N);
    ensure_rope(m, T);
    m->B = B, m->T = T;
    m->have_loss = 0;
    be->to_device(be, m->tokens, tokens, (size_t)N * sizeof(int));
    attn_mode am = {.B = B, .T = T};
    model_fwd(m, N, &am);
    if (!targets) return 0;
    if (m->pp_nohead) { /* PP: the loss is the last stage's; the backward starts from pp_dout */
        m->have_loss = 1;
        if (loss) memset(loss, 0, sizeof *loss);
        return 0;
    }

    /* ---- loss ---- */
    m->smoothing = opts ? opts->label_smoothing : 0.0f;
    const double lscale = opts && opts->loss_scale > 0 ? opts->loss_scale : 1.0;
    be->to_device(be, m->targets, targets, (size_t)N * sizeof(int));
    int64_t scored = 0;
    for (int i = 0; i < N; i++) {
        if (targets[i] >= V) return gpt_errf(err, "forward: target %d at position %d is outside the vocabulary", targets[i], i);
        scored += targets[i] >= 0;
    }
    float *losses = gpt_xmalloc((size_t)N * sizeof *losses);
    int *correct = gpt_xmalloc((size_t)N * sizeof *correct);
    gpt_loss out = {0};
    if (m->tp) {
        /* vocabulary-parallel: no rank holds a full row of logits */
        int Vl = c->padded_vocab_size;
        float *lg = gpt_xmalloc((size_t)N * Vl * sizeof *lg), *nll = gpt_xmalloc((size_t)N * sizeof *nll);
        be->to_host(be, lg, m->logits, (size_t)N * Vl * sizeof *lg);
        memcpy(m->tp_tgt, targets, (size_t)N * sizeof *targets);
        int rc = gpt_tp_xent(m->tp, lg, targets, N, Vl, m->v0, V, m->smoothing, losses, nll, correct, m->tp_lse, err);
        double sum = 0, sn = 0;
        for (int i = 0; i < N; i++) sum += losses[i], sn += nll[i], out.n_correct += correct[i];
        out.ce = scored ? sum / (double)scored : 0.0;
        out.nll = scored ? sn / (double)scored : 0.0;
        free(lg), free(nll);
        if (rc < 0) {
            free(losses), free(correct);
            return -1;
        }
    } else {
    /* the smoothed and the plain loss in one pass each: smoothing 0 gives the NLL */
    be->xent(be, m->losses, m->correct, NULL, m->logits, m->targets, N, V, Vp, m->smoothing, 0.0f);
    be->to_host(be, losses, m->losses, (size_t)N * sizeof *losses);
    be->to_host(be, correct, m->correct, (size_t)N * sizeof *correct);
    double sum = 0;
    for (int i = 0; i < N; i++) {
        sum += losses[i];
        out.n_correct += correct[i];
    }
    out.ce = scored ? sum / (double)scored : 0.0;
    if (m->smoothing != 0.0f) {
        be->xent(be, m->losses, m->correct, NULL, m->logits, m->targets, N, V, Vp, 0.0f, 0.0f);
        be->to_host(be, losses, m->losses, (size_t)N * sizeof *losses);
        sum = 0;
        for (int i = 0; i < N; i++) sum += losses[i];
    }
    out.nll = scored ? sum / (double)scored : 0.0;
    }
    out.n_scored = scored;
    out.total = out.ce;
    if (c->mlp == GPT_MLP_MOE && c->router_aux_loss_coef > 0) {
        /* Switch-style load balancing over every (layer, token) row, as Hugging Face computes it:
         * aux = E * sum_e (share of top-k picks of e) * (mean router probability of e). */
        int E = c->n_experts;
        double R = (double)N * L, *cnt = gpt_xcalloc((size_t)E, sizeof *cnt), *ps = gpt_xcalloc((size_t)E, sizeof *ps);
        for (int e = 0; e < E && m->pp_noembed; e++) { /* PP: the earlier stages' layers */
            cnt[e] = m->pp_in[(size_t)N * c->d_model + e];
            ps[e] = m->pp_in[(size_t)N * c->d_model + E + e];
        }
        for (int l = m->pp_l0; l < (m->pp_l1 ? m->pp_l1 : L); l++)
            for (int e = 0; e < E; e++) {
                cnt[e] += m->la[l].counts_h[e];
                ps[e] += m->la[l].probsum_h[e];
            }
        double aux = 0;
        float *g = gpt_xmalloc((size_t)E * sizeof *g);
        for (int e = 0; e < E; e++) {
            aux += (cnt[e] / R) * (ps[e] / R);
            g[e] = (float)(lscale * c->router_aux_loss_coef * E * cnt[e] / (R * R));
        }
        out.aux = aux * E;
        out.total += c->router_aux_loss_coef * out.aux;
        be->to_device(be, m->aux_g, g, (size_t)E * sizeof *g);
        free(g);
        free(cnt);
        free(ps);
    }
    free(losses);
    free(correct);
    m->dscale = scored ? lscale / (double)scored : 0.0;
    m->have_loss = 1;
    if (loss) *loss = out;
    return 0;
}

/* ---- backward ---- */

void gpt_model_set_grad_hook(gpt_model *m, gpt_grad_ready_fn fn, void *ctx)
{
    m->grad_ready = fn;
    m->grad_ready_ctx = ctx;
}

/* [*lo, *hi) of the gradient buffer: layer l's tensors (the table keeps a layer's tensors together,
 * padding included), or with l < 0 every layer's; *lo == *hi when there are none. */
static void layer_extent(const gpt_model *m, int l, size_t *lo, size_t *hi)
{
    const gpt_param_table *tab = &m->tab;
    *lo = *hi = 0;
    int any = 0;
    for (int i = 0; i < tab->n; i++) {
        if (l < 0 ? tab->t[i].layer < 0 : tab->t[i].layer != l) continue;
        size_t a = tab->t[i].offset, b = i + 1 < tab->n ? tab->t[i + 1].offset : tab->total;
        if (!any || a < *lo) *lo = a;
        if (!any || b > *hi) *hi = b;
        any = 1;
    }
}

int gpt_model_backward(gpt_model *m, gpt_err *err)
{
    ensure_grads(m);
    if (m->mxfp4 || !m->grads)
        return gpt_errf(err, "backward: this model keeps its experts in MXFP4 for inference and has no gradients; "
                             "load it with the experts dequantized to fp32 to train");
    if (!m->have_loss) return gpt_errf(err, "backward: no forward pass with targets to differentiate");
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    int B = m->B, T = m->T, N = B * T, C = c->d_model, H = c->n_heads, KV = c->n_kv_heads, D = c->d_head;
    int L = c->n_layers, QKV = (H + 2 * KV) * D, A = H * D, V = c->vocab_size, Vp = c->padded_vocab_size;
    int norm = c->norm == GPT_NORM_RMSNORM ? GPT_NORM_OP_RMSNORM : GPT_NORM_OP_LAYERNORM;
    float scale = 1.0f / sqrtf((float)D);

    int l0 = m->pp_l0, l1 = m->pp_l1 ? m->pp_l1 : L;
    /* grad hook: the layers reported so far [hk_lo, hk_hi), and where an early-reported tail starts */
    size_t hk_lo = m->tab.total, hk_hi = 0, hk_tail = m->tab.total;
    if (m->pp_nohead) { /* PP: d res[l1] (and the aux-loss gradient) come from the next stage */
        be->to_device(be, m->dres, m->pp_dout, (size_t)N * C * sizeof(float));
        if (c->mlp == GPT_MLP_MOE && c->router_aux_loss_coef > 0)
            be->to_device(be, m->aux_g, m->pp_dout + (size_t)N * C, (size_t)c->n_experts * sizeof(float));
        goto layers;
    }
    /* loss -> logits, in place */
    if (m->tp) {
        float *lg = gpt_xmalloc((size_t)N * Vp * sizeof *lg);
        be->to_host(be, lg, m->logits, (size_t)N * Vp * sizeof *lg);
        gpt_tp_xent_bwd(lg, lg, m->tp_tgt, m->tp_lse, N, Vp, m->v0, V, m->smoothing, (float)m->dscale);
        be->to_device(be, m->logits, lg, (size_t)N * Vp * sizeof *lg);
        free(lg);
    } else {
        be->xent(be, m->losses, m->correct, m->logits, m->logits, m->targets, N, V, Vp, m->smoothing, (float)m->dscale);
    }
    float *dlogits = m->logits;                                                          // (N, Vp)
    be->gemm(be, 0, 0, N, C, Vp, 1.0f, dlogits, Vp, m->p.lm_w, C, 0.0f, m->dln, C);     // (N, C)
    tp_sum(m, m->dln, (size_t)N * C); /* TP: lm_head is column-parallel (vocabulary rows) */
    be->gemm(be, 1, 0, Vp, C, N, 1.0f, dlogits, Vp, m->lnf, C, 1.0f, m->g.lm_w, C);     // (Vp, C)
    be->zero(be, m->dres, (size_t)N * C * sizeof(float));
    be->norm_bwd(be, norm, m->dres, m->g.lnf_w, m->g.lnf_b, m->dln, m->res[L], m->p.lnf_w, m->lnf_mean, m->lnf_rstd,
                 N, C);
    if (m->grad_ready && !m->pp && m->g.lm_w != m->g.wte) { /* tied: the head's gradient is the embedding's */
        size_t lo, hi;
        layer_extent(m, -2, &lo, &hi);
        if (lo < hi) { /* (no layers: the embedding is not final yet, so the end reports it all) */
            if (hi < m->tab.total) m->grad_ready(m->grad_ready_ctx, hi, m->tab.total - hi);
            hk_tail = hi;
        }
    }
layers:
    for (int l = l1 - 1; l >= l0; l--) {
        const layer_ptrs *w = &m->p.layer[l], *g = &m->g.layer[l];
        layer_acts *a = &m->la[l];
        /* dres = d res[l+1]; res[l+1] = mid + mlp(ln2(mid)) */
        if (c->mlp == GPT_MLP_MOE) {
            moe_bwd(m, l, m->dln, m->dres, a->ln2, N);                                   // (N, C)
        } else {
            int F = c->d_ff;
            linear_bwd(m, m->dff, F, 0, g->proj_w, g->proj_b, m->dres, C, a->fc_act, F, w->proj_w, N, F, C, m->io);
            be->gelu_bwd(be, m->dff, a->fc, m->dff, (size_t)N * F);                      // (N, F)
            linear_bwd(m, m->dln, C, 0, g->fc_w, g->fc_b, m->dff, F, a->ln2, C, w->fc_w, N, C, F, m->io);
            tp_sum(m, m->dln, (size_t)N * C);
        }
        be->norm_bwd(be, norm, m->dres, g->ln2_w, g->ln2_b, m->dln, a->mid, w->ln2_w, a->ln2_mean, a->ln2_rstd, N, C);
        /* dres = d mid; mid = x + o(attn(ln1(x))) */
        linear_bwd(m, m->datt, A, 0, g->o_w, g->o_b, m->dres, C, a->att, A, w->o_w, N, A, C, m->io); // (N, A)
        be->attn_bwd(be, m->dqkv, g->sinks, m->datt, a->att, a->lse, a->qkv, w->sinks, B, T, H, KV, D,
                     window_of(m, l), scale);                                            // (N, QKV)
        if (c->positions == GPT_POS_ROPE) {
            be->rope(be, m->dqkv, QKV, B, T, H, D, m->rope_cos, m->rope_sin, 1);
            be->rope(be, m->dqkv + A, QKV, B, T, KV, D, m->rope_cos, m->rope_sin, 1);
        }
        if (m->gpt2) {
            linear_bwd(m, m->dln, C, 0, g->qkv_w, g->qkv_b, m->dqkv, QKV, a->ln1, C, w->qkv_w, N, C, QKV, 1);
        } else {
            linear_bwd(m, m->dln, C, 0, g->q_w, g->q_b, m->dqkv, QKV, a->ln1, C, w->q_w, N, C, A, 0);
            linear_bwd(m, m->dln, C, 1, g->k_w, g->k_b, m->dqkv + A, QKV, a->ln1, C, w->k_w, N, C, KV * D, 0);
            linear_bwd(m, m->dln, C, 1, g->v_w, g->v_b, m->dqkv + A + KV * D, QKV, a->ln1, C, w->v_w, N, C, KV * D, 0);
        }
        tp_sum(m, m->dln, (size_t)N * C); /* TP: q, k, v are column-parallel */
        be->norm_bwd(be, norm, m->dres, g->ln1_w, g->ln1_b, m->dln, m->res[l], w->ln1_w, a->ln1_mean, a->ln1_rstd, N,
                     C);
        size_t lo, hi;
        if (m->grad_ready && (layer_extent(m, l, &lo, &hi), lo < hi)) {
            m->grad_ready(m->grad_ready_ctx, lo, hi - lo);
            if (lo < hk_lo) hk_lo = lo;
            if (hi > hk_hi) hk_hi = hi;
        }
    }
    if (m->pp_noembed) { /* PP: d res[l0] (and the aux-loss gradient) go to the previous stage */
        be->to_host(be, m->pp_din, m->dres, (size_t)N * C * sizeof(float));
        if (c->mlp == GPT_MLP_MOE && c->router_aux_loss_coef > 0)
            be->to_host(be, m->pp_din + (size_t)N * C, m->aux_g, (size_t)c->n_experts * sizeof(float));
    } else if (m->tp) {
        be->scatter_add_rows(be, m->g.wte, m->dres, m->tp_rows, m->tp_scale, N, C);
        if (m->g.wpe) be->scatter_add_rows(be, m->g.wpe, m->dres, m->tp_pos, NULL, N, C);
    } else {
        be->embed_bwd(be, m->g.wte, m->g.wpe, m->dres, m->tokens, B, T, C);
    }
    if (m->grad_ready) { /* the rest: the head (unless reported above) and the embedding */
        if (hk_lo > hk_hi) hk_lo = hk_hi = 0;
        if (hk_hi < hk_tail) m->grad_ready(m->grad_ready_ctx, hk_hi, hk_tail - hk_hi);
        if (hk_lo > 0) m->grad_ready(m->grad_ready_ctx, 0, hk_lo);
    }
    m->have_loss = 0; /* the logits now hold their gradient */
    return 0;
}

/* ---- inference through a KV cache ---- */

gpt_kv_cache *gpt_kv_cache_create(gpt_model *m, int n_seq, int max_len, gpt_err *err)
{
    return gpt_kv_cache_create_ex(m, n_seq, max_len, NULL, err);
}

static size_t kv_elem_size(int dtype) { return dtype == GPT_KV_BF16 ? 2 : dtype == GPT_KV_INT8 ? 1 : 4; }

gpt_kv_cache *gpt_kv_cache_create_ex(gpt_model *m, int n_seq, int max_len, const gpt_kv_opts *opts, gpt_err *err)
{
    const gpt_model_config *c = &m->cfg;
    int dtype = opts ? opts->dtype : GPT_KV_F32;
    if (dtype != GPT_KV_F32 && dtype != GPT_KV_BF16 && dtype != GPT_KV_INT8) {
        gpt_errf(err, "KV cache: unknown dtype %d (f32, bf16 or int8)", dtype);
        return NULL;
    }
    if (dtype != GPT_KV_F32 && (!m->be->kv_store_q || !m->be->attn_cached_q)) {
        gpt_errf(err, "KV cache: the %s backend cannot hold a %s cache; use f32", m->be->name,
                 dtype == GPT_KV_BF16 ? "bf16" : "int8");
        return NULL;
    }
    if (n_seq <= 0 || max_len <= 0 || max_len > c->max_seq_len) {
        gpt_errf(err, "KV cache: %d sequences of %d tokens is outside 1..max_seq_len %d", n_seq, max_len,
                 c->max_seq_len);
        return NULL;
    }
    gpt_backend *be = m->be;
    gpt_kv_cache *kc = gpt_xcalloc(1, sizeof *kc);
    kc->m = m;
    kc->n_seq = n_seq;
    kc->max_len = max_len;
    kc->len = gpt_xcalloc((size_t)n_seq, sizeof *kc->len);
    kc->ring = gpt_xcalloc((size_t)c->n_layers, sizeof *kc->ring);
    kc->k = gpt_xcalloc((size_t)c->n_layers, sizeof *kc->k);
    kc->v = gpt_xcalloc((size_t)c->n_layers, sizeof *kc->v);
    kc->dtype = dtype;
    if (dtype == GPT_KV_INT8) {
        kc->ks = gpt_xcalloc((size_t)c->n_layers, sizeof *kc->ks);
        kc->vs = gpt_xcalloc((size_t)c->n_layers, sizeof *kc->vs);
    }
    size_t w = (size_t)c->n_kv_heads * c->d_head, es = kv_elem_size(dtype);
    int kl0, kl1;
    gpt_model_pp_info(m, NULL, &kl0, &kl1);
    for (int l = 0; l < c->n_layers; l++) {
        if (l < kl0 || l >= kl1) continue; /* PP: a stage caches only its own layers (k[l] NULL) */
        int win = window_of(m, l);
        /* A sliding layer keeps a ring of its window, plus room for the tokens of one call: the
         * newest of them must not overwrite keys the oldest still reads. */
        kc->ring[l] = win > 0 && win + GPT_KV_CHUNK - 1 < max_len ? win + GPT_KV_CHUNK - 1 : max_len;
        kc->k[l] = be->alloc(be, (size_t)n_seq * kc->ring[l] * w * es);
        kc->v[l] = be->alloc(be, (size_t)n_seq * kc->ring[l] * w * es);
        if (kc->ks) {
            kc->ks[l] = be->alloc(be, (size_t)n_seq * kc->ring[l] * c->n_kv_heads * sizeof(float));
            kc->vs[l] = be->alloc(be, (size_t)n_seq * kc->ring[l] * c->n_kv_heads * sizeof(float));
        }
    }
    return kc;
}

void gpt_kv_cache_free(gpt_kv_cache *kc)
{
    if (!kc) return;
    gpt_backend *be = kc->m->be;
    for (int l = 0; l < kc->m->cfg.n_layers; l++) {
        if (!kc->k[l]) continue; /* PP: another stage's layer */
        be->free(be, kc->k[l]);
        be->free(be, kc->v[l]);
        if (kc->ks) be->free(be, kc->ks[l]), be->free(be, kc->vs[l]);
    }
    free(kc->ks), free(kc->vs);
    if (kc->seq_d) be->free(be, kc->seq_d);
    if (kc->pos_d) be->free(be, kc->pos_d);
    if (kc->head_d) be->free(be, kc->head_d);
    free(kc->k), free(kc->v), free(kc->ring), free(kc->len), free(kc);
}

int gpt_kv_cache_len(const gpt_kv_cache *kc, int seq) { return seq >= 0 && seq < kc->n_seq ? kc->len[seq] : -1; }

void gpt_kv_cache_clear(gpt_kv_cache *kc, int seq)
{
    for (int s = 0; s < kc->n_seq; s++)
        if (seq < 0 || s == seq) kc->len[s] = 0; /* stale slots are never read: reads stop at len */
}

void gpt_kv_cache_copy(gpt_kv_cache *kc, int dst, int src)
{
    if (dst == src || dst < 0 || src < 0 || dst >= kc->n_seq || src >= kc->n_seq) return;
    gpt_backend *be = kc->m->be;
    size_t w = (size_t)kc->m->cfg.n_kv_heads * kc->m->cfg.d_head;
    if (kc->dtype != GPT_KV_F32) { /* through the host: the backend has no device copy of bytes */
        size_t es = kv_elem_size(kc->dtype), KV = (size_t)kc->m->cfg.n_kv_heads;
        for (int l = 0; l < kc->m->cfg.n_layers; l++) {
            if (!kc->k[l]) continue;
            size_t slots = (size_t)(kc->len[src] < kc->ring[l] ? kc->len[src] : kc->ring[l]), per = (size_t)kc->ring[l];
            unsigned char *tmp = gpt_xmalloc(slots * w * es + 1);
            void *planes[2] = {kc->k[l], kc->v[l]};
            for (int p = 0; p < 2; p++) {
                be->to_host(be, tmp, (unsigned char *)planes[p] + (size_t)src * per * w * es, slots * w * es);
                be->to_device(be, (unsigned char *)planes[p] + (size_t)dst * per * w * es, tmp, slots * w * es);
            }
            for (int p = 0; kc->ks && p < 2; p++) {
                float *sc = p ? kc->vs[l] : kc->ks[l];
                be->to_host(be, tmp, sc + (size_t)src * per * KV, slots * KV * sizeof(float));
                be->to_device(be, sc + (size_t)dst * per * KV, tmp, slots * KV * sizeof(float));
            }
            free(tmp);
        }
        kc->len[dst] = kc->len[src];
        return;
    }
    for (int l = 0; l < kc->m->cfg.n_layers; l++) {
        if (!kc->k[l]) continue;
        size_t per = (size_t)kc->ring[l] * w, used = (size_t)(kc->len[src] < kc->ring[l] ? kc->len[src] : kc->ring[l]) * w;
        float *planes[2] = {kc->k[l], kc->v[l]};
        for (int p = 0; p < 2; p++) { /* the backend has no device copy: zero + axpy is one, exactly */
            float *d = planes[p] + (size_t)dst * per;
            be->zero(be, d, used * sizeof *d);
            be->axpy(be, d, planes[p] + (size_t)src * per, 1.0f, used);
        }
    }
    kc->len[dst] = kc->len[src];
}

/* PP inference (gpt_model_pp_set_comm): the previous stage's rows in, this stage's layers, the
 * rows out to the next stage. Every stage runs the same calls in the same order, so the
 * blocking send/recv pairs match. */
static int pp_extend_fwd(gpt_model *m, int n, const attn_mode *am, gpt_err *err)
{
    enum { TAG_EXTEND = 5 };
    gpt_comm *pp = m->pp_comm;
    size_t xf = (size_t)n * m->cfg.d_model + gpt_model_pp_fwd_extra(m);
    float *in = m->pp_noembed ? gpt_xmalloc(xf * sizeof *in) : NULL;
    float *out = m->pp_nohead ? gpt_xmalloc(xf * sizeof *out) : NULL;
    int rc = in ? pp->recv(pp, in, xf * sizeof *in, m->pp_stage - 1, TAG_EXTEND, err) : 0;
    if (rc == 0) {
        m->pp_in = in, m->pp_out = out;
        model_fwd(m, n, am);
        m->pp_in = NULL, m->pp_out = NULL;
        if (out) rc = pp->send(pp, out, xf * sizeof *out, m->pp_stage + 1, TAG_EXTEND, err);
    }
    free(in), free(out);
    return rc;
}

/* head: 0 no logits (prefill), 1 every row's, 2 the rows head_rows lists (n_head of them, increasing) */
static int model_extend(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n, float *logits,
                        int head, const int *head_rows, int n_head, gpt_err *err)
{
    const gpt_model_config *c = &m->cfg;
    gpt_backend *be = m->be;
    if (kc->m != m) return gpt_errf(err, "extend: the KV cache belongs to another model");
    if (m->ep) return gpt_errf(err, "extend: an expert-parallel model trains only; load the full model to generate");
    if (n <= 0) return 0;
    int *pos = gpt_xmalloc((size_t)n * sizeof *pos), *added = gpt_xcalloc((size_t)kc->n_seq, sizeof *added);
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int s = seqs[i];
        if (s < 0 || s >= kc->n_seq)
            rc = gpt_errf(err, "extend: row %d names sequence %d; the cache holds %d", i, s, kc->n_seq);
        else if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            rc = gpt_errf(err, "extend: token %d at row %d is outside the vocabulary (%d)", tokens[i], i, c->vocab_size);
        else if ((pos[i] = kc->len[s] + added[s]++) >= kc->max_len)
            rc = gpt_errf(err, "extend: sequence %d would exceed the cache's %d tokens (the context is full)", s,
                          kc->max_len);
    }
    for (int i = 0; head == 2 && i < n_head && rc == 0; i++)
        if (head_rows[i] < 0 || head_rows[i] >= n || (i > 0 && head_rows[i] <= head_rows[i - 1]))
            rc = gpt_errf(err, "extend: logits row %d is %d; want increasing rows in 0..%d", i, head_rows[i], n - 1);
    if (head == 2 && n_head <= 0 && rc == 0) head = 0;
    int n_out = head == 2 ? n_head : n; /* rows of logits */
    for (int s = 0; s < kc->n_seq && rc == 0; s++)
        if (added[s] > GPT_KV_CHUNK)
            rc = gpt_errf(err, "extend: %d new tokens for sequence %d in one call; feed at most %d per call", added[s], s,
                          GPT_KV_CHUNK);
    if (rc == 0) {
        if (!m->res || n > m->Ncap) alloc_acts(m, n);
        if (n > kc->rows_cap) {
            if (kc->seq_d) be->free(be, kc->seq_d), be->free(be, kc->pos_d), be->free(be, kc->head_d);
            kc->rows_cap = n;
            kc->seq_d = be->alloc(be, (size_t)n * sizeof(int));
            kc->pos_d = be->alloc(be, (size_t)n * sizeof(int));
            kc->head_d = be->alloc(be, (size_t)n * sizeof(int));
        }
        int maxpos = 0;
        for (int i = 0; i < n; i++) maxpos = pos[i] + 1 > maxpos ? pos[i] + 1 : maxpos;
        ensure_rope(m, maxpos);
        be->to_device(be, m->tokens, tokens, (size_t)n * sizeof(int));
        be->to_device(be, kc->seq_d, seqs, (size_t)n * sizeof(int));
        be->to_device(be, kc->pos_d, pos, (size_t)n * sizeof(int));
        m->have_loss = 0;
        if (head == 2) be->to_device(be, kc->head_d, head_rows, (size_t)n_head * sizeof(int));
        attn_mode am = {.cache = kc, .seq = kc->seq_d, .pos = kc->pos_d, .no_head = !head,
                        .head_rows = head == 2 ? kc->head_d : NULL, .n_head = n_head};
        if (m->pp_comm)
            rc = pp_extend_fwd(m, n, &am, err);
        else
            model_fwd(m, n, &am);
        for (int s = 0; s < kc->n_seq && rc == 0; s++) kc->len[s] += added[s];
        if (rc < 0 || m->pp_nohead) {
            /* PP: the logits are the last stage's (broadcast below) */
        } else if (logits && m->tp) {
            /* TP inference: gather the vocabulary slices into full rows (the caller samples) */
            int V = c->vocab_size, Vl = c->padded_vocab_size, P = m->tp->size;
            float *mine = gpt_xmalloc((size_t)n_out * Vl * sizeof *mine), *all = gpt_xmalloc((size_t)P * n_out * Vl * sizeof *all);
            be->to_host(be, mine, m->logits, (size_t)n_out * Vl * sizeof *mine);
            rc = m->tp->allgather(m->tp, mine, all, (size_t)n_out * Vl, err);
            for (int r = 0; r < P && rc == 0; r++)
                for (int i = 0; i < n_out; i++)
                    for (int j = 0; j < Vl && r * Vl + j < V; j++)
                        logits[(size_t)i * V + r * Vl + j] = all[((size_t)r * n_out + i) * Vl + j];
            free(mine), free(all);
        } else if (logits) {
            int V = c->vocab_size, Vp = c->padded_vocab_size;
            if (V == Vp)
                be->to_host(be, logits, m->logits, (size_t)n_out * V * sizeof(float));
            else
                for (int i = 0; i < n_out; i++)
                    be->to_host(be, logits + (size_t)i * V, m->logits + (size_t)i * Vp, (size_t)V * sizeof(float));
        }
        if (rc == 0 && logits && m->pp_comm)
            rc = m->pp_comm->broadcast(m->pp_comm, logits, (size_t)n_out * c->vocab_size * sizeof *logits, m->pp - 1, err);
    }
    free(pos);
    free(added);
    return rc;
}

int gpt_model_extend(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n, float *logits,
                     gpt_err *err)
{
    return model_extend(m, kc, tokens, seqs, n, logits, 1, NULL, 0, err);
}

int gpt_model_extend_rows(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n,
                          const int *head_rows, int n_head, float *logits, gpt_err *err)
{
    return model_extend(m, kc, tokens, seqs, n, logits, 2, head_rows, n_head, err);
}

int gpt_model_prefill(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n, gpt_err *err)
{
    return model_extend(m, kc, tokens, seqs, n, NULL, 0, NULL, 0, err);
}

/* ---- pipeline parallelism hooks (model_pp.h) ---- */

gpt_model *gpt_model_pp_create_(const gpt_model_config *cfg, gpt_backend *be, const gpt_param_table *tab, int gpt2,
                                int pp, int stage, int l0, int l1)
{
    gpt_model *m = gpt_xcalloc(1, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->tab = *tab; /* taken over */
    m->gpt2 = m->io = gpt2;
    m->pp = pp, m->pp_stage = stage, m->pp_l0 = l0, m->pp_l1 = l1;
    m->pp_noembed = stage > 0;
    m->pp_nohead = stage < pp - 1;
    m->params = be->alloc(be, m->tab.total * sizeof(float));
    be->zero(be, m->params, m->tab.total * sizeof(float));
    bind(m, m->params, &m->p);
    return m; /* gradients on first use (ensure_grads) */
}

void gpt_model_pp_io_(gpt_model *m, const float *in, float *out, const float *dout, float *din)
{
    m->pp_in = in, m->pp_out = out, m->pp_dout = dout, m->pp_din = din;
}

void gpt_model_ep_attach_(gpt_model *m, gpt_ep_state *s) { m->ep = s; }
gpt_ep_state *gpt_model_ep_state_(const gpt_model *m) { return m->ep; }

int gpt_model_pp_info(const gpt_model *m, int *stage, int *l0, int *l1)
{
    if (stage) *stage = m->pp ? m->pp_stage : 0;
    if (l0) *l0 = m->pp_l0;
    if (l1) *l1 = m->pp_l1 ? m->pp_l1 : m->cfg.n_layers;
    return m->pp ? m->pp : 1;
}

void gpt_model_pp_set_comm(gpt_model *m, gpt_comm *pp) { m->pp_comm = m->pp > 1 ? pp : NULL; }
gpt_comm *gpt_model_pp_comm(const gpt_model *m) { return m->pp_comm; }
