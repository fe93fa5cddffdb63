"""
Train a DCGAN. Default data: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
download), bilinearly upsampled to 16x16 so the generator has two upsampling stages. Every epoch
a grid of 64 samples from fixed noise is logged as samples/epoch_NNN.png (written without Pillow).

    mlkit run projects/gan                          # digits at 16x16, 200 epochs
    mlkit run projects/gan -e smoke                 # a few seconds on CPU
    mlkit run projects/gan -P data=synthetic -P image_size=32 -P channels=3 -P batch_size=256
    python projects/gan/train.py --epochs 1 --dry-run
    python projects/gan/check_samples.py --run-id <run-id>   # do the samples look like digits?

`-P compile=1` compiles D when `-P r1_gamma=0` (torch.compile has no double backward, which the R1
penalty takes through D) and G off CUDA (on CUDA inductor's backward of G's channels_last
transposed convolutions fails, torch 2.11): the run's param `compiled` says which ran compiled.

Expected result (default run, seed 0, CPU fp32): digit-like strokes from about epoch 10; after 200
epochs check_samples.py's digits classifier recognises 62 % of 1,000 samples (from the EMA
generator) with >= 0.9 confidence (held-out real digits: 99 %), all 10 classes present.
~9 CPU-minutes, 5 min wall on 2 cores; 82 s on an H100 in bf16, 63.5 % recognised (README.md).
"""

import argparse
import copy
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from model import Discriminator, Generator

from mlkit.models.transform import image_generator_for
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
    unwrap,
    wrap_ddp,
)
from mlkit.train.data import epoch_batches, full_batches, load_images
from mlkit.train.png import image_grid, write_png


# -----------------------------------------------------------------------------
# hyperparameters: one flag a line; MLproject passes `-P image_size=32` as `--image-size 32`.
# The help text is what `--help` prints; the comments above each group say why.
# allow_abbrev=False: `--widt 4` (an undeclared -P widt=4) must fail, not become --width 4.
# fmt: off
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a DCGAN (see the module docstring).", allow_abbrev=False)
    a = p.add_argument
    # data: images as floats in [-1, 1] (the generator's tanh range), shape (N, C, S, S), on the device
    a("--data",                       default="digits", help="digits | synthetic | file.npz | folder of class folders (default: digits)")
    a("--image-size",     type=int,   default=16,       help="square size, 4*2**k: 8, 16, 32, 64 (default: 16)")
    a("--channels",       type=int,   default=1,        help="channels for synthetic data / folders; 3 = RGB (default: 1)")
    a("--synthetic-size", type=int,   default=10_000,   help="images in synthetic mode (default: 10000)")
    # model: G upsamples z (B, nz, 1, 1) to (B, C, S, S); D mirrors it down to one score (model.py)
    a("--nz",             type=int,   default=64,       help="latent size (default: 64)")
    a("--ngf",            type=int,   default=32,       help="generator width at full resolution; doubles per stage down (default: 32)")
    a("--ndf",            type=int,   default=64,       help="discriminator width at half resolution; a wider D than G helps here (default: 64)")
    # optimizer: Adam with the DCGAN paper's settings; a lower beta1 keeps the two players stable
    a("--batch-size",     type=positive, default=64,       help="global batch, split over DDP ranks (default: 64)")
    a("--epochs",         type=positive, default=200,      help="passes over the images (default: 200)")
    a("--lr",             type=float, default=2e-4,     help="Adam learning rate for both nets (default: 2e-4)")
    a("--beta1",          type=float, default=0.5,      help="Adam beta1 (default: 0.5)")
    # regularisation: the hinge loss alone lets D grow sharp and the game oscillate
    a("--r1-gamma",       type=float, default=1.0,      help="weight of the R1 penalty on D's gradient at real images; keeps D smooth so the hinge game stays stable (0 = off) (default: 1.0)")
    a("--ema-decay",      type=fraction, default=0.995,    help="decay of the moving average of G's weights that samples, grids and the logged model use (default: 0.995)")
    # system: --device --precision --compile --seed --log-interval --resume --dry-run
    add_system_args(p, seeds="init, batch order and noise", dry_run="one batch of one epoch")
    return p.parse_args(argv)
# fmt: on


# -----------------------------------------------------------------------------
# the training state: what a step changes and a checkpoint saves


@dataclass
class Training:
    raw_g: Generator  # the plain modules: what is checkpointed
    raw_d: Discriminator
    G: torch.nn.Module  # raw_g / raw_d, maybe compiled and DDP-wrapped: what trains
    D: torch.nn.Module
    G_ema: Generator  # a moving average of G's weights (see ema_update): samples, grids, the logged model
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scalers: tuple  # (D's, G's) GradScaler: one per player, their losses scale differently
    model_args: dict  # dict(G=..., D=...): Generator(**G) and Discriminator(**D) rebuild them
    step: int = 0  # optimizer steps so far (one D and one G update each), counted on across a resume
    epoch: int = 0  # the next epoch to run

    def checkpoint(self, args) -> dict:
        return dict(
            G=self.raw_g.state_dict(),
            G_ema=self.G_ema.state_dict(),
            D=self.raw_d.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            step=self.step,
            epoch=self.epoch,
            args=vars(args),
            model_args=self.model_args,
        )


def load_data(args, rt: Runtime) -> torch.Tensor:
    """All the images, (N, C, S, S) in [-1, 1]: a GAN has no held-out split."""
    data = load_images(
        args.data,
        image_size=args.image_size,
        channels=args.channels,
        synthetic_size=args.synthetic_size,
        val_fraction=0.0,
        seed=args.seed,
        device=rt.device,
    )
    if rt.device.type == "cuda":  # NHWC, like the models (see build)
        return data.x_train.contiguous(memory_format=torch.channels_last)
    return data.x_train


def build(args, rt: Runtime, channels: int) -> Training:
    """Both players, G's moving average and the optimizers, fresh or from run --resume."""
    ckpt = resume_state(args.resume, vars(args))  # -P resume=RUN, or this run's own (requeued, --run-id)
    if ckpt:  # the architecture comes from the checkpoint, not today's flags
        g_args, d_args = ckpt["model_args"]["G"], ckpt["model_args"]["D"]
    else:
        g_args = dict(nz=args.nz, ngf=args.ngf, channels=channels, image_size=args.image_size)
        d_args = dict(ndf=args.ndf, channels=channels, image_size=args.image_size)
    raw_g, raw_d = Generator(**g_args).to(rt.device), Discriminator(**d_args).to(rt.device)
    if rt.device.type == "cuda":  # NHWC lets cuDNN use tensor-core convs in bf16/fp16
        raw_g = raw_g.to(memory_format=torch.channels_last)
        raw_d = raw_d.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(raw_g).eval().requires_grad_(False)  # updated by ema_update, never trained
    betas = (args.beta1, 0.999)
    opt_g = torch.optim.Adam(raw_g.parameters(), lr=args.lr, betas=betas, fused=rt.fused())
    opt_d = torch.optim.Adam(raw_d.parameters(), lr=args.lr, betas=betas, fused=rt.fused())
    scalers = (rt.grad_scaler(), rt.grad_scaler())
    t = Training(raw_g, raw_d, raw_g, raw_d, G_ema, opt_g, opt_d, scalers, dict(G=g_args, D=d_args))
    if ckpt:
        raw_g.load_state_dict(ckpt["G"])
        G_ema.load_state_dict(ckpt.get("G_ema", ckpt["G"]))  # older checkpoints had no EMA
        raw_d.load_state_dict(ckpt["D"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        t.step, t.epoch = ckpt["step"], ckpt["epoch"]
    compile_g, compile_d = what_to_compile(args, rt.device)
    t.G = wrap_ddp(torch.compile(raw_g) if compile_g else raw_g, rt)
    t.D = wrap_ddp(torch.compile(raw_d) if compile_d else raw_d, rt)
    return t


def what_to_compile(args, device: torch.device) -> tuple[bool, bool]:
    """(G, D) to torch.compile under --compile 1: only what torch.compile can train. It has no
    double backward, which R1 takes through D (so D only with r1_gamma=0); and on CUDA inductor's
    backward of G's channels_last transposed convolutions fails a stride assertion (torch 2.11 on
    an H200), so G only off CUDA."""
    return bool(args.compile) and device.type != "cuda", bool(args.compile) and not args.r1_gamma


def log_setup(tracker: Tracker, t: Training, x_all: torch.Tensor, rt: Runtime, args) -> None:
    """Params the flags do not say: what was built, and where it runs."""
    tracker.log_params(
        dict(
            g_params=sum(p.numel() for p in t.raw_g.parameters()),
            train_size=len(x_all),
            d_params=sum(p.numel() for p in t.raw_d.parameters()),
            precision_used=rt.precision,
            device_used=str(rt.device),
            world_size=rt.world_size,
            resumed_from_step=t.step,
            compiled=",".join(n for n, on in zip("GD", what_to_compile(args, rt.device), strict=True) if on),
        )
    )


# -----------------------------------------------------------------------------
# one epoch of the two-player game


def adam_step(opt, scaler, loss):
    # one player's update; the scaler is a pass-through unless --precision fp16
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


@torch.no_grad()
def ema_update(G_ema, G, decay: float) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G. The average of the recent generators is smoother
    than any one of them (the two-player game keeps G oscillating); BatchNorm's running stats are
    copied, not averaged."""
    # one multi-tensor kernel per list instead of one small kernel per parameter
    torch._foreach_lerp_(list(G_ema.parameters()), list(unwrap(G).parameters()), 1 - decay)
    torch._foreach_copy_(list(G_ema.buffers()), list(unwrap(G).buffers()))


def train_one_epoch(t: Training, x_all: torch.Tensor, args, rt: Runtime, logger: MetricLogger) -> None:
    batch = args.batch_size // rt.world_size  # this rank's share of the global batch
    n = len(x_all)
    order = epoch_batches(
        n, batch, epoch=t.epoch, seed=args.seed, rank=rt.rank, world_size=rt.world_size, device=rt.device
    )
    for idx in order:  # idx: (batch,) indices into the images, on the device
        real = x_all[idx].requires_grad_(args.r1_gamma > 0)  # (B, C, S, S), a gather on the device
        z = torch.randn(batch, args.nz, 1, 1, device=rt.device)  # (B, nz, 1, 1)
        # (1) D: the hinge loss; real and fake in separate batches (BatchNorm)
        with rt.autocast():
            fake = t.G(z)  # (B, C, S, S) in [-1, 1]
            d_real = t.D(real)  # (B,) scores; the hinge stops pushing past +1 (real) and -1 (fake)
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + t.D(fake.detach())).mean()
            if args.r1_gamma > 0:  # R1: (gamma/2) E|grad_x D(x)|^2 on real images (a double backward)
                (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)  # (B, C, S, S)
                loss_d = loss_d + args.r1_gamma / 2 * grad.float().pow(2).sum((1, 2, 3)).mean()
        adam_step(t.opt_d, t.scalers[0], loss_d)
        # (2) G: raise D's score of its samples, through the just-updated D
        with rt.autocast():
            loss_g = -t.D(fake).float().mean()
        adam_step(t.opt_g, t.scalers[1], loss_g)
        ema_update(t.G_ema, t.G, args.ema_decay)
        t.step += 1
        # the losses stay tensors: the logger syncs with the GPU only every --log-interval steps
        logger.step(t.step, args.batch_size, loss_d=loss_d.detach(), loss_g=loss_g.detach())
        if args.dry_run:
            break


# -----------------------------------------------------------------------------
# sample grids, checkpoints and the end of the run


@torch.no_grad()
def sample_grid(G, z_fixed, path: Path) -> Path:
    """64 samples from the same noise every epoch, so the grids show training progress."""
    images = G.eval()(z_fixed).float().cpu().numpy()  # (64, C, S, S) in [-1, 1]
    return write_png(path, image_grid(images, nrow=8, scale=max(1, 64 // images.shape[-1])))


def log_samples(t: Training, z_fixed: torch.Tensor, tracker: Tracker) -> None:
    """This epoch's grid as samples/epoch_NNN.png. The PNG is written to a temporary directory that
    is removed once the store has its copy: a 200-epoch run must not leave 200 files in /tmp."""
    with tempfile.TemporaryDirectory(prefix="gan-samples-") as tmp:
        grid = sample_grid(t.G_ema, z_fixed, Path(tmp) / f"epoch_{t.epoch:03d}.png")
        tracker.log_artifact(grid, "samples")


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
    x_all = load_data(args, rt)
    t = build(args, rt, channels=x_all.shape[1])
    log_setup(tracker, t, x_all, rt, args)
    epochs = 1 if args.dry_run else args.epochs
    total_steps = epochs * full_batches(len(x_all), args.batch_size)  # an error if not one full batch
    logger = MetricLogger(tracker, args.log_interval, "samples", total_steps)
    # the same 64 latents every epoch, from their own generator: the grids are comparable
    g = torch.Generator(rt.device).manual_seed(0)
    z_fixed = torch.randn(64, t.model_args["G"]["nz"], 1, 1, device=rt.device, generator=g)  # (64, nz, 1, 1)
    logger.count_flops()  # the next step's model FLOPs, counted once: flops_per_s and mfu join the metrics

    try:
        while t.epoch < epochs:
            t0 = time.perf_counter()
            train_one_epoch(t, x_all, args, rt, logger)
            t.epoch += 1  # the checkpoint says which epoch to run next
            if rt.is_main:
                log_samples(t, z_fixed, tracker)
            tracker.log_metrics(dict(epoch=t.epoch, epoch_time_s=time.perf_counter() - t0), t.step)
            nan = float("nan")  # no log step yet: the epoch was shorter than --log-interval
            logger.print(
                f"epoch {t.epoch}: loss_d {logger.last.get('loss_d', nan):.4f} "
                f"loss_g {logger.last.get('loss_g', nan):.4f}"
            )
            save(t, args, rt, tracker)
            logger.restart_clock()  # sampling and checkpointing are not training throughput
    except KeyboardInterrupt:
        stop_on_ctrl_c(t, args, rt, tracker, logger)

    # the logged model is the EMA generator, in fp32; 4 fixed latents show its input; its output
    # mapping turns [-1, 1] images back into the data set's pixel values (docs/models.md)
    transform = image_generator_for(args.data)
    tracker.log_model(
        t.G_ema.float().eval(), input_example=z_fixed[:4].float().cpu().numpy(), transform=transform
    )
    tracker.end()
    teardown()


if __name__ == "__main__":
    main()
