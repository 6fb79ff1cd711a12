/* Sampling filters on known distributions (exact kept sets, renormalized probabilities),
 * penalties on hand-computed logits, and draw frequencies within binomial bounds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"
#include "tap.h"

/* Runs the filters on logits = log(p) and checks the kept ids and probabilities. */
static void check(const char *what, const double *p, int V, gpt_sampling s, const int *ids, const double *want, int n)
{
    float lg[16];
    for (int i = 0; i < V; i++) lg[i] = (float)log(p[i]);
    gpt_sampler *smp = gpt_sampler_create(&s, V);
    const gpt_cand *c;
    int k = gpt_sampler_candidates(smp, lg, &c);
    int good = k == n;
    double worst = 0;
    for (int i = 0; good && i < n; i++) {
        good &= c[i].id == ids[i];
        double e = fabs(c[i].p - want[i]);
        worst = e > worst ? e : worst;
    }
    ok(good && worst < 1e-6, "%s: kept %d (want %d), max prob error %.2g", what, k, n, worst);
    if (!good)
        for (int i = 0; i < k; i++) diag("  kept id %d p %.6f", c[i].id, c[i].p);
    gpt_sampler_free(smp);
}

int main(void)
{
    const double P[4] = {0.1, 0.4, 0.2, 0.3}; /* sorted: 1 (.4), 3 (.3), 2 (.2), 0 (.1) */
    gpt_sampling s = gpt_sampling_defaults();
    s.temperature = 1;
    check("no filter keeps all, sorted", P, 4, s, (int[]){1, 3, 2, 0}, (double[]){.4, .3, .2, .1}, 4);
    s.top_k = 2;
    check("top-k 2", P, 4, s, (int[]){1, 3}, (double[]){.4 / .7, .3 / .7}, 2);
    s.top_k = 0, s.top_p = 0.75;
    check("top-p 0.75 keeps the mass-0.9 prefix", P, 4, s, (int[]){1, 3, 2}, (double[]){.4 / .9, .3 / .9, .2 / .9}, 3);
    s.top_p = 0.5;
    check("top-p 0.5", P, 4, s, (int[]){1, 3}, (double[]){.4 / .7, .3 / .7}, 2);
    s.top_p = 0.3;
    check("top-p below the top probability keeps one", P, 4, s, (int[]){1}, (double[]){1}, 1);
    s.top_p = 1, s.min_p = 0.3; /* threshold 0.12 drops 0.1 */
    check("min-p 0.3", P, 4, s, (int[]){1, 3, 2}, (double[]){.4 / .9, .3 / .9, .2 / .9}, 3);
    s.min_p = 0.8; /* threshold 0.32 */
    check("min-p 0.8", P, 4, s, (int[]){1}, (double[]){1}, 1);
    s.min_p = 0, s.top_k = 3, s.top_p = 0.6; /* after top-k: .444 .333 .222; .444 < .6 <= .777 */
    check("top-k 3 then top-p 0.6 (on the renormalized top-k)", P, 4, s, (int[]){1, 3}, (double[]){.4 / .7, .3 / .7}, 2);
    {
        /* n exactly tied tokens and top-p = k/n: the first k hold exactly the threshold's mass and
         * are kept, whatever the last bit of the running sum (sampling.h's GPT_TOP_P_SLACK; without
         * it, k + 1 are kept in 177 of these 207 cases) */
        static const int ns[] = {5, 8, 9, 40, 150};
        int bad = 0, cases = 0;
        for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
            int n = ns[t], V = n + 5;
            float *lg = malloc((size_t)V * sizeof *lg);
            for (int i = 0; i < V; i++) lg[i] = i < 5 ? -3.0f : 0.5f; /* 5 less likely ids first */
            for (int want = 1; want < n; want++, cases++) {
                gpt_sampling q = gpt_sampling_defaults();
                q.temperature = 1, q.top_k = n, q.top_p = (double)want / n;
                gpt_sampler *smp = gpt_sampler_create(&q, V);
                const gpt_cand *c;
                int k = gpt_sampler_candidates(smp, lg, &c);
                if (k != want || c[0].id != 5 || c[k - 1].id != 5 + k - 1)
                    if (bad++ < 5) diag("%d tied, top-p %d/%d: kept %d", n, want, n, k);
                gpt_sampler_free(smp);
            }
            free(lg);
        }
        ok(!bad, "top-p k/n over n exactly tied tokens keeps k (%d cases, %d wrong)", cases, bad);
    }
    s = gpt_sampling_defaults();
    s.temperature = 2; /* p^(1/2), normalized */
    double z = sqrt(.1) + sqrt(.4) + sqrt(.2) + sqrt(.3);
    check("temperature 2 flattens as p^(1/T)", P, 4, s, (int[]){1, 3, 2, 0},
          (double[]){sqrt(.4) / z, sqrt(.3) / z, sqrt(.2) / z, sqrt(.1) / z}, 4);
    s.temperature = 0.5;
    z = .01 + .16 + .04 + .09;
    check("temperature 0.5 sharpens as p^2", P, 4, s, (int[]){1, 3, 2, 0}, (double[]){.16 / z, .09 / z, .04 / z, .01 / z}, 4);
    s = gpt_sampling_defaults();
    check("temperature 0 is greedy", P, 4, s, (int[]){1}, (double[]){1}, 1);
    const double T[4] = {0.3, 0.3, 0.2, 0.2};
    check("greedy tie goes to the lower id", T, 4, s, (int[]){0}, (double[]){1}, 1);
    s.temperature = 1;
    check("equal probabilities sort by id", T, 4, s, (int[]){0, 1, 2, 3}, (double[]){.3, .3, .2, .2}, 4);
    {
        float lg[4] = {-INFINITY, 0, -INFINITY, 0};
        gpt_sampler *smp = gpt_sampler_create(&s, 4);
        const gpt_cand *c;
        int k = gpt_sampler_candidates(smp, lg, &c);
        ok(k == 2 && c[0].id == 1 && c[1].id == 3 && fabs(c[0].p - .5) < 1e-12, "-inf logits are never kept");
        gpt_sampler_free(smp);
    }

    /* penalties on hand-computed logits; history counts: 0 once, 1 twice, 3 once, 9 out of range */
    const uint32_t hist[5] = {0, 1, 1, 3, 9};
    struct {
        const char *what;
        double rep, pres, freq;
        float want[4];
    } pc[] = {
        {"repetition 2: positive / 2, negative * 2, unseen unchanged", 2, 0, 0, {1.0f, -2.0f, 0.5f, 1.5f}},
        {"presence 0.5 + frequency 0.25 * count", 1, 0.5, 0.25, {1.25f, -2.0f, 0.5f, 2.25f}},
        {"repetition then presence/frequency", 2, 0.5, 0.25, {0.25f, -3.0f, 0.5f, 0.75f}},
    };
    for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
        gpt_sampling q = gpt_sampling_defaults();
        q.repetition_penalty = pc[i].rep, q.presence_penalty = pc[i].pres, q.frequency_penalty = pc[i].freq;
        gpt_sampler *smp = gpt_sampler_create(&q, 4);
        float lg[4] = {2.0f, -1.0f, 0.5f, 3.0f};
        gpt_sampler_penalize(smp, lg, hist, 5);
        int good = 1;
        for (int v = 0; v < 4; v++) good &= fabsf(lg[v] - pc[i].want[v]) < 1e-6f;
        ok(good, "%s: got %g %g %g %g", pc[i].what, lg[0], lg[1], lg[2], lg[3]);
        /* the counts are reset: a second call penalizes the same way */
        float lg2[4] = {2.0f, -1.0f, 0.5f, 3.0f};
        gpt_sampler_penalize(smp, lg2, hist, 5);
        ok(!memcmp(lg, lg2, sizeof lg), "%s: same again on a second call", pc[i].what);
        gpt_sampler_free(smp);
    }
    {
        gpt_sampling q = gpt_sampling_defaults();
        q.repetition_penalty = 10;
        gpt_sampler *smp = gpt_sampler_create(&q, 4);
        float lg[4] = {2.0f, 1.9f, 0.5f, 0.0f};
        uint32_t h[1] = {0};
        ok(gpt_sample(smp, lg, h, 1, NULL) == 1, "greedy with a repetition penalty avoids the repeated argmax");
        gpt_sampler_free(smp);
    }

    /* draws: frequencies within 5 sigma of the binomial mean for a fixed seed */
    {
        const double D[5] = {0.5, 0.25, 0.15, 0.07, 0.03};
        gpt_sampling q = gpt_sampling_defaults();
        q.temperature = 1;
        gpt_sampler *smp = gpt_sampler_create(&q, 5);
        gpt_rng rng;
        gpt_rng_seed(&rng, 12345);
        int N = 40000, cnt[5] = {0}, first[32];
        for (int i = 0; i < N; i++) {
            float lg[5];
            for (int v = 0; v < 5; v++) lg[v] = (float)log(D[v]);
            int id = gpt_sample(smp, lg, NULL, 0, &rng);
            if (id >= 0 && id < 5) cnt[id]++;
            if (i < 32) first[i] = id;
        }
        int good = 1;
        for (int v = 0; v < 5; v++) {
            double mu = N * D[v], sd = sqrt(N * D[v] * (1 - D[v]));
            good &= fabs(cnt[v] - mu) <= 5 * sd;
            diag("id %d: %d draws, expected %.0f +- %.0f", v, cnt[v], mu, 5 * sd);
        }
        ok(good, "sampled frequencies are within 5 sigma of the distribution (N = %d)", N);
        /* the same seed gives the same tokens; another seed other tokens */
        int again[32], other[32], same = 1, diff = 0;
        gpt_rng_seed(&rng, 12345);
        for (int i = 0; i < 32; i++) {
            float lg[5];
            for (int v = 0; v < 5; v++) lg[v] = (float)log(D[v]);
            again[i] = gpt_sample(smp, lg, NULL, 0, &rng);
            same &= again[i] == first[i];
        }
        gpt_rng_seed(&rng, 54321);
        for (int i = 0; i < 32; i++) {
            float lg[5];
            for (int v = 0; v < 5; v++) lg[v] = (float)log(D[v]);
            other[i] = gpt_sample(smp, lg, NULL, 0, &rng);
            diff |= other[i] != first[i];
        }
        ok(same, "the same seed draws the same 32 tokens");
        ok(diff, "another seed draws other tokens");
        /* top-k 2 under sampling never draws outside the kept set, and splits as .5/.25 renormalized */
        gpt_sampler_free(smp);
        q.top_k = 2;
        smp = gpt_sampler_create(&q, 5);
        int c2[5] = {0};
        for (int i = 0; i < 9000; i++) {
            float lg[5];
            for (int v = 0; v < 5; v++) lg[v] = (float)log(D[v]);
            c2[gpt_sample(smp, lg, NULL, 0, &rng)]++;
        }
        double mu = 9000 * 2.0 / 3, sd = sqrt(9000 * (2.0 / 3) * (1.0 / 3));
        ok(c2[2] + c2[3] + c2[4] == 0 && fabs(c2[0] - mu) <= 5 * sd, "top-k 2 draws only ids 0 and 1, 2:1 (%d:%d)",
           c2[0], c2[1]);
        gpt_sampler_free(smp);
    }
    {
        gpt_rng r;
        gpt_rng_seed(&r, 0);
        double lo = 1, hi = 0, sum = 0;
        for (int i = 0; i < 100000; i++) {
            double u = gpt_rng_uniform(&r);
            lo = u < lo ? u : lo, hi = u > hi ? u : hi, sum += u;
        }
        ok(lo >= 0 && hi < 1 && fabs(sum / 100000 - 0.5) < 0.005, "uniform draws lie in [0, 1) with mean %.4f", sum / 100000);
    }
    return done_testing();
}
