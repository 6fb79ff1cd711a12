/* gpt-shard: inspect, verify, import, export, convert, split and merge checkpoints. See gpt-shard(1)
 * and gpt-checkpoint(5). Every command works one tensor at a time. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blas_check.h"
#include "checkpoint.h"
#include "ckpt_internal.h"
#include "fileio.h"
#include "hf_config.h"
#include "mxfp4.h"
#include "params.h"
#include "safetensors.h"
#include "shard_layout.h"

#define PROG "gpt-shard"

static const char usage_text[] =
    "usage: gpt-shard COMMAND [OPTIONS] ARGS\n"
    "\n"
    "commands:\n"
    "  info CKPT                         config, tensors, sizes, total/active parameter counts\n"
    "  verify CKPT                       read everything, check shard headers and every checksum\n"
    "  import --from hf|openai SRC -o DST  Hugging Face (gpt_oss, gpt2) or OpenAI gpt-oss weights\n"
    "  export --to hf CKPT -o DIR        model.safetensors + config.json for transformers\n"
    "  convert CKPT -o DST               change --dtype and/or --compress\n"
    "  split CKPT -o DIR --tp N --pp M [--ep K]  one checkpoint per rank (gpt-checkpoint(5))\n"
    "  merge DIR -o DST                  undo split (byte-identical to the original)\n"
    "CKPT is a checkpoint directory or a checkpoint root holding `latest`.\n"
    "\n"
    "options:\n"
    "  -o, --output PATH         destination (must not exist; written atomically)\n"
    "      --from hf|openai      import: source layout\n"
    "      --to hf               export: target layout\n"
    "      --dtype f32|bf16      float dtype of the output (default: keep; import/convert: MXFP4\n"
    "                            experts are kept unless --dtype is given, then dequantized)\n"
    "      --compress zstd[:N]|none  shard compression (default none; zstd level 3)\n"
    "      --config FILE         import: model config (gpt-config(5)) instead of SRC/config.json\n"
    "                            (Hugging Face's for --from hf, OpenAI's original one for --from openai)\n"
    "      --tokenizer NAME      import: tokenizer to record (default by model type)\n"
    "      --shard-size BYTES    start a new shard file past this size (default 4G; K/M/G suffixes)\n"
    "      --tp N, --pp M, --ep K  split: tensor, pipeline and expert parallel sizes (default 1)\n"
    "  -q, --quiet               no summary on stderr\n"
    "  -h, --help                this help        --version    the version\n";

typedef struct {
    const char *cmd, *output, *from, *to, *config, *tokenizer;
    int dtype; /* -1 keep, else gpt_st_dtype */
    int zstd;  /* -1 keep, 0 none, else level */
    uint64_t shard_size;
    int tp, pp, ep, quiet;
    char **args;
    int nargs;
} options;

static int die(const gpt_err *err)
{
    fprintf(stderr, PROG ": %s\n", err->msg);
    return 1;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\ntry 'gpt-shard --help'\n", stderr);
    va_end(ap);
    return 2;
}

/* ---- progress (a TTY only) ---- */

typedef struct progress {
    int on;
    size_t total;
    const char *what;
} progress;

static void prog_init(progress *p, const options *o, const char *what, size_t total)
{
    p->on = !o->quiet && isatty(2);
    p->total = total;
    p->what = what;
}

static void prog_step(progress *p, size_t done)
{
    if (!p->on || p->total == 0) return;
    int w = 30, k = (int)(done * (size_t)w / p->total);
    fprintf(stderr, "\r%s [%.*s%*s] %zu/%zu", p->what, k, "##############################", w - k, "", done, p->total);
    if (done == p->total) fputc('\n', stderr);
}

static void prog_cb(void *ctx, size_t done, size_t total)
{
    (void)total;
    prog_step(ctx, done);
}

/* ---- tensor sources: a Hugging Face / OpenAI safetensors set, or a native checkpoint ---- */

typedef struct src {
    gpt_st_set *st;
    gpt_ckpt *ck;
} src;

typedef struct sinfo {
    gpt_st_dtype dtype;
    int ndim;
    uint64_t shape[GPT_ST_MAX_DIMS];
    uint64_t numel, nbytes;
    const void *h;
} sinfo;

static int src_find(const src *s, const char *name, sinfo *i)
{
    memset(i, 0, sizeof *i);
    if (s->st) {
        const gpt_st_tensor *t = gpt_st_set_find(s->st, name);
        /* GPT-2's original checkpoints drop the "transformer." prefix */
        if (!t && strncmp(name, "transformer.", 12) == 0) t = gpt_st_set_find(s->st, name + 12);
        if (!t) return 0;
        i->dtype = t->dtype;
        i->ndim = t->ndim;
        memcpy(i->shape, t->shape, sizeof i->shape);
        i->numel = t->numel;
        i->nbytes = t->nbytes;
        i->h = t;
        return 1;
    }
    const gpt_ckpt_tensor *t = gpt_ckpt_find(s->ck, name);
    if (!t) return 0;
    i->dtype = t->dtype;
    i->ndim = t->ndim;
    memcpy(i->shape, t->shape, sizeof i->shape);
    i->numel = t->numel;
    i->nbytes = t->nbytes;
    i->h = t;
    return 1;
}

static int src_raw(src *s, const sinfo *i, void *buf, gpt_err *err)
{
    if (s->st) {
        if (i->nbytes) memcpy(buf, ((const gpt_st_tensor *)i->h)->data, i->nbytes);
        gpt_st_release(i->h); /* keeps resident memory at one tensor when importing a model bigger than RAM */
        return 0;
    }
    return gpt_ckpt_read(s->ck, i->h, buf, err);
}

static int is_float(gpt_st_dtype d) { return d == GPT_ST_F32 || d == GPT_ST_BF16 || d == GPT_ST_F16 || d == GPT_ST_F64; }

static void to_f32(gpt_st_dtype d, const unsigned char *p, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++) switch (d) {
        case GPT_ST_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case GPT_ST_BF16: out[i] = gpt_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)); break;
        case GPT_ST_F16: out[i] = gpt_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8)); break;
        default: {
            double v;
            memcpy(&v, p + 8 * i, 8);
            out[i] = (float)v;
        }
        }
}

static void from_f32(gpt_st_dtype d, const float *in, size_t n, unsigned char *out)
{
    if (d == GPT_ST_F32) {
        memmove(out, in, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h = gpt_f32_to_bf16(in[i]);
        out[2 * i] = (unsigned char)h;
        out[2 * i + 1] = (unsigned char)(h >> 8);
    }
}

/* ---- recipes: how each output tensor is made ---- */

enum { R_RAW, R_FLOAT, R_MXFP4, R_QKV };

typedef struct recipe {
    char name[GPT_CKPT_NAME_MAX + 1];
    int kind;
    gpt_st_dtype out;
    int ndim;
    uint64_t shape[GPT_ST_MAX_DIMS];
    uint64_t numel, nbytes;
    sinfo a, b;           /* sources (b: MXFP4 scales) */
    uint64_t row0, rows;  /* R_QKV: the rows of a fused source; R_FLOAT: source rows (rest zero padding) */
} recipe;

typedef struct plan {
    recipe *r;
    int n, cap;
} plan;

static recipe *plan_add(plan *p, const char *name, int kind, gpt_st_dtype out, int ndim, const uint64_t *shape)
{
    if (p->n == p->cap) p->r = gpt_xrealloc(p->r, (size_t)(p->cap = p->cap ? 2 * p->cap : 64) * sizeof *p->r);
    recipe *r = &p->r[p->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->kind = kind;
    r->out = out;
    r->ndim = ndim;
    r->numel = 1;
    for (int d = 0; d < ndim; d++) {
        r->shape[d] = shape[d];
        r->numel *= shape[d];
    }
    r->nbytes = r->numel * gpt_st_dtype_size(out);
    return r;
}

/* Produce a recipe's bytes into *buf (grown as needed). Only this tensor and its sources are held. */
static int produce(src *s, const recipe *r, unsigned char **buf, size_t *cap, gpt_err *err)
{
    size_t need = (size_t)r->nbytes > (size_t)r->numel * 4 ? (size_t)r->nbytes : (size_t)r->numel * 4;
    if (r->kind != R_MXFP4 && (size_t)r->a.nbytes > need) need = (size_t)r->a.nbytes;
    if (need > *cap) *buf = gpt_xrealloc(*buf, *cap = need ? need : 1);
    if (r->kind == R_RAW) return src_raw(s, &r->a, *buf, err);
    if (r->kind == R_FLOAT) { /* in place: this tensor is held once, not twice */
        if (src_raw(s, &r->a, *buf, err) < 0) return -1;
        float *f = (float *)*buf;
        size_t n = (size_t)r->a.numel;
        if (r->a.dtype == GPT_ST_F64)
            to_f32(r->a.dtype, *buf, n, f); /* shrinks: element i is read before anything lands on it */
        else if (r->a.dtype != GPT_ST_F32)
            for (size_t i = n; i-- > 0;) to_f32(r->a.dtype, *buf + 2 * i, 1, &f[i]); /* grows: from the end */
        memset(f + n, 0, (size_t)(r->numel - n) * 4);
        from_f32(r->out, f, (size_t)r->numel, *buf);
        return 0;
    }
    unsigned char *tmp = gpt_xmalloc(r->a.nbytes ? r->a.nbytes : 1);
    int rc = src_raw(s, &r->a, tmp, err);
    float *f = (float *)*buf;
    if (rc == 0 && r->kind == R_FLOAT) {
        memset(f, 0, (size_t)r->numel * 4);
        to_f32(r->a.dtype, tmp, (size_t)r->a.numel, f);
    } else if (rc == 0 && r->kind == R_QKV) {
        uint64_t rowlen = r->a.numel / r->a.shape[0];
        float *all = gpt_xmalloc((size_t)r->a.numel * 4);
        to_f32(r->a.dtype, tmp, (size_t)r->a.numel, all);
        memcpy(f, all + r->row0 * rowlen, (size_t)(r->rows * rowlen) * 4);
        free(all);
    } else if (rc == 0 && r->kind == R_MXFP4) {
        unsigned char *sc = gpt_xmalloc(r->b.nbytes ? r->b.nbytes : 1);
        rc = src_raw(s, &r->b, sc, err);
        size_t E = (size_t)r->shape[0], I = (size_t)r->shape[1], O = (size_t)r->shape[2];
        float *t2 = gpt_xmalloc(E * O * I * 4);
        if (rc == 0) rc = gpt_mxfp4_dequant_shaped(r->name, tmp, r->a.ndim, r->a.shape, sc, r->b.ndim, r->b.shape, t2, E * O * I, err);
        if (rc == 0)
            for (size_t e = 0; e < E; e++)
                for (size_t o = 0; o < O; o++)
                    for (size_t i = 0; i < I; i++) f[(e * I + i) * O + o] = t2[(e * O + o) * I + i];
        free(t2);
        free(sc);
    }
    free(tmp);
    if (rc == 0) from_f32(r->out, f, (size_t)r->numel, *buf);
    return rc;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t m = 1;
    if (*end == 'K' || *end == 'k') m = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') m = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') m = 1ull << 30, end++;
    if (*end || v == 0 || v > UINT64_MAX / m) return -1;
    *out = v * m;
    return 0;
}

static gpt_ckpt_opts write_opts(const options *o, gpt_st_dtype dtype, int zstd, uint64_t shard_size)
{
    gpt_ckpt_opts w = {0};
    w.dtype = dtype;
    w.zstd_level = zstd;
    w.max_shard_bytes = shard_size;
    return w;
    (void)o;
}

/* Write a plan as a checkpoint: declare, then produce in the order the writer asks. */
static int write_plan(src *s, plan *p, const char *dir, const gpt_model_config *cfg, int64_t step,
                      const gpt_ckpt_opts *wo, const options *o, gpt_ckpt *blobs_from, gpt_err *err)
{
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, cfg, step, wo, err);
    if (!w) return -1;
    int rc = 0;
    for (int i = 0; i < p->n && rc == 0; i++) rc = gpt_ckpt_writer_add(w, p->r[i].name, p->r[i].out, p->r[i].ndim, p->r[i].shape, err);
    for (size_t i = 0; blobs_from && i < gpt_ckpt_blob_count(blobs_from) && rc == 0; i++) {
        void *d;
        size_t n;
        rc = gpt_ckpt_read_blob(blobs_from, gpt_ckpt_blob_at(blobs_from, i)->name, &d, &n, err);
        if (rc == 0) rc = gpt_ckpt_writer_blob(w, gpt_ckpt_blob_at(blobs_from, i)->name, d, n, err);
        free(d);
    }
    unsigned char *buf = NULL;
    size_t cap = 0, done = 0;
    progress pg;
    prog_init(&pg, o, "writing", (size_t)p->n);
    int i;
    while (rc == 0 && (i = gpt_ckpt_writer_next(w)) >= 0) {
        rc = produce(s, &p->r[i], &buf, &cap, err);
        if (rc == 0) rc = gpt_ckpt_writer_put(w, buf, (size_t)p->r[i].nbytes, err);
        prog_step(&pg, ++done);
    }
    free(buf);
    if (rc < 0) {
        gpt_ckpt_writer_abort(w);
        return -1;
    }
    return gpt_ckpt_writer_commit(w, err);
}

/* ---- info / verify ---- */

static void human(char *b, size_t n, double v)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (v >= 1024 && k < 4) v /= 1024, k++;
    snprintf(b, n, k ? "%.2f %s" : "%.0f %s", v, u[k]);
}

static int cmd_info(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1) return usage_error("info takes one checkpoint");
    gpt_ckpt *ck = gpt_ckpt_open(o->args[0], &err);
    if (!ck) return die(&err);
    const gpt_config *cfg = gpt_ckpt_config(ck);
    gpt_ckpt_mesh m = gpt_ckpt_mesh_of(ck);
    uint64_t total, active, bytes = 0;
    gpt_param_count(&cfg->model, &total, &active);
    printf("checkpoint: %s\nstep: %" PRId64 "\ntokenizer: %s\ndtype: %s\ncompression: %s\n", gpt_ckpt_dir(ck),
           gpt_ckpt_step(ck), cfg->model.tokenizer, gpt_st_dtype_name(gpt_ckpt_dtype(ck)),
           gpt_ckpt_zstd_level(ck) ? "zstd" : "none");
    printf("mesh: tp=%d pp=%d ep=%d (this rank: tp %d, pp %d, ep %d)\n", m.tp, m.pp, m.ep, m.tp_rank, m.pp_rank, m.ep_rank);
    printf("parameters: %" PRIu64 " total, %" PRIu64 " active per token (full model)\n", total, active);
    printf("shards: %zu\n", gpt_ckpt_nshards(ck));
    printf("tensors: %zu\n", gpt_ckpt_count(ck));
    for (size_t i = 0; i < gpt_ckpt_count(ck); i++) {
        const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
        char shp[128] = "";
        size_t u = 0;
        for (int d = 0; d < t->ndim && u < sizeof shp; d++)
            u += (size_t)snprintf(shp + u, sizeof shp - u, "%s%" PRIu64, d ? ", " : "", t->shape[d]);
        char hb[32];
        human(hb, sizeof hb, (double)t->nbytes);
        printf("  %-56s %-5s (%s) %s  [%s]\n", t->name, gpt_st_dtype_name(t->dtype), shp, hb,
               gpt_ckpt_shard_file(ck, (size_t)t->shard));
        bytes += t->nbytes;
    }
    char hb[32];
    human(hb, sizeof hb, (double)bytes);
    printf("tensor bytes: %" PRIu64 " (%s)\n", bytes, hb);
    printf("blobs: %zu\n", gpt_ckpt_blob_count(ck));
    for (size_t i = 0; i < gpt_ckpt_blob_count(ck); i++)
        printf("  %s %" PRIu64 " bytes\n", gpt_ckpt_blob_at(ck, i)->name, gpt_ckpt_blob_at(ck, i)->size);
    printf("config:\n");
    fflush(stdout);
    gpt_config_dump(cfg, stdout, &err);
    gpt_ckpt_close(ck);
    return 0;
}

static int cmd_verify(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1) return usage_error("verify takes one checkpoint");
    gpt_ckpt *ck = gpt_ckpt_open(o->args[0], &err);
    if (!ck) return die(&err);
    progress pg;
    prog_init(&pg, o, "verifying", gpt_ckpt_count(ck));
    /* the manifest must describe the config's parameters (a rank of a split holds only its part) */
    gpt_ckpt_mesh m = gpt_ckpt_mesh_of(ck);
    int rc = 0;
    if (m.tp == 1 && m.pp == 1 && m.ep == 1) {
        gpt_param_table tab;
        rc = gpt_params_build(&gpt_ckpt_config(ck)->model, &tab, &err);
        for (int i = 0; rc == 0 && i < tab.n; i++) {
            const gpt_tensor *p = &tab.t[i];
            char bn[GPT_TENSOR_NAME_MAX + 16];
            snprintf(bn, sizeof bn, "%s_blocks", p->name);
            const gpt_ckpt_tensor *t = gpt_ckpt_find(ck, p->name);
            if (!t && !gpt_ckpt_find(ck, bn)) rc = gpt_errf(&err, "%s: tensor %s is missing", gpt_ckpt_dir(ck), p->name);
            int same = t && t->ndim == p->ndim;
            for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == (uint64_t)p->shape[d];
            if (rc == 0 && t && !same) rc = gpt_errf(&err, "%s: tensor %s: shape does not match model.yaml", gpt_ckpt_dir(ck), p->name);
        }
        if (rc == 0) gpt_params_free(&tab);
    }
    if (rc == 0) rc = gpt_ckpt_verify(ck, prog_cb, &pg, &err);
    if (rc < 0) {
        gpt_ckpt_close(ck);
        return die(&err);
    }
    if (!o->quiet)
        fprintf(stderr, PROG ": %s: OK (%zu tensors, %zu blobs, checksums match)\n", gpt_ckpt_dir(ck), gpt_ckpt_count(ck),
                gpt_ckpt_blob_count(ck));
    gpt_ckpt_close(ck);
    return 0;
}

/* ---- import ---- */

/* OpenAI's original gpt-oss names -> ours (Hugging Face). qkv is split in plan_openai. */
static int openai_name(const char *ours, char *out, size_t n)
{
    int l;
    char rest[128];
    if (strcmp(ours, "model.embed_tokens.weight") == 0) return snprintf(out, n, "embedding.weight"), 1;
    if (strcmp(ours, "model.norm.weight") == 0) return snprintf(out, n, "norm.scale"), 1;
    if (strcmp(ours, "lm_head.weight") == 0) return snprintf(out, n, "unembedding.weight"), 1;
    if (sscanf(ours, "model.layers.%d.%127s", &l, rest) != 2) return 0;
    static const char *const map[][2] = {
        {"input_layernorm.weight", "attn.norm.scale"},
        {"self_attn.sinks", "attn.sinks"},
        {"self_attn.o_proj.weight", "attn.out.weight"},
        {"self_attn.o_proj.bias", "attn.out.bias"},
        {"post_attention_layernorm.weight", "mlp.norm.scale"},
        {"mlp.router.weight", "mlp.gate.weight"},
        {"mlp.router.bias", "mlp.gate.bias"},
        {"mlp.experts.gate_up_proj_blocks", "mlp.mlp1_weight.blocks"},
        {"mlp.experts.gate_up_proj_scales", "mlp.mlp1_weight.scales"},
        {"mlp.experts.gate_up_proj", "mlp.mlp1_weight"},
        {"mlp.experts.gate_up_proj_bias", "mlp.mlp1_bias"},
        {"mlp.experts.down_proj_blocks", "mlp.mlp2_weight.blocks"},
        {"mlp.experts.down_proj_scales", "mlp.mlp2_weight.scales"},
        {"mlp.experts.down_proj", "mlp.mlp2_weight"},
        {"mlp.experts.down_proj_bias", "mlp.mlp2_bias"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(rest, map[i][0]) == 0) return snprintf(out, n, "block.%d.%s", l, map[i][1]), 1;
    return 0;
}

static int same_shape(const sinfo *i, const gpt_tensor *p)
{
    if (i->ndim != p->ndim) return 0;
    for (int d = 0; d < p->ndim; d++)
        if (i->shape[d] != (uint64_t)p->shape[d]) return 0;
    return 1;
}

/* One parameter of the table from a source: direct, vocab-padded, MXFP4 kept or dequantized,
 * or (openai) rows of the fused qkv. */
static int plan_param(src *s, const gpt_model_config *cfg, const gpt_tensor *p, int dtype, int openai, plan *pl,
                      gpt_err *err)
{
    char nm[GPT_CKPT_NAME_MAX + 1], bn[GPT_CKPT_NAME_MAX + 16], sn[GPT_CKPT_NAME_MAX + 16];
    uint64_t shape[4];
    for (int d = 0; d < p->ndim; d++) shape[d] = (uint64_t)p->shape[d];
    sinfo a, b;
    if (openai) {
        int l;
        char kind[8], what[8];
        if (sscanf(p->name, "model.layers.%d.self_attn.%1[qkv]_proj.%7s", &l, kind, what) == 3) {
            snprintf(nm, sizeof nm, "block.%d.attn.qkv.%s", l, what);
            if (!src_find(s, nm, &a)) return gpt_errf(err, "tensor %s (for %s) is missing", nm, p->name);
            uint64_t q = (uint64_t)cfg->n_heads * (uint64_t)cfg->d_head, kv = (uint64_t)cfg->n_kv_heads * (uint64_t)cfg->d_head;
            if (!is_float(a.dtype) || a.ndim != p->ndim || a.shape[0] != q + 2 * kv || (p->ndim == 2 && a.shape[1] != shape[1]))
                return gpt_errf(err, "tensor %s: shape or dtype does not match the config", nm);
            recipe *r = plan_add(pl, p->name, R_QKV, dtype >= 0 ? (gpt_st_dtype)dtype : (a.dtype == GPT_ST_BF16 ? GPT_ST_BF16 : GPT_ST_F32), p->ndim, shape);
            r->a = a;
            r->row0 = kind[0] == 'q' ? 0 : kind[0] == 'k' ? q : q + kv;
            r->rows = kind[0] == 'q' ? q : kv;
            return 0;
        }
    }
    const char *want = p->name;
    if (openai) {
        if (!openai_name(p->name, nm, sizeof nm)) return gpt_errf(err, "%s has no OpenAI-layout equivalent", p->name);
        want = nm;
    }
    if (src_find(s, want, &a)) {
        int padded = p->role == GPT_ROLE_EMBED && p->shape[0] == cfg->padded_vocab_size &&
                     cfg->padded_vocab_size != cfg->vocab_size && a.ndim == 2 && a.shape[0] == (uint64_t)cfg->vocab_size &&
                     a.shape[1] == shape[1];
        if (!same_shape(&a, p) && !padded) return gpt_errf(err, "tensor %s: shape does not match the config", want);
        if (!is_float(a.dtype)) return gpt_errf(err, "tensor %s: dtype %s is not a float type", want, gpt_st_dtype_name(a.dtype));
        gpt_st_dtype out = dtype >= 0 ? (gpt_st_dtype)dtype : a.dtype;
        recipe *r;
        if (!padded && out == a.dtype) {
            r = plan_add(pl, p->name, R_RAW, out, p->ndim, shape); /* bit-exact, whatever the dtype */
        } else {
            if (out != GPT_ST_BF16) out = GPT_ST_F32;
            r = plan_add(pl, p->name, R_FLOAT, out, p->ndim, shape);
        }
        r->a = a;
        return 0;
    }
    snprintf(bn, sizeof bn, openai ? "%s.blocks" : "%s_blocks", want);
    snprintf(sn, sizeof sn, openai ? "%s.scales" : "%s_scales", want);
    if (!src_find(s, bn, &a) || !src_find(s, sn, &b))
        return gpt_errf(err, "tensor %s is missing (the config expects it; is this the right model?)", want);
    if (a.dtype != GPT_ST_U8 || b.dtype != GPT_ST_U8 || p->ndim != 3 || a.ndim != 4 || b.ndim != 3 ||
        a.shape[0] != shape[0] || a.shape[1] != shape[2] || a.shape[2] * 32 != shape[1] || a.shape[3] != 16 ||
        b.shape[0] != a.shape[0] || b.shape[1] != a.shape[1] || b.shape[2] != a.shape[2])
        return gpt_errf(err, "MXFP4 pair %s: shapes do not match the config's %s", bn, p->name);
    if (dtype >= 0) {
        recipe *r = plan_add(pl, p->name, R_MXFP4, (gpt_st_dtype)dtype, p->ndim, shape);
        r->a = a;
        r->b = b;
    } else { /* kept as they are, under our (Hugging Face) names */
        char o1[GPT_CKPT_NAME_MAX + 16], o2[GPT_CKPT_NAME_MAX + 16];
        snprintf(o1, sizeof o1, "%s_blocks", p->name);
        snprintf(o2, sizeof o2, "%s_scales", p->name);
        plan_add(pl, o1, R_RAW, GPT_ST_U8, a.ndim, a.shape)->a = a;
        plan_add(pl, o2, R_RAW, GPT_ST_U8, b.ndim, b.shape)->a = b;
    }
    return 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmd_import(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1 || !o->output) return usage_error("import needs --from hf|openai SRC -o DST");
    if (!o->from || (strcmp(o->from, "hf") != 0 && strcmp(o->from, "openai") != 0))
        return usage_error("import: --from must be hf or openai");
    int openai = strcmp(o->from, "openai") == 0;
    const char *srcp = o->args[0];
    gpt_model_config cfg;
    if (o->config) {
        gpt_config c;
        if (gpt_config_load(o->config, &c, &err) < 0) return die(&err);
        cfg = c.model;
        gpt_config_free(&c);
        if (o->tokenizer) snprintf(cfg.tokenizer, sizeof cfg.tokenizer, "%s", o->tokenizer);
    } else {
        char *cj = NULL;
        if (is_dir(srcp)) {
            size_t n = strlen(srcp) + 16;
            cj = gpt_xmalloc(n);
            snprintf(cj, n, "%s/config.json", srcp);
        } else {
            const char *sl = strrchr(srcp, '/');
            size_t dl = sl ? (size_t)(sl - srcp) : 1;
            cj = gpt_xmalloc(dl + 16);
            snprintf(cj, dl + 16, "%.*s/config.json", (int)dl, sl ? srcp : ".");
        }
        int rc = openai ? gpt_openai_config_read(cj, o->tokenizer, &cfg, &err) : gpt_hf_config_read(cj, o->tokenizer, &cfg, &err);
        free(cj);
        if (rc < 0) return die(&err);
    }
    src s = {0};
    s.st = gpt_st_open_dir(srcp, &err);
    if (!s.st) return die(&err);
    gpt_param_table tab;
    if (gpt_params_build(&cfg, &tab, &err) < 0) {
        gpt_st_set_close(s.st);
        return die(&err);
    }
    plan pl = {0};
    int rc = 0;
    for (int i = 0; i < tab.n && rc == 0; i++) rc = plan_param(&s, &cfg, &tab.t[i], o->dtype, openai, &pl, &err);
    gpt_st_dtype main_dt = o->dtype >= 0 ? (gpt_st_dtype)o->dtype : GPT_ST_F32;
    for (int i = 0; i < pl.n && o->dtype < 0; i++)
        if (pl.r[i].out == GPT_ST_BF16) main_dt = GPT_ST_BF16;
    gpt_ckpt_opts wo = write_opts(o, main_dt, o->zstd > 0 ? o->zstd : 0, o->shard_size);
    if (rc == 0) rc = write_plan(&s, &pl, o->output, &cfg, 0, &wo, o, NULL, &err);
    if (rc == 0 && !o->quiet) fprintf(stderr, PROG ": imported %d tensors into %s\n", pl.n, o->output);
    free(pl.r);
    gpt_params_free(&tab);
    gpt_st_set_close(s.st);
    return rc < 0 ? die(&err) : 0;
}

/* ---- convert ---- */

static int cmd_convert(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1 || !o->output) return usage_error("convert needs CKPT -o DST");
    src s = {0};
    s.ck = gpt_ckpt_open(o->args[0], &err);
    if (!s.ck) return die(&err);
    gpt_ckpt *ck = s.ck;
    plan pl = {0};
    int rc = 0;
    for (size_t i = 0; i < gpt_ckpt_count(ck) && rc == 0; i++) {
        const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
        sinfo a, b;
        src_find(&s, t->name, &a);
        size_t nl = strlen(t->name);
        if (o->dtype >= 0 && is_float(t->dtype)) {
            plan_add(&pl, t->name, t->dtype == (gpt_st_dtype)o->dtype ? R_RAW : R_FLOAT, (gpt_st_dtype)o->dtype, t->ndim, t->shape)->a = a;
        } else if (o->dtype >= 0 && nl > 7 && strcmp(t->name + nl - 7, "_blocks") == 0) {
            char base[GPT_CKPT_NAME_MAX + 1], sn[GPT_CKPT_NAME_MAX + 16];
            snprintf(base, sizeof base, "%.*s", (int)(nl - 7), t->name);
            snprintf(sn, sizeof sn, "%s_scales", base);
            if (!src_find(&s, sn, &b) || a.ndim != 4 || b.ndim != 3) {
                rc = gpt_errf(&err, "%s: MXFP4 tensor %s has no matching %s", gpt_ckpt_dir(ck), t->name, sn);
                break;
            }
            uint64_t shape[3] = {a.shape[0], a.shape[2] * 32, a.shape[1]};
            recipe *r = plan_add(&pl, base, R_MXFP4, (gpt_st_dtype)o->dtype, 3, shape);
            r->a = a;
            r->b = b;
        } else if (o->dtype >= 0 && nl > 7 && strcmp(t->name + nl - 7, "_scales") == 0) {
            continue; /* consumed with its _blocks */
        } else {
            plan_add(&pl, t->name, R_RAW, t->dtype, t->ndim, t->shape)->a = a;
        }
    }
    gpt_ckpt_opts wo = write_opts(o, o->dtype >= 0 ? (gpt_st_dtype)o->dtype : gpt_ckpt_dtype(ck),
                                  o->zstd >= 0 ? o->zstd : gpt_ckpt_zstd_level(ck),
                                  o->shard_size ? o->shard_size : gpt_ckpt_max_shard_bytes(ck));
    wo.use_mesh = 1;
    wo.mesh = gpt_ckpt_mesh_of(ck);
    if (rc == 0) rc = write_plan(&s, &pl, o->output, &gpt_ckpt_config(ck)->model, gpt_ckpt_step(ck), &wo, o, ck, &err);
    if (rc == 0 && !o->quiet) fprintf(stderr, PROG ": wrote %d tensors to %s\n", pl.n, o->output);
    free(pl.r);
    gpt_ckpt_close(ck);
    return rc < 0 ? die(&err) : 0;
}

/* ---- export ---- */

static int cmd_export(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1 || !o->output) return usage_error("export needs --to hf CKPT -o DIR");
    if (!o->to || strcmp(o->to, "hf") != 0) return usage_error("export: --to must be hf");
    gpt_ckpt *ck = gpt_ckpt_open(o->args[0], &err);
    if (!ck) return die(&err);
    const gpt_model_config *cfg = &gpt_ckpt_config(ck)->model;
    gpt_st_dtype dt = o->dtype >= 0 ? (gpt_st_dtype)o->dtype : gpt_ckpt_dtype(ck);
    char *cj = gpt_hf_config_json(cfg, dt == GPT_ST_BF16 ? "bfloat16" : "float32", &err);
    if (!cj) {
        gpt_ckpt_close(ck);
        return die(&err);
    }
    gpt_param_table tab;
    int rc = gpt_params_build(cfg, &tab, &err);
    if (rc == 0 && mkdir(o->output, 0755) != 0)
        rc = gpt_errf(&err, "%s: cannot create directory: %s", o->output, strerror(errno));
    size_t pl = strlen(o->output) + 32;
    char *stp = gpt_xmalloc(pl), *cjp = gpt_xmalloc(pl);
    snprintf(stp, pl, "%s/model.safetensors", o->output);
    snprintf(cjp, pl, "%s/config.json", o->output);
    gpt_st_writer *w = rc == 0 ? gpt_st_writer_open(stp, &err) : NULL;
    if (rc == 0 && !w) rc = -1;
    if (rc == 0) rc = gpt_st_writer_meta(w, "format", "pt", &err);
    /* HF holds vocab_size rows: our padding rows are dropped */
    for (int i = 0; i < tab.n && rc == 0; i++) {
        const gpt_tensor *p = &tab.t[i];
        uint64_t shape[4];
        for (int d = 0; d < p->ndim; d++) shape[d] = (uint64_t)p->shape[d];
        if (p->role == GPT_ROLE_EMBED && p->shape[0] == cfg->padded_vocab_size) shape[0] = (uint64_t)cfg->vocab_size;
        rc = gpt_st_writer_add(w, p->name, dt, p->ndim, shape, NULL, &err);
    }
    progress pg;
    prog_init(&pg, o, "exporting", (size_t)tab.n);
    for (int i = 0; i < tab.n && rc == 0; i++) {
        const gpt_tensor *p = &tab.t[i];
        float *f = gpt_xmalloc(p->numel * 4 + 4);
        rc = gpt_ckpt_read_param(ck, p, f, &err);
        size_t n = p->numel;
        if (p->role == GPT_ROLE_EMBED && p->shape[0] == cfg->padded_vocab_size)
            n = (size_t)cfg->vocab_size * (size_t)p->shape[1];
        from_f32(dt, f, n, (unsigned char *)f);
        if (rc == 0) rc = gpt_st_writer_write(w, p->name, f, n * gpt_st_dtype_size(dt), &err);
        free(f);
        prog_step(&pg, (size_t)i + 1);
    }
    if (w) {
        if (rc == 0)
            rc = gpt_st_writer_close(w, &err);
        else
            gpt_st_writer_abort(w);
    }
    if (rc == 0) {
        gpt_out out;
        rc = gpt_out_open(&out, cjp, &err);
        if (rc == 0) {
            fputs(cj, out.f);
            fputc('\n', out.f);
            rc = gpt_out_commit(&out, &err);
        }
    }
    if (rc == 0 && !o->quiet) fprintf(stderr, PROG ": exported %d tensors to %s\n", tab.n, o->output);
    free(stp);
    free(cjp);
    free(cj);
    gpt_params_free(&tab);
    gpt_ckpt_close(ck);
    return rc < 0 ? die(&err) : 0;
}

/* ---- split / merge ---- */

static void rank_name(char *b, size_t n, int t, int p, int e) { snprintf(b, n, "tp%02d-pp%02d-ep%02d", t, p, e); }

static int cmd_split(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1 || !o->output) return usage_error("split needs CKPT -o DIR --tp N --pp M [--ep K]");
    gpt_ckpt *ck = gpt_ckpt_open(o->args[0], &err);
    if (!ck) return die(&err);
    gpt_ckpt_mesh m0 = gpt_ckpt_mesh_of(ck);
    const gpt_model_config *cfg = &gpt_ckpt_config(ck)->model;
    int rc = 0;
    if (m0.tp * m0.pp * m0.ep != 1) rc = gpt_errf(&err, "%s: already a rank of a split checkpoint; merge it first", gpt_ckpt_dir(ck));
    if (rc == 0 && (cfg->n_heads % o->tp || cfg->n_kv_heads % o->tp))
        rc = gpt_errf(&err, "--tp %d must divide n_heads (%d) and n_kv_heads (%d)", o->tp, cfg->n_heads, cfg->n_kv_heads);
    size_t nt = gpt_ckpt_count(ck);
    gpt_layout_rule *rules = gpt_xcalloc(nt ? nt : 1, sizeof *rules);
    for (size_t i = 0; i < nt && rc == 0; i++) {
        const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
        rc = gpt_layout_rule_for(cfg, t->name, t->ndim, t->shape, o->tp, o->pp, o->ep, &rules[i], &err);
    }
    /* everything goes into a hidden directory renamed into place at the end */
    size_t ol = strlen(o->output) + 64;
    char *tmp = gpt_xmalloc(ol);
    snprintf(tmp, ol, "%s.tmp.%ld", o->output, (long)getpid());
    if (rc == 0 && is_dir(o->output)) rc = gpt_errf(&err, "%s: already exists; remove it or choose another destination", o->output);
    if (rc == 0 && mkdir(tmp, 0755) != 0) rc = gpt_errf(&err, "%s: cannot create: %s", tmp, strerror(errno));
    unsigned char *full = NULL, *piece = NULL;
    size_t fcap = 0;
    for (int p = 0; p < o->pp && rc == 0; p++)
        for (int e = 0; e < o->ep && rc == 0; e++)
            for (int t = 0; t < o->tp && rc == 0; t++) {
                char rn[64];
                rank_name(rn, sizeof rn, t, p, e);
                char *dir = gpt_xmalloc(strlen(tmp) + 80);
                sprintf(dir, "%s/%s", tmp, rn);
                gpt_ckpt_opts wo = write_opts(o, gpt_ckpt_dtype(ck), gpt_ckpt_zstd_level(ck), gpt_ckpt_max_shard_bytes(ck));
                wo.use_mesh = 1;
                wo.mesh = (gpt_ckpt_mesh){o->tp, o->pp, o->ep, t, p, e};
                gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, cfg, gpt_ckpt_step(ck), &wo, &err);
                free(dir);
                if (!w) {
                    rc = -1;
                    break;
                }
                int *idx = gpt_xmalloc((nt ? nt : 1) * sizeof *idx), k = 0;
                for (size_t i = 0; i < nt && rc == 0; i++) {
                    if (p < rules[i].stage_first || (p > rules[i].stage_first && p != rules[i].stage_last)) continue;
                    const gpt_ckpt_tensor *ti = gpt_ckpt_tensor_at(ck, i);
                    uint64_t ps[GPT_ST_MAX_DIMS];
                    gpt_layout_piece_shape(&rules[i], ti->ndim, ti->shape, o->tp, o->ep, ps);
                    rc = gpt_ckpt_writer_add(w, ti->name, ti->dtype, ti->ndim, ps, &err);
                    idx[k++] = (int)i;
                }
                /* training state stays with rank 0 */
                for (size_t b = 0; rc == 0 && p + e + t == 0 && b < gpt_ckpt_blob_count(ck); b++) {
                    void *d;
                    size_t n;
                    rc = gpt_ckpt_read_blob(ck, gpt_ckpt_blob_at(ck, b)->name, &d, &n, &err);
                    if (rc == 0) rc = gpt_ckpt_writer_blob(w, gpt_ckpt_blob_at(ck, b)->name, d, n, &err);
                    free(d);
                }
                int j;
                while (rc == 0 && (j = gpt_ckpt_writer_next(w)) >= 0) {
                    const gpt_ckpt_tensor *ti = gpt_ckpt_tensor_at(ck, (size_t)idx[j]);
                    if (ti->nbytes > fcap) {
                        fcap = (size_t)ti->nbytes;
                        full = gpt_xrealloc(full, fcap);
                        piece = gpt_xrealloc(piece, fcap);
                    }
                    rc = gpt_ckpt_read(ck, ti, full, &err);
                    if (rc < 0) break;
                    gpt_layout_copy(&rules[idx[j]], ti->ndim, ti->shape, gpt_st_dtype_size(ti->dtype), o->tp, t, o->ep, e, full,
                                    piece, 0);
                    uint64_t ps[GPT_ST_MAX_DIMS], pn = gpt_st_dtype_size(ti->dtype);
                    gpt_layout_piece_shape(&rules[idx[j]], ti->ndim, ti->shape, o->tp, o->ep, ps);
                    for (int d = 0; d < ti->ndim; d++) pn *= ps[d];
                    rc = gpt_ckpt_writer_put(w, piece, (size_t)pn, &err);
                }
                free(idx);
                if (rc < 0)
                    gpt_ckpt_writer_abort(w);
                else
                    rc = gpt_ckpt_writer_commit(w, &err);
                if (!o->quiet && rc == 0 && isatty(2)) fprintf(stderr, "\rsplit: wrote %s", rn);
            }
    /* split.json: what merge needs to rebuild the original byte for byte */
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "format", "gpt-checkpoint-split");
        cJSON_AddNumberToObject(j, "version", 1);
        cJSON_AddNumberToObject(j, "tp", o->tp);
        cJSON_AddNumberToObject(j, "pp", o->pp);
        cJSON_AddNumberToObject(j, "ep", o->ep);
        cJSON *names = cJSON_AddArrayToObject(j, "tensors");
        for (size_t i = 0; i < nt; i++) {
            const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", t->name);
            cJSON *sh = cJSON_AddArrayToObject(e, "shape");
            for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
            cJSON_AddItemToArray(names, e);
        }
        char *js = cJSON_Print(j);
        cJSON_Delete(j);
        char *sp = gpt_xmalloc(strlen(tmp) + 16);
        sprintf(sp, "%s/split.json", tmp);
        gpt_out out;
        rc = gpt_out_open(&out, sp, &err);
        if (rc == 0) {
            fputs(js, out.f);
            rc = gpt_out_commit(&out, &err);
        }
        free(sp);
        free(js);
    }
    if (rc == 0 && rename(tmp, o->output) != 0) rc = gpt_errf(&err, "%s: cannot rename into place: %s", o->output, strerror(errno));
    if (rc < 0 && is_dir(tmp)) gpt_ckpt_remove_tree(tmp);
    if (rc == 0 && !o->quiet)
        fprintf(stderr, "%s" PROG ": split into %d ranks (tp %d x pp %d x ep %d) in %s\n", isatty(2) ? "\n" : "",
                o->tp * o->pp * o->ep, o->tp, o->pp, o->ep, o->output);
    free(full);
    free(piece);
    free(tmp);
    free(rules);
    gpt_ckpt_close(ck);
    return rc < 0 ? die(&err) : 0;
}

static int cmd_merge(const options *o)
{
    gpt_err err = {0};
    if (o->nargs != 1 || !o->output) return usage_error("merge needs DIR -o DST");
    const char *root = o->args[0];
    char *sp = gpt_xmalloc(strlen(root) + 16);
    sprintf(sp, "%s/split.json", root);
    gpt_blob b;
    if (gpt_blob_read(&b, sp, &err) < 0) {
        free(sp);
        return die(&err);
    }
    cJSON *j = cJSON_ParseWithLength((const char *)b.data, b.size);
    gpt_blob_free(&b);
    int tp = 0, pp = 0, ep = 0, rc = 0;
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "tensors");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "format");
    if (!cJSON_IsObject(j) || !cJSON_IsString(f) || strcmp(f->valuestring, "gpt-checkpoint-split") != 0 || !cJSON_IsArray(ts))
        rc = gpt_errf(&err, "%s: not a gpt-checkpoint-split file", sp);
    if (rc == 0) {
        tp = cJSON_GetObjectItemCaseSensitive(j, "tp") ? (int)cJSON_GetObjectItemCaseSensitive(j, "tp")->valuedouble : 0;
        pp = cJSON_GetObjectItemCaseSensitive(j, "pp") ? (int)cJSON_GetObjectItemCaseSensitive(j, "pp")->valuedouble : 0;
        ep = cJSON_GetObjectItemCaseSensitive(j, "ep") ? (int)cJSON_GetObjectItemCaseSensitive(j, "ep")->valuedouble : 0;
        if (tp < 1 || pp < 1 || ep < 1 || tp > 4096 || pp > 4096 || ep > 4096 || (long)tp * pp * ep > 65536)
            rc = gpt_errf(&err, "%s: tp/pp/ep missing or out of range", sp);
    }
    int nr = rc == 0 ? tp * pp * ep : 0;
    gpt_ckpt **rk = gpt_xcalloc((size_t)(nr ? nr : 1), sizeof *rk);
    for (int p = 0; p < pp && rc == 0; p++)
        for (int e = 0; e < ep && rc == 0; e++)
            for (int t = 0; t < tp && rc == 0; t++) {
                char rn[64];
                rank_name(rn, sizeof rn, t, p, e);
                char *d = gpt_xmalloc(strlen(root) + 80);
                sprintf(d, "%s/%s", root, rn);
                gpt_ckpt *c = rk[(p * ep + e) * tp + t] = gpt_ckpt_open(d, &err);
                free(d);
                if (!c) {
                    rc = -1;
                    break;
                }
                gpt_ckpt_mesh m = gpt_ckpt_mesh_of(c);
                if (m.tp != tp || m.pp != pp || m.ep != ep || m.tp_rank != t || m.pp_rank != p || m.ep_rank != e)
                    rc = gpt_errf(&err, "%s/%s: its mesh does not match split.json", root, rn);
                else if (!gpt_model_config_equal(&gpt_ckpt_config(c)->model, &gpt_ckpt_config(rk[0])->model))
                    rc = gpt_errf(&err, "%s/%s: model.yaml differs from rank 0's", root, rn);
            }
    gpt_ckpt_writer *w = NULL;
    int n = rc == 0 ? cJSON_GetArraySize(ts) : 0;
    gpt_layout_rule *rules = gpt_xcalloc((size_t)(n ? n : 1), sizeof *rules);
    const gpt_ckpt_tensor **first = gpt_xcalloc((size_t)(n ? n : 1), sizeof *first);
    uint64_t(*shapes)[GPT_ST_MAX_DIMS] = gpt_xcalloc((size_t)(n ? n : 1), sizeof *shapes);
    if (rc == 0) {
        const gpt_model_config *cfg = &gpt_ckpt_config(rk[0])->model;
        gpt_ckpt_opts wo = write_opts(o, gpt_ckpt_dtype(rk[0]), gpt_ckpt_zstd_level(rk[0]), gpt_ckpt_max_shard_bytes(rk[0]));
        w = gpt_ckpt_writer_open(o->output, cfg, gpt_ckpt_step(rk[0]), &wo, &err);
        if (!w) rc = -1;
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, ts)
        {
            if (rc < 0) break;
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
            int nd = cJSON_GetArraySize(sh), d = 0;
            if (!cJSON_IsString(nm) || !cJSON_IsArray(sh) || nd > GPT_ST_MAX_DIMS) {
                rc = gpt_errf(&err, "%s: tensor %d is malformed", sp, i);
                break;
            }
            const cJSON *x;
            cJSON_ArrayForEach(x, sh) shapes[i][d++] = cJSON_IsNumber(x) && x->valuedouble >= 0 ? (uint64_t)x->valuedouble : 0;
            rc = gpt_layout_rule_for(cfg, nm->valuestring, nd, shapes[i], tp, pp, ep, &rules[i], &err);
            if (rc < 0) break;
            first[i] = gpt_ckpt_find(rk[(rules[i].stage_first * ep) * tp], nm->valuestring);
            if (!first[i]) {
                rc = gpt_errf(&err, "%s: tensor %s is missing from pipeline stage %d", root, nm->valuestring, rules[i].stage_first);
                break;
            }
            rc = gpt_ckpt_writer_add(w, nm->valuestring, first[i]->dtype, nd, shapes[i], &err);
            i++;
        }
        for (size_t bb = 0; rc == 0 && bb < gpt_ckpt_blob_count(rk[0]); bb++) {
            void *d;
            size_t bn;
            rc = gpt_ckpt_read_blob(rk[0], gpt_ckpt_blob_at(rk[0], bb)->name, &d, &bn, &err);
            if (rc == 0) rc = gpt_ckpt_writer_blob(w, gpt_ckpt_blob_at(rk[0], bb)->name, d, bn, &err);
            free(d);
        }
    }
    unsigned char *full = NULL, *piece = NULL, *other = NULL;
    int i;
    while (rc == 0 && (i = gpt_ckpt_writer_next(w)) >= 0) {
        const gpt_ckpt_tensor *t0 = first[i];
        const gpt_layout_rule *r = &rules[i];
        size_t es = gpt_st_dtype_size(t0->dtype);
        uint64_t fb = es;
        for (int d = 0; d < t0->ndim; d++) fb *= shapes[i][d];
        full = gpt_xrealloc(full, fb ? fb : 1);
        /* every rank that holds a piece or a replica is read: replicas must agree */
        for (int p = r->stage_first; p <= r->stage_last && rc == 0; p++) {
            if (p > r->stage_first && p != r->stage_last) continue;
            for (int e = 0; e < ep && rc == 0; e++)
                for (int t = 0; t < tp && rc == 0; t++) {
                    gpt_ckpt *c = rk[(p * ep + e) * tp + t];
                    const gpt_ckpt_tensor *pt = gpt_ckpt_find(c, t0->name);
                    uint64_t ps[GPT_ST_MAX_DIMS];
                    gpt_layout_piece_shape(r, t0->ndim, shapes[i], tp, ep, ps);
                    int okshape = pt && pt->dtype == t0->dtype && pt->ndim == t0->ndim;
                    for (int d = 0; okshape && d < t0->ndim; d++) okshape = pt->shape[d] == ps[d];
                    if (!okshape) {
                        rc = gpt_errf(&err, "%s: rank tp %d pp %d ep %d: tensor %s missing or of the wrong shape", root, t, p, e, t0->name);
                        break;
                    }
                    piece = gpt_xrealloc(piece, pt->nbytes ? pt->nbytes : 1);
                    rc = gpt_ckpt_read(c, pt, piece, &err);
                    if (rc < 0) break;
                    int replica = (r->tp_dim < 0 && t > 0) || (r->ep_dim < 0 && e > 0) || p != r->stage_first;
                    if (replica) {
                        other = gpt_xrealloc(other, pt->nbytes ? pt->nbytes : 1);
                        gpt_layout_copy(r, t0->ndim, shapes[i], es, tp, r->tp_dim < 0 ? 0 : t, ep, r->ep_dim < 0 ? 0 : e, full, other, 0);
                        if (memcmp(other, piece, pt->nbytes) != 0)
                            rc = gpt_errf(&err, "%s: tensor %s: the replica on rank tp %d pp %d ep %d differs from the first copy", root,
                                          t0->name, t, p, e);
                        continue;
                    }
                    gpt_layout_copy(r, t0->ndim, shapes[i], es, tp, t, ep, e, full, piece, 1);
                }
        }
        if (rc == 0) rc = gpt_ckpt_writer_put(w, full, (size_t)fb, &err);
    }
    if (w) {
        if (rc == 0)
            rc = gpt_ckpt_writer_commit(w, &err);
        else
            gpt_ckpt_writer_abort(w);
    }
    if (rc == 0 && !o->quiet) fprintf(stderr, PROG ": merged %d ranks into %s\n", nr, o->output);
    free(full);
    free(piece);
    free(other);
    free(rules);
    free(first);
    free(shapes);
    for (int k = 0; k < nr; k++) gpt_ckpt_close(rk[k]);
    free(rk);
    cJSON_Delete(j);
    free(sp);
    return rc < 0 ? die(&err) : 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    options o = {0};
    o.dtype = -1;
    o.zstd = -1;
    o.tp = o.pp = o.ep = 1;
    enum { O_FROM = 256, O_TO, O_DTYPE, O_COMPRESS, O_CONFIG, O_TOKENIZER, O_SHARD, O_TP, O_PP, O_EP, O_VERSION };
    static const struct option lo[] = {
        {"output", required_argument, 0, 'o'}, {"from", required_argument, 0, O_FROM},
        {"to", required_argument, 0, O_TO},   {"dtype", required_argument, 0, O_DTYPE},
        {"compress", required_argument, 0, O_COMPRESS}, {"config", required_argument, 0, O_CONFIG},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"shard-size", required_argument, 0, O_SHARD},
        {"tp", required_argument, 0, O_TP},   {"pp", required_argument, 0, O_PP},
        {"ep", required_argument, 0, O_EP},   {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},        {"version", no_argument, 0, O_VERSION},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "o:qh", lo, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case 'o': o.output = optarg; break;
        case O_FROM: o.from = optarg; break;
        case O_TO: o.to = optarg; break;
        case O_CONFIG: o.config = optarg; break;
        case O_TOKENIZER: o.tokenizer = optarg; break;
        case O_DTYPE:
            if (strcmp(optarg, "f32") == 0 || strcmp(optarg, "F32") == 0) o.dtype = GPT_ST_F32;
            else if (strcmp(optarg, "bf16") == 0 || strcmp(optarg, "BF16") == 0) o.dtype = GPT_ST_BF16;
            else if (strcmp(optarg, "keep") == 0) o.dtype = -1;
            else return usage_error("--dtype must be f32, bf16 or keep, got '%s'", optarg);
            break;
        case O_COMPRESS:
            if (strcmp(optarg, "none") == 0) o.zstd = 0;
            else if (strcmp(optarg, "zstd") == 0) o.zstd = 3;
            else if (strncmp(optarg, "zstd:", 5) == 0 && (v = strtol(optarg + 5, &end, 10), *end == 0 && end != optarg + 5 && v >= 1 && v <= 19))
                o.zstd = (int)v;
            else return usage_error("--compress must be none, zstd or zstd:LEVEL (1-19), got '%s'", optarg);
            break;
        case O_SHARD:
            if (parse_size(optarg, &o.shard_size) < 0) return usage_error("--shard-size: bad size '%s'", optarg);
            break;
        case O_TP: case O_PP: case O_EP:
            v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 4096) return usage_error("--%s must be an integer 1..4096", c == O_TP ? "tp" : c == O_PP ? "pp" : "ep");
            if (c == O_TP) o.tp = (int)v; else if (c == O_PP) o.pp = (int)v; else o.ep = (int)v;
            break;
        case 'q': o.quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case O_VERSION: printf("gpt-shard %s\n", GPT_VERSION); return 0;
        default: return usage_error("unknown option");
        }
    }
    if (optind >= argc) return usage_error("missing COMMAND");
    o.cmd = argv[optind++];
    o.args = argv + optind;
    o.nargs = argc - optind;
    if (strcmp(o.cmd, "info") == 0) return cmd_info(&o);
    if (strcmp(o.cmd, "verify") == 0) return cmd_verify(&o);
    if (strcmp(o.cmd, "import") == 0) return cmd_import(&o);
    if (strcmp(o.cmd, "export") == 0) return cmd_export(&o);
    if (strcmp(o.cmd, "convert") == 0) return cmd_convert(&o);
    if (strcmp(o.cmd, "split") == 0) return cmd_split(&o);
    if (strcmp(o.cmd, "merge") == 0) return cmd_merge(&o);
    return usage_error("unknown command '%s'", o.cmd);
}
