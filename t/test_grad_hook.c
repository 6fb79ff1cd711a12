/* The backward gradient hook (gpt_model_set_grad_hook), which data parallelism uses to reduce
 * gradients while backward runs: over one backward the reported ranges cover the gradient buffer
 * exactly once, layers come from the last to the first, and a range reported is final: what it
 * held at the report equals what backward leaves (compared bit for bit), also when backward
 * accumulates onto an earlier micro-batch's gradient. GPT-2 with its tied embedding and untied,
 * and the GPT-OSS MoE reference (untied head, sinks, router aux loss). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "tap.h"

typedef struct {
    gpt_model *m;
    float *snap;       /* the gradient buffer as each range was reported */
    size_t *off, *len; /* the reports, in order */
    int n, cap;
} rec;

static void on_ready(void *ctx, size_t off, size_t n)
{
    rec *r = ctx;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->off = realloc(r->off, (size_t)r->cap * sizeof *r->off);
        r->len = realloc(r->len, (size_t)r->cap * sizeof *r->len);
    }
    r->off[r->n] = off;
    r->len[r->n++] = n;
    size_t total = gpt_model_params(r->m)->total;
    if (off <= total && n <= total - off) memcpy(r->snap + off, gpt_model_grad_data(r->m) + off, n * sizeof(float));
}

/* Whether layer l of the table lies inside [off, off + n). */
static int layer_inside(const gpt_param_table *tab, int l, size_t off, size_t n)
{
    int any = 0;
    for (int i = 0; i < tab->n; i++) {
        if (tab->t[i].layer != l) continue;
        if (tab->t[i].offset < off || tab->t[i].offset + tab->t[i].numel > off + n) return 0;
        any = 1;
    }
    return any;
}

static void check(const char *path, const char *set, const char *what)
{
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load(path, &cfg, &err) < 0 || (set && gpt_config_set(&cfg, set, &err) < 0)) {
        ok(0, "%s: load %s: %s", what, path, err.msg);
        return;
    }
    gpt_backend *be = gpt_backend_cpu();
    gpt_model *m = gpt_model_create(&cfg.model, be, &err);
    if (!m) {
        ok(0, "%s: create: %s", what, err.msg);
        be->destroy(be);
        gpt_config_free(&cfg);
        return;
    }
    gpt_model_init_params(m, 7);
    gpt_model_zero_grad(m);
    const gpt_param_table *tab = gpt_model_params(m);
    const int B = 2, T = 8, L = cfg.model.n_layers, V = cfg.model.vocab_size;
    int tok[16], tgt[16];
    uint32_t x = 12345;
    rec r = {.m = m, .snap = calloc(tab->total, sizeof(float))};
    unsigned char *seen = calloc(tab->total, 1);
    gpt_forward_opts fo = {0};
    for (int pass = 0; pass < 2; pass++) { /* the second backward accumulates onto the first */
        for (int i = 0; i < B * T; i++) {
            x = x * 1664525u + 1013904223u;
            tok[i] = (int)(x >> 8) % V;
            tgt[i] = (int)(x >> 16) % V;
        }
        gpt_loss loss;
        r.n = 0;
        memset(seen, 0, tab->total);
        gpt_model_set_grad_hook(m, on_ready, &r);
        int rc = gpt_model_forward(m, tok, tgt, B, T, &fo, &loss, &err);
        if (rc == 0) rc = gpt_model_backward(m, &err);
        ok(rc == 0, "%s, backward %d runs with the hook (%s)", what, pass + 1, rc ? err.msg : "");
        /* coverage: every float once */
        int bad = 0;
        for (int k = 0; k < r.n; k++) {
            if (r.off[k] > tab->total || r.len[k] > tab->total - r.off[k]) {
                bad = 1;
                continue;
            }
            for (size_t j = r.off[k]; j < r.off[k] + r.len[k]; j++) bad |= seen[j]++ != 0;
        }
        for (size_t j = 0; j < tab->total; j++) bad |= seen[j] != 1;
        ok(!bad, "%s, backward %d: %d ranges cover the %zu gradients exactly once", what, pass + 1, r.n, tab->total);
        /* layers last to first, each its own report (after the untied head's, when there is one) */
        int k0 = cfg.model.tie_embeddings ? 0 : 1, order = r.n >= L + k0;
        for (int l = L - 1, k = k0; order && l >= 0; l--, k++) order = layer_inside(tab, l, r.off[k], r.len[k]);
        ok(order, "%s, backward %d: layer ranges come from layer %d down to 0", what, pass + 1, L - 1);
        size_t diff = 0;
        const float *g = gpt_model_grad_data(m);
        for (size_t j = 0; j < tab->total; j++) diff += memcmp(&g[j], &r.snap[j], sizeof(float)) != 0;
        ok(diff == 0, "%s, backward %d: every range was final when reported (%zu floats changed later)", what,
           pass + 1, diff);
    }
    /* without the hook nothing is reported */
    gpt_model_set_grad_hook(m, NULL, NULL);
    r.n = 0;
    gpt_loss loss;
    int rc = gpt_model_forward(m, tok, tgt, B, T, &fo, &loss, &err);
    if (rc == 0) rc = gpt_model_backward(m, &err);
    ok(rc == 0 && r.n == 0, "%s: a removed hook is not called", what);
    free(r.snap);
    free(r.off);
    free(r.len);
    free(seen);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
}

int main(void)
{
    check("t/data/ref/tiny-gpt2/model.yaml", NULL, "gpt2 (tied)");
    check("t/data/ref/tiny-gpt2/model.yaml", "model.tie_embeddings=false", "gpt2 (untied)");
    check("t/data/ref/tiny-gpt-oss/model.yaml", NULL, "gpt-oss (MoE)");
    return done_testing();
}
