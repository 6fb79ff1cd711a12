/* shard_layout.c: the tensor-parallel / pipeline / expert-parallel cut of each tensor (shard_layout.h). */
#include "shard_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Layer index of "model.layers.N.", "transformer.h.N." or "h.N.", else -1. */
static int layer_of(const char *name)
{
    const char *pfx[] = {"model.layers.", "transformer.h.", "h.", NULL};
    for (int i = 0; pfx[i]; i++) {
        size_t n = strlen(pfx[i]);
        if (strncmp(name, pfx[i], n) == 0) {
            char *end;
            long v = strtol(name + n, &end, 10);
            if (end != name + n && *end == '.' && v >= 0 && v < 1 << 20) return (int)v;
        }
    }
    return -1;
}

int gpt_layout_rule_for(const gpt_model_config *c, const char *name, int ndim, const uint64_t *shape, int tp,
                        int pp, int ep, gpt_layout_rule *r, gpt_err *err)
{
    memset(r, 0, sizeof *r);
    r->ep_dim = r->tp_dim = -1;
    r->nseg = 1;
    int L = c->n_layers, l = layer_of(name);
    if (pp < 1 || pp > L) return gpt_errf(err, "--pp %d: must be between 1 and the number of layers (%d)", pp, L);
    if (l >= L) return gpt_errf(err, "tensor %s: layer %d does not exist (the model has %d)", name, l, L);
    if (l >= 0) {
        /* stage s holds [s*L/pp, (s+1)*L/pp): the inverse of that */
        int s = 0;
        while (s + 1 < pp && (long)(s + 1) * L / pp <= l) s++;
        r->stage_first = r->stage_last = s;
    } else if (strstr(name, "embed_tokens") || strstr(name, "embed_positions") || strstr(name, "wte.") ||
               strstr(name, "wpe.")) {
        r->stage_first = 0;
        r->stage_last = (c->tie_embeddings && (strstr(name, "embed_tokens") || strstr(name, "wte."))) ? pp - 1 : 0;
    } else {
        r->stage_first = r->stage_last = pp - 1; /* final norm, lm_head */
    }
    int experts = strstr(name, "mlp.experts.") != NULL;
    if (experts) r->ep_dim = 0;
    int gpt2 = strstr(name, "transformer.") == name || strncmp(name, "h.", 2) == 0 || strncmp(name, "wte.", 4) == 0 ||
               strncmp(name, "wpe.", 4) == 0 || strncmp(name, "ln_f.", 5) == 0;
    if (gpt2) {
        if (strstr(name, "attn.c_attn.")) {
            r->tp_dim = ndim - 1;
            r->nseg = 3;
            uint64_t q = (uint64_t)c->n_heads * (uint64_t)c->d_head, kv = (uint64_t)c->n_kv_heads * (uint64_t)c->d_head;
            r->seg[0] = q;
            r->seg[1] = r->seg[2] = kv;
        } else if (strstr(name, "attn.c_proj.weight") || strstr(name, "mlp.c_proj.weight")) {
            r->tp_dim = 0;
        } else if (strstr(name, "mlp.c_fc.")) {
            r->tp_dim = ndim - 1;
        } else if (strstr(name, "wte.weight") || ends(name, "lm_head.weight")) {
            r->tp_dim = 0;
        }
    } else {
        if (strstr(name, "self_attn.q_proj.") || strstr(name, "self_attn.k_proj.") || strstr(name, "self_attn.v_proj.") ||
            ends(name, "self_attn.sinks") || strstr(name, "mlp.up_proj.") || ends(name, "embed_tokens.weight") ||
            ends(name, "lm_head.weight"))
            r->tp_dim = 0;
        else if (ends(name, "self_attn.o_proj.weight") || ends(name, "mlp.down_proj.weight"))
            r->tp_dim = 1;
        else if (ends(name, "experts.gate_up_proj"))
            r->tp_dim = 2;          /* (E, in, 2F): gate/up interleaved, a range keeps pairs together */
        else if (ends(name, "experts.gate_up_proj_bias") || ends(name, "experts.down_proj") ||
                 ends(name, "experts.gate_up_proj_blocks") || ends(name, "experts.gate_up_proj_scales"))
            r->tp_dim = 1;          /* MXFP4 pairs are stored (E, out, in/32, ...) */
        else if (ends(name, "experts.down_proj_blocks") || ends(name, "experts.down_proj_scales"))
            r->tp_dim = 2;          /* (E, C, F/32, 16): cut the input (F) axis by whole blocks */
    }
    if (tp == 1) r->tp_dim = -1;
    if (ep == 1) r->ep_dim = -1;
    if (r->tp_dim >= ndim || r->ep_dim >= ndim) return gpt_errf(err, "tensor %s: has %d axes, too few for its layout", name, ndim);
    if (r->nseg == 1 && r->tp_dim >= 0) r->seg[0] = shape[r->tp_dim];
    if (r->tp_dim >= 0) {
        uint64_t sum = 0;
        for (int i = 0; i < r->nseg; i++) {
            if (r->seg[i] % (uint64_t)tp)
                return gpt_errf(err, "tensor %s: axis %d (%llu) does not divide by --tp %d", name, r->tp_dim,
                                (unsigned long long)r->seg[i], tp);
            sum += r->seg[i];
        }
        if (sum != shape[r->tp_dim]) return gpt_errf(err, "tensor %s: fused axis does not match the config", name);
        /* swiglu pairs (gate, up) are adjacent columns: each rank's range must hold whole pairs */
        if (ends(name, "experts.gate_up_proj") || ends(name, "experts.gate_up_proj_bias") ||
            ends(name, "gate_up_proj_blocks") || ends(name, "gate_up_proj_scales"))
            if ((shape[r->tp_dim] / (uint64_t)tp) % 2)
                return gpt_errf(err, "tensor %s: --tp %d would split a gate/up pair", name, tp);
    }
    if (r->ep_dim >= 0 && shape[0] % (uint64_t)ep)
        return gpt_errf(err, "tensor %s: %llu experts do not divide by --ep %d", name, (unsigned long long)shape[0], ep);
    return 0;
}

void gpt_layout_piece_shape(const gpt_layout_rule *r, int ndim, const uint64_t *shape, int tp, int ep, uint64_t *out)
{
    for (int d = 0; d < ndim; d++) out[d] = shape[d];
    if (r->ep_dim >= 0) out[r->ep_dim] /= (uint64_t)ep;
    if (r->tp_dim >= 0) out[r->tp_dim] /= (uint64_t)tp;
}

typedef struct cut {
    int nseg;
    uint64_t start[GPT_LAYOUT_MAX_SEGS], len[GPT_LAYOUT_MAX_SEGS];
} cut;

static void copy_rec(int d, int last, const cut *cuts, const uint64_t *fstride, const uint64_t *pstride,
                     unsigned char *full, unsigned char *piece, int to_full)
{
    const cut *c = &cuts[d];
    uint64_t po = 0;
    for (int s = 0; s < c->nseg; s++) {
        if (d == last) {
            size_t n = (size_t)(c->len[s] * fstride[d]);
            unsigned char *f = full + c->start[s] * fstride[d], *p = piece + po * pstride[d];
            if (to_full)
                memcpy(f, p, n);
            else
                memcpy(p, f, n);
            po += c->len[s];
            continue;
        }
        for (uint64_t i = 0; i < c->len[s]; i++, po++)
            copy_rec(d + 1, last, cuts, fstride, pstride, full + (c->start[s] + i) * fstride[d], piece + po * pstride[d],
                     to_full);
    }
}

void gpt_layout_copy(const gpt_layout_rule *r, int ndim, const uint64_t *shape, size_t esize, int tp, int tpr, int ep,
                     int epr, unsigned char *full, unsigned char *piece, int to_full)
{
    uint64_t total = esize;
    for (int d = 0; d < ndim; d++) total *= shape[d];
    int last = r->tp_dim > r->ep_dim ? r->tp_dim : r->ep_dim;
    if (last < 0) {
        if (to_full)
            memcpy(full, piece, (size_t)total);
        else
            memcpy(piece, full, (size_t)total);
        return;
    }
    cut cuts[GPT_ST_MAX_DIMS];
    uint64_t pshape[GPT_ST_MAX_DIMS], fstride[GPT_ST_MAX_DIMS], pstride[GPT_ST_MAX_DIMS];
    gpt_layout_piece_shape(r, ndim, shape, tp, ep, pshape);
    for (int d = 0; d < ndim; d++) {
        cuts[d].nseg = 1;
        cuts[d].start[0] = 0;
        cuts[d].len[0] = shape[d];
    }
    if (r->ep_dim >= 0) {
        cuts[r->ep_dim].start[0] = (uint64_t)epr * (shape[r->ep_dim] / (uint64_t)ep);
        cuts[r->ep_dim].len[0] = shape[r->ep_dim] / (uint64_t)ep;
    }
    if (r->tp_dim >= 0) {
        cut *c = &cuts[r->tp_dim];
        c->nseg = r->nseg;
        uint64_t base = 0;
        for (int s = 0; s < r->nseg; s++) {
            c->len[s] = r->seg[s] / (uint64_t)tp;
            c->start[s] = base + (uint64_t)tpr * c->len[s];
            base += r->seg[s];
        }
    }
    uint64_t fs = esize, ps = esize;
    for (int d = ndim - 1; d >= 0; d--) {
        fstride[d] = fs;
        pstride[d] = ps;
        fs *= shape[d];
        ps *= pshape[d];
    }
    copy_rec(0, last, cuts, fstride, pstride, full, piece, to_full);
}
