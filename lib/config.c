#include "config.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"

static const char *const NORM_NAMES[] = {"layernorm", "rmsnorm"};
static const char *const POS_NAMES[] = {"learned", "rope"};
static const char *const SCALING_NAMES[] = {"none", "yarn"};
static const char *const MLP_NAMES[] = {"dense", "moe"};
static const char *const ACT_NAMES[] = {"gelu_tanh", "swiglu"};
static const char *const SLIDING_NAMES[] = {"none", "all", "even", "odd", "list"};

#define NAMES(a) a, sizeof a / sizeof a[0]

const char *gpt_norm_name(gpt_norm_kind k) { return (unsigned)k < 2 ? NORM_NAMES[k] : "?"; }
const char *gpt_pos_name(gpt_pos_kind k) { return (unsigned)k < 2 ? POS_NAMES[k] : "?"; }
const char *gpt_rope_scaling_name(gpt_rope_scaling k) { return (unsigned)k < 2 ? SCALING_NAMES[k] : "?"; }
const char *gpt_mlp_name(gpt_mlp_kind k) { return (unsigned)k < 2 ? MLP_NAMES[k] : "?"; }
const char *gpt_activation_name(gpt_activation k) { return (unsigned)k < 2 ? ACT_NAMES[k] : "?"; }
const char *gpt_sliding_layers_name(gpt_sliding_layers k) { return (unsigned)k < 5 ? SLIDING_NAMES[k] : "?"; }

static const char *const TOP_KEYS[] = {"tokenizer", "model", "train", "generate", "parallel", NULL};
static const char *const MODEL_KEYS[] = {"vocab_size", "padded_vocab_size", "d_model", "n_layers", "n_heads",
                                         "n_kv_heads", "d_head", "max_seq_len", "norm", "norm_eps", "positions",
                                         "rope", "attention", "mlp", "tie_embeddings", "init_std", NULL};
static const char *const ROPE_KEYS[] = {"theta", "scaling", "factor", "original_max_seq_len", "beta_fast",
                                        "beta_slow", "truncate", NULL};
static const char *const YARN_KEYS[] = {"factor", "original_max_seq_len", "beta_fast", "beta_slow", "truncate", NULL};
static const char *const ATTN_KEYS[] = {"bias", "sinks", "sliding_window", "sliding_window_layers", NULL};
static const char *const MLP_KEYS[] = {"type", "activation", "bias", "d_ff", "n_experts", "experts_per_token",
                                       "d_expert", "swiglu_alpha", "swiglu_limit", "router_aux_loss_coef", NULL};
static const char *const MOE_KEYS[] = {"n_experts", "experts_per_token", "d_expert", "router_aux_loss_coef", NULL};
static const char *const SWIGLU_KEYS[] = {"swiglu_alpha", "swiglu_limit", NULL};

#define DEFAULT_TOKENIZER "o200k_harmony"
/* Sizes far beyond any real model but small enough that products of two stay well inside int64. */
#define MAX_DIM (1 << 20)
#define MAX_VOCAB (1 << 30)
#define MAX_SEQ (1 << 24)

/* ---- errors ---- */

/* An error at map[key] (the key's line), or at the map itself when the key is absent. */
__attribute__((format(printf, 5, 6))) static int key_err(gpt_err *err, const gpt_ynode *map, const char *path,
                                                         const char *key, const char *fmt, ...)
{
    char kp[256], msg[sizeof err->msg];
    snprintf(kp, sizeof kp, "%s%s%s", path, *path ? "." : "", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = 0;
    const gpt_ynode *v = gpt_ymap_get(map, key, &line);
    gpt_ynode at = {.src = v ? v->src : map ? map->src : NULL, .line = v ? line : map ? map->line : 0};
    return gpt_yerrf(err, &at, kp, "%s", msg);
}

/* Keys in `keys` must not appear in map (they belong to another variant). */
static int only_when(const gpt_ynode *map, const char *path, const char *const *keys, const char *when,
                     gpt_err *err)
{
    for (const char *const *k = keys; *k; k++)
        if (gpt_ymap_get(map, *k, NULL)) return key_err(err, map, path, *k, "only valid when %s", when);
    return 0;
}

static int rd_int(const gpt_ynode *map, const char *path, const char *key, int64_t lo, int64_t hi, int *out,
                  gpt_err *err)
{
    int64_t v;
    int r = gpt_yget_int(map, path, key, lo, hi, &v, err);
    if (r == 1) *out = (int)v;
    return r;
}

static int need_int(const gpt_ynode *map, const char *path, const char *key, int64_t lo, int64_t hi, int *out,
                    const char *why, gpt_err *err)
{
    int r = rd_int(map, path, key, lo, hi, out, err);
    if (r == 0) return key_err(err, map, path, key, "required key missing%s", why);
    return r;
}

static int need_float(const gpt_ynode *map, const char *path, const char *key, double lo, int lo_open, double hi,
                      double *out, const char *why, gpt_err *err)
{
    int r = gpt_yget_float(map, path, key, lo, lo_open, hi, out, err);
    if (r == 0) return key_err(err, map, path, key, "required key missing%s", why);
    return r;
}

/* ---- the model section ---- */

static int read_sliding_layers(const gpt_ynode *attn, gpt_model_config *m, gpt_err *err)
{
    const char *path = "model.attention", *key = "sliding_window_layers";
    const gpt_ynode *v = gpt_ymap_get(attn, key, NULL);
    memset(m->sliding_mask, 0, sizeof m->sliding_mask);
    if (!v) {
        /* a window given without saying where applies everywhere */
        m->sliding_layers = m->sliding_window > 0 ? GPT_SLIDING_ALL : GPT_SLIDING_NONE;
    } else if (v->kind == GPT_YSEQ) {
        m->sliding_layers = v->n ? GPT_SLIDING_LIST : GPT_SLIDING_NONE;
        for (size_t i = 0; i < v->n; i++) {
            const gpt_ynode *it = v->items[i];
            int64_t l;
            if (it->kind != GPT_YSCALAR || gpt_yparse_int(it->text, &l) < 0)
                return gpt_yerrf(err, it, "model.attention.sliding_window_layers",
                                 "list items must be layer indices (integers), got %s",
                                 it->kind == GPT_YSCALAR ? it->text : "a nested value");
            if (l < 0 || l >= m->n_layers)
                return gpt_yerrf(err, it, "model.attention.sliding_window_layers",
                                 "layer %lld is out of range (model.n_layers is %d: 0..%d)", (long long)l, m->n_layers,
                                 m->n_layers - 1);
            if (m->sliding_mask[l / 64] >> (l % 64) & 1)
                return gpt_yerrf(err, it, "model.attention.sliding_window_layers", "layer %lld is listed twice",
                                 (long long)l);
            m->sliding_mask[l / 64] |= (uint64_t)1 << (l % 64);
        }
    } else {
        int k;
        /* "list" is what the dump calls an explicit list, not a spelling users write */
        if (gpt_yget_enum(attn, path, key, SLIDING_NAMES, 4, &k, err) < 0) {
            if (v->kind == GPT_YSCALAR && !gpt_ynode_is_null(v))
                return gpt_yerrf(err, v, "model.attention.sliding_window_layers",
                                 "expected none, all, even, odd or a list of layer indices like [0, 2], got \"%s\"",
                                 v->text);
            return -1;
        }
        m->sliding_layers = (gpt_sliding_layers)k;
    }
    if (m->sliding_layers != GPT_SLIDING_LIST)
        for (int l = 0; l < m->n_layers; l++) {
            int on = m->sliding_layers == GPT_SLIDING_ALL || (m->sliding_layers == GPT_SLIDING_EVEN && l % 2 == 0) ||
                     (m->sliding_layers == GPT_SLIDING_ODD && l % 2 == 1);
            if (on) m->sliding_mask[l / 64] |= (uint64_t)1 << (l % 64);
        }
    int any = 0;
    for (size_t i = 0; i < sizeof m->sliding_mask / sizeof m->sliding_mask[0]; i++) any |= m->sliding_mask[i] != 0;
    if (any && m->sliding_window < 1) {
        if (gpt_ymap_get(attn, "sliding_window", NULL))
            return key_err(err, attn, path, "sliding_window", "must be >= 1 when sliding_window_layers is %s, got %d",
                           v && v->kind == GPT_YSCALAR ? v->text : "a list", m->sliding_window);
        return key_err(err, attn, path, key, "needs model.attention.sliding_window (the window size, >= 1)");
    }
    return 0;
}

static int read_rope(const gpt_ynode *model, gpt_model_config *m, gpt_err *err)
{
    const gpt_ynode *rope = NULL;
    if (gpt_yget_map(model, "model", "rope", &rope, err) < 0) return -1;
    if (m->positions != GPT_POS_ROPE) {
        if (gpt_ymap_get(model, "rope", NULL))
            return key_err(err, model, "model", "rope", "only valid when model.positions is rope");
        return 0;
    }
    const char *p = "model.rope";
    if (gpt_ymap_check_keys(rope, p, ROPE_KEYS, err) < 0) return -1;
    m->rope_theta = 10000.0;
    if (gpt_yget_float(rope, p, "theta", 0, 1, 1e12, &m->rope_theta, err) < 0) return -1;
    int k = GPT_ROPE_SCALING_NONE;
    if (gpt_yget_enum(rope, p, "scaling", NAMES(SCALING_NAMES), &k, err) < 0) return -1;
    m->rope_scaling = (gpt_rope_scaling)k;
    if (m->rope_scaling != GPT_ROPE_SCALING_YARN) return only_when(rope, p, YARN_KEYS, "model.rope.scaling is yarn", err);
    const char *why = " (scaling is yarn)";
    if (need_float(rope, p, "factor", 1, 0, 1e6, &m->yarn_factor, why, err) < 0 ||
        need_int(rope, p, "original_max_seq_len", 1, m->max_seq_len, &m->yarn_original_max_seq_len, why, err) < 0 ||
        need_float(rope, p, "beta_fast", 0, 1, 1e6, &m->yarn_beta_fast, why, err) < 0 ||
        need_float(rope, p, "beta_slow", 0, 1, 1e6, &m->yarn_beta_slow, why, err) < 0)
        return -1;
    if (!(m->yarn_beta_fast > m->yarn_beta_slow))
        return key_err(err, rope, p, "beta_fast", "must be > beta_slow (%g), got %g", m->yarn_beta_slow,
                       m->yarn_beta_fast);
    m->yarn_truncate = 0;
    return gpt_yget_bool(rope, p, "truncate", &m->yarn_truncate, err) < 0 ? -1 : 0;
}

static int read_mlp(const gpt_ynode *model, gpt_model_config *m, gpt_err *err)
{
    const gpt_ynode *mlp = NULL;
    const char *p = "model.mlp";
    if (gpt_yget_map(model, "model", "mlp", &mlp, err) < 0 || gpt_ymap_check_keys(mlp, p, MLP_KEYS, err) < 0)
        return -1;
    int k = GPT_MLP_DENSE;
    if (gpt_yget_enum(mlp, p, "type", NAMES(MLP_NAMES), &k, err) < 0) return -1;
    m->mlp = (gpt_mlp_kind)k;
    k = m->mlp == GPT_MLP_MOE ? GPT_ACT_SWIGLU : GPT_ACT_GELU_TANH;
    if (gpt_yget_enum(mlp, p, "activation", NAMES(ACT_NAMES), &k, err) < 0) return -1;
    m->activation = (gpt_activation)k;
    m->mlp_bias = 1;
    if (gpt_yget_bool(mlp, p, "bias", &m->mlp_bias, err) < 0) return -1;

    if (m->mlp == GPT_MLP_DENSE) {
        if (only_when(mlp, p, MOE_KEYS, "model.mlp.type is moe", err) < 0) return -1;
        m->d_ff = m->d_model <= MAX_SEQ / 4 ? 4 * m->d_model : MAX_SEQ;
        if (rd_int(mlp, p, "d_ff", 1, MAX_SEQ, &m->d_ff, err) < 0) return -1;
    } else {
        if (gpt_ymap_get(mlp, "d_ff", NULL))
            return key_err(err, mlp, p, "d_ff", "only valid when model.mlp.type is dense (a moe MLP uses d_expert)");
        const char *why = " (type is moe)";
        if (need_int(mlp, p, "n_experts", 1, 1 << 16, &m->n_experts, why, err) < 0 ||
            need_int(mlp, p, "experts_per_token", 1, 1 << 16, &m->experts_per_token, why, err) < 0 ||
            need_int(mlp, p, "d_expert", 1, MAX_SEQ, &m->d_expert, why, err) < 0)
            return -1;
        if (m->experts_per_token > m->n_experts)
            return key_err(err, mlp, p, "n_experts", "must be >= experts_per_token (%d), got %d", m->experts_per_token,
                           m->n_experts);
        m->router_aux_loss_coef = 0.001;
        if (gpt_yget_float(mlp, p, "router_aux_loss_coef", 0, 0, 1e6, &m->router_aux_loss_coef, err) < 0) return -1;
    }
    if (m->activation != GPT_ACT_SWIGLU)
        return only_when(mlp, p, SWIGLU_KEYS, "model.mlp.activation is swiglu", err);
    m->swiglu_alpha = 1.702;
    m->swiglu_limit = 7.0;
    if (gpt_yget_float(mlp, p, "swiglu_alpha", 0, 1, 1e6, &m->swiglu_alpha, err) < 0 ||
        gpt_yget_float(mlp, p, "swiglu_limit", 0, 1, DBL_MAX, &m->swiglu_limit, err) < 0)
        return -1;
    return 0;
}

static int read_model(const gpt_ynode *model, gpt_model_config *m, gpt_err *err)
{
    const char *p = "model";
    if (gpt_ymap_check_keys(model, p, MODEL_KEYS, err) < 0) return -1;
    if (need_int(model, p, "vocab_size", 1, MAX_VOCAB, &m->vocab_size, "", err) < 0 ||
        need_int(model, p, "d_model", 1, MAX_DIM, &m->d_model, "", err) < 0 ||
        need_int(model, p, "n_layers", 1, GPT_CONFIG_MAX_LAYERS, &m->n_layers, "", err) < 0 ||
        need_int(model, p, "n_heads", 1, 1 << 16, &m->n_heads, "", err) < 0 ||
        need_int(model, p, "max_seq_len", 1, MAX_SEQ, &m->max_seq_len, "", err) < 0)
        return -1;

    m->padded_vocab_size = (int)(((int64_t)m->vocab_size + 127) / 128 * 128);
    int r = rd_int(model, p, "padded_vocab_size", 1, MAX_VOCAB + 128, &m->padded_vocab_size, err);
    if (r < 0) return -1;
    if (m->padded_vocab_size < m->vocab_size)
        return key_err(err, model, p, "padded_vocab_size", "must be >= vocab_size (%d), got %d", m->vocab_size,
                       m->padded_vocab_size);

    m->n_kv_heads = m->n_heads;
    if (rd_int(model, p, "n_kv_heads", 1, 1 << 16, &m->n_kv_heads, err) < 0) return -1;
    if (m->n_heads % m->n_kv_heads != 0)
        return key_err(err, model, p, "n_kv_heads", "must divide n_heads (%d), got %d", m->n_heads, m->n_kv_heads);

    r = rd_int(model, p, "d_head", 1, 1 << 16, &m->d_head, err);
    if (r < 0) return -1;
    if (r == 0) {
        if (m->d_model % m->n_heads != 0)
            return key_err(err, model, p, "n_heads", "must divide d_model (%d) when d_head is not given, got %d",
                           m->d_model, m->n_heads);
        m->d_head = m->d_model / m->n_heads;
    }
    if ((int64_t)m->n_heads * m->d_head > MAX_DIM)
        return key_err(err, model, p, r ? "d_head" : "n_heads", "n_heads * d_head (%lld) must be <= %d",
                       (long long)m->n_heads * m->d_head, MAX_DIM);

    int k = GPT_NORM_LAYERNORM;
    if (gpt_yget_enum(model, p, "norm", NAMES(NORM_NAMES), &k, err) < 0) return -1;
    m->norm = (gpt_norm_kind)k;
    m->norm_eps = 1e-5;
    if (gpt_yget_float(model, p, "norm_eps", 0, 1, 1, &m->norm_eps, err) < 0) return -1;

    k = GPT_POS_LEARNED;
    if (gpt_yget_enum(model, p, "positions", NAMES(POS_NAMES), &k, err) < 0) return -1;
    m->positions = (gpt_pos_kind)k;
    if (read_rope(model, m, err) < 0) return -1;
    if (m->positions == GPT_POS_ROPE && m->d_head % 2 != 0)
        return key_err(err, model, p, r ? "d_head" : "n_heads",
                       "rope rotates pairs of dimensions, so d_head must be even, got %d", m->d_head);

    const gpt_ynode *attn = NULL;
    const char *ap = "model.attention";
    if (gpt_yget_map(model, p, "attention", &attn, err) < 0 || gpt_ymap_check_keys(attn, ap, ATTN_KEYS, err) < 0)
        return -1;
    m->attn_bias = 1;
    m->attn_sinks = 0;
    if (gpt_yget_bool(attn, ap, "bias", &m->attn_bias, err) < 0 ||
        gpt_yget_bool(attn, ap, "sinks", &m->attn_sinks, err) < 0 ||
        rd_int(attn, ap, "sliding_window", 0, MAX_SEQ, &m->sliding_window, err) < 0 ||
        read_sliding_layers(attn, m, err) < 0)
        return -1;

    if (read_mlp(model, m, err) < 0) return -1;

    m->tie_embeddings = 1;
    m->init_std = 0.02;
    if (gpt_yget_bool(model, p, "tie_embeddings", &m->tie_embeddings, err) < 0 ||
        gpt_yget_float(model, p, "init_std", 0, 1, 10, &m->init_std, err) < 0)
        return -1;
    return 0;
}

/* Validate a whole document and resolve its model section into *m. */
static int validate(const gpt_ynode *root, const char *src, gpt_model_config *m, gpt_err *err)
{
    memset(m, 0, sizeof *m);
    if (root->kind != GPT_YMAP)
        return gpt_errf(err, "%s:%d: expected a mapping of sections (tokenizer:, model:, train:, ...) at the top level",
                        src, root->line);
    if (gpt_ymap_check_keys(root, "", TOP_KEYS, err) < 0) return -1;
    const char *tok = DEFAULT_TOKENIZER;
    if (gpt_yget_str(root, "", "tokenizer", &tok, err) < 0) return -1;
    if (strlen(tok) >= sizeof m->tokenizer)
        return key_err(err, root, "", "tokenizer", "longer than %zu bytes", sizeof m->tokenizer - 1);
    strcpy(m->tokenizer, tok);
    static const char *const owned[] = {"train", "generate", "parallel"};
    for (int i = 0; i < 3; i++) {
        const gpt_ynode *sec;
        if (gpt_yget_map(root, "", owned[i], &sec, err) < 0) return -1;
    }
    const gpt_ynode *model = NULL;
    if (gpt_yget_map(root, "", "model", &model, err) < 0) return -1;
    if (!model) return gpt_yerrf(err, root, "model", "required section missing (see gpt-config(5))");
    return read_model(model, m, err);
}

/* ---- loading ---- */

int gpt_config_load_mem(const char *data, size_t len, const char *name, gpt_config *cfg, gpt_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->source = gpt_xstrdup(name && *name ? name : "config");
    cfg->root = gpt_yparse(data, len, cfg->source, err);
    if (!cfg->root || validate(cfg->root, cfg->source, &cfg->model, err) < 0) {
        gpt_config_free(cfg);
        return -1;
    }
    return 0;
}

static int is_path(const char *s)
{
    size_t n = strlen(s);
    return strchr(s, '/') || (n > 5 && strcmp(s + n - 5, ".yaml") == 0) || (n > 4 && strcmp(s + n - 4, ".yml") == 0);
}

int gpt_config_find(const char *name_or_path, const char *const *dirs, char **path, gpt_err *err)
{
    *path = NULL;
    if (!name_or_path || !*name_or_path) return gpt_errf(err, "empty config name: give a preset name or a file path");
    if (is_path(name_or_path)) {
        *path = gpt_xstrdup(name_or_path);
        return 0;
    }
    char looked[600] = "";
    size_t used = 0;
    for (size_t i = 0; dirs && dirs[i]; i++) {
        size_t n = strlen(dirs[i]) + strlen(name_or_path) + 8;
        char *p = gpt_xmalloc(n);
        snprintf(p, n, "%s/%s.yaml", dirs[i], name_or_path);
        if (access(p, R_OK) == 0) {
            *path = p;
            return 0;
        }
        free(p);
        if (used < sizeof looked)
            used += (size_t)snprintf(looked + used, sizeof looked - used, "%s%s", i ? ", " : "", dirs[i]);
    }
    return gpt_errf(err,
                    "no config preset named \"%s\" (looked in: %s); give a file path, or add its directory to "
                    "GPT_CONFIG_PATH",
                    name_or_path, used ? looked : "no directories");
}

int gpt_config_load_dirs(const char *name_or_path, const char *const *dirs, gpt_config *cfg, gpt_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    char *path;
    if (gpt_config_find(name_or_path, dirs, &path, err) < 0) return -1;
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) < 0) {
        free(path);
        return -1;
    }
    int rc = gpt_config_load_mem((const char *)b.data, b.size, path, cfg, err);
    gpt_blob_free(&b);
    free(path);
    return rc;
}

char **gpt_config_default_dirs(void)
{
    char **dirs = gpt_xmalloc(64 * sizeof *dirs);
    size_t nd = 0;
    const char *env = getenv("GPT_CONFIG_PATH");
    char *envc = env ? gpt_xstrdup(env) : NULL, *save = NULL;
    for (char *t = envc ? strtok_r(envc, ":", &save) : NULL; t && nd < 60; t = strtok_r(NULL, ":", &save))
        dirs[nd++] = gpt_xstrdup(t);
    free(envc);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            size_t l = strlen(exe) + 32;
            dirs[nd] = gpt_xmalloc(l);
            snprintf(dirs[nd++], l, "%s/../share/gpt/configs", exe);
        }
    }
#ifdef GPT_CONFIG_DIR
    dirs[nd++] = gpt_xstrdup(GPT_CONFIG_DIR);
#endif
    dirs[nd++] = gpt_xstrdup("share/configs");
    dirs[nd] = NULL;
    return dirs;
}

void gpt_config_dirs_free(char **dirs)
{
    if (!dirs) return;
    for (size_t i = 0; dirs[i]; i++) free(dirs[i]);
    free(dirs);
}

int gpt_config_load(const char *name_or_path, gpt_config *cfg, gpt_err *err)
{
    char **dirs = gpt_config_default_dirs();
    int rc = gpt_config_load_dirs(name_or_path, (const char *const *)dirs, cfg, err);
    gpt_config_dirs_free(dirs);
    return rc;
}

void gpt_config_free(gpt_config *cfg)
{
    if (!cfg) return;
    gpt_ynode_free(cfg->root);
    free(cfg->source);
    for (size_t i = 0; i < cfg->n_sets; i++) free(cfg->sets[i]);
    free(cfg->sets);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- --set ---- */

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF): what libyaml
 * guarantees for parsed text and requires of text it writes. */
static int utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (n == 9) return 0;
        uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1f : n == 2 ? c & 0x0f : c & 0x07;
        for (unsigned i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        static const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        s += n + 1;
    }
    return 1;
}

/* Apply one assignment to the tree `root`; the nodes it makes cite `label`. */
static int apply_set(gpt_ynode *root, const char *assignment, const char *label, gpt_err *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment) return gpt_errf(err, "%s: expected KEY=VALUE (e.g. model.n_layers=2)", label);
    size_t kl = (size_t)(eq - assignment);
    if (kl >= 256) return gpt_errf(err, "%s: key longer than 255 bytes", label);
    char key[256];
    memcpy(key, assignment, kl);
    key[kl] = '\0';
    for (size_t i = 0; i < kl; i++) {
        char c = key[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                 (c == '.' && i > 0 && i + 1 < kl && key[i + 1] != '.');
        if (!ok) return gpt_errf(err, "%s: bad key \"%s\" (dotted names like model.n_layers)", label, key);
    }
    if (root->kind != GPT_YMAP) return gpt_errf(err, "%s: the configuration is not a mapping", label);

    const char *value = eq + 1;
    if (!utf8_ok((const unsigned char *)value)) return gpt_errf(err, "--set %s: value is not valid UTF-8", key);
    gpt_ynode *val = NULL;
    /* YAML only for lists, mappings and quoted strings: a plain value stays exactly what was typed;
     * an empty one removes the key */
    if (value[0] && strchr("[{\"'", value[0])) {
        val = gpt_yparse(value, strlen(value), label, err);
        if (!val) return -1;
        gpt_ynode_relabel(val, label, 0);
    } else if (value[0]) {
        val = gpt_yscalar_new(value, 0, label, 0);
    }

    gpt_ynode *at = root;
    const char *p = key;
    for (;;) {
        const char *dot = strchr(p, '.');
        char part[256];
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        memcpy(part, p, l);
        part[l] = '\0';
        if (!dot) {
            if (val)
                gpt_ymap_put(at, part, 0, val);
            else
                gpt_ymap_del(at, part);
            return 0;
        }
        gpt_ynode *next = gpt_ymap_get(at, part, NULL);
        if (next && gpt_ynode_is_null(next)) next = NULL;
        if (next && next->kind != GPT_YMAP) {
            gpt_ynode_free(val);
            return gpt_errf(err, "%s: %.*s is not a mapping, so it has no key %s", label, (int)(dot - key), key,
                            dot + 1);
        }
        if (!next) {
            if (!val) return 0; /* removing from a mapping that is not there */
            next = gpt_ynode_new(GPT_YMAP, label, 0);
            gpt_ymap_put(at, part, 0, next);
        }
        at = next;
        p = dot + 1;
    }
}

int gpt_config_set_all(gpt_config *cfg, const char *const *assignments, size_t n, gpt_err *err)
{
    if (n == 0) return 0;
    if (!cfg->root) return gpt_errf(err, "--set %s: no configuration loaded to change", assignments[0]);
    gpt_ynode *root = gpt_ynode_clone(cfg->root);
    char **labels = gpt_xcalloc(n, sizeof *labels);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        labels[i] = gpt_xmalloc(strlen(assignments[i]) + 8);
        sprintf(labels[i], "--set %s", assignments[i]);
        rc = apply_set(root, assignments[i], labels[i], err);
    }
    gpt_model_config m;
    if (rc == 0 && gpt_ynode_depth(root) > GPT_YDOC_MAX_DEPTH)
        rc = gpt_errf(err, "%s: nested deeper than %d levels", labels[n - 1], GPT_YDOC_MAX_DEPTH);
    if (rc == 0 && validate(root, cfg->source, &m, err) < 0) {
        rc = -1;
        /* say which --set led there when the problem is in a value the file gave */
        int cites = 0;
        for (size_t i = 0; i < n && err; i++) cites |= strncmp(err->msg, labels[i], strlen(labels[i])) == 0;
        if (err && !cites) {
            if (n == 1)
                gpt_err_prefix(err, "with %s", labels[0]);
            else
                gpt_err_prefix(err, "with the --set options");
        }
    }
    if (rc < 0) {
        gpt_ynode_free(root);
        for (size_t i = 0; i < n; i++) free(labels[i]);
        free(labels);
        return -1;
    }
    gpt_ynode_free(cfg->root);
    cfg->root = root;
    cfg->model = m;
    cfg->sets = gpt_xrealloc(cfg->sets, (cfg->n_sets + n) * sizeof *cfg->sets);
    for (size_t i = 0; i < n; i++) cfg->sets[cfg->n_sets++] = labels[i];
    free(labels);
    return 0;
}

int gpt_config_set(gpt_config *cfg, const char *assignment, gpt_err *err)
{
    return gpt_config_set_all(cfg, &assignment, 1, err);
}

const gpt_ynode *gpt_config_node(const gpt_config *cfg, const char *key)
{
    return cfg && cfg->root ? gpt_ylookup(cfg->root, key) : NULL;
}

const char *gpt_config_get(const gpt_config *cfg, const char *key, int *line)
{
    const gpt_ynode *n = gpt_config_node(cfg, key);
    if (!n || n->kind != GPT_YSCALAR) return NULL;
    if (line) *line = n->line;
    return n->text;
}

/* ---- dump ---- */

static void put(gpt_ynode *map, const char *key, const char *text)
{
    gpt_ymap_put(map, key, 0, gpt_yscalar_new(text, 0, NULL, 0));
}

static void put_int(gpt_ynode *map, const char *key, long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    put(map, key, b);
}

/* The shortest decimal that reads back as exactly v (1e-05, not 1.0000000000000001e-05). */
static void put_float(gpt_ynode *map, const char *key, double v)
{
    char b[40];
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(b, sizeof b, "%.0f", v);
        put(map, key, b);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    put(map, key, b);
}

static void put_bool(gpt_ynode *map, const char *key, int v) { put(map, key, v ? "true" : "false"); }

static gpt_ynode *child(gpt_ynode *map, const char *key)
{
    gpt_ynode *c = gpt_ynode_new(GPT_YMAP, NULL, 0);
    gpt_ymap_put(map, key, 0, c);
    return c;
}

static gpt_ynode *model_tree(const gpt_model_config *m)
{
    gpt_ynode *t = gpt_ynode_new(GPT_YMAP, NULL, 0);
    put_int(t, "vocab_size", m->vocab_size);
    put_int(t, "padded_vocab_size", m->padded_vocab_size);
    put_int(t, "d_model", m->d_model);
    put_int(t, "n_layers", m->n_layers);
    put_int(t, "n_heads", m->n_heads);
    put_int(t, "n_kv_heads", m->n_kv_heads);
    put_int(t, "d_head", m->d_head);
    put_int(t, "max_seq_len", m->max_seq_len);
    put(t, "norm", gpt_norm_name(m->norm));
    put_float(t, "norm_eps", m->norm_eps);
    put(t, "positions", gpt_pos_name(m->positions));
    if (m->positions == GPT_POS_ROPE) {
        gpt_ynode *r = child(t, "rope");
        put_float(r, "theta", m->rope_theta);
        put(r, "scaling", gpt_rope_scaling_name(m->rope_scaling));
        if (m->rope_scaling == GPT_ROPE_SCALING_YARN) {
            put_float(r, "factor", m->yarn_factor);
            put_int(r, "original_max_seq_len", m->yarn_original_max_seq_len);
            put_float(r, "beta_fast", m->yarn_beta_fast);
            put_float(r, "beta_slow", m->yarn_beta_slow);
            put_bool(r, "truncate", m->yarn_truncate);
        }
    }
    gpt_ynode *a = child(t, "attention");
    put_bool(a, "bias", m->attn_bias);
    put_bool(a, "sinks", m->attn_sinks);
    put_int(a, "sliding_window", m->sliding_window);
    if (m->sliding_layers == GPT_SLIDING_LIST) {
        gpt_ynode *l = gpt_ynode_new(GPT_YSEQ, NULL, 0);
        for (int i = 0; i < m->n_layers; i++)
            if (m->sliding_mask[i / 64] >> (i % 64) & 1) {
                char b[16];
                snprintf(b, sizeof b, "%d", i);
                gpt_yseq_push(l, gpt_yscalar_new(b, 0, NULL, 0));
            }
        gpt_ymap_put(a, "sliding_window_layers", 0, l);
    } else {
        put(a, "sliding_window_layers", gpt_sliding_layers_name(m->sliding_layers));
    }
    gpt_ynode *f = child(t, "mlp");
    put(f, "type", gpt_mlp_name(m->mlp));
    put(f, "activation", gpt_activation_name(m->activation));
    put_bool(f, "bias", m->mlp_bias);
    if (m->mlp == GPT_MLP_DENSE) {
        put_int(f, "d_ff", m->d_ff);
    } else {
        put_int(f, "n_experts", m->n_experts);
        put_int(f, "experts_per_token", m->experts_per_token);
        put_int(f, "d_expert", m->d_expert);
        put_float(f, "router_aux_loss_coef", m->router_aux_loss_coef);
    }
    if (m->activation == GPT_ACT_SWIGLU) {
        put_float(f, "swiglu_alpha", m->swiglu_alpha);
        put_float(f, "swiglu_limit", m->swiglu_limit);
    }
    put_bool(t, "tie_embeddings", m->tie_embeddings);
    put_float(t, "init_std", m->init_std);
    return t;
}

int gpt_config_dump(const gpt_config *cfg, FILE *f, gpt_err *err)
{
    gpt_ynode *doc = gpt_ynode_new(GPT_YMAP, NULL, 0);
    /* a name YAML would read as null must stay a string */
    gpt_ynode *tok = gpt_yscalar_new(cfg->model.tokenizer, 0, NULL, 0);
    tok->quoted = gpt_ynode_is_null(tok);
    gpt_ymap_put(doc, "tokenizer", 0, tok);
    gpt_ymap_put(doc, "model", 0, model_tree(&cfg->model));
    for (size_t i = 0; cfg->root && cfg->root->kind == GPT_YMAP && i < cfg->root->n; i++) {
        const char *k = cfg->root->keys[i];
        if (strcmp(k, "tokenizer") != 0 && strcmp(k, "model") != 0)
            gpt_ymap_put(doc, k, 0, gpt_ynode_clone(cfg->root->items[i]));
    }
    fputs("# gpt model configuration (gpt-config(5)), every model value written out\n", f);
    int rc = gpt_ynode_write(doc, f, err);
    gpt_ynode_free(doc);
    return rc;
}

/* ---- comparisons ---- */

int gpt_model_config_equal(const gpt_model_config *a, const gpt_model_config *b)
{
#define EQ(f) (a->f == b->f)
    return strcmp(a->tokenizer, b->tokenizer) == 0 && EQ(vocab_size) && EQ(padded_vocab_size) && EQ(d_model) &&
           EQ(n_layers) && EQ(n_heads) && EQ(n_kv_heads) && EQ(d_head) && EQ(max_seq_len) && EQ(norm) &&
           EQ(norm_eps) && EQ(positions) && EQ(rope_theta) && EQ(rope_scaling) && EQ(yarn_factor) &&
           EQ(yarn_original_max_seq_len) && EQ(yarn_beta_fast) && EQ(yarn_beta_slow) && EQ(yarn_truncate) &&
           EQ(attn_bias) && EQ(attn_sinks) && EQ(sliding_window) && EQ(sliding_layers) &&
           memcmp(a->sliding_mask, b->sliding_mask, sizeof a->sliding_mask) == 0 && EQ(mlp) && EQ(activation) &&
           EQ(mlp_bias) && EQ(d_ff) && EQ(n_experts) && EQ(experts_per_token) && EQ(d_expert) && EQ(swiglu_alpha) &&
           EQ(swiglu_limit) && EQ(router_aux_loss_coef) && EQ(tie_embeddings) && EQ(init_std);
#undef EQ
}

int gpt_model_layer_window(const gpt_model_config *m, int layer)
{
    if (layer < 0 || layer >= m->n_layers || layer >= GPT_CONFIG_MAX_LAYERS) return 0;
    return (m->sliding_mask[layer / 64] >> (layer % 64) & 1) ? m->sliding_window : 0;
}
