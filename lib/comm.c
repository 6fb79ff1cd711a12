/* comm.c: the single-process communicator, the MPI one (when built with GPT_MPI), and the choice. */
#include "comm.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GPT_MPI
#include <mpi.h>
#endif

/* ---- single process ---- */
static int s_allreduce(gpt_comm *c, float *buf, size_t n, gpt_err *err)
{
    (void)c, (void)buf, (void)n, (void)err;
    return 0;
}
static int s_allreduce64(gpt_comm *c, double *buf, size_t n, gpt_err *err)
{
    (void)c, (void)buf, (void)n, (void)err;
    return 0;
}
static int s_reduce_scatter(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    (void)c, (void)err;
    if (send != recv) memmove(recv, send, n * sizeof(float));
    return 0;
}
static int s_allgather(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    (void)c, (void)err;
    if (send != recv) memmove(recv, send, n * sizeof(float));
    return 0;
}
static int s_broadcast(gpt_comm *c, void *buf, size_t bytes, int root, gpt_err *err)
{
    (void)c, (void)buf, (void)bytes, (void)root, (void)err;
    return 0;
}
static int s_barrier(gpt_comm *c, gpt_err *err)
{
    (void)c, (void)err;
    return 0;
}
static void s_abort(gpt_comm *c, int status)
{
    (void)c;
    exit(status);
}
static void s_destroy(gpt_comm *c) { free(c); }
static gpt_comm *s_split(gpt_comm *c, int color, int key, gpt_err *err)
{
    (void)c, (void)color, (void)key, (void)err;
    return gpt_comm_single();
}
/* One rank has no peer: every point-to-point call is a caller's bug, reported. */
static int s_send(gpt_comm *c, const void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    (void)c, (void)buf, (void)bytes, (void)tag;
    return gpt_errf(err, "send to rank %d: a single-process communicator has no peers", peer);
}
static int s_recv(gpt_comm *c, void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    (void)c, (void)buf, (void)bytes, (void)tag;
    return gpt_errf(err, "receive from rank %d: a single-process communicator has no peers", peer);
}

static int s_alltoallv(gpt_comm *c, const float *send, const size_t *scounts, const size_t *sdispls, float *recv,
                       const size_t *rcounts, const size_t *rdispls, gpt_err *err)
{
    (void)c;
    if (scounts[0] != rcounts[0])
        return gpt_errf(err, "all-to-all: one rank sends itself %zu floats but expects %zu", scounts[0], rcounts[0]);
    if (scounts[0]) memmove(recv + rdispls[0], send + sdispls[0], scounts[0] * sizeof(float));
    return 0;
}
/* One rank: the sum is already in place, so every request is complete at once (NULL). */
static int s_iallreduce(gpt_comm *c, float *buf, size_t n, gpt_comm_req **req, gpt_err *err)
{
    (void)c, (void)buf, (void)n, (void)err;
    *req = NULL;
    return 0;
}
static int s_ireduce(gpt_comm *c, float *buf, size_t n, int root, gpt_comm_req **req, gpt_err *err)
{
    (void)c, (void)buf, (void)n, (void)root, (void)err;
    *req = NULL;
    return 0;
}
static int s_test(gpt_comm *c, gpt_comm_req *req, int *done, gpt_err *err)
{
    (void)c, (void)req, (void)err;
    *done = 1;
    return 0;
}
static int s_wait(gpt_comm *c, gpt_comm_req *req, gpt_err *err)
{
    (void)c, (void)req, (void)err;
    return 0;
}

gpt_comm *gpt_comm_single(void)
{
    gpt_comm *c = gpt_xcalloc(1, sizeof *c);
    c->name = "single";
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    c->allreduce_sum = s_allreduce;
    c->allreduce_sum_f64 = s_allreduce64;
    c->reduce_scatter_sum = s_reduce_scatter;
    c->allgather = s_allgather;
    c->broadcast = s_broadcast;
    c->barrier = s_barrier;
    c->abort = s_abort;
    c->destroy = s_destroy;
    c->split = s_split;
    c->send = s_send;
    c->recv = s_recv;
    c->alltoallv = s_alltoallv;
    c->iallreduce_sum = s_iallreduce;
    c->ireduce_sum = s_ireduce;
    c->test = s_test;
    c->wait = s_wait;
    return c;
}

/* ---- MPI ---- */
#ifdef GPT_MPI
/* MPI counts are int: large buffers go in chunks. */
#define CHUNK ((size_t)1 << 28)

/* ctx of an MPI communicator: its MPI handle, and whether it owns MPI (the world one finalizes). */
typedef struct {
    MPI_Comm comm;
    int world;
} mpi_ctx;
#define COMM(c) (((mpi_ctx *)(c)->ctx)->comm)

static int mpi_fail(gpt_err *err, const char *what, int rc)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    return gpt_errf(err, "MPI %s failed: %s", what, s);
}

static int m_allreduce(gpt_comm *c, float *buf, size_t n, gpt_err *err)
{
    for (size_t off = 0; off < n; off += CHUNK) {
        int k = (int)(n - off < CHUNK ? n - off : CHUNK);
        int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, k, MPI_FLOAT, MPI_SUM, COMM(c));
        if (rc != MPI_SUCCESS) return mpi_fail(err, "all-reduce", rc);
    }
    return 0;
}
static int m_allreduce64(gpt_comm *c, double *buf, size_t n, gpt_err *err)
{
    if (n > INT_MAX) return gpt_errf(err, "MPI all-reduce: %zu doubles is too many", n);
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, COMM(c));
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "all-reduce", rc);
}
static int m_reduce_scatter(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    /* Chunk k of every rank's block: send[r * n + off .. + k] for each r is not contiguous across
     * r, so large buffers fall back to one reduce per rank block. */
    if (n <= CHUNK) {
        int rc = MPI_Reduce_scatter_block(send, recv, (int)n, MPI_FLOAT, MPI_SUM, COMM(c));
        return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "reduce-scatter", rc);
    }
    for (int r = 0; r < c->size; r++)
        for (size_t off = 0; off < n; off += CHUNK) {
            int k = (int)(n - off < CHUNK ? n - off : CHUNK);
            int rc = MPI_Reduce(send + (size_t)r * n + off, r == c->rank ? recv + off : NULL, k, MPI_FLOAT, MPI_SUM,
                                r, COMM(c));
            if (rc != MPI_SUCCESS) return mpi_fail(err, "reduce", rc);
        }
    return 0;
}
static int m_allgather(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    if (n <= CHUNK) {
        const void *s = send == recv + (size_t)c->rank * n ? MPI_IN_PLACE : send;
        int rc = MPI_Allgather(s, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, COMM(c));
        return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "all-gather", rc);
    }
    if (send != recv + (size_t)c->rank * n) memmove(recv + (size_t)c->rank * n, send, n * sizeof(float));
    for (int r = 0; r < c->size; r++)
        for (size_t off = 0; off < n; off += CHUNK) {
            int k = (int)(n - off < CHUNK ? n - off : CHUNK);
            int rc = MPI_Bcast(recv + (size_t)r * n + off, k, MPI_FLOAT, r, COMM(c));
            if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", rc);
        }
    return 0;
}
static int m_broadcast(gpt_comm *c, void *buf, size_t bytes, int root, gpt_err *err)
{
    for (size_t off = 0; off < bytes; off += CHUNK) {
        int k = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        int rc = MPI_Bcast((char *)buf + off, k, MPI_BYTE, root, COMM(c));
        if (rc != MPI_SUCCESS) return mpi_fail(err, "broadcast", rc);
    }
    return 0;
}
static int m_barrier(gpt_comm *c, gpt_err *err)
{
    int rc = MPI_Barrier(COMM(c));
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "barrier", rc);
}
static void m_abort(gpt_comm *c, int status)
{
    (void)c; /* MPI_Abort on a sub-communicator may end only its ranks: always the world */
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
    exit(status ? status : 1);
}
static void m_destroy(gpt_comm *c)
{
    mpi_ctx *x = c->ctx;
    if (x->world) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin) MPI_Finalize();
    } else {
        MPI_Comm_free(&x->comm);
    }
    free(x);
    free(c);
}
static int m_send(gpt_comm *c, const void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    for (size_t off = 0; off < bytes; off += CHUNK) {
        int k = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        int rc = MPI_Send((const char *)buf + off, k, MPI_BYTE, peer, tag, COMM(c));
        if (rc != MPI_SUCCESS) return mpi_fail(err, "send", rc);
    }
    return 0;
}
static int m_recv(gpt_comm *c, void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    for (size_t off = 0; off < bytes; off += CHUNK) {
        int k = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        int rc = MPI_Recv((char *)buf + off, k, MPI_BYTE, peer, tag, COMM(c), MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "receive", rc);
    }
    return 0;
}
static int m_alltoallv(gpt_comm *c, const float *send, const size_t *scounts, const size_t *sdispls, float *recv,
                       const size_t *rcounts, const size_t *rdispls, gpt_err *err)
{
    /* MPI counts and displacements are int: refuse what does not fit rather than wrap */
    int P = c->size, *v = gpt_xmalloc((size_t)4 * (size_t)P * sizeof *v), rc;
    for (int r = 0; r < P; r++) {
        if (scounts[r] > INT_MAX || sdispls[r] > INT_MAX || rcounts[r] > INT_MAX || rdispls[r] > INT_MAX) {
            free(v);
            return gpt_errf(err, "MPI all-to-all: more than %d floats to or from rank %d; use more ranks or smaller "
                                 "micro-batches", INT_MAX, r);
        }
        v[r] = (int)scounts[r], v[P + r] = (int)sdispls[r], v[2 * P + r] = (int)rcounts[r], v[3 * P + r] = (int)rdispls[r];
    }
    rc = MPI_Alltoallv(send, v, v + P, MPI_FLOAT, recv, v + 2 * P, v + 3 * P, MPI_FLOAT, COMM(c));
    free(v);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "all-to-all", rc);
}

/* A non-blocking collective: one MPI request per CHUNK of the buffer. */
struct gpt_comm_req {
    int n;
    MPI_Request r[];
};

/* Starts the chunks of an all-reduce (root < 0) or a reduce to root. */
static int m_istart(gpt_comm *c, float *buf, size_t n, int root, gpt_comm_req **req, gpt_err *err)
{
    *req = NULL;
    if (n == 0) return 0;
    size_t k = (n + CHUNK - 1) / CHUNK;
    gpt_comm_req *q = gpt_xmalloc(sizeof *q + k * sizeof(MPI_Request));
    q->n = 0;
    for (size_t off = 0; off < n; off += CHUNK) {
        int m = (int)(n - off < CHUNK ? n - off : CHUNK), rc;
        if (root < 0)
            rc = MPI_Iallreduce(MPI_IN_PLACE, buf + off, m, MPI_FLOAT, MPI_SUM, COMM(c), &q->r[q->n]);
        else if (root == c->rank)
            rc = MPI_Ireduce(MPI_IN_PLACE, buf + off, m, MPI_FLOAT, MPI_SUM, root, COMM(c), &q->r[q->n]);
        else
            rc = MPI_Ireduce(buf + off, NULL, m, MPI_FLOAT, MPI_SUM, root, COMM(c), &q->r[q->n]);
        if (rc != MPI_SUCCESS) {
            /* The caller aborts every rank: the chunks already started are abandoned with it. */
            free(q);
            return mpi_fail(err, root < 0 ? "non-blocking all-reduce" : "non-blocking reduce", rc);
        }
        q->n++;
    }
    *req = q;
    return 0;
}
static int m_iallreduce(gpt_comm *c, float *buf, size_t n, gpt_comm_req **req, gpt_err *err)
{
    return m_istart(c, buf, n, -1, req, err);
}
static int m_ireduce(gpt_comm *c, float *buf, size_t n, int root, gpt_comm_req **req, gpt_err *err)
{
    if (root < 0 || root >= c->size) return gpt_errf(err, "reduce to rank %d of %d: no such rank", root, c->size);
    return m_istart(c, buf, n, root, req, err);
}
static int m_test(gpt_comm *c, gpt_comm_req *req, int *done, gpt_err *err)
{
    (void)c;
    *done = 1;
    if (!req) return 0;
    /* (request by request: MPI_STATUSES_IGNORE trips GCC's access checks on MPICH's prototypes) */
    for (int i = 0; i < req->n && *done; i++) {
        int rc = MPI_Test(&req->r[i], done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(err, "test of a non-blocking collective", rc);
    }
    return 0;
}
static int m_wait(gpt_comm *c, gpt_comm_req *req, gpt_err *err)
{
    (void)c;
    if (!req) return 0;
    int rc = MPI_SUCCESS;
    for (int i = 0; i < req->n && rc == MPI_SUCCESS; i++) rc = MPI_Wait(&req->r[i], MPI_STATUS_IGNORE);
    free(req);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "wait for a non-blocking collective", rc);
}

static gpt_comm *m_wrap(MPI_Comm mc, int world);
static gpt_comm *m_split(gpt_comm *c, int color, int key, gpt_err *err)
{
    MPI_Comm sub;
    int rc = MPI_Comm_split(COMM(c), color, key, &sub);
    if (rc != MPI_SUCCESS) {
        mpi_fail(err, "communicator split", rc);
        return NULL;
    }
    MPI_Comm_set_errhandler(sub, MPI_ERRORS_RETURN);
    return m_wrap(sub, 0);
}

static gpt_comm *m_wrap(MPI_Comm mc, int world)
{
    gpt_comm *c = gpt_xcalloc(1, sizeof *c);
    mpi_ctx *x = gpt_xcalloc(1, sizeof *x);
    x->comm = mc;
    x->world = world;
    c->ctx = x;
    c->name = "mpi";
    MPI_Comm_rank(mc, &c->rank);
    MPI_Comm_size(mc, &c->size);
    MPI_Comm local;
    MPI_Comm_split_type(mc, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &c->local_rank);
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    c->allreduce_sum = m_allreduce;
    c->allreduce_sum_f64 = m_allreduce64;
    c->reduce_scatter_sum = m_reduce_scatter;
    c->allgather = m_allgather;
    c->broadcast = m_broadcast;
    c->barrier = m_barrier;
    c->abort = m_abort;
    c->destroy = m_destroy;
    c->split = m_split;
    c->send = m_send;
    c->recv = m_recv;
    c->alltoallv = m_alltoallv;
    c->iallreduce_sum = m_iallreduce;
    c->ireduce_sum = m_ireduce;
    c->test = m_test;
    c->wait = m_wait;
    return c;
}

gpt_comm *gpt_comm_mpi(int *argc, char ***argv, gpt_err *err)
{
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        gpt_errf(err, "MPI_Init failed: is this run under mpirun?");
        return NULL;
    }
    /* Errors come back as codes so they can be reported; the caller aborts everyone. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    return m_wrap(MPI_COMM_WORLD, 1);
}
int gpt_comm_have_mpi(void) { return 1; }
#else
gpt_comm *gpt_comm_mpi(int *argc, char ***argv, gpt_err *err)
{
    (void)argc, (void)argv;
    gpt_errf(err, "this build has no MPI support; rebuild with MPICH installed (pkg-config mpich)");
    return NULL;
}
int gpt_comm_have_mpi(void) { return 0; }
#endif

static int launched_by_mpi(void)
{
    static const char *const vars[] = {"PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

gpt_comm *gpt_comm_open(int *argc, char ***argv, gpt_err *err)
{
    if (!launched_by_mpi()) return gpt_comm_single();
    return gpt_comm_mpi(argc, argv, err);
}

void gpt_comm_close(gpt_comm *c)
{
    if (!c) return;
    if (c->size > 1) c->barrier(c, NULL);
    c->destroy(c);
}

void gpt_comm_free(gpt_comm *c)
{
    if (c) c->destroy(c);
}

int gpt_comm_any_failed(gpt_comm *c, int failed, int *first)
{
    double *f = gpt_xcalloc((size_t)c->size, sizeof *f);
    gpt_err e2 = {{0}};
    f[c->rank] = failed;
    if (c->allreduce_sum_f64(c, f, (size_t)c->size, &e2) < 0) c->abort(c, 1);
    *first = -1;
    for (int r = c->size - 1; r >= 0; r--)
        if (f[r] != 0) *first = r;
    free(f);
    return *first >= 0;
}
