/* ckpt-io: checkpoint I/O measurements for scripts/bench-checkpoint-io. Not a test.
 *
 *   ckpt-io gen CONFIG DIR [--set K=V]... [--dtype f32|bf16] [--dist normal|trained] [--zstd N] [--seed S]
 *       writes a checkpoint of CONFIG's parameters filled with random values through the streaming
 *       writer, one tensor at a time (never the whole model in memory); times only the writer
 *       (hashing, writing, fsync, rename), not the random number generation.
 *   ckpt-io load DIR
 *       opens DIR and reads every tensor in file order with its checksum verified.
 *   ckpt-io hash --mb N
 *       XXH64 speed (the checksum every save and load computes) on N MiB, one thread.
 *   ckpt-io zbench --dtype f32|bf16 --dist normal|trained --mb N --level L
 *       zstd ratio and single-thread compress/decompress speed on N MiB of such values.
 * Each prints one JSON line. Distributions: `normal` is N(0, 0.02); `trained` imitates trained weights
 * (heavy tails and uneven rows): per row a log-normal scale (sigma 0.7) times a Student-t(4) value,
 * times 0.02; `upcast` is `trained` rounded to bf16 and stored as f32 (an f32 checkpoint of a model
 * trained or published in bf16: the low 16 bits of every value are zero). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#include <zstd.h>

#include "checkpoint.h"
#include "config.h"
#include "params.h"
#include "safetensors.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* xoshiro256** */
typedef struct { uint64_t s[4]; } rng;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next(rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return res;
}

static void seed(rng *r, uint64_t v)
{
    for (int i = 0; i < 4; i++) {
        v += 0x9e3779b97f4a7c15ull;
        uint64_t z = v;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static double unif(rng *r) { return ((double)(next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Box-Muller, both outputs */
static void normals(rng *r, float *out, size_t n, double sd)
{
    for (size_t i = 0; i < n; i += 2) {
        double u = unif(r), v = unif(r), m = sqrt(-2 * log(u)) * sd;
        out[i] = (float)(m * cos(2 * M_PI * v));
        if (i + 1 < n) out[i + 1] = (float)(m * sin(2 * M_PI * v));
    }
}

static void fill(rng *r, int trained, float *out, size_t n, size_t rowlen)
{
    if (!trained) {
        normals(r, out, n, 0.02);
        return;
    }
    if (rowlen == 0) rowlen = n ? n : 1;
    float z[5];
    for (size_t i = 0; i < n; i += rowlen) {
        normals(r, z, 1, 0.7);
        double rs = 0.02 * exp(z[0]);
        for (size_t j = i; j < n && j < i + rowlen; j++) {
            /* Student-t(4) = N / sqrt(chi2(4)/4) */
            normals(r, z, 5, 1.0);
            double c = (double)(z[1] * z[1] + z[2] * z[2] + z[3] * z[3] + z[4] * z[4]) / 4;
            out[j] = (float)(rs * z[0] / sqrt(c + 1e-12));
        }
    }
}

static void to_dtype(gpt_st_dtype d, float *f, size_t n)
{
    if (d != GPT_ST_BF16) return;
    uint16_t *h = (uint16_t *)(void *)f;
    for (size_t i = 0; i < n; i++) h[i] = gpt_f32_to_bf16(f[i]); /* forward in place: h[i] is behind f[i] */
}

static int parse_dtype(const char *s, gpt_st_dtype *d)
{
    if (strcmp(s, "f32") == 0) *d = GPT_ST_F32;
    else if (strcmp(s, "bf16") == 0) *d = GPT_ST_BF16;
    else return -1;
    return 0;
}

static int fail(const gpt_err *e)
{
    fprintf(stderr, "ckpt-io: %s\n", e->msg);
    return 1;
}

static int cmd_gen(int argc, char **argv)
{
    if (argc < 4) return fprintf(stderr, "ckpt-io gen CONFIG DIR [options]\n"), 2;
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load(argv[2], &cfg, &err) < 0) return fail(&err);
    gpt_st_dtype dt = GPT_ST_F32;
    int trained = 0, zl = 0;
    uint64_t sd = 1;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--set") == 0) {
            if (gpt_config_set(&cfg, argv[i + 1], &err) < 0) return fail(&err);
        } else if (strcmp(argv[i], "--dtype") == 0) {
            if (parse_dtype(argv[i + 1], &dt) < 0) return fprintf(stderr, "ckpt-io: bad --dtype\n"), 2;
        } else if (strcmp(argv[i], "--dist") == 0) {
            trained = strcmp(argv[i + 1], "trained") == 0;
        } else if (strcmp(argv[i], "--zstd") == 0) {
            zl = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--seed") == 0) {
            sd = strtoull(argv[i + 1], NULL, 10);
        } else {
            return fprintf(stderr, "ckpt-io: unknown option %s\n", argv[i]), 2;
        }
    }
    gpt_param_table tab;
    if (gpt_params_build(&cfg.model, &tab, &err) < 0) return fail(&err);
    gpt_ckpt_opts o = {0};
    o.dtype = dt;
    o.zstd_level = zl;
    double t0 = now(), tw = 0;
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(argv[3], &cfg.model, 0, &o, &err);
    if (!w) return fail(&err);
    tw += now() - t0;
    int rc = 0;
    for (int i = 0; i < tab.n && rc == 0; i++) {
        uint64_t sh[4];
        for (int d = 0; d < tab.t[i].ndim; d++) sh[d] = (uint64_t)tab.t[i].shape[d];
        rc = gpt_ckpt_writer_add(w, tab.t[i].name, dt, tab.t[i].ndim, sh, &err);
    }
    size_t maxn = 0;
    for (int i = 0; i < tab.n; i++)
        if (tab.t[i].numel > maxn) maxn = tab.t[i].numel;
    float *buf = malloc(maxn * 4 + 4);
    uint64_t bytes = 0;
    int k;
    while (rc == 0 && (k = gpt_ckpt_writer_next(w)) >= 0) {
        const gpt_tensor *t = &tab.t[k];
        rng r;
        seed(&r, sd * 1000003u + (uint64_t)k);
        fill(&r, trained, buf, t->numel, t->ndim ? (size_t)t->shape[t->ndim - 1] : 1);
        to_dtype(dt, buf, t->numel);
        size_t nb = t->numel * gpt_st_dtype_size(dt);
        double a = now();
        rc = gpt_ckpt_writer_put(w, buf, nb, &err);
        tw += now() - a;
        bytes += nb;
    }
    free(buf);
    if (rc < 0) {
        gpt_ckpt_writer_abort(w);
        return fail(&err);
    }
    double a = now();
    if (gpt_ckpt_writer_commit(w, &err) < 0) return fail(&err);
    tw += now() - a;
    printf("{\"op\":\"save\",\"bytes\":%" PRIu64 ",\"tensors\":%d,\"largest_bytes\":%zu,\"seconds\":%.3f,\"GBps\":%.3f}\n", bytes,
           tab.n, maxn * gpt_st_dtype_size(dt), tw, (double)bytes / tw / 1e9);
    gpt_params_free(&tab);
    gpt_config_free(&cfg);
    return 0;
}

static int cmd_load(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "ckpt-io load DIR\n"), 2;
    gpt_err err;
    double t0 = now();
    gpt_ckpt *ck = gpt_ckpt_open(argv[2], &err);
    if (!ck) return fail(&err);
    uint64_t bytes = 0, maxb = 0;
    for (size_t i = 0; i < gpt_ckpt_count(ck); i++) {
        uint64_t b = gpt_ckpt_tensor_at(ck, i)->nbytes;
        bytes += b;
        if (b > maxb) maxb = b;
    }
    if (gpt_ckpt_verify(ck, NULL, NULL, &err) < 0) return fail(&err);
    double t = now() - t0;
    printf("{\"op\":\"load\",\"bytes\":%" PRIu64 ",\"seconds\":%.3f,\"GBps\":%.3f}\n", bytes, t, (double)bytes / t / 1e9);
    gpt_ckpt_close(ck);
    return 0;
}

static int cmd_zbench(int argc, char **argv)
{
    gpt_st_dtype dt = GPT_ST_F32;
    int trained = 0, level = 3;
    size_t mb = 64;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dtype") == 0 && parse_dtype(argv[i + 1], &dt) < 0) return 2;
        if (strcmp(argv[i], "--dist") == 0) trained = strcmp(argv[i + 1], "trained") == 0 ? 1 : strcmp(argv[i + 1], "upcast") == 0 ? 2 : 0;
        if (strcmp(argv[i], "--mb") == 0) mb = (size_t)atol(argv[i + 1]);
        if (strcmp(argv[i], "--level") == 0) level = atoi(argv[i + 1]);
    }
    size_t nb = mb << 20, n = nb / gpt_st_dtype_size(dt);
    float *f = malloc(n * 4);
    rng r;
    seed(&r, 7);
    fill(&r, trained != 0, f, n, 2048);
    if (trained == 2)
        for (size_t i = 0; i < n; i++) f[i] = gpt_bf16_to_f32(gpt_f32_to_bf16(f[i]));
    to_dtype(dt, f, n);
    size_t zc = ZSTD_compressBound(nb);
    unsigned char *z = malloc(zc), *back = malloc(nb);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1); /* as the checkpoint writer does */
    double t0 = now();
    size_t zn = ZSTD_compress2(cc, z, zc, f, nb);
    double tc = now() - t0;
    if (ZSTD_isError(zn)) return fprintf(stderr, "ckpt-io: %s\n", ZSTD_getErrorName(zn)), 1;
    t0 = now();
    size_t bn = ZSTD_decompress(back, nb, z, zn);
    double td = now() - t0;
    if (ZSTD_isError(bn) || bn != nb || memcmp(back, f, nb) != 0) return fprintf(stderr, "ckpt-io: round trip failed\n"), 1;
    printf("{\"op\":\"zstd\",\"dtype\":\"%s\",\"dist\":\"%s\",\"level\":%d,\"bytes\":%zu,\"compressed\":%zu,\"ratio\":%.4f,"
           "\"compress_MBps\":%.1f,\"decompress_MBps\":%.1f}\n",
           gpt_st_dtype_name(dt), trained == 2 ? "upcast" : trained ? "trained" : "normal", level, nb, zn, (double)nb / (double)zn, (double)nb / tc / 1e6,
           (double)nb / td / 1e6);
    ZSTD_freeCCtx(cc);
    free(f);
    free(z);
    free(back);
    return 0;
}

static int cmd_hash(int argc, char **argv)
{
    size_t mb = argc >= 4 ? (size_t)atol(argv[3]) : 256, n = mb << 20;
    unsigned char *b = malloc(n ? n : 1);
    memset(b, 1, n);
    double t0 = now();
    uint64_t h = XXH64(b, n, 0);
    double t = now() - t0;
    printf("{\"op\":\"xxh64\",\"bytes\":%zu,\"GBps\":%.3f,\"h\":\"%016" PRIx64 "\"}\n", n, (double)n / t / 1e9, h);
    free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "hash") == 0) return cmd_hash(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "gen") == 0) return cmd_gen(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "load") == 0) return cmd_load(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "zbench") == 0) return cmd_zbench(argc, argv);
    fprintf(stderr, "usage: ckpt-io gen|load|zbench ... (see the comment at the top of t/tools/ckpt-io.c)\n");
    return 2;
}
