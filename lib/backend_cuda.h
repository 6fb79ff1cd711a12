/* backend_cuda.h: the CUDA backend of the op interface (backend.h), built with `make CUDA=1`.
 *
 * Precision: fp32 storage and fp32 compute everywhere by default, GEMMs through cublasSgemm, so
 * results equal the CPU backend's to fp32 rounding. Every op runs on one stream and returns
 * before the device finishes, except to_host, which waits. Every op is deterministic (no atomics;
 * accumulation by sorting and segmenting, or by fixed-shape partial sums reduced in a fixed order).
 * Attention: tiled flash kernels for training (online softmax from the sink logit, causal and
 * window tiles skipped, deterministic backward) and split-K decoding over the KV cache (shared
 * memory independent of the context length).
 * Optional ops it has: KV caches in bf16 or int8 (kv_store_q, attn_cached_q: the same cache bytes
 * as the CPU backend), sampling where the logits are (sample: one int per sequence per step comes
 * back; gpt_generate uses it when no penalties are set), AdamW with a stochastically rounded bf16
 * copy of the parameters (adamw_sr), and mxfp4_matmul.
 *
 * Environment (read when the backend is created):
 *   GPT_CUDA_GEMM=fp32|tf32|bf16  GEMM math: fp32 (default); TF32 tensor cores (~1e-3 relative);
 *                                 bf16 operands converted on the fly, fp32 sums and outputs
 *                                 (~1e-2); parameters stay fp32 master copies. GPT_CUDA_TF32=1
 *                                 is the older spelling of tf32.
 *   GPT_CUDA_ATTN=flash|tc|simple the attention kernels for training: flash (default, fp32 tiles);
 *                                 tc (the flash algorithm on bf16 tensor cores, fp32 softmax;
 *                                 ~4e-3 relative; head sizes 16/32/64/96/128, else flash);
 *                                 simple (one block per row, shared memory grows with T; a
 *                                 cross-check).
 *   GPT_CUDA_SYNC=1               wait after every op, so a device fault is reported under the op
 *                                 that caused it.
 *   GPT_PROFILE=1                 the same waits, and a per-op time table on destroy. */
#ifndef GPT_BACKEND_CUDA_H
#define GPT_BACKEND_CUDA_H

#include "backend.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(GPT_CUDA) || defined(__CUDACC__)
/* The backend on CUDA device `device` (0-based). NULL with a message when the build, driver or
 * device cannot give one (no device visible, device out of range, cuBLAS failed to start). */
gpt_backend *gpt_backend_cuda(int device, gpt_err *err);
#else
/* Built without CUDA: callers still compile, and learn why at run time. */
static inline gpt_backend *gpt_backend_cuda(int device, gpt_err *err)
{
    (void)device;
    gpt_errf(err, "this build has no CUDA backend: rebuild with `make CUDA=1` (needs nvcc and cuBLAS)");
    return NULL;
}
#endif

#ifdef __cplusplus
}
#endif
#endif
