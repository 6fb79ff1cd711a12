/* The single-process communicator's all-to-all with variable counts (expert parallelism): the
 * rank's own block moves between the given displacements, nothing else is touched, an empty
 * exchange is fine, and a send count that differs from the receive count is an error. The MPI
 * version is exercised under mpirun by t/expert-parallel.t. */
#include <string.h>

#include "../lib/comm.h"
#include "tap.h"

int main(void)
{
    gpt_comm *c = gpt_comm_single();
    ok(c->alltoallv != NULL, "the single communicator offers alltoallv");
    float send[8], recv[8];
    for (int i = 0; i < 8; i++) send[i] = (float)(i + 1), recv[i] = -1.0f;
    size_t sc[1] = {3}, sd[1] = {2}, rc[1] = {3}, rd[1] = {4};
    gpt_err err = {0};
    is_int(c->alltoallv(c, send, sc, sd, recv, rc, rd, &err), 0, "3 floats from offset 2 to offset 4");
    int moved = recv[4] == 3.0f && recv[5] == 4.0f && recv[6] == 5.0f, untouched = 1;
    for (int i = 0; i < 8; i++)
        if ((i < 4 || i > 6) && recv[i] != -1.0f) untouched = 0;
    ok(moved, "the block arrives in order");
    ok(untouched, "nothing outside the receive block is written");
    size_t z[1] = {0};
    is_int(c->alltoallv(c, NULL, z, z, NULL, z, z, &err), 0, "an empty exchange (an expert group with no rows)");
    size_t bad[1] = {2};
    is_int(c->alltoallv(c, send, sc, sd, recv, bad, rd, &err), -1, "send 3, expect 2: an error");
    ok(strstr(err.msg, "sends itself 3 floats but expects 2") != NULL, "the error says the counts: %s", err.msg);
    gpt_comm_free(c);
    return done_testing();
}
