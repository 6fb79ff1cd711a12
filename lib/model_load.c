/* model_load.c: -m PATH → config + weights (see model_load.h). */
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "hf_import.h"
#include "model_piece.h"

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = gpt_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Whether the checkpoint holds any expert weight as an MXFP4 pair. */
static int has_mxfp4_experts(const gpt_ckpt *ck)
{
    for (size_t i = 0; i < gpt_ckpt_count(ck); i++) {
        const char *n = gpt_ckpt_tensor_at(ck, i)->name;
        size_t l = strlen(n);
        if (l > 7 && strcmp(n + l - 7, "_blocks") == 0 && strstr(n, "mlp.experts.")) return 1;
    }
    return 0;
}

/* An MXFP4 expert tensor: the checkpoint's pair as it is, or its fp32 tensor quantized. */
static int load_mxfp4_tensor(gpt_ckpt *ck, gpt_model *m, int i, gpt_err *err)
{
    const gpt_tensor *t = gpt_model_mxfp4_tensor(m, i);
    char bn[GPT_TENSOR_NAME_MAX + 16], sn[GPT_TENSOR_NAME_MAX + 16];
    snprintf(bn, sizeof bn, "%s_blocks", t->name);
    snprintf(sn, sizeof sn, "%s_scales", t->name);
    const gpt_ckpt_tensor *b = gpt_ckpt_find(ck, bn), *s = gpt_ckpt_find(ck, sn);
    uint64_t E = (uint64_t)t->shape[0], In = (uint64_t)t->shape[1], Out = (uint64_t)t->shape[2];
    if (!b || !s) { /* fp32 (or bf16) experts: quantize them */
        float *w = gpt_xmalloc(t->numel * sizeof *w);
        int rc = gpt_ckpt_read_param(ck, t, w, err);
        if (rc == 0) rc = gpt_model_set_mxfp4_f32(m, i, w, err);
        free(w);
        return rc;
    }
    if (b->dtype != GPT_ST_U8 || s->dtype != GPT_ST_U8 || b->ndim != 4 || s->ndim != 3 || b->shape[0] != E ||
        b->shape[1] != Out || b->shape[2] * 32 != In || b->shape[3] != 16 || s->shape[0] != E || s->shape[1] != Out ||
        s->shape[2] * 32 != In)
        return gpt_errf(err, "%s: MXFP4 pair %s / %s must be U8 (%llu, %llu, %llu, 16) and (%llu, %llu, %llu) for the "
                             "config",
                        gpt_ckpt_dir(ck), bn, sn, (unsigned long long)E, (unsigned long long)Out,
                        (unsigned long long)In / 32, (unsigned long long)E, (unsigned long long)Out,
                        (unsigned long long)In / 32);
    uint8_t *bb = gpt_xmalloc(b->nbytes), *sb = gpt_xmalloc(s->nbytes);
    int rc = gpt_ckpt_read(ck, b, bb, err);
    if (rc == 0) rc = gpt_ckpt_read(ck, s, sb, err);
    if (rc == 0) rc = gpt_model_set_mxfp4(m, i, bb, sb, err);
    free(bb);
    free(sb);
    return rc;
}

static int load_bf16_sliced(gpt_ckpt *ck, const gpt_ckpt_tensor *ct, gpt_backend *be, float *dst, gpt_err *err)
{
    uint16_t *raw = gpt_xmalloc(ct->nbytes);
    if (gpt_ckpt_read(ck, ct, raw, err) < 0) {
        free(raw);
        return -1;
    }
    size_t slice = (size_t)1 << 22;
    float *f = gpt_xmalloc(slice * sizeof *f);
    for (size_t i0 = 0; i0 < ct->numel; i0 += slice) {
        size_t n = ct->numel - i0 < slice ? ct->numel - i0 : slice;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)raw[i0 + i] << 16;
            memcpy(f + i, &u, sizeof u);
        }
        be->to_device(be, dst + i0, f, n * sizeof *f);
    }
    free(f);
    free(raw);
    return 0;
}

/* Tensor by tensor (one host tensor at a time: a 20b model does not fit twice). */
static int load_checkpoint_weights(gpt_ckpt *ck, gpt_model *m, gpt_err *err)
{
    const gpt_config *cc = gpt_ckpt_config(ck);
    if (!cc || !gpt_model_config_equal(&cc->model, gpt_model_config_of(m)))
        return gpt_errf(err, "%s: the checkpoint's model.yaml does not describe this model", gpt_ckpt_dir(ck));
    const gpt_param_table *tab = gpt_model_params(m);
    gpt_backend *be = gpt_model_backend(m);
    float *params = gpt_model_param_data(m);
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *t = &tab->t[i];
        const gpt_ckpt_tensor *ct = gpt_ckpt_find(ck, t->name);
        int same = ct && ct->dtype == GPT_ST_BF16 && ct->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = ct->shape[d] == (uint64_t)t->shape[d];
        if (same) { /* bf16: widened in slices, so the host copy of a 20b embedding is 2 bytes a value */
            if (load_bf16_sliced(ck, ct, be, params + t->offset, err) < 0) return -1;
            continue;
        }
        float *tmp = gpt_xmalloc((t->numel ? t->numel : 1) * sizeof *tmp);
        int rc = gpt_ckpt_read_param(ck, t, tmp, err);
        if (rc == 0) be->to_device(be, params + t->offset, tmp, t->numel * sizeof *tmp);
        free(tmp);
        if (rc < 0) return -1;
    }
    for (int i = 0; i < gpt_model_mxfp4_count(m); i++)
        if (load_mxfp4_tensor(ck, m, i, err) < 0) return -1;
    return 0;
}

static int piece_wanted(const gpt_open_opts *oo) { return oo->pp > 1 || (oo->tp && oo->tp->size > 1); }

static int open_checkpoint(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets,
                           size_t n_sets, const gpt_open_opts *oo, gpt_err *err)
{
    gpt_ckpt *ck = gpt_ckpt_open(path, err);
    if (!ck) {
        gpt_model_close(lm);
        return -1;
    }
    char *yaml = path_join(gpt_ckpt_dir(ck), "model.yaml");
    int rc = -1;
    if (gpt_config_load(yaml, &lm->cfg, err) < 0 || (n_sets && gpt_config_set_all(&lm->cfg, sets, n_sets, err) < 0)) {
        gpt_err_prefix(err, "model %s", path);
    } else if (piece_wanted(oo)) {
        if ((lm->model = gpt_model_piece_from_ckpt(ck, &lm->cfg.model, be, oo->tp, oo->pp, oo->stage, err)) != NULL) {
            free(lm->dir);
            lm->dir = gpt_xstrdup(gpt_ckpt_dir(ck));
            rc = 0;
        } else {
            gpt_err_prefix(err, "model %s", path);
        }
    } else if ((lm->model = gpt_model_create_ex(&lm->cfg.model, be,
                                                &(gpt_model_opts){.mxfp4_experts = oo->experts == GPT_EXPERTS_MXFP4 ||
                                                                                   (oo->experts == GPT_EXPERTS_AUTO &&
                                                                                    has_mxfp4_experts(ck))},
                                                err)) != NULL &&
               load_checkpoint_weights(ck, lm->model, err) == 0) {
        free(lm->dir);
        lm->dir = gpt_xstrdup(gpt_ckpt_dir(ck));
        rc = 0;
    } else {
        gpt_err_prefix(err, "model %s", path);
    }
    free(yaml);
    gpt_ckpt_close(ck);
    if (rc < 0) gpt_model_close(lm);
    return rc;
}

int gpt_model_open(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets, size_t n_sets,
                   gpt_err *err)
{
    return gpt_model_open_ex(lm, path, be, sets, n_sets, NULL, err);
}

int gpt_model_open_ex(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets,
                      size_t n_sets, const gpt_open_opts *opts, gpt_err *err)
{
    gpt_open_opts oo = opts ? *opts : (gpt_open_opts){0};
    memset(lm, 0, sizeof *lm);
    struct stat st;
    if (!path || !*path)
        return gpt_errf(err, "no model given: pass -m DIR (a checkpoint, or a directory with model.yaml and "
                             "model.safetensors)");
    if (stat(path, &st) < 0) return gpt_errf(err, "model %s: cannot access it (does it exist?)", path);
    if (piece_wanted(&oo) && oo.experts == GPT_EXPERTS_MXFP4)
        return gpt_errf(err, "tensor/pipeline-parallel inference cuts fp32 expert weights: use --experts f32 (or auto)");
    if (S_ISDIR(st.st_mode)) {
        lm->dir = gpt_xstrdup(path);
    } else {
        /* a model.yaml file: the weights sit beside it */
        const char *slash = strrchr(path, '/');
        lm->dir = slash ? strndup(path, (size_t)(slash - path)) : gpt_xstrdup(".");
        if (!lm->dir) abort();
    }
    if (S_ISDIR(st.st_mode)) {
        /* a native checkpoint (gpt-checkpoint(5)): a directory with manifest.json, or a root with `latest` */
        char *man = path_join(lm->dir, "manifest.json"), *latest = path_join(lm->dir, "latest");
        int native = stat(man, &st) == 0 || stat(latest, &st) == 0;
        free(man);
        free(latest);
        if (native) return open_checkpoint(lm, path, be, sets, n_sets, &oo, err);
    }
    char *yaml = S_ISDIR(st.st_mode) ? path_join(lm->dir, "model.yaml") : gpt_xstrdup(path);
    char *weights = path_join(lm->dir, "model.safetensors");
    int rc = -1;
    if (gpt_config_load(yaml, &lm->cfg, err) < 0) {
        gpt_err_prefix(err, "model %s", path);
        goto out;
    }
    if (n_sets && gpt_config_set_all(&lm->cfg, sets, n_sets, err) < 0) goto out;
    if (stat(weights, &st) < 0) {
        gpt_errf(err, "model %s: no weights at %s (expected model.safetensors beside model.yaml)", path, weights);
        goto out;
    }
    if (oo.experts == GPT_EXPERTS_MXFP4) {
        gpt_errf(err, "model %s: MXFP4 experts at inference need a native checkpoint (gpt-shard import it first)", path);
        goto out;
    }
    if (piece_wanted(&oo)) {
        if (!(lm->model = gpt_model_piece_from_hf(weights, &lm->cfg.model, be, oo.tp, oo.pp, oo.stage, err))) {
            gpt_err_prefix(err, "model %s", path);
            goto out;
        }
        rc = 0;
        goto out;
    }
    lm->model = gpt_model_create(&lm->cfg.model, be, err);
    if (!lm->model) goto out;
    if (gpt_model_load_hf(lm->model, weights, err) < 0) {
        gpt_err_prefix(err, "model %s", path);
        goto out;
    }
    rc = 0;
out:
    free(yaml);
    free(weights);
    if (rc < 0) gpt_model_close(lm);
    return rc;
}

void gpt_model_close(gpt_loaded_model *lm)
{
    if (lm->model) gpt_model_free(lm->model);
    gpt_config_free(&lm->cfg);
    free(lm->dir);
    memset(lm, 0, sizeof *lm);
}
