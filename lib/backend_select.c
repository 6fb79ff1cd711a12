/* backend_select.c: see backend_select.h. */
#include "backend_select.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"

gpt_backend *gpt_backend_open(const char *name, gpt_err *err)
{
    if (!name || !*name || strcmp(name, "auto") == 0) {
#ifdef GPT_CUDA
        gpt_err ignored;
        gpt_backend *be = gpt_backend_cuda(0, &ignored); /* no device visible: the CPU is the answer */
        if (be) return be;
#endif
        return gpt_backend_cpu();
    }
    if (strcmp(name, "cpu") == 0) return gpt_backend_cpu();
    if (strncmp(name, "cuda", 4) == 0 && (name[4] == '\0' || name[4] == ':')) {
        long dev = 0;
        if (name[4] == ':') {
            char *end;
            dev = strtol(name + 5, &end, 10);
            if (end == name + 5 || *end || dev < 0 || dev > INT_MAX) {
                gpt_errf(err, "device '%s': want cuda:N with N a device number (0, 1, ...)", name);
                return NULL;
            }
        }
        gpt_backend *be = gpt_backend_cuda((int)dev, err);
        if (!be) gpt_err_prefix(err, "device '%s'", name);
        return be;
    }
    gpt_errf(err, "unknown device '%s': want cpu, cuda, cuda:N or auto", name);
    return NULL;
}
