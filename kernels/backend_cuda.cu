// backend_cuda.cu: the CUDA backend of the op interface (lib/backend.h); see lib/backend_cuda.h.
//
// Same semantics and layouts as lib/backend_cpu.c, op for op. fp32 throughout by default; GEMMs
// through cublasSgemm on row-major data (operands swapped: a row-major C = A B is the column-major
// C^T = B^T A^T), or TF32 / bf16 (cublasGemmEx) when asked. Attention: attn_flash.cuh (tiled
// training kernels, split-K decoding); the simple kernels here stay behind GPT_CUDA_ATTN=simple. Everything runs on one stream, in order, so scratch memory can be reused from
// op to op without waiting. Determinism: no float atomics anywhere; sums over rows are either one
// thread walking the rows in order, or fixed-shape partial sums (a function of the sizes only,
// never of the device) reduced in a fixed order; scatter-adds sort (stable radix sort) and then
// one block sums each target row's segment in source order, which is the CPU's order too.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern "C" {
#include "backend.h"
#include "error.h"
#include "half.h"
#include "sampling.h"
}
#include "backend_cuda.h"

// ---- error checking: every failure aborts naming the op, the error and where ----

static void cuda_die(const char *op, const char *what, const char *msg, const char *file, int line)
{
    fprintf(stderr, "gpt: cuda backend: %s: %s failed: %s (%s:%d)\n", op, what, msg, file, line);
    fprintf(stderr, "gpt: cuda backend: device errors surface at the next wait; rerun with GPT_CUDA_SYNC=1 "
                    "to name the op that caused it\n");
    abort();
}

#define CK(op, call)                                                                    \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) cuda_die(op, #call, cudaGetErrorString(e_), __FILE__, __LINE__); \
    } while (0)

#define CKB(op, call)                                                                   \
    do {                                                                                \
        cublasStatus_t s_ = (call);                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS) cuda_die(op, #call, cublasGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

// ---- context ----

enum { GEMM_FP32, GEMM_TF32, GEMM_BF16 };
static const char *const gemm_names[] = {"fp32", "tf32", "bf16"};

enum {
    P_GEMM, P_BIAS_FWD, P_BIAS_BWD, P_AXPY, P_ADD, P_EMBED_FWD, P_EMBED_BWD, P_NORM_FWD, P_NORM_BWD, P_ROPE,
    P_ATTN_FWD, P_ATTN_BWD, P_GELU_FWD, P_GELU_BWD, P_SWIGLU_FWD, P_SWIGLU_BWD, P_TOPK_SOFTMAX,
    P_TOPK_SOFTMAX_BWD, P_SOFTMAX_ROWS, P_SOFTMAX_ROWS_BWD_SHARED, P_COLSUM, P_GATHER_ROWS,
    P_SCATTER_ADD_ROWS, P_ROW_DOT, P_XENT, P_TO_DEVICE, P_TO_HOST, P_ZERO, P_ROPE_POS, P_KV_STORE, P_ATTN_CACHED,
    P_ADAMW, P_SUMSQ, P_SCALE, P_NONFINITE, P_MXFP4_MATMUL, P_KV_STORE_Q, P_ATTN_CACHED_Q, P_SAMPLE, P_ADAMW_SR,
    P_GEMM_GROUPED, P_COUNT
};
static const char *const op_names[P_COUNT] = {
    "gemm", "bias_fwd", "bias_bwd", "axpy", "add", "embed_fwd", "embed_bwd", "norm_fwd", "norm_bwd", "rope",
    "attn_fwd", "attn_bwd", "gelu_fwd", "gelu_bwd", "swiglu_fwd", "swiglu_bwd", "topk_softmax",
    "topk_softmax_bwd", "softmax_rows", "softmax_rows_bwd_shared", "colsum", "gather_rows",
    "scatter_add_rows", "row_dot", "xent", "to_device", "to_host", "zero", "rope_pos", "kv_store", "attn_cached",
    "adamw", "sumsq", "scale", "nonfinite", "mxfp4_matmul", "kv_store_q", "attn_cached_q", "sample", "adamw_sr",
    "gemm_grouped"};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch; // grows on demand; stream order makes reuse between ops safe
    size_t scratch_bytes;
    int max_smem; // opt-in dynamic shared memory per block
    int sync_each, profile;
    int gemm_mode;   // GEMM_FP32, GEMM_TF32, GEMM_BF16 (GPT_CUDA_GEMM, GPT_CUDA_TF32)
    int attn_simple; // GPT_CUDA_ATTN=simple: the one-row-per-block attention kernels
    int attn_tc;     // 1: bf16 tensor-core attention (attn_tc.cuh); -1 (GPT_CUDA_ATTN unset): with bf16
                     // or fp16 GEMMs (mixed precision), flash otherwise; 0: flash (or simple)
    double secs[P_COUNT];
    long calls[P_COUNT];
};

static inline cuda_ctx *CTX(gpt_backend *be) { return (cuda_ctx *)be->ctx; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Every op brackets itself with these: launch errors are caught at once; with GPT_CUDA_SYNC or
// GPT_PROFILE the op is also waited for, so asynchronous faults are charged to the right op.
static double op_begin(gpt_backend *be) { return CTX(be)->profile ? now_s() : 0; }

static void op_end(gpt_backend *be, int op, double t0)
{
    cuda_ctx *c = CTX(be);
    CK(op_names[op], cudaGetLastError());
    if (c->sync_each || c->profile) CK(op_names[op], cudaStreamSynchronize(c->stream));
    if (c->profile) {
        c->secs[op] += now_s() - t0;
        c->calls[op]++;
    }
}

static void *scratch(gpt_backend *be, size_t bytes, const char *op)
{
    cuda_ctx *c = CTX(be);
    if (bytes > c->scratch_bytes) {
        size_t want = bytes + bytes / 4 + 256;
        CK(op, cudaStreamSynchronize(c->stream)); // the old buffer may still be in use
        if (c->scratch) CK(op, cudaFree(c->scratch));
        c->scratch = NULL;
        CK(op, cudaMalloc(&c->scratch, want));
        c->scratch_bytes = want;
    }
    return c->scratch;
}

static inline size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static inline unsigned nblocks(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b ? b : 1);
}

// ---- reductions ----

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sums and maxima; blockDim.x a multiple of 32, at most 1024. The result reaches every
// thread. `sh` holds 32 values; the leading __syncthreads makes back-to-back calls safe.
template <typename V> __device__ V block_sum(V v, V *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? sh[lane] : (V)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ float block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? sh[lane] : -INFINITY;
        v = warp_max(v);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// (value, index) maximum; ties go to the lower index, as a left-to-right strict '>' scan does.
__device__ __forceinline__ void argmax_merge(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

__device__ void block_argmax(float &v, int &i, float *shv, int *shi)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        int i2 = __shfl_xor_sync(0xffffffffu, i, o);
        argmax_merge(v, i, v2, i2);
    }
    __syncthreads();
    if (lane == 0) shv[w] = v, shi[w] = i;
    __syncthreads();
    if (w == 0) {
        v = lane < nw ? shv[lane] : -INFINITY;
        i = lane < nw ? shi[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, v, o);
            int i2 = __shfl_xor_sync(0xffffffffu, i, o);
            argmax_merge(v, i, v2, i2);
        }
        if (lane == 0) shv[0] = v, shi[0] = i;
    }
    __syncthreads();
    v = shv[0];
    i = shi[0];
}

// ---- column sums, deterministic: partial sums over fixed chunks of rows, then the chunks in order ----

enum { COL_CHUNK = 64, COL_THREADS = 128 };

template <class F> __global__ void colpart_kernel(float *part, int N, int C, int chunk, F f)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
    if (c >= C) return;
    int n0 = k * chunk, n1 = min(N, n0 + chunk);
    float acc = 0;
    for (int n = n0; n < n1; n++) acc += f(n, c);
    part[(size_t)k * C + c] = acc;
}

__global__ void colfinish_kernel(float *out, const float *part, int nchunk, int C, int accumulate)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0;
    for (int k = 0; k < nchunk; k++) acc += part[(size_t)k * C + c];
    out[c] = accumulate ? out[c] + acc : acc;
}

// out[c] (+)= sum over n < N of f(n, c).
template <class F> static void col_reduce(gpt_backend *be, const char *op, float *out, int N, int C, int accumulate, F f)
{
    if (C <= 0) return;
    cudaStream_t st = CTX(be)->stream;
    // the chunking depends on N alone (grid.y is at most 65535), so the sums do too
    int chunk = N / 65535 + 1 > COL_CHUNK ? N / 65535 + 1 : COL_CHUNK;
    int nchunk = N > 0 ? (N + chunk - 1) / chunk : 0;
    float *part = (float *)scratch(be, (size_t)(nchunk ? nchunk : 1) * C * sizeof(float), op);
    if (nchunk) {
        dim3 grid(nblocks(C, COL_THREADS), nchunk);
        colpart_kernel<<<grid, COL_THREADS, 0, st>>>(part, N, C, chunk, f);
    }
    colfinish_kernel<<<nblocks(C, COL_THREADS), COL_THREADS, 0, st>>>(out, part, nchunk, C, accumulate);
}

// ---- memory ----

static void *cu_alloc(gpt_backend *be, size_t bytes)
{
    void *p = NULL;
    size_t n = bytes ? bytes : 4;
    CK("alloc", cudaMalloc(&p, n));
    CK("alloc", cudaMemsetAsync(p, 0, n, CTX(be)->stream));
    return p;
}

static void cu_free(gpt_backend *be, void *p)
{
    if (!p) return;
    CK("free", cudaStreamSynchronize(CTX(be)->stream));
    CK("free", cudaFree(p));
}

static void cu_to_device(gpt_backend *be, void *dst, const void *src, size_t bytes)
{
    double t0 = op_begin(be);
    // From pageable memory this returns once src has been staged, so the caller may free it.
    if (bytes) CK("to_device", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, CTX(be)->stream));
    op_end(be, P_TO_DEVICE, t0);
}

static void cu_to_host(gpt_backend *be, void *dst, const void *src, size_t bytes)
{
    double t0 = op_begin(be);
    if (bytes) CK("to_host", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, CTX(be)->stream));
    CK("to_host (or an earlier op: the wait reports any device error)", cudaStreamSynchronize(CTX(be)->stream));
    op_end(be, P_TO_HOST, t0);
}

static void cu_zero(gpt_backend *be, void *p, size_t bytes)
{
    double t0 = op_begin(be);
    if (bytes) CK("zero", cudaMemsetAsync(p, 0, bytes, CTX(be)->stream));
    op_end(be, P_ZERO, t0);
}

// ---- dense algebra ----

__global__ void scale2d_kernel(float *C, int ldc, int M, int N, float beta)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)M * N) return;
    float *p = C + (i / N) * ldc + i % N;
    *p = beta == 0.0f ? 0.0f : beta * *p;
}

// rows x cols of a row-major fp32 matrix (stride ld) into a packed bf16 one, rounding to nearest
__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, int rows, int cols, int ld)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    dst[i] = __float2bfloat16_rn(src[(i / cols) * ld + i % cols]);
}

__global__ void to_fp16_kernel(__half *dst, const float *src, int rows, int cols, int ld)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    dst[i] = __float2half_rn(src[(i / cols) * ld + i % cols]); // overflow -> inf, as half.h
}

// GPT_CUDA_GEMM=bf16 or be->gemm_prec bf16 / fp16 (mixed-precision training): both operands rounded
// on the way in (the fp32 originals, parameters included, stay untouched: they are the master
// copies), products summed in fp32, C stays fp32: the CPU backend's gemm_prec, on tensor cores.
static void gemm_half(gpt_backend *be, int fp16, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cuda_ctx *c = CTX(be);
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    size_t abytes = align256((size_t)ar * ac * 2);
    char *s = (char *)scratch(be, abytes + (size_t)br * bc * 2, "gemm");
    void *Ah = s, *Bh = s + abytes;
    if (fp16) {
        to_fp16_kernel<<<nblocks((size_t)ar * ac, 256), 256, 0, c->stream>>>((__half *)Ah, A, ar, ac, lda);
        to_fp16_kernel<<<nblocks((size_t)br * bc, 256), 256, 0, c->stream>>>((__half *)Bh, B, br, bc, ldb);
    } else {
        to_bf16_kernel<<<nblocks((size_t)ar * ac, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)Ah, A, ar, ac, lda);
        to_bf16_kernel<<<nblocks((size_t)br * bc, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)Bh, B, br, bc, ldb);
    }
    cudaDataType_t t = fp16 ? CUDA_R_16F : CUDA_R_16BF;
    CKB("gemm", cublasGemmEx(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                             Bh, t, bc, Ah, t, ac, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}

// fp32 operands (TF32 products where the handle's math mode says so), M, N, K > 0.
static void gemm_f32(cuda_ctx *c, const char *op, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    // Row-major C (M x N) is column-major C^T (N x M): C^T = op(B)^T op(A)^T.
    CKB(op, cublasSgemm(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                        ldb, A, lda, &beta, C, ldc));
}

static void cu_gemm(gpt_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    double t0 = op_begin(be);
    cuda_ctx *c = CTX(be);
    if (M > 0 && N > 0) {
        if (K == 0) {
            scale2d_kernel<<<nblocks((size_t)M * N, 256), 256, 0, c->stream>>>(C, ldc, M, N, beta);
        } else if (be->gemm_prec != GPT_GEMM_FP32 || c->gemm_mode == GEMM_BF16) {
            gemm_half(be, be->gemm_prec == GPT_GEMM_FP16, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        } else {
            gemm_f32(c, "gemm", ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        }
    }
    op_end(be, P_GEMM, t0);
}

__global__ void bias_fwd_kernel(float *y, int ldy, const float *b, int M, int N)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)M * N) return;
    y[(i / N) * ldy + i % N] += b[i % N];
}

static void cu_bias_fwd(gpt_backend *be, float *y, int ldy, const float *b, int M, int N)
{
    double t0 = op_begin(be);
    if (M > 0 && N > 0) bias_fwd_kernel<<<nblocks((size_t)M * N, 256), 256, 0, CTX(be)->stream>>>(y, ldy, b, M, N);
    op_end(be, P_BIAS_FWD, t0);
}

struct col_plain {
    const float *x;
    int ld;
    __device__ float operator()(int n, int c) const { return x[(size_t)n * ld + c]; }
};

static void cu_bias_bwd(gpt_backend *be, float *db, const float *dy, int ldy, int M, int N)
{
    double t0 = op_begin(be);
    col_reduce(be, "bias_bwd", db, M, N, 1, col_plain{dy, ldy});
    op_end(be, P_BIAS_BWD, t0);
}

__global__ void axpy_kernel(float *y, const float *x, float a, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * x[i];
}

static void cu_axpy(gpt_backend *be, float *y, const float *x, float a, size_t n)
{
    double t0 = op_begin(be);
    if (n) axpy_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(y, x, a, n);
    op_end(be, P_AXPY, t0);
}

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

static void cu_add(gpt_backend *be, float *out, const float *a, const float *b, size_t n)
{
    double t0 = op_begin(be);
    if (n) add_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(out, a, b, n);
    op_end(be, P_ADD, t0);
}

// ---- embeddings ----

__global__ void embed_fwd_kernel(float *x, const int *tok, const float *wte, const float *wpe, int T, int C, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t r = i / C;
    int c = (int)(i % C);
    float v = wte[(size_t)tok[r] * C + c];
    if (wpe) v += wpe[(size_t)(r % T) * C + c];
    x[i] = v;
}

static void cu_embed_fwd(gpt_backend *be, float *x, const int *tok, const float *wte, const float *wpe, int B, int T,
                         int C)
{
    double t0 = op_begin(be);
    size_t n = (size_t)B * T * C;
    if (n) embed_fwd_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(x, tok, wte, wpe, T, C, n);
    op_end(be, P_EMBED_FWD, t0);
}

__global__ void iota_kernel(int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) v[i] = i;
}

// After a stable sort of (row, source index): the block at the head of each run of equal rows
// adds that run's sources in ascending source order; other blocks leave at once.
__global__ void segment_add_kernel(float *dst, const float *src, const int *keys, const int *vals, const float *scale,
                                   int n, int C)
{
    int i = blockIdx.x;
    int key = keys[i];
    if (i > 0 && keys[i - 1] == key) return;
    int end = i + 1;
    while (end < n && keys[end] == key) end++;
    float *d = dst + (size_t)key * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = d[c];
        for (int j = i; j < end; j++) {
            int s = vals[j];
            acc += (scale ? scale[s] : 1.0f) * src[(size_t)s * C + c];
        }
        d[c] = acc;
    }
}

// dst[rows[i]] += scale[i] * src[i], in order of i (see segment_add_kernel).
static void sorted_scatter_add(gpt_backend *be, const char *op, float *dst, const float *src, const int *rows,
                               const float *scale, int n, int C)
{
    if (n <= 0 || C <= 0) return;
    cudaStream_t st = CTX(be)->stream;
    size_t cub_bytes = 0;
    CK(op, cub::DeviceRadixSort::SortPairs(NULL, cub_bytes, (const int *)NULL, (int *)NULL, (const int *)NULL,
                                           (int *)NULL, n, 0, 32, st));
    size_t ib = align256((size_t)n * sizeof(int));
    char *s = (char *)scratch(be, 3 * ib + align256(cub_bytes), op);
    int *vals_in = (int *)s, *keys_out = (int *)(s + ib), *vals_out = (int *)(s + 2 * ib);
    void *tmp = s + 3 * ib;
    iota_kernel<<<nblocks(n, 256), 256, 0, st>>>(vals_in, n);
    // LSD radix sort is stable: equal rows keep ascending source order.
    CK(op, cub::DeviceRadixSort::SortPairs(tmp, cub_bytes, rows, keys_out, vals_in, vals_out, n, 0, 32, st));
    int threads = C >= 256 ? 256 : C > 32 ? (C + 31) / 32 * 32 : 32;
    segment_add_kernel<<<n, threads, 0, st>>>(dst, src, keys_out, vals_out, scale, n, C);
}

__global__ void embed_bwd_pos_kernel(float *dwpe, const float *dx, int B, int T, int C)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)T * C) return;
    size_t t = i / C, c = i % C;
    float acc = dwpe[i];
    for (int b = 0; b < B; b++) acc += dx[((size_t)b * T + t) * C + c];
    dwpe[i] = acc;
}

static void cu_embed_bwd(gpt_backend *be, float *dwte, float *dwpe, const float *dx, const int *tok, int B, int T,
                         int C)
{
    double t0 = op_begin(be);
    sorted_scatter_add(be, "embed_bwd", dwte, dx, tok, NULL, B * T, C);
    if (dwpe && T > 0 && C > 0)
        embed_bwd_pos_kernel<<<nblocks((size_t)T * C, 256), 256, 0, CTX(be)->stream>>>(dwpe, dx, B, T, C);
    op_end(be, P_EMBED_BWD, t0);
}

// ---- norms ----

enum { NORM_THREADS = 256 };

__global__ void norm_fwd_kernel(int ln, float *y, float *mean, float *rstd, const float *x, const float *w,
                                const float *b, int C, float eps)
{
    __shared__ float sh[32];
    size_t n = blockIdx.x;
    const float *xr = x + n * C;
    float *yr = y + n * C;
    float mu = 0;
    if (ln) {
        float s = 0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
        mu = block_sum(s, sh) / C;
    }
    float v = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - mu) * (xr[c] - mu);
    float var = block_sum(v, sh) / C;
    float rs = 1.0f / sqrtf(var + eps);
    if (ln)
        for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (xr[c] - mu) * rs * w[c] + b[c];
    else
        for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = w[c] * (xr[c] * rs);
    if (threadIdx.x == 0) {
        if (ln) mean[n] = mu;
        rstd[n] = rs;
    }
}

static void cu_norm_fwd(gpt_backend *be, int kind, float *y, float *mean, float *rstd, const float *x, const float *w,
                        const float *b, int N, int C, float eps)
{
    double t0 = op_begin(be);
    if (N > 0)
        norm_fwd_kernel<<<N, NORM_THREADS, 0, CTX(be)->stream>>>(kind == GPT_NORM_OP_LAYERNORM, y, mean, rstd, x, w, b,
                                                                 C, eps);
    op_end(be, P_NORM_FWD, t0);
}

__global__ void norm_bwd_dx_kernel(int ln, float *dx, const float *dy, const float *x, const float *w,
                                   const float *mean, const float *rstd, int C)
{
    __shared__ float sh[32];
    size_t n = blockIdx.x;
    const float *xr = x + n * C, *g = dy + n * C;
    float mu = ln ? mean[n] : 0, rs = rstd[n];
    float sd = 0, sdx = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xhat = (xr[c] - mu) * rs, d = g[c] * w[c];
        sd += d;
        sdx += d * xhat;
    }
    float sum_d = block_sum(sd, sh);
    float sum_dx = block_sum(sdx, sh);
    sum_d = ln ? sum_d / C : 0;
    sum_dx /= C;
    float *o = dx + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float xhat = (xr[c] - mu) * rs;
        o[c] += rs * (g[c] * w[c] - sum_d - xhat * sum_dx);
    }
}

struct col_dw {
    const float *dy, *x, *mean, *rstd;
    int C, ln;
    __device__ float operator()(int n, int c) const
    {
        float mu = ln ? mean[n] : 0;
        return dy[(size_t)n * C + c] * ((x[(size_t)n * C + c] - mu) * rstd[n]);
    }
};

static void cu_norm_bwd(gpt_backend *be, int kind, float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, const float *mean, const float *rstd, int N, int C)
{
    double t0 = op_begin(be);
    int ln = kind == GPT_NORM_OP_LAYERNORM;
    if (N > 0) norm_bwd_dx_kernel<<<N, NORM_THREADS, 0, CTX(be)->stream>>>(ln, dx, dy, x, w, mean, rstd, C);
    col_reduce(be, "norm_bwd", dw, N, C, 1, col_dw{dy, x, mean, rstd, C, ln});
    if (ln) col_reduce(be, "norm_bwd", db, N, C, 1, col_plain{dy, C});
    op_end(be, P_NORM_BWD, t0);
}

// ---- rotary embedding ----

__global__ void rope_kernel(float *x, int ld, int T, int nh, int D, const float *cs, const float *sn, float sgn,
                            size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    int half = D / 2;
    int k = (int)(i % half);
    size_t rh = i / half;
    int h = (int)(rh % nh);
    size_t r = rh / nh;
    float *v = x + r * ld + (size_t)h * D;
    size_t p = (r % T) * half + k;
    float a = v[k], b = v[k + half], c = cs[p], s = sgn * sn[p];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
}

static void cu_rope(gpt_backend *be, float *x, int ld, int B, int T, int nh, int D, const float *cos_t,
                    const float *sin_t, int inverse)
{
    double t0 = op_begin(be);
    size_t n = (size_t)B * T * nh * (D / 2);
    if (n)
        rope_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(x, ld, T, nh, D, cos_t, sin_t,
                                                                  inverse ? -1.0f : 1.0f, n);
    op_end(be, P_ROPE, t0);
}

__global__ void rope_pos_kernel(float *x, int ld, int nh, int D, const float *cs, const float *sn, const int *pos,
                                size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    int half = D / 2;
    int k = (int)(i % half);
    size_t rh = i / half;
    int h = (int)(rh % nh);
    size_t r = rh / nh;
    float *v = x + r * ld + (size_t)h * D;
    size_t p = (size_t)pos[r] * half + k;
    float a = v[k], b = v[k + half], c = cs[p], s = sn[p];
    v[k] = a * c - b * s;
    v[k + half] = b * c + a * s;
}

static void cu_rope_pos(gpt_backend *be, float *x, int ld, int n, int nh, int D, const float *cos_t,
                        const float *sin_t, const int *pos)
{
    double t0 = op_begin(be);
    size_t m = (size_t)n * nh * (D / 2);
    if (m) rope_pos_kernel<<<nblocks(m, 256), 256, 0, CTX(be)->stream>>>(x, ld, nh, D, cos_t, sin_t, pos, m);
    op_end(be, P_ROPE_POS, t0);
}

__global__ void kv_store_kernel(float *kc, float *vc, const float *k, const float *v, int ld, const int *seq,
                                const int *pos, int ring, int w, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t r = i / w, c = i % w;
    size_t slot = ((size_t)seq[r] * ring + (size_t)(pos[r] % ring)) * w + c;
    kc[slot] = k[r * ld + c];
    vc[slot] = v[r * ld + c];
}

static void cu_kv_store(gpt_backend *be, float *kc, float *vc, const float *k, const float *v, int ld, const int *seq,
                        const int *pos, int n, int ring, int KV, int D)
{
    double t0 = op_begin(be);
    size_t m = (size_t)n * KV * D;
    if (m) kv_store_kernel<<<nblocks(m, 256), 256, 0, CTX(be)->stream>>>(kc, vc, k, v, ld, seq, pos, ring, KV * D, m);
    op_end(be, P_KV_STORE, t0);
}

// ---- simple attention (GPT_CUDA_ATTN=simple; attn_flash.cuh is the default): one block per
// (batch, head, query) row for the forward and dQ, one per (batch, kv head, key) row for dK and
// dV. Scores of a row live in shared memory, so T is bounded by it. ----

enum { ATT_THREADS = 128 };

__device__ __forceinline__ int attn_lo(int t, int window) { return window > 0 && t - window + 1 > 0 ? t - window + 1 : 0; }

// dot of a shared vector with a global one, by one warp; every lane gets the result
__device__ __forceinline__ float warp_dot(const float *a, const float *b, int D)
{
    float s = 0;
    for (int i = threadIdx.x & 31; i < D; i += 32) s += a[i] * b[i];
    return warp_sum(s);
}

__global__ void attn_fwd_kernel(float *out, float *lse, const float *qkv, const float *sinks, int T, int H, int KV,
                                int D, int window, float scale)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *q = sm, *s = sm + D;
    int t = blockIdx.x % T, h = (blockIdx.x / T) % H, b = blockIdx.x / (T * H);
    int ld = (H + 2 * KV) * D, kh = h / (H / KV), lo = attn_lo(t, window), n = t - lo + 1;
    const float *qg = qkv + (size_t)(b * T + t) * ld + (size_t)h * D;
    const float *kbase = qkv + (size_t)(b * T) * ld + (size_t)(H + kh) * D;
    const float *vbase = qkv + (size_t)(b * T) * ld + (size_t)(H + KV + kh) * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) q[i] = qg[i];
    __syncthreads();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int jj = warp; jj < n; jj += nw) {
        float d = warp_dot(q, kbase + (size_t)(lo + jj) * ld, D);
        if (lane == 0) s[jj] = d * scale;
    }
    __syncthreads();
    float m = sinks ? sinks[h] : -INFINITY;
    for (int jj = threadIdx.x; jj < n; jj += blockDim.x) m = fmaxf(m, s[jj]);
    m = block_max(m, red);
    float z = 0;
    for (int jj = threadIdx.x; jj < n; jj += blockDim.x) z += (s[jj] = expf(s[jj] - m));
    z = block_sum(z, red); // its leading barrier also publishes s
    if (sinks) z += expf(sinks[h] - m);
    float *o = out + (size_t)(b * T + t) * H * D + (size_t)h * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0;
        for (int jj = 0; jj < n; jj++) acc += (s[jj] / z) * vbase[(size_t)(lo + jj) * ld + i];
        o[i] = acc;
    }
    if (threadIdx.x == 0) lse[((size_t)b * H + h) * T + t] = m + logf(z);
}

static int attn_smem(gpt_backend *be, const void *kernel, size_t bytes, const char *op)
{
    cuda_ctx *c = CTX(be);
    if (bytes <= 48 * 1024) return 0;
    if (bytes > (size_t)c->max_smem) {
        fprintf(stderr, "gpt: cuda backend: %s: a row needs %zu bytes of shared memory, the device has %d per block: "
                        "shorten the sequence or the window\n", op, bytes, c->max_smem);
        abort();
    }
    CK(op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}

static void attn_fwd_simple(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B,
                            int T, int H, int KV, int D, int window, float scale)
{
    int span = window > 0 && window < T ? window : T;
    size_t smem = (size_t)(D + span + 8) * sizeof(float); /* +8: paired score loads, see attn_bwd_simple */
    size_t rows = (size_t)B * H * T;
    attn_smem(be, (const void *)attn_fwd_kernel, smem, "attn_fwd");
    attn_fwd_kernel<<<(unsigned)rows, ATT_THREADS, smem, CTX(be)->stream>>>(out, lse, qkv, sinks, T, H, KV, D, window,
                                                                             scale);
}

// dQ of one (b, h, t) row; also drow = dout . out and the row's sink-gradient term, kept for later.
__global__ void attn_bwd_q_kernel(float *dqkv, float *drow_buf, float *sinkpart, const float *dout, const float *out,
                                  const float *lse, const float *qkv, const float *sinks, int T, int H, int KV, int D,
                                  int window, float scale)
{
    extern __shared__ float sm[];
    __shared__ float red[32];
    float *q = sm, *go = sm + D, *ds = sm + 2 * D;
    int t = blockIdx.x % T, h = (blockIdx.x / T) % H, b = blockIdx.x / (T * H);
    int ld = (H + 2 * KV) * D, kh = h / (H / KV), lo = attn_lo(t, window), n = t - lo + 1;
    size_t row = (size_t)b * T + t;
    const float *qg = qkv + row * ld + (size_t)h * D;
    const float *gog = dout + row * H * D + (size_t)h * D, *og = out + row * H * D + (size_t)h * D;
    const float *kbase = qkv + (size_t)(b * T) * ld + (size_t)(H + kh) * D;
    const float *vbase = qkv + (size_t)(b * T) * ld + (size_t)(H + KV + kh) * D;
    float dr = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        q[i] = qg[i];
        go[i] = gog[i];
        dr += gog[i] * og[i];
    }
    float drow = block_sum(dr, red); // barrier: q, go published
    float l = lse[((size_t)b * H + h) * T + t];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int jj = warp; jj < n; jj += nw) {
        size_t j = (size_t)(lo + jj) * ld;
        float dot = warp_dot(q, kbase + j, D), dv = warp_dot(go, vbase + j, D);
        if (lane == 0) {
            float p = expf(dot * scale - l);
            ds[jj] = p * (dv - drow) * scale;
        }
    }
    __syncthreads();
    float *dq = dqkv + row * ld + (size_t)h * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0;
        for (int jj = 0; jj < n; jj++) acc += ds[jj] * kbase[(size_t)(lo + jj) * ld + i];
        dq[i] = acc;
    }
    if (threadIdx.x == 0) {
        size_t r = ((size_t)b * H + h) * T + t;
        drow_buf[r] = drow;
        sinkpart[r] = sinks ? -expf(sinks[h] - l) * drow : 0.0f;
    }
}

// dK and dV of one (b, kv head, key j) row: the sum over the group's heads and the queries that see j.
__global__ void attn_bwd_kv_kernel(float *dqkv, const float *drow_buf, const float *dout, const float *lse,
                                   const float *qkv, int T, int H, int KV, int D, int window, float scale)
{
    extern __shared__ float sm[];
    float *k = sm, *v = sm + D, *dk = sm + 2 * D, *dv = sm + 3 * D, *P = sm + 4 * D;
    int j = blockIdx.x % T, kh = (blockIdx.x / T) % KV, b = blockIdx.x / (T * KV);
    int ld = (H + 2 * KV) * D, grp = H / KV;
    int hi = window > 0 && j + window - 1 < T - 1 ? j + window - 1 : T - 1, n = hi - j + 1;
    float *DS = P + n;
    size_t krow = ((size_t)b * T + j) * ld;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        k[i] = qkv[krow + (size_t)(H + kh) * D + i];
        v[i] = qkv[krow + (size_t)(H + KV + kh) * D + i];
        dk[i] = 0;
        dv[i] = 0;
    }
    __syncthreads();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int h = kh * grp; h < (kh + 1) * grp; h++) {
        for (int tt = warp; tt < n; tt += nw) {
            size_t row = (size_t)b * T + j + tt;
            float dot = warp_dot(k, qkv + row * ld + (size_t)h * D, D);
            float dp = warp_dot(v, dout + row * H * D + (size_t)h * D, D);
            if (lane == 0) {
                size_t r = ((size_t)b * H + h) * T + j + tt;
                float p = expf(dot * scale - lse[r]);
                P[tt] = p;
                DS[tt] = p * (dp - drow_buf[r]) * scale;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < D; i += blockDim.x) {
            float ak = dk[i], av = dv[i];
            for (int tt = 0; tt < n; tt++) {
                size_t row = (size_t)b * T + j + tt;
                ak += DS[tt] * qkv[row * ld + (size_t)h * D + i];
                av += P[tt] * dout[row * H * D + (size_t)h * D + i];
            }
            dk[i] = ak;
            dv[i] = av;
        }
        __syncthreads(); // P and DS are rewritten for the next head
    }
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        dqkv[krow + (size_t)(H + kh) * D + i] = dk[i];
        dqkv[krow + (size_t)(H + KV + kh) * D + i] = dv[i];
    }
}

// dsinks[h] += sum over (b, t) of the rows' terms, in one block per head: a fixed-order tree.
__global__ void attn_dsinks_kernel(float *dsinks, const float *sinkpart, int B, int H, int T)
{
    /* the row terms cancel: sum them in double, in a fixed order (thread partials, then thread 0) */
    __shared__ double part[256];
    int h = blockIdx.x;
    double s = 0;
    for (int bt = threadIdx.x; bt < B * T; bt += blockDim.x) s += sinkpart[((size_t)(bt / T) * H + h) * T + bt % T];
    part[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0;
        for (int i = 0; i < (int)blockDim.x; i++) tot += part[i];
        dsinks[h] += (float)tot;
    }
}

static void attn_bwd_simple(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                            const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D,
                            int window, float scale)
{
    cudaStream_t st = CTX(be)->stream;
    size_t rows = (size_t)B * H * T;
    int span = window > 0 && window < T ? window : T;
    float *drow = (float *)scratch(be, 2 * align256(rows * sizeof(float)), "attn_bwd");
    float *sinkpart = drow + align256(rows * sizeof(float)) / sizeof(float);
    /* +8: the compiler pairs the loads of a row's scores (LDS.64) and may read one past an odd end */
    size_t smq = (size_t)(2 * D + span + 8) * sizeof(float), smkv = (size_t)(4 * D + 2 * span + 8) * sizeof(float);
    attn_smem(be, (const void *)attn_bwd_q_kernel, smq, "attn_bwd");
    attn_smem(be, (const void *)attn_bwd_kv_kernel, smkv, "attn_bwd");
    attn_bwd_q_kernel<<<(unsigned)rows, ATT_THREADS, smq, st>>>(dqkv, drow, sinkpart, dout, out, lse, qkv, sinks, T, H,
                                                                 KV, D, window, scale);
    attn_bwd_kv_kernel<<<(unsigned)((size_t)B * KV * T), ATT_THREADS, smkv, st>>>(dqkv, drow, dout, lse, qkv, T, H, KV,
                                                                                   D, window, scale);
    if (sinks && dsinks) attn_dsinks_kernel<<<H, 256, 0, st>>>(dsinks, sinkpart, B, H, T);
}

#include "attn_flash.cuh"

// ---- activations ----

#define GELU_K 0.7978845608028654f // sqrt(2/pi)

__global__ void gelu_fwd_kernel(float *y, const float *x, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    y[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + 0.044715f * v * v * v)));
}

__global__ void gelu_bwd_kernel(float *dx, const float *x, const float *dy, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i], u = GELU_K * (v + 0.044715f * v * v * v), t = tanhf(u);
    float du = GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
}

static void cu_gelu_fwd(gpt_backend *be, float *y, const float *x, size_t n)
{
    double t0 = op_begin(be);
    if (n) gelu_fwd_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(y, x, n);
    op_end(be, P_GELU_FWD, t0);
}

static void cu_gelu_bwd(gpt_backend *be, float *dx, const float *x, const float *dy, size_t n)
{
    double t0 = op_begin(be);
    if (n) gelu_bwd_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(dx, x, dy, n);
    op_end(be, P_GELU_BWD, t0);
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_fwd_kernel(float *y, const float *gu, size_t n, float alpha, float limit)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = gu[2 * i], l = gu[2 * i + 1];
    g = g > limit ? limit : g;
    l = l > limit ? limit : l < -limit ? -limit : l;
    y[i] = g * sigmoid_f(alpha * g) * (l + 1.0f);
}

__global__ void swiglu_bwd_kernel(float *dgu, const float *gu, const float *dy, size_t n, float alpha, float limit)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g0 = gu[2 * i], l0 = gu[2 * i + 1];
    float g = g0 > limit ? limit : g0, l = l0 > limit ? limit : l0 < -limit ? -limit : l0;
    float s = sigmoid_f(alpha * g), glu = g * s, d = dy[i];
    // the clamp passes the gradient where the input lies inside the bounds (edges included)
    dgu[2 * i] = g0 <= limit ? d * (l + 1.0f) * (s + g * alpha * s * (1.0f - s)) : 0.0f;
    dgu[2 * i + 1] = (l0 >= -limit && l0 <= limit) ? d * glu : 0.0f;
}

// (N, 2F) interleaved rows are one flat run of (gate, linear) pairs: index i = n * F + f.
static void cu_swiglu_fwd(gpt_backend *be, float *y, const float *gu, int N, int F, float alpha, float limit)
{
    double t0 = op_begin(be);
    size_t n = (size_t)N * F;
    if (n) swiglu_fwd_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(y, gu, n, alpha, limit);
    op_end(be, P_SWIGLU_FWD, t0);
}

static void cu_swiglu_bwd(gpt_backend *be, float *dgu, const float *gu, const float *dy, int N, int F, float alpha,
                          float limit)
{
    double t0 = op_begin(be);
    size_t n = (size_t)N * F;
    if (n) swiglu_bwd_kernel<<<nblocks(n, 256), 256, 0, CTX(be)->stream>>>(dgu, gu, dy, n, alpha, limit);
    op_end(be, P_SWIGLU_BWD, t0);
}

// ---- mixture of experts: rows are short (E experts), one thread or one warp per row ----

__global__ void topk_softmax_kernel(int *idx, float *w, const float *logits, int N, int E, int k)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float *x = logits + (size_t)n * E;
    int *id = idx + (size_t)n * k;
    float *wr = w + (size_t)n * k;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++) taken |= id[i] == e;
            if (!taken && (best < 0 || x[e] > x[best])) best = e;
        }
        id[j] = best;
    }
    float m = x[id[0]], z = 0;
    for (int j = 0; j < k; j++) z += (wr[j] = expf(x[id[j]] - m));
    for (int j = 0; j < k; j++) wr[j] /= z;
}

static void cu_topk_softmax(gpt_backend *be, int *idx, float *w, const float *logits, int N, int E, int k)
{
    double t0 = op_begin(be);
    if (N > 0 && k > 0) topk_softmax_kernel<<<nblocks(N, 128), 128, 0, CTX(be)->stream>>>(idx, w, logits, N, E, k);
    op_end(be, P_TOPK_SOFTMAX, t0);
}

__global__ void topk_softmax_bwd_kernel(float *dlogits, const float *dw, const float *w, const int *idx, int N, int E,
                                        int k)
{
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float *g = dw + (size_t)n * k, *wr = w + (size_t)n * k;
    float dot = 0;
    for (int j = 0; j < k; j++) dot += wr[j] * g[j];
    for (int j = 0; j < k; j++) dlogits[(size_t)n * E + idx[(size_t)n * k + j]] += wr[j] * (g[j] - dot);
}

static void cu_topk_softmax_bwd(gpt_backend *be, float *dlogits, const float *dw, const float *w, const int *idx,
                                int N, int E, int k)
{
    double t0 = op_begin(be);
    if (N > 0 && k > 0)
        topk_softmax_bwd_kernel<<<nblocks(N, 128), 128, 0, CTX(be)->stream>>>(dlogits, dw, w, idx, N, E, k);
    op_end(be, P_TOPK_SOFTMAX_BWD, t0);
}

// one warp per row
__global__ void softmax_rows_kernel(float *p, const float *x, int N, int E)
{
    int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *xr = x + (size_t)n * E;
    float *pr = p + (size_t)n * E;
    float m = -INFINITY;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, xr[e]);
    m = warp_max(m);
    float z = 0;
    for (int e = lane; e < E; e += 32) z += expf(xr[e] - m);
    z = warp_sum(z);
    for (int e = lane; e < E; e += 32) pr[e] = expf(xr[e] - m) / z;
}

static void cu_softmax_rows(gpt_backend *be, float *p, const float *x, int N, int E)
{
    double t0 = op_begin(be);
    if (N > 0) softmax_rows_kernel<<<nblocks((size_t)N * 32, 256), 256, 0, CTX(be)->stream>>>(p, x, N, E);
    op_end(be, P_SOFTMAX_ROWS, t0);
}

__global__ void softmax_rows_bwd_shared_kernel(float *dx, const float *p, const float *g, int N, int E)
{
    int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *pr = p + (size_t)n * E;
    float dot = 0;
    for (int e = lane; e < E; e += 32) dot += pr[e] * g[e];
    dot = warp_sum(dot);
    for (int e = lane; e < E; e += 32) dx[(size_t)n * E + e] += pr[e] * (g[e] - dot);
}

static void cu_softmax_rows_bwd_shared(gpt_backend *be, float *dx, const float *p, const float *g, int N, int E)
{
    double t0 = op_begin(be);
    if (N > 0)
        softmax_rows_bwd_shared_kernel<<<nblocks((size_t)N * 32, 256), 256, 0, CTX(be)->stream>>>(dx, p, g, N, E);
    op_end(be, P_SOFTMAX_ROWS_BWD_SHARED, t0);
}

static void cu_colsum(gpt_backend *be, float *out, const float *x, int N, int E)
{
    double t0 = op_begin(be);
    col_reduce(be, "colsum", out, N, E, 0, col_plain{x, E});
    op_end(be, P_COLSUM, t0);
}

__global__ void gather_rows_kernel(float *dst, const float *src, const int *rows, const float *scale, int C, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t r = i / C, c = i % C;
    float v = src[(size_t)rows[r] * C + c];
    dst[i] = scale ? scale[r] * v : v;
}

static void cu_gather_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale, int n,
                           int C)
{
    double t0 = op_begin(be);
    size_t tot = (size_t)n * C;
    if (tot) gather_rows_kernel<<<nblocks(tot, 256), 256, 0, CTX(be)->stream>>>(dst, src, rows, scale, C, tot);
    op_end(be, P_GATHER_ROWS, t0);
}

static void cu_scatter_add_rows(gpt_backend *be, float *dst, const float *src, const int *rows, const float *scale,
                                int n, int C)
{
    double t0 = op_begin(be);
    sorted_scatter_add(be, "scatter_add_rows", dst, src, rows, scale, n, C);
    op_end(be, P_SCATTER_ADD_ROWS, t0);
}

__global__ void row_dot_kernel(float *out, const float *a, const int *rows, const float *b, int n, int C)
{
    int i = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (i >= n) return;
    const float *x = a + (size_t)rows[i] * C, *y = b + (size_t)i * C;
    float d = 0;
    for (int c = lane; c < C; c += 32) d += x[c] * y[c];
    d = warp_sum(d);
    if (lane == 0) out[i] = d;
}

static void cu_row_dot(gpt_backend *be, float *out, const float *a, const int *rows, const float *b, int n, int C)
{
    double t0 = op_begin(be);
    if (n > 0) row_dot_kernel<<<nblocks((size_t)n * 32, 256), 256, 0, CTX(be)->stream>>>(out, a, rows, b, n, C);
    op_end(be, P_ROW_DOT, t0);
}

// ---- loss: one block per row; every read of the row ends before the first write (in-place) ----

enum { XENT_THREADS = 512 };

__global__ void xent_kernel(float *losses, int *correct, float *dlogits, const float *logits, const int *targets,
                            int V, int Vp, float smoothing, float dscale)
{
    __shared__ float shf[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    size_t n = blockIdx.x;
    const float *x = logits + n * Vp;
    int t = targets[n];
    float m = -INFINITY;
    int am = 0x7fffffff;
    for (int v = threadIdx.x; v < V; v += blockDim.x) argmax_merge(m, am, x[v], v);
    block_argmax(m, am, shf, shi);
    double z = 0, sum = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float xv = x[v];
        z += (double)expf(xv - m);
        sum += xv;
    }
    z = block_sum(z, shd);
    sum = block_sum(sum, shd);
    float lse = m + (float)log(z);
    float xt = t >= 0 ? x[t] : 0.0f;
    __syncthreads(); // every thread has read what it needs from x before dlogits (maybe x) is written
    if (threadIdx.x == 0) {
        if (t < 0) {
            losses[n] = 0;
            correct[n] = 0;
        } else {
            float nll = lse - xt, uni = lse - (float)(sum / V);
            losses[n] = (1.0f - smoothing) * nll + smoothing * uni;
            correct[n] = am == t;
        }
    }
    if (!dlogits) return;
    float *d = dlogits + n * Vp;
    if (t < 0) {
        for (int v = threadIdx.x; v < Vp; v += blockDim.x) d[v] = 0;
        return;
    }
    float u = smoothing / V;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        d[v] = dscale * (expf(x[v] - lse) - u - (v == t ? 1.0f - smoothing : 0.0f));
    for (int v = V + threadIdx.x; v < Vp; v += blockDim.x) d[v] = 0;
}

static void cu_xent(gpt_backend *be, float *losses, int *correct, float *dlogits, const float *logits,
                    const int *targets, int N, int V, int Vp, float smoothing, float dscale)
{
    double t0 = op_begin(be);
    if (N > 0)
        xent_kernel<<<N, XENT_THREADS, 0, CTX(be)->stream>>>(losses, correct, dlogits, logits, targets, V, Vp,
                                                              smoothing, dscale);
    op_end(be, P_XENT, t0);
}

// ---- the backend ----

#include "optim_ops.cuh"
#include "mxfp4_ops.cuh"
#include "kv_quant_ops.cuh"
#include "sample_ops.cuh"
#include "adamw_sr_ops.cuh"
#include "gemm_grouped_ops.cuh"

static void cu_destroy(gpt_backend *be)
{
    cuda_ctx *c = CTX(be);
    CK("destroy", cudaStreamSynchronize(c->stream));
    if (c->profile) {
        double total = 0;
        for (int i = 0; i < P_COUNT; i++) total += c->secs[i];
        fprintf(stderr, "gpt: cuda backend profile (%.3f s in ops, each op waited for; gemm %s, attention %s)\n", total,
                gemm_names[c->gemm_mode], c->attn_simple ? "simple" : c->attn_tc > 0 ? "tc" : c->attn_tc < 0 ? "tc with bf16/fp16 GEMMs, else flash" : "flash");
        for (int i = 0; i < P_COUNT; i++)
            if (c->calls[i])
                fprintf(stderr, "  %-26s %9.3f s %5.1f%% %8ld calls\n", op_names[i], c->secs[i],
                        total > 0 ? 100 * c->secs[i] / total : 0, c->calls[i]);
    }
    if (c->scratch) CK("destroy", cudaFree(c->scratch));
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

static int env_on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

extern "C" gpt_backend *gpt_backend_cuda(int device, gpt_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        gpt_errf(err, "cuda backend: no CUDA device visible (%s); use the cpu backend",
                 e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
        return NULL;
    }
    if (device < 0 || device >= n) {
        gpt_errf(err, "cuda backend: device %d does not exist (%d visible: 0..%d)", device, n, n - 1);
        return NULL;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        gpt_errf(err, "cuda backend: cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cuda_ctx *c = (cuda_ctx *)gpt_xcalloc(1, sizeof *c);
    c->device = device;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        gpt_errf(err, "cuda backend: creating a stream on device %d: %s", device, cudaGetErrorString(e));
        free(c);
        return NULL;
    }
    // GEMM precision: GPT_CUDA_GEMM=fp32|tf32|bf16; GPT_CUDA_TF32=1 is the older spelling of tf32
    const char *gm = getenv("GPT_CUDA_GEMM"), *am = getenv("GPT_CUDA_ATTN");
    c->gemm_mode = env_on("GPT_CUDA_TF32") ? GEMM_TF32 : GEMM_FP32;
    if (gm && *gm) {
        int k = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(gm, gemm_names[i]) == 0) k = i;
        if (k < 0) {
            gpt_errf(err, "cuda backend: GPT_CUDA_GEMM=%s: want fp32, tf32 or bf16", gm);
            cudaStreamDestroy(c->stream);
            free(c);
            return NULL;
        }
        c->gemm_mode = k;
    }
    if (am && *am && strcmp(am, "simple") != 0 && strcmp(am, "flash") != 0 && strcmp(am, "tc") != 0) {
        gpt_errf(err, "cuda backend: GPT_CUDA_ATTN=%s: want flash (the default), tc or simple", am);
        cudaStreamDestroy(c->stream);
        free(c);
        return NULL;
    }
    c->attn_simple = am && strcmp(am, "simple") == 0;
    c->attn_tc = !am || !*am ? -1 : strcmp(am, "tc") == 0;
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream);
    // fp32 means fp32: cublasSgemm's default math uses no TF32 (unless NVIDIA_TF32_OVERRIDE=1 is set)
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasSetMathMode(c->blas, c->gemm_mode == GEMM_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        gpt_errf(err, "cuda backend: starting cuBLAS on device %d: %s", device, cublasGetStatusString(s));
        cudaStreamDestroy(c->stream);
        free(c);
        return NULL;
    }
    if ((e = cudaDeviceGetAttribute(&c->max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) != cudaSuccess)
        c->max_smem = 48 * 1024;
    c->sync_each = env_on("GPT_CUDA_SYNC");
    c->profile = env_on("GPT_PROFILE");

    gpt_backend *be = (gpt_backend *)gpt_xcalloc(1, sizeof *be);
    be->name = "cuda";
    be->ctx = c;
    be->destroy = cu_destroy;
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->to_device = cu_to_device;
    be->to_host = cu_to_host;
    be->zero = cu_zero;
    be->gemm = cu_gemm;
    be->gemm_grouped = cu_gemm_grouped;
    be->bias_fwd = cu_bias_fwd;
    be->bias_bwd = cu_bias_bwd;
    be->axpy = cu_axpy;
    be->add = cu_add;
    be->embed_fwd = cu_embed_fwd;
    be->embed_bwd = cu_embed_bwd;
    be->norm_fwd = cu_norm_fwd;
    be->norm_bwd = cu_norm_bwd;
    be->rope = cu_rope;
    be->rope_pos = cu_rope_pos;
    be->kv_store = cu_kv_store;
    be->attn_cached = cu_attn_cached;
    be->attn_fwd = cu_attn_fwd;
    be->attn_bwd = cu_attn_bwd;
    be->gelu_fwd = cu_gelu_fwd;
    be->gelu_bwd = cu_gelu_bwd;
    be->swiglu_fwd = cu_swiglu_fwd;
    be->swiglu_bwd = cu_swiglu_bwd;
    be->topk_softmax = cu_topk_softmax;
    be->topk_softmax_bwd = cu_topk_softmax_bwd;
    be->softmax_rows = cu_softmax_rows;
    be->softmax_rows_bwd_shared = cu_softmax_rows_bwd_shared;
    be->colsum = cu_colsum;
    be->gather_rows = cu_gather_rows;
    be->scatter_add_rows = cu_scatter_add_rows;
    be->row_dot = cu_row_dot;
    be->xent = cu_xent;
    be->adamw = cu_adamw;
    be->sumsq = cu_sumsq;
    be->scale = cu_scale;
    be->nonfinite = cu_nonfinite;
    be->mxfp4_matmul = cu_mxfp4_matmul;
    be->kv_store_q = cu_kv_store_q;
    be->attn_cached_q = cu_attn_cached_q;
    be->sample = cu_sample;
    be->adamw_sr = cu_adamw_sr;
    return be;
}
