/* The grouped GEMM op (backend.h gemm_grouped) on the CPU backend: random groups (empty ones, K = 0,
 * row counts on every path of cpu_gemm: gemv, the few-row kernel, sgemm), all four transpositions,
 * beta 0, 1 and 0.5, padded leading dimensions. Each call equals the same gemms made one by one, bit
 * for bit, and a double-precision product within 1e-5 of the terms' scale; nothing is written
 * outside a group's C. Then the MoE model (tiny gpt-oss), which sends its expert GEMMs through it:
 * the op is called (two grouped GEMMs per MoE layer forward, four backward), and the logits and
 * gradients are the bits of a backend without the op (the model's own loop over gemm). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "hf_import.h"
#include "model.h"
#include "tap.h"

static unsigned long long rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { return tap_frand(&rng); }
static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * n) % n; }

/* One group's operands and two copies of its C (grouped call, separate calls) with the original. */
typedef struct {
    int M, N, K, lda, ldb, ldc;
    float *A, *B, *C1, *C2, *C0;
    size_t nc;
} group;

static int pick_rows(void)
{
    static const int sizes[] = {0, 1, 3, 16, 17, 40};
    return sizes[irand(6)];
}

static double check_round(gpt_backend *be, int ta, int tb, float alpha, float beta, int n, int *bits_same,
                          int *outside_ok)
{
    group *g = calloc((size_t)n, sizeof *g);
    int *M = malloc((size_t)n * sizeof *M), *N = malloc((size_t)n * sizeof *N), *K = malloc((size_t)n * sizeof *K);
    int *lda = malloc((size_t)n * sizeof *lda), *ldb = malloc((size_t)n * sizeof *ldb),
        *ldc = malloc((size_t)n * sizeof *ldc);
    const float **A = malloc((size_t)n * sizeof *A), **B = malloc((size_t)n * sizeof *B);
    float **C = malloc((size_t)n * sizeof *C);
    for (int i = 0; i < n; i++) {
        group *q = &g[i];
        q->M = pick_rows(), q->N = irand(4) ? 1 + irand(30) : 0, q->K = irand(5) ? 1 + irand(50) : 0;
        if (i < 3) /* every round has an empty group of each kind and a K = 0 one, among random ones */
            q->M = i == 0 ? 0 : 17, q->N = i == 1 ? 0 : 9, q->K = i == 2 ? 0 : q->K;
        q->lda = (ta ? q->M : q->K) + irand(3) + 1, q->ldb = (tb ? q->K : q->N) + irand(3) + 1;
        q->ldc = q->N + irand(3) + 1;
        size_t na = (size_t)(ta ? q->K : q->M) * q->lda, nb = (size_t)(tb ? q->N : q->K) * q->ldb;
        q->nc = (size_t)(q->M ? q->M : 1) * q->ldc;
        q->A = malloc((na ? na : 1) * sizeof(float)), q->B = malloc((nb ? nb : 1) * sizeof(float));
        q->C0 = malloc(q->nc * sizeof(float)), q->C1 = malloc(q->nc * sizeof(float)), q->C2 = malloc(q->nc * sizeof(float));
        for (size_t j = 0; j < na; j++) q->A[j] = frand();
        for (size_t j = 0; j < nb; j++) q->B[j] = frand();
        for (size_t j = 0; j < q->nc; j++) q->C0[j] = q->C1[j] = q->C2[j] = frand();
        M[i] = q->M, N[i] = q->N, K[i] = q->K, lda[i] = q->lda, ldb[i] = q->ldb, ldc[i] = q->ldc;
        A[i] = q->A, B[i] = q->B, C[i] = q->C1;
    }
    be->gemm_grouped(be, ta, tb, n, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int i = 0; i < n; i++) {
        group *q = &g[i];
        be->gemm(be, ta, tb, q->M, q->N, q->K, alpha, q->A, q->lda, q->B, q->ldb, beta, q->C2, q->ldc);
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        group *q = &g[i];
        *bits_same &= memcmp(q->C1, q->C2, q->nc * sizeof(float)) == 0;
        for (int r = 0; r < (q->M ? q->M : 1); r++)
            for (int c = 0; c < q->ldc; c++) {
                size_t at = (size_t)r * q->ldc + c;
                if (c >= q->N || !q->M) { /* padding, or an empty group: untouched */
                    *outside_ok &= q->C1[at] == q->C0[at] || (isnan(q->C1[at]) && isnan(q->C0[at]));
                    continue;
                }
                double s = 0, mag = 0;
                for (int k = 0; k < q->K; k++) {
                    double x = (double)(ta ? q->A[(size_t)k * q->lda + r] : q->A[(size_t)r * q->lda + k]) *
                               (tb ? q->B[(size_t)c * q->ldb + k] : q->B[(size_t)k * q->ldb + c]);
                    s += x, mag += fabs(x);
                }
                double ref = alpha * s + (beta == 0 ? 0 : beta * (double)q->C0[at]);
                double scale = fabs(alpha) * mag + fabs(beta * (double)q->C0[at]) + 1e-30;
                double e = fabs(q->C1[at] - ref) / scale;
                if (!(e <= worst)) worst = e; /* NaN sticks */
            }
    }
    for (int i = 0; i < n; i++) free(g[i].A), free(g[i].B), free(g[i].C0), free(g[i].C1), free(g[i].C2);
    free(g), free(M), free(N), free(K), free(lda), free(ldb), free(ldc), free(A), free(B), free(C);
    return worst;
}

/* ---- the MoE model through the op ---- */

static void (*real_grouped)(gpt_backend *, int, int, int, const int *, const int *, const int *, float,
                            const float *const *, const int *, const float *const *, const int *, float,
                            float *const *, const int *);
static int grouped_calls;

static void counting_grouped(gpt_backend *be, int ta, int tb, int n, const int *M, const int *N, const int *K,
                             float alpha, const float *const *A, const int *lda, const float *const *B,
                             const int *ldb, float beta, float *const *C, const int *ldc)
{
    grouped_calls++;
    real_grouped(be, ta, tb, n, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* forward + backward of tiny gpt-oss; the logits and gradients (host copies) */
static int model_step(gpt_backend *be, const gpt_config *cfg, float **logits, size_t *nl, float **grads, size_t *ng)
{
    gpt_err err;
    gpt_model *m = gpt_model_create(&cfg->model, be, &err);
    if (!m || gpt_model_load_hf(m, "t/data/ref/tiny-gpt-oss/model.safetensors", &err) < 0) {
        diag("%s", err.msg);
        if (m) gpt_model_free(m);
        return -1;
    }
    int B = 2, T = 24, V = cfg->model.vocab_size, tok[48], tgt[48];
    for (int i = 0; i < B * T; i++) tok[i] = (i * 37 + 11) % V, tgt[i] = (i * 53 + 5) % V;
    gpt_forward_opts o = {0};
    gpt_loss loss;
    gpt_model_zero_grad(m);
    int rc = gpt_model_forward(m, tok, tgt, B, T, &o, &loss, &err);
    if (rc == 0) rc = gpt_model_backward(m, &err);
    if (rc < 0) {
        diag("%s", err.msg);
        gpt_model_free(m);
        return -1;
    }
    *nl = (size_t)B * T * cfg->model.padded_vocab_size, *ng = gpt_model_params(m)->total;
    *logits = malloc(*nl * sizeof(float)), *grads = malloc(*ng * sizeof(float));
    memcpy(*logits, gpt_model_logits(m), *nl * sizeof(float)); /* CPU backend: host memory */
    memcpy(*grads, gpt_model_grad_data(m), *ng * sizeof(float));
    gpt_model_free(m);
    return 0;
}

static void check_model(void)
{
    gpt_err err;
    gpt_config cfg;
    if (!ok(gpt_config_load("t/data/ref/tiny-gpt-oss/model.yaml", &cfg, &err) == 0, "tiny-gpt-oss: config loads")) {
        diag("%s", err.msg);
        return;
    }
    gpt_backend *with = gpt_backend_cpu(), *without = gpt_backend_cpu();
    real_grouped = with->gemm_grouped;
    with->gemm_grouped = counting_grouped;
    without->gemm_grouped = NULL;
    float *l1 = NULL, *g1 = NULL, *l2 = NULL, *g2 = NULL;
    size_t nl1 = 0, ng1 = 0, nl2 = 0, ng2 = 0;
    int r1 = model_step(with, &cfg, &l1, &nl1, &g1, &ng1), r2 = model_step(without, &cfg, &l2, &nl2, &g2, &ng2);
    if (ok(r1 == 0 && r2 == 0, "tiny-gpt-oss: forward and backward with and without gemm_grouped")) {
        is_int(grouped_calls, 6 * cfg.model.n_layers, "the MoE layers call gemm_grouped twice forward, four times "
                                                      "backward");
        ok(nl1 == nl2 && memcmp(l1, l2, nl1 * sizeof(float)) == 0, "the logits: the same bits as gemm one by one");
        ok(ng1 == ng2 && memcmp(g1, g2, ng1 * sizeof(float)) == 0, "every gradient: the same bits as gemm one by one");
    }
    free(l1), free(g1), free(l2), free(g2);
    with->destroy(with), without->destroy(without);
    gpt_config_free(&cfg);
}

int main(void)
{
    gpt_backend *be = gpt_backend_cpu();
    if (!ok(be->gemm_grouped != NULL, "the CPU backend has gemm_grouped")) return done_testing();
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bi = 0; bi < 3; bi++) {
                int bits = 1, outside = 1;
                double worst = 0;
                for (int round = 0; round < 4; round++) {
                    double e = check_round(be, ta, tb, bi == 2 ? -1.25f : 1.0f, betas[bi], 3 + irand(8), &bits,
                                           &outside);
                    if (!(e <= worst)) worst = e;
                }
                ok(bits, "ta=%d tb=%d beta %g: the same bits as one gemm per group", ta, tb, betas[bi]);
                ok(worst <= 1e-5, "ta=%d tb=%d beta %g: within 1e-5 of the double product (worst %.2e)", ta, tb,
                   betas[bi], worst);
                ok(outside, "ta=%d tb=%d beta %g: empty groups and padding untouched", ta, tb, betas[bi]);
            }
    /* no groups at all: a valid call that does nothing */
    be->gemm_grouped(be, 0, 0, 0, NULL, NULL, NULL, 1.0f, NULL, NULL, NULL, NULL, 0.0f, NULL, NULL);
    ok(1, "n = 0 does nothing");
    be->destroy(be);
    check_model();
    return done_testing();
}
