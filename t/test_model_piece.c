/* Each rank's piece read straight from the files (model_piece.h, gpt_open_opts.tp/pp) equals the
 * piece gpt_model_pp_from cuts from the whole model, bit for bit: parameter tables (names, shapes,
 * offsets) and bytes, for every (tp rank, stage) of several meshes, from Hugging Face safetensors
 * (a padded vocabulary too), native checkpoints in f32, bf16 + zstd, and with MXFP4 expert pairs.
 * Tensor-parallel ranks are simulated with a communicator that only carries rank and size (loading
 * communicates nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "ckpt_internal.h"
#include "model_load.h"
#include "model_pp.h"
#include "mxfp4_ckpt.h"
#include "tap.h"


/* Parameter bytes of a model, host. */
static float *host_params(gpt_model *m)
{
    size_t n = gpt_model_params(m)->total;
    float *h = gpt_xmalloc((n ? n : 1) * sizeof *h);
    gpt_backend *be = gpt_model_backend(m);
    be->to_host(be, h, gpt_model_param_data(m), n * sizeof *h);
    return h;
}

static int same_table(const gpt_param_table *a, const gpt_param_table *b)
{
    if (a->n != b->n || a->total != b->total) return 0;
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->t[i].name, b->t[i].name) || a->t[i].offset != b->t[i].offset || a->t[i].ndim != b->t[i].ndim)
            return 0;
        for (int d = 0; d < a->t[i].ndim; d++)
            if (a->t[i].shape[d] != b->t[i].shape[d]) return 0;
    }
    return 1;
}

/* Every rank of tp x pp: the piece read from path equals the piece cut from the whole model. */
static void check_mesh(gpt_backend *be, const char *what, const char *path, const char *const *sets, size_t nsets,
                       int experts_whole, int tp, int pp)
{
    gpt_err err = {{0}};
    gpt_loaded_model whole;
    if (!ok(gpt_model_open_ex(&whole, path, be, sets, nsets, &(gpt_open_opts){.experts = experts_whole}, &err) == 0,
            "%s: open the whole model", what)) {
        diag("%s", err.msg);
        return;
    }
    int all_same = 1, nonzero = 1, ranks = 0;
    for (int stage = 0; stage < pp; stage++)
        for (int r = 0; r < tp; r++) {
            gpt_comm fake = {.name = "fake", .rank = r, .size = tp};
            gpt_comm *tpc = tp > 1 ? &fake : NULL;
            gpt_model *cut = gpt_model_pp_from(whole.model, tpc, pp, stage, &err);
            gpt_loaded_model piece;
            int rc = gpt_model_open_ex(&piece, path, be, sets, nsets,
                                       &(gpt_open_opts){.tp = tpc, .pp = pp, .stage = stage}, &err);
            if (!cut || rc < 0) {
                diag("%s tp rank %d stage %d: %s", what, r, stage, err.msg);
                all_same = 0;
                if (cut) gpt_model_free(cut);
                continue;
            }
            ranks++;
            const gpt_param_table *a = gpt_model_params(cut), *b = gpt_model_params(piece.model);
            float *ha = host_params(cut), *hb = host_params(piece.model);
            int same = same_table(a, b) && memcmp(ha, hb, a->total * sizeof *ha) == 0;
            int any = 0;
            for (size_t i = 0; i < a->total && !any; i++) any = ha[i] != 0;
            if (!same) diag("%s: tp rank %d of %d, stage %d of %d differs", what, r, tp, stage, pp);
            all_same &= same;
            nonzero &= any;
            free(ha), free(hb);
            gpt_model_free(cut);
            gpt_model_close(&piece);
        }
    ok(all_same && nonzero && ranks == tp * pp, "%s, tp %d x pp %d: every rank's piece read from the files equals "
                                                 "the piece cut from the whole model, bit for bit",
       what, tp, pp);
    gpt_model_close(&whole);
}

int main(void)
{
    const char *oss = "t/data/ref/tiny-gpt-oss", *g2 = "t/data/ref/tiny-gpt2";
    if (access(oss, R_OK) != 0 || access(g2, R_OK) != 0) skip_all("run from the repository root (t/data/ref)");
    gpt_backend *be = gpt_backend_cpu();
    gpt_err err = {{0}};
    char tmpl[] = "/tmp/test-model-piece.XXXXXX";
    char *tmp = mkdtemp(tmpl);
    if (!tmp) return 1;
    const char *pad[] = {"model.padded_vocab_size=512"};

    /* native checkpoints made from the fixtures: f32 (padded vocabulary), bf16 + zstd, MXFP4 pairs */
    char ck32[600], ck16[600], ckmx[600];
    snprintf(ck32, sizeof ck32, "%s/oss-f32", tmp);
    snprintf(ck16, sizeof ck16, "%s/gpt2-bf16", tmp);
    snprintf(ckmx, sizeof ckmx, "%s/oss-mxfp4", tmp);
    gpt_loaded_model lm;
    int made = gpt_model_open_ex(&lm, oss, be, pad, 1, NULL, &err) == 0 &&
               gpt_ckpt_save_model(ck32, 1, lm.model, NULL, 0, NULL, &err) == 0;
    if (made) gpt_model_close(&lm);
    made = made && gpt_model_open_ex(&lm, g2, be, NULL, 0, NULL, &err) == 0 &&
           gpt_ckpt_save_model(ck16, 1, lm.model, NULL, 0, &(gpt_ckpt_opts){.dtype = GPT_ST_BF16, .zstd_level = 3},
                               &err) == 0;
    if (made) gpt_model_close(&lm);
    made = made && gpt_model_open_ex(&lm, oss, be, NULL, 0, NULL, &err) == 0 && write_mxfp4_ckpt(ckmx, lm.model, &err) == 0;
    if (made) gpt_model_close(&lm);
    if (!ok(made, "native checkpoints written")) diag("%s", err.msg);

    /* a random model whose embedding spans several read chunks, cut mid-row (d_model 96) */
    char ckbig[600];
    snprintf(ckbig, sizeof ckbig, "%s/gpt2-chunks", tmp);
    gpt_config bc;
    const char *big[] = {"model.d_model=96", "model.vocab_size=12000", "model.padded_vocab_size=12032"};
    gpt_model *bm = NULL;
    made = gpt_config_load("t/data/ref/tiny-gpt2/model.yaml", &bc, &err) == 0 && gpt_config_set_all(&bc, big, 3, &err) == 0 &&
           (bm = gpt_model_create(&bc.model, be, &err)) != NULL;
    if (made) gpt_model_init_params(bm, 5);
    made = made && gpt_ckpt_save_model(ckbig, 1, bm, NULL, 0, NULL, &err) == 0;
    if (bm) gpt_model_free(bm);
    if (made) gpt_config_free(&bc);
    if (!ok(made, "a checkpoint with a 4.6 MB embedding written")) diag("%s", err.msg);

    static const int meshes[][2] = {{2, 1}, {1, 2}, {2, 2}, {1, 3}, {2, 3}};
    for (int k = 0; k < 5; k++) check_mesh(be, "tiny-gpt-oss (safetensors)", oss, NULL, 0, 0, meshes[k][0], meshes[k][1]);
    for (int k = 0; k < 3; k++)
        check_mesh(be, "tiny-gpt-oss, padded vocabulary (safetensors)", oss, pad, 1, 0, meshes[k][0], meshes[k][1]);
    for (int k = 0; k < 3; k++) check_mesh(be, "tiny-gpt2 (safetensors)", g2, NULL, 0, 0, meshes[k][0], meshes[k][1]);
    for (int k = 0; k < 5; k++) check_mesh(be, "tiny-gpt-oss (checkpoint, f32)", ck32, NULL, 0, 0, meshes[k][0], meshes[k][1]);
    for (int k = 0; k < 3; k++) check_mesh(be, "tiny-gpt2 (checkpoint, bf16, zstd)", ck16, NULL, 0, 0, meshes[k][0], meshes[k][1]);
    for (int k = 0; k < 3; k++)
        check_mesh(be, "tiny-gpt-oss (checkpoint, MXFP4 experts)", ckmx, NULL, 0, GPT_EXPERTS_F32, meshes[k][0], meshes[k][1]);

    for (int k = 0; k < 3; k++) check_mesh(be, "d_model 96, 12000 rows (checkpoint, f32)", ckbig, NULL, 0, 0, meshes[k][0], meshes[k][1]);

    /* refusals, said clearly */
    gpt_comm fake = {.name = "fake", .rank = 0, .size = 2};
    int rc = gpt_model_open_ex(&lm, ckmx, be, NULL, 0, &(gpt_open_opts){.experts = GPT_EXPERTS_MXFP4, .tp = &fake}, &err);
    ok(rc < 0 && strstr(err.msg, "--experts f32"), "--experts mxfp4 with tp: refused, naming --experts f32 (%s)", err.msg);

    gpt_ckpt_remove_tree(tmp);
    be->destroy(be);
    return done_testing();
}
