/* vexp.h: exp without a library call, for the CPU kernels' softmaxes: Cody-Waite reduction by
 * ln 2 and a degree-6 polynomial; relative error < 3e-7 for x in [-87, 88] (clamped outside).
 * gpt_vexpf is plain C that loops vectorize; gpt_vexpf16 is the same steps on 16 AVX-512 lanes
 * (separate multiplies and adds, no FMA: the same bits as gpt_vexpf compiled without contraction). */
#ifndef GPT_VEXP_H
#define GPT_VEXP_H

#include <stdint.h>
#include <string.h>

#define GPT_VEXP_LOG2E 1.44269504088896341f
#define GPT_VEXP_LN2_HI 0.693145751953125f
#define GPT_VEXP_LN2_LO 1.42860682030941723e-6f
#define GPT_VEXP_C3 0.166666672f
#define GPT_VEXP_C4 0.0416666679f
#define GPT_VEXP_C5 0.00833333377f
#define GPT_VEXP_C6 0.00138888892f

/* The clamps are two plain selects and the rounding is rint (one roundps): a nested ternary or a
 * truncating conversion after the clamp leaves control flow that stops GCC vectorizing. */
static inline float gpt_vexpf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float fn = __builtin_rintf(x * GPT_VEXP_LOG2E);
    int n = (int)fn;
    float r = x - fn * GPT_VEXP_LN2_HI - fn * GPT_VEXP_LN2_LO;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (GPT_VEXP_C3 + r * (GPT_VEXP_C4 + r * (GPT_VEXP_C5 +
                                                                                  r * GPT_VEXP_C6)))));
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static inline __m512 gpt_vexpf16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(GPT_VEXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(fn, _mm512_set1_ps(GPT_VEXP_LN2_HI))),
                             _mm512_mul_ps(fn, _mm512_set1_ps(GPT_VEXP_LN2_LO)));
    __m512 p = _mm512_set1_ps(GPT_VEXP_C6);
    p = _mm512_add_ps(_mm512_set1_ps(GPT_VEXP_C5), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(GPT_VEXP_C4), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(GPT_VEXP_C3), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(0.5f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
    p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(r, p));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fn), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}
#endif

#endif
