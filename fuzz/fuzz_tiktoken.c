/* fuzz_tiktoken.c: libFuzzer target for the tiktoken rank-file parser (gpt_parse_tiktoken) and,
 * when the ranks form a usable vocabulary, the tables gpt_tk_finish builds from them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_build.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gpt_err err;
    gpt_tokenizer *tk = gpt_tk_new("fuzz");
    if (gpt_parse_tiktoken(tk, data, size, "fuzz.tiktoken", &err) == 0 &&
        gpt_tk_finish(tk, gpt_pat_o200k, 0, &err) == 0) {
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
    }
    gpt_tokenizer_free(tk);
    return 0;
}
