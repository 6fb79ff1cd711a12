/* hf_import.h: Hugging Face weights (gpt_oss, gpt2; safetensors, single or sharded) into a model's
 * parameter table. Names map 1:1; MXFP4 experts (`*_blocks` + `*_scales`) are dequantized. */
#ifndef GPT_HF_IMPORT_H
#define GPT_HF_IMPORT_H

#include "error.h"
#include "model.h"
#include "safetensors.h"

/* path: a .safetensors file, an index.json, or a directory holding either. Every parameter of
 * the model must be present with the right shape (the vocabulary may be padded on our side). */
int gpt_model_load_hf(gpt_model *m, const char *path, gpt_err *err);

/* One tensor at a time (loaders that keep only a piece of each): the tensor of the full table t
 * from the set s (opened from path, named in messages) into dst (t->numel floats, zeroed by the
 * caller: padded vocabulary rows stay zero), MXFP4 pairs dequantized; its mapped pages are released
 * afterwards. gpt_hf_find: the file's tensor for one of our names (NULL when absent). */
int gpt_hf_read_param(const gpt_st_set *s, const char *path, const gpt_model_config *cfg, const gpt_tensor *t,
                      float *dst, gpt_err *err);
const gpt_st_tensor *gpt_hf_find(const gpt_st_set *s, const char *name);

#endif
