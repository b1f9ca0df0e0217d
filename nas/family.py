"""A family: members from coefficients or the paper's table, their measured cost, files.

The table compares measured FLOPs of each rounded member against phi = 0, next to the 2^phi a
compound rule with alpha*beta^2*gamma^2 = 2 promises; `phi_measured` = log2(measured ratio) shows
where a member really sits (the paper's B7 lands near 6.6). `study_family` is the family of a
coefficient study, solved on the study's own cost: the one function `nas scale run`, `nas materialize
--study` and the report build it with.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from nas.builder import build_model
from nas.config import LatencySettings, StudyConfig
from nas.cost import CostFn, closest_resolution, flops_cost, study_cost
from nas.errors import NasError
from nas.flops import activations_at, flops_at, params_of
from nas.latency import measure_networks, table_path
from nas.scaling import compound, paper_member, scale
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec, save_spec
from nas.validation import InvalidField

Member = tuple[float, NetworkSpec]       # (phi, the rounded network)


def paper_family(base: NetworkSpec, phis: Sequence[float]) -> list[Member]:
    """B0..B7 of the paper's table, phi k standing for Bk."""
    bad = [p for p in phis if p != int(p) or not 0 <= p <= 7]
    if bad:
        raise InvalidField("phi", f"{bad[0]:g}", "whole numbers in 0-7: the paper's table has members B0..B7")
    return [(p, paper_member(base, int(p))) for p in phis]


def compound_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: Sequence[float],
                    resolution_multiple: int = 1) -> list[Member]:
    """The compound rule as it is: resolution gamma^phi, rounded to `resolution_multiple`."""
    return [(p, compound(base, alpha, beta, gamma, p, resolution_multiple)) for p in phis]


WIDTH_NUDGES = (1.0, 0.99, 1.01, 0.98, 1.02, 0.97, 1.03, 0.96, 1.04, 0.95, 1.05)
"""Width factors an exact-cost member may take when no resolution alone lands within the tolerance."""


def exact_cost_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: Sequence[float],
                      target: float = 2.0, tolerance: float = 0.1,
                      cost: CostFn | None = None) -> tuple[list[Member], list[int]]:
    """(members, their nominal resolutions): members whose measured cost is target^phi times the base's.

    Depth and width are the compound rule's (alpha^phi, beta^phi, rounded as always); the resolution is
    solved on measured cost instead of taken as gamma^phi: FLOPs by default, or the study's own cost
    (`cost(spec, resolution)`: activations, or latency predicted or timed), so that a latency search's family
    doubles its latency, not its FLOPs. Rounding repeats up makes depth cost more than alpha says, and a
    nominal alpha * beta^2 * gamma^2 below the target compounds: the quickstart winner's nominal family
    measures 59x at phi 7 where 128x is asked. Cost is a staircase in resolution (at total stride 32 one pixel
    can add a row and a column to the last feature maps), so when no resolution lands within `tolerance` the
    width multiplier is nudged by up to 5 % (WIDTH_NUDGES) to move channel rounding onto another step; the
    nearest member found is kept either way (docs/scaling.md)."""
    cost = cost or flops_cost(3, 1000)
    base_cost = cost(base, base.resolution)
    members, nominal = [], []
    for phi in phis:
        member = compound(base, alpha, beta, gamma, phi)
        nominal.append(member.resolution)
        if phi > 0:
            wanted = base_cost * target ** phi
            candidates = []
            for nudge in WIDTH_NUDGES:
                spec = member if nudge == 1.0 else scale(base, member.width_mult * nudge, member.depth_mult,
                                                         member.resolution, member.dropout, member.name)
                cost_at = functools.cache(functools.partial(cost, spec))     # a timed cost is timed once
                r = closest_resolution(cost_at, wanted, spec.resolution, base.resolution, MAX_RESOLUTION)
                error = abs(cost_at(r) / wanted - 1)
                candidates.append((error, spec.replace(resolution=r)))
                if error <= tolerance:
                    break
            member = min(candidates, key=lambda c: c[0])[1]
        members.append((phi, member))
    return members, nominal


@dataclass(frozen=True)
class FamilyCheck:
    """How far the family a candidate would produce (exact_cost_family, phi = 1..K) strays from
    target^phi in measured FLOPs, or why one of its members cannot be built at all."""

    worst: float                 # the largest |measured / target^phi - 1|
    phi: float                   # the member where it is
    target: float
    tolerance: float
    unbuildable: str | None = None

    @property
    def feasible(self) -> bool:
        return self.unbuildable is None and self.worst <= self.tolerance

    def reason(self) -> str:
        if self.unbuildable:
            return f"its family cannot be built at phi = {self.phi:g}: {self.unbuildable}"
        return (f"its family strays {self.worst:.0%} from {self.target:g}^phi at phi = {self.phi:g} (tolerance "
                f"{self.tolerance:.0%})")


def check_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: int, target: float,
                 tolerance: float) -> FamilyCheck:
    """Judge a candidate on its whole family, phi = 1..phis: the constraint holding at phi = 1 says little
    about phi = 7, where rounding has compounded (flops_at counts a deep member from a shallow trace, so
    this costs a few seconds a candidate)."""
    base_flops = flops_at(base, base.resolution)
    errors = []
    for phi in range(1, phis + 1):
        try:
            [(_, member)], _ = exact_cost_family(base, alpha, beta, gamma, [phi], target, tolerance)
        except NasError as e:
            return FamilyCheck(math.inf, phi, target, tolerance, unbuildable=str(e))
        errors.append((abs(flops_at(member, member.resolution) / (base_flops * target ** phi) - 1), phi))
    worst, at = max(errors)
    return FamilyCheck(worst, at, target, tolerance)


def family_table(members: Sequence[tuple[float, NetworkSpec]], reference: NetworkSpec | None = None,
                 progress: Callable[[str], None] | None = None, target: float = 2.0,
                 nominal_resolutions: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per member with measured params, FLOPs and activations; ratios are to `reference` (default: the
    member with the smallest phi, which is phi = 0 in any range that starts there), next to target^phi.
    With `nominal_resolutions` (an exact-cost family) the compound rule's resolution is shown beside the
    solved one."""
    if not members:
        raise NasError("no family members to build: give at least one phi")
    if reference is None:
        reference = min(members, key=lambda m: m[0])[1]
    ref_flops = flops_at(reference, reference.resolution)
    rows = []
    for i, (phi, spec) in enumerate(members, 1):
        if progress:
            progress(f"[{i}/{len(members)}] counting {spec.name} at {spec.resolution} px")
        flops = flops_at(spec, spec.resolution)
        ratio = flops / ref_flops
        row = {
            "name": spec.name, "phi": phi, "width": round(spec.width_mult, 4), "depth": round(spec.depth_mult, 4),
            "resolution": spec.resolution, "dropout": spec.dropout, "params": params_of(spec),
            "gflops": round(flops / 1e9, 4), "activations": activations_at(spec, spec.resolution),
            "flops_ratio": round(ratio, 4), "target_ratio": round(target ** phi, 4),
            "phi_measured": round(math.log(ratio, target), 3),
        }
        if nominal_resolutions is not None:
            row = {**dict(list(row.items())[:5]), "nominal_resolution": nominal_resolutions[i - 1],
                   **dict(list(row.items())[5:])}
        rows.append(row)
    return pd.DataFrame(rows)


COST_COLUMNS = {"flops": ("gflops", "measured FLOPs stray"), "activations": ("activations", "activations stray"),
                "latency": ("latency_ms", "measured latency strays")}
"""A study's cost: the family table's column that measures it, and what strays in words."""


def worst_deviation(table: pd.DataFrame, target: float = 2.0, cost: str = "flops") -> str:
    """One sentence: how far the family's measured cost (FLOPs, activations or timed latency: the column of
    COST_COLUMNS) strays from target^phi, at its worst member."""
    column, words = COST_COLUMNS[cost]
    members = table[table["phi"] > 0]
    if members.empty:
        return "the family has no member beyond phi = 0 to compare with the target"
    first = table.loc[table["phi"].idxmin()]
    ratio = members[column] / first[column]
    wanted = target ** (members["phi"] - first["phi"])
    error = (ratio / wanted - 1).abs()
    i = error.idxmax()
    return (f"the family's {words} from {target:g}^phi by at most {error[i]:.0%} "
            f"(phi = {members.loc[i, 'phi']:g}: {ratio[i]:.3g}x where {wanted[i]:.3g}x is asked)")


def with_measured_latency(table: pd.DataFrame, members: Sequence[Member], settings: LatencySettings,
                          progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """`table` (family_table's) with each member's latency measured for real: a latency search may have
    predicted its candidates from a lookup table, but the family it hands over is timed. `latency_ratio` is
    to the member with the smallest phi, to read against target_ratio."""
    ms = measure_networks([spec for _, spec in members], settings, progress=progress)["median_ms"]
    return table.assign(latency_ms=ms.values, latency_ratio=(ms / ms[table["phi"].idxmin()]).round(3).values)


@dataclass(frozen=True)
class StudyFamily:
    """The family of a coefficient study: its members, their table, and how their resolutions were solved."""

    members: list[Member]
    nominal_resolutions: list[int]     # gamma^phi as the compound rule has it, beside the solved ones
    table: pd.DataFrame                # family_table's rows (with latency_ms and latency_ratio when timed)
    solved_on: str                     # "FLOPs", "activations", "latency predicted by the table", ...
    drift: str                         # worst_deviation's sentence, on the cost the family was judged on


def study_family(config: StudyConfig, coefficients: tuple[float, float, float], phis: Sequence[float],
                 progress: Callable[[str], None] | None = None, *, timed: bool = True,
                 build_table: bool = True) -> StudyFamily:
    """The family of a study's coefficients on its base, each member's resolution solved so that its cost is
    target^phi times the base's, on the study's own cost: a latency study's family doubles its latency, not
    its FLOPs, and is then timed for real, whatever predicted it, and judged on those timings.

    `timed` off solves a latency study's family on FLOPs instead and times nothing (the report: eight members
    up to B7 size would each take seconds to time); `build_table` off measures instead of building a missing
    latency table (a command that reads a study does not spend minutes building one). Pieces the run's own
    table gains while members are solved are saved with it, so the next solve predicts the same resolutions
    without timing them again."""
    s, base = config.search, load_spec(config.space)
    on = s.cost if timed else ("flops" if s.cost == "latency" else s.cost)
    cost, words, table = study_cost(config, build_table, progress) if on != "flops" else (flops_cost(3, 1000),
                                                                                          "FLOPs", None)
    known = len(table.entries) if table else 0
    if progress:
        then = f", then its latency timed on {s.latency.device}" if on == "latency" else ""
        progress(f"materializing the family: phi {', '.join(f'{p:g}' for p in phis)}, each member's resolution "
                 f"solved on its {words}{then}")
    if progress and on == "latency":        # each timing of a large member takes seconds: say each one
        solving_cost = cost

        def cost(spec: NetworkSpec, resolution: int) -> float:
            value = solving_cost(spec, resolution)
            progress(f"  {spec.name} at {resolution} px: {value:.1f} ms")
            return value
    members, nominal = exact_cost_family(base, *coefficients, phis, s.target, cost=cost)
    if table and len(table.entries) > known and not s.latency_table:    # a table the study names is the user's
        table.save(table_path(config))
        if progress:
            progress(f"kept the {len(table.entries) - known} pieces timed for the family in {table_path(config)}")
    family = family_table(members, reference=base, target=s.target, nominal_resolutions=nominal)
    if on == "latency":
        family = with_measured_latency(family, members, s.latency, progress)
    return StudyFamily(members, nominal, family, words, worst_deviation(family, s.target, on))


def write_family(members: Sequence[Member], out_dir: Path, save_models: bool = False,
                 num_classes: int = 1000, in_channels: int = 3) -> list[Path]:
    """One spec YAML per member (and, with `save_models`, the state dict of a freshly built model)."""
    try:
        return _write_members(members, out_dir, save_models, num_classes, in_channels)
    except OSError as e:
        raise InvalidField("out", str(out_dir), f"a writable folder ({e.strerror})") from None


def _write_members(members: Sequence[Member], out_dir: Path, save_models: bool, num_classes: int,
                   in_channels: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for _, spec in members:
        written.append(save_spec(spec, out_dir / f"{spec.name}.yaml"))
        if save_models:
            path = out_dir / f"{spec.name}.pt"
            torch.save(build_model(spec, num_classes, in_channels).state_dict(), path)
            written.append(path)
    return written
