/* MXFP4 experts at inference: a tiny gpt-oss checkpoint whose experts are stored as MXFP4 pairs
 * (quantized from the fixture's weights) opens by default with its experts kept in MXFP4, and gives
 * the logits, the loss, the KV-cache decode and the greedy generation of the same checkpoint opened
 * with its experts dequantized to fp32 (to fp32 rounding). Quantizing fp32 experts at load gives the
 * same model; backward is refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "hf_import.h"
#include "model.h"
#include "model_load.h"
#include "mxfp4_ckpt.h"
#include "tap.h"

static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md || isnan(d) ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 0 ? mb : 1);
}


/* logits (B*T, V) of a full forward */
static void forward_logits(gpt_model *m, const int *tok, int B, int T, float *out)
{
    gpt_err err;
    const gpt_model_config *c = gpt_model_config_of(m);
    gpt_backend *be = gpt_model_backend(m);
    int V = c->vocab_size, Vp = c->padded_vocab_size;
    gpt_model_forward(m, tok, NULL, B, T, NULL, NULL, &err);
    for (int r = 0; r < B * T; r++) be->to_host(be, out + (size_t)r * V, gpt_model_logits(m) + (size_t)r * Vp, V * sizeof *out);
}

/* greedy: n new tokens after the prompt, through the KV cache */
static void greedy(gpt_model *m, const int *prompt, int np, int n, int *out)
{
    gpt_err err;
    int V = gpt_model_config_of(m)->vocab_size, s = 0;
    gpt_kv_cache *kc = gpt_kv_cache_create(m, 1, np + n, &err);
    float *lg = malloc((size_t)V * sizeof *lg);
    int tok = prompt[0];
    for (int i = 0; i < np + n - 1; i++) {
        gpt_model_extend(m, kc, &tok, &s, 1, lg, &err);
        int best = 0;
        for (int v = 1; v < V; v++) best = lg[v] > lg[best] ? v : best;
        tok = i + 1 < np ? prompt[i + 1] : best;
        if (i + 1 >= np) out[i + 1 - np] = best;
    }
    free(lg);
    gpt_kv_cache_free(kc);
}

int main(void)
{
    gpt_err err = {0};
    gpt_config cfg;
    if (gpt_config_load("t/data/ref/tiny-gpt-oss/model.yaml", &cfg, &err) < 0) {
        ok(0, "fixture config: %s", err.msg);
        return done_testing();
    }
    gpt_backend *be = gpt_backend_cpu();
    gpt_model *ref = gpt_model_create(&cfg.model, be, &err);
    if (!ref || gpt_model_load_hf(ref, "t/data/ref/tiny-gpt-oss/model.safetensors", &err) < 0) {
        ok(0, "fixture weights: %s", err.msg);
        return done_testing();
    }
    char tmp[] = "/tmp/gpt-mxfp4-XXXXXX", mx[64], f32[64], cmd[128];
    if (!mkdtemp(tmp)) return 1;
    snprintf(mx, sizeof mx, "%s/mx", tmp);
    snprintf(f32, sizeof f32, "%s/f32", tmp);
    err.msg[0] = '\0';
    ok(write_mxfp4_ckpt(mx, ref, &err) == 0, "wrote a tiny gpt-oss checkpoint with MXFP4 experts %s", err.msg);

    gpt_loaded_model a, b;
    err.msg[0] = '\0';
    ok(gpt_model_open(&a, mx, be, NULL, 0, &err) == 0 && gpt_model_is_mxfp4(a.model),
       "gpt_model_open keeps MXFP4 experts as MXFP4 by default %s", err.msg);
    err.msg[0] = '\0';
    ok(gpt_model_open_ex(&b, mx, be, NULL, 0, &(gpt_open_opts){.experts = GPT_EXPERTS_F32}, &err) == 0 &&
           !gpt_model_is_mxfp4(b.model),
       "GPT_EXPERTS_F32 dequantizes them %s", err.msg);
    const gpt_param_table *ta = gpt_model_params(a.model), *tb = gpt_model_params(b.model);
    ok(gpt_model_mxfp4_count(a.model) == 2 * cfg.model.n_layers && ta->n == tb->n - 2 * cfg.model.n_layers &&
           ta->total < tb->total && gpt_model_grad_data(a.model) == NULL,
       "the MXFP4 model holds %d expert tensors outside its fp32 table (%zu of %zu floats) and no gradients",
       gpt_model_mxfp4_count(a.model), ta->total, tb->total);

    const gpt_model_config *c = &cfg.model;
    int B = 2, T = 24, V = c->vocab_size, tok[48], tgt[48];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 37 + 5) % V, tgt[i] = (i * 53 + 1) % V;
    float *la = malloc((size_t)B * T * V * sizeof *la), *lb = malloc((size_t)B * T * V * sizeof *lb);
    forward_logits(a.model, tok, B, T, la);
    forward_logits(b.model, tok, B, T, lb);
    double e = rel_err(la, lb, (size_t)B * T * V);
    ok(e < 1e-5, "forward logits: MXFP4 kernels equal dequantized fp32 (max rel %.1e)", e);
    forward_logits(ref, tok, B, T, la);
    e = rel_err(la, lb, (size_t)B * T * V);
    ok(e > 1e-4, "... and quantization did change the model (vs the fixture's fp32 experts: %.1e)", e);

    gpt_loss qa, qb;
    gpt_model_forward(a.model, tok, tgt, B, T, NULL, &qa, &err);
    gpt_model_forward(b.model, tok, tgt, B, T, NULL, &qb, &err);
    ok(fabs(qa.nll - qb.nll) < 1e-5 * qb.nll && qa.n_correct == qb.n_correct, "loss %.6f equals %.6f", qa.nll, qb.nll);
    ok(gpt_model_backward(a.model, &err) < 0 && strstr(err.msg, "MXFP4"), "backward is refused: %s", err.msg);

    /* prefill in one chunk + token-by-token decode equals the fp32 model's full recompute */
    gpt_kv_cache *kc = gpt_kv_cache_create(a.model, 1, T, &err);
    float *dec = malloc((size_t)T * V * sizeof *dec);
    int seqs[24] = {0};
    gpt_model_extend(a.model, kc, tok, seqs, 10, dec, &err);
    for (int t = 10; t < T; t++) gpt_model_extend(a.model, kc, tok + t, seqs, 1, dec + (size_t)t * V, &err);
    e = rel_err(dec, lb, (size_t)T * V);
    ok(e < 1e-5, "KV-cache prefill + decode through MXFP4 equals the fp32 full recompute (max rel %.1e)", e);
    gpt_kv_cache_free(kc);

    int ga[20], gb[20];
    greedy(a.model, tok, 5, 20, ga);
    greedy(b.model, tok, 5, 20, gb);
    ok(memcmp(ga, gb, sizeof ga) == 0, "greedy generation of 20 tokens is the same");

    /* an fp32 checkpoint of the dequantized model, quantized again at load, is the same model */
    err.msg[0] = '\0';
    ok(gpt_ckpt_save_model(f32, 0, b.model, NULL, 0, NULL, &err) == 0, "saved the dequantized model %s", err.msg);
    gpt_loaded_model q;
    err.msg[0] = '\0';
    ok(gpt_model_open_ex(&q, f32, be, NULL, 0, &(gpt_open_opts){.experts = GPT_EXPERTS_MXFP4}, &err) == 0 &&
           gpt_model_is_mxfp4(q.model),
       "GPT_EXPERTS_MXFP4 quantizes fp32 experts at load %s", err.msg);
    forward_logits(q.model, tok, B, T, lb);
    forward_logits(a.model, tok, B, T, la);
    ok(memcmp(la, lb, (size_t)B * T * V * sizeof *la) == 0, "... to the same weights: identical logits");
    gpt_model_close(&q);

    /* a dense model cannot have MXFP4 experts */
    gpt_config g2;
    if (gpt_config_load("t/data/ref/tiny-gpt2/model.yaml", &g2, &err) == 0) {
        gpt_model *d = gpt_model_create_ex(&g2.model, be, &(gpt_model_opts){.mxfp4_experts = 1}, &err);
        ok(!d && strstr(err.msg, "no experts"), "a dense model with MXFP4 experts: %s", err.msg);
        gpt_config_free(&g2);
    }

    free(la), free(lb), free(dec);
    gpt_model_close(&a);
    gpt_model_close(&b);
    gpt_model_free(ref);
    gpt_config_free(&cfg);
    be->destroy(be);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) diag("could not remove %s", tmp);
    return done_testing();
}
