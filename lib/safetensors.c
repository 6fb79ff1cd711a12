#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it as is and needs a little-endian host"
#endif

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtypes[GPT_ST_NDTYPES] = {
    [GPT_ST_F64] = {"F64", 8},     [GPT_ST_F32] = {"F32", 4},         [GPT_ST_F16] = {"F16", 2},
    [GPT_ST_BF16] = {"BF16", 2},   [GPT_ST_I64] = {"I64", 8},         [GPT_ST_I32] = {"I32", 4},
    [GPT_ST_I16] = {"I16", 2},     [GPT_ST_I8] = {"I8", 1},           [GPT_ST_U8] = {"U8", 1},
    [GPT_ST_BOOL] = {"BOOL", 1},   [GPT_ST_F8_E4M3] = {"F8_E4M3", 1}, [GPT_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *gpt_st_dtype_name(gpt_st_dtype d)
{
    return (unsigned)d < GPT_ST_NDTYPES ? dtypes[d].name : NULL;
}

size_t gpt_st_dtype_size(gpt_st_dtype d)
{
    return (unsigned)d < GPT_ST_NDTYPES ? dtypes[d].size : 0;
}

int gpt_st_dtype_parse(const char *s, gpt_st_dtype *out)
{
    for (int i = 0; i < GPT_ST_NDTYPES; i++)
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (gpt_st_dtype)i;
            return 0;
        }
    return -1;
}

/* ---- element conversions ---- */

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float gpt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        /* Subnormal half: renormalize; every half subnormal is a normal float. */
        uint32_t e = 113; /* 127 - 15 + 1 */
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        return f32_from_bits(sign | e << 23 | (mant & 0x3ffu) << 13);
    }
    if (exp == 31) return f32_from_bits(sign | 0x7f800000u | mant << 13); /* inf, NaN with its payload */
    return f32_from_bits(sign | (exp + 112) << 23 | mant << 13);
}

float gpt_bf16_to_f32(uint16_t b)
{
    return f32_from_bits((uint32_t)b << 16);
}

uint16_t gpt_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* keep NaN a NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ---- small helpers ---- */

/* Names come from hostile files: quote them for messages without control characters, bounded. */
static const char *qname(char buf[160], const char *s)
{
    size_t o = 0;
    for (; *s && o < 150; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, 160 - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    if (*s) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), as the reference requires. */
static int utf8_valid(const unsigned char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            goto fail;
        }
        if (n - i < len) goto fail;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) goto fail;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
        i += len;
        continue;
    fail:
        if (bad) *bad = i;
        return 0;
    }
    return 1;
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int cmp_str(const char *a, const char *b)
{
    return strcmp(a, b);
}

/* ---- reader ---- */

struct gpt_st_file {
    char *name;
    gpt_blob blob;
    int owns_blob;
    const unsigned char *base;
    size_t size, data_start, data_size;
    gpt_st_tensor *t;
    size_t nt;
    const gpt_st_tensor **sorted; /* by name, for gpt_st_find */
    char **meta_k, **meta_v;
    size_t nmeta;
};

const char *gpt_st_file_name(const gpt_st_file *f)
{
    return f->name;
}

size_t gpt_st_count(const gpt_st_file *f)
{
    return f->nt;
}

const gpt_st_tensor *gpt_st_tensor_at(const gpt_st_file *f, size_t i)
{
    return i < f->nt ? &f->t[i] : NULL;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return cmp_str((*(const gpt_st_tensor *const *)a)->name, (*(const gpt_st_tensor *const *)b)->name);
}

static const gpt_st_tensor *find_sorted(const gpt_st_tensor *const *v, size_t n, const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_str(v[mid]->name, name);
        if (c == 0) return v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const gpt_st_tensor *gpt_st_find(const gpt_st_file *f, const char *name)
{
    return f && name ? find_sorted(f->sorted, f->nt, name) : NULL;
}

const char *gpt_st_meta(const gpt_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

size_t gpt_st_meta_count(const gpt_st_file *f)
{
    return f->nmeta;
}

int gpt_st_meta_at(const gpt_st_file *f, size_t i, const char **key, const char **value)
{
    if (i >= f->nmeta) return -1;
    *key = f->meta_k[i];
    *value = f->meta_v[i];
    return 0;
}

void gpt_st_close(gpt_st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->nt; i++) free((char *)f->t[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    free(f->t);
    free(f->sorted);
    if (f->owns_blob) gpt_blob_free(&f->blob);
    free(f->name);
    free(f);
}

static int parse_metadata(gpt_st_file *f, const cJSON *m, gpt_err *err)
{
    char q[160];
    if (cJSON_IsNull(m)) return 0;
    if (!cJSON_IsObject(m))
        return gpt_errf(err, "%s: __metadata__ is not a JSON object of strings; the header is corrupt", f->name);
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta_k = gpt_xcalloc(n, sizeof *f->meta_k);
    f->meta_v = gpt_xcalloc(n, sizeof *f->meta_v);
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->string)
            return gpt_errf(err, "%s: __metadata__ key '%s': value is not a string (the format allows only "
                            "string values)", f->name, qname(q, e->string ? e->string : ""));
        for (size_t i = 0; i < f->nmeta; i++)
            if (strcmp(f->meta_k[i], e->string) == 0)
                return gpt_errf(err, "%s: __metadata__ key '%s' appears twice", f->name, qname(q, e->string));
        f->meta_k[f->nmeta] = gpt_xstrdup(e->string);
        f->meta_v[f->nmeta] = gpt_xstrdup(e->valuestring);
        f->nmeta++;
    }
    return 0;
}

static int parse_tensor(gpt_st_file *f, const cJSON *e, gpt_st_tensor *t, gpt_err *err)
{
    char q[160];
    const char *nm = qname(q, e->string);
    if (!e->string[0]) return gpt_errf(err, "%s: a tensor has an empty name", f->name);
    if (!cJSON_IsObject(e)) return gpt_errf(err, "%s: tensor '%s': entry is not a JSON object", f->name, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return gpt_errf(err, "%s: tensor '%s': missing or non-string \"dtype\"", f->name, nm);
    if (gpt_st_dtype_parse(dt->valuestring, &t->dtype) != 0) {
        char q2[160];
        return gpt_errf(err, "%s: tensor '%s': unsupported dtype '%s' (supported: F64 F32 F16 BF16 I64 I32 I16 "
                        "I8 U8 BOOL F8_E4M3 F8_E5M2)", f->name, nm, qname(q2, dt->valuestring));
    }
    if (!cJSON_IsArray(sh)) return gpt_errf(err, "%s: tensor '%s': missing or non-array \"shape\"", f->name, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > GPT_ST_MAX_DIMS)
        return gpt_errf(err, "%s: tensor '%s': %d dimensions, at most %d are supported", f->name, nm, nd,
                        GPT_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0, overflow = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        if (json_u64(d, &t->shape[i]) != 0)
            return gpt_errf(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", f->name, nm, i);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel)) overflow = 1;
    }
    /* A zero dimension makes the tensor empty even when another dimension is absurd. */
    for (i = 0; i < nd; i++)
        if (t->shape[i] == 0) numel = 0, overflow = 0;
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)gpt_st_dtype_size(t->dtype), &nbytes) ||
        nbytes > SIZE_MAX)
        return gpt_errf(err, "%s: tensor '%s': shape is too large (its byte size overflows)", f->name, nm);
    t->numel = numel;
    t->nbytes = (size_t)nbytes;
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_u64(off->child, &b) != 0 ||
        json_u64(off->child->next, &en) != 0)
        return gpt_errf(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] non-negative integers",
                        f->name, nm);
    if (b > en || en > f->data_size)
        return gpt_errf(err, "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the %zu-byte data section "
                        "(file truncated or corrupt)", f->name, nm, (unsigned long long)b, (unsigned long long)en,
                        f->data_size);
    if (en - b != nbytes) {
        char dims[200];
        size_t o = 0;
        dims[0] = '\0';
        for (i = 0; i < nd && o < sizeof dims - 24; i++)
            o += (size_t)snprintf(dims + o, sizeof dims - o, "%s%llu", i ? "," : "", (unsigned long long)t->shape[i]);
        return gpt_errf(err, "%s: tensor '%s': data_offsets span %llu bytes but shape [%s] of %s needs %llu",
                        f->name, nm, (unsigned long long)(en - b), dims, gpt_st_dtype_name(t->dtype),
                        (unsigned long long)nbytes);
    }
    t->offset = (size_t)b;
    t->data = f->base + f->data_start + b;
    t->file = f;
    return 0;
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const gpt_st_tensor *x = *(const gpt_st_tensor *const *)a, *y = *(const gpt_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int check_layout(gpt_st_file *f, gpt_err *err)
{
    char q1[160], q2[160];
    if (f->nt == 0) {
        if (f->data_size) return gpt_errf(err, "%s: no tensors but %zu bytes of data", f->name, f->data_size);
        return 0;
    }
    const gpt_st_tensor **v = gpt_xmalloc(f->nt * sizeof *v);
    for (size_t i = 0; i < f->nt; i++) v[i] = &f->t[i];
    qsort(v, f->nt, sizeof *v, cmp_tensor_offset);
    size_t expect = 0;
    int rc = 0;
    for (size_t i = 0; i < f->nt && rc == 0; i++) {
        if (v[i]->offset < expect)
            rc = gpt_errf(err, "%s: tensor '%s' (bytes %zu..%zu) overlaps tensor '%s' (ends at %zu); the file is "
                          "corrupt", f->name, qname(q1, v[i]->name), v[i]->offset, v[i]->offset + v[i]->nbytes,
                          qname(q2, v[i - 1]->name), expect);
        else if (v[i]->offset > expect)
            rc = gpt_errf(err, "%s: data bytes %zu..%zu before tensor '%s' belong to no tensor (the format "
                          "requires tensors to cover the data section); the file is corrupt", f->name, expect,
                          v[i]->offset, qname(q1, v[i]->name));
        expect = v[i]->offset + v[i]->nbytes;
    }
    if (rc == 0 && expect != f->data_size)
        rc = gpt_errf(err, "%s: %zu bytes after the last tensor '%s' belong to no tensor; the file is corrupt",
                      f->name, f->data_size - expect, qname(q1, v[f->nt - 1]->name));
    free(v);
    return rc;
}

static int parse_header(gpt_st_file *f, gpt_err *err)
{
    if (f->size < 8)
        return gpt_errf(err, "%s: %zu bytes, too short for a safetensors file (8-byte header length + JSON)",
                        f->name, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->base[i];
    if (n > GPT_ST_MAX_HEADER)
        return gpt_errf(err, "%s: header length %llu exceeds the %u-byte limit; not a safetensors file?", f->name,
                        (unsigned long long)n, GPT_ST_MAX_HEADER);
    if (n > f->size - 8)
        return gpt_errf(err, "%s: header length %llu exceeds the file (%zu bytes); truncated or not a "
                        "safetensors file", f->name, (unsigned long long)n, f->size);
    if (n < 2 || f->base[8] != '{')
        return gpt_errf(err, "%s: header does not start with '{'; not a safetensors file", f->name);
    const unsigned char *h = f->base + 8;
    size_t bad = 0;
    if (memchr(h, 0, n)) return gpt_errf(err, "%s: header contains a NUL byte; the file is corrupt", f->name);
    if (!utf8_valid(h, n, &bad))
        return gpt_errf(err, "%s: header is not valid UTF-8 at byte %zu", f->name, (size_t)(8 + bad));
    f->data_start = 8 + (size_t)n;
    f->data_size = f->size - f->data_start;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= (const char *)h ? (size_t)(end - (const char *)h) : 0;
        return gpt_errf(err, "%s: header is not valid JSON (error near header byte %zu)", f->name, at);
    }
    int rc = 0;
    for (const char *p = end; p < (const char *)h + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = gpt_errf(err, "%s: header has trailing bytes after the JSON object (byte %zu)", f->name,
                          (size_t)(8 + (p - (const char *)h)));
            break;
        }
    if (rc == 0 && !cJSON_IsObject(root)) rc = gpt_errf(err, "%s: header is not a JSON object", f->name);
    if (rc == 0) {
        size_t cnt = (size_t)cJSON_GetArraySize(root);
        f->t = gpt_xcalloc(cnt, sizeof *f->t);
        int seen_meta = 0;
        for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
            if (strcmp(e->string, "__metadata__") == 0) {
                if (seen_meta++) rc = gpt_errf(err, "%s: __metadata__ appears twice", f->name);
                else rc = parse_metadata(f, e, err);
                continue;
            }
            gpt_st_tensor *t = &f->t[f->nt];
            rc = parse_tensor(f, e, t, err);
            t->name = gpt_xstrdup(e->string);
            f->nt++;
        }
    }
    cJSON_Delete(root);
    if (rc != 0) return rc;
    f->sorted = gpt_xmalloc((f->nt ? f->nt : 1) * sizeof *f->sorted);
    for (size_t i = 0; i < f->nt; i++) f->sorted[i] = &f->t[i];
    qsort(f->sorted, f->nt, sizeof *f->sorted, cmp_tensor_name);
    for (size_t i = 1; i < f->nt; i++)
        if (strcmp(f->sorted[i - 1]->name, f->sorted[i]->name) == 0) {
            char q[160];
            return gpt_errf(err, "%s: tensor '%s' appears twice in the header", f->name, qname(q, f->sorted[i]->name));
        }
    return check_layout(f, err);
}

gpt_st_file *gpt_st_open_mem(const void *data, size_t n, const char *name, gpt_err *err)
{
    gpt_st_file *f = gpt_xcalloc(1, sizeof *f);
    f->name = gpt_xstrdup(name ? name : "(memory)");
    f->base = data;
    f->size = data ? n : 0;
    if (parse_header(f, err) != 0) {
        gpt_st_close(f);
        return NULL;
    }
    return f;
}

gpt_st_file *gpt_st_open(const char *path, gpt_err *err)
{
    gpt_blob b;
    if (gpt_blob_read(&b, path, err) != 0) return NULL;
    gpt_st_file *f = gpt_xcalloc(1, sizeof *f);
    f->name = gpt_xstrdup(path);
    f->blob = b;
    f->owns_blob = 1;
    f->base = b.data;
    f->size = b.size;
    if (parse_header(f, err) != 0) {
        gpt_st_close(f);
        return NULL;
    }
    return f;
}

void gpt_st_release(const gpt_st_tensor *t)
{
    const gpt_st_file *f = t->file;
    if (!f || !f->owns_blob || !f->blob.mapped || t->nbytes == 0) return;
    /* only a read-only file mapping: MADV_DONTNEED on anonymous memory would zero it */
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)t->data & ~(pg - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes + pg - 1) & ~(pg - 1);
    uintptr_t base = (uintptr_t)f->blob.data & ~(pg - 1);
    if (lo < base) lo = base;
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

int gpt_st_read_f32(const gpt_st_tensor *t, float *out, size_t n, gpt_err *err)
{
    char q[160];
    if (n != t->numel)
        return gpt_errf(err, "%s: tensor '%s': caller expects %zu values, the tensor has %llu", t->file->name,
                        qname(q, t->name), n, (unsigned long long)t->numel);
    if (gpt_st_to_f32(t->dtype, t->data, n, out) < 0)
        return gpt_errf(err, "%s: tensor '%s': dtype %s cannot be read as float32 (expected F32, F16, BF16 or F64)",
                        t->file->name, qname(q, t->name), gpt_st_dtype_name(t->dtype));
    return 0;
}

int gpt_st_to_f32(gpt_st_dtype dtype, const void *data, size_t n, float *out)
{
    const unsigned char *p = data;
    switch (dtype) {
    case GPT_ST_F32:
        if (n) memcpy(out, p, n * 4);
        return 0;
    case GPT_ST_F16:
        for (size_t i = 0; i < n; i++) out[i] = gpt_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case GPT_ST_BF16:
        for (size_t i = 0; i < n; i++) out[i] = gpt_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case GPT_ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return -1;
    }
}

/* ---- sharded sets ---- */

struct gpt_st_set {
    gpt_st_file **files;
    size_t nfiles;
    const gpt_st_tensor **all; /* sorted by name */
    size_t n;
};

void gpt_st_set_close(gpt_st_set *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nfiles; i++) gpt_st_close(s->files[i]);
    free(s->files);
    free(s->all);
    free(s);
}

const gpt_st_tensor *gpt_st_set_find(const gpt_st_set *s, const char *name)
{
    return s && name ? find_sorted(s->all, s->n, name) : NULL;
}

size_t gpt_st_set_count(const gpt_st_set *s)
{
    return s->n;
}

const gpt_st_tensor *gpt_st_set_tensor_at(const gpt_st_set *s, size_t i)
{
    return i < s->n ? s->all[i] : NULL;
}

size_t gpt_st_set_nfiles(const gpt_st_set *s)
{
    return s->nfiles;
}

const gpt_st_file *gpt_st_set_file_at(const gpt_st_set *s, size_t i)
{
    return i < s->nfiles ? s->files[i] : NULL;
}

static int set_index(gpt_st_set *s, const char *what, gpt_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < s->nfiles; i++) total += s->files[i]->nt;
    s->all = gpt_xmalloc((total ? total : 1) * sizeof *s->all);
    for (size_t i = 0; i < s->nfiles; i++)
        for (size_t k = 0; k < s->files[i]->nt; k++) s->all[s->n++] = &s->files[i]->t[k];
    qsort(s->all, s->n, sizeof *s->all, cmp_tensor_name);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->all[i - 1]->name, s->all[i]->name) == 0) {
            char q[160];
            return gpt_errf(err, "%s: tensor '%s' is in two shards, %s and %s; the checkpoint is inconsistent", what,
                            qname(q, s->all[i]->name), s->all[i - 1]->file->name, s->all[i]->file->name);
        }
    return 0;
}

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = gpt_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_index(gpt_st_set *s, const char *ipath, gpt_err *err)
{
    char q[160], q2[160];
    gpt_blob b;
    if (gpt_blob_read(&b, ipath, err) != 0) return -1;
    int rc = 0;
    cJSON *root = NULL;
    const char **shards = NULL;
    size_t nsh = 0;
    if (b.size > GPT_ST_MAX_HEADER) {
        rc = gpt_errf(err, "%s: %zu bytes, too large for an index", ipath, b.size);
        goto out;
    }
    root = cJSON_ParseWithLength((const char *)b.data, b.size);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root) {
        rc = gpt_errf(err, "%s: not valid JSON (a model.safetensors.index.json is expected)", ipath);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = gpt_errf(err, "%s: not a JSON object (a model.safetensors.index.json is expected)", ipath);
        goto out;
    }
    if (!cJSON_IsObject(wm) || !wm->child) {
        rc = gpt_errf(err, "%s: missing or empty \"weight_map\" object", ipath);
        goto out;
    }
    size_t nmap = (size_t)cJSON_GetArraySize(wm);
    shards = gpt_xcalloc(nmap, sizeof *shards);
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!e->string[0]) {
            rc = gpt_errf(err, "%s: weight_map has an empty tensor name", ipath);
            goto out;
        }
        if (!cJSON_IsString(e)) {
            rc = gpt_errf(err, "%s: weight_map entry '%s' is not a string (a shard file name is expected)", ipath,
                          qname(q, e->string));
            goto out;
        }
        const char *sh = e->valuestring;
        if (!sh[0] || strchr(sh, '/') || strchr(sh, '\\') || strstr(sh, "..")) {
            rc = gpt_errf(err, "%s: weight_map entry '%s' names shard '%s'; shard names must be plain file names "
                          "in the index's directory (no '/', '\\' or '..')", ipath, qname(q, e->string),
                          qname(q2, sh));
            goto out;
        }
        shards[nsh++] = e->string;
    }
    /* Tensor names first (duplicates), then the same array is reused for the distinct shard names. */
    qsort(shards, nsh, sizeof *shards, cmp_cstr);
    for (size_t i = 1; i < nsh; i++)
        if (strcmp(shards[i - 1], shards[i]) == 0) {
            rc = gpt_errf(err, "%s: weight_map lists tensor '%s' twice", ipath, qname(q, shards[i]));
            goto out;
        }
    nsh = 0;
    for (const cJSON *e = wm->child; e; e = e->next) shards[nsh++] = e->valuestring;
    qsort(shards, nsh, sizeof *shards, cmp_cstr);
    size_t u = 0;
    for (size_t i = 0; i < nsh; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    nsh = u;
    char *dcopy = gpt_xstrdup(ipath);
    char *slash = strrchr(dcopy, '/');
    const char *dir = ".";
    if (slash) {
        *slash = '\0';
        dir = slash == dcopy ? "/" : dcopy;
    }
    s->files = gpt_xcalloc(nsh, sizeof *s->files);
    for (size_t i = 0; i < nsh && rc == 0; i++) {
        char *p = path_join(dir, shards[i]);
        s->files[i] = gpt_st_open(p, err);
        if (!s->files[i]) rc = gpt_err_prefix(err, "%s: shard %s", ipath, shards[i]);
        else s->nfiles++;
        free(p);
    }
    free(dcopy);
    if (rc != 0) goto out;
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        const gpt_st_file *f = NULL;
        for (size_t i = 0; i < nsh && !f; i++)
            if (strcmp(shards[i], e->valuestring) == 0) f = s->files[i];
        if (!gpt_st_find(f, e->string))
            rc = gpt_errf(err, "%s: tensor '%s' is mapped to %s but that shard does not contain it", ipath,
                          qname(q, e->string), f ? f->name : e->valuestring);
    }
    if (rc == 0) rc = set_index(s, ipath, err);
out:
    free(shards);
    cJSON_Delete(root);
    gpt_blob_free(&b);
    return rc;
}

gpt_st_set *gpt_st_open_dir(const char *path, gpt_err *err)
{
    struct stat st;
    if (strcmp(path, "-") != 0 && stat(path, &st) != 0) {
        gpt_errf(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    gpt_st_set *s = gpt_xcalloc(1, sizeof *s);
    int rc;
    char *p = NULL;
    if (strcmp(path, "-") != 0 && S_ISDIR(st.st_mode)) {
        p = path_join(path, "model.safetensors");
        if (!is_regular(p)) {
            free(p);
            p = path_join(path, "model.safetensors.index.json");
            if (!is_regular(p)) {
                free(p);
                gpt_errf(err, "%s: directory has neither model.safetensors nor model.safetensors.index.json", path);
                free(s);
                return NULL;
            }
        }
    } else {
        p = gpt_xstrdup(path);
    }
    if (ends_with(p, ".index.json")) {
        rc = open_index(s, p, err);
    } else {
        s->files = gpt_xcalloc(1, sizeof *s->files);
        s->files[0] = gpt_st_open(p, err);
        rc = s->files[0] ? 0 : -1;
        if (rc == 0) {
            s->nfiles = 1;
            rc = set_index(s, p, err);
        }
    }
    free(p);
    if (rc != 0) {
        gpt_st_set_close(s);
        return NULL;
    }
    return s;
}

/* ---- writer ---- */

typedef struct st_entry {
    char *name;
    gpt_st_dtype dtype;
    int ndim;
    uint64_t shape[GPT_ST_MAX_DIMS];
    size_t nbytes, offset, written;
    const void *data;
} st_entry;

struct gpt_st_writer {
    gpt_out out;
    st_entry *e;
    size_t n, cap;
    char **meta_k, **meta_v;
    size_t nmeta;
    int header_done;
    size_t data_start;
};

gpt_st_writer *gpt_st_writer_open(const char *path, gpt_err *err)
{
    if (strcmp(path, "-") == 0) {
        gpt_errf(err, "safetensors output must be a file, not stdout (the writer seeks)");
        return NULL;
    }
    gpt_st_writer *w = gpt_xcalloc(1, sizeof *w);
    if (gpt_out_open(&w->out, path, err) != 0) {
        free(w);
        return NULL;
    }
    return w;
}

static void writer_free(gpt_st_writer *w)
{
    for (size_t i = 0; i < w->n; i++) free(w->e[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->meta_k[i]);
        free(w->meta_v[i]);
    }
    free(w->e);
    free(w->meta_k);
    free(w->meta_v);
    free(w);
}

void gpt_st_writer_abort(gpt_st_writer *w)
{
    if (!w) return;
    gpt_out_abort(&w->out);
    writer_free(w);
}

int gpt_st_writer_meta(gpt_st_writer *w, const char *key, const char *value, gpt_err *err)
{
    char q[160];
    if (w->header_done) return gpt_errf(err, "%s: metadata '%s' added after writing started", w->out.path, qname(q, key));
    if (!utf8_valid((const unsigned char *)key, strlen(key), NULL) ||
        !utf8_valid((const unsigned char *)value, strlen(value), NULL))
        return gpt_errf(err, "%s: metadata '%s': key and value must be valid UTF-8", w->out.path, qname(q, key));
    for (size_t i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta_k[i], key) == 0)
            return gpt_errf(err, "%s: metadata key '%s' given twice", w->out.path, qname(q, key));
    w->meta_k = gpt_xrealloc(w->meta_k, (w->nmeta + 1) * sizeof *w->meta_k);
    w->meta_v = gpt_xrealloc(w->meta_v, (w->nmeta + 1) * sizeof *w->meta_v);
    w->meta_k[w->nmeta] = gpt_xstrdup(key);
    w->meta_v[w->nmeta] = gpt_xstrdup(value);
    w->nmeta++;
    return 0;
}

int gpt_st_writer_add(gpt_st_writer *w, const char *name, gpt_st_dtype dtype, int ndim, const uint64_t *shape,
                      const void *data, gpt_err *err)
{
    char q[160];
    const char *path = w->out.path;
    if (!name || !name[0]) return gpt_errf(err, "%s: tensor name is empty", path);
    if (w->header_done)
        return gpt_errf(err, "%s: tensor '%s' declared after writing started; declare every tensor first", path,
                        qname(q, name));
    if (!utf8_valid((const unsigned char *)name, strlen(name), NULL) || strcmp(name, "__metadata__") == 0)
        return gpt_errf(err, "%s: tensor name '%s' is not valid UTF-8 or is reserved", path, qname(q, name));
    if ((unsigned)dtype >= GPT_ST_NDTYPES) return gpt_errf(err, "%s: tensor '%s': invalid dtype", path, qname(q, name));
    if (ndim < 0 || ndim > GPT_ST_MAX_DIMS)
        return gpt_errf(err, "%s: tensor '%s': %d dimensions (0..%d supported)", path, qname(q, name), ndim,
                        GPT_ST_MAX_DIMS);
    uint64_t nb = gpt_st_dtype_size(dtype);
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(nb, shape[i], &nb) || nb > (uint64_t)1 << 60)
            return gpt_errf(err, "%s: tensor '%s': shape too large", path, qname(q, name));
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0) return gpt_errf(err, "%s: tensor '%s' declared twice", path, qname(q, name));
    if (w->n == w->cap) w->e = gpt_xrealloc(w->e, (w->cap = w->cap ? 2 * w->cap : 16) * sizeof *w->e);
    st_entry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = gpt_xstrdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = (size_t)nb;
    e->data = data;
    return 0;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 1024;
        b->p = gpt_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\', tmp[1] = (char)c;
            sb_put(b, tmp, 2);
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            sb_put(b, tmp, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int writer_header(gpt_st_writer *w, gpt_err *err)
{
    if (w->header_done) return 0;
    w->header_done = 1;
    /* Largest elements first keeps every tensor aligned to its element size (the data section starts at a
     * multiple of 8); stable so equal sizes keep declaration order. */
    size_t off = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (size_t i = 0; i < w->n; i++)
            if (gpt_st_dtype_size(w->e[i].dtype) == sz) {
                w->e[i].offset = off;
                off += w->e[i].nbytes;
            }
    sbuf b = {0};
    char num[64];
    sb_str(&b, "{");
    int first = 1;
    if (w->nmeta) {
        sb_str(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i) sb_str(&b, ",");
            sb_json_string(&b, w->meta_k[i]);
            sb_str(&b, ":");
            sb_json_string(&b, w->meta_v[i]);
        }
        sb_str(&b, "}");
        first = 0;
    }
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (size_t i = 0; i < w->n; i++) {
            const st_entry *e = &w->e[i];
            if (gpt_st_dtype_size(e->dtype) != sz) continue;
            if (!first) sb_str(&b, ",");
            first = 0;
            sb_json_string(&b, e->name);
            sb_str(&b, ":{\"dtype\":\"");
            sb_str(&b, gpt_st_dtype_name(e->dtype));
            sb_str(&b, "\",\"shape\":[");
            for (int k = 0; k < e->ndim; k++) {
                snprintf(num, sizeof num, "%s%llu", k ? "," : "", (unsigned long long)e->shape[k]);
                sb_str(&b, num);
            }
            snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", e->offset, e->offset + e->nbytes);
            sb_str(&b, num);
        }
    sb_str(&b, "}");
    while (b.n % 8) sb_str(&b, " ");
    int rc = 0;
    if (b.n > GPT_ST_MAX_HEADER) {
        rc = gpt_errf(err, "%s: header of %zu bytes exceeds the format's %u-byte limit; use more shards",
                      w->out.path, b.n, GPT_ST_MAX_HEADER);
    } else {
        unsigned char len[8];
        for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)b.n >> (8 * i));
        if (fwrite(len, 1, 8, w->out.f) != 8 || fwrite(b.p, 1, b.n, w->out.f) != b.n)
            rc = gpt_errf(err, "%s: write error: %s", w->out.tmp, strerror(errno));
    }
    w->data_start = 8 + b.n;
    free(b.p);
    return rc;
}

static int writer_put(gpt_st_writer *w, st_entry *e, const void *bytes, size_t n, gpt_err *err)
{
    if (n == 0) return 0;
    if (fseeko(w->out.f, (off_t)(w->data_start + e->offset + e->written), SEEK_SET) != 0 ||
        fwrite(bytes, 1, n, w->out.f) != n) {
        char q[160];
        return gpt_errf(err, "%s: tensor '%s': write error: %s", w->out.tmp, qname(q, e->name), strerror(errno));
    }
    e->written += n;
    return 0;
}

int gpt_st_writer_write(gpt_st_writer *w, const char *name, const void *bytes, size_t n, gpt_err *err)
{
    char q[160];
    st_entry *e = NULL;
    for (size_t i = 0; i < w->n && !e; i++)
        if (strcmp(w->e[i].name, name) == 0) e = &w->e[i];
    if (!e) return gpt_errf(err, "%s: tensor '%s' was not declared", w->out.path, qname(q, name));
    if (e->data)
        return gpt_errf(err, "%s: tensor '%s' was declared with its data; it is written at close", w->out.path,
                        qname(q, name));
    if (n > e->nbytes - e->written)
        return gpt_errf(err, "%s: tensor '%s': %zu more bytes would exceed its size %zu (%zu written)", w->out.path,
                        qname(q, name), n, e->nbytes, e->written);
    if (writer_header(w, err) != 0) return -1;
    return writer_put(w, e, bytes, n, err);
}

int gpt_st_writer_close(gpt_st_writer *w, gpt_err *err)
{
    char q[160];
    int rc = writer_header(w, err);
    for (size_t i = 0; i < w->n && rc == 0; i++) {
        st_entry *e = &w->e[i];
        if (e->data)
            rc = writer_put(w, e, e->data, e->nbytes, err);
        else if (e->written != e->nbytes)
            rc = gpt_errf(err, "%s: tensor '%s': %zu of %zu bytes were written; nothing was saved", w->out.path,
                          qname(q, e->name), e->written, e->nbytes);
    }
    if (rc == 0) {
        rc = gpt_out_commit(&w->out, err);
        writer_free(w);
        return rc;
    }
    gpt_st_writer_abort(w);
    return -1;
}
