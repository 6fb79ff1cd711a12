/* config.h: model configuration files (YAML; gpt-config(5)).
 *
 *   gpt_config cfg;
 *   if (gpt_config_load("gpt-oss-20b", &cfg, &err) < 0 ||          // preset name or file path
 *       gpt_config_set(&cfg, "model.n_layers=2", &err) < 0) ...      // --set overrides
 *   cfg.model.d_model ...
 *   gpt_config_dump(&cfg, stdout, &err);                             // loads back to an equal config
 *   gpt_config_free(&cfg);
 *
 * A file has up to five top-level sections: `tokenizer:` (a scalar), `model:` (read here into
 * gpt_model_config) and `train:`, `generate:`, `parallel:`, which are kept as a YAML tree for their
 * owners to read with gpt_config_node() and the typed gpt_yget_* helpers of yaml_doc.h (same
 * "FILE:LINE: KEY: problem" messages). Any other top-level key is an error. */
#ifndef GPT_CONFIG_H
#define GPT_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "yaml_doc.h"

#define GPT_CONFIG_MAX_LAYERS 1024
#define GPT_CONFIG_NAME_MAX 256

typedef enum gpt_norm_kind { GPT_NORM_LAYERNORM, GPT_NORM_RMSNORM } gpt_norm_kind;
typedef enum gpt_pos_kind { GPT_POS_LEARNED, GPT_POS_ROPE } gpt_pos_kind;
typedef enum gpt_rope_scaling { GPT_ROPE_SCALING_NONE, GPT_ROPE_SCALING_YARN } gpt_rope_scaling;
typedef enum gpt_mlp_kind { GPT_MLP_DENSE, GPT_MLP_MOE } gpt_mlp_kind;
typedef enum gpt_activation { GPT_ACT_GELU_TANH, GPT_ACT_SWIGLU } gpt_activation;
/* Which layers use the sliding window: a pattern, or an explicit list (sliding_mask). */
typedef enum gpt_sliding_layers {
    GPT_SLIDING_NONE, GPT_SLIDING_ALL, GPT_SLIDING_EVEN, GPT_SLIDING_ODD, GPT_SLIDING_LIST
} gpt_sliding_layers;

/* The resolved model section: every derived value filled in (d_head, n_kv_heads, padded vocab,
 * d_ff, sliding_mask). Fields that do not apply (rope_* with learned positions, MoE fields of a
 * dense MLP, yarn_* without yarn) are zero. Plain data: copy it with `=`. */
typedef struct gpt_model_config {
    char tokenizer[GPT_CONFIG_NAME_MAX];  /* spec for gpt_tokenizer_open (top-level `tokenizer:`) */

    int vocab_size, padded_vocab_size;    /* padded: default vocab_size rounded up to 128 */
    int d_model, n_layers, n_heads, n_kv_heads, d_head, max_seq_len;

    gpt_norm_kind norm;
    double norm_eps;

    gpt_pos_kind positions;
    double rope_theta;
    gpt_rope_scaling rope_scaling;
    double yarn_factor;
    int yarn_original_max_seq_len;
    double yarn_beta_fast, yarn_beta_slow;
    int yarn_truncate;                    /* round the YaRN correction range to whole dims */

    int attn_bias, attn_sinks;
    int sliding_window;                   /* tokens (0: not given); unused when sliding_layers is NONE */
    gpt_sliding_layers sliding_layers;
    uint64_t sliding_mask[GPT_CONFIG_MAX_LAYERS / 64]; /* bit l: layer l uses the window */

    gpt_mlp_kind mlp;
    gpt_activation activation;
    int mlp_bias;
    int d_ff;                             /* dense hidden width (0 for moe) */
    int n_experts, experts_per_token, d_expert; /* moe (0 for dense) */
    double swiglu_alpha, swiglu_limit;    /* swiglu only */
    double router_aux_loss_coef;          /* moe only */

    int tie_embeddings;
    double init_std;
} gpt_model_config;

typedef struct gpt_config {
    gpt_model_config model;
    char *source;     /* the file path (or name given to gpt_config_load_mem) */
    gpt_ynode *root;  /* the whole document, --set edits applied */
    char **sets;      /* the --set assignments applied, in order: nodes they made cite them */
    size_t n_sets;
} gpt_config;

/* Load a preset name (NAME.yaml in the default directories) or a file path (anything with a '/'
 * or ending in .yaml/.yml). Default directories, in order: each entry of $GPT_CONFIG_PATH
 * (colon-separated), DIR/../share/gpt/configs where DIR holds the running executable, GPT_CONFIG_DIR
 * when compiled with -DGPT_CONFIG_DIR='"..."', and share/configs under the current directory (the
 * source tree). On failure cfg is left zeroed (nothing to free). */
int gpt_config_load(const char *name_or_path, gpt_config *cfg, gpt_err *err);
/* The default directories above as a NULL-terminated, malloc'd list (for files that live beside
 * the presets, like gpt-train's recipes); free with gpt_config_dirs_free. */
char **gpt_config_default_dirs(void);
void gpt_config_dirs_free(char **dirs);
/* The same with an explicit NULL-terminated directory list (dirs may be NULL: paths only). */
int gpt_config_load_dirs(const char *name_or_path, const char *const *dirs, gpt_config *cfg, gpt_err *err);
/* Resolve a preset name or path to a file path (malloc'd in *path) without reading it. */
int gpt_config_find(const char *name_or_path, const char *const *dirs, char **path, gpt_err *err);
/* Parse a config held in memory; `name` is used in messages. */
int gpt_config_load_mem(const char *data, size_t len, const char *name, gpt_config *cfg, gpt_err *err);
void gpt_config_free(gpt_config *cfg);

/* Apply "KEY=VALUE" (KEY dotted: model.n_layers, model.mlp.type, train.lr, tokenizer). VALUE is
 * taken literally unless it starts with [ { " or ', when it is read as YAML (a list like
 * model.attention.sliding_window_layers=[0,3], a mapping, a quoted string). An empty VALUE removes
 * the key (back to its default). The whole config is then validated; on error cfg is unchanged
 * and the message names the key and cites the --set. */
int gpt_config_set(gpt_config *cfg, const char *assignment, gpt_err *err);
/* Several --set options as one edit, validated once at the end, so that switching a variant can
 * pass through states that would be invalid alone:
 * {"model.positions=learned", "model.rope="}. Programs should use this for their --set list. */
int gpt_config_set_all(gpt_config *cfg, const char *const *assignments, size_t n, gpt_err *err);

/* Any node by dotted key ("train", "train.lr"), or NULL. */
const gpt_ynode *gpt_config_node(const gpt_config *cfg, const char *key);
/* A scalar's text by dotted key, or NULL when absent or not a scalar; its line in *line (0 when it
 * came from --set). */
const char *gpt_config_get(const gpt_config *cfg, const char *key, int *line);

/* Write the whole config as YAML: the model section fully resolved (every default written out),
 * the other sections as stored. Loading the output gives an equal config. */
int gpt_config_dump(const gpt_config *cfg, FILE *f, gpt_err *err);

/* Field-by-field equality (floats compared exactly). */
int gpt_model_config_equal(const gpt_model_config *a, const gpt_model_config *b);
/* The attention window of layer l: sliding_window when the layer slides, else 0 (full). */
int gpt_model_layer_window(const gpt_model_config *m, int layer);

/* Names as written in config files. */
const char *gpt_norm_name(gpt_norm_kind k);
const char *gpt_pos_name(gpt_pos_kind k);
const char *gpt_rope_scaling_name(gpt_rope_scaling k);
const char *gpt_mlp_name(gpt_mlp_kind k);
const char *gpt_activation_name(gpt_activation k);
const char *gpt_sliding_layers_name(gpt_sliding_layers k);

#endif
