/* blas_check.h: catch OpenBLAS running slower kernels than the CPU supports.
 *
 * Debian 12's OpenBLAS 0.3.21 takes AVX-512 Xeons (Sapphire Rapids and newer) for "Prescott"
 * and runs SSE3 kernels: sgemm 4x slower. OpenBLAS reads OPENBLAS_CORETYPE only when it loads,
 * so the fix is to set it and re-execute the program. */
#ifndef GPT_BLAS_CHECK_H
#define GPT_BLAS_CHECK_H

/* The core OpenBLAS chose, and the one this CPU should use (NULL when the choice is fine). */
const char *gpt_blas_corename(void);
const char *gpt_blas_better_core(void);

/* For a program's main(): when the core is wrong and OPENBLAS_CORETYPE is unset, set it, say so
 * on stderr and re-exec argv; when the user set OPENBLAS_CORETYPE, only warn if it is still wrong.
 * Returns (only) when nothing needs doing or exec failed. */
void gpt_blas_fix_or_warn(char **argv);

#endif
