"""Reading searches back: every table and winner comes from the trial records in storage, with no torch.

`nas scale show`, `nas arch show`, the report and the frontier's table all start here, so they start
in well under a second (Optuna, pandas and SQLAlchemy, nothing heavier). The searches themselves
(scale.py, arch.py, frontier.py) write the records these functions read.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import cast

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.pareto import pareto_front
from nas.records import ArchRecord, CoefficientRecord, FrontierRunRecord, records
from nas.statistics import describe_stability, estimate, rank_stability, tied_with_best

MEMBER = "member:"            # frontier study attr prefix: member:<family>:<phi> -> the member's description


# ------------------------------------------------------------------------------- coefficient search

def trials_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial with its candidate, cost ratios, accuracy and fate; winners ranked 1, 2, ...

    Coefficients and ratios are shown to 3 decimals; use `best_coefficients` for the exact values."""
    rows = [{
        "trial": r.number,
        "state": "infeasible" if r.state == "complete" and r.feasible is not None and not r.trainable else r.state,
        "alpha": r.alpha, "beta": r.beta, "gamma": r.gamma, "res0": r.resolution0, "res1": r.resolution1,
        "nominal_ratio": r.nominal_ratio, "measured_ratio": r.ratio,
        "proxy_res": r.proxy_resolution, "proxy_ratio": r.proxy_flops_ratio, "family_dev": r.family_worst,
        "params": r.params,
        "acc_mean": r.acc_mean, "acc_std": r.acc_std, "seeds": r.seeds, "epochs": r.epochs,
        "wall_s": r.wall_time, "reason": r.fail_reason or r.infeasible_reason or "",
    } for r in candidates(study)]
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
    return df.round({"alpha": 3, "beta": 3, "gamma": 3, "nominal_ratio": 3, "measured_ratio": 3,
                     "proxy_ratio": 3, "family_dev": 3, "acc_mean": 4, "acc_std": 4, "acc_low": 4, "acc_high": 4, "wall_s": 1})


def candidates(study: optuna.Study) -> list[CoefficientRecord]:
    """One record per candidate: its trial, with the seed runs that racing trained in later trials added to
    its accuracies (seed order); the racing trials themselves are folded in, not listed."""
    trials = records(study, CoefficientRecord)
    more: dict[tuple, list[tuple[float, list[float]]]] = defaultdict(list)
    for r in trials:
        if r.race_run and r.state == "complete" and r.seed_accuracies:
            more[tuple(r.race_run[:2])].append((r.race_run[2], r.seed_accuracies))
    merged = []
    for r in trials:
        if r.race_run:
            continue
        added = [a for _, runs in sorted(more.get(tuple(r.grid_point or ()), [])) for a in runs]
        if added and r.seed_accuracies:
            accs = r.seed_accuracies + added
            r = replace(r, seed_accuracies=accs, acc_mean=statistics.fmean(accs),
                                    acc_std=statistics.stdev(accs))
        merged.append(r)
    return merged


def ranked_winners(study: optuna.Study) -> list[CoefficientRecord]:
    """Feasible complete trials, best first. Ties (common on easy proxies) go to the ratio nearer the
    target, then to smaller alpha and beta, so the winner does not depend on worker scheduling."""
    done = [r for r in candidates(study) if r.state == "complete" and r.feasible and r.acc_mean is not None]
    target = study.user_attrs.get("config", {}).get("search", {}).get("target", 2.0)
    return sorted(done, key=lambda r: (-round(r.acc_mean or 0.0, 6), abs(math.log((r.ratio or target) / target)),
                                       r.alpha, r.beta))


@dataclass(frozen=True)
class Verdict:
    """What a coefficient search can say: its candidates best first, and those the best cannot be told
    apart from (nas.statistics). A winner only when that set is the best alone."""

    ranked: list[CoefficientRecord]
    tied: list[CoefficientRecord]

    @property
    def best(self) -> CoefficientRecord:
        return self.ranked[0]

    @property
    def is_tie(self) -> bool:
        return len(self.tied) > 1

    def stability(self) -> str:
        """Whether the seeds agree on the whole order (Kendall tau between disjoint halves of the seeds)."""
        seeds = [r.seed_accuracies or [] for r in self.ranked]
        return describe_stability(rank_stability(seeds), sum(len(s) >= 2 for s in seeds))

    def sentence(self) -> str:
        b = self.best
        est = b.estimate()
        assert est is not None
        who = f"trial {b.number} (alpha {b.alpha:.4g}, beta {b.beta:.4g}, gamma {b.gamma:.4g})"
        if not math.isfinite(est.se):
            return (f"no verdict: the best is {who} at {est.mean:.4f}, but its trials (one seed each, from an "
                    f"effnas that did not record the validation size) carry no measure of their noise, so it cannot "
                    f"be told from the {len(self.ranked) - 1} other candidate(s); rerun with search.seeds >= 2")
        if len(self.ranked) == 1:
            return f"one candidate finished: {who}, accuracy {est.describe()}; nothing to compare it with"
        if not self.is_tie:
            runner = self.ranked[1]
            return (f"winner: {who}, accuracy {est.describe()}; it leads the runner-up (trial {runner.number}, "
                    f"{runner.acc_mean:.4f}) by more than the noise")
        others = ", ".join(str(r.number) for r in self.tied[1:])
        return (f"no winner: {len(self.tied)} candidates are tied within the noise. The best is {who}, accuracy "
                f"{est.describe()}; {'trials' if len(self.tied) > 2 else 'trial'} {others} cannot be told apart from "
                f"it. The family is built from the best as a tie; more seeds (search.seeds, or search.racing) or a "
                f"larger validation split can separate them")


def verdict(study: optuna.Study) -> Verdict | None:
    """The ranked candidates and the tie set of the best; None before any candidate finished."""
    ranked = ranked_winners(study)
    if not ranked:
        return None
    estimates = [r.estimate() for r in ranked]
    tied = tied_with_best([e for e in estimates if e is not None])
    return Verdict(ranked, [ranked[i] for i in sorted(tied)])


def best_coefficients(study: optuna.Study) -> tuple[float, float, float]:
    """The winner's exact (alpha, beta, gamma), unrounded: what every family of the study is built from."""
    ranked = ranked_winners(study)
    if not ranked:
        raise NasError(f"study '{study.study_name}' has no finished feasible trial yet: run or resume it first")
    return ranked[0].coefficients


def stored_winner(name_or_path: str, storage: str | None) -> tuple[str, str, tuple[float, float, float], float]:
    """(study name, its base network, the winner's exact coefficients, the cost step c) of a stored study."""
    from nas.search.storage import load_stored_study

    study, _ = load_stored_study(name_or_path, storage)
    config = study.user_attrs.get("config", {})
    return (study.study_name, config.get("space", "efficientnet_b0"), best_coefficients(study),
            config.get("search", {}).get("target", 2.0))


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

def stored_members(attrs: dict) -> list[dict]:
    return [v for k, v in attrs.items() if k.startswith(MEMBER)]


def frontier_table(study: optuna.Study) -> pd.DataFrame:
    """One row per (family, phi) member: its coefficients, size, cost (FLOPs, activations, latency), and
    the accuracy of its network over every finished seed (mean, standard deviation, min, max), with the
    accuracy-vs-FLOPs Pareto front marked. Members without a finished run have NaN accuracy and 0 seeds."""
    accuracies: dict[str, list[float]] = {}
    images = None
    for r in records(study, FrontierRunRecord, states=(TrialState.COMPLETE,)):
        if r.frontier_run and r.seed_accuracies:     # one seed per run, or a fused run's seeds
            accuracies.setdefault(r.frontier_run[0], []).extend(r.seed_accuracies)
            images = images or r.val_images
    rows = []
    for m in sorted(stored_members(study.user_attrs), key=lambda m: (m["order"], m["phi"])):
        accs = accuracies.get(m["network"], [])
        e = estimate(accs, images) if accs else None
        rows.append({
            "family": m["family"], "label": m["label"], "kind": m["kind"], "phi": m["phi"],
            "alpha": m["alpha"], "beta": m["beta"], "gamma": m["gamma"],
            "width": m["width"], "depth": m["depth"], "resolution": m["resolution"], "params": m["params"],
            "mflops": m["flops"] / 1e6, "activations": m.get("activations", math.nan),   # none before they were counted
            "flops_vs_reference": m["flops_vs_reference"], "matched": m["matched"],
            "full_size_resolution": m["full_size_resolution"], "latency_ms": m.get("latency_ms", math.nan),
            "acc_mean": statistics.fmean(accs) if accs else math.nan,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else math.nan),
            "acc_low": e.low if e else math.nan, "acc_high": e.high if e else math.nan,
            "acc_min": min(accs, default=math.nan), "acc_max": max(accs, default=math.nan),
            "seeds": len(accs), "network": m["network"], "estimate": e,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # At each phi, the members that cannot be told from the best one there (nas.statistics).
    tied = set()
    for _, group in df[df["estimate"].notna()].groupby("phi"):
        tied |= {group.index[i] for i in tied_with_best(list(group["estimate"]))}
    df["tied_best_at_phi"] = [i in tied for i in df.index]
    df = df.drop(columns="estimate")
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
