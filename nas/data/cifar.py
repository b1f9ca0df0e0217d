"""CIFAR-10 and CIFAR-100 from their python batches, unpickled without running code from the files."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nas.data.raw import RawImages, checked_labels, reason, uint8_images
from nas.errors import NasError

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")
CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")
CIFAR_EXPECTED = (
    "expected data_batch_1..5 and test_batch (CIFAR-10) or train and test (CIFAR-100) "
    "from the python version of the data set"
)


def find_cifar(path: Path) -> tuple[str, Path] | None:
    """('cifar-10' | 'cifar-100', batch directory) if `path` is or holds CIFAR batches, else None."""
    found = []
    for directory in (path, *(path / sub for sub in CIFAR_SUBDIRS)):
        if all((directory / f).is_file() for f in CIFAR10_FILES):
            found.append(("cifar-10", directory))
        elif all((directory / f).is_file() for f in CIFAR100_FILES):
            found.append(("cifar-100", directory))
    if len(found) > 1:
        choices = " or ".join(str(directory) for _, directory in found)
        raise NasError(f"{path} holds more than one CIFAR data set: give {choices}")
    if found:
        return found[0]
    if any((path / sub).is_dir() for sub in CIFAR_SUBDIRS) or any(
        (path / f).is_file() for f in ("data_batch_1", "test_batch")
    ):
        raise NasError(f"no CIFAR batches in {path}: {CIFAR_EXPECTED}")
    return None


def read_cifar(kind: str, directory: Path) -> RawImages:
    """CIFAR python batches; the shipped test batch becomes the validation split."""
    if kind == "cifar-10":
        num_classes, label_key = 10, "labels"
        train_files, test_file = CIFAR10_FILES[:-1], CIFAR10_FILES[-1]
    else:
        num_classes, label_key = 100, "fine_labels"
        train_files, test_file = CIFAR100_FILES[:1], CIFAR100_FILES[1]
    batches = [_read_cifar_batch(directory / f, label_key, num_classes) for f in train_files]
    x_val, y_val = _read_cifar_batch(directory / test_file, label_key, num_classes)
    return RawImages(
        f"{kind}:{directory}",
        tuple(str(c) for c in range(num_classes)),
        uint8_images(np.concatenate([b[0] for b in batches])),
        np.concatenate([b[1] for b in batches]),
        uint8_images(x_val),
        y_val,
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, numpy arrays): a pickle can run code. numpy's
    two allocating constructors are bounded by the file's size, since a batch holds its pixels: 352 KiB of
    pickles calling `numpy.ndarray((8, 8000, 8000))` otherwise allocated 3.8 GB of images no file contains."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def __init__(self, file: BinaryIO, size: int) -> None:
        super().__init__(file, encoding="bytes")
        self.size = size

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never does")
        found = super().find_class(module, name)
        if (module, name) == ("numpy", "ndarray"):
            return _Bounded(found, self.size)
        if name == "_reconstruct":
            return lambda subtype, shape, dtype: found(self._allowed(subtype, shape, dtype), shape, dtype)
        return found

    def _allowed(self, subtype: object, shape: object, dtype: object) -> type:
        _Bounded(np.ndarray, self.size).check(shape, dtype)
        return np.ndarray


class _Bounded:
    """numpy.ndarray as a pickle may call it: refuses arrays larger than the file they come from."""

    def __init__(self, make: Callable[..., np.ndarray], size: int) -> None:
        self.make, self.size = make, size

    def check(self, shape: object, dtype: object) -> None:
        dims = shape if isinstance(shape, tuple) else (shape,)
        if not all(isinstance(d, int) for d in dims):
            raise pickle.UnpicklingError(f"it declares an array of shape {shape!r}")
        need = math.prod(dims) * np.dtype(dtype).itemsize   # type: ignore[call-overload]
        if need > self.size:
            raise pickle.UnpicklingError(f"it declares an array of shape {shape!r} ({need:,} bytes), more than the "
                                         f"file's {self.size:,} bytes hold")

    def __call__(self, shape: object, dtype: object = float, *args: object, **kwargs: object) -> np.ndarray:
        self.check(shape, dtype)
        return self.make(shape, dtype, *args, **kwargs)


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 (N, 3, 32, 32), int64 labels)."""
    try:
        with path.open("rb") as file:
            batch = _CifarUnpickler(file, path.stat().st_size).load()
    except Exception as exc:
        raise NasError(f"cannot read CIFAR batch {path}: {reason(exc)}; {CIFAR_EXPECTED}") from exc
    if not isinstance(batch, dict):
        raise NasError(f"CIFAR batch {path} is not a dict: {CIFAR_EXPECTED}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise NasError(f"CIFAR batch {path} has no uint8 'data' array of shape (N, 3072): {CIFAR_EXPECTED}")
    if labels is None:
        raise NasError(f"CIFAR batch {path} has no '{label_key}' list: {CIFAR_EXPECTED}")
    y = checked_labels(labels, f"CIFAR batch {path}", num_classes)
    if len(y) != len(data):
        raise NasError(f"CIFAR batch {path} has {len(data)} images but {len(y)} labels: {CIFAR_EXPECTED}")
    return data.reshape(-1, 3, 32, 32), y
