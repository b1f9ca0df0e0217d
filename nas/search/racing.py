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

References: M. Birattari, T. Stuetzle, L. Paquete, K. Varrentrapp, "A racing algorithm for configuring
metaheuristics", GECCO 2002 (F-Race); M. Lopez-Ibanez et al., "The irace package: Iterated racing for
automatic algorithm configuration", Operations Research Perspectives 3, 2016.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from nas.statistics import estimate, tied_with_best

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class RaceDecision(Generic[K]):
    survivors: tuple[K, ...]        # still racing, best first
    more_seeds: dict[K, int]        # seeds to train next round; empty once finished
    finished: bool
    reason: str


def decide(results: Mapping[K, Sequence[float]], images: int | None, seeds_per_round: int,
           max_seeds: int) -> RaceDecision[K]:
    """One round of the race (module docstring). results holds the racing candidates only, each with at
    least one seed accuracy; images is the validation split's size (None when unknown)."""
    if not results:
        raise ValueError("no candidate to race")
    if seeds_per_round < 1 or max_seeds < 1:
        raise ValueError("seeds_per_round and max_seeds must be 1 or more")
    keys = list(results)
    tied = tuple(keys[i] for i in tied_with_best([estimate(list(results[k]), images) for k in keys]))
    if len(tied) == 1:
        return RaceDecision(tied, {}, True, f"separated: {tied[0]} leads every other beyond the noise")
    more = {k: min(seeds_per_round, max_seeds - len(results[k])) for k in tied if len(results[k]) < max_seeds}
    if not more:
        return RaceDecision(tied, {}, True, f"seed budget spent: {len(tied)} candidates still tied")
    return RaceDecision(tied, more, False,
                        f"undecided: {len(tied)} candidates tied with {tied[0]}, "
                        f"{sum(more.values())} more seed runs")


def replay(results: Mapping[K, Sequence[float]], images: int | None, first_seeds: int, seeds_per_round: int,
           max_seeds: int) -> tuple[RaceDecision[K], dict[K, int]]:
    """The race so far, replayed round by round on every seed run stored (each candidate's accuracies in
    seed order): the decision reached, and how many seeds each candidate has had in the race. While the
    decision is not finished, its `more_seeds` are the runs still to train, from seed `have[k]` on.
    A replay needs no state of its own, so a race resumes after any interruption, from any worker."""
    have = {k: first_seeds for k in results}
    if not results:
        return RaceDecision((), {}, True, "no candidate trained"), have
    racing = dict(results)
    while True:
        decision = decide({k: racing[k][:have[k]] for k in racing}, images, seeds_per_round, max_seeds)
        if decision.finished or any(len(results[k]) < have[k] + n for k, n in decision.more_seeds.items()):
            return decision, have
        have.update({k: have[k] + n for k, n in decision.more_seeds.items()})
        racing = {k: results[k] for k in decision.survivors}


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
    while True:
        decision = decide(results, images, seeds_per_round, max_seeds)
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
