/* params.c: the parameter table of both model families, its init, and parameter counts. */
#include "params.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    gpt_param_table *tab;
    int cap;
} builder;

__attribute__((format(printf, 6, 7))) static void add(builder *b, gpt_tensor_role role, int layer, int ndim,
                                                      const int64_t *shape, const char *fmt, ...)
{
    gpt_param_table *tab = b->tab;
    if (tab->n == b->cap) tab->t = gpt_xrealloc(tab->t, (size_t)(b->cap = b->cap ? b->cap * 2 : 64) * sizeof *tab->t);
    gpt_tensor *t = &tab->t[tab->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->role = role;
    t->layer = layer;
    /* 16-float alignment: every tensor starts on a 64-byte boundary */
    t->offset = tab->total;
    tab->total += (t->numel + 15) & ~(size_t)15;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define ADD(role, layer, fmtname, ...) add(&b, role, layer, NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__), fmtname)
#define ADDL(role, layer, fmtname, ...) add(&b, role, layer, NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__), fmtname, layer)

static void build_gpt2(const gpt_model_config *c, builder *bp)
{
    builder b = *bp;
    int64_t V = c->padded_vocab_size, C = c->d_model, F = c->d_ff, T = c->max_seq_len;
    int64_t QKV = (int64_t)(c->n_heads + 2 * c->n_kv_heads) * c->d_head, A = (int64_t)c->n_heads * c->d_head;
    ADD(GPT_ROLE_EMBED, -1, "transformer.wte.weight", V, C);
    ADD(GPT_ROLE_EMBED, -1, "transformer.wpe.weight", T, C);
    for (int l = 0; l < c->n_layers; l++) {
        ADDL(GPT_ROLE_NORM, l, "transformer.h.%d.ln_1.weight", C);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.ln_1.bias", C);
        /* Conv1D layout: (in, out) */
        ADDL(GPT_ROLE_WEIGHT, l, "transformer.h.%d.attn.c_attn.weight", C, QKV);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.attn.c_attn.bias", QKV);
        ADDL(GPT_ROLE_RESIDUAL, l, "transformer.h.%d.attn.c_proj.weight", A, C);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.attn.c_proj.bias", C);
        ADDL(GPT_ROLE_NORM, l, "transformer.h.%d.ln_2.weight", C);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.ln_2.bias", C);
        ADDL(GPT_ROLE_WEIGHT, l, "transformer.h.%d.mlp.c_fc.weight", C, F);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.mlp.c_fc.bias", F);
        ADDL(GPT_ROLE_RESIDUAL, l, "transformer.h.%d.mlp.c_proj.weight", F, C);
        ADDL(GPT_ROLE_BIAS, l, "transformer.h.%d.mlp.c_proj.bias", C);
    }
    ADD(GPT_ROLE_NORM, -1, "transformer.ln_f.weight", C);
    ADD(GPT_ROLE_BIAS, -1, "transformer.ln_f.bias", C);
    if (!c->tie_embeddings) ADD(GPT_ROLE_EMBED, -1, "lm_head.weight", V, C);
    *bp = b;
}

static void build_gpt_oss(const gpt_model_config *c, builder *bp)
{
    builder b = *bp;
    int64_t V = c->padded_vocab_size, C = c->d_model, D = c->d_head;
    int64_t Q = (int64_t)c->n_heads * D, KVD = (int64_t)c->n_kv_heads * D;
    ADD(GPT_ROLE_EMBED, -1, "model.embed_tokens.weight", V, C);
    if (c->positions == GPT_POS_LEARNED) ADD(GPT_ROLE_EMBED, -1, "model.embed_positions.weight", c->max_seq_len, C);
    int rms = c->norm == GPT_NORM_RMSNORM;
    for (int l = 0; l < c->n_layers; l++) {
        ADDL(GPT_ROLE_NORM, l, "model.layers.%d.input_layernorm.weight", C);
        if (!rms) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.input_layernorm.bias", C);
        /* Linear layout: (out, in) */
        ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.self_attn.q_proj.weight", Q, C);
        if (c->attn_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.self_attn.q_proj.bias", Q);
        ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.self_attn.k_proj.weight", KVD, C);
        if (c->attn_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.self_attn.k_proj.bias", KVD);
        ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.self_attn.v_proj.weight", KVD, C);
        if (c->attn_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.self_attn.v_proj.bias", KVD);
        ADDL(GPT_ROLE_RESIDUAL, l, "model.layers.%d.self_attn.o_proj.weight", C, Q);
        if (c->attn_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.self_attn.o_proj.bias", C);
        if (c->attn_sinks) ADDL(GPT_ROLE_SINK, l, "model.layers.%d.self_attn.sinks", c->n_heads);
        ADDL(GPT_ROLE_NORM, l, "model.layers.%d.post_attention_layernorm.weight", C);
        if (!rms) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.post_attention_layernorm.bias", C);
        if (c->mlp == GPT_MLP_MOE) {
            int64_t E = c->n_experts, F = c->d_expert;
            ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.mlp.router.weight", E, C);
            ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.mlp.router.bias", E);
            /* experts: (E, in, out), as Hugging Face stores them */
            ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.mlp.experts.gate_up_proj", E, C, 2 * F);
            b.tab->t[b.tab->n - 1].expert_dim = 1;
            ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.mlp.experts.gate_up_proj_bias", E, 2 * F);
            b.tab->t[b.tab->n - 1].expert_dim = 1;
            ADDL(GPT_ROLE_RESIDUAL, l, "model.layers.%d.mlp.experts.down_proj", E, F, C);
            b.tab->t[b.tab->n - 1].expert_dim = 1;
            ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.mlp.experts.down_proj_bias", E, C);
            b.tab->t[b.tab->n - 1].expert_dim = 1;
        } else {
            int64_t F = c->d_ff;
            ADDL(GPT_ROLE_WEIGHT, l, "model.layers.%d.mlp.up_proj.weight", F, C);
            if (c->mlp_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.mlp.up_proj.bias", F);
            ADDL(GPT_ROLE_RESIDUAL, l, "model.layers.%d.mlp.down_proj.weight", C, F);
            if (c->mlp_bias) ADDL(GPT_ROLE_BIAS, l, "model.layers.%d.mlp.down_proj.bias", C);
        }
    }
    ADD(GPT_ROLE_NORM, -1, "model.norm.weight", C);
    if (!rms) ADD(GPT_ROLE_BIAS, -1, "model.norm.bias", C);
    if (!c->tie_embeddings) ADD(GPT_ROLE_EMBED, -1, "lm_head.weight", V, C);
    *bp = b;
}

/* GPT-2's layout (fused QKV, Conv1D, LayerNorm with bias, learned positions, GELU) is chosen by
 * its shape of config; everything else uses the gpt_oss naming. */
static int is_gpt2_family(const gpt_model_config *c)
{
    return c->positions == GPT_POS_LEARNED && c->norm == GPT_NORM_LAYERNORM && c->mlp == GPT_MLP_DENSE &&
           c->attn_bias && !c->attn_sinks && c->n_kv_heads == c->n_heads;
}

int gpt_params_build(const gpt_model_config *cfg, gpt_param_table *tab, gpt_err *err)
{
    memset(tab, 0, sizeof *tab);
    if (cfg->n_layers <= 0 || cfg->d_model <= 0 || cfg->padded_vocab_size <= 0)
        return gpt_errf(err, "model config has no layers, width or vocabulary");
    builder b = {tab, 0};
    if (is_gpt2_family(cfg))
        build_gpt2(cfg, &b);
    else
        build_gpt_oss(cfg, &b);
    return 0;
}

void gpt_params_free(gpt_param_table *tab)
{
    free(tab->t);
    memset(tab, 0, sizeof *tab);
}

const gpt_tensor *gpt_params_find(const gpt_param_table *tab, const char *name)
{
    for (int i = 0; i < tab->n; i++)
        if (strcmp(tab->t[i].name, name) == 0) return &tab->t[i];
    return NULL;
}

int gpt_tensor_decays(const gpt_tensor *t)
{
    return t->role == GPT_ROLE_WEIGHT || t->role == GPT_ROLE_RESIDUAL || t->role == GPT_ROLE_EMBED;
}

/* splitmix64 stream + Box-Muller: tiny, portable, and the same on every machine. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((splitmix(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void gpt_params_init(const gpt_model_config *cfg, const gpt_param_table *tab, uint64_t seed, float *host)
{
    memset(host, 0, tab->total * sizeof *host);
    double std = cfg->init_std > 0 ? cfg->init_std : 0.02;
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *t = &tab->t[i];
        float *p = host + t->offset;
        if (t->role == GPT_ROLE_BIAS) continue;
        if (t->role == GPT_ROLE_NORM) {
            for (size_t k = 0; k < t->numel; k++) p[k] = 1.0f;
            continue;
        }
        double s = t->role == GPT_ROLE_RESIDUAL ? std / sqrt(2.0 * cfg->n_layers) : std;
        uint64_t st = seed * 0x100000001b3ull ^ (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;
        for (size_t k = 0; k < t->numel; k += 2) {
            double u1 = uniform01(&st), u2 = uniform01(&st), r = sqrt(-2.0 * log(u1));
            p[k] = (float)(s * r * cos(2 * M_PI * u2));
            if (k + 1 < t->numel) p[k + 1] = (float)(s * r * sin(2 * M_PI * u2));
        }
        /* padding rows of the vocabulary stay zero: they never win a softmax they are not in */
        if ((t->role == GPT_ROLE_EMBED) && t->shape[0] == cfg->padded_vocab_size && cfg->padded_vocab_size > cfg->vocab_size)
            memset(p + (size_t)cfg->vocab_size * t->shape[1], 0,
                   (size_t)(cfg->padded_vocab_size - cfg->vocab_size) * t->shape[1] * sizeof *p);
    }
}

void gpt_param_count(const gpt_model_config *cfg, uint64_t *total, uint64_t *active)
{
    gpt_param_table tab;
    *total = *active = 0;
    if (gpt_params_build(cfg, &tab, NULL) < 0) return;
    for (int i = 0; i < tab.n; i++) {
        const gpt_tensor *t = &tab.t[i];
        uint64_t n = t->numel;
        if (t->shape[0] == cfg->padded_vocab_size && t->role == GPT_ROLE_EMBED)
            n = (uint64_t)cfg->vocab_size * (uint64_t)t->shape[1];
        *total += n;
        /* A token reads one row of a lookup table: the input embedding (unless it is also the
         * tied output head) and learned positions do not count as active, as in the published
         * gpt-oss figures (5.1B and 3.6B active). */
        int lookup = t->role == GPT_ROLE_EMBED && strcmp(t->name, "lm_head.weight") != 0 && !(cfg->tie_embeddings &&
                     t->shape[0] == cfg->padded_vocab_size);
        if (!lookup) *active += t->expert_dim ? n / (uint64_t)cfg->n_experts * (uint64_t)cfg->experts_per_token : n;
    }
    gpt_params_free(&tab);
}

double gpt_flops_per_token(const gpt_model_config *c, int T)
{
    uint64_t total, active;
    gpt_param_count(c, &total, &active);
    double matmul = (double)active; /* a tied embedding counts once, as the head it also is */
    double attn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int w = gpt_model_layer_window(c, l);
        double teff = w > 0 && w < T ? w : (T + 1) / 2.0;
        attn += 6.0 * 2 * c->n_heads * c->d_head * teff;
    }
    return 6.0 * matmul + attn;
}
