/* generate.c: batched prefill + decode with per-sequence stopping (see generate.h). */
#include "generate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "beam.h"
#include "gen_internal.h"
#include "model_tp.h"

const char *gpt_finish_name(gpt_finish f)
{
    switch (f) {
    case GPT_FINISH_STOP: return "stop";
    case GPT_FINISH_LENGTH: return "length";
    case GPT_FINISH_ERROR: return "error";
    default: return "none";
    }
}

gpt_gen_opts gpt_gen_defaults(void)
{
    gpt_gen_opts o = {0};
    o.max_new_tokens = 128;
    o.sampling = gpt_sampling_defaults();
    o.num_beams = 1;
    o.length_penalty = 1.0;
    o.device_sampling = 1;
    return o;
}

void gpt_gen_req_free(gpt_gen_req *r)
{
    gpt_ids_free(&r->out);
    free(r->text), free(r->error);
    r->text = NULL, r->error = NULL, r->text_len = 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

__attribute__((format(printf, 2, 3))) static void req_fail(gpt_gen_req *r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    free(r->error);
    r->error = gpt_xstrdup(buf);
    r->finish = GPT_FINISH_ERROR;
}

const uint32_t *gpt_gen_check_prompt(const gpt_model_config *c, const gpt_tokenizer *tk, gpt_gen_req *r,
                                     size_t *n_prompt, uint32_t *eot_buf)
{
    *n_prompt = r->n_prompt;
    if (r->n_prompt == 0) {
        int64_t eot = tk ? gpt_tokenizer_eot(tk) : -1;
        if (eot < 0 || eot >= c->vocab_size) {
            req_fail(r, "empty prompt, and the model has no <|endoftext|> token to start from");
            return NULL;
        }
        *eot_buf = (uint32_t)eot;
        *n_prompt = 1;
        return eot_buf;
    }
    for (size_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] >= (uint32_t)c->vocab_size) {
            req_fail(r, "prompt token %zu is id %u, outside the model's vocabulary (0..%d)", i, r->prompt[i],
                     c->vocab_size - 1);
            return NULL;
        }
    if (r->n_prompt >= (size_t)c->max_seq_len) {
        req_fail(r, "prompt of %zu tokens leaves no room in the model's context of %d tokens (shorten it)",
                 r->n_prompt, c->max_seq_len);
        return NULL;
    }
    return r->prompt;
}

static void text_append(gpt_gen_text *t, const unsigned char *b, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->buf = gpt_xrealloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, b, n);
    t->len += n;
    t->buf[t->len] = 0;
}

int gpt_gen_text_step(const gpt_tokenizer *tk, const gpt_gen_opts *o, gpt_gen_text *t, uint32_t id, int is_eos,
                      size_t *safe)
{
    size_t before = t->len;
    if (tk && !is_eos) {
        size_t n = 0;
        const unsigned char *b = gpt_tokenizer_token(tk, id, &n);
        if (b) text_append(t, b, n);
    }
    if (!t->buf) text_append(t, (const unsigned char *)"", 0);
    size_t hold = 0;
    for (int s = 0; s < o->n_stop; s++) {
        size_t sl = strlen(o->stop[s]);
        if (!sl) continue;
        size_t from = before >= sl ? before - sl + 1 : 0;
        for (size_t p = from; p + sl <= t->len; p++)
            if (memcmp(t->buf + p, o->stop[s], sl) == 0) {
                t->len = p;
                t->buf[p] = 0;
                *safe = p;
                return 1;
            }
        /* the longest tail that is a proper prefix of this stop string */
        for (size_t k = sl - 1 < t->len ? sl - 1 : t->len; k > hold; k--)
            if (memcmp(t->buf + t->len - k, o->stop[s], k) == 0) {
                hold = k;
                break;
            }
    }
    *safe = t->len - hold;
    return 0;
}

int gpt_gen_is_eos(const gpt_gen_opts *o, uint32_t id)
{
    for (int i = 0; i < o->n_eos; i++)
        if (o->eos[i] == id) return 1;
    return 0;
}

/* Device sampling (the backend's sample op) for `rows` rows of device logits: ids[r] is what
 * gpt_sample would return, and rng ends where the host path leaves it. The host path draws one
 * uniform per row that has more than one candidate, in row order; which rows have one is known
 * only after the op. So every row gets a uniform from the generator, and when a single-candidate
 * row has shifted a later row's uniform the op runs once more with the right ones (the candidate
 * sets do not depend on the uniforms). */
typedef struct dev_sampler {
    gpt_backend *be;
    gpt_sample_args a;
    int greedy;
    double *u;      /* host, rows */
    int *o;         /* host, rows */
    double *u_d;    /* backend memory */
    int *o_d;
} dev_sampler;

static void dev_sample_run(dev_sampler *d, const float *logits, int ld, int rows, int V)
{
    d->be->to_device(d->be, d->u_d, d->u, (size_t)rows * sizeof *d->u);
    d->be->sample(d->be, d->o_d, logits, ld, rows, V, &d->a, d->u_d);
    d->be->to_host(d->be, d->o, d->o_d, (size_t)rows * sizeof *d->o);
}

static void dev_sample(dev_sampler *d, const float *logits, int ld, int rows, int V, gpt_rng *rng, int *ids)
{
    gpt_rng r0 = d->greedy ? (gpt_rng){{0}} : *rng;
    for (int r = 0; r < rows; r++) d->u[r] = d->greedy ? 0.0 : gpt_rng_uniform(rng);
    dev_sample_run(d, logits, ld, rows, V);
    if (!d->greedy) {
        int again = 0;
        *rng = r0;
        for (int r = 0; r < rows; r++)
            if (d->o[r] >= 0) {
                double x = gpt_rng_uniform(rng);
                again |= x != d->u[r];
                d->u[r] = x;
            }
        if (again) dev_sample_run(d, logits, ld, rows, V);
    }
    for (int r = 0; r < rows; r++) ids[r] = d->o[r] >= 0 ? d->o[r] : -1 - d->o[r];
}

int gpt_generate(gpt_model *m, const gpt_tokenizer *tk, const gpt_gen_opts *o, gpt_gen_req *reqs, int n,
                 gpt_rng *rng, gpt_gen_stats *st, gpt_err *err)
{
    if (o->num_beams > 1) {
        int rc = 0;
        for (int i = 0; i < n && rc == 0; i++) rc = gpt_beam_search(m, tk, o, &reqs[i], st, err);
        return rc;
    }
    const gpt_model_config *c = gpt_model_config_of(m);
    int V = c->vocab_size, rc = -1;
    typedef struct {
        const uint32_t *prompt;
        size_t n_prompt, fed; /* prompt tokens in the cache */
        gpt_ids hist;
        gpt_gen_text text;
        uint32_t eot;
        int active, limit;    /* limit: total tokens allowed (prompt + generated) */
    } seqst;
    seqst *S = gpt_xcalloc((size_t)(n > 0 ? n : 1), sizeof *S);
    int max_len = 1;
    for (int i = 0; i < n; i++) {
        gpt_gen_req *r = &reqs[i];
        r->finish = GPT_FINISH_NONE;
        S[i].prompt = gpt_gen_check_prompt(c, tk, r, &S[i].n_prompt, &S[i].eot);
        if (!S[i].prompt) continue;
        if (o->max_new_tokens <= 0) {
            r->finish = GPT_FINISH_LENGTH;
            r->text = gpt_xcalloc(1, 1);
            continue;
        }
        long long lim = (long long)S[i].n_prompt + o->max_new_tokens;
        S[i].limit = lim < c->max_seq_len ? (int)lim : c->max_seq_len;
        S[i].active = 1;
        gpt_ids_append(&S[i].hist, S[i].prompt, S[i].n_prompt);
        if (S[i].limit > max_len) max_len = S[i].limit;
    }
    gpt_kv_cache *kc = gpt_kv_cache_create_ex(m, n > 0 ? n : 1, max_len, &(gpt_kv_opts){.dtype = o->kv_dtype}, err);
    gpt_sampler *smp = gpt_sampler_create(&o->sampling, V);
    int *tok = gpt_xmalloc(((size_t)(n > 0 ? n : 1) * GPT_KV_CHUNK) * sizeof *tok);
    int *sq = gpt_xmalloc(((size_t)(n > 0 ? n : 1) * GPT_KV_CHUNK) * sizeof *sq);
    float *logits = gpt_xmalloc((size_t)(n > 0 ? n : 1) * V * sizeof *logits);
    const gpt_sampling *sp = &o->sampling;
    dev_sampler ds = {.be = gpt_model_backend(m)};
    int *ids = gpt_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    int on_dev = ds.be->sample && o->device_sampling && !gpt_model_tp_comm(m) && sp->repetition_penalty == 1 &&
                 sp->presence_penalty == 0 && sp->frequency_penalty == 0;
    if (on_dev) {
        ds.a = (gpt_sample_args){.temperature = sp->temperature, .top_k = sp->top_k, .top_p = sp->top_p,
                                 .min_p = sp->min_p};
        /* gpt_sample without a generator returns the most likely candidate: the argmax */
        ds.greedy = !rng || sp->temperature <= 0 || sp->top_k == 1;
        if (ds.greedy) ds.a.temperature = 0;
        ds.u = gpt_xcalloc((size_t)(n > 0 ? n : 1), sizeof *ds.u);
        ds.o = gpt_xcalloc((size_t)(n > 0 ? n : 1), sizeof *ds.o);
        ds.u_d = ds.be->alloc(ds.be, (size_t)(n > 0 ? n : 1) * sizeof *ds.u);
        ds.o_d = ds.be->alloc(ds.be, (size_t)(n > 0 ? n : 1) * sizeof *ds.o);
    }
    if (!kc) goto out;
    double t0 = now_s();
    /* Prefill, GPT_KV_CHUNK tokens per sequence per call: first all but each prompt's last chunk
     * (no logits), then the last chunks together, with logits for each prompt's last row only:
     * the first new token's. */
    int *last = gpt_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *last);
    for (int final = 0; final < 2; final++)
        for (;;) {
            int rows = 0, nl = 0;
            for (int i = 0; i < n; i++) {
                if (!S[i].active) continue;
                size_t upto = final ? S[i].n_prompt
                                    : S[i].n_prompt - (S[i].n_prompt < GPT_KV_CHUNK ? S[i].n_prompt : GPT_KV_CHUNK);
                for (int k = 0; k < GPT_KV_CHUNK && S[i].fed < upto; k++, S[i].fed++)
                    tok[rows] = (int)S[i].prompt[S[i].fed], sq[rows++] = i;
                if (final) last[nl++] = rows - 1;
            }
            if (!rows) break;
            if (gpt_model_extend_rows(m, kc, tok, sq, rows, last, nl, on_dev ? NULL : logits, err) < 0) {
                free(last);
                goto out;
            }
            if (st) st->prefill_tokens += rows;
            if (final) break;
        }
    free(last);
    int first = 1;
    for (;;) {
        int rows = 0;
        for (int i = 0; i < n; i++)
            if (S[i].active) tok[rows] = (int)S[i].hist.v[S[i].hist.n - 1], sq[rows++] = i;
        if (!rows) break;
        /* the first round samples from the prefill's logits */
        if (!first && gpt_model_extend(m, kc, tok, sq, rows, on_dev ? NULL : logits, err) < 0) goto out;
        if (on_dev) dev_sample(&ds, gpt_model_logits(m), c->padded_vocab_size, rows, V, rng, ids);
        for (int r = 0; r < rows; r++) {
            int i = sq[r];
            gpt_gen_req *q = &reqs[i];
            uint32_t id = on_dev ? (uint32_t)ids[r]
                                 : (uint32_t)gpt_sample(smp, logits + (size_t)r * V, S[i].hist.v, S[i].hist.n, rng);
            gpt_ids_push(&S[i].hist, id);
            gpt_ids_push(&q->out, id);
            int eos = gpt_gen_is_eos(o, id);
            size_t before = S[i].text.emitted, safe = 0;
            int stopped = gpt_gen_text_step(tk, o, &S[i].text, id, eos, &safe);
            if (o->stream) {
                o->stream(o->stream_user, i, id, S[i].text.buf + before, safe > before ? safe - before : 0);
                if (safe > before) S[i].text.emitted = safe;
            }
            if (eos || stopped) q->finish = GPT_FINISH_STOP;
            else if ((int)S[i].hist.n >= S[i].limit) q->finish = GPT_FINISH_LENGTH;
            if (q->finish != GPT_FINISH_NONE) {
                S[i].active = 0;
                if (o->stream && S[i].text.len > S[i].text.emitted) { /* held-back tail, no stop came */
                    o->stream(o->stream_user, i, id, S[i].text.buf + S[i].text.emitted,
                              S[i].text.len - S[i].text.emitted);
                    S[i].text.emitted = S[i].text.len;
                }
            }
        }
        double t = now_s();
        if (first) {
            if (st) st->prefill_s += t - t0;
            first = 0;
        } else if (st) {
            st->decode_tokens += rows, st->decode_s += t - t0;
        }
        t0 = t;
    }
    for (int i = 0; i < n; i++) {
        if (reqs[i].finish == GPT_FINISH_ERROR || reqs[i].text) continue;
        reqs[i].text = S[i].text.buf ? S[i].text.buf : gpt_xcalloc(1, 1);
        reqs[i].text_len = S[i].text.len;
        S[i].text.buf = NULL;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++) gpt_ids_free(&S[i].hist), free(S[i].text.buf);
    free(S), free(tok), free(sq), free(logits), free(ids), free(ds.u), free(ds.o);
    if (ds.u_d) ds.be->free(ds.be, ds.u_d);
    if (ds.o_d) ds.be->free(ds.be, ds.o_d);
    gpt_sampler_free(smp);
    gpt_kv_cache_free(kc);
    return rc;
}
