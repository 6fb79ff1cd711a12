/* error.h: how lib/ reports failures.
 *
 * Every fallible function takes a `gpt_err *` (may be NULL) and returns -1 / NULL on failure
 * after writing a message that says what failed, where, and what to do. No globals. */
#ifndef GPT_ERROR_H
#define GPT_ERROR_H

#include <stddef.h>

typedef struct gpt_err {
    char msg[1024];
} gpt_err;

__attribute__((format(printf, 2, 3))) int gpt_errf(gpt_err *err, const char *fmt, ...);

/* Prefix an existing message with context ("loading X: <old message>"). */
__attribute__((format(printf, 2, 3))) int gpt_err_prefix(gpt_err *err, const char *fmt, ...);

/* Abort with a message on allocation failure: callers never see NULL. */
void *gpt_xmalloc(size_t n);
void *gpt_xcalloc(size_t n, size_t size);
void *gpt_xrealloc(void *p, size_t n);
char *gpt_xstrdup(const char *s);

#endif
