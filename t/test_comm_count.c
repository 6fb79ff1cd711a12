/* The counting communicator (lib/comm_count.h) over one process: every call is counted with the
 * payload the header defines (4n bytes for an all-reduce of n floats, 8n for doubles, size * n
 * floats for reduce-scatter and all-gather, the bytes of a broadcast, send and receive), the data
 * still goes through, splits count on their own, reset zeroes, and a plain communicator reports
 * nothing. */
#include <string.h>

#include "comm_count.h"
#include "tap.h"

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

    gpt_comm *plain = gpt_comm_single();
    n.calls[0] = 99;
    ok(gpt_comm_counts_get(plain, &n) == 0 && n.calls[0] == 0, "a plain communicator reports zeros");
    gpt_comm_counts_reset(plain); /* a no-op, not a crash */
    gpt_comm_free(plain);
    gpt_comm_close(c);
    return done_testing();
}
