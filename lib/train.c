/* train.c: options, the trainer (model + AdamW + data over a communicator), and the loop. */
#include "train.h"

#include "backend_select.h"
#include "checkpoint.h"
#include "half.h"
#include "model_ep.h"
#include "model_pp.h"
#include "comm_nccl.h"
#include "model_tp.h"
#include "pipeline.h"
#include "train_stats.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const gpt_train_keys[] = {
    "data",          "micro_batch",  "seq_len",      "grad_accum",    "global_batch", "steps",
    "warmup_steps",  "lr",           "min_lr_ratio", "weight_decay",  "beta1",        "beta2",
    "eps",           "clip_norm",    "label_smoothing", "seed",       "eval_interval", "eval_steps",
    "save_interval", "keep_last",    "log_interval", "out_dir",       "init_from",    "zero1",
    "precision",     "loss_scale",   "max_bad_steps", "peak_tflops",  "pp_schedule",
    "overlap_grad_reduce", "grad_bucket_mb", NULL};

void gpt_train_opts_default(gpt_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->data_mode = GPT_DATA_RANDOM;
    o->micro_batch = 4;
    o->seq_len = 0; /* 0: the model's max_seq_len */
    o->grad_accum = 1;
    o->steps = 1000;
    o->warmup_steps = 0;
    o->lr = 3e-4;
    o->min_lr_ratio = 0.1;
    o->weight_decay = 0.1;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->clip_norm = 1.0;
    o->seed = 1337;
    o->eval_interval = 0;
    o->eval_steps = 10;
    o->save_interval = 0;
    o->log_interval = 1;
    o->keep_last = 3;
    o->out_dir = gpt_xstrdup("out");
    o->precision = GPT_PREC_FP32;
    o->loss_scale_init = 65536.0;
    o->loss_scale_growth = 2.0;
    o->loss_scale_backoff = 0.5;
    o->loss_scale_interval = 2000;
    o->max_bad_steps = 5;
    o->mesh_tp = o->mesh_pp = o->mesh_ep = 1;
    o->overlap_grad_reduce = 1;
    o->grad_bucket_mb = 25; /* PyTorch DDP's bucket_cap_mb */
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++) free(l[i]);
    free(l);
}

void gpt_train_opts_free(gpt_train_opts *o)
{
    free_list(o->train_files, o->n_train);
    free_list(o->val_files, o->n_val);
    free(o->out_dir);
    free(o->init_from);
    memset(o, 0, sizeof *o);
}

/* A file list: one path (scalar) or a sequence of paths. */
static int read_files(const gpt_ynode *map, const char *path, const char *key, char ***out, size_t *n, gpt_err *err)
{
    const gpt_ynode *v = gpt_ymap_get(map, key, NULL);
    if (!v) return 0;
    char **l = NULL;
    size_t k = 0;
    if (v->kind == GPT_YSCALAR) {
        if (gpt_ynode_is_null(v) || !*v->text) return gpt_yerrf(err, v, path, "%s: give a token file or a list", key);
        l = gpt_xmalloc(sizeof *l);
        l[k++] = gpt_xstrdup(v->text);
    } else if (v->kind == GPT_YSEQ) {
        if (v->n == 0) return gpt_yerrf(err, v, path, "%s: the list is empty", key);
        l = gpt_xmalloc(v->n * sizeof *l);
        for (size_t i = 0; i < v->n; i++) {
            if (v->items[i]->kind != GPT_YSCALAR || !*v->items[i]->text) {
                free_list(l, k);
                return gpt_yerrf(err, v->items[i], path, "%s[%zu]: must be a file path", key, i);
            }
            l[k++] = gpt_xstrdup(v->items[i]->text);
        }
    } else {
        return gpt_yerrf(err, v, path, "%s: must be a path or a list of paths", key);
    }
    free_list(*out, *n);
    *out = l;
    *n = k;
    return 1;
}

static int read_str(const gpt_ynode *map, const char *path, const char *key, char **out, gpt_err *err)
{
    const char *s;
    int rc = gpt_yget_str(map, path, key, &s, err);
    if (rc == 1) {
        free(*out);
        *out = gpt_xstrdup(s);
    }
    return rc;
}

#define RD(call)                        \
    do {                                \
        if ((call) < 0) return -1;      \
    } while (0)

int gpt_train_opts_read(gpt_train_opts *o, const gpt_ynode *map, const char *path, gpt_err *err)
{
    if (!map) return 0;
    if (map->kind != GPT_YMAP) return gpt_yerrf(err, map, path, "must be a mapping of training settings");
    RD(gpt_ymap_check_keys(map, path, gpt_train_keys, err));
    int64_t v;
    double d;
    int b;

    const gpt_ynode *data = NULL;
    RD(gpt_yget_map(map, path, "data", &data, err));
    if (data) {
        char dpath[128];
        snprintf(dpath, sizeof dpath, "%s.data", path);
        static const char *const dkeys[] = {"train", "val", "mode", NULL};
        static const char *const modes[] = {"random", "sequential"};
        RD(gpt_ymap_check_keys(data, dpath, dkeys, err));
        RD(read_files(data, dpath, "train", &o->train_files, &o->n_train, err));
        RD(read_files(data, dpath, "val", &o->val_files, &o->n_val, err));
        int m;
        if (gpt_yget_enum(data, dpath, "mode", modes, 2, &m, err) < 0) return -1;
        else if (gpt_ymap_get(data, "mode", NULL)) o->data_mode = (gpt_data_mode)m;
    }
#define INT(key, lo, hi, field)                                                  \
    do {                                                                         \
        int rc_ = gpt_yget_int(map, path, key, lo, hi, &v, err);                 \
        if (rc_ < 0) return -1;                                                  \
        if (rc_ == 1) field = v;                                                 \
    } while (0)
#define FLT(key, lo, lo_open, hi, field)                                         \
    do {                                                                         \
        int rc_ = gpt_yget_float(map, path, key, lo, lo_open, hi, &d, err);      \
        if (rc_ < 0) return -1;                                                  \
        if (rc_ == 1) field = d;                                                 \
    } while (0)
    INT("micro_batch", 1, 1 << 20, o->micro_batch);
    INT("seq_len", 1, 1 << 24, o->seq_len);
    INT("grad_accum", 1, 1 << 20, o->grad_accum);
    INT("global_batch", 0, INT64_C(1) << 40, o->global_batch);
    INT("steps", 0, INT64_C(1) << 50, o->steps);
    INT("warmup_steps", 0, INT64_C(1) << 50, o->warmup_steps);
    FLT("lr", 0, 1, 10, o->lr);
    FLT("min_lr_ratio", 0, 0, 1, o->min_lr_ratio);
    FLT("weight_decay", 0, 0, 10, o->weight_decay);
    FLT("beta1", 0, 0, 0.999999, o->beta1);
    FLT("beta2", 0, 0, 0.999999999, o->beta2);
    FLT("eps", 0, 1, 1, o->eps);
    FLT("clip_norm", 0, 0, 1e30, o->clip_norm);
    FLT("label_smoothing", 0, 0, 1, o->label_smoothing);
    INT("seed", 0, INT64_MAX, o->seed);
    INT("eval_interval", 0, INT64_C(1) << 50, o->eval_interval);
    INT("eval_steps", 0, INT64_C(1) << 30, o->eval_steps);
    INT("save_interval", 0, INT64_C(1) << 50, o->save_interval);
    INT("log_interval", 1, INT64_C(1) << 50, o->log_interval);
    INT("keep_last", 0, 1 << 20, o->keep_last);
    INT("max_bad_steps", 1, 1 << 30, o->max_bad_steps);
    FLT("peak_tflops", 0, 0, 1e9, o->peak_tflops);
    RD(read_str(map, path, "out_dir", &o->out_dir, err));
    RD(read_str(map, path, "init_from", &o->init_from, err));
    int rc = gpt_yget_bool(map, path, "zero1", &b, err);
    if (rc < 0) return -1;
    if (rc == 1) o->zero1 = b;
    rc = gpt_yget_bool(map, path, "overlap_grad_reduce", &b, err);
    if (rc < 0) return -1;
    if (rc == 1) o->overlap_grad_reduce = b;
    FLT("grad_bucket_mb", 0, 0, 1e6, o->grad_bucket_mb);
    static const char *const precs[] = {"fp32", "bf16", "fp16"};
    int p;
    rc = gpt_yget_enum(map, path, "precision", precs, 3, &p, err);
    if (rc < 0) return -1;
    if (rc == 1) o->precision = (gpt_precision)p;
    static const char *const scheds[] = {"gpipe", "1f1b"};
    rc = gpt_yget_enum(map, path, "pp_schedule", scheds, 2, &p, err);
    if (rc < 0) return -1;
    if (rc == 1) o->pp_schedule = p;
    const gpt_ynode *ls = NULL;
    RD(gpt_yget_map(map, path, "loss_scale", &ls, err));
    if (ls) {
        char lpath[128];
        snprintf(lpath, sizeof lpath, "%s.loss_scale", path);
        static const char *const lkeys[] = {"init", "growth", "backoff", "interval", NULL};
        RD(gpt_ymap_check_keys(ls, lpath, lkeys, err));
        const gpt_ynode *save = map;
        map = ls;
        const char *spath = path;
        path = lpath;
        FLT("init", 0, 1, 1e30, o->loss_scale_init);
        FLT("growth", 1, 0, 1e6, o->loss_scale_growth);
        FLT("backoff", 0, 1, 1, o->loss_scale_backoff);
        INT("interval", 1, INT64_C(1) << 40, o->loss_scale_interval);
        map = save;
        path = spath;
    }
#undef INT
#undef FLT
    return 0;
}

/* ---- the trainer ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mkdir_p(const char *dir, gpt_err *err)
{
    char *p = gpt_xstrdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0777) < 0 && errno != EEXIST) goto fail;
            *s = '/';
        }
    if (mkdir(p, 0777) < 0 && errno != EEXIST) goto fail;
    free(p);
    return 0;
fail:
    gpt_errf(err, "cannot create output directory %s: %s", dir, strerror(errno));
    free(p);
    return -1;
}

/* PP: tp_split re-indexed from the full table to the stage's, 2 for a tied embedding's shadow copy. */
static void pp_split_flags(gpt_trainer *tr)
{
    const gpt_param_table *tab = gpt_model_params(tr->model);
    unsigned char *sh = gpt_pp_shadow_flags(tr->model), *f = gpt_xcalloc((size_t)tab->n + 1, 1);
    for (int i = 0; i < tab->n; i++) {
        const gpt_tensor *t = gpt_params_find(&tr->ftab, tab->t[i].name);
        f[i] = sh[i] ? 2 : t ? tr->tp_split[t - tr->ftab.t] : 0;
    }
    free(sh);
    free(tr->tp_split);
    tr->tp_split = f;
}

/* o.device's backend; under mpirun plain "cuda" or "auto" takes the rank's local GPU. *cuda_dev: the
 * CUDA device index, or -1 for another backend. */
static gpt_backend *open_backend(gpt_trainer *tr, int *cuda_dev, gpt_err *err)
{
    const char *name = tr->o.device && *tr->o.device ? tr->o.device : "cpu";
    gpt_backend *be = gpt_backend_open(name, err);
    *cuda_dev = -1;
    if (!be || strcmp(be->name, "cuda") != 0) return be;
    int explicit = strncmp(name, "cuda:", 5) == 0, d = explicit ? atoi(name + 5) : 0;
    if (!explicit && tr->comm->local_size > 1 && tr->comm->local_rank > 0) {
        char buf[32];
        d = tr->comm->local_rank;
        snprintf(buf, sizeof buf, "cuda:%d", d);
        be->destroy(be);
        if (!(be = gpt_backend_open(buf, err))) {
            gpt_err_prefix(err, "rank %d (local rank %d of %d) wants its own GPU", tr->comm->rank, d,
                           tr->comm->local_size);
            return NULL;
        }
    }
    *cuda_dev = d;
    return be;
}

int gpt_train_check_mesh(const gpt_train_opts *o, const gpt_model_config *mcfg, int world_size, gpt_err *err)
{
    int dp = o->mesh_dp;
    if (gpt_mesh_check(world_size, &dp, o->mesh_tp, o->mesh_pp, o->mesh_ep, err) < 0) return -1;
    const int ep = o->mesh_ep, tp = o->mesh_tp;
    if (ep <= 1) return 0;
    /* What expert parallelism combines with so far: data and pipeline parallelism, ZeRO-1. */
    if (mcfg->mlp != GPT_MLP_MOE)
        return gpt_errf(err, "--ep %d: expert parallelism needs a mixture-of-experts model (model.mlp.type: moe); "
                             "this one is dense: use --dp", ep);
    if (mcfg->n_experts % ep)
        return gpt_errf(err, "--ep %d must divide the model's %d experts", ep, mcfg->n_experts);
    if (tp > 1)
        return gpt_errf(err, "--ep %d with --tp %d: gpt-train does not combine expert parallelism with tensor "
                             "parallelism yet (--dp N --ep E, with --pp and --zero1 if you like); use --tp 1 with "
                             "--ep, or --ep 1", ep, tp);
    return 0;
}

/* ZeRO-1 under EP: a part's shards are ceil(part / group) floats, the last one short or empty. */
static size_t ez_per(size_t n, int k) { return (n + (size_t)k - 1) / (size_t)k; }

/* The two shards of ZeRO-1 under EP (train.h: ep_zero1): the replicated part of the local buffer
 * over dp (in shard_lo, shard_hi), the expert part over the ranks holding the same experts. */
static void ez_shards(gpt_trainer *tr)
{
    size_t nr = gpt_model_ep_replicated(tr->model), ne = tr->n - nr;
    gpt_comm *d = tr->mesh.dp_comm, *e = tr->mesh.edp_comm;
    size_t pr = ez_per(nr, d->size), pe = ez_per(ne, e->size);
    size_t a = pr * (size_t)d->rank, b = pe * (size_t)e->rank;
    tr->shard_lo = a < nr ? a : nr;
    tr->shard_hi = a + pr < nr ? a + pr : nr;
    tr->ex_lo = nr + (b < ne ? b : ne);
    tr->ex_hi = nr + (b + pe < ne ? b + pe : ne);
    tr->ep_zero1 = 1;
}

int gpt_trainer_init(gpt_trainer *tr, const gpt_train_opts *o, const gpt_model_config *mcfg, gpt_comm *comm,
                     gpt_err *err)
{
    memset(tr, 0, sizeof *tr);
    tr->o = *o;
    tr->mcfg = *mcfg;
    tr->comm = comm;
    tr->saved_step = -1;
    gpt_train_opts *to = &tr->o;
    if (gpt_train_check_mesh(to, mcfg, comm->size, err) < 0) return -1;
    if (gpt_mesh_init(&tr->mesh, comm, to->mesh_dp, to->mesh_tp, to->mesh_pp, to->mesh_ep, err) < 0) return -1;
    const int dp = tr->mesh.dp;
    if (to->seq_len == 0) to->seq_len = mcfg->max_seq_len;
    if (to->seq_len > mcfg->max_seq_len) {
        gpt_errf(err, "train.seq_len %d exceeds the model's max_seq_len %d", to->seq_len, mcfg->max_seq_len);
        goto fail;
    }
    if (to->global_batch) {
        int64_t per = (int64_t)to->micro_batch * dp;
        if (to->global_batch % per) {
            gpt_errf(err, "train.global_batch %lld is not a multiple of micro_batch %d x %d ranks; pick a "
                                 "global batch divisible by %lld",
                            (long long)to->global_batch, to->micro_batch, dp, (long long)per);
            goto fail;
        }
        to->grad_accum = (int)(to->global_batch / per);
    }
    if (to->n_train == 0) {
        gpt_errf(err, "no training data: set train.data.train or pass --data FILE");
        goto fail;
    }
    if (to->zero1 && dp == 1) to->zero1 = 0;

    tr->train = gpt_data_open((const char *const *)to->train_files, to->n_train, to->seq_len, to->data_mode,
                              to->seed, err);
    if (!tr->train) goto fail;
    if (gpt_data_vocab(tr->train) > (uint32_t)mcfg->vocab_size) {
        gpt_errf(err, "training data has a vocabulary of %u ids but the model's vocab_size is %d; tokenize with the "
                      "model's tokenizer (%s)", gpt_data_vocab(tr->train), mcfg->vocab_size, mcfg->tokenizer);
        goto fail;
    }
    if (to->n_val) {
        tr->val = gpt_data_open((const char *const *)to->val_files, to->n_val, to->seq_len, GPT_DATA_SEQUENTIAL, 0,
                                err);
        if (!tr->val) goto fail;
        if (gpt_data_vocab(tr->val) > (uint32_t)mcfg->vocab_size) {
            gpt_errf(err, "validation data has a vocabulary of %u ids but the model's vocab_size is %d",
                     gpt_data_vocab(tr->val), mcfg->vocab_size);
            goto fail;
        }
    }
    int cuda_dev;
    if (!(tr->be = open_backend(tr, &cuda_dev, err))) goto fail;
    /* Mixed precision: every GEMM (forward and backward) takes bf16 / fp16 operands with fp32
     * sums; parameters, gradients and AdamW stay fp32 (the master copies). */
    tr->be->gemm_prec = to->precision == GPT_PREC_BF16 ? GPT_GEMM_BF16
                        : to->precision == GPT_PREC_FP16 ? GPT_GEMM_FP16 : GPT_GEMM_FP32;
    /* On the CPU only bf16 with AMX is faster than fp32; say which one this run gets, once. */
    if (strcmp(tr->be->name, "cpu") == 0 && tr->be->gemm_prec != GPT_GEMM_FP32 && comm->rank == 0 && !to->quiet)
        fprintf(stderr, "gpt-train: %s GEMMs %s\n", tr->be->gemm_prec == GPT_GEMM_BF16 ? "bf16" : "fp16",
                tr->be->gemm_prec == GPT_GEMM_BF16 && tr->be->amx
                    ? "run on AMX tiles"
                    : "are emulated on this CPU (rounded fp32 copies: mixed precision's numbers, not its speed; "
                      "bf16 on a CPU with AMX-BF16 is fast)");
    if (!tr->be->adamw || !tr->be->sumsq) {
        gpt_errf(err, "the %s backend has no optimizer ops (adamw, sumsq); train with --device cpu", tr->be->name);
        goto fail;
    }
    /* Gradients reduce on the device when a device communicator exists (NCCL); ZeRO-1's padded
     * shards still go through the host. */
    if (cuda_dev >= 0 && dp > 1 && !to->zero1 && tr->mesh.ep == 1 && gpt_comm_nccl_available()) {
        if (!(tr->dev_comm = gpt_comm_nccl(tr->mesh.dp_comm, cuda_dev, err))) goto fail;
    }
    if (tr->mesh.ep > 1)
        tr->model = gpt_model_create_ep_pp(mcfg, tr->be, tr->mesh.ep_comm, tr->mesh.pp, tr->mesh.pp_rank, err);
    else
        tr->model = gpt_model_create_pp(mcfg, tr->be, tr->mesh.tp_comm, tr->mesh.pp, tr->mesh.pp_rank, err);
    if (!tr->model || gpt_params_build(mcfg, &tr->ftab, err) < 0) goto fail;
    if (tr->mesh.ep > 1)
        gpt_model_ep_init_params(tr->model, to->seed);
    else
        gpt_model_pp_init_params(tr->model, to->seed);
    tr->tp_split = gpt_tp_split_flags(mcfg, tr->mesh.tp);
    if (tr->mesh.pp > 1) pp_split_flags(tr);
    const gpt_param_table *tab = gpt_model_params(tr->model);
    tr->n = tab->total;
    tr->n_pad = (tr->n + (size_t)dp - 1) / (size_t)dp * (size_t)dp;
    tr->hparams = gpt_xcalloc(tr->n_pad, sizeof(float));
    tr->hgrads = gpt_xcalloc(tr->n_pad, sizeof(float));
    gpt_trainer_sync_host(tr);
    if (to->zero1) {
        size_t per = tr->n_pad / (size_t)dp;
        tr->shard_lo = per * (size_t)tr->mesh.dp_rank;
        tr->shard_hi = tr->shard_lo + per < tr->n ? tr->shard_lo + per : tr->n;
        if (tr->shard_lo > tr->n) tr->shard_lo = tr->n;
    } else {
        tr->shard_lo = 0;
        tr->shard_hi = tr->n;
    }
    if (to->zero1 && tr->mesh.ep > 1) ez_shards(tr);
    gpt_adamw_hparams hp = {to->beta1, to->beta2, to->eps, to->weight_decay};
    if (gpt_adamw_init_on(&tr->opt, tr->be, tab, tr->shard_lo, tr->shard_hi, &hp, err) < 0) goto fail;
    if (tr->ep_zero1 && gpt_adamw_init_on(&tr->opt_ex, tr->be, tab, tr->ex_lo, tr->ex_hi, &hp, err) < 0) goto fail;
    tr->sched = (gpt_lr_schedule){to->lr, to->min_lr_ratio, to->warmup_steps, to->steps};
    gpt_loss_scaler_init(&tr->scaler, to->precision == GPT_PREC_FP16, to->loss_scale_init, to->loss_scale_growth,
                         to->loss_scale_backoff, to->loss_scale_interval);
    size_t bt = (size_t)to->micro_batch * (size_t)to->seq_len;
    tr->tok = gpt_xmalloc(bt * sizeof(int));
    tr->tgt = gpt_xmalloc(bt * sizeof(int));
    tr->flops_per_token = gpt_flops_per_token(mcfg, to->seq_len);
    if (comm->rank == 0 && to->out_dir && mkdir_p(to->out_dir, err) < 0) goto fail;
    return 0;
fail:
    gpt_trainer_free(tr);
    return -1;
}

void gpt_trainer_free(gpt_trainer *tr)
{
    gpt_data_close(tr->train);
    gpt_data_close(tr->val);
    if (tr->model) gpt_model_free(tr->model);
    gpt_params_free(&tr->ftab);
    free(tr->tp_split);
    gpt_mesh_free(&tr->mesh);
    gpt_adamw_free(&tr->opt);
    gpt_adamw_free(&tr->opt_ex);
    free(tr->hparams);
    free(tr->hgrads);
    free(tr->tok);
    free(tr->tgt);
    if (tr->metrics) fclose(tr->metrics);
    gpt_trainer_stats_free(tr);
    if (tr->dev_comm) gpt_comm_free(tr->dev_comm);
    if (tr->be) tr->be->destroy(tr->be);
    /* Options belong to the caller. */
    memset(tr, 0, sizeof *tr);
}

void gpt_trainer_sync_host(gpt_trainer *tr)
{
    tr->be->to_host(tr->be, tr->hparams, gpt_model_param_data(tr->model), tr->n * sizeof(float));
}

void gpt_trainer_sync_device(gpt_trainer *tr)
{
    tr->be->to_device(tr->be, gpt_model_param_data(tr->model), tr->hparams, tr->n * sizeof(float));
}

/* Sum of squares of the gradient over [lo, hi) of the local buffer, tensors replicated across tp
 * ranks weighted 1/tp (so the sum over the tp group counts them once). */
static double tp_sumsq(gpt_trainer *tr, size_t lo, size_t hi)
{
    const gpt_param_table *tab = gpt_model_params(tr->model);
    double s = 0;
    for (int i = 0; i < tab->n; i++) {
        size_t a = tab->t[i].offset, b = a + tab->t[i].numel;
        if (a < lo) a = lo;
        if (b > hi) b = hi;
        if (a >= b) continue;
        double q = tr->be->sumsq(tr->be, gpt_model_grad_data(tr->model) + a, b - a);
        s += tr->tp_split[i] == 2 ? 0 : tr->tp_split[i] ? q : q / tr->mesh.tp;
    }
    return s;
}

/* Host gradients summed over the data-parallel ranks; with EP the expert shard (the end of the
 * buffer, model_ep.h) only over the ranks holding the same experts. */
static int grad_allreduce(gpt_trainer *tr, gpt_err *err)
{
    size_t nr = gpt_model_ep_replicated(tr->model);
    gpt_comm *c = tr->mesh.dp_comm, *e = tr->mesh.edp_comm;
    if (c->allreduce_sum(c, tr->hgrads, nr, err) < 0) return -1;
    return nr < tr->n && e->size > 1 ? e->allreduce_sum(e, tr->hgrads + nr, tr->n - nr, err) : 0;
}

/* EP: the squared gradient norm, the expert shards summed over the expert group (each expert once). */
static int ep_sumsq(gpt_trainer *tr, double *out, gpt_err *err)
{
    size_t nr = gpt_model_ep_replicated(tr->model);
    const float *g = gpt_model_grad_data(tr->model);
    double ex = tr->be->sumsq(tr->be, g + nr, tr->n - nr);
    gpt_comm *e = tr->mesh.ep_comm;
    if (e->allreduce_sum_f64(e, &ex, 1, err) < 0) return -1;
    *out = (tr->mesh.pp > 1 ? tp_sumsq(tr, 0, nr) : tr->be->sumsq(tr->be, g, nr)) + ex;
    return 0;
}

/* Gradient reduction overlapped with backward (data parallelism without pipeline stages, host
 * staging unless the backend's memory is the host's): backward reports each range it has finished
 * (gpt_model_set_grad_hook); contiguous ranges gather into a bucket, and a full bucket is copied to
 * the host (when staged) and its reduction started
 * (an all-reduce, or under ZeRO-1 a reduce of each shard's piece to the shard's owner) while
 * backward goes on. Every element is reduced once by the same MPI reduction as the blocking path,
 * over the same ranks; only how the buffer is cut into messages differs. */
typedef struct {
    gpt_trainer *tr;
    gpt_comm *c;
    size_t lo, hi;   /* the bucket being gathered, [lo, hi) of the flat gradient (lo == hi: empty) */
    size_t bucket;   /* floats that close a bucket (0: every range is one) */
    float *buf;      /* what is reduced: tr->hgrads (staged), or the gradient itself (host memory) */
    gpt_comm_req **req;
    size_t n_req, cap, n_done; /* requests [0, n_done) have completed */
    int failed;
    gpt_err err;
} grad_sync;

static int overlap_on(const gpt_trainer *tr)
{
    const gpt_comm *c = tr->mesh.dp_comm;
    return tr->o.overlap_grad_reduce && c->size > 1 && !tr->dev_comm && tr->mesh.pp == 1 && tr->mesh.ep == 1 && c->iallreduce_sum &&
           c->ireduce_sum && c->test && c->wait;
}

static void gs_start(grad_sync *s, float *buf, size_t n, int root)
{
    if (s->n_req == s->cap) s->req = gpt_xrealloc(s->req, (s->cap = s->cap ? 2 * s->cap : 16) * sizeof *s->req);
    gpt_comm_req **q = &s->req[s->n_req];
    *q = NULL;
    int rc = root < 0 ? s->c->iallreduce_sum(s->c, buf, n, q, &s->err) : s->c->ireduce_sum(s->c, buf, n, root, q, &s->err);
    if (rc < 0) s->failed = 1;
    else s->n_req++;
}

/* The gathered bucket: to the host, its reduction started. */
static void gs_flush(grad_sync *s)
{
    gpt_trainer *tr = s->tr;
    size_t lo = s->lo, hi = s->hi;
    s->lo = s->hi = 0;
    if (lo == hi || s->failed) return;
    if (s->buf == tr->hgrads)
        tr->be->to_host(tr->be, tr->hgrads + lo, gpt_model_grad_data(tr->model) + lo, (hi - lo) * sizeof(float));
    if (!tr->o.zero1) {
        gs_start(s, s->buf + lo, hi - lo, -1);
        return;
    }
    /* ZeRO-1: rank r owns [r per, (r + 1) per) (the blocking path's reduce-scatter blocks) */
    size_t per = tr->n_pad / (size_t)s->c->size;
    for (size_t a = lo; a < hi && !s->failed;) {
        size_t r = a / per, b = (r + 1) * per < hi ? (r + 1) * per : hi;
        gs_start(s, s->buf + a, b - a, (int)r);
        a = b;
    }
}

/* MPICH progresses non-blocking collectives only inside MPI calls: poke them between layers. */
static void gs_progress(grad_sync *s)
{
    while (s->n_done < s->n_req && !s->failed) {
        int done = 0;
        if (s->c->test(s->c, s->req[s->n_done], &done, &s->err) < 0) s->failed = 1;
        if (!done) break;
        s->n_done++;
    }
}

static void gs_ready(void *ctx, size_t off, size_t n)
{
    grad_sync *s = ctx;
    if (s->lo != s->hi && off + n != s->lo) gs_flush(s); /* not contiguous with the bucket */
    if (s->lo == s->hi) s->hi = off + n;
    s->lo = off;
    if (s->hi - s->lo >= s->bucket) gs_flush(s);
    gs_progress(s);
}

/* After the last backward: the rest started, everything waited for, this rank's part uploaded. */
static int gs_finish(grad_sync *s, gpt_err *err)
{
    gpt_trainer *tr = s->tr;
    gs_flush(s);
    int rc = s->failed ? -1 : 0;
    for (size_t i = 0; i < s->n_req; i++) /* every request is waited for, so none is left running */
        if (s->c->wait(s->c, s->req[i], rc < 0 ? NULL : &s->err) < 0) rc = -1;
    free(s->req);
    s->req = NULL;
    s->n_req = s->cap = s->n_done = 0;
    if (rc < 0) {
        *err = s->err;
        return gpt_err_prefix(err, "overlapped gradient reduction (--no-overlap-grad-reduce turns it off)");
    }
    if (s->buf == tr->hgrads)
        tr->be->to_device(tr->be, gpt_model_grad_data(tr->model) + tr->shard_lo, tr->hgrads + tr->shard_lo,
                          (tr->shard_hi - tr->shard_lo) * sizeof(float));
    return 0;
}

/* ---- ZeRO-1 under EP: each part of the local buffer [replicated | expert shard] through its own
 * reduce-scatter and all-gather, over the ranks that hold the same values (dp, edp). The
 * collectives take padded copies, so the parts need not divide by the group sizes. ---- */

/* x[0, n) summed over c; this rank's shard [lo, hi) of the sum lands in place (the rest is stale). */
static int ez_reduce_part(gpt_comm *c, float *x, size_t n, size_t lo, size_t hi, gpt_err *err)
{
    if (c->size == 1) return 0;
    size_t per = ez_per(n, c->size);
    float *send = gpt_xcalloc(per * (size_t)c->size + 1, sizeof *send), *recv = gpt_xmalloc((per + 1) * sizeof *recv);
    memcpy(send, x, n * sizeof *x);
    int rc = c->reduce_scatter_sum(c, send, recv, per, err);
    if (rc == 0) memcpy(x + lo, recv, (hi - lo) * sizeof *x);
    free(send);
    free(recv);
    return rc;
}

/* x[lo, hi) of every rank of c -> x[0, n) on all of them. */
static int ez_gather_part(gpt_comm *c, float *x, size_t n, size_t lo, size_t hi, gpt_err *err)
{
    if (c->size == 1) return 0;
    size_t per = ez_per(n, c->size);
    float *all = gpt_xcalloc(per * (size_t)c->size + 1, sizeof *all), *mine = all + per * (size_t)c->rank;
    memcpy(mine, x + lo, (hi - lo) * sizeof *x);
    int rc = c->allgather(c, mine, all, per, err);
    if (rc == 0) memcpy(x, all, n * sizeof *x);
    free(all);
    return rc;
}

/* Host gradients (tr->hgrads) -> both reduced shards, in place there and on the backend. */
static int ez_reduce(gpt_trainer *tr, gpt_err *err)
{
    size_t nr = gpt_model_ep_replicated(tr->model), ne = tr->ex_hi - tr->ex_lo;
    if (ez_reduce_part(tr->mesh.dp_comm, tr->hgrads, nr, tr->shard_lo, tr->shard_hi, err) < 0 ||
        ez_reduce_part(tr->mesh.edp_comm, tr->hgrads + nr, tr->n - nr, tr->ex_lo - nr, tr->ex_hi - nr, err) < 0)
        return -1;
    if (ne) tr->be->to_device(tr->be, gpt_model_grad_data(tr->model) + tr->ex_lo, tr->hgrads + tr->ex_lo, ne * sizeof(float));
    return 0;
}

/* The squares of both shards: summed over dp they count every parameter once (the dp ranks are
 * the ep x edp positions, each expert shard sits on exactly one). */
static double ez_sumsq(gpt_trainer *tr)
{
    return tp_sumsq(tr, tr->shard_lo, tr->shard_hi) + tp_sumsq(tr, tr->ex_lo, tr->ex_hi);
}

/* The expert shard's update (opt took the replicated one), then both parts gathered everywhere. */
static int ez_update(gpt_trainer *tr, double lr, float scale, gpt_err *err)
{
    float *p = gpt_model_param_data(tr->model), *g = gpt_model_grad_data(tr->model);
    size_t nr = gpt_model_ep_replicated(tr->model), r = tr->shard_hi - tr->shard_lo, e = tr->ex_hi - tr->ex_lo;
    gpt_adamw_step(&tr->opt_ex, p + tr->ex_lo, g + tr->ex_lo, lr, scale);
    if (r) tr->be->to_host(tr->be, tr->hparams + tr->shard_lo, p + tr->shard_lo, r * sizeof(float));
    if (e) tr->be->to_host(tr->be, tr->hparams + tr->ex_lo, p + tr->ex_lo, e * sizeof(float));
    if (ez_gather_part(tr->mesh.dp_comm, tr->hparams, nr, tr->shard_lo, tr->shard_hi, err) < 0 ||
        ez_gather_part(tr->mesh.edp_comm, tr->hparams + nr, tr->n - nr, tr->ex_lo - nr, tr->ex_hi - nr, err) < 0)
        return -1;
    gpt_trainer_sync_device(tr);
    return 0;
}

/* Both optimizers' moments into whole local vectors (at their shards' offsets), then gathered. */
static void ez_state_get(gpt_trainer *tr, float *m, float *v)
{
    gpt_adamw_state_get(&tr->opt, m + tr->shard_lo, v + tr->shard_lo);
    gpt_adamw_state_get(&tr->opt_ex, m + tr->ex_lo, v + tr->ex_lo);
}

static int ez_gather_moment(gpt_trainer *tr, float *full, gpt_err *err)
{
    size_t nr = gpt_model_ep_replicated(tr->model);
    if (ez_gather_part(tr->mesh.dp_comm, full, nr, tr->shard_lo, tr->shard_hi, err) < 0 ||
        ez_gather_part(tr->mesh.edp_comm, full + nr, tr->n - nr, tr->ex_lo - nr, tr->ex_hi - nr, err) < 0)
        return -1;
    return 0;
}

/* PP: the step's grad_accum micro-batches through the pipeline; the loss sums (the last stage's)
 * end up on every stage. */
static int pp_accumulate(gpt_trainer *tr, double *sums, gpt_err *err)
{
    const gpt_train_opts *o = &tr->o;
    gpt_comm *c = tr->mesh.dp_comm, *ppc = tr->mesh.pp_comm;
    size_t n = (size_t)o->micro_batch * (size_t)o->seq_len;
    int *tok = gpt_xmalloc((size_t)o->grad_accum * n * sizeof *tok), *tgt = gpt_xmalloc((size_t)o->grad_accum * n * sizeof *tgt);
    for (int a = 0; a < o->grad_accum; a++)
        gpt_data_next(tr->train, c->rank, c->size, o->micro_batch, tok + a * n, tgt + a * n);
    gpt_forward_opts fo = {(float)o->label_smoothing, tr->scaler.scale};
    int rc = gpt_pp_run(tr->model, ppc, (gpt_pp_schedule)o->pp_schedule, o->grad_accum, tok, tgt, o->micro_batch,
                        o->seq_len, &fo, 1, sums, tr->pp_stats, err);
    free(tok);
    free(tgt);
    if (rc < 0) return -1;
    return ppc->allreduce_sum_f64(ppc, sums, 4, err);
}

int gpt_trainer_step(gpt_trainer *tr, gpt_step_stats *st, gpt_err *err)
{
    const gpt_train_opts *o = &tr->o;
    gpt_comm *c = tr->mesh.dp_comm, *tpc = tr->mesh.tp_comm;
    const int B = o->micro_batch, T = o->seq_len, dp = c->size;
    gpt_forward_opts fo = {(float)o->label_smoothing, tr->scaler.scale};
    memset(st, 0, sizeof *st);
    gpt_model_zero_grad(tr->model);
    /* sums: ce * n, nll * n, correct, scored */
    double sums[5] = {0, 0, 0, 0, 0};
    const int ov = overlap_on(tr);
    grad_sync gs = {.tr = tr, .c = c, .bucket = (size_t)(o->grad_bucket_mb * 1048576.0 / sizeof(float))};
    /* The CPU backend's memory is host memory: MPI reduces the gradient in place, no staging copies. */
    gs.buf = strcmp(tr->be->name, "cpu") == 0 ? gpt_model_grad_data(tr->model) : tr->hgrads;
    if (tr->mesh.pp > 1) {
        if (pp_accumulate(tr, sums, err) < 0) return -1;
    } else
    for (int a = 0; a < o->grad_accum; a++) {
        gpt_data_next(tr->train, c->rank, dp, B, tr->tok, tr->tgt);
        gpt_loss L;
        if (gpt_model_forward(tr->model, tr->tok, tr->tgt, B, T, &fo, &L, err) < 0) return -1;
        /* Only the last micro-batch's backward finishes gradients: reduce them as it goes. */
        if (ov && a == o->grad_accum - 1) gpt_model_set_grad_hook(tr->model, gs_ready, &gs);
        int rc = gpt_model_backward(tr->model, err);
        gpt_model_set_grad_hook(tr->model, NULL, NULL);
        if (rc < 0) { /* the caller aborts every rank: requests in flight are abandoned with them */
            free(gs.req);
            return -1;
        }
        sums[0] += L.ce * (double)L.n_scored;
        sums[1] += L.nll * (double)L.n_scored;
        sums[2] += (double)L.n_correct;
        sums[3] += (double)L.n_scored;
    }
    /* The gradient stays in backend memory: reduced there (NCCL) or staged through the host. */
    float *dgrad = gpt_model_grad_data(tr->model), *dparam = gpt_model_param_data(tr->model);
    if (tr->mesh.pp > 1) { /* the tied embedding's two copies (first and last stage) add their gradients */
        tr->be->to_host(tr->be, tr->hgrads, dgrad, tr->n * sizeof(float));
        if (gpt_pp_sync_tied(tr->model, tr->mesh.pp_comm, tr->hgrads, err) < 0) return -1;
        tr->be->to_device(tr->be, dgrad, tr->hgrads, tr->n * sizeof(float));
    }
    const double t_sync = now_s(); /* the reduction's time not hidden behind backward */
    /* The gradient sums grad_accum micro-batch means on each of dp ranks, times the loss scale. */
    const float gscale = (float)(1.0 / ((double)o->grad_accum * dp * tr->scaler.scale));
    float *g = dgrad + tr->shard_lo; /* this rank's part after the reduction */
    size_t gn = tr->shard_hi - tr->shard_lo;
    if (dp > 1 && tr->dev_comm) {
        if (tr->dev_comm->allreduce_sum(tr->dev_comm, dgrad, tr->n, err) < 0) return -1;
    } else if (ov) {
        if (gs_finish(&gs, err) < 0) return -1;
    } else if (dp > 1) {
        tr->be->to_host(tr->be, tr->hgrads, dgrad, tr->n * sizeof(float));
        if (tr->ep_zero1) {
            if (ez_reduce(tr, err) < 0) return -1;
        } else if (o->zero1) {
            size_t per = tr->n_pad / (size_t)dp;
            /* In place: the shard lands at its own offset (recv aliases send only there). */
            float *recv = gpt_xmalloc(per * sizeof(float));
            int rc = c->reduce_scatter_sum(c, tr->hgrads, recv, per, err);
            memcpy(tr->hgrads + per * (size_t)c->rank, recv, per * sizeof(float));
            free(recv);
            if (rc < 0) return -1;
        } else if (grad_allreduce(tr, err) < 0) {
            return -1;
        }
        tr->be->to_device(tr->be, g, tr->hgrads + tr->shard_lo, gn * sizeof(float));
    }
    st->sync_s = now_s() - t_sync;
    sums[4] = tr->mesh.tp > 1 || tr->mesh.pp > 1 ? tp_sumsq(tr, tr->shard_lo, tr->shard_hi)
                                                  : tr->be->sumsq(tr->be, g, gn);
    if (tr->ep_zero1)
        sums[4] = ez_sumsq(tr);
    else if (tr->mesh.ep > 1 && ep_sumsq(tr, &sums[4], err) < 0)
        return -1;
    if (!o->zero1) {
        /* Every rank holds the whole reduced gradient: the norm is local. */
        double loc = sums[4];
        if (c->allreduce_sum_f64(c, sums, 5, err) < 0) return -1;
        sums[4] = loc;
    } else if (c->allreduce_sum_f64(c, sums, 5, err) < 0) {
        return -1;
    }
    /* TP: each rank's squares of its pieces (replicated tensors weighted 1/tp): sum over the group */
    if (tpc->size > 1 && tpc->allreduce_sum_f64(tpc, &sums[4], 1, err) < 0) return -1;
    if (tr->mesh.pp > 1 && tr->mesh.pp_comm->allreduce_sum_f64(tr->mesh.pp_comm, &sums[4], 1, err) < 0) return -1;
    const double norm = sqrt(sums[4]) * gscale;
    st->loss = sums[0] / sums[3];
    st->nll = sums[1] / sums[3];
    st->acc = sums[2] / sums[3];
    st->tokens = sums[3];
    st->lr = gpt_lr_at(&tr->sched, tr->step);
    st->grad_norm = norm;
    /* A non-finite norm means a non-finite gradient somewhere (the norm is the same on every rank,
     * so all ranks skip together). */
    int finite = isfinite(norm) && isfinite(st->loss);
    st->loss_scale = tr->scaler.scale;
    if (!gpt_loss_scaler_update(&tr->scaler, !finite) || !finite) {
        st->skipped = 1;
        /* fp16: a gradient overflow at a scale >= 1 is the scaler's to handle (it backs off);
         * non-finite losses, and overflows the scaler cannot cure, count towards giving up. */
        if (!(tr->scaler.enabled && isfinite(st->loss) && st->loss_scale >= 1.0)) tr->bad_in_row++;
        tr->step++;
        if (tr->bad_in_row >= o->max_bad_steps)
            return gpt_errf(err, "step %lld: %d steps in a row had a non-finite loss or gradient (loss %g, grad norm "
                                 "%g); lower train.lr, check the data, or raise train.max_bad_steps",
                            (long long)tr->step, tr->bad_in_row, st->loss, norm);
        return 0;
    }
    tr->bad_in_row = 0;
    float clip = gpt_clip_coef(norm, o->clip_norm);
    gpt_adamw_step(&tr->opt, dparam + tr->shard_lo, g, st->lr, gscale * clip);
    if (tr->ep_zero1) {
        if (ez_update(tr, st->lr, gscale * clip, err) < 0) return -1;
    } else if (o->zero1) {
        size_t per = tr->n_pad / (size_t)dp;
        tr->be->to_host(tr->be, tr->hparams + tr->shard_lo, dparam + tr->shard_lo, gn * sizeof(float));
        if (c->allgather(c, tr->hparams + per * (size_t)c->rank, tr->hparams, per, err) < 0) return -1;
        gpt_trainer_sync_device(tr);
    }
    tr->step++;
    return 0;
}

int gpt_trainer_eval(gpt_trainer *tr, double *loss, double *acc, gpt_err *err)
{
    const gpt_train_opts *o = &tr->o;
    gpt_comm *c = tr->mesh.dp_comm;
    const int B = o->micro_batch, T = o->seq_len, dp = c->size;
    gpt_forward_opts fo = {0}; /* validation reports the plain cross-entropy */
    double sums[3] = {0, 0, 0};
    /* eval_steps micro-batches over all ranks, the same windows every time (sequential, unshuffled). */
    /* EP: the ranks of an expert group exchange tokens in every forward, so all run as many (a rank
     * past the end reruns window 0 and drops the result) */
    int64_t end = tr->mesh.ep > 1 ? (o->eval_steps + dp - 1) / dp * dp : o->eval_steps;
    for (int64_t i = c->rank; i < end; i += dp) {
        gpt_data_fill(tr->val, (uint64_t)(i < o->eval_steps ? i : 0) * (uint64_t)B, B, tr->tok, tr->tgt);
        gpt_loss L;
        if (tr->mesh.pp > 1) { /* forward through the stages; the sums are the last stage's */
            double ps[4] = {0, 0, 0, 0};
            if (gpt_pp_run(tr->model, tr->mesh.pp_comm, GPT_PP_GPIPE, 1, tr->tok, tr->tgt, B, T, &fo, 0, ps, NULL, err) < 0)
                return -1;
            if (i < o->eval_steps) sums[0] += ps[1], sums[1] += ps[2], sums[2] += ps[3];
            continue;
        }
        if (gpt_model_forward(tr->model, tr->tok, tr->tgt, B, T, &fo, &L, err) < 0) return -1;
        if (i >= o->eval_steps) continue;
        sums[0] += L.nll * (double)L.n_scored;
        sums[1] += (double)L.n_correct;
        sums[2] += (double)L.n_scored;
    }
    if (c->allreduce_sum_f64(c, sums, 3, err) < 0) return -1;
    if (tr->mesh.pp > 1 && tr->mesh.pp_comm->allreduce_sum_f64(tr->mesh.pp_comm, sums, 3, err) < 0) return -1;
    *loss = sums[2] > 0 ? sums[0] / sums[2] : NAN;
    *acc = sums[2] > 0 ? sums[1] / sums[2] : NAN;
    return 0;
}

/* ---- the loop ---- */

static void fmt_time(char *buf, size_t n, double s)
{
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

static void log_step(gpt_trainer *tr, const gpt_step_stats *st, double dt, double elapsed, int64_t first_step)
{
    const gpt_train_opts *o = &tr->o;
    double tok_s = dt > 0 ? st->tokens / dt : 0;
    double mfu = o->peak_tflops > 0 ? tok_s * tr->flops_per_token / (o->peak_tflops * 1e12 * tr->comm->size) : -1;
    double per_step = tr->step > first_step ? elapsed / (double)(tr->step - first_step) : 0;
    char eta[32];
    fmt_time(eta, sizeof eta, per_step * (double)(o->steps - tr->step));
    if (tr->metrics) {
        fprintf(tr->metrics,
                "{\"step\":%lld,\"loss\":%.6f,\"nll\":%.6f,\"ppl\":%.4f,\"acc\":%.6f,\"lr\":%.6e,\"grad_norm\":%.6f,"
                "\"tok_s\":%.1f,",
                (long long)tr->step, st->loss, st->nll, exp(st->nll), st->acc, st->lr, st->grad_norm, tok_s);
        if (mfu >= 0) fprintf(tr->metrics, "\"mfu\":%.5f,", mfu);
        if (tr->scaler.enabled) fprintf(tr->metrics, "\"loss_scale\":%.17g,", st->loss_scale);
        if (tr->mesh.dp > 1) fprintf(tr->metrics, "\"sync_s\":%.4f,", st->sync_s);
        fprintf(tr->metrics, "\"skipped\":%s,\"time\":%.3f}\n", st->skipped ? "true" : "false", elapsed);
        fflush(tr->metrics);
    }
    if (o->quiet || tr->comm->rank != 0) return;
    if (st->skipped && tr->scaler.enabled && isfinite(st->loss)) {
        fprintf(stderr, "step %lld: gradient overflow at loss scale %g: step skipped, scale now %g\n",
                (long long)tr->step, st->loss_scale, tr->scaler.scale);
        return;
    }
    if (tr->step % o->log_interval && tr->step != o->steps && !st->skipped) return;
    char mfus[32] = "-";
    if (mfu >= 0) snprintf(mfus, sizeof mfus, "%.1f%%", 100 * mfu);
    char bar[40] = "";
    if (isatty(2)) {
        int w = 20, k = o->steps ? (int)(w * tr->step / o->steps) : w;
        bar[0] = '[';
        for (int i = 0; i < w; i++) bar[1 + i] = i < k ? '=' : ' ';
        bar[w + 1] = ']';
        bar[w + 2] = ' ';
        bar[w + 3] = 0;
    }
    fprintf(stderr,
            "%sstep %lld/%lld | loss %.4f | ppl %.2f | acc %.3f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %s | "
            "ETA %s%s\n",
            bar, (long long)tr->step, (long long)o->steps, st->loss, exp(st->nll), st->acc, st->lr, st->grad_norm,
            tok_s, mfus, eta, st->skipped ? " | SKIPPED (non-finite)" : "");
}

int gpt_train_run(gpt_trainer *tr, volatile sig_atomic_t *stop, gpt_err *err)
{
    const gpt_train_opts *o = &tr->o;
    gpt_comm *c = tr->comm;
    if (c->rank == 0 && o->out_dir && !tr->metrics) {
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.jsonl", o->out_dir);
        tr->metrics = fopen(path, "a");
        if (!tr->metrics) return gpt_errf(err, "cannot open %s: %s", path, strerror(errno));
    }
    const int64_t first = tr->step;
    double t_start = now_s();
    int stopped = 0;
    while (tr->step < o->steps) {
        if (o->parallel_log && gpt_trainer_stats_begin(tr, err) < 0) return -1;
        double t = now_s();
        gpt_step_stats st;
        if (gpt_trainer_step(tr, &st, err) < 0) return -1;
        double t1 = now_s();
        log_step(tr, &st, t1 - t, t1 - t_start, first);
        if (o->parallel_log && gpt_trainer_stats_log(tr, t1 - t, err) < 0) return -1;
        if (tr->val && o->eval_interval > 0 && (tr->step % o->eval_interval == 0 || tr->step == o->steps)) {
            double vl, va;
            if (gpt_trainer_eval(tr, &vl, &va, err) < 0) return -1;
            if (tr->metrics) {
                fprintf(tr->metrics, "{\"step\":%lld,\"val_loss\":%.6f,\"val_ppl\":%.4f,\"val_acc\":%.6f}\n",
                        (long long)tr->step, vl, exp(vl), va);
                fflush(tr->metrics);
            }
            if (c->rank == 0 && !o->quiet)
                fprintf(stderr, "eval step %lld | val loss %.4f | val ppl %.2f | val acc %.3f\n", (long long)tr->step,
                        vl, exp(vl), va);
        }
        /* Every rank must agree to stop, or the ones that go on would wait forever. */
        double flag = stop && *stop ? 1 : 0;
        if (c->size > 1 && c->allreduce_sum_f64(c, &flag, 1, err) < 0) return -1;
        if (flag > 0 || (o->stop_at > 0 && tr->step >= o->stop_at)) {
            stopped = 1;
            break;
        }
        if (o->save_interval > 0 && tr->step % o->save_interval == 0 && tr->step < o->steps &&
            gpt_trainer_save(tr, err) < 0)
            return -1;
    }
    if (gpt_trainer_save(tr, err) < 0) return -1;
    if (stopped && c->rank == 0 && !o->quiet)
        fprintf(stderr, "stopped at step %lld (%s); continue with --resume\n", (long long)tr->step,
                o->stop_at > 0 && tr->step >= o->stop_at ? "--stop-at" : "signal");
    return stopped;
}

/* ---- checkpoints ---- */

/* train.state: "GPTTRST1" then little-endian u64 fields in this order. */
enum {
    ST_VERSION, ST_STEP, ST_OPT_STEP, ST_NPARAMS, ST_SCALE_BITS, ST_SCALE_GOOD, ST_BAD_IN_ROW, ST_DATA_SAMPLES,
    ST_DATA_SEED, ST_DATA_NTOK, ST_DATA_MODE, ST_DATA_SEQ, ST_DP, ST_N
};
#define ST_MAGIC "GPTTRST1"
#define ST_BYTES (8 + 8 * ST_N)

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The whole of one AdamW moment on every rank (gathered from ZeRO-1 shards), n_pad floats. */
/* The AdamW moment whose shard this rank holds in place (at the shard's offset of full) -> the
 * whole vector on every rank (ZeRO-1 gathers over dp; without it every rank has it all). */
static int gather_moment(gpt_trainer *tr, float *full, gpt_err *err)
{
    if (tr->ep_zero1) return ez_gather_moment(tr, full, err);
    if (!tr->o.zero1) return 0;
    gpt_comm *dc = tr->mesh.dp_comm;
    size_t per = tr->n_pad / (size_t)dc->size, have = tr->shard_hi - tr->shard_lo;
    float *mine = full + per * (size_t)dc->rank;
    memset(mine + have, 0, (per - have) * sizeof(float));
    return dc->allgather(dc, mine, full, per, err);
}

/* This rank's piece (n floats) -> the full model's layout (ftab.total floats), over the tp group. */
static float *to_full_pp(gpt_trainer *tr, const float *local, gpt_err *err);

static float *to_full(gpt_trainer *tr, const float *local, gpt_err *err)
{
    float *full;
    if (tr->mesh.ep > 1) { /* EP: the expert shards gathered over the group; PP: the stages summed */
        full = gpt_xcalloc(tr->ftab.total, sizeof *full);
        gpt_comm *ppc = tr->mesh.pp_comm;
        if (gpt_ep_gather(tr->model, local, full, err) == 0 &&
            (ppc->size == 1 || ppc->allreduce_sum(ppc, full, tr->ftab.total, err) == 0))
            return full;
        free(full);
        return NULL;
    }
    if (tr->mesh.pp > 1) return to_full_pp(tr, local, err);
    full = gpt_xcalloc(tr->ftab.total, sizeof *full);
    if (tr->mesh.tp == 1) {
        memcpy(full, local, tr->n * sizeof *full);
    } else if (gpt_tp_gather(&tr->mcfg, tr->mesh.tp_comm, local, full, err) < 0) {
        free(full);
        return NULL;
    }
    return full;
}

/* PP: the stage's tensors into the tp piece's whole layout (zeros elsewhere), the tp pieces into the
 * full layout, then a sum over the stages: every tensor has exactly one owner stage. */
static float *to_full_pp(gpt_trainer *tr, const float *local, gpt_err *err)
{
    gpt_param_table lt;
    if (gpt_params_build(gpt_model_config_of(tr->model), &lt, err) < 0) return NULL;
    float *tw = gpt_xcalloc(lt.total, sizeof *tw), *full = gpt_xcalloc(tr->ftab.total, sizeof *full);
    gpt_pp_insert(tr->model, local, tw, 1);
    int rc = 0;
    if (tr->mesh.tp == 1)
        memcpy(full, tw, lt.total * sizeof *full);
    else
        rc = gpt_tp_gather(&tr->mcfg, tr->mesh.tp_comm, tw, full, err);
    if (rc == 0) rc = tr->mesh.pp_comm->allreduce_sum(tr->mesh.pp_comm, full, tr->ftab.total, err);
    gpt_params_free(&lt);
    free(tw);
    if (rc < 0) free(full);
    return rc < 0 ? NULL : full;
}

static void from_full(gpt_trainer *tr, const float *full, float *local)
{
    if (tr->mesh.ep > 1) { /* the stage's tensors, this rank's experts */
        gpt_ep_scatter(tr->model, full, local);
        return;
    }
    if (tr->mesh.pp > 1) { /* full -> the tp piece (all layers) -> the stage's tensors */
        gpt_param_table lt;
        gpt_err e = {0};
        if (gpt_params_build(gpt_model_config_of(tr->model), &lt, &e) < 0) abort(); /* built at init */
        float *tw = gpt_xmalloc(lt.total * sizeof *tw);
        if (tr->mesh.tp == 1)
            memcpy(tw, full, lt.total * sizeof *tw);
        else
            gpt_tp_scatter(&tr->mcfg, tr->mesh.tp, tr->mesh.tp_rank, full, tw);
        gpt_pp_extract(tr->model, tw, local);
        free(tw);
        gpt_params_free(&lt);
        return;
    }
    if (tr->mesh.ep > 1)
        gpt_ep_scatter(tr->model, full, local);
    else if (tr->mesh.tp == 1)
        memcpy(local, full, tr->n * sizeof *local);
    else
        gpt_tp_scatter(&tr->mcfg, tr->mesh.tp, tr->mesh.tp_rank, full, local);
}

int gpt_trainer_save(gpt_trainer *tr, gpt_err *err)
{
    if (tr->step == tr->saved_step || !tr->o.out_dir) return 0;
    gpt_comm *c = tr->comm;
    /* Saving holds as few extra copies as it can: the moments land in place at this rank's shard
     * offset, and one rank's whole model (no tp or pp) is already the full layout. */
    float *lm = gpt_xmalloc(tr->n_pad * sizeof(float)), *lv = gpt_xmalloc(tr->n_pad * sizeof(float));
    float *m = NULL, *v = NULL, *p = NULL;
    int rc = 0, whole = tr->mesh.tp == 1 && tr->mesh.pp == 1 && tr->mesh.ep == 1;
    size_t off = tr->o.zero1 ? tr->n_pad / (size_t)tr->mesh.dp_comm->size * (size_t)tr->mesh.dp_comm->rank : 0;
    if (tr->ep_zero1)
        ez_state_get(tr, lm, lv);
    else
        gpt_adamw_state_get(&tr->opt, lm + off, lv + off);
    gpt_trainer_sync_host(tr);
    /* ZeRO-1 shards over dp, then tensor-parallel pieces over tp: the full state on every rank */
    if (gather_moment(tr, lm, err) < 0 || gather_moment(tr, lv, err) < 0) rc = -1;
    else if (whole) m = lm, v = lv, p = tr->hparams;
    else if (!(m = to_full(tr, lm, err)) || !(v = to_full(tr, lv, err)) || !(p = to_full(tr, tr->hparams, err))) rc = -1;
    if (!whole) { /* to_full made the copies to save */
        free(lm);
        free(lv);
    }
    if (rc == 0 && c->rank == 0) {
        unsigned char st[ST_BYTES];
        memcpy(st, ST_MAGIC, 8);
        gpt_data_pos dp = gpt_data_tell(tr->train);
        uint64_t f[ST_N];
        uint64_t scale_bits;
        memcpy(&scale_bits, &tr->scaler.scale, 8);
        f[ST_VERSION] = 1;
        f[ST_STEP] = (uint64_t)tr->step;
        f[ST_OPT_STEP] = (uint64_t)tr->opt.step;
        f[ST_NPARAMS] = tr->ftab.total;
        f[ST_SCALE_BITS] = scale_bits;
        f[ST_SCALE_GOOD] = (uint64_t)tr->scaler.good_steps;
        f[ST_BAD_IN_ROW] = (uint64_t)tr->bad_in_row;
        f[ST_DATA_SAMPLES] = dp.samples;
        f[ST_DATA_SEED] = dp.seed;
        f[ST_DATA_NTOK] = dp.n_tokens;
        f[ST_DATA_MODE] = dp.mode;
        f[ST_DATA_SEQ] = dp.seq_len;
        f[ST_DP] = (uint64_t)c->size;
        for (int i = 0; i < ST_N; i++) put_u64(st + 8 + 8 * i, f[i]);
        gpt_ckpt_blob blobs[3] = {{"optim.m", m, tr->ftab.total * sizeof(float)},
                                  {"optim.v", v, tr->ftab.total * sizeof(float)},
                                  {"train.state", st, sizeof st}};
        gpt_ckpt_opts co;
        memset(&co, 0, sizeof co);
        co.dtype = GPT_ST_F32;
        co.keep_last = tr->o.keep_last;
        rc = gpt_ckpt_save(tr->o.out_dir, tr->step, &tr->mcfg, &tr->ftab, p, blobs, 3, &co, err);
        if (rc < 0) gpt_err_prefix(err, "saving a checkpoint at step %lld", (long long)tr->step);
        else if (!tr->o.quiet) fprintf(stderr, "saved checkpoint step %lld in %s\n", (long long)tr->step, tr->o.out_dir);
    }
    if (whole) {
        free(lm);
        free(lv);
    } else {
        free(m);
        free(v);
        free(p);
    }
    /* Rank 0's failure must stop everyone: the caller aborts all ranks on -1. */
    if (rc < 0) return -1;
    if (c->size > 1 && c->barrier(c, err) < 0) return -1;
    tr->saved_step = tr->step;
    return 0;
}

static int load_params(gpt_trainer *tr, gpt_ckpt *ck, gpt_err *err)
{
    const gpt_config *cc = gpt_ckpt_config(ck);
    if (!gpt_model_config_equal(&cc->model, &tr->mcfg))
        return gpt_errf(err, "%s: the checkpoint's model config differs from this run's; train with the "
                             "checkpoint's config (its model.yaml)", gpt_ckpt_dir(ck));
    float *full = gpt_xmalloc(tr->ftab.total * sizeof *full);
    int rc = gpt_ckpt_load_params(ck, &tr->ftab, full, err);
    if (rc == 0) from_full(tr, full, tr->hparams);
    free(full);
    if (rc < 0) return -1;
    gpt_trainer_sync_device(tr);
    return 0;
}

static int read_moment(gpt_trainer *tr, gpt_ckpt *ck, const char *name, float *dst, gpt_err *err)
{
    void *data = NULL;
    size_t n = 0;
    if (gpt_ckpt_read_blob(ck, name, &data, &n, err) < 0) return -1;
    if (n != tr->ftab.total * sizeof(float)) {
        free(data);
        return gpt_errf(err, "%s: blob %s holds %zu bytes, want %zu (%zu parameters)", gpt_ckpt_dir(ck), name, n,
                        tr->ftab.total * sizeof(float), tr->ftab.total);
    }
    float *local = gpt_xmalloc(tr->n * sizeof *local);
    from_full(tr, data, local);
    memcpy(dst, local + tr->shard_lo, (tr->shard_hi - tr->shard_lo) * sizeof(float));
    if (tr->ep_zero1) /* the expert shard follows (gpt_trainer_resume) */
        memcpy(dst + (tr->shard_hi - tr->shard_lo), local + tr->ex_lo, (tr->ex_hi - tr->ex_lo) * sizeof(float));
    free(local);
    free(data);
    return 0;
}

int gpt_trainer_resume(gpt_trainer *tr, gpt_err *err)
{
    char latest[4096];
    snprintf(latest, sizeof latest, "%s/latest", tr->o.out_dir);
    if (access(latest, F_OK) != 0) return 0;
    gpt_ckpt *ck = gpt_ckpt_open(tr->o.out_dir, err);
    if (!ck) return -1;
    void *st = NULL;
    size_t sn = 0;
    int rc = -1;
    size_t sh = tr->shard_hi - tr->shard_lo, sa = sh + (tr->ep_zero1 ? tr->ex_hi - tr->ex_lo : 0);
    float *om = gpt_xmalloc((sa ? sa : 1) * sizeof(float)), *ov = gpt_xmalloc((sa ? sa : 1) * sizeof(float));
    if (load_params(tr, ck, err) < 0 || read_moment(tr, ck, "optim.m", om, err) < 0 ||
        read_moment(tr, ck, "optim.v", ov, err) < 0 || gpt_ckpt_read_blob(ck, "train.state", &st, &sn, err) < 0)
        goto out;
    gpt_adamw_state_set(&tr->opt, om, ov);
    if (tr->ep_zero1) gpt_adamw_state_set(&tr->opt_ex, om + sh, ov + sh);
    const unsigned char *b = st;
    if (sn != ST_BYTES || memcmp(b, ST_MAGIC, 8) != 0 || get_u64(b + 8) != 1) {
        gpt_errf(err, "%s: blob train.state is not a version-1 training state (%zu bytes)", gpt_ckpt_dir(ck), sn);
        goto out;
    }
    uint64_t f[ST_N];
    for (int i = 0; i < ST_N; i++) f[i] = get_u64(b + 8 + 8 * i);
    if (f[ST_NPARAMS] != tr->ftab.total) {
        gpt_errf(err, "%s: train.state is for %llu parameters, the model has %zu", gpt_ckpt_dir(ck),
                 (unsigned long long)f[ST_NPARAMS], tr->ftab.total);
        goto out;
    }
    gpt_data_pos dp = {f[ST_DATA_SAMPLES], f[ST_DATA_SEED], f[ST_DATA_NTOK], (uint32_t)f[ST_DATA_MODE],
                       (uint32_t)f[ST_DATA_SEQ]};
    /* The sample counter is global, so a different DP size (or micro-batch split) reads on from the
     * same place as long as the global batch is what it was. */
    if (gpt_data_seek(tr->train, &dp, err) < 0) {
        gpt_err_prefix(err, "%s", gpt_ckpt_dir(ck));
        goto out;
    }
    tr->step = (int64_t)f[ST_STEP];
    tr->opt.step = tr->opt_ex.step = (int64_t)f[ST_OPT_STEP];
    memcpy(&tr->scaler.scale, &f[ST_SCALE_BITS], 8);
    tr->scaler.good_steps = (int64_t)f[ST_SCALE_GOOD];
    tr->bad_in_row = (int)f[ST_BAD_IN_ROW];
    tr->saved_step = tr->step;
    if (tr->comm->rank == 0 && !tr->o.quiet)
        fprintf(stderr, "resumed from %s (step %lld, saved with %llu rank%s)\n", gpt_ckpt_dir(ck),
                (long long)tr->step, (unsigned long long)f[ST_DP], f[ST_DP] == 1 ? "" : "s");
    rc = 1;
out:
    free(om);
    free(ov);
    free(st);
    gpt_ckpt_close(ck);
    return rc;
}

int gpt_trainer_init_from(gpt_trainer *tr, const char *path, gpt_err *err)
{
    gpt_ckpt *ck = gpt_ckpt_open(path, err);
    if (!ck) return gpt_err_prefix(err, "--init-from");
    int rc = load_params(tr, ck, err);
    if (rc == 0 && tr->comm->rank == 0 && !tr->o.quiet)
        fprintf(stderr, "initialized from %s (step %lld)\n", gpt_ckpt_dir(ck), (long long)gpt_ckpt_step(ck));
    gpt_ckpt_close(ck);
    return rc;
}
