"""A latency search's table (search.predictor: table): built once for the device, reused, rebuilt when stale,
not trusted when its held-out error is too large, and a user's table that is missing, damaged or foreign is
one line and exit 2. The base network is B0 shrunk to 32 px so that a whole search table takes a second or two.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from nas.config import load_study
from nas.cost import study_cost
from nas.errors import NasError
from nas.family import study_family
from nas.latency import build_table, forget_measurements, sample_networks, search_table, study_table
from nas.latency import measure as measuring
from nas.scaling import target_member
from nas.search.constraint import feasible_grid
from nas.spec import load_spec, save_spec

STUDY = """\
name: {name}
space: {space}
proxy: {{dataset: digits, per_class: 20, resolution: 20, width: 1.0, depth: 1.0, stem_stride: 1,
        train: {{epochs: 1, batch_size: 32, threads: 1}}}}
search: {{sampler: grid, alpha: [1.0, 1.3], beta: [1.0, 1.1], step: 0.1, tolerance: 0.15, family_phis: 1,
         cost: latency, predictor: table, latency: {{threads: 1, warmup: 1, repeats: {repeats}}}{extra}}}
pruner: {{type: none}}
"""


@pytest.fixture
def study(tmp_path, monkeypatch, b0):
    """Write a latency study on a 32 px B0 (runs/ lands in tmp_path); calibrate and check on 4 networks each.
    No network latency kept in the process from another test is used, and none is left behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study_table, "CALIBRATION_NETWORKS", 4)
    monkeypatch.setattr(study_table, "HELD_OUT_NETWORKS", 4)
    forget_measurements()
    stages = tuple(dataclasses.replace(st, channels=max(8, st.channels // 4), repeats=1) for st in b0.stages)
    tiny = b0.replace(name="b0-tiny", stages=stages, stem_channels=8, head_channels=64, resolution=32)
    space = save_spec(tiny, tmp_path / "b0_tiny.yaml")

    def write(name: str = "lat", repeats: int = 5, extra: str = "") -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(STUDY.format(name=name, space=space, repeats=repeats, extra=extra))
        return str(path)
    yield write
    forget_measurements()


def _held_out(path, **figures) -> None:
    """Overwrite the table's stored held-out error (what decides whether a search trusts it)."""
    d = json.loads(path.read_text())
    d["held_out"].update(figures)
    path.write_text(json.dumps(d))


def test_the_runs_table_is_built_reused_and_rebuilt_when_measured_otherwise(study, tmp_path):
    lines: list[str] = []
    search_table(load_study(study()), lines.append)
    path = Path("runs/lat/latency_table.json")        # relative to tmp_path, where the study runs
    assert any("does not exist: building one for this device" in line for line in lines), lines
    assert any(line.startswith(f"latency table {path}: ") and "held-out networks" in line for line in lines)
    built = path.stat().st_mtime_ns

    lines.clear()
    search_table(load_study(study()), lines.append)
    assert not any("building" in line for line in lines) and path.stat().st_mtime_ns == built

    lines.clear()
    search_table(load_study(study(repeats=6)), lines.append)       # other settings: stale, rebuilt
    assert any("was measured with repeats 5, not 6: building one" in line for line in lines), lines
    assert json.loads(path.read_text())["settings"]["repeats"] == 6


def test_an_inaccurate_table_falls_back_to_measuring_in_one_line(study, tmp_path, monkeypatch):
    cfg = load_study(study())
    search_table(cfg)
    path = Path("runs/lat/latency_table.json")        # relative to tmp_path, where the study runs
    _held_out(path, p90_abs_error_pct=55.0, spearman=0.99)
    lines: list[str] = []
    assert search_table(cfg, lines.append) is None
    fallback = [line for line in lines if "too inaccurate" in line]
    assert len(fallback) == 1 and "held-out p90 error 55.0 %" in fallback[0] and "measuring every candidate" in \
        fallback[0]
    assert study_cost(cfg)[1:] == ("latency measured on cpu", None)
    _held_out(path, p90_abs_error_pct=1.0, spearman=0.5)           # ranks badly: not trusted either
    assert search_table(cfg) is None
    _held_out(path, p90_abs_error_pct=1.0, spearman=0.99)
    assert search_table(cfg) is not None

    # Trusted, the grid's constraint checks predict every candidate: no network is measured whole, and each
    # candidate's ratio is the one the table predicts for its two networks.
    def measured(*args, **kwargs):
        raise AssertionError("a network was measured whole")
    monkeypatch.setattr(measuring, "measure_specs", measured)
    cost, words, table = study_cost(cfg)
    assert words == "latency predicted by the table" and table is not None
    s, base = cfg.search, load_spec(cfg.space)
    feasible, examined = feasible_grid(base, s.alpha, s.beta, s.step, cost, s.target, s.tolerance)
    assert examined == 8 and feasible                 # doubling the depth alone (alpha 1.1 of one block) fits
    for c in feasible:
        predicted = table.predict(target_member(base, c.alpha, c.beta, c.resolution1)) / table.predict(base)
        assert c.cost1 / c.cost0 == pytest.approx(predicted, rel=1e-12) and c.feasible


def test_pieces_timed_for_the_family_are_saved_with_the_runs_table(study):
    """The family's larger members need pieces past the table's ladder; they are timed once, kept in the run's
    table, and the next solve (`nas materialize --study`, a rerun) predicts the same resolutions from them."""
    cfg = load_study(study())
    search_table(cfg)
    path = Path("runs/lat/latency_table.json")        # relative to tmp_path, where the study runs
    _held_out(path, p90_abs_error_pct=1.0, spearman=0.99)         # trusted, whatever this machine's noise
    before = len(json.loads(path.read_text())["entries"])
    lines: list[str] = []
    family = study_family(cfg, (1.0, 1.1, 1.15), [0, 1, 2], lines.append).table
    after = len(json.loads(path.read_text())["entries"])
    assert after > before and f"kept the {after - before} pieces timed for the family in {path}" in lines, lines
    lines.clear()
    again = study_family(cfg, (1.0, 1.1, 1.15), [0, 1, 2], lines.append).table
    assert list(again["resolution"]) == list(family["resolution"]) and not any("kept the" in x for x in lines)
    assert len(json.loads(path.read_text())["entries"]) == after


def test_predictor_table_needs_a_latency_cost(study):
    path = Path(study())
    path.write_text(path.read_text().replace("cost: latency, ", ""))
    with pytest.raises(NasError, match="'search.predictor' is 'table': must be measure unless search.cost is latency"):
        load_study(path)


# ------------------------------------------------------------------------- a user's table: bad input

def _one_line_exit_2(code: int, out: str, err: str, match: str) -> None:
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and match in err, err


def test_a_missing_or_damaged_table_named_by_the_study_is_one_line(run_cli, study, tmp_path):
    _one_line_exit_2(*run_cli("scale", "run", study(extra=", latency_table: mine.json")),
                     "latency table mine.json does not exist: build one with nas latency table build")
    (tmp_path / "mine.json").write_text('{"format": "effnas-latency-table/1", "entr')
    _one_line_exit_2(*run_cli("scale", "run", study(extra=", latency_table: mine.json")),
                     "mine.json: not a readable JSON latency table")


def test_a_table_for_another_device_named_by_the_study_is_one_line(run_cli, study, tmp_path, b0):
    cfg = load_study(study())
    table = build_table(sample_networks(b0, 1, 0, 16), cfg.search.latency)
    table.conditions["hardware"] = "Some Other CPU"
    table.save(tmp_path / "other.json")
    _one_line_exit_2(*run_cli("scale", "run", study(extra=", latency_table: other.json")),
                     "measured with hardware Some Other CPU")


@pytest.mark.slow
def test_a_latency_search_with_a_trusted_table_runs_and_times_its_family(run_cli, study):
    """End to end (under a minute on 2 cores): with the run's table in place and trusted (its stored held-out error set, so
    this machine's noise decides nothing), the grid's ratios and the family's members are predicted by the
    table, and the members then measured for real; `nas materialize --study` rebuilds the same family from
    the stored study and the run's table; the report says how it solved its family."""
    path = Path("runs/lat/latency_table.json")        # relative to tmp_path, where the study runs
    search_table(load_study(study()))
    _held_out(path, p90_abs_error_pct=1.0, spearman=0.99)
    code, out, err = run_cli("scale", "run", study(), "--phi", "0-1", "--format", "json")
    assert code == 0, err
    assert "building one" not in err and "too inaccurate" not in err
    assert f"latency table {path}: " in err and "error on 4 held-out networks" in err and "p90 1.0 %" in err
    assert re.search(r"grid \[1/\d+\] .*, predicted ratio", err) and " measured ratio" not in err, err
    assert ("each member's resolution solved on its latency predicted by the table, then its latency timed on cpu"
            in err), err
    result = json.loads(out)
    family = result["family"]
    assert [m["phi"] for m in family] == [0, 1] and family[0]["latency_ratio"] == 1.0
    assert all(m["latency_ms"] > 0 for m in family)
    assert result["family_drift"].startswith("the family's measured latency strays from 2^phi by at most")
    code, out, err = run_cli("materialize", "--study", study(), "--phi", "0-1", "--format", "json")
    assert code == 0, err
    assert "each member's resolution solved on its latency predicted by the table" in err
    again = json.loads(out)
    # Predicted by the same table (with the pieces the run timed for its family, saved): the same resolutions.
    assert [m["resolution"] for m in again] == [m["resolution"] for m in family] and "latency_ms" in again[1]
    # The report solves a latency study's eight members on FLOPs (timing them would take minutes) and says so.
    code, out, err = run_cli("report", study())
    assert code == 0, err
    page = Path(out.strip()).read_text()
    assert "a latency study: its family solved on latency and timed is what nas materialize --study" in page
