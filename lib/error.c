#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gpt_errf(gpt_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int gpt_err_prefix(gpt_err *err, const char *fmt, ...)
{
    if (!err) return -1;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof err->msg - 2) {
        size_t used = (size_t)n;
        err->msg[used++] = ':';
        err->msg[used++] = ' ';
        size_t room = sizeof err->msg - used - 1, ol = strlen(old);
        if (ol > room) ol = room;
        memcpy(err->msg + used, old, ol);
        err->msg[used + ol] = '\0';
    }
    return -1;
}

static void *oom(size_t n)
{
    fprintf(stderr, "gpt: out of memory allocating %zu bytes\n", n);
    abort();
}

void *gpt_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    return p ? p : oom(n);
}

void *gpt_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    return p ? p : oom(n * size);
}

void *gpt_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    return q ? q : oom(n);
}

char *gpt_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(gpt_xmalloc(n), s, n);
}
