// adamw_sr_ops.cuh: AdamW with a stochastically rounded bf16 copy of the parameters (included by
// backend_cuda.cu after optim_ops.cuh): the adamw_sr op of backend.h.
//
// The fp32 master, m and v are updated with adamw_kernel's operations, one for one (the _rn
// intrinsics: no FMA contraction), so they keep the CPU's bits. The copy: the random 16 bits are
// added to the low half of the fp32 pattern and the low half dropped, which rounds the magnitude
// up with probability (low half) / 2^16: the expectation of the copy is the fp32 value, also when
// the step up crosses into the next binade (consecutive patterns are consecutive values). inf
// stays inf; NaN stays NaN (quiet, as the KV cache's bf16 rounding keeps it); a finite value
// within a bf16 step of the largest float may round up to inf. The random bits are a hash
// (splitmix64's finalizer) of the seed and the index: the same seed, the same copy, on any grid.

__device__ __forceinline__ unsigned long long sr_mix(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ unsigned short bf16_stochastic(float x, unsigned r16)
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40); // NaN
    if ((u & 0x7fffffffu) == 0x7f800000u) return (unsigned short)(u >> 16);          // inf: exact
    return (unsigned short)((u + (r16 & 0xffffu)) >> 16);
}

__global__ void adamw_sr_kernel(float *p, const float *g, float *m, float *v, size_t n, gpt_adamw_args a,
                                unsigned short *pb, unsigned long long seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        // adamw_kernel's update, operation for operation
        float gi = __fmul_rn(g[i], a.grad_scale);
        float pi = __fmul_rn(p[i], a.decay);
        float mi = __fadd_rn(m[i], __fmul_rn(a.w1, __fsub_rn(gi, m[i])));
        float vi = __fmul_rn(v[i], a.b2);
        vi = __fadd_rn(vi, __fmul_rn(__fmul_rn(a.w2, gi), gi));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
        pi = __fadd_rn(pi, __fmul_rn(-a.step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        unsigned long long h = sr_mix(seed ^ sr_mix((unsigned long long)i + 0x9e3779b97f4a7c15ull));
        pb[i] = bf16_stochastic(pi, (unsigned)(h >> 48));
    }
}

static void cu_adamw_sr(gpt_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                        const gpt_adamw_args *a, uint16_t *pb, uint64_t seed)
{
    if (!n) return;
    double t0 = op_begin(be);
    adamw_sr_kernel<<<grid_for(n, 256), 256, 0, CTX(be)->stream>>>(p, g, m, v, n, *a, (unsigned short *)pb,
                                                                  (unsigned long long)seed);
    op_end(be, P_ADAMW_SR, t0);
}
