/* mxfp4_ckpt.h (tests): write a model's weights as a native checkpoint with every expert matrix
 * as an MXFP4 pair (gpt-oss layout: _blocks and _scales), through the streaming checkpoint
 * writer. Shared by t/test_mxfp4_model.c and t/test_model_piece.c. */
#ifndef GPT_T_MXFP4_CKPT_H
#define GPT_T_MXFP4_CKPT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"
#include "model.h"
#include "mxfp4.h"

static int write_mxfp4_ckpt(const char *dir, gpt_model *m, gpt_err *err)
{
    const gpt_param_table *tab = gpt_model_params(m);
    gpt_backend *be = gpt_model_backend(m);
    float *host = gpt_xmalloc(tab->total * sizeof *host);
    be->to_host(be, host, gpt_model_param_data(m), tab->total * sizeof *host);
    gpt_ckpt_writer *w = gpt_ckpt_writer_open(dir, gpt_model_config_of(m), 0, NULL, err);
    if (!w) return free(host), -1;
    int n = 0, rc = 0;
    void **data = gpt_xcalloc((size_t)tab->n * 2, sizeof *data);
    size_t *size = gpt_xcalloc((size_t)tab->n * 2, sizeof *size);
    int *own = gpt_xcalloc((size_t)tab->n * 2, sizeof *own);
    for (int i = 0; i < tab->n && rc == 0; i++) {
        const gpt_tensor *t = &tab->t[i];
        size_t len = strlen(t->name);
        int expert = t->expert_dim && (strstr(t->name, "gate_up_proj") || strstr(t->name, "down_proj")) &&
                     strcmp(t->name + len - 5, "_bias") != 0;
        if (!expert) {
            uint64_t sh[4];
            for (int d = 0; d < t->ndim; d++) sh[d] = (uint64_t)t->shape[d];
            rc = gpt_ckpt_writer_add(w, t->name, GPT_ST_F32, t->ndim, sh, err);
            data[n] = host + t->offset, size[n++] = t->numel * sizeof(float);
            continue;
        }
        size_t E = (size_t)t->shape[0], In = (size_t)t->shape[1], Out = (size_t)t->shape[2], nb = In / 32;
        uint8_t *b = gpt_xmalloc(E * Out * nb * 16), *s = gpt_xmalloc(E * Out * nb);
        float *row = gpt_xmalloc(In * sizeof *row);
        for (size_t e = 0; e < E; e++)
            for (size_t o = 0; o < Out; o++) {
                for (size_t k = 0; k < In; k++) row[k] = host[t->offset + (e * In + k) * Out + o];
                gpt_mxfp4_quantize(row, nb, b + (e * Out + o) * nb * 16, s + (e * Out + o) * nb);
            }
        free(row);
        char name[GPT_TENSOR_NAME_MAX + 16];
        uint64_t bs[4] = {E, Out, nb, 16};
        snprintf(name, sizeof name, "%s_blocks", t->name);
        rc = gpt_ckpt_writer_add(w, name, GPT_ST_U8, 4, bs, err);
        own[n] = 1, data[n] = b, size[n++] = E * Out * nb * 16;
        snprintf(name, sizeof name, "%s_scales", t->name);
        if (rc == 0) rc = gpt_ckpt_writer_add(w, name, GPT_ST_U8, 3, bs, err);
        own[n] = 1, data[n] = s, size[n++] = E * Out * nb;
    }
    int i;
    while (rc == 0 && (i = gpt_ckpt_writer_next(w)) >= 0) rc = gpt_ckpt_writer_put(w, data[i], size[i], err);
    if (rc == 0)
        rc = gpt_ckpt_writer_commit(w, err);
    else
        gpt_ckpt_writer_abort(w);
    for (int k = 0; k < n; k++)
        if (own[k]) free(data[k]);
    free(data), free(size), free(own), free(host);
    return rc;
}

#endif
