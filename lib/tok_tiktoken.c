/* tok_tiktoken.c: tiktoken rank files ("<base64 token> <rank>" per line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "tokenizer_build.h"

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict standard base64 with padding. Returns the decoded length or -1. */
static long b64decode(const unsigned char *s, size_t n, unsigned char *out)
{
    if (n == 0 || n % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad) return -1; /* data after padding */
                v[k] = b64val(s[i + k]);
                if (v[k] < 0) return -1;
            }
        }
        unsigned triple = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        out[o++] = (unsigned char)(triple >> 16);
        if (pad < 2) out[o++] = (unsigned char)(triple >> 8);
        if (pad < 1) out[o++] = (unsigned char)triple;
    }
    return (long)o;
}

int gpt_parse_tiktoken(gpt_tokenizer *tk, const unsigned char *data, size_t len, const char *where, gpt_err *err)
{
    size_t pos = 0, line = 0, ntok = 0;
    unsigned char *buf = NULL;
    size_t bufcap = 0;
    while (pos < len) {
        line++;
        const unsigned char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len, next = nl ? end + 1 : len;
        size_t e = end;
        if (e > pos && data[e - 1] == '\r') e--;
        if (e == pos) { /* blank lines are allowed, as tiktoken allows them */
            pos = next;
            continue;
        }
        const unsigned char *sp = memchr(data + pos, ' ', e - pos);
        if (!sp) {
            free(buf);
            return gpt_errf(err, "%s:%zu: expected '<base64 token> <rank>'", where, line);
        }
        size_t tlen = (size_t)(sp - (data + pos));
        if (tlen / 4 * 3 + 3 > bufcap) buf = gpt_xrealloc(buf, bufcap = tlen / 4 * 3 + 64);
        long blen = b64decode(data + pos, tlen, buf);
        if (blen <= 0) {
            free(buf);
            return gpt_errf(err, "%s:%zu: the token is not valid base64", where, line);
        }
        size_t r = (size_t)(sp - data) + 1;
        if (r >= e) {
            free(buf);
            return gpt_errf(err, "%s:%zu: missing rank after the token", where, line);
        }
        unsigned long rank = 0;
        for (; r < e; r++) {
            if (data[r] < '0' || data[r] > '9' || rank > (1ul << 30)) {
                free(buf);
                return gpt_errf(err, "%s:%zu: the rank must be a decimal number below 2^30", where, line);
            }
            rank = rank * 10 + (data[r] - '0');
        }
        if (rank >= (1ul << 30)) {
            free(buf);
            return gpt_errf(err, "%s:%zu: the rank must be a decimal number below 2^30", where, line);
        }
        if (gpt_tk_add_token(tk, (uint32_t)rank, buf, (size_t)blen, err) < 0) {
            free(buf);
            return gpt_err_prefix(err, "%s:%zu", where, line);
        }
        ntok++;
        pos = next;
    }
    free(buf);
    if (ntok == 0) return gpt_errf(err, "%s: no tokens in the rank file", where);
    return 0;
}

gpt_tokenizer *gpt_load_tiktoken(const char *path, const char *name, const char *pattern, gpt_err *err)
{
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) < 0) return NULL;
    gpt_tokenizer *tk = gpt_tk_new(name);
    int rc = gpt_parse_tiktoken(tk, b.data, b.size, path, err);
    gpt_blob_free(&b);
    /* A bare rank file (one that `gpt-tokenize train` wrote, say) gets <|endoftext|> right after
     * its ranks, so token streams can still separate documents. */
    if (rc == 0) rc = gpt_tk_add_special(tk, "<|endoftext|>", gpt_tk_max_id(tk) + 1, err);
    if (rc == 0 && gpt_tk_finish(tk, pattern, 0, err) < 0) {
        gpt_err_prefix(err, "%s", path);
        rc = -1;
    }
    if (rc < 0) {
        gpt_tokenizer_free(tk);
        return NULL;
    }
    return tk;
}
