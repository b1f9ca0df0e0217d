"""Timing a module on a device: the protocol, and the per-process measurement cache of whole networks.

Every measurement times several modules interleaved, in shuffled rounds (`_times_ms`), while no other nas
process on this machine trains (nas.sharing); docs/latency.md has the protocol and why.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from nas import sharing
from nas.builder import build_model
from nas.config import LATENCY_ADDED, LatencySettings, no_cuda_graph_on
from nas.console import counting
from nas.device import cpu_threads, resolve_device
from nas.flops import flops_at, params_of
from nas.latency.pieces import Piece
from nas.latency.runtimes import prepared_run
from nas.memory import require_batch_memory
from nas.spec import NetworkSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    device: str

    @property
    def spread(self) -> float:
        """Relative width of the 10-90 % band: how noisy the median is."""
        return (self.p90_ms - self.p10_ms) / self.median_ms


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


@functools.cache
def _steady_allocator() -> None:
    """Make CPU timings independent of what the process ran before. glibc's malloc raises its mmap
    threshold as large blocks are freed and trims the heap top, so activation buffers cost page faults on
    every run or on none depending on history: one B0 variant measured 9.4 ms first in a process and 7.4 ms
    after five other networks. Fixed thresholds (32 MiB, glibc's largest; trim at 1 GiB) keep freed
    activations in the heap, as a long-running server would. A no-op where libc has no mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def _host_ms(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1e3


def _cuda_ms(run: Callable[[], object]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


PROGRESS_EVERY_S = 30.0
"""Plain progress lines of a measurement (not on a terminal): at most this often."""


def _times_ms(runs: Sequence[Callable[[], object]], settings: LatencySettings, device: torch.device,
              progress: Progress | None = None) -> list[list[float]]:
    """`repeats` timed runs of each callable after `warmup` untimed ones, interleaved: each round times every
    callable once, in a new (seeded) order, so that no callable always runs after the same one or at the same
    point of a round. A burst of load on a shared machine then costs each network a few of its runs, which
    its median drops, instead of all the runs of whichever network was being timed (measured one after the
    other, a two-second burst moved single networks' medians by tens of per cent; docs/latency.md). On CPU
    the host's wall time is right, as the work is done when the call returns; on CUDA events time the GPU
    work itself, without host-side launch gaps."""
    for run in runs:
        for _ in range(settings.warmup):
            run()
    timed = _cuda_ms if device.type == "cuda" else _host_ms
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times: list[list[float]] = [[] for _ in runs]
    order, shuffle = list(range(len(runs))), random.Random(0).shuffle
    with counting(progress, settings.repeats, "rounds", lines_every=PROGRESS_EVERY_S) as rounds:
        for _ in range(settings.repeats):
            shuffle(order)
            for i in order:
                times[i].append(timed(runs[i]))
            rounds.advance()
    return times


def measure_module(model: nn.Module, input_shape: tuple[int, int, int], settings: LatencySettings) -> Latency:
    """Latency of `model` on a batch of `input_shape` (C, H, W) images, timed while no other nas process
    on this machine trains (nas.sharing)."""
    return measure_modules([model], [input_shape], settings)[0]


@torch.no_grad()
def measure_modules(models: Sequence[nn.Module], input_shapes: Sequence[tuple[int, int, int]],
                    settings: LatencySettings, progress: Progress | None = None) -> list[Latency]:
    """Latencies of several modules, each on its own input shape, timed interleaved (`_times_ms`)."""
    with sharing.measuring():
        return _measure_modules(models, input_shapes, settings, progress)


def _device(settings: LatencySettings) -> torch.device:
    """The device measured on; `auto` may resolve to one a CUDA graph cannot run on."""
    device = resolve_device(settings.device)
    if settings.cuda_graph and device.type != "cuda":
        raise no_cuda_graph_on(str(device))
    return device


def _measure_modules(models: Sequence[nn.Module], input_shapes: Sequence[tuple[int, int, int]],
                     settings: LatencySettings, progress: Progress | None = None) -> list[Latency]:
    """The protocol itself: each module prepared as its runtime runs it (nas.latency.runtimes), all timed
    interleaved, each reduced to its median and 10-90 % band."""
    device = _device(settings)
    threads = cpu_threads(settings.threads)
    if device.type == "cpu":
        torch.set_num_threads(threads)
        _steady_allocator()
    runs = [prepared_run(model, shape, settings, device, threads)
            for model, shape in zip(models, input_shapes, strict=True)]
    out = []
    for times in _times_ms(runs, settings, device, progress):
        times.sort()
        out.append(Latency(median_ms=statistics.median(times), p10_ms=_quantile(times, 0.1),
                           p90_ms=_quantile(times, 0.9), batch_size=settings.batch_size, device=str(device)))
    return out


_MEASURED: dict[tuple[NetworkSpec, LatencySettings, int, int, int], Latency] = {}
MEASURED_KEPT = 256
"""Network latencies kept per process (a search asks for the same network again: the base, a grid twin)."""


def measure_specs(specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
                  in_channels: int = 3, num_classes: int = 1000, progress: Progress | None = None) -> list[Latency]:
    """Latencies of freshly built networks (weights do not change timing), those not measured before in this
    process timed together, interleaved (a progress line says how many). Kept per spec, settings and resolution."""
    return measure_pieces_and_networks((), specs, settings, resolution, in_channels, num_classes, progress)[1]


def measure_pieces_and_networks(parts: Sequence[Piece], specs: Sequence[NetworkSpec], settings: LatencySettings,
                                resolution: int | None = None, in_channels: int = 3, num_classes: int = 1000,
                                progress: Progress | None = None) -> tuple[list[Latency], list[Latency]]:
    """Latencies of table pieces and of whole networks, all timed in one interleaved measurement, so that a
    drift of the machine's speed while it runs reaches every figure alike (a calibration then absorbs it).
    Networks measured before in this process are not timed again; those timed here are kept."""
    keys = [(spec, settings, resolution or spec.resolution, in_channels, num_classes) for spec in specs]
    todo = [k for k in dict.fromkeys(keys) if k not in _MEASURED]
    if not (todo or parts):
        return [], [_MEASURED[k] for k in keys]
    if progress:
        sides = sorted({k[2] for k in todo} | {p.resolution for p in parts})
        shown = f"{sides[0]}" if len(sides) == 1 else f"{sides[0]}-{sides[-1]}"
        what = " and ".join(f"{n} {noun}" for n, noun in ((len(parts), "pieces"), (len(todo), "networks")) if n)
        progress(f"measuring {what} at {shown} px: {settings.repeats} rounds, each timing every one once")
    for spec, _, side, c, _ in todo:
        require_batch_memory(spec, side, settings.batch_size, False, c)
    torch.manual_seed(0)
    models = [p.module() for p in parts]
    for spec, _, _, c, n in todo:
        torch.manual_seed(0)
        models.append(build_model(spec, num_classes=n, in_channels=c))
    shapes = [(p.in_channels, p.resolution, p.resolution) for p in parts] + [(k[3], k[2], k[2]) for k in todo]
    timed = measure_modules(models, shapes, settings, progress)
    for key, lat in zip(todo, timed[len(parts):]):
        while len(_MEASURED) >= MEASURED_KEPT:
            del _MEASURED[next(iter(_MEASURED))]      # the oldest
        _MEASURED[key] = lat
    return timed[:len(parts)], [_MEASURED[k] for k in keys]


def measure_spec(spec: NetworkSpec, settings: LatencySettings, resolution: int | None = None, in_channels: int = 3,
                 num_classes: int = 1000) -> Latency:
    """Latency of a freshly built network (measure_specs of one)."""
    return measure_specs([spec], settings, resolution, in_channels, num_classes)[0]


def forget_measurements() -> None:
    """Drop the kept latencies: the next request times again."""
    _MEASURED.clear()


def _hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measurement_conditions(settings: LatencySettings) -> dict[str, Any]:
    """Everything besides the network that a latency depends on: two figures compare only when these agree.
    Resolving the device here is also what rejects cuda on a machine without a GPU, before any work."""
    device = _device(settings)
    added = {k: getattr(settings, k) for k in LATENCY_ADDED if getattr(settings, k) != getattr(LatencySettings, k)}
    return {"device": str(device), "hardware": _hardware_name(device), "runtime": settings.runtime,
            "batch_size": settings.batch_size, "channels_last": settings.channels_last,
            "threads": cpu_threads(settings.threads) if device.type == "cpu" else None, **added}


def measure_networks(specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
                     in_channels: int = 3, num_classes: int = 1000, progress: Progress | None = None) -> pd.DataFrame:
    """One row per network: its size next to its measured median and spread, and the conditions measured."""
    cond = measurement_conditions(settings)
    rows = []
    for spec, lat in zip(specs, measure_specs(specs, settings, resolution, in_channels, num_classes, progress)):
        res = resolution or spec.resolution
        rows.append({
            "name": spec.name, "resolution": res, "params": params_of(spec, in_channels, num_classes),
            "gflops": round(flops_at(spec, res, in_channels, num_classes) / 1e9, 4),
            "median_ms": round(lat.median_ms, 3), "p10_ms": round(lat.p10_ms, 3), "p90_ms": round(lat.p90_ms, 3),
            "spread": round(lat.spread, 3), "device": cond["device"], "threads": cond["threads"],
            "batch": settings.batch_size, "runtime": settings.runtime, "precision": settings.precision,
            "cuda_graph": settings.cuda_graph,
        })
    return pd.DataFrame(rows)
