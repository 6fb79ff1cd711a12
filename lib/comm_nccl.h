/* comm_nccl.h: a communicator over CUDA device memory (NCCL), built with `make CUDA=1`.
 *
 *   gpt_comm *dc = gpt_comm_nccl(mpi_comm, local_rank, &err);   // collective over mpi_comm
 *   dc->allreduce_sum(dc, device_grads, n, &err);
 *   gpt_comm_free(dc);
 *
 * Same ranks, same order and same contract as the communicator it is built over (comm.h), but the
 * float collectives, broadcast, send and recv take device memory of the given CUDA device. The
 * NCCL unique id travels over `over` (rank 0 makes it, a broadcast hands it out), so any
 * communicator that can broadcast bytes bootstraps one, a single process included. Each call waits
 * for all work queued on the device first (the backend's stream produced the buffers), then for
 * its own collective: blocking, like every gpt_comm. allreduce_sum_f64 and barrier take host
 * memory and go to `over`; split is not offered (split `over`, then build on the piece).
 * NCCL_DEBUG=INFO prints NCCL's own log. */
#ifndef GPT_COMM_NCCL_H
#define GPT_COMM_NCCL_H

#include "comm.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(GPT_CUDA) || defined(__CUDACC__)
/* over stays owned by the caller and must outlive the result. NULL with a message when NCCL or
 * the device fails (on every rank: the failure is agreed over `over` before returning). */
gpt_comm *gpt_comm_nccl(gpt_comm *over, int device, gpt_err *err);
/* Whether this build links NCCL (the Makefile drops it when nccl.h or libnccl is missing). */
int gpt_comm_nccl_available(void);
#else
static inline gpt_comm *gpt_comm_nccl(gpt_comm *over, int device, gpt_err *err)
{
    (void)over, (void)device;
    gpt_errf(err, "this build has no NCCL communicator: rebuild with `make CUDA=1`");
    return NULL;
}
static inline int gpt_comm_nccl_available(void) { return 0; }
#endif

#ifdef __cplusplus
}
#endif
#endif
