"""Data for proxy training, held whole in memory so that a trial never waits on a loader.

`load_dataset` reads one of four sources (scikit-learn's bundled digits, CIFAR python batches, an
image folder, a .npz file), makes or takes a train/val split, subsets the training split and
standardizes both splits with the training split's per-channel statistics. Each format has its own
pure reader returning images scaled to [0, 1]; one dispatcher picks the reader and applies the shared
rules. `resize_images`, `augment_batch` and `iterate_batches` then work on tensors already on the
training device, so the fast path has no DataLoader, no worker processes and no host syncs.

Everything a user can get wrong (paths, file contents, arguments) raises `NasError` with a one-line
message naming the problem and the fix; see docs/data.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nas.errors import NasError
from nas.validation import InvalidField, integer, number, optional

ACCEPTED = (
    "give 'digits', a CIFAR python directory, an image folder with one sub-folder per class, "
    "or a .npz file with arrays x and y"
)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
ARCHIVE_SUFFIXES = frozenset({".gz", ".tgz", ".tar", ".zip", ".bz2", ".xz"})
MAX_AUTO_IMAGE_SIZE = 224
"""An image folder without `image_size` is loaded at its smallest side, but never above this."""

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")
CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")
CIFAR_EXPECTED = (
    "expected data_batch_1..5 and test_batch (CIFAR-10) or train and test (CIFAR-100) "
    "from the python version of the data set"
)
NPZ_FIX = "write it with numpy.savez(path, x=images, y=labels)"

_SPLIT_STREAM = 0
_SUBSET_STREAM = 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/val pair ready for proxy training.

    Images are float32 (N, C, H, W), square, standardized per channel with `mean`/`std`, which are the
    statistics of the [0, 1]-scaled training images. Labels are int64 in 0..num_classes-1.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def resolution(self) -> int:
        return self.x_train.shape[2]

    def describe(self) -> str:
        """One line for logs, e.g. 'digits: 1438 train / 359 val, 10 classes, 1x8x8'."""
        return (
            f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} val, {self.num_classes} classes, "
            f"{self.in_channels}x{self.resolution}x{self.resolution}"
        )

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on `device`, so batches can be cut there without host copies."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
        )


@dataclass(frozen=True)
class _Raw:
    """What a format reader returns: [0, 1] float32 images, int64 labels, val split if one ships."""

    name: str
    classes: tuple[str, ...]
    x: torch.Tensor
    y: np.ndarray
    x_val: torch.Tensor | None = None
    y_val: np.ndarray | None = None


def load_dataset(
    source: str | os.PathLike[str] = "digits",
    *,
    per_class: int | None = None,
    fraction: float | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | None = None,
) -> Dataset:
    """Load `source`, split, subset the training split and standardize.

    Without a shipped split, a stratified split puts `val_fraction` of each class in validation.
    `per_class` keeps that many training images per class (all of a smaller class), `fraction` keeps
    that share of each class; validation is never subset. The split depends only on `seed` and
    `val_fraction`, and subsets of one seed are nested, so results on different budgets compare on
    the same validation images. `image_size` resizes every image at load time. Same arguments, same
    tensors, bit for bit.
    """
    _check_arguments(per_class, fraction, val_fraction, seed, image_size)
    raw = _read_source(source, image_size)
    if len(raw.classes) < 2:
        raise NasError(
            f"{raw.name} has fewer than 2 classes ({len(raw.classes)}): classification needs at least 2"
        )
    x, y, x_val, y_val = raw.x, raw.y, raw.x_val, raw.y_val
    if x_val is None or y_val is None:
        train_idx, val_idx = _stratified_split(y, raw.classes, val_fraction, seed, raw.name)
        x_val, y_val = x[torch.from_numpy(val_idx)], y[val_idx]
        x, y = x[torch.from_numpy(train_idx)], y[train_idx]
    if per_class is not None or fraction is not None:
        keep = _subset(y, len(raw.classes), per_class, fraction, seed)
        x, y = x[torch.from_numpy(keep)], y[keep]
    size = image_size or x.shape[2]
    x, x_val = resize_images(x, size), resize_images(x_val, size)
    mean, std = _channel_stats(x)
    return Dataset(
        name=raw.name,
        x_train=_standardize(x, mean, std),
        y_train=torch.from_numpy(y),
        x_val=_standardize(x_val, mean, std),
        y_val=torch.from_numpy(y_val),
        num_classes=len(raw.classes),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def resize_images(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, r, r) by bilinear interpolation, antialiased when shrinking.

    Returns `x` itself when it already has that size, so callers may resize unconditionally.
    """
    if x.shape[2] == resolution and x.shape[3] == resolution:
        return x
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )


def augment_batch(
    x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding by `pad`, and a random horizontal flip if `flip`.

    One gather on x's device does both for the whole batch: no loop over images, no host sync.
    Zero is the mean colour once images are standardized. A channels_last batch stays channels_last.
    `generator`, if given, must live on x's device. With pad=0 and flip=False, `x` is returned as is.
    """
    if pad < 0:
        raise NasError(f"augmentation pad is {pad}: give 0 (no crop) or a positive number of pixels")
    if pad == 0 and not flip:
        return x
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    rows = dy + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        mirrored = torch.rand(n, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    cols = dx + cols
    images = torch.arange(n, device=dev)[:, None, None]
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return padded.permute(0, 2, 3, 1)[images, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    channels = torch.arange(c, device=dev)[None, :, None, None]
    return padded[images[..., None], channels, rows[:, None, :, None], cols[:, None, None, :]]


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (xb, yb) batches of tensors already on a device, each sample once per pass.

    Shuffling draws a permutation on x's device (`generator`, if given, must live there); without
    shuffling the batches are views in order. The last short batch is dropped if `drop_last`.
    """
    if batch_size < 1:
        raise NasError(f"batch size is {batch_size}: give a batch size of at least 1")
    n = x.shape[0]
    stop = n - n % batch_size if drop_last else n
    order = torch.randperm(n, device=x.device, generator=generator) if shuffle else None
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


_ARGUMENT_RULES = {
    "per_class": optional(integer(1)), "fraction": optional(number(0, 1, low_open=True)),
    "val_fraction": number(0, 1, low_open=True, high_open=True), "image_size": optional(integer(1, 4096)),
    "seed": integer(0),
}


def _check_arguments(
    per_class: int | None, fraction: float | None, val_fraction: float, seed: int, image_size: int | None
) -> None:
    if per_class is not None and fraction is not None:
        raise NasError("per_class and fraction are both given: give one of them to subset the training split")
    given = {"per_class": per_class, "fraction": fraction, "val_fraction": val_fraction, "image_size": image_size,
             "seed": seed}
    for name, rule in _ARGUMENT_RULES.items():
        if not rule(given[name]):
            raise InvalidField(name, given[name], rule.allowed)


def source_fingerprint(source: str | os.PathLike[str]) -> str:
    """What a data source is made of, as a short digest: the files' names, sizes and contents (contents of
    files up to 16 MiB each, the first 16 MiB of larger ones). A study records it and refuses to resume on
    data that changed; renaming the folder or copying it elsewhere keeps the digest."""
    if isinstance(source, str) and source == "digits":
        return "digits"
    path = Path(source).expanduser()
    if not path.exists():
        raise NasError(f"no such file or directory: {path}; {ACCEPTED}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files[:200_000]:
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{f.stat().st_size}\n".encode())
        with f.open("rb") as handle:
            digest.update(handle.read(16 << 20))
    return digest.hexdigest()[:16]


def _read_source(source: str | os.PathLike[str], image_size: int | None) -> _Raw:
    """Pick the reader for `source`; the format is told by the name, suffix and layout."""
    if isinstance(source, str) and source == "digits":
        return _read_digits()
    path = Path(source).expanduser()
    if not path.exists():
        raise NasError(f"no such file or directory: {path}; {ACCEPTED}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return _read_npz(path)
        hint = " (extract the archive first)" if path.suffix.lower() in ARCHIVE_SUFFIXES else ""
        raise NasError(f"{path} is not a data source{hint}: {ACCEPTED}")
    cifar = _find_cifar(path)
    if cifar is not None:
        return _read_cifar(*cifar)
    return _read_image_folder(path, image_size)


def _read_digits() -> _Raw:
    """scikit-learn's 1797 8x8 digits, shipped inside the package, so nothing is downloaded."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    return _Raw("digits", tuple(str(c) for c in range(10)), x, bunch.target.astype(np.int64))


def _find_cifar(path: Path) -> tuple[str, Path] | None:
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


def _read_cifar(kind: str, directory: Path) -> _Raw:
    """CIFAR python batches; the shipped test batch becomes the validation split."""
    if kind == "cifar-10":
        num_classes, label_key = 10, "labels"
        train_files, test_file = CIFAR10_FILES[:-1], CIFAR10_FILES[-1]
    else:
        num_classes, label_key = 100, "fine_labels"
        train_files, test_file = CIFAR100_FILES[:1], CIFAR100_FILES[1]
    batches = [_read_cifar_batch(directory / f, label_key, num_classes) for f in train_files]
    x_val, y_val = _read_cifar_batch(directory / test_file, label_key, num_classes)
    return _Raw(
        f"{kind}:{directory}",
        tuple(str(c) for c in range(num_classes)),
        _uint8_images(np.concatenate([b[0] for b in batches])),
        np.concatenate([b[1] for b in batches]),
        _uint8_images(x_val),
        y_val,
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain (dicts, lists, numpy arrays): a pickle can run code."""

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

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 (N, 3, 32, 32), int64 labels)."""
    try:
        with path.open("rb") as file:
            batch = _CifarUnpickler(file, encoding="bytes").load()
    except Exception as exc:
        raise NasError(f"cannot read CIFAR batch {path}: {_reason(exc)}; {CIFAR_EXPECTED}") from exc
    if not isinstance(batch, dict):
        raise NasError(f"CIFAR batch {path} is not a dict: {CIFAR_EXPECTED}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise NasError(f"CIFAR batch {path} has no uint8 'data' array of shape (N, 3072): {CIFAR_EXPECTED}")
    if labels is None:
        raise NasError(f"CIFAR batch {path} has no '{label_key}' list: {CIFAR_EXPECTED}")
    y = _labels(labels, f"CIFAR batch {path}", num_classes)
    if len(y) != len(data):
        raise NasError(f"CIFAR batch {path} has {len(data)} images but {len(y)} labels: {CIFAR_EXPECTED}")
    return data.reshape(-1, 3, 32, 32), y


def _read_npz(path: Path) -> _Raw:
    """Arrays x, y and optionally x_val, y_val; float images must already be in [0, 1]."""
    if not zipfile.is_zipfile(path):
        raise NasError(f"{path} is not an .npz archive (a zip of .npy arrays): {NPZ_FIX}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ("x", "y", "x_val", "y_val") if k in archive.files}
    except Exception as exc:
        raise NasError(f"cannot read {path}: {_reason(exc)}; {NPZ_FIX}") from exc
    for key in ("x", "y"):
        if key not in arrays:
            raise NasError(f"{path} has no array '{key}': {NPZ_FIX}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise NasError(
            f"{path} has only one of x_val and y_val: store both for a validation split, or neither"
        )
    x = _npz_images(arrays["x"], path, "x")
    y = _labels(arrays["y"], f"y of {path}")
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
        return _Raw(f"npz:{path}", classes, x, y)
    x_val = _npz_images(arrays["x_val"], path, "x_val")
    y_val = _labels(arrays["y_val"], f"y_val of {path}", num_classes)
    if len(x_val) != len(y_val):
        raise NasError(
            f"{path} has {len(x_val)} images in x_val but {len(y_val)} labels in y_val: give one label per "
            "image"
        )
    if x_val.shape[1] != x.shape[1]:
        raise NasError(
            f"{path} has {x.shape[1]} channels in x but {x_val.shape[1]} in x_val: make them equal"
        )
    return _Raw(f"npz:{path}", classes, x, y, resize_images(x_val, x.shape[2]), y_val)


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


def _read_image_folder(path: Path, image_size: int | None) -> _Raw:
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
        return _Raw(f"images:{path}", classes, x, y, x_val, y_val)
    classes = tuple(d.name for d in subdirs)
    files, y = _class_files(path, classes)
    size, mode = _common_size_and_mode(files, image_size)
    return _Raw(f"images:{path}", classes, _decode(files, size, mode), y)


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
            raise NasError(f"cannot read image {file}: {_reason(exc)}; replace or delete the file") from exc
    return image_size or smallest, "L" if gray else "RGB"


def _decode(files: list[Path], size: int, mode: str) -> torch.Tensor:
    """Decode, centre-crop to square and resize (Pillow bilinear, antialiased) -> float32 [0, 1]."""
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
            raise NasError(f"cannot read image {file}: {_reason(exc)}; replace or delete the file") from exc
    return _uint8_images(out.transpose(0, 3, 1, 2))


def _labels(values: object, where: str, num_classes: int | None = None) -> np.ndarray:
    """Validate labels as whole numbers in 0..num_classes-1 (or >= 0) and return them as int64."""
    try:
        y = np.asarray(values)
    except Exception as exc:
        raise NasError(f"labels in {where} are not an array of integers: {_reason(exc)}") from exc
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


def _stratified_split(
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


def _subset(
    y: np.ndarray, num_classes: int, per_class: int | None, fraction: float | None, seed: int
) -> np.ndarray:
    """Sorted indices of the kept training images: the first per_class (or max(1, round(fraction *
    count))) of each class in a seed-fixed order, so smaller subsets are inside larger ones."""
    keep = []
    for idx in _shuffled_by_class(y, num_classes, seed, _SUBSET_STREAM):
        if per_class is not None:
            k = int(per_class)
        else:
            assert fraction is not None, "_subset needs per_class or fraction (the caller checks)"
            k = max(1, round(fraction * len(idx)))
        keep.append(idx[:k])
    return np.sort(np.concatenate(keep))


def _shuffled_by_class(y: np.ndarray, num_classes: int, seed: int, stream: int) -> list[np.ndarray]:
    """Each class's indices in an order fixed by (seed, stream); streams keep split and subset apart."""
    rng = np.random.default_rng([seed, stream])
    return [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]


def _uint8_images(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> contiguous float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(255)


def _center_square(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2], x.shape[3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[:, :, top : top + side, left : left + side].contiguous()


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std in float64, summed in chunks to bound memory."""
    n, c, h, w = x.shape
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(max(1, 2**22 // (c * h * w))):
        chunk = chunk.double()
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = n * h * w
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel, in place: every x here is a tensor this module just made."""
    shape = (1, -1, 1, 1)
    return x.sub_(mean.float().view(shape)).div_(std.float().view(shape))


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
