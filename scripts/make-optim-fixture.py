#!/usr/bin/env python3
"""Records PyTorch's AdamW, LR schedule, gradient clipping and GradScaler on fixed tensors, for
t/test_optim.c (the oracle is torch, not our code).

    pip install torch   # CPU build is enough
    scripts/make-optim-fixture.py t/data/optim/adamw.txt

Output: a text file of lines "NAME N v1 ... vN" (floats as %.9g, exact for fp32):
  hparams        lr min_lr_ratio warmup total beta1 beta2 eps weight_decay clip steps
  shape_w / shape_b   the two tensors' shapes (w decays: a matrix; b does not: a bias)
  w0, b0         initial values
  gw.S, gb.S     the raw gradient fed at step S (before clipping)
  lr.S           the learning rate torch's scheduler gave step S
  norm.S         clip_grad_norm_'s total norm at step S
  w.S, b.S       parameters after step S
  sched_lr       the schedule over total + 2 steps (past the end it stays at the minimum)
  scaler_inf     a found-inf sequence; scaler_scale the GradScaler scale after each (interval 3)
"""
import sys

import torch


def fmt(name, t):
    vals = t.detach().reshape(-1).tolist() if isinstance(t, torch.Tensor) else list(t)
    return "%s %d %s\n" % (name, len(vals), " ".join("%.9g" % v for v in vals))


def schedule(base, ratio, warmup, total, n):
    """The learning rates torch's LinearLR + CosineAnnealingLR (SequentialLR) give, step by step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=base * ratio)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[warmup])
    out = []
    for s in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        seq.step()
    # CosineAnnealingLR's recursive form keeps going (back up) past T_max; the schedule is flat at
    # the minimum there, which is what the closed form gives when clamped.
    for s in range(n):
        if s >= total:
            out[s] = base * ratio
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "t/data/optim/adamw.txt"
    torch.manual_seed(1234)
    lr, ratio, warmup, total = 3e-3, 0.1, 2, 6
    beta1, beta2, eps, wd, clip = 0.9, 0.95, 1e-8, 0.1, 1.0
    steps = 6
    w = torch.nn.Parameter(torch.randn(4, 5))
    b = torch.nn.Parameter(torch.randn(5) * 0.1)
    lines = [fmt("hparams", [lr, ratio, warmup, total, beta1, beta2, eps, wd, clip, steps]),
             fmt("shape_w", [4, 5]), fmt("shape_b", [5]), fmt("w0", w), fmt("b0", b)]
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
                            lr=lr, betas=(beta1, beta2), eps=eps, foreach=False, fused=False)
    lrs = schedule(lr, ratio, warmup, total, steps)
    for s in range(steps):
        # Small and large gradients, so that some steps clip and some do not.
        mag = [0.05, 3.0, 0.2, 10.0, 0.01, 1.5][s]
        gw = torch.randn(4, 5) * mag
        gb = torch.randn(5) * mag
        lines += [fmt("gw.%d" % s, gw), fmt("gb.%d" % s, gb)]
        w.grad = gw.clone()
        b.grad = gb.clone()
        norm = torch.nn.utils.clip_grad_norm_([w, b], clip)
        for g in opt.param_groups:
            g["lr"] = lrs[s]
        opt.step()
        lines += [fmt("lr.%d" % s, [lrs[s]]), fmt("norm.%d" % s, [float(norm)]), fmt("w.%d" % s, w),
                  fmt("b.%d" % s, b)]
    lines.append(fmt("sched_lr", schedule(1.0, 0.1, 3, 10, 12)))
    lines.append(fmt("sched_params", [1.0, 0.1, 3, 10]))

    infs = [0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    scale = torch.tensor([65536.0])
    tracker = torch.tensor([0], dtype=torch.int32)
    scales = []
    for f in infs:
        torch._amp_update_scale_(scale, tracker, torch.tensor([float(f)]), 2.0, 0.5, 3)
        scales.append(float(scale))
    lines += [fmt("scaler_inf", infs), fmt("scaler_scale", scales)]
    with open(path, "w") as f:
        f.write("# made by scripts/make-optim-fixture.py with torch %s\n" % torch.__version__)
        f.writelines(lines)


if __name__ == "__main__":
    main()
