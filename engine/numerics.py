"""How a job computes: autocast dtype, memory format, CPU threads and compilation, fixed once per run.

    numerics = resolve_numerics(torch.device("cuda:0"), Precision.auto)   # bf16 on an H200
    with numerics.autocast():
        logits = model(numerics.inputs(x))

resolve_numerics gives the defaults without measuring: channels-last on every device (convolutions
run faster in NHWC with oneDNN on the CPU: training step on 2 Zen 4 cores, fp32: resnet18 +6%,
simple_cnn +43%, mobilenet_v3_small +49%; and with cuDNN's tensor cores on a GPU), bf16 on a GPU with
native bf16, else fp32. engine/run.py then lets a short calibration (engine/calibrate.py) replace
them with what measures faster on this machine for this job's model and input size.
Weights and optimiser state stay fp32; only the forward pass is autocast, so bf16 needs no loss
scaling (unlike fp16).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from engine.errors import SpecError
from engine.spec import Precision


@dataclass(frozen=True)
class Numerics:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = plain fp32
    channels_last: bool = True  # memory format of weights and image batches
    threads: int | None = None  # CPU intra-op threads for the run; None leaves torch's
    compile: bool = False  # torch.compile the part of the model that trains

    @property
    def precision(self) -> str:
        """What the run used, for the job record: "bf16" or "fp32"."""
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Image batches in the model's memory format; other tensors as they are."""
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x


def channels_last_inputs(x: torch.Tensor) -> torch.Tensor:
    """Image batches in channels-last (prediction's default layout); other tensors as they are."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def cuda_computes_bf16(device: torch.device) -> bool:
    """Native bf16 (compute capability 8.0+), not the slow emulation older GPUs would fall back to."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_numerics(device: torch.device, precision: Precision | str = Precision.auto) -> Numerics:
    precision = Precision(precision)
    if precision == Precision.fp32 or (precision == Precision.auto and device.type != "cuda"):
        return Numerics(device, None)
    if device.type == "cuda" and not cuda_computes_bf16(device):
        if precision == Precision.auto:
            return Numerics(device, None)
        name = torch.cuda.get_device_name(device)
        raise SpecError(
            "hyperparameters.precision",
            f"bf16 asked for, but {name} has no native bf16 (needs compute capability 8.0+); "
            "use fp32 or auto",
        )
    return Numerics(device, torch.bfloat16)
