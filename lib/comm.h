/* comm.h: the communicator that data parallelism talks through (MPI now, NCCL with CUDA later).
 *
 *   gpt_comm *c = gpt_comm_open(&argc, &argv, &err);   // MPI under mpirun, else one process
 *   c->allreduce_sum(c, grads, n, &err);
 *   ...
 *   gpt_comm_close(c);
 *
 * Every collective is called by all ranks in the same order; all are blocking except the i*
 * ones at the end of the struct (gradient sync overlapped with backward), which return a request
 * to test or wait on. A collective that fails
 * returns -1 with a message; callers that cannot go on call c->abort, which ends every rank with
 * a non-zero status (MPI_Abort), so a dying rank never leaves the others hanging. */
#ifndef GPT_COMM_H
#define GPT_COMM_H

#include <stddef.h>

#include "error.h"

typedef struct gpt_comm gpt_comm;
/* A non-blocking collective in flight (NULL: already complete). */
typedef struct gpt_comm_req gpt_comm_req;
struct gpt_comm {
    const char *name; /* "single", "mpi" */
    int rank, size;
    int local_rank, local_size; /* among the ranks on this host */
    void *ctx;
    /* buf[0, n) = sum over ranks, in place. */
    int (*allreduce_sum)(gpt_comm *c, float *buf, size_t n, gpt_err *err);
    /* The same over doubles (norms, losses: small). */
    int (*allreduce_sum_f64)(gpt_comm *c, double *buf, size_t n, gpt_err *err);
    /* send holds size * n floats; recv[0, n) = sum over ranks of send[rank * n, (rank + 1) * n). */
    int (*reduce_scatter_sum)(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err);
    /* recv (size * n floats) = every rank's send[0, n), in rank order. send may equal recv + rank * n. */
    int (*allgather)(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err);
    int (*broadcast)(gpt_comm *c, void *buf, size_t bytes, int root, gpt_err *err);
    int (*barrier)(gpt_comm *c, gpt_err *err);
    /* Ends every rank with this status (never returns). */
    void (*abort)(gpt_comm *c, int status);
    void (*destroy)(gpt_comm *c);
    /* A sub-communicator (collective over c): ranks with the same color form one, ordered by key
     * (then by rank in c). The caller destroys it with gpt_comm_free before c. */
    gpt_comm *(*split)(gpt_comm *c, int color, int key, gpt_err *err);
    /* Point-to-point (pipeline parallelism): blocking; a send to peer p matches p's recv from this
     * rank with the same tag, in order. */
    int (*send)(gpt_comm *c, const void *buf, size_t bytes, int peer, int tag, gpt_err *err);
    int (*recv)(gpt_comm *c, void *buf, size_t bytes, int peer, int tag, gpt_err *err);
    /* All-to-all with variable counts (expert parallelism's token exchange): send[sdispls[r],
     * + scounts[r]) goes to rank r, and recv[rdispls[r], + rcounts[r]) arrives from rank r; counts and
     * displacements are in floats, arrays of size entries, and rcounts[r] must equal what rank r
     * sends here (exchange the counts first). Host memory; NULL on communicators that do not offer
     * it (NCCL). */
    int (*alltoallv)(gpt_comm *c, const float *send, const size_t *scounts, const size_t *sdispls, float *recv,
                     const size_t *rcounts, const size_t *rdispls, gpt_err *err);
    /* Non-blocking (may be NULL: the communicator has none; callers fall back to the blocking
     * ones). They start the collective and set *req; buf belongs to the collective until wait.
     * Requests of one communicator complete in any order but must be started in the same order on
     * every rank. MPI without an asynchronous progress thread advances them only inside MPI calls:
     * call test now and then while computing.
     * iallreduce_sum: buf[0, n) = sum over ranks, in place (as allreduce_sum).
     * ireduce_sum: root's buf[0, n) = sum over ranks; the others' buf is only read. */
    int (*iallreduce_sum)(gpt_comm *c, float *buf, size_t n, gpt_comm_req **req, gpt_err *err);
    int (*ireduce_sum)(gpt_comm *c, float *buf, size_t n, int root, gpt_comm_req **req, gpt_err *err);
    /* *done = 1 once req has completed (req stays valid until wait). NULL req: done. */
    int (*test)(gpt_comm *c, gpt_comm_req *req, int *done, gpt_err *err);
    /* Completes and frees req (NULL: no-op). On error req is freed too. */
    int (*wait)(gpt_comm *c, gpt_comm_req *req, gpt_err *err);
};

/* One process: collectives are copies. */
gpt_comm *gpt_comm_single(void);
/* MPI_COMM_WORLD (MPI_Init_thread on first use). NULL with a message when the library was built
 * without MPI. */
gpt_comm *gpt_comm_mpi(int *argc, char ***argv, gpt_err *err);
/* MPI when launched by mpirun/mpiexec (PMI_RANK, PMI_SIZE, PMIX_RANK or OMPI_COMM_WORLD_SIZE set)
 * and built with it; else single. Launched under mpirun without MPI support is an error. */
gpt_comm *gpt_comm_open(int *argc, char ***argv, gpt_err *err);
/* Finalizes MPI after a barrier. NULL is a no-op. */
void gpt_comm_close(gpt_comm *c);
/* Frees a communicator made by split (NULL is a no-op). */
void gpt_comm_free(gpt_comm *c);
/* Whether MPI support was compiled in. */
int gpt_comm_have_mpi(void);
/* Collective: whether any rank passed failed != 0, for errors one rank can meet alone (each reads
 * its own piece of a file); *first is the lowest failing rank (the one that reports), -1 when none.
 * A failing all-reduce aborts the job. */
int gpt_comm_any_failed(gpt_comm *c, int failed, int *first);

#endif
