"""What the CNN trainer's label smoothing costs a bare bf16 loop at a launch-bound size.

The CNN trainer's loss is `F.cross_entropy(..., label_smoothing=0.1)`; bench_trainers.py's bare
bf16 loop uses plain cross-entropy. At batch 512 on a big GPU each step is bound by launching
kernels from Python, so the ~20 small ops label smoothing adds show up in throughput. This loop
(the bare bf16 loop of bench_trainers.py: data on the GPU, bf16 autocast, fused AdamW,
channels_last) is timed with three losses in turn, `--rounds` times:

  plain  F.cross_entropy(logits, y)
  ls     F.cross_entropy(logits, y, label_smoothing=0.1)       (the trainer's loss)
  lean   0.9 * nll_loss(log_softmax) - 0.1 * mean(log_softmax)  (the same value, fewer ops)

    python benchmarks/bench_cnn_loss.py            # GPU: ~40 s; a tiny CPU version elsewhere
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainers import load_model_module, timed  # noqa: E402


def plain(logits, y):
    return F.cross_entropy(logits, y)


def smoothed(logits, y):
    return F.cross_entropy(logits, y, label_smoothing=0.1)


def lean(logits, y):
    logp = logits.float().log_softmax(-1)
    return 0.9 * F.nll_loss(logp, y) - 0.1 * logp.mean()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=None, help="per measurement (GPU 3, CPU 0.3)")
    args = p.parse_args()
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    torch.backends.cudnn.benchmark = True
    B, S, W = (512, 32, 64) if gpu else (32, 8, 4)
    seconds = args.seconds or (3.0 if gpu else 0.3)
    model = load_model_module("cnn").Net(3, 10, W).to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(8192, 3, S, S, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8192,), device=dev)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=gpu)

    def make(loss_fn):
        def step():
            idx = torch.randint(0, 8192, (B,), device=dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    losses = {"plain": plain, "ls": smoothed, "lean": lean}
    rates: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.rounds):
        for name, fn in losses.items():
            rates[name].append(B / timed(make(fn), dev, seconds, 10))
    print(f"# {torch.cuda.get_device_name(0) if gpu else 'CPU (tiny shapes)'}, batch {B}, img/s per round")
    for name, values in rates.items():
        print(name, " ".join(f"{r:,.0f}" for r in values), "img/s")


if __name__ == "__main__":
    main()
