/* Fuzz the compressed-shard reader (ckpt_read.c: the zstd stream decoder, the header inside the
 * stream, its agreement with the manifest, tensor reads and the end-of-data check): a checkpoint
 * with a valid manifest and one .safetensors.zst shard whose bytes come from the input. First input
 * byte even: the rest is the shard file as is (exercises zstd framing); odd: the rest is the
 * uncompressed shard, compressed here (exercises the safetensors header and data inside the stream).
 * gpt_ckpt_verify must succeed or fail with a message, never crash.
 * Seeds: run once with FUZZ_CKPT_SEEDS=DIR to write the valid shard in both forms into DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "checkpoint.h"
#include "ckpt_internal.h"
#include "fileio.h"

static char top[64], dir[64];
static char shard[128];

static const char cfg_yaml[] = "tokenizer: gpt2\nmodel:\n  vocab_size: 16\n  d_model: 8\n  n_layers: 1\n  n_heads: 2\n"
                               "  max_seq_len: 8\n  norm: layernorm\n  positions: learned\n  mlp:\n    type: dense\n"
                               "    activation: gelu_tanh\n    d_ff: 16\n";

static void put_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n) fwrite(p, 1, n, f);
    fclose(f);
}

static void cleanup(void) { gpt_ckpt_remove_tree(top); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    gpt_err err;
    gpt_config c;
    if (gpt_config_load_mem(cfg_yaml, strlen(cfg_yaml), "fuzz", &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    char tmpl[] = "/tmp/fuzz_ckpt_zstd.XXXXXX";
    if (!mkdtemp(tmpl)) abort();
    snprintf(top, sizeof top, "%s", tmpl);
    atexit(cleanup);
    snprintf(dir, sizeof dir, "%s/ck", tmpl);
    gpt_ckpt_opts o = {0};
    o.zstd_level = 1;
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, &c.model, 7, &o, &err);
    uint64_t s1[2] = {3, 5}, s2[1] = {6};
    if (!w || gpt_ckpt_writer_add(w, "a", GPT_ST_F32, 2, s1, &err) < 0 || gpt_ckpt_writer_add(w, "b", GPT_ST_BF16, 1, s2, &err) < 0)
        abort();
    unsigned char buf[64];
    int i;
    while ((i = gpt_ckpt_writer_next(w)) >= 0) {
        size_t n = i == 0 ? 60 : 12;
        for (size_t k = 0; k < n; k++) buf[k] = (unsigned char)(k * 37 + (size_t)i);
        if (gpt_ckpt_writer_put(w, buf, n, &err) < 0) abort();
    }
    if (gpt_ckpt_writer_commit(w, &err) < 0) abort();
    gpt_config_free(&c);
    snprintf(shard, sizeof shard, "%s/model.safetensors.zst", dir);
    const char *seeds = getenv("FUZZ_CKPT_SEEDS");
    if (seeds) {
        gpt_blob b;
        if (gpt_blob_read(&b, shard, &err) < 0) abort();
        size_t cap = 1 << 20; /* the streaming writer records no content size */
        unsigned char *u = malloc(cap + 1), *z = malloc(b.size + 1);
        u[0] = 1;
        z[0] = 0;
        size_t raw = ZSTD_decompress(u + 1, cap, b.data, b.size);
        if (ZSTD_isError(raw)) abort();
        memcpy(z + 1, b.data, b.size);
        char p[512];
        snprintf(p, sizeof p, "%s/plain", seeds);
        put_file(p, u, raw + 1);
        snprintf(p, sizeof p, "%s/zstd", seeds);
        put_file(p, z, b.size + 1);
        free(u);
        free(z);
        gpt_blob_free(&b);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) {
        size_t cap = ZSTD_compressBound(size - 1);
        void *z = malloc(cap);
        size_t zn = ZSTD_compress(z, cap, data + 1, size - 1, 1);
        if (!ZSTD_isError(zn)) put_file(shard, z, zn);
        free(z);
    } else {
        put_file(shard, data + 1, size - 1);
    }
    gpt_err err;
    gpt_ckpt *ck = gpt_ckpt_open(dir, &err);
    if (!ck) return 0;
    gpt_ckpt_verify(ck, NULL, NULL, &err);
    /* reading backwards restarts the decoder */
    unsigned char buf[64];
    for (size_t i = gpt_ckpt_count(ck); i-- > 0;) {
        const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
        if (t->nbytes <= sizeof buf) gpt_ckpt_read(ck, t, buf, &err);
    }
    gpt_ckpt_close(ck);
    return 0;
}
