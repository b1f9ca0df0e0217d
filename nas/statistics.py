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
"""

from __future__ import annotations

import math
import statistics
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
