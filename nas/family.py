"""Materialize a family: members from coefficients or the paper's table, their measured cost, files.

The table compares measured FLOPs of each rounded member against phi = 0, next to the 2^phi a
compound rule with alpha*beta^2*gamma^2 = 2 promises; `phi_measured` = log2(measured ratio) shows
where a member really sits (the paper's B7 lands near 6.6).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from nas.builder import build_model
from nas.errors import NasError
from nas.flops import flops_at, params_of
from nas.scaling import compound, paper_member
from nas.spec import NetworkSpec, save_spec


def paper_family(base: NetworkSpec, phis: Sequence[float]) -> list[tuple[float, NetworkSpec]]:
    bad = [p for p in phis if p != int(p) or not 0 <= p <= 7]
    if bad:
        raise NasError(f"--preset paper has members 0..7 (B0..B7), not {bad[0]:g}: use whole numbers in 0-7")
    return [(p, paper_member(base, int(p))) for p in phis]


def compound_family(base: NetworkSpec, alpha: float, beta: float, gamma: float, phis: Sequence[float],
                    resolution_multiple: int = 1) -> list[tuple[float, NetworkSpec]]:
    return [(p, compound(base, alpha, beta, gamma, p, resolution_multiple)) for p in phis]


def family_table(members: Sequence[tuple[float, NetworkSpec]], reference: NetworkSpec | None = None,
                 progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per member with measured params and FLOPs; ratios are to `reference` (default: the
    member with the smallest phi, which is phi = 0 in any range that starts there)."""
    if not members:
        raise NasError("no family members to build: give at least one phi")
    if reference is None:
        reference = min(members, key=lambda m: m[0])[1]
    ref_flops = flops_at(reference, reference.resolution)
    rows = []
    for i, (phi, spec) in enumerate(members, 1):
        if progress:
            progress(f"[{i}/{len(members)}] counting {spec.name} at {spec.resolution} px")
        flops = flops_at(spec, spec.resolution)
        ratio = flops / ref_flops
        rows.append({
            "name": spec.name, "phi": phi, "width": round(spec.width_mult, 4), "depth": round(spec.depth_mult, 4),
            "resolution": spec.resolution, "dropout": spec.dropout, "params": params_of(spec),
            "gflops": round(flops / 1e9, 4), "flops_ratio": round(ratio, 4), "target_ratio": round(2.0 ** phi, 4),
            "phi_measured": round(math.log2(ratio), 3),
        })
    return pd.DataFrame(rows)


def write_family(members: Sequence[tuple[float, NetworkSpec]], out_dir: Path, save_models: bool = False,
                 num_classes: int = 1000, in_channels: int = 3) -> list[Path]:
    """One spec YAML per member (and, with `save_models`, the state dict of a freshly built model)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for _, spec in members:
        written.append(save_spec(spec, out_dir / f"{spec.name}.yaml"))
        if save_models:
            path = out_dir / f"{spec.name}.pt"
            torch.save(build_model(spec, num_classes, in_channels).state_dict(), path)
            written.append(path)
    return written
