"""scikit-learn's bundled handwritten digits, the default source."""

from __future__ import annotations

import numpy as np
import torch

from nas.data.raw import RawImages


def read_digits() -> RawImages:
    """scikit-learn's 1797 8x8 digits, shipped inside the package, so nothing is downloaded."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    return RawImages("digits", tuple(str(c) for c in range(10)), x, bunch.target.astype(np.int64))
