/* attention's small products (lib/attn_gemm.c) against double-precision sums: every D the kernels
 * take, row counts on and off their 6-row tiles, column counts on and off 32, both orientations of
 * the score operand, beta 0 and 1, strided C. Skips without AVX-512. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "attn_gemm.h"
#include "backend.h"
#include "tap.h"

static unsigned long long rng = 0x243F6A8885A308D3ull;
static float frand(void) { return tap_frand(&rng); }

static double bound(double mag, int K) { return mag * (K + 2) * 0x1p-24 + 1e-30; }

/* The CPU backend's attention (which runs these kernels for such D) against a plain double
 * implementation: causal, sliding window, sinks, GQA, several 64-query blocks. Layout as
 * backend.h: qkv rows of (H + 2 KV) D, out rows of H D, lse (B, H, T). */
static void ref_attn(int B, int T, int H, int KV, int D, int W, double scale, const float *qkv, const float *sinks,
                     const float *dout, double *out, double *dqkv, double *dsinks)
{
    int ld = (H + 2 * KV) * D, grp = H / KV;
    double *p = malloc((size_t)T * sizeof *p), *dp = malloc((size_t)T * sizeof *dp);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * ld + (size_t)h * D;
                int lo = W > 0 && t - W + 1 > 0 ? t - W + 1 : 0, kh = h / grp;
                double m = sinks[h];
                for (int j = lo; j <= t; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * ld + (size_t)(H + kh) * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += (double)q[d] * k[d];
                    p[j] = s * scale;
                    m = p[j] > m ? p[j] : m;
                }
                double z = exp(sinks[h] - m);
                for (int j = lo; j <= t; j++) z += (p[j] = exp(p[j] - m));
                double *o = out + ((size_t)b * T + t) * H * D + (size_t)h * D;
                const float *go = dout + ((size_t)b * T + t) * H * D + (size_t)h * D;
                for (int d = 0; d < D; d++) o[d] = 0;
                for (int j = lo; j <= t; j++) {
                    p[j] /= z;
                    const float *v = qkv + ((size_t)b * T + j) * ld + (size_t)(H + KV + kh) * D;
                    for (int d = 0; d < D; d++) o[d] += p[j] * v[d];
                }
                double Di = 0;
                for (int d = 0; d < D; d++) Di += go[d] * o[d];
                dsinks[h] -= exp(sinks[h] - m) / z * Di;
                for (int j = lo; j <= t; j++) {
                    const float *v = qkv + ((size_t)b * T + j) * ld + (size_t)(H + KV + kh) * D;
                    const float *k = qkv + ((size_t)b * T + j) * ld + (size_t)(H + kh) * D;
                    double g = 0;
                    for (int d = 0; d < D; d++) g += (double)go[d] * v[d];
                    double ds = p[j] * (g - Di) * scale;
                    double *dq = dqkv + ((size_t)b * T + t) * ld + (size_t)h * D;
                    double *dk = dqkv + ((size_t)b * T + j) * ld + (size_t)(H + kh) * D;
                    double *dv = dqkv + ((size_t)b * T + j) * ld + (size_t)(H + KV + kh) * D;
                    for (int d = 0; d < D; d++) {
                        dq[d] += ds * k[d];
                        dk[d] += ds * q[d];
                        dv[d] += p[j] * go[d];
                    }
                }
            }
    free(p), free(dp);
}

static double rel_err(const float *got, const double *want, size_t n)
{
    double mx = 1e-30, e = 0;
    for (size_t i = 0; i < n; i++) mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]) / mx;
        if (!(d <= e)) e = d;
    }
    return e;
}

static void check_backend_attn(int D)
{
    int B = 2, T = 150, H = 4, KV = 2, W = 70, ld = (H + 2 * KV) * D;
    double scale = 1 / sqrt((double)D);
    size_t nq = (size_t)B * T * ld, no = (size_t)B * T * H * D;
    float *qkv = malloc(nq * sizeof *qkv), *dout = malloc(no * sizeof *dout), sinks[4] = {0.3f, -1.0f, 0.0f, 2.0f};
    float *out = malloc(no * sizeof *out), *lse = malloc((size_t)B * H * T * sizeof *lse);
    float *dqkv = malloc(nq * sizeof *dqkv), dsinks[4] = {0};
    for (size_t i = 0; i < nq; i++) qkv[i] = frand();
    for (size_t i = 0; i < no; i++) dout[i] = frand();
    double *rout = calloc(no, sizeof *rout), *rdq = calloc(nq, sizeof *rdq), rds[4] = {0};
    ref_attn(B, T, H, KV, D, W, scale, qkv, sinks, dout, rout, rdq, rds);
    gpt_backend *be = gpt_backend_cpu();
    be->attn_fwd(be, out, lse, qkv, sinks, B, T, H, KV, D, W, (float)scale);
    be->attn_bwd(be, dqkv, dsinks, dout, out, lse, qkv, sinks, B, T, H, KV, D, W, (float)scale);
    double eo = rel_err(out, rout, no), eg = rel_err(dqkv, rdq, nq), es = rel_err(dsinks, rds, 4);
    ok(eo < 1e-5 && eg < 1e-5 && es < 1e-5,
       "backend attention, D=%d, T=%d (3 blocks), window %d, sinks, GQA: out %.1e, dqkv %.1e, dsinks %.1e of the "
       "largest (double reference)", D, T, W, eo, eg, es);
    be->destroy(be);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(rout), free(rdq);
}

int main(void)
{
    if (!gpt_attn_gemm_ok(64)) skip_all("no AVX-512 on this CPU: attention keeps OpenBLAS");
    ok(!gpt_attn_gemm_ok(24) && !gpt_attn_gemm_ok(80) && gpt_attn_gemm_ok(16), "D = 16..64 in steps of 16 only");
    static const int Ms[] = {1, 5, 6, 7, 64}, Ns[] = {1, 17, 32, 33, 100};
    double wnt = 0, wnn = 0;
    int cases = 0;
    for (int D = 16; D <= 64; D += 16)
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++) {
                int M = Ms[mi], N = Ns[ni], lda = D + 3, ldbt = N + 5, ldc = N + 2;
                float *A = malloc((size_t)M * lda * sizeof *A), *Bt = malloc((size_t)D * ldbt * sizeof *Bt);
                float *C = malloc((size_t)M * ldc * sizeof *C);
                for (int i = 0; i < M * lda; i++) A[i] = frand();
                for (int i = 0; i < D * ldbt; i++) Bt[i] = frand();
                for (int i = 0; i < M * ldc; i++) C[i] = 7;
                gpt_attn_gemm_nt(M, N, D, 0.125f, A, lda, Bt, ldbt, C, ldc);
                for (int i = 0; i < M; i++) {
                    for (int j = 0; j < N; j++) {
                        double s = 0, mag = 0;
                        for (int d = 0; d < D; d++) {
                            double x = (double)A[i * lda + d] * Bt[d * ldbt + j];
                            s += x, mag += fabs(x);
                        }
                        double e = fabs(C[i * ldc + j] - 0.125 * s) / bound(0.125 * mag, D);
                        if (!(e <= wnt)) wnt = e;
                    }
                    for (int j = N; j < ldc; j++)
                        if (C[i * ldc + j] != 7) wnt = INFINITY;
                }
                /* nn: C (M x D) (+)= A(i, k) B[k], A read as written (sai = K, sak = 1) or transposed */
                int K = N, ldb = D + 1, ldc2 = D + 4;
                float *S = malloc((size_t)M * K * sizeof *S), *B = malloc((size_t)K * ldb * sizeof *B);
                float *C2 = malloc((size_t)M * ldc2 * sizeof *C2), *C0 = malloc((size_t)M * ldc2 * sizeof *C0);
                for (int i = 0; i < M * K; i++) S[i] = frand();
                for (int i = 0; i < K * ldb; i++) B[i] = frand();
                for (int tr = 0; tr < 2; tr++)
                    for (int beta = 0; beta < 2; beta++) {
                        for (int i = 0; i < M * ldc2; i++) C0[i] = C2[i] = frand();
                        /* tr: the M x K operand is stored K x M (a score block read transposed) */
                        gpt_attn_gemm_nn(M, K, D, S, tr ? 1 : K, tr ? M : 1, B, ldb, (float)beta, C2, ldc2);
                        for (int i = 0; i < M; i++) {
                            for (int d = 0; d < D; d++) {
                                double s = beta ? C0[i * ldc2 + d] : 0, mag = fabs(s);
                                for (int k = 0; k < K; k++) {
                                    double x = (double)(tr ? S[k * M + i] : S[i * K + k]) * B[k * ldb + d];
                                    s += x, mag += fabs(x);
                                }
                                double e = fabs(C2[i * ldc2 + d] - s) / bound(mag, K);
                                if (!(e <= wnn)) wnn = e;
                            }
                            for (int d = D; d < ldc2; d++)
                                if (C2[i * ldc2 + d] != C0[i * ldc2 + d]) wnn = INFINITY;
                        }
                    }
                cases++;
                free(A), free(Bt), free(C), free(S), free(B), free(C2), free(C0);
            }
    ok(wnt <= 1, "nt (scores): %d shapes equal the double sums within D ulps (%.3f of the bound), nothing past N",
       cases, wnt);
    ok(wnn <= 1, "nn (values, gradients): %d shapes x both orientations x beta 0/1 within K ulps (%.3f of the "
                 "bound), nothing past D", cases, wnn);
    static const int Ds[] = {16, 24, 32, 48, 64}; /* 24: the OpenBLAS path, which the kernels do not take */
    for (int i = 0; i < 5; i++) check_backend_attn(Ds[i]);
    return done_testing();
}
