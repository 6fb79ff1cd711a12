// attn_flash.cuh: tiled ("flash") attention for backend_cuda.cu, which includes it after its
// simple attention kernels and uses its helpers (CTX, scratch, op_begin/op_end, attn_lo, ...).
//
// Training (attn_fwd, attn_bwd): tiles of 32 queries and 32 keys in shared memory; a key tile is
// read once per query tile instead of once per query row, and no kernel needs memory that grows
// with T. The forward keeps an online softmax per query row whose running max starts at the
// sink logit (so it is never -inf with sinks, and the sink joins the normalizer at the end
// without a value). Causality and the sliding window bound the tiles a block visits: a query
// tile loops over the key tiles from its first row's window start to its last row, so tiles
// wholly outside the window are never read. GQA: a query head h reads kv head h / (H / KV).
// Backward, deterministic without atomics: a pre-pass computes drow = dO . O per row (and the
// sink terms); one block per (batch, kv head, key tile) sums dK and dV over the group's heads
// and the query tiles that see its keys, in a fixed order; a separate block per (batch, head,
// query tile) computes dQ over the key tiles. Scores are recomputed from the saved lse.
//
// Decode (attn_cached): split-K ("flash decoding"). A row's keys are cut into splits; one block
// per (row, head, split) keeps an online softmax over its split (running max starting at the
// sink logit) and writes (max, sum, unnormalized output); a second kernel merges the splits in
// order. Shared memory is O(D), whatever the context length.
//
// Layout of work: in the forward and dQ kernels a warp owns 8 query rows and its lanes the 32
// keys of a tile (each lane one score per row), then the lanes own output dimensions
// (d = lane + 32 c) to accumulate P V or dS K. In the dK/dV kernel a warp owns 8 keys and its
// lanes the 32 queries of a tile. Rows read by lane are padded (stride D + 4) so 16-byte reads by
// 8 lanes fall in distinct banks; D must be a multiple of 4 and at most 256 (else the simple
// kernels run).

enum { FA_TILE = 32, FA_WARPS = 4, FA_THREADS = FA_WARPS * 32, FA_ROWS = FA_TILE / FA_WARPS };

static inline int fa_supported(int D) { return D > 0 && D % 4 == 0 && D <= 256; }

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }

__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

// rows [r0, r0 + FA_TILE) of one head of a (rows, ld) matrix into shared memory with row stride
// sld; rows at or past `end` read as zeros
__device__ __forceinline__ void fa_load_tile(float *dst, int sld, const float *src, size_t ld, int r0, int end, int D)
{
    for (int e = threadIdx.x; e < FA_TILE * D; e += blockDim.x) {
        int r = e / D, d = e - r * D;
        dst[r * sld + d] = r0 + r < end ? src[(size_t)(r0 + r) * ld + d] : 0.0f;
    }
}

// grid (query tiles, H, B)
template <int DC>
__global__ void __launch_bounds__(FA_THREADS) flash_fwd_kernel(float *out, float *lse, const float *qkv,
                                                               const float *sinks, int T, int H, int KV, int D,
                                                               int window, float scale)
{
    extern __shared__ float4 sm4[];
    float *sm = reinterpret_cast<float *>(sm4);
    const int KP = D + 4;
    float *Qs = sm;                   // FA_TILE x D (read by broadcast)
    float *Ks = Qs + FA_TILE * D;     // FA_TILE x KP (lane j reads row j)
    float *Vs = Ks + FA_TILE * KP;    // FA_TILE x D (lanes read along a row)
    float *Ps = Vs + FA_TILE * D;     // per warp: FA_ROWS x 32 probabilities
    int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, kh = h / (H / KV);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *base = qkv + (size_t)b * T * ld;
    int tlast = min(T - 1, t0 + FA_TILE - 1), klo = attn_lo(t0, window);
    fa_load_tile(Qs, D, base + (size_t)h * D, ld, t0, T, D);
    float sink = sinks ? sinks[h] : -INFINITY;
    float m[FA_ROWS], l[FA_ROWS], acc[FA_ROWS][DC];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        m[r] = sink;
        l[r] = 0;
#pragma unroll
        for (int c = 0; c < DC; c++) acc[r][c] = 0;
    }
    float *P = Ps + warp * FA_ROWS * 32;
    const float *Qw = Qs + warp * FA_ROWS * D;
    for (int k0 = klo; k0 <= tlast; k0 += FA_TILE) {
        __syncthreads(); // the previous tile is consumed (first pass: nothing to wait for but Q)
        fa_load_tile(Ks, KP, base + (size_t)(H + kh) * D, ld, k0, tlast + 1, D);
        fa_load_tile(Vs, D, base + (size_t)(H + KV + kh) * D, ld, k0, tlast + 1, D);
        __syncthreads();
        float s[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) s[r] = 0;
        const float *kr = Ks + lane * KP;
        for (int d = 0; d < D; d += 4) {
            float4 k4 = ld4(kr + d);
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++) s[r] += dot4(ld4(Qw + r * D + d), k4);
        }
        int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) {
            int t = t0 + warp * FA_ROWS + r; // the same for the whole warp
            float sc = t < T && key <= t && key >= attn_lo(t, window) ? s[r] * scale : -INFINITY;
            float mn = fmaxf(m[r], warp_max(sc));
            float p = 0, corr = 1;
            if (mn != -INFINITY) { // else nothing seen yet: no sink, no key
                p = expf(sc - mn);
                corr = expf(m[r] - mn);
            }
            m[r] = mn;
            l[r] = l[r] * corr + p; // per lane; the lanes' sums are added at the end
            P[r * 32 + lane] = p;
#pragma unroll
            for (int c = 0; c < DC; c++) acc[r][c] *= corr;
        }
        __syncwarp();
        for (int j = 0; j < 32; j += 4) {
#pragma unroll
            for (int c = 0; c < DC; c++) {
                int d = lane + 32 * c;
                if (d >= D) break;
                float v0 = Vs[j * D + d], v1 = Vs[(j + 1) * D + d], v2 = Vs[(j + 2) * D + d], v3 = Vs[(j + 3) * D + d];
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++) {
                    float4 p4 = ld4(P + r * 32 + j);
                    acc[r][c] += p4.x * v0 + p4.y * v1 + p4.z * v2 + p4.w * v3;
                }
            }
        }
        __syncwarp(); // P is rewritten by the next tile
    }
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int t = t0 + warp * FA_ROWS + r;
        float z = warp_sum(l[r]);
        if (sinks) z += expf(sink - m[r]);
        if (t >= T) continue;
        float *o = out + ((size_t)b * T + t) * H * D + (size_t)h * D;
        float inv = 1.0f / z;
#pragma unroll
        for (int c = 0; c < DC; c++)
            if (lane + 32 * c < D) o[lane + 32 * c] = acc[r][c] * inv;
        if (lane == 0) lse[((size_t)b * H + h) * T + t] = m[r] + logf(z);
    }
}

// drow = dO . O per (b, h, t) row, one warp each; and the row's term of dsinks[h]
__global__ void flash_bwd_pre_kernel(float *drow_buf, float *sinkpart, const float *dout, const float *out,
                                     const float *lse, const float *sinks, int T, int H, int D, size_t rows)
{
    size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; // (b, h, t) in lse order
    int lane = threadIdx.x & 31;
    if (i >= rows) return;
    int t = (int)(i % T), h = (int)((i / T) % H);
    size_t b = i / ((size_t)T * H);
    size_t off = (b * T + t) * H * D + (size_t)h * D;
    float d = 0;
    for (int x = lane; x < D; x += 32) d += dout[off + x] * out[off + x];
    d = warp_sum(d);
    if (lane == 0) {
        drow_buf[i] = d;
        sinkpart[i] = sinks ? -expf(sinks[h] - lse[i]) * d : 0.0f;
    }
}

// dK, dV of one key tile: grid (key tiles, KV, B). Warp w owns keys k0 + 8w .. k0 + 8w + 7.
template <int DC>
__global__ void __launch_bounds__(FA_THREADS) flash_bwd_kv_kernel(float *dqkv, const float *drow_buf,
                                                                  const float *dout, const float *lse,
                                                                  const float *qkv, int T, int H, int KV, int D,
                                                                  int window, float scale)
{
    extern __shared__ float4 sm4[];
    float *sm = reinterpret_cast<float *>(sm4);
    const int QP = D + 4;
    float *Ks = sm;                    // FA_TILE x D (broadcast)
    float *Vs = Ks + FA_TILE * D;      // FA_TILE x D (broadcast)
    float *Qs = Vs + FA_TILE * D;      // FA_TILE x QP (lane i reads row i)
    float *Gs = Qs + FA_TILE * QP;     // dO tile, FA_TILE x QP
    float *Ls = Gs + FA_TILE * QP;     // lse of the query tile
    float *Rs = Ls + FA_TILE;          // drow of the query tile
    float *Ps = Rs + FA_TILE;          // per warp: FA_ROWS x 32 probabilities
    float *Ss = Ps + FA_TILE * 32;     // per warp: FA_ROWS x 32 score gradients
    int k0 = blockIdx.x * FA_TILE, kh = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, grp = H / KV, HD = H * D;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *base = qkv + (size_t)b * T * ld;
    fa_load_tile(Ks, D, base + (size_t)(H + kh) * D, ld, k0, T, D);
    fa_load_tile(Vs, D, base + (size_t)(H + KV + kh) * D, ld, k0, T, D);
    int klast = min(T - 1, k0 + FA_TILE - 1);
    int qend = window > 0 ? min(T - 1, klast + window - 1) : T - 1; // the last query that sees a key here
    float dk[FA_ROWS][DC], dv[FA_ROWS][DC];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++)
#pragma unroll
        for (int c = 0; c < DC; c++) dk[r][c] = dv[r][c] = 0;
    float *P = Ps + warp * FA_ROWS * 32, *S = Ss + warp * FA_ROWS * 32;
    const float *Kw = Ks + warp * FA_ROWS * D, *Vw = Vs + warp * FA_ROWS * D;
    for (int h = kh * grp; h < (kh + 1) * grp; h++) {
        const float *lrow = lse + ((size_t)b * H + h) * T, *drow = drow_buf + ((size_t)b * H + h) * T;
        for (int q0 = k0; q0 <= qend; q0 += FA_TILE) {
            __syncthreads(); // the previous query tile is consumed (first pass: K, V are loaded)
            fa_load_tile(Qs, QP, base + (size_t)h * D, ld, q0, T, D);
            fa_load_tile(Gs, QP, dout + (size_t)b * T * HD + (size_t)h * D, HD, q0, T, D);
            if (threadIdx.x < FA_TILE) {
                int t = q0 + threadIdx.x;
                Ls[threadIdx.x] = t < T ? lrow[t] : 0.0f;
                Rs[threadIdx.x] = t < T ? drow[t] : 0.0f;
            }
            __syncthreads();
            float s[FA_ROWS], dp[FA_ROWS];
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++) s[r] = dp[r] = 0;
            const float *qr = Qs + lane * QP, *gr = Gs + lane * QP;
            for (int d = 0; d < D; d += 4) {
                float4 q4 = ld4(qr + d), g4 = ld4(gr + d);
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++) {
                    s[r] += dot4(q4, ld4(Kw + r * D + d));
                    dp[r] += dot4(g4, ld4(Vw + r * D + d));
                }
            }
            int t = q0 + lane;
            float lt = Ls[lane], rt = Rs[lane];
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++) {
                int key = k0 + warp * FA_ROWS + r;
                int seen = t < T && key < T && key <= t && key >= attn_lo(t, window);
                float p = seen ? expf(s[r] * scale - lt) : 0.0f;
                P[r * 32 + lane] = p;
                S[r * 32 + lane] = p * (dp[r] - rt) * scale;
            }
            __syncwarp();
            for (int i = 0; i < 32; i += 4) {
#pragma unroll
                for (int c = 0; c < DC; c++) {
                    int d = lane + 32 * c;
                    if (d >= D) break;
                    float q_0 = Qs[i * QP + d], q_1 = Qs[(i + 1) * QP + d], q_2 = Qs[(i + 2) * QP + d],
                          q_3 = Qs[(i + 3) * QP + d];
                    float g_0 = Gs[i * QP + d], g_1 = Gs[(i + 1) * QP + d], g_2 = Gs[(i + 2) * QP + d],
                          g_3 = Gs[(i + 3) * QP + d];
#pragma unroll
                    for (int r = 0; r < FA_ROWS; r++) {
                        float4 p4 = ld4(P + r * 32 + i), s4 = ld4(S + r * 32 + i);
                        dv[r][c] += p4.x * g_0 + p4.y * g_1 + p4.z * g_2 + p4.w * g_3;
                        dk[r][c] += s4.x * q_0 + s4.y * q_1 + s4.z * q_2 + s4.w * q_3;
                    }
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int key = k0 + warp * FA_ROWS + r;
        if (key >= T) continue;
        float *g = dqkv + ((size_t)b * T + key) * ld;
#pragma unroll
        for (int c = 0; c < DC; c++) {
            int d = lane + 32 * c;
            if (d < D) {
                g[(size_t)(H + kh) * D + d] = dk[r][c];
                g[(size_t)(H + KV + kh) * D + d] = dv[r][c];
            }
        }
    }
}

// dQ of one query tile: grid (query tiles, H, B). Warp w owns rows t0 + 8w .. t0 + 8w + 7.
template <int DC>
__global__ void __launch_bounds__(FA_THREADS) flash_bwd_q_kernel(float *dqkv, const float *drow_buf,
                                                                 const float *dout, const float *lse,
                                                                 const float *qkv, int T, int H, int KV, int D,
                                                                 int window, float scale)
{
    extern __shared__ float4 sm4[];
    float *sm = reinterpret_cast<float *>(sm4);
    const int KP = D + 4;
    float *Qs = sm;                  // FA_TILE x D (broadcast)
    float *Gs = Qs + FA_TILE * D;    // dO tile, FA_TILE x D (broadcast)
    float *Ks = Gs + FA_TILE * D;    // FA_TILE x KP (lane j reads row j)
    float *Vs = Ks + FA_TILE * KP;   // FA_TILE x KP
    float *Ss = Vs + FA_TILE * KP;   // per warp: FA_ROWS x 32 score gradients
    int t0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    int ld = (H + 2 * KV) * D, kh = h / (H / KV), HD = H * D;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *base = qkv + (size_t)b * T * ld;
    int tlast = min(T - 1, t0 + FA_TILE - 1), klo = attn_lo(t0, window);
    fa_load_tile(Qs, D, base + (size_t)h * D, ld, t0, T, D);
    fa_load_tile(Gs, D, dout + (size_t)b * T * HD + (size_t)h * D, HD, t0, T, D);
    float lt[FA_ROWS], rt[FA_ROWS], dq[FA_ROWS][DC];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int t = t0 + warp * FA_ROWS + r;
        size_t i = ((size_t)b * H + h) * T + t;
        lt[r] = t < T ? lse[i] : 0.0f;
        rt[r] = t < T ? drow_buf[i] : 0.0f;
#pragma unroll
        for (int c = 0; c < DC; c++) dq[r][c] = 0;
    }
    float *S = Ss + warp * FA_ROWS * 32;
    const float *Qw = Qs + warp * FA_ROWS * D, *Gw = Gs + warp * FA_ROWS * D;
    for (int k0 = klo; k0 <= tlast; k0 += FA_TILE) {
        __syncthreads();
        fa_load_tile(Ks, KP, base + (size_t)(H + kh) * D, ld, k0, tlast + 1, D);
        fa_load_tile(Vs, KP, base + (size_t)(H + KV + kh) * D, ld, k0, tlast + 1, D);
        __syncthreads();
        float s[FA_ROWS], dp[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) s[r] = dp[r] = 0;
        const float *kr = Ks + lane * KP, *vr = Vs + lane * KP;
        for (int d = 0; d < D; d += 4) {
            float4 k4 = ld4(kr + d), v4 = ld4(vr + d);
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++) {
                s[r] += dot4(ld4(Qw + r * D + d), k4);
                dp[r] += dot4(ld4(Gw + r * D + d), v4);
            }
        }
        int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++) {
            int t = t0 + warp * FA_ROWS + r;
            int seen = t < T && key <= t && key >= attn_lo(t, window);
            float p = seen ? expf(s[r] * scale - lt[r]) : 0.0f;
            S[r * 32 + lane] = p * (dp[r] - rt[r]) * scale;
        }
        __syncwarp();
        for (int j = 0; j < 32; j += 4) {
#pragma unroll
            for (int c = 0; c < DC; c++) {
                int d = lane + 32 * c;
                if (d >= D) break;
                float k_0 = Ks[j * KP + d], k_1 = Ks[(j + 1) * KP + d], k_2 = Ks[(j + 2) * KP + d],
                      k_3 = Ks[(j + 3) * KP + d];
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++) {
                    float4 s4 = ld4(S + r * 32 + j);
                    dq[r][c] += s4.x * k_0 + s4.y * k_1 + s4.z * k_2 + s4.w * k_3;
                }
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++) {
        int t = t0 + warp * FA_ROWS + r;
        if (t >= T) continue;
        float *g = dqkv + ((size_t)b * T + t) * ld + (size_t)h * D;
#pragma unroll
        for (int c = 0; c < DC; c++)
            if (lane + 32 * c < D) g[lane + 32 * c] = dq[r][c];
    }
}

static size_t fa_fwd_smem(int D) { return ((size_t)FA_TILE * (2 * D + D + 4) + FA_TILE * 32) * sizeof(float); }
static size_t fa_kv_smem(int D)
{
    return ((size_t)FA_TILE * (2 * D + 2 * (D + 4)) + 2 * FA_TILE + 2 * FA_TILE * 32) * sizeof(float);
}
static size_t fa_q_smem(int D) { return ((size_t)FA_TILE * (2 * D + 2 * (D + 4)) + FA_TILE * 32) * sizeof(float); }

template <int DC>
static void flash_fwd_launch(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B,
                             int T, int H, int KV, int D, int window, float scale)
{
    size_t smem = fa_fwd_smem(D);
    attn_smem(be, (const void *)flash_fwd_kernel<DC>, smem, "attn_fwd");
    dim3 grid((unsigned)((T + FA_TILE - 1) / FA_TILE), (unsigned)H, (unsigned)B);
    flash_fwd_kernel<DC><<<grid, FA_THREADS, smem, CTX(be)->stream>>>(out, lse, qkv, sinks, T, H, KV, D, window,
                                                                       scale);
}

// The backward's pre-pass (this file's and attn_tc.cuh's): drow = dO . O per (b, h, t) row and
// each row's sink term, in scratch; returns drow, *sinkpart beside it.
static float *attn_bwd_pre(gpt_backend *be, float **sinkpart, const float *dout, const float *out, const float *lse,
                           const float *sinks, int B, int T, int H, int D)
{
    size_t rows = (size_t)B * H * T;
    float *drow = (float *)scratch(be, 2 * align256(rows * sizeof(float)), "attn_bwd");
    *sinkpart = drow + align256(rows * sizeof(float)) / sizeof(float);
    flash_bwd_pre_kernel<<<nblocks(rows * 32, 256), 256, 0, CTX(be)->stream>>>(drow, *sinkpart, dout, out, lse, sinks,
                                                                               T, H, D, rows);
    return drow;
}

template <int DC>
static void flash_bwd_launch(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                             const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D,
                             int window, float scale)
{
    cudaStream_t st = CTX(be)->stream;
    float *sinkpart, *drow = attn_bwd_pre(be, &sinkpart, dout, out, lse, sinks, B, T, H, D);
    size_t smkv = fa_kv_smem(D), smq = fa_q_smem(D);
    attn_smem(be, (const void *)flash_bwd_kv_kernel<DC>, smkv, "attn_bwd");
    attn_smem(be, (const void *)flash_bwd_q_kernel<DC>, smq, "attn_bwd");
    unsigned tiles = (unsigned)((T + FA_TILE - 1) / FA_TILE);
    flash_bwd_kv_kernel<DC><<<dim3(tiles, (unsigned)KV, (unsigned)B), FA_THREADS, smkv, st>>>(
        dqkv, drow, dout, lse, qkv, T, H, KV, D, window, scale);
    flash_bwd_q_kernel<DC><<<dim3(tiles, (unsigned)H, (unsigned)B), FA_THREADS, smq, st>>>(dqkv, drow, dout, lse, qkv,
                                                                                          T, H, KV, D, window, scale);
    if (sinks && dsinks) attn_dsinks_kernel<<<H, 256, 0, st>>>(dsinks, sinkpart, B, H, T);
}

#include "attn_tc.cuh" // the tensor-core variant (GPT_CUDA_ATTN=tc): after the pre-pass it reuses

// D up to 32 * DC, DC in {1, 2, 4, 8}
#define FA_DISPATCH(D, fn, ...)               \
    do {                                      \
        if ((D) <= 32) fn<1>(__VA_ARGS__);    \
        else if ((D) <= 64) fn<2>(__VA_ARGS__); \
        else if ((D) <= 128) fn<4>(__VA_ARGS__); \
        else fn<8>(__VA_ARGS__);              \
    } while (0)

static int use_flash(gpt_backend *be, int D) { return !CTX(be)->attn_simple && fa_supported(D); }
// GPT_CUDA_ATTN=tc, or unset with mixed precision (bf16 / fp16 GEMMs: the products of attention
// in bf16 too, as FlashAttention runs them). The kernels read rows as float4: every row start must
// be 16-byte aligned.
static int use_tc(gpt_backend *be, int D, const void *a, const void *b)
{
    cuda_ctx *c = CTX(be);
    int mixed = be->gemm_prec != GPT_GEMM_FP32 || c->gemm_mode == GEMM_BF16;
    return (c->attn_tc > 0 || (c->attn_tc < 0 && mixed)) && tc_supported(D) && ((uintptr_t)a | (uintptr_t)b) % 16 == 0;
}

static void cu_attn_fwd(gpt_backend *be, float *out, float *lse, const float *qkv, const float *sinks, int B, int T,
                        int H, int KV, int D, int window, float scale)
{
    double t0 = op_begin(be);
    if (B > 0 && H > 0 && T > 0) {
        if (use_tc(be, D, qkv, qkv))
            TC_DISPATCH(D, tc_fwd_launch, be, out, lse, qkv, sinks, B, T, H, KV, window, scale);
        else if (use_flash(be, D))
            FA_DISPATCH(D, flash_fwd_launch, be, out, lse, qkv, sinks, B, T, H, KV, D, window, scale);
        else
            attn_fwd_simple(be, out, lse, qkv, sinks, B, T, H, KV, D, window, scale);
    }
    op_end(be, P_ATTN_FWD, t0);
}

static void cu_attn_bwd(gpt_backend *be, float *dqkv, float *dsinks, const float *dout, const float *out,
                        const float *lse, const float *qkv, const float *sinks, int B, int T, int H, int KV, int D,
                        int window, float scale)
{
    double t0 = op_begin(be);
    if (B > 0 && H > 0 && T > 0) {
        if (use_tc(be, D, qkv, dout))
            TC_DISPATCH(D, tc_bwd_launch, be, dqkv, dsinks, dout, out, lse, qkv, sinks, B, T, H, KV, window, scale);
        else if (use_flash(be, D))
            FA_DISPATCH(D, flash_bwd_launch, be, dqkv, dsinks, dout, out, lse, qkv, sinks, B, T, H, KV, D, window,
                        scale);
        else
            attn_bwd_simple(be, dqkv, dsinks, dout, out, lse, qkv, sinks, B, T, H, KV, D, window, scale);
    }
    op_end(be, P_ATTN_BWD, t0);
}

// ---- decode: split-K attention over the cache ----

enum { DEC_WARPS = 4, DEC_THREADS = DEC_WARPS * 32, DEC_MAX_D = 256 };

// One block per (row r, head h) = blockIdx.x and split s = blockIdx.y: keys lo + s*chunk ..
// lo + (s+1)*chunk - 1 (clipped to the row's last key). Writes the split's running max pm, its
// sum of exp(score - max) pl (the sink not included) and the unnormalized output pacc (D).
__global__ void __launch_bounds__(DEC_THREADS) attn_dec_part_kernel(float *pm, float *pl, float *pacc,
                                                                    const float *q, int ldq, const float *kc,
                                                                    const float *vc, const int *seq, const int *pos,
                                                                    int ring, const float *sinks, int H, int KV, int D,
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
    size_t w = (size_t)KV * D;
    const float *kbase = kc + (size_t)seq[r] * ring * w + (size_t)kh * D;
    const float *vbase = vc + (size_t)seq[r] * ring * w + (size_t)kh * D;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float m = sink, l = 0, acc[DEC_MAX_D / 32];
#pragma unroll
    for (int c = 0; c < DEC_MAX_D / 32; c++) acc[c] = 0;
    for (int jj = j0 + warp; jj < j1; jj += DEC_WARPS) {
        size_t slot = (size_t)((lo + jj) % ring) * w;
        float sc = warp_dot(qs, kbase + slot, D) * scale; // the same in every lane
        float mn = fmaxf(m, sc), corr = expf(m - mn), p = expf(sc - mn);
        m = mn;
        l = l * corr + p;
#pragma unroll
        for (int c = 0; c < DEC_MAX_D / 32; c++) {
            int d = lane + 32 * c;
            if (d < D) acc[c] = acc[c] * corr + p * vbase[slot + d];
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

// One block per (row, head): merges the splits in order, adds the sink, normalizes.
__global__ void attn_dec_merge_kernel(float *out, const float *pm, const float *pl, const float *pacc,
                                      const float *sinks, int H, int D, int nsplit)
{
    int rh = blockIdx.x, h = rh % H;
    const float *m = pm + (size_t)rh * nsplit, *l = pl + (size_t)rh * nsplit;
    float M = sinks ? sinks[h] : -INFINITY;
    for (int s = 0; s < nsplit; s++)
        if (l[s] > 0) M = fmaxf(M, m[s]);
    float L = sinks ? expf(sinks[h] - M) : 0.0f;
    for (int s = 0; s < nsplit; s++)
        if (l[s] > 0) L += l[s] * expf(m[s] - M);
    float inv = 1.0f / L;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float o = 0;
        for (int s = 0; s < nsplit; s++)
            if (l[s] > 0) o += pacc[((size_t)rh * nsplit + s) * D + i] * expf(m[s] - M);
        out[(size_t)rh * D + i] = o * inv;
    }
}

static void cu_attn_cached(gpt_backend *be, float *out, const float *q, int ldq, const float *kc, const float *vc,
                           const int *seq, const int *pos, int n, int ring, const float *sinks, int H, int KV, int D,
                           int window, float scale)
{
    double t0 = op_begin(be);
    if (D > DEC_MAX_D) {
        fprintf(stderr, "gpt: cuda backend: attn_cached: head size %d is over the kernel's %d\n", D, DEC_MAX_D);
        abort();
    }
    if (n > 0 && ring > 0) {
        // A row sees at most `ring` keys (window <= ring for sliding layers; pos < ring for full
        // ones). Splits of ~256 keys give a lone decoding row enough blocks; with many rows
        // (prefill) fewer, longer splits keep the scratch small.
        int rows = n * H, want = (ring + 255) / 256, cap = 2048 / rows > 1 ? 2048 / rows : 1;
        int nsplit = want < cap ? want : cap, chunk = (ring + nsplit - 1) / nsplit;
        size_t np = (size_t)rows * nsplit;
        size_t bm = align256(np * sizeof(float)), ba = align256(np * D * sizeof(float));
        char *s = (char *)scratch(be, 2 * bm + ba, "attn_cached");
        float *pm = (float *)s, *pl = (float *)(s + bm), *pacc = (float *)(s + 2 * bm);
        cudaStream_t st = CTX(be)->stream;
        attn_dec_part_kernel<<<dim3((unsigned)rows, (unsigned)nsplit), DEC_THREADS, 0, st>>>(
            pm, pl, pacc, q, ldq, kc, vc, seq, pos, ring, sinks, H, KV, D, window, scale, nsplit, chunk);
        attn_dec_merge_kernel<<<(unsigned)rows, D < 128 ? 64 : 128, 0, st>>>(out, pm, pl, pacc, sinks, H, D, nsplit);
    }
    op_end(be, P_ATTN_CACHED, t0);
}
