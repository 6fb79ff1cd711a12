#!/usr/bin/env python3
"""Records how torch rounds fp32 values to bfloat16 and float16, and a GEMM with operands rounded
to each, for t/test_half.c (the oracle is torch, not our rounding code).

    pip install torch   # CPU build is enough
    scripts/make-half-fixture.py t/data/half/round.txt

Output lines:
  v X B H      X: an fp32 value's bits (hex); B, H: the bits of the fp32 value torch gets from
               x.to(bfloat16).float() and x.to(float16).float()
  gemm M N K   then lines "a ...", "b ...", "c32 ...", "cbf16 ...", "cfp16 ...": A (M x K), B (K x N)
               as fp32 bits, and C = A B in float64 from the rounded operands, as %.17g
"""
import struct
import sys

import torch


def bits(f):
    return struct.unpack("<I", struct.pack("<f", f))[0]


def f32(b):
    return struct.unpack("<f", struct.pack("<I", b))[0]


def main():
    out = open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout
    g = torch.Generator().manual_seed(1234)
    vals = [0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 65504.0, 65505.0, 65519.0, 65519.99,
            65520.0, 70000.0, -65520.0, 1e-8, 5.96e-8, 2.98e-8, 2.99e-8, 6.1e-5, 6.097e-5, 1e-40,
            3.4e38, -3.4e38, 1.00390625, 1.01171875, 1.0009765625, 1.0029296875]
    # ties and near-ties at both formats' last places
    for e in (-20, -14, -10, 0, 7, 15, 100):
        for mant in range(0, 1 << 23, 0x1FFFF):
            vals.append(f32(((e + 127) << 23) | mant))
        for low in (0x7FFF, 0x8000, 0x8001, 0x18000, 0x0FFF, 0x1000, 0x1001, 0x3000):
            vals.append(f32(((e + 127) << 23) | low))
    vals += (torch.randn(400, generator=g) * torch.exp(torch.randn(400, generator=g) * 6)).tolist()
    x = torch.tensor(vals, dtype=torch.float32)
    xb = x.to(torch.bfloat16).float()
    xh = x.to(torch.float16).float()
    for a, b, h in zip(x.tolist(), xb.tolist(), xh.tolist()):
        out.write("v %08x %08x %08x\n" % (bits(a), bits(b), bits(h)))
    out.write("v %08x %08x %08x\n" % (0x7FC00000, bits(torch.tensor([float("nan")]).to(torch.bfloat16).float().item()),
                                       bits(torch.tensor([float("nan")]).to(torch.float16).float().item())))
    M, N, K = 5, 7, 33
    A = torch.randn(M, K, generator=g) * 3
    B = torch.randn(K, N, generator=g) * 100
    out.write("gemm %d %d %d\n" % (M, N, K))
    out.write("a " + " ".join("%08x" % bits(v) for v in A.reshape(-1).tolist()) + "\n")
    out.write("b " + " ".join("%08x" % bits(v) for v in B.reshape(-1).tolist()) + "\n")
    for name, dt in (("c32", None), ("cbf16", torch.bfloat16), ("cfp16", torch.float16)):
        Ar = A if dt is None else A.to(dt).float()
        Br = B if dt is None else B.to(dt).float()
        C = Ar.double() @ Br.double()
        out.write(name + " " + " ".join("%.17g" % v for v in C.reshape(-1).tolist()) + "\n")


if __name__ == "__main__":
    main()
