// attn_tc.cuh: attention on the tensor cores (GPT_CUDA_ATTN=tc), for mixed-precision training:
// the flash kernels' algorithm (attn_flash.cuh: online softmax from the sink logit, causal and
// window bounds on the tiles, GQA, a deterministic backward in three passes) with the products
// Q K^T, P V, dO V^T, P^T dO, dS^T Q and dS K on bf16 tensor-core MMAs (WMMA 16x16x16, fp32
// accumulation), as FlashAttention-2 does in bf16: Q, K, V and dO are rounded to bf16 when a tile
// is loaded, the probabilities P and score gradients dS before their products. The softmax
// itself (scores, max, exp, normalizer, lse) and every output stay fp32. Included by
// backend_cuda.cu after attn_flash.cuh, whose backward pre-pass and sink reduction it reuses.
//
// Tiles of 64 queries and 64 keys; 4 warps, each owning 16 rows (queries in the forward and dQ
// kernels, keys in the dK/dV kernel). Each MMA result the softmax needs goes through a per-warp
// fp32 tile in shared memory; lanes 2r and 2r + 1 then own row r, 32 columns each. The forward's
// output accumulator lives in shared memory too (it is rescaled by the running max, row by row);
// the backward's accumulators stay in fragments, since nothing rescales them.
//
// Head sizes 16, 32, 64, 96 and 128 (a template each); others run the fp32 flash kernels.

#include <mma.h>

enum { TC_TILE = 64, TC_WARPS = 4, TC_THREADS = TC_WARPS * 32 };

static inline int tc_supported(int D) { return D == 16 || D == 32 || D == 64 || D == 96 || D == 128; }

typedef __nv_bfloat16 tc_bf16;
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> tc_acc;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, tc_bf16, nvcuda::wmma::row_major> tc_a;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, tc_bf16, nvcuda::wmma::row_major> tc_b_row;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, tc_bf16, nvcuda::wmma::col_major> tc_b_col;

// Strides (elements): bf16 rows of D + 8 and 64 + 8, fp32 rows of 64 + 4 and D + 4. WMMA wants
// multiples of 8 (16-bit) and 4 (32-bit) and 32-byte aligned tile starts, which these give for
// every region below; the padding also spreads a column's rows over the banks.
template <int D> struct tc_dims {
    static constexpr int DP = D + 8, PP = TC_TILE + 8, SP = TC_TILE + 4, OP = D + 4;
    static constexpr size_t tile = (size_t)TC_TILE * DP * sizeof(tc_bf16); // a 64-row bf16 tile
    static constexpr size_t wS = (size_t)16 * SP * sizeof(float);           // per warp: fp32 16 x 64
    static constexpr size_t wP = (size_t)16 * PP * sizeof(tc_bf16);         // per warp: bf16 16 x 64
    static constexpr size_t wO = (size_t)16 * OP * sizeof(float);           // per warp: fp32 16 x D
    static constexpr size_t fwd = 3 * tile + TC_WARPS * (wS + wP + wO);
    static constexpr size_t kv = 4 * tile + 2 * TC_TILE * sizeof(float) + TC_WARPS * (2 * wS + 2 * wP);
    static constexpr size_t q = 4 * tile + TC_WARPS * (2 * wS + wP);
};

// A 64-row tile of one head (rows r0.. of D floats at src + row * ld; rows at or past `end` read
// as zeros) held in registers, a float4 per thread per step: fetched one tile ahead, so that its
// global loads are in flight while the block works on the tile before (without this the kernels
// wait on memory at every tile). store() rounds it to bf16 rows of stride DP in shared memory.
// The launchers check that the rows are 16-byte aligned.
template <int D> struct tc_regs {
    static constexpr int N = TC_TILE * D / 4 / TC_THREADS;
    float4 v[N];
    __device__ __forceinline__ void fetch(const float *src, size_t ld, int r0, int end)
    {
#pragma unroll
        for (int i = 0; i < N; i++) {
            int e = threadIdx.x + i * TC_THREADS, r = e / (D / 4), d = (e - r * (D / 4)) * 4;
            v[i] = r0 + r < end ? __ldg(reinterpret_cast<const float4 *>(src + (size_t)(r0 + r) * ld + d))
                                : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
    __device__ __forceinline__ void store(tc_bf16 *dst) const
    {
#pragma unroll
        for (int i = 0; i < N; i++) {
            int e = threadIdx.x + i * TC_THREADS, r = e / (D / 4), d = (e - r * (D / 4)) * 4;
            __nv_bfloat162 lo = __floats2bfloat162_rn(v[i].x, v[i].y), hi = __floats2bfloat162_rn(v[i].z, v[i].w);
            uint2 u;
            u.x = *reinterpret_cast<const unsigned *>(&lo);
            u.y = *reinterpret_cast<const unsigned *>(&hi);
            *reinterpret_cast<uint2 *>(dst + r * tc_dims<D>::DP + d) = u;
        }
    }
};

// The j-th of the 32 columns (of 64) that lane 2r + h works on in row r: every other column,
// rotated by one for rows 8..15, so that the 32 lanes hit 32 distinct banks of the fp32 tiles
// (stride 68) at each step j.
__device__ __forceinline__ int tc_col(int j, int r, int h) { return 2 * ((j + (r >> 3)) & 31) + h; }

// C (16 x 64, fp32, stride SP) = A (16 x D rows of a) B^T, B's 64 rows of D at b: scores or dP
template <int D>
__device__ __forceinline__ void tc_abt(float *C, const tc_bf16 *a, const tc_bf16 *b)
{
    using namespace nvcuda;
    constexpr int DP = tc_dims<D>::DP, SP = tc_dims<D>::SP;
#pragma unroll
    for (int n = 0; n < TC_TILE / 16; n++) {
        tc_acc acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < D / 16; k++) {
            tc_a fa;
            tc_b_col fb; // B^T's column j is B's row j
            wmma::load_matrix_sync(fa, a + k * 16, DP);
            wmma::load_matrix_sync(fb, b + n * 16 * DP + k * 16, DP);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(C + n * 16, acc, SP, wmma::mem_row_major);
    }
}

// acc[n] (16 x 16 column block n of 16 x D) += P (16 x 64, bf16 stride PP) X (64 rows of D)
template <int D>
__device__ __forceinline__ void tc_pv(tc_acc *acc, const tc_bf16 *p, const tc_bf16 *x)
{
    using namespace nvcuda;
    constexpr int DP = tc_dims<D>::DP, PP = tc_dims<D>::PP;
#pragma unroll
    for (int k = 0; k < TC_TILE / 16; k++) {
        tc_a fa;
        wmma::load_matrix_sync(fa, p + k * 16, PP);
#pragma unroll
        for (int n = 0; n < D / 16; n++) {
            tc_b_row fb;
            wmma::load_matrix_sync(fb, x + k * 16 * DP + n * 16, DP);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
        }
    }
}

// Writes a warp's 16 x D accumulator to rows row0.. of dst (stride ld; rows at or past `end`
// are skipped), through the warp's fp32 staging tile (16 x 16 at a time).
template <int D>
__device__ __forceinline__ void tc_store_rows(float *dst, size_t ld, int row0, int end, tc_acc *acc, float *stage)
{
    constexpr int SP = tc_dims<D>::SP;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
        nvcuda::wmma::store_matrix_sync(stage, acc[n], SP, nvcuda::wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
            int r = e >> 4, c = e & 15;
            if (row0 + r < end) dst[(size_t)(row0 + r) * ld + n * 16 + c] = stage[r * SP + c];
        }
        __syncwarp();
    }
}

// grid (query tiles, H, B)
template <int D>
__global__ void __launch_bounds__(TC_THREADS) tc_fwd_kernel(float *out, float *lse, const float *qkv,
                                                            const float *sinks, int T, int H, int KV, int window,
                                                            float scale)
{
    using namespace nvcuda;
    typedef tc_dims<D> Z;
    constexpr int DP = Z::DP, PP = Z::PP, SP = Z::SP, OP = Z::OP;
    extern __shared__ float4 tc_sm4[];
    char *sm = reinterpret_cast<char *>(tc_sm4);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    tc_bf16 *Qs = (tc_bf16 *)sm, *Ks = (tc_bf16 *)(sm + Z::tile), *Vs = (tc_bf16 *)(sm + 2 * Z::tile);
    char *w = sm + 3 * Z::tile + warp * (Z::wS + Z::wP + Z::wO);
    float *S = (float *)w;                        // 16 x 64 scores
    tc_bf16 *P = (tc_bf16 *)(w + Z::wS);          // 16 x 64 probabilities
    float *O = (float *)(w + Z::wS + Z::wP);      // 16 x D unnormalized output
    int t0 = blockIdx.x * TC_TILE, h = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, kh = h / (H / KV);
    const float *base = qkv + (size_t)b * T * ld, *Kg = base + (size_t)(H + kh) * D, *Vg = base + (size_t)(H + KV + kh) * D;
    int tlast = min(T - 1, t0 + TC_TILE - 1), klo = attn_lo(t0, window);
    tc_regs<D> kr, vr;
    kr.fetch(base + (size_t)h * D, ld, t0, T);
    kr.store(Qs);
    constexpr bool PF = D <= 64; // prefetching takes 2 tiles of registers: only for the smaller heads
    if (PF) {
        kr.fetch(Kg, ld, klo, tlast + 1);
        vr.fetch(Vg, ld, klo, tlast + 1);
    }
    for (int i = lane; i < 16 * OP; i += 32) O[i] = 0;
    int r = lane >> 1, hf = lane & 1; // this lane's row, and which of its columns (tc_col)
    int t = t0 + warp * 16 + r, tlo = attn_lo(t, window);
    float sink = sinks ? sinks[h] : -INFINITY;
    float m = sink, l = 0; // l: this lane's half of the row's sum
    for (int k0 = klo; k0 <= tlast; k0 += TC_TILE) {
        __syncthreads(); // the previous K, V tiles are consumed
        if (!PF) {
            kr.fetch(Kg, ld, k0, tlast + 1);
            vr.fetch(Vg, ld, k0, tlast + 1);
        }
        kr.store(Ks);
        vr.store(Vs);
        __syncthreads();
        if (PF && k0 + TC_TILE <= tlast) { // the next tile's loads overlap this tile's work
            kr.fetch(Kg, ld, k0 + TC_TILE, tlast + 1);
            vr.fetch(Vg, ld, k0 + TC_TILE, tlast + 1);
        }
        tc_abt<D>(S, Qs + warp * 16 * DP, Ks); // (16, 64)
        __syncwarp();
        float mx = -INFINITY;
#pragma unroll 8
        for (int j = 0; j < 32; j++) {
            int c = tc_col(j, r, hf), key = k0 + c;
            float s = t < T && key <= t && key >= tlo ? S[r * SP + c] * scale : -INFINITY;
            S[r * SP + c] = s;
            mx = fmaxf(mx, s);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float mn = fmaxf(m, mx), corr = 1, ps = 0;
        if (mn != -INFINITY) { // else nothing seen yet: no sink, no key
            corr = expf(m - mn);
#pragma unroll 8
            for (int j = 0; j < 32; j++) {
                int c = tc_col(j, r, hf);
                float p = expf(S[r * SP + c] - mn);
                P[r * PP + c] = __float2bfloat16(p);
                ps += p;
            }
        } else {
            for (int j = 0; j < 32; j++) P[r * PP + tc_col(j, r, hf)] = __float2bfloat16(0.0f);
        }
        m = mn;
        l = l * corr + ps;
        for (int d = hf; d < D; d += 2) O[r * OP + d] *= corr;
        __syncwarp();
#pragma unroll
        for (int n = 0; n < D / 16; n++) { // O (16, D) += P (16, 64) V (64, D)
            tc_acc acc;
            wmma::load_matrix_sync(acc, O + n * 16, OP, wmma::mem_row_major);
#pragma unroll
            for (int k = 0; k < TC_TILE / 16; k++) {
                tc_a fa;
                tc_b_row fb;
                wmma::load_matrix_sync(fa, P + k * 16, PP);
                wmma::load_matrix_sync(fb, Vs + k * 16 * DP + n * 16, DP);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(O + n * 16, acc, OP, wmma::mem_row_major);
        }
        __syncwarp();
    }
    float z = l + __shfl_xor_sync(0xffffffffu, l, 1);
    if (sinks) z += expf(sink - m);
    if (t < T) {
        float inv = 1.0f / z, *o = out + ((size_t)b * T + t) * H * D + (size_t)h * D;
        for (int d = hf; d < D; d += 2) o[d] = O[r * OP + d] * inv;
        if (!hf) lse[((size_t)b * H + h) * T + t] = m + logf(z);
    }
}

// dK, dV of one key tile: grid (key tiles, KV, B); warp w owns keys k0 + 16w .. k0 + 16w + 15.
template <int D>
__global__ void __launch_bounds__(TC_THREADS) tc_bwd_kv_kernel(float *dqkv, const float *drow_buf, const float *dout,
                                                               const float *lse, const float *qkv, int T, int H,
                                                               int KV, int window, float scale)
{
    typedef tc_dims<D> Z;
    constexpr int DP = Z::DP, PP = Z::PP, SP = Z::SP;
    extern __shared__ float4 tc_sm4[];
    char *sm = reinterpret_cast<char *>(tc_sm4);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    tc_bf16 *Ks = (tc_bf16 *)sm, *Vs = (tc_bf16 *)(sm + Z::tile), *Qs = (tc_bf16 *)(sm + 2 * Z::tile),
            *Gs = (tc_bf16 *)(sm + 3 * Z::tile);
    float *Ls = (float *)(sm + 4 * Z::tile), *Rs = Ls + TC_TILE;
    char *w = sm + 4 * Z::tile + 2 * TC_TILE * sizeof(float) + warp * (2 * Z::wS + 2 * Z::wP);
    float *S = (float *)w, *Dp = (float *)(w + Z::wS);                    // 16 keys x 64 queries
    tc_bf16 *Pb = (tc_bf16 *)(w + 2 * Z::wS), *Sb = (tc_bf16 *)(w + 2 * Z::wS + Z::wP);
    int k0 = blockIdx.x * TC_TILE, kh = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, grp = H / KV, HD = H * D;
    const float *base = qkv + (size_t)b * T * ld, *Gb = dout + (size_t)b * T * HD;
    int klast = min(T - 1, k0 + TC_TILE - 1);
    int qend = window > 0 ? min(T - 1, klast + window - 1) : T - 1; // the last query that sees a key here
    int nq = (qend - k0) / TC_TILE + 1, steps = grp * nq;           // (head, query tile) pairs, in order
    constexpr bool PF = D <= 64; // beside 2 D-wide accumulators, 2 prefetched tiles fit up to 64 (255 registers)
    tc_regs<D> qr, gr;
    qr.fetch(base + (size_t)(H + kh) * D, ld, k0, T);
    qr.store(Ks);
    qr.fetch(base + (size_t)(H + KV + kh) * D, ld, k0, T);
    qr.store(Vs);
    if (PF) {
        qr.fetch(base + (size_t)(kh * grp) * D, ld, k0, T);
        gr.fetch(Gb + (size_t)(kh * grp) * D, HD, k0, T);
    }
    int r = lane >> 1, hf = lane & 1, key = k0 + warp * 16 + r;
    tc_acc dk[D / 16], dv[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; n++) nvcuda::wmma::fill_fragment(dk[n], 0.0f), nvcuda::wmma::fill_fragment(dv[n], 0.0f);
    for (int it = 0; it < steps; it++) {
        int h = kh * grp + it / nq, q0 = k0 + (it % nq) * TC_TILE;
        const float *lrow = lse + ((size_t)b * H + h) * T, *drow = drow_buf + ((size_t)b * H + h) * T;
        __syncthreads(); // the previous query tile is consumed
        if (!PF) {
            qr.fetch(base + (size_t)h * D, ld, q0, T);
            gr.fetch(Gb + (size_t)h * D, HD, q0, T);
        }
        qr.store(Qs);
        gr.store(Gs);
        if (threadIdx.x < TC_TILE) {
            int tq = q0 + threadIdx.x;
            Ls[threadIdx.x] = tq < T ? lrow[tq] : 0.0f;
            Rs[threadIdx.x] = tq < T ? drow[tq] : 0.0f;
        }
        __syncthreads();
        if (PF && it + 1 < steps) {
            int h1 = kh * grp + (it + 1) / nq, q1 = k0 + ((it + 1) % nq) * TC_TILE;
            qr.fetch(base + (size_t)h1 * D, ld, q1, T);
            gr.fetch(Gb + (size_t)h1 * D, HD, q1, T);
        }
        tc_abt<D>(S, Ks + warp * 16 * DP, Qs);  // S^T (16 keys, 64 queries)
        tc_abt<D>(Dp, Vs + warp * 16 * DP, Gs); // dP^T
        __syncwarp();
#pragma unroll 8
        for (int j = 0; j < 32; j++) {
            int c = tc_col(j, r, hf), tq = q0 + c;
            int seen = tq < T && key < T && key <= tq && key >= attn_lo(tq, window);
            float p = seen ? expf(S[r * SP + c] * scale - Ls[c]) : 0.0f;
            Pb[r * PP + c] = __float2bfloat16(p);
            Sb[r * PP + c] = __float2bfloat16(p * (Dp[r * SP + c] - Rs[c]) * scale);
        }
        __syncwarp();
        tc_pv<D>(dv, Pb, Gs); // dV (16, D) += P^T (16, 64) dO (64, D)
        tc_pv<D>(dk, Sb, Qs); // dK += dS^T Q
    }
    float *g = dqkv + (size_t)b * T * ld;
    tc_store_rows<D>(g + (size_t)(H + kh) * D, ld, k0 + warp * 16, T, dk, S);
    tc_store_rows<D>(g + (size_t)(H + KV + kh) * D, ld, k0 + warp * 16, T, dv, S);
}

// dQ of one query tile: grid (query tiles, H, B); warp w owns queries t0 + 16w .. t0 + 16w + 15.
template <int D>
__global__ void __launch_bounds__(TC_THREADS) tc_bwd_q_kernel(float *dqkv, const float *drow_buf, const float *dout,
                                                              const float *lse, const float *qkv, int T, int H, int KV,
                                                              int window, float scale)
{
    typedef tc_dims<D> Z;
    constexpr int DP = Z::DP, PP = Z::PP, SP = Z::SP;
    extern __shared__ float4 tc_sm4[];
    char *sm = reinterpret_cast<char *>(tc_sm4);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    tc_bf16 *Qs = (tc_bf16 *)sm, *Gs = (tc_bf16 *)(sm + Z::tile), *Ks = (tc_bf16 *)(sm + 2 * Z::tile),
            *Vs = (tc_bf16 *)(sm + 3 * Z::tile);
    char *w = sm + 4 * Z::tile + warp * (2 * Z::wS + Z::wP);
    float *S = (float *)w, *Dp = (float *)(w + Z::wS); // 16 queries x 64 keys
    tc_bf16 *Sb = (tc_bf16 *)(w + 2 * Z::wS);
    int t0 = blockIdx.x * TC_TILE, h = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, kh = h / (H / KV), HD = H * D;
    const float *base = qkv + (size_t)b * T * ld, *Kg = base + (size_t)(H + kh) * D, *Vg = base + (size_t)(H + KV + kh) * D;
    int tlast = min(T - 1, t0 + TC_TILE - 1), klo = attn_lo(t0, window);
    tc_regs<D> kr, vr;
    kr.fetch(base + (size_t)h * D, ld, t0, T);
    kr.store(Qs);
    kr.fetch(dout + (size_t)b * T * HD + (size_t)h * D, HD, t0, T);
    kr.store(Gs);
    constexpr bool PF = D <= 64;
    if (PF) {
        kr.fetch(Kg, ld, klo, tlast + 1);
        vr.fetch(Vg, ld, klo, tlast + 1);
    }
    int r = lane >> 1, hf = lane & 1, t = t0 + warp * 16 + r, tlo = attn_lo(t, window);
    size_t row = ((size_t)b * H + h) * T + t;
    float lt = t < T ? lse[row] : 0.0f, rt = t < T ? drow_buf[row] : 0.0f;
    tc_acc dq[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; n++) nvcuda::wmma::fill_fragment(dq[n], 0.0f);
    for (int k0 = klo; k0 <= tlast; k0 += TC_TILE) {
        __syncthreads();
        if (!PF) {
            kr.fetch(Kg, ld, k0, tlast + 1);
            vr.fetch(Vg, ld, k0, tlast + 1);
        }
        kr.store(Ks);
        vr.store(Vs);
        __syncthreads();
        if (PF && k0 + TC_TILE <= tlast) {
            kr.fetch(Kg, ld, k0 + TC_TILE, tlast + 1);
            vr.fetch(Vg, ld, k0 + TC_TILE, tlast + 1);
        }
        tc_abt<D>(S, Qs + warp * 16 * DP, Ks);  // S (16, 64)
        tc_abt<D>(Dp, Gs + warp * 16 * DP, Vs); // dP = dO V^T
        __syncwarp();
#pragma unroll 8
        for (int j = 0; j < 32; j++) {
            int c = tc_col(j, r, hf), key = k0 + c;
            int seen = t < T && key <= t && key >= tlo;
            float p = seen ? expf(S[r * SP + c] * scale - lt) : 0.0f;
            Sb[r * PP + c] = __float2bfloat16(p * (Dp[r * SP + c] - rt) * scale);
        }
        __syncwarp();
        tc_pv<D>(dq, Sb, Ks); // dQ (16, D) += dS (16, 64) K (64, D)
    }
    tc_store_rows<D>(dqkv + (size_t)b * T * ld + (size_t)h * D, ld, t0 + warp * 16, T, dq, S);
}

template <int D>
static void tc_fwd_launch(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B, int T,
                          int H, int KV, int window, float scale)
{
    size_t smem = tc_dims<D>::fwd;
    attn_smem(be, (const void *)tc_fwd_kernel<D>, smem, "attn_fwd");
    dim3 grid((unsigned)((T + TC_TILE - 1) / TC_TILE), (unsigned)H, (unsigned)B);
    tc_fwd_kernel<D><<<grid, TC_THREADS, smem, CTX(be)->stream>>>(out, lse, qkv, sinks, T, H, KV, window, scale);
}

template <int D>
static void tc_bwd_launch(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                          const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV,
                          int window, float scale)
{
    cudaStream_t st = CTX(be)->stream;
    float *sinkpart, *drow = attn_bwd_pre(be, &sinkpart, dout, out, lse, sinks, B, T, H, D);
    size_t smkv = tc_dims<D>::kv, smq = tc_dims<D>::q;
    attn_smem(be, (const void *)tc_bwd_kv_kernel<D>, smkv, "attn_bwd");
    attn_smem(be, (const void *)tc_bwd_q_kernel<D>, smq, "attn_bwd");
    unsigned tiles = (unsigned)((T + TC_TILE - 1) / TC_TILE);
    tc_bwd_kv_kernel<D><<<dim3(tiles, (unsigned)KV, (unsigned)B), TC_THREADS, smkv, st>>>(dqkv, drow, dout, lse, qkv,
                                                                                        T, H, KV, window, scale);
    tc_bwd_q_kernel<D><<<dim3(tiles, (unsigned)H, (unsigned)B), TC_THREADS, smq, st>>>(dqkv, drow, dout, lse, qkv, T,
                                                                                     H, KV, window, scale);
    if (sinks && dsinks) attn_dsinks_kernel<<<H, 256, 0, st>>>(dsinks, sinkpart, B, H, T);
}

#define TC_DISPATCH(D, fn, ...)                    \
    do {                                           \
        switch (D) {                               \
        case 16: fn<16>(__VA_ARGS__); break;       \
        case 32: fn<32>(__VA_ARGS__); break;       \
        case 64: fn<64>(__VA_ARGS__); break;       \
        case 96: fn<96>(__VA_ARGS__); break;       \
        default: fn<128>(__VA_ARGS__); break;      \
        }                                          \
    } while (0)
