/* pretok.c: PCRE2 pre-tokenization with tiktoken's semantics (see pretok.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretok.h"

#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gpt_regex {
    pcre2_code *code;
    char *pattern; /* as given, for display */
    int jit;
};

size_t gpt_utf8_valid_prefix(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* ASCII runs dominate real text: skip 8 bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;      /* no overlongs */
            if (c == 0xED) hi = 0x9F;      /* no surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;      /* no overlongs */
            if (c == 0xF4) hi = 0x8F;      /* <= U+10FFFF */
        } else
            return i;
        if (len - i < need + 1) return i;
        unsigned c1 = s[i + 1];
        if (c1 < lo || c1 > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += need + 1;
    }
    return len;
}

/* PCRE2's \s under UCP is Unicode "space" (Z + \t\n\v\f\r) which lacks U+0085, while Rust's regex
 * (what tiktoken runs) uses White_Space, which has it. Widen \s and \S so both agree. */
static char *widen_spaces(const char *pat)
{
    size_t n = strlen(pat);
    char *out = gpt_xmalloc(n * 12 + 1), *o = out;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[i + 1];
            i++;
            if (d == 's') {
                o += sprintf(o, in_class ? "\\s\\x{85}" : "[\\s\\x{85}]");
            } else if (d == 'S' && !in_class) {
                o += sprintf(o, "[^\\s\\x{85}]");
            } else {
                *o++ = '\\';
                *o++ = d;
            }
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            *o++ = c;
            /* a ']' right after '[' or '[^' is literal */
            if (pat[i + 1] == '^') *o++ = pat[++i];
            if (pat[i + 1] == ']') *o++ = pat[++i];
            continue;
        }
        if (c == ']' && in_class) in_class = 0;
        *o++ = c;
    }
    *o = '\0';
    return out;
}

gpt_regex *gpt_regex_compile(const char *pattern, gpt_err *err)
{
    char *widened = widen_spaces(pattern);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)widened, PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK,
                                     &ec, &eo, NULL);
    free(widened);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        gpt_errf(err, "bad pre-tokenization pattern near offset %zu: %s", (size_t)eo, (char *)msg);
        return NULL;
    }
    gpt_regex *re = gpt_xcalloc(1, sizeof *re);
    re->code = code;
    re->pattern = gpt_xstrdup(pattern);
    re->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

void gpt_regex_free(gpt_regex *re)
{
    if (!re) return;
    pcre2_code_free(re->code);
    free(re->pattern);
    free(re);
}

const char *gpt_regex_pattern(const gpt_regex *re) { return re->pattern; }

typedef struct {
    const gpt_regex *re;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} matcher;

static int match_error(int rc, gpt_err *err)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return gpt_errf(err, "pre-tokenization failed: %s", (char *)msg);
}

/* One valid UTF-8 run: it is the whole subject. */
static int split_valid(matcher *m, const unsigned char *s, size_t n, gpt_piece_fn fn, void *ctx,
                       gpt_err *err)
{
    size_t at = 0, gap = 0; /* gap: start of text not yet covered by a match */
    while (at < n) {
        int rc = m->re->jit ? pcre2_jit_match(m->re->code, s, n, at, 0, m->md, m->mc)
                            : pcre2_match(m->re->code, s, n, at, PCRE2_NO_UTF_CHECK, m->md, m->mc);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return match_error(rc, err);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
        size_t b = ov[0], e = ov[1];
        if (e == b) { /* empty match: step over one character, which stays in the gap */
            at = b + 1;
            while (at < n && (s[at] & 0xC0) == 0x80) at++;
            continue;
        }
        int r;
        if (b > gap && (r = fn(s + gap, b - gap, ctx)) != 0) return r;
        if ((r = fn(s + b, e - b, ctx)) != 0) return r;
        at = gap = e;
    }
    if (gap < n) return fn(s + gap, n - gap, ctx);
    return 0;
}

int gpt_regex_split(const gpt_regex *re, const unsigned char *text, size_t len, gpt_piece_fn fn,
                    void *ctx, gpt_err *err)
{
    matcher m = {.re = re};
    m.md = pcre2_match_data_create(4, NULL);
    m.mc = pcre2_match_context_create(NULL);
    if (re->jit) {
        /* Long runs (a megabyte of one character) need more than the default 32 KiB. */
        m.js = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
        pcre2_jit_stack_assign(m.mc, NULL, m.js);
    }
    int rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        size_t v = gpt_utf8_valid_prefix(text + pos, len - pos);
        if (v > 0) {
            rc = split_valid(&m, text + pos, v, fn, ctx, err);
            pos += v;
            continue;
        }
        size_t e = pos + 1;
        while (e < len && gpt_utf8_valid_prefix(text + e, len - e < 4 ? len - e : 4) == 0) e++;
        rc = fn(text + pos, e - pos, ctx);
        pos = e;
    }
    pcre2_match_data_free(m.md);
    pcre2_match_context_free(m.mc);
    if (m.js) pcre2_jit_stack_free(m.js);
    return rc;
}
