/* ckpt-maxdiff A B: the largest absolute difference between the parameters of two checkpoints
 * (directories or roots with `latest`) with the same tensors; prints it and the tensor. For tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ckpt-maxdiff CKPT_A CKPT_B\n");
        return 2;
    }
    gpt_err err;
    gpt_ckpt *a = gpt_ckpt_open(argv[1], &err), *b = a ? gpt_ckpt_open(argv[2], &err) : NULL;
    if (!a || !b) {
        fprintf(stderr, "ckpt-maxdiff: %s\n", err.msg);
        return 1;
    }
    if (gpt_ckpt_count(a) != gpt_ckpt_count(b)) {
        fprintf(stderr, "ckpt-maxdiff: %zu vs %zu tensors\n", gpt_ckpt_count(a), gpt_ckpt_count(b));
        return 1;
    }
    double maxd = 0;
    const char *where = "-";
    for (size_t i = 0; i < gpt_ckpt_count(a); i++) {
        const gpt_ckpt_tensor *ta = gpt_ckpt_tensor_at(a, i), *tb = gpt_ckpt_find(b, ta->name);
        if (!tb || tb->numel != ta->numel) {
            fprintf(stderr, "ckpt-maxdiff: tensor %s missing or of another size in %s\n", ta->name, argv[2]);
            return 1;
        }
        float *x = malloc(ta->numel * sizeof(float)), *y = malloc(ta->numel * sizeof(float));
        if (!x || !y || gpt_ckpt_read_f32(a, ta, x, &err) < 0 || gpt_ckpt_read_f32(b, tb, y, &err) < 0) {
            fprintf(stderr, "ckpt-maxdiff: %s\n", err.msg);
            return 1;
        }
        for (uint64_t k = 0; k < ta->numel; k++) {
            double d = fabs((double)x[k] - (double)y[k]);
            if (!(d <= maxd)) {
                maxd = d;
                where = ta->name;
            }
        }
        free(x);
        free(y);
    }
    printf("%.9g %s\n", maxd, where);
    gpt_ckpt_close(a);
    gpt_ckpt_close(b);
    return 0;
}
