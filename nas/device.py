"""Which torch device and how many CPU threads a run uses."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence

import torch

from nas.errors import NasError
from nas.validation import InvalidField


def resolve_device(name: str) -> torch.device:
    """auto (cuda when present), cpu, cuda or cuda:N. A GPU asked for but absent is an InvalidField on
    `device`: the command line shows it as --device, a study file's loader names its own field."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidField("device", name, "cpu or auto: this torch build sees no CUDA GPU")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidField("device", name, "auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidField("device", name, f"cuda:0..cuda:{torch.cuda.device_count() - 1}: this machine has "
                                           f"{torch.cuda.device_count()} GPU(s)")
    return device


def default_threads() -> int:
    """The cores this process may run on (its affinity mask, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(asked: int | None) -> int:
    """The threads a CPU run uses: every core this process may run on when `asked` is None, else `asked`
    capped at those cores, said in one line: more threads than cores only spin against each other
    (`nas train --threads 512` on 2 cores started 1,025 threads and had not finished after 120 s)."""
    cores = default_threads()
    if asked is not None and asked > cores:
        _say_capped(asked, cores)
    return cores if asked is None else min(asked, cores)


@functools.cache
def _say_capped(asked: int, cores: int) -> None:
    print(f"threads {asked}: this process may run on {cores} CPU core(s); using {cores} thread(s)", file=sys.stderr)


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
