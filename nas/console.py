"""What the terminal shows: tables on stdout in the format asked for, progress on stderr.

Progress of long work (trials of a search, runs of a frontier or a confirmation, rounds of a latency
measurement) is one `Progress`: done/total, time elapsed and an estimate of the time left. On a terminal
it is a live bar, rewritten in place, with each finished unit's line printed above it; anywhere else (a
log, CI) it is plain lines, one per finished unit. Lines printed while a bar is up (`stderr_progress`,
`Progress.note`) go above the bar instead of through it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:          # pandas loads with the first table, not with `nas --help`
    import pandas as pd

FORMATS = ("table", "json", "csv")

HEARTBEAT_EVERY_S = 60.0
"""Plain lines: a unit still running after this long without a line says what it is doing, this often."""
REDRAW_EVERY_S = 0.2
"""A live bar is rewritten at most this often (a finished unit always redraws it)."""
BAR_WIDTH = 20


COUNT_COLUMNS = ("params", "proxy_params", "activations")
"""Counts a table for people writes with SI prefixes (5.29 M, as the report does); CSV and JSON keep the raw
numbers for scripts."""


def print_table(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    else:
        counts = {c: df[c].map(_count) for c in COUNT_COLUMNS if c in df.columns}
        sys.stdout.write(df.assign(**counts).to_string(index=False) + "\n")


def _count(value: object) -> object:
    from nas.units import si

    return si(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else value


def stderr_progress(msg: str) -> None:
    """One progress line on stderr; above the live bar when one is up."""
    if _ACTIVE:
        _ACTIVE[-1].note(msg)
    else:
        print(msg, file=sys.stderr, flush=True)


def heartbeat(say: Callable[[], str], part: float | None = None) -> None:
    """Tell the progress on show (if any; none under --quiet) what the unit in hand is doing: `say` is called
    only when a line or the bar is written, `part` is the share of the unit done (0-1) when known. Cheap
    enough to call once per training step."""
    if _ACTIVE:
        _ACTIVE[-1].heartbeat(say, part)


def clock_text(seconds: float) -> str:
    """1:12, 12:05, 1:02:03: elapsed and remaining times as people read them."""
    s = max(0, round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _silent(_: str) -> None:
    pass


class Progress:
    """Units of work done out of a total, with elapsed time and an estimate of the time left.

    `done` units may be finished before this run (a resumed study): they count as done, not in the rate. The
    estimate is elapsed / units finished here (plus the share of the unit in hand, from `heartbeat`) times the
    units left: the mean over the whole run, so one fast or slow unit moves it little. `total` may grow as
    more work becomes known (racing adds seeds); None while unknown.

    Output goes to `stream` (default: sys.stderr when written), as a live bar when it is a terminal (`live`
    None: ask the stream), or, with `say`, as lines to that callable. `lines_every` > 0: plain lines at most
    this often (for many small units, such as latency rounds). `prefix` starts every line ("[worker 1] ").
    `elapsed`: seconds already spent when this object is made (a worker process joins a run under way).
    Use as a context manager to show it: lines from `stderr_progress` and `heartbeat` then go through it."""

    def __init__(self, total: int | None = None, unit: str = "", *, done: int = 0, stream: TextIO | None = None,
                 say: Callable[[str], None] | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, elapsed: float = 0.0, lines_every: float = 0.0,
                 prefix: str = "") -> None:
        self.total, self.unit, self.done, self.prefix = total, unit, done, prefix
        self.done_before = done
        self.lines_every = lines_every
        self._stream, self._say, self._clock = stream, say, clock
        self.live = False if say is not None else (self.stream.isatty() if live is None else live)
        self.started = clock() - elapsed
        self.part = 0.0                           # share of the unit in hand, from heartbeat
        self._status: Callable[[], str] | None = None
        self._line_at = self._drawn_at = self._clock()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def silent(self) -> bool:
        return self._say is _silent

    # ------------------------------------------------------------------------------ the figures
    def elapsed(self) -> float:
        return self._clock() - self.started

    def remaining(self) -> float | None:
        """Seconds left at the mean rate of this run so far; None while nothing has finished here or the
        total is unknown."""
        here = self.done - self.done_before + self.part
        if self.total is None or here <= 0:
            return None
        return self.elapsed() / here * max(0.0, self.total - self.done - self.part)

    def figures(self) -> str:
        """'[4/9 trials] 1:12 elapsed, about 1:48 left'."""
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        text = f"[{count}{' ' + self.unit if self.unit else ''}] {clock_text(self.elapsed())} elapsed"
        left = self.remaining()
        if left is not None and self.total is not None and self.done < self.total:
            text += f", about {clock_text(left)} left"
        return text

    # ------------------------------------------------------------------------------ the output
    def advance(self, message: str = "", *, done: int | None = None, total: int | None = None) -> None:
        """A unit finished (`done`, `total`: the counts as now known, for work counted elsewhere, such as
        trials in storage); `message` says how it ended, on a line of its own."""
        self.done = self.done + 1 if done is None else done
        if total is not None:
            self.total = total
        self.part, self._status = 0.0, None
        now = self._clock()
        if message or (not self.live and self.lines_every and now - self._line_at >= self.lines_every):
            self._line(self.figures() + (f" ({message})" if message else ""))
        elif now - self._drawn_at >= REDRAW_EVERY_S or self.done == self.total:
            self._draw()

    def note(self, message: str) -> None:
        """A line of its own, above the bar: what was decided, a warning."""
        self._line(message)

    __call__ = note             # a Progress goes wherever a line-printing callable does

    def heartbeat(self, say: Callable[[], str], part: float | None = None) -> None:
        """The unit in hand is still at work: `say()` says how far. Shown in the bar on a terminal, else as
        a line after HEARTBEAT_EVERY_S without one."""
        if part is not None:
            self.part = min(1.0, max(0.0, part))
        self._status = say
        now = self._clock()
        if self.live:
            if now - self._drawn_at >= REDRAW_EVERY_S:
                self._draw()
        elif now - self._line_at >= HEARTBEAT_EVERY_S and not self.silent:
            self._line(f"{self.figures()} ({say()})")

    def _line(self, text: str) -> None:
        self._line_at = self._clock()
        if self._say is not None:
            self._say(self.prefix + text)
            return
        _clear_bar(self.stream)
        self.stream.write(self.prefix + text + "\n")
        self.stream.flush()
        if _ACTIVE:
            _ACTIVE[-1]._draw()

    def bar(self) -> str:
        """The live line: a bar when the total is known, the figures, what the unit in hand is doing."""
        text = self.figures()
        if self.total:
            filled = min(BAR_WIDTH, round(BAR_WIDTH * (self.done + self.part) / self.total))
            text = f"|{'#' * filled}{'-' * (BAR_WIDTH - filled)}| {text}"
        if self._status is not None:
            text += f"  {self._status()}"
        return self.prefix + text

    def _draw(self) -> None:
        """Rewrite the bar, when this is the live progress on show (the innermost)."""
        if not (self.live and _ACTIVE and _ACTIVE[-1] is self):
            return
        self._drawn_at = self._clock()
        self.stream.write("\r" + self.bar()[:_columns(self.stream) - 1] + "\x1b[K")
        self.stream.flush()
        _BAR_ON[0] = self.stream

    def __enter__(self) -> Progress:
        if not self.silent:
            _ACTIVE.append(self)
            self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        _clear_bar(self.stream)
        if _ACTIVE:
            _ACTIVE[-1]._draw()


_ACTIVE: list[Progress] = []
"""The progress on show, innermost last (a latency measurement inside a search): lines go above its bar."""
_BAR_ON: list[TextIO | None] = [None]
"""The stream whose current line holds a bar, if any."""


def _columns(stream: TextIO) -> int:
    """The width of the terminal `stream` writes to (stdout may be a file: `--format json > out.json`)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):       # not a real terminal (io.UnsupportedOperation is both)
        return shutil.get_terminal_size().columns


def _clear_bar(stream: TextIO) -> None:
    if _BAR_ON[0] is stream:
        stream.write("\r\x1b[K")
        stream.flush()
        _BAR_ON[0] = None


def counting(progress: Callable[[str], None] | None, total: int | None, unit: str, *, done: int = 0,
             elapsed: float = 0.0, lines_every: float = 0.0, live: bool | None = None,
             prefix: str | None = None) -> Progress:
    """A Progress counting `unit`s that writes where `progress` does: None (--quiet) writes nothing;
    `stderr_progress`, stderr (a live bar on a terminal, unless `live` is False); another Progress, where it
    writes; any other callable, plain lines to it. The other arguments are Progress's."""
    if progress is stderr_progress and _ACTIVE:
        progress = _ACTIVE[-1]                   # where progress lines go now: through the one on show
    stream, say = None, None if progress is stderr_progress else (progress or _silent)
    if isinstance(progress, Progress):
        stream, say, live = progress._stream, progress._say, live if progress.live else False
        prefix = progress.prefix if prefix is None else prefix
    return Progress(total, unit, done=done, stream=stream, say=say, live=live, elapsed=elapsed,
                    lines_every=lines_every, prefix=prefix or "")
