"""The compound constraint, judged on the measured cost of the real, rounded networks.

A candidate (alpha, beta) fixes depth and width of the phi = 1 network; gamma is then *solved*: the
integer resolution whose measured cost ratio cost(phi=1)/cost(phi=0) comes closest to the target c.
The candidate is feasible when that ratio lies within c * (1 +- tolerance). Every point a search trains
is feasible by construction, so the accuracies it compares are at (nearly) equal cost.

The costs and the resolution solvers are nas.cost's; this module adds what only a search needs: the
equal-cost proxy each candidate trains, and the grid of candidates.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from nas.config import StudyConfig
from nas.cost import Candidate, CostFn, WithinTolerance, closest_resolution, solve_resolution
from nas.scaling import examined_points, scale, target_member
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec


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


def network_id(spec: NetworkSpec) -> str:
    """A short stable name for a network (network_key hashed): how side studies store and queue networks."""
    return hashlib.sha256(repr(network_key(spec)).encode()).hexdigest()[:12]
