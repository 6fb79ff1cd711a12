#!/usr/bin/env python3
"""Writes the golden gpt-tokens(5) samples from the format description alone (an oracle independent
of lib/tokens.c). Needs `pip install xxhash` and the zstd CLI. Run from this directory.
The ids here are repeated in t/test_tokens.c."""
import struct, subprocess, xxhash

def stream(vocab, ids):
    width = 2 if vocab <= 65536 else 4
    head = b"GPTTOKNS" + struct.pack("<III", 1, vocab, width)
    head += struct.pack("<I", xxhash.xxh64_intdigest(head, 0) & 0xFFFFFFFF)
    body = b"".join(struct.pack("<H" if width == 2 else "<I", i) for i in ids)
    return head + body + b"GPTTKEND" + struct.pack("<QQ", len(ids), xxhash.xxh64_intdigest(body, 0))

samples = {
    "small16.tokens": (50257, [15496, 11, 995, 0, 50256, 40, 1101, 50256]),
    "small32.tokens": (200019, [200018, 0, 65535, 65536, 199998, 12345, 199999]),
    "empty.tokens": (100277, []),
    "edge16.tokens": (65536, [65535, 0, 65535]),
}
for name, (vocab, ids) in samples.items():
    with open(name, "wb") as f:
        f.write(stream(vocab, ids))
subprocess.run(["zstd", "-q", "-f", "-19", "small32.tokens", "-o", "small32.tokens.zst"], check=True)
