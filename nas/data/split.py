"""Which images go to validation and which training images a budget keeps: seed-fixed, per class."""

from __future__ import annotations

import numpy as np

from nas.errors import NasError

_SPLIT_STREAM = 0
_SUBSET_STREAM = 1


def stratified_split(
    y: np.ndarray, classes: tuple[str, ...], val_fraction: float, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each class sends round(val_fraction * count) images to validation, at least 1 and at most
    count - 1. Returns sorted (train, val) indices."""
    train, val = [], []
    for name, idx in zip(classes, _shuffled_by_class(y, len(classes), seed, _SPLIT_STREAM)):
        if len(idx) < 2:
            raise NasError(
                f"class '{name}' in {where} has {len(idx)} image(s): a train/val split needs at least 2 per "
                "class; add images or remove the class"
            )
        n_val = min(max(round(val_fraction * len(idx)), 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def subset(
    y: np.ndarray, num_classes: int, per_class: int | None, fraction: float | None, seed: int
) -> np.ndarray:
    """Sorted indices of the kept training images: the first per_class (or max(1, round(fraction *
    count))) of each class in a seed-fixed order, so smaller subsets are inside larger ones."""
    keep = []
    for idx in _shuffled_by_class(y, num_classes, seed, _SUBSET_STREAM):
        if per_class is not None:
            k = int(per_class)
        else:
            assert fraction is not None, "subset needs per_class or fraction (the caller checks)"
            k = max(1, round(fraction * len(idx)))
        keep.append(idx[:k])
    return np.sort(np.concatenate(keep))


def _shuffled_by_class(y: np.ndarray, num_classes: int, seed: int, stream: int) -> list[np.ndarray]:
    """Each class's indices in an order fixed by (seed, stream); streams keep split and subset apart."""
    rng = np.random.default_rng([seed, stream])
    return [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
