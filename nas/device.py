"""Which torch device and how many CPU threads a run uses."""

from __future__ import annotations

import os

import torch

from nas.errors import NasError


def resolve_device(name: str) -> torch.device:
    """auto (cuda when present), cpu, cuda or cuda:N; a GPU asked for but absent is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasError(f"device {name} asked for, but this torch build sees no CUDA GPU: use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NasError(f"device {name!r} is not known: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise NasError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s): "
                       f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def default_threads() -> int:
    """The cores this process may run on (its affinity mask, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
