#!/usr/bin/env python3
"""Check a `gpt-shard export --to hf` directory with transformers (the independent oracle).

usage: make-export-check.py EXPORT_DIR REF_DIR [--tol T]

Loads EXPORT_DIR (config.json + model.safetensors written by gpt-shard) with
transformers.AutoModelForCausalLM, runs REF_DIR/expected.safetensors' input_ids through it (fp32, eager
attention, eval mode, CPU) and compares the logits with REF_DIR/expected.safetensors' `logits`, which
transformers computed from the original Hugging Face checkpoint (scripts/make-reference.py).
Also checks that the loaded state dict equals REF_DIR/model.safetensors tensor for tensor when the export
is fp32. Prints one line per check; exit 0 when all pass, 1 otherwise."""
import argparse
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("ref_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    exp = load_file(f"{a.ref_dir}/expected.safetensors")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        a.export_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    fails = 0
    sd = model.state_dict()
    ref = load_file(f"{a.ref_dir}/model.safetensors")
    for k, v in ref.items():
        if k not in sd:
            print(f"FAIL {k}: not in the loaded model")
            fails += 1
        elif not torch.equal(sd[k].float(), v.float()):
            print(f"FAIL {k}: differs from the reference checkpoint "
                  f"(max |diff| {(sd[k].float() - v.float()).abs().max().item():.3g})")
            fails += 1
    with torch.no_grad():
        out = model(input_ids=exp["input_ids"], use_cache=False)
    d = (out.logits.float() - exp["logits"]).abs().max().item()
    ok = d <= a.tol
    print(f"{'ok' if ok else 'FAIL'} logits: max |diff| {d:.3g} (tol {a.tol}) "
          f"[{type(model).__name__}, transformers {transformers.__version__}]")
    fails += not ok
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
