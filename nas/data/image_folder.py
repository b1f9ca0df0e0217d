"""Image folders, decoded with Pillow and centre-cropped to square at load time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nas.data.raw import ACCEPTED, RawImages, reason, uint8_images
from nas.errors import NasError
from nas.memory import FLOAT_BYTES, image_bytes, require_memory

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
MAX_AUTO_IMAGE_SIZE = 224
"""An image folder without `image_size` is loaded at its smallest side, but never above this."""


def read_image_folder(path: Path, image_size: int | None) -> RawImages:
    """One sub-folder per class, or train/ and val/ (or test/) folders laid out that way."""
    subdirs = _subdirs(path)
    if not subdirs:
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise NasError(
                f"{path} holds images but no class folders: put each class's images in its own sub-folder"
            )
        raise NasError(f"{path} holds no class folders or data files: {ACCEPTED}")
    names = {d.name for d in subdirs}
    val_name = next((n for n in ("val", "test") if n in names), None)
    if "train" in names and val_name is not None and _subdirs(path / "train"):
        classes = tuple(d.name for d in _subdirs(path / "train"))
        train_files, y = _class_files(path / "train", classes)
        val_classes = tuple(d.name for d in _subdirs(path / val_name))
        extra = sorted(set(val_classes) - set(classes))
        if extra:
            raise NasError(
                f"class folder '{extra[0]}' is in {path / val_name} but not in {path / 'train'}: add it there"
            )
        val_files, y_val = _class_files(path / val_name, classes, val_classes)
        size, mode = _common_size_and_mode(train_files + val_files, image_size)
        x, x_val = _decode(train_files, size, mode), _decode(val_files, size, mode)
        return RawImages(f"images:{path}", classes, x, y, x_val, y_val)
    classes = tuple(d.name for d in subdirs)
    files, y = _class_files(path, classes)
    size, mode = _common_size_and_mode(files, image_size)
    return RawImages(f"images:{path}", classes, _decode(files, size, mode), y)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(
    root: Path, classes: tuple[str, ...], present: tuple[str, ...] | None = None
) -> tuple[list[Path], np.ndarray]:
    """Image files under root/<class>/ (searched recursively) and their class indices."""
    files: list[Path] = []
    labels: list[int] = []
    for name in classes if present is None else present:
        found = sorted(
            p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not found:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise NasError(
                f"class folder {root / name} has no images ({suffixes}): add some or remove the folder"
            )
        files += found
        labels += [classes.index(name)] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _common_size_and_mode(files: list[Path], image_size: int | None) -> tuple[int, str]:
    """Side length to load at (image_size, else the smallest side capped at MAX_AUTO_IMAGE_SIZE),
    and 'L' if every image is grayscale, else 'RGB'. Reads headers only."""
    smallest, gray = MAX_AUTO_IMAGE_SIZE, True
    for file in files:
        try:
            with Image.open(file) as img:
                smallest = min(smallest, *img.size)
                gray = gray and Image.getmodebase(img.mode) == "L"
        except Exception as exc:
            raise NasError(f"cannot read image {file}: {reason(exc)}; replace or delete the file") from exc
    return image_size or smallest, "L" if gray else "RGB"


def _decode(files: list[Path], size: int, mode: str) -> torch.Tensor:
    """Decode, centre-crop to square and resize (Pillow bilinear, antialiased) -> float32 [0, 1]. The memory the
    images take (uint8, then float32) is judged before the first one is decoded."""
    channels = 1 if mode == "L" else 3
    require_memory(image_bytes(len(files), channels, size, 1 + FLOAT_BYTES),
                   f"{len(files)} images of {size} px in {files[0].parent.parent if files else 'the folder'}",
                   "give a smaller image_size, or a folder with fewer images")
    out = np.empty((len(files), size, size, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                w, h = img.size
                side = min(w, h)
                box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
                square = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR, box=box)
                out[i] = np.asarray(square).reshape(size, size, -1)
        except Exception as exc:
            raise NasError(f"cannot read image {file}: {reason(exc)}; replace or delete the file") from exc
    return uint8_images(out.transpose(0, 3, 1, 2))
