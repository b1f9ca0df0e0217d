"""Typed trial records: what a search trial stores in Optuna's `user_attrs`, one dataclass per kind.

Trials write their attributes as they go (a candidate's cost before training, the accuracies after), so a
trial that failed half-way still explains itself. Writing goes through `record(trial, Kind, key=value)`,
which refuses a key the kind does not declare; reading goes through `Kind.from_trial(trial)`, which gives
every declared field (None where the trial never wrote it). A typo is then an error at once instead of a
silent None in a table. The attribute names are the field names, unchanged from studies written before
these classes existed, so old studies load as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.statistics import Estimate, estimate

R = TypeVar("R", bound="TrialRecord")


@dataclass(frozen=True)
class TrialRecord:
    """What every kind of trial records: how it ended and the training behind it."""

    number: int = -1                               # Optuna's trial number (not a user attribute)
    state: str = ""                                # complete | pruned | fail | running | waiting
    device: str | None = None                      # where it trained
    accuracy_per_epoch: list[float | None] | None = None  # first seed, every epoch (None: not validated)
    train_img_s: float | None = None
    seed_accuracies: list[float] | None = None     # final validation accuracy of each seed
    acc_mean: float | None = None
    acc_std: float | None = None
    val_images: int | None = None                  # validation images each accuracy was measured on
    # Per seed, which of those images it got right (nas.statistics.pack_correct): candidates scored on the
    # same images are compared image by image. None in trials stored before effnas recorded it.
    val_correct: list[str] | None = None
    wall_time: float | None = None
    # Where the trial's training time went, summed over seeds (proxy.TrainResult): model and data set-up,
    # training steps, evaluation with BN recalibration. The rest of wall_time is the search's own work.
    setup_time: float | None = None
    train_time: float | None = None
    eval_time: float | None = None
    fail_reason: str | None = None                 # a failure of its own (diverged, out of memory, an error)
    fail_traceback: str | None = None              # the traceback when the trial raised an exception
    skipped: str | None = None                     # found no queued work, or work another trial owned
    # Rungs that continue one another (search.rung_training: continue): whether every seed went on from the
    # lower rung's kept state; False where none was usable (another machine, a deleted folder) and it trained
    # from the start (the same result, at the full cost). None: not a continuing run.
    continued: bool | None = None

    @classmethod
    def attr_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls)) - {"number", "state"}

    @classmethod
    def from_trial(cls: type[R], t: FrozenTrial) -> R:
        a = t.user_attrs
        return cls(number=t.number, state=t.state.name.lower(),
                   **{k: a[k] for k in cls.attr_names() if k in a})

    def to_attrs(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k in self.attr_names() and v is not None}

    @property
    def finished_for_good(self) -> bool:
        """Complete, pruned, or failed for a reason of its own (not interrupted or killed)."""
        if self.skipped:
            return False
        return self.state in ("complete", "pruned") or (self.state == "fail" and self.fail_reason is not None)

    @property
    def seeds(self) -> int:
        return len(self.seed_accuracies or [])

    @property
    def epochs(self) -> int:
        return len(self.accuracy_per_epoch or [])

    def estimate(self) -> Estimate | None:
        """The accuracy with its noise over seeds and validation images (nas.statistics); None untrained."""
        if not self.seed_accuracies:
            return None
        return estimate(self.seed_accuracies, self.val_images)


@dataclass(frozen=True)
class CoefficientRecord(TrialRecord):
    """A coefficient-search candidate: its coefficients, the measured constraint, and what was trained."""

    grid_point: list[float] | None = None          # [alpha, beta] of an enqueued grid trial
    race_run: list[float] | None = None            # [alpha, beta, first seed, seeds]: more seeds, when racing
    rung_run: list[float] | None = None            # [alpha, beta, rung]: a higher budget rung, when budget racing
    rung: int | None = None                        # the budget rung it trained at (None: no budget racing)
    rungs: int | None = None                       # the study's rungs; the last, rungs - 1, is the full budget
    budget: float | None = None                    # the share of proxy.train's budget its result is at
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None                     # effective: resolution1 / resolution0
    gamma_nominal: float | None = None             # what alpha * beta^2 * gamma^2 = c asks for
    resolution0: int | None = None
    resolution1: int | None = None
    cost0: float | None = None
    cost1: float | None = None
    target: float | None = None
    tolerance: float | None = None
    ratio: float | None = None                     # measured cost ratio phi = 1 / phi = 0, full size
    nominal_ratio: float | None = None
    feasible: bool | None = None
    cost: str | None = None                        # flops | latency
    constraint_violation: float | None = None
    widths: list[int] | None = None                # the full-size phi = 1 network
    depths: list[int] | None = None
    stem_head: list[int] | None = None
    params: int | None = None
    flops0: int | None = None
    flops1: int | None = None
    flops_ratio: float | None = None
    proxy_resolution: int | None = None            # the network the proxy trains
    proxy_params: int | None = None
    proxy_flops_ratio: float | None = None         # measured proxy FLOPs, phi = 1 over phi = 0
    proxy_feasible: bool | None = None             # that ratio within tolerance (None: before effnas solved it)
    family_worst: float | None = None              # its family's largest |FLOPs / c^phi - 1|, phi = 1..K
    family_phi: float | None = None                # ... at this phi
    family_feasible: bool | None = None
    infeasible_reason: str | None = None           # why a full-size-feasible candidate was not trained

    @property
    def trainable(self) -> bool:
        """Meets the constraint at full size and on its proxy: the candidates a search trains and ranks."""
        return bool(self.feasible) and self.proxy_feasible is not False and self.family_feasible is not False

    @property
    def coefficients(self) -> tuple[float, float, float]:
        assert self.alpha is not None and self.beta is not None and self.gamma is not None
        return self.alpha, self.beta, self.gamma


@dataclass(frozen=True)
class ArchRecord(TrialRecord):
    """A block-level candidate: the full-size network, its costs and its reward."""

    spec: dict[str, Any] | None = None
    mflops: float | None = None
    params: int | None = None
    latency_ms: float | None = None
    reward: float | None = None


@dataclass(frozen=True)
class FrontierRunRecord(TrialRecord):
    """One proxy run of one frontier network with one seed."""

    frontier_run: list[Any] | None = None          # [network id, seed] or [network id, 0, fused seeds]
    members: list[str] | None = None               # "family phi" of every member that is this network
    resolution: int | None = None


@dataclass(frozen=True)
class RetrainRecord(TrialRecord):
    """One run of a named network at a budget and a seed: a confirmation's or a calibration's
    (nas.search.retrain)."""

    retrain_run: list[Any] | None = None           # [network id, epochs, images, seed]
    resolution: int | None = None


FRONTIER_MEMBER_SCHEMA = 1
"""Raised whenever what a FrontierMember describes, or how, changes: members stored under another schema
(or before schemas were numbered) are described again, not misread."""


@dataclass(frozen=True)
class FrontierMember:
    """One (family, phi) point of a frontier: the proxy network it trains and what it costs. Stored as a study
    attribute of the frontier study (`member:<family>:<phi>`) by the launcher, before any training.

    `request` is what the member was derived from (its family's coefficients, the family whose FLOPs
    baselines are matched to, the tolerance): a later run that asks the same is served from storage, since
    matching costs FLOP counts. `latency_conditions` are those of `measurement_conditions` (device, hardware,
    runtime, batch, threads, warm-up, repeats): a latency measured under others is measured again."""

    family: str                      # searched | paper | fast | width | depth | resolution | a study's name
    label: str                       # legend text
    kind: str                        # compound | single | fast
    phi: float
    network: str                     # id of the proxy network (members that coincide share it)
    width: float                     # multipliers relative to the study's proxy
    depth: float
    resolution: int
    params: int
    flops: float
    activations: int
    flops_vs_reference: float        # FLOPs over the reference family's member at this phi
    reference: str
    order: int                       # the family's place in the request (legend and table order)
    full_size_resolution: int        # the resolution of the full-size network whose latency stands for it
    request: dict[str, Any]
    alpha: float | None = None       # compound families only
    beta: float | None = None
    gamma: float | None = None
    matched: bool | None = None      # baselines: FLOPs within tolerance of the reference member
    latency_ms: float | None = None
    latency_conditions: dict[str, Any] | None = None
    schema: int = FRONTIER_MEMBER_SCHEMA

    def to_attrs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, d: Any) -> FrontierMember | None:
        """The member stored as `d`, or None when it was stored under another schema (or none)."""
        if not isinstance(d, dict) or d.get("schema") != FRONTIER_MEMBER_SCHEMA:
            return None
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def record(trial: optuna.Trial, kind: type[TrialRecord], **values: Any) -> None:
    """Store attributes of a trial of `kind`; a name the kind does not declare is a bug, raised at once."""
    unknown = set(values) - kind.attr_names()
    if unknown:
        raise KeyError(f"{kind.__name__} has no field {sorted(unknown)[0]!r}")
    for key, value in values.items():
        trial.set_user_attr(key, value)


def records(study: optuna.Study, kind: type[R], states: tuple[TrialState, ...] | None = None) -> list[R]:
    """Every trial of `study` as a `kind` record, in trial order (trials that stepped aside left out)."""
    trials = study.get_trials(deepcopy=False, states=states)
    return [r for r in (kind.from_trial(t) for t in trials) if not r.skipped]


@dataclass(frozen=True)
class HeldOutError:
    """A latency table's prediction error on whole networks it was neither built nor calibrated on
    (nas.latency.evaluate): stored with the table, shown wherever it is used, and what decides whether a
    search trusts it. Percentages are of the measured median, rounded as stored."""

    networks: int
    within_10_pct: float            # share of the networks predicted within 10 %, in per cent
    p90_abs_error_pct: float        # 90 % of the networks are predicted at least this well
    mean_abs_error_pct: float
    max_abs_error_pct: float
    bias_pct: float                 # mean signed error: > 0 when the table over-predicts
    spearman: float                 # rank correlation of predicted and measured medians (NaN: undefined)
    raw_mean_abs_error_pct: float   # the uncalibrated sums' mean abs error ...
    raw_bias_pct: float             # ... and bias

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeldOutError:
        """As `to_dict` wrote it (a latency table file's `held_out`); a missing figure is a KeyError."""
        figures = {f.name: float(d[f.name]) for f in dataclasses.fields(cls) if f.name != "networks"}
        return cls(networks=int(d["networks"]), **figures)
