/* safetensors.h: reading and writing Hugging Face safetensors files.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON (an object mapping tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional "__metadata__" string->string map),
 * then the data section. Offsets are relative to the data section.
 *
 * The reader treats files as hostile and validates them as strictly as the reference implementation
 * (the Rust core of the PyPI `safetensors` package): N <= 100 MB and within the file, UTF-8 JSON object,
 * known dtypes, shapes of non-negative integers whose byte size does not overflow, offsets matching
 * shape * dtype size, tensors neither overlapping nor leaving gaps, and the last tensor ending exactly
 * at the end of the file (anything else means truncation or corruption). Names are non-empty and unique.
 * Every error names the file and, where there is one, the tensor.
 *
 * Tensor data points into the mapped file and may be unaligned when the file was written by someone
 * who did not align it: use gpt_st_read_f32 (or memcpy) rather than casting `data` to a wider type. */
#ifndef GPT_SAFETENSORS_H
#define GPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum gpt_st_dtype {
    GPT_ST_F64,
    GPT_ST_F32,
    GPT_ST_F16,
    GPT_ST_BF16,
    GPT_ST_I64,
    GPT_ST_I32,
    GPT_ST_I16,
    GPT_ST_I8,
    GPT_ST_U8,
    GPT_ST_BOOL,
    GPT_ST_F8_E4M3,
    GPT_ST_F8_E5M2,
    GPT_ST_NDTYPES
} gpt_st_dtype;

#define GPT_ST_MAX_DIMS 8
#define GPT_ST_MAX_HEADER 100000000u /* the reference implementation's limit */

/* "F32", "BF16", ... as spelled in the header; NULL for an out-of-range value. */
const char *gpt_st_dtype_name(gpt_st_dtype d);
/* Bytes per element (0 for an out-of-range value). */
size_t gpt_st_dtype_size(gpt_st_dtype d);
/* Parse a header spelling; -1 when unknown. */
int gpt_st_dtype_parse(const char *s, gpt_st_dtype *out);

typedef struct gpt_st_file gpt_st_file;

typedef struct gpt_st_tensor {
    const char *name;
    gpt_st_dtype dtype;
    int ndim;                        /* 0 for a scalar */
    uint64_t shape[GPT_ST_MAX_DIMS];
    uint64_t numel;                  /* product of shape (1 for a scalar) */
    size_t nbytes;
    size_t offset;                   /* within the data section */
    const unsigned char *data;       /* nbytes bytes inside the file's mapping; valid until close */
    const gpt_st_file *file;         /* the file it lives in (for messages: gpt_st_file_name) */
} gpt_st_tensor;

/* Open and validate a file (mmapped; "-" reads stdin). */
gpt_st_file *gpt_st_open(const char *path, gpt_err *err);
/* Validate a buffer the caller owns and keeps alive until gpt_st_close; `name` is used in messages. */
gpt_st_file *gpt_st_open_mem(const void *data, size_t n, const char *name, gpt_err *err);
void gpt_st_close(gpt_st_file *f);

const char *gpt_st_file_name(const gpt_st_file *f);
/* Tensors in header order. */
size_t gpt_st_count(const gpt_st_file *f);
const gpt_st_tensor *gpt_st_tensor_at(const gpt_st_file *f, size_t i);
/* NULL when absent (not an error in itself: callers decide whether the tensor is required). */
const gpt_st_tensor *gpt_st_find(const gpt_st_file *f, const char *name);

/* __metadata__: value for key or NULL; and iteration in header order. */
const char *gpt_st_meta(const gpt_st_file *f, const char *key);
size_t gpt_st_meta_count(const gpt_st_file *f);
int gpt_st_meta_at(const gpt_st_file *f, size_t i, const char **key, const char **value);

/* Convert a F32/F16/BF16/F64 tensor to float32; n must equal t->numel. F16 and BF16 convert exactly
 * (subnormals, infinities, signed zeros and NaN payloads kept); F64 rounds to nearest. Other dtypes are
 * an error naming the tensor. */
int gpt_st_read_f32(const gpt_st_tensor *t, float *out, size_t n, gpt_err *err);
/* Done with a tensor's bytes for now: when its file is mapped, drop the pages from this process's
 * resident set (they stay in the page cache; touching t->data again reads them back). Streaming
 * readers call it after each tensor so that resident memory stays bounded by one tensor, not the file. */
void gpt_st_release(const gpt_st_tensor *t);

/* n little-endian values of a float dtype (F32, F16, BF16, F64) at data -> float32; -1 for
 * any other dtype. */
int gpt_st_to_f32(gpt_st_dtype dtype, const void *data, size_t n, float *out);
/* Element conversions, exposed for kernels and tests. */
float gpt_f16_to_f32(uint16_t h);
float gpt_bf16_to_f32(uint16_t b);
/* Round to nearest even; NaN stays NaN (quiet). */
uint16_t gpt_f32_to_bf16(float f);

/* A model's weights: one file or a sharded set.
 * gpt_st_open_dir accepts a .safetensors file, a model.safetensors.index.json file, or a directory
 * holding model.safetensors (preferred, as transformers does) or model.safetensors.index.json.
 * For an index: "weight_map" maps tensor -> shard file name in the same directory; shard names must be
 * plain file names (no '/', '\\' or ".."), every mapped tensor must be in the shard it is mapped to, and a
 * tensor present in two shards is an error. Tensors in a shard but missing from weight_map are kept. */
typedef struct gpt_st_set gpt_st_set;

gpt_st_set *gpt_st_open_dir(const char *path_or_dir, gpt_err *err);
void gpt_st_set_close(gpt_st_set *s);
const gpt_st_tensor *gpt_st_set_find(const gpt_st_set *s, const char *name);
/* All tensors, sorted by name. */
size_t gpt_st_set_count(const gpt_st_set *s);
const gpt_st_tensor *gpt_st_set_tensor_at(const gpt_st_set *s, size_t i);
size_t gpt_st_set_nfiles(const gpt_st_set *s);
const gpt_st_file *gpt_st_set_file_at(const gpt_st_set *s, size_t i);

/* Writer, bounded memory, two phases:
 *   1. declare every tensor with gpt_st_writer_add (and metadata with gpt_st_writer_meta). `data` is
 *      either a pointer the caller keeps valid until gpt_st_writer_close (nothing is copied; the bytes are
 *      written at close), or NULL: the bytes are then streamed with gpt_st_writer_write.
 *   2. gpt_st_writer_write(w, name, bytes, n) appends a chunk to a NULL-data tensor; the first call
 *      writes the header. Tensors may be streamed in any order and in chunks of any size (the writer seeks
 *      to each tensor's place), so a caller can produce one tensor at a time (e.g. from a device or a
 *      dtype conversion) without holding the whole set in memory.
 *   gpt_st_writer_close writes what is left, checks every streamed tensor got exactly its size, and
 *   commits atomically (temp file, fsync, rename). On any error, or with gpt_st_writer_abort, the
 *   destination is untouched.
 * The data section lists tensors by element size, largest first (declaration order otherwise), so each
 * tensor is aligned to its element size; the header is padded with spaces to a multiple of 8 as the
 * reference writer does. Names must be non-empty, unique, valid UTF-8; the output must be a regular
 * file (not "-"). */
typedef struct gpt_st_writer gpt_st_writer;

gpt_st_writer *gpt_st_writer_open(const char *path, gpt_err *err);
int gpt_st_writer_meta(gpt_st_writer *w, const char *key, const char *value, gpt_err *err);
int gpt_st_writer_add(gpt_st_writer *w, const char *name, gpt_st_dtype dtype, int ndim,
                      const uint64_t *shape, const void *data, gpt_err *err);
int gpt_st_writer_write(gpt_st_writer *w, const char *name, const void *bytes, size_t n, gpt_err *err);
/* Frees w whatever the outcome. */
int gpt_st_writer_close(gpt_st_writer *w, gpt_err *err);
void gpt_st_writer_abort(gpt_st_writer *w);

#endif
