/* Safetensors reader/writer against files written by the reference implementation (PyPI safetensors,
 * via scripts/make-st-fixtures.py, expectations in t/data/st/expected.txt), a writer round trip checked by
 * the reference reader when python3 has safetensors + numpy, and a battery of malformed inputs. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "safetensors.h"
#include "tap.h"

#define DATA "t/data/st"

/* ---- helpers ---- */

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decode hex into a malloc'd buffer; "-" is empty. */
static unsigned char *unhex(const char *s, size_t *n)
{
    size_t len = strcmp(s, "-") == 0 ? 0 : strlen(s);
    unsigned char *b = malloc(len / 2 + 1);
    for (size_t i = 0; i + 1 < len; i += 2) b[i / 2] = (unsigned char)(hexval(s[i]) << 4 | hexval(s[i + 1]));
    *n = len / 2;
    return b;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
}

/* A safetensors image from a header string and n_data bytes of data (bytes 0, 1, 2, ...). */
static unsigned char *mk(const char *hdr, size_t n_data, size_t *n)
{
    size_t h = strlen(hdr);
    unsigned char *b = malloc(8 + h + n_data + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < n_data; i++) b[8 + h + i] = (unsigned char)i;
    *n = 8 + h + n_data;
    return b;
}

/* ---- fixtures from the reference writer ---- */

static int check_expected(void)
{
    FILE *ef = fopen(DATA "/expected.txt", "r");
    if (!ef) {
        ok(0, "open " DATA "/expected.txt (run scripts/make-st-fixtures.py)");
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    gpt_st_file *f = NULL;
    const gpt_st_tensor *t = NULL;
    size_t ntensors = 0, nmeta = 0, nfiles = 0;
    int bad = 0;
    char fname[256] = "";
    gpt_err err = {{0}};
    /* Per file: one ok() for the whole file so the count stays stable; diag says what differs. */
#define FAIL(...) (diag(__VA_ARGS__), bad++)
#define END_FILE()                                                                                           \
    do {                                                                                                     \
        if (f) {                                                                                             \
            if (gpt_st_count(f) != ntensors) FAIL("%s: %zu tensors, expected %zu", fname, gpt_st_count(f), ntensors); \
            if (gpt_st_meta_count(f) != nmeta) FAIL("%s: %zu metadata entries, expected %zu", fname, gpt_st_meta_count(f), nmeta); \
            ok(bad == 0, "reference file %s: %zu tensors, names, dtypes, shapes, bytes, f32 values", fname, ntensors); \
            gpt_st_close(f);                                                                                 \
            f = NULL;                                                                                        \
        }                                                                                                    \
    } while (0)
    while (getline(&line, &cap, ef) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || !line[0]) continue;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = '\0';
        char *rest = sp + 1;
        if (strcmp(line, "file") == 0) {
            END_FILE();
            bad = 0, ntensors = nmeta = 0, t = NULL;
            snprintf(fname, sizeof fname, "%s", rest);
            char path[512];
            snprintf(path, sizeof path, DATA "/%s", rest);
            f = gpt_st_open(path, &err);
            if (!f) FAIL("open %s: %s", path, err.msg);
            nfiles++;
        } else if (!f) {
            continue;
        } else if (strcmp(line, "meta") == 0) {
            char *v = strchr(rest, ' ');
            *v++ = '\0';
            const char *got = gpt_st_meta(f, rest);
            if (!got || strcmp(got, v) != 0) FAIL("%s: metadata %s = '%s', expected '%s'", fname, rest, got ? got : "(none)", v);
            nmeta++;
        } else if (strcmp(line, "tensor") == 0) {
            char name[256], dt[32];
            int nd, used = 0;
            sscanf(rest, "%255s %31s %d%n", name, dt, &nd, &used);
            ntensors++;
            t = gpt_st_find(f, name);
            if (!t) {
                FAIL("%s: tensor %s not found", fname, name);
                continue;
            }
            if (strcmp(gpt_st_dtype_name(t->dtype), dt) != 0) FAIL("%s: %s dtype %s, expected %s", fname, name, gpt_st_dtype_name(t->dtype), dt);
            if (t->ndim != nd) FAIL("%s: %s ndim %d, expected %d", fname, name, t->ndim, nd);
            char *p = rest + used;
            uint64_t numel = 1;
            for (int i = 0; i < nd && i < t->ndim; i++) {
                unsigned long long d = strtoull(p, &p, 10);
                numel *= d;
                if (t->shape[i] != d) FAIL("%s: %s shape[%d] = %llu, expected %llu", fname, name, i, (unsigned long long)t->shape[i], d);
            }
            if (t->numel != numel) FAIL("%s: %s numel %llu, expected %llu", fname, name, (unsigned long long)t->numel, (unsigned long long)numel);
        } else if (strcmp(line, "bytes") == 0 && t) {
            size_t n;
            unsigned char *want = unhex(rest, &n);
            if (t->nbytes != n || (n && memcmp(t->data, want, n) != 0)) FAIL("%s: %s data bytes differ (%zu vs %zu bytes)", fname, t->name, t->nbytes, n);
            free(want);
        } else if (strcmp(line, "f32") == 0 && t) {
            size_t n = (size_t)t->numel;
            float *got = malloc((n ? n : 1) * sizeof *got);
            if (gpt_st_read_f32(t, got, n, &err) != 0) {
                FAIL("%s: read_f32 %s: %s", fname, t->name, err.msg);
            } else {
                char *p = rest;
                for (size_t i = 0; i < n; i++) {
                    uint32_t w = (uint32_t)strtoul(p, &p, 16), g = f2u(got[i]);
                    int same = g == w || (isnan(u2f(w)) && isnan(got[i]));
                    if (!same) {
                        FAIL("%s: %s[%zu] = %08x (%g), expected %08x (%g)", fname, t->name, i, g, got[i], w, u2f(w));
                        break;
                    }
                }
            }
            free(got);
        }
    }
    END_FILE();
    free(line);
    fclose(ef);
    ok(nfiles >= 4, "expected.txt described %zu fixture files", nfiles);
    return 0;
#undef FAIL
#undef END_FILE
}

static void check_basic_api(void)
{
    gpt_err err = {{0}};
    gpt_st_file *f = gpt_st_open(DATA "/basic.safetensors", &err);
    if (!ok(f != NULL, "open basic.safetensors")) {
        diag("%s", err.msg);
        return;
    }
    const gpt_st_tensor *s = gpt_st_find(f, "scalar");
    ok(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 4, "scalar tensor: ndim 0, one element");
    const gpt_st_tensor *e = gpt_st_find(f, "empty");
    ok(e && e->ndim == 2 && e->numel == 0 && e->nbytes == 0, "empty tensor [0, 4]: no elements");
    ok(gpt_st_find(f, "nope") == NULL && gpt_st_find(f, "") == NULL, "missing names are not found");
    ok(gpt_st_find(f, "\xc3\xbcnic\xc3\xb6" "de.weight") != NULL, "a UTF-8 tensor name is found");
    const gpt_st_tensor *i32 = gpt_st_find(f, "i32");
    float buf[4];
    ok(i32 && gpt_st_read_f32(i32, buf, 4, &err) == -1 && strstr(err.msg, "I32") && strstr(err.msg, "'i32'"),
       "read_f32 of an I32 tensor fails naming tensor and dtype: %s", err.msg);
    const gpt_st_tensor *w = gpt_st_find(f, "model.embed_tokens.weight");
    ok(w && gpt_st_read_f32(w, buf, 4, &err) == -1 && strstr(err.msg, "expects 4"),
       "read_f32 with the wrong count fails: %s", err.msg);
    size_t n = 0;
    for (size_t i = 0; i < gpt_st_count(f); i++) n += gpt_st_find(f, gpt_st_tensor_at(f, i)->name) == gpt_st_tensor_at(f, i);
    is_int(n, gpt_st_count(f), "iteration and lookup agree on every tensor");
    const char *k, *v;
    ok(gpt_st_meta_at(f, 0, &k, &v) == 0 && gpt_st_meta_at(f, 2, &k, &v) == -1, "metadata iteration bounds");
    gpt_st_close(f);
}

/* ---- conversions ---- */

static void check_conversions(void)
{
    /* Every half value against its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024. */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        float want;
        if (e == 31)
            want = m ? NAN : INFINITY;
        else if (e == 0)
            want = ldexpf((float)m, -24);
        else
            want = ldexpf(1.0f + (float)m / 1024.0f, e - 15);
        if (s) want = -want;
        float got = gpt_f16_to_f32((uint16_t)h);
        if (isnan(want) ? !isnan(got) || signbit(got) != signbit(want) : f2u(got) != f2u(want)) {
            if (bad++ < 5) diag("f16 %04x -> %08x, want %08x", h, f2u(got), f2u(want));
        }
    }
    ok(bad == 0, "all 65536 f16 values convert exactly (subnormals, signed zeros, inf, nan)");
    bad = 0;
    for (uint32_t b = 0; b < 65536; b++)
        if (f2u(gpt_bf16_to_f32((uint16_t)b)) != b << 16) bad++;
    ok(bad == 0, "all bf16 values convert by the 16-bit shift");
    ok(gpt_f32_to_bf16(1.0f) == 0x3f80 && gpt_f32_to_bf16(u2f(0x3f808000)) == 0x3f80 &&
           gpt_f32_to_bf16(u2f(0x3f818000)) == 0x3f82 && gpt_f32_to_bf16(u2f(0x3f808001)) == 0x3f81 &&
           gpt_f32_to_bf16(u2f(0x7f7fffff)) == 0x7f80 && (gpt_f32_to_bf16(NAN) & 0x7fc0) == 0x7fc0,
       "f32 -> bf16 rounds to nearest even, overflows to inf, keeps NaN");
}

/* ---- sharded sets ---- */

static char tmpdir[256];

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%.200s", tmpdir, name);
}

static void check_sets(void)
{
    gpt_err err = {{0}};
    gpt_st_set *s = gpt_st_open_dir(DATA "/sharded", &err);
    if (ok(s != NULL, "open sharded directory")) {
        is_int(gpt_st_set_count(s), 4, "sharded set has 4 tensors");
        is_int(gpt_st_set_nfiles(s), 2, "from 2 shards");
        const gpt_st_tensor *t = gpt_st_set_find(s, "ln_f.weight");
        ok(t && strstr(gpt_st_file_name(t->file), "model-00002-of-00002.safetensors") != NULL,
           "ln_f.weight comes from the shard the index maps it to");
        ok(gpt_st_set_find(s, "wte.weight") && !gpt_st_set_find(s, "nope"), "set lookup");
        gpt_st_set_close(s);
    } else {
        diag("%s", err.msg);
    }
    s = gpt_st_open_dir(DATA "/sharded/model.safetensors.index.json", &err);
    ok(s && gpt_st_set_count(s) == 4, "open the index file directly");
    gpt_st_set_close(s);
    s = gpt_st_open_dir(DATA "/basic.safetensors", &err);
    ok(s && gpt_st_set_nfiles(s) == 1 && gpt_st_set_find(s, "i8"), "open a single file as a set");
    gpt_st_set_close(s);

    /* A directory holding model.safetensors. */
    char d[512], p[600];
    tmp_path(d, sizeof d, "single");
    mkdir(d, 0700);
    gpt_blob b;
    if (gpt_blob_read(&b, DATA "/basic.safetensors", &err) == 0) {
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        write_file(p, b.data, b.size);
        gpt_blob_free(&b);
    }
    s = gpt_st_open_dir(d, &err);
    ok(s && gpt_st_set_find(s, "scalar"), "open a directory with model.safetensors");
    gpt_st_set_close(s);
    tmp_path(d, sizeof d, "emptydir");
    mkdir(d, 0700);
    s = gpt_st_open_dir(d, &err);
    ok(!s && strstr(err.msg, "neither"), "a directory without model files: %s", err.msg);

    /* Bad indexes: each in its own directory next to a real shard. */
    static const struct {
        const char *index, *want;
    } bad[] = {
        {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", "plain file names"},
        {"{\"weight_map\":{\"a\":\"sub/x.safetensors\"}}", "plain file names"},
        {"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", "plain file names"},
        {"{\"weight_map\":{\"a\":\"..\"}}", "plain file names"},
        {"{\"weight_map\":{\"a\":\"\"}}", "plain file names"},
        {"{\"weight_map\":{\"a\":3}}", "not a string"},
        {"{\"weight_map\":{\"a\":\"missing.safetensors\"}}", "cannot open"},
        {"{\"weight_map\":{\"absent\":\"s1.safetensors\"}}", "does not contain"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"a\":\"s1.safetensors\"}}", "twice"},
        {"{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}", "two shards"},
        {"{\"weight_map\":{}}", "weight_map"},
        {"{\"metadata\":{}}", "weight_map"},
        {"[1,2]", "not a JSON object"},
        {"{\"weight_map\":{\"a\":\"s1.safe", "not valid JSON"},
    };
    size_t n1, n2;
    /* s1 holds a and b; s2 holds b too (the "two shards" case). */
    unsigned char *s1 = mk("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                           "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3, &n1);
    unsigned char *s2 = mk("{\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, &n2);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "idx%zu", i);
        tmp_path(d, sizeof d, sub);
        mkdir(d, 0700);
        snprintf(p, sizeof p, "%s/s1.safetensors", d);
        write_file(p, s1, n1);
        snprintf(p, sizeof p, "%s/s2.safetensors", d);
        write_file(p, s2, n2);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
        write_file(p, bad[i].index, strlen(bad[i].index));
        err.msg[0] = '\0';
        s = gpt_st_open_dir(d, &err);
        ok(!s && strstr(err.msg, bad[i].want) && strstr(err.msg, "index.json"), "bad index %s: %s", bad[i].index,
           err.msg);
        gpt_st_set_close(s);
    }
    /* The same shards with a consistent index load. */
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    const char *good = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\"}}";
    snprintf(p, sizeof p, "%s/s2.safetensors", d);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    write_file(p, good, strlen(good));
    s = gpt_st_open_dir(d, &err);
    ok(s && gpt_st_set_count(s) == 2, "a consistent index over the same shard loads%s%s", s ? "" : ": ", s ? "" : err.msg);
    gpt_st_set_close(s);
    free(s1);
    free(s2);
}

/* ---- malformed files ---- */

static void expect_fail(const unsigned char *buf, size_t n, const char *want, const char *what)
{
    /* An exact-size copy so ASan sees any read past the end. */
    unsigned char *copy = malloc(n ? n : 1);
    memcpy(copy, buf, n);
    gpt_err err = {{0}};
    gpt_st_file *f = gpt_st_open_mem(copy, n, "bad.safetensors", &err);
    ok(!f && strstr(err.msg, want) && strstr(err.msg, "bad.safetensors"), "%s: %s", what, err.msg);
    gpt_st_close(f);
    free(copy);
}

static void expect_fail_hdr(const char *hdr, size_t n_data, const char *want, const char *what)
{
    size_t n;
    unsigned char *b = mk(hdr, n_data, &n);
    expect_fail(b, n, want, what);
    free(b);
}

static void check_malformed(void)
{
    gpt_err err = {{0}};
    gpt_blob b;
    if (gpt_blob_read(&b, DATA "/basic.safetensors", &err) != 0) {
        ok(0, "read basic.safetensors: %s", err.msg);
        return;
    }
    int crashes_none = 1, all_failed = 1;
    for (size_t k = 0; k < b.size; k++) {
        unsigned char *copy = malloc(k ? k : 1);
        memcpy(copy, b.data, k);
        gpt_st_file *f = gpt_st_open_mem(copy, k, "trunc", &err);
        if (f || !err.msg[0]) {
            if (all_failed) diag("truncation at %zu bytes was accepted", k);
            all_failed = 0;
        }
        gpt_st_close(f);
        free(copy);
    }
    ok(all_failed && crashes_none, "every truncation of basic.safetensors (%zu lengths) is rejected with a message",
       b.size);
    gpt_st_file *f = gpt_st_open_mem(b.data, b.size, "whole", &err);
    ok(f != NULL, "the untruncated image is accepted");
    gpt_st_close(f);

    /* Header length fields. */
    unsigned char *m = malloc(b.size);
    memcpy(m, b.data, b.size);
    memset(m, 0, 8);
    m[5] = 1; /* 2^40 */
    expect_fail(m, b.size, "limit", "header length 2^40");
    memset(m, 0, 8);
    m[0] = (unsigned char)(b.size - 7), m[1] = (unsigned char)((b.size - 7) >> 8);
    expect_fail(m, b.size, "exceeds the file", "header length past the end of the file");
    memset(m, 0xff, 8);
    expect_fail(m, b.size, "limit", "header length 2^64-1");
    free(m);
    gpt_blob_free(&b);

    const char *F1 = "\"dtype\":\"F32\",\"shape\":[1],";
    char h[1024];
    expect_fail_hdr("{\"a\":", 0, "not valid JSON", "truncated JSON");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}", 4, "not valid JSON",
                    "trailing comma");
    expect_fail_hdr("[1,2]", 0, "start with '{'", "array header");
    expect_fail_hdr("{} x", 0, "trailing", "bytes after the JSON object");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype 'F33'",
                    "unknown dtype");
    expect_fail_hdr("{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, "tensor 'w'",
                    "unknown dtype names the tensor");
    expect_fail_hdr("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype", "numeric dtype");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8",
                    "shape/offset size mismatch");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]",
                    "negative dimension");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]",
                    "fractional dimension");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape[0]",
                    "absurd dimension");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]",
                    "string dimension");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,65536],\"data_offsets\":[0,4]}}",
                    4, "too large", "shape product overflows");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F64\",\"shape\":[4503599627370496,1024],\"data_offsets\":[0,4]}}", 4,
                    "too large", "byte size overflows");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                    "dimensions", "9 dimensions");
    expect_fail_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "shape", "shape not an array");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,16]}}", F1);
    expect_fail_hdr(h, 8, "outside", "offsets past the end");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[4,0]}}", F1);
    expect_fail_hdr(h, 4, "outside", "begin > end");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0]}}", F1);
    expect_fail_hdr(h, 4, "data_offsets", "one offset");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4,8]}}", F1);
    expect_fail_hdr(h, 8, "data_offsets", "three offsets");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
             "\"data_offsets\":[2,10]}}", F1);
    expect_fail_hdr(h, 10, "overlaps", "overlapping tensors");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4]},\"b\":{%s\"data_offsets\":[0,4]}}", F1, F1);
    expect_fail_hdr(h, 4, "overlaps", "two tensors on the same bytes");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4]},\"b\":{%s\"data_offsets\":[8,12]}}", F1, F1);
    expect_fail_hdr(h, 12, "belong to no tensor", "gap between tensors");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4]}}", F1);
    expect_fail_hdr(h, 5, "after the last tensor", "trailing data");
    expect_fail_hdr("{}", 3, "no tensors", "data without tensors");
    snprintf(h, sizeof h, "{\"a\":{%s\"data_offsets\":[0,4]},\"a\":{%s\"data_offsets\":[4,8]}}", F1, F1);
    expect_fail_hdr(h, 8, "appears twice", "duplicate names");
    snprintf(h, sizeof h, "{\"\":{%s\"data_offsets\":[0,4]}}", F1);
    expect_fail_hdr(h, 4, "empty name", "empty name");
    expect_fail_hdr("{\"a\":[1]}", 0, "not a JSON object", "tensor entry not an object");
    expect_fail_hdr("{\"__metadata__\":{\"k\":1}}", 0, "not a string", "non-string metadata value");
    expect_fail_hdr("{\"__metadata__\":[\"k\"]}", 0, "__metadata__", "metadata not an object");
    expect_fail_hdr("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice", "two metadata objects");
    expect_fail_hdr("{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "UTF-8", "invalid UTF-8");
    expect_fail_hdr("{\"a\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "UTF-8",
                    "overlong UTF-8");
    expect_fail_hdr("{\"a\xed\xa0\x80\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, "UTF-8",
                    "UTF-8 surrogate");
    {
        size_t n;
        unsigned char *x = mk("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, &n);
        x[10] = '\0';
        expect_fail(x, n, "NUL", "NUL byte in the header");
        free(x);
    }
    {
        /* A hostile name is quoted without control characters. */
        size_t n;
        unsigned char *x = mk("{\"\\u001b[31mred\":{\"dtype\":\"Q8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, &n);
        gpt_st_file *g = gpt_st_open_mem(x, n, "bad.safetensors", &err);
        ok(!g && strstr(err.msg, "\\x1b[31mred") && !strchr(err.msg, 0x1b), "control characters in names are escaped: %s",
           err.msg);
        free(x);
    }
    expect_fail((const unsigned char *)"\x02\0\0\0\0\0\0", 7, "too short", "7-byte file");
    expect_fail((const unsigned char *)"", 0, "too short", "empty file");
    /* Deep nesting stays within cJSON's limit and fails cleanly. */
    {
        char *deep = malloc(5000 + 1);
        memset(deep, '[', 5000);
        deep[0] = '{';
        deep[5000] = '\0';
        expect_fail_hdr(deep, 0, "not valid JSON", "deeply nested JSON");
        free(deep);
    }
    /* Edge cases that are valid. */
    size_t n;
    unsigned char *x = mk("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4294967296],\"data_offsets\":[0,0]},"
                          "\"s\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[0,1]}}  ", 1, &n);
    f = gpt_st_open_mem(x, n, "edge", &err);
    ok(f && gpt_st_find(f, "z")->numel == 0 && gpt_st_find(f, "s")->numel == 1,
       "empty tensor with a huge other dimension, scalar BOOL, trailing spaces: accepted%s%s", f ? "" : ": ",
       f ? "" : err.msg);
    gpt_st_close(f);
    free(x);
    f = gpt_st_open("t/data/st/does-not-exist.safetensors", &err);
    ok(!f && strstr(err.msg, "does-not-exist"), "missing file: %s", err.msg);
}

/* ---- writer ---- */

static int python_ok(void)
{
    return system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") == 0;
}

static void check_writer(void)
{
    gpt_err err = {{0}};
    char path[512];
    tmp_path(path, sizeof path, "out.safetensors");

    /* Odd-sized tensors of several dtypes, declared small-first so the writer must reorder to align. */
    uint8_t u8[5] = {1, 2, 3, 4, 255};
    uint16_t bf[3] = {0x3f80, 0xc000, 0x7fc0};
    float f32[7] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-40f, 65504.0f};
    int64_t i64[3] = {-1, 1LL << 40, 7};
    uint16_t f16[6] = {0x3c00, 0x0001, 0x7c00, 0xfc00, 0x8000, 0x3555};
    float big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (float)i * 0.5f - 100.0f;
    uint64_t s5[1] = {5}, s3[1] = {3}, s7[1] = {7}, s23[2] = {2, 3}, sbig[2] = {10, 100}, s0[2] = {0, 3};

    gpt_st_writer *w = gpt_st_writer_open(path, &err);
    if (!ok(w != NULL, "writer open: %s", err.msg)) return;
    ok(gpt_st_writer_meta(w, "format", "pt", &err) == 0 && gpt_st_writer_meta(w, "note", "a \"quoted\" \\ value\n", &err) == 0,
       "metadata added");
    ok(gpt_st_writer_meta(w, "format", "x", &err) == -1 && strstr(err.msg, "twice"), "duplicate metadata key rejected");
    ok(gpt_st_writer_add(w, "u8", GPT_ST_U8, 1, s5, u8, &err) == 0, "add u8 (pointer)");
    ok(gpt_st_writer_add(w, "bf", GPT_ST_BF16, 1, s3, bf, &err) == 0, "add bf16 (pointer)");
    ok(gpt_st_writer_add(w, "f32 \"odd\" name\\", GPT_ST_F32, 1, s7, f32, &err) == 0, "add f32 with JSON-escaped name");
    ok(gpt_st_writer_add(w, "i64", GPT_ST_I64, 1, s3, i64, &err) == 0, "add i64 (pointer)");
    ok(gpt_st_writer_add(w, "f16", GPT_ST_F16, 2, s23, NULL, &err) == 0, "declare f16 (streamed)");
    ok(gpt_st_writer_add(w, "big", GPT_ST_F32, 2, sbig, NULL, &err) == 0, "declare big (streamed)");
    ok(gpt_st_writer_add(w, "empty", GPT_ST_F32, 2, s0, NULL, &err) == 0, "declare an empty tensor");
    ok(gpt_st_writer_add(w, "scalar\xc3\xa9", GPT_ST_F64, 0, NULL, (const double[]){2.5}, &err) == 0,
       "add a scalar F64 with a UTF-8 name");
    ok(gpt_st_writer_add(w, "u8", GPT_ST_U8, 1, s5, u8, &err) == -1 && strstr(err.msg, "twice"), "duplicate name rejected");
    ok(gpt_st_writer_add(w, "", GPT_ST_U8, 1, s5, u8, &err) == -1 && strstr(err.msg, "empty"), "empty name rejected");
    ok(gpt_st_writer_add(w, "bad\xff", GPT_ST_U8, 1, s5, u8, &err) == -1 && strstr(err.msg, "UTF-8"), "invalid UTF-8 name rejected");
    ok(gpt_st_writer_add(w, "__metadata__", GPT_ST_U8, 1, s5, u8, &err) == -1, "reserved name rejected");
    /* Stream out of order and in uneven chunks. */
    int wrc = 0;
    wrc |= gpt_st_writer_write(w, "big", big, 1234, &err);
    wrc |= gpt_st_writer_write(w, "f16", f16, 12, &err);
    wrc |= gpt_st_writer_write(w, "big", (const char *)big + 1234, 4000 - 1234, &err);
    wrc |= gpt_st_writer_write(w, "empty", NULL, 0, &err);
    ok(wrc == 0, "streamed writes out of order and in chunks%s%s", wrc ? ": " : "", wrc ? err.msg : "");
    ok(gpt_st_writer_write(w, "big", big, 1, &err) == -1 && strstr(err.msg, "exceed"), "writing past a tensor's size fails");
    ok(gpt_st_writer_write(w, "u8", u8, 1, &err) == -1 && strstr(err.msg, "declared with its data"),
       "streaming into a pointer tensor fails");
    ok(gpt_st_writer_write(w, "nope", u8, 1, &err) == -1 && strstr(err.msg, "not declared"), "unknown tensor fails");
    ok(gpt_st_writer_add(w, "late", GPT_ST_U8, 1, s5, u8, &err) == -1 && strstr(err.msg, "after writing started"),
       "declaring after writing started fails");
    err.msg[0] = 0;
    ok(gpt_st_writer_close(w, &err) == 0, "writer close%s%s", err.msg[0] ? ": " : "", err.msg);

    gpt_st_file *f = gpt_st_open(path, &err);
    if (!ok(f != NULL, "our reader reads our output%s%s", f ? "" : ": ", f ? "" : err.msg)) return;
    is_int(gpt_st_count(f), 8, "8 tensors written");
    is_str(gpt_st_meta(f, "note"), "a \"quoted\" \\ value\n", "metadata with escapes round trips");
    struct {
        const char *name;
        const void *data;
        size_t n;
    } want[] = {{"u8", u8, 5}, {"bf", bf, 6}, {"f32 \"odd\" name\\", f32, 28}, {"i64", i64, 24},
                {"f16", f16, 12}, {"big", big, 4000}, {"empty", NULL, 0}, {"scalar\xc3\xa9", (const double[]){2.5}, 8}};
    int same = 1, aligned = 1;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gpt_st_tensor *t = gpt_st_find(f, want[i].name);
        if (!t || t->nbytes != want[i].n || (want[i].n && memcmp(t->data, want[i].data, want[i].n) != 0)) {
            diag("tensor %s differs", want[i].name);
            same = 0;
        }
        if (t && ((uintptr_t)t->data % gpt_st_dtype_size(t->dtype)) != 0) {
            diag("tensor %s at offset %zu is not aligned to %zu", t->name, t->offset, gpt_st_dtype_size(t->dtype));
            aligned = 0;
        }
    }
    ok(same, "every tensor round trips byte for byte");
    ok(aligned, "every tensor is aligned to its element size in the mapping");
    const gpt_st_tensor *t = gpt_st_find(f, "big");
    ok(t && t->ndim == 2 && t->shape[0] == 10 && t->shape[1] == 100 && t->dtype == GPT_ST_F32, "shape and dtype round trip");
    t = gpt_st_find(f, "scalar\xc3\xa9");
    ok(t && t->ndim == 0 && t->dtype == GPT_ST_F64, "scalar F64 round trips");
    gpt_st_close(f);

    struct stat st;
    gpt_blob raw;
    if (gpt_blob_read(&raw, path, &err) == 0) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | raw.data[i];
        ok(hl % 8 == 0, "header padded to a multiple of 8 (data starts 8-aligned)");
        gpt_blob_free(&raw);
    }

    /* The reference implementation must load what we wrote. */
    if (python_ok()) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "python3 scripts/make-st-fixtures.py --dump '%s'", path);
        FILE *p = popen(cmd, "r");
        char *buf = NULL;
        size_t cap = 0, len = 0;
        if (p) {
            char chunk[4096];
            size_t got;
            while ((got = fread(chunk, 1, sizeof chunk, p)) > 0) {
                buf = realloc(buf, len + got + 1);
                memcpy(buf + len, chunk, got);
                len += got;
            }
            int rc = pclose(p);
            if (rc != 0) diag("python dump exited with %d", rc);
        }
        (void)cap;
        /* Expected dump: metadata then tensors, each sorted by name (bytes as hex). */
        size_t ecap = 1 << 16, elen = 0;
        char *e = malloc(ecap);
        elen += (size_t)snprintf(e + elen, ecap - elen, "meta format pt\nmeta note a \"quoted\" \\ value\n\n");
        /* Sorted by strcmp: "big" "bf" "empty" "f16" "f32..." "i64" "scalar\xc3\xa9" "u8". */
        static const char *order[] = {"bf", "big", "empty", "f16", "f32 \"odd\" name\\", "i64", "scalar\xc3\xa9", "u8"};
        for (size_t k = 0; k < 8; k++) {
            for (size_t i = 0; i < 8; i++) {
                if (strcmp(want[i].name, order[k]) != 0) continue;
                gpt_st_file *g = gpt_st_open(path, &err);
                const gpt_st_tensor *tt = g ? gpt_st_find(g, want[i].name) : NULL;
                if (tt) {
                    elen += (size_t)snprintf(e + elen, ecap - elen, "tensor %s %s %d", tt->name, gpt_st_dtype_name(tt->dtype), tt->ndim);
                    for (int d = 0; d < tt->ndim; d++) elen += (size_t)snprintf(e + elen, ecap - elen, " %llu", (unsigned long long)tt->shape[d]);
                    elen += (size_t)snprintf(e + elen, ecap - elen, "\nbytes ");
                    if (!want[i].n) elen += (size_t)snprintf(e + elen, ecap - elen, "-");
                    for (size_t j = 0; j < want[i].n; j++)
                        elen += (size_t)snprintf(e + elen, ecap - elen, "%02x", ((const unsigned char *)want[i].data)[j]);
                    elen += (size_t)snprintf(e + elen, ecap - elen, "\n");
                }
                gpt_st_close(g);
            }
        }
        /* The metadata value holds a newline, so python prints it across two lines. */
        int match = buf && len == elen && memcmp(buf, e, len) == 0;
        ok(match, "Python safetensors loads our output with the same metadata, names, dtypes, shapes and bytes");
        if (!match) diag("python said:\n%.*s\n# we expected:\n%.*s", (int)(buf ? len : 0), buf ? buf : "", (int)elen, e);
        free(e);
        free(buf);
    } else {
        ok(1, "# SKIP python3 with safetensors+numpy not importable; reference-reader check not run");
    }

    /* An incomplete streamed tensor aborts and leaves the destination untouched. */
    char path2[512];
    tmp_path(path2, sizeof path2, "partial.safetensors");
    w = gpt_st_writer_open(path2, &err);
    gpt_st_writer_add(w, "x", GPT_ST_F32, 1, s7, NULL, &err);
    gpt_st_writer_write(w, "x", f32, 8, &err);
    ok(gpt_st_writer_close(w, &err) == -1 && strstr(err.msg, "8 of 28") && strstr(err.msg, "'x'"),
       "close with an incomplete tensor fails: %s", err.msg);
    ok(stat(path2, &st) != 0, "and no output file appears");
    char tmpf[600];
    snprintf(tmpf, sizeof tmpf, "%s.tmp.%ld", path2, (long)getpid());
    ok(stat(tmpf, &st) != 0, "and the temp file is removed");
    ok(gpt_st_writer_open("-", &err) == NULL && strstr(err.msg, "stdout"), "stdout is refused: %s", err.msg);
    tmp_path(path2, sizeof path2, "no/such/dir/x.safetensors");
    ok(gpt_st_writer_open(path2, &err) == NULL && strstr(err.msg, "no/such/dir"), "unwritable path: %s", err.msg);

    /* No tensors at all is a valid (empty) file. */
    tmp_path(path2, sizeof path2, "empty.safetensors");
    w = gpt_st_writer_open(path2, &err);
    ok(w && gpt_st_writer_close(w, &err) == 0, "an empty writer closes");
    f = gpt_st_open(path2, &err);
    ok(f && gpt_st_count(f) == 0, "and reads back as an empty file");
    gpt_st_close(f);
}

static void rm_rf(const char *d)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0) diag("could not remove %s", d);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gpt-st-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    check_expected();
    check_basic_api();
    check_conversions();
    check_sets();
    check_malformed();
    check_writer();
    rm_rf(tmpdir);
    return done_testing();
}
