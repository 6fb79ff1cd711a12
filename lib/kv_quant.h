/* kv_quant.h: KV-cache entries in bf16 or int8 (one float scale per head per position), and the
 * CPU backend's kv_store_q / attn_cached_q ops over them (see backend.h). */
#ifndef GPT_KV_QUANT_H
#define GPT_KV_QUANT_H

#include <stdint.h>

#include "backend.h"

/* bf16 with round-to-nearest-even (NaN stays NaN). */
static inline uint16_t gpt_f32_to_bf16_rne(float f)
{
    union { float f; uint32_t u; } x = {f};
    if ((x.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x.u >> 16) | 0x40);
    return (uint16_t)((x.u + 0x7fffu + ((x.u >> 16) & 1)) >> 16);
}
static inline float gpt_bf16_to_f32_(uint16_t h)
{
    union { uint32_t u; float f; } x = {(uint32_t)h << 16};
    return x.f;
}

void gpt_cpu_kv_store_q(gpt_backend *be, int dtype, void *kc, void *vc, float *ks, float *vs, const float *k,
                        const float *v, int ld, const int *seq, const int *pos, int n, int ring, int KV, int D);
/* dtype GPT_KV_F32 too (kc, vc float; ks, vs unused): the CPU backend's attn_cached hands its
 * AVX-512 cases here. */
int gpt_cpu_attn_cached_fast(int D);
void gpt_cpu_attn_cached_q(gpt_backend *be, int dtype, float *out, const float *q, int ldq, const void *kc,
                           const void *vc, const float *ks, const float *vs, const int *seq, const int *pos, int n,
                           int ring, const float *sinks, int H, int KV, int D, int window, float scale);

#endif
