/* tokens.c: the gpt-tokens(5) token stream format: writer, mmapped reader, streaming reader. */
#include "tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t by value: no allocation to fail */
#include <xxhash.h>
#include <zstd.h>

#include "fileio.h"

#define HDR GPT_TOKENS_HEADER_SIZE
#define TRL GPT_TOKENS_TRAILER_SIZE
#define WRITE_IDS 65536          /* ids per packed write buffer */
#define RBUF (1u << 20)          /* streaming reader buffer */
#define HOLD (64u << 10)         /* bytes a stream keeps unconsumed until EOF: trailer + garbage diagnosis */
#define CHECK_CHUNK (1u << 20)   /* bytes per hash + range-check step when validating a mapped body */

static const unsigned char zstd_magic[4] = {0x28, 0xB5, 0x2F, 0xFD};

typedef unsigned long long ull;

/* ---- little-endian access; memcpy keeps it alignment-safe and compiles to plain loads ---- */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE16(x) __builtin_bswap16(x)
#define LE32(x) __builtin_bswap32(x)
#define LE64(x) __builtin_bswap64(x)
#else
#define LE16(x) (x)
#define LE32(x) (x)
#define LE64(x) (x)
#endif

static inline uint32_t ld16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return LE16(v);
}
static inline uint32_t ld32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return LE32(v);
}
static inline uint64_t ld64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return LE64(v);
}
static inline void st16(unsigned char *p, uint16_t v)
{
    v = LE16(v);
    memcpy(p, &v, 2);
}
static inline void st32(unsigned char *p, uint32_t v)
{
    v = LE32(v);
    memcpy(p, &v, 4);
}
static inline void st64(unsigned char *p, uint64_t v)
{
    v = LE64(v);
    memcpy(p, &v, 8);
}

int gpt_tokens_width_for(uint32_t vocab_size) { return vocab_size <= 65536u ? 2 : 4; }

/* Unpacks n ids to u32 and reports whether any is >= vocab. `omp simd`: the loops must
 * vectorize at -O2 (GCC's default cost model would not), and src/out never alias. */
static int unpack_ids(const unsigned char *src, size_t n, int width, uint32_t vocab, uint32_t *out)
{
    uint32_t mx = 0;
    if (width == 2) {
#pragma omp simd reduction(max : mx)
        for (size_t i = 0; i < n; i++) {
            uint32_t v = ld16(src + 2 * i);
            out[i] = v;
            mx = v > mx ? v : mx;
        }
    } else {
#pragma omp simd reduction(max : mx)
        for (size_t i = 0; i < n; i++) {
            uint32_t v = ld32(src + 4 * i);
            out[i] = v;
            mx = v > mx ? v : mx;
        }
    }
    return n > 0 && mx >= vocab;
}

/* Index of the first id >= vocab in packed ids, or n. */
static size_t first_bad_packed(const unsigned char *src, size_t n, int width, uint32_t vocab)
{
    if (width == 2 && vocab > 65535u) return n;
    size_t step = 4096;
    for (size_t at = 0; at < n; at += step) {
        size_t k = n - at < step ? n - at : step;
        const unsigned char *s = src + at * (size_t)width;
        uint32_t mx = 0;
        if (width == 2) {
#pragma omp simd reduction(max : mx)
            for (size_t i = 0; i < k; i++) {
                uint32_t v = ld16(s + 2 * i);
                mx = v > mx ? v : mx;
            }
        } else {
#pragma omp simd reduction(max : mx)
            for (size_t i = 0; i < k; i++) {
                uint32_t v = ld32(s + 4 * i);
                mx = v > mx ? v : mx;
            }
        }
        if (mx < vocab) continue;
        for (size_t i = 0; i < k; i++)
            if ((width == 2 ? ld16(s + 2 * i) : ld32(s + 4 * i)) >= vocab) return at + i;
    }
    return n;
}

static inline uint32_t packed_at(const unsigned char *src, int width, uint64_t i)
{
    return width == 2 ? ld16(src + 2 * i) : ld32(src + 4 * i);
}

/* ============================== writer ============================== */

struct gpt_tokw {
    gpt_out out;
    char *name;
    uint32_t vocab;
    int width;
    ZSTD_CCtx *zc;
    unsigned char *zbuf;
    size_t zcap;
    unsigned char *buf; /* packed ids not yet hashed and written */
    size_t len, cap;
    XXH64_state_t xs;
    uint64_t n;
    int failed;
};

static int w_fwrite(gpt_tokw *w, const void *p, size_t n, gpt_err *err)
{
    if (n && fwrite(p, 1, n, w->out.f) != n) {
        w->failed = 1;
        return gpt_errf(err, "%s: write error: %s", w->name, strerror(errno));
    }
    return 0;
}

/* Writes bytes of the uncompressed file, through zstd when compressing. */
static int w_sink(gpt_tokw *w, const void *p, size_t n, ZSTD_EndDirective mode, gpt_err *err)
{
    if (!w->zc) return w_fwrite(w, p, n, err);
    ZSTD_inBuffer in = {p, n, 0};
    for (;;) {
        ZSTD_outBuffer o = {w->zbuf, w->zcap, 0};
        size_t rem = ZSTD_compressStream2(w->zc, &o, &in, mode);
        if (ZSTD_isError(rem)) {
            w->failed = 1;
            return gpt_errf(err, "%s: zstd compression failed: %s", w->name, ZSTD_getErrorName(rem));
        }
        if (w_fwrite(w, w->zbuf, o.pos, err) != 0) return -1;
        if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size) return 0;
    }
}

static int w_flush_body(gpt_tokw *w, gpt_err *err)
{
    if (w->len == 0) return 0;
    XXH64_update(&w->xs, w->buf, w->len);
    int rc = w_sink(w, w->buf, w->len, ZSTD_e_continue, err);
    w->len = 0;
    return rc;
}

static void w_free(gpt_tokw *w)
{
    ZSTD_freeCCtx(w->zc);
    free(w->zbuf);
    free(w->buf);
    free(w->name);
    free(w);
}

gpt_tokw *gpt_tokw_open(const char *path, uint32_t vocab_size, int zstd_level, gpt_err *err)
{
    const char *name = strcmp(path, "-") == 0 ? "stdout" : path;
    if (vocab_size == 0) {
        gpt_errf(err, "%s: cannot write a token stream with vocab size 0", name);
        return NULL;
    }
    if (zstd_level != 0 && (zstd_level < ZSTD_minCLevel() || zstd_level > ZSTD_maxCLevel())) {
        gpt_errf(err, "%s: zstd level %d out of range (%d..%d, 0 = uncompressed)", name, zstd_level,
                 ZSTD_minCLevel(), ZSTD_maxCLevel());
        return NULL;
    }
    gpt_tokw *w = gpt_xcalloc(1, sizeof *w);
    w->name = gpt_xstrdup(name);
    w->vocab = vocab_size;
    w->width = gpt_tokens_width_for(vocab_size);
    w->cap = (size_t)WRITE_IDS * (size_t)w->width;
    w->buf = gpt_xmalloc(w->cap);
    XXH64_reset(&w->xs, 0);
    if (zstd_level != 0) {
        w->zc = ZSTD_createCCtx();
        if (!w->zc) {
            fprintf(stderr, "gpt: out of memory creating a zstd context\n");
            abort();
        }
        size_t e = ZSTD_CCtx_setParameter(w->zc, ZSTD_c_compressionLevel, zstd_level);
        if (!ZSTD_isError(e)) e = ZSTD_CCtx_setParameter(w->zc, ZSTD_c_checksumFlag, 1);
        if (ZSTD_isError(e)) {
            gpt_errf(err, "%s: zstd setup failed: %s", name, ZSTD_getErrorName(e));
            w_free(w);
            return NULL;
        }
        w->zcap = ZSTD_CStreamOutSize();
        w->zbuf = gpt_xmalloc(w->zcap);
    }
    if (gpt_out_open(&w->out, path, err) != 0) {
        w_free(w);
        return NULL;
    }
    unsigned char h[HDR];
    memcpy(h, GPT_TOKENS_MAGIC, 8);
    st32(h + 8, GPT_TOKENS_VERSION);
    st32(h + 12, vocab_size);
    st32(h + 16, (uint32_t)w->width);
    st32(h + 20, (uint32_t)XXH64(h, 20, 0));
    if (w_sink(w, h, HDR, ZSTD_e_continue, err) != 0) {
        gpt_tokw_abort(w);
        return NULL;
    }
    return w;
}

int gpt_tokw_write(gpt_tokw *w, const uint32_t *ids, size_t n, gpt_err *err)
{
    if (w->failed) return gpt_errf(err, "%s: writer failed earlier", w->name);
    uint32_t mx = 0;
#pragma omp simd reduction(max : mx)
    for (size_t i = 0; i < n; i++) mx = ids[i] > mx ? ids[i] : mx;
    if (n > 0 && mx >= w->vocab) {
        size_t i = 0;
        while (ids[i] < w->vocab) i++;
        return gpt_errf(err, "%s: id %u at index %zu (stream token %llu) is >= vocab size %u", w->name,
                        ids[i], i, (ull)(w->n + i), w->vocab);
    }
    while (n > 0) {
        size_t room = (w->cap - w->len) / (size_t)w->width;
        size_t k = n < room ? n : room;
        unsigned char *d = w->buf + w->len;
        if (w->width == 2) {
#pragma omp simd
            for (size_t i = 0; i < k; i++) st16(d + 2 * i, (uint16_t)ids[i]);
        } else {
#pragma omp simd
            for (size_t i = 0; i < k; i++) st32(d + 4 * i, ids[i]);
        }
        w->len += k * (size_t)w->width;
        w->n += k;
        ids += k;
        n -= k;
        if (w->len == w->cap && w_flush_body(w, err) != 0) return -1;
    }
    return 0;
}

uint64_t gpt_tokw_count(const gpt_tokw *w) { return w->n; }

int gpt_tokw_close(gpt_tokw *w, gpt_err *err)
{
    if (w->failed) {
        gpt_errf(err, "%s: writer failed earlier; output discarded", w->name);
        gpt_tokw_abort(w);
        return -1;
    }
    unsigned char t[TRL];
    int rc = w_flush_body(w, err);
    if (rc == 0) {
        memcpy(t, GPT_TOKENS_END_MAGIC, 8);
        st64(t + 8, w->n);
        st64(t + 16, XXH64_digest(&w->xs));
        rc = w_sink(w, t, TRL, w->zc ? ZSTD_e_end : ZSTD_e_continue, err);
    }
    if (rc != 0) {
        gpt_tokw_abort(w);
        return -1;
    }
    rc = gpt_out_commit(&w->out, err);
    w_free(w);
    return rc;
}

void gpt_tokw_abort(gpt_tokw *w)
{
    if (!w) return;
    if (w->out.f && !w->out.tmp) fflush(w->out.f); /* stdout: what was written stays written */
    gpt_out_abort(&w->out);
    w_free(w);
}

/* ============================== reader ============================== */

struct gpt_tokr {
    char *name;
    const char *unit; /* "byte" or "decompressed byte": offsets in messages */
    uint32_t version, vocab;
    int width, compressed, failed, done;
    uint64_t count; /* ids returned by gpt_tokr_read */

    /* whole input in memory (mmap or caller's buffer) */
    const unsigned char *mem;
    size_t mem_size;
    int mem_mapped; /* we munmap it */

    /* validated plain body: random access */
    const unsigned char *body;
    uint64_t n_tokens;

    /* streaming: source (fd or memory) -> [zstd] -> buf[lo, hi) */
    int fd, own_fd, eof;
    ZSTD_DCtx *zd;
    unsigned char *zin;
    size_t zin_cap;
    ZSTD_inBuffer zib;
    uint64_t zin_base; /* compressed bytes before zib.src[0] */
    int zin_eof, zframe_done, zchecked;
    unsigned char *buf;
    size_t lo, hi;
    uint64_t off; /* stream offset of buf[lo] */
    XXH64_state_t xs;
    int tail_known;
    uint64_t body_left, trailer_n, trailer_hash, trailer_off;
};

static int r_fail(gpt_tokr *r) { r->failed = 1; return -1; }

static int parse_header(gpt_tokr *r, const unsigned char *h, size_t len, gpt_err *err)
{
    const char *n = r->name;
    if (len == 0)
        return gpt_errf(err, "%s: empty input: not a gpt token stream (truncated before the header); "
                             "did you mean `gpt-tokenize encode`?", n);
    size_t k = len < 8 ? len : 8;
    for (size_t i = 0; i < k; i++)
        if (h[i] != (unsigned char)GPT_TOKENS_MAGIC[i])
            return gpt_errf(err, "%s: %s %zu: not a gpt token stream (bad magic); did you mean "
                                 "`gpt-tokenize encode`?", n, r->unit, i);
    if (len < HDR)
        return gpt_errf(err, "%s: truncated: %zu bytes, shorter than the %d-byte header", n, len, HDR);
    r->version = ld32(h + 8);
    if (r->version != GPT_TOKENS_VERSION)
        return gpt_errf(err, "%s: %s 8: unknown token stream version %u (this reader knows version %u; "
                             "written by a newer gpt toolchain?)", n, r->unit, r->version, GPT_TOKENS_VERSION);
    uint32_t want = (uint32_t)XXH64(h, 20, 0), got = ld32(h + 20);
    if (want != got)
        return gpt_errf(err, "%s: %s 20: header checksum mismatch (stored 0x%08x, computed 0x%08x): "
                             "the header is corrupt", n, r->unit, got, want);
    r->vocab = ld32(h + 12);
    uint32_t width = ld32(h + 16);
    if (r->vocab == 0) return gpt_errf(err, "%s: %s 12: bad vocab size 0", n, r->unit);
    if (width != (uint32_t)gpt_tokens_width_for(r->vocab))
        return gpt_errf(err, "%s: %s 16: bad width %u for vocab size %u (version 1 requires %d)", n, r->unit,
                        width, r->vocab, gpt_tokens_width_for(r->vocab));
    r->width = (int)width;
    return 0;
}

/* The end of the input: tail[0, len) holds whatever follows `tok_before` ids, starting at stream
 * offset `off` on a token boundary, and nothing else follows. Finds the trailer (the last 24 bytes)
 * and checks it against the body; else tells truncation from garbage after a real trailer
 * (looked for within HOLD bytes of the end: a stream never consumes those before EOF). */
static int resolve_tail(gpt_tokr *r, const unsigned char *tail, size_t len, uint64_t tok_before, uint64_t off,
                        gpt_err *err)
{
    const char *n = r->name, *u = r->unit;
    uint64_t w = (uint64_t)r->width;
    if (len >= TRL && memcmp(tail + len - TRL, GPT_TOKENS_END_MAGIC, 8) == 0) {
        uint64_t body = len - TRL, toff = off + body;
        r->trailer_n = ld64(tail + len - TRL + 8);
        r->trailer_hash = ld64(tail + len - TRL + 16);
        r->trailer_off = toff;
        if (body % w != 0)
            return gpt_errf(err, "%s: size mismatch: the body (%ss %d..%llu) is %llu bytes, not a multiple of "
                                 "the %d-byte id width", n, u, HDR, (ull)toff, (ull)(toff - HDR), r->width);
        uint64_t have = tok_before + body / w;
        if (r->trailer_n != have)
            return gpt_errf(err, "%s: size mismatch: the trailer at %s %llu says %llu tokens but the body holds "
                                 "%llu (%llu bytes); expected %llu bytes in all, found %llu", n, u, (ull)toff,
                            (ull)r->trailer_n, (ull)have, (ull)(have * w),
                            r->trailer_n > (UINT64_MAX - HDR - TRL) / w ? 0ull
                                                                        : (ull)(r->trailer_n * w + HDR + TRL),
                            (ull)(toff + TRL));
        r->body_left = body;
        r->tail_known = 1;
        return 0;
    }
    if (len >= TRL) {
        size_t p = len > HOLD ? len - HOLD : 0;
        p = (p + (size_t)w - 1) / (size_t)w * (size_t)w;
        for (; p + TRL <= len; p += (size_t)w)
            if (memcmp(tail + p, GPT_TOKENS_END_MAGIC, 8) == 0 && ld64(tail + p + 8) == tok_before + p / w)
                return gpt_errf(err, "%s: trailing garbage: %llu bytes after the trailer that ends at %s %llu",
                                n, (ull)(len - p - TRL), u, (ull)(off + p + TRL));
    }
    return gpt_errf(err, "%s: truncated: no trailer at the end (the input stops at %s %llu, after %llu whole "
                         "tokens); the file is incomplete, regenerate it", n, u, (ull)(off + len),
                    (ull)(tok_before + len / w));
}

static gpt_tokr *r_new(const char *name)
{
    gpt_tokr *r = gpt_xcalloc(1, sizeof *r);
    r->name = gpt_xstrdup(name);
    r->unit = "byte";
    r->fd = -1;
    XXH64_reset(&r->xs, 0);
    return r;
}

/* Whole plain token stream in memory: everything is validated now, in one pass. */
static int open_plain_mem(gpt_tokr *r, gpt_err *err)
{
    if (parse_header(r, r->mem, r->mem_size, err) != 0) return -1;
    const unsigned char *body = r->mem + HDR;
    if (resolve_tail(r, body, r->mem_size - HDR, 0, HDR, err) != 0) return -1;
    uint64_t nbytes = r->body_left, n = nbytes / (uint64_t)r->width;
    uint64_t bad = n;
    for (uint64_t at = 0; at < nbytes; at += CHECK_CHUNK) {
        size_t k = nbytes - at < CHECK_CHUNK ? (size_t)(nbytes - at) : CHECK_CHUNK;
        XXH64_update(&r->xs, body + at, k);
        if (bad == n) {
            size_t i = first_bad_packed(body + at, k / (size_t)r->width, r->width, r->vocab);
            if (i < k / (size_t)r->width) bad = at / (uint64_t)r->width + i;
        }
    }
    uint64_t h = XXH64_digest(&r->xs);
    if (h != r->trailer_hash)
        return gpt_errf(err, "%s: body checksum mismatch (the trailer at byte %llu says %016llx, the body hashes "
                             "to %016llx): the data is corrupt", r->name, (ull)r->trailer_off,
                        (ull)r->trailer_hash, (ull)h);
    if (bad < n)
        return gpt_errf(err, "%s: token %llu (byte %llu): id %u >= vocab size %u", r->name, (ull)bad,
                        (ull)(HDR + bad * (uint64_t)r->width), packed_at(body, r->width, bad), r->vocab);
    r->body = body;
    r->n_tokens = n;
    return 0;
}

/* ---- streaming source: decompressed bytes into dst; 0 at the end, -1 on error ---- */
static long src_read_fd(gpt_tokr *r, unsigned char *dst, size_t cap, gpt_err *err)
{
    for (;;) {
        ssize_t got = read(r->fd, dst, cap);
        if (got >= 0) return (long)got;
        if (errno != EINTR) return gpt_errf(err, "%s: read error: %s", r->name, strerror(errno));
    }
}

static long src_read(gpt_tokr *r, unsigned char *dst, size_t cap, gpt_err *err)
{
    if (!r->zd) return src_read_fd(r, dst, cap, err);
    for (;;) {
        if (r->zframe_done) {
            if (!r->zchecked) {
                r->zchecked = 1;
                if (r->zib.pos == r->zib.size && r->fd >= 0 && !r->zin_eof) {
                    long got = src_read_fd(r, r->zin, r->zin_cap, err);
                    if (got < 0) return -1;
                    r->zin_base += r->zib.size;
                    r->zib = (ZSTD_inBuffer){r->zin, (size_t)got, 0};
                }
                if (r->zib.pos < r->zib.size)
                    return gpt_errf(err, "%s: trailing garbage after the zstd frame (compressed byte %llu)",
                                    r->name, (ull)(r->zin_base + r->zib.pos));
            }
            return 0;
        }
        if (r->zib.pos == r->zib.size && !r->zin_eof) {
            r->zin_base += r->zib.size;
            long got = r->fd >= 0 ? src_read_fd(r, r->zin, r->zin_cap, err) : 0;
            if (got < 0) return -1;
            if (got == 0) r->zin_eof = 1;
            r->zib = (ZSTD_inBuffer){r->zin, (size_t)got, 0};
        }
        ZSTD_outBuffer o = {dst, cap, 0};
        size_t ret = ZSTD_decompressStream(r->zd, &o, &r->zib);
        if (ZSTD_isError(ret))
            return gpt_errf(err, "%s: corrupt zstd data near compressed byte %llu: %s", r->name,
                            (ull)(r->zin_base + r->zib.pos), ZSTD_getErrorName(ret));
        if (ret == 0) r->zframe_done = 1;
        if (o.pos > 0) return (long)o.pos;
        if (!r->zframe_done && r->zin_eof && r->zib.pos == r->zib.size)
            return gpt_errf(err, "%s: truncated: the zstd stream ends inside its frame (compressed byte %llu)",
                            r->name, (ull)(r->zin_base + r->zib.pos));
    }
}

/* Buffers until buf holds `need` bytes or the input ends. */
static int fill(gpt_tokr *r, size_t need, gpt_err *err)
{
    if (need > RBUF) need = RBUF;
    while (!r->eof && r->hi - r->lo < need) {
        if (r->hi == RBUF || (r->lo > 0 && RBUF - r->hi < need - (r->hi - r->lo))) {
            memmove(r->buf, r->buf + r->lo, r->hi - r->lo);
            r->hi -= r->lo;
            r->lo = 0;
        }
        long got = src_read(r, r->buf + r->hi, RBUF - r->hi, err);
        if (got < 0) return -1;
        if (got == 0) r->eof = 1;
        r->hi += (size_t)got;
    }
    return 0;
}

/* Starts streaming: `pre` holds bytes already read from the source (at most 4). */
static int open_stream(gpt_tokr *r, const unsigned char *pre, size_t npre, gpt_err *err)
{
    r->buf = gpt_xmalloc(RBUF);
    if (r->zd) {
        r->compressed = 1;
        r->unit = "decompressed byte";
        if (r->fd >= 0) {
            r->zin_cap = ZSTD_DStreamInSize();
            r->zin = gpt_xmalloc(r->zin_cap);
            memcpy(r->zin, pre, npre);
            r->zib = (ZSTD_inBuffer){r->zin, npre, 0};
        }
    } else {
        memcpy(r->buf, pre, npre);
        r->hi = npre;
    }
    if (fill(r, HDR, err) != 0) return -1;
    if (parse_header(r, r->buf + r->lo, r->hi - r->lo, err) != 0) return -1;
    r->lo += HDR;
    r->off = HDR;
    return 0;
}

static ZSTD_DCtx *new_dctx(void)
{
    ZSTD_DCtx *z = ZSTD_createDCtx();
    if (!z) {
        fprintf(stderr, "gpt: out of memory creating a zstd context\n");
        abort();
    }
    return z;
}

/* In-memory input (ours, mmapped, or the caller's): plain is validated, zstd is streamed. */
static int open_mem_input(gpt_tokr *r, gpt_err *err)
{
    if (r->mem_size >= 4 && memcmp(r->mem, zstd_magic, 4) == 0) {
        r->zd = new_dctx();
        r->zib = (ZSTD_inBuffer){r->mem, r->mem_size, 0};
        r->zin_eof = 1;
        return open_stream(r, NULL, 0, err);
    }
    return open_plain_mem(r, err);
}

static gpt_tokr *opened(gpt_tokr *r, int rc)
{
    if (rc == 0) return r;
    gpt_tokr_close(r);
    return NULL;
}

gpt_tokr *gpt_tokr_open_mem(const void *data, size_t size, const char *name, gpt_err *err)
{
    gpt_tokr *r = r_new(name);
    r->mem = size ? data : (const unsigned char *)"";
    r->mem_size = size;
    return opened(r, open_mem_input(r, err));
}

gpt_tokr *gpt_tokr_open_fd(int fd, const char *name, gpt_err *err)
{
    gpt_tokr *r = r_new(name);
    r->fd = fd;
    unsigned char pre[4];
    size_t n = 0;
    while (n < 4) {
        long got = src_read_fd(r, pre + n, 4 - n, err);
        if (got < 0) return opened(r, -1);
        if (got == 0) {
            r->eof = 1;
            break;
        }
        n += (size_t)got;
    }
    if (n == 4 && memcmp(pre, zstd_magic, 4) == 0) {
        r->eof = 0;
        r->zd = new_dctx();
    }
    return opened(r, open_stream(r, pre, n, err));
}

gpt_tokr *gpt_tokr_open(const char *path, gpt_err *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    int fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        gpt_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    int bad = fstat(fd, &st) != 0 ? gpt_errf(err, "%s: cannot stat: %s", name, strerror(errno))
              : S_ISDIR(st.st_mode)  ? gpt_errf(err, "%s: is a directory, expected a token stream file", name)
                                     : 0;
    if (bad) {
        if (!is_stdin) close(fd);
        return NULL;
    }
    if (S_ISREG(st.st_mode) && (!is_stdin || lseek(fd, 0, SEEK_CUR) == 0)) {
        gpt_tokr *r = r_new(name);
        if (st.st_size > 0) {
            if ((uint64_t)st.st_size > SIZE_MAX) {
                gpt_errf(err, "%s: too large to map", name);
                if (!is_stdin) close(fd);
                return opened(r, -1);
            }
            void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                gpt_errf(err, "%s: cannot mmap: %s", name, strerror(errno));
                if (!is_stdin) close(fd);
                return opened(r, -1);
            }
            r->mem = p;
            r->mem_size = (size_t)st.st_size;
            r->mem_mapped = 1;
            madvise(p, r->mem_size, MADV_SEQUENTIAL); /* validation reads it once, front to back */
        } else {
            r->mem = (const unsigned char *)"";
        }
        if (!is_stdin) close(fd);
        int rc = open_mem_input(r, err);
        if (rc == 0 && r->body) madvise((void *)r->mem, r->mem_size, MADV_NORMAL);
        return opened(r, rc);
    }
    gpt_tokr *r = gpt_tokr_open_fd(fd, name, err);
    if (r)
        r->own_fd = !is_stdin;
    else if (!is_stdin)
        close(fd);
    return r;
}

const char *gpt_tokr_name(const gpt_tokr *r) { return r->name; }
uint32_t gpt_tokr_version(const gpt_tokr *r) { return r->version; }
uint32_t gpt_tokr_vocab(const gpt_tokr *r) { return r->vocab; }
int gpt_tokr_width(const gpt_tokr *r) { return r->width; }
int gpt_tokr_compressed(const gpt_tokr *r) { return r->compressed; }
uint64_t gpt_tokr_tell(const gpt_tokr *r) { return r->count; }

const void *gpt_tokr_map(const gpt_tokr *r, uint64_t *n_tokens)
{
    if (n_tokens) *n_tokens = r->body ? r->n_tokens : 0;
    return r->body;
}

uint32_t gpt_tokr_get(const gpt_tokr *r, uint64_t i) { return packed_at(r->body, r->width, i); }

void gpt_tokr_get_range(const gpt_tokr *r, uint64_t start, size_t n, uint32_t *ids)
{
    unpack_ids(r->body + start * (uint64_t)r->width, n, r->width, UINT32_MAX, ids);
}

static long stream_read(gpt_tokr *r, uint32_t *ids, size_t max, gpt_err *err)
{
    size_t w = (size_t)r->width, maxfit = (RBUF - HOLD - TRL) / w;
    if (max > maxfit) max = maxfit;
    if (!r->tail_known && fill(r, HOLD + max * w, err) != 0) return r_fail(r);
    size_t n;
    if (!r->eof) {
        n = max; /* fill left at least HOLD bytes beyond these */
    } else {
        if (!r->tail_known && resolve_tail(r, r->buf + r->lo, r->hi - r->lo, r->count, r->off, err) != 0)
            return r_fail(r);
        n = r->body_left / w < max ? (size_t)(r->body_left / w) : max;
        if (n == 0) {
            uint64_t h = XXH64_digest(&r->xs);
            if (h != r->trailer_hash) {
                gpt_errf(err, "%s: body checksum mismatch (the trailer at %s %llu says %016llx, the body "
                              "hashes to %016llx): the data is corrupt", r->name, r->unit,
                         (ull)r->trailer_off, (ull)r->trailer_hash, (ull)h);
                return r_fail(r);
            }
            r->done = 1;
            return 0;
        }
    }
    const unsigned char *src = r->buf + r->lo;
    if (unpack_ids(src, n, r->width, r->vocab, ids)) {
        size_t i = 0;
        while (ids[i] < r->vocab) i++;
        gpt_errf(err, "%s: token %llu (%s %llu): id %u >= vocab size %u", r->name, (ull)(r->count + i), r->unit,
                 (ull)(r->off + i * w), ids[i], r->vocab);
        return r_fail(r);
    }
    XXH64_update(&r->xs, src, n * w);
    r->lo += n * w;
    r->off += n * w;
    r->count += n;
    if (r->tail_known) r->body_left -= n * w;
    return (long)n;
}

long gpt_tokr_read(gpt_tokr *r, uint32_t *ids, size_t max, gpt_err *err)
{
    if (r->failed) return gpt_errf(err, "%s: reader failed earlier", r->name);
    if (r->done || max == 0) return 0;
    if (max > (size_t)LONG_MAX) max = (size_t)LONG_MAX;
    if (r->body) {
        uint64_t left = r->n_tokens - r->count;
        size_t n = left < max ? (size_t)left : max;
        if (n == 0) {
            r->done = 1;
            return 0;
        }
        gpt_tokr_get_range(r, r->count, n, ids);
        r->count += n;
        return (long)n;
    }
    return stream_read(r, ids, max, err);
}

void gpt_tokr_close(gpt_tokr *r)
{
    if (!r) return;
    if (r->mem_mapped) munmap((void *)r->mem, r->mem_size);
    if (r->own_fd) close(r->fd);
    ZSTD_freeDCtx(r->zd);
    free(r->zin);
    free(r->buf);
    free(r->name);
    free(r);
}

int gpt_tokens_read_all(const char *path, gpt_ids *out, uint32_t *vocab_size, gpt_err *err)
{
    gpt_tokr *r = gpt_tokr_open(path, err);
    if (!r) return -1;
    size_t n0 = out->n;
    uint64_t total;
    if (gpt_tokr_map(r, &total) && total > out->cap - out->n) {
        out->cap = out->n + (size_t)total;
        out->v = gpt_xrealloc(out->v, (out->cap ? out->cap : 1) * sizeof *out->v);
    }
    for (;;) {
        if (out->cap - out->n < 65536) {
            out->cap = out->cap * 2 > out->n + 65536 ? out->cap * 2 : out->n + 65536;
            out->v = gpt_xrealloc(out->v, out->cap * sizeof *out->v);
        }
        long got = gpt_tokr_read(r, out->v + out->n, out->cap - out->n, err);
        if (got < 0) {
            out->n = n0;
            gpt_tokr_close(r);
            return -1;
        }
        if (got == 0) break;
        out->n += (size_t)got;
    }
    if (vocab_size) *vocab_size = r->vocab;
    gpt_tokr_close(r);
    return 0;
}
