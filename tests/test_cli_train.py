"""`nas train`, `nas bench proxy` and `nas bench search` from the command line."""

from __future__ import annotations

import json
import time

import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

from nas.flops import count_flops
from nas.records import TrialRecord
from nas.scaling import scale


def test_nas_train_learns_and_reports(run_cli):
    code, out, err = run_cli("train", "--width", "0.5", "--depth", "0.5", "--epochs", "3", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["status"] == "ok" and report["final_acc"] > 0.85
    assert report["network"] == "efficientnet_b0-w0.5-d0.5" and report["resolution"] == 32
    assert report["params"] > 0 and report["mflops"] > 0 and report["train_img_s"] > 0
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]
    assert "epoch 3/3" in err and "digits: 1438 train" in err      # progress on stderr


def test_nas_train_compound_member(run_cli):
    code, out, _ = run_cli("train", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "1",
                           "--resolution", "16", "--stem-stride", "1", "--epochs", "1", "--threads", "1",
                           "--format", "csv", "--quiet")
    assert code == 0
    header, row = out.strip().splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert values["network"] == "efficientnet_b0-phi1" and values["resolution"] == "18"


@pytest.mark.parametrize("args, match", [
    (["--dataset", "/no/such/data"], "no such file or directory"),
    (["--alpha", "1.2"], "needs all of --alpha --beta --gamma --phi"),
    (["--epochs", "0"], "--epochs 0: must be an integer >= 1"),
    (["--space", "nope"], "unknown search space"),
])
def test_nas_train_bad_input(run_cli, args, match):
    code, out, err = run_cli("train", *args)
    assert code == 2 and match in err and err.count("\n") == 1


# Seconds per training step on the virtual clock below, per timed loop; a warm-up step costs WARMUP_COST x more.
STEP_COST = {"engine": 0.01, "engine_nchw": 0.02, "fused": 0.015, "reference": 0.04}
WARMUP_COST = 10


def test_bench_proxy_reports_images_per_second_of_the_timed_epoch(run_cli, monkeypatch, b0):
    """Real training on a virtual clock that moves only when an optimizer steps, by a known amount per loop
    timed: each figure must then be exactly the images of one timed epoch (200 // 32 batches of 32, the
    last partial batch dropped) over that epoch's duration, the warm-up epoch left out."""
    import nas.bench

    clock = {"now": 0.0, "loop": None, "steps": 0}
    steps_per_epoch = 200 // 32

    def tick(optimizer, args, kwargs):
        clock["steps"] += 1
        warm_up = clock["steps"] <= steps_per_epoch           # the first epoch of each loop
        clock["now"] += STEP_COST[clock["loop"]] * (WARMUP_COST if warm_up else 1)

    def timed(loop, fn):
        def run(*args, **kwargs):
            clock["loop"], clock["steps"] = loop(*args, **kwargs), 0
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(nas.bench, "_engine_images_per_sec",
                        timed(lambda *a, channels_last=True, seeds=1, **k: "fused" if seeds > 1 else
                              "engine" if channels_last else "engine_nchw",
                              nas.bench._engine_images_per_sec))
    monkeypatch.setattr(nas.bench, "reference_images_per_sec",
                        timed(lambda *a, **k: "reference", nas.bench.reference_images_per_sec))
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    hook = register_optimizer_step_post_hook(tick)
    try:
        code, out, err = run_cli("bench", "proxy", "--width", "0.25", "--depth", "0.25", "--resolutions", "16",
                                 "--images", "200", "--batch-size", "32", "--threads", "1", "--seeds", "2",
                                 "--format", "json", "--quiet")
    finally:
        hook.remove()
    assert code == 0, err
    (row,) = json.loads(out)
    assert clock["loop"] == "reference"                       # every loop ran, the plain one last
    rate = {loop: 32 / cost for loop, cost in STEP_COST.items()}
    assert (row["engine_img_s"], row["engine_nchw_img_s"], row["reference_img_s"]) == pytest.approx(
        (rate["engine"], rate["engine_nchw"], rate["reference"]), rel=1e-3)
    assert row["speedup"] == pytest.approx(rate["engine"] / rate["reference"], abs=0.005)   # 4.0
    # one fused step trains both seeds' batches; on the CPU there is no captured engine
    assert row["fused_x2_img_s"] == pytest.approx(2 * rate["fused"], rel=1e-3) and row["captured_img_s"] is None
    assert row["fused_gain"] == pytest.approx(2 * rate["fused"] / rate["engine"], abs=0.005)
    spec = scale(b0, 0.25, 0.25, b0.resolution)
    assert row["mflops"] == pytest.approx(count_flops(spec, 16, 3, 10).flops / 1e6, abs=0.05)
    assert (row["network"], row["resolution"], row["batch"], row["threads"], row["device"]) == (
        "efficientnet_b0-w0.25-d0.25", 16, 32, 1, "cpu")


def test_bench_search_splits_the_first_trained_trial_and_leaves_the_study_alone(tiny_study, tmp_path, run_cli,
                                                                                 monkeypatch):
    import pandas as pd

    import nas.bench

    monkeypatch.setattr(nas.bench, "BusyElsewhere", lambda: lambda: 1.0)    # a machine with one core taken
    code, out, err = run_cli("bench", "search", tiny_study(epochs=1), "--trials", "1", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    *trials, mean = rows
    assert mean["trial"] == "mean" and [r["trained"] for r in trials][-1:] == [True]
    assert sum(r["trained"] for r in trials) == 1                       # stopped at the first trained trial
    for row in rows:
        parts = [row[k] or 0.0 for k in ("setup_s", "train_s", "eval_s", "other_s")]
        assert sum(parts) == pytest.approx(row["wall_s"], abs=0.03)   # five figures, each rounded to 0.01
    assert mean["wall_s"] == trials[-1]["wall_s"] > 0 and mean["trials_per_hour"] == pytest.approx(
        3600 / mean["wall_s"], rel=0.01)
    assert 0 < mean["train_s"] < mean["wall_s"] and mean["eval_s"] > 0     # the engine's own timing reached it
    assert f"trial {trials[-1]['trial']} complete: " in err and "accuracy" in err          # progress on stderr
    assert not (tmp_path / "runs").exists()                             # the study's storage was not touched
    summary = nas.bench.split_summary(pd.DataFrame(rows), 1.5)
    assert summary[0].endswith("once per study: 1.5 s") and "1 trained trial(s) on cpu" in summary[1]
    numbers = ", ".join(str(r["trial"]) for r in trials)
    assert summary[2].startswith(f"measured while the machine was busy (trial(s) {numbers}: other programs kept up "
                                 f"to 1.0 cores busy")


def test_a_trials_time_splits_into_the_engines_parts_and_the_rest():
    from nas.bench import _time_split

    row = _time_split(TrialRecord(number=4, state="complete", wall_time=10.0, setup_time=1.5, train_time=6.0,
                                  eval_time=2.0, accuracy_per_epoch=[0.5]), 0.0, 0)
    assert (row["setup_s"], row["train_s"], row["eval_s"], row["other_s"]) == (1.5, 6.0, 2.0, 0.5)
    assert row["trained"] and row["trials_per_hour"] == 360.0
    old = _time_split(TrialRecord(number=5, state="complete", wall_time=3.0, accuracy_per_epoch=[0.5]), 0.2, 1)
    assert (old["setup_s"], old["train_s"], old["eval_s"], old["other_s"]) == (None, None, None, 3.0)  # not timed
    assert old["trials_per_hour"] == 1200.0 and (old["busy_cores"], old["other_trainers"]) == (0.2, 1)
    untrained = _time_split(TrialRecord(number=6, state="complete", wall_time=0.5), 0.0, 0)
    assert not untrained["trained"] and untrained["trials_per_hour"] is None     # a candidate left out sets no pace


def test_bench_search_refuses_an_unbounded_run(run_cli):
    code, out, err = run_cli("bench", "search", "quickstart", "--trials", "0")
    assert code == 2 and out == "" and err.strip() == "nas bench: error: --trials 0: must be an integer in 1..100"
