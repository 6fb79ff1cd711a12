/* bench_common.h: what the benchmark tools share: CONFIG B T STEPS [--set KEY=VALUE]...
 * [--precision fp32|bf16|fp16] [--dump]
 * arguments, synthetic tokens, and the sgemm peak measured on the model's own GEMM shape. */
#ifndef GPT_BENCH_COMMON_H
#define GPT_BENCH_COMMON_H

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "config.h"
#include "half.h"

/* Returns -1 to go on, else the exit status (usage error, load error, or --dump done). */
static inline int bench_args(int argc, char **argv, const char *prog, gpt_config *cfg, int *B, int *T, int *steps)
{
    gpt_err err;
    if (argc < 5) {
        fprintf(stderr, "usage: %s CONFIG B T STEPS [--set KEY=VALUE]... [--precision fp32|bf16|fp16] [--dump]\n",
                prog);
        return 2;
    }
    if (gpt_config_load(argv[1], cfg, &err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    for (int i = 5; i + 1 < argc; i++)
        if (strcmp(argv[i], "--set") == 0 && gpt_config_set(cfg, argv[++i], &err) < 0) {
            fprintf(stderr, "%s: %s\n", prog, err.msg);
            return 1;
        }
    *B = atoi(argv[2]), *T = atoi(argv[3]), *steps = atoi(argv[4]);
    for (int i = 5; i < argc; i++)
        if (strcmp(argv[i], "--dump") == 0) return gpt_config_dump(cfg, stdout, &err) < 0;
    return -1;
}

/* The GEMM operand precision of --precision (half.h GPT_GEMM_*; default fp32), as gpt-train's. */
static inline int bench_precision(int argc, char **argv)
{
    for (int i = 5; i + 1 < argc; i++)
        if (strcmp(argv[i], "--precision") == 0)
            return strcmp(argv[i + 1], "bf16") == 0 ? GPT_GEMM_BF16 : strcmp(argv[i + 1], "fp16") == 0 ? GPT_GEMM_FP16 : GPT_GEMM_FP32;
    return GPT_GEMM_FP32;
}

/* N pseudo-random tokens and their next-token targets. */
static inline void bench_tokens(const gpt_model_config *c, int N, int **tok, int **tgt)
{
    *tok = malloc((size_t)N * sizeof **tok);
    *tgt = malloc((size_t)N * sizeof **tgt);
    for (int i = 0; i < N; i++) (*tok)[i] = (int)((i * 2654435761u) % (unsigned)c->vocab_size);
    for (int i = 0; i < N; i++) (*tgt)[i] = (*tok)[(i + 1) % N];
}

/* FLOP/s of the best of 5 (M x K) @ (K x N) products on the backend. */
static inline double bench_sgemm_peak(gpt_backend *be, int M, int K, int N)
{
    float *A = be->alloc(be, (size_t)M * K * 4), *Bm = be->alloc(be, (size_t)K * N * 4),
          *C = be->alloc(be, (size_t)M * N * 4);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = omp_get_wtime();
        be->gemm(be, 0, 0, M, N, K, 1.0f, A, K, Bm, N, 0.0f, C, N);
        double dt = omp_get_wtime() - t0;
        best = dt < best ? dt : best;
    }
    be->free(be, A), be->free(be, Bm), be->free(be, C);
    return 2.0 * M * K * N / best;
}

#endif
