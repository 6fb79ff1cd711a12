/* The data loader: windows are the stream's tokens (targets shifted by one), sequential epochs are
 * permutations, DP ranks split exactly what one process reads, positions restore exactly, and
 * several files read as their concatenation. Token ids equal their offsets, so every check is
 * arithmetic on the stream, not a recorded output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataloader.h"
#include "tap.h"
#include "tokens.h"

static char dir[256];

static void write_stream(const char *name, uint32_t lo, uint32_t hi, int zstd)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gpt_err err;
    gpt_tokw *w = gpt_tokw_open(path, 5000, zstd, &err);
    if (!w) {
        diag("%s", err.msg);
        exit(1);
    }
    for (uint32_t i = lo; i < hi; i++)
        if (gpt_tokw_write(w, &i, 1, &err) < 0) exit(1);
    if (gpt_tokw_close(w, &err) < 0) exit(1);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s/dl-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) skip_all("cannot make a temporary directory");
    write_stream("all.tok", 0, 1000, 0);
    write_stream("part-a.tok", 0, 400, 0);
    write_stream("part-b.tok", 400, 1000, 0);
    write_stream("z.tok", 0, 100, 3);
    char all[512], pa[512], pb[512], glob_pat[512], z[512];
    snprintf(all, sizeof all, "%s/all.tok", dir);
    snprintf(pa, sizeof pa, "%s/part-a.tok", dir);
    snprintf(pb, sizeof pb, "%s/part-b.tok", dir);
    snprintf(glob_pat, sizeof glob_pat, "%s/part-*.tok", dir);
    snprintf(z, sizeof z, "%s/z.tok", dir);
    gpt_err err;
    enum { T = 16, B = 4 };
    int tok[64 * T], tgt[64 * T];

    const char *p1[] = {all};
    gpt_dataloader *d = gpt_data_open(p1, 1, T, GPT_DATA_SEQUENTIAL, 7, &err);
    ok(d != NULL, "open one file");
    is_int(gpt_data_tokens(d), 1000, "token count");
    uint64_t W = gpt_data_windows_per_epoch(d);
    is_int(W, 999 / T, "windows per epoch");
    /* Two epochs: each visits every window once, in different orders. */
    char *seen = calloc(W, 1);
    int perm_ok = 1, shift_ok = 1, differ = 0;
    for (uint64_t k = 0; k < 2 * W; k++) {
        uint64_t s = gpt_data_window_start(d, k);
        if (s % T || s / T >= W) perm_ok = 0;
        else seen[s / T]++;
        if (k < W && s != gpt_data_window_start(d, k + W)) differ = 1;
    }
    for (uint64_t w = 0; w < W; w++)
        if (seen[w] != 2) perm_ok = 0;
    ok(perm_ok, "sequential: each epoch visits every window exactly once");
    ok(differ, "sequential: epochs are shuffled differently");
    gpt_data_fill(d, 5, B, tok, tgt);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int s = (int)gpt_data_window_start(d, 5 + (uint64_t)b);
            if (tok[b * T + t] != s + t || tgt[b * T + t] != s + t + 1) shift_ok = 0;
        }
    ok(shift_ok, "windows hold the stream's tokens, targets shifted by one");
    free(seen);

    /* DP: ranks 0 and 1 of dp=2 together read what dp=1 reads with twice the batch. */
    int one[2 * B * T], one_t[2 * B * T], r0[B * T], r0t[B * T], r1[B * T], r1t[B * T];
    gpt_data_seek(d, &(gpt_data_pos){3, 7, 1000, GPT_DATA_SEQUENTIAL, T}, &err);
    gpt_data_next(d, 0, 1, 2 * B, one, one_t);
    gpt_data_pos after = gpt_data_tell(d);
    gpt_data_seek(d, &(gpt_data_pos){3, 7, 1000, GPT_DATA_SEQUENTIAL, T}, &err);
    gpt_data_next(d, 0, 2, B, r0, r0t);
    gpt_data_seek(d, &(gpt_data_pos){3, 7, 1000, GPT_DATA_SEQUENTIAL, T}, &err);
    gpt_data_next(d, 1, 2, B, r1, r1t);
    ok(memcmp(one, r0, sizeof r0) == 0 && memcmp(one + B * T, r1, sizeof r1) == 0 &&
           memcmp(one_t + B * T, r1t, sizeof r1t) == 0,
       "dp=2 ranks read the two halves of the dp=1 batch");
    is_int(gpt_data_tell(d).samples, after.samples, "every rank advances by the global batch");

    /* Exact resume. */
    gpt_data_pos pos = gpt_data_tell(d);
    gpt_data_next(d, 0, 1, B, tok, tgt);
    gpt_data_next(d, 0, 1, B, tok, tgt);
    int again[B * T];
    ok(gpt_data_seek(d, &pos, &err) == 0, "seek back");
    gpt_data_next(d, 0, 1, B, tok, tgt);
    gpt_data_next(d, 0, 1, B, again, tgt);
    int k2[B * T];
    memcpy(k2, again, sizeof k2);
    gpt_data_seek(d, &pos, &err);
    gpt_data_next(d, 0, 1, B, tok, tgt);
    gpt_data_next(d, 0, 1, B, tok, tgt);
    ok(memcmp(k2, tok, sizeof k2) == 0, "after seek the same windows come again");
    gpt_data_pos bad = pos;
    bad.seed = 8;
    ok(gpt_data_seek(d, &bad, &err) < 0 && strstr(err.msg, "seed"), "another seed is refused: %s", err.msg);
    bad = pos;
    bad.n_tokens = 999;
    ok(gpt_data_seek(d, &bad, &err) < 0 && strstr(err.msg, "999"), "other data is refused: %s", err.msg);
    gpt_data_close(d);

    /* Random windows: in range, deterministic by seed, different for another seed. */
    gpt_dataloader *a = gpt_data_open(p1, 1, T, GPT_DATA_RANDOM, 1, &err);
    gpt_dataloader *b = gpt_data_open(p1, 1, T, GPT_DATA_RANDOM, 2, &err);
    int in_range = 1, same = 1;
    for (uint64_t k = 0; k < 5000; k++) {
        uint64_t s = gpt_data_window_start(a, k);
        if (s + T + 1 > 1000) in_range = 0;
        if (s != gpt_data_window_start(b, k)) same = 0;
    }
    ok(in_range, "random windows stay inside the stream");
    ok(!same, "another seed gives other windows");
    gpt_data_close(b);

    /* Several files = their concatenation (windows crossing the boundary included). */
    const char *p2[] = {pa, pb};
    const char *p3[] = {glob_pat};
    gpt_dataloader *c = gpt_data_open(p2, 2, T, GPT_DATA_RANDOM, 1, &err);
    gpt_dataloader *g = gpt_data_open(p3, 1, T, GPT_DATA_RANDOM, 1, &err);
    ok(c && g && gpt_data_tokens(g) == 1000, "two files, and a glob matching them");
    int x[64 * T], xt[64 * T], y[64 * T], yt[64 * T];
    gpt_data_fill(a, 0, 64, tok, tgt);
    gpt_data_fill(c, 0, 64, x, xt);
    gpt_data_fill(g, 0, 64, y, yt);
    ok(memcmp(tok, x, sizeof x) == 0 && memcmp(tgt, xt, sizeof xt) == 0 && memcmp(x, y, sizeof y) == 0,
       "files read as one stream");
    gpt_data_close(a);
    gpt_data_close(c);
    gpt_data_close(g);

    /* Errors. */
    ok(gpt_data_open(p1, 1, 1000, GPT_DATA_RANDOM, 1, &err) == NULL && strstr(err.msg, "fewer than one window"),
       "too little data: %s", err.msg);
    const char *pz[] = {z};
    ok(gpt_data_open(pz, 1, T, GPT_DATA_RANDOM, 1, &err) == NULL && strstr(err.msg, "decompress"),
       "a compressed file is refused with advice: %s", err.msg);
    char nomatch[600];
    snprintf(nomatch, sizeof nomatch, "%s/none-*.tok", dir);
    const char *pn[] = {nomatch};
    ok(gpt_data_open(pn, 1, T, GPT_DATA_RANDOM, 1, &err) == NULL && strstr(err.msg, "matches no file"),
       "a glob matching nothing: %s", err.msg);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) diag("could not remove %s", dir);
    return done_testing();
}
