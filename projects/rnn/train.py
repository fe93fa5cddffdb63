"""
Train a character-level (byte-level: vocab 256, no tokenizer) LSTM language model. Default data:
the Python standard library's own top-level *.py files, sorted by name and concatenated (capped at
5 MB); the last 10 % is held out. Its sha256 and size are logged as params, since it differs
between Python versions. At the end it samples text and logs it as samples/sample.txt.

    mlkit run projects/rnn                          # stdlib corpus, 500 steps
    mlkit run projects/rnn -e smoke                 # a few seconds on CPU
    mlkit run projects/rnn -P data=/path/to/file.txt
    mlkit run projects/rnn -P hidden=512 -P batch_size=256 -P seq_len=256 -P max_steps=5000   # GPU-sized
    python projects/rnn/train.py --max-steps 20 --eval-interval 10
    torchrun --standalone --nproc-per-node 2 projects/rnn/train.py

Expected result (default run, seed 0, Python 3.11.7, CPU fp32): validation 2.48 bits/byte
against a unigram baseline of 4.54, samples with Python's indentation, `def`, `self.` and
docstrings; ~9 CPU-minutes, ~20k tokens/s on 2 idle cores (see README.md).
"""

import argparse
import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from model import CharLM

from mlkit.models.transform import byte_lm
from mlkit.train import (
    CHECKPOINT,
    MetricLogger,
    Runtime,
    Tracker,
    add_system_args,
    positive,
    resume_state,
    save_checkpoint,
    setup,
    teardown,
    wrap_ddp,
)
from mlkit.train.data import held_out_tail

BITS = math.log(2)  # nats per bit: a loss in nats/byte divided by this is bits/byte


# -----------------------------------------------------------------------------
# hyperparameters: one flag a line; MLproject passes `-P seq_len=256` as `--seq-len 256`.
# The help text is what `--help` prints; the comments above each group say why.
# allow_abbrev=False: `--widt 4` (an undeclared -P widt=4) must fail, not become --width 4.
# fmt: off
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a byte-level LSTM language model (see the module docstring).", allow_abbrev=False)
    a = p.add_argument
    # data: one uint8 tensor of the whole corpus on the device; batches are random windows of it
    a("--data",                       default="stdlib",  help="stdlib | synthetic | path to a text file (default: stdlib)")
    a("--max-bytes",      type=int,   default=5_000_000, help="cap on the corpus size in bytes (default: 5000000)")
    a("--synthetic-size", type=int,   default=1_000_000, help="bytes of synthetic text (default: 1000000)")
    a("--val-fraction",   type=float, default=0.1,       help="the held-out tail of the corpus (default: 0.1)")
    # model: byte embedding -> stacked LSTM -> linear over the 256 byte values (model.py)
    a("--embed",          type=int,   default=64,        help="byte embedding size (default: 64)")
    a("--hidden",         type=int,   default=256,       help="LSTM hidden size; 512+ on a GPU (default: 256)")
    a("--layers",         type=int,   default=2,         help="stacked LSTM layers (default: 2)")
    a("--dropout",        type=float, default=0.1,       help="between LSTM layers and before the head (default: 0.1)")
    # optimizer: AdamW, linear warmup then cosine decay to lr/10 (get_lr)
    a("--batch-size",     type=positive, default=32,        help="sequences per step, global over DDP ranks (default: 32)")
    a("--seq-len",        type=positive, default=128,       help="bytes per sequence: the BPTT window (default: 128)")
    a("--max-steps",      type=positive, default=500,       help="optimizer steps (default: 500)")
    a("--lr",             type=float, default=4e-3,      help="peak learning rate (default: 4e-3)")
    a("--weight-decay",   type=float, default=0.01,      help="AdamW decoupled weight decay (default: 0.01)")
    a("--warmup-steps",   type=int,   default=30,        help="linear warmup steps (default: 30)")
    a("--grad-clip",      type=float, default=1.0,       help="clip the gradient norm; LSTMs explode without it (default: 1.0)")
    # evaluation and sampling
    a("--eval-interval",  type=positive, default=100,       help="validate and checkpoint every N steps (default: 100)")
    a("--eval-batches",   type=positive, default=20,        help="validation batches per evaluation (default: 20)")
    a("--sample-length",  type=int,   default=600,       help="bytes of text to sample at the end (default: 600)")
    a("--temperature",    type=float, default=0.8,       help="sampling temperature; <1 is more conservative (default: 0.8)")
    # system: --device --precision --compile --seed --log-interval --resume --dry-run
    add_system_args(p, seeds="init, batches and sampling", dry_run="one step, one tiny evaluation")
    return p.parse_args(argv)
# fmt: on


def get_budget(args) -> SimpleNamespace:
    """How long to train, evaluate and sample. --dry-run shrinks it here, never in `args`: args are
    logged as params and saved in the checkpoint, and both must say what was asked for."""
    if args.dry_run:  # one step, one evaluation of one batch, 20 sampled bytes
        return SimpleNamespace(max_steps=1, eval_interval=1, eval_batches=1, sample_length=20)
    keys = ("max_steps", "eval_interval", "eval_batches", "sample_length")
    return SimpleNamespace(**{k: getattr(args, k) for k in keys})


# -----------------------------------------------------------------------------
# the corpus


def stdlib_corpus() -> bytes:
    """The top-level *.py files of this interpreter's standard library, in sorted order."""
    root = Path(os.path.dirname(os.__file__))
    return b"\n".join(f.read_bytes() for f in sorted(root.glob("*.py")))


def synthetic_corpus(n: int, seed: int) -> bytes:
    """Random 'words' (2-8 printable bytes) from a fixed 200-word dictionary, space-separated:
    learnable (within-word bytes are predictable) and any size, for tests and benchmarks."""
    rng = np.random.default_rng(seed)
    words = [bytes(rng.integers(97, 123, rng.integers(2, 9)).tolist()) + b" " for _ in range(200)]
    return b"".join(words[i] for i in rng.integers(0, 200, n // 5 + 1))[:n]


def load_corpus(args) -> bytes:
    if args.data == "stdlib":
        text = stdlib_corpus()
    elif args.data == "synthetic":
        text = synthetic_corpus(args.synthetic_size, args.seed)
    else:  # read no more than --max-bytes: a 50 GB corpus (or /dev/zero) must not fill the memory first
        with open(args.data, "rb") as f:
            text = f.read(args.max_bytes)
    text = text[: args.max_bytes]
    if len(text) < 10 * (args.seq_len + 1):
        raise ValueError(f"data={args.data}: {len(text)} bytes is too little for --seq-len {args.seq_len}")
    return text


def split(text: bytes, args, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole corpus as one uint8 tensor on the device (N,), cut into train and the held-out tail."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(rt.device)
    return held_out_tail(data, args.val_fraction, args.seq_len + 2)  # each split: a window and its target


def unigram_loss(train: torch.Tensor, val: torch.Tensor) -> float:
    """Cross-entropy (nats/byte) of the validation bytes under the training bytes' frequencies
    (add-one smoothed): the loss of a model that ignores context. The LSTM must beat it by a lot."""
    p = (torch.bincount(train.long(), minlength=256).double() + 1).div_(len(train) + 256)
    return float(-(p.log()[val.long()]).mean())


def get_batch(data: torch.Tensor, batch: int, seq_len: int, generator=None):
    """Random windows of the corpus: x (B, T) and y = x shifted by one byte, as int64 on the device."""
    ix = torch.randint(0, len(data) - seq_len - 1, (batch, 1), device=data.device, generator=generator)
    window = data[ix + torch.arange(seq_len + 1, device=data.device)].long()  # (B, T+1)
    return window[:, :-1], window[:, 1:]


# -----------------------------------------------------------------------------
# the training state: what a step changes and a checkpoint saves


@dataclass
class Training:
    raw_model: CharLM  # the plain module: what is checkpointed, sampled from and logged
    model: torch.nn.Module  # raw_model, maybe compiled and DDP-wrapped: what runs forward/backward
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # a no-op unless --precision fp16
    model_args: dict  # CharLM(**model_args) rebuilds the model; a resume reuses the checkpoint's
    total_steps: int  # the length of the lr schedule: --max-steps (1 for --dry-run)
    step: int = 0  # optimizer steps so far, counted on across a resume

    def checkpoint(self, args, train_bytes: int) -> dict:
        return dict(
            model=self.raw_model.state_dict(),
            optimizer=self.opt.state_dict(),
            step=self.step,
            epoch=self.step * args.batch_size * args.seq_len / train_bytes,  # passes over the corpus
            args=vars(args),
            model_args=self.model_args,
        )


def build(args, rt: Runtime, budget: SimpleNamespace) -> Training:
    """The model and its optimizer, fresh or from the checkpoint of run --resume."""
    ckpt = resume_state(args.resume, vars(args))  # -P resume=RUN, or this run's own (requeued, --run-id)
    if ckpt:  # the architecture comes from the checkpoint, not today's flags
        model_args = ckpt["model_args"]
    else:
        model_args = dict(embed=args.embed, hidden=args.hidden, layers=args.layers, dropout=args.dropout)
    raw_model = CharLM(**model_args).to(rt.device)
    opt = torch.optim.AdamW(
        raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=rt.fused()
    )
    t = Training(raw_model, raw_model, opt, rt.grad_scaler(), model_args, budget.max_steps)
    if ckpt:
        raw_model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        t.step = ckpt["step"]
    t.model = wrap_ddp(torch.compile(raw_model) if args.compile else raw_model, rt)
    return t


def log_setup(tracker: Tracker, t: Training, text: bytes, unigram: float, rt: Runtime) -> None:
    """Params the flags do not say (which corpus exactly, what was built, where it runs), and the
    unigram baseline the validation loss is read against."""
    tracker.log_params(
        dict(
            corpus_bytes=len(text),
            corpus_sha256=hashlib.sha256(text).hexdigest(),
            num_params=sum(p.numel() for p in t.raw_model.parameters()),
            precision_used=rt.precision,
            device_used=str(rt.device),
            world_size=rt.world_size,
            resumed_from_step=t.step,
        )
    )
    tracker.log_metrics(dict(unigram_loss=unigram, unigram_bits_per_byte=unigram / BITS), t.step)


# -----------------------------------------------------------------------------
# one step of training, and the evaluation every --eval-interval steps


def get_lr(step: int, total: int, args) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, total - args.warmup_steps))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(t: Training, train: torch.Tensor, args, rt: Runtime):
    lr = get_lr(t.step, t.total_steps, args)
    for group in t.opt.param_groups:
        group["lr"] = lr
    x, y = get_batch(train, args.batch_size // rt.world_size, args.seq_len)  # (B, T) each
    with rt.autocast():  # forward and loss in bf16/fp16; the backward runs outside
        logits = t.model(x)  # (B, T, 256)
        loss = F.cross_entropy(logits.float().view(-1, 256), y.reshape(-1))  # over all B*T positions
    t.opt.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.unscale_(t.opt)  # clip the true gradients, not the fp16-scaled ones
    torch.nn.utils.clip_grad_norm_(t.model.parameters(), args.grad_clip)
    t.scaler.step(t.opt)
    t.scaler.update()
    t.step += 1
    return loss.detach(), lr  # a tensor: the logger syncs with the GPU only every --log-interval steps


@torch.no_grad()
def evaluate(model, val, batches: int, args, rt) -> float:
    """Mean validation loss (nats/byte) over the same fixed-seed windows every time."""
    model.eval()
    g = torch.Generator(device=rt.device).manual_seed(1234)
    losses = torch.zeros(batches, device=rt.device)
    for k in range(batches):
        x, y = get_batch(val, args.batch_size, args.seq_len, g)
        with rt.autocast():
            logits = model(x)  # (B, T, 256)
        losses[k] = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
    model.train()
    return losses.mean().item()


# -----------------------------------------------------------------------------
# checkpoints, the sample and the end of the run


def save(t: Training, args, train_bytes: int, rt: Runtime, tracker: Tracker) -> None:
    if rt.is_main:  # one writer; the other ranks hold the same weights (DDP)
        save_checkpoint(tracker.artifact_dir() / CHECKPOINT, t.checkpoint(args, train_bytes))


def stop_on_ctrl_c(t: Training, args, train_bytes: int, rt: Runtime, tracker, logger) -> None:
    save(t, args, train_bytes, rt, tracker)
    logger.print(f"interrupted at step {t.step}: checkpoint saved")
    tracker.end("KILLED")
    teardown()
    sys.exit(130)


def sample_text(t: Training, length: int, args, rt: Runtime, tracker: Tracker, logger: MetricLogger) -> None:
    """`length` bytes after the prompt "def ", seeded, so two runs of one model sample the same."""
    g = torch.Generator(device=rt.device).manual_seed(args.seed)
    sample = t.raw_model.generate(b"def ", length, args.temperature, g).decode("utf-8", "replace")
    tracker.log_text(sample, "samples/sample.txt")  # the bytes as sampled
    logger.print("sample:\n" + printable(sample))  # the terminal and output.log get no raw ESC


def printable(text: str) -> str:
    """`text` with every control character but newline and tab written as its Python escape
    (`\\x1b`, `\\r`, `\\x7f`): a sample of a byte-level model may hold ESC sequences that would
    move the cursor or clear the screen of whoever reads the log."""
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv=None):
    args = parse_args(argv)
    rt = setup(args.device, args.precision, args.seed)
    tracker = Tracker(rt)
    tracker.start(vars(args))  # the flags as given, logged before anything else can fail
    budget = get_budget(args)
    text = load_corpus(args)
    train, val = split(text, args, rt)
    t = build(args, rt, budget)
    unigram = unigram_loss(train.cpu(), val.cpu())
    log_setup(tracker, t, text, unigram, rt)
    logger = MetricLogger(tracker, args.log_interval, "tokens", t.total_steps)
    logger.print(f"corpus {len(text):,} bytes; unigram baseline {unigram / BITS:.3f} bits/byte")
    logger.count_flops()  # the next step's model FLOPs, counted once: flops_per_s and mfu join the metrics

    try:
        while t.step < t.total_steps:
            loss, lr = train_step(t, train, args, rt)
            logger.step(t.step, args.batch_size * args.seq_len, train_loss=loss, lr=lr)
            if t.step % budget.eval_interval == 0 or t.step == t.total_steps:
                val_loss = evaluate(t.raw_model, val, budget.eval_batches, args, rt)
                tracker.log_metrics(dict(val_loss=val_loss, val_bits_per_byte=val_loss / BITS), t.step)
                logger.print(
                    f"step {t.step}: val_loss {val_loss:.4f} ({val_loss / BITS:.3f} bits/byte, "
                    f"unigram {unigram / BITS:.3f})"
                )
                save(t, args, len(train), rt, tracker)
                logger.restart_clock()  # evaluation and checkpointing are not training throughput
    except KeyboardInterrupt:
        stop_on_ctrl_c(t, args, len(train), rt, tracker, logger)

    if rt.is_main:
        sample_text(t, budget.sample_length, args, rt, tracker, logger)
    # the logged model takes text and answers the most likely next character (docs/models.md);
    # one window of validation bytes, as text, shows its input
    window = bytes(val[: args.seq_len].tolist()).decode("utf-8", "replace")
    tracker.log_model(t.raw_model.eval(), input_example=[window], transform=byte_lm())
    tracker.end()
    teardown()


if __name__ == "__main__":
    main()
