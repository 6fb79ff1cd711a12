#include "yaml_doc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* Config files are small; these bound the work a hostile input can cause. */
#define YDOC_MAX_BYTES (16u << 20)
#define YDOC_MAX_DEPTH GPT_YDOC_MAX_DEPTH

gpt_ynode *gpt_ynode_new(gpt_ykind kind, const char *src, int line)
{
    gpt_ynode *n = gpt_xcalloc(1, sizeof *n);
    n->kind = kind;
    n->src = src;
    n->line = line;
    return n;
}

static gpt_ynode *scalar_n(const char *text, size_t len, int quoted, const char *src, int line)
{
    gpt_ynode *n = gpt_ynode_new(GPT_YSCALAR, src, line);
    n->text = gpt_xmalloc(len + 1);
    memcpy(n->text, text, len);
    n->text[len] = '\0';
    n->len = len;
    n->quoted = quoted;
    return n;
}

gpt_ynode *gpt_yscalar_new(const char *text, int quoted, const char *src, int line)
{
    return scalar_n(text, strlen(text), quoted, src, line);
}

void gpt_ynode_free(gpt_ynode *node)
{
    if (!node) return;
    for (size_t i = 0; i < node->n; i++) {
        if (node->keys) free(node->keys[i]);
        gpt_ynode_free(node->items[i]);
    }
    free(node->keys);
    free(node->key_lines);
    free(node->items);
    free(node->text);
    free(node);
}

static void grow(gpt_ynode *node)
{
    if (node->n < node->cap) return;
    node->cap = node->cap ? node->cap * 2 : 8;
    node->items = gpt_xrealloc(node->items, node->cap * sizeof *node->items);
    if (node->kind == GPT_YMAP) {
        node->keys = gpt_xrealloc(node->keys, node->cap * sizeof *node->keys);
        node->key_lines = gpt_xrealloc(node->key_lines, node->cap * sizeof *node->key_lines);
    }
}

static long map_index(const gpt_ynode *map, const char *key)
{
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0) return (long)i;
    return -1;
}

void gpt_ymap_put(gpt_ynode *map, const char *key, int key_line, gpt_ynode *val)
{
    long i = map_index(map, key);
    if (i >= 0) {
        gpt_ynode_free(map->items[i]);
        map->items[i] = val;
        map->key_lines[i] = key_line;
        return;
    }
    grow(map);
    map->keys[map->n] = gpt_xstrdup(key);
    map->key_lines[map->n] = key_line;
    map->items[map->n++] = val;
}

void gpt_ymap_del(gpt_ynode *map, const char *key)
{
    long i = map_index(map, key);
    if (i < 0) return;
    free(map->keys[i]);
    gpt_ynode_free(map->items[i]);
    size_t rest = map->n - (size_t)i - 1;
    memmove(map->keys + i, map->keys + i + 1, rest * sizeof *map->keys);
    memmove(map->key_lines + i, map->key_lines + i + 1, rest * sizeof *map->key_lines);
    memmove(map->items + i, map->items + i + 1, rest * sizeof *map->items);
    map->n--;
}

void gpt_yseq_push(gpt_ynode *seq, gpt_ynode *val)
{
    grow(seq);
    seq->items[seq->n++] = val;
}

gpt_ynode *gpt_ynode_clone(const gpt_ynode *node)
{
    if (!node) return NULL;
    gpt_ynode *c = gpt_ynode_new(node->kind, node->src, node->line);
    if (node->kind == GPT_YSCALAR) {
        c->text = gpt_xmalloc(node->len + 1);
        memcpy(c->text, node->text, node->len + 1);
        c->len = node->len;
        c->quoted = node->quoted;
    }
    for (size_t i = 0; i < node->n; i++) {
        if (node->kind == GPT_YMAP)
            gpt_ymap_put(c, node->keys[i], node->key_lines[i], gpt_ynode_clone(node->items[i]));
        else
            gpt_yseq_push(c, gpt_ynode_clone(node->items[i]));
    }
    return c;
}

int gpt_ynode_depth(const gpt_ynode *node)
{
    if (!node || node->kind == GPT_YSCALAR) return 0;
    int d = 0;
    for (size_t i = 0; i < node->n; i++) {
        int c = gpt_ynode_depth(node->items[i]);
        if (c > d) d = c;
    }
    return d + 1;
}

void gpt_ynode_relabel(gpt_ynode *node, const char *src, int line)
{
    if (!node) return;
    node->src = src;
    node->line = line;
    for (size_t i = 0; i < node->n; i++) {
        if (node->key_lines) node->key_lines[i] = line;
        gpt_ynode_relabel(node->items[i], src, line);
    }
}

int gpt_ynode_is_null(const gpt_ynode *node)
{
    return node && node->kind == GPT_YSCALAR && !node->quoted &&
           (node->len == 0 || strcmp(node->text, "~") == 0 || strcmp(node->text, "null") == 0 ||
            strcmp(node->text, "Null") == 0 || strcmp(node->text, "NULL") == 0);
}

gpt_ynode *gpt_ymap_get(const gpt_ynode *map, const char *key, int *line)
{
    if (!map || map->kind != GPT_YMAP) return NULL;
    long i = map_index(map, key);
    if (i < 0) return NULL;
    if (line) *line = map->key_lines[i];
    return map->items[i];
}

const gpt_ynode *gpt_ylookup(const gpt_ynode *root, const char *dotted)
{
    const gpt_ynode *n = root;
    char part[256];
    const char *p = dotted;
    while (n && *p) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        if (l == 0 || l >= sizeof part) return NULL;
        memcpy(part, p, l);
        part[l] = '\0';
        n = gpt_ymap_get(n, part, NULL);
        p += l + (dot != NULL);
        if (dot && !*p) return NULL;
    }
    return n;
}

int gpt_yerrf(gpt_err *err, const gpt_ynode *at, const char *path, const char *fmt, ...)
{
    if (!err) return -1;
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *src = at && at->src ? at->src : "config";
    if (at && at->line > 0)
        return gpt_errf(err, "%s:%d: %s: %s", src, at->line, path, msg);
    return gpt_errf(err, "%s: %s: %s", src, path, msg);
}

/* ---- parsing ---- */

typedef struct frame {
    gpt_ynode *node;
    char path[256]; /* dotted name of this container, for duplicate-key messages */
    char *key;      /* map: key read, value pending */
    int key_line;
} frame;

static int yaml_fail(gpt_err *err, const char *src, const yaml_parser_t *p)
{
    const char *problem = p->problem ? p->problem : "malformed YAML";
    size_t line = p->problem_mark.line + 1;
    if (p->error == YAML_MEMORY_ERROR) return gpt_errf(err, "%s: out of memory parsing YAML", src);
    if (p->context)
        return gpt_errf(err, "%s:%zu: YAML syntax error: %s %s", src, line, problem, p->context);
    return gpt_errf(err, "%s:%zu: YAML syntax error: %s", src, line, problem);
}

/* Attach a finished node to the open container (or make it the root). 0, or -1 on a bad key. */
static int attach(frame *st, int depth, gpt_ynode **root, gpt_ynode *node, int line, const char *src,
                  gpt_err *err)
{
    if (depth == 0) {
        *root = node;
        return 0;
    }
    frame *f = &st[depth - 1];
    if (f->node->kind == GPT_YSEQ) {
        gpt_yseq_push(f->node, node);
        return 0;
    }
    if (!f->key) {
        if (node->kind != GPT_YSCALAR) {
            gpt_ynode_free(node);
            return gpt_errf(err, "%s:%d: mapping keys must be scalars", src, line);
        }
        if (node->len == 0) {
            gpt_ynode_free(node);
            return gpt_errf(err, "%s:%d: empty mapping key", src, line);
        }
        int first = 0;
        if (gpt_ymap_get(f->node, node->text, &first)) {
            int r = gpt_errf(err, "%s:%d: %s%s%s: duplicate key (first given on line %d)", src, line, f->path,
                             *f->path ? "." : "", node->text, first);
            gpt_ynode_free(node);
            return r;
        }
        f->key = node->text;
        f->key_line = line;
        node->text = NULL;
        gpt_ynode_free(node);
        return 0;
    }
    gpt_ymap_put(f->node, f->key, f->key_line, node);
    free(f->key);
    f->key = NULL;
    return 0;
}

gpt_ynode *gpt_yparse(const char *data, size_t len, const char *src, gpt_err *err)
{
    if (len > YDOC_MAX_BYTES) {
        gpt_errf(err, "%s: %zu bytes is too large for a config file (limit %u)", src, len, YDOC_MAX_BYTES);
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        gpt_errf(err, "%s: cannot initialise the YAML parser", src);
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)(data ? data : ""), len);

    frame st[YDOC_MAX_DEPTH];
    int depth = 0, docs = 0, done = 0, failed = 0;
    gpt_ynode *root = NULL;
    while (!done && !failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            yaml_fail(err, src, &p);
            failed = 1;
            break;
        }
        int line = (int)(ev.start_mark.line < 0x7fffffff ? ev.start_mark.line + 1 : 0x7fffffff);
        const yaml_char_t *anchor = NULL, *tag = NULL;
        if (ev.type == YAML_SCALAR_EVENT) anchor = ev.data.scalar.anchor, tag = ev.data.scalar.tag;
        if (ev.type == YAML_SEQUENCE_START_EVENT) anchor = ev.data.sequence_start.anchor, tag = ev.data.sequence_start.tag;
        if (ev.type == YAML_MAPPING_START_EVENT) anchor = ev.data.mapping_start.anchor, tag = ev.data.mapping_start.tag;
        if (ev.type == YAML_ALIAS_EVENT || anchor) {
            gpt_errf(err, "%s:%d: YAML anchors and aliases are not supported in config files", src, line);
            failed = 1;
        } else if (tag) {
            gpt_errf(err, "%s:%d: YAML tags (%s) are not supported in config files", src, line, (const char *)tag);
            failed = 1;
        } else {
            switch (ev.type) {
            case YAML_DOCUMENT_START_EVENT:
                if (++docs > 1) {
                    gpt_errf(err, "%s:%d: more than one YAML document; a config file holds exactly one", src, line);
                    failed = 1;
                }
                break;
            case YAML_SCALAR_EVENT: {
                const char *v = (const char *)ev.data.scalar.value;
                size_t vl = ev.data.scalar.length;
                if (memchr(v, '\0', vl)) {
                    gpt_errf(err, "%s:%d: NUL character in a value", src, line);
                    failed = 1;
                    break;
                }
                gpt_ynode *n = scalar_n(v, vl, ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE, src, line);
                if (attach(st, depth, &root, n, line, src, err) < 0) failed = 1;
                break;
            }
            case YAML_SEQUENCE_START_EVENT:
            case YAML_MAPPING_START_EVENT: {
                if (depth == YDOC_MAX_DEPTH) {
                    gpt_errf(err, "%s:%d: nesting deeper than %d levels", src, line, YDOC_MAX_DEPTH);
                    failed = 1;
                    break;
                }
                if (depth > 0 && st[depth - 1].node->kind == GPT_YMAP && !st[depth - 1].key) {
                    gpt_errf(err, "%s:%d: mapping keys must be scalars", src, line);
                    failed = 1;
                    break;
                }
                char path[sizeof st[0].path] = "";
                if (depth > 0) {
                    const frame *up = &st[depth - 1];
                    if (up->node->kind == GPT_YMAP)
                        snprintf(path, sizeof path, "%s%s%s", up->path, *up->path ? "." : "", up->key);
                    else
                        snprintf(path, sizeof path, "%s", up->path);
                }
                memcpy(st[depth].path, path, sizeof path);
                gpt_ynode *n = gpt_ynode_new(ev.type == YAML_MAPPING_START_EVENT ? GPT_YMAP : GPT_YSEQ, src, line);
                /* attached now so that an error later frees it with the rest of the tree */
                if (attach(st, depth, &root, n, line, src, err) < 0) {
                    failed = 1;
                    break;
                }
                st[depth].node = n;
                st[depth].key = NULL;
                st[depth].key_line = 0;
                depth++;
                break;
            }
            case YAML_SEQUENCE_END_EVENT:
            case YAML_MAPPING_END_EVENT:
                if (depth > 0) {
                    depth--;
                    free(st[depth].key);
                    st[depth].key = NULL;
                }
                break;
            case YAML_STREAM_END_EVENT:
                done = 1;
                break;
            default:
                break;
            }
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < depth; i++) free(st[i].key);
    if (failed) {
        gpt_ynode_free(root);
        return NULL;
    }
    if (!root) root = gpt_ynode_new(GPT_YMAP, src, 1);
    return root;
}

/* ---- typed reads ---- */

int gpt_yparse_int(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

int gpt_yparse_float(const char *s, double *out)
{
    if (!*s || isspace((unsigned char)*s)) return -1;
    /* strtod also takes hex floats, "inf" and "nan"; config values are plain decimals */
    for (const char *q = s; *q; q++)
        if (!strchr("0123456789+-.eE", *q)) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static void keypath(char *buf, size_t n, const char *path, const char *key)
{
    if (path && *path)
        snprintf(buf, n, "%s.%s", path, key);
    else
        snprintf(buf, n, "%s", key);
}

/* The scalar at map[key]: 1 found, 0 absent, -1 error (not a scalar / null). */
static int get_scalar(const gpt_ynode *map, const char *path, const char *key, const char *what,
                      const gpt_ynode **out, char *kp, size_t kpn, gpt_err *err)
{
    keypath(kp, kpn, path, key);
    const gpt_ynode *v = gpt_ymap_get(map, key, NULL);
    if (!v) return 0;
    if (v->kind != GPT_YSCALAR)
        return gpt_yerrf(err, v, kp, "expected %s, got a %s", what, v->kind == GPT_YMAP ? "mapping" : "list");
    if (gpt_ynode_is_null(v)) return gpt_yerrf(err, v, kp, "no value given (expected %s)", what);
    *out = v;
    return 1;
}

int gpt_yget_int(const gpt_ynode *map, const char *path, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 gpt_err *err)
{
    char kp[256];
    const gpt_ynode *v;
    int r = get_scalar(map, path, key, "an integer", &v, kp, sizeof kp, err);
    if (r <= 0) return r;
    int64_t x;
    if (gpt_yparse_int(v->text, &x) < 0) return gpt_yerrf(err, v, kp, "expected an integer, got \"%s\"", v->text);
    if (x < lo) return gpt_yerrf(err, v, kp, "must be >= %lld, got %lld", (long long)lo, (long long)x);
    if (x > hi) return gpt_yerrf(err, v, kp, "must be <= %lld, got %lld", (long long)hi, (long long)x);
    *out = x;
    return 1;
}

int gpt_yget_float(const gpt_ynode *map, const char *path, const char *key, double lo, int lo_open, double hi,
                   double *out, gpt_err *err)
{
    char kp[256];
    const gpt_ynode *v;
    int r = get_scalar(map, path, key, "a number", &v, kp, sizeof kp, err);
    if (r <= 0) return r;
    double x;
    if (gpt_yparse_float(v->text, &x) < 0) return gpt_yerrf(err, v, kp, "expected a number, got \"%s\"", v->text);
    if (lo_open ? !(x > lo) : !(x >= lo))
        return gpt_yerrf(err, v, kp, "must be %s %g, got %s", lo_open ? ">" : ">=", lo, v->text);
    if (!(x <= hi)) return gpt_yerrf(err, v, kp, "must be <= %g, got %s", hi, v->text);
    *out = x;
    return 1;
}

int gpt_yget_bool(const gpt_ynode *map, const char *path, const char *key, int *out, gpt_err *err)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    char kp[256];
    const gpt_ynode *v;
    int r = get_scalar(map, path, key, "true or false", &v, kp, sizeof kp, err);
    if (r <= 0) return r;
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(v->text, yes[i]) == 0) return *out = 1, 1;
        if (strcasecmp(v->text, no[i]) == 0) return *out = 0, 1;
    }
    return gpt_yerrf(err, v, kp, "expected true or false (or yes/no, on/off), got \"%s\"", v->text);
}

int gpt_yget_enum(const gpt_ynode *map, const char *path, const char *key, const char *const *names, size_t n,
                  int *out, gpt_err *err)
{
    char kp[256];
    const gpt_ynode *v;
    int r = get_scalar(map, path, key, "a name", &v, kp, sizeof kp, err);
    if (r <= 0) return r;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v->text, names[i]) == 0) return *out = (int)i, 1;
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? (i + 1 == n ? " or " : ", ") : "",
                                 names[i]);
    return gpt_yerrf(err, v, kp, "expected %s, got \"%s\"", list, v->text);
}

int gpt_yget_str(const gpt_ynode *map, const char *path, const char *key, const char **out, gpt_err *err)
{
    char kp[256];
    const gpt_ynode *v;
    int r = get_scalar(map, path, key, "a string", &v, kp, sizeof kp, err);
    if (r <= 0) return r;
    *out = v->text;
    return 1;
}

int gpt_yget_map(const gpt_ynode *map, const char *path, const char *key, const gpt_ynode **out, gpt_err *err)
{
    char kp[256];
    keypath(kp, sizeof kp, path, key);
    const gpt_ynode *v = gpt_ymap_get(map, key, NULL);
    if (!v || gpt_ynode_is_null(v)) return 0;
    if (v->kind != GPT_YMAP)
        return gpt_yerrf(err, v, kp, "expected a mapping (indented keys), got a %s",
                         v->kind == GPT_YSEQ ? "list" : "value");
    *out = v;
    return 1;
}

int gpt_ymap_check_keys(const gpt_ynode *map, const char *path, const char *const *known, gpt_err *err)
{
    if (!map || map->kind != GPT_YMAP) return 0;
    for (size_t i = 0; i < map->n; i++) {
        int found = 0;
        for (const char *const *k = known; *k && !found; k++) found = strcmp(*k, map->keys[i]) == 0;
        if (found) continue;
        char kp[256], list[600] = "";
        keypath(kp, sizeof kp, path, map->keys[i]);
        size_t used = 0;
        for (const char *const *k = known; *k && used < sizeof list; k++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k == known ? "" : ", ", *k);
        gpt_ynode at = {.src = map->items[i]->src, .line = map->key_lines[i]};
        return gpt_yerrf(err, &at, kp, "unknown key (known keys here: %s)", list);
    }
    return 0;
}

/* ---- writing ---- */

static int emit(yaml_emitter_t *em, const gpt_ynode *n)
{
    yaml_event_t ev;
    if (n->kind == GPT_YSCALAR) {
        /* a quoted scalar must not come back plain (a quoted "null" is a string); libyaml picks the
         * quoting, the same way for the same text, so a dump of a dump is identical */
        if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)n->text, (int)n->len, !n->quoted, 1,
                                          YAML_ANY_SCALAR_STYLE))
            return -1;
        return yaml_emitter_emit(em, &ev) ? 0 : -1;
    }
    if (n->kind == GPT_YSEQ) {
        /* lists of scalars read best inline: [0, 2, 4] */
        int flat = 1;
        for (size_t i = 0; i < n->n; i++) flat &= n->items[i]->kind == GPT_YSCALAR;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                                  flat ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(em, &ev))
            return -1;
        for (size_t i = 0; i < n->n; i++)
            if (emit(em, n->items[i]) < 0) return -1;
        if (!yaml_sequence_end_event_initialize(&ev) || !yaml_emitter_emit(em, &ev)) return -1;
        return 0;
    }
    if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
        !yaml_emitter_emit(em, &ev))
        return -1;
    for (size_t i = 0; i < n->n; i++) {
        if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)n->keys[i], (int)strlen(n->keys[i]), 1, 1,
                                          YAML_ANY_SCALAR_STYLE) ||
            !yaml_emitter_emit(em, &ev) || emit(em, n->items[i]) < 0)
            return -1;
    }
    if (!yaml_mapping_end_event_initialize(&ev) || !yaml_emitter_emit(em, &ev)) return -1;
    return 0;
}

int gpt_ynode_write(const gpt_ynode *root, FILE *f, gpt_err *err)
{
    yaml_emitter_t em;
    if (!yaml_emitter_initialize(&em)) return gpt_errf(err, "cannot initialise the YAML emitter");
    yaml_emitter_set_output_file(&em, f);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    yaml_event_t ev;
    int ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) && yaml_emitter_emit(&em, &ev) &&
             yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) && yaml_emitter_emit(&em, &ev) &&
             emit(&em, root) == 0 && yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
             yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) && yaml_emitter_flush(&em);
    const char *problem = em.problem;
    yaml_emitter_delete(&em);
    if (!ok) return gpt_errf(err, "writing YAML: %s", problem ? problem : "emitter failed");
    if (ferror(f)) return gpt_errf(err, "writing YAML: output error");
    return 0;
}
