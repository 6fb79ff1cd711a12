/* rope.c: RoPE frequencies with YaRN's NTK-by-parts interpolation. */
#include "rope.h"

#include <math.h>
#include <stdlib.h>

static double correction_dim(double rotations, int dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2 * M_PI)) / (2 * log(base));
}

void gpt_rope_inv_freq(const gpt_model_config *cfg, float *inv_freq, float *attn_factor)
{
    int dim = cfg->d_head, half = dim / 2;
    float base = (float)cfg->rope_theta;
    *attn_factor = 1.0f;
    for (int i = 0; i < half; i++) {
        /* torch: base ** (arange(0, dim, 2).float() / dim), then 1 / that, in float32 */
        float pos_freq = powf(base, (float)(2 * i) / (float)dim);
        inv_freq[i] = 1.0f / pos_freq;
    }
    if (cfg->rope_scaling != GPT_ROPE_SCALING_YARN) return;
    double factor = cfg->yarn_factor;
    *attn_factor = factor <= 1 ? 1.0f : (float)(0.1 * log(factor) + 1.0);
    double lo = correction_dim(cfg->yarn_beta_fast, dim, cfg->rope_theta, cfg->yarn_original_max_seq_len);
    double hi = correction_dim(cfg->yarn_beta_slow, dim, cfg->rope_theta, cfg->yarn_original_max_seq_len);
    if (cfg->yarn_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    if (lo < 0) lo = 0;
    if (hi > dim - 1) hi = dim - 1;
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)dim);
        float extra = 1.0f / pos_freq, inter = 1.0f / ((float)factor * pos_freq);
        float ramp = ((float)i - (float)lo) / (float)(hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float keep = 1.0f - ramp; /* share of the original (extrapolated) frequency */
        inv_freq[i] = inter * (1.0f - keep) + extra * keep;
    }
}

void gpt_rope_tables(const gpt_model_config *cfg, int T, float *cos_t, float *sin_t)
{
    int half = cfg->d_head / 2;
    float *inv = malloc((size_t)half * sizeof *inv), af;
    gpt_rope_inv_freq(cfg, inv, &af);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            float ang = (float)t * inv[i]; /* float32 product, as torch forms it */
            cos_t[(size_t)t * half + i] = (float)cos((double)ang) * af;
            sin_t[(size_t)t * half + i] = (float)sin((double)ang) * af;
        }
    free(inv);
}
