/* fileio.h: reading whole inputs ("-" = stdin) and writing outputs atomically. */
#ifndef GPT_FILEIO_H
#define GPT_FILEIO_H

#include <stdio.h>
#include <stddef.h>

#include "error.h"

/* A read-only view of a whole file: mmapped when it is a regular file, else read into memory.
 * "-" reads stdin. An empty file gives data == NULL (never dereferenced) and size 0. */
typedef struct gpt_blob {
    unsigned char *data;
    size_t size;
    int mapped;
} gpt_blob;

int gpt_blob_read(gpt_blob *b, const char *path, gpt_err *err);
void gpt_blob_free(gpt_blob *b);

/* Read everything from an open stream into a malloc'd buffer (size in *n). */
int gpt_read_stream(FILE *f, unsigned char **data, size_t *n, const char *name, gpt_err *err);

/* Atomic output: writes go to "PATH.tmp.PID" and gpt_out_commit fsyncs and renames it over PATH;
 * gpt_out_abort removes it. "-" writes stdout directly (commit flushes). */
typedef struct gpt_out {
    FILE *f;
    char *path, *tmp;
} gpt_out;

int gpt_out_open(gpt_out *o, const char *path, gpt_err *err);
int gpt_out_commit(gpt_out *o, gpt_err *err);
void gpt_out_abort(gpt_out *o);

#endif
