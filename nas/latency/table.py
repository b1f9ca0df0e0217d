"""The lookup table: per-piece latencies that predict a network's latency without building or running it.

A network's prediction is the calibrated sum of its pieces' medians (`Calibration`), a piece at an untimed
side interpolated between timed ones. Two verbs fill a table: `add` stores pieces already timed, `grow` times
what the table lacks for some networks (optionally with the networks themselves) and adds it; `unknown` says
what `grow` would time, and nothing else ever measures. Saved as JSON (`effnas-latency-table/1`).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from nas.config import LatencySettings
from nas.errors import NasError
from nas.latency.measure import Latency, Progress, measure_pieces_and_networks, measurement_conditions
from nas.latency.pieces import Piece, pieces
from nas.records import HeldOutError
from nas.spec import NetworkSpec

TABLE_FORMAT = "effnas-latency-table/1"


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
    each other, as the sums grow with the pieces), the scale alone is fitted, which is the constrained optimum.
    Nor can more work inside the pieces: a scale <= 0 (networks with about as many pieces each, whose noise the
    per-piece term fits instead; it predicted less time at a higher resolution) falls back to the scale alone."""
    measured = np.asarray(measured_ms, dtype=float)
    design = np.stack([np.asarray(pieces_ms, dtype=float), np.asarray(counts, dtype=float)], axis=1)
    relative = design / measured[:, None]
    (scale_, per_piece), *_ = np.linalg.lstsq(relative, np.ones_like(measured), rcond=None)
    if per_piece < 0 or scale_ <= 0:
        (scale_,), *_ = np.linalg.lstsq(relative[:, :1], np.ones_like(measured), rcond=None)
        per_piece = 0.0
    return Calibration(scale=float(scale_), per_piece_ms=float(per_piece), networks=len(measured))


_UNTIMED = Latency(median_ms=math.nan, p10_ms=math.nan, p90_ms=math.nan, batch_size=0, device="")
"""Stands for a piece about to be timed (LatencyTable.unknown, on a copy); never stored in a table."""

MAX_INTERPOLATION_RATIO = 2
"""A piece's latency is interpolated only between timed sides at most this far apart."""

PROBED = "probe"
"""`conditions["device"]` of a table timed on another device by the probe (nas.latency.probe): its other
conditions describe that device, and nothing on this machine can time a piece for it."""


class UntimedOnDevice(NasError):
    """A table timed on another device by the probe lacks pieces of `spec` at `resolution`, which nothing on this
    machine can time for it: the caller that knows where the network came from can say what to export."""

    def __init__(self, message: str, spec: NetworkSpec, resolution: int, parts: Sequence[Piece]):
        super().__init__(message)
        self.spec, self.resolution, self.parts = spec, resolution, list(parts)


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
    held_out: HeldOutError | None = None
    _sides: dict[Piece, list[tuple[int, float]]] | None = dataclasses.field(default=None, init=False, repr=False,
                                                                            compare=False)

    @property
    def probed(self) -> bool:
        """Timed on another device by the probe, not on this machine."""
        return self.conditions.get("device") == PROBED

    def check(self, settings: LatencySettings) -> None:
        """Refuse to compare against figures taken on other hardware or under other conditions. A probed table's
        device is not this machine, so only what the search asks of it (the batch size) is compared."""
        if self.probed:
            if settings.batch_size != self.settings.batch_size:
                raise NasError(f"the latency table was timed on {self.conditions.get('hardware')} at batch size "
                               f"{self.settings.batch_size}, but this measurement has batch size "
                               f"{settings.batch_size}: export a probe at batch size {settings.batch_size} (nas "
                               f"latency probe export --batch-size {settings.batch_size}) and import its timings")
            return
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

    def unknown(self, specs: Sequence[NetworkSpec], resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> list[list[Piece]]:
        """Per network, the distinct pieces `grow` would time for `specs`: those the table, grown by the pieces
        of the networks before, can neither look up nor interpolate. Nothing is timed; the table is unchanged."""
        table, new = self, []
        for spec in specs:
            new.append([p for p in dict.fromkeys(pieces(spec, resolution, in_channels, num_classes))
                        if table.piece_ms(p) is None])
            if new[-1]:
                if table is self:
                    table = dataclasses.replace(self, entries=dict(self.entries))
                table.add(new[-1], [_UNTIMED] * len(new[-1]))     # only their presence matters here
        return new

    def reach(self, spec: NetworkSpec, low: int, high: int) -> int:
        """The highest resolution in [low, high] up to which the table predicts `spec` without timing anything (low
        when it cannot predict it even there): a table on a ladder of resolutions from `low` predicts every
        resolution up to its top rung, so the answer is found by bisection."""
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if not self.unknown([spec], mid)[0] else (low, mid - 1)
        return low

    def add(self, parts: Sequence[Piece], timed: Sequence[Latency]) -> None:
        """Store pieces timed under this table's conditions (measure_pieces_and_networks)."""
        self.entries.update(zip(parts, timed, strict=True))
        self._sides = None

    def grow(self, specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
             in_channels: int = 3, num_classes: int = 1000, whole: bool = False,
             progress: Progress | None = None) -> tuple[list[list[Piece]], list[Latency]]:
        """Time the pieces of `specs` the table lacks (`unknown`), each once, and add them; with `whole`, the
        networks themselves are timed in the same measurement. `settings` must match the table's conditions
        (they may differ in warm-up and repeats). Returns (the new pieces per network, the networks' latencies
        with `whole`, else none)."""
        new = self.unknown(specs, resolution, in_channels, num_classes)
        parts = [p for ps in new for p in ps]
        if self.probed and (parts or (whole and specs)):
            first = next((spec for spec, ps in zip(specs, new) if ps), specs[0])
            what = (f"the {len(parts)} pieces it lacks of {first.name} at {resolution or first.resolution} px (first: "
                    f"{parts[0]})" if parts else f"the networks it is judged on ({first.name}, ...)")
            raise UntimedOnDevice(f"the latency table was timed on {self.conditions.get('hardware')} by the probe, and "
                                  f"this machine cannot time {what} for it: export a probe that holds such networks (nas "
                                  f"latency probe export), time it on the device and import its timings", first,
                                  resolution or first.resolution, parts)
        if parts:
            self.check(settings)
        timed, networks = measure_pieces_and_networks(parts, specs if whole else (), settings, resolution,
                                                      in_channels, num_classes, progress)
        self.add(parts, timed)
        return new, networks

    def sum_ms(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
               num_classes: int = 1000) -> float:
        """The uncalibrated prediction: the sum of the pieces' medians, repeated blocks counted each time."""
        missing = self.unknown([spec], resolution, in_channels, num_classes)[0]
        if missing:
            raise NasError(f"the latency table has no entry for {len(missing)} pieces of {spec.name} (first: "
                           f"{missing[0]}): grow it with networks like this one (nas latency table build)")
        return sum(cast(float, self.piece_ms(p)) for p in pieces(spec, resolution, in_channels, num_classes))

    def predict(self, spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> float:
        """Predicted median latency in ms: the calibrated sum of the pieces. Never runs anything: a piece the
        table lacks is an error (`grow` the table, or let evaluate_table measure it)."""
        return self.calibration.apply(self.sum_ms(spec, resolution, in_channels, num_classes),
                                      len(pieces(spec, resolution, in_channels, num_classes)))

    def describe(self, path: str | Path) -> str:
        """One line: what the table holds and how far off it was on networks it never saw."""
        c, h = self.calibration, self.held_out
        calibrated = (f"calibrated on {c.networks} networks ({c.scale:.3f} x the sum + {c.per_piece_ms:.3f} ms a "
                      f"piece)" if c.networks else "not calibrated")
        error = (f"error on {h.networks} held-out networks: {h.within_10_pct:.0f} % within 10 %, p90 "
                 f"{h.p90_abs_error_pct:.1f} %, Spearman rho {h.spearman:.3f}" if h
                 else "never evaluated on held-out networks")
        where = (f" (timed on {self.conditions.get('hardware')} by the probe, {self.conditions.get('provider')}, "
                 f"onnxruntime {self.conditions.get('onnxruntime')})" if self.probed else "")
        return f"latency table {path}{where}: {len(self.entries)} pieces, {calibrated}; {error}"

    def device_words(self) -> str:
        """Where a probed table's latencies come from, in words: 'latency on <device> (probe, <provider>)'."""
        return f"latency on {self.conditions.get('hardware')} (probe, {self.conditions.get('provider')})"

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "torch": self.torch_version, "conditions": self.conditions,
                "settings": asdict(self.settings), "built_from": self.built_from,
                "calibration": asdict(self.calibration),
                "held_out": self.held_out.to_dict() if self.held_out else {},     # {}: never evaluated
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
                       calibration=Calibration(**d.get("calibration", {})),
                       held_out=HeldOutError.from_dict(d["held_out"]) if d.get("held_out") else None)
        except (KeyError, TypeError, AttributeError, ValueError, NasError) as e:
            raise NasError(f"{path}: latency table is incomplete or damaged ({type(e).__name__}: {e}): {fix}") from None


def build_table(specs: Sequence[NetworkSpec], settings: LatencySettings, resolution: int | None = None,
                in_channels: int = 3, num_classes: int = 1000, progress: Progress | None = None,
                built_from: dict[str, Any] | None = None) -> LatencyTable:
    """A table holding every distinct piece of `specs`, all timed in one measurement (built once, reused by `load`)."""
    table = LatencyTable(settings=settings, conditions=measurement_conditions(settings),
                         torch_version=torch.__version__, built_from=dict(built_from or {}))
    table.grow(specs, settings, resolution, in_channels, num_classes, progress=progress)
    return table
