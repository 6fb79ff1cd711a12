#!/usr/bin/env python3
"""Write the safetensors test fixtures with the reference writer (PyPI `safetensors`, Rust core) and
record the expected contents in a plain text file, so t/test_safetensors.c checks our reader against an
independent implementation.

    scripts/make-st-fixtures.py [OUTDIR]     write fixtures (default t/data/st)
    scripts/make-st-fixtures.py --dump FILE  load FILE with the reference reader and print its contents
                                             (used by the test to check that Python reads what we write)

Expected-file records (one per line, space separated; names contain no spaces):
    file NAME                      following records describe this fixture file
    meta KEY VALUE                 a __metadata__ entry
    tensor NAME DTYPE NDIM D0 D1.. a tensor header entry
    bytes HEX                      its raw little-endian data ("-" when empty)
    f32 HEX8 ...                   float32 bit patterns of its values converted to f32 (float dtypes only)
    mxfp4 BLOCKS SCALES N HEX8...  dequantized float32 bit patterns of an MXFP4 pair (N values)
Requires: pip install safetensors numpy
"""
import os
import sys

import numpy as np
from safetensors import TensorSpec, deserialize, serialize

# Reference dtype names (the Python-side spelling the Rust core accepts) for each header dtype.
PYNAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}

# The FP4 (e2m1) code table from transformers.integrations.mxfp4.FP4_VALUES (also the OCP MX spec).
FP4_VALUES = [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def hexs(b):
    return b.hex() if len(b) else "-"


def f32hex(a):
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    return " ".join("%08x" % v for v in a.view(np.uint32))


class Fixture:
    def __init__(self, root):
        self.root = root  # expected.txt names files relative to this
        self.specs = {}   # name -> (dtype, shape, raw bytes as a numpy uint8 array)
        self.f32 = {}     # name -> float32 array (expected conversion)

    def add(self, name, dtype, shape, raw, f32=None):
        raw = np.frombuffer(bytes(raw), dtype=np.uint8).copy()
        self.specs[name] = (dtype, tuple(shape), raw)
        if f32 is not None:
            self.f32[name] = np.asarray(f32, dtype=np.float32)

    def write(self, path, metadata, exp):
        spec = {n: TensorSpec(dtype=PYNAME[d], shape=s, data_ptr=r.ctypes.data, data_len=r.nbytes)
                for n, (d, s, r) in self.specs.items()}
        data = bytes(serialize(spec, metadata=metadata))
        with open(path, "wb") as f:
            f.write(data)
        exp.append("file " + os.path.relpath(path, self.root))
        for k in sorted(metadata or {}):
            exp.append("meta %s %s" % (k, metadata[k]))
        for n in sorted(self.specs):
            d, s, r = self.specs[n]
            exp.append("tensor %s %s %d%s" % (n, d, len(s), "".join(" %d" % x for x in s)))
            exp.append("bytes " + hexs(r.tobytes()))
            if n in self.f32:
                exp.append("f32 " + (f32hex(self.f32[n]) or "-"))
        return data


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def mxfp4_ref(blocks, scales):
    """numpy transcription of transformers' _convert_moe_packed_tensors, without its final transpose."""
    lut = np.array(FP4_VALUES, dtype=np.float32)
    *prefix, g, b = blocks.shape
    out = np.empty(tuple(prefix) + (g, b * 2), dtype=np.float32)
    out[..., 0::2] = lut[blocks & 0x0F]
    out[..., 1::2] = lut[blocks >> 4]
    with np.errstate(over="ignore"):  # scale 254 with |v| >= 2 overflows to inf, as in the reference
        out = np.ldexp(out, (scales.astype(np.int32) - 127)[..., None])
    return out.reshape(tuple(prefix) + (g * b * 2,))


def make(outdir):
    rng = np.random.default_rng(20240607)
    os.makedirs(outdir, exist_ok=True)
    exp = []

    # basic.safetensors: every supported dtype, special float values, a scalar, an empty tensor.
    fx = Fixture(outdir)
    f32 = np.array([[1.0, -0.0, 1e-45, np.inf], [3.14159265, -2.5e38, np.nan, 0.1]], dtype=np.float32)
    fx.add("model.embed_tokens.weight", "F32", f32.shape, f32.tobytes(), f32)
    f16bits = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xC000, 0x7BFF, 0xFBFF,
                        0x7C00, 0xFC00, 0x7E00, 0x3555, 0x0200, 0x83FF], dtype=np.uint16)
    f16bits = np.concatenate([f16bits, rng.integers(0, 0x7C00, 48, dtype=np.uint16)
                              | (rng.integers(0, 2, 48, dtype=np.uint16) << 15)])
    f16bits = f16bits.reshape(4, 16)
    fx.add("h.0.attn.c_attn.weight", "F16", f16bits.shape, f16bits.tobytes(),
           f16bits.view(np.float16).astype(np.float32))
    bfbits = np.array([0x0000, 0x8000, 0x3F80, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC0, 0xFF7F, 0x4049,
                       0x3E80, 0xC2F7], dtype=np.uint16)
    bfbits = np.concatenate([bfbits, rng.integers(0, 0x7F80, 20, dtype=np.uint16)]).reshape(2, 4, 4)
    fx.add("block.0.attn.qkv.weight", "BF16", bfbits.shape, bfbits.tobytes(), bf16_bits_to_f32(bfbits))
    f64 = np.array([0.1, -0.0, 1e300, -1e300, 1e-320, 1.0000000596046448, np.nan, 2.0 ** -149,
                    3.4028235677973366e38, 123456789.125], dtype=np.float64)
    with np.errstate(over="ignore"):  # 1e300 -> inf in float32 is the point of the test
        fx.add("ln_f.bias64", "F64", f64.shape, f64.tobytes(), f64.astype(np.float32))
    fx.add("scalar", "F32", (), np.array(42.5, dtype=np.float32).tobytes(), [42.5])
    fx.add("empty", "F32", (0, 4), b"", [])
    fx.add("i64", "I64", (3,), np.array([-1, 2 ** 40, 7], dtype=np.int64).tobytes())
    fx.add("i32", "I32", (2, 2), np.array([-5, 6, 2 ** 31 - 1, -2 ** 31], dtype=np.int32).tobytes())
    fx.add("i16", "I16", (3,), np.array([-300, 300, 1], dtype=np.int16).tobytes())
    fx.add("i8", "I8", (5,), np.array([-128, -1, 0, 1, 127], dtype=np.int8).tobytes())
    fx.add("u8", "U8", (1, 3), bytes([0, 128, 255]))
    fx.add("mask", "BOOL", (4,), bytes([1, 0, 0, 1]))
    fx.add("f8a", "F8_E4M3", (3,), bytes([0x38, 0xB8, 0x7E]))
    fx.add("f8b", "F8_E5M2", (3,), bytes([0x3C, 0xBC, 0x7B]))
    fx.add("\u00fcnic\u00f6de.weight", "F32", (2,), np.array([1.5, -2.0], dtype=np.float32).tobytes(),
           [1.5, -2.0])
    fx.write(os.path.join(outdir, "basic.safetensors"), {"format": "pt", "note": "fixture"}, exp)

    # mxfp4.safetensors: a gpt-oss style blocks/scales pair; the expected values come from mxfp4_ref.
    fx = Fixture(outdir)
    blocks = rng.integers(0, 256, (2, 3, 2, 16), dtype=np.uint8)
    scales = np.array([[[127, 128], [126, 0]], [[130, 120], [1, 254]], [[100, 150], [127, 140]]],
                      dtype=np.uint8).transpose(1, 0, 2).copy()  # shape (2, 3, 2)
    fx.add("block.0.mlp.mlp1_weight.blocks", "U8", blocks.shape, blocks.tobytes())
    fx.add("block.0.mlp.mlp1_weight.scales", "U8", scales.shape, scales.tobytes())
    fx.write(os.path.join(outdir, "mxfp4.safetensors"), None, exp)
    ref = mxfp4_ref(blocks, scales)
    exp.append("mxfp4 block.0.mlp.mlp1_weight.blocks block.0.mlp.mlp1_weight.scales %d %s"
               % (ref.size, f32hex(ref)))

    # sharded/: two shards and an index, as transformers' save_pretrained(max_shard_size=...) lays out.
    sd = os.path.join(outdir, "sharded")
    os.makedirs(sd, exist_ok=True)
    shards = [("model-00001-of-00002.safetensors", ["wte.weight", "h.0.ln_1.weight"]),
              ("model-00002-of-00002.safetensors", ["h.0.ln_1.bias", "ln_f.weight"])]
    weight_map, total = {}, 0
    for fname, names in shards:
        fx = Fixture(outdir)
        for i, n in enumerate(names):
            a = rng.standard_normal((3, 2) if i == 0 else (4,)).astype(np.float32)
            fx.add(n, "F32", a.shape, a.tobytes(), a)
            weight_map[n] = fname
            total += a.nbytes
        fx.write(os.path.join(sd, fname), {"format": "pt"}, exp)
    import json
    with open(os.path.join(sd, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2)
        f.write("\n")

    with open(os.path.join(outdir, "expected.txt"), "w") as f:
        f.write("# written by scripts/make-st-fixtures.py with safetensors (PyPI) and numpy; do not edit\n")
        f.write("\n".join(exp) + "\n")


def dump(path):
    with open(path, "rb") as f:
        data = f.read()
    items = deserialize(data)  # runs the reference validation (offsets, sizes, coverage)
    n = int.from_bytes(data[:8], "little")
    import json
    meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    for k in sorted(meta):
        print("meta %s %s" % (k, meta[k]))
    for name, t in sorted(items, key=lambda x: x[0]):
        s = t["shape"]
        print("tensor %s %s %d%s" % (name, t["dtype"], len(s), "".join(" %d" % x for x in s)))
        print("bytes " + hexs(bytes(t["data"])))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        dump(sys.argv[2])
    elif len(sys.argv) <= 2:
        make(sys.argv[1] if len(sys.argv) == 2 else "t/data/st")
    else:
        sys.exit(__doc__)
