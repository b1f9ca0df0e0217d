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
    (study_text().replace("epochs: 1,", "epochs: true,"),
     "field 'proxy.train.epochs' is True: must be an integer >= 1"),
    (study_text().replace("epochs: 1,", "epochs: 2.5,"), "field 'proxy.train.epochs' is 2.5"),
    (study_text(train=", momentum: abc"), "field 'proxy.train.momentum' is 'abc'"),
    (study_text(train=", eval_batch_size: 0"), "field 'proxy.train.eval_batch_size' is 0"),
    (study_text(train=", warmup_epochs: .inf"), "field 'proxy.train.warmup_epochs' is inf"),
    (study_text(train=", lr: 1.0e+12"), "field 'proxy.train.lr' is 1000000000000.0: must be a number in (0, 10]"),
    (study_text() + "description: [a, list]\n", "field 'description' is ['a', 'list']: must be a string"),
    (study_text().replace("alpha: [1.0, 1.3]", "alpha: [1, 1.0e+9]"), "field 'search.alpha' is [1, 1000000000.0]"),
    (study_text(search=", sampler: grid, step: 1.0e-9").replace("sampler: random, ", ""), "field 'search.step'"),
    (study_text().replace("resolution: 20", "resolution: 100000"), "field 'proxy.resolution' is 100000"),
    (study_text().replace("per_class: 20", "per_class: 0"), "field 'proxy.per_class' is 0"),
    (study_text(dataset="/no/such/data"), "no such file or directory: /no/such/data"),
    (study_text() + "workers: 0\n", "field 'workers' is 0: must be an integer in 1..256"),
    (study_text(search=", sampler: grid, rungs: 2, rung_training: resume").replace("sampler: random, ", ""),
     "field 'search.rung_training' is 'resume': must be one of restart, continue"),
    (study_text(search=", sampler: grid, rungs: 2, rung_training: continue").replace("sampler: random, ", ""),
     "field 'proxy.train.epochs' is 1: must be enough epochs for 2 rungs at eta 3 that continue one another"),
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
    (["train", "--resolution", "100000"], "--resolution 100000: must be an integer in 8..4096"),
    (["bench", "proxy", "--resolutions", "0"], "0 px is outside 8..1024"),
    (["bench", "proxy", "--images", "0"], "--images 0"),
    (["scale", "run", "quickstart", "--workers", "1000"], "--workers 1000: this machine has"),
    (["scale", "show", "../../etc"], "field 'study' is '../../etc'"),
    (["materialize", "--preset", "paper", "--phi", "nan"], "--phi 'nan' is not a number"),
    (["materialize", "--preset", "paper", "--phi", ""], "--phi '' is not a number"),
    (["materialize", "--preset", "paper", "--phi", "8"], "--phi 8: must be whole numbers in 0-7"),
    (["materialize", "--preset", "paper", "--phi", "0", "--export", "pytorch"], "--export pytorch needs --out DIR"),
    (["frontier", "quickstart", "--phis", "x"], "--phis 'x' is not a number"),
    (["frontier", "quickstart", "--families", "paper"], "--families must include searched"),
    (["scale", "calibrate", "quickstart", "--budgets", "1/0,1"], "--budgets '1/0,1': give numbers or fractions"),
    (["report", "../outside"], "field 'study' is '../outside'"),
    (["scale", "show", "x" * 300], "must be a study file (.yaml) or a study name: 1-100 letters"),   # was ENAMETOOLONG
    (["report", "y" * 300], "must be a study file (.yaml) or a study name: 1-100 letters"),
    (["train", "--seed", str(2**64 + 1)], f"--seed {2**64 + 1}: must be an integer in 0..4294967295"),
    (["train", "--seed", str(2**32)], "--seed 4294967296: must be an integer in 0..4294967295"),
    (["train", "--dataset", "/dev/null"], "/dev/null is neither a file nor a folder"),
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


def test_a_study_refuses_to_resume_on_data_changed_past_its_first_16_mib(run_cli, tmp_path, monkeypatch):
    """The issue's case: every image of an 18 MB .npz relabelled, the labels stored after byte 16 MiB. A digest
    recorded by an effnas that hashed only the first 16 MiB is taken over while the data still gives it."""
    import numpy as np
    import optuna
    from test_data import npz_with_labels_past_16_mib

    from nas.data import first_16_mib_fingerprint, source_fingerprint
    from nas.search.runner import built_from, check_built_from
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "big.npz"
    y = npz_with_labels_past_16_mib(data)
    Path("npz.yaml").write_text(study_text(name="npz", dataset=str(data)))
    code, _, err = run_cli("scale", "run", "npz.yaml", "--phi", "0", "--format", "json")
    assert code == 0, err
    study = optuna.load_study(study_name="npz", storage="sqlite:///runs/npz/study.db")
    assert study.user_attrs["built_from"]["data"] == source_fingerprint(data)
    study.set_user_attr("built_from", {**study.user_attrs["built_from"], "data": first_16_mib_fingerprint(data)})
    check_built_from(study, built_from(load_study("npz.yaml")), load_study("npz.yaml"))    # as a resume does
    assert study.user_attrs["built_from"]["data"] == source_fingerprint(data)
    with np.load(data) as arrays:
        x = arrays["x"]
    np.savez(data, x=x, y=(y + 1) % 10)
    one_line_exit_2(*run_cli("scale", "run", "npz.yaml", "--phi", "0"),
                    f"study 'npz' was run on another version of the data set '{data}'")


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


# --- YAML files: one loader for study, network and space files ------------------------------------

DEEP_LIST = "name: deep\nspace: efficientnet_b0\ndescription: " + "[" * 3000 + "]" * 3000 + "\n"
DEEP_MAPPING = "name: deep\nspace: efficientnet_b0\nproxy: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"


@pytest.mark.parametrize("text, match", [
    (study_text() + 'description: "a\x01b"\n', "s.yaml: not valid YAML at line 7 (character #x0001 is not allowed"),
    (study_text().replace("pruner:", "pruner\x00:"), "s.yaml: not valid YAML at line 6 (character #x0000"),
    (DEEP_LIST, "s.yaml: not valid YAML at line 3, column 45 (values nested more than 32 deep)"),
    (DEEP_MAPPING, "(values nested more than 32 deep)"),
    (study_text() + "seed: 1\nseed: 2\n", "line 8, column 1 (key 'seed' is given twice, first at line 7): keep one"),
    (study_text() + "proxy: {dataset: digits, per_class: 50}\n", "key 'proxy' is given twice, first at line 3"),
    (study_text(train=", epochs: 2"), "key 'epochs' is given twice, first at line 4"),
])
def test_hostile_yaml_is_one_line(run_cli, tmp_path, monkeypatch, text, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    one_line_exit_2(*run_cli("scale", "run", "s.yaml"), match)
    assert not (tmp_path / "runs").exists()


def test_a_base_network_file_with_a_key_twice_is_refused_through_the_same_loader(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b0 = Path(load_study("quickstart").source).parent.parent / "spaces" / "efficientnet_b0.yaml"
    (tmp_path / "net.yaml").write_text(b0.read_text() + "stem: 48\n")
    (tmp_path / "s.yaml").write_text(study_text(space="net.yaml"))
    one_line_exit_2(*run_cli("scale", "run", "s.yaml"), "net.yaml: not valid YAML at line")
    one_line_exit_2(*run_cli("materialize", "--preset", "paper", "--phi", "0", "--space", "net.yaml"),
                    "key 'stem' is given twice")


# --- storage: no password printed or stored; read commands create nothing ---------------------------

SECRET = "SEC@RET-pw"


@pytest.mark.parametrize("url", [f"user:{SECRET}@127.0.0.1/db", f"postgresql://user:{SECRET}@127.0.0.1:1/db",
                                 f"bogus://user:{SECRET}@127.0.0.1/db",
                                 f"postgresql://u@127.0.0.1:1/db?password={SECRET}"])
def test_a_password_in_a_storage_url_is_never_printed(run_cli, tmp_path, monkeypatch, url):
    """Typed without a scheme, with '@' in it, for a database that cannot be reached or a dialect that does not
    exist, on the command line or in the study file: one line, exit 2, and no part of the password."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_text())
    (tmp_path / "f.yaml").write_text(study_text() + f"storage: '{url}'\n")
    for args in (["scale", "run", "s.yaml", "--storage", url], ["scale", "run", "f.yaml"],
                 ["scale", "show", "s", "--storage", url], ["report", "s", "--storage", url]):
        code, out, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not any(part in out + err for part in (SECRET, "SEC", "RET-pw")), err
        assert "***" in err, err                                  # the URL is named, masked


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_study_in_memory_is_refused(run_cli, tmp_path, monkeypatch, url):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_text())
    one_line_exit_2(*run_cli("scale", "run", "s.yaml", "--storage", url), "keeps the study in memory")
    (tmp_path / "f.yaml").write_text(study_text() + f"storage: '{url}'\n")
    one_line_exit_2(*run_cli("scale", "run", "f.yaml"), "a study in memory is lost at exit")


def test_the_stored_definition_keeps_no_password_and_old_ones_are_cleaned(run_cli, tmp_path, monkeypatch):
    """SQLite ignores a password in its URL's query, which makes it a real run with a password in the URL: no
    output and no stored attribute of any study or trial holds it; a definition stored with the password (as
    effnas did before) is cleaned when the study runs again."""
    import optuna

    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'pw.db'}"
    (tmp_path / "f.yaml").write_text(study_text(name="pw") + f"storage: '{db}?password={SECRET}'\n")

    def stored_text() -> str:
        """Every row of every table: the attributes of each study (the search and any beside it) and trial."""
        with sqlite3.connect(tmp_path / "pw.db") as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            text = "".join(repr(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)
        assert "grid_point" in text or "alpha" in text        # the trials are there to be searched
        return text

    code, out, err = run_cli("scale", "run", "f.yaml", "--phi", "0")
    assert code == 0 and SECRET not in out + err and "RET-pw" not in out + err, err
    study = optuna.load_study(study_name="pw", storage=db)
    assert study.user_attrs["config"]["storage"] == db and SECRET not in stored_text()
    study.set_user_attr("config", {**study.user_attrs["config"], "storage": f"{db}?password={SECRET}"})
    code, out, err = run_cli("scale", "run", "f.yaml", "--phi", "0")
    assert code == 0 and "resuming study 'pw'" in err and "password=***" in err, err
    assert SECRET not in out + err and SECRET not in stored_text()
    assert optuna.load_study(study_name="pw", storage=db).user_attrs["config"]["storage"] == db


def test_urls_are_masked_and_stored_without_passwords():
    import dataclasses

    from nas.validation import masked_url, secret_free, without_password
    url = "postgresql://user:p@ss:w/rd@db.example:5432/studies?sslmode=require"
    assert masked_url(url) == "postgresql://user:***@db.example:5432/studies?sslmode=require"
    assert without_password(url) == "postgresql://user@db.example:5432/studies?sslmode=require"
    assert masked_url("user:pw@host/db") == "user:***@host/db"                 # no scheme: masked all the same
    assert without_password("postgresql://h/db?password=pw&sslmode=require") == "postgresql://h/db?sslmode=require"
    assert masked_url("sqlite:////data/a:b@c/study.db") == "sqlite:////data/a:b@c/study.db"   # a path, no user
    assert secret_free('could not translate host name "ss:w/rd@db.example"', url) == \
        'could not translate host name "***@db.example"'
    cfg = dataclasses.replace(load_study("quickstart"), storage=url)
    assert cfg.to_dict()["storage"] == without_password(url) and cfg.storage_url() == url


def test_reading_a_study_from_a_new_sqlite_path_creates_nothing(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'new' / 'sub' / 'study.db'}"
    for command in ("scale", "arch"):
        one_line_exit_2(*run_cli(command, "show", "x", "--storage", url), "no study 'x' in sqlite:///")
    one_line_exit_2(*run_cli("report", "x", "--storage", url), "no study 'x' in sqlite:///")
    assert list(tmp_path.iterdir()) == []


def _optuna_database(path: Path, version: str | None = None) -> str:
    """An empty Optuna database (tables, no study); its schema version set to `version` when given."""
    import optuna
    url = f"sqlite:///{path}"
    optuna.storages.RDBStorage(url).engine.dispose()
    if version:
        with sqlite3.connect(path) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (version,))
    return url


def test_an_unknown_schema_is_not_told_to_upgrade_optuna(run_cli, tmp_path):
    url = _optuna_database(tmp_path / "garbage.db", "not-a-version")
    one_line_exit_2(*run_cli("scale", "show", "x", "--storage", url),
                    "its tables carry schema version 'not-a-version', which no Optuna made")
    assert "pip install" not in run_cli("scale", "show", "x", "--storage", url)[2]
    url = _optuna_database(tmp_path / "newer.db", "v99.0.0.a")
    one_line_exit_2(*run_cli("scale", "show", "x", "--storage", url),
                    "made by a newer Optuna (schema v99.0.0.a; this one is")


def test_a_database_that_cannot_be_written_is_not_called_unreadable(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(study_text())
    db = tmp_path / "ro" / "study.db"
    db.parent.mkdir()
    url = _optuna_database(db)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
            pytest.skip("root on a file system without the immutable attribute: no way to make a file read-only")
        undo = lambda: subprocess.run(["chattr", "-i", str(db)], check=True)   # noqa: E731
    else:
        db.chmod(0o444)
        db.parent.chmod(0o555)
        undo = lambda: (db.parent.chmod(0o755), db.chmod(0o644))   # noqa: E731
    try:
        code, out, err = run_cli("scale", "run", "s.yaml", "--storage", url)
    finally:
        undo()
    one_line_exit_2(code, out, err, "cannot be written: (sqlite3.OperationalError) attempt to write a readonly")
    assert "cannot be read" not in err


def test_a_retried_trial_prints_no_optuna_warning(tmp_path):
    """A trial whose worker died is retried carrying the constraint its copy recorded; setting it again (as a
    coefficient trial does) must not print Optuna's UserWarning with its site-packages path."""
    code = ("import sys, time, optuna\n"
            "from nas.config import HeartbeatSettings\n"
            "from nas.search.storage import open_storage\n"
            "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
            "first = optuna.create_study(study_name='s', storage=sys.argv[1])\n"   # the worker that dies
            "trial = first.ask()\n"
            "trial.set_constraint('cost_ratio', 0.5)\n"
            "first._storage.record_heartbeat(trial._trial_id)\n"
            "time.sleep(3)\n"
            "study = optuna.load_study(study_name='s', storage=open_storage(sys.argv[1], "
            "HeartbeatSettings(interval=1, grace=2)))\n"
            "optuna.storages.fail_stale_trials(study)\n"
            "study.optimize(lambda t: t.set_constraint('cost_ratio', 0.5) or 1.0, n_trials=1)\n"
            "retried = study.trials[1]\n"
            "assert retried.system_attrs.get('failed_trial') == 0, retried.system_attrs\n")
    done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'study.db'}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
