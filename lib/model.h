/* model.h: a GPT (GPT-OSS or GPT-2 family) on a backend: parameters, forward, backward.
 *
 *   gpt_model *m = gpt_model_create(&cfg.model, gpt_backend_cpu(), &err);
 *   gpt_model_init_params(m, seed);                   // or upload imported weights
 *   gpt_model_zero_grad(m);
 *   gpt_model_forward(m, tokens, targets, B, T, &opts, &loss, &err);
 *   gpt_model_backward(m, &err);                      // grads += d loss.total / d params
 *
 * tokens and targets are host arrays (B, T); targets[b][t] is the label of position t (the
 * next token, already shifted), or -100 (any negative) to ignore. */
#ifndef GPT_MODEL_H
#define GPT_MODEL_H

#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "error.h"
#include "params.h"

typedef struct gpt_model gpt_model;

typedef struct gpt_forward_opts {
    float label_smoothing; /* 0..1 */
    double loss_scale;     /* the backward computes the gradient of loss_scale * loss (0 = 1): dynamic
                            * loss scaling for fp16, undone by the trainer before clipping */
} gpt_forward_opts;

typedef struct gpt_loss {
    double total;      /* what backward differentiates: ce + router_aux_loss_coef * aux */
    double ce;         /* mean (label-smoothed) cross-entropy over the scored tokens */
    double nll;        /* mean negative log-likelihood (no smoothing) */
    double aux;        /* router load-balancing loss (MoE, coefficient not applied), else 0 */
    int64_t n_scored;  /* targets >= 0 */
    int64_t n_correct; /* argmax == target */
} gpt_loss;

gpt_model *gpt_model_create(const gpt_model_config *cfg, gpt_backend *be, gpt_err *err);

typedef struct gpt_model_opts {
    /* Keep the MoE expert weights (experts.gate_up_proj, experts.down_proj) in MXFP4: they leave the
     * parameter table and buffer and are set with gpt_model_set_mxfp4*. Inference only: such a model
     * has no gradient buffer and backward fails. Needs the backend's mxfp4_matmul op and d_model,
     * d_expert multiples of 32. */
    int mxfp4_experts;
} gpt_model_opts;
gpt_model *gpt_model_create_ex(const gpt_model_config *cfg, gpt_backend *be, const gpt_model_opts *opts,
                               gpt_err *err);
int gpt_model_is_mxfp4(const gpt_model *m);
/* The MXFP4 expert tensors: name and our (E, in, out) shape as the full table gives them (offset unused). */
int gpt_model_mxfp4_count(const gpt_model *m);
const gpt_tensor *gpt_model_mxfp4_tensor(const gpt_model *m, int i);
/* Upload tensor i from host memory as gpt-oss stores it: blocks (E, out, in/32, 16), scales (E, out, in/32). */
int gpt_model_set_mxfp4(gpt_model *m, int i, const uint8_t *blocks, const uint8_t *scales, gpt_err *err);
/* Or quantize it from fp32 host weights in our (E, in, out) layout (gpt_mxfp4_quantize). */
int gpt_model_set_mxfp4_f32(gpt_model *m, int i, const float *w, gpt_err *err);
void gpt_model_free(gpt_model *m); /* does not destroy the backend */

const gpt_model_config *gpt_model_config_of(const gpt_model *m);
gpt_backend *gpt_model_backend(const gpt_model *m);
const gpt_param_table *gpt_model_params(const gpt_model *m);
/* The parameter and gradient buffers (backend memory), laid out as the table says (no gradients: NULL). */
float *gpt_model_param_data(gpt_model *m);
float *gpt_model_grad_data(gpt_model *m);

/* Inference: promise that the parameters stay as they are until gpt_model_free (or freeze 0), so
 * the backend may keep converted copies of them (bf16 packs for AMX GEMMs on the CPU). */
void gpt_model_freeze(gpt_model *m, int on);

void gpt_model_init_params(gpt_model *m, uint64_t seed);
void gpt_model_zero_grad(gpt_model *m);

/* Runs the model on tokens (B, T). With targets, fills *loss (else loss may be NULL) and keeps
 * what backward needs. T <= max_seq_len; activations grow to the largest (B, T) seen. */
int gpt_model_forward(gpt_model *m, const int *tokens, const int *targets, int B, int T,
                      const gpt_forward_opts *opts, gpt_loss *loss, gpt_err *err);
/* Accumulates the gradient of the last forward's loss.total into the gradient buffer. */
int gpt_model_backward(gpt_model *m, gpt_err *err);
/* An optional hook, for overlapping the data-parallel gradient reduction with backward: during
 * each gpt_model_backward, fn(ctx, offset, count) says that gradient buffer floats [offset,
 * offset + count) will not change again in this backward (nor until the next one or zero_grad).
 * The ranges follow the backward: the untied head, then each layer from the last to the first,
 * then what is left (the final norm when not reported yet, the embedding, a tied head); over one
 * backward they cover the buffer exactly once. fn must not touch other ranges: backward is still
 * writing them. NULL fn removes the hook. (A pipeline stage's ranges are its own table's.) */
typedef void (*gpt_grad_ready_fn)(void *ctx, size_t offset, size_t count);
void gpt_model_set_grad_hook(gpt_model *m, gpt_grad_ready_fn fn, void *ctx);
/* The last forward's logits (B*T, padded_vocab_size), backend memory. Valid until backward. */
const float *gpt_model_logits(const gpt_model *m);

/* ---- inference ----
 * A KV cache holds n_seq independent sequences of up to max_len tokens (sliding-window layers
 * keep only a ring of their window). gpt_model_extend runs n new tokens: row i is token
 * tokens[i] appended to sequence seqs[i] (rows of one sequence in order; several sequences may
 * share a call). It writes each row's logits (n, vocab_size) to host memory when logits is not
 * NULL. At most GPT_KV_CHUNK tokens of one sequence per call: a longer prompt goes in several. */
typedef struct gpt_kv_cache gpt_kv_cache;
#define GPT_KV_CHUNK 128

gpt_kv_cache *gpt_kv_cache_create(gpt_model *m, int n_seq, int max_len, gpt_err *err);
/* dtype GPT_KV_F32 (the default), GPT_KV_BF16 or GPT_KV_INT8 (per head per position scales): the
 * smaller types need the backend's optional kv_store_q / attn_cached_q ops. */
typedef struct gpt_kv_opts {
    int dtype;
} gpt_kv_opts;
gpt_kv_cache *gpt_kv_cache_create_ex(gpt_model *m, int n_seq, int max_len, const gpt_kv_opts *opts, gpt_err *err);
void gpt_kv_cache_free(gpt_kv_cache *kc);
int gpt_kv_cache_len(const gpt_kv_cache *kc, int seq);
/* Empties one sequence (seq >= 0) or all (-1). */
void gpt_kv_cache_clear(gpt_kv_cache *kc, int seq);
/* Makes sequence dst a copy of sequence src (beam search forks a beam this way). */
void gpt_kv_cache_copy(gpt_kv_cache *kc, int dst, int src);
int gpt_model_extend(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n, float *logits,
                     gpt_err *err);
/* gpt_model_extend for tokens whose logits nobody reads (a prompt but its last token): the same
 * cache contents, without the final norm and the LM head (gpt_model_logits is then stale). */
int gpt_model_prefill(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n, gpt_err *err);
/* gpt_model_extend with logits for the rows head_rows lists only (n_head of them, increasing):
 * logits (n_head, vocab_size) in that order, and gpt_model_logits (n_head, padded_vocab_size). A
 * prompt goes in one pass, its last row's logits (the next token's) the only ones computed, as a
 * prefill should: not a prefill of all but the last token and a second pass over every weight for
 * it. n_head = 0 is gpt_model_prefill. */
int gpt_model_extend_rows(gpt_model *m, gpt_kv_cache *kc, const int *tokens, const int *seqs, int n,
                          const int *head_rows, int n_head, float *logits, gpt_err *err);

#endif
