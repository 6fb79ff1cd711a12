/* eval.c: windowed scoring through the training forward (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_pp.h"
#include "model_tp.h"

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

/* The forward of (B, T) tokens; on a pipeline stage, with the activations from the previous stage
 * and to the next (every stage makes the same calls, so the blocking pairs match). 1: this rank
 * holds the logits (the last stage); 0: it does not; -1: error. */
static int forward(gpt_model *m, const int *tok, int B, int T, gpt_err *err)
{
    enum { TAG_EVAL = 6 };
    int stage, P = gpt_model_pp_info(m, &stage, NULL, NULL);
    if (P <= 1) return gpt_model_forward(m, tok, NULL, B, T, NULL, NULL, err) < 0 ? -1 : 1;
    gpt_comm *pp = gpt_model_pp_comm(m);
    if (!pp) return gpt_errf(err, "pipeline stage %d of %d has no pp communicator (gpt_model_pp_set_comm)", stage, P);
    size_t xf = (size_t)B * T * gpt_model_config_of(m)->d_model + gpt_model_pp_fwd_extra(m);
    float *in = stage > 0 ? gpt_xmalloc(xf * sizeof *in) : NULL, *out = stage < P - 1 ? gpt_xmalloc(xf * sizeof *out) : NULL;
    int rc = in ? pp->recv(pp, in, xf * sizeof *in, stage - 1, TAG_EVAL, err) : 0;
    if (rc == 0) rc = gpt_model_forward_stage(m, tok, NULL, B, T, NULL, in, out, NULL, err);
    if (rc == 0 && out) rc = pp->send(pp, out, xf * sizeof *out, stage + 1, TAG_EVAL, err);
    free(in), free(out);
    return rc < 0 ? -1 : stage == P - 1;
}

/* Runs B windows of T tokens each and scores their targets (on the rank holding the logits). */
static int run_windows(gpt_model *m, const uint32_t *ids, const window *w, int B, int T,
                       gpt_eval_token_fn cb, void *user, gpt_eval_result *res, float *row, gpt_err *err)
{
    const gpt_model_config *c = gpt_model_config_of(m);
    gpt_backend *be = gpt_model_backend(m);
    gpt_comm *tp = gpt_model_tp_comm(m);
    int V = c->vocab_size, Vp = c->padded_vocab_size;
    size_t N = (size_t)B * T;
    int *tok = gpt_xmalloc(N * sizeof *tok);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) tok[(size_t)b * T + t] = (int)ids[w[b].begin + t];
    int rc = forward(m, tok, B, T, err);
    if (rc <= 0) {
        free(tok);
        return rc;
    }
    const float *lg = gpt_model_logits(m);
    float *tnll = NULL;
    int *tok_ok = NULL;
    if (tp) {
        /* vocabulary-parallel: each rank holds columns [rank * Vp, (rank + 1) * Vp) of every row;
         * the cross-entropy reduces across them (model_tp.h), rows not scored get target -1 */
        float *loc = gpt_xmalloc(N * Vp * sizeof *loc), *lse = gpt_xmalloc(N * sizeof *lse);
        float *losses = gpt_xmalloc(N * sizeof *losses);
        tnll = gpt_xmalloc(N * sizeof *tnll), tok_ok = gpt_xmalloc(N * sizeof *tok_ok);
        for (size_t i = 0; i < N; i++) tok[i] = -1;
        for (int b = 0; b < B; b++)
            for (size_t j = w[b].score_from; j < w[b].begin + (size_t)T; j++)
                tok[(size_t)b * T + (j - w[b].begin - 1)] = (int)ids[j];
        be->to_host(be, loc, lg, N * Vp * sizeof *loc);
        rc = gpt_tp_xent(tp, loc, tok, (int)N, Vp, tp->rank * Vp, V, 0.0f, losses, tnll, tok_ok, lse, err);
        free(loc), free(lse), free(losses);
    }
    for (int b = 0; b < B && rc >= 0; b++) {
        for (size_t j = w[b].score_from; j < w[b].begin + (size_t)T; j++) {
            size_t r = (size_t)b * T + (j - w[b].begin - 1);
            double nll;
            int ok;
            if (tp) {
                nll = tnll[r], ok = tok_ok[r];
            } else {
                be->to_host(be, row, lg + r * Vp, (size_t)V * sizeof *row);
                row_stats(row, V, ids[j], &nll, &ok);
            }
            res->sum_nll += nll, res->n_scored++, res->n_correct += ok;
            if (cb) cb(user, j, ids[j], nll, ok);
        }
    }
    free(tok), free(tnll), free(tok_ok);
    return rc < 0 ? -1 : 0;
}

int gpt_eval_tokens(gpt_model *m, const uint32_t *ids, size_t n, const gpt_eval_opts *o, gpt_eval_token_fn cb,
                    void *user, gpt_eval_result *res, gpt_err *err)
{
    return gpt_eval_tokens_shard(m, ids, n, o, 0, 1, cb, user, res, err);
}

int gpt_eval_tokens_shard(gpt_model *m, const uint32_t *ids, size_t n, const gpt_eval_opts *o, int shard,
                          int n_shards, gpt_eval_token_fn cb, void *user, gpt_eval_result *res, gpt_err *err)
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
    /* data parallel: this shard's windows are a contiguous range of the W windows, so the
     * shards' scored tokens, concatenated in shard order, are one rank's */
    size_t W = 0, k = 0, k0 = 0, k1 = (size_t)-1;
    for (size_t begin = 0; begin < n; begin += (size_t)S) {
        W++;
        if (begin + (size_t)L >= n) break;
    }
    if (n_shards > 1 && shard >= 0 && shard < n_shards) {
        k0 = W * (size_t)shard / (size_t)n_shards;
        k1 = W * ((size_t)shard + 1) / (size_t)n_shards;
    }
    int nb = 0, Tcur = 0, rc = 0;
    size_t prev_end = 0;
    for (size_t begin = 0; begin < n; begin += (size_t)S, k++) {
        size_t end = begin + (size_t)L < n ? begin + (size_t)L : n;
        int T = (int)(end - begin);
        /* HF's recipe: a window's first token has no context, so it is scored only if an
         * earlier window scored it (with stride == seq_len it is not scored at all) */
        window cur = {begin, prev_end > begin + 1 ? prev_end : begin + 1};
        if (nb && (T != Tcur || nb == Bmax)) {
            if ((rc = run_windows(m, ids, w, nb, Tcur, cb, user, res, row, err)) < 0) break;
            nb = 0;
        }
        if (cur.score_from < end && k >= k0 && k < k1) w[nb++] = cur, Tcur = T;
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
