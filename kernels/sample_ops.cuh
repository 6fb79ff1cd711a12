// sample_ops.cuh: sampling on the device (included by backend_cuda.cu): the sample op of
// backend.h, with lib/sampling.c (gpt_sampler_candidates, gpt_sample) as the definition. Only the
// chosen id of each row comes back to the host.
//
// Greedy (temperature <= 0 or top_k == 1): one block per row finds the argmax as gpt_argmax does
// (NaN never wins, the lowest id on a tie, id 0 for a row of NaN).
// Otherwise, row by row:
//   1. prep (one block): the maximum and argmax over the non-NaN logits, the number of candidates
//      (logits > -inf), the softmax denominator in double, and a 64-bit sort key per token:
//      high word the logit's order, inverted (larger first), low word the id (ties: lower id
//      first). Non-candidates get the largest high word and sort last. -0 is keyed as +0, since
//      the CPU's probabilities of the two are equal.
//   2. an ascending radix sort of the keys (cub): the CPU's candidate order, as a probability is
//      a non-decreasing function of the logit and the CPU breaks ties by id. Keys are unique, so
//      the sort needs no stability.
//   3. pick (one block): probabilities recomputed from the sorted ids with the CPU's formula,
//      then top-k, top-p, min-p and the draw as in sampling.c, each "first index where" found by
//      a block-wide prefix sum over tiles of the sorted list. top-p's threshold has sampling.h's
//      GPT_TOP_P_SLACK, as on the CPU: with exactly tied probabilities the cumulative mass lands on
//      the threshold, and the prefix sum's order would otherwise decide how many are kept.
// The sums run in another order than the CPU's sequential ones and CUDA's exp may differ from
// glibc's in the last bit: a draw can differ only when u (or top_p's threshold) lies within a
// few ulps of a boundary of the cumulative distribution.

#include <cub/block/block_scan.cuh>

enum { SMP_T = 512 };

struct smp_row {
    float mx;   // max over non-NaN logits (-inf when none)
    int amax;   // gpt_argmax's answer
    int nf;     // candidates: logits > -inf
    int pad;
    double S;   // sum of exp((l - mx) / temperature) over the candidates
};

// greedy rows: out[r] = -1 - argmax (a single candidate: no draw)
__global__ void sample_argmax_kernel(int *out, const float *logits, int ld, int V)
{
    __shared__ float shv[32];
    __shared__ int shi[32];
    const float *x = logits + (size_t)blockIdx.x * ld;
    float v = -INFINITY;
    int i = 0x7fffffff;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        if (!isnan(x[j])) argmax_merge(v, i, x[j], j);
    block_argmax(v, i, shv, shi);
    if (threadIdx.x == 0) out[blockIdx.x] = -1 - (i == 0x7fffffff ? 0 : i);
}

// a float's bits as an unsigned that orders like the float (for non-NaN values)
__device__ __forceinline__ unsigned smp_order(float x)
{
    unsigned u = __float_as_uint(x == 0.0f ? 0.0f : x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void sample_prep_kernel(smp_row *row, unsigned long long *keys, const float *x, int V, double temp)
{
    __shared__ float shv[32];
    __shared__ int shi[32], shn[32];
    __shared__ double shd[32];
    float v = -INFINITY;
    int i = 0x7fffffff, nf = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float xj = x[j];
        if (!isnan(xj)) argmax_merge(v, i, xj, j);
        nf += xj > -INFINITY;
    }
    block_argmax(v, i, shv, shi);
    nf = block_sum(nf, shn);
    const float mx = v;
    const int finite = isfinite(mx);
    double S = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float xj = x[j];
        int cand = xj > -INFINITY;
        if (cand && finite) S += exp(((double)xj - (double)mx) / temp);
        unsigned hi = cand ? ~smp_order(xj) : 0xffffffffu;
        keys[j] = ((unsigned long long)hi << 32) | (unsigned)j;
    }
    S = block_sum(S, shd);
    if (threadIdx.x == 0) {
        row->mx = mx;
        row->amax = i == 0x7fffffff ? 0 : i;
        row->nf = nf;
        row->pad = 0;
        row->S = S;
    }
}

typedef cub::BlockScan<double, SMP_T> smp_scan;

// The first i < n whose inclusive prefix sum of f(0..i) is >= thr (strict: > thr), or n when none.
// Every thread gets the answer.
template <class F>
__device__ int smp_first_prefix(int n, F f, double thr, int strict, smp_scan::TempStorage &ts, int *first)
{
    double carry = 0;
    for (int b = 0; b < n; b += SMP_T) {
        int i = b + (int)threadIdx.x;
        double val = i < n ? f(i) : 0.0, incl, agg;
        smp_scan(ts).InclusiveSum(val, incl, agg);
        incl += carry;
        if (threadIdx.x == 0) *first = 0x7fffffff;
        __syncthreads();
        if (i < n && (strict ? incl > thr : incl >= thr)) atomicMin(first, i); // a minimum: any order gives it
        __syncthreads();
        int k = *first;
        __syncthreads(); // everyone has read it (and the scan storage is free) before the next tile
        if (k != 0x7fffffff) return k;
        carry += agg;
    }
    return n;
}

// the first i in [from, n) with pred(i), or n
template <class P> __device__ int smp_first_where(int from, int n, P pred, int *first)
{
    if (threadIdx.x == 0) *first = 0x7fffffff;
    __syncthreads();
    for (int i = from + (int)threadIdx.x; i < n; i += SMP_T)
        if (pred(i)) {
            atomicMin(first, i);
            break; // later i of this thread are larger
        }
    __syncthreads();
    int k = *first;
    __syncthreads();
    return k == 0x7fffffff ? n : k;
}

template <class F> __device__ double smp_total(int n, F f, double *shd)
{
    double s = 0;
    for (int i = threadIdx.x; i < n; i += SMP_T) s += f(i);
    return block_sum(s, shd);
}

__global__ void __launch_bounds__(SMP_T) sample_pick_kernel(int *out, const smp_row *row,
                                                            const unsigned long long *keys, const float *x,
                                                            gpt_sample_args a, const double *u)
{
    __shared__ smp_scan::TempStorage ts;
    __shared__ int first;
    __shared__ double shd[32];
    const smp_row s = *row;
    if (!isfinite(s.mx)) { // sampling.c: nothing finite (or +inf) falls back to the argmax rule
        if (threadIdx.x == 0) *out = -1 - s.amax;
        return;
    }
    auto id = [&](int k) { return (int)(unsigned)(keys[k] & 0xffffffffull); };
    // the probability of the k-th candidate, as sampling.c computes it (before renormalizing)
    auto P = [&](int k) { return exp(((double)x[id(k)] - (double)s.mx) / a.temperature) / s.S; };
    int n = s.nf;
    if (a.top_k > 0 && a.top_k < n) n = a.top_k;
    if (a.top_p < 1) {
        double tot = smp_total(n, P, shd);
        int k = smp_first_prefix(n, P, a.top_p * tot * (1 - GPT_TOP_P_SLACK), 0, ts, &first);
        if (k < n) n = k + 1;
    }
    if (a.min_p > 0) {
        double thr = a.min_p * P(0);
        n = smp_first_where(1, n, [&](int k) { return !(P(k) >= thr); }, &first);
    }
    if (n == 1) {
        if (threadIdx.x == 0) *out = -1 - id(0);
        return;
    }
    double tot = smp_total(n, P, shd), uu = *u;
    int k = smp_first_prefix(n, [&](int j) { return P(j) / tot; }, uu, 1, ts, &first);
    if (k >= n) k = n - 1; // rounding left u above the total
    if (threadIdx.x == 0) *out = id(k);
}

static void cu_sample(gpt_backend *be, int *out, const float *logits, int ld, int n, int V, const gpt_sample_args *a,
                      const double *u)
{
    double t0 = op_begin(be);
    cudaStream_t st = CTX(be)->stream;
    if (n > 0 && V > 0) {
        if (a->temperature <= 0 || a->top_k == 1) {
            sample_argmax_kernel<<<(unsigned)n, SMP_T, 0, st>>>(out, logits, ld, V);
        } else {
            size_t cub_bytes = 0;
            CK("sample", cub::DeviceRadixSort::SortKeys(NULL, cub_bytes, (const unsigned long long *)NULL,
                                                        (unsigned long long *)NULL, V, 0, 64, st));
            size_t kb = align256((size_t)V * sizeof(unsigned long long)), rb = align256(sizeof(smp_row));
            char *s = (char *)scratch(be, 2 * kb + rb + align256(cub_bytes), "sample");
            unsigned long long *kin = (unsigned long long *)s, *kout = (unsigned long long *)(s + kb);
            smp_row *row = (smp_row *)(s + 2 * kb);
            void *tmp = s + 2 * kb + rb;
            for (int r = 0; r < n; r++) { // one row at a time: the scratch holds one row's keys
                const float *x = logits + (size_t)r * ld;
                sample_prep_kernel<<<1, SMP_T, 0, st>>>(row, kin, x, V, a->temperature);
                CK("sample", cub::DeviceRadixSort::SortKeys(tmp, cub_bytes, kin, kout, V, 0, 64, st));
                sample_pick_kernel<<<1, SMP_T, 0, st>>>(out + r, row, kout, x, *a, u + r);
            }
        }
    }
    op_end(be, P_SAMPLE, t0);
}
