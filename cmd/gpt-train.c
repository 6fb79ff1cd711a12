/* gpt-train: train a GPT-2 / GPT-OSS-class model on token streams (gpt-train(1)).
 * Options become train.* settings (as --set would), so the config file, a recipe, --set and the
 * long options all go through one reader with file:line messages. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/resource.h>

#include "blas_check.h"
#include "checkpoint.h"
#include "comm.h"
#include "comm_count.h"
#include "config.h"
#include "fileio.h"
#include "mesh.h"
#include "plan.h"
#include "train.h"
#include "yaml_doc.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpt-train -c CONFIG [OPTIONS]\n"
            "\n"
            "Trains a model from CONFIG (a preset name or a YAML file) on token streams (gpt-tokens(5)).\n"
            "Settings come from the config's train: section, a --recipe, then --set and the options below.\n"
            "\n"
            "  -c, --config NAME|FILE   model config (preset name or file)\n"
            "  -r, --recipe NAME|FILE   training recipe: a file with a train: section (preset train-NAME)\n"
            "      --set KEY=VALUE      override any config key (train.lr=1e-3, model.n_layers=2)\n"
            "  -d, --data FILE          training token stream or glob (repeatable)\n"
            "      --val-data FILE      validation token stream or glob (repeatable)\n"
            "      --data-mode MODE     random (default) or sequential windows\n"
            "  -b, --micro-batch N      windows per micro-batch and rank\n"
            "      --seq-len N          tokens per window (default: the model's max_seq_len)\n"
            "      --grad-accum N       micro-batches per step\n"
            "      --global-batch N     windows per step over all ranks (sets --grad-accum)\n"
            "  -n, --steps N            optimizer steps\n"
            "      --lr X               peak learning rate\n"
            "      --min-lr-ratio X     cosine decay floor as a fraction of --lr (default 0.1)\n"
            "      --warmup N           linear warmup steps\n"
            "      --weight-decay X     AdamW decay of matrices and embeddings (default 0.1)\n"
            "      --beta1 X, --beta2 X, --eps X   AdamW (0.9, 0.95, 1e-8)\n"
            "      --clip X             gradient-norm clipping (default 1.0; 0 = off)\n"
            "      --label-smoothing X  (default 0)\n"
            "      --seed N             parameter init and data order\n"
            "      --eval-interval N    validation every N steps (0 = never)\n"
            "      --eval-steps N       validation micro-batches\n"
            "      --save-interval N    checkpoint every N steps (0 = only at the end and on signals)\n"
            "      --keep-last K        checkpoints kept\n"
            "      --log-interval N     a stderr line every N steps\n"
            "  -o, --out-dir DIR        checkpoints and metrics.jsonl (default out)\n"
            "      --resume             continue from the latest checkpoint in --out-dir\n"
            "      --init-from CKPT     start from a checkpoint's weights (fine-tuning)\n"
            "      --zero1              shard the optimizer state over data-parallel ranks\n"
            "      --no-overlap-grad-reduce  reduce the gradients after backward, not during it\n"
            "      --grad-bucket-mb X   gradients reduced per message while backward runs (default 25;\n"
            "                           0 = one per layer)\n"
            "      --precision P        fp32, bf16 or fp16 GEMM operands (fp32 master weights; fp16 scales the loss)\n"
            "      --device DEV         cpu, cuda, cuda:N or auto (default: cuda when built with it and a\n"
            "                           GPU is visible, else cpu); under mpirun each rank takes its local GPU\n"
            "      --peak-tflops X      per-rank peak, for the MFU column\n"
            "      --stop-at STEP       stop (and save) at STEP, keeping the schedule of --steps\n"
            "      --dp N, --tp N, --pp N, --ep N   the mesh (parallel.dp, ...): data, tensor, pipeline and\n"
            "                           expert parallel sizes; world = dp x tp x pp, ep divides dp (default:\n"
            "                           tp 1, pp 1, ep 1, dp the rest); rank order tp fastest, then dp, then pp\n"
            "      --pp-schedule S      gpipe (default) or 1f1b: the pipeline's micro-batch order\n"
            "      --print-mesh         print every rank's mesh coordinates and exit\n"
            "      --dump-config        print the effective config and exit\n"
            "      --plan               print per-rank memory for the mesh (--dp ...) and exit (allocates nothing)\n"
            "      --log-parallel PREFIX  every rank appends a JSON line per step to PREFIX.rankR.jsonl: pipeline\n"
            "                           compute/wait time and schedule, bytes per collective, peak RSS\n"
            "  -q, --quiet              no per-step lines\n"
            "  -h, --help               this help\n"
            "      --version            print the version\n");
    if (gpt_comm_have_mpi())
        fprintf(f, "\nData parallel: mpirun -np N gpt-train ... (each rank reads its slice of the global batch).\n");
    else
        fprintf(f, "\nThis build has no MPI support (data parallelism needs MPICH at build time).\n");
}

/* Long options that are train.* keys. */
static const struct {
    const char *opt, *key;
} KEYMAP[] = {
    {"data-mode", "train.data.mode"},
    {"micro-batch", "train.micro_batch"},
    {"seq-len", "train.seq_len"},
    {"grad-accum", "train.grad_accum"},
    {"global-batch", "train.global_batch"},
    {"steps", "train.steps"},
    {"lr", "train.lr"},
    {"min-lr-ratio", "train.min_lr_ratio"},
    {"warmup", "train.warmup_steps"},
    {"weight-decay", "train.weight_decay"},
    {"beta1", "train.beta1"},
    {"beta2", "train.beta2"},
    {"eps", "train.eps"},
    {"clip", "train.clip_norm"},
    {"label-smoothing", "train.label_smoothing"},
    {"seed", "train.seed"},
    {"eval-interval", "train.eval_interval"},
    {"eval-steps", "train.eval_steps"},
    {"save-interval", "train.save_interval"},
    {"keep-last", "train.keep_last"},
    {"log-interval", "train.log_interval"},
    {"out-dir", "train.out_dir"},
    {"init-from", "train.init_from"},
    {"precision", "train.precision"},
    {"peak-tflops", "train.peak_tflops"},
    {"dp", "parallel.dp"},
    {"tp", "parallel.tp"},
    {"pp", "parallel.pp"},
    {"ep", "parallel.ep"},
    {"pp-schedule", "train.pp_schedule"},
    {"grad-bucket-mb", "train.grad_bucket_mb"},
};

/* A YAML double-quoted string (JSON escapes), so any path survives --set. */
static char *yaml_quote(const char *s)
{
    size_t n = strlen(s);
    char *q = gpt_xmalloc(n * 6 + 3), *p = q;
    *p++ = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20) {
            p += sprintf(p, "\\x%02x", ch);
        } else {
            *p++ = (char)ch;
        }
    }
    *p++ = '"';
    *p = 0;
    return q;
}

static char *list_assign(const char *key, char **items, size_t n)
{
    size_t len = strlen(key) + 8;
    char **q = gpt_xmalloc(n * sizeof *q);
    for (size_t i = 0; i < n; i++) {
        q[i] = yaml_quote(items[i]);
        len += strlen(q[i]) + 2;
    }
    char *a = gpt_xmalloc(len), *p = a;
    p += sprintf(p, "%s=[", key);
    for (size_t i = 0; i < n; i++) {
        p += sprintf(p, "%s%s", i ? ", " : "", q[i]);
        free(q[i]);
    }
    strcpy(p, "]");
    free(q);
    return a;
}

/* The recipe file: a preset train-NAME.yaml in the config directories, or a path. */
static int load_recipe(const char *name, gpt_ynode **root, char **src, gpt_err *err)
{
    char *path = NULL;
    int is_path = strchr(name, '/') || strstr(name, ".yaml") || strstr(name, ".yml");
    if (is_path) {
        path = gpt_xstrdup(name);
    } else {
        char want[512];
        snprintf(want, sizeof want, "train-%s", name);
        char **dirs = gpt_config_default_dirs();
        int rc = gpt_config_find(want, (const char *const *)dirs, &path, err);
        gpt_config_dirs_free(dirs);
        if (rc < 0) return gpt_err_prefix(err, "recipe %s", name);
    }
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) < 0) {
        free(path);
        return -1;
    }
    *src = path;
    *root = gpt_yparse((const char *)b.data, b.size, path, err);
    gpt_blob_free(&b);
    if (!*root) return -1;
    if ((*root)->kind != GPT_YMAP) return gpt_yerrf(err, *root, "", "a recipe is a mapping with a train: section");
    for (size_t i = 0; i < (*root)->n; i++)
        if (strcmp((*root)->keys[i], "train") != 0)
            return gpt_yerrf(err, (*root)->items[i], (*root)->keys[i],
                             "a recipe holds only a train: section (put model settings in the config)");
    return 0;
}

/* --plan: per-rank memory for a mesh, from the config and the train: settings. */
static int print_plan(const char *name, const gpt_model_config *mc, const gpt_train_opts *o, const int mesh[4],
                      int ranks, gpt_err *err)
{
    gpt_plan_mesh m = {mesh[0] ? mesh[0] : ranks, mesh[1], mesh[2], mesh[3]};
    int T = o->seq_len ? o->seq_len : mc->max_seq_len;
    int accum = o->grad_accum;
    if (o->global_batch) {
        int64_t per = (int64_t)o->micro_batch * m.dp;
        if (o->global_batch % per)
            return gpt_errf(err, "train.global_batch %lld is not a multiple of micro_batch %d x dp %d",
                            (long long)o->global_batch, o->micro_batch, m.dp);
        accum = (int)(o->global_batch / per);
    }
    /* bf16 / fp16 round GEMM operands only: parameters, gradients and activations stay fp32, and
     * the plan counts what the runtime allocates. */
    gpt_plan_opts po = {o->micro_batch, T, accum, 4, 4, 4};
    gpt_plan p;
    if (gpt_plan_compute(mc, &m, &po, &p, err) < 0) return -1;
    gpt_plan_print(&p, name, stdout);
    gpt_plan_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    gpt_blas_fix_or_warn(argv);
    gpt_err err;
    const char *config = NULL, *recipe = NULL;
    char **sets = NULL, **data = NULL, **val = NULL;
    size_t n_sets = 0, n_data = 0, n_val = 0;
    int resume = 0, zero1 = 0, quiet = 0, dump = 0, print_mesh = 0, plan = 0;
    int64_t stop_at = 0;
    const char *device = "auto", *plog = NULL;
    enum { O_PLOG = 999, O_SET = 1000, O_VAL, O_RESUME, O_ZERO1, O_DUMP, O_VERSION, O_STOP_AT, O_PRINT_MESH, O_PLAN, O_DEVICE, O_NO_OVERLAP, O_KEY };
    struct option lo[64];
    size_t nlo = 0;
    lo[nlo++] = (struct option){"config", required_argument, NULL, 'c'};
    lo[nlo++] = (struct option){"recipe", required_argument, NULL, 'r'};
    lo[nlo++] = (struct option){"set", required_argument, NULL, O_SET};
    lo[nlo++] = (struct option){"data", required_argument, NULL, 'd'};
    lo[nlo++] = (struct option){"val-data", required_argument, NULL, O_VAL};
    lo[nlo++] = (struct option){"resume", no_argument, NULL, O_RESUME};
    lo[nlo++] = (struct option){"zero1", no_argument, NULL, O_ZERO1};
    lo[nlo++] = (struct option){"no-overlap-grad-reduce", no_argument, NULL, O_NO_OVERLAP};
    lo[nlo++] = (struct option){"dump-config", no_argument, NULL, O_DUMP};
    lo[nlo++] = (struct option){"print-mesh", no_argument, NULL, O_PRINT_MESH};
    lo[nlo++] = (struct option){"stop-at", required_argument, NULL, O_STOP_AT};
    lo[nlo++] = (struct option){"plan", no_argument, NULL, O_PLAN};
    lo[nlo++] = (struct option){"device", required_argument, NULL, O_DEVICE};
    lo[nlo++] = (struct option){"log-parallel", required_argument, NULL, O_PLOG};
    lo[nlo++] = (struct option){"quiet", no_argument, NULL, 'q'};
    lo[nlo++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[nlo++] = (struct option){"version", no_argument, NULL, O_VERSION};
    const size_t nkey = sizeof KEYMAP / sizeof *KEYMAP;
    for (size_t i = 0; i < nkey; i++) lo[nlo++] = (struct option){KEYMAP[i].opt, required_argument, NULL, O_KEY + (int)i};
    lo[nlo] = (struct option){0, 0, 0, 0};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:r:d:b:n:o:qh", lo, NULL)) != -1) {
        const char *key = NULL;
        switch (ch) {
        case 'c': config = optarg; break;
        case 'r': recipe = optarg; break;
        case O_SET:
            sets = gpt_xrealloc(sets, (n_sets + 1) * sizeof *sets);
            sets[n_sets++] = gpt_xstrdup(optarg);
            break;
        case 'd':
            data = gpt_xrealloc(data, (n_data + 1) * sizeof *data);
            data[n_data++] = optarg;
            break;
        case O_VAL:
            val = gpt_xrealloc(val, (n_val + 1) * sizeof *val);
            val[n_val++] = optarg;
            break;
        case O_RESUME: resume = 1; break;
        case O_ZERO1: zero1 = 1; break;
        case O_NO_OVERLAP:
            sets = gpt_xrealloc(sets, (n_sets + 1) * sizeof *sets);
            sets[n_sets++] = gpt_xstrdup("train.overlap_grad_reduce=false");
            break;
        case O_DUMP: dump = 1; break;
        case O_PRINT_MESH: print_mesh = 1; break;
        case O_DEVICE: device = optarg; break;
        case O_PLOG: plog = optarg; break;
        case O_STOP_AT: {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || *end || v < 1) {
                fprintf(stderr, "gpt-train: --stop-at wants a step >= 1, got '%s'\n", optarg);
                return 2;
            }
            stop_at = v;
            break;
        }
        case O_PLAN: plan = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case O_VERSION: printf("gpt-train %s\n", GPT_VERSION); return 0;
        case 'b': key = "train.micro_batch"; break;
        case 'n': key = "train.steps"; break;
        case 'o': key = "train.out_dir"; break;
        default:
            if (ch >= O_KEY && ch < O_KEY + (int)nkey) {
                key = KEYMAP[ch - O_KEY].key;
                break;
            }
            usage(stderr);
            return 2;
        }
        if (key) {
            char *q = yaml_quote(optarg);
            size_t l = strlen(key) + strlen(q) + 2;
            char *a = gpt_xmalloc(l);
            snprintf(a, l, "%s=%s", key, q);
            free(q);
            sets = gpt_xrealloc(sets, (n_sets + 1) * sizeof *sets);
            sets[n_sets++] = a;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "gpt-train: unexpected argument '%s' (token files go after --data)\n", argv[optind]);
        return 2;
    }
    if (!config) {
        fprintf(stderr, "gpt-train: give a model config: -c PRESET or -c FILE (e.g. -c tiny-gpt2)\n");
        return 2;
    }
    if (n_data) {
        sets = gpt_xrealloc(sets, (n_sets + 1) * sizeof *sets);
        sets[n_sets++] = list_assign("train.data.train", data, n_data);
    }
    if (n_val) {
        sets = gpt_xrealloc(sets, (n_sets + 1) * sizeof *sets);
        sets[n_sets++] = list_assign("train.data.val", val, n_val);
    }
    free(data);
    free(val);

    gpt_comm *comm = gpt_comm_open(&argc, &argv, &err);
    if (!comm) {
        fprintf(stderr, "gpt-train: %s\n", err.msg);
        return 1;
    }
    /* counted from the start, so the mesh's sub-communicators count too */
    if (plog) comm = gpt_comm_counting(comm);
    int status = 1;
    gpt_config cfg;
    gpt_ynode *rroot = NULL;
    char *rsrc = NULL;
    gpt_train_opts o;
    gpt_train_opts_default(&o);
    gpt_trainer tr;
    memset(&tr, 0, sizeof tr);
    int have_cfg = 0, have_tr = 0;
    if (gpt_config_load(config, &cfg, &err) < 0) goto fail_all;
    have_cfg = 1;
    if (n_sets && gpt_config_set_all(&cfg, (const char *const *)sets, n_sets, &err) < 0) goto fail_all;
    if (recipe) {
        if (load_recipe(recipe, &rroot, &rsrc, &err) < 0) goto fail_all;
        if (gpt_train_opts_read(&o, gpt_ymap_get(rroot, "train", NULL), "train", &err) < 0) goto fail_all;
    }
    if (gpt_train_opts_read(&o, gpt_config_node(&cfg, "train"), "train", &err) < 0) goto fail_all;
    if (gpt_mesh_opts_read(gpt_config_node(&cfg, "parallel"), &o.mesh_dp, &o.mesh_tp, &o.mesh_pp, &o.mesh_ep, &err) < 0)
        goto fail_all;
    if (print_mesh) {
        gpt_mesh mesh;
        if (gpt_mesh_init(&mesh, comm, o.mesh_dp, o.mesh_tp, o.mesh_pp, o.mesh_ep, &err) < 0) goto fail_all;
        /* one line per rank, in rank order */
        for (int r = 0; r < comm->size; r++) {
            if (r == comm->rank) {
                gpt_mesh_print(&mesh, stdout);
                fflush(stdout);
            }
            if (comm->size > 1 && comm->barrier(comm, &err) < 0) goto fail;
        }
        gpt_mesh_free(&mesh);
        status = 0;
        goto done;
    }
    o.resume = resume;
    if (zero1) o.zero1 = 1;
    o.quiet = quiet;
    o.stop_at = stop_at;
    o.device = device;
    o.parallel_log = plog;
    if (dump) {
        if (comm->rank == 0 && gpt_config_dump(&cfg, stdout, &err) < 0) goto fail;
        status = 0;
        goto done;
    }
    if (plan) {
        int mesh[4] = {o.mesh_dp, o.mesh_tp, o.mesh_pp, o.mesh_ep};
        if (comm->rank == 0 && print_plan(config, &cfg.model, &o, mesh, comm->size, &err) < 0) goto fail;
        status = 0;
        goto done;
    }
    /* the same on every rank: refused on all alike, with one message */
    if (gpt_train_check_mesh(&o, &cfg.model, comm->size, &err) < 0) goto fail_all;
    /* A fresh run into a directory that holds another run's checkpoints would mix the two runs'
     * steps (and metrics) under one latest: refused before any work, on every rank. */
    int clash = 0, first;
    if (!resume && comm->rank == 0 && o.out_dir) {
        char lp[4096], name[256] = "?";
        snprintf(lp, sizeof lp, "%s/latest", o.out_dir);
        gpt_err ignore;
        if ((clash = access(lp, F_OK) == 0) && gpt_ckpt_read_latest(o.out_dir, name, sizeof name, &ignore) < 0)
            snprintf(name, sizeof name, "unreadable");
        if (clash)
            gpt_errf(&err, "%s already holds checkpoints (latest: %s); add --resume to continue that run, or "
                           "choose another --out-dir", o.out_dir, name);
    }
    if (gpt_comm_any_failed(comm, clash, &first)) goto fail_all;
    if (gpt_trainer_init(&tr, &o, &cfg.model, comm, &err) < 0) goto fail;
    have_tr = 1;
    int resumed = 0;
    if (o.resume && (resumed = gpt_trainer_resume(&tr, &err)) < 0) goto fail;
    if (o.resume && !resumed && comm->rank == 0 && !o.quiet)
        fprintf(stderr, "gpt-train: no checkpoint in %s yet; starting at step 0\n", o.out_dir);
    if (!resumed && o.init_from && gpt_trainer_init_from(&tr, o.init_from, &err) < 0) goto fail;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (comm->rank == 0 && !o.quiet)
        fprintf(stderr,
                "gpt-train: %s, %zu parameters, %d rank%s (dp %d x tp %d x pp %d, ep %d)%s, global batch %lld x %d "
                "tokens, %lld steps\n",
                config, tr.ftab.total, comm->size, comm->size > 1 ? "s" : "", tr.mesh.dp, tr.mesh.tp, tr.mesh.pp,
                tr.mesh.ep, tr.o.zero1 ? " (ZeRO-1)" : "", (long long)tr.o.grad_accum * tr.mesh.dp * tr.o.micro_batch,
                tr.o.seq_len, (long long)tr.o.steps);
    int rc = gpt_train_run(&tr, &g_stop, &err);
    if (rc < 0) goto fail;
    if (comm->rank == 0 && !o.quiet) {
        /* what --plan estimates, measured (ru_maxrss is in KiB on Linux) */
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            fprintf(stderr, "gpt-train: peak memory (max RSS) of rank 0: %.1f MiB\n", ru.ru_maxrss / 1024.0);
    }
    status = 0;
    goto done;
fail_all: /* an error every rank meets the same way (config, mesh): one message, a plain exit */
    if (comm->rank == 0) fprintf(stderr, "gpt-train: %s\n", err.msg);
    status = 1;
    goto done;
fail:
    fprintf(stderr, "gpt-train: %s\n", err.msg);
    if (comm->size > 1) {
        fprintf(stderr, "gpt-train: rank %d failed; aborting all ranks\n", comm->rank);
        comm->abort(comm, 1);
    }
    status = 1;
done:
    if (have_tr) gpt_trainer_free(&tr);
    gpt_train_opts_free(&o);
    if (have_cfg) gpt_config_free(&cfg);
    gpt_ynode_free(rroot);
    free(rsrc);
    for (size_t i = 0; i < n_sets; i++) free(sets[i]);
    free(sets);
    gpt_comm_close(comm);
    return status;
}
