"""Which torch device and how many CPU threads a run uses."""

from __future__ import annotations

import os
from collections.abc import Sequence

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


def parse_gpus(text: str) -> list[int]:
    """--gpus '0,2' -> [0, 2]: each GPU id once."""
    try:
        gpus = [int(g) for g in text.split(",")]
    except ValueError:
        raise NasError(f"--gpus {text!r}: give comma-separated GPU ids such as 0,2") from None
    if len(set(gpus)) < len(gpus) or any(g < 0 for g in gpus):
        raise NasError(f"--gpus {text}: give each GPU id (0 or more) once, such as 0,2; workers beyond the GPUs "
                       f"share them with --force-workers")
    return gpus


def training_gpus(device: str, asked: Sequence[int] | None = None) -> list[int]:
    """The GPUs a search's workers train on: `asked` (--gpus), else the one `device` names (cuda:N), else every
    visible GPU when `device` trains on CUDA; [] on the CPU, where asking for GPUs is a one-line error."""
    resolved = resolve_device(device)
    named = ",".join(map(str, asked or []))
    if resolved.type != "cuda":
        if asked:
            raise NasError(f"--gpus {named}: this study trains on the CPU (proxy.train.device: {device}): drop --gpus, "
                           f"or set proxy.train.device to cuda")
        return []
    visible = torch.cuda.device_count()
    if asked is None:
        return [resolved.index] if resolved.index is not None else list(range(visible))
    absent = [g for g in asked if g >= visible]
    if absent:
        raise NasError(f"--gpus {named}: GPU {absent[0]} is not there; this machine shows GPU(s) "
                       f"{', '.join(map(str, range(visible)))}: give ids from those")
    return list(asked)


def worker_device(worker: int, device: str, gpus: Sequence[int]) -> str:
    """Worker i trains on GPU gpus[i mod n], so workers spread over the GPUs instead of sharing the first one;
    on the CPU (no gpus) every worker keeps `device`."""
    return f"cuda:{gpus[worker % len(gpus)]}" if gpus else device
