"""Cluttered digits: the bundled task where depth, width and resolution matter (after cluttered MNIST,
Jaderberg et al., 2015), made from scikit-learn's 8x8 digits, so nothing is downloaded.

scikit-learn's digits are 8x8: above 8 px a network sees no more of them, so on them the resolution
axis of a scaling search measures nothing and every rule ties. Here each image is a larger canvas with one
digit at a random scale and position, among fragments of other digits:

1. The 1797 digits are split, per class and with a fixed seed, into a training pool (70 %) and a
   validation pool (30 %) of exemplars; training images are composed from the first only, validation
   images from the second only, so no exemplar is seen in both (no leakage through a memorized digit).
2. Each image has one target digit (labels balanced: the same count of every class), resized with
   antialiased bilinear interpolation to a side drawn log-uniformly from `scale` and placed at a
   uniformly random position wholly inside the canvas. At the proxy's resolution a digit at the small
   end is a few pixels wide: resolution decides whether it can be read.
3. Clutter: `fragments` pieces of other exemplars of the same pool, each a digit resized to a side drawn
   from `fragment_source` and cropped to a random square of `fragment` pixels (a stroke, never a whole
   small digit), placed anywhere on the canvas. Telling the digit from the strokes around it takes more
   than a linear read-out of the pixels.
4. Strokes combine by maximum (ink over ink); values are rounded to 8-bit levels, uniform noise of
   0..`noise` levels is added (saturating at 255), and the images are returned divided by 255.

Everything is drawn from one `numpy.random.Generator(PCG64(seed))` in a fixed order, the arithmetic is
float64 numpy (the resize weights from torch's antialiased bilinear kernel) and the result is rounded to
8-bit levels, so the same parameters give the same arrays on every machine (with NumPy's stream for
PCG64, which NumPy keeps stable in practice but does not promise across versions). `GENERATOR_VERSION`
and the parameters make the source's fingerprint: a change to either is another data set, and a stored
study refuses to resume on it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nas.data.raw import RawImages, uint8_images

NAME = "cluttered_digits"
GENERATOR_VERSION = 1
"""Bump when the generator's code changes what it draws: the fingerprint changes with it."""

_SOURCE_SIDE = 8          # scikit-learn's digits are 8x8
_CHUNK = 1000             # images drawn at a time (bounds memory; the result does not depend on it)


@dataclass(frozen=True)
class ClutteredParams:
    """What a cluttered-digits data set is made of (the defaults are the bundled `cluttered_digits`)."""

    canvas: int = 48                        # side of every image, in pixels
    train: int = 8000                       # training images (a multiple of 10: labels exactly balanced)
    val: int = 2000                         # validation images (likewise)
    val_pool: float = 0.3                   # share of each class's exemplars kept for validation images
    scale: tuple[int, int] = (12, 24)       # side of the target digit, drawn log-uniformly (inclusive)
    fragments: tuple[int, int] = (2, 4)     # clutter pieces per image (inclusive)
    fragment: tuple[int, int] = (4, 6)      # side of each piece (inclusive)
    fragment_source: tuple[int, int] = (14, 24)   # side of the digit a piece is cut from: a piece is part
                                                  # of a digit, never a whole small one
    noise: int = 12                         # uniform noise of 0..noise levels (of 255) added to every pixel
    seed: int = 2015

    def __post_init__(self) -> None:
        if not (self.train >= 10 and self.val >= 10 and 0 < self.val_pool < 1
                and 1 <= self.scale[0] <= self.scale[1] <= self.canvas
                and 0 <= self.fragments[0] <= self.fragments[1]
                and 1 <= self.fragment[0] <= self.fragment[1] <= min(self.canvas, self.fragment_source[0])
                and 1 <= self.fragment_source[0] <= self.fragment_source[1] and 0 <= self.noise <= 255):
            raise ValueError(f"inconsistent cluttered-digits parameters: {self}")

    def fingerprint(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return f"{NAME}-v{GENERATOR_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


DEFAULT = ClutteredParams()


def read_cluttered_digits(params: ClutteredParams = DEFAULT) -> RawImages:
    """The cluttered digits with their own validation split (see the module's docstring).

    Returns 1 x canvas x canvas float32 images in [0, 1]; the training and validation images are made
    from disjoint pools of exemplars. Same parameters, same arrays."""
    x, y, x_val, y_val = _generate(params)
    return RawImages(NAME, tuple(str(c) for c in range(10)), uint8_images(x), y, uint8_images(x_val), y_val)


def exemplar_pools(params: ClutteredParams = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """Indices into scikit-learn's digits of the training and validation pools (disjoint, sorted)."""
    _, labels = _source_digits()
    rng = np.random.Generator(np.random.PCG64(params.seed))
    return _split_pools(labels, params.val_pool, rng)


def _generate(params: ClutteredParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = _source_digits()
    rng = np.random.Generator(np.random.PCG64(params.seed))
    train_pool, val_pool = _split_pools(labels, params.val_pool, rng)
    x, y = _compose(images, labels, train_pool, params.train, params, rng)
    x_val, y_val = _compose(images, labels, val_pool, params.val, params, rng)
    return x, y, x_val, y_val


@functools.lru_cache(maxsize=1)
def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float64), bunch.target.astype(np.int64)


def _split_pools(labels: np.ndarray, val_share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, val = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(round(val_share * len(idx)), 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@functools.lru_cache(maxsize=8)
def _resize_weights(max_side: int) -> np.ndarray:
    """(max_side + 1, max_side, 8): row s holds the s x 8 matrix A with A @ d @ A.T = d resized to s x s
    (torch's antialiased bilinear, which is separable), padded with zero rows below s."""
    out = np.zeros((max_side + 1, max_side, _SOURCE_SIDE))
    eye = torch.eye(_SOURCE_SIDE, dtype=torch.float64).view(_SOURCE_SIDE, 1, 1, _SOURCE_SIDE)
    for s in range(1, max_side + 1):
        resized = F.interpolate(eye, size=(1, s), mode="bilinear", align_corners=False, antialias=True)
        out[s, :s] = resized[:, 0, 0, :].T.numpy()
    return out


def _log_uniform_sides(rng: np.random.Generator, bounds: tuple[int, int], n: int) -> np.ndarray:
    low, high = bounds
    return np.clip(np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1), n))), low, high).astype(np.int64)


def _compose(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, p: ClutteredParams,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n uint8 canvases (n, 1, side, side) from the exemplars in `pool`, and their labels: one target digit
    each (labels balanced), plus clutter. Every random number is drawn first, in a fixed order; the
    images are then drawn in chunks to bound memory."""
    side, s_high = p.canvas, p.scale[1]
    f_low, f_high = p.fragment

    # Target digits: a balanced, shuffled label for each image, an exemplar of that class from the pool.
    y = rng.permutation(np.arange(n) % 10)
    by_class = [pool[labels[pool] == c] for c in range(10)]
    target = np.empty(n, dtype=np.int64)
    for c in range(10):
        where = np.flatnonzero(y == c)
        target[where] = by_class[c][rng.integers(0, len(by_class[c]), len(where))]
    sides = _log_uniform_sides(rng, p.scale, n)
    top, left = (rng.integers(0, side - sides + 1) for _ in range(2))

    # Clutter: square crops of other exemplars of the same pool, each resized to a larger digit first.
    slots = p.fragments[1]
    count = rng.integers(p.fragments[0], slots + 1, n)
    source = pool[rng.integers(0, len(pool), (slots, n))]
    source = np.where(source == target, pool[(np.searchsorted(pool, source) + 1) % len(pool)], source)
    grown = _log_uniform_sides(rng, p.fragment_source, slots * n).reshape(slots, n)
    crop = np.minimum(rng.integers(f_low, f_high + 1, (slots, n)), grown)
    crop = np.where(np.arange(slots)[:, None] < count, crop, 0)      # unused slots draw nothing
    off_r, off_c = (rng.integers(0, grown - crop + 1) for _ in range(2))
    at_r, at_c = (rng.integers(0, side - crop + 1) for _ in range(2))
    noise = rng.integers(0, p.noise + 1, (n, side, side), dtype=np.uint8) if p.noise else None

    weights = _resize_weights(max(s_high, p.fragment_source[1]))
    last = weights.shape[1] - 1
    pad = max(s_high, f_high)
    out = np.empty((n, 1, side, side), dtype=np.uint8)
    for lo in range(0, n, _CHUNK):
        part = slice(lo, min(lo + _CHUNK, n))
        m = part.stop - lo
        rows = np.arange(m)[:, None, None]
        canvas = np.zeros((m, side + pad, side + pad), dtype=np.float32)
        a = weights[sides[part], :s_high]                                # (m, s_high, 8), zero rows beyond side
        span = np.arange(s_high)
        canvas[rows, top[part, None, None] + span[:, None], left[part, None, None] + span] = (
            a @ images[target[part]] @ a.transpose(0, 2, 1))
        span = np.arange(f_high)
        for k in range(slots):
            keep = (span < crop[k, part, None])[:, :, None]              # (m, f_high, 1)
            g = grown[k, part, None]
            a_r = weights[g, np.minimum(off_r[k, part, None] + span, last)] * keep
            a_c = weights[g, np.minimum(off_c[k, part, None] + span, last)] * keep
            at = (rows, at_r[k, part, None, None] + span[:, None], at_c[k, part, None, None] + span)
            canvas[at] = np.maximum(canvas[at], a_r @ images[source[k, part]] @ a_c.transpose(0, 2, 1))
        # 8-bit levels, as an image file holds: a last-bit difference in another machine's float arithmetic
        # cannot change them (it would have to fall exactly on a rounding boundary).
        levels = np.rint(np.clip(canvas[:, :side, :side], 0.0, 1.0) * 255).astype(np.uint8)
        if noise is not None:
            levels = np.minimum(levels.astype(np.int16) + noise[part], 255).astype(np.uint8)
        out[part, 0] = levels
    return out, y.astype(np.int64)
