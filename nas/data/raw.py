"""What every format reader returns, and the conversions and checks the readers share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nas.errors import NasError

ACCEPTED = (
    "give 'digits' or 'cluttered_digits', a CIFAR python directory, an image folder with one sub-folder per "
    "class, or a .npz file with arrays x and y"
)


@dataclass(frozen=True)
class RawImages:
    """What a format reader returns: [0, 1] float32 images, int64 labels, val split if one ships."""

    name: str
    classes: tuple[str, ...]
    x: torch.Tensor
    y: np.ndarray
    x_val: torch.Tensor | None = None
    y_val: np.ndarray | None = None


def uint8_images(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> contiguous float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(255)


def checked_labels(values: object, where: str, num_classes: int | None = None) -> np.ndarray:
    """Validate labels as whole numbers in 0..num_classes-1 (or >= 0) and return them as int64."""
    try:
        y = np.asarray(values)
    except Exception as exc:
        raise NasError(f"labels in {where} are not an array of integers: {reason(exc)}") from exc
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise NasError(f"labels in {where} have shape {y.shape}: give one integer label per image")
    if y.dtype.kind == "f":
        bad = y[~np.isfinite(y) | (y != np.round(y))]
        if len(bad):
            raise NasError(f"label {bad[0]} in {where} is not an integer: labels must be integers 0..K-1")
    elif y.dtype.kind not in "iu":
        raise NasError(f"labels in {where} have dtype {y.dtype}: labels must be integers 0..K-1")
    if len(y) and y.min() < 0:
        raise NasError(f"label {y.min()} in {where} is negative: labels must be integers 0..K-1")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise NasError(f"label {y.max()} in {where} is out of range: labels must be 0..{num_classes - 1}")
    return y.astype(np.int64)


def reason(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
