/* hf_config.c: config.json <-> gpt_model_config. */
#include "hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

typedef struct sb {
    char *s;
    size_t n, cap;
} sb;

__attribute__((format(printf, 2, 3))) static void sbf(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + (size_t)k + 1 > b->cap) b->s = gpt_xrealloc(b->s, b->cap = (b->n + (size_t)k + 1) * 2);
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

/* A numeric key: -1 when absent or null (caller decides), -2 when present but not a number. */
static int num(const cJSON *o, const char *key, double *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!x || cJSON_IsNull(x)) return -1;
    if (!cJSON_IsNumber(x)) return -2;
    *v = x->valuedouble;
    return 0;
}

static int need_int(const cJSON *o, const char *key, const char *name, long long *v, gpt_err *err)
{
    double d;
    if (num(o, key, &d) < 0 || d != floor(d) || fabs(d) > 1e15)
        return gpt_errf(err, "%s: \"%s\" missing or not an integer", name, key);
    *v = (long long)d;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int def)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(x) ? cJSON_IsTrue(x) : def;
}

static int gpt_oss_yaml(const cJSON *j, const char *name, sb *y, gpt_err *err)
{
    long long V, C, L, H, KV, D, T, E, K, F, W = 0;
    if (need_int(j, "vocab_size", name, &V, err) < 0 || need_int(j, "hidden_size", name, &C, err) < 0 ||
        need_int(j, "num_hidden_layers", name, &L, err) < 0 || need_int(j, "num_attention_heads", name, &H, err) < 0 ||
        need_int(j, "num_key_value_heads", name, &KV, err) < 0 || need_int(j, "head_dim", name, &D, err) < 0 ||
        need_int(j, "max_position_embeddings", name, &T, err) < 0 ||
        need_int(j, "num_local_experts", name, &E, err) < 0 || need_int(j, "num_experts_per_tok", name, &K, err) < 0 ||
        need_int(j, "intermediate_size", name, &F, err) < 0)
        return -1;
    double eps = 1e-5, alpha = 1.702, limit = 7.0, aux = 0.9, theta = 150000;
    num(j, "rms_norm_eps", &eps);
    num(j, "swiglu_alpha", &alpha);
    num(j, "swiglu_limit", &limit);
    num(j, "router_aux_loss_coef", &aux);
    sbf(y, "model:\n  vocab_size: %lld\n  d_model: %lld\n  n_layers: %lld\n  n_heads: %lld\n  n_kv_heads: %lld\n"
           "  d_head: %lld\n  max_seq_len: %lld\n  norm: rmsnorm\n  norm_eps: %.17g\n  positions: rope\n  rope:\n",
        V, C, L, H, KV, D, T, eps);
    /* transformers 5 nests rope settings in rope_parameters; older configs use rope_scaling + rope_theta */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    if (!cJSON_IsObject(rp)) rp = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (num(rp, "rope_theta", &theta) < 0) num(j, "rope_theta", &theta);
    sbf(y, "    theta: %.17g\n", theta);
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
    if (!cJSON_IsString(rt)) rt = cJSON_GetObjectItemCaseSensitive(rp, "type");
    if (cJSON_IsString(rt) && strcmp(rt->valuestring, "yarn") == 0) {
        double factor = 1, bf = 32, bs = 1, orig = 4096;
        num(rp, "factor", &factor);
        num(rp, "beta_fast", &bf);
        num(rp, "beta_slow", &bs);
        num(rp, "original_max_position_embeddings", &orig);
        sbf(y, "    scaling: yarn\n    factor: %.17g\n    original_max_seq_len: %lld\n    beta_fast: %.17g\n"
               "    beta_slow: %.17g\n    truncate: %s\n",
            factor, (long long)orig, bf, bs, get_bool(rp, "truncate", 1) ? "true" : "false");
    } else if (cJSON_IsString(rt) && strcmp(rt->valuestring, "default") != 0) {
        return gpt_errf(err, "%s: rope type '%s' is not supported (yarn or default)", name, rt->valuestring);
    } else {
        sbf(y, "    scaling: none\n");
    }
    double w;
    if (num(j, "sliding_window", &w) == 0) W = (long long)w;
    sbf(y, "  attention:\n    bias: %s\n    sinks: true\n", get_bool(j, "attention_bias", 1) ? "true" : "false");
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(j, "layer_types");
    uint64_t mask[GPT_CONFIG_MAX_LAYERS / 64] = {0};
    int n = 0, nslide = 0;
    if (cJSON_IsArray(lt)) {
        const cJSON *e;
        if (cJSON_GetArraySize(lt) != L || L > GPT_CONFIG_MAX_LAYERS)
            return gpt_errf(err, "%s: layer_types has %d entries for %lld layers", name, cJSON_GetArraySize(lt), L);
        cJSON_ArrayForEach(e, lt)
        {
            if (!cJSON_IsString(e)) return gpt_errf(err, "%s: layer_types[%d] is not a string", name, n);
            if (strcmp(e->valuestring, "sliding_attention") == 0) {
                mask[n / 64] |= 1ull << (n % 64);
                nslide++;
            } else if (strcmp(e->valuestring, "full_attention") != 0)
                return gpt_errf(err, "%s: layer_types[%d] '%s' is not sliding_attention or full_attention", name, n,
                                e->valuestring);
            n++;
        }
    } else if (W > 0) { /* the gpt_oss default: even layers slide */
        for (n = 0; n < L && n < GPT_CONFIG_MAX_LAYERS; n++)
            if (n % 2 == 0) {
                mask[n / 64] |= 1ull << (n % 64);
                nslide++;
            }
    }
    int even = 1, odd = 1;
    for (int l = 0; l < L; l++) {
        int s = (int)(mask[l / 64] >> (l % 64) & 1);
        if (s != (l % 2 == 0)) even = 0;
        if (s != (l % 2 == 1)) odd = 0;
    }
    if (nslide == 0)
        sbf(y, "    sliding_window_layers: none\n");
    else {
        if (W > 0) sbf(y, "    sliding_window: %lld\n", W);
        if (nslide == L)
            sbf(y, "    sliding_window_layers: all\n");
        else if (even)
            sbf(y, "    sliding_window_layers: even\n");
        else if (odd)
            sbf(y, "    sliding_window_layers: odd\n");
        else {
            sbf(y, "    sliding_window_layers: [");
            for (int l = 0, first = 1; l < L; l++)
                if (mask[l / 64] >> (l % 64) & 1) {
                    sbf(y, "%s%d", first ? "" : ", ", l);
                    first = 0;
                }
            sbf(y, "]\n");
        }
    }
    sbf(y, "  mlp:\n    type: moe\n    activation: swiglu\n    n_experts: %lld\n    experts_per_token: %lld\n"
           "    d_expert: %lld\n    swiglu_alpha: %.17g\n    swiglu_limit: %.17g\n    bias: true\n"
           "    router_aux_loss_coef: %.17g\n  tie_embeddings: %s\n",
        E, K, F, alpha, limit, aux, get_bool(j, "tie_word_embeddings", 0) ? "true" : "false");
    return 0;
}

static int gpt2_yaml(const cJSON *j, const char *name, sb *y, gpt_err *err)
{
    long long V, C, L, H, T, F;
    if (need_int(j, "vocab_size", name, &V, err) < 0 || need_int(j, "n_embd", name, &C, err) < 0 ||
        need_int(j, "n_layer", name, &L, err) < 0 || need_int(j, "n_head", name, &H, err) < 0 ||
        need_int(j, "n_positions", name, &T, err) < 0)
        return -1;
    double d;
    F = num(j, "n_inner", &d) == 0 ? (long long)d : 4 * C;
    double eps = 1e-5;
    num(j, "layer_norm_epsilon", &eps);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "activation_function");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_new") != 0 && strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)
        return gpt_errf(err, "%s: activation_function '%s' is not supported (gelu_new)", name, act->valuestring);
    sbf(y, "model:\n  vocab_size: %lld\n  d_model: %lld\n  n_layers: %lld\n  n_heads: %lld\n  max_seq_len: %lld\n"
           "  norm: layernorm\n  norm_eps: %.17g\n  positions: learned\n  attention:\n    bias: true\n"
           "  mlp:\n    type: dense\n    activation: gelu_tanh\n    d_ff: %lld\n  tie_embeddings: %s\n",
        V, C, L, H, T, eps, F, get_bool(j, "tie_word_embeddings", 1) ? "true" : "false");
    return 0;
}

int gpt_hf_config_parse(const char *json, size_t n, const char *name, const char *tokenizer, gpt_model_config *out,
                        gpt_err *err)
{
    cJSON *j = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return gpt_errf(err, "%s: not a JSON object", name);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    sb y = {0};
    int rc;
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "gpt_oss") == 0) {
        sbf(&y, "tokenizer: \"%s\"\n", tokenizer ? tokenizer : "o200k_harmony");
        rc = gpt_oss_yaml(j, name, &y, err);
    } else if (cJSON_IsString(mt) && strcmp(mt->valuestring, "gpt2") == 0) {
        sbf(&y, "tokenizer: \"%s\"\n", tokenizer ? tokenizer : "gpt2");
        rc = gpt2_yaml(j, name, &y, err);
    } else {
        rc = gpt_errf(err, "%s: model_type %s%s%s is not supported (gpt_oss or gpt2)", name,
                      cJSON_IsString(mt) ? "'" : "", cJSON_IsString(mt) ? mt->valuestring : "(missing)",
                      cJSON_IsString(mt) ? "'" : "");
    }
    cJSON_Delete(j);
    if (rc == 0) {
        gpt_config c;
        rc = gpt_config_load_mem(y.s, y.n, name, &c, err);
        if (rc == 0) {
            *out = c.model;
            gpt_config_free(&c);
        } else
            gpt_err_prefix(err, "mapping config.json to gpt-config(5): ");
    }
    free(y.s);
    return rc;
}

int gpt_hf_config_read(const char *path, const char *tokenizer, gpt_model_config *out, gpt_err *err)
{
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) < 0) return -1;
    int rc = gpt_hf_config_parse((const char *)b.data, b.size, path, tokenizer, out, err);
    gpt_blob_free(&b);
    return rc;
}

/* ModelConfig of gpt_oss/torch/model.py (openai/gpt-oss): key, default, integer or not */
static const struct {
    const char *key;
    double def;
    int integer;
} openai_keys[] = {
    {"num_hidden_layers", 36, 1},     {"num_experts", 128, 1},        {"experts_per_token", 4, 1},
    {"vocab_size", 201088, 1},        {"hidden_size", 2880, 1},       {"intermediate_size", 2880, 1},
    {"swiglu_limit", 7.0, 0},         {"head_dim", 64, 1},            {"num_attention_heads", 64, 1},
    {"num_key_value_heads", 8, 1},    {"sliding_window", 128, 1},     {"initial_context_length", 4096, 1},
    {"rope_theta", 150000.0, 0},      {"rope_scaling_factor", 32.0, 0}, {"rope_ntk_alpha", 1.0, 0},
    {"rope_ntk_beta", 32.0, 0},
};
enum { OA_N = sizeof openai_keys / sizeof openai_keys[0] };

int gpt_openai_config_parse(const char *json, size_t n, const char *name, const char *tokenizer, gpt_model_config *out,
                            gpt_err *err)
{
    cJSON *j = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return gpt_errf(err, "%s: not a JSON object", name);
    }
    double v[OA_N];
    int rc = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        int known = 0;
        for (int i = 0; i < OA_N; i++) known |= strcmp(e->string, openai_keys[i].key) == 0;
        if (!known) {
            rc = gpt_errf(err, "%s: unknown key \"%s\" (OpenAI's gpt-oss config.json has only ModelConfig's keys; "
                               "for a Hugging Face config.json use --from hf, or pass --config)", name, e->string);
            break;
        }
    }
    for (int i = 0; i < OA_N && rc == 0; i++) {
        v[i] = openai_keys[i].def;
        int r = num(j, openai_keys[i].key, &v[i]);
        if (r == -2 || (r == 0 && ((openai_keys[i].integer && (v[i] != floor(v[i]) || v[i] < 0 || v[i] > 1e9)) || !isfinite(v[i]))))
            rc = gpt_errf(err, "%s: \"%s\" must be %s", name, openai_keys[i].key,
                          openai_keys[i].integer ? "a non-negative integer" : "a number");
    }
    cJSON_Delete(j);
    if (rc < 0) return -1;
    double factor = v[13], ctx = v[11];
    if (!(factor >= 1.0) || factor > 1e6) return gpt_errf(err, "%s: rope_scaling_factor %g must be >= 1", name, factor);
    /* the same model as a Hugging Face config, so that one mapping (and its checks) serves both */
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "model_type", "gpt_oss");
    cJSON_AddNumberToObject(h, "num_hidden_layers", v[0]);
    cJSON_AddNumberToObject(h, "num_local_experts", v[1]);
    cJSON_AddNumberToObject(h, "num_experts_per_tok", v[2]);
    cJSON_AddNumberToObject(h, "vocab_size", v[3]);
    cJSON_AddNumberToObject(h, "hidden_size", v[4]);
    cJSON_AddNumberToObject(h, "intermediate_size", v[5]);
    cJSON_AddNumberToObject(h, "swiglu_limit", v[6]);
    cJSON_AddNumberToObject(h, "swiglu_alpha", 1.702);
    cJSON_AddNumberToObject(h, "head_dim", v[7]);
    cJSON_AddNumberToObject(h, "num_attention_heads", v[8]);
    cJSON_AddNumberToObject(h, "num_key_value_heads", v[9]);
    cJSON_AddNumberToObject(h, "sliding_window", v[10]); /* even layers; 0 means none (gpt_oss_yaml) */
    cJSON_AddNumberToObject(h, "max_position_embeddings", factor > 1.0 ? floor(ctx * factor) : ctx);
    cJSON_AddNumberToObject(h, "rms_norm_eps", 1e-5);
    cJSON_AddBoolToObject(h, "attention_bias", 1);
    cJSON_AddBoolToObject(h, "tie_word_embeddings", 0);
    cJSON *rp = cJSON_AddObjectToObject(h, "rope_parameters");
    cJSON_AddNumberToObject(rp, "rope_theta", v[12]);
    if (factor > 1.0) {
        cJSON_AddStringToObject(rp, "rope_type", "yarn");
        cJSON_AddNumberToObject(rp, "factor", factor);
        cJSON_AddNumberToObject(rp, "original_max_position_embeddings", ctx);
        cJSON_AddNumberToObject(rp, "beta_fast", v[15]);
        cJSON_AddNumberToObject(rp, "beta_slow", v[14]);
        cJSON_AddBoolToObject(rp, "truncate", 0); /* model.py computes the ramp from unrounded bounds */
    } else {
        cJSON_AddStringToObject(rp, "rope_type", "default");
    }
    char *s = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    rc = gpt_hf_config_parse(s, strlen(s), name, tokenizer, out, err);
    free(s);
    return rc;
}

int gpt_openai_config_read(const char *path, const char *tokenizer, gpt_model_config *out, gpt_err *err)
{
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) < 0) return -1;
    int rc = gpt_openai_config_parse((const char *)b.data, b.size, path, tokenizer, out, err);
    gpt_blob_free(&b);
    return rc;
}

/* transformers validates float fields strictly: 7.0 must not be written as 7 */
static void add_float(cJSON *o, const char *key, double v)
{
    char b[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    if (!strpbrk(b, ".eEni")) strcat(b, ".0");
    cJSON_AddRawToObject(o, key, b);
}

char *gpt_hf_config_json(const gpt_model_config *m, const char *dtype, gpt_err *err)
{
    cJSON *j = cJSON_CreateObject();
    int gpt2 = m->positions == GPT_POS_LEARNED;
    if (gpt2) {
        cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"GPT2LMHeadModel"}, 1));
        cJSON_AddStringToObject(j, "model_type", "gpt2");
        cJSON_AddStringToObject(j, "activation_function", "gelu_new");
        cJSON_AddNumberToObject(j, "vocab_size", m->vocab_size);
        cJSON_AddNumberToObject(j, "n_embd", m->d_model);
        cJSON_AddNumberToObject(j, "n_layer", m->n_layers);
        cJSON_AddNumberToObject(j, "n_head", m->n_heads);
        cJSON_AddNumberToObject(j, "n_positions", m->max_seq_len);
        cJSON_AddNumberToObject(j, "n_inner", m->d_ff);
        add_float(j, "layer_norm_epsilon", m->norm_eps);
        for (const char *const *k = (const char *const[]){"attn_pdrop", "embd_pdrop", "resid_pdrop", NULL}; *k; k++)
            add_float(j, *k, 0.0);
    } else {
        cJSON_AddItemToObject(j, "architectures", cJSON_CreateStringArray((const char *[]){"GptOssForCausalLM"}, 1));
        cJSON_AddStringToObject(j, "model_type", "gpt_oss");
        cJSON_AddNumberToObject(j, "vocab_size", m->vocab_size);
        cJSON_AddNumberToObject(j, "hidden_size", m->d_model);
        cJSON_AddNumberToObject(j, "num_hidden_layers", m->n_layers);
        cJSON_AddNumberToObject(j, "num_attention_heads", m->n_heads);
        cJSON_AddNumberToObject(j, "num_key_value_heads", m->n_kv_heads);
        cJSON_AddNumberToObject(j, "head_dim", m->d_head);
        cJSON_AddNumberToObject(j, "max_position_embeddings", m->max_seq_len);
        add_float(j, "rms_norm_eps", m->norm_eps);
        cJSON_AddBoolToObject(j, "attention_bias", m->attn_bias);
        add_float(j, "attention_dropout", 0.0);
        cJSON_AddNumberToObject(j, "sliding_window", m->sliding_window);
        cJSON *lt = cJSON_AddArrayToObject(j, "layer_types");
        for (int l = 0; l < m->n_layers; l++)
            cJSON_AddItemToArray(lt, cJSON_CreateString(gpt_model_layer_window(m, l) ? "sliding_attention" : "full_attention"));
        cJSON *rp = cJSON_AddObjectToObject(j, "rope_parameters");
        add_float(rp, "rope_theta", m->rope_theta);
        if (m->rope_scaling == GPT_ROPE_SCALING_YARN) {
            cJSON_AddStringToObject(rp, "rope_type", "yarn");
            add_float(rp, "factor", m->yarn_factor);
            cJSON_AddNumberToObject(rp, "original_max_position_embeddings", m->yarn_original_max_seq_len);
            add_float(rp, "beta_fast", m->yarn_beta_fast);
            add_float(rp, "beta_slow", m->yarn_beta_slow);
            cJSON_AddBoolToObject(rp, "truncate", m->yarn_truncate);
        } else {
            cJSON_AddStringToObject(rp, "rope_type", "default");
        }
        cJSON_AddNumberToObject(j, "num_local_experts", m->n_experts);
        cJSON_AddNumberToObject(j, "num_experts_per_tok", m->experts_per_token);
        cJSON_AddNumberToObject(j, "intermediate_size", m->d_expert);
        add_float(j, "swiglu_alpha", m->swiglu_alpha);
        add_float(j, "swiglu_limit", m->swiglu_limit);
        add_float(j, "router_aux_loss_coef", m->router_aux_loss_coef);
        cJSON_AddBoolToObject(j, "output_router_logits", 0);
        cJSON_AddStringToObject(j, "hidden_act", "silu");
    }
    cJSON_AddItemToObject(j, "bos_token_id", cJSON_CreateNull());
    cJSON_AddItemToObject(j, "eos_token_id", cJSON_CreateNull());
    cJSON_AddItemToObject(j, "pad_token_id", cJSON_CreateNull());
    cJSON_AddBoolToObject(j, "tie_word_embeddings", m->tie_embeddings);
    add_float(j, "initializer_range", m->init_std);
    cJSON_AddStringToObject(j, "dtype", dtype);
    cJSON_AddBoolToObject(j, "use_cache", 1);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    /* the exactness check: what transformers will build must be this very model */
    gpt_model_config back;
    if (gpt_hf_config_parse(s, strlen(s), "config.json", m->tokenizer, &back, NULL) < 0 ||
        (back.init_std = m->init_std, back.padded_vocab_size = m->padded_vocab_size, !gpt_model_config_equal(&back, m))) {
        gpt_errf(err, "this model config has no exact Hugging Face equivalent (gpt_oss: rmsnorm, rope, MoE with "
                      "swiglu and biases, sinks; gpt2: layernorm, learned positions, dense gelu_tanh)");
        free(s);
        return NULL;
    }
    return s;
}
