"""The public Python API (`import nas`): its lazy names, and docs/python.md's examples run as written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nas

DOCS = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_import_nas_loads_no_heavy_library():
    """`import nas` (and so `nas --help`) stays fast: the API's names load torch, Optuna and pandas on first use."""
    code = ("import sys, nas; heavy = [m for m in ('torch', 'optuna', 'pandas', 'fvcore', 'nas.study') "
            "if m in sys.modules]; print(heavy); nas.load_spec; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "False"]     # nas.load_spec needs PyYAML only


def test_every_public_name_resolves_and_is_listed():
    for name in nas.__all__:
        value = getattr(nas, name)
        assert value is not None
        assert name in dir(nas)
        # A public name that repeated a submodule's would be replaced by the module once it is imported.
        assert importlib.util.find_spec(f"nas.{name}") is None, name
    assert set(nas.__all__) == set(nas._WHERE)
    assert nas.measure_latency is importlib.import_module("nas.latency").measure_spec
    assert nas.count_flops is importlib.import_module("nas.flops").count_flops


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'run_studies'"):
        nas.run_studies  # noqa: B018
    assert not hasattr(nas, "family_table")       # internal functions stay in their modules


def test_family_by_phi_and_by_name():
    family = nas.materialize("paper", phis=[0, 1])
    assert len(family) == 2 and [s.name for s in family] == ["efficientnet_b0-B0", "efficientnet_b0-B1"]
    assert family[1] is family["efficientnet_b0-B1"] and family[1].resolution == 240
    with pytest.raises(KeyError, match="no member 2 in this family: it has phi 0, 1"):
        family[2]
    with pytest.raises(nas.NasError, match="'paper' is the paper's table as it is"):
        nas.materialize("paper", phis=[0], exact_cost=True)
    with pytest.raises(nas.NasError, match="give a study's result, coefficients"):
        nas.materialize("papers", phis=[0])  # type: ignore[arg-type]


def test_docs_examples_run_in_order(tmp_path, monkeypatch):
    """Every python block of docs/python.md, in order, in one namespace, in an empty folder; then what they
    built is checked against effnas's own figures."""
    blocks = python_blocks(DOCS.read_text())
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_python"}
    for i, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOCS}:block {i}", "exec"), namespace)

    result, family, paper = namespace["result"], namespace["family"], namespace["paper"]
    assert isinstance(result, nas.StudyResult) and (tmp_path / "runs" / "small" / "study.db").is_file()
    best = result.trials.iloc[0]          # best first: the verdict's best is the table's rank 1
    assert best["rank"] == 1 and result.best is not None
    assert (round(result.best.alpha, 3), round(result.best.beta, 3)) == (best["alpha"], best["beta"])
    assert result.tied[0] == result.best and result.tie == (len(result.tied) > 1)
    assert result.verdict.startswith("no winner" if result.tie else ("winner", "one candidate"))
    assert str(result).startswith(result.verdict) and "ties: paired" in str(result)
    assert list(result.trials["tied_best"]).count(True) == len(result.tied)

    assert [phi for phi, _ in family.members] == [0, 1, 2, 3] and family[0].name == "efficientnet_b0-phi0"
    assert family.table["flops_ratio"].iloc[-1] == pytest.approx(8, rel=0.15)     # 2^3, measured
    model = namespace["model"]
    assert sum(p.numel() for p in model.parameters()) == namespace["count"].params
    assert namespace["count"].flops == nas.count_flops(family[3], num_classes=10).flops
    assert paper.table["params"].tolist()[1] == 12_233_232                          # B3, the reference count
    assert namespace["latency"].median_ms > 0
    # the exported module, imported where effnas cannot be, builds phi = 3 with effnas's parameter count
    assert namespace["standalone"].split()[-1] == str(sum(p.numel() for p in model.parameters()))


SMALL = """\
name: {name}
space: {space}
proxy: {{dataset: digits, per_class: 20, resolution: 16, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: 1, batch_size: 32, threads: 1}}}}
pruner: {{type: none}}
heartbeat: {{interval: 1, grace: 4}}
"""


def test_a_confirmed_study_reads_as_the_command_line_says_it(tmp_path, monkeypatch, run_cli):
    """run_study runs the confirmation a study asks for; the result carries its answer and its sentences, the
    same as `nas scale show`'s, and the family follows the confirmed best."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(SMALL.format(name="c", space="efficientnet_b0") + (
        "search: {sampler: grid, tolerance: 0.15, alpha: [1.0, 1.0], beta: [1.0, 1.1], family_phis: 1}\n"
        "confirm: {run: true, top: 2, epochs: 1, images: 1, seeds: 1}\n"))
    result = nas.run_study("c.yaml")
    from nas.search.confirm import answer
    from nas.search.storage import load_stored_study

    stored, _ = load_stored_study("c")
    coefficients, words = answer(result.config, stored)
    assert result.best == coefficients and result.confirmed == words and words.startswith("confirmation ")
    assert any(line.startswith("confirmation: 2 leaders retrained") for line in result.details)
    code, out, _ = run_cli("scale", "show", "c")
    assert code == 0 and out.rstrip().endswith(str(result))      # the same block, in the same words
    assert nas.materialize(result, phis=[1])[1].width_mult == pytest.approx(result.best.beta)


def test_a_block_level_study_has_no_coefficients(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text(SMALL.format(name="a", space="quickstart_arch")
                                     + "arch: {objective: reward, sampler: random, target: 300, trials: 2}\n")
    result = nas.run_study("a.yaml")
    top = result.trials.sort_values("best").iloc[0]
    assert result.best is None and result.verdict.startswith(f"best by reward: trial {top['trial']}, ")
    assert nas.study_result("a").verdict == result.verdict and len(result.trials) == 2
    with pytest.raises(nas.NasError, match="export a block-level trial's network"):
        nas.materialize(result, phis=[0])


def test_a_study_without_a_finished_candidate_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none.yaml").write_text(SMALL.format(name="none", space="efficientnet_b0") + (
        "search: {sampler: grid, tolerance: 0.001, alpha: [1.0, 1.1], beta: [1.0, 1.0], family_phis: 1}\n"))
    result = nas.run_study("none.yaml")
    assert result.best is None and set(result.trials["state"]) == {"infeasible"}
    assert result.verdict.startswith("no verdict: no candidate finished with an accuracy (1 infeasible)")
    with pytest.raises(nas.NasError, match="has no coefficients to build a family from: run or resume it first"):
        nas.materialize(result)
