/* The CUDA backend's MXFP4 matmul (be->mxfp4_matmul) against a reference built from mxfp4.h's
 * dequantizer and a double-precision product: odd shapes, row strides, bias and no bias, the
 * checkpoint's scale range, and one expert's slice of a stacked buffer. Skips without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_cuda.h"
#include "mxfp4.h"
#include "tap.h"

static uint64_t st = 0x853C49E6748FEA9Bull;
static double urand(void)
{
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return (double)(st >> 11) / 9007199254740992.0;
}

static void check(gpt_backend *gpu, int n, int K, int O, int use_bias, int experts)
{
    const int G = K / 32, ldx = K + 3, ldo = O + 5;
    size_t nb = (size_t)experts * O * G;
    uint8_t *blocks = malloc(nb * 16), *scales = malloc(nb);
    for (size_t i = 0; i < nb * 16; i++) blocks[i] = (uint8_t)(urand() * 256);
    for (size_t i = 0; i < nb; i++) scales[i] = (uint8_t)(118 + urand() * 10); /* 2^-9 .. 2^0 */
    float *x = malloc((size_t)n * ldx * sizeof(float)), *bias = malloc((size_t)O * sizeof(float));
    for (size_t i = 0; i < (size_t)n * ldx; i++) x[i] = (float)(urand() * 2 - 1);
    for (int i = 0; i < O; i++) bias[i] = (float)(urand() - 0.5);
    const int e = experts - 1; /* the last expert: its blocks start inside the stacked buffer */
    float *w = malloc((size_t)O * K * sizeof(float));
    gpt_mxfp4_dequant(blocks + (size_t)e * O * G * 16, scales + (size_t)e * O * G, (size_t)O * G, w);
    unsigned char *db = gpu->alloc(gpu, nb * 16), *ds = gpu->alloc(gpu, nb);
    float *dx = gpu->alloc(gpu, (size_t)n * ldx * sizeof(float)), *dbias = gpu->alloc(gpu, (size_t)O * sizeof(float));
    float *dout = gpu->alloc(gpu, (size_t)n * ldo * sizeof(float));
    gpu->to_device(gpu, db, blocks, nb * 16);
    gpu->to_device(gpu, ds, scales, nb);
    gpu->to_device(gpu, dx, x, (size_t)n * ldx * sizeof(float));
    gpu->to_device(gpu, dbias, bias, (size_t)O * sizeof(float));
    /* a sentinel in the stride gap must survive */
    float *out = malloc((size_t)n * ldo * sizeof(float));
    for (size_t i = 0; i < (size_t)n * ldo; i++) out[i] = 12345.0f;
    gpu->to_device(gpu, dout, out, (size_t)n * ldo * sizeof(float));
    gpu->mxfp4_matmul(gpu, dout, ldo, dx, ldx, db + (size_t)e * O * G * 16, ds + (size_t)e * O * G,
                      use_bias ? dbias : NULL, n, K, O);
    gpu->to_host(gpu, out, dout, (size_t)n * ldo * sizeof(float));
    double md = 0, mref = 0;
    int gap_ok = 1;
    for (int r = 0; r < n; r++) {
        for (int o = 0; o < O; o++) {
            double ref = use_bias ? bias[o] : 0;
            for (int k = 0; k < K; k++) ref += (double)w[(size_t)o * K + k] * x[(size_t)r * ldx + k];
            md = fmax(md, fabs(out[(size_t)r * ldo + o] - ref));
            mref = fmax(mref, fabs(ref));
        }
        for (int o = O; o < ldo; o++) gap_ok &= out[(size_t)r * ldo + o] == 12345.0f;
    }
    ok(md <= 1e-5 * mref + 1e-6, "mxfp4_matmul n=%d K=%d O=%d%s (expert %d): max |err| %.3g of %.3g", n, K, O,
       use_bias ? " +bias" : "", e, md, mref);
    ok(gap_ok, "mxfp4_matmul n=%d K=%d O=%d: the columns past O in each output row are untouched", n, K, O);
    free(blocks), free(scales), free(x), free(bias), free(w), free(out);
    gpu->free(gpu, db), gpu->free(gpu, ds), gpu->free(gpu, dx), gpu->free(gpu, dbias), gpu->free(gpu, dout);
}

int main(void)
{
    gpt_err err;
    gpt_backend *gpu = gpt_backend_cuda(0, &err);
    if (!gpu) {
        char reason[1100];
        snprintf(reason, sizeof reason, "%s", err.msg);
        for (char *p = reason; *p; p++)
            if (*p == '\n') *p = ' ';
        skip_all(reason);
    }
    if (!ok(gpu->mxfp4_matmul != NULL, "the cuda backend has mxfp4_matmul")) {
        gpu->destroy(gpu);
        return done_testing();
    }
    check(gpu, 1, 32, 1, 1, 1);
    check(gpu, 1, 2880, 5760, 1, 2);  /* gpt-oss-120b expert shapes, batch 1 (decode) */
    check(gpu, 3, 2880, 2880, 0, 3);
    check(gpu, 7, 96, 37, 1, 2);      /* O not a multiple of the 8 warps of a block */
    check(gpu, 5, 1056, 19, 0, 1);    /* K/32 = 33: lanes take more than one block */
    gpu->destroy(gpu);
    return done_testing();
}
