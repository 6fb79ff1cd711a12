/* yaml_doc.h: a small YAML tree (libyaml underneath) with line numbers, for config files.
 *
 *   gpt_ynode *root = gpt_yparse(text, len, "tiny.yaml", &err);
 *   const gpt_ynode *train = gpt_ymap_get(root, "train", NULL);
 *   double lr = 3e-4;
 *   if (gpt_yget_float(train, "train", "lr", 0, 1, &lr, &err) < 0) ...
 *
 * Only what config files need: mappings with plain-scalar keys, sequences and scalars. Anchors,
 * aliases, tags and multiple documents are rejected, as are duplicate keys. Every node remembers
 * its source name and line so that errors read "FILE:LINE: KEY: what is wrong". Scalars keep their
 * text; types are decided by whoever reads the key (the gpt_yget_* helpers), not by YAML's rules. */
#ifndef GPT_YAML_DOC_H
#define GPT_YAML_DOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

typedef enum gpt_ykind { GPT_YSCALAR, GPT_YMAP, GPT_YSEQ } gpt_ykind;

typedef struct gpt_ynode gpt_ynode;
struct gpt_ynode {
    gpt_ykind kind;
    int line;             /* 1-based; 0 for nodes that did not come from a file (--set) */
    const char *src;      /* name used in messages; not owned: outlives the tree */
    char *text;           /* scalar: NUL-terminated (embedded NULs are rejected) */
    size_t len;
    int quoted;           /* scalar was written quoted or as a block literal: never null */
    size_t n, cap;        /* map: pairs; seq: items */
    char **keys;          /* map only */
    int *key_lines;       /* map only */
    gpt_ynode **items;    /* map values or sequence items */
};

#define GPT_YDOC_MAX_DEPTH 32

/* Parse one YAML document. An empty document gives an empty mapping. Inputs over 16 MiB, nesting
 * deeper than 32 and the unsupported features above are errors naming src:line. */
gpt_ynode *gpt_yparse(const char *data, size_t len, const char *src, gpt_err *err);
void gpt_ynode_free(gpt_ynode *node);
gpt_ynode *gpt_ynode_clone(const gpt_ynode *node);
/* Levels of mappings/sequences: 0 for a scalar. A tree deeper than GPT_YDOC_MAX_DEPTH would not
 * parse back. */
int gpt_ynode_depth(const gpt_ynode *node);
/* Set src and line on a node and everything under it. */
void gpt_ynode_relabel(gpt_ynode *node, const char *src, int line);

gpt_ynode *gpt_ynode_new(gpt_ykind kind, const char *src, int line);
gpt_ynode *gpt_yscalar_new(const char *text, int quoted, const char *src, int line);
/* Insert or replace (freeing the old value) key in a mapping; takes ownership of val. */
void gpt_ymap_put(gpt_ynode *map, const char *key, int key_line, gpt_ynode *val);
void gpt_yseq_push(gpt_ynode *seq, gpt_ynode *val);
/* Remove key (and free its value) if present. */
void gpt_ymap_del(gpt_ynode *map, const char *key);

/* A plain empty scalar, "~" or "null": a key written with no value. */
int gpt_ynode_is_null(const gpt_ynode *node);
/* Value of key in a mapping (NULL when absent or node is not a mapping); key's line in *line. */
gpt_ynode *gpt_ymap_get(const gpt_ynode *map, const char *key, int *line);
/* Follow a dotted path ("train.lr") through mappings. */
const gpt_ynode *gpt_ylookup(const gpt_ynode *root, const char *dotted);

/* Write "SRC:LINE: PATH: message" (or "SRC: PATH: message" for line 0) into err; returns -1. */
__attribute__((format(printf, 4, 5))) int gpt_yerrf(gpt_err *err, const gpt_ynode *at, const char *path,
                                                    const char *fmt, ...);

/* Typed reads of map[key], for section owners. `path` is the map's dotted name ("model.mlp") used
 * in messages; map may be NULL (then every key is absent). Each returns 1 when the key was present
 * and valid (value stored), 0 when absent (output untouched), -1 with a message naming
 * src:line and path.key when the value is null, of the wrong type or out of range. */
int gpt_yget_int(const gpt_ynode *map, const char *path, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 gpt_err *err);
/* Finite values in [lo, hi]; lo_open excludes lo itself (for "must be > 0"). */
int gpt_yget_float(const gpt_ynode *map, const char *path, const char *key, double lo, int lo_open, double hi,
                   double *out, gpt_err *err);
/* true/false, yes/no, on/off (any case). */
int gpt_yget_bool(const gpt_ynode *map, const char *path, const char *key, int *out, gpt_err *err);
/* One of names[0..n) (exact match); index in *out. */
int gpt_yget_enum(const gpt_ynode *map, const char *path, const char *key, const char *const *names, size_t n,
                  int *out, gpt_err *err);
/* A non-null scalar; *out points into the tree. */
int gpt_yget_str(const gpt_ynode *map, const char *path, const char *key, const char **out, gpt_err *err);
/* A mapping (or null, read as absent); -1 when it is a scalar or sequence. */
int gpt_yget_map(const gpt_ynode *map, const char *path, const char *key, const gpt_ynode **out, gpt_err *err);

/* Every key of map must be in known[] (NULL-terminated); else an error naming the first unknown key. */
int gpt_ymap_check_keys(const gpt_ynode *map, const char *path, const char *const *known, gpt_err *err);

/* Write the tree as a YAML document (block style, via libyaml's emitter). */
int gpt_ynode_write(const gpt_ynode *root, FILE *f, gpt_err *err);

/* Strict number syntax shared with the typed reads: decimal integers, and strtod floats that are
 * finite and consume the whole text. 0 on success. */
int gpt_yparse_int(const char *s, int64_t *out);
int gpt_yparse_float(const char *s, double *out);

#endif
