"""Accuracy intervals and ties: what a proxy accuracy is worth, and when the best is not a winner."""

from __future__ import annotations

import math
import random

import numpy as np
import optuna
import pytest

from nas.records import CoefficientRecord, record
from nas.search.results import trials_table, verdict
from nas.statistics import (
    TauInterval,
    describe_stability,
    estimate,
    kendall_tau_b,
    mcnemar_p,
    pack_correct,
    paired_difference,
    paired_tied_with_best,
    rank_stability,
    tau_b_interval,
    tied_with_best,
    unpack_correct,
)


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
    assert tie.sentence().startswith("no winner: 3 of 3 candidates are tied") and "trials 0, 2" in tie.sentence()
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


# ---- paired verdicts: every candidate is scored on the same validation images -------------------------

def _pair(right_a_only: int, right_b_only: int, both_wrong: int, images: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """One run each on `images` images: a alone right on some, b alone right on others, both wrong on some."""
    a, b = np.ones(images, dtype=bool), np.ones(images, dtype=bool)
    b[:right_a_only] = False
    a[right_a_only:right_a_only + right_b_only] = False
    wrong = slice(right_a_only + right_b_only, right_a_only + right_b_only + both_wrong)
    a[wrong] = b[wrong] = False
    return a, b


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 359, 2000])
def test_packed_right_and_wrong_come_back_unchanged(n):
    bits = np.random.default_rng(n).random(n) < 0.5
    text = pack_correct(bits)
    assert text.isascii() and len(text) == 4 * math.ceil(math.ceil(n / 8) / 3)
    back = unpack_correct(text, n)
    assert back.dtype == bool and back.shape == (n,) and (back == bits).all()
    assert pack_correct(list(bits)) == text


def test_packing_is_little_bit_order_base64_and_2000_images_take_336_characters():
    assert pack_correct([True] + [False] * 7 + [False, True]) == "AQI="      # bytes 0x01 0x02
    assert len(pack_correct(np.ones(2000, dtype=bool))) == 336


def test_a_packed_vector_of_another_length_is_refused():
    text = pack_correct(np.ones(359, dtype=bool))
    for n in (300, 400, 2000):                               # another number of characters
        with pytest.raises(ValueError, match="characters"):
            unpack_correct(text, n)
    with pytest.raises(ValueError, match="exactly 358 images"):   # same bytes, but image 359 is set
        unpack_correct(text, 358)
    with pytest.raises(ValueError, match="not a packed vector"):
        unpack_correct("!" * len(text), 359)
    with pytest.raises(ValueError):
        pack_correct(np.ones((2, 3), dtype=bool))


def test_mcnemar_matches_known_values():
    assert mcnemar_p(*_pair(5, 0, 100)) == pytest.approx(0.0625)      # 2 * (1/2)^5
    assert mcnemar_p(*_pair(0, 5, 100)) == pytest.approx(0.0625)
    assert mcnemar_p(*_pair(0, 0, 100)) == 1.0
    assert mcnemar_p(*_pair(3, 3, 10)) == 1.0
    assert mcnemar_p(*_pair(30, 5, 150)) == mcnemar_p(*_pair(5, 30, 150))
    assert mcnemar_p(*_pair(7, 2, 0, images=9)) == pytest.approx(2 * (1 + 9 + 36) / 512)


def test_mcnemar_is_exact_for_thousands_of_discordant_images():
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = _pair(600, 540, 0, images=1140)
    assert mcnemar_p(a, b) == pytest.approx(scipy_stats.binomtest(540, 1140, 0.5).pvalue, rel=1e-9)
    a, b = _pair(3000, 2700, 10, images=6000)
    assert mcnemar_p(a, b) == pytest.approx(scipy_stats.binomtest(2700, 5700, 0.5).pvalue, rel=1e-9)


def test_the_paired_test_separates_what_the_unpaired_interval_calls_tied():
    # b misses 30 images a gets right, a misses 5 that b gets right, both miss 150 hard ones
    a, b = _pair(30, 5, 150)
    assert tied_with_best([estimate([a.mean()], 2000), estimate([b.mean()], 2000)]) == [0, 1]
    one_seed = paired_difference(a, b)
    assert one_seed.test == "mcnemar" and one_seed.separated and one_seed.p_value < 1e-4
    assert one_seed.mean == pytest.approx(25 / 2000) and 0 < one_seed.low < one_seed.mean < one_seed.high
    two_seeds = paired_difference(np.stack([a, a]), np.stack([b, b]))
    assert two_seeds.test == "bootstrap" and two_seeds.separated and two_seeds.p_not_better == 0
    verdict = paired_tied_with_best([b, a])
    assert verdict.best == 1 and verdict.tied == [1] and verdict.differences[1] is None
    assert verdict.test_words() == "McNemar's exact test (one seed each)"


def test_one_seed_each_and_five_discordant_images_is_a_tie_though_the_bootstrap_says_otherwise():
    a, b = _pair(5, 0, 100)
    d = paired_difference(a, b)
    assert d.p_not_better < 0.025 and d.low > 0          # the bootstrap alone would call a winner (e^-5)
    assert d.test == "mcnemar" and d.p_value == pytest.approx(0.0625) and not d.separated
    assert paired_tied_with_best([a, b]).tied == [0, 1]


def _threshold_runs(accuracies: list[float], images: int = 2000) -> np.ndarray:
    """Runs that share which images are hard (run with accuracy q gets the easiest q of them right)."""
    difficulty = np.random.default_rng(0).random(images)
    return np.stack([difficulty < q for q in accuracies])


def test_seeds_that_disagree_widely_are_not_a_lead():
    steady = _threshold_runs([0.90, 0.905, 0.90])
    wild = _threshold_runs([0.99, 0.80, 0.97])                # mean 0.92, two 0.80 draws in 7/27 resamples
    d = paired_difference(wild, steady)
    assert d.mean > 0.01 and d.test == "bootstrap" and not d.separated and d.low < 0
    assert paired_difference(_threshold_runs([0.92, 0.92, 0.92]), steady).separated
    verdict = paired_tied_with_best([steady, wild])
    assert verdict.best == 1 and verdict.tied == [1, 0]
    assert verdict.test_words() == "a paired bootstrap over images and seeds"


def test_a_mixed_verdict_names_both_tests_and_keeps_the_tie_order():
    a, b = _pair(30, 5, 150)
    verdict = paired_tied_with_best([b, np.stack([a, a]), a, b])     # a twice (equal means): lower index best
    assert verdict.best == 1 and verdict.tied == [1, 2]
    assert [d.test if d else None for d in verdict.differences] == ["bootstrap", None, "bootstrap", "bootstrap"]
    assert paired_tied_with_best([a, b, a]).test_words() == "McNemar's exact test (one seed each)"
    mixed = paired_tied_with_best([a, b, np.stack([b, b])])
    assert mixed.test_words() == "McNemar's exact test (one seed each) and a paired bootstrap over images and seeds"
    with pytest.raises(ValueError, match="different images"):
        paired_difference(a, b[:-1])


@pytest.mark.parametrize("seeds", [1, 3])
def test_under_no_difference_the_paired_test_separates_at_most_about_5_percent(seeds):
    """Both candidates' runs from the same per-image probabilities (most images easy, a fifth anywhere),
    200 simulated pairs: how often the best is called a winner."""
    rng = np.random.default_rng(seeds)
    winners = 0
    for k in range(200):
        p = np.where(rng.random(150) < 0.8, 0.97, rng.random(150))
        pair = [rng.random((seeds, 150)) < p for _ in range(2)]
        winners += len(paired_tied_with_best(pair, resamples=200, seed=k).tied) == 1
    assert winners / 200 <= 0.08


def test_the_bootstrap_interval_and_its_decision_agree_exactly():
    rng = np.random.default_rng(3)
    for k in range(40):
        a, b = rng.random((2, 60)) < 0.8, rng.random((3, 60)) < 0.8
        d = paired_difference(a, b, resamples=400, seed=k)
        assert d.separated == (d.low > 0) == (d.p_not_better < 0.025)
        assert d.low <= d.high and d.p_value == min(1.0, 2 * d.p_not_better)


def test_paired_verdicts_are_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    runs = [rng.random((2, 500)) < 0.9, rng.random((3, 500)) < 0.88]
    assert paired_difference(runs[0], runs[1], seed=4) == paired_difference(runs[0], runs[1], seed=4)
    assert paired_difference(runs[0], runs[1], seed=4) != paired_difference(runs[0], runs[1], seed=5)
    assert paired_tied_with_best(runs, seed=1) == paired_tied_with_best(runs, seed=1)
    x, y = rng.random(12).tolist(), rng.random(12).tolist()
    assert tau_b_interval([[v] for v in x], [[v] for v in y], seed=2) == tau_b_interval(
        [[v] for v in x], [[v] for v in y], seed=2)


# ---- rank fidelity ------------------------------------------------------------------------------------

def test_kendall_tau_b_counts_ties_in_either_ranking():
    assert kendall_tau_b([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    # 6 pairs: AB tied in x, BC tied in y, AC, AD, BD, CD concordant: (4 - 0) / sqrt(5 * 5)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # A..F: x = (1, 1, 2, 3, 3, 4), y = (2, 1, 1, 3, 4, 4). Of 15 pairs AB and DE tie in x, BC and EF in y,
    # AC is discordant and the other 10 concordant: (10 - 1) / sqrt((15 - 2) * (15 - 2)) = 9 / 13
    assert kendall_tau_b([1, 1, 2, 3, 3, 4], [2, 1, 1, 3, 4, 4]) == pytest.approx(9 / 13)
    assert kendall_tau_b([0.9], [0.8]) is None and kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1, 2, 3])


def test_tau_b_interval_holds_tau_and_narrows_with_more_candidates():
    def width(m: int) -> float:
        rng = np.random.default_rng(m)
        true = rng.random(m) * 0.1
        short = [(t + rng.normal(0, 0.02, 2)).tolist() for t in true]        # two seeds, proxy budget
        long = [(t + rng.normal(0, 0.02, 2)).tolist() for t in true]         # two seeds, 10x budget
        found = tau_b_interval(short, long, resamples=1000)
        means = [float(np.mean(s)) for s in short], [float(np.mean(s)) for s in long]
        assert found.tau is not None and found.tau == kendall_tau_b(*means) and found.candidates == m
        assert found.low is not None and found.high is not None and found.low <= found.tau <= found.high
        return found.high - found.low
    assert width(8) > 2 * width(64)                                           # ~ 1 / sqrt(candidates)
    assert tau_b_interval([[0.9]], [[0.8]]) == TauInterval(None, None, None, 1)
