/* rand-ckpt: a native checkpoint with random weights (gpt_model_init_params) for a config file.
 *
 *   rand-ckpt CONFIG.yaml OUTROOT [SEED [bf16]]
 *
 * Tests that need a model big enough to measure memory (t/infer-memory.t: gpt2-124m, ~500 MB in
 * fp32) make one this way instead of storing it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config.h"
#include "model.h"

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: rand-ckpt CONFIG.yaml OUTROOT [SEED [bf16]]\n");
        return 2;
    }
    gpt_err err = {{0}};
    gpt_config cfg;
    if (gpt_config_load(argv[1], &cfg, &err) < 0) {
        fprintf(stderr, "rand-ckpt: %s\n", err.msg);
        return 1;
    }
    gpt_backend *be = gpt_backend_cpu();
    gpt_model *m = gpt_model_create(&cfg.model, be, &err);
    int rc = m ? 0 : -1;
    if (m) {
        gpt_model_init_params(m, argc > 3 ? strtoull(argv[3], NULL, 10) : 1);
        /* bf16 halves what the test writes; the model loads as fp32 all the same */
        gpt_ckpt_opts o = {.dtype = argc > 4 && strcmp(argv[4], "bf16") == 0 ? GPT_ST_BF16 : GPT_ST_F32};
        rc = gpt_ckpt_save_model(argv[2], 0, m, NULL, 0, &o, &err);
        gpt_model_free(m);
    }
    if (rc < 0) fprintf(stderr, "rand-ckpt: %s\n", err.msg);
    be->destroy(be);
    gpt_config_free(&cfg);
    return rc < 0;
}
