"""Block-level spaces and the architecture search: validation, objectives, Pareto sets, export."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nas.config import load_study
from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.pareto import pareto_front
from nas.search.arch import ArchJob, mnasnet_reward
from nas.search.results import arch_table
from nas.search.runner import run_search
from nas.space import load_space
from nas.spec import load_spec


def test_shipped_spaces_drop_choices_that_would_empty_a_stage():
    space = load_space("mnasnet_b0")
    assert space.stages[0].repeats == (1, 2) and space.stages[5].repeats == (3, 4, 5)   # 1 - 1 = 0 dropped
    assert space.stages[2].kernel == (3, 5, 7) and space.stages[2].se == (0.0, 0.25)
    small = load_space("quickstart_arch")
    assert small.stages[0] is None and small.stages[6] is None                          # fixed stages
    assert small.size == (2 * 2 * 2 * 2) ** 5


def test_invalid_assignments_are_rejected_before_training():
    space = load_space("mnasnet_b0")
    with pytest.raises(NasError, match="stage 0: 0 repeats would remove the stage and the stride 1"):
        space.apply({"s0_repeats": 0})
    with pytest.raises(NasError, match="stage 3: fused_mbconv takes no squeeze-excite"):
        space.apply({"s3_block": "fused_mbconv", "s3_se": 0.25})
    with pytest.raises(NasError, match="field 'stages\\[2\\].kernel' is 4"):
        space.apply({"s2_kernel": 4})
    with pytest.raises(NasError, match="choice 's9_kernel' is not known"):
        space.apply({"s9_kernel": 3})
    net = space.apply({"s2_kernel": 7, "s2_expand": 3, "s2_se": 0.0, "s2_repeats": 3})
    assert net.stages[2].kernel == 7 and net.stages[2].repeats == 3 and net.stages[2].se == 0.0


def _space_file(tmp_path, b0, choices):
    d = b0.to_dict()
    d["choices"] = choices
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("choices, match", [
    ({"kernel": [3, 4]}, "'choices.kernel' is \\[3, 4\\]"),
    ({"expand": []}, "'choices.expand' is \\[\\]"),
    ({"se": [0.5, 2]}, "'choices.se'"),
    ({"block": ["conv"]}, "'choices.block'"),
    ({"repeats": [-1]}, "leave stage 0 \\(1 repeats\\) with no block"),
    ({"widths": [1]}, "'choices.widths' is not known"),
    ({"fixed_stages": [9]}, "'choices.fixed_stages' is \\[9\\]"),
])
def test_bad_space_files_name_the_field(tmp_path, b0, choices, match):
    with pytest.raises(NasError, match=match) as e:
        load_space(_space_file(tmp_path, b0, choices))
    assert "\n" not in str(e.value)


def test_a_base_without_choices_is_not_a_block_space(tmp_path):
    with pytest.raises(NasError, match="field 'choices' is missing"):
        load_space("efficientnet_b0")


def test_pareto_front_on_a_known_set():
    points = [(0.90, 100), (0.92, 200), (0.91, 150), (0.89, 120), (0.92, 250), (0.95, 400), (0.80, 50)]
    # (0.89, 120) is beaten by (0.90, 100); (0.92, 250) by (0.92, 200)
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 2, 5, 6]
    assert pareto_front([(1, 1), (1, 1)], ["minimize", "minimize"]) == [0, 1]    # equal points both stay


def test_mnasnet_reward_is_soft():
    assert mnasnet_reward(0.8, 400, 400, -0.07) == 0.8
    assert mnasnet_reward(0.8, 200, 400, -0.07) == pytest.approx(0.8 * 2 ** 0.07)
    assert mnasnet_reward(0.8, 800, 400, -0.07) < 0.8


ARCH_STUDY = """\
name: {name}
space: quickstart_arch
seed: 0
proxy: {{dataset: digits, per_class: 30, resolution: 16, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: 2, batch_size: 32, threads: 1}}}}
arch: {arch}
pruner: {pruner}
heartbeat: {{interval: 1, grace: 4}}
"""


def _arch_study(tmp_path, name, arch, pruner="{type: none}"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(ARCH_STUDY.format(name=name, arch=arch, pruner=pruner))
    return str(p)


def test_reward_search_records_cost_and_reward_and_prunes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _arch_study(tmp_path, "reward", "{objective: reward, sampler: tpe, target: 300, trials: 6}",
                       "{type: median, startup_trials: 2, warmup_epochs: 0}")
    study = run_search(ArchJob(load_study(path)), progress=lambda m: None)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done and len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 6
    for t in done:
        a = t.user_attrs
        assert a["mflops"] == pytest.approx(flops_at(load_spec_from(a), 224) / 1e6)
        assert t.value == pytest.approx(mnasnet_reward(a["acc_mean"], a["mflops"], 300, -0.07))
    table = arch_table(study)
    assert table.loc[table["best"] == 1, "reward"].item() == round(max(t.value for t in done), 4)


def load_spec_from(attrs):
    from nas.spec import spec_from_dict
    return spec_from_dict(attrs["spec"])


def test_pareto_search_export_and_scale_the_exported_base(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    path = _arch_study(tmp_path, "pareto", "{objective: pareto, sampler: nsga2, metrics: [accuracy, flops], trials: 5}")
    code, out, err = run_cli("arch", "run", path, "--format", "json")
    assert code == 0, err
    front = json.loads(out)
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{tmp_path}/runs/pareto/study.db")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    expected = {done[i].number for i in pareto_front([t.values for t in done], ["maximize", "minimize"])}
    assert {r["trial"] for r in front} == expected                      # the Pareto set, and nothing else
    code, out, err = run_cli("scale", "show", "pareto")                # the other kind's show: one line
    assert (code, out) == (2, "") and err.strip().endswith(
        "study 'pareto' is a block-level search: show it with nas arch show pareto"), err
    # export one trial; the file is a base network with the same params and FLOPs
    n = front[0]["trial"]
    code, _, err = run_cli("arch", "export", "pareto", "--trial", n, "--out", tmp_path / "found.yaml")
    assert code == 0 and "wrote" in err
    found = load_spec(tmp_path / "found.yaml")
    trial = study.trials[n]
    assert params_of(found) == trial.user_attrs["params"]
    assert flops_at(found, 224) / 1e6 == pytest.approx(trial.user_attrs["mflops"])
    # ... which materialize and a coefficient search accept
    code, out, _ = run_cli("materialize", "--preset", "paper", "--phi", "0,1", "--space", tmp_path / "found.yaml",
                           "--format", "json", "--quiet")
    assert code == 0 and json.loads(out)[0]["params"] == trial.user_attrs["params"]
    scale_study = tmp_path / "scale_found.yaml"
    scale_study.write_text(ARCH_STUDY.format(name="scalefound", arch="{}", pruner="{type: none}")
                           .replace("space: quickstart_arch", f"space: {tmp_path / 'found.yaml'}")
                           .replace("arch: {}\n", "search: {sampler: grid, tolerance: 0.15, alpha: [1.0, 1.2], "
                                                  "beta: [1.0, 1.1], step: 0.1}\n"))
    code, out, err = run_cli("scale", "run", scale_study, "--phi", "0,1", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["family"][0]["params"] == trial.user_attrs["params"]


@pytest.mark.parametrize("args, match", [
    (["arch", "export", "nostudy", "--trial", "0", "--out", "x.yaml"], "no study 'nostudy'"),
    (["arch", "show", "nostudy"], "no study 'nostudy'"),
])
def test_arch_commands_bad_input(run_cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(*args)
    assert code == 2 and match in err and err.count("\n") == 1


@pytest.mark.parametrize("arch, match", [
    ("{objective: best}", "'arch.objective' is 'best'"),
    ("{sampler: grid}", "'arch.sampler' is 'grid'"),
    ("{metrics: [flops, latency]}", "including accuracy"),
    ("{w: 0.5}", "'arch.w' is 0.5"),
    ("{trials: 0}", "'arch.trials' is 0"),
])
def test_bad_arch_sections(tmp_path, arch, match):
    with pytest.raises(NasError, match=match):
        load_study(_arch_study(tmp_path, "bad", arch))


def test_arch_study_needs_a_block_space_and_no_search_section(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(ARCH_STUDY.format(name="s", arch="{}", pruner="{type: none}").replace("quickstart_arch", "efficientnet_b0"))
    with pytest.raises(NasError, match="has no 'choices'"):
        load_study(p)
    p.write_text(ARCH_STUDY.format(name="s", arch="{}", pruner="{type: none}") + "search: {sampler: tpe}\n")
    with pytest.raises(NasError, match="'search' and 'arch' exclude each other"):
        load_study(p)
