"""Measured inference latency of a real module on a device.

Protocol: eval mode, no grad, a fixed batch of random input, `warmup` untimed runs, then `repeats`
timed runs; report the median and the spread (10th and 90th percentiles). On CPU a fixed thread
count keeps figures comparable across runs; on CUDA, events time the GPU work itself, with one
synchronisation per run.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from nas.builder import build_model
from nas.errors import NasError
from nas.proxy import default_threads, resolve_device
from nas.spec import NetworkSpec


@dataclass(frozen=True)
class LatencySettings:
    device: str = "cpu"
    batch_size: int = 1
    warmup: int = 5
    repeats: int = 20
    threads: int | None = None        # CPU only; default all cores
    channels_last: bool = True

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("warmup", 0), ("repeats", 3)):
            if getattr(self, name) < low:
                raise NasError(f"latency setting {name} is {getattr(self, name)}: must be >= {low}")


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


@torch.no_grad()
def measure_module(model: nn.Module, input_shape: tuple[int, int, int], settings: LatencySettings) -> Latency:
    """Latency of `model` on a batch of `input_shape` (C, H, W) images."""
    device = resolve_device(settings.device)
    if device.type == "cpu":
        torch.set_num_threads(settings.threads or default_threads())
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    model = model.eval().to(device, memory_format=fmt)
    x = torch.randn(settings.batch_size, *input_shape, device=device).contiguous(memory_format=fmt)
    for _ in range(settings.warmup):
        model(x)
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(settings.repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(settings.repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return Latency(median_ms=statistics.median(times), p10_ms=_quantile(times, 0.1), p90_ms=_quantile(times, 0.9),
                   batch_size=settings.batch_size, device=str(device))


@functools.lru_cache(maxsize=256)
def measure_spec(spec: NetworkSpec, settings: LatencySettings, resolution: int | None = None, in_channels: int = 3,
                 num_classes: int = 1000) -> Latency:
    """Latency of a freshly built network (weights do not change timing). Cached per spec and resolution."""
    torch.manual_seed(0)
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels)
    res = resolution or spec.resolution
    return measure_module(model, (in_channels, res, res), settings)
