"""Numbers as people read them: 7.33 M parameters, 390 MFLOPs, 12.3 ms, accuracy 0.9805, 4 min 05 s.

Never e-notation (Python's `{:g}` writes 7.329e+06, and pandas' tables follow it). Pages and tables meant for
people format through here; CSV and JSON keep the raw numbers for scripts. Accuracy is written as a fraction
to 4 decimals, as the verdict sentences write it (nas.search.results), so a page never mixes 0.9805 and 98 %.
"""

from __future__ import annotations

import math

PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))
"""SI prefixes a count, FLOPs or activations take; below 1,000 a number has none."""


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant figures in plain notation with thousands separators: 0.00123, 12.3,
    1,230, 12,300."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    rounded = float(f"{value:.{digits - 1}e}")        # 9.996 -> 10.0, so it is then written "10.0", not "10.00"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}"


def plain(value: float) -> str:
    """A setting's number as it would be written in a study file: 0.002, 1e-05 as 0.00001, 2.0 as 2, 1,000
    without separators (it is an input, not a measurement)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value) or value == int(value):
        return f"{value:g}" if not math.isfinite(value) else str(int(value))
    return f"{value:.15f}".rstrip("0").rstrip(".")


def prefix(value: float) -> tuple[float, str]:
    """(divisor, prefix) for `value`: the largest SI prefix not above it (1, "" below 1,000)."""
    return next(((d, p) for d, p in PREFIXES if abs(value) >= d), (1.0, ""))


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """A count with its SI prefix: si(7_329_000) = "7.33 M", si(3.9e8, "FLOPs") = "390 MFLOPs",
    si(512) = "512"."""
    d, p = prefix(value)
    return f"{significant(value / d, digits)} {p}{unit}".rstrip()


def flops(value: float) -> str:
    """FLOPs per image: "390 MFLOPs" below a billion, "1.05 GFLOPs" from there."""
    return si(value, "FLOPs")


def milliseconds(value: float) -> str:
    return f"{significant(value)} ms"


def duration(seconds: float) -> str:
    """A wall time: "13.2 s", "4 min 05 s", "2 h 03 min"."""
    if seconds < 60:
        return f"{significant(seconds)} s" if seconds >= 1 else f"{seconds:.2f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def accuracy(value: float) -> str:
    """An accuracy (a fraction of the validation images), to 4 decimals as every verdict sentence writes it."""
    return f"{value:.4f}"


def interval(low: float, high: float) -> str:
    """A 95 % interval of accuracies (or of their differences): "0.9750 to 0.9850"."""
    return f"{low:.4f} to {high:.4f}"
