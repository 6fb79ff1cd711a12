/* tokenizer.c: the byte-level BPE core: vocabulary tables, encoding, decoding. */
#include "tokenizer.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pretok.h"
#include "tokenizer_build.h"

#define NO_ID UINT32_MAX
#define NO_RANK UINT32_MAX

enum { KIND_NONE, KIND_ORDINARY, KIND_SPECIAL, KIND_RESERVED };

typedef struct {
    uint32_t id;
    uint32_t len;
    size_t off; /* into arena */
} pending_token;

typedef struct {
    char *text;
    size_t len;
    uint32_t id;
} special;

struct gpt_tokenizer {
    char *name;
    gpt_regex *re;
    uint32_t n_vocab, n_ordinary;

    /* Every id's bytes live in one arena: ordinary tokens, special texts, reserved names. */
    unsigned char *arena;
    size_t arena_len, arena_cap;
    size_t *off;      /* [n_vocab] */
    uint32_t *len;    /* [n_vocab] */
    unsigned char *kind;

    /* Rank of every two-byte token, by its bytes: most first merges of a piece are byte pairs. */
    uint32_t *pair2; /* [65536] */
    /* bytes -> id for ordinary tokens: open addressing, a hash tag per slot avoids most memcmps. */
    uint32_t *slot_id, *slot_tag;
    size_t slot_mask;

    /* Merge-list BPE (Hugging Face): (left, right) -> rank. */
    int has_merges, ignore_merges;
    uint64_t *merge_key; /* left << 32 | right, UINT64_MAX = empty */
    uint32_t *merge_rank;
    size_t merge_mask, n_merges;
    uint64_t *pending_merges;

    special *sp;
    size_t n_sp;
    /* Special lookup for encoding: by hash of the text, with the distinct lengths to try. */
    uint32_t *sp_slot; /* index + 1, 0 = empty */
    size_t sp_mask;
    size_t *sp_lens, n_sp_lens; /* distinct lengths, longest first */
    unsigned char sp_first[256];

    pending_token *pend;
    size_t n_pend, cap_pend;
};

/* ---- growable id arrays ---- */

void gpt_ids_push(gpt_ids *a, uint32_t id)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = gpt_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = id;
}

void gpt_ids_append(gpt_ids *a, const uint32_t *v, size_t n)
{
    if (a->n + n > a->cap) {
        while (a->n + n > a->cap) a->cap = a->cap ? a->cap * 2 : 256;
        a->v = gpt_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    if (n) memcpy(a->v + a->n, v, n * sizeof *v);
    a->n += n;
}

void gpt_ids_free(gpt_ids *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* ---- construction ---- */

static size_t arena_put(gpt_tokenizer *tk, const void *bytes, size_t len)
{
    if (tk->arena_len + len > tk->arena_cap) {
        while (tk->arena_len + len > tk->arena_cap) tk->arena_cap = tk->arena_cap ? tk->arena_cap * 2 : 1 << 16;
        tk->arena = gpt_xrealloc(tk->arena, tk->arena_cap);
    }
    size_t off = tk->arena_len;
    if (len) memcpy(tk->arena + off, bytes, len);
    tk->arena_len += len;
    return off;
}

gpt_tokenizer *gpt_tk_new(const char *name)
{
    gpt_tokenizer *tk = gpt_xcalloc(1, sizeof *tk);
    tk->name = gpt_xstrdup(name);
    return tk;
}

int gpt_tk_add_token(gpt_tokenizer *tk, uint32_t id, const void *bytes, size_t len, gpt_err *err)
{
    if (len == 0) return gpt_errf(err, "token %u is empty", id);
    if (len > UINT32_MAX / 2) return gpt_errf(err, "token %u is absurdly long (%zu bytes)", id, len);
    if (id >= (1u << 30)) return gpt_errf(err, "token id %u is too large (limit 2^30)", id);
    if (tk->n_pend == tk->cap_pend) {
        tk->cap_pend = tk->cap_pend ? tk->cap_pend * 2 : 1024;
        tk->pend = gpt_xrealloc(tk->pend, tk->cap_pend * sizeof *tk->pend);
    }
    tk->pend[tk->n_pend++] = (pending_token){id, (uint32_t)len, arena_put(tk, bytes, len)};
    return 0;
}

int gpt_tk_add_merge(gpt_tokenizer *tk, uint32_t left, uint32_t right, gpt_err *err)
{
    (void)err;
    if (tk->n_merges % 1024 == 0)
        tk->pending_merges = gpt_xrealloc(tk->pending_merges, (tk->n_merges + 1024) * sizeof(uint64_t));
    tk->pending_merges[tk->n_merges++] = (uint64_t)left << 32 | right;
    tk->has_merges = 1;
    return 0;
}

uint32_t gpt_tk_max_id(const gpt_tokenizer *tk)
{
    uint32_t m = 0;
    for (size_t i = 0; i < tk->n_pend; i++)
        if (tk->pend[i].id > m) m = tk->pend[i].id;
    for (size_t i = 0; i < tk->n_sp; i++)
        if (tk->sp[i].id > m) m = tk->sp[i].id;
    return m;
}

void gpt_tk_set_ignore_merges(gpt_tokenizer *tk, int on) { tk->ignore_merges = on; }

int gpt_tk_add_special(gpt_tokenizer *tk, const char *text, uint32_t id, gpt_err *err)
{
    size_t len = strlen(text);
    if (len == 0) return gpt_errf(err, "special token %u has empty text", id);
    if (id >= (1u << 30)) return gpt_errf(err, "special token id %u is too large (limit 2^30)", id);
    for (size_t i = 0; i < tk->n_sp; i++)
        if (tk->sp[i].len == len && memcmp(tk->sp[i].text, text, len) == 0)
            return gpt_errf(err, "special token '%s' defined twice (ids %u and %u)", text, tk->sp[i].id, id);
    if (tk->n_sp % 64 == 0) tk->sp = gpt_xrealloc(tk->sp, (tk->n_sp + 64) * sizeof *tk->sp);
    tk->sp[tk->n_sp++] = (special){gpt_xstrdup(text), len, id};
    return 0;
}

static inline uint64_t hash_bytes(const void *p, size_t n) { return XXH3_64bits(p, n); }

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* memcmp for the short strings tokens are, without a library call. */
static inline int same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
    while (n >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) return 0;
        a += 8, b += 8, n -= 8;
    }
    while (n--)
        if (*a++ != *b++) return 0;
    return 1;
}

static inline int64_t lookup_hashed(const gpt_tokenizer *tk, const unsigned char *p, size_t n, uint64_t h)
{
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = h & tk->slot_mask;; i = (i + 1) & tk->slot_mask) {
        uint32_t id = tk->slot_id[i];
        if (id == NO_ID) return -1;
        if (tk->slot_tag[i] == tag && tk->len[id] == n && same_bytes(tk->arena + tk->off[id], p, n)) return id;
    }
}

static inline int64_t lookup(const gpt_tokenizer *tk, const unsigned char *p, size_t n)
{
    return lookup_hashed(tk, p, n, hash_bytes(p, n));
}

static uint32_t merge_lookup(const gpt_tokenizer *tk, uint32_t l, uint32_t r)
{
    uint64_t key = (uint64_t)l << 32 | r;
    for (size_t i = mix64(key) & tk->merge_mask;; i = (i + 1) & tk->merge_mask) {
        if (tk->merge_key[i] == UINT64_MAX) return NO_RANK;
        if (tk->merge_key[i] == key) return tk->merge_rank[i];
    }
}

static int cmp_len_desc(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int build_specials(gpt_tokenizer *tk, gpt_err *err)
{
    tk->sp_mask = pow2_at_least(tk->n_sp * 2 + 1) - 1;
    tk->sp_slot = gpt_xcalloc(tk->sp_mask + 1, sizeof *tk->sp_slot);
    tk->sp_lens = gpt_xmalloc((tk->n_sp + 1) * sizeof *tk->sp_lens);
    for (size_t s = 0; s < tk->n_sp; s++) {
        special *sp = &tk->sp[s];
        if (sp->id >= tk->n_vocab)
            return gpt_errf(err, "special token '%s' has id %u >= n_vocab %u", sp->text, sp->id, tk->n_vocab);
        size_t i = hash_bytes(sp->text, sp->len) & tk->sp_mask;
        while (tk->sp_slot[i]) i = (i + 1) & tk->sp_mask;
        tk->sp_slot[i] = (uint32_t)s + 1;
        tk->sp_first[(unsigned char)sp->text[0]] = 1;
        size_t k = 0;
        while (k < tk->n_sp_lens && tk->sp_lens[k] != sp->len) k++;
        if (k == tk->n_sp_lens) tk->sp_lens[tk->n_sp_lens++] = sp->len;
    }
    qsort(tk->sp_lens, tk->n_sp_lens, sizeof *tk->sp_lens, cmp_len_desc);
    return 0;
}

int gpt_tk_finish(gpt_tokenizer *tk, const char *pattern, uint32_t n_vocab, gpt_err *err)
{
    uint32_t max_id = 0;
    int any = 0;
    for (size_t i = 0; i < tk->n_pend; i++) {
        if (tk->pend[i].id > max_id) max_id = tk->pend[i].id;
        any = 1;
    }
    for (size_t i = 0; i < tk->n_sp; i++) {
        if (tk->sp[i].id > max_id) max_id = tk->sp[i].id;
        any = 1;
    }
    if (!any) return gpt_errf(err, "%s: the vocabulary is empty", tk->name);
    if (n_vocab == 0) n_vocab = max_id + 1;
    /* Tables are sized by n_vocab: a hostile file naming id 10^9 must not make us allocate
     * gigabytes. Real vocabularies are dense; allow a million unused (reserved) ids. */
    if ((uint64_t)n_vocab > (uint64_t)tk->n_pend + tk->n_sp + (1u << 20))
        return gpt_errf(err, "%s: ids go up to %u but there are only %zu tokens; the vocabulary must be dense", tk->name,
                        n_vocab - 1, tk->n_pend + tk->n_sp);
    if (max_id >= n_vocab)
        return gpt_errf(err, "%s: token id %u is outside the vocabulary (n_vocab %u)", tk->name, max_id, n_vocab);
    tk->n_vocab = n_vocab;
    tk->off = gpt_xcalloc(n_vocab, sizeof *tk->off);
    tk->len = gpt_xcalloc(n_vocab, sizeof *tk->len);
    tk->kind = gpt_xcalloc(n_vocab, 1);

    for (size_t i = 0; i < tk->n_pend; i++) {
        pending_token *p = &tk->pend[i];
        if (tk->kind[p->id] != KIND_NONE) return gpt_errf(err, "%s: token id %u defined twice", tk->name, p->id);
        tk->kind[p->id] = KIND_ORDINARY;
        tk->off[p->id] = p->off;
        tk->len[p->id] = p->len;
    }
    tk->n_ordinary = (uint32_t)tk->n_pend;
    free(tk->pend);
    tk->pend = NULL;

    tk->slot_mask = pow2_at_least((size_t)tk->n_ordinary * 2 + 1) - 1;
    tk->slot_id = gpt_xmalloc((tk->slot_mask + 1) * sizeof *tk->slot_id);
    tk->slot_tag = gpt_xmalloc((tk->slot_mask + 1) * sizeof *tk->slot_tag);
    memset(tk->slot_id, 0xff, (tk->slot_mask + 1) * sizeof *tk->slot_id);
    for (uint32_t id = 0; id < n_vocab; id++) {
        if (tk->kind[id] != KIND_ORDINARY) continue;
        const unsigned char *p = tk->arena + tk->off[id];
        uint64_t h = hash_bytes(p, tk->len[id]);
        int64_t dup = lookup_hashed(tk, p, tk->len[id], h);
        if (dup >= 0)
            return gpt_errf(err, "%s: tokens %lld and %u have the same bytes", tk->name, (long long)dup, id);
        size_t i = h & tk->slot_mask;
        while (tk->slot_id[i] != NO_ID) i = (i + 1) & tk->slot_mask;
        tk->slot_id[i] = id;
        tk->slot_tag[i] = (uint32_t)(h >> 32);
    }
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        if (lookup(tk, &c, 1) < 0)
            return gpt_errf(err, "%s: byte 0x%02x has no token; byte-level BPE needs all 256 bytes", tk->name, b);
    }
    tk->pair2 = gpt_xmalloc(65536 * sizeof *tk->pair2);
    memset(tk->pair2, 0xff, 65536 * sizeof *tk->pair2);
    for (uint32_t id = 0; id < n_vocab; id++)
        if (tk->kind[id] == KIND_ORDINARY && tk->len[id] == 2) {
            const unsigned char *p = tk->arena + tk->off[id];
            tk->pair2[p[0] << 8 | p[1]] = id;
        }

    if (tk->has_merges) {
        tk->merge_mask = pow2_at_least(tk->n_merges * 2 + 1) - 1;
        tk->merge_key = gpt_xmalloc((tk->merge_mask + 1) * sizeof *tk->merge_key);
        tk->merge_rank = gpt_xmalloc((tk->merge_mask + 1) * sizeof *tk->merge_rank);
        memset(tk->merge_key, 0xff, (tk->merge_mask + 1) * sizeof *tk->merge_key);
        unsigned char *buf = NULL;
        size_t bufcap = 0;
        for (size_t r = 0; r < tk->n_merges; r++) {
            uint64_t key = tk->pending_merges[r];
            uint32_t l = (uint32_t)(key >> 32), rt = (uint32_t)key;
            if (l >= n_vocab || rt >= n_vocab || tk->kind[l] != KIND_ORDINARY || tk->kind[rt] != KIND_ORDINARY) {
                free(buf);
                return gpt_errf(err, "%s: merge %zu joins ids %u and %u, which are not both ordinary tokens",
                                tk->name, r, l, rt);
            }
            size_t n = (size_t)tk->len[l] + tk->len[rt];
            if (n > bufcap) buf = gpt_xrealloc(buf, bufcap = n * 2);
            memcpy(buf, tk->arena + tk->off[l], tk->len[l]);
            memcpy(buf + tk->len[l], tk->arena + tk->off[rt], tk->len[rt]);
            if (lookup(tk, buf, n) < 0) {
                free(buf);
                return gpt_errf(err, "%s: merge %zu (ids %u + %u) makes bytes that are not a token", tk->name, r, l, rt);
            }
            size_t i = mix64(key) & tk->merge_mask;
            while (tk->merge_key[i] != UINT64_MAX && tk->merge_key[i] != key) i = (i + 1) & tk->merge_mask;
            if (tk->merge_key[i] == key) continue; /* a repeated merge keeps its first (best) rank */
            tk->merge_key[i] = key;
            tk->merge_rank[i] = (uint32_t)r;
        }
        free(buf);
    } else {
        tk->ignore_merges = 1;
    }
    free(tk->pending_merges);
    tk->pending_merges = NULL;

    /* Special texts, then names for the ids nobody defined, all in the arena. */
    for (size_t s = 0; s < tk->n_sp; s++) {
        uint32_t id = tk->sp[s].id;
        if (tk->kind[id] == KIND_ORDINARY)
            return gpt_errf(err, "%s: special token '%s' reuses ordinary id %u", tk->name, tk->sp[s].text, id);
        if (tk->kind[id] == KIND_SPECIAL) continue; /* an alias: the first text names the id */
        tk->kind[id] = KIND_SPECIAL;
        tk->off[id] = arena_put(tk, tk->sp[s].text, tk->sp[s].len);
        tk->len[id] = (uint32_t)tk->sp[s].len;
    }
    for (uint32_t id = 0; id < n_vocab; id++) {
        if (tk->kind[id] != KIND_NONE) continue;
        char name[32];
        int n = snprintf(name, sizeof name, "<|reserved_%u|>", id);
        tk->kind[id] = KIND_RESERVED;
        tk->off[id] = arena_put(tk, name, (size_t)n);
        tk->len[id] = (uint32_t)n;
    }
    if (build_specials(tk, err) < 0) return gpt_err_prefix(err, "%s", tk->name);

    tk->re = gpt_regex_compile(pattern, err);
    if (!tk->re) return gpt_err_prefix(err, "%s", tk->name);
    return 0;
}

void gpt_tokenizer_free(gpt_tokenizer *tk)
{
    if (!tk) return;
    free(tk->name);
    gpt_regex_free(tk->re);
    free(tk->arena);
    free(tk->off);
    free(tk->len);
    free(tk->kind);
    free(tk->slot_id);
    free(tk->slot_tag);
    free(tk->pair2);
    free(tk->merge_key);
    free(tk->merge_rank);
    free(tk->pending_merges);
    for (size_t i = 0; i < tk->n_sp; i++) free(tk->sp[i].text);
    free(tk->sp);
    free(tk->sp_slot);
    free(tk->sp_lens);
    free(tk->pend);
    free(tk);
}

/* ---- queries ---- */

const char *gpt_tokenizer_name(const gpt_tokenizer *tk) { return tk->name; }
const char *gpt_tokenizer_pattern(const gpt_tokenizer *tk) { return gpt_regex_pattern(tk->re); }
uint32_t gpt_tokenizer_n_vocab(const gpt_tokenizer *tk) { return tk->n_vocab; }
uint32_t gpt_tokenizer_n_ordinary(const gpt_tokenizer *tk) { return tk->n_ordinary; }
size_t gpt_tokenizer_n_special(const gpt_tokenizer *tk) { return tk->n_sp; }

const char *gpt_tokenizer_special(const gpt_tokenizer *tk, size_t i, uint32_t *id)
{
    if (i >= tk->n_sp) return NULL;
    if (id) *id = tk->sp[i].id;
    return tk->sp[i].text;
}

static int64_t special_index(const gpt_tokenizer *tk, const unsigned char *p, size_t n)
{
    for (size_t i = hash_bytes(p, n) & tk->sp_mask; tk->sp_slot[i]; i = (i + 1) & tk->sp_mask) {
        const special *s = &tk->sp[tk->sp_slot[i] - 1];
        if (s->len == n && memcmp(s->text, p, n) == 0) return tk->sp_slot[i] - 1;
    }
    return -1;
}

int64_t gpt_tokenizer_special_id(const gpt_tokenizer *tk, const char *text)
{
    int64_t i = special_index(tk, (const unsigned char *)text, strlen(text));
    return i < 0 ? -1 : (int64_t)tk->sp[i].id;
}

int64_t gpt_tokenizer_eot(const gpt_tokenizer *tk) { return gpt_tokenizer_special_id(tk, "<|endoftext|>"); }

const unsigned char *gpt_tokenizer_token(const gpt_tokenizer *tk, uint32_t id, size_t *len)
{
    if (id >= tk->n_vocab) return NULL;
    *len = tk->len[id];
    return tk->arena + tk->off[id];
}

int64_t gpt_tokenizer_lookup(const gpt_tokenizer *tk, const void *bytes, size_t len)
{
    return len ? lookup(tk, bytes, len) : -1;
}

int gpt_special_mask(const gpt_tokenizer *tk, const char *spec, unsigned char **mask, gpt_err *err)
{
    *mask = NULL;
    if (!spec || strcmp(spec, "none") == 0 || tk->n_sp == 0) {
        if (spec && strcmp(spec, "none") != 0 && strcmp(spec, "all") != 0)
            return gpt_errf(err, "--special %s: %s has no special tokens", spec, tk->name);
        return 0;
    }
    unsigned char *m = gpt_xcalloc(tk->n_sp, 1);
    if (strcmp(spec, "all") == 0) {
        memset(m, 1, tk->n_sp);
        *mask = m;
        return 0;
    }
    char *copy = gpt_xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char full[512];
        if (strncmp(t, "<|", 2) == 0)
            snprintf(full, sizeof full, "%s", t);
        else
            snprintf(full, sizeof full, "<|%s|>", t);
        int64_t i = special_index(tk, (const unsigned char *)full, strlen(full));
        if (i < 0) {
            gpt_errf(err, "--special: '%s' is not a special token of %s (see `gpt-tokenize info -e %s`)", t,
                     tk->name, tk->name);
            free(copy);
            free(m);
            return -1;
        }
        m[i] = 1;
    }
    free(copy);
    *mask = m;
    return 0;
}

/* ---- BPE ---- */

/* Priority of merging the parts [a, mid) and [mid, end): lower merges first. */
static inline uint32_t pair_rank(const gpt_tokenizer *tk, const unsigned char *p, size_t a, size_t mid, size_t end)
{
    if (!tk->has_merges) {
        if (end - a == 2) return tk->pair2[p[a] << 8 | p[a + 1]];
        int64_t r = lookup(tk, p + a, end - a);
        return r < 0 ? NO_RANK : (uint32_t)r;
    }
    int64_t l = lookup(tk, p + a, mid - a), r = lookup(tk, p + mid, end - mid);
    if (l < 0 || r < 0) return NO_RANK;
    return merge_lookup(tk, (uint32_t)l, (uint32_t)r);
}

static inline void push_part(const gpt_tokenizer *tk, const unsigned char *p, size_t a, size_t b, gpt_ids *out)
{
    int64_t id = lookup(tk, p + a, b - a);
    /* Every part is a token: parts only ever merge into tokens, and all bytes are tokens. */
    gpt_ids_push(out, (uint32_t)id);
}

/* tiktoken's quadratic merge loop: fastest for the short pieces that are nearly all of them. */
static void bpe_small(const gpt_tokenizer *tk, const unsigned char *p, size_t n, gpt_ids *out)
{
    size_t start[130];
    uint32_t rank[130];
    size_t cnt = n + 1;
    for (size_t i = 0; i < cnt; i++) {
        start[i] = i;
        rank[i] = i + 2 <= n ? pair_rank(tk, p, i, i + 1, i + 2) : NO_RANK;
    }
    for (;;) {
        uint32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < cnt; i++)
            if (rank[i] < best) best = rank[i], bi = i;
        if (best == NO_RANK) break;
        /* Merge parts bi and bi+1; the ranks around are computed before start[bi+1] goes. */
        if (bi > 0) rank[bi - 1] = bi + 2 < cnt ? pair_rank(tk, p, start[bi - 1], start[bi], start[bi + 2]) : NO_RANK;
        rank[bi] = bi + 3 < cnt ? pair_rank(tk, p, start[bi], start[bi + 2], start[bi + 3]) : NO_RANK;
        memmove(start + bi + 1, start + bi + 2, (cnt - bi - 2) * sizeof *start);
        memmove(rank + bi + 1, rank + bi + 2, (cnt - bi - 2) * sizeof *rank);
        cnt--;
    }
    for (size_t i = 0; i + 1 < cnt; i++) push_part(tk, p, start[i], start[i + 1], out);
}

typedef struct {
    uint32_t rank;
    size_t a, end;
} cand;

static inline int cand_less(const cand *x, const cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->a < y->a);
}

static void heap_push(cand *h, size_t *n, cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
    cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* The same merges in O(n log n) for long pieces (a megabyte of one character must not take
 * hours): parts are a linked list over start offsets; stale heap entries are skipped. */
static void bpe_large(const gpt_tokenizer *tk, const unsigned char *p, size_t n, gpt_ids *out)
{
    size_t *next = gpt_xmalloc((n + 1) * sizeof *next), *prev = gpt_xmalloc((n + 1) * sizeof *prev);
    unsigned char *alive = gpt_xmalloc(n + 1);
    size_t cap = 2 * n + 16, hn = 0;
    cand *heap = gpt_xmalloc(cap * sizeof *heap);
    for (size_t i = 0; i <= n; i++) {
        next[i] = i + 1;
        prev[i] = i - 1; /* wraps for 0: never read */
        alive[i] = 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = pair_rank(tk, p, i, i + 1, i + 2);
        if (r != NO_RANK) heap_push(heap, &hn, (cand){r, i, i + 2});
    }
    while (hn) {
        cand c = heap_pop(heap, &hn);
        size_t a = c.a;
        if (!alive[a] || next[a] >= n || next[next[a]] != c.end) continue;
        size_t b = next[a];
        next[a] = next[b];
        alive[b] = 0;
        if (next[a] <= n) prev[next[a]] = a;
        if (hn + 2 > cap) heap = gpt_xrealloc(heap, (cap *= 2) * sizeof *heap);
        if (a > 0) {
            size_t pa = prev[a];
            uint32_t r = pair_rank(tk, p, pa, a, next[a]);
            if (r != NO_RANK) heap_push(heap, &hn, (cand){r, pa, next[a]});
        }
        if (next[a] < n) {
            uint32_t r = pair_rank(tk, p, a, next[a], next[next[a]]);
            if (r != NO_RANK) heap_push(heap, &hn, (cand){r, a, next[next[a]]});
        }
    }
    for (size_t i = 0; i < n; i = next[i]) push_part(tk, p, i, next[i], out);
    free(next);
    free(prev);
    free(alive);
    free(heap);
}

/* Exposed for the tests that compare both merge loops. */
void gpt_bpe_merge_loop(const gpt_tokenizer *tk, const unsigned char *p, size_t n, int large, gpt_ids *out);
void gpt_bpe_merge_loop(const gpt_tokenizer *tk, const unsigned char *p, size_t n, int large, gpt_ids *out)
{
    if (large || n >= 128)
        bpe_large(tk, p, n, out);
    else
        bpe_small(tk, p, n, out);
}

void gpt_encode_piece(const gpt_tokenizer *tk, const unsigned char *piece, size_t len, gpt_ids *out)
{
    if (len == 0) return;
    if (tk->ignore_merges) {
        int64_t id = lookup(tk, piece, len);
        if (id >= 0) {
            gpt_ids_push(out, (uint32_t)id);
            return;
        }
    }
    if (len == 1) {
        gpt_ids_push(out, (uint32_t)lookup(tk, piece, 1));
        return;
    }
    gpt_bpe_merge_loop(tk, piece, len, 0, out);
}

/* Words repeat: a large text's pieces that are not tokens themselves go through the merge loop
 * once, then come from this cache (direct-mapped, checked byte for byte, so it only saves time). */
#define PC_BYTES 32
#define PC_IDS 8
typedef struct {
    unsigned char bytes[PC_BYTES];
    uint8_t len, n; /* len 0: empty */
    uint32_t ids[PC_IDS];
} piece_entry;

typedef struct {
    const gpt_tokenizer *tk;
    gpt_ids *out;
    piece_entry *cache;
    size_t mask;
} piece_ctx;

static int on_piece(const unsigned char *piece, size_t len, void *vctx)
{
    piece_ctx *c = vctx;
    const gpt_tokenizer *tk = c->tk;
    if (!c->cache || len > PC_BYTES || len < 2) {
        gpt_encode_piece(tk, piece, len, c->out);
        return 0;
    }
    uint64_t h = hash_bytes(piece, len);
    if (tk->ignore_merges) {
        int64_t id = lookup_hashed(tk, piece, len, h);
        if (id >= 0) {
            gpt_ids_push(c->out, (uint32_t)id);
            return 0;
        }
    }
    piece_entry *e = &c->cache[(h ^ (h >> 29)) & c->mask];
    if (e->len == len && same_bytes(e->bytes, piece, len)) {
        gpt_ids_append(c->out, e->ids, e->n);
        return 0;
    }
    size_t before = c->out->n;
    gpt_bpe_merge_loop(tk, piece, len, 0, c->out);
    size_t made = c->out->n - before;
    if (made <= PC_IDS) {
        memcpy(e->bytes, piece, len);
        e->len = (uint8_t)len;
        e->n = (uint8_t)made;
        memcpy(e->ids, c->out->v + before, made * sizeof *e->ids);
    }
    return 0;
}

static int encode_ordinary(const gpt_tokenizer *tk, const unsigned char *s, size_t n, gpt_ids *out, gpt_err *err)
{
    piece_ctx c = {tk, out, NULL, 0};
    if (n >= (1 << 16)) { /* worth a cache: ~1 entry per 16 bytes, at most 64K entries (5 MB) */
        size_t entries = 1024;
        while (entries < n / 16 && entries < (1 << 16)) entries <<= 1;
        c.cache = gpt_xcalloc(entries, sizeof *c.cache);
        c.mask = entries - 1;
    }
    int rc = n ? gpt_regex_split(tk->re, s, n, on_piece, &c, err) : 0;
    free(c.cache);
    return rc;
}

/* The leftmost allowed special token at or after `from` (longest wins at one position). */
static int find_special(const gpt_tokenizer *tk, const unsigned char *s, size_t n, size_t from,
                        const unsigned char *allowed, size_t *at, size_t *which)
{
    for (size_t i = from; i < n; i++) {
        if (!tk->sp_first[s[i]]) continue;
        for (size_t k = 0; k < tk->n_sp_lens; k++) {
            size_t l = tk->sp_lens[k];
            if (l > n - i) continue;
            int64_t si = special_index(tk, s + i, l);
            if (si >= 0 && allowed[si]) {
                *at = i;
                *which = (size_t)si;
                return 1;
            }
        }
    }
    return 0;
}

int gpt_encode(const gpt_tokenizer *tk, const void *text, size_t len, const unsigned char *allowed,
               gpt_ids *out, gpt_err *err)
{
    const unsigned char *s = text;
    if (!allowed) return encode_ordinary(tk, s, len, out, err);
    size_t pos = 0, at, which;
    while (find_special(tk, s, len, pos, allowed, &at, &which)) {
        if (encode_ordinary(tk, s + pos, at - pos, out, err) < 0) return -1;
        gpt_ids_push(out, tk->sp[which].id);
        pos = at + tk->sp[which].len;
    }
    return encode_ordinary(tk, s + pos, len - pos, out, err);
}

int gpt_decode(const gpt_tokenizer *tk, const uint32_t *ids, size_t n, unsigned char **out, size_t *outlen,
               gpt_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= tk->n_vocab)
            return gpt_errf(err, "token id %u at position %zu is out of range (%s has n_vocab %u)", ids[i], i,
                            tk->name, tk->n_vocab);
        total += tk->len[ids[i]];
    }
    unsigned char *buf = gpt_xmalloc(total + 1), *o = buf;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, tk->arena + tk->off[ids[i]], tk->len[ids[i]]);
        o += tk->len[ids[i]];
    }
    *o = '\0';
    *out = buf;
    *outlen = total;
    return 0;
}

/* ---- parallel encoding ---- */

/* A cut at p is certain to be a piece boundary, with every piece before it the same whether or not
 * the text goes on, when text[p-1] is an ASCII letter and text[p] is '\n': in all the built-in
 * patterns a piece holding an ASCII letter never holds a newline, and neither `$` nor a lookahead
 * can look across it. Other patterns are not known to share this, so they stay single-threaded. */
static int parallel_safe(const gpt_tokenizer *tk, const unsigned char *allowed)
{
    const char *pat = gpt_regex_pattern(tk->re);
    if (strcmp(pat, gpt_pat_r50k) != 0 && strcmp(pat, gpt_pat_cl100k) != 0 && strcmp(pat, gpt_pat_o200k) != 0)
        return 0;
    if (allowed)
        for (size_t i = 0; i < tk->n_sp; i++)
            if (allowed[i] && memchr(tk->sp[i].text, '\n', tk->sp[i].len)) return 0;
    return 1;
}

static size_t next_cut(const unsigned char *s, size_t n, size_t from)
{
    for (size_t i = from < 1 ? 1 : from; i < n; i++) {
        const unsigned char *q = memchr(s + i, '\n', n - i);
        if (!q) return n;
        i = (size_t)(q - s);
        unsigned char c = s[i - 1];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return i;
    }
    return n;
}

int gpt_encode_parallel(const gpt_tokenizer *tk, const void *text, size_t len, const unsigned char *allowed,
                        int threads, gpt_ids *out, gpt_err *err)
{
    const unsigned char *s = text;
    if (threads <= 0) threads = omp_get_max_threads();
    size_t chunk = len / ((size_t)threads * 8);
    if (chunk < (1 << 18)) chunk = 1 << 18;
    if (threads == 1 || len < 2 * chunk || !parallel_safe(tk, allowed)) return gpt_encode(tk, s, len, allowed, out, err);

    size_t ncut = 0, capcut = len / chunk + 2;
    size_t *cut = gpt_xmalloc((capcut + 1) * sizeof *cut);
    cut[ncut++] = 0;
    while (cut[ncut - 1] < len) {
        size_t c = next_cut(s, len, cut[ncut - 1] + chunk);
        if (ncut == capcut) cut = gpt_xrealloc(cut, ((capcut *= 2) + 1) * sizeof *cut);
        cut[ncut++] = c;
    }
    size_t nchunks = ncut - 1;
    gpt_ids *part = gpt_xcalloc(nchunks, sizeof *part);
    gpt_err *perr = gpt_xcalloc(nchunks, sizeof *perr);
    int *prc = gpt_xcalloc(nchunks, sizeof *prc);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (size_t i = 0; i < nchunks; i++)
        prc[i] = gpt_encode(tk, s + cut[i], cut[i + 1] - cut[i], allowed, &part[i], &perr[i]);
    int rc = 0;
    for (size_t i = 0; i < nchunks; i++) {
        if (prc[i] != 0 && rc == 0) {
            rc = -1;
            if (err) *err = perr[i];
        }
        if (rc == 0) gpt_ids_append(out, part[i].v, part[i].n);
        gpt_ids_free(&part[i]);
    }
    free(part);
    free(perr);
    free(prc);
    free(cut);
    return rc;
}
