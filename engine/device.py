"""Where to run: one function maps the device setting to a torch.device."""

from __future__ import annotations

import torch

from engine.errors import SpecError


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks CUDA when there is one; cuda / cuda:N are refused when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(
                "device",
                f"{name!r} asked for, but this machine has no CUDA device; use auto or cpu",
            )
        device = torch.device(name if ":" in name else "cuda:0")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SpecError("device", f"{name!r}: allowed cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return device
    raise SpecError("device", f"{name!r} is not one of auto, cpu, cuda, cuda:N")


def synchronize(device: torch.device) -> None:
    """Make host timers honest: CUDA work is asynchronous."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
