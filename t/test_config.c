/* test_config.c: model configuration files (lib/config.h).
 *
 * Presets are checked against t/data/config/hf-defaults.txt, which scripts/make-config-fixture.py
 * writes from Hugging Face transformers' GptOssConfig / GPT2Config. Bad configs in t/data/config
 * carry "# expect: TEXT" and mark the offending line with "#<"; the error must read
 * "FILE:LINE: TEXT...". Run from the repository root (prove does). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

static const char *const DIRS[] = {"share/configs", NULL};
static const char *const PRESETS[] = {"gpt-oss-120b", "gpt-oss-20b", "gpt2-124m",    "gpt2-350m",
                                      "gpt2-774m",    "gpt2-1558m",  "tiny-gpt2",    "tiny-gpt-oss"};
#define N_PRESETS (sizeof PRESETS / sizeof PRESETS[0])

static int contains(const char *s, const char *sub) { return s && sub && strstr(s, sub) != NULL; }

/* Our value for a dotted key, as text the fixture can be compared with. 0 if the key is unknown. */
static int model_value(const gpt_config *c, const char *key, char *buf, size_t n)
{
    const gpt_model_config *m = &c->model;
#define I(k, f) if (strcmp(key, k) == 0) return snprintf(buf, n, "%d", m->f), 1
#define F(k, f) if (strcmp(key, k) == 0) return snprintf(buf, n, "%.17g", m->f), 1
#define B(k, f) if (strcmp(key, k) == 0) return snprintf(buf, n, "%s", m->f ? "true" : "false"), 1
#define S(k, v) if (strcmp(key, k) == 0) return snprintf(buf, n, "%s", v), 1
    I("model.vocab_size", vocab_size);
    I("model.padded_vocab_size", padded_vocab_size);
    I("model.d_model", d_model);
    I("model.n_layers", n_layers);
    I("model.n_heads", n_heads);
    I("model.n_kv_heads", n_kv_heads);
    I("model.d_head", d_head);
    I("model.max_seq_len", max_seq_len);
    S("model.norm", gpt_norm_name(m->norm));
    F("model.norm_eps", norm_eps);
    S("model.positions", gpt_pos_name(m->positions));
    F("model.rope.theta", rope_theta);
    S("model.rope.scaling", gpt_rope_scaling_name(m->rope_scaling));
    F("model.rope.factor", yarn_factor);
    I("model.rope.original_max_seq_len", yarn_original_max_seq_len);
    F("model.rope.beta_fast", yarn_beta_fast);
    F("model.rope.beta_slow", yarn_beta_slow);
    B("model.rope.truncate", yarn_truncate);
    B("model.attention.bias", attn_bias);
    B("model.attention.sinks", attn_sinks);
    I("model.attention.sliding_window", sliding_window);
    S("model.attention.sliding_window_layers", gpt_sliding_layers_name(m->sliding_layers));
    S("model.mlp.type", gpt_mlp_name(m->mlp));
    S("model.mlp.activation", gpt_activation_name(m->activation));
    I("model.mlp.d_ff", d_ff);
    B("model.mlp.bias", mlp_bias);
    I("model.mlp.n_experts", n_experts);
    I("model.mlp.experts_per_token", experts_per_token);
    I("model.mlp.d_expert", d_expert);
    F("model.mlp.swiglu_alpha", swiglu_alpha);
    F("model.mlp.swiglu_limit", swiglu_limit);
    F("model.mlp.router_aux_loss_coef", router_aux_loss_coef);
    B("model.tie_embeddings", tie_embeddings);
    F("model.init_std", init_std);
#undef I
#undef F
#undef B
#undef S
    return 0;
}

static int same_value(const char *a, const char *b)
{
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    if (ea != a && !*ea && eb != b && !*eb) return x == y;
    return strcmp(a, b) == 0;
}

static void test_presets(void)
{
    gpt_config cfg[N_PRESETS];
    gpt_err err = {{0}};
    for (size_t i = 0; i < N_PRESETS; i++) {
        int rc = gpt_config_load_dirs(PRESETS[i], DIRS, &cfg[i], &err);
        if (!ok(rc == 0, "preset %s loads", PRESETS[i])) diag("%s", err.msg);
    }

    FILE *f = fopen("t/data/config/hf-defaults.txt", "r");
    if (!ok(f != NULL, "hf-defaults.txt present")) return;
    char line[512];
    int seen[N_PRESETS] = {0}, mismatches = 0, unknown = 0, lines = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char preset[64], key[128], want[128], got[128];
        if (sscanf(line, "%63s %127s %127s", preset, key, want) != 3) continue;
        lines++;
        size_t p = 0;
        while (p < N_PRESETS && strcmp(PRESETS[p], preset) != 0) p++;
        if (p == N_PRESETS || !cfg[p].root) {
            diag("fixture names unknown preset %s", preset);
            unknown++;
            continue;
        }
        seen[p]++;
        if (!model_value(&cfg[p], key, got, sizeof got)) {
            diag("fixture key %s not known to the test", key);
            unknown++;
        } else if (!same_value(got, want)) {
            diag("%s %s: ours %s, transformers %s", preset, key, got, want);
            mismatches++;
        }
    }
    fclose(f);
    ok(lines > 100 && unknown == 0, "fixture read (%d values)", lines);
    is_int(mismatches, 0, "every preset value equals what transformers gives");
    for (size_t i = 0; i < 6; i++) ok(seen[i] >= 15, "%s compared on %d values", PRESETS[i], seen[i]);

    /* padding: a multiple of 128 at or above the vocabulary */
    for (size_t i = 0; i < N_PRESETS; i++) {
        const gpt_model_config *m = &cfg[i].model;
        if (!cfg[i].root) continue;
        ok(m->padded_vocab_size >= m->vocab_size && m->padded_vocab_size % 128 == 0 &&
               m->padded_vocab_size - m->vocab_size < 128,
           "%s padded vocab %d", PRESETS[i], m->padded_vocab_size);
    }
    is_int(cfg[2].model.padded_vocab_size, 50304, "gpt2-124m pads 50257 to 50304");
    is_str(cfg[1].model.tokenizer, "o200k_harmony", "gpt-oss uses o200k_harmony");
    is_str(cfg[2].model.tokenizer, "gpt2", "gpt2 uses the gpt2 encoding");

    /* gpt-oss layer_types: sliding, full, sliding, ... */
    const gpt_model_config *o = &cfg[1].model;
    int pattern = 1;
    for (int l = 0; l < o->n_layers; l++) pattern &= gpt_model_layer_window(o, l) == (l % 2 == 0 ? 128 : 0);
    ok(pattern, "gpt-oss-20b: window 128 on even layers, full attention on odd");
    is_int(gpt_model_layer_window(o, o->n_layers), 0, "layer past the end has no window");
    is_int(gpt_model_layer_window(&cfg[2].model, 0), 0, "gpt2 has no sliding window");

    /* tiny configs exercise what later fixtures need */
    const gpt_model_config *t = &cfg[7].model;
    ok(t->attn_sinks && t->sliding_window > 0 && t->sliding_window < 64 && t->mlp == GPT_MLP_MOE &&
           t->experts_per_token < t->n_experts && t->rope_scaling == GPT_ROPE_SCALING_YARN &&
           t->n_kv_heads < t->n_heads && t->n_layers >= 2 && t->n_heads * t->d_head != t->d_model,
       "tiny-gpt-oss: sinks, short window, MoE k<E, YaRN, GQA, q width != d_model");
    t = &cfg[6].model;
    ok(t->positions == GPT_POS_LEARNED && t->norm == GPT_NORM_LAYERNORM && t->tie_embeddings &&
           t->mlp == GPT_MLP_DENSE && t->d_model <= 128,
       "tiny-gpt2: small GPT-2 architecture");

    for (size_t i = 0; i < N_PRESETS; i++) gpt_config_free(&cfg[i]);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_bad_configs(void)
{
    DIR *d = opendir("t/data/config");
    if (!ok(d != NULL, "t/data/config readable")) return;
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        if (strncmp(e->d_name, "bad-", 4) == 0) names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    ok(n >= 40, "%zu bad configs", n);
    for (size_t i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "t/data/config/%s", names[i]);
        char *text = slurp(path);
        char expect[256] = "";
        int line = 0, ln = 1;
        for (char *p = text; p && *p; ln++) {
            char *nl = strchr(p, '\n');
            size_t l = nl ? (size_t)(nl - p) : strlen(p);
            if (strncmp(p, "# expect: ", 10) == 0 && l - 10 < sizeof expect) {
                memcpy(expect, p + 10, l - 10);
                expect[l - 10] = '\0';
            }
            if (memmem(p, l, "#<", 2)) line = ln;
            p = nl ? nl + 1 : p + l;
        }
        free(text);
        char want[1024];
        snprintf(want, sizeof want, "%s:%d: %s", path, line, expect);
        gpt_config cfg;
        gpt_err err = {{0}};
        int rc = gpt_config_load_dirs(path, NULL, &cfg, &err);
        if (!ok(rc < 0 && contains(err.msg, want), "%s rejected: %s", names[i], err.msg))
            diag("want the message to contain \"%s\"", want);
        if (rc == 0) gpt_config_free(&cfg);
        ok(cfg.root == NULL && cfg.source == NULL, "%s: nothing left to free", names[i]);
        free(names[i]);
    }
}

static char *dump_str(const gpt_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    gpt_err err = {{0}};
    int rc = gpt_config_dump(cfg, f, &err);
    fclose(f);
    if (rc < 0) {
        diag("dump: %s", err.msg);
        free(buf);
        return NULL;
    }
    return buf;
}

/* dump -> load gives an equal model and an identical second dump */
static void round_trip(const gpt_config *cfg, const char *what)
{
    char *a = dump_str(cfg);
    gpt_config back;
    gpt_err err = {{0}};
    int rc = a ? gpt_config_load_mem(a, strlen(a), "dump", &back, &err) : -1;
    if (!ok(rc == 0, "%s: dump loads back", what)) {
        diag("%s", err.msg);
        if (a) diag("%s", a);
        free(a);
        return;
    }
    ok(gpt_model_config_equal(&cfg->model, &back.model), "%s: round trip equal", what);
    char *b = dump_str(&back);
    ok(b && strcmp(a, b) == 0, "%s: second dump identical", what);
    free(a);
    free(b);
    gpt_config_free(&back);
}

static void test_round_trip(void)
{
    for (size_t i = 0; i < N_PRESETS; i++) {
        gpt_config cfg;
        gpt_err err = {{0}};
        if (gpt_config_load_dirs(PRESETS[i], DIRS, &cfg, &err) < 0) {
            ok(0, "%s: %s", PRESETS[i], err.msg);
            continue;
        }
        round_trip(&cfg, PRESETS[i]);
        gpt_config_free(&cfg);
    }
    static const char text[] = "# defaults everywhere, an explicit layer list, and later sections\n"
                               "tokenizer: \"null\"\n"
                               "model:\n"
                               "  vocab_size: 100\n"
                               "  d_model: 48\n"
                               "  n_layers: 5\n"
                               "  n_heads: 3\n"
                               "  max_seq_len: 32\n"
                               "  positions: rope\n"
                               "  norm_eps: 0.1\n"
                               "  attention: {sliding_window: 4, sliding_window_layers: [4, 1]}\n"
                               "  mlp: {activation: swiglu, swiglu_limit: 1e300}\n"
                               "train:\n"
                               "  lr: 3.0e-4\n"
                               "  schedule: {warmup: 10, kind: 'cosine: half'}\n"
                               "  note: \"a: b # c\"\n"
                               "  empty:\n"
                               "generate:\n"
                               "parallel: {}\n";
    gpt_config cfg;
    gpt_err err = {{0}};
    int rc = gpt_config_load_mem(text, strlen(text), "mem.yaml", &cfg, &err);
    if (!ok(rc == 0, "defaults config loads")) {
        diag("%s", err.msg);
        return;
    }
    const gpt_model_config *m = &cfg.model;
    is_int(m->padded_vocab_size, 128, "padded default rounds 100 up to 128");
    is_int(m->d_head, 16, "d_head derived as d_model / n_heads");
    is_int(m->n_kv_heads, 3, "n_kv_heads defaults to n_heads");
    is_int(m->d_ff, 4 * 48, "d_ff defaults to 4 * d_model");
    ok(m->norm == GPT_NORM_LAYERNORM && m->attn_bias && !m->attn_sinks && m->tie_embeddings && m->mlp_bias &&
           m->init_std == 0.02 && m->rope_theta == 10000.0 && m->rope_scaling == GPT_ROPE_SCALING_NONE,
       "documented defaults");
    ok(m->swiglu_alpha == 1.702 && m->swiglu_limit == 1e300, "swiglu defaults and overrides");
    ok(m->sliding_layers == GPT_SLIDING_LIST && gpt_model_layer_window(m, 1) == 4 &&
           gpt_model_layer_window(m, 4) == 4 && gpt_model_layer_window(m, 0) == 0 && gpt_model_layer_window(m, 2) == 0,
       "explicit sliding layer list");
    is_str(m->tokenizer, "null", "quoted \"null\" is a name, not null");
    int line = -1;
    is_str(gpt_config_get(&cfg, "train.lr", &line), "3.0e-4", "train.lr stored as written");
    is_int(line, 14, "train.lr line");
    is_str(gpt_config_get(&cfg, "train.schedule.kind", &line), "cosine: half", "nested train value");
    is_int(line, 15, "nested train value line");
    ok(gpt_config_get(&cfg, "train.schedule", NULL) == NULL, "a mapping is not a scalar");
    ok(gpt_config_get(&cfg, "train.nope", NULL) == NULL && gpt_config_get(&cfg, "train..lr", NULL) == NULL &&
           gpt_config_get(&cfg, "train.", NULL) == NULL,
       "absent and malformed keys give NULL");

    /* the typed helpers later sections use */
    const gpt_ynode *train = gpt_config_node(&cfg, "train");
    double lr = 0;
    int64_t warm = 0;
    ok(gpt_yget_float(train, "train", "lr", 0, 1, 1, &lr, &err) == 1 && lr == 3e-4, "train.lr as a number");
    ok(gpt_yget_int(gpt_config_node(&cfg, "train.schedule"), "train.schedule", "warmup", 0, 100, &warm, &err) == 1 &&
           warm == 10,
       "train.schedule.warmup as an integer");
    ok(gpt_yget_int(train, "train", "note", 0, 100, &warm, &err) < 0 && contains(err.msg, "mem.yaml:16: train.note"),
       "typed read error names file:line and key: %s", err.msg);
    ok(gpt_yget_float(train, "train", "empty", 0, 0, 1, &lr, &err) < 0 && contains(err.msg, "mem.yaml:17: train.empty"),
       "null value is an error: %s", err.msg);
    ok(gpt_yget_float(train, "train", "absent", 0, 0, 1, &lr, &err) == 0, "absent key reads as 0");
    static const char *const known[] = {"lr", "schedule", "note", NULL};
    ok(gpt_ymap_check_keys(train, "train", known, &err) < 0 && contains(err.msg, "mem.yaml:17: train.empty: unknown key"),
       "check_keys names the unknown key: %s", err.msg);

    round_trip(&cfg, "defaults config");
    char *d = dump_str(&cfg);
    ok(d && contains(d, "sliding_window_layers: [1, 4]") && contains(d, "lr: 3.0e-4") && contains(d, "parallel: {}"),
       "dump writes the list and keeps other sections");
    free(d);
    gpt_config_free(&cfg);

    rc = gpt_config_load_mem(NULL, 0, "empty.yaml", &cfg, &err);
    ok(rc < 0 && contains(err.msg, "empty.yaml:1: model: required section missing"), "empty file: %s", err.msg);
}

static void test_set(void)
{
    gpt_config cfg;
    gpt_err err = {{0}};
    if (gpt_config_load_dirs("gpt-oss-20b", DIRS, &cfg, &err) < 0) {
        ok(0, "load: %s", err.msg);
        return;
    }
    gpt_model_config orig = cfg.model;

    ok(gpt_config_set(&cfg, "model.n_layers=2", &err) == 0 && cfg.model.n_layers == 2, "--set model.n_layers=2");
    ok(!gpt_model_config_equal(&orig, &cfg.model), "the config changed");
    ok(gpt_model_layer_window(&cfg.model, 0) == 128 && gpt_model_layer_window(&cfg.model, 1) == 0 &&
           cfg.model.sliding_mask[0] == 1,
       "sliding mask recomputed for 2 layers");

    gpt_model_config before = cfg.model;
    int rc = gpt_config_set(&cfg, "model.mlp.n_experts=2", &err);
    ok(rc < 0 && contains(err.msg, "--set model.mlp.n_experts=2: model.mlp.n_experts: must be >= experts_per_token (4), got 2"),
       "--set validates: %s", err.msg);
    ok(gpt_model_config_equal(&before, &cfg.model) && cfg.model.n_experts == 32, "failed --set leaves config unchanged");
    int line = 0;
    ok(gpt_config_get(&cfg, "model.mlp.n_experts", &line) && strcmp(gpt_config_get(&cfg, "model.mlp.n_experts", NULL), "32") == 0 && line > 0,
       "failed --set leaves the tree unchanged");

    rc = gpt_config_set(&cfg, "model.n_layer=2", &err);
    ok(rc < 0 && contains(err.msg, "model.n_layer: unknown key"), "--set unknown key: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.n_heads=7", &err);
    ok(rc < 0 && contains(err.msg, "with --set model.n_heads=7: share/configs/gpt-oss-20b.yaml:") &&
           contains(err.msg, "model.n_kv_heads: must divide n_heads (7), got 8"),
       "--set error found elsewhere cites both: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.d_model=", &err);
    ok(rc < 0 && contains(err.msg, "with --set model.d_model=: share/configs/gpt-oss-20b.yaml:") &&
           contains(err.msg, "model.d_model: required key missing"),
       "--set KEY= removes a key, here a required one: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.norm_eps='", &err);
    ok(rc < 0 && contains(err.msg, "--set model.norm_eps='"), "--set unterminated quote: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.norm_eps=1e-6 ", &err);
    ok(rc < 0 && contains(err.msg, "model.norm_eps"), "--set trailing junk: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.mlp.type=dense", &err);
    ok(rc < 0 && contains(err.msg, "only valid when model.mlp.type is moe"), "--set to a variant with leftover keys: %s",
       err.msg);
    rc = gpt_config_set(&cfg, "foo.bar=1", &err);
    ok(rc < 0 && contains(err.msg, "foo: unknown key"), "--set unknown section: %s", err.msg);
    rc = gpt_config_set(&cfg, "model.n_layers.x=1", &err);
    ok(rc < 0 && contains(err.msg, "model.n_layers is not a mapping"), "--set through a scalar: %s", err.msg);
    ok(gpt_config_set(&cfg, "n_layers", &err) < 0 && contains(err.msg, "KEY=VALUE"), "--set without '='");
    ok(gpt_config_set(&cfg, "model..n_layers=2", &err) < 0 && contains(err.msg, "bad key"), "--set bad key");
    ok(gpt_config_set(&cfg, "model.n_layers=[1", &err) < 0 && contains(err.msg, "YAML syntax error"),
       "--set bad YAML value: %s", err.msg);
    ok(gpt_config_set(&cfg, "train.x=\xff", &err) < 0 && contains(err.msg, "train.x: value is not valid UTF-8") &&
           gpt_config_set(&cfg, "train.x=\xc0\x80", &err) < 0 && gpt_config_set(&cfg, "train.x=\xed\xa0\x80", &err) < 0,
       "--set rejects malformed UTF-8: %s", err.msg);
    ok(gpt_config_set(&cfg, "train.x=caf\xc3\xa9 \xf0\x9f\x98\x80", &err) == 0, "--set accepts UTF-8");
    char deep[200] = "train";
    for (int i = 0; i < 32; i++) strcat(deep, ".a");
    strcat(deep, "=1");
    ok(gpt_config_set(&cfg, deep, &err) < 0 && contains(err.msg, "nested deeper"), "--set too deep: %s", err.msg);
    ok(gpt_model_config_equal(&before, &cfg.model), "failed --sets change nothing");

    ok(gpt_config_set(&cfg, "model.n_layers=4", &err) == 0 &&
           gpt_config_set(&cfg, "model.attention.sliding_window_layers=[1, 3]", &err) == 0 &&
           cfg.model.sliding_layers == GPT_SLIDING_LIST && cfg.model.sliding_mask[0] == 0xa,
       "--set a list value");
    rc = gpt_config_set(&cfg, "model.n_layers=3", &err);
    ok(rc < 0 && contains(err.msg, "model.attention.sliding_window_layers: layer 3 is out of range"),
       "--set re-validates other keys: %s", err.msg);
    ok(gpt_config_set(&cfg, "model.attention.sliding_window_layers=odd", &err) == 0 && cfg.model.sliding_mask[0] == 0xa &&
           cfg.model.sliding_layers == GPT_SLIDING_ODD,
       "--set a pattern");
    ok(gpt_config_set(&cfg, "tokenizer=o200k_base", &err) == 0 && strcmp(cfg.model.tokenizer, "o200k_base") == 0,
       "--set tokenizer");
    ok(gpt_config_set(&cfg, "train.lr=3e-4", &err) == 0, "--set a train key");
    const char *lr = gpt_config_get(&cfg, "train.lr", &line);
    ok(lr && strcmp(lr, "3e-4") == 0 && line == 0, "train.lr from --set has line 0");
    ok(gpt_yget_int(gpt_config_node(&cfg, "train"), "train", "lr", 0, 9, &(int64_t){0}, &err) < 0 &&
           contains(err.msg, "--set train.lr=3e-4: train.lr: expected an integer"),
       "later errors on --set values cite the --set: %s", err.msg);
    ok(gpt_config_set(&cfg, "model.rope.theta=\"5e5\"", &err) == 0 && cfg.model.rope_theta == 5e5,
       "--set quoted value");
    ok(gpt_config_set(&cfg, "model.attention.sinks=off", &err) == 0 && !cfg.model.attn_sinks, "--set sinks=off");
    ok(gpt_config_set(&cfg, "model.norm_eps=1e-6", &err) == 0 && cfg.model.norm_eps == 1e-6 &&
           gpt_config_set(&cfg, "model.norm_eps=", &err) == 0 && cfg.model.norm_eps == 1e-5,
       "--set KEY= restores the default");
    ok(gpt_config_set(&cfg, "model.nothing.here=", &err) == 0 && gpt_config_node(&cfg, "model.nothing") == NULL,
       "removing an absent key is harmless");
    /* switching variants: one --set at a time fails, as a batch it works */
    rc = gpt_config_set(&cfg, "model.positions=learned", &err);
    ok(rc < 0 && contains(err.msg, "model.rope: only valid when model.positions is rope"), "variant switch alone: %s",
       err.msg);
    static const char *const sw[] = {"model.positions=learned", "model.rope=", "model.mlp.type=dense",
                                     "model.mlp.n_experts=", "model.mlp.experts_per_token=", "model.mlp.d_expert=",
                                     "model.mlp.router_aux_loss_coef="};
    rc = gpt_config_set_all(&cfg, sw, sizeof sw / sizeof sw[0], &err);
    ok(rc == 0 && cfg.model.positions == GPT_POS_LEARNED && cfg.model.mlp == GPT_MLP_DENSE &&
           cfg.model.activation == GPT_ACT_SWIGLU && cfg.model.d_ff == 4 * 2880 && cfg.model.n_experts == 0,
       "variant switch as a batch: %s", rc ? err.msg : "ok");
    static const char *const bad[] = {"model.n_layers=8", "model.n_heads=0"};
    gpt_model_config keep = cfg.model;
    rc = gpt_config_set_all(&cfg, bad, 2, &err);
    ok(rc < 0 && contains(err.msg, "--set model.n_heads=0: model.n_heads: must be >= 1") &&
           gpt_model_config_equal(&keep, &cfg.model),
       "a failed batch changes nothing: %s", err.msg);
    ok(gpt_config_set(&cfg, "model.mlp={type: dense, d_ff: 256}", &err) == 0 && cfg.model.d_ff == 256 &&
           cfg.model.activation == GPT_ACT_GELU_TANH,
       "--set a whole mapping");
    round_trip(&cfg, "after --set");
    gpt_config_free(&cfg);
}

static void test_search(void)
{
    gpt_config cfg;
    gpt_err err = {{0}};
    int rc = gpt_config_load_dirs("no-such-preset", DIRS, &cfg, &err);
    ok(rc < 0 && contains(err.msg, "no-such-preset") && contains(err.msg, "share/configs") &&
           contains(err.msg, "GPT_CONFIG_PATH"),
       "unknown preset: %s", err.msg);
    rc = gpt_config_load_dirs("t/data/config/missing.yaml", DIRS, &cfg, &err);
    ok(rc < 0 && contains(err.msg, "t/data/config/missing.yaml"), "missing file: %s", err.msg);
    rc = gpt_config_load("tiny-gpt2", &cfg, &err);
    ok(rc == 0 && contains(cfg.source, "tiny-gpt2.yaml"), "default search finds the source tree presets");
    if (rc == 0) gpt_config_free(&cfg);

    char dir[] = "/tmp/gpt-config-test-XXXXXX";
    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/mine.yaml", dir);
    FILE *f = fopen(path, "w");
    fputs("model: {vocab_size: 10, d_model: 8, n_layers: 1, n_heads: 2, max_seq_len: 8}\n", f);
    fclose(f);
    char env[700];
    snprintf(env, sizeof env, "/nonexistent:%s", dir);
    setenv("GPT_CONFIG_PATH", env, 1);
    rc = gpt_config_load("mine", &cfg, &err);
    ok(rc == 0 && cfg.model.d_model == 8 && strcmp(cfg.source, path) == 0, "GPT_CONFIG_PATH preset: %s",
       rc ? err.msg : cfg.source);
    if (rc == 0) gpt_config_free(&cfg);
    unsetenv("GPT_CONFIG_PATH");
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    struct stat st;
    if (stat("share/configs", &st) != 0) skip_all("run from the repository root (share/configs not found)");
    test_presets();
    test_bad_configs();
    test_round_trip();
    test_set();
    test_search();
    return done_testing();
}
