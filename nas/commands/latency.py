"""`nas latency` and `nas latency table build|eval`: measured latency and lookup tables."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, get_args

from nas.commands import SPACE_HELP, Parser, add_coefficients, progress_of
from nas.config import LatencySettings, Runtime
from nas.console import FORMATS, print_table

_LATENCY_FIELDS = ("device", "batch_size", "warmup", "repeats", "threads", "runtime")


def _latency_options(p: argparse.ArgumentParser, inherited: bool) -> None:
    """Options every latency command takes. `nas latency` holds their defaults; the table subcommands repeat
    them with no default of their own (SUPPRESS), so an option given before the subcommand is not reset."""
    d = LatencySettings()
    default = (lambda value: argparse.SUPPRESS) if inherited else (lambda value: value)
    p.add_argument("--space", default=default(None), help=f"{SPACE_HELP} (default efficientnet_b0)")
    p.add_argument("--resolution", type=int, default=default(None),
                   help="resolution of the base (phi = 0) network (default: the space's)")
    p.add_argument("--device", default=default(None), help=f"cpu, cuda or cuda:N (default {d.device})")
    p.add_argument("--batch-size", type=int, default=default(None), help=f"images per run (default {d.batch_size})")
    p.add_argument("--threads", type=int, default=default(None), help="CPU threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=default(None), help=f"untimed runs first (default {d.warmup})")
    p.add_argument("--repeats", type=int, default=default(None), help=f"timed runs, >= 3 (default {d.repeats})")
    p.add_argument("--runtime", choices=get_args(Runtime), default=default(None),
                   help=f"eager PyTorch or an ONNX Runtime CPU session, if installed (default {d.runtime})")
    p.add_argument("--quiet", action="store_true", default=default(False), help="no progress on stderr")
    p.add_argument("--format", choices=FORMATS, default=default("table"),
                   help="table for people, json or csv for scripts (stdout alone)")


def _latency_given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _LATENCY_FIELDS if getattr(args, k) is not None}


def cmd_latency(args: argparse.Namespace) -> int:
    from nas.family import networks_from_flags
    from nas.latency import measure_networks

    members = networks_from_flags(args.space, args.resolution, width=args.width, depth=args.depth,
                                  preset=args.preset, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                                  phi=args.phi)
    print_table(measure_networks([s for _, s in members], LatencySettings(**_latency_given(args)),
                                 progress=progress_of(args)), args.format)
    return 0


def _print_accuracy(accuracy: Any, fmt: str) -> None:
    """Per-network rows and the summary (mean abs error, Spearman rho); csv keeps stdout to the rows."""
    if fmt == "json":
        print(json.dumps({"summary": accuracy.to_dict(),
                          "networks": json.loads(accuracy.rows.to_json(orient="records"))}, indent=2))
        return
    print_table(accuracy.rows, fmt)
    print(accuracy.summary(), file=sys.stdout if fmt == "table" else sys.stderr)


def cmd_latency_table_build(args: argparse.Namespace) -> int:
    from nas.latency import build_and_evaluate

    _, accuracy = build_and_evaluate(args.space, args.resolution, args.samples, args.seed,
                                     LatencySettings(**_latency_given(args)), args.out, progress_of(args))
    _print_accuracy(accuracy, args.format)
    return 0


def cmd_latency_table_eval(args: argparse.Namespace) -> int:
    from nas.latency import evaluate_saved_table

    _print_accuracy(evaluate_saved_table(args.table, args.space, args.resolution, args.samples, args.seed,
                                         _latency_given(args), progress_of(args)), args.format)
    return 0


def _latency_command(sub: Any, name: str, func: Any, help: str, description: str,
                     inherited: bool) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description)
    _latency_options(p, inherited)
    p.set_defaults(func=func)
    return p


def add_parser(sub: Any) -> None:
    p = _latency_command(sub, "latency", cmd_latency, "measured latency of a network or family; per-block lookup "
                         "tables", "Time one network or a family on a device (median and 10-90 % spread after "
                         "warm-up), or build and evaluate a per-block latency lookup table (nas latency table "
                         "build|eval). Protocol and figures: docs/latency.md.", inherited=False)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of one network (default 1)")
    p.add_argument("--depth", type=float, default=1.0, help="depth multiplier of one network (default 1)")
    p.add_argument("--preset", choices=("paper",), help="the paper's B0..B7 (with --phi)")
    add_coefficients(p, "compound family")
    p.add_argument("--phi", help="family members: a range 0-3, a list 0,0.5,1 or one value (default 0-3)")
    table = p.add_subparsers(dest="latency_table", parser_class=Parser).add_parser(
        "table", help="per-block latency lookup tables: build, eval")
    actions = table.add_subparsers(dest="table_action", required=True, parser_class=Parser)
    for name, func, help, description, seed, seed_help, file, file_help in (
            ("build", cmd_latency_table_build, "time every block of a seeded sample of networks once; write the "
             "table", "Time each distinct stem, block and head of --samples seeded networks once, write the table, "
             "then report prediction against measurement on a held-out sample (seed + 1).", 0,
             "seed of the build sample (default 0)", "--out", "the table's JSON file"),
            ("eval", cmd_latency_table_eval, "prediction error and rank correlation of a table on sample networks",
             "Measure --samples seeded networks whole and compare with the table's prediction; pieces the table "
             "lacks are timed first (new_pieces). Space, resolution and measurement settings default to the "
             "table's; a setting that differs from the table's is an error.", None,
             "seed of the sample (default: the table's build seed + 1)", "--table",
             "a table written by nas latency table build")):
        q = _latency_command(actions, name, func, help, description, inherited=True)
        q.add_argument(file, required=True, help=file_help)
        q.add_argument("--samples", type=int, default=8, help="networks to evaluate on (default 8)")
        q.add_argument("--seed", type=int, default=seed, help=seed_help)
