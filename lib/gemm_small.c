/* gemm_small.c: fp32 GEMMs with a few rows (gemm_small.h), AVX-512.
 *
 * B stored K x N (tb = 0): C rows are sums of B rows scaled by A's entries. A thread takes a
 * range of 64-column chunks; for each block of 32 rows of B and each chunk it loads the chunk's
 * values once per row and multiplies them into up to 6 rows' sums held in 24 registers (again,
 * from cache, for the next 6 rows), keeping the sums in memory between blocks.
 * B stored N x K (tb = 1): C entries are dot products of A rows and B rows along k. A thread takes
 * groups of 4 B rows and multiplies each 16-value slice into up to 6 A rows' partial sums (24
 * registers of 16 lanes), which are added across lanes at the end. */
#include "gemm_small.h"

#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GPT_SMALL_BUILD 1
#include <immintrin.h>
#endif

int gpt_gemm_small_available(void)
{
#ifdef GPT_SMALL_BUILD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#ifdef GPT_SMALL_BUILD

#define AVX512 __attribute__((target("avx512f"), optimize("O3")))

/* c[0..3] += a * b0..b3 */
AVX512 static inline void fma4(__m512 *c, __m512 a, __m512 b0, __m512 b1, __m512 b2, __m512 b3)
{
    c[0] = _mm512_fmadd_ps(a, b0, c[0]);
    c[1] = _mm512_fmadd_ps(a, b1, c[1]);
    c[2] = _mm512_fmadd_ps(a, b2, c[2]);
    c[3] = _mm512_fmadd_ps(a, b3, c[3]);
}

static inline void store_c(float *c, float v, float alpha, float beta)
{
    *c = beta == 0.0f ? alpha * v : alpha * v + beta * *c;
}

/* Rows [0, R) of acc (ld 64 floats per row... per chunk: acc + r * lda_acc), one 64-column chunk,
 * += A[:, k0:k0+nk] B[k0:k0+nk, chunk]; B stored K x N. */
#define KN_BLOCK(R)                                                                                                  \
    AVX512 static void kn_block_##R(int nk, const float *A, int lda, const float *B, int ldb, float *acc,          \
                                    int ldacc)                                                                       \
    {                                                                                                                \
        __m512 c[R][4];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 4; q++) c[r][q] = _mm512_loadu_ps(acc + (size_t)r * ldacc + q * 16);               \
        for (int k = 0; k < nk; k++) {                                                                               \
            const float *b = B + (size_t)k * ldb;                                                                    \
            __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),            \
                   b3 = _mm512_loadu_ps(b + 48);                                                                     \
            for (int r = 0; r < R; r++) {                                                                            \
                __m512 a = _mm512_set1_ps(A[(size_t)r * lda + k]);                                                   \
                fma4(c[r], a, b0, b1, b2, b3);                                                           \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 4; q++) _mm512_storeu_ps(acc + (size_t)r * ldacc + q * 16, c[r][q]);               \
    }
KN_BLOCK(1)
KN_BLOCK(2)
KN_BLOCK(3)
KN_BLOCK(4)
KN_BLOCK(5)
KN_BLOCK(6)

typedef void (*kn_fn)(int, const float *, int, const float *, int, float *, int);
static const kn_fn kn_blocks[7] = {NULL, kn_block_1, kn_block_2, kn_block_3, kn_block_4, kn_block_5, kn_block_6};

/* B stored K x N: one thread's chunks [ch0, ch1) of 64 columns. Rows of B are read in blocks of
 * KB, each row left to right across the chunks: KB forward streams the prefetchers follow, where
 * walking one chunk down all of K would touch a new page per row. The sums stay in acc between
 * blocks (k in order: the same sum for any split of the chunks). */
static void kn_range(int M, int ch0, int ch1, int K, const float *A, int lda, const float *B, int ldb, float *acc)
{
    enum { KB = 32 };
    int w = (ch1 - ch0) * 64;
    memset(acc, 0, (size_t)M * w * sizeof *acc);
    for (int k0 = 0; k0 < K; k0 += KB) {
        int nk = K - k0 < KB ? K - k0 : KB;
        for (int ch = ch0; ch < ch1; ch++)
            for (int m0 = 0; m0 < M; m0 += 6) {
                int R = M - m0 < 6 ? M - m0 : 6;
                kn_blocks[R](nk, A + (size_t)m0 * lda + k0, lda, B + (size_t)k0 * ldb + (size_t)ch * 64, ldb,
                             acc + (size_t)m0 * w + (size_t)(ch - ch0) * 64, w);
            }
    }
}

typedef void (*nk_fn)(int, const float *, int, const float *, int, float *);

/* Columns of B rows [n0, n0 + 4) (all present) against rows [0, R) of A: the 4 R dot products. */
#define NK_GROUP(R)                                                                                                  \
    AVX512 static void nk_group_##R(int K, const float *A, int lda, const float *B, int ldb, float *out)           \
    {                                                                                                                \
        __m512 acc[R][4];                                                                                            \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 4; q++) acc[r][q] = _mm512_setzero_ps();                                             \
        int k = 0;                                                                                                   \
        for (; k + 16 <= K; k += 16) {                                                                               \
            __m512 b0 = _mm512_loadu_ps(B + k), b1 = _mm512_loadu_ps(B + (size_t)ldb + k),                          \
                   b2 = _mm512_loadu_ps(B + 2 * (size_t)ldb + k), b3 = _mm512_loadu_ps(B + 3 * (size_t)ldb + k);    \
            for (int r = 0; r < R; r++) {                                                                            \
                __m512 a = _mm512_loadu_ps(A + (size_t)r * lda + k);                                                 \
                fma4(acc[r], a, b0, b1, b2, b3);                                                       \
            }                                                                                                        \
        }                                                                                                            \
        if (k < K) {                                                                                                 \
            __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);                                                         \
            __m512 b0 = _mm512_maskz_loadu_ps(mk, B + k), b1 = _mm512_maskz_loadu_ps(mk, B + (size_t)ldb + k),      \
                   b2 = _mm512_maskz_loadu_ps(mk, B + 2 * (size_t)ldb + k),                                          \
                   b3 = _mm512_maskz_loadu_ps(mk, B + 3 * (size_t)ldb + k);                                          \
            for (int r = 0; r < R; r++) {                                                                            \
                __m512 a = _mm512_maskz_loadu_ps(mk, A + (size_t)r * lda + k);                                       \
                fma4(acc[r], a, b0, b1, b2, b3);                                                       \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 4; q++) out[r * 4 + q] = _mm512_reduce_add_ps(acc[r][q]);                           \
    }
NK_GROUP(1)
NK_GROUP(2)
NK_GROUP(3)
NK_GROUP(4)
NK_GROUP(5)
NK_GROUP(6)

static const nk_fn nk_groups[7] = {NULL, nk_group_1, nk_group_2, nk_group_3, nk_group_4, nk_group_5, nk_group_6};

/* Scalar edge: C columns [n0, n1) the plain way (the last < 64 or < 4 columns). */
static void edge_cols(int tb, int M, int n0, int n1, int K, float alpha, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc)
{
    for (int m = 0; m < M; m++)
        for (int n = n0; n < n1; n++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += A[(size_t)m * lda + k] * (tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
            store_c(C + (size_t)m * ldc + n, s, alpha, beta);
        }
}

void gpt_gemm_small(int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    int width = tb ? 4 : 64, nfull = N / width;
    /* Small products run on one thread: waking the team costs more than they take. */
    int par = (size_t)M * N * K >= 1u << 18;
    if (!tb) {
#pragma omp parallel if (par)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int ch0 = (int)((long)nfull * t / nt), ch1 = (int)((long)nfull * (t + 1) / nt);
            if (ch1 > ch0) {
                float *acc = gpt_xmalloc((size_t)M * (ch1 - ch0) * 64 * sizeof *acc);
                kn_range(M, ch0, ch1, K, A, lda, B, ldb, acc);
                int w = (ch1 - ch0) * 64;
                for (int m = 0; m < M; m++)
                    for (int q = 0; q < w; q++)
                        store_c(C + (size_t)m * ldc + ch0 * 64 + q, acc[(size_t)m * w + q], alpha, beta);
                free(acc);
            }
        }
    } else {
#pragma omp parallel for schedule(static) if (par)
        for (int s = 0; s < nfull; s++) {
            float out[GPT_GEMM_SMALL_MAX_M * 4];
            int n0 = s * width;
            for (int m0 = 0; m0 < M; m0 += 6) {
                int R = M - m0 < 6 ? M - m0 : 6;
                nk_groups[R](K, A + (size_t)m0 * lda, lda, B + (size_t)n0 * ldb, ldb, out + m0 * 4);
            }
            for (int m = 0; m < M; m++)
                for (int q = 0; q < width; q++) store_c(C + (size_t)m * ldc + n0 + q, out[m * width + q], alpha, beta);
        }
    }
    if (nfull * width < N) edge_cols(tb, M, nfull * width, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#else

void gpt_gemm_small(int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc)
{
    (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C,
        (void)ldc;
    abort(); /* callers ask gpt_gemm_small_available() first */
}

#endif
