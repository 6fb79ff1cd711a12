/* fuzz_tokens.c: arbitrary bytes as a gpt-tokens(5) stream, read two ways: whole in memory
 * (validated like a mapped file) and sequentially from a descriptor (the pipe/zstd path).
 * Besides memory safety it checks that both readers agree: same verdict, same ids.
 * An input starting with 'F' is first given valid checksums (header, and body when it ends in a
 * trailer), so mutations get past the hashes to the size and id checks.
 * Seeds: t/data/tokens (fuzz/bin/fuzz_tokens -max_total_time=60 fuzz/corpus/fuzz_tokens t/data/tokens). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xxhash.h>

#include "tokens.h"

static int read_all(gpt_tokr *r, gpt_ids *out, size_t chunk)
{
    uint32_t buf[64];
    long got;
    gpt_err err;
    while ((got = gpt_tokr_read(r, buf, chunk, &err)) > 0) gpt_ids_append(out, buf, (size_t)got);
    return got < 0 ? -1 : 0;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int check(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || data[0] != 'F') return check(data, size);
    size--;
    unsigned char *d = malloc(size ? size : 1);
    memcpy(d, data + 1, size);
    if (size >= 24) put_le(d + 20, (uint32_t)XXH64(d, 20, 0), 4);
    if (size >= 48 && memcmp(d + size - 24, "GPTTKEND", 8) == 0)
        put_le(d + size - 8, XXH64(d + 24, size - 48, 0), 8);
    check(d, size);
    free(d);
    return 0;
}

static int check(const uint8_t *data, size_t size)
{
    gpt_err err;
    size_t chunk = 1 + size % 64;
    gpt_ids a = {0}, b = {0};

    int ra = -1;
    gpt_tokr *r = gpt_tokr_open_mem(data, size, "fuzz", &err);
    if (r) {
        ra = read_all(r, &a, chunk);
        uint64_t n;
        if (gpt_tokr_map(r, &n)) {
            if (n != a.n) abort();
            for (uint64_t i = 0; i < n; i++)
                if (gpt_tokr_get(r, i) != a.v[i] || a.v[i] >= gpt_tokr_vocab(r)) abort();
        }
        gpt_tokr_close(r);
    } else if (!strstr(err.msg, "fuzz")) {
        abort(); /* every message names its input */
    }

    int rb = -1;
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    lseek(fd, 0, SEEK_SET);
    r = gpt_tokr_open_fd(fd, "fuzz", &err);
    if (r) {
        rb = read_all(r, &b, 65 - chunk);
        gpt_tokr_close(r);
    }
    close(fd);

    if (ra != rb) abort();
    if (ra == 0 && (a.n != b.n || (a.n && memcmp(a.v, b.v, a.n * sizeof *a.v) != 0))) abort();
    gpt_ids_free(&a);
    gpt_ids_free(&b);
    return 0;
}
