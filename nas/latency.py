"""Measured inference latency of a real module on a device, and a per-block lookup table that predicts it.

Protocol: eval mode, no grad, a fixed batch of random input, `warmup` untimed runs, then `repeats`
timed runs; report the median and the spread (10th and 90th percentiles). On CPU a fixed thread
count keeps figures comparable across runs; on CUDA, events time the GPU work itself, with one
synchronisation per run. With `runtime="onnxruntime"` the module is exported to ONNX (opset 17) and
the same protocol times an ONNX Runtime CPU session instead of eager PyTorch. `precision` and
`cuda_graph` time a model as it is served: in bf16, and replayed from a captured CUDA graph.

The lookup table (`LatencyTable`) times each distinct piece of a network (stem, every block, head)
once, alone, on an input of the shape it sees inside the network, and predicts a network's latency from
the sum of its pieces: a network is then costed without being built or run. The sum ignores what happens
between blocks (cache reuse, operator fusion, per-call overhead); a calibration fitted on whole networks
corrects it, and `evaluate_table` measures what is left on networks the table never saw.
docs/latency.md has the protocol and figures.
"""

from __future__ import annotations

import bisect
import ctypes
import dataclasses
import functools
import importlib
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from nas import sharing
from nas.blocks import BLOCKS, conv_bn_act
from nas.builder import build_model
from nas.config import LATENCY_ADDED, LatencySettings, no_cuda_graph_on
from nas.device import default_threads, resolve_device
from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.scaling import scale
from nas.spec import BlockSpec, NetworkSpec

ONNX_OPSET = 17
TABLE_FORMAT = "effnas-latency-table/1"

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
"""A measurement longer than this says which round it is in, about this often."""


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
    shown = time.monotonic()
    for k in range(1, settings.repeats + 1):
        shuffle(order)
        for i in order:
            times[i].append(timed(runs[i]))
        if progress and k < settings.repeats and time.monotonic() - shown >= PROGRESS_EVERY_S:
            progress(f"  round {k}/{settings.repeats} done")
            shown = time.monotonic()
    return times


def _import_optional(name: str, fix: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise NasError(fix) from None


def _onnxruntime_run(model: nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """One inference of `model` as an ONNX Runtime CPU session. The TorchScript exporter (dynamo=False)
    is used because it writes opset 17 directly and needs only the onnx package; the newer exporter
    also needs onnxscript and cannot convert these graphs down to 17."""
    ort = _import_optional("onnxruntime", "runtime onnxruntime is not installed: pip install onnxruntime, "
                                          "or use --runtime torch")
    _import_optional("onnx", "runtime onnxruntime exports through torch.onnx, which needs the onnx package: "
                             "pip install onnx, or use --runtime torch")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        path = str(Path(tmp) / "model.onnx")
        torch.onnx.export(model, (x,), path, opset_version=ONNX_OPSET, dynamo=False)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


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


def _cuda_graph_run(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The forward captured once as a CUDA graph, replayed on the same static input: how a server that
    captures its model runs it, without the host launching each kernel. Warm-up runs on a side stream
    first, as capture requires (cuDNN picks its algorithms there, not inside the graph)."""
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    return graph.replay


def _device(settings: LatencySettings) -> torch.device:
    """The device measured on; `auto` may resolve to one a CUDA graph cannot run on."""
    device = resolve_device(settings.device)
    if settings.cuda_graph and device.type != "cuda":
        raise no_cuda_graph_on(str(device))
    return device


def _measure_modules(models: Sequence[nn.Module], input_shapes: Sequence[tuple[int, int, int]],
                     settings: LatencySettings, progress: Progress | None = None) -> list[Latency]:
    device = _device(settings)
    threads = settings.threads or default_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
        _steady_allocator()
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    runs = []
    for model, shape in zip(models, input_shapes, strict=True):
        if settings.runtime == "onnxruntime":
            runs.append(_onnxruntime_run(model.eval().cpu(), torch.randn(settings.batch_size, *shape), threads))
            continue
        # Module.to accepts memory_format at runtime; torch's stubs leave it out.
        model = cast(Callable[..., nn.Module], model.eval().to)(device, dtype, memory_format=fmt)
        x = torch.randn(settings.batch_size, *shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        runs.append(_cuda_graph_run(model, x) if settings.cuda_graph else functools.partial(model, x))
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
            "threads": (settings.threads or default_threads()) if device.type == "cpu" else None, **added}


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


# ----------------------------------------------------------------------------------- lookup table

@dataclass(frozen=True)
class Piece:
    """One separately timed part of a network, keyed by exactly what its latency depends on.

    `kind` is "stem", "head" (1x1 conv, pooling and classifier) or a block type; `resolution` is the
    side of the input the piece sees inside the network. Stochastic depth and dropout are absent: they
    do nothing at inference.
    """

    kind: str
    in_channels: int
    out_channels: int
    resolution: int
    activation: str
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    se: float = 0.0
    num_classes: int = 0

    def module(self) -> nn.Module:
        act = self.activation
        if self.kind == "stem":
            return conv_bn_act(self.in_channels, self.out_channels, self.kernel, self.stride, act=act)
        if self.kind == "head":
            return nn.Sequential(conv_bn_act(self.in_channels, self.out_channels, 1, act=act),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(self.out_channels, self.num_classes))
        return BLOCKS[self.kind](BlockSpec(block=self.kind, in_channels=self.in_channels,
                                           out_channels=self.out_channels, expand=self.expand, kernel=self.kernel,
                                           stride=self.stride, se=self.se, drop_connect=0.0, stage=0), act)

    def __str__(self) -> str:
        shape = f"{self.kind} {self.in_channels}->{self.out_channels} k{self.kernel} s{self.stride}"
        if self.kind not in ("stem", "head"):
            shape += f" e{self.expand} se{self.se:g}"
        return f"{shape} at {self.resolution} px"


def pieces(spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
           num_classes: int = 1000) -> tuple[Piece, ...]:
    """The network as the builder lays it out, each piece at the input side it sees there: a stride-s
    convolution padded by k // 2 maps side n to ceil(n / s), and these compose, so every block of a
    stage outputs side ceil(r / the stage's total stride), read from `NetworkSpec.stage_strides`."""
    r, act, stage_strides = resolution or spec.resolution, spec.activation, spec.stage_strides
    out = [Piece("stem", in_channels, spec.stem_channels, r, act, kernel=3, stride=spec.stem_stride)]
    side, blocks = math.ceil(r / spec.stem_stride), spec.blocks()
    for b in blocks:
        out.append(Piece(b.block, b.in_channels, b.out_channels, side, act, b.kernel, b.stride, b.expand, b.se))
        side = math.ceil(r / stage_strides[b.stage])
    out.append(Piece("head", blocks[-1].out_channels, spec.head_channels, side, act, num_classes=num_classes))
    return tuple(out)


@dataclass(frozen=True)
class Calibration:
    """A whole network's latency from its pieces: scale * (sum of the pieces' medians) + per_piece_ms * pieces.

    A piece timed alone, over and over, finds its weights and input in cache and runs without the network's
    forward around it, so the plain sum runs low by a near-constant fraction (13-15 % on this CPU,
    docs/latency.md) plus a little per piece. Fitted on whole networks measured beside the table; the
    identity until then."""

    scale: float = 1.0
    per_piece_ms: float = 0.0
    networks: int = 0               # whole networks it was fitted on (0: not calibrated)

    def apply(self, pieces_ms: float, count: int) -> float:
        return self.scale * pieces_ms + self.per_piece_ms * count


def fit_calibration(pieces_ms: Sequence[float], counts: Sequence[int], measured_ms: Sequence[float]) -> Calibration:
    """Least squares on relative error, so that a small network weighs as much as a large one. A piece cannot
    save time by being in a network: when the fit says it does (noisy timings trade the two terms against
    each other, as the sums grow with the pieces), the scale alone is fitted, which is the constrained optimum."""
    measured = np.asarray(measured_ms, dtype=float)
    design = np.stack([np.asarray(pieces_ms, dtype=float), np.asarray(counts, dtype=float)], axis=1)
    relative = design / measured[:, None]
    (scale_, per_piece), *_ = np.linalg.lstsq(relative, np.ones_like(measured), rcond=None)
    if per_piece < 0:
        (scale_,), *_ = np.linalg.lstsq(relative[:, :1], np.ones_like(measured), rcond=None)
        per_piece = 0.0
    return Calibration(scale=float(scale_), per_piece_ms=float(per_piece), networks=len(measured))


_UNTIMED = Latency(median_ms=math.nan, p10_ms=math.nan, p90_ms=math.nan, batch_size=0, device="")
"""Stands for a piece about to be timed (LatencyTable.unknown); never stored in a table."""

MAX_INTERPOLATION_RATIO = 2
"""A piece's latency is interpolated only between timed sides at most this far apart."""


@dataclass
class LatencyTable:
    """Per-piece latencies on one device under one set of conditions; `built_from` records the sample,
    `calibration` maps sums of pieces to whole networks, `held_out` is its error on networks it never saw."""

    settings: LatencySettings
    conditions: dict[str, Any]
    torch_version: str
    entries: dict[Piece, Latency] = dataclasses.field(default_factory=dict)
    built_from: dict[str, Any] = dataclasses.field(default_factory=dict)
    calibration: Calibration = Calibration()
    held_out: dict[str, Any] = dataclasses.field(default_factory=dict)
    _sides: dict[Piece, list[tuple[int, float]]] | None = dataclasses.field(default=None, init=False, repr=False,
                                                                            compare=False)

    def check(self, settings: LatencySettings) -> None:
        """Refuse to compare against figures taken on other hardware or under other conditions."""
        ours = measurement_conditions(settings)
        for key, value in self.conditions.items():
            if ours.get(key) != value:
                raise NasError(f"the latency table was measured with {key} {value}, but this measurement has "
                               f"{key} {ours.get(key)}: build a table here with nas latency table build")

    def piece_ms(self, piece: Piece) -> float | None:
        """A piece's median: timed, or interpolated in area between the nearest timed sides of the same piece
        (at most MAX_INTERPOLATION_RATIO apart; never extrapolated). Latency grows with the map's area, so a
        table timed on a ladder of resolutions also predicts the resolutions between its rungs."""
        if piece in self.entries:
            return self.entries[piece].median_ms
        if self._sides is None:
            self._sides = {}
            for p, lat in sorted(self.entries.items(), key=lambda e: e[0].resolution):
                self._sides.setdefault(dataclasses.replace(p, resolution=0), []).append((p.resolution, lat.median_ms))
        sides = self._sides.get(dataclasses.replace(piece, resolution=0), [])
        i = bisect.bisect(sides, (piece.resolution, -math.inf))
        if 0 < i < len(sides) and sides[i][0] <= MAX_INTERPOLATION_RATIO * sides[i - 1][0]:
            (lo, lo_ms), (hi, hi_ms) = sides[i - 1], sides[i]
            return lo_ms + (hi_ms - lo_ms) * (piece.resolution ** 2 - lo ** 2) / (hi ** 2 - lo ** 2)
        return None

    def missing(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> list[Piece]:
        return [p for p in dict.fromkeys(pieces(spec, resolution, in_channels, num_classes)) if self.piece_ms(p) is None]

    def unknown(self, specs: Sequence[NetworkSpec], resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> list[list[Piece]]:
        """Per network, the pieces `extend` would time for `specs` one after another: those the table, grown by
        the pieces of the networks before, can neither look up nor interpolate. Nothing is timed."""
        grown = dataclasses.replace(self, entries=dict(self.entries))
        new = []
        for spec in specs:
            new.append(grown.missing(spec, resolution, in_channels, num_classes))
            grown.entries.update(dict.fromkeys(new[-1], _UNTIMED))    # only their presence matters here
            grown._sides = None
        return new

    def extend(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3, num_classes: int = 1000,
               progress: Progress | None = None) -> int:
        """Time the pieces of `spec` the table can neither look up nor interpolate, each once; return how many."""
        new = self.missing(spec, resolution, in_channels, num_classes)
        if not new:
            return 0
        self.check(self.settings)
        if progress:
            progress(f"table: {spec.name}: timing {len(new)} new pieces ({len(self.entries)} known)")
        self.add(new, measure_pieces_and_networks(new, (), self.settings)[0])
        return len(new)

    def add(self, parts: Sequence[Piece], timed: Sequence[Latency]) -> None:
        self.entries.update(zip(parts, timed, strict=True))
        self._sides = None

    def grow(self, specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
             in_channels: int = 3, num_classes: int = 1000, whole: bool = False,
             progress: Progress | None = None) -> tuple[list[list[Piece]], list[Latency]]:
        """Time the pieces of `specs` the table lacks (with `whole`, in one measurement with the networks
        themselves) and add them: (the new pieces per network, the networks' latencies, or none)."""
        new = self.unknown(specs, resolution, in_channels, num_classes)
        parts = _flat(new)
        timed, networks = measure_pieces_and_networks(parts, specs if whole else (), settings, resolution,
                                                      in_channels, num_classes, progress)
        self.add(parts, timed)
        return new, networks

    def sum_ms(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
               num_classes: int = 1000) -> float:
        """The uncalibrated prediction: the sum of the pieces' medians, repeated blocks counted each time."""
        missing = self.missing(spec, resolution, in_channels, num_classes)
        if missing:
            raise NasError(f"the latency table has no entry for {len(missing)} pieces of {spec.name} (first: "
                           f"{missing[0]}): extend it with networks like this one (nas latency table build)")
        return sum(cast(float, self.piece_ms(p)) for p in pieces(spec, resolution, in_channels, num_classes))

    def predict(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> float:
        """Predicted median latency in ms: the calibrated sum of the pieces. Never runs anything: a piece the
        table lacks is an error (extend the table, or let evaluate_table measure it)."""
        return self.calibration.apply(self.sum_ms(spec, resolution, in_channels, num_classes),
                                      len(pieces(spec, resolution, in_channels, num_classes)))

    def describe(self, path: str | Path) -> str:
        """One line: what the table holds and how far off it was on networks it never saw."""
        c, h = self.calibration, self.held_out
        calibrated = (f"calibrated on {c.networks} networks ({c.scale:.3f} x the sum + {c.per_piece_ms:.3f} ms a "
                      f"piece)" if c.networks else "not calibrated")
        error = (f"error on {h['networks']} held-out networks: {h['within_10_pct']:.0f} % within 10 %, p90 "
                 f"{h['p90_abs_error_pct']:.1f} %, Spearman rho {h['spearman']:.3f}" if h
                 else "never evaluated on held-out networks")
        return f"latency table {path}: {len(self.entries)} pieces, {calibrated}; {error}"

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "torch": self.torch_version, "conditions": self.conditions,
                "settings": asdict(self.settings), "built_from": self.built_from,
                "calibration": asdict(self.calibration), "held_out": self.held_out,
                "entries": [{**asdict(p), "median_ms": lat.median_ms, "p10_ms": lat.p10_ms, "p90_ms": lat.p90_ms}
                            for p, lat in self.entries.items()]}

    def save(self, path: str | Path) -> Path:
        """Written whole to a temporary file and renamed over `path`, so a reader never sees half a table."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        if not path.is_file():
            raise NasError(f"latency table {path} does not exist: build one with nas latency table build --out {path}")
        fix = "rebuild it with nas latency table build"
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise NasError(f"{path}: not a readable JSON latency table ({e}): {fix}") from None
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT:
            raise NasError(f"{path}: not a latency table (no format '{TABLE_FORMAT}'): {fix}")
        try:
            settings = LatencySettings(**d["settings"])
            device = d["conditions"]["device"]
            names = [f.name for f in dataclasses.fields(Piece)]
            entries = {Piece(**{k: e[k] for k in names}): Latency(e["median_ms"], e["p10_ms"], e["p90_ms"],
                                                                 settings.batch_size, device)
                       for e in d["entries"]}
            return cls(settings=settings, conditions=dict(d["conditions"]), torch_version=d["torch"],
                       entries=entries, built_from=dict(d.get("built_from", {})),
                       calibration=Calibration(**d.get("calibration", {})), held_out=dict(d.get("held_out", {})))
        except (KeyError, TypeError, AttributeError, ValueError, NasError) as e:
            raise NasError(f"{path}: latency table is incomplete or damaged ({type(e).__name__}: {e}): {fix}") from None


def _flat(per_network: Sequence[Sequence[Piece]]) -> list[Piece]:
    return [p for ps in per_network for p in ps]


def build_table(specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
                in_channels: int = 3, num_classes: int = 1000, progress: Progress | None = None,
                built_from: dict[str, Any] | None = None) -> LatencyTable:
    """A table holding every distinct piece of `specs`, all timed in one measurement (built once, reused by `load`)."""
    table = LatencyTable(settings=settings, conditions=measurement_conditions(settings),
                         torch_version=torch.__version__, built_from=dict(built_from or {}))
    table.grow(specs, settings, resolution, in_channels, num_classes, progress=progress)
    return table


# ----------------------------------------------------------------------------- accuracy of the table

SAMPLE_WIDTHS = (0.5, 0.75, 1.0)
SAMPLE_DEPTHS = (0.5, 1.0)
SAMPLE_KERNELS = (3, 5)
SAMPLE_EXPANDS = (4, 6)


def sample_networks(base: NetworkSpec, n: int, seed: int = 0, resolution: int | None = None) -> list[NetworkSpec]:
    """`n` varied members of `base`'s space, the same for the same seed: a width and depth multiplier, and
    per stage a kernel and (for stages that expand) an expansion ratio."""
    if n < 1:
        raise NasError(f"sample size is {n}: must be >= 1")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        width, depth = rng.choice(SAMPLE_WIDTHS), rng.choice(SAMPLE_DEPTHS)
        stages = tuple(dataclasses.replace(st, kernel=rng.choice(SAMPLE_KERNELS),
                                           expand=rng.choice(SAMPLE_EXPANDS) if st.expand > 1 else 1)
                       for st in base.stages)
        out.append(scale(base.replace(stages=stages), width, depth, resolution or base.resolution,
                         name=f"{base.name}-s{seed}n{i}-w{width:g}-d{depth:g}"))
    return out


def check_sample_size(n: int, what: str = "evaluating a latency table", option: str = "--samples") -> None:
    """A rank correlation, or a fit of two coefficients, over fewer than 3 networks says nothing."""
    if n < 3:
        raise NasError(f"{what} needs at least 3 networks, got {n}: use {option} 3 or more")


@dataclass(frozen=True)
class TableAccuracy:
    """Prediction against measurement over a sample of networks; `raw_*` judge the uncalibrated sums."""

    rows: pd.DataFrame
    mean_abs_error_pct: float
    max_abs_error_pct: float
    p90_abs_error_pct: float    # 90 % of the networks are predicted at least this well
    within_10_pct: float        # share of the networks predicted within 10 %, in per cent
    bias_pct: float             # mean signed error: > 0 when the table over-predicts
    spearman: float             # rank correlation of predicted and measured medians
    raw_mean_abs_error_pct: float
    raw_bias_pct: float

    def summary(self) -> str:
        return (f"{len(self.rows)} networks: {self.within_10_pct:.0f} % within 10 %, p90 abs error "
                f"{self.p90_abs_error_pct:.1f} %, mean abs error {self.mean_abs_error_pct:.1f} %, max "
                f"{self.max_abs_error_pct:.1f} %, bias {self.bias_pct:+.1f} %, Spearman rho {self.spearman:.3f} "
                f"(uncalibrated sums: mean abs error {self.raw_mean_abs_error_pct:.1f} %, bias "
                f"{self.raw_bias_pct:+.1f} %)")

    def to_dict(self) -> dict[str, Any]:
        return {"networks": len(self.rows), "within_10_pct": round(self.within_10_pct, 1),
                "p90_abs_error_pct": round(self.p90_abs_error_pct, 2),
                "mean_abs_error_pct": round(self.mean_abs_error_pct, 2),
                "max_abs_error_pct": round(self.max_abs_error_pct, 2), "bias_pct": round(self.bias_pct, 2),
                "spearman": round(self.spearman, 4), "raw_mean_abs_error_pct": round(self.raw_mean_abs_error_pct, 2),
                "raw_bias_pct": round(self.raw_bias_pct, 2)}


def evaluate_table(table: LatencyTable, specs: Sequence[NetworkSpec], settings: LatencySettings | None = None,
                   resolution: int | None = None, in_channels: int = 3, num_classes: int = 1000,
                   progress: Progress | None = None) -> TableAccuracy:
    """Measure each network whole and compare with the table's prediction.

    Pieces the table lacks are timed in the same measurement as the networks and added to `table`
    (`new_pieces` counts them per network), so every prediction is a pure lookup; `settings` (default: the
    table's) must match its conditions.
    Spearman's rho is the Pearson correlation of the ranks: what a search that only orders candidates needs.
    """
    settings = settings or table.settings
    table.check(settings)
    check_sample_size(len(specs))
    new, _ = table.grow(specs, settings, resolution, in_channels, num_classes, whole=True, progress=progress)
    rows = measure_networks(specs, settings, resolution, in_channels, num_classes, progress)
    rows["sum_ms"] = [round(table.sum_ms(s, resolution, in_channels, num_classes), 3) for s in specs]
    rows["predicted_ms"] = [round(table.predict(s, resolution, in_channels, num_classes), 3) for s in specs]
    error = 100 * (rows["predicted_ms"] - rows["median_ms"]) / rows["median_ms"]
    raw = 100 * (rows["sum_ms"] - rows["median_ms"]) / rows["median_ms"]
    rows["error_pct"] = error.round(1)
    rows["new_pieces"] = [len(n) for n in new]
    rows = rows[["name", "resolution", "gflops", "median_ms", "p10_ms", "p90_ms", "sum_ms", "predicted_ms",
                 "error_pct", "new_pieces"]]
    return TableAccuracy(rows=rows, mean_abs_error_pct=float(error.abs().mean()),
                         max_abs_error_pct=float(error.abs().max()),
                         p90_abs_error_pct=float(error.abs().quantile(0.9)),
                         within_10_pct=float(100 * (error.abs() <= 10).mean()), bias_pct=float(error.mean()),
                         spearman=float(rows["median_ms"].rank().corr(rows["predicted_ms"].rank())),
                         raw_mean_abs_error_pct=float(raw.abs().mean()), raw_bias_pct=float(raw.mean()))


def calibrate(table: LatencyTable, specs: Sequence[NetworkSpec], resolution: int | None = None, in_channels: int = 3,
              num_classes: int = 1000, progress: Progress | None = None) -> None:
    """Fit `table.calibration` on whole networks. Their pieces the table lacks are timed with them, in one
    measurement, and kept: calibrating is part of building."""
    check_sample_size(len(specs), "calibrating a latency table", "--calibration")
    _, measured = table.grow(specs, table.settings, resolution, in_channels, num_classes, whole=True,
                             progress=progress)
    table.calibration = fit_calibration([table.sum_ms(s, resolution, in_channels, num_classes) for s in specs],
                                        [len(pieces(s, resolution, in_channels, num_classes)) for s in specs],
                                        [m.median_ms for m in measured])


def build_calibrated_table(build: Sequence[NetworkSpec], calibration: Sequence[NetworkSpec],
                           held_out: Sequence[NetworkSpec], settings: LatencySettings, built_from: dict[str, Any],
                           resolution: int | None = None, progress: Progress | None = None,
                           ) -> tuple[LatencyTable, TableAccuracy]:
    """Time every piece of `build` and `calibration`, calibrate on `calibration` networks timed whole, and judge
    the result on `held_out` networks, none of them used before. Pieces only the held-out networks have are
    kept on a copy, so the table holds exactly the build and calibration networks' pieces; the held-out error
    is stored with it (`held_out`) and shown wherever the table is used.

    Every piece and every whole network is timed in one interleaved measurement: this machine's speed drifts
    by 10 % and more between measurements a minute apart (docs/latency.md), so pieces timed before the
    networks, or one network's pieces before another's, would judge the table on that drift as much as on
    how well pieces add up to a network."""
    table = LatencyTable(settings=settings, conditions=measurement_conditions(settings),
                         torch_version=torch.__version__, built_from=dict(built_from))
    per_network = table.unknown([*build, *calibration, *held_out], resolution)
    parts, own = _flat(per_network), len(_flat(per_network[:len(build) + len(calibration)]))  # the rest: held-out's
    timed, _ = measure_pieces_and_networks(parts, [*calibration, *held_out], settings, resolution, progress=progress)
    table.add(parts[:own], timed[:own])
    calibrate(table, calibration, resolution, progress=progress)      # nothing left to time: a fit on those figures
    if progress:
        progress(f"table: {len(table.entries)} pieces, calibrated on {len(calibration)} networks; evaluating on "
                 f"{len(held_out)} held-out networks")
    judge = dataclasses.replace(table, entries=dict(table.entries))
    judge.add(parts[own:], timed[own:])
    accuracy = evaluate_table(judge, held_out, resolution=resolution, progress=progress)
    table.held_out = accuracy.to_dict()
    return table, accuracy


def build_and_evaluate(space: str | None, resolution: int | None, samples: int, seed: int, settings: LatencySettings,
                       out: str | Path, calibration: int = 12, held_out: int | None = None,
                       progress: Progress | None = None) -> tuple[LatencyTable, TableAccuracy]:
    """Build a table from `samples` seeded networks of `space` (seed), calibrate it on `calibration` others
    (seed + 1), evaluate it on `held_out` more (seed + 2; default: as many as the build), and save it to `out`."""
    from nas.spec import load_spec

    held_out = held_out or samples
    for n, what, option in ((samples, "building a latency table", "--samples"),
                            (calibration, "calibrating a latency table", "--calibration"),
                            (held_out, "evaluating a latency table", "--held-out")):
        check_sample_size(n, what, option)
    space = space or "efficientnet_b0"
    base = load_spec(space)
    resolution = resolution or base.resolution
    table, accuracy = build_calibrated_table(
        sample_networks(base, samples, seed, resolution), sample_networks(base, calibration, seed + 1, resolution),
        sample_networks(base, held_out, seed + 2, resolution), settings,
        {"space": space, "resolution": resolution, "samples": samples, "seed": seed}, resolution, progress)
    table.save(out)
    if progress:
        progress(f"wrote {len(table.entries)} pieces to {out}")
    return table, accuracy


def evaluate_saved_table(table: LatencyTable, space: str | None, resolution: int | None, samples: int,
                         seed: int | None, overrides: dict[str, Any], progress: Progress | None = None) -> TableAccuracy:
    """Evaluate a saved table on seeded networks; space, resolution and seed default to the table's build
    (seed + 2: its held-out sample, networks it was neither built nor calibrated on), measurement settings
    to the table's own."""
    from nas.spec import load_spec

    check_sample_size(samples)
    settings = dataclasses.replace(table.settings, **overrides)
    built = table.built_from
    base = load_spec(space or built.get("space", "efficientnet_b0"))
    resolution = resolution or built.get("resolution") or base.resolution
    seed = seed if seed is not None else built.get("seed", 0) + 2
    return evaluate_table(table, sample_networks(base, samples, seed, resolution), settings, progress=progress)
