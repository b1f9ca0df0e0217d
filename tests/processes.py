"""Finding the processes a command under test started, from /proc (Linux), without matching names of
processes that other test runs on the machine started."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """Process ids of the children of `pid`, from /proc: the children files of its threads, or, on a kernel
    without them, every process whose parent it is."""
    files = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if files:
        found = []
        for f in files:
            try:
                found += [int(c) for c in f.read_text().split()]
            except OSError:     # the thread ended meanwhile
                pass
        return sorted(set(found))
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def spawned_workers(pid: int) -> list[int]:
    """The worker processes of the search run as process `pid`: those of its own children that
    multiprocessing's spawn started (its resource tracker is a child too). Processes outside this run,
    other test sessions' workers included, are never looked at."""
    workers = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(child)
        except OSError:         # exited meanwhile
            pass
    return workers


def well_into(trial) -> bool:
    """A running trial past its set-up (its proxy solved), so its heartbeat thread has long been running: a
    worker killed before its first heartbeat is covered too, but only after 120 s (docs/search.md)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.RUNNING and "proxy_resolution" in trial.user_attrs
