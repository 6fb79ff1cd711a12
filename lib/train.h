/* train.h: the training loop as library code (gpt-train is a thin program over it).
 *
 *   gpt_train_opts o;
 *   gpt_train_opts_default(&o);
 *   gpt_train_opts_read(&o, gpt_config_node(&cfg, "train"), "train", &err);   // the train: section
 *   gpt_trainer tr;
 *   gpt_trainer_init(&tr, &o, &cfg.model, comm, &err);
 *   gpt_train_run(&tr, &stop_flag, &err);        // stop_flag: set by the program's signal handler
 *   gpt_trainer_free(&tr);
 *
 * One optimizer step = grad_accum micro-batches of micro_batch windows of seq_len tokens on each
 * data-parallel rank: a global batch of grad_accum * dp * micro_batch windows. The comm is cut into
 * a mesh (mesh.h) of o.mesh_dp x o.mesh_tp ranks; the tp ranks of a data-parallel rank read the same
 * windows and hold one tensor-parallel model (model_tp.h). With o.mesh_pp > 1 each rank holds one
 * pipeline stage (model_pp.h) and the grad_accum micro-batches of a step are the pipeline's
 * micro-batches (pipeline.h, schedule o.pp_schedule); every stage reads the same windows. With
 * o.mesh_ep > 1 (with dp, pp and ZeRO-1; not tp) the model is expert-parallel over mesh.ep_comm
 * (model_ep.h; one per pipeline stage): each rank reads its own windows, holds a range of the
 * experts, and the gradients of that range are reduced over mesh.edp_comm instead of mesh.dp_comm
 * (ZeRO-1 shards that range's optimizer state over mesh.edp_comm too: ep_zero1 below).
 *
 * Gradient weighting. gpt_model_forward's loss is the mean over one micro-batch's scored tokens.
 * Training windows score every position (targets are the next tokens, none ignored), so every
 * micro-batch on every rank scores exactly micro_batch * seq_len tokens, and the mean over the
 * global batch is the plain average of the micro-batch means. The gradients of all micro-batches
 * are therefore summed (backward accumulates), summed over ranks, and multiplied by
 * 1 / (grad_accum * dp): exactly the gradient of the global mean, whatever the split between
 * accumulation and ranks (up to fp32 summation order). The MoE router's auxiliary loss is
 * averaged the same way (each micro-batch's own balance term, as in Hugging Face's models).
 *
 * Determinism: parameters init from the seed, data windows are a function of (seed, sample
 * index), and every op is deterministic, so a run restored from a checkpoint (parameters, AdamW
 * state, step, loss-scaler state, data position) continues with the same bits. */
#ifndef GPT_TRAIN_H
#define GPT_TRAIN_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "comm.h"
#include "config.h"
#include "dataloader.h"
#include "mesh.h"
#include "error.h"
#include "model.h"
#include "optim.h"
#include "yaml_doc.h"

typedef enum gpt_precision { GPT_PREC_FP32 = 0, GPT_PREC_BF16 = 1, GPT_PREC_FP16 = 2 } gpt_precision;

typedef struct gpt_train_opts {
    char **train_files, **val_files; /* owned; globs allowed */
    size_t n_train, n_val;
    gpt_data_mode data_mode;
    int micro_batch, seq_len, grad_accum;
    int64_t global_batch; /* windows per step over all ranks; 0: micro_batch * grad_accum * dp */
    int64_t steps, warmup_steps;
    double lr, min_lr_ratio, weight_decay, beta1, beta2, eps, clip_norm, label_smoothing;
    uint64_t seed;
    int64_t eval_interval, eval_steps, save_interval, log_interval;
    int keep_last;
    char *out_dir, *init_from; /* owned; init_from NULL: random init from the seed */
    int resume;
    int zero1;
    gpt_precision precision;
    double loss_scale_init, loss_scale_growth, loss_scale_backoff;
    int64_t loss_scale_interval;
    int max_bad_steps;  /* non-finite steps in a row before giving up */
    double peak_tflops; /* per rank, for MFU; 0: not reported */
    int quiet;          /* no per-step lines on stderr (the metrics file is still written) */
    int64_t stop_at;    /* 0, or stop (save, return 1) once this step is reached: split runs */
    /* the mesh (the parallel: section, gpt_mesh_opts_read): dp 0 = world / (tp * pp) */
    int mesh_dp, mesh_tp, mesh_pp, mesh_ep;
    int pp_schedule; /* gpt_pp_schedule (pipeline.h): 0 gpipe, 1 1f1b */
    /* the backend, as gpt_backend_open names it (not owned; NULL: "cpu"). Under mpirun "cuda" and
     * "auto" take device local_rank, one GPU per rank. */
    const char *device;
    /* not owned; NULL: off. Each rank appends one JSON line per step to PREFIX.rankR.jsonl: its
     * pipeline timing and the bytes of every collective (train_stats.h; gpt-train --log-parallel). */
    const char *parallel_log;
    /* Data parallelism: reduce gradients in buckets of about grad_bucket_mb MB while backward runs
     * (the last micro-batch of a step), else all at once after it. Same bits either way. */
    int overlap_grad_reduce;
    double grad_bucket_mb; /* 0: a bucket per layer */
} gpt_train_opts;

void gpt_train_opts_default(gpt_train_opts *o);
/* Reads a train: mapping (NULL: nothing to read); keys present overwrite o. Unknown keys and bad
 * values are errors naming FILE:LINE: train.KEY. */
int gpt_train_opts_read(gpt_train_opts *o, const gpt_ynode *map, const char *path, gpt_err *err);
void gpt_train_opts_free(gpt_train_opts *o);
/* The keys gpt_train_opts_read knows (NULL-terminated), for documentation and option mapping. */
extern const char *const gpt_train_keys[];

typedef struct gpt_step_stats {
    double loss, nll, acc, lr, grad_norm, tokens;
    int skipped; /* non-finite gradient: the update was not applied */
    double loss_scale; /* the scale this step's backward ran with (1 without fp16) */
    /* seconds from the end of the last backward until the gradients were reduced (and, with PP,
     * the tied copies added): the data-parallel sync that backward did not hide */
    double sync_s;
} gpt_step_stats;

typedef struct gpt_trainer {
    gpt_train_opts o;
    gpt_model_config mcfg;
    gpt_comm *comm;      /* not owned */
    gpt_backend *be;
    gpt_model *model;
    gpt_adamw opt;       /* owns [shard_lo, shard_hi) of the flat parameters */
    gpt_lr_schedule sched;
    gpt_loss_scaler scaler;
    gpt_dataloader *train, *val;
    float *hparams, *hgrads; /* host staging, n_pad floats: the backend's parameters are the master */
    size_t n, n_pad, shard_lo, shard_hi;
    int64_t step;        /* optimizer steps taken (skipped ones included) */
    int bad_in_row;
    int *tok, *tgt;
    FILE *metrics;       /* rank 0 */
    double t0, flops_per_token;
    int64_t saved_step;  /* the step of the newest checkpoint written or loaded (-1: none) */
    /* Mesh: the model is tensor-parallel over mesh.tp_comm (n, hparams, the optimizer: this rank's
     * piece), gradients are reduced over mesh.dp_comm. Checkpoints hold the full model (ftab). */
    gpt_mesh mesh;
    gpt_param_table ftab; /* the full model's table */
    unsigned char *tp_split; /* per local tensor: cut across tp ranks (norms count the rest once);
                              * 2: a pipeline stage's copy of a tensor stage 0 owns (not counted) */
    gpt_comm *dev_comm;  /* NULL, or a dp communicator over backend memory (NCCL): no host staging */
    FILE *plog;          /* o.parallel_log's file (every rank) */
    struct gpt_pp_stats *pp_stats; /* the last step's pipeline statistics (with o.parallel_log) */
    /* ZeRO-1 under EP (ep_zero1): opt shards the replicated part of the local buffer over dp
     * ([shard_lo, shard_hi) within it), opt_ex the expert shard over the ranks holding the same
     * experts (mesh.edp_comm): [ex_lo, ex_hi), absolute offsets into the local buffer. */
    int ep_zero1;
    gpt_adamw opt_ex;
    size_t ex_lo, ex_hi;
} gpt_trainer;

/* The checks of the mesh (sizes against the ranks launched, what --ep combines with) that need no
 * communication: every rank gets the same answer. gpt_trainer_init makes them too. */
int gpt_train_check_mesh(const gpt_train_opts *o, const gpt_model_config *mcfg, int world_size, gpt_err *err);
int gpt_trainer_init(gpt_trainer *tr, const gpt_train_opts *o, const gpt_model_config *mcfg, gpt_comm *comm,
                     gpt_err *err);
void gpt_trainer_free(gpt_trainer *tr);
/* One optimizer step (all ranks call it together). */
int gpt_trainer_step(gpt_trainer *tr, gpt_step_stats *st, gpt_err *err);
/* Mean loss over eval_steps micro-batches of the validation data (the same windows every time). */
int gpt_trainer_eval(gpt_trainer *tr, double *loss, double *acc, gpt_err *err);
/* Copies the device parameters into tr->hparams (after this, hparams[0, n) are current). */
void gpt_trainer_sync_host(gpt_trainer *tr);
/* Uploads tr->hparams to the model. */
void gpt_trainer_sync_device(gpt_trainer *tr);

/* Runs steps until o.steps (or *stop becomes non-zero on any rank), with logging, evaluation and
 * checkpoints. Returns 0 when done, 1 when stopped by the flag (after saving), -1 on error. */
int gpt_train_run(gpt_trainer *tr, volatile sig_atomic_t *stop, gpt_err *err);

/* ---- checkpoints (lib/checkpoint.h directories under o.out_dir) ----
 * A checkpoint holds the parameters (f32), and blobs: optim.m and optim.v (the whole AdamW state,
 * n floats each, little-endian; ZeRO-1 shards are gathered first, so a checkpoint saved under any
 * DP size resumes under any other) and train.state (step, AdamW step, loss-scaler state, the
 * non-finite streak, the data position; see train.c). Every rank calls these together; rank 0
 * writes. */
int gpt_trainer_save(gpt_trainer *tr, gpt_err *err);
/* Restores everything from the latest checkpoint under o.out_dir. Returns 1 when restored, 0 when
 * the directory holds no checkpoint yet (training starts at step 0), -1 on error. */
int gpt_trainer_resume(gpt_trainer *tr, gpt_err *err);
/* Loads only the parameters of a checkpoint (a step directory or a root with `latest`); the model
 * config must equal the checkpoint's. A missing path is an error. */
int gpt_trainer_init_from(gpt_trainer *tr, const char *path, gpt_err *err);

#endif
