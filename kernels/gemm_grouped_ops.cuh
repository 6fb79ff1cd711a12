// gemm_grouped_ops.cuh: the grouped GEMM of the CUDA backend (included by backend_cuda.cu). A MoE
// layer runs one small GEMM per expert and projection; one cublasGemmGroupedBatchedEx call (cuBLAS
// 12.5 and later) launches them together instead of up to E cublasSgemm launches.
//
// fp32 and TF32 only. With bf16 / fp16 operands (GPT_CUDA_GEMM=bf16, be->gemm_prec) each group goes
// through gemm_half in turn: its rounded operand copies live in the one scratch buffer, which holds
// one group's at a time.
//
// cuBLAS is column-major; as in cu_gemm, a row-major C (M x N) is the column-major C^T (N x M) =
// op(B)^T op(A)^T, so every group goes to cuBLAS with A and B swapped (B first, with tb's
// transposition), m = N and n = M. cuBLAS's own groups are runs of consecutive groups with the same
// sizes and strides; each problem's matrix pointers are read by the device from scratch.

#if CUBLAS_VERSION >= 120500
// The fp32 groups idx[0..live) of the call (M, N, K > 0) in one cuBLAS call.
static void gemm_grouped_cublas(gpt_backend *be, int ta, int tb, int live, const int *idx, const int *M,
                                const int *N, const int *K, float alpha, const float *const *A, const int *lda,
                                const float *const *B, const int *ldb, float beta, float *const *C, const int *ldc)
{
    cuda_ctx *c = CTX(be);
    // host arrays: one entry per cuBLAS group (at most live of them) ...
    int *gi = (int *)gpt_xmalloc((size_t)7 * live * sizeof *gi);
    int *gm = gi, *gn = gi + live, *gk = gi + 2 * live, *glda = gi + 3 * live, *gldb = gi + 4 * live,
        *gldc = gi + 5 * live, *gsize = gi + 6 * live;
    cublasOperation_t *gop = (cublasOperation_t *)gpt_xmalloc((size_t)2 * live * sizeof *gop);
    float *gscal = (float *)gpt_xmalloc((size_t)2 * live * sizeof *gscal);
    // ... and the problems' matrices, in the device's order: all of cuBLAS's A (our B), then all of
    // its B (our A), then all of C
    const void **ptrs = (const void **)gpt_xmalloc((size_t)3 * live * sizeof *ptrs);
    int ng = 0;
    for (int j = 0; j < live; j++) {
        int g = idx[j];
        ptrs[j] = B[g], ptrs[live + j] = A[g], ptrs[2 * live + j] = C[g];
        if (ng && gm[ng - 1] == N[g] && gn[ng - 1] == M[g] && gk[ng - 1] == K[g] && glda[ng - 1] == ldb[g] &&
            gldb[ng - 1] == lda[g] && gldc[ng - 1] == ldc[g]) {
            gsize[ng - 1]++;
            continue;
        }
        gm[ng] = N[g], gn[ng] = M[g], gk[ng] = K[g], glda[ng] = ldb[g], gldb[ng] = lda[g], gldc[ng] = ldc[g];
        gsize[ng] = 1;
        gop[ng] = tb ? CUBLAS_OP_T : CUBLAS_OP_N, gop[live + ng] = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
        gscal[ng] = alpha, gscal[live + ng] = beta;
        ng++;
    }
    // Stream order keeps the pointers in scratch until the GEMM has read them; the host copy may go
    // at once (a copy from pageable memory is staged before cudaMemcpyAsync returns).
    size_t bytes = (size_t)3 * live * sizeof *ptrs;
    void **d = (void **)scratch(be, bytes, "gemm_grouped");
    CK("gemm_grouped", cudaMemcpyAsync(d, ptrs, bytes, cudaMemcpyHostToDevice, c->stream));
    // GEMM_TF32: the TF32 products the handle's math mode gives cu_gemm's cublasSgemm; fp32:
    // CUBLAS_COMPUTE_32F, which under the handle's default math mode never rounds to TF32
    cublasComputeType_t ct = c->gemm_mode == GEMM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CKB("gemm_grouped",
        cublasGemmGroupedBatchedEx(c->blas, gop, gop + live, gm, gn, gk, gscal, (const void *const *)d, CUDA_R_32F,
                                   glda, (const void *const *)(d + live), CUDA_R_32F, gldb, gscal + live,
                                   d + 2 * live, CUDA_R_32F, gldc, ng, gsize, ct));
    free(ptrs), free(gscal), free(gop), free(gi);
}
#endif

static void cu_gemm_grouped(gpt_backend *be, int ta, int tb, int n, const int *M, const int *N, const int *K,
                            float alpha, const float *const *A, const int *lda, const float *const *B, const int *ldb,
                            float beta, float *const *C, const int *ldc)
{
    double t0 = op_begin(be);
    cuda_ctx *c = CTX(be);
    int half = be->gemm_prec != GPT_GEMM_FP32 || c->gemm_mode == GEMM_BF16;
    // Empty groups do nothing and K == 0 ones only scale C (both as cu_gemm); half-precision groups
    // go one by one. What is left (live) is fp32 work for cuBLAS.
    int *idx = (int *)gpt_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *idx), live = 0, aligned = 1;
    for (int g = 0; g < n; g++) {
        if (M[g] <= 0 || N[g] <= 0) continue;
        if (K[g] == 0)
            scale2d_kernel<<<nblocks((size_t)M[g] * N[g], 256), 256, 0, c->stream>>>(C[g], ldc[g], M[g], N[g], beta);
        else if (half)
            gemm_half(be, be->gemm_prec == GPT_GEMM_FP16, ta, tb, M[g], N[g], K[g], alpha, A[g], lda[g], B[g], ldb[g],
                      beta, C[g], ldc[g]);
        else {
            idx[live++] = g;
            aligned &= ((uintptr_t)A[g] | (uintptr_t)B[g] | (uintptr_t)C[g]) % 16 == 0;
        }
    }
    // One GEMM gains nothing from grouping. TF32's fast kernels in the grouped call want 16-byte
    // aligned matrices (cuBLAS's rule for CUBLAS_COMPUTE_32F_FAST_TF32); any other layout goes
    // group by group through cublasSgemm, which has no such rule.
    int grouped = live > 1 && (aligned || c->gemm_mode != GEMM_TF32);
#if CUBLAS_VERSION >= 120500
    if (grouped) gemm_grouped_cublas(be, ta, tb, live, idx, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    grouped = 0; // cuBLAS older than 12.5 has no grouped GEMM
#endif
    for (int j = 0; j < live && !grouped; j++) {
        int g = idx[j];
        gemm_f32(c, "gemm_grouped", ta, tb, M[g], N[g], K[g], alpha, A[g], lda[g], B[g], ldb[g], beta, C[g], ldc[g]);
    }
    free(idx);
    op_end(be, P_GEMM_GROUPED, t0);
}
