/* maxrss: run a command and write its peak resident set size (getrusage of the child, KiB) to a file.
 *
 *   maxrss OUT CMD [ARGS...]
 *
 * Under mpirun every rank writes OUT.RANK (the launcher's PMI_RANK, PMIX_RANK or
 * OMPI_COMM_WORLD_RANK), so `mpirun -np 2 maxrss rss gpt-generate ...` gives rss.0 and rss.1.
 * Exits with the command's status (128 + signal when it was killed). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: maxrss OUT CMD [ARGS...]\n");
        return 2;
    }
    const char *rank = getenv("PMI_RANK");
    if (!rank) rank = getenv("PMIX_RANK");
    if (!rank) rank = getenv("OMPI_COMM_WORLD_RANK");
    pid_t pid = fork();
    if (pid < 0) return perror("maxrss: fork"), 2;
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0) return perror("maxrss: wait4"), 2;
    char path[4096];
    snprintf(path, sizeof path, rank ? "%s.%s" : "%s", argv[1], rank);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%ld\n", ru.ru_maxrss) < 0 || fclose(f) != 0) return perror(path), 2;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
