"""Materialize a family: members from coefficients or the paper's table, their measured cost, files.

The table compares measured FLOPs of each rounded member against phi = 0, next to the 2^phi a
compound rule with alpha*beta^2*gamma^2 = 2 promises; `phi_measured` = log2(measured ratio) shows
where a member really sits (the paper's B7 lands near 6.6).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from nas.builder import build_model
from nas.config import LatencySettings
from nas.errors import NasError
from nas.flops import activations_at, flops_at, params_of
from nas.scaling import PAPER_TABLE, compound, paper_member, scale
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec, save_spec

Member = tuple[float, NetworkSpec]       # (phi, the rounded network)
MAX_PHI = 16
MAX_MEMBERS = 64

_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")


def parse_phis(text: str) -> list[float]:
    """'0-7' (whole steps from the low end), '0,0.5,1' or '3'."""
    m = _RANGE.match(text)
    if m:
        lo, hi = float(m[1]), float(m[2])
        if lo > hi:
            raise NasError(f"--phi {text}: the range is empty, write it low-high such as 0-7")
        if hi - lo >= MAX_MEMBERS:
            raise NasError(f"--phi {text}: {int(hi - lo) + 1} members, at most {MAX_MEMBERS}")
        phis = [lo + i for i in range(int(hi - lo) + 1)]
    else:
        try:
            phis = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            phis = []
    if not phis:
        raise NasError(f"--phi {text!r} is not a number, a range like 0-7 or a list like 0,0.5,1")
    for p in phis:
        if not p >= 0:
            raise NasError(f"--phi {p:g} is negative: phi must be >= 0")
        if p > MAX_PHI:
            raise NasError(f"--phi {p:g}: at most {MAX_PHI} (2^{MAX_PHI} times the base's cost)")
    if len(phis) > MAX_MEMBERS:
        raise NasError(f"--phi {text}: {len(phis)} members, at most {MAX_MEMBERS}")
    return phis


def width_depth_member(base: NetworkSpec, width: float, depth: float) -> NetworkSpec:
    """`base` itself, or base scaled by a width and depth multiplier at its resolution (<base>-w<W>-d<D>)."""
    if (width, depth) == (1.0, 1.0):
        return base
    return scale(base, width, depth, base.resolution, name=f"{base.name}-w{width:g}-d{depth:g}")


def networks_from_flags(space: str | None = None, resolution: int | None = None, stem_stride: int | None = None,
                        width: float = 1.0, depth: float = 1.0, preset: str | None = None,
                        alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
                        phi: str | None = None, default_phis: str | None = "0-3",
                        resolution_multiple: int = 1, one: bool = False) -> list[Member]:
    """The networks a command's flags mean: one base scaled by width and depth, the paper's table
    (`preset="paper"`), or a compound family (alpha, beta, gamma), over the phis of `phi`.

    `resolution` replaces the base's; the paper's members then keep their resolution's ratio to B0's.
    Contradictory or incomplete flags are one-line errors naming the flags; `one` asks for exactly one network.
    """
    base = load_spec(space or "efficientnet_b0")
    if resolution:
        base = base.replace(resolution=resolution)
    if stem_stride is not None:
        base = base.replace(stem_stride=stem_stride)
    coeffs = (alpha, beta, gamma)
    compound_given = any(c is not None for c in coeffs)
    if preset and compound_given:
        raise NasError("--preset and --alpha/--beta/--gamma exclude each other: give one of them")
    if not (preset or compound_given):
        if phi is not None:
            raise NasError("--phi picks family members: add --preset paper or --alpha --beta --gamma")
        return [(0.0, width_depth_member(base, width, depth))]
    if (width, depth) != (1.0, 1.0):
        raise NasError("give --width/--depth for one network or a family (--preset, --alpha/--beta/--gamma), "
                       "not both")
    if phi is None and default_phis is None:
        raise NasError("--phi is missing: the compound rule needs all of --alpha --beta --gamma --phi")
    phis = parse_phis(phi or default_phis or "")
    if one and len(phis) != 1:
        raise NasError(f"--phi {phi}: this command takes one network, give one value such as 1")
    if alpha is not None and beta is not None and gamma is not None:
        return compound_family(base, alpha, beta, gamma, phis, resolution_multiple)
    if compound_given:
        raise NasError("a compound family needs all of --alpha --beta --gamma")
    members = paper_family(base, phis)
    if resolution:  # the table's resolutions keep their ratio to B0's on a base of `resolution` px
        b0_resolution = PAPER_TABLE["B0"][2]
        members = [(p, s.replace(resolution=round(s.resolution * resolution / b0_resolution))) for p, s in members]
    return members


@dataclass(frozen=True)
class Materialized:
    """What `nas materialize` builds: members, the base they are measured against, the cost step, the
    compound rule's resolutions when an exact-cost family solved others, and where the coefficients came from."""

    members: list[Member]
    base: NetworkSpec
    target: float = 2.0
    nominal_resolutions: list[int] | None = None
    source: str | None = None
    latency: LatencySettings | None = None     # a latency study's family: time each member on these settings


def materialize_members(space: str | None, preset: str | None,
                        coefficients: tuple[float | None, float | None, float | None], study: str | None,
                        storage: str | None, phi: str, resolution_multiple: int = 1,
                        exact_cost: bool | None = None,
                        progress: Callable[[str], None] | None = None) -> Materialized:
    """The members `nas materialize` asks for: the paper's table (exactly), given coefficients, or a stored
    study's exact winning coefficients. `exact_cost` (default: on for a study, off for given coefficients)
    solves each member's resolution so its measured cost is target^phi times the base's: a study's own cost
    (FLOPs, activations, or latency: predicted by the run's table when it exists and can serve, else timed),
    FLOPs for given coefficients."""
    given = any(c is not None for c in coefficients)
    sources = sum([bool(preset), given, bool(study)])
    if sources > 1:
        raise NasError("--preset, --alpha/--beta/--gamma and --study exclude each other: give one of them")
    if sources == 0 or (given and any(c is None for c in coefficients)):
        raise NasError("give --preset paper, all three of --alpha --beta --gamma, or --study STUDY")
    if preset and exact_cost:
        raise NasError("--exact-cost solves resolutions of a compound family; --preset paper is the paper's table "
                       "as it is: drop one of them")
    source, target, cost, latency = None, 2.0, None, None
    if study:
        from nas.search.results import stored_winner
        from nas.search.scale import study_cost
        from nas.search.storage import find_study_config
        name, study_space, coefficients, target = stored_winner(study, storage)
        space = space or study_space
        config = find_study_config(study, storage)
        source = (f"study '{name}': best coefficients alpha {coefficients[0]:.4g} beta {coefficients[1]:.4g} "
                  f"gamma {coefficients[2]:.4g}")
        if exact_cost is not False and config.search.cost != "flops":
            cost, words, _ = study_cost(config, build_table=False, progress=progress)
            latency = config.search.latency if config.search.cost == "latency" else None
            source += f"; each member's resolution solved on its {words}"
    base = load_spec(space or "efficientnet_b0")
    alpha, beta, gamma = coefficients
    if exact_cost if exact_cost is not None else bool(study):
        assert alpha is not None and beta is not None and gamma is not None
        members, nominal = exact_cost_family(base, alpha, beta, gamma, parse_phis(phi), target, cost=cost)
        return Materialized(members, base, target, nominal, source, latency)
    members = networks_from_flags(space, preset=preset, alpha=alpha, beta=beta, gamma=gamma, phi=phi,
                                  resolution_multiple=resolution_multiple)
    return Materialized(members, base, target, None, source)


def paper_family(base: NetworkSpec, phis: Sequence[float]) -> list[tuple[float, NetworkSpec]]:
    bad = [p for p in phis if p != int(p) or not 0 <= p <= 7]
    if bad:
        raise NasError(f"--preset paper has members 0..7 (B0..B7), not {bad[0]:g}: use whole numbers in 0-7")
    return [(p, paper_member(base, int(p))) for p in phis]


def compound_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: Sequence[float],
                    resolution_multiple: int = 1) -> list[tuple[float, NetworkSpec]]:
    return [(p, compound(base, alpha, beta, gamma, p, resolution_multiple)) for p in phis]


WIDTH_NUDGES = (1.0, 0.99, 1.01, 0.98, 1.02, 0.97, 1.03, 0.96, 1.04, 0.95, 1.05)
"""Width factors an exact-cost member may take when no resolution alone lands within the tolerance."""


def exact_cost_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: Sequence[float],
                      target: float = 2.0, tolerance: float = 0.1,
                      cost: Callable[[NetworkSpec, int], float] | None = None) -> tuple[list[Member], list[int]]:
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
    from nas.search.constraint import closest_resolution

    cost = cost or flops_at
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
    from nas.latency import measure_networks

    ms = measure_networks([spec for _, spec in members], settings, progress=progress)["median_ms"]
    return table.assign(latency_ms=ms.values, latency_ratio=(ms / ms[table["phi"].idxmin()]).round(3).values)


def write_family(members: Sequence[tuple[float, NetworkSpec]], out_dir: Path, save_models: bool = False,
                 num_classes: int = 1000, in_channels: int = 3) -> list[Path]:
    """One spec YAML per member (and, with `save_models`, the state dict of a freshly built model)."""
    check_out_dir(out_dir)
    try:
        return _write_members(members, out_dir, save_models, num_classes, in_channels)
    except OSError as e:
        raise NasError(f"--out {out_dir}: cannot write there ({e.strerror}): give a writable folder") from None


def check_out_dir(out_dir: Path) -> None:
    """Refuse a folder that cannot be one before any work: an existing file, or a place that is not writable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NasError(f"--out {out_dir} is a file: give a folder to write the members into")
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise NasError(f"--out {out_dir}: {existing} is not writable: give a writable folder")


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
