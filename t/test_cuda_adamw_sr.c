/* The CUDA backend's adamw_sr op: AdamW with a stochastically rounded bf16 copy of the parameters.
 * The fp32 master and the moments equal the CPU backend's adamw bit for bit (gpt_adamw_update is
 * the definition). Each copy is one of the two bf16 values around its fp32 value (its truncation
 * or the next one up in magnitude; exact when the value is a bf16). Unbiased: with the master held
 * fixed (zero step), the mean of many copies under different seeds comes within a few standard
 * errors of the fp32 value, element by element and on average, where round-to-nearest would be
 * off by up to half a step. The same seed gives the same copy. Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "tap.h"

static uint64_t st = 0xD1B54A32D192ED03ull;
static double urand(void)
{
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return (double)(st >> 11) / 9007199254740992.0;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bf16_val(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One AdamW step on both backends from the same state: master and moments bit-exact; copies
 * bracket the master. */
static void t_step(gpt_backend *cpu, gpt_backend *gpu, size_t n, int steps)
{
    size_t fb = n * sizeof(float);
    float *p = cpu->alloc(cpu, fb), *g = cpu->alloc(cpu, fb), *m = cpu->alloc(cpu, fb), *v = cpu->alloc(cpu, fb);
    float *pd = gpu->alloc(gpu, fb), *gd = gpu->alloc(gpu, fb), *md = gpu->alloc(gpu, fb), *vd = gpu->alloc(gpu, fb);
    uint16_t *bd = gpu->alloc(gpu, n * sizeof(uint16_t)), *b = malloc(n * sizeof(uint16_t));
    float *hp = malloc(fb), *hm = malloc(fb), *hv = malloc(fb);
    for (size_t i = 0; i < n; i++) p[i] = (float)((urand() - 0.5) * 0.2), m[i] = v[i] = 0;
    p[0] = 1.0f, p[1] = -0.0f; /* a bf16 value; a signed zero */
    gpu->to_device(gpu, pd, p, fb), gpu->to_device(gpu, md, m, fb), gpu->to_device(gpu, vd, v, fb);
    int exact = 1, bracket = 1;
    for (int s = 1; s <= steps; s++) {
        for (size_t i = 0; i < n; i++) g[i] = (float)((urand() - 0.5) * (i % 7 == 0 ? 100 : 1));
        gpu->to_device(gpu, gd, g, fb);
        double b1 = 0.9, b2 = 0.95, lr = 1e-3, wd = 0.1;
        gpt_adamw_args a = {.grad_scale = 0.5f, .decay = (float)(1 - lr * wd), .step_size = (float)(lr / (1 - pow(b1, s))),
                            .bc2_sqrt = (float)sqrt(1 - pow(b2, s)), .w1 = (float)(1 - b1), .b2 = (float)b2,
                            .w2 = (float)(1 - b2), .eps = 1e-8f};
        cpu->adamw(cpu, p, g, m, v, n, &a);
        gpu->adamw_sr(gpu, pd, gd, md, vd, n, &a, bd, 1000 + (uint64_t)s);
        gpu->to_host(gpu, hp, pd, fb), gpu->to_host(gpu, hm, md, fb), gpu->to_host(gpu, hv, vd, fb);
        gpu->to_host(gpu, b, bd, n * sizeof(uint16_t));
        exact &= !memcmp(hp, p, fb) && !memcmp(hm, m, fb) && !memcmp(hv, v, fb);
        for (size_t i = 0; i < n; i++) {
            uint32_t t = bits(hp[i]) >> 16, lo = bits(hp[i]) & 0xffffu;
            bracket &= b[i] == t || (lo != 0 && b[i] == t + 1);
        }
    }
    ok(exact, "adamw_sr n=%zu, %d steps: the fp32 master, m and v equal the cpu's adamw bit for bit", n, steps);
    ok(bracket, "adamw_sr n=%zu: every bf16 copy is the master's truncation or the next bf16 up (exact when it is one)",
       n);
    cpu->free(cpu, p), cpu->free(cpu, g), cpu->free(cpu, m), cpu->free(cpu, v);
    gpu->free(gpu, pd), gpu->free(gpu, gd), gpu->free(gpu, md), gpu->free(gpu, vd), gpu->free(gpu, bd);
    free(b), free(hp), free(hm), free(hv);
}

/* Unbiasedness with the master held still: g = m = v = 0, step 0, decay 1 leaves p as it is. */
static void t_unbiased(gpt_backend *gpu, int rounds)
{
    enum { N = 4096 };
    static float p[N];
    static double sum[N];
    static uint16_t b[N], b2[N];
    for (int i = 0; i < N; i++) {
        /* fractions of a bf16 step spread over [0, 1), magnitudes and signs mixed */
        double base = (1.0 + (double)(i % 128) / 128.0) * pow(2.0, (double)(i % 11) - 5) * (i % 2 ? -1 : 1);
        uint32_t u = bits((float)base) & 0xffff0000u;
        u |= (uint32_t)((i * 2654435761u) >> 16) & 0xffffu;
        memcpy(&p[i], &u, 4);
        sum[i] = 0;
    }
    size_t fb = N * sizeof(float);
    float *pd = gpu->alloc(gpu, fb), *zd = gpu->alloc(gpu, fb), *md = gpu->alloc(gpu, fb), *vd = gpu->alloc(gpu, fb);
    uint16_t *bd = gpu->alloc(gpu, N * sizeof(uint16_t));
    gpu->to_device(gpu, pd, p, fb);
    gpt_adamw_args a = {.grad_scale = 1, .decay = 1, .step_size = 0, .bc2_sqrt = 1, .w1 = 0.1f, .b2 = 0.95f,
                        .w2 = 0.05f, .eps = 1e-8f};
    int same_seed = 1, differ = 0;
    for (int r = 0; r < rounds; r++) {
        gpu->adamw_sr(gpu, pd, zd, md, vd, N, &a, bd, 77 + (uint64_t)r * 7919);
        gpu->to_host(gpu, b, bd, sizeof b);
        for (int i = 0; i < N; i++) sum[i] += bf16_val(b[i]);
        if (r < 2) {
            gpu->adamw_sr(gpu, pd, zd, md, vd, N, &a, bd, 77 + (uint64_t)r * 7919);
            gpu->to_host(gpu, b2, bd, sizeof b2);
            same_seed &= !memcmp(b, b2, sizeof b);
        }
    }
    /* a different seed gives a different copy somewhere */
    gpu->adamw_sr(gpu, pd, zd, md, vd, N, &a, bd, 1);
    gpu->to_host(gpu, b, bd, sizeof b);
    gpu->adamw_sr(gpu, pd, zd, md, vd, N, &a, bd, 2);
    gpu->to_host(gpu, b2, bd, sizeof b2);
    differ = memcmp(b, b2, sizeof b) != 0;
    float *hp = malloc(fb);
    gpu->to_host(gpu, hp, pd, fb);
    ok(!memcmp(hp, p, fb), "adamw_sr with a zero step leaves the fp32 master as it was");
    free(hp);
    double worst_z = 0, mean_z = 0, rne_worst = 0;
    int worst_i = 0;
    for (int i = 0; i < N; i++) {
        uint32_t u = bits(p[i]), t = u & 0xffff0000u;
        float lo, hi;
        uint32_t tu = t + 0x10000u;
        memcpy(&lo, &t, 4), memcpy(&hi, &tu, 4);
        double step = fabs((double)hi - lo), f = fabs((double)p[i] - lo) / step;
        double se = step * sqrt(f * (1 - f) / rounds) + 1e-300;
        double mean = sum[i] / rounds, z = (mean - p[i]) / se;
        /* z-scores where the count of round-ups is in its Gaussian regime */
        if (rounds * f * (1 - f) >= 10 && fabs(z) > worst_z) worst_z = fabs(z), worst_i = i;
        mean_z += (mean - p[i]) / (step * 0.5 / sqrt((double)rounds));
        /* round-to-nearest's error in the same units: what a biased rounding would show */
        double rne = f < 0.5 ? lo : hi;
        double zr = fabs(rne - p[i]) / se;
        if (f > 0.05 && f < 0.95) rne_worst = zr > rne_worst ? zr : rne_worst;
    }
    mean_z /= sqrt((double)N); /* ~N(0, <= 1) when unbiased */
    ok(worst_z < 5.5 && fabs(mean_z) < 5, "adamw_sr, %d rounds of %d values: the mean copy is the fp32 value "
       "(worst element %.2f standard errors at %d, average %.2f; round-to-nearest would be %.0f)", rounds, N, worst_z,
       worst_i, mean_z, rne_worst);
    ok(same_seed && differ, "adamw_sr: the same seed gives the same copy, another seed another one");
    gpu->free(gpu, pd), gpu->free(gpu, zd), gpu->free(gpu, md), gpu->free(gpu, vd), gpu->free(gpu, bd);
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
    gpt_backend *cpu = gpt_backend_cpu();
    const char *q = getenv("GPT_CUDA_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0") != 0;
    if (ok(gpu->adamw_sr != NULL, "the cuda backend has adamw_sr")) {
        t_step(cpu, gpu, 10007, 3);
        t_step(cpu, gpu, 1, 1);
        if (!quick) t_unbiased(gpu, 2000); /* statistics: not under compute-sanitizer */
    }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return done_testing();
}
