"""Coefficient search end to end: real proxy training, real SQLite storage files, real processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from processes import spawned_workers, well_into

from nas.config import load_study
from nas.errors import SearchAborted
from nas.search.results import best_coefficients, candidates, ranked_winners
from nas.search.runner import run_search
from nas.search.scale import ScaleJob
from nas.search.storage import open_storage


def _load(cfg):
    return optuna.load_study(study_name=cfg.name, storage=open_storage(cfg.storage_url()))


def _completed_points(study) -> Counter:
    return Counter(tuple(t.user_attrs["grid_point"]) for t in study.get_trials(states=(TrialState.COMPLETE,)))


def _assert_every_grid_point_once(study):
    grid = [(p["alpha"], p["beta"]) for p in study.user_attrs["grid"]]
    assert grid and _completed_points(study) == Counter(grid)


def test_objective_is_a_plain_function_of_a_trial(tiny_study):
    job = ScaleJob(load_study(tiny_study(sampler="tpe")))
    trial = optuna.trial.FixedTrial({"alpha": 1.0, "beta_share": 0.5})
    value = job.objective()(trial)
    a = trial.user_attrs
    assert a["feasible"] and abs(a["ratio"] / 2.0 - 1) <= 0.15 and value == a["acc_mean"] > 0.2
    assert a["resolution1"] == round(224 * a["gamma"]) and a["proxy_feasible"]
    assert abs(a["proxy_flops_ratio"] / 2.0 - 1) <= 0.15        # the proxy trains at equal cost too
    assert len(a["widths"]) == len(a["depths"]) == 7 and a["params"] > 5_288_548
    assert len(a["accuracy_per_epoch"]) == 2 and a["device"] == "cpu"


def test_a_candidate_whose_proxy_cannot_be_equal_cost_is_recorded_and_not_trained(tiny_study):
    # At 16 px (stride 16 with stem stride 1) the proxy's cost jumps 2.5x from 16 to 17 px.
    job = ScaleJob(load_study(tiny_study(sampler="tpe", **{"resolution: 20": "resolution: 16"})))
    trial = optuna.trial.FixedTrial({"alpha": 1.1, "beta_share": 1.0})      # beta 1.1
    assert job.objective()(trial) == 0.0
    a = trial.user_attrs
    assert a["feasible"] and not a["proxy_feasible"] and "acc_mean" not in a      # fine at full size only
    assert abs(a["proxy_flops_ratio"] / 2.0 - 1) > 0.15 and a["constraint_violation"] > 0
    assert a["infeasible_reason"].startswith(f"no proxy resolution gives an equal-cost proxy: the closest, "
                                             f"{a['proxy_resolution']} px")
    assert "not trained" in job.describe(optuna.trial.create_trial(value=0.0, user_attrs=a))


def test_grid_study_trains_every_feasible_point_once_and_materializes(tiny_study, run_cli):
    path = tiny_study(epochs=3)
    code, out, err = run_cli("scale", "run", path, "--phi", "0-2", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    study = _load(load_study(path))
    _assert_every_grid_point_once(study)
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["feasible"] and abs(t.user_attrs["ratio"] / 2 - 1) <= 0.15
        # trained candidates, and only they, trained an equal-cost proxy
        assert ("acc_mean" in t.user_attrs) == (abs(t.user_attrs["proxy_flops_ratio"] / 2 - 1) <= 0.15)
        assert t.user_attrs["nominal_ratio"] == pytest.approx(
            t.user_attrs["alpha"] * t.user_attrs["beta"] ** 2 * t.user_attrs["gamma"] ** 2)
    best = ranked_winners(study)[0]
    assert report["best"]["alpha"] == best.alpha
    assert [r["phi"] for r in report["family"]] == [0, 1, 2]
    assert abs(report["family"][1]["flops_ratio"] / 2 - 1) <= 0.15     # the winner's constraint holds at full size
    # scale show reads the same storage
    code, out, _ = run_cli("scale", "show", "tiny", "--format", "json")
    rows = json.loads(out)
    assert sorted(r["trial"] for r in rows) == sorted(t.number for t in study.trials)
    assert [r["rank"] for r in rows if r["rank"] is not None][:1] == [1]
    # arch show reads block-level searches only: here one line, not a table of None
    code, out, err = run_cli("arch", "show", "tiny")
    assert (code, out) == (2, "") and err.strip().endswith(
        "study 'tiny' is a coefficient search: show it with nas scale show tiny"), err
    # materialize --study builds the family from the best trial
    code, out, err = run_cli("materialize", "--study", "tiny", "--phi", "0,1", "--format", "json")
    assert code == 0 and "best coefficients" in err
    assert json.loads(out)[1]["flops_ratio"] == report["family"][1]["flops_ratio"]


def test_racing_trains_more_seeds_only_for_candidates_still_tied(tiny_study, run_cli):
    path = tiny_study(name="race", **{"trials: 4,": "trials: 4, racing: true, max_seeds: 3,"})
    code, out, err = run_cli("scale", "run", path, "--phi", "0-1", "--format", "json")
    assert code == 0, err
    job = ScaleJob(load_study(path))
    study = _load(job.config)
    decision, have = job.race(study)
    assert decision.finished and f"racing: {decision.reason}" in err
    seeds = {tuple(r.grid_point): r.seeds for r in candidates(study) if r.acc_mean is not None}
    assert seeds == have and all(1 <= n <= 3 for n in seeds.values())   # each seed asked for, trained once
    race_runs = [t.user_attrs["race_run"] for t in study.get_trials(states=(TrialState.COMPLETE,))
                 if "race_run" in t.user_attrs]
    assert sum(r[3] for r in race_runs) == sum(n - 1 for n in seeds.values())
    assert len(decision.survivors) == 1 or all(seeds[k] == 3 for k in decision.survivors)
    assert all(seeds[k] <= seeds[decision.survivors[0]] for k in seeds)   # the eliminated stopped sooner
    rows = {r["trial"]: r for r in json.loads(out)["winners"]}
    assert all(row["seeds"] == seeds[(row["alpha"], row["beta"])] for row in rows.values())
    # one line a trial, counted: the total grows as racing queues seeds, and ends where the count does
    counts = [re.match(r"\[(\d+)/(\d+) trials\] ", line) for line in err.splitlines() if " complete: " in line]
    done, totals = [int(m.group(1)) for m in counts if m], [int(m.group(2)) for m in counts if m]
    assert done == list(range(1, len(counts) + 1)) and totals == sorted(totals) and totals[-1] == done[-1]
    assert (totals[0] < totals[-1]) == bool(race_runs)


def test_a_study_on_a_users_npz_ends_with_a_readable_verdict(tiny_study, tmp_path, run_cli):
    """A data set the package does not ship: three classes told apart by where a bright patch sits."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    x = rng.integers(0, 60, size=(len(y), 12, 12, 3), dtype=np.uint8)
    for i, label in enumerate(y):
        x[i, 4 * label:4 * label + 4, 4:8] = 255
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    path = tiny_study(name="mine", **{"dataset: digits, per_class: 30": f"dataset: {tmp_path / 'mine.npz'}"})
    code, out, err = run_cli("scale", "run", path, "--phi", "0-1")
    assert code == 0, err
    verdict = [line for line in out.splitlines() if line.startswith(("winner: ", "no winner: "))]
    assert len(verdict) == 1 and "validation images" in verdict[0] and "95 % interval" in verdict[0]
    assert "rank stability: " in out and "the family's measured FLOPs stray from 2^phi" in out


def test_rerun_of_a_finished_study_trains_nothing_and_gives_the_same_winner(tiny_study):
    path = tiny_study()
    cfg = load_study(path)
    first = best_coefficients(run_search(ScaleJob(cfg), progress=lambda m: None))
    n = len(_load(cfg).trials)
    assert best_coefficients(run_search(ScaleJob(cfg), progress=lambda m: None)) == first
    assert len(_load(cfg).trials) == n


def test_changed_definition_under_the_same_name_is_refused(tiny_study, run_cli):
    path = tiny_study()
    assert run_cli("scale", "run", path)[0] == 0
    tiny_study(epochs=3)
    code, _, err = run_cli("scale", "run", path)
    assert code == 2 and "different definition" in err and "new name" in err


def test_bayesian_samplers_train_only_points_on_the_surface(tiny_study):
    cfg = load_study(tiny_study(name="tpe", sampler="tpe", trials=5))
    study = run_search(ScaleJob(cfg), progress=lambda m: None)
    trained = [t for t in study.trials if "acc_mean" in t.user_attrs]
    assert len(trained) >= 5
    for t in trained:
        a = t.user_attrs
        assert a["feasible"] and a["alpha"] * a["beta"] ** 2 <= 2.0 * 1.15 + 1e-9 and a["gamma"] >= 1.0


def test_failed_trials_are_recorded_and_the_study_goes_on(tiny_study, run_cli, monkeypatch):
    import nas.proxy

    # Every training loss is NaN, as from a learning rate far too high (the validated range stops at 10).
    monkeypatch.setattr(nas.proxy.F, "cross_entropy", lambda logits, y, **kw: logits.sum() * float("nan"))
    path = tiny_study(name="diverge")
    code, out, err = run_cli("scale", "run", path)
    study = _load(load_study(path))
    failed = study.get_trials(states=(TrialState.FAIL,))
    trainable = [t for t in study.trials if t.user_attrs.get("proxy_feasible")]
    assert failed and failed == trainable and len(study.trials) == len(study.user_attrs["grid"])   # each once
    assert all(t.user_attrs["fail_reason"].startswith("diverged: training loss became") for t in failed)
    assert code == 1 and "study diverge trained no candidate" in err and "every reason: nas scale show diverge" in err


def test_repeated_errors_stop_the_search_with_finished_trials_kept(tiny_study, monkeypatch):
    import nas.search.scoring as scoring

    def broken_train(*args, **kwargs):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(scoring, "train_seeds", broken_train)
    cfg = load_study(tiny_study(name="broken"))
    with pytest.raises(SearchAborted, match="3 trials in a row raised an error, the last: RuntimeError: simulated bug"):
        run_search(ScaleJob(cfg), progress=lambda m: None)
    failed = _load(cfg).get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 3 and "simulated bug" in failed[0].user_attrs["fail_traceback"]


def _nas(*args: str, **kw) -> subprocess.Popen:
    # Ctrl-C as in a terminal, even when the tests run as a background job (which ignores SIGINT, and a
    # child inherits that: the Ctrl-C test's run would then finish instead of stopping).
    return subprocess.Popen([sys.executable, "-m", "nas.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def _wait_for(cfg, ready, timeout: float = 600, proc: subprocess.Popen | None = None) -> None:
    """Poll the study's storage until `ready(trials)` holds (the run under test writes it); the timeout only
    catches a run that is stuck, however busy the machine. Fails at once if `proc` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run exited with {proc.returncode} first:\n{proc.communicate()[1][-4000:]}")
        try:
            trials = _load(cfg).trials
        except Exception:   # the storage file or the study may not exist yet
            continue
        if ready(trials):
            return
    raise AssertionError(f"study {cfg.name} did not get there in {timeout} s")


def _rerun_keeps_every_finished_trial(path: str, cfg) -> None:
    """The same command again finishes, keeps every finished trial's value and leaves each point done once."""
    before = {t.number: t.value for t in _load(cfg).trials if t.state == TrialState.COMPLETE}
    rerun = _nas("scale", "run", path)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    study = _load(cfg)
    assert all(study.trials[n].value == v for n, v in before.items())
    _assert_every_grid_point_once(study)


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_kill_9_mid_trial_then_the_same_command_completes_without_loss(tiny_study):
    path = tiny_study(name="killed", epochs=4)
    cfg = load_study(path)
    proc = _nas("scale", "run", path)
    _wait_for(cfg, lambda trials: any(t.state == TrialState.COMPLETE for t in trials)
              and any(well_into(t) for t in trials), proc=proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t.value for t in _load(cfg).trials if t.state == TrialState.COMPLETE}
    killed = [t.number for t in _load(cfg).trials if t.state == TrialState.RUNNING]
    assert before and killed

    rerun = _nas("scale", "run", path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "resuming study 'killed'" in err and "finished trials kept" in err
    study = _load(cfg)
    after = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    assert all(after[n] == v for n, v in before.items())          # nothing finished was lost or redone
    assert all(study.trials[n].state == TrialState.FAIL for n in killed)   # failed by heartbeat ...
    _assert_every_grid_point_once(study)                             # ... and retried exactly once


@pytest.mark.slow     # worker processes, each importing torch: pytest -m slow (CI runs it)
def test_the_study_files_workers_start_without_the_flag_cut_to_the_cores(tiny_study):
    from nas.device import default_threads

    cores = default_threads()
    path = tiny_study(name="fileworkers", epochs=1, **{"pruner:": "workers: 64\npruner:"})
    cfg = load_study(path)
    assert cfg.workers == 64 and cfg.fingerprint() == dataclasses.replace(cfg, workers=1).fingerprint()  # resumes
    done = subprocess.run([sys.executable, "-m", "nas.cli", "scale", "run", path], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"the study asks for 64 workers; this machine has {cores} CPU core(s): starting {cores}" in done.stderr
    workers = {line.split("]")[0] for line in done.stderr.splitlines() if re.match(r"\[worker \d+\] ", line)}
    assert len(workers) == (cores if cores > 1 else 0), done.stderr      # one worker runs in this process
    _assert_every_grid_point_once(_load(cfg))


def test_workers_flag_overrides_the_study_file_and_is_checked(monkeypatch):
    import nas.device
    from nas.errors import NasError
    from nas.search.runner import study_workers

    monkeypatch.setattr(nas.device, "default_threads", lambda: 2)
    assert study_workers(None, 1, []) == (1, None)
    assert study_workers(None, 2, []) == (2, None)
    assert study_workers(None, 3, []) == (2, "the study asks for 3 workers; this machine has 2 CPU core(s): starting 2")
    assert study_workers(None, 4, [0, 1, 2]) == (3, "the study asks for 4 workers; this machine has 3 GPU(s) to "
                                                     "train on: starting 3")
    assert study_workers(1, 8, []) == (1, None)
    with pytest.raises(NasError, match="--workers 3: this machine has 2 CPU cores"):
        study_workers(3, 1, [])
    assert study_workers(3, 1, [], force=True) == (3, None)


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_ctrl_c_then_the_same_command_resumes(tiny_study):
    path = tiny_study(name="interrupted", epochs=6)     # long enough that a busy machine cannot finish first
    cfg = load_study(path)
    proc = _nas("scale", "run", path)
    _wait_for(cfg, lambda trials: any(t.state == TrialState.COMPLETE for t in trials), proc=proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130 and "run the same command to resume" in err
    _rerun_keeps_every_finished_trial(path, cfg)


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_one_of_four_killed_workers_is_covered_by_the_others(tiny_study):
    path = tiny_study(name="onekilled", epochs=4)
    cfg = load_study(path)
    proc = _nas("scale", "run", path, "--workers", "4", "--force-workers")
    workers: list[int] = []

    def all_mid_trial(trials) -> bool:
        # A worker runs one trial at a time, so four running trials mean every worker holds one; a trial
        # still waiting means none is about to run out of work and exit before the kill lands.
        workers[:] = spawned_workers(proc.pid)
        return (len(workers) == 4 and sum(map(well_into, trials)) == 4
                and any(t.state == TrialState.WAITING for t in trials))

    try:
        _wait_for(cfg, all_mid_trial, proc=proc)
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped unexpectedly; the others retried their trials" in err
    study = _load(cfg)
    assert study.get_trials(states=(TrialState.FAIL,)), "the killed worker's trial was not failed and retried"
    _assert_every_grid_point_once(study)                 # the four shared one local file, each point once
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    worker_lines = [line for line in err.splitlines() if re.match(r"\[worker \d\] \[\d+/\d+ trials\] .*\(trial ", line)]
    assert len({line.split("]")[0] for line in worker_lines}) >= 3                  # shared work, each counted


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (an exited worker nobody has reaped yet is a zombie, state Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_workers_stop_when_their_launcher_is_killed_alone(tiny_study):
    # `kill -9 PID` of the command alone (not its process group, as Ctrl-C is): its workers must not train on
    # unseen; they stop as Ctrl-C stops them, and the same command finishes the study without loss.
    path = tiny_study(name="orphans", epochs=20)     # trials of several seconds: workers left alone run on
    cfg = load_study(path)
    proc = _nas("scale", "run", path, "--workers", "2")
    workers: list[int] = []

    def both_mid_trial(trials) -> bool:
        workers[:] = spawned_workers(proc.pid)
        return len(workers) == 2 and sum(map(well_into, trials)) == 2

    try:
        _wait_for(cfg, both_mid_trial, proc=proc)
        proc.kill()
        proc.wait()     # not communicate(): the workers hold the pipes open, and reading would wait for them
        deadline = time.monotonic() + 15     # an orphan would train its trial and take the next (30 s and more)
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers)), "a worker outlived its launcher by 15 s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    _rerun_keeps_every_finished_trial(path, cfg)


def _read_stderr_until(proc: subprocess.Popen, text: str) -> None:
    """Read the run's progress lines until one contains `text` (the moment under test has begun)."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"the run ended ({proc.wait()}) before printing {text!r}:\n{''.join(seen)[-4000:]}")


def _killed(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_kill_9_during_grid_enumeration_then_the_same_command_completes(tiny_study):
    path = tiny_study(name="enumkilled")
    cfg = load_study(path)
    proc = _nas("scale", "run", path)
    _read_stderr_until(proc, "grid [1/")            # the first of 8 points measured, 7 to go
    _killed(proc)
    study = _load(cfg)
    assert "grid" not in study.user_attrs and not study.trials     # killed before the grid was recorded
    rerun = _nas("scale", "run", path)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    _assert_every_grid_point_once(_load(cfg))


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_kill_9_while_the_family_is_built_then_the_same_command_prints_it(tiny_study):
    path = tiny_study(name="familykilled")
    cfg = load_study(path)
    proc = _nas("scale", "run", path, "--phi", "0-2", "--format", "json")
    _read_stderr_until(proc, "materializing the family")
    _killed(proc)
    before = {t.number: (t.state, t.value) for t in _load(cfg).trials}
    rerun = _nas("scale", "run", path, "--phi", "0-2", "--format", "json")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert " complete: " not in err and "resuming study" in err       # nothing was trained again
    assert {t.number: (t.state, t.value) for t in _load(cfg).trials} == before
    assert [m["phi"] for m in json.loads(out)["family"]] == [0, 1, 2]
    _assert_every_grid_point_once(_load(cfg))


def _make_read_only(path: Path) -> Callable[[], object]:
    """Make a file unwritable, even for root (the immutable attribute), and return how to undo it."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("root on a file system without the immutable attribute: no way to make a file read-only")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    modes = path.stat().st_mode, path.parent.stat().st_mode
    path.chmod(0o444)
    path.parent.chmod(0o555)          # nor can SQLite create its journal beside it
    return lambda: (path.parent.chmod(modes[1]), path.chmod(modes[0]))


@pytest.mark.slow     # durability, whole processes killed: pytest -m slow (CI runs it)
def test_a_database_made_read_only_mid_run_stops_with_one_line_then_resumes(tiny_study):
    path = tiny_study(name="readonly")
    cfg = load_study(path)
    proc = _nas("scale", "run", path)
    _wait_for(cfg, lambda trials: any(t.state == TrialState.COMPLETE for t in trials), proc=proc)
    undo = _make_read_only(Path(cfg.storage_url()[len("sqlite:///"):]))
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        undo()
    assert proc.returncode == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "can no longer be written" in last and "run the same command to resume" in last
    _rerun_keeps_every_finished_trial(path, cfg)


@pytest.mark.slow     # two whole searches: 40 s on this 2-core VM
def test_fresh_runs_with_the_same_seed_give_the_same_winner(tiny_study, tmp_path, monkeypatch):
    path = tiny_study(name="repeat")
    first = run_search(ScaleJob(load_study(path)), progress=lambda m: None)
    values = {tuple(t.user_attrs["grid_point"]): t.value for t in first.get_trials(states=(TrialState.COMPLETE,))}
    other = tmp_path / "again"
    other.mkdir()
    monkeypatch.chdir(other)
    second = run_search(ScaleJob(load_study(path)), progress=lambda m: None)
    assert {tuple(t.user_attrs["grid_point"]): t.value for t in second.get_trials(states=(TrialState.COMPLETE,))} == values
    assert best_coefficients(first) == best_coefficients(second)


def test_hardware_mode_judges_the_constraint_on_measured_latency(tiny_study, tmp_path, b0):
    base = tmp_path / "small_base.yaml"
    base.write_text(b0.replace(name="small_base", resolution=64).to_yaml())
    path = tiny_study(name="latency", **{
        "space: efficientnet_b0": f"space: {base}",
        "alpha: [1.0, 1.3], beta: [1.0, 1.1], step: 0.1": "alpha: [1.0, 1.2], beta: [1.0, 1.1], step: 0.1, "
        "tolerance: 0.3, cost: latency, latency: {device: cpu, batch_size: 1, warmup: 2, repeats: 5, threads: 1}",
        "tolerance: 0.15, ": ""})
    study = run_search(ScaleJob(load_study(path)), progress=lambda m: None)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done
    for t in done:
        a = t.user_attrs
        assert a["cost"] == "latency" and a["feasible"] and abs(a["ratio"] / 2 - 1) <= 0.3
        assert a["cost0"] > 0.1 and a["cost1"] > a["cost0"]          # milliseconds, measured
        assert a["resolution0"] == 64 and a["gamma"] == pytest.approx(a["resolution1"] / 64)
    # Which points must raise the resolution to double their latency is a figure of this machine's CPU, not a
    # test: benchmarks/latency_mode_search.py runs this study and prints it.


def test_a_grid_point_enqueued_twice_is_trained_once(tiny_study):
    """Two launchers that create a study at the same moment both enqueue its grid: a popped copy of
    a point another trial already owns steps aside instead of training it again."""
    cfg = load_study(tiny_study(name="twice"))
    job = ScaleJob(cfg)
    study = run_search(job, progress=lambda m: None)
    point = study.user_attrs["grid"][0]
    owner = next(t.number for t in study.get_trials(states=(TrialState.COMPLETE,))
                 if t.user_attrs["grid_point"] == [point["alpha"], point["beta"]])
    study.enqueue_trial(point, user_attrs={"grid_point": [point["alpha"], point["beta"]]})
    copy = study.ask()
    with pytest.raises(optuna.TrialPruned):
        job.suggest(copy)
    assert copy.user_attrs["skipped"].endswith(f"already taken by trial {owner}")
    study.tell(copy, state=TrialState.PRUNED)
    _assert_every_grid_point_once(study)


def test_scale_show_fits_160_columns_with_reasons_as_notes_under_the_table(tiny_study, run_cli):
    """`nas scale show` on a terminal: the table fits 160 columns and each reason is a numbered note under it
    (identical reasons share one); JSON and CSV keep the full reason in each row. At 16 px some candidates have
    no equal-cost proxy: their reasons are real ones."""
    import csv
    import io

    path = tiny_study(name="notes", epochs=1, **{"resolution: 20": "resolution: 16"})
    code, out, err = run_cli("scale", "run", path, "--phi", "0-1")
    assert code == 0, err
    winners = out.split("\n\n")[1]                        # the candidates' table, and the lines under it
    assert all(len(line) <= 160 for line in winners.splitlines()), winners
    rows = json.loads(run_cli("scale", "show", "notes", "--format", "json")[1])
    reasons = {r["trial"]: r["reason"] for r in rows}
    assert any(reasons.values()), rows                    # the study has reasons to show
    assert {int(r["trial"]): r["reason"] for r in csv.DictReader(io.StringIO(run_cli(
        "scale", "show", "notes", "--format", "csv")[1]))} == reasons
    code, out, _ = run_cli("scale", "show", "notes")
    assert code == 0
    table, _, rest = out.partition("\n\n")
    lines = table.splitlines()
    assert all(len(line) <= 160 for line in lines), max(len(line) for line in lines)
    header, body = lines[0].split(), lines[1:]
    assert "note" in header and "reason" not in header
    notes: dict[str, str] = {}
    for line in body[body.index("notes:") + 1:]:
        if line.startswith("["):
            number, _, text = line.partition("] ")
            notes[last := number + "]"] = text
        else:                                             # a long note wrapped
            notes[last] += " " + line.strip()
    marks = {}
    for line in body[:len(rows)]:
        fields = line.split()
        marks[int(fields[0])] = fields[-1] if fields[-1].startswith("[") else ""
    assert marks.keys() == reasons.keys()
    for trial, reason in reasons.items():
        assert (marks[trial] == "") == (reason == ""), (trial, marks[trial], reason)
        if reason:
            assert notes[marks[trial]] == reason
    assert len(notes) == len({r for r in reasons.values() if r})       # one note per distinct reason
    assert "study notes:" in rest


def test_reasons_become_shared_notes_and_columns_give_way_to_the_width():
    import pandas as pd

    from nas.search.results import trials_on_screen

    long = "its family strays 14 % from 2^phi at phi = 7 (tolerance 10 %) " * 4
    table = pd.DataFrame({"trial": [0, 1, 2, 3], "state": ["complete", "infeasible", "infeasible", "fail"],
                          "res0": [224] * 4, "res1": [250, 260, 270, 280], "seeds": [1, 0, 0, 0],
                          "params": [5288548] * 4, "wall_s": [1.0, 2.0, 3.0, 4.0],
                          "reason": ["", long, long, "RuntimeError: boom"]})
    shown, under = trials_on_screen(table)
    assert list(shown.columns) == ["trial", "state", "res1", "seeds", "wall_s", "note"]
    assert list(shown["note"]) == ["", "[1]", "[1]", "[2]"]
    assert under[:2] == ["the same in every row: res0 224", "not shown here (--format csv or json has them): params"]
    lines = "\n".join(under).splitlines()
    assert lines[2] == "notes:" and lines[3].startswith("[1] its family strays") and lines[-1] == "[2] RuntimeError: boom"
    assert all(len(line) <= 160 for line in lines) and len(lines) == 6      # the long reason wrapped in two lines
    assert lines[4].startswith("    ")
    narrow, under = trials_on_screen(table, width=30)
    assert "res1" not in narrow.columns and "wall_s" not in narrow.columns
    assert under[1].endswith("params, res1, wall_s")
    assert trials_on_screen(table[["trial", "state", "res0"]].head(1))[1] == []     # one row, no reason: nothing under


def test_a_study_of_older_trial_rules_resumes_saying_so_in_one_line(tiny_study):
    """A study records the effnas that created it and its trial rules; one from before that (or under other
    rules) resumes with one line saying so, and records the effnas that resumed it."""
    from nas import __version__
    from nas.search.runner import TRIAL_RULES, create_or_load

    one_point = {"alpha: [1.0, 1.3], beta: [1.0, 1.1]": "alpha: [1.0, 1.0], beta: [1.0, 1.0]"}
    cfg = load_study(tiny_study(name="rules", epochs=1, **one_point))
    job = ScaleJob(cfg)
    fresh = create_or_load(job, optuna.storages.InMemoryStorage(), "memory")
    assert (fresh.user_attrs["created_by"], fresh.user_attrs["trial_rules"]) == (__version__, TRIAL_RULES)
    # As an effnas before this change left a study: its definition, no version, no rules.
    old = optuna.create_study(study_name=cfg.name, storage=open_storage(cfg.storage_url()), directions=job.directions)
    for key in ("fingerprint", "config", "kind"):
        old.set_user_attr(key, fresh.user_attrs[key])

    def rules_lines() -> list[str]:
        said: list[str] = []
        run_search(job, progress=said.append)
        return [line for line in said if "trial rules" in line]

    assert rules_lines() == [f"resuming study 'rules' created by an effnas that did not record its version under trial "
                             f"rules 0 (now {TRIAL_RULES}): its finished trials are kept and new trials follow the "
                             f"current rules"]
    study = _load(cfg)
    assert study.user_attrs["resumed_by"] == __version__ and "trial_rules" not in study.user_attrs
    study.set_user_attr("created_by", "0.0.1")
    assert rules_lines()[0].startswith(f"resuming study 'rules' created by effnas 0.0.1 under trial rules 0 (now "
                                       f"{TRIAL_RULES}): ")
    study.set_user_attr("trial_rules", TRIAL_RULES)
    assert rules_lines() == []                   # the same rules: nothing to say beyond the usual resume line


def test_a_grid_where_no_candidate_can_train_is_one_line_and_exit_2(tiny_study, run_cli):
    """At 9 px and a 3 % tolerance no candidate has an equal-cost proxy: the study's settings, not a bug (this
    was exit 1 with the counts and a pointer on two lines)."""
    path = tiny_study("untrainable", **{"resolution: 20": "resolution: 9", "tolerance: 0.15": "tolerance: 0.03"})
    code, out, err = run_cli("scale", "run", path, "--quiet")
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1, err
    assert "study untrainable trained no candidate (" in err and "infeasible" in err
    assert "the first because no proxy resolution gives an equal-cost proxy" in err and "raise search.tolerance" in err
