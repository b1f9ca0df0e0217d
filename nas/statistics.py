"""What a proxy accuracy is worth: an interval over seeds and validation images, and whether the best
candidate is separated from the others or tied with them.

A candidate's accuracy is uncertain twice: another seed trains another network (spread over seeds), and
another validation set of the same size would score it differently (binomial: p(1 - p) / n for n
images). Seeds share one validation set, so the image part does not shrink with more seeds:

    se^2 = p (1 - p) / n  +  s^2 / k        (p the mean accuracy, n images, s the spread over k seeds)

The best candidate is a winner only when it leads every other by more than 1.96 standard errors of the
difference; every candidate closer than that is tied with it. Candidates are scored on the same images,
so treating their errors as independent overstates the noise of a difference: a tie here can be a
narrow win on paired data, never the other way round. With one seed the spread over seeds is unknown
and only the image part counts, so a single-seed interval is a lower bound on the noise.

Rank stability asks whether the seeds agree on the whole order, not just on the top: each candidate's
seeds are split into two disjoint halves (even and odd runs), the candidates are ranked by each half's
mean, and Kendall's tau-b compares the two rankings. 1 means both halves order the candidates the same
way, 0 that one half says nothing about the other (the order is noise), -1 that they are reversed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Z = 1.96          # two-sided 95 %


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    seeds: int
    images: int | None

    @property
    def low(self) -> float:
        return max(0.0, self.mean - Z * self.se) if math.isfinite(self.se) else math.nan

    @property
    def high(self) -> float:
        return min(1.0, self.mean + Z * self.se) if math.isfinite(self.se) else math.nan

    def describe(self) -> str:
        over = [f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"]
        if self.images:
            over.append(f"{self.images} validation images")
        if not math.isfinite(self.se):
            return f"{self.mean:.4f} (noise unknown: {over[0]}, validation size not recorded)"
        return f"{self.mean:.4f} (95 % interval {self.low:.4f}-{self.high:.4f} over {' and '.join(over)})"


def estimate(seed_accuracies: list[float], images: int | None) -> Estimate:
    """The mean accuracy of one candidate and its standard error (module docstring). The error is NaN when
    nothing tells the noise: one seed and no count of validation images (trials from before effnas
    recorded it)."""
    k = len(seed_accuracies)
    if k == 0:
        raise ValueError("no accuracy to estimate from")
    p = statistics.fmean(seed_accuracies)
    if k == 1 and not images:
        return Estimate(mean=p, se=math.nan, seeds=k, images=images)
    var = p * (1 - p) / images if images else 0.0
    if k > 1:
        var += statistics.variance(seed_accuracies) / k
    return Estimate(mean=p, se=math.sqrt(var), seeds=k, images=images)


def tied_with_best(estimates: list[Estimate]) -> list[int]:
    """Indices of the candidates that cannot be told apart from the best (the best first, then by mean).
    A candidate whose noise is unknown (NaN) counts as tied: nothing shows it is worse."""
    if not estimates:
        return []
    order = sorted(range(len(estimates)), key=lambda i: -estimates[i].mean)
    best = estimates[order[0]]
    return [i for i in order
            if not best.mean - estimates[i].mean > Z * math.hypot(best.se, estimates[i].se)]


def rank_stability(per_candidate_seed_accuracies: Sequence[Sequence[float]]) -> float | None:
    """Kendall's tau-b between the rankings by the even and the odd seed runs (module docstring), over the
    candidates with 2 or more seeds. None when there is nothing to compare: fewer than 2 such candidates,
    or one half that ties them all (tau-b is undefined without an order)."""
    halves = [(statistics.fmean(seeds[0::2]), statistics.fmean(seeds[1::2]))
              for seeds in per_candidate_seed_accuracies if len(seeds) >= 2]
    pairs = concordance = tied_first = tied_second = 0
    for i, (a1, a2) in enumerate(halves):
        for b1, b2 in halves[i + 1:]:
            first, second = _sign(a1 - b1), _sign(a2 - b2)
            pairs += 1
            concordance += first * second
            tied_first += first == 0
            tied_second += second == 0
    denominator = math.sqrt((pairs - tied_first) * (pairs - tied_second))
    return concordance / denominator if denominator else None


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def describe_stability(tau: float | None, candidates: int) -> str:
    """One line for screens; candidates is how many took part (those with 2 or more seeds)."""
    if tau is None:
        return "rank stability: unknown (needs 2 or more seeds per candidate, and accuracies that differ)"
    return (f"rank stability: Kendall tau {tau:.2f} between rankings from disjoint halves of the seeds "
            f"({candidates} candidates)")
