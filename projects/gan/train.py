"""
Train a DCGAN. Default data: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
download), bilinearly upsampled to 16x16 so the generator has two upsampling stages. Every epoch
a grid of 64 samples from fixed noise is logged as samples/epoch_NNN.png (written without Pillow).

    mlkit run projects/gan                          # digits at 16x16, 200 epochs
    mlkit run projects/gan -e smoke                 # a few seconds on CPU
    mlkit run projects/gan -P data=synthetic -P image_size=32 -P channels=3 -P batch_size=256
    python projects/gan/train.py --epochs 1 --dry-run
    python projects/gan/check_samples.py --run-id <run-id>   # do the samples look like digits?

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
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from model import Discriminator, Generator

from mlkit.train import (
    CHECKPOINT,
    MetricLogger,
    Tracker,
    add_system_args,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    setup,
    teardown,
    unwrap,
    wrap_ddp,
)
from mlkit.train.data import epoch_batches, load_images
from mlkit.train.png import image_grid, write_png


def parse_args(argv=None):
    # allow_abbrev=False: `--widt 4` (an undeclared -P widt=4) must fail, not become --width 4
    p = argparse.ArgumentParser(description="Train a DCGAN (see the module docstring).", allow_abbrev=False)
    a = p.add_argument
    # data
    a(
        "--data",
        default="digits",
        help="digits | synthetic | file.npz | folder of class folders (default: digits)",
    )
    a("--image-size", type=int, default=16, help="square size, 4*2**k: 8, 16, 32, 64 (default: 16)")
    a("--channels", type=int, default=1, help="channels for synthetic data / folders; 3 = RGB (default: 1)")
    a("--synthetic-size", type=int, default=10_000, help="images in synthetic mode (default: 10000)")
    # model
    a("--nz", type=int, default=64, help="latent size (default: 64)")
    a(
        "--ngf",
        type=int,
        default=32,
        help="generator width at full resolution; doubles per stage down (default: 32)",
    )
    a(
        "--ndf",
        type=int,
        default=64,
        help="discriminator width at half resolution; a wider D than G helps here (default: 64)",
    )
    # optimizer: Adam with the DCGAN paper's settings; a lower beta1 keeps the two players stable
    a("--batch-size", type=int, default=64, help="global batch, split over DDP ranks (default: 64)")
    a("--epochs", type=int, default=200, help="passes over the images (default: 200)")
    a("--lr", type=float, default=2e-4, help="Adam learning rate for both nets (default: 2e-4)")
    a("--beta1", type=float, default=0.5, help="Adam beta1 (default: 0.5)")
    a(
        "--r1-gamma",
        type=float,
        default=1.0,
        help="weight of the R1 penalty on D's gradient at real images; keeps D smooth so the "
        "hinge game stays stable (0 = off) (default: 1.0)",
    )
    a(
        "--ema-decay",
        type=float,
        default=0.995,
        help="decay of the moving average of G's weights that samples, grids and the logged "
        "model use (default: 0.995)",
    )
    # system
    add_system_args(p, seeds="init, batch order and noise", dry_run="one batch of one epoch")
    return p.parse_args(argv)


def adam_step(opt, scaler, loss):
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


def train_one_epoch(G, D, G_ema, opt_g, opt_d, scalers, x_all, rt, args, state, logger):
    batch = args.batch_size // rt.world_size
    for idx in epoch_batches(
        len(x_all),
        batch,
        epoch=state.epoch,
        seed=args.seed,
        rank=rt.rank,
        world_size=rt.world_size,
        device=rt.device,
    ):
        real = x_all[idx].requires_grad_(args.r1_gamma > 0)  # (B, C, S, S), a gather on the device
        z = torch.randn(batch, args.nz, 1, 1, device=rt.device)
        # (1) D: the hinge loss; real and fake in separate batches (BatchNorm)
        with rt.autocast():
            fake = G(z)
            d_real = D(real)
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + D(fake.detach())).mean()
            if args.r1_gamma > 0:  # R1: (gamma/2) E|grad_x D(x)|^2 on real images (a double backward)
                (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
                loss_d = loss_d + args.r1_gamma / 2 * grad.float().pow(2).sum((1, 2, 3)).mean()
        adam_step(opt_d, scalers[0], loss_d)
        # (2) G: raise D's score of its samples, through the just-updated D
        with rt.autocast():
            loss_g = -D(fake).float().mean()
        adam_step(opt_g, scalers[1], loss_g)
        ema_update(G_ema, G, args.ema_decay)
        state.step += 1
        logger.step(state.step, args.batch_size, loss_d=loss_d.detach(), loss_g=loss_g.detach())
        if args.dry_run:
            break


@torch.no_grad()
def sample_grid(G, z_fixed, path: Path) -> Path:
    """64 samples from the same noise every epoch, so the grids show training progress."""
    images = G.eval()(z_fixed).float().cpu().numpy()  # (64, C, S, S) in [-1, 1]
    return write_png(path, image_grid(images, nrow=8, scale=max(1, 64 // images.shape[-1])))


def main(argv=None):
    args = parse_args(argv)
    rt = setup(args.device, args.precision, args.seed)
    tracker = Tracker(rt)
    tracker.start(vars(args))

    # a GAN has no held-out split: every image is training data
    data = load_images(
        args.data,
        image_size=args.image_size,
        channels=args.channels,
        synthetic_size=args.synthetic_size,
        val_fraction=0.0,
        seed=args.seed,
        device=rt.device,
    )
    x_all = data.x_train
    C = x_all.shape[1]
    ckpt = load_checkpoint(find_checkpoint(args.resume)) if args.resume else None
    g_args = (
        ckpt["model_args"]["G"]
        if ckpt
        else dict(nz=args.nz, ngf=args.ngf, channels=C, image_size=args.image_size)
    )
    d_args = ckpt["model_args"]["D"] if ckpt else dict(ndf=args.ndf, channels=C, image_size=args.image_size)
    raw_g, raw_d = Generator(**g_args).to(rt.device), Discriminator(**d_args).to(rt.device)
    if rt.device.type == "cuda":  # NHWC lets cuDNN use tensor-core convs in bf16/fp16
        raw_g, raw_d = (
            raw_g.to(memory_format=torch.channels_last),
            raw_d.to(memory_format=torch.channels_last),
        )
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    betas = (args.beta1, 0.999)
    # the generator that samples: a moving average of G's weights (see ema_update), not trained
    G_ema = copy.deepcopy(raw_g).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(raw_g.parameters(), lr=args.lr, betas=betas, fused=rt.fused())
    opt_d = torch.optim.Adam(raw_d.parameters(), lr=args.lr, betas=betas, fused=rt.fused())
    scalers = (rt.grad_scaler(), rt.grad_scaler())  # one per player: their losses scale differently
    state = SimpleNamespace(step=0, epoch=0)
    if ckpt:
        raw_g.load_state_dict(ckpt["G"])
        G_ema.load_state_dict(ckpt.get("G_ema", ckpt["G"]))  # older checkpoints had no EMA
        raw_d.load_state_dict(ckpt["D"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        state.step, state.epoch = ckpt["step"], ckpt["epoch"]
    G = wrap_ddp(torch.compile(raw_g) if args.compile else raw_g, rt)
    D = wrap_ddp(torch.compile(raw_d) if args.compile else raw_d, rt)

    epochs = 1 if args.dry_run else args.epochs
    tracker.log_params(
        dict(
            g_params=sum(p.numel() for p in raw_g.parameters()),
            train_size=len(x_all),
            d_params=sum(p.numel() for p in raw_d.parameters()),
            precision_used=rt.precision,
            device_used=str(rt.device),
            world_size=rt.world_size,
            resumed_from_step=state.step,
        )
    )
    logger = MetricLogger(tracker, args.log_interval, "samples", epochs * (len(x_all) // args.batch_size))
    z_fixed = torch.randn(
        64, g_args["nz"], 1, 1, device=rt.device, generator=torch.Generator(rt.device).manual_seed(0)
    )
    tmp = Path(tempfile.mkdtemp(prefix="gan-samples-"))

    def checkpoint():
        if rt.is_main:
            save_checkpoint(
                tracker.artifact_dir() / CHECKPOINT,
                dict(
                    G=raw_g.state_dict(),
                    G_ema=G_ema.state_dict(),
                    D=raw_d.state_dict(),
                    opt_g=opt_g.state_dict(),
                    opt_d=opt_d.state_dict(),
                    step=state.step,
                    epoch=state.epoch,
                    args=vars(args),
                    model_args=dict(G=g_args, D=d_args),
                ),
            )

    try:
        while state.epoch < epochs:
            t0 = time.perf_counter()
            train_one_epoch(G, D, G_ema, opt_g, opt_d, scalers, x_all, rt, args, state, logger)
            state.epoch += 1  # the checkpoint says which epoch to run next
            if rt.is_main:
                grid = sample_grid(G_ema, z_fixed, tmp / f"epoch_{state.epoch:03d}.png")
                tracker.log_artifact(grid, "samples")
            tracker.log_metrics(dict(epoch=state.epoch, epoch_time_s=time.perf_counter() - t0), state.step)
            logger.print(
                f"epoch {state.epoch}: loss_d {logger.last.get('loss_d', float('nan')):.4f} "
                f"loss_g {logger.last.get('loss_g', float('nan')):.4f}"
            )
            checkpoint()
            logger.restart_clock()
    except KeyboardInterrupt:
        checkpoint()  # the interrupted epoch is re-run on resume; the step count carries on
        logger.print(f"interrupted at step {state.step}: checkpoint saved")
        tracker.end("KILLED")
        teardown()
        sys.exit(130)

    tracker.log_model(G_ema.float().eval(), input_example=z_fixed[:4].float().cpu().numpy())
    tracker.end()
    teardown()


if __name__ == "__main__":
    main()
