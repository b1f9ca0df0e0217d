"""Batches cut from tensors already on the training device: no DataLoader, no workers, no host syncs."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from nas.errors import NasError


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
