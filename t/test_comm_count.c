/* The counting communicator (lib/comm_count.h) over one process: every call is counted with the
 * payload the header defines (4n bytes for an all-reduce of n floats, 8n for doubles, size * n
 * floats for reduce-scatter and all-gather, the bytes of a broadcast, send and receive), the data
 * still goes through, splits count on their own, reset zeroes, and a plain communicator reports
 * nothing. The all-to-all is counted per direction (sent, received, and the share a rank sends
 * itself) over a fake 3-rank inner communicator, so the directions differ; an inner communicator
 * without one keeps none. */
#include <stdlib.h>
#include <string.h>

#include "comm_count.h"
#include "tap.h"

/* A fake rank 1 of 3: its all-to-all records what reached it and fills recv with the send rows
 * tagged by their target, so the test sees the arguments pass through unchanged. */
typedef struct {
    int calls;
    const size_t *sc, *rc;
} fake_ctx;
static int fake_a2a(gpt_comm *c, const float *send, const size_t *scounts, const size_t *sdispls, float *recv,
                    const size_t *rcounts, const size_t *rdispls, gpt_err *err)
{
    (void)err;
    fake_ctx *x = c->ctx;
    x->calls++;
    x->sc = scounts, x->rc = rcounts;
    for (int r = 0; r < c->size; r++)
        for (size_t i = 0; i < rcounts[r]; i++) recv[rdispls[r] + i] = (float)(100 * r) + (i < scounts[r] ? send[sdispls[r] + i] : -1);
    return 0;
}
static void fake_destroy(gpt_comm *c) { free(c); }

int main(void)
{
    gpt_err err;
    gpt_comm *c = gpt_comm_counting(gpt_comm_single());
    gpt_comm_counts n;
    ok(gpt_comm_counts_get(c, &n) == 1, "a counting communicator reports counts");
    is_int(c->rank, 0, "rank of the inner communicator");
    is_int(c->size, 1, "size of the inner communicator");
    is_str(c->name, "single", "name of the inner communicator");

    float buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (float)i;
    double d[5] = {1, 2, 3, 4, 5};
    float rs[10], ag[10];
    ok(c->allreduce_sum(c, buf, 1000, &err) == 0, "all-reduce");
    ok(c->allreduce_sum(c, buf, 24, &err) == 0, "all-reduce again");
    ok(c->allreduce_sum_f64(c, d, 5, &err) == 0, "all-reduce of doubles");
    ok(c->reduce_scatter_sum(c, buf + 100, rs, 10, &err) == 0, "reduce-scatter");
    ok(rs[0] == 100 && rs[9] == 109, "reduce-scatter moved the data through (%g %g)", rs[0], rs[9]);
    ok(c->allgather(c, buf + 200, ag, 10, &err) == 0, "all-gather");
    ok(ag[0] == 200 && ag[9] == 209, "all-gather moved the data through");
    ok(c->broadcast(c, buf, 123, 0, &err) == 0, "broadcast");
    ok(c->barrier(c, &err) == 0, "barrier");
    ok(c->send(c, buf, 16, 1, 1, &err) < 0 && strstr(err.msg, "no peers"), "send on one rank fails as the inner one");
    gpt_comm_counts_get(c, &n);
    is_int(n.calls[GPT_CC_ALLREDUCE], 2, "2 all-reduce calls");
    is_int(n.bytes[GPT_CC_ALLREDUCE], 4 * (1000 + 24), "all-reduce bytes: 4 per float");
    is_int(n.calls[GPT_CC_ALLREDUCE_F64], 1, "1 f64 all-reduce");
    is_int(n.bytes[GPT_CC_ALLREDUCE_F64], 40, "f64 all-reduce bytes: 8 per double");
    is_int(n.bytes[GPT_CC_REDUCE_SCATTER], 40, "reduce-scatter bytes: size x n floats");
    is_int(n.bytes[GPT_CC_ALLGATHER], 40, "all-gather bytes: size x n floats");
    is_int(n.bytes[GPT_CC_BROADCAST], 123, "broadcast bytes");
    is_int(n.calls[GPT_CC_SEND], 1, "the failed send is counted (it was asked for)");
    is_int(n.bytes[GPT_CC_SEND], 16, "send bytes");
    is_int(n.calls[GPT_CC_RECV], 0, "no receive");

    gpt_comm *sub = c->split(c, 0, 0, &err);
    ok(sub != NULL, "split");
    gpt_comm_counts ns;
    ok(gpt_comm_counts_get(sub, &ns) == 1, "a split of a counting communicator counts");
    sub->allreduce_sum(sub, buf, 7, &err);
    gpt_comm_counts_get(sub, &ns);
    gpt_comm_counts_get(c, &n);
    is_int(ns.bytes[GPT_CC_ALLREDUCE], 28, "the split counts its own calls");
    is_int(n.bytes[GPT_CC_ALLREDUCE], 4 * 1024, "the parent's counts are untouched by the split's");
    gpt_comm_free(sub);

    gpt_comm_counts_reset(c);
    gpt_comm_counts_get(c, &n);
    uint64_t sum = 0;
    for (int k = 0; k < GPT_CC_N; k++) sum += n.calls[k] + n.bytes[k];
    is_int(sum, 0, "reset zeroes every counter");
    is_str(gpt_comm_count_name(GPT_CC_REDUCE_SCATTER), "reduce_scatter", "kind names");
    is_str(gpt_comm_count_name(GPT_CC_N), "?", "an unknown kind");

    /* the all-to-all over one process: its single share goes to itself */
    float a2[6] = {0};
    size_t one[1] = {3}, zero[1] = {0}, at3[1] = {3};
    ok(c->alltoallv != NULL, "the wrapper offers the inner all-to-all");
    ok(c->alltoallv(c, buf + 10, one, zero, a2, one, at3, &err) == 0, "all-to-all on one rank");
    ok(a2[3] == 10 && a2[5] == 12, "the one-rank all-to-all moved the data through");
    gpt_comm_counts_get(c, &n);
    is_int(n.calls[GPT_CC_ALLTOALLV], 1, "1 all-to-all call");
    is_int(n.bytes[GPT_CC_ALLTOALLV], 12, "all-to-all sent bytes, one rank: its own 3 floats");
    is_int(n.bytes[GPT_CC_ALLTOALLV_RECV], 12, "all-to-all received bytes, one rank");
    is_int(n.bytes[GPT_CC_ALLTOALLV_SELF], 12, "one rank: everything it sends is to itself");
    is_int(n.bytes[GPT_CC_ALLREDUCE], 0, "the all-to-all counts under its own kinds only");

    /* rank 1 of 3 sends 2, 5, 7 floats and receives 4, 1, 6: sent 56 bytes, received 44, to itself 20 */
    fake_ctx fx = {0};
    gpt_comm *fake = gpt_xcalloc(1, sizeof *fake);
    fake->name = "fake", fake->rank = 1, fake->size = 3, fake->ctx = &fx;
    fake->alltoallv = fake_a2a, fake->destroy = fake_destroy;
    gpt_comm *f3 = gpt_comm_counting(fake);
    float snd[14], rcv[11];
    for (int i = 0; i < 14; i++) snd[i] = (float)i;
    size_t sc[3] = {2, 5, 7}, sd[3] = {0, 2, 7}, rc[3] = {4, 1, 6}, rd[3] = {0, 4, 5};
    ok(f3->alltoallv(f3, snd, sc, sd, rcv, rc, rd, &err) == 0, "all-to-all over 3 ranks");
    ok(f3->alltoallv(f3, snd, sc, sd, rcv, rc, rd, &err) == 0, "all-to-all over 3 ranks again");
    ok(fx.calls == 2 && fx.sc == sc && fx.rc == rc, "the inner all-to-all got the caller's counts");
    ok(rcv[0] == 0 && rcv[4] == 102 && rcv[5] == 207 && rcv[10] == 212, "the data went through (%g %g %g %g)",
       rcv[0], rcv[4], rcv[5], rcv[10]);
    gpt_comm_counts n3;
    gpt_comm_counts_get(f3, &n3);
    is_int(n3.calls[GPT_CC_ALLTOALLV], 2, "2 all-to-all calls");
    is_int(n3.bytes[GPT_CC_ALLTOALLV], 2 * 4 * (2 + 5 + 7), "sent: 4 x the sum of scounts per call");
    is_int(n3.bytes[GPT_CC_ALLTOALLV_RECV], 2 * 4 * (4 + 1 + 6), "received: 4 x the sum of rcounts per call");
    is_int(n3.bytes[GPT_CC_ALLTOALLV_SELF], 2 * 4 * 5, "to itself: 4 x scounts[rank] per call");
    is_str(gpt_comm_count_name(GPT_CC_ALLTOALLV_RECV), "alltoallv_recv", "the all-to-all's kind names");
    gpt_comm_free(f3); /* no barrier: the fake has none */

    gpt_comm *bare = gpt_xcalloc(1, sizeof *bare); /* no all-to-all (NCCL) */
    bare->name = "bare", bare->size = 2, bare->destroy = fake_destroy;
    gpt_comm *fb = gpt_comm_counting(bare);
    ok(fb->alltoallv == NULL, "an inner communicator without an all-to-all: the wrapper has none either");
    gpt_comm_free(fb);

    gpt_comm *plain = gpt_comm_single();
    n.calls[0] = 99;
    ok(gpt_comm_counts_get(plain, &n) == 0 && n.calls[0] == 0, "a plain communicator reports zeros");
    gpt_comm_counts_reset(plain); /* a no-op, not a crash */
    gpt_comm_free(plain);
    gpt_comm_close(c);
    return done_testing();
}
