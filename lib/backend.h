/* backend.h: the op interface that the model is written against.
 *
 * The forward and backward passes (model.c) call only these ops; a backend (CPU: backend_cpu.c,
 * CUDA later) implements them on its own memory. Every pointer an op takes is backend memory
 * from be->alloc. Matrices are row-major; `ld` is the row stride in elements, so an op can read
 * or write a column slice of a wider matrix (the Q, K and V parts of one qkv buffer, say).
 * Ops that accumulate say so ("+="): gradients accumulate, activations are overwritten.
 * Every op is deterministic: same inputs, same bits. */
#ifndef GPT_BACKEND_H
#define GPT_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct gpt_backend gpt_backend;

/* The scalars of one AdamW update (optim.c computes them in double and rounds each once). */
typedef struct gpt_adamw_args {
    float grad_scale; /* g = grad * grad_scale (1 / (accum * dp) times the clip factor) */
    float decay;      /* p *= decay first: 1 - lr * weight_decay, or 1 for tensors that do not decay */
    float step_size, bc2_sqrt, w1, b2, w2, eps;
} gpt_adamw_args;

/* The filters of the optional sample op (sampling.h's meanings; penalties stay with the caller). */
typedef struct gpt_sample_args {
    double temperature; /* <= 0: greedy */
    int top_k;          /* 0: off; 1: greedy */
    double top_p;       /* 1: off */
    double min_p;       /* 0: off */
} gpt_sample_args;

enum { GPT_NORM_OP_LAYERNORM = 0, GPT_NORM_OP_RMSNORM = 1 };
enum { GPT_KV_F32 = 0, GPT_KV_BF16 = 1, GPT_KV_INT8 = 2 }; /* KV-cache entry types */

struct gpt_backend {
    const char *name;
    void *ctx;
    void (*destroy)(gpt_backend *be);

    /* ---- memory ---- */
    void *(*alloc)(gpt_backend *be, size_t bytes); /* zero-filled; aborts on failure */
    void (*free)(gpt_backend *be, void *p);
    void (*to_device)(gpt_backend *be, void *dst, const void *src, size_t bytes);
    void (*to_host)(gpt_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(gpt_backend *be, void *p, size_t bytes);

    /* ---- dense algebra ---- */
    /* C (M x N, ldc) = alpha * op(A) op(B) + beta * C. op(A) is M x K: A is M x K (lda) or, with
     * ta, K x M. op(B) is K x N: B is K x N (ldb) or, with tb, N x K. */
    void (*gemm)(gpt_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    /* Optional (NULL: the caller loops over gemm). n independent gemms in one call, so a backend
     * can launch them together (a MoE layer's experts): group g < n does exactly what
     * gemm(be, ta, tb, M[g], N[g], K[g], alpha, A[g], lda[g], B[g], ldb[g], beta, C[g], ldc[g])
     * does (M or N == 0: nothing; K == 0: C *= beta). The arrays are host memory, the matrices
     * backend memory; no two groups' C overlap. */
    void (*gemm_grouped)(gpt_backend *be, int ta, int tb, int n, const int *M, const int *N, const int *K, float alpha,
                         const float *const *A, const int *lda, const float *const *B, const int *ldb, float beta,
                         float *const *C, const int *ldc);
    /* y[m, n] += b[n] for an M x N block (ldy). */
    void (*bias_fwd)(gpt_backend *be, float *y, int ldy, const float *b, int M, int N);
    /* db[n] += sum over m of dy[m, n]. */
    void (*bias_bwd)(gpt_backend *be, float *db, const float *dy, int ldy, int M, int N);
    /* y += a * x over n elements. */
    void (*axpy)(gpt_backend *be, float *y, const float *x, float a, size_t n);
    /* out = a + b over n elements (out may alias a or b). */
    void (*add)(gpt_backend *be, float *out, const float *a, const float *b, size_t n);

    /* ---- embeddings: x (B*T, C) = wte[tok] (+ wpe[t]) ---- */
    void (*embed_fwd)(gpt_backend *be, float *x, const int *tok, const float *wte, const float *wpe, int B, int T,
                      int C);
    /* dwte[tok] += dx, dwpe[t] += dx (dwpe may be NULL). Deterministic order. */
    void (*embed_bwd)(gpt_backend *be, float *dwte, float *dwpe, const float *dx, const int *tok, int B, int T,
                      int C);

    /* ---- norms over rows of C: LayerNorm (w, b; mean and rstd saved) or RMSNorm (w; rstd) ---- */
    void (*norm_fwd)(gpt_backend *be, int kind, float *y, float *mean, float *rstd, const float *x, const float *w,
                     const float *b, int N, int C, float eps);
    /* dx += ..., dw += ..., db += ... (db unused for RMSNorm). */
    void (*norm_bwd)(gpt_backend *be, int kind, float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, const float *mean, const float *rstd, int N, int C);

    /* ---- rotary embedding, half-split (dim i pairs with i + D/2), in place on nh heads of D
     * starting at x, rows of stride ld, row r at position r % T. cos/sin: (T, D/2), scaling
     * already folded in. inverse applies the transpose (for the backward pass). ---- */
    void (*rope)(gpt_backend *be, float *x, int ld, int B, int T, int nh, int D, const float *cos, const float *sin,
                 int inverse);

    /* The same rotation for rows at explicit positions: row r is at position pos[r] (n rows). */
    void (*rope_pos)(gpt_backend *be, float *x, int ld, int n, int nh, int D, const float *cos, const float *sin,
                     const int *pos);

    /* ---- key/value cache (inference). A layer's cache holds, per sequence, `ring` slots of
     * (KV, D) keys and values: kc, vc are (n_seq, ring, KV, D); position j lives in slot j % ring
     * (ring >= max length for full layers, = window for sliding ones). ---- */
    /* Stores the keys and values of n rows: row r (k at k + r*ld, v at v + r*ld, KV*D floats each)
     * goes to sequence seq[r], position pos[r]. */
    void (*kv_store)(gpt_backend *be, float *kc, float *vc, const float *k, const float *v, int ld, const int *seq,
                     const int *pos, int n, int ring, int KV, int D);
    /* out (n, H*D) = attention of n query rows (q at q + r*ldq, H*D floats) over their sequence's
     * cache: row r sees positions max(0, pos[r]-window+1) .. pos[r] (window 0: 0 .. pos[r]); sinks as
     * in attn_fwd. Forward only. */
    void (*attn_cached)(gpt_backend *be, float *out, const float *q, int ldq, const float *kc, const float *vc,
                        const int *seq, const int *pos, int n, int ring, const float *sinks, int H, int KV, int D,
                        int window, float scale);

    /* ---- causal attention with GQA, an optional window and optional sinks.
     * qkv: (B*T, (H + 2*KV) * D): per row H query heads, then KV key heads, then KV value heads.
     * out: (B*T, H*D). lse: (B, H, T) log-sum-exp of each softmax row (sink included), saved for
     * the backward pass. window 0 = full causal; else a query at t sees keys t-window+1 .. t.
     * sinks: (H) logits joining each row's softmax without a value, or NULL. ---- */
    void (*attn_fwd)(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B, int T,
                     int H, int KV, int D, int window, float scale);
    /* dqkv = (written, not accumulated), dsinks += (H; ignored when sinks is NULL). */
    void (*attn_bwd)(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                     const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D,
                     int window, float scale);

    /* ---- activations ---- */
    void (*gelu_fwd)(gpt_backend *be, float *y, const float *x, size_t n); /* tanh approximation */
    void (*gelu_bwd)(gpt_backend *be, float *dx, const float *x, const float *dy, size_t n);
    /* gpt-oss SwiGLU: gu (N, 2F) interleaved (even = gate, odd = linear); gate clamped to
     * <= limit, linear to [-limit, limit]; y = gate * sigmoid(alpha * gate) * (linear + 1). */
    void (*swiglu_fwd)(gpt_backend *be, float *y, const float *gu, int N, int F, float alpha, float limit);
    void (*swiglu_bwd)(gpt_backend *be, float *dgu, const float *gu, const float *dy, int N, int F, float alpha,
                       float limit);

    /* ---- mixture of experts ---- */
    /* Per row of logits (N, E): the k largest (ties: lower index first), in descending order, and
     * the softmax over those k. */
    void (*topk_softmax)(gpt_backend *be, int *idx, float *w, const float *logits, int N, int E, int k);
    /* dlogits (N, E) += the gradient through the top-k softmax, given dw (N, k). */
    void (*topk_softmax_bwd)(gpt_backend *be, float *dlogits, const float *dw, const float *w, const int *idx, int N,
                             int E, int k);
    /* p (N, E) = softmax of each row. */
    void (*softmax_rows)(gpt_backend *be, float *p, const float *x, int N, int E);
    /* dx (N, E) += p * (g - sum_e p * g) for a per-column gradient g (E) shared by all rows:
     * the backward of a loss linear in the column sums of p. */
    void (*softmax_rows_bwd_shared)(gpt_backend *be, float *dx, const float *p, const float *g, int N, int E);
    /* out (E) = sum over rows of x (N, E). */
    void (*colsum)(gpt_backend *be, float *out, const float *x, int N, int E);
    /* dst[i] = scale[i] * src[rows[i]] for i < n (scale NULL = 1), rows of C floats. */
    void (*gather_rows)(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale, int n,
                        int C);
    /* dst[rows[i]] += scale[i] * src[i] (scale NULL = 1), applied in order of i. */
    void (*scatter_add_rows)(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale,
                             int n, int C);
    /* out[i] = dot(a[rows[i]], b[i]) over C. */
    void (*row_dot)(gpt_backend *be, float *out, const float *a, const int *rows, const float *b, int n, int C);

    /* ---- loss: softmax cross-entropy over the first V of Vp columns, label smoothing eps,
     * target < 0 = ignored (loss 0, no gradient). losses (N), correct (N: argmax == target).
     * With dlogits non-NULL also writes the gradient of dscale * sum(losses) (padding columns
     * and ignored rows get 0); dlogits may alias logits. ---- */
    void (*xent)(gpt_backend *be, float *losses, int *correct, float *dlogits, const float *logits, const int *targets,
                 int N, int V, int Vp, float smoothing, float dscale);

    /* ---- optional ops: NULL when a backend lacks one; the model checks and says so ---- */
    /* out (n, O; ldo) = x (n, K; ldx) W^T + bias (O; NULL for none) for W (O, K) stored as MXFP4 rows:
     * blocks (O, K/32, 16) and scales (O, K/32) bytes as in mxfp4.h. K % 32 == 0. Forward only. */
    void (*mxfp4_matmul)(gpt_backend *be, float *out, int ldo, const float *x, int ldx, const unsigned char *blocks,
                         const unsigned char *scales, const float *bias, int n, int K, int O);
    /* kv_store and attn_cached for a cache held in GPT_KV_BF16 (kc, vc: uint16 bf16) or GPT_KV_INT8
     * (kc, vc: int8; ks, vs: (n_seq, ring, KV) floats, one scale per head per position: absmax / 127).
     * Same layout and semantics as the f32 ops; ks, vs unused (may be NULL) for bf16. */
    void (*kv_store_q)(gpt_backend *be, int dtype, void *kc, void *vc, float *ks, float *vs, const float *k,
                       const float *v, int ld, const int *seq, const int *pos, int n, int ring, int KV, int D);
    void (*attn_cached_q)(gpt_backend *be, int dtype, float *out, const float *q, int ldq, const void *kc,
                          const void *vc, const float *ks, const float *vs, const int *seq, const int *pos, int n,
                          int ring, const float *sinks, int H, int KV, int D, int window, float scale);
    /* ---- optimizer and gradient helpers: optional (NULL when a backend lacks one) ---- */
    /* AdamW over n elements of p, with gradient g and fp32 moments m, v, in torch's order of
     * operations (gpt_adamw_update in optim.h is the definition; every backend matches its bits). */
    void (*adamw)(gpt_backend *be, float *p, const float *g, float *m, float *v, size_t n, const gpt_adamw_args *a);
    /* The sum of squares of x[0, n) in double, summed in an order fixed by n alone. */
    double (*sumsq)(gpt_backend *be, const float *x, size_t n);
    /* x *= a over n elements. */
    void (*scale)(gpt_backend *be, float *x, float a, size_t n);
    /* Whether any of x[0, n) is inf or NaN. */
    int (*nonfinite)(gpt_backend *be, const float *x, size_t n);
    /* adamw (same bits for p, m, v), then pb[i] = p[i] rounded to bf16 stochastically: up in
     * magnitude with probability (the part below bf16 precision) / (one bf16 step), so the copy's
     * expectation is p[i]. The random bits are a function of (seed, i). pb: n uint16 (bf16). */
    void (*adamw_sr)(gpt_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     const gpt_adamw_args *a, uint16_t *pb, uint64_t seed);

    /* ---- sampling on the device: optional (NULL when a backend lacks it) ---- */
    /* For each of n rows of logits (row r at logits + r*ld, V columns): the token that
     * gpt_sampler_candidates (temperature, top-k, top-p, min-p; no penalties) and gpt_sample's draw
     * pick with the uniform u[r] in [0, 1) (n doubles). out[r] = the id when the row's draw used
     * u[r]; -1 - id when the row had a single candidate (greedy, a non-finite maximum, or one
     * survivor of the filters), where gpt_sample draws nothing. out, u: backend memory. */
    void (*sample)(gpt_backend *be, int *out, const float *logits, int ld, int n, int V, const gpt_sample_args *a,
                   const double *u);

    /* ---- state ---- */
    /* The precision gemm rounds both operands to (half.h GPT_GEMM_*): fp32 (0, the default), bf16
     * or fp16, with fp32 products, sums and C, as cuBLAS computes half-precision inputs with
     * CUBLAS_COMPUTE_32F. Mixed-precision training sets it; the fp32 originals (the master
     * weights among them) are never modified. */
    int gemm_prec;
    /* CPU backend: where bf16 GEMMs run on AMX tiles (gemm_amx.h; found at creation), their packing
     * space; NULL where they are emulated with rounded fp32 copies. The same numbers either way, to
     * fp32 summation order. */
    struct gpt_amx_ws *amx;
    /* Inference: the bytes [frozen_lo, frozen_hi) (a model's parameters, gpt_model_freeze) do not
     * change while set, so the backend may keep converted copies of them (the CPU keeps bf16 AMX
     * packs of the weights it multiplies by). NULL: none. */
    const void *frozen_lo, *frozen_hi;
    unsigned frozen_epoch; /* bumped by every freeze and thaw: copies from another epoch are stale */
};

/* The CPU backend: fp32, OpenBLAS sgemm, OpenMP loops. */
gpt_backend *gpt_backend_cpu(void);

#endif
