"""A study from Python: load it, run it, read what it found, and materialize a family, as typed objects.

The notebook's counterpart of `nas scale run|show`, `nas arch run|show` and `nas materialize`: the same jobs,
the same verdict in the same words, the same families, returned instead of printed (docs/python.md). Thin on
purpose: the work is the searches' (nas.search) and the family's (nas.family); what is here turns their
results into objects a notebook reads (`StudyResult`, `Family`) and gives the three functions that take a
study by name or file one place. `import nas` reaches these through its lazy attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from nas.config import StudyConfig
from nas.errors import NasError

if TYPE_CHECKING:          # pandas, Optuna and torch load with the first call, not with `import nas`
    import optuna
    import pandas as pd

    from nas.family import Member
    from nas.spec import NetworkSpec


class Coefficients(NamedTuple):
    """Compound-scaling coefficients at phi = 1: depth alpha, width beta, resolution gamma (exact, unrounded).
    A tuple, so `alpha, beta, gamma = result.best` works and a plain (1.2, 1.1, 1.15) is accepted wherever
    these are."""

    alpha: float
    beta: float
    gamma: float


@dataclass(frozen=True, eq=False)
class StudyResult:
    """What a study found, read from its storage.

    A coefficient search: `verdict` is the sentence every screen prints (a winner separated beyond the noise,
    or a named tie), `tie` and `tied` its tie set (best first; the best alone for a winner), `details` the
    lines `nas scale show` prints under it (how ties were decided, rank stability, the confirmation), and
    `best` the coefficients the family follows: the confirmed best once a confirmation has run (`confirmed`
    says what it did to the search's answer), else the search's best. A block-level search has no
    coefficients (`best` is None): its trials table ranks rewards or marks the Pareto set (`best` column).
    `str(result)` is the verdict block as the command line prints it.
    """

    config: StudyConfig = dataclasses.field(repr=False)
    trials: pd.DataFrame = dataclasses.field(repr=False)   # trials_table (best first) or arch_table
    verdict: str
    best: Coefficients | None = None
    tie: bool = False
    tied: tuple[Coefficients, ...] = ()
    details: tuple[str, ...] = ()
    confirmed: str | None = None

    def __str__(self) -> str:
        return ".\n".join([self.verdict, *self.details]) + "."


@dataclass(frozen=True, eq=False)
class Family:
    """Family members in phi order and their table (params, measured GFLOPs and activations, the cost ratio to
    the base next to target^phi). `family[3]` is the phi = 3 member's network (by name works too), ready for
    `build_model`; iterating gives every member's network. `drift` says how far the measured cost strays from
    target^phi at the worst member, `solved_on` on which cost the members' resolutions were solved."""

    members: tuple[Member, ...]
    table: pd.DataFrame = dataclasses.field(repr=False)
    drift: str
    solved_on: str | None = None    # what each resolution was solved on ("FLOPs", ...); None: taken as given

    def __getitem__(self, key: float | str) -> NetworkSpec:
        for phi, spec in self.members:
            if key == spec.name or (not isinstance(key, str) and key == phi):
                return spec
        raise KeyError(f"no member {key!r} in this family: it has phi {', '.join(f'{p:g}' for p, _ in self.members)} "
                       f"({', '.join(s.name for _, s in self.members)})")

    def __iter__(self) -> Iterator[NetworkSpec]:
        return (spec for _, spec in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Family({', '.join(spec.name for _, spec in self.members)})"


def load_study(study: str | Path, storage: str | None = None) -> StudyConfig:
    """A study's definition, validated: from a study file, a packaged example's name (quickstart), or the name
    of a stored study (runs/<name>/, or in `storage`, a URL such as postgresql://...), whose definition is kept
    with it. Errors are one-line NasErrors naming the file, the field and what is allowed."""
    from nas.search.storage import find_study_config

    return find_study_config(str(study), storage)


def run_study(study: StudyConfig | str | Path, *, workers: int | None = None, storage: str | None = None,
              gpus: Sequence[int] | None = None) -> StudyResult:
    """Run or resume a study as `nas scale run` / `nas arch run` do (progress on stderr; a finished study
    resumes with nothing to train), then its confirmation when the study asks for one (confirm.run), and
    return what it found. `workers` > 1 trains in that many processes, on CUDA one GPU each (`gpus`: which);
    None: the study file's `workers`.
    Interrupting keeps every finished trial: run it again to resume."""
    from nas.search.runner import run_search

    config = study if isinstance(study, StudyConfig) else load_study(study, storage)
    if storage:
        config = dataclasses.replace(config, storage=storage)
    if config.arch is not None:
        from nas.search.arch import ArchJob

        stored = run_search(ArchJob(config), workers=workers, gpus=gpus)
    else:
        from nas.search.scale import ScaleJob

        stored = run_search(ScaleJob(config), workers=workers, gpus=gpus)
        if config.confirm.run:
            _confirm(config, stored, workers, gpus)
    return _read(config, stored)


def study_result(study: str | Path, storage: str | None = None) -> StudyResult:
    """What a stored study found, without running anything: by name (runs/<name>/, or in `storage`), or by its
    study file."""
    from nas.search.storage import load_stored_study

    config = load_study(study, storage)
    stored, _ = load_stored_study(config.name, config.storage_url())
    return _read(config, stored)


def _confirm(config: StudyConfig, stored: optuna.Study, workers: int | None, gpus: Sequence[int] | None) -> None:
    """The confirmation stage (confirm.run): the leaders retrained at the confirmation budget."""
    from nas.search.confirm import finished_confirmation
    from nas.search.retrain import confirmation_job
    from nas.search.runner import run_search

    run_search(confirmation_job(config, stored, config.confirm), workers=workers, gpus=gpus)
    finished_confirmation(config, stored)


def _read(config: StudyConfig, stored: optuna.Study) -> StudyResult:
    if config.arch is not None:
        return _arch_result(config, config.arch.metrics, stored)
    from nas.search.confirm import answer, confirmation
    from nas.search.results import state_counts, trials_table, verdict

    table = trials_table(stored)
    found = verdict(stored)
    if found is None:
        counts = f" ({state_counts(table)})" if not table.empty else ""
        return StudyResult(config, table, f"no verdict: no candidate finished with an accuracy{counts}; the "
                                          f"reasons are in the trials' reason column")
    coefficients, confirmed_words = answer(config, stored)
    confirmed = confirmation(config, stored)
    return StudyResult(
        config, table.sort_values(["rank", "trial"], na_position="last").reset_index(drop=True),
        found.sentence(), Coefficients(*coefficients), found.is_tie,
        tuple(Coefficients(*r.coefficients) for r in found.tied),
        (f"ties: {found.test_words()}", found.stability(), *(confirmed.sentences() if confirmed else ())),
        confirmed_words)


def _arch_result(config: StudyConfig, metrics: Sequence[str], stored: optuna.Study) -> StudyResult:
    """A block-level search: its best trial by reward, or its Pareto set, in one line."""
    from nas.search.results import arch_table, state_counts

    table = arch_table(stored)
    if table.empty or table["best"].isna().all():
        counts = f" ({state_counts(table)})" if not table.empty else ""
        return StudyResult(config, table, f"no complete trial yet{counts}")
    ranked = table[table["best"].notna()].sort_values("best")
    if len(stored.directions) > 1:
        words = (f"Pareto set of {len(ranked)} trial(s) over {', '.join(metrics)}: "
                 f"trials {', '.join(str(n) for n in ranked['trial'])}")
    else:
        top = ranked.iloc[0]
        words = (f"best by reward: trial {top['trial']}, accuracy {top['acc_mean']:.4f}, {top['mflops']:.1f} MFLOPs, "
                 f"reward {top['reward']:.4f}")
    return StudyResult(config, table, words)


def materialize(source: StudyResult | Coefficients | tuple[float, float, float] | Literal["paper"],
                phis: Iterable[float] = range(8), *, space: str | Path | None = None, exact_cost: bool | None = None,
                resolution_multiple: int = 1, progress: Callable[[str], None] | None = None) -> Family:
    """A family, as `nas materialize` builds it (the command calls this), from one of:

    - a coefficient study's result: the family its run builds (nas.family.study_family), each member's resolution
      solved so that its cost (FLOPs, or the study's activations or latency) is target^phi times the base's;
      `exact_cost=False` takes gamma^phi as the compound rule has it instead;
    - coefficients (alpha, beta, gamma): the compound rule as it is, or with `exact_cost=True` resolutions solved
      on measured FLOPs (nas.family.exact_cost_family);
    - "paper": the paper's B0..B7 table, phi k standing for Bk.

    `space` is the base network (a packaged name or a YAML path; default efficientnet_b0, or the study's);
    `resolution_multiple` rounds the compound rule's resolutions (gamma^phi) to a multiple of it."""
    from nas.family import compound_family, exact_cost_family, family_table, paper_family, study_family, worst_deviation
    from nas.spec import load_spec

    phis = [float(p) for p in phis]
    if isinstance(source, StudyResult):
        if source.best is None:
            raise NasError(f"study '{source.config.name}' has no coefficients to build a family from: "
                           + ("export a block-level trial's network (nas arch export) and scale it with a coefficient "
                              "study" if source.config.arch is not None else "run or resume it first"))
        config = dataclasses.replace(source.config, space=str(space)) if space else source.config
        if exact_cost is False:
            base = load_spec(config.space)
            members = compound_family(base, *source.best, phis, resolution_multiple)
            table = family_table(members, base, progress, config.search.target)
            return Family(tuple(members), table, worst_deviation(table, config.search.target))
        found = study_family(config, source.best, phis, progress, build_table=False)
        return Family(tuple(found.members), found.table, found.drift, found.solved_on)
    base = load_spec(space or "efficientnet_b0")
    if isinstance(source, str):
        if source != "paper":
            raise NasError(f"materialize({source!r}): give a study's result, coefficients (alpha, beta, gamma) or "
                           f"'paper'")
        if exact_cost:
            raise NasError("exact_cost solves resolutions of a compound family; 'paper' is the paper's table as it is")
        members = paper_family(base, phis)
        nominal = None
    else:
        alpha, beta, gamma = source
        if exact_cost:
            members, nominal = exact_cost_family(base, alpha, beta, gamma, phis)
        else:
            members, nominal = compound_family(base, alpha, beta, gamma, phis, resolution_multiple), None
    table = family_table(members, base, progress, nominal_resolutions=nominal)
    return Family(tuple(members), table, worst_deviation(table), "FLOPs" if nominal else None)
