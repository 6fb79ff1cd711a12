/* tok_gpt2.c: GPT-2's original vocabulary files.
 *
 * encoder.json maps mapped-string keys to ids; vocab.bpe is a "#version" line followed by one
 * merge "a b" per line in rank order. <|endoftext|> (and <|startoftext|> where present) sit in
 * encoder.json but are special tokens, not mergeable ones, as in tiktoken's "gpt2" loader.
 * The pattern is r50k's, which is GPT-2's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "fileio.h"
#include "tok_loaders.h"

static int is_special_key(const char *k)
{
    return strcmp(k, "<|endoftext|>") == 0 || strcmp(k, "<|startoftext|>") == 0;
}

static int load_encoder(gpt_blvocab *v, const cJSON *root, const char *ename, gpt_err *err)
{
    char where[512], q[96];
    if (!cJSON_IsObject(root))
        return gpt_errf(err, "%s: expected a JSON object mapping token strings to ids", ename);
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *k = e->string ? e->string : "";
        snprintf(where, sizeof where, "%s", ename);
        if (!cJSON_IsNumber(e))
            return gpt_errf(err, "%s: key %s: the id must be a number", ename,
                            gpt_quote_key(k, strlen(k), q, sizeof q));
        if (is_special_key(k)) {
            uint32_t id;
            snprintf(where, sizeof where, "%s: key %s", ename, k);
            if (gpt_blvocab_claim_id(v, e->valuedouble, &id, where, err) < 0) return -1;
            if (gpt_tk_add_special(v->tk, k, id, err) < 0) return gpt_err_prefix(err, "%s", where);
            continue;
        }
        if (gpt_blvocab_add(v, k, strlen(k), e->valuedouble, where, err) < 0) return -1;
    }
    return 0;
}

static int load_merges(gpt_blvocab *v, const char *data, size_t len, const char *vname, gpt_err *err)
{
    char where[512];
    size_t pos = 0, line = 0;
    while (pos < len) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n && s[n - 1] == '\r') n--;
        if (line == 1 && n >= 8 && memcmp(s, "#version", 8) == 0) continue;
        snprintf(where, sizeof where, "%s:%zu", vname, line);
        if (n == 0) {
            /* Only trailing blank lines are harmless; one in the middle means a damaged file. */
            size_t rest = pos;
            while (rest < len && (data[rest] == '\n' || data[rest] == '\r')) rest++;
            if (rest == len) break;
            return gpt_errf(err, "%s: empty line; expected a merge \"LEFT RIGHT\"", where);
        }
        const char *sp = memchr(s, ' ', n);
        if (!sp || sp == s || sp == s + n - 1 || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)))
            return gpt_errf(err, "%s: expected a merge \"LEFT RIGHT\" (two tokens separated by one space)",
                            where);
        if (gpt_blvocab_merge(v, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), where, err) < 0)
            return -1;
    }
    return 0;
}

gpt_tokenizer *gpt_load_gpt2_mem(const char *vocab_bpe, size_t vlen, const char *vocab_name,
                                 const char *encoder_json, size_t elen, const char *encoder_name,
                                 gpt_err *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(encoder_json ? encoder_json : "", elen, &end, 0);
    if (!root) {
        size_t off = end && encoder_json && end >= encoder_json ? (size_t)(end - encoder_json) : 0;
        gpt_errf(err, "%s: invalid JSON near byte %zu%s", encoder_name, off,
                 off >= elen ? " (the file is truncated?)" : "");
        return NULL;
    }
    gpt_tokenizer *tk = gpt_tk_new(vocab_name);
    gpt_blvocab v;
    gpt_blvocab_init(&v, tk, (size_t)cJSON_GetArraySize(root));
    int rc = load_encoder(&v, root, encoder_name, err);
    if (rc == 0) rc = load_merges(&v, vocab_bpe ? vocab_bpe : "", vlen, vocab_name, err);
    if (rc == 0) rc = gpt_blvocab_check_merges(&v, vocab_name, err);
    gpt_blvocab_free(&v);
    cJSON_Delete(root);
    /* finish's messages already start with the tokenizer's name (vocab_name). */
    if (rc == 0) rc = gpt_tk_finish(tk, gpt_pat_r50k, 0, err);
    if (rc < 0) {
        gpt_tokenizer_free(tk);
        return NULL;
    }
    return tk;
}

gpt_tokenizer *gpt_load_gpt2_files(const char *vocab_bpe, const char *encoder_json, gpt_err *err)
{
    gpt_blob vb = {0}, eb = {0};
    if (gpt_blob_read(&vb, vocab_bpe, err) < 0) return NULL;
    if (gpt_blob_read(&eb, encoder_json, err) < 0) {
        gpt_blob_free(&vb);
        return NULL;
    }
    gpt_tokenizer *tk = gpt_load_gpt2_mem((const char *)vb.data, vb.size, vocab_bpe,
                                          (const char *)eb.data, eb.size, encoder_json, err);
    gpt_blob_free(&vb);
    gpt_blob_free(&eb);
    return tk;
}
