/* cuda_smoke.h: the trivial CUDA entry points (built only with CUDA=1). */
#ifndef GPT_CUDA_SMOKE_H
#define GPT_CUDA_SMOKE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Number of visible CUDA devices; 0 when there is no driver or device. */
int gpt_cuda_device_count(void);
/* y = a*x + y on the first device, for host arrays of n floats. 0 on success. */
int gpt_cuda_axpy(int n, float a, const float *x, float *y);

#ifdef __cplusplus
}
#endif
#endif
