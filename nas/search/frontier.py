"""Frontiers: does the searched family beat the paper's coefficients and single-dimension scaling?

For phi = 0..k, members of these families are proxy-trained with the same budget and seeds:
- each searched family (a study's winning alpha, beta, gamma, or coefficients given by hand),
- the paper's coefficients (1.2, 1.1, 1.15),
- width only, depth only and resolution only, each solved per phi so that its measured FLOPs match
  the first searched family's member at that phi: the paper's single-dimension comparison;
- fast scaling (Dollar, Singh, Girshick 2021: width s^0.4, depth s^0.1, resolution s^0.05 of a FLOPs
  factor s), matched the same way: a rule chosen for runtime, whose activations grow about as s^0.6.

Every member is a network of the study's proxy (the down-scaled base at the proxy resolution), the
network the accuracy belongs to, and its FLOPs and parameters are those of that network. Its latency is
that of the full-size network it stands for (the study's base at the member's width and depth
multipliers, its resolution scaled as the proxy's), as the search's constraint costs it: a proxy of a few
MFLOPs runs in the framework's per-layer overhead, which says nothing of how its family runs deployed. A
compound member's resolution is solved on the proxy's measured FLOPs so that it costs c^phi times the
phi = 0 member (gamma^phi alone misses on small proxies: feature maps grow in steps), so every family
is compared at the same costs, and the baselines are matched to those.

Each (network, seed) is one Optuna trial in a study beside the search ('<name>-frontier', in the same
storage), so an interrupted frontier resumes, workers on several machines share it, and asking for more
phis or seeds later trains only what is new. Networks that coincide (every family's phi = 0 member is
the base) are trained once and shared. The members' descriptions are study attributes, one per
(family, phi), written by the launcher before any training, which is also when latency is measured (every
network in one interleaved measurement), so timings are not disturbed by training in other workers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from nas.config import LatencySettings, StudyConfig
from nas.cost import flops_cost
from nas.device import resolve_device
from nas.errors import NasError
from nas.flops import activations_at, flops_at, params_of
from nas.latency import measure_specs, measurement_conditions
from nas.proxy import fuses_seeds
from nas.records import FrontierMember, FrontierRunRecord, record
from nas.scaling import MAX_MULTIPLIER, PAPER_COEFFICIENTS, check_coefficients, fast_multipliers, target_member
from nas.search.constraint import ProxyFamily, network_id, proxy_family, solve_proxy
from nas.search.results import MEMBER, frontier_table, stored_members
from nas.search.runner import SideJob, all_finished, claim_queued, enqueue_missing
from nas.search.scoring import describe_outcome, proxy_data, recording_failures, train_and_score
from nas.spec import NetworkSpec, load_spec, spec_from_dict
from nas.validation import InvalidField

RUN = "frontier_run"          # FrontierRunRecord.frontier_run: [network id, seed(, fused seeds)] of an enqueued trial
NETWORK = "network:"          # study attr prefix: network:<id> -> the network's spec
SINGLE_DIMENSIONS = ("width", "depth", "resolution")
FAST = "fast"


@dataclass(frozen=True)
class Family:
    """A line on the frontier: compound coefficients, or a baseline matched to their FLOPs (one
    dimension scaled alone, or fast scaling)."""

    name: str                 # searched | paper | fast | width | depth | resolution | a study's name
    label: str                # legend text
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None

    @property
    def kind(self) -> str:
        return "single" if self.name in SINGLE_DIMENSIONS else FAST if self.name == FAST else "compound"


def compound_family(name: str, alpha: float, beta: float, gamma: float, what: str | None = None) -> Family:
    check_coefficients(alpha, beta, gamma)
    return Family(name, f"{what or name} (α {alpha:.3g}, β {beta:.3g}, γ {gamma:.3g})", alpha, beta, gamma)


def paper_family() -> Family:
    return compound_family("paper", *PAPER_COEFFICIENTS)


def single_families() -> list[Family]:
    return [Family(d, f"{d} only") for d in SINGLE_DIMENSIONS]


def fast_family() -> Family:
    return Family(FAST, "fast scaling (Dollár et al.)")


KNOWN_FAMILIES = ("searched", "paper", FAST, *SINGLE_DIMENSIONS)


def searched_families(configs: list[StudyConfig], studies: list[optuna.Study],
                      given: tuple[float, float, float] | None) -> list[Family]:
    """The compound families to compare: coefficients given by hand, then each study's winner."""
    from nas.search.results import best_coefficients

    families = [compound_family("given", *given)] if given else []
    for cfg, study in zip(configs, studies):
        if cfg.arch is not None:
            raise NasError(f"{cfg.source} is a block-level search: export its best network (nas arch export), "
                           f"run a coefficient search on it, and give that study")
        try:
            coefficients = best_coefficients(study)
        except NasError:
            if given:
                continue      # the study only lends its proxy to the coefficients given
            raise
        name = "searched" if len(configs) == 1 else cfg.name
        families.append(compound_family(name, *coefficients, what=f"searched: {cfg.name}"))
    return families


def _proxy_identity(cfg: StudyConfig) -> dict:
    return {"space": cfg.space, "proxy": cfg.to_dict()["proxy"], "seed": cfg.seed}


@dataclass(frozen=True)
class FrontierPlan:
    job: FrontierJob
    search_table: pd.DataFrame        # the first study's trials (its grid figure)


def plan_frontier(study_args: Sequence[str], storage: str | None, families: Sequence[str],
                  given: tuple[float, float, float] | None, phis: Sequence[float], seeds: int,
                  tolerance: float, latency_device: str | None) -> FrontierPlan:
    """The frontier asked for: the studies that lend their proxy and winners, the families (names of
    KNOWN_FAMILIES, "searched" among them) at `phis` with `seeds` each, and where latency is timed (None:
    not at all; "": the study's search.latency device)."""
    from nas.search.results import trials_table
    from nas.search.storage import find_study_config, load_stored_study

    configs = [find_study_config(s, storage) for s in study_args]
    studies = [load_stored_study(c.name, c.storage_url())[0] for c in configs]
    cfg = configs[0]
    for other in configs[1:]:
        if _proxy_identity(other) != _proxy_identity(cfg):
            raise NasError(f"studies {cfg.name} and {other.name} train different proxies (base, data or budget): "
                           f"a frontier compares families on one proxy; run one frontier per study")
    chosen = searched_families(configs, studies, given)
    if "paper" in families:
        chosen.append(paper_family())
    chosen += [f for f in (fast_family(), *single_families()) if f.name in families]
    latency = None
    if latency_device is not None:
        latency = cfg.search.latency
        if latency_device:
            latency = dataclasses.replace(latency, device=latency_device)
    job = FrontierJob(cfg, tuple(chosen), tuple(phis), seeds=seeds, tolerance=tolerance, latency=latency)
    return FrontierPlan(job, trials_table(studies[0]))


def frontier_results(job: FrontierJob, study: optuna.Study) -> pd.DataFrame:
    """The frontier table restricted to what `job` asked for (a study may hold more phis or families)."""
    table = frontier_table(study)
    table = table[table["family"].isin([f.name for f in job.families]) & table["phi"].isin(job.phis)]
    return table.reset_index(drop=True)


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
class FrontierJob(SideJob):
    """Proxy-train `families` at `phis`, `seeds` runs each, in the study `<config.name>-frontier`."""

    families: tuple[Family, ...]
    phis: tuple[float, ...]
    seeds: int = 3
    tolerance: float = 0.1            # single-dimension baselines must match FLOPs within this
    latency: LatencySettings | None = LatencySettings()
    suffix: str = dataclasses.field(default="frontier", kw_only=True)

    def __post_init__(self) -> None:
        if not any(f.kind == "compound" for f in self.families):
            raise NasError("a frontier needs a compound family to match the baselines to: give a study or coefficients")
        if self.seeds < 1:
            raise InvalidField("seeds", self.seeds, "1 or more seeds per point")
        if not 0 < self.tolerance < 1:
            raise InvalidField("tolerance", self.tolerance, "a fraction in (0, 1), such as 0.1 for 10 %")
        if not self.phis or any(not (math.isfinite(p) and p >= 0) for p in self.phis):
            raise InvalidField("phis", list(self.phis), "phi values >= 0, such as 0-3")

    # ----------------------------------------------------------------------------------- members
    @staticmethod
    def full_size(base: NetworkSpec, proxy: ProxyFamily, spec: NetworkSpec) -> NetworkSpec:
        """The deployed network a proxy member stands for: the study's `base` (its own stem) at the member's
        width and depth multipliers, at the base's resolution scaled as the member's is from the proxy's."""
        return target_member(base, spec.depth_mult / proxy.depth, spec.width_mult / proxy.width,
                             round(base.resolution * spec.resolution / proxy.resolution))

    def members(self, study: optuna.Study, progress: Callable[[str], None]) -> list[FrontierMember]:
        """Every requested (family, phi) member, described and stored in the study. A member stored by an
        earlier run of the same request is reused (matching costs FLOP counts). Latency is that of the member's
        full-size network (`full_size`), all those not measured before under these conditions timed in one
        interleaved measurement; it is kept per network and conditions, and other conditions measure again."""
        data, proxy, deployed = proxy_data(self.config), proxy_family(self.config), load_spec(self.config.space)
        shape = (data.in_channels, data.num_classes)

        def flops(spec: NetworkSpec) -> float:
            return float(flops_at(spec, spec.resolution, *shape))

        reference = next(f for f in self.families if f.kind == "compound")
        stored = study.user_attrs
        conditions = None if self.latency is None else {
            **measurement_conditions(self.latency), "warmup": self.latency.warmup, "repeats": self.latency.repeats}
        # One measurement per network and conditions, kept across runs: a shared network (phi = 0) has one.
        latencies = {m.network: m.latency_ms for m in stored_members(stored)
                     if m.latency_ms is not None and m.latency_conditions == conditions}
        described: list[tuple[str, FrontierMember | None, FrontierMember, NetworkSpec]] = []
        to_time: dict[str, NetworkSpec] = {}

        def compound(f: Family, phi: float) -> NetworkSpec:
            """A compound member on the proxy, its resolution solved so it costs target^phi times phi = 0
            (exact cost, as the search's proxies and the materialized families are)."""
            if phi == 0:
                return proxy.phi0
            a, b, g = f.alpha ** phi, f.beta ** phi, f.gamma ** phi     # type: ignore[operator]
            return solve_proxy(proxy, a, b, g, flops_cost(*shape), target ** phi, self.tolerance).spec

        target = self.config.search.target
        for phi in sorted(self.phis):
            ref_spec = None
            for family in self.families:
                key = f"{MEMBER}{family.name}:{phi:g}"
                old = FrontierMember.from_attrs(stored.get(key))
                request = {"family": dataclasses.asdict(family), "reference": dataclasses.asdict(reference),
                           "tolerance": self.tolerance}
                if old is not None and old.request == json.loads(json.dumps(request)):
                    member, spec = old, spec_from_dict(stored[f"{NETWORK}{old.network}"])
                else:
                    ref_spec = ref_spec or compound(reference, phi)
                    member, spec = self._describe(family, phi, proxy, shape, ref_spec, reference.name, request,
                                                  flops, compound, progress)
                    member = dataclasses.replace(member, full_size_resolution=self.full_size(deployed, proxy,
                                                                                            spec).resolution)
                if self.latency is not None and member.network not in latencies:
                    to_time[member.network] = self.full_size(deployed, proxy, spec)
                described.append((key, old, member, spec))
        if to_time and self.latency is not None:
            progress(f"measuring the latency of {len(to_time)} full-size networks on {self.latency.device}")
            timed = measure_specs(list(to_time.values()), self.latency, progress=progress)
            latencies.update((net, lat.median_ms) for net, lat in zip(to_time, timed))
        out = []
        for key, old, member, spec in described:
            if member.network in latencies:
                member = dataclasses.replace(member, latency_ms=latencies[member.network],
                                             latency_conditions=conditions)
            if old != member:
                study.set_user_attr(key, member.to_attrs())
            if f"{NETWORK}{member.network}" not in stored:
                study.set_user_attr(f"{NETWORK}{member.network}", spec.to_dict())
            out.append(member)
        return out

    def _describe(self, family: Family, phi: float, proxy: ProxyFamily, shape: tuple[int, int], ref_spec: NetworkSpec,
                  reference: str, request: dict[str, Any], flops: Callable[[NetworkSpec], float],
                  compound: Callable[[Family, float], NetworkSpec],
                  progress: Callable[[str], None]) -> tuple[FrontierMember, NetworkSpec]:
        """A member newly described: a compound family's at its coefficients (solved to exact cost), a baseline's
        matched to the reference member's FLOPs; warnings where rounding keeps either off its mark."""
        target = self.config.search.target
        if family.kind == "compound":
            spec = compound(family, phi)
            ratio = flops(spec) / flops(proxy.phi0)
            if abs(ratio / target ** phi - 1) > self.tolerance:
                progress(f"warning: {family.label} at phi {phi:g} costs {ratio:.2f}x the phi = 0 member "
                         f"where {target ** phi:g}x is asked: no proxy resolution comes closer")
        else:    # nominal guess: FLOPs grow with depth and fast's factor, with width and resolution squared
            ratio = flops(ref_spec) / flops(proxy.phi0)
            guess = ratio if family.name in ("depth", FAST) else math.sqrt(ratio)
            _, spec = match_flops(functools.partial(self._baseline, proxy, family.name), flops, flops(ref_spec), guess)
        vs_reference = flops(spec) / flops(ref_spec)
        # Baselines only: compound families sit where their coefficients put them.
        matched = abs(vs_reference - 1) <= self.tolerance if family.kind != "compound" else None
        if matched is False:
            progress(f"warning: {family.label} at phi {phi:g} comes no closer than {vs_reference:.2f}x the "
                     f"{reference} member's FLOPs (rounding steps are coarse in this proxy); it is trained and "
                     f"plotted at its own FLOPs")
        member = FrontierMember(
            family=family.name, label=family.label, kind=family.kind, phi=phi, network=network_id(spec),
            width=spec.width_mult / proxy.width, depth=spec.depth_mult / proxy.depth, resolution=spec.resolution,
            params=params_of(spec, *shape), flops=flops(spec), activations=activations_at(spec, spec.resolution, *shape),
            flops_vs_reference=vs_reference,
            reference=reference, order=self.families.index(family), full_size_resolution=0, request=request,
            alpha=family.alpha, beta=family.beta, gamma=family.gamma, matched=matched)
        return member, spec

    @staticmethod
    def _baseline(proxy: ProxyFamily, name: str, m: float) -> NetworkSpec:
        """A FLOPs-matched baseline's member at multiplier m: one dimension scaled by m, or fast scaling
        of a FLOPs factor m."""
        if name == FAST:
            f = fast_multipliers(m)
            return proxy.member(f.depth, f.width, f.resolution)
        return proxy.member(*{"depth": (m, 1.0, 1.0), "width": (1.0, m, 1.0), "resolution": (1.0, 1.0, m)}[name])

    def runs(self, members: list[FrontierMember]) -> list[tuple]:
        """The queued runs: (network, seed) each, or, where seeds train fused (proxy.fuses_seeds: on CUDA by
        default), (network, 0, seeds): every seed of a network in one job."""
        networks = list(dict.fromkeys(m.network for m in members))
        train_cfg = self.config.proxy.train
        if self.seeds > 1 and fuses_seeds(train_cfg, resolve_device(train_cfg.device)):
            return [(net, 0, self.seeds) for net in networks]
        return [(net, k) for net in networks for k in range(self.seeds)]

    # -------------------------------------------------------------------------------- protocol
    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None:
        members = self.members(study, progress)
        runs = self.runs(members)
        study.set_user_attr("requested", [list(r) for r in runs])
        new = enqueue_missing(study, RUN, [(run, {}) for run in runs])
        if new:
            networks = len({run[0] for run in runs})
            progress(f"frontier: {len(members)} members, {networks} distinct networks x {self.seeds} seeds; "
                     f"{new} run(s) queued")

    def done(self, study: optuna.Study) -> bool:
        return all_finished(study, RUN, [tuple(r) for r in study.user_attrs.get("requested", [])])

    def objective(self) -> Callable[[optuna.Trial], float]:
        data = proxy_data(self.config)
        train_cfg = self.config.proxy.train
        device = str(resolve_device(train_cfg.device))

        def evaluate(trial: optuna.Trial) -> float:
            start = time.perf_counter()
            net, seed, *fused = claim_queued(trial, RUN)
            attrs = trial.study.user_attrs
            spec = spec_from_dict(attrs[f"{NETWORK}{net}"])
            record(trial, FrontierRunRecord, members=[f"{m.family} phi {m.phi:g}" for m in stored_members(attrs)
                                                      if m.network == net],
                   resolution=spec.resolution, device=device)
            seeds = fused[0] if fused else 1
            return train_and_score(trial, spec, data, train_cfg, seeds, self.config.seed + seed, start, prune=False)

        return recording_failures(evaluate)

    def describe(self, t: FrozenTrial) -> str:
        r = FrontierRunRecord.from_trial(t)
        if not r.frontier_run:
            return r.fail_reason or "no run"
        net, seed, *fused = r.frontier_run
        names = ", ".join(r.members or []) or f"network {net}"
        seeds = f"seeds {seed}-{seed + fused[0] - 1} fused" if fused else f"seed {seed}"
        return f"{names} ({r.resolution or '?'} px), {seeds}" + describe_outcome(r)


