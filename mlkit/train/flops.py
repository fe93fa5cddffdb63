"""Model FLOPs and MFU for the trainers: FLOPs counted once by torch.utils.flop_counter, and the
device's peak for the precision in use.

MFU (model FLOPs utilization) = achieved model FLOP/s / the device's peak FLOP/s. "Model FLOPs"
are what torch.utils.flop_counter.FlopCounterMode counts in one real training step: the matmuls,
convolutions and attention of the forward and backward passes (R1's double backward included),
not the optimizer or elementwise ops. The peak is the vendor's dense (no sparsity) tensor-core
figure for the precision: bf16/fp16, or for fp32 the TF32 figure when PyTorch may use TF32 (its
default for cuDNN convolutions and RNNs), else plain FP32. A device not in the table (a CPU, an
unlisted GPU) gets FLOP/s only: no guessed peak.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import torch

# Dense peak TFLOP/s per GPU, from NVIDIA's data sheets: (name fragment, {precision: TFLOP/s}).
# The first fragment found in torch.cuda.get_device_name() as whole words wins ("L4" is not found in
# "NVIDIA L40"), so the specific ones come first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9}),
    ("H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    ("H100", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 66.9}),  # SXM ("H100 80GB HBM3")
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("L40S", {"bf16": 362.1, "fp16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    ("L40", {"bf16": 181.0, "fp16": 181.0, "tf32": 90.5, "fp32": 90.5}),
    ("L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    ("RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's peak FLOP/s for `precision` (bf16, fp16, fp32), or None when not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = precision
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        key = "tf32"
    peaks = peaks_for(name)
    tflops = peaks.get(key) if peaks else None
    return tflops * 1e12 if tflops else None


def peaks_for(name: str) -> dict[str, float] | None:
    """The table's entry for a device name (whole-word match, first one wins), or None."""
    for fragment, peaks in PEAK_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", name):
            return peaks
    return None


class FlopCounter:
    """Counts the model FLOPs between `start()` and `stop()` (one training step), once.

    The counts per op are torch.utils.flop_counter's own (`flop_registry`: matmuls, convolutions,
    attention, forward and backward), summed by a bare dispatch mode: FlopCounterMode itself also
    tracks modules with backward hooks, which break a double backward (`autograd.grad` on an input,
    the GAN's R1 penalty). cuDNN's and oneDNN's fused LSTM ops, which the registry lacks, count as
    their matmuls: 2 x tokens x the layer weights, twice that for the backward."""

    def __init__(self) -> None:
        self._mode: Any = None
        self._eager: Any = None
        self.total = 0

    def start(self) -> bool:
        """Count from now on; False (nothing counted) where counting would undo torch.compile."""
        # A torch.compile'd model first called under a dispatch mode is never compiled, then or
        # later: dynamo skips its frame for good. So the counted step runs eagerly (set_stance,
        # torch >= 2.6) and the next step compiles; an older torch that has compiled something
        # (dynamo is loaded) gets no count rather than a model that silently stays eager.
        set_stance = getattr(torch.compiler, "set_stance", None)
        if set_stance is None and "torch._dynamo" in sys.modules:
            return False
        # import budget: the dispatch machinery loads only in a trainer that counts FLOPs
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class _Count(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                packet = func._overloadpacket
                if packet in flop_registry:
                    counter.total += int(flop_registry[packet](*args, **kwargs, out_val=out))
                elif packet.__name__ in _RNN_OPS:
                    counter.total += _rnn_flops(packet.__name__, args)
                return out

        self._eager = set_stance("force_eager") if set_stance else None  # in force until stop()
        self._mode = _Count()
        self._mode.__enter__()
        return True

    def stop(self) -> int:
        """The FLOPs counted since start()."""
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(None, None, None)
        eager, self._eager = self._eager, None
        if eager is not None:
            eager.__exit__(None, None, None)  # back to the stance before start()
        return self.total


_RNN_OPS = ("_cudnn_rnn", "_cudnn_rnn_backward", "mkldnn_rnn_layer", "mkldnn_rnn_layer_backward")


def _rnn_flops(name: str, args: tuple) -> int:
    """A fused RNN op's matmul FLOPs: 2 x tokens x its 2-D weights (x2 for the backward)."""
    inp = args[0]  # (T, B, I), (B, T, I), or packed (sum T, I)
    tokens = inp.numel() // max(1, inp.shape[-1])
    if name.startswith("_cudnn_rnn"):
        weights = [w for w in args[1] if w.dim() == 2]  # w_ih, w_hh (and w_hr) of every layer
    else:  # oneDNN: one layer per op, its w_ih and w_hh
        weights = [args[1], args[2]]
    flops = 2 * tokens * sum(w.numel() for w in weights)
    return flops * (2 if name.endswith("_backward") else 1)
