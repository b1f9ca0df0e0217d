"""What every search trial shares: proxy data, the pruner, training a candidate over seeds, and
recording why a trial failed. A job's objective wraps its own candidate logic around these."""

from __future__ import annotations

import dataclasses
import statistics
import time
import traceback
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.data import Dataset, load_dataset
from nas.proxy import TrainConfig, train
from nas.search.runner import FAIL_REASON, FAIL_TRACEBACK
from nas.spec import NetworkSpec
from nas.study import StudyConfig


class TrialFailed(Exception):
    """A trial that ended for a reason of its own (NaN loss, out of memory); recorded, the study goes on."""


def proxy_data(config: StudyConfig) -> Dataset:
    p = config.proxy
    return load_dataset(p.dataset, per_class=p.per_class, fraction=p.fraction, seed=config.seed)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    if p.type == "none":
        return optuna.pruners.NopPruner()
    # Steps are 1-based epochs and Optuna prunes from step n_warmup_steps on: +1 keeps the first
    # `warmup_epochs` epochs safe.
    return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs + 1)


def train_config(config: StudyConfig, threads: int | None) -> TrainConfig:
    """The study's budget, with this worker's share of CPU threads unless the study fixes them."""
    cfg = config.proxy.train
    return cfg if cfg.threads or threads is None else dataclasses.replace(cfg, threads=threads)


def train_and_score(trial: optuna.Trial, spec: NetworkSpec, data: Dataset, train_cfg: TrainConfig, seeds: int,
                    base_seed: int, start: float, prune: bool = True) -> float:
    """Train `spec` once per seed and record the result; returns the mean final validation accuracy.

    The first seed reports every epoch to Optuna (when `prune`), so pruners stop weak candidates
    early; a pruned run raises TrialPruned, a diverged or out-of-memory run raises TrialFailed with
    the reason recorded in the trial.
    """
    accuracies = []
    for k in range(seeds):
        def report(epoch: int, acc: float) -> bool:
            trial.report(acc, epoch)
            return trial.should_prune()

        result = train(spec, data, dataclasses.replace(train_cfg, seed=base_seed + k),
                       callback=report if prune and k == 0 else None)
        if k == 0:
            trial.set_user_attr("accuracy_per_epoch", result.accuracies)
            trial.set_user_attr("train_img_s", result.train_images_per_sec)
        if result.status in ("stopped", "diverged", "oom"):
            trial.set_user_attr("wall_time", time.perf_counter() - start)
            if result.status == "stopped":
                raise optuna.TrialPruned(result.reason)
            trial.set_user_attr(FAIL_REASON, f"{result.status}: {result.reason}")
            raise TrialFailed(result.reason)
        accuracies.append(result.final_acc)
    trial.set_user_attr("seed_accuracies", accuracies)
    trial.set_user_attr("acc_mean", statistics.fmean(accuracies))
    trial.set_user_attr("acc_std", statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0)
    trial.set_user_attr("wall_time", time.perf_counter() - start)
    return statistics.fmean(accuracies)


def recording_failures(evaluate: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """An objective that records an unexpected exception's reason and traceback before Optuna fails
    the trial (the study goes on; three in a row stop it, see runner)."""
    def objective(trial: optuna.Trial):
        try:
            return evaluate(trial)
        except (optuna.TrialPruned, TrialFailed):
            raise
        except Exception as e:
            trial.set_user_attr(FAIL_REASON, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            trial.set_user_attr(FAIL_TRACEBACK, traceback.format_exc()[-4000:])
            raise
    return objective


def describe_outcome(t: FrozenTrial) -> str:
    """How a trial ended, for progress lines: accuracy (+- spread over seeds, reward), reason, or pruning."""
    a = t.user_attrs
    text = ""
    if t.state == TrialState.COMPLETE and "acc_mean" in a:
        text = f" -> accuracy {a['acc_mean']:.4f}"
        if len(a.get("seed_accuracies", [])) > 1:
            text += f" +- {a['acc_std']:.4f}"
        if "reward" in a:
            text += f", reward {a['reward']:.4f}"
    elif FAIL_REASON in a:
        text = f" -> {a[FAIL_REASON]}"
    elif t.state == TrialState.PRUNED:
        text = f" -> pruned after epoch {len(a.get('accuracy_per_epoch', []))}"
    return text + f" ({a.get('wall_time', 0):.1f} s)"
