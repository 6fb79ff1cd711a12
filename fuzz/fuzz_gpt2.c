/* fuzz_gpt2.c: libFuzzer target for GPT-2's vocab.bpe + encoder.json. The input is both files:
 * vocab.bpe up to the first NUL byte, encoder.json after it. A tokenizer that loads must encode
 * and decode a sample back exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_loaders.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (!nul) return 0;
    size_t vlen = (size_t)(nul - data);
    /* Separate heap copies, so ASan sees any read past either file's end. */
    char *vb = malloc(vlen ? vlen : 1), *ej = malloc(size - vlen);
    memcpy(vb, data, vlen);
    memcpy(ej, nul + 1, size - vlen - 1);
    gpt_err err;
    gpt_tokenizer *tk = gpt_load_gpt2_mem(vb, vlen, "vocab.bpe", ej, size - vlen - 1, "encoder.json", &err);
    if (tk) {
        static const char sample[] = "Hello, world! It's 2024\n\n  ok\xff\xfe";
        size_t n = sizeof sample - 1;
        gpt_ids ids = {0};
        unsigned char *back = NULL;
        size_t bl = 0;
        if (gpt_encode(tk, sample, n, NULL, &ids, &err) == 0 &&
            gpt_decode(tk, ids.v, ids.n, &back, &bl, &err) == 0 && (bl != n || memcmp(back, sample, n) != 0))
            __builtin_trap();
        free(back);
        gpt_ids_free(&ids);
        gpt_tokenizer_free(tk);
    }
    free(vb);
    free(ej);
    return 0;
}
