"""
Train a small CNN image classifier. Default data: scikit-learn's bundled 8x8 handwritten digits
(1,797 images, no download), 80/20 stratified split with a fixed seed; the 20 % is held out.

    mlkit run projects/cnn                          # digits, 15 epochs
    mlkit run projects/cnn -e smoke                 # a few seconds on CPU
    mlkit run projects/cnn -P data=synthetic -P image_size=32 -P channels=3 -P batch_size=512
    mlkit run projects/cnn -P resume=<run-id> -P epochs=30   # continue it, to 30 in all
    python projects/cnn/train.py --epochs 1 --dry-run
    torchrun --standalone --nproc-per-node 2 projects/cnn/train.py   # DDP (nccl on GPU, gloo on CPU)

Expected result (default run, seed 0, CPU fp32): 99.7 % held-out accuracy (359 of 360), >= 97 %
from epoch 4; ~10-16 s on 2 CPU cores, 18.5 s on an H100 (README.md has the measured numbers and GPU speed).
"""

import argparse
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from model import Net

from mlkit.models.transform import image_classifier_for, raw_rows
from mlkit.train import (
    CHECKPOINT,
    MetricLogger,
    Runtime,
    Tracker,
    add_system_args,
    fraction,
    positive,
    resume_state,
    save_checkpoint,
    setup,
    teardown,
    wrap_ddp,
)
from mlkit.train.data import ImageData, epoch_batches, full_batches, load_images, random_shift


# -----------------------------------------------------------------------------
# hyperparameters: one flag a line; MLproject passes `-P image_size=32` as `--image-size 32`.
# The help text is what `--help` prints; the comments above each group say why.
# allow_abbrev=False: `--widt 4` (an undeclared -P widt=4) must fail, not become --width 4.
# fmt: off
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a CNN classifier (see the module docstring).", allow_abbrev=False)
    a = p.add_argument
    # data: images come back as floats in [-1, 1], shape (N, C, S, S), already on the device
    a("--data",                        default="digits", help="digits | synthetic | file.npz | folder of class folders (default: digits)")
    a("--image-size",      type=int,   default=0,        help="resize images to SxS; 0 keeps the native size (default: 0)")
    a("--channels",        type=int,   default=1,        help="channels for synthetic data / folders; 3 = RGB (default: 1)")
    a("--num-classes",     type=int,   default=10,       help="classes of synthetic data (default: 10)")
    a("--synthetic-size",  type=int,   default=10_000,   help="images in synthetic mode (default: 10000)")
    a("--val-fraction",    type=fraction, default=0.2,      help="held-out share, stratified by class (default: 0.2)")
    a("--shift",           type=int,   default=1,        help="random translation augmentation in pixels; 0 = off (default: 1)")
    # model: three conv stages, global average pool, linear head (model.py)
    a("--width",           type=int,   default=32,       help="channels of the first conv; then 2x, 4x (default: 32)")
    a("--dropout",         type=float, default=0.1,      help="before the classifier; small data likes a little (default: 0.1)")
    # optimizer: AdamW, linear warmup then cosine decay to 0 (get_lr)
    a("--batch-size",      type=positive, default=64,       help="global batch, split over DDP ranks (default: 64)")
    a("--epochs",          type=positive, default=15,       help="passes over the training split (default: 15)")
    a("--lr",              type=float, default=3e-3,     help="peak learning rate (default: 3e-3)")
    a("--weight-decay",    type=float, default=5e-4,     help="AdamW decoupled weight decay (default: 5e-4)")
    a("--warmup-steps",    type=int,   default=50,       help="linear warmup; Adam's early moments are noisy (default: 50)")
    a("--label-smoothing", type=float, default=0.1,      help="softens overconfident logits (default: 0.1)")
    # system: --device --precision --compile --seed --log-interval --resume --dry-run
    add_system_args(p, seeds="init, split and batch order", dry_run="one batch of one epoch")
    return p.parse_args(argv)
# fmt: on


# -----------------------------------------------------------------------------
# the training state: what a step changes and a checkpoint saves


@dataclass
class Training:
    raw_model: Net  # the plain module: what is checkpointed and logged
    model: torch.nn.Module  # raw_model, maybe compiled and DDP-wrapped: what runs forward/backward
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # a no-op unless --precision fp16
    model_args: dict  # Net(**model_args) rebuilds the model; a resume reuses the checkpoint's
    total_steps: int  # the length of the lr schedule (1 for --dry-run)
    step: int = 0  # optimizer steps so far, counted on across a resume
    epoch: int = 0  # the next epoch to run

    def checkpoint(self, args) -> dict:
        return dict(
            model=self.raw_model.state_dict(),
            optimizer=self.opt.state_dict(),
            step=self.step,
            epoch=self.epoch,
            args=vars(args),
            model_args=self.model_args,
        )


def load_data(args, rt: Runtime) -> ImageData:
    return load_images(
        args.data,
        image_size=args.image_size,
        channels=args.channels,
        num_classes=args.num_classes,
        synthetic_size=args.synthetic_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=rt.device,
    )


def build(args, rt: Runtime, data: ImageData) -> Training:
    """The model and its optimizer, fresh or from the checkpoint of run --resume."""
    C, _, _ = data.shape
    ckpt = resume_state(args.resume, vars(args))  # -P resume=RUN, or this run's own (requeued, --run-id)
    if ckpt:  # the architecture comes from the checkpoint, not today's flags
        model_args = ckpt["model_args"]
    else:
        model_args = dict(in_channels=C, num_classes=data.num_classes, width=args.width, dropout=args.dropout)
    raw_model = Net(**model_args).to(rt.device)
    if rt.device.type == "cuda":  # NHWC lets cuDNN use tensor-core convs in bf16/fp16
        raw_model = raw_model.to(memory_format=torch.channels_last)
        data.x_train = data.x_train.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=rt.fused()
    )
    # full batches only (epoch_batches drops the rest), so an epoch is N // batch steps
    steps_per_epoch = full_batches(len(data.x_train), args.batch_size)
    total_steps = 1 if args.dry_run else args.epochs * steps_per_epoch
    t = Training(raw_model, raw_model, opt, rt.grad_scaler(), model_args, total_steps)
    if ckpt:
        raw_model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        t.step, t.epoch = ckpt["step"], ckpt["epoch"]
    t.model = wrap_ddp(torch.compile(raw_model) if args.compile else raw_model, rt)
    return t


def log_setup(tracker: Tracker, t: Training, data: ImageData, rt: Runtime) -> None:
    """Params the flags do not say: what was built, and where it runs."""
    C, S, _ = data.shape
    tracker.log_params(
        dict(
            num_params=sum(p.numel() for p in t.raw_model.parameters()),
            train_size=len(data.x_train),
            val_size=len(data.x_val),
            input_shape=f"{C}x{S}x{S}",
            precision_used=rt.precision,
            device_used=str(rt.device),
            world_size=rt.world_size,
            resumed_from_step=t.step,
        )
    )


# -----------------------------------------------------------------------------
# one epoch of training, and the evaluation after it


def get_lr(step: int, total: int, args) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_one_epoch(t: Training, data: ImageData, args, rt: Runtime, logger: MetricLogger) -> None:
    t.model.train()
    batch = args.batch_size // rt.world_size  # this rank's share of the global batch
    n = len(data.x_train)
    order = epoch_batches(
        n, batch, epoch=t.epoch, seed=args.seed, rank=rt.rank, world_size=rt.world_size, device=rt.device
    )
    for idx in order:  # idx: (batch,) indices into the training split, on the device
        x, y = (
            data.x_train[idx],
            data.y_train[idx],
        )  # (B, C, S, S), (B,): a gather on the device, no host copy
        if args.shift:
            x = random_shift(x, args.shift)
        lr = get_lr(t.step, t.total_steps, args)
        for group in t.opt.param_groups:
            group["lr"] = lr
        with rt.autocast():  # forward and loss in bf16/fp16; the backward runs outside
            loss = F.cross_entropy(t.model(x), y, label_smoothing=args.label_smoothing)  # logits (B, classes)
        t.opt.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.step(t.opt)
        t.scaler.update()
        t.step += 1
        # the loss stays a tensor: the logger syncs with the GPU only every --log-interval steps
        logger.step(t.step, args.batch_size, train_loss=loss.detach(), lr=lr)
        if args.dry_run:
            break


@torch.no_grad()
def evaluate(model, x, y, rt, batch=1024):
    """Mean loss and accuracy over a split; every rank evaluates all of it (it is small)."""
    model.eval()
    loss_sum, correct = torch.zeros((), device=rt.device), torch.zeros((), device=rt.device)
    for i in range(0, len(x), batch):
        with rt.autocast():
            logits = model(x[i : i + batch])  # (b, classes)
        loss_sum += F.cross_entropy(logits.float(), y[i : i + batch], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch]).sum()
    model.train()
    n = max(1, len(x))  # val_fraction=0 leaves no split: report zeros, not a ZeroDivisionError
    return loss_sum.item() / n, correct.item() / n


# -----------------------------------------------------------------------------
# checkpoints and the end of the run


def save(t: Training, args, rt: Runtime, tracker: Tracker) -> None:
    if rt.is_main:  # one writer; the other ranks hold the same weights (DDP)
        save_checkpoint(tracker.artifact_dir() / CHECKPOINT, t.checkpoint(args))


def stop_on_ctrl_c(t: Training, args, rt: Runtime, tracker: Tracker, logger: MetricLogger) -> None:
    save(t, args, rt, tracker)  # the interrupted epoch is re-run on resume; the step count carries on
    logger.print(f"interrupted at step {t.step}: checkpoint saved")
    tracker.end("KILLED")
    teardown()
    sys.exit(130)


def main(argv=None):
    args = parse_args(argv)
    rt = setup(args.device, args.precision, args.seed)
    tracker = Tracker(rt)
    tracker.start(vars(args))  # the flags as given, logged before anything else can fail
    data = load_data(args, rt)
    t = build(args, rt, data)
    log_setup(tracker, t, data, rt)
    logger = MetricLogger(tracker, args.log_interval, "samples", t.total_steps)
    logger.count_flops()  # the next step's model FLOPs, counted once: flops_per_s and mfu join the metrics

    try:
        while t.epoch < (1 if args.dry_run else args.epochs):
            t0 = time.perf_counter()
            train_one_epoch(t, data, args, rt, logger)
            val_loss, val_acc = evaluate(t.raw_model, data.x_val, data.y_val, rt)
            t.epoch += 1  # the checkpoint says which epoch to run next
            elapsed = time.perf_counter() - t0
            tracker.log_metrics(
                dict(val_loss=val_loss, val_accuracy=val_acc, epoch=t.epoch, epoch_time_s=elapsed), t.step
            )
            logger.print(f"epoch {t.epoch}: val_loss {val_loss:.4f} val_accuracy {val_acc:.4f}")
            save(t, args, rt, tracker)
            logger.restart_clock()  # evaluation and checkpointing are not training throughput
    except KeyboardInterrupt:
        stop_on_ctrl_c(t, args, rt, tracker, logger)

    # the logged model runs in fp32 on any device and carries its input transform and labels: a
    # client sends pixels as the data set holds them (digits: rows of 64 values 0..16) and gets
    # labels back (docs/models.md); 4 validation images (training ones with val_fraction=0), as
    # raw rows, show its input
    transform = image_classifier_for(args.data, data.shape, data.num_classes)
    raw = raw_rows(transform, (data.x_val if len(data.x_val) else data.x_train)[:4])
    tracker.log_model(t.raw_model.float().eval(), input_example=raw, transform=transform)
    tracker.end()
    teardown()


if __name__ == "__main__":
    main()
