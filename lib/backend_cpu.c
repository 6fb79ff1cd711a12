/* backend_cpu.c: the reference backend. fp32; GEMMs through OpenBLAS; everything else OpenMP
 * loops. Parallel loops always split work so that each output element is written by one thread
 * in a fixed order: results do not depend on the thread count.
 *
 * The ops are written over `real`: float here; t/test_ops_fd.c compiles this same file with
 * real = double to check every backward against finite differences in double precision. */
#include <cblas.h>
#include <stdint.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include "backend.h"
#include "error.h"
#include "attn_gemm.h"
#include "gemm_amx.h"
#include "gemm_small.h"
#include "half.h"
#include "vexp.h"
#include "kv_quant.h"
#include "mxfp4.h"
#include "optim.h"

#ifndef GPT_CPU_REAL
#define GPT_CPU_REAL float
#define GPT_CPU_SGEMM cblas_sgemm
#define GPT_CPU_GEMV cblas_sgemv
#else
#define GPT_CPU_SGEMM cblas_dgemm
#define GPT_CPU_GEMV cblas_dgemv
#endif
#define GPT_CPU_GEMM GPT_CPU_SGEMM
typedef GPT_CPU_REAL real;

/* Below this much work an op runs on one thread: waking the team costs more than it saves (the
 * tiny models of the tests and the one-token decode steps are all small ops). */
#define PAR_MIN 32768

/* Hot elementwise loops are compiled for AVX-512, AVX2 and plain x86-64, chosen at load time;
 * without FMA contraction (-std=c11) every version computes the same bits. */
#if defined(__x86_64__) && !defined(__clang__)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
#else
#define HOT
#endif

#ifdef GPT_CPU_FD_TEST
static inline real vexp(real x) { return exp(x); }
#else
static inline float vexp(float x) { return gpt_vexpf(x); }
#endif

/* Row reductions in LANES independent partial sums (or maxima) combined in lane order at the end:
 * a fixed order, so the same bits on every run, thread count and clone, and one the vectorizer
 * can keep in registers (a single running sum is a serial chain it may not reorder). */
#define LANES 16

/* Elements per parallel work item of the flat elementwise ops. */
#define ELEM_CHUNK 4096

/* max(init, x[0..n)) (NaNs in x are skipped as by a running `>`). */
HOT static real lanes_max(const real *x, int n, real init)
{
    real mv[LANES];
    for (int l = 0; l < LANES; l++) mv[l] = init;
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) mv[l] = x[j + l] > mv[l] ? x[j + l] : mv[l];
    real m = init;
    for (int l = 0; l < LANES; l++) m = mv[l] > m ? mv[l] : m;
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* x[j] = exp(x[j] - m) in place; returns their sum. */
HOT static real lanes_exp_sum(real *x, int n, real m)
{
    real zv[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) zv[l] += (x[j + l] = vexp(x[j + l] - m));
    real z = 0;
    for (int l = 0; l < LANES; l++) z += zv[l];
    for (; j < n; j++) z += (x[j] = vexp(x[j] - m));
    return z;
}

/* x[j] = exp(x[j] - m) in place. */
HOT static void rows_exp_sub(real *x, int n, real m)
{
    for (int j = 0; j < n; j++) x[j] = vexp(x[j] - m);
}

/* x[j] *= a */
HOT static void scale_row(real *x, int n, real a)
{
    for (int j = 0; j < n; j++) x[j] *= a;
}

/* attention's dS = P (dP - d) scale, in place over dP */
HOT static void ds_row(real *dr, const real *pr, int n, real d, real scale)
{
    for (int j = 0; j < n; j++) dr[j] = pr[j] * (dr[j] - d) * scale;
}

/* y += a x */
HOT static void axpy_to(real *y, const real *x, real a, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* y += x */
HOT static void add_to(real *y, const real *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

/* out = a + b */
HOT static void sum_to(real *out, const real *a, const real *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* out = a x */
HOT static void scale_to(real *out, const real *x, real a, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a * x[i];
}

/* sum of a[j] * b[j] */
HOT static real lanes_dot(const real *a, const real *b, int n)
{
    real sv[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) sv[l] += a[j + l] * b[j + l];
    real s = 0;
    for (int l = 0; l < LANES; l++) s += sv[l];
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

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

/* rows x cols of src (stride ld) rounded to the operand precision, packed. */
static real *round_packed(int prec, const real *src, int rows, int cols, int ld)
{
    real *dst = gpt_xmalloc((size_t)rows * cols * sizeof *dst);
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN)
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)r * cols + c] = (real)gpt_round_half((float)src[(size_t)r * ld + c], prec);
    return dst;
}

/* Mixed precision on a CPU without half-precision GEMM: the operands are rounded into packed copies
 * and multiplied in fp32, which gives the numbers (not the speed) of a bf16 / fp16 tensor-core GEMM. */
static void cpu_gemm_half(int prec, int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                          const real *B, int ldb, real beta, real *C, int ldc)
{
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    real *Ah = round_packed(prec, A, ar, ac, lda), *Bh = round_packed(prec, B, br, bc, ldb);
    GPT_CPU_SGEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, Ah, ac,
                Bh, bc, beta, C, ldc);
    free(Ah);
    free(Bh);
}

static void cpu_gemm(gpt_backend *be, int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                     const real *B, int ldb, real beta, real *C, int ldc)
{
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0 ? 0 : beta * C[(size_t)i * ldc + j];
        return;
    }
#ifndef GPT_CPU_FD_TEST
    if (be->gemm_prec == GPT_GEMM_BF16 && be->amx) {
        gpt_amx_ws_freeze(be->amx, be->frozen_lo, be->frozen_hi, be->frozen_epoch);
        gpt_gemm_bf16_amx(be->amx, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    if (be->gemm_prec != GPT_GEMM_FP32) {
        cpu_gemm_half(be->gemm_prec, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M == 1) {
        /* One row (batch-1 decoding): sgemm would pack all of B, the weight, on every call, which
         * triples the memory traffic of a step that is all memory traffic; sgemv streams it once. */
        int incx = ta ? lda : 1;
        if (tb) /* B is N x K: C = B x */
            GPT_CPU_GEMV(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, incx, beta, C, 1);
        else /* B is K x N: C = B^T x */
            GPT_CPU_GEMV(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, incx, beta, C, 1);
        return;
    }
#ifndef GPT_CPU_FD_TEST
    if (!ta && M <= GPT_GEMM_SMALL_MAX_M && gpt_gemm_small_available()) {
        /* A few rows (decoding a batch): stream the weight once instead of packing it. */
        gpt_gemm_small(tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    GPT_CPU_SGEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
                B, ldb, beta, C, ldc);
}

static void cpu_bias_fwd(gpt_backend *be, real *y, int ldy, const real *b, int M, int N)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)M * N >= PAR_MIN)
    for (int m = 0; m < M; m++) add_to(y + (size_t)m * ldy, b, (size_t)N);
}

/* db[0..w) += the column sums of M rows of w values (w <= 64), rows in order. */
HOT static void colsum_block(real *db, const real *dy, int ldy, int M, int w)
{
    real acc[64] = {0};
    if (w == 64)
        for (int m = 0; m < M; m++) {
            const real *row = dy + (size_t)m * ldy;
            for (int n = 0; n < 64; n++) acc[n] += row[n];
        }
    else
        for (int m = 0; m < M; m++) {
            const real *row = dy + (size_t)m * ldy;
            for (int n = 0; n < w; n++) acc[n] += row[n];
        }
    for (int n = 0; n < w; n++) db[n] += acc[n];
}

static void cpu_bias_bwd(gpt_backend *be, real *db, const real *dy, int ldy, int M, int N)
{
    (void)be;
    /* Column blocks per thread, rows in order: deterministic. */
    enum { BLK = 64 };
    int nblk = (N + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)M * N >= PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int n0 = bk * BLK, n1 = n0 + BLK < N ? n0 + BLK : N;
        colsum_block(db + n0, dy + n0, ldy, M, n1 - n0);
    }
}

static void cpu_axpy(gpt_backend *be, real *y, const real *x, real a, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i += ELEM_CHUNK) axpy_to(y + i, x + i, a, n - i < ELEM_CHUNK ? n - i : ELEM_CHUNK);
}

static void cpu_add(gpt_backend *be, real *out, const real *a, const real *b, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i += ELEM_CHUNK) sum_to(out + i, a + i, b + i, n - i < ELEM_CHUNK ? n - i : ELEM_CHUNK);
}

static void cpu_embed_fwd(gpt_backend *be, real *x, const int *tok, const real *wte, const real *wpe, int B, int T,
                          int C)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)B * T * C >= PAR_MIN)
    for (int r = 0; r < B * T; r++) {
        const real *e = wte + (size_t)tok[r] * C;
        real *o = x + (size_t)r * C;
        if (wpe) {
            sum_to(o, e, wpe + (size_t)(r % T) * C, (size_t)C);
        } else {
            memcpy(o, e, (size_t)C * sizeof *o);
        }
    }
}

static void cpu_embed_bwd(gpt_backend *be, real *dwte, real *dwpe, const real *dx, const int *tok, int B, int T,
                          int C)
{
    (void)be;
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)B * T * C >= PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int r = 0; r < B * T; r++) {
            const real *g = dx + (size_t)r * C;
            add_to(dwte + (size_t)tok[r] * C + c0, g + c0, (size_t)(c1 - c0));
            if (dwpe) add_to(dwpe + (size_t)(r % T) * C + c0, g + c0, (size_t)(c1 - c0));
        }
    }
}

/* One row of a layer or RMS norm; mean and rstd out. Sums in LANES partial sums. */
HOT static void norm_fwd_row(int ln, real *yr, real *mean, real *rstd, const real *xr, const real *w, const real *b,
                             int C, real eps)
{
    real mu = 0;
    if (ln) {
        real sv[LANES] = {0};
        int c = 0;
        for (; c + LANES <= C; c += LANES)
            for (int l = 0; l < LANES; l++) sv[l] += xr[c + l];
        for (int l = 0; l < LANES; l++) mu += sv[l];
        for (; c < C; c++) mu += xr[c];
        mu /= C;
    }
    real var = 0, vv[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int l = 0; l < LANES; l++) vv[l] += (xr[c + l] - mu) * (xr[c + l] - mu);
    for (int l = 0; l < LANES; l++) var += vv[l];
    for (; c < C; c++) var += (xr[c] - mu) * (xr[c] - mu);
    var /= C;
    real rs = 1.0f / sqrt(var + eps);
    if (ln) {
        for (int k = 0; k < C; k++) yr[k] = (xr[k] - mu) * rs * w[k] + b[k];
        *mean = mu;
    } else {
        for (int k = 0; k < C; k++) yr[k] = w[k] * (xr[k] * rs);
    }
    *rstd = rs;
}

static void cpu_norm_fwd(gpt_backend *be, int kind, real *y, real *mean, real *rstd, const real *x, const real *w,
                         const real *b, int N, int C, real eps)
{
    (void)be;
    int ln = kind == GPT_NORM_OP_LAYERNORM;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++)
        norm_fwd_row(ln, y + (size_t)n * C, ln ? &mean[n] : NULL, &rstd[n], x + (size_t)n * C, w, b, C, eps);
}

/* dx row += the norm's input gradient for one row */
HOT static void norm_bwd_row(int ln, real *o, const real *xr, const real *g, const real *w, real mu, real rs, int C)
{
    real sd[LANES] = {0}, sx[LANES] = {0};
    int c = 0;
    for (; c + LANES <= C; c += LANES)
        for (int l = 0; l < LANES; l++) {
            real xhat = (xr[c + l] - mu) * rs, d = g[c + l] * w[c + l];
            sd[l] += d;
            sx[l] += d * xhat;
        }
    real sum_d = 0, sum_dx = 0;
    for (int l = 0; l < LANES; l++) sum_d += sd[l], sum_dx += sx[l];
    for (; c < C; c++) {
        real xhat = (xr[c] - mu) * rs, d = g[c] * w[c];
        sum_d += d;
        sum_dx += d * xhat;
    }
    sum_d = ln ? sum_d / C : 0;
    sum_dx /= C;
    for (int k = 0; k < C; k++) {
        real xhat = (xr[k] - mu) * rs;
        o[k] += rs * (g[k] * w[k] - sum_d - xhat * sum_dx);
    }
}

/* dw, db columns [c0, c1) (at most 64) summed over the rows in order */
HOT static void norm_bwd_cols(int ln, real *dw, real *db, const real *dy, const real *x, const real *mean,
                              const real *rstd, int N, int C, int c0, int c1)
{
    real aw[64] = {0}, ab[64] = {0};
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * C + c0, *g = dy + (size_t)n * C + c0;
        real mu = ln ? mean[n] : 0, rs = rstd[n];
        for (int c = 0; c < c1 - c0; c++) {
            aw[c] += g[c] * ((xr[c] - mu) * rs);
            ab[c] += g[c];
        }
    }
    for (int c = c0; c < c1; c++) {
        dw[c] += aw[c - c0];
        if (ln) db[c] += ab[c - c0];
    }
}

static void cpu_norm_bwd(gpt_backend *be, int kind, real *dx, real *dw, real *db, const real *dy, const real *x,
                         const real *w, const real *mean, const real *rstd, int N, int C)
{
    (void)be;
    int ln = kind == GPT_NORM_OP_LAYERNORM;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int n = 0; n < N; n++)
        norm_bwd_row(ln, dx + (size_t)n * C, x + (size_t)n * C, dy + (size_t)n * C, w, ln ? mean[n] : 0, rstd[n], C);
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)N * C >= PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        norm_bwd_cols(ln, dw, db, dy, x, mean, rstd, N, C, c0, c1);
    }
}

static void cpu_rope(gpt_backend *be, real *x, int ld, int B, int T, int nh, int D, const real *cos_t,
                     const real *sin_t, int inverse)
{
    (void)be;
    int half = D / 2;
    real sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static) if ((size_t)B * T * nh * D >= PAR_MIN)
    for (int r = 0; r < B * T; r++) {
        const real *cs = cos_t + (size_t)(r % T) * half, *sn = sin_t + (size_t)(r % T) * half;
        for (int h = 0; h < nh; h++) {
            real *v = x + (size_t)r * ld + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                real a = v[i], b = v[i + half], c = cs[i], s = sgn * sn[i];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

static void cpu_rope_pos(gpt_backend *be, real *x, int ld, int n, int nh, int D, const real *cos_t, const real *sin_t,
                         const int *pos)
{
    (void)be;
    int half = D / 2;
#pragma omp parallel for schedule(static) if ((size_t)n * nh * D >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const real *cs = cos_t + (size_t)pos[r] * half, *sn = sin_t + (size_t)pos[r] * half;
        for (int h = 0; h < nh; h++) {
            real *v = x + (size_t)r * ld + (size_t)h * D;
            for (int i = 0; i < half; i++) {
                real a = v[i], b = v[i + half], c = cs[i], s = sn[i];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

static void cpu_kv_store(gpt_backend *be, real *kc, real *vc, const real *k, const real *v, int ld, const int *seq,
                         const int *pos, int n, int ring, int KV, int D)
{
    (void)be;
    size_t w = (size_t)KV * D;
#pragma omp parallel for schedule(static) if ((size_t)n * KV * D >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        size_t slot = ((size_t)seq[r] * ring + (size_t)(pos[r] % ring)) * w;
        memcpy(kc + slot, k + (size_t)r * ld, w * sizeof *kc);
        memcpy(vc + slot, v + (size_t)r * ld, w * sizeof *vc);
    }
}

/* The keys a query at t sees: [lo, t]. */
static inline int attn_lo(int t, int window) { return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; }

/* Attention works on blocks of ATT_BQ query rows: S = Q K^T and O = P V become small GEMMs over
 * just the keys the block can see (causal, windowed), instead of T x T scalar loops. */
#define ATT_BQ 64

static inline int attn_blocks(int T) { return (T + ATT_BQ - 1) / ATT_BQ; }

/* Keys a block of rows [t0, t1) needs: [klo, t1). */
static inline int attn_block_lo(int t0, int window) { return attn_lo(t0, window); }

/* S (rows x nk, ld lds) holding scale * Q K^T: masked and softmaxed with the sink in place (P),
 * and the rows' log-sum-exp. Row i is query t0 + i; the block's keys start at key klo. */
static void attn_block_softmax(real *S, int lds, real *lse_out, int t0, int rows, int klo, int nk, int window,
                               const real *sink)
{
    for (int i = 0; i < rows; i++) {
        /* row t sees the keys [a, b) of the block's nk (klo <= lo <= t) */
        int t = t0 + i, a = attn_lo(t, window) - klo, b = t - klo + 1;
        real *srow = S + (size_t)i * lds;
        real m = lanes_max(srow + a, b - a, sink ? *sink : -(real)INFINITY);
        real z = (sink ? exp(*sink - m) : 0) + lanes_exp_sum(srow + a, b - a, m);
        for (int j = 0; j < a; j++) srow[j] = 0;
        for (int j = b; j < nk; j++) srow[j] = 0;
        scale_row(srow + a, b - a, 1 / z);
        lse_out[i] = m + log(z);
    }
}

/* Attention's products. With tiles (attn_gemm.h: AVX-512, d_head a multiple of 16 up to 64; never
 * in the double build) they run on register tiles from copies of the head's keys and values made
 * once per head (attn_head); else through sgemm on qkv itself. */
#ifdef GPT_CPU_FD_TEST
static int attn_tiles_ok(int D) { return (void)D, 0; }
#else
static int attn_tiles_ok(int D) { return gpt_attn_gemm_ok(D); }
#endif

/* Row stride of the packed transposes and of the score blocks for n columns: n + 16 with tiles,
 * where n a multiple of 1024 would put every row in one L1 set (the kernels read down columns). */
static inline int attn_ld(int n, int tiles) { return tiles ? n + 16 : n; }

/* One (batch, kv head)'s operands. The keys' and values' rows in qkv (ld apart; those of a big
 * model are pages apart) and, with tiles, K^T and V^T (D x T, row stride attn_ld(T)) and K and V
 * as contiguous rows (T x D). */
typedef struct {
    const real *k, *v;
    int ld, tiles;
    real *kt, *vt, *kr, *vr;
} attn_head;

static void attn_head_pack(attn_head *a, const real *k, const real *v, int ld, int T, int D, int want_vt)
{
    a->k = k, a->v = v, a->ld = ld;
    if (!a->tiles) return;
    int lt = attn_ld(T, 1);
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) a->kt[(size_t)d * lt + t] = k[(size_t)t * ld + d];
        if (want_vt)
            for (int d = 0; d < D; d++) a->vt[(size_t)d * lt + t] = v[(size_t)t * ld + d];
        memcpy(a->kr + (size_t)t * D, k + (size_t)t * ld, (size_t)D * sizeof *a->kr);
        memcpy(a->vr + (size_t)t * D, v + (size_t)t * ld, (size_t)D * sizeof *a->vr);
    }
}

static attn_head attn_head_alloc(int T, int D, int tiles)
{
    attn_head a = {0};
    a.tiles = tiles;
    if (tiles) {
        size_t nt = (size_t)D * attn_ld(T, 1), nr = (size_t)T * D;
        a.kt = malloc(nt * sizeof *a.kt), a.vt = malloc(nt * sizeof *a.vt);
        a.kr = malloc(nr * sizeof *a.kr), a.vr = malloc(nr * sizeof *a.vr);
    }
    return a;
}

static void attn_head_free(attn_head *a) { free(a->kt), free(a->vt), free(a->kr), free(a->vr); }

/* S (rows x nk, ld lds) = alpha X Y^T for keys [klo, klo + nk): Y the keys (yv 0) or values (1). */
static void attn_xyt(const attn_head *a, int yv, int rows, int nk, int klo, int D, real alpha, const real *x, int ldx,
                     real *S, int lds, int T)
{
#ifndef GPT_CPU_FD_TEST
    if (a->tiles) {
        gpt_attn_gemm_nt(rows, nk, D, alpha, x, ldx, (yv ? a->vt : a->kt) + klo, attn_ld(T, 1), S, lds);
        return;
    }
#else
    (void)T;
#endif
    const real *y = (yv ? a->v : a->k) + (size_t)klo * a->ld;
    GPT_CPU_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk, D, alpha, x, ldx, y, a->ld, 0, S, lds);
}

/* C (rows x D) (beta 0 or 1) += P Y, P (rows x nk, ld lds) over keys [klo, klo + nk). */
static void attn_py(const attn_head *a, int yv, int rows, int nk, int klo, int D, const real *P, int lds, real beta,
                    real *C, int ldc)
{
#ifndef GPT_CPU_FD_TEST
    if (a->tiles) {
        gpt_attn_gemm_nn(rows, nk, D, P, lds, 1, (yv ? a->vr : a->kr) + (size_t)klo * D, D, beta, C, ldc);
        return;
    }
#endif
    const real *y = (yv ? a->v : a->k) + (size_t)klo * a->ld;
    GPT_CPU_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, D, nk, 1, P, lds, y, a->ld, beta, C, ldc);
}

/* C (nk x D) += P^T X: P (rows x nk, ld lds), X rows x D (ldx). */
static void attn_ptx(int tiles, int rows, int nk, int D, const real *P, int lds, const real *x, int ldx, real *C,
                     int ldc)
{
#ifndef GPT_CPU_FD_TEST
    if (tiles) {
        gpt_attn_gemm_nn(nk, rows, D, P, 1, lds, x, ldx, 1, C, ldc);
        return;
    }
#else
    (void)tiles;
#endif
    GPT_CPU_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, nk, D, rows, 1, P, lds, x, ldx, 1, C, ldc);
}

static void cpu_attn_fwd(gpt_backend *be, real *out, real *lse, const real *qkv, const real *sinks, int B, int T,
                         int H, int KV, int D, int window, real scale)
{
    (void)be;
    int ld = (H + 2 * KV) * D, grp = H / KV, nb = attn_blocks(T), tiles = attn_tiles_ok(D);
    /* One thread per (batch, head): it packs the head's keys and values once for all its blocks. */
#pragma omp parallel if ((size_t)B * H * T * T * D >= PAR_MIN)
    {
        real *S = malloc((size_t)ATT_BQ * attn_ld(T, tiles) * sizeof *S);
        attn_head a = attn_head_alloc(T, D, tiles);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int kh = h / grp;
                const real *base = qkv + (size_t)b * T * ld;
                attn_head_pack(&a, base + (size_t)(H + kh) * D, base + (size_t)(H + KV + kh) * D, ld, T, D, 0);
                for (int blk = 0; blk < nb; blk++) {
                    int t0 = blk * ATT_BQ, rows = T - t0 < ATT_BQ ? T - t0 : ATT_BQ;
                    int klo = attn_block_lo(t0, window), nk = t0 + rows - klo, ls = attn_ld(nk, tiles);
                    const real *q = base + (size_t)t0 * ld + (size_t)h * D;
                    attn_xyt(&a, 0, rows, nk, klo, D, scale, q, ld, S, ls, T); // S = scale Q K^T
                    attn_block_softmax(S, ls, lse + ((size_t)b * H + h) * T + t0, t0, rows, klo, nk, window,
                                       sinks ? &sinks[h] : NULL);
                    real *o = out + ((size_t)b * T + t0) * H * D + (size_t)h * D;
                    attn_py(&a, 1, rows, nk, klo, D, S, ls, 0, o, H * D); // O = P V
                }
            }
        free(S);
        attn_head_free(&a);
    }
}

static void cpu_attn_bwd(gpt_backend *be, real *dqkv, real *dsinks, const real *dout, const real *out,
                         const real *lse, const real *qkv, const real *sinks, int B, int T, int H, int KV, int D,
                         int window, real scale)
{
    (void)be;
    int ld = (H + 2 * KV) * D, grp = H / KV, nb = attn_blocks(T), tiles = attn_tiles_ok(D);
    memset(dqkv, 0, (size_t)B * T * ld * sizeof *dqkv);
    double *dsink_part = calloc((size_t)B * H, sizeof *dsink_part); /* the row terms cancel: sum in double */
    /* One thread owns a (batch, kv head): it alone writes those dK, dV and its heads' dQ. */
#pragma omp parallel if ((size_t)B * H * T * T * D >= PAR_MIN)
    {
        size_t blk_sz = (size_t)ATT_BQ * attn_ld(T, tiles);
        real *P = malloc(blk_sz * sizeof *P), *dP = malloc(blk_sz * sizeof *dP);
        attn_head a = attn_head_alloc(T, D, tiles);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            for (int kh = 0; kh < KV; kh++) {
                const real *base = qkv + (size_t)b * T * ld;
                attn_head_pack(&a, base + (size_t)(H + kh) * D, base + (size_t)(H + KV + kh) * D, ld, T, D, 1);
                for (int h = kh * grp; h < (kh + 1) * grp; h++)
                    for (int blk = 0; blk < nb; blk++) {
                        int t0 = blk * ATT_BQ, rows = T - t0 < ATT_BQ ? T - t0 : ATT_BQ;
                        int klo = attn_block_lo(t0, window), nk = t0 + rows - klo, ls = attn_ld(nk, tiles);
                        const real *q = base + (size_t)t0 * ld + (size_t)h * D;
                        const real *go = dout + ((size_t)b * T + t0) * H * D + (size_t)h * D;
                        const real *o = out + ((size_t)b * T + t0) * H * D + (size_t)h * D;
                        real *dq = dqkv + ((size_t)b * T + t0) * ld + (size_t)h * D;
                        real *dk = dqkv + ((size_t)b * T + klo) * ld + (size_t)(H + kh) * D;
                        real *dv = dqkv + ((size_t)b * T + klo) * ld + (size_t)(H + KV + kh) * D;
                        /* recompute P from the saved log-sum-exp */
                        const real *lrow = lse + ((size_t)b * H + h) * T + t0;
                        attn_xyt(&a, 0, rows, nk, klo, D, scale, q, ld, P, ls, T);
                        for (int i = 0; i < rows; i++) {
                            int t = t0 + i, lo = attn_lo(t, window) - klo, e = t - klo + 1;
                            real *pr = P + (size_t)i * ls;
                            for (int j = 0; j < lo; j++) pr[j] = 0;
                            rows_exp_sub(pr + lo, e - lo, lrow[i]);
                            for (int j = e; j < nk; j++) pr[j] = 0;
                        }
                        attn_xyt(&a, 1, rows, nk, klo, D, 1, go, H * D, dP, ls, T); // dP = dO V^T
                        for (int i = 0; i < rows; i++) {
                            /* sum_j P dP = dO . O */
                            real d = lanes_dot(go + (size_t)i * H * D, o + (size_t)i * H * D, D);
                            ds_row(dP + (size_t)i * ls, P + (size_t)i * ls, nk, d, scale); // dS
                            if (sinks) dsink_part[(size_t)b * H + h] -= exp(sinks[h] - lrow[i]) * d;
                        }
                        attn_py(&a, 0, rows, nk, klo, D, dP, ls, 1, dq, ld);           // dQ += dS K
                        attn_ptx(tiles, rows, nk, D, dP, ls, q, ld, dk, ld);           // dK += dS^T Q
                        attn_ptx(tiles, rows, nk, D, P, ls, go, H * D, dv, ld);        // dV += P^T dO
                    }
            }
        free(P), free(dP);
        attn_head_free(&a);
    }
    if (sinks && dsinks)
        for (int h = 0; h < H; h++) {
            double acc = 0;
            for (int b = 0; b < B; b++) acc += dsink_part[(size_t)b * H + h];
            dsinks[h] += (real)acc;
        }
    free(dsink_part);
}

static void cpu_attn_cached(gpt_backend *be, real *out, const real *q, int ldq, const real *kc, const real *vc,
                            const int *seq, const int *pos, int n, int ring, const real *sinks, int H, int KV, int D,
                            int window, real scale)
{
    (void)be;
#ifndef GPT_CPU_FD_TEST
    if (gpt_cpu_attn_cached_fast(D)) { /* AVX-512, four keys' dot products reduced together */
        gpt_cpu_attn_cached_q(be, GPT_KV_F32, out, q, ldq, kc, vc, NULL, NULL, seq, pos, n, ring, sinks, H, KV, D,
                              window, scale);
        return;
    }
#endif
    int grp = H / KV;
    size_t w = (size_t)KV * D;
#pragma omp parallel if ((size_t)n * H * D * 64 >= PAR_MIN)
    {
        int maxlen = 0;
        for (int r = 0; r < n; r++) maxlen = pos[r] + 1 > maxlen ? pos[r] + 1 : maxlen;
        real *s = malloc((size_t)(maxlen > 0 ? maxlen : 1) * sizeof *s);
#pragma omp for collapse(2) schedule(static)
        for (int r = 0; r < n; r++)
            for (int h = 0; h < H; h++) {
                const real *qr = q + (size_t)r * ldq + (size_t)h * D;
                int kh = h / grp, t = pos[r], lo = attn_lo(t, window);
                const real *kbase = kc + (size_t)seq[r] * ring * w + (size_t)kh * D;
                const real *vbase = vc + (size_t)seq[r] * ring * w + (size_t)kh * D;
                /* keys lo..t sit in the ring at (j % ring): at most two runs of consecutive slots */
                int nk = t - lo + 1;
                for (int j = lo; j <= t;) {
                    int slot = j % ring, len = t - j + 1 < ring - slot ? t - j + 1 : ring - slot;
                    for (int u = 0; u < len; u++) s[j - lo + u] = lanes_dot(qr, kbase + (size_t)(slot + u) * w, D) * scale;
                    j += len;
                }
                real m = lanes_max(s, nk, sinks ? sinks[h] : -(real)INFINITY);
                real z = (sinks ? exp(sinks[h] - m) : 0) + lanes_exp_sum(s, nk, m);
                real *o = out + (size_t)r * H * D + (size_t)h * D;
                for (int i = 0; i < D; i++) o[i] = 0;
                for (int j = lo; j <= t;) {
                    int slot = j % ring, len = t - j + 1 < ring - slot ? t - j + 1 : ring - slot;
                    for (int u = 0; u < len; u++) axpy_to(o, vbase + (size_t)(slot + u) * w, s[j - lo + u] / z, D);
                    j += len;
                }
            }
        free(s);
    }
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static inline real tanh_v(real u) { return 1 - 2 / (vexp(2 * u) + 1); }

HOT static void gelu_fwd_chunk(real *y, const real *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        real v = x[i];
        y[i] = 0.5f * v * (1.0f + tanh_v(GELU_K * (v + 0.044715f * v * v * v)));
    }
}

HOT static void gelu_bwd_chunk(real *dx, const real *x, const real *dy, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        real v = x[i], u = GELU_K * (v + 0.044715f * v * v * v), t = tanh_v(u);
        real du = GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
}

#define CHUNK 4096

static void cpu_gelu_fwd(gpt_backend *be, real *y, const real *x, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i += CHUNK) gelu_fwd_chunk(y + i, x + i, n - i < CHUNK ? n - i : CHUNK);
}

static void cpu_gelu_bwd(gpt_backend *be, real *dx, const real *x, const real *dy, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i += CHUNK) gelu_bwd_chunk(dx + i, x + i, dy + i, n - i < CHUNK ? n - i : CHUNK);
}

static inline real sigmoid_v(real x) { return 1.0f / (1.0f + vexp(-x)); }

HOT static void swiglu_fwd_row(real *y, const real *gu, int F, real alpha, real limit)
{
    for (int f = 0; f < F; f++) {
        real g = gu[2 * f], l = gu[2 * f + 1];
        g = g > limit ? limit : g;
        l = l > limit ? limit : l < -limit ? -limit : l;
        y[f] = g * sigmoid_v(alpha * g) * (l + 1.0f);
    }
}

HOT static void swiglu_bwd_row(real *dgu, const real *gu, const real *dy, int F, real alpha, real limit)
{
    for (int f = 0; f < F; f++) {
        real g0 = gu[2 * f], l0 = gu[2 * f + 1];
        real g = g0 > limit ? limit : g0, l = l0 > limit ? limit : l0 < -limit ? -limit : l0;
        real s = sigmoid_v(alpha * g), glu = g * s, d = dy[f];
        /* clamp passes the gradient where the input lies inside the bounds (edges included) */
        real dg = g0 <= limit ? d * (l + 1.0f) * (s + g * alpha * s * (1.0f - s)) : 0.0f;
        real dl = (l0 >= -limit && l0 <= limit) ? d * glu : 0.0f;
        dgu[2 * f] = dg;
        dgu[2 * f + 1] = dl;
    }
}

static void cpu_swiglu_fwd(gpt_backend *be, real *y, const real *gu, int N, int F, real alpha, real limit)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * F >= PAR_MIN)
    for (int n = 0; n < N; n++) swiglu_fwd_row(y + (size_t)n * F, gu + (size_t)n * 2 * F, F, alpha, limit);
}

static void cpu_swiglu_bwd(gpt_backend *be, real *dgu, const real *gu, const real *dy, int N, int F, real alpha,
                           real limit)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * F >= PAR_MIN)
    for (int n = 0; n < N; n++)
        swiglu_bwd_row(dgu + (size_t)n * 2 * F, gu + (size_t)n * 2 * F, dy + (size_t)n * F, F, alpha, limit);
}

static void cpu_topk_softmax(gpt_backend *be, int *idx, real *w, const real *logits, int N, int E, int k)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * E * k >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const real *x = logits + (size_t)n * E;
        int *id = idx + (size_t)n * k;
        real *wr = w + (size_t)n * k;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) taken |= id[i] == e;
                if (!taken && (best < 0 || x[e] > x[best])) best = e;
            }
            id[j] = best;
        }
        real m = x[id[0]], z = 0;
        for (int j = 0; j < k; j++) z += (wr[j] = exp(x[id[j]] - m));
        for (int j = 0; j < k; j++) wr[j] /= z;
    }
}

static void cpu_topk_softmax_bwd(gpt_backend *be, real *dlogits, const real *dw, const real *w, const int *idx,
                                 int N, int E, int k)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * E >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const real *g = dw + (size_t)n * k, *wr = w + (size_t)n * k;
        real dot = 0;
        for (int j = 0; j < k; j++) dot += wr[j] * g[j];
        for (int j = 0; j < k; j++) dlogits[(size_t)n * E + idx[(size_t)n * k + j]] += wr[j] * (g[j] - dot);
    }
}

static void cpu_softmax_rows(gpt_backend *be, real *p, const real *x, int N, int E)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * E >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * E;
        real *pr = p + (size_t)n * E, m = xr[0], z = 0;
        for (int e = 1; e < E; e++) m = xr[e] > m ? xr[e] : m;
        for (int e = 0; e < E; e++) z += (pr[e] = exp(xr[e] - m));
        for (int e = 0; e < E; e++) pr[e] /= z;
    }
}

static void cpu_softmax_rows_bwd_shared(gpt_backend *be, real *dx, const real *p, const real *g, int N, int E)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * E >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const real *pr = p + (size_t)n * E;
        real dot = 0;
        for (int e = 0; e < E; e++) dot += pr[e] * g[e];
        for (int e = 0; e < E; e++) dx[(size_t)n * E + e] += pr[e] * (g[e] - dot);
    }
}

static void cpu_colsum(gpt_backend *be, real *out, const real *x, int N, int E)
{
    (void)be;
    for (int e = 0; e < E; e++) out[e] = 0;
    for (int n = 0; n < N; n++)
        for (int e = 0; e < E; e++) out[e] += x[(size_t)n * E + e];
}

static void cpu_gather_rows(gpt_backend *be, real *dst, const real *src, const int *rows, const real *scale, int n,
                            int C)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)n * C >= PAR_MIN)
    for (int i = 0; i < n; i++) {
        real *d = dst + (size_t)i * C;
        const real *s = src + (size_t)rows[i] * C;
        if (scale)
            scale_to(d, s, scale[i], (size_t)C);
        else
            memcpy(d, s, (size_t)C * sizeof *d);
    }
}

static void cpu_scatter_add_rows(gpt_backend *be, real *dst, const real *src, const int *rows, const real *scale,
                                 int n, int C)
{
    (void)be;
    enum { BLK = 64 };
    int nblk = (C + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) if ((size_t)n * C >= PAR_MIN)
    for (int bk = 0; bk < nblk; bk++) {
        int c0 = bk * BLK, c1 = c0 + BLK < C ? c0 + BLK : C;
        for (int i = 0; i < n; i++) {
            real s = scale ? scale[i] : 1.0f;
            axpy_to(dst + (size_t)rows[i] * C + c0, src + (size_t)i * C + c0, s, (size_t)(c1 - c0));
        }
    }
}

static void cpu_row_dot(gpt_backend *be, real *out, const real *a, const int *rows, const real *b, int n, int C)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)n * C >= PAR_MIN)
    for (int i = 0; i < n; i++) {
        const real *x = a + (size_t)rows[i] * C, *y = b + (size_t)i * C;
        real d = 0;
        for (int c = 0; c < C; c++) d += x[c] * y[c];
        out[i] = d;
    }
}

HOT static double row_sumexp(const real *x, int V, real m)
{
    double zv[LANES] = {0};
    int v = 0;
    for (; v + LANES <= V; v += LANES)
        for (int l = 0; l < LANES; l++) zv[l] += (double)vexp(x[v + l] - m);
    double z = 0;
    for (int l = 0; l < LANES; l++) z += zv[l];
    for (; v < V; v++) z += (double)vexp(x[v] - m);
    return z;
}

/* The row's maximum (x[0] when that is NaN, as a running `>` from x[0] gives), the index of its
 * first occurrence (*am) and the row's sum in double. Each lane keeps its first maximum; the
 * smallest index among the lanes that hold the row's maximum is the row's first. */
HOT static real row_max_sum(const real *x, int V, int *am, double *sum)
{
    real mv[LANES];
    int mi[LANES];
    double sv[LANES] = {0};
    for (int l = 0; l < LANES; l++) mv[l] = x[0], mi[l] = 0;
    int v = 0;
    for (; v + LANES <= V; v += LANES)
        for (int l = 0; l < LANES; l++) {
            real a = x[v + l];
            int gt = a > mv[l];
            mi[l] = gt ? v + l : mi[l];
            mv[l] = gt ? a : mv[l];
            sv[l] += (double)a;
        }
    real m = x[0];
    double s = 0;
    for (int l = 0; l < LANES; l++) m = mv[l] > m ? mv[l] : m, s += sv[l];
    int best = 0, found = 0;
    for (int l = 0; l < LANES; l++)
        if (mv[l] == m && (!found || mi[l] < best)) best = mi[l], found = 1;
    for (; v < V; v++) {
        if (x[v] > m) m = x[v], best = v, found = 1;
        s += (double)x[v];
    }
    *am = found ? best : 0;
    *sum = s;
    return m;
}

/* d[v] = exp(x[v] - m) (d may be x) and their sum in double */
HOT static double row_exp_sum(real *d, const real *x, int V, real m)
{
    double zv[LANES] = {0};
    int v = 0;
    for (; v + LANES <= V; v += LANES)
        for (int l = 0; l < LANES; l++) zv[l] += (double)(d[v + l] = vexp(x[v + l] - m));
    double z = 0;
    for (int l = 0; l < LANES; l++) z += zv[l];
    for (; v < V; v++) z += (double)(d[v] = vexp(x[v] - m));
    return z;
}

/* e holds exp(x - m): d = dscale * (softmax(x) - u), the target's one-hot term left to the caller */
HOT static void row_softmax_grad(real *d, int V, real inv_z, real dscale, real u)
{
    for (int v = 0; v < V; v++) d[v] = dscale * (d[v] * inv_z - u);
}

static void cpu_xent(gpt_backend *be, real *losses, int *correct, real *dlogits, const real *logits,
                     const int *targets, int N, int V, int Vp, real smoothing, real dscale)
{
    (void)be;
#pragma omp parallel for schedule(static) if ((size_t)N * V >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const real *x = logits + (size_t)n * Vp;
        int t = targets[n];
        double sum;
        int am;
        real m = row_max_sum(x, V, &am, &sum);
        /* with a gradient to write, keep the exponentials there (dlogits may be the logits) */
        real *d = dlogits ? dlogits + (size_t)n * Vp : NULL, xt = t >= 0 ? x[t] : 0;
        double z = d && t >= 0 ? row_exp_sum(d, x, V, m) : row_sumexp(x, V, m);
        real lse = m + (real)log(z);
        if (t < 0) {
            losses[n] = 0;
            correct[n] = 0;
        } else {
            real nll = lse - xt, uni = lse - (real)(sum / V);
            losses[n] = (1.0f - smoothing) * nll + smoothing * uni;
            correct[n] = am == t;
        }
        if (d) {
            if (t < 0) {
                memset(d, 0, (size_t)Vp * sizeof *d);
                continue;
            }
            row_softmax_grad(d, V, (real)(1.0 / z), dscale, smoothing / V);
            d[t] -= dscale * (1.0f - smoothing);
            for (int v = V; v < Vp; v++) d[v] = 0;
        }
    }
}

#ifndef GPT_CPU_FD_TEST

static void cpu_mxfp4_matmul(gpt_backend *be, float *out, int ldo, const float *x, int ldx, const unsigned char *blocks,
                             const unsigned char *scales, const float *bias, int n, int K, int O)
{
    (void)be;
    gpt_mxfp4_matmul(out, ldo, x, ldx, blocks, scales, bias, n, K, O);
}

/* The groups one after another through be->gemm: the very calls a caller's own loop would make,
 * so the same bits (and GPT_PROFILE counts each group as a gemm). */
static void cpu_gemm_grouped(gpt_backend *be, int ta, int tb, int n, const int *M, const int *N, const int *K,
                             float alpha, const float *const *A, const int *lda, const float *const *B, const int *ldb,
                             float beta, float *const *C, const int *ldc)
{
    for (int g = 0; g < n; g++)
        be->gemm(be, ta, tb, M[g], N[g], K[g], alpha, A[g], lda[g], B[g], ldb[g], beta, C[g], ldc[g]);
}

/* ---- GPT_PROFILE=1: time every op, print a table when the backend is destroyed ---- */

enum {P_MXFP4_MATMUL, P_ROPE_POS, P_KV_STORE, P_ATTN_CACHED, P_GEMM, P_BIAS_FWD, P_BIAS_BWD, P_AXPY, P_ADD, P_EMBED_FWD, P_EMBED_BWD, P_NORM_FWD, P_NORM_BWD, P_ROPE, P_ATTN_FWD, P_ATTN_BWD, P_GELU_FWD, P_GELU_BWD, P_SWIGLU_FWD, P_SWIGLU_BWD, P_TOPK_SOFTMAX, P_TOPK_SOFTMAX_BWD, P_SOFTMAX_ROWS, P_SOFTMAX_ROWS_BWD_SHARED, P_COLSUM, P_GATHER_ROWS, P_SCATTER_ADD_ROWS, P_ROW_DOT, P_XENT, P_KV_STORE_Q, P_ATTN_CACHED_Q, P_COUNT};
static const char *const prof_names[P_COUNT] = {"mxfp4_matmul", "rope_pos", "kv_store", "attn_cached", "gemm", "bias_fwd", "bias_bwd", "axpy", "add", "embed_fwd", "embed_bwd", "norm_fwd", "norm_bwd", "rope", "attn_fwd", "attn_bwd", "gelu_fwd", "gelu_bwd", "swiglu_fwd", "swiglu_bwd", "topk_softmax", "topk_softmax_bwd", "softmax_rows", "softmax_rows_bwd_shared", "colsum", "gather_rows", "scatter_add_rows", "row_dot", "xent", "kv_store_q", "attn_cached_q"};

typedef struct {
    double secs[P_COUNT];
    long calls[P_COUNT];
} cpu_prof;

static void prof_gemm(gpt_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    double t0 = omp_get_wtime();
    cpu_gemm(be, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_GEMM] += omp_get_wtime() - t0;
    prof_->calls[P_GEMM]++;
}

static void prof_bias_fwd(gpt_backend *be, float *y, int ldy, const float *b, int M, int N)
{
    double t0 = omp_get_wtime();
    cpu_bias_fwd(be, y, ldy, b, M, N);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_BIAS_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_BIAS_FWD]++;
}

static void prof_bias_bwd(gpt_backend *be, float *db, const float *dy, int ldy, int M, int N)
{
    double t0 = omp_get_wtime();
    cpu_bias_bwd(be, db, dy, ldy, M, N);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_BIAS_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_BIAS_BWD]++;
}

static void prof_axpy(gpt_backend *be, float *y, const float *x, float a, size_t n)
{
    double t0 = omp_get_wtime();
    cpu_axpy(be, y, x, a, n);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_AXPY] += omp_get_wtime() - t0;
    prof_->calls[P_AXPY]++;
}

static void prof_add(gpt_backend *be, float *out, const float *a, const float *b, size_t n)
{
    double t0 = omp_get_wtime();
    cpu_add(be, out, a, b, n);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ADD] += omp_get_wtime() - t0;
    prof_->calls[P_ADD]++;
}

static void prof_embed_fwd(gpt_backend *be, float *x, const int *tok, const float *wte, const float *wpe, int B, int T, int C)
{
    double t0 = omp_get_wtime();
    cpu_embed_fwd(be, x, tok, wte, wpe, B, T, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_EMBED_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_EMBED_FWD]++;
}

static void prof_embed_bwd(gpt_backend *be, float *dwte, float *dwpe, const float *dx, const int *tok, int B, int T, int C)
{
    double t0 = omp_get_wtime();
    cpu_embed_bwd(be, dwte, dwpe, dx, tok, B, T, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_EMBED_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_EMBED_BWD]++;
}

static void prof_norm_fwd(gpt_backend *be, int kind, float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int N, int C, float eps)
{
    double t0 = omp_get_wtime();
    cpu_norm_fwd(be, kind, y, mean, rstd, x, w, b, N, C, eps);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_NORM_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_NORM_FWD]++;
}

static void prof_norm_bwd(gpt_backend *be, int kind, float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, const float *mean, const float *rstd, int N, int C)
{
    double t0 = omp_get_wtime();
    cpu_norm_bwd(be, kind, dx, dw, db, dy, x, w, mean, rstd, N, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_NORM_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_NORM_BWD]++;
}

static void prof_rope(gpt_backend *be, float *x, int ld, int B, int T, int nh, int D, const float *cos_t, const float *sin_t, int inverse)
{
    double t0 = omp_get_wtime();
    cpu_rope(be, x, ld, B, T, nh, D, cos_t, sin_t, inverse);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ROPE] += omp_get_wtime() - t0;
    prof_->calls[P_ROPE]++;
}

static void prof_attn_fwd(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D, int window, float scale)
{
    double t0 = omp_get_wtime();
    cpu_attn_fwd(be, out, lse, qkv, sinks, B, T, H, KV, D, window, scale);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ATTN_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_ATTN_FWD]++;
}

static void prof_attn_bwd(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out, const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D, int window, float scale)
{
    double t0 = omp_get_wtime();
    cpu_attn_bwd(be, dqkv, dsinks, dout, out, lse, qkv, sinks, B, T, H, KV, D, window, scale);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ATTN_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_ATTN_BWD]++;
}

static void prof_gelu_fwd(gpt_backend *be, float *y, const float *x, size_t n)
{
    double t0 = omp_get_wtime();
    cpu_gelu_fwd(be, y, x, n);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_GELU_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_GELU_FWD]++;
}

static void prof_gelu_bwd(gpt_backend *be, float *dx, const float *x, const float *dy, size_t n)
{
    double t0 = omp_get_wtime();
    cpu_gelu_bwd(be, dx, x, dy, n);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_GELU_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_GELU_BWD]++;
}

static void prof_swiglu_fwd(gpt_backend *be, float *y, const float *gu, int N, int F, float alpha, float limit)
{
    double t0 = omp_get_wtime();
    cpu_swiglu_fwd(be, y, gu, N, F, alpha, limit);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_SWIGLU_FWD] += omp_get_wtime() - t0;
    prof_->calls[P_SWIGLU_FWD]++;
}

static void prof_swiglu_bwd(gpt_backend *be, float *dgu, const float *gu, const float *dy, int N, int F, float alpha, float limit)
{
    double t0 = omp_get_wtime();
    cpu_swiglu_bwd(be, dgu, gu, dy, N, F, alpha, limit);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_SWIGLU_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_SWIGLU_BWD]++;
}

static void prof_topk_softmax(gpt_backend *be, int *idx, float *w, const float *logits, int N, int E, int k)
{
    double t0 = omp_get_wtime();
    cpu_topk_softmax(be, idx, w, logits, N, E, k);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_TOPK_SOFTMAX] += omp_get_wtime() - t0;
    prof_->calls[P_TOPK_SOFTMAX]++;
}

static void prof_topk_softmax_bwd(gpt_backend *be, float *dlogits, const float *dw, const float *w, const int *idx, int N, int E, int k)
{
    double t0 = omp_get_wtime();
    cpu_topk_softmax_bwd(be, dlogits, dw, w, idx, N, E, k);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_TOPK_SOFTMAX_BWD] += omp_get_wtime() - t0;
    prof_->calls[P_TOPK_SOFTMAX_BWD]++;
}

static void prof_softmax_rows(gpt_backend *be, float *p, const float *x, int N, int E)
{
    double t0 = omp_get_wtime();
    cpu_softmax_rows(be, p, x, N, E);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_SOFTMAX_ROWS] += omp_get_wtime() - t0;
    prof_->calls[P_SOFTMAX_ROWS]++;
}

static void prof_softmax_rows_bwd_shared(gpt_backend *be, float *dx, const float *p, const float *g, int N, int E)
{
    double t0 = omp_get_wtime();
    cpu_softmax_rows_bwd_shared(be, dx, p, g, N, E);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_SOFTMAX_ROWS_BWD_SHARED] += omp_get_wtime() - t0;
    prof_->calls[P_SOFTMAX_ROWS_BWD_SHARED]++;
}

static void prof_colsum(gpt_backend *be, float *out, const float *x, int N, int E)
{
    double t0 = omp_get_wtime();
    cpu_colsum(be, out, x, N, E);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_COLSUM] += omp_get_wtime() - t0;
    prof_->calls[P_COLSUM]++;
}

static void prof_gather_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale, int n, int C)
{
    double t0 = omp_get_wtime();
    cpu_gather_rows(be, dst, src, rows, scale, n, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_GATHER_ROWS] += omp_get_wtime() - t0;
    prof_->calls[P_GATHER_ROWS]++;
}

static void prof_scatter_add_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale, int n, int C)
{
    double t0 = omp_get_wtime();
    cpu_scatter_add_rows(be, dst, src, rows, scale, n, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_SCATTER_ADD_ROWS] += omp_get_wtime() - t0;
    prof_->calls[P_SCATTER_ADD_ROWS]++;
}

static void prof_row_dot(gpt_backend *be, float *out, const float *a, const int *rows, const float *b, int n, int C)
{
    double t0 = omp_get_wtime();
    cpu_row_dot(be, out, a, rows, b, n, C);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ROW_DOT] += omp_get_wtime() - t0;
    prof_->calls[P_ROW_DOT]++;
}

static void prof_xent(gpt_backend *be, float *losses, int *correct, float *dlogits, const float *logits, const int *targets, int N, int V, int Vp, float smoothing, float dscale)
{
    double t0 = omp_get_wtime();
    cpu_xent(be, losses, correct, dlogits, logits, targets, N, V, Vp, smoothing, dscale);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_XENT] += omp_get_wtime() - t0;
    prof_->calls[P_XENT]++;
}

static void prof_rope_pos(gpt_backend *be, float *x, int ld, int n, int nh, int D, const float *cos_t,
                          const float *sin_t, const int *pos)
{
    double t0 = omp_get_wtime();
    cpu_rope_pos(be, x, ld, n, nh, D, cos_t, sin_t, pos);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ROPE_POS] += omp_get_wtime() - t0;
    prof_->calls[P_ROPE_POS]++;
}

static void prof_kv_store(gpt_backend *be, float *kc, float *vc, const float *k, const float *v, int ld,
                          const int *seq, const int *pos, int n, int ring, int KV, int D)
{
    double t0 = omp_get_wtime();
    cpu_kv_store(be, kc, vc, k, v, ld, seq, pos, n, ring, KV, D);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_KV_STORE] += omp_get_wtime() - t0;
    prof_->calls[P_KV_STORE]++;
}

static void prof_attn_cached(gpt_backend *be, float *out, const float *q, int ldq, const float *kc, const float *vc,
                             const int *seq, const int *pos, int n, int ring, const float *sinks, int H, int KV, int D,
                             int window, float scale)
{
    double t0 = omp_get_wtime();
    cpu_attn_cached(be, out, q, ldq, kc, vc, seq, pos, n, ring, sinks, H, KV, D, window, scale);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ATTN_CACHED] += omp_get_wtime() - t0;
    prof_->calls[P_ATTN_CACHED]++;
}

static void prof_kv_store_q(gpt_backend *be, int dtype, void *kc, void *vc, float *ks, float *vs, const float *k,
                            const float *v, int ld, const int *seq, const int *pos, int n, int ring, int KV, int D)
{
    double t0 = omp_get_wtime();
    gpt_cpu_kv_store_q(be, dtype, kc, vc, ks, vs, k, v, ld, seq, pos, n, ring, KV, D);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_KV_STORE_Q] += omp_get_wtime() - t0;
    prof_->calls[P_KV_STORE_Q]++;
}

static void prof_attn_cached_q(gpt_backend *be, int dtype, float *out, const float *q, int ldq, const void *kc,
                               const void *vc, const float *ks, const float *vs, const int *seq, const int *pos, int n,
                               int ring, const float *sinks, int H, int KV, int D, int window, float scale)
{
    double t0 = omp_get_wtime();
    gpt_cpu_attn_cached_q(be, dtype, out, q, ldq, kc, vc, ks, vs, seq, pos, n, ring, sinks, H, KV, D, window, scale);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_ATTN_CACHED_Q] += omp_get_wtime() - t0;
    prof_->calls[P_ATTN_CACHED_Q]++;
}

static void prof_mxfp4_matmul(gpt_backend *be, float *out, int ldo, const float *x, int ldx,
                              const unsigned char *blocks, const unsigned char *scales, const float *bias, int n, int K,
                              int O)
{
    double t0 = omp_get_wtime();
    cpu_mxfp4_matmul(be, out, ldo, x, ldx, blocks, scales, bias, n, K, O);
    cpu_prof *prof_ = be->ctx;
    prof_->secs[P_MXFP4_MATMUL] += omp_get_wtime() - t0;
    prof_->calls[P_MXFP4_MATMUL]++;
}

static void cpu_destroy(gpt_backend *be)
{
#ifndef GPT_CPU_FD_TEST
    gpt_amx_ws_free(be->amx);
#endif
    free(be->amx);
    cpu_prof *p = be->ctx;
    if (p) {
        double total = 0;
        for (int i = 0; i < P_COUNT; i++) total += p->secs[i];
        fprintf(stderr, "gpt: cpu backend profile (%.3f s in ops)\n", total);
        for (int i = 0; i < P_COUNT; i++)
            if (p->calls[i])
                fprintf(stderr, "  %-26s %9.3f s %5.1f%% %8ld calls\n", prof_names[i], p->secs[i],
                        total > 0 ? 100 * p->secs[i] / total : 0, p->calls[i]);
        free(p);
    }
    free(be);
}

/* ---- optimizer helpers: optim.c holds the definitions, so host and backend paths share bits ---- */
static void cpu_adamw(gpt_backend *be, float *p, const float *g, float *m, float *v, size_t n, const gpt_adamw_args *a)
{
    (void)be;
    gpt_adamw_update(p, g, m, v, n, a);
}
static double cpu_sumsq(gpt_backend *be, const float *x, size_t n)
{
    (void)be;
    return gpt_sumsq(x, n);
}
static void cpu_scale(gpt_backend *be, float *x, float a, size_t n)
{
    (void)be;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i += ELEM_CHUNK) scale_to(x + i, x + i, a, n - i < ELEM_CHUNK ? n - i : ELEM_CHUNK);
}
static int cpu_nonfinite(gpt_backend *be, const float *x, size_t n)
{
    (void)be;
    return gpt_has_nonfinite(x, n);
}

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
        .gemm_grouped = cpu_gemm_grouped,
        .bias_fwd = cpu_bias_fwd,
        .bias_bwd = cpu_bias_bwd,
        .axpy = cpu_axpy,
        .add = cpu_add,
        .embed_fwd = cpu_embed_fwd,
        .embed_bwd = cpu_embed_bwd,
        .norm_fwd = cpu_norm_fwd,
        .norm_bwd = cpu_norm_bwd,
        .rope = cpu_rope,
        .rope_pos = cpu_rope_pos,
        .kv_store = cpu_kv_store,
        .attn_cached = cpu_attn_cached,
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
        .mxfp4_matmul = cpu_mxfp4_matmul,
        .kv_store_q = gpt_cpu_kv_store_q,
        .attn_cached_q = gpt_cpu_attn_cached_q,
        .adamw = cpu_adamw,
        .sumsq = cpu_sumsq,
        .scale = cpu_scale,
        .nonfinite = cpu_nonfinite,
    };
#ifndef GPT_CPU_FD_TEST
    if (gpt_amx_available()) be->amx = gpt_xcalloc(1, sizeof *be->amx);
#endif
    const char *prof = getenv("GPT_PROFILE");
    if (prof && *prof && strcmp(prof, "0") != 0) {
        be->ctx = gpt_xcalloc(1, sizeof(cpu_prof));
        be->rope_pos = prof_rope_pos;
        be->kv_store = prof_kv_store;
        be->attn_cached = prof_attn_cached;
        be->gemm = prof_gemm;
        be->bias_fwd = prof_bias_fwd;
        be->bias_bwd = prof_bias_bwd;
        be->axpy = prof_axpy;
        be->add = prof_add;
        be->embed_fwd = prof_embed_fwd;
        be->embed_bwd = prof_embed_bwd;
        be->norm_fwd = prof_norm_fwd;
        be->norm_bwd = prof_norm_bwd;
        be->rope = prof_rope;
        be->attn_fwd = prof_attn_fwd;
        be->attn_bwd = prof_attn_bwd;
        be->gelu_fwd = prof_gelu_fwd;
        be->gelu_bwd = prof_gelu_bwd;
        be->swiglu_fwd = prof_swiglu_fwd;
        be->swiglu_bwd = prof_swiglu_bwd;
        be->topk_softmax = prof_topk_softmax;
        be->topk_softmax_bwd = prof_topk_softmax_bwd;
        be->softmax_rows = prof_softmax_rows;
        be->softmax_rows_bwd_shared = prof_softmax_rows_bwd_shared;
        be->colsum = prof_colsum;
        be->gather_rows = prof_gather_rows;
        be->scatter_add_rows = prof_scatter_add_rows;
        be->row_dot = prof_row_dot;
        be->xent = prof_xent;
        be->mxfp4_matmul = prof_mxfp4_matmul;
        be->kv_store_q = prof_kv_store_q;
        be->attn_cached_q = prof_attn_cached_q;
    }
    return be;
}
#endif
