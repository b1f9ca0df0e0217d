"""`nas materialize`: family members from the paper's table, given coefficients or a study's winner."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nas.commands import SPACE_HELP, add_coefficients, command, progress_of
from nas.console import print_table
from nas.errors import NasError


def cmd_materialize(args: argparse.Namespace) -> int:
    from nas.family import check_out_dir, family_table, materialize_members, with_measured_latency, write_family

    built = materialize_members(args.space, args.preset, (args.alpha, args.beta, args.gamma), args.study,
                                args.storage, args.phi, args.resolution_multiple, args.exact_cost,
                                progress_of(args))
    if args.save_models and not args.out:
        raise NasError("--save-models needs --out DIR to write the weights to")
    if args.out:
        check_out_dir(Path(args.out))
    if built.source:
        print(built.source, file=sys.stderr)
    df = family_table(built.members, reference=built.base, progress=progress_of(args), target=built.target,
                      nominal_resolutions=built.nominal_resolutions)
    if built.latency is not None:       # a latency study's family is handed over timed
        df = with_measured_latency(df, built.members, built.latency, progress_of(args))
    if args.out:
        written = write_family(built.members, Path(args.out), args.save_models, args.num_classes)
        print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    print_table(df, args.format)
    return 0


def add_parser(sub: Any) -> None:
    p = command(sub, "materialize", cmd_materialize, "build a family from coefficients or the paper's table",
                 "Build family members phi = 0..7 (or any phi) from scaling coefficients or the paper's B0..B7 "
                 "table; print params, measured FLOPs and activations, and the FLOPs ratio to the base next to 2^phi.", quiet=True)
    p.add_argument("--preset", choices=("paper",), help="the paper's per-model table B0..B7")
    add_coefficients(p)
    p.add_argument("--phi", default="0-7", help="members: a range 0-7, a list 0,0.5,1 or one value (default 0-7)")
    p.add_argument("--study", help="the best coefficients of a study: its name, study file, or with --storage")
    p.add_argument("--storage", help="storage URL of --study (default: runs/<study>/study.db)")
    p.add_argument("--space", help=f"{SPACE_HELP} (default efficientnet_b0, or the study's)")
    p.add_argument("--resolution-multiple", type=int, default=1,
                   help="round compound resolutions to this multiple (default 1)")
    cost = p.add_mutually_exclusive_group()
    cost.add_argument("--exact-cost", dest="exact_cost", action="store_true", default=None,
                      help="solve each member's resolution so its measured cost (FLOPs; a study's own cost with "
                           "--study) is 2^phi (the study's c^phi) times the base's (default with --study)")
    cost.add_argument("--nominal", dest="exact_cost", action="store_false",
                      help="resolution gamma^phi as the compound rule has it (default with --alpha/--beta/--gamma)")
    p.add_argument("--out", help="write one spec YAML per member into this folder")
    p.add_argument("--save-models", action="store_true", help="with --out, also save freshly built weights (.pt)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size of saved models (default 1000)")
