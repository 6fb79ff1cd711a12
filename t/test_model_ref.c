/* The model against Hugging Face transformers: logits, losses, token accuracy and every
 * parameter gradient of tiny random GptOssForCausalLM and GPT2LMHeadModel models, recorded by
 * scripts/make-reference.py under t/data/ref/. Tolerances: the fp32-rounding targets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hf_import.h"
#include "model.h"
#include "rope.h"
#include "safetensors.h"
#include "tap.h"

/* max |a - b| / max(max |b|, tiny): relative to the tensor's scale, so near-zero entries of a
 * large tensor do not blow it up. */
static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}

static float *read_f32(const gpt_st_file *f, const char *name, size_t *n)
{
    const gpt_st_tensor *t = gpt_st_find(f, name);
    if (!t) return NULL;
    float *v = malloc(t->numel * sizeof *v);
    gpt_err err;
    if (gpt_st_read_f32(t, v, t->numel, &err) < 0) {
        free(v);
        return NULL;
    }
    if (n) *n = t->numel;
    return v;
}

static int64_t *read_i64(const gpt_st_file *f, const char *name, size_t *n)
{
    const gpt_st_tensor *t = gpt_st_find(f, name);
    if (!t || t->dtype != GPT_ST_I64) return NULL;
    int64_t *v = malloc(t->nbytes);
    memcpy(v, t->data, t->nbytes);
    *n = t->numel;
    return v;
}

static float scalar(const gpt_st_file *f, const char *name)
{
    size_t n;
    float *v = read_f32(f, name, &n), r = v ? v[0] : NAN;
    free(v);
    return r;
}

static void check_model(const char *dir)
{
    char path[512];
    gpt_err err;
    gpt_config cfg;
    snprintf(path, sizeof path, "t/data/ref/%s/model.yaml", dir);
    if (!ok(gpt_config_load(path, &cfg, &err) == 0, "%s: config loads", dir)) {
        diag("%s", err.msg);
        return;
    }
    gpt_backend *be = gpt_backend_cpu();
    gpt_model *m = gpt_model_create(&cfg.model, be, &err);
    if (!ok(m != NULL, "%s: model builds", dir)) {
        diag("%s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "t/data/ref/%s/model.safetensors", dir);
    if (!ok(gpt_model_load_hf(m, path, &err) == 0, "%s: Hugging Face weights load", dir)) {
        diag("%s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "t/data/ref/%s/expected.safetensors", dir);
    gpt_st_file *ex = gpt_st_open(path, &err);
    if (!ok(ex != NULL, "%s: expected values load", dir)) {
        diag("%s", err.msg);
        return;
    }
    size_t n, nl;
    int64_t *ids = read_i64(ex, "input_ids", &n), *shl = read_i64(ex, "shift_labels", &nl);
    const gpt_st_tensor *it = gpt_st_find(ex, "input_ids");
    int B = (int)it->shape[0], T = (int)it->shape[1], N = B * T;
    int *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    for (int i = 0; i < N; i++) {
        tok[i] = (int)ids[i];
        tgt[i] = (int)shl[i]; /* already shifted: the label of position t */
    }

    const gpt_model_config *c = gpt_model_config_of(m);
    if (c->positions == GPT_POS_ROPE) {
        float inv[256], af;
        gpt_rope_inv_freq(c, inv, &af);
        float *want = read_f32(ex, "rope.inv_freq", NULL);
        ok(want && rel_err(inv, want, (size_t)c->d_head / 2) < 1e-6 && fabsf(af - scalar(ex, "rope.attention_scaling")) < 1e-6,
           "%s: YaRN inv_freq and attention factor equal transformers' (rel %.2e)", dir,
           want ? rel_err(inv, want, (size_t)c->d_head / 2) : -1.0);
        free(want);
    }

    gpt_forward_opts opts = {.label_smoothing = 0.0f};
    gpt_loss loss;
    gpt_model_zero_grad(m);
    if (!ok(gpt_model_forward(m, tok, tgt, B, T, &opts, &loss, &err) == 0, "%s: forward", dir)) diag("%s", err.msg);
    int V = c->vocab_size, Vp = c->padded_vocab_size;
    float *logits = malloc((size_t)N * Vp * sizeof *logits), *dense = malloc((size_t)N * V * sizeof *dense);
    be->to_host(be, logits, gpt_model_logits(m), (size_t)N * Vp * sizeof *logits);
    for (int i = 0; i < N; i++) memcpy(dense + (size_t)i * V, logits + (size_t)i * Vp, (size_t)V * sizeof *dense);
    float *want = read_f32(ex, "logits", NULL);
    double e = rel_err(dense, want, (size_t)N * V);
    ok(e <= 1e-5, "%s: logits match (max rel err %.2e, target 1e-5)", dir, e);
    free(want);

    double lm = scalar(ex, "loss_lm"), total = scalar(ex, "loss"), acc = scalar(ex, "token_accuracy");
    ok(fabs(loss.nll - lm) <= 1e-5 * fabs(lm), "%s: cross-entropy %.7f vs %.7f", dir, loss.nll, lm);
    ok(fabs(loss.total - total) <= 1e-5 * fabs(total), "%s: total loss %.7f vs %.7f (aux %.6f)", dir, loss.total, total,
       loss.aux);
    ok(fabs((double)loss.n_correct / loss.n_scored - acc) < 1e-6, "%s: token accuracy %.4f vs %.4f", dir,
       (double)loss.n_correct / loss.n_scored, acc);

    if (!ok(gpt_model_backward(m, &err) == 0, "%s: backward", dir)) diag("%s", err.msg);
    const gpt_param_table *tab = gpt_model_params(m);
    float *grads = malloc(tab->total * sizeof *grads);
    be->to_host(be, grads, gpt_model_grad_data(m), tab->total * sizeof *grads);
    double worst = 0;
    const char *worst_name = "";
    int missing = 0;
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *t = &tab->t[i];
        char name[160];
        snprintf(name, sizeof name, "grad.%s", t->name);
        size_t gn;
        float *g = read_f32(ex, name, &gn);
        if (!g) {
            missing++;
            diag("no reference gradient for %s", t->name);
            continue;
        }
        double ge = rel_err(grads + t->offset, g, gn); /* padding rows (if any) come last */
        if (ge > worst) worst = ge, worst_name = t->name;
        free(g);
    }
    ok(missing == 0 && worst <= 1e-4, "%s: all %d gradients match (worst %.2e in %s, target 1e-4)", dir, tab->n, worst,
       worst_name);

    /* label smoothing: the same forward with eps = 0.1 against F.cross_entropy(label_smoothing=0.1) */
    opts.label_smoothing = 0.1f;
    gpt_model_forward(m, tok, tgt, B, T, &opts, &loss, &err);
    double sm = scalar(ex, "loss_smoothed");
    ok(fabs(loss.ce - sm) <= 1e-5 * fabs(sm), "%s: label-smoothed loss %.7f vs %.7f", dir, loss.ce, sm);
    gpt_model_zero_grad(m);
    gpt_model_backward(m, &err);
    float *dlog = malloc((size_t)N * Vp * sizeof *dlog);
    be->to_host(be, dlog, gpt_model_logits(m), (size_t)N * Vp * sizeof *dlog);
    for (int i = 0; i < N; i++) memcpy(dense + (size_t)i * V, dlog + (size_t)i * Vp, (size_t)V * sizeof *dense);
    want = read_f32(ex, "grad_logits.loss_smoothed", NULL);
    e = want ? rel_err(dense, want, (size_t)N * V) : 1;
    ok(e <= 1e-5, "%s: label-smoothed d loss / d logits (max rel err %.2e)", dir, e);
    free(want);

    free(dlog);
    free(grads);
    free(logits);
    free(dense);
    free(ids);
    free(shl);
    free(tok);
    free(tgt);
    gpt_st_close(ex);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
}

int main(void)
{
    check_model("tiny-gpt2");
    check_model("tiny-gpt-oss");
    return done_testing();
}
