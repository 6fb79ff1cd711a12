/* backend_select.h: a backend by name, for programs that take --device. */
#ifndef GPT_BACKEND_SELECT_H
#define GPT_BACKEND_SELECT_H

#include "backend.h"
#include "error.h"

/* name: "cpu"; "cuda" or "cuda:N" (device N, default 0); "auto" (or NULL or ""): CUDA device 0
 * when this build has CUDA and a device is visible, else the CPU. NULL with a message when the
 * name is unknown or the CUDA backend cannot start (explicit "cuda" never falls back). */
gpt_backend *gpt_backend_open(const char *name, gpt_err *err);

#endif
