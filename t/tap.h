/* tap.h: a tiny TAP producer for the C unit tests (run by prove).
 *
 *   plan(n) or done_testing();  ok(cond, fmt, ...);  is_int(got, want, name);
 *   is_str(got, want, name);  skip_all(reason);  diag(fmt, ...);
 *
 * Test programs only: the state below is per test binary. */
#ifndef GPT_TAP_H
#define GPT_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

static inline void plan(int n) { printf("1..%d\n", n); fflush(stdout); }

static inline void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

__attribute__((format(printf, 2, 3))) static inline int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    if (!cond) tap_failed++;
    fflush(stdout);
    return cond;
}

#define is_int(got, want, ...)                                                   \
    do {                                                                         \
        long long g_ = (long long)(got), w_ = (long long)(want);                 \
        if (!ok(g_ == w_, __VA_ARGS__)) diag("got %lld, want %lld", g_, w_);     \
    } while (0)

#define is_str(got, want, ...)                                                   \
    do {                                                                         \
        const char *g_ = (got), *w_ = (want);                                    \
        if (!ok(g_ && w_ && strcmp(g_, w_) == 0, __VA_ARGS__))                   \
            diag("got '%s', want '%s'", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

/* A uniform float in [-1, 1) from a xorshift64 state (each test seeds its own). */
static inline float tap_frand(unsigned long long *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (float)((*state >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static inline void skip_all(const char *reason)
{
    printf("1..0 # SKIP %s\n", reason);
    exit(0);
}

static inline int done_testing(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

/* The shared read-only data (tokenizers, corpus): $GPT_SHARED or ../shared. */
static inline const char *tap_shared(void)
{
    const char *s = getenv("GPT_SHARED");
    return s && *s ? s : "../shared";
}

#endif
