// comm_nccl.cu: the NCCL communicator over device memory (lib/comm_nccl.h). Built with GPT_NCCL
// when the Makefile finds nccl.h and libnccl; otherwise gpt_comm_nccl says why it cannot start.
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "comm.h"
#include "error.h"
}
#include "comm_nccl.h"

#ifdef GPT_NCCL
#include <nccl.h>

struct nccl_ctx {
    gpt_comm *over; // host collectives (f64, barrier, abort) and the bootstrap
    ncclComm_t nc;
    cudaStream_t stream;
    int device;
};

static nccl_ctx *NX(gpt_comm *c) { return (nccl_ctx *)c->ctx; }

// Orders a collective after everything queued on the device (the backend's own stream made the
// buffer), then waits for it, so callers see the blocking gpt_comm contract.
static int pre(gpt_comm *c, const char *what, gpt_err *err)
{
    cudaError_t e = cudaSetDevice(NX(c)->device);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) return gpt_errf(err, "nccl %s on rank %d: the device failed before it: %s", what, c->rank, cudaGetErrorString(e));
    return 0;
}

static int post(gpt_comm *c, const char *what, ncclResult_t r, gpt_err *err)
{
    if (r != ncclSuccess)
        return gpt_errf(err, "nccl %s on rank %d of %d: %s (NCCL_DEBUG=INFO shows why)", what, c->rank, c->size,
                        ncclGetErrorString(r));
    cudaError_t e = cudaStreamSynchronize(NX(c)->stream);
    if (e != cudaSuccess) return gpt_errf(err, "nccl %s on rank %d: waiting: %s", what, c->rank, cudaGetErrorString(e));
    return 0;
}

static int n_allreduce(gpt_comm *c, float *buf, size_t n, gpt_err *err)
{
    if (pre(c, "all-reduce", err) < 0) return -1;
    return post(c, "all-reduce", ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, NX(c)->nc, NX(c)->stream), err);
}

static int n_allreduce64(gpt_comm *c, double *buf, size_t n, gpt_err *err)
{
    gpt_comm *o = NX(c)->over;
    return o->allreduce_sum_f64(o, buf, n, err);
}

static int n_reduce_scatter(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    if (pre(c, "reduce-scatter", err) < 0) return -1;
    return post(c, "reduce-scatter",
                ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, NX(c)->nc, NX(c)->stream), err);
}

static int n_allgather(gpt_comm *c, const float *send, float *recv, size_t n, gpt_err *err)
{
    if (pre(c, "all-gather", err) < 0) return -1;
    return post(c, "all-gather", ncclAllGather(send, recv, n, ncclFloat32, NX(c)->nc, NX(c)->stream), err);
}

static int n_broadcast(gpt_comm *c, void *buf, size_t bytes, int root, gpt_err *err)
{
    if (root < 0 || root >= c->size)
        return gpt_errf(err, "nccl broadcast: root %d is not a rank (0..%d)", root, c->size - 1);
    if (pre(c, "broadcast", err) < 0) return -1;
    return post(c, "broadcast", ncclBroadcast(buf, buf, bytes, ncclUint8, root, NX(c)->nc, NX(c)->stream), err);
}

static int n_barrier(gpt_comm *c, gpt_err *err)
{
    gpt_comm *o = NX(c)->over;
    return o->barrier(o, err);
}

static void n_abort(gpt_comm *c, int status)
{
    ncclCommAbort(NX(c)->nc);
    NX(c)->over->abort(NX(c)->over, status);
}

static void n_destroy(gpt_comm *c)
{
    nccl_ctx *x = NX(c);
    cudaSetDevice(x->device);
    cudaStreamSynchronize(x->stream);
    ncclCommDestroy(x->nc);
    cudaStreamDestroy(x->stream);
    free(x);
    free(c);
}

static gpt_comm *n_split(gpt_comm *c, int color, int key, gpt_err *err)
{
    (void)c, (void)color, (void)key;
    gpt_errf(err, "nccl communicator: split the host communicator, then build an NCCL one on the piece");
    return NULL;
}

static int n_send(gpt_comm *c, const void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    (void)tag; // NCCL matches by order per peer, which is the contract (tags pair in order too)
    if (peer < 0 || peer >= c->size || peer == c->rank)
        return gpt_errf(err, "nccl send: peer %d is not another rank (0..%d, this is %d)", peer, c->size - 1, c->rank);
    if (pre(c, "send", err) < 0) return -1;
    return post(c, "send", ncclSend(buf, bytes, ncclUint8, peer, NX(c)->nc, NX(c)->stream), err);
}

static int n_recv(gpt_comm *c, void *buf, size_t bytes, int peer, int tag, gpt_err *err)
{
    (void)tag;
    if (peer < 0 || peer >= c->size || peer == c->rank)
        return gpt_errf(err, "nccl recv: peer %d is not another rank (0..%d, this is %d)", peer, c->size - 1, c->rank);
    if (pre(c, "recv", err) < 0) return -1;
    return post(c, "recv", ncclRecv(buf, bytes, ncclUint8, peer, NX(c)->nc, NX(c)->stream), err);
}

extern "C" int gpt_comm_nccl_available(void) { return 1; }

extern "C" gpt_comm *gpt_comm_nccl(gpt_comm *over, int device, gpt_err *err)
{
    // rank 0 makes the id; its success travels with it, so no rank enters the init alone
    struct {
        ncclUniqueId id;
        int ok;
        char msg[200];
    } boot;
    memset(&boot, 0, sizeof boot);
    if (over->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess;
        if (!boot.ok) snprintf(boot.msg, sizeof boot.msg, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    }
    if (over->broadcast(over, &boot, sizeof boot, 0, err) < 0) {
        gpt_err_prefix(err, "nccl bootstrap");
        return NULL;
    }
    if (!boot.ok) {
        gpt_errf(err, "nccl bootstrap on rank 0: %s (NCCL_DEBUG=INFO shows why)", boot.msg);
        return NULL;
    }
    nccl_ctx *x = (nccl_ctx *)gpt_xcalloc(1, sizeof *x);
    x->over = over;
    x->device = device;
    char why[256] = "";
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking);
    int have_stream = e == cudaSuccess, have_comm = 0;
    if (e != cudaSuccess) {
        snprintf(why, sizeof why, "CUDA device %d: %s", device, cudaGetErrorString(e));
    } else {
        // collective: a rank whose device failed above skips it and the others may wait here, but
        // the backend already started on this device, so that failure is unlikely; the agreement
        // below turns an init failure on any rank into an error on every rank
        ncclResult_t r = ncclCommInitRank(&x->nc, over->size, boot.id, over->rank);
        have_comm = r == ncclSuccess;
        if (!have_comm) snprintf(why, sizeof why, "ncclCommInitRank (rank %d of %d, device %d): %s", over->rank,
                                 over->size, device, ncclGetErrorString(r));
    }
    double bad = why[0] ? 1 : 0;
    gpt_err e2 = {0};
    if (over->size > 1 && over->allreduce_sum_f64(over, &bad, 1, &e2) < 0) bad = 1;
    if (bad > 0) {
        if (why[0]) gpt_errf(err, "nccl communicator: %s", why);
        else gpt_errf(err, "nccl communicator: another rank failed to start NCCL (see its message)");
        if (have_comm) ncclCommDestroy(x->nc);
        if (have_stream) cudaStreamDestroy(x->stream);
        free(x);
        return NULL;
    }
    gpt_comm *c = (gpt_comm *)gpt_xcalloc(1, sizeof *c);
    c->name = "nccl";
    c->rank = over->rank;
    c->size = over->size;
    c->local_rank = over->local_rank;
    c->local_size = over->local_size;
    c->ctx = x;
    c->allreduce_sum = n_allreduce;
    c->allreduce_sum_f64 = n_allreduce64;
    c->reduce_scatter_sum = n_reduce_scatter;
    c->allgather = n_allgather;
    c->broadcast = n_broadcast;
    c->barrier = n_barrier;
    c->abort = n_abort;
    c->destroy = n_destroy;
    c->split = n_split;
    c->send = n_send;
    c->recv = n_recv;
    return c;
}

#else // built without NCCL

extern "C" int gpt_comm_nccl_available(void) { return 0; }

extern "C" gpt_comm *gpt_comm_nccl(gpt_comm *over, int device, gpt_err *err)
{
    (void)over, (void)device;
    gpt_errf(err, "this build has no NCCL (nccl.h or libnccl was not found at build time; set NCCL_HOME)");
    return NULL;
}

#endif
