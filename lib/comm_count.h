/* comm_count.h: a communicator that counts what goes through it (benchmarks: bytes per step and
 * collective kind against the analytic count).
 *
 *   gpt_comm *c = gpt_comm_counting(gpt_comm_open(&argc, &argv, &err));   // takes ownership
 *   ... train; sub-communicators made by c->split count on their own ...
 *   gpt_comm_counts n;
 *   gpt_comm_counts_get(c, &n);          // n.calls[GPT_CC_ALLREDUCE], n.bytes[...]
 *   gpt_comm_counts_reset(c);
 *
 * What is counted is the payload a call hands to the library, per rank, not what the algorithm
 * moves on the wire: an all-reduce of n floats counts 4n bytes (a ring moves 2 (size - 1) / size
 * of that out of each rank), a reduce-scatter the size * n floats it reduces, an all-gather the
 * size * n floats it returns, a broadcast its bytes on every rank, send and receive their bytes.
 * An all-to-all counts twice, once under each of its directions, since they differ per rank
 * (expert parallelism's token rows): "alltoallv" the floats this rank sends (sum of scounts, its
 * own share included, as an all-reduce counts the rank's own part), "alltoallv_recv" the floats it
 * receives (sum of rcounts); "alltoallv_self" the share of the sent floats addressed to this rank
 * itself (scounts[rank]), which never leaves it: off-rank bytes are alltoallv - alltoallv_self.
 * The non-blocking all-reduce and reduce (the gradient reduction overlapped with backward) count
 * like their blocking forms, under their own kinds, when they start; test and wait pass through.
 * One rank (size 1) counts the same calls and bytes: the caller asked for them.
 *
 * The wrapper shares the inner communicator's ctx and copies its function table, overriding the
 * entries it counts (an entry the inner one lacks, such as NCCL's all-to-all, stays NULL); entries
 * it does not know (added later) still work, uncounted. */
#ifndef GPT_COMM_COUNT_H
#define GPT_COMM_COUNT_H

#include <stdint.h>

#include "comm.h"

enum {
    GPT_CC_ALLREDUCE,      /* allreduce_sum (floats) */
    GPT_CC_ALLREDUCE_F64,  /* allreduce_sum_f64 */
    GPT_CC_REDUCE_SCATTER,
    GPT_CC_ALLGATHER,
    GPT_CC_BROADCAST,
    GPT_CC_SEND,
    GPT_CC_RECV,
    GPT_CC_ALLTOALLV,      /* bytes sent (all ranks' shares, this one's included) */
    GPT_CC_ALLTOALLV_RECV, /* bytes received */
    GPT_CC_ALLTOALLV_SELF, /* bytes this rank sent to itself (in both of the above) */
    GPT_CC_IALLREDUCE,     /* iallreduce_sum (non-blocking; floats) */
    GPT_CC_IREDUCE,        /* ireduce_sum (non-blocking; floats, counted on every rank) */
    GPT_CC_N
};

typedef struct gpt_comm_counts {
    uint64_t calls[GPT_CC_N];
    uint64_t bytes[GPT_CC_N];
} gpt_comm_counts;

/* Wraps inner (owned from now on: destroying the wrapper destroys it). */
gpt_comm *gpt_comm_counting(gpt_comm *inner);
/* The counts since creation or the last reset; 0 with zeros when c is not a counting communicator. */
int gpt_comm_counts_get(const gpt_comm *c, gpt_comm_counts *out);
void gpt_comm_counts_reset(gpt_comm *c);
/* The kind's short name: "allreduce", "allreduce_f64", "reduce_scatter", "allgather", "broadcast",
 * "send", "recv", "alltoallv", "alltoallv_recv", "alltoallv_self", "iallreduce", "ireduce". */
const char *gpt_comm_count_name(int kind);

#endif
