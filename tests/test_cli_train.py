"""`nas train` and `nas bench proxy` from the command line."""

from __future__ import annotations

import json
import time

import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

from nas.flops import count_flops
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
                           "--resolution", "16", "--stem-stride", "1", "--epochs", "1", "--format", "csv",
                           "--quiet")
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
STEP_COST = {"engine": 0.01, "engine_nchw": 0.02, "reference": 0.04}
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
                        timed(lambda *a, channels_last, **k: "engine" if channels_last else "engine_nchw",
                              nas.bench._engine_images_per_sec))
    monkeypatch.setattr(nas.bench, "reference_images_per_sec",
                        timed(lambda *a, **k: "reference", nas.bench.reference_images_per_sec))
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    hook = register_optimizer_step_post_hook(tick)
    try:
        code, out, err = run_cli("bench", "proxy", "--width", "0.25", "--depth", "0.25", "--resolutions", "16",
                                 "--images", "200", "--batch-size", "32", "--threads", "1", "--format", "json",
                                 "--quiet")
    finally:
        hook.remove()
    assert code == 0, err
    (row,) = json.loads(out)
    assert clock["loop"] == "reference"                       # every loop ran, the plain one last
    rate = {loop: 32 / cost for loop, cost in STEP_COST.items()}
    assert (row["engine_img_s"], row["engine_nchw_img_s"], row["reference_img_s"]) == pytest.approx(
        (rate["engine"], rate["engine_nchw"], rate["reference"]), rel=1e-3)
    assert row["speedup"] == pytest.approx(rate["engine"] / rate["reference"], abs=0.005)   # 4.0
    spec = scale(b0, 0.25, 0.25, b0.resolution)
    assert row["mflops"] == pytest.approx(count_flops(spec, 16, 3, 10).flops / 1e6, abs=0.05)
    assert (row["network"], row["resolution"], row["batch"], row["threads"], row["device"]) == (
        "efficientnet_b0-w0.25-d0.25", 16, 32, 1, "cpu")
