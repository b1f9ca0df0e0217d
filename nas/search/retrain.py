"""Named networks trained again at other budgets, as queued trials in a study beside a search: the
confirmation of a search's leaders and the calibration of its proxy budget (read back by nas.search.confirm).

Each (network, budget, seed) is one Optuna trial in a study of its own ('<name>-confirm', '<name>-calibrate',
in the search's storage), so a retraining resumes after an interruption, shares workers, and runs on
PostgreSQL as any search does. The networks' specs, and what was asked (the leaders, the sampled candidates,
the settings), are study attributes written by the launcher: a worker on another machine trains exactly what
was asked, and the results are read back without rebuilding anything.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.config import ConfirmSettings, StudyConfig
from nas.cost import flops_cost
from nas.device import resolve_device
from nas.errors import NasError
from nas.records import RetrainRecord, record
from nas.search.confirm import BUDGETS, CALIBRATE, CONFIRM, LEADERS, SAMPLED, SETTINGS, Budget
from nas.search.constraint import network_id, proxy_family, solve_proxy
from nas.search.results import verdict
from nas.search.runner import SideJob, all_finished, claim_queued, enqueue_missing
from nas.search.scale import ScaleJob
from nas.search.scoring import budgeted, describe_outcome, proxy_data, recording_failures, train_and_score
from nas.spec import NetworkSpec, spec_from_dict

RUN = "retrain_run"           # RetrainRecord.retrain_run: [network id, epochs, images, seed] of a queued trial
NETWORK = "network:"          # study attr prefix: network:<id> -> the network's spec


@dataclass
class RetrainJob(SideJob):
    """Train `networks` at the budgets and seeds of `runs`, in the study `<config.name>-<suffix>`; `meta` is
    stored as study attributes (what was asked, for reading the results back)."""

    networks: dict[str, NetworkSpec] = dataclasses.field(default_factory=dict)
    runs: list[tuple[str, Budget, int]] = dataclasses.field(default_factory=list)    # (network id, budget, seed)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None:
        stored = study.user_attrs
        for key, value in self.meta.items():
            if stored.get(key) != value:
                study.set_user_attr(key, value)
        for net, spec in self.networks.items():
            if f"{NETWORK}{net}" not in stored:
                study.set_user_attr(f"{NETWORK}{net}", spec.to_dict())
        keys = [(net, budget.epochs, budget.images, seed) for net, budget, seed in self.runs]
        study.set_user_attr("requested", [list(k) for k in keys])
        new = enqueue_missing(study, RUN, [(k, {}) for k in keys])
        if new:
            progress(f"{self.suffix}: {len(self.networks)} networks, {len(self.runs)} runs; {new} run(s) queued")

    def done(self, study: optuna.Study) -> bool:
        return all_finished(study, RUN, [tuple(r) for r in study.user_attrs.get("requested", [])])

    def objective(self) -> Callable[[optuna.Trial], float]:
        train_cfg = self.config.proxy.train
        device = str(resolve_device(train_cfg.device))

        def evaluate(trial: optuna.Trial) -> float:
            start = time.perf_counter()
            net, epochs, images, seed = claim_queued(trial, RUN)
            budget = Budget(float(epochs), float(images))
            spec = spec_from_dict(trial.study.user_attrs[f"{NETWORK}{net}"])
            data = proxy_data(budget.data_config(self.config))
            record(trial, RetrainRecord, resolution=spec.resolution, device=device)
            return train_and_score(trial, spec, data, budgeted(train_cfg, data, budget.epochs), 1,
                                   self.config.seed + int(seed), start, prune=False)

        return recording_failures(evaluate)

    def describe(self, t: FrozenTrial) -> str:
        r = RetrainRecord.from_trial(t)
        if not r.retrain_run:
            return r.fail_reason or "no run"
        net, epochs, images, seed = r.retrain_run
        return (f"network {net} ({r.resolution or '?'} px), {Budget(float(epochs), float(images)).describe(self.config)}, "
                f"seed {seed}" + describe_outcome(r))


def named(specs: Sequence[NetworkSpec]) -> dict[str, NetworkSpec]:
    """Networks by their id (constraint.network_id): networks that coincide are trained once."""
    return {network_id(spec): spec for spec in specs}


def proxy_spec(config: StudyConfig, alpha: float, beta: float, gamma: float, phi: int = 1) -> NetworkSpec:
    """The proxy network of a candidate's phi-th member, its resolution solved on its FLOPs so that it costs
    target^phi times the phi = 0 proxy: at phi = 1, the network the search trained."""
    data, s = proxy_data(config), config.search
    return solve_proxy(proxy_family(config), alpha ** phi, beta ** phi, gamma ** phi,
                       flops_cost(data.in_channels, data.num_classes), s.target ** phi, s.tolerance).spec


def confirmation_job(config: StudyConfig, study: optuna.Study, settings: ConfirmSettings) -> RetrainJob:
    """The runs a confirmation trains: the search's best `settings.top` candidates at its highest budget, and
    every one tied with the best, each at the confirmation budget with `settings.seeds` seeds."""
    found = verdict(study)
    if found is None:
        raise NasError(f"study '{study.study_name}' has no finished trial to confirm: run it first (nas scale run)")
    chosen = found.ranked[:found.judged][:max(settings.top, len(found.tied))]
    if len(chosen) < 2:
        raise NasError(f"study '{study.study_name}' has {len(chosen)} finished candidate: a confirmation compares 2 "
                       f"or more")
    specs = [proxy_spec(config, *r.coefficients, settings.phi) for r in chosen]
    budget = Budget(settings.epochs, settings.images)
    networks = named(specs)
    return RetrainJob(config, networks, [(net, budget, seed) for net in networks for seed in range(settings.seeds)],
                      {SETTINGS: dataclasses.asdict(settings),
                       LEADERS: [[r.number, network_id(spec), spec.resolution] for r, spec in zip(chosen, specs)]},
                      suffix=CONFIRM)


def spread(points: Sequence[tuple[float, float]], n: int) -> list[int]:
    """`n` of the points spread over the grid (indices, in the points' order): the first, then each time the
    point farthest from those chosen, so the sample covers every corner of the alpha x beta plane."""
    if n >= len(points):
        return list(range(len(points)))
    chosen = [0]
    while len(chosen) < n:
        chosen.append(max(range(len(points)), key=lambda i: min(
            (points[i][0] - points[j][0]) ** 2 + (points[i][1] - points[j][1]) ** 2 for j in chosen)))
    return sorted(chosen)


def calibration_job(config: StudyConfig, candidates: int, budgets: Sequence[float], seeds: int,
                    progress: Callable[[str], None]) -> RetrainJob:
    """The runs a calibration trains: `candidates` trainable grid points spread over the grid, each at every
    budget (times the study's training), `seeds` seeds each."""
    feasible, _, proxies = ScaleJob(config).enumerate_grid(progress)
    distinct = {network_id(p.spec): (c, p) for c, p in reversed(list(zip(feasible, proxies))) if p.feasible}
    trainable = list(reversed(distinct.values()))      # one candidate a proxy network: the first in the grid
    if len(trainable) < 3:
        raise NasError(f"{config.source}: {len(trainable)} distinct proxy network(s) on the grid; a ranking needs 3 "
                       f"or more: widen search.alpha/search.beta")
    picked = [trainable[i] for i in spread([(c.alpha, c.beta) for c, _ in trainable], candidates)]
    networks = named([p.spec for _, p in picked])
    runs = [(net, Budget(b), seed) for net in networks for b in budgets for seed in range(seeds)]
    return RetrainJob(config, networks, runs,
                      {SAMPLED: [[c.alpha, c.beta, c.gamma, network_id(p.spec)] for c, p in picked],
                       BUDGETS: list(budgets)}, suffix=CALIBRATE)
