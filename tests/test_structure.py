"""The package's edges: data shipped inside it, settings that load without torch, typed trial records,
networks from flags without argparse, and the defects fixed with the restructuring."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config import LatencySettings, load_study
from nas.errors import NasError
from nas.family import compound_family, networks_from_flags
from nas.records import CoefficientRecord, FrontierRunRecord, TrialRecord, record
from nas.scaling import compound
from nas.spec import load_spec

# ------------------------------------------------------------------------------------ packaging


def test_spaces_and_example_studies_load_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_spec("efficientnet_b0").name == "efficientnet_b0"
    cfg = load_study("quickstart")
    assert cfg.name == "quickstart" and Path(cfg.source).parent.name == "studies"
    with pytest.raises(NasError, match="example study .*quickstart"):
        load_study("no_such_study")


def test_settings_load_without_torch_fvcore_or_optuna():
    code = ("import sys, nas.config, nas.cli; c = nas.config.load_study('quickstart'); "
            "nas.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'fvcore', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_training_runs_share_the_cores(tmp_path):
    """A registered run counts in every process's share; a run whose process died stops counting."""
    from nas import sharing

    base = sharing.live_trainers()
    with sharing.registered_trainer():
        assert sharing.live_trainers() == base + 1
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sys, time\nfrom nas import sharing\nwith sharing.registered_trainer():\n"
            "    print('in', flush=True)\n    time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "in"
            assert sharing.live_trainers() == base + 2
            assert sharing.fair_threads(4 * (base + 2)) == 4
            holder.kill()                        # kill -9: no cleanup ran, the kernel dropped its lock
            holder.wait(timeout=60)
            assert sharing.live_trainers() == base + 1
        finally:
            holder.kill()
    assert sharing.live_trainers() == base and sharing.fair_threads(2) == 2 // max(1, base)


def test_a_busy_loop_beside_a_run_is_seen_and_a_registered_trainer_is_not(tmp_path):
    """Other work takes cores from a run's share; another nas trainer's work is already in the count."""
    from nas import sharing

    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
    busy = sharing.BusyElsewhere()
    busy()
    time.sleep(1.5)
    before = busy()        # whatever else the machine runs (0 on a quiet one)
    hog = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(2.5)
    seen = busy()
    hog.wait()
    assert seen - before >= 0.5 and sharing.fair_threads(2, seen) == 1     # one core taken by the loop
    trainer = subprocess.Popen([sys.executable, "-c", "from nas import sharing\nwith sharing.registered_trainer():\n"
                                + "".join("    " + line + "\n" for line in spin.splitlines())])
    time.sleep(1)          # registered and spinning by now
    busy()
    time.sleep(1.5)
    seen = busy()
    trainer.wait()
    assert seen - before < 0.5, f"a registered trainer's CPU was counted as other work ({seen:.2f} cores)"


# ------------------------------------------------------------------------------------ records

def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(direction="maximize")


def test_records_refuse_unknown_keys_and_read_old_trials():
    study = _study()
    trial = study.ask()
    with pytest.raises(KeyError, match="acc_meen"):
        record(trial, CoefficientRecord, acc_meen=0.9)
    record(trial, CoefficientRecord, alpha=1.2, acc_mean=0.9, seed_accuracies=[0.9])
    trial.set_user_attr("written_by_an_older_version", 1)      # unknown keys are ignored on reading
    study.tell(trial, 0.9)
    r = CoefficientRecord.from_trial(study.trials[0])
    assert (r.number, r.state, r.alpha, r.acc_mean, r.seeds, r.beta) == (0, "complete", 1.2, 0.9, 1, None)
    assert r.finished_for_good and r.to_attrs() == {"alpha": 1.2, "acc_mean": 0.9, "seed_accuracies": [0.9]}
    with pytest.raises(KeyError):      # a frontier field is not a coefficient field
        record(study.ask(), CoefficientRecord, frontier_run=["n", 0])
    assert "frontier_run" in FrontierRunRecord.attr_names() and "alpha" not in TrialRecord.attr_names()


def test_a_failed_trial_counts_as_finished_only_with_a_reason():
    study = _study()
    for reason in (None, "diverged: loss nan"):
        t = study.ask()
        if reason:
            record(t, TrialRecord, fail_reason=reason)
        study.tell(t, state=TrialState.FAIL)
    interrupted, failed = (TrialRecord.from_trial(t) for t in study.trials)
    assert not interrupted.finished_for_good and failed.finished_for_good


# -------------------------------------------------------------------------- networks from flags

def test_networks_from_flags_without_argparse():
    [(phi, one)] = networks_from_flags("efficientnet_b0", resolution=32, width=0.5)
    assert (phi, one.resolution, one.width_mult) == (0.0, 32, 0.5)
    family = networks_from_flags(alpha=1.2, beta=1.1, gamma=1.15, phi="0-2")
    assert [s.resolution for _, s in family] == [224, 258, 296]
    paper = networks_from_flags(preset="paper", phi="0,7", resolution=112)
    assert [s.resolution for _, s in paper] == [112, 300]          # B7's 600 px at half the base
    for kwargs, match in [({"preset": "paper", "alpha": 1.2}, "exclude each other"),
                          ({"alpha": 1.2, "beta": 1.1}, "needs all of --alpha --beta --gamma"),
                          ({"phi": "0-2"}, "--phi picks family members"),
                          ({"alpha": 1.2, "beta": 1.1, "gamma": 1.1, "width": 2.0}, "not both"),
                          ({"alpha": 1.2, "beta": 1.1, "gamma": 1.1, "default_phis": None}, "--phi is missing")]:
        with pytest.raises(NasError, match=match):
            networks_from_flags(**kwargs)


# ------------------------------------------------------------------------------------ defects

def _winner_study(gamma: float) -> optuna.Study:
    study = _study()
    study.set_user_attr("config", {"space": "efficientnet_b0", "search": {"target": 2.0}})
    t = study.ask()
    record(t, CoefficientRecord, alpha=1.1, beta=1.1, gamma=gamma, ratio=2.0, feasible=True, acc_mean=0.9,
           seed_accuracies=[0.9])
    study.tell(t, 0.9)
    return study


def test_report_family_uses_the_exact_winning_coefficients():
    from nas.family import exact_cost_family
    from nas.report import report_parts

    gamma = 231 / 224      # 1.03125; the table shows 1.031, which moves phi = 3 and 7 by a pixel
    b0 = load_spec("efficientnet_b0")
    exact = [s.resolution for _, s in compound_family(b0, 1.1, 1.1, gamma, range(8))]
    assert exact[7] != compound(b0, 1.1, 1.1, round(gamma, 3), 7).resolution
    _, _, family, caption, _ = report_parts(_winner_study(gamma), {"space": "efficientnet_b0"})
    assert family["nominal_resolution"].tolist() == exact          # the compound rule, exact coefficients
    solved = exact_cost_family(b0, 1.1, 1.1, gamma, range(8))[0]   # as nas materialize --study builds it
    assert family["resolution"].tolist() == [s.resolution for _, s in solved]
    assert "materialize --study" in caption


def test_an_exact_cost_family_doubles_its_measured_flops_each_step():
    from nas.family import exact_cost_family, family_table

    b0 = load_spec("efficientnet_b0")
    members, nominal = exact_cost_family(b0, 1.3, 1.1, 1.062, range(8))     # the quickstart's winner
    table = family_table(members, nominal_resolutions=nominal)
    nominal_table = family_table(compound_family(b0, 1.3, 1.1, 1.062, range(8)))
    assert nominal_table["flops_ratio"].iloc[7] < 64                        # the nominal "B7" is half size
    assert ((table["flops_ratio"] / 2.0 ** table["phi"] - 1).abs() <= 0.10).all()
    assert table["depth"].tolist() == nominal_table["depth"].tolist()      # depth as the rule has it,
    assert ((table["width"] / nominal_table["width"] - 1).abs() <= 0.05).all()   # width nudged 5 % at most


def test_changed_definition_on_another_storage_names_the_right_fix(tiny_study, tmp_path):
    from nas.search.runner import create_or_load
    from nas.search.scale import ScaleJob
    from nas.search.storage import open_storage

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cfg = load_study(tiny_study())
    create_or_load(ScaleJob(cfg), open_storage(url), url)
    changed = dataclasses.replace(cfg, seed=1)
    with pytest.raises(NasError) as e:
        create_or_load(ScaleJob(changed), open_storage(url), url)
    assert "optuna delete-study" in str(e.value) and "runs/" not in str(e.value)
    default = changed.storage_url()
    create_or_load(ScaleJob(cfg), open_storage(default), default)
    with pytest.raises(NasError, match="delete runs/tiny to start over"):
        create_or_load(ScaleJob(changed), open_storage(default), default)


def test_frontier_measures_again_when_the_latency_settings_change(tiny_study, monkeypatch):
    import nas.search.frontier as frontier
    from nas.latency import Latency

    measured, calls = [], []

    def fake_measure(specs, settings, *args, **kwargs):      # one measurement for every network it is given
        calls.append(len(specs))
        out = []
        for spec in specs:
            assert spec.resolution >= 224                      # the full-size network, not the proxy
            measured.append(settings)
            out.append(Latency(1.0 + len(measured), 1.0, 1.0, settings.batch_size, settings.device))
        return out

    monkeypatch.setattr(frontier, "measure_specs", fake_measure)
    cfg = load_study(tiny_study())
    study = _study()
    family = frontier.compound_family("searched", 1.2, 1.1, 1.15)

    def members(latency: LatencySettings) -> list[dict]:
        job = frontier.FrontierJob(cfg, (family,), (0.0, 1.0), seeds=1, latency=latency)
        return job.members(study, lambda msg: None)

    first = members(LatencySettings(repeats=3))
    assert calls == [2] and len(measured) == 2 and all(m["latency_conditions"]["repeats"] == 3 for m in first)
    assert members(LatencySettings(repeats=3)) == first and len(measured) == 2     # same settings: kept
    again = members(LatencySettings(repeats=4))
    assert len(measured) == 4 and all(m["latency_conditions"]["repeats"] == 4 for m in again)
    assert [m["latency_ms"] for m in again] != [m["latency_ms"] for m in first]
    assert again[0]["latency_conditions"]["hardware"]            # the device timed on is recorded


def test_latency_is_never_timed_while_another_process_trains(tmp_path):
    """A process in a training epoch holds the quiet lock; a measurement here waits for it to end."""
    from torch import nn

    from nas.latency import measure_module

    started = tmp_path / "started"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import pathlib, time\nfrom nas import sharing\nwith sharing.training():\n"
        f"    pathlib.Path({str(started)!r}).touch()\n    time.sleep(2.0)\n")])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and holder.poll() is None, "the training process did not start"
            time.sleep(0.05)
        t0 = time.monotonic()
        measure_module(nn.Conv2d(3, 4, 3), (3, 8, 8), LatencySettings(repeats=3, warmup=0))
        waited = time.monotonic() - t0
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0 and waited >= 1.0, f"measured after {waited:.2f} s, while the epoch ran"


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed(tmp_path):
    """Optuna's stale-trial check skips trials without a heartbeat: a worker killed right after taking a
    trial would leave the study waiting forever."""
    from nas.config import HeartbeatSettings
    from nas.search.storage import fail_trials_without_heartbeat, open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", HeartbeatSettings(interval=1, grace=4))
    study = optuna.create_study(study_name="h", storage=storage)
    orphan, alive = study.ask(), study.ask()       # RUNNING, and no worker writes their heartbeats
    storage.record_heartbeat(alive._trial_id)
    assert fail_trials_without_heartbeat(storage, study, older_than_s=3600) == []      # not old enough
    time.sleep(2.5)                                # SQLite's clock has whole seconds
    assert fail_trials_without_heartbeat(storage, study, older_than_s=1) == [orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {orphan.number: TrialState.FAIL, alive.number: TrialState.RUNNING}
