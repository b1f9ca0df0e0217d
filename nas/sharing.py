"""How nas processes share one machine: cores divided among the processes that train, and latency timed
while none of them trains.

Cores. PyTorch's OpenMP threads spin while they wait for work, so two processes that each take every core
slow each other far more than 2x (on 2 cores, two `nas train` runs at once took 88 s each against 15 s
alone). Every CPU training run registers here while it runs, and one whose thread count the user did not
fix takes `cores // trainers` threads, re-read every few seconds: a frontier started beside a search, or
the workers of one search, split the cores between them instead of fighting over them (19 s each, two at
once; figures in docs/benchmarks.md). A run alone keeps every core.

Latency. A timing taken beside training means nothing. A machine-wide reader-writer lock fixes that:
training holds it shared, one epoch at a time; a measurement holds it exclusively, so it waits for the
epochs in flight to end and new epochs wait for it. A turnstile lock in front gives measurements
priority, so a stream of epochs from several workers cannot starve one. Within one process, measuring
inside a training epoch would wait for itself: the two are never nested.

Both rest on `flock`s on files in the temporary directory, which the kernel releases when a process dies,
so a killed worker never leaves the machine locked or its cores reserved. The environment variable
NAS_SHARING_DIR names another directory for these files (made if missing): only nas processes that use
the same directory share with each other, so a test, or a machine split into groups, can keep its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DIR_VARIABLE = "NAS_SHARING_DIR"


def _path(name: str) -> Path:
    chosen = os.environ.get(DIR_VARIABLE)
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.gettempdir())
    return folder / f"effnas-{os.getuid()}-{name}"


# ------------------------------------------------------------------------------------------- cores

@contextlib.contextmanager
def registered_trainer() -> Iterator[None]:
    """Count this training run in every nas process's `fair_threads` until it ends."""
    registry = _path("trainers")
    registry.mkdir(exist_ok=True)
    entry = registry / f"{os.getpid()}-{threading.get_ident()}"
    fd = os.open(entry, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)       # held while the run lives: how others tell it from a stale file
        yield
    finally:
        entry.unlink(missing_ok=True)
        os.close(fd)


def live_trainers() -> int:
    """Training runs alive on this machine now (files of dead processes are removed on the way)."""
    registry, live = _path("trainers"), 0
    for entry in registry.iterdir() if registry.is_dir() else ():
        try:
            fd = os.open(entry, os.O_RDWR)
        except OSError:                      # removed meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            entry.unlink(missing_ok=True)    # nobody holds it: its process is gone
        except BlockingIOError:
            live += 1
        finally:
            os.close(fd)
    return live


def fair_threads(cores: int, busy_elsewhere: float = 0.0) -> int:
    """This run's share of `cores` among the training runs alive now (itself included when registered),
    after the cores that other work keeps busy (`BusyElsewhere`)."""
    return max(1, (cores - round(busy_elsewhere)) // max(1, live_trainers()))


class BusyElsewhere:
    """How many of this process's cores other work kept busy since the last call: the busy time of the CPUs
    this process may run on (/proc/stat), less its own and the registered nas trainers' CPU time
    (/proc/PID/stat).

    A compiler, a test suite or any program beside a run is invisible to the trainer count, and OpenMP's
    spinning threads fight it as they fight another trainer: a run beside a one-core busy loop on 2 cores
    took several times longer with 2 threads than with 1. 0 on the first call, and where /proc is missing.
    `proc` and `clock` are where the readings come from (a test gives its own; benchmarks/busy_elsewhere.py
    measures the real thing)."""

    def __init__(self, proc: Path = Path("/proc"), clock: Callable[[], float] = time.monotonic) -> None:
        self.proc, self.clock = proc, clock
        # (clock s, CPU busy s, {pid: CPU s} of this process and the registered trainers)
        self.last: tuple[float, float, dict[str, float]] | None = None

    def __call__(self) -> float:
        try:
            now = (self.clock(), _cpus_busy_s(self.proc), _nas_cpu_s(self.proc))
        except OSError:
            return 0.0
        last, self.last = self.last, now
        if last is None or now[0] - last[0] < 0.5:
            return 0.0
        # Per process, and only those seen both times: a trainer that ended or began between two readings
        # would otherwise take (or add) its whole lifetime's CPU time from the interval's.
        nas = sum(cpu - last[2][pid] for pid, cpu in now[2].items() if pid in last[2])
        return max(0.0, ((now[1] - last[1]) - nas) / (now[0] - last[0]))


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpus_busy_s(proc: Path) -> float:
    """Busy seconds (user, nice, system, irq, softirq, steal) of the CPUs this process may run on."""
    mine = {f"cpu{n}" for n in os.sched_getaffinity(0)}
    busy = 0
    for line in (proc / "stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in mine:
            ticks = [int(v) for v in fields[1:9]]
            busy += sum(ticks[0:3]) + sum(ticks[5:8])
    return busy / _TICK


def _nas_cpu_s(proc: Path) -> dict[str, float]:
    """CPU seconds used so far by this process and by the other registered trainers' processes, by pid."""
    registry = _path("trainers")
    pids = {entry.name.split("-")[0] for entry in registry.iterdir()} if registry.is_dir() else set()
    used = {}
    for pid in sorted(pids | {str(os.getpid())}):
        try:
            fields = (proc / pid / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            if pid == str(os.getpid()):
                raise              # no /proc at all: BusyElsewhere says 0
            continue               # a trainer gone meanwhile
        used[pid] = (int(fields[11]) + int(fields[12])) / _TICK      # utime, stime
    return used


# ----------------------------------------------------------------------------------------- latency

@contextlib.contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)          # closing releases the lock


@contextlib.contextmanager
def training() -> Iterator[None]:
    """Held (shared with other trainers) around each training epoch."""
    with _flock("quiet.turnstile", fcntl.LOCK_EX):
        main = _flock("quiet.lock", fcntl.LOCK_SH)
        main.__enter__()
    try:
        yield
    finally:
        main.__exit__(None, None, None)


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """Held (alone) around each latency measurement."""
    with _flock("quiet.turnstile", fcntl.LOCK_EX), _flock("quiet.lock", fcntl.LOCK_EX):
        yield
