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

from nas.commands.networks import networks_from_flags
from nas.config import LatencySettings, load_study
from nas.errors import NasError
from nas.family import compound_family
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


def test_training_runs_share_the_cores(tmp_path, monkeypatch):
    """A registered run counts in every process's share; a run whose process died stops counting. The sharing
    files live in a directory of this test's own (NAS_SHARING_DIR, inherited by the child): nas processes
    elsewhere on the machine cannot change the counts."""
    from nas import sharing

    monkeypatch.setenv(sharing.DIR_VARIABLE, str(tmp_path / "sharing"))
    assert sharing.live_trainers() == 0 and sharing.fair_threads(4) == 4
    with sharing.registered_trainer():
        assert sharing.live_trainers() == 1 and sharing.fair_threads(4) == 4
        holder = subprocess.Popen([sys.executable, "-c", (
            "import sys\nfrom nas import sharing\nwith sharing.registered_trainer():\n"
            "    print('in', flush=True)\n    sys.stdin.read()\n")],      # holds until killed
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "in"
            assert sharing.live_trainers() == 2 and sharing.fair_threads(4) == 2
            assert [p.name.split("-")[0] for p in sharing._path("trainers").iterdir()].count(str(holder.pid)) == 1
            holder.kill()                        # kill -9: no cleanup ran, the kernel dropped its lock
            holder.wait(timeout=60)
            assert sharing.live_trainers() == 1
        finally:
            holder.kill()
            holder.wait(timeout=60)
    assert sharing.live_trainers() == 0 and sharing.fair_threads(2) == 2
    assert not list(sharing._path("trainers").iterdir())      # the dead run's file was removed on the way


def test_a_busy_loop_beside_a_run_is_seen_and_a_registered_trainer_is_not(tmp_path, monkeypatch):
    """Other work takes cores from a run's share; another nas trainer's work is already in the count. Readings
    of /proc and of the clock are given here, so the figures are exact on any machine, however busy
    (benchmarks/busy_elsewhere.py shows what a real busy loop and a real trainer read as)."""
    import fcntl
    import os

    from nas import sharing

    monkeypatch.setenv(sharing.DIR_VARIABLE, str(tmp_path / "sharing"))
    proc, clock, me, trainer = tmp_path / "proc", [100.0], os.getpid(), 999_999_999
    mine = sorted(os.sched_getaffinity(0))
    (proc / str(me)).mkdir(parents=True)
    (proc / str(trainer)).mkdir()

    def ticks(s: float) -> int:
        return round(s * sharing._TICK)

    def reading(at: float, cpus: float, own: float, trainer_s: float | None) -> None:
        """The machine at time `at`: `cpus` busy seconds over this process's CPUs (all of it on the first: the
        split does not matter; a CPU it may not run on is busy too and must not count), this process's CPU
        seconds, the trainer's (None: its process is gone)."""
        clock[0] = at
        lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
        for i, n in enumerate(mine):   # user nice system idle iowait irq softirq steal guest guest_nice
            busy = f"{ticks(cpus) - 4} 1 2 {ticks(500)} 7 0 0 1" if i == 0 else f"0 0 0 {ticks(500)} 0 0 0 0"
            lines.append(f"cpu{n} {busy} 0 0")
        lines.append(f"cpu{max(mine) + 1} {ticks(50 * at)} 0 0 0 0 0 0 0 0 0")
        (proc / "stat").write_text("\n".join(lines) + "\n")

        def stat(pid: int, cpu_s: float) -> str:   # utime and stime are the 14th and 15th fields
            return f"{pid} (nas (w) x) S 1 1 1 0 -1 0 0 0 0 0 {ticks(cpu_s) - ticks(cpu_s) // 3} {ticks(cpu_s) // 3} 0 0 20\n"
        (proc / str(me) / "stat").write_text(stat(me, own))
        if trainer_s is None:
            (proc / str(trainer) / "stat").unlink(missing_ok=True)
        else:
            (proc / str(trainer) / "stat").write_text(stat(trainer, trainer_s))

    registry = sharing._path("trainers")
    registry.mkdir()
    entry = os.open(registry / f"{trainer}-1", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(entry, fcntl.LOCK_EX)          # as a live trainer holds its file (sharing.registered_trainer)
    try:
        busy = sharing.BusyElsewhere(proc, lambda: clock[0])
        reading(100.0, cpus=1000.0, own=10.0, trainer_s=50.0)
        assert busy() == 0.0                                       # nothing to compare with yet
        # 2 s: a busy loop (2 s of CPU), this process (0.5 s) and the registered trainer (1 s).
        reading(102.0, cpus=1003.5, own=10.5, trainer_s=51.0)
        seen = busy()
        assert seen == pytest.approx(1.0, abs=0.02) and sharing.live_trainers() == 1
        assert sharing.fair_threads(2, seen) == 1 and sharing.fair_threads(2) == 2 and sharing.fair_threads(4, seen) == 3
        # 2 s: only the trainer works (one core) beside this process: nothing is busy elsewhere.
        reading(104.0, cpus=1005.7, own=10.7, trainer_s=53.0)
        assert busy() == pytest.approx(0.0, abs=0.02)
        # A reading under half a second after the last says nothing (and does not become the reference).
        reading(104.2, cpus=1006.0, own=10.7, trainer_s=53.0)
        assert busy() == 0.0
        # 2 s: the trainer's process has gone (its lifetime's CPU time leaves no hole in the count); a program
        # of 1.5 cores beside this process counts whole.
        reading(106.2, cpus=1009.0, own=10.7, trainer_s=None)
        assert busy() == pytest.approx(1.5, abs=0.02)
        # 2 s: a trainer has started (the count takes its time from its second reading on).
        reading(108.2, cpus=1010.0, own=10.7, trainer_s=40.0)
        assert busy() == pytest.approx(0.5, abs=0.02)
        reading(110.2, cpus=1012.0, own=10.7, trainer_s=42.0)
        assert busy() == pytest.approx(0.0, abs=0.02)
    finally:
        os.close(entry)
    assert sharing.BusyElsewhere(tmp_path / "no_proc", lambda: clock[0])() == 0.0      # no /proc: 0
    # The real /proc reads: this process's CPU time there is what the kernel tells it directly.
    start = os.times()
    assert sharing._cpus_busy_s(Path("/proc")) > 0
    own = sharing._nas_cpu_s(Path("/proc"))[str(os.getpid())]
    assert start.user + start.system - 0.05 <= own <= os.times().user + os.times().system + 0.05
    real = sharing.BusyElsewhere(clock=iter([0.0, 1.0]).__next__)
    assert real() == 0.0 and real() >= 0.0


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
    t = study.ask()
    record(t, CoefficientRecord, alpha=1.1, beta=1.1, gamma=gamma, ratio=2.0, target=2.0, feasible=True,
           acc_mean=0.9, seed_accuracies=[0.9])
    study.tell(t, 0.9)
    return study


def test_report_family_uses_the_exact_winning_coefficients():
    from nas.config import study_from_dict
    from nas.family import exact_cost_family
    from nas.report import report_parts

    gamma = 231 / 224      # 1.03125; the table shows 1.031, which moves phi = 3 and 7 by a pixel
    b0 = load_spec("efficientnet_b0")
    exact = [s.resolution for _, s in compound_family(b0, 1.1, 1.1, gamma, range(8))]
    assert exact[7] != compound(b0, 1.1, 1.1, round(gamma, 3), 7).resolution
    config = study_from_dict({"name": "w", "space": "efficientnet_b0"}, "test")
    parts = report_parts(_winner_study(gamma), config)
    family, caption = parts.family, parts.caption
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
    """Members keep their latency across runs under the same measurement conditions and are timed again, all
    in one measurement, under others; each member gets the latency of its own full-size network."""
    import nas.search.frontier as frontier
    from nas.latency import Latency, measurement_conditions

    calls: list[list[int]] = []

    def fake_measure(specs, settings, *args, **kwargs):      # a network's "latency" is its resolution
        calls.append([s.resolution for s in specs])
        return [Latency(float(s.resolution), 1.0, 1.0, settings.batch_size, settings.device) for s in specs]

    monkeypatch.setattr(frontier, "measure_specs", fake_measure)
    cfg = load_study(tiny_study())
    study = _study()
    family = frontier.compound_family("searched", 1.2, 1.1, 1.15)

    def members(latency: LatencySettings) -> list:
        job = frontier.FrontierJob(cfg, (family,), (0.0, 1.0), seeds=1, latency=latency)
        return job.members(study, lambda msg: None)

    first = members(LatencySettings(repeats=3))
    assert len(calls) == 1 and sorted(calls[0]) == [224, sorted(calls[0])[1]] and calls[0][1] > 224
    assert [m.latency_ms for m in first] == [float(m.full_size_resolution) for m in first]
    assert first[0].latency_conditions == {**measurement_conditions(LatencySettings(repeats=3)), "warmup": 5,
                                           "repeats": 3}
    assert members(LatencySettings(repeats=3)) == first and len(calls) == 1       # same conditions: kept
    again = members(LatencySettings(repeats=4))
    assert len(calls) == 2 and sorted(calls[1]) == sorted(calls[0])                # timed again, together
    assert all(m.latency_conditions["repeats"] == 4 for m in again)
    assert [dataclasses.replace(m, latency_conditions=None) for m in again] == \
        [dataclasses.replace(m, latency_conditions=None) for m in first]           # described once


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
