// optim_ops.cuh: the optimizer and gradient helpers of the CUDA backend (included by
// backend_cuda.cu): AdamW, the sum of squares, scaling, the non-finite check.
//
// AdamW spells every operation with the _rn intrinsics, so nvcc cannot contract a multiply and an
// add into an FMA: each step rounds exactly as optim.c's gpt_adamw_update does on the CPU (C11
// without FMA contraction, SSE single precision), and the same inputs give the same bits on both.

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, gpt_adamw_args a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
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
    }
}

static unsigned grid_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    if (b > 65535u * 8) b = 65535u * 8; // grid-stride beyond this
    return (unsigned)(b ? b : 1);
}

static void cu_adamw(gpt_backend *be, float *p, const float *g, float *m, float *v, size_t n, const gpt_adamw_args *a)
{
    if (!n) return;
    double t0 = op_begin(be);
    adamw_kernel<<<grid_for(n, 256), 256, 0, CTX(be)->stream>>>(p, g, m, v, n, *a);
    op_end(be, P_ADAMW, t0);
}

// Sum of squares: chunks of SUMSQ_CH elements, each summed by one block in double (a fixed tree),
// then one block sums the chunk partials in a fixed order. Both shapes depend on n only.
enum { SUMSQ_CH = 4096, SUMSQ_T = 256 };

__device__ double block_sum_d(double x, double *sh)
{
    sh[threadIdx.x] = x;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}

__global__ void sumsq_part_kernel(double *part, const float *x, size_t n)
{
    __shared__ double sh[SUMSQ_T];
    size_t a = (size_t)blockIdx.x * SUMSQ_CH, b = a + SUMSQ_CH < n ? a + SUMSQ_CH : n;
    double acc = 0;
    for (size_t i = a + threadIdx.x; i < b; i += SUMSQ_T) acc += (double)x[i] * (double)x[i];
    double s = block_sum_d(acc, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void sumsq_final_kernel(double *out, const double *part, size_t nch)
{
    __shared__ double sh[SUMSQ_T];
    double acc = 0;
    for (size_t i = threadIdx.x; i < nch; i += SUMSQ_T) acc += part[i];
    double s = block_sum_d(acc, sh);
    if (threadIdx.x == 0) *out = s;
}

static double cu_sumsq(gpt_backend *be, const float *x, size_t n)
{
    if (!n) return 0;
    double t0 = op_begin(be);
    cuda_ctx *c = CTX(be);
    size_t nch = (n + SUMSQ_CH - 1) / SUMSQ_CH;
    if (nch > 0x7fffffffu) cuda_die("sumsq", "launch", "more than 2^31 chunks", __FILE__, __LINE__);
    double *part = (double *)scratch(be, (nch + 1) * sizeof(double), "sumsq");
    sumsq_part_kernel<<<(unsigned)nch, SUMSQ_T, 0, c->stream>>>(part, x, n);
    sumsq_final_kernel<<<1, SUMSQ_T, 0, c->stream>>>(part + nch, part, nch);
    double r = 0;
    CK("sumsq", cudaMemcpyAsync(&r, part + nch, sizeof r, cudaMemcpyDeviceToHost, c->stream));
    CK("sumsq", cudaStreamSynchronize(c->stream));
    op_end(be, P_SUMSQ, t0);
    return r;
}

__global__ void scale_kernel(float *x, float a, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], a);
}

static void cu_scale(gpt_backend *be, float *x, float a, size_t n)
{
    if (!n) return;
    double t0 = op_begin(be);
    scale_kernel<<<grid_for(n, 256), 256, 0, CTX(be)->stream>>>(x, a, n);
    op_end(be, P_SCALE, t0);
}

// Every thread that finds one writes the same 1: the result does not depend on which.
__global__ void nonfinite_kernel(int *flag, const float *x, size_t n)
{
    int bad = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        bad |= !isfinite(x[i]);
    if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

static int cu_nonfinite(gpt_backend *be, const float *x, size_t n)
{
    if (!n) return 0;
    double t0 = op_begin(be);
    cuda_ctx *c = CTX(be);
    int *flag = (int *)scratch(be, sizeof(int), "nonfinite");
    CK("nonfinite", cudaMemsetAsync(flag, 0, sizeof(int), c->stream));
    nonfinite_kernel<<<grid_for(n, 256), 256, 0, c->stream>>>(flag, x, n);
    int h = 0;
    CK("nonfinite", cudaMemcpyAsync(&h, flag, sizeof h, cudaMemcpyDeviceToHost, c->stream));
    CK("nonfinite", cudaStreamSynchronize(c->stream));
    op_end(be, P_NONFINITE, t0);
    return h;
}
