"""Racing: spend seeds only where the ranking is still undecided (successive elimination, as in F-Race).

Seeds are the dominant cost of a trustworthy answer: k seeds per candidate cost k times the training.
Most candidates are clearly worse after two seeds, and more seeds on them change nothing; the seeds
are needed only on the few still tied with the best. So the race trains every candidate a few seeds,
then repeats:

- estimate each racing candidate (nas.statistics.estimate) and keep those tied with the best
  (nas.statistics.tied_with_best); the others are out for good;
- one left: it is the winner, separated beyond the noise;
- every one left already has max_seeds seeds: the budget is spent and they are reported as a tie;
- otherwise each one left below max_seeds trains min(seeds_per_round, max_seeds - seeds it has) more.

The test is repeated every round on the same candidates, which makes an early false elimination more
likely than 5 %; tests/test_racing.py measures how often the true best survives on simulated studies.

Budgets race too (successive halving, `successive_halving`): every candidate first trains a fraction of
the study's budget (rungs at eta^-2, eta^-1 and 1 of it for three rungs); at each rung the best 1/eta go
on, and with them every candidate the test cannot separate from the best, so a rung never drops a
candidate the evidence cannot rank below it. Most of a grid is clearly worse after a ninth of the
training, and a ninth of the training costs a ninth: a grid trains about a third of the images a flat
grid does. A rung either trains anew on a compressed schedule (`restart`: every rung a complete training)
or continues the lower rung's training from its kept state (`continue`: one schedule, the study's, cut
at each rung; a candidate that reaches the last rung costs what it costs in a flat grid and ends with the
flat grid's result). Seed racing then runs on the candidates at the last rung. Both are replays of stored
runs, so they resume from any interruption, on any worker.

References: M. Birattari, T. Stuetzle, L. Paquete, K. Varrentrapp, "A racing algorithm for configuring
metaheuristics", GECCO 2002 (F-Race); M. Lopez-Ibanez et al., "The irace package: Iterated racing for
automatic algorithm configuration", Operations Research Perspectives 3, 2016; K. Jamieson, A. Talwalkar,
"Non-stochastic best arm identification and hyperparameter optimization", AISTATS 2016 (successive
halving); L. Li et al., "Hyperband", JMLR 18, 2018.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from nas.config import rung_budgets
from nas.statistics import estimate, pack_correct, tied_with_best

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")


@dataclass(frozen=True)
class RaceDecision(Generic[K]):
    survivors: tuple[K, ...]        # still racing, best first
    more_seeds: dict[K, int]        # seeds to train next round; empty once finished
    finished: bool
    reason: str


Ties = Callable[[Mapping[K, Sequence[S]]], Sequence[K]]
"""Which candidates the noise cannot separate from the best, best first, given each one's seed runs (the
paired test on per-image results in a study: nas.search.results.tie_set; `unpaired_ties` in simulations)."""


def unpaired_ties(images: int | None) -> Ties:
    """The unpaired test on seed accuracies (nas.statistics.tied_with_best), `images` validation images each."""
    def tied(results: Mapping[K, Sequence[float]]) -> list[K]:
        keys = list(results)
        return [keys[i] for i in tied_with_best([estimate(list(results[k]), images) for k in keys])]
    return tied


def decide(results: Mapping[K, Sequence[S]], tied: Ties, seeds_per_round: int, max_seeds: int) -> RaceDecision[K]:
    """One round of the race (module docstring). results holds the racing candidates only, each with at
    least one seed run."""
    if not results:
        raise ValueError("no candidate to race")
    if seeds_per_round < 1 or max_seeds < 1:
        raise ValueError("seeds_per_round and max_seeds must be 1 or more")
    survivors = tuple(tied(results))
    if len(survivors) == 1:
        return RaceDecision(survivors, {}, True, f"separated: {survivors[0]} leads every other beyond the noise")
    more = {k: min(seeds_per_round, max_seeds - len(results[k])) for k in survivors if len(results[k]) < max_seeds}
    if not more:
        return RaceDecision(survivors, {}, True, f"seed budget spent: {len(survivors)} candidates still tied")
    return RaceDecision(survivors, more, False,
                        f"undecided: {len(survivors)} candidates tied with {survivors[0]}, "
                        f"{sum(more.values())} more seed runs")


def replay(results: Mapping[K, Sequence[S]], tied: Ties, first_seeds: int, seeds_per_round: int,
           max_seeds: int) -> tuple[RaceDecision[K], dict[K, int]]:
    """The race so far, replayed round by round on every seed run stored (each candidate's runs in seed
    order): the decision reached, and how many seeds each candidate has had in the race. While the
    decision is not finished, its `more_seeds` are the runs still to train, from seed `have[k]` on.
    A replay needs no state of its own, so a race resumes after any interruption, from any worker."""
    have = {k: first_seeds for k in results}
    if not results:
        return RaceDecision((), {}, True, "no candidate trained"), have
    racing = dict(results)
    while True:
        decision = decide({k: racing[k][:have[k]] for k in racing}, tied, seeds_per_round, max_seeds)
        if decision.finished or any(len(results[k]) < have[k] + n for k, n in decision.more_seeds.items()):
            return decision, have
        have.update({k: have[k] + n for k, n in decision.more_seeds.items()})
        racing = {k: results[k] for k in decision.survivors}


@dataclass(frozen=True)
class HalvingDecision(Generic[K]):
    rung: int                       # the rung the field trains now, or (finished) the last one
    field: tuple[K, ...]            # the candidates at that rung, best first where ranked
    to_train: tuple[K, ...]         # the field's candidates still without a result at that rung
    finished: bool                  # every rung trained: the field is the last rung's
    reason: str                     # what the last promotion did, in words


def successive_halving(rungs: Sequence[Mapping[K, Sequence[S]]], eta: int, mean: Callable[[Sequence[S]], float],
                       tied: Ties, dropped: Collection[K] = ()) -> HalvingDecision[K]:
    """Successive halving replayed on the stored results: `rungs[r]` holds every finished result at rung r
    (a candidate's key -> its seed runs there, all candidates at rung 0). From rung 0 up, the field of each
    rung is promoted: the best ceil(n / eta) by `mean`, plus those `tied` keeps (the candidates the noise
    cannot separate from the best). The replay stops at the first rung whose
    field lacks results (they are the runs to train next) or at the last rung. A candidate in `dropped` whose
    run at a rung failed for good (it can never be compared there) leaves the race at that rung."""
    field = tuple(sorted(rungs[0], key=lambda k: -mean(rungs[0][k]))) if rungs else ()
    reason = f"rung 1 of {len(rungs)}: every candidate trains"
    for r, results in enumerate(rungs):
        field = tuple(k for k in field if k in results or k not in dropped)
        missing = tuple(k for k in field if k not in results)
        if missing:
            return HalvingDecision(r, field, missing, False, reason)
        ranked = tuple(sorted(field, key=lambda k: -mean(results[k])))
        if r == len(rungs) - 1:
            return HalvingDecision(r, ranked, (), True, reason)
        top = ranked[:math.ceil(len(ranked) / eta)]
        kept = set(tied({k: results[k] for k in ranked}))
        field = tuple(k for k in ranked if k in top or k in kept)
        reason = (f"rung {r + 1} of {len(rungs)}: {len(field)} of {len(ranked)} candidates go on (the best "
                  f"{len(top)}" + (f" and {len(field) - len(top)} tied with the best)" if len(field) > len(top)
                                   else ")"))
    return HalvingDecision(0, (), (), True, "no candidate trained")


@dataclass(frozen=True)
class SimulatedRace:
    survivors: tuple[int, ...]      # indices into true_means, best first
    runs: int                       # training runs used
    found_best: bool                # the true best is the winner or in the tie


def simulated_run(true_mean: float, noise_sd: float, images: int, rng: random.Random) -> float:
    """One seed's validation accuracy: the seed moves the network's accuracy by N(0, noise_sd), and the
    images score it binomially (drawn from the normal approximation, rounded to whole images: the
    standard library has no binomial sampler before Python 3.12). Every run draws fresh images, so the
    spread over seeds holds the image noise too, and estimate(), which adds the image term on top, is
    conservative here."""
    p = min(1.0, max(0.0, true_mean + rng.gauss(0, noise_sd)))
    correct = round(rng.gauss(images * p, (images * p * (1 - p)) ** 0.5))
    return min(images, max(0, correct)) / images


def simulate(true_means: Sequence[float], noise_sd: float, images: int, first_seeds: int,
             seeds_per_round: int, max_seeds: int, rng: random.Random) -> SimulatedRace:
    """A whole race on simulated training runs (simulated_run); the true best is the highest true mean."""
    results = {i: [simulated_run(m, noise_sd, images, rng) for _ in range(first_seeds)]
               for i, m in enumerate(true_means)}
    runs = first_seeds * len(true_means)
    tied = unpaired_ties(images)
    while True:
        decision = decide(dict(sorted(results.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))), tied,
                          seeds_per_round, max_seeds)
        if decision.finished:
            best = max(range(len(true_means)), key=lambda i: true_means[i])
            return SimulatedRace(decision.survivors, runs, best in decision.survivors)
        results = {k: results[k] for k in decision.survivors}
        for k, n in decision.more_seeds.items():
            results[k] += [simulated_run(true_means[k], noise_sd, images, rng) for _ in range(n)]
            runs += n


def single_seed_pick(true_means: Sequence[float], noise_sd: float, images: int, rng: random.Random) -> int:
    """The plain selection racing replaces: train every candidate once and take the best accuracy (a tie
    broken at random). Returns the index picked."""
    accuracies = [simulated_run(m, noise_sd, images, rng) for m in true_means]
    return max(range(len(accuracies)), key=lambda i: (accuracies[i], rng.random()))


@dataclass(frozen=True)
class SimulatedHalving:
    flat_best: int                  # the best of the flat grid (every candidate at the full budget)
    survivors: tuple[int, ...]      # the candidates halving trained at the full budget
    tied: tuple[int, ...]           # halving's answer: the last rung's tie set, best first
    fields: tuple[int, ...]         # how many candidates trained at each rung
    budgets: tuple[float, ...]      # each rung's share of the full budget
    seeds: int
    flat_budget: float              # the flat grid's: candidates x seeds

    @property
    def budget(self) -> float:
        """Training spent, in candidate-runs at the full budget, where every rung trains anew (rung_training:
        restart)."""
        return self.seeds * sum(n * b for n, b in zip(self.fields, self.budgets))

    @property
    def continued_budget(self) -> float:
        """The same where each rung continues the lower rung's training (rung_training: continue): a rung
        costs only the share it adds."""
        return self.seeds * sum(n * (b - below) for n, b, below in zip(self.fields, self.budgets,
                                                                      (0.0, *self.budgets[:-1])))

    @property
    def kept_verdict(self) -> bool:
        """Halving's answer holds the flat grid's best. A candidate's full-budget runs are the same either way
        (training is deterministic per seed), so this is exactly whether the flat best survived every rung:
        then it is the best of the last rung, and its tie set or its win is the flat grid's."""
        return self.flat_best in self.tied


def simulate_halving(true_means: Sequence[float], rung_noise: Sequence[float], seed_sd: float, affinity_sd: float,
                     images: int, seeds: int, eta: int, tied: Ties, rng: np.random.Generator) -> SimulatedHalving:
    """A grid raced over len(rung_noise) budget rungs on runs simulated image by image, so that `tied` can be
    the study's own paired test (nas.search.results.tie_set). An item-response model, in logits: image i has
    a difficulty b_i ~ N(0, 1.5) shared by every network (easy images are right for all: what pairing sees)
    and candidate c an affinity g_ci ~ N(0, affinity_sd) for it, the same at every rung and seed (an
    architecture gets the same images right however long it trains); a run of c gets image i right with
    probability sigmoid(theta - b_i + g_ci), theta being c's ability (solved so that its expected accuracy is
    true_means[c]) moved by its seed's N(0, seed_sd) and, at rung r, by c's own N(0, rung_noise[r]) (a
    short training ranks candidates differently from a long one; the last rung's is 0). Runs are (accuracy,
    packed right/wrong) pairs, as a study stores them."""
    difficulty = rng.normal(0, 1.5, images)

    def expected(theta: float) -> float:
        return float(np.mean(1 / (1 + np.exp(difficulty - theta))))

    def ability(p: float) -> float:
        lo, hi = -10.0, 10.0
        for _ in range(50):
            lo, hi = ((lo + hi) / 2, hi) if expected((lo + hi) / 2) < p else (lo, (lo + hi) / 2)
        return (lo + hi) / 2

    n = len(true_means)
    thetas = [ability(m) for m in true_means]
    affinity = rng.normal(0, affinity_sd, (n, images))

    def run(c: int, theta: float) -> tuple[float, str]:
        right = rng.random(images) < 1 / (1 + np.exp(difficulty - affinity[c] - theta - rng.normal(0, seed_sd)))
        return float(right.mean()), pack_correct(right)

    rungs = []
    for sd in rung_noise:
        offsets = rng.normal(0, sd, n) if sd else np.zeros(n)
        rungs.append({i: [run(i, t + offsets[i]) for _ in range(seeds)] for i, t in enumerate(thetas)})

    def mean(runs: Sequence[tuple[float, str]]) -> float:
        return statistics.fmean(a for a, _ in runs)

    def ranked(keys: Sequence[int]) -> dict[int, list[tuple[float, str]]]:
        return dict(sorted(((k, rungs[-1][k]) for k in keys), key=lambda kv: -mean(kv[1])))

    trained = [tuple(range(n))]
    for r in range(1, len(rungs)):      # each rung's field, as the replay promotes it
        decision = successive_halving([rungs[q] if q < r else {} for q in range(len(rungs))], eta, mean, tied)
        trained.append(decision.field)
    return SimulatedHalving(tied(ranked(range(n)))[0], trained[-1], tuple(tied(ranked(trained[-1]))),
                            tuple(len(field) for field in trained), tuple(rung_budgets(len(rungs), eta)), seeds,
                            n * seeds)
