/* fuzz_config: config files from memory. Input: YAML text, optionally followed by a NUL and
 * NUL-separated --set assignments. Whatever loads must dump, load back equal, and dump identically again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static char *dump(const gpt_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) abort();
    gpt_err err;
    if (gpt_config_dump(cfg, f, &err) < 0) {
        fprintf(stderr, "dump failed: %s\n", err.msg);
        abort();
    }
    fclose(f);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(data, 0, size);
    size_t ylen = nul ? (size_t)(nul - text) : size;
    gpt_config cfg;
    gpt_err err;
    if (gpt_config_load_mem(text, ylen, "fuzz.yaml", &cfg, &err) < 0) {
        if (!strstr(err.msg, "fuzz.yaml")) {
            fprintf(stderr, "error without the file name: %s\n", err.msg);
            abort();
        }
        return 0;
    }
    if (nul) {
        /* the rest: NUL-separated --set assignments, applied as one batch */
        size_t alen = size - ylen - 1;
        char *a = malloc(alen + 1);
        memcpy(a, nul + 1, alen);
        a[alen] = '\0';
        const char *sets[16];
        size_t n = 0;
        for (size_t i = 0; i <= alen && n < 16; i++)
            if (i == 0 || a[i - 1] == '\0') sets[n++] = a + i;
        gpt_model_config before = cfg.model;
        if (gpt_config_set_all(&cfg, sets, n, &err) < 0 && !gpt_model_config_equal(&before, &cfg.model)) abort();
        free(a);
    }
    char *d1 = dump(&cfg);
    gpt_config back;
    if (gpt_config_load_mem(d1, strlen(d1), "dump", &back, &err) < 0) {
        fprintf(stderr, "dump does not load: %s\n%s", err.msg, d1);
        abort();
    }
    if (!gpt_model_config_equal(&cfg.model, &back.model)) abort();
    char *d2 = dump(&back);
    if (strcmp(d1, d2) != 0) {
        fprintf(stderr, "dump not stable:\n%s\n---\n%s", d1, d2);
        abort();
    }
    (void)gpt_config_get(&cfg, "train.lr", NULL);
    free(d1);
    free(d2);
    gpt_config_free(&back);
    gpt_config_free(&cfg);
    return 0;
}
