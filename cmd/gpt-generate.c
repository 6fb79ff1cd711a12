/* gpt-generate: complete prompts with a model (gpt-generate(1)). Data on stdout, logs on stderr. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "half.h"
#include "backend_select.h"
#include "blas_check.h"
#include "generate.h"
#include "harmony.h"
#include "comm.h"
#include "mesh.h"
#include "model_load.h"
#include "model_pp.h"
#include "model_tp.h"
#include "tokenizer.h"
#include "tokens.h"

#define PROG "gpt-generate"

static const char usage_text[] =
    "usage: gpt-generate -m MODEL [OPTIONS]\n"
    "Completes prompts: -p TEXT, -f FILE or standard input, one prompt per line; completions on stdout.\n"
    "\n"
    "  -m, --model DIR           a checkpoint (gpt-checkpoint(5)), or a directory with model.yaml and\n"
    "                            model.safetensors\n"
    "  -p, --prompt TEXT         a prompt (repeatable)\n"
    "  -f, --file FILE           prompts, one per line (\"-\": standard input)\n"
    "      --jsonl               read {\"prompt\": ...} lines, write one JSON object per completion\n"
    "      --tokens              read a token stream (gpt-tokenize encode; prompts split at <|endoftext|>),\n"
    "                            write the completions as a token stream\n"
    "  -n, --max-new-tokens N    tokens to generate per prompt (default 128)\n"
    "  -b, --batch-size N        prompts decoded together (default 8)\n"
    "      --temperature T       0 = greedy (default 0)\n"
    "      --top-k K             keep the K most likely tokens (0 = off)\n"
    "      --top-p P             nucleus: keep the smallest set with mass >= P (1 = off)\n"
    "      --min-p P             drop tokens below P * the top probability (0 = off)\n"
    "      --repetition-penalty R   divide seen tokens' positive logits by R (1 = off)\n"
    "      --presence-penalty A  subtract A from seen tokens' logits (0 = off)\n"
    "      --frequency-penalty A subtract A * count from seen tokens' logits (0 = off)\n"
    "      --seed N              sampling seed (default: random, printed on stderr)\n"
    "      --num-beams N         beam search with N beams (1 = off)\n"
    "      --length-penalty L    beam score = log p / length^L (default 1)\n"
    "      --early-stopping W    beam search stop rule: true, false (default) or never\n"
    "      --eos ID              stop on token ID (repeatable; default <|endoftext|>); --eos -1: none\n"
    "      --stop TEXT           stop when the completion contains TEXT (repeatable; not shown)\n"
    "      --no-stream           do not stream a single prompt's tokens as they come\n"
    "      --chat                wrap prompts in the harmony chat format (gpt-oss)\n"
    "      --system TEXT         chat: developer instructions\n"
    "      --reasoning LEVEL     chat: low, medium (default) or high\n"
    "      --show-reasoning      chat: print the whole reply, not only the final channel\n"
    "      --set KEY=VALUE       override a model config key (repeatable)\n"
    "      --device DEV          cpu, cuda, cuda:N or auto (default: cuda when built with it and a\n"
    "                            GPU is visible, else cpu)\n"
    "      --cache-dtype f32|bf16|int8   KV cache precision (default f32, bf16 with --precision bf16|fp16;\n"
    "                            int8: per-head scales)\n"
    "      --precision P         GEMM operands fp32 (default), bf16 or fp16, fp32 sums; bf16 runs on\n"
    "                            AMX tiles where the CPU has them, tensor cores on CUDA\n"
    "      --no-device-sampling  draw tokens on the host even on a GPU (default: on the GPU when\n"
    "                            no penalties are set and without --tp)\n"
    "      --experts auto|mxfp4|f32   MoE experts in MXFP4 (fused kernels) or dequantized to fp32;\n"
    "                            auto (default): MXFP4 when the checkpoint stores them so\n"
    "      --tp N                tensor parallel over N ranks: mpirun -np N gpt-generate --tp N ...\n"
    "                            (prompts from -p or -f FILE; rank 0 prints)\n"
    "      --pp N                pipeline parallel over N stages (layer ranges, each with its KV cache\n"
    "                            slice); with --tp T: mpirun -np T*N gpt-generate --tp T --pp N ...\n"
    "  -q, --quiet               no timing summary on stderr\n"
    "  -h, --help                this help        --version    the version\n";

enum {
    O_JSONL = 256, O_TOKENS, O_TEMP, O_TOPK, O_TOPP, O_MINP, O_REP, O_PRES, O_FREQ, O_SEED, O_BEAMS, O_LP, O_ES,
    O_EOS, O_STOP, O_NOSTREAM, O_CHAT, O_SYSTEM, O_REASONING, O_SHOWR, O_SET, O_DEVICE, O_EXPERTS, O_VERSION, O_TP, O_CACHE, O_PP, O_DEVSAMPLE, O_NODEVSAMPLE, O_PREC
};

typedef struct {
    const char *model, *file, *system, *reasoning, *device;
    char **prompts;
    int n_prompts;
    int jsonl, tokens, batch, no_stream, chat, show_reasoning, quiet, seed_given, tp, pp;
    gpt_gen_opts g;
    uint32_t *eos;
    int n_eos, no_eos;
    const char **stop;
    const char **sets;
    size_t n_sets;
    int experts; /* GPT_EXPERTS_* */
    int precision; /* GEMM operands: half.h GPT_GEMM_* */
    int cache_set; /* --cache-dtype given (else the cache follows --precision: f32, or bf16) */
} options;

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

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* ---- output ---- */

typedef struct {
    const options *o;
    const gpt_tokenizer *tk;
    gpt_harmony_parser hp;
    int streamed;
} stream_ctx;

static void on_token(void *user, int req, uint32_t id, const unsigned char *bytes, size_t len)
{
    (void)req;
    stream_ctx *s = user;
    if (s->o->chat && !s->o->show_reasoning) {
        const unsigned char *b = NULL;
        size_t n = gpt_harmony_feed(&s->hp, s->tk, id, &b);
        if (n) fwrite(b, 1, n, stdout);
    } else if (len) {
        fwrite(bytes, 1, len, stdout);
    }
    fflush(stdout);
    s->streamed = 1;
}

/* The text shown for a request: the final channel in chat mode (unless --show-reasoning). */
static char *shown_text(const options *o, const gpt_tokenizer *tk, const gpt_harmony_ids *hid, gpt_gen_req *r,
                        size_t *len)
{
    if (!o->chat || o->show_reasoning || !hid) {
        *len = r->text_len;
        char *t = gpt_xmalloc(r->text_len + 1);
        memcpy(t, r->text, r->text_len);
        t[r->text_len] = 0;
        return t;
    }
    gpt_harmony_parser hp;
    gpt_harmony_parser_init(&hp, hid);
    size_t n = 0, cap = 64;
    char *t = gpt_xmalloc(cap);
    for (size_t i = 0; i < r->out.n; i++) {
        const unsigned char *b = NULL;
        size_t k = gpt_harmony_feed(&hp, tk, r->out.v[i], &b);
        if (!k) continue;
        if (n + k + 1 > cap) cap = (n + k + 1) * 2, t = gpt_xrealloc(t, cap);
        memcpy(t + n, b, k), n += k;
    }
    t[n] = 0;
    *len = n;
    return t;
}

/* ---- input ---- */

typedef struct {
    char *text;        /* the prompt as given */
    size_t len;
    gpt_ids ids;
    char *error;       /* input problem (bad JSON line) */
} prompt_in;

static void prompt_free(prompt_in *p)
{
    free(p->text), free(p->error);
    gpt_ids_free(&p->ids);
    memset(p, 0, sizeof *p);
}

/* Next prompt from a line reader; 0 at the end. */
static int next_line_prompt(FILE *f, const options *o, prompt_in *p, long lineno)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n < 0) {
        free(line);
        return 0;
    }
    if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    if (n > 0 && line[n - 1] == '\r') line[--n] = 0;
    memset(p, 0, sizeof *p);
    if (!o->jsonl) {
        p->text = line, p->len = (size_t)n;
        return 1;
    }
    cJSON *j = cJSON_ParseWithLength(line, (size_t)n);
    const cJSON *pr = j ? cJSON_GetObjectItemCaseSensitive(j, "prompt") : NULL;
    if (!cJSON_IsString(pr)) {
        char buf[160];
        snprintf(buf, sizeof buf, "line %ld: expected a JSON object with a string \"prompt\"", lineno);
        p->error = gpt_xstrdup(buf);
        p->text = gpt_xstrdup("");
    } else {
        p->text = gpt_xstrdup(pr->valuestring);
        p->len = strlen(p->text);
    }
    cJSON_Delete(j);
    free(line);
    return 1;
}

/* JSON wants UTF-8; a completion cut inside a character (or a model emitting stray bytes)
 * is shown with U+FFFD for each invalid byte, as decoders do. */
static char *utf8_clean(const char *s, size_t n)
{
    char *o = gpt_xmalloc(3 * n + 1), *w = o;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int valid = k > 0 && i + k <= n && c != 0;
        for (size_t j = 1; valid && j < k; j++) valid = (u[i + j] & 0xC0) == 0x80;
        if (valid && k == 2) valid = c >= 0xC2;
        if (valid && k == 3) valid = !(c == 0xE0 && u[i + 1] < 0xA0) && !(c == 0xED && u[i + 1] >= 0xA0);
        if (valid && k == 4) valid = c <= 0xF4 && !(c == 0xF0 && u[i + 1] < 0x90) && !(c == 0xF4 && u[i + 1] >= 0x90);
        if (valid) {
            memcpy(w, u + i, k), w += k, i += k;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3), w += 3, i++;
        }
    }
    *w = 0;
    return o;
}

static void write_json(const options *o, const prompt_in *p, const gpt_gen_req *r, const char *text, size_t len)
{
    cJSON *j = cJSON_CreateObject();
    if (p->text && !o->tokens && !p->error) {
        char *t = utf8_clean(p->text, p->len);
        cJSON_AddStringToObject(j, "prompt", t);
        free(t);
    }
    char *t = utf8_clean(text, len);
    cJSON_AddStringToObject(j, "completion", t);
    free(t);
    cJSON *ids = cJSON_AddArrayToObject(j, "tokens");
    for (size_t i = 0; i < r->out.n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->out.v[i]));
    cJSON_AddStringToObject(j, "finish_reason", gpt_finish_name(r->finish));
    if (r->finish == GPT_FINISH_ERROR) cJSON_AddStringToObject(j, "error", r->error ? r->error : p->error);
    char *s = cJSON_PrintUnformatted(j);
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    cJSON_Delete(j);
}

/* early exits free the argument arrays (make asan checks leaks) */
#define EXIT(x) do { int rc_ = (x); free(o.prompts), free(o.eos), free(o.stop), free(o.sets); return rc_; } while (0)

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    options o = {0};
    o.g = gpt_gen_defaults();
    o.batch = 8;
    o.prompts = gpt_xcalloc((size_t)argc, sizeof *o.prompts);
    o.eos = gpt_xcalloc((size_t)argc + 3, sizeof *o.eos);
    o.stop = gpt_xcalloc((size_t)argc, sizeof *o.stop);
    o.sets = gpt_xcalloc((size_t)argc, sizeof *o.sets);
    static const struct option longopts[] = {
        {"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'}, {"file", 1, 0, 'f'}, {"jsonl", 0, 0, O_JSONL},
        {"tokens", 0, 0, O_TOKENS}, {"max-new-tokens", 1, 0, 'n'}, {"batch-size", 1, 0, 'b'},
        {"temperature", 1, 0, O_TEMP}, {"top-k", 1, 0, O_TOPK}, {"top-p", 1, 0, O_TOPP}, {"min-p", 1, 0, O_MINP},
        {"repetition-penalty", 1, 0, O_REP}, {"presence-penalty", 1, 0, O_PRES},
        {"frequency-penalty", 1, 0, O_FREQ}, {"seed", 1, 0, O_SEED}, {"num-beams", 1, 0, O_BEAMS},
        {"length-penalty", 1, 0, O_LP}, {"early-stopping", 1, 0, O_ES}, {"eos", 1, 0, O_EOS},
        {"stop", 1, 0, O_STOP}, {"no-stream", 0, 0, O_NOSTREAM}, {"chat", 0, 0, O_CHAT},
        {"system", 1, 0, O_SYSTEM}, {"reasoning", 1, 0, O_REASONING}, {"show-reasoning", 0, 0, O_SHOWR},
        {"set", 1, 0, O_SET}, {"device", 1, 0, O_DEVICE}, {"experts", 1, 0, O_EXPERTS}, {"tp", 1, 0, O_TP},
        {"cache-dtype", 1, 0, O_CACHE}, {"pp", 1, 0, O_PP}, {"device-sampling", 0, 0, O_DEVSAMPLE},
        {"no-device-sampling", 0, 0, O_NODEVSAMPLE},
        {"precision", 1, 0, O_PREC},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {"version", 0, 0, O_VERSION},
        {0, 0, 0, 0}};
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "m:p:f:n:b:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'p': o.prompts[o.n_prompts++] = optarg; break;
        case 'f': o.file = optarg; break;
        case O_JSONL: o.jsonl = 1; break;
        case O_TOKENS: o.tokens = 1; break;
        case 'n':
            if (parse_num(optarg, 0, 1 << 30, &v) < 0 || v != (int)v) EXIT(usage_error("-n wants a count, not '%s'", optarg));
            o.g.max_new_tokens = (int)v;
            break;
        case 'b':
            if (parse_num(optarg, 1, 4096, &v) < 0 || v != (int)v) EXIT(usage_error("--batch-size wants 1..4096, not '%s'", optarg));
            o.batch = (int)v;
            break;
        case O_TEMP:
            if (parse_num(optarg, 0, 1e6, &o.g.sampling.temperature) < 0) EXIT(usage_error("--temperature wants a number >= 0"));
            break;
        case O_TOPK:
            if (parse_num(optarg, 0, 1 << 30, &v) < 0 || v != (int)v) EXIT(usage_error("--top-k wants a count >= 0"));
            o.g.sampling.top_k = (int)v;
            break;
        case O_TOPP:
            if (parse_num(optarg, 0, 1, &o.g.sampling.top_p) < 0 || o.g.sampling.top_p <= 0) EXIT(usage_error("--top-p wants 0 < P <= 1"));
            break;
        case O_MINP:
            if (parse_num(optarg, 0, 1, &o.g.sampling.min_p) < 0) EXIT(usage_error("--min-p wants 0 <= P <= 1"));
            break;
        case O_REP:
            if (parse_num(optarg, 1e-6, 1e6, &o.g.sampling.repetition_penalty) < 0) EXIT(usage_error("--repetition-penalty wants a number > 0"));
            break;
        case O_PRES:
            if (parse_num(optarg, -1e6, 1e6, &o.g.sampling.presence_penalty) < 0) EXIT(usage_error("--presence-penalty wants a number"));
            break;
        case O_FREQ:
            if (parse_num(optarg, -1e6, 1e6, &o.g.sampling.frequency_penalty) < 0) EXIT(usage_error("--frequency-penalty wants a number"));
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 0);
            if (errno || end == optarg || *end || *optarg == '-') EXIT(usage_error("--seed wants an unsigned integer, not '%s'", optarg));
            o.g.sampling.seed = s, o.seed_given = 1;
            break;
        }
        case O_BEAMS:
            if (parse_num(optarg, 1, 256, &v) < 0 || v != (int)v) EXIT(usage_error("--num-beams wants 1..256"));
            o.g.num_beams = (int)v;
            break;
        case O_LP:
            if (parse_num(optarg, -100, 100, &o.g.length_penalty) < 0) EXIT(usage_error("--length-penalty wants a number"));
            break;
        case O_ES:
            if (!strcmp(optarg, "true")) o.g.early_stopping = 1;
            else if (!strcmp(optarg, "false")) o.g.early_stopping = 0;
            else if (!strcmp(optarg, "never")) o.g.early_stopping = -1;
            else EXIT(usage_error("--early-stopping wants true, false or never, not '%s'", optarg));
            break;
        case O_EOS:
            if (!strcmp(optarg, "-1")) {
                o.no_eos = 1;
                break;
            }
            if (parse_num(optarg, 0, 4294967295.0, &v) < 0 || v != (double)(uint32_t)v) EXIT(usage_error("--eos wants a token id, not '%s'", optarg));
            o.eos[o.n_eos++] = (uint32_t)v;
            break;
        case O_STOP: o.stop[o.g.n_stop++] = optarg; break;
        case O_NOSTREAM: o.no_stream = 1; break;
        case O_CHAT: o.chat = 1; break;
        case O_SYSTEM: o.system = optarg; break;
        case O_REASONING: o.reasoning = optarg; break;
        case O_SHOWR: o.show_reasoning = 1; break;
        case O_SET: o.sets[o.n_sets++] = optarg; break;
        case O_DEVICE: o.device = optarg; break;
        case O_CACHE:
            o.g.kv_dtype = !strcmp(optarg, "f32") ? GPT_KV_F32 : !strcmp(optarg, "bf16") ? GPT_KV_BF16
                         : !strcmp(optarg, "int8") ? GPT_KV_INT8 : -1;
            if (o.g.kv_dtype < 0) EXIT(usage_error("--cache-dtype wants f32, bf16 or int8, not '%s'", optarg));
            o.cache_set = 1;
            break;
        case O_EXPERTS:
            o.experts = !strcmp(optarg, "auto") ? GPT_EXPERTS_AUTO : !strcmp(optarg, "mxfp4") ? GPT_EXPERTS_MXFP4
                      : !strcmp(optarg, "f32") ? GPT_EXPERTS_F32 : -1;
            if (o.experts < 0) EXIT(usage_error("--experts wants auto, mxfp4 or f32"));
            break;
        case O_TP:
            if (parse_num(optarg, 1, 4096, &v) < 0 || v != (int)v) EXIT(usage_error("--tp wants 1..4096, not '%s'", optarg));
            o.tp = (int)v;
            break;
        case O_DEVSAMPLE: o.g.device_sampling = 1; break;
        case O_NODEVSAMPLE: o.g.device_sampling = 0; break;
        case O_PREC:
            o.precision = !strcmp(optarg, "fp32") ? GPT_GEMM_FP32 : !strcmp(optarg, "bf16") ? GPT_GEMM_BF16
                        : !strcmp(optarg, "fp16") ? GPT_GEMM_FP16 : -1;
            if (o.precision < 0) EXIT(usage_error("--precision wants fp32, bf16 or fp16, not '%s'", optarg));
            break;
        case O_PP:
            if (parse_num(optarg, 1, 4096, &v) < 0 || v != (int)v) EXIT(usage_error("--pp wants 1..4096, not '%s'", optarg));
            o.pp = (int)v;
            break;
        case 'q': o.quiet = 1; break;
        case 'h': fputs(usage_text, stdout); EXIT(0);
        case O_VERSION: printf(PROG " %s\n", GPT_VERSION); EXIT(0);
        default: EXIT(usage_error("unknown option"));
        }
    }
    if (optind < argc) EXIT(usage_error("unexpected argument '%s' (prompts go in -p, -f or standard input)", argv[optind]));
    if (!o.model) EXIT(usage_error("no model: give -m DIR"));
    if (o.n_prompts && o.file) EXIT(usage_error("give prompts with -p or -f, not both"));
    if (o.tokens && (o.jsonl || o.n_prompts)) EXIT(usage_error("--tokens reads a token stream: not with --jsonl or -p"));
    if (o.tokens && o.chat) EXIT(usage_error("--tokens and --chat do not mix: the prompt tokens are taken as they are"));
    if (o.reasoning && strcmp(o.reasoning, "low") && strcmp(o.reasoning, "medium") && strcmp(o.reasoning, "high"))
        EXIT(usage_error("--reasoning wants low, medium or high, not '%s'", o.reasoning));
    if (!o.n_prompts && (!o.file || !strcmp(o.file, "-")) && isatty(0))
        EXIT(usage_error("no prompts: give -p TEXT or -f FILE, or pipe prompts in"));

    int tpn = o.tp > 1 ? o.tp : 1, ppn = o.pp > 1 ? o.pp : 1;
    if (tpn * ppn > 1 && !o.n_prompts && (!o.file || !strcmp(o.file, "-")))
        EXIT(usage_error("--%s: give prompts with -p or -f FILE (standard input reaches one rank only)", tpn > 1 ? "tp" : "pp"));

    gpt_err err = {{0}};
    int status = 0;
    /* tensor parallel: every rank reads only its piece of the model, and runs the same
     * requests; gathered logits make every rank sample the same tokens, rank 0 prints */
    /* pipeline parallel: each stage keeps its layers (and their KV cache); activations go stage to
     * stage and the last stage's logits are broadcast, so again every rank samples the same tokens */
    gpt_comm *world = NULL;
    gpt_mesh mesh = {0};
    if (tpn * ppn > 1) {
        if (!(world = gpt_comm_open(&argc, &argv, &err)) || world->size != tpn * ppn) {
            if (!world || world->rank == 0) /* the same on every rank: say it once */
                fprintf(stderr, PROG ": --tp %d --pp %d: %s%d ranks launched; run mpirun -np %d " PROG " --tp %d --pp %d ...\n",
                    tpn, ppn, world ? "" : err.msg, world ? world->size : 1, tpn * ppn, tpn, ppn);
            if (world) gpt_comm_close(world);
            EXIT(1);
        }
        if (gpt_mesh_init(&mesh, world, 1, tpn, ppn, 1, &err) < 0) {
            if (world->rank == 0) fprintf(stderr, PROG ": %s\n", err.msg);
            gpt_comm_close(world);
            EXIT(1);
        }
        if (world->rank != 0) {
            o.quiet = 1;
            if (!freopen("/dev/null", "w", stdout)) EXIT(1);
        }
    }
    gpt_backend *be = gpt_backend_open(o.device, &err);
    if (!be) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        EXIT(1);
    }
    gpt_loaded_model lm;
    /* across ranks each rank reads only its piece (stage layers, tp slices) from the files */
    gpt_open_opts oo = {.experts = o.experts};
    if (world) oo.tp = mesh.tp_comm, oo.pp = ppn, oo.stage = mesh.pp_rank;
    int bad = gpt_model_open_ex(&lm, o.model, be, o.sets, o.n_sets, &oo, &err) < 0, first = 0;
    if (world ? gpt_comm_any_failed(world, bad, &first) : bad) {
        if (!world || world->rank == first) fprintf(stderr, PROG ": %s\n", bad ? err.msg : "another rank failed");
        if (!bad) gpt_model_close(&lm);
        be->destroy(be);
        if (world) gpt_mesh_free(&mesh), gpt_comm_close(world);
        EXIT(1);
    }
    if (world) gpt_model_pp_set_comm(lm.model, mesh.pp_comm);
    be->gemm_prec = o.precision;
    if (!o.cache_set && o.precision != GPT_GEMM_FP32) o.g.kv_dtype = GPT_KV_BF16; /* as a half-precision model's cache */
    gpt_model_freeze(lm.model, 1);
    const gpt_model_config *mc = gpt_model_full_config(lm.model);
    gpt_tokenizer *tk = gpt_tokenizer_open(mc->tokenizer, NULL, &err);
    if (!tk) {
        fprintf(stderr, PROG ": model %s: tokenizer: %s\n", o.model, err.msg);
        gpt_model_close(&lm);
        be->destroy(be);
        EXIT(1);
    }
    gpt_harmony_ids hid;
    gpt_harmony_opts ho = {o.reasoning, o.system, getenv("GPT_HARMONY_DATE")};
    if (o.chat && gpt_harmony_lookup(tk, &hid, &err) < 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        status = 1;
        goto done;
    }
    /* stop ids: given, else <|endoftext|> when the model can produce it; chat adds return/call */
    if (!o.n_eos && !o.no_eos) {
        int64_t eot = gpt_tokenizer_eot(tk);
        if (eot >= 0 && eot < mc->vocab_size) o.eos[o.n_eos++] = (uint32_t)eot;
    }
    if (o.chat) o.eos[o.n_eos++] = hid.ret, o.eos[o.n_eos++] = hid.call;
    o.g.eos = o.eos, o.g.n_eos = o.n_eos;
    o.g.stop = o.stop;
    if (o.g.sampling.temperature > 0 && !o.seed_given && o.g.num_beams == 1) {
        o.g.sampling.seed = gpt_random_seed();
        if (world) world->broadcast(world, &o.g.sampling.seed, sizeof o.g.sampling.seed, 0, &err);
        fprintf(stderr, PROG ": seed %llu\n", (unsigned long long)o.g.sampling.seed);
    }
    gpt_rng rng;
    gpt_rng_seed(&rng, o.g.sampling.seed);

    /* inputs */
    FILE *in = NULL;
    gpt_ids tokin = {0};
    size_t tokpos = 0;
    gpt_tokw *tw = NULL;
    int64_t eot = gpt_tokenizer_eot(tk);
    if (o.tokens) {
        uint32_t vs = 0;
        if (gpt_tokens_read_all(o.file ? o.file : "-", &tokin, &vs, &err) < 0) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            status = 1;
            goto done;
        }
        if (!(tw = gpt_tokw_open("-", gpt_tokenizer_n_vocab(tk), 0, &err))) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            status = 1;
            goto done;
        }
    } else if (!o.n_prompts) {
        in = o.file && strcmp(o.file, "-") ? fopen(o.file, "r") : stdin;
        if (!in) {
            fprintf(stderr, PROG ": cannot open %s: %s\n", o.file, strerror(errno));
            status = 1;
            goto done;
        }
    }
    int total_one = o.n_prompts == 1; /* streaming needs to know there is only one prompt */
    prompt_in *batch = gpt_xcalloc((size_t)o.batch, sizeof *batch);
    gpt_gen_req *reqs = gpt_xcalloc((size_t)o.batch, sizeof *reqs);
    gpt_gen_stats st = {0};
    long lineno = 0, n_done = 0;
    int next_p = 0, eof = 0;
    prompt_in pending = {0};
    int have_pending = 0;
    while (!eof) {
        int nb = 0;
        while (nb < o.batch) {
            prompt_in p = {0};
            if (have_pending) {
                p = pending, have_pending = 0;
            } else if (o.tokens) {
                if (tokpos >= tokin.n) break;
                size_t e = tokpos;
                while (e < tokin.n && !(eot >= 0 && tokin.v[e] == (uint32_t)eot)) e++;
                gpt_ids_append(&p.ids, tokin.v + tokpos, e - tokpos);
                tokpos = e + 1;
            } else if (o.n_prompts) {
                if (next_p >= o.n_prompts) break;
                p.text = gpt_xstrdup(o.prompts[next_p]), p.len = strlen(p.text), next_p++;
            } else {
                if (!next_line_prompt(in, &o, &p, ++lineno)) break;
            }
            batch[nb++] = p;
        }
        if (nb == 0) break;
        /* a single prompt streams: peek whether stdin has another one */
        int single = 0;
        if (n_done == 0 && nb == 1) {
            if (o.n_prompts) single = total_one;
            else if (o.tokens) single = tokpos >= tokin.n;
            else if (in) {
                prompt_in q;
                if (next_line_prompt(in, &o, &q, ++lineno)) pending = q, have_pending = 1;
                else single = 1;
            }
        }
        for (int i = 0; i < nb; i++) {
            memset(&reqs[i], 0, sizeof reqs[i]);
            prompt_in *p = &batch[i];
            if (!o.tokens && !p->error) {
                int rc = o.chat ? gpt_harmony_encode(tk, &ho, p->text, p->len, &p->ids, &err)
                                : gpt_encode(tk, p->text, p->len, NULL, &p->ids, &err);
                if (rc < 0) p->error = gpt_xstrdup(err.msg);
            }
            reqs[i].prompt = p->ids.v, reqs[i].n_prompt = p->ids.n;
        }
        stream_ctx sc;
        memset(&sc, 0, sizeof sc);
        sc.o = &o, sc.tk = tk;
        if (o.chat) gpt_harmony_parser_init(&sc.hp, &hid);
        gpt_gen_opts g = o.g;
        int stream = single && !o.no_stream && !o.jsonl && !o.tokens;
        if (stream) g.stream = on_token, g.stream_user = &sc;
        /* requests with an input error do not run */
        gpt_gen_req *run = gpt_xcalloc((size_t)nb, sizeof *run);
        int *map = gpt_xcalloc((size_t)nb, sizeof *map), nr = 0;
        for (int i = 0; i < nb; i++)
            if (!batch[i].error) run[nr] = reqs[i], map[nr++] = i;
        if (gpt_generate(lm.model, tk, &g, run, nr, &rng, &st, &err) < 0) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            status = 1;
            for (int i = 0; i < nr; i++) gpt_gen_req_free(&run[i]);
            for (int i = 0; i < nb; i++) prompt_free(&batch[i]);
            free(run), free(map);
            break;
        }
        for (int i = 0; i < nr; i++) reqs[map[i]] = run[i];
        free(run), free(map);
        for (int i = 0; i < nb; i++) {
            gpt_gen_req *r = &reqs[i];
            prompt_in *p = &batch[i];
            if (p->error) r->finish = GPT_FINISH_ERROR, r->error = gpt_xstrdup(p->error);
            if (r->finish == GPT_FINISH_ERROR) {
                fprintf(stderr, PROG ": prompt %ld: %s\n", n_done + i + 1, r->error);
                status = 1;
            }
            size_t len = 0;
            char *text = r->finish == GPT_FINISH_ERROR ? gpt_xstrdup("") : shown_text(&o, tk, o.chat ? &hid : NULL, r, &len);
            if (o.tokens) {
                size_t n = r->out.n;
                while (n > 0 && gpt_gen_is_eos(&o.g, r->out.v[n - 1])) n--;
                if (gpt_tokw_write(tw, r->out.v, n, &err) < 0 ||
                    (eot >= 0 && gpt_tokw_write(tw, (const uint32_t[]){(uint32_t)eot}, 1, &err) < 0)) {
                    fprintf(stderr, PROG ": %s\n", err.msg);
                    status = 1;
                }
            } else if (o.jsonl) {
                write_json(&o, p, r, text, len);
            } else if (stream && sc.streamed) {
                fputc('\n', stdout);
            } else {
                fwrite(text, 1, len, stdout);
                fputc('\n', stdout);
            }
            fflush(stdout);
            free(text);
            gpt_gen_req_free(r);
            prompt_free(p);
        }
        n_done += nb;
        if (ferror(stdout)) {
            fprintf(stderr, PROG ": writing standard output: %s\n", strerror(errno));
            status = 1;
            break;
        }
    }
    if (have_pending) prompt_free(&pending);
    if (in && ferror(in)) {
        fprintf(stderr, PROG ": reading %s: %s\n", o.file ? o.file : "standard input", strerror(errno));
        status = 1;
    }
    if (in && in != stdin) fclose(in);
    if (tw) {
        if (status == 0 && gpt_tokw_close(tw, &err) < 0) fprintf(stderr, PROG ": %s\n", err.msg), status = 1;
        else if (status != 0) gpt_tokw_abort(tw);
    }
    if (!o.quiet)
        fprintf(stderr, PROG ": %ld prompts; prefill %lld tokens in %.3f s (%.1f tok/s); decode %lld tokens in %.3f s (%.1f tok/s); KV cache %s\n",
                n_done, st.prefill_tokens, st.prefill_s, st.prefill_s > 0 ? st.prefill_tokens / st.prefill_s : 0.0,
                st.decode_tokens, st.decode_s, st.decode_s > 0 ? st.decode_tokens / st.decode_s : 0.0,
                o.g.kv_dtype == GPT_KV_BF16 ? "bf16" : o.g.kv_dtype == GPT_KV_INT8 ? "int8" : "f32");
    free(batch), free(reqs);
    gpt_ids_free(&tokin);
done:
    gpt_tokenizer_free(tk);
    gpt_model_close(&lm);
    be->destroy(be);
    free(o.prompts), free(o.eos), free(o.stop), free(o.sets);
    if (fflush(stdout) != 0) status = 1;
    if (world) gpt_mesh_free(&mesh), gpt_comm_close(world);
    return status;
}
