// kv_quant_ops.cuh: the KV cache in bf16 or int8 on the device (included by backend_cuda.cu after
// attn_flash.cuh, whose split-K decoding this follows): kv_store_q and attn_cached_q of backend.h,
// with lib/kv_quant.c as the reference.
//
// The store rounds exactly as the CPU does (bf16: the same round-to-nearest-even bit formula, NaN
// kept quiet the same way; int8: absmax / 127 scale, 127 / absmax multiplier, rintf, clamp to
// +-127, each step one IEEE operation), so both backends hold the same cache bytes for the same
// keys and values. The attention is the f32 split-K kernel with the entries converted as they are
// read: a bf16 entry widens exactly; an int8 key row's dot is summed over the raw integers and
// scaled once (as the CPU does), an int8 value row's probability is scaled once before the sum.
// The f32 kernels are left as they were: this is separate code, not a template over them.

__device__ __forceinline__ unsigned short kvq_f32_to_bf16(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float kvq_bf16_to_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }

// bf16: one thread per element of the n rows' keys and values
__global__ void kv_store_bf16_kernel(unsigned short *kc, unsigned short *vc, const float *k, const float *v, int ld,
                                     const int *seq, const int *pos, int ring, int w, size_t n)
{
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t r = i / w, c = i % w;
    size_t slot = ((size_t)seq[r] * ring + (size_t)(pos[r] % ring)) * w + c;
    kc[slot] = kvq_f32_to_bf16(k[r * ld + c]);
    vc[slot] = kvq_f32_to_bf16(v[r * ld + c]);
}

// int8: one warp per (row, kv head, k or v); the lanes share the head's absmax, then each lane
// quantizes its elements with quant_head's arithmetic
__global__ void kv_store_int8_kernel(signed char *kc, signed char *vc, float *ks, float *vs, const float *k,
                                     const float *v, int ld, const int *seq, const int *pos, int ring, int KV, int D,
                                     size_t nwarps)
{
    size_t wi = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (wi >= nwarps) return; // whole warps leave together
    int which = (int)(wi & 1);
    size_t rh = wi >> 1, r = rh / KV;
    int h = (int)(rh % KV);
    const float *src = (which ? v : k) + r * ld + (size_t)h * D;
    size_t at = (size_t)seq[r] * ring + (size_t)(pos[r] % ring);
    signed char *dst = (which ? vc : kc) + (at * KV + h) * D;
    float amax = 0;
    for (int i = lane; i < D; i += 32) amax = fmaxf(amax, fabsf(src[i]));
    amax = warp_max(amax);
    float sc = __fdiv_rn(amax, 127.0f), inv = amax > 0 ? __fdiv_rn(127.0f, amax) : 0.0f;
    for (int i = lane; i < D; i += 32) {
        float q = rintf(__fmul_rn(src[i], inv));
        dst[i] = (signed char)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
    }
    if (lane == 0) (which ? vs : ks)[at * KV + h] = sc;
}

static void cu_kv_store_q(gpt_backend *be, int dtype, void *kc, void *vc, float *ks, float *vs, const float *k,
                          const float *v, int ld, const int *seq, const int *pos, int n, int ring, int KV, int D)
{
    double t0 = op_begin(be);
    cudaStream_t st = CTX(be)->stream;
    if (dtype != GPT_KV_BF16 && dtype != GPT_KV_INT8)
        cuda_die("kv_store_q", "dtype", "not GPT_KV_BF16 or GPT_KV_INT8", __FILE__, __LINE__);
    if (n > 0 && KV > 0 && D > 0) {
        if (dtype == GPT_KV_BF16) {
            size_t m = (size_t)n * KV * D;
            kv_store_bf16_kernel<<<nblocks(m, 256), 256, 0, st>>>((unsigned short *)kc, (unsigned short *)vc, k, v, ld,
                                                                  seq, pos, ring, KV * D, m);
        } else {
            size_t warps = (size_t)n * KV * 2;
            kv_store_int8_kernel<<<nblocks(warps * 32, 256), 256, 0, st>>>((signed char *)kc, (signed char *)vc, ks,
                                                                           vs, k, v, ld, seq, pos, ring, KV, D, warps);
        }
    }
    op_end(be, P_KV_STORE_Q, t0);
}

// One cache row's element as a float: bf16 widened, int8 as its integer (the scale comes later).
template <int DT> __device__ __forceinline__ float kvq_ld(const void *base, size_t i)
{
    if (DT == GPT_KV_BF16) return kvq_bf16_to_f32(((const unsigned short *)base)[i]);
    return (float)((const signed char *)base)[i];
}

// attn_dec_part_kernel (attn_flash.cuh) over a bf16 or int8 cache; ks, vs: (n_seq, ring, KV)
// scales for int8. Same split layout and outputs, so attn_dec_merge_kernel finishes it.
template <int DT>
__global__ void __launch_bounds__(DEC_THREADS) attn_dec_part_q_kernel(float *pm, float *pl, float *pacc,
                                                                      const float *q, int ldq, const void *kc,
                                                                      const void *vc, const float *ks, const float *vs,
                                                                      const int *seq, const int *pos, int ring,
                                                                      const float *sinks, int H, int KV, int D,
                                                                      int window, float scale, int nsplit, int chunk)
{
    __shared__ float qs[DEC_MAX_D], wacc[DEC_WARPS][DEC_MAX_D], wm[DEC_WARPS], wl[DEC_WARPS];
    int rh = blockIdx.x, s = blockIdx.y;
    int r = rh / H, h = rh % H, kh = h / (H / KV), t = pos[r], lo = attn_lo(t, window), n = t - lo + 1;
    int j0 = s * chunk, j1 = min(n, j0 + chunk);
    size_t part = (size_t)rh * nsplit + s;
    float sink = sinks ? sinks[h] : -INFINITY;
    if (j0 >= j1) { // a split past this row's keys: it adds nothing
        if (threadIdx.x == 0) pm[part] = sink, pl[part] = 0.0f;
        return;
    }
    for (int i = threadIdx.x; i < D; i += blockDim.x) qs[i] = q[(size_t)r * ldq + (size_t)h * D + i];
    __syncthreads();
    size_t w = (size_t)KV * D, base = (size_t)seq[r] * ring; // base: the sequence's first slot
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float m = sink, l = 0, acc[DEC_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < DEC_MAX_D / 32; c++) acc[c] = 0;
    for (int jj = j0 + warp; jj < j1; jj += DEC_WARPS) {
        size_t at = base + (size_t)((lo + jj) % ring), e = at * w + (size_t)kh * D;
        float dot = 0;
        for (int i = lane; i < D; i += 32) dot += qs[i] * kvq_ld<DT>(kc, e + i);
        dot = warp_sum(dot); // the same in every lane
        if (DT == GPT_KV_INT8) dot *= ks[at * KV + kh];
        float sc = dot * scale;
        float mn = fmaxf(m, sc), corr = expf(m - mn), p = expf(sc - mn);
        m = mn;
        l = l * corr + p;
        float pv = DT == GPT_KV_INT8 ? p * vs[at * KV + kh] : p;
#pragma unroll
        for (int c = 0; c < DEC_MAX_D / 32; c++) {
            int d = lane + 32 * c;
            if (d < D) acc[c] = acc[c] * corr + pv * kvq_ld<DT>(vc, e + d);
        }
    }
    if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
    for (int c = 0; c < DEC_MAX_D / 32; c++)
        if (lane + 32 * c < D) wacc[warp][lane + 32 * c] = acc[c];
    __syncthreads();
    // warp 0 saw key j0, so M is finite; a warp that saw no key has l = 0 and is left out
    float M = wm[0];
    for (int x = 1; x < DEC_WARPS; x++)
        if (wl[x] > 0) M = fmaxf(M, wm[x]);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float o = 0;
        for (int x = 0; x < DEC_WARPS; x++)
            if (wl[x] > 0) o += wacc[x][i] * expf(wm[x] - M);
        pacc[part * D + i] = o;
    }
    if (threadIdx.x == 0) {
        float L = 0;
        for (int x = 0; x < DEC_WARPS; x++)
            if (wl[x] > 0) L += wl[x] * expf(wm[x] - M);
        pm[part] = M;
        pl[part] = L;
    }
}

static void cu_attn_cached_q(gpt_backend *be, int dtype, float *out, const float *q, int ldq, const void *kc,
                             const void *vc, const float *ks, const float *vs, const int *seq, const int *pos, int n,
                             int ring, const float *sinks, int H, int KV, int D, int window, float scale)
{
    double t0 = op_begin(be);
    if (dtype != GPT_KV_BF16 && dtype != GPT_KV_INT8)
        cuda_die("attn_cached_q", "dtype", "not GPT_KV_BF16 or GPT_KV_INT8", __FILE__, __LINE__);
    if (D > DEC_MAX_D) {
        fprintf(stderr, "gpt: cuda backend: attn_cached_q: head size %d is over the kernel's %d\n", D, DEC_MAX_D);
        abort();
    }
    if (n > 0 && ring > 0) {
        // the splits of cu_attn_cached
        int rows = n * H, want = (ring + 255) / 256, cap = 2048 / rows > 1 ? 2048 / rows : 1;
        int nsplit = want < cap ? want : cap, chunk = (ring + nsplit - 1) / nsplit;
        size_t np = (size_t)rows * nsplit;
        size_t bm = align256(np * sizeof(float)), ba = align256(np * D * sizeof(float));
        char *s = (char *)scratch(be, 2 * bm + ba, "attn_cached_q");
        float *pm = (float *)s, *pl = (float *)(s + bm), *pacc = (float *)(s + 2 * bm);
        cudaStream_t st = CTX(be)->stream;
        dim3 grid((unsigned)rows, (unsigned)nsplit);
        if (dtype == GPT_KV_BF16)
            attn_dec_part_q_kernel<GPT_KV_BF16><<<grid, DEC_THREADS, 0, st>>>(
                pm, pl, pacc, q, ldq, kc, vc, ks, vs, seq, pos, ring, sinks, H, KV, D, window, scale, nsplit, chunk);
        else
            attn_dec_part_q_kernel<GPT_KV_INT8><<<grid, DEC_THREADS, 0, st>>>(
                pm, pl, pacc, q, ldq, kc, vc, ks, vs, seq, pos, ring, sinks, H, KV, D, window, scale, nsplit, chunk);
        attn_dec_merge_kernel<<<(unsigned)rows, D < 128 ? 64 : 128, 0, st>>>(out, pm, pl, pacc, sinks, H, D, nsplit);
    }
    op_end(be, P_ATTN_CACHED_Q, t0);
}
