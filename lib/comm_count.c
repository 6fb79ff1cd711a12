/* comm_count.c: the counting communicator (comm_count.h). */
#include "comm_count.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    gpt_comm pub; /* first: the gpt_comm pointer handed out is this struct's address */
    gpt_comm *inner;
    gpt_comm_counts n;
} counting;

static const char *const names[GPT_CC_N] = {"allreduce", "allreduce_f64", "reduce_scatter", "allgather",
                                            "broadcast", "send", "recv", "alltoallv", "alltoallv_recv",
                                            "alltoallv_self", "iallreduce", "ireduce"};

static void destroy(gpt_comm *c);
static int is_counting(const gpt_comm *c) { return c && c->destroy == destroy; }
static counting *self(gpt_comm *c) { return (counting *)c; }
static void add(gpt_comm *c, int kind, uint64_t bytes)
{
    self(c)->n.calls[kind]++;
    self(c)->n.bytes[kind] += bytes;
}

static int allreduce(gpt_comm *c, float *buf, size_t n, gpt_err *err)
{
    add(c, GPT_CC_ALLREDUCE, (uint64_t)n * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->allreduce_sum(in, buf, n, err);
}
static int allreduce64(gpt_comm *c, double *buf, size_t n, gpt_err *err)
{
    add(c, GPT_CC_ALLREDUCE_F64, (uint64_t)n * sizeof(double));
    gpt_comm *in = self(c)->inner;
    return in->allreduce_sum_f64(in, buf, n, err);
}
static int reduce_scatter(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    add(c, GPT_CC_REDUCE_SCATTER, (uint64_t)n * (uint64_t)c->size * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->reduce_scatter_sum(in, send, recv, n, err);
}
static int allgather(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    add(c, GPT_CC_ALLGATHER, (uint64_t)n * (uint64_t)c->size * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->allgather(in, send, recv, n, err);
}
static int broadcast(gpt_comm *c, void *buf, size_t bytes, int root, gpt_err *err)
{
    add(c, GPT_CC_BROADCAST, bytes);
    gpt_comm *in = self(c)->inner;
    return in->broadcast(in, buf, bytes, root, err);
}
static int send(gpt_comm *c, const void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    add(c, GPT_CC_SEND, bytes);
    gpt_comm *in = self(c)->inner;
    return in->send(in, buf, bytes, peer, tag, err);
}
static int recv(gpt_comm *c, void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    add(c, GPT_CC_RECV, bytes);
    gpt_comm *in = self(c)->inner;
    return in->recv(in, buf, bytes, peer, tag, err);
}
static int alltoallv(gpt_comm *c, const float *send_, const size_t *scounts, const size_t *sdispls, float *recv_,
                     const size_t *rcounts, const size_t *rdispls, gpt_err *err)
{
    uint64_t ns = 0, nr = 0;
    for (int r = 0; r < c->size; r++) ns += scounts[r], nr += rcounts[r];
    add(c, GPT_CC_ALLTOALLV, ns * sizeof(float));
    add(c, GPT_CC_ALLTOALLV_RECV, nr * sizeof(float));
    add(c, GPT_CC_ALLTOALLV_SELF, (uint64_t)scounts[c->rank] * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->alltoallv(in, send_, scounts, sdispls, recv_, rcounts, rdispls, err);
}
static int iallreduce(gpt_comm *c, float *buf, size_t n, gpt_comm_req **req, gpt_err *err)
{
    add(c, GPT_CC_IALLREDUCE, (uint64_t)n * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->iallreduce_sum(in, buf, n, req, err);
}
static int ireduce(gpt_comm *c, float *buf, size_t n, int root, gpt_comm_req **req, gpt_err *err)
{
    add(c, GPT_CC_IREDUCE, (uint64_t)n * sizeof(float));
    gpt_comm *in = self(c)->inner;
    return in->ireduce_sum(in, buf, n, root, req, err);
}
static int barrier(gpt_comm *c, gpt_err *err)
{
    gpt_comm *in = self(c)->inner;
    return in->barrier(in, err);
}
static void abort_all(gpt_comm *c, int status)
{
    gpt_comm *in = self(c)->inner;
    in->abort(in, status);
}
static gpt_comm *split(gpt_comm *c, int color, int key, gpt_err *err)
{
    gpt_comm *in = self(c)->inner;
    gpt_comm *sub = in->split(in, color, key, err);
    return sub ? gpt_comm_counting(sub) : NULL;
}
static void destroy(gpt_comm *c)
{
    gpt_comm *in = self(c)->inner;
    in->destroy(in);
    free(c);
}

gpt_comm *gpt_comm_counting(gpt_comm *inner)
{
    counting *w = gpt_xcalloc(1, sizeof *w);
    /* Everything the inner one has (ctx, rank, sizes, entries added after this file was written),
     * then the counted entries over it. */
    w->pub = *inner;
    w->inner = inner;
    w->pub.allreduce_sum = allreduce;
    w->pub.allreduce_sum_f64 = allreduce64;
    w->pub.reduce_scatter_sum = reduce_scatter;
    w->pub.allgather = allgather;
    w->pub.broadcast = broadcast;
    w->pub.barrier = barrier;
    w->pub.abort = abort_all;
    w->pub.destroy = destroy;
    w->pub.split = split;
    w->pub.send = send;
    w->pub.recv = recv;
    if (inner->alltoallv) w->pub.alltoallv = alltoallv;
    if (inner->iallreduce_sum) w->pub.iallreduce_sum = iallreduce;
    if (inner->ireduce_sum) w->pub.ireduce_sum = ireduce;
    return &w->pub;
}

int gpt_comm_counts_get(const gpt_comm *c, gpt_comm_counts *out)
{
    memset(out, 0, sizeof *out);
    if (!is_counting(c)) return 0;
    *out = ((const counting *)c)->n;
    return 1;
}

void gpt_comm_counts_reset(gpt_comm *c)
{
    if (is_counting(c)) memset(&self(c)->n, 0, sizeof self(c)->n);
}

const char *gpt_comm_count_name(int kind) { return kind >= 0 && kind < GPT_CC_N ? names[kind] : "?"; }
