/* test_tokens.c: the gpt-tokens(5) writer and readers. Oracles: the golden files in t/data/tokens
 * (made by gen.py from the format description), streams assembled here byte by byte from the spec,
 * and the zstd command line tool. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "tap.h"
#include "fileio.h"
#include "tokens.h"

static char tmpdir[256];

static const char *tpath(const char *name)
{
    static char bufs[4][512];
    static int k;
    char *b = bufs[k++ & 3];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static int write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t put = n ? fwrite(data, 1, n, f) : 0;
    return fclose(f) == 0 && put == n ? 0 : -1;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *d = NULL;
    gpt_err err;
    if (gpt_read_stream(f, &d, n, path, &err) != 0) d = NULL;
    fclose(f);
    return d;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A stream assembled from the format description (not through lib/tokens.c). */
static unsigned char *spec_stream(uint32_t version, uint32_t vocab, uint32_t width, const uint32_t *ids, size_t n,
                                  size_t *len)
{
    *len = 48 + n * width;
    unsigned char *d = calloc(1, *len);
    memcpy(d, "GPTTOKNS", 8);
    put32(d + 8, version);
    put32(d + 12, vocab);
    put32(d + 16, width);
    put32(d + 20, (uint32_t)XXH64(d, 20, 0));
    for (size_t i = 0; i < n; i++)
        for (uint32_t b = 0; b < width; b++) d[24 + i * width + b] = (unsigned char)(ids[i] >> (8 * b));
    unsigned char *t = d + 24 + n * width;
    memcpy(t, "GPTTKEND", 8);
    put64(t + 8, n);
    put64(t + 16, XXH64(d + 24, n * width, 0));
    return d;
}

enum mode { M_MEM, M_FILE, M_FD, M_PIPE, M_COUNT };
static const char *mode_name[] = {"mem", "file", "fd", "pipe"};

static int drain(gpt_tokr *r, gpt_ids *out, size_t chunk, gpt_err *err)
{
    uint32_t *buf = malloc(chunk * sizeof *buf);
    long got;
    while ((got = gpt_tokr_read(r, buf, chunk, err)) > 0) gpt_ids_append(out, buf, (size_t)got);
    free(buf);
    return got < 0 ? -1 : 0;
}

/* Opens `data` one way (memory, mmapped file, sequential fd, pipe from a child) and reads it all.
 * Returns 0 or -1 with the message in err. */
static int read_via(enum mode m, const void *data, size_t n, const char *name, gpt_ids *out, uint32_t *vocab,
                    size_t chunk, gpt_err *err)
{
    gpt_tokr *r = NULL;
    int fd = -1;
    pid_t child = -1;
    err->msg[0] = 0;
    if (m == M_MEM) {
        r = gpt_tokr_open_mem(data, n, name, err);
    } else if (m == M_FILE) {
        if (write_bytes(name, data, n) != 0) return gpt_errf(err, "test: cannot write %s", name);
        r = gpt_tokr_open(name, err);
    } else if (m == M_FD) {
        fd = memfd_create("tokens", 0);
        if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n) || lseek(fd, 0, SEEK_SET) != 0)
            return gpt_errf(err, "test: memfd failed");
        r = gpt_tokr_open_fd(fd, name, err);
    } else {
        int p[2];
        if (pipe(p) != 0) return gpt_errf(err, "test: pipe failed");
        fflush(stdout);
        child = fork();
        if (child == 0) {
            close(p[0]);
            const unsigned char *s = data;
            size_t left = n;
            while (left > 0) {
                ssize_t w = write(p[1], s, left > 4099 ? 4099 : left);
                if (w <= 0) _exit(1);
                s += w;
                left -= (size_t)w;
            }
            _exit(0);
        }
        close(p[1]);
        fd = p[0];
        r = gpt_tokr_open_fd(fd, name, err);
    }
    int rc = -1;
    if (r) {
        if (vocab) *vocab = gpt_tokr_vocab(r);
        rc = drain(r, out, chunk, err);
        gpt_tokr_close(r);
    }
    if (fd >= 0) close(fd);
    if (child > 0) waitpid(child, NULL, 0);
    return rc;
}

static int contains_any(const char *msg, const char *alts)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", alts);
    for (char *s = strtok(buf, "|"); s; s = strtok(NULL, "|"))
        if (strstr(msg, s)) return 1;
    return 0;
}

/* Every way of reading `data` fails with a message naming `name` and containing one of `alts`. */
static int fails_with(const void *data, size_t n, const char *alts, const char *what, int quiet)
{
    int all = 1;
    for (int m = 0; m < M_COUNT; m++) {
        gpt_ids ids = {0};
        gpt_err err;
        const char *name = tpath("bad.tok");
        int rc = read_via((enum mode)m, data, n, name, &ids, NULL, 7, &err);
        int good = rc == -1 && strstr(err.msg, name) && contains_any(err.msg, alts);
        if (!good || !quiet) {
            ok(good, "%s (%s): error mentions %s", what, mode_name[m], alts);
            if (!good) diag("rc %d, message: %s", rc, err.msg);
        }
        all &= good;
        gpt_ids_free(&ids);
    }
    return all;
}

static int write_ids(const char *path, uint32_t vocab, int level, const uint32_t *ids, size_t n, size_t chunk,
                     gpt_err *err)
{
    gpt_tokw *w = gpt_tokw_open(path, vocab, level, err);
    if (!w) return -1;
    for (size_t at = 0; at < n; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        if (gpt_tokw_write(w, ids + at, k, err) != 0) {
            gpt_tokw_abort(w);
            return -1;
        }
    }
    return gpt_tokw_close(w, err);
}

static int same_ids(const gpt_ids *a, const uint32_t *b, size_t n)
{
    return a->n == n && (n == 0 || memcmp(a->v, b, n * sizeof *b) == 0);
}

static int dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void clean_dir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tpath(e->d_name));
    closedir(d);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_width(void)
{
    is_int(gpt_tokens_width_for(1), 2, "width: vocab 1 -> u16");
    is_int(gpt_tokens_width_for(50257), 2, "width: vocab 50257 -> u16");
    is_int(gpt_tokens_width_for(65536), 2, "width: vocab 65536 -> u16");
    is_int(gpt_tokens_width_for(65537), 4, "width: vocab 65537 -> u32");
    is_int(gpt_tokens_width_for(200019), 4, "width: vocab 200019 -> u32");
}

static const struct golden {
    const char *file;
    uint32_t vocab;
    int width, compressed;
    size_t n;
    uint32_t ids[8];
} goldens[] = {
    {"small16.tokens", 50257, 2, 0, 8, {15496, 11, 995, 0, 50256, 40, 1101, 50256}},
    {"small32.tokens", 200019, 4, 0, 7, {200018, 0, 65535, 65536, 199998, 12345, 199999}},
    {"empty.tokens", 100277, 4, 0, 0, {0}},
    {"edge16.tokens", 65536, 2, 0, 3, {65535, 0, 65535}},
    {"small32.tokens.zst", 200019, 4, 1, 7, {200018, 0, 65535, 65536, 199998, 12345, 199999}},
};

static void test_golden(void)
{
    for (size_t g = 0; g < sizeof goldens / sizeof *goldens; g++) {
        const struct golden *G = &goldens[g];
        char path[256];
        snprintf(path, sizeof path, "t/data/tokens/%s", G->file);
        gpt_err err;
        gpt_tokr *r = gpt_tokr_open(path, &err);
        if (!ok(r != NULL, "golden %s opens", G->file)) {
            diag("%s", err.msg);
            continue;
        }
        is_int(gpt_tokr_version(r), 1, "golden %s: version", G->file);
        is_int(gpt_tokr_vocab(r), G->vocab, "golden %s: vocab", G->file);
        is_int(gpt_tokr_width(r), G->width, "golden %s: width", G->file);
        is_int(gpt_tokr_compressed(r), G->compressed, "golden %s: compressed flag", G->file);
        uint64_t n = 99;
        const void *map = gpt_tokr_map(r, &n);
        ok(G->compressed ? map == NULL : (map != NULL && n == G->n), "golden %s: map view present iff plain",
           G->file);
        if (map) {
            int eq = 1;
            for (size_t i = 0; i < G->n; i++) eq &= gpt_tokr_get(r, i) == G->ids[i];
            ok(eq, "golden %s: gpt_tokr_get matches", G->file);
        }
        gpt_ids ids = {0};
        ok(drain(r, &ids, 3, &err) == 0 && same_ids(&ids, G->ids, G->n), "golden %s: sequential ids match",
           G->file);
        gpt_tokr_close(r);
        gpt_ids_free(&ids);

        size_t len;
        unsigned char *data = slurp(path, &len);
        for (int m = M_FD; m <= M_PIPE; m++) {
            gpt_ids s = {0};
            uint32_t v = 0;
            int rc = read_via((enum mode)m, data, len, path, &s, &v, 2, &err);
            ok(rc == 0 && v == G->vocab && same_ids(&s, G->ids, G->n), "golden %s via %s", G->file,
               mode_name[m]);
            if (rc) diag("%s", err.msg);
            gpt_ids_free(&s);
        }
        /* our writer reproduces the golden bytes exactly */
        if (!G->compressed) {
            size_t olen = 0;
            unsigned char *mine = NULL;
            if (write_ids(tpath("w.tok"), G->vocab, 0, G->ids, G->n, 2, &err) == 0)
                mine = slurp(tpath("w.tok"), &olen);
            ok(mine && olen == len && memcmp(mine, data, len) == 0, "writer output of %s is byte-identical",
               G->file);
            free(mine);
        }
        free(data);
    }
    gpt_ids all = {0};
    uint32_t v = 0;
    gpt_err err;
    ok(gpt_tokens_read_all("t/data/tokens/small16.tokens", &all, &v, &err) == 0 && v == 50257 &&
           same_ids(&all, goldens[0].ids, 8),
       "gpt_tokens_read_all");
    gpt_ids_free(&all);
}

/* zstd output is a real zstd frame: the zstd tool decompresses it to the plain stream. */
static void test_zstd_cli(void)
{
    if (system("zstd --version >/dev/null 2>&1") != 0) {
        ok(1, "# SKIP zstd tool not installed");
        return;
    }
    gpt_err err;
    const struct golden *G = &goldens[1];
    int rc = write_ids(tpath("z.tok"), G->vocab, 5, G->ids, G->n, 3, &err);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "zstd -q -d -c '%s' > '%s'", tpath("z.tok"), tpath("z.plain"));
    ok(rc == 0 && system(cmd) == 0, "zstd tool decompresses our compressed output");
    size_t a, b;
    unsigned char *x = slurp(tpath("z.plain"), &a), *y = slurp("t/data/tokens/small32.tokens", &b);
    ok(x && y && a == b && memcmp(x, y, a) == 0, "decompressed output equals the golden plain stream");
    free(x);
    free(y);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Child: writes ids to stdout (a pipe) with the writer; exit status 0 on success. */
static pid_t spawn_writer(int *rfd, uint32_t vocab, int level, const uint32_t *ids, size_t n)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 1);
        close(p[1]);
        gpt_err err;
        _exit(write_ids("-", vocab, level, ids, n, 4097, &err) == 0 ? 0 : 1);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static void round_trip(uint32_t vocab, size_t n)
{
    uint32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = rnd() % vocab;
    if (n > 2) ids[0] = vocab - 1, ids[n - 1] = 0;
    char what[64];
    snprintf(what, sizeof what, "vocab %u, %zu ids", vocab, n);
    gpt_err err;
    size_t chunks[] = {1, 1000, 65536 + 3, n ? n : 1};
    int wchunk_ok = 1;

    /* plain file: mapped and sequential views agree with the input and with each other */
    for (int level = 0; level <= 3; level += 3) {
        const char *p = tpath(level ? "rt.tok.zst" : "rt.tok");
        int rc = write_ids(p, vocab, level, ids, n, chunks[(n / 7 + (size_t)level) % 4], &err);
        if (!ok(rc == 0, "%s, zstd %d: written", what, level)) diag("%s", err.msg);
        gpt_tokr *r = gpt_tokr_open(p, &err);
        if (!ok(r != NULL, "%s, zstd %d: opens", what, level)) {
            diag("%s", err.msg);
            continue;
        }
        ok(gpt_tokr_width(r) == gpt_tokens_width_for(vocab) && gpt_tokr_vocab(r) == vocab &&
               gpt_tokr_compressed(r) == (level != 0),
           "%s, zstd %d: header fields", what, level);
        uint64_t mn = 0;
        const void *map = gpt_tokr_map(r, &mn);
        if (level == 0) {
            int eq = map != NULL && mn == n;
            for (size_t i = 0; eq && i < n; i++) eq = gpt_tokr_get(r, i) == ids[i];
            ok(eq, "%s: mapped view (gpt_tokr_get) equals the ids written", what);
            if (n > 10) {
                uint32_t sub[7];
                gpt_tokr_get_range(r, n / 2, 7, sub);
                ok(memcmp(sub, ids + n / 2, sizeof sub) == 0, "%s: gpt_tokr_get_range", what);
            }
        } else {
            ok(map == NULL, "%s: compressed input has no mapped view", what);
        }
        gpt_ids seq = {0};
        size_t chunk = level ? 65536 : 777;
        ok(drain(r, &seq, chunk, &err) == 0 && same_ids(&seq, ids, n),
           "%s, zstd %d: sequential view equals the ids written", what, level);
        ok(gpt_tokr_tell(r) == n, "%s, zstd %d: tell", what, level);
        gpt_tokr_close(r);
        gpt_ids_free(&seq);

        /* the same bytes read sequentially through a descriptor (the streaming path) */
        size_t len;
        unsigned char *data = slurp(p, &len);
        gpt_ids s2 = {0};
        ok(data && read_via(M_FD, data, len, p, &s2, NULL, 1 + n % 5000, &err) == 0 && same_ids(&s2, ids, n),
           "%s, zstd %d: streamed view equals the mapped one", what, level);
        free(data);
        gpt_ids_free(&s2);
    }

    /* through a pipe: child writes to stdout, parent streams */
    for (int level = 0; level <= 1; level++) {
        int fd;
        pid_t pid = spawn_writer(&fd, vocab, level, ids, n);
        gpt_tokr *r = gpt_tokr_open_fd(fd, "pipe", &err);
        gpt_ids s = {0};
        int rc = r ? drain(r, &s, 4096, &err) : -1;
        gpt_tokr_close(r);
        close(fd);
        int st = 0;
        waitpid(pid, &st, 0);
        ok(rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 && same_ids(&s, ids, n),
           "%s, zstd %d: through a pipe (writer on stdout)", what, level);
        if (rc) diag("%s", err.msg);
        gpt_ids_free(&s);
    }
    (void)wchunk_ok;
    free(ids);
}

/* "-" reads stdin: mapped when it is a regular file, streamed when it is a pipe. */
static void test_stdin(void)
{
    const char *golden = "t/data/tokens/small32.tokens";
    int saved = dup(0);
    gpt_err err;
    int fd = open(golden, O_RDONLY);
    dup2(fd, 0);
    close(fd);
    gpt_tokr *r = gpt_tokr_open("-", &err);
    uint64_t n = 0;
    ok(r && gpt_tokr_map(r, &n) && n == 7 && strcmp(gpt_tokr_name(r), "stdin") == 0,
       "stdin redirected from a regular file is mapped");
    gpt_tokr_close(r);

    int p;
    pid_t pid = spawn_writer(&p, 200019, 0, goldens[1].ids, 7);
    dup2(p, 0);
    close(p);
    gpt_ids s = {0};
    int rc = gpt_tokens_read_all("-", &s, NULL, &err);
    waitpid(pid, NULL, 0);
    ok(rc == 0 && same_ids(&s, goldens[1].ids, 7), "stdin from a pipe streams");
    gpt_ids_free(&s);
    dup2(saved, 0);
    close(saved);
}

static void test_malformed(void)
{
    const uint32_t ids[] = {5, 999, 0, 998, 17};
    size_t len;
    unsigned char *good = spec_stream(1, 1000, 2, ids, 5, &len);
    unsigned char *b = malloc(len + 200000);
    gpt_ids out = {0};
    gpt_err err;
    ok(read_via(M_MEM, good, len, "x", &out, NULL, 3, &err) == 0 && same_ids(&out, ids, 5),
       "spec-built stream reads back");
    gpt_ids_free(&out);

    /* truncation at every offset */
    int all = 1;
    for (size_t cut = 0; cut < len; cut++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu", cut);
        all &= fails_with(good, cut, cut == 0 ? "empty|truncated" : "truncated", what, 1);
    }
    ok(all, "truncation at each of %zu offsets: every reader says truncated", len);

    /* a flipped bit at every offset: the error names the damaged part */
    all = 1;
    for (size_t at = 0; at < len; at++) {
        for (int bit = 0; bit < 8; bit += 7) {
            memcpy(b, good, len);
            b[at] ^= (unsigned char)(1u << bit);
            const char *want = at < 8 ? "bad magic" : at < 12 ? "version" : at < 24 ? "header checksum"
                             : at < 34 ? "checksum mismatch|>= vocab size"
                             : at < 42 ? "truncated" : at < 50 ? "size mismatch" : "checksum mismatch";
            char what[64];
            snprintf(what, sizeof what, "bit %d flipped at byte %zu", bit, at);
            all &= fails_with(b, len, want, what, 1);
        }
    }
    ok(all, "a flipped bit anywhere in a %zu-byte stream is detected and named", len);
    /* the mapped reader checks the checksum before the ids: a corrupt body is reported as such */
    memcpy(b, good, len);
    b[24 + 2 * 2 + 1] ^= 0x40; /* id 0 -> 16384 >= 1000 */
    gpt_tokr *r = gpt_tokr_open_mem(b, len, "flip", &err);
    ok(!r && strstr(err.msg, "body checksum mismatch"), "mapped: corrupt body reported as checksum mismatch");
    gpt_tokr_close(r);

    /* well-formed, checksummed, but an id >= vocab: both readers name the id and its index */
    const uint32_t badids[] = {1, 2, 3, 1000, 4};
    size_t blen;
    unsigned char *bad = spec_stream(1, 1000, 2, badids, 5, &blen);
    fails_with(bad, blen, "token 3 (byte 30): id 1000 >= vocab size 1000", "id >= vocab", 0);
    free(bad);
    const uint32_t badids32[] = {70000, 200019, 4};
    bad = spec_stream(1, 200019, 4, badids32, 3, &blen);
    fails_with(bad, blen, "token 1 (byte 28): id 200019 >= vocab size 200019", "u32 id >= vocab", 0);
    free(bad);

    bad = spec_stream(2, 1000, 2, ids, 5, &blen);
    fails_with(bad, blen, "unknown token stream version 2", "version 2", 0);
    free(bad);
    bad = spec_stream(1, 1000, 4, ids, 5, &blen);
    fails_with(bad, blen, "bad width 4", "width 4 for a small vocab", 0);
    free(bad);
    bad = spec_stream(1, 100000, 2, ids, 5, &blen);
    fails_with(bad, blen, "bad width 2", "width 2 for a large vocab", 0);
    free(bad);
    bad = spec_stream(1, 100000, 3, ids, 5, &blen);
    fails_with(bad, blen, "bad width 3", "width 3", 0);
    free(bad);
    bad = spec_stream(1, 0, 2, ids, 5, &blen);
    fails_with(bad, blen, "bad vocab size 0", "vocab 0", 0);
    free(bad);

    /* size mismatch: the trailer's count disagrees; the body is not a whole number of ids */
    memcpy(b, good, len);
    put64(b + len - 16, 6);
    fails_with(b, len, "size mismatch: the trailer at byte 34 says 6 tokens but the body holds 5", "count 6", 0);
    memcpy(b, good, 34);
    b[34] = 0;
    memcpy(b + 35, good + 34, 24);
    fails_with(b, len + 1, "size mismatch: the body", "odd body length", 0);

    /* trailing garbage, short and long */
    memcpy(b, good, len);
    memcpy(b + len, "xyz", 3);
    fails_with(b, len + 3, "trailing garbage: 3 bytes after the trailer that ends at byte 58", "3 garbage bytes",
               0);
    memset(b + len, 'A', 100000);
    fails_with(b, len + 100000, "truncated|trailing garbage|>= vocab", "100000 garbage bytes", 0);
    b[len] = '\n';
    fails_with(b, len + 1, "trailing garbage: 1 bytes", "a trailing newline", 0);

    /* not a token stream at all */
    const char *text = "Hello, world! This is text, not tokens.\n";
    fails_with(text, strlen(text), "not a gpt token stream (bad magic); did you mean `gpt-tokenize encode`?",
               "plain text", 0);
    fails_with("GPTTOKNX", 8, "byte 7: not a gpt token stream (bad magic)", "magic off by one byte", 0);

    /* zstd: truncated at every offset, corrupted, garbage after the frame */
    const char *zp = tpath("m.tok.zst");
    if (write_ids(zp, 1000, 3, ids, 5, 5, &err) == 0) {
        size_t zlen;
        unsigned char *z = slurp(zp, &zlen);
        all = 1;
        for (size_t cut = 4; cut < zlen; cut++) all &= fails_with(z, cut, "truncated", "zstd truncated", 1);
        ok(all, "zstd stream truncated at each of %zu offsets: truncated", zlen - 4);
        /* a flip either fails or leaves the content intact (zstd ignores e.g. an unused header bit) */
        all = 1;
        int failed = 0;
        for (size_t at = 4; at < zlen; at++) {
            memcpy(b, z, zlen);
            b[at] ^= 0x10;
            for (int m = 0; m < M_COUNT; m++) {
                gpt_ids got = {0};
                int rc = read_via((enum mode)m, b, zlen, tpath("z.bad"), &got, NULL, 2, &err);
                int fine = rc == 0 ? same_ids(&got, ids, 5) : strstr(err.msg, "z.bad") != NULL;
                failed += rc != 0;
                if (!fine) diag("zstd flip at %zu via %s: rc %d: %s", at, mode_name[m], rc, err.msg);
                all &= fine;
                gpt_ids_free(&got);
            }
        }
        ok(all && failed >= (int)(zlen - 8) * M_COUNT,
           "a flipped bit in the zstd frame is an error or harmless (%d of %zu failed)", failed,
           (zlen - 4) * M_COUNT);
        memcpy(b, z, zlen);
        memcpy(b + zlen, "junk", 4);
        fails_with(b, zlen + 4, "trailing garbage after the zstd frame", "junk after the zstd frame", 0);
        memcpy(b, z, zlen);
        memset(b + 4, 0xFF, zlen - 4);
        fails_with(b, zlen, "corrupt zstd", "garbage inside a zstd frame", 0);
        free(z);
    } else {
        ok(0, "writing a zstd stream: %s", err.msg);
    }

    /* files that are not there, or not files */
    r = gpt_tokr_open(tpath("missing.tok"), &err);
    ok(!r && strstr(err.msg, "missing.tok: cannot open"), "a missing file is named");
    r = gpt_tokr_open(tmpdir, &err);
    ok(!r && strstr(err.msg, "is a directory"), "a directory is rejected");

    /* a reader that failed keeps failing */
    memcpy(b, good, len);
    put64(b + len - 8, 12345);
    int fd = memfd_create("t", 0);
    ok(write(fd, b, len) == (ssize_t)len && lseek(fd, 0, SEEK_SET) == 0, "memfd written");
    r = gpt_tokr_open_fd(fd, "sticky", &err);
    uint32_t tmp[64];
    long g1 = r ? gpt_tokr_read(r, tmp, 64, &err) : -2, g2 = r ? gpt_tokr_read(r, tmp, 64, &err) : -2;
    long g3 = r ? gpt_tokr_read(r, tmp, 64, &err) : -2;
    ok(g1 == 5 && g2 == -1 && g3 == -1, "stream: ids, then the checksum error, then errors (%ld %ld %ld)", g1,
       g2, g3);
    gpt_tokr_close(r);
    close(fd);
    free(good);
    free(b);
}

/* Damage to a stream much larger than the readers' buffers, at its start, middle and end. */
static void test_large_malformed(void)
{
    size_t n = 1500000, len;
    uint32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = rnd() % 50257;
    unsigned char *good = spec_stream(1, 50257, 2, ids, n, &len);
    unsigned char *b = malloc(len + 64);
    size_t cuts[] = {len - 1, len - 24, len - 25, len - 26, len / 2 + 1, 1u << 20, (1u << 20) + 24};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "large stream cut at %zu", cuts[i]);
        fails_with(good, cuts[i], "truncated", what, 0);
    }
    size_t flips[] = {24, 25, len / 2, (1u << 20) - 1, (1u << 20), len - 25};
    for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
        memcpy(b, good, len);
        b[flips[i]] ^= 0x01;
        char what[64];
        snprintf(what, sizeof what, "large stream, bit flipped at %zu", flips[i]);
        fails_with(b, len, "body checksum mismatch|>= vocab size", what, 0);
    }
    memcpy(b, good, len);
    memcpy(b + len, "0123456789", 10);
    fails_with(b, len + 10, "trailing garbage: 10 bytes after the trailer", "large stream + 10 bytes", 0);
    gpt_ids all = {0};
    gpt_err err;
    ok(read_via(M_PIPE, good, len, "big", &all, NULL, 100000, &err) == 0 && same_ids(&all, ids, n),
       "large spec-built stream reads back through a pipe");
    gpt_ids_free(&all);
    free(ids);
    free(good);
    free(b);
}

static void test_writer(void)
{
    gpt_err err;
    clean_dir();
    const char *p = tpath("out.tok");
    gpt_tokw *w = gpt_tokw_open(p, 1000, 0, &err);
    uint32_t v[] = {1, 2, 999, 1000, 3};
    ok(w && gpt_tokw_write(w, v, 3, &err) == 0, "writer accepts ids < vocab");
    ok(gpt_tokw_write(w, v, 5, &err) == -1 && strstr(err.msg, "id 1000 at index 3 (stream token 6)") &&
           strstr(err.msg, "out.tok"),
       "writer rejects id >= vocab, naming it and its index");
    ok(access(p, F_OK) != 0, "nothing at the final path before close");
    ok(gpt_tokw_write(w, v, 3, &err) == 0 && gpt_tokw_count(w) == 6, "the writer stays usable after a rejected id");
    ok(gpt_tokw_close(w, &err) == 0, "close");
    gpt_ids s = {0};
    uint32_t want[] = {1, 2, 999, 1, 2, 999};
    ok(gpt_tokens_read_all(p, &s, NULL, &err) == 0 && same_ids(&s, want, 6), "rejected ids were not written");
    gpt_ids_free(&s);
    is_int(dir_entries(), 1, "only the output remains after close (no temp file)");

    const char *q = tpath("aborted.tok");
    for (int level = 0; level <= 1; level++) {
        w = gpt_tokw_open(q, 50257, level, &err);
        ok(w && dir_entries() == 2, "zstd %d: a temp file exists while writing", level);
        for (int i = 0; i < 100; i++) gpt_tokw_write(w, v, 3, &err);
        gpt_tokw_abort(w);
        ok(dir_entries() == 1 && access(q, F_OK) != 0, "zstd %d: abort leaves no temp file and no output", level);
    }

    ok(gpt_tokw_open(p, 0, 0, &err) == NULL && strstr(err.msg, "vocab size 0"), "vocab 0 is refused");
    ok(gpt_tokw_open(p, 10, 99, &err) == NULL && strstr(err.msg, "zstd level 99"), "bad zstd level is refused");
    ok(gpt_tokw_open(tpath("no/such/dir.tok"), 10, 0, &err) == NULL && strstr(err.msg, "cannot create"),
       "unwritable path is refused");

    /* a write error (stdout is /dev/full) is reported, not ignored */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/full", O_WRONLY);
        dup2(fd, 1);
        uint32_t *many = calloc(1000000, sizeof *many);
        gpt_tokw *ww = gpt_tokw_open("-", 50257, 0, &err);
        int rc = ww ? gpt_tokw_write(ww, many, 1000000, &err) : -1;
        rc = ww ? (rc == 0 ? gpt_tokw_close(ww, &err) : (gpt_tokw_abort(ww), -1)) : -1;
        free(many);
        _exit(rc == -1 && strstr(err.msg, "write error") ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a full disk is a write error");
    clean_dir();
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/gpt-tokens-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) skip_all("cannot create a temp dir");
    if (access("t/data/tokens/small16.tokens", R_OK) != 0) skip_all("run from the repository root");

    test_width();
    test_golden();
    test_zstd_cli();
    test_stdin();
    uint32_t vocabs[] = {50257, 200019, 65536, 1};
    size_t sizes[] = {0, 1, 1000000};
    for (int v = 0; v < 4; v++)
        for (int s = 0; s < 3; s++)
            if (v < 2 || s == 2) round_trip(vocabs[v], sizes[s]);
    test_malformed();
    test_large_malformed();
    test_writer();
    clean_dir();
    rmdir(tmpdir);
    return done_testing();
}
