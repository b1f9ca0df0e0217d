"""How accurate a latency table is, and building one whose accuracy is known.

A table is judged on networks it never saw: each timed whole and compared with the table's prediction
(`evaluate_table`); `build_calibrated_table` builds, calibrates and judges in one interleaved measurement
and stores the held-out error (nas.records.HeldOutError) with the table. docs/latency.md has the figures.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from nas.config import LatencySettings
from nas.flops import flops_at
from nas.latency.measure import Latency, Progress, measure_pieces_and_networks, measurement_conditions
from nas.latency.pieces import Piece, pieces
from nas.latency.table import LatencyTable, fit_calibration
from nas.records import HeldOutError
from nas.scaling import scale
from nas.spec import NetworkSpec
from nas.validation import InvalidField

SAMPLE_WIDTHS = (0.5, 0.75, 1.0)
SAMPLE_DEPTHS = (0.5, 1.0)
SAMPLE_KERNELS = (3, 5)
SAMPLE_EXPANDS = (4, 6)


def sample_networks(base: NetworkSpec, n: int, seed: int = 0, resolution: int | None = None) -> list[NetworkSpec]:
    """`n` varied members of `base`'s space, the same for the same seed: a width and depth multiplier, and
    per stage a kernel and (for stages that expand) an expansion ratio."""
    if n < 1:
        raise InvalidField("n", n, "an integer >= 1")
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


def check_sample_size(n: int, field: str, what: str) -> None:
    """A rank correlation, or a fit of two coefficients, over fewer than 3 networks says nothing. `field` names
    the sample as the caller's parameter does (the command line shows it as its option)."""
    if n < 3:
        raise InvalidField(field, n, f"an integer >= 3 ({what} needs at least 3 networks)")


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

    def held_out_error(self) -> HeldOutError:
        """The figures as a table stores them (rounded): its held-out error, when these networks were held out."""
        return HeldOutError(networks=len(self.rows), within_10_pct=round(self.within_10_pct, 1),
                            p90_abs_error_pct=round(self.p90_abs_error_pct, 2),
                            mean_abs_error_pct=round(self.mean_abs_error_pct, 2),
                            max_abs_error_pct=round(self.max_abs_error_pct, 2), bias_pct=round(self.bias_pct, 2),
                            spearman=round(self.spearman, 4),
                            raw_mean_abs_error_pct=round(self.raw_mean_abs_error_pct, 2),
                            raw_bias_pct=round(self.raw_bias_pct, 2))


def evaluate_table(table: LatencyTable, samples: Sequence[NetworkSpec], settings: LatencySettings | None = None,
                   resolution: int | None = None, in_channels: int = 3, num_classes: int = 1000,
                   progress: Progress | None = None) -> TableAccuracy:
    """Measure each network of `samples` whole and compare with the table's prediction.

    Pieces the table lacks are timed in the same measurement as the networks and added to `table`
    (`new_pieces` counts them per network), so every prediction is a pure lookup; `settings` (default: the
    table's) must match its conditions.
    """
    settings = settings or table.settings
    table.check(settings)
    check_sample_size(len(samples), "samples", "evaluating a latency table")
    new, measured = table.grow(samples, settings, resolution, in_channels, num_classes, whole=True, progress=progress)
    return table_accuracy(table, samples, measured, [len(n) for n in new], resolution, in_channels, num_classes)


def table_accuracy(table: LatencyTable, samples: Sequence[NetworkSpec], measured: Sequence[Latency],
                   new_pieces: Sequence[int], resolution: int | None = None, in_channels: int = 3,
                   num_classes: int = 1000) -> TableAccuracy:
    """The table's predictions for `samples` against their `measured` latencies (timed here, or on a device by
    the probe), with how many pieces were new to the table per network. Spearman's rho is the Pearson
    correlation of the ranks: what a search that only orders candidates needs."""
    rows = pd.DataFrame([{"name": s.name, "resolution": resolution or s.resolution,
                          "gflops": round(flops_at(s, resolution or s.resolution, in_channels, num_classes) / 1e9, 4),
                          "median_ms": round(m.median_ms, 3), "p10_ms": round(m.p10_ms, 3),
                          "p90_ms": round(m.p90_ms, 3)} for s, m in zip(samples, measured, strict=True)])
    rows["sum_ms"] = [round(table.sum_ms(s, resolution, in_channels, num_classes), 3) for s in samples]
    rows["predicted_ms"] = [round(table.predict(s, resolution, in_channels, num_classes), 3) for s in samples]
    error = 100 * (rows["predicted_ms"] - rows["median_ms"]) / rows["median_ms"]
    raw = 100 * (rows["sum_ms"] - rows["median_ms"]) / rows["median_ms"]
    rows["error_pct"] = error.round(1)
    rows["new_pieces"] = list(new_pieces)
    return TableAccuracy(rows=rows, mean_abs_error_pct=float(error.abs().mean()),
                         max_abs_error_pct=float(error.abs().max()),
                         p90_abs_error_pct=float(error.abs().quantile(0.9)),
                         within_10_pct=float(100 * (error.abs() <= 10).mean()), bias_pct=float(error.mean()),
                         spearman=float(rows["median_ms"].rank().corr(rows["predicted_ms"].rank())),
                         raw_mean_abs_error_pct=float(raw.abs().mean()), raw_bias_pct=float(raw.mean()))


def calibrate(table: LatencyTable, calibration: Sequence[NetworkSpec], resolution: int | None = None,
              in_channels: int = 3, num_classes: int = 1000, progress: Progress | None = None,
              measured: Sequence[Latency] | None = None) -> None:
    """Fit `table.calibration` on the `calibration` networks, timed whole (or their `measured` latencies, when
    timed already). Their pieces the table lacks are timed with them, in one measurement, and kept:
    calibrating is part of building."""
    check_sample_size(len(calibration), "calibration", "calibrating a latency table")
    if measured is None:
        _, measured = table.grow(calibration, table.settings, resolution, in_channels, num_classes, whole=True,
                                 progress=progress)
    sums = [table.sum_ms(s, resolution, in_channels, num_classes) for s in calibration]
    counts = [len(pieces(s, resolution, in_channels, num_classes)) for s in calibration]
    table.calibration = fit_calibration(sums, counts, [m.median_ms for m in measured])


Timings = Callable[[Sequence[Piece], Sequence[NetworkSpec]], tuple[list[Latency], list[Latency]]]
"""Times table pieces and whole networks in one interleaved measurement, returning (the pieces' latencies, the
networks'): on this machine (measure_pieces_and_networks), or read back from the device probe's timings
(nas.latency.probe)."""


@dataclass(frozen=True)
class TableNetworks:
    """What a calibrated table is made of: every piece of `build` (and of `calibration`), calibrated on
    `calibration` networks timed whole, judged on `held_out` ones; `built_from` says how they were drawn."""

    build: tuple[NetworkSpec, ...]
    calibration: tuple[NetworkSpec, ...]
    held_out: tuple[NetworkSpec, ...]
    built_from: dict[str, Any]
    resolution: int | None = None     # every network at this side; None: each at its own

    def to_time(self) -> tuple[list[Piece], int, list[NetworkSpec]]:
        """What building the table times, in one measurement: the distinct pieces (the first `own` of them the
        table's, the rest only the held-out networks have: they judge it on a copy) and the calibration and
        held-out networks, whole. Pieces a timed neighbour interpolates are not timed (LatencyTable.unknown)."""
        check_sample_size(len(self.calibration), "calibration", "calibrating a latency table")   # before any timing
        check_sample_size(len(self.held_out), "held_out", "evaluating a latency table")
        empty = LatencyTable(settings=LatencySettings(), conditions={}, torch_version="")
        per_network = empty.unknown([*self.build, *self.calibration, *self.held_out], self.resolution)
        own = sum(len(ps) for ps in per_network[:len(self.build) + len(self.calibration)])
        return [p for ps in per_network for p in ps], own, [*self.calibration, *self.held_out]


def sampled_table_networks(base: NetworkSpec, space: str, samples: int, seed: int, calibration: int, held_out: int,
                           resolution: int | None = None) -> TableNetworks:
    """`nas latency table build`'s networks: `samples` seeded members of the base's space to build from (seed),
    `calibration` others (seed + 1) and `held_out` more (seed + 2)."""
    for n, field, what in ((samples, "samples", "building a latency table"),
                           (calibration, "calibration", "calibrating a latency table"),
                           (held_out, "held_out", "evaluating a latency table")):
        check_sample_size(n, field, what)
    resolution = resolution or base.resolution
    return TableNetworks(tuple(sample_networks(base, samples, seed, resolution)),
                         tuple(sample_networks(base, calibration, seed + 1, resolution)),
                         tuple(sample_networks(base, held_out, seed + 2, resolution)),
                         {"space": space, "resolution": resolution, "samples": samples, "seed": seed}, resolution)


def build_calibrated_table(build: Sequence[NetworkSpec], calibration: Sequence[NetworkSpec],
                           held_out: Sequence[NetworkSpec], settings: LatencySettings, built_from: dict[str, Any],
                           resolution: int | None = None, progress: Progress | None = None, *,
                           timings: Timings | None = None, conditions: dict[str, Any] | None = None,
                           ) -> tuple[LatencyTable, TableAccuracy]:
    """Time every piece of `build` and `calibration`, calibrate on `calibration` networks timed whole, and judge
    the result on `held_out` networks, none of them used before. Pieces only the held-out networks have are
    kept on a copy, so the table holds exactly the build and calibration networks' pieces; the held-out error
    is stored with it (`held_out`) and shown wherever the table is used.

    Every piece and every whole network is timed in one interleaved measurement: this machine's speed drifts
    by 10 % and more between measurements a minute apart (docs/latency.md), so pieces timed before the
    networks, or one network's pieces before another's, would judge the table on that drift as much as on
    how well pieces add up to a network. `timings` (default: on this machine, under `settings`) and
    `conditions` (default: this machine's) let a device's probe stand in for that measurement."""
    networks = TableNetworks(tuple(build), tuple(calibration), tuple(held_out), dict(built_from), resolution)
    parts, own, whole = networks.to_time()
    table = LatencyTable(settings=settings,
                         conditions=measurement_conditions(settings) if conditions is None else dict(conditions),
                         torch_version=torch.__version__, built_from=dict(built_from))
    timed, measured = (timings or (lambda ps, specs: measure_pieces_and_networks(
        ps, specs, settings, resolution, progress=progress)))(parts, whole)
    table.add(parts[:own], timed[:own])
    calibrate(table, calibration, resolution, measured=measured[:len(calibration)])
    if progress:
        progress(f"table: {len(table.entries)} pieces, calibrated on {len(calibration)} networks; evaluating on "
                 f"{len(held_out)} held-out networks")
    judge = dataclasses.replace(table, entries=dict(table.entries))
    judge.add(parts[own:], timed[own:])
    accuracy = table_accuracy(judge, held_out, measured[len(calibration):], [0] * len(held_out), resolution)
    table.held_out = accuracy.held_out_error()
    return table, accuracy
