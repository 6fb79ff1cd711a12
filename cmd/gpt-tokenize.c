/* gpt-tokenize: text <-> tokens, token streams, vocabulary training. See gpt-tokenize(1). */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe_train.h"
#include "fileio.h"
#include "tokenizer.h"
#include "tokens.h"

#define PROG "gpt-tokenize"

static const char usage_text[] =
    "usage: gpt-tokenize COMMAND [OPTIONS] [FILE...]      (no FILE or \"-\": standard input)\n"
    "\n"
    "commands:\n"
    "  encode    text -> token stream (gpt-tokens(5)), or ids text with --format ids\n"
    "  decode    token stream (or ids text with --format ids) -> exact bytes\n"
    "  pack      ids text -> token stream           unpack   token stream -> ids text\n"
    "  count     token count of each FILE           info     the encoding, or token-stream FILEs\n"
    "  train     --vocab-size N FILE...: train byte-level BPE, write a .tiktoken rank file\n"
    "\n"
    "options:\n"
    "  -e, --encoding NAME|FILE  o200k_harmony (default), o200k_base, cl100k_base, r50k_base, gpt2,\n"
    "                            or a .tiktoken, tokenizer.json, vocab.bpe or encoder.json file\n"
    "      --vocab FILE          rank file for a built-in encoding (else $GPT_TOKENIZER_PATH)\n"
    "      --pattern NAME|REGEX  pre-tokenization for a bare .tiktoken file or train: o200k (default),\n"
    "                            cl100k, r50k, or a regex\n"
    "  -o, --output FILE         output file (default stdout), written atomically\n"
    "      --format stream|ids   encode output / decode input format (default stream)\n"
    "      --special all|none|LIST  special tokens recognised in text (default none)\n"
    "      --no-eot              encode: no <|endoftext|> after each input file\n"
    "      --compress zstd[:N]   encode/pack: zstd-compress the token stream\n"
    "      --vocab-size N        pack: vocabulary size; train: size of the vocabulary to learn\n"
    "  -t, --threads N           threads (default: all cores); output is the same for any N\n"
    "  -q, --quiet               no summaries on stderr\n"
    "  -h, --help                this help        --version    the version\n";

typedef struct {
    const char *cmd, *encoding, *vocab, *pattern, *output, *special;
    int format_ids, eot, zstd_level, threads, quiet;
    long long vocab_size;
    char **files;
    int nfiles;
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
    fputs("\n(see gpt-tokenize --help)\n", stderr);
    va_end(ap);
    return 2;
}

static gpt_tokenizer *open_tokenizer(const options *o, gpt_err *err)
{
    const char *enc = o->encoding ? o->encoding : "o200k_harmony";
    if (o->pattern) {
        size_t n = strlen(enc);
        if (n < 9 || strcmp(enc + n - 9, ".tiktoken") != 0) {
            gpt_errf(err, "--pattern applies to a .tiktoken file given with -e, not to '%s'", enc);
            return NULL;
        }
        return gpt_tokenizer_open_tiktoken(enc, gpt_bpe_pattern_regex(o->pattern), err);
    }
    return gpt_tokenizer_open(enc, o->vocab, err);
}

/* ---- ids text ---- */

typedef struct {
    char buf[1 << 16];
    size_t n;
    FILE *f;
} text_out;

static void tout_flush(text_out *t)
{
    fwrite(t->buf, 1, t->n, t->f);
    t->n = 0;
}

static void tout_ids(text_out *t, const uint32_t *ids, size_t n, int *first)
{
    for (size_t i = 0; i < n; i++) {
        if (t->n > sizeof t->buf - 16) tout_flush(t);
        if (!*first) t->buf[t->n++] = ' ';
        *first = 0;
        char tmp[12];
        int k = 0;
        uint32_t v = ids[i];
        do tmp[k++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        while (k) t->buf[t->n++] = tmp[--k];
    }
}

/* Parses whitespace-separated decimal ids; errors name the byte offset and the id's position. */
static int parse_ids(const unsigned char *s, size_t n, const char *name, uint64_t limit, gpt_ids *out, gpt_err *err)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == ',') {
            i++;
            continue;
        }
        if (c < '0' || c > '9')
            return gpt_errf(err, "%s: byte %zu: expected a decimal token id, found '%c' (0x%02x)", name, i,
                            c >= 32 && c < 127 ? c : '?', c);
        uint64_t v = 0;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            v = v * 10 + (s[i++] - '0');
            if (v > UINT32_MAX)
                return gpt_errf(err, "%s: byte %zu: token id at position %zu is too large", name, start, out->n);
        }
        if (v >= limit)
            return gpt_errf(err, "%s: token id %llu at position %zu (byte %zu) is out of range (vocabulary size %llu)",
                            name, (unsigned long long)v, out->n, start, (unsigned long long)limit);
        gpt_ids_push(out, (uint32_t)v);
    }
    return 0;
}

/* ---- commands ---- */

static int read_input(const char *path, gpt_blob *b, gpt_err *err) { return gpt_blob_read(b, path, err); }

static int cmd_encode(const options *o, int count_only)
{
    gpt_err err;
    gpt_tokenizer *tk = open_tokenizer(o, &err);
    if (!tk) return die(&err);
    unsigned char *mask = NULL;
    if (gpt_special_mask(tk, o->special, &mask, &err) < 0) {
        gpt_tokenizer_free(tk);
        return die(&err);
    }
    int64_t eot = gpt_tokenizer_eot(tk);
    int rc = 0;
    gpt_tokw *w = NULL;
    gpt_out out = {0};
    text_out *t = NULL;
    uint64_t total = 0;
    if (count_only) {
    } else if (o->format_ids) {
        if (gpt_out_open(&out, o->output ? o->output : "-", &err) < 0) rc = die(&err);
        t = gpt_xcalloc(1, sizeof *t);
        t->f = out.f;
    } else {
        if (o->eot && eot < 0 && !o->quiet)
            fprintf(stderr, PROG ": note: %s has no <|endoftext|>; documents are not separated\n",
                    gpt_tokenizer_name(tk));
        if (!(w = gpt_tokw_open(o->output ? o->output : "-", gpt_tokenizer_n_vocab(tk), o->zstd_level, &err)))
            rc = die(&err);
    }
    double t0 = omp_get_wtime();
    size_t bytes = 0;
    for (int i = 0; i < o->nfiles && rc == 0; i++) {
        gpt_blob b;
        gpt_ids ids = {0};
        if (read_input(o->files[i], &b, &err) < 0) {
            rc = die(&err);
            break;
        }
        bytes += b.size;
        if (gpt_encode_parallel(tk, b.data, b.size, mask, o->threads, &ids, &err) < 0) {
            gpt_err_prefix(&err, "%s", o->files[i]);
            rc = die(&err);
        } else if (count_only) {
            printf("%zu\t%s\n", ids.n, o->files[i]);
        } else if (t) {
            int first = 1;
            tout_ids(t, ids.v, ids.n, &first);
            t->buf[t->n++] = '\n';
        } else {
            if (o->eot && eot >= 0) gpt_ids_push(&ids, (uint32_t)eot);
            if (gpt_tokw_write(w, ids.v, ids.n, &err) < 0) rc = die(&err);
        }
        total += ids.n;
        gpt_ids_free(&ids);
        gpt_blob_free(&b);
    }
    if (count_only && o->nfiles > 1 && rc == 0) printf("%llu\ttotal\n", (unsigned long long)total);
    if (t) {
        tout_flush(t);
        free(t);
        if (rc == 0 && gpt_out_commit(&out, &err) < 0) rc = die(&err);
        if (rc != 0) gpt_out_abort(&out);
    }
    if (w) {
        if (rc != 0)
            gpt_tokw_abort(w);
        else if (gpt_tokw_close(w, &err) < 0)
            rc = die(&err);
    }
    double dt = omp_get_wtime() - t0;
    if (rc == 0 && !o->quiet && !count_only && isatty(2))
        fprintf(stderr, PROG ": %zu bytes -> %llu tokens in %.3f s (%.1f MB/s)\n", bytes,
                (unsigned long long)total, dt, dt > 0 ? bytes / dt / 1e6 : 0.0);
    free(mask);
    gpt_tokenizer_free(tk);
    return rc;
}

/* Reads every input as ids: token streams, or ids text with --format ids. */
typedef int (*ids_sink)(const uint32_t *ids, size_t n, void *ctx, gpt_err *err);

static int for_each_ids(const options *o, uint64_t limit, ids_sink sink, void *ctx, uint32_t *stream_vocab,
                        gpt_err *err)
{
    for (int i = 0; i < o->nfiles; i++) {
        const char *path = o->files[i];
        if (o->format_ids) {
            gpt_blob b;
            gpt_ids ids = {0};
            if (read_input(path, &b, err) < 0) return -1;
            int rc = parse_ids(b.data, b.size, path, limit, &ids, err);
            gpt_blob_free(&b);
            if (rc == 0) rc = sink(ids.v, ids.n, ctx, err);
            gpt_ids_free(&ids);
            if (rc < 0) return -1;
            continue;
        }
        gpt_tokr *r = gpt_tokr_open(path, err);
        if (!r) return -1;
        uint32_t v = gpt_tokr_vocab(r);
        if (stream_vocab) {
            if (*stream_vocab && *stream_vocab != v) {
                gpt_tokr_close(r);
                return gpt_errf(err, "%s: vocabulary size %u differs from the previous input's %u", path, v,
                                *stream_vocab);
            }
            *stream_vocab = v;
        }
        if (v > limit) {
            gpt_tokr_close(r);
            return gpt_errf(err,
                            "%s: the stream's vocabulary has %u ids but the encoding has %llu; pick the "
                            "encoding it was made with (-e)",
                            path, v, (unsigned long long)limit);
        }
        enum { CHUNK = 1 << 16 };
        uint32_t *buf = gpt_xmalloc(CHUNK * sizeof *buf);
        long got;
        int rc = 0;
        while ((got = gpt_tokr_read(r, buf, CHUNK, err)) > 0)
            if (sink(buf, (size_t)got, ctx, err) < 0) {
                rc = -1;
                break;
            }
        if (got < 0) rc = -1;
        free(buf);
        gpt_tokr_close(r);
        if (rc < 0) return -1;
    }
    return 0;
}

typedef struct {
    const gpt_tokenizer *tk;
    FILE *f;
    uint64_t pos;
} decode_ctx;

static int decode_sink(const uint32_t *ids, size_t n, void *vctx, gpt_err *err)
{
    decode_ctx *c = vctx;
    unsigned char *bytes;
    size_t len;
    if (gpt_decode(c->tk, ids, n, &bytes, &len, err) < 0) {
        /* re-base the position on the whole input */
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= gpt_tokenizer_n_vocab(c->tk))
                return gpt_errf(err, "token id %u at position %llu is out of range (%s has %u ids)", ids[i],
                                (unsigned long long)(c->pos + i), gpt_tokenizer_name(c->tk),
                                gpt_tokenizer_n_vocab(c->tk));
        return -1;
    }
    fwrite(bytes, 1, len, c->f);
    free(bytes);
    c->pos += n;
    return 0;
}

static int cmd_decode(const options *o)
{
    gpt_err err;
    gpt_tokenizer *tk = open_tokenizer(o, &err);
    if (!tk) return die(&err);
    gpt_out out;
    if (gpt_out_open(&out, o->output ? o->output : "-", &err) < 0) {
        gpt_tokenizer_free(tk);
        return die(&err);
    }
    decode_ctx c = {tk, out.f, 0};
    int rc = for_each_ids(o, gpt_tokenizer_n_vocab(tk), decode_sink, &c, NULL, &err);
    if (rc == 0) rc = gpt_out_commit(&out, &err);
    else gpt_out_abort(&out);
    gpt_tokenizer_free(tk);
    return rc < 0 ? die(&err) : 0;
}

static int pack_sink(const uint32_t *ids, size_t n, void *ctx, gpt_err *err) { return gpt_tokw_write(ctx, ids, n, err); }

static int cmd_pack(options *o)
{
    gpt_err err;
    uint64_t vocab = (uint64_t)o->vocab_size;
    if (!o->vocab_size) {
        gpt_tokenizer *tk = open_tokenizer(o, &err);
        if (!tk) return die(&err);
        vocab = gpt_tokenizer_n_vocab(tk);
        gpt_tokenizer_free(tk);
    }
    gpt_tokw *w = gpt_tokw_open(o->output ? o->output : "-", (uint32_t)vocab, o->zstd_level, &err);
    if (!w) return die(&err);
    o->format_ids = 1;
    if (for_each_ids(o, vocab, pack_sink, w, NULL, &err) < 0) {
        gpt_tokw_abort(w);
        return die(&err);
    }
    return gpt_tokw_close(w, &err) < 0 ? die(&err) : 0;
}

typedef struct {
    text_out t;
    int first;
} unpack_ctx;

static int unpack_sink(const uint32_t *ids, size_t n, void *vctx, gpt_err *err)
{
    (void)err;
    unpack_ctx *c = vctx;
    tout_ids(&c->t, ids, n, &c->first);
    return 0;
}

static int cmd_unpack(const options *o)
{
    gpt_err err;
    gpt_out out;
    if (gpt_out_open(&out, o->output ? o->output : "-", &err) < 0) return die(&err);
    unpack_ctx *c = gpt_xcalloc(1, sizeof *c);
    c->t.f = out.f;
    c->first = 1;
    uint32_t v = 0;
    int rc = for_each_ids(o, UINT32_MAX + 1ull, unpack_sink, c, &v, &err);
    if (rc == 0) {
        c->t.buf[c->t.n++] = '\n';
        tout_flush(&c->t);
        rc = gpt_out_commit(&out, &err);
    } else {
        gpt_out_abort(&out);
    }
    free(c);
    return rc < 0 ? die(&err) : 0;
}

static int info_encoding(const options *o)
{
    gpt_err err;
    gpt_tokenizer *tk = open_tokenizer(o, &err);
    if (!tk) return die(&err);
    printf("encoding: %s\nn_vocab: %u\nordinary_tokens: %u\ntoken_width: %d\npattern: %s\nspecial_tokens: %zu\n",
           gpt_tokenizer_name(tk), gpt_tokenizer_n_vocab(tk), gpt_tokenizer_n_ordinary(tk),
           gpt_tokens_width_for(gpt_tokenizer_n_vocab(tk)), gpt_tokenizer_pattern(tk), gpt_tokenizer_n_special(tk));
    for (size_t i = 0; i < gpt_tokenizer_n_special(tk); i++) {
        uint32_t id;
        const char *text = gpt_tokenizer_special(tk, i, &id);
        printf("  %u\t%s\n", id, text);
    }
    gpt_tokenizer_free(tk);
    return 0;
}

static int info_streams(const options *o)
{
    gpt_err err;
    for (int i = 0; i < o->nfiles; i++) {
        gpt_tokr *r = gpt_tokr_open(o->files[i], &err);
        if (!r) return die(&err);
        uint32_t vocab = gpt_tokr_vocab(r);
        /* The end-of-text id of the built-in vocabularies, by size; others show no count. */
        int64_t eot = vocab == 50257 ? 50256 : vocab == 100277 ? 100257 : vocab >= 200019 ? 199999 : -1;
        enum { CHUNK = 1 << 16 };
        uint32_t *buf = gpt_xmalloc(CHUNK * sizeof *buf);
        uint64_t n = 0, docs = 0;
        uint32_t lo = UINT32_MAX, hi = 0;
        long got;
        while ((got = gpt_tokr_read(r, buf, CHUNK, &err)) > 0) {
            for (long k = 0; k < got; k++) {
                uint32_t v = buf[k];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                docs += (int64_t)v == eot;
            }
            n += (uint64_t)got;
        }
        free(buf);
        if (got < 0) {
            gpt_tokr_close(r);
            return die(&err);
        }
        printf("file: %s\nversion: %u\nvocab_size: %u\ntoken_width: %d\ncompressed: %s\ntokens: %llu\n", o->files[i],
               gpt_tokr_version(r), vocab, gpt_tokr_width(r), gpt_tokr_compressed(r) ? "zstd" : "no",
               (unsigned long long)n);
        if (eot >= 0) printf("end_of_text_id: %lld\ndocuments_ended: %llu\n", (long long)eot, (unsigned long long)docs);
        if (n) printf("min_id: %u\nmax_id: %u\n", lo, hi);
        printf("checksum: ok\n");
        gpt_tokr_close(r);
    }
    return 0;
}

static int cmd_train(const options *o)
{
    gpt_err err;
    if (o->vocab_size <= 0) return usage_error("train needs --vocab-size N");
    if (o->nfiles == 1 && strcmp(o->files[0], "-") == 0 && isatty(0))
        return usage_error("train reads text files; give FILE arguments (or pipe text in)");
    gpt_blob *blobs = gpt_xcalloc((size_t)o->nfiles, sizeof *blobs);
    const unsigned char **texts = gpt_xcalloc((size_t)o->nfiles, sizeof *texts);
    size_t *lens = gpt_xcalloc((size_t)o->nfiles, sizeof *lens);
    int rc = 0;
    for (int i = 0; i < o->nfiles && rc == 0; i++) {
        if (read_input(o->files[i], &blobs[i], &err) < 0) rc = die(&err);
        texts[i] = blobs[i].data;
        lens[i] = blobs[i].size;
    }
    if (rc == 0) {
        gpt_bpe_train_opts to = {.vocab_size = (uint32_t)(o->vocab_size > UINT32_MAX ? UINT32_MAX : o->vocab_size),
                                 .pattern = o->pattern,
                                 .threads = o->threads,
                                 .verbose = !o->quiet && isatty(2)};
        gpt_bpe_vocab v = {0};
        if (gpt_bpe_train(&to, texts, lens, (size_t)o->nfiles, &v, &err) < 0)
            rc = die(&err);
        else {
            if (v.n < to.vocab_size && !o->quiet)
                fprintf(stderr, PROG ": the text ran out of pairs seen twice: learned %u tokens, not %u\n", v.n,
                        to.vocab_size);
            if (gpt_bpe_write_tiktoken(o->output ? o->output : "-", &v, &err) < 0) rc = die(&err);
            gpt_bpe_vocab_free(&v);
        }
    }
    for (int i = 0; i < o->nfiles; i++) gpt_blob_free(&blobs[i]);
    free(blobs);
    free(texts);
    free(lens);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"encoding", required_argument, 0, 'e'}, {"vocab", required_argument, 0, 'V'},
        {"pattern", required_argument, 0, 'P'},  {"output", required_argument, 0, 'o'},
        {"format", required_argument, 0, 'F'},   {"special", required_argument, 0, 'S'},
        {"no-eot", no_argument, 0, 'N'},         {"compress", required_argument, 0, 'Z'},
        {"vocab-size", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},          {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'v'},        {0, 0, 0, 0}};
    options o = {.eot = 1};
    if (argc < 2) return usage_error("no command given");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("gpt-tokenize %s\n", GPT_VERSION);
        return 0;
    }
    o.cmd = argv[1];
    static const char *const commands[] = {"encode", "decode", "pack", "unpack", "count", "info", "train"};
    int known = 0;
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) known |= strcmp(o.cmd, commands[i]) == 0;
    if (!known) return usage_error("unknown command '%s'", o.cmd);
    optind = 2;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "e:o:t:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'e': o.encoding = optarg; break;
        case 'V': o.vocab = optarg; break;
        case 'P': o.pattern = optarg; break;
        case 'o': o.output = optarg; break;
        case 'S': o.special = optarg; break;
        case 'N': o.eot = 0; break;
        case 'q': o.quiet = 1; break;
        case 'F':
            if (strcmp(optarg, "ids") == 0) o.format_ids = 1;
            else if (strcmp(optarg, "stream") == 0) o.format_ids = 0;
            else return usage_error("--format must be stream or ids, not '%s'", optarg);
            break;
        case 'Z':
            if (strcmp(optarg, "none") == 0) o.zstd_level = 0;
            else if (strncmp(optarg, "zstd", 4) == 0 && optarg[4] == '\0') o.zstd_level = 3;
            else if (strncmp(optarg, "zstd:", 5) == 0) {
                long lv = strtol(optarg + 5, &end, 10);
                if (*end || end == optarg + 5 || lv < -7 || lv > 22 || lv == 0)
                    return usage_error("--compress zstd:LEVEL needs a level in -7..22 (not 0), got '%s'", optarg + 5);
                o.zstd_level = (int)lv;
            } else
                return usage_error("--compress must be zstd, zstd:LEVEL or none, not '%s'", optarg);
            break;
        case 'n':
            errno = 0;
            o.vocab_size = strtoll(optarg, &end, 10);
            if (*end || end == optarg || errno || o.vocab_size <= 0 || o.vocab_size > (1ll << 32))
                return usage_error("--vocab-size must be a positive integer, not '%s'", optarg);
            break;
        case 't':
            o.threads = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg || o.threads < 1 || o.threads > 4096)
                return usage_error("--threads must be a positive integer, not '%s'", optarg);
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'v': printf("gpt-tokenize %s\n", GPT_VERSION); return 0;
        default: return 2; /* getopt printed why */
        }
    }
    static char *stdin_only[] = {"-"};
    o.files = optind < argc ? argv + optind : stdin_only;
    o.nfiles = optind < argc ? argc - optind : 1;
    if (o.threads == 0) o.threads = omp_get_max_threads();

    if (strcmp(o.cmd, "encode") == 0) return cmd_encode(&o, 0);
    if (strcmp(o.cmd, "count") == 0) return cmd_encode(&o, 1);
    if (strcmp(o.cmd, "decode") == 0) return cmd_decode(&o);
    if (strcmp(o.cmd, "pack") == 0) return cmd_pack(&o);
    if (strcmp(o.cmd, "unpack") == 0) return cmd_unpack(&o);
    if (strcmp(o.cmd, "info") == 0) return optind < argc ? info_streams(&o) : info_encoding(&o);
    return cmd_train(&o);
}
