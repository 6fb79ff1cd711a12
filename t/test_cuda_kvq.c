/* The CUDA backend's bf16 and int8 KV cache (kv_store_q, attn_cached_q) against the CPU backend's
 * (lib/kv_quant.c; t/test_kv_dtype.c holds that one to a full fp32 recompute).
 * Ops on random inputs: the stored cache bytes and int8 scales are the same bits on both (the
 * device rounds with the CPU's arithmetic), and the attention over the same cache agrees to fp32
 * rounding (1e-5 of the output's scale). Then decoding the tiny reference models with each cache
 * type on both backends: logits within the cache type's tolerance (the keys and values reach the
 * cache with fp32 rounding differences, and a value on a rounding boundary may round to the next
 * bf16 or int8 step on one side only). Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "config.h"
#include "hf_import.h"
#include "model.h"
#include "tap.h"

static gpt_backend *cpu, *gpu;

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* bytes in both backends: c (CPU backend memory = host) and g (device) */
typedef struct {
    unsigned char *c, *g;
    size_t bytes;
} buf;

static buf bnew(size_t bytes)
{
    buf b = {cpu->alloc(cpu, bytes ? bytes : 1), gpu->alloc(gpu, bytes ? bytes : 1), bytes};
    return b;
}
static void bpush(buf b) { gpu->to_device(gpu, b.g, b.c, b.bytes); }
static void bfree(buf b)
{
    cpu->free(cpu, b.c);
    gpu->free(gpu, b.g);
}
static buf fnew(size_t n, float lo, float hi)
{
    buf b = bnew(n * sizeof(float));
    float *f = (float *)b.c;
    for (size_t i = 0; i < n; i++) f[i] = (float)(lo + (hi - lo) * urand());
    bpush(b);
    return b;
}
static buf inew(const int *v, size_t n)
{
    buf b = bnew(n * sizeof(int));
    memcpy(b.c, v, n * sizeof(int));
    bpush(b);
    return b;
}

/* the device bytes equal the CPU bytes; on a difference, says where */
static int same_bytes(buf b, size_t esize, const char *what)
{
    unsigned char *h = malloc(b.bytes ? b.bytes : 1);
    gpu->to_host(gpu, h, b.g, b.bytes);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < b.bytes; i++)
        if (h[i] != b.c[i] && !bad++) first = i;
    int r = ok(bad == 0, "%s: the same bytes on both (%zu of %zu differ)", what, bad, b.bytes);
    if (bad) diag("first at element %zu", first / esize);
    free(h);
    return r;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY;
        md = d > md ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}

/* kv_store_q then attn_cached_q for n rows (sequence seq[r], position pos[r]) over caches of
 * `ring` slots per sequence, filled with noise first (stale slots must not be read). */
static void t_kvq(int dtype, int n, const int *seq, const int *pos, int n_seq, int ring, int H, int KV, int D,
                  int window, int with_sinks)
{
    const char *dn = dtype == GPT_KV_BF16 ? "bf16" : "int8";
    int ldq = (H + 2 * KV) * D + 3;
    float scale = 1.0f / sqrtf((float)D);
    size_t slots = (size_t)n_seq * ring, es = dtype == GPT_KV_BF16 ? 2 : 1, cache = slots * KV * D * es;
    buf kc = bnew(cache), vc = bnew(cache);
    for (size_t i = 0; i < cache; i++) {
        /* noise; bf16 noise kept finite so a stray read shows as a wrong value, not only a NaN */
        kc.c[i] = (unsigned char)(urand() * 256), vc.c[i] = (unsigned char)(urand() * 256);
        if (es == 2 && (i & 1)) kc.c[i] &= 0x3f, vc.c[i] &= 0x3f;
    }
    bpush(kc), bpush(vc);
    buf ks = fnew(slots * KV, 0.01f, 0.02f), vs = fnew(slots * KV, 0.01f, 0.02f);
    buf qkv = fnew((size_t)n * ldq, -1.5, 1.5), sinks = fnew(H, -1, 2), out = fnew((size_t)n * H * D, 5, 6);
    float *x = (float *)qkv.c;
    /* int8 edge cases: a key head of zeros (scale 0), a value head with one large entry */
    for (int i = 0; i < D; i++) x[(size_t)0 * ldq + H * D + i] = 0.0f;
    if (n > 1) x[(size_t)1 * ldq + (H + KV) * D + 3] = 40.0f;
    bpush(qkv);
    buf sq = inew(seq, n), ps = inew(pos, n);
    float *kcf = dtype == GPT_KV_INT8 ? (float *)ks.c : NULL, *vcf = dtype == GPT_KV_INT8 ? (float *)vs.c : NULL;
    float *kgf = dtype == GPT_KV_INT8 ? (float *)ks.g : NULL, *vgf = dtype == GPT_KV_INT8 ? (float *)vs.g : NULL;
    const float *scc = with_sinks ? (const float *)sinks.c : NULL, *scg = with_sinks ? (const float *)sinks.g : NULL;
    int maxpos = 0;
    for (int r = 0; r < n; r++) maxpos = pos[r] > maxpos ? pos[r] : maxpos;
    char cfg[160], what[240];
    snprintf(cfg, sizeof cfg, "%s n=%d ring=%d H=%d KV=%d D=%d window=%d%s, last position %d", dn, n, ring, H, KV, D,
             window, with_sinks ? " sinks" : "", maxpos);
    cpu->kv_store_q(cpu, dtype, kc.c, vc.c, kcf, vcf, x + H * D, x + (H + KV) * D, ldq, (int *)sq.c, (int *)ps.c, n,
                    ring, KV, D);
    gpu->kv_store_q(gpu, dtype, kc.g, vc.g, kgf, vgf, (float *)qkv.g + H * D, (float *)qkv.g + (H + KV) * D, ldq,
                    (int *)sq.g, (int *)ps.g, n, ring, KV, D);
    snprintf(what, sizeof what, "kv_store_q %s: keys", cfg), same_bytes(kc, es, what);
    snprintf(what, sizeof what, "kv_store_q %s: values", cfg), same_bytes(vc, es, what);
    if (dtype == GPT_KV_INT8) {
        snprintf(what, sizeof what, "kv_store_q %s: key scales", cfg), same_bytes(ks, 4, what);
        snprintf(what, sizeof what, "kv_store_q %s: value scales", cfg), same_bytes(vs, 4, what);
    }
    cpu->attn_cached_q(cpu, dtype, (float *)out.c, x, ldq, kc.c, vc.c, kcf, vcf, (int *)sq.c, (int *)ps.c, n, ring,
                       scc, H, KV, D, window, scale);
    gpu->attn_cached_q(gpu, dtype, (float *)out.g, (float *)qkv.g, ldq, kc.g, vc.g, kgf, vgf, (int *)sq.g,
                       (int *)ps.g, n, ring, scg, H, KV, D, window, scale);
    float *h = malloc(out.bytes);
    gpu->to_host(gpu, h, out.g, out.bytes);
    double e = rel_err(h, (float *)out.c, out.bytes / sizeof(float));
    ok(e <= 1e-5, "attn_cached_q %s: output (max rel err %.2e, target 1e-05)", cfg, e);
    free(h);
    bfree(kc), bfree(vc), bfree(ks), bfree(vs), bfree(qkv), bfree(sinks), bfree(out), bfree(sq), bfree(ps);
}

static void t_kvq_all(int dtype, int quick)
{
    int s1[6] = {0, 0, 0, 2, 1, 2}, p1[6] = {0, 1, 2, 299, 150, 257};
    t_kvq(dtype, 6, s1, p1, 3, 300, 4, 2, 32, 0, 1);
    t_kvq(dtype, 6, s1, p1, 3, 300, 4, 4, 16, 0, 0);
    /* sliding layers: the ring wraps */
    int p2[6] = {990, 991, 992, 17, 4, 1000};
    t_kvq(dtype, 6, s1, p2, 3, 16 + 7, 4, 2, 64, 16, 1);
    t_kvq(dtype, 6, s1, p2, 3, 5 + 7, 8, 2, 48, 5, 0);
    /* long contexts: one decoding row over 20000 keys (many splits); a prefill chunk of 128 rows */
    int s3[128], p3[128];
    for (int i = 0; i < 128; i++) s3[i] = i % 2, p3[i] = 19000 + i / 2;
    p3[0] = 19999;
    t_kvq(dtype, 1, s3, p3, 2, 20000, 8, 1, 64, 0, 1);
    if (!quick) {
        t_kvq(dtype, 128, s3, p3, 2, 20000, 4, 2, 64, 0, 1);
        t_kvq(dtype, 2, s3, p3, 2, 20000, 4, 1, 256, 0, 1);
    }
}

static gpt_model *load(const char *dir, gpt_config *cfg, gpt_backend *be)
{
    char path[512];
    gpt_err err;
    gpt_model *m = gpt_model_create(&cfg->model, be, &err);
    if (!m) {
        diag("%s", err.msg);
        return NULL;
    }
    snprintf(path, sizeof path, "t/data/ref/%s/model.safetensors", dir);
    if (gpt_model_load_hf(m, path, &err) < 0) {
        diag("%s", err.msg);
        gpt_model_free(m);
        return NULL;
    }
    return m;
}

/* Decoding with a bf16 or int8 cache on both backends: token by token (the gpt-oss fixture's
 * sliding ring wraps), then a chunked prefill of a second sequence, a fork (gpt_kv_cache_copy)
 * and both going on. */
static void check_decode(const char *dir, int dtype, double tol)
{
    const char *dn = dtype == GPT_KV_BF16 ? "bf16" : "int8";
    char path[512];
    gpt_err err;
    gpt_config cfg;
    snprintf(path, sizeof path, "t/data/ref/%s/model.yaml", dir);
    if (!ok(gpt_config_load(path, &cfg, &err) == 0, "decode %s %s: config loads", dir, dn)) {
        diag("%s", err.msg);
        return;
    }
    gpt_model *mc = load(dir, &cfg, cpu), *mg = load(dir, &cfg, gpu);
    if (!ok(mc && mg, "decode %s %s: models load on both backends", dir, dn)) return;
    const gpt_model_config *c = gpt_model_config_of(mc);
    int T = c->max_seq_len < 150 ? c->max_seq_len : 150, V = c->vocab_size;
    int tok[150];
    for (int t = 0; t < T; t++) tok[t] = (t * 37 + 11) % V;
    gpt_kv_opts ko = {.dtype = dtype};
    gpt_kv_cache *kcc = gpt_kv_cache_create_ex(mc, 2, T, &ko, &err);
    if (!kcc) diag("cpu: %s", err.msg);
    gpt_kv_cache *kcg = gpt_kv_cache_create_ex(mg, 2, T, &ko, &err);
    if (!kcg) diag("cuda: %s", err.msg);
    if (!ok(kcc && kcg, "decode %s: %s caches of %d tokens on both backends", dir, dn, T)) return;
    float *oc = malloc((size_t)2 * T * V * sizeof *oc), *og = malloc((size_t)2 * T * V * sizeof *og);
    /* a rounded key can flip a near-tie in a MoE router's top-k on one side only (as in
     * t/test_kv_dtype.c): rare steps may differ by a whole expert */
    int allowed = c->mlp == GPT_MLP_MOE ? T / 20 : 0, over = 0, fails = 0;
    double worst = 0;
    for (int t = 0; t < T; t++) {
        int s = 0;
        fails += gpt_model_extend(mc, kcc, &tok[t], &s, 1, oc, &err) < 0;
        fails += gpt_model_extend(mg, kcg, &tok[t], &s, 1, og, &err) < 0;
        double e = rel_err(og, oc, (size_t)V);
        over += !(e <= tol);
        if (e <= 0.5) worst = e > worst ? e : worst;
        else worst = INFINITY;
    }
    ok(!fails && over <= allowed && worst < 0.5,
       "decode %s, %s cache: token by token, %d steps: device logits within %.0e of the cpu's at %d steps "
       "(%d allowed over; max rel %.2e)", dir, dn, T, tol, T - over, allowed, worst);
    gpt_kv_cache_clear(kcc, 1), gpt_kv_cache_clear(kcg, 1);
    int sq[7] = {1, 1, 1, 1, 1, 1, 1};
    fails += gpt_model_extend(mc, kcc, tok, sq, 7, oc, &err) < 0;
    fails += gpt_model_extend(mg, kcg, tok, sq, 7, og, &err) < 0;
    double e1 = rel_err(og + (size_t)6 * V, oc + (size_t)6 * V, (size_t)V);
    gpt_kv_cache_copy(kcc, 0, 1), gpt_kv_cache_copy(kcg, 0, 1);
    worst = 0;
    for (int t = 7; t < 20; t++) {
        int tk[2] = {tok[t], tok[t + 1]}, ss[2] = {0, 1};
        fails += gpt_model_extend(mc, kcc, tk, ss, 2, oc, &err) < 0;
        fails += gpt_model_extend(mg, kcg, tk, ss, 2, og, &err) < 0;
        double e = rel_err(og, oc, (size_t)2 * V);
        worst = e > worst ? e : worst;
    }
    ok(!fails && e1 <= tol && worst <= (allowed ? 0.5 : tol),
       "decode %s, %s cache: a chunked prefill, a forked sequence, both going on (max rel %.2e, %.2e)", dir, dn, e1,
       worst);
    free(oc), free(og);
    gpt_kv_cache_free(kcc), gpt_kv_cache_free(kcg);
    gpt_model_free(mc), gpt_model_free(mg);
    gpt_config_free(&cfg);
}

int main(void)
{
    gpt_err err;
    gpu = gpt_backend_cuda(0, &err);
    if (!gpu) {
        char reason[1100];
        snprintf(reason, sizeof reason, "%s", err.msg);
        for (char *p = reason; *p; p++)
            if (*p == '\n') *p = ' ';
        skip_all(reason);
    }
    cpu = gpt_backend_cpu();
    const char *q = getenv("GPT_CUDA_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0") != 0;
    if (!ok(gpu->kv_store_q && gpu->attn_cached_q, "the cuda backend has kv_store_q and attn_cached_q")) {
        cpu->destroy(cpu), gpu->destroy(gpu);
        return done_testing();
    }
    t_kvq_all(GPT_KV_BF16, quick);
    t_kvq_all(GPT_KV_INT8, quick);
    if (!quick) {
        check_decode("tiny-gpt2", GPT_KV_BF16, 1e-2);
        check_decode("tiny-gpt2", GPT_KV_INT8, 2e-2);
        check_decode("tiny-gpt-oss", GPT_KV_BF16, 1e-2);
        check_decode("tiny-gpt-oss", GPT_KV_INT8, 2e-2);
    }
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return done_testing();
}
