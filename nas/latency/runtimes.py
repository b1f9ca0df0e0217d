"""What one timed run of a module is, per runtime: eager PyTorch, a replayed CUDA graph, an ONNX Runtime session.

Each function turns a module and its (fixed) input into a callable that runs one inference; the timing
protocol (nas.latency.measure) times those callables alike, whatever runs underneath.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

import torch
from torch import nn

from nas.config import LatencySettings
from nas.errors import NasError

ONNX_OPSET = 17


def import_optional(name: str, fix: str) -> ModuleType:
    """`import name`, or the one-line error `fix` (how to install it) when the package is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise NasError(fix) from None


def onnxruntime_run(model: nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """One inference of `model` as an ONNX Runtime CPU session. The TorchScript exporter (dynamo=False)
    is used because it writes opset 17 directly and needs only the onnx package; the newer exporter
    also needs onnxscript and cannot convert these graphs down to 17."""
    ort = import_optional("onnxruntime", "runtime onnxruntime is not installed: pip install onnxruntime, "
                                          "or use --runtime torch")
    import_optional("onnx", "runtime onnxruntime exports through torch.onnx, which needs the onnx package: "
                             "pip install onnx, or use --runtime torch")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = write_onnx(model, x, Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def write_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """`model` as an ONNX file at opset ONNX_OPSET, traced on `x` (its shape, batch included, is fixed in the
    graph) with the TorchScript exporter (see onnxruntime_run); needs the onnx package."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notices
        torch.onnx.export(model, (x,), str(path), opset_version=ONNX_OPSET, dynamo=False)
    return path


def cuda_graph_run(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The forward captured once as a CUDA graph, replayed on the same static input: how a server that
    captures its model runs it, without the host launching each kernel. Warm-up runs on a side stream
    first, as capture requires (cuDNN picks its algorithms there, not inside the graph)."""
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x)
    return graph.replay


def prepared_run(model: nn.Module, shape: tuple[int, int, int], settings: LatencySettings, device: torch.device,
                 threads: int) -> Callable[[], object]:
    """One inference of `model` on a fixed random batch of `shape` images, as `settings` serve it: the model
    and its input on `device`, in the settings' precision and memory format, eager or replayed from a CUDA
    graph; or an ONNX Runtime session (always fp32 on the CPU)."""
    if settings.runtime == "onnxruntime":
        return onnxruntime_run(model.eval().cpu(), torch.randn(settings.batch_size, *shape), threads)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    # Module.to accepts memory_format at runtime; torch's stubs leave it out.
    model = cast(Callable[..., nn.Module], model.eval().to)(device, dtype, memory_format=fmt)
    x = torch.randn(settings.batch_size, *shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
    return cuda_graph_run(model, x) if settings.cuda_graph else functools.partial(model, x)
