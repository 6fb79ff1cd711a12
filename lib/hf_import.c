/* hf_import.c: Hugging Face checkpoints -> the parameter table. */
#include "hf_import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mxfp4.h"
#include "safetensors.h"

/* GPT-2's original checkpoints drop the "transformer." prefix. */
static const gpt_st_tensor *find_tensor(const gpt_st_set *s, const char *name)
{
    const gpt_st_tensor *t = gpt_st_set_find(s, name);
    if (!t && strncmp(name, "transformer.", 12) == 0) t = gpt_st_set_find(s, name + 12);
    return t;
}

static void shape_str(char *buf, size_t n, int ndim, const uint64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, ")");
}

/* MXFP4 experts are stored (E, out, in/32, 16) and our tensors are (E, in, out): dequantize,
 * then swap the last two axes, as transformers does. */
static int load_mxfp4(const gpt_tensor *t, const gpt_st_tensor *blocks, const gpt_st_tensor *scales, float *dst,
                      gpt_err *err)
{
    uint64_t oshape[GPT_ST_MAX_DIMS];
    int ondim;
    if (gpt_mxfp4_out_shape(blocks, scales, oshape, &ondim, err) < 0) return -1;
    if (ondim != 3 || t->ndim != 3 || oshape[0] != (uint64_t)t->shape[0] || oshape[1] != (uint64_t)t->shape[2] ||
        oshape[2] != (uint64_t)t->shape[1]) {
        char got[128];
        shape_str(got, sizeof got, ondim, oshape);
        return gpt_errf(err, "%s: MXFP4 tensor dequantizes to %s, expected (%lld, %lld, %lld) before transposing",
                        t->name, got, (long long)t->shape[0], (long long)t->shape[2], (long long)t->shape[1]);
    }
    size_t E = oshape[0], O = oshape[1], I = oshape[2];
    float *tmp = gpt_xmalloc(E * O * I * sizeof *tmp);
    if (gpt_mxfp4_dequant_st(blocks, scales, tmp, E * O * I, err) < 0) {
        free(tmp);
        return -1;
    }
    for (size_t e = 0; e < E; e++)
        for (size_t o = 0; o < O; o++)
            for (size_t i = 0; i < I; i++) dst[(e * I + i) * O + o] = tmp[(e * O + o) * I + i];
    free(tmp);
    return 0;
}

const gpt_st_tensor *gpt_hf_find(const gpt_st_set *s, const char *name) { return find_tensor(s, name); }

int gpt_hf_read_param(const gpt_st_set *s, const char *path, const gpt_model_config *cfg, const gpt_tensor *t,
                      float *dst, gpt_err *err)
{
    const gpt_st_tensor *st = find_tensor(s, t->name);
    if (!st) {
        char bn[GPT_TENSOR_NAME_MAX + 16], sn[GPT_TENSOR_NAME_MAX + 16];
        snprintf(bn, sizeof bn, "%s_blocks", t->name);
        snprintf(sn, sizeof sn, "%s_scales", t->name);
        const gpt_st_tensor *blocks = gpt_st_set_find(s, bn), *scales = gpt_st_set_find(s, sn);
        if (blocks && scales) {
            int rc = load_mxfp4(t, blocks, scales, dst, err);
            gpt_st_release(blocks);
            gpt_st_release(scales);
            return rc;
        }
        return gpt_errf(err, "%s: tensor %s is missing (the config expects it; is this the right model?)", path,
                        t->name);
    }
    /* The vocabulary may be padded here: the file holds the first vocab_size rows. */
    int padded = t->shape[0] == cfg->padded_vocab_size && cfg->padded_vocab_size != cfg->vocab_size &&
                 st->ndim == t->ndim && st->shape[0] == (uint64_t)cfg->vocab_size;
    int same = st->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = st->shape[d] == (uint64_t)t->shape[d] || (d == 0 && padded);
    if (!same) {
        char got[128], want[128];
        uint64_t ws[4];
        for (int d = 0; d < t->ndim; d++) ws[d] = (uint64_t)t->shape[d];
        shape_str(got, sizeof got, st->ndim, st->shape);
        shape_str(want, sizeof want, t->ndim, ws);
        return gpt_errf(err, "%s: tensor %s has shape %s, the config needs %s", path, t->name, got, want);
    }
    int rc = gpt_st_read_f32(st, dst, (size_t)st->numel, err);
    gpt_st_release(st); /* resident memory stays at one tensor of the file's mapping */
    return rc;
}

int gpt_model_load_hf(gpt_model *m, const char *path, gpt_err *err)
{
    gpt_st_set *s = gpt_st_open_dir(path, err);
    if (!s) return -1;
    const gpt_param_table *tab = gpt_model_params(m);
    const gpt_model_config *cfg = gpt_model_config_of(m);
    float *host = gpt_xcalloc(tab->total, sizeof *host);
    int rc = 0;
    for (int i = 0; i < tab->n && rc == 0; i++) rc = gpt_hf_read_param(s, path, cfg, &tab->t[i], host + tab->t[i].offset, err);
    if (rc == 0) gpt_model_backend(m)->to_device(gpt_model_backend(m), gpt_model_param_data(m), host,
                                                 tab->total * sizeof *host);
    free(host);
    gpt_st_set_close(s);
    return rc;
}
