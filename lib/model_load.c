/* model_load.c: -m PATH → config + weights (see model_load.h). */
#include "model_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "hf_import.h"

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = gpt_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int open_checkpoint(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets,
                           size_t n_sets, gpt_err *err)
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
    } else if ((lm->model = gpt_model_create(&lm->cfg.model, be, err)) != NULL &&
               gpt_ckpt_load_model(ck, lm->model, err) == 0) {
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
    memset(lm, 0, sizeof *lm);
    struct stat st;
    if (!path || !*path)
        return gpt_errf(err, "no model given: pass -m DIR (a checkpoint, or a directory with model.yaml and "
                             "model.safetensors)");
    if (stat(path, &st) < 0) return gpt_errf(err, "model %s: cannot access it (does it exist?)", path);
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
        if (native) return open_checkpoint(lm, path, be, sets, n_sets, err);
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
