"""The `nas` command. Exit codes: 0 success, 2 bad input (one line on stderr), 1 anything else.

Every command that prints a table takes --format table|json|csv; json and csv go to stdout alone and
progress goes to stderr, so scripts can read stdout.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from nas.errors import NasError


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


def print_table(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    else:
        sys.stdout.write(df.to_string(index=False) + "\n")


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table for people, json or csv for scripts (stdout alone)")


# ------------------------------------------------------------------------------------ materialize

def cmd_materialize(args: argparse.Namespace) -> int:
    from nas.family import compound_family, family_table, paper_family, stderr_progress, write_family
    from nas.spec import load_spec

    coeffs = (args.alpha, args.beta, args.gamma)
    if args.preset and any(c is not None for c in coeffs):
        raise NasError("--preset paper and --alpha/--beta/--gamma exclude each other: give one of them")
    if not args.preset and any(c is None for c in coeffs):
        raise NasError("give --preset paper, or all three of --alpha --beta --gamma")
    if args.save_models and not args.out:
        raise NasError("--save-models needs --out DIR to write the weights to")
    base = load_spec(args.space)
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
    p.add_argument("--space", default="efficientnet_b0", help="base network: a name in search_spaces/ or a YAML path")
    p.add_argument("--resolution-multiple", type=int, default=1,
                   help="round compound resolutions to this multiple (default 1)")
    p.add_argument("--out", help="write one spec YAML per member into this folder")
    p.add_argument("--save-models", action="store_true", help="with --out, also save freshly built weights (.pt)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size of saved models (default 1000)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_format(p)
    p.set_defaults(func=cmd_materialize)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Search EfficientNet scaling coefficients and architectures, "
                                             "then build model families.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _materialize_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
