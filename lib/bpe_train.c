#include "bpe_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "fileio.h"
#include "pretok.h"
#include "tokenizer_build.h"

#define DEFAULT_CHUNK ((size_t)256 << 10)

const char *gpt_bpe_pattern_regex(const char *pattern)
{
    if (!pattern || !strcmp(pattern, "o200k") || !strcmp(pattern, "o200k_base") ||
        !strcmp(pattern, "o200k_harmony"))
        return gpt_pat_o200k;
    if (!strcmp(pattern, "cl100k") || !strcmp(pattern, "cl100k_base")) return gpt_pat_cl100k;
    if (!strcmp(pattern, "r50k") || !strcmp(pattern, "r50k_base") || !strcmp(pattern, "gpt2"))
        return gpt_pat_r50k;
    return pattern;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- distinct pieces with their counts (one map per chunk, then one merged map) ---- */

typedef struct piece_map {
    uint32_t *slot; /* entry index + 1; 0 = empty */
    size_t cap, n, ecap;
    uint64_t *hash, *count;
    size_t *off, *len;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    uint64_t total; /* pieces seen, with repeats */
} piece_map;

static void pm_free(piece_map *m)
{
    free(m->slot);
    free(m->hash);
    free(m->count);
    free(m->off);
    free(m->len);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static void pm_grow(piece_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint32_t *slot = gpt_xcalloc(cap, sizeof *slot);
    for (size_t e = 0; e < m->n; e++) {
        size_t i = (size_t)m->hash[e] & (cap - 1);
        while (slot[i]) i = (i + 1) & (cap - 1);
        slot[i] = (uint32_t)(e + 1);
    }
    free(m->slot);
    m->slot = slot;
    m->cap = cap;
}

static void pm_add(piece_map *m, const unsigned char *p, size_t len, uint64_t count)
{
    if ((m->n + 1) * 2 > m->cap) pm_grow(m);
    if (m->n >= UINT32_MAX - 1) {
        fprintf(stderr, "gpt: bpe training: more than 4 billion distinct pieces\n");
        abort();
    }
    uint64_t h = XXH3_64bits(p, len);
    size_t i = (size_t)h & (m->cap - 1);
    for (; m->slot[i]; i = (i + 1) & (m->cap - 1)) {
        size_t e = m->slot[i] - 1;
        if (m->hash[e] == h && m->len[e] == len && !memcmp(m->arena + m->off[e], p, len)) {
            m->count[e] += count;
            return;
        }
    }
    if (m->n == m->ecap) {
        m->ecap = m->ecap ? m->ecap * 2 : 256;
        m->hash = gpt_xrealloc(m->hash, m->ecap * sizeof *m->hash);
        m->count = gpt_xrealloc(m->count, m->ecap * sizeof *m->count);
        m->off = gpt_xrealloc(m->off, m->ecap * sizeof *m->off);
        m->len = gpt_xrealloc(m->len, m->ecap * sizeof *m->len);
    }
    if (m->arena_len + len > m->arena_cap) {
        while (m->arena_len + len > m->arena_cap) m->arena_cap = m->arena_cap ? m->arena_cap * 2 : 4096;
        m->arena = gpt_xrealloc(m->arena, m->arena_cap);
    }
    memcpy(m->arena + m->arena_len, p, len);
    size_t e = m->n++;
    m->hash[e] = h;
    m->count[e] = count;
    m->off[e] = m->arena_len;
    m->len[e] = len;
    m->arena_len += len;
    m->slot[i] = (uint32_t)(e + 1);
}

static int on_piece(const unsigned char *piece, size_t len, void *ctx)
{
    piece_map *m = ctx;
    m->total++;
    /* Single bytes carry no pair; they only need counting in `total`. */
    if (len >= 2) pm_add(m, piece, len, 1);
    return 0;
}

typedef struct chunk {
    size_t text, begin, end;
} chunk;

static int safe_cut(const unsigned char *t, size_t len, size_t i)
{
    /* t[i] is '\n'; the cut goes after it. */
    if (i == 0 || i + 1 >= len) return 0;
    unsigned char prev = t[i - 1], next = t[i + 1];
    int letter = (next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z');
    return letter && prev > 0x20 && prev < 0x7f;
}

/* Cut points depend only on the text and chunk_bytes, never on the thread count. */
static chunk *make_chunks(const unsigned char *const *texts, const size_t *lens, size_t n_texts,
                          size_t chunk_bytes, size_t *n_chunks)
{
    size_t n = 0, cap = 16;
    chunk *c = gpt_xmalloc(cap * sizeof *c);
    for (size_t t = 0; t < n_texts; t++) {
        const unsigned char *s = texts[t];
        size_t len = lens[t], begin = 0;
        while (begin < len) {
            size_t end = len;
            if (len - begin > chunk_bytes) {
                size_t i = begin + chunk_bytes;
                for (;;) {
                    const unsigned char *nl = memchr(s + i, '\n', len - i);
                    if (!nl) break;
                    i = (size_t)(nl - s);
                    if (safe_cut(s, len, i)) {
                        end = i + 1;
                        break;
                    }
                    i++;
                }
            }
            if (n == cap) c = gpt_xrealloc(c, (cap *= 2) * sizeof *c);
            c[n++] = (chunk){t, begin, end};
            begin = end;
        }
    }
    *n_chunks = n;
    return c;
}

/* Chunks are split in batches so that at most BATCH per-chunk maps are alive at once. */
#define BATCH 64

static int count_pieces(const gpt_regex *re, const unsigned char *const *texts, const size_t *lens,
                        size_t n_texts, size_t chunk_bytes, int threads, piece_map *out,
                        gpt_err *err)
{
    size_t nc;
    chunk *c = make_chunks(texts, lens, n_texts, chunk_bytes, &nc);
    piece_map maps[BATCH];
    gpt_err errs[BATCH];
    int rc[BATCH];
    int ret = 0;
    memset(out, 0, sizeof *out);
    for (size_t b0 = 0; b0 < nc && ret == 0; b0 += BATCH) {
        long long nb = (long long)(nc - b0 < BATCH ? nc - b0 : BATCH);
        memset(maps, 0, sizeof maps);
        const chunk *cb = c + b0;
        if (threads > 0) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
            for (long long k = 0; k < nb; k++)
                rc[k] = gpt_regex_split(re, texts[cb[k].text] + cb[k].begin, cb[k].end - cb[k].begin,
                                        on_piece, &maps[k], &errs[k]);
        } else {
#pragma omp parallel for schedule(dynamic, 1)
            for (long long k = 0; k < nb; k++)
                rc[k] = gpt_regex_split(re, texts[cb[k].text] + cb[k].begin, cb[k].end - cb[k].begin,
                                        on_piece, &maps[k], &errs[k]);
        }
        /* Merged in chunk order, so entry order (and everything after) ignores the schedule. */
        for (long long k = 0; k < nb; k++) {
            if (rc[k] != 0 && ret == 0)
                ret = gpt_errf(err, "pre-tokenizing input %zu near byte %zu: %s", cb[k].text + 1,
                               cb[k].begin, errs[k].msg);
            if (ret == 0) {
                for (size_t e = 0; e < maps[k].n; e++)
                    pm_add(out, maps[k].arena + maps[k].off[e], maps[k].len[e], maps[k].count[e]);
                out->total += maps[k].total;
            }
            pm_free(&maps[k]);
        }
    }
    free(c);
    if (ret != 0) pm_free(out);
    return ret;
}

/* ---- the merge loop ---- */

typedef struct wlist {
    uint32_t *v;
    uint32_t n, cap;
} wlist;

typedef struct heap_ent {
    int64_t cnt;
    uint32_t pair;
} heap_ent;

typedef struct trainer {
    /* vocabulary, and bytes -> id to notice a merge that rebuilds an existing token */
    unsigned char **tok;
    size_t *tlen;
    uint32_t ntok, tcap;
    uint32_t *tslot;
    size_t tslot_cap;
    /* words: the distinct pieces (2+ bytes) as token sequences */
    size_t nw;
    uint64_t *wcount;
    size_t *wstart, *wlen;
    uint32_t *ids;
    uint32_t *wstamp;
    /* pairs */
    uint32_t *pslot; /* pair index + 1 */
    size_t pslot_cap;
    uint32_t np, pcap;
    uint64_t *pkey;
    int64_t *pcnt;
    uint32_t *pstamp;
    wlist *pwords;
    /* the pairs a merge changed */
    uint32_t *touched;
    size_t ntouched, touched_cap;
    heap_ent *heap;
    size_t nheap, heap_cap;
    uint32_t epoch;
} trainer;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void tok_insert_slot(uint32_t *slot, size_t cap, const unsigned char *b, size_t len, uint32_t id)
{
    size_t i = (size_t)XXH3_64bits(b, len) & (cap - 1);
    while (slot[i]) i = (i + 1) & (cap - 1);
    slot[i] = id + 1;
}

static int64_t tok_find(const trainer *t, const unsigned char *b, size_t len)
{
    size_t i = (size_t)XXH3_64bits(b, len) & (t->tslot_cap - 1);
    for (; t->tslot[i]; i = (i + 1) & (t->tslot_cap - 1)) {
        uint32_t id = t->tslot[i] - 1;
        if (t->tlen[id] == len && !memcmp(t->tok[id], b, len)) return id;
    }
    return -1;
}

static void tok_add(trainer *t, unsigned char *b, size_t len)
{
    if (t->ntok == t->tcap) {
        t->tcap = t->tcap ? t->tcap * 2 : 512;
        t->tok = gpt_xrealloc(t->tok, t->tcap * sizeof *t->tok);
        t->tlen = gpt_xrealloc(t->tlen, t->tcap * sizeof *t->tlen);
    }
    if ((size_t)(t->ntok + 1) * 2 > t->tslot_cap) {
        size_t cap = t->tslot_cap ? t->tslot_cap * 2 : 1024;
        uint32_t *slot = gpt_xcalloc(cap, sizeof *slot);
        for (uint32_t id = 0; id < t->ntok; id++) tok_insert_slot(slot, cap, t->tok[id], t->tlen[id], id);
        free(t->tslot);
        t->tslot = slot;
        t->tslot_cap = cap;
    }
    t->tok[t->ntok] = b;
    t->tlen[t->ntok] = len;
    tok_insert_slot(t->tslot, t->tslot_cap, b, len, t->ntok);
    t->ntok++;
}

static uint32_t pair_get(trainer *t, uint32_t a, uint32_t b)
{
    uint64_t key = (uint64_t)a << 32 | b;
    if ((size_t)(t->np + 1) * 2 > t->pslot_cap) {
        size_t cap = t->pslot_cap ? t->pslot_cap * 2 : 4096;
        uint32_t *slot = gpt_xcalloc(cap, sizeof *slot);
        for (uint32_t p = 0; p < t->np; p++) {
            size_t i = (size_t)mix64(t->pkey[p]) & (cap - 1);
            while (slot[i]) i = (i + 1) & (cap - 1);
            slot[i] = p + 1;
        }
        free(t->pslot);
        t->pslot = slot;
        t->pslot_cap = cap;
    }
    size_t i = (size_t)mix64(key) & (t->pslot_cap - 1);
    for (; t->pslot[i]; i = (i + 1) & (t->pslot_cap - 1))
        if (t->pkey[t->pslot[i] - 1] == key) return t->pslot[i] - 1;
    if (t->np == t->pcap) {
        if (t->pcap >= UINT32_MAX / 2) {
            fprintf(stderr, "gpt: bpe training: too many distinct pairs\n");
            abort();
        }
        t->pcap = t->pcap ? t->pcap * 2 : 4096;
        t->pkey = gpt_xrealloc(t->pkey, t->pcap * sizeof *t->pkey);
        t->pcnt = gpt_xrealloc(t->pcnt, t->pcap * sizeof *t->pcnt);
        t->pstamp = gpt_xrealloc(t->pstamp, t->pcap * sizeof *t->pstamp);
        t->pwords = gpt_xrealloc(t->pwords, t->pcap * sizeof *t->pwords);
    }
    uint32_t p = t->np++;
    t->pkey[p] = key;
    t->pcnt[p] = 0;
    t->pstamp[p] = 0;
    t->pwords[p] = (wlist){0};
    t->pslot[i] = p + 1;
    return p;
}

static void wlist_push(wlist *l, uint32_t w)
{
    if (l->n && l->v[l->n - 1] == w) return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->v = gpt_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = w;
}

static int bytes_cmp(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c) return c;
    return al < bl ? -1 : al > bl;
}

/* 1 when x should be merged before y: higher count, then smaller (left, right) bytes. */
static int heap_before(const trainer *t, heap_ent x, heap_ent y)
{
    if (x.cnt != y.cnt) return x.cnt > y.cnt;
    uint64_t kx = t->pkey[x.pair], ky = t->pkey[y.pair];
    uint32_t xa = (uint32_t)(kx >> 32), xb = (uint32_t)kx, ya = (uint32_t)(ky >> 32), yb = (uint32_t)ky;
    int c = bytes_cmp(t->tok[xa], t->tlen[xa], t->tok[ya], t->tlen[ya]);
    if (!c) c = bytes_cmp(t->tok[xb], t->tlen[xb], t->tok[yb], t->tlen[yb]);
    return c < 0;
}

static void heap_push(trainer *t, heap_ent e)
{
    if (t->nheap == t->heap_cap) {
        t->heap_cap = t->heap_cap ? t->heap_cap * 2 : 4096;
        t->heap = gpt_xrealloc(t->heap, t->heap_cap * sizeof *t->heap);
    }
    size_t i = t->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(t, e, t->heap[parent])) break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = e;
}

static void heap_sift_down(trainer *t, size_t i)
{
    heap_ent e = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->nheap) break;
        if (c + 1 < t->nheap && heap_before(t, t->heap[c + 1], t->heap[c])) c++;
        if (!heap_before(t, t->heap[c], e)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    t->heap[i] = e;
}

static heap_ent heap_pop(trainer *t)
{
    heap_ent top = t->heap[0];
    t->heap[0] = t->heap[--t->nheap];
    if (t->nheap) heap_sift_down(t, 0);
    return top;
}

/* Stale entries pile up (one per count change); rebuilding keeps the heap near the live pairs. */
static void heap_rebuild(trainer *t)
{
    t->nheap = 0;
    for (uint32_t p = 0; p < t->np; p++)
        if (t->pcnt[p] > 0) t->heap[t->nheap++] = (heap_ent){t->pcnt[p], p};
    for (size_t i = t->nheap / 2; i-- > 0;) heap_sift_down(t, i);
}

static void touch(trainer *t, uint32_t p)
{
    if (t->pstamp[p] == t->epoch) return;
    t->pstamp[p] = t->epoch;
    if (t->ntouched == t->touched_cap) {
        t->touched_cap = t->touched_cap ? t->touched_cap * 2 : 1024;
        t->touched = gpt_xrealloc(t->touched, t->touched_cap * sizeof *t->touched);
    }
    t->touched[t->ntouched++] = p;
}

static void pair_add(trainer *t, uint32_t x, uint32_t y, int64_t delta, uint32_t w, int record)
{
    uint32_t p = pair_get(t, x, y);
    t->pcnt[p] += delta;
    touch(t, p);
    if (record) wlist_push(&t->pwords[p], w);
}

/* Rewrites every word that may hold (a, b), updating only the pairs around each occurrence
 * (constant work per occurrence, so a huge piece costs a scan, not a rehash, per merge). */
static void merge_pair(trainer *t, uint32_t p, uint32_t a, uint32_t b, uint32_t id)
{
    t->epoch++;
    t->ntouched = 0;
    wlist l = t->pwords[p]; /* detached: pair_get may move t->pwords */
    t->pwords[p] = (wlist){0};
    for (uint32_t k = 0; k < l.n; k++) {
        uint32_t w = l.v[k];
        if (t->wstamp[w] == t->epoch) continue;
        t->wstamp[w] = t->epoch;
        uint32_t *s = t->ids + t->wstart[w];
        size_t n = t->wlen[w], i = 0;
        while (i + 1 < n && !(s[i] == a && s[i + 1] == b)) i++;
        if (i + 1 >= n) continue; /* stale entry: an earlier merge consumed the pair here */
        int64_t c = (int64_t)t->wcount[w];
        size_t o = i;
        while (i < n) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                /* The left neighbour is already rewritten (it may be `id` itself); the right
                 * one is not, and a following occurrence will retract (id, next) again. */
                if (o > 0) {
                    pair_add(t, s[o - 1], a, -c, w, 0);
                    pair_add(t, s[o - 1], id, c, w, 1);
                }
                if (i + 2 < n) {
                    pair_add(t, b, s[i + 2], -c, w, 0);
                    pair_add(t, id, s[i + 2], c, w, 1);
                }
                pair_add(t, a, b, -c, w, 0);
                s[o++] = id;
                i += 2;
            } else {
                s[o++] = s[i++];
            }
        }
        t->wlen[w] = o;
    }
    free(l.v);
    for (size_t k = 0; k < t->ntouched; k++) {
        uint32_t q = t->touched[k];
        if (t->pcnt[q] > 0) heap_push(t, (heap_ent){t->pcnt[q], q});
    }
    if (t->nheap > 4 * (size_t)t->np + (1u << 20)) heap_rebuild(t);
}

static void trainer_free(trainer *t)
{
    for (uint32_t i = 0; i < t->ntok; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tlen);
    free(t->tslot);
    free(t->wcount);
    free(t->wstart);
    free(t->wlen);
    free(t->ids);
    free(t->wstamp);
    free(t->pslot);
    free(t->pkey);
    free(t->pcnt);
    free(t->pstamp);
    for (uint32_t p = 0; p < t->np; p++) free(t->pwords[p].v);
    free(t->pwords);
    free(t->touched);
    free(t->heap);
}

void gpt_bpe_vocab_free(gpt_bpe_vocab *v)
{
    if (!v) return;
    for (uint32_t i = 0; i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->len);
    memset(v, 0, sizeof *v);
}

int gpt_bpe_train(const gpt_bpe_train_opts *o, const unsigned char *const *texts,
                  const size_t *lens, size_t n_texts, gpt_bpe_vocab *out, gpt_err *err)
{
    memset(out, 0, sizeof *out);
    if (o->vocab_size < 256 || o->vocab_size > GPT_BPE_MAX_VOCAB)
        return gpt_errf(err, "vocabulary size %u is out of range: it counts the 256 byte tokens, "
                             "so use 256 to %u",
                        o->vocab_size, GPT_BPE_MAX_VOCAB);
    size_t total_bytes = 0;
    for (size_t i = 0; i < n_texts; i++) total_bytes += lens[i];
    if (total_bytes == 0)
        return gpt_errf(err, "no training text: the input%s empty; give files with some text",
                        n_texts == 1 ? " is" : "s are");
    double t0 = now_s();
    gpt_regex *re = gpt_regex_compile(gpt_bpe_pattern_regex(o->pattern), err);
    if (!re) return -1;
    piece_map pm;
    int rc = count_pieces(re, texts, lens, n_texts, o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK,
                          o->threads, &pm, err);
    gpt_regex_free(re);
    if (rc != 0) return -1;
    if (o->verbose)
        fprintf(stderr, "bpe: %zu bytes, %llu pieces, %zu distinct multi-byte pieces (%.2f s)\n",
                total_bytes, (unsigned long long)pm.total, pm.n, now_s() - t0);

    trainer t = {0};
    for (unsigned i = 0; i < 256; i++) {
        unsigned char *b = gpt_xmalloc(1);
        b[0] = (unsigned char)i;
        tok_add(&t, b, 1);
    }
    t.nw = pm.n;
    t.wcount = gpt_xmalloc((t.nw ? t.nw : 1) * sizeof *t.wcount);
    t.wstart = gpt_xmalloc((t.nw ? t.nw : 1) * sizeof *t.wstart);
    t.wlen = gpt_xmalloc((t.nw ? t.nw : 1) * sizeof *t.wlen);
    t.wstamp = gpt_xcalloc(t.nw ? t.nw : 1, sizeof *t.wstamp);
    t.ids = gpt_xmalloc((pm.arena_len ? pm.arena_len : 1) * sizeof *t.ids);
    size_t pos = 0;
    for (size_t w = 0; w < t.nw; w++) {
        t.wcount[w] = pm.count[w];
        t.wstart[w] = pos;
        t.wlen[w] = pm.len[w];
        for (size_t i = 0; i < pm.len[w]; i++) t.ids[pos++] = pm.arena[pm.off[w] + i];
    }
    pm_free(&pm);
    t.epoch = 1;
    for (size_t w = 0; w < t.nw; w++) {
        const uint32_t *s = t.ids + t.wstart[w];
        for (size_t i = 0; i + 1 < t.wlen[w]; i++) {
            uint32_t p = pair_get(&t, s[i], s[i + 1]);
            t.pcnt[p] += (int64_t)t.wcount[w];
            wlist_push(&t.pwords[p], (uint32_t)w);
        }
    }
    t.heap_cap = t.np ? t.np : 1;
    t.heap = gpt_xmalloc(t.heap_cap * sizeof *t.heap);
    heap_rebuild(&t);

    uint32_t merges = 0;
    while (t.ntok < o->vocab_size && t.nheap > 0) {
        heap_ent e = heap_pop(&t);
        if (e.cnt != t.pcnt[e.pair]) continue; /* stale */
        if (e.cnt < 2) break;
        uint32_t a = (uint32_t)(t.pkey[e.pair] >> 32), b = (uint32_t)t.pkey[e.pair];
        size_t len = t.tlen[a] + t.tlen[b];
        unsigned char *bytes = gpt_xmalloc(len);
        memcpy(bytes, t.tok[a], t.tlen[a]);
        memcpy(bytes + t.tlen[a], t.tok[b], t.tlen[b]);
        int64_t id = tok_find(&t, bytes, len);
        if (id < 0) {
            id = t.ntok;
            tok_add(&t, bytes, len);
        } else {
            free(bytes);
        }
        merge_pair(&t, e.pair, a, b, (uint32_t)id);
        merges++;
        if (o->verbose && merges % 1000 == 0)
            fprintf(stderr, "bpe: %u merges, %u tokens (%.2f s)\n", merges, t.ntok, now_s() - t0);
    }
    if (o->verbose)
        fprintf(stderr, "bpe: done: %u tokens after %u merges (%.2f s)\n", t.ntok, merges, now_s() - t0);

    out->n = t.ntok;
    out->tok = t.tok;
    out->len = t.tlen;
    t.tok = NULL;
    t.tlen = NULL;
    t.ntok = 0;
    trainer_free(&t);
    return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t gpt_base64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

int gpt_bpe_write_tiktoken(const char *path, const gpt_bpe_vocab *v, gpt_err *err)
{
    gpt_out out;
    if (gpt_out_open(&out, path, err) != 0) return -1;
    size_t cap = 0;
    char *buf = NULL;
    for (uint32_t i = 0; i < v->n; i++) {
        size_t need = (v->len[i] + 2) / 3 * 4 + 1;
        if (need > cap) buf = gpt_xrealloc(buf, cap = need);
        gpt_base64_encode(v->tok[i], v->len[i], buf);
        if (fprintf(out.f, "%s %u\n", buf, i) < 0) break;
    }
    free(buf);
    if (ferror(out.f)) {
        gpt_errf(err, "%s: write error", path);
        gpt_out_abort(&out);
        return -1;
    }
    return gpt_out_commit(&out, err);
}
