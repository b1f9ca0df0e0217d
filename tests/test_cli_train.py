"""`nas train` and `nas bench proxy` from the command line."""

from __future__ import annotations

import json

import pytest


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
    (["--epochs", "0"], "epochs is 0"),
    (["--space", "nope"], "unknown search space"),
])
def test_nas_train_bad_input(run_cli, args, match):
    code, out, err = run_cli("train", *args)
    assert code == 2 and match in err and err.count("\n") == 1


def test_bench_proxy_prints_engine_next_to_reference(run_cli):
    code, out, _ = run_cli("bench", "proxy", "--width", "0.25", "--depth", "0.25", "--resolutions", "16",
                           "--images", "256", "--format", "json", "--quiet")
    assert code == 0
    (row,) = json.loads(out)
    assert row["engine_img_s"] > 0 and row["reference_img_s"] > 0
    assert row["speedup"] == pytest.approx(row["engine_img_s"] / row["reference_img_s"], rel=0.01)
