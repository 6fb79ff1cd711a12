#include "blas_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *openblas_get_corename(void);

const char *gpt_blas_corename(void) { return openblas_get_corename(); }

const char *gpt_blas_better_core(void)
{
    const char *core = openblas_get_corename();
    if (!core) return NULL;
    static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids", "Zen"};
    static const char *const avx2_cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        for (size_t i = 0; i < sizeof avx512_cores / sizeof *avx512_cores; i++)
            if (strcasecmp(core, avx512_cores[i]) == 0) return NULL;
        return "SkylakeX";
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        for (size_t i = 0; i < sizeof avx2_cores / sizeof *avx2_cores; i++)
            if (strcasecmp(core, avx2_cores[i]) == 0) return NULL;
        return "Haswell";
    }
    return NULL;
}

void gpt_blas_fix_or_warn(char **argv)
{
    const char *better = gpt_blas_better_core();
    if (!better) return;
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (set && *set) {
        fprintf(stderr,
                "gpt: warning: OpenBLAS runs %s kernels (OPENBLAS_CORETYPE=%s) on a CPU that supports %s: "
                "GEMMs will be several times slower\n",
                gpt_blas_corename(), set, better);
        return;
    }
    fprintf(stderr, "gpt: OpenBLAS took this CPU for %s; re-running with OPENBLAS_CORETYPE=%s\n",
            gpt_blas_corename(), better);
    setenv("OPENBLAS_CORETYPE", better, 1);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "gpt: warning: could not re-execute; set OPENBLAS_CORETYPE=%s yourself\n", better);
}
