"""Width, depth and resolution scaling: from a base spec to concrete, rounded family members.

Rounding follows the reference TensorFlow builder (efficientnet_builder.round_filters/round_repeats):
channels go to a multiple of 8 without dropping more than 10 %, repeats round up. The stem and head
are scaled with the same channel rule unless the base marks them fixed (Lite); torchvision instead
derives the head as 4 x the last stage's output, which equals this rule for the official widths only.

Two ways to name family members, kept apart on purpose:
- the paper's per-model table (`PAPER_TABLE`, B0..B7): hand-picked width, depth, resolution and dropout;
- the compound rule: depth alpha^phi, width beta^phi, resolution gamma^phi for any real phi >= 0.
The table does not follow phi = k with (1.2, 1.1, 1.15): by measured FLOPs B1 sits near phi 0.5, B3 near
2 and B7 near 6.6 (docs/scaling.md shows both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nas.errors import NasError
from nas.spec import MAX_RESOLUTION, NetworkSpec, StageSpec
from nas.units import significant
from nas.validation import InvalidField, integer

PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)  # alpha (depth), beta (width), gamma (resolution)

# name: (width, depth, resolution, dropout), from the reference efficientnet_builder.
PAPER_TABLE: dict[str, tuple[float, float, int, float]] = {
    "B0": (1.0, 1.0, 224, 0.2),
    "B1": (1.0, 1.1, 240, 0.2),
    "B2": (1.1, 1.2, 260, 0.3),
    "B3": (1.2, 1.4, 300, 0.3),
    "B4": (1.4, 1.8, 380, 0.4),
    "B5": (1.6, 2.2, 456, 0.4),
    "B6": (1.8, 2.6, 528, 0.5),
    "B7": (2.0, 3.1, 600, 0.5),
}

MAX_DROPOUT = 0.5


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count to a multiple of `divisor`, never losing more than 10 % (16 x 1.2 -> 24)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


MAX_MULTIPLIER = 16.0
"""Width and depth multipliers above this (256x the parameters of a base) are refused before building."""


def round_resolution(resolution: float, multiple: int = 1) -> int:
    """Nearest multiple of `multiple` (1 keeps every pixel; 8 or 32 suit strided backbones)."""
    rule = integer(1, 256)
    if not rule(multiple):
        raise InvalidField("resolution_multiple", multiple, rule.allowed)
    return max(multiple, int(round(resolution / multiple)) * multiple)


def compound_dropout(base_dropout: float, phi: float) -> float:
    """+0.05 per unit of phi, capped at 0.5: the paper's table at phi ~ 0, 2, 4, 6 (0.2, 0.3, 0.4, 0.5)."""
    return round(min(MAX_DROPOUT, max(base_dropout, base_dropout + 0.05 * phi)), 4)


def scale(base: NetworkSpec, width: float, depth: float, resolution: int, dropout: float | None = None,
          name: str | None = None) -> NetworkSpec:
    """A concrete member of `base`'s family: rounded channels and repeats, the given resolution.

    The one place every scaled network is made, so the bounds on its size live here: multipliers in
    (0, 16] and at most 4096 px, checked before anything is built."""
    for label, value in (("width", width), ("depth", depth)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_MULTIPLIER):
            shown = significant(value, 5) if isinstance(value, float) else value    # 16.777, not 16.777216000000006
            raise NasError(f"{label} multiplier {shown} for '{name or base.name}': must be a number in "
                           f"(0, {MAX_MULTIPLIER:g}]; a larger member would not fit in memory")
    if not 8 <= resolution <= MAX_RESOLUTION:
        raise NasError(f"resolution {resolution} px for '{name or base.name}': must be 8..{MAX_RESOLUTION} px")
    if base.is_scaled:
        raise NasError(f"spec '{base.name}' is already scaled (width {base.width_mult}, depth "
                       f"{base.depth_mult}): scale its base network instead")
    stages = tuple(
        StageSpec(block=s.block, expand=s.expand, kernel=s.kernel, stride=s.stride,
                  channels=round_filters(s.channels, width),
                  repeats=round_repeats(s.repeats, depth) if s.depth_scaled else s.repeats,
                  se=s.se, depth_scaled=s.depth_scaled)
        for s in base.stages)
    return base.replace(
        name=name or base.name, stages=stages, resolution=int(resolution),
        stem_channels=round_filters(base.stem_channels, width) if base.stem_width_scaled else base.stem_channels,
        head_channels=round_filters(base.head_channels, width) if base.head_width_scaled else base.head_channels,
        dropout=base.dropout if dropout is None else dropout,
        width_mult=float(width), depth_mult=float(depth))


def check_coefficients(alpha: float, beta: float, gamma: float) -> None:
    for label, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 1.0):
            raise NasError(f"{label} is {v}: scaling coefficients must be >= 1 (1 leaves that dimension fixed)")


def check_phi(phi: float) -> None:
    if not (math.isfinite(phi) and phi >= 0):
        raise NasError(f"phi is {phi}: the compound exponent must be a number >= 0")


@dataclass(frozen=True)
class Multipliers:
    """Nominal (unrounded) multipliers of one family member."""

    width: float
    depth: float
    resolution: float

    @property
    def nominal_flops_ratio(self) -> float:
        """FLOPs grow as depth x width^2 x resolution^2 before rounding."""
        return self.depth * self.width ** 2 * self.resolution ** 2


def compound_multipliers(alpha: float, beta: float, gamma: float, phi: float) -> Multipliers:
    check_coefficients(alpha, beta, gamma)
    check_phi(phi)
    return Multipliers(width=beta ** phi, depth=alpha ** phi, resolution=gamma ** phi)


FAST_EXPONENTS = Multipliers(width=0.4, depth=0.1, resolution=0.05)
"""Dollar, Singh, Girshick, "Fast and Accurate Model Scaling" (2021), pycls's `d1_w8_g8_r1`: of a FLOPs
factor s, width takes s^0.4, depth s^0.1 and resolution s^0.05 (depth x width^2 x resolution^2 = s).
Spending FLOPs mostly on width makes activations grow about as s^0.6 (compound scaling: s^0.85), and
activations, not FLOPs, bound runtime on memory-bound accelerators."""


def fast_multipliers(s: float) -> Multipliers:
    """Dollar et al.'s fast scaling for a FLOPs factor `s` (nominal: rounding moves the cost)."""
    e = FAST_EXPONENTS
    return Multipliers(width=s ** e.width, depth=s ** e.depth, resolution=s ** e.resolution)


def member_name(phi: float) -> str:
    return f"phi{phi:g}"


def compound(base: NetworkSpec, alpha: float, beta: float, gamma: float, phi: float,
             resolution_multiple: int = 1) -> NetworkSpec:
    """The phi-th member under the compound rule (depth alpha^phi, width beta^phi, resolution gamma^phi)."""
    m = compound_multipliers(alpha, beta, gamma, phi)
    return scale(base, width=m.width, depth=m.depth,
                 resolution=round_resolution(base.resolution * m.resolution, resolution_multiple),
                 dropout=compound_dropout(base.dropout, phi), name=f"{base.name}-{member_name(phi)}")


def paper_member(base: NetworkSpec, k: int) -> NetworkSpec:
    """B0..B7 from the paper's table, applied to `base` (its own resolution is replaced by the table's)."""
    key = f"B{k}"
    if key not in PAPER_TABLE:
        raise NasError(f"the paper's table has B0..B7, not {key}")
    width, depth, resolution, dropout = PAPER_TABLE[key]
    return scale(base, width, depth, resolution, dropout, name=f"{base.name}-{key}")


def target_member(base: NetworkSpec, alpha: float, beta: float, resolution: int) -> NetworkSpec:
    """The full-size phi = 1 network that the family will be built from."""
    return scale(base, beta, alpha, resolution, name=f"{base.name}-a{alpha:g}-b{beta:g}")


def grid_points(lo_hi_alpha: tuple[float, float], lo_hi_beta: tuple[float, float], step: float) -> list[tuple[float, float]]:
    def axis(lo: float, hi: float) -> list[float]:
        n = int(math.floor((hi - lo) / step + 1e-9))
        return [round(lo + i * step, 6) for i in range(n + 1)]
    return [(a, b) for a in axis(*lo_hi_alpha) for b in axis(*lo_hi_beta)]


def examined_points(alpha: tuple[float, float], beta: tuple[float, float], step: float, target: float,
                    tolerance: float) -> list[tuple[float, float]]:
    """The grid points worth measuring: those whose depth and width alone (gamma = 1) leave room under the target."""
    return [(a, b) for a, b in grid_points(alpha, beta, step) if a * b * b <= target * (1 + tolerance)]
