/* test_loaders.c: the GPT-2 (vocab.bpe + encoder.json) and Hugging Face tokenizer.json loaders.
 *
 * Oracles: t/data/hf/ (.cases files) hold the ids that the `tokenizers` library (HF fixtures) and tiktoken's
 * "gpt2" encoding (GPT-2 files) produce; scripts/make-hf-tokenizer-fixture.py writes them. The
 * GPT-2 files must also encode the shared corpus exactly like r50k_base.tiktoken. Malformed inputs
 * are built here from a minimal valid vocabulary and must fail with a message naming the place. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fileio.h"
#include "tap.h"
#include "tok_loaders.h"
#include "tokenizer.h"
#include "tokenizer_build.h"

/* ---- helpers ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Checks every case of a .cases file against tk (special tokens allowed), and decode round trips.
 * Returns the number of cases, or -1 if the file is unreadable. */
static long check_cases(const gpt_tokenizer *tk, const char *path, long *bad_ids, long *bad_rt)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    gpt_err err = {{0}};
    unsigned char *mask = NULL;
    if (gpt_special_mask(tk, "all", &mask, &err) < 0) diag("mask: %s", err.msg);
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    *bad_ids = *bad_rt = 0;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        size_t hl = (size_t)(tab - line);
        unsigned char *text = malloc(hl / 2 + 1);
        for (size_t i = 0; i + 1 < hl; i += 2) text[i / 2] = (unsigned char)(hexval(line[i]) * 16 + hexval(line[i + 1]));
        size_t tl = hl / 2;
        gpt_ids want = {0}, got = {0};
        for (char *p = tab + 1, *end; *p && *p != '\n'; p = end) {
            unsigned long v = strtoul(p, &end, 10);
            if (end == p) break;
            gpt_ids_push(&want, (uint32_t)v);
        }
        n++;
        if (gpt_encode(tk, text, tl, mask, &got, &err) < 0 || got.n != want.n ||
            (want.n && memcmp(got.v, want.v, want.n * sizeof *want.v) != 0)) {
            if (++*bad_ids <= 3) {
                diag("%s: case %ld (%.60s) differs: %zu ids, want %zu", path, n, line, got.n, want.n);
                for (size_t i = 0; i < got.n || i < want.n; i++)
                    if (i >= got.n || i >= want.n || got.v[i] != want.v[i]) {
                        diag("  first difference at %zu: got %ld want %ld", i, i < got.n ? (long)got.v[i] : -1L,
                             i < want.n ? (long)want.v[i] : -1L);
                        break;
                    }
            }
        }
        unsigned char *back = NULL;
        size_t bl = 0;
        if (gpt_decode(tk, want.v, want.n, &back, &bl, &err) < 0 || bl != tl || memcmp(back, text, tl) != 0)
            ++*bad_rt;
        free(back);
        free(text);
        gpt_ids_free(&want);
        gpt_ids_free(&got);
    }
    free(line);
    free(mask);
    fclose(f);
    return n;
}

/* ok(tk == NULL and the message contains every needle). Frees tk when it unexpectedly loaded. */
static void fails_with(gpt_tokenizer *tk, const gpt_err *err, const char *name, const char *n1, const char *n2)
{
    int good = !tk && strstr(err->msg, n1) && (!n2 || strstr(err->msg, n2));
    if (!ok(good, "%s: refused, naming the place", name))
        diag("loaded: %s; message: %s", tk ? "yes" : "no", err->msg);
    else if (getenv("TEST_VERBOSE"))
        diag("%s", err->msg);
    gpt_tokenizer_free(tk);
}

/* ---- byte-level mapping ---- */

static void test_bytelevel(void)
{
    unsigned char all[256], back[256];
    char enc[512];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
    long n = gpt_bytelevel_encode(all, 256, enc, sizeof enc);
    long m = n > 0 ? gpt_bytelevel_decode(enc, (size_t)n, back, sizeof back) : -1;
    ok(m == 256 && memcmp(all, back, 256) == 0, "all 256 bytes encode and decode back");
    /* 188 printable bytes are one UTF-8 byte or two (Latin-1); the 68 others are U+0100.. (2 bytes). */
    is_int(n, 94 + 2 * (256 - 94), "mapped length of all bytes");

    int distinct = 1;
    char a[4], b[4];
    for (int i = 0; i < 256 && distinct; i++)
        for (int j = i + 1; j < 256; j++) {
            long la = gpt_bytelevel_encode(&all[i], 1, a, 4), lb = gpt_bytelevel_encode(&all[j], 1, b, 4);
            if (la == lb && memcmp(a, b, (size_t)la) == 0) distinct = 0;
        }
    ok(distinct, "the mapping is one-to-one");

    /* Known points of GPT-2's bytes_to_unicode: space is U+0120 'Ġ', newline U+010A 'Ċ', 0x7F U+0121,
     * 0xAD (soft hyphen) U+0143 'Ń' (the last), '!' and 0xE9 themselves. */
    struct { unsigned char byte; const char *utf8; } known[] = {
        {' ', "\xC4\xA0"}, {'\n', "\xC4\x8A"}, {0x7F, "\xC4\xA1"}, {0xAD, "\xC5\x83"}, {'!', "!"}, {0xE9, "\xC3\xA9"},
        {0x00, "\xC4\x80"}, {0xA0, "\xC5\x82"}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
        long l = gpt_bytelevel_encode(&known[i].byte, 1, a, 4);
        ok(l == (long)strlen(known[i].utf8) && memcmp(a, known[i].utf8, (size_t)l) == 0, "byte 0x%02x maps as GPT-2's",
           known[i].byte);
    }
    unsigned char out[16];
    struct { const char *s; const char *why; } bad[] = {
        {" ", "a raw space"},          {"\xC5\x84", "U+0144, one past the table"}, {"\xC2\xAD", "U+00AD itself"},
        {"\xC2\x80", "U+0080"},        {"\xC4", "a cut 2-byte sequence"},         {"\xC1\x81", "an overlong form"},
        {"\xE2\x82\xAC", "a 3-byte character"}, {"\x7F", "DEL"},                 {"\xC4\xA0\xFF", "a stray 0xFF"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        is_int(gpt_bytelevel_decode(bad[i].s, strlen(bad[i].s), out, sizeof out), -1, "decode rejects %s", bad[i].why);
    is_int(gpt_bytelevel_decode("abc", 3, out, 2), -1, "decode refuses to overflow its buffer");
    is_int(gpt_bytelevel_encode(all + 200, 1, a, 1), -1, "encode refuses to overflow its buffer");
}

/* ---- Hugging Face fixtures against `tokenizers` ---- */

static void test_hf_fixtures(void)
{
    static const char *const names[] = {"bytelevel", "split-cl100k", "split-o200k-ignore-merges"};
    for (size_t i = 0; i < 3; i++) {
        char json[256], cases[256];
        snprintf(json, sizeof json, "t/data/hf/%s.json", names[i]);
        snprintf(cases, sizeof cases, "t/data/hf/%s.cases", names[i]);
        gpt_err err = {{0}};
        gpt_tokenizer *tk = gpt_load_hf_json(json, &err);
        if (!ok(tk != NULL, "%s loads", json)) {
            diag("%s", err.msg);
            continue;
        }
        long bad_ids, bad_rt, n = check_cases(tk, cases, &bad_ids, &bad_rt);
        ok(n > 200, "%s: %ld oracle cases read", cases, n);
        is_int(bad_ids, 0, "%s: ids equal the tokenizers library's in every case", names[i]);
        is_int(bad_rt, 0, "%s: decode(oracle ids) gives the input back in every case", names[i]);
        is_int(gpt_tokenizer_eot(tk), 0, "%s: <|endoftext|> is special id 0", names[i]);
        gpt_tokenizer_free(tk);

        /* The dispatcher picks this loader for a tokenizer.json. */
        tk = gpt_tokenizer_open(json, NULL, &err);
        ok(tk != NULL, "%s opens through gpt_tokenizer_open", json);
        if (!tk) diag("%s", err.msg);
        gpt_tokenizer_free(tk);
    }

    /* Non-special added tokens are exact matches too: "hello world" is one id in split-cl100k. */
    gpt_err err = {{0}};
    gpt_tokenizer *tk = gpt_load_hf_json("t/data/hf/split-cl100k.json", &err);
    if (tk) {
        is_int(gpt_tokenizer_special_id(tk, "hello world"), 600, "split-cl100k: the added token has its id");
        is_str(gpt_tokenizer_pattern(tk),
               "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
               "split-cl100k: the pattern is the Split regex");
        gpt_tokenizer_free(tk);
    }
    tk = gpt_load_hf_json("t/data/hf/bytelevel.json", &err);
    if (tk) {
        is_str(gpt_tokenizer_pattern(tk), gpt_pat_r50k, "ByteLevel use_regex: r50k's pattern");
        is_int(gpt_tokenizer_n_vocab(tk), 600, "bytelevel: n_vocab");
        is_int(gpt_tokenizer_n_ordinary(tk), 599, "bytelevel: <|endoftext|> is not an ordinary token");
        gpt_tokenizer_free(tk);
    }
}

/* ---- GPT-2 files against tiktoken and r50k_base ---- */

static void test_gpt2_shared(void)
{
    char vb[1024], ej[1024], r50k[1024], corpus[1024];
    snprintf(vb, sizeof vb, "%s/tokenizers/vocab.bpe", tap_shared());
    snprintf(ej, sizeof ej, "%s/tokenizers/encoder.json", tap_shared());
    snprintf(r50k, sizeof r50k, "%s/tokenizers/r50k_base.tiktoken", tap_shared());
    snprintf(corpus, sizeof corpus, "%s/corpus/tinyshakespeare.txt", tap_shared());
    FILE *probe = fopen(vb, "r");
    if (!probe) {
        diag("skipping the GPT-2 file checks: %s not found (set GPT_SHARED)", vb);
        return;
    }
    fclose(probe);
    gpt_err err = {{0}};
    gpt_tokenizer *g = gpt_load_gpt2_files(vb, ej, &err);
    if (!ok(g != NULL, "GPT-2 vocab.bpe + encoder.json load")) {
        diag("%s", err.msg);
        return;
    }
    is_int(gpt_tokenizer_n_vocab(g), 50257, "gpt2 files: n_vocab");
    is_int(gpt_tokenizer_n_ordinary(g), 50256, "gpt2 files: ordinary tokens");
    is_int(gpt_tokenizer_eot(g), 50256, "gpt2 files: <|endoftext|> is special 50256");
    is_str(gpt_tokenizer_pattern(g), gpt_pat_r50k, "gpt2 files: r50k's pattern");

    long bad_ids, bad_rt, n = check_cases(g, "t/data/hf/gpt2-tiktoken.cases", &bad_ids, &bad_rt);
    ok(n > 200, "gpt2-tiktoken.cases: %ld cases read", n);
    is_int(bad_ids, 0, "gpt2 files: ids equal tiktoken's gpt2 in every case");
    is_int(bad_rt, 0, "gpt2 files: decode round trips");

    /* The same through the dispatcher, from either file. */
    gpt_tokenizer *t1 = gpt_tokenizer_open(vb, NULL, &err), *t2 = gpt_tokenizer_open(ej, NULL, &err);
    ok(t1 && t2, "gpt_tokenizer_open takes vocab.bpe or encoder.json");
    gpt_tokenizer_free(t1);
    gpt_tokenizer_free(t2);

    gpt_tokenizer *r = gpt_load_tiktoken(r50k, "r50k_base", gpt_pat_r50k, &err);
    if (!ok(r != NULL, "r50k_base.tiktoken loads")) {
        diag("%s", err.msg);
        gpt_tokenizer_free(g);
        return;
    }
    long diff = 0;
    for (uint32_t id = 0; id < 50256; id++) {
        size_t la, lb;
        const unsigned char *a = gpt_tokenizer_token(g, id, &la), *b = gpt_tokenizer_token(r, id, &lb);
        if (!a || !b || la != lb || memcmp(a, b, la) != 0) diff++;
    }
    is_int(diff, 0, "every ordinary id has the same bytes in the GPT-2 files and r50k_base");

    gpt_blob c = {0};
    if (gpt_blob_read(&c, corpus, &err) == 0) {
        gpt_ids a = {0}, b = {0};
        int ra = gpt_encode(g, c.data, c.size, NULL, &a, &err), rb = gpt_encode(r, c.data, c.size, NULL, &b, &err);
        ok(ra == 0 && rb == 0 && a.n == b.n && a.n > 100000 && memcmp(a.v, b.v, a.n * sizeof *a.v) == 0,
           "the corpus encodes the same with the GPT-2 files (merge list) and r50k_base (ranks): %zu ids", a.n);
        gpt_ids_free(&a);
        gpt_ids_free(&b);
        gpt_blob_free(&c);
    } else {
        diag("skipping the corpus comparison: %s", err.msg);
    }
    gpt_tokenizer_free(r);
    gpt_tokenizer_free(g);
}

/* ---- a minimal HF tokenizer.json, then one defect at a time ---- */

static cJSON *min_hf(void)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray(), *added = cJSON_CreateArray(), *pre = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddTrueToObject(pre, "use_regex");
    cJSON_AddItemToObject(root, "pre_tokenizer", pre);
    cJSON_AddNullToObject(root, "post_processor");
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddFalseToObject(model, "ignore_merges");
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        char k[4] = {0};
        gpt_bytelevel_encode(&c, 1, k, 3);
        cJSON_AddNumberToObject(vocab, k, b);
    }
    cJSON_AddNumberToObject(vocab, "ab", 256);
    cJSON_AddNumberToObject(vocab, "abc", 257);
    cJSON_AddNumberToObject(vocab, "\xC4\xA0" "x", 258); /* " x" */
    cJSON_AddNumberToObject(vocab, "<|endoftext|>", 259);
    cJSON_AddItemToArray(merges, cJSON_CreateString("a b"));
    const char *pair[2] = {"ab", "c"};
    cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
    cJSON_AddItemToArray(merges, cJSON_CreateString("\xC4\xA0 x"));
    cJSON *eot = cJSON_CreateObject();
    cJSON_AddNumberToObject(eot, "id", 259);
    cJSON_AddStringToObject(eot, "content", "<|endoftext|>");
    cJSON_AddFalseToObject(eot, "lstrip");
    cJSON_AddTrueToObject(eot, "special");
    cJSON_AddItemToArray(added, eot);
    cJSON_AddItemToObject(root, "added_tokens", added);
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "model", model);
    return root;
}

static gpt_tokenizer *load_tree(cJSON *root, gpt_err *err)
{
    char *s = cJSON_PrintUnformatted(root);
    gpt_tokenizer *tk = gpt_load_hf_json_mem(s, strlen(s), "mem.json", err);
    free(s);
    cJSON_Delete(root);
    return tk;
}

static cJSON *at(cJSON *root, const char *a, const char *b)
{
    cJSON *j = cJSON_GetObjectItemCaseSensitive(root, a);
    return b ? cJSON_GetObjectItemCaseSensitive(j, b) : j;
}

static void set(cJSON *obj, const char *key, cJSON *value)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, value);
    else
        cJSON_AddItemToObject(obj, key, value);
}

static void test_hf_min(void)
{
    gpt_err err = {{0}};
    gpt_tokenizer *tk = load_tree(min_hf(), &err);
    if (!ok(tk != NULL, "the minimal tokenizer.json loads")) diag("%s", err.msg);
    if (tk) {
        gpt_ids ids = {0};
        gpt_encode(tk, "abc x<|endoftext|>", 18, NULL, &ids, &err);
        ok(ids.n == 15 && ids.v[0] == 257 && ids.v[1] == 258, "merges apply in order (string and pair forms)");
        gpt_ids_free(&ids);
        is_int(gpt_tokenizer_eot(tk), 259, "added token in the vocab is special");
        is_int(gpt_tokenizer_n_ordinary(tk), 259, "...and not ordinary");
        gpt_tokenizer_free(tk);
    }

    cJSON *r;
    /* Without the "ab c" merge, "abc" is a token that BPE never reaches: only the whole-word lookup
     * of ignore_merges finds it. */
    for (int ign = 0; ign < 2; ign++) {
        r = min_hf();
        cJSON_DeleteItemFromArray(at(r, "model", "merges"), 1);
        set(at(r, "model", NULL), "ignore_merges", cJSON_CreateBool(ign));
        tk = load_tree(r, &err);
        if (!tk) {
            ok(0, "ignore_merges %d loads", ign);
            diag("%s", err.msg);
            continue;
        }
        gpt_ids ids = {0};
        gpt_encode(tk, "abc", 3, NULL, &ids, &err);
        if (ign)
            ok(ids.n == 1 && ids.v[0] == 257, "ignore_merges true: the whole word is one token");
        else
            ok(ids.n == 2 && ids.v[0] == 256 && ids.v[1] == 'c', "ignore_merges false: merges only");
        gpt_ids_free(&ids);
        gpt_tokenizer_free(tk);
    }

    /* ByteLevel without its regex: the whole text is one piece, so merges cross what r50k would cut. */
    for (int use_regex = 0; use_regex < 2; use_regex++) {
        r = min_hf();
        cJSON_AddNumberToObject(at(r, "model", "vocab"), "c\xC4\xA0", 260); /* "c " */
        cJSON_AddItemToArray(at(r, "model", "merges"), cJSON_CreateString("c \xC4\xA0"));
        set(at(r, "pre_tokenizer", NULL), "use_regex", cJSON_CreateBool(use_regex));
        tk = load_tree(r, &err);
        if (!tk) {
            ok(0, "use_regex %d loads", use_regex);
            diag("%s", err.msg);
            continue;
        }
        gpt_ids ids = {0};
        gpt_encode(tk, "c y", 3, NULL, &ids, &err);
        if (use_regex)
            ok(ids.n == 3 && ids.v[0] == 'c', "use_regex true: \"c\" and \" y\" are separate pieces");
        else
            ok(ids.n == 2 && ids.v[0] == 260 && ids.v[1] == 'y', "use_regex false: one piece, \"c \" merges");
        gpt_ids_free(&ids);
        gpt_tokenizer_free(tk);
    }

    /* Each defect must be refused with the key or index named. */
    size_t len;
    char *s = cJSON_PrintUnformatted((r = min_hf()));
    cJSON_Delete(r);
    len = strlen(s);
    fails_with(gpt_load_hf_json_mem(s, len / 2, "cut.json", &err), &err, "truncated JSON", "cut.json", "invalid JSON");
    fails_with(gpt_load_hf_json_mem(s, 0, "empty.json", &err), &err, "empty file", "empty.json", "invalid JSON");
    free(s);
    fails_with(gpt_load_hf_json_mem("[1,2]", 5, "arr.json", &err), &err, "not an object", "arr.json", NULL);
    fails_with(gpt_load_hf_json_mem("{}", 2, "o.json", &err), &err, "empty object", "pre_tokenizer", NULL);

    r = min_hf();
    set(at(r, "model", NULL), "type", cJSON_CreateString("WordPiece"));
    fails_with(load_tree(r, &err), &err, "model.type WordPiece", "model.type", "WordPiece");
    r = min_hf();
    set(r, "model", cJSON_CreateString("BPE"));
    fails_with(load_tree(r, &err), &err, "model not an object", "model", NULL);
    r = min_hf();
    set(r, "normalizer", cJSON_CreateObject());
    fails_with(load_tree(r, &err), &err, "a normalizer", "normalizer", NULL);
    r = min_hf();
    set(r, "truncation", cJSON_CreateObject());
    fails_with(load_tree(r, &err), &err, "truncation", "truncation", NULL);
    r = min_hf();
    set(at(r, "pre_tokenizer", NULL), "add_prefix_space", cJSON_CreateTrue());
    fails_with(load_tree(r, &err), &err, "add_prefix_space", "add_prefix_space", NULL);
    r = min_hf();
    set(at(r, "pre_tokenizer", NULL), "use_regex", cJSON_CreateString("yes"));
    fails_with(load_tree(r, &err), &err, "use_regex of the wrong type", "use_regex", NULL);
    r = min_hf();
    set(at(r, "pre_tokenizer", NULL), "type", cJSON_CreateString("Metaspace"));
    fails_with(load_tree(r, &err), &err, "a Metaspace pre-tokenizer", "pre_tokenizer.type", "Metaspace");
    r = min_hf();
    set(r, "pre_tokenizer", cJSON_CreateNull());
    fails_with(load_tree(r, &err), &err, "no pre-tokenizer", "pre_tokenizer", NULL);
    r = min_hf();
    set(r, "post_processor", cJSON_CreateObject());
    cJSON_AddStringToObject(at(r, "post_processor", NULL), "type", "TemplateProcessing");
    fails_with(load_tree(r, &err), &err, "a TemplateProcessing post-processor", "post_processor", "TemplateProcessing");
    r = min_hf();
    set(at(r, "model", NULL), "dropout", cJSON_CreateNumber(0.1));
    fails_with(load_tree(r, &err), &err, "dropout", "model.dropout", NULL);
    r = min_hf();
    set(at(r, "model", NULL), "byte_fallback", cJSON_CreateTrue());
    fails_with(load_tree(r, &err), &err, "byte_fallback", "model.byte_fallback", NULL);
    r = min_hf();
    set(at(r, "model", NULL), "continuing_subword_prefix", cJSON_CreateString("##"));
    fails_with(load_tree(r, &err), &err, "a subword prefix", "model.continuing_subword_prefix", NULL);

    r = min_hf();
    set(at(r, "model", "vocab"), "ab", cJSON_CreateString("256"));
    fails_with(load_tree(r, &err), &err, "an id that is a string", "model.vocab", "\"ab\"");
    r = min_hf();
    set(at(r, "model", "vocab"), "ab", cJSON_CreateNumber(-1));
    fails_with(load_tree(r, &err), &err, "a negative id", "\"ab\"", "-1");
    r = min_hf();
    set(at(r, "model", "vocab"), "ab", cJSON_CreateNumber(2.5));
    fails_with(load_tree(r, &err), &err, "a fractional id", "\"ab\"", "2.5");
    r = min_hf();
    set(at(r, "model", "vocab"), "ab", cJSON_CreateNumber(1e12));
    fails_with(load_tree(r, &err), &err, "an id out of range", "\"ab\"", "not an integer");
    r = min_hf();
    set(at(r, "model", "vocab"), "ab", cJSON_CreateNumber(97));
    fails_with(load_tree(r, &err), &err, "a duplicate id", "\"ab\"", "used twice");
    r = min_hf();
    cJSON_AddNumberToObject(at(r, "model", "vocab"), "ab", 300);
    fails_with(load_tree(r, &err), &err, "a duplicate key", "\"ab\"", "appears twice");
    r = min_hf();
    cJSON_AddNumberToObject(at(r, "model", "vocab"), "a b", 300);
    fails_with(load_tree(r, &err), &err, "a raw space in a key", "\"a b\"", "byte-level");
    r = min_hf();
    cJSON_AddNumberToObject(at(r, "model", "vocab"), "\xE2\x82\xAC", 300);
    fails_with(load_tree(r, &err), &err, "a character outside the mapping", "model.vocab", "byte-level");
    r = min_hf();
    cJSON_AddNumberToObject(at(r, "model", "vocab"), "", 300);
    fails_with(load_tree(r, &err), &err, "an empty key", "model.vocab", "empty");
    r = min_hf();
    cJSON_DeleteItemFromObjectCaseSensitive(at(r, "model", "vocab"), "z");
    fails_with(load_tree(r, &err), &err, "a missing byte", "byte 0x7a", NULL);
    r = min_hf();
    set(at(r, "model", NULL), "vocab", cJSON_CreateArray());
    fails_with(load_tree(r, &err), &err, "vocab not an object", "model.vocab", NULL);

    r = min_hf();
    cJSON_AddItemToArray(at(r, "model", "merges"), cJSON_CreateString("a q\xC4\xA0"));
    fails_with(load_tree(r, &err), &err, "a merge naming an unknown token", "model.merges[3]", "not in the vocabulary");
    r = min_hf();
    cJSON_AddItemToArray(at(r, "model", "merges"), cJSON_CreateString("x y"));
    fails_with(load_tree(r, &err), &err, "a merge whose result is missing", "model.merges[3]", "\"xy\"");
    static const char *const badm[] = {"ab", "a  b", " a", "a b c"};
    for (int i = 0; i < 4; i++) {
        r = min_hf();
        cJSON_AddItemToArray(at(r, "model", "merges"), cJSON_CreateString(badm[i]));
        fails_with(load_tree(r, &err), &err, "a malformed merge string", "model.merges[3]", "LEFT RIGHT");
    }
    int nums[2] = {1, 2};
    r = min_hf();
    cJSON_AddItemToArray(at(r, "model", "merges"), cJSON_CreateIntArray(nums, 2));
    fails_with(load_tree(r, &err), &err, "a merge pair of numbers", "model.merges[3]", NULL);
    r = min_hf();
    set(at(r, "model", NULL), "merges", cJSON_CreateArray());
    fails_with(load_tree(r, &err), &err, "no merges but multi-byte tokens", "model.merges", "no merges");
    r = min_hf();
    set(at(r, "model", NULL), "merges", cJSON_CreateObject());
    fails_with(load_tree(r, &err), &err, "merges not an array", "model.merges", NULL);

    r = min_hf();
    set(cJSON_GetArrayItem(at(r, "added_tokens", NULL), 0), "lstrip", cJSON_CreateTrue());
    fails_with(load_tree(r, &err), &err, "added token with lstrip", "added_tokens[0]", "lstrip");
    r = min_hf();
    set(cJSON_GetArrayItem(at(r, "added_tokens", NULL), 0), "rstrip", cJSON_CreateString("no"));
    fails_with(load_tree(r, &err), &err, "added token with rstrip not a boolean", "added_tokens[0].rstrip", NULL);
    r = min_hf();
    set(cJSON_GetArrayItem(at(r, "added_tokens", NULL), 0), "id", cJSON_CreateNumber(97));
    fails_with(load_tree(r, &err), &err, "added token reusing an ordinary id", "used twice", NULL);
    r = min_hf();
    set(cJSON_GetArrayItem(at(r, "added_tokens", NULL), 0), "content", cJSON_CreateNumber(3));
    fails_with(load_tree(r, &err), &err, "added token content not a string", "added_tokens[0]", NULL);

    /* A Split + ByteLevel sequence: its regex is the pattern, and a bad one is reported. */
    r = min_hf();
    cJSON *seq = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON_AddStringToObject(seq, "type", "Sequence");
    cJSON *split = cJSON_CreateObject(), *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", "[a-z]+|[^a-z]+");
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddFalseToObject(bl, "add_prefix_space");
    cJSON_AddFalseToObject(bl, "use_regex");
    cJSON_AddItemToArray(arr, split);
    cJSON_AddItemToArray(arr, bl);
    set(r, "pre_tokenizer", cJSON_Duplicate(seq, 1));
    tk = load_tree(r, &err);
    ok(tk && strcmp(gpt_tokenizer_pattern(tk), "[a-z]+|[^a-z]+") == 0, "Split + ByteLevel: the Split regex is the pattern");
    if (!tk) diag("%s", err.msg);
    gpt_tokenizer_free(tk);

    cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex",
                                           cJSON_CreateString("(unclosed"));
    r = min_hf();
    set(r, "pre_tokenizer", cJSON_Duplicate(seq, 1));
    fails_with(load_tree(r, &err), &err, "a Split regex that does not compile", "mem.json", NULL);
    cJSON_ReplaceItemInObjectCaseSensitive(split, "behavior", cJSON_CreateString("Removed"));
    r = min_hf();
    set(r, "pre_tokenizer", cJSON_Duplicate(seq, 1));
    fails_with(load_tree(r, &err), &err, "Split behavior Removed", "behavior", NULL);
    cJSON_ReplaceItemInObjectCaseSensitive(split, "behavior", cJSON_CreateString("Isolated"));
    cJSON_ReplaceItemInObjectCaseSensitive(bl, "use_regex", cJSON_CreateTrue());
    r = min_hf();
    set(r, "pre_tokenizer", cJSON_Duplicate(seq, 1));
    fails_with(load_tree(r, &err), &err, "Split then ByteLevel with use_regex", "use_regex", NULL);
    cJSON_AddItemToArray(arr, cJSON_CreateObject());
    r = min_hf();
    set(r, "pre_tokenizer", cJSON_Duplicate(seq, 1));
    fails_with(load_tree(r, &err), &err, "a three-step Sequence", "Sequence", NULL);
    cJSON_Delete(seq);

    fails_with(gpt_load_hf_json("t/data/hf/no-such-file.json", &err), &err, "a missing file", "no-such-file.json", NULL);
}

/* ---- GPT-2 files from memory ---- */

/* encoder.json text for the 256 bytes plus extra entries ("key": id pairs, already JSON). */
static char *min_encoder(const char *extra)
{
    cJSON *o = cJSON_CreateObject();
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        char k[4] = {0};
        gpt_bytelevel_encode(&c, 1, k, 3);
        cJSON_AddNumberToObject(o, k, b);
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    size_t n = strlen(s);
    char *t = malloc(n + strlen(extra) + 4);
    memcpy(t, s, n);
    while (n && t[n - 1] != '}') n--; /* drop the closing brace, append the extras */
    sprintf(t + n - 1, "%s}", extra);
    free(s);
    return t;
}

static gpt_tokenizer *gpt2_mem(const char *bpe, const char *extra, gpt_err *err)
{
    char *enc = min_encoder(extra);
    gpt_tokenizer *tk = gpt_load_gpt2_mem(bpe, strlen(bpe), "vocab.bpe", enc, strlen(enc), "encoder.json", err);
    free(enc);
    return tk;
}

static void test_gpt2_min(void)
{
    gpt_err err = {{0}};
    const char *extra = ",\"ab\":256,\"abc\":257,\"<|endoftext|>\":258";
    gpt_tokenizer *tk = gpt2_mem("#version: 0.2\na b\nab c\n", extra, &err);
    if (ok(tk != NULL, "minimal GPT-2 files load")) {
        is_int(gpt_tokenizer_eot(tk), 258, "<|endoftext|> from encoder.json is special");
        is_int(gpt_tokenizer_n_ordinary(tk), 258, "...and not ordinary");
        gpt_ids ids = {0};
        gpt_encode(tk, "abc<|endoftext|>", 16, NULL, &ids, &err);
        ok(ids.n > 1 && ids.v[0] == 257 && ids.v[ids.n - 1] != 258, "special text is plain text unless allowed");
        gpt_ids_free(&ids);
        gpt_tokenizer_free(tk);
    } else {
        diag("%s", err.msg);
    }
    tk = gpt2_mem("#version: 0.2\r\na b\r\nab c", extra, &err);
    ok(tk != NULL, "CRLF line ends and no final newline are fine");
    gpt_tokenizer_free(tk);
    tk = gpt2_mem("a b\nab c\n\n", extra, &err);
    ok(tk != NULL, "no #version line, trailing blank line: fine");
    gpt_tokenizer_free(tk);

    fails_with(gpt2_mem("#version: 0.2\na b\nab c d\n", extra, &err), &err, "vocab.bpe: three fields", "vocab.bpe:3",
               "LEFT RIGHT");
    fails_with(gpt2_mem("#version: 0.2\na b\nabc\n", extra, &err), &err, "vocab.bpe: one field", "vocab.bpe:3", NULL);
    fails_with(gpt2_mem("#version: 0.2\na  b\n", extra, &err), &err, "vocab.bpe: two spaces", "vocab.bpe:2", NULL);
    fails_with(gpt2_mem("#version: 0.2\n\na b\n", extra, &err), &err, "vocab.bpe: blank line inside", "vocab.bpe:2",
               "empty line");
    fails_with(gpt2_mem("#version: 0.2\na b\nab q\xC4\xA0\n", extra, &err), &err, "vocab.bpe: unknown token",
               "vocab.bpe:3", "not in the vocabulary");
    fails_with(gpt2_mem("#version: 0.2\nb c\n", extra, &err), &err, "vocab.bpe: merge result missing", "vocab.bpe:2",
               "\"bc\"");
    fails_with(gpt2_mem("#version: 0.2\na \xFF\n", extra, &err), &err, "vocab.bpe: invalid UTF-8", "vocab.bpe:2", NULL);

    fails_with(gpt2_mem("#version: 0.2\n", extra, &err), &err, "vocab.bpe: no merges", "vocab.bpe", "no merges");
    fails_with(gpt2_mem("", ",\"ab\":\"256\"", &err), &err, "encoder.json: id a string", "encoder.json", "\"ab\"");
    fails_with(gpt2_mem("", ",\"ab\":1e10", &err), &err, "encoder.json: id too large", "encoder.json", "\"ab\"");
    fails_with(gpt2_mem("", ",\"ab\":98", &err), &err, "encoder.json: duplicate id", "\"ab\"", "used twice");
    fails_with(gpt2_mem("", ",\"a\":300", &err), &err, "encoder.json: duplicate key", "\"a\"", "appears twice");
    fails_with(gpt2_mem("", ",\"a\\u0020b\":300", &err), &err, "encoder.json: unmapped character", "\"a b\"",
               "byte-level");
    fails_with(gpt2_mem("", ",\"<|endoftext|>\":-5", &err), &err, "encoder.json: bad special id", "<|endoftext|>",
               NULL);
    fails_with(gpt2_mem("", ",\"ab\":256,\"abc\":257,\"abcd\":1000000000", &err), &err, "encoder.json: id out of range",
               "\"abcd\"", NULL);
    const char *arr = "[1,2,3]";
    fails_with(gpt_load_gpt2_mem("", 0, "vocab.bpe", arr, strlen(arr), "encoder.json", &err), &err,
               "encoder.json: not an object", "encoder.json", "object");
    char *enc = min_encoder("");
    fails_with(gpt_load_gpt2_mem("", 0, "vocab.bpe", enc, strlen(enc) - 40, "encoder.json", &err), &err,
               "encoder.json: truncated", "encoder.json", "invalid JSON");
    free(enc);
    fails_with(gpt_load_gpt2_files("t/data/hf/none.bpe", "t/data/hf/none.json", &err), &err, "missing files",
               "none.bpe", NULL);
}

int main(void)
{
    test_bytelevel();
    test_hf_fixtures();
    test_hf_min();
    test_gpt2_min();
    test_gpt2_shared();
    return done_testing();
}
