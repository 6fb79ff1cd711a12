/* gemm_amx.h: bf16 GEMM on Intel AMX tiles (Sapphire Rapids and later), the CPU's real
 * mixed-precision path. Both operands are rounded to bf16 exactly as gpt_round_bf16 (half.h) does,
 * products are exact in fp32 and sums are fp32: the numbers of a bf16 tensor-core GEMM with fp32
 * compute, at up to 16x the fp32 FMA rate. Elsewhere gpt_amx_available says 0 and the caller keeps
 * its emulation. */
#ifndef GPT_GEMM_AMX_H
#define GPT_GEMM_AMX_H

#include <stddef.h>

/* 1 when this CPU has AMX-BF16 and the kernel lets this process use the tile registers (the
 * permission is asked for here; it is per process and idempotent), else 0. */
int gpt_amx_available(void);

/* Packing space reused across calls (it grows to the largest call's need: op(B) in bf16 plus an
 * A panel per thread), and the kept packs of frozen B operands. {0} is an empty one; one per
 * backend, one call at a time. */
typedef struct gpt_amx_ws {
    void *buf;
    size_t cap;
    const void *frozen_lo, *frozen_hi; /* see gpt_amx_ws_freeze */
    unsigned epoch;
    struct gpt_amx_pack *packs;
    int npacks;
} gpt_amx_ws;
void gpt_amx_ws_free(gpt_amx_ws *ws); /* releases what it holds, not ws itself */

/* B operands inside [lo, hi) do not change until the next call here (inference: the weights): each
 * is packed once, on first use, and the pack is kept (half the bytes of the fp32 original), so a
 * decoding step reads bf16 weights only. A different range (NULL, NULL: none) or epoch (the
 * caller bumps it whenever it freezes anew: the same addresses may hold new weights) drops them. */
void gpt_amx_ws_freeze(gpt_amx_ws *ws, const void *lo, const void *hi, unsigned epoch);

/* C = alpha op(A) op(B) + beta C, row-major, op(A) M x K, op(B) K x N (ta / tb: the stored matrix
 * is the transpose). beta == 0 ignores C's old contents (NaNs included). Deterministic: each C
 * element sums over K in one fixed order whatever the thread count. Only call it when
 * gpt_amx_available() says 1. ws may be NULL (a temporary one). */
void gpt_gemm_bf16_amx(gpt_amx_ws *ws, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc);

#endif
