"""`nas materialize`: family members from the paper's table, given coefficients or a study's winner; their
spec files and their exports (a plain-PyTorch module, ONNX files)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from nas.commands import SPACE_HELP, add_coefficients, command, progress_of
from nas.commands.networks import parse_phis, writable_folder
from nas.console import print_table
from nas.errors import NasError

if TYPE_CHECKING:          # pandas, torch and the family load with the command, not with `nas --help`
    import pandas as pd

    from nas.family import Member
    from nas.study import Coefficients


EXPORTS = ("pytorch", "onnx")
MAX_CLASSES = 100_000


def cmd_materialize(args: argparse.Namespace) -> int:
    from nas.family import write_family

    exports = _exports(args)          # before any work: a latency family takes minutes to time
    out = writable_folder(Path(args.out)) if args.out else None
    probed = _probe_results(args)
    members, df, family = _family(args, parse_phis(args.phi), progress_of(args))
    if probed:
        from nas.latency.probe import with_probed_latency
        df = with_probed_latency(df, members, probed, args.num_classes)
        print(f"latency_ms: {probed.describe()}, read from {probed.path}", file=sys.stderr)
    if out:
        written = write_family(members, out)
        print(f"wrote {len(written)} spec files to {out}", file=sys.stderr)
        _export(exports, members, family, out, args)
    print_table(df, args.format)
    return 0


def _probe_results(args: argparse.Namespace) -> Any:
    """--latency-from's probe results, read and checked before any work (None without it)."""
    if not args.latency_from:
        return None
    from nas.latency.probe import ProbeResults
    return ProbeResults.load(args.latency_from)


def _exports(args: argparse.Namespace) -> list[str]:
    """--export's formats (repeated or comma-separated), checked with --out and --num-classes before any work."""
    formats = list(dict.fromkeys(f.strip() for value in args.export or [] for f in value.split(",") if f.strip()))
    unknown = [f for f in formats if f not in EXPORTS]
    if unknown:
        raise NasError(f"--export {unknown[0]}: choose {' or '.join(EXPORTS)} (repeat --export or give a comma list)")
    if formats and not args.out:
        raise NasError(f"--export {','.join(formats)} needs --out DIR to write into")
    if not 1 <= args.num_classes <= MAX_CLASSES:
        raise NasError(f"--num-classes {args.num_classes}: give 1..{MAX_CLASSES:,}")
    if "onnx" in formats:
        from nas.export.onnx import require_onnx
        require_onnx()
    return formats


def _export(formats: list[str], members: list[Member], family: str, out: Path, args: argparse.Namespace) -> None:
    """The family as one PyTorch module (out/<base network>.py) and/or one ONNX file a member, each checked."""
    from nas.validation import file_in

    try:
        if "pytorch" in formats:
            from nas.export.pytorch import export_pytorch, module_name

            path = export_pytorch(members, file_in(out, module_name(family), ".py"), args.num_classes)
            print(f"wrote {path}: {len(members)} members in plain PyTorch, each made by {path.stem}.build(name) "
                  f"(docs/export.md)", file=sys.stderr)
        if "onnx" in formats:
            from nas.export.onnx import export_onnx
            from nas.latency.runtimes import ONNX_OPSET

            for e in export_onnx(members, out, args.num_classes, progress=progress_of(args)):
                print(f"wrote {e.path}: opset {ONNX_OPSET}, input 1 x 3 x {e.resolution} x {e.resolution}; ONNX Runtime's "
                      f"logits match PyTorch's within {e.max_abs_diff:.1e}", file=sys.stderr)
    except OSError as e:
        raise NasError(f"--out {out}: cannot write there ({e.strerror}): give a writable folder") from None


def _family(args: argparse.Namespace, phis: list[float], progress: Any) -> tuple[list[Member], pd.DataFrame, str]:
    """(members, their table, their base network's name) from --preset, --alpha/--beta/--gamma or --study, built by
    nas.study.materialize: a study's family is the one its run built (nas.family.study_family), from the confirmed
    best once `nas scale confirm` has run, unless --nominal asks for the compound rule as it is."""
    from nas.spec import load_spec
    from nas.study import materialize, study_result

    given = (args.alpha, args.beta, args.gamma)
    sources = sum([bool(args.preset), any(c is not None for c in given), bool(args.study)])
    if sources > 1:
        raise NasError("--preset, --alpha/--beta/--gamma and --study exclude each other: give one of them")
    if sources == 0 or (not args.study and not args.preset and any(c is None for c in given)):
        raise NasError("give --preset paper, all three of --alpha --beta --gamma, or --study STUDY")
    if args.preset and args.exact_cost:
        raise NasError("--exact-cost solves resolutions of a compound family; --preset paper is the paper's table "
                       "as it is: drop one of them")
    options = {"space": args.space, "resolution_multiple": args.resolution_multiple, "progress": progress}
    if args.study:
        result = study_result(args.study, args.storage)
        name = result.config.name
        if result.confirmed:
            print(f"study '{name}': {result.confirmed}", file=sys.stderr)
        family = materialize(result, phis, exact_cost=args.exact_cost, **options)    # refuses a study without one
        alpha, beta, gamma = cast("Coefficients", result.best)
        solved = f"; each member's resolution solved on its {family.solved_on}" if family.solved_on else ""
        print(f"study '{name}': best coefficients alpha {alpha:.4g} beta {beta:.4g} gamma {gamma:.4g}{solved}",
              file=sys.stderr)
        space = args.space or result.config.space
    else:
        family = materialize("paper" if args.preset else given, phis, exact_cost=args.exact_cost, **options)
        space = args.space or "efficientnet_b0"
    return list(family.members), family.table, load_spec(space).name


def add_parser(sub: Any) -> None:
    p = command(sub, "materialize", cmd_materialize, "build a family from coefficients or the paper's table",
                 "Build family members phi = 0..7 (or any phi) from scaling coefficients or the paper's B0..B7 "
                 "table; print params, measured FLOPs and activations, and the FLOPs ratio to the base next to 2^phi. With "
                 "--out, write each member's spec, and with --export the family as a plain-PyTorch module or ONNX "
                 "files that need no effnas.", quiet=True)
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
    p.add_argument("--out", help="write one spec YAML per member (<member>.yaml) into this folder")
    p.add_argument("--export", action="append", metavar="pytorch|onnx",
                   help="with --out, also write the family for use without effnas: pytorch, one plain-PyTorch "
                        "module <base network>.py that builds every member by name; onnx, <member>.onnx each "
                        "(opset 17, batch 1), checked in ONNX Runtime. Repeat it or give a comma list "
                        "(docs/export.md)")
    p.add_argument("--latency-from", metavar="RESULTS.json",
                   help="each member's latency as the device probe timed it (nas latency probe export with the same "
                        "family flags, then the probe on the device; docs/latency.md)")
    p.add_argument("--num-classes", type=int, default=1000,
                   help="classifier size (default 1000): of the ONNX models and the PyTorch module's default with "
                        "--export, and of the networks --latency-from looks up")
