/* gpt-shard: placeholder until its issue lands (the one placeholder the foundation allows). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("gpt-shard %s\n", GPT_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: gpt-shard [OPTIONS]\n\ngpt-shard is not implemented yet; see README.md.\n");
            return 0;
        }
    }
    fprintf(stderr, "gpt-shard: not implemented yet\n");
    return 2;
}
