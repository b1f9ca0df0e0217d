"""The compound constraint, judged on the measured cost of the real, rounded networks.

A candidate (alpha, beta) fixes depth and width of the phi = 1 network; gamma is then *solved*: the
integer resolution whose measured cost ratio cost(phi=1)/cost(phi=0) comes closest to the target c.
The candidate is feasible when that ratio lies within c * (1 +- tolerance). Every point a search trains
is feasible by construction, so the accuracies it compares are at (nearly) equal cost.

Cost is measured FLOPs (fvcore), activations (fvcore: outputs of convolution and linear layers) or, in
hardware mode, measured latency on a device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nas.config import LatencySettings, StudyConfig
from nas.flops import activations_at, flops_at
from nas.latency import LatencyTable, measure_spec
from nas.scaling import scale
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec

CostFn = Callable[[NetworkSpec, int], float]


@dataclass(frozen=True)
class ProxyFamily:
    """The networks a proxy run trains: the base down-scaled by (width, depth), at `resolution` for
    phi = 0. Members are scaled from the unscaled base with the proxy's multipliers folded in, so
    channels and repeats are rounded once."""

    base: NetworkSpec
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 32

    def member(self, alpha: float, beta: float, gamma: float) -> NetworkSpec:
        return scale(self.base, self.width * beta, self.depth * alpha, round(self.resolution * gamma),
                     name=f"{self.base.name}-proxy-a{alpha:g}-b{beta:g}-g{gamma:.4g}")

    @property
    def phi0(self) -> NetworkSpec:
        return self.member(1.0, 1.0, 1.0)


def proxy_family(config: StudyConfig) -> ProxyFamily:
    """The proxy networks of a study, as its coefficient search and its frontier train them."""
    base = load_spec(config.space)
    p = config.proxy
    if p.stem_stride is not None:
        base = base.replace(stem_stride=p.stem_stride)
    return ProxyFamily(base=base, width=p.width, depth=p.depth, resolution=p.resolution)


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
class ProxyCandidate(WithinTolerance):
    """The proxy network a candidate trains, its resolution solved on the proxy's own measured FLOPs.

    The full-size ratio says the family doubles its cost; the proxy's ratio says the candidates were
    trained at equal cost, which a ranking of their accuracies needs. Small networks at small resolutions
    cost a staircase of resolution (every stage's map is ceil(r / stride) wide), so the full-size gamma
    can land the proxy far off (B0 at half width: 34 px costs 4.4x its 32 px self): the resolution is
    solved again on the proxy, and a candidate whose proxy no resolution brings within tolerance is not
    trained."""

    spec: NetworkSpec            # costs are its measured FLOPs and the phi = 0 proxy's
    resolution0: int

    def reason(self) -> str:
        return (f"no proxy resolution gives an equal-cost proxy: the closest, {self.spec.resolution} px, costs "
                f"{self.ratio:.2f}x the {self.resolution0} px phi = 0 proxy, outside {self.target:g} +- "
                f"{self.tolerance:.0%}")


def solve_proxy(family: ProxyFamily, alpha: float, beta: float, gamma: float, cost: CostFn, target: float,
                tolerance: float) -> ProxyCandidate:
    """The proxy network with depth alpha and width beta at the resolution whose measured cost ratio to the
    phi = 0 proxy is closest to `target`, the search starting from gamma. For the phi-th member of a
    family, pass alpha^phi, beta^phi, gamma^phi and target^phi."""
    r0 = family.resolution
    spec1 = family.member(alpha, beta, 1.0)
    cost0 = cost(family.phi0, r0)
    cost1 = functools.cache(lambda r: cost(spec1, r))
    high = min(MAX_RESOLUTION, max(2 * r0, int(2 * r0 * gamma)))
    r = closest_resolution(cost1, target * cost0, round(r0 * gamma), r0, high)
    return ProxyCandidate(spec=family.member(alpha, beta, r / r0), resolution0=r0, cost0=cost0, cost1=cost1(r),
                          target=target, tolerance=tolerance)


def target_member(base: NetworkSpec, alpha: float, beta: float, resolution: int) -> NetworkSpec:
    """The full-size phi = 1 network that the family will be built from."""
    return scale(base, beta, alpha, resolution, name=f"{base.name}-a{alpha:g}-b{beta:g}")


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
        table.extend(spec, res, in_channels, num_classes)
        return table.predict(spec, res, in_channels, num_classes)
    return predicted


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


def grid_points(lo_hi_alpha: tuple[float, float], lo_hi_beta: tuple[float, float], step: float) -> list[tuple[float, float]]:
    def axis(lo: float, hi: float) -> list[float]:
        n = int(math.floor((hi - lo) / step + 1e-9))
        return [round(lo + i * step, 6) for i in range(n + 1)]
    return [(a, b) for a in axis(*lo_hi_alpha) for b in axis(*lo_hi_beta)]


def examined_points(alpha: tuple[float, float], beta: tuple[float, float], step: float, target: float,
                    tolerance: float) -> list[tuple[float, float]]:
    """The grid points worth measuring: those whose depth and width alone (gamma = 1) leave room under the target."""
    return [(a, b) for a, b in grid_points(alpha, beta, step) if a * b * b <= target * (1 + tolerance)]


def feasible_grid(base: NetworkSpec, alpha: tuple[float, float], beta: tuple[float, float], step: float,
                  cost: CostFn, target: float, tolerance: float,
                  progress: Callable[[str], None] | None = None, ratio_is: str = "measured",
                  ) -> tuple[list[Candidate], int]:
    """(feasible candidates, points examined); `ratio_is` says in the progress lines how the ratios were had
    ("predicted" when a latency table gave them).

    Points whose depth and width alone overshoot the target at gamma = 1 (alpha * beta^2 > c * (1 +
    tolerance)) are skipped without measuring. Points that round to the same network as an earlier
    point (ceil(1.1 * r) == ceil(1.2 * r) for B0's repeats, say) are the same candidate: only the first
    (smallest alpha, then beta) is kept, so no network is trained twice.
    """
    points = examined_points(alpha, beta, step, target, tolerance)
    feasible: list[Candidate] = []
    seen: dict[tuple, Candidate] = {}
    for i, (a, b) in enumerate(points, 1):
        cand = solve_resolution(base, a, b, cost, target, tolerance)
        key = network_key(target_member(base, a, b, cand.resolution1))
        verdict = "feasible" if cand.feasible else "infeasible"
        if cand.feasible and key in seen:
            verdict = f"same network as alpha {seen[key].alpha:g} beta {seen[key].beta:g}"
        elif cand.feasible:
            seen[key] = cand
            feasible.append(cand)
        if progress:
            progress(f"grid [{i}/{len(points)}] alpha {a:g} beta {b:g}: resolution {cand.resolution0}->"
                     f"{cand.resolution1}, {ratio_is} ratio {cand.ratio:.3f} ({verdict})")
    return feasible, len(points)


def network_key(spec: NetworkSpec) -> tuple:
    return (spec.stages, spec.stem_channels, spec.head_channels, spec.resolution)
