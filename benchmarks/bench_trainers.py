"""
Trainer throughput against bare PyTorch loops, on the same model at the same batch size.

For each trainer (projects/cnn, rnn, gan) three measurements:
  fp32-bare   a plain loop: fp32, data indexed on the CPU and copied to the GPU every step,
              default (foreach) AdamW/Adam. What a first-draft training script does.
  bf16-bare   a tuned loop with no mlkit: data already on the GPU, bf16 autocast, fused
              optimizer, channels_last for conv nets.
  trainer     the project's train.py itself, started as a subprocess on synthetic data with a
              real tracked run (in a temp store; --keep-store keeps it in <out>/mlruns) and its
              normal metric logging (every --log-interval steps, one log_metrics call). Its
              throughput is read back from the samples_per_s / tokens_per_s metrics it logged,
              as the median after dropping the first quarter (warmup). Its model FLOPs per
              step (counted once by torch.utils.flop_counter, mlkit/train/flops.py), FLOP/s and
              MFU (FLOP/s over the device's peak for the precision; blank where the device has no
              known peak, e.g. a CPU) are read back the same way.
The GAN's bare loops do what its trainer does by default: hinge loss, the R1 penalty on real
images (a double backward) and an EMA copy of G.
Shapes (where the GPU is busy): the CNN on CIFAR-sized 3x32x32 images, width 64, batch 1024; the
DCGAN at its native 3x64x64, nz 100, ngf = ndf = 64, batch 512; the byte LSTM with embed 64,
hidden 1024, 2 layers, batch 256 x 256 bytes. The CNN trainer runs with --shift 0 (no
augmentation) because the bare loops do none.

    python benchmarks/bench_trainers.py --out benchmarks/out            # GPU: ~3 minutes
    python benchmarks/bench_trainers.py --only cnn --seconds 5
    python benchmarks/bench_trainers.py --set cnn.batch=512 --set gan.size=32   # other shapes
    python benchmarks/bench_trainers.py --only cnn --set cnn.batch=512 --set cnn.compile=1

`--set TRAINER.compile=1` runs the trainer with `--compile 1` (torch.compile of its model); the
bare loops stay eager, so the ratio is the compiled trainer against the same uncompiled references.

Writes <out>/bench_trainers.json and <out>/bench_trainers.md. Needs torch, numpy and mlkit's own
dependencies (pyyaml, psutil: the tracked runs); no scikit-learn, no network. On a machine
without CUDA it runs a tiny CPU version (seconds, small shapes) and says so.
"""

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
PROJECTS = REPO / "projects"


def load_model_module(project: str):
    spec = importlib.util.spec_from_file_location(f"{project}_model", PROJECTS / project / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(step, dev, seconds: float, warmup: int) -> float:
    """Seconds per step: `warmup` steps untimed, then whole chunks of 10 steps until `seconds` pass."""
    for _ in range(warmup):
        step()
    sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10):
            step()
        n += 10
        sync(dev)
        if time.perf_counter() - t0 >= seconds:
            return (time.perf_counter() - t0) / n


# ------------------------------------------------------------------ the bare loops
def bare_classifier(cfg, dev, mode, seconds):
    Net = load_model_module("cnn").Net
    fast = mode == "bf16"
    model = Net(in_channels=3, num_classes=10, width=cfg["width"]).to(dev)
    n = 8192  # a pool of distinct images to index batches from
    x = torch.randn(n, 3, cfg["size"], cfg["size"], device=dev if fast else "cpu")
    y = torch.randint(0, 10, (n,), device=x.device)
    if fast and dev.type == "cuda":
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fast and dev.type == "cuda")
    B = cfg["batch"]

    def step():
        idx = torch.randint(0, n, (B,), device=x.device)
        xb, yb = (x[idx], y[idx]) if fast else (x[idx].to(dev), y[idx].to(dev))
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return B / timed(step, dev, seconds, cfg["warmup"])


def bare_lm(cfg, dev, mode, seconds):
    CharLM = load_model_module("rnn").CharLM
    fast = mode == "bf16"
    model = CharLM(embed=cfg["embed"], hidden=cfg["hidden"], layers=cfg["layers"]).to(dev)
    data = torch.randint(97, 123, (4_000_000,), dtype=torch.uint8, device=dev if fast else "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fast and dev.type == "cuda")
    B, T = cfg["batch"], cfg["seq_len"]
    offsets = torch.arange(T + 1, device=data.device)

    def step():
        ix = torch.randint(0, len(data) - T - 1, (B, 1), device=data.device)
        w = data[ix + offsets].long()
        if not fast:
            w = w.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(model(w[:, :-1]).float().view(-1, 256), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the trainer clips too
        opt.step()

    return B * T / timed(step, dev, seconds, cfg["warmup"])


def bare_gan(cfg, dev, mode, seconds):
    """The trainer's algorithm, written plainly: hinge loss, the R1 penalty on real images (a double
    backward) and an EMA copy of G, as projects/gan/train.py does by default."""
    m = load_model_module("gan")
    fast = mode == "bf16"
    G = m.Generator(nz=cfg["nz"], ngf=cfg["ngf"], channels=3, image_size=cfg["size"]).to(dev)
    D = m.Discriminator(ndf=cfg["ndf"], channels=3, image_size=cfg["size"]).to(dev)
    n = 8192
    x = torch.rand(n, 3, cfg["size"], cfg["size"], device=dev if fast else "cpu") * 2 - 1
    if fast and dev.type == "cuda":
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    fused = fast and dev.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    B, gamma = cfg["batch"], cfg["r1_gamma"]

    def step():
        idx = torch.randint(0, n, (B,), device=x.device)
        real = (x[idx] if fast else x[idx].to(dev)).requires_grad_(gamma > 0)
        z = torch.randn(B, cfg["nz"], 1, 1, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast):
            fake = G(z)
            d_real = D(real)
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + D(fake.detach())).mean()
            if gamma > 0:
                (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
                loss_d = loss_d + gamma / 2 * grad.float().pow(2).sum((1, 2, 3)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast):
            loss_g = -D(fake).float().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            if fast:
                torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 0.005)
            else:
                for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
                    p_ema.lerp_(p, 0.005)

    return B / timed(step, dev, seconds, cfg["warmup"])


# ------------------------------------------------------------------ the trainer, for real
def _argv(**flags) -> list[str]:
    """`--flag value` pairs from keyword arguments (underscores become dashes)."""
    return [item for key, value in flags.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def trainer_args(name, cfg, steps):
    """train.py's flags for this shape and about `steps` steps; the throughput metric it logs."""
    if name == "rnn":
        return _argv(
            data="synthetic", synthetic_size=4_000_000, embed=cfg["embed"], hidden=cfg["hidden"],
            layers=cfg["layers"], batch_size=cfg["batch"], seq_len=cfg["seq_len"], max_steps=steps,
            eval_interval=steps, eval_batches=2, sample_length=50,
        ), "tokens_per_s"  # fmt: skip
    images = dict(data="synthetic", image_size=cfg["size"], channels=3,
                  synthetic_size=cfg["synthetic_size"], batch_size=cfg["batch"])  # fmt: skip
    if name == "cnn":  # 80 % of the images are the training split
        epochs = math.ceil(steps * cfg["batch"] / (0.8 * cfg["synthetic_size"]))
        return _argv(**images, width=cfg["width"], shift=0, epochs=epochs), "samples_per_s"
    epochs = math.ceil(steps * cfg["batch"] / cfg["synthetic_size"])
    return _argv(
        **images, nz=cfg["nz"], ngf=cfg["ngf"], ndf=cfg["ndf"], epochs=epochs, r1_gamma=cfg["r1_gamma"]
    ), "samples_per_s"


def run_trainer(name, cfg, dev, steps, store: Path, log_interval: int):
    """train.py as a subprocess with a real tracked run; returns its post-warmup rate and the run id."""
    args, metric = trainer_args(name, cfg, steps)
    env = {
        **os.environ,
        "MLKIT_TRACKING_URI": str(store),
        "PYTHONPATH": str(REPO),
        "MLKIT_EXPERIMENT_NAME": "bench_trainers",
    }
    for key in ("MLKIT_RUN_ID", "MLFLOW_RUN_ID"):
        env.pop(key, None)
    argv = [sys.executable, "train.py", *args, "--device", str(dev), "--log-interval", str(log_interval),
            "--compile", str(cfg["compile"])]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=PROJECTS / name, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} trainer exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    sys.path.insert(0, str(REPO))
    from mlkit.tracking.store import FileStore

    fs = FileStore(store)
    exp = fs.get_experiment_by_name("bench_trainers")
    runs, _ = fs.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    run = runs[0]
    history = fs.get_metric_history(run.info.run_id, metric)
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    kept = rates[max(1, len(rates) // 4) :]  # the first quarter holds cuDNN autotuning and allocator warmup
    flops = {"model_flops_per_step": run.data.metrics.get("model_flops_per_step")}
    for key in ("flops_per_s", "mfu"):  # the same post-warmup median as the rate
        values = [m.value for m in sorted(fs.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
        flops[key] = statistics.median(values[max(1, len(values) // 4) :]) if values else None
    return statistics.median(kept), run.info.run_id, wall, " ".join(argv[1:]), flops


# ------------------------------------------------------------------ main
# GPU shapes where the GPU is busy (benchmarks/README.md has the sweep that chose them: at smaller
# ones the step is bound by kernel launches, and bf16 buys little over fp32 even in a bare loop);
# the CPU version shrinks them. `--set trainer.key=N` changes one.
CONFIGS = {
    "cnn": dict(size=32, width=64, batch=1024, synthetic_size=50_000, warmup=20, compile=0),
    "rnn": dict(embed=64, hidden=1024, layers=2, batch=256, seq_len=256, warmup=10, compile=0),
    "gan": dict(
        size=64, nz=100, ngf=64, ndf=64, batch=512, synthetic_size=50_000, warmup=10, r1_gamma=1.0, compile=0
    ),
}
TINY = {
    "cnn": dict(size=16, width=8, batch=64, synthetic_size=2_000, warmup=2, compile=0),
    "rnn": dict(embed=16, hidden=32, layers=1, batch=8, seq_len=32, warmup=2, compile=0),
    "gan": dict(
        size=16, nz=16, ngf=8, ndf=8, batch=64, synthetic_size=2_000, warmup=2, r1_gamma=1.0, compile=0
    ),
}
BARE = {"cnn": bare_classifier, "rnn": bare_lm, "gan": bare_gan}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", default=str(REPO / "benchmarks" / "out"), help="folder for the JSON, table and store"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="timed seconds per measurement (GPU 10, CPU 2)"
    )
    p.add_argument(
        "--keep-store",
        action="store_true",
        help="keep the trainers' runs (checkpoints, models) in <out>/mlruns",
    )
    p.add_argument("--only", nargs="*", default=["cnn", "rnn", "gan"], help="trainers to measure")
    p.add_argument(
        "--log-interval", type=int, default=10, help="the trainer's metric logging interval (default: 10)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TRAINER.KEY=N",
        help="change one shape, e.g. --set cnn.batch=1024 --set rnn.hidden=512 (repeatable)",
    )
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the trainers' runs hold checkpoints and models (tens of MB): a temp store unless asked to keep them
    store = out / "mlruns" if args.keep_store else Path(tempfile.mkdtemp(prefix="bench-trainers-store-"))
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    seconds = args.seconds or (10.0 if gpu else 2.0)
    torch.backends.cudnn.benchmark = True  # one line every loop sets; fixed shapes
    configs = {name: dict(cfg) for name, cfg in (CONFIGS if gpu else TINY).items()}
    for item in args.set:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        if name not in configs or key not in configs[name] or not value:
            p.error(
                f"--set {item!r}: expected TRAINER.KEY=N with a key of {sorted(configs.get(name, CONFIGS['cnn']))}"
            )
        configs[name][key] = type(configs[name][key])(value)
    env = dict(
        torch=torch.__version__,
        python=platform.python_version(),
        seconds=seconds,
        device=torch.cuda.get_device_name(0) if gpu else f"CPU ({os.cpu_count()} cores)",
        cudnn=torch.backends.cudnn.version() if gpu else None,
    )
    print(
        f"# bench_trainers on {env['device']}, torch {env['torch']}, {seconds:g} s per measurement",
        flush=True,
    )
    if not gpu:
        print(
            "# no CUDA: a TINY CPU version with small shapes; the ratios are not meaningful here", flush=True
        )

    results = []
    for name in args.only:
        cfg = configs[name]
        row = dict(trainer=name, config=cfg, unit="tokens/s" if name == "rnn" else "samples/s")
        try:
            row["fp32_bare"] = BARE[name](cfg, dev, "fp32", seconds)
            row["bf16_bare"] = BARE[name](cfg, dev, "bf16", seconds)
            per_step = (cfg["batch"] * cfg.get("seq_len", 1)) / row["bf16_bare"]
            steps = max(50, int((seconds * 1.5) / per_step))  # the first quarter is dropped as warmup
            row["trainer_rate"], row["run_id"], row["trainer_wall_s"], row["trainer_cmd"], flops = (
                run_trainer(name, cfg, dev, steps, store, args.log_interval)
            )
            row.update(flops)
            row["vs_bf16_bare"] = row["trainer_rate"] / row["bf16_bare"]
            row["vs_fp32_bare"] = row["trainer_rate"] / row["fp32_bare"]
        except Exception as e:  # one failing trainer must not lose the others' numbers
            row["error"] = f"{type(e).__name__}: {e}"[:3000]
        results.append(row)
        print(
            json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True
        )
        if gpu:
            torch.cuda.empty_cache()

    if not args.keep_store:
        shutil.rmtree(store, ignore_errors=True)
    (out / "bench_trainers.json").write_text(json.dumps(dict(env=env, results=results), indent=2))
    table = render(env, results, gpu)
    (out / "bench_trainers.md").write_text(table)
    print("\n" + table)


def render(env, results, gpu):
    lines = [
        f"Device: {env['device']} | torch {env['torch']} | {env['seconds']:g} s per measurement"
        + ("" if gpu else " | TINY CPU version: not a performance result"),
        "",
        "| trainer | unit | fp32 bare | bf16 bare | trainer | trainer / bf16 bare (target >= 0.95) "
        "| trainer / fp32 bare (target >= 1.5) | model GFLOP/step | trainer TFLOP/s | MFU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['trainer']} | {r['unit']} | error: {r['error'].splitlines()[0][:120]} | | | | | | | |"
            )
            continue
        per_step, rate, mfu = r.get("model_flops_per_step"), r.get("flops_per_s"), r.get("mfu")
        lines.append(
            f"| {r['trainer']} | {r['unit']} | {r['fp32_bare']:,.0f} | {r['bf16_bare']:,.0f} | "
            f"{r['trainer_rate']:,.0f} | {r['vs_bf16_bare']:.2f} | {r['vs_fp32_bare']:.2f} | "
            f"{_num(per_step, 1e9, '.2f')} | {_num(rate, 1e12, '.3f')} | "
            f"{'—' if mfu is None else f'{mfu:.1%}'} |"
        )
    return "\n".join(lines) + "\n"


def _num(value, scale, spec):
    return "—" if value is None else format(value / scale, spec)


if __name__ == "__main__":
    main()
