/* The fused MXFP4 kernels (AVX-512, AVX2, portable) and the tiled sgemm path equal a dequantize-then-
 * multiply reference (in double) to fp32 rounding, for odd shapes, tails of rows and outputs, bias
 * or none, and extreme scales; quantizing dequantized weights gives them back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mxfp4.h"
#include "tap.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}
static float unif(void) { return (float)(next() % 2000001) / 1000000.0f - 1.0f; }

static const char *isa_name[] = {"auto", "portable", "avx2", "avx512", "gemm"};

static void check_shape(int n, int K, int O, int with_bias, int extreme)
{
    size_t nb = (size_t)K / 32;
    uint8_t *blk = malloc((size_t)O * nb * 16), *sc = malloc((size_t)O * nb);
    float *x = malloc((size_t)n * (K + 3) * sizeof *x), *w = malloc((size_t)O * K * sizeof *w);
    float *bias = malloc((size_t)O * sizeof *bias), *out = malloc((size_t)n * (O + 5) * sizeof *out);
    double *ref = malloc((size_t)n * O * sizeof *ref), *mag = malloc((size_t)n * O * sizeof *mag);
    for (size_t i = 0; i < (size_t)O * nb * 16; i++) blk[i] = (uint8_t)next();
    for (size_t i = 0; i < (size_t)O * nb; i++) sc[i] = (uint8_t)(118 + next() % 14);
    if (extreme) /* subnormal and huge (finite) scales */
        for (size_t i = 0; i < (size_t)O * nb; i += 3) sc[i] = (i / 3) % 2 ? 1 : 0;
    for (size_t i = 0; i < (size_t)n * (K + 3); i++) x[i] = unif();
    for (int o = 0; o < O; o++) bias[o] = unif();
    gpt_mxfp4_dequant(blk, sc, (size_t)O * nb, w);
    for (int r = 0; r < n; r++)
        for (int o = 0; o < O; o++) {
            double s = with_bias ? bias[o] : 0, m = fabs(s);
            for (int k = 0; k < K; k++) {
                s += (double)w[(size_t)o * K + k] * x[(size_t)r * (K + 3) + k];
                m += fabs((double)w[(size_t)o * K + k] * x[(size_t)r * (K + 3) + k]);
            }
            ref[(size_t)r * O + o] = s, mag[(size_t)r * O + o] = m;
        }
    for (int isa = GPT_MXFP4_AUTO; isa <= GPT_MXFP4_GEMM; isa++) {
        if (!gpt_mxfp4_isa_supported(isa)) {
            ok(1, "# SKIP %s kernel: this CPU lacks it", isa_name[isa]);
            continue;
        }
        for (size_t i = 0; i < (size_t)n * (O + 5); i++) out[i] = NAN;
        int rc = gpt_mxfp4_matmul_isa(isa, out, O + 5, x, K + 3, blk, sc, with_bias ? bias : NULL, n, K, O);
        double worst = 0;
        int untouched = 1;
        for (int r = 0; r < n; r++) {
            for (int o = 0; o < O; o++) {
                /* error bound of an fp32 sum of K products, relative to the sum of magnitudes */
                double e = fabs(out[(size_t)r * (O + 5) + o] - ref[(size_t)r * O + o]) /
                           (mag[(size_t)r * O + o] > 0 ? mag[(size_t)r * O + o] : 1);
                if (!(e <= worst)) worst = e; /* NaN propagates */
            }
            for (int o = O; o < O + 5; o++) untouched &= isnan(out[(size_t)r * (O + 5) + o]);
        }
        ok(rc == 0 && worst < 4e-6 && untouched, "%s: n=%d K=%d O=%d%s%s equals dequantize+multiply (max rel %.1e)",
           isa_name[isa], n, K, O, with_bias ? " bias" : "", extreme ? " extreme scales" : "", worst);
    }
    free(blk), free(sc), free(x), free(w), free(bias), free(out), free(ref), free(mag);
}

int main(void)
{
    check_shape(1, 32, 1, 1, 0);
    check_shape(1, 2880, 37, 1, 0);
    check_shape(1, 320, 9, 0, 1); /* one row: 2 groups of 4 blocks and 2 blocks one by one, extreme scales */
    check_shape(2, 96, 9, 0, 0);
    check_shape(3, 64, 70, 1, 1);
    check_shape(5, 160, 13, 1, 0);
    check_shape(17, 128, 130, 1, 0);
    check_shape(40, 320, 67, 0, 1);

    /* quantize(dequantize(b)) == b for blocks whose largest code is 6 (the scale is then unique) */
    size_t nblk = 4096;
    uint8_t *b = malloc(nblk * 16), *s = malloc(nblk), *b2 = malloc(nblk * 16), *s2 = malloc(nblk);
    float *w = malloc(nblk * 32 * sizeof *w), *w2 = malloc(nblk * 32 * sizeof *w2);
    for (size_t i = 0; i < nblk * 16; i++) b[i] = (uint8_t)next();
    for (size_t i = 0; i < nblk; i++) {
        s[i] = (uint8_t)(1 + next() % 252); /* 6 * 2^(253-127) overflows */
        b[16 * i + next() % 16] = (uint8_t)(0x07 | (next() & 1 ? 0x80 : 0x00) | (next() & 0x70));
    }
    gpt_mxfp4_dequant(b, s, nblk, w);
    gpt_mxfp4_quantize(w, nblk, b2, s2);
    gpt_mxfp4_dequant(b2, s2, nblk, w2);
    ok(memcmp(s, s2, nblk) == 0, "quantize recovers every scale");
    ok(memcmp(w, w2, nblk * 32 * sizeof *w) == 0, "quantize(dequantize(b)) dequantizes to the same weights");
    /* rounding: 0.3 * 2^-2 scale... values between codes go to the nearest one */
    float v[32] = {6.0f, 0.2f, 0.3f, 0.8f, 1.3f, 1.2f, 2.6f, 3.4f, -3.6f, 5.1f, 4.9f, 7.9f, -0.25f, 0.75f, 2.5f, 5.0f};
    float want[32] = {6.0f, 0.0f, 0.5f, 1.0f, 1.5f, 1.0f, 3.0f, 3.0f, -4.0f, 6.0f, 4.0f, 6.0f, -0.0f, 1.0f, 2.0f, 4.0f};
    uint8_t qb[16], qs;
    float back[32];
    gpt_mxfp4_quantize(v, 1, qb, &qs);
    gpt_mxfp4_dequant(qb, &qs, 1, back);
    ok(qs == 127 && memcmp(back, want, sizeof want) == 0, "quantize rounds to nearest, ties to even, saturates at 6");
    free(b), free(s), free(b2), free(s2), free(w), free(w2);
    return done_testing();
}
