/* Fuzz the checkpoint manifest parser (gpt_ckpt_parse_manifest): any bytes must give a checkpoint or a
 * clear error, never a crash. Seed with t/data/ckpt/manifest.json. */
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gpt_err err;
    gpt_ckpt *ck = gpt_ckpt_parse_manifest((const char *)data, size, "fuzz", &err);
    if (ck) {
        for (size_t i = 0; i < gpt_ckpt_count(ck); i++) gpt_ckpt_find(ck, gpt_ckpt_tensor_at(ck, i)->name);
        gpt_ckpt_close(ck);
    }
    return 0;
}
