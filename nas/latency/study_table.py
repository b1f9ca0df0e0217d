"""The table a coefficient search's latency constraint predicts from, instead of timing every candidate.

With `search.cost: latency` and `search.predictor: table`, the constraint predicts each candidate's
latency from a lookup table (nas.latency.table) built once for the device: every piece of the full-size
networks the search costs (each width of the beta grid, all stages repeated, on a ladder of
resolutions from the base's up to where the constraint can lead, between whose rungs the table
interpolates), calibrated on whole networks and judged on held-out ones, drawn like the candidates. Building is part of the run
when the run's own table (runs/<name>/latency_table.json) is missing, damaged, or was measured under
other settings or for other ranges. A table the study names (`search.latency_table`) is the user's
and is never rebuilt: a missing, damaged or foreign one is bad input. A table whose held-out error
is above the thresholds is not trusted: the search says so in one line and times every candidate.

A table timed on another device by the probe (nas.latency.probe) can also hold the pieces of the family
the search hands over (`family_networks`: exported with `--phi`), so that one round trip to the device
serves both the search and its family; nothing on this machine can time for that device, so such a table
that fails its held-out check is refused rather than replaced by timings taken here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nas.config import StudyConfig
from nas.errors import NasError
from nas.latency.evaluate import TableNetworks, build_calibrated_table
from nas.latency.measure import measurement_conditions
from nas.latency.table import LatencyTable
from nas.scaling import examined_points, target_member
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec

TABLE_FILE = "latency_table.json"
MAX_P90_ERROR_PCT = 10.0      # held-out: 90 % of networks predicted within this ...
MIN_SPEARMAN = 0.9            # ... and ranked at least this well, or the search measures instead
RESOLUTION_STEP = 32          # rungs of the ladder (px); B0's deepest maps then grow one pixel a rung
CALIBRATION_NETWORKS = 12
HELD_OUT_NETWORKS = 24      # the p90 of 12 was their second-worst network: one noisy timing decided
FAMILY_RUNG_RATIO = math.sqrt(2)   # a family's ladder: each rung this much above the last (interpolated between)


def table_path(config: StudyConfig) -> Path:
    return Path(config.search.latency_table) if config.search.latency_table else config.run_dir / TABLE_FILE


def sample_description(config: StudyConfig) -> dict[str, Any]:
    """What the search's table is built from; a table built from anything else is rebuilt."""
    s, r0 = config.search, load_spec(config.space).resolution
    return {"search": "coefficients", "space": config.space, "alpha": list(s.alpha), "beta": list(s.beta),
            "step": s.step, "target": s.target, "tolerance": s.tolerance, "resolution": r0,
            "resolution_step": RESOLUTION_STEP,
            "calibration": CALIBRATION_NETWORKS, "held_out": HELD_OUT_NETWORKS}


def _points(config: StudyConfig) -> list[tuple[float, float]]:
    s = config.search
    return examined_points(s.alpha, s.beta, s.step, s.target, s.tolerance)


def _top_resolution(r0: int, alpha: float, beta: float, config: StudyConfig) -> int:
    """The highest resolution the search asks of a network of depth alpha and width beta: where its nominal
    cost ratio reaches the top of the tolerance, plus 15 % for rounding, within [r0, 2 r0] (solve_resolution's
    range). A resolution outside the table is timed when asked for, not predicted."""
    s = config.search
    gamma = math.sqrt(s.target * (1 + s.tolerance) / (alpha * beta * beta))
    return min(2 * r0, max(r0, math.ceil(1.15 * r0 * gamma)))


def _random_candidates(base: NetworkSpec, config: StudyConfig, n: int, seed: int) -> list[NetworkSpec]:
    """`n` full-size networks like those the search costs, the same for the same seed: alpha and beta from its
    grid, a resolution up to the top one (the base's cost ratio and up)."""
    rng, r0 = random.Random(seed), base.resolution
    out = []
    for _ in range(n):
        a, b = rng.choice(_points(config))
        out.append(target_member(base, a, b, rng.randint(r0, _top_resolution(r0, a, b, config))))
    return out


def family_networks(config: StudyConfig, phis: Sequence[float]) -> list[NetworkSpec]:
    """Networks whose pieces are all that the family of any point of the search's grid needs at `phis`
    (nas.family.study_family solving each member's resolution on the table): per beta of the grid and phi other
    than 0 and 1,
    width beta^phi (as the compound rule rounds it) at the deepest alpha (every stage repeated: all the pieces
    any depth uses), on a ladder of resolutions from the base's, each rung FAMILY_RUNG_RATIO above the last, up
    to G^phi times the base's, G the highest gamma the search can give that beta (its top resolution over the
    base's). Phi 1 is the search's own ladder; a device whose latency grows slower with resolution than that
    needs members above the ladder, and the family says so in one line."""
    base, points = load_spec(config.space), _points(config)
    r0 = base.resolution
    alpha, out = max(a for a, _ in points), []
    for b in sorted({b for _, b in points}):
        gamma = _top_resolution(r0, min(a for a, bb in points if bb == b), b, config) / r0
        for phi in (p for p in dict.fromkeys(phis) if p not in (0, 1)):
            top, rungs = min(MAX_RESOLUTION, math.ceil(r0 * gamma ** phi)), [r0]
            while rungs[-1] < top:
                rungs.append(min(top, max(rungs[-1] + 1, math.ceil(rungs[-1] * FAMILY_RUNG_RATIO))))
            out += [target_member(base, alpha, b ** phi, r) for r in rungs]
    return out


def search_table_networks(config: StudyConfig, family_phis: Sequence[float] = ()) -> TableNetworks:
    """What the search's table is made of: every piece of the networks the search costs, the base and per beta
    of the grid the deepest alpha (it repeats every stage, so its pieces are all any depth uses) on a ladder of
    resolutions up to the top one (at the smallest alpha); calibrated on random candidates (seed 1), judged on
    others (seed 2). With `family_phis` (a probe's export), also the pieces of the family at those phis
    (family_networks), predicted with the same calibration."""
    base, points = load_spec(config.space), _points(config)
    r0 = base.resolution
    alpha, low = max(a for a, _ in points), min(a for a, _ in points)
    build = [base] + [target_member(base, alpha, b, r) for b in sorted({b for _, b in points})
                      for r in range(r0, _top_resolution(r0, low, b, config) + RESOLUTION_STEP, RESOLUTION_STEP)]
    described = sample_description(config)
    if family_phis:
        build += family_networks(config, family_phis)
        described["family_phis"] = sorted(set(family_phis))
    return TableNetworks(tuple(build), tuple(_random_candidates(base, config, CALIBRATION_NETWORKS, 1)),
                         tuple(_random_candidates(base, config, HELD_OUT_NETWORKS, 2)), described)


def build_search_table(config: StudyConfig, progress: Callable[[str], None] | None = None) -> LatencyTable:
    """The search's table (search_table_networks), timed on this machine in one measurement."""
    n = search_table_networks(config)
    table, _ = build_calibrated_table(n.build, n.calibration, n.held_out, config.search.latency, n.built_from,
                                      progress=progress)
    return table


def _stale(table: LatencyTable, config: StudyConfig) -> str | None:
    """Why the run's own table cannot serve this search (None: it can)."""
    s = config.search
    ours = measurement_conditions(s.latency)
    changed = next((k for k in ours.keys() | table.conditions.keys() if ours.get(k) != table.conditions.get(k)), None)
    if changed:
        return f"was measured with {changed} {table.conditions.get(changed)}, not {ours.get(changed)}"
    field = next((f.name for f in dataclasses.fields(s.latency)
                  if getattr(table.settings, f.name) != getattr(s.latency, f.name)), None)
    if field:
        return f"was measured with {field} {getattr(table.settings, field)}, not {getattr(s.latency, field)}"
    if json.loads(json.dumps(sample_description(config))) != table.built_from:
        return "was built for other search ranges"
    return None


def search_table(config: StudyConfig, progress: Callable[[str], None] | None = None,
                 build: bool = True) -> LatencyTable | None:
    """The table the latency constraint predicts from, or None when its held-out error is too large to trust
    (the search then measures). The run's own table is (re)built here when it cannot serve (with `build` off,
    None instead: a command that only reads a study does not spend minutes building); progress lines say
    what the table holds and its held-out error."""
    say = progress or (lambda _: None)
    path = table_path(config)
    if config.search.latency_table:
        table = LatencyTable.load(path)
        table.check(config.search.latency)
    else:
        try:
            table = LatencyTable.load(path)
            why = _stale(table, config)
        except NasError:
            why = "does not exist" if not path.exists() else "cannot be read"
        if why and not build:
            say(f"latency table {path} {why}: measuring instead")
            return None
        if why:
            say(f"latency table {path} {why}: building one for this device (every piece of the search's networks, "
                f"then calibration and a held-out check on whole networks)")
            table = build_search_table(config, progress)
            table.save(path)
    say(table.describe(path))
    h = table.held_out
    if not (h and h.p90_abs_error_pct <= MAX_P90_ERROR_PCT and h.spearman >= MIN_SPEARMAN):   # NaN: no
        shown = (f"held-out p90 error {h.p90_abs_error_pct:.1f} %, Spearman rho {h.spearman:.3f}" if h
                 else "no held-out error")
        if table.probed:
            raise NasError(f"latency table {path} was timed on {table.conditions.get('hardware')} by the probe and is "
                           f"too inaccurate to search with ({shown}; wanted p90 <= {MAX_P90_ERROR_PCT:g} % and rho >= "
                           f"{MIN_SPEARMAN:g}), and this machine cannot time for that device: probe again on a quiet "
                           f"device with more rounds (probe_device.py --repeats) and import those timings")
        say(f"latency table {path} is too inaccurate to search with ({shown}; wanted p90 <= {MAX_P90_ERROR_PCT:g} % "
            f"and rho >= {MIN_SPEARMAN:g}): measuring every candidate instead")
        return None
    return table
