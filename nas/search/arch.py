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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from nas.config import ArchSettings, StudyConfig
from nas.device import resolve_device
from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.latency import measure_spec
from nas.records import ArchRecord, record
from nas.scaling import scale
from nas.search.runner import counts_as_finished
from nas.search.scoring import describe_outcome, make_pruner, proxy_data, recording_failures, train_and_score
from nas.space import BlockSpace, load_space
from nas.spec import NetworkSpec, spec_from_dict

_DIRECTION = {"accuracy": "maximize", "flops": "minimize", "latency": "minimize"}


def mnasnet_reward(accuracy: float, cost: float, target: float, w: float) -> float:
    """ACC * (COST / T)^w: with w < 0, cheaper than T is rewarded and costlier is penalised, softly."""
    return accuracy * (cost / target) ** w


@dataclass
class ArchJob:
    config: StudyConfig
    needs_queue = False
    unit = "trials"

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
        return self.work(study)[0] >= self.settings.trials

    def work(self, study: optuna.Study) -> tuple[int, int | None]:
        """(trials finished, `trials`), for progress lines."""
        finished = sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))
        return min(finished, self.settings.trials), self.settings.trials

    def objective(self) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
        space, data = self.space(), proxy_data(self.config)
        train_cfg = self.config.proxy.train
        device = str(resolve_device(train_cfg.device))
        p, s = self.config.proxy, self.settings

        def evaluate(trial: optuna.Trial) -> float | tuple[float, ...]:
            start = time.perf_counter()
            spec = space.sample(trial)          # the full-size network; invalid choices never reach here
            mflops = flops_at(spec, spec.resolution) / 1e6
            record(trial, ArchRecord, spec=spec.to_dict(), mflops=mflops, params=params_of(spec), device=device)
            needs_latency = s.cost == "latency" if s.objective == "reward" else "latency" in s.metrics
            latency = measure_spec(spec, s.latency).median_ms if needs_latency else None
            if latency is not None:
                record(trial, ArchRecord, latency_ms=latency)
            proxy = scale(spec, p.width, p.depth, p.resolution, name=f"{spec.name}-proxy")
            if p.stem_stride is not None:
                proxy = proxy.replace(stem_stride=p.stem_stride)
            acc = train_and_score(trial, proxy, data, train_cfg, s.seeds, self.config.seed, start,
                                  prune=s.objective == "reward")
            if s.objective == "reward":
                cost = mflops if s.cost == "flops" else latency
                assert cost is not None, "a latency cost is measured above (needs_latency)"
                reward = mnasnet_reward(acc, cost, s.target, s.w)
                record(trial, ArchRecord, reward=reward)
                return reward
            values = {"accuracy": acc, "flops": mflops}
            if latency is not None:   # measured exactly when "latency" is one of the metrics
                values["latency"] = latency
            return tuple(values[m] for m in s.metrics)

        return recording_failures(evaluate)

    def describe(self, t: FrozenTrial) -> str:
        r = ArchRecord.from_trial(t)
        if r.mflops is None or r.params is None:
            return r.fail_reason or "no network"
        text = f"{r.mflops:.0f} MFLOPs, {r.params / 1e6:.2f} M params"
        if r.latency_ms is not None:
            text += f", {r.latency_ms:.2f} ms"
        return text + describe_outcome(r, r.reward)


# ------------------------------------------------------------------------------------------ results

def trial_spec(study: optuna.Study, number: int) -> NetworkSpec:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise NasError(f"study '{study.study_name}' has no trial {number}: see nas arch show {study.study_name}")
    r = ArchRecord.from_trial(trials[number])
    if r.state != "complete" or r.spec is None:
        raise NasError(f"trial {number} of '{study.study_name}' is {r.state}, not complete: export "
                       f"a complete trial (nas arch show lists them)")
    return spec_from_dict(r.spec, source=f"{study.study_name} trial {number}")



def export_trial(study: optuna.Study, number: int, out: Path, name: str | None = None) -> NetworkSpec:
    """Write trial `number`'s network as a base-network file that scale and materialize accept."""
    from nas.space import export_spec
    from nas.spec import save_spec

    spec = export_spec(trial_spec(study, number), name=name or out.stem,
                       description=f"trial {number} of block-level study {study.study_name}")
    save_spec(spec, out)
    return spec
