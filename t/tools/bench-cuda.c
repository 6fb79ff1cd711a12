/* bench-cuda: forward+backward throughput of a config on the CUDA backend (fp32 storage and
 * compute; GPT_CUDA_TF32=1 lets the GEMMs use TF32). Prints a short table and one JSON line.
 * Used by scripts/gpu-check. Not a test.
 *
 *   bench-cuda CONFIG B T STEPS [--set KEY=VALUE]...
 *
 * MFU is quoted against two H100 SXM peaks: 989 TFLOP/s (bf16 dense tensor cores, the figure a
 * bf16 training run is judged by) and 67 TFLOP/s (fp32 without tensor cores, what this fp32
 * backend can reach at best); with TF32, against 495 TFLOP/s (TF32 dense). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend_cuda.h"
#include "config.h"
#include "model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int main(int argc, char **argv)
{
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
    int *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    for (int i = 0; i < N; i++) tok[i] = (int)((i * 2654435761u) % (unsigned)c->vocab_size);
    for (int i = 0; i < N; i++) tgt[i] = tok[(i + 1) % N];
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
    /* FLOPs per token, fwd + bwd, as bench-model counts them: 6 per active non-embedding
     * parameter (the tied head still multiplies) plus attention's two T x T matmuls per layer. */
    uint64_t total, active;
    gpt_param_count(c, &total, &active);
    double nonembed = (double)active - (double)c->vocab_size * c->d_model -
                      (c->positions == GPT_POS_LEARNED ? (double)c->max_seq_len * c->d_model : 0);
    if (c->tie_embeddings) nonembed += (double)c->vocab_size * c->d_model;
    double attn = 0;
    for (int l = 0; l < c->n_layers; l++) {
        int w = gpt_model_layer_window(c, l);
        double teff = w > 0 && w < T ? w : (T + 1) / 2.0;
        attn += 6.0 * 2 * c->n_heads * c->d_head * teff;
    }
    double flops_tok = 6.0 * nonembed + attn, secs = sum / steps, tflops = flops_tok * N / secs / 1e12;
    const char *tf = getenv("GPT_CUDA_TF32");
    int tf32 = tf && *tf && strcmp(tf, "0") != 0;
    double peak = tf32 ? 495 : 67; /* H100 SXM dense: TF32 tensor cores, or fp32 without them */
    printf("| config | B | T | gemm math | step ms (best) | fwd ms | tokens/s | TFLOP/s | MFU vs 989 bf16 | MFU vs math peak |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    printf("| %s | %d | %d | %s | %.1f (%.1f) | %.1f | %.0f | %.1f | %.2f%% | %.1f%% of %.0f |\n", argv[1], B, T,
           tf32 ? "tf32" : "fp32", 1e3 * secs, 1e3 * best, 1e3 * fwd_sum / steps, N / secs, tflops,
           100 * tflops / 989, 100 * tflops / peak, peak);
    printf("{\"config\": \"%s\", \"B\": %d, \"T\": %d, \"gemm_math\": \"%s\", \"step_s\": %.4f, \"best_step_s\": %.4f, "
           "\"tokens_per_s\": %.1f, \"flops_per_token\": %.4g, \"tflops\": %.2f, \"mfu_bf16_989\": %.4f, \"loss\": %.4f}\n",
           argv[1], B, T, tf32 ? "tf32" : "fp32", secs, best, N / secs, flops_tok, tflops, tflops / 989, loss.total);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
    free(tok), free(tgt);
    return 0;
}
