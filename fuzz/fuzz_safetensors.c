/* libFuzzer target: validate arbitrary bytes as a safetensors file, then touch every tensor the way a
 * loader would (lookup by name, float conversion, raw reads, MXFP4 dequant of U8 pairs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mxfp4.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gpt_err err;
    gpt_st_file *f = gpt_st_open_mem(data, size, "fuzz", &err);
    if (!f) {
        if (!err.msg[0]) abort(); /* a failure must say why */
        return 0;
    }
    volatile unsigned sink = 0;
    for (size_t i = 0; i < gpt_st_meta_count(f); i++) {
        const char *k, *v;
        gpt_st_meta_at(f, i, &k, &v);
        if (gpt_st_meta(f, k) == NULL) abort();
        sink += (unsigned)strlen(v);
    }
    for (size_t i = 0; i < gpt_st_count(f); i++) {
        const gpt_st_tensor *t = gpt_st_tensor_at(f, i);
        if (gpt_st_find(f, t->name) != t) abort();
        if (t->offset + t->nbytes > size || t->data < data || t->data + t->nbytes > data + size) abort();
        for (size_t k = 0; k < t->nbytes; k++) sink += t->data[k];
        /* numel <= nbytes for every dtype, and nbytes fits in the input: the allocation is bounded. */
        size_t n = (size_t)t->numel;
        float *out = malloc((n ? n : 1) * sizeof *out);
        if (gpt_st_read_f32(t, out, n, &err) == 0)
            for (size_t k = 0; k < n; k++) sink += out[k] != out[k];
        free(out);
        if (t->dtype == GPT_ST_U8 && t->ndim >= 2) {
            /* Pair with any other U8 tensor, as a loader given a crafted file might. */
            for (size_t j = 0; j < gpt_st_count(f); j++) {
                const gpt_st_tensor *s = gpt_st_tensor_at(f, j);
                uint64_t shape[GPT_ST_MAX_DIMS];
                int nd;
                if (s == t || gpt_mxfp4_out_shape(t, s, shape, &nd, &err) != 0) continue;
                size_t m = (size_t)s->numel * 32;
                float *o = malloc((m ? m : 1) * sizeof *o);
                if (gpt_mxfp4_dequant_st(t, s, o, m, &err) != 0) abort(); /* shape was accepted above */
                free(o);
            }
        }
    }
    gpt_st_close(f);
    return 0;
}
