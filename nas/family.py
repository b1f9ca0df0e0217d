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

from nas.config import StudyConfig
from nas.cost import CostFn, closest_resolution, flops_cost, study_cost
from nas.errors import NasError
from nas.flops import activations_at, flops_at, params_of
from nas.latency import LatencyTable, measure_networks, table_path
from nas.latency.table import UntimedOnDevice
from nas.scaling import compound, paper_member, scale
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec, save_spec
from nas.validation import InvalidField, file_in

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
                      target: float = 2.0, tolerance: float = 0.1, cost: CostFn | None = None,
                      nudges: Sequence[float] = WIDTH_NUDGES,
                      top: Callable[[NetworkSpec], int] | None = None) -> tuple[list[Member], list[int]]:
    """(members, their nominal resolutions): members whose measured cost is target^phi times the base's.

    Depth and width are the compound rule's (alpha^phi, beta^phi, rounded as always); the resolution is
    solved on measured cost instead of taken as gamma^phi: FLOPs by default, or the study's own cost
    (`cost(spec, resolution)`: activations, or latency predicted or timed), so that a latency search's family
    doubles its latency, not its FLOPs. Rounding repeats up makes depth cost more than alpha says, and a
    nominal alpha * beta^2 * gamma^2 below the target compounds: the quickstart winner's nominal family
    measures 59x at phi 7 where 128x is asked. Cost is a staircase in resolution (at total stride 32 one pixel
    can add a row and a column to the last feature maps), so when no resolution lands within `tolerance` the
    width multiplier is nudged by up to 5 % (`nudges`, WIDTH_NUDGES by default) to move channel rounding onto
    another step; the nearest member found is kept either way (docs/scaling.md). `top` bounds each member's
    resolution (default MAX_RESOLUTION): a table of another device predicts up to its ladder's top only."""
    cost = cost or flops_cost(3, 1000)
    base_cost = cost(base, base.resolution)
    members, nominal = [], []
    for phi in phis:
        member = compound(base, alpha, beta, gamma, phi)
        nominal.append(member.resolution)
        if phi > 0:
            wanted = base_cost * target ** phi
            candidates = []
            for nudge in nudges:
                spec = member if nudge == 1.0 else scale(base, member.width_mult * nudge, member.depth_mult,
                                                         member.resolution, member.dropout, member.name)
                cost_at = functools.cache(functools.partial(cost, spec))     # a timed cost is timed once
                high = top(spec) if top else MAX_RESOLUTION
                r = closest_resolution(cost_at, wanted, min(spec.resolution, high), base.resolution, high)
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


def worst_deviation(table: pd.DataFrame, target: float = 2.0, cost: str = "flops", words: str | None = None) -> str:
    """One sentence: how far the family's measured cost (FLOPs, activations or timed latency: the column of
    COST_COLUMNS) strays from target^phi, at its worst member; `words` names the cost otherwise (a latency
    predicted for another device)."""
    column, measured = COST_COLUMNS[cost]
    words = f"{words} strays" if words else measured
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


def with_latency(table: pd.DataFrame, ms: Sequence[float]) -> pd.DataFrame:
    """`table` (family_table's) with each member's latency in ms, `latency_ratio` to the member with the smallest
    phi, to read against target_ratio."""
    at = pd.Series(list(ms), index=table.index, dtype=float)
    return table.assign(latency_ms=at.round(3).values, latency_ratio=(at / at[table["phi"].idxmin()]).round(3).values)


def _device_members(table: LatencyTable, members: Sequence[Member]) -> list[float]:
    """Each member's latency on the probe's device, as its table predicts it (nothing here can time for it)."""
    return [table.predict(spec, spec.resolution) for _, spec in members]


def _untimed_on_device(config: StudyConfig, phis: Sequence[float], e: UntimedOnDevice) -> NasError:
    """The one line a family on a probed table says when the table lacks a member's pieces even at the base's
    resolution (its probe was exported without the family, or for other phis): what to export, time and import."""
    s, hi = config.search, max(phis)
    ranged = f"0-{hi:g}" if list(phis) == list(range(int(hi) + 1)) else ",".join(f"{p:g}" for p in phis)
    return NasError(f"the latency table {s.latency_table} (timed on the device by the probe) lacks {len(e.parts)} "
                    f"pieces of the family's {e.spec.name} (width {e.spec.width_mult:.4g}) at {e.resolution} px "
                    f"(first: {e.parts[0]}): export the study's table with its family (nas latency probe "
                    f"export --study {config.name} --phi {ranged} --out DIR), time it on the device (python3 "
                    f"DIR/probe_device.py DIR) and import it (nas latency probe import DIR/results.json --out "
                    f"{s.latency_table})")


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
    its FLOPs, and is then timed for real, whatever predicted it, and judged on those timings. A table timed on
    another device by the probe is that device's latency: the family is solved on its predictions (at the
    compound rule's widths, the only ones its probe held) and its latency column is those predictions, never a
    timing on this machine; a member whose pieces the table lacks is a one-line error saying what to export.

    `timed` off solves a latency study's family on FLOPs instead and times nothing (the report: eight members
    up to B7 size would each take seconds to time); `build_table` off measures instead of building a missing
    latency table (a command that reads a study does not spend minutes building one). Pieces the run's own
    table gains while members are solved are saved with it, so the next solve predicts the same resolutions
    without timing them again."""
    s, base = config.search, load_spec(config.space)
    on = s.cost if timed else ("flops" if s.cost == "latency" else s.cost)
    cost, words, table = study_cost(config, build_table, progress) if on != "flops" else (flops_cost(3, 1000),
                                                                                          "FLOPs", None)
    known, probed = (len(table.entries), table.probed) if table else (0, False)
    if progress:
        then = f", then its latency timed on {s.latency.device}" if on == "latency" and not probed else ""
        progress(f"materializing the family: phi {', '.join(f'{p:g}' for p in phis)}, each member's resolution "
                 f"solved on its {words}{then}")
    if progress and on == "latency":        # each timing of a large member takes seconds: say each one
        solving_cost = cost

        def cost(spec: NetworkSpec, resolution: int) -> float:
            value = solving_cost(spec, resolution)
            progress(f"  {spec.name} at {resolution} px: {value:.1f} ms")
            return value
    reach = (lambda spec: table.reach(spec, base.resolution, MAX_RESOLUTION)) if table and probed else None
    try:       # the probe's device timed the compound rule's widths only (no nudged ones), up to its ladder's top
        members, nominal = exact_cost_family(base, *coefficients, phis, s.target, cost=cost,
                                             nudges=(1.0,) if probed else WIDTH_NUDGES, top=reach)
    except UntimedOnDevice as e:
        raise _untimed_on_device(config, phis, e) from None
    if table and len(table.entries) > known and not s.latency_table:    # a table the study names is the user's
        table.save(table_path(config))
        if progress:
            progress(f"kept the {len(table.entries) - known} pieces timed for the family in {table_path(config)}")
    family = family_table(members, reference=base, target=s.target, nominal_resolutions=nominal)
    if table and probed:
        family = with_latency(family, _device_members(table, members))
    elif on == "latency":
        family = with_latency(family, measure_networks([spec for _, spec in members], s.latency,
                                                       progress=progress)["median_ms"])
    drift = worst_deviation(family, s.target, on, words if probed else None)
    if reach:
        capped = [f"phi {phi:g} at {spec.resolution} px" for phi, spec in members
                  if phi > 0 and spec.resolution == reach(spec)]
        if capped:
            drift += (f"; {', '.join(capped)} stop at the top of the device table's ladder (this device's latency "
                      f"grows slower with resolution than the ladder assumed, docs/latency.md)")
    return StudyFamily(members, nominal, family, words, drift)


def write_family(members: Sequence[Member], out_dir: Path) -> list[Path]:
    """One spec YAML per member, `out_dir/<name>.yaml`, which `--space FILE` of `nas train` and `nas latency`
    read back. A name that is no plain file name is refused before anything is written."""
    paths = [file_in(out_dir, spec.name, ".yaml") for _, spec in members]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [save_spec(spec, path) for (_, spec), path in zip(members, paths)]
    except OSError as e:
        raise InvalidField("out", str(out_dir), f"a writable folder ({e.strerror})") from None
