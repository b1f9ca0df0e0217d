"""Answers that hold: verdicts from paired per-image results, budget racing (successive halving), and the
proxy's ranking confirmed and calibrated at other budgets, each as stored trials that resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.config import load_study
from nas.errors import NasError
from nas.records import CoefficientRecord, record
from nas.search.confirm import calibration, confirmation
from nas.search.racing import simulate_halving, successive_halving, unpaired_ties
from nas.search.results import candidates, tie_set, trials_table, verdict
from nas.search.runner import run_search
from nas.search.scale import ScaleJob
from nas.statistics import pack_correct, unpack_correct

QUIET = {"progress": lambda message: None}


def _study(path: str) -> optuna.Study:
    cfg = load_study(path)
    return optuna.load_study(study_name=cfg.name, storage=cfg.storage_url())


# ------------------------------------------------------------------------------------------ paired

def test_each_run_keeps_which_images_it_got_right_and_the_verdict_is_paired(tiny_study):
    study = run_search(ScaleJob(load_study(tiny_study(seeds=2, epochs=1))), **QUIET)
    done = [CoefficientRecord.from_trial(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    trained = [r for r in done if r.seed_accuracies]
    assert trained
    for r in trained:       # the stored bits are the run's accuracy, image by image
        assert len(r.val_correct) == r.seeds == 2 and r.val_images == 359     # digits' validation split
        for accuracy, packed in zip(r.seed_accuracies, r.val_correct):
            assert unpack_correct(packed, r.val_images).mean() == pytest.approx(accuracy, abs=1e-12)
    found = verdict(study)
    assert found.paired is not None and "paired bootstrap over images and seeds" in found.test_words()
    table = trials_table(study)
    assert {"vs_best", "vs_best_low", "vs_best_high"} <= set(table.columns)
    best = table[table["rank"] == 1].iloc[0]
    others = table[table["rank"] > 1]
    assert np.isnan(best["vs_best"]) and (others["vs_best"] <= 0).all()
    assert (others["vs_best_low"] <= others["vs_best"]).all() and (others["vs_best"] <= others["vs_best_high"]).all()
    # a candidate is tied exactly when its interval reaches 0 (2 seeds: the bootstrap decides)
    assert list(others["tied_best"]) == list(others["vs_best_high"] >= 0)


def test_trials_stored_without_per_image_results_keep_the_unpaired_test_and_say_so():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    for alpha, accs in ((1.0, [0.80, 0.82]), (1.1, [0.60, 0.61])):
        t = study.ask()
        record(t, CoefficientRecord, alpha=alpha, beta=1.0, gamma=1.2, ratio=2.0, target=2.0, feasible=True,
               acc_mean=sum(accs) / 2, seed_accuracies=accs, val_images=500)
        study.tell(t, sum(accs) / 2)
    found = verdict(study)
    assert found.paired is None and found.test_words().startswith("unpaired: these trials did not keep")
    assert [r.alpha for r in found.tied] == [1.0]


def test_a_one_seed_tie_set_is_mcnemars():
    rng = np.random.default_rng(0)
    images = 400
    right = rng.random(images) < 0.9
    flips = right.copy()
    flips[np.flatnonzero(right)[:5]] = False          # b misses 5 images a gets right, and nothing else differs
    from nas.statistics import pack_correct

    runs = {"a": [(right.mean(), pack_correct(right))], "b": [(flips.mean(), pack_correct(flips))]}
    tied, paired = tie_set(runs, images)
    assert tied == ["a", "b"] and paired.differences[1].test == "mcnemar"      # 5 vs 0: p = 0.0625
    assert paired.differences[1].p_value == pytest.approx(0.0625)


# ---------------------------------------------------------------------------------- budget racing

def test_successive_halving_promotes_the_best_third_and_every_tie():
    rungs = [{k: [acc] for k, acc in zip("abcdefghi", (0.50, 0.49, 0.30, 0.29, 0.28, 0.27, 0.26, 0.25, 0.24))},
             {}, {}]
    tied = unpaired_ties(1000)          # 0.04 apart or less is a tie here
    d = successive_halving(rungs, 3, lambda runs: sum(runs) / len(runs), tied)
    assert (d.rung, d.field, d.to_train, d.finished) == (1, ("a", "b", "c"), ("a", "b", "c"), False)
    assert d.reason.startswith("rung 1 of 3: 3 of 9 candidates go on (the best 3)")
    rungs[1] = {"a": [0.70], "b": [0.40], "c": [0.69]}
    d = successive_halving(rungs, 3, lambda runs: sum(runs) / len(runs), tied)
    assert (d.rung, d.field, d.to_train) == (2, ("a", "c"), ("a", "c"))      # the best, and c tied with it
    rungs[2] = {"a": [0.90], "c": [0.80]}
    d = successive_halving(rungs, 3, lambda runs: sum(runs) / len(runs), tied, dropped={"q"})
    assert d.finished and d.field == ("a", "c")
    del rungs[2]["c"]
    d = successive_halving(rungs, 3, lambda runs: sum(runs) / len(runs), tied, dropped={"c"})
    assert d.finished and d.field == ("a",)        # c's last run failed for good: it leaves the race there


def test_a_budget_raced_grid_trains_rungs_as_stored_trials_and_resumes(tiny_study, run_cli):
    path = tiny_study(name="halving", epochs=3, **{"trials: 4,": "trials: 4, rungs: 3, racing: true, max_seeds: 2,"})
    code, out, err = run_cli("scale", "run", path, "--phi", "0-1", "--format", "json")
    assert code == 0, err
    study = _study(path)
    job = ScaleJob(load_study(path))
    decision = job.halving(study)
    assert decision.finished and f"budget racing: {decision.reason}" in err
    trials = [CoefficientRecord.from_trial(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    grid = [r for r in trials if r.grid_point and r.seed_accuracies]
    rung_runs = [r for r in trials if r.rung_run]
    assert all((r.rung, r.rungs, r.budget) == (0, 3, pytest.approx(1 / 9)) for r in grid)
    assert {tuple(r.rung_run[:2]) for r in rung_runs if r.rung == 2} == set(decision.field)
    assert all(r.budget == pytest.approx([1 / 9, 1 / 3, 1][r.rung]) for r in rung_runs)
    race_runs = [r for r in trials if r.race_run]
    assert {tuple(r.race_run[:2]) for r in race_runs} <= set(decision.field)      # seeds race at the last rung
    # the images trained: epochs x the training set per run, against a flat grid's full budget for each
    spent = sum((r.budget or 1) * r.seeds for r in trials if r.seed_accuracies)
    assert spent < len(grid) * 1.0
    field = {tuple(r.grid_point): r for r in candidates(study) if r.grid_point and r.acc_mean is not None}
    assert all(field[k].rung == 2 for k in decision.field)
    assert all(r.rung < 2 for k, r in field.items() if k not in decision.field)
    found = verdict(study)
    assert found.judged == len(decision.field) and {(r.alpha, r.beta) for r in found.ranked[:found.judged]} == \
        set(decision.field)
    rows = json.loads(out)["winners"]
    assert all(row["rung"].endswith("/3") for row in rows)
    before = len(study.trials)
    code, _, err = run_cli("scale", "run", path, "--phi", "0")          # resumes: nothing left to train
    assert code == 0 and len(_study(path).trials) == before, err


def test_rungs_that_continue_end_with_the_flat_grids_results(tiny_study, run_cli):
    # search.rung_training: continue: a promoted candidate goes on from its lower rung's kept state, so each
    # candidate at the last rung ends with exactly the runs a flat grid trains (threads: 1 keeps them bitwise).
    flat = tiny_study(name="flat", epochs=2)
    raced = tiny_study(name="continued", epochs=2,
                       **{"trials: 4,": "trials: 4, rungs: 2, eta: 3, rung_training: continue,"})
    for path in (flat, raced):
        code, _, err = run_cli("scale", "run", path, "--phi", "0")
        assert code == 0, err
    full = {tuple(r.grid_point): r for r in candidates(_study(flat)) if r.seed_accuracies}
    trials = [CoefficientRecord.from_trial(t) for t in _study(raced).get_trials(states=(TrialState.COMPLETE,))]
    first = [r for r in trials if r.grid_point and r.seed_accuracies]
    promoted = [r for r in trials if r.rung_run]
    assert first and promoted and all(len(r.accuracy_per_epoch) == 1 and r.continued is None for r in first)
    assert {r.budget for r in first} == {0.5} and {r.budget for r in promoted} == {1.0}     # 1 and 2 of 2 epochs
    for r in promoted:        # the first epoch's accuracy is the kept one, the second trained here
        assert r.continued and r.accuracy_per_epoch[0] == next(
            g for g in first if g.grid_point == r.rung_run[:2]).accuracy_per_epoch[0]
        same = full[tuple(r.rung_run[:2])]
        assert r.seed_accuracies == same.seed_accuracies and r.val_correct == same.val_correct
    assert "continued from rung 1" in err
    assert not (Path("runs") / "continued" / "continued-checkpoints").exists()     # served, and removed


def test_a_workers_gpu_does_not_change_what_kept_states_are_tagged_with(tiny_study):
    # A worker training on its own GPU gets a copy of the job with that device (runner.training_on); the states
    # it keeps and continues must carry the study's tag, or workers on other GPUs could never continue them.
    from nas.search.runner import training_on

    job = ScaleJob(load_study(tiny_study(name="gpus", epochs=3,
                                         **{"trials: 4,": "trials: 4, rungs: 2, rung_training: continue,"})))
    moved = training_on(job, "cuda:1")
    assert moved.config.proxy.train.device == "cuda:1" and moved.config.fingerprint() != job.fingerprint
    assert moved.continuation(1.0, 1.1, 1).tag == job.continuation(1.0, 1.1, 1).tag == job.fingerprint


def test_rungs_that_continue_need_an_epoch_for_each(tiny_study):
    path = tiny_study(name="few", epochs=2, **{"trials: 4,": "trials: 4, rungs: 3, rung_training: continue,"})
    with pytest.raises(NasError, match=r"'proxy.train.epochs' is 2: must be enough epochs for 3 rungs at eta 3 "
                                       r"that continue one another \(they would stop after epochs 1, 1, 2\)"):
        load_study(path)
    restart = tiny_study(name="same", **{"trials: 4,": "trials: 4, rungs: 2,"})
    explicit = tiny_study(name="same", **{"trials: 4,": "trials: 4, rungs: 2, rung_training: restart,"})
    assert load_study(restart).fingerprint() == load_study(explicit).fingerprint()   # old studies resume


def test_a_paired_verdict_is_indexed_as_its_candidates_were_given():
    """tie_set's differences follow the order of the mapping given, not the ranking: a confirmation lists its
    leaders in the proxy's order beside each one's difference to the confirmed best (it once printed them in
    the confirmed order, each row beside another leader's difference)."""
    rng = np.random.default_rng(0)
    runs = {}
    for name, p in (("low", 0.80), ("high", 0.95), ("mid", 0.90)):
        right = rng.random(400) < p
        runs[name] = [(float(right.mean()), pack_correct(right))]
    tied, paired = tie_set(runs, 400)
    assert tied[0] == "high" and paired is not None and paired.best == 1 and paired.differences[1] is None
    for j, name in enumerate(runs):
        d = paired.differences[j]
        assert (d is None) == (name == "high")
        assert d is None or d.mean == pytest.approx(runs["high"][0][0] - runs[name][0][0])


@pytest.mark.parametrize("studies, minimum, images, resamples", [(20, 19, 1000, 300)])
def test_budget_racing_keeps_the_flat_grids_best_at_under_half_the_training(studies, minimum, images, resamples):
    """Simulated studies (nas.search.racing.simulate_halving), each tie decided by the study's own paired
    test: 12 candidates spread over 20 points, 2 seeds, rung noise 0.1 and 0.05 logits at 1/9 and 1/3 of the
    budget. Fewer validation images widen the ties and promote more candidates: at 1,000 images 200 studies
    spend 50.4 % of the flat grid, at 2,000 (the bundled data sets' size) 45.1 %."""
    rng = np.random.default_rng(0)
    means = [0.80, 0.79, 0.78, 0.77, 0.76, 0.75, 0.74, 0.72, 0.70, 0.68, 0.65, 0.60]
    sims = [simulate_halving(means, (0.1, 0.05, 0.0), 0.05, 1.0, images, 2, 3,
                             lambda res: tie_set(res, images, resamples)[0], rng) for _ in range(studies)]
    assert sum(s.kept_verdict for s in sims) >= minimum
    assert sum(s.budget for s in sims) <= 0.5 * sum(s.flat_budget for s in sims)
    # Rungs that continue one another spend only the share each rung adds: about a third of the flat grid.
    assert sum(s.continued_budget for s in sims) <= 0.4 * sum(s.flat_budget for s in sims)


@pytest.mark.slow
def test_budget_racing_on_200_simulated_studies():
    """The row of benchmarks/budget_racing.py --studies 200 (2 seeds, rung noise 0.1, 0.05) that
    docs/search.md prints: 97.0 % of answers hold the flat grid's best at 45.1 % of its training."""
    test_budget_racing_keeps_the_flat_grids_best_at_under_half_the_training(200, 190, 2000, 500)


# ------------------------------------------------------------------------------- confirm, calibrate

def test_confirmation_retrains_the_leaders_and_the_family_follows_it(tiny_study, run_cli):
    path = tiny_study(name="conf", epochs=1)
    assert run_cli("scale", "run", path, "--phi", "0")[0] == 0
    code, out, err = run_cli("scale", "confirm", path, "--top", "2", "--epochs", "3", "--images", "1",
                             "--seeds", "2", "--format", "json")
    assert code == 0, err
    assert "3x the training (3 epochs) on 30 images a class, seed 1 -> accuracy" in err   # what each run trained
    result = json.loads(out)
    leaders = result["candidates"]
    assert len(leaders) >= 2 and [c["proxy_rank"] for c in leaders] == list(range(1, len(leaders) + 1))
    assert all(c["seeds"] == 2 for c in leaders) and result["outcome"] in ("held", "tied", "overturned")
    assert result["sentences"][1].startswith("rank fidelity: Kendall tau-b")
    assert Path("runs/conf/confirmation.png").is_file()
    cfg = load_study(path)
    confirmed = confirmation(cfg, _study(path))
    best = confirmed.leaders[confirmed.best].record
    # materialize --study and the report follow the confirmed best, and say so
    code, out, err = run_cli("materialize", "--study", "conf", "--phi", "0,1", "--format", "json")
    assert code == 0 and "confirmation" in err, err
    assert f"alpha {best.alpha:.4g} beta {best.beta:.4g} gamma {best.gamma:.4g}" in err
    code, out, err = run_cli("report", "conf")
    page = Path(out.strip()).read_text()
    assert code == 0 and 'id="confirmation"' in page and "Rank fidelity: Kendall tau-b" in page
    # a second confirmation trains nothing: its runs are stored trials
    side = optuna.load_study(study_name="conf-confirm", storage=cfg.storage_url())
    before = len(side.trials)
    assert run_cli("scale", "confirm", path, "--top", "2", "--epochs", "3", "--images", "1", "--seeds", "2")[0] == 0
    assert len(optuna.load_study(study_name="conf-confirm", storage=cfg.storage_url()).trials) == before


def test_calibration_ranks_a_spread_of_candidates_across_budgets(tiny_study, run_cli):
    path = tiny_study(name="cal")
    code, out, err = run_cli("scale", "calibrate", path, "--candidates", "3", "--budgets", "1/3,1",
                             "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["budget"] for r in rows] == [pytest.approx(1 / 3, abs=1e-4), 1.0] and rows[-1]["tau_b"] == 1.0
    assert "1/3x the training (" in err and "1x the training (" in err      # each run, as people write it
    assert "[6/6 runs] " in err                        # 3 candidates x 2 budgets, counted as they finish
    result = calibration(load_study(path))
    assert len(result.sampled) == 3 and len({s.network for s in result.sampled}) == 3
    assert result.sentence().startswith(("recommended proxy budget", "no budget below 1x"))
    assert Path("runs/cal/calibration.png").is_file()
    code, out, err = run_cli("scale", "calibrate", path, "--budgets", "1")
    assert code == 2 and "--budgets 1: give 2 or more different budgets" in err


def test_confirm_settings_are_checked_like_the_rest_of_a_study(tiny_study):
    path = Path(tiny_study(name="c1"))
    path.write_text(path.read_text() + "confirm: {top: 1}\n")
    with pytest.raises(NasError, match="field 'confirm.top' is 1: must be an integer in 2..50"):
        load_study(path)
    path.write_text(path.read_text().replace("confirm: {top: 1}", "confirm: {run: true, seeds: 3}"))
    assert load_study(path).confirm.seeds == 3 and load_study(path).fingerprint() == load_study(tiny_study(
        name="c1")).fingerprint()          # the confirmation is a study of its own: the search's identity stays
    path.write_text(path.read_text().replace("sampler: grid", "sampler: tpe").replace("family_phis: 2",
                                                                                      "family_phis: 2, rungs: 3"))
    with pytest.raises(NasError, match="'search.rungs' is 3: must be 1 unless search.sampler is grid"):
        load_study(path)
