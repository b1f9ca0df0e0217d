"""`nas scale run --storage postgresql://...` puts workers on many machines on one study.

Checked end to end against a real PostgreSQL server that this module starts on a loopback port and
throws away afterwards (CI installs the server from the distribution's packages); skipped when the
server binaries or the psycopg2 driver are missing.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from processes import spawned_workers, well_into

from nas.search.storage import open_storage

PG_USER = "effnas"    # the superuser initdb creates; trust auth, so the password is not checked
PASSWORD = "s3cret-pw"
CLI_TIMEOUT = 300
NO_FAMILY = ("--phi", "0")   # the run ends by materializing a family, which these tests do not check


def _pg_bindir() -> Path | None:
    """Where initdb, pg_ctl and createdb live: PATH (through symlinks, to the real bin dir), else the
    newest /usr/lib/postgresql/N/bin (Debian keeps them off PATH)."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).resolve().parent
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if (Path(d) / "pg_ctl").exists()]
    version = lambda d: [int(n) for n in re.findall(r"\d+", d.parent.name)]  # noqa: E731
    return max(dirs, key=version, default=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    """Run a server tool; on failure raise with its output, which says why (pytest shows it)."""
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")


@pytest.fixture(scope="module")
def pg_server():
    """(bin dir, port) of a fresh PostgreSQL server on 127.0.0.1, stopped and deleted at the end.

    initdb and postgres refuse to run as root, so as root they run as the packaged `postgres` user in a
    directory of our own under /tmp (pytest's tmp dirs are 0700 to root)."""
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install psycopg2-binary)")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    as_server_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="effnas-pg-", dir="/tmp"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_server_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    pg_ctl = [*as_server_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run([*as_server_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", PG_USER,
              "--no-locale", "-E", "UTF8"], root)
        # Loopback only; the socket in our own dir, so the packaged cluster (if any) is never touched.
        # fsync off: the data is thrown away, and the test should not wait on the disk.
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        try:
            _run([*pg_ctl, "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start"], root)
        except RuntimeError as e:
            log = root / "server.log"
            raise RuntimeError(f"{e}\nserver log:\n{log.read_text() if log.exists() else '(none)'}") from None
        yield bindir, port
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], cwd=root, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server, request):
    """URL of an empty database of the test's own, so that no test depends on another having created
    Optuna's tables first (the first workers on a database create them). It is written as the docs write
    it (postgresql://, with the effnas[postgres] driver) and carries a password, which the test server's
    trust authentication ignores and which no output may show."""
    bindir, port = pg_server
    db = re.sub(r"\W", "_", request.node.name).lower()
    _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, db])
    return f"postgresql://{PG_USER}:{PASSWORD}@127.0.0.1:{port}/{db}"


def write_study(tmp_path: Path, name: str, epochs: int = 1) -> Path:
    """A grid of a few distinct feasible networks, each trained for seconds on 2 CPU cores."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
space: efficientnet_b0
seed: 0
proxy: {{dataset: digits, per_class: 20, resolution: 20, width: 0.25, depth: 0.25, stem_stride: 1,
        train: {{epochs: {epochs}, batch_size: 64}}}}
search: {{sampler: grid, target: 2.0, tolerance: 0.15, alpha: [1.0, 1.3], beta: [1.0, 1.2], step: 0.1, seeds: 1, family_phis: 2}}
pruner: {{type: none}}
heartbeat: {{interval: 2, grace: 8}}
""")
    return path


def nas(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *map(str, args)]


def check_exit(code: int, stderr: str) -> None:
    """Exit 0 and no worker traceback: a crashed worker process does not change the exit code."""
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr


def complete_trials_once_per_grid_point(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's complete trials, after checking each grid point has exactly one, with its results."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    grid = sorted((p["alpha"], p["beta"]) for p in study.user_attrs["grid"])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert sorted(tuple(t.user_attrs.get("grid_point") or ()) for t in complete) == grid
    for t in complete:
        assert "acc_mean" in t.user_attrs and "ratio" in t.user_attrs, t.user_attrs
        assert t.user_attrs["feasible"] is True, t.user_attrs
    return complete


@pytest.mark.slow     # two worker processes and three commands: a minute on this 2-core VM
def test_workers_share_a_postgres_study(pg_url, tmp_path):
    study = write_study(tmp_path, "pgtest")
    run = subprocess.run(nas("scale", "run", study, "--storage", pg_url, "--workers", "2", *NO_FAMILY),
                         cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    check_exit(run.returncode, run.stderr)
    assert PASSWORD not in run.stderr + run.stdout
    complete = complete_trials_once_per_grid_point(pg_url, "pgtest")

    show = subprocess.run(nas("scale", "show", "pgtest", "--storage", pg_url, "--format", "json"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    check_exit(show.returncode, show.stderr)
    rows = json.loads(show.stdout)
    assert sorted(r["trial"] for r in rows if r["state"] == "complete") == sorted(t.number for t in complete)
    by_number = {t.number: t.user_attrs for t in complete}
    for r in rows:
        if r["state"] == "complete":
            assert (r["alpha"], r["beta"]) == pytest.approx(tuple(by_number[r["trial"]]["grid_point"]), abs=1e-3)

    report = subprocess.run(nas("report", "pgtest", "--storage", pg_url, "--out", tmp_path / "r.html"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    check_exit(report.returncode, report.stderr)
    page = (tmp_path / "r.html").read_text()
    assert PASSWORD not in page + report.stderr and f"{PG_USER}:***@127.0.0.1" in page


@pytest.mark.slow     # two launches at once: half a minute on this 2-core VM
def test_another_machine_joins(pg_url, tmp_path):
    """Two separate `nas scale run` launches on one study in an empty database, as on two machines
    started at once: both open the storage, and each grid point still trains once."""
    study = write_study(tmp_path, "pgjoin")
    cmd = nas("scale", "run", study, "--storage", pg_url, *NO_FAMILY)
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        results = [p.communicate(timeout=CLI_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        check_exit(p.returncode, err)
    complete_trials_once_per_grid_point(pg_url, "pgjoin")


@pytest.mark.slow     # about a minute on 2 idle cores; the default suite keeps to its 10-minute budget
def test_a_worker_killed_on_postgres_loses_and_duplicates_nothing(pg_url, tmp_path):
    """kill -9 of one of two workers mid-trial: the other fails its trial once the heartbeat is silent
    (heartbeat.grace 8 s), retries it, and every grid point ends complete exactly once (pytest -m slow)."""
    study = write_study(tmp_path, "pgkill", epochs=4)     # trials long enough to be killed in
    proc = subprocess.Popen(nas("scale", "run", study, "--storage", pg_url, "--workers", "2", *NO_FAMILY),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = open_storage(pg_url)       # one connection pool for the polling, not one per look
    try:
        deadline, victim = time.monotonic() + 600, None
        while victim is None:
            assert time.monotonic() < deadline and proc.poll() is None, "no trial started in time"
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="pgkill", storage=storage).get_trials()
            except KeyError:               # the launcher has not created the study yet
                continue
            # Both workers mid-trial (a worker runs one trial at a time), so the one killed holds a trial,
            # and a trial still waiting, so neither is about to run out of work and exit first.
            workers = spawned_workers(proc.pid)
            if (len(workers) == 2 and sum(map(well_into, trials)) == 2
                    and any(t.state == TrialState.WAITING for t in trials)):
                victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    complete_trials_once_per_grid_point(pg_url, "pgkill")
    trials = optuna.load_study(study_name="pgkill", storage=storage).get_trials()
    assert any(t.state == TrialState.FAIL for t in trials)          # the killed worker's trial, retried
    storage.engine.dispose()
