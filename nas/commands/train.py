"""`nas train`, `nas bench proxy` and `nas bench search`: one proxy training run, the engine against a plain
loop, and where a search trial's time goes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nas.commands import SPACE_HELP, add_coefficients, command, group, progress_of
from nas.config import TrainConfig
from nas.console import print_table
from nas.errors import ExitCode, NasError


def _add_training(p: argparse.ArgumentParser) -> None:
    """Proxy-training settings shared by the commands that train."""
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--optimizer", default=d.optimizer, help="adamw (default), sgd or rmsprop")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: this run's share of the cores, those other "
                   "programs and nas runs leave: docs/training.md)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on GPU)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=d.cuda_graphs,
                   help="on CUDA, capture the training step once as a CUDA graph and replay it (default on; "
                        "ignored on the CPU)")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       device=args.device, seed=args.seed, threads=args.threads, compile=args.compile,
                       cuda_graphs=args.cuda_graphs)


def cmd_train(args: argparse.Namespace) -> int:
    from nas.commands.networks import networks_from_flags
    from nas.data import load_dataset
    from nas.device import resolve_device
    from nas.flops import count_flops
    from nas.proxy import train

    cfg = _train_config(args)
    device = resolve_device(cfg.device)
    [(_, spec)] = networks_from_flags(args.space, args.resolution, args.stem_stride, args.width, args.depth,
                                      alpha=args.alpha, beta=args.beta, gamma=args.gamma, phi=args.phi,
                                      default_phis=None, one=True)
    progress = progress_of(args)
    data = load_dataset(args.dataset, per_class=args.per_class, fraction=args.fraction, seed=args.seed)
    fc = count_flops(spec, spec.resolution, data.in_channels, data.num_classes)
    if progress:
        progress(data.describe())
        progress(f"training {spec.name} at {spec.resolution} px: {fc.params:,} params, "
                 f"{fc.flops / 1e6:.1f} MFLOPs, {cfg.epochs} epochs on {device}")
    result = train(spec, data, cfg, callback=None, progress=progress)
    summary = result.summary(spec, data.name, fc.params, fc.flops)
    if args.format == "json":
        print(json.dumps({**summary, "reason": result.reason, "history": [e.__dict__ for e in result.epochs]},
                         indent=2))
    elif args.format == "csv":
        import pandas as pd
        print_table(pd.DataFrame([summary]), "csv")
    else:
        width = max(map(len, summary))
        print("\n".join(f"{k:<{width}}  {v}" for k, v in summary.items()))
    if result.status in ("diverged", "oom"):
        print(f"nas train: {result.status}: {result.reason}", file=sys.stderr)
        return ExitCode.BUG
    return 0


def add_train_parser(sub: Any) -> None:
    p = command(sub, "train", cmd_train, "one proxy training run of one network",
                 "Train one network from scratch on a proxy data set and report validation accuracy per epoch, "
                 "throughput, params and FLOPs.", quiet=True)
    p.add_argument("--space", default="efficientnet_b0", help=SPACE_HELP)
    p.add_argument("--resolution", type=int, default=32,
                   help="resolution of the base (phi = 0) network for the proxy (default 32)")
    p.add_argument("--stem-stride", type=int, choices=(1, 2), help="override the base's stem stride")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (default 1)")
    p.add_argument("--depth", type=float, default=1.0, help="depth multiplier (default 1)")
    add_coefficients(p)
    p.add_argument("--phi", help="compound rule: exponent (one value)")
    p.add_argument("--dataset", default="digits",
                   help="digits (bundled), a CIFAR batch folder, an image folder or a .npz file")
    p.add_argument("--per-class", type=int, help="keep N training images per class")
    p.add_argument("--fraction", type=float, help="keep this fraction of the training split")
    _add_training(p)


def cmd_bench_proxy(args: argparse.Namespace) -> int:
    from nas.bench import bench_proxy
    from nas.commands.networks import networks_from_flags

    [(_, spec)] = networks_from_flags(args.space, width=args.width, depth=args.depth)
    print_table(bench_proxy([spec], _resolutions(args.resolutions), _train_config(args), images=args.images,
                            seeds=args.seeds, progress=progress_of(args)), args.format)
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    from nas.bench import bench_search, split_summary
    from nas.config import load_study

    table, prepare_s = bench_search(load_study(args.study), args.trials, progress_of(args))
    print_table(table, args.format)
    if args.format == "table":
        print("\n" + "\n".join(split_summary(table, prepare_s)))
    return 0


def _resolutions(text: str) -> list[int]:
    """--resolutions '32,64' -> [32, 64]: whole pixel sizes from 8 to 1024."""
    try:
        resolutions = [int(r) for r in text.split(",")]
    except ValueError:
        raise NasError(f"--resolutions {text!r}: give comma-separated integers such as 32,64") from None
    bad = [r for r in resolutions if not 8 <= r <= 1024]
    if bad:
        raise NasError(f"--resolutions {text!r}: {bad[0]} px is outside 8..1024; give sizes such as 32,64")
    return resolutions


def add_bench_parser(sub: Any) -> None:
    actions = group(sub, "bench", "throughput benchmarks against a plain reference loop, and search trials")
    s = command(actions, "search", cmd_bench_search, "where a search trial's time goes",
                 "Run a study's first trained trials in a study held in memory (the study's storage is not "
                 "touched) and split each trial's wall time: set-up, training, evaluation, other; with trials per "
                 "hour and the load beside each trial. Guide: docs/benchmarks.md.", quiet=True)
    s.add_argument("study", help="study file, or an example's name (quickstart, arch_quickstart)")
    s.add_argument("--trials", type=int, default=3, help="trained trials to time (default 3)")
    q = command(actions, "proxy", cmd_bench_proxy,
                 "training images/s: the proxy engine vs a plain loop",
                 "Images per second of training steps, the proxy engine next to a plain fp32 NCHW DataLoader "
                 "loop measured in the same run.", quiet=True)
    q.add_argument("--space", default="efficientnet_b0", help=f"{SPACE_HELP} (default efficientnet_b0)")
    q.add_argument("--width", type=float, default=1.0, help="width multiplier of the benchmarked network")
    q.add_argument("--depth", type=float, default=1.0, help="depth multiplier of the benchmarked network")
    q.add_argument("--resolutions", default="32,64", help="comma-separated (default 32,64)")
    q.add_argument("--images", type=int, default=1024, help="images per timed epoch (default 1024)")
    q.add_argument("--seeds", type=int, default=1,
                   help="also time this many seeds fused into one job (total img/s; default 1: not timed)")
    _add_training(q)
