/* bytelevel.c: GPT-2's byte <-> printable-character mapping (bytes_to_unicode) and the
 * mapped-key vocabulary builder that the vocab.bpe / encoder.json and tokenizer.json loaders
 * share.
 *
 * The printable bytes '!'..'~', U+00A1..U+00AC and U+00AE..U+00FF stand for themselves; the
 * other 68 bytes (0x00..0x20, 0x7F..0xA0, 0xAD), in increasing order, become U+0100 + n. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "pretok.h"
#include "tok_loaders.h"

static int printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static unsigned cp_of_byte(unsigned b)
{
    if (printable(b)) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F);
    return 0x100 + 67; /* 0xAD, the soft hyphen */
}

static int byte_of_cp(unsigned cp)
{
    if (cp < 0x100) return printable(cp) ? (int)cp : -1;
    if (cp > 0x143) return -1;
    unsigned n = cp - 0x100;
    if (n < 33) return (int)n;
    if (n < 67) return (int)(0x7F + n - 33);
    return 0xAD;
}

long gpt_bytelevel_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        unsigned cp;
        /* Every mapped character is below U+0800, so only 1- and 2-byte forms can be valid. */
        if (p[i] < 0x80) {
            cp = p[i++];
        } else if (p[i] >= 0xC2 && p[i] <= 0xDF && i + 1 < len && (p[i + 1] & 0xC0) == 0x80) {
            cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
            i += 2;
        } else {
            return -1;
        }
        int b = byte_of_cp(cp);
        if (b < 0 || o >= cap) return -1;
        out[o++] = (unsigned char)b;
    }
    return (long)o;
}

long gpt_bytelevel_encode(const unsigned char *b, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned cp = cp_of_byte(b[i]);
        if (cp < 0x80) {
            if (o + 1 > cap) return -1;
            out[o++] = (char)cp;
        } else {
            if (o + 2 > cap) return -1;
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return (long)o;
}

const char *gpt_quote_key(const char *key, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap < 8) {
        if (cap) out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        /* Room for one escape, the closing quote, "..." and the NUL. */
        if (o + 4 + 1 + 3 + 1 > cap) {
            memcpy(out + o, "\"...", 5);
            return out;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7F) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else if (c < 0x80) {
            out[o++] = (char)c;
        } else {
            /* Whole UTF-8 characters stay readable; other high bytes are escaped. */
            size_t l = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (l <= len - i && gpt_utf8_valid_prefix((const unsigned char *)key + i, l) == l) {
                if (o + l + 1 + 3 + 1 > cap) {
                    memcpy(out + o, "\"...", 5);
                    return out;
                }
                memcpy(out + o, key + i, l);
                o += l;
                i += l - 1;
            } else {
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[c >> 4];
                out[o++] = hex[c & 15];
            }
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* ---- the mapped-key vocabulary ---- */

typedef struct gpt_blslot {
    const char *key;
    size_t len;
    uint32_t id;
} gpt_blslot;

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void table_alloc(gpt_blvocab *v, size_t cap)
{
    v->slots = gpt_xcalloc(cap, sizeof *v->slots);
    v->cap = cap;
}

void gpt_blvocab_init(gpt_blvocab *v, gpt_tokenizer *tk, size_t expected)
{
    memset(v, 0, sizeof *v);
    v->tk = tk;
    size_t cap = 64;
    while (cap < 2 * expected + 2) cap *= 2;
    table_alloc(v, cap);
    v->used = gpt_xcalloc(GPT_LOADER_MAX_ID / 8, 1);
}

void gpt_blvocab_free(gpt_blvocab *v)
{
    free(v->slots);
    free(v->used);
    free(v->buf);
    memset(v, 0, sizeof *v);
}

static gpt_blslot *find_slot(const gpt_blvocab *v, const char *key, size_t klen)
{
    size_t mask = v->cap - 1, i = (size_t)hash_key(key, klen) & mask;
    while (v->slots[i].key && !(v->slots[i].len == klen && memcmp(v->slots[i].key, key, klen) == 0))
        i = (i + 1) & mask;
    return &v->slots[i];
}

static void grow(gpt_blvocab *v)
{
    gpt_blslot *old = v->slots;
    size_t oldcap = v->cap;
    table_alloc(v, oldcap * 2);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) *find_slot(v, old[i].key, old[i].len) = old[i];
    free(old);
}

static char *scratch(gpt_blvocab *v, size_t n)
{
    if (n > v->bufcap) {
        v->bufcap = n > 2 * v->bufcap ? n : 2 * v->bufcap;
        free(v->buf);
        v->buf = gpt_xmalloc(v->bufcap);
    }
    return v->buf;
}

int64_t gpt_blvocab_get(const gpt_blvocab *v, const char *key, size_t klen)
{
    const gpt_blslot *s = find_slot(v, key, klen);
    return s->key ? (int64_t)s->id : -1;
}

int gpt_blvocab_claim_id(gpt_blvocab *v, double id, uint32_t *out, const char *where, gpt_err *err)
{
    /* The negated test also refuses NaN. */
    if (!(id >= 0 && id < GPT_LOADER_MAX_ID) || id != (double)(uint32_t)id)
        return gpt_errf(err, "%s: id %g is not an integer in 0..%u", where, id, GPT_LOADER_MAX_ID - 1);
    uint32_t u = (uint32_t)id;
    if (v->used[u >> 3] & (1u << (u & 7)))
        return gpt_errf(err, "%s: id %u is used twice; every token needs its own id", where, u);
    v->used[u >> 3] |= (unsigned char)(1u << (u & 7));
    *out = u;
    return 0;
}

int gpt_blvocab_add(gpt_blvocab *v, const char *key, size_t klen, double id, const char *where,
                    gpt_err *err)
{
    char q[96], wk[700];
    uint32_t u;
    if (klen == 0) return gpt_errf(err, "%s: empty token key; tokens must have at least one byte", where);
    snprintf(wk, sizeof wk, "%s: key %s", where, gpt_quote_key(key, klen, q, sizeof q));
    if (gpt_blvocab_claim_id(v, id, &u, wk, err) < 0) return -1;
    gpt_blslot *s = find_slot(v, key, klen);
    if (s->key)
        return gpt_errf(err, "%s: key %s appears twice (ids %u and %u)", where,
                        gpt_quote_key(key, klen, q, sizeof q), s->id, u);
    unsigned char *bytes = (unsigned char *)scratch(v, klen);
    long n = gpt_bytelevel_decode(key, klen, bytes, klen);
    if (n < 0)
        return gpt_errf(err,
                        "%s: key %s has a character outside GPT-2's byte-level alphabet (is this a "
                        "byte-level BPE vocabulary?)",
                        where, gpt_quote_key(key, klen, q, sizeof q));
    if (gpt_tk_add_token(v->tk, u, bytes, (size_t)n, err) < 0)
        return gpt_err_prefix(err, "%s: key %s (id %u)", where, gpt_quote_key(key, klen, q, sizeof q), u);
    s->key = key;
    s->len = klen;
    s->id = u;
    v->n_multi += n > 1;
    if (++v->n * 2 > v->cap) grow(v);
    return 0;
}

int gpt_blvocab_merge(gpt_blvocab *v, const char *a, size_t alen, const char *b, size_t blen,
                      const char *where, gpt_err *err)
{
    char q[96];
    int64_t ia = gpt_blvocab_get(v, a, alen), ib = gpt_blvocab_get(v, b, blen);
    if (ia < 0 || ib < 0) {
        const char *k = ia < 0 ? a : b;
        size_t kl = ia < 0 ? alen : blen;
        return gpt_errf(err, "%s: merge names %s, which is not in the vocabulary", where,
                        gpt_quote_key(k, kl, q, sizeof q));
    }
    char *cat = scratch(v, alen + blen + 1);
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    if (gpt_blvocab_get(v, cat, alen + blen) < 0)
        return gpt_errf(err, "%s: merge result %s is not in the vocabulary", where,
                        gpt_quote_key(cat, alen + blen, q, sizeof q));
    if (gpt_tk_add_merge(v->tk, (uint32_t)ia, (uint32_t)ib, err) < 0)
        return gpt_err_prefix(err, "%s", where);
    v->n_merges++;
    return 0;
}

int gpt_blvocab_check_merges(const gpt_blvocab *v, const char *what, gpt_err *err)
{
    if (v->n_merges == 0 && v->n_multi > 0)
        return gpt_errf(err, "%s has no merges, but the vocabulary has %zu multi-byte tokens; a merge-list BPE "
                        "without merges is not supported (use a .tiktoken rank file instead)", what, v->n_multi);
    return 0;
}
