/* bench-model: forward+backward throughput of a config on the CPU backend, and the sgemm peak
 * of this machine measured on the model's own GEMM shapes. Used by scripts/bench-train-cpu; prints
 * one JSON line. Not a test. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "blas_check.h"
#include "config.h"
#include "model.h"

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    gpt_err err;
    gpt_config cfg;
    int B, T, steps, rc = bench_args(argc, argv, "bench-model", &cfg, &B, &T, &steps);
    if (rc >= 0) return rc;
    const gpt_model_config *c = &cfg.model;
    gpt_backend *be = gpt_backend_cpu();
    be->gemm_prec = bench_precision(argc, argv);
    gpt_model *m = gpt_model_create(c, be, &err);
    if (!m) {
        fprintf(stderr, "bench-model: %s\n", err.msg);
        return 1;
    }
    gpt_model_init_params(m, 1);
    int N = B * T;
    int *tok, *tgt;
    bench_tokens(c, N, &tok, &tgt);
    gpt_forward_opts o = {0};
    gpt_loss loss;
    double best = 1e30, sum = 0;
    for (int s = 0; s < steps + 1; s++) {
        double t0 = omp_get_wtime();
        gpt_model_zero_grad(m);
        if (gpt_model_forward(m, tok, tgt, B, T, &o, &loss, &err) < 0 || gpt_model_backward(m, &err) < 0) {
            fprintf(stderr, "bench-model: %s\n", err.msg);
            return 1;
        }
        double dt = omp_get_wtime() - t0;
        if (s == 0) continue; /* warm-up */
        sum += dt;
        best = dt < best ? dt : best;
    }
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
