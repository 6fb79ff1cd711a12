/* attn_gemm.h: the small fp32 products inside CPU attention, where one side is a head's d_head
 * (16, 32, 48 or 64) wide: a block of 64 queries against up to T keys. OpenBLAS reaches about half
 * of the FMA peak on these shapes (it packs both operands on every call); these kernels take the
 * keys and values packed once per head and run from registers. AVX-512 only. */
#ifndef GPT_ATTN_GEMM_H
#define GPT_ATTN_GEMM_H

/* 1 when the kernels run here and D is one they handle. */
int gpt_attn_gemm_ok(int D);

/* C (M x N, ldc) = alpha A Bt: A is M x D (lda), Bt is D x N packed d-major (row d at Bt + d ldbt).
 * (scores S = scale Q K^T from K^T; dP = dO V^T from V^T.) */
void gpt_attn_gemm_nt(int M, int N, int D, float alpha, const float *A, int lda, const float *Bt, int ldbt, float *C,
                      int ldc);

/* C (M x D, ldc) = beta C + sum_k A(i, k) B[k] for k < K: A(i, k) = A[i sai + k sak] (either
 * orientation of a score block), B rows of D values (ldb). beta is 0 or 1.
 * (O = P V; dQ += dS K; dK += dS^T Q; dV += P^T dO.) */
void gpt_attn_gemm_nn(int M, int K, int D, const float *A, int sai, int sak, const float *B, int ldb, float beta,
                      float *C, int ldc);

#endif
