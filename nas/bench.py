"""Benchmarks that print figures side by side with a reference measured in the same run.

`bench_proxy` times training steps of the proxy engine (`proxy.train`, the exact code path a search
trial runs) against a plain loop: fp32, NCHW, a standard DataLoader from host memory, default
optimizer, no compile. Both see the same network, data, batch size and thread count; the first epoch
of each is warm-up and the second is timed. The engine is also timed in NCHW, which splits its lead into
the memory format's share and the share of its loop and device-resident data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from nas.builder import build_model, zero_init_last_layers
from nas.config import TrainConfig
from nas.data import Dataset, resize_images
from nas.device import default_threads, resolve_device
from nas.errors import NasError
from nas.flops import count_flops
from nas.proxy import train
from nas.spec import NetworkSpec


def synthetic_dataset(n: int, in_channels: int = 3, size: int = 32, num_classes: int = 10,
                      seed: int = 0) -> Dataset:
    """Random standardized images: throughput does not depend on what the pixels show."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_channels, size, size, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Dataset(name=f"synthetic-{n}", x_train=x, y_train=y, x_val=x[:256], y_val=y[:256],
                   num_classes=num_classes, mean=(0.0,) * in_channels, std=(1.0,) * in_channels)


def reference_images_per_sec(spec: NetworkSpec, data: Dataset, resolution: int, cfg: TrainConfig) -> float:
    """The plain loop: what a user writes first. Epoch 1 warms up, epoch 2 is timed."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = zero_init_last_layers(build_model(spec, data.num_classes, data.in_channels)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(TensorDataset(resize_images(data.x_train, resolution), data.y_train),
                        batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    model.train()
    rate = 0.0
    for _ in range(2):
        seen, t0 = 0, time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - t0)
    return rate


def _engine_images_per_sec(spec: NetworkSpec, data: Dataset, resolution: int, cfg: TrainConfig,
                           channels_last: bool) -> float:
    run = train(spec, data, dataclasses.replace(cfg, epochs=2, steps=None, channels_last=channels_last),
                resolution=resolution)
    return run.epochs[-1].images_per_sec


def parse_resolutions(text: str) -> list[int]:
    """'32,64' -> [32, 64]: whole pixel sizes from 8 to 1024."""
    try:
        resolutions = [int(r) for r in text.split(",")]
    except ValueError:
        raise NasError(f"--resolutions {text!r}: give comma-separated integers such as 32,64") from None
    bad = [r for r in resolutions if not 8 <= r <= 1024]
    if bad:
        raise NasError(f"--resolutions {text!r}: {bad[0]} px is outside 8..1024; give sizes such as 32,64")
    return resolutions


def bench_proxy(specs: Sequence[NetworkSpec], resolutions: Sequence[int], cfg: TrainConfig, images: int = 1024,
                progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Images per second of training for each network and resolution: engine vs plain loop."""
    if not 1 <= images <= 1_000_000 or images < cfg.batch_size:
        raise NasError(f"--images {images}: give from --batch-size ({cfg.batch_size}) to 1000000 images per timed "
                       f"epoch")
    device = resolve_device(cfg.device)
    threads = cfg.threads or default_threads()
    torch.set_num_threads(threads)
    rows = []
    for spec in specs:
        for res in resolutions:
            data = synthetic_dataset(images, size=res)
            if progress:
                progress(f"{spec.name} @ {res} px: engine ...")
            engine = _engine_images_per_sec(spec, data, res, cfg, channels_last=True)
            # The same engine in NCHW separates channels_last's share from the loop and data path's.
            engine_nchw = _engine_images_per_sec(spec, data, res, cfg, channels_last=False)
            if progress:
                progress(f"{spec.name} @ {res} px: reference loop ...")
            reference = reference_images_per_sec(spec, data, res, cfg)
            rows.append({
                "network": spec.name, "resolution": res, "batch": cfg.batch_size, "device": str(device),
                "threads": threads if device.type == "cpu" else None,
                "mflops": round(count_flops(spec, res, 3, 10).flops / 1e6, 1),
                "engine_img_s": round(engine, 1), "engine_nchw_img_s": round(engine_nchw, 1),
                "reference_img_s": round(reference, 1),
                "speedup": round(engine / reference, 2),
            })
    return pd.DataFrame(rows)
