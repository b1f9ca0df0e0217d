"""`nas materialize` end to end: tables, files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nas.scaling import compound
from nas.spec import load_spec


def test_compound_family_json_has_measured_ratios_next_to_2_pow_phi(run_cli):
    code, out, err = run_cli("materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15",
                             "--phi", "0-7", "--format", "json")
    assert code == 0
    rows = json.loads(out)              # stdout is JSON alone; progress went to stderr
    assert [r["phi"] for r in rows] == list(range(8))
    assert [r["target_ratio"] for r in rows] == [2.0 ** p for p in range(8)]
    assert rows[0]["flops_ratio"] == 1.0 and rows[0]["params"] == 5_288_548
    assert rows[0]["activations"] == 6_748_036          # pycls's model zoo: 6.7 M for B0
    assert [r["activations"] for r in rows] == sorted(r["activations"] for r in rows)
    ratios = [r["flops_ratio"] for r in rows]
    assert ratios == sorted(ratios)
    # 1.2 * 1.1^2 * 1.15^2 = 1.92, and rounding moves it further: ratios sit near, not on, 2^phi.
    for r in rows[1:]:
        assert 0.7 < r["flops_ratio"] / r["target_ratio"] < 1.3
    assert "counting" in err


def test_paper_preset_table_and_csv(run_cli):
    code, out, _ = run_cli("materialize", "--preset", "paper", "--phi", "0,3", "--format", "csv", "--quiet")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("name,phi,width,depth,resolution,dropout,params,gflops,activations,flops_ratio")
    assert lines[2].startswith("efficientnet_b0-B3,3.0,1.2,1.4,300,0.3,12233232,")
    code, out, _ = run_cli("materialize", "--preset", "paper", "--phi", "0", "--quiet")
    assert code == 0 and "efficientnet_b0-B0" in out and " 5.29 M " in out and "5288548" not in out   # for people


def test_out_writes_specs_that_load_back(run_cli, tmp_path):
    code, _, err = run_cli("materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "0,1",
                           "--space", "efficientnet_lite0", "--out", tmp_path, "--quiet")
    assert code == 0 and "wrote 2 spec files" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efficientnet_lite0-phi0.yaml", "efficientnet_lite0-phi1.yaml"]
    spec = load_spec(tmp_path / "efficientnet_lite0-phi1.yaml")
    assert spec.width_mult == 1.1 and spec.depth_mult == 1.2 and spec.head_channels == 1280
    assert spec == compound(load_spec("efficientnet_lite0"), 1.2, 1.1, 1.15, 1)     # the member, field for field


@pytest.mark.parametrize("args, match", [
    (["--alpha", "0.9", "--beta", "1.1", "--gamma", "1.1"], "alpha is 0.9: scaling coefficients must be >= 1"),
    (["--preset", "paper", "--phi", "-1"], "--phi -1 is negative"),
    (["--preset", "paper", "--phi", "x"], "is not a number, a range like 0-7"),
    (["--preset", "paper", "--space", "nope"], "unknown search space 'nope'"),
    (["--preset", "paper", "--phi", "8"], "B0..B7"),
    (["--alpha", "1.2"], "give --preset paper, all three of --alpha --beta --gamma, or --study"),
    (["--preset", "paper", "--alpha", "1.2", "--beta", "1", "--gamma", "1"], "exclude each other"),
    (["--preset", "paper", "--export", "onnx"], "--export onnx needs --out DIR"),
    (["--preset", "paper", "--format", "xml"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(run_cli, args, match):
    code, out, err = run_cli("materialize", *args)
    assert code == 2 and out == ""
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_malformed_space_file_exits_2(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstem: {channels: 32}\nstages: [{block: mbconv, expand: 6}]\n")
    code, _, err = run_cli("materialize", "--preset", "paper", "--space", bad)
    assert code == 2 and "stages[0].kernel' is missing" in err and err.count("\n") == 1


def test_console_script_exit_codes():
    nas = [sys.executable, "-m", "nas.cli"]
    ok = subprocess.run(nas + ["materialize", "--preset", "paper", "--phi", "0", "--format", "json", "--quiet"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)[0]["params"] == 5_288_548
    bad = subprocess.run(nas + ["materialize", "--alpha", "0.5", "--beta", "1", "--gamma", "1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
