"""The `nas` command. Exit codes: 0 success, 2 bad input (one line on stderr), 1 anything else.

Every command that prints a table takes --format table|json|csv; json and csv go to stdout alone and
progress goes to stderr, so scripts can read stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.console import FORMATS, print_table, stderr_progress
from nas.errors import NasError, SearchAborted


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (and exit 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")


def parse_phis(text: str) -> list[float]:
    """'0-7' (whole steps from the low end), '0,0.5,1' or '3'."""
    m = _RANGE.match(text)
    if m:
        lo, hi = float(m[1]), float(m[2])
        if lo > hi:
            raise NasError(f"--phi {text}: the range is empty, write it low-high such as 0-7")
        return [lo + i for i in range(int(hi - lo) + 1)]
    try:
        phis = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        phis = []
    if not phis:
        raise NasError(f"--phi {text!r} is not a number, a range like 0-7 or a list like 0,0.5,1")
    for p in phis:
        if not p >= 0:
            raise NasError(f"--phi {p:g} is negative: phi must be >= 0")
    return phis


def _add_run_options(p: argparse.ArgumentParser, storage_default: str) -> None:
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--storage", help=f"storage URL (default: {storage_default})")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table for people, json or csv for scripts (stdout alone)")


# ------------------------------------------------------------------------------------ materialize

def cmd_materialize(args: argparse.Namespace) -> int:
    from nas.family import compound_family, family_table, paper_family, write_family
    from nas.spec import load_spec

    coeffs = (args.alpha, args.beta, args.gamma)
    sources = sum([bool(args.preset), any(c is not None for c in coeffs), bool(args.study)])
    if sources > 1:
        raise NasError("--preset, --alpha/--beta/--gamma and --study exclude each other: give one of them")
    if sources == 0 or (not args.preset and not args.study and any(c is None for c in coeffs)):
        raise NasError("give --preset paper, all three of --alpha --beta --gamma, or --study STUDY")
    if args.save_models and not args.out:
        raise NasError("--save-models needs --out DIR to write the weights to")
    if args.study:
        from nas.search.scale import best_coefficients
        from nas.study import load_stored_study
        study, _ = load_stored_study(args.study, args.storage)
        args.alpha, args.beta, args.gamma = best_coefficients(study)
        args.space = args.space or study.user_attrs.get("config", {}).get("space", "efficientnet_b0")
        print(f"study '{study.study_name}': best coefficients alpha {args.alpha:.4g} beta {args.beta:.4g} "
              f"gamma {args.gamma:.4g}", file=sys.stderr)
    base = load_spec(args.space or "efficientnet_b0")
    phis = parse_phis(args.phi)
    if args.preset:
        members = paper_family(base, phis)
    else:
        members = compound_family(base, args.alpha, args.beta, args.gamma, phis, args.resolution_multiple)
    df = family_table(members, reference=base, progress=None if args.quiet else stderr_progress)
    if args.out:
        written = write_family(members, Path(args.out), args.save_models, args.num_classes)
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    print_table(df, args.format)
    return 0


def _materialize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("materialize", help="build a family from coefficients or the paper's table",
                       description="Build family members phi = 0..7 (or any phi) from scaling coefficients "
                                   "or the paper's B0..B7 table; print params, measured FLOPs and the "
                                   "FLOPs ratio to the base next to 2^phi.")
    p.add_argument("--preset", choices=("paper",), help="the paper's per-model table B0..B7")
    p.add_argument("--alpha", type=float, help="depth coefficient (>= 1)")
    p.add_argument("--beta", type=float, help="width coefficient (>= 1)")
    p.add_argument("--gamma", type=float, help="resolution coefficient (>= 1)")
    p.add_argument("--phi", default="0-7", help="members: a range 0-7, a list 0,0.5,1 or one value (default 0-7)")
    p.add_argument("--study", help="the best coefficients of a study: its name, study file, or with --storage")
    p.add_argument("--storage", help="storage URL of --study (default: runs/<study>/study.db)")
    p.add_argument("--space", help="base network: a name in search_spaces/ or a YAML path "
                                   "(default efficientnet_b0, or the study's)")
    p.add_argument("--resolution-multiple", type=int, default=1,
                   help="round compound resolutions to this multiple (default 1)")
    p.add_argument("--out", help="write one spec YAML per member into this folder")
    p.add_argument("--save-models", action="store_true", help="with --out, also save freshly built weights (.pt)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size of saved models (default 1000)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_format(p)
    p.set_defaults(func=cmd_materialize)


# ------------------------------------------------------------------------------------------ train

def _add_training(p: argparse.ArgumentParser) -> None:
    """Proxy-training settings shared by the commands that train."""
    defaults = _train_defaults()
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    p.add_argument("--lr", type=float, default=defaults.lr, help=f"peak learning rate (default {defaults.lr})")
    p.add_argument("--optimizer", default=defaults.optimizer, help="adamw (default), sgd or rmsprop")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on GPU)")


def _train_defaults():
    from nas.proxy import TrainConfig
    return TrainConfig()


def _train_config(args: argparse.Namespace, **overrides):
    from nas.proxy import TrainConfig
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       device=args.device, seed=args.seed, threads=args.threads, compile=args.compile,
                       **overrides)


def _width_depth_member(base, width: float, depth: float):
    """`base` itself, or base scaled by --width/--depth at its resolution, named <base>-w<W>-d<D>."""
    from nas.scaling import scale

    if (width, depth) == (1.0, 1.0):
        return base
    return scale(base, width, depth, base.resolution, name=f"{base.name}-w{width:g}-d{depth:g}")


def _network_from_args(args: argparse.Namespace):
    """The network to train: a base at --resolution, scaled by --width/--depth or by the compound rule."""
    from nas.scaling import compound
    from nas.spec import load_spec

    base = load_spec(args.space).replace(resolution=args.resolution)
    if args.stem_stride is not None:
        base = base.replace(stem_stride=args.stem_stride)
    compound_args = (args.alpha, args.beta, args.gamma, args.phi)
    if any(a is not None for a in compound_args):
        if any(a is None for a in compound_args):
            raise NasError("the compound rule needs all of --alpha --beta --gamma --phi")
        if args.width != 1.0 or args.depth != 1.0:
            raise NasError("give --width/--depth or --alpha/--beta/--gamma/--phi, not both")
        return compound(base, args.alpha, args.beta, args.gamma, args.phi)
    return _width_depth_member(base, args.width, args.depth)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from nas.data import load_dataset
    from nas.flops import count_flops
    from nas.proxy import resolve_device, train

    cfg = _train_config(args)
    device = resolve_device(cfg.device)
    spec = _network_from_args(args)
    progress = None if args.quiet else stderr_progress
    data = load_dataset(args.dataset, per_class=args.per_class, fraction=args.fraction, seed=args.seed)
    fc = count_flops(spec, spec.resolution, data.in_channels, data.num_classes)
    if progress:
        progress(f"{data.describe()}")
        progress(f"training {spec.name} at {spec.resolution} px: {fc.params:,} params, "
                 f"{fc.flops / 1e6:.1f} MFLOPs, {cfg.epochs} epochs on {device}")
    result = train(spec, data, cfg, callback=None, progress=progress)
    summary = {
        "network": spec.name, "dataset": data.name, "resolution": spec.resolution, "width": spec.width_mult,
        "depth": spec.depth_mult, "params": fc.params, "mflops": round(fc.flops / 1e6, 2),
        "epochs": len(result.epochs), "final_acc": round(result.final_acc, 4), "best_acc": round(result.best_acc, 4),
        "train_img_s": round(result.train_images_per_sec, 1), "wall_s": round(result.wall_time, 1),
        "peak_mem_mb": round(result.peak_memory_mb, 1), "device": result.device, "status": result.status,
    }
    if args.format == "json":
        print(json.dumps({**summary, "reason": result.reason,
                          "history": [e.__dict__ for e in result.epochs]}, indent=2))
    elif args.format == "csv":
        print_table(pd.DataFrame([summary]), "csv")
    else:
        width = max(map(len, summary))
        print("\n".join(f"{k:<{width}}  {v}" for k, v in summary.items()))
    if result.status in ("diverged", "oom"):
        print(f"nas train: {result.status}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _network_args(p: argparse.ArgumentParser, resolution: int = 32) -> None:
    p.add_argument("--space", default="efficientnet_b0", help="base network: a name in search_spaces/ or a YAML path")
    p.add_argument("--resolution", type=int, default=resolution,
                   help=f"resolution of the base (phi = 0) network for the proxy (default {resolution})")
    p.add_argument("--stem-stride", type=int, choices=(1, 2), help="override the base's stem stride")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    p.add_argument("--depth", type=float, default=1.0, help="depth multiplier (default 1)")
    p.add_argument("--alpha", type=float, help="compound rule: depth coefficient")
    p.add_argument("--beta", type=float, help="compound rule: width coefficient")
    p.add_argument("--gamma", type=float, help="compound rule: resolution coefficient")
    p.add_argument("--phi", type=float, help="compound rule: exponent")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one proxy training run of one network",
                       description="Train one network from scratch on a proxy data set and report validation "
                                   "accuracy per epoch, throughput, params and FLOPs.")
    _network_args(p)
    p.add_argument("--dataset", default="digits",
                   help="digits (bundled), a CIFAR batch folder, an image folder or a .npz file")
    p.add_argument("--per-class", type=int, help="keep N training images per class")
    p.add_argument("--fraction", type=float, help="keep this fraction of the training split")
    _add_training(p)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_format(p)
    p.set_defaults(func=cmd_train)


# ------------------------------------------------------------------------------------------ bench

def cmd_bench_proxy(args: argparse.Namespace) -> int:
    from nas.bench import bench_proxy
    from nas.spec import load_spec

    base = load_spec(args.space)
    spec = _width_depth_member(base, args.width, args.depth)
    try:
        resolutions = [int(r) for r in args.resolutions.split(",")]
    except ValueError:
        raise NasError(f"--resolutions {args.resolutions!r}: give comma-separated integers such as 32,64") from None
    df = bench_proxy([spec], resolutions, _train_config(args), images=args.images,
                     progress=None if args.quiet else stderr_progress)
    print_table(df, args.format)
    return 0


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks against a plain reference loop")
    bench_sub = p.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    q = bench_sub.add_parser("proxy", help="training images/s: the proxy engine vs a plain loop",
                             description="Images per second of training steps, the proxy engine next to a plain "
                                         "fp32 NCHW DataLoader loop measured in the same run.")
    q.add_argument("--space", default="efficientnet_b0", help="base network (default efficientnet_b0)")
    q.add_argument("--width", type=float, default=1.0, help="width multiplier of the benchmarked network")
    q.add_argument("--depth", type=float, default=1.0, help="depth multiplier of the benchmarked network")
    q.add_argument("--resolutions", default="32,64", help="comma-separated (default 32,64)")
    q.add_argument("--images", type=int, default=1024, help="images per timed epoch (default 1024)")
    _add_training(q)
    q.add_argument("--quiet", action="store_true")
    _add_format(q)
    q.set_defaults(func=cmd_bench_proxy)


# ------------------------------------------------------------------------------------------ scale

def _run_job(job, args: argparse.Namespace, command: str):
    """Run or resume a search job with --workers/--storage; None when interrupted (Ctrl-C)."""
    from nas.search.runner import run_search
    try:
        return run_search(job, workers=args.workers, storage_url=args.storage)
    except KeyboardInterrupt:
        print(f"nas {command}: interrupted; finished trials are kept in {job.config.storage_url(args.storage)} "
              f"(study {job.study_name}): run the same command to resume", file=sys.stderr)
        return None


def cmd_scale_run(args: argparse.Namespace) -> int:
    from nas.family import compound_family, family_table
    from nas.search.scale import ScaleJob, best_coefficients, ranked_winners, trials_table
    from nas.spec import load_spec
    from nas.study import load_study

    cfg = load_study(args.study)
    if cfg.arch is not None:
        raise NasError(f"{args.study} defines a block-level search (an 'arch' section): run it with nas arch run")
    phis = parse_phis(args.phi)
    study = _run_job(ScaleJob(cfg), args, "scale run")
    if study is None:
        return 130
    table = trials_table(study)
    if not ranked_winners(study):
        print(f"study {cfg.name}: {_summary(table)}", file=sys.stderr)
        print(f"nas scale run: no trial finished with an accuracy; the reasons are in "
              f"'nas scale show {cfg.name}'", file=sys.stderr)
        return 1
    alpha, beta, gamma = best_coefficients(study)
    winners = table[table["rank"].notna()].sort_values("rank").head(args.top)
    family = family_table(compound_family(load_spec(cfg.space), alpha, beta, gamma, phis))
    if args.format == "json":
        import json
        print(json.dumps({"study": cfg.name, "best": {"alpha": alpha, "beta": beta, "gamma": gamma},
                          "winners": json.loads(winners.to_json(orient="records")),
                          "family": json.loads(family.to_json(orient="records"))}, indent=2))
    elif args.format == "csv":
        print_table(family, "csv")
    else:
        print(f"study {cfg.name}: {_summary(table)}")
        print("\nwinners (best first):")
        print_table(winners, "table")
        print(f"\nfamily of the best coefficients (alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g}) on "
              f"{cfg.space}:")
        print_table(family, "table")
    return 0


def _summary(table: pd.DataFrame) -> str:
    counts = table["state"].value_counts()
    return ", ".join(f"{counts[s]} {s}" for s in ("complete", "pruned", "infeasible", "fail", "running", "waiting")
                     if s in counts)


def cmd_scale_show(args: argparse.Namespace) -> int:
    from nas.search.scale import trials_table
    from nas.study import load_stored_study

    study, _ = load_stored_study(args.study, args.storage)
    table = trials_table(study)
    if table.empty:
        raise NasError(f"study '{study.study_name}' has no trials yet: run it with nas scale run")
    table = table.sort_values(["rank", "trial"], na_position="last")
    if args.format == "table":
        print(f"study {study.study_name}: {_summary(table)}")
    print_table(table, args.format)
    return 0


def _scale_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="compound-coefficient search (alpha, beta, gamma)")
    scale_sub = p.add_subparsers(dest="scale", required=True, parser_class=_Parser)
    r = scale_sub.add_parser("run", help="run or resume a coefficient search from a study file",
                             description="Run or resume the study; ends with the winners and the family "
                                         "materialized from the best coefficients.")
    r.add_argument("study", help="study file, e.g. studies/quickstart.yaml")
    _add_run_options(r, "the study file's, else runs/<name>/study.db")
    r.add_argument("--phi", default="0-7", help="family members to materialize at the end (default 0-7)")
    r.add_argument("--top", type=int, default=5, help="winners to list (default 5)")
    _add_format(r)
    r.set_defaults(func=cmd_scale_run)
    s = scale_sub.add_parser("show", help="trials, feasibility and winners of a study")
    s.add_argument("study", help="study name (runs/<name>/), study file, or name with --storage")
    s.add_argument("--storage", help="storage URL")
    _add_format(s)
    s.set_defaults(func=cmd_scale_show)


# ------------------------------------------------------------------------------------------- arch

def _arch_job(path: str):
    from nas.search.arch import ArchJob
    from nas.study import load_study

    cfg = load_study(path)
    if cfg.arch is None:
        raise NasError(f"{path} defines a coefficient search (no 'arch' section): run it with nas scale run")
    return ArchJob(cfg)


def cmd_arch_run(args: argparse.Namespace) -> int:
    from nas.search.arch import arch_table

    study = _run_job(_arch_job(args.study), args, "arch run")
    if study is None:
        return 130
    return _print_arch(study, arch_table(study), args.format, args.top)


def _print_arch(study, table: pd.DataFrame, fmt: str, top: int) -> int:
    if table.empty or table["best"].isna().all():
        raise NasError(f"study '{study.study_name}' has no complete trial yet: run or resume it with nas arch run")
    best = table[table["best"].notna()].sort_values("best")
    label = "Pareto set" if len(study.directions) > 1 else "best by reward"
    if fmt == "table":
        print(f"study {study.study_name}: {_summary(table)}\n\n{label}:")
        print_table(best.head(top), "table")
    else:
        print_table(best, fmt)
    return 0


def cmd_arch_show(args: argparse.Namespace) -> int:
    from nas.search.arch import arch_table
    from nas.study import load_stored_study

    study, _ = load_stored_study(args.study, args.storage)
    table = arch_table(study)
    if args.all and not table.empty:
        print_table(table, args.format)
        return 0
    return _print_arch(study, table, args.format, args.top)


def cmd_arch_export(args: argparse.Namespace) -> int:
    from nas.flops import flops_at, params_of
    from nas.search.arch import trial_spec
    from nas.space import export_spec
    from nas.spec import save_spec
    from nas.study import load_stored_study

    study, _ = load_stored_study(args.study, args.storage)
    out = Path(args.out)
    spec = export_spec(trial_spec(study, args.trial), name=args.name or out.stem,
                       description=f"trial {args.trial} of block-level study {study.study_name}")
    save_spec(spec, out)
    print(f"wrote {out}: {params_of(spec):,} params, {flops_at(spec, spec.resolution) / 1e6:.1f} MFLOPs at "
          f"{spec.resolution} px; scale it with a study whose space is {out}", file=sys.stderr)
    return 0


def _arch_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch", help="block-level architecture search (kernel, expansion, SE, depth)")
    arch_sub = p.add_subparsers(dest="arch", required=True, parser_class=_Parser)
    r = arch_sub.add_parser("run", help="run or resume a block-level search from a study file")
    r.add_argument("study", help="study file with an 'arch' section, e.g. studies/arch_quickstart.yaml")
    _add_run_options(r, "the study file's, else runs/<name>/study.db")
    r.add_argument("--top", type=int, default=5, help="rows of the best/Pareto table (default 5)")
    _add_format(r)
    r.set_defaults(func=cmd_arch_run)
    s = arch_sub.add_parser("show", help="the best trials by reward, or the Pareto set")
    s.add_argument("study", help="study name (runs/<name>/), study file, or name with --storage")
    s.add_argument("--storage", help="storage URL")
    s.add_argument("--top", type=int, default=10, help="rows (default 10)")
    s.add_argument("--all", action="store_true", help="every trial, not only the best")
    _add_format(s)
    s.set_defaults(func=cmd_arch_show)
    e = arch_sub.add_parser("export", help="write a trial's network as a base-network file",
                            description="Write the network of one complete trial as a base-network YAML file "
                                        "that nas scale run (space: FILE) and nas materialize --space FILE accept.")
    e.add_argument("study", help="study name, study file, or name with --storage")
    e.add_argument("--trial", type=int, required=True, help="trial number (see nas arch show)")
    e.add_argument("--out", required=True, help="YAML file to write, e.g. search_spaces/my_base.yaml")
    e.add_argument("--name", help="network name (default: the file's stem)")
    e.add_argument("--storage", help="storage URL")
    e.set_defaults(func=cmd_arch_export)


# ---------------------------------------------------------------------------------------- latency

def _latency_options(p: argparse.ArgumentParser, inherited: bool) -> None:
    """Options every latency command takes. `nas latency` holds their defaults; the table subcommands repeat
    them with no default of their own (SUPPRESS), so an option given before the subcommand is not reset."""
    from nas.latency import RUNTIMES, LatencySettings

    d = LatencySettings()

    def default(value: object) -> object:
        return argparse.SUPPRESS if inherited else value

    p.add_argument("--space", default=default(None),
                   help="base network: a name in search_spaces/ or a YAML path (default efficientnet_b0)")
    p.add_argument("--resolution", type=int, default=default(None),
                   help="resolution of the base (phi = 0) network (default: the space's)")
    p.add_argument("--device", default=default(None), help=f"cpu, cuda or cuda:N (default {d.device})")
    p.add_argument("--batch-size", type=int, default=default(None), help=f"images per run (default {d.batch_size})")
    p.add_argument("--threads", type=int, default=default(None), help="CPU threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=default(None), help=f"untimed runs first (default {d.warmup})")
    p.add_argument("--repeats", type=int, default=default(None), help=f"timed runs, >= 3 (default {d.repeats})")
    p.add_argument("--runtime", choices=RUNTIMES, default=default(None),
                   help=f"eager PyTorch or an ONNX Runtime CPU session, if installed (default {d.runtime})")
    p.add_argument("--quiet", action="store_true", default=default(False), help="no progress on stderr")
    p.add_argument("--format", choices=FORMATS, default=default("table"),
                   help="table for people, json or csv for scripts (stdout alone)")


def _latency_settings(args: argparse.Namespace, base=None):
    """The options given, over `base` (the defaults, or a loaded table's settings)."""
    import dataclasses

    from nas.latency import LatencySettings

    given = {k: getattr(args, k) for k in ("device", "batch_size", "warmup", "repeats", "threads", "runtime")
             if getattr(args, k) is not None}
    return dataclasses.replace(base or LatencySettings(), **given)


def _latency_networks(args: argparse.Namespace) -> list:
    """One network (--width/--depth) or a family (--preset paper, or --alpha/--beta/--gamma) over --phi."""
    from nas.family import compound_family, paper_family
    from nas.scaling import PAPER_TABLE
    from nas.spec import load_spec

    base = load_spec(args.space or "efficientnet_b0")
    if args.resolution:
        base = base.replace(resolution=args.resolution)
    coeffs = (args.alpha, args.beta, args.gamma)
    compound_given = any(c is not None for c in coeffs)
    if args.preset and compound_given:
        raise NasError("--preset and --alpha/--beta/--gamma exclude each other: give one of them")
    if not (args.preset or compound_given):
        if args.phi is not None:
            raise NasError("--phi picks family members: add --preset paper or --alpha --beta --gamma")
        return [_width_depth_member(base, args.width, args.depth)]
    if (args.width, args.depth) != (1.0, 1.0):
        raise NasError("give --width/--depth for one network or a family (--preset, --alpha/--beta/--gamma), not both")
    phis = parse_phis(args.phi or "0-3")
    if compound_given:
        if any(c is None for c in coeffs):
            raise NasError("a compound family needs all of --alpha --beta --gamma")
        return [s for _, s in compound_family(base, *coeffs, phis)]
    members = [s for _, s in paper_family(base, phis)]
    if args.resolution:  # the table's resolutions keep their ratio to B0's on a base of --resolution px
        b0_resolution = PAPER_TABLE["B0"][2]
        members = [s.replace(resolution=round(s.resolution * args.resolution / b0_resolution)) for s in members]
    return members


def cmd_latency(args: argparse.Namespace) -> int:
    from nas.latency import measure_networks

    settings = _latency_settings(args)
    specs = _latency_networks(args)
    print_table(measure_networks(specs, settings, progress=None if args.quiet else stderr_progress), args.format)
    return 0


def _print_accuracy(accuracy, fmt: str) -> None:
    """Per-network rows and the summary (mean abs error, Spearman rho); csv keeps stdout to the rows."""
    if fmt == "json":
        import json
        print(json.dumps({"summary": accuracy.to_dict(),
                          "networks": json.loads(accuracy.rows.to_json(orient="records"))}, indent=2))
        return
    print_table(accuracy.rows, fmt)
    print(accuracy.summary(), file=sys.stdout if fmt == "table" else sys.stderr)


def cmd_latency_table_build(args: argparse.Namespace) -> int:
    from nas.latency import build_table, check_sample_size, evaluate_table, sample_networks
    from nas.spec import load_spec

    check_sample_size(args.samples)
    settings = _latency_settings(args)
    space = args.space or "efficientnet_b0"
    base = load_spec(space)
    resolution = args.resolution or base.resolution
    progress = None if args.quiet else stderr_progress
    table = build_table(sample_networks(base, args.samples, args.seed, resolution), settings, progress=progress,
                        built_from={"space": space, "resolution": resolution, "samples": args.samples,
                                    "seed": args.seed})
    table.save(args.out)
    print(f"wrote {len(table.entries)} pieces to {args.out}; evaluating on a held-out sample (seed {args.seed + 1})",
          file=sys.stderr)
    held_out = sample_networks(base, args.samples, args.seed + 1, resolution)
    _print_accuracy(evaluate_table(table, held_out, progress=progress), args.format)
    return 0


def cmd_latency_table_eval(args: argparse.Namespace) -> int:
    from nas.latency import LatencyTable, check_sample_size, evaluate_table, sample_networks
    from nas.spec import load_spec

    check_sample_size(args.samples)
    table = LatencyTable.load(args.table)
    settings = _latency_settings(args, table.settings)
    built = table.built_from
    base = load_spec(args.space or built.get("space", "efficientnet_b0"))
    resolution = args.resolution or built.get("resolution") or base.resolution
    seed = args.seed if args.seed is not None else built.get("seed", 0) + 1
    specs = sample_networks(base, args.samples, seed, resolution)
    _print_accuracy(evaluate_table(table, specs, settings, progress=None if args.quiet else stderr_progress),
                    args.format)
    return 0


def _latency_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measured latency of a network or family; per-block lookup tables",
                       description="Time one network or a family on a device (median and 10-90 % spread after "
                                   "warm-up), or build and evaluate a per-block latency lookup table "
                                   "(nas latency table build|eval). Protocol and figures: docs/latency.md.")
    _latency_options(p, inherited=False)
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of one network (default 1)")
    p.add_argument("--depth", type=float, default=1.0, help="depth multiplier of one network (default 1)")
    p.add_argument("--preset", choices=("paper",), help="the paper's B0..B7 (with --phi)")
    p.add_argument("--alpha", type=float, help="compound family: depth coefficient")
    p.add_argument("--beta", type=float, help="compound family: width coefficient")
    p.add_argument("--gamma", type=float, help="compound family: resolution coefficient")
    p.add_argument("--phi", help="family members: a range 0-3, a list 0,0.5,1 or one value (default 0-3)")
    p.set_defaults(func=cmd_latency)
    table = p.add_subparsers(dest="latency_table", parser_class=_Parser).add_parser(
        "table", help="per-block latency lookup tables: build, eval")
    actions = table.add_subparsers(dest="table_action", required=True, parser_class=_Parser)
    b = actions.add_parser("build", help="time every block of a seeded sample of networks once; write the table",
                           description="Time each distinct stem, block and head of --samples seeded networks "
                                       "once, write the table, then report prediction against measurement on a "
                                       "held-out sample (seed + 1).")
    _latency_options(b, inherited=True)
    b.add_argument("--samples", type=int, default=8, help="networks to build from, and to evaluate on (default 8)")
    b.add_argument("--seed", type=int, default=0, help="seed of the build sample (default 0)")
    b.add_argument("--out", required=True, help="the table's JSON file")
    b.set_defaults(func=cmd_latency_table_build)
    e = actions.add_parser("eval", help="prediction error and rank correlation of a table on sample networks",
                           description="Measure --samples seeded networks whole and compare with the table's "
                                       "prediction; pieces the table lacks are timed first (new_pieces). Space, "
                                       "resolution and measurement settings default to the table's; a setting "
                                       "that differs from the table's is an error.")
    _latency_options(e, inherited=True)
    e.add_argument("--table", required=True, help="a table written by nas latency table build")
    e.add_argument("--samples", type=int, default=8, help="networks to evaluate on (default 8)")
    e.add_argument("--seed", type=int, help="seed of the sample (default: the table's build seed + 1)")
    e.set_defaults(func=cmd_latency_table_eval)


# --------------------------------------------------------------------------------------- frontier

def _searched_families(configs, studies, given):
    """The compound families to compare: coefficients given by hand, then each study's winner."""
    from nas.search.frontier import compound_family
    from nas.search.scale import best_coefficients

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


def _proxy_identity(cfg) -> dict:
    return {"space": cfg.space, "proxy": cfg.to_dict()["proxy"], "seed": cfg.seed}


def cmd_frontier(args: argparse.Namespace) -> int:
    import dataclasses

    from nas.report import frontier_title, write_frontier
    from nas.search.frontier import FrontierJob, frontier_table, paper_family, single_families
    from nas.search.scale import trials_table
    from nas.study import find_study_config, load_stored_study

    given = (args.alpha, args.beta, args.gamma)
    if any(v is not None for v in given) and any(v is None for v in given):
        raise NasError("give all three of --alpha, --beta and --gamma, or none (to use the studies' winners)")
    configs = [find_study_config(s, args.storage) for s in args.study]
    studies = [load_stored_study(c.name, c.storage_url())[0] for c in configs]
    cfg = configs[0]
    for other in configs[1:]:
        if _proxy_identity(other) != _proxy_identity(cfg):
            raise NasError(f"studies {cfg.name} and {other.name} train different proxies (base, data or budget): "
                           f"a frontier compares families on one proxy; run one frontier per study")
    wanted = [f.strip() for f in args.families.split(",") if f.strip()]
    known = ("searched", "paper", "width", "depth", "resolution")
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise NasError(f"--families {unknown[0]!r} is not known: use some of {','.join(known)}")
    families = _searched_families(configs, studies, None if given[0] is None else given) if "searched" in wanted else []
    if not families:
        raise NasError("--families must include searched: the baselines are matched to the searched family's FLOPs")
    if "paper" in wanted:
        families.append(paper_family())
    families += [f for f in single_families() if f.name in wanted]
    latency = None
    if not args.no_latency:
        latency = cfg.search.latency
        if args.latency_device:
            latency = dataclasses.replace(latency, device=args.latency_device)
    job = FrontierJob(cfg, tuple(families), tuple(parse_phis(args.phis)), seeds=args.seeds,
                      tolerance=args.tolerance, latency=latency)
    study = _run_job(job, args, "frontier")
    if study is None:
        return 130
    table = frontier_table(study)
    table = table[table["family"].isin([f.name for f in families]) & table["phi"].isin(job.phis)]
    table = table.reset_index(drop=True)
    out = Path(args.out) if args.out else cfg.run_dir / "frontier"
    title, subtitle = frontier_title(cfg.to_dict(), args.seeds)
    written = write_frontier(table, out, title, subtitle, trials_table(studies[0]))
    print_table(table.drop(columns=["label", "network"]) if args.format == "table" else table, args.format)
    if args.format == "table":
        missing = table["seeds"] < args.seeds
        if missing.any():
            print(f"\n{int(missing.sum())} member(s) have fewer than {args.seeds} finished seeds: their runs "
                  f"failed (see the trials of study {job.study_name}); accuracy is over the seeds that finished")
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


def _frontier_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frontier", help="proxy-train the searched family against the paper's and single-dimension "
                                        "baselines; table and plots",
                       description="Proxy-train family members phi = 0..k of the searched coefficients, the "
                                   "paper's (1.2, 1.1, 1.15), and width-, depth- and resolution-only scaling at "
                                   "matched FLOPs, several seeds each; every run is a trial in the study's "
                                   "storage (study <name>-frontier), so an interrupted frontier resumes. Writes "
                                   "frontier.csv/.json and PNG + SVG figures. Guide: docs/frontier.md.")
    p.add_argument("study", nargs="+", help="coefficient study: name (runs/<name>/), study file, or name with "
                                            "--storage; several studies with the same proxy add one line each")
    p.add_argument("--phis", default="0-2", help="family members to train (default 0-2; each step doubles the cost)")
    p.add_argument("--seeds", type=int, default=3, help="proxy runs per member (default 3)")
    p.add_argument("--families", default="searched,paper,width,depth,resolution",
                   help="which lines to train (default all five)")
    p.add_argument("--alpha", type=float, help="compare these coefficients (with --beta, --gamma) on the study's "
                                               "proxy, beside its winner when it has one")
    p.add_argument("--beta", type=float)
    p.add_argument("--gamma", type=float)
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="single-dimension baselines must match the searched member's FLOPs within this (default "
                        "0.1); a baseline that rounding keeps further away is trained, plotted at its own FLOPs, "
                        "and flagged")
    p.add_argument("--no-latency", action="store_true", help="skip measuring latency (no accuracy-vs-latency figure)")
    p.add_argument("--latency-device", help="device to time on (default: the study's search.latency.device)")
    _add_run_options(p, "the study's")
    p.add_argument("--out", help="folder for the table and figures (default runs/<name>/frontier)")
    _add_format(p)
    p.set_defaults(func=cmd_frontier)


# ----------------------------------------------------------------------------------------- report

def _report_parts(study, config: dict):
    """(history, winners, family, family caption, grid) of a coefficient or block-level search."""
    if config.get("arch") is not None:
        from nas.search.arch import arch_table
        table = arch_table(study)
        winners = table[table["best"].notna()].sort_values("best").head(10) if not table.empty else table
        caption = ("A block-level search has no family of its own: export its best network (nas arch export) "
                   "and scale it with a coefficient search.")
        return table, winners, pd.DataFrame(), caption, None
    from nas.family import compound_family, family_table
    from nas.search.scale import ranked_winners, trials_table
    from nas.spec import load_spec
    table = trials_table(study)
    if not ranked_winners(study):
        return table, pd.DataFrame(), pd.DataFrame(), "No winner yet, so no family.", table
    winners = table[table["rank"].notna()].sort_values("rank").head(10)
    alpha, beta, gamma = winners.iloc[0][["alpha", "beta", "gamma"]]
    family = family_table(compound_family(load_spec(config["space"]), alpha, beta, gamma, range(8)),
                          progress=stderr_progress)
    caption = (f"The best coefficients (alpha {alpha:.4g}, beta {beta:.4g}, gamma {gamma:.4g}) applied to the full-size "
               f"{config['space']} at its native resolution, phi = 0..7 (nas materialize --study {study.study_name}).")
    return table, winners, family, caption, table


def cmd_report(args: argparse.Namespace) -> int:
    import optuna

    from nas.report import render_report
    from nas.search.frontier import frontier_table
    from nas.study import RUNS_DIR, load_stored_study, open_storage

    study, url = load_stored_study(args.study, args.storage)
    config = study.user_attrs.get("config")
    if config is None:
        raise NasError(f"study '{study.study_name}' in {url} was not created by nas: nothing to report")
    history, winners, family, caption, grid = _report_parts(study, config)
    if history.empty:
        raise NasError(f"study '{study.study_name}' has no trials yet: run it first")
    try:
        frontier = frontier_table(optuna.load_study(study_name=f"{study.study_name}-frontier", storage=open_storage(url)))
    except KeyError:
        frontier = None
    page = render_report(study.study_name, config, history, winners, family, caption, frontier, grid, url)
    out = Path(args.out) if args.out else RUNS_DIR / study.study_name / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) / 1024:.0f} KiB); open it in a browser, no server needed", file=sys.stderr)
    print(out)
    return 0


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page for a study",
                       description="Write one HTML page, images embedded: study definition, search history, "
                                   "winners, family table and frontier plots (when nas frontier has run).")
    p.add_argument("study", help="study name (runs/<name>/), study file, or name with --storage")
    p.add_argument("--storage", help="storage URL")
    p.add_argument("--out", help="the HTML file to write (default runs/<name>/report.html)")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Search EfficientNet scaling coefficients and architectures, "
                                             "then build model families.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _materialize_parser(sub)
    _train_parser(sub)
    _bench_parser(sub)
    _latency_parser(sub)
    _scale_parser(sub)
    _arch_parser(sub)
    _frontier_parser(sub)
    _report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except NasError as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130
    except SearchAborted as e:
        print(f"nas {args.command}: stopped: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout closed early (nas ... | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
