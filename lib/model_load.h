/* model_load.h: open a model for inference (gpt-generate, gpt-eval) from what -m names.
 *
 * One place decides what a model path is, so that the programs switch formats together. PATH is
 * a native checkpoint (gpt-checkpoint(5): a directory with manifest.json, or a root whose
 * `latest` names one), a directory holding model.yaml (gpt-config(5)) and model.safetensors
 * (Hugging Face names, as hf_import reads them), or a model.yaml file with model.safetensors
 * beside it. */
#ifndef GPT_MODEL_LOAD_H
#define GPT_MODEL_LOAD_H

#include "backend.h"
#include "comm.h"
#include "config.h"
#include "error.h"
#include "model.h"

typedef struct gpt_loaded_model {
    gpt_config cfg;    /* the model's config (tokenizer spec in cfg.model.tokenizer) */
    gpt_model *model;
    char *dir;         /* the directory the model came from */
} gpt_loaded_model;

/* How MoE expert weights are held: MXFP4 (fused kernels, about 4.25 bits per weight; inference only)
 * or fp32. AUTO: MXFP4 when a native checkpoint stores them as MXFP4 pairs, else fp32. */
enum { GPT_EXPERTS_AUTO = 0, GPT_EXPERTS_F32, GPT_EXPERTS_MXFP4 };
typedef struct gpt_open_opts {
    int experts;
    /* Inference across ranks: open only this rank's piece, stage `stage` of pp (0 or 1: one stage),
     * tensor-parallel over tp (NULL or size 1: none); the tp group must outlive the model. Each
     * tensor the piece holds is read from the files on its own and cut as it streams past
     * (model_piece.h), so no rank ever holds the whole model; the model equals what
     * gpt_model_pp_from cuts from the whole one. Experts are fp32 then (AUTO dequantizes MXFP4;
     * MXFP4 is refused). */
    gpt_comm *tp;
    int pp, stage;
} gpt_open_opts;

/* sets: --set overrides applied to the config before the model is built (n_sets may be 0). */
int gpt_model_open(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets, size_t n_sets,
                   gpt_err *err);
int gpt_model_open_ex(gpt_loaded_model *lm, const char *path, gpt_backend *be, const char *const *sets,
                      size_t n_sets, const gpt_open_opts *opts, gpt_err *err);
void gpt_model_close(gpt_loaded_model *lm); /* the backend is not destroyed */

#endif
