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
#include "backend_select.h"
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
    "      --set KEY=VALUE   override a model config key (repeatable)\n"
    "      --device DEV      cpu, cuda, cuda:N or auto (default: cuda when built with it and a GPU\n"
    "                        is visible, else cpu)\n"
    "      --experts auto|mxfp4|f32   MoE experts in MXFP4 (fused kernels) or dequantized to fp32;\n"
    "                        auto (default): MXFP4 when the checkpoint stores them so\n"
    "  -q, --quiet           no timing on stderr\n"
    "  -h, --help            this help        --version    the version\n";

enum { O_TOKENS = 256, O_SEQ, O_STRIDE, O_PERTOK, O_JSON, O_CHOICE, O_SET, O_DEVICE, O_EXPERTS, O_VERSION };

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

typedef struct {
    const gpt_tokenizer *tk;
    long long bytes; /* of the scored tokens */
    int per_token;
} tok_ctx;

static void on_token(void *user, size_t pos, uint32_t target, double nll, int correct)
{
    tok_ctx *c = user;
    size_t n = 0;
    if (c->tk && gpt_tokenizer_token(c->tk, target, &n)) c->bytes += (long long)n;
    if (c->per_token)
        printf("{\"pos\":%zu,\"token\":%u,\"loss\":%.9g,\"correct\":%s}\n", pos, target, nll, correct ? "true" : "false");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int run_choice(gpt_model *m, const gpt_tokenizer *tk, const gpt_blob *b, int per_token, int json, gpt_err *err)
{
    long n = 0, right = 0, right_norm = 0, lineno = 0;
    size_t off = 0;
    gpt_ids ctx = {0}, end = {0};
    int rc = 0;
    while (off < b->size && rc == 0) {
        const char *s = (const char *)b->data + off, *nl = memchr(s, '\n', b->size - off);
        size_t len = nl ? (size_t)(nl - s) : b->size - off;
        off += len + (nl ? 1 : 0);
        lineno++;
        if (len == 0) continue;
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
        if (per_token) printf("{\"line\":%ld,\"label\":%d,\"losses\":[", lineno, l->valueint);
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
            if (per_token) printf("%s%.9g", i ? "," : "", nll);
        }
        if (per_token) printf("],\"pred\":%d,\"pred_norm\":%d}\n", pred, pred_norm);
        if (rc == 0) n++, right += pred == l->valueint, right_norm += pred_norm == l->valueint;
        cJSON_Delete(j);
    }
    gpt_ids_free(&ctx), gpt_ids_free(&end);
    if (rc < 0) return -1;
    FILE *o = per_token && !json ? stderr : stdout;
    if (json)
        fprintf(o, "{\"items\":%ld,\"accuracy\":%.6f,\"accuracy_norm\":%.6f}\n", n, n ? (double)right / n : 0.0,
                n ? (double)right_norm / n : 0.0);
    else
        fprintf(o, "items %ld\naccuracy %.6f\naccuracy_norm %.6f\n", n, n ? (double)right / n : 0.0,
                n ? (double)right_norm / n : 0.0);
    return 0;
}

static int parse_experts(const char *s)
{
    return !strcmp(s, "auto") ? GPT_EXPERTS_AUTO : !strcmp(s, "mxfp4") ? GPT_EXPERTS_MXFP4 : !strcmp(s, "f32") ? GPT_EXPERTS_F32 : -1;
}

/* early exits free the argument arrays (make asan checks leaks) */
#define EXIT(x) do { int rc_ = (x); free(sets); return rc_; } while (0)

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    const char *model = NULL, *data = "-", *device = NULL;
    const char **sets = gpt_xcalloc((size_t)argc, sizeof *sets);
    size_t n_sets = 0;
    int tokens = 0, per_token = 0, json = 0, choice = 0, quiet = 0;
    gpt_eval_opts eo = {0, 0, 4};
    gpt_open_opts oo = {0};
    static const struct option longopts[] = {
        {"model", 1, 0, 'm'}, {"data", 1, 0, 'd'}, {"tokens", 0, 0, O_TOKENS}, {"seq-len", 1, 0, O_SEQ},
        {"stride", 1, 0, O_STRIDE}, {"batch-size", 1, 0, 'b'}, {"per-token", 0, 0, O_PERTOK},
        {"json", 0, 0, O_JSON}, {"choice", 0, 0, O_CHOICE}, {"set", 1, 0, O_SET}, {"device", 1, 0, O_DEVICE},
        {"experts", 1, 0, O_EXPERTS}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
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
        case O_EXPERTS:
            if ((oo.experts = parse_experts(optarg)) < 0) EXIT(usage_error("--experts wants auto, mxfp4 or f32"));
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
    int status = 1;
    gpt_backend *be = gpt_backend_open(device, &err);
    if (!be) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        EXIT(1);
    }
    gpt_loaded_model lm;
    gpt_tokenizer *tk = NULL;
    gpt_blob blob = {0};
    gpt_ids ids = {0};
    if (gpt_model_open_ex(&lm, model, be, sets, n_sets, &oo, &err) < 0) goto fail_nomodel;
    const gpt_model_config *mc = gpt_model_config_of(lm.model);
    if (!(tk = gpt_tokenizer_open(mc->tokenizer, NULL, &err))) {
        gpt_err_prefix(&err, "model %s: tokenizer", model);
        goto fail;
    }
    double t0 = now_s();
    if (choice) {
        if (gpt_blob_read(&blob, data, &err) < 0 || run_choice(lm.model, tk, &blob, per_token, json, &err) < 0) goto fail;
        status = 0;
        goto out;
    }
    long long text_bytes = -1;
    if (tokens) {
        if (gpt_tokens_read_all(data, &ids, NULL, &err) < 0) goto fail;
    } else {
        if (gpt_blob_read(&blob, data, &err) < 0 ||
            gpt_encode_parallel(tk, blob.data, blob.size, NULL, 0, &ids, &err) < 0)
            goto fail;
        text_bytes = (long long)blob.size;
    }
    if (ids.n < 2) {
        gpt_errf(&err, "%s: %zu tokens: at least 2 are needed to score one", data, ids.n);
        goto fail;
    }
    tok_ctx tc = {tk, 0, per_token};
    gpt_eval_result r = {0};
    if (gpt_eval_tokens(lm.model, ids.v, ids.n, &eo, on_token, &tc, &r, &err) < 0) {
        gpt_err_prefix(&err, "%s", data);
        goto fail;
    }
    double loss = r.n_scored ? r.sum_nll / (double)r.n_scored : 0, dt = now_s() - t0;
    double bpb = tc.bytes > 0 ? r.sum_nll / log(2.0) / (double)tc.bytes : 0;
    FILE *o = per_token && !json ? stderr : stdout;
    if (json) {
        fprintf(o, "{\"tokens\":%zu,\"scored\":%lld,\"loss\":%.9g,\"perplexity\":%.9g,\"accuracy\":%.9g,"
                   "\"scored_bytes\":%lld,\"bits_per_byte\":%.9g",
                ids.n, r.n_scored, loss, exp(loss), r.n_scored ? (double)r.n_correct / r.n_scored : 0.0, tc.bytes, bpb);
        if (text_bytes >= 0) fprintf(o, ",\"text_bytes\":%lld", text_bytes);
        fprintf(o, "}\n");
    } else {
        fprintf(o, "tokens %zu\nscored %lld\nloss %.6f\nperplexity %.4f\naccuracy %.6f\nbits_per_byte %.6f\n", ids.n,
                r.n_scored, loss, exp(loss), r.n_scored ? (double)r.n_correct / r.n_scored : 0.0, bpb);
    }
    if (!quiet) fprintf(stderr, PROG ": scored %lld tokens in %.3f s (%.1f tok/s)\n", r.n_scored, dt, dt > 0 ? r.n_scored / dt : 0.0);
    status = 0;
    goto out;
fail:
    fprintf(stderr, PROG ": %s\n", err.msg);
out:
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
    return status;
fail_nomodel:
    fprintf(stderr, PROG ": %s\n", err.msg);
    be->destroy(be);
    free(sets);
    return 1;
}
