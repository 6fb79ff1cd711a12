/* bench-cuda: forward+backward throughput of a config on the CUDA backend (fp32 storage; the
 * GEMM math follows GPT_CUDA_GEMM=fp32|tf32|bf16, the attention kernels GPT_CUDA_ATTN), or
 * batch-1 decoding through the KV cache. Prints a short table and one JSON line. Used by
 * scripts/gpu-check. Not a test.
 *
 *   bench-cuda CONFIG B T STEPS [--set KEY=VALUE]...
 *   bench-cuda --decode CONFIG TOKENS [--set KEY=VALUE]...
 *
 * MFU is quoted against two H100 SXM peaks: 989 TFLOP/s (bf16 dense tensor cores, the figure a
 * bf16 training run is judged by) and the peak of the GEMM math in use: 67 TFLOP/s for fp32
 * without tensor cores, 495 for TF32, 989 for bf16.
 * Decoding: one sequence, random weights, TOKENS steps of one token each (gpt_model_extend, the
 * logits copied back every step as generation does), from an empty cache; tokens/s overall and
 * ms per token at the start and the end (attention over the cache grows with the context). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_cuda.h"
#include "bench_common.h"
#include "config.h"
#include "model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static const char *gemm_math(void)
{
    const char *g = getenv("GPT_CUDA_GEMM"), *tf = getenv("GPT_CUDA_TF32");
    if (g && *g) return g;
    return tf && *tf && strcmp(tf, "0") != 0 ? "tf32" : "fp32";
}

static const char *attn_kind(void)
{
    const char *a = getenv("GPT_CUDA_ATTN");
    return a && *a ? a : "flash";
}

static int decode(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench-cuda --decode CONFIG TOKENS [--set KEY=VALUE]...\n");
        return 2;
    }
    gpt_err err;
    gpt_config cfg;
    if (gpt_config_load(argv[2], &cfg, &err) < 0) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    for (int i = 4; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--set") == 0 && gpt_config_set(&cfg, argv[i + 1], &err) < 0) {
            fprintf(stderr, "bench-cuda: %s\n", err.msg);
            return 1;
        }
    int n = atoi(argv[3]);
    if (n < 2 || n > cfg.model.max_seq_len) {
        fprintf(stderr, "bench-cuda: TOKENS must be 2..%d (the context)\n", cfg.model.max_seq_len);
        return 2;
    }
    gpt_backend *be = gpt_backend_cuda(0, &err);
    if (!be) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    gpt_model *m = gpt_model_create(&cfg.model, be, &err);
    if (!m) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    gpt_model_init_params(m, 1);
    gpt_kv_cache *kc = gpt_kv_cache_create(m, 1, n, &err);
    if (!kc) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    int V = cfg.model.vocab_size, seq = 0, tok = 1;
    float *logits = malloc((size_t)V * sizeof *logits);
    double first = 0, last = 0, t0 = 0;
    int tail = n / 8 > 1 ? n / 8 : 1; /* the first and the last eighth */
    for (int pass = 0; pass < 2; pass++) { /* pass 0 warms up (allocation, cuBLAS heuristics) */
        gpt_kv_cache_clear(kc, -1);
        t0 = now_s();
        double seg = t0;
        for (int i = 0; i < n; i++) {
            if (gpt_model_extend(m, kc, &tok, &seq, 1, logits, &err) < 0) {
                fprintf(stderr, "bench-cuda: %s\n", err.msg);
                return 1;
            }
            int best = 0; /* greedy, so the next token depends on this step's result */
            for (int v = 1; v < V; v++) best = logits[v] > logits[best] ? v : best;
            tok = best;
            if (i + 1 == tail) first = (now_s() - seg) / tail;
            if (i + 1 == n - tail) seg = now_s();
        }
        last = (now_s() - seg) / tail;
        if (pass == 0 && n > 64) continue;
        break;
    }
    double secs = now_s() - t0;
    printf("| config | decode tokens (batch 1) | gemm math | tokens/s | ms/token first %d | ms/token last %d |\n", tail,
           tail);
    printf("| --- | --- | --- | --- | --- | --- |\n");
    printf("| %s | %d | %s | %.1f | %.2f | %.2f |\n", argv[2], n, gemm_math(), n / secs, 1e3 * first, 1e3 * last);
    printf("{\"config\": \"%s\", \"decode_tokens\": %d, \"gemm_math\": \"%s\", \"tokens_per_s\": %.1f, "
           "\"ms_first\": %.3f, \"ms_last\": %.3f}\n",
           argv[2], n, gemm_math(), n / secs, 1e3 * first, 1e3 * last);
    free(logits);
    gpt_kv_cache_free(kc);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--decode") == 0) return decode(argc, argv);
    if (argc < 5) {
        fprintf(stderr, "usage: bench-cuda CONFIG B T STEPS [--set KEY=VALUE]...\n");
        return 2;
    }
    gpt_err err;
    gpt_backend *be = gpt_backend_cuda(0, &err);
    if (!be) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    gpt_config cfg;
    if (gpt_config_load(argv[1], &cfg, &err) < 0) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    for (int i = 5; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--set") == 0 && gpt_config_set(&cfg, argv[i + 1], &err) < 0) {
            fprintf(stderr, "bench-cuda: %s\n", err.msg);
            return 1;
        }
    int B = atoi(argv[2]), T = atoi(argv[3]), steps = atoi(argv[4]);
    if (B <= 0 || T <= 0 || steps <= 0) {
        fprintf(stderr, "bench-cuda: B, T and STEPS must be positive\n");
        return 2;
    }
    const gpt_model_config *c = &cfg.model;
    gpt_model *m = gpt_model_create(c, be, &err);
    if (!m) {
        fprintf(stderr, "bench-cuda: %s\n", err.msg);
        return 1;
    }
    gpt_model_init_params(m, 1);
    int N = B * T;
    int *tok, *tgt;
    bench_tokens(c, N, &tok, &tgt);
    gpt_forward_opts o = {0};
    gpt_loss loss;
    double best = 1e30, sum = 0, fwd_sum = 0;
    float probe;
    for (int s = 0; s < steps + 1; s++) {
        double t0 = now_s();
        gpt_model_zero_grad(m);
        if (gpt_model_forward(m, tok, tgt, B, T, &o, &loss, &err) < 0) { /* waits: the loss comes back */
            fprintf(stderr, "bench-cuda: %s\n", err.msg);
            return 1;
        }
        double t1 = now_s();
        if (gpt_model_backward(m, &err) < 0) {
            fprintf(stderr, "bench-cuda: %s\n", err.msg);
            return 1;
        }
        be->to_host(be, &probe, gpt_model_grad_data(m), sizeof probe); /* waits for the backward */
        double dt = now_s() - t0;
        if (s == 0) continue; /* warm-up: allocation, cuBLAS heuristics */
        sum += dt;
        fwd_sum += t1 - t0;
        best = dt < best ? dt : best;
    }
    uint64_t total, active;
    gpt_param_count(c, &total, &active);
    double flops_tok = gpt_flops_per_token(c, T), secs = sum / steps, tflops = flops_tok * N / secs / 1e12;
    const char *gm = gemm_math();
    double peak = strcmp(gm, "tf32") == 0 ? 495 : strcmp(gm, "bf16") == 0 ? 989 : 67; /* H100 SXM dense */
    printf("| config | B | T | gemm math | attention | step ms (best) | fwd ms | tokens/s | TFLOP/s | MFU vs 989 bf16 | "
           "MFU vs math peak |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    printf("| %s | %d | %d | %s | %s | %.1f (%.1f) | %.1f | %.0f | %.1f | %.2f%% | %.1f%% of %.0f |\n", argv[1], B, T,
           gm, attn_kind(), 1e3 * secs, 1e3 * best, 1e3 * fwd_sum / steps, N / secs, tflops, 100 * tflops / 989,
           100 * tflops / peak, peak);
    printf("{\"config\": \"%s\", \"B\": %d, \"T\": %d, \"gemm_math\": \"%s\", \"attention\": \"%s\", \"step_s\": %.4f, "
           "\"best_step_s\": %.4f, \"tokens_per_s\": %.1f, \"flops_per_token\": %.4g, \"tflops\": %.2f, "
           "\"mfu_bf16_989\": %.4f, \"loss\": %.4f}\n",
           argv[1], B, T, gm, attn_kind(), secs, best, N / secs, flops_tok, tflops, tflops / 989, loss.total);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
    free(tok), free(tgt);
    return 0;
}
