/* backend_cpu.c: the reference backend. fp32; GEMMs through OpenBLAS; everything else OpenMP
 * loops. Parallel loops always split work so that each output element is written by one thread
 * in a fixed order: results do not depend on the thread count. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"

static void *cpu_alloc(gpt_backend *be, size_t bytes)
{
    (void)be;
    /* 64-byte alignment keeps AVX-512 loads aligned for every tensor start. */
    size_t n = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (!p) p = gpt_xmalloc(n); /* aborts */
    memset(p, 0, n);
    return p;
}

static void cpu_free(gpt_backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(gpt_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_zero(gpt_backend *be, void *p, size_t bytes)
{
    (void)be;
    if (bytes) memset(p, 0, bytes);
}

static void cpu_gemm(gpt_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    (void)be;
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
}

static void cpu_bias_fwd(gpt_backend *be, float *y, int ldy, const float *b, int M, int N)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        float *row = y + (size_t)m * ldy;
        for (int n = 0; n < N; n++) row[n] += b[n];
    }
}

static void cpu_bias_bwd(gpt_backend *be, float *db, const float *dy, int ldy, int M, int N)
{
    (void)be;
    /* Column blocks per thread, rows in order: deterministic. */
    enum { BLK = 64 };
    int nblk = (N + BLK - 1) / BLK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int n0 = bk * BLK, n1 = n0 + BLK < N ? n0 + BLK : N;
        float acc[BLK] = {0};
        for (int m = 0; m < M; m++) {
            const float *row = dy + (size_t)m * ldy;
            for (int n = n0; n < n1; n++) acc[n - n0] += row[n];
        }
        for (int n = n0; n < n1; n++) db[n] += acc[n - n0];
    }
}

static void cpu_axpy(gpt_backend *be, float *y, const float *x, float a, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

static void cpu_add(gpt_backend *be, float *out, const float *a, const float *b, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_embed_fwd(gpt_backend *be, float *x, const int *tok, const float *wte, const float *wpe, int B, int T,
                          int C)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float *e = wte + (size_t)tok[r] * C;
        float *o = x + (size_t)r * C;
        if (wpe) {
            const float *p = wpe + (size_t)(r % T) * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            memcpy(o, e, (size_t)C * sizeof *o);
        }
    }
}

static void cpu_embed_bwd(gpt_backend *be, float *dwte, float *dwpe, const float *dx, const int *tok, int B, int T,
                          int C)
{
    (void)be;
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int r = 0; r < B * T; r++) {
            const float *g = dx + (size_t)r * C;
            float *e = dwte + (size_t)tok[r] * C;
            for (int c = c0; c < c1; c++) e[c] += g[c];
            if (dwpe) {
                float *p = dwpe + (size_t)(r % T) * C;
                for (int c = c0; c < c1; c++) p[c] += g[c];
            }
        }
    }
}

static void cpu_norm_fwd(gpt_backend *be, int kind, float *y, float *mean, float *rstd, const float *x, const float *w,
                         const float *b, int N, int C, float eps)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        float mu = 0;
        if (kind == GPT_NORM_OP_LAYERNORM) {
            for (int c = 0; c < C; c++) mu += xr[c];
            mu /= C;
        }
        float var = 0;
        for (int c = 0; c < C; c++) var += (xr[c] - mu) * (xr[c] - mu);
        var /= C;
        float rs = 1.0f / sqrtf(var + eps);
        if (kind == GPT_NORM_OP_LAYERNORM) {
            for (int c = 0; c < C; c++) yr[c] = (xr[c] - mu) * rs * w[c] + b[c];
            mean[n] = mu;
        } else {
            for (int c = 0; c < C; c++) yr[c] = w[c] * (xr[c] * rs);
        }
        rstd[n] = rs;
    }
}

static void cpu_norm_bwd(gpt_backend *be, int kind, float *dx, float *dw, float *db, const float *dy, const float *x,
                         const float *w, const float *mean, const float *rstd, int N, int C)
{
    (void)be;
    int ln = kind == GPT_NORM_OP_LAYERNORM;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
        float mu = ln ? mean[n] : 0, rs = rstd[n];
        float sum_d = 0, sum_dx = 0;
        for (int c = 0; c < C; c++) {
            float xhat = (xr[c] - mu) * rs, d = g[c] * w[c];
            sum_d += d;
            sum_dx += d * xhat;
        }
        sum_d = ln ? sum_d / C : 0;
        sum_dx /= C;
        float *o = dx + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            float xhat = (xr[c] - mu) * rs;
            o[c] += rs * (g[c] * w[c] - sum_d - xhat * sum_dx);
        }
    }
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        float aw[BLK] = {0}, ab[BLK] = {0};
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *g = dy + (size_t)n * C;
            float mu = ln ? mean[n] : 0, rs = rstd[n];
            for (int c = c0; c < c1; c++) {
                aw[c - c0] += g[c] * ((xr[c] - mu) * rs);
                ab[c - c0] += g[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            dw[c] += aw[c - c0];
            if (ln) db[c] += ab[c - c0];
        }
    }
}

static void cpu_rope(gpt_backend *be, float *x, int ld, int B, int T, int nh, int D, const float *cos_t,
                     const float *sin_t, int inverse)
{
    (void)be;
    int half = D / 2;
    float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < B * T; r++) {
        const float *cs = cos_t + (size_t)(r % T) * half, *sn = sin_t + (size_t)(r % T) * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + (size_t)r * ld + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], c = cs[i], s = sgn * sn[i];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

/* The keys a query at t sees: [lo, t]. */
static inline int attn_lo(int t, int window) { return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; }

static void cpu_attn_fwd(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B, int T,
                         int H, int KV, int D, int window, float scale)
{
    (void)be;
    int ld = (H + 2 * KV) * D, grp = H / KV;
#pragma omp parallel
    {
        float *s = malloc((size_t)T * sizeof *s);
#pragma omp for collapse(3) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++) {
                    const float *q = qkv + (size_t)(b * T + t) * ld + (size_t)h * D;
                    int kh = h / grp, lo = attn_lo(t, window);
                    float m = sinks ? sinks[h] : -INFINITY;
                    for (int j = lo; j <= t; j++) {
                        const float *k = qkv + (size_t)(b * T + j) * ld + (size_t)(H + kh) * D;
                        float dot = 0;
                        for (int i = 0; i < D; i++) dot += q[i] * k[i];
                        s[j] = dot * scale;
                        if (s[j] > m) m = s[j];
                    }
                    float z = sinks ? expf(sinks[h] - m) : 0;
                    for (int j = lo; j <= t; j++) z += (s[j] = expf(s[j] - m));
                    float *o = out + (size_t)(b * T + t) * H * D + (size_t)h * D;
                    for (int i = 0; i < D; i++) o[i] = 0;
                    for (int j = lo; j <= t; j++) {
                        const float *v = qkv + (size_t)(b * T + j) * ld + (size_t)(H + KV + kh) * D;
                        float p = s[j] / z;
                        for (int i = 0; i < D; i++) o[i] += p * v[i];
                    }
                    lse[((size_t)b * H + h) * T + t] = m + logf(z);
                }
        free(s);
    }
}

static void cpu_attn_bwd(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                         const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D,
                         int window, float scale)
{
    (void)be;
    int ld = (H + 2 * KV) * D, grp = H / KV;
    memset(dqkv, 0, (size_t)B * T * ld * sizeof *dqkv);
    float *dsink_part = calloc((size_t)B * H, sizeof *dsink_part);
    /* One thread owns a (batch, kv head): it alone writes those dK, dV and its heads' dQ. */
#pragma omp parallel
    {
        float *p = malloc((size_t)T * sizeof *p), *dp = malloc((size_t)T * sizeof *dp);
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KV; kh++)
                for (int h = kh * grp; h < (kh + 1) * grp; h++)
                    for (int t = 0; t < T; t++) {
                        size_t row = (size_t)(b * T + t);
                        const float *q = qkv + row * ld + (size_t)h * D;
                        const float *go = dout + row * H * D + (size_t)h * D, *o = out + row * H * D + (size_t)h * D;
                        float l = lse[((size_t)b * H + h) * T + t];
                        int lo = attn_lo(t, window);
                        float drow = 0; /* sum_j p_j dp_j = dout . out */
                        for (int i = 0; i < D; i++) drow += go[i] * o[i];
                        for (int j = lo; j <= t; j++) {
                            const float *k = qkv + (size_t)(b * T + j) * ld + (size_t)(H + kh) * D;
                            const float *v = qkv + (size_t)(b * T + j) * ld + (size_t)(H + KV + kh) * D;
                            float dot = 0, dv = 0;
                            for (int i = 0; i < D; i++) {
                                dot += q[i] * k[i];
                                dv += go[i] * v[i];
                            }
                            p[j] = expf(dot * scale - l);
                            dp[j] = dv;
                        }
                        float *dq = dqkv + row * ld + (size_t)h * D;
                        for (int j = lo; j <= t; j++) {
                            float ds = p[j] * (dp[j] - drow) * scale;
                            const float *k = qkv + (size_t)(b * T + j) * ld + (size_t)(H + kh) * D;
                            float *dk = dqkv + (size_t)(b * T + j) * ld + (size_t)(H + kh) * D;
                            float *dv = dqkv + (size_t)(b * T + j) * ld + (size_t)(H + KV + kh) * D;
                            for (int i = 0; i < D; i++) {
                                dq[i] += ds * k[i];
                                dk[i] += ds * q[i];
                                dv[i] += p[j] * go[i];
                            }
                        }
                        if (sinks) dsink_part[(size_t)b * H + h] -= expf(sinks[h] - l) * drow;
                    }
        free(p);
        free(dp);
    }
    if (sinks && dsinks)
        for (int h = 0; h < H; h++)
            for (int b = 0; b < B; b++) dsinks[h] += dsink_part[(size_t)b * H + h];
    free(dsink_part);
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static void cpu_gelu_fwd(gpt_backend *be, float *y, const float *x, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
    }
}

static void cpu_gelu_bwd(gpt_backend *be, float *dx, const float *x, const float *dy, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i], u = GELU_K * (v + 0.044715f * v * v * v), t = tanhf(u);
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void cpu_swiglu_fwd(gpt_backend *be, float *y, const float *gu, int N, int F, float alpha, float limit)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int f = 0; f < F; f++) {
            float g = gu[(size_t)n * 2 * F + 2 * f], l = gu[(size_t)n * 2 * F + 2 * f + 1];
            g = g > limit ? limit : g;
            l = l > limit ? limit : l < -limit ? -limit : l;
            y[(size_t)n * F + f] = g * sigmoidf(alpha * g) * (l + 1.0f);
        }
}

static void cpu_swiglu_bwd(gpt_backend *be, float *dgu, const float *gu, const float *dy, int N, int F, float alpha,
                           float limit)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int f = 0; f < F; f++) {
            float g0 = gu[(size_t)n * 2 * F + 2 * f], l0 = gu[(size_t)n * 2 * F + 2 * f + 1];
            float g = g0 > limit ? limit : g0, l = l0 > limit ? limit : l0 < -limit ? -limit : l0;
            float s = sigmoidf(alpha * g), glu = g * s, d = dy[(size_t)n * F + f];
            /* clamp passes the gradient where the input lies inside the bounds (edges included) */
            float dg = g0 <= limit ? d * (l + 1.0f) * (s + g * alpha * s * (1.0f - s)) : 0.0f;
            float dl = (l0 >= -limit && l0 <= limit) ? d * glu : 0.0f;
            dgu[(size_t)n * 2 * F + 2 * f] = dg;
            dgu[(size_t)n * 2 * F + 2 * f + 1] = dl;
        }
}

static void cpu_topk_softmax(gpt_backend *be, int *idx, float *w, const float *logits, int N, int E, int k)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * E;
        int *id = idx + (size_t)n * k;
        float *wr = w + (size_t)n * k;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) taken |= id[i] == e;
                if (!taken && (best < 0 || x[e] > x[best])) best = e;
            }
            id[j] = best;
        }
        float m = x[id[0]], z = 0;
        for (int j = 0; j < k; j++) z += (wr[j] = expf(x[id[j]] - m));
        for (int j = 0; j < k; j++) wr[j] /= z;
    }
}

static void cpu_topk_softmax_bwd(gpt_backend *be, float *dlogits, const float *dw, const float *w, const int *idx,
                                 int N, int E, int k)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *g = dw + (size_t)n * k, *wr = w + (size_t)n * k;
        float dot = 0;
        for (int j = 0; j < k; j++) dot += wr[j] * g[j];
        for (int j = 0; j < k; j++) dlogits[(size_t)n * E + idx[(size_t)n * k + j]] += wr[j] * (g[j] - dot);
    }
}

static void cpu_softmax_rows(gpt_backend *be, float *p, const float *x, int N, int E)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * E;
        float *pr = p + (size_t)n * E, m = xr[0], z = 0;
        for (int e = 1; e < E; e++) m = xr[e] > m ? xr[e] : m;
        for (int e = 0; e < E; e++) z += (pr[e] = expf(xr[e] - m));
        for (int e = 0; e < E; e++) pr[e] /= z;
    }
}

static void cpu_softmax_rows_bwd_shared(gpt_backend *be, float *dx, const float *p, const float *g, int N, int E)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *pr = p + (size_t)n * E;
        float dot = 0;
        for (int e = 0; e < E; e++) dot += pr[e] * g[e];
        for (int e = 0; e < E; e++) dx[(size_t)n * E + e] += pr[e] * (g[e] - dot);
    }
}

static void cpu_colsum(gpt_backend *be, float *out, const float *x, int N, int E)
{
    (void)be;
    for (int e = 0; e < E; e++) out[e] = 0;
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) out[e] += x[(size_t)n * E + e];
}

static void cpu_gather_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale, int n,
                            int C)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *d = dst + (size_t)i * C;
        const float *s = src + (size_t)rows[i] * C;
        if (scale)
            for (int c = 0; c < C; c++) d[c] = scale[i] * s[c];
        else
            memcpy(d, s, (size_t)C * sizeof *d);
    }
}

static void cpu_scatter_add_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale,
                                 int n, int C)
{
    (void)be;
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int i = 0; i < n; i++) {
            float s = scale ? scale[i] : 1.0f;
            float *d = dst + (size_t)rows[i] * C;
            const float *sr = src + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += s * sr[c];
        }
    }
}

static void cpu_row_dot(gpt_backend *be, float *out, const float *a, const int *rows, const float *b, int n, int C)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *x = a + (size_t)rows[i] * C, *y = b + (size_t)i * C;
        float d = 0;
        for (int c = 0; c < C; c++) d += x[c] * y[c];
        out[i] = d;
    }
}

static void cpu_xent(gpt_backend *be, float *losses, int *correct, float *dlogits, const float *logits,
                     const int *targets, int N, int V, int Vp, float smoothing, float dscale)
{
    (void)be;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * Vp;
        int t = targets[n];
        float m = x[0];
        int am = 0;
        for (int v = 1; v < V; v++)
            if (x[v] > m) m = x[v], am = v;
        double z = 0, sum = 0;
        for (int v = 0; v < V; v++) {
            z += exp((double)(x[v] - m));
            sum += x[v];
        }
        float lse = m + (float)log(z);
        if (t < 0) {
            losses[n] = 0;
            correct[n] = 0;
        } else {
            float nll = lse - x[t], uni = lse - (float)(sum / V);
            losses[n] = (1.0f - smoothing) * nll + smoothing * uni;
            correct[n] = am == t;
        }
        if (dlogits) {
            float *d = dlogits + (size_t)n * Vp;
            if (t < 0) {
                memset(d, 0, (size_t)Vp * sizeof *d);
                continue;
            }
            float u = smoothing / V;
            for (int v = 0; v < V; v++) d[v] = dscale * (expf(x[v] - lse) - u - (v == t ? 1.0f - smoothing : 0.0f));
            for (int v = V; v < Vp; v++) d[v] = 0;
        }
    }
}

static void cpu_destroy(gpt_backend *be) { free(be); }

gpt_backend *gpt_backend_cpu(void)
{
    gpt_backend *be = gpt_xcalloc(1, sizeof *be);
    *be = (gpt_backend){
        .name = "cpu",
        .destroy = cpu_destroy,
        .alloc = cpu_alloc,
        .free = cpu_free,
        .to_device = cpu_copy,
        .to_host = cpu_copy,
        .zero = cpu_zero,
        .gemm = cpu_gemm,
        .bias_fwd = cpu_bias_fwd,
        .bias_bwd = cpu_bias_bwd,
        .axpy = cpu_axpy,
        .add = cpu_add,
        .embed_fwd = cpu_embed_fwd,
        .embed_bwd = cpu_embed_bwd,
        .norm_fwd = cpu_norm_fwd,
        .norm_bwd = cpu_norm_bwd,
        .rope = cpu_rope,
        .attn_fwd = cpu_attn_fwd,
        .attn_bwd = cpu_attn_bwd,
        .gelu_fwd = cpu_gelu_fwd,
        .gelu_bwd = cpu_gelu_bwd,
        .swiglu_fwd = cpu_swiglu_fwd,
        .swiglu_bwd = cpu_swiglu_bwd,
        .topk_softmax = cpu_topk_softmax,
        .topk_softmax_bwd = cpu_topk_softmax_bwd,
        .softmax_rows = cpu_softmax_rows,
        .softmax_rows_bwd_shared = cpu_softmax_rows_bwd_shared,
        .colsum = cpu_colsum,
        .gather_rows = cpu_gather_rows,
        .scatter_add_rows = cpu_scatter_add_rows,
        .row_dot = cpu_row_dot,
        .xent = cpu_xent,
    };
    return be;
}
