/* Parameter counts of the presets against independent figures: Hugging Face's
 * GPT2LMHeadModel.num_parameters() for the GPT-2 sizes (exact), and the gpt-oss model card's
 * totals and active parameters per token (116.8B / 5.1B and 20.9B / 3.6B, to 0.01B). Plus the
 * table's layout: names unique, tensors aligned and disjoint, init deterministic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "params.h"
#include "tap.h"

static void counts(const char *preset, uint64_t *total, uint64_t *active)
{
    gpt_config cfg;
    gpt_err err;
    *total = *active = 0;
    if (gpt_config_load(preset, &cfg, &err) < 0) {
        diag("%s", err.msg);
        return;
    }
    gpt_param_count(&cfg.model, total, active);
    gpt_config_free(&cfg);
}

int main(void)
{
    static const struct {
        const char *preset;
        uint64_t hf;
    } gpt2[] = {{"gpt2-124m", 124439808}, {"gpt2-350m", 354823168}, {"gpt2-774m", 774030080},
                {"gpt2-1558m", 1557611200}};
    for (int i = 0; i < 4; i++) {
        uint64_t t, a;
        counts(gpt2[i].preset, &t, &a);
        is_int(t, gpt2[i].hf, "%s: total parameters equal transformers' num_parameters()", gpt2[i].preset);
    }
    static const struct {
        const char *preset;
        double total, active;
    } oss[] = {{"gpt-oss-120b", 116.83, 5.13}, {"gpt-oss-20b", 20.91, 3.61}};
    for (int i = 0; i < 2; i++) {
        uint64_t t, a;
        counts(oss[i].preset, &t, &a);
        ok(fabs(t / 1e9 - oss[i].total) < 0.01, "%s: %.3fB parameters (model card %.2fB)", oss[i].preset, t / 1e9,
           oss[i].total);
        ok(fabs(a / 1e9 - oss[i].active) < 0.01, "%s: %.3fB active per token (model card %.2fB)", oss[i].preset,
           a / 1e9, oss[i].active);
    }

    gpt_config cfg;
    gpt_err err;
    if (gpt_config_load("tiny-gpt-oss", &cfg, &err) < 0) {
        ok(0, "tiny-gpt-oss loads: %s", err.msg);
        return done_testing();
    }
    gpt_param_table tab;
    ok(gpt_params_build(&cfg.model, &tab, &err) == 0, "tiny-gpt-oss table builds");
    int unique = 1, aligned = 1, disjoint = 1;
    for (int i = 0; i < tab.n; i++) {
        aligned &= tab.t[i].offset % 16 == 0;
        if (i) disjoint &= tab.t[i].offset >= tab.t[i - 1].offset + tab.t[i - 1].numel;
        for (int j = 0; j < i; j++) unique &= strcmp(tab.t[i].name, tab.t[j].name) != 0;
    }
    ok(unique && aligned && disjoint, "%d tensors: unique names, 64-byte aligned, disjoint", tab.n);
    const gpt_tensor *o = gpt_params_find(&tab, "model.layers.0.self_attn.o_proj.weight");
    const gpt_tensor *q = gpt_params_find(&tab, "model.layers.0.self_attn.q_proj.weight");
    ok(o && q && gpt_tensor_decays(q) && !gpt_tensor_decays(gpt_params_find(&tab, "model.layers.0.self_attn.sinks")) &&
           !gpt_tensor_decays(gpt_params_find(&tab, "model.norm.weight")),
       "weight decay: matrices yes; sinks, norms no");
    float *a = malloc(tab.total * sizeof *a), *b = malloc(tab.total * sizeof *b);
    gpt_params_init(&cfg.model, &tab, 42, a);
    gpt_params_init(&cfg.model, &tab, 42, b);
    ok(memcmp(a, b, tab.total * sizeof *a) == 0, "init is deterministic for a seed");
    double sq = 0, so = 0;
    for (size_t k = 0; k < q->numel; k++) sq += (double)a[q->offset + k] * a[q->offset + k];
    for (size_t k = 0; k < o->numel; k++) so += (double)a[o->offset + k] * a[o->offset + k];
    double stdq = sqrt(sq / q->numel), stdo = sqrt(so / o->numel), want_o = 0.02 / sqrt(2.0 * cfg.model.n_layers);
    ok(fabs(stdq - 0.02) < 0.002 && fabs(stdo - want_o) < 0.1 * want_o,
       "init std 0.02 (%.4f), residual projections 0.02/sqrt(2L) (%.4f vs %.4f)", stdq, stdo, want_o);
    gpt_params_init(&cfg.model, &tab, 43, b);
    ok(memcmp(a, b, tab.total * sizeof *a) != 0, "another seed, other values");
    free(a), free(b);
    gpt_params_free(&tab);
    gpt_config_free(&cfg);
    return done_testing();
}
