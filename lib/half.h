/* half.h: rounding fp32 values to the half-precision formats that mixed-precision GEMMs take as
 * operands (bf16 and IEEE fp16), kept in fp32 storage. Round to nearest, ties to even, as CUDA's
 * __float2bfloat16_rn / __float2half_rn and torch's .to(bfloat16 / float16) do: fp16 overflows to
 * +-inf (which is what the dynamic loss scaler detects), and values below its range go through its
 * subnormals to 0. NaN stays NaN. t/test_half.c checks both against torch. */
#ifndef GPT_HALF_H
#define GPT_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

enum { GPT_GEMM_FP32 = 0, GPT_GEMM_BF16 = 1, GPT_GEMM_FP16 = 2 }; /* GEMM operand precisions */

static inline float gpt_round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return f;
    u = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static inline float gpt_round_fp16(float f)
{
    float a = fabsf(f);
    if (!(a == a)) return f;
    /* 65520 is halfway between fp16's largest finite 65504 and 65536: ties go to even (inf). */
    if (a >= 65520.0f) return copysignf(INFINITY, f);
    if (a < 0x1p-14f) /* subnormal fp16: multiples of 2^-24; the scaling by 2^24 is exact */
        return copysignf(nearbyintf(a * 0x1p24f) * 0x1p-24f, f);
    uint32_t u;
    memcpy(&u, &a, 4);
    u = (u + 0xfffu + ((u >> 13) & 1)) & ~0x1fffu; /* 24 -> 11 significant bits */
    memcpy(&a, &u, 4);
    return copysignf(a, f);
}

static inline float gpt_round_half(float f, int prec)
{
    return prec == GPT_GEMM_BF16 ? gpt_round_bf16(f) : prec == GPT_GEMM_FP16 ? gpt_round_fp16(f) : f;
}

#endif
