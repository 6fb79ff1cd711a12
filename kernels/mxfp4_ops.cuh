// mxfp4_ops.cuh: MXFP4 expert matmuls for inference (included by backend_cuda.cu): the weights stay
// packed (4 bits a weight) and are decoded in registers, so a decode step reads a quarter of the
// bytes of an fp16 matrix. One warp per (row, output): lanes take 32-element blocks in turn, each
// block's dot is summed in fp32 and scaled once by 2^(s-127) (ldexpf, as mxfp4.h), then the lanes
// are added in a fixed tree. Deterministic; agrees with the CPU to fp32 rounding.

__constant__ float fp4_lut[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                  -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

__global__ void mxfp4_matmul_kernel(float *out, int ldo, const float *x, int ldx, const unsigned char *blocks,
                                    const unsigned char *scales, const float *bias, int n, int K, int O)
{
    int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, r = blockIdx.y, lane = threadIdx.x & 31;
    if (o >= O || r >= n) return; // whole warps leave together (o is per warp)
    const int G = K / 32;
    const float *xr = x + (size_t)r * ldx;
    const unsigned char *bo = blocks + (size_t)o * G * 16, *so = scales + (size_t)o * G;
    float acc = 0;
    for (int g = lane; g < G; g += 32) {
        const uint4 q = *(const uint4 *)(bo + (size_t)g * 16); // 16 bytes: 32 codes
        const unsigned w[4] = {q.x, q.y, q.z, q.w};
        const float *xg = xr + (size_t)g * 32;
        float s = 0;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                unsigned byte = (w[j] >> (8 * b)) & 0xffu;
                int e = 8 * j + 2 * b;
                s += fp4_lut[byte & 15u] * xg[e];
                s += fp4_lut[byte >> 4] * xg[e + 1];
            }
        acc += ldexpf(s, (int)so[g] - 127);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[(size_t)r * ldo + o] = acc + (bias ? bias[o] : 0.0f);
}

static void cu_mxfp4_matmul(gpt_backend *be, float *out, int ldo, const float *x, int ldx, const unsigned char *blocks,
                            const unsigned char *scales, const float *bias, int n, int K, int O)
{
    if (n <= 0 || O <= 0) return;
    if (K % 32) cuda_die("mxfp4_matmul", "shape", "K is not a multiple of 32", __FILE__, __LINE__);
    if (((uintptr_t)blocks & 15) != 0)
        cuda_die("mxfp4_matmul", "alignment", "blocks must be 16-byte aligned (be->alloc gives that)", __FILE__,
                 __LINE__);
    double t0 = op_begin(be);
    const int warps = 8;
    dim3 grid((unsigned)((O + warps - 1) / warps), (unsigned)n);
    mxfp4_matmul_kernel<<<grid, 32 * warps, 0, CTX(be)->stream>>>(out, ldo, x, ldx, blocks, scales, bias, n, K, O);
    op_end(be, P_MXFP4_MATMUL, t0);
}
