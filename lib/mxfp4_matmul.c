/* mxfp4_matmul.c: products with MXFP4 weight rows, without dequantizing the whole matrix.
 *
 * Decode steps read every expert weight once per token, so they are memory-bound: reading 4.25
 * bits per weight instead of 32 is the speedup. The kernels decode a block's 32 codes in
 * registers (a 16-entry table lookup: vpermps, scaled by the block's power of two first, which
 * is exact) and multiply them straight into the activations. Many rows (prefill) go through
 * tiles dequantized into scratch and sgemm instead: there the arithmetic, not the bytes,
 * dominates.
 *
 * Results equal the dequantize-then-sgemm product up to fp32 summation order (the dequantized
 * weights are exact in every path). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>
#define MX_X86 1
#endif

#include "error.h"
#include "mxfp4.h"

/* Below this much work (weights) one thread runs it: waking the team costs more. */
#define MX_PAR_MIN 32768
/* From this many rows on, dequantize tiles and call sgemm. */
#define MX_GEMM_ROWS 16
#define MX_TILE 64

static float e8m0f(uint8_t s)
{
    uint32_t u = s ? (uint32_t)s << 23 : 0x00400000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The code table times 2^(s-127), exact; s = 255 as ldexpf gives it (see mxfp4.h). */
static void scaled_lut(uint8_t s, float *lut)
{
    if (s == 255) {
        for (int i = 0; i < 16; i++) lut[i] = ldexpf(gpt_fp4_values[i], 128);
        return;
    }
    float sc = e8m0f(s);
    for (int i = 0; i < 16; i++) lut[i] = gpt_fp4_values[i] * sc;
}

/* x rows with each block's 32 values reordered: even elements first (the low nibbles of the 16
 * bytes), then odd ones (the high nibbles), so a decoded half-block meets its x contiguously. */
static void permute_rows(float *xp, const float *x, int ldx, int n, int K)
{
    for (int r = 0; r < n; r++) {
        const float *s = x + (size_t)r * ldx;
        float *d = xp + (size_t)r * K;
        for (int b = 0; b < K; b += 32)
            for (int j = 0; j < 16; j++) {
                d[b + j] = s[b + 2 * j];
                d[b + 16 + j] = s[b + 2 * j + 1];
            }
    }
}

/* ---- portable ---- */

static void rows_portable(float *out, int ldo, const float *x, int ldx, const uint8_t *blocks, const uint8_t *scales,
                          const float *bias, int n, int K, int o0, int o1)
{
    size_t nb = (size_t)K / 32;
    for (int o = o0; o < o1; o++)
        for (int r = 0; r < n; r++) {
            float v = gpt_mxfp4_dot(blocks + (size_t)o * nb * 16, scales + (size_t)o * nb, nb, x + (size_t)r * ldx);
            out[(size_t)r * ldo + o] = v + (bias ? bias[o] : 0.0f);
        }
}

#ifdef MX_X86

/* ---- AVX-512: 4 output rows x 1 or 2 input rows per pass, lo/hi halves in separate
 * accumulators (all in registers). Per block and output row the 16 bytes become 16 dword indexes
 * (vpmovzxbd), two vpermps look the low and high nibbles up in the code table scaled by the
 * block's power of two (exact), and FMAs take them into the activations. The port-5 shuffles
 * bound it, so the rest is kept off that port: each row group's scales are turned into floats once
 * (16 at a time), so a block's table is one multiply by a broadcast from memory, and a single input
 * row has a kernel of its own instead of a duplicated second row. ---- */

enum { MX_SCB = 256 }; /* blocks per pass over the scales (K = 8192) */

/* sc[k][b] = 2^(s - 127) for the 4 rows' blocks b0.. b0 + nbk (e8m0f, vectorized); s = 255 (inf)
 * is caught by the kernels' branch, which uses the ldexpf table instead */
__attribute__((target("avx512f,avx512bw,avx512vl"), optimize("O3"))) static void scales_f32(float (*sc)[MX_SCB], const uint8_t *scales,
                                                                          const size_t *ob, size_t b0, int nbk)
{
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < nbk; b += 16) {
            int m = nbk - b < 16 ? nbk - b : 16;
            __mmask16 mk = (__mmask16)((1u << m) - 1);
            /* a masked load, not a copy into a buffer: a memcpy call per 16 scales cost a third of
             * a cold expert matrix's time (hot, one thread: 6.3 -> 9.0 GB/s without it) */
            __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, scales + ob[k] + b0 + b));
            __m512i u = _mm512_slli_epi32(v, 23);
            u = _mm512_mask_mov_epi32(u, _mm512_cmpeq_epi32_mask(v, _mm512_setzero_si512()),
                                      _mm512_set1_epi32(0x00400000));
            _mm512_mask_storeu_ps(sc[k] + b, mk, _mm512_castsi512_ps(u));
        }
}

#define MX512_DECODE(k)                                                                                       \
    uint8_t s##k = scales[ob[k] + b];                                                                         \
    __m512 lut##k = _mm512_mul_ps(lutv, _mm512_set1_ps(sc[k][b - b0]));                                        \
    if (__builtin_expect(s##k == 255, 0)) lut##k = lut255;                                                    \
    __m512i v##k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blocks + 16 * (ob[k] + b))));        \
    __m512 wl##k = _mm512_permutexvar_ps(v##k, lut##k); /* vpermps reads index bits 0-3 only */              \
    __m512 wh##k = _mm512_permutexvar_ps(_mm512_srli_epi32(v##k, 4), lut##k);

/* The next 4 rows' blocks are the next 64 * nb bytes, one line per block of this pass, and their
 * scales the next 4 * nb bytes: fetched ahead, the loads no longer wait on memory (1.5x on a
 * cold 2880 x 5760 expert matrix, 2 threads). A prefetch past the end never faults. */
#define MX512_PREFETCH_NEXT(b)                                                                                \
    do {                                                                                                      \
        _mm_prefetch((const char *)(blocks + 16 * (ob[0] + 4 * nb) + 64 * (b)), _MM_HINT_T0);                 \
        if (((b) & 15) == 0) _mm_prefetch((const char *)(scales + ob[0] + 4 * nb + 4 * (b)), _MM_HINT_T0);     \
    } while (0)

#define MX512_ROW1(k)                                                                                         \
    do {                                                                                                      \
        MX512_DECODE(k)                                                                                       \
        al##k##0 = _mm512_fmadd_ps(wl##k, xl0, al##k##0);                                                     \
        ah##k##0 = _mm512_fmadd_ps(wh##k, xh0, ah##k##0);                                                     \
    } while (0)

#define MX512_ROW2(k)                                                                                         \
    do {                                                                                                      \
        MX512_DECODE(k)                                                                                       \
        al##k##0 = _mm512_fmadd_ps(wl##k, xl0, al##k##0);                                                     \
        ah##k##0 = _mm512_fmadd_ps(wh##k, xh0, ah##k##0);                                                     \
        al##k##1 = _mm512_fmadd_ps(wl##k, xl1, al##k##1);                                                     \
        ah##k##1 = _mm512_fmadd_ps(wh##k, xh1, ah##k##1);                                                     \
    } while (0)

__attribute__((target("avx512f"), optimize("O3"))) static void rows_avx512(float *out, int ldo, const float *xp,
                                                                           const uint8_t *blocks,
                                                                           const uint8_t *scales, const float *bias,
                                                                           int n, int K, int o0, int o1)
{
    const size_t nb = (size_t)K / 32;
    float l255[16], sc[4][MX_SCB];
    scaled_lut(255, l255);
    const __m512 lutv = _mm512_loadu_ps(gpt_fp4_values), lut255 = _mm512_loadu_ps(l255);
    for (int o = o0; o < o1; o += 4) {
        int no = o1 - o < 4 ? o1 - o : 4;
        /* past the last output row: row o again, its results dropped */
        const size_t ob[4] = {(size_t)o * nb, (size_t)(o + (no > 1)) * nb, (size_t)(o + (no > 2) * 2) * nb,
                              (size_t)(o + (no > 3) * 3) * nb};
        for (int r = 0; r < n; r += 2) {
            int r2 = r + 1 < n; /* a second row, or none (its own kernel) */
            const float *x0 = xp + (size_t)r * K, *x1 = xp + (size_t)(r + r2) * K;
            __m512 al00 = _mm512_setzero_ps(), ah00 = al00, al01 = al00, ah01 = al00, al10 = al00, ah10 = al00,
                   al11 = al00, ah11 = al00, al20 = al00, ah20 = al00, al21 = al00, ah21 = al00, al30 = al00,
                   ah30 = al00, al31 = al00, ah31 = al00;
            for (size_t b0 = 0; b0 < nb; b0 += MX_SCB) {
                size_t b1 = nb - b0 < MX_SCB ? nb : b0 + MX_SCB;
                scales_f32(sc, scales, ob, b0, (int)(b1 - b0));
                if (r2)
                    for (size_t b = b0; b < b1; b++) {
                        MX512_PREFETCH_NEXT(b);
                        __m512 xl0 = _mm512_loadu_ps(x0 + 32 * b), xh0 = _mm512_loadu_ps(x0 + 32 * b + 16);
                        __m512 xl1 = _mm512_loadu_ps(x1 + 32 * b), xh1 = _mm512_loadu_ps(x1 + 32 * b + 16);
                        MX512_ROW2(0);
                        MX512_ROW2(1);
                        MX512_ROW2(2);
                        MX512_ROW2(3);
                    }
                else
                    for (size_t b = b0; b < b1; b++) {
                        MX512_PREFETCH_NEXT(b);
                        __m512 xl0 = _mm512_loadu_ps(x0 + 32 * b), xh0 = _mm512_loadu_ps(x0 + 32 * b + 16);
                        MX512_ROW1(0);
                        MX512_ROW1(1);
                        MX512_ROW1(2);
                        MX512_ROW1(3);
                    }
            }
            __m512 acc[4][2] = {{_mm512_add_ps(al00, ah00), _mm512_add_ps(al01, ah01)},
                                {_mm512_add_ps(al10, ah10), _mm512_add_ps(al11, ah11)},
                                {_mm512_add_ps(al20, ah20), _mm512_add_ps(al21, ah21)},
                                {_mm512_add_ps(al30, ah30), _mm512_add_ps(al31, ah31)}};
            for (int k = 0; k < no; k++)
                for (int j = 0; j <= r2; j++)
                    out[(size_t)(r + j) * ldo + o + k] = _mm512_reduce_add_ps(acc[k][j]) + (bias ? bias[o + k] : 0.0f);
        }
    }
}
#undef MX512_DECODE
#undef MX512_ROW1
#undef MX512_ROW2
#undef MX512_PREFETCH_NEXT

/* One input row, 4 blocks (128 weights, 64 bytes) of a row per step: the 64 bytes are 16 dwords
 * whose eight nibbles, shifted down 4 bits at a time, index the (unscaled) code table directly, so
 * 8 vpermps decode 128 weights with no byte-to-dword widening; lane i then holds element 8i + k of
 * the group (x arrives permuted to match: xq) and belongs to block i / 4, whose power of two scales
 * the group's 16 partial sums once (exact). One widening and two lookups per block fewer than
 * rows_avx512. Groups with a 255 scale, or K over MX_SCB blocks, go to rows_avx512. */
__attribute__((target("avx512f"), optimize("O3"))) static void row1_groups(float *out, const float *xq, const float *xp, const uint8_t *blocks,
                                                                           const uint8_t *scales, const float *bias, int K, int o0, int o1)
{
    const size_t nb = (size_t)K / 32, ng = nb / 4;
    float sc[4][MX_SCB];
    const __m512 lutv = _mm512_loadu_ps(gpt_fp4_values);
    /* lane i of a group's scale vector: block i / 4 */
    const __m512i quad = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    for (int o = o0; o < o1; o += 4) {
        int no = o1 - o < 4 ? o1 - o : 4;
        const size_t ob[4] = {(size_t)o * nb, (size_t)(o + (no > 1)) * nb, (size_t)(o + (no > 2) * 2) * nb,
                              (size_t)(o + (no > 3) * 3) * nb};
        if (memchr(scales + ob[0], 255, (size_t)no * nb)) { /* rare: the table times 2^128 */
            rows_avx512(out, 1, xp, blocks, scales, bias, 1, K, o, o + no);
            continue;
        }
        scales_f32(sc, scales, ob, 0, (int)nb);
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (size_t g = 0; g < ng; g++) {
            const char *next = (const char *)(blocks + 16 * (ob[0] + 4 * nb) + 256 * g);
            _mm_prefetch(next, _MM_HINT_T0);
            _mm_prefetch(next + 64, _MM_HINT_T0);
            _mm_prefetch(next + 128, _MM_HINT_T0);
            _mm_prefetch(next + 192, _MM_HINT_T0);
            __m512 xk[8];
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) xk[k] = _mm512_loadu_ps(xq + 128 * g + 16 * k);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512i v = _mm512_loadu_si512(blocks + 16 * (ob[r] + 4 * g));
                __m512 part = _mm512_mul_ps(_mm512_permutexvar_ps(v, lutv), xk[0]);
#pragma GCC unroll 7
                for (int k = 1; k < 8; k++) {
                    v = _mm512_srli_epi32(v, 4);
                    part = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, lutv), xk[k], part);
                }
                __m512 s4 = _mm512_permutexvar_ps(quad, _mm512_castps128_ps512(_mm_loadu_ps(sc[r] + 4 * g)));
                acc[r] = _mm512_fmadd_ps(part, s4, acc[r]);
            }
        }
        /* the last nb % 4 blocks one at a time, the rows_avx512 way (xp's per-block order) */
        for (size_t b = 4 * ng; b < nb; b++) {
            __m512 xl = _mm512_loadu_ps(xp + 32 * b), xh = _mm512_loadu_ps(xp + 32 * b + 16);
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512 lut = _mm512_mul_ps(lutv, _mm512_set1_ps(sc[r][b]));
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blocks + 16 * (ob[r] + b))));
                acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, lut), xl, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), xh, acc[r]);
            }
        }
        for (int r = 0; r < no; r++) out[o + r] = _mm512_reduce_add_ps(acc[r]) + (bias ? bias[o + r] : 0.0f);
    }
}

/* x for row1_groups: in each full group of 128, element 8i + k at 16k + i; the rest as permute_rows */
static void permute_groups(float *xq, const float *x, int K)
{
    int ng = K / 128;
    for (int g = 0; g < ng; g++)
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 16; i++) xq[128 * g + 16 * k + i] = x[128 * g + 8 * i + k];
    permute_rows(xq + 128 * ng, x + 128 * ng, K, 1, K - 128 * ng);
}

/* ---- AVX2: 8 lanes; the 8-entry vpermps table gives the magnitude, bit 3 the sign ---- */

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static inline __m256 dec8(__m256i v, __m256 mag)
{
    __m256 w = _mm256_permutevar8x32_ps(mag, v); /* index bits 0-2 */
    __m256i sign = _mm256_and_si256(_mm256_slli_epi32(v, 28), _mm256_set1_epi32((int)0x80000000u));
    return _mm256_xor_ps(w, _mm256_castsi256_ps(sign));
}

__attribute__((target("avx2,fma"), optimize("O3"))) static void rows_avx2(float *out, int ldo, const float *xp, const uint8_t *blocks,
                                                          const uint8_t *scales, const float *bias, int n, int K,
                                                          int o0, int o1)
{
    const int nb = K / 32;
    for (int o = o0; o < o1; o += 2) {
        int no = o1 - o < 2 ? o1 - o : 2;
        for (int r = 0; r < n; r += 2) {
            int r2 = r + 1 < n;
            const float *x0 = xp + (size_t)r * K, *x1 = xp + (size_t)(r + r2) * K;
            __m256 acc[2][2][2];
            for (int k = 0; k < 2; k++)
                for (int j = 0; j < 2; j++) acc[k][j][0] = acc[k][j][1] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++)
#pragma GCC unroll 2
                for (int k = 0; k < 2; k++) {
                    size_t ob = (size_t)(o + (k < no ? k : 0)) * nb + b;
                    float l[16];
                    __m256 mag;
                    if (scales[ob] == 255) {
                        scaled_lut(255, l);
                        mag = _mm256_loadu_ps(l);
                    } else {
                        mag = _mm256_mul_ps(_mm256_loadu_ps(gpt_fp4_values), _mm256_set1_ps(e8m0f(scales[ob])));
                    }
                    const uint8_t *p = blocks + 16 * ob;
                    __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
                    __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
                    /* even elements 0-14 | 16-30, odd 1-15 | 17-31 */
                    __m256 w0 = dec8(v0, mag), w1 = dec8(v1, mag);
                    __m256 w2 = dec8(_mm256_srli_epi32(v0, 4), mag), w3 = dec8(_mm256_srli_epi32(v1, 4), mag);
                    const float *xs[2] = {x0 + 32 * b, x1 + 32 * b};
                    for (int j = 0; j < 2; j++) {
                        acc[k][j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[j]), acc[k][j][0]);
                        acc[k][j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs[j] + 8), acc[k][j][1]);
                        acc[k][j][0] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xs[j] + 16), acc[k][j][0]);
                        acc[k][j][1] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xs[j] + 24), acc[k][j][1]);
                    }
                }
            for (int k = 0; k < no; k++)
                for (int j = 0; j <= r2; j++)
                    out[(size_t)(r + j) * ldo + o + k] =
                        hsum256(_mm256_add_ps(acc[k][j][0], acc[k][j][1])) + (bias ? bias[o + k] : 0.0f);
        }
    }
}
#endif

static int isa_best(void)
{
#ifdef MX_X86
    if (gpt_mxfp4_isa_supported(GPT_MXFP4_AVX512)) return GPT_MXFP4_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GPT_MXFP4_AVX2;
#endif
    return GPT_MXFP4_PORTABLE;
}

int gpt_mxfp4_isa_supported(int isa)
{
    if (isa == GPT_MXFP4_AUTO || isa == GPT_MXFP4_PORTABLE || isa == GPT_MXFP4_GEMM) return 1;
#ifdef MX_X86
    if (isa == GPT_MXFP4_AVX512) /* BW and VL: the scales' masked byte loads */
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
    if (isa == GPT_MXFP4_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* Dequantized tiles of MX_TILE weight rows and sgemm; the tiles are split across threads, each
 * with its own scratch, and sgemm runs single-threaded inside them (OpenBLAS on OpenMP keeps a
 * nested call on the calling thread). */
static void matmul_gemm(float *out, int ldo, const float *x, int ldx, const uint8_t *blocks, const uint8_t *scales,
                        const float *bias, int n, int K, int O)
{
    size_t nb = (size_t)K / 32;
    int ntiles = (O + MX_TILE - 1) / MX_TILE;
#pragma omp parallel if ((size_t)O * K >= MX_PAR_MIN)
    {
        float *w = gpt_xmalloc((size_t)MX_TILE * K * sizeof *w);
#pragma omp for schedule(static)
        for (int t = 0; t < ntiles; t++) {
            int o0 = t * MX_TILE, no = O - o0 < MX_TILE ? O - o0 : MX_TILE;
            gpt_mxfp4_dequant(blocks + (size_t)o0 * nb * 16, scales + (size_t)o0 * nb, (size_t)no * nb, w);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, no, K, 1.0f, x, ldx, w, K, 0.0f, out + o0, ldo);
            if (bias)
                for (int r = 0; r < n; r++)
                    for (int k = 0; k < no; k++) out[(size_t)r * ldo + o0 + k] += bias[o0 + k];
        }
        free(w);
    }
}

int gpt_mxfp4_matmul_isa(int isa, float *out, int ldo, const float *x, int ldx, const uint8_t *blocks,
                         const uint8_t *scales, const float *bias, int n, int K, int O)
{
    if (!gpt_mxfp4_isa_supported(isa) || K % 32 != 0) return -1;
    if (n <= 0 || O <= 0) return 0;
    if (isa == GPT_MXFP4_AUTO) isa = n >= MX_GEMM_ROWS ? GPT_MXFP4_GEMM : isa_best();
    if (isa == GPT_MXFP4_GEMM) {
        matmul_gemm(out, ldo, x, ldx, blocks, scales, bias, n, K, O);
        return 0;
    }
    if (isa == GPT_MXFP4_PORTABLE) {
#pragma omp parallel for schedule(static) if ((size_t)O * K >= MX_PAR_MIN)
        for (int o = 0; o < O; o += 8)
            rows_portable(out, ldo, x, ldx, blocks, scales, bias, n, K, o, o + 8 < O ? o + 8 : O);
        return 0;
    }
#ifdef MX_X86
    float *xp = gpt_xmalloc((size_t)n * K * sizeof *xp);
    permute_rows(xp, x, ldx, n, K);
    if (isa == GPT_MXFP4_AVX512 && n == 1 && K >= 128 && K / 32 <= MX_SCB) { /* decoding: row1_groups */
        float *xq = gpt_xmalloc((size_t)K * sizeof *xq);
        permute_groups(xq, x, K);
        int nch = (O + 31) / 32;
#pragma omp parallel for schedule(static) if ((size_t)O * K >= MX_PAR_MIN)
        for (int c = 0; c < nch; c++)
            row1_groups(out, xq, xp, blocks, scales, bias, K, c * 32, c * 32 + 32 < O ? c * 32 + 32 : O);
        free(xq), free(xp);
        return 0;
    }
    int step = isa == GPT_MXFP4_AVX512 ? 4 : 2, nchunks = (O + 8 * step - 1) / (8 * step);
#pragma omp parallel for schedule(static) if ((size_t)O * K >= MX_PAR_MIN)
    for (int c = 0; c < nchunks; c++) {
        int o0 = c * 8 * step, o1 = o0 + 8 * step < O ? o0 + 8 * step : O;
        if (isa == GPT_MXFP4_AVX512)
            rows_avx512(out, ldo, xp, blocks, scales, bias, n, K, o0, o1);
        else
            rows_avx2(out, ldo, xp, blocks, scales, bias, n, K, o0, o1);
    }
    free(xp);
    return 0;
#else
    return -1;
#endif
}

void gpt_mxfp4_matmul(float *out, int ldo, const float *x, int ldx, const uint8_t *blocks, const uint8_t *scales,
                      const float *bias, int n, int K, int O)
{
    if (gpt_mxfp4_matmul_isa(GPT_MXFP4_AUTO, out, ldo, x, ldx, blocks, scales, bias, n, K, O) < 0) abort();
}

/* Round |v| (already divided by the scale) to the nearest e2m1 magnitude code, ties to the even
 * code (the one whose mantissa bit is 0), saturating at 6. */
static uint8_t fp4_code(float v)
{
    float a = fabsf(v);
    static const float mid[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    uint8_t c = 0;
    while (c < 7 && (a > mid[c] || (a == mid[c] && (c & 1)))) c++;
    return (uint8_t)(c | (signbit(v) ? 8 : 0));
}

void gpt_mxfp4_quantize(const float *w, size_t n_blocks, uint8_t *blocks, uint8_t *scales)
{
    for (size_t b = 0; b < n_blocks; b++) {
        const float *p = w + 32 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fabsf(p[i]) > amax ? fabsf(p[i]) : amax;
        /* OCP MX: shared exponent floor(log2 amax) - 2 (e2m1's largest exponent); finite input only */
        int e = 0;
        if (amax > 0 && isfinite(amax)) {
            frexpf(amax, &e);
            e -= 1 + 2;
        }
        int s = e + 127;
        s = s < 0 ? 0 : s > 254 ? 254 : s;
        if (amax == 0 || !isfinite(amax)) s = amax == 0 ? 0 : 254;
        scales[b] = (uint8_t)s;
        float inv = 1.0f / e8m0f((uint8_t)s);
        for (int i = 0; i < 16; i++)
            blocks[16 * b + i] = (uint8_t)(fp4_code(p[2 * i] * inv) | fp4_code(p[2 * i + 1] * inv) << 4);
    }
}
