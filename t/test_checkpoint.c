/* Native checkpoints: save/load round trips (f32, bf16, zstd, blobs), latest + pruning, corruption and
 * hostile manifests, SIGKILL during saves, and the config.json mapping. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "ckpt_internal.h"
#include "hf_config.h"
#include "tap.h"

#define REF "t/data/ref"

static gpt_model_config load_cfg(const char *path)
{
    gpt_config c;
    gpt_err err;
    if (gpt_config_load(path, &c, &err) < 0) {
        diag("%s", err.msg);
        exit(1);
    }
    gpt_model_config m = c.model;
    gpt_config_free(&c);
    return m;
}

static int count_steps(const char *root)
{
    DIR *d = opendir(root);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += strncmp(e->d_name, "step-", 5) == 0;
    if (d) closedir(d);
    return n;
}

static void flip_byte(const char *path, long from_end)
{
    int fd = open(path, O_RDWR);
    off_t end = lseek(fd, 0, SEEK_END);
    unsigned char c;
    pread(fd, &c, 1, end - from_end);
    c ^= 0x40;
    pwrite(fd, &c, 1, end - from_end);
    close(fd);
}

static void test_hf_config(void)
{
    const char *models[] = {"tiny-gpt-oss", "tiny-gpt2"};
    for (int i = 0; i < 2; i++) {
        char cj[256], my[256];
        snprintf(cj, sizeof cj, REF "/%s/config.json", models[i]);
        snprintf(my, sizeof my, REF "/%s/model.yaml", models[i]);
        gpt_model_config want = load_cfg(my), got;
        gpt_err err;
        int rc = gpt_hf_config_read(cj, want.tokenizer, &got, &err);
        ok(rc == 0 && gpt_model_config_equal(&got, &want), "%s: config.json maps to the same config as model.yaml%s%s",
           models[i], rc ? ": " : "", rc ? err.msg : "");
        /* and what we write for transformers maps back */
        char *js = gpt_hf_config_json(&want, "float32", &err);
        gpt_model_config back;
        ok(js && gpt_hf_config_parse(js, strlen(js), "written", want.tokenizer, &back, &err) == 0 &&
               gpt_model_config_equal(&back, &want),
           "%s: written config.json maps back to the same config", models[i]);
        free(js);
    }
    gpt_model_config m = load_cfg(REF "/tiny-gpt-oss/model.yaml");
    m.mlp = GPT_MLP_DENSE; /* no HF gpt_oss equivalent */
    m.d_ff = 64;
    gpt_err err;
    char *js = gpt_hf_config_json(&m, "float32", &err);
    ok(js == NULL && strstr(err.msg, "no exact Hugging Face equivalent"), "a dense gpt_oss-family config is refused for export");
    free(js);
}

/* OpenAI's original config.json: ModelConfig's defaults are the gpt-oss-120b values, so an empty
 * object must map to our gpt-oss-120b preset (itself checked against Hugging Face's config). */
static void test_openai_config(void)
{
    gpt_model_config want = load_cfg("share/configs/gpt-oss-120b.yaml"), got;
    gpt_err err;
    int rc = gpt_openai_config_parse("{}", 2, "{}", want.tokenizer, &got, &err);
    got.init_std = want.init_std; /* not in either config.json */
    ok(rc == 0 && gpt_model_config_equal(&got, &want), "OpenAI config.json defaults map to the gpt-oss-120b preset%s%s",
       rc ? ": " : "", rc ? err.msg : "");
    /* every key spelled out, 20b's values: equals the gpt-oss-20b preset */
    const char *j20 = "{\"num_hidden_layers\": 24, \"num_experts\": 32, \"experts_per_token\": 4, \"vocab_size\": 201088,"
                      " \"hidden_size\": 2880, \"intermediate_size\": 2880, \"swiglu_limit\": 7.0, \"head_dim\": 64,"
                      " \"num_attention_heads\": 64, \"num_key_value_heads\": 8, \"sliding_window\": 128,"
                      " \"initial_context_length\": 4096, \"rope_theta\": 150000, \"rope_scaling_factor\": 32.0,"
                      " \"rope_ntk_alpha\": 1, \"rope_ntk_beta\": 32}";
    want = load_cfg("share/configs/gpt-oss-20b.yaml");
    rc = gpt_openai_config_parse(j20, strlen(j20), "20b", want.tokenizer, &got, &err);
    got.init_std = want.init_std;
    ok(rc == 0 && gpt_model_config_equal(&got, &want), "a 20b OpenAI config.json maps to the gpt-oss-20b preset%s%s",
       rc ? ": " : "", rc ? err.msg : "");
    const char *nowin = "{\"sliding_window\": 0, \"rope_scaling_factor\": 1.0, \"initial_context_length\": 2048}";
    rc = gpt_openai_config_parse(nowin, strlen(nowin), "nowin", NULL, &got, &err);
    ok(rc == 0 && gpt_model_layer_window(&got, 0) == 0 && got.rope_scaling == GPT_ROPE_SCALING_NONE && got.max_seq_len == 2048,
       "sliding_window 0 and rope_scaling_factor 1: no window, no YaRN, max_seq_len = initial_context_length");
    const char *bad[] = {"{\"model_type\": \"gpt_oss\"}", "{\"num_experts\": 2.5}", "{\"head_dim\": \"64\"}",
                         "{\"rope_scaling_factor\": 0.5}", "[]", "{\"num_hidden_layers\": -1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        rc = gpt_openai_config_parse(bad[i], strlen(bad[i]), "bad", NULL, &got, &err);
        ok(rc < 0 && strstr(err.msg, "bad:"), "OpenAI config %s is refused: %s", bad[i], err.msg);
    }
}

static void test_roundtrip(const char *tmp)
{
    gpt_model_config cfg = load_cfg(REF "/tiny-gpt-oss/model.yaml");
    gpt_param_table tab;
    gpt_err err;
    gpt_params_build(&cfg, &tab, &err);
    float *p = gpt_xmalloc(tab.total * sizeof *p), *q = gpt_xmalloc(tab.total * sizeof *q);
    gpt_params_init(&cfg, &tab, 7, p);
    char root[512];
    snprintf(root, sizeof root, "%s/rt", tmp);
    const char rng[] = "rng-state-bytes", pos[] = "12345";
    gpt_ckpt_blob blobs[] = {{"rng.rank0", rng, sizeof rng}, {"data_position", pos, 5}, {"empty", "", 0}};
    gpt_ckpt_opts o = {0};
    o.keep_last = 2;
    for (int step = 1; step <= 4; step++) {
        o.zstd_level = step == 4 ? 3 : 0;
        int rc = gpt_ckpt_save(root, step * 10, &cfg, &tab, p, blobs, 3, &o, &err);
        if (!ok(rc == 0, "save step %d", step * 10)) diag("%s", err.msg);
    }
    is_int(count_steps(root), 2, "keep_last=2 keeps two step directories");
    gpt_ckpt *ck = gpt_ckpt_open(root, &err);
    if (!ok(ck != NULL, "open the root through latest")) {
        diag("%s", err.msg);
        return;
    }
    is_int(gpt_ckpt_step(ck), 40, "latest is step 40");
    ok(gpt_ckpt_zstd_level(ck) == 3 && strstr(gpt_ckpt_shard_file(ck, 0), ".safetensors.zst"), "zstd shard");
    ok(gpt_model_config_equal(&gpt_ckpt_config(ck)->model, &cfg), "model.yaml loads back to the same config");
    int rc = gpt_ckpt_load_params(ck, &tab, q, &err);
    ok(rc == 0 && memcmp(p, q, tab.total * sizeof *p) == 0, "f32 parameters load back bit for bit (zstd)%s%s",
       rc ? ": " : "", rc ? err.msg : "");
    void *d;
    size_t n;
    rc = gpt_ckpt_read_blob(ck, "rng.rank0", &d, &n, &err);
    ok(rc == 0 && n == sizeof rng && memcmp(d, rng, n) == 0, "blob reads back");
    free(d);
    rc = gpt_ckpt_read_blob(ck, "empty", &d, &n, &err);
    ok(rc == 0 && n == 0, "empty blob reads back");
    free(d);
    ok(gpt_ckpt_verify(ck, NULL, NULL, &err) == 0, "verify passes");
    gpt_ckpt_close(ck);

    /* bf16 */
    o.zstd_level = 0;
    o.dtype = GPT_ST_BF16;
    o.keep_last = 0;
    snprintf(root, sizeof root, "%s/bf", tmp);
    rc = gpt_ckpt_save(root, 5, &cfg, &tab, p, NULL, 0, &o, &err);
    ck = rc == 0 ? gpt_ckpt_open(root, &err) : NULL;
    rc = ck ? gpt_ckpt_load_params(ck, &tab, q, &err) : -1;
    int same = rc == 0;
    for (size_t i = 0; same && i < tab.total; i++) same = q[i] == gpt_bf16_to_f32(gpt_f32_to_bf16(p[i]));
    ok(same, "bf16 checkpoint loads the bf16-rounded parameters");
    /* corrupt the last byte of the shard: the last tensor in file order must be named */
    const gpt_ckpt_tensor *last = NULL;
    for (size_t i = 0; ck && i < gpt_ckpt_count(ck); i++) {
        const gpt_ckpt_tensor *t = gpt_ckpt_tensor_at(ck, i);
        if (!last || t->offset > last->offset) last = t;
    }
    char shard[600];
    snprintf(shard, sizeof shard, "%s/%s", gpt_ckpt_dir(ck), gpt_ckpt_shard_file(ck, 0));
    char lastname[256];
    snprintf(lastname, sizeof lastname, "%s", last->name);
    gpt_ckpt_close(ck);
    flip_byte(shard, 1);
    ck = gpt_ckpt_open(root, &err);
    rc = ck ? gpt_ckpt_load_params(ck, &tab, q, &err) : -1;
    ok(rc < 0 && strstr(err.msg, lastname) && strstr(err.msg, "corrupt"), "a flipped byte is caught and names %s", lastname);
    diag("%s", err.msg);
    gpt_ckpt_close(ck);
    flip_byte(shard, 1);
    truncate(shard, 1000);
    ck = gpt_ckpt_open(root, &err);
    rc = ck ? gpt_ckpt_verify(ck, NULL, NULL, &err) : -1;
    ok(rc < 0, "a truncated shard fails verification");
    diag("%s", err.msg);
    gpt_ckpt_close(ck);
    free(p);
    free(q);
    gpt_params_free(&tab);
}

static void test_hostile(void)
{
    const char *head = "{\"format\":\"gpt-checkpoint\",\"version\":1,\"step\":0,\"dtype\":\"F32\",";
    const char *okt = "{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":0,\"length\":8,\"xxh64\":\"0123456789abcdef\"}";
    struct {
        const char *shards, *tensors, *want;
    } cases[] = {
        {"[{\"file\":\"../x.safetensors\",\"compression\":\"none\"}]", "[]", "plain file name"},
        {"[{\"file\":\"sub/x.safetensors\",\"compression\":\"none\"}]", "[]", "plain file name"},
        {"[{\"file\":\".hidden.safetensors\",\"compression\":\"none\"}]", "[]", "plain file name"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"lz4\"}]", "[]", "compression"},
        {"[{\"file\":\"x.bin\",\"compression\":\"none\"}]", "[]", "must be named"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"Q4\",\"shape\":[2],\"shard\":0,\"offset\":0,\"length\":8,\"xxh64\":\"0123456789abcdef\"}]",
         "unknown dtype"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"shard\":0,\"offset\":0,\"length\":8,\"xxh64\":\"0123456789abcdef\"}]",
         "absurd shape"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":0,\"length\":9,\"xxh64\":\"0123456789abcdef\"}]",
         "does not match its shape"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":3,\"offset\":0,\"length\":8,\"xxh64\":\"0123456789abcdef\"}]",
         "\"shard\""},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":-8,\"length\":8,\"xxh64\":\"0123456789abcdef\"}]",
         "\"offset\""},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":0,\"length\":8,\"xxh64\":\"0123456789abcdef\"},"
         "{\"name\":\"b\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":4,\"length\":8,\"xxh64\":\"0123456789abcdef\"}]",
         "overlap"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]", NULL, "listed twice"},
        {"[{\"file\":\"x.safetensors\",\"compression\":\"none\"}]",
         "[{\"name\":\"a\",\"dtype\":\"F32\",\"shape\":[2],\"shard\":0,\"offset\":0,\"length\":8,\"xxh64\":\"xyz\"}]", "xxh64"},
    };
    char buf[2048];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char tens[600];
        if (cases[i].tensors)
            snprintf(tens, sizeof tens, "%s", cases[i].tensors);
        else
            snprintf(tens, sizeof tens, "[%s,%s]", okt, okt);
        snprintf(buf, sizeof buf, "%s\"shards\":%s,\"tensors\":%s}", head, cases[i].shards, tens);
        gpt_err err = {0};
        gpt_ckpt *ck = gpt_ckpt_parse_manifest(buf, strlen(buf), "m.json", &err);
        ok(ck == NULL && strstr(err.msg, cases[i].want), "hostile manifest %zu rejected (%s): %s", i, cases[i].want, err.msg);
        gpt_ckpt_close(ck);
    }
    gpt_err err = {0};
    const char *newer = "{\"format\":\"gpt-checkpoint\",\"version\":99,\"step\":0,\"dtype\":\"F32\",\"shards\":[],\"tensors\":[]}";
    gpt_ckpt *ck = gpt_ckpt_parse_manifest(newer, strlen(newer), "m.json", &err);
    ok(!ck && strstr(err.msg, "newer"), "a newer format version is refused with a hint");
    gpt_ckpt_close(ck);
    snprintf(buf, sizeof buf, "%s\"shards\":[{\"file\":\"x.safetensors\",\"compression\":\"none\"}],\"tensors\":[%s]}", head, okt);
    ck = gpt_ckpt_parse_manifest(buf, strlen(buf), "m.json", &err);
    ok(ck != NULL, "a well-formed manifest parses");
    gpt_ckpt_close(ck);
}

/* A child saves again and again; it is SIGKILLed at a random moment. The newest complete checkpoint
 * must still load and verify, and hold the parameters of its step. */
static void test_kill(const char *tmp)
{
    gpt_model_config cfg = load_cfg(REF "/tiny-gpt-oss/model.yaml");
    gpt_param_table tab;
    gpt_err err;
    gpt_params_build(&cfg, &tab, &err);
    float *p = gpt_xmalloc(tab.total * sizeof *p), *q = gpt_xmalloc(tab.total * sizeof *q);
    char root[512];
    snprintf(root, sizeof root, "%s/kill", tmp);
    gpt_ckpt_opts o = {0};
    o.keep_last = 3;
    gpt_params_init(&cfg, &tab, 0, p);
    if (gpt_ckpt_save(root, 0, &cfg, &tab, p, NULL, 0, &o, &err) < 0) diag("%s", err.msg);
    srand((unsigned)time(NULL));
    int good = 0, rounds = 12;
    int64_t next = 1;
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int64_t s = next;; s++) {
                gpt_params_init(&cfg, &tab, (uint64_t)s, p);
                char blob[64];
                int bl = snprintf(blob, sizeof blob, "step %lld", (long long)s);
                gpt_ckpt_blob b = {"data_position", blob, (size_t)bl};
                gpt_ckpt_opts co = o;
                co.zstd_level = s % 2;
                if (gpt_ckpt_save(root, s, &cfg, &tab, p, &b, 1, &co, NULL) < 0) _exit(3);
            }
        }
        struct timespec ts = {0, (rand() % 40000) * 1000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        gpt_ckpt *ck = gpt_ckpt_open(root, &err);
        int okr = ck != NULL && gpt_ckpt_verify(ck, NULL, NULL, &err) == 0;
        if (okr) {
            int64_t s = gpt_ckpt_step(ck);
            gpt_params_init(&cfg, &tab, (uint64_t)s, p);
            okr = gpt_ckpt_load_params(ck, &tab, q, &err) == 0 && memcmp(p, q, tab.total * sizeof *p) == 0;
            next = s + 100; /* steps keep increasing across rounds */
        }
        if (!okr) diag("round %d: %s", r, err.msg);
        good += okr;
        gpt_ckpt_close(ck);
    }
    is_int(good, rounds, "after each SIGKILL mid-save the latest checkpoint loads, verifies and holds its step's parameters");
    /* every step directory is complete (they only appear by rename) */
    DIR *d = opendir(root);
    struct dirent *e;
    int all = 1, n = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "step-", 5) != 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        gpt_ckpt *ck = gpt_ckpt_open(path, &err);
        if (!ck || gpt_ckpt_verify(ck, NULL, NULL, &err) < 0) {
            all = 0;
            diag("%s: %s", e->d_name, err.msg);
        }
        gpt_ckpt_close(ck);
        n++;
    }
    if (d) closedir(d);
    ok(all && n > 0, "all %d step directories left behind verify", n);
    gpt_ckpt_prune(root, 3, &err);
    int stale = 0;
    d = opendir(root);
    while (d && (e = readdir(d)) != NULL) stale += e->d_name[0] == '.' && strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    is_int(stale, 0, "prune removes temp directories of killed savers");
    free(p);
    free(q);
    gpt_params_free(&tab);
}

int main(void)
{
    char tmp[] = "/tmp/test_checkpoint.XXXXXX";
    if (!mkdtemp(tmp)) skip_all("cannot create a temp directory");
    test_hf_config();
    test_openai_config();
    test_roundtrip(tmp);
    test_hostile();
    test_kill(tmp);
    gpt_ckpt_remove_tree(tmp);
    return done_testing();
}
