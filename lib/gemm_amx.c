/* gemm_amx.c: C = alpha op(A) op(B) + beta C with bf16 operands on AMX tiles.
 *
 * Both operands are first packed into bf16 tiles of 16 rows x 64 bytes: op(A) as 16 rows of 32
 * k-values, op(B) in the pair-interleaved ("VNNI") layout TDPBF16PS takes, 16 k-pairs x 16 columns
 * x 2. Rows and columns are padded to 32 and K to 32 with zeros, so the kernel has no edge cases:
 * each 32 x 32 block of C is summed in four accumulator tiles by one thread, K in a fixed order
 * (results do not depend on the thread count), and written out once, edges clipped.
 *
 * Blocking: op(B) is packed whole (shared by the threads); a work item is up to mc x 8 blocks of
 * C, and the thread that takes it packs the item's A panel (mc 32-row blocks x K) into its own
 * space. The item runs over K in chunks of 4096 (mc is chosen so that the A panel's chunk is near
 * 512 KB and stays in the core's L2 while the item sweeps its B panels' chunks), keeping its sums
 * in memory between chunks. Consecutive items share their A panel, so each thread packs each
 * panel once. */
#include "gemm_amx.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define GPT_AMX_BUILD 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

int gpt_amx_available(void)
{
#ifdef GPT_AMX_BUILD
    /* GPT_AMX=0 keeps the emulation (for comparing the two; nothing else needs it). */
    const char *env = getenv("GPT_AMX");
    if (env && strcmp(env, "0") == 0) return 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0; /* AMX-BF16, AMX-TILE */
    if (!(b & (1u << 16)) || !(b & (1u << 30))) return 0;  /* AVX512F, AVX512BW: the packers */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return 0; /* AVX512_BF16 */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0; /* the OS saves XTILECFG and XTILEDATA */
    /* Linux hands the tile registers out per process on request (ARCH_REQ_XCOMP_PERM, feature 18:
     * XTILEDATA); without it the first tile instruction is a SIGILL. */
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 0;
    return 1;
#else
    return 0;
#endif
}

#ifdef GPT_AMX_BUILD

enum { TILE_ELEMS = 512 }; /* bf16 values per packed tile: 16 rows x 32 */

/* The packers run only where AMX is (so AVX-512 is too); O3 so that GCC vectorizes them. */
#define PACK __attribute__((target("avx512f,avx512bw,avx512bf16"), optimize("O3")))

/* A packed tile is 16 rows of 16 k-pair words either way: for op(A), row i = m, word r = k-pair r;
 * for op(B), row r = k-pair r, word c = n. words[row][word] here. */
typedef uint32_t tile_words[16][16];

/* Pairs of k from a k-major source (element (k, x) at src[k * ld + x]): w[r][x] for 16 x-values,
 * of which the first nk k-values and nx x-values exist (the rest are zeros: the matrix edges).
 * VCVTNE2PS2BF16 rounds to nearest even as gpt_round_bf16 (half.h) does, NaN stays NaN, except that
 * it flushes inputs below bf16's normal range to zero, which TDPBF16PS does to its inputs anyway. */
PACK static void pairs_kmajor(tile_words w, const float *src, size_t ld, int nk, int nx)
{
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                                22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __mmask16 xm = (__mmask16)((1u << nx) - 1);
    for (int r = 0; r < 16; r++) {
        const float *lo = src + (size_t)(2 * r) * ld, *hi = lo + ld;
        __m512 vlo = 2 * r < nk ? _mm512_maskz_loadu_ps(xm, lo) : _mm512_setzero_ps();
        __m512 vhi = 2 * r + 1 < nk ? _mm512_maskz_loadu_ps(xm, hi) : _mm512_setzero_ps();
        __m512bh both = _mm512_cvtne2ps_pbh(vhi, vlo); /* lo0..15, hi0..15 */
        _mm512_storeu_si512(w[r], _mm512_permutexvar_epi16(interleave, (__m512i)both));
    }
}

/* Pairs of k from an x-major source (element (k, x) at src[x * ld + k]): w[x][r]; edges as above. */
PACK static void pairs_xmajor(tile_words w, const float *src, size_t ld, int nk, int nx)
{
    __mmask16 k0 = (__mmask16)(nk >= 16 ? 0xffff : (1u << nk) - 1);
    __mmask16 k1 = (__mmask16)(nk >= 32 ? 0xffff : nk <= 16 ? 0 : (1u << (nk - 16)) - 1);
    for (int x = 0; x < 16; x++) {
        if (x >= nx) {
            _mm512_storeu_si512(w[x], _mm512_setzero_si512());
            continue;
        }
        const float *row = src + (size_t)x * ld;
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(k1, row + 16), _mm512_maskz_loadu_ps(k0, row));
        _mm512_storeu_si512(w[x], (__m512i)v);
    }
}

PACK static void store_words(uint16_t *t, tile_words w, int transpose)
{
    uint32_t out[16][16];
    if (transpose)
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) out[i][j] = w[j][i];
    else
        memcpy(out, w, sizeof out);
    memcpy(t, out, sizeof out);
}

/* One packed tile of the (k, x) matrix at src (x_is_col: element (k, x) at src[k ld + x], else at
 * src[x ld + k]), k in [k0, k0 + 32), x in [x0, x0 + 16), zeros past K and X. transpose: the tile
 * wants rows of x (op(A)); else rows of k-pairs (op(B)). */
static void pack_tile(uint16_t *t, const float *src, size_t ld, int x_is_col, int k0, int x0, int K, int X,
                      int transpose)
{
    int nk = K - k0 < 32 ? K - k0 : 32, nx = X - x0 < 16 ? X - x0 : 16;
    if (nk <= 0 || nx <= 0) {
        memset(t, 0, TILE_ELEMS * sizeof *t);
        return;
    }
    tile_words w;
    if (x_is_col)
        pairs_kmajor(w, src + (size_t)k0 * ld + x0, ld, nk, nx); /* w[r][x] */
    else
        pairs_xmajor(w, src + (size_t)x0 * ld + k0, ld, nk, nx); /* w[x][r] */
    /* op(A) tiles are rows of x; op(B) tiles rows of k-pairs */
    store_words(t, w, x_is_col == transpose);
}

/* Rows [16 mb0, 16 (mb0 + nmb)) of op(A) (M x K) into nmb x nkb tiles, tile (mb - mb0, kb) at
 * ((mb - mb0) nkb + kb) 512: row i = m0 + i, the 32 k-values k0.. in order. ta: A is stored K x M
 * (k-major: pairs, then a transpose). One thread: each packs the panel it is about to use. */
static void pack_a_panel(int ta, const float *A, int lda, int M, int K, int mb0, int nmb, int nkb, uint16_t *dst)
{
    /* Walk the source in its storage order (k-major when ta): down the rows first, one 64-byte
     * piece per row, each row its own page, is a TLB miss per load on a big matrix. */
    for (int o = 0; o < (ta ? nkb : nmb); o++)
        for (int q = 0; q < (ta ? nmb : nkb); q++) {
            int mb = mb0 + (ta ? q : o), kb = ta ? o : q;
            pack_tile(dst + ((size_t)(mb - mb0) * nkb + kb) * TILE_ELEMS, A, (size_t)lda, ta, kb * 32, mb * 16, K, M,
                      1);
        }
}

struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* One 32 x 32 block of op(A) op(B) over nkb k-tiles into out (32 x 32 floats), which holds the
 * sum so far unless first: tiles 0-3 hold C, 4-5 the two 16-row halves of A, 6-7 the two
 * 16-column halves of B. */
__attribute__((target("amx-tile,amx-bf16"))) static void block_32x32(const uint16_t *a0, const uint16_t *a1,
                                                                     const uint16_t *b0, const uint16_t *b1,
                                                                     int nkb, float *out, int first)
{
    if (first) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, out, 128);
        _tile_loadd(1, out + 16, 128);
        _tile_loadd(2, out + 16 * 32, 128);
        _tile_loadd(3, out + 16 * 32 + 16, 128);
    }
    for (int kb = 0; kb < nkb; kb++) {
        size_t o = (size_t)kb * TILE_ELEMS;
        _tile_loadd(4, a0 + o, 64);
        _tile_loadd(6, b0 + o, 64);
        _tile_loadd(5, a1 + o, 64);
        _tile_loadd(7, b1 + o, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 128);
    _tile_stored(1, out + 16, 128);
    _tile_stored(2, out + 16 * 32, 128);
    _tile_stored(3, out + 16 * 32 + 16, 128);
}

/* Rows 0-15 only: tiles 0-1 hold C, 4 the A rows, 6-7 the two halves of B. */
__attribute__((target("amx-tile,amx-bf16"))) static void block_16x32(const uint16_t *a0, const uint16_t *b0,
                                                                     const uint16_t *b1, int nkb, float *out,
                                                                     int first)
{
    if (first) {
        _tile_zero(0);
        _tile_zero(1);
    } else {
        _tile_loadd(0, out, 128);
        _tile_loadd(1, out + 16, 128);
    }
    for (int kb = 0; kb < nkb; kb++) {
        size_t o = (size_t)kb * TILE_ELEMS;
        /* Few rows: B streams from memory with little work per byte, and the hardware prefetchers
         * stop at each 4 KB page (every fourth tile here): ask for the tiles PF ahead. */
        enum { PF = 6 };
        const char *p0 = (const char *)(b0 + o + PF * TILE_ELEMS), *p1 = (const char *)(b1 + o + PF * TILE_ELEMS);
        for (int l = 0; l < TILE_ELEMS * 2; l += 64) {
            _mm_prefetch(p0 + l, _MM_HINT_T0);
            _mm_prefetch(p1 + l, _MM_HINT_T0);
        }
        _tile_loadd(4, a0 + o, 64);
        _tile_loadd(6, b0 + o, 64);
        _tile_loadd(7, b1 + o, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
    }
    _tile_stored(0, out, 128);
    _tile_stored(1, out + 16, 128);
}

__attribute__((target("amx-tile"))) static void tiles_on(void)
{
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* Not _tile_loadconfig: GCC 12 drops the stores to colsb/rows before its builtin (it does not
     * see them read), leaving an all-zero configuration and a SIGILL at the first tile op. */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

__attribute__((target("amx-tile"))) static void tiles_off(void) { _tile_release(); }

/* The workspace grown to at least n bytes (its old contents are not kept). Reused across calls:
 * fresh pages for every GEMM cost more in page faults than packing them does. */
static void *ws_reserve(gpt_amx_ws *ws, size_t n)
{
    n = (n + 63) / 64 * 64;
    if (ws->cap < n) {
        free(ws->buf);
        ws->buf = aligned_alloc(64, n);
        if (!ws->buf) ws->buf = gpt_xmalloc(n); /* which reports the failure; tiles need no alignment */
        ws->cap = n;
    }
    return ws->buf;
}

/* op(B) (K x N) into 2 nnj x nkb tiles in TDPBF16PS's pair-interleaved layout, tile (nb, kb) at
 * (nb nkb + kb) 512: row r = k-pair (k0 + 2r, k0 + 2r + 1), word c = column n0 + c. tb: B is
 * stored N x K. Walked in B's storage order, as pack_a_panel. */
static void pack_b(int tb, const float *B, int ldb, int K, int N, int nnj, int nkb, uint16_t *dst)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int o = 0; o < (tb ? 2 * nnj : nkb); o++)
        for (int q = 0; q < (tb ? nkb : 2 * nnj); q++) {
            int nb = tb ? o : q, kb = tb ? q : o;
            pack_tile(dst + ((size_t)nb * nkb + kb) * TILE_ELEMS, B, (size_t)ldb, !tb, kb * 32, nb * 16, K, N, 0);
        }
}

struct gpt_amx_pack {
    const float *B;
    int tb, K, N, ldb;
    uint16_t *data;
};

/* The kept pack of a frozen B, made on first use. */
static const uint16_t *frozen_pack(gpt_amx_ws *ws, int tb, const float *B, int ldb, int K, int N, int nnj, int nkb)
{
    for (int i = 0; i < ws->npacks; i++) {
        struct gpt_amx_pack *p = &ws->packs[i];
        if (p->B == B && p->tb == tb && p->K == K && p->N == N && p->ldb == ldb) return p->data;
    }
    ws->packs = gpt_xrealloc(ws->packs, (size_t)(ws->npacks + 1) * sizeof *ws->packs);
    size_t n = (size_t)2 * nnj * nkb * TILE_ELEMS * sizeof(uint16_t);
    uint16_t *data = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!data) data = gpt_xmalloc(n);
    pack_b(tb, B, ldb, K, N, nnj, nkb, data);
    ws->packs[ws->npacks++] = (struct gpt_amx_pack){B, tb, K, N, ldb, data};
    return data;
}

static void drop_packs(gpt_amx_ws *ws)
{
    for (int i = 0; i < ws->npacks; i++) free(ws->packs[i].data);
    free(ws->packs);
    ws->packs = NULL;
    ws->npacks = 0;
}

void gpt_amx_ws_freeze(gpt_amx_ws *ws, const void *lo, const void *hi, unsigned epoch)
{
    if (ws->frozen_lo == lo && ws->frozen_hi == hi && ws->epoch == epoch) return;
    drop_packs(ws);
    ws->frozen_lo = lo;
    ws->frozen_hi = hi;
    ws->epoch = epoch;
}

void gpt_amx_ws_free(gpt_amx_ws *ws)
{
    if (!ws) return;
    drop_packs(ws);
    free(ws->buf);
    *ws = (gpt_amx_ws){0};
}

void gpt_gemm_bf16_amx(gpt_amx_ws *ws, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    int nkb = K > 0 ? (K + 31) / 32 : 1;
    int nmi = (M + 31) / 32, nnj = (N + 31) / 32; /* 32 x 32 blocks of C */
    size_t blk = (size_t)2 * nkb * TILE_ELEMS;    /* bf16 values of a 32-row (or -column) panel */
    /* K in chunks of up to KC k-tiles (4096 values): a chunk of an A block (128 KB) and of a B
     * block stay in L2 while the item sweeps them; the sums wait in memory between chunks (the
     * order of each sum stays fixed). mc A blocks per item: ~512 KB of A chunks. */
    enum { KC = 128 };
    int kc = nkb < KC ? nkb : KC;
    int mc = (int)((512u << 10) / ((size_t)2 * kc * TILE_ELEMS * 2));
    mc = mc < 1 ? 1 : mc > 16 ? 16 : mc;
    int nthr = omp_get_max_threads(), nim = (nmi + mc - 1) / mc;
    /* up to 8 B panels per item, fewer when there are few row blocks (decoding: one), so that
     * each thread gets several items */
    int want = (4 * nthr + nim - 1) / nim, nc = nnj / (want > 0 ? want : 1);
    nc = nc < 1 ? 1 : nc > 8 ? 8 : nc;
    int nin = (nnj + nc - 1) / nc;

    gpt_amx_ws tmp = {0};
    if (!ws) ws = &tmp;
    int frozen = ws->frozen_lo && (const void *)B >= ws->frozen_lo && (const void *)B < ws->frozen_hi;
    size_t bsize = frozen ? 0 : (size_t)nnj * blk, asize = (size_t)mc * blk;
    size_t osize = (size_t)mc * nc * 32 * 32 * 2; /* the item's sums, as bf16-sized units */
    uint16_t *space = ws_reserve(ws, (bsize + (size_t)nthr * (asize + osize)) * sizeof(uint16_t));
    const uint16_t *bp = space;
    if (frozen)
        bp = frozen_pack(ws, tb, B, ldb, K, N, nnj, nkb);
    else
        pack_b(tb, B, ldb, K, N, nnj, nkb, space);

#pragma omp parallel num_threads(nthr)
    {
        uint16_t *ap = space + bsize + (size_t)omp_get_thread_num() * (asize + osize);
        float *sums = (float *)(ap + asize); /* block (i, j) of the item at ((j - j0) mc + i - i0) 1024 */
        int have = -1;                       /* the A panel in ap */
        tiles_on();
#pragma omp for schedule(static)
        for (int item = 0; item < nim * nin; item++) {
            int im = item / nin, in = item % nin;
            int i0 = im * mc, i1 = i0 + mc < nmi ? i0 + mc : nmi;
            int j0 = in * nc, j1 = j0 + nc < nnj ? j0 + nc : nnj;
            if (have != im) {
                pack_a_panel(ta, A, lda, M, K, 2 * i0, 2 * (i1 - i0), nkb, ap);
                have = im;
            }
            for (int k0 = 0; k0 < nkb; k0 += kc) {
                int nk = nkb - k0 < kc ? nkb - k0 : kc;
                size_t ko = (size_t)k0 * TILE_ELEMS;
                for (int j = j0; j < j1; j++)
                    for (int i = i0; i < i1; i++) {
                        const uint16_t *a0 = ap + (size_t)(i - i0) * blk + ko, *b0 = bp + (size_t)j * blk + ko;
                        float *out = sums + ((size_t)(j - j0) * mc + (i - i0)) * 1024;
                        if (M - i * 32 <= 16) /* half the tile work: up to 16 rows (decoding) */
                            block_16x32(a0, b0, b0 + blk / 2, nk, out, k0 == 0);
                        else
                            block_32x32(a0, a0 + blk / 2, b0, b0 + blk / 2, nk, out, k0 == 0);
                    }
            }
            for (int j = j0; j < j1; j++)
                for (int i = i0; i < i1; i++) {
                    const float *out = sums + ((size_t)(j - j0) * mc + (i - i0)) * 1024;
                    int rows = M - i * 32 < 32 ? M - i * 32 : 32, cols = N - j * 32 < 32 ? N - j * 32 : 32;
                    for (int r = 0; r < rows; r++) {
                        float *c = C + (size_t)(i * 32 + r) * ldc + j * 32;
                        const float *ov = out + r * 32;
                        if (beta == 0.0f)
                            for (int q = 0; q < cols; q++) c[q] = alpha * ov[q];
                        else
                            for (int q = 0; q < cols; q++) c[q] = alpha * ov[q] + beta * c[q];
                    }
                }
        }
        tiles_off();
    }
    gpt_amx_ws_free(&tmp);
}

#else /* no AMX in this build */

void gpt_amx_ws_free(gpt_amx_ws *ws) { (void)ws; }
void gpt_amx_ws_freeze(gpt_amx_ws *ws, const void *lo, const void *hi, unsigned epoch)
{
    (void)ws, (void)lo, (void)hi, (void)epoch;
}

void gpt_gemm_bf16_amx(gpt_amx_ws *ws, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc)
{
    (void)ws, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta,
        (void)C, (void)ldc;
    fprintf(stderr, "gpt: internal error: gpt_gemm_bf16_amx called in a build without AMX\n");
    abort();
}

#endif
