"""Reading searches back: every table and winner comes from the trial records in storage, with no torch.

`nas scale show`, `nas arch show`, the report and the frontier's table all start here, so they start
in well under a second (Optuna, pandas and SQLAlchemy, nothing heavier). The searches themselves
(scale.py, arch.py, frontier.py) write the records these functions read.
"""

from __future__ import annotations

import functools
import math
import statistics
import textwrap
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar, cast

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.pareto import pareto_front
from nas.records import ArchRecord, CoefficientRecord, FrontierMember, FrontierRunRecord, TrialRecord, records
from nas.statistics import (
    PairedDifference,
    PairedVerdict,
    describe_stability,
    estimate,
    paired_tied_with_best,
    rank_stability,
    tied_with_best,
    unpack_correct,
)

K = TypeVar("K", bound=Hashable)

MEMBER = "member:"            # frontier study attr prefix: member:<family>:<phi> -> the member's description


# ------------------------------------------------------------------------------- coefficient search

def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial with its candidate, cost ratios, accuracy and fate; winners ranked 1, 2, ...

    Coefficients and ratios are shown to 3 decimals; use `best_coefficients` for the exact values."""
    field = candidates(study)
    rows = [{
        "trial": r.number,
        "state": "infeasible" if r.state == "complete" and r.feasible is not None and not r.trainable else r.state,
        "alpha": r.alpha, "beta": r.beta, "gamma": r.gamma, "res0": r.resolution0, "res1": r.resolution1,
        "nominal_ratio": r.nominal_ratio, "measured_ratio": r.ratio,
        "proxy_res": r.proxy_resolution, "proxy_ratio": r.proxy_flops_ratio, "family_dev": r.family_worst,
        "params": r.params,
        "acc_mean": r.acc_mean, "acc_std": r.acc_std, "seeds": r.seeds, "epochs": r.epochs,
        "wall_s": r.wall_time, "reason": r.fail_reason or r.infeasible_reason or "",
    } for r in field]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    found = verdict(study)
    ranked = found.ranked if found else []
    rank = {r.number: i + 1 for i, r in enumerate(ranked)}
    estimates = {r.number: r.estimate() for r in ranked}
    tied = {r.number for r in found.tied} if found else set()
    df.insert(1, "rank", pd.array([rank.get(n) for n in df["trial"]], dtype="Int64"))
    at = df.columns.get_loc("acc_std") + 1
    df.insert(at, "acc_low", [e.low if (e := estimates.get(n)) else math.nan for n in df["trial"]])
    df.insert(at + 1, "acc_high", [e.high if (e := estimates.get(n)) else math.nan for n in df["trial"]])
    df.insert(at + 2, "tied_best", [n in tied for n in df["trial"]])
    if found is not None and found.paired is not None:    # the paired difference to the best, and its interval
        diffs = {r.number: d for r in ranked if (d := found.difference(r)) is not None}
        for i, (column, of) in enumerate((("vs_best", lambda d: -d.mean), ("vs_best_low", lambda d: -d.high),
                                          ("vs_best_high", lambda d: -d.low))):
            df.insert(at + 3 + i, column, [of(d) if (d := diffs.get(n)) else math.nan for n in df["trial"]])
    rungs = {r.number: r for r in field if r.rungs}
    if rungs:      # budget racing: the rung each candidate's accuracy is from (eliminated below the last)
        df.insert(df.columns.get_loc("state") + 1, "rung",
                  [f"{r.rung + 1}/{r.rungs}" if (r := rungs.get(n)) and r.rung is not None else ""
                   for n in df["trial"]])
    return df.round({"alpha": 3, "beta": 3, "gamma": 3, "nominal_ratio": 3, "measured_ratio": 3,
                     "proxy_ratio": 3, "family_dev": 3, "acc_mean": 4, "acc_std": 4, "acc_low": 4, "acc_high": 4,
                     "vs_best": 4, "vs_best_low": 4, "vs_best_high": 4, "wall_s": 1})


SCREEN_WIDTH = 160                                     # what a trials table may take on a terminal
LEFT_TO_MACHINE_FORMATS = ("nominal_ratio", "params", "acc_std", "vs_best_low", "vs_best_high")
SAID_ONCE_WHEN_THE_SAME = ("res0", "seeds", "epochs")
LEFT_OUT_WHEN_TOO_WIDE = ("res1", "wall_s", "proxy_res")


def trials_on_screen(table: pd.DataFrame, width: int = SCREEN_WIDTH) -> tuple[pd.DataFrame, list[str]]:
    """A trials table (`trials_table`, or some of its rows) for the terminal, within `width` columns, and the
    lines to print under it. The `reason` column, whose sentences would pad every row to their length,
    becomes a short `note` column ([1], [2], ...) and the sentences numbered notes, wrapped to `width`;
    identical reasons share a note. res0, seeds and epochs, when the same in every row, are said once;
    nominal_ratio, params, acc_std and the interval of vs_best are left to the machine formats, and so are res1 (gamma times res0),
    wall_s and proxy_res, in that order, while the table is still wider than `width`. JSON and CSV keep
    every column, and the full reason in each row."""
    if table.empty:
        return table, []
    shown, under = table, []
    same = [c for c in SAID_ONCE_WHEN_THE_SAME if c in shown.columns and shown[c].nunique(dropna=False) == 1]
    if same and len(shown) > 1:
        under.append("the same in every row: " + ", ".join(f"{c} {shown[c].iloc[0]}" for c in same))
        shown = shown.drop(columns=same)
    left = [c for c in LEFT_TO_MACHINE_FORMATS if c in shown.columns]
    numbers: dict[str, int] = {}
    if "reason" in shown.columns and shown["reason"].astype(bool).any():
        for reason in shown["reason"]:
            if reason and reason not in numbers:
                numbers[reason] = len(numbers) + 1
        at = shown.columns.get_loc("reason")
        shown = shown.drop(columns="reason")
        shown.insert(at, "note", [f"[{numbers[r]}]" if r else "" for r in table["reason"]])
    shown = shown.drop(columns=[c for c in (*left, "reason") if c in shown.columns])
    for c in LEFT_OUT_WHEN_TOO_WIDE:
        if c not in shown.columns or _width(shown) <= width:
            continue
        shown = shown.drop(columns=c)
        left.append(c)
    if left:
        under.append(f"not shown here (--format csv or json has them): {', '.join(left)}")
    if numbers:
        under.append("notes:")
        under += [textwrap.fill(" ".join(reason.split()), width, initial_indent=f"[{n}] ",
                                subsequent_indent=" " * len(f"[{n}] ")) for reason, n in numbers.items()]
    return shown, under


def _width(table: pd.DataFrame) -> int:
    """Characters of the widest line that `print_table(table, "table")` prints."""
    return max(len(line) for line in table.to_string(index=False).splitlines())


def candidates(study: optuna.Study) -> list[CoefficientRecord]:
    """One record per candidate: its trial, carrying the results of the highest budget rung it finished
    (`rung`), with the seed runs that racing trained there added (seed order). The rung and racing trials
    themselves are folded in, not listed."""
    trials = records(study, CoefficientRecord)
    races: dict[tuple, list[CoefficientRecord]] = defaultdict(list)
    rungs: dict[tuple, dict[int, CoefficientRecord]] = defaultdict(dict)
    for r in trials:
        if r.state == "complete" and r.seed_accuracies:
            if r.race_run:
                races[tuple(r.race_run[:2])].append(r)
            elif r.rung_run:
                rungs[tuple(r.rung_run[:2])][int(r.rung_run[2])] = r
    merged = []
    for r in trials:
        if r.race_run or r.rung_run:
            continue
        key = tuple(r.grid_point or ())
        if rungs.get(key) and r.seed_accuracies:
            top = rungs[key][max(rungs[key])]
            r = replace(r, seed_accuracies=top.seed_accuracies, acc_mean=top.acc_mean, acc_std=top.acc_std,
                        val_correct=top.val_correct, accuracy_per_epoch=top.accuracy_per_epoch, rung=top.rung,
                        budget=top.budget)
        runs = sorted(races.get(key, []), key=lambda run: run.race_run[2])  # type: ignore[index]
        if runs and r.seed_accuracies:
            accs = r.seed_accuracies + [a for run in runs for a in run.seed_accuracies or []]
            correct = [r.val_correct, *(run.val_correct for run in runs)]
            r = replace(r, seed_accuracies=accs, acc_mean=statistics.fmean(accs), acc_std=statistics.stdev(accs),
                        val_correct=None if None in correct else [c for cs in correct for c in cs or []])
        merged.append(r)
    return merged


def ranked_winners(study: optuna.Study) -> list[CoefficientRecord]:
    """Feasible complete candidates, best first: those that reached the highest budget rung before those a
    lower rung left behind, then by accuracy. Ties (common on easy proxies) go to the ratio nearer the
    target, then to smaller alpha and beta, so the winner does not depend on worker scheduling."""
    done = [r for r in candidates(study) if r.state == "complete" and r.feasible and r.acc_mean is not None]
    return sorted(done, key=lambda r: (-(r.rung or 0), -round(r.acc_mean or 0.0, 6),
                                       abs(math.log((r.ratio or 2.0) / (r.target or 2.0))), r.alpha, r.beta))


Run = tuple[float, "str | None"]
"""One seed's run: its final validation accuracy, and which validation images it got right (packed by
nas.statistics.pack_correct; None in trials stored before effnas recorded it)."""


def runs_of(r: TrialRecord) -> list[Run]:
    correct = r.val_correct if r.val_correct and len(r.val_correct) == r.seeds else [None] * r.seeds
    return list(zip(r.seed_accuracies or [], correct))


def tie_set(results: Mapping[K, Sequence[Run]], images: int | None,
            resamples: int = 2000) -> tuple[list[K], PairedVerdict | None]:
    """The candidates the noise cannot separate from the best, best first (candidates of equal accuracy in
    the order given), and the paired verdict behind it, its indices those of `results` in the order given
    (differences[j]: the best minus the j-th candidate given). Every candidate is scored on the same
    validation images, so they are compared image by image (nas.statistics.paired_tied_with_best) when every
    run kept which images it got right; otherwise (trials stored before effnas kept that) by the unpaired
    test on their accuracies, with None for the paired verdict."""
    keys = sorted(results, key=lambda k: -round(statistics.fmean(a for a, _ in results[k]), 6))
    if images and all(c is not None for k in keys for _, c in results[k]):
        paired = _paired(tuple(tuple(cast(str, c) for _, c in results[k]) for k in keys), images, resamples)
        given = {k: j for j, k in enumerate(results)}
        at = [given[k] for k in keys]              # best-first position -> position given
        differences: list[PairedDifference | None] = [None] * len(keys)
        for i, d in enumerate(paired.differences):
            differences[at[i]] = d
        return [keys[i] for i in paired.tied], PairedVerdict(at[paired.best], [at[i] for i in paired.tied],
                                                              differences)
    tied = tied_with_best([estimate([a for a, _ in results[k]], images) for k in keys])
    return [keys[i] for i in tied], None


@functools.lru_cache(maxsize=64)
def _paired(correct: tuple[tuple[str, ...], ...], images: int, resamples: int) -> PairedVerdict:
    """paired_tied_with_best on packed runs, kept: a search replays its races on the same runs every time a
    worker looks for work, and a bootstrap costs about 50 ms a pair at 2,000 images."""
    return paired_tied_with_best([np.stack([unpack_correct(c, images) for c in runs]) for runs in correct],
                                 resamples)


@dataclass(frozen=True)
class Verdict:
    """What a coefficient search can say: its candidates best first, those the best cannot be told apart
    from, and (when the runs kept per-image results) the paired difference of each to the best. A winner
    only when the tie set is the best alone. Candidates a lower budget rung left behind are ranked, but
    only those at the highest rung are judged."""

    ranked: list[CoefficientRecord]
    tied: list[CoefficientRecord]
    paired: PairedVerdict | None = None
    judged: int = 0                  # the first `judged` of `ranked`: those at the highest rung

    @property
    def best(self) -> CoefficientRecord:
        return self.ranked[0]

    @property
    def is_tie(self) -> bool:
        return len(self.tied) > 1

    def difference(self, r: CoefficientRecord) -> PairedDifference | None:
        """The paired difference of the best minus `r` (None for the best, for an unpaired verdict, or for a
        candidate a lower rung left behind)."""
        if self.paired is None or r not in self.ranked[:self.judged]:
            return None
        return self.paired.differences[self.ranked.index(r)]

    def test_words(self) -> str:
        """How the tie set was decided, in the words every screen uses."""
        if self.paired is not None:
            return f"paired: {self.paired.test_words()} on the same validation images"
        return ("unpaired: these trials did not keep which validation images they got right (stored by an older "
                "effnas), so each candidate's accuracy interval is compared on its own")

    def stability(self) -> str:
        """Whether the seeds agree on the whole order (Kendall tau between disjoint halves of the seeds)."""
        seeds = [r.seed_accuracies or [] for r in self.ranked[:self.judged]]
        return describe_stability(rank_stability(seeds), sum(len(s) >= 2 for s in seeds))

    def sentence(self) -> str:
        b = self.best
        est = b.estimate()
        assert est is not None
        who = f"trial {b.number} (alpha {b.alpha:.4g}, beta {b.beta:.4g}, gamma {b.gamma:.4g})"
        if self.paired is None and not math.isfinite(est.se):
            return (f"no verdict: the best is {who} at {est.mean:.4f}, but its trials (one seed each, from an "
                    f"effnas that did not record the validation size) carry no measure of their noise, so it cannot "
                    f"be told from the {len(self.ranked) - 1} other candidate(s); rerun with search.seeds >= 2")
        if self.judged == 1:
            return f"one candidate finished: {who}, accuracy {est.describe()}; nothing to compare it with"
        if not self.is_tie:
            runner = self.ranked[1]
            d = self.difference(runner)
            by = (f" by {d.mean:.4f} (95 % interval {d.low:.4f}-{d.high:.4f}, paired)" if d is not None
                  else " by more than the noise")
            return (f"winner: {who}, accuracy {est.describe()}; it leads the runner-up (trial {runner.number}, "
                    f"{runner.acc_mean:.4f}){by}")
        others = ", ".join(str(r.number) for r in self.tied[1:])
        return (f"no winner: {len(self.tied)} of {self.judged} candidates are tied within the noise. The best is "
                f"{who}, accuracy {est.describe()}; {'trials' if len(self.tied) > 2 else 'trial'} {others} cannot be "
                f"told apart from it. The family is built from the best as a tie; more seeds (search.seeds, or "
                f"search.racing) or a larger validation split can separate them")


def verdict(study: optuna.Study) -> Verdict | None:
    """The ranked candidates and the tie set of the best among those at the highest budget rung; None before
    any candidate finished."""
    ranked = ranked_winners(study)
    if not ranked:
        return None
    judged = [r for r in ranked if (r.rung or 0) == (ranked[0].rung or 0)]
    tied, paired = tie_set({i: runs_of(r) for i, r in enumerate(judged)}, judged[0].val_images)
    return Verdict(ranked, [ranked[i] for i in sorted(tied)], paired, len(judged))


def best_coefficients(study: optuna.Study) -> tuple[float, float, float]:
    """The winner's exact (alpha, beta, gamma), unrounded: what every family of the study is built from."""
    ranked = ranked_winners(study)
    if not ranked:
        raise NasError(f"study '{study.study_name}' has no finished feasible trial yet: run or resume it first")
    return ranked[0].coefficients


def state_counts(table: pd.DataFrame) -> str:
    """'8 complete, 2 infeasible': how the trials of a table ended."""
    counts = table["state"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "infeasible", "fail", "running", "waiting")
                     if s in counts)


# ------------------------------------------------------------------------------- block-level search

def arch_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial: cost, accuracy, reward; `best` ranks rewards, or marks the Pareto set (1)."""
    df = pd.DataFrame([{"trial": r.number, "state": r.state, "mflops": r.mflops, "params": r.params,
                        "latency_ms": r.latency_ms, "acc_mean": r.acc_mean, "acc_std": r.acc_std, "reward": r.reward,
                        "wall_s": r.wall_time, "reason": r.fail_reason or ""} for r in records(study, ArchRecord)])
    if df.empty:
        return df
    best = {t.number: i + 1 for i, t in enumerate(best_trials(study))}
    df.insert(1, "best", pd.array([best.get(n) for n in df["trial"]], dtype="Int64"))
    return df.round({"mflops": 1, "latency_ms": 3, "acc_mean": 4, "acc_std": 4, "reward": 4, "wall_s": 1})


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Single objective: complete trials by reward, best first. Several: the Pareto set (Optuna's)."""
    if len(study.directions) == 1:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # A complete trial of a single-objective study always has a value.
        return sorted(done, key=lambda t: (-cast(float, t.value), t.number))
    return sorted(study.best_trials, key=lambda t: -t.values[0])


# ------------------------------------------------------------------------------------- frontiers

def stored_members(attrs: dict) -> list[FrontierMember]:
    """The frontier members stored in a frontier study's attributes (those of an older schema left out: the
    next `nas frontier` describes them again)."""
    members = (FrontierMember.from_attrs(v) for k, v in attrs.items() if k.startswith(MEMBER))
    return [m for m in members if m is not None]


def frontier_table(study: optuna.Study) -> pd.DataFrame:
    """One row per (family, phi) member: its coefficients, size, cost (FLOPs, activations, latency), and
    the accuracy of its network over every finished seed (mean, standard deviation, min, max), with the
    accuracy-vs-FLOPs Pareto front marked, and at each phi the members tied with the best there (the paired
    test of `tie_set`, as a search's verdict). Members without a finished run have NaN accuracy and 0 seeds."""
    runs: dict[str, list[Run]] = {}
    images = None
    for r in records(study, FrontierRunRecord, states=(TrialState.COMPLETE,)):
        if r.frontier_run and r.seed_accuracies:     # one seed per run, or a fused run's seeds
            runs.setdefault(r.frontier_run[0], []).extend(runs_of(r))
            images = images or r.val_images
    rows = []
    for m in sorted(stored_members(study.user_attrs), key=lambda m: (m.order, m.phi)):
        accs = [a for a, _ in runs.get(m.network, [])]
        e = estimate(accs, images) if accs else None
        rows.append({
            "family": m.family, "label": m.label, "kind": m.kind, "phi": m.phi,
            "alpha": m.alpha, "beta": m.beta, "gamma": m.gamma,
            "width": m.width, "depth": m.depth, "resolution": m.resolution, "params": m.params,
            "mflops": m.flops / 1e6, "activations": m.activations,
            "flops_vs_reference": m.flops_vs_reference, "matched": m.matched,
            "full_size_resolution": m.full_size_resolution,
            "latency_ms": math.nan if m.latency_ms is None else m.latency_ms,
            "acc_mean": statistics.fmean(accs) if accs else math.nan,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else math.nan),
            "acc_low": e.low if e else math.nan, "acc_high": e.high if e else math.nan,
            "acc_min": min(accs, default=math.nan), "acc_max": max(accs, default=math.nan),
            "seeds": len(accs), "network": m.network,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    tied: set[int] = set()
    for _, group in df[df["seeds"] > 0].groupby("phi"):
        tied |= set(tie_set({i: runs[group.loc[i, "network"]] for i in group.index}, images)[0])
    df["tied_best_at_phi"] = [i in tied for i in df.index]
    trained = df[df["seeds"] > 0]
    front = set(trained.index[pareto_front(list(zip(trained["acc_mean"], trained["mflops"])), ["maximize", "minimize"])])
    df["pareto"] = [i in front for i in df.index]
    return df.round({"alpha": 4, "beta": 4, "gamma": 4, "width": 4, "depth": 4, "mflops": 3, "flops_vs_reference": 4, "latency_ms": 4,
                     "acc_mean": 4, "acc_std": 4, "acc_low": 4, "acc_high": 4, "acc_min": 4, "acc_max": 4})


def frontier_verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per phi: the family that leads beyond the noise there, or the families tied with the
    best (frontier_table's tied_best_at_phi)."""
    out = []
    for phi, group in table[table["seeds"] > 0].groupby("phi"):
        if group["network"].nunique() == 1:       # phi = 0: every family's member is the base
            continue
        best = group.loc[group["acc_mean"].idxmax()]
        shown = f"{best['family']} {best['acc_mean']:.4f} (95 % interval {best['acc_low']:.4f}-{best['acc_high']:.4f})"
        tied = list(dict.fromkeys(group[group["tied_best_at_phi"]]["family"]))
        if len(tied) == 1:
            out.append(f"phi {phi:g}: {shown} leads every other family beyond the noise")
        else:
            out.append(f"phi {phi:g}: no family leads; {', '.join(tied)} are tied within the noise (best: {shown})")
    return out
