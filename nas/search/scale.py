"""Compound-coefficient search: which (alpha, beta, gamma) scales this base best on this data?

Each trial trains the proxy's phi = 1 network for one candidate and scores it by validation accuracy
(the mean over `search.seeds` seeds). Every trained candidate satisfies the constraint twice, on
measured cost (see constraint.py): at full size, where the family will live, and on the proxy it trains,
whose resolution is solved again on its own FLOPs so that all candidates train at equal cost:
- grid: the feasible points of an alpha x beta grid (gamma solved per point) are enqueued up front,
  the paper's method;
- tpe, gp, random: alpha and a share of the remaining budget for beta are sampled, so that
  alpha * beta^2 <= c and gamma >= 1; gamma is solved and the ratio checked. A point that rounding
  still pushes off the surface is recorded as infeasible without training (constraint-aware samplers
  learn from it) and does not count towards `search.trials`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from nas.config import StudyConfig, TrainConfig
from nas.device import resolve_device
from nas.errors import NasError
from nas.family import check_family, exact_cost_family, family_table, with_measured_latency, worst_deviation
from nas.flops import flops_at, params_of
from nas.latency import LatencyTable
from nas.records import CoefficientRecord, record, records
from nas.search.constraint import (
    CostFn,
    ProxyFamily,
    activations_cost,
    feasible_grid,
    flops_cost,
    latency_cost,
    proxy_family,
    solve_proxy,
    solve_resolution,
    target_member,
)
from nas.search.predictor import search_table, table_path
from nas.search.racing import RaceDecision, replay
from nas.search.results import candidates
from nas.search.runner import all_finished, claim_queued, enqueue_missing
from nas.search.scoring import describe_outcome, make_pruner, proxy_data, recording_failures, train_and_score
from nas.spec import NetworkSpec, load_spec


def study_cost(config: StudyConfig, build_table: bool = True, progress: Callable[[str], None] | None = None,
               ) -> tuple[CostFn, str, LatencyTable | None]:
    """(the study's cost of a full-size network, what it is in words, the latency table it predicts from).
    Latency with `search.predictor: table` is predicted from the device's table (built when missing, unless
    `build_table` is off), or timed when the table cannot serve; FLOPs and activations are counted."""
    s = config.search
    if s.cost == "latency":
        table = search_table(config, progress, build=build_table) if s.predictor == "table" else None
        words = "latency predicted by the table" if table else f"latency measured on {s.latency.device}"
        return latency_cost(s.latency, 3, 1000, table), words, table
    if s.cost == "activations":
        return activations_cost(3, 1000), "activations", None
    return flops_cost(3, 1000), "FLOPs", None


def study_family(config: StudyConfig, coefficients: tuple[float, float, float], phis: Sequence[float],
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, str]:
    """(its table, the worst deviation in words) of a coefficient study's family: each member's
    resolution solved on the study's own cost, so a latency study's family doubles its latency, not its FLOPs;
    a latency family is then timed for real, whatever predicted it, and judged on those timings. Pieces the
    run's own table gains while the members are solved are saved with it, so `nas materialize --study` finds
    the same resolutions without timing them again."""
    s = config.search
    cost, words, table = study_cost(config, progress=progress)
    known = len(table.entries) if table else 0
    if progress:
        timed = f", then its latency timed on {s.latency.device}" if s.cost == "latency" else ""
        progress(f"materializing the family: phi {', '.join(f'{p:g}' for p in phis)}, each member's resolution "
                 f"solved on its {words}{timed}")
    if progress and s.cost == "latency":        # each timing of a large member takes seconds: say each one
        timed_cost = cost

        def cost(spec: NetworkSpec, resolution: int) -> float:
            value = timed_cost(spec, resolution)
            progress(f"  {spec.name} at {resolution} px: {value:.1f} ms")
            return value
    members, nominal = exact_cost_family(load_spec(config.space), *coefficients, phis, s.target,
                                         cost=None if s.cost == "flops" else cost)
    if table and len(table.entries) > known and not s.latency_table:    # a table the study names is the user's
        table.save(table_path(config))
        if progress:
            progress(f"kept the {len(table.entries) - known} pieces timed for the family in {table_path(config)}")
    family = family_table(members, target=s.target, nominal_resolutions=nominal)
    if s.cost == "latency":
        family = with_measured_latency(family, members, s.latency, progress)
    return family, worst_deviation(family, s.target, s.cost)


GRID_POINT = "grid_point"   # CoefficientRecord.grid_point: [alpha, beta] of an enqueued grid trial
RACE_RUN = "race_run"       # CoefficientRecord.race_run: [alpha, beta, first seed, seeds] of a racing trial


@dataclass
class ScaleJob:
    """A coefficient search defined by a study file."""

    config: StudyConfig
    directions = ["maximize"]
    table_ready: bool = field(default=False, init=False, repr=False, compare=False)   # predictor.search_table ran

    @property
    def study_name(self) -> str:
        return self.config.name

    @property
    def needs_queue(self) -> bool:
        return self.config.search.sampler == "grid"

    # ----------------------------------------------------------------------------------- setup
    def family(self) -> ProxyFamily:
        return proxy_family(self.config)

    def target_base(self) -> NetworkSpec:
        """The full-size base at its native resolution, on which the constraint is judged."""
        return load_spec(self.config.space)

    def cost(self):
        """Cost of a full-size network as the family will be deployed: 3-channel images, 1000 classes."""
        return study_cost(self.config)[0]

    def proxy_cost(self):
        """Cost of a proxy network: FLOPs on the proxy data's channels and classes (what training costs)."""
        data = proxy_data(self.config)
        return flops_cost(data.in_channels, data.num_classes)

    def create_sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        s, seed = self.config.search, self.config.seed + 1000 * worker
        if s.sampler == "tpe":   # both read the constraint each trial sets (Trial.set_constraint)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True)
        if s.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)   # grid trials come from the queue

    def create_pruner(self) -> optuna.pruners.BasePruner:
        return make_pruner(self.config)

    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None:
        """Grid: enumerate the feasible points once (kept in the study) and enqueue those that have
        no finished, waiting or running trial: all of them at first, the interrupted ones on resume.
        First, with search.predictor: table, the latency table is made ready (built if need be) and its
        held-out error shown, once, before any worker starts."""
        if self.config.search.predictor == "table" and not self.table_ready:
            search_table(self.config, progress)
            self.table_ready = True
        if not self.needs_queue:
            return
        grid = study.user_attrs.get("grid")
        if grid is None:
            s = self.config.search
            progress(f"enumerating the grid: alpha {s.alpha}, beta {s.beta}, step {s.step}, "
                     f"{s.cost} ratio within {s.target:g} +- {s.tolerance:.0%}")
            cost, _, table = study_cost(self.config)
            feasible, examined = feasible_grid(self.target_base(), s.alpha, s.beta, s.step, cost, s.target,
                                               s.tolerance, progress, "predicted" if table else "measured")
            if not feasible:
                raise NasError(f"{self.config.source}: no grid point meets the constraint ({examined} examined): "
                               f"widen search.alpha/search.beta, or raise search.tolerance")
            grid = [{"alpha": c.alpha, "beta": c.beta} for c in feasible]
            study.set_user_attr("grid", grid)
            study.set_user_attr("grid_examined", examined)
            proxies = [solve_proxy(self.family(), c.alpha, c.beta, c.gamma, self.proxy_cost(), s.target,
                                   s.tolerance).feasible for c in feasible]
            progress(f"grid: {len(grid)} distinct feasible networks of {examined} points examined; "
                     f"{sum(proxies)} have an equal-cost proxy (the others are recorded, not trained)")
        missing = enqueue_missing(study, GRID_POINT, [((p["alpha"], p["beta"]), p) for p in grid])
        if missing and missing < len(grid):
            progress(f"re-queued {missing} grid point(s) left unfinished")
        if self.config.search.racing and not missing and self._grid_finished(study):
            decision, have = self.race(study)
            progress(f"racing: {decision.reason}")
            enqueue_missing(study, RACE_RUN, [((a, b, have[(a, b)], n), {"alpha": a, "beta": b})
                                              for (a, b), n in decision.more_seeds.items()])

    def race(self, study: optuna.Study) -> tuple[RaceDecision, dict[tuple, int]]:
        """The race over the grid's trained candidates, replayed on their stored seed runs (racing.replay):
        its decision, and the seeds each candidate has had. A candidate with a failed racing run leaves the
        race (it could never catch up)."""
        s = self.config.search
        failed = {tuple(r.race_run[:2]) for r in records(study, CoefficientRecord)
                  if r.race_run and r.finished_for_good and not r.seed_accuracies}
        field = candidates(study)
        results = {tuple(r.grid_point): r.seed_accuracies for r in field
                   if r.state == "complete" and r.seed_accuracies and r.grid_point
                   and tuple(r.grid_point) not in failed}
        images = next((r.val_images for r in field if r.val_images), None)
        return replay(results, images, s.seeds, s.seeds, s.max_seeds)

    def _grid_finished(self, study: optuna.Study) -> bool:
        grid = study.user_attrs.get("grid") or []
        return all_finished(study, GRID_POINT, [(p["alpha"], p["beta"]) for p in grid])

    def done(self, study: optuna.Study) -> bool:
        if self.needs_queue:
            if not self._grid_finished(study):
                return False
            return not self.config.search.racing or self.race(study)[0].finished
        s = self.config.search
        finished = [r for r in records(study, CoefficientRecord) if r.finished_for_good]
        feasible = [r for r in finished if r.trainable]
        return len(feasible) >= s.trials or len(finished) >= 5 * s.trials

    # ------------------------------------------------------------------------------- objective
    def suggest(self, trial: optuna.Trial) -> tuple[float, float]:
        s = self.config.search
        if self.needs_queue:
            claim_queued(trial, RACE_RUN if RACE_RUN in trial.user_attrs else GRID_POINT)
            return trial.suggest_float("alpha", *s.alpha), trial.suggest_float("beta", *s.beta)
        limit = s.target * (1 + s.tolerance)
        alpha = trial.suggest_float("alpha", s.alpha[0], min(s.alpha[1], limit / s.beta[0] ** 2))
        beta_hi = min(s.beta[1], math.sqrt(limit / alpha))
        share = trial.suggest_float("beta_share", 0.0, 1.0)
        return alpha, s.beta[0] + share * max(0.0, beta_hi - s.beta[0])

    def objective(self) -> Callable[[optuna.Trial], float]:
        data, family, cost = proxy_data(self.config), self.family(), self.cost()
        train_cfg = self.config.proxy.train
        device = str(resolve_device(train_cfg.device))
        full_base = self.target_base()
        return recording_failures(
            lambda trial: self._evaluate(trial, data, family, cost, train_cfg, device, full_base))

    def _evaluate(self, trial: optuna.Trial, data, family: ProxyFamily, cost, train_cfg: TrainConfig, device: str,
                  full_base) -> float:
        s, start = self.config.search, time.perf_counter()
        alpha, beta = self.suggest(trial)
        cand = solve_resolution(full_base, alpha, beta, cost, s.target, s.tolerance)
        record(trial, CoefficientRecord, **cand.attrs(), cost=s.cost)
        # What the proxy actually trains: the down-scaled phi = 1 network, its resolution solved on its own
        # FLOPs so that every candidate trains at equal cost (always FLOPs: the proxy's cost is training).
        shape = (data.in_channels, data.num_classes)
        proxy = solve_proxy(family, alpha, beta, cand.gamma, self.proxy_cost(), s.target, s.tolerance)
        record(trial, CoefficientRecord, proxy_resolution=proxy.spec.resolution, proxy_flops_ratio=proxy.ratio,
               proxy_feasible=proxy.feasible)
        violation = max(cand.violation, proxy.violation)
        reasons = [] if proxy.feasible else [proxy.reason()]
        if cand.feasible and not trial.user_attrs.get(RACE_RUN):    # a racing run's grid trial checked it
            whole = check_family(full_base, alpha, beta, cand.gamma, s.family_phis, s.target, s.tolerance)
            record(trial, CoefficientRecord, family_worst=None if whole.unbuildable else whole.worst,
                   family_phi=whole.phi, family_feasible=whole.feasible)
            violation = max(violation, (1.0 if whole.unbuildable else whole.worst) - s.tolerance)
            reasons += [] if whole.feasible else [whole.reason()]
        record(trial, CoefficientRecord, constraint_violation=violation)
        trial.set_constraint("cost_ratio", violation)
        if not cand.feasible or reasons:
            record(trial, CoefficientRecord, wall_time=time.perf_counter() - start,
                   **({"infeasible_reason": "; ".join(reasons)} if cand.feasible else {}))
            return 0.0    # not trained; the constraint violation tells the sampler why
        full1 = target_member(full_base, alpha, beta, cand.resolution1)
        flops0, flops1 = flops_at(full_base, full_base.resolution), flops_at(full1, full1.resolution)
        record(trial, CoefficientRecord, widths=[st.channels for st in full1.stages],
               depths=[st.repeats for st in full1.stages], stem_head=[full1.stem_channels, full1.head_channels],
               params=params_of(full1), flops0=flops0, flops1=flops1, flops_ratio=flops1 / flops0,
               proxy_params=params_of(proxy.spec, *shape), device=device)
        race_run = trial.user_attrs.get(RACE_RUN)
        if race_run:       # more seeds for a candidate still in the race: seeds first .. first + n - 1
            first, n = int(race_run[2]), int(race_run[3])
            return train_and_score(trial, proxy.spec, data, train_cfg, n, self.config.seed + first, start,
                                   prune=False)
        return train_and_score(trial, proxy.spec, data, train_cfg, s.seeds, self.config.seed, start)

    def describe(self, t: FrozenTrial) -> str:
        r = CoefficientRecord.from_trial(t)
        if r.alpha is None:
            return r.fail_reason or "no candidate"
        text = (f"alpha {r.alpha:.3f} beta {r.beta:.3f} gamma {r.gamma:.3f} "
                f"({r.resolution0}->{r.resolution1} px), {self.config.search.cost} ratio {r.ratio:.3f}")
        if r.proxy_resolution is not None:
            text += f", proxy at {r.proxy_resolution} px, ratio {r.proxy_flops_ratio:.3f}"
        if r.race_run:
            first, last = int(r.race_run[2]), int(r.race_run[2] + r.race_run[3] - 1)
            text += f", racing seed {first}" if first == last else f", racing seeds {first}-{last}"
        if not r.feasible:
            return text + " infeasible (not trained)"
        if r.infeasible_reason:
            return f"{text}: {r.infeasible_reason} (not trained)"
        return text + describe_outcome(r)




