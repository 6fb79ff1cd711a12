/* bench-generate: inference throughput for scripts/bench-generate. Not a test.
 *
 *   bench-generate run MODEL B PROMPT NEW REPS   MODEL: a config yaml (random weights) or a checkpoint;
 *                                                prefill B prompts of PROMPT tokens (as gpt_generate:
 *                                                logits for the last one only), then NEW greedy
 *                                                decode steps of B rows; best of REPS; one JSON line
 *   bench-generate bandwidth MIB REPS            memory read bandwidth (sum of a MIB buffer, all threads)
 *   bench-generate random-ckpt CONFIG DIR        a random-weight checkpoint with MXFP4 experts (bf16
 *                                                elsewhere), streamed: one tensor in memory at a time */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_check.h"
#include "checkpoint.h"
#include "config.h"
#include "half.h"
#include "model.h"
#include "model_load.h"

static int die(const char *what, const gpt_err *err)
{
    fprintf(stderr, "bench-generate: %s: %s\n", what, err ? err->msg : "");
    return 1;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return rng_state;
}

/* Sum of a[0, n) with independent partial sums, so that the loads, not the adder's latency, set
 * the pace (a single running sum measured 10 GB/s here against ~28 GB/s of AVX-512 loads). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static float sum_avx512(const float *a, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_loadu_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_loadu_ps(a + i + 48));
    }
    float t = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    for (; i < n; i++) t += a[i];
    return t;
}
#endif
static float sum_plain(const float *a, size_t n)
{
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j];
    float t = 0;
    for (int j = 0; j < 8; j++) t += acc[j];
    for (; i < n; i++) t += a[i];
    return t;
}

static int bandwidth(size_t mib, int reps)
{
    size_t n = mib * 1024 * 1024 / sizeof(float);
    float *a = malloc(n * sizeof *a);
    if (!a) return die("bandwidth", NULL);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    int avx512 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    avx512 = __builtin_cpu_supports("avx512f");
#endif
    double best = 1e30, sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime(), s = 0;
#pragma omp parallel reduction(+ : s)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            size_t lo = n / (size_t)nt * (size_t)t, hi = t == nt - 1 ? n : lo + n / (size_t)nt;
#if defined(__x86_64__) && defined(__GNUC__)
            s += avx512 ? sum_avx512(a + lo, hi - lo) : sum_plain(a + lo, hi - lo);
#else
            s += sum_plain(a + lo, hi - lo);
#endif
        }
        double dt = omp_get_wtime() - t0;
        sink += s;
        best = dt < best ? dt : best;
    }
    (void)avx512;
    printf("{\"read_gb_s\": %.2f, \"mib\": %zu, \"threads\": %d, \"check\": %.0f}\n", n * sizeof *a / best / 1e9, mib,
           omp_get_max_threads(), sink > 0 ? 1.0 : 0.0);
    free(a);
    return 0;
}

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static int random_ckpt(const char *cfgpath, const char *dir)
{
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load(cfgpath, &cfg, &err) < 0) return die(cfgpath, &err);
    gpt_param_table tab;
    if (gpt_params_build(&cfg.model, &tab, &err) < 0) return die("params", &err);
    gpt_ckpt_opts o = {.dtype = GPT_ST_BF16};
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, &cfg.model, 0, &o, &err);
    if (!w) return die(dir, &err);
    /* declaration k: tensor t (kind 0 float, 1 blocks, 2 scales) */
    int *tix = malloc((size_t)tab.n * 3 * sizeof *tix), *kind = malloc((size_t)tab.n * 3 * sizeof *kind), n = 0;
    for (int i = 0; i < tab.n; i++) {
        const gpt_tensor *t = &tab.t[i];
        size_t len = strlen(t->name);
        int ex = t->expert_dim && (strstr(t->name, "gate_up_proj") || strstr(t->name, "down_proj")) &&
                 strcmp(t->name + len - 5, "_bias") != 0;
        uint64_t sh[4];
        char name[GPT_TENSOR_NAME_MAX + 16];
        int rc;
        if (!ex) {
            for (int d = 0; d < t->ndim; d++) sh[d] = (uint64_t)t->shape[d];
            rc = gpt_ckpt_writer_add(w, t->name, GPT_ST_BF16, t->ndim, sh, &err);
            tix[n] = i, kind[n++] = 0;
        } else {
            sh[0] = (uint64_t)t->shape[0], sh[1] = (uint64_t)t->shape[2], sh[2] = (uint64_t)t->shape[1] / 32, sh[3] = 16;
            snprintf(name, sizeof name, "%s_blocks", t->name);
            rc = gpt_ckpt_writer_add(w, name, GPT_ST_U8, 4, sh, &err);
            tix[n] = i, kind[n++] = 1;
            snprintf(name, sizeof name, "%s_scales", t->name);
            if (rc == 0) rc = gpt_ckpt_writer_add(w, name, GPT_ST_U8, 3, sh, &err);
            tix[n] = i, kind[n++] = 2;
        }
        if (rc < 0) return die("declare", &err);
    }
    int k;
    while ((k = gpt_ckpt_writer_next(w)) >= 0) {
        const gpt_tensor *t = &tab.t[tix[k]];
        size_t bytes;
        void *buf;
        if (kind[k] == 0) {
            uint16_t *b = malloc(t->numel * 2);
            int norm = strstr(t->name, "norm") != NULL;
            for (size_t i = 0; i < t->numel; i++)
                b[i] = bf16(norm ? 1.0f : t->role == GPT_ROLE_BIAS ? 0.0f : ((float)(rnd() >> 40) / 16777216.0f - 0.5f) * 0.04f);
            buf = b, bytes = t->numel * 2;
        } else if (kind[k] == 1) {
            bytes = t->numel / 2;
            uint64_t *b = malloc(bytes);
            for (size_t i = 0; i < bytes / 8; i++) b[i] = rnd();
            buf = b;
        } else {
            bytes = t->numel / 32;
            uint8_t *b = malloc(bytes);
            for (size_t i = 0; i < bytes; i++) b[i] = (uint8_t)(118 + rnd() % 4); /* weights ~ 0.01 .. 0.1 */
            buf = b;
        }
        int rc = gpt_ckpt_writer_put(w, buf, bytes, &err);
        free(buf);
        if (rc < 0) return die("write", &err);
    }
    if (gpt_ckpt_writer_commit(w, &err) < 0) return die("commit", &err);
    free(tix), free(kind);
    gpt_params_free(&tab);
    gpt_config_free(&cfg);
    return 0;
}

static int run(const char *model, int B, int P, int G, int reps, const char *prec)
{
    gpt_err err;
    if (B < 1 || P < 1 || G < 0 || reps < 1) {
        fprintf(stderr, "bench-generate: run wants B >= 1, PROMPT >= 1, NEW >= 0, REPS >= 1\n");
        return 2;
    }
    gpt_backend *be = gpt_backend_cpu();
    be->gemm_prec = !strcmp(prec, "bf16") ? GPT_GEMM_BF16 : !strcmp(prec, "fp16") ? GPT_GEMM_FP16 : GPT_GEMM_FP32;
    gpt_loaded_model lm = {0};
    gpt_model *m;
    size_t len = strlen(model);
    double t_load = omp_get_wtime();
    if (len > 5 && strcmp(model + len - 5, ".yaml") == 0) {
        if (gpt_config_load(model, &lm.cfg, &err) < 0) return die(model, &err);
        if (!(m = gpt_model_create(&lm.cfg.model, be, &err))) return die("create", &err);
        gpt_model_init_params(m, 1);
        lm.model = m;
    } else {
        if (gpt_model_open(&lm, model, be, NULL, 0, &err) < 0) return die(model, &err);
        m = lm.model;
    }
    t_load = omp_get_wtime() - t_load;
    gpt_model_freeze(m, 1); /* as gpt-generate: bf16 weight packs are made once, in the first prefill */
    const gpt_model_config *c = gpt_model_config_of(m);
    int V = c->vocab_size;
    int *tok = malloc((size_t)B * (P > 1 ? P : 1) * sizeof *tok), *seq = malloc((size_t)B * GPT_KV_CHUNK * sizeof *seq);
    float *lg = malloc((size_t)B * GPT_KV_CHUNK * V * sizeof *lg);
    for (int i = 0; i < B * P; i++) tok[i] = (int)((i * 2654435761u) % (unsigned)V);
    double best_p = 1e30, best_d = 1e30;
    /* the cache in the precision of the products: bf16 runs keep a bf16 cache, as a bf16 model in
     * transformers does (GPT_BENCH_CACHE=f32|bf16|int8 overrides) */
    const char *cd = getenv("GPT_BENCH_CACHE");
    int kvd = be->gemm_prec == GPT_GEMM_FP32 ? GPT_KV_F32 : GPT_KV_BF16;
    if (cd && *cd) kvd = !strcmp(cd, "bf16") ? GPT_KV_BF16 : !strcmp(cd, "int8") ? GPT_KV_INT8 : GPT_KV_F32;
    gpt_kv_cache *kc = gpt_kv_cache_create_ex(m, B, P + G, &(gpt_kv_opts){.dtype = kvd}, &err);
    if (!kc) return die("cache", &err);
    for (int r = 0; r < reps; r++) {
        gpt_kv_cache_clear(kc, -1);
        /* prefill as gpt_generate does it: every sequence's chunk in one call, all but the last
         * chunk into the cache only, then the last chunks with the logits of each one's last row
         * (the first new token's distribution): the prompt's P tokens count */
        double t0 = omp_get_wtime();
        int head = P - (P < GPT_KV_CHUNK ? P : GPT_KV_CHUNK);
        for (int p0 = 0;;) {
            int fin = p0 >= head, np = fin ? P - p0 : (head - p0 < GPT_KV_CHUNK ? head - p0 : GPT_KV_CHUNK);
            int *ct = malloc((size_t)B * np * sizeof *ct), *rows = malloc((size_t)B * sizeof *rows);
            for (int b = 0; b < B; b++) {
                for (int j = 0; j < np; j++) ct[b * np + j] = tok[b * P + p0 + j], seq[b * np + j] = b;
                rows[b] = b * np + np - 1;
            }
            if (gpt_model_extend_rows(m, kc, ct, seq, B * np, rows, fin ? B : 0, fin ? lg : NULL, &err) < 0)
                return die("prefill", &err);
            free(ct), free(rows);
            if (fin) break;
            p0 += np;
        }
        double tp = omp_get_wtime() - t0;
        /* decode: greedy, one row per sequence per step */
        int *next = malloc((size_t)B * sizeof *next);
        for (int b = 0; b < B; b++) next[b] = b % V, seq[b] = b;
        t0 = omp_get_wtime();
        for (int g = 0; g < G; g++) {
            if (gpt_model_extend(m, kc, next, seq, B, lg, &err) < 0) return die("decode", &err);
            for (int b = 0; b < B; b++) {
                const float *row = lg + (size_t)b * V;
                int a = 0;
                for (int v = 1; v < V; v++) a = row[v] > row[a] ? v : a;
                next[b] = a;
            }
        }
        double td = omp_get_wtime() - t0;
        free(next);
        best_p = tp < best_p ? tp : best_p;
        best_d = td < best_d ? td : best_d;
    }
    /* bytes one batch-1 decode step reads: every parameter but the input embedding (one row), 4
     * bytes each in fp32, 2 with half-precision products (the weights' bf16 packs on AMX; the
     * emulation without AMX reads more), plus the active experts' MXFP4 blocks and scales */
    const gpt_param_table *tab = gpt_model_params(m);
    double wb = be->gemm_prec == GPT_GEMM_FP32 ? 4 : 2, bytes = (double)tab->total * wb;
    const gpt_tensor *wte = gpt_params_find(tab, c->tie_embeddings ? "" : "model.embed_tokens.weight");
    if (!wte) wte = gpt_params_find(tab, c->tie_embeddings ? "" : "transformer.wte.weight");
    if (wte) bytes -= (double)(wte->numel - (size_t)c->d_model) * wb;
    double expert_bytes = 0;
    for (int i = 0; i < gpt_model_mxfp4_count(m); i++) expert_bytes += gpt_model_mxfp4_tensor(m, i)->numel * 17.0 / 32;
    if (c->mlp == GPT_MLP_MOE) expert_bytes *= (double)c->experts_per_token / c->n_experts;
    bytes += expert_bytes;
    printf("{\"model\": \"%s\", \"mxfp4\": %d, \"batch\": %d, \"prompt\": %d, \"new\": %d, \"threads\": %d, "
           "\"load_s\": %.1f, \"prefill_tok_s\": %.1f, \"decode_tok_s\": %.2f, \"decode_step_ms\": %.1f, "
           "\"bytes_per_step\": %.0f, \"precision\": \"%s\"}\n",
           model, gpt_model_is_mxfp4(m), B, P, G, omp_get_max_threads(), t_load, B * P / best_p, B * G / best_d,
           best_d / G * 1e3, bytes, prec);
    gpt_kv_cache_free(kc);
    gpt_model_close(&lm);
    be->destroy(be);
    free(tok), free(seq), free(lg);
    return 0;
}

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "run") == 0)
        return run(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), argc == 8 ? argv[7] : "fp32");
    if (argc == 4 && strcmp(argv[1], "bandwidth") == 0) return bandwidth((size_t)atol(argv[2]), atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "random-ckpt") == 0) return random_ckpt(argv[2], argv[3]);
    fprintf(stderr, "usage: bench-generate run MODEL B PROMPT NEW REPS [fp32|bf16|fp16] | bandwidth MIB REPS | random-ckpt CONFIG DIR\n");
    return 2;
}
