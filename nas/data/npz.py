"""NumPy .npz files with arrays x, y and optionally x_val, y_val."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from nas.data.batches import resize_images
from nas.data.raw import RawImages, checked_labels, reason
from nas.errors import NasError
from nas.memory import FLOAT_BYTES, require_memory

NPZ_FIX = "write it with numpy.savez(path, x=images, y=labels)"


def read_npz(path: Path) -> RawImages:
    """Arrays x, y and optionally x_val, y_val; float images must already be in [0, 1]."""
    if not zipfile.is_zipfile(path):
        raise NasError(f"{path} is not an .npz archive (a zip of .npy arrays): {NPZ_FIX}")
    _require_memory_for(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ("x", "y", "x_val", "y_val") if k in archive.files}
    except Exception as exc:
        raise NasError(f"cannot read {path}: {reason(exc)}; {NPZ_FIX}") from exc
    for key in ("x", "y"):
        if key not in arrays:
            raise NasError(f"{path} has no array '{key}': {NPZ_FIX}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise NasError(
            f"{path} has only one of x_val and y_val: store both for a validation split, or neither"
        )
    x = _npz_images(arrays["x"], path, "x")
    y = checked_labels(arrays["y"], f"y of {path}")
    if len(x) != len(y):
        raise NasError(f"{path} has {len(x)} images in x but {len(y)} labels in y: give one label per image")
    num_classes = int(y.max()) + 1 if len(y) else 0
    missing = np.flatnonzero(np.bincount(y, minlength=num_classes) == 0)
    if len(missing):
        raise NasError(
            f"class {missing[0]} has no images in y of {path}: labels must be 0..K-1, each one used"
        )
    classes = tuple(str(c) for c in range(num_classes))
    if "x_val" not in arrays:
        return RawImages(f"npz:{path}", classes, x, y)
    x_val = _npz_images(arrays["x_val"], path, "x_val")
    y_val = checked_labels(arrays["y_val"], f"y_val of {path}", num_classes)
    if len(x_val) != len(y_val):
        raise NasError(
            f"{path} has {len(x_val)} images in x_val but {len(y_val)} labels in y_val: give one label per "
            "image"
        )
    if x_val.shape[1] != x.shape[1]:
        raise NasError(
            f"{path} has {x.shape[1]} channels in x but {x_val.shape[1]} in x_val: make them equal"
        )
    return RawImages(f"npz:{path}", classes, x, y, resize_images(x_val, x.shape[2]), y_val)


def _require_memory_for(path: Path) -> None:
    """Judge the images' memory from the arrays' headers, before reading them: a few hundred KiB of compressed
    zeros can declare gigabytes. Each image array is held as stored, then as float32 twice (conversion)."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for key in ("x", "x_val"):
                if f"{key}.npy" in archive.namelist():
                    with archive.open(f"{key}.npy") as member:
                        version = np.lib.format.read_magic(member)
                        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                else np.lib.format.read_array_header_2_0)
                        shape, _, dtype = read(member)
                        shapes[key] = (shape, dtype)
    except Exception as exc:
        raise NasError(f"cannot read {path}: {reason(exc)}; {NPZ_FIX}") from exc
    need = sum(math.prod(shape) * (dtype.itemsize + 2 * FLOAT_BYTES) for shape, dtype in shapes.values())
    declared = ", ".join(f"{key} {shape}" for key, (shape, _) in shapes.items())
    require_memory(need, f"{path} ({declared})", "store fewer or smaller images (resize them before saving)")


def _npz_images(array: np.ndarray, path: Path, key: str) -> torch.Tensor:
    """Any accepted layout and dtype -> float32 (N, C, S, S) in [0, 1], centre-cropped to square."""
    shape = array.shape
    where = f"{key} of {path}"
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and shape[3] in (1, 3, 4) and (shape[1] == shape[2] or shape[1] not in (1, 3, 4)):
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and shape[1] in (1, 3, 4)):
        raise NasError(
            f"{where} has shape {shape}: store (N, H, W), (N, H, W, C) or (N, C, H, W), C = 1, 3 or 4"
        )
    if min(array.shape[2:]) == 0:
        raise NasError(f"{where} has shape {shape}: images of {array.shape[2]}x{array.shape[3]} pixels hold nothing "
                       f"to train on: store images at least 1 pixel a side")
    if array.dtype.kind in "iu":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise NasError(f"{where} has integer values in [{low}, {high}]: integer images must be 0..255")
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(255))
    elif array.dtype.kind == "f":
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if images.numel() and not (torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
            raise NasError(
                f"{where} has float values outside [0, 1] or NaN: scale them to [0, 1], or store uint8"
            )
    else:
        raise NasError(f"{where} has dtype {array.dtype}: store images as uint8 0..255 or float in [0, 1]")
    return _center_square(images)


def _center_square(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2], x.shape[3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, :, top : top + side, left : left + side].contiguous()
