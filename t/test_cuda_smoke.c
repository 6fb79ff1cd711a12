/* The CUDA smoke kernel against the same arithmetic on the CPU (skips without a device). */
#include "tap.h"

#include "cuda_smoke.h"

int main(void)
{
    if (gpt_cuda_device_count() < 1) skip_all("no CUDA device visible");
    enum { N = 100003 };
    static float x[N], y[N], want[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)(i % 97) * 0.25f;
        y[i] = (float)(i % 13) - 6.0f;
        want[i] = 1.5f * x[i] + y[i];
    }
    is_int(gpt_cuda_axpy(N, 1.5f, x, y), 0, "gpt_cuda_axpy runs");
    int bad = 0;
    for (int i = 0; i < N; i++) bad += y[i] != want[i];
    is_int(bad, 0, "device axpy equals the CPU bit for bit");
    return done_testing();
}
