"""`Dataset` and `load_dataset`: pick the reader for a source, then apply the rules every format shares."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nas.data import cluttered
from nas.data.batches import resize_images
from nas.data.cifar import find_cifar, read_cifar
from nas.data.digits import read_digits
from nas.data.image_folder import read_image_folder
from nas.data.npz import read_npz
from nas.data.raw import ACCEPTED, RawImages
from nas.data.split import stratified_split, subset
from nas.errors import NasError
from nas.validation import InvalidField, integer, number, optional

ARCHIVE_SUFFIXES = frozenset({".gz", ".tgz", ".tar", ".zip", ".bz2", ".xz"})


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
        train_idx, val_idx = stratified_split(y, raw.classes, val_fraction, seed, raw.name)
        x_val, y_val = x[torch.from_numpy(val_idx)], y[val_idx]
        x, y = x[torch.from_numpy(train_idx)], y[train_idx]
    if per_class is not None or fraction is not None:
        keep = subset(y, len(raw.classes), per_class, fraction, seed)
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


def _read_source(source: str | os.PathLike[str], image_size: int | None) -> RawImages:
    """Pick the reader for `source`; the format is told by the name, suffix and layout."""
    if isinstance(source, str) and source == "digits":
        return read_digits()
    if isinstance(source, str) and source == cluttered.NAME:
        return cluttered.read_cluttered_digits()
    path = Path(source).expanduser()
    if not path.exists():
        raise NasError(f"no such file or directory: {path}; {ACCEPTED}")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return read_npz(path)
        hint = " (extract the archive first)" if path.suffix.lower() in ARCHIVE_SUFFIXES else ""
        raise NasError(f"{path} is not a data source{hint}: {ACCEPTED}")
    if not path.is_dir():           # a device (/dev/null), a FIFO or a socket: nothing to read images from
        raise NasError(f"{path} is neither a file nor a folder: {ACCEPTED}")
    cifar = find_cifar(path)
    if cifar is not None:
        return read_cifar(*cifar)
    return read_image_folder(path, image_size)


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
    """(x - mean) / std per channel, in place: every x here is a tensor load_dataset just made."""
    shape = (1, -1, 1, 1)
    return x.sub_(mean.float().view(shape)).div_(std.float().view(shape))
