/* Training on the CUDA backend against the CPU backend: the optimizer ops (AdamW must give the
 * CPU's bits exactly: both round every step the same way; the sum of squares agrees to double
 * rounding and repeats bit for bit; scale and the non-finite check), then whole training steps of
 * the tiny models through lib/train.h on both backends (parameters within fp32 tolerance), a
 * save/resume on the device that continues with the same bits, and the NCCL communicator with one
 * rank (all-reduce is the identity, gathers copy). Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cuda.h"
#include "comm.h"
#include "comm_nccl.h"
#include "config.h"
#include "tap.h"
#include "tokens.h"
#include "train.h"

static gpt_backend *cpu, *gpu;

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static float *dup_dev(const float *h, size_t n)
{
    float *d = gpu->alloc(gpu, n * sizeof(float) + 4);
    gpu->to_device(gpu, d, h, n * sizeof(float));
    return d;
}

static float *from_dev(const float *d, size_t n)
{
    float *h = malloc(n * sizeof(float) + 4);
    gpu->to_host(gpu, h, d, n * sizeof(float));
    return h;
}

static size_t n_diff_bits(const float *a, const float *b, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return k;
}

static void t_adamw(size_t n)
{
    float *p = malloc(n * 4), *g = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)(urand() * 2 - 1);
        g[i] = (float)((urand() * 2 - 1) * (i % 7 == 0 ? 1e3 : 1e-2));
    }
    float *dp = dup_dev(p, n), *dg = dup_dev(g, n), *dm = dup_dev(m, n), *dv = dup_dev(v, n);
    /* three steps: with and without decay, a clip factor; scalars as optim.c makes them */
    for (int s = 1; s <= 3; s++) {
        double lr = 1e-3 * s, b1 = 0.9, b2 = 0.95;
        gpt_adamw_args a = {.grad_scale = s == 2 ? 0.37f : 1.0f,
                            .decay = s == 3 ? 1.0f : (float)(1.0 - lr * 0.1),
                            .step_size = (float)(lr / (1 - pow(b1, s))),
                            .bc2_sqrt = (float)sqrt(1 - pow(b2, s)),
                            .w1 = (float)(1 - b1),
                            .b2 = (float)b2,
                            .w2 = (float)(1 - b2),
                            .eps = 1e-8f};
        cpu->adamw(cpu, p, g, m, v, n, &a);
        gpu->adamw(gpu, dp, dg, dm, dv, n, &a);
    }
    float *hp = from_dev(dp, n), *hm = from_dev(dm, n), *hv = from_dev(dv, n);
    size_t bp = n_diff_bits(hp, p, n), bm = n_diff_bits(hm, m, n), bv = n_diff_bits(hv, v, n);
    ok(bp == 0 && bm == 0 && bv == 0, "adamw n=%zu: the device's p, m, v equal the CPU's bit for bit (%zu, %zu, %zu differ)",
       n, bp, bm, bv);
    free(hp), free(hm), free(hv);
    gpu->free(gpu, dp), gpu->free(gpu, dg), gpu->free(gpu, dm), gpu->free(gpu, dv);
    free(p), free(g), free(m), free(v);
}

static void t_sumsq_scale_nonfinite(size_t n)
{
    float *x = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) x[i] = (float)((urand() * 2 - 1) * (i % 1000 == 3 ? 100 : 1));
    float *d = dup_dev(x, n);
    double want = cpu->sumsq(cpu, x, n), got = gpu->sumsq(gpu, d, n), again = gpu->sumsq(gpu, d, n);
    ok(fabs(got - want) <= 1e-12 * fabs(want) + 1e-300, "sumsq n=%zu: %.17g, CPU %.17g", n, got, want);
    ok(memcmp(&got, &again, sizeof got) == 0, "sumsq n=%zu repeats bit for bit", n);
    ok(gpu->nonfinite(gpu, d, n) == 0 && cpu->nonfinite(cpu, x, n) == 0, "nonfinite n=%zu: finite data passes", n);
    cpu->scale(cpu, x, 0.3f, n);
    gpu->scale(gpu, d, 0.3f, n);
    float *h = from_dev(d, n);
    ok(n_diff_bits(h, x, n) == 0, "scale n=%zu: the same bits as the CPU", n);
    if (n) {
        size_t at = n - 1 - n / 3;
        float bad[2] = {NAN, INFINITY};
        for (int k = 0; k < 2; k++) {
            gpu->to_device(gpu, d + at, &bad[k], sizeof(float));
            ok(gpu->nonfinite(gpu, d, n) == 1, "nonfinite n=%zu: %s at %zu is found", n, k ? "inf" : "NaN", at);
            ok(!isfinite(gpu->sumsq(gpu, d, n)), "sumsq n=%zu: %s propagates", n, k ? "inf" : "NaN");
        }
    }
    free(h);
    free(x);
    gpu->free(gpu, d);
}

/* ---- whole training steps ---- */

static char tmpdir[256];

static int make_tokens(const char *path, int vocab, size_t n)
{
    gpt_err err;
    gpt_tokw *w = gpt_tokw_open(path, (uint32_t)vocab, 0, &err);
    if (!w) return diag("%s", err.msg), -1;
    uint32_t *ids = malloc(n * sizeof *ids);
    /* a small sub-vocabulary: the model learns it within a few steps, so the loss must fall */
    for (size_t i = 0; i < n; i++) ids[i] = (uint32_t)(urand() * 97) % (uint32_t)vocab;
    int rc = gpt_tokw_write(w, ids, n, &err);
    free(ids);
    if (rc < 0 || gpt_tokw_close(w, &err) < 0) return diag("%s", err.msg), -1;
    return 0;
}

/* steps optimizer steps on device dev; the final parameters (host, n floats) and per-step losses */
static float *train(const char *cfgname, const char *dev, const char *data, int steps, const char *out_dir,
                    int resume, int64_t stop_at, double *losses, size_t *n_out)
{
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load(cfgname, &cfg, &err) < 0) return diag("%s", err.msg), NULL;
    gpt_train_opts o;
    gpt_train_opts_default(&o);
    free(o.out_dir);
    o.out_dir = out_dir ? strdup(out_dir) : NULL;
    o.train_files = malloc(sizeof(char *));
    o.train_files[0] = strdup(data);
    o.n_train = 1;
    o.micro_batch = 2;
    o.seq_len = 32;
    o.grad_accum = 2;
    o.steps = steps;
    o.warmup_steps = 2;
    o.lr = 3e-3;
    o.clip_norm = 0.5; /* small enough to clip: the clip factor reaches AdamW */
    o.quiet = 1;
    o.device = dev;
    o.resume = resume;
    o.stop_at = stop_at;
    gpt_comm *comm = gpt_comm_single();
    gpt_trainer tr;
    float *res = NULL;
    if (gpt_trainer_init(&tr, &o, &cfg.model, comm, &err) < 0) {
        diag("%s on %s: %s", cfgname, dev, err.msg);
        goto out;
    }
    if (resume && gpt_trainer_resume(&tr, &err) < 0) {
        diag("resume: %s", err.msg);
        gpt_trainer_free(&tr);
        goto out;
    }
    while (tr.step < o.steps && !(stop_at && tr.step >= stop_at)) {
        gpt_step_stats st;
        int64_t s = tr.step;
        if (gpt_trainer_step(&tr, &st, &err) < 0) {
            diag("step: %s", err.msg);
            gpt_trainer_free(&tr);
            goto out;
        }
        if (losses) losses[s] = st.loss;
    }
    if (out_dir && gpt_trainer_save(&tr, &err) < 0) {
        diag("save: %s", err.msg);
        gpt_trainer_free(&tr);
        goto out;
    }
    gpt_trainer_sync_host(&tr);
    *n_out = tr.n;
    res = malloc(tr.n * sizeof(float));
    memcpy(res, tr.hparams, tr.n * sizeof(float));
    if (!ok(strcmp(tr.be->name, dev[0] == 'c' && dev[1] == 'p' ? "cpu" : "cuda") == 0, "%s: trained on %s",
            cfgname, tr.be->name))
        diag("asked for %s", dev);
    gpt_trainer_free(&tr);
out:
    gpt_train_opts_free(&o);
    gpt_comm_free(comm);
    gpt_config_free(&cfg);
    return res;
}

static void t_train(const char *cfgname, int vocab)
{
    char data[512], ck1[512], ck2[512];
    snprintf(data, sizeof data, "%s/%s.tok", tmpdir, cfgname);
    if (!ok(make_tokens(data, vocab, 20000) == 0, "%s: token file", cfgname)) return;
    enum { STEPS = 4 };
    double lc[STEPS] = {0}, lg[STEPS] = {0};
    size_t nc = 0, ng = 0, nr = 0, nf = 0;
    size_t n0 = 0;
    float *p0 = train(cfgname, "cpu", data, 0, NULL, 0, 0, NULL, &n0);
    float *pc = train(cfgname, "cpu", data, STEPS, NULL, 0, 0, lc, &nc);
    float *pg = train(cfgname, "cuda", data, STEPS, NULL, 0, 0, lg, &ng);
    if (!ok(p0 && pc && pg && nc == ng && n0 == nc && nc > 0, "%s: %d steps on cpu and cuda", cfgname, STEPS))
        goto out;
    /* Compare the updates (final - initial; both runs start from the seed's parameters). AdamW
     * normalizes each gradient element, so an element whose gradient is ~0 up to rounding may move
     * by up to lr differently; the update as a whole must agree to fp32 rounding. */
    double md = 0, dd = 0, du = 0, ms = 0;
    for (size_t i = 0; i < nc; i++) {
        double uc = (double)pc[i] - p0[i], ug = (double)pg[i] - p0[i];
        md = fmax(md, fabs(ug - uc));
        dd += (ug - uc) * (ug - uc);
        du += uc * uc;
    }
    double rel = du > 0 ? sqrt(dd / du) : 1;
    for (int s = 0; s < STEPS; s++) ms = fmax(ms, fabs(lg[s] - lc[s]) / fabs(lc[s]));
    ok(du > 0 && rel < 1e-3, "%s: the %d-step update agrees: |cuda - cpu| / |cpu| = %.3g", cfgname, STEPS, rel);
    ok(md < 1e-2, "%s: no parameter differs by more than a few learning rates (max %.3g)", cfgname, md);
    ok(ms < 1e-4, "%s: the losses of every step agree (max rel diff %.3g; cpu %.5f .. %.5f)", cfgname, ms, lc[0],
       lc[STEPS - 1]);
    ok(lg[STEPS - 1] < lg[0] - 0.1, "%s: the loss falls on the device (%.4f -> %.4f)", cfgname, lg[0], lg[STEPS - 1]);
    /* save at 2 (stop_at), resume on the device, and finish: the same bits as the straight run */
    snprintf(ck1, sizeof ck1, "%s/%s-ck", tmpdir, cfgname);
    snprintf(ck2, sizeof ck2, "%s/%s-straight", tmpdir, cfgname);
    float *p1 = train(cfgname, "cuda", data, STEPS, ck1, 0, 2, NULL, &nr);
    float *pr = train(cfgname, "cuda", data, STEPS, ck1, 1, 0, NULL, &nr);
    float *ps = train(cfgname, "cuda", data, STEPS, ck2, 0, 0, NULL, &nf);
    if (ok(p1 && pr && ps && nr == nc && nf == nc, "%s: split run (2 + 2 steps, resumed) on cuda", cfgname)) {
        ok(n_diff_bits(pr, ps, nc) == 0, "%s: the resumed device run ends with the straight run's bits", cfgname);
        ok(n_diff_bits(ps, pg, nc) == 0, "%s: device training is deterministic (two runs, same bits)", cfgname);
    }
    free(p1), free(pr), free(ps);
out:
    free(p0), free(pc), free(pg);
}

/* ---- NCCL with one rank ---- */
static void t_nccl(void)
{
    gpt_err err;
    if (!gpt_comm_nccl_available()) {
        gpt_comm *x = gpt_comm_nccl(gpt_comm_single(), 0, &err);
        ok(!x && strstr(err.msg, "NCCL"), "built without NCCL: gpt_comm_nccl says so (%s)", err.msg);
        return;
    }
    gpt_comm *host = gpt_comm_single();
    gpt_comm *c = gpt_comm_nccl(host, 0, &err);
    if (!ok(c != NULL, "nccl communicator over one rank starts")) {
        diag("%s", err.msg);
        gpt_comm_free(host);
        return;
    }
    ok(c->rank == 0 && c->size == 1 && strcmp(c->name, "nccl") == 0, "nccl: rank 0 of 1");
    enum { N = 100003 };
    float *h = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) h[i] = (float)(urand() - 0.5);
    float *d = dup_dev(h, N), *d2 = gpu->alloc(gpu, N * sizeof(float));
    /* the backend's stream wrote d: the communicator must order itself after it */
    gpu->scale(gpu, d, 2.0f, N);
    for (int i = 0; i < N; i++) h[i] *= 2.0f;
    ok(c->allreduce_sum(c, d, N, &err) == 0, "nccl all-reduce runs");
    float *r = from_dev(d, N);
    ok(n_diff_bits(r, h, N) == 0, "nccl all-reduce over one rank is the identity (after the backend's scale)");
    free(r);
    ok(c->allgather(c, d, d2, N, &err) == 0, "nccl all-gather runs");
    r = from_dev(d2, N);
    ok(n_diff_bits(r, h, N) == 0, "nccl all-gather over one rank copies");
    free(r);
    gpu->zero(gpu, d2, N * sizeof(float));
    ok(c->reduce_scatter_sum(c, d, d2, N, &err) == 0, "nccl reduce-scatter runs");
    r = from_dev(d2, N);
    ok(n_diff_bits(r, h, N) == 0, "nccl reduce-scatter over one rank copies");
    free(r);
    ok(c->broadcast(c, d, N * sizeof(float), 0, &err) == 0, "nccl broadcast from rank 0 runs");
    ok(c->broadcast(c, d, 4, 1, &err) < 0 && strstr(err.msg, "root"), "nccl broadcast from a rank that is not there "
                                                                       "fails: %s", err.msg);
    double s[2] = {1.5, -2};
    ok(c->allreduce_sum_f64(c, s, 2, &err) == 0 && s[0] == 1.5 && s[1] == -2, "nccl f64 all-reduce (host) passes through");
    ok(c->send(c, d, 4, 0, 0, &err) < 0, "nccl send to itself is refused: %s", err.msg);
    free(h);
    gpu->free(gpu, d), gpu->free(gpu, d2);
    gpt_comm_free(c);
    gpt_comm_free(host);
}

int main(void)
{
    gpt_err err;
    unsetenv("GPT_CUDA_TF32"), unsetenv("GPT_CUDA_GEMM"), unsetenv("GPT_CUDA_ATTN");
    gpu = gpt_backend_cuda(0, &err);
    if (!gpu) {
        char reason[1100];
        snprintf(reason, sizeof reason, "%s", err.msg);
        for (char *p = reason; *p; p++)
            if (*p == '\n') *p = ' ';
        skip_all(reason);
    }
    cpu = gpt_backend_cpu();
    ok(gpu->adamw && gpu->sumsq && gpu->scale && gpu->nonfinite, "the cuda backend has the optimizer ops");
    size_t sizes[] = {1, 255, 4096, 4097, 1000003};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        t_adamw(sizes[i]);
        t_sumsq_scale_nonfinite(sizes[i]);
    }
    t_nccl();
    const char *q = getenv("GPT_CUDA_TEST_QUICK");
    if (!(q && *q && strcmp(q, "0") != 0)) {
        snprintf(tmpdir, sizeof tmpdir, "%s/gpt-cuda-train.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (ok(mkdtemp(tmpdir) != NULL, "temporary directory")) {
            t_train("tiny-gpt2", 50257);
            t_train("tiny-gpt-oss", 50257);
            char cmd[600];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
            if (system(cmd) != 0) diag("could not remove %s", tmpdir);
        }
    }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return done_testing();
}
