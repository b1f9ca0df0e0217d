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
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from nas.config import StudyConfig, TrainConfig, rung_budgets, rung_epochs
from nas.cost import Candidate, flops_cost, solve_resolution, study_cost
from nas.device import resolve_device
from nas.errors import NasError
from nas.family import check_family
from nas.flops import flops_at, params_of
from nas.latency import search_table
from nas.proxy import Continuation
from nas.records import CoefficientRecord, record, records
from nas.scaling import target_member
from nas.search.constraint import ProxyCandidate, ProxyFamily, feasible_grid, proxy_family, solve_proxy
from nas.search.racing import HalvingDecision, RaceDecision, Ties, replay, successive_halving
from nas.search.results import Run, candidates, runs_of, tie_set
from nas.search.runner import all_finished, claim_queued, enqueue_missing, queued_work
from nas.search.scoring import budgeted, describe_outcome, make_pruner, proxy_data, recording_failures, train_and_score
from nas.search.storage import checkpoint_folder
from nas.spec import NetworkSpec, load_spec

GRID_POINT = "grid_point"   # CoefficientRecord.grid_point: [alpha, beta] of an enqueued grid trial
RACE_RUN = "race_run"       # CoefficientRecord.race_run: [alpha, beta, first seed, seeds] of a racing trial
RUNG_RUN = "rung_run"       # CoefficientRecord.rung_run: [alpha, beta, rung] of a budget-racing trial


@dataclass
class ScaleJob:
    """A coefficient search defined by a study file."""

    config: StudyConfig
    directions = ["maximize"]
    unit = "trials"
    table_ready: bool = field(default=False, init=False, repr=False, compare=False)   # predictor.search_table ran
    # The study's identity as the runner opens it (its stored fingerprint), which kept training states are tagged
    # with: taken here, so that a worker's copy training on its own GPU (runner.training_on) keeps it.
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.fingerprint = self.config.fingerprint()

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
            feasible, examined, proxies = self.enumerate_grid(progress)
            grid = [{"alpha": c.alpha, "beta": c.beta} for c in feasible]
            study.set_user_attr("grid", grid)
            study.set_user_attr("grid_examined", examined)
            progress(f"grid: {len(grid)} distinct feasible networks of {examined} points examined; "
                     f"{sum(p.feasible for p in proxies)} have an equal-cost proxy (the others are recorded, not "
                     f"trained)")
        missing = enqueue_missing(study, GRID_POINT, [((p["alpha"], p["beta"]), p) for p in grid])
        if missing and missing < len(grid):
            progress(f"re-queued {missing} grid point(s) left unfinished")
        if missing or not self._grid_finished(study):
            return
        if self.config.search.rungs > 1:
            halving = self.halving(study)
            progress(f"budget racing: {halving.reason}")
            if not halving.finished:
                enqueue_missing(study, RUNG_RUN, [((a, b, halving.rung), {"alpha": a, "beta": b})
                                                  for a, b in halving.to_train])
                if self.config.search.rung_training == "continue":   # nothing continues those left behind
                    for a, b in {(p["alpha"], p["beta"]) for p in grid} - set(halving.field):
                        self.continuation(a, b, halving.rung).discard(self.state_name(a, b, halving.rung - 1))
                return
        if self.config.search.racing:
            decision, have = self.race(study)
            progress(f"racing: {decision.reason}")
            enqueue_missing(study, RACE_RUN, [((a, b, have[(a, b)], n), {"alpha": a, "beta": b})
                                              for (a, b), n in decision.more_seeds.items()])

    def enumerate_grid(self, progress: Callable[[str], None]) -> tuple[list[Candidate], int, list[ProxyCandidate]]:
        """(the grid's feasible full-size candidates, points examined, each candidate's proxy): judged on the
        study's cost at full size, then each proxy's resolution solved on its own FLOPs."""
        s = self.config.search
        progress(f"enumerating the grid: alpha {s.alpha}, beta {s.beta}, step {s.step}, "
                 f"{s.cost} ratio within {s.target:g} +- {s.tolerance:.0%}")
        cost, _, table = study_cost(self.config)
        feasible, examined = feasible_grid(self.target_base(), s.alpha, s.beta, s.step, cost, s.target,
                                           s.tolerance, progress, "predicted" if table else "measured")
        if not feasible:
            raise NasError(f"{self.config.source}: no grid point meets the constraint ({examined} examined): "
                           f"widen search.alpha/search.beta, or raise search.tolerance")
        proxies = [solve_proxy(self.family(), c.alpha, c.beta, c.gamma, self.proxy_cost(), s.target, s.tolerance)
                   for c in feasible]
        return feasible, examined, proxies

    def _ties(self, study: optuna.Study) -> Ties:
        """The paired test (unpaired for trials stored without per-image results) on this study's runs."""
        images = next((r.val_images for r in records(study, CoefficientRecord) if r.val_images), None)
        return lambda results: tie_set(results, images)[0]

    def halving(self, study: optuna.Study) -> HalvingDecision:
        """Budget racing over the grid's trained candidates, replayed on their stored rung runs
        (racing.successive_halving). A candidate whose rung run failed for good leaves the race."""
        s = self.config.search
        rungs: list[dict[tuple, list[Run]]] = [{} for _ in range(s.rungs)]
        dropped = set()
        for r in records(study, CoefficientRecord):
            point = r.grid_point or r.rung_run
            if not point or (r.grid_point and not r.trainable):
                continue
            key, rung = (point[0], point[1]), int(r.rung_run[2]) if r.rung_run else 0
            if r.state == "complete" and r.seed_accuracies:
                rungs[rung][key] = runs_of(r)
            elif r.finished_for_good and r.rung_run:
                dropped.add(key)
        return successive_halving(rungs, s.eta, lambda runs: statistics.fmean(a for a, _ in runs),
                                  self._ties(study), dropped)

    def race(self, study: optuna.Study) -> tuple[RaceDecision, dict[tuple, int]]:
        """The seed race over the grid's candidates at the full budget (the last rung), replayed on their
        stored seed runs (racing.replay): its decision, and the seeds each candidate has had. A candidate with
        a failed racing run leaves the race (it could never catch up)."""
        s = self.config.search
        failed = {tuple(r.race_run[:2]) for r in records(study, CoefficientRecord)
                  if r.race_run and r.finished_for_good and not r.seed_accuracies}
        last = s.rungs - 1 if s.rungs > 1 else None
        results = {tuple(r.grid_point): runs_of(r) for r in candidates(study)
                   if r.state == "complete" and r.seed_accuracies and r.grid_point and r.rung == last
                   and tuple(r.grid_point) not in failed}
        return replay(results, self._ties(study), s.seeds, s.seeds, s.max_seeds)

    def _grid_finished(self, study: optuna.Study) -> bool:
        grid = study.user_attrs.get("grid") or []
        return all_finished(study, GRID_POINT, [(p["alpha"], p["beta"]) for p in grid])

    def done(self, study: optuna.Study) -> bool:
        if self.needs_queue:
            if not self._grid_finished(study):
                return False
            if self.config.search.rungs > 1 and not self.halving(study).finished:
                return False
            return not self.config.search.racing or self.race(study)[0].finished
        s = self.config.search
        finished = [r for r in records(study, CoefficientRecord) if r.finished_for_good]
        feasible = [r for r in finished if r.trainable]
        return len(feasible) >= s.trials or len(finished) >= 5 * s.trials

    def work(self, study: optuna.Study) -> tuple[int, int | None]:
        """(finished, total) for progress lines: the queued trials of a grid (racing adds to them); else the
        feasible trials finished of `search.trials` (infeasible ones are not trained and do not count)."""
        if self.needs_queue:
            return queued_work(study)
        trials = self.config.search.trials
        return min(trials, sum(r.finished_for_good and r.trainable for r in records(study, CoefficientRecord))), trials

    # ------------------------------------------------------------------------------- objective
    def suggest(self, trial: optuna.Trial) -> tuple[float, float]:
        s = self.config.search
        if self.needs_queue:
            claim_queued(trial, next(a for a in (RACE_RUN, RUNG_RUN, GRID_POINT) if a in trial.user_attrs))
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
        if cand.feasible and (GRID_POINT in trial.user_attrs or not self.needs_queue):   # not again for racing runs
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
        race_run, rung_run = trial.user_attrs.get(RACE_RUN), trial.user_attrs.get(RUNG_RUN)
        continuation = None
        if s.rungs > 1:    # budget racing: the grid trial trains the smallest rung, a race run the full budget
            rung = s.rungs - 1 if race_run else int(rung_run[2]) if rung_run else 0
            share = rung_budgets(s.rungs, s.eta)[rung]
            if s.rung_training == "restart":
                train_cfg = budgeted(train_cfg, data, share)
            elif not race_run:     # a race run's seeds are new: they train the whole schedule from the start
                continuation = self.continuation(alpha, beta, rung)
                share = continuation.stop_epoch / train_cfg.epochs      # whole epochs: 3/8, not 1/3
            record(trial, CoefficientRecord, rung=rung, rungs=s.rungs, budget=share)
        if race_run:       # more seeds for a candidate still in the race: seeds first .. first + n - 1
            first, n = int(race_run[2]), int(race_run[3])
            return train_and_score(trial, proxy.spec, data, train_cfg, n, self.config.seed + first, start,
                                   prune=False)
        accuracy = train_and_score(trial, proxy.spec, data, train_cfg, s.seeds, self.config.seed, start,
                                   prune=not rung_run, continuation=continuation)
        if continuation is not None and continuation.resume_from is not None:
            continuation.discard(continuation.resume_from)    # continued: the lower rung's state has served
        return accuracy

    def continuation(self, alpha: float, beta: float, rung: int) -> Continuation:
        """How a rung's run continues the lower rung's training (search.rung_training: continue): it stops at
        its rung's epoch, keeps its state there for the next rung (not at the last), and starts from the state
        the lower rung kept. States are named by candidate and rung, and tagged with the study's fingerprint."""
        s = self.config.search
        stops = rung_epochs(self.config.proxy.train.epochs, s.rungs, s.eta)
        return Continuation(checkpoint_folder(self.config), stops[rung],
                            save_as=self.state_name(alpha, beta, rung) if rung < s.rungs - 1 else None,
                            resume_from=self.state_name(alpha, beta, rung - 1) if rung > 0 else None,
                            tag=self.fingerprint)

    @staticmethod
    def state_name(alpha: float, beta: float, rung: int) -> str:
        return f"alpha{alpha:g}-beta{beta:g}-rung{rung}"

    def describe(self, t: FrozenTrial) -> str:
        r = CoefficientRecord.from_trial(t)
        if r.alpha is None:
            return r.fail_reason or "no candidate"
        text = (f"alpha {r.alpha:.3f} beta {r.beta:.3f} gamma {r.gamma:.3f} "
                f"({r.resolution0}->{r.resolution1} px), {self.config.search.cost} ratio {r.ratio:.3f}")
        if r.proxy_resolution is not None:
            text += f", proxy at {r.proxy_resolution} px, ratio {r.proxy_flops_ratio:.3f}"
        if r.rung is not None and r.rungs:
            text += f", rung {r.rung + 1}/{r.rungs} ({r.budget:.3g} of the budget)"
            if r.continued is not None:
                text += (f", continued from rung {r.rung}" if r.continued
                         else ", trained from the start (no kept state of the lower rung to continue)")
        if r.race_run:
            first, last = int(r.race_run[2]), int(r.race_run[2] + r.race_run[3] - 1)
            text += f", racing seed {first}" if first == last else f", racing seeds {first}-{last}"
        if not r.feasible:
            return text + " infeasible (not trained)"
        if r.infeasible_reason:
            return f"{text}: {r.infeasible_reason} (not trained)"
        return text + describe_outcome(r)




