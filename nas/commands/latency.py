"""`nas latency`, `nas latency table build|eval` and `nas latency probe export|import`: measured latency, lookup
tables, and tables timed on another device by the probe."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from nas.commands import SPACE_HELP, Parser, add_coefficients, command, progress_of
from nas.config import LatencySettings, Precision, Runtime
from nas.console import FORMATS, print_table
from nas.errors import NasError

if TYPE_CHECKING:       # imported when a command runs: the parser is built without torch
    from nas.latency import LatencyTable
    from nas.latency.evaluate import TableAccuracy

_LATENCY_FIELDS = ("device", "warmup", "repeats", "threads", "runtime", "precision", "cuda_graph")


def _latency_options(p: argparse.ArgumentParser, inherited: bool) -> None:
    """Options every latency command takes. `nas latency` holds their defaults; the table subcommands repeat
    them with no default of their own (SUPPRESS), so an option given before the subcommand is not reset."""
    d = LatencySettings()
    default = (lambda value: argparse.SUPPRESS) if inherited else (lambda value: value)
    p.add_argument("--space", default=default(None), help=f"{SPACE_HELP} (default efficientnet_b0)")
    p.add_argument("--resolution", type=int, default=default(None),
                   help="resolution of the base (phi = 0) network (default: the space's)")
    p.add_argument("--device", default=default(None), help=f"cpu, cuda or cuda:N (default {d.device})")
    p.add_argument("--batch-size", default=default(None),
                   help=f"images per run (default {d.batch_size}); nas latency also takes a list, such as 1,256 "
                        f"(one row per batch size)")
    p.add_argument("--threads", type=int, default=default(None), help="CPU threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=default(None), help=f"untimed runs first (default {d.warmup})")
    p.add_argument("--repeats", type=int, default=default(None), help=f"timed runs, >= 3 (default {d.repeats})")
    p.add_argument("--runtime", choices=get_args(Runtime), default=default(None),
                   help=f"eager PyTorch or an ONNX Runtime CPU session, if installed (default {d.runtime})")
    p.add_argument("--precision", choices=get_args(Precision), default=default(None),
                   help=f"weights and activations as served: fp32, or bf16 (the model cast to bfloat16; "
                        f"default {d.precision})")
    p.add_argument("--cuda-graph", action="store_true", default=default(None),
                   help="time replays of the forward captured as a CUDA graph (CUDA only)")
    p.add_argument("--quiet", action="store_true", default=default(False), help="no progress on stderr")
    p.add_argument("--format", choices=FORMATS, default=default("table"),
                   help="table for people, json or csv for scripts (stdout alone)")


def _batch_sizes(args: argparse.Namespace) -> list[int]:
    """--batch-size as given: one whole number, or a comma-separated list of them."""
    text = getattr(args, "batch_size", None)
    if text is None:
        return [LatencySettings.batch_size]
    try:
        return [int(b) for b in str(text).split(",")]
    except ValueError:
        raise NasError(f"--batch-size {text}: give a whole number, or a list such as 1,256") from None


def _latency_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, all but the batch size (_batch_sizes)."""
    return {k: getattr(args, k) for k in _LATENCY_FIELDS if getattr(args, k, None) is not None}


def _table_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line for a table, which is measured at one batch size."""
    given = _latency_given(args)
    if getattr(args, "batch_size", None) is not None:
        given["batch_size"], *more = _batch_sizes(args)
        if more:
            raise NasError(f"--batch-size {args.batch_size}: a latency table is measured at one batch size: give "
                           f"one, and build a table per batch size")
    return given


def cmd_latency(args: argparse.Namespace) -> int:
    import pandas as pd

    from nas.commands.networks import networks_from_flags
    from nas.latency import measure_networks

    members = networks_from_flags(args.space, args.resolution, width=args.width, depth=args.depth,
                                  preset=args.preset, alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                                  phi=args.phi)
    settings = [LatencySettings(**_latency_given(args), batch_size=b)       # all checked before any timing
                for b in _batch_sizes(args)]
    print_table(pd.concat([measure_networks([s for _, s in members], one, progress=progress_of(args))
                           for one in settings], ignore_index=True), args.format)
    return 0


def _print_accuracy(accuracy: TableAccuracy, fmt: str) -> None:
    """Per-network rows and the summary (mean abs error, Spearman rho); csv keeps stdout to the rows."""
    if fmt == "json":
        print(json.dumps({"summary": accuracy.held_out_error().to_dict(),
                          "networks": json.loads(accuracy.rows.to_json(orient="records"))}, indent=2))
        return
    print_table(accuracy.rows, fmt)
    print(accuracy.summary(), file=sys.stdout if fmt == "table" else sys.stderr)


def build_and_evaluate(space: str | None, resolution: int | None, samples: int, seed: int, settings: LatencySettings,
                       out: str | Path, calibration: int, held_out: int,
                       progress: Callable[[str], None] | None = None) -> TableAccuracy:
    """Build a table from `samples` seeded networks of `space` (seed), calibrate it on `calibration` others
    (seed + 1), evaluate it on `held_out` more (seed + 2), and save it to `out`."""
    from nas.latency.evaluate import build_calibrated_table, sampled_table_networks
    from nas.spec import load_spec

    space = space or "efficientnet_b0"
    networks = sampled_table_networks(load_spec(space), space, samples, seed, calibration, held_out, resolution)
    table, accuracy = build_calibrated_table(networks.build, networks.calibration, networks.held_out, settings,
                                             networks.built_from, networks.resolution, progress)
    table.save(out)
    if progress:
        progress(f"wrote {len(table.entries)} pieces to {out}")
    return accuracy


def evaluate_saved_table(table: LatencyTable, space: str | None, resolution: int | None, samples: int,
                         seed: int | None, overrides: dict[str, Any],
                         progress: Callable[[str], None] | None = None) -> TableAccuracy:
    """Evaluate a saved table on seeded networks; space, resolution and seed default to the table's build
    (seed + 2: its held-out sample, networks it was neither built nor calibrated on), measurement settings
    to the table's own."""
    from nas.latency.evaluate import check_sample_size, evaluate_table, sample_networks
    from nas.spec import load_spec

    check_sample_size(samples, "samples", "evaluating a latency table")
    settings = dataclasses.replace(table.settings, **overrides)
    built = table.built_from
    base = load_spec(space or built.get("space", "efficientnet_b0"))
    resolution = resolution or built.get("resolution") or base.resolution
    seed = seed if seed is not None else built.get("seed", 0) + 2
    return evaluate_table(table, sample_networks(base, samples, seed, resolution), settings, progress=progress)


def cmd_latency_table_build(args: argparse.Namespace) -> int:
    settings = LatencySettings(**_table_given(args))
    held_out = args.samples if args.held_out is None else args.held_out
    accuracy = build_and_evaluate(args.space, args.resolution, args.samples, args.seed, settings, args.out,
                                  args.calibration, held_out, progress_of(args))
    _print_accuracy(accuracy, args.format)
    return 0


def cmd_latency_table_eval(args: argparse.Namespace) -> int:
    from nas.latency import LatencyTable

    table = LatencyTable.load(args.table)
    stored = table.describe(args.table)       # shown once the settings are known to match (no error line first)
    accuracy = evaluate_saved_table(table, args.space, args.resolution, args.samples, args.seed, _table_given(args),
                                    progress_of(args))
    print(stored, file=sys.stderr, flush=True)
    _print_accuracy(accuracy, args.format)
    return 0


def cmd_latency_probe_export(args: argparse.Namespace) -> int:
    from nas.latency import probe

    out, progress = Path(args.out), progress_of(args)
    given = [name for name, on in (("--study", args.study), ("--networks", args.networks),
                                   ("--preset/--alpha/--beta/--gamma/--phi", args.preset or any(
                                       c is not None for c in (args.alpha, args.beta, args.gamma))
                                    or (args.phi is not None and not args.study))) if on]
    if len(given) > 1:
        raise NasError(f"{' and '.join(given)} exclude each other: give a study's table, a family or a list of "
                       f"networks")
    settings = LatencySettings(warmup=probe.PROBE_WARMUP if args.warmup is None else args.warmup,
                               repeats=probe.PROBE_REPEATS if args.repeats is None else args.repeats)
    if args.batch_size is not None:
        settings = dataclasses.replace(settings, batch_size=args.batch_size)
    if given and given[0] != "--study":
        from nas.commands.networks import networks_from_flags
        from nas.spec import load_spec

        specs = ([load_spec(f) for f in args.networks] if args.networks else
                 [spec for _, spec in networks_from_flags(args.space, args.resolution, preset=args.preset,
                                                           alpha=args.alpha, beta=args.beta, gamma=args.gamma,
                                                           phi=args.phi)])
        manifest = probe.export_networks_probe(specs, out, settings.batch_size, settings.warmup, settings.repeats,
                                               progress=progress)
    else:
        networks, settings = _probed_table(args, settings)
        manifest = probe.export_table_probe(networks, out, settings.batch_size, settings.warmup, settings.repeats,
                                            progress)
    files = len(json.loads(manifest.read_text())["files"])
    print(f"wrote {files} ONNX files, {manifest} and {out / probe.PROBE_SCRIPT}: copy the folder to the device and "
          f"run python3 {probe.PROBE_SCRIPT} . there (needs only onnxruntime and numpy; docs/latency.md)",
          file=sys.stderr)
    return 0


def _probed_table(args: argparse.Namespace, settings: LatencySettings) -> tuple[Any, LatencySettings]:
    """The networks of the table a probe is exported for, and its settings: a study's search table (with --phi,
    also the pieces of its family at those phis), timed at the batch size its search measures at, or a table
    sampled as nas latency table build samples it."""
    if args.study:
        from nas.commands.networks import parse_phis
        from nas.latency.study_table import search_table_networks
        from nas.search.storage import find_study_config

        config = find_study_config(args.study, args.storage)
        batch = config.search.latency.batch_size
        if args.batch_size is not None and args.batch_size != batch:
            raise NasError(f"--batch-size {args.batch_size}: study {args.study} measures latency at batch size "
                           f"{batch}: drop --batch-size, or change the study's search.latency.batch_size")
        family = parse_phis(args.phi) if args.phi is not None else []
        return search_table_networks(config, family), dataclasses.replace(settings, batch_size=batch)
    from nas.latency.evaluate import sampled_table_networks
    from nas.spec import load_spec

    space = args.space or "efficientnet_b0"
    held_out = args.samples if args.held_out is None else args.held_out
    return sampled_table_networks(load_spec(space), space, args.samples, args.seed, args.calibration, held_out,
                                  args.resolution), settings


def cmd_latency_probe_import(args: argparse.Namespace) -> int:
    from nas.latency.probe import ProbeResults, probed_table

    results = ProbeResults.load(args.results)
    out = Path(args.out) if args.out else Path(args.results).with_name("latency_table.json")
    table, accuracy = probed_table(results, progress_of(args))
    table.save(out)
    print(table.describe(out), file=sys.stderr, flush=True)
    _print_accuracy(accuracy, args.format)
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
    groups = p.add_subparsers(dest="latency_table", parser_class=Parser)
    table = groups.add_parser("table", help="per-block latency lookup tables: build, eval")
    actions = table.add_subparsers(dest="table_action", required=True, parser_class=Parser)
    for name, func, help, description, seed, seed_help, file, file_help in (
            ("build", cmd_latency_table_build, "time every block of a seeded sample of networks once; write the "
             "table", "Time each distinct stem, block and head of --samples seeded networks once (seed S), "
             "calibrate the sums on --calibration networks timed whole (seed S + 1), report prediction against "
             "measurement on --held-out networks used for neither (seed S + 2), and write the table with that "
             "error.", 0,
             "seed of the build sample (default 0)", "--out", "the table's JSON file"),
            ("eval", cmd_latency_table_eval, "prediction error and rank correlation of a table on sample networks",
             "Measure --samples seeded networks whole and compare with the table's prediction; pieces the table "
             "lacks are timed first (new_pieces). Space, resolution and measurement settings default to the "
             "table's; a setting that differs from the table's is an error.", None,
             "seed of the sample (default: the table's held-out seed, build seed + 2)", "--table",
             "a table written by nas latency table build")):
        q = _latency_command(actions, name, func, help, description, inherited=True)
        q.add_argument(file, required=True, help=file_help)
        q.add_argument("--samples", type=int, default=8, help="networks to build the table from (build) or to "
                       "evaluate on (eval; default 8)")
        q.add_argument("--seed", type=int, default=seed, help=seed_help)
        if name == "build":
            q.add_argument("--calibration", type=int, default=12,
                           help="networks timed whole to calibrate the table on (default 12)")
            q.add_argument("--held-out", type=int, help="networks to evaluate on (default: --samples)")
    _add_probe_parsers(groups)


def _add_probe_parsers(groups: Any) -> None:
    probe = groups.add_parser("probe", help="tables for another device: export ONNX files and a probe, import its "
                              "timings")
    actions = probe.add_subparsers(dest="probe_action", required=True, parser_class=Parser)
    q = command(actions, "export", cmd_latency_probe_export, "write ONNX files, a manifest and the device probe",
                "Write, for a latency table (a study's search table with --study, and its family's pieces with "
                "--phi; else a sampled table as nas latency table build draws it), or for a family or a list of networks, one ONNX file each (opset "
                "17, fixed batch), a manifest and probe_device.py, which times them on a device with only "
                "onnxruntime and numpy. Read its results back with nas latency probe import (a table) or nas "
                "materialize --latency-from (a family). docs/latency.md.", table=False, quiet=True)
    q.add_argument("--out", required=True, help="a new or empty folder for the ONNX files, manifest and probe")
    q.add_argument("--study", help="the table a coefficient study searches with (its search ranges and batch size)")
    q.add_argument("--storage", help="storage URL of --study (default: runs/<study>/study.db)")
    q.add_argument("--space", help=f"{SPACE_HELP} (default efficientnet_b0)")
    q.add_argument("--resolution", type=int, help="resolution of the sampled table's networks, or of a family's "
                   "base (default: the space's)")
    q.add_argument("--samples", type=int, default=8, help="sampled table: networks to build it from (default 8)")
    q.add_argument("--seed", type=int, default=0, help="sampled table: seed of the build sample (default 0)")
    q.add_argument("--calibration", type=int, default=12, help="sampled table: networks timed whole to calibrate "
                   "on (default 12)")
    q.add_argument("--held-out", type=int, help="sampled table: networks to judge it on (default: --samples)")
    q.add_argument("--preset", choices=("paper",), help="a family: the paper's B0..B7 (with --phi)")
    add_coefficients(q, "a compound family")
    q.add_argument("--phi", help="family members: a range 0-3, a list 0,0.5,1 or one value (default 0-3); with "
                   "--study, the family the study's run will build (nas scale run --phi): its pieces join the table")
    q.add_argument("--networks", nargs="+", metavar="SPEC", help="a list of networks: spec YAML files (nas "
                   "materialize --out writes them) or packaged space names")
    d = LatencySettings()
    q.add_argument("--batch-size", type=int, help=f"images per run, fixed in the files (default {d.batch_size}; "
                   f"a study's own)")
    q.add_argument("--warmup", type=int, help="the probe's untimed runs of each file (default 10)")
    q.add_argument("--repeats", type=int, help="the probe's timed rounds, >= 3 (default 60: 20 missed the held-out "
                                                "bar on a 2-core CPU, 60 met it)")
    q = command(actions, "import", cmd_latency_probe_import, "build the calibrated table from the probe's timings",
                "Build the lookup table a probe's manifest defines from the device's timings: calibrated on its "
                "calibration networks and judged on its held-out ones, as a table timed here, naming the device "
                "and provider. A study uses it with search.latency_table.", quiet=True)
    q.add_argument("results", help="the JSON the probe wrote on the device")
    q.add_argument("--out", help="the table's JSON file (default: latency_table.json beside the results)")
