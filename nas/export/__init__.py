"""Hand-off: a family as one standalone PyTorch module (nas.export.pytorch) and as ONNX files, each checked in
ONNX Runtime (nas.export.onnx); docs/export.md. The functions below load their module (and torch) on first use,
so that importing this package costs nothing."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["export_model_onnx", "export_onnx", "export_pytorch"]

_HOMES = {"export_pytorch": "nas.export.pytorch", "export_onnx": "nas.export.onnx",
          "export_model_onnx": "nas.export.onnx"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nas.export' has no attribute {name!r}")
