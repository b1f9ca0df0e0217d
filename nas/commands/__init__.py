"""The `nas` subcommands, one module per command group: each declares its arguments (`add_parser`) and
its handlers (`cmd_*`), which parse, call the module that owns the work, and print. No domain rule lives
here. What they share is below: one-line argparse errors, --format/--quiet, run options, coefficients.
Domain modules are imported inside each handler, so `nas --help` loads no torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from nas.console import FORMATS, stderr_progress
from nas.errors import NasError

SPACE_HELP = "base network: a packaged name (efficientnet_b0, ...) or a YAML path"
STUDY_HELP = "study name (runs/<name>/), study file, or name with --storage"


class Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as one line (and exit 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command(sub: Any, name: str, func: Any, help: str, description: str | None = None,
            table: bool = True, quiet: bool = False) -> argparse.ArgumentParser:
    """A subcommand running `func`, with --format (when it prints a table) and --quiet (when it has progress)."""
    p = sub.add_parser(name, help=help, description=description or help)
    if table:
        p.add_argument("--format", choices=FORMATS, default="table",
                       help="table for people, json or csv for scripts (stdout alone)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=func)
    return p


def group(sub: Any, name: str, help: str) -> Any:
    """`nas NAME ACTION ...`: a command group whose actions are added to what this returns."""
    return sub.add_parser(name, help=help).add_subparsers(dest=name, required=True, parser_class=Parser)


def add_run_options(p: argparse.ArgumentParser,
                    storage_default: str = "the study file's, else runs/<name>/study.db") -> None:
    p.add_argument("--workers", type=int,
                   help="worker processes on this machine (default: the study file's workers, else 1; at most its "
                        "cores, or GPUs on CUDA)")
    p.add_argument("--force-workers", action="store_true", help="allow more workers than cores or GPUs")
    p.add_argument("--gpus", help="GPU ids to train on, e.g. 0,2: worker i takes the (i mod n)-th (default: every "
                                  "visible GPU when the study trains on CUDA)")
    p.add_argument("--storage", help=f"storage URL (default: {storage_default})")


def add_coefficients(p: argparse.ArgumentParser, what: str = "compound rule") -> None:
    p.add_argument("--alpha", type=float, help=f"{what}: depth coefficient (>= 1)")
    p.add_argument("--beta", type=float, help=f"{what}: width coefficient (>= 1)")
    p.add_argument("--gamma", type=float, help=f"{what}: resolution coefficient (>= 1)")


def parse_gpus(text: str) -> list[int]:
    """--gpus '0,2' -> [0, 2]: each GPU id once."""
    try:
        gpus = [int(g) for g in text.split(",")]
    except ValueError:
        raise NasError(f"--gpus {text!r}: give comma-separated GPU ids such as 0,2") from None
    if len(set(gpus)) < len(gpus) or any(g < 0 for g in gpus):
        raise NasError(f"--gpus {text}: give each GPU id (0 or more) once, such as 0,2; workers beyond the GPUs "
                       f"share them with --force-workers")
    return gpus


def progress_of(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Where a command's progress goes: stderr (nas.console: a live bar on a terminal, plain lines elsewhere),
    or nowhere under --quiet."""
    return None if getattr(args, "quiet", False) else stderr_progress


def run_job(job: Any, args: argparse.Namespace, command: str) -> Any:
    """Run or resume a search job with --workers/--storage, its progress on stderr unless --quiet; None when
    interrupted (Ctrl-C)."""
    from nas.search.runner import run_search
    try:
        return run_search(job, workers=args.workers, storage_url=args.storage, force_workers=args.force_workers,
                          gpus=None if args.gpus is None else parse_gpus(args.gpus), progress=progress_of(args))
    except KeyboardInterrupt:
        from nas.search.storage import masked
        print(f"nas {command}: interrupted; finished trials are kept in {masked(job.config.storage_url(args.storage))} "
              f"(study {job.study_name}): run the same command to resume", file=sys.stderr)
        return None
