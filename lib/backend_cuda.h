/* backend_cuda.h: the CUDA backend of the op interface (backend.h), built with `make CUDA=1`.
 *
 * Precision: fp32 storage and fp32 compute everywhere, GEMMs through cublasSgemm (no TF32 unless
 * GPT_CUDA_TF32=1), so results equal the CPU backend's to fp32 rounding. Every op runs on one
 * stream and returns before the device finishes, except to_host, which waits. Every op is
 * deterministic (no atomics; accumulation by sorting and segmenting, or by fixed-shape partial
 * sums reduced in a fixed order).
 *
 * Environment: GPT_CUDA_SYNC=1 waits after every op, so a device fault is reported under the op
 * that caused it; GPT_PROFILE=1 does the same and prints a per-op time table on destroy;
 * GPT_CUDA_TF32=1 lets cuBLAS use TF32 tensor cores for the GEMMs (faster, ~1e-3 relative). */
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
