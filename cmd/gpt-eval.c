/* gpt-eval: score a model on text or on multiple-choice items (gpt-eval(1)). Results on stdout. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "comm.h"
#include "mesh.h"
#include "model_pp.h"
#include "model_tp.h"
#include "backend_select.h"
#include "half.h"
#include "blas_check.h"
#include "eval.h"
#include "fileio.h"
#include "model_load.h"
#include "tokenizer.h"
#include "tokens.h"

#define PROG "gpt-eval"

static const char usage_text[] =
    "usage: gpt-eval -m MODEL [--data FILE] [OPTIONS]\n"
    "Scores a model: mean loss, perplexity, token accuracy, bits per byte (text input).\n"
    "\n"
    "  -m, --model DIR       a checkpoint (gpt-checkpoint(5)), or a directory with model.yaml and\n"
    "                        model.safetensors\n"
    "  -d, --data FILE       the text to score (\"-\" or none: standard input)\n"
    "      --tokens          the data is a token stream (gpt-tokenize encode), not text\n"
    "      --seq-len N       window length in tokens (default: the model's context)\n"
    "      --stride N        a window starts every N tokens and scores only tokens no earlier\n"
    "                        window scored (default: seq-len)\n"
    "  -b, --batch-size N    windows per forward pass (default 4)\n"
    "      --per-token       JSONL on stdout: one object per scored token (summary on stderr)\n"
    "      --json            the summary as one JSON object\n"
    "      --choice          multiple choice: JSONL {\"context\", \"endings\": [...], \"label\"} per line;\n"
    "                        accuracy by summed and by per-token loss of each ending\n"
    "      --tp N            tensor parallel over N ranks (under mpirun; see below)\n"
    "      --pp N            pipeline parallel over N stages (under mpirun; see below)\n"
    "      --set KEY=VALUE   override a model config key (repeatable)\n"
    "      --device DEV      cpu, cuda, cuda:N or auto (default: cuda when built with it and a GPU\n"
    "                        is visible, else cpu)\n"
    "      --experts auto|mxfp4|f32   MoE experts in MXFP4 (fused kernels) or dequantized to fp32;\n"
    "                        auto (default): MXFP4 when the checkpoint stores them so\n"
    "      --precision P     GEMM operands fp32 (default), bf16 or fp16, fp32 sums (bf16: AMX\n"
    "                        tiles where the CPU has them, tensor cores on CUDA)\n"
    "  -q, --quiet           no timing on stderr\n"
    "  -h, --help            this help        --version    the version\n"
    "Under mpirun -np N, the data is split over N / (tp * pp) data-parallel ranks and rank 0 prints\n"
    "the same numbers as one rank: mpirun -np 4 gpt-eval --tp 2 -m MODEL -d FILE (dp 2 x tp 2).\n";

enum { O_TOKENS = 256, O_SEQ, O_STRIDE, O_PERTOK, O_JSON, O_CHOICE, O_SET, O_DEVICE, O_EXPERTS, O_VERSION, O_TP, O_PP, O_PREC };

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see " PROG " --help)\n");
    return 2;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* Per-token output: printed as it comes on one rank; across ranks, each data-parallel group's
 * scoring rank keeps its lines and rank 0 prints them all in group order (the groups hold
 * consecutive pieces of the data, so that is one rank's order). */
typedef struct {
    int direct, off;
    char *p;
    size_t n, cap;
} sink;

__attribute__((format(printf, 2, 3))) static void out(sink *s, const char *fmt, ...)
{
    va_list ap;
    if (s->off) return;
    va_start(ap, fmt);
    if (s->direct) {
        vprintf(fmt, ap);
        va_end(ap);
        return;
    }
    va_list aq;
    va_copy(aq, ap);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k > 0) {
        if (s->n + (size_t)k + 1 > s->cap) s->cap = (s->n + (size_t)k + 1) * 2, s->p = gpt_xrealloc(s->p, s->cap);
        vsnprintf(s->p + s->n, (size_t)k + 1, fmt, aq);
        s->n += (size_t)k;
    }
    va_end(aq);
}

typedef struct {
    const gpt_tokenizer *tk;
    long long bytes; /* of the scored tokens */
    int per_token;
    sink *o;
} tok_ctx;

static void on_token(void *user, size_t pos, uint32_t target, double nll, int correct)
{
    tok_ctx *c = user;
    size_t n = 0;
    if (c->tk && gpt_tokenizer_token(c->tk, target, &n)) c->bytes += (long long)n;
    if (c->per_token)
        out(c->o, "{\"pos\":%zu,\"token\":%u,\"loss\":%.9g,\"correct\":%s}\n", pos, target, nll, correct ? "true" : "false");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Multiple choice over the items [k0, k1) (non-empty lines, counted from 0); adds to cnt: items,
 * right by summed loss, right by per-token loss. */
static int run_choice(gpt_model *m, const gpt_tokenizer *tk, const gpt_blob *b, long k0, long k1, int per_token,
                      sink *o, double *cnt, gpt_err *err)
{
    long n = 0, right = 0, right_norm = 0, lineno = 0, item = -1;
    size_t off = 0;
    gpt_ids ctx = {0}, end = {0};
    int rc = 0;
    while (off < b->size && rc == 0) {
        const char *s = (const char *)b->data + off, *nl = memchr(s, '\n', b->size - off);
        size_t len = nl ? (size_t)(nl - s) : b->size - off;
        off += len + (nl ? 1 : 0);
        lineno++;
        if (len == 0) continue;
        if (++item < k0 || item >= k1) continue; /* another data-parallel rank's item */
        cJSON *j = cJSON_ParseWithLength(s, len);
        const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "context") : NULL;
        const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "endings") : NULL;
        const cJSON *l = j ? cJSON_GetObjectItemCaseSensitive(j, "label") : NULL;
        int ne = cJSON_IsArray(e) ? cJSON_GetArraySize(e) : 0;
        if (!cJSON_IsString(c) || ne < 1 || !cJSON_IsNumber(l) || l->valueint < 0 || l->valueint >= ne) {
            rc = gpt_errf(err, "line %ld: expected {\"context\": TEXT, \"endings\": [TEXT, ...], \"label\": INDEX "
                               "of an ending}", lineno);
            cJSON_Delete(j);
            break;
        }
        ctx.n = 0;
        if (gpt_encode(tk, c->valuestring, strlen(c->valuestring), NULL, &ctx, err) < 0) rc = -1;
        double best = INFINITY, best_norm = INFINITY;
        int pred = -1, pred_norm = -1;
        if (per_token) out(o, "{\"line\":%ld,\"label\":%d,\"losses\":[", lineno, l->valueint);
        for (int i = 0; i < ne && rc == 0; i++) {
            const cJSON *ei = cJSON_GetArrayItem(e, i);
            if (!cJSON_IsString(ei)) {
                rc = gpt_errf(err, "line %ld: ending %d is not a string", lineno, i);
                break;
            }
            end.n = 0;
            double nll = 0;
            if (gpt_encode(tk, ei->valuestring, strlen(ei->valuestring), NULL, &end, err) < 0 ||
                gpt_eval_continuation(m, ctx.v, ctx.n, end.v, end.n, &nll, err) < 0) {
                gpt_err_prefix(err, "line %ld, ending %d", lineno, i);
                rc = -1;
                break;
            }
            double norm = nll / (double)end.n;
            if (nll < best) best = nll, pred = i;
            if (norm < best_norm) best_norm = norm, pred_norm = i;
            if (per_token) out(o, "%s%.9g", i ? "," : "", nll);
        }
        if (per_token) out(o, "],\"pred\":%d,\"pred_norm\":%d}\n", pred, pred_norm);
        if (rc == 0) n++, right += pred == l->valueint, right_norm += pred_norm == l->valueint;
        cJSON_Delete(j);
    }
    gpt_ids_free(&ctx), gpt_ids_free(&end);
    cnt[0] += (double)n, cnt[1] += (double)right, cnt[2] += (double)right_norm;
    return rc < 0 ? -1 : 0;
}

static long count_items(const gpt_blob *b)
{
    long k = 0;
    for (size_t off = 0; off < b->size;) {
        const char *s = (const char *)b->data + off, *nl = memchr(s, '\n', b->size - off);
        size_t len = nl ? (size_t)(nl - s) : b->size - off;
        off += len + (nl ? 1 : 0);
        k += len > 0;
    }
    return k;
}

static int parse_experts(const char *s)
{
    return !strcmp(s, "auto") ? GPT_EXPERTS_AUTO : !strcmp(s, "mxfp4") ? GPT_EXPERTS_MXFP4 : !strcmp(s, "f32") ? GPT_EXPERTS_F32 : -1;
}

/* Rank 0 reads the input; every rank gets it (standard input reaches rank 0 only under mpirun).
 * choice: the bytes in *blob; else the token ids in *ids and the text size in *text_bytes (-1: a
 * token stream). 0 everywhere, or -1 everywhere (the message on rank 0). */
static int read_input(gpt_comm *w, const char *data, int choice, int tokens, const gpt_tokenizer *tk, gpt_blob *blob,
                      gpt_ids *ids, long long *text_bytes, gpt_err *err)
{
    uint64_t hdr[3] = {0, 0, 0}; /* failed, count, text bytes + 1 */
    if (w->rank == 0) {
        int rc = 0;
        if (choice) {
            rc = gpt_blob_read(blob, data, err);
        } else if (tokens) {
            rc = gpt_tokens_read_all(data, ids, NULL, err);
        } else {
            rc = gpt_blob_read(blob, data, err) < 0 || gpt_encode_parallel(tk, blob->data, blob->size, NULL, 0, ids, err) < 0 ? -1 : 0;
            hdr[2] = (uint64_t)blob->size + 1;
        }
        if (rc == 0 && !choice && ids->n < 2) rc = gpt_errf(err, "%s: %zu tokens: at least 2 are needed to score one", data, ids->n);
        hdr[0] = rc < 0, hdr[1] = choice ? blob->size : ids->n;
    }
    if (w->size > 1) {
        gpt_err e2 = {{0}};
        if (w->broadcast(w, hdr, sizeof hdr, 0, &e2) < 0) return *err = e2, -1;
        if (hdr[0]) return -1;
        if (w->rank != 0) {
            if (choice)
                blob->data = hdr[1] ? gpt_xmalloc(hdr[1]) : NULL, blob->size = hdr[1], blob->mapped = 0;
            else
                ids->v = gpt_xmalloc(hdr[1] * sizeof *ids->v), ids->n = ids->cap = hdr[1];
        }
        void *buf = choice ? (void *)blob->data : (void *)ids->v;
        size_t bytes = choice ? hdr[1] : hdr[1] * sizeof *ids->v;
        if (bytes && w->broadcast(w, buf, bytes, 0, err) < 0) return -1;
    }
    *text_bytes = hdr[2] ? (long long)hdr[2] - 1 : -1;
    return hdr[0] ? -1 : 0;
}

/* Rank 0 collects the kept per-token lines of each data-parallel group in group order. */
static int gather_lines(gpt_comm *w, const gpt_mesh *mesh, sink *o, int holder, gpt_err *err)
{
    enum { TAG_LINES = 7 };
    if (o->direct) return 0;
    if (w->rank != 0) {
        if (!holder) return 0;
        uint64_t n = o->n;
        return w->send(w, &n, sizeof n, 0, TAG_LINES, err) < 0 || (n && w->send(w, o->p, n, 0, TAG_LINES, err) < 0) ? -1 : 0;
    }
    for (int d = 0; d < mesh->dp; d++) {
        int r = gpt_mesh_rank_of(mesh, d, 0, mesh->pp - 1);
        if (r == 0) {
            if (o->n) fwrite(o->p, 1, o->n, stdout);
            continue;
        }
        uint64_t n = 0;
        if (w->recv(w, &n, sizeof n, r, TAG_LINES, err) < 0) return -1;
        char *b = gpt_xmalloc(n + 1);
        int rc = n ? w->recv(w, b, n, r, TAG_LINES, err) : 0;
        if (rc == 0) fwrite(b, 1, n, stdout);
        free(b);
        if (rc < 0) return -1;
    }
    return 0;
}

/* early exits free the argument arrays (make asan checks leaks) */
#define EXIT(x) do { int rc_ = (x); free(sets); return rc_; } while (0)

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    const char *model = NULL, *data = "-", *device = NULL;
    const char **sets = gpt_xcalloc((size_t)argc, sizeof *sets);
    size_t n_sets = 0;
    int tokens = 0, per_token = 0, json = 0, choice = 0, quiet = 0, tp = 1, pp = 1, precision = GPT_GEMM_FP32;
    gpt_eval_opts eo = {0, 0, 4};
    gpt_open_opts oo = {0};
    static const struct option longopts[] = {
        {"model", 1, 0, 'm'}, {"data", 1, 0, 'd'}, {"tokens", 0, 0, O_TOKENS}, {"seq-len", 1, 0, O_SEQ},
        {"stride", 1, 0, O_STRIDE}, {"batch-size", 1, 0, 'b'}, {"per-token", 0, 0, O_PERTOK},
        {"json", 0, 0, O_JSON}, {"choice", 0, 0, O_CHOICE}, {"set", 1, 0, O_SET}, {"device", 1, 0, O_DEVICE},
        {"experts", 1, 0, O_EXPERTS}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"version", 0, 0, O_VERSION},
        {"tp", 1, 0, O_TP}, {"pp", 1, 0, O_PP}, {"precision", 1, 0, O_PREC}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:d:b:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case O_TOKENS: tokens = 1; break;
        case O_SEQ:
            if (parse_int(optarg, 2, 1 << 30, &eo.seq_len) < 0) EXIT(usage_error("--seq-len wants a count >= 2"));
            break;
        case O_STRIDE:
            if (parse_int(optarg, 1, 1 << 30, &eo.stride) < 0) EXIT(usage_error("--stride wants a count >= 1"));
            break;
        case 'b':
            if (parse_int(optarg, 1, 4096, &eo.batch) < 0) EXIT(usage_error("--batch-size wants 1..4096"));
            break;
        case O_PERTOK: per_token = 1; break;
        case O_JSON: json = 1; break;
        case O_CHOICE: choice = 1; break;
        case O_SET: sets[n_sets++] = optarg; break;
        case O_DEVICE: device = optarg; break;
        case O_PREC:
            precision = !strcmp(optarg, "fp32") ? GPT_GEMM_FP32 : !strcmp(optarg, "bf16") ? GPT_GEMM_BF16
                      : !strcmp(optarg, "fp16") ? GPT_GEMM_FP16 : -1;
            if (precision < 0) EXIT(usage_error("--precision wants fp32, bf16 or fp16, not '%s'", optarg));
            break;
        case O_EXPERTS:
            if ((oo.experts = parse_experts(optarg)) < 0) EXIT(usage_error("--experts wants auto, mxfp4 or f32"));
            break;
        case O_TP:
            if (parse_int(optarg, 1, 4096, &tp) < 0) EXIT(usage_error("--tp wants 1..4096, not '%s'", optarg));
            break;
        case O_PP:
            if (parse_int(optarg, 1, 4096, &pp) < 0) EXIT(usage_error("--pp wants 1..4096, not '%s'", optarg));
            break;
        case 'q': quiet = 1; break;
        case 'h': fputs(usage_text, stdout); EXIT(0);
        case O_VERSION: printf(PROG " %s\n", GPT_VERSION); EXIT(0);
        default: EXIT(usage_error("unknown option"));
        }
    }
    if (optind < argc) {
        if (optind + 1 == argc && !strcmp(data, "-")) data = argv[optind];
        else EXIT(usage_error("unexpected argument '%s'", argv[optind]));
    }
    if (!model) EXIT(usage_error("no model: give -m DIR"));
    if (choice && tokens) EXIT(usage_error("--choice reads JSONL text, not a token stream"));
    if (!strcmp(data, "-") && isatty(0)) EXIT(usage_error("no data: give --data FILE or pipe it in"));

    gpt_err err = {{0}};
    /* one process, or mpirun's ranks: world = dp x tp x pp (mesh.h), dp inferred */
    gpt_comm *world = gpt_comm_open(&argc, &argv, &err);
    if (!world) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        EXIT(1);
    }
    gpt_mesh mesh;
    if (gpt_mesh_init(&mesh, world, 0, tp, pp, 1, &err) < 0) {
        if (world->rank == 0) fprintf(stderr, PROG ": %s\n", err.msg);
        gpt_comm_close(world);
        EXIT(1);
    }
    int R0 = world->rank == 0, par = world->size > 1;
    /* the rank of each data-parallel group that scores: the last stage's first tp rank */
    int holder = mesh.tp_rank == 0 && mesh.pp_rank == mesh.pp - 1;
    int status = 1;
    gpt_backend *be = gpt_backend_open(device, &err);
    if (!be) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        gpt_mesh_free(&mesh);
        gpt_comm_close(world);
        EXIT(1);
    }
    gpt_loaded_model lm;
    gpt_tokenizer *tk = NULL;
    gpt_blob blob = {0};
    gpt_ids ids = {0};
    sink so = {!par, 0, NULL, 0, 0};
    if (tp * pp > 1) /* every rank reads only its piece (stage layers, tp slices) from the files */
        oo.tp = mesh.tp_comm, oo.pp = pp, oo.stage = mesh.pp_rank;
    int bad = gpt_model_open_ex(&lm, model, be, sets, n_sets, &oo, &err) < 0, bad_rank;
    if (gpt_comm_any_failed(world, bad, &bad_rank)) {
        if (!bad) gpt_model_close(&lm);
        if (world->rank == bad_rank) fprintf(stderr, PROG ": %s\n", err.msg);
        R0 = 0; /* fail_nomodel: said once, above */
        goto fail_nomodel;
    }
    if (tp * pp > 1) gpt_model_pp_set_comm(lm.model, mesh.pp_comm);
    be->gemm_prec = precision;
    gpt_model_freeze(lm.model, 1);
    const gpt_model_config *mc = gpt_model_full_config(lm.model);
    if (!(tk = gpt_tokenizer_open(mc->tokenizer, NULL, &err))) {
        gpt_err_prefix(&err, "model %s: tokenizer", model);
        goto fail;
    }
    long long text_bytes = -1;
    if (read_input(world, data, choice, tokens, tk, &blob, &ids, &text_bytes, &err) < 0) goto fail;
    double t0 = now_s();
    /* sums over the data-parallel groups' scoring ranks: nll, scored, correct, bytes (choice:
     * items, right, right_norm) */
    double sums[4] = {0, 0, 0, 0};
    int rc;
    if (!holder) so.off = 1;
    if (choice) {
        long K = count_items(&blob);
        rc = run_choice(lm.model, tk, &blob, K * mesh.dp_rank / mesh.dp, K * (mesh.dp_rank + 1) / mesh.dp, per_token,
                        &so, sums, &err);
    } else {
        tok_ctx tc = {tk, 0, per_token, &so};
        gpt_eval_result r = {0};
        rc = gpt_eval_tokens_shard(lm.model, ids.v, ids.n, &eo, mesh.dp_rank, mesh.dp, on_token, &tc, &r, &err);
        if (rc < 0) gpt_err_prefix(&err, "%s", data);
        sums[0] = r.sum_nll, sums[1] = (double)r.n_scored, sums[2] = (double)r.n_correct, sums[3] = (double)tc.bytes;
    }
    if (par) {
        /* who failed: the lowest failing rank reports, as one rank reports its first error (the
         * groups hold the data in order; the ranks of a group fail alike, on the same data) */
        double *v = gpt_xcalloc((size_t)world->size + 4, sizeof *v);
        v[world->rank] = rc < 0;
        for (int i = 0; i < 4 && holder; i++) v[world->size + i] = sums[i];
        gpt_err e2 = {{0}};
        if (world->allreduce_sum_f64(world, v, (size_t)world->size + 4, &e2) < 0) {
            fprintf(stderr, PROG ": %s\n", e2.msg);
            world->abort(world, 1);
        }
        int any = 0, first = -1;
        for (int i = 0; i < world->size; i++) {
            any |= v[i] != 0;
            if (v[i] != 0 && first < 0) first = i;
        }
        for (int i = 0; i < 4; i++) sums[i] = v[world->size + i];
        if (rc < 0 && first == world->rank) fprintf(stderr, PROG ": %s\n", err.msg);
        free(v);
        if (any) goto out;
        if (gather_lines(world, &mesh, &so, holder, &err) < 0) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            world->abort(world, 1);
        }
    } else if (rc < 0) {
        goto fail;
    }
    if (!R0) {
        status = 0;
        goto out;
    }
    double dt = now_s() - t0;
    if (choice) {
        double n = sums[0];
        FILE *o = per_token && !json ? stderr : stdout;
        if (json)
            fprintf(o, "{\"items\":%.0f,\"accuracy\":%.6f,\"accuracy_norm\":%.6f}\n", n, n ? sums[1] / n : 0.0,
                    n ? sums[2] / n : 0.0);
        else
            fprintf(o, "items %.0f\naccuracy %.6f\naccuracy_norm %.6f\n", n, n ? sums[1] / n : 0.0, n ? sums[2] / n : 0.0);
        status = 0;
        goto out;
    }
    long long n_scored = (long long)sums[1], bytes = (long long)sums[3];
    double loss = n_scored ? sums[0] / (double)n_scored : 0, acc = n_scored ? sums[2] / (double)n_scored : 0.0;
    double bpb = bytes > 0 ? sums[0] / log(2.0) / (double)bytes : 0;
    FILE *o = per_token && !json ? stderr : stdout;
    if (json) {
        fprintf(o, "{\"tokens\":%zu,\"scored\":%lld,\"loss\":%.9g,\"perplexity\":%.9g,\"accuracy\":%.9g,"
                   "\"scored_bytes\":%lld,\"bits_per_byte\":%.9g",
                ids.n, n_scored, loss, exp(loss), acc, bytes, bpb);
        if (text_bytes >= 0) fprintf(o, ",\"text_bytes\":%lld", text_bytes);
        fprintf(o, "}\n");
    } else {
        fprintf(o, "tokens %zu\nscored %lld\nloss %.6f\nperplexity %.4f\naccuracy %.6f\nbits_per_byte %.6f\n", ids.n,
                n_scored, loss, exp(loss), acc, bpb);
    }
    if (!quiet) fprintf(stderr, PROG ": scored %lld tokens in %.3f s (%.1f tok/s)\n", n_scored, dt, dt > 0 ? n_scored / dt : 0.0);
    status = 0;
    goto out;
fail:
    /* before the scoring every failure is the same on every rank: say it once */
    if (R0) fprintf(stderr, PROG ": %s\n", err.msg);
out:
    free(so.p);
    gpt_ids_free(&ids);
    gpt_blob_free(&blob);
    gpt_tokenizer_free(tk);
    gpt_model_close(&lm);
    be->destroy(be);
    free(sets);
    if (fflush(stdout) != 0) {
        fprintf(stderr, PROG ": writing standard output: %s\n", strerror(errno));
        status = 1;
    }
    gpt_mesh_free(&mesh);
    gpt_comm_close(world);
    return status;
fail_nomodel:
    if (R0) fprintf(stderr, PROG ": %s\n", err.msg);
    be->destroy(be);
    free(sets);
    gpt_mesh_free(&mesh);
    gpt_comm_close(world);
    return 1;
}
