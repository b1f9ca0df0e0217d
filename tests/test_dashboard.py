"""optuna-dashboard shows a running effnas study live, reading the same storage file.

docs/search.md tells users to watch a search with `optuna-dashboard sqlite:///runs/<name>/study.db`.
This test does that for real: `nas scale run` trains a tiny coefficient study in one process
(holding the SQLite file and writing to it with BEGIN IMMEDIATE), and while it runs, the
`optuna-dashboard` command, started in another process on the relative URL from the docs, serves the
study over loopback. The test checks that the dashboard's JSON API lists the study by name, that
the trials it serves carry the very values the run stored, that it picks up trials finished after it
started (it is a live view, not a snapshot), and that its web page loads. The run is then
terminated mid-study, which is safe by design (the same command resumes it).
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

from nas.study import load_study, open_storage

pytest.importorskip("optuna_dashboard")

# About 2.5 s a trial, 8 trials: the run outlasts the dashboard's start by many seconds. One torch
# thread: with the default (all cores) a busy machine slows training by orders of magnitude.
EPOCHS = 8
ONE_THREAD = {"batch_size: 32}": "batch_size: 32, threads: 1}"}


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
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def _complete_in(detail: dict) -> dict[int, float]:
    return {t["number"]: t["values"][0] for t in detail["trials"] if t["state"] == "Complete"}


def test_optuna_dashboard_serves_a_running_study_from_its_storage(tiny_study, tmp_path):
    dashboard = _dashboard_command()
    path = tiny_study(name="live", epochs=EPOCHS, **ONE_THREAD)
    cfg = load_study(path)
    assert cfg.proxy.train.threads == 1 and cfg.proxy.train.epochs == EPOCHS
    url = cfg.storage_url()                          # sqlite:///runs/live/study.db, relative to tmp_path
    assert url == "sqlite:///runs/live/study.db"     # the URL docs/search.md tells users to give

    run_log, board_log = tmp_path / "run.log", tmp_path / "dashboard.log"
    run = board = None
    try:
        run = _start([sys.executable, "-m", "nas.cli", "scale", "run", path], tmp_path, run_log)
        # The study is running once a trial has finished and the process is still at work.
        deadline, stored = time.time() + 60, {}
        while not stored:
            assert run.poll() is None, f"nas scale run ended before it was seen running:\n{_stop(run, run_log)}"
            assert time.time() < deadline, "no trial finished within 60 s"
            time.sleep(0.3)
            try:
                stored = _complete(url, cfg.name)
            except Exception:    # the storage file or the study does not exist yet
                continue

        port = _free_port()
        board = _start([dashboard, url, "--host", "127.0.0.1", "--port", str(port)], tmp_path, board_log)
        deadline, studies = time.time() + 30, None
        while studies is None:
            if board.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {board.returncode}:\n{_stop(board, board_log)}")
            assert time.time() < deadline, f"optuna-dashboard did not answer in 30 s:\n{_stop(board, board_log)}"
            try:
                studies = json.loads(_get(port, "/api/studies")[2])["study_summaries"]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)

        # The study is listed under its name, and its trials are the ones in storage, values included.
        by_name = {s["study_name"]: s for s in studies}
        assert cfg.name in by_name, f"study {cfg.name} not among {sorted(by_name)}"
        study_id = by_name[cfg.name]["study_id"]
        assert by_name[cfg.name]["directions"] == ["maximize"]
        assert run.poll() is None, "the scale run finished before the dashboard was asked: make trials longer"
        status, kind, body = _get(port, f"/api/studies/{study_id}")
        assert status == 200 and kind.startswith("application/json")
        served = _complete_in(json.loads(body))
        assert served, "the dashboard shows no complete trial"
        stored = _complete(url, cfg.name)
        for number, value in served.items():
            assert value == stored[number], f"trial {number}: dashboard {value}, storage {stored[number]}"

        # Live: a trial the run finishes after the dashboard's first answer shows up too.
        deadline, seen = time.time() + 30, set(served)
        while not set(served) - seen:
            assert time.time() < deadline, "the dashboard did not show a newly finished trial in 30 s"
            time.sleep(0.5)
            served = _complete_in(json.loads(_get(port, f"/api/studies/{study_id}")[2]))
        stored = _complete(url, cfg.name)
        assert all(stored[n] == v for n, v in served.items())

        # The web page itself.
        status, kind, body = _get(port, "/dashboard/")
        assert status == 200 and kind.startswith("text/html") and "<html" in body.lower()
    finally:
        _stop(board, board_log)
        _stop(run, run_log)      # interrupting the run mid-study is safe: the same command resumes it
