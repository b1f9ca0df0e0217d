"""optuna-dashboard shows a running effnas study live, reading the same storage file.

docs/search.md tells users to watch a search with `optuna-dashboard sqlite:///runs/<name>/study.db`.
This test does that for real: `nas scale run` trains a tiny coefficient study in one process
(holding the SQLite file and writing to it with BEGIN IMMEDIATE), and while it runs, the
`optuna-dashboard` command, started in another process on the relative URL from the docs, serves the
study over loopback. The test checks that the dashboard's JSON API lists the study by name, that
the trials it serves carry the very values the run stored, that it picks up trials finished after it
started (it is a live view, not a snapshot), and that its web page loads. The run is then
terminated mid-study, which is safe by design (the same command resumes it).

Nothing here depends on how fast the machine is: the run's trial budget outlasts any test, so it is still
training whenever the test looks, and every wait polls for what it waits for with a deadline of two
minutes. A wait retries only what means "not there yet" (a refused connection, 503, the study not yet
in storage, a locked database) and fails at once, showing it, on anything else.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config import load_study
from nas.search.storage import open_storage

pytest.importorskip("optuna_dashboard")

# The random sampler and a budget of 100 000 trials: the run cannot finish before the test is done with it,
# however slow the machine (the test stops it). About 2 s a trial on an idle machine, on one torch thread
# (conftest.TINY_STUDY): with the default (all cores) a busy machine slows training several-fold.
EPOCHS = 4
ENDLESS = {"sampler": "random", "trials": 100_000}
# Seconds allowed for any one thing to happen (a process to start, a trial to finish, a page to come):
# under 15 s on an idle 2-core machine, a few times that with CPU-heavy work beside the test.
DEADLINE = 120


def _dashboard_command() -> str:
    script = Path(sys.executable).parent / "optuna-dashboard"
    found = str(script) if script.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        pytest.skip("the optuna-dashboard command is not installed next to this Python")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start a process whose stderr goes to a file (a pipe nobody reads could fill and block it)."""
    with log.open("w") as err:
        return subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def _stop(proc: subprocess.Popen | None, log: Path) -> str:
    """Terminate a process (kill it if it does not go) and return the tail of its stderr."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()[-4000:] if log.is_file() else ""


def _complete(url: str, name: str) -> dict[int, float]:
    """{trial number: value} of the study's finished trials, read with Optuna from the storage."""
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def _get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET http://127.0.0.1:<port><path>."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def _complete_in(detail: dict) -> dict[int, float]:
    return {t["number"]: t["values"][0] for t in detail["trials"] if t["state"] == "Complete"}


def _locked(e: BaseException) -> bool:
    """SQLite's "database is locked" (the run writing), raised directly or as the cause Optuna wraps."""
    return any("database is locked" in str(x) for x in (e, e.__cause__, e.__context__) if x is not None)


def _storage_not_yet(e: Exception) -> bool:
    """Reading the storage before the run created the study (Optuna's KeyError), or while it writes."""
    return isinstance(e, KeyError) or _locked(e)


def _server_not_yet(log: Path):
    """What a request to a dashboard still starting, or reading a locked database, gets: a refused connection,
    503, or a 500 that the server's log puts down to a locked database."""
    def not_yet(e: Exception) -> bool:
        if isinstance(e, urllib.error.HTTPError):
            return e.code == 503 or (e.code == 500 and "database is locked" in log.read_text())
        if isinstance(e, urllib.error.URLError):
            e = e.reason if isinstance(e.reason, Exception) else e
        return isinstance(e, ConnectionRefusedError)
    return not_yet


def _until(what: str, attempt, alive: list[tuple[subprocess.Popen, Path]], not_yet):
    """Call `attempt()` until it returns something other than None, and return that; an attempt that raises
    an exception `not_yet` accepts is tried again, any other fails the test at once. Fails naming `what`
    when a process in `alive` exits, or after DEADLINE s."""
    deadline, last = time.monotonic() + DEADLINE, None
    while True:
        for proc, log in alive:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[:4]} exited with {proc.returncode} while waiting for {what}:\n"
                            f"{_stop(proc, log)}")
        try:
            value = attempt()
        except Exception as e:
            if not not_yet(e):
                pytest.fail(f"{what}: {e!r}, which is not a sign of something still starting (traceback above)")
            value, last = None, e
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {DEADLINE} s (last error: {last!r})")
        time.sleep(0.5)


@pytest.mark.slow     # a dashboard server beside a running search: half a minute
def test_optuna_dashboard_serves_a_running_study_from_its_storage(tiny_study, tmp_path):
    dashboard = _dashboard_command()
    path = tiny_study(name="live", epochs=EPOCHS, **ENDLESS)
    cfg = load_study(path)
    assert cfg.proxy.train.threads == 1 and cfg.proxy.train.epochs == EPOCHS and cfg.search.trials == 100_000
    url = cfg.storage_url()                          # sqlite:///runs/live/study.db, relative to tmp_path
    assert url == "sqlite:///runs/live/study.db"     # the URL docs/search.md tells users to give

    run_log, board_log = tmp_path / "run.log", tmp_path / "dashboard.log"
    run = board = None
    try:
        run = _start([sys.executable, "-m", "nas.cli", "scale", "run", path], tmp_path, run_log)
        # The study is running once a trial has finished (and the process, checked by _until, is at work).
        _until("finished trial in storage", lambda: _complete(url, cfg.name) or None, [(run, run_log)],
               _storage_not_yet)

        port = _free_port()
        board = _start([dashboard, url, "--host", "127.0.0.1", "--port", str(port)], tmp_path, board_log)
        both = [(run, run_log), (board, board_log)]
        server_not_yet = _server_not_yet(board_log)
        studies = _until("answer from optuna-dashboard",
                         lambda: json.loads(_get(port, "/api/studies")[2])["study_summaries"], both, server_not_yet)

        # The study is listed under its name, and its trials are the ones in storage, values included.
        by_name = {s["study_name"]: s for s in studies}
        assert cfg.name in by_name, f"study {cfg.name} not among {sorted(by_name)}"
        study_id = by_name[cfg.name]["study_id"]
        assert by_name[cfg.name]["directions"] == ["maximize"]

        def detail() -> tuple[int, str, dict]:
            status, kind, body = _get(port, f"/api/studies/{study_id}")
            return status, kind, json.loads(body)

        status, kind, body = _until("study detail from optuna-dashboard", detail, both, server_not_yet)
        assert status == 200 and kind.startswith("application/json")
        served = _complete_in(body)
        # A trial had finished before the dashboard started: a dashboard showing none is not reading storage.
        assert served, "the dashboard shows no complete trial"
        stored = _until("read of the storage", lambda: _complete(url, cfg.name), both, _storage_not_yet)
        for number, value in served.items():
            assert value == stored[number], f"trial {number}: dashboard {value}, storage {stored[number]}"

        # Live: a trial the run finishes after the dashboard's first answer shows up too.
        first = set(served)

        def newer() -> dict[int, float] | None:
            now = _complete_in(detail()[2])
            return now if set(now) - first else None

        served = _until("newly finished trial on the dashboard", newer, both, server_not_yet)
        stored = _until("read of the storage", lambda: _complete(url, cfg.name), both, _storage_not_yet)
        assert all(stored[n] == v for n, v in served.items())

        # The web page itself.
        status, kind, body = _until("web page from optuna-dashboard", lambda: _get(port, "/dashboard/"), both,
                                    server_not_yet)
        assert status == 200 and kind.startswith("text/html") and "<html" in body.lower()
    finally:
        _stop(board, board_log)
        _stop(run, run_log)      # interrupting the run mid-study is safe: the same command resumes it
