/* model_piece.h: one rank's piece of a model, read straight from the files (inference across ranks).
 *
 * gpt-generate and gpt-eval under --tp/--pp build the model of their (tp rank, pipeline stage)
 * with gpt_model_create_pp and fill it tensor by tensor: only the stage's tensors are read, and of
 * a tensor cut across tp ranks only the rank's rows or column ranges are kept, as the bytes stream
 * past (native checkpoints: gpt_ckpt_read_stream; Hugging Face safetensors: the mapped tensor,
 * released after use). Resident memory stays at the piece plus a read buffer (MXFP4 pairs and
 * tensors in another dtype than float: plus one dequantized tensor). The result equals what
 * gpt_model_pp_from cuts from the whole model, bit for bit (the same shard_layout rules; checked
 * by t/test_model_piece.c). */
#ifndef GPT_MODEL_PIECE_H
#define GPT_MODEL_PIECE_H

#include "checkpoint.h"
#include "comm.h"
#include "model.h"

/* cfg: the full model's config (equal to the checkpoint's, checked); tp NULL or size 1: no tensor
 * parallelism; pp <= 1: one stage. The checkpoint must hold a whole model (mesh 1x1x1). */
gpt_model *gpt_model_piece_from_ckpt(gpt_ckpt *ck, const gpt_model_config *cfg, gpt_backend *be, gpt_comm *tp,
                                     int pp, int stage, gpt_err *err);
/* weights: what gpt_st_open_dir accepts (Hugging Face names, as gpt_model_load_hf reads them). */
gpt_model *gpt_model_piece_from_hf(const char *weights, const gpt_model_config *cfg, gpt_backend *be, gpt_comm *tp,
                                   int pp, int stage, gpt_err *err);

#endif
