"""`nas scale confirm` and `nas scale calibrate`: does the proxy's ranking hold at a larger budget, and which
budget is enough? Both retrain named networks as stored trials beside the search (nas.search.confirm)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from nas.commands import STUDY_HELP, add_run_options, command, progress_of, run_job
from nas.commands.networks import writable_folder
from nas.console import print_table
from nas.errors import ExitCode, NasError


def _settings(args: argparse.Namespace, config: Any) -> Any:
    """The study's confirm settings with the flags given on top (checked as a study file's are)."""
    given = {k: getattr(args, k) for k in ("top", "epochs", "images", "seeds", "phi") if getattr(args, k) is not None}
    return dataclasses.replace(config.confirm, **given)


def cmd_scale_confirm(args: argparse.Namespace) -> int:
    from nas.search.confirm import finished_confirmation
    from nas.search.retrain import confirmation_job
    from nas.search.storage import find_study_config, load_stored_study

    config = find_study_config(args.study, args.storage)
    settings = _settings(args, config)
    study, _ = load_stored_study(config.name, config.storage_url())
    if run_job(confirmation_job(config, study, settings), args, "scale confirm") is None:
        return ExitCode.INTERRUPTED
    print_confirmation(finished_confirmation(config, study), config, args.format)
    return 0


def print_confirmation(result: Any, config: Any, fmt: str) -> None:
    """The leaders' table, the rank fidelity, what became of the proxy's best and the confirmed verdict; with
    the figure (proxy against confirmation accuracy) beside the study's other files."""
    from nas.plots import plot_confirmation

    table = result.table()
    written = plot_confirmation(table, config.run_dir / "confirmation", f"{config.name}: proxy against confirmation",
                                result.sentences()[1])
    if fmt == "json":
        best = result.leaders[result.best].record
        t = result.tau
        print(json.dumps({"study": config.name, "budget": result.budget, "phi": result.phi, "outcome": result.outcome,
                          "rank_fidelity": {"tau_b": t.tau, "low": t.low, "high": t.high, "candidates": t.candidates},
                          "confirmed_best": {"trial": best.number, "alpha": best.alpha, "beta": best.beta,
                                             "gamma": best.gamma},
                          "tie": len(result.tied) > 1, "sentences": result.sentences(),
                          "candidates": json.loads(table.to_json(orient="records"))}, indent=2))
    elif fmt == "csv":
        print_table(table, "csv")
    else:
        print(f"{result.sentences()[0]}; proxy_rank: the search's order, vs_best: accuracy minus the confirmed "
              f"best's (95 % interval, paired):")
        print_table(table, "table")
        print("\n" + ".\n".join(result.sentences()[1:]) + ".")
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def _budgets(text: str) -> list[float]:
    """--budgets: times the study's training, smallest first, such as 1/9,1/3,1,3."""
    try:
        budgets = sorted(float(Fraction(b.strip())) for b in text.split(",") if b.strip())
    except (ValueError, ZeroDivisionError):
        raise NasError(f"--budgets {text!r}: give numbers or fractions such as 1/9,1/3,1,3") from None
    if len(budgets) < 2 or budgets[0] <= 0 or len(set(budgets)) < len(budgets):
        raise NasError(f"--budgets {text}: give 2 or more different budgets > 0, such as 1/9,1/3,1,3")
    if budgets[-1] > 100:
        raise NasError(f"--budgets {text}: at most 100x the study's training")
    return budgets


def cmd_scale_calibrate(args: argparse.Namespace) -> int:
    from nas.plots import plot_calibration
    from nas.search.confirm import calibration
    from nas.search.retrain import calibration_job
    from nas.search.storage import find_study_config

    if args.candidates < 3:
        raise NasError(f"--candidates {args.candidates}: a ranking needs 3 or more")
    if not 0 < args.min_tau <= 1:
        raise NasError(f"--min-tau {args.min_tau}: give a rank correlation in (0, 1], such as 0.8")
    if args.seeds < 1:
        raise NasError(f"--seeds {args.seeds}: give 1 or more runs per candidate and budget")
    budgets = _budgets(args.budgets)
    out = writable_folder(Path(args.out)) if args.out else None
    config = find_study_config(args.study, args.storage)
    job = calibration_job(config, args.candidates, budgets, args.seeds, progress_of(args) or (lambda _: None))
    if run_job(job, args, "scale calibrate") is None:
        return ExitCode.INTERRUPTED
    result = calibration(config, args.min_tau)
    if result is None:
        print(f"nas scale calibrate: some runs failed; their reasons are in the trials of study "
              f"{config.name}-calibrate", file=sys.stderr)
        return ExitCode.BUG
    table = result.table()
    written = plot_calibration(result.accuracy(), table, (out or config.run_dir) / "calibration",
                               f"{config.name}: ranking of {len(result.sampled)} candidates across budgets",
                               args.min_tau)
    if args.format == "table":
        print(f"calibration: {len(result.sampled)} candidates spread over the grid, {args.seeds} seed(s) each, at "
              f"{', '.join(f'{b:.3g}' for b in budgets)}x the study's training (tau_b: Kendall's tau-b of each "
              f"budget's ranking against the largest one's, with its 95 % interval over the candidates):")
        print_table(table, "table")
        print(f"\n{result.sentence()}.")
    else:
        print_table(table, args.format)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


CONFIRM_HELP = ("Retrain the best candidates (--top, and every one tied with the best) at a larger budget (--epochs "
                "times the training, on --images times the training images) with --seeds seeds, as stored trials "
                "(study <name>-confirm). Prints Kendall's tau-b between the proxy's ranking and the confirmation's, "
                "whether the proxy's best held, and the confirmed verdict; nas materialize --study and the report "
                "then follow the confirmed best. Defaults: the study's 'confirm' section. Guide: docs/search.md.")
CALIBRATE_HELP = ("Train a few candidates spread over the grid at a ladder of budgets (times the study's training) "
                  "and recommend the cheapest budget whose ranking agrees with the largest one's (Kendall's tau-b >= "
                  "--min-tau), with a table and a figure; the runs are stored trials (study <name>-calibrate). Run it "
                  "before a long search. Guide: docs/search.md.")


def add_parsers(actions: Any) -> None:
    """`nas scale confirm` and `nas scale calibrate`, under `nas scale`."""
    c = command(actions, "confirm", cmd_scale_confirm, "retrain the leaders at a larger budget: does the ranking "
                "hold?", CONFIRM_HELP, quiet=True)
    c.add_argument("study", help=STUDY_HELP)
    c.add_argument("--top", type=int, help="leaders to retrain, at least every one tied with the best (default 4)")
    c.add_argument("--epochs", type=float, help="times the study's training (default 3)")
    c.add_argument("--images", type=float, help="times the study's training images, as far as the data has them "
                                                "(default 2)")
    c.add_argument("--seeds", type=int, help="runs per leader (default 2)")
    c.add_argument("--phi", type=int, choices=(1, 2), help="retrain the phi = 1 proxies the search trained, or the "
                                                         "phi = 2 members (default 1)")
    add_run_options(c, "the study's")
    k = command(actions, "calibrate", cmd_scale_calibrate, "which proxy budget is enough: rankings across "
                "budgets", CALIBRATE_HELP, quiet=True)
    k.add_argument("study", help=f"{STUDY_HELP} (it need not have run)")
    k.add_argument("--candidates", type=int, default=6, help="grid points to sample, spread over the grid (default 6)")
    k.add_argument("--budgets", default="1/9,1/3,1,3", help="times the study's training, such as 1/9,1/3,1,3 "
                                                            "(the default); the largest is the reference")
    k.add_argument("--seeds", type=int, default=1, help="runs per candidate and budget (default 1)")
    k.add_argument("--min-tau", type=float, default=0.8, help="tau-b a budget needs to agree (default 0.8)")
    k.add_argument("--out", help="folder for the figure (default runs/<name>/)")
    add_run_options(k, "the study's")
