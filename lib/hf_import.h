/* hf_import.h: Hugging Face weights (gpt_oss, gpt2; safetensors, single or sharded) into a model's
 * parameter table. Names map 1:1; MXFP4 experts (`*_blocks` + `*_scales`) are dequantized. */
#ifndef GPT_HF_IMPORT_H
#define GPT_HF_IMPORT_H

#include "error.h"
#include "model.h"

/* path: a .safetensors file, an index.json, or a directory holding either. Every parameter of
 * the model must be present with the right shape (the vocabulary may be padded on our side). */
int gpt_model_load_hf(gpt_model *m, const char *path, gpt_err *err);

#endif
