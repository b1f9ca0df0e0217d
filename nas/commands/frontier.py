"""`nas frontier` and `nas report`: what a finished study leaves for people."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nas.commands import STUDY_HELP, add_coefficients, add_run_options, command, run_job
from nas.commands.networks import parse_phis, writable_file, writable_folder
from nas.console import print_table, stderr_progress
from nas.errors import ExitCode, NasError


def cmd_frontier(args: argparse.Namespace) -> int:
    from nas.report import frontier_title, write_frontier
    from nas.search.frontier import frontier_results, plan_frontier
    from nas.search.results import frontier_verdicts

    given = writable_folder(Path(args.out)) if args.out else None       # before hours of training
    plan = plan_frontier(args.study, args.storage, _families(args.families), _given(args),
                         parse_phis(args.phis, "--phis"), args.seeds, args.tolerance,
                         None if args.no_latency else args.latency_device or "")
    study = run_job(plan.job, args, "frontier")
    if study is None:
        return ExitCode.INTERRUPTED
    table = frontier_results(plan.job, study)
    out = given or plan.job.config.run_dir / "frontier"
    title, subtitle = frontier_title(plan.job.config, args.seeds)
    written = write_frontier(table, out, title, subtitle, plan.search_table)
    print_table(table.drop(columns=["label", "network"]) if args.format == "table" else table, args.format)
    if args.format == "table":
        print("\n" + "\n".join(frontier_verdicts(table)))
    missing = table["seeds"] < args.seeds
    if args.format == "table" and missing.any():
        print(f"\n{int(missing.sum())} member(s) have fewer than {args.seeds} finished seeds: their runs "
              f"failed (see the trials of study {plan.job.study_name}); accuracy is over the seeds that finished")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _families(text: str) -> list[str]:
    """--families as a list of known names, 'searched' among them."""
    from nas.search.frontier import KNOWN_FAMILIES

    wanted = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in KNOWN_FAMILIES]
    if unknown:
        raise NasError(f"--families {unknown[0]!r} is not known: use some of {','.join(KNOWN_FAMILIES)}")
    if "searched" not in wanted:
        raise NasError("--families must include searched: the baselines are matched to the searched family's FLOPs")
    return wanted


def _given(args: argparse.Namespace) -> tuple[float, float, float] | None:
    """--alpha --beta --gamma: all three, or none (the studies' winners alone)."""
    given = (args.alpha, args.beta, args.gamma)
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise NasError("give all three of --alpha, --beta and --gamma, or none (to use the studies' winners)")
    return args.alpha, args.beta, args.gamma


def add_frontier_parser(sub: Any) -> None:
    p = command(sub, "frontier", cmd_frontier, "proxy-train the searched family against the paper's, fast "
                 "and single-dimension baselines; table and plots",
                 "Proxy-train family members phi = 0..k of the searched coefficients, the paper's (1.2, 1.1, "
                 "1.15), and fast (Dollár et al.: width s^0.4, depth s^0.1, resolution s^0.05), width-, depth- and "
                 "resolution-only scaling at matched FLOPs, several seeds each; every "
                 "run is a trial in the study's storage (study <name>-frontier), so an interrupted frontier "
                 "resumes. Writes frontier.csv/.json and PNG + SVG figures. Guide: docs/frontier.md.", quiet=True)
    p.set_defaults(flag_names={"device": "--latency-device"})   # the training device is the study's
    p.add_argument("study", nargs="+", help=f"coefficient {STUDY_HELP}; several studies with the same proxy add "
                                            f"one line each")
    p.add_argument("--phis", default="0-2", help="family members to train (default 0-2; each step doubles the cost)")
    p.add_argument("--seeds", type=int, default=3, help="proxy runs per member (default 3)")
    p.add_argument("--families", default="searched,paper,fast,width,depth,resolution",
                   help="which lines to train (default all six)")
    add_coefficients(p, "compare these coefficients on the study's proxy, beside its winner")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="fast and single-dimension baselines must match the searched member's FLOPs within this (default "
                        "0.1); a baseline that rounding keeps further away is trained, plotted at its own FLOPs, "
                        "and flagged")
    p.add_argument("--no-latency", action="store_true", help="skip measuring latency (no accuracy-vs-latency figure)")
    p.add_argument("--latency-device", help="device to time on (default: the study's search.latency.device)")
    add_run_options(p, "the study's")
    p.add_argument("--out", help="folder for the table and figures (default runs/<name>/frontier)")


def cmd_report(args: argparse.Namespace) -> int:
    from nas.report import report_study

    given = writable_file(Path(args.out), example="report.html") if args.out else None
    out, size = report_study(args.study, args.storage, given, stderr_progress)
    print(f"wrote {out} ({size / 1024:.0f} KiB); open it in a browser, no server needed", file=sys.stderr)
    print(out)
    return 0


def add_report_parser(sub: Any) -> None:
    p = command(sub, "report", cmd_report, "one self-contained HTML page for a study",
                 "Write one HTML page, images embedded: study definition, search history, winners, family table "
                 "and frontier plots (when nas frontier has run).", table=False)
    p.add_argument("study", help=STUDY_HELP)
    p.add_argument("--storage", help="storage URL")
    p.add_argument("--out", help="the HTML file to write (default runs/<name>/report.html)")
