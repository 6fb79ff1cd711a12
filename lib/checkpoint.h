/* checkpoint.h: the native checkpoint format (gpt-checkpoint(5)).
 *
 * A checkpoint is a directory:
 *   model.yaml      the full config (gpt_config_dump: tokenizer + every model value)
 *   manifest.json   format version, step, tokenizer, dtype, mesh, shard files, and every tensor
 *                   (name, dtype, shape, shard, offset within the shard's data section, length, xxh64)
 *                   and every blob (name, file, length, xxh64)
 *   model.safetensors | model-0000K-of-0000N.safetensors[.zst]   the tensors (zstd: one frame per file)
 *   blobs/NAME      named byte buffers of training state (optimizer shards, RNG, data position, ...)
 * A checkpoint root holds step-NNNNNNNN directories and a `latest` file naming the newest one.
 *
 * Saving never half-writes: everything goes to a hidden temp directory next to the destination, every
 * file and the directory are fsynced, the directory is renamed into place, and only then is `latest`
 * replaced (temp file + fsync + rename). Readers treat manifests and shards as hostile; reading a tensor
 * checks its xxh64 and names the tensor when it does not match. */
#ifndef GPT_CHECKPOINT_H
#define GPT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "model.h"
#include "params.h"
#include "safetensors.h"

#define GPT_CKPT_VERSION 1
#define GPT_CKPT_MAX_TENSORS 1000000
#define GPT_CKPT_NAME_MAX 255

/* The device mesh a checkpoint was saved under and which rank this directory holds
 * (1/1/1 and 0/0/0 for a whole model). */
typedef struct gpt_ckpt_mesh {
    int tp, pp, ep;
    int tp_rank, pp_rank, ep_rank;
} gpt_ckpt_mesh;

typedef struct gpt_ckpt_opts {
    gpt_st_dtype dtype;        /* float parameters: GPT_ST_F32 or GPT_ST_BF16 (0, i.e. a zeroed struct, means F32) */
    int zstd_level;            /* 0: uncompressed; 1..19: .safetensors.zst */
    int keep_last;             /* gpt_ckpt_save: keep this many step directories (0: all) */
    uint64_t max_shard_bytes;  /* start a new shard file past this many data bytes (0: 4 GiB) */
    int use_mesh;              /* write `mesh` below instead of 1x1x1 */
    gpt_ckpt_mesh mesh;
} gpt_ckpt_opts;

/* A named byte buffer of training state. Names: [A-Za-z0-9._-], not starting with '.', <= 255 bytes. */
typedef struct gpt_ckpt_blob {
    const char *name;
    const void *data;
    size_t size;
} gpt_ckpt_blob;

/* ---- writing ---- */

/* Save host parameters (laid out as tab says) and blobs as ROOT/step-NNNNNNNN, then point ROOT/latest
 * at it and prune to opts->keep_last. ROOT is created when missing. */
int gpt_ckpt_save(const char *root, int64_t step, const gpt_model_config *cfg, const gpt_param_table *tab,
                  const float *host, const gpt_ckpt_blob *blobs, size_t nblobs, const gpt_ckpt_opts *opts,
                  gpt_err *err);
/* The same from a model (parameters copied from the backend one tensor at a time). */
int gpt_ckpt_save_model(const char *root, int64_t step, gpt_model *m, const gpt_ckpt_blob *blobs, size_t nblobs,
                        const gpt_ckpt_opts *opts, gpt_err *err);

/* Streaming writer for one checkpoint directory (used by gpt_ckpt_save and gpt-shard):
 *   w = gpt_ckpt_writer_open(dir, cfg, step, opts, err)     dir must not exist
 *   gpt_ckpt_writer_add(w, name, dtype, ndim, shape) ...    declare every tensor
 *   while ((i = gpt_ckpt_writer_next(w)) >= 0)              the writer asks for tensors in file order
 *       gpt_ckpt_writer_put(w, bytes of tensor i, n)        (i = declaration index)
 *   gpt_ckpt_writer_blob(w, name, data, n)                  any time before commit
 *   gpt_ckpt_writer_commit(w, err)                          fsync + rename; frees w
 * Only one tensor is ever held, by the caller. On error or abort the destination does not appear. */
typedef struct gpt_ckpt_writer gpt_ckpt_writer;

gpt_ckpt_writer *gpt_ckpt_writer_open(const char *dir, const gpt_model_config *cfg, int64_t step,
                                      const gpt_ckpt_opts *opts, gpt_err *err);
int gpt_ckpt_writer_add(gpt_ckpt_writer *w, const char *name, gpt_st_dtype dtype, int ndim, const uint64_t *shape,
                        gpt_err *err);
int gpt_ckpt_writer_next(gpt_ckpt_writer *w);
int gpt_ckpt_writer_put(gpt_ckpt_writer *w, const void *bytes, size_t n, gpt_err *err);
int gpt_ckpt_writer_blob(gpt_ckpt_writer *w, const char *name, const void *data, size_t n, gpt_err *err);
/* Copy a file (e.g. split.json) into the checkpoint directory under a plain name. */
int gpt_ckpt_writer_file(gpt_ckpt_writer *w, const char *name, const void *data, size_t n, gpt_err *err);
int gpt_ckpt_writer_commit(gpt_ckpt_writer *w, gpt_err *err);
void gpt_ckpt_writer_abort(gpt_ckpt_writer *w);

/* Keep the newest keep_last step directories of ROOT (never the one `latest` names) and remove temp
 * directories of savers that are no longer running. */
int gpt_ckpt_prune(const char *root, int keep_last, gpt_err *err);

/* ---- reading ---- */

typedef struct gpt_ckpt gpt_ckpt;

typedef struct gpt_ckpt_tensor {
    char *name;
    gpt_st_dtype dtype;
    int ndim;
    uint64_t shape[GPT_ST_MAX_DIMS];
    uint64_t numel, nbytes;
    int shard;                 /* index into the shard list */
    uint64_t offset;           /* within the shard's safetensors data section */
    uint64_t xxh64;
} gpt_ckpt_tensor;

typedef struct gpt_ckpt_blob_info {
    char *name;
    uint64_t size, xxh64;
} gpt_ckpt_blob_info;

/* The directory name ROOT/latest holds (validated as a plain name); -1 when missing or invalid. */
int gpt_ckpt_read_latest(const char *root, char *name, size_t cap, gpt_err *err);
/* path: a checkpoint directory (holding manifest.json) or a root holding `latest`. */
gpt_ckpt *gpt_ckpt_open(const char *path, gpt_err *err);
/* Parse and validate a manifest held in memory (no files are touched; for tests and fuzzing). */
gpt_ckpt *gpt_ckpt_parse_manifest(const char *json, size_t n, const char *name, gpt_err *err);
void gpt_ckpt_close(gpt_ckpt *ck);

const char *gpt_ckpt_dir(const gpt_ckpt *ck);
const gpt_config *gpt_ckpt_config(const gpt_ckpt *ck);
int64_t gpt_ckpt_step(const gpt_ckpt *ck);
gpt_ckpt_mesh gpt_ckpt_mesh_of(const gpt_ckpt *ck);
int gpt_ckpt_zstd_level(const gpt_ckpt *ck);      /* as recorded (0: uncompressed) */
gpt_st_dtype gpt_ckpt_dtype(const gpt_ckpt *ck);  /* the float parameter dtype recorded */
uint64_t gpt_ckpt_max_shard_bytes(const gpt_ckpt *ck);
size_t gpt_ckpt_nshards(const gpt_ckpt *ck);
const char *gpt_ckpt_shard_file(const gpt_ckpt *ck, size_t i);
/* Tensors in manifest (declaration) order. */
size_t gpt_ckpt_count(const gpt_ckpt *ck);
const gpt_ckpt_tensor *gpt_ckpt_tensor_at(const gpt_ckpt *ck, size_t i);
const gpt_ckpt_tensor *gpt_ckpt_find(const gpt_ckpt *ck, const char *name);
size_t gpt_ckpt_blob_count(const gpt_ckpt *ck);
const gpt_ckpt_blob_info *gpt_ckpt_blob_at(const gpt_ckpt *ck, size_t i);

/* Raw bytes of a tensor (buf holds t->nbytes), checksum verified. Reading tensors in file order is
 * sequential even for compressed shards. */
int gpt_ckpt_read(gpt_ckpt *ck, const gpt_ckpt_tensor *t, void *buf, gpt_err *err);
/* The same bytes in order, in chunks of whole elements through buf (cap bytes): fn gets each chunk
 * with its byte offset in the tensor; the checksum is checked after the last chunk (so a consumer
 * must discard what it built when this fails). Resident memory stays at buf, whatever the tensor's
 * size: inference across ranks reads only its piece of each tensor this way. */
int gpt_ckpt_read_stream(gpt_ckpt *ck, const gpt_ckpt_tensor *t, void *buf, size_t cap,
                         int (*fn)(void *ctx, const void *bytes, uint64_t off, size_t n, gpt_err *err), void *ctx,
                         gpt_err *err);
/* A float tensor as f32 (out holds t->numel). */
int gpt_ckpt_read_f32(gpt_ckpt *ck, const gpt_ckpt_tensor *t, float *out, gpt_err *err);
/* One parameter of the table into dst (t->numel floats): the tensor of that name, or an MXFP4 pair
 * NAME_blocks/NAME_scales (dequantized, stored (E, out, in) as gpt-oss does, transposed to ours). */
int gpt_ckpt_read_param(gpt_ckpt *ck, const gpt_tensor *t, float *dst, gpt_err *err);
/* Every parameter of tab into host (tab->total floats). */
int gpt_ckpt_load_params(gpt_ckpt *ck, const gpt_param_table *tab, float *host, gpt_err *err);
/* Into a model made with a config equal to the checkpoint's (checked). */
int gpt_ckpt_load_model(gpt_ckpt *ck, gpt_model *m, gpt_err *err);
/* A blob, malloc'd into *data (free it), checksum verified. */
int gpt_ckpt_read_blob(gpt_ckpt *ck, const char *name, void **data, size_t *n, gpt_err *err);
/* Read every tensor and blob, checking shard headers against the manifest and every checksum.
 * progress (may be NULL) is called after each tensor. */
int gpt_ckpt_verify(gpt_ckpt *ck, void (*progress)(void *ctx, size_t done, size_t total), void *ctx,
                    gpt_err *err);

/* Whether s is acceptable as a file name inside a checkpoint (no '/', '\\', "..", leading '.'). */
int gpt_ckpt_plain_name(const char *s);

#endif
