"""`nas scale run|show` and `nas arch run|show|export`: the searches, run and read back."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas.commands import STUDY_HELP, add_run_options, command, fidelity, group, progress_of, run_job
from nas.commands.networks import parse_phis, writable_file
from nas.console import print_table
from nas.errors import ExitCode, NasError


def cmd_scale_run(args: argparse.Namespace) -> int:
    from nas.config import load_study
    from nas.family import study_family
    from nas.search.confirm import answer
    from nas.search.results import state_counts, trials_on_screen, trials_table, verdict
    from nas.search.scale import ScaleJob

    cfg = load_study(args.study)
    if cfg.arch is not None:
        raise NasError(f"{args.study} defines a block-level search (an 'arch' section): run it with nas arch run")
    phis = parse_phis(args.phi)
    study = run_job(ScaleJob(cfg), args, "scale run")
    if study is None:
        return ExitCode.INTERRUPTED
    table = trials_table(study)
    found = verdict(study)
    if found is None:
        return _nothing_trained(cfg.name, table, state_counts(table))
    winners = table[table["rank"].notna()].sort_values("rank").head(args.top)
    job = ScaleJob(cfg)
    if cfg.search.rungs > 1:
        print(f"budget racing: {job.halving(study).reason}", file=sys.stderr)
    if cfg.search.racing:
        print(f"racing: {job.race(study)[0].reason}", file=sys.stderr)
    confirmed = _confirm(cfg, study, args) if cfg.confirm.run else None
    (alpha, beta, gamma), answer_words = answer(cfg, study)
    built = study_family(cfg, (alpha, beta, gamma), phis, progress_of(args))
    family, drift = built.table, built.drift
    if args.format == "json":
        best = found.best
        print(json.dumps({"study": cfg.name, "best": {"alpha": best.alpha, "beta": best.beta, "gamma": best.gamma},
                          "tie": found.is_tie, "tied_trials": [r.number for r in found.tied],
                          "verdict": found.sentence(), "ties": found.test_words(),
                          "rank_stability": found.stability(),
                          "confirmation": confirmed.sentences() if confirmed else None,
                          "family_from": {"alpha": alpha, "beta": beta, "gamma": gamma,
                                          "confirmed": answer_words},
                          "family_drift": drift, "winners": json.loads(winners.to_json(orient="records")),
                          "family": json.loads(family.to_json(orient="records"))}, indent=2))
    elif args.format == "csv":
        print_table(family, "csv")
    else:
        print(f"study {cfg.name}: {state_counts(table)}\n\ncandidates (best first; tied_best: within the noise "
              f"of the best; vs_best: accuracy minus the best's, paired):")
        shown, under = trials_on_screen(winners)
        print_table(shown, "table")
        if under:
            print("\n".join(under))
        if confirmed:
            print(f"\n{confirmed.sentences()[0]}:")
            print_table(confirmed.table(), "table")
        source = answer_words or ("a tie: its best" if found.is_tie else "the winner")
        print(f"\nfamily of alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g} ({source}) on {cfg.space}; "
              f"resolutions solved so each member's {cfg.search.cost} is {cfg.search.target:g}^phi times the "
              f"base's (nominal_resolution: gamma^phi):")
        print_table(family, "table")
        lines = [found.sentence(), f"ties: {found.test_words()}", found.stability(),
                 *(confirmed.sentences()[1:] if confirmed else []), drift]
        print("\n" + ".\n".join(lines) + ".")
    return 0


def _nothing_trained(name: str, table: Any, counts: str) -> int:
    """No trial finished with an accuracy. Every one refused by the constraint (infeasible or pruned) is the
    study's settings: one line and exit 2, with the first reason. A failed trial is something that broke: exit 1."""
    reasons = [r for r in table["reason"] if r] if "reason" in table else []
    message = f"study {name} trained no candidate ({counts})" + (f", the first because {reasons[0]}" if reasons else "")
    if "fail" in set(table["state"]):
        print(f"nas scale run: {message}; every reason: nas scale show {name}", file=sys.stderr)
        return ExitCode.BUG
    raise NasError(f"{message}: widen search.alpha/search.beta, raise search.tolerance, or change the proxy "
                   f"(every reason: nas scale show {name})")


def _confirm(cfg: Any, study: Any, args: argparse.Namespace) -> Any:
    """The study's confirmation stage (confirm.run): its leaders retrained at the confirmation budget."""
    from nas.search.confirm import finished_confirmation
    from nas.search.retrain import confirmation_job

    if run_job(confirmation_job(cfg, study, cfg.confirm), args, "scale run") is None:
        raise KeyboardInterrupt
    return finished_confirmation(cfg, study)


def cmd_scale_show(args: argparse.Namespace) -> int:
    from nas.search.confirm import confirmation
    from nas.search.results import state_counts, trials_on_screen, trials_table, verdict
    from nas.search.storage import load_stored_study, stored_config

    study, url = load_stored_study(args.study, args.storage)
    _require_kind(study, args.study, block_level=False)
    table = trials_table(study)
    if table.empty:
        raise NasError(f"study '{study.study_name}' has no trials yet: run it with nas scale run")
    confirmed = confirmation(stored_config(study, url), study)
    table = table.sort_values(["rank", "trial"], na_position="last")
    found = verdict(study)
    if args.format != "table":
        print_table(table, args.format)      # machine formats: the full reason in each row
    else:
        shown, under = trials_on_screen(table)
        print_table(shown, "table")
        if under:
            print("\n".join(under))
        print(f"\nstudy {study.study_name}: {state_counts(table)}")
        if found:
            lines = [found.sentence(), f"ties: {found.test_words()}", found.stability(),
                     *(confirmed.sentences() if confirmed else [])]
            print(".\n".join(lines) + ".")
    return 0


def _require_kind(study: Any, given: str, block_level: bool) -> None:
    """`nas scale show` reads coefficient searches and `nas arch show` block-level ones: the other kind's table
    would be a table of None."""
    if (study.user_attrs.get("config", {}).get("arch") is not None) != block_level:
        kind, command = ("a coefficient search", "scale") if block_level else ("a block-level search", "arch")
        raise NasError(f"study '{study.study_name}' is {kind}: show it with nas {command} show {given}")


def add_scale_parser(sub: Any) -> None:
    actions = group(sub, "scale", "compound-coefficient search (alpha, beta, gamma)")
    r = command(actions, "run", cmd_scale_run, "run or resume a coefficient search from a study file",
                 "Run or resume the study; ends with the winners and the family materialized from the best "
                 "coefficients.", quiet=True)
    r.add_argument("study", help="study file, or an example's name (quickstart, cifar10_gpu)")
    add_run_options(r)
    r.add_argument("--phi", default="0-7", help="family members to materialize at the end (default 0-7)")
    r.add_argument("--top", type=int, default=5, help="winners to list (default 5)")
    fidelity.add_parsers(actions)
    s = command(actions, "show", cmd_scale_show, "trials, feasibility and winners of a study")
    s.add_argument("study", help=STUDY_HELP)
    s.add_argument("--storage", help="storage URL")


def _print_arch(study: Any, table: Any, fmt: str, top: int) -> int:
    from nas.search.results import state_counts

    if table.empty or table["best"].isna().all():
        raise NasError(f"study '{study.study_name}' has no complete trial yet: run or resume it with nas arch run")
    best = table[table["best"].notna()].sort_values("best")
    if fmt == "table":
        label = "Pareto set" if len(study.directions) > 1 else "best by reward"
        print(f"study {study.study_name}: {state_counts(table)}\n\n{label}:")
        print_table(best.head(top), "table")
    else:
        print_table(best, fmt)
    return 0


def cmd_arch_run(args: argparse.Namespace) -> int:
    from nas.config import load_study
    from nas.search.arch import ArchJob
    from nas.search.results import arch_table

    cfg = load_study(args.study)
    if cfg.arch is None:
        raise NasError(f"{args.study} defines a coefficient search (no 'arch' section): run it with nas scale run")
    study = run_job(ArchJob(cfg), args, "arch run")
    return ExitCode.INTERRUPTED if study is None else _print_arch(study, arch_table(study), args.format, args.top)


def cmd_arch_show(args: argparse.Namespace) -> int:
    from nas.search.results import arch_table
    from nas.search.storage import load_stored_study

    study, _ = load_stored_study(args.study, args.storage)
    _require_kind(study, args.study, block_level=True)
    table = arch_table(study)
    if args.all and not table.empty:
        print_table(table, args.format)
        return 0
    return _print_arch(study, table, args.format, args.top)


def cmd_arch_export(args: argparse.Namespace) -> int:
    from nas.flops import flops_at, params_of
    from nas.search.arch import export_trial
    from nas.search.storage import load_stored_study

    out = writable_file(Path(args.out), example="my_base.yaml")
    study, _ = load_stored_study(args.study, args.storage)
    spec = export_trial(study, args.trial, out, args.name)
    print(f"wrote {args.out}: {params_of(spec):,} params, {flops_at(spec, spec.resolution) / 1e6:.1f} MFLOPs at "
          f"{spec.resolution} px; scale it with a study whose space is {args.out}", file=sys.stderr)
    return 0


def add_arch_parser(sub: Any) -> None:
    actions = group(sub, "arch", "block-level architecture search (kernel, expansion, SE, depth)")
    r = command(actions, "run", cmd_arch_run, "run or resume a block-level search from a study file", quiet=True)
    r.add_argument("study", help="study file with an 'arch' section, or an example's name (arch_quickstart)")
    add_run_options(r)
    r.add_argument("--top", type=int, default=5, help="rows of the best/Pareto table (default 5)")
    s = command(actions, "show", cmd_arch_show, "the best trials by reward, or the Pareto set")
    s.add_argument("study", help=STUDY_HELP)
    s.add_argument("--storage", help="storage URL")
    s.add_argument("--top", type=int, default=10, help="rows (default 10)")
    s.add_argument("--all", action="store_true", help="every trial, not only the best")
    e = command(actions, "export", cmd_arch_export, "write a trial's network as a base-network file",
                 "Write the network of one complete trial as a base-network YAML file that nas scale run "
                 "(space: FILE) and nas materialize --space FILE accept.", table=False)
    e.add_argument("study", help=STUDY_HELP)
    e.add_argument("--trial", type=int, required=True, help="trial number (see nas arch show)")
    e.add_argument("--out", required=True, help="YAML file to write, e.g. my_base.yaml")
    e.add_argument("--name", help="network name (default: the file's stem)")
    e.add_argument("--storage", help="storage URL")
