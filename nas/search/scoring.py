"""What every search trial shares: proxy data, the pruner, training a candidate over seeds, and
recording why a trial failed. A job's objective wraps its own candidate logic around these."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

import optuna

from nas.config import StudyConfig, TrainConfig
from nas.data import Dataset, load_dataset
from nas.proxy import Continuation, train_seeds
from nas.records import TrialRecord, record
from nas.spec import NetworkSpec


class TrialFailed(Exception):
    """A trial that ended for a reason of its own (NaN loss, out of memory); recorded, the study goes on."""


def proxy_data(config: StudyConfig) -> Dataset:
    """The study's proxy data; loaded once per process (the launcher checks it, an in-process worker reuses it)."""
    p = config.proxy
    return _load_cached(p.dataset, p.per_class, p.fraction, config.seed)


@functools.lru_cache(maxsize=2)
def _load_cached(dataset: str, per_class: int | None, fraction: float | None, seed: int) -> Dataset:
    return load_dataset(dataset, per_class=per_class, fraction=fraction, seed=seed)


def budgeted(cfg: TrainConfig, data: Dataset, share: float) -> TrainConfig:
    """`cfg` with `share` times its optimizer steps on `data` (at least one): a budget rung's fraction, or a
    confirmation's multiple, of the study's training; the same schedule, its warm-up scaled alike."""
    if share == 1:
        return cfg
    total = cfg.steps or cfg.epochs * max(1, len(data.y_train) // cfg.batch_size)
    return dataclasses.replace(cfg, steps=max(1, round(total * share)), warmup_epochs=cfg.warmup_epochs * share)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    if p.type == "none":
        return optuna.pruners.NopPruner()
    # Steps are 1-based epochs and Optuna prunes from step n_warmup_steps on: +1 keeps the first
    # `warmup_epochs` epochs safe.
    return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs + 1)


def train_and_score(trial: optuna.Trial, spec: NetworkSpec, data: Dataset, train_cfg: TrainConfig, seeds: int,
                    base_seed: int, start: float, prune: bool = True,
                    continuation: Continuation | None = None) -> float:
    """Train `spec` once per seed (fused into one job where proxy.fuses_seeds) and record the result;
    returns the mean final validation accuracy.

    The first seed reports every epoch to Optuna (when `prune`), so pruners stop weak candidates
    early; a pruned run raises TrialPruned, a diverged or out-of-memory run raises TrialFailed with
    the reason recorded in the trial. With `continuation`, the seeds train part of the schedule, from the
    state a shorter run kept where there is one (budget racing's rungs).
    """
    def report(epoch: int, acc: float) -> bool:
        trial.report(acc, epoch)
        return trial.should_prune()

    results = train_seeds(spec, data, train_cfg, [base_seed + k for k in range(seeds)],
                          callback=report if prune else None, continuation=continuation)
    first = results[0]
    if continuation is not None and continuation.resume_from is not None:
        record(trial, TrialRecord, continued=all(r.continued for r in results))
    # A fused job's set-up, training and evaluation are shared by its seeds: each counts its share.
    record(trial, TrialRecord, accuracy_per_epoch=first.accuracies, train_img_s=first.train_images_per_sec,
           **{f"{part}_time": sum(getattr(r, f"{part}_seconds") / r.job_seeds for r in results)
              for part in ("setup", "train", "eval")})
    failed = next((r for r in results if r.status != "ok"), None)
    if failed is not None:
        record(trial, TrialRecord, wall_time=time.perf_counter() - start)
        if failed.status == "stopped":
            raise optuna.TrialPruned(failed.reason)
        record(trial, TrialRecord, fail_reason=f"{failed.status}: {failed.reason}")
        raise TrialFailed(failed.reason)
    accuracies = [r.final_acc for r in results]
    correct = [r.packed_correct() for r in results]
    record(trial, TrialRecord, seed_accuracies=accuracies, acc_mean=statistics.fmean(accuracies),
           acc_std=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0, val_images=len(data.y_val),
           val_correct=None if None in correct else correct, wall_time=time.perf_counter() - start)
    return statistics.fmean(accuracies)


_Value = TypeVar("_Value")


def recording_failures(evaluate: Callable[[optuna.Trial], _Value]) -> Callable[[optuna.Trial], _Value]:
    """An objective that records an unexpected exception's reason and traceback before Optuna fails
    the trial (the study goes on; three in a row stop it, see runner)."""
    def objective(trial: optuna.Trial) -> _Value:
        try:
            return evaluate(trial)
        except (optuna.TrialPruned, TrialFailed):
            raise
        except Exception as e:
            record(trial, TrialRecord, fail_reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                   fail_traceback=traceback.format_exc()[-4000:])
            raise
    return objective


def describe_outcome(r: TrialRecord, reward: float | None = None) -> str:
    """How a trial ended, for progress lines: accuracy (+- spread over seeds, reward), reason, or pruning."""
    text = ""
    if r.state == "complete" and r.acc_mean is not None:
        text = f" -> accuracy {r.acc_mean:.4f}"
        if r.seeds > 1:
            text += f" +- {r.acc_std:.4f}"
        if reward is not None:
            text += f", reward {reward:.4f}"
    elif r.fail_reason:
        text = f" -> {r.fail_reason}"
    elif r.state == "pruned":
        text = f" -> pruned after epoch {r.epochs}"
    return text + f" ({r.wall_time or 0:.1f} s)"
