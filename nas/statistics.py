"""What a proxy accuracy is worth: an interval over seeds and validation images, and whether the best
candidate is separated from the others or tied with them.

A candidate's accuracy is uncertain twice: another seed trains another network (spread over seeds), and
another validation set of the same size would score it differently (binomial: p(1 - p) / n for n
images). Seeds share one validation set, so the image part does not shrink with more seeds:

    se^2 = p (1 - p) / n  +  s^2 / k        (p the mean accuracy, n images, s the spread over k seeds)

This interval is a candidate's own. Comparing two candidates with it (`tied_with_best`: a winner only
beyond 1.96 standard errors of the difference) treats their errors as independent, which overstates the
noise of a difference; it stays for studies stored without per-image data. With one seed the spread over
seeds is unknown and only the image part counts, so a single-seed interval is a lower bound on the noise.

The paired verdict. Every candidate is scored on the same validation images and each run keeps which of
them it got right (`pack_correct`), so two networks that both miss the same 150 hard images and differ on
35 are compared on those 35, not on the noise of 2,000 images. The difference to the best is paired:
- One seed each: McNemar's exact test on the discordant images; separated when p < 0.05 and a is ahead.
  The bootstrap is anti-conservative when two networks disagree on a handful of images: with 5 of them,
  all in a's favour, it puts P(diff <= 0) near e^-5 = 0.7 % (no discordant image drawn), while a split
  this lopsided under no difference has probability 2/32 = 6 %. One seed has no seed noise to add.
- 2 or more seeds on either side: a paired bootstrap over images (the same ones for both) and each
  candidate's seeds together; separated when its 95 % interval lies above 0, i.e. fewer than 2.5 % of
  the resampled differences are <= 0. McNemar knows nothing of seeds: one lucky seed is no lead.
The interval of the difference shown is the bootstrap's either way. With one seed each the verdict is
about two trained networks: how much another seed would move them is unseen, as for the interval above.
  Dietterich, Neural Computation 10(7) 1998: McNemar's test for two classifiers on one test set.
  Bouthillier et al., MLSys 2021: randomise seeds and data together when comparing learning pipelines.

Rank stability asks whether the seeds agree on the whole order, not just on the top: each candidate's
seeds are split into two disjoint halves (even and odd runs), the candidates are ranked by each half's
mean, and Kendall's tau-b compares the two rankings. 1 means both halves order the candidates the same
way, 0 that one half says nothing about the other (the order is noise), -1 that they are reversed. Rank
fidelity (`tau_b_interval`) compares two budgets' rankings the same way, with a bootstrap interval.
"""

from __future__ import annotations

import base64
import binascii
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Z = 1.96          # two-sided 95 %
_CHUNK = 256      # resamples drawn at once: a few (chunk, images) arrays in memory


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


# ---- per-image correctness, packed for a JSON attribute ------------------------------------------------

def pack_correct(correct: Sequence[bool] | NDArray[np.bool_]) -> str:
    """One run's right/wrong per validation image as base64 ASCII of its bits, little bit order: image i
    is bit i % 8 of byte i // 8 (`(byte[i >> 3] >> (i & 7)) & 1` in any language); the last byte's
    unused bits are 0. 2,000 images take 336 characters."""
    bits = np.asarray(correct, dtype=bool)
    if bits.ndim != 1:
        raise ValueError(f"expected one run's vector of right/wrong per image, got shape {bits.shape}")
    return base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode("ascii")


def unpack_correct(text: str, n: int) -> NDArray[np.bool_]:
    """The n booleans that `pack_correct` packed. A text of another length than n images take, or with
    bits set beyond the n-th, was packed from another validation set: refused, never cut to fit."""
    if n < 0:
        raise ValueError(f"n must be 0 or more, got {n}")
    size = (n + 7) // 8
    if len(text) != 4 * ((size + 2) // 3):
        raise ValueError(f"a packed vector of {n} images is {4 * ((size + 2) // 3)} characters, got {len(text)}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"not a packed vector of right/wrong per image: {e}") from None
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if len(raw) != size or bits[n:].any():
        raise ValueError(f"the packed vector does not hold exactly {n} images")
    return bits[:n].astype(bool)


# ---- paired verdicts --------------------------------------------------------------------------------

def mcnemar_p(a: ArrayLike, b: ArrayLike) -> float:
    """McNemar's exact two-sided p for two runs' right/wrong on the same images: under no difference the
    discordant images split as Binomial(b01 + b10, 1/2); p = min(1, 2 P(X <= min(b01, b10))), 1 when no
    image is discordant. Exact integers, so thousands of discordant images are no problem."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"expected two runs on the same images, got shapes {x.shape} and {y.shape}")
    b10, b01 = int(np.count_nonzero(x & ~y)), int(np.count_nonzero(~x & y))   # a alone right, b alone right
    m, k = b01 + b10, min(b01, b10)
    term = total = 1                              # C(m, 0), then C(m, i) for i = 1..k
    for i in range(k):
        term = term * (m - i) // (i + 1)
        total += term
    return min(1.0, 2 * total / (1 << m))


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of a minus accuracy of b on the same images. low-high: the bootstrap's 95 % interval;
    p_not_better: the share of resampled differences <= 0; test: "mcnemar" (one seed each) or
    "bootstrap", p_value the deciding test's (the bootstrap's is 2 p_not_better, capped at 1);
    separated: a leads b beyond the noise (module docstring)."""
    mean: float
    low: float
    high: float
    p_not_better: float
    test: str
    p_value: float
    separated: bool


def _runs(matrix: ArrayLike) -> NDArray[np.int32]:
    m = np.atleast_2d(np.asarray(matrix, dtype=bool))
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"expected a (seeds, images) matrix with at least one of each, got shape {m.shape}")
    return m.astype(np.int32)


def _interval(sorted_values: NDArray[np.float64]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles as order statistics (the smallest value with at least 2.5 % of the
    values at or below it), so that low > 0 exactly when fewer than 2.5 % of the values are <= 0."""
    r = len(sorted_values)
    return float(sorted_values[-(-r // 40) - 1]), float(sorted_values[-(-39 * r // 40) - 1])


def _drawn(rng: np.random.Generator, chunk: int, runs: NDArray[np.int32]) -> NDArray[np.int32]:
    """Per resample and image, how many of the seeds drawn with replacement got it right. Integer einsum,
    not BLAS: exact, and BLAS threads stall on a busy 2-core machine (0.3 s instead of 0.05)."""
    seeds = runs.shape[0]
    counts = (rng.integers(0, seeds, size=(chunk, seeds))[:, :, None] == np.arange(seeds)).sum(axis=1, dtype=np.int32)
    return np.einsum("rs,si->ri", counts, runs)


def paired_difference(a: ArrayLike, b: ArrayLike, resamples: int = 2000, seed: int = 0) -> PairedDifference:
    """The difference of a (seeds_a, images) and a (seeds_b, images) right/wrong matrix on the same images,
    with its paired bootstrap: each resample draws the images with replacement (the same ones for both)
    and each candidate's seeds with replacement; decided as the module docstring says. A 1-D input is
    one seed. Sums are kept in whole numbers, so a resampled difference of exactly 0 is 0."""
    x, y = _runs(a), _runs(b)
    (ka, n), kb = x.shape, y.shape[0]
    if y.shape[1] != n:
        raise ValueError(f"the candidates were scored on different images: {n} and {y.shape[1]}")
    if resamples < 1:
        raise ValueError(f"resamples must be 1 or more, got {resamples}")
    rng, sums = np.random.default_rng(seed), np.empty(resamples, dtype=np.int64)
    for start in range(0, resamples, _CHUNK):
        chunk = min(_CHUNK, resamples - start)
        per_image = kb * _drawn(rng, chunk, x) - ka * _drawn(rng, chunk, y)     # ka kb (mean a - mean b)
        images = rng.integers(0, n, size=(chunk, n))
        sums[start:start + chunk] = np.take_along_axis(per_image, images, axis=1).sum(axis=1, dtype=np.int64)
    sums.sort()
    low, high = _interval(sums / (ka * kb * n))
    not_better, mean = int(np.count_nonzero(sums <= 0)), (int(x.sum()) * kb - int(y.sum()) * ka) / (ka * kb * n)
    p_not_better = not_better / resamples
    if ka == 1 and kb == 1:
        p = mcnemar_p(x[0].astype(bool), y[0].astype(bool))
        return PairedDifference(mean, low, high, p_not_better, "mcnemar", p, p < 0.05 and mean > 0)
    return PairedDifference(mean, low, high, p_not_better, "bootstrap", min(1.0, 2 * p_not_better),
                            40 * not_better < resamples)


_TEST_WORDS = {"mcnemar": "McNemar's exact test (one seed each)",
               "bootstrap": "a paired bootstrap over images and seeds"}


@dataclass(frozen=True)
class PairedVerdict:
    """best: the index of the highest mean; tied: those the paired test cannot separate from it (best
    first, then by mean); differences[i]: best minus candidate i (None for the best)."""
    best: int
    tied: list[int]
    differences: list[PairedDifference | None]

    def test_words(self) -> str:
        """Which test decided, in the words every screen uses."""
        used = [w for t, w in _TEST_WORDS.items() if any(d is not None and d.test == t for d in self.differences)]
        return " and ".join(used) if used else "no test (one candidate)"


def paired_tied_with_best(correct: Sequence[ArrayLike], resamples: int = 2000, seed: int = 0) -> PairedVerdict:
    """The paired tie set: correct[i] is candidate i's (seeds, images) right/wrong matrix, all on the same
    images. The best has the highest mean accuracy (a tie in mean goes to the lower index, so callers
    pre-sort by their own rules); every other candidate is tied with it unless `paired_difference(best,
    it)` separates them."""
    runs = [_runs(c) for c in correct]
    if not runs:
        raise ValueError("no candidate to judge")
    means = [int(r.sum()) / r.size for r in runs]
    order = sorted(range(len(runs)), key=lambda i: (-means[i], i))
    best = order[0]
    differences: list[PairedDifference | None] = [
        None if i == best else paired_difference(runs[best], runs[i], resamples, seed) for i in range(len(runs))]
    tied = [i for i in order if (d := differences[i]) is None or not d.separated]
    return PairedVerdict(best=best, tied=tied, differences=differences)


# ---- rank stability and rank fidelity ------------------------------------------------------------------

def _tau_b_rows(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Kendall's tau-b of each row pair of two (rows, candidates) arrays; NaN where undefined (a ranking
    that ties every pair). Each pair is counted twice (i, j and j, i), which cancels in the ratio."""
    sx, sy = np.sign(x[:, :, None] - x[:, None, :]), np.sign(y[:, :, None] - y[:, None, :])
    untied_x, untied_y = (np.count_nonzero(s, axis=(1, 2)) for s in (sx, sy))   # the diagonal is 0 in both
    denominator = np.sqrt(untied_x * untied_y)
    return np.where(denominator > 0, (sx * sy).sum(axis=(1, 2)) / np.maximum(denominator, 1), np.nan)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b between two scorings of the same candidates: (concordant - discordant pairs) /
    sqrt((pairs untied in x) (pairs untied in y)). None when undefined: fewer than 2 candidates, or one
    scoring that ties them all."""
    if len(x) != len(y):
        raise ValueError(f"the two rankings have {len(x)} and {len(y)} candidates")
    if len(x) < 2:
        return None
    tau = float(_tau_b_rows(np.asarray([x], dtype=np.float64), np.asarray([y], dtype=np.float64))[0])
    return None if math.isnan(tau) else tau


@dataclass(frozen=True)
class TauInterval:
    """tau-b between two budgets' rankings and its 95 % bootstrap interval over candidates; None where
    undefined. The interval says how much tau depends on which candidates happened to be compared, not
    on the seeds each one got."""
    tau: float | None
    low: float | None
    high: float | None
    candidates: int


def tau_b_interval(x_runs: Sequence[Sequence[float]], y_runs: Sequence[Sequence[float]],
                   resamples: int = 2000, seed: int = 0) -> TauInterval:
    """Rank fidelity: x_runs[i] and y_runs[i] are candidate i's per-seed accuracies under two budgets; tau
    is taken on the per-candidate means, the interval by resampling candidates with replacement
    (resamples that tie a whole ranking are skipped)."""
    if len(x_runs) != len(y_runs):
        raise ValueError(f"the two budgets have {len(x_runs)} and {len(y_runs)} candidates")
    if any(not runs for runs in (*x_runs, *y_runs)):
        raise ValueError("every candidate needs at least one accuracy under each budget")
    x, y = (np.array([statistics.fmean(r) for r in runs]) for runs in (x_runs, y_runs))
    m = len(x)
    tau = kendall_tau_b(list(x), list(y))
    if tau is None:
        return TauInterval(None, None, None, m)
    rng, chunk = np.random.default_rng(seed), max(1, 2_000_000 // (m * m))
    taus = np.concatenate([_tau_b_rows(x[drawn], y[drawn]) for drawn in (
        rng.integers(0, m, size=(min(chunk, resamples - start), m)) for start in range(0, resamples, chunk))])
    defined = np.sort(taus[~np.isnan(taus)])
    return TauInterval(tau, *_interval(defined), m) if len(defined) else TauInterval(tau, None, None, m)


def rank_stability(per_candidate_seed_accuracies: Sequence[Sequence[float]]) -> float | None:
    """Kendall's tau-b between the rankings by the even and the odd seed runs (module docstring), over the
    candidates with 2 or more seeds. None when there is nothing to compare: fewer than 2 such candidates,
    or one half that ties them all (tau-b is undefined without an order)."""
    halves = [(statistics.fmean(seeds[0::2]), statistics.fmean(seeds[1::2]))
              for seeds in per_candidate_seed_accuracies if len(seeds) >= 2]
    return kendall_tau_b([h[0] for h in halves], [h[1] for h in halves])


def describe_stability(tau: float | None, candidates: int) -> str:
    """One line for screens; candidates is how many took part (those with 2 or more seeds)."""
    if tau is None:
        return "rank stability: unknown (needs 2 or more seeds per candidate, and accuracies that differ)"
    return (f"rank stability: Kendall tau {tau:.2f} between rankings from disjoint halves of the seeds "
            f"({candidates} candidates)")
