/* plan.c: per-rank training memory from the parameter table and the activation layout of
 * lib/model.c, split over a Megatron-style mesh (plan.h). Nothing is allocated but the table. */
#include "plan.h"

#include <stdlib.h>
#include <string.h>

#include "params.h"

static int has(const char *name, const char *part) { return strstr(name, part) != NULL; }

static int ends(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* How many ways the tensor is split across the tp x ep ranks that share a pipeline stage. */
static int split_of(const gpt_tensor *t, const gpt_model_config *c, const gpt_plan_mesh *m, int *expert)
{
    const char *n = t->name;
    int tp = m->tp, kv = c->n_kv_heads < tp ? c->n_kv_heads : tp;
    *expert = 0;
    if (has(n, "mlp.experts.")) {
        *expert = 1;
        /* the down projection's bias is added once per expert after the row-parallel sum */
        return ends(n, "down_proj_bias") ? m->ep : m->ep * tp;
    }
    if (has(n, "mlp.router")) return 1;
    if (has(n, "wte.") || has(n, "embed_tokens.") || has(n, "lm_head.")) return tp; /* vocab rows */
    if (has(n, "k_proj.") || has(n, "v_proj.")) return kv;
    if (has(n, "q_proj.") || has(n, "c_attn.") || ends(n, "self_attn.sinks")) return tp;
    /* row-parallel: the weight's input is split, the bias added after the all-reduce */
    if (has(n, "o_proj.") || has(n, "attn.c_proj.") || has(n, "mlp.c_proj.") || has(n, "down_proj."))
        return ends(n, ".bias") ? 1 : tp;
    if (has(n, "mlp.c_fc.") || has(n, "up_proj.")) return tp;
    return 1; /* norms, positions */
}

/* Which stages hold a tensor outside the layers: the input side on the first, the output side
 * on the last (a tied embedding on both, as Megatron keeps it). */
static int on_stage(const gpt_tensor *t, const gpt_model_config *c, int s, int pp, int lo, int hi)
{
    if (t->layer >= 0) return t->layer >= lo && t->layer < hi;
    const char *n = t->name;
    int first = s == 0, last = s == pp - 1;
    if (has(n, "lm_head.") || has(n, "model.norm.") || has(n, "ln_f.")) return last;
    if ((has(n, "wte.") || has(n, "embed_tokens.")) && c->tie_embeddings) return first || last;
    return first;
}

int gpt_plan_compute(const gpt_model_config *c, const gpt_plan_mesh *mesh, const gpt_plan_opts *o, gpt_plan *plan,
                     gpt_err *err)
{
    memset(plan, 0, sizeof *plan);
    const gpt_plan_mesh m = *mesh;
    int moe = c->mlp == GPT_MLP_MOE;
    if (m.dp < 1 || m.tp < 1 || m.pp < 1 || m.ep < 1) return gpt_errf(err, "plan: --dp, --tp, --pp and --ep are >= 1");
    if (o->micro_batch < 1 || o->seq_len < 1 || o->grad_accum < 1)
        return gpt_errf(err, "plan: micro-batch, sequence length and gradient accumulation must be >= 1");
    if (m.pp > c->n_layers)
        return gpt_errf(err, "plan: --pp %d is more pipeline stages than the model's %d layers", m.pp, c->n_layers);
    if (c->n_heads % m.tp)
        return gpt_errf(err, "plan: --tp %d does not divide the %d attention heads", m.tp, c->n_heads);
    if (c->n_kv_heads % m.tp && m.tp % c->n_kv_heads)
        return gpt_errf(err, "plan: --tp %d and the %d KV heads: one must divide the other", m.tp, c->n_kv_heads);
    if (!moe && c->d_ff % m.tp) return gpt_errf(err, "plan: --tp %d does not divide d_ff %d", m.tp, c->d_ff);
    if (moe && c->d_expert % m.tp) return gpt_errf(err, "plan: --tp %d does not divide d_expert %d", m.tp, c->d_expert);
    if (m.ep > 1 && !moe) return gpt_errf(err, "plan: --ep %d needs a mixture-of-experts model", m.ep);
    if (moe && c->n_experts % m.ep)
        return gpt_errf(err, "plan: --ep %d does not divide the %d experts", m.ep, c->n_experts);
    if (m.dp % m.ep)
        return gpt_errf(err, "plan: --ep %d must divide --dp %d (experts are split over data-parallel ranks)", m.ep,
                        m.dp);
    gpt_param_table tab;
    if (gpt_params_build(c, &tab, err) < 0) return -1;
    plan->mesh = m;
    plan->opts = *o;
    plan->world = m.dp * m.tp * m.pp;
    plan->n_total = tab.total;
    plan->n_stages = m.pp;
    plan->stage = gpt_xcalloc((size_t)m.pp, sizeof *plan->stage);

    /* Activation shapes (lib/model.c alloc_acts), per rank of a tp group. */
    const double N = (double)o->micro_batch * o->seq_len, C = c->d_model, D = c->d_head, E = c->n_experts;
    const double H = (double)c->n_heads / m.tp;
    const double KV = (double)c->n_kv_heads / (c->n_kv_heads < m.tp ? c->n_kv_heads : m.tp);
    const double QKV = (H + 2 * KV) * D, A = H * D, Vp = (double)ceil_div((uint64_t)c->padded_vocab_size, (uint64_t)m.tp);
    const double F = (moe ? c->d_expert : c->d_ff) / (double)m.tp, NK = N * (moe ? c->experts_per_token : 0);
    const double ab = o->act_bytes, ib = 4; /* ints are int32 */
    double layer = ab * (N * C                       /* the residual after the layer */
                         + 4 * N * C + 4 * N         /* ln1, mid, ln2 + their mean/rstd */
                         + N * QKV + N * A + N * H); /* qkv, att, lse */
    if (moe)
        layer += ab * (2 * N * E + 2 * NK + NK * C + NK * 2 * F + NK * F + NK * C) + ib * 3 * NK;
    else
        layer += ab * 2 * N * F;
    double scratch = ab * (2 * N * C + N * A + N * QKV);
    if (moe)
        scratch += ab * (NK * C + NK * F + NK * 2 * F + NK * C + 2 * NK + N * E + E);
    else
        scratch += ab * N * F;
    if (moe && m.ep > 1) {
        /* EP (lib/model_ep.c): the experts' owner keeps the rows it received as well as the sent
         * ones, and its backward has three more rows-by-C buffers; the gate/up and hidden rows move
         * to the owner. Balanced routing assumed: NK rows per rank on average (at most ep x NK). */
        layer += ab * NK * C;
        scratch += ab * 3 * NK * C;
    }
    double rope = c->positions == GPT_POS_ROPE ? 4.0 * o->seq_len * (c->d_head / 2) * 2 : 0;

    for (int s = 0; s < m.pp; s++) {
        gpt_plan_stage *st = &plan->stage[s];
        st->layer_lo = (int)((int64_t)s * c->n_layers / m.pp);
        st->layer_hi = (int)((int64_t)(s + 1) * c->n_layers / m.pp);
        st->in_flight = m.pp - s < o->grad_accum ? m.pp - s : o->grad_accum;
        uint64_t n = 0, nx = 0;
        for (int i = 0; i < tab.n; i++) {
            const gpt_tensor *t = &tab.t[i];
            if (!on_stage(t, c, s, m.pp, st->layer_lo, st->layer_hi)) continue;
            int expert;
            uint64_t k = ceil_div(t->numel, (uint64_t)split_of(t, c, &m, &expert));
            k = (k + 15) & ~(uint64_t)15; /* the table's 64-byte alignment */
            n += k;
            if (expert) nx += k;
        }
        st->n_params = n;
        st->n_expert = nx;
        uint64_t n_pad = ceil_div(n, (uint64_t)m.dp) * (uint64_t)m.dp;
        int edp = m.dp / m.ep;
        st->params = (double)n * o->param_bytes;
        st->grads = (double)n * o->grad_bytes;
        st->optim = 8.0 * (double)n;
        st->optim_zero1 = 8.0 * ((double)(n - nx) / m.dp + (double)nx / edp);
        int Ls = st->layer_hi - st->layer_lo;
        double per_mb = layer * Ls + ab * N * C; /* + the stage's input residual */
        if (s == 0) per_mb += ib * N;             /* tokens */
        double once = scratch + rope;
        if (s == m.pp - 1) once += ab * (N * C + 2 * N + N * Vp + N) + ib * 2 * N; /* lnf, logits, losses, targets, correct */
        st->acts = per_mb * st->in_flight + once;
        st->host = 2.0 * 4.0 * (double)n_pad;
        st->comm = 0;
        if (m.pp > 1) st->comm += 2 * ab * N * C;      /* hidden states in, their gradient back */
        if (m.ep > 1) st->comm += 2 * ab * NK * C;     /* all-to-all dispatch and combine */
        st->comm_zero1 = st->comm + (m.dp > 1 ? 4.0 * (double)n_pad / m.dp : 0); /* reduce-scatter recv */
        /* gpt_trainer_save copies (non-ZeRO) or gathers (ZeRO-1) the whole AdamW state on top of
         * everything else while a checkpoint is written */
        st->save = 2.0 * 4.0 * (double)n_pad;
        st->total = st->params + st->grads + st->optim + st->acts + st->host + st->comm + st->save;
        st->total_zero1 = st->params + st->grads + st->optim_zero1 + st->acts + st->host + st->comm_zero1 + st->save;
        if (st->total > plan->stage[plan->max_stage].total) plan->max_stage = s;
        if (st->total_zero1 > plan->stage[plan->max_stage_zero1].total_zero1) plan->max_stage_zero1 = s;
    }
    gpt_params_free(&tab);
    return 0;
}

void gpt_plan_free(gpt_plan *plan)
{
    free(plan->stage);
    memset(plan, 0, sizeof *plan);
}

static void print_row(FILE *f, int s, const gpt_plan_stage *st)
{
    const double G = 1024.0 * 1024 * 1024;
    char layers[32];
    snprintf(layers, sizeof layers, "%d-%d", st->layer_lo, st->layer_hi - 1);
    fprintf(f, "%5d %7s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %9.3f %9.3f\n", s, layers, st->params / G,
            st->grads / G, st->optim / G, st->optim_zero1 / G, st->acts / G, st->host / G, st->comm_zero1 / G,
            st->save / G, st->total / G, st->total_zero1 / G);
}

void gpt_plan_print(const gpt_plan *p, const char *name, FILE *f)
{
    const gpt_plan_mesh *m = &p->mesh;
    fprintf(f, "plan: %s, %.4g billion parameters, mesh dp=%d tp=%d pp=%d ep=%d (%d ranks)\n", name,
            (double)p->n_total / 1e9, m->dp, m->tp, m->pp, m->ep, p->world);
    fprintf(f, "      micro-batch %d x %d tokens, %d per step; params %d bytes, grads %d, activations %d\n",
            p->opts.micro_batch, p->opts.seq_len, p->opts.grad_accum, p->opts.param_bytes, p->opts.grad_bytes,
            p->opts.act_bytes);
    fprintf(f, "per rank, GiB (optim: AdamW m+v; Z1: ZeRO-1 sharded; host: the trainer's fp32 copies of\n"
               "parameters and gradients; comm: collective buffers, ZeRO-1 receive buffer included;\n"
               "ckpt: the AdamW state gathered while a checkpoint is written):\n");
    fprintf(f, "%5s %7s %8s %8s %8s %8s %8s %8s %8s %8s %9s %9s\n", "stage", "layers", "params", "grads", "optim",
            "optim/Z1", "acts", "host", "comm", "ckpt", "total", "total/Z1");
    int prev = -1;
    for (int s = 0; s < p->n_stages; s++) {
        int show = p->n_stages <= 8 || s == 0 || s == p->n_stages - 1 || s == p->max_stage || s == p->max_stage_zero1;
        if (!show) continue;
        if (s > prev + 1) fprintf(f, "%5s\n", "...");
        print_row(f, s, &p->stage[s]);
        prev = s;
    }
    const gpt_plan_stage *a = &p->stage[p->max_stage], *z = &p->stage[p->max_stage_zero1];
    fprintf(f, "activations: %d micro-batch%s in flight on stage 0 (1F1B); %llu parameters on a rank of stage %d\n",
            p->stage[0].in_flight, p->stage[0].in_flight == 1 ? "" : "es", (unsigned long long)a->n_params,
            p->max_stage);
    fprintf(f, "peak per rank: %.0f bytes (ZeRO-1: %.0f bytes)\n", a->total, z->total_zero1);
    if (m->ep > 1)
        fprintf(f, "note: gpt-train runs --ep with --dp, --pp and ZeRO-1 so far (not with --tp)\n");
}
