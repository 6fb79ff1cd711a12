/* hf_config.h: Hugging Face config.json <-> gpt_model_config (gpt_oss and gpt2 model types).
 *
 * Reading builds a gpt-config(5) document from the JSON keys and resolves it with the config loader,
 * so defaults and checks are the ones every other config gets. Writing emits the keys transformers
 * reads; a config with no exact HF equivalent (e.g. a dense gpt_oss-family MLP) is an error, found by
 * mapping the written JSON back and comparing. */
#ifndef GPT_HF_CONFIG_H
#define GPT_HF_CONFIG_H

#include <stdio.h>

#include "config.h"
#include "error.h"

/* tokenizer: the tokenizer spec to record (NULL: o200k_harmony for gpt_oss, gpt2 for gpt2). */
int gpt_hf_config_parse(const char *json, size_t n, const char *name, const char *tokenizer, gpt_model_config *out,
                        gpt_err *err);
int gpt_hf_config_read(const char *path, const char *tokenizer, gpt_model_config *out, gpt_err *err);
/* OpenAI's original gpt-oss config.json (the `original/` directory of the published checkpoints: the
 * keys of ModelConfig in gpt_oss/torch/model.py of github.com/openai/gpt-oss). As there, a missing key
 * takes ModelConfig's default (the gpt-oss-120b values) and an unknown key is an error. Mapping:
 * num_experts -> n_experts, experts_per_token, intermediate_size -> d_expert, swiglu_limit (alpha is
 * fixed at 1.702 in that code), sliding_window on even layers (0: none), rope_theta, and YaRN when
 * rope_scaling_factor > 1 (factor, original_max_seq_len = initial_context_length, beta_fast =
 * rope_ntk_beta, beta_slow = rope_ntk_alpha, no truncation), max_seq_len = initial_context_length *
 * rope_scaling_factor; rmsnorm eps 1e-5, biases, sinks, untied embeddings, as the code builds them. */
int gpt_openai_config_parse(const char *json, size_t n, const char *name, const char *tokenizer, gpt_model_config *out,
                            gpt_err *err);
int gpt_openai_config_read(const char *path, const char *tokenizer, gpt_model_config *out, gpt_err *err);
/* malloc'd JSON text; dtype is "float32" or "bfloat16". */
char *gpt_hf_config_json(const gpt_model_config *cfg, const char *dtype, gpt_err *err);

#endif
