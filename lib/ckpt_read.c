/* ckpt_read.c: opening, validating and reading native checkpoints (gpt-checkpoint(5)).
 * Manifests and shards are hostile input: every field is checked before use, and shard headers
 * must agree with the manifest entry for entry. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "checkpoint.h"
#include "ckpt_internal.h"
#include "fileio.h"
#include "mxfp4.h"

typedef struct shard {
    char *file;
    int zstd;
    int opened;
    gpt_st_file *st;       /* uncompressed: the validated mapping (only its header is touched) */
    int fd;                /* uncompressed: tensors are read with pread, not through the mapping: pages
                            * touched in a mapping count in the resident set until unmapped, so reading a
                            * checkpoint bigger than RAM through it would not stay bounded */
    /* compressed: a forward-only decoder; going back restarts it */
    FILE *f;
    ZSTD_DStream *ds;
    unsigned char *ibuf;
    size_t icap;
    ZSTD_inBuffer in;
    uint64_t pos;          /* uncompressed bytes consumed */
    uint64_t data_start;   /* 8 + header length */
    int eof;
} shard;

struct gpt_ckpt {
    char *dir;
    char *name;            /* for messages: the manifest path */
    gpt_config cfg;
    int have_cfg;
    int64_t step;
    gpt_ckpt_mesh mesh;
    int zstd_level;
    uint64_t max_shard_bytes;
    gpt_st_dtype dtype;
    shard *sh;
    size_t nsh;
    gpt_ckpt_tensor *t;
    size_t n;
    const gpt_ckpt_tensor **by_name;
    gpt_ckpt_blob_info *b;
    size_t nb;
    unsigned char *scratch;
};

/* ---- manifest ---- */

static int get_u64(const cJSON *o, const char *key, uint64_t max, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > 9007199254740992.0 || (uint64_t)d > max) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_hex64(const char *s, uint64_t *out)
{
    if (!s || strlen(s) != 16) return -1;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp((*(const gpt_ckpt_tensor *const *)a)->name, (*(const gpt_ckpt_tensor *const *)b)->name);
}

static int cmp_by_place(const void *a, const void *b)
{
    const gpt_ckpt_tensor *x = *(const gpt_ckpt_tensor *const *)a, *y = *(const gpt_ckpt_tensor *const *)b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int parse_shape(const cJSON *arr, int *ndim, uint64_t *shape)
{
    if (!cJSON_IsArray(arr)) return -1;
    int n = cJSON_GetArraySize(arr);
    if (n > GPT_ST_MAX_DIMS) return -1;
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr)
    {
        double d = v->valuedouble;
        if (!cJSON_IsNumber(v) || !(d >= 0) || d != floor(d) || d > 9007199254740992.0) return -1;
        shape[i++] = (uint64_t)d;
    }
    *ndim = n;
    return 0;
}

static int parse_manifest(gpt_ckpt *ck, const char *json, size_t len, gpt_err *err)
{
    const char *mn = ck->name;
    cJSON *m = cJSON_ParseWithLength(json, len);
    if (!m || !cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return gpt_errf(err, "%s: not a JSON object (corrupt manifest?)", mn);
    }
    int rc = -1;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(m, "format");
    uint64_t ver = 0, u;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "gpt-checkpoint") != 0) {
        gpt_errf(err, "%s: \"format\" is not \"gpt-checkpoint\"", mn);
        goto out;
    }
    if (get_u64(m, "version", 1000000, &ver) < 0 || ver == 0) {
        gpt_errf(err, "%s: \"version\" missing or not a positive integer", mn);
        goto out;
    }
    if (ver > GPT_CKPT_VERSION) {
        gpt_errf(err, "%s: format version %" PRIu64 " is newer than this program's (%d); upgrade the toolchain", mn,
                 ver, GPT_CKPT_VERSION);
        goto out;
    }
    if (get_u64(m, "step", INT64_MAX, &u) < 0) {
        gpt_errf(err, "%s: \"step\" missing or not a non-negative integer", mn);
        goto out;
    }
    ck->step = (int64_t)u;
    ck->mesh = (gpt_ckpt_mesh){1, 1, 1, 0, 0, 0};
    const cJSON *mesh = cJSON_GetObjectItemCaseSensitive(m, "mesh");
    if (mesh) {
        uint64_t v[6];
        const char *keys[6] = {"tp", "pp", "ep", "tp_rank", "pp_rank", "ep_rank"};
        for (int i = 0; i < 6; i++)
            if (get_u64(mesh, keys[i], 1 << 20, &v[i]) < 0 || (i < 3 && v[i] == 0) || (i >= 3 && v[i] >= v[i - 3])) {
                gpt_errf(err, "%s: mesh.%s missing or out of range", mn, keys[i]);
                goto out;
            }
        ck->mesh = (gpt_ckpt_mesh){(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5]};
    }
    if (get_u64(m, "zstd_level", 22, &u) == 0) ck->zstd_level = (int)u;
    const cJSON *mdt = cJSON_GetObjectItemCaseSensitive(m, "dtype");
    if (!cJSON_IsString(mdt) || gpt_st_dtype_parse(mdt->valuestring, &ck->dtype) < 0 ||
        (ck->dtype != GPT_ST_F32 && ck->dtype != GPT_ST_BF16)) {
        gpt_errf(err, "%s: \"dtype\" must be \"F32\" or \"BF16\"", mn);
        goto out;
    }
    if (get_u64(m, "max_shard_bytes", UINT64_MAX, &u) == 0) ck->max_shard_bytes = u;

    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(m, "shards"), *e;
    if (!cJSON_IsArray(shards) || cJSON_GetArraySize(shards) > 100000) {
        gpt_errf(err, "%s: \"shards\" missing or not a list", mn);
        goto out;
    }
    ck->nsh = (size_t)cJSON_GetArraySize(shards);
    ck->sh = gpt_xcalloc(ck->nsh ? ck->nsh : 1, sizeof *ck->sh);
    size_t i = 0;
    cJSON_ArrayForEach(e, shards)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file"), *c = cJSON_GetObjectItemCaseSensitive(e, "compression");
        if (!cJSON_IsString(f) || !gpt_ckpt_plain_name(f->valuestring)) {
            gpt_errf(err, "%s: shard %zu: \"file\" must be a plain file name in the checkpoint directory (no '/', '\\', '..' or leading '.')",
                     mn, i);
            goto out;
        }
        int z = cJSON_IsString(c) && strcmp(c->valuestring, "zstd") == 0;
        if (!cJSON_IsString(c) || (!z && strcmp(c->valuestring, "none") != 0)) {
            gpt_errf(err, "%s: shard %s: \"compression\" must be \"none\" or \"zstd\"", mn, f->valuestring);
            goto out;
        }
        size_t fl = strlen(f->valuestring);
        const char *want = z ? ".safetensors.zst" : ".safetensors";
        if (fl < strlen(want) || strcmp(f->valuestring + fl - strlen(want), want) != 0) {
            gpt_errf(err, "%s: shard %s: a %s shard must be named *%s", mn, f->valuestring, z ? "zstd" : "plain", want);
            goto out;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(ck->sh[k].file, f->valuestring) == 0) {
                gpt_errf(err, "%s: shard file %s listed twice", mn, f->valuestring);
                goto out;
            }
        ck->sh[i].file = gpt_xstrdup(f->valuestring);
        ck->sh[i].zstd = z;
        i++;
    }

    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(m, "tensors");
    if (!cJSON_IsArray(ts) || cJSON_GetArraySize(ts) > GPT_CKPT_MAX_TENSORS) {
        gpt_errf(err, "%s: \"tensors\" missing or not a list", mn);
        goto out;
    }
    size_t cap = (size_t)cJSON_GetArraySize(ts);
    ck->t = gpt_xcalloc(cap ? cap : 1, sizeof *ck->t);
    cJSON_ArrayForEach(e, ts)
    {
        gpt_ckpt_tensor *t = &ck->t[ck->n];
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype"),
                    *xx = cJSON_GetObjectItemCaseSensitive(e, "xxh64");
        if (!cJSON_IsString(nm) || !nm->valuestring[0] || strlen(nm->valuestring) > GPT_CKPT_NAME_MAX) {
            gpt_errf(err, "%s: tensor %zu: \"name\" missing, empty or longer than %d bytes", mn, ck->n, GPT_CKPT_NAME_MAX);
            goto out;
        }
        const char *tn = nm->valuestring;
        if (!cJSON_IsString(dt) || gpt_st_dtype_parse(dt->valuestring, &t->dtype) < 0) {
            gpt_errf(err, "%s: tensor %s: unknown dtype %s%s%s", mn, tn, cJSON_IsString(dt) ? "'" : "",
                     cJSON_IsString(dt) ? dt->valuestring : "(missing)", cJSON_IsString(dt) ? "'" : "");
            goto out;
        }
        if (parse_shape(cJSON_GetObjectItemCaseSensitive(e, "shape"), &t->ndim, t->shape) < 0) {
            gpt_errf(err, "%s: tensor %s: \"shape\" must be a list of at most %d non-negative integers", mn, tn,
                     GPT_ST_MAX_DIMS);
            goto out;
        }
        uint64_t numel = 1, shardi, tlen;
        int ovf = 0;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] && numel > UINT64_MAX / t->shape[d]) ovf = 1;
            numel *= t->shape[d];
        }
        size_t es = gpt_st_dtype_size(t->dtype);
        if (ovf || numel > (UINT64_MAX >> 4) / es || numel * es > ((uint64_t)1 << 50)) {
            gpt_errf(err, "%s: tensor %s: absurd shape (more than 2^50 bytes)", mn, tn);
            goto out;
        }
        t->numel = numel;
        t->nbytes = numel * es;
        if (get_u64(e, "shard", ck->nsh ? ck->nsh - 1 : 0, &shardi) < 0 || ck->nsh == 0) {
            gpt_errf(err, "%s: tensor %s: \"shard\" missing or not an index into the %zu shards", mn, tn, ck->nsh);
            goto out;
        }
        t->shard = (int)shardi;
        if (get_u64(e, "offset", (uint64_t)1 << 52, &t->offset) < 0 || get_u64(e, "length", UINT64_MAX, &tlen) < 0) {
            gpt_errf(err, "%s: tensor %s: \"offset\"/\"length\" missing or out of range", mn, tn);
            goto out;
        }
        if (tlen != t->nbytes) {
            gpt_errf(err, "%s: tensor %s: length %" PRIu64 " does not match its shape and dtype (%" PRIu64 " bytes)", mn,
                     tn, tlen, t->nbytes);
            goto out;
        }
        if (!cJSON_IsString(xx) || parse_hex64(xx->valuestring, &t->xxh64) < 0) {
            gpt_errf(err, "%s: tensor %s: \"xxh64\" must be 16 lowercase hex digits", mn, tn);
            goto out;
        }
        t->name = gpt_xstrdup(tn);
        ck->n++;
    }
    ck->by_name = gpt_xmalloc((ck->n ? ck->n : 1) * sizeof *ck->by_name);
    for (size_t k = 0; k < ck->n; k++) ck->by_name[k] = &ck->t[k];
    qsort(ck->by_name, ck->n, sizeof *ck->by_name, cmp_by_name);
    for (size_t k = 1; k < ck->n; k++)
        if (strcmp(ck->by_name[k - 1]->name, ck->by_name[k]->name) == 0) {
            gpt_errf(err, "%s: tensor %s listed twice", mn, ck->by_name[k]->name);
            goto out;
        }
    {
        const gpt_ckpt_tensor **pl = gpt_xmalloc((ck->n ? ck->n : 1) * sizeof *pl);
        for (size_t k = 0; k < ck->n; k++) pl[k] = &ck->t[k];
        qsort(pl, ck->n, sizeof *pl, cmp_by_place);
        int bad = 0;
        for (size_t k = 1; k < ck->n && !bad; k++)
            if (pl[k]->shard == pl[k - 1]->shard && pl[k - 1]->offset + pl[k - 1]->nbytes > pl[k]->offset) {
                gpt_errf(err, "%s: tensors %s and %s overlap in shard %s", mn, pl[k - 1]->name, pl[k]->name,
                         ck->sh[pl[k]->shard].file);
                bad = 1;
            }
        free(pl);
        if (bad) goto out;
    }

    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(m, "blobs");
    if (bs && (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) > 100000)) {
        gpt_errf(err, "%s: \"blobs\" is not a list", mn);
        goto out;
    }
    ck->b = gpt_xcalloc(bs && cJSON_GetArraySize(bs) ? (size_t)cJSON_GetArraySize(bs) : 1, sizeof *ck->b);
    cJSON_ArrayForEach(e, bs)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *xx = cJSON_GetObjectItemCaseSensitive(e, "xxh64");
        gpt_ckpt_blob_info *b = &ck->b[ck->nb];
        if (!cJSON_IsString(nm) || !gpt_ckpt_plain_name(nm->valuestring)) {
            gpt_errf(err, "%s: blob %zu: \"name\" must be a plain file name ([A-Za-z0-9._-], no '..' or leading '.')", mn,
                     ck->nb);
            goto out;
        }
        for (size_t k = 0; k < ck->nb; k++)
            if (strcmp(ck->b[k].name, nm->valuestring) == 0) {
                gpt_errf(err, "%s: blob %s listed twice", mn, nm->valuestring);
                goto out;
            }
        if (get_u64(e, "length", (uint64_t)1 << 50, &b->size) < 0 || !cJSON_IsString(xx) ||
            parse_hex64(xx->valuestring, &b->xxh64) < 0) {
            gpt_errf(err, "%s: blob %s: \"length\" or \"xxh64\" missing or malformed", mn, nm->valuestring);
            goto out;
        }
        b->name = gpt_xstrdup(nm->valuestring);
        ck->nb++;
    }
    rc = 0;
out:
    cJSON_Delete(m);
    return rc;
}

gpt_ckpt *gpt_ckpt_parse_manifest(const char *json, size_t n, const char *name, gpt_err *err)
{
    gpt_ckpt *ck = gpt_xcalloc(1, sizeof *ck);
    ck->name = gpt_xstrdup(name ? name : "manifest");
    ck->dir = gpt_xstrdup(".");
    if (parse_manifest(ck, json, n, err) < 0) {
        gpt_ckpt_close(ck);
        return NULL;
    }
    return ck;
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

gpt_ckpt *gpt_ckpt_open(const char *path, gpt_err *err)
{
    char *dir = gpt_xstrdup(path);
    char *mp = gpt_ckpt_path2(dir, "manifest.json");
    if (!is_file(mp)) {
        char *lp = gpt_ckpt_path2(dir, "latest");
        int has_latest = is_file(lp);
        free(lp);
        if (!has_latest) {
            gpt_errf(err, "%s: not a checkpoint (no manifest.json) nor a checkpoint root (no latest)", path);
            free(mp);
            free(dir);
            return NULL;
        }
        char name[GPT_CKPT_NAME_MAX + 1];
        if (gpt_ckpt_read_latest(dir, name, sizeof name, err) < 0) {
            free(mp);
            free(dir);
            return NULL;
        }
        char *d2 = gpt_ckpt_path2(dir, name);
        free(dir);
        dir = d2;
        free(mp);
        mp = gpt_ckpt_path2(dir, "manifest.json");
    }
    gpt_blob b;
    if (gpt_blob_read(&b, mp, err) < 0) {
        free(mp);
        free(dir);
        return NULL;
    }
    gpt_ckpt *ck = gpt_xcalloc(1, sizeof *ck);
    ck->dir = dir;
    ck->name = mp;
    int rc = parse_manifest(ck, (const char *)b.data, b.size, err);
    gpt_blob_free(&b);
    if (rc == 0) {
        char *yp = gpt_ckpt_path2(dir, "model.yaml");
        rc = gpt_config_load(yp, &ck->cfg, err);
        free(yp);
        if (rc == 0) ck->have_cfg = 1;
    }
    if (rc < 0) {
        gpt_ckpt_close(ck);
        return NULL;
    }
    return ck;
}

static void shard_close(shard *s)
{
    if (s->st) gpt_st_close(s->st);
    if (s->f) fclose(s->f);
    if (s->fd > 0) close(s->fd);
    s->fd = 0;
    if (s->ds) ZSTD_freeDStream(s->ds);
    free(s->ibuf);
    s->st = NULL;
    s->f = NULL;
    s->ds = NULL;
    s->ibuf = NULL;
    s->opened = 0;
}

void gpt_ckpt_close(gpt_ckpt *ck)
{
    if (!ck) return;
    for (size_t i = 0; i < ck->nsh; i++) {
        shard_close(&ck->sh[i]);
        free(ck->sh[i].file);
    }
    free(ck->sh);
    for (size_t i = 0; i < ck->n; i++) free(ck->t[i].name);
    free(ck->t);
    free(ck->by_name);
    for (size_t i = 0; i < ck->nb; i++) free(ck->b[i].name);
    free(ck->b);
    if (ck->have_cfg) gpt_config_free(&ck->cfg);
    free(ck->scratch);
    free(ck->dir);
    free(ck->name);
    free(ck);
}

const char *gpt_ckpt_dir(const gpt_ckpt *ck) { return ck->dir; }
const gpt_config *gpt_ckpt_config(const gpt_ckpt *ck) { return ck->have_cfg ? &ck->cfg : NULL; }
int64_t gpt_ckpt_step(const gpt_ckpt *ck) { return ck->step; }
gpt_ckpt_mesh gpt_ckpt_mesh_of(const gpt_ckpt *ck) { return ck->mesh; }
int gpt_ckpt_zstd_level(const gpt_ckpt *ck) { return ck->zstd_level; }
gpt_st_dtype gpt_ckpt_dtype(const gpt_ckpt *ck) { return ck->dtype; }
uint64_t gpt_ckpt_max_shard_bytes(const gpt_ckpt *ck) { return ck->max_shard_bytes; }
size_t gpt_ckpt_nshards(const gpt_ckpt *ck) { return ck->nsh; }
const char *gpt_ckpt_shard_file(const gpt_ckpt *ck, size_t i) { return i < ck->nsh ? ck->sh[i].file : NULL; }
size_t gpt_ckpt_count(const gpt_ckpt *ck) { return ck->n; }
const gpt_ckpt_tensor *gpt_ckpt_tensor_at(const gpt_ckpt *ck, size_t i) { return i < ck->n ? &ck->t[i] : NULL; }
size_t gpt_ckpt_blob_count(const gpt_ckpt *ck) { return ck->nb; }
const gpt_ckpt_blob_info *gpt_ckpt_blob_at(const gpt_ckpt *ck, size_t i) { return i < ck->nb ? &ck->b[i] : NULL; }

const gpt_ckpt_tensor *gpt_ckpt_find(const gpt_ckpt *ck, const char *name)
{
    size_t lo = 0, hi = ck->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ck->by_name[mid]->name, name);
        if (c == 0) return ck->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- shards ---- */

static int header_mismatch(const gpt_ckpt *ck, const shard *s, const gpt_ckpt_tensor *t, const char *what,
                           gpt_err *err)
{
    return gpt_errf(err, "%s/%s: tensor %s: the shard header's %s disagrees with manifest.json (mixed or corrupt files)",
                    ck->dir, s->file, t->name, what);
}

/* Every manifest tensor of shard si must be in the header with the same dtype, shape and place,
 * and the header must hold nothing else. */
static int check_header_json(gpt_ckpt *ck, int si, const cJSON *h, gpt_err *err)
{
    shard *s = &ck->sh[si];
    size_t want = 0, have = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, h) if (strcmp(e->string, "__metadata__") != 0) have++;
    for (size_t i = 0; i < ck->n; i++) {
        const gpt_ckpt_tensor *t = &ck->t[i];
        if (t->shard != si) continue;
        want++;
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(h, t->name);
        if (!cJSON_IsObject(x)) return gpt_errf(err, "%s/%s: tensor %s is in manifest.json but not in the shard", ck->dir, s->file, t->name);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(x, "dtype"), *off = cJSON_GetObjectItemCaseSensitive(x, "data_offsets");
        gpt_st_dtype d;
        if (!cJSON_IsString(dt) || gpt_st_dtype_parse(dt->valuestring, &d) < 0 || d != t->dtype)
            return header_mismatch(ck, s, t, "dtype", err);
        int nd;
        uint64_t shp[GPT_ST_MAX_DIMS];
        if (parse_shape(cJSON_GetObjectItemCaseSensitive(x, "shape"), &nd, shp) < 0 || nd != t->ndim ||
            memcmp(shp, t->shape, (size_t)nd * sizeof *shp) != 0)
            return header_mismatch(ck, s, t, "shape", err);
        uint64_t o[2];
        int no;
        if (parse_shape(off, &no, o) < 0 || no != 2 || o[0] != t->offset || o[1] != t->offset + t->nbytes)
            return header_mismatch(ck, s, t, "data_offsets", err);
    }
    if (want != have)
        return gpt_errf(err, "%s/%s: the shard holds %zu tensors, manifest.json lists %zu for it", ck->dir, s->file, have, want);
    return 0;
}

static int check_header_st(gpt_ckpt *ck, int si, gpt_err *err)
{
    shard *s = &ck->sh[si];
    size_t want = 0;
    for (size_t i = 0; i < ck->n; i++) {
        const gpt_ckpt_tensor *t = &ck->t[i];
        if (t->shard != si) continue;
        want++;
        const gpt_st_tensor *x = gpt_st_find(s->st, t->name);
        if (!x) return gpt_errf(err, "%s/%s: tensor %s is in manifest.json but not in the shard", ck->dir, s->file, t->name);
        if (x->dtype != t->dtype) return header_mismatch(ck, s, t, "dtype", err);
        if (x->ndim != t->ndim || memcmp(x->shape, t->shape, (size_t)t->ndim * sizeof *t->shape) != 0)
            return header_mismatch(ck, s, t, "shape", err);
        if (x->offset != t->offset) return header_mismatch(ck, s, t, "data_offsets", err);
    }
    if (want != gpt_st_count(s->st))
        return gpt_errf(err, "%s/%s: the shard holds %zu tensors, manifest.json lists %zu for it", ck->dir, s->file,
                        gpt_st_count(s->st), want);
    return 0;
}

/* Decompress n bytes into dst (NULL: discard). */
static int z_pull(gpt_ckpt *ck, shard *s, void *dst, uint64_t n, gpt_err *err)
{
    unsigned char tmp[65536];
    while (n > 0) {
        size_t want = dst ? (size_t)(n < (uint64_t)SIZE_MAX ? n : SIZE_MAX) : (n < sizeof tmp ? (size_t)n : sizeof tmp);
        ZSTD_outBuffer out = {dst ? dst : tmp, want, 0};
        if (s->in.pos == s->in.size && !s->eof) {
            size_t got = fread(s->ibuf, 1, s->icap, s->f);
            if (got == 0) {
                if (ferror(s->f)) return gpt_errf(err, "%s/%s: read error: %s", ck->dir, s->file, strerror(errno));
                s->eof = 1;
            }
            s->in = (ZSTD_inBuffer){s->ibuf, got, 0};
        }
        size_t r = ZSTD_decompressStream(s->ds, &out, &s->in);
        if (ZSTD_isError(r)) return gpt_errf(err, "%s/%s: zstd: %s (corrupt file)", ck->dir, s->file, ZSTD_getErrorName(r));
        if (out.pos == 0 && s->eof && s->in.pos == s->in.size)
            return gpt_errf(err, "%s/%s: truncated: the data ends at byte %" PRIu64 " of the uncompressed stream",
                            ck->dir, s->file, s->pos);
        s->pos += out.pos;
        n -= out.pos;
        if (dst) dst = (unsigned char *)dst + out.pos;
    }
    return 0;
}

static int shard_open(gpt_ckpt *ck, int si, gpt_err *err)
{
    shard *s = &ck->sh[si];
    if (s->opened) return 0;
    char *p = gpt_ckpt_path2(ck->dir, s->file);
    int rc = 0;
    if (!s->zstd) {
        s->st = gpt_st_open(p, err);
        rc = s->st ? check_header_st(ck, si, err) : -1;
        if (rc == 0 && (s->fd = open(p, O_RDONLY | O_CLOEXEC)) < 0) {
            s->fd = 0;
            rc = gpt_errf(err, "%s: cannot open: %s", p, strerror(errno));
        }
        unsigned char l8[8];
        if (rc == 0 && pread(s->fd, l8, 8, 0) != 8) rc = gpt_errf(err, "%s: cannot read the header length", p);
        if (rc == 0) {
            s->data_start = 8;
            for (int i = 0; i < 8; i++) s->data_start += (uint64_t)l8[i] << (8 * i);
            posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        }
    } else {
        s->f = fopen(p, "rb");
        if (!s->f) {
            rc = gpt_errf(err, "%s: cannot open: %s", p, strerror(errno));
        } else {
            s->ds = ZSTD_createDStream();
            ZSTD_initDStream(s->ds);
            s->icap = ZSTD_DStreamInSize();
            s->ibuf = gpt_xmalloc(s->icap);
            s->in = (ZSTD_inBuffer){s->ibuf, 0, 0};
            s->pos = 0;
            s->eof = 0;
            unsigned char l8[8];
            rc = z_pull(ck, s, l8, 8, err);
            uint64_t hl = 0;
            for (int i = 0; i < 8; i++) hl |= (uint64_t)l8[i] << (8 * i);
            if (rc == 0 && (hl < 2 || hl > GPT_ST_MAX_HEADER))
                rc = gpt_errf(err, "%s: header length %" PRIu64 " out of range", p, hl);
            if (rc == 0) {
                char *h = gpt_xmalloc(hl + 1);
                rc = z_pull(ck, s, h, hl, err);
                if (rc == 0) {
                    cJSON *j = cJSON_ParseWithLength(h, hl);
                    if (!cJSON_IsObject(j))
                        rc = gpt_errf(err, "%s: the safetensors header is not a JSON object", p);
                    else
                        rc = check_header_json(ck, si, j, err);
                    cJSON_Delete(j);
                }
                free(h);
                s->data_start = 8 + hl;
            }
        }
    }
    free(p);
    if (rc < 0) {
        shard_close(s);
        return -1;
    }
    s->opened = 1;
    return 0;
}

int gpt_ckpt_read(gpt_ckpt *ck, const gpt_ckpt_tensor *t, void *buf, gpt_err *err)
{
    if (shard_open(ck, t->shard, err) < 0) return -1;
    shard *s = &ck->sh[t->shard];
    if (!s->zstd) {
        /* offsets and sizes were checked against the validated header when the shard was opened */
        uint64_t done = 0;
        while (done < t->nbytes) {
            size_t want = t->nbytes - done > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)(t->nbytes - done);
            ssize_t got = pread(s->fd, (unsigned char *)buf + done, want, (off_t)(s->data_start + t->offset + done));
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0)
                return gpt_errf(err, "%s/%s: reading tensor %s: %s", ck->dir, s->file, t->name,
                                got < 0 ? strerror(errno) : "the file is shorter than its header says (truncated?)");
            done += (uint64_t)got;
        }
    } else {
        uint64_t at = s->data_start + t->offset;
        if (at < s->pos) { /* backwards: restart the decoder */
            shard_close(s);
            if (shard_open(ck, t->shard, err) < 0) return -1;
        }
        if (z_pull(ck, s, NULL, at - s->pos, err) < 0 || z_pull(ck, s, buf, t->nbytes, err) < 0)
            return gpt_err_prefix(err, "reading tensor %s: ", t->name);
    }
    uint64_t h = XXH64(buf, t->nbytes, 0);
    if (h != t->xxh64)
        return gpt_errf(err, "%s/%s: tensor %s is corrupt: xxh64 %016" PRIx64 ", manifest.json says %016" PRIx64
                        " (restore the checkpoint from another copy)",
                        ck->dir, s->file, t->name, h, t->xxh64);
    return 0;
}

static int to_f32(const gpt_ckpt_tensor *t, const unsigned char *p, float *out, gpt_err *err)
{
    if (gpt_st_to_f32(t->dtype, p, (size_t)t->numel, out) < 0)
        return gpt_errf(err, "tensor %s: dtype %s is not a float type", t->name, gpt_st_dtype_name(t->dtype));
    return 0;
}

int gpt_ckpt_read_f32(gpt_ckpt *ck, const gpt_ckpt_tensor *t, float *out, gpt_err *err)
{
    if (t->dtype == GPT_ST_F32) return gpt_ckpt_read(ck, t, out, err);
    unsigned char *tmp = gpt_xmalloc(t->nbytes ? t->nbytes : 1);
    int rc = gpt_ckpt_read(ck, t, tmp, err);
    if (rc == 0) rc = to_f32(t, tmp, out, err);
    free(tmp);
    return rc;
}

int gpt_ckpt_read_param(gpt_ckpt *ck, const gpt_tensor *p, float *dst, gpt_err *err)
{
    const gpt_ckpt_tensor *t = gpt_ckpt_find(ck, p->name);
    if (t) {
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == (uint64_t)p->shape[d];
        if (!same) return gpt_errf(err, "%s: tensor %s has a shape the config does not give it", ck->dir, p->name);
        return gpt_ckpt_read_f32(ck, t, dst, err);
    }
    char bn[GPT_TENSOR_NAME_MAX + 16], sn[GPT_TENSOR_NAME_MAX + 16];
    snprintf(bn, sizeof bn, "%s_blocks", p->name);
    snprintf(sn, sizeof sn, "%s_scales", p->name);
    const gpt_ckpt_tensor *b = gpt_ckpt_find(ck, bn), *s = gpt_ckpt_find(ck, sn);
    if (!b || !s) return gpt_errf(err, "%s: tensor %s is missing (the config expects it)", ck->dir, p->name);
    if (b->dtype != GPT_ST_U8 || s->dtype != GPT_ST_U8 || p->ndim != 3 || b->ndim != 4 || s->ndim != 3 ||
        b->shape[0] != (uint64_t)p->shape[0] || b->shape[1] != (uint64_t)p->shape[2] ||
        b->shape[2] * 32 != (uint64_t)p->shape[1])
        return gpt_errf(err, "%s: MXFP4 pair %s does not match the config's (%lld, %lld, %lld)", ck->dir, bn,
                        (long long)p->shape[0], (long long)p->shape[1], (long long)p->shape[2]);
    unsigned char *bb = gpt_xmalloc(b->nbytes), *sb = gpt_xmalloc(s->nbytes ? s->nbytes : 1);
    size_t E = (size_t)p->shape[0], I = (size_t)p->shape[1], O = (size_t)p->shape[2];
    float *tmp = gpt_xmalloc(E * O * I * sizeof *tmp);
    int rc = gpt_ckpt_read(ck, b, bb, err);
    if (rc == 0) rc = gpt_ckpt_read(ck, s, sb, err);
    if (rc == 0) rc = gpt_mxfp4_dequant_shaped(p->name, bb, b->ndim, b->shape, sb, s->ndim, s->shape, tmp, E * O * I, err);
    /* stored (E, out, in) like gpt-oss; ours is (E, in, out) */
    if (rc == 0)
        for (size_t e = 0; e < E; e++)
            for (size_t o = 0; o < O; o++)
                for (size_t i = 0; i < I; i++) dst[(e * I + i) * O + o] = tmp[(e * O + o) * I + i];
    free(tmp);
    free(bb);
    free(sb);
    return rc;
}

int gpt_ckpt_load_params(gpt_ckpt *ck, const gpt_param_table *tab, float *host, gpt_err *err)
{
    memset(host, 0, tab->total * sizeof *host);
    for (int i = 0; i < tab->n; i++)
        if (gpt_ckpt_read_param(ck, &tab->t[i], host + tab->t[i].offset, err) < 0) return -1;
    return 0;
}

int gpt_ckpt_load_model(gpt_ckpt *ck, gpt_model *m, gpt_err *err)
{
    if (!ck->have_cfg || !gpt_model_config_equal(&ck->cfg.model, gpt_model_config_of(m)))
        return gpt_errf(err, "%s: the checkpoint's model.yaml does not describe this model", ck->dir);
    const gpt_param_table *tab = gpt_model_params(m);
    float *host = gpt_xmalloc(tab->total * sizeof *host);
    int rc = gpt_ckpt_load_params(ck, tab, host, err);
    if (rc == 0) gpt_model_backend(m)->to_device(gpt_model_backend(m), gpt_model_param_data(m), host, tab->total * sizeof *host);
    free(host);
    return rc;
}

int gpt_ckpt_read_blob(gpt_ckpt *ck, const char *name, void **data, size_t *n, gpt_err *err)
{
    *data = NULL;
    *n = 0;
    const gpt_ckpt_blob_info *b = NULL;
    for (size_t i = 0; i < ck->nb; i++)
        if (strcmp(ck->b[i].name, name) == 0) b = &ck->b[i];
    if (!b) return gpt_errf(err, "%s: no blob named %s", ck->dir, name);
    char *bd = gpt_ckpt_path2(ck->dir, "blobs");
    char *p = gpt_ckpt_path2(bd, b->name);
    free(bd);
    gpt_blob bl;
    int rc = gpt_blob_read(&bl, p, err);
    if (rc == 0) {
        if (bl.size != b->size)
            rc = gpt_errf(err, "%s: blob %s has %zu bytes, manifest.json says %" PRIu64 " (truncated?)", p, b->name, bl.size, b->size);
        else if (XXH64(bl.data, bl.size, 0) != b->xxh64)
            rc = gpt_errf(err, "%s: blob %s is corrupt (xxh64 mismatch)", p, b->name);
        if (rc == 0) {
            *data = gpt_xmalloc(bl.size ? bl.size : 1);
            if (bl.size) memcpy(*data, bl.data, bl.size);
            *n = bl.size;
        }
        gpt_blob_free(&bl);
    }
    free(p);
    return rc;
}

int gpt_ckpt_verify(gpt_ckpt *ck, void (*progress)(void *ctx, size_t done, size_t total), void *ctx, gpt_err *err)
{
    const gpt_ckpt_tensor **pl = gpt_xmalloc((ck->n ? ck->n : 1) * sizeof *pl);
    for (size_t k = 0; k < ck->n; k++) pl[k] = &ck->t[k];
    qsort(pl, ck->n, sizeof *pl, cmp_by_place);
    int rc = 0;
    for (size_t si = 0; si < ck->nsh && rc == 0; si++) rc = shard_open(ck, (int)si, err);
    /* one buffer for all: a fresh allocation per tensor costs a page fault per 4 KiB */
    uint64_t most = 1;
    for (size_t k = 0; k < ck->n; k++)
        if (pl[k]->nbytes > most) most = pl[k]->nbytes;
    unsigned char *buf = rc == 0 ? gpt_xmalloc((size_t)most) : NULL;
    for (size_t k = 0; k < ck->n && rc == 0; k++) {
        rc = gpt_ckpt_read(ck, pl[k], buf, err);
        if (progress) progress(ctx, k + 1, ck->n);
    }
    free(buf);
    /* a compressed shard must end where its last tensor does */
    for (size_t si = 0; si < ck->nsh && rc == 0; si++) {
        shard *s = &ck->sh[si];
        if (!s->zstd) continue;
        unsigned char extra;
        gpt_err e2;
        uint64_t end = s->data_start;
        for (size_t k = 0; k < ck->n; k++)
            if (ck->t[k].shard == (int)si && s->data_start + ck->t[k].offset + ck->t[k].nbytes > end)
                end = s->data_start + ck->t[k].offset + ck->t[k].nbytes;
        if (s->pos <= end && z_pull(ck, s, NULL, end - s->pos, &e2) == 0 && z_pull(ck, s, &extra, 1, &e2) == 0)
            rc = gpt_errf(err, "%s/%s: data continues past the last tensor (corrupt or mixed files)", ck->dir, s->file);
    }
    free(pl);
    for (size_t i = 0; i < ck->nb && rc == 0; i++) {
        void *d;
        size_t n;
        rc = gpt_ckpt_read_blob(ck, ck->b[i].name, &d, &n, err);
        free(d);
    }
    return rc;
}

int gpt_ckpt_read_stream(gpt_ckpt *ck, const gpt_ckpt_tensor *t, void *buf, size_t cap,
                         int (*fn)(void *ctx, const void *bytes, uint64_t off, size_t n, gpt_err *err), void *ctx,
                         gpt_err *err)
{
    size_t es = gpt_st_dtype_size(t->dtype);
    if (es == 0 || cap < es) return gpt_errf(err, "tensor %s: a read buffer of %zu bytes is too small", t->name, cap);
    cap -= cap % es; /* whole elements per chunk: the consumer converts each chunk on its own */
    if (shard_open(ck, t->shard, err) < 0) return -1;
    shard *s = &ck->sh[t->shard];
    if (s->zstd && s->data_start + t->offset < s->pos) { /* backwards: restart the decoder */
        shard_close(s);
        if (shard_open(ck, t->shard, err) < 0) return -1;
    }
    if (s->zstd && z_pull(ck, s, NULL, s->data_start + t->offset - s->pos, err) < 0)
        return gpt_err_prefix(err, "reading tensor %s: ", t->name);
    XXH64_state_t *hs = XXH64_createState();
    if (!hs) abort();
    XXH64_reset(hs, 0);
    int rc = 0;
    for (uint64_t done = 0; done < t->nbytes && rc == 0;) {
        size_t n = t->nbytes - done < cap ? (size_t)(t->nbytes - done) : cap;
        if (!s->zstd) {
            for (size_t got = 0; got < n && rc == 0;) {
                ssize_t r = pread(s->fd, (unsigned char *)buf + got, n - got, (off_t)(s->data_start + t->offset + done + got));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0)
                    rc = gpt_errf(err, "%s/%s: reading tensor %s: %s", ck->dir, s->file, t->name,
                                  r < 0 ? strerror(errno) : "the file is shorter than its header says (truncated?)");
                else
                    got += (size_t)r;
            }
        } else if (z_pull(ck, s, buf, n, err) < 0) {
            rc = gpt_err_prefix(err, "reading tensor %s: ", t->name);
        }
        if (rc == 0) {
            XXH64_update(hs, buf, n);
            rc = fn(ctx, buf, done, n, err);
        }
        done += n;
    }
    uint64_t h = XXH64_digest(hs);
    XXH64_freeState(hs);
    if (rc == 0 && h != t->xxh64)
        rc = gpt_errf(err, "%s/%s: tensor %s is corrupt: xxh64 %016" PRIx64 ", manifest.json says %016" PRIx64
                      " (restore the checkpoint from another copy)",
                      ck->dir, s->file, t->name, h, t->xxh64);
    return rc;
}
