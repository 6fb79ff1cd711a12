/* ckpt_internal.h: helpers shared by the checkpoint writer and reader (not installed API). */
#ifndef GPT_CKPT_INTERNAL_H
#define GPT_CKPT_INTERNAL_H

#include <stddef.h>

#include "error.h"

/* dir + "/" + name, malloc'd. */
char *gpt_ckpt_path2(const char *dir, const char *name);
int gpt_ckpt_fsync_path(const char *path, int is_dir, gpt_err *err);

/* rm -r (our own temp directories only). */
void gpt_ckpt_remove_tree(const char *path);

#endif
