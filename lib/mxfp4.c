#include "mxfp4.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const float gpt_fp4_values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* 2^(s-127) as a float for s <= 254 (s = 0 is the subnormal 2^-127). Multiplying an e2m1 value by it is
 * exact or overflows to inf exactly as ldexpf does (the values have at most 2 significant bits, and the
 * smallest product, 2^-128, is representable), so the inner loops are plain multiplies the compiler can
 * vectorize. 2^128 is not a float: s = 255 goes through ldexpf. */
static float e8m0(uint8_t s)
{
    uint32_t u = s ? (uint32_t)s << 23 : 0x00400000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void gpt_mxfp4_dequant(const uint8_t *blocks, const uint8_t *scales, size_t n_blocks, float *out)
{
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *p = blocks + 16 * b;
        float *o = out + 32 * b;
        if (scales[b] == 255) {
            for (int i = 0; i < 16; i++) {
                o[2 * i] = ldexpf(gpt_fp4_values[p[i] & 0x0f], 128);
                o[2 * i + 1] = ldexpf(gpt_fp4_values[p[i] >> 4], 128);
            }
            continue;
        }
        float sc = e8m0(scales[b]);
        for (int i = 0; i < 16; i++) {
            o[2 * i] = gpt_fp4_values[p[i] & 0x0f] * sc;
            o[2 * i + 1] = gpt_fp4_values[p[i] >> 4] * sc;
        }
    }
}

float gpt_mxfp4_dot(const uint8_t *blocks, const uint8_t *scales, size_t n_blocks, const float *x)
{
    float acc = 0.0f;
    for (size_t b = 0; b < n_blocks; b++) {
        const uint8_t *p = blocks + 16 * b;
        const float *xb = x + 32 * b;
        /* Unscaled codes times x within the block, then one power-of-two scale per 32 weights. */
        float lo = 0.0f, hi = 0.0f;
        for (int i = 0; i < 16; i++) {
            lo += gpt_fp4_values[p[i] & 0x0f] * xb[2 * i];
            hi += gpt_fp4_values[p[i] >> 4] * xb[2 * i + 1];
        }
        acc += scales[b] == 255 ? ldexpf(lo + hi, 128) : (lo + hi) * e8m0(scales[b]);
    }
    return acc;
}

int gpt_mxfp4_dequant_shaped(const char *name, const uint8_t *blocks, int bndim, const uint64_t *bshape,
                             const uint8_t *scales, int sndim, const uint64_t *sshape, float *out, size_t n_out,
                             gpt_err *err)
{
    if (bndim < 2 || bshape[bndim - 1] != 16)
        return gpt_errf(err, "tensor '%.100s': MXFP4 blocks must have shape [..., G, 16] (got %d dims, last %llu)",
                        name, bndim, bndim > 0 ? (unsigned long long)bshape[bndim - 1] : 0ULL);
    if (sndim != bndim - 1)
        return gpt_errf(err, "tensor '%.100s': MXFP4 scales have %d dims, expected %d (blocks shape minus the last)",
                        name, sndim, bndim - 1);
    uint64_t nblk = 1;
    for (int i = 0; i < sndim; i++) {
        if (sshape[i] != bshape[i])
            return gpt_errf(err, "tensor '%.100s': MXFP4 scales dim %d is %llu but blocks dim %d is %llu", name, i,
                            (unsigned long long)sshape[i], i, (unsigned long long)bshape[i]);
        if (__builtin_mul_overflow(nblk, sshape[i], &nblk))
            return gpt_errf(err, "tensor '%.100s': MXFP4 shape overflows", name);
    }
    uint64_t nout;
    if (__builtin_mul_overflow(nblk, (uint64_t)32, &nout) || nout != (uint64_t)n_out)
        return gpt_errf(err, "tensor '%.100s': MXFP4 dequantizes to %llu values but the output holds %zu", name,
                        (unsigned long long)nblk * 32ULL, n_out);
    gpt_mxfp4_dequant(blocks, scales, (size_t)nblk, out);
    return 0;
}

static int check_st(const gpt_st_tensor *blocks, const gpt_st_tensor *scales, gpt_err *err)
{
    if (blocks->dtype != GPT_ST_U8 || scales->dtype != GPT_ST_U8)
        return gpt_errf(err, "%s: MXFP4 tensors '%s' (%s) and '%s' (%s) must both be U8",
                        gpt_st_file_name(blocks->file), blocks->name, gpt_st_dtype_name(blocks->dtype), scales->name,
                        gpt_st_dtype_name(scales->dtype));
    return 0;
}

int gpt_mxfp4_out_shape(const gpt_st_tensor *blocks, const gpt_st_tensor *scales, uint64_t *oshape, int *ondim,
                        gpt_err *err)
{
    if (check_st(blocks, scales, err) != 0) return -1;
    int nd = blocks->ndim;
    if (nd < 2 || blocks->shape[nd - 1] != 16 || scales->ndim != nd - 1)
        return gpt_errf(err, "%s: tensor '%s': MXFP4 blocks must be [..., G, 16] with scales '%s' [..., G]",
                        gpt_st_file_name(blocks->file), blocks->name, scales->name);
    for (int i = 0; i < nd - 1; i++)
        if (blocks->shape[i] != scales->shape[i])
            return gpt_errf(err, "%s: tensor '%s': dim %d is %llu but scales '%s' have %llu",
                            gpt_st_file_name(blocks->file), blocks->name, i, (unsigned long long)blocks->shape[i],
                            scales->name, (unsigned long long)scales->shape[i]);
    if (oshape) {
        for (int i = 0; i < nd - 2; i++) oshape[i] = blocks->shape[i];
        oshape[nd - 2] = blocks->shape[nd - 2] * 32; /* cannot overflow: blocks' byte size fits */
    }
    if (ondim) *ondim = nd - 1;
    return 0;
}

int gpt_mxfp4_dequant_st(const gpt_st_tensor *blocks, const gpt_st_tensor *scales, float *out, size_t n_out,
                         gpt_err *err)
{
    if (gpt_mxfp4_out_shape(blocks, scales, NULL, NULL, err) != 0) return -1;
    if (gpt_mxfp4_dequant_shaped(blocks->name, blocks->data, blocks->ndim, blocks->shape, scales->data,
                                 scales->ndim, scales->shape, out, n_out, err) != 0)
        return gpt_err_prefix(err, "%s", gpt_st_file_name(blocks->file));
    return 0;
}
