/* model_piece.c: a rank's piece of a model, read tensor by tensor (model_piece.h). */
#include "model_piece.h"

#include <stdlib.h>
#include <string.h>

#include "hf_import.h"
#include "model_pp.h"
#include "model_tp.h"
#include "shard_layout.h"

#define CHUNK_BYTES ((size_t)1 << 22)

/* Where the elements of a full tensor go in the rank's piece. Viewed as (outer, D, inner) around the
 * tp axis, the piece keeps, per segment of that axis (3 for GPT-2's fused q|k|v), the rank's
 * contiguous range, concatenated: the same cut gpt_layout_copy makes. */
typedef struct placer {
    float *dst;
    uint64_t D, inner, Dp;
    int nseg;
    uint64_t start[GPT_LAYOUT_MAX_SEGS], len[GPT_LAYOUT_MAX_SEGS], poff[GPT_LAYOUT_MAX_SEGS];
    float *conv;         /* a chunk converted to f32 */
    gpt_st_dtype dtype;  /* of the streamed bytes */
} placer;

static void placer_init(placer *p, const gpt_layout_rule *r, const gpt_tensor *ft, int tp, int tpr)
{
    uint64_t numel = (uint64_t)ft->numel;
    if (r->tp_dim < 0 || tp <= 1) {
        p->D = p->Dp = numel, p->inner = 1, p->nseg = 1;
        p->start[0] = 0, p->len[0] = numel, p->poff[0] = 0;
        return;
    }
    int d = r->tp_dim;
    p->D = (uint64_t)ft->shape[d];
    p->inner = 1;
    for (int k = d + 1; k < ft->ndim; k++) p->inner *= (uint64_t)ft->shape[k];
    p->nseg = r->nseg;
    uint64_t base = 0, po = 0;
    for (int s = 0; s < r->nseg; s++) {
        p->len[s] = r->seg[s] / (uint64_t)tp;
        p->start[s] = base + (uint64_t)tpr * p->len[s];
        p->poff[s] = po;
        base += r->seg[s];
        po += p->len[s];
    }
    p->Dp = po;
}

/* Full-tensor elements [e0, e0 + n) with values v: the rank's ones into the piece. */
static void place(const placer *p, const float *v, uint64_t e0, uint64_t n)
{
    uint64_t e1 = e0 + n, row = p->D * p->inner;
    if (row == 0) return;
    for (uint64_t o = e0 / row; o * row < e1; o++)
        for (int s = 0; s < p->nseg; s++) {
            uint64_t a = o * row + p->start[s] * p->inner, b = a + p->len[s] * p->inner;
            uint64_t lo = a > e0 ? a : e0, hi = b < e1 ? b : e1;
            if (lo < hi)
                memcpy(p->dst + (o * p->Dp + p->poff[s]) * p->inner + (lo - a), v + (lo - e0),
                       (size_t)(hi - lo) * sizeof *v);
        }
}

/* A chunk of raw little-endian values (whole elements) at byte offset off. */
static int place_bytes(void *ctx, const void *bytes, uint64_t off, size_t n, gpt_err *err)
{
    placer *p = ctx;
    size_t es = gpt_st_dtype_size(p->dtype), ne = n / es;
    if (gpt_st_to_f32(p->dtype, bytes, ne, p->conv) < 0)
        return gpt_errf(err, "dtype %s is not a float type", gpt_st_dtype_name(p->dtype));
    place(p, p->conv, off / es, ne);
    return 0;
}

/* Reads full tensor ft into the piece buffer dst (the stage model's tensor, zeroed). */
typedef int (*read_fn)(void *src, const gpt_tensor *ft, placer *p, gpt_err *err);

static int fill(gpt_model *m, const gpt_model_config *cfg, int tp, int tpr, read_fn rd, void *src, gpt_err *err)
{
    gpt_param_table ft;
    if (gpt_params_build(cfg, &ft, err) < 0) return -1;
    const gpt_param_table *tab = gpt_model_params(m);
    gpt_backend *be = gpt_model_backend(m);
    float *params = gpt_model_param_data(m);
    float *conv = gpt_xmalloc(CHUNK_BYTES);
    int rc = 0, host = strcmp(be->name, "cpu") == 0;
    for (int i = 0; i < tab->n && rc == 0; i++) {
        const gpt_tensor *lt = &tab->t[i], *f = gpt_params_find(&ft, lt->name);
        if (!f) {
            rc = gpt_errf(err, "tensor %s of the piece is not in the model's table", lt->name);
            break;
        }
        uint64_t shape[4];
        for (int d = 0; d < f->ndim; d++) shape[d] = (uint64_t)f->shape[d];
        gpt_layout_rule r;
        if (gpt_layout_rule_for(cfg, f->name, f->ndim, shape, tp, 1, 1, &r, err) < 0) {
            rc = -1;
            break;
        }
        placer p = {0};
        placer_init(&p, &r, f, tp, tpr);
        if (f->numel && (uint64_t)f->numel / (p.D * p.inner) * p.Dp * p.inner != (uint64_t)lt->numel) {
            rc = gpt_errf(err, "tensor %s: the piece's shape does not follow the layout rule (a bug)", lt->name);
            break;
        }
        /* the CPU backend's parameters are host memory (zeroed): placed straight there, no staging
         * copy of the tensor; other backends stage one piece tensor */
        p.dst = host ? params + lt->offset : gpt_xcalloc(lt->numel ? lt->numel : 1, sizeof *p.dst);
        p.conv = conv;
        rc = rd(src, f, &p, err);
        if (!host) {
            if (rc == 0) be->to_device(be, params + lt->offset, p.dst, lt->numel * sizeof *p.dst);
            free(p.dst);
        }
    }
    free(conv);
    gpt_params_free(&ft);
    return rc;
}

/* The whole tensor as f32 (MXFP4 pairs, other layouts), then its piece: one tensor resident. */
static int place_whole(placer *p, const gpt_tensor *ft, int (*get)(void *src, const gpt_tensor *ft, float *dst,
                                                                   gpt_err *err), void *src, gpt_err *err)
{
    float *w = gpt_xcalloc(ft->numel ? ft->numel : 1, sizeof *w);
    int rc = get(src, ft, w, err);
    if (rc == 0) place(p, w, 0, ft->numel);
    free(w);
    return rc;
}

static int is_float(gpt_st_dtype d)
{
    return d == GPT_ST_F32 || d == GPT_ST_BF16 || d == GPT_ST_F16 || d == GPT_ST_F64;
}

static int same_shape(int ndim, const uint64_t *shape, const gpt_tensor *t)
{
    if (ndim != t->ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (shape[d] != (uint64_t)t->shape[d]) return 0;
    return 1;
}

static gpt_model *create_piece(const gpt_model_config *cfg, gpt_backend *be, gpt_comm **tp, int *pp, int stage,
                               gpt_err *err)
{
    if (*tp && (*tp)->size <= 1) *tp = NULL;
    if (*pp < 1) *pp = 1;
    return gpt_model_create_pp(cfg, be, *tp, *pp, *pp > 1 ? stage : 0, err);
}

/* ---- native checkpoints ---- */

static int ck_whole(void *src, const gpt_tensor *ft, float *dst, gpt_err *err)
{
    return gpt_ckpt_read_param(src, ft, dst, err);
}

static int ck_read(void *src, const gpt_tensor *ft, placer *p, gpt_err *err)
{
    gpt_ckpt *ck = src;
    const gpt_ckpt_tensor *ct = gpt_ckpt_find(ck, ft->name);
    if (!ct || !is_float(ct->dtype))
        return place_whole(p, ft, ck_whole, ck, err); /* an MXFP4 pair, or read_param's message */
    if (!same_shape(ct->ndim, ct->shape, ft))
        return gpt_errf(err, "%s: tensor %s has a shape the config does not give it", gpt_ckpt_dir(ck), ft->name);
    p->dtype = ct->dtype;
    /* as many raw values per chunk as the f32 chunk holds */
    size_t cap = CHUNK_BYTES / sizeof(float) * gpt_st_dtype_size(ct->dtype);
    void *raw = gpt_xmalloc(cap);
    int rc = gpt_ckpt_read_stream(ck, ct, raw, cap, place_bytes, p, err);
    free(raw);
    return rc;
}

gpt_model *gpt_model_piece_from_ckpt(gpt_ckpt *ck, const gpt_model_config *cfg, gpt_backend *be, gpt_comm *tp,
                                     int pp, int stage, gpt_err *err)
{
    const gpt_config *cc = gpt_ckpt_config(ck);
    if (!cc || !gpt_model_config_equal(&cc->model, cfg))
        return gpt_errf(err, "%s: the checkpoint's model.yaml does not describe this model", gpt_ckpt_dir(ck)), NULL;
    gpt_ckpt_mesh me = gpt_ckpt_mesh_of(ck);
    if (me.tp * me.pp * me.ep != 1)
        return gpt_errf(err, "%s holds one rank's piece of a tp %d x pp %d x ep %d checkpoint: merge it first "
                             "(gpt-shard merge)",
                        gpt_ckpt_dir(ck), me.tp, me.pp, me.ep),
               NULL;
    gpt_model *m = create_piece(cfg, be, &tp, &pp, stage, err);
    if (!m) return NULL;
    if (fill(m, cfg, tp ? tp->size : 1, tp ? tp->rank : 0, ck_read, ck, err) < 0) {
        gpt_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- Hugging Face safetensors ---- */

typedef struct hf_src {
    const gpt_st_set *s;
    const char *path;
    const gpt_model_config *cfg;
} hf_src;

static int hf_whole(void *src, const gpt_tensor *ft, float *dst, gpt_err *err)
{
    hf_src *h = src;
    return gpt_hf_read_param(h->s, h->path, h->cfg, ft, dst, err);
}

static int hf_read(void *src, const gpt_tensor *ft, placer *p, gpt_err *err)
{
    hf_src *h = src;
    const gpt_st_tensor *st = gpt_hf_find(h->s, ft->name);
    /* only a tensor of the full shape streams (a padded vocabulary is a prefix: the rest stays 0) */
    int stream = st && is_float(st->dtype) && st->ndim == ft->ndim && st->numel <= (uint64_t)ft->numel;
    for (int d = 1; stream && d < ft->ndim; d++) stream = st->shape[d] == (uint64_t)ft->shape[d];
    if (stream && st->shape[0] != (uint64_t)ft->shape[0])
        stream = ft->shape[0] == h->cfg->padded_vocab_size && st->shape[0] == (uint64_t)h->cfg->vocab_size;
    if (!stream) return place_whole(p, ft, hf_whole, h, err); /* MXFP4 pairs, or its message */
    size_t es = gpt_st_dtype_size(st->dtype), per = CHUNK_BYTES / sizeof(float);
    for (uint64_t e = 0; e < st->numel; e += per) {
        uint64_t n = st->numel - e < per ? st->numel - e : per;
        gpt_st_to_f32(st->dtype, st->data + e * es, (size_t)n, p->conv);
        place(p, p->conv, e, n);
    }
    gpt_st_release(st);
    return 0;
}

gpt_model *gpt_model_piece_from_hf(const char *weights, const gpt_model_config *cfg, gpt_backend *be, gpt_comm *tp,
                                   int pp, int stage, gpt_err *err)
{
    gpt_st_set *s = gpt_st_open_dir(weights, err);
    if (!s) return NULL;
    gpt_model *m = create_piece(cfg, be, &tp, &pp, stage, err);
    hf_src h = {s, weights, cfg};
    if (m && fill(m, cfg, tp ? tp->size : 1, tp ? tp->rank : 0, hf_read, &h, err) < 0) {
        gpt_model_free(m);
        m = NULL;
    }
    gpt_st_set_close(s);
    return m;
}
