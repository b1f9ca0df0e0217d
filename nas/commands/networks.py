"""The networks a command's flags name: one base scaled by width and depth, the paper's B0..B7, or a compound
family over a list of phis; and the flags' own checks (a phi list, an output folder). Errors name the flag as
the user typed it; the domain functions below them take typed values."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import NasError
from nas.scaling import PAPER_TABLE, scale
from nas.spec import MAX_RESOLUTION, NetworkSpec, load_spec
from nas.validation import InvalidField

if TYPE_CHECKING:          # nas.family loads torch: with the command that builds networks, not with `nas --help`
    from nas.family import Member

MAX_PHI = 16
MAX_MEMBERS = 64

_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")


def parse_phis(text: str, flag: str = "--phi") -> list[float]:
    """'0-7' (whole steps from the low end), '0,0.5,1' or '3'; `flag` is the option the text came from."""
    m = _RANGE.match(text)
    if m:
        lo, hi = float(m[1]), float(m[2])
        if lo > hi:
            raise NasError(f"{flag} {text}: the range is empty, write it low-high such as 0-7")
        if hi - lo >= MAX_MEMBERS:
            raise NasError(f"{flag} {text}: {int(hi - lo) + 1} members, at most {MAX_MEMBERS}")
        phis = [lo + i for i in range(int(hi - lo) + 1)]
    else:
        try:
            phis = [float(p) for p in text.split(",") if p.strip()]
        except ValueError:
            phis = []
    if not phis or not all(math.isfinite(p) for p in phis):
        raise NasError(f"{flag} {text!r} is not a number, a range like 0-7 or a list like 0,0.5,1")
    for p in phis:
        if p < 0:
            raise NasError(f"{flag} {p:g} is negative: phi must be >= 0")
        if p > MAX_PHI:
            raise NasError(f"{flag} {p:g}: at most {MAX_PHI} (2^{MAX_PHI} times the base's cost)")
    if len(phis) > MAX_MEMBERS:
        raise NasError(f"{flag} {text}: {len(phis)} members, at most {MAX_MEMBERS}")
    return phis


def width_depth_member(base: NetworkSpec, width: float, depth: float) -> NetworkSpec:
    """`base` itself, or base scaled by a width and depth multiplier at its resolution (<base>-w<W>-d<D>)."""
    if (width, depth) == (1.0, 1.0):
        return base
    return scale(base, width, depth, base.resolution, name=f"{base.name}-w{width:g}-d{depth:g}")


def networks_from_flags(space: str | None = None, resolution: int | None = None, stem_stride: int | None = None,
                        width: float = 1.0, depth: float = 1.0, preset: str | None = None,
                        alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
                        phi: str | None = None, default_phis: str | None = "0-3",
                        resolution_multiple: int = 1, one: bool = False) -> list[Member]:
    """The networks --space/--resolution/--width/--depth, --preset paper or --alpha/--beta/--gamma with --phi
    mean. `resolution` replaces the base's; the paper's members then keep their resolution's ratio to B0's.
    Contradictory or incomplete flags are one-line errors naming the flags; `one` asks for exactly one network."""
    from nas.family import compound_family, paper_family

    base = load_spec(space or "efficientnet_b0")
    if resolution is not None:      # 0 is refused by the check, not read as "the base's"
        if not 8 <= resolution <= MAX_RESOLUTION:
            raise InvalidField("resolution", resolution, f"an integer in 8..{MAX_RESOLUTION} (pixels a side)")
        base = base.replace(resolution=resolution)
    if stem_stride is not None:
        base = base.replace(stem_stride=stem_stride)
    coeffs = (alpha, beta, gamma)
    compound_given = any(c is not None for c in coeffs)
    if preset and compound_given:
        raise NasError("--preset and --alpha/--beta/--gamma exclude each other: give one of them")
    if not (preset or compound_given):
        if phi is not None:
            raise NasError("--phi picks family members: add --preset paper or --alpha --beta --gamma")
        return [(0.0, width_depth_member(base, width, depth))]
    if (width, depth) != (1.0, 1.0):
        raise NasError("give --width/--depth for one network or a family (--preset, --alpha/--beta/--gamma), "
                       "not both")
    if phi is None and default_phis is None:
        raise NasError("--phi is missing: the compound rule needs all of --alpha --beta --gamma --phi")
    phis = parse_phis(phi if phi is not None else default_phis or "")
    if one and len(phis) != 1:
        raise NasError(f"--phi {phi}: this command takes one network, give one value such as 1")
    if alpha is not None and beta is not None and gamma is not None:
        return compound_family(base, alpha, beta, gamma, phis, resolution_multiple)
    if compound_given:
        raise NasError("a compound family needs all of --alpha --beta --gamma")
    members = paper_family(base, phis)
    if resolution:  # the table's resolutions keep their ratio to B0's on a base of `resolution` px
        b0_resolution = PAPER_TABLE["B0"][2]
        members = [(p, s.replace(resolution=round(s.resolution * resolution / b0_resolution))) for p, s in members]
    return members


def writable_file(path: Path, flag: str = "--out", example: str = "out.html") -> Path:
    """Refuse a file that cannot be written before any work: a folder, or a place that does not take the file
    (tried by opening it, so that root, read-only mounts and /proc answer as they will later)."""
    if path.is_dir():
        raise NasError(f"{flag} {path} is a folder: give a file name, such as {path / example}")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as e:
        raise NasError(f"{flag} {path} cannot be written ({e.strerror}): give a file in a writable folder") from None
    if not existed:
        path.unlink()
    return path


def writable_folder(out_dir: Path, flag: str = "--out") -> Path:
    """Refuse a folder that cannot be one before any work: an existing file, or a place that is not writable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NasError(f"{flag} {out_dir} is a file: give a folder to write into")
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise NasError(f"{flag} {out_dir}: {existing} is not writable: give a writable folder")
    return out_dir
