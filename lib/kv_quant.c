/* kv_quant.c: the CPU kernels of a bf16 or int8 KV cache (kv_quant.h); the attention kernel also
 * serves the f32 cache for head sizes that are multiples of 16 (backend_cpu.c). A cache in bf16 halves, and
 * in int8 quarters, the bytes each decode step reads per context token; entries are converted on
 * the fly inside the attention loops. */
#include "kv_quant.h"
#include "vexp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KVQ_PAR_MIN 32768

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
static int kvq_avx512(void);
static size_t bf16_rows_avx512(uint16_t *kd, uint16_t *vd, const float *kr, const float *vr, size_t w);
#endif

/* One head's D values into int8 with scale absmax / 127 (0 for an all-zero head). */
static float quant_head(int8_t *dst, const float *src, int D)
{
    float amax = 0;
    for (int i = 0; i < D; i++) amax = fabsf(src[i]) > amax ? fabsf(src[i]) : amax;
    float sc = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int i = 0; i < D; i++) {
        float q = nearbyintf(src[i] * inv);
        dst[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    return sc;
}

void gpt_cpu_kv_store_q(gpt_backend *be, int dtype, void *kc, void *vc, float *ks, float *vs, const float *k,
                        const float *v, int ld, const int *seq, const int *pos, int n, int ring, int KV, int D)
{
    (void)be;
    size_t w = (size_t)KV * D;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    int avx = kvq_avx512();
#endif
#pragma omp parallel for schedule(static) if ((size_t)n * w >= KVQ_PAR_MIN)
    for (int r = 0; r < n; r++) {
        size_t at = (size_t)seq[r] * ring + (size_t)(pos[r] % ring);
        const float *kr = k + (size_t)r * ld, *vr = v + (size_t)r * ld;
        if (dtype == GPT_KV_BF16) {
            uint16_t *kd = (uint16_t *)kc + at * w, *vd = (uint16_t *)vc + at * w;
            size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
            if (avx) i = bf16_rows_avx512(kd, vd, kr, vr, w);
#endif
            for (; i < w; i++) kd[i] = gpt_f32_to_bf16_rne(kr[i]), vd[i] = gpt_f32_to_bf16_rne(vr[i]);
        } else {
            int8_t *kd = (int8_t *)kc + at * w, *vd = (int8_t *)vc + at * w;
            for (int h = 0; h < KV; h++) {
                ks[at * KV + h] = quant_head(kd + (size_t)h * D, kr + (size_t)h * D, D);
                vs[at * KV + h] = quant_head(vd + (size_t)h * D, vr + (size_t)h * D, D);
            }
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define KVQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl"), optimize("O3")))

/* 16 floats to bf16 as gpt_f32_to_bf16_rne does (round to nearest even; a NaN stays a NaN) */
KVQ_AVX512 static inline __m256i bf16x16(__m512 f)
{
    __m512i u = _mm512_castps_si512(f);
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
                                 _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
    __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* One row's keys and values into the bf16 cache, 16 at a time: the scalar loop with its NaN
 * branch did not vectorize (3% of a batch-16 decode step); returns how many it did. */
KVQ_AVX512 static size_t bf16_rows_avx512(uint16_t *kd, uint16_t *vd, const float *kr, const float *vr, size_t w)
{
    size_t i = 0;
    for (; i + 16 <= w; i += 16) {
        _mm256_storeu_si256((__m256i *)(kd + i), bf16x16(_mm512_loadu_ps(kr + i)));
        _mm256_storeu_si256((__m256i *)(vd + i), bf16x16(_mm512_loadu_ps(vr + i)));
    }
    return i;
}

/* s[lo..t] = exp(s - m) in place, 16 at a time (vexp.h); returns their sum. A scalar expf per key
 * was most of a decode step's attention at batch 16. */
KVQ_AVX512 static float exp_sum16(float *s, int lo, int t, float m)
{
    const __m512 mv = _mm512_set1_ps(m);
    __m512 z = _mm512_setzero_ps();
    int j = lo;
    for (; j + 16 <= t + 1; j += 16) {
        __m512 e = gpt_vexpf16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
        _mm512_storeu_ps(s + j, e);
        z = _mm512_add_ps(z, e);
    }
    if (j <= t) {
        __mmask16 mk = (__mmask16)((1u << (t + 1 - j)) - 1);
        __m512 e = gpt_vexpf16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), mv));
        _mm512_mask_storeu_ps(s + j, mk, e);
        z = _mm512_mask_add_ps(z, mk, z, e);
    }
    return _mm512_reduce_add_ps(z);
}

/* 16 cache entries from e on as floats (bf16: the high half of the word; int8: the integer) */
KVQ_AVX512 static inline __m512 kvq_load16(int dtype, const void *base, size_t e, __mmask16 mk)
{
    if (dtype == GPT_KV_F32) return _mm512_maskz_loadu_ps(mk, (const float *)base + e);
    if (dtype == GPT_KV_BF16) {
        __m256i h = _mm256_maskz_loadu_epi16(mk, (const uint16_t *)base + e);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    __m128i b = _mm_maskz_loadu_epi8(mk, (const int8_t *)base + e);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

/* One (row, head): the portable loop below with the head's D values 16 at a time (the dot
 * products' sums in 16 lanes, added at the end: rounding differs from the scalar loop's order) */
KVQ_AVX512 static void attn_row_avx512(int dtype, float *o, const float *qr, const void *kc, const void *vc,
                                       const float *ks, const float *vs, size_t base, int lo, int t, int ring,
                                       size_t w, int kh, int KV, int D, const float *sink, float scale, float *s)
{
    float m = sink ? *sink : -INFINITY;
    for (int j = lo; j <= t; j++) {
        size_t at = base + (size_t)(j % ring), e = at * w + (size_t)kh * D;
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < D; i += 16) {
            __mmask16 mk = D - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (D - i)) - 1);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, qr + i), kvq_load16(dtype, kc, e + (size_t)i, mk), acc);
        }
        float dot = _mm512_reduce_add_ps(acc);
        if (dtype == GPT_KV_INT8) dot *= ks[at * KV + kh];
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
    }
    float z = (sink ? gpt_vexpf(*sink - m) : 0) + exp_sum16(s, lo, t, m);
    for (int i = 0; i < D; i += 16) {
        __mmask16 mk = D - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (D - i)) - 1);
        __m512 acc = _mm512_setzero_ps();
        for (int j = lo; j <= t; j++) {
            size_t at = base + (size_t)(j % ring), e = at * w + (size_t)kh * D + (size_t)i;
            float p = s[j] / z;
            if (dtype == GPT_KV_INT8) p *= vs[at * KV + kh];
            acc = _mm512_fmadd_ps(_mm512_set1_ps(p), kvq_load16(dtype, vc, e, mk), acc);
        }
        _mm512_mask_storeu_ps(o + i, mk, acc);
    }
}

/* The same for D a multiple of 16 up to 128: the query and the output held in registers, four
 * keys' dot products reduced together (two unpack rounds and the four 128-bit quarters instead of
 * a full reduction per key), and the values walked key by key, each row read once. */
KVQ_AVX512 static void attn_row_avx512_d16(int dtype, float *o, const float *qr, const void *kc, const void *vc,
                                           const float *ks, const float *vs, size_t base, int lo, int t, int ring,
                                           size_t w, int kh, int KV, int D, const float *sink, float scale, float *s)
{
    const int nd = D / 16;
    const __mmask16 all = 0xffff;
    __m512 qv[8], acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) qv[i] = i < nd ? _mm512_loadu_ps(qr + 16 * i) : _mm512_setzero_ps();
    float m = sink ? *sink : -INFINITY;
    for (int j = lo; j <= t; j += 4) { /* past t: key t again, its score dropped */
        __m512 a[4];
        size_t at[4];
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            at[u] = base + (size_t)((j + u <= t ? j + u : t) % ring);
            size_t e = at[u] * w + (size_t)kh * D;
            a[u] = _mm512_setzero_ps();
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                if (i < nd) a[u] = _mm512_fmadd_ps(qv[i], kvq_load16(dtype, kc, e + (size_t)(16 * i), all), a[u]);
        }
        /* per 128-bit quarter: [a0+a2, b0+b2, a1+a3, b1+b3], then [sa, sb, sc, sd]; then the quarters */
        __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
        __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
        __m512 q4 = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
                                  _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
        __m128 r4 = _mm_add_ps(_mm_add_ps(_mm512_extractf32x4_ps(q4, 0), _mm512_extractf32x4_ps(q4, 1)),
                               _mm_add_ps(_mm512_extractf32x4_ps(q4, 2), _mm512_extractf32x4_ps(q4, 3)));
        float d4[4];
        _mm_storeu_ps(d4, r4);
        for (int u = 0; u < 4 && j + u <= t; u++) {
            float dot = dtype == GPT_KV_INT8 ? d4[u] * ks[at[u] * KV + kh] : d4[u];
            s[j + u] = dot * scale;
            if (s[j + u] > m) m = s[j + u];
        }
    }
    float z = (sink ? gpt_vexpf(*sink - m) : 0) + exp_sum16(s, lo, t, m);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
    for (int jj = lo; jj <= t; jj++) {
        size_t at = base + (size_t)(jj % ring), e = at * w + (size_t)kh * D;
        float p = s[jj] / z;
        if (dtype == GPT_KV_INT8) p *= vs[at * KV + kh];
        __m512 pv = _mm512_set1_ps(p);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            if (i < nd) acc[i] = _mm512_fmadd_ps(pv, kvq_load16(dtype, vc, e + (size_t)(16 * i), all), acc[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        if (i < nd) _mm512_storeu_ps(o + 16 * i, acc[i]);
}

static int kvq_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#else
static int kvq_avx512(void) { return 0; }
#endif

int gpt_cpu_attn_cached_fast(int D) { return D > 0 && D % 16 == 0 && D <= 128 && kvq_avx512(); }

void gpt_cpu_attn_cached_q(gpt_backend *be, int dtype, float *out, const float *q, int ldq, const void *kc,
                           const void *vc, const float *ks, const float *vs, const int *seq, const int *pos, int n,
                           int ring, const float *sinks, int H, int KV, int D, int window, float scale)
{
    (void)be;
    int grp = H / KV, fast = kvq_avx512();
    size_t w = (size_t)KV * D;
#pragma omp parallel if ((size_t)n * H * D * 64 >= KVQ_PAR_MIN)
    {
        int maxlen = 0;
        for (int r = 0; r < n; r++) maxlen = pos[r] + 1 > maxlen ? pos[r] + 1 : maxlen;
        float *s = malloc((size_t)(maxlen > 0 ? maxlen : 1) * sizeof *s);
#pragma omp for collapse(2) schedule(static)
        for (int r = 0; r < n; r++)
            for (int h = 0; h < H; h++) {
                const float *qr = q + (size_t)r * ldq + (size_t)h * D;
                int kh = h / grp, t = pos[r], lo = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
                size_t base = (size_t)seq[r] * ring;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
                if (fast && D % 16 == 0 && D <= 128) {
                    attn_row_avx512_d16(dtype, out + (size_t)r * H * D + (size_t)h * D, qr, kc, vc, ks, vs, base, lo,
                                        t, ring, w, kh, KV, D, sinks ? sinks + h : NULL, scale, s);
                    continue;
                }
                if (fast) {
                    attn_row_avx512(dtype, out + (size_t)r * H * D + (size_t)h * D, qr, kc, vc, ks, vs, base, lo, t,
                                    ring, w, kh, KV, D, sinks ? sinks + h : NULL, scale, s);
                    continue;
                }
#endif
                float m = sinks ? sinks[h] : -INFINITY;
                for (int j = lo; j <= t; j++) {
                    size_t at = base + (size_t)(j % ring), e = at * w + (size_t)kh * D;
                    float dot = 0;
                    if (dtype == GPT_KV_F32) {
                        const float *kr = (const float *)kc + e;
                        for (int i = 0; i < D; i++) dot += qr[i] * kr[i];
                    } else if (dtype == GPT_KV_BF16) {
                        const uint16_t *kr = (const uint16_t *)kc + e;
                        for (int i = 0; i < D; i++) dot += qr[i] * gpt_bf16_to_f32_(kr[i]);
                    } else {
                        const int8_t *kr = (const int8_t *)kc + e;
                        for (int i = 0; i < D; i++) dot += qr[i] * (float)kr[i];
                        dot *= ks[at * KV + kh];
                    }
                    s[j] = dot * scale;
                    if (s[j] > m) m = s[j];
                }
                float z = sinks ? expf(sinks[h] - m) : 0;
                for (int j = lo; j <= t; j++) z += (s[j] = expf(s[j] - m));
                float *o = out + (size_t)r * H * D + (size_t)h * D;
                for (int i = 0; i < D; i++) o[i] = 0;
                for (int j = lo; j <= t; j++) {
                    size_t at = base + (size_t)(j % ring), e = at * w + (size_t)kh * D;
                    float p = s[j] / z;
                    if (dtype == GPT_KV_F32) {
                        const float *vr = (const float *)vc + e;
                        for (int i = 0; i < D; i++) o[i] += p * vr[i];
                    } else if (dtype == GPT_KV_BF16) {
                        const uint16_t *vr = (const uint16_t *)vc + e;
                        for (int i = 0; i < D; i++) o[i] += p * gpt_bf16_to_f32_(vr[i]);
                    } else {
                        const int8_t *vr = (const int8_t *)vc + e;
                        p *= vs[at * KV + kh];
                        for (int i = 0; i < D; i++) o[i] += p * (float)vr[i];
                    }
                }
            }
        free(s);
    }
}
