/* The AMX bf16 GEMM (lib/gemm_amx.c) against a double-precision product of the bf16-rounded
 * operands (half.h's rounding, which t/test_half.c checks against torch), over shapes that cross
 * every tile edge, all four transpositions, alpha/beta, padded leading dimensions, NaN and inf;
 * and the same bits for 1 and 2 threads. Skips where the CPU has no AMX. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "gemm_amx.h"
#include "half.h"
#include "tap.h"

static unsigned long long rng = 88172645463325252ull;
static float frand(void) { return tap_frand(&rng); }

typedef struct {
    int M, N, K, ta, tb, lda, ldb, ldc;
    float *A, *B, *C;
} problem;

static problem make(int M, int N, int K, int ta, int tb)
{
    problem p = {M, N, K, ta, tb, (ta ? M : K) + 3, (tb ? K : N) + 1, N + 2, NULL, NULL, NULL};
    size_t na = (size_t)(ta ? K : M) * p.lda, nb = (size_t)(tb ? N : K) * p.ldb;
    p.A = malloc(na * sizeof *p.A);
    p.B = malloc(nb * sizeof *p.B);
    p.C = malloc((size_t)M * p.ldc * sizeof *p.C);
    for (size_t i = 0; i < na; i++) p.A[i] = frand() * 4;
    for (size_t i = 0; i < nb; i++) p.B[i] = frand();
    for (size_t i = 0; i < (size_t)M * p.ldc; i++) p.C[i] = frand();
    return p;
}

static float at_a(const problem *p, int m, int k) { return p->ta ? p->A[(size_t)k * p->lda + m] : p->A[(size_t)m * p->lda + k]; }
static float at_b(const problem *p, int k, int n) { return p->tb ? p->B[(size_t)n * p->ldb + k] : p->B[(size_t)k * p->ldb + n]; }

/* Worst |C - ref| over the fp32 bound K ulps of sum |products| (plus beta's term); 1 = at the bound. */
static double check(const problem *p, const float *C0, float alpha, float beta)
{
    double worst = 0;
    for (int m = 0; m < p->M; m++)
        for (int n = 0; n < p->N; n++) {
            double s = 0, mag = 0;
            for (int k = 0; k < p->K; k++) {
                double x = (double)gpt_round_bf16(at_a(p, m, k)) * gpt_round_bf16(at_b(p, k, n));
                s += x;
                mag += fabs(x);
            }
            double c0 = C0[(size_t)m * p->ldc + n];
            double ref = alpha * s + (beta == 0 ? 0 : beta * c0);
            double bound = (fabs(alpha) * mag * (p->K + 2) + fabs(beta * c0) * 2) * 0x1p-24 + 1e-30;
            double e = fabs(p->C[(size_t)m * p->ldc + n] - ref) / bound;
            if (!(e <= worst)) worst = e; /* NaN counts as worst */
        }
    return worst;
}

static void release(problem *p)
{
    free(p->A);
    free(p->B);
    free(p->C);
}

int main(void)
{
    if (!gpt_amx_available()) skip_all("this CPU (or kernel) has no AMX-BF16: the emulated path is what runs here");
    gpt_amx_ws ws = {0};

    static const int shapes[][3] = {{1, 1, 1},    {16, 16, 32},  {32, 32, 32},  {17, 33, 31},  {33, 15, 65},
                                    {5, 70, 100}, {64, 48, 300}, {100, 37, 33}, {31, 129, 64}, {70, 300, 17},
                                    {20, 40, 4200}, {40, 33, 8200}};
    int nshape = sizeof shapes / sizeof *shapes;
    double worst = 0;
    int cases = 0;
    for (int s = 0; s < nshape; s++)
        for (int t = 0; t < 4; t++) {
            problem p = make(shapes[s][0], shapes[s][1], shapes[s][2], t & 1, t >> 1);
            float *C0 = malloc((size_t)p.M * p.ldc * sizeof *C0);
            memcpy(C0, p.C, (size_t)p.M * p.ldc * sizeof *C0);
            float alpha = (s & 1) ? 0.5f : 1.0f, beta = (s % 3 == 0) ? 0.0f : 0.75f;
            gpt_gemm_bf16_amx(s & 1 ? &ws : NULL, p.ta, p.tb, p.M, p.N, p.K, alpha, p.A, p.lda, p.B, p.ldb, beta, p.C,
                              p.ldc);
            double e = check(&p, C0, alpha, beta);
            if (e > worst) worst = e;
            if (e > 1) diag("M=%d N=%d K=%d ta=%d tb=%d: %.3f of the bound", p.M, p.N, p.K, p.ta, p.tb, e);
            /* the padding between rows of C stays untouched */
            int pad_ok = 1;
            for (int m = 0; m < p.M; m++)
                for (int n = p.N; n < p.ldc; n++) pad_ok &= p.C[(size_t)m * p.ldc + n] == C0[(size_t)m * p.ldc + n];
            if (!pad_ok) diag("M=%d N=%d K=%d: wrote past N", p.M, p.N, p.K);
            worst = pad_ok ? worst : INFINITY;
            cases++;
            free(C0);
            release(&p);
        }
    ok(worst <= 1, "%d cases (shapes x 4 transpositions) equal the double product of bf16-rounded operands within K ulps "
                   "(%.3f of the bound); nothing written outside C", cases, worst);

    /* beta = 0 ignores NaN in C; NaN and inf operands propagate where they should */
    problem p = make(20, 20, 40, 0, 1);
    for (size_t i = 0; i < (size_t)p.M * p.ldc; i++) p.C[i] = NAN;
    p.A[3 * p.lda + 5] = NAN;
    p.B[7 * p.ldb + 9] = INFINITY;
    gpt_gemm_bf16_amx(&ws, 0, 1, p.M, p.N, p.K, 1.0f, p.A, p.lda, p.B, p.ldb, 0.0f, p.C, p.ldc);
    int nan_row = 1, inf_col = 1, clean = 1;
    for (int m = 0; m < p.M; m++)
        for (int n = 0; n < p.N; n++) {
            float c = p.C[(size_t)m * p.ldc + n];
            if (m == 3) nan_row &= isnan(c);
            else if (n == 7) inf_col &= isinf(c) || isnan(c);
            else clean &= isfinite(c);
        }
    ok(nan_row && inf_col && clean, "beta 0 overwrites NaN in C; a NaN in A spoils its row, an inf in B its column, "
                                    "nothing else");
    release(&p);

    /* The same bits whatever the thread count (each element is one thread's fixed-order sum). */
    problem q = make(200, 300, 500, 1, 0);
    float *c1 = malloc((size_t)q.M * q.ldc * sizeof *c1), *c2 = malloc((size_t)q.M * q.ldc * sizeof *c2);
    memcpy(c1, q.C, (size_t)q.M * q.ldc * sizeof *c1);
    memcpy(c2, q.C, (size_t)q.M * q.ldc * sizeof *c2);
    omp_set_num_threads(1);
    gpt_gemm_bf16_amx(&ws, 1, 0, q.M, q.N, q.K, 1.0f, q.A, q.lda, q.B, q.ldb, 1.0f, c1, q.ldc);
    omp_set_num_threads(3);
    gpt_gemm_bf16_amx(&ws, 1, 0, q.M, q.N, q.K, 1.0f, q.A, q.lda, q.B, q.ldb, 1.0f, c2, q.ldc);
    ok(memcmp(c1, c2, (size_t)q.M * q.ldc * sizeof *c1) == 0, "1 and 3 threads give the same bits (200x300x500)");
    free(c1);
    free(c2);
    release(&q);

    /* The backend takes this path for bf16 GEMMs, and its numbers are the emulation's to fp32 order. */
    gpt_backend *be = gpt_backend_cpu();
    ok(be->amx != NULL, "the CPU backend found AMX");
    problem r = make(40, 50, 300, 0, 1);
    float *ce = malloc((size_t)r.M * r.ldc * sizeof *ce);
    be->gemm_prec = GPT_GEMM_BF16;
    be->gemm(be, 0, 1, r.M, r.N, r.K, 1.0f, r.A, r.lda, r.B, r.ldb, 0.0f, r.C, r.ldc);
    struct gpt_amx_ws *keep = be->amx;
    be->amx = NULL; /* the emulation */
    be->gemm(be, 0, 1, r.M, r.N, r.K, 1.0f, r.A, r.lda, r.B, r.ldb, 0.0f, ce, r.ldc);
    be->amx = keep;
    double d = 0;
    int differ = 0;
    for (int m = 0; m < r.M; m++)
        for (int n = 0; n < r.N; n++) {
            float x = r.C[(size_t)m * r.ldc + n], y = ce[(size_t)m * r.ldc + n];
            double mag = 0;
            for (int k = 0; k < r.K; k++) mag += fabs((double)gpt_round_bf16(at_a(&r, m, k)) * gpt_round_bf16(at_b(&r, k, n)));
            differ += x != y;
            double e = fabs(x - y) / (mag * r.K * 0x1p-24);
            if (e > d) d = e;
        }
    ok(differ > 0 && d <= 1, "backend bf16 GEMM: AMX equals the emulation within K ulps of the magnitude (%.3f of it; "
                             "%d of %d differ in the last bits: summation order)", d, differ, r.M * r.N);
    free(ce);
    release(&r);

    /* Frozen weights: packed once and reused (so a change the caller promised not to make goes
     * unseen), dropped when the range is frozen anew. */
    problem f = make(16, 64, 96, 0, 1);
    size_t nb = (size_t)f.N * f.ldb;
    float *c_a = malloc((size_t)f.M * f.ldc * sizeof *c_a), *c_b = malloc((size_t)f.M * f.ldc * sizeof *c_b);
    be->frozen_lo = f.B, be->frozen_hi = f.B + nb, be->frozen_epoch++;
    be->gemm(be, 0, 1, f.M, f.N, f.K, 1.0f, f.A, f.lda, f.B, f.ldb, 0.0f, c_a, f.ldc);
    int packs = be->amx->npacks;
    for (size_t i = 0; i < nb; i++) f.B[i] *= 2;
    be->gemm(be, 0, 1, f.M, f.N, f.K, 1.0f, f.A, f.lda, f.B, f.ldb, 0.0f, c_b, f.ldc);
    int same = memcmp(c_a, c_b, (size_t)f.M * f.ldc * sizeof *c_a) == 0;
    ok(packs == 1 && be->amx->npacks == 1 && same, "a frozen B is packed once and its pack reused (%d pack(s))",
       be->amx->npacks);
    be->frozen_epoch++; /* frozen anew: the doubled weights must be seen */
    be->gemm(be, 0, 1, f.M, f.N, f.K, 1.0f, f.A, f.lda, f.B, f.ldb, 0.0f, c_b, f.ldc);
    int doubled = 1;
    for (int m = 0; m < f.M; m++)
        for (int n = 0; n < f.N; n++) doubled &= c_b[(size_t)m * f.ldc + n] == 2 * c_a[(size_t)m * f.ldc + n];
    ok(doubled, "a new freeze epoch drops the old packs: the doubled weights give exactly twice the product");
    be->frozen_lo = be->frozen_hi = NULL, be->frozen_epoch++;
    be->gemm(be, 0, 1, f.M, f.N, f.K, 1.0f, f.A, f.lda, f.B, f.ldb, 0.0f, c_a, f.ldc);
    ok(be->amx->npacks == 0 && memcmp(c_a, c_b, (size_t)f.M * f.ldc * sizeof *c_a) == 0,
       "thawed: no packs kept, the same product from a fresh packing");
    free(c_a);
    free(c_b);
    release(&f);
    be->destroy(be);
    gpt_amx_ws_free(&ws);
    return done_testing();
}
