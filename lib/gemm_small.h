/* gemm_small.h: fp32 C = alpha A op(B) + beta C for a few rows of A (decoding a batch: one row per
 * sequence), streaming B, the weight, from memory once. OpenBLAS's sgemm packs all of B first and
 * runs at a fraction of its speed when A has 2-16 rows; this is what decoding needs instead. */
#ifndef GPT_GEMM_SMALL_H
#define GPT_GEMM_SMALL_H

/* Largest M gpt_gemm_small takes. */
#define GPT_GEMM_SMALL_MAX_M 16

/* 1 when this CPU runs the AVX-512 kernels (else the caller keeps sgemm). */
int gpt_gemm_small_available(void);

/* Row-major, A (M x K, lda) not transposed, 1 <= M <= GPT_GEMM_SMALL_MAX_M; tb: B stored N x K
 * (else K x N). beta == 0 ignores C's old contents. Each C element is one fixed-order fp32 sum
 * whatever the thread count. */
void gpt_gemm_small(int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc);

#endif
