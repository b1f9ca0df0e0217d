"""Does the proxy's answer hold? Its ranking, measured against a larger budget; read from storage.

A search ranks its candidates by a short proxy training: a bet that a longer training would order them the
same way. Published rank fidelity of cheap proxies is modest (Spearman 0.6-0.76 for zero-cost proxies on
NAS-Bench-201, about 0.6 for EcoNAS's reduced settings), and Bello et al. (NeurIPS 2021) found that the best
scaling rule depends on the training regime. Two measurements, each a study of retraining runs beside the
search (trained by nas.search.retrain), read back here without torch:

- confirmation ('<name>-confirm'): the leaders (the best `top`, and every candidate tied with the best)
  retrained at a larger budget (longer training on more images; the phi = 2 member on request) with several
  seeds. Kendall's tau-b between the proxy's ranking and the confirmation's, with a bootstrap interval over
  the candidates; whether the proxy's best is still the best, tied with it, or overturned; and the confirmed
  verdict, which the family then follows (`answer`).
- calibration ('<name>-calibrate'): a few candidates spread over the grid, trained at a ladder of budgets;
  the cheapest budget whose ranking agrees with the largest one's (tau-b at least `min_tau`) is the budget
  to search with: what EcoNAS (Zhou et al., CVPR 2020) chose by hand, measured on the user's own data.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.config import StudyConfig
from nas.errors import NasError, SearchAborted
from nas.records import CoefficientRecord, RetrainRecord, records
from nas.search.results import Run, candidates, runs_of, tie_set, verdict
from nas.search.storage import open_storage
from nas.statistics import PairedVerdict, TauInterval, tau_b_interval

CONFIRM, CALIBRATE = "confirm", "calibrate"
LEADERS, SAMPLED, SETTINGS, BUDGETS = "leaders", "sampled", "settings", "budgets"    # side-study attributes


@dataclass(frozen=True)
class Budget:
    """A training budget relative to the study's proxy: `epochs` times its optimizer steps (a budget rung's
    fraction, or a confirmation's multiple), on `images` times its training images (per_class or fraction
    scaled, as far as the data set has them). Validation is always the study's split: every budget scores on
    the same images, so rankings at two budgets compare image by image."""

    epochs: float = 1.0
    images: float = 1.0

    def data_config(self, config: StudyConfig) -> StudyConfig:
        """The study with its training subset scaled by `images` (the whole training split at most)."""
        p = config.proxy
        if self.images == 1 or (p.per_class is None and p.fraction is None):
            return config
        scaled = (dataclasses.replace(p, per_class=round(p.per_class * self.images)) if p.per_class is not None
                  else dataclasses.replace(p, fraction=min(1.0, (p.fraction or 1.0) * self.images)))
        return dataclasses.replace(config, proxy=scaled)

    def describe(self, config: StudyConfig) -> str:
        """'3x the training (9 epochs) on 60 images a class': what the budget trains, in the study's units."""
        p = self.data_config(config).proxy
        images = (f"{p.per_class} images a class" if p.per_class is not None else
                  f"{p.fraction:.0%} of the training split" if p.fraction is not None else "the whole training split")
        return f"{_as_fraction(self.epochs)}x the training ({self.epochs * config.proxy.train.epochs:.3g} epochs) on {images}"


def _as_fraction(x: float) -> str:
    """A budget as people write it: 1/3 for a rung's 0.333..., else as it is (3, 0.4)."""
    n = round(1 / x) if 0 < x < 1 else 0
    return f"1/{n}" if n > 1 and abs(n * x - 1) < 1e-9 else f"{x:g}"


def side_study(config: StudyConfig, suffix: str) -> optuna.Study | None:
    """The study `<name>-<suffix>` beside the search in its storage, or None when it was never run (a local
    database that does not exist is not created)."""
    url = config.storage_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None
    try:
        return optuna.load_study(study_name=f"{config.name}-{suffix}", storage=open_storage(url))
    except KeyError:
        return None


def retrained(study: optuna.Study) -> dict[tuple[str, Budget], list[Run]]:
    """The finished runs of a retraining study, per (network id, budget), in seed order."""
    out: dict[tuple[str, Budget], list[tuple[int, Run]]] = {}
    for r in records(study, RetrainRecord, states=(TrialState.COMPLETE,)):
        if r.retrain_run and r.seed_accuracies:
            net, epochs, images, seed = r.retrain_run
            out.setdefault((net, Budget(float(epochs), float(images))), []).append((int(seed), runs_of(r)[0]))
    return {k: [run for _, run in sorted(v)] for k, v in out.items()}


def _mean(runs: Sequence[Run]) -> float:
    return statistics.fmean(a for a, _ in runs)


# ------------------------------------------------------------------------------------- confirmation

@dataclass(frozen=True)
class Leader:
    record: CoefficientRecord          # the candidate as the search ranked it (its proxy runs)
    network: str                       # the id of the network the confirmation trains
    resolution: int


@dataclass(frozen=True)
class Confirmation:
    """The leaders' proxy runs beside their runs at the confirmation budget."""

    leaders: list[Leader]              # in the proxy's order
    confirmed: list[list[Run]]         # per leader, the confirmation's runs (seed order)
    budget: str                        # the confirmation budget in words
    phi: int
    tau: TauInterval                   # proxy means against confirmation means
    tied: list[int]                    # the confirmation's tie set (indices into leaders), best first
    paired: PairedVerdict | None

    @property
    def best(self) -> int:
        return self.tied[0]

    @property
    def outcome(self) -> str:
        """held (the proxy's best is the confirmed winner, or the best of a confirmed tie), tied (it is in the
        confirmed tie set but not its best), or overturned (the confirmation separates it from the best)."""
        if self.best == 0:
            return "held"
        return "tied" if 0 in self.tied else "overturned"

    def table(self) -> pd.DataFrame:
        order = sorted(range(len(self.leaders)), key=lambda i: -_mean(self.confirmed[i]))
        rank = {i: n + 1 for n, i in enumerate(order)}
        rows = []
        for i, (lead, runs) in enumerate(zip(self.leaders, self.confirmed)):
            r, proxy = lead.record, runs_of(lead.record)
            d = self.paired.differences[i] if self.paired is not None else None
            rows.append({"trial": r.number, "alpha": round(r.alpha or 0, 3), "beta": round(r.beta or 0, 3),
                         "gamma": round(r.gamma or 0, 3), "resolution": lead.resolution,
                         "proxy_rank": i + 1, "proxy_acc": round(_mean(proxy), 4), "proxy_seeds": len(proxy),
                         "confirmed_rank": rank[i], "confirmed_acc": round(_mean(runs), 4), "seeds": len(runs),
                         "vs_best": None if d is None else round(-d.mean, 4),
                         "vs_best_low": None if d is None else round(-d.high, 4),
                         "vs_best_high": None if d is None else round(-d.low, 4),
                         "tied_best": i in self.tied})
        return pd.DataFrame(rows)

    def sentences(self) -> list[str]:
        t, first = self.tau, self.leaders[0].record
        fidelity = (f"rank fidelity: Kendall tau-b {t.tau:.2f} (95 % interval {t.low:.2f} to {t.high:.2f}, over which "
                    f"{t.candidates} candidates were compared) between the proxy's ranking and the confirmation's"
                    if t.tau is not None and t.low is not None and t.high is not None else
                    f"rank fidelity: undefined (the {t.candidates} candidates' accuracies do not order them)")
        best = self.leaders[self.best].record
        who = f"trial {best.number} (alpha {best.alpha:.4g}, beta {best.beta:.4g}, gamma {best.gamma:.4g})"
        held = {"held": f"the proxy's best, trial {first.number}, is still the best",
                "tied": f"the proxy's best, trial {first.number}, is tied with the confirmation's best, {who}",
                "overturned": f"confirmation overturned the proxy: its best is {who}; the proxy's best, trial "
                              f"{first.number}, is separated from it"}[self.outcome]
        test = (f"{self.paired.test_words()} on the same validation images" if self.paired is not None
                else "the unpaired test")
        if len(self.tied) == 1:
            answer = f"confirmed verdict: winner {who}, {_mean(self.confirmed[self.best]):.4f} ({test})"
        else:
            answer = (f"confirmed verdict: no winner, {len(self.tied)} of {len(self.leaders)} candidates tied within "
                      f"the noise, best {who} at {_mean(self.confirmed[self.best]):.4f} ({test})")
        return [f"confirmation: {len(self.leaders)} leaders retrained at {self.budget}"
                + (", phi = 2 members" if self.phi == 2 else ""), fidelity, held, answer]


def confirmation(config: StudyConfig, study: optuna.Study) -> Confirmation | None:
    """The study's confirmation as it was last run (its leaders and settings are stored with it); None
    before one has run, or until every leader has a finished confirmation run."""
    side = side_study(config, CONFIRM)
    if side is None or LEADERS not in side.user_attrs:
        return None
    settings = side.user_attrs[SETTINGS]
    budget = Budget(settings["epochs"], settings["images"])
    by_number = {r.number: r for r in candidates(study)}
    chosen = [Leader(by_number[n], net, res) for n, net, res in side.user_attrs[LEADERS] if n in by_number]
    runs = retrained(side)
    confirmed = [runs.get((lead.network, budget), []) for lead in chosen]
    if len(chosen) < 2 or not all(confirmed):
        return None
    images = next((lead.record.val_images for lead in chosen if lead.record.val_images), None)
    tied, paired = tie_set(dict(enumerate(confirmed)), images)
    proxy = [[a for a, _ in runs_of(lead.record)] for lead in chosen]
    return Confirmation(chosen, confirmed, budget.describe(config), settings["phi"],
                        tau_b_interval(proxy, [[a for a, _ in c] for c in confirmed]), tied, paired)


def finished_confirmation(config: StudyConfig, study: optuna.Study) -> Confirmation:
    """The confirmation just run; SearchAborted when a leader's run failed, which leaves no confirmed verdict
    (each failed trial keeps its reason)."""
    result = confirmation(config, study)
    if result is None:
        raise SearchAborted(f"some confirmation runs failed; their reasons are in the trials of study "
                            f"{config.name}-confirm (optuna-dashboard, or nas scale show --storage)")
    return result


def answer(config: StudyConfig, study: optuna.Study) -> tuple[tuple[float, float, float], str | None]:
    """The coefficients a study's family is built from: the confirmed best when a confirmation has run, else
    the proxy's best; and, after a confirmation, one line saying what it did to the proxy's answer."""
    found = verdict(study)
    if found is None:
        raise NasError(f"study '{study.study_name}' has no finished feasible trial yet: run or resume it first")
    confirmed = confirmation(config, study)
    if confirmed is None:
        return found.best.coefficients, None
    best = confirmed.leaders[confirmed.best].record
    words = {"held": "confirmation held the proxy's best",
             "tied": f"confirmation tied the proxy's best with trial {best.number}; the family follows the "
                     f"confirmed best",
             "overturned": f"confirmation overturned the proxy's best (trial {found.best.number}): the family "
                           f"follows the confirmed best, trial {best.number}"}[confirmed.outcome]
    return best.coefficients, f"{words} ({confirmed.budget})"


# -------------------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Sampled:
    alpha: float
    beta: float
    gamma: float
    network: str


@dataclass(frozen=True)
class Calibration:
    sampled: list[Sampled]
    budgets: list[float]
    runs: list[list[list[Run]]]        # [budget][candidate] -> runs
    taus: list[TauInterval]            # each budget's ranking against the largest budget's
    min_tau: float

    @property
    def recommended(self) -> int | None:
        """The cheapest budget whose ranking agrees with the largest one's (tau-b >= min_tau); None: none does."""
        return next((i for i, t in enumerate(self.taus[:-1]) if t.tau is not None and t.tau >= self.min_tau), None)

    def accuracy(self) -> pd.DataFrame:
        """Each candidate's mean accuracy at each budget (candidate, budget, acc): the calibration figure's."""
        return pd.DataFrame([{"candidate": f"α {s.alpha:g}, β {s.beta:g}", "budget": b, "acc": _mean(runs)}
                             for b, per in zip(self.budgets, self.runs) for s, runs in zip(self.sampled, per)])

    def table(self) -> pd.DataFrame:
        rows = []
        for b, runs, t in zip(self.budgets, self.runs, self.taus):
            means = [_mean(r) for r in runs]
            best = max(range(len(means)), key=lambda i: means[i])
            rows.append({"budget": round(b, 4), **{k: None if v is None else round(v, 3) for k, v in
                                                    (("tau_b", t.tau), ("tau_low", t.low), ("tau_high", t.high))},
                         "best_alpha": self.sampled[best].alpha, "best_beta": self.sampled[best].beta,
                         "acc_min": round(min(means), 4), "acc_max": round(max(means), 4),
                         "agrees": t.tau is not None and t.tau >= self.min_tau})
        return pd.DataFrame(rows)

    def sentence(self) -> str:
        i, top = self.recommended, self.budgets[-1]
        if i is None:
            return (f"no budget below {top:g}x agrees with it (tau-b >= {self.min_tau:g}): search with {top:g}x the "
                    f"study's training, or add budgets between")
        t = self.taus[i]
        return (f"recommended proxy budget: {self.budgets[i]:.3g}x the study's training, the cheapest whose ranking of "
                f"{len(self.sampled)} candidates agrees with {top:g}x (Kendall tau-b {t.tau:.2f}, 95 % interval "
                f"{t.low:.2f} to {t.high:.2f}), {top / self.budgets[i]:.3g}x cheaper than the largest")


def calibration(config: StudyConfig, min_tau: float = 0.8) -> Calibration | None:
    """The study's calibration as it was last run (its candidates and budgets are stored with it); None before
    one has run, or until every (candidate, budget) has a finished run."""
    side = side_study(config, CALIBRATE)
    if side is None or SAMPLED not in side.user_attrs:
        return None
    sampled = [Sampled(*s) for s in side.user_attrs[SAMPLED]]
    budgets = [float(b) for b in side.user_attrs[BUDGETS]]
    done = retrained(side)
    runs = [[done.get((s.network, Budget(b)), []) for s in sampled] for b in budgets]
    if not all(r for per in runs for r in per):
        return None
    largest = [[a for a, _ in r] for r in runs[-1]]
    taus = [tau_b_interval([[a for a, _ in r] for r in per], largest) for per in runs]
    return Calibration(sampled, budgets, runs, taus, min_tau)
