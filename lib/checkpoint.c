/* checkpoint.c: writing native checkpoints (gpt-checkpoint(5)); reading is in ckpt_read.c. */
#include "checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "ckpt_internal.h"
#include "fileio.h"

int gpt_ckpt_plain_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > GPT_CKPT_NAME_MAX || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return strstr(s, "..") == NULL;
}

char *gpt_ckpt_path2(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = gpt_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int gpt_ckpt_fsync_path(const char *path, int is_dir, gpt_err *err)
{
    int fd = open(path, (is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return gpt_errf(err, "%s: cannot open to fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && !(is_dir && (errno == EINVAL || errno == EBADF)))
        return gpt_errf(err, "%s: fsync failed: %s", path, strerror(errno));
    return 0;
}

/* ---- the writer ---- */

typedef struct wtensor {
    char *name;
    gpt_st_dtype dtype;
    int ndim;
    uint64_t shape[GPT_ST_MAX_DIMS];
    uint64_t nbytes, offset, xxh64;
    int shard, done;
} wtensor;

typedef struct wblob {
    char *name;
    uint64_t size, xxh64;
} wblob;

struct gpt_ckpt_writer {
    char *dir, *tmp;
    gpt_model_config cfg;
    int64_t step;
    gpt_ckpt_opts opts;
    wtensor *t;
    int n, cap;
    wblob *b;
    int nb;
    char **files; /* extra files */
    int nfiles;
    /* after planning */
    int planned;
    int *order;   /* file order: indices into t */
    int pos;      /* next position in order */
    int nshards;
    char **shard_names;
    /* the open shard */
    int cur_shard;
    FILE *f;
    char *fpath;
    ZSTD_CStream *zs;
    unsigned char *zbuf;
    size_t zcap;
};

void gpt_ckpt_remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *p = gpt_ckpt_path2(path, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                gpt_ckpt_remove_tree(p);
            else
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(path);
}

gpt_ckpt_writer *gpt_ckpt_writer_open(const char *dir, const gpt_model_config *cfg, int64_t step,
                                      const gpt_ckpt_opts *opts, gpt_err *err)
{
    gpt_ckpt_opts o = {0};
    if (opts) o = *opts;
    if (o.dtype == GPT_ST_F64) o.dtype = GPT_ST_F32; /* a zeroed opts struct */
    if (o.dtype != GPT_ST_F32 && o.dtype != GPT_ST_BF16) {
        gpt_errf(err, "checkpoint dtype must be F32 or BF16, got %s", gpt_st_dtype_name(o.dtype) ? gpt_st_dtype_name(o.dtype) : "?");
        return NULL;
    }
    if (o.zstd_level < 0 || o.zstd_level > ZSTD_maxCLevel()) {
        gpt_errf(err, "zstd level %d out of range 0..%d", o.zstd_level, ZSTD_maxCLevel());
        return NULL;
    }
    if (o.max_shard_bytes == 0) o.max_shard_bytes = (uint64_t)4 << 30;
    if (!o.use_mesh) {
        memset(&o.mesh, 0, sizeof o.mesh);
        o.mesh.tp = o.mesh.pp = o.mesh.ep = 1;
    }
    struct stat st;
    if (stat(dir, &st) == 0) {
        gpt_errf(err, "%s: already exists; remove it or choose another destination", dir);
        return NULL;
    }
    gpt_ckpt_writer *w = gpt_xcalloc(1, sizeof *w);
    w->dir = gpt_xstrdup(dir);
    /* the temp directory is a hidden sibling so that the final rename stays on one filesystem */
    char *copy = gpt_xstrdup(dir);
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/') copy[--len] = 0;
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy;
    size_t n = len + 64;
    w->tmp = gpt_xmalloc(n);
    if (slash)
        snprintf(w->tmp, n, "%.*s/.%s.tmp.%ld", (int)(slash - copy), copy, base, (long)getpid());
    else
        snprintf(w->tmp, n, ".%s.tmp.%ld", base, (long)getpid());
    free(copy);
    w->cfg = *cfg;
    w->step = step;
    w->opts = o;
    w->cur_shard = -1;
    gpt_ckpt_remove_tree(w->tmp); /* a leftover of an earlier run of this same pid */
    if (mkdir(w->tmp, 0755) != 0) {
        gpt_errf(err, "%s: cannot create directory: %s", w->tmp, strerror(errno));
        free(w->dir);
        free(w->tmp);
        free(w);
        return NULL;
    }
    /* model.yaml */
    char *mp = gpt_ckpt_path2(w->tmp, "model.yaml");
    gpt_out out;
    int rc = gpt_out_open(&out, mp, err);
    if (rc == 0) {
        gpt_config c = {0};
        c.model = *cfg;
        rc = gpt_config_dump(&c, out.f, err);
        if (rc == 0)
            rc = gpt_out_commit(&out, err);
        else
            gpt_out_abort(&out);
    }
    free(mp);
    if (rc < 0) {
        gpt_ckpt_writer_abort(w);
        return NULL;
    }
    return w;
}

int gpt_ckpt_writer_add(gpt_ckpt_writer *w, const char *name, gpt_st_dtype dtype, int ndim, const uint64_t *shape,
                        gpt_err *err)
{
    if (w->planned) return gpt_errf(err, "%s: tensor declared after writing began", name);
    if (!name || !*name || strlen(name) > GPT_CKPT_NAME_MAX) return gpt_errf(err, "bad tensor name");
    if (gpt_st_dtype_size(dtype) == 0) return gpt_errf(err, "%s: unknown dtype", name);
    if (ndim < 0 || ndim > GPT_ST_MAX_DIMS) return gpt_errf(err, "%s: %d dimensions (at most %d)", name, ndim, GPT_ST_MAX_DIMS);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return gpt_errf(err, "%s: tensor declared twice", name);
    uint64_t nb = gpt_st_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] && nb > UINT64_MAX / shape[d]) return gpt_errf(err, "%s: size overflows", name);
        nb *= shape[d];
    }
    if (w->n == w->cap) w->t = gpt_xrealloc(w->t, (size_t)(w->cap = w->cap ? 2 * w->cap : 64) * sizeof *w->t);
    wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = gpt_xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->nbytes = nb;
    return 0;
}

static int cmp_esize(const void *a, const void *b, void *ctx)
{
    const gpt_ckpt_writer *w = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    size_t si = gpt_st_dtype_size(w->t[i].dtype), sj = gpt_st_dtype_size(w->t[j].dtype);
    if (si != sj) return si > sj ? -1 : 1;
    return i < j ? -1 : i > j;
}

static void plan(gpt_ckpt_writer *w)
{
    w->planned = 1;
    w->order = gpt_xmalloc((size_t)(w->n ? w->n : 1) * sizeof *w->order);
    for (int i = 0; i < w->n; i++) w->order[i] = i;
    /* largest element first keeps every tensor aligned to its element size with no gaps */
    qsort_r(w->order, (size_t)w->n, sizeof *w->order, cmp_esize, w);
    int shard = 0;
    uint64_t used = 0;
    for (int k = 0; k < w->n; k++) {
        wtensor *t = &w->t[w->order[k]];
        if (used > 0 && used + t->nbytes > w->opts.max_shard_bytes) {
            shard++;
            used = 0;
        }
        t->shard = shard;
        t->offset = used;
        used += t->nbytes;
    }
    w->nshards = w->n ? shard + 1 : 0;
    /* shards hold tensors in file order, so within each shard the element-size order still holds */
    w->shard_names = gpt_xcalloc((size_t)(w->nshards ? w->nshards : 1), sizeof *w->shard_names);
    for (int s = 0; s < w->nshards; s++) {
        char buf[96];
        const char *ext = w->opts.zstd_level > 0 ? ".safetensors.zst" : ".safetensors";
        if (w->nshards == 1)
            snprintf(buf, sizeof buf, "model%s", ext);
        else
            snprintf(buf, sizeof buf, "model-%05d-of-%05d%s", s + 1, w->nshards, ext);
        w->shard_names[s] = gpt_xstrdup(buf);
    }
}

static int out_bytes(gpt_ckpt_writer *w, const void *p, size_t n, gpt_err *err)
{
    if (!w->zs) {
        if (n && fwrite(p, 1, n, w->f) != n) return gpt_errf(err, "%s: write error: %s", w->fpath, strerror(errno));
        return 0;
    }
    ZSTD_inBuffer in = {p, n, 0};
    while (in.pos < in.size) {
        ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
        size_t r = ZSTD_compressStream2(w->zs, &out, &in, ZSTD_e_continue);
        if (ZSTD_isError(r)) return gpt_errf(err, "%s: zstd: %s", w->fpath, ZSTD_getErrorName(r));
        if (out.pos && fwrite(w->zbuf, 1, out.pos, w->f) != out.pos)
            return gpt_errf(err, "%s: write error: %s", w->fpath, strerror(errno));
    }
    return 0;
}

static int shard_begin(gpt_ckpt_writer *w, int s, gpt_err *err)
{
    w->cur_shard = s;
    w->fpath = gpt_ckpt_path2(w->tmp, w->shard_names[s]);
    w->f = fopen(w->fpath, "wb");
    if (!w->f) return gpt_errf(err, "%s: cannot create: %s", w->fpath, strerror(errno));
    if (w->opts.zstd_level > 0) {
        w->zs = ZSTD_createCStream();
        ZSTD_CCtx_setParameter(w->zs, ZSTD_c_compressionLevel, w->opts.zstd_level);
        ZSTD_CCtx_setParameter(w->zs, ZSTD_c_checksumFlag, 1);
        w->zcap = ZSTD_CStreamOutSize();
        w->zbuf = gpt_xmalloc(w->zcap);
    }
    /* header: tensors of this shard in file order */
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    for (int k = 0; k < w->n; k++) {
        wtensor *t = &w->t[w->order[k]];
        if (t->shard != s) continue;
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(e, "dtype", gpt_st_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)t->offset));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(t->offset + t->nbytes)));
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int rc = out_bytes(w, len8, 8, err);
    if (rc == 0) rc = out_bytes(w, js, jl, err);
    if (rc == 0 && padded > jl) rc = out_bytes(w, "       ", padded - jl, err);
    free(js);
    return rc;
}

static int shard_end(gpt_ckpt_writer *w, gpt_err *err)
{
    int rc = 0;
    if (w->zs) {
        ZSTD_inBuffer in = {NULL, 0, 0};
        size_t r;
        do {
            ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
            r = ZSTD_compressStream2(w->zs, &out, &in, ZSTD_e_end);
            if (ZSTD_isError(r)) {
                rc = gpt_errf(err, "%s: zstd: %s", w->fpath, ZSTD_getErrorName(r));
                break;
            }
            if (out.pos && fwrite(w->zbuf, 1, out.pos, w->f) != out.pos) {
                rc = gpt_errf(err, "%s: write error: %s", w->fpath, strerror(errno));
                break;
            }
        } while (r != 0);
        ZSTD_freeCStream(w->zs);
        w->zs = NULL;
        free(w->zbuf);
        w->zbuf = NULL;
    }
    if (rc == 0 && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        rc = gpt_errf(err, "%s: write error: %s", w->fpath, strerror(errno));
    if (fclose(w->f) != 0 && rc == 0) rc = gpt_errf(err, "%s: close failed: %s", w->fpath, strerror(errno));
    w->f = NULL;
    free(w->fpath);
    w->fpath = NULL;
    return rc;
}

int gpt_ckpt_writer_next(gpt_ckpt_writer *w)
{
    if (!w->planned) plan(w);
    return w->pos < w->n ? w->order[w->pos] : -1;
}

int gpt_ckpt_writer_put(gpt_ckpt_writer *w, const void *bytes, size_t n, gpt_err *err)
{
    int i = gpt_ckpt_writer_next(w);
    if (i < 0) return gpt_errf(err, "checkpoint writer: every tensor is already written");
    wtensor *t = &w->t[i];
    if ((uint64_t)n != t->nbytes)
        return gpt_errf(err, "%s: got %zu bytes, the declared shape needs %" PRIu64, t->name, n, t->nbytes);
    if (w->cur_shard != t->shard) {
        if (w->f && shard_end(w, err) < 0) return -1;
        if (shard_begin(w, t->shard, err) < 0) return -1;
    }
    t->xxh64 = XXH64(bytes, n, 0);
    if (out_bytes(w, bytes, n, err) < 0) return -1;
    t->done = 1;
    w->pos++;
    if (w->pos == w->n || w->t[w->order[w->pos]].shard != t->shard) return shard_end(w, err);
    return 0;
}

static int write_file(const char *path, const void *data, size_t n, gpt_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return gpt_errf(err, "%s: cannot create: %s", path, strerror(errno));
    int rc = 0;
    if ((n && fwrite(data, 1, n, f) != n) || fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = gpt_errf(err, "%s: write error: %s", path, strerror(errno));
    if (fclose(f) != 0 && rc == 0) rc = gpt_errf(err, "%s: close failed: %s", path, strerror(errno));
    return rc;
}

int gpt_ckpt_writer_blob(gpt_ckpt_writer *w, const char *name, const void *data, size_t n, gpt_err *err)
{
    if (!gpt_ckpt_plain_name(name))
        return gpt_errf(err, "blob name '%s' is not allowed (use [A-Za-z0-9._-], no leading '.' or '..')",
                        name ? name : "(null)");
    for (int i = 0; i < w->nb; i++)
        if (strcmp(w->b[i].name, name) == 0) return gpt_errf(err, "blob %s written twice", name);
    char *bd = gpt_ckpt_path2(w->tmp, "blobs");
    if (w->nb == 0 && mkdir(bd, 0755) != 0 && errno != EEXIST) {
        gpt_errf(err, "%s: cannot create directory: %s", bd, strerror(errno));
        free(bd);
        return -1;
    }
    char *p = gpt_ckpt_path2(bd, name);
    int rc = write_file(p, data, n, err);
    free(p);
    free(bd);
    if (rc < 0) return -1;
    w->b = gpt_xrealloc(w->b, (size_t)(w->nb + 1) * sizeof *w->b);
    w->b[w->nb].name = gpt_xstrdup(name);
    w->b[w->nb].size = n;
    w->b[w->nb].xxh64 = XXH64(data, n, 0);
    w->nb++;
    return 0;
}

int gpt_ckpt_writer_file(gpt_ckpt_writer *w, const char *name, const void *data, size_t n, gpt_err *err)
{
    if (!gpt_ckpt_plain_name(name) || strcmp(name, "manifest.json") == 0 || strcmp(name, "model.yaml") == 0 ||
        strncmp(name, "model", 5) == 0)
        return gpt_errf(err, "file name '%s' is not allowed in a checkpoint", name);
    char *p = gpt_ckpt_path2(w->tmp, name);
    int rc = write_file(p, data, n, err);
    free(p);
    return rc;
}

static void hex64(char out[17], uint64_t v) { snprintf(out, 17, "%016" PRIx64, v); }

static char *manifest_json(const gpt_ckpt_writer *w)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "gpt-checkpoint");
    cJSON_AddNumberToObject(m, "version", GPT_CKPT_VERSION);
    cJSON_AddNumberToObject(m, "step", (double)w->step);
    cJSON_AddStringToObject(m, "tokenizer", w->cfg.tokenizer);
    cJSON_AddStringToObject(m, "dtype", gpt_st_dtype_name(w->opts.dtype));
    cJSON *mesh = cJSON_AddObjectToObject(m, "mesh");
    cJSON_AddNumberToObject(mesh, "tp", w->opts.mesh.tp);
    cJSON_AddNumberToObject(mesh, "pp", w->opts.mesh.pp);
    cJSON_AddNumberToObject(mesh, "ep", w->opts.mesh.ep);
    cJSON_AddNumberToObject(mesh, "tp_rank", w->opts.mesh.tp_rank);
    cJSON_AddNumberToObject(mesh, "pp_rank", w->opts.mesh.pp_rank);
    cJSON_AddNumberToObject(mesh, "ep_rank", w->opts.mesh.ep_rank);
    cJSON_AddNumberToObject(m, "zstd_level", w->opts.zstd_level);
    cJSON_AddNumberToObject(m, "max_shard_bytes", (double)w->opts.max_shard_bytes);
    cJSON *sh = cJSON_AddArrayToObject(m, "shards");
    for (int s = 0; s < w->nshards; s++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "file", w->shard_names[s]);
        cJSON_AddStringToObject(e, "compression", w->opts.zstd_level > 0 ? "zstd" : "none");
        cJSON_AddItemToArray(sh, e);
    }
    cJSON *ts = cJSON_AddArrayToObject(m, "tensors");
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "dtype", gpt_st_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddNumberToObject(e, "shard", t->shard);
        cJSON_AddNumberToObject(e, "offset", (double)t->offset);
        cJSON_AddNumberToObject(e, "length", (double)t->nbytes);
        char hx[17];
        hex64(hx, t->xxh64);
        cJSON_AddStringToObject(e, "xxh64", hx);
        cJSON_AddItemToArray(ts, e);
    }
    cJSON *bs = cJSON_AddArrayToObject(m, "blobs");
    for (int i = 0; i < w->nb; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", w->b[i].name);
        cJSON_AddNumberToObject(e, "length", (double)w->b[i].size);
        char hx[17];
        hex64(hx, w->b[i].xxh64);
        cJSON_AddStringToObject(e, "xxh64", hx);
        cJSON_AddItemToArray(bs, e);
    }
    char *js = cJSON_Print(m);
    cJSON_Delete(m);
    return js;
}

static void writer_free(gpt_ckpt_writer *w)
{
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    for (int i = 0; i < w->nb; i++) free(w->b[i].name);
    free(w->b);
    for (int s = 0; s < w->nshards; s++) free(w->shard_names[s]);
    free(w->shard_names);
    free(w->order);
    if (w->zs) ZSTD_freeCStream(w->zs);
    free(w->zbuf);
    if (w->f) fclose(w->f);
    free(w->fpath);
    free(w->dir);
    free(w->tmp);
    free(w);
}

void gpt_ckpt_writer_abort(gpt_ckpt_writer *w)
{
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
    }
    gpt_ckpt_remove_tree(w->tmp);
    writer_free(w);
}

static int parent_fsync(const char *path, gpt_err *err)
{
    char *copy = gpt_xstrdup(path);
    char *slash = strrchr(copy, '/');
    int rc;
    if (slash == copy)
        rc = gpt_ckpt_fsync_path("/", 1, err);
    else if (slash) {
        *slash = 0;
        rc = gpt_ckpt_fsync_path(copy, 1, err);
    } else
        rc = gpt_ckpt_fsync_path(".", 1, err);
    free(copy);
    return rc;
}

int gpt_ckpt_writer_commit(gpt_ckpt_writer *w, gpt_err *err)
{
    if (gpt_ckpt_writer_next(w) >= 0) {
        gpt_errf(err, "%s: tensor %s was declared but never written", w->dir, w->t[gpt_ckpt_writer_next(w)].name);
        gpt_ckpt_writer_abort(w);
        return -1;
    }
    char *js = manifest_json(w);
    char *mp = gpt_ckpt_path2(w->tmp, "manifest.json");
    int rc = write_file(mp, js, strlen(js), err);
    free(mp);
    free(js);
    if (rc == 0 && w->nb > 0) {
        char *bd = gpt_ckpt_path2(w->tmp, "blobs");
        rc = gpt_ckpt_fsync_path(bd, 1, err);
        free(bd);
    }
    if (rc == 0) rc = gpt_ckpt_fsync_path(w->tmp, 1, err);
    if (rc == 0 && rename(w->tmp, w->dir) != 0)
        rc = gpt_errf(err, "%s: cannot rename %s into place: %s", w->dir, w->tmp, strerror(errno));
    if (rc == 0) rc = parent_fsync(w->dir, err);
    if (rc < 0) {
        gpt_ckpt_writer_abort(w);
        return -1;
    }
    writer_free(w);
    return 0;
}

/* ---- save / latest / prune ---- */

static int parse_step_dir(const char *name, int64_t *step)
{
    if (strncmp(name, "step-", 5) != 0 || !name[5]) return 0;
    int64_t v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > INT64_MAX / 10 - 10) return 0;
        v = v * 10 + (*p - '0');
    }
    *step = v;
    return 1;
}

int gpt_ckpt_read_latest(const char *root, char *name, size_t cap, gpt_err *err)
{
    char *lp = gpt_ckpt_path2(root, "latest");
    gpt_blob b;
    int rc = gpt_blob_read(&b, lp, err);
    if (rc < 0) {
        free(lp);
        return -1;
    }
    size_t n = b.size;
    while (n > 0 && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r' || b.data[n - 1] == ' ')) n--;
    if (n == 0 || n >= cap) {
        rc = gpt_errf(err, "%s: empty or too long; it should hold one directory name", lp);
    } else {
        memcpy(name, b.data, n);
        name[n] = 0;
        if (!gpt_ckpt_plain_name(name)) rc = gpt_errf(err, "%s: '%s' is not a plain directory name", lp, name);
    }
    gpt_blob_free(&b);
    free(lp);
    return rc;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int gpt_ckpt_prune(const char *root, int keep_last, gpt_err *err)
{
    DIR *d = opendir(root);
    if (!d) return gpt_errf(err, "%s: cannot open: %s", root, strerror(errno));
    char latest[GPT_CKPT_NAME_MAX + 1] = "";
    gpt_err ignore;
    if (gpt_ckpt_read_latest(root, latest, sizeof latest, &ignore) < 0) latest[0] = 0;
    int64_t *steps = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t s;
        if (parse_step_dir(e->d_name, &s)) {
            steps = gpt_xrealloc(steps, (n + 1) * sizeof *steps);
            steps[n++] = s;
        } else if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp.")) {
            /* a temp directory whose saver died (kill -9, power loss) */
            long pid = strtol(strrchr(e->d_name, '.') + 1, NULL, 10);
            if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
                char *p = gpt_ckpt_path2(root, e->d_name);
                gpt_ckpt_remove_tree(p);
                free(p);
            }
        }
    }
    closedir(d);
    if (keep_last > 0 && n > (size_t)keep_last) {
        qsort(steps, n, sizeof *steps, cmp_i64);
        for (size_t i = 0; i + (size_t)keep_last < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "step-%08" PRId64, steps[i]);
            if (strcmp(name, latest) == 0) continue;
            char *p = gpt_ckpt_path2(root, name);
            /* rename away first so that a crash mid-delete never leaves a half checkpoint under its name */
            char *gone = gpt_xmalloc(strlen(p) + 64);
            sprintf(gone, "%s/.%s.tmp.%ld", root, name, (long)getpid());
            if (rename(p, gone) == 0) gpt_ckpt_remove_tree(gone);
            free(gone);
            free(p);
        }
    }
    free(steps);
    return 0;
}

static int write_latest(const char *root, const char *name, gpt_err *err)
{
    char *lp = gpt_ckpt_path2(root, "latest");
    gpt_out o;
    int rc = gpt_out_open(&o, lp, err);
    free(lp);
    if (rc < 0) return -1;
    fprintf(o.f, "%s\n", name);
    return gpt_out_commit(&o, err);
}

typedef int (*param_fetch)(void *ctx, const gpt_tensor *t, float *dst, gpt_err *err);

static int save_common(const char *root, int64_t step, const gpt_model_config *cfg, const gpt_param_table *tab,
                       param_fetch fetch, void *ctx, const gpt_ckpt_blob *blobs, size_t nblobs,
                       const gpt_ckpt_opts *opts, gpt_err *err)
{
    if (step < 0) return gpt_errf(err, "checkpoint step must be >= 0, got %" PRId64, step);
    if (mkdir(root, 0755) != 0 && errno != EEXIST) return gpt_errf(err, "%s: cannot create: %s", root, strerror(errno));
    char name[64];
    snprintf(name, sizeof name, "step-%08" PRId64, step);
    char *dir = gpt_ckpt_path2(root, name);
    /* A step directory that latest does not name is a save killed between its rename and latest's
     * update; a resumed run reaches that step again and replaces it. It is moved aside (under a
     * temp name that pruning clears once this process is gone) until the new one is in place. */
    char *aside = NULL;
    struct stat sb;
    if (lstat(dir, &sb) == 0) {
        char latest[GPT_CKPT_NAME_MAX + 1] = "";
        gpt_err ignore;
        if (gpt_ckpt_read_latest(root, latest, sizeof latest, &ignore) < 0) latest[0] = 0;
        if (strcmp(latest, name) == 0) {
            gpt_errf(err, "%s: already exists and %s/latest names it; refusing to overwrite the checkpoint a resume "
                          "would load", dir, root);
            free(dir);
            return -1;
        }
        aside = gpt_xmalloc(strlen(root) + strlen(name) + 64);
        sprintf(aside, "%s/.%s.old.tmp.%ld", root, name, (long)getpid());
        gpt_ckpt_remove_tree(aside);
        if (rename(dir, aside) != 0) {
            gpt_errf(err, "%s: exists (a save latest never recorded) and cannot be moved aside: %s", dir,
                     strerror(errno));
            free(aside);
            free(dir);
            return -1;
        }
    }
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, cfg, step, opts, err);
    if (!w) {
        if (aside && rename(aside, dir) != 0) gpt_ckpt_remove_tree(aside);
        free(aside);
        free(dir);
        return -1;
    }
    gpt_st_dtype dt = opts && opts->dtype == GPT_ST_BF16 ? GPT_ST_BF16 : GPT_ST_F32;
    size_t es = gpt_st_dtype_size(dt);
    int rc = 0;
    for (int i = 0; i < tab->n && rc == 0; i++) {
        uint64_t shape[4];
        for (int d = 0; d < tab->t[i].ndim; d++) shape[d] = (uint64_t)tab->t[i].shape[d];
        rc = gpt_ckpt_writer_add(w, tab->t[i].name, dt, tab->t[i].ndim, shape, err);
    }
    for (size_t b = 0; b < nblobs && rc == 0; b++) rc = gpt_ckpt_writer_blob(w, blobs[b].name, blobs[b].data, blobs[b].size, err);
    float *buf = NULL;
    size_t cap = 0;
    int i;
    while (rc == 0 && (i = gpt_ckpt_writer_next(w)) >= 0) {
        const gpt_tensor *t = &tab->t[i];
        if (t->numel > cap) buf = gpt_xrealloc(buf, (cap = t->numel) * sizeof *buf);
        rc = fetch(ctx, t, buf, err);
        if (rc < 0) break;
        if (dt == GPT_ST_BF16) {
            uint16_t *h = (uint16_t *)buf;
            for (size_t k = 0; k < t->numel; k++) h[k] = gpt_f32_to_bf16(buf[k]);
        }
        rc = gpt_ckpt_writer_put(w, buf, t->numel * es, err);
    }
    free(buf);
    if (rc < 0) {
        gpt_ckpt_writer_abort(w);
        if (aside && rename(aside, dir) != 0) gpt_ckpt_remove_tree(aside);
        free(aside);
        free(dir);
        return -1;
    }
    rc = gpt_ckpt_writer_commit(w, err);
    if (aside) { /* on failure the old directory goes back under its name */
        if (rc == 0 || rename(aside, dir) != 0) gpt_ckpt_remove_tree(aside);
        free(aside);
    }
    free(dir);
    if (rc == 0) rc = write_latest(root, name, err);
    if (rc == 0) rc = gpt_ckpt_prune(root, opts ? opts->keep_last : 0, err);
    return rc;
}

static int fetch_host(void *ctx, const gpt_tensor *t, float *dst, gpt_err *err)
{
    (void)err;
    memcpy(dst, (const float *)ctx + t->offset, t->numel * sizeof *dst);
    return 0;
}

int gpt_ckpt_save(const char *root, int64_t step, const gpt_model_config *cfg, const gpt_param_table *tab,
                  const float *host, const gpt_ckpt_blob *blobs, size_t nblobs, const gpt_ckpt_opts *opts,
                  gpt_err *err)
{
    return save_common(root, step, cfg, tab, fetch_host, (void *)host, blobs, nblobs, opts, err);
}

static int fetch_model(void *ctx, const gpt_tensor *t, float *dst, gpt_err *err)
{
    (void)err;
    gpt_model *m = ctx;
    gpt_backend *be = gpt_model_backend(m);
    be->to_host(be, dst, gpt_model_param_data(m) + t->offset, t->numel * sizeof *dst);
    return 0;
}

int gpt_ckpt_save_model(const char *root, int64_t step, gpt_model *m, const gpt_ckpt_blob *blobs, size_t nblobs,
                        const gpt_ckpt_opts *opts, gpt_err *err)
{
    return save_common(root, step, gpt_model_config_of(m), gpt_model_params(m), fetch_model, m, blobs, nblobs, opts,
                       err);
}
