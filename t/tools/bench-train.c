/* bench-train: the full training step of a config on the CPU backend (zero grad, forward,
 * backward, gradient-norm clipping, AdamW) as gpt_trainer_step does it on one rank, timed. Used by
 * scripts/bench-train-cpu next to PyTorch's same step; prints one JSON line. Not a test. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "blas_check.h"
#include "config.h"
#include "model.h"
#include "optim.h"
#include <math.h>

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    gpt_err err;
    gpt_config cfg;
    int B, T, steps, rc = bench_args(argc, argv, "bench-train", &cfg, &B, &T, &steps);
    if (rc >= 0) return rc;
    const gpt_model_config *c = &cfg.model;
    gpt_backend *be = gpt_backend_cpu();
    be->gemm_prec = bench_precision(argc, argv);
    gpt_model *m = gpt_model_create(c, be, &err);
    if (!m) {
        fprintf(stderr, "bench-train: %s\n", err.msg);
        return 1;
    }
    gpt_model_init_params(m, 1);
    int N = B * T;
    int *tok, *tgt;
    bench_tokens(c, N, &tok, &tgt);
    gpt_forward_opts o = {0};
    const gpt_param_table *tab = gpt_model_params(m);
    gpt_adamw opt;
    gpt_adamw_hparams hp = {0.9, 0.95, 1e-8, 0.1};
    if (gpt_adamw_init(&opt, tab, 0, tab->total, &hp, &err) < 0) {
        fprintf(stderr, "bench-train: %s\n", err.msg);
        return 1;
    }
    /* The CPU backend's buffers are host memory: AdamW updates them in place (the trainer keeps
     * host copies for the collectives; with one rank those copies are two memcpys per step). */
    float *P = gpt_model_param_data(m), *G = gpt_model_grad_data(m);
    gpt_loss loss;
    double best = 1e30, sum = 0;
    /* per-phase seconds over the timed steps (stderr): zero grad, forward, backward, norm, AdamW */
    double ph[5] = {0};
    for (int s = 0; s < steps + 1; s++) {
        double t[6];
        t[0] = omp_get_wtime();
        gpt_model_zero_grad(m);
        t[1] = omp_get_wtime();
        if (gpt_model_forward(m, tok, tgt, B, T, &o, &loss, &err) < 0) {
            fprintf(stderr, "bench-train: %s\n", err.msg);
            return 1;
        }
        t[2] = omp_get_wtime();
        if (gpt_model_backward(m, &err) < 0) {
            fprintf(stderr, "bench-train: %s\n", err.msg);
            return 1;
        }
        t[3] = omp_get_wtime();
        double norm = sqrt(gpt_sumsq(G, tab->total));
        t[4] = omp_get_wtime();
        gpt_adamw_step(&opt, P, G, 1e-4, gpt_clip_coef(norm, 1.0));
        t[5] = omp_get_wtime();
        double dt = t[5] - t[0];
        if (s == 0) continue; /* warm-up */
        for (int i = 0; i < 5; i++) ph[i] += t[i + 1] - t[i];
        sum += dt;
        best = dt < best ? dt : best;
    }
    fprintf(stderr, "bench-train: s/step zero %.4f forward %.4f backward %.4f sumsq %.4f adamw %.4f\n",
            ph[0] / steps, ph[1] / steps, ph[2] / steps, ph[3] / steps, ph[4] / steps);
    gpt_adamw_free(&opt);
    uint64_t total, active;
    gpt_param_count(c, &total, &active);
    double flops_tok = gpt_flops_per_token(c, T), secs = sum / steps;
    /* sgemm peak on the model's largest GEMM (rows N, d_model -> 4 d_model) */
    double peak = bench_sgemm_peak(be, N, c->d_model, 4 * c->d_model);
    printf("{\"config\": \"%s\", \"B\": %d, \"T\": %d, \"threads\": %d, \"openblas_core\": \"%s\", \"params\": %llu, "
           "\"active_params\": %llu, \"step_s\": %.4f, \"best_step_s\": %.4f, \"tokens_per_s\": %.1f, "
           "\"flops_per_token\": %.4g, \"achieved_gflops\": %.2f, \"sgemm_peak_gflops\": %.2f, \"mfu_vs_sgemm\": %.4f, "
           "\"loss\": %.4f}\n",
           argv[1], B, T, omp_get_max_threads(), gpt_blas_corename(), (unsigned long long)total,
           (unsigned long long)active, secs, best, N / secs, flops_tok, flops_tok * N / secs / 1e9, peak / 1e9,
           flops_tok * N / secs / peak, loss.total);
    gpt_model_free(m);
    be->destroy(be);
    gpt_config_free(&cfg);
    free(tok), free(tgt);
    return 0;
}
