"""
Do the GAN's samples look like digits? Train the CNN project's classifier on real digits at the
GAN's resolution, then classify samples from a GAN run's generator and report the share it
recognises confidently (max softmax >= --threshold), the class histogram (mode coverage) and the
same share for held-out real digits as the ceiling.

    python projects/gan/check_samples.py --run-id <gan-run-id>          # in the same store
    python projects/gan/check_samples.py --checkpoint path/to/last.pt

Prints one JSON object; with --log it also logs the numbers as metrics of the GAN run.
"""

import argparse
import importlib.util
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from mlkit.train import find_checkpoint, load_checkpoint
from mlkit.train.data import epoch_batches, load_images, random_shift

HERE = Path(__file__).resolve().parent


def load_module(name: str, path: Path):
    """Import a project's model.py under a name of its own (both projects have one), without
    registering it in sys.modules: this script's imports stay what they were."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_classifier(image_size: int, epochs: int, seed: int):
    """The CNN project's Net and augmentation, trained on 80 % of the digits at the GAN's size."""
    cnn_model = load_module("cnn_model", HERE.parent / "cnn" / "model.py")
    torch.manual_seed(seed)
    data = load_images("digits", image_size=image_size, val_fraction=0.2, seed=seed)
    net = cnn_model.Net(in_channels=1, num_classes=10)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * (len(data.x_train) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        for idx in epoch_batches(len(data.x_train), 64, epoch=epoch, seed=seed):
            x = random_shift(data.x_train[idx], image_size // 8)
            loss = F.cross_entropy(net(x), data.y_train[idx])  # no label smoothing: it caps confidence
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval(), data


@torch.no_grad()
def confident_share(net, images, threshold):
    probs = net(images).softmax(-1)  # (N, 10)
    conf, label = probs.max(-1)
    return (conf >= threshold).float().mean().item(), torch.bincount(label[conf >= threshold], minlength=10)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-id", help="GAN run whose checkpoints/last.pt to sample from")
    p.add_argument("--checkpoint", help="or a checkpoint file")
    p.add_argument("--samples", type=int, default=1000, help="generated images to classify (default: 1000)")
    p.add_argument(
        "--threshold", type=float, default=0.9, help="'confident' = max softmax >= this (default: 0.9)"
    )
    p.add_argument("--classifier-epochs", type=int, default=15, help="(default: 15)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--log", action="store_true", help="also log the results as metrics of --run-id")
    args = p.parse_args(argv)
    if not (args.run_id or args.checkpoint):
        p.error("pass --run-id or --checkpoint")

    ckpt = load_checkpoint(args.checkpoint or find_checkpoint(args.run_id))
    gan_model = load_module("gan_model", HERE / "model.py")
    G = gan_model.Generator(**ckpt["model_args"]["G"])
    G.load_state_dict(ckpt.get("G_ema", ckpt["G"]))  # the moving-average G that train.py samples with
    G.eval()
    size = ckpt["model_args"]["G"]["image_size"]

    net, data = train_classifier(size, args.classifier_epochs, args.seed)
    z = torch.randn(args.samples, G.init_args["nz"], 1, 1, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        fake = G(z).float()
    real_acc = (net(data.x_val).argmax(-1) == data.y_val).float().mean().item()
    real_share, _ = confident_share(net, data.x_val, args.threshold)
    fake_share, hist = confident_share(net, fake, args.threshold)
    result = dict(
        gan_step=ckpt["step"],
        image_size=size,
        samples=args.samples,
        threshold=args.threshold,
        classifier_val_accuracy=round(real_acc, 4),
        real_confident_share=round(real_share, 4),
        gan_confident_share=round(fake_share, 4),
        gan_class_histogram=hist.tolist(),
        gan_classes_covered=int((hist > 0).sum()),
    )
    print(json.dumps(result, indent=2))
    if args.log and args.run_id:
        from mlkit.tracking.store import FileStore

        FileStore().log_metrics(
            args.run_id,
            {
                k: float(result[k])
                for k in ("gan_confident_share", "gan_classes_covered", "real_confident_share")
            },
            step=ckpt["step"],
        )


if __name__ == "__main__":
    main()
