"""Every bad input is one line on stderr, exit 2, no traceback, and nothing left behind; no command runs
unbounded on input it could have checked first. Files are the ones the tests write."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nas.config import load_study

STUDY = """\
name: {name}
space: {space}
proxy: {{dataset: {dataset}, per_class: 20, resolution: 20, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: 1, batch_size: 32{train}}}}}
search: {{sampler: random, trials: 1, alpha: [1.0, 1.3], beta: [1.0, 1.2], family_phis: 2{search}}}
pruner: {{type: none}}
"""


def study_text(name: str = "bad", space: str = "efficientnet_b0", dataset: str = "digits", train: str = "",
               search: str = "") -> str:
    return STUDY.format(name=name, space=space, dataset=dataset, train=train, search=search)


def one_line_exit_2(code: int, out: str, err: str, match: str) -> None:
    assert code == 2, err
    assert out == "" and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and match in err, err


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
name: bomb
space: efficientnet_b0
"""


@pytest.mark.parametrize("text, match", [
    (study_text(name="x" * 300), "field 'name' is 'xxx"),
    (study_text(name="../escape"), "field 'name' is '../escape'"),
    (BILLION_LAUGHS, "alias *a is not allowed"),
    (study_text(train=", epochs: true"), "field 'proxy.train.epochs' is True: must be an integer >= 1"),
    (study_text(train=", epochs: 2.5"), "field 'proxy.train.epochs' is 2.5"),
    (study_text(train=", momentum: abc"), "field 'proxy.train.momentum' is 'abc'"),
    (study_text(train=", eval_batch_size: 0"), "field 'proxy.train.eval_batch_size' is 0"),
    (study_text(train=", warmup_epochs: .inf"), "field 'proxy.train.warmup_epochs' is inf"),
    (study_text(train=", lr: 1.0e+12"), "field 'proxy.train.lr' is 1000000000000.0: must be a number in (0, 10]"),
    (study_text() + "description: [a, list]\n", "field 'description' is ['a', 'list']: must be a string"),
    (study_text(search=", alpha: [1, 1.0e+9]"), "field 'search.alpha' is [1, 1000000000.0]"),
    (study_text(search=", sampler: grid, step: 1.0e-9").replace("sampler: random, ", ""), "field 'search.step'"),
    (study_text().replace("resolution: 20", "resolution: 100000"), "field 'proxy.resolution' is 100000"),
    (study_text().replace("per_class: 20", "per_class: 0"), "field 'proxy.per_class' is 0"),
    (study_text(dataset="/no/such/data"), "no such file or directory: /no/such/data"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_study_files(run_cli, tmp_path, monkeypatch, text, match, workers):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    one_line_exit_2(*run_cli("scale", "run", "s.yaml", "--workers", workers), match)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, match", [
    (["materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--resolution-multiple", "0"],
     "--resolution-multiple 0: must be an integer in 1..256"),
    (["materialize", "--preset", "paper", "--phi", "0-1000"], "1001 members, at most 64"),
    (["materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "60"], "--phi 60: at most 16"),
    (["materialize", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "16"],
     "depth multiplier 18.48"),
    (["materialize", "--preset", "paper", "--phi", "0", "--out", "a_file"], "--out a_file is a file"),
    (["train", "--width", "nan"], "width multiplier nan"),
    (["train", "--width", "inf"], "width multiplier inf"),
    (["train", "--depth", "nan"], "depth multiplier nan"),
    (["train", "--lr", "nan"], "--lr nan: must be a number in (0, 10]"),
    (["train", "--resolution", "100000"], "field 'resolution' is 100000: must be an integer in 8..4096"),
    (["bench", "proxy", "--resolutions", "0"], "0 px is outside 8..1024"),
    (["bench", "proxy", "--images", "0"], "--images 0"),
    (["scale", "run", "quickstart", "--workers", "1000"], "--workers 1000: this machine has"),
    (["scale", "show", "../../etc"], "field 'study' is '../../etc'"),
    (["materialize", "--preset", "paper", "--phi", "nan"], "--phi 'nan' is not a number"),
    (["materialize", "--preset", "paper", "--phi", ""], "--phi '' is not a number"),
    (["materialize", "--preset", "paper", "--phi", "8"], "--phi 8: must be whole numbers in 0-7"),
    (["materialize", "--preset", "paper", "--phi", "0", "--save-models"], "--save-models needs --out DIR"),
    (["frontier", "quickstart", "--phis", "x"], "--phis 'x' is not a number"),
    (["frontier", "quickstart", "--families", "paper"], "--families must include searched"),
    (["scale", "calibrate", "quickstart", "--budgets", "1/0,1"], "--budgets '1/0,1': give numbers or fractions"),
    (["report", "../outside"], "field 'study' is '../outside'"),
])
def test_bad_command_lines(run_cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("keep me")
    one_line_exit_2(*run_cli(*args), match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and (tmp_path / "a_file").read_text() == "keep me"


def test_a_gpu_a_study_file_asks_for_is_its_field_not_a_flag(run_cli, tmp_path, monkeypatch):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(study_text(name="g", train=", device: cuda"))
    one_line_exit_2(*run_cli("scale", "run", "g.yaml"), "g.yaml: field 'proxy.train.device' is 'cuda': must be "
                                                        "cpu or auto: this torch build sees no CUDA GPU")
    assert not (tmp_path / "runs").exists()


def test_unwritable_runs_folder(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    (tmp_path / "s.yaml").write_text(study_text())
    one_line_exit_2(*run_cli("scale", "run", "s.yaml"), "cannot create runs/bad for the study's database")


def _tiny_run(run_cli, name: str, space: str = "efficientnet_b0") -> None:
    Path(f"{name}.yaml").write_text(study_text(name=name, space=space))
    code, _, err = run_cli("scale", "run", f"{name}.yaml", "--phi", "0", "--format", "json")
    assert code == 0, err


def test_a_damaged_study_database_is_one_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_run(run_cli, "dmg")
    db = tmp_path / "runs" / "dmg" / "study.db"
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as f:              # keep the header page, overwrite every page after it
        size = db.stat().st_size
        f.seek(page)
        f.write(os.urandom(size - page))
    one_line_exit_2(*run_cli("scale", "show", "dmg"), "study.db is damaged or not a study database")
    one_line_exit_2(*run_cli("scale", "run", "dmg.yaml"), "study.db is damaged or not a study database")


def test_a_study_refuses_to_resume_on_a_changed_network(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "mine.yaml"
    b0 = Path(load_study("quickstart").source).parent.parent / "spaces" / "efficientnet_b0.yaml"
    space.write_text(b0.read_text())
    _tiny_run(run_cli, "net", space=str(space))
    space.write_text(b0.read_text().replace("kernel: 3", "kernel: 7", 1))
    one_line_exit_2(*run_cli("scale", "run", "net.yaml"), f"was run on another version of the base network '{space}'")
    space.write_text(b0.read_text() + "\n# a comment changes nothing\n")
    code, _, err = run_cli("scale", "run", "net.yaml", "--phi", "0", "--format", "json")
    assert code == 0 and "resuming study 'net'" in err, err


def test_two_first_launches_on_one_new_sqlite_study_both_succeed(tmp_path):
    """Several processes create a new study database at the same instant: each says it is ready (its imports
    done) with a file of its own, and once all are, a go file releases them together."""
    import time

    code = ("import sys, time, pathlib, optuna\nfrom nas.search.storage import open_storage\n"
            "go, ready = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[3])\nready.touch()\n"
            "deadline = time.monotonic() + 240\n"
            "while not go.exists():\n"
            "    if time.monotonic() > deadline: sys.exit('no go file within 240 s')\n"
            "    time.sleep(0.005)\n"
            "optuna.create_study(study_name='s', storage=open_storage(sys.argv[2]), load_if_exists=True)\n")
    for attempt in range(3):
        go, url = tmp_path / f"go{attempt}", f"sqlite:///{tmp_path / f'db{attempt}' / 'study.db'}"
        ready = [tmp_path / f"ready{attempt}-{i}" for i in range(4)]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(go), url, str(r)], stderr=subprocess.PIPE,
                                  text=True) for r in ready]
        try:
            # However busy the machine, each child gets there: the deadline only catches one that hangs.
            deadline = time.monotonic() + 120
            while not all(r.exists() for r in ready):
                for p in procs:
                    if p.poll() is not None:
                        pytest.fail(f"a child exited with {p.returncode} before it was ready:\n{p.communicate()[1]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"children not ready within 120 s: {[r.name for r in ready if not r.exists()]}")
                time.sleep(0.01)
            go.touch()
            for p in procs:
                _, err = p.communicate(timeout=120)
                assert p.returncode == 0, err
        finally:
            for p in procs:
                p.kill()
                p.wait()
