/* dataloader.c: windows over a virtual concatenation of mapped token streams. */
#include "dataloader.h"

#include <glob.h>
#include <stdlib.h>
#include <string.h>

#include "tokens.h"

typedef struct data_file {
    gpt_tokr *r;
    uint64_t first, n; /* offset of its first token in the virtual stream, token count */
} data_file;

struct gpt_dataloader {
    data_file *f;
    size_t nf;
    uint64_t n_tokens;
    uint32_t vocab;
    int T;
    gpt_data_mode mode;
    uint64_t seed, samples;
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t gcd64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static int add_file(gpt_dataloader *d, const char *path, gpt_err *err)
{
    gpt_tokr *r = gpt_tokr_open(path, err);
    if (!r) return -1;
    uint64_t n = 0;
    if (!gpt_tokr_map(r, &n)) {
        gpt_errf(err, "%s: training data must be a plain (uncompressed) regular token file so it can be mapped; "
                      "decompress it first (zstd -d)", path);
        gpt_tokr_close(r);
        return -1;
    }
    d->f = gpt_xrealloc(d->f, (d->nf + 1) * sizeof *d->f);
    d->f[d->nf++] = (data_file){r, d->n_tokens, n};
    d->n_tokens += n;
    if (gpt_tokr_vocab(r) > d->vocab) d->vocab = gpt_tokr_vocab(r);
    return 0;
}

gpt_dataloader *gpt_data_open(const char *const *paths, size_t n_paths, int T, gpt_data_mode mode, uint64_t seed,
                              gpt_err *err)
{
    if (T < 1) {
        gpt_errf(err, "data: sequence length must be >= 1 (got %d)", T);
        return NULL;
    }
    if (n_paths == 0) {
        gpt_errf(err, "data: no token files given");
        return NULL;
    }
    gpt_dataloader *d = gpt_xcalloc(1, sizeof *d);
    d->T = T;
    d->mode = mode;
    d->seed = seed;
    for (size_t i = 0; i < n_paths; i++) {
        const char *p = paths[i];
        if (strpbrk(p, "*?[")) {
            glob_t g;
            int rc = glob(p, 0, NULL, &g);
            if (rc != 0) {
                gpt_errf(err, "data: pattern '%s' matches no file", p);
                if (rc != GLOB_NOMATCH) globfree(&g);
                gpt_data_close(d);
                return NULL;
            }
            for (size_t j = 0; j < g.gl_pathc; j++)
                if (add_file(d, g.gl_pathv[j], err) < 0) {
                    globfree(&g);
                    gpt_data_close(d);
                    return NULL;
                }
            globfree(&g);
        } else if (add_file(d, p, err) < 0) {
            gpt_data_close(d);
            return NULL;
        }
    }
    if (d->n_tokens < (uint64_t)T + 1) {
        gpt_errf(err, "data: %s%s holds %llu tokens, fewer than one window of seq_len + 1 = %d; use more data or a "
                      "shorter seq_len", paths[0], n_paths > 1 ? " (and the other files)" : "",
                 (unsigned long long)d->n_tokens, T + 1);
        gpt_data_close(d);
        return NULL;
    }
    return d;
}

void gpt_data_close(gpt_dataloader *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->nf; i++) gpt_tokr_close(d->f[i].r);
    free(d->f);
    free(d);
}

uint64_t gpt_data_tokens(const gpt_dataloader *d) { return d->n_tokens; }
uint32_t gpt_data_vocab(const gpt_dataloader *d) { return d->vocab; }
uint64_t gpt_data_windows_per_epoch(const gpt_dataloader *d) { return (d->n_tokens - 1) / (uint64_t)d->T; }

uint64_t gpt_data_window_start(const gpt_dataloader *d, uint64_t k)
{
    if (d->mode == GPT_DATA_RANDOM) {
        uint64_t span = d->n_tokens - (uint64_t)d->T; /* starts 0 .. n - T - 1 leave room for T + 1 */
        return mix64(mix64(d->seed) ^ k) % span;
    }
    uint64_t W = gpt_data_windows_per_epoch(d), e = k / W, w = k % W;
    if (d->seed != 0 && W > 1) {
        /* An affine bijection w -> (a w + c) mod W per epoch: a permutation without a table. */
        uint64_t h = mix64(mix64(d->seed) ^ (e * 0x632be59bd9b4e019ull));
        uint64_t a = (h % W) | 1;
        while (gcd64(a, W) != 1) a = a + 1 < W ? a + 1 : 1;
        uint64_t c = mix64(h) % W;
        w = (uint64_t)(((unsigned __int128)a * w + c) % W);
    }
    return w * (uint64_t)d->T;
}

static void copy_tokens(const gpt_dataloader *d, uint64_t start, int n, int *out)
{
    /* Binary search for the file holding `start`, then walk forward across boundaries. */
    size_t lo = 0, hi = d->nf;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (d->f[mid].first <= start) lo = mid;
        else hi = mid;
    }
    size_t fi = lo;
    for (int i = 0; i < n; i++) {
        uint64_t at = start + (uint64_t)i;
        while (at >= d->f[fi].first + d->f[fi].n) fi++;
        out[i] = (int)gpt_tokr_get(d->f[fi].r, at - d->f[fi].first);
    }
}

void gpt_data_fill(const gpt_dataloader *d, uint64_t first, int B, int *tokens, int *targets)
{
    const int T = d->T;
    int *buf = gpt_xmalloc(((size_t)T + 1) * sizeof(int));
    for (int b = 0; b < B; b++) {
        copy_tokens(d, gpt_data_window_start(d, first + (uint64_t)b), T + 1, buf);
        memcpy(tokens + (size_t)b * T, buf, (size_t)T * sizeof(int));
        memcpy(targets + (size_t)b * T, buf + 1, (size_t)T * sizeof(int));
    }
    free(buf);
}

void gpt_data_next(gpt_dataloader *d, int rank, int dp, int B, int *tokens, int *targets)
{
    gpt_data_fill(d, d->samples + (uint64_t)rank * (uint64_t)B, B, tokens, targets);
    d->samples += (uint64_t)dp * (uint64_t)B;
}

gpt_data_pos gpt_data_tell(const gpt_dataloader *d)
{
    gpt_data_pos p = {d->samples, d->seed, d->n_tokens, (uint32_t)d->mode, (uint32_t)d->T};
    return p;
}

int gpt_data_seek(gpt_dataloader *d, const gpt_data_pos *pos, gpt_err *err)
{
    if (pos->n_tokens != d->n_tokens)
        return gpt_errf(err, "data position: saved for a stream of %llu tokens, but the data now holds %llu; resume "
                             "with the same data files", (unsigned long long)pos->n_tokens,
                        (unsigned long long)d->n_tokens);
    if (pos->seq_len != (uint32_t)d->T || pos->mode != (uint32_t)d->mode || pos->seed != d->seed)
        return gpt_errf(err, "data position: saved with seq_len %u, %s windows, seed %llu; now seq_len %d, %s, seed "
                             "%llu; resume with the same settings",
                        pos->seq_len, pos->mode ? "sequential" : "random", (unsigned long long)pos->seed, d->T,
                        d->mode ? "sequential" : "random", (unsigned long long)d->seed);
    d->samples = pos->samples;
    return 0;
}
