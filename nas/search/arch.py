"""Block-level architecture search: which kernels, expansions, SE and depths suit this task and device?

Each trial samples one network from a block-level space (nas.space), measures its cost on the
full-size network at the space's native resolution (FLOPs by fvcore, latency on the study's device),
trains its proxy (the study's down-scaling and resolution, as in the coefficient search) and scores:
- `objective: reward`: the MnasNet reward ACC * (COST/T)^w (w = -0.07: a soft constraint), maximized;
  the median pruner works on per-epoch accuracy as in the coefficient search;
- `objective: pareto`: accuracy (maximized) against FLOPs and/or latency (minimized) with NSGA-II or
  multi-objective TPE. Optuna cannot prune multi-objective trials, so every trial trains to the end.
Storage, workers, resume and failure handling are the runner's, shared with the coefficient search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.latency import measure_spec
from nas.proxy import resolve_device
from nas.scaling import scale
from nas.search.runner import FAIL_REASON, counts_as_finished
from nas.search.scoring import describe_outcome, make_pruner, proxy_data, recording_failures, train_and_score, train_config
from nas.space import BlockSpace, load_space
from nas.spec import NetworkSpec, spec_from_dict
from nas.study import ArchSettings, StudyConfig

_DIRECTION = {"accuracy": "maximize", "flops": "minimize", "latency": "minimize"}


def mnasnet_reward(accuracy: float, cost: float, target: float, w: float) -> float:
    """ACC * (COST / T)^w: with w < 0, cheaper than T is rewarded and costlier is penalised, softly."""
    return accuracy * (cost / target) ** w


@dataclass
class ArchJob:
    config: StudyConfig
    needs_queue = False

    @property
    def study_name(self) -> str:
        return self.config.name

    @property
    def settings(self) -> ArchSettings:
        assert self.config.arch is not None
        return self.config.arch

    @property
    def directions(self) -> list[str]:
        if self.settings.objective == "reward":
            return ["maximize"]
        return [_DIRECTION[m] for m in self.settings.metrics]

    def space(self) -> BlockSpace:
        return load_space(self.config.space)

    def create_sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        seed = self.config.seed + 1000 * worker
        if self.settings.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if self.settings.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        return optuna.samplers.RandomSampler(seed=seed)

    def create_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.config) if self.settings.objective == "reward" else optuna.pruners.NopPruner()

    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None:
        progress(f"block-level space {self.config.space}: {self.space().size:.3g} networks")

    def done(self, study: optuna.Study) -> bool:
        return sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False)) >= self.settings.trials

    def objective(self, threads: int | None) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
        space, data = self.space(), proxy_data(self.config)
        train_cfg = train_config(self.config, threads)
        device = str(resolve_device(train_cfg.device))
        p, s = self.config.proxy, self.settings

        def evaluate(trial: optuna.Trial) -> float | tuple[float, ...]:
            start = time.perf_counter()
            spec = space.sample(trial)          # the full-size network; invalid choices never reach here
            trial.set_user_attr("spec", spec.to_dict())
            mflops = flops_at(spec, spec.resolution) / 1e6
            trial.set_user_attr("mflops", mflops)
            trial.set_user_attr("params", params_of(spec))
            trial.set_user_attr("device", device)
            needs_latency = s.cost == "latency" if s.objective == "reward" else "latency" in s.metrics
            latency = measure_spec(spec, s.latency).median_ms if needs_latency else None
            if latency is not None:
                trial.set_user_attr("latency_ms", latency)
            proxy = scale(spec, p.width, p.depth, p.resolution, name=f"{spec.name}-proxy")
            if p.stem_stride is not None:
                proxy = proxy.replace(stem_stride=p.stem_stride)
            acc = train_and_score(trial, proxy, data, train_cfg, s.seeds, self.config.seed, start,
                                  prune=s.objective == "reward")
            if s.objective == "reward":
                cost = mflops if s.cost == "flops" else latency
                reward = mnasnet_reward(acc, cost, s.target, s.w)
                trial.set_user_attr("reward", reward)
                return reward
            values = {"accuracy": acc, "flops": mflops, "latency": latency}
            return tuple(values[m] for m in s.metrics)

        return recording_failures(evaluate)

    def describe(self, t: FrozenTrial) -> str:
        a = t.user_attrs
        if "mflops" not in a:
            return a.get(FAIL_REASON, "no network")
        text = f"{a['mflops']:.0f} MFLOPs, {a['params'] / 1e6:.2f} M params"
        if "latency_ms" in a:
            text += f", {a['latency_ms']:.2f} ms"
        return text + describe_outcome(t)


# ------------------------------------------------------------------------------------------ results

def arch_table(study: optuna.Study) -> pd.DataFrame:
    """Every trial: cost, accuracy, reward; `best` ranks rewards, or marks the Pareto set (1)."""
    rows, trials = [], study.get_trials(deepcopy=False)
    for t in trials:
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), "mflops": a.get("mflops"),
                     "params": a.get("params"), "latency_ms": a.get("latency_ms"), "acc_mean": a.get("acc_mean"),
                     "acc_std": a.get("acc_std"), "reward": a.get("reward"), "wall_s": a.get("wall_time"),
                     "reason": a.get(FAIL_REASON, "")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    best = {t.number: i + 1 for i, t in enumerate(best_trials(study))}
    df.insert(1, "best", pd.array([best.get(n) for n in df["trial"]], dtype="Int64"))
    return df.round({"mflops": 1, "latency_ms": 3, "acc_mean": 4, "acc_std": 4, "reward": 4, "wall_s": 1})


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Single objective: complete trials by reward, best first. Several: the Pareto set (Optuna's)."""
    if len(study.directions) == 1:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(done, key=lambda t: (-t.value, t.number))
    return sorted(study.best_trials, key=lambda t: -t.values[0])


def trial_spec(study: optuna.Study, number: int) -> NetworkSpec:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise NasError(f"study '{study.study_name}' has no trial {number}: see nas arch show {study.study_name}")
    t = trials[number]
    if t.state != TrialState.COMPLETE or "spec" not in t.user_attrs:
        raise NasError(f"trial {number} of '{study.study_name}' is {t.state.name.lower()}, not complete: export "
                       f"a complete trial (nas arch show lists them)")
    return spec_from_dict(t.user_attrs["spec"], source=f"{study.study_name} trial {number}")

