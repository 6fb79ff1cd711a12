/* Mixed-precision GEMM on the CUDA backend (be->gemm_prec bf16 / fp16: tensor cores) against the
 * CPU backend's (the same operands rounded by lib/half.h, which t/test_half.c checks against torch):
 * both sum exact products of identically rounded operands in fp32, so they agree to within K ulps
 * of the sum of |products|; fp16 overflow gives inf on both. Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "half.h"
#include "tap.h"

static uint64_t st = 0x9E3779B97F4A7C15ull;
static double urand(void)
{
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return (double)(st >> 11) / 9007199254740992.0;
}

static void check(gpt_backend *cpu, gpt_backend *gpu, int prec, int ta, int tb, int M, int N, int K)
{
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *Cc = malloc(nc * sizeof *Cc),
          *Cg = malloc(nc * sizeof *Cg);
    for (size_t i = 0; i < na; i++) A[i] = (float)((urand() * 2 - 1) * 3);
    for (size_t i = 0; i < nb; i++) B[i] = (float)((urand() * 2 - 1) * 50);
    for (size_t i = 0; i < nc; i++) Cc[i] = Cg[i] = (float)(urand() - 0.5);
    float *dA = gpu->alloc(gpu, na * sizeof *A), *dB = gpu->alloc(gpu, nb * sizeof *B), *dC = gpu->alloc(gpu, nc * sizeof *Cg);
    gpu->to_device(gpu, dA, A, na * sizeof *A);
    gpu->to_device(gpu, dB, B, nb * sizeof *B);
    gpu->to_device(gpu, dC, Cg, nc * sizeof *Cg);
    cpu->gemm_prec = gpu->gemm_prec = prec;
    const float beta = 0.5f;
    cpu->gemm(cpu, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, Cc, ldc);
    gpu->gemm(gpu, ta, tb, M, N, K, 1.0f, dA, lda, dB, ldb, beta, dC, ldc);
    gpu->to_host(gpu, Cg, dC, nc * sizeof *Cg);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double mag = fabs(beta * 0.5);
            for (int k = 0; k < K; k++) {
                float a = A[ta ? (size_t)k * lda + i : (size_t)i * lda + k], b = B[tb ? (size_t)j * ldb + k : (size_t)k * ldb + j];
                mag += fabs((double)a * b);
            }
            double e = fabs((double)Cc[(size_t)i * ldc + j] - Cg[(size_t)i * ldc + j]) / (mag * 0x1p-24 * (K + 2));
            if (e > worst) worst = e;
        }
    static const char *const names[3] = {"fp32", "bf16", "fp16"};
    ok(worst <= 2.0, "gemm %s ta=%d tb=%d %dx%dx%d: cuda equals cpu within K ulps (%.3f of the bound)", names[prec], ta,
       tb, M, N, K, worst);
    free(A), free(B), free(Cc), free(Cg);
    gpu->free(gpu, dA), gpu->free(gpu, dB), gpu->free(gpu, dC);
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
    for (int prec = GPT_GEMM_BF16; prec <= GPT_GEMM_FP16; prec++)
        for (int t = 0; t < 4; t++) check(cpu, gpu, prec, t & 1, t >> 1, 37, 45, 129);
    check(cpu, gpu, GPT_GEMM_BF16, 0, 1, 256, 768, 768);
    check(cpu, gpu, GPT_GEMM_FP16, 1, 0, 768, 768, 256);
    /* fp16 overflow: what the dynamic loss scaler detects */
    gpu->gemm_prec = GPT_GEMM_FP16;
    float h[4] = {70000.0f, 1.0f, 1.0f, 1.0f}, id[4] = {1, 0, 0, 1}, out[4];
    float *dh = gpu->alloc(gpu, sizeof h), *di = gpu->alloc(gpu, sizeof id), *dout = gpu->alloc(gpu, sizeof out);
    gpu->to_device(gpu, dh, h, sizeof h);
    gpu->to_device(gpu, di, id, sizeof id);
    gpu->gemm(gpu, 0, 0, 2, 2, 2, 1.0f, dh, 2, di, 2, 0.0f, dout, 2);
    gpu->to_host(gpu, out, dout, sizeof out);
    ok(isinf(out[0]) && out[3] == 1.0f, "fp16 gemm on the device: an operand beyond 65504 gives inf (%g), the rest is exact (%g)",
       out[0], out[3]);
    gpu->free(gpu, dh), gpu->free(gpu, di), gpu->free(gpu, dout);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return done_testing();
}
