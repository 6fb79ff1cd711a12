/* AdamW, the LR schedule, clipping and the loss scaler against PyTorch's recorded steps
 * (t/data/optim/adamw.txt, made by scripts/make-optim-fixture.py with torch.optim.AdamW,
 * clip_grad_norm_, LinearLR + CosineAnnealingLR and torch._amp_update_scale_). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "tap.h"

#define MAXK 64
static struct {
    char name[32];
    int n;
    double *v;
} fx[MAXK];
static int nfx;

static const double *get(const char *name, int n)
{
    for (int i = 0; i < nfx; i++)
        if (strcmp(fx[i].name, name) == 0) {
            if (fx[i].n != n) {
                diag("fixture key %s has %d values, want %d", name, fx[i].n, n);
                exit(1);
            }
            return fx[i].v;
        }
    diag("fixture key %s missing", name);
    exit(1);
}

static void load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("1..0 # SKIP cannot open %s\n", path);
        exit(0);
    }
    char name[32];
    int n;
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {}
            continue;
        }
        ungetc(c, f);
        if (fscanf(f, "%31s %d", name, &n) != 2 || n < 0 || n > 1000 || nfx == MAXK) break;
        strcpy(fx[nfx].name, name);
        fx[nfx].n = n;
        fx[nfx].v = calloc((size_t)n + 1, sizeof(double));
        for (int i = 0; i < n; i++)
            if (fscanf(f, "%lf", &fx[nfx].v[i]) != 1) exit(1);
        nfx++;
        while ((c = fgetc(f)) != EOF && c != '\n') {}
    }
    fclose(f);
}

/* fp32 agreement: a few units of rounding of the values involved. */
static int close_f(double got, double want, double scale) { return fabs(got - want) <= 4e-7 * (fabs(want) + scale); }

int main(void)
{
    load("t/data/optim/adamw.txt");
    const double *hp = get("hparams", 10);
    const int steps = (int)hp[9];
    gpt_tensor ts[2];
    memset(ts, 0, sizeof ts);
    strcpy(ts[0].name, "w");
    ts[0].ndim = 2;
    ts[0].shape[0] = 4;
    ts[0].shape[1] = 5;
    ts[0].offset = 0;
    ts[0].numel = 20;
    ts[0].role = GPT_ROLE_WEIGHT;
    strcpy(ts[1].name, "b");
    ts[1].ndim = 1;
    ts[1].shape[0] = 5;
    ts[1].offset = 20;
    ts[1].numel = 5;
    ts[1].role = GPT_ROLE_BIAS;
    gpt_param_table tab = {ts, 2, 25};
    ok(gpt_tensor_decays(&ts[0]) && !gpt_tensor_decays(&ts[1]), "a matrix decays, a bias does not");

    gpt_adamw_hparams h = {hp[4], hp[5], hp[6], hp[7]};
    gpt_lr_schedule sched = {hp[0], hp[1], (int64_t)hp[2], (int64_t)hp[3]};
    gpt_adamw whole, part[2];
    gpt_err err;
    ok(gpt_adamw_init(&whole, &tab, 0, 25, &h, &err) == 0, "init over everything");
    /* Two shards cutting the matrix in the middle, as ZeRO-1 does over 2 ranks. */
    ok(gpt_adamw_init(&part[0], &tab, 0, 13, &h, &err) == 0 && gpt_adamw_init(&part[1], &tab, 13, 25, &h, &err) == 0,
       "init two shards");
    gpt_adamw badopt;
    ok(gpt_adamw_init(&badopt, &tab, 10, 30, &h, &err) < 0 && strstr(err.msg, "outside"),
       "a slice past the end is an error: %s", err.msg);

    float p[25], ps[25], g[25];
    const double *w0 = get("w0", 20), *b0 = get("b0", 5);
    for (int i = 0; i < 20; i++) p[i] = (float)w0[i];
    for (int i = 0; i < 5; i++) p[20 + i] = (float)b0[i];
    memcpy(ps, p, sizeof p);
    char key[32];
    int lr_ok = 1, norm_ok = 1, p_ok = 1, shard_same = 1;
    double maxdiff = 0;
    for (int s = 0; s < steps; s++) {
        snprintf(key, sizeof key, "gw.%d", s);
        const double *gw = get(key, 20);
        snprintf(key, sizeof key, "gb.%d", s);
        const double *gb = get(key, 5);
        for (int i = 0; i < 20; i++) g[i] = (float)gw[i];
        for (int i = 0; i < 5; i++) g[20 + i] = (float)gb[i];
        double lr = gpt_lr_at(&sched, s);
        snprintf(key, sizeof key, "lr.%d", s);
        if (!close_f(lr, get(key, 1)[0], 0)) lr_ok = 0, diag("step %d lr %.9g want %.9g", s, lr, get(key, 1)[0]);
        double norm = sqrt(gpt_sumsq(g, 25));
        snprintf(key, sizeof key, "norm.%d", s);
        if (!close_f(norm, get(key, 1)[0], 0)) norm_ok = 0, diag("step %d norm %.9g want %.9g", s, norm, get(key, 1)[0]);
        float c = gpt_clip_coef(norm, hp[8]);
        /* torch multiplies the gradient by the coefficient in place, then AdamW reads it. */
        float gc[25];
        for (int i = 0; i < 25; i++) gc[i] = g[i] * c;
        gpt_adamw_step(&whole, p, gc, lr, 1.0f);
        gpt_adamw_step(&part[0], ps, g, lr, c);
        gpt_adamw_step(&part[1], ps + 13, g + 13, lr, c);
        snprintf(key, sizeof key, "w.%d", s);
        const double *ww = get(key, 20);
        snprintf(key, sizeof key, "b.%d", s);
        const double *wb = get(key, 5);
        for (int i = 0; i < 25; i++) {
            double want = i < 20 ? ww[i] : wb[i - 20];
            double d = fabs(p[i] - want);
            if (d > maxdiff) maxdiff = d;
            if (!close_f(p[i], want, 1e-3)) {
                if (p_ok) diag("step %d element %d: %.9g, torch %.9g", s, i, p[i], want);
                p_ok = 0;
            }
            if (p[i] != ps[i]) shard_same = 0;
        }
    }
    ok(lr_ok, "learning rates equal torch's LinearLR + CosineAnnealingLR");
    ok(norm_ok, "gradient norms equal clip_grad_norm_'s");
    ok(p_ok, "parameters after %d AdamW steps equal torch.optim.AdamW's (max |diff| %.3g)", steps, maxdiff);
    ok(shard_same, "two shards (ZeRO-1 style) give the same bits as one optimizer");
    ok(whole.n_ranges == 2 && part[0].n_ranges == 1 && part[1].n_ranges == 2,
       "decay ranges follow tensors and slices (%d, %d, %d)", whole.n_ranges, part[0].n_ranges, part[1].n_ranges);

    const double *sp = get("sched_params", 4);
    gpt_lr_schedule s2 = {sp[0], sp[1], (int64_t)sp[2], (int64_t)sp[3]};
    const double *sl = get("sched_lr", 12);
    int sched_ok = 1;
    for (int s = 0; s < 12; s++)
        if (!close_f(gpt_lr_at(&s2, s), sl[s], 0)) sched_ok = 0, diag("schedule step %d: %.9g, torch %.9g", s, gpt_lr_at(&s2, s), sl[s]);
    ok(sched_ok, "a longer schedule (warmup 3, total 10, then flat) equals torch's");
    gpt_lr_schedule s3 = {1.0, 0.1, 0, 10};
    ok(gpt_lr_at(&s3, 0) == 1.0 && fabs(gpt_lr_at(&s3, 10) - 0.1) < 1e-12, "no warmup: starts at lr, ends at min");

    const double *si = get("scaler_inf", 13), *ss = get("scaler_scale", 13);
    gpt_loss_scaler sc;
    gpt_loss_scaler_init(&sc, 1, 65536.0, 2.0, 0.5, 3);
    int sc_ok = 1, skips = 0;
    for (int i = 0; i < 13; i++) {
        int apply = gpt_loss_scaler_update(&sc, (int)si[i]);
        if (apply == (int)si[i]) sc_ok = 0;
        skips += !apply;
        if (sc.scale != ss[i]) sc_ok = 0, diag("scaler step %d: scale %g, torch %g", i, sc.scale, ss[i]);
    }
    ok(sc_ok && skips == 3, "loss scaler follows GradScaler (skips %d overflowed steps)", skips);

    float bad[3] = {1, NAN, 2}, good[3] = {1, 2, 3};
    bad[1] = NAN;
    ok(gpt_has_nonfinite(bad, 3) && !gpt_has_nonfinite(good, 3), "non-finite detection");
    ok(gpt_clip_coef(0.5, 1.0) == 1.0f && gpt_clip_coef(10, 0) == 1.0f, "no clipping below the norm or when off");

    gpt_adamw_free(&whole);
    gpt_adamw_free(&part[0]);
    gpt_adamw_free(&part[1]);
    for (int i = 0; i < nfx; i++) free(fx[i].v);
    return done_testing();
}
