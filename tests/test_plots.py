"""Figures: the Pareto front by hand, and real PNG + SVG files whose text says what the figure shows."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nas.plots import leaders, pareto_points, plot_frontier, plot_grid, plot_history

FAMILIES = [("searched", "compound", "searched (α 1.0, β 1.2, γ 1.14)"),
            ("paper", "compound", "paper (α 1.2, β 1.1, γ 1.15)"),
            ("width", "single", "width only"), ("depth", "single", "depth only"),
            ("resolution", "single", "resolution only")]


def frontier_table() -> pd.DataFrame:
    """5 families x phi 0..2 sharing one phi = 0 network, spanning 2-40 MFLOPs (under two decades);
    depth has no latency and width's phi = 2 is not trained yet."""
    rows = []
    for k, (family, kind, label) in enumerate(FAMILIES):
        for phi in (0, 1, 2):
            mflops = 2.0 if phi == 0 else 2.0 * (4.5 - 0.3 * k) ** phi
            rows.append({"family": family, "label": label, "kind": kind, "phi": float(phi), "mflops": mflops,
                         "latency_ms": math.nan if family == "depth" else 0.5 * mflops ** 0.8,
                         "params": 5000 * (phi + 1), "seeds": 3, "pareto": False,
                         "acc_mean": math.nan if (family, phi) == ("width", 2) else 0.6 + 0.05 * phi - 0.01 * k * phi,
                         "acc_std": 0.0 if phi == 0 else 0.01})
    return pd.DataFrame(rows)


def svg_texts(path: Path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text(encoding="utf-8"))


def assert_png(path: Path, min_width: int = 400) -> None:
    assert path.read_bytes()[:4] == b"\x89PNG"
    with Image.open(path) as image:
        assert image.width > min_width and image.height > 300


def test_pareto_points_by_hand():
    x = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0, 1.0, math.nan]
    y = [0.5, 0.7, 0.6, 0.65, 0.8, 0.8, 0.8, 0.5, 0.99]
    # 2 loses to 1 (same x, lower y), 3 to 1 (more x, less y), 6 to 4/5 (same y, more x); the copies
    # 0/7 and 4/5 stay together; the NaN point neither joins nor knocks anything off
    assert pareto_points(x, y) == [0, 7, 1, 4, 5]
    assert pareto_points([], []) == []
    assert pareto_points([3.0, 1.0, 2.0], [3.0, 1.0, 2.0]) == [1, 2, 0]   # ordered by x


def test_frontier_writes_png_and_svg_that_say_what_they_show(tmp_path):
    stem = tmp_path / "nested" / "frontier_mflops"
    paths = plot_frontier(frontier_table(), "mflops", stem, "accuracy vs FLOPs", subtitle="proxy: 3 seeds")
    assert paths == [stem.with_name("frontier_mflops.png"), stem.with_name("frontier_mflops.svg")]
    assert_png(paths[0])
    texts = svg_texts(paths[1])
    for text in ["FLOPs per image (MFLOPs, log scale)", "validation accuracy (mean ± std over seeds)",
                 "accuracy vs FLOPs", "proxy: 3 seeds", "Pareto front", *(label for _, _, label in FAMILIES)]:
        assert text in texts
    assert {"φ=0", "φ=1", "φ=2"} <= set(texts)
    ticks = {t for t in texts if re.fullmatch(r"[\d,.]+", t)}
    assert {"2", "5", "10", "20"} <= ticks   # plain labels on a log axis spanning under two decades


def test_frontier_against_latency_leaves_out_points_without_one(tmp_path):
    paths = plot_frontier(frontier_table(), "latency_ms", tmp_path / "latency", "accuracy vs latency")
    assert_png(paths[0])
    texts = svg_texts(paths[1])
    assert "latency per image of the full-size network (ms, log scale)" in texts
    assert "depth only" not in texts and "width only" in texts


def test_the_fastest_family_at_each_accuracy_is_named(tmp_path):
    """On latency the front runs (by hand): the shared phi = 0 base, resolution, width, paper and searched
    at phi 1, then paper and searched at phi 2 (depth has no latency; resolution's phi 2 is dominated)."""
    table = frontier_table()
    points = table[table["latency_ms"].notna() & table["acc_mean"].notna()]
    assert [(f, round(acc, 3)) for f, acc in leaders(points, "latency_ms")] == [
        (("searched", "paper", "width", "resolution"), 0.6), (("resolution",), 0.61), (("width",), 0.63),
        (("paper",), 0.64), (("searched",), 0.65), (("paper",), 0.68), (("searched",), 0.7)]
    # Resolution 0.1 better beyond phi = 0: fastest at every accuracy above the shared base.
    better = (table["family"] == "resolution") & (table["phi"] > 0)
    table = table.assign(acc_mean=np.where(better, table["acc_mean"] + 0.1, table["acc_mean"]))
    texts = " ".join(svg_texts(plot_frontier(table, "latency_ms", tmp_path / "latency", "t")[1]))
    assert ("Fastest at each accuracy (the Pareto front): every family up to 0.600, then resolution up to "
            "0.720.") in texts
    assert "tied" not in texts       # no ties marked in this table
    # Where several families are tied for the best accuracy at a phi, the caption says the order is within the noise.
    table = table.assign(tied_best_at_phi=table["phi"].isin([1.0, 2.0]) & table["family"].isin(["paper", "searched"]))
    texts = " ".join(svg_texts(plot_frontier(table, "latency_ms", tmp_path / "latency", "t")[1]))
    assert "At phi 1, 2 several families are tied for the best accuracy within the noise" in texts


def test_frontier_with_nothing_trained_is_an_error(tmp_path):
    table = frontier_table().assign(latency_ms=np.nan)
    with pytest.raises(ValueError, match="no trained points to plot against latency_ms"):
        plot_frontier(table, "latency_ms", tmp_path / "latency", "t")
    with pytest.raises(ValueError, match="no trained points to plot against mflops"):
        plot_frontier(table.assign(acc_mean=np.nan), "mflops", tmp_path / "flops", "t")
    assert not list(tmp_path.iterdir())


def grid_trials() -> pd.DataFrame:
    rows = [(10, 1.0, 1.2, 1.14, "complete", 0.71, 2), (11, 1.2, 1.1, 1.15, "complete", 0.74, 1),
            (12, 1.4, 1.0, 1.19, "pruned", math.nan, None), (13, 1.0, 1.4, math.nan, "infeasible", math.nan, None),
            (14, 1.1, 1.1, 1.24, "fail", math.nan, None), (15, math.nan, math.nan, math.nan, "fail", math.nan, None)]
    df = pd.DataFrame(rows, columns=["trial", "alpha", "beta", "gamma", "state", "acc_mean", "rank"])
    return df.assign(rank=df["rank"].astype("Int64"))


def test_grid_marks_every_kind_of_trial(tmp_path):
    paths = plot_grid(grid_trials(), tmp_path / "grid", "coefficient search")
    assert_png(paths[0])
    texts = svg_texts(paths[1])
    for text in ["α (depth coefficient)", "β (width coefficient)", "proxy validation accuracy", "pruned",
                 "infeasible", "failed", "winner α 1.20 β 1.10 γ 1.15", "paper (1.2, 1.1, 1.15)",
                 "γ1.14", "γ1.19"]:
        assert text in texts
    assert "γ1.24" not in texts   # failed trials get no γ label
    texts = svg_texts(plot_grid(grid_trials(), tmp_path / "no_paper", "t", paper=None)[1])
    assert not any(t.startswith("paper") for t in texts)


def test_grid_words_a_tie_as_the_verdict_does(tmp_path):
    """The best of a tie is "best (tied)", never "winner", and the candidates tied with it are ringed; a
    winner (a tie set of one) keeps the word."""
    tied = grid_trials().assign(tied_best=lambda d: d["trial"].isin([10, 11]))
    texts = svg_texts(plot_grid(tied, tmp_path / "tie", "t")[1])
    assert "best (tied) α 1.20 β 1.10 γ 1.15" in texts and "tied with the best (1, within the noise)" in texts
    assert not any(t.startswith("winner") for t in texts)
    alone = grid_trials().assign(tied_best=lambda d: d["trial"].eq(11))
    texts = svg_texts(plot_grid(alone, tmp_path / "alone", "t")[1])
    assert "winner α 1.20 β 1.10 γ 1.15" in texts and not any("tied" in t for t in texts)


def test_candidates_budget_racing_left_behind_are_marked_and_kept_off_the_colour_scale(tmp_path):
    # A raced study's table: trial 10 stopped at rung 1 of 2, its accuracy from a third of the training. It is
    # an open grey circle, and the colour scale and the best so far are those of the candidates judged.
    raced = grid_trials().assign(rung=["1/2", "2/2", "", "", "", ""], acc_mean=[0.31, 0.74] + [math.nan] * 4)
    texts = svg_texts(plot_grid(raced, tmp_path / "grid", "t")[1])
    assert "stopped at a lower rung" in texts and "γ1.14" in texts
    assert not any(re.fullmatch(r"0\.3\d*", t) for t in texts)    # no colour-bar tick down at 0.31
    history = svg_texts(plot_history(raced, tmp_path / "history", "t")[1])
    assert "stopped at a lower rung" in history and "best so far" in history
    assert not any("stopped" in t for t in svg_texts(plot_grid(grid_trials(), tmp_path / "flat", "t")[1]))


def test_grid_without_candidates_is_an_error(tmp_path):
    trials = grid_trials().assign(alpha=np.nan)
    with pytest.raises(ValueError, match="the study has no candidate to plot"):
        plot_grid(trials, tmp_path / "grid", "t")


def test_history_shows_best_so_far_and_trials_without_accuracy(tmp_path):
    paths = plot_history(grid_trials(), tmp_path / "history", "search history")
    assert_png(paths[0])
    texts = svg_texts(paths[1])
    for text in ["trial number", "proxy validation accuracy", "best so far", "pruned", "infeasible", "failed"]:
        assert text in texts


def test_history_of_two_trials_has_whole_trial_numbers(tmp_path):
    texts = svg_texts(plot_history(grid_trials().head(2), tmp_path / "history", "t")[1])
    trial_ticks = [float(t) for t in texts if re.fullmatch(r"[\d.]+", t) and float(t) > 1]   # accuracy is below 1
    assert trial_ticks and all(v == int(v) for v in trial_ticks)
