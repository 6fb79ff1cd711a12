/* test_bpe_train.c: BPE training against a naive reference trainer, determinism, the rank file,
 * and (with the shared corpus) compression and round trips through our tokenizer, a naive
 * rank-of-concatenation encoder and, when installed, Python tiktoken. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bpe_train.h"
#include "fileio.h"
#include "pretok.h"
#include "tap.h"
#include "tokenizer.h"
#include "tokenizer_build.h"

/* ---- byte strings ---- */

typedef struct bstr {
    unsigned char *b;
    size_t n;
} bstr;

static int bcmp_(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an < bn ? -1 : an > bn);
}

static bstr bdup(const unsigned char *b, size_t n)
{
    bstr s = {malloc(n ? n : 1), n};
    memcpy(s.b, b, n);
    return s;
}

/* ---- the oracle: a deliberately naive trainer that recounts every pair occurrence of every
 * piece occurrence after each merge (no maps, no incremental updates) ---- */

typedef struct plist {
    bstr *v;
    size_t n, cap;
} plist;

static int collect(const unsigned char *p, size_t len, void *ctx)
{
    plist *l = ctx;
    if (l->n == l->cap) l->v = realloc(l->v, (l->cap = l->cap ? 2 * l->cap : 64) * sizeof *l->v);
    l->v[l->n++] = bdup(p, len);
    return 0;
}

static void plist_free(plist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].b);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* vocab: array of bstr (caller frees). *dedup counts merges that rebuilt an existing token. */
static bstr *naive_train(const plist *pieces, uint32_t vocab_size, uint32_t *n_out, int *dedup)
{
    size_t cap = vocab_size;
    bstr *voc = malloc(cap * sizeof *voc);
    uint32_t nv = 256;
    for (int i = 0; i < 256; i++) {
        unsigned char c = (unsigned char)i;
        voc[i] = bdup(&c, 1);
    }
    size_t nw = pieces->n;
    uint32_t **w = malloc(nw * sizeof *w);
    size_t *wl = malloc(nw * sizeof *wl);
    for (size_t i = 0; i < nw; i++) {
        wl[i] = pieces->v[i].n;
        w[i] = malloc((wl[i] ? wl[i] : 1) * sizeof **w);
        for (size_t k = 0; k < wl[i]; k++) w[i][k] = pieces->v[i].b[k];
    }
    typedef struct {
        uint32_t a, b;
        long long c;
    } pc;
    pc *pairs = NULL;
    size_t npairs, pcap = 0;
    *dedup = 0;
    while (nv < vocab_size) {
        npairs = 0;
        for (size_t i = 0; i < nw; i++)
            for (size_t k = 0; k + 1 < wl[i]; k++) {
                size_t j = 0;
                while (j < npairs && !(pairs[j].a == w[i][k] && pairs[j].b == w[i][k + 1])) j++;
                if (j == npairs) {
                    if (npairs == pcap) pairs = realloc(pairs, (pcap = pcap ? 2 * pcap : 64) * sizeof *pairs);
                    pairs[npairs++] = (pc){w[i][k], w[i][k + 1], 0};
                }
                pairs[j].c++;
            }
        long best = -1;
        for (size_t j = 0; j < npairs; j++) {
            if (best < 0 || pairs[j].c > pairs[best].c) {
                best = (long)j;
                continue;
            }
            if (pairs[j].c < pairs[best].c) continue;
            int c = bcmp_(voc[pairs[j].a].b, voc[pairs[j].a].n, voc[pairs[best].a].b, voc[pairs[best].a].n);
            if (!c) c = bcmp_(voc[pairs[j].b].b, voc[pairs[j].b].n, voc[pairs[best].b].b, voc[pairs[best].b].n);
            if (c < 0) best = (long)j;
        }
        if (best < 0 || pairs[best].c < 2) break;
        uint32_t a = pairs[best].a, b = pairs[best].b;
        bstr cat = {malloc(voc[a].n + voc[b].n), voc[a].n + voc[b].n};
        memcpy(cat.b, voc[a].b, voc[a].n);
        memcpy(cat.b + voc[a].n, voc[b].b, voc[b].n);
        uint32_t id = 0;
        while (id < nv && bcmp_(voc[id].b, voc[id].n, cat.b, cat.n) != 0) id++;
        if (id == nv) {
            voc[nv++] = cat;
        } else {
            free(cat.b);
            ++*dedup;
        }
        for (size_t i = 0; i < nw; i++) {
            size_t o = 0;
            for (size_t k = 0; k < wl[i];) {
                if (k + 1 < wl[i] && w[i][k] == a && w[i][k + 1] == b) {
                    w[i][o++] = id;
                    k += 2;
                } else {
                    w[i][o++] = w[i][k++];
                }
            }
            wl[i] = o;
        }
    }
    for (size_t i = 0; i < nw; i++) free(w[i]);
    free(w);
    free(wl);
    free(pairs);
    *n_out = nv;
    return voc;
}

static void pieces_of(const char *pattern, const unsigned char *text, size_t len, plist *out)
{
    gpt_err err;
    gpt_regex *re = gpt_regex_compile(gpt_bpe_pattern_regex(pattern), &err);
    if (!re) {
        diag("regex: %s", err.msg);
        exit(1);
    }
    memset(out, 0, sizeof *out);
    if (gpt_regex_split(re, text, len, collect, out, &err) != 0) {
        diag("split: %s", err.msg);
        exit(1);
    }
    gpt_regex_free(re);
}

static int same_vocab(const gpt_bpe_vocab *v, const bstr *want, uint32_t nwant)
{
    if (v->n != nwant) {
        diag("vocab size %u, oracle %u", v->n, nwant);
        return 0;
    }
    for (uint32_t i = 0; i < nwant; i++)
        if (bcmp_(v->tok[i], v->len[i], want[i].b, want[i].n) != 0) {
            diag("first difference at rank %u: '%.*s' vs oracle '%.*s'", i, (int)v->len[i],
                 (const char *)v->tok[i], (int)want[i].n, (const char *)want[i].b);
            return 0;
        }
    return 1;
}

static void free_bstrs(bstr *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) free(v[i].b);
    free(v);
}

/* Trains one text with our trainer and the oracle and compares. Returns the oracle's dedups. */
static int check_against_oracle(const char *name, const char *pattern, const unsigned char *text,
                                size_t len, uint32_t vocab_size)
{
    gpt_bpe_train_opts o = {.vocab_size = vocab_size, .pattern = pattern, .threads = 1};
    gpt_bpe_vocab v;
    gpt_err err;
    const unsigned char *t = text;
    int rc = gpt_bpe_train(&o, &t, &len, 1, &v, &err);
    if (!ok(rc == 0, "%s: trains", name)) {
        diag("%s", err.msg);
        return 0;
    }
    plist pl;
    pieces_of(pattern, text, len, &pl);
    uint32_t nref;
    int dedup;
    bstr *ref = naive_train(&pl, vocab_size, &nref, &dedup);
    ok(same_vocab(&v, ref, nref), "%s: same %u tokens as the naive trainer (vocab_size %u)", name,
       nref, vocab_size);
    free_bstrs(ref, nref);
    plist_free(&pl);
    gpt_bpe_vocab_free(&v);
    return dedup;
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* ---- rank files ---- */

static int b64val(int c)
{
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(tab, c) : NULL;
    return p ? (int)(p - tab) : -1;
}

/* Independent reader: every line "BASE64 RANK", ranks 0..n-1 in order; returns tokens. */
static bstr *read_rank_file(const char *path, uint32_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char line[4096];
    size_t cap = 1024;
    bstr *v = malloc(cap * sizeof *v);
    uint32_t k = 0;
    int bad = 0;
    while (fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        if (!sp) {
            bad = 1;
            break;
        }
        *sp = '\0';
        if (strtoul(sp + 1, NULL, 10) != k) bad = 1;
        size_t L = strlen(line);
        if (L % 4) bad = 1;
        unsigned char *out = malloc(L / 4 * 3 + 1);
        size_t o = 0;
        for (size_t i = 0; i + 4 <= L; i += 4) {
            int q[4];
            for (int j = 0; j < 4; j++) q[j] = line[i + j] == '=' ? 0 : b64val(line[i + j]);
            if (q[0] < 0 || q[1] < 0 || q[2] < 0 || q[3] < 0) bad = 1;
            uint32_t x = (uint32_t)q[0] << 18 | (uint32_t)q[1] << 12 | (uint32_t)q[2] << 6 | (uint32_t)q[3];
            out[o++] = (unsigned char)(x >> 16);
            if (line[i + 2] != '=') out[o++] = (unsigned char)(x >> 8);
            if (line[i + 3] != '=') out[o++] = (unsigned char)x;
        }
        if (k == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[k++] = (bstr){out, o};
    }
    fclose(f);
    *n = k;
    if (bad) {
        free_bstrs(v, k);
        return NULL;
    }
    return v;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *d = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len == cap) d = realloc(d, cap = cap ? 2 * cap : 65536);
        got = fread(d + len, 1, cap - len, f);
        len += got;
    } while (got);
    fclose(f);
    *n = len;
    return d;
}

/* ---- a naive tiktoken encoder (rank of the concatenation, leftmost on ties) ---- */

typedef struct rank_ent {
    bstr s;
    uint32_t rank;
} rank_ent;

static int bstr_cmp(const void *x, const void *y)
{
    const bstr *a = x, *b = y;
    return bcmp_(a->b, a->n, b->b, b->n);
}

static int rank_cmp(const void *x, const void *y)
{
    const rank_ent *a = x, *b = y;
    return bcmp_(a->s.b, a->s.n, b->s.b, b->s.n);
}

typedef struct naive_enc {
    rank_ent *r;
    size_t n;
    uint32_t *ids;
    size_t nids, cap;
} naive_enc;

static long lookup_rank(const naive_enc *e, const unsigned char *b, size_t n)
{
    rank_ent key = {{(unsigned char *)b, n}, 0};
    rank_ent *hit = bsearch(&key, e->r, e->n, sizeof *e->r, rank_cmp);
    return hit ? (long)hit->rank : -1;
}

static int naive_encode_piece(const unsigned char *p, size_t len, void *ctx)
{
    naive_enc *e = ctx;
    size_t *start = malloc((len + 1) * sizeof *start), n = len; /* part k = [start[k], start[k+1]) */
    for (size_t k = 0; k <= len; k++) start[k] = k;
    for (;;) {
        long best = -1;
        size_t at = 0;
        for (size_t k = 0; k + 1 < n; k++) {
            long r = lookup_rank(e, p + start[k], start[k + 2] - start[k]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = k;
            }
        }
        if (best < 0) break;
        memmove(start + at + 1, start + at + 2, (n - at - 1) * sizeof *start);
        n--;
    }
    for (size_t k = 0; k < n; k++) {
        if (e->nids == e->cap) e->ids = realloc(e->ids, (e->cap = e->cap ? 2 * e->cap : 4096) * sizeof *e->ids);
        e->ids[e->nids++] = (uint32_t)lookup_rank(e, p + start[k], start[k + 1] - start[k]);
    }
    free(start);
    return 0;
}

/* ---- tests ---- */

static void test_wikipedia(void)
{
    /* en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac -> ZabdZabac (Z=aa) -> ZYdZYac
     * (Y=ab) -> XdXac (X=ZY); then every pair occurs once. */
    const unsigned char *t = (const unsigned char *)"aaabdaaabac";
    size_t len = 11;
    gpt_bpe_train_opts o = {.vocab_size = 1000, .pattern = "(?s).+"};
    gpt_bpe_vocab v;
    gpt_err err;
    if (!ok(gpt_bpe_train(&o, &t, &len, 1, &v, &err) == 0, "wikipedia example trains")) {
        diag("%s", err.msg);
        return;
    }
    is_int(v.n, 259, "wikipedia: three merges, then no pair occurs twice");
    int good = v.n == 259 && v.len[256] == 2 && !memcmp(v.tok[256], "aa", 2) && v.len[257] == 2 &&
               !memcmp(v.tok[257], "ab", 2) && v.len[258] == 4 && !memcmp(v.tok[258], "aaab", 4);
    ok(good, "wikipedia: merges are aa, ab, aaab");
    int bytes_ok = 1;
    for (int i = 0; i < 256 && i < (int)v.n; i++) bytes_ok &= v.len[i] == 1 && v.tok[i][0] == i;
    ok(bytes_ok, "ranks 0..255 are the single bytes");
    gpt_bpe_vocab_free(&v);
    check_against_oracle("wikipedia", "(?s).+", t, len, 1000);
    check_against_oracle("wikipedia, vocab 257", "(?s).+", t, len, 257);
}

static void test_random_vs_oracle(void)
{
    static const char *alpha[] = {"ab", "abc ", "aab  c\n", "ab\xc3\xa9 .!\n", "xyzw "};
    int dedups = 0;
    for (int round = 0; round < 10; round++) {
        rng_state = 0x9E3779B97F4A7C15ULL * (uint64_t)(round + 1);
        const char *al = alpha[round % 5];
        size_t na = strlen(al), len = 200 + rnd() % 1800;
        unsigned char *text = malloc(len);
        for (size_t i = 0; i < len; i++) text[i] = (unsigned char)al[rnd() % na];
        /* Repetition makes long merges; random text gives many ties. */
        if (round % 2)
            for (size_t i = len / 2; i < len; i++) text[i] = text[i - len / 2];
        const char *pat = round % 3 == 0 ? "(?s).+" : round % 3 == 1 ? "o200k" : "r50k";
        uint32_t sizes[] = {256, 300, 100000};
        for (int s = 0; s < 3; s++) {
            char name[96];
            snprintf(name, sizeof name, "random %d (%s, %zu bytes)", round, pat, len);
            dedups += check_against_oracle(name, pat, text, len, sizes[s]);
        }
        free(text);
    }
    /* A merge never rebuilds an existing token: an occurrence of token T's bytes that is
     * covered by whole tokens was never crossed by one, so it was segmented like T alone,
     * which became [T] when T was made. The oracle checks this rather than assuming it. */
    is_int(dedups, 0, "no merge rebuilt an existing token");
}

static void test_multi_text(void)
{
    /* Several inputs count as one corpus: same vocabulary as their concatenation whenever the
     * joins fall on piece boundaries (here: each text ends with a newline after a letter and the
     * next starts with a letter). */
    const char *a = "the cat sat on the mat\n", *b = "the hat is flat\n", *c = "that mat, that hat\n";
    const unsigned char *texts[3] = {(const unsigned char *)a, (const unsigned char *)b,
                                     (const unsigned char *)c};
    size_t lens[3] = {strlen(a), strlen(b), strlen(c)};
    char joined[256];
    snprintf(joined, sizeof joined, "%s%s%s", a, b, c);
    const unsigned char *j = (const unsigned char *)joined;
    size_t jl = strlen(joined);
    gpt_bpe_train_opts o = {.vocab_size = 400};
    gpt_bpe_vocab v1, v2;
    gpt_err err;
    int r1 = gpt_bpe_train(&o, texts, lens, 3, &v1, &err);
    int r2 = gpt_bpe_train(&o, &j, &jl, 1, &v2, &err);
    int same = r1 == 0 && r2 == 0 && v1.n == v2.n;
    for (uint32_t i = 0; same && i < v1.n; i++)
        same = bcmp_(v1.tok[i], v1.len[i], v2.tok[i], v2.len[i]) == 0;
    ok(same, "three inputs train like their concatenation");
    ok(r1 == 0 && v1.n > 256 && v1.n < 400, "small corpus stops early when no pair repeats (%u)", v1.n);
    if (r1 == 0) gpt_bpe_vocab_free(&v1);
    if (r2 == 0) gpt_bpe_vocab_free(&v2);
}

static void test_errors(void)
{
    const unsigned char *t = (const unsigned char *)"hello hello";
    size_t len = 11, zero = 0;
    gpt_bpe_vocab v;
    gpt_err err;
    gpt_bpe_train_opts o = {.vocab_size = 255};
    ok(gpt_bpe_train(&o, &t, &len, 1, &v, &err) == -1 && strstr(err.msg, "255"), "vocab_size 255 rejected");
    diag("message: %s", err.msg);
    o.vocab_size = GPT_BPE_MAX_VOCAB + 1;
    ok(gpt_bpe_train(&o, &t, &len, 1, &v, &err) == -1 && strstr(err.msg, "range"), "vocab_size 2^24+1 rejected");
    o.vocab_size = 0;
    ok(gpt_bpe_train(&o, &t, &len, 1, &v, &err) == -1, "vocab_size 0 rejected");
    o.vocab_size = 1000;
    ok(gpt_bpe_train(&o, NULL, NULL, 0, &v, &err) == -1 && strstr(err.msg, "no training text"), "no inputs rejected");
    diag("message: %s", err.msg);
    const unsigned char *ts[2] = {t, t};
    size_t zs[2] = {0, 0};
    ok(gpt_bpe_train(&o, &t, &zero, 1, &v, &err) == -1 && gpt_bpe_train(&o, ts, zs, 2, &v, &err) == -1,
       "empty inputs rejected");
    o.pattern = "([a-z";
    ok(gpt_bpe_train(&o, &t, &len, 1, &v, &err) == -1 && strstr(err.msg, "pattern"), "bad regex rejected");
    diag("message: %s", err.msg);
    o.pattern = NULL;
    o.vocab_size = 256;
    int rc = gpt_bpe_train(&o, &t, &len, 1, &v, &err);
    ok(rc == 0 && v.n == 256, "vocab_size 256: just the bytes");
    if (rc == 0) gpt_bpe_vocab_free(&v);
    /* One distinct piece of one byte repeated: nothing to merge, not an error. */
    const unsigned char *xs = (const unsigned char *)"x x x x";
    size_t xl = 7;
    o.vocab_size = 1000;
    rc = gpt_bpe_train(&o, &xs, &xl, 1, &v, &err);
    ok(rc == 0 && v.n == 257, "'x x x x' gives one merge (' x') then stops (%u)", rc == 0 ? v.n : 0);
    if (rc == 0) gpt_bpe_vocab_free(&v);
    ok(gpt_bpe_write_tiktoken("/nonexistent-dir/x.tiktoken", &(gpt_bpe_vocab){0}, &err) == -1 &&
           strstr(err.msg, "nonexistent"),
       "unwritable output names the path");
}

static void test_base64(void)
{
    /* RFC 4648 section 10 vectors. */
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    int good = 1;
    for (int i = 0; i < 7; i++) {
        char out[16];
        size_t n = gpt_base64_encode((const unsigned char *)in[i], strlen(in[i]), out);
        good &= n == strlen(want[i]) && !strcmp(out, want[i]);
    }
    ok(good, "base64 matches RFC 4648 vectors");
}

static char tmpdir[64];

static int files_equal(const char *p, const char *q)
{
    size_t n1, n2;
    unsigned char *a = slurp(p, &n1), *b = slurp(q, &n2);
    int eq = a && b && n1 == n2 && !memcmp(a, b, n1);
    free(a);
    free(b);
    return eq;
}

static int train_to(const char *path, const gpt_bpe_train_opts *o, const unsigned char *const *t,
                    const size_t *l, size_t n, uint32_t *n_out)
{
    gpt_bpe_vocab v;
    gpt_err err;
    if (gpt_bpe_train(o, t, l, n, &v, &err) != 0 || gpt_bpe_write_tiktoken(path, &v, &err) != 0) {
        diag("%s", err.msg);
        return -1;
    }
    if (n_out) *n_out = v.n;
    gpt_bpe_vocab_free(&v);
    return 0;
}

static void test_files_and_determinism(void)
{
    rng_state = 12345;
    size_t len = 60000;
    unsigned char *text = malloc(len);
    /* Random words over a few letters, some UTF-8 and some invalid bytes: plenty of pairs. */
    static const char *syl[] = {"e", "t", "a", "o", "in", "sh", "r", "d", "\xce\xbb", "\xff\xfe"};
    size_t o = 0;
    while (o < len) {
        int nsyl = 1 + (int)(rnd() % 6);
        for (int k = 0; k < nsyl; k++) {
            const char *w = syl[rnd() % 10];
            for (size_t i = 0; w[i] && o < len; i++) text[o++] = (unsigned char)w[i];
        }
        if (o < len) text[o++] = (rnd() % 9) ? ' ' : '\n';
    }
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/a.tiktoken", tmpdir);
    snprintf(p2, sizeof p2, "%s/b.tiktoken", tmpdir);
    snprintf(p3, sizeof p3, "%s/c.tiktoken", tmpdir);
    const unsigned char *t = text;
    gpt_bpe_train_opts opt = {.vocab_size = 700, .threads = 1, .chunk_bytes = 1000};
    uint32_t n1 = 0, n2 = 0;
    int r1 = train_to(p1, &opt, &t, &len, 1, &n1);
    opt.threads = 2;
    int r2 = train_to(p2, &opt, &t, &len, 1, &n2);
    ok(r1 == 0 && r2 == 0 && files_equal(p1, p2), "threads 1 and 2 write identical files");
    r2 = train_to(p3, &opt, &t, &len, 1, NULL);
    ok(r2 == 0 && files_equal(p2, p3), "a second run writes an identical file");
    is_int(n1, 700, "vocab is exactly vocab_size when pairs remain");
    uint32_t nr = 0;
    bstr *rv = read_rank_file(p1, &nr);
    ok(rv && nr == n1, "rank file parses: %u lines 'BASE64 RANK' with ranks 0..n-1", nr);
    int distinct = rv != NULL;
    if (rv) {
        bstr *sorted = malloc(nr * sizeof *sorted);
        memcpy(sorted, rv, nr * sizeof *sorted);
        qsort(sorted, nr, sizeof *sorted, bstr_cmp);
        for (uint32_t i = 1; i < nr; i++)
            distinct &= bcmp_(sorted[i - 1].b, sorted[i - 1].n, sorted[i].b, sorted[i].n) != 0;
        free(sorted);
    }
    ok(distinct, "all tokens are distinct");
    if (rv) free_bstrs(rv, nr);
    /* Writing over an existing file replaces it whole and leaves no temp file behind. */
    gpt_bpe_train_opts small = {.vocab_size = 260};
    nr = 0;
    rv = train_to(p1, &small, &t, &len, 1, NULL) == 0 ? read_rank_file(p1, &nr) : NULL;
    ok(rv != NULL, "rewrite ok");
    if (rv) free_bstrs(rv, nr);
    is_int(nr, 260, "rewritten file holds the new vocabulary");
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c tmp >/dev/null", tmpdir);
    ok(system(cmd) != 0, "no temp files left in %s", tmpdir);
    free(text);
}

static void test_shakespeare(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/corpus/tinyshakespeare.txt", tap_shared());
    gpt_blob blob;
    gpt_err err;
    if (access(path, R_OK) != 0 || gpt_blob_read(&blob, path, &err) != 0) {
        ok(1, "shakespeare checks # SKIP %s not found (set GPT_SHARED)", path);
        return;
    }
    const unsigned char *t = blob.data;
    size_t len = blob.size;
    char p1[128], p2[128], p3[128];
    snprintf(p1, sizeof p1, "%s/s1.tiktoken", tmpdir);
    snprintf(p2, sizeof p2, "%s/s2.tiktoken", tmpdir);
    snprintf(p3, sizeof p3, "%s/s3.tiktoken", tmpdir);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    gpt_bpe_train_opts o = {.vocab_size = 1024, .threads = 1};
    uint32_t n = 0;
    int r1 = train_to(p1, &o, &t, &len, 1, &n);
    diag("shakespeare N=1024: %.2f s cpu", (double)clock() / CLOCKS_PER_SEC - t0);
    is_int(n, 1024, "shakespeare: 1024 tokens");
    o.threads = 2;
    int r2 = train_to(p2, &o, &t, &len, 1, NULL);
    ok(r1 == 0 && r2 == 0 && files_equal(p1, p2), "shakespeare: threads 1 and 2 identical");
    /* Chunk cuts must not change the pieces of the built-in patterns: training on the whole
     * text in one piece, and in ~1000 chunks, gives the same file. */
    const char *pats[] = {"o200k", "cl100k", "r50k"};
    for (int k = 0; k < 3; k++) {
        gpt_bpe_train_opts a = {.vocab_size = k ? 400 : 1024, .pattern = pats[k], .threads = 2,
                                .chunk_bytes = 1000};
        gpt_bpe_train_opts b = a;
        b.chunk_bytes = SIZE_MAX;
        int ra = train_to(k ? p3 : p2, &a, &t, &len, 1, NULL);
        int rb = train_to(k ? p2 : p3, &b, &t, &len, 1, NULL);
        ok(ra == 0 && rb == 0 && files_equal(p2, p3), "shakespeare %s: 1000-byte chunks == unchunked", pats[k]);
    }

    /* Encode with the new vocabulary: a naive rank-of-concatenation encoder here, and ours. */
    uint32_t nr;
    bstr *rv = read_rank_file(p1, &nr);
    naive_enc ne = {0};
    if (rv) {
        ne.n = nr;
        ne.r = malloc(nr * sizeof *ne.r);
        for (uint32_t i = 0; i < nr; i++) ne.r[i] = (rank_ent){rv[i], i};
        qsort(ne.r, nr, sizeof *ne.r, rank_cmp);
        gpt_regex *re = gpt_regex_compile(gpt_pat_o200k, &err);
        if (re) {
            gpt_regex_split(re, t, len, naive_encode_piece, &ne, &err);
            gpt_regex_free(re);
        }
    }
    ok(ne.nids > 0 && ne.nids < len / 2, "naive encoder: %zu tokens < %zu bytes / 2", ne.nids, len);
    gpt_tokenizer *tk = gpt_tokenizer_open_tiktoken(p1, NULL, &err);
    if (!ok(tk != NULL, "our tokenizer loads the trained file")) diag("%s", err.msg);
    if (tk) {
        gpt_ids ids = {0};
        unsigned char *dec = NULL;
        size_t dn = 0;
        int re = gpt_encode(tk, t, len, NULL, &ids, &err);
        ok(re == 0 && ids.n == ne.nids && !memcmp(ids.v, ne.ids, ids.n * sizeof *ids.v),
           "gpt_encode agrees with the naive encoder (%zu tokens)", ids.n);
        ok(re == 0 && ids.n < len / 2, "compresses: %zu tokens for %zu bytes", ids.n, len);
        int rd = re == 0 ? gpt_decode(tk, ids.v, ids.n, &dec, &dn, &err) : -1;
        ok(rd == 0 && dn == len && !memcmp(dec, t, len), "decode(encode(text)) == text");
        free(dec);
        gpt_ids_free(&ids);
        gpt_tokenizer_free(tk);
    }

    /* Python tiktoken, when installed, as an independent reader and encoder. */
    if (system("python3 -c 'import tiktoken' >/dev/null 2>&1") != 0) {
        ok(1, "python tiktoken # SKIP python3 with tiktoken not available");
    } else {
        char pf[128], idf[128], cmd[2048];
        snprintf(pf, sizeof pf, "%s/pat.txt", tmpdir);
        snprintf(idf, sizeof idf, "%s/ids.txt", tmpdir);
        FILE *f = fopen(pf, "wb");
        if (f) {
            fputs(gpt_pat_o200k, f);
            fclose(f);
        }
        snprintf(cmd, sizeof cmd,
                 "python3 -c '\n"
                 "import sys, tiktoken\n"
                 "from tiktoken.load import load_tiktoken_bpe\n"
                 "r = load_tiktoken_bpe(sys.argv[1])\n"
                 "assert sorted(r.values()) == list(range(len(r))), \"ranks not dense\"\n"
                 "e = tiktoken.Encoding(\"t\", pat_str=open(sys.argv[2]).read(), mergeable_ranks=r, special_tokens={})\n"
                 "d = open(sys.argv[3], \"rb\").read()\n"
                 "ids = e.encode(d.decode(\"utf-8\"), disallowed_special=())\n"
                 "assert e.decode_bytes(ids) == d, \"round trip\"\n"
                 "open(sys.argv[4], \"w\").write(\" \".join(map(str, ids)))\n"
                 "' %s %s %s %s",
                 p1, pf, path, idf);
        int rc = system(cmd);
        ok(rc == 0, "python tiktoken loads the file, encodes and round-trips the corpus");
        size_t n_txt = 0;
        unsigned char *txt = rc == 0 ? slurp(idf, &n_txt) : NULL;
        int same = txt != NULL;
        size_t k = 0;
        if (txt) {
            txt = realloc(txt, n_txt + 1);
            txt[n_txt] = '\0';
            char *s = (char *)txt, *end;
            for (;; k++) {
                unsigned long v = strtoul(s, &end, 10);
                if (end == s) break;
                if (k >= ne.nids || v != ne.ids[k]) {
                    same = 0;
                    break;
                }
                s = end;
            }
            same &= k == ne.nids;
        }
        ok(same, "python tiktoken's ids equal the naive encoder's (%zu)", k);
        free(txt);
    }
    free(ne.ids);
    free(ne.r);
    if (rv) free_bstrs(rv, nr);
    gpt_blob_free(&blob);
}

int main(void)
{
    strcpy(tmpdir, "/tmp/gpt-bpe-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! cannot create a temporary directory\n");
        return 1;
    }
    test_base64();
    test_wikipedia();
    test_random_vs_oracle();
    test_multi_text();
    test_errors();
    test_files_and_determinism();
    test_shakespeare();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) diag("could not remove %s", tmpdir);
    return done_testing();
}
