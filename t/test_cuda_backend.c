/* The CUDA backend against the CPU backend (the reference, itself proved against transformers in
 * t/test_model_ref.c and against finite differences in t/test_ops_fd.c): every op on random
 * inputs, then forward and backward of the tiny reference models, then KV-cache decoding
 * (gpt_model_extend) of the same models. Both are fp32, so the targets are fp32 rounding: 1e-5
 * relative per op, 1e-4 for whole-model gradients. Skips without a device. Also checks that the
 * device results are deterministic (two runs, same bits).
 * Attention runs twice: the default flash kernels and GPT_CUDA_ATTN=simple, each against the CPU.
 * A third backend with GPT_CUDA_GEMM=bf16 is held to bf16 tolerances (1e-2 on logits); a fourth,
 * GPT_CUDA_GEMM=tf32, runs the grouped GEMM (cuBLAS's TF32 compute type) at the same tolerance. */
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
#include "safetensors.h"
#include "tap.h"

/* gpu: the backend under test; the checks below swap in the simple-attention and bf16 ones */
static gpt_backend *cpu, *gpu;

/* a tensor in both backends: c (host memory of the CPU backend) and g (device memory) */
typedef struct {
    float *c, *g;
    size_t n;
} fbuf;
typedef struct {
    int *c, *g;
    size_t n;
} ibuf;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) /* [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static int irand(int n) { return (int)(urand() * n); }

static void push(fbuf b) { gpu->to_device(gpu, b.g, b.c, b.n * sizeof(float)); }

static fbuf fnew(size_t n, float lo, float hi)
{
    fbuf b = {cpu->alloc(cpu, n * sizeof(float)), gpu->alloc(gpu, n * sizeof(float)), n};
    for (size_t i = 0; i < n; i++) b.c[i] = (float)(lo + (hi - lo) * urand());
    push(b);
    return b;
}

static ibuf inew(const int *v, size_t n)
{
    ibuf b = {cpu->alloc(cpu, n * sizeof(int)), gpu->alloc(gpu, n * sizeof(int)), n};
    memcpy(b.c, v, n * sizeof(int));
    gpu->to_device(gpu, b.g, b.c, n * sizeof(int));
    return b;
}

static void ffree(fbuf b)
{
    cpu->free(cpu, b.c);
    gpu->free(gpu, b.g);
}
static void ifree(ibuf b)
{
    cpu->free(cpu, b.c);
    gpu->free(gpu, b.g);
}

/* max |a - b| / max |b|: relative to the tensor's scale */
static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY; /* NaN */
        md = d > md ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 1e-30 ? mb : 1e-30);
}

static float *down(fbuf b)
{
    float *h = malloc(b.n * sizeof *h);
    gpu->to_host(gpu, h, b.g, b.n * sizeof *h);
    return h;
}

/* the device copy of b against the CPU copy */
static int same(fbuf b, double tol, const char *what)
{
    float *h = down(b);
    double e = rel_err(h, b.c, b.n);
    free(h);
    return ok(e <= tol, "%s (max rel err %.2e, target %.0e)", what, e, tol);
}

static int same_int(ibuf b, const char *what)
{
    int *h = malloc(b.n * sizeof *h);
    gpu->to_host(gpu, h, b.g, b.n * sizeof *h);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < b.n; i++)
        if (h[i] != b.c[i] && !bad++) first = i;
    int r = ok(bad == 0, "%s (%zu of %zu differ)", what, bad, b.n);
    if (bad) diag("first at %zu: device %d, cpu %d", first, h[first], b.c[first]);
    free(h);
    return r;
}

#define TOL 1e-5

/* ---- op checks ---- */

static void t_gemm(void)
{
    int M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
            fbuf A = fnew((size_t)(ta ? K : M) * lda, -1, 1), B = fnew((size_t)(tb ? N : K) * ldb, -1, 1);
            fbuf C = fnew((size_t)M * ldc, -1, 1);
            cpu->gemm(cpu, ta, tb, M, N, K, 1.5f, A.c, lda, B.c, ldb, 0.5f, C.c, ldc);
            gpu->gemm(gpu, ta, tb, M, N, K, 1.5f, A.g, lda, B.g, ldb, 0.5f, C.g, ldc);
            char what[64];
            snprintf(what, sizeof what, "gemm ta=%d tb=%d (strided, beta 0.5)", ta, tb);
            same(C, TOL, what);
            cpu->gemm(cpu, ta, tb, M, N, K, 1.0f, A.c, lda, B.c, ldb, 0.0f, C.c, ldc);
            gpu->gemm(gpu, ta, tb, M, N, K, 1.0f, A.g, lda, B.g, ldb, 0.0f, C.g, ldc);
            snprintf(what, sizeof what, "gemm ta=%d tb=%d (beta 0)", ta, tb);
            same(C, TOL, what);
            ffree(A), ffree(B), ffree(C);
        }
    fbuf C = fnew(6 * 9, -1, 1);
    cpu->gemm(cpu, 0, 0, 5, 7, 0, 1.0f, C.c, 9, C.c, 9, 0.25f, C.c, 9);
    gpu->gemm(gpu, 0, 0, 5, 7, 0, 1.0f, C.g, 9, C.g, 9, 0.25f, C.g, 9);
    same(C, 0, "gemm K=0 scales C by beta");
    ffree(C);
}

/* gemm_grouped against the CPU's (one gemm per group there, t/test_gemm_grouped.c): 12 groups with
 * an empty one of each kind, a K = 0 one, a run of three of one shape (one cuBLAS group of three
 * problems), all four transpositions, beta 0 and 0.5; then the same with matrices at offsets that
 * are not 16-byte aligned (TF32 goes one group at a time there). */
static void t_gemm_grouped(const char *kind, double tol)
{
    enum { G = 12 };
    for (int unaligned = 0; unaligned < 2; unaligned++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bi = 0; bi < 2; bi++) {
                    float alpha = bi ? -1.5f : 1.0f, beta = bi ? 0.5f : 0.0f;
                    int M[G], N[G], K[G], lda[G], ldb[G], ldc[G];
                    fbuf A[G], B[G], C[G];
                    const float *Ac[G], *Ag[G], *Bc[G], *Bg[G];
                    float *Cc[G], *Cg[G];
                    for (int g = 0; g < G; g++) {
                        if (g == 5 || g == 6) { /* the shape of group 4 again */
                            M[g] = M[4], N[g] = N[4], K[g] = K[4], lda[g] = lda[4], ldb[g] = ldb[4], ldc[g] = ldc[4];
                        } else {
                            M[g] = g == 0 ? 0 : 1 + irand(40), N[g] = g == 1 ? 0 : 1 + irand(40);
                            K[g] = g == 2 ? 0 : 1 + irand(60);
                            lda[g] = (ta ? M[g] : K[g]) + irand(3), ldb[g] = (tb ? K[g] : N[g]) + irand(3);
                            ldc[g] = N[g] + irand(3);
                            lda[g] += !lda[g], ldb[g] += !ldb[g], ldc[g] += !ldc[g];
                        }
                        int off = unaligned ? 1 + irand(3) : 0;
                        size_t na = (size_t)(ta ? K[g] : M[g]) * lda[g], nb = (size_t)(tb ? N[g] : K[g]) * ldb[g];
                        size_t nc = (size_t)M[g] * ldc[g];
                        A[g] = fnew(off + na + 1, -1, 1), B[g] = fnew(off + nb + 1, -1, 1);
                        C[g] = fnew(off + nc + 1, -1, 1);
                        Ac[g] = A[g].c + off, Ag[g] = A[g].g + off, Bc[g] = B[g].c + off, Bg[g] = B[g].g + off;
                        Cc[g] = C[g].c + off, Cg[g] = C[g].g + off;
                    }
                    cpu->gemm_grouped(cpu, ta, tb, G, M, N, K, alpha, Ac, lda, Bc, ldb, beta, Cc, ldc);
                    gpu->gemm_grouped(gpu, ta, tb, G, M, N, K, alpha, Ag, lda, Bg, ldb, beta, Cg, ldc);
                    double worst = 0;
                    for (int g = 0; g < G; g++) {
                        float *h = down(C[g]);
                        double e = rel_err(h, C[g].c, C[g].n);
                        worst = e > worst || e != e ? e : worst;
                        free(h);
                        ffree(A[g]), ffree(B[g]), ffree(C[g]);
                    }
                    ok(worst <= tol, "[%s] gemm_grouped ta=%d tb=%d beta %g%s: %d groups = the cpu's (max rel err "
                       "%.2e, target %.0e)", kind, ta, tb, beta, unaligned ? ", unaligned" : "", G, worst, tol);
                }
    gpu->gemm_grouped(gpu, 0, 0, 0, NULL, NULL, NULL, 1.0f, NULL, NULL, NULL, NULL, 0.0f, NULL, NULL);
    fbuf z = fnew(1, 0, 0);
    free(down(z)); /* waits for the device: a fault would abort here */
    ffree(z);
    ok(1, "[%s] gemm_grouped with no groups does nothing", kind);
}

static void t_small(void)
{
    int M = 50, N = 70, ldy = 77;
    fbuf y = fnew((size_t)M * ldy, -1, 1), b = fnew(N, -1, 1), db = fnew(N, -1, 1);
    cpu->bias_fwd(cpu, y.c, ldy, b.c, M, N);
    gpu->bias_fwd(gpu, y.g, ldy, b.g, M, N);
    same(y, TOL, "bias_fwd");
    cpu->bias_bwd(cpu, db.c, y.c, ldy, M, N);
    gpu->bias_bwd(gpu, db.g, y.g, ldy, M, N);
    same(db, TOL, "bias_bwd accumulates");
    size_t n = 10007;
    fbuf a = fnew(n, -1, 1), x = fnew(n, -1, 1);
    cpu->axpy(cpu, a.c, x.c, -0.75f, n);
    gpu->axpy(gpu, a.g, x.g, -0.75f, n);
    same(a, TOL, "axpy");
    cpu->add(cpu, a.c, a.c, x.c, n);
    gpu->add(gpu, a.g, a.g, x.g, n);
    same(a, TOL, "add (out aliases a)");
    ffree(y), ffree(b), ffree(db), ffree(a), ffree(x);
}

static void t_embed(void)
{
    int B = 2, T = 64, C = 48, V = 50, N = B * T;
    int *tok = malloc((size_t)N * sizeof *tok);
    for (int i = 0; i < N; i++) tok[i] = i % 7 == 0 ? 3 : irand(V); /* repeats, one frequent token */
    ibuf tk = inew(tok, N);
    fbuf wte = fnew((size_t)V * C, -1, 1), wpe = fnew((size_t)T * C, -1, 1), x = fnew((size_t)N * C, -1, 1);
    cpu->embed_fwd(cpu, x.c, tk.c, wte.c, wpe.c, B, T, C);
    gpu->embed_fwd(gpu, x.g, tk.g, wte.g, wpe.g, B, T, C);
    same(x, 0, "embed_fwd with positions (exact)");
    cpu->embed_fwd(cpu, x.c, tk.c, wte.c, NULL, B, T, C);
    gpu->embed_fwd(gpu, x.g, tk.g, wte.g, NULL, B, T, C);
    same(x, 0, "embed_fwd without positions (exact)");
    float *w0 = down(wte);
    cpu->embed_bwd(cpu, wte.c, wpe.c, x.c, tk.c, B, T, C);
    gpu->embed_bwd(gpu, wte.g, wpe.g, x.g, tk.g, B, T, C);
    same(wte, TOL, "embed_bwd: dwte accumulates");
    same(wpe, TOL, "embed_bwd: dwpe accumulates");
    /* determinism: the same sums again from the same start give the same bits */
    float *w1 = down(wte);
    gpu->to_device(gpu, wte.g, w0, wte.n * sizeof(float));
    gpu->embed_bwd(gpu, wte.g, NULL, x.g, tk.g, B, T, C);
    float *w2 = down(wte);
    ok(memcmp(w1, w2, wte.n * sizeof(float)) == 0, "embed_bwd is deterministic (same bits twice)");
    free(w0), free(w1), free(w2), free(tok);
    ifree(tk), ffree(wte), ffree(wpe), ffree(x);
}

static void t_norm(void)
{
    int N = 128, C = 96;
    for (int kind = 0; kind < 2; kind++) {
        const char *k = kind == GPT_NORM_OP_LAYERNORM ? "layernorm" : "rmsnorm";
        fbuf x = fnew((size_t)N * C, -2, 3), w = fnew(C, 0.5, 1.5), b = fnew(C, -1, 1), y = fnew((size_t)N * C, 0, 0);
        fbuf mean = fnew(N, 0, 0), rstd = fnew(N, 0, 0), dy = fnew((size_t)N * C, -1, 1);
        fbuf dx = fnew((size_t)N * C, -1, 1), dw = fnew(C, -1, 1), db = fnew(C, -1, 1);
        cpu->norm_fwd(cpu, kind, y.c, mean.c, rstd.c, x.c, w.c, b.c, N, C, 1e-5f);
        gpu->norm_fwd(gpu, kind, y.g, mean.g, rstd.g, x.g, w.g, b.g, N, C, 1e-5f);
        char what[80];
        snprintf(what, sizeof what, "%s fwd: y", k), same(y, TOL, what);
        snprintf(what, sizeof what, "%s fwd: mean", k), same(mean, TOL, what);
        snprintf(what, sizeof what, "%s fwd: rstd", k), same(rstd, TOL, what);
        cpu->norm_bwd(cpu, kind, dx.c, dw.c, db.c, dy.c, x.c, w.c, mean.c, rstd.c, N, C);
        gpu->norm_bwd(gpu, kind, dx.g, dw.g, db.g, dy.g, x.g, w.g, mean.g, rstd.g, N, C);
        snprintf(what, sizeof what, "%s bwd: dx accumulates", k), same(dx, TOL, what);
        snprintf(what, sizeof what, "%s bwd: dw accumulates", k), same(dw, TOL, what);
        snprintf(what, sizeof what, "%s bwd: db", k), same(db, TOL, what);
        ffree(x), ffree(w), ffree(b), ffree(y), ffree(mean), ffree(rstd), ffree(dy), ffree(dx), ffree(dw), ffree(db);
    }
}

static void t_rope(void)
{
    int B = 2, T = 64, H = 4, KV = 2, D = 32, ld = (H + 2 * KV) * D, half = D / 2;
    fbuf x = fnew((size_t)B * T * ld, -1, 1), cs = fnew((size_t)T * half, 0, 0), sn = fnew((size_t)T * half, 0, 0);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double a = t * pow(10000.0, -2.0 * i / D);
            cs.c[t * half + i] = (float)cos(a), sn.c[t * half + i] = (float)sin(a);
        }
    push(cs), push(sn);
    cpu->rope(cpu, x.c, ld, B, T, H, D, cs.c, sn.c, 0);
    gpu->rope(gpu, x.g, ld, B, T, H, D, cs.g, sn.g, 0);
    same(x, TOL, "rope on the query heads of a qkv buffer");
    cpu->rope(cpu, x.c + H * D, ld, B, T, KV, D, cs.c, sn.c, 1);
    gpu->rope(gpu, x.g + H * D, ld, B, T, KV, D, cs.g, sn.g, 1);
    same(x, TOL, "rope inverse on the key heads");
    ffree(x), ffree(cs), ffree(sn);
}

static void t_rope_pos(void)
{
    int n = 37, H = 4, KV = 2, D = 32, ld = (H + 2 * KV) * D, half = D / 2, P = 3000;
    fbuf x = fnew((size_t)n * ld, -1, 1), cs = fnew((size_t)P * half, 0, 0), sn = fnew((size_t)P * half, 0, 0);
    for (int t = 0; t < P; t++)
        for (int i = 0; i < half; i++) {
            double a = t * pow(10000.0, -2.0 * i / D);
            cs.c[t * half + i] = (float)cos(a), sn.c[t * half + i] = (float)sin(a);
        }
    push(cs), push(sn);
    int pos[37];
    for (int r = 0; r < n; r++) pos[r] = r % 4 == 0 ? P - 1 : irand(P); /* any order, repeats */
    ibuf p = inew(pos, n);
    cpu->rope_pos(cpu, x.c, ld, n, H, D, cs.c, sn.c, p.c);
    gpu->rope_pos(gpu, x.g, ld, n, H, D, cs.g, sn.g, p.g);
    same(x, TOL, "rope_pos on the query heads (positions out of order)");
    cpu->rope_pos(cpu, x.c + H * D, ld, n, KV, D, cs.c, sn.c, p.c);
    gpu->rope_pos(gpu, x.g + H * D, ld, n, KV, D, cs.g, sn.g, p.g);
    same(x, TOL, "rope_pos on the key heads; the value heads untouched");
    ffree(x), ffree(cs), ffree(sn), ifree(p);
}

/* kv_store then attn_cached: n rows of sequences seq[] at positions pos[] over caches of `ring`
 * slots, (n_seq, ring, KV, D), filled with noise first (stale slots must not be read). */
static void t_kv(int n, const int *seq, const int *pos, int n_seq, int ring, int H, int KV, int D, int window,
                 int with_sinks)
{
    int ldq = (H + 2 * KV) * D + 3; /* a wider row: q, k, v are slices of it */
    float scale = 1.0f / sqrtf((float)D);
    size_t cache = (size_t)n_seq * ring * KV * D;
    fbuf kc = fnew(cache, -1, 1), vc = fnew(cache, -1, 1), qkv = fnew((size_t)n * ldq, -1.5, 1.5);
    fbuf sinks = fnew(H, -1, 2), out = fnew((size_t)n * H * D, 5, 6);
    ibuf sq = inew(seq, n), ps = inew(pos, n);
    const float *sc = with_sinks ? sinks.c : NULL, *sg = with_sinks ? sinks.g : NULL;
    char cfg[128], what[200];
    int maxpos = 0;
    for (int r = 0; r < n; r++) maxpos = pos[r] > maxpos ? pos[r] : maxpos;
    snprintf(cfg, sizeof cfg, "n=%d ring=%d H=%d KV=%d D=%d window=%d%s, last position %d", n, ring, H, KV, D, window,
             with_sinks ? " sinks" : "", maxpos);
    cpu->kv_store(cpu, kc.c, vc.c, qkv.c + H * D, qkv.c + (H + KV) * D, ldq, sq.c, ps.c, n, ring, KV, D);
    gpu->kv_store(gpu, kc.g, vc.g, qkv.g + H * D, qkv.g + (H + KV) * D, ldq, sq.g, ps.g, n, ring, KV, D);
    snprintf(what, sizeof what, "kv_store %s: keys (exact)", cfg), same(kc, 0, what);
    snprintf(what, sizeof what, "kv_store %s: values (exact)", cfg), same(vc, 0, what);
    cpu->attn_cached(cpu, out.c, qkv.c, ldq, kc.c, vc.c, sq.c, ps.c, n, ring, sc, H, KV, D, window, scale);
    gpu->attn_cached(gpu, out.g, qkv.g, ldq, kc.g, vc.g, sq.g, ps.g, n, ring, sg, H, KV, D, window, scale);
    snprintf(what, sizeof what, "attn_cached %s", cfg), same(out, TOL, what);
    ffree(kc), ffree(vc), ffree(qkv), ffree(sinks), ffree(out), ifree(sq), ifree(ps);
}

static void t_kv_all(int quick)
{
    /* full layers (ring = cache length): one sequence's rows in order, others interleaved */
    int s1[6] = {0, 0, 0, 2, 1, 2}, p1[6] = {0, 1, 2, 299, 150, 257};
    t_kv(6, s1, p1, 3, 300, 4, 2, 32, 0, 1);
    t_kv(6, s1, p1, 3, 300, 4, 4, 16, 0, 0);
    /* sliding layers: a ring of window + 7 slots, positions far past it (the ring wraps) */
    int p2[6] = {990, 991, 992, 17, 4, 1000};
    t_kv(6, s1, p2, 3, 16 + 7, 4, 2, 64, 16, 1);
    t_kv(6, s1, p2, 3, 5 + 7, 8, 2, 64, 5, 0);
    /* long contexts: one decoding row over 20000 keys (many splits), and a prefill chunk of 128
     * rows (few, long splits); the old kernel held every score in shared memory */
    int s3[128], p3[128];
    for (int i = 0; i < 128; i++) s3[i] = i % 2, p3[i] = 19000 + i / 2;
    p3[0] = 19999;
    t_kv(1, s3, p3, 2, 20000, 8, 1, 64, 0, 1);
    if (!quick) {
        t_kv(128, s3, p3, 2, 20000, 4, 2, 64, 0, 1);
        t_kv(3, s3, p3, 2, 20000, 2, 2, 128, 0, 0);
        t_kv(2, s3, p3, 2, 20000, 4, 1, 256, 0, 1);
    }
}

static const char *attn_kind = "flash";
/* the attention checks' tolerance: fp32 kernels 1e-5; the tensor-core kernels (GPT_CUDA_ATTN=tc)
 * round Q, K, V, dO, P and dS to bf16 (8 significant bits, a relative step of 2^-8 = 3.9e-3) */
static double attn_tol = TOL;
/* > 0: the out error must exceed this too (the tensor-core kernels are really the ones running) */
static double attn_min = 0;

static int tc_ok_d(int D) { return D == 16 || D == 32 || D == 64 || D == 96 || D == 128; }

static void t_attn(int B, int T, int H, int KV, int D, int window, int with_sinks)
{
    int ld = (H + 2 * KV) * D, N = B * T;
    float scale = 1.0f / sqrtf((float)D);
    fbuf qkv = fnew((size_t)N * ld, -1.5, 1.5), sinks = fnew(H, -1, 2), out = fnew((size_t)N * H * D, 0, 0);
    fbuf lse = fnew((size_t)B * H * T, 0, 0), dout = fnew((size_t)N * H * D, -1, 1);
    fbuf dqkv = fnew((size_t)N * ld, -9, 9), dsinks = fnew(H, -1, 1); /* dqkv: garbage to be overwritten */
    float *dsinks0 = malloc((size_t)H * sizeof *dsinks0);
    memcpy(dsinks0, dsinks.c, (size_t)H * sizeof *dsinks0);
    const float *sc = with_sinks ? sinks.c : NULL, *sg = with_sinks ? sinks.g : NULL;
    char what[160], cfg[96];
    snprintf(cfg, sizeof cfg, "[%s] B=%d T=%d H=%d KV=%d D=%d window=%d%s", attn_kind, B, T, H, KV, D, window,
             with_sinks ? " sinks" : "");
    cpu->attn_fwd(cpu, out.c, lse.c, qkv.c, sc, B, T, H, KV, D, window, scale);
    gpu->attn_fwd(gpu, out.g, lse.g, qkv.g, sg, B, T, H, KV, D, window, scale);
    snprintf(what, sizeof what, "attn_fwd %s: out", cfg), same(out, attn_tol, what);
    if (attn_min > 0 && tc_ok_d(D)) {
        float *h = down(out);
        double e = rel_err(h, out.c, out.n);
        free(h);
        ok(e > attn_min, "attn_fwd %s: bf16 rounding shows (err %.2e > %.0e): the tensor-core kernels ran", cfg, e,
           attn_min);
    }
    snprintf(what, sizeof what, "attn_fwd %s: lse", cfg), same(lse, attn_tol, what);
    cpu->attn_bwd(cpu, dqkv.c, dsinks.c, dout.c, out.c, lse.c, qkv.c, sc, B, T, H, KV, D, window, scale);
    gpu->attn_bwd(gpu, dqkv.g, dsinks.g, dout.g, out.g, lse.g, qkv.g, sg, B, T, H, KV, D, window, scale);
    snprintf(what, sizeof what, "attn_bwd %s: dqkv", cfg), same(dqkv, attn_tol, what);
    if (with_sinks) {
        /* dsinks[h] sums B*T row terms -exp(sink - lse) (dO . O) that cancel: two fp32 orders of the
         * same sum differ by rounding relative to the sum of the terms' magnitudes, not to the
         * (smaller) result. Measure it so: |gpu - cpu| / (|initial| + sum |term|), per head. */
        float *g = down(dsinks);
        double worst = 0;
        for (int h = 0; h < H; h++) {
            double mag = fabs(dsinks0[h]);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    const float *o = out.c + ((size_t)b * T + t) * H * D + (size_t)h * D;
                    const float *go = dout.c + ((size_t)b * T + t) * H * D + (size_t)h * D;
                    double d = 0;
                    for (int x = 0; x < D; x++) d += (double)o[x] * go[x];
                    mag += fabs(exp((double)sinks.c[h] - lse.c[((size_t)b * H + h) * T + t]) * d);
                }
            double e = fabs((double)g[h] - dsinks.c[h]) / (mag > 0 ? mag : 1);
            worst = e > worst ? e : worst;
        }
        free(g);
        ok(worst <= attn_tol, "attn_bwd %s: dsinks accumulate (max err %.2e relative to the terms' magnitude, target %.0e)",
           cfg, worst, attn_tol);
    }
    free(dsinks0);
    ffree(qkv), ffree(sinks), ffree(out), ffree(lse), ffree(dout), ffree(dqkv), ffree(dsinks);
}

static void t_act(void)
{
    size_t n = 10000;
    fbuf x = fnew(n, -6, 6), y = fnew(n, 0, 0), dy = fnew(n, -1, 1);
    cpu->gelu_fwd(cpu, y.c, x.c, n);
    gpu->gelu_fwd(gpu, y.g, x.g, n);
    same(y, TOL, "gelu_fwd");
    cpu->gelu_bwd(cpu, dy.c, x.c, dy.c, n);
    gpu->gelu_bwd(gpu, dy.g, x.g, dy.g, n);
    same(dy, TOL, "gelu_bwd (dx aliases dy)");
    int N = 60, F = 40;
    fbuf gu = fnew((size_t)N * 2 * F, -10, 10), h = fnew((size_t)N * F, 0, 0), dh = fnew((size_t)N * F, -1, 1);
    fbuf dgu = fnew((size_t)N * 2 * F, -1, 1);
    gu.c[0] = 7.0f, gu.c[1] = -7.0f, gu.c[3] = 7.0f; /* on the clamp edges */
    push(gu);
    cpu->swiglu_fwd(cpu, h.c, gu.c, N, F, 1.702f, 7.0f);
    gpu->swiglu_fwd(gpu, h.g, gu.g, N, F, 1.702f, 7.0f);
    same(h, TOL, "swiglu_fwd (clamped)");
    cpu->swiglu_bwd(cpu, dgu.c, gu.c, dh.c, N, F, 1.702f, 7.0f);
    gpu->swiglu_bwd(gpu, dgu.g, gu.g, dh.g, N, F, 1.702f, 7.0f);
    same(dgu, TOL, "swiglu_bwd (clamped)");
    ffree(x), ffree(y), ffree(dy), ffree(gu), ffree(h), ffree(dh), ffree(dgu);
}

static void t_moe(void)
{
    int N = 100, E = 16, K = 4;
    fbuf lg = fnew((size_t)N * E, -3, 3);
    for (int e = 0; e < E; e++) lg.c[e] = 0.5f; /* row 0: all tied, lower index first */
    lg.c[E + 5] = lg.c[E + 9] = 9.0f;            /* row 1: a tie at the top */
    push(lg);
    int *zero = calloc((size_t)N * K, sizeof *zero);
    ibuf idx = inew(zero, (size_t)N * K);
    fbuf w = fnew((size_t)N * K, 0, 0);
    cpu->topk_softmax(cpu, idx.c, w.c, lg.c, N, E, K);
    gpu->topk_softmax(gpu, idx.g, w.g, lg.g, N, E, K);
    same_int(idx, "topk_softmax: indices (ties to the lower index)");
    same(w, TOL, "topk_softmax: weights");
    fbuf dw = fnew((size_t)N * K, -1, 1), dl = fnew((size_t)N * E, -1, 1);
    cpu->topk_softmax_bwd(cpu, dl.c, dw.c, w.c, idx.c, N, E, K);
    gpu->topk_softmax_bwd(gpu, dl.g, dw.g, w.g, idx.g, N, E, K);
    same(dl, TOL, "topk_softmax_bwd accumulates");
    fbuf p = fnew((size_t)N * E, 0, 0), g = fnew(E, -1, 1), cs = fnew(E, 5, 6);
    cpu->softmax_rows(cpu, p.c, lg.c, N, E);
    gpu->softmax_rows(gpu, p.g, lg.g, N, E);
    same(p, TOL, "softmax_rows");
    cpu->softmax_rows_bwd_shared(cpu, dl.c, p.c, g.c, N, E);
    gpu->softmax_rows_bwd_shared(gpu, dl.g, p.g, g.g, N, E);
    same(dl, TOL, "softmax_rows_bwd_shared accumulates");
    cpu->colsum(cpu, cs.c, p.c, N, E);
    gpu->colsum(gpu, cs.g, p.g, N, E);
    same(cs, TOL, "colsum (overwrites)");

    int R = 20, n = 50, C = 33, *rows = malloc((size_t)n * sizeof *rows);
    for (int i = 0; i < n; i++) rows[i] = i % 5 == 0 ? 7 : irand(R);
    ibuf rw = inew(rows, n);
    fbuf src = fnew((size_t)R * C, -1, 1), sc = fnew(n, -2, 2), dst = fnew((size_t)n * C, 0, 0);
    cpu->gather_rows(cpu, dst.c, src.c, rw.c, sc.c, n, C);
    gpu->gather_rows(gpu, dst.g, src.g, rw.g, sc.g, n, C);
    same(dst, TOL, "gather_rows scaled");
    cpu->gather_rows(cpu, dst.c, src.c, rw.c, NULL, n, C);
    gpu->gather_rows(gpu, dst.g, src.g, rw.g, NULL, n, C);
    same(dst, 0, "gather_rows (exact)");
    cpu->scatter_add_rows(cpu, src.c, dst.c, rw.c, sc.c, n, C);
    gpu->scatter_add_rows(gpu, src.g, dst.g, rw.g, sc.g, n, C);
    same(src, TOL, "scatter_add_rows scaled, repeated rows");
    cpu->scatter_add_rows(cpu, src.c, dst.c, rw.c, NULL, n, C);
    gpu->scatter_add_rows(gpu, src.g, dst.g, rw.g, NULL, n, C);
    same(src, TOL, "scatter_add_rows unscaled");
    cpu->scatter_add_rows(cpu, src.c, sc.c, rw.c, NULL, n, 1);
    gpu->scatter_add_rows(gpu, src.g, sc.g, rw.g, NULL, n, 1);
    same(src, TOL, "scatter_add_rows of single floats");
    fbuf rd = fnew(n, 0, 0);
    cpu->row_dot(cpu, rd.c, src.c, rw.c, dst.c, n, C);
    gpu->row_dot(gpu, rd.g, src.g, rw.g, dst.g, n, C);
    same(rd, TOL, "row_dot");
    free(zero), free(rows);
    ffree(lg), ifree(idx), ffree(w), ffree(dw), ffree(dl), ffree(p), ffree(g), ffree(cs);
    ifree(rw), ffree(src), ffree(sc), ffree(dst), ffree(rd);
}

static void t_xent(void)
{
    int N = 40, V = 1000, Vp = 1024;
    int *tg = malloc((size_t)N * sizeof *tg);
    for (int i = 0; i < N; i++) tg[i] = i % 9 == 4 ? -100 : irand(V);
    fbuf lg = fnew((size_t)N * Vp, -4, 4);
    lg.c[0 * Vp + 10] = lg.c[0 * Vp + 20] = 50.0f; /* a tied argmax: the first one counts */
    tg[0] = 10;
    lg.c[1 * Vp + V + 3] = 99.0f; /* padding columns are not part of the softmax */
    push(lg);
    ibuf t = inew(tg, N);
    fbuf loss = fnew(N, 0, 0), dl = fnew((size_t)N * Vp, 7, 8);
    int *zero = calloc((size_t)N, sizeof *zero);
    ibuf cor = inew(zero, N);
    cpu->xent(cpu, loss.c, cor.c, NULL, lg.c, t.c, N, V, Vp, 0.1f, 0.0f);
    gpu->xent(gpu, loss.g, cor.g, NULL, lg.g, t.g, N, V, Vp, 0.1f, 0.0f);
    same(loss, TOL, "xent: smoothed losses");
    same_int(cor, "xent: argmax == target (ties to the first)");
    cpu->xent(cpu, loss.c, cor.c, dl.c, lg.c, t.c, N, V, Vp, 0.1f, 1.0f / 35);
    gpu->xent(gpu, loss.g, cor.g, dl.g, lg.g, t.g, N, V, Vp, 0.1f, 1.0f / 35);
    same(dl, TOL, "xent: dlogits (ignored rows and padding zero)");
    cpu->xent(cpu, loss.c, cor.c, lg.c, lg.c, t.c, N, V, Vp, 0.0f, 1.0f / 35);
    gpu->xent(gpu, loss.g, cor.g, lg.g, lg.g, t.g, N, V, Vp, 0.0f, 1.0f / 35);
    same(loss, TOL, "xent in place: losses");
    same(lg, TOL, "xent in place: dlogits overwrite the logits");
    free(tg), free(zero);
    ffree(lg), ifree(t), ffree(loss), ffree(dl), ifree(cor);
}

/* bf16 GEMMs: operands rounded to 8 significant bits, sums in fp32. Each product has a relative
 * error of up to 2^-8; over K random terms the errors mostly cancel: 1e-2 of the result's scale. */
static void t_gemm_bf16(void)
{
    int M = 64, N = 48, K = 256;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 3, ldc = N + 2;
            fbuf A = fnew((size_t)(ta ? K : M) * lda, -1, 1), B = fnew((size_t)(tb ? N : K) * ldb, -1, 1);
            fbuf C = fnew((size_t)M * ldc, -1, 1);
            cpu->gemm(cpu, ta, tb, M, N, K, 0.5f, A.c, lda, B.c, ldb, 0.25f, C.c, ldc);
            gpu->gemm(gpu, ta, tb, M, N, K, 0.5f, A.g, lda, B.g, ldb, 0.25f, C.g, ldc);
            float *h = down(C);
            double e = rel_err(h, C.c, C.n);
            ok(e <= 1e-2 && e > 1e-6, "bf16 gemm ta=%d tb=%d: within bf16 rounding, and not fp32 (max rel err %.2e)",
               ta, tb, e);
            float *a0 = malloc(A.n * sizeof *a0);
            gpu->to_host(gpu, a0, A.g, A.n * sizeof *a0);
            ok(memcmp(a0, A.c, A.n * sizeof *a0) == 0, "bf16 gemm ta=%d tb=%d: the fp32 operand is left as it was", ta,
               tb);
            free(h), free(a0);
            ffree(A), ffree(B), ffree(C);
        }
}

/* ---- the tiny reference models, CPU against CUDA ---- */

static int64_t *read_i64(const gpt_st_file *f, const char *name, size_t *n)
{
    const gpt_st_tensor *t = gpt_st_find(f, name);
    if (!t || t->dtype != GPT_ST_I64) return NULL;
    int64_t *v = malloc(t->nbytes);
    memcpy(v, t->data, t->nbytes);
    *n = t->numel;
    return v;
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

/* forward + backward; logits (N*Vp) and grads (total) copied to host */
static int step(gpt_model *m, const int *tok, const int *tgt, int B, int T, float smoothing, gpt_loss *loss,
                float **logits, float **grads)
{
    gpt_err err;
    gpt_backend *be = gpt_model_backend(m);
    const gpt_model_config *c = gpt_model_config_of(m);
    size_t nl = (size_t)B * T * c->padded_vocab_size, ng = gpt_model_params(m)->total;
    gpt_forward_opts o = {.label_smoothing = smoothing};
    gpt_model_zero_grad(m);
    if (gpt_model_forward(m, tok, tgt, B, T, &o, loss, &err) < 0) {
        diag("forward on %s: %s", be->name, err.msg);
        return -1;
    }
    *logits = malloc(nl * sizeof(float));
    be->to_host(be, *logits, gpt_model_logits(m), nl * sizeof(float));
    if (gpt_model_backward(m, &err) < 0) {
        diag("backward on %s: %s", be->name, err.msg);
        return -1;
    }
    *grads = malloc(ng * sizeof(float));
    be->to_host(be, *grads, gpt_model_grad_data(m), ng * sizeof(float));
    return 0;
}

/* tol: logits and losses (relative); gtol: gradients. bf16 runs skip the exact checks (correct-token
 * counts, determinism), which fp32 runs make. */
static void check_model(const char *dir, const char *kind, double tol, double gtol)
{
    int exact = tol <= TOL;
    char path[512];
    gpt_err err;
    gpt_config cfg;
    snprintf(path, sizeof path, "t/data/ref/%s/model.yaml", dir);
    if (!ok(gpt_config_load(path, &cfg, &err) == 0, "%s: config loads", dir)) {
        diag("%s", err.msg);
        return;
    }
    gpt_model *mc = load(dir, &cfg, cpu), *mg = load(dir, &cfg, gpu);
    snprintf(path, sizeof path, "t/data/ref/%s/expected.safetensors", dir);
    gpt_st_file *ex = gpt_st_open(path, &err);
    if (!ok(mc && mg && ex, "%s: models on both backends and the inputs load", dir)) {
        if (!ex) diag("%s", err.msg);
        return;
    }
    size_t n, nl;
    int64_t *ids = read_i64(ex, "input_ids", &n), *shl = read_i64(ex, "shift_labels", &nl);
    const gpt_st_tensor *it = gpt_st_find(ex, "input_ids");
    int B = (int)it->shape[0], T = (int)it->shape[1], N = B * T;
    int *tok = malloc((size_t)N * sizeof *tok), *tgt = malloc((size_t)N * sizeof *tgt);
    for (int i = 0; i < N; i++) tok[i] = (int)ids[i], tgt[i] = (int)shl[i];
    const gpt_param_table *tab = gpt_model_params(mc);
    size_t Vp = (size_t)cfg.model.padded_vocab_size;

    for (int pass = 0; pass < 2; pass++) {
        float sm = pass ? 0.1f : 0.0f;
        gpt_loss lc, lg;
        float *logc = NULL, *logg = NULL, *gc = NULL, *gg = NULL;
        if (!ok(step(mc, tok, tgt, B, T, sm, &lc, &logc, &gc) == 0 && step(mg, tok, tgt, B, T, sm, &lg, &logg, &gg) == 0,
                "[%s] %s (smoothing %.1f): forward and backward run on both", kind, dir, sm))
            return;
        double e = rel_err(logg, logc, (size_t)N * Vp);
        /* With reduced precision a router may pick another expert for a token whose top-k scores
         * nearly tie, which moves that token (and a little of what attends to it) by more than
         * rounding: routed models are held to most rows, their loss and no gradient target. */
        int routed = !exact && cfg.model.mlp == GPT_MLP_MOE, good = 0;
        for (int r = 0; r < N; r++) good += rel_err(logg + (size_t)r * Vp, logc + (size_t)r * Vp, Vp) <= tol;
        if (!routed)
            ok(e <= tol, "[%s] %s (smoothing %.1f): logits (max rel err %.2e, target %.0e)", kind, dir, sm, e, tol);
        else
            ok(good * 4 >= N * 3, "[%s] %s (smoothing %.1f): logits of %d of %d rows within %.0e (max rel err %.2e)",
               kind, dir, sm, good, N, tol, e);
        if (!exact) ok(e > 1e-6, "[%s] %s: the logits show the reduced precision (it is on)", kind, dir);
        if (!routed)
            ok(fabs(lg.total - lc.total) <= tol * fabs(lc.total) && fabs(lg.nll - lc.nll) <= tol * fabs(lc.nll) &&
                   fabs(lg.ce - lc.ce) <= tol * fabs(lc.ce) && fabs(lg.aux - lc.aux) <= tol * fabs(lc.aux) + 1e-12,
               "[%s] %s (smoothing %.1f): losses: total %.7f vs %.7f, nll %.7f vs %.7f, aux %.7f vs %.7f", kind, dir,
               sm, lg.total, lc.total, lg.nll, lc.nll, lg.aux, lc.aux);
        else
            ok(fabs(lg.nll - lc.nll) <= 3 * tol * fabs(lc.nll), "[%s] %s (smoothing %.1f): nll %.7f vs %.7f (aux %.7f vs %.7f)",
               kind, dir, sm, lg.nll, lc.nll, lg.aux, lc.aux);
        if (exact) is_int(lg.n_correct, lc.n_correct, "[%s] %s (smoothing %.1f): correct tokens", kind, dir, sm);
        double worst = 0;
        const char *wn = "";
        for (int i = 0; i < tab->n; i++) {
            const gpt_tensor *t = &tab->t[i];
            double ge = rel_err(gg + t->offset, gc + t->offset, t->numel);
            if (ge > worst) worst = ge, wn = t->name;
        }
        if (!routed)
            ok(worst <= gtol, "[%s] %s (smoothing %.1f): all %d gradients (worst %.2e in %s, target %.0e)", kind, dir,
               sm, tab->n, worst, wn, gtol);
        else
            diag("[%s] %s (smoothing %.1f): worst gradient error %.2e in %s (not a target: routing)", kind, dir, sm,
                 worst, wn);
        if (pass == 1 && exact) {
            /* the device is deterministic: the same step again gives the same bits */
            gpt_loss l2;
            float *log2 = NULL, *g2 = NULL;
            step(mg, tok, tgt, B, T, sm, &l2, &log2, &g2);
            ok(log2 && g2 && memcmp(log2, logg, (size_t)N * Vp * sizeof(float)) == 0 &&
                   memcmp(g2, gg, tab->total * sizeof(float)) == 0,
               "[%s] %s: a second device step gives the same logits and gradients, bit for bit", kind, dir);
            free(log2), free(g2);
        }
        free(logc), free(logg), free(gc), free(gg);
    }
    free(ids), free(shl), free(tok), free(tgt);
    gpt_st_close(ex);
    gpt_model_free(mc);
    gpt_model_free(mg);
    gpt_config_free(&cfg);
}

/* KV-cache decoding on the device against the CPU's (which t/test_kv_cache.c holds to a full
 * recompute): token by token (the gpt-oss fixture's sliding ring wraps), chunked prefill with two
 * sequences in one call, a whole prompt in one call, and a forked sequence. */
static double max_rel_rows(const float *a, const float *b, int rows, int V)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double e = rel_err(a + (size_t)r * V, b + (size_t)r * V, (size_t)V);
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void check_decode(const char *dir)
{
    char path[512];
    gpt_err err;
    gpt_config cfg;
    snprintf(path, sizeof path, "t/data/ref/%s/model.yaml", dir);
    if (!ok(gpt_config_load(path, &cfg, &err) == 0, "decode %s: config loads", dir)) {
        diag("%s", err.msg);
        return;
    }
    gpt_model *mc = load(dir, &cfg, cpu), *mg = load(dir, &cfg, gpu);
    if (!ok(mc && mg, "decode %s: models load on both backends", dir)) return;
    const gpt_model_config *c = gpt_model_config_of(mc);
    int T = c->max_seq_len < 150 ? c->max_seq_len : 150, V = c->vocab_size;
    int tok[2][150], sq[150] = {0};
    for (int t = 0; t < T; t++) tok[0][t] = (t * 37 + 11) % V, tok[1][t] = (t * 101 + 7) % V;
    gpt_kv_cache *kcc = gpt_kv_cache_create(mc, 2, T, &err), *kcg = gpt_kv_cache_create(mg, 2, T, &err);
    if (!ok(kcc && kcg, "decode %s: caches of %d tokens on both", dir, T)) return;
    float *oc = malloc((size_t)T * V * sizeof *oc), *og = malloc((size_t)T * V * sizeof *og);
    double worst = 0;
    int fails = 0;
    for (int t = 0; t < T; t++) {
        int s = 0;
        fails += gpt_model_extend(mc, kcc, &tok[0][t], &s, 1, oc, &err) < 0;
        fails += gpt_model_extend(mg, kcg, &tok[0][t], &s, 1, og, &err) < 0;
        double e = rel_err(og, oc, (size_t)V);
        worst = e > worst ? e : worst;
    }
    ok(!fails && worst <= TOL, "decode %s: token by token, %d steps: device logits = cpu's (max rel %.2e)", dir, T,
       worst);

    gpt_kv_cache_clear(kcc, -1), gpt_kv_cache_clear(kcg, -1);
    worst = 0;
    for (int t = 0; t + 2 < T; t += 3) {
        int tk[4] = {tok[1][t], tok[1][t + 1], tok[1][t + 2], tok[0][t / 3]}, s4[4] = {1, 1, 1, 0};
        fails += gpt_model_extend(mc, kcc, tk, s4, 4, oc, &err) < 0;
        fails += gpt_model_extend(mg, kcg, tk, s4, 4, og, &err) < 0;
        double e = max_rel_rows(og, oc, 4, V);
        worst = e > worst ? e : worst;
    }
    ok(!fails && worst <= TOL, "decode %s: chunks of 3 and a second sequence in each call (max rel %.2e)", dir, worst);

    gpt_kv_cache_clear(kcc, -1), gpt_kv_cache_clear(kcg, -1);
    int n1 = T < GPT_KV_CHUNK ? T : GPT_KV_CHUNK;
    fails += gpt_model_extend(mc, kcc, tok[1], sq, n1, oc, &err) < 0;
    fails += gpt_model_extend(mg, kcg, tok[1], sq, n1, og, &err) < 0;
    worst = max_rel_rows(og, oc, n1, V);
    ok(!fails && worst <= TOL, "decode %s: a prompt of %d tokens in one call (max rel %.2e)", dir, n1, worst);

    /* fork: sequence 1 becomes a copy of sequence 0, then both go on with different tokens */
    gpt_kv_cache_copy(kcc, 1, 0), gpt_kv_cache_copy(kcg, 1, 0);
    if (n1 + 1 < T) {
        int tk[2] = {tok[0][3], tok[0][4]}, s2[2] = {0, 1};
        fails += gpt_model_extend(mc, kcc, tk, s2, 2, oc, &err) < 0;
        fails += gpt_model_extend(mg, kcg, tk, s2, 2, og, &err) < 0;
        worst = max_rel_rows(og, oc, 2, V);
        ok(!fails && worst <= TOL, "decode %s: a forked sequence goes on as on the cpu (max rel %.2e)", dir, worst);
    }
    free(oc), free(og);
    gpt_kv_cache_free(kcc), gpt_kv_cache_free(kcg);
    gpt_model_free(mc), gpt_model_free(mg);
    gpt_config_free(&cfg);
}

static gpt_backend *cuda_with(const char *var, const char *val, gpt_err *err)
{
    setenv(var, val, 1);
    gpt_backend *be = gpt_backend_cuda(0, err);
    unsetenv(var);
    return be;
}

int main(void)
{
    gpt_err err;
    /* the backend under test is the default one: fp32 GEMMs, flash attention */
    unsetenv("GPT_CUDA_TF32"), unsetenv("GPT_CUDA_GEMM"), unsetenv("GPT_CUDA_ATTN");
    gpu = gpt_backend_cuda(0, &err);
    if (!gpu) {
        char reason[1100];
        snprintf(reason, sizeof reason, "%s", err.msg);
        for (char *p = reason; *p; p++)
            if (*p == '\n') *p = ' ';
        skip_all(reason);
    }
    cpu = gpt_backend_cpu();
    /* GPT_CUDA_TEST_QUICK=1 (for compute-sanitizer, which runs kernels ~100x slower): small ops only */
    const char *q = getenv("GPT_CUDA_TEST_QUICK");
    int quick = q && *q && strcmp(q, "0") != 0;
    gpt_backend *simple = cuda_with("GPT_CUDA_ATTN", "simple", &err);
    if (!ok(simple != NULL, "GPT_CUDA_ATTN=simple gives a backend")) diag("%s", err.msg);
    /* bf16 GEMMs with the fp32 flash attention; unset, GPT_CUDA_ATTN would pick tc with bf16 GEMMs */
    setenv("GPT_CUDA_ATTN", "flash", 1);
    gpt_backend *bf16 = cuda_with("GPT_CUDA_GEMM", "bf16", &err);
    unsetenv("GPT_CUDA_ATTN");
    gpt_backend *bf16auto = cuda_with("GPT_CUDA_GEMM", "bf16", &err);
    if (!ok(bf16auto != NULL, "GPT_CUDA_GEMM=bf16 (attention unset) gives a backend")) diag("%s", err.msg);
    if (!ok(bf16 != NULL, "GPT_CUDA_GEMM=bf16 gives a backend")) diag("%s", err.msg);
    gpt_backend *tc = cuda_with("GPT_CUDA_ATTN", "tc", &err);
    if (!ok(tc != NULL, "GPT_CUDA_ATTN=tc gives a backend")) diag("%s", err.msg);
    setenv("GPT_CUDA_GEMM", "bf16", 1);
    gpt_backend *bf16tc = cuda_with("GPT_CUDA_ATTN", "tc", &err); /* mixed precision: bf16 GEMMs and attention */
    unsetenv("GPT_CUDA_GEMM");
    if (!ok(bf16tc != NULL, "GPT_CUDA_GEMM=bf16 GPT_CUDA_ATTN=tc gives a backend")) diag("%s", err.msg);
    gpt_backend *bad = cuda_with("GPT_CUDA_GEMM", "fp8", &err);
    ok(!bad && strstr(err.msg, "GPT_CUDA_GEMM"), "GPT_CUDA_GEMM=fp8 is refused: %s", bad ? "(accepted)" : err.msg);
    if (bad) bad->destroy(bad);
    gpt_backend *tf32 = cuda_with("GPT_CUDA_GEMM", "tf32", &err);
    if (!ok(tf32 != NULL, "GPT_CUDA_GEMM=tf32 gives a backend")) diag("%s", err.msg);
    t_gemm();
    t_gemm_grouped("fp32", TOL);
    if (tf32) { /* operands rounded to 10-bit mantissas: bf16's tolerance is ample */
        gpt_backend *keep = gpu;
        gpu = tf32;
        t_gemm_grouped("tf32", 1e-2);
        gpu = keep;
        tf32->destroy(tf32);
    }
    t_small();
    t_embed();
    t_norm();
    t_rope();
    t_rope_pos();
    t_kv_all(quick);
    for (int pass = 0; pass < 4; pass++) {
        gpt_backend *keep = gpu;
        if (pass == 1) {
            if (!simple) continue;
            gpu = simple, attn_kind = "simple";
        }
        if (pass == 2) { /* head sizes 16, 32, 64, 96, 128 on the tensor cores; 6 and 256 hand over to flash */
            if (!tc) continue;
            gpu = tc, attn_kind = "tc", attn_tol = 2e-2;
        }
        if (pass == 3) { /* bf16 GEMMs and GPT_CUDA_ATTN unset: the tensor-core kernels by default */
            if (!bf16auto) continue;
            gpu = bf16auto, attn_kind = "bf16 default", attn_tol = 2e-2, attn_min = 1e-5;
        }
        t_attn(2, 64, 4, 2, 32, 0, 0);
        t_attn(2, 64, 4, 2, 32, 16, 1);
        t_attn(1, 64, 4, 4, 32, 0, 1);
        t_attn(3, 77, 8, 2, 16, 5, 1);  /* partial tiles, a window inside a tile, 4 heads per kv head */
        t_attn(1, 45, 2, 1, 6, 0, 1);   /* D not a multiple of 4: the flash path hands over to simple */
        t_attn(2, 100, 2, 2, 128, 33, 0); /* D = 128 (shared memory over 48 KiB), window across tiles */
        if (!quick) {
            t_attn(1, 1024, 2, 1, 128, 0, 1);
            t_attn(1, 1024, 4, 2, 64, 128, 1);
            t_attn(2, 300, 2, 1, 256, 0, 1);
            t_attn(1, 513, 3, 1, 96, 200, 1);
        }
        gpu = keep, attn_kind = "flash", attn_tol = TOL, attn_min = 0;
    }
    t_act();
    t_moe();
    t_xent();
    if (!quick) {
        check_model("tiny-gpt2", "fp32", TOL, 1e-4);
        check_model("tiny-gpt-oss", "fp32", TOL, 1e-4);
        check_decode("tiny-gpt-oss");
        check_decode("tiny-gpt2");
        if (simple) {
            gpt_backend *keep = gpu;
            gpu = simple;
            check_model("tiny-gpt2", "simple attention", TOL, 1e-4);
            check_model("tiny-gpt-oss", "simple attention", TOL, 1e-4);
            gpu = keep;
        }
    }
    if (bf16) {
        gpt_backend *keep = gpu;
        gpu = bf16;
        t_gemm_bf16();
        t_gemm_grouped("bf16", 1e-2);
        if (!quick) {
            /* gradients: bf16 operands in every backward GEMM; 1e-1 still catches a wrong operand */
            check_model("tiny-gpt2", "bf16 gemm", 1e-2, 1e-1);
            check_model("tiny-gpt-oss", "bf16 gemm", 1e-2, 1e-1);
        }
        gpu = keep;
    }
    if (bf16tc && !quick) { /* the same bounds with the attention products in bf16 too */
        gpt_backend *keep = gpu;
        gpu = bf16tc;
        check_model("tiny-gpt2", "bf16 gemm, tc attention", 1e-2, 1e-1);
        check_model("tiny-gpt-oss", "bf16 gemm, tc attention", 1e-2, 1e-1);
        gpu = keep;
    }
    if (simple) simple->destroy(simple);
    if (bf16) bf16->destroy(bf16);
    if (tc) tc->destroy(tc);
    if (bf16tc) bf16tc->destroy(bf16tc);
    if (bf16auto) bf16auto->destroy(bf16auto);
    cpu->destroy(cpu);
    gpu->destroy(gpu);
    return done_testing();
}
