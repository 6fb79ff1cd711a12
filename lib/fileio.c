#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int gpt_read_stream(FILE *f, unsigned char **data, size_t *n, const char *name, gpt_err *err)
{
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = gpt_xmalloc(cap);
    for (;;) {
        if (len == cap) buf = gpt_xrealloc(buf, cap *= 2);
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return gpt_errf(err, "%s: read error: %s", name, strerror(errno));
    }
    *data = buf;
    *n = len;
    return 0;
}

int gpt_blob_read(gpt_blob *b, const char *path, gpt_err *err)
{
    memset(b, 0, sizeof *b);
    if (strcmp(path, "-") == 0) return gpt_read_stream(stdin, &b->data, &b->size, "stdin", err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return gpt_errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return gpt_errf(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return gpt_errf(err, "%s: is a directory, expected a file", path);
    }
    if (S_ISREG(st.st_mode)) {
        if (st.st_size > 0) {
            void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                close(fd);
                return gpt_errf(err, "%s: cannot mmap: %s", path, strerror(errno));
            }
            b->data = p;
            b->size = (size_t)st.st_size;
            b->mapped = 1;
        }
        close(fd);
        return 0;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return gpt_errf(err, "%s: %s", path, strerror(errno));
    }
    int rc = gpt_read_stream(f, &b->data, &b->size, path, err);
    fclose(f);
    return rc;
}

void gpt_blob_free(gpt_blob *b)
{
    if (b->mapped)
        munmap(b->data, b->size);
    else
        free(b->data);
    memset(b, 0, sizeof *b);
}

int gpt_out_open(gpt_out *o, const char *path, gpt_err *err)
{
    memset(o, 0, sizeof *o);
    if (strcmp(path, "-") == 0) {
        o->f = stdout;
        return 0;
    }
    size_t n = strlen(path) + 32;
    o->path = gpt_xstrdup(path);
    o->tmp = gpt_xmalloc(n);
    snprintf(o->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        gpt_errf(err, "%s: cannot create: %s", o->tmp, strerror(errno));
        free(o->path);
        free(o->tmp);
        memset(o, 0, sizeof *o);
        return -1;
    }
    return 0;
}

static void fsync_dir_of(const char *path)
{
    char *copy = gpt_xstrdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

int gpt_out_commit(gpt_out *o, gpt_err *err)
{
    int rc = 0;
    if (!o->f) return gpt_errf(err, "output already closed");
    if (!o->tmp) {
        if (fflush(o->f) != 0) rc = gpt_errf(err, "stdout: write error: %s", strerror(errno));
        o->f = NULL;
        return rc;
    }
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = gpt_errf(err, "%s: write error: %s", o->tmp, strerror(errno));
    if (fclose(o->f) != 0 && rc == 0) rc = gpt_errf(err, "%s: close failed: %s", o->tmp, strerror(errno));
    o->f = NULL;
    if (rc == 0 && rename(o->tmp, o->path) != 0)
        rc = gpt_errf(err, "%s: cannot rename into place: %s", o->path, strerror(errno));
    if (rc != 0)
        unlink(o->tmp);
    else
        fsync_dir_of(o->path);
    free(o->path);
    free(o->tmp);
    o->path = o->tmp = NULL;
    return rc;
}

void gpt_out_abort(gpt_out *o)
{
    if (o->f && o->tmp) {
        fclose(o->f);
        unlink(o->tmp);
    }
    free(o->path);
    free(o->tmp);
    memset(o, 0, sizeof *o);
}
