/* mxfp4.h: MXFP4 weights as gpt-oss stores them (OCP Microscaling FP4).
 *
 * A block is 16 bytes holding 32 FP4 (e2m1) codes, element 2i in the low nibble of byte i and element
 * 2i+1 in the high nibble. Code bit 3 is the sign; bits 0-2 index {0, 0.5, 1, 1.5, 2, 3, 4, 6}. Each block
 * has one E8M0 scale byte s meaning 2^(s - 127).
 *
 * s = 255 (NaN in the OCP spec) is not special-cased: transformers (integrations/mxfp4.py,
 * _convert_moe_packed_tensors) computes torch.ldexp(value, s - 127) with no check, and we compute
 * ldexpf(value, s - 127) the same way, so s = 255 gives ldexpf(v, 128): +-0.5 -> +-2^127, larger codes ->
 * +-inf, zero codes stay +-0. That is what std::ldexp gives and what PyTorch builds whose ldexp runs an
 * integer-exponent kernel give; PyTorch builds that compute ldexp as v * pow(2, e) give +-inf for 0.5 and
 * NaN (0 * inf) for zero codes instead. Real checkpoints never use 255.
 * Scales near 254 overflow to inf for large codes and scales near 0 give float subnormals, exactly as
 * ldexpf does. */
#ifndef GPT_MXFP4_H
#define GPT_MXFP4_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "safetensors.h"

/* The 16 code values, in code order (the published e2m1 table). */
extern const float gpt_fp4_values[16];

/* out[32 * n_blocks]. */
void gpt_mxfp4_dequant(const uint8_t *blocks, const uint8_t *scales, size_t n_blocks, float *out);

/* sum over the 32 * n_blocks weights of w[i] * x[i]; the scale is applied once per block. */
float gpt_mxfp4_dot(const uint8_t *blocks, const uint8_t *scales, size_t n_blocks, const float *x);

/* Dequantize a gpt-oss pair: blocks of shape [..., G, 16] and scales of shape [..., G] (same leading
 * dims) into out of shape [..., G * 32] (n_out must equal that element count). No transpose is applied:
 * transformers transposes the last two axes of the result for its expert matmuls; callers that want that
 * layout do it themselves. `name` is used in error messages. */
int gpt_mxfp4_dequant_shaped(const char *name, const uint8_t *blocks, int bndim, const uint64_t *bshape,
                             const uint8_t *scales, int sndim, const uint64_t *sshape, float *out, size_t n_out,
                             gpt_err *err);

/* The same for two safetensors tensors (both must be U8), e.g. "..._blocks" and "..._scales". Writes the
 * output shape to oshape/ondim when they are non-NULL. */
int gpt_mxfp4_out_shape(const gpt_st_tensor *blocks, const gpt_st_tensor *scales, uint64_t *oshape, int *ondim,
                        gpt_err *err);
int gpt_mxfp4_dequant_st(const gpt_st_tensor *blocks, const gpt_st_tensor *scales, float *out, size_t n_out,
                         gpt_err *err);


/* ---- products with MXFP4 weight rows (mxfp4_matmul.c) ---- */

/* Quantize w (32 * n_blocks floats) to MXFP4 the OCP way: per block the scale 2^(floor(log2 amax) - 2),
 * codes rounded to nearest (ties to the even code), saturating at +-6. All-zero blocks get scale 2^-127. */
void gpt_mxfp4_quantize(const float *w, size_t n_blocks, uint8_t *blocks, uint8_t *scales);

/* out (n, O; row stride ldo) = x (n, K; ldx) W^T + bias (O; NULL for none), where W (O, K) is stored as
 * MXFP4 rows: blocks (O, K/32, 16), scales (O, K/32) (gpt-oss's (out, in) expert layout). K % 32 == 0.
 * Few rows: a fused dequantize-and-dot kernel (AVX-512, AVX2 or portable, whichever the CPU runs); many
 * rows: dequantized tiles and sgemm. Threads over O. Equals dequantize-then-sgemm up to fp32 summation
 * order. */
void gpt_mxfp4_matmul(float *out, int ldo, const float *x, int ldx, const uint8_t *blocks, const uint8_t *scales,
                      const float *bias, int n, int K, int O);

/* The same through one kernel (tests and benchmarks); -1 when the CPU lacks it or K % 32 != 0. */
enum { GPT_MXFP4_AUTO = 0, GPT_MXFP4_PORTABLE, GPT_MXFP4_AVX2, GPT_MXFP4_AVX512, GPT_MXFP4_GEMM };
int gpt_mxfp4_isa_supported(int isa);
int gpt_mxfp4_matmul_isa(int isa, float *out, int ldo, const float *x, int ldx, const uint8_t *blocks,
                         const uint8_t *scales, const float *bias, int n, int K, int O);

#endif
