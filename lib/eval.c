/* eval.c: windowed scoring through the training forward (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per row: log-sum-exp and argmax of the first V logits, in double. */
static void row_stats(const float *row, int V, uint32_t target, double *nll, int *correct)
{
    double mx = -INFINITY, sum = 0;
    int am = 0;
    for (int v = 0; v < V; v++)
        if (row[v] > mx) mx = row[v], am = v;
    for (int v = 0; v < V; v++) sum += exp((double)row[v] - mx);
    *nll = mx + log(sum) - (double)row[target];
    *correct = (uint32_t)am == target;
}

typedef struct {
    size_t begin, score_from; /* window start, first scored absolute position */
} window;

/* Runs B windows of T tokens each and scores their targets. */
static int run_windows(gpt_model *m, const uint32_t *ids, const window *w, int B, int T,
                       gpt_eval_token_fn cb, void *user, gpt_eval_result *res, float *row, gpt_err *err)
{
    const gpt_model_config *c = gpt_model_config_of(m);
    gpt_backend *be = gpt_model_backend(m);
    int V = c->vocab_size, Vp = c->padded_vocab_size;
    int *tok = gpt_xmalloc((size_t)B * T * sizeof *tok);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) tok[(size_t)b * T + t] = (int)ids[w[b].begin + t];
    int rc = gpt_model_forward(m, tok, NULL, B, T, NULL, NULL, err);
    free(tok);
    if (rc < 0) return -1;
    const float *lg = gpt_model_logits(m);
    for (int b = 0; b < B; b++) {
        for (size_t j = w[b].score_from; j < w[b].begin + (size_t)T; j++) {
            size_t r = (size_t)b * T + (j - w[b].begin - 1);
            be->to_host(be, row, lg + r * Vp, (size_t)V * sizeof *row);
            double nll;
            int ok;
            row_stats(row, V, ids[j], &nll, &ok);
            res->sum_nll += nll, res->n_scored++, res->n_correct += ok;
            if (cb) cb(user, j, ids[j], nll, ok);
        }
    }
    return 0;
}

int gpt_eval_tokens(gpt_model *m, const uint32_t *ids, size_t n, const gpt_eval_opts *o, gpt_eval_token_fn cb,
                    void *user, gpt_eval_result *res, gpt_err *err)
{
    const gpt_model_config *c = gpt_model_config_of(m);
    int L = o && o->seq_len > 0 ? o->seq_len : c->max_seq_len;
    int S = o && o->stride > 0 ? o->stride : L, Bmax = o && o->batch > 0 ? o->batch : 1;
    if (L > c->max_seq_len) return gpt_errf(err, "--seq-len %d is longer than the model's context (%d)", L, c->max_seq_len);
    if (L < 2) return gpt_errf(err, "--seq-len %d: a window needs at least 2 tokens", L);
    if (S > L) return gpt_errf(err, "--stride %d is longer than --seq-len %d: tokens between windows would not be scored", S, L);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= (uint32_t)c->vocab_size)
            return gpt_errf(err, "token %zu is id %u, outside the model's vocabulary (0..%d)", i, ids[i], c->vocab_size - 1);
    if (n < 2) return 0;
    float *row = gpt_xmalloc((size_t)c->vocab_size * sizeof *row);
    window *w = gpt_xmalloc((size_t)Bmax * sizeof *w);
    int nb = 0, Tcur = 0, rc = 0;
    size_t prev_end = 0;
    for (size_t begin = 0; begin < n; begin += (size_t)S) {
        size_t end = begin + (size_t)L < n ? begin + (size_t)L : n;
        int T = (int)(end - begin);
        /* HF's recipe: a window's first token has no context, so it is scored only if an
         * earlier window scored it (with stride == seq_len it is not scored at all) */
        window cur = {begin, prev_end > begin + 1 ? prev_end : begin + 1};
        if (nb && (T != Tcur || nb == Bmax)) {
            if ((rc = run_windows(m, ids, w, nb, Tcur, cb, user, res, row, err)) < 0) break;
            nb = 0;
        }
        if (cur.score_from < end) w[nb++] = cur, Tcur = T;
        prev_end = end;
        if (end == n) break;
    }
    if (rc == 0 && nb) rc = run_windows(m, ids, w, nb, Tcur, cb, user, res, row, err);
    free(row), free(w);
    return rc;
}

int gpt_eval_continuation(gpt_model *m, const uint32_t *ctx, size_t n_ctx, const uint32_t *end, size_t n_end,
                          double *sum_nll, gpt_err *err)
{
    const gpt_model_config *c = gpt_model_config_of(m);
    if (n_end == 0) return gpt_errf(err, "empty ending: nothing to score");
    if (n_ctx == 0) return gpt_errf(err, "empty context: the first ending token has nothing to be predicted from");
    if (n_end >= (size_t)c->max_seq_len)
        return gpt_errf(err, "ending of %zu tokens does not fit the model's context (%d)", n_end, c->max_seq_len);
    size_t keep = n_ctx + n_end > (size_t)c->max_seq_len ? (size_t)c->max_seq_len - n_end : n_ctx;
    size_t n = keep + n_end;
    uint32_t *ids = gpt_xmalloc(n * sizeof *ids);
    memcpy(ids, ctx + (n_ctx - keep), keep * sizeof *ids);
    memcpy(ids + keep, end, n_end * sizeof *ids);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        if (ids[i] >= (uint32_t)c->vocab_size)
            rc = gpt_errf(err, "token id %u is outside the model's vocabulary (0..%d)", ids[i], c->vocab_size - 1);
    if (rc == 0) {
        float *row = gpt_xmalloc((size_t)c->vocab_size * sizeof *row);
        window w = {0, keep};
        gpt_eval_result r = {0};
        rc = run_windows(m, ids, &w, 1, (int)n, NULL, NULL, &r, row, err);
        *sum_nll = r.sum_nll;
        free(row);
    }
    free(ids);
    return rc;
}
