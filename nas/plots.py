"""Figures for the frontier and the search report, rendered from result tables (never recomputed).

Each function writes `stem.png` (150 dpi) and `stem.svg` side by side and returns both paths. Figures
are built on `matplotlib.figure.Figure`, without pyplot, so plotting touches no global state and needs
no display; the SVG keeps its text as text (searchable, selectable, editable).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import TABLEAU_COLORS
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from nas.pareto import pareto_front

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType  # matplotlib >= 3.9; only for the checker

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none", "svg.hashsalt": "effnas", "font.size": 10, "axes.titlesize": 12,
    "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9,
    "grid.color": "0.85", "grid.linewidth": 0.6,
}
_FIXED_COLOURS = {"paper": "tab:blue", "fast": "tab:cyan", "width": "tab:green", "depth": "tab:orange",
                  "resolution": "tab:brown"}
_COMPOUND_COLOURS = ("tab:red", "tab:purple", "tab:pink", "tab:olive", "tab:cyan")
_TAB10 = tuple(TABLEAU_COLORS)
_X_LABELS = {"mflops": "FLOPs per image (MFLOPs, log scale)", "latency_ms": "latency per image of the full-size network (ms, log scale)"}
_LEADS = {"mflops": "Fewest FLOPs", "latency_ms": "Fastest"}
_FRONT_COLOUR = "0.55"


def pareto_points(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the points on the min-x, max-y front, ordered by x then by index. Identical points do
    not dominate each other, so all copies stay; a point with a NaN coordinate is left out."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    valid = np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))
    front = [int(valid[i]) for i in pareto_front([(xs[j], ys[j]) for j in valid], ["minimize", "maximize"])]
    return sorted(front, key=lambda i: (xs[i], i))


def leaders(points: pd.DataFrame, x: str) -> list[tuple[tuple[str, ...], float]]:
    """Along the Pareto front from the lowest accuracy up, the families whose networks reach each
    accuracy at the least `x` (on latency: the fastest family at each accuracy), as (families, the
    highest accuracy they lead up to). A network several families share (phi = 0) names them all."""
    front = points.iloc[pareto_points(points[x], points["acc_mean"])]
    runs: list[tuple[tuple[str, ...], float]] = []
    for (_, acc), rows in front.groupby([x, "acc_mean"], sort=False):
        families = tuple(dict.fromkeys(rows["family"]))
        if runs and runs[-1][0] == families:
            runs[-1] = (families, acc)
        else:
            runs.append((families, acc))
    return runs


def plot_frontier(table: pd.DataFrame, x: str, path_stem: Path, title: str, subtitle: str = "") -> list[Path]:
    """Accuracy (mean ± std over seeds) against `x` ("mflops" or "latency_ms", log axis), one line per
    family sorted by phi: compound families solid with φ labels, baselines dashed. The Pareto front over
    all plotted points is computed here for `x` (the table's `pareto` column is not read), and a caption
    names the family that leads it at each accuracy: on latency, the fastest. Rows without `x` or accuracy
    are left out; ValueError if none is left."""
    if x not in _X_LABELS:
        raise ValueError(f"x must be one of {sorted(_X_LABELS)}, not {x!r}")
    points = table[table[x].notna() & table["acc_mean"].notna()]
    if points.empty:
        raise ValueError(f"no trained points to plot against {x}")
    colours = _family_colours(table)
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(8.0, 5.0), layout="constrained")
        ax = fig.add_subplot()
        front = points.iloc[pareto_points(points[x], points["acc_mean"])]
        ax.step(front[x], front["acc_mean"], where="post", color=_FRONT_COLOUR, alpha=0.35, linewidth=7,
                solid_capstyle="round", zorder=1)
        annotated: set[tuple[float, float, float]] = set()
        for n, (family, rows) in enumerate(points.groupby("family", sort=False)):
            rows = rows.sort_values("phi")
            compound = rows["kind"].iloc[0] == "compound"
            ax.errorbar(rows[x], rows["acc_mean"], yerr=rows["acc_std"].where(rows["acc_std"] > 0), capsize=3,
                        color=colours[family], linestyle="-" if compound else "--", linewidth=1.6,
                        marker="o" if compound else "s", markersize=5, label=rows["label"].iloc[0], zorder=3)
            if compound:
                _label_phis(ax, rows, x, n, colours[family], annotated)
        ax.scatter(front[x], front["acc_mean"], s=150, facecolors="none", edgecolors="black",
                   linewidths=1.3, zorder=4)
        ax.set_xscale("log")
        _readable_log_ticks(ax, points[x].min(), points[x].max(), axis_width_pt=0.6 * 72 * fig.get_figwidth())
        ax.set_xlabel(_X_LABELS[x])
        ax.set_ylabel("validation accuracy (mean ± std over seeds)")
        ax.grid(True, which="major")
        _titles(ax, title, subtitle)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], color=_FRONT_COLOUR, alpha=0.5, linewidth=6, marker="o", markersize=10,
                              markerfacecolor="none", markeredgecolor="black"))
        labels.append("Pareto front")
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        every = points["family"].nunique()
        steps = [f"{'every family' if 1 < len(f) == every else ' = '.join(f)} up to {acc:.3f}"
                 for f, acc in leaders(points, x)]
        caption = f"{_LEADS[x]} at each accuracy (the Pareto front): {', then '.join(steps)}."
        tied = [f"{phi:g}" for phi, rows in points[points["phi"] > 0].groupby("phi")
                if rows.get("tied_best_at_phi", pd.Series(dtype=bool)).sum() > 1]
        if tied:
            caption += (f" At phi {', '.join(tied)} several families are tied for the best accuracy within the noise "
                        f"(95 % intervals): there this order is not beyond it.")
        fig.supxlabel("\n".join(textwrap.wrap(caption, 120)), fontsize=9, color="0.25")
        return _save(fig, path_stem)


def left_behind(rung: object) -> bool:
    """Whether a candidate's `rung` (a trials table's "1/2": rung 1 of 2) is below the last: budget racing left it
    behind, and its accuracy is from less training than that of the candidates judged."""
    if not isinstance(rung, str) or "/" not in rung:
        return False
    reached, of = rung.split("/", 1)
    return reached != of


def _split_left_behind(done: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the candidates judged at the full budget, those budget racing left behind at a lower rung)."""
    behind = done["rung"].map(left_behind).astype(bool) if "rung" in done else pd.Series(False, index=done.index)
    return done[~behind], done[behind]


LEFT_BEHIND = "stopped at a lower rung"    # budget racing left it behind, with less training


def plot_grid(trials: pd.DataFrame, path_stem: Path, title: str,
              paper: tuple[float, ...] | None = (1.2, 1.1, 1.15)) -> list[Path]:
    """The coefficient search in the α-β plane: finished trials coloured by proxy accuracy and labelled
    with γ, pruned, infeasible and failed trials in their own markers, the best (rank 1) starred, called the
    winner only when no other candidate is tied with it (`tied_best`; those are ringed), and the paper's
    point (`paper` = (α, β[, γ]), None to leave it out) as a black +. Candidates budget racing left behind
    are open grey circles: their accuracy, from less training, is not on the colour scale."""
    placed = trials[trials["alpha"].notna() & trials["beta"].notna()]
    if placed.empty:
        raise ValueError("the study has no candidate to plot")
    state = placed["state"]
    done, behind = _split_left_behind(placed[(state == "complete") & placed["acc_mean"].notna()])
    pruned = placed[state == "pruned"]
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(7.5, 6.0), layout="constrained")
        ax = fig.add_subplot()
        if not done.empty:
            dots = ax.scatter(done["alpha"], done["beta"], c=done["acc_mean"], cmap="viridis", s=70,
                              edgecolors="0.2", linewidths=0.5, label="complete", zorder=3)
            fig.colorbar(dots, ax=ax, label="proxy validation accuracy")
        markers: list[tuple[pd.DataFrame, dict[str, Any], str]] = [
            (behind, dict(marker="o", facecolors="none", edgecolors="0.35", linewidths=1.2, s=70), LEFT_BEHIND),
            (pruned, dict(marker="o", facecolors="none", edgecolors="0.5", linewidths=1.2, s=70), "pruned"),
            (placed[state.isin(["running", "waiting"])],
             dict(marker="s", facecolors="none", edgecolors="0.7", linewidths=1.0, s=50), "not finished"),
            (placed[state == "infeasible"], dict(marker="x", color="0.5", s=50), "infeasible"),
            (placed[state == "fail"], dict(marker="x", color="tab:red", s=50), "failed"),
        ]
        for rows, style, label in markers:
            if not rows.empty:
                ax.scatter(rows["alpha"], rows["beta"], label=label, zorder=3, **style)
        for _, row in pd.concat([done, behind, pruned]).iterrows():
            if pd.notna(row["gamma"]):
                ax.annotate(f"γ{row['gamma']:.2f}", (row["alpha"], row["beta"]), xytext=(6, -9),
                            textcoords="offset points", fontsize=7, color="0.25")
        best = placed[placed["rank"].eq(1).fillna(False).astype(bool)]
        tied = placed[placed["tied_best"].fillna(False).astype(bool)] if "tied_best" in placed else best
        if not best.empty:      # the verdict's words: a winner only when the tie set is the best alone
            w, word = best.iloc[0], "winner" if len(tied) <= 1 else "best (tied)"
            others = tied[~tied.index.isin(best.index)]
            if not others.empty:
                ax.scatter(others["alpha"], others["beta"], marker="o", s=260, facecolors="none",
                           edgecolors="tab:red", linewidths=1.2, linestyle="--", zorder=4,
                           label=f"tied with the best ({len(others)}, within the noise)")
            ax.scatter([w["alpha"]], [w["beta"]], marker="*", s=500, facecolors="none", edgecolors="tab:red",
                       linewidths=1.6, label=f"{word} α {w['alpha']:.2f} β {w['beta']:.2f} γ {w['gamma']:.2f}",
                       zorder=5)
            ax.annotate(word, (w["alpha"], w["beta"]), xytext=(0, 12), textcoords="offset points",
                        ha="center", fontsize=9, color="tab:red", fontweight="bold")
        if paper is not None:
            ax.scatter([paper[0]], [paper[1]], marker="+", s=160, color="black", linewidths=1.8,
                       label=f"paper ({', '.join(f'{v:g}' for v in paper)})", zorder=4)
        ax.margins(0.12)
        ax.set_xlabel("α (depth coefficient)")
        ax.set_ylabel("β (width coefficient)")
        ax.set_title(title)
        ax.grid(True)
        # Below the whole figure, not the axes: a legend wider than the axes would squeeze them.
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
        return _save(fig, path_stem)


def plot_history(trials: pd.DataFrame, path_stem: Path, title: str) -> list[Path]:
    """Proxy accuracy of each finished trial in trial order with the best so far as a step line; trials
    without an accuracy (pruned, infeasible, failed) are marks along the bottom so none goes missing, and those
    budget racing left behind grey, outside the best so far (their accuracy is from less training)."""
    if trials.empty:
        raise ValueError("the study has no trial to plot")
    trials = trials.sort_values("trial")
    done, behind = _split_left_behind(trials[(trials["state"] == "complete") & trials["acc_mean"].notna()])
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(8.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
        if not behind.empty:
            ax.scatter(behind["trial"], behind["acc_mean"], s=30, facecolors="none", edgecolors="0.45", zorder=3,
                       label=LEFT_BEHIND)
        if not done.empty:
            ax.scatter(done["trial"], done["acc_mean"], s=30, color="tab:blue", zorder=3, label="complete trial")
            last = trials["trial"].max()
            best = done["acc_mean"].cummax()
            ax.step(list(done["trial"]) + [last], list(best) + [best.iloc[-1]], where="post",
                    color="tab:red", linewidth=1.8, zorder=2, label="best so far")
        ax.set_ymargin(0.12)   # a free band at the bottom for the trials without an accuracy
        edge = ax.get_xaxis_transform()   # x in data, y in axes fraction
        marks: list[tuple[str, dict[str, Any], str]] = [
            ("pruned", dict(marker="|", color="0.45", markersize=10), "pruned"),
            ("infeasible", dict(marker="x", color="0.45", markersize=6), "infeasible"),
            ("fail", dict(marker="x", color="tab:red", markersize=6), "failed")]
        for state, style, label in marks:
            rows = trials[trials["state"] == state]
            if not rows.empty:
                ax.plot(rows["trial"], [0.04] * len(rows), linestyle="none", transform=edge, zorder=4,
                        label=label, **style)
        ax.set_xlim(trials["trial"].min() - 0.5, trials["trial"].max() + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial number")
        ax.set_ylabel("proxy validation accuracy")
        ax.set_title(title)
        ax.grid(True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
        return _save(fig, path_stem)


def plot_confirmation(table: pd.DataFrame, path_stem: Path, title: str, subtitle: str = "") -> list[Path]:
    """Proxy accuracy against confirmation accuracy, one point a candidate (nas.search.confirm's table),
    labelled with its trial and proxy rank; the confirmation's tie set ringed. The two budgets sit at other
    accuracy levels, so what the figure shows is order: points rising to the right mean the ranking held."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(6.5, 5.0), layout="constrained")
        ax = fig.add_subplot()
        ax.scatter(table["proxy_acc"], table["confirmed_acc"], s=60, color="tab:blue", zorder=3, label="candidate")
        tied = table[table["tied_best"]]
        ax.scatter(tied["proxy_acc"], tied["confirmed_acc"], s=220, facecolors="none", edgecolors="tab:red",
                   linewidths=1.4, zorder=4, label="confirmed best, and tied with it")
        for _, row in table.iterrows():
            ax.annotate(f"trial {row['trial']} (#{row['proxy_rank']})", (row["proxy_acc"], row["confirmed_acc"]),
                        xytext=(6, 4), textcoords="offset points", fontsize=8, color="0.25")
        ax.margins(0.15)
        ax.set_xlabel("proxy validation accuracy (the search's budget)")
        ax.set_ylabel("validation accuracy at the confirmation budget")
        _titles(ax, title, subtitle)
        ax.grid(True)
        ax.legend(loc="lower right")
        return _save(fig, path_stem)


def plot_calibration(accuracy: pd.DataFrame, taus: pd.DataFrame, path_stem: Path, title: str,
                     min_tau: float) -> list[Path]:
    """A proxy-budget calibration: left, each sampled candidate's accuracy across the budgets (`accuracy`:
    candidate, budget, acc); right, Kendall's tau-b of each budget's ranking against the largest budget's with
    its 95 % interval (`taus`: budget, tau_b, tau_low, tau_high) and the agreement threshold."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(11.0, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2)
        for candidate, rows in accuracy.groupby("candidate", sort=False):
            left.plot(rows["budget"], rows["acc"], marker="o", linewidth=1.2, label=str(candidate))
        left.set_xscale("log")
        left.set_xlabel("budget (times the study's training, log scale)")
        left.set_ylabel("validation accuracy")
        left.grid(True)
        left.legend(fontsize=8, title="candidate (α, β)", title_fontsize=8)
        known = taus[taus["tau_b"].notna()]
        below = known.iloc[:-1] if len(known) > 1 else known
        right.errorbar(below["budget"], below["tau_b"],
                       yerr=[below["tau_b"] - below["tau_low"], below["tau_high"] - below["tau_b"]],
                       marker="o", capsize=4, color="tab:blue", label="tau-b with its 95 % interval")
        right.axhline(min_tau, color="tab:red", linestyle="--", linewidth=1.0, label=f"agreement: tau-b >= {min_tau:g}")
        right.set_xscale("log")
        right.set_xlim(left.get_xlim())
        budgets = list(taus["budget"])
        for ax in (left, right):       # the budgets themselves as ticks: 0.111x, 0.333x, 1x, 3x
            ax.set_xticks(budgets, [f"{b:.3g}x" for b in budgets])
            ax.xaxis.set_minor_formatter(NullFormatter())
        right.set_ylim(-1.05, 1.05)
        right.set_xlabel("budget (times the study's training, log scale)")
        right.set_ylabel(f"Kendall tau-b against {taus['budget'].iloc[-1]:g}x")
        right.grid(True)
        right.legend(loc="lower right")
        fig.suptitle(title)
        return _save(fig, path_stem)


def _family_colours(table: pd.DataFrame) -> dict[str, str]:
    """Fixed colours for the paper and the single-dimension baselines, red/purple/... for other compound
    families in order of appearance, then unused tab10 colours for anything else."""
    colours: dict[str, str] = {}
    for family, kind in table[["family", "kind"]].drop_duplicates("family").itertuples(index=False):
        taken = set(colours.values()) | set(_FIXED_COLOURS.values())
        choices = [c for c in _COMPOUND_COLOURS if c not in taken] if kind == "compound" else []
        choices += [c for c in _TAB10 if c not in taken]
        colours[family] = _FIXED_COLOURS.get(family) or (choices[0] if choices else "0.3")
    return colours


def _label_phis(ax: Axes, rows: pd.DataFrame, x: str, n: int, colour: str,
                done: set[tuple[float, float, float]]) -> None:
    """"φ=k" beside each point; families alternate above and below, and a label already written at the
    same spot (phi = 0 is one network in every family) is not written again."""
    dy = 6 if n % 2 == 0 else -12
    for phi, xv, yv in rows[["phi", x, "acc_mean"]].itertuples(index=False):
        if (phi, xv, yv) in done:
            continue
        done.add((phi, xv, yv))
        ax.annotate(f"φ={phi:g}", (xv, yv), xytext=(7, dy), textcoords="offset points", fontsize=7, color=colour)


def _readable_log_ticks(ax: Axes, lo: float, hi: float, axis_width_pt: float) -> None:
    """Labelled ticks at plain numbers (3, 5, 10, 20) however few decades the data spans: the coarsest
    of 1 / 1-2-5 / 1-2-3-5 / 1-1.5-2-3-4-5-7 / 1-9 per decade that puts five labels in view, or the
    densest whose labels do not collide; a range too narrow for two of them gets linear ticks, one too
    wide for a label each decade gets matplotlib's spaced powers of ten."""
    span = max(hi / lo, 1.2)
    lo, hi = lo / span ** 0.05, hi * span ** 0.1   # more room on the right, for the φ labels
    ax.set_xlim(lo, hi)
    label = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}")
    pt_per_decade = axis_width_pt / math.log10(hi / lo)
    chosen = None
    for subs in [(1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0),
                 tuple(float(s) for s in range(1, 10))]:
        locator = LogLocator(subs=subs)
        shown = [v for v in locator.tick_values(lo, hi) if lo <= v <= hi]
        gaps = [math.log10(b / a) * pt_per_decade for a, b in zip(shown, shown[1:])]
        widths = [6.0 * len(label(v)) + 8.0 for v in shown]   # ~6 pt a character at 9 pt, plus a gap
        if any(g < max(wa, wb) for g, wa, wb in zip(gaps, widths, widths[1:])):
            break
        chosen = (locator, len(shown))
        if len(shown) >= 5:
            break
    if chosen is None:   # many decades: powers of ten, every few decades
        chosen = (LogLocator(), 2)
    ax.xaxis.set_major_locator(chosen[0] if chosen[1] >= 2 else MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(label)
    ax.xaxis.set_minor_locator(LogLocator(subs="all"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _titles(ax: Axes, title: str, subtitle: str) -> None:
    if not subtitle:
        ax.set_title(title)
        return
    lines = textwrap.wrap(subtitle, 100)
    ax.annotate("\n".join(lines), (0.5, 1.0), xycoords="axes fraction", xytext=(0, 6), textcoords="offset points",
                ha="center", va="bottom", fontsize=9, color="0.3")
    ax.set_title(title, pad=10 + 12 * len(lines))


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths
