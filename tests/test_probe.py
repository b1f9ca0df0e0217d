"""The device probe: export for a device, time there with nothing of effnas, read the timings back.

The probe runs in a subprocess whose Python refuses to import torch and nas (an import hook installed before
the probe runs, under `python -I`), on ONNX Runtime's CPU provider, on tiny networks at 32 px with 3 rounds,
so every probe run takes a second or two. What is asserted is structure, never a timing: which files were
timed how often, what a table built from the timings holds, which inputs are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import nas.latency.measure  # noqa: E402
from nas.config import load_study  # noqa: E402
from nas.cost import study_cost  # noqa: E402
from nas.errors import NasError  # noqa: E402
from nas.family import study_family  # noqa: E402
from nas.latency import (  # noqa: E402
    LatencyTable,
    forget_measurements,
    probe_device,  # noqa: E402
    search_table,
    study_table,
)
from nas.latency.evaluate import sampled_table_networks  # noqa: E402
from nas.latency.pieces import pieces  # noqa: E402
from nas.latency.probe import ProbeResults, export_table_probe, network_key  # noqa: E402
from nas.scaling import scale  # noqa: E402
from nas.spec import save_spec  # noqa: E402

BLOCKED = """\
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "nas"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the probe must not need it)", name=name)
        return None
sys.meta_path.insert(0, Refuse())
for name in [m for m in sys.modules if m.split(".")[0] in ("torch", "nas")]:
    del sys.modules[name]
script, *sys.argv = sys.argv[1:]
sys.argv.insert(0, script)
runpy.run_path(script, run_name="__main__")
"""


def device_python(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -I` with torch and nas unimportable: a device that has only onnxruntime and numpy."""
    return subprocess.run([sys.executable, "-I", "-c", BLOCKED, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny(b0):
    """B0's first four stages, a quarter as wide, one block each: few distinct pieces, so a quick export."""
    stages = tuple(dataclasses.replace(st, channels=max(8, st.channels // 4), repeats=1) for st in b0.stages[:4])
    return b0.replace(name="b0-tiny", stages=stages, stem_channels=8, head_channels=64, resolution=32)


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    """A table's probe folder: 3 build, 3 calibration and 3 held-out networks of a tiny space at 32 px."""
    out = tmp_path_factory.mktemp("probe") / "export"
    export_table_probe(sampled_table_networks(tiny, "b0-tiny", 3, 0, 3, 3, 32), out, 1, 1, 3)
    return out


@pytest.fixture(scope="module")
def results(folder):
    done = device_python(folder / "probe_device.py", folder, "--threads", "1")
    assert done.returncode == 0, done.stderr
    return folder / "results.json"


def test_the_probe_runs_without_torch_or_nas(folder):
    refused = subprocess.run(
        [sys.executable, "-I", "-c", BLOCKED.replace('runpy.run_path(script, run_name="__main__")', "import torch"),
         "x"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "ModuleNotFoundError" in refused.stderr and "torch" in refused.stderr
    assert "import nas" not in (folder / "probe_device.py").read_text()


def test_every_file_is_timed_in_every_round_and_summarised(folder, results):
    manifest = json.loads((folder / "manifest.json").read_text())
    d = json.loads(results.read_text())
    ids = [f["id"] for f in manifest["files"]]
    assert manifest["format"] == probe_device.MANIFEST_FORMAT and manifest["opset"] == 17
    assert {f["what"] for f in manifest["files"]} == {"piece", "network"}
    assert all(f["input_shape"] == [1, f["key"].get("piece", {}).get("in_channels", 3), f["resolution"],
                                    f["resolution"]] and (folder / f["file"]).stat().st_size > 0
               for f in manifest["files"])
    assert d["complete"] and len(d["rounds"]) == 3 and all(sorted(r) == sorted(ids) for r in d["rounds"])
    assert d["provider"] == "CPUExecutionProvider" and d["threads"] == 1
    assert d["device"]["onnxruntime"] and d["device"]["cpu"] and d["device"]["platform"]
    for i in ids:
        runs = sorted(r[i] for r in d["rounds"])
        assert d["files"][i]["median_ms"] == runs[1] and d["files"][i]["p10_ms"] == runs[0]
        assert d["files"][i]["p90_ms"] == runs[2] and d["files"][i]["runs"] == 3


def test_a_killed_probe_resumes_without_timing_a_run_twice_or_losing_one(folder, tmp_path):
    out = tmp_path / "results.json"
    files = len(json.loads((folder / "manifest.json").read_text())["files"])
    # SIGKILL in the middle of round 2: round 1 is on disk, round 2's runs so far are not.
    killed = device_python(folder / "probe_device.py", folder, "--threads", "1", "--out", out,
                           env={probe_device.KILL_AFTER_RUNS: str(files + files // 2)})
    assert killed.returncode == -9
    kept = json.loads(out.read_text())
    assert len(kept["rounds"]) == 1 and not kept["complete"] and not list(tmp_path.glob(".*.tmp"))
    # The rerun may time exactly the two missing rounds: one run more and it would be killed again.
    rerun = device_python(folder / "probe_device.py", folder, "--threads", "1", "--out", out,
                          env={probe_device.KILL_AFTER_RUNS: str(2 * files + 1)})
    assert rerun.returncode == 0, rerun.stderr
    assert "1 of 3 rounds already timed: resuming" in rerun.stderr
    done = json.loads(out.read_text())
    assert done["complete"] and len(done["rounds"]) == 3 and done["rounds"][0] == kept["rounds"][0]
    assert all(len(r) == files for r in done["rounds"])
    again = device_python(folder / "probe_device.py", folder, "--threads", "1", "--out", out,
                          env={probe_device.KILL_AFTER_RUNS: "1"})      # complete: nothing is timed
    assert again.returncode == 0 and json.loads(out.read_text())["rounds"] == done["rounds"]
    other = device_python(folder / "probe_device.py", folder, "--threads", "2", "--out", out)
    assert other.returncode == 2 and "threads 1, not 2" in other.stderr and other.stderr.count("\n") == 1


def test_import_builds_the_table_the_manifest_defines_from_the_device_timings(folder, results, tiny, run_cli,
                                                                             tmp_path):
    code, out, err = run_cli("latency", "probe", "import", results, "--out", tmp_path / "t.json", "--format",
                             "json", "--quiet")
    assert code == 0, err
    table = LatencyTable.load(tmp_path / "t.json")
    assert table.probed and table.conditions["provider"] == "CPUExecutionProvider"
    assert "by the probe, CPUExecutionProvider" in err and table.conditions["hardware"] in err
    networks = sampled_table_networks(tiny, "b0-tiny", 3, 0, 3, 3, 32)
    assert set(table.entries) == {p for s in networks.build + networks.calibration for p in pieces(s, 32)}
    timed = ProbeResults.load(results)
    d = json.loads(results.read_text())
    one = next(f for f in d["manifest"]["files"] if f["what"] == "piece")
    assert [lat.median_ms for p, lat in table.entries.items() if {"piece": dataclasses.asdict(p)} == one["key"]] \
        == [d["files"][one["id"]]["median_ms"]]
    held = json.loads(out)
    assert table.held_out is not None and held["summary"] == table.held_out.to_dict() and len(held["networks"]) == 3
    assert [r["median_ms"] for r in held["networks"]] == [
        round(timed.latency(network_key(s, 32), s.name).median_ms, 3) for s in networks.held_out]
    assert table.calibration.networks == 3
    code, _, err = run_cli("latency", "table", "eval", "--table", tmp_path / "t.json", "--samples", "3", "--space",
                           save_spec(tiny, tmp_path / "tiny.yaml"), "--quiet")
    assert code == 2 and "by the probe, and this machine cannot time" in err and err.count("\n") == 1, err


def device_table_for_study(tiny, tmp_path: Path, monkeypatch, run_cli, *export: str, tolerance: float = 0.15) -> Path:
    """A tiny latency study (grid alpha 1-1.1, beta 1-1.1) whose `latency_table:` is the table imported from the
    probe of its export (`nas latency probe export --study ... *export`), run here on ONNX Runtime's CPU provider.
    Its held-out error is set to pass: 3 rounds of sub-millisecond pieces on a shared machine say nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study_table, "CALIBRATION_NETWORKS", 3)
    monkeypatch.setattr(study_table, "HELD_OUT_NETWORKS", 3)
    forget_measurements()
    space = save_spec(tiny, tmp_path / "b0_tiny.yaml")
    study = tmp_path / "lat.yaml"
    study.write_text(f"""\
name: lat
space: {space}
proxy: {{dataset: digits, per_class: 20, resolution: 20, train: {{epochs: 1, batch_size: 32, threads: 1}}}}
search: {{sampler: grid, alpha: [1.0, 1.1], beta: [1.0, 1.1], step: 0.1, tolerance: {tolerance}, family_phis: 1,
         cost: latency, predictor: table, latency: {{threads: 1}}, latency_table: {tmp_path / 'device.json'}}}
pruner: {{type: none}}
""")
    code, _, err = run_cli("latency", "probe", "export", "--study", study, *export, "--out", tmp_path / "p",
                           "--repeats", "3", "--warmup", "1", "--quiet")
    assert code == 0, err
    assert device_python(tmp_path / "p" / "probe_device.py", tmp_path / "p", "--threads", "1").returncode == 0
    code, _, err = run_cli("latency", "probe", "import", tmp_path / "p" / "results.json", "--out",
                           tmp_path / "device.json", "--quiet")
    assert code == 0, err
    d = json.loads((tmp_path / "device.json").read_text())
    d["held_out"].update(p90_abs_error_pct=50.0, spearman=0.5)
    (tmp_path / "device.json").write_text(json.dumps(d))
    with pytest.raises(NasError, match="by the probe and is too inaccurate .* cannot time for that device"):
        search_table(load_study(study))          # not replaced by timings of this machine
    d["held_out"].update(p90_abs_error_pct=5.0, spearman=1.0)
    (tmp_path / "device.json").write_text(json.dumps(d))
    return study


def test_a_study_searches_with_an_imported_table_and_never_times_for_it(tiny, tmp_path, monkeypatch, run_cli):
    config = load_study(device_table_for_study(tiny, tmp_path, monkeypatch, run_cli))
    lines: list[str] = []
    table = search_table(config, lines.append)
    assert table is not None and table.probed and "by the probe" in lines[0], lines
    cost, words, _ = study_cost(config)
    base = scale(tiny, 1.0, 1.0, 40, name="b0-tiny")
    assert words == f"latency on {table.conditions['hardware']} (probe, CPUExecutionProvider) predicted by the " \
                    f"device's table"
    assert cost(base, 40) == pytest.approx(table.predict(base, 40))
    with pytest.raises(NasError, match="by the probe, and this machine cannot time the 6 pieces it lacks"):
        cost(scale(tiny, 3.0, 1.0, 40), 40)          # a width the device never timed: refused, not timed here
    other = dataclasses.replace(config.search.latency, batch_size=2)
    with pytest.raises(NasError, match="batch size 1, but this measurement has batch size 2"):
        table.check(other)
    # Its family past phi 1 needs widths beta^phi the search's table never held: one line saying what to export.
    with pytest.raises(NasError) as refused:
        study_family(config, (1.1, 1.1, 1.2), [0, 1, 2])
    assert "lacks" in str(refused.value) and "\n" not in str(refused.value)
    assert "nas latency probe export --study lat --phi 0-2 --out DIR" in str(refused.value)
    assert f"nas latency probe import DIR/results.json --out {tmp_path / 'device.json'}" in str(refused.value)


def test_a_latency_quickstart_on_the_device_table_takes_its_familys_latency_from_the_device(tiny, tmp_path,
                                                                                             monkeypatch, run_cli):
    """One round trip serves the search and its family: exported with --phi, the table holds the pieces every
    member needs, the family is solved on the device's predictions and its latency column is them; nothing is
    timed on this machine."""
    study = device_table_for_study(tiny, tmp_path, monkeypatch, run_cli, "--phi", "0-2", tolerance=0.5)

    def timed_here(*args, **kwargs):
        raise AssertionError("a latency was timed on this machine for a table of another device")
    monkeypatch.setattr(nas.latency.measure, "_times_ms", timed_here)     # every timing here runs through it
    code, out, err = run_cli("scale", "run", study, "--phi", "0-2", "--format", "json")
    assert code == 0, err
    run = json.loads(out)
    table = LatencyTable.load(tmp_path / "device.json")
    device = f"latency on {table.conditions['hardware']} (probe, CPUExecutionProvider)"
    assert table.built_from["family_phis"] == [0, 1, 2] and device in run["family_drift"]
    coefficients = tuple(run["family_from"][k] for k in ("alpha", "beta", "gamma"))
    members = study_family(load_study(study), coefficients, [0, 1, 2]).members
    rows = run["family"]
    assert [r["resolution"] for r in rows] == [spec.resolution for _, spec in members]
    assert [r["latency_ms"] for r in rows] == [round(table.predict(spec), 3) for _, spec in members]
    assert rows[0]["latency_ratio"] == 1 and members[2][1].width_mult == pytest.approx(coefficients[1] ** 2)


def test_materialize_reads_a_familys_latency_from_the_device(tiny, tmp_path, run_cli):
    space = save_spec(tiny, tmp_path / "b0_tiny.yaml")
    family = ("--space", space, "--alpha", "1.1", "--beta", "1.1", "--gamma", "1.15", "--phi", "0-1")
    assert run_cli("latency", "probe", "export", *family, "--out", tmp_path / "p", "--repeats", "3", "--quiet")[0] == 0
    assert device_python(tmp_path / "p" / "probe_device.py", tmp_path / "p", "--threads", "1").returncode == 0
    code, out, err = run_cli("materialize", *family, "--latency-from", tmp_path / "p" / "results.json", "--format",
                             "json", "--quiet")
    assert code == 0, err
    rows = json.loads(out)
    d = json.loads((tmp_path / "p" / "results.json").read_text())
    medians = {f["key"]["name"]: round(d["files"][f["id"]]["median_ms"], 3) for f in d["manifest"]["files"]}
    assert [r["latency_ms"] for r in rows] == [medians[r["name"]] for r in rows] and rows[0]["latency_ratio"] == 1
    assert "timed by the probe on" in err
    code, _, err = run_cli("latency", "probe", "import", tmp_path / "p" / "results.json")
    assert code == 2 and "not of a table's pieces" in err and err.count("\n") == 1
    code, _, err = run_cli("materialize", *family[:-1], "0-2", "--latency-from", tmp_path / "p" / "results.json",
                           "--quiet")
    assert code == 2 and "has no timing of" in err and err.count("\n") == 1


def _broken(results: Path, tmp_path: Path, change) -> Path:
    d = json.loads(results.read_text())
    change(d)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("change, says", [
    (lambda d: d.update(format="effnas-probe-results/9"), "results format 'effnas-probe-results/9'"),
    (lambda d: d["rounds"][1].update(p0001=float("nan")), "times 'p0001' at nan ms"),
    (lambda d: d["rounds"][0].update(n9999=1.0), "timings for 'n9999', which the manifest does not hold"),
    (lambda d: d["rounds"].pop(), "timed 2 of 3 rounds: run it again"),
    (lambda d: d["manifest"]["files"].pop(), "the manifest inside the results was changed"),
    (lambda d: d.pop("provider"), "results field 'provider' is missing"),
])
def test_bad_results_are_one_line(results, tmp_path, run_cli, change, says):
    code, _, err = run_cli("latency", "probe", "import", _broken(results, tmp_path, change))
    assert code == 2 and says in err and err.count("\n") == 1, err


def test_bad_manifests_and_providers_are_one_line_on_the_device(folder, tmp_path):
    def probe_copy(change) -> subprocess.CompletedProcess[str]:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("results.json"))
        manifest = json.loads((copy / "manifest.json").read_text())
        change(manifest, copy)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return device_python(copy / "probe_device.py", copy)
    for change, says in (
            (lambda m, c: m.update(format="effnas-probe-manifest/2"), "manifest format 'effnas-probe-manifest/2'"),
            (lambda m, c: m.pop("files"), "manifest field 'files' is missing"),
            (lambda m, c: m["files"][0].pop("input_shape"), "manifest entry 0: field 'input_shape'"),
            (lambda m, c: (c / m["files"][2]["file"]).unlink(), "1 files of the manifest are missing")):
        done = probe_copy(change)
        assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    done = device_python(folder / "probe_device.py", folder, "--provider", "NoSuchExecutionProvider", "--out",
                         tmp_path / "r.json")
    assert done.returncode == 2 and "offers CPUExecutionProvider" in done.stderr.replace("AzureExecutionProvider, ", "")


def test_export_refuses_a_used_folder_and_mixed_sources(folder, tmp_path, run_cli):
    code, _, err = run_cli("latency", "probe", "export", "--out", folder, "--samples", "3")
    assert code == 2 and "not an empty folder" in err and err.count("\n") == 1
    code, _, err = run_cli("latency", "probe", "export", "--out", tmp_path / "x", "--study", "quickstart",
                           "--networks", "efficientnet_b0")
    assert code == 2 and "exclude each other" in err
