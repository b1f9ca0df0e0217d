"""The cost of a network under a study, and the solvers that reach a target cost.

Cost is measured FLOPs (fvcore), activations (fvcore: outputs of convolution and linear layers) or, in
hardware mode, latency on a device: timed, or predicted by a calibrated per-block lookup table. Every
cost is a function of a network and a resolution (`CostFn`), so the same solvers serve all three:
`closest_resolution` finds the integer resolution whose measured cost is nearest a target, and
`solve_resolution` judges a candidate (alpha, beta) of the compound constraint on the full-size networks.
The search (nas.search) and the family (nas.family) both stand on this layer; it knows neither of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nas.config import LatencySettings, StudyConfig
from nas.flops import activations_at, flops_at
from nas.latency import LatencyTable, measure_spec, search_table
from nas.scaling import target_member
from nas.spec import NetworkSpec

CostFn = Callable[[NetworkSpec, int], float]


def flops_cost(in_channels: int, num_classes: int) -> CostFn:
    return lambda spec, res: float(flops_at(spec, res, in_channels, num_classes))


def activations_cost(in_channels: int, num_classes: int) -> CostFn:
    """Activations (conv and linear outputs) instead of FLOPs: they follow runtime on memory-bound
    accelerators more closely (Dollar et al., 2021), and like FLOPs they are counted, not timed."""
    return lambda spec, res: float(activations_at(spec, res, in_channels, num_classes))


def latency_cost(settings: LatencySettings, in_channels: int, num_classes: int,
                 table: LatencyTable | None = None) -> CostFn:
    """Latency measured on the device, or predicted by `table` (search.predictor: table). A network with pieces
    the table can neither look up nor interpolate (a width off the grid it was built for) has those timed
    first, once."""
    if table is None:
        return lambda spec, res: measure_spec(spec, settings, res, in_channels, num_classes).median_ms

    def predicted(spec: NetworkSpec, res: int) -> float:
        table.grow([spec], table.settings, res, in_channels, num_classes)
        return table.predict(spec, res, in_channels, num_classes)
    return predicted


def study_cost(config: StudyConfig, build_table: bool = True, progress: Callable[[str], None] | None = None,
               ) -> tuple[CostFn, str, LatencyTable | None]:
    """(the study's cost of a full-size network, what it is in words, the latency table it predicts from).
    Latency with `search.predictor: table` is predicted from the device's table (built when missing, unless
    `build_table` is off), or timed when the table cannot serve; a table timed on another device by the probe
    is named in the words, and never replaced by timings here. FLOPs and activations are counted."""
    s = config.search
    if s.cost == "latency":
        table = search_table(config, progress, build=build_table) if s.predictor == "table" else None
        words = (f"{table.device_words()} predicted by the device's table" if table and table.probed
                 else "latency predicted by the table" if table else f"latency measured on {s.latency.device}")
        return latency_cost(s.latency, 3, 1000, table), words, table
    if s.cost == "activations":
        return activations_cost(3, 1000), "activations", None
    return flops_cost(3, 1000), "FLOPs", None


@dataclass(frozen=True)
class WithinTolerance:
    """A measured cost ratio judged against the target: feasible within target * (1 +- tolerance)."""

    cost0: float                 # measured cost of the phi = 0 network
    cost1: float                 # ... and of the candidate's phi = 1 network
    target: float
    tolerance: float

    @property
    def ratio(self) -> float:
        """Measured cost ratio of the rounded phi = 1 network to phi = 0."""
        return self.cost1 / self.cost0

    @property
    def feasible(self) -> bool:
        return abs(self.ratio / self.target - 1.0) <= self.tolerance

    @property
    def violation(self) -> float:
        """<= 0 when feasible (Optuna's constraint convention)."""
        return abs(self.ratio / self.target - 1.0) - self.tolerance


@dataclass(frozen=True)
class Candidate(WithinTolerance):
    alpha: float
    beta: float
    gamma: float                 # effective: resolution1 / resolution0
    resolution0: int
    resolution1: int

    @property
    def nominal_ratio(self) -> float:
        """alpha * beta^2 * gamma^2 with the effective gamma: what the ratio would be without rounding."""
        return self.alpha * self.beta ** 2 * self.gamma ** 2

    @property
    def gamma_nominal(self) -> float:
        """The gamma that alpha * beta^2 * gamma^2 = c asks for, before measuring."""
        return math.sqrt(self.target / (self.alpha * self.beta ** 2))

    def attrs(self) -> dict:
        d = asdict(self)
        d.update(ratio=self.ratio, nominal_ratio=self.nominal_ratio, gamma_nominal=self.gamma_nominal,
                 feasible=self.feasible)
        return d


def solve_resolution(base: NetworkSpec, alpha: float, beta: float, cost: CostFn, target: float,
                     tolerance: float, max_gamma: float = 2.0) -> Candidate:
    """The integer phi = 1 resolution whose measured cost ratio to `base` is closest to `target`.

    Judged on the full-size base at its native resolution: the network the family is built from.
    """
    r0 = base.resolution
    spec1 = target_member(base, alpha, beta, r0)
    cost0 = cost(base, r0)
    cost1 = functools.cache(lambda r: cost(spec1, r))     # each resolution measured once
    best = closest_resolution(cost1, target * cost0, r0, r0, max(r0, int(r0 * max_gamma)))
    return Candidate(alpha=alpha, beta=beta, gamma=best / r0, resolution0=r0, resolution1=best, cost0=cost0,
                     cost1=cost1(best), target=target, tolerance=tolerance)


SECANT_STEPS = 4
"""Secant steps on log cost against log resolution before the walk: a measured latency grows slower than the
area (per-call overhead), so one area-based jump can land tens of pixels short, each a measurement away."""


def closest_resolution(cost_at: Callable[[int], float], wanted: float, start: int, low: int, high: int) -> int:
    """The integer resolution in [low, high] whose measured cost is nearest `wanted` (in log terms).

    Cost grows roughly as a power of resolution: a jump assuming the area (exponent 2), then secant steps
    that fit the exponent from the last two measurements (kept within 0.5-4), land next to the answer; a walk
    over neighbouring integers then settles it on measured values. Rounding makes cost a staircase with flat
    steps (B0 at 225 to 240 px costs 2.10x to 2.15x its 224 px self), so the walk crosses flat steps and
    stops only where the error grows, keeping the best resolution it passed. Where cost never falls as
    resolution grows (FLOPs, activations), the walk's answer does not depend on where it starts."""
    def error(r: int) -> float:
        return abs(math.log(cost_at(r) / wanted))

    def clamp(r: float) -> int:
        return min(max(low, round(r)), high)

    previous, r, exponent = start, clamp(start * math.sqrt(wanted / cost_at(start))), 2.0
    for _ in range(SECANT_STEPS):
        if r == previous:
            break
        fitted = math.log(cost_at(r) / cost_at(previous)) / math.log(r / previous)
        if fitted > 0:    # not across a flat step (or noise that makes a larger network look cheaper)
            exponent = min(4.0, max(0.5, fitted))
        previous, r = r, clamp(r * (wanted / cost_at(r)) ** (1 / exponent))
    r = best = min((previous, r), key=lambda x: (error(x), x))
    direction = 1 if cost_at(r) < wanted else -1     # toward the target
    while low <= r + direction <= high and error(r + direction) <= error(r):
        r += direction
        if error(r) < error(best) or (error(r) == error(best) and r < best):
            best = r
    while best > low and error(best - 1) <= error(best):
        best -= 1         # on a flat step, its smallest resolution: the same answer from any start
    return best
