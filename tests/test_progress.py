"""Progress with an estimate of the time left (nas.console.Progress): the figures on an injected clock, the
live bar on a terminal, plain lines elsewhere, the heartbeat of a long training run, and real runs."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch

from nas.config import LatencySettings, TrainConfig
from nas.console import Progress, clock_text, stderr_progress
from nas.data import load_dataset
from nas.latency import measure as measuring
from nas.proxy import train
from nas.scaling import scale
from nas.spec import load_spec

TRIAL_LINE = re.compile(r"\[(\d+)/(\d+) trials\] \d+:\d\d elapsed(, about \d+:\d\d left)? \(trial \d+ complete: .*\)")


class Clock:
    """Time as the test sets it; `tick` seconds pass at each reading."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(written: str) -> tuple[list[str], str]:
    """What a terminal shows for `written`: the finished lines, and the line under the cursor (the bar). The bar
    is always written as carriage return, text, clear-to-end-of-line, and cleared as carriage return + clear."""
    lines, current = [], ""
    for part in re.split(r"(\r|\n|\x1b\[K)", written):
        if part == "\r":
            current = ""
        elif part == "\n":
            lines.append(current)
            current = ""
        elif part != "\x1b[K":
            current += part
    return lines, current


def test_times_read_as_people_write_them():
    assert [clock_text(s) for s in (0, 72, 725, 3723, 59.6)] == ["0:00", "1:12", "12:05", "1:02:03", "1:00"]


def test_the_estimate_is_the_mean_time_a_unit_of_this_run_times_the_units_left():
    clock, lines = Clock(), []
    p = Progress(9, "trials", say=lines.append, clock=clock)
    assert p.figures() == "[0/9 trials] 0:00 elapsed"                  # nothing finished: no estimate yet
    for n in range(4):
        clock.now = 18.0 * (n + 1)
        p.advance(f"trial {n} complete")
    assert lines[0] == "[1/9 trials] 0:18 elapsed, about 2:24 left (trial 0 complete)"       # 18 s x 8
    assert lines[-1] == "[4/9 trials] 1:12 elapsed, about 1:30 left (trial 3 complete)"      # 72 / 4 x 5
    p.advance("racing queued 3 more", done=5, total=12)                # counts read elsewhere; the total grew
    assert lines[-1] == "[5/12 trials] 1:12 elapsed, about 1:41 left (racing queued 3 more)"  # 72 / 5 x 7
    p.advance("last", done=12)
    assert lines[-1] == "[12/12 trials] 1:12 elapsed (last)"


def test_a_resumed_run_counts_earlier_units_as_done_but_not_in_the_rate():
    clock, lines = Clock(), []
    p = Progress(9, "trials", done=5, say=lines.append, clock=clock)
    clock.now = 10.0
    p.advance("trial 5 complete")
    assert lines == ["[6/9 trials] 0:10 elapsed, about 0:30 left (trial 5 complete)"]        # 10 s a trial x 3
    worker = Progress(9, "trials", done=5, say=lines.append, clock=clock, elapsed=40.0, prefix="[worker 1] ")
    clock.now = 20.0
    worker.advance("trial 6 complete", done=7)          # two finished since the launch, 50 s ago, by all workers
    assert lines[-1] == "[worker 1] [7/9 trials] 0:50 elapsed, about 0:50 left (trial 6 complete)"


def test_a_unit_at_work_says_how_far_at_most_once_a_minute_and_its_share_counts():
    clock, lines, asked = Clock(), [], []

    def doing() -> str:
        asked.append(1)
        return "training: epoch 1/4"

    p = Progress(4, "runs", say=lines.append, clock=clock)
    clock.now = 30.0
    p.heartbeat(doing, 0.25)
    assert lines == [] and asked == []                 # under a minute: nothing said, nothing formatted
    clock.now = 60.0
    p.heartbeat(doing, 0.5)
    assert lines == ["[0/4 runs] 1:00 elapsed, about 7:00 left (training: epoch 1/4)"]      # 60 / 0.5 x 3.5
    clock.now = 100.0
    p.heartbeat(doing, 0.75)
    assert len(lines) == 1                             # 40 s after the last line
    p.advance("run 0 complete")
    assert p.part == 0.0 and lines[-1] == "[1/4 runs] 1:40 elapsed, about 5:00 left (run 0 complete)"


def test_many_small_units_print_a_line_only_every_so_often():
    clock, lines = Clock(), []
    p = Progress(20, "rounds", say=lines.append, clock=clock, lines_every=30.0)
    for k in range(20):
        clock.now = 2.0 * (k + 1)
        p.advance()
    assert lines == ["[15/20 rounds] 0:30 elapsed, about 0:10 left"]


def test_on_a_terminal_a_live_bar_sits_under_the_lines_and_is_gone_at_the_end(monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")                # the bar is cut to the terminal's width
    clock, tty = Clock(), FakeTTY()
    with Progress(4, "trials", stream=tty, clock=clock) as p:
        clock.now = 30.0
        p.advance("trial 0 complete")
        stderr_progress("racing: undecided")            # any progress line goes above the bar
        clock.now = 31.0
        p.heartbeat(lambda: "training: epoch 2/3", 0.5)
        lines, bar = screen(tty.getvalue())
        assert lines == ["[1/4 trials] 0:30 elapsed, about 1:30 left (trial 0 complete)", "racing: undecided"]
        full = f"|{'#' * 8}{'-' * 12}| [1/4 trials] 0:31 elapsed, about 0:52 left  training: epoch 2/3"
        assert bar == full[:71]                        # one column short of the edge: no wrap
    lines, bar = screen(tty.getvalue())
    assert len(lines) == 2 and bar == ""
    plain = io.StringIO()                              # not a terminal: lines only, nothing rewritten
    with Progress(4, "trials", stream=plain, clock=clock) as p:
        p.advance("trial 0 complete")
        p.heartbeat(lambda: "training", 0.5)
    assert "\r" not in plain.getvalue() and "\x1b" not in plain.getvalue()
    assert plain.getvalue().count("\n") == 1


def test_a_latency_measurement_shows_its_rounds_in_the_bar_of_the_work_around_it():
    calls: list[str] = []
    runs = [lambda name=name: calls.append(name) for name in "ab"]
    settings = LatencySettings(warmup=0, repeats=3, threads=1)
    tty = FakeTTY()
    with Progress(stream=tty):
        measuring._times_ms(runs, settings, torch.device("cpu"), progress=stderr_progress)
    assert f"|{'#' * 20}| [3/3 rounds]" in tty.getvalue() and screen(tty.getvalue()) == ([], "")
    lines: list[str] = []
    measuring._times_ms(runs, settings, torch.device("cpu"), progress=lines.append)
    assert lines == []                                 # a few seconds: no line (one every 30 s at most)


@pytest.fixture(scope="module")
def tiny_training():
    return (load_dataset("digits", per_class=30), scale(load_spec("efficientnet_b0"), 0.25, 0.25, 16, name="tiny"),
            TrainConfig(epochs=2, batch_size=32, threads=1))


def test_a_training_run_beats_through_the_progress_on_show_and_is_silent_without_one(tiny_training, capsys):
    data, net, cfg = tiny_training
    lines: list[str] = []
    with Progress(1, "runs", say=lines.append, clock=Clock(tick=10.0)) as p:
        train(net, data, cfg)
    assert lines and all(re.fullmatch(r"\[0/1 runs\] \d+:\d\d elapsed, about \d+:\d\d left \(training: epoch "
                                      r"[12]/2, step \d+/\d+\)", line) for line in lines), lines
    assert p.part == 1.0                               # the run's last step: the whole unit
    train(net, data, cfg)                              # no progress on show (--quiet): not a word
    assert capsys.readouterr().err == ""


def test_a_search_prints_one_counted_line_a_trial_and_nothing_under_quiet(tiny_study, run_cli):
    two_points = {"alpha: [1.0, 1.3], beta: [1.0, 1.1]": "alpha: [1.0, 1.1], beta: [1.0, 1.0]"}
    path = tiny_study(name="counted", epochs=1, **two_points)
    code, out, err = run_cli("scale", "run", path, "--phi", "0", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["study"] == "counted"                       # stdout is the JSON alone
    counted = [TRIAL_LINE.fullmatch(line) for line in err.splitlines() if "complete:" in line]
    assert [(m.group(1), m.group(2)) for m in counted if m] == [("1", "2"), ("2", "2")]
    assert counted[0].group(3) and not counted[1].group(3)             # time left, until none is
    path = tiny_study(name="hushed", epochs=1, **two_points)
    code, out, err = run_cli("scale", "run", path, "--phi", "0", "--format", "json", "--quiet")
    assert code == 0 and json.loads(out)["study"] == "hushed" and err == ""
