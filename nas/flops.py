"""FLOPs of the real, built module, counted by fvcore.

Convention (the paper's, and fvcore's): one fused multiply-add is one FLOP, so EfficientNet-B0 at 224 px
is 0.39 GFLOPs. `FlopCount.flops` counts convolutions and linear layers. Batch norm is left out of
it because it folds into the preceding convolution at inference. Activations, the SE mean and gate
multiply, and residual adds are counted by handles registered here (one FLOP per output element) and
reported apart as `elementwise`: they are memory-bound rather than arithmetic work, the paper leaves
them out, and adding them would move B0 by about 5 %. fvcore's warnings about skipped ops are silenced
because every op the builder emits has a handle here (`unhandled` lists any that do not).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

import torch

with warnings.catch_warnings():  # fvcore's import scripts a loss function with the deprecated torch.jit.script
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import elementwise_flop_counter, get_shape

from nas.builder import build_model, count_params
from nas.spec import NetworkSpec

_ARITHMETIC = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")


def _per_output_element(inputs, outputs) -> int:
    shape = get_shape(outputs[0])
    n = 1
    for d in shape:
        n *= d
    return n


_ELEMENTWISE_OPS = {
    f"aten::{op}": _per_output_element
    for op in ("silu", "silu_", "sigmoid", "sigmoid_", "relu", "relu_", "relu6", "hardtanh", "hardtanh_",
               "hardswish", "hardswish_", "mul", "mul_", "add", "add_", "div", "div_", "mean")
}
_ELEMENTWISE_OPS["aten::adaptive_avg_pool2d"] = elementwise_flop_counter(1, 0)
# Shape bookkeeping and the training-only dropout: no arithmetic at inference.
_FREE_OPS = {f"aten::{op}": None for op in ("batch_norm", "dropout", "dropout_", "flatten", "feature_dropout",
                                             "size", "view", "reshape", "empty", "bernoulli_")}


@dataclass(frozen=True)
class FlopCount:
    flops: int          # multiply-adds of convolutions and linear layers (the headline number)
    elementwise: int    # activations, SE mean and gate, residual adds, pooling
    params: int
    resolution: int
    unhandled: tuple[str, ...] = ()

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


@functools.lru_cache(maxsize=512)
def count_flops(spec: NetworkSpec, resolution: int | None = None, in_channels: int = 3,
                num_classes: int = 1000) -> FlopCount:
    """Count one image at `resolution` (default: the spec's). Cached per spec and resolution."""
    resolution = resolution or spec.resolution
    model = build_model(spec, num_classes=num_classes, in_channels=in_channels).eval()
    x = torch.zeros(1, in_channels, resolution, resolution)
    analysis = (FlopCountAnalysis(model, x)
                .set_op_handle(**_ELEMENTWISE_OPS, **_FREE_OPS)
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
                .tracer_warnings("none"))
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        by_op = analysis.by_operator()
    flops = sum(v for op, v in by_op.items() if op.startswith(_ARITHMETIC))
    return FlopCount(flops=int(flops), elementwise=int(sum(by_op.values()) - flops),
                     params=count_params(model), resolution=resolution,
                     unhandled=tuple(sorted(analysis.unsupported_ops())))
