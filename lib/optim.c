/* optim.c: AdamW (PyTorch's order of operations, fp32 state), schedule, clipping, loss scaler. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int gpt_adamw_init(gpt_adamw *o, const gpt_param_table *tab, size_t lo, size_t hi, const gpt_adamw_hparams *hp,
                   gpt_err *err)
{
    return gpt_adamw_init_on(o, NULL, tab, lo, hi, hp, err);
}

int gpt_adamw_init_on(gpt_adamw *o, gpt_backend *be, const gpt_param_table *tab, size_t lo, size_t hi,
                      const gpt_adamw_hparams *hp, gpt_err *err)
{
    memset(o, 0, sizeof *o);
    if (lo > hi || hi > tab->total) {
        gpt_errf(err, "optimizer: slice [%zu, %zu) is outside the %zu parameters", lo, hi, tab->total);
        return -1;
    }
    if (!(hp->beta1 >= 0 && hp->beta1 < 1) || !(hp->beta2 >= 0 && hp->beta2 < 1) || !(hp->eps > 0) ||
        !(hp->weight_decay >= 0)) {
        gpt_errf(err, "optimizer: betas must be in [0, 1), eps > 0 and weight decay >= 0 (got %g, %g, %g, %g)",
                 hp->beta1, hp->beta2, hp->eps, hp->weight_decay);
        return -1;
    }
    o->hp = *hp;
    o->lo = lo;
    o->hi = hi;
    if (be && !be->adamw) {
        gpt_errf(err, "optimizer: the %s backend has no AdamW op; train on a backend that has one (cpu, cuda)",
                 be->name);
        return -1;
    }
    o->be = be;
    size_t bytes = (hi - lo ? hi - lo : 1) * sizeof(float);
    o->m = be ? be->alloc(be, bytes) : gpt_xcalloc(1, bytes);
    o->v = be ? be->alloc(be, bytes) : gpt_xcalloc(1, bytes);
    /* The slice may cut tensors: keep the overlap of each with [lo, hi), merging neighbours that
     * share a decay setting (the table is in offset order, but do not rely on contiguity). */
    o->ranges = gpt_xmalloc(((size_t)tab->n + 1) * sizeof *o->ranges);
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *t = &tab->t[i];
        size_t a = t->offset, b = t->offset + t->numel;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a >= b) continue;
        int d = gpt_tensor_decays(t);
        if (o->n_ranges && o->ranges[o->n_ranges - 1].hi == a && o->ranges[o->n_ranges - 1].decay == d)
            o->ranges[o->n_ranges - 1].hi = b;
        else
            o->ranges[o->n_ranges++] = (gpt_optim_range){a, b, d};
    }
    return 0;
}

void gpt_adamw_free(gpt_adamw *o)
{
    if (!o) return;
    if (o->be) {
        if (o->m) o->be->free(o->be, o->m);
        if (o->v) o->be->free(o->be, o->v);
    } else {
        free(o->m);
        free(o->v);
    }
    free(o->ranges);
    memset(o, 0, sizeof *o);
}

/* Vector code for AVX-512, AVX2 and plain x86-64 (chosen at load time); without errno (the
 * Makefile builds this file with -fno-math-errno), sqrtf is one instruction that vectorizes. sqrt and division are correctly rounded and -std=c11 forbids FMA
 * contraction, so every version computes the same bits (still torch's). The kernels are
 * functions of their own called per chunk: OpenMP's outlined loop body would not inherit the
 * target and optimize attributes, and would stay scalar. */
#if defined(__x86_64__) && !defined(__clang__)
#define OPT_HOT __attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3", "no-math-errno")))
#else
#define OPT_HOT
#endif

/* Elements per parallel work item: whole cache-friendly runs, a fixed split. */
#define OPT_CHUNK 16384

OPT_HOT static void adamw_chunk(float *restrict pp, const float *restrict gr, float *restrict mm, float *restrict vv,
                                size_t n, const gpt_adamw_args *a)
{
    const float grad_scale = a->grad_scale, decay = a->decay, step_size = a->step_size, bc2_sqrt = a->bc2_sqrt;
    const float w1 = a->w1, b2 = a->b2, w2 = a->w2, eps = a->eps;
    for (size_t i = 0; i < n; i++) {
        float gi = gr[i] * grad_scale;
        /* decay 1 (no weight decay) leaves every value, NaN and -0 included, as it was */
        float pi = pp[i] * decay;
        /* torch lerp with weight < 0.5: m + w * (g - m) */
        float mi = mm[i] + w1 * (gi - mm[i]);
        float vi = vv[i] * b2;
        vi = vi + w2 * gi * gi;
        float denom = __builtin_sqrtf(vi) / bc2_sqrt + eps;
        pi = pi + (-step_size) * (mi / denom);
        mm[i] = mi;
        vv[i] = vi;
        pp[i] = pi;
    }
}

void gpt_adamw_update(float *p, const float *g, float *m, float *v, size_t n, const gpt_adamw_args *a)
{
    size_t nch = (n + OPT_CHUNK - 1) / OPT_CHUNK;
#pragma omp parallel for schedule(static) if (nch > 1)
    for (size_t c = 0; c < nch; c++) {
        size_t o = c * OPT_CHUNK, k = n - o < OPT_CHUNK ? n - o : OPT_CHUNK;
        adamw_chunk(p + o, g + o, m + o, v + o, k, a);
    }
}

void gpt_adamw_step(gpt_adamw *o, float *params, const float *grads, double lr, float grad_scale)
{
    o->step++;
    const double t = (double)o->step;
    /* Scalars are computed in double and rounded once to float, as PyTorch does when it passes a
     * Python float to an fp32 tensor op. */
    const double bc1 = 1.0 - pow(o->hp.beta1, t), bc2 = 1.0 - pow(o->hp.beta2, t);
    gpt_adamw_args args = {
        .grad_scale = grad_scale,
        .step_size = (float)(lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .w1 = (float)(1.0 - o->hp.beta1),
        .b2 = (float)o->hp.beta2,
        .w2 = (float)(1.0 - o->hp.beta2),
        .eps = (float)o->hp.eps,
    };
    const float decay = (float)(1.0 - lr * o->hp.weight_decay);
    for (int r = 0; r < o->n_ranges; r++) {
        const gpt_optim_range *rg = &o->ranges[r];
        const size_t a = rg->lo - o->lo, b = rg->hi - o->lo;
        args.decay = rg->decay && o->hp.weight_decay != 0 ? decay : 1.0f;
        if (o->be)
            o->be->adamw(o->be, params + a, grads + a, o->m + a, o->v + a, b - a, &args);
        else
            gpt_adamw_update(params + a, grads + a, o->m + a, o->v + a, b - a, &args);
    }
}

void gpt_adamw_state_get(const gpt_adamw *o, float *m, float *v)
{
    size_t bytes = (o->hi - o->lo) * sizeof(float);
    if (o->be) {
        o->be->to_host(o->be, m, o->m, bytes);
        o->be->to_host(o->be, v, o->v, bytes);
    } else {
        memcpy(m, o->m, bytes);
        memcpy(v, o->v, bytes);
    }
}

void gpt_adamw_state_set(gpt_adamw *o, const float *m, const float *v)
{
    size_t bytes = (o->hi - o->lo) * sizeof(float);
    if (o->be) {
        o->be->to_device(o->be, o->m, m, bytes);
        o->be->to_device(o->be, o->v, v, bytes);
    } else {
        memcpy(o->m, m, bytes);
        memcpy(o->v, v, bytes);
    }
}

double gpt_lr_at(const gpt_lr_schedule *s, int64_t step)
{
    if (step < 0) step = 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    const double lo = s->lr * s->min_lr_ratio;
    const int64_t span = s->total_steps - s->warmup_steps;
    if (span <= 0) return s->lr;
    double prog = (double)(step - s->warmup_steps) / (double)span;
    if (prog > 1) prog = 1;
    return lo + 0.5 * (s->lr - lo) * (1.0 + cos(M_PI * prog));
}

/* A chunk's sum of squares in 16 double lanes, added in lane order. */
OPT_HOT static double sumsq_chunk(const float *x, size_t n)
{
    double acc[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
    double s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

double gpt_sumsq(const float *x, size_t n)
{
    double s = 0;
    /* A fixed split into chunks summed in order keeps the result independent of thread count. */
    enum { CH = 4096 };
    size_t nch = (n + CH - 1) / CH;
    double *part = gpt_xcalloc(nch ? nch : 1, sizeof(double));
#pragma omp parallel for schedule(static) if (nch > 8)
    for (size_t c = 0; c < nch; c++) {
        size_t a = c * CH, b = a + CH < n ? a + CH : n;
        part[c] = sumsq_chunk(x + a, b - a);
    }
    for (size_t c = 0; c < nch; c++) s += part[c];
    free(part);
    return s;
}

float gpt_clip_coef(double norm, double max_norm)
{
    if (!(max_norm > 0)) return 1.0f;
    double c = max_norm / (norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void gpt_loss_scaler_init(gpt_loss_scaler *s, int enabled, double init_scale, double growth, double backoff,
                          int64_t interval)
{
    s->enabled = enabled;
    s->scale = enabled ? init_scale : 1.0;
    s->growth = growth;
    s->backoff = backoff;
    s->growth_interval = interval > 0 ? interval : 1;
    s->good_steps = 0;
}

int gpt_loss_scaler_update(gpt_loss_scaler *s, int found_inf)
{
    if (!s->enabled) return !found_inf;
    if (found_inf) {
        s->scale *= s->backoff;
        s->good_steps = 0;
        return 0;
    }
    if (++s->good_steps == s->growth_interval) {
        s->scale *= s->growth;
        s->good_steps = 0;
    }
    return 1;
}

int gpt_has_nonfinite(const float *x, size_t n)
{
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (size_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return bad;
}
