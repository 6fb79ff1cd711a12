/* fuzz_hfjson.c: libFuzzer target for the Hugging Face tokenizer.json loader. A tokenizer that
 * loads must encode and decode its own input back exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_loaders.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gpt_err err;
    gpt_tokenizer *tk = gpt_load_hf_json_mem((const char *)data, size, "fuzz.json", &err);
    if (!tk) return 0;
    size_t n = size < 256 ? size : 256;
    gpt_ids ids = {0};
    unsigned char *back = NULL;
    size_t bl = 0;
    if (gpt_encode(tk, data, n, NULL, &ids, &err) == 0 &&
        gpt_decode(tk, ids.v, ids.n, &back, &bl, &err) == 0 && (bl != n || memcmp(back, data, n) != 0))
        __builtin_trap();
    free(back);
    gpt_ids_free(&ids);
    gpt_tokenizer_free(tk);
    return 0;
}
