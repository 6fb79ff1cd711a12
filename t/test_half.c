/* bf16 / fp16 rounding (lib/half.h) and the CPU backend's mixed-precision GEMM against torch
 * (t/data/half/round.txt, made by scripts/make-half-fixture.py: x.to(bfloat16 / float16) and a
 * float64 product of torch-rounded operands). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "half.h"
#include "tap.h"

static float f32(unsigned b)
{
    float f;
    memcpy(&f, &b, 4);
    return f;
}

static unsigned bits(float f)
{
    unsigned b;
    memcpy(&b, &f, 4);
    return b;
}

static int same(float got, float want) { return isnan(want) ? isnan(got) : bits(got) == bits(want); }

/* C (M x N) from be->gemm with A, B stored transposed or not inside wider buffers. */
static void run_gemm(gpt_backend *be, int ta, int tb, int M, int N, int K, const float *A, const float *B, float *C)
{
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5;
    float *As = calloc((size_t)(ta ? K : M) * lda, sizeof *As), *Bs = calloc((size_t)(tb ? N : K) * ldb, sizeof *Bs);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) As[ta ? (size_t)k * lda + i : (size_t)i * lda + k] = A[i * K + k];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) Bs[tb ? (size_t)j * ldb + k : (size_t)k * ldb + j] = B[k * N + j];
    be->gemm(be, ta, tb, M, N, K, 1.0f, As, lda, Bs, ldb, 0.0f, C, N);
    free(As);
    free(Bs);
}

int main(void)
{
    const char *path = "t/data/half/round.txt";
    FILE *f = fopen(path, "r");
    if (!f) skip_all("cannot open t/data/half/round.txt (run from the repository root)");
    int nv = 0, badb = 0, badh = 0, M = 0, N = 0, K = 0;
    float *A = NULL, *B = NULL;
    double *ref[3] = {0};
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        unsigned x, b, h;
        if (sscanf(line, "v %x %x %x", &x, &b, &h) == 3) {
            nv++;
            if (!same(gpt_round_bf16(f32(x)), f32(b)) && badb++ < 5)
                diag("bf16(%08x) = %08x, torch %08x", x, bits(gpt_round_bf16(f32(x))), b);
            if (!same(gpt_round_fp16(f32(x)), f32(h)) && badh++ < 5)
                diag("fp16(%08x) = %08x, torch %08x", x, bits(gpt_round_fp16(f32(x))), h);
        } else if (sscanf(line, "gemm %d %d %d", &M, &N, &K) == 3) {
            A = malloc((size_t)M * K * sizeof *A);
            B = malloc((size_t)K * N * sizeof *B);
            for (int i = 0; i < 3; i++) ref[i] = malloc((size_t)M * N * sizeof *ref[i]);
        } else if (A && (line[0] == 'a' || line[0] == 'b') && line[1] == ' ') {
            float *dst = line[0] == 'a' ? A : B;
            int n = line[0] == 'a' ? M * K : K * N;
            char *p = line + 2;
            for (int i = 0; i < n; i++) dst[i] = f32((unsigned)strtoul(p, &p, 16));
        } else if (A && line[0] == 'c') {
            int which = strncmp(line, "c32 ", 4) == 0 ? 0 : strncmp(line, "cbf16 ", 6) == 0 ? 1 : 2;
            char *p = strchr(line, ' ');
            for (int i = 0; i < M * N; i++) ref[which][i] = strtod(p, &p);
        }
    }
    fclose(f);
    ok(nv > 500, "%d values in the fixture", nv);
    ok(badb == 0, "bf16 rounding equals torch's on all %d values (%d differ)", nv, badb);
    ok(badh == 0, "fp16 rounding equals torch's on all %d values, overflow and subnormals included (%d differ)", nv,
       badh);
    if (!A || !ref[2]) {
        ok(0, "fixture has a gemm section");
        return done_testing();
    }

    gpt_backend *be = gpt_backend_cpu();
    float *C = malloc((size_t)M * N * sizeof *C), *C32 = malloc((size_t)M * N * sizeof *C32);
    static const char *const names[3] = {"fp32", "bf16", "fp16"};
    for (int prec = 0; prec < 3; prec++) {
        be->gemm_prec = prec;
        for (int t = 0; t < 4; t++) {
            int ta = t & 1, tb = t >> 1;
            run_gemm(be, ta, tb, M, N, K, A, B, C);
            /* fp32 sums of K products: a few ulps of the sum of |products| */
            double worst = 0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double mag = 0;
                    for (int k = 0; k < K; k++) mag += fabs((double)A[i * K + k] * B[k * N + j]);
                    double e = fabs(C[i * N + j] - ref[prec][i * N + j]) / (mag * 0x1p-24 * K);
                    if (e > worst) worst = e;
                }
            ok(worst <= 1.0, "gemm %s ta=%d tb=%d equals torch's rounded-operand product within K ulps (%.3f of the bound)",
               names[prec], ta, tb, worst);
            if (prec == 0 && t == 0) memcpy(C32, C, (size_t)M * N * sizeof *C);
        }
        if (prec) {
            int differ = 0;
            for (int i = 0; i < M * N; i++) differ += C[i] != C32[i];
            ok(differ > M * N / 2, "gemm %s differs from fp32 (%d of %d entries): the operands were rounded",
               names[prec], differ, M * N);
        }
    }
    /* A and B left untouched (they are the master copies) */
    be->gemm_prec = GPT_GEMM_FP16;
    float big[4] = {70000.0f, 1.0f, 1.0f, 1.0f}, one[4] = {1.0f, 0.0f, 0.0f, 1.0f}, out[4];
    be->gemm(be, 0, 0, 2, 2, 2, 1.0f, big, 2, one, 2, 0.0f, out, 2);
    ok(isinf(out[0]) && big[0] == 70000.0f, "fp16: an operand beyond 65504 overflows to inf (what the loss scaler sees); the input stays %g",
       big[0]);
    be->destroy(be);
    free(C);
    free(C32);
    free(A);
    free(B);
    for (int i = 0; i < 3; i++) free(ref[i]);
    return done_testing();
}
