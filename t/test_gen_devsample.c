/* gpt_generate with a backend that has the optional sample op (the CUDA backend's path) gives the
 * same tokens as host sampling, and leaves the generator where host sampling does, on any
 * machine: the backend here is the CPU backend plus a sample op written from the op's contract in
 * backend.h over the CPU sampler. What this checks is generate.c's side: the logits handed over,
 * the uniforms drawn in row order only for rows with more than one candidate (a single-candidate
 * row before a sampled one forces the second op call), the greedy case drawing nothing, and the
 * fallbacks (penalties, device_sampling off) not calling the op. t/test_cuda_sample.c checks the CUDA
 * op itself against the same sampler. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "generate.h"
#include "hf_import.h"
#include "model.h"
#include "sampling.h"
#include "tap.h"

static long calls, singles, draws;

/* backend.h's sample op, on CPU-backend (host) memory */
static void ref_sample(gpt_backend *be, int *out, const float *logits, int ld, int n, int V, const gpt_sample_args *a,
                       const double *u)
{
    (void)be;
    calls++;
    gpt_sampling p = gpt_sampling_defaults();
    p.temperature = a->temperature, p.top_k = a->top_k, p.top_p = a->top_p, p.min_p = a->min_p;
    gpt_sampler *s = gpt_sampler_create(&p, V);
    for (int r = 0; r < n; r++) {
        const gpt_cand *c;
        int k = gpt_sampler_candidates(s, logits + (size_t)r * ld, &c);
        if (k == 1) {
            out[r] = -1 - c[0].id;
            singles++;
            continue;
        }
        draws++;
        double acc = 0;
        out[r] = c[k - 1].id;
        for (int i = 0; i < k; i++) {
            acc += c[i].p;
            if (u[r] < acc) {
                out[r] = c[i].id;
                break;
            }
        }
    }
    gpt_sampler_free(s);
}

static gpt_model *load(gpt_backend *be, gpt_config *cfg)
{
    gpt_err err;
    gpt_model *m = gpt_model_create(&cfg->model, be, &err);
    if (!m || gpt_model_load_hf(m, "t/data/ref/tiny-gpt2/model.safetensors", &err) < 0) {
        diag("%s", err.msg);
        if (m) gpt_model_free(m);
        return NULL;
    }
    return m;
}

int main(void)
{
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load("t/data/ref/tiny-gpt2/model.yaml", &cfg, &err) < 0) {
        ok(0, "tiny-gpt2 config: %s", err.msg);
        return done_testing();
    }
    gpt_backend *cpu = gpt_backend_cpu();
    gpt_backend with = *cpu; /* the same ops and memory, plus sample */
    with.sample = ref_sample;
    gpt_model *mh = load(cpu, &cfg), *md = load(&with, &cfg);
    if (!ok(mh && md, "tiny-gpt2 loads on both backends")) return done_testing();

    static const uint32_t p0[] = {5, 17, 300}, p1[] = {64}, p2[] = {9, 128, 77, 301, 2, 64, 199}, p3[] = {250, 31};
    static const struct {
        const char *name;
        double temperature, top_p, min_p, rep;
        int top_k, use_rng, want_op, want_mix;
    } set[] = {
        {"temperature 1", 1.0, 1, 0, 1, 0, 1, 1, 0},
        {"temperature 0.8, top-k 20", 0.8, 1, 0, 1, 20, 1, 1, 0},
        {"top-p 0.6", 1.0, 0.6, 0, 1, 0, 1, 1, 0},
        /* sharp filters: many rows keep one candidate, some keep more, in the same batch */
        {"top-k 3, top-p 0.5, min-p 0.2", 0.5, 0.5, 0.2, 1, 3, 1, 1, 1},
        {"min-p 0.6, temperature 0.3", 0.3, 1, 0.6, 1, 0, 1, 1, 1},
        {"greedy", 0, 1, 0, 1, 0, 1, 1, 0},
        {"top-k 1", 1.0, 1, 0, 1, 1, 1, 1, 0},
        {"no generator (most likely token)", 1.0, 1, 0, 1, 0, 0, 1, 0},
        {"repetition penalty: host sampling", 1.0, 1, 0, 1.3, 0, 1, 0, 0},
    };
    for (size_t k = 0; k < sizeof set / sizeof *set; k++) {
        gpt_gen_opts o = gpt_gen_defaults();
        o.max_new_tokens = 20;
        o.device_sampling = 1;
        o.sampling.temperature = set[k].temperature, o.sampling.top_p = set[k].top_p;
        o.sampling.min_p = set[k].min_p, o.sampling.top_k = set[k].top_k;
        o.sampling.repetition_penalty = set[k].rep;
        gpt_gen_req a[4] = {{.prompt = p0, .n_prompt = 3}, {.prompt = p1, .n_prompt = 1},
                            {.prompt = p2, .n_prompt = 7}, {.prompt = p3, .n_prompt = 2}};
        gpt_gen_req b[4];
        memcpy(b, a, sizeof a);
        gpt_rng ra, rb;
        gpt_rng_seed(&ra, 77 + k), gpt_rng_seed(&rb, 77 + k);
        long c0 = calls, s0 = singles, d0 = draws;
        int rc1 = gpt_generate(mh, NULL, &o, a, 4, set[k].use_rng ? &ra : NULL, NULL, &err);
        int rc2 = gpt_generate(md, NULL, &o, b, 4, set[k].use_rng ? &rb : NULL, NULL, &err);
        long nc = calls - c0, ns = singles - s0, nd = draws - d0;
        int same = rc1 == 0 && rc2 == 0;
        size_t ntok = 0;
        for (int i = 0; i < 4 && same; i++) {
            same &= a[i].out.n == b[i].out.n && a[i].finish == b[i].finish &&
                    (a[i].out.n == 0 || memcmp(a[i].out.v, b[i].out.v, a[i].out.n * sizeof *a[i].out.v) == 0);
            ntok += a[i].out.n;
        }
        ok(same && memcmp(&ra, &rb, sizeof ra) == 0 && ntok == 80,
           "%s: the same %zu tokens and generator state as host sampling (op calls %ld: %ld rows drawn, %ld single)",
           set[k].name, ntok, nc, nd, ns);
        if (set[k].want_op)
            ok(nc >= 20, "%s: the sample op ran (%ld calls)", set[k].name, nc);
        else
            ok(nc == 0, "%s: the sample op is not used (%ld calls)", set[k].name, nc);
        if (set[k].want_mix)
            ok(ns > 0 && nd > 0 && nc > 20,
               "%s: single-candidate and sampled rows met in the same steps, so the op ran again with the right "
               "uniforms (%ld single, %ld drawn, %ld calls for 20 steps)", set[k].name, ns, nd, nc);
        for (int i = 0; i < 4; i++) gpt_gen_req_free(&a[i]), gpt_gen_req_free(&b[i]);
    }
    /* device sampling is on by default; switched off, the op stays out */
    gpt_gen_opts o = gpt_gen_defaults();
    ok(o.device_sampling == 1, "device sampling is on by default");
    o.max_new_tokens = 5, o.sampling.temperature = 1, o.device_sampling = 0;
    gpt_gen_req r = {.prompt = p0, .n_prompt = 3};
    gpt_rng rng;
    gpt_rng_seed(&rng, 5);
    long c0 = calls;
    ok(gpt_generate(md, NULL, &o, &r, 1, &rng, NULL, &err) == 0 && r.out.n == 5 && calls == c0,
       "device_sampling off: the op is not called");
    gpt_gen_req_free(&r);
    gpt_model_free(mh), gpt_model_free(md);
    gpt_config_free(&cfg);
    cpu->destroy(cpu);
    return done_testing();
}
