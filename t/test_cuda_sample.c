/* The CUDA backend's sample op against the CPU sampler (lib/sampling.c): for fixed uniforms, the
 * same token as gpt_sampler_candidates followed by gpt_sample's draw, and the same answer to
 * "was a uniform used" (a single candidate draws nothing). Distributions: random, peaked, many
 * exactly tied logits (ties go to the lower id on both), -inf and NaN masks, -0 beside +0, a row
 * with one finite logit, rows of -inf only or with +inf (the argmax rule); vocabularies of 1000,
 * GPT-2's 50257 and o200k's 201088; filters alone and together, and greedy. A draw whose uniform
 * lies within 1e-9 of a boundary of the CPU's cumulative distribution is not compared (the device
 * sums in another order): such draws are counted and must be rare among the random uniforms (the
 * fixed u = 0.9999999 lies in the dense tail of the large vocabularies and is skipped there). Rows
 * of exactly tied logits put top-p's threshold on a cumulative sum (sampling.h's GPT_TOP_P_SLACK).
 * Then generation: the tiny GPT-2 on the device, sampling on the device against sampling on the
 * host from the same device logits: the same tokens and the same generator state afterwards.
 * Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "config.h"
#include "generate.h"
#include "hf_import.h"
#include "model.h"
#include "sampling.h"
#include "tap.h"

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) / 9007199254740992.0;
}
static double nrand(void) /* standard normal */
{
    double a = urand(), b = urand();
    return sqrt(-2 * log(a + 1e-300)) * cos(6.283185307179586 * b);
}

enum { ROWS = 10, DRAWS = 16 };
static int draws = DRAWS; /* 3 under GPT_CUDA_TEST_QUICK (compute-sanitizer) */

/* row kinds */
static void fill_row(float *x, int V, int kind)
{
    for (int i = 0; i < V; i++) x[i] = (float)(3 * nrand());
    switch (kind) {
    case 1: x[(int)(urand() * V)] = 25.0f; break; /* peaked */
    case 2:                                      /* many exact ties */
        for (int i = 0; i < V; i++) x[i] = (float)((int)(urand() * 4)) * 0.75f - 1.0f;
        break;
    case 3: /* masks */
        for (int i = 0; i < V; i++)
            if (urand() < 0.5) x[i] = urand() < 0.9 ? -INFINITY : NAN;
        break;
    case 4: /* -0 beside +0, among few values */
        for (int i = 0; i < V; i++) x[i] = urand() < 0.5 ? (urand() < 0.5 ? -0.0f : 0.0f) : -2.0f;
        break;
    case 5: /* one finite logit */
        for (int i = 0; i < V; i++) x[i] = -INFINITY;
        x[V / 3] = -7.0f;
        break;
    case 6: /* nothing finite: the argmax rule (the first non-NaN) */
        for (int i = 0; i < V; i++) x[i] = i % 3 == 0 ? NAN : -INFINITY;
        break;
    case 7: /* +inf present: the argmax rule */
        x[V / 2] = INFINITY, x[V - 1] = INFINITY;
        break;
    case 8: /* a small spread: nearly uniform */
        for (int i = 0; i < V; i++) x[i] = (float)(0.01 * nrand());
        break;
    default: break;
    }
}

typedef struct {
    int n;
    int *id;
    double *p;
} cands;

/* The CPU's candidates of one row under args a (as gpt_sample computes them). */
static cands cpu_cands(const gpt_sample_args *a, const float *x, int V)
{
    gpt_sampling p = gpt_sampling_defaults();
    p.temperature = a->temperature, p.top_k = a->top_k, p.top_p = a->top_p, p.min_p = a->min_p;
    gpt_sampler *s = gpt_sampler_create(&p, V);
    const gpt_cand *c;
    cands r;
    r.n = gpt_sampler_candidates(s, x, &c);
    r.id = malloc((size_t)r.n * sizeof *r.id), r.p = malloc((size_t)r.n * sizeof *r.p);
    for (int i = 0; i < r.n; i++) r.id[i] = c[i].id, r.p[i] = c[i].p;
    gpt_sampler_free(s);
    return r;
}

/* gpt_sample's draw with uniform u, in the op's encoding; *margin: how close u came to a boundary */
static int cpu_pick(const cands *c, double u, double *margin)
{
    *margin = INFINITY;
    if (c->n == 1) return -1 - c->id[0];
    double acc = 0;
    for (int i = 0; i < c->n; i++) {
        acc += c->p[i];
        if (fabs(u - acc) < *margin) *margin = fabs(u - acc);
        if (u < acc) return c->id[i];
    }
    return c->id[c->n - 1];
}

static void check_op(gpt_backend *gpu, int V, const gpt_sample_args *a, const char *name)
{
    int ld = V + 5; /* rows of a padded vocabulary */
    float *x = malloc((size_t)ROWS * ld * sizeof *x);
    for (int r = 0; r < ROWS; r++) {
        fill_row(x + (size_t)r * ld, V, r % 9);
        for (int j = V; j < ld; j++) x[(size_t)r * ld + j] = 1e30f; /* padding: never a candidate */
    }
    cands c[ROWS];
    for (int r = 0; r < ROWS; r++) c[r] = cpu_cands(a, x + (size_t)r * ld, V);
    float *xd = gpu->alloc(gpu, (size_t)ROWS * ld * sizeof *x);
    double *ud = gpu->alloc(gpu, ROWS * sizeof(double));
    int *od = gpu->alloc(gpu, ROWS * sizeof(int));
    gpu->to_device(gpu, xd, x, (size_t)ROWS * ld * sizeof *x);
    int bad = 0, near = 0, drawn = 0, single = 0;
    for (int d = 0; d < draws; d++) {
        double u[ROWS];
        int o[ROWS];
        for (int r = 0; r < ROWS; r++) u[r] = d == 0 ? 0.0 : d == 1 ? 0.9999999 : urand();
        gpu->to_device(gpu, ud, u, sizeof u);
        gpu->sample(gpu, od, xd, ld, ROWS, V, a, ud);
        gpu->to_host(gpu, o, od, sizeof o);
        for (int r = 0; r < ROWS; r++) {
            double margin;
            int want = cpu_pick(&c[r], u[r], &margin);
            if (want >= 0 && margin < 1e-9) {
                /* u = 0.9999999 lies in the tail, where a row of Gaussian logits over 50k-200k
                 * tokens has boundaries closer than 1e-9 by construction: skipped, not counted */
                near += d >= 2;
                continue;
            }
            want >= 0 ? drawn++ : single++;
            if (o[r] != want && bad++ < 3)
                diag("%s V=%d row %d (kind %d) u=%.17g: device %d, cpu %d (encoded: -1 - id = no draw; %d candidates)",
                     name, V, r, r % 9, u[r], o[r], want, c[r].n);
        }
    }
    ok(bad == 0 && near <= (draws - 2) * ROWS / 50,
       "sample %s, V=%d: the cpu sampler's tokens (%d drawn, %d single-candidate rows; %d random uniforms within 1e-9 "
       "of a boundary not compared; %d differ)", name, V, drawn, single, near, bad);
    for (int r = 0; r < ROWS; r++) free(c[r].id), free(c[r].p);
    gpu->free(gpu, xd), gpu->free(gpu, ud), gpu->free(gpu, od);
    free(x);
}

/* ---- generation: device sampling against host sampling of the same logits ---- */

static void (*real_sample)(gpt_backend *, int *, const float *, int, int, int, const gpt_sample_args *,
                           const double *);
static long sample_calls;
static void counting_sample(gpt_backend *be, int *out, const float *logits, int ld, int n, int V,
                            const gpt_sample_args *a, const double *u)
{
    sample_calls++;
    real_sample(be, out, logits, ld, n, V, a, u);
}

static void check_generate(gpt_backend *gpu)
{
    gpt_err err;
    gpt_config cfg;
    if (!ok(gpt_config_load("t/data/ref/tiny-gpt2/model.yaml", &cfg, &err) == 0, "tiny-gpt2: config loads")) {
        diag("%s", err.msg);
        return;
    }
    /* the device backend, with its sample op counted */
    gpt_backend w = *gpu;
    real_sample = gpu->sample;
    w.sample = counting_sample;
    gpt_model *m = gpt_model_create(&cfg.model, &w, &err);
    if (!m || gpt_model_load_hf(m, "t/data/ref/tiny-gpt2/model.safetensors", &err) < 0) {
        ok(0, "tiny-gpt2 loads on the device: %s", err.msg);
        return;
    }
    static const uint32_t p0[] = {5, 17, 300}, p1[] = {64}, p2[] = {9, 128, 77, 301, 2, 64, 199};
    static const struct {
        const char *name;
        double temperature, top_p, min_p;
        int top_k;
    } set[] = {{"temperature 1", 1.0, 1, 0, 0},
               {"temperature 0.8, top-k 20", 0.8, 1, 0, 20},
               {"temperature 1.2, top-p 0.8", 1.2, 0.8, 0, 0},
               {"min-p 0.3", 1.0, 1, 0.3, 0},
               {"top-k 3, top-p 0.5, min-p 0.2 (many single candidates)", 0.7, 0.5, 0.2, 3},
               {"greedy", 0, 1, 0, 0}};
    for (size_t k = 0; k < sizeof set / sizeof *set; k++) {
        gpt_gen_opts o = gpt_gen_defaults();
        o.max_new_tokens = 24;
        o.sampling.temperature = set[k].temperature, o.sampling.top_p = set[k].top_p;
        o.sampling.min_p = set[k].min_p, o.sampling.top_k = set[k].top_k;
        gpt_gen_req a[3] = {{.prompt = p0, .n_prompt = 3}, {.prompt = p1, .n_prompt = 1}, {.prompt = p2, .n_prompt = 7}};
        gpt_gen_req b[3] = {{.prompt = p0, .n_prompt = 3}, {.prompt = p1, .n_prompt = 1}, {.prompt = p2, .n_prompt = 7}};
        gpt_rng ra, rb;
        gpt_rng_seed(&ra, 1234 + k), gpt_rng_seed(&rb, 1234 + k);
        o.device_sampling = 0;
        long c0 = sample_calls;
        int rc1 = gpt_generate(m, NULL, &o, a, 3, &ra, NULL, &err);
        long host_calls = sample_calls - c0;
        o.device_sampling = 1;
        c0 = sample_calls;
        int rc2 = gpt_generate(m, NULL, &o, b, 3, &rb, NULL, &err);
        long dev_calls = sample_calls - c0;
        int same = rc1 == 0 && rc2 == 0;
        size_t ntok = 0;
        for (int i = 0; i < 3 && same; i++) {
            same &= a[i].out.n == b[i].out.n && a[i].finish == b[i].finish &&
                    (a[i].out.n == 0 || memcmp(a[i].out.v, b[i].out.v, a[i].out.n * sizeof *a[i].out.v) == 0);
            ntok += a[i].out.n;
        }
        ok(same && memcmp(&ra, &rb, sizeof ra) == 0 && host_calls == 0 && dev_calls >= 24,
           "generate (%s): device sampling gives the host's %zu tokens and leaves the generator in the same state "
           "(%ld device sample calls)", set[k].name, ntok, dev_calls);
        for (int i = 0; i < 3; i++) gpt_gen_req_free(&a[i]), gpt_gen_req_free(&b[i]);
    }
    gpt_model_free(m);
    gpt_config_free(&cfg);
}

int main(void)
{
    gpt_err err;
    gpt_backend *gpu = gpt_backend_cuda(0, &err);
    if (!gpu) {
        char reason[1100];
        snprintf(reason, sizeof reason, "%s", err.msg);
        for (char *p = reason; *p; p++)
            if (*p == '\n') *p = ' ';
        skip_all(reason);
    }
    const char *q = getenv("GPT_CUDA_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0") != 0;
    if (quick) draws = 3;
    if (!ok(gpu->sample != NULL, "the cuda backend has the sample op")) {
        gpu->destroy(gpu);
        return done_testing();
    }
    static const struct {
        const char *name;
        gpt_sample_args a;
    } set[] = {
        {"temperature 1", {.temperature = 1, .top_k = 0, .top_p = 1, .min_p = 0}},
        {"temperature 0.7, top-k 50", {.temperature = 0.7, .top_k = 50, .top_p = 1, .min_p = 0}},
        {"temperature 1.3, top-p 0.9", {.temperature = 1.3, .top_k = 0, .top_p = 0.9, .min_p = 0}},
        {"top-p 0.02 (often one left)", {.temperature = 1, .top_k = 0, .top_p = 0.02, .min_p = 0}},
        {"temperature 0.8, min-p 0.1", {.temperature = 0.8, .top_k = 0, .top_p = 1, .min_p = 0.1}},
        {"top-k 40, top-p 0.95, min-p 0.05", {.temperature = 1, .top_k = 40, .top_p = 0.95, .min_p = 0.05}},
        {"top-k 5000, temperature 2", {.temperature = 2, .top_k = 5000, .top_p = 1, .min_p = 0}},
        {"greedy (temperature 0)", {.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0}},
        {"greedy (top-k 1)", {.temperature = 0.9, .top_k = 1, .top_p = 1, .min_p = 0}},
    };
    static const int vocab[] = {1000, 50257, 201088};
    for (int v = 0; v < (quick ? 1 : 3); v++)
        for (size_t k = 0; k < sizeof set / sizeof *set; k++)
            if (!quick || k == 0 || k == 3 || k == 5 || k == 7) /* quick: four sets, for compute-sanitizer */
                check_op(gpu, vocab[v], &set[k].a, set[k].name);
    if (!quick) check_generate(gpu);
    gpu->destroy(gpu);
    return done_testing();
}
