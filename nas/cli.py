"""The `nas` command: the parser of every subcommand (nas/commands/) and what each kind of failure prints.

Exit codes (nas.errors.ExitCode): 0 success, 2 bad input (one line on stderr naming the fix), 130 interrupted,
1 anything else.
Every command that prints a table takes --format table|json|csv; json and csv go to stdout alone and
progress goes to stderr, so scripts can read stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nas.commands import Parser, frontier, latency, materialize, search, train
from nas.errors import ExitCode, NasError, SearchAborted
from nas.validation import InvalidField


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="nas", description="Search EfficientNet scaling coefficients and architectures, "
                                            "then build model families.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in (materialize.add_parser, train.add_train_parser, train.add_bench_parser, latency.add_parser,
                search.add_scale_parser, search.add_arch_parser, frontier.add_frontier_parser,
                frontier.add_report_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or ExitCode.OK
    except InvalidField as e:
        # A setting built from command-line options: name the option as the user typed it.
        # A command whose option is not named after the field says so (args.flag_names: field -> option).
        flag = getattr(args, "flag_names", {}).get(e.field, f"--{e.field.replace('_', '-')}")
        message = f"{flag} {e.value}: must be {e.allowed}" if e.source is None else str(e)
        print(f"nas {args.command}: error: {message}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except NasError as e:
        print(f"nas {args.command}: error: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except SearchAborted as e:
        print(f"nas {args.command}: stopped: {e}", file=sys.stderr)
        return ExitCode.BUG
    except BrokenPipeError:  # stdout closed early (nas ... | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
