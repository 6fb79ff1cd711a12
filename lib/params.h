/* params.h: the parameter table. All parameters live in one contiguous buffer; the table names
 * each tensor with its Hugging Face name (gpt_oss: model.layers.N.self_attn.q_proj.weight, ...;
 * gpt2: transformer.h.N.attn.c_attn.weight, ...) and gives its shape and offset. Gradients use
 * the same offsets in a second buffer. */
#ifndef GPT_PARAMS_H
#define GPT_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"

#define GPT_TENSOR_NAME_MAX 96

typedef enum gpt_tensor_role {
    GPT_ROLE_WEIGHT,   /* matrices: weight decay, normal init */
    GPT_ROLE_RESIDUAL, /* output projections into the residual stream: init std / sqrt(2 n_layers) */
    GPT_ROLE_BIAS,     /* zero init, no decay */
    GPT_ROLE_NORM,     /* one init, no decay */
    GPT_ROLE_SINK,     /* attention sinks: normal init, no decay */
    GPT_ROLE_EMBED,    /* embeddings: normal init, decay */
} gpt_tensor_role;

typedef struct gpt_tensor {
    char name[GPT_TENSOR_NAME_MAX];
    int ndim;
    int64_t shape[4];
    size_t offset, numel; /* in floats, into the parameter buffer */
    gpt_tensor_role role;
    int layer;            /* -1 for tensors outside the layers */
    int expert_dim;       /* 1 when shape[0] is the expert axis (MoE), else 0 */
} gpt_tensor;

typedef struct gpt_param_table {
    gpt_tensor *t;
    int n;
    size_t total; /* floats */
} gpt_param_table;

/* Builds the table for a model config (both families). */
int gpt_params_build(const gpt_model_config *cfg, gpt_param_table *tab, gpt_err *err);
void gpt_params_free(gpt_param_table *tab);
const gpt_tensor *gpt_params_find(const gpt_param_table *tab, const char *name);
/* Whether AdamW decays this tensor (matrices and embeddings; not biases, norms or sinks). */
int gpt_tensor_decays(const gpt_tensor *t);

/* Deterministic init into host memory (total floats): each tensor draws from its own stream
 * seeded by (seed, tensor index), so the values do not depend on order or threads. */
void gpt_params_init(const gpt_model_config *cfg, const gpt_param_table *tab, uint64_t seed, float *host);

/* Parameter counts: total, and active per token: MoE counts experts_per_token of n_experts, and
 * lookup tables (an untied input embedding, learned positions) are not active. Padding rows of
 * the vocabulary are not counted. */
void gpt_param_count(const gpt_model_config *cfg, uint64_t *total, uint64_t *active);

/* Training FLOPs per token (forward + backward) at sequence length T: 6 per active parameter that
 * multiplies (the active count: lookup tables excepted, a tied head included), plus attention's two (T x T) products,
 * 6 * 2 * heads * d_head * T_eff per layer, T_eff the keys an average query sees (causal, windowed).
 * What MFU figures divide by. */
double gpt_flops_per_token(const gpt_model_config *cfg, int T);

#endif
