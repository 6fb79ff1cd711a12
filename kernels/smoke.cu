// smoke.cu: the first kernel, proving that kernels/*.cu build into libgpt.a and run.
// gpt_cuda_axpy computes y = a*x + y on the device for host arrays.
#include <cuda_runtime.h>

#include "cuda_smoke.h"

__global__ static void axpy_kernel(int n, float a, const float *x, float *y)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}

extern "C" int gpt_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

extern "C" int gpt_cuda_axpy(int n, float a, const float *x, float *y)
{
    float *dx = nullptr, *dy = nullptr;
    size_t bytes = (size_t)n * sizeof(float);
    int rc = -1;
    if (cudaMalloc(&dx, bytes) != cudaSuccess || cudaMalloc(&dy, bytes) != cudaSuccess) goto out;
    if (cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice) != cudaSuccess) goto out;
    if (cudaMemcpy(dy, y, bytes, cudaMemcpyHostToDevice) != cudaSuccess) goto out;
    axpy_kernel<<<(n + 255) / 256, 256>>>(n, a, dx, dy);
    if (cudaGetLastError() != cudaSuccess) goto out;
    if (cudaMemcpy(y, dy, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) goto out;
    rc = 0;
out:
    cudaFree(dx);
    cudaFree(dy);
    return rc;
}
