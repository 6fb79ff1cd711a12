/* Decoding through the KV cache gives the logits of a full recompute at every step: one token at
 * a time, in chunks, two sequences interleaved in one call, and past the sliding window (the
 * gpt-oss fixture slides 4 tokens on even layers; its ring holds 4 + GPT_KV_CHUNK - 1 slots, so
 * 150 tokens wrap it); prefill without logits, and with the last rows' only (extend_rows). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hf_import.h"
#include "model.h"
#include "tap.h"

static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 0 ? mb : 1);
}

static void check(const char *dir)
{
    char path[256];
    gpt_err err;
    gpt_config cfg;
    snprintf(path, sizeof path, "t/data/ref/%s/model.yaml", dir);
    if (gpt_config_load(path, &cfg, &err) < 0) {
        ok(0, "%s: %s", dir, err.msg);
        return;
    }
    gpt_backend *be = gpt_backend_cpu();
    gpt_model *m = gpt_model_create(&cfg.model, be, &err);
    snprintf(path, sizeof path, "t/data/ref/%s/model.safetensors", dir);
    if (!m || gpt_model_load_hf(m, path, &err) < 0) {
        ok(0, "%s: %s", dir, err.msg);
        return;
    }
    const gpt_model_config *c = gpt_model_config_of(m);
    int T = c->max_seq_len < 150 ? c->max_seq_len : 150, V = c->vocab_size, Vp = c->padded_vocab_size;
    int tok[2][150];
    for (int t = 0; t < T; t++) tok[0][t] = (t * 37 + 11) % V, tok[1][t] = (t * 101 + 7) % V;
    /* full recompute of both sequences */
    float *full = malloc((size_t)2 * T * V * sizeof *full), *row = malloc((size_t)Vp * sizeof *row);
    int both[300];
    memcpy(both, tok[0], (size_t)T * sizeof *both);
    memcpy(both + T, tok[1], (size_t)T * sizeof *both);
    gpt_model_forward(m, both, NULL, 2, T, NULL, NULL, &err);
    const float *lg = gpt_model_logits(m);
    for (int r = 0; r < 2 * T; r++) {
        be->to_host(be, row, lg + (size_t)r * Vp, (size_t)Vp * sizeof *row);
        memcpy(full + (size_t)r * V, row, (size_t)V * sizeof *row);
    }

    gpt_kv_cache *kc = gpt_kv_cache_create(m, 2, T, &err);
    float *out = malloc((size_t)2 * T * V * sizeof *out);
    /* one token at a time, sequence 0 */
    double worst = 0;
    for (int t = 0; t < T; t++) {
        int s = 0;
        gpt_model_extend(m, kc, &tok[0][t], &s, 1, out, &err);
        double e = rel_err(out, full + (size_t)t * V, (size_t)V);
        worst = e > worst ? e : worst;
    }
    ok(worst < 1e-5, "%s: token-by-token decode equals full recompute at all %d steps (max rel %.1e)", dir, T, worst);
    is_int(gpt_kv_cache_len(kc, 0), T, "%s: cache length counts the tokens", dir);
    int one = tok[0][0], s0 = 0;
    ok(gpt_model_extend(m, kc, &one, &s0, 1, out, &err) < 0 && strstr(err.msg, "context is full"),
       "%s: extending a full sequence is an error: %s", dir, err.msg);

    /* sequence 1 in chunks of 3 (the window is 4), interleaved with a restart of sequence 0 */
    gpt_kv_cache_clear(kc, 0);
    worst = 0;
    for (int t = 0; t + 2 < T; t += 3) {
        int tk[4] = {tok[1][t], tok[1][t + 1], tok[1][t + 2], tok[0][t / 3]}, sq[4] = {1, 1, 1, 0};
        gpt_model_extend(m, kc, tk, sq, 4, out, &err);
        for (int i = 0; i < 3; i++) {
            double e = rel_err(out + (size_t)i * V, full + (size_t)(T + t + i) * V, (size_t)V);
            worst = e > worst ? e : worst;
        }
        double e = rel_err(out + (size_t)3 * V, full + (size_t)(t / 3) * V, (size_t)V);
        worst = e > worst ? e : worst;
    }
    ok(worst < 1e-5, "%s: chunked prefill with two sequences in one call matches (max rel %.1e)", dir, worst);
    /* all 12 tokens of a sequence in one call (3 windows of the sliding layers) */
    gpt_kv_cache_clear(kc, -1);
    int sq[150] = {0}, n1 = T < GPT_KV_CHUNK ? T : GPT_KV_CHUNK;
    gpt_model_extend(m, kc, tok[1], sq, n1, out, &err);
    if (n1 < T) gpt_model_extend(m, kc, tok[1] + n1, sq, T - n1, out + (size_t)n1 * V, &err);
    worst = rel_err(out, full + (size_t)T * V, (size_t)T * V);
    ok(worst < 1e-5, "%s: prompts of %d tokens in one call, past the window (max rel %.1e)", dir, n1, worst);
    /* prefill (no LM head) leaves the same cache: the next token's logits are bit-identical */
    {
        int np = T - 1 < GPT_KV_CHUNK ? T - 1 : GPT_KV_CHUNK, last = tok[1][np];
        float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
        gpt_kv_cache_clear(kc, -1);
        int r1 = gpt_model_extend(m, kc, tok[1], sq, np, out, &err);
        int r2 = gpt_model_extend(m, kc, &last, sq, 1, a, &err);
        gpt_kv_cache_clear(kc, -1);
        int r3 = gpt_model_prefill(m, kc, tok[1], sq, np, &err);
        int len = gpt_kv_cache_len(kc, 0);
        int r4 = gpt_model_extend(m, kc, &last, sq, 1, b, &err);
        ok(r1 == 0 && r2 == 0 && r3 == 0 && r4 == 0 && len == np && memcmp(a, b, (size_t)V * sizeof *a) == 0,
           "%s: gpt_model_prefill of %d tokens, then one more: the same logits, bit for bit, as extend", dir, np);
        int bad = 99999;
        ok(gpt_model_prefill(m, kc, &bad, sq, 1, &err) < 0 && strstr(err.msg, "outside the vocabulary"),
           "%s: prefill checks its tokens like extend: %s", dir, err.msg);
        free(a), free(b);
    }
    /* extend_rows: two prompts in one call, logits for each one's last row only, equal to the full
     * recompute's rows; the cache it leaves decodes the next token like extend's does */
    {
        int n0 = 9, n1r = 13 < T ? 13 : T - 1, tk[30], sqs[30], rows[2] = {n0 - 1, n0 + n1r - 1};
        for (int i = 0; i < n0; i++) tk[i] = tok[0][i], sqs[i] = 0;
        for (int i = 0; i < n1r; i++) tk[n0 + i] = tok[1][i], sqs[n0 + i] = 1;
        float *two = malloc((size_t)2 * V * sizeof *two);
        for (size_t i = 0; i < (size_t)2 * V; i++) two[i] = NAN;
        gpt_kv_cache_clear(kc, -1);
        int r1 = gpt_model_extend_rows(m, kc, tk, sqs, n0 + n1r, rows, 2, two, &err);
        double e = fmax(rel_err(two, full + (size_t)(n0 - 1) * V, (size_t)V),
                        rel_err(two + V, full + (size_t)(T + n1r - 1) * V, (size_t)V));
        ok(r1 == 0 && e < 1e-5 && gpt_kv_cache_len(kc, 0) == n0 && gpt_kv_cache_len(kc, 1) == n1r,
           "%s: extend_rows of two prompts (%d and %d tokens): their last rows' logits only (max rel %.1e)", dir,
           n0, n1r, e);
        int nx[2] = {tok[0][n0], tok[1][n1r]}, s01[2] = {0, 1};
        int r2 = gpt_model_extend(m, kc, nx, s01, 2, two, &err);
        e = fmax(rel_err(two, full + (size_t)n0 * V, (size_t)V), rel_err(two + V, full + (size_t)(T + n1r) * V, (size_t)V));
        ok(r2 == 0 && e < 1e-5, "%s: then one more token each: the full recompute's logits (max rel %.1e)", dir, e);
        int back[2] = {3, 3}, past[1] = {n0 + n1r};
        gpt_kv_cache_clear(kc, -1);
        ok(gpt_model_extend_rows(m, kc, tk, sqs, n0 + n1r, back, 2, two, &err) < 0 && strstr(err.msg, "increasing") &&
               gpt_model_extend_rows(m, kc, tk, sqs, n0 + n1r, past, 1, two, &err) < 0 &&
               gpt_kv_cache_len(kc, 0) == 0,
           "%s: extend_rows refuses rows out of order or past the call, before touching the cache: %s", dir, err.msg);
        int r3 = gpt_model_extend_rows(m, kc, tk, sqs, n0 + n1r, NULL, 0, NULL, &err);
        ok(r3 == 0 && gpt_kv_cache_len(kc, 1) == n1r, "%s: extend_rows with no rows is a prefill", dir);
        free(two);
    }
    gpt_kv_cache_clear(kc, -1);
    ok(T <= GPT_KV_CHUNK ||
           (gpt_model_extend(m, kc, tok[0], sq, GPT_KV_CHUNK + 1, NULL, &err) < 0 && strstr(err.msg, "per call")),
       "%s: more than GPT_KV_CHUNK tokens of one sequence per call is refused", dir);
    gpt_kv_cache_free(kc);
    free(full), free(row), free(out);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
}

int main(void)
{
    check("tiny-gpt-oss");
    check("tiny-gpt2");
    return done_testing();
}
