/* tok_hfjson.c: Hugging Face tokenizer.json files holding a byte-level BPE.
 *
 * Accepted (anything else is refused with an error naming the key, since encoding it the way we
 * do would silently give other ids than the `tokenizers` library):
 *   normalizer: null;  truncation, padding: null
 *   pre_tokenizer: ByteLevel{add_prefix_space: false, use_regex: true}  -> r50k's pattern
 *                  ByteLevel{add_prefix_space: false, use_regex: false} -> the whole text is one piece
 *                  Sequence[Split{pattern: {Regex: R}, behavior: Isolated, invert: false},
 *                           ByteLevel{add_prefix_space: false, use_regex: false}] -> pattern R
 *                  (a Sequence holding only a ByteLevel is that ByteLevel)
 *   model: BPE with vocab, merges ("a b" strings or [a, b] pairs), ignore_merges; dropout null,
 *          byte_fallback false, no continuing_subword_prefix / end_of_word_suffix. unk_token is
 *          allowed: with all 256 byte tokens present (gpt_tk_finish insists) it never fires.
 *   post_processor, decoder: null or ByteLevel (they only touch offsets / map bytes back).
 *
 * Added tokens, special or not, become our special tokens (exact-text matches). `tokenizers`
 * always cuts added tokens out of the text before pre-tokenizing, so our ids equal its ids when
 * special tokens are allowed (gpt_special_mask "all", gpt-tokenize --special all). A vocab entry
 * with the same text and id as an added token is that special token, not an ordinary one (GPT-2's
 * <|endoftext|> is both). lstrip / rstrip / single_word change how the text is matched; they are
 * refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "fileio.h"
#include "tok_loaders.h"

typedef struct added {
    const char *text;
    uint32_t id;
} added;

typedef struct hfctx {
    const char *name;
    gpt_err *err;
} hfctx;

static int cmp_added(const void *a, const void *b)
{
    return strcmp(((const added *)a)->text, ((const added *)b)->text);
}

static int is_null(const cJSON *j) { return j == NULL || cJSON_IsNull(j); }

static const char *type_of(const cJSON *j)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* A boolean option: absent/null gives `dflt`; anything but a boolean is an error. */
static int get_bool(const hfctx *c, const cJSON *obj, const char *key, const char *path, int dflt, int *out)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (is_null(j)) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(j)) return gpt_errf(c->err, "%s: %s.%s must be true or false", c->name, path, key);
    *out = cJSON_IsTrue(j);
    return 0;
}

static int check_bytelevel(const hfctx *c, const cJSON *bl, const char *path, int *use_regex)
{
    int aps;
    if (get_bool(c, bl, "add_prefix_space", path, 0, &aps) < 0 || get_bool(c, bl, "use_regex", path, 1, use_regex) < 0)
        return -1;
    if (aps)
        return gpt_errf(c->err,
                        "%s: %s.add_prefix_space is true, which is not supported (it inserts a space "
                        "before the text); save the tokenizer with add_prefix_space false",
                        c->name, path);
    return 0;
}

/* Sets *pattern (pointing into the JSON tree) from the pre_tokenizer. */
static int parse_pretokenizer(const hfctx *c, const cJSON *pt, const char **pattern)
{
    char path[64];
    int use_regex;
    if (is_null(pt))
        return gpt_errf(c->err, "%s: pre_tokenizer is null; only byte-level BPE (a ByteLevel pre-tokenizer) is supported",
                        c->name);
    const char *type = type_of(pt);
    if (!type) return gpt_errf(c->err, "%s: pre_tokenizer.type is missing or not a string", c->name);
    if (strcmp(type, "ByteLevel") == 0) {
        if (check_bytelevel(c, pt, "pre_tokenizer", &use_regex) < 0) return -1;
        *pattern = use_regex ? gpt_pat_r50k : "(?s:.+)";
        return 0;
    }
    if (strcmp(type, "Sequence") != 0)
        return gpt_errf(c->err, "%s: pre_tokenizer.type \"%.40s\" is not supported (ByteLevel, or a Sequence of a "
                        "Split and a ByteLevel, is)", c->name, type);
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
    if (!cJSON_IsArray(seq)) return gpt_errf(c->err, "%s: pre_tokenizer.pretokenizers must be an array", c->name);
    int n = cJSON_GetArraySize(seq);
    const cJSON *first = cJSON_GetArrayItem(seq, 0), *last = cJSON_GetArrayItem(seq, n - 1);
    const char *t0 = first ? type_of(first) : NULL, *t1 = last ? type_of(last) : NULL;
    if (n == 1 && t0 && strcmp(t0, "ByteLevel") == 0) {
        if (check_bytelevel(c, first, "pre_tokenizer.pretokenizers[0]", &use_regex) < 0) return -1;
        *pattern = use_regex ? gpt_pat_r50k : "(?s:.+)";
        return 0;
    }
    if (n != 2 || !t0 || strcmp(t0, "Split") != 0 || !t1 || strcmp(t1, "ByteLevel") != 0)
        return gpt_errf(c->err, "%s: pre_tokenizer: a Sequence must be [Split, ByteLevel] (or [ByteLevel]); this one "
                        "has %d entries", c->name, n);
    snprintf(path, sizeof path, "pre_tokenizer.pretokenizers[1]");
    if (check_bytelevel(c, last, path, &use_regex) < 0) return -1;
    if (use_regex)
        return gpt_errf(c->err, "%s: %s.use_regex is true after a Split, which splits twice; not supported",
                        c->name, path);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(first, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    if (!cJSON_IsObject(pat) || !cJSON_IsString(re))
        return gpt_errf(c->err, "%s: pre_tokenizer.pretokenizers[0].pattern must be {\"Regex\": \"...\"} (a String "
                        "pattern is not supported)", c->name);
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(first, "behavior");
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") != 0)
        return gpt_errf(c->err, "%s: pre_tokenizer.pretokenizers[0].behavior must be \"Isolated\"", c->name);
    int invert;
    if (get_bool(c, first, "invert", "pre_tokenizer.pretokenizers[0]", 0, &invert) < 0) return -1;
    if (invert) return gpt_errf(c->err, "%s: pre_tokenizer.pretokenizers[0].invert must be false", c->name);
    *pattern = re->valuestring;
    return 0;
}

static int check_passive(const hfctx *c, const cJSON *root, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (is_null(j)) return 0;
    const char *type = type_of(j);
    if (type && strcmp(type, "ByteLevel") == 0) return 0;
    return gpt_errf(c->err, "%s: %s \"%.40s\" is not supported (only null or ByteLevel)", c->name, key,
                    type ? type : "(no type)");
}

static int check_model_options(const hfctx *c, const cJSON *model)
{
    const char *type = type_of(model);
    if (!type || strcmp(type, "BPE") != 0)
        return gpt_errf(c->err, "%s: model.type is \"%.40s\"; only \"BPE\" is supported", c->name,
                        type ? type : "(missing)");
    if (!is_null(cJSON_GetObjectItemCaseSensitive(model, "dropout")))
        return gpt_errf(c->err, "%s: model.dropout is set; BPE dropout is random, set it to null", c->name);
    int bf;
    if (get_bool(c, model, "byte_fallback", "model", 0, &bf) < 0) return -1;
    if (bf) return gpt_errf(c->err, "%s: model.byte_fallback is true, which is not supported", c->name);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(model, affixes[i]);
        if (!is_null(j) && !(cJSON_IsString(j) && j->valuestring[0] == '\0'))
            return gpt_errf(c->err, "%s: model.%s is set, which is not supported by byte-level BPE", c->name, affixes[i]);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (!is_null(unk) && !cJSON_IsString(unk))
        return gpt_errf(c->err, "%s: model.unk_token must be a string or null", c->name);
    return 0;
}

/* Reads added_tokens into a sorted array (texts point into the tree); declares them special. */
static int load_added(const hfctx *c, gpt_blvocab *v, const cJSON *arr, added **out, size_t *nout)
{
    char where[128], path[64];
    *out = NULL;
    *nout = 0;
    if (is_null(arr)) return 0;
    if (!cJSON_IsArray(arr)) return gpt_errf(c->err, "%s: added_tokens must be an array", c->name);
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    added *a = gpt_xcalloc(n ? n : 1, sizeof *a);
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        snprintf(where, sizeof where, "%s: added_tokens[%zu]", c->name, i);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsObject(e) || !cJSON_IsNumber(id) || !cJSON_IsString(content) || !content->valuestring[0]) {
            gpt_errf(c->err, "%s: expected an object with a numeric \"id\" and a non-empty string \"content\"", where);
            goto fail;
        }
        static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        for (int k = 0; k < 3; k++) {
            int on;
            if (get_bool(c, e, unsupported[k], path, 0, &on) < 0) goto fail;
            if (on) {
                gpt_errf(c->err, "%s: %s is true, which is not supported (tokens match their exact text only)",
                         where, unsupported[k]);
                goto fail;
            }
        }
        if (gpt_blvocab_claim_id(v, id->valuedouble, &a[i].id, where, c->err) < 0) goto fail;
        a[i].text = content->valuestring;
        if (gpt_tk_add_special(v->tk, a[i].text, a[i].id, c->err) < 0) {
            gpt_err_prefix(c->err, "%s", where);
            goto fail;
        }
    }
    qsort(a, n, sizeof *a, cmp_added);
    *out = a;
    *nout = n;
    return 0;
fail:
    free(a);
    return -1;
}

static int load_vocab(const hfctx *c, gpt_blvocab *v, const cJSON *vocab, const added *a, size_t na)
{
    char where[128], q[96];
    snprintf(where, sizeof where, "%s: model.vocab", c->name);
    if (!cJSON_IsObject(vocab)) return gpt_errf(c->err, "%s must be an object mapping token strings to ids", where);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        const char *k = e->string ? e->string : "";
        if (!cJSON_IsNumber(e))
            return gpt_errf(c->err, "%s: key %s: the id must be a number", where, gpt_quote_key(k, strlen(k), q, sizeof q));
        added key = {k, 0};
        const added *hit = na ? bsearch(&key, a, na, sizeof *a, cmp_added) : NULL;
        if (hit && (double)hit->id == e->valuedouble) continue; /* the added (special) token itself */
        if (gpt_blvocab_add(v, k, strlen(k), e->valuedouble, where, c->err) < 0) return -1;
    }
    return 0;
}

static int load_merges(const hfctx *c, gpt_blvocab *v, const cJSON *merges)
{
    char where[128];
    if (!cJSON_IsArray(merges)) return gpt_errf(c->err, "%s: model.merges must be an array", c->name);
    size_t i = 0;
    for (const cJSON *e = merges->child; e; e = e->next, i++) {
        snprintf(where, sizeof where, "%s: model.merges[%zu]", c->name, i);
        const char *l, *r;
        size_t ll, rl;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
                return gpt_errf(c->err, "%s: expected \"LEFT RIGHT\" (two tokens separated by one space)", where);
            l = s;
            ll = (size_t)(sp - s);
            r = sp + 1;
            rl = strlen(r);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            l = e->child->valuestring;
            r = e->child->next->valuestring;
            ll = strlen(l);
            rl = strlen(r);
        } else {
            return gpt_errf(c->err, "%s: expected a string \"LEFT RIGHT\" or a pair [\"LEFT\", \"RIGHT\"]", where);
        }
        if (gpt_blvocab_merge(v, l, ll, r, rl, where, c->err) < 0) return -1;
    }
    return 0;
}

static int load_tree(const hfctx *c, gpt_tokenizer *tk, const cJSON *root)
{
    if (!cJSON_IsObject(root)) return gpt_errf(c->err, "%s: expected a JSON object (a tokenizer.json)", c->name);
    static const char *const must_be_null[] = {"normalizer", "truncation", "padding"};
    for (int i = 0; i < 3; i++)
        if (!is_null(cJSON_GetObjectItemCaseSensitive(root, must_be_null[i])))
            return gpt_errf(c->err, "%s: %s is set, which is not supported (only null)", c->name, must_be_null[i]);
    if (check_passive(c, root, "post_processor") < 0 || check_passive(c, root, "decoder") < 0) return -1;
    const char *pattern = NULL;
    if (parse_pretokenizer(c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &pattern) < 0) return -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return gpt_errf(c->err, "%s: model is missing or not an object", c->name);
    if (check_model_options(c, model) < 0) return -1;
    int ignore_merges;
    if (get_bool(c, model, "ignore_merges", "model", 0, &ignore_merges) < 0) return -1;
    gpt_tk_set_ignore_merges(tk, ignore_merges);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    gpt_blvocab v;
    gpt_blvocab_init(&v, tk, cJSON_IsObject(vocab) ? (size_t)cJSON_GetArraySize(vocab) : 0);
    added *a = NULL;
    size_t na = 0;
    int rc = load_added(c, &v, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &a, &na);
    if (rc == 0) rc = load_vocab(c, &v, vocab, a, na);
    if (rc == 0) rc = load_merges(c, &v, cJSON_GetObjectItemCaseSensitive(model, "merges"));
    if (rc == 0) {
        char what[600];
        snprintf(what, sizeof what, "%s: model.merges", c->name);
        rc = gpt_blvocab_check_merges(&v, what, c->err);
    }
    free(a);
    gpt_blvocab_free(&v);
    /* finish's messages already start with the tokenizer's name; the pattern is copied. */
    if (rc == 0) rc = gpt_tk_finish(tk, pattern, 0, c->err);
    return rc;
}

gpt_tokenizer *gpt_load_hf_json_mem(const char *data, size_t len, const char *name, gpt_err *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data ? data : "", len, &end, 0);
    if (!root) {
        size_t off = end && data && end >= data ? (size_t)(end - data) : 0;
        gpt_errf(err, "%s: invalid JSON near byte %zu%s", name, off, off >= len ? " (the file is truncated?)" : "");
        return NULL;
    }
    hfctx c = {name, err};
    gpt_tokenizer *tk = gpt_tk_new(name);
    int rc = load_tree(&c, tk, root);
    cJSON_Delete(root);
    if (rc < 0) {
        gpt_tokenizer_free(tk);
        return NULL;
    }
    return tk;
}

gpt_tokenizer *gpt_load_hf_json(const char *path, gpt_err *err)
{
    gpt_blob b = {0};
    if (gpt_blob_read(&b, path, err) < 0) return NULL;
    gpt_tokenizer *tk = gpt_load_hf_json_mem((const char *)b.data, b.size, path, err);
    gpt_blob_free(&b);
    return tk;
}
