/* attn_gemm.c: attention's small products (attn_gemm.h), AVX-512 register tiles.
 *
 * nt: 6 rows of A x 32 columns of Bt in 12 accumulators; per d one pair of loads of Bt's row and
 * six broadcasts of A's entries feed 12 FMAs. nn: 6 rows x D (<= 64, four registers per row) in up
 * to 24 accumulators; per k one row of B (D values) and six broadcasts of A feed 6 D / 16 FMAs.
 * Every output element is one fixed-order sum, whatever the thread running it. */
#include "attn_gemm.h"

#include <stddef.h>
#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GPT_ATTN_BUILD 1
#include <immintrin.h>
#endif

int gpt_attn_gemm_ok(int D)
{
#ifdef GPT_ATTN_BUILD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && D > 0 && D <= 64 && D % 16 == 0;
#else
    (void)D;
    return 0;
#endif
}

#ifdef GPT_ATTN_BUILD

#define AVX512 __attribute__((target("avx512f"), optimize("O3")))

/* R rows x 32 columns. */
#define NT_TILE(R)                                                                                                   \
    AVX512 static void nt_tile_##R(int D, float alpha, const float *A, int lda, const float *Bt, int ldbt, float *C, \
                                   int ldc)                                                                          \
    {                                                                                                                \
        __m512 c[R][2];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 2; q++) c[r][q] = _mm512_setzero_ps();                                               \
        for (int d = 0; d < D; d++) {                                                                                \
            const float *b = Bt + (size_t)d * ldbt;                                                                  \
            __m512 bv[2];                                                                                            \
            for (int q = 0; q < 2; q++) bv[q] = _mm512_loadu_ps(b + q * 16);                                         \
            for (int r = 0; r < R; r++) {                                                                            \
                __m512 a = _mm512_set1_ps(A[(size_t)r * lda + d]);                                                   \
                for (int q = 0; q < 2; q++) c[r][q] = _mm512_fmadd_ps(a, bv[q], c[r][q]);                            \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < 2; q++)                                                                              \
                _mm512_storeu_ps(C + (size_t)r * ldc + q * 16, _mm512_mul_ps(_mm512_set1_ps(alpha), c[r][q]));      \
    }
NT_TILE(1)
NT_TILE(2)
NT_TILE(3)
NT_TILE(4)
NT_TILE(5)
NT_TILE(6)

typedef void (*nt_fn)(int, float, const float *, int, const float *, int, float *, int);
static const nt_fn nt_tiles[7] = {NULL, nt_tile_1, nt_tile_2, nt_tile_3, nt_tile_4, nt_tile_5, nt_tile_6};

void gpt_attn_gemm_nt(int M, int N, int D, float alpha, const float *A, int lda, const float *Bt, int ldbt, float *C,
                      int ldc)
{
    int nfull = N / 32 * 32;
    for (int j0 = 0; j0 < nfull; j0 += 32)
        for (int i0 = 0; i0 < M; i0 += 6) {
            int R = M - i0 < 6 ? M - i0 : 6;
            nt_tiles[R](D, alpha, A + (size_t)i0 * lda, lda, Bt + j0, ldbt, C + (size_t)i0 * ldc + j0, ldc);
        }
    /* the last < 32 columns: the same per-element order (d ascending), in plain code */
    for (int i = 0; i < M; i++)
        for (int j = nfull; j < N; j++) {
            float s = 0;
            for (int d = 0; d < D; d++) s = __builtin_fmaf(A[(size_t)i * lda + d], Bt[(size_t)d * ldbt + j], s);
            C[(size_t)i * ldc + j] = alpha * s;
        }
}

/* R rows x Q registers (D = 16 Q). */
#define NN_TILE(R, Q)                                                                                                \
    AVX512 static void nn_tile_##R##_##Q(int K, const float *A, int sai, int sak, const float *B, int ldb,          \
                                         float beta, float *C, int ldc)                                              \
    {                                                                                                                \
        __m512 c[R][Q];                                                                                              \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < Q; q++)                                                                              \
                c[r][q] = beta != 0.0f ? _mm512_loadu_ps(C + (size_t)r * ldc + q * 16) : _mm512_setzero_ps();      \
        for (int k = 0; k < K; k++) {                                                                                \
            const float *b = B + (size_t)k * ldb;                                                                    \
            __m512 bv[Q];                                                                                            \
            for (int q = 0; q < Q; q++) bv[q] = _mm512_loadu_ps(b + q * 16);                                         \
            for (int r = 0; r < R; r++) {                                                                            \
                __m512 a = _mm512_set1_ps(A[(size_t)r * sai + (size_t)k * sak]);                                     \
                for (int q = 0; q < Q; q++) c[r][q] = _mm512_fmadd_ps(a, bv[q], c[r][q]);                            \
            }                                                                                                        \
        }                                                                                                            \
        for (int r = 0; r < R; r++)                                                                                  \
            for (int q = 0; q < Q; q++) _mm512_storeu_ps(C + (size_t)r * ldc + q * 16, c[r][q]);                   \
    }
#define NN_TILES(Q) NN_TILE(1, Q) NN_TILE(2, Q) NN_TILE(3, Q) NN_TILE(4, Q) NN_TILE(5, Q) NN_TILE(6, Q)
NN_TILES(1)
NN_TILES(2)
NN_TILES(3)
NN_TILES(4)

typedef void (*nn_fn)(int, const float *, int, int, const float *, int, float, float *, int);
static const nn_fn nn_tiles[5][7] = {
    {NULL},
    {NULL, nn_tile_1_1, nn_tile_2_1, nn_tile_3_1, nn_tile_4_1, nn_tile_5_1, nn_tile_6_1},
    {NULL, nn_tile_1_2, nn_tile_2_2, nn_tile_3_2, nn_tile_4_2, nn_tile_5_2, nn_tile_6_2},
    {NULL, nn_tile_1_3, nn_tile_2_3, nn_tile_3_3, nn_tile_4_3, nn_tile_5_3, nn_tile_6_3},
    {NULL, nn_tile_1_4, nn_tile_2_4, nn_tile_3_4, nn_tile_4_4, nn_tile_5_4, nn_tile_6_4},
};

void gpt_attn_gemm_nn(int M, int K, int D, const float *A, int sai, int sak, const float *B, int ldb, float beta,
                      float *C, int ldc)
{
    int Q = D / 16;
    for (int i0 = 0; i0 < M; i0 += 6) {
        int R = M - i0 < 6 ? M - i0 : 6;
        nn_tiles[Q][R](K, A + (size_t)i0 * sai, sai, sak, B, ldb, beta, C + (size_t)i0 * ldc, ldc);
    }
}

#else

void gpt_attn_gemm_nt(int M, int N, int D, float alpha, const float *A, int lda, const float *Bt, int ldbt, float *C,
                      int ldc)
{
    (void)M, (void)N, (void)D, (void)alpha, (void)A, (void)lda, (void)Bt, (void)ldbt, (void)C, (void)ldc;
    abort(); /* callers ask gpt_attn_gemm_ok() first */
}

void gpt_attn_gemm_nn(int M, int K, int D, const float *A, int sai, int sak, const float *B, int ldb, float beta,
                      float *C, int ldc)
{
    (void)M, (void)K, (void)D, (void)A, (void)sai, (void)sak, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    abort();
}

#endif
