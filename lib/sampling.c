/* sampling.c: penalties, temperature, top-k / top-p / min-p, seeded draws (see sampling.h). */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

gpt_sampling gpt_sampling_defaults(void)
{
    gpt_sampling p = {0};
    p.temperature = 0;
    p.top_p = 1;
    p.repetition_penalty = 1;
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void gpt_rng_seed(gpt_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t gpt_rng_next(gpt_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return out;
}

double gpt_rng_uniform(gpt_rng *r) { return (double)(gpt_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t gpt_random_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    return splitmix64(&x) >> 1; /* 63 bits: prints the same as signed or unsigned */
}

struct gpt_sampler {
    gpt_sampling p;
    int V;
    gpt_cand *cand;
    int *count;
};

gpt_sampler *gpt_sampler_create(const gpt_sampling *p, int vocab)
{
    gpt_sampler *s = gpt_xcalloc(1, sizeof *s);
    s->p = *p;
    s->V = vocab;
    s->cand = gpt_xmalloc((size_t)vocab * sizeof *s->cand);
    s->count = gpt_xcalloc((size_t)vocab, sizeof *s->count);
    return s;
}

void gpt_sampler_free(gpt_sampler *s)
{
    if (!s) return;
    free(s->cand), free(s->count), free(s);
}

int gpt_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
    return best;
}

void gpt_sampler_penalize(gpt_sampler *s, float *logits, const uint32_t *history, size_t n)
{
    const gpt_sampling *p = &s->p;
    if (p->repetition_penalty == 1 && p->presence_penalty == 0 && p->frequency_penalty == 0) return;
    for (size_t i = 0; i < n; i++)
        if (history[i] < (uint32_t)s->V) s->count[history[i]]++;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = history[i];
        if (id >= (uint32_t)s->V || s->count[id] == 0) continue; /* 0: already done */
        float l = logits[id];
        if (p->repetition_penalty != 1)
            l = l > 0 ? (float)(l / p->repetition_penalty) : (float)(l * p->repetition_penalty);
        l = (float)(l - p->presence_penalty - p->frequency_penalty * s->count[id]);
        logits[id] = l;
        s->count[id] = 0;
    }
}

static int cand_cmp(const void *a, const void *b)
{
    const gpt_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int gpt_sampler_candidates(gpt_sampler *s, const float *logits, const gpt_cand **out)
{
    const gpt_sampling *p = &s->p;
    int V = s->V, n = 0;
    *out = s->cand;
    if (p->temperature <= 0 || p->top_k == 1) {
        s->cand[0].id = gpt_argmax(logits, V);
        s->cand[0].p = 1;
        return 1;
    }
    /* softmax at the temperature, in double; -inf logits (masked) are dropped */
    double mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    if (!isfinite(mx)) { /* nothing finite: fall back to the argmax rule */
        s->cand[0].id = gpt_argmax(logits, V), s->cand[0].p = 1;
        return 1;
    }
    double sum = 0;
    for (int i = 0; i < V; i++) {
        if (!(logits[i] > -INFINITY)) continue;
        double e = exp(((double)logits[i] - mx) / p->temperature);
        s->cand[n].id = i, s->cand[n].p = e, sum += e, n++;
    }
    for (int i = 0; i < n; i++) s->cand[i].p /= sum;
    qsort(s->cand, (size_t)n, sizeof *s->cand, cand_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    if (p->top_p < 1) {
        /* the smallest prefix whose mass reaches top_p (HF drops tokens whose ascending
         * cumulative mass is <= 1 - top_p: the same set up to rounding); reaching it within
         * GPT_TOP_P_SLACK counts, so that ties do not hang on the summation order */
        double c = 0, tot = 0;
        for (int i = 0; i < n; i++) tot += s->cand[i].p;
        const double thr = p->top_p * tot * (1 - GPT_TOP_P_SLACK);
        int k = 0;
        while (k < n) {
            c += s->cand[k].p;
            k++;
            if (c >= thr) break;
        }
        n = k;
    }
    if (p->min_p > 0) {
        double thr = p->min_p * s->cand[0].p;
        int k = 1;
        while (k < n && s->cand[k].p >= thr) k++;
        n = k;
    }
    double tot = 0;
    for (int i = 0; i < n; i++) tot += s->cand[i].p;
    for (int i = 0; i < n; i++) s->cand[i].p /= tot;
    return n;
}

int gpt_sample(gpt_sampler *s, float *logits, const uint32_t *history, size_t n_history, gpt_rng *rng)
{
    gpt_sampler_penalize(s, logits, history, n_history);
    const gpt_cand *c;
    int n = gpt_sampler_candidates(s, logits, &c);
    if (n == 1 || !rng) return c[0].id;
    double u = gpt_rng_uniform(rng), acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) return c[i].id;
    }
    return c[n - 1].id; /* rounding left u above the total */
}
