/* MXFP4 dequantization against the published e2m1 table, the numpy transcription of transformers'
 * algorithm (t/data/st, scripts/make-st-fixtures.py) and, when present, transformers' own output
 * (t/data/ref/mxfp4, written by scripts/make-reference.py with torch + transformers). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mxfp4.h"
#include "safetensors.h"
#include "tap.h"

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The OCP MX v1.0 FP4 E2M1 table, written out as published (section 5.3.3). */
static const float published[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* The same values from the bit layout: sign bit 3, exponent bits 2-1 (bias 1), mantissa bit 0. */
static double e2m1(int c)
{
    int s = c >> 3, e = (c >> 1) & 3, m = c & 1;
    double v = e == 0 ? m * 0.5 : (1.0 + m * 0.5) * ldexp(1.0, e - 1);
    return s ? -v : v;
}

static int same_bits(float a, float b)
{
    return f2u(a) == f2u(b) || (isnan(a) && isnan(b));
}

static void check_table(void)
{
    int bad = 0;
    for (int c = 0; c < 16; c++)
        if (f2u(gpt_fp4_values[c]) != f2u(published[c]) || f2u((float)e2m1(c)) != f2u(published[c])) bad++;
    ok(bad == 0, "code table matches the published e2m1 table and the bit layout (signed zero included)");

    bad = 0;
    int checked = 0;
    for (int s = 0; s < 256; s++) {
        for (int lo = 0; lo < 16; lo++) {
            /* Byte i: low nibble lo, high nibble (lo + i + 1) % 16, so both nibbles and positions vary. */
            uint8_t blk[16], sc = (uint8_t)s;
            for (int i = 0; i < 16; i++) blk[i] = (uint8_t)(lo | ((lo + i + 1) % 16) << 4);
            float out[32];
            gpt_mxfp4_dequant(blk, &sc, 1, out);
            for (int i = 0; i < 32; i++) {
                int code = i % 2 == 0 ? lo : (lo + i / 2 + 1) % 16;
                /* Exact in double, then one rounding to float: overflow -> inf, subnormal results exact.
                 * s = 255 follows the same ldexp rule (0.5 * 2^128 = 2^127 is finite). */
                float want = (float)ldexp(e2m1(code), s - 127);
                if (!same_bits(out[i], want)) {
                    if (bad++ < 5) diag("scale %d code %d pos %d: got %a, want %a", s, code, i, out[i], want);
                }
                checked++;
            }
        }
    }
    ok(bad == 0, "all 16 codes x all 256 scales x both nibble positions (%d values) as 2^(s-127) * e2m1 "
       "(s=0 subnormal, s=254 overflow to inf, s=255 plain ldexp)", checked);

    uint8_t blk[16] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x0f, 0, 0, 0, 0, 0, 0, 0xf1};
    uint8_t sc = 128;
    float out[32];
    gpt_mxfp4_dequant(blk, &sc, 1, out);
    ok(out[0] == 0.0f && out[1] == 1.0f && out[2] == 2.0f && out[3] == 3.0f && out[14] == -8.0f &&
           out[15] == -12.0f && out[16] == -12.0f && out[17] == 0.0f && out[30] == 1.0f && out[31] == -12.0f,
       "low nibble is the even element, high nibble the odd one");
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void check_dot(void)
{
    enum { NB = 90 }; /* a gpt-oss row: 2880 inputs */
    uint8_t *blk = malloc(16 * NB), sc[NB];
    float *x = malloc(32 * NB * sizeof *x), *w = malloc(32 * NB * sizeof *w);
    int bad = 0;
    for (int trial = 0; trial < 50; trial++) {
        size_t nb = trial == 0 ? 0 : trial == 1 ? 1 : NB - (size_t)(rnd() % 10);
        for (size_t i = 0; i < 16 * nb; i++) blk[i] = (uint8_t)rnd();
        for (size_t i = 0; i < nb; i++) sc[i] = (uint8_t)(110 + rnd() % 30);
        for (size_t i = 0; i < 32 * nb; i++) x[i] = ((float)(rnd() % 20001) - 10000.0f) / 5000.0f;
        gpt_mxfp4_dequant(blk, sc, nb, w);
        double ref = 0, mag = 0;
        for (size_t i = 0; i < 32 * nb; i++) {
            ref += (double)w[i] * x[i];
            mag += fabs((double)w[i] * x[i]);
        }
        float got = gpt_mxfp4_dot(blk, sc, nb, x);
        if (fabs(got - ref) > 1e-5 * mag + 1e-30) {
            if (bad++ < 3) diag("trial %d: dot %g, dequant+dot %g (magnitude %g)", trial, got, ref, mag);
        }
    }
    ok(bad == 0, "fused dot matches dequantize-then-dot (relative 1e-5 of sum |w x|) over 50 random rows");
    free(blk);
    free(x);
    free(w);
}

static void check_shaped(void)
{
    gpt_err err = {{0}};
    uint8_t blk[2 * 3 * 16] = {0}, sc[6] = {0};
    float out[2 * 3 * 32];
    uint64_t bs[3] = {2, 3, 16}, ss[2] = {2, 3};
    ok(gpt_mxfp4_dequant_shaped("w", blk, 3, bs, sc, 2, ss, out, 192, &err) == 0, "[2,3,16] + [2,3] -> 192 values");
    uint64_t bs2[3] = {2, 3, 8};
    ok(gpt_mxfp4_dequant_shaped("w", blk, 3, bs2, sc, 2, ss, out, 96, &err) == -1 && strstr(err.msg, "'w'") &&
           strstr(err.msg, "16"), "last dim not 16: %s", err.msg);
    uint64_t ss2[2] = {3, 2};
    ok(gpt_mxfp4_dequant_shaped("w", blk, 3, bs, sc, 2, ss2, out, 192, &err) == -1 && strstr(err.msg, "dim 0"),
       "scale dims differ: %s", err.msg);
    ok(gpt_mxfp4_dequant_shaped("w", blk, 3, bs, sc, 3, bs, out, 192, &err) == -1 && strstr(err.msg, "dims"),
       "scale rank wrong: %s", err.msg);
    ok(gpt_mxfp4_dequant_shaped("w", blk, 3, bs, sc, 2, ss, out, 191, &err) == -1 && strstr(err.msg, "192"),
       "output size wrong: %s", err.msg);
    ok(gpt_mxfp4_dequant_shaped("w", blk, 1, bs + 2, sc, 0, ss, out, 32, &err) == -1, "blocks without a G dim");
}

/* The numpy transcription of transformers' dequant (t/data/st/expected.txt "mxfp4" record). */
static void check_numpy_fixture(void)
{
    gpt_err err = {{0}};
    gpt_st_file *f = gpt_st_open("t/data/st/mxfp4.safetensors", &err);
    FILE *ef = fopen("t/data/st/expected.txt", "r");
    if (!ok(f && ef, "open t/data/st mxfp4 fixture%s%s", f ? "" : ": ", f ? "" : err.msg)) {
        gpt_st_close(f);
        if (ef) fclose(ef);
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    while (getline(&line, &cap, ef) > 0) {
        if (strncmp(line, "mxfp4 ", 6) != 0) continue;
        char bn[256], sn[256];
        size_t n;
        int used = 0;
        sscanf(line + 6, "%255s %255s %zu%n", bn, sn, &n, &used);
        const gpt_st_tensor *b = gpt_st_find(f, bn), *s = gpt_st_find(f, sn);
        float *out = malloc(n * sizeof *out);
        uint64_t oshape[GPT_ST_MAX_DIMS];
        int ond = 0;
        int rc = b && s ? gpt_mxfp4_out_shape(b, s, oshape, &ond, &err) : -1;
        ok(rc == 0 && ond == 3 && oshape[0] == 2 && oshape[1] == 3 && oshape[2] == 64, "output shape [2, 3, 64]");
        rc = rc == 0 ? gpt_mxfp4_dequant_st(b, s, out, n, &err) : -1;
        int bad = rc != 0;
        char *p = line + 6 + used;
        for (size_t i = 0; i < n && !bad; i++) {
            uint32_t want = (uint32_t)strtoul(p, &p, 16);
            if (!same_bits(out[i], u2f(want))) {
                diag("%s[%zu] = %08x, want %08x", bn, i, f2u(out[i]), want);
                bad = 1;
            }
        }
        ok(!bad, "%s: %zu values match the numpy transcription of transformers bit for bit", bn, n);
        ok(gpt_mxfp4_dequant_st(s, b, out, n, &err) == -1, "swapped blocks/scales rejected: %s", err.msg);
        free(out);
        found++;
    }
    ok(found == 1, "the mxfp4 record was present");
    free(line);
    fclose(ef);
    gpt_st_close(f);
}

/* transformers' own output, from scripts/make-reference.py (torch): t/data/ref/mxfp4. */
static void check_hf_reference(void)
{
    const char *dir = "t/data/ref/mxfp4";
    struct stat st;
    if (stat("t/data/ref/mxfp4/quantized.safetensors", &st) != 0) {
        ok(1, "# SKIP %s not present (written by scripts/make-reference.py)", dir);
        return;
    }
    gpt_err err = {{0}};
    gpt_st_file *q = gpt_st_open("t/data/ref/mxfp4/quantized.safetensors", &err);
    gpt_st_file *e = q ? gpt_st_open("t/data/ref/mxfp4/expected.safetensors", &err) : NULL;
    if (!ok(q && e, "open %s: %s", dir, q && e ? "" : err.msg)) {
        gpt_st_close(q);
        return;
    }
    size_t cases = 0;
    for (size_t k = 0; k < gpt_st_count(e); k++) {
        const gpt_st_tensor *rows = gpt_st_tensor_at(e, k);
        size_t L = strlen(rows->name);
        if (L < 5 || strcmp(rows->name + L - 5, ".rows") != 0) continue;
        char base[256], bn[300], sn[300];
        snprintf(base, sizeof base, "%.*s", (int)(L - 5), rows->name);
        snprintf(bn, sizeof bn, "%s_blocks", base);
        snprintf(sn, sizeof sn, "%s_scales", base);
        const gpt_st_tensor *b = gpt_st_find(q, bn), *s = gpt_st_find(q, sn), *hf = gpt_st_find(e, base);
        if (!ok(b && s && hf, "%s: blocks, scales and HF layout present", base)) continue;
        size_t n = (size_t)rows->numel;
        float *out = malloc(n * sizeof *out), *want = malloc(n * sizeof *want), *wt = malloc(n * sizeof *wt);
        int rc = gpt_mxfp4_dequant_st(b, s, out, n, &err);
        rc |= gpt_st_read_f32(rows, want, n, &err);
        rc |= gpt_st_read_f32(hf, wt, n, &err);
        size_t bad = 0;
        for (size_t i = 0; i < n && rc == 0; i++)
            if (f2u(out[i]) != f2u(want[i])) {
                if (bad++ < 3) diag("%s[%zu]: %a, transformers %a", base, i, out[i], want[i]);
            }
        ok(rc == 0 && bad == 0, "%s: %zu values bitwise equal to transformers' dequant (row layout)%s%s", base, n,
           rc ? ": " : "", rc ? err.msg : "");
        /* HF layout is (E, in, out): the transpose of the last two axes of ours. */
        uint64_t E = rows->shape[0], R = rows->shape[1], C = rows->shape[2];
        bad = rows->ndim != 3 || hf->ndim != 3 || hf->shape[1] != C || hf->shape[2] != R;
        for (uint64_t x = 0; x < E && !bad; x++)
            for (uint64_t r = 0; r < R; r++)
                for (uint64_t c = 0; c < C; c++)
                    if (f2u(out[(x * R + r) * C + c]) != f2u(wt[(x * C + c) * R + r])) bad++;
        ok(rc == 0 && !bad, "%s: equals the HF (E, in, out) tensor transposed", base);
        /* The fused dot on finite rows, against transformers' values. */
        size_t nb = (size_t)(C / 32), rows_ok = 0, rows_n = 0;
        float *x = malloc(C * sizeof *x);
        for (uint64_t i = 0; i < C; i++) x[i] = (float)((int)(i * 7 % 13) - 6) / 4.0f;
        for (uint64_t r = 0; r < E * R && rc == 0; r++) {
            double ref = 0, mag = 0;
            for (uint64_t c = 0; c < C; c++) {
                ref += (double)want[r * C + c] * x[c];
                mag += fabs((double)want[r * C + c] * x[c]);
            }
            if (!isfinite(mag)) continue;
            rows_n++;
            float got = gpt_mxfp4_dot(b->data + r * nb * 16, s->data + r * nb, nb, x);
            rows_ok += fabs(got - ref) <= 1e-5 * mag + 1e-38;
        }
        ok(rows_n > 0 && rows_ok == rows_n, "%s: fused dot matches on %zu/%zu finite rows", base, rows_ok, rows_n);
        free(x);
        free(out);
        free(want);
        free(wt);
        cases++;
    }
    ok(cases >= 3, "%zu reference cases checked", cases);
    gpt_st_close(q);
    gpt_st_close(e);
}

int main(void)
{
    check_table();
    check_dot();
    check_shaped();
    check_numpy_fixture();
    check_hf_reference();
    return done_testing();
}
