"""Family members as ONNX files, each checked in ONNX Runtime against the PyTorch model it came from.

Opset 17 (nas.latency.runtimes.ONNX_OPSET), batch 1, input at the member's resolution, written by the
TorchScript exporter as the latency timings' ONNX runtime is. Each file is run once in ONNX Runtime on the
CPU on the same random input as the PyTorch model; the largest difference between the two sets of logits
is returned, and a file beyond PARITY_TOLERANCE is removed and refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.blocks import BN_MOMENTUM
from nas.builder import EfficientNet, build_model
from nas.latency.runtimes import import_optional, write_onnx
from nas.validation import file_in

if TYPE_CHECKING:
    from nas.family import Member

PARITY_TOLERANCE = 1e-4
"""The largest |ONNX Runtime logit - PyTorch logit| accepted, times the largest |logit| when that is above 1:
float32 keeps about 7 digits. Measured on B0, B1, B2, B3, B5, B7 at their resolutions (export_onnx): 0.9e-5 to
7.6e-5, with largest logits of 3.4 to 15.6, never more than 5e-6 of the largest logit."""


class OnnxMismatch(RuntimeError):
    """ONNX Runtime's logits differ from PyTorch's beyond the tolerance: an exporter or runtime fault, not
    the user's."""


@dataclass(frozen=True)
class OnnxExport:
    """One member written as ONNX and checked."""

    name: str
    path: Path
    resolution: int
    max_abs_diff: float      # the largest |ONNX Runtime logit - PyTorch logit| on one random input


def require_onnx() -> ModuleType:
    """onnxruntime, after checking that onnx (which torch.onnx writes with) is there too; a one-line error
    saying what to install otherwise. Call it before long work that ends in an export."""
    fix = "ONNX export needs the onnx and onnxruntime packages: pip install onnx onnxruntime"
    import_optional("onnx", fix)
    return import_optional("onnxruntime", fix)


def export_model_onnx(model: nn.Module, path: str | Path, x: torch.Tensor,
                      tolerance: float = PARITY_TOLERANCE) -> float:
    """Write `model` (put in eval mode) as ONNX at `path`, traced on `x` (its shape, batch included, is fixed in
    the graph), run the file in ONNX Runtime (CPU) on `x`, and return the largest difference from the model's
    own logits; raise OnnxMismatch (and remove the file) above `tolerance` (of the largest logit, when above 1:
    PARITY_TOLERANCE). Any nn.Module that maps images to logits works: an effnas network, or a trained
    standalone one (nas.export.pytorch)."""
    ort = require_onnx()
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        expected = model(x)
    write_onnx(model, x, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    diff = (torch.from_numpy(got) - expected).abs().max().item()
    allowed = tolerance * max(1.0, expected.abs().max().item())
    if not diff <= allowed:
        path.unlink()
        raise OnnxMismatch(f"{path.name}: ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g}, beyond "
                           f"{allowed:.3g}; the file was removed (torch {torch.__version__}, onnxruntime "
                           f"{ort.__version__})")
    return diff


def trained_scale(model: EfficientNet, images: torch.Tensor) -> EfficientNet:
    """`model` with the scale of a trained network: batch-norm statistics measured on `images` (a batch of at
    least two), and the classifier scaled so that their logits spread by 1. As built (running statistics 0
    and 1) activations shrink about 100-fold a stage and B0's logits are near 1e-13, where any two runtimes
    agree within 1e-4 and half precision rounds everything to 0; measured on two random images at a member's
    own resolution, the logits of a third spread by 1 to 5 (B0..B7). The weights stay random."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    for bn in norms:                  # a cumulative average over this one batch, the rest of the model in eval
        bn.reset_running_stats()
        bn.momentum, bn.training = None, True
    with torch.no_grad():
        model(images)
        for bn in norms:
            bn.momentum, bn.training = BN_MOMENTUM, False
        spread = model(images).std()
        if spread > 0:                # not for one class and a single logit (NaN spread)
            model.classifier.weight.div_(spread)
    return model


def export_onnx(members: Sequence[Member], out_dir: str | Path, num_classes: int = 1000, in_channels: int = 3,
                tolerance: float = PARITY_TOLERANCE,
                progress: Callable[[str], None] | None = None) -> list[OnnxExport]:
    """Write each member as `out_dir/<name>.onnx` (opset 17, batch 1, its own resolution), each checked in ONNX
    Runtime (export_model_onnx) on a random image: a graph to deploy or time on the target runtime. Its weights
    are random (effnas trains only proxies), at a trained network's scale (trained_scale, on two other images). Names that are no plain file name are
    refused before anything is written."""
    out_dir = Path(out_dir)
    require_onnx()
    paths = [file_in(out_dir, spec.name, ".onnx") for _, spec in members]
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for i, ((_, spec), path) in enumerate(zip(members, paths), 1):
        if progress:
            progress(f"[{i}/{len(members)}] exporting {spec.name} to ONNX at {spec.resolution} px")
        images = torch.randn(3, in_channels, spec.resolution, spec.resolution,
                             generator=torch.Generator().manual_seed(0))
        model = trained_scale(build_model(spec, num_classes, in_channels), images[:2])
        diff = export_model_onnx(model, path, images[2:], tolerance)    # checked on an image not measured
        done.append(OnnxExport(spec.name, path, spec.resolution, diff))
    return done
