/* The BPE core: both merge loops agree, special tokens, decode errors, vocabulary checks,
 * parallel == serial. Conformance with tiktoken itself is t/tokenizer-fixtures.t. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tap.h"
#include "tokenizer.h"
#include "tokenizer_build.h"

void gpt_bpe_merge_loop(const gpt_tokenizer *tk, const unsigned char *p, size_t n, int large, gpt_ids *out);

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static int same_ids(const gpt_ids *a, const gpt_ids *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

/* A small vocabulary built by hand: bytes, then a few merges. */
static gpt_tokenizer *toy(int with_merges, gpt_err *err)
{
    gpt_tokenizer *tk = gpt_tk_new("toy");
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        gpt_tk_add_token(tk, (uint32_t)b, &c, 1, err);
    }
    const char *extra[] = {"ab", "abc", "bc", "aa", "aaaa", "  ", "hello", "he", "ll", "llo", "hell"};
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++)
        gpt_tk_add_token(tk, 256 + (uint32_t)i, extra[i], strlen(extra[i]), err);
    if (with_merges) {
        /* HF order differs from the ids on purpose: "bc" merges before "ab". */
        gpt_tk_add_merge(tk, 'b', 'c', err);
        gpt_tk_add_merge(tk, 'a', 'b', err);
    }
    gpt_tk_add_special(tk, "<|endoftext|>", 300, err);
    gpt_tk_add_special(tk, "<|end|>", 301, err);
    if (gpt_tk_finish(tk, gpt_pat_o200k, 310, err) < 0) {
        gpt_tokenizer_free(tk);
        return NULL;
    }
    return tk;
}

static void test_toy(void)
{
    gpt_err err;
    gpt_tokenizer *tk = toy(0, &err);
    if (!ok(tk != NULL, "toy vocabulary builds")) {
        diag("%s", err.msg);
        return;
    }
    gpt_ids ids = {0};
    /* tiktoken rule: "abc" is a token: whole-piece hit. "xabc": x + abc via lowest rank ab(256) then abc. */
    gpt_encode(tk, "xabc", 4, NULL, &ids, &err);
    ok(ids.n == 2 && ids.v[0] == 'x' && ids.v[1] == 257, "rank BPE merges ab then abc");
    ids.n = 0;
    gpt_encode(tk, "aaaaa", 5, NULL, &ids, &err);
    ok(ids.n == 2 && ids.v[0] == 260 && ids.v[1] == 'a', "leftmost merge wins ties (aaaa + a)");
    ids.n = 0;
    const char *s = "x<|endoftext|>y<|end|>";
    gpt_encode(tk, s, strlen(s), NULL, &ids, &err);
    int has_special = 0;
    for (size_t i = 0; i < ids.n; i++) has_special |= ids.v[i] >= 300;
    ok(!has_special && ids.n > 4, "special text is plain text by default");
    unsigned char *all = NULL;
    is_int(gpt_special_mask(tk, "all", &all, &err), 0, "--special all");
    ids.n = 0;
    gpt_encode(tk, s, strlen(s), all, &ids, &err);
    ok(ids.n == 4 && ids.v[0] == 'x' && ids.v[1] == 300 && ids.v[2] == 'y' && ids.v[3] == 301,
       "allowed specials encode as their ids");
    free(all);
    unsigned char *some = NULL;
    is_int(gpt_special_mask(tk, "end", &some, &err), 0, "--special end (short name)");
    ids.n = 0;
    gpt_encode(tk, s, strlen(s), some, &ids, &err);
    ok(ids.n > 4 && ids.v[ids.n - 1] == 301, "only the listed special is recognised");
    free(some);
    ok(gpt_special_mask(tk, "nosuch", &some, &err) < 0 && strstr(err.msg, "nosuch"), "unknown special named");
    size_t len;
    const unsigned char *t = gpt_tokenizer_token(tk, 305, &len);
    ok(t && len == strlen("<|reserved_305|>") && memcmp(t, "<|reserved_305|>", len) == 0,
       "undefined ids below n_vocab decode as <|reserved_N|>");
    uint32_t bad[] = {'a', 'b', 310};
    unsigned char *out;
    size_t outlen;
    ok(gpt_decode(tk, bad, 3, &out, &outlen, &err) < 0 && strstr(err.msg, "310") && strstr(err.msg, "position 2"),
       "out-of-range id is an error naming the id and position: %s", err.msg);
    gpt_ids_free(&ids);
    gpt_tokenizer_free(tk);

    tk = toy(1, &err);
    if (!ok(tk != NULL, "toy vocabulary with merges builds")) return;
    gpt_encode_piece(tk, (const unsigned char *)"abc", 3, &ids);
    ok(ids.n == 2 && ids.v[0] == 'a' && ids.v[1] == 258, "merge-list BPE follows merge order, not ids (a + bc)");
    gpt_ids_free(&ids);
    gpt_tokenizer_free(tk);
}

static void test_bad_vocab(void)
{
    gpt_err err;
    gpt_tokenizer *tk = gpt_tk_new("bad");
    for (int b = 0; b < 255; b++) {
        unsigned char c = (unsigned char)b;
        gpt_tk_add_token(tk, (uint32_t)b, &c, 1, &err);
    }
    ok(gpt_tk_finish(tk, gpt_pat_o200k, 0, &err) < 0 && strstr(err.msg, "0xff"), "missing byte token is named: %s",
       err.msg);
    gpt_tokenizer_free(tk);

    tk = gpt_tk_new("dup");
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        gpt_tk_add_token(tk, (uint32_t)b, &c, 1, &err);
    }
    gpt_tk_add_token(tk, 256, "ab", 2, &err);
    gpt_tk_add_token(tk, 257, "ab", 2, &err);
    ok(gpt_tk_finish(tk, gpt_pat_o200k, 0, &err) < 0 && strstr(err.msg, "same bytes"), "duplicate bytes: %s", err.msg);
    gpt_tokenizer_free(tk);

    tk = gpt_tk_new("badre");
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        gpt_tk_add_token(tk, (uint32_t)b, &c, 1, &err);
    }
    ok(gpt_tk_finish(tk, "(unclosed", 0, &err) < 0 && strstr(err.msg, "pattern"), "bad regex: %s", err.msg);
    gpt_tokenizer_free(tk);

    tk = gpt_tk_new("tt");
    const char *junk = "YQ== 0\nnot-base64! 1\n";
    ok(gpt_parse_tiktoken(tk, (const unsigned char *)junk, strlen(junk), "x.tiktoken", &err) < 0 &&
           strstr(err.msg, "x.tiktoken:2"),
       "bad rank file line is named: %s", err.msg);
    gpt_tokenizer_free(tk);
}

static gpt_tokenizer *shared_tk(const char *name)
{
    gpt_err err;
    gpt_tokenizer *tk = gpt_tokenizer_open(name, NULL, &err);
    if (!tk) diag("%s", err.msg);
    return tk;
}

static int read_file(const char *path, unsigned char **data, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(*n + 1);
    size_t got = fread(*data, 1, *n, f);
    fclose(f);
    return got == *n ? 0 : -1;
}

static void test_shared(void)
{
    char dir[4096], corpus[4096];
    snprintf(dir, sizeof dir, "%s/tokenizers", tap_shared());
    snprintf(corpus, sizeof corpus, "%s/corpus/tinyshakespeare.txt", tap_shared());
    setenv("GPT_TOKENIZER_PATH", dir, 1);
    unsigned char *text;
    size_t n;
    gpt_tokenizer *tk = NULL;
    if (read_file(corpus, &text, &n) < 0 || !(tk = shared_tk("o200k_base"))) {
        ok(1, "# SKIP shared tokenizers/corpus absent under %s", tap_shared());
        return;
    }
    gpt_err err;
    /* Both merge loops on random pieces of real and random bytes. */
    int same = 1;
    for (int k = 0; k < 3000 && same; k++) {
        size_t len = 2 + rnd() % 300;
        unsigned char buf[400];
        if (k % 2) {
            size_t at = rnd() % (n - len);
            memcpy(buf, text + at, len);
        } else {
            for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)("ab \n\xe4\xb8\x80x"[rnd() % 8]);
        }
        gpt_ids a = {0}, b = {0};
        gpt_bpe_merge_loop(tk, buf, len, 0, &a);
        gpt_bpe_merge_loop(tk, buf, len, 1, &b);
        same = same_ids(&a, &b);
        unsigned char *dec;
        size_t dl;
        gpt_decode(tk, b.v, b.n, &dec, &dl, &err);
        same = same && dl == len && memcmp(dec, buf, len) == 0;
        free(dec);
        gpt_ids_free(&a);
        gpt_ids_free(&b);
    }
    ok(same, "quadratic and heap merge loops give the same tokens");

    gpt_ids one = {0}, two = {0};
    gpt_encode(tk, text, n, NULL, &one, &err);
    gpt_encode_parallel(tk, text, n, NULL, 2, &two, &err);
    /* force many small chunks too: the corpus repeated */
    ok(same_ids(&one, &two), "parallel encoding equals serial on the corpus (%zu tokens)", one.n);
    size_t big_n = n * 4;
    unsigned char *big = malloc(big_n);
    for (int i = 0; i < 4; i++) memcpy(big + i * n, text, n);
    gpt_ids b1 = {0}, b4 = {0};
    gpt_encode(tk, big, big_n, NULL, &b1, &err);
    gpt_encode_parallel(tk, big, big_n, NULL, 4, &b4, &err);
    ok(same_ids(&b1, &b4), "4 threads on 4 MB equal 1 thread");
    gpt_ids_free(&b1);
    gpt_ids_free(&b4);
    free(big);

    /* A megabyte of one character: the heap loop keeps it near-linear. */
    size_t mb = 1 << 20;
    unsigned char *run = malloc(mb);
    memset(run, 'a', mb);
    clock_t c0 = clock();
    gpt_ids r = {0};
    gpt_encode(tk, run, mb, NULL, &r, &err);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    unsigned char *dec;
    size_t dl;
    gpt_decode(tk, r.v, r.n, &dec, &dl, &err);
    ok(dl == mb && memcmp(dec, run, mb) == 0, "1 MB of 'a' round-trips (%zu tokens, %.2f s)", r.n, secs);
    free(dec);
    gpt_ids_free(&r);
    free(run);

    /* Invalid UTF-8 is kept byte for byte. */
    int rt = 1;
    for (int k = 0; k < 500 && rt; k++) {
        unsigned char buf[256];
        size_t len = rnd() % 256;
        for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rnd();
        gpt_ids ids = {0};
        if (gpt_encode(tk, buf, len, NULL, &ids, &err) < 0) rt = 0;
        gpt_decode(tk, ids.v, ids.n, &dec, &dl, &err);
        rt = rt && dl == len && (len == 0 || memcmp(dec, buf, len) == 0);
        free(dec);
        gpt_ids_free(&ids);
    }
    ok(rt, "random bytes round-trip encode -> decode");

    gpt_ids_free(&one);
    gpt_ids_free(&two);
    gpt_tokenizer_free(tk);

    tk = shared_tk("o200k_harmony");
    if (ok(tk != NULL, "o200k_harmony opens")) {
        is_int(gpt_tokenizer_n_vocab(tk), 201088, "o200k_harmony n_vocab");
        is_int(gpt_tokenizer_special_id(tk, "<|return|>"), 200002, "<|return|>");
        is_int(gpt_tokenizer_special_id(tk, "<|call|>"), 200012, "<|call|>");
        is_int(gpt_tokenizer_special_id(tk, "<|reserved_201087|>"), 201087, "last reserved id");
        is_int(gpt_tokenizer_eot(tk), 199999, "<|endoftext|>");
        gpt_tokenizer_free(tk);
    }
    setenv("GPT_TOKENIZER_PATH", "/nonexistent-dir", 1);
    gpt_err e2;
    ok(gpt_tokenizer_open("cl100k_base", NULL, &e2) == NULL && strstr(e2.msg, "/nonexistent-dir") &&
           strstr(e2.msg, "fetch-tokenizers"),
       "a missing rank file says where it looked and how to get it");
    free(text);
}

int main(void)
{
    test_toy();
    test_bad_vocab();
    test_shared();
    return done_testing();
}
