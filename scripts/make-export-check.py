#!/usr/bin/env python3
"""Check a `gpt-shard export --to hf` directory with transformers (the independent oracle).

usage: make-export-check.py EXPORT_DIR REF_DIR [--tol T]

Loads EXPORT_DIR (config.json + model.safetensors written by gpt-shard) with
transformers.AutoModelForCausalLM, runs REF_DIR/expected.safetensors' input_ids through it (fp32, eager
attention, eval mode, CPU) and compares the logits with REF_DIR/expected.safetensors' `logits`, which
transformers computed from the original Hugging Face checkpoint (scripts/make-reference.py).
Also checks that the loaded state dict equals REF_DIR/model.safetensors tensor for tensor when the export
is fp32. Prints one line per check; exit 0 when all pass, 1 otherwise. t/gpt-shard.t imports it and calls
check() for several exports in one Python process (importing torch takes most of the time)."""
import argparse
import sys

import torch
import transformers
from safetensors.torch import load_file


def check(export_dir, ref_dir, tol=1e-4, out=print):
    """The checks above for one export; returns the number of failures (lines go to out)."""
    torch.set_num_threads(1)
    exp = load_file(f"{ref_dir}/expected.safetensors")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    fails = 0
    sd = model.state_dict()
    ref = load_file(f"{ref_dir}/model.safetensors")
    for k, v in ref.items():
        if k not in sd:
            out(f"FAIL {k}: not in the loaded model")
            fails += 1
        elif not torch.equal(sd[k].float(), v.float()):
            out(f"FAIL {k}: differs from the reference checkpoint "
                f"(max |diff| {(sd[k].float() - v.float()).abs().max().item():.3g})")
            fails += 1
    with torch.no_grad():
        o = model(input_ids=exp["input_ids"], use_cache=False)
    d = (o.logits.float() - exp["logits"]).abs().max().item()
    ok = d <= tol
    out(f"{'ok' if ok else 'FAIL'} logits: max |diff| {d:.3g} (tol {tol}) "
        f"[{type(model).__name__}, transformers {transformers.__version__}]")
    return fails + (not ok)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("ref_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    return 1 if check(a.export_dir, a.ref_dir, a.tol) else 0


if __name__ == "__main__":
    sys.exit(main())
