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
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.config import StudyConfig
from nas.errors import NasError
from nas.latency.evaluate import build_calibrated_table
from nas.latency.measure import measurement_conditions
from nas.latency.table import LatencyTable
from nas.scaling import examined_points, target_member
from nas.spec import NetworkSpec, load_spec

TABLE_FILE = "latency_table.json"
MAX_P90_ERROR_PCT = 10.0      # held-out: 90 % of networks predicted within this ...
MIN_SPEARMAN = 0.9            # ... and ranked at least this well, or the search measures instead
RESOLUTION_STEP = 32          # rungs of the ladder (px); B0's deepest maps then grow one pixel a rung
CALIBRATION_NETWORKS = 12
HELD_OUT_NETWORKS = 24      # the p90 of 12 was their second-worst network: one noisy timing decided


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


def build_search_table(config: StudyConfig, progress: Callable[[str], None] | None = None) -> LatencyTable:
    """Time every piece of the networks the search costs: the base, and per beta of the grid the deepest alpha
    (it repeats every stage, so its pieces are all any depth uses) on a ladder of resolutions up to the top one
    (at the smallest alpha). Calibrate on random candidates (seed 1), evaluate on others (seed 2)."""
    base, points = load_spec(config.space), _points(config)
    r0 = base.resolution
    alpha, low = max(a for a, _ in points), min(a for a, _ in points)
    build = [base] + [target_member(base, alpha, b, r) for b in sorted({b for _, b in points})
                      for r in range(r0, _top_resolution(r0, low, b, config) + RESOLUTION_STEP, RESOLUTION_STEP)]
    table, _ = build_calibrated_table(build, _random_candidates(base, config, CALIBRATION_NETWORKS, 1),
                                      _random_candidates(base, config, HELD_OUT_NETWORKS, 2), config.search.latency,
                                      sample_description(config), progress=progress)
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
        say(f"latency table {path} is too inaccurate to search with ({shown}; wanted p90 <= {MAX_P90_ERROR_PCT:g} % "
            f"and rho >= {MIN_SPEARMAN:g}): measuring every candidate instead")
        return None
    return table
