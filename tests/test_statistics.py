"""Accuracy intervals and ties: what a proxy accuracy is worth, and when the best is not a winner."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from nas.records import CoefficientRecord, record
from nas.search.results import trials_table, verdict
from nas.statistics import describe_stability, estimate, rank_stability, tied_with_best


def test_the_interval_adds_validation_sampling_to_the_spread_over_seeds():
    one = estimate([0.9], images=100)
    assert one.se == pytest.approx(math.sqrt(0.9 * 0.1 / 100))        # binomial only: 0.03
    two = estimate([0.9, 0.92], images=100)
    assert two.se == pytest.approx(math.sqrt(0.91 * 0.09 / 100 + 0.0002 / 2))
    assert (two.low, two.high) == pytest.approx((0.91 - 1.96 * two.se, 0.91 + 1.96 * two.se))
    unknown = estimate([0.9], images=None)          # a trial from before validation sizes were recorded
    assert math.isnan(unknown.se) and "noise unknown" in unknown.describe()


def test_the_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    """Simulated proxy runs, as the model behind the interval has them: a population of images of which 90 %
    are learnable, a validation split of 359 of them shared by every seed (the bundled digits' size), and
    each seed's network 0.01 better or worse at random. The true accuracy is 0.9."""
    rng = random.Random(0)
    covered, trials = 0, 1000
    for _ in range(trials):
        split = sum(rng.random() < 0.9 for _ in range(359)) / 359
        seeds = [min(1.0, max(0.0, split + rng.gauss(0, 0.01))) for _ in range(3)]
        e = estimate(seeds, 359)
        covered += e.low <= 0.9 <= e.high
    assert 0.92 <= covered / trials <= 0.98


def test_close_candidates_tie_and_a_clear_lead_wins():
    # The quickstart's top five: one or two of 359 validation images apart, one seed each.
    close = [estimate([a], 359) for a in (0.9749, 0.9721, 0.9721, 0.9721, 0.9694)]
    assert tied_with_best(close) == [0, 1, 2, 3, 4]
    clear = [estimate([0.99], 1000), estimate([0.90], 1000), estimate([0.985], 1000)]
    assert tied_with_best(clear) == [0, 2]
    assert tied_with_best([estimate([0.99, 0.991, 0.989], 10_000), estimate([0.95, 0.951], 10_000)]) == [0]


def _study(accuracies: list[list[float]], images: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("config", {"search": {"target": 2.0}})
    for i, seeds in enumerate(accuracies):
        t = study.ask()
        record(t, CoefficientRecord, alpha=1.0 + i / 10, beta=1.1, gamma=1.1, ratio=2.0, feasible=True,
               seed_accuracies=seeds, acc_mean=sum(seeds) / len(seeds), val_images=images)
        study.tell(t, sum(seeds) / len(seeds))
    return study


def test_the_verdict_names_a_winner_only_beyond_the_noise():
    tie = verdict(_study([[0.9721], [0.9749], [0.9694]], 359))
    assert tie is not None and tie.is_tie and tie.best.number == 1
    assert tie.sentence().startswith("no winner: 3 candidates are tied") and "trials 0, 2" in tie.sentence()
    table = trials_table(_study([[0.9721], [0.9749], [0.9694]], 359))
    assert table["tied_best"].all() and (table["acc_low"] < table["acc_mean"]).all()

    win = verdict(_study([[0.80, 0.81], [0.95, 0.96], [0.70, 0.72]], 5000))
    assert win is not None and not win.is_tie and win.best.number == 1
    assert win.sentence().startswith("winner: trial 1") and "runner-up (trial 0, 0.8050)" in win.sentence()


def test_rank_stability_is_one_when_the_halves_agree_and_minus_one_when_reversed():
    assert rank_stability([[0.90, 0.90], [0.92, 0.92], [0.95, 0.95, 0.95]]) == 1.0
    assert rank_stability([[0.90, 0.95], [0.92, 0.92], [0.95, 0.90]]) == -1.0


def test_rank_stability_counts_ties_the_tau_b_way():
    # Halves (even seeds, odd seeds): A (0.9, 0.9), B (0.9, 0.8), C (0.8, 0.7), D (0.7, 0.8); E has one seed
    # and takes no part. Of the 6 pairs, AC, AD and BC agree, CD disagrees, AB ties in the first half and
    # BD in the second: tau-b = (3 - 1) / sqrt((6 - 1) * (6 - 1)) = 0.4.
    tau = rank_stability([[0.9, 0.9, 0.9], [0.9, 0.8], [0.8, 0.7], [0.7, 0.8], [0.99]])
    assert tau == pytest.approx(0.4)
    assert describe_stability(tau, 4) == ("rank stability: Kendall tau 0.40 between rankings from disjoint "
                                          "halves of the seeds (4 candidates)")


def test_rank_stability_is_unknown_without_two_candidates_of_two_seeds_or_without_an_order():
    assert rank_stability([]) is None
    assert rank_stability([[0.9, 0.91], [0.8]]) is None           # one candidate has 2 seeds
    assert rank_stability([[0.9, 0.91], [0.9, 0.95]]) is None     # the even halves tie: no order to compare
    assert describe_stability(None, 1).startswith("rank stability: unknown (needs 2 or more seeds")
