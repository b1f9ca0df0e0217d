"""Pareto dominance, shared by multi-objective block search, frontier tables and frontier plots."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (at least as good everywhere, better somewhere)."""
    signs = [1 if d == "maximize" else -1 for d in directions]
    keyed = [[s * v for s, v in zip(signs, p)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [i for i, p in enumerate(keyed) if not any(dominates(q, p) for j, q in enumerate(keyed) if j != i)]
