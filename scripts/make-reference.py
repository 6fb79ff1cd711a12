#!/usr/bin/env python3
"""Build the reference fixtures under t/data/ref/ that the C model core is checked against.

The oracle is Hugging Face transformers itself (from PyPI), never our own code:
  pip install torch transformers safetensors
Tiny random models are built with fixed seeds, run forward and backward in fp32 on the CPU with the
reference ("eager") attention and experts paths, and what they compute is stored in safetensors files.

  scripts/make-reference.py                 write t/data/ref/{tiny-gpt-oss,tiny-gpt2,mxfp4}, then check them
  scripts/make-reference.py --check         regenerate into a temporary folder, require byte-identical files
                                            to the ones in t/data/ref, and run the self-consistency checks
  scripts/make-reference.py --out DIR       write somewhere else

The self-consistency check reloads every model from the files written (from_pretrained on the folder),
recomputes logits, losses and gradients and requires them bit-equal to expected.safetensors; it also runs
an independent plain-torch re-implementation of the documented semantics (meta.json "semantics") and the
transformers grouped_mm experts path, which must agree to fp32 rounding. So the prose the C code follows
is itself tested against transformers.

Byte-for-byte reproducibility holds for the same torch/transformers/safetensors versions on the same
kind of CPU (single-threaded, deterministic algorithms); meta.json records the versions.
"""

import argparse
import filecmp
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
    import transformers
    import safetensors
    from safetensors.torch import save_file, load_file
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"make-reference.py: {e}; install the oracle with: pip install torch transformers safetensors")

from transformers import GPT2Config, GPT2LMHeadModel, GptOssConfig, GptOssForCausalLM
from transformers.integrations import mxfp4 as hf_mxfp4
from transformers.models.gpt_oss import modeling_gpt_oss

SEED_GPT_OSS = 1234
SEED_GPT2 = 5678
SEED_MXFP4 = 4242
B, T = 2, 12
SMOOTHING = 0.1
IGNORE = -100

# Where the semantics below were read, relative to the installed transformers package.
SRC = {
    "gpt_oss": "models/gpt_oss/modeling_gpt_oss.py",
    "gpt_oss_config": "models/gpt_oss/configuration_gpt_oss.py",
    "rope": "modeling_rope_utils.py (_compute_yarn_parameters)",
    "masks": "masking_utils.py (causal_mask_function, sliding_window_overlay)",
    "loss": "loss/loss_utils.py (ForCausalLMLoss, fixed_cross_entropy)",
    "gpt2": "models/gpt2/modeling_gpt2.py",
    "gelu_new": "activations.py (NewGELUActivation)",
    "mxfp4": "integrations/mxfp4.py (FP4_VALUES, _convert_moe_packed_tensors)",
}


def versions():
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
    }


def setup_determinism():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------------------------------------
# Writing: every file goes to a temporary name in its folder and is renamed into place, so an interrupted
# run never leaves a half-written fixture behind.

def atomic_write_bytes(path, data):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_copy(src, dst):
    with open(src, "rb") as f:
        atomic_write_bytes(dst, f.read())


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_safetensors(path, tensors, metadata=None):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    os.close(fd)
    try:
        # safetensors keeps metadata in a hash map whose order varies between runs: one key keeps files reproducible.
        md = None if metadata is None else {"info": json.dumps(metadata, sort_keys=True)}
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp, metadata=md)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        r = repr(v)
        # YAML 1.1 (libyaml) only reads a float with a '.', so 1e-05 is written 1.0e-05.
        if "e" in r and "." not in r:
            m, x = r.split("e")
            r = f"{m}.0e{x}"
        return r
    return str(v)


def to_yaml(obj, indent=0):
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:")
            out.append(to_yaml(v, indent + 2))
        else:
            out.append(" " * indent + f"{k}: {yaml_scalar(v)}")
    return "\n".join(out)


def write_yaml(path, comment, obj):
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + to_yaml(obj) + "\n"
    atomic_write_bytes(path, text.encode())


def save_hf(model, out_dir):
    """model.safetensors and config.json exactly as save_pretrained writes them (HF names and layouts)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in ("model.safetensors", "config.json"):
            atomic_copy(os.path.join(tmp, name), os.path.join(out_dir, name))


# ---------------------------------------------------------------------------------------------------------
# Inputs and losses shared by both models.

HITS = [(0, 2), (0, 6), (1, 4), (1, 10)]  # (b, t): labels[b, t] := argmax of logits[b, t-1]


def make_inputs(gen, vocab):
    input_ids = torch.randint(0, vocab, (B, T), generator=gen, dtype=torch.int64)
    labels = input_ids.clone()
    # Some ignored targets: labels[:, 0] is never a target after HF's shift (shown on row 1), and a run of
    # ignored targets in the middle of each row.
    labels[0, 3] = IGNORE
    labels[1, 0] = IGNORE
    labels[1, 7:9] = IGNORE
    return input_ids, labels


def plant_hits(model, input_ids, labels):
    """A random model never predicts the next input token, so token accuracy would be 0/n; make a few targets
    the model's own argmax (labels do not change the logits) so that accuracy is a non-trivial fraction."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, use_cache=False).logits
    labels = labels.clone()
    for b, t in HITS:
        labels[b, t] = logits[b, t - 1].argmax()
    return labels


def shift_labels_of(labels):
    """What HF's ForCausalLMLoss does: pad one IGNORE on the right, drop the first column."""
    return F.pad(labels, (0, 1), value=IGNORE)[..., 1:].contiguous()


def lm_losses(logits, labels):
    """(plain CE as HF defines it, label-smoothed CE, token accuracy, number of targets)."""
    V = logits.shape[-1]
    sl = shift_labels_of(labels).view(-1)
    lg = logits.float().view(-1, V)
    ce = F.cross_entropy(lg, sl, ignore_index=IGNORE, reduction="mean")
    smooth = F.cross_entropy(lg, sl, ignore_index=IGNORE, reduction="mean", label_smoothing=SMOOTHING)
    valid = sl != IGNORE
    correct = (lg.argmax(-1) == sl) & valid
    acc = correct.sum().float() / valid.sum().float()
    return ce, smooth, acc, int(valid.sum())


LOSS_DOC = {
    "labels": (
        "labels[b,t] is the token id that position t-1 must predict, as in HF: labels is passed to the model "
        "unshifted (here a copy of input_ids with some entries set to -100, and labels[b,t] for (b,t) in "
        "(0,2),(0,6),(1,4),(1,10) replaced by argmax(logits[b,t-1]) so that token_accuracy is not 0) and ForCausalLMLoss shifts it "
        "internally: shift_labels = pad(labels, (0,1), value=-100)[:, 1:], i.e. logits[b,t] is scored against "
        "labels[b,t+1] and the last position of every row has no target. labels[:,0] is never used. "
        "shift_labels is stored too."
    ),
    "loss_lm": (
        "mean over all (b,t) with shift_labels[b,t] != -100, across the whole batch (one mean, not per row), "
        "of -log_softmax(logits[b,t])[shift_labels[b,t]] (F.cross_entropy, reduction='mean', "
        "num_items_in_batch=None)."
    ),
    "loss_smoothed": (
        "F.cross_entropy(logits.view(-1,V), shift_labels.view(-1), ignore_index=-100, label_smoothing=0.1): "
        "per target, (1-0.1)*(-log p[y]) + 0.1 * mean_v(-log p[v]) (target distribution (1-eps)*onehot + eps/V), "
        "averaged over the same targets as loss_lm. Computed by this script, not by HF's model."
    ),
    "token_accuracy": "count(argmax_v logits[b,t] == shift_labels[b,t]) / count(shift_labels != -100), over targets only.",
    "n_targets": "number of (b,t) with shift_labels != -100.",
}


def grads_of(model):
    return {f"grad.{n}": p.grad.detach().clone() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------------------------
# GPT-OSS

def gpt_oss_config():
    return GptOssConfig(
        vocab_size=384,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        intermediate_size=32,
        sliding_window=4,
        max_position_embeddings=131072,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 150000.0,
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "original_max_position_embeddings": 4096,
            "truncate": False,
        },
        attention_bias=True,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.9,
        output_router_logits=True,
        swiglu_alpha=1.702,
        swiglu_limit=7.0,
        use_cache=False,
        attn_implementation="eager",
        experts_implementation="eager",
        dtype="float32",
    )


def init_gpt_oss(model, gen):
    """Non-trivial values everywhere; scales keep activations O(1) yet make the SwiGLU clamp bite."""
    H = model.config.hidden_size
    I = model.config.intermediate_size

    def normal(p, std, mean=0.0):
        return torch.randn(p.shape, generator=gen) * std + mean

    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p.shape[-1] if p.dim() == 2 else None
            if name.endswith("embed_tokens.weight"):
                v = normal(p, 1.0)
            elif name.endswith("sinks"):
                v = normal(p, 1.0)
            elif "layernorm.weight" in name or name == "model.norm.weight":
                v = torch.rand(p.shape, generator=gen) + 0.5  # U(0.5, 1.5)
            elif name.endswith("proj.weight") and "self_attn" in name:
                v = normal(p, 1.0 / math.sqrt(fan_in))
            elif name.endswith("proj.bias") and "self_attn" in name:
                v = normal(p, 0.2)
            elif name.endswith("router.weight"):
                v = normal(p, 1.0 / math.sqrt(H))
            elif name.endswith("router.bias"):
                v = normal(p, 0.5)
            elif name.endswith("experts.gate_up_proj"):
                v = normal(p, 3.0 / math.sqrt(H))
            elif name.endswith("experts.gate_up_proj_bias"):
                v = normal(p, 0.5)
            elif name.endswith("experts.down_proj"):
                v = normal(p, 0.3 / math.sqrt(I))
            elif name.endswith("experts.down_proj_bias"):
                v = normal(p, 0.2)
            elif name == "lm_head.weight":
                v = normal(p, 1.0 / math.sqrt(H))
            else:
                raise RuntimeError(f"init_gpt_oss: no rule for parameter {name}")
            p.copy_(v)


class ClampCounter:
    """Counts, per experts module, the SwiGLU inputs the clamp changes (values are not altered)."""

    def __init__(self, model):
        self.names = {id(m): n for n, m in model.named_modules() if isinstance(m, modeling_gpt_oss.GptOssExperts)}
        self.counts = {}
        self.orig = modeling_gpt_oss.GptOssExperts._apply_gate

    def __enter__(self):
        orig, counts, names = self.orig, self.counts, self.names

        def counting(mod, gate_up):
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            c = counts.setdefault(names[id(mod)], {"gate_gt_limit": 0, "up_abs_gt_limit": 0, "gate_elems": 0})
            c["gate_gt_limit"] += int((gate > mod.limit).sum())
            c["up_abs_gt_limit"] += int((up.abs() > mod.limit).sum())
            c["gate_elems"] += gate.numel()
            return orig(mod, gate_up)

        modeling_gpt_oss.GptOssExperts._apply_gate = counting
        return self

    def __exit__(self, *a):
        modeling_gpt_oss.GptOssExperts._apply_gate = self.orig


def run_gpt_oss(model, input_ids, labels, record_debug=True):
    """Forward + backward of loss = CE + coef*aux; returns the expected tensors and a few facts."""
    model.zero_grad(set_to_none=True)
    hooks, layer_out, router_out = [], {}, {}
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.register_forward_hook(lambda m, a, o, i=i: layer_out.__setitem__(i, o.detach().clone())))
        hooks.append(layer.mlp.router.register_forward_hook(
            lambda m, a, o, i=i: router_out.__setitem__(i, tuple(x.detach().clone() for x in o))))
    try:
        out = model(input_ids=input_ids, labels=labels, output_hidden_states=True, output_attentions=True,
                    output_router_logits=True, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    logits = out.logits
    ce, smooth, acc, n = lm_losses(logits, labels)
    coef = model.config.router_aux_loss_coef
    total = out.loss
    # Gradients of the smoothed loss w.r.t. the logits only: beyond the logits the backward is the same graph.
    (g_smooth,) = torch.autograd.grad(smooth, logits, retain_graph=True)
    (g_lm,) = torch.autograd.grad(ce, logits, retain_graph=True)
    (g_total,) = torch.autograd.grad(total, logits, retain_graph=True)
    total.backward()
    e = {
        "input_ids": input_ids,
        "labels": labels,
        "shift_labels": shift_labels_of(labels),
        "logits": logits.detach(),
        "loss": total.detach().reshape(()),
        "loss_lm": ce.detach().reshape(()),
        "aux_loss": out.aux_loss.detach().reshape(()),
        "loss_smoothed": smooth.detach().reshape(()),
        "token_accuracy": acc.detach().reshape(()),
        "n_targets": torch.tensor(n, dtype=torch.int64),
        "grad_logits.loss": g_total.detach(),
        "grad_logits.loss_lm": g_lm.detach(),
        "grad_logits.loss_smoothed": g_smooth.detach(),
    }
    e.update(grads_of(model))
    if record_debug:
        rot = model.model.rotary_emb
        e["rope.inv_freq"] = rot.inv_freq.detach().clone()
        e["rope.attention_scaling"] = torch.tensor(float(rot.attention_scaling), dtype=torch.float32)
        for i, h in enumerate(out.hidden_states):
            e[f"hidden_states.{i}"] = h.detach()
        for i, h in layer_out.items():
            e[f"layer_out.{i}"] = h
        for i, a in enumerate(out.attentions):
            e[f"attn_probs.{i}"] = a.detach()
        for i, rl in enumerate(out.router_logits):
            e[f"router_logits.{i}"] = rl.detach()
        for i, (rl, scores, idx) in router_out.items():
            e[f"router_topk_indices.{i}"] = idx.to(torch.int64)
            e[f"router_topk_weights.{i}"] = scores
    facts = {"coef": coef, "total_minus_parts": float((total - (ce + coef * out.aux_loss)).detach())}
    return e, facts, out


def gpt_oss_yaml(c):
    rp = c.rope_parameters
    # layer_types[i] == "sliding_attention" for even i (configuration_gpt_oss.py: (i + 1) % 2).
    sl = [t == "sliding_attention" for t in c.layer_types]
    if all(sl):
        which = "all"
    elif not any(sl):
        which = "none"
    elif all(s == (i % 2 == 0) for i, s in enumerate(sl)):
        which = "even"
    elif all(s == (i % 2 == 1) for i, s in enumerate(sl)):
        which = "odd"
    else:
        raise RuntimeError(f"unsupported layer_types {c.layer_types}")
    return {"model": {
        "vocab_size": c.vocab_size,
        "d_model": c.hidden_size,
        "n_layers": c.num_hidden_layers,
        "n_heads": c.num_attention_heads,
        "n_kv_heads": c.num_key_value_heads,
        "d_head": c.head_dim,
        "max_seq_len": c.max_position_embeddings,
        "norm": {"type": "rmsnorm", "eps": float(c.rms_norm_eps)},
        "positions": "rope",
        "rope": {
            "theta": float(rp["rope_theta"]),
            "scaling": "yarn",
            "factor": float(rp["factor"]),
            "original_max_seq_len": int(rp["original_max_position_embeddings"]),
            "beta_fast": float(rp["beta_fast"]),
            "beta_slow": float(rp["beta_slow"]),
        },
        "attention": {"bias": bool(c.attention_bias), "sinks": True, "sliding_window": c.sliding_window,
                      "sliding_window_layers": which},
        "mlp": {
            "type": "moe",
            "d_ff": c.intermediate_size,
            "activation": "swiglu",
            "n_experts": c.num_local_experts,
            "experts_per_token": c.num_experts_per_tok,
            "d_expert": c.intermediate_size,
            "swiglu_alpha": float(c.swiglu_alpha),
            "swiglu_limit": float(c.swiglu_limit),
            "bias": True,
            "router_aux_loss_coef": float(c.router_aux_loss_coef),
        },
        "tie_embeddings": bool(c.tie_word_embeddings),
    }}


GPT_OSS_SEMANTICS = {
    "sources": "paths are relative to the installed transformers package; see the README section for line ranges",
    "block": (
        "x = embed_tokens[input_ids] (no scaling). Per layer i: h = x + o_proj(attn(rmsnorm_in(x))); "
        "x = h + moe(rmsnorm_post(h)). Then logits = lm_head(rmsnorm_final(x)), lm_head has no bias and is not tied."
    ),
    "rmsnorm": "y = w * (x / sqrt(mean(x^2 over d_model) + eps)), computed in fp32; weight multiplies after normalising; no bias.",
    "layer_types": (
        "layer_types[i] = 'sliding_attention' if (i+1) % 2 else 'full_attention': layer 0, 2, 4, ... are sliding "
        "(even indices, 0-based), odd layers attend to the full causal prefix."
    ),
    "sliding_window_mask": (
        "a sliding layer lets query position q see key positions k with q - W < k <= q (W = sliding_window): "
        "itself and the W-1 previous tokens. Full layers: k <= q. Masked scores get torch.finfo(float32).min added "
        "(exp gives exactly 0 after the max subtraction)."
    ),
    "attention": (
        "q = x Wq^T + bq, k = x Wk^T + bk, v = x Wv^T + bv (nn.Linear, weight (out,in)); head h of q uses kv head "
        "h // (n_heads/n_kv_heads) (repeat_kv: consecutive q heads share a kv head). Feature j of head h is "
        "column h*d_head + j. RoPE is applied to q and k (not v). score[q,k] = (q.k) * d_head^-0.5 + mask. "
        "o = concat_heads(P V) Wo^T + bo."
    ),
    "sinks": (
        "one learned logit s_h per query head, used unscaled: logits row = [score[q,0..T-1], s_h]; subtract the "
        "row max, softmax over T+1 entries, drop the sink column. So P[q,k] = exp(score[q,k]) / "
        "(sum_k' exp(score[q,k']) + exp(s_h)); rows sum to < 1 and the sink carries no value. attn_probs.* are "
        "these P (sink dropped)."
    ),
    "rope": (
        "non-interleaved (NeoX/half-split) rotation: x = [x1, x2] with x1 = x[..., :d/2], x2 = x[..., d/2:]; "
        "out = [x1*cos - x2*sin, x2*cos + x1*sin], with cos = cos(p*inv_freq[j]) * attention_scaling and "
        "sin = sin(p*inv_freq[j]) * attention_scaling for j = 0..d/2-1 and position p = 0..T-1. The scaling "
        "multiplies both q and k, so attention scores carry attention_scaling^2."
    ),
    "yarn": (
        "dim = d_head; pos_freqs[j] = theta^(2j/dim) (fp32); extrap = 1/pos_freqs; interp = 1/(factor*pos_freqs); "
        "corr(r) = dim*ln(orig_max/(r*2*pi)) / (2*ln(theta)); low = max(corr(beta_fast), 0), "
        "high = min(corr(beta_slow), dim-1), NOT floored/ceiled because truncate=False; if low==high, high += 0.001; "
        "ramp[j] = clamp((j - low)/(high - low), 0, 1) for j = 0..dim/2-1; "
        "inv_freq = interp*ramp + extrap*(1-ramp) (small j keep the original frequency, large j are divided by "
        "factor); attention_scaling = 0.1*ln(factor) + 1 (factor > 1; no mscale keys). max_position_embeddings "
        "plays no part. rope.inv_freq and rope.attention_scaling are stored."
    ),
    "router": (
        "router_logits = x Wr^T + br over all E experts (x = post-attention rmsnorm output, per token); "
        "top-k of the raw logits (torch.topk, descending); weights = softmax over those k logits only. "
        "router_topk_indices.i / router_topk_weights.i are in topk order."
    ),
    "experts": (
        "for each selected expert e of a token: gu = x @ gate_up_proj[e] + gate_up_proj_bias[e] "
        "(gate_up_proj is (E, d_model, 2*d_expert): input-major, x @ W, no transpose); gate = gu[..., 0::2], "
        "up = gu[..., 1::2] (interleaved columns, gate first); gate = min(gate, limit); "
        "up = clamp(up, -limit, limit); y = (up + 1) * gate * sigmoid(alpha * gate); "
        "out_e = y @ down_proj[e] + down_proj_bias[e] (down_proj is (E, d_expert, d_model)); "
        "moe(x) = sum_k weight_k * out_{e_k}. Clamped elements get zero gradient through the clamp."
    ),
    "aux_loss": (
        "load_balancing_loss_func(router_logits of all layers, E, k, attention_mask=None): for each layer, "
        "p = softmax(router_logits) over all E experts (N = B*T rows), selected = topk(p, k) indices "
        "(same experts as the router picks). tokens_per_expert[e] = (sum over layers of count of (row, slot) "
        "with selected == e) / (sum over layers of N); router_prob[e] = (sum over layers and rows of p[row, e]) "
        "/ (sum over layers of N). aux = E * sum_e tokens_per_expert[e] * router_prob[e]. Note sum_e "
        "tokens_per_expert = k, so a perfectly balanced router gives aux = k. No attention mask is passed here, "
        "so every (b,t) counts, including those whose label is -100. The counts carry no gradient; the gradient "
        "flows through p only."
    ),
    "total_loss": "loss = loss_lm + router_aux_loss_coef * aux_loss (HF adds it when labels are given and output_router_logits is True).",
}


def gpt_oss(out_dir, check_only=False):
    gen = torch.Generator().manual_seed(SEED_GPT_OSS)
    torch.manual_seed(SEED_GPT_OSS)
    config = gpt_oss_config()
    model = GptOssForCausalLM(config).float()
    init_gpt_oss(model, gen)
    model.train(False)  # no dropout in either case (attention_dropout 0); eval() mode for clarity
    input_ids, labels = make_inputs(gen, config.vocab_size)
    labels = plant_hits(model, input_ids, labels)

    with ClampCounter(model) as cc:
        e, facts, out = run_gpt_oss(model, input_ids, labels)
    clamp = cc.counts
    total_clamped = sum(v["gate_gt_limit"] + v["up_abs_gt_limit"] for v in clamp.values())
    print(f"tiny-gpt-oss: loss {float(e['loss']):.6f} = lm {float(e['loss_lm']):.6f} + "
          f"{facts['coef']} * aux {float(e['aux_loss']):.6f}; smoothed {float(e['loss_smoothed']):.6f}; "
          f"acc {float(e['token_accuracy']):.4f}; clamped {total_clamped}: {clamp}")
    if total_clamped == 0:
        raise RuntimeError("tiny-gpt-oss: the SwiGLU clamp was never hit; raise the gate_up_proj scale")
    hmax = max(float(e[f"layer_out.{i}"].abs().max()) for i in range(config.num_hidden_layers))
    print(f"tiny-gpt-oss: max |residual| {hmax:.3f}, logits std {float(e['logits'].std()):.3f}")

    c = model.config
    meta = {
        "model": "GptOssForCausalLM",
        "versions": versions(),
        "seed": SEED_GPT_OSS,
        "generator": "torch.Generator().manual_seed(seed): parameters in named_parameters() order, then input_ids",
        "implementation": {"attn_implementation": "eager", "experts_implementation": "eager", "dtype": "float32",
                           "device": "cpu", "torch_threads": 1, "mode": "eval (no dropout), use_cache=False"},
        "batch": B, "seq_len": T,
        "router_aux_loss_coef": c.router_aux_loss_coef,
        "label_smoothing": SMOOTHING,
        "ignore_index": IGNORE,
        "layer_types": list(c.layer_types),
        "swiglu_clamp_counts": clamp,
        "init": {
            "embed_tokens": "N(0,1)", "sinks": "N(0,1)", "norm weights": "U(0.5,1.5)",
            "q/k/v/o weight": "N(0, 1/fan_in)", "q/k/v/o bias": "N(0, 0.2^2)",
            "router.weight": "N(0, 1/d_model)", "router.bias": "N(0, 0.5^2)",
            "gate_up_proj": "N(0, 9/d_model)", "gate_up_proj_bias": "N(0, 0.5^2)",
            "down_proj": "N(0, 0.09/d_expert)", "down_proj_bias": "N(0, 0.2^2)",
            "lm_head": "N(0, 1/d_model)",
        },
        "files": {
            "model.safetensors": "state_dict as GptOssForCausalLM.save_pretrained writes it (HF names, fp32, unquantized)",
            "config.json": "GptOssConfig as save_pretrained writes it",
            "model.yaml": "the same model in the C toolchain's config keys",
            "expected.safetensors": "inputs and everything the model computed (see tensors)",
        },
        "tensors": {
            "input_ids": "int64 (B,T)",
            "labels": "int64 (B,T), passed unshifted to the model; see losses.labels",
            "shift_labels": "int64 (B,T): labels shifted left by one, last column -100 (the targets of logits[b,t])",
            "logits": "f32 (B,T,V)",
            "loss": "f32 0-d: the HF loss = loss_lm + coef*aux_loss (the loss the grad.* belong to)",
            "loss_lm": "f32 0-d", "aux_loss": "f32 0-d", "loss_smoothed": "f32 0-d", "token_accuracy": "f32 0-d",
            "n_targets": "int64 0-d",
            "grad.<param>": "f32, shape of <param>: d loss / d param for loss = loss_lm + coef*aux_loss (no smoothing)",
            "grad_logits.loss": "f32 (B,T,V): d loss / d logits (aux does not depend on logits, so = grad_logits.loss_lm)",
            "grad_logits.loss_lm": "f32 (B,T,V): d loss_lm / d logits",
            "grad_logits.loss_smoothed": "f32 (B,T,V): d loss_smoothed / d logits (no parameter grads are stored for it)",
            "rope.inv_freq": "f32 (d_head/2,) as HF computes it", "rope.attention_scaling": "f32 0-d",
            "hidden_states.<i>": (
                "f32 (B,T,d_model), HF output_hidden_states: i=0 the embeddings, i=1..L-1 the output of layer i-1, "
                "i=L the FINAL-NORMED output of the last layer (HF replaces it; the un-normed one is layer_out.L-1)"),
            "layer_out.<i>": "f32 (B,T,d_model): residual stream after layer i (forward hook)",
            "attn_probs.<i>": "f32 (B,n_heads,T,T): softmax probabilities of layer i with the sink column dropped",
            "router_logits.<i>": "f32 (B*T,E): raw router logits of layer i, rows in (b,t) row-major order",
            "router_topk_indices.<i>": "int64 (B*T,k)", "router_topk_weights.<i>": "f32 (B*T,k), softmax over the k",
        },
        "losses": LOSS_DOC,
        "semantics": GPT_OSS_SEMANTICS,
        "sources": SRC,
    }
    save_hf(model, out_dir)
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), e,
                      metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                                "seed": str(SEED_GPT_OSS), "grads_for": "loss = loss_lm + coef*aux_loss"})
    write_json(os.path.join(out_dir, "meta.json"), meta)
    write_yaml(os.path.join(out_dir, "model.yaml"),
               "tiny GPT-OSS reference model (t/data/ref/tiny-gpt-oss); generated by scripts/make-reference.py",
               gpt_oss_yaml(c))


# ---------------------------------------------------------------------------------------------------------
# GPT-2

def gpt2_config():
    return GPT2Config(
        vocab_size=384,
        n_positions=32,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=None,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=True,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
        dtype="float32",
    )


def init_gpt2(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "transformer.wte.weight":
                v = torch.randn(p.shape, generator=gen) * 0.3
            elif name == "transformer.wpe.weight":
                v = torch.randn(p.shape, generator=gen) * 0.3
            elif (".ln_" in name or "ln_f" in name) and name.endswith("weight"):
                v = torch.rand(p.shape, generator=gen) + 0.5
            elif name.endswith("bias"):
                v = torch.randn(p.shape, generator=gen) * 0.2
            elif name.endswith("weight") and p.dim() == 2:  # Conv1D: (in, out)
                v = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[0])
            else:
                raise RuntimeError(f"init_gpt2: no rule for parameter {name}")
            p.copy_(v)


def run_gpt2(model, input_ids, labels, record_debug=True):
    model.zero_grad(set_to_none=True)
    hooks, layer_out = [], {}
    for i, blk in enumerate(model.transformer.h):
        hooks.append(blk.register_forward_hook(
            lambda m, a, o, i=i: layer_out.__setitem__(i, (o[0] if isinstance(o, tuple) else o).detach().clone())))
    try:
        out = model(input_ids=input_ids, labels=labels, output_hidden_states=True, output_attentions=True,
                    use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    logits = out.logits
    ce, smooth, acc, n = lm_losses(logits, labels)
    (g_smooth,) = torch.autograd.grad(smooth, logits, retain_graph=True)
    (g_total,) = torch.autograd.grad(out.loss, logits, retain_graph=True)
    out.loss.backward()
    e = {
        "input_ids": input_ids,
        "labels": labels,
        "shift_labels": shift_labels_of(labels),
        "logits": logits.detach(),
        "loss": out.loss.detach().reshape(()),
        "loss_lm": ce.detach().reshape(()),
        "loss_smoothed": smooth.detach().reshape(()),
        "token_accuracy": acc.detach().reshape(()),
        "n_targets": torch.tensor(n, dtype=torch.int64),
        "grad_logits.loss": g_total.detach(),
        "grad_logits.loss_smoothed": g_smooth.detach(),
    }
    e.update(grads_of(model))
    if record_debug:
        for i, h in enumerate(out.hidden_states):
            e[f"hidden_states.{i}"] = h.detach()
        for i, h in layer_out.items():
            e[f"layer_out.{i}"] = h
        for i, a in enumerate(out.attentions):
            e[f"attn_probs.{i}"] = a.detach()
    return e, out


def gpt2_yaml(c):
    return {"model": {
        "vocab_size": c.vocab_size,
        "d_model": c.n_embd,
        "n_layers": c.n_layer,
        "n_heads": c.n_head,
        "n_kv_heads": c.n_head,
        "d_head": c.n_embd // c.n_head,
        "max_seq_len": c.n_positions,
        "norm": {"type": "layernorm", "eps": float(c.layer_norm_epsilon)},
        "positions": "learned",
        "rope": {"scaling": "none"},
        "attention": {"bias": True, "sinks": False, "sliding_window": 0, "sliding_window_layers": "none"},
        "mlp": {"type": "dense", "d_ff": c.n_inner or 4 * c.n_embd, "activation": "gelu_tanh", "bias": True},
        "tie_embeddings": True,
    }}


GPT2_SEMANTICS = {
    "block": (
        "x = wte[input_ids] + wpe[position] (positions 0..T-1). Per layer: x = x + c_proj(attn(ln_1(x))); "
        "x = x + mlp(ln_2(x)). logits = ln_f(x) @ wte^T (lm_head tied to transformer.wte.weight; only wte is "
        "in model.safetensors and its grad includes both uses)."
    ),
    "layernorm": "torch.nn.LayerNorm: (x - mean) / sqrt(biased var + eps) * weight + bias, over d_model.",
    "conv1d": (
        "HF Conv1D stores weight as (in, out) and computes y = x @ W + b (no transpose): c_attn.weight (d, 3d), "
        "c_proj.weight (d, d), mlp.c_fc.weight (d, 4d), mlp.c_proj.weight (4d, d)."
    ),
    "attention": (
        "qkv = c_attn(x); q, k, v = the three consecutive d-wide column blocks; head h is columns h*d_head.."
        "(h+1)*d_head-1 of each; scores = q.k * d_head^-0.5 (scale_attn_weights, no per-layer scaling), causal "
        "mask k <= q (finfo.min added), softmax, P V, heads concatenated, then c_proj."
    ),
    "gelu_new": "0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) (the tanh approximation).",
    "mlp": "c_proj(gelu_new(c_fc(x))), d_ff = 4*d_model.",
}


def gpt2(out_dir, check_only=False):
    gen = torch.Generator().manual_seed(SEED_GPT2)
    torch.manual_seed(SEED_GPT2)
    config = gpt2_config()
    model = GPT2LMHeadModel(config).float()
    init_gpt2(model, gen)
    model.train(False)
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise RuntimeError("tiny-gpt2: lm_head is not tied to wte")
    input_ids, labels = make_inputs(gen, config.vocab_size)
    labels = plant_hits(model, input_ids, labels)
    e, out = run_gpt2(model, input_ids, labels)
    print(f"tiny-gpt2: loss {float(e['loss']):.6f}; smoothed {float(e['loss_smoothed']):.6f}; "
          f"acc {float(e['token_accuracy']):.4f}; logits std {float(e['logits'].std()):.3f}")
    c = model.config
    meta = {
        "model": "GPT2LMHeadModel",
        "versions": versions(),
        "seed": SEED_GPT2,
        "generator": "torch.Generator().manual_seed(seed): parameters in named_parameters() order, then input_ids",
        "implementation": {"attn_implementation": "eager", "dtype": "float32", "device": "cpu", "torch_threads": 1,
                           "mode": "eval (dropouts are 0 anyway), use_cache=False"},
        "batch": B, "seq_len": T,
        "label_smoothing": SMOOTHING,
        "ignore_index": IGNORE,
        "init": {"wte": "N(0, 0.3^2)", "wpe": "N(0, 0.3^2)", "ln weights": "U(0.5,1.5)", "biases": "N(0, 0.2^2)",
                 "Conv1D weights": "N(0, 1/fan_in) with fan_in = shape[0]"},
        "files": {
            "model.safetensors": "state_dict as GPT2LMHeadModel.save_pretrained writes it (HF names; tied lm_head omitted)",
            "config.json": "GPT2Config as save_pretrained writes it",
            "model.yaml": "the same model in the C toolchain's config keys",
            "expected.safetensors": "inputs and everything the model computed (see tensors)",
        },
        "tensors": {
            "input_ids": "int64 (B,T)", "labels": "int64 (B,T) unshifted, see losses.labels",
            "shift_labels": "int64 (B,T)", "logits": "f32 (B,T,V)",
            "loss": "f32 0-d: HF loss (= loss_lm; the loss the grad.* belong to)",
            "loss_lm": "f32 0-d", "loss_smoothed": "f32 0-d", "token_accuracy": "f32 0-d", "n_targets": "int64 0-d",
            "grad.<param>": "f32: d loss / d param, names from named_parameters() (the tied lm_head appears as transformer.wte.weight)",
            "grad_logits.loss": "f32 (B,T,V)", "grad_logits.loss_smoothed": "f32 (B,T,V)",
            "hidden_states.<i>": "f32 (B,T,d): i=0 embeddings (wte+wpe), 1..L-1 layer outputs, i=L = ln_f(last layer output)",
            "layer_out.<i>": "f32 (B,T,d): residual stream after layer i",
            "attn_probs.<i>": "f32 (B,n_heads,T,T)",
        },
        "losses": LOSS_DOC,
        "semantics": GPT2_SEMANTICS,
        "sources": SRC,
    }
    save_hf(model, out_dir)
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), e,
                      metadata={"torch": torch.__version__, "transformers": transformers.__version__,
                                "seed": str(SEED_GPT2), "grads_for": "loss = loss_lm"})
    write_json(os.path.join(out_dir, "meta.json"), meta)
    write_yaml(os.path.join(out_dir, "model.yaml"),
               "tiny GPT-2 reference model (t/data/ref/tiny-gpt2); generated by scripts/make-reference.py",
               gpt2_yaml(c))


# ---------------------------------------------------------------------------------------------------------
# MXFP4

MX_CASES = {
    # name: (prefix shape (E, rows), n_blocks, scale range (lo, hi) inclusive)
    "model.layers.0.mlp.experts.gate_up_proj": ((4, 64), 2, (117, 130)),  # (E, 2*d_expert, d_model/32, 16)
    "model.layers.0.mlp.experts.down_proj": ((4, 64), 1, (117, 130)),     # (E, d_model, d_expert/32, 16)
    "test.wide": ((3, 5), 4, (0, 254)),  # every usable exponent incl. subnormal results and overflow to inf
}


def mxfp4(out_dir, check_only=False):
    gen = torch.Generator().manual_seed(SEED_MXFP4)
    q, e = {}, {}
    for name, (prefix, nb, (lo, hi)) in MX_CASES.items():
        blocks = torch.randint(0, 256, (*prefix, nb, 16), generator=gen, dtype=torch.int64).to(torch.uint8)
        scales = torch.randint(lo, hi + 1, (*prefix, nb), generator=gen, dtype=torch.int64).to(torch.uint8)
        if name == "test.wide":
            scales.view(-1)[:3] = torch.tensor([0, 127, 254], dtype=torch.uint8)
            blocks.view(-1, 16)[0] = torch.tensor([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE] * 2,
                                                  dtype=torch.uint8)
        deq = hf_mxfp4.convert_moe_packed_tensors(blocks.clone(), scales.clone(), dtype=torch.float32)
        q[f"{name}_blocks"] = blocks
        q[f"{name}_scales"] = scales
        e[name] = deq                                   # HF layout after loading: (E, in, out)
        e[f"{name}.rows"] = deq.transpose(1, 2).contiguous()  # checkpoint row layout: (E, out, in)
    n_inf = int(torch.isinf(e["test.wide"]).sum())
    n_sub = int(((e["test.wide"] != 0) & (e["test.wide"].abs() < torch.finfo(torch.float32).tiny)).sum())
    print(f"mxfp4: {len(MX_CASES)} tensors; test.wide has {n_inf} inf and {n_sub} subnormal values")
    meta = {
        "versions": versions(),
        "seed": SEED_MXFP4,
        "oracle": "transformers.integrations.mxfp4.convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)",
        "files": {
            "quantized.safetensors": "<name>_blocks uint8 (E, rows, n_blocks, 16) and <name>_scales uint8 (E, rows, n_blocks), "
                                     "named like the gpt-oss checkpoint tensors",
            "expected.safetensors": "<name> f32 (E, n_blocks*32, rows): what HF loads into GptOssExperts (transposed); "
                                    "<name>.rows f32 (E, rows, n_blocks*32): the same values in checkpoint row order",
        },
        "format": (
            "row r of expert e has n_blocks blocks of 32 values along the input dimension; block g is bytes "
            "blocks[e,r,g,0..15] with scale byte scales[e,r,g]. Byte j holds element 2j in its LOW nibble and "
            "element 2j+1 in its HIGH nibble. Nibble n -> FP4 e2m1 value FP4_VALUES[n] = "
            "[+0,+0.5,+1,+1.5,+2,+3,+4,+6,-0,-0.5,-1,-1.5,-2,-3,-4,-6] (bit 3 = sign). value = FP4_VALUES[n] * "
            "2^(scale - 127), computed by torch.ldexp in fp32 (exact: results below 2^-126 are fp32 subnormals, "
            "results above fp32 max are +-inf; nibble 8 gives -0.0). dequant[e, g*32 + i, r] (HF layout) = "
            "value of element i of block g of row r. For gate_up_proj the rows are the 2*d_expert outputs in "
            "the interleaved gate/up order the experts use (gate = even columns, up = odd)."
        ),
        "scale_255": "not used here: HF would compute 2^128 = inf (and 0*inf = NaN); the OCP MX spec reserves 0xFF as NaN.",
        "cases": {k: {"prefix": list(v[0]), "n_blocks": v[1], "scale_range": list(v[2])} for k, v in MX_CASES.items()},
        "sources": {"mxfp4": SRC["mxfp4"]},
    }
    write_safetensors(os.path.join(out_dir, "quantized.safetensors"), q,
                      metadata={"transformers": transformers.__version__, "seed": str(SEED_MXFP4)})
    write_safetensors(os.path.join(out_dir, "expected.safetensors"), e,
                      metadata={"transformers": transformers.__version__, "seed": str(SEED_MXFP4)})
    write_json(os.path.join(out_dir, "meta.json"), meta)


# ---------------------------------------------------------------------------------------------------------
# Self-consistency checks

class Checker:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"CHECK FAILED: {what}", file=sys.stderr)

    def equal(self, a, b, what):
        self.ok(a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b), f"{what}: not bit-equal")

    def close(self, a, b, what, rtol=1e-5, atol=1e-6):
        a = torch.as_tensor(a).double()
        b = torch.as_tensor(b).double()
        good = a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol)
        err = float((a - b).abs().max()) if a.shape == b.shape else float("nan")
        self.ok(good, f"{what}: max abs err {err:g}")


def manual_gpt_oss(sd, c, input_ids):
    """Plain-torch forward written from the prose in GPT_OSS_SEMANTICS (an independent re-derivation)."""
    L, H, nh, nkv, dh = c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
    E, k, lim, alpha, eps, W = c.num_local_experts, c.num_experts_per_tok, c.swiglu_limit, c.swiglu_alpha, c.rms_norm_eps, c.sliding_window
    rp = c.rope_parameters
    theta, factor, orig = rp["rope_theta"], rp["factor"], rp["original_max_position_embeddings"]
    Bn, Tn = input_ids.shape

    pos_freqs = theta ** (torch.arange(0, dh, 2, dtype=torch.float32) / dh)
    extrap, interp = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    corr = lambda r: dh * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(theta))
    low, high = max(corr(rp["beta_fast"]), 0), min(corr(rp["beta_slow"]), dh - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dh // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    inv_freq = interp * ramp + extrap * (1 - ramp)
    msc = 0.1 * math.log(factor) + 1.0
    ang = torch.arange(Tn, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = ang.cos() * msc, ang.sin() * msc

    def rope(x):  # (B, h, T, dh)
        x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    def rms(x, w):
        return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))

    qi = torch.arange(Tn)[:, None]
    ki = torch.arange(Tn)[None, :]
    x = sd["model.embed_tokens.weight"][input_ids]
    router_logits = []
    for i in range(L):
        p = f"model.layers.{i}."
        hn = rms(x, sd[p + "input_layernorm.weight"])
        q = (hn @ sd[p + "self_attn.q_proj.weight"].T + sd[p + "self_attn.q_proj.bias"]).view(Bn, Tn, nh, dh).transpose(1, 2)
        kk = (hn @ sd[p + "self_attn.k_proj.weight"].T + sd[p + "self_attn.k_proj.bias"]).view(Bn, Tn, nkv, dh).transpose(1, 2)
        v = (hn @ sd[p + "self_attn.v_proj.weight"].T + sd[p + "self_attn.v_proj.bias"]).view(Bn, Tn, nkv, dh).transpose(1, 2)
        q, kk = rope(q), rope(kk)
        grp = nh // nkv
        kk = kk[:, torch.arange(nh) // grp]
        v = v[:, torch.arange(nh) // grp]
        s = q @ kk.transpose(-1, -2) * dh ** -0.5
        allowed = ki <= qi
        if i % 2 == 0:
            allowed = allowed & (ki > qi - W)
        s = s.masked_fill(~allowed, float("-inf"))
        sink = sd[p + "self_attn.sinks"].view(1, nh, 1, 1).expand(Bn, nh, Tn, 1)
        z = torch.cat([s, sink], -1)
        z = z - z.max(-1, keepdim=True).values
        pr = z.exp() / z.exp().sum(-1, keepdim=True)
        a = (pr[..., :-1] @ v).transpose(1, 2).reshape(Bn, Tn, nh * dh)
        x = x + a @ sd[p + "self_attn.o_proj.weight"].T + sd[p + "self_attn.o_proj.bias"]
        hn = rms(x, sd[p + "post_attention_layernorm.weight"]).reshape(-1, H)
        rl = hn @ sd[p + "mlp.router.weight"].T + sd[p + "mlp.router.bias"]
        router_logits.append(rl)
        top, idx = rl.topk(k, -1)
        wts = top.softmax(-1)
        moe = torch.zeros_like(hn)
        for n in range(hn.shape[0]):
            for j in range(k):
                ex = int(idx[n, j])
                gu = hn[n] @ sd[p + "mlp.experts.gate_up_proj"][ex] + sd[p + "mlp.experts.gate_up_proj_bias"][ex]
                g, u = gu[0::2].clamp(max=lim), gu[1::2].clamp(-lim, lim)
                y = (u + 1) * g * torch.sigmoid(alpha * g)
                moe[n] += wts[n, j] * (y @ sd[p + "mlp.experts.down_proj"][ex] + sd[p + "mlp.experts.down_proj_bias"][ex])
        x = x + moe.view(Bn, Tn, H)
    logits = rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T
    tpe = torch.zeros(E)
    rp_sum = torch.zeros(E)
    for rl in router_logits:
        pr = rl.softmax(-1)
        sel = pr.topk(k, -1).indices
        tpe += torch.bincount(sel.reshape(-1), minlength=E).float()
        rp_sum += pr.sum(0)
    N = L * rl.shape[0]
    aux = E * ((tpe / N) * (rp_sum / N)).sum()
    return logits, aux, inv_freq, msc


def manual_gpt2(sd, c, input_ids):
    Bn, Tn = input_ids.shape
    d, nh = c.n_embd, c.n_head
    dh = d // nh
    eps = c.layer_norm_epsilon

    def ln(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w + b

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    x = sd["transformer.wte.weight"][input_ids] + sd["transformer.wpe.weight"][torch.arange(Tn)]
    causal = torch.arange(Tn)[None, :] <= torch.arange(Tn)[:, None]
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        h = ln(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        qkv = h @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, kk, v = (t.view(Bn, Tn, nh, dh).transpose(1, 2) for t in qkv.split(d, -1))
        s = (q @ kk.transpose(-1, -2) * dh ** -0.5).masked_fill(~causal, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(Bn, Tn, d)
        x = x + a @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        h = ln(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        x = x + gelu(h @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]) @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    return ln(x, sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]) @ sd["transformer.wte.weight"].T


def check_gpt_oss(d, ck):
    exp = load_file(os.path.join(d, "expected.safetensors"))
    sd = load_file(os.path.join(d, "model.safetensors"))
    model = GptOssForCausalLM.from_pretrained(d, attn_implementation="eager", experts_implementation="eager",
                                              dtype=torch.float32)
    model.train(False)
    c = model.config
    ck.ok(set(sd) == {n for n, _ in model.named_parameters()}, "gpt-oss: model.safetensors names == parameters")
    e, facts, _ = run_gpt_oss(model, exp["input_ids"], exp["labels"])
    for key in sorted(exp):
        ck.ok(key in e, f"gpt-oss: recomputed {key}")
        if key in e:
            ck.equal(e[key], exp[key], f"gpt-oss reload: {key}")
    ck.ok(set(e) == set(exp), "gpt-oss: same tensor set after reload")
    ck.close(exp["loss"], exp["loss_lm"] + c.router_aux_loss_coef * exp["aux_loss"], "gpt-oss: loss = lm + coef*aux")
    ck.close(exp["grad_logits.loss"], exp["grad_logits.loss_lm"], "gpt-oss: aux has no logits gradient")
    L = c.num_hidden_layers
    for i in range(L):
        ck.equal(exp[f"hidden_states.{i + 1}"] if i + 1 < L else exp[f"layer_out.{i}"], exp[f"layer_out.{i}"],
                 f"gpt-oss: hidden_states.{i + 1} vs layer_out.{i}")
    h = exp[f"layer_out.{L - 1}"]
    ck.close(sd["model.norm.weight"] * h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps),
             exp[f"hidden_states.{L}"], "gpt-oss: hidden_states.L is the final-normed last layer")
    # Sliding window in the recorded probabilities: zero outside q-W < k <= q for even layers.
    qi, ki = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for i in range(L):
        pr = exp[f"attn_probs.{i}"]
        allowed = (ki <= qi) & ((ki > qi - c.sliding_window) if i % 2 == 0 else torch.ones_like(ki <= qi))
        ck.ok(bool((pr[..., ~allowed] == 0).all()) and bool((pr[..., allowed] > 0).all()),
              f"gpt-oss: layer {i} attention support")
        ck.ok(bool((pr.sum(-1) < 1).all()), f"gpt-oss: layer {i} sink takes mass")
    # The documented semantics, re-implemented in plain torch.
    with torch.no_grad():
        logits, aux, inv_freq, msc = manual_gpt_oss(sd, c, exp["input_ids"])
    ck.close(logits, exp["logits"], "gpt-oss manual: logits", rtol=1e-4, atol=1e-4)
    ck.close(aux, exp["aux_loss"], "gpt-oss manual: aux_loss")
    ck.close(inv_freq, exp["rope.inv_freq"], "gpt-oss manual: inv_freq", rtol=1e-6, atol=0)
    ck.close(msc, exp["rope.attention_scaling"], "gpt-oss manual: attention_scaling")
    ce, smooth, acc, n = lm_losses(logits, exp["labels"])
    ck.close(ce, exp["loss_lm"], "gpt-oss manual: loss_lm")
    ck.close(smooth, exp["loss_smoothed"], "gpt-oss manual: loss_smoothed")
    # Smoothed loss by its formula, independent of F.cross_entropy's label_smoothing.
    sl = exp["shift_labels"].view(-1)
    lp = exp["logits"].double().view(-1, c.vocab_size).log_softmax(-1)
    m = sl != IGNORE
    man = ((1 - SMOOTHING) * -lp[m, sl[m]] + SMOOTHING * -lp[m].mean(-1)).mean()
    ck.close(man, exp["loss_smoothed"], "gpt-oss: smoothed loss formula")
    # The other experts path in transformers (grouped_mm) must agree to rounding.
    m2 = GptOssForCausalLM.from_pretrained(d, attn_implementation="eager", experts_implementation="grouped_mm",
                                           dtype=torch.float32)
    m2.train(False)
    e2, _, _ = run_gpt_oss(m2, exp["input_ids"], exp["labels"], record_debug=False)
    ck.close(e2["logits"], exp["logits"], "gpt-oss grouped_mm: logits", rtol=1e-4, atol=1e-5)
    ck.close(e2["loss"], exp["loss"], "gpt-oss grouped_mm: loss")
    worst = max(float((e2[k] - exp[k]).abs().max() / (exp[k].abs().max() + 1e-12)) for k in e2 if k.startswith("grad."))
    ck.ok(worst < 1e-4, f"gpt-oss grouped_mm: grads relative err {worst:g}")


def check_gpt2(d, ck):
    exp = load_file(os.path.join(d, "expected.safetensors"))
    sd = load_file(os.path.join(d, "model.safetensors"))
    model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager", dtype=torch.float32)
    model.train(False)
    c = model.config
    e, _ = run_gpt2(model, exp["input_ids"], exp["labels"])
    for key in sorted(exp):
        ck.ok(key in e, f"gpt2: recomputed {key}")
        if key in e:
            ck.equal(e[key], exp[key], f"gpt2 reload: {key}")
    ck.ok(set(e) == set(exp), "gpt2: same tensor set after reload")
    ck.equal(exp["loss"], exp["loss_lm"], "gpt2: loss == loss_lm")
    with torch.no_grad():
        logits = manual_gpt2(sd, c, exp["input_ids"])
    ck.close(logits, exp["logits"], "gpt2 manual: logits", rtol=1e-4, atol=1e-5)
    ce, smooth, acc, n = lm_losses(logits, exp["labels"])
    ck.close(ce, exp["loss"], "gpt2 manual: loss")
    ck.close(smooth, exp["loss_smoothed"], "gpt2 manual: loss_smoothed")
    L = c.n_layer
    for i in range(L - 1):
        ck.equal(exp[f"hidden_states.{i + 1}"], exp[f"layer_out.{i}"], f"gpt2: hidden_states.{i + 1} vs layer_out.{i}")
    ck.close(F.layer_norm(exp[f"layer_out.{L - 1}"], (c.n_embd,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"],
                          c.layer_norm_epsilon), exp[f"hidden_states.{L}"], "gpt2: hidden_states.L is ln_f(last layer)")


def spec_dequant(blocks, scales):
    """MXFP4 per the published spec, for cross-checking transformers' helper: (..., rows, G, 16) -> (..., rows, G*32)."""
    lut = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                       dtype=torch.float64)
    b = blocks.to(torch.int64)
    vals = torch.stack([lut[b & 15], lut[b >> 4]], -1).flatten(-2)  # (..., G, 32), low nibble first
    vals = vals * torch.pow(2.0, scales.to(torch.float64) - 127)[..., None]
    return vals.flatten(-2).to(torch.float32)  # exact: products of an FP4 value and a power of two


def check_mxfp4(d, ck):
    q = load_file(os.path.join(d, "quantized.safetensors"))
    e = load_file(os.path.join(d, "expected.safetensors"))
    for name in MX_CASES:
        bl, sc = q[f"{name}_blocks"], q[f"{name}_scales"]
        ck.ok(bl.dtype == torch.uint8 and sc.dtype == torch.uint8 and bl.shape[:-1] == sc.shape and bl.shape[-1] == 16,
              f"mxfp4 {name}: layout")
        again = hf_mxfp4.convert_moe_packed_tensors(bl.clone(), sc.clone(), dtype=torch.float32)
        ck.equal(again, e[name], f"mxfp4 {name}: HF dequant reproducible")
        ck.equal(e[name].transpose(1, 2).contiguous(), e[f"{name}.rows"], f"mxfp4 {name}: rows == transpose")
        spec = spec_dequant(bl, sc)
        same = torch.equal(spec, e[f"{name}.rows"]) and torch.equal(torch.signbit(spec), torch.signbit(e[f"{name}.rows"]))
        ck.ok(same, f"mxfp4 {name}: spec dequant == HF dequant (bitwise, signed zeros included)")


# ---------------------------------------------------------------------------------------------------------

BUILDERS = {"tiny-gpt-oss": gpt_oss, "tiny-gpt2": gpt2, "mxfp4": mxfp4}
CHECKS = {"tiny-gpt-oss": check_gpt_oss, "tiny-gpt2": check_gpt2, "mxfp4": check_mxfp4}


def generate(root):
    for name, fn in BUILDERS.items():
        setup_determinism()
        fn(os.path.join(root, name))


def self_check(root):
    ck = Checker()
    for name, fn in CHECKS.items():
        setup_determinism()
        fn(os.path.join(root, name), ck)
    print(f"self-check: {ck.passed} passed, {ck.failed} failed")
    return ck.failed == 0


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(here, "..", "t", "data", "ref"), help="fixture root (default t/data/ref)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and require byte-identical files, then self-check")
    args = ap.parse_args()
    root = os.path.normpath(args.out)
    if not args.check:
        generate(root)
        for name in BUILDERS:
            for fn in sorted(os.listdir(os.path.join(root, name))):
                p = os.path.join(root, name, fn)
                print(f"  {os.path.relpath(p, root)}  {os.path.getsize(p)} bytes  sha256:{sha(p)}")
        sys.exit(0 if self_check(root) else 1)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        bad = 0
        for name in BUILDERS:
            a, b = os.path.join(root, name), os.path.join(tmp, name)
            if not os.path.isdir(a):
                print(f"missing fixture folder {a}; run scripts/make-reference.py", file=sys.stderr)
                bad += 1
                continue
            files = sorted(set(os.listdir(a)) | set(os.listdir(b)))
            for fn in files:
                pa, pb = os.path.join(a, fn), os.path.join(b, fn)
                if not (os.path.exists(pa) and os.path.exists(pb) and filecmp.cmp(pa, pb, shallow=False)):
                    print(f"differs from a fresh run: {name}/{fn}", file=sys.stderr)
                    bad += 1
        print(f"reproducibility: {'identical' if bad == 0 else f'{bad} file(s) differ'}")
    ok = self_check(root)
    sys.exit(0 if ok and bad == 0 else 1)


if __name__ == "__main__":
    main()
