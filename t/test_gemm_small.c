/* The few-row fp32 GEMM (lib/gemm_small.c) that decoding uses, against a double-precision product:
 * every row count 1..16, column counts on and off its 64- and 4-column blocks, both layouts of B,
 * alpha/beta, padded leading dimensions; the same bits for 1 and 3 threads. Skips without AVX-512. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_small.h"
#include "tap.h"

static unsigned long long rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { return tap_frand(&rng); }

int main(void)
{
    if (!gpt_gemm_small_available()) skip_all("no AVX-512 on this CPU: OpenBLAS sgemm runs instead");
    static const int Ns[] = {1, 3, 4, 63, 64, 65, 130, 200};
    static const int Ks[] = {1, 15, 16, 17, 100};
    double worst = 0;
    int cases = 0, untouched = 1;
    for (int M = 1; M <= GPT_GEMM_SMALL_MAX_M; M++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++)
                for (int tb = 0; tb < 2; tb++) {
                    int N = Ns[ni], K = Ks[ki], lda = K + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
                    float alpha = (M & 1) ? 1.0f : -0.5f, beta = (N & 1) ? 0.0f : 0.25f;
                    float *A = malloc((size_t)M * lda * sizeof *A), *B = malloc((size_t)(tb ? N : K) * ldb * sizeof *B);
                    float *C = malloc((size_t)M * ldc * sizeof *C), *C0 = malloc((size_t)M * ldc * sizeof *C0);
                    for (int i = 0; i < M * lda; i++) A[i] = frand();
                    for (int i = 0; i < (tb ? N : K) * ldb; i++) B[i] = frand();
                    for (int i = 0; i < M * ldc; i++) C0[i] = C[i] = frand();
                    gpt_gemm_small(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            double s = 0, mag = 0;
                            for (int k = 0; k < K; k++) {
                                double x = (double)A[m * lda + k] * (tb ? B[n * ldb + k] : B[k * ldb + n]);
                                s += x;
                                mag += fabs(x);
                            }
                            double ref = alpha * s + (beta == 0 ? 0 : beta * (double)C0[m * ldc + n]);
                            double bound = (fabs(alpha) * mag * (K + 2) + fabs(beta * C0[m * ldc + n]) * 2) * 0x1p-24 + 1e-30;
                            double e = fabs(C[m * ldc + n] - ref) / bound;
                            if (!(e <= worst)) worst = e;
                        }
                        for (int n = N; n < ldc; n++) untouched &= C[m * ldc + n] == C0[m * ldc + n];
                    }
                    cases++;
                    free(A), free(B), free(C), free(C0);
                }
    ok(worst <= 1 && untouched, "%d shapes (M 1..16, both layouts of B) equal the double product within K ulps (%.3f "
                                "of the bound); nothing written past N", cases, worst);

    /* same bits for any thread count: a decode step is as deterministic as the rest */
    for (int tb = 0; tb < 2; tb++) {
        int M = 16, N = 4096 + 64 * 3 + 5, K = 300;
        float *A = malloc((size_t)M * K * sizeof *A), *B = malloc((size_t)N * K * sizeof *B);
        float *c1 = calloc((size_t)M * N, sizeof *c1), *c3 = calloc((size_t)M * N, sizeof *c3);
        for (int i = 0; i < M * K; i++) A[i] = frand();
        for (int i = 0; i < N * K; i++) B[i] = frand();
        omp_set_num_threads(1);
        gpt_gemm_small(tb, M, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f, c1, N);
        omp_set_num_threads(3);
        gpt_gemm_small(tb, M, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f, c3, N);
        ok(memcmp(c1, c3, (size_t)M * N * sizeof *c1) == 0, "tb=%d: 1 and 3 threads give the same bits (16x%dx%d)", tb,
           N, K);
        free(A), free(B), free(c1), free(c3);
    }
    return done_testing();
}
