/* Every backward op of the CPU backend against central finite differences, in double precision:
 * this file compiles lib/backend_cpu.c itself with real = double, so the code checked is the
 * code that runs (in float) everywhere else. */
#define GPT_CPU_REAL double
#pragma GCC diagnostic ignored "-Wunused-function" /* ops not checked here */
#define GPT_CPU_FD_TEST
#include "backend_cpu.c"

#include "tap.h"

static uint64_t rs = 0x2545F4914F6CDD1Dull;
static double urand(void) /* uniform in [-1, 1) */
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (double)(rs >> 11) / 4503599627370496.0 - 1.0;
}
static double *rvec(size_t n, double s)
{
    double *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = s * urand();
    return v;
}
static double dotv(const double *a, const double *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] * b[i];
    return d;
}

/* L(x) = r . f(x); fills y (ny) from x. */
typedef void (*fwd_fn)(void *ctx, const double *x, double *y);

/* Compares analytic dL/dx (g, nx) with central differences on up to 64 coordinates. */
static double fd_check(fwd_fn f, void *ctx, double *x, size_t nx, const double *r, size_t ny, const double *g)
{
    double *y = malloc(ny * sizeof *y), worst = 0, scale = 1e-12;
    for (size_t i = 0; i < nx; i++) scale = fabs(g[i]) > scale ? fabs(g[i]) : scale;
    size_t step = nx > 64 ? nx / 64 : 1;
    for (size_t i = 0; i < nx; i += step) {
        double save = x[i], h = 1e-6 * (fabs(save) > 1 ? fabs(save) : 1);
        x[i] = save + h;
        f(ctx, x, y);
        double lp = dotv(r, y, ny);
        x[i] = save - h;
        f(ctx, x, y);
        double lm = dotv(r, y, ny);
        x[i] = save;
        double e = fabs((lp - lm) / (2 * h) - g[i]) / scale;
        worst = e > worst ? e : worst;
    }
    free(y);
    return worst;
}

#define TOL 1e-6
#define CHECK(name, e) ok((e) < TOL, "%s backward matches finite differences (rel %.1e)", name, (e))

/* ---- attention: qkv -> out, and sinks ---- */
typedef struct {
    int B, T, H, KV, D, W;
    double *sinks, *qkv, *lse;
} attn_ctx;
static void attn_f(void *v, const double *x, double *y)
{
    attn_ctx *c = v;
    cpu_attn_fwd(NULL, y, c->lse, x, c->sinks, c->B, c->T, c->H, c->KV, c->D, c->W, 0.35);
}
static void attn_sink_f(void *v, const double *x, double *y)
{
    attn_ctx *c = v;
    cpu_attn_fwd(NULL, y, c->lse, c->qkv, x, c->B, c->T, c->H, c->KV, c->D, c->W, 0.35);
}
static void test_attention(int T, int window, int sinks)
{
    attn_ctx c = {2, T, 4, 2, 6, window, NULL, NULL, NULL};
    size_t nq = (size_t)c.B * c.T * (c.H + 2 * c.KV) * c.D, no = (size_t)c.B * c.T * c.H * c.D;
    c.qkv = rvec(nq, 1.0);
    c.sinks = sinks ? rvec((size_t)c.H, 1.0) : NULL;
    c.lse = calloc((size_t)c.B * c.H * c.T, sizeof(double));
    double *out = calloc(no, sizeof *out), *r = rvec(no, 1.0), *dq = calloc(nq, sizeof *dq);
    double *ds = calloc((size_t)c.H, sizeof *ds);
    cpu_attn_fwd(NULL, out, c.lse, c.qkv, c.sinks, c.B, c.T, c.H, c.KV, c.D, c.W, 0.35);
    cpu_attn_bwd(NULL, dq, ds, r, out, c.lse, c.qkv, c.sinks, c.B, c.T, c.H, c.KV, c.D, c.W, 0.35);
    char name[64];
    snprintf(name, sizeof name, "attention (T %d, window %d, sinks %d) d qkv", T, window, sinks);
    CHECK(name, fd_check(attn_f, &c, c.qkv, nq, r, no, dq));
    if (sinks) {
        snprintf(name, sizeof name, "attention (T %d, window %d) d sinks", T, window);
        CHECK(name, fd_check(attn_sink_f, &c, c.sinks, (size_t)c.H, r, no, ds));
    }
    free(c.qkv), free(c.sinks), free(c.lse), free(out), free(r), free(dq), free(ds);
}

/* ---- norms: x, w, b ---- */
typedef struct {
    int kind, N, C;
    double *x, *w, *b, *mean, *rstd;
    int which; /* 0 x, 1 w, 2 b */
} norm_ctx;
static void norm_f(void *v, const double *p, double *y)
{
    norm_ctx *c = v;
    cpu_norm_fwd(NULL, c->kind, y, c->mean, c->rstd, c->which == 0 ? p : c->x, c->which == 1 ? p : c->w,
                 c->which == 2 ? p : c->b, c->N, c->C, 1e-5);
}
static void test_norm(int kind)
{
    norm_ctx c = {kind, 5, 16, NULL, NULL, NULL, NULL, NULL, 0};
    size_t n = (size_t)c.N * c.C;
    c.x = rvec(n, 2.0), c.w = rvec((size_t)c.C, 1.0), c.b = rvec((size_t)c.C, 1.0);
    c.mean = calloc((size_t)c.N, sizeof(double)), c.rstd = calloc((size_t)c.N, sizeof(double));
    double *y = calloc(n, sizeof *y), *r = rvec(n, 1.0), *dx = calloc(n, sizeof *dx);
    double *dw = calloc((size_t)c.C, sizeof *dw), *db = calloc((size_t)c.C, sizeof *db);
    norm_f(&c, c.x, y);
    cpu_norm_bwd(NULL, kind, dx, dw, db, r, c.x, c.w, c.mean, c.rstd, c.N, c.C);
    const char *nm = kind == GPT_NORM_OP_LAYERNORM ? "layernorm" : "rmsnorm";
    char name[64];
    snprintf(name, sizeof name, "%s d x", nm);
    CHECK(name, fd_check(norm_f, &c, c.x, n, r, n, dx));
    c.which = 1;
    snprintf(name, sizeof name, "%s d weight", nm);
    CHECK(name, fd_check(norm_f, &c, c.w, (size_t)c.C, r, n, dw));
    if (kind == GPT_NORM_OP_LAYERNORM) {
        c.which = 2;
        CHECK("layernorm d bias", fd_check(norm_f, &c, c.b, (size_t)c.C, r, n, db));
    }
    free(c.x), free(c.w), free(c.b), free(c.mean), free(c.rstd), free(y), free(r), free(dx), free(dw), free(db);
}

/* ---- rope ---- */
typedef struct {
    int B, T, nh, D, ld;
    double *cs, *sn;
} rope_ctx;
static void rope_f(void *v, const double *x, double *y)
{
    rope_ctx *c = v;
    memcpy(y, x, (size_t)c->B * c->T * c->ld * sizeof *y);
    cpu_rope(NULL, y, c->ld, c->B, c->T, c->nh, c->D, c->cs, c->sn, 0);
}
static void test_rope(void)
{
    rope_ctx c = {2, 5, 3, 8, 3 * 8 + 4, NULL, NULL};
    size_t n = (size_t)c.B * c.T * c.ld;
    c.cs = rvec((size_t)c.T * c.D / 2, 1.2), c.sn = rvec((size_t)c.T * c.D / 2, 1.2); /* scaled, as YaRN's */
    double *x = rvec(n, 1.0), *r = rvec(n, 1.0), *g = malloc(n * sizeof *g);
    memcpy(g, r, n * sizeof *g);
    cpu_rope(NULL, g, c.ld, c.B, c.T, c.nh, c.D, c.cs, c.sn, 1);
    CHECK("rope (inverse rotation as backward)", fd_check(rope_f, &c, x, n, r, n, g));
    free(c.cs), free(c.sn), free(x), free(r), free(g);
}

/* ---- elementwise activations ---- */
static void gelu_f(void *v, const double *x, double *y) { cpu_gelu_fwd(NULL, y, x, *(size_t *)v); }
typedef struct {
    int N, F;
} swi_ctx;
static void swiglu_f(void *v, const double *x, double *y)
{
    swi_ctx *c = v;
    cpu_swiglu_fwd(NULL, y, x, c->N, c->F, 1.702, 7.0);
}
static void test_activations(void)
{
    size_t n = 300;
    double *x = rvec(n, 4.0), *r = rvec(n, 1.0), *g = calloc(n, sizeof *g);
    cpu_gelu_bwd(NULL, g, x, r, n);
    CHECK("gelu (tanh)", fd_check(gelu_f, &n, x, n, r, n, g));
    free(x), free(r), free(g);

    swi_ctx c = {6, 10};
    size_t ni = (size_t)c.N * 2 * c.F, no = (size_t)c.N * c.F;
    x = rvec(ni, 12.0); /* many entries beyond the clamp limit */
    for (size_t i = 0; i < ni; i++)
        if (fabs(fabs(x[i]) - 7.0) < 1e-3) x[i] += 0.01; /* keep clear of the kink */
    r = rvec(no, 1.0), g = calloc(ni, sizeof *g);
    cpu_swiglu_bwd(NULL, g, x, r, c.N, c.F, 1.702, 7.0);
    CHECK("swiglu with clamp", fd_check(swiglu_f, &c, x, ni, r, no, g));
    free(x), free(r), free(g);
}

/* ---- router: top-k softmax and the shared-gradient softmax ---- */
typedef struct {
    int N, E, K;
    int *idx;
} topk_ctx;
static void topk_f(void *v, const double *x, double *y)
{
    topk_ctx *c = v;
    cpu_topk_softmax(NULL, c->idx, y, x, c->N, c->E, c->K);
}
static void softmax_colsum_f(void *v, const double *x, double *y)
{
    topk_ctx *c = v;
    double *p = malloc((size_t)c->N * c->E * sizeof *p);
    cpu_softmax_rows(NULL, p, x, c->N, c->E);
    cpu_colsum(NULL, y, p, c->N, c->E);
    free(p);
}
static void test_router(void)
{
    topk_ctx c = {7, 6, 3, NULL};
    size_t n = (size_t)c.N * c.E, nk = (size_t)c.N * c.K;
    c.idx = calloc(nk, sizeof(int));
    double *x = rvec(n, 2.0), *w = calloc(nk, sizeof *w), *r = rvec(nk, 1.0), *g = calloc(n, sizeof *g);
    cpu_topk_softmax(NULL, c.idx, w, x, c.N, c.E, c.K);
    cpu_topk_softmax_bwd(NULL, g, r, w, c.idx, c.N, c.E, c.K);
    CHECK("top-k softmax", fd_check(topk_f, &c, x, n, r, nk, g));
    double *p = calloc(n, sizeof *p), *re = rvec((size_t)c.E, 1.0), *g2 = calloc(n, sizeof *g2);
    cpu_softmax_rows(NULL, p, x, c.N, c.E);
    cpu_softmax_rows_bwd_shared(NULL, g2, p, re, c.N, c.E);
    CHECK("softmax column sums (load-balancing loss)", fd_check(softmax_colsum_f, &c, x, n, re, (size_t)c.E, g2));
    free(c.idx), free(x), free(w), free(r), free(g), free(p), free(re), free(g2);
}

/* ---- cross-entropy with smoothing and ignored rows ---- */
typedef struct {
    int N, V, Vp;
    int *tgt, *correct;
    double eps;
} xent_ctx;
static void xent_f(void *v, const double *x, double *y)
{
    xent_ctx *c = v;
    cpu_xent(NULL, y, c->correct, NULL, x, c->tgt, c->N, c->V, c->Vp, c->eps, 0);
}
static void test_xent(void)
{
    xent_ctx c = {5, 9, 12, NULL, NULL, 0.1};
    int tgt[5] = {3, -100, 0, 8, 5}, correct[5];
    c.tgt = tgt, c.correct = correct;
    size_t n = (size_t)c.N * c.Vp;
    double *x = rvec(n, 3.0), *ones = calloc((size_t)c.N, sizeof *ones), *loss = calloc((size_t)c.N, sizeof *loss);
    double *g = calloc(n, sizeof *g);
    for (int i = 0; i < c.N; i++) ones[i] = 1;
    cpu_xent(NULL, loss, correct, g, x, tgt, c.N, c.V, c.Vp, c.eps, 1.0);
    CHECK("cross-entropy (smoothing 0.1, an ignored row, padded vocab)", fd_check(xent_f, &c, x, n, ones, (size_t)c.N, g));
    free(x), free(ones), free(loss), free(g);
}

/* ---- gemm-free pieces the MoE and embeddings use ---- */
typedef struct {
    int n, C, rows[6];
    double *scale, *src;
} rows_ctx;
static void scatter_f(void *v, const double *x, double *y)
{
    rows_ctx *c = v;
    memset(y, 0, 4 * (size_t)c->C * sizeof *y);
    cpu_scatter_add_rows(NULL, y, x, c->rows, c->scale, c->n, c->C);
}
static void scatter_scale_f(void *v, const double *x, double *y)
{
    rows_ctx *c = v;
    memset(y, 0, 4 * (size_t)c->C * sizeof *y);
    cpu_scatter_add_rows(NULL, y, c->src, c->rows, x, c->n, c->C);
}
static void test_rows(void)
{
    rows_ctx c = {6, 5, {2, 0, 2, 3, 1, 2}, NULL, NULL};
    size_t ns = (size_t)c.n * c.C, nd = 4 * (size_t)c.C;
    c.scale = rvec((size_t)c.n, 1.0), c.src = rvec(ns, 1.0);
    double *r = rvec(nd, 1.0), *gs = calloc(ns, sizeof *gs), *gw = calloc((size_t)c.n, sizeof *gw);
    /* the MoE backward: d src = gather(dout) * scale, d scale = row_dot(dout, src) */
    cpu_gather_rows(NULL, gs, r, c.rows, c.scale, c.n, c.C);
    cpu_row_dot(NULL, gw, r, c.rows, c.src, c.n, c.C);
    CHECK("weighted scatter-add d rows (gather backward)", fd_check(scatter_f, &c, c.src, ns, r, nd, gs));
    CHECK("weighted scatter-add d weights (row dot)", fd_check(scatter_scale_f, &c, c.scale, (size_t)c.n, r, nd, gw));
    free(c.scale), free(c.src), free(r), free(gs), free(gw);
}

typedef struct {
    int B, T, C, tok[6];
    double *wpe;
} emb_ctx;
static void embed_f(void *v, const double *x, double *y)
{
    emb_ctx *c = v;
    cpu_embed_fwd(NULL, y, c->tok, x, c->wpe, c->B, c->T, c->C);
}
static void test_embed(void)
{
    emb_ctx c = {2, 3, 4, {1, 3, 1, 0, 1, 2}, NULL};
    size_t nw = 5 * (size_t)c.C, ny = (size_t)c.B * c.T * c.C;
    double *wte = rvec(nw, 1.0), *r = rvec(ny, 1.0), *g = calloc(nw, sizeof *g), *gp = calloc(3 * (size_t)c.C, sizeof *gp);
    c.wpe = rvec(3 * (size_t)c.C, 1.0);
    cpu_embed_bwd(NULL, g, gp, r, c.tok, c.B, c.T, c.C);
    CHECK("embedding (repeated tokens)", fd_check(embed_f, &c, wte, nw, r, ny, g));
    free(wte), free(r), free(g), free(gp), free(c.wpe);
}

static void bias_f(void *v, const double *x, double *y)
{
    memset(y, 0, 4 * 7 * sizeof *y);
    cpu_bias_fwd(NULL, y, 7, x, 4, *(int *)v);
}
static void test_bias(void)
{
    int N = 5; /* columns used of a row stride of 7 */
    double *b = rvec(5, 1.0), *r = rvec(28, 1.0), *g = calloc(5, sizeof *g);
    cpu_bias_bwd(NULL, g, r, 7, 4, N);
    CHECK("bias (strided rows)", fd_check(bias_f, &N, b, 5, r, 28, g));
    free(b), free(r), free(g);
}

int main(void)
{
    test_bias();
    test_attention(7, 0, 0);
    test_attention(7, 0, 1);
    test_attention(7, 3, 1);
    /* several 64-row blocks, windows that start mid-block */
    test_attention(150, 0, 1);
    test_attention(150, 70, 1);
    test_norm(GPT_NORM_OP_LAYERNORM);
    test_norm(GPT_NORM_OP_RMSNORM);
    test_rope();
    test_activations();
    test_router();
    test_xent();
    test_rows();
    test_embed();
    return done_testing();
}
