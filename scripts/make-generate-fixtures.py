#!/usr/bin/env python3
"""Hugging Face transformers references for gpt-generate and gpt-eval on the tiny fixtures.

  scripts/make-generate-fixtures.py            write t/data/gen/{generate,eval}.txt
  scripts/make-generate-fixtures.py --out DIR  write somewhere else

Needs torch and transformers (pip install). The models are t/data/ref/tiny-gpt2 and
t/data/ref/tiny-gpt-oss (made by scripts/make-reference.py), loaded with from_pretrained in
fp32 on the CPU (eager attention and experts), so the references are independent of our code.

generate.txt, one case per line (fields separated by '|', lists by ','; '-' = empty):
  model|num_beams|length_penalty|early_stopping|max_new_tokens|eos ids|prompt ids|expected new ids
  num_beams 1 is greedy (do_sample=False). The expected ids are what model.generate returns after
  the prompt (EOS included when it stopped on one; no padding: one sequence per call).
  EOS ids are chosen from the model's own greedy output so that stopping paths are exercised.

eval.txt, one case per line:
  model|seq_len|stride|ids|sum_nll|n_scored|n_correct
  Windows as in Hugging Face's perplexity guide: for begin in 0, stride, ...: end = min(begin +
  seq_len, N); the window ids[begin:end] scores only the targets not scored before (absolute
  positions max(prev_end, begin + 1) .. end - 1, each predicted from the window's earlier tokens);
  stop once end == N. sum_nll is the sum of -log_softmax(logits)[target] over all scored targets
  (float64 from fp32 logits), n_correct counts argmax == target.
"""
import argparse
import os
import sys

import torch
from transformers import GPT2LMHeadModel, GptOssForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    d = os.path.join(ROOT, "t", "data", "ref", name)
    if name == "tiny-gpt2":
        m = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    else:
        m = GptOssForCausalLM.from_pretrained(d, attn_implementation="eager", experts_implementation="eager",
                                              dtype=torch.float32)
    m.train(False)
    return m


def gen(model, prompt, max_new, eos, num_beams=1, length_penalty=1.0, early_stopping=False):
    ids = torch.tensor([prompt], dtype=torch.int64)
    kw = dict(max_new_tokens=max_new, do_sample=False, num_beams=num_beams, length_penalty=length_penalty,
              early_stopping=early_stopping, eos_token_id=eos if eos else None,
              pad_token_id=eos[0] if eos else 0, attention_mask=torch.ones_like(ids))
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    with torch.no_grad():
        out = model.generate(ids, **kw)
    return out[0, len(prompt):].tolist()


def fmt(v):
    return ",".join(str(int(x)) for x in v) if len(v) else "-"


def eval_case(model, ids, seq_len, stride):
    n = len(ids)
    tot, ns, nc, prev_end = 0.0, 0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + seq_len, n)
        x = torch.tensor([ids[begin:end]], dtype=torch.int64)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].double(), dim=-1)
        for j in range(max(prev_end, begin + 1), end):
            t = ids[j]
            row = lp[j - begin - 1]
            tot -= float(row[t])
            ns += 1
            nc += int(int(row.argmax()) == t)
        prev_end = end
        if end == n:
            break
    return tot, ns, nc


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "t", "data", "gen"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(4242)
    gen_lines, eval_lines = [], []
    for name, ctx, long_len, max_new in (("tiny-gpt2", 32, 14, 12), ("tiny-gpt-oss", 64, 21, 24)):
        m = load(name)
        V = m.config.vocab_size
        prompts = [[64], [65, 66, 67], torch.randint(0, V, (long_len,), generator=g).tolist()]
        for p in prompts:
            free = gen(m, p, max_new, [])
            gen_lines.append((name, 1, 1.0, "false", max_new, [], p, free))
            # EOS ids from the model's own greedy output (the first token that differs from the
            # first one, and the last token), so that greedy and beams stop on them mid-way
            x = next((t for t in free[1:] if t != free[0]), free[-1])
            y = free[-1] if free[-1] != x else (x + 1) % V
            eos = [x]
            gen_lines.append((name, 1, 1.0, "false", max_new, eos, p, gen(m, p, max_new, eos)))
            two = [y, x]
            gen_lines.append((name, 1, 1.0, "false", max_new, two, p, gen(m, p, max_new, two)))
            for nb, lp, es in ((2, 1.0, False), (3, 1.0, False), (3, 0.5, True), (4, 2.0, "never"), (3, -1.0, False)):
                for e in ([], eos, two):
                    out = gen(m, p, max_new, e, nb, lp, es)
                    gen_lines.append((name, nb, lp, str(es).lower(), max_new, e, p, out))
        # eval: one random sequence longer than the context, several windowings
        n = ctx + ctx // 2
        ids = torch.randint(0, V, (n,), generator=g).tolist()
        for seq_len, stride in ((ctx, ctx), (ctx, ctx // 2), (ctx // 4, ctx // 4), (ctx // 4, 3), (n, n)):
            if seq_len > m.config.max_position_embeddings:
                continue
            tot, ns, nc = eval_case(m, ids, seq_len, stride)
            eval_lines.append(f"{name}|{seq_len}|{stride}|{fmt(ids)}|{tot!r}|{ns}|{nc}")
    with open(os.path.join(a.out, "generate.txt"), "w") as f:
        f.write("# made by scripts/make-generate-fixtures.py: "
                "model|num_beams|length_penalty|early_stopping|max_new_tokens|eos|prompt|expected\n")
        for (name, nb, lp, es, mx, e, p, out) in gen_lines:
            f.write(f"{name}|{nb}|{lp!r}|{es}|{mx}|{fmt(e)}|{fmt(p)}|{fmt(out)}\n")
    with open(os.path.join(a.out, "eval.txt"), "w") as f:
        f.write("# made by scripts/make-generate-fixtures.py: model|seq_len|stride|ids|sum_nll|n_scored|n_correct\n")
        f.write("\n".join(eval_lines) + "\n")
    print(f"wrote {len(gen_lines)} generate cases, {len(eval_lines)} eval cases to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
