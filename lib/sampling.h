/* sampling.h: turning a row of logits into the next token.
 *
 *   gpt_sampling p = gpt_sampling_defaults();        // greedy
 *   p.temperature = 0.8; p.top_p = 0.95; p.seed = 42;
 *   gpt_sampler *s = gpt_sampler_create(&p, vocab);
 *   gpt_rng rng; gpt_rng_seed(&rng, p.seed);
 *   int id = gpt_sample(s, logits, history, n_history, &rng);   // logits are modified in place
 *
 * The order is Hugging Face generate's: penalties on the raw logits (repetition, then presence
 * and frequency), then temperature, top-k, top-p, min-p, then a draw from what is left,
 * renormalized. Temperature 0 is greedy: the argmax after penalties, the lowest id on a tie.
 * Ties in the sort are broken by the lower id, so a seed always gives the same tokens. */
#ifndef GPT_SAMPLING_H
#define GPT_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

/* top-p counts a prefix as reaching top_p * mass when it is within this relative distance of it.
 * Tied probabilities put the exact cumulative mass on the threshold (40 equal tokens, top-p 0.95:
 * 38 of them hold exactly 0.95); without the slack, the last bit of a sum decides, and a sum in
 * another order (the CUDA sampler's parallel prefix sum) keeps another set. */
#define GPT_TOP_P_SLACK 1e-9

typedef struct gpt_sampling {
    double temperature;        /* 0: greedy */
    int top_k;                 /* keep the k most likely (0: off) */
    double top_p;              /* keep the smallest most-likely set with mass >= top_p (1: off) */
    double min_p;              /* drop tokens below min_p * the top probability (0: off) */
    double repetition_penalty; /* HF/CTRL: a seen token's logit l becomes l/r if l > 0 else l*r (1: off) */
    double presence_penalty;   /* OpenAI: l -= presence if the token was seen (0: off) */
    double frequency_penalty;  /* OpenAI: l -= frequency * count (0: off) */
    uint64_t seed;
} gpt_sampling;

gpt_sampling gpt_sampling_defaults(void);

/* xoshiro256** seeded through splitmix64: the same seed gives the same stream on every machine. */
typedef struct gpt_rng {
    uint64_t s[4];
} gpt_rng;
void gpt_rng_seed(gpt_rng *r, uint64_t seed);
uint64_t gpt_rng_next(gpt_rng *r);
double gpt_rng_uniform(gpt_rng *r); /* [0, 1), 53 bits */
/* A seed from the clock and the process id, for when the user gave none. */
uint64_t gpt_random_seed(void);

/* One kept candidate of a filtered distribution. */
typedef struct gpt_cand {
    int id;
    double p;
} gpt_cand;

typedef struct gpt_sampler gpt_sampler;
gpt_sampler *gpt_sampler_create(const gpt_sampling *p, int vocab);
void gpt_sampler_free(gpt_sampler *s);

/* Applies the penalties to logits[0..vocab) for the tokens in history (ids outside the
 * vocabulary are ignored). */
void gpt_sampler_penalize(gpt_sampler *s, float *logits, const uint32_t *history, size_t n_history);
/* Temperature and the filters on (penalized) logits: the kept candidates, most likely first
 * (ties: lower id first), probabilities renormalized to sum to 1. Returns their number (>= 1)
 * and a pointer into the sampler, valid until the next call. Temperature 0 keeps the argmax. */
int gpt_sampler_candidates(gpt_sampler *s, const float *logits, const gpt_cand **out);
/* Penalties, filters and a draw (rng may be NULL for greedy). */
int gpt_sample(gpt_sampler *s, float *logits, const uint32_t *history, size_t n_history, gpt_rng *rng);

/* argmax with the lowest id on a tie (NaN never wins). */
int gpt_argmax(const float *x, int n);

#endif
