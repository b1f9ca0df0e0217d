"""Frontiers: does the searched family beat the paper's coefficients and single-dimension scaling?

For phi = 0..k, members of these families are proxy-trained with the same budget and seeds:
- each searched family (a study's winning alpha, beta, gamma, or coefficients given by hand),
- the paper's coefficients (1.2, 1.1, 1.15),
- width only, depth only and resolution only, each solved per phi so that its measured FLOPs match
  the first searched family's member at that phi: the paper's single-dimension comparison.

Every member is a network of the study's proxy (the down-scaled base at the proxy resolution), the
network the accuracy belongs to, and its FLOPs, parameters and latency are those of that network.

Each (network, seed) is one Optuna trial in a study beside the search ('<name>-frontier', in the same
storage), so an interrupted frontier resumes, workers on several machines share it, and asking for more
phis or seeds later trains only what is new. Networks that coincide (every family's phi = 0 member is
the base) are trained once and shared. The members' descriptions are study attributes, one per
(family, phi), written by the launcher before any training, which is also when latency is measured, so
timings are not disturbed by training in other workers.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.latency import LatencySettings, measure_spec
from nas.pareto import pareto_front
from nas.proxy import resolve_device
from nas.scaling import PAPER_COEFFICIENTS, check_coefficients
from nas.search.constraint import ProxyFamily, network_key, proxy_family
from nas.search.runner import FAIL_REASON, all_finished, claim_queued, enqueue_missing, queued_key
from nas.search.scoring import describe_outcome, proxy_data, recording_failures, train_and_score, train_config
from nas.spec import NetworkSpec, spec_from_dict
from nas.study import StudyConfig

RUN = "frontier_run"          # user attr of an enqueued trial: [network id, seed]
MEMBER = "member:"            # study attr prefix: member:<family>:<phi> -> the member's description
NETWORK = "network:"          # study attr prefix: network:<id> -> the network's spec
SINGLE_DIMENSIONS = ("width", "depth", "resolution")
MAX_MULTIPLIER = 32.0         # single-dimension search range: up to 32x the base's width/depth/resolution


@dataclass(frozen=True)
class Family:
    """A line on the frontier: compound coefficients, or one dimension scaled alone."""

    name: str                 # searched | paper | width | depth | resolution | a study's name
    label: str                # legend text
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None

    @property
    def kind(self) -> str:
        return "single" if self.name in SINGLE_DIMENSIONS else "compound"


def compound_family(name: str, alpha: float, beta: float, gamma: float, what: str | None = None) -> Family:
    check_coefficients(alpha, beta, gamma)
    return Family(name, f"{what or name} (α {alpha:.3g}, β {beta:.3g}, γ {gamma:.3g})", alpha, beta, gamma)


def paper_family() -> Family:
    return compound_family("paper", *PAPER_COEFFICIENTS)


def single_families() -> list[Family]:
    return [Family(d, f"{d} only") for d in SINGLE_DIMENSIONS]


def network_id(spec: NetworkSpec) -> str:
    return hashlib.sha256(repr(network_key(spec)).encode()).hexdigest()[:12]


def match_flops(make: Callable[[float], NetworkSpec], flops: Callable[[NetworkSpec], float], target: float,
                guess: float = 2.0, close_enough: float = 0.01) -> tuple[float, NetworkSpec]:
    """A multiplier m >= 1 whose rounded network `make(m)` has measured FLOPs nearest `target`.

    FLOPs grow with m in steps (channels round to multiples of 8, repeats round up, feature maps to
    whole pixels), so a bracket around `guess` (widened until it holds the target), bisected, ends at the
    last network below the target and the first at or above it; the nearer of the two wins. Each
    distinct network costs one fvcore trace (about a second for a deep one), so the search stops early
    at a network within `close_enough` (1 %) of the target, and a close guess keeps huge networks from
    being traced at all."""
    lo, hi = 1.0, max(1.0, guess * 1.2)
    if flops(make(lo)) >= target:
        return lo, make(lo)
    if hi / 1.44 > lo and flops(make(hi / 1.44)) < target:
        lo = hi / 1.44
    while flops(make(hi)) < target:
        if hi >= MAX_MULTIPLIER:
            raise NasError(f"no network up to {MAX_MULTIPLIER:g}x matches {target / 1e6:.1f} MFLOPs: ask for "
                           f"fewer phis")
        lo, hi = hi, min(MAX_MULTIPLIER, hi * 1.5)
    def error(m: float) -> float:
        return abs(math.log(flops(make(m)) / target))

    while hi - lo > 1e-3 * lo and min(error(lo), error(hi)) > close_enough:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flops(make(mid)) < target else (lo, mid)
    m = min(lo, hi, key=error)
    return m, make(m)


@dataclass
class FrontierJob:
    """Proxy-train `families` at `phis`, `seeds` runs each, in the study `<config.name>-frontier`."""

    config: StudyConfig
    families: tuple[Family, ...]
    phis: tuple[float, ...]
    seeds: int = 3
    tolerance: float = 0.1            # single-dimension baselines must match FLOPs within this
    latency: LatencySettings | None = LatencySettings()
    directions = ["maximize"]
    needs_queue = True

    def __post_init__(self) -> None:
        if not any(f.kind == "compound" for f in self.families):
            raise NasError("a frontier needs a compound family to match the baselines to: give a study or coefficients")
        if self.seeds < 1:
            raise NasError(f"--seeds {self.seeds}: give 1 or more seeds per point")
        if not 0 < self.tolerance < 1:
            raise NasError(f"--tolerance {self.tolerance:g}: give a fraction in (0, 1), such as 0.1 for 10 %")
        if not self.phis or any(not (math.isfinite(p) and p >= 0) for p in self.phis):
            raise NasError(f"--phis {list(self.phis)}: give phi values >= 0, such as 0-3")

    @property
    def study_name(self) -> str:
        return f"{self.config.name}-frontier"

    def create_sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.config.seed + 1000 * worker)   # every run is queued

    def create_pruner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()     # every point trains its full budget

    # ----------------------------------------------------------------------------------- members
    def members(self, study: optuna.Study, progress: Callable[[str], None]) -> list[dict]:
        """Every requested (family, phi) member, described and stored in the study. Latency is measured
        once per network: a network measured before (in this study) keeps its figure."""
        data, proxy = proxy_data(self.config), proxy_family(self.config)
        shape = (data.in_channels, data.num_classes)

        def flops(spec: NetworkSpec) -> float:
            return float(flops_at(spec, spec.resolution, *shape))

        reference = next(f for f in self.families if f.kind == "compound")
        stored = study.user_attrs
        # One measurement per network, kept across runs: a shared network (phi = 0) has one latency.
        latencies = {m["network"]: m["latency_ms"] for m in _members(stored) if "latency_ms" in m}
        out = []
        for phi in sorted(self.phis):
            ref_spec = self._compound(proxy, reference, phi)
            for family in self.families:
                key = f"{MEMBER}{family.name}:{phi:g}"
                old = stored.get(key)
                # A member stored by an earlier run of the same request is reused: matching costs traces.
                signature = repr((family, reference, self.tolerance))
                if old and old.get("signature") == signature and (self.latency is None or "latency_ms" in old):
                    out.append(old)
                    continue
                if family.kind == "compound":
                    spec = self._compound(proxy, family, phi)
                else:    # nominal guess: FLOPs grow with depth, and with width and resolution squared
                    ratio = flops(ref_spec) / flops(proxy.phi0)
                    guess = ratio if family.name == "depth" else math.sqrt(ratio)
                    _, spec = match_flops(lambda m: self._single(proxy, family.name, m), flops, flops(ref_spec),
                                          guess)
                net = network_id(spec)
                member = {
                    "family": family.name, "label": family.label, "kind": family.kind, "phi": phi,
                    "alpha": family.alpha, "beta": family.beta, "gamma": family.gamma, "network": net,
                    "width": spec.width_mult / proxy.width, "depth": spec.depth_mult / proxy.depth,
                    "resolution": spec.resolution, "params": params_of(spec, *shape), "flops": flops(spec),
                    "flops_vs_reference": flops(spec) / flops(ref_spec), "reference": reference.name,
                    "order": self.families.index(family), "signature": signature,
                }
                # Baselines only: compound families sit where their coefficients put them.
                member["matched"] = (abs(member["flops_vs_reference"] - 1) <= self.tolerance
                                     if family.kind == "single" else None)
                if member["matched"] is False:
                    progress(f"warning: {family.label} at phi {phi:g} comes no closer than "
                             f"{member['flops_vs_reference']:.2f}x the {reference.name} member's FLOPs (rounding "
                             f"steps are coarse in this proxy); it is trained and plotted at its own FLOPs")
                if self.latency is not None and net not in latencies:
                    progress(f"measuring latency of {family.name} phi {phi:g} ({spec.resolution} px) on "
                             f"{self.latency.device}")
                    latencies[net] = measure_spec(spec, self.latency, spec.resolution, *shape).median_ms
                if net in latencies:
                    member["latency_ms"] = latencies[net]
                if old != member:
                    study.set_user_attr(key, member)
                if f"{NETWORK}{net}" not in stored:
                    study.set_user_attr(f"{NETWORK}{net}", spec.to_dict())
                out.append(member)
        return out

    @staticmethod
    def _compound(proxy: ProxyFamily, f: Family, phi: float) -> NetworkSpec:
        return proxy.member(f.alpha ** phi, f.beta ** phi, f.gamma ** phi)   # type: ignore[operator]

    @staticmethod
    def _single(proxy: ProxyFamily, dimension: str, m: float) -> NetworkSpec:
        return proxy.member(*{"depth": (m, 1.0, 1.0), "width": (1.0, m, 1.0), "resolution": (1.0, 1.0, m)}[dimension])

    def runs(self, members: list[dict]) -> list[tuple[str, int]]:
        networks = list(dict.fromkeys(m["network"] for m in members))
        return [(net, k) for net in networks for k in range(self.seeds)]

    # -------------------------------------------------------------------------------- protocol
    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None:
        members = self.members(study, progress)
        runs = self.runs(members)
        study.set_user_attr("requested", [list(r) for r in runs])
        new = enqueue_missing(study, RUN, [(run, {}) for run in runs])
        if new:
            progress(f"frontier: {len(members)} members, {len(runs) // self.seeds} distinct networks x "
                     f"{self.seeds} seeds; {new} run(s) queued")

    def done(self, study: optuna.Study) -> bool:
        return all_finished(study, RUN, [tuple(r) for r in study.user_attrs.get("requested", [])])

    def objective(self, threads: int | None) -> Callable[[optuna.Trial], float]:
        data = proxy_data(self.config)
        train_cfg = train_config(self.config, threads)
        device = str(resolve_device(train_cfg.device))

        def evaluate(trial: optuna.Trial) -> float:
            start = time.perf_counter()
            net, seed = claim_queued(trial, RUN)
            attrs = trial.study.user_attrs
            spec = spec_from_dict(attrs[f"{NETWORK}{net}"])
            trial.set_user_attr("members", [f"{m['family']} phi {m['phi']:g}" for m in _members(attrs)
                                            if m["network"] == net])
            trial.set_user_attr("resolution", spec.resolution)
            trial.set_user_attr("device", device)
            return train_and_score(trial, spec, data, train_cfg, 1, self.config.seed + seed, start, prune=False)

        return recording_failures(evaluate)

    def describe(self, t: FrozenTrial) -> str:
        key = queued_key(t, RUN)
        if key is None:
            return t.user_attrs.get(FAIL_REASON, "no run")
        net, seed = key
        names = ", ".join(t.user_attrs.get("members", [])) or f"network {net}"
        return f"{names} ({t.user_attrs.get('resolution', '?')} px), seed {seed}" + describe_outcome(t)


def _members(attrs: dict) -> list[dict]:
    return [v for k, v in attrs.items() if k.startswith(MEMBER)]


# ------------------------------------------------------------------------------------------ results

def frontier_table(study: optuna.Study) -> pd.DataFrame:
    """One row per (family, phi) member: its coefficients, size, cost, and the accuracy of its network
    over every finished seed (mean, standard deviation, min, max), with the accuracy-vs-FLOPs Pareto
    front marked. Members without a finished run have NaN accuracy and 0 seeds."""
    accuracies: dict[str, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = queued_key(t, RUN)
        if key is not None and "acc_mean" in t.user_attrs:
            accuracies.setdefault(key[0], []).append(t.user_attrs["acc_mean"])
    rows = []
    for m in sorted(_members(study.user_attrs), key=lambda m: (m["order"], m["phi"])):
        accs = accuracies.get(m["network"], [])
        rows.append({
            "family": m["family"], "label": m["label"], "kind": m["kind"], "phi": m["phi"],
            "alpha": m["alpha"], "beta": m["beta"], "gamma": m["gamma"],
            "width": m["width"], "depth": m["depth"], "resolution": m["resolution"], "params": m["params"],
            "mflops": m["flops"] / 1e6, "flops_vs_reference": m["flops_vs_reference"], "matched": m["matched"],
            "latency_ms": m.get("latency_ms", math.nan),
            "acc_mean": statistics.fmean(accs) if accs else math.nan,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else math.nan),
            "acc_min": min(accs, default=math.nan), "acc_max": max(accs, default=math.nan),
            "seeds": len(accs), "network": m["network"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    trained = df[df["seeds"] > 0]
    front = set(trained.index[pareto_front(list(zip(trained["acc_mean"], trained["mflops"])), ["maximize", "minimize"])])
    df["pareto"] = [i in front for i in df.index]
    return df.round({"alpha": 4, "beta": 4, "gamma": 4, "width": 4, "depth": 4, "mflops": 3, "flops_vs_reference": 4, "latency_ms": 4,
                     "acc_mean": 4, "acc_std": 4, "acc_min": 4, "acc_max": 4})
