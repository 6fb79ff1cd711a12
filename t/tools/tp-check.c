/* tp-check MODEL [TOL]: under `mpirun -np P`, a tensor-parallel model over all P ranks against the
 * single-rank model on the same weights (MODEL: a directory with model.yaml + model.safetensors).
 * Compares the loss, the logits (gathered here only, for the comparison), every parameter gradient
 * (the pieces gathered into the full layout), and the logits of KV-cache inference. Prints the max
 * differences (relative to the largest reference magnitude of each tensor or row) on rank 0; exits 1 when any
 * exceeds TOL (default 1e-4). For tests (t/parallel.t). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "mesh.h"
#include "model_load.h"
#include "model_tp.h"

static double maxrel(const float *a, const float *b, size_t n)
{
    double d = 0, mag = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs((double)b[i]) > mag) mag = fabs((double)b[i]);
    }
    return d / mag;
}

int main(int argc, char **argv)
{
    gpt_err err = {0};
    gpt_comm *world = gpt_comm_open(&argc, &argv, &err);
    if (!world || argc < 2) {
        fprintf(stderr, "usage: mpirun -np P tp-check MODEL [TOL]%s%s\n", world ? "" : ": ", world ? "" : err.msg);
        return 2;
    }
    double tol = argc > 2 ? atof(argv[2]) : 1e-4;
    gpt_mesh mesh;
    gpt_backend *be = gpt_backend_cpu();
    gpt_loaded_model lm;
    if (gpt_mesh_init(&mesh, world, 1, world->size, 1, 1, &err) < 0 || gpt_model_open(&lm, argv[1], be, NULL, 0, &err) < 0) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    /* point-to-point over a sub-communicator: a ring of the tp group */
    int P = mesh.tp_comm->size, me = mesh.tp_rank, got = -1, pfail = 0;
    if (P > 1) {
        int msg = 1000 + me, next = (me + 1) % P, prev = (me + P - 1) % P;
        int rc = me % 2 ? (mesh.tp_comm->recv(mesh.tp_comm, &got, sizeof got, prev, 7, &err) < 0 ||
                           mesh.tp_comm->send(mesh.tp_comm, &msg, sizeof msg, next, 7, &err) < 0)
                        : (mesh.tp_comm->send(mesh.tp_comm, &msg, sizeof msg, next, 7, &err) < 0 ||
                           mesh.tp_comm->recv(mesh.tp_comm, &got, sizeof got, prev, 7, &err) < 0);
        pfail = rc || got != 1000 + prev;
        if (pfail) fprintf(stderr, "tp-check: rank %d: ring send/recv got %d, want %d %s\n", me, got, 1000 + prev, err.msg);
    }
    const gpt_model_config *cfg = &lm.cfg.model;
    gpt_model *ref = lm.model, *tpm = gpt_model_create_tp(cfg, be, mesh.tp_comm, &err);
    if (!tpm) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    size_t nf = gpt_model_params(ref)->total, nl = gpt_model_params(tpm)->total;
    float *full = gpt_xmalloc(nf * sizeof *full), *loc = gpt_xcalloc(nl, sizeof *loc);
    be->to_host(be, full, gpt_model_param_data(ref), nf * sizeof *full);
    gpt_tp_scatter(cfg, mesh.tp, mesh.tp_rank, full, loc);
    be->to_device(be, gpt_model_param_data(tpm), loc, nl * sizeof *loc);

    /* tokens: a fixed pseudo-random batch; targets the next token, a few ignored */
    int B = 2, T = cfg->max_seq_len < 12 ? cfg->max_seq_len : 12, N = B * T, V = cfg->vocab_size;
    int *tok = gpt_xmalloc((size_t)N * sizeof *tok), *tgt = gpt_xmalloc((size_t)N * sizeof *tgt);
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int)((s >> 33) % (uint64_t)V);
    }
    for (int i = 0; i < N; i++) tgt[i] = i % 5 == 4 ? -100 : tok[(i + 1) % N];
    gpt_forward_opts fo = {.label_smoothing = 0.1f};
    gpt_loss lr, lt;
    gpt_model_zero_grad(ref);
    gpt_model_zero_grad(tpm);
    int fail = 0;
    if (gpt_model_forward(ref, tok, tgt, B, T, &fo, &lr, &err) < 0 ||
        gpt_model_forward(tpm, tok, tgt, B, T, &fo, &lt, &err) < 0) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    /* logits: this rank's vocabulary slice against the same columns of the reference */
    int Vp = cfg->padded_vocab_size, Vl = Vp / mesh.tp, v0 = mesh.tp_rank * Vl;
    float *rl = gpt_xmalloc((size_t)N * Vp * sizeof *rl), *tl = gpt_xmalloc((size_t)N * Vl * sizeof *tl);
    be->to_host(be, rl, gpt_model_logits(ref), (size_t)N * Vp * sizeof *rl);
    be->to_host(be, tl, gpt_model_logits(tpm), (size_t)N * Vl * sizeof *tl);
    double dlog = 0;
    for (int i = 0; i < N; i++) {
        int nv = V - v0 < Vl ? V - v0 : Vl;
        if (nv > 0) {
            double d = maxrel(tl + (size_t)i * Vl, rl + (size_t)i * Vp + v0, (size_t)nv);
            if (d > dlog) dlog = d;
        }
    }
    if (world->allreduce_sum_f64(world, &dlog, 1, &err) < 0) world->abort(world, 1); /* sum >= max: stricter */
    double dloss = fabs(lr.total - lt.total) + fabs(lr.nll - lt.nll) + fabs(lr.aux - lt.aux);
    if (gpt_model_backward(ref, &err) < 0 || gpt_model_backward(tpm, &err) < 0) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    float *rg = gpt_xmalloc(nf * sizeof *rg), *tg = gpt_xcalloc(nf, sizeof *tg);
    be->to_host(be, rg, gpt_model_grad_data(ref), nf * sizeof *rg);
    be->to_host(be, loc, gpt_model_grad_data(tpm), nl * sizeof *loc);
    if (gpt_tp_gather(cfg, mesh.tp_comm, loc, tg, &err) < 0) world->abort(world, 1);
    const gpt_param_table *tab = gpt_model_params(ref);
    double dgrad = 0;
    const char *worst = "-";
    for (int i = 0; i < tab->n; i++) {
        double d = maxrel(tg + tab->t[i].offset, rg + tab->t[i].offset, tab->t[i].numel);
        if (d > dgrad) dgrad = d, worst = tab->t[i].name;
    }
    /* inference: two sequences, the prompt in one call then one more token each */
    gpt_kv_cache *kr = gpt_kv_cache_create(ref, 2, T + 1, &err), *kt = gpt_kv_cache_create(tpm, 2, T + 1, &err);
    int seqs[24], n = 0;
    for (int i = 0; i < T; i++) seqs[n++] = 0;
    for (int i = 0; i < T / 2; i++) seqs[n++] = 1;
    float *xr = gpt_xmalloc((size_t)n * V * sizeof *xr), *xt = gpt_xmalloc((size_t)n * V * sizeof *xt);
    double dinf = 0;
    if (!kr || !kt || gpt_model_extend(ref, kr, tok, seqs, n, xr, &err) < 0 ||
        gpt_model_extend(tpm, kt, tok, seqs, n, xt, &err) < 0) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    dinf = maxrel(xt, xr, (size_t)n * V);
    int one[2] = {0, 1};
    if (gpt_model_extend(ref, kr, tok + T, one, 2, xr, &err) < 0 || gpt_model_extend(tpm, kt, tok + T, one, 2, xt, &err) < 0) {
        fprintf(stderr, "tp-check: %s\n", err.msg);
        world->abort(world, 1);
    }
    double d2 = maxrel(xt, xr, (size_t)2 * V);
    if (d2 > dinf) dinf = d2;
    if (world->rank == 0) {
        printf("tp=%d %s: loss %.7f vs %.7f (|d| %.2e, aux %.5f), logits max rel diff %.2e, grads %.2e (%s), "
               "cached inference %.2e\n",
               mesh.tp, argv[1], lt.total, lr.total, dloss, lr.aux, dlog, dgrad, worst, dinf);
    }
    fail = pfail || !(dloss < tol && dlog < tol && dgrad < tol && dinf < tol) || lr.n_correct != lt.n_correct;
    if (lr.n_correct != lt.n_correct && world->rank == 0)
        printf("correct: %lld vs %lld\n", (long long)lt.n_correct, (long long)lr.n_correct);
    gpt_kv_cache_free(kr), gpt_kv_cache_free(kt);
    free(xr), free(xt), free(rg), free(tg), free(rl), free(tl), free(tok), free(tgt), free(full), free(loc);
    gpt_model_free(tpm);
    gpt_model_close(&lm);
    gpt_mesh_free(&mesh);
    be->destroy(be);
    gpt_comm_close(world);
    return fail;
}
