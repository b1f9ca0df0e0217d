"""FLOPs and activations of the real, built module, counted by fvcore.

Convention (the paper's, and fvcore's): one fused multiply-add is one FLOP, so EfficientNet-B0 at 224 px
is 0.39 GFLOPs. `FlopCount.flops` counts convolutions and linear layers. Batch norm is left out of
it because it folds into the preceding convolution at inference. Activation functions, the SE mean and
gate multiply, and residual adds are counted by handles registered here (one FLOP per output element) and
reported apart as `elementwise`: they are memory-bound rather than arithmetic work, the paper leaves
them out, and adding them would move B0 by about 5 %. fvcore's warnings about skipped ops are silenced
because every op the builder emits has a handle here (`unhandled` lists any that do not).

Activations are what fvcore's `ActivationCountAnalysis` counts: the output elements of every convolution
and linear layer (Dollar, Singh, Girshick, "Fast and Accurate Model Scaling", 2021, who find that they
track GPU runtime more closely than FLOPs). They are counted by fvcore's activation handle in the same
trace as FLOPs, so asking for both costs one trace (tests check the count against
`ActivationCountAnalysis` and against a hand count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore's import scripts a loss function with the deprecated torch.jit.script
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import conv_flop_jit, elementwise_flop_counter, generic_activation_jit, linear_flop_jit

from nas.builder import build_model, count_params
from nas.spec import NetworkSpec

_ARITHMETIC = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")
ACTIVATIONS = "activations"
_output_elements = generic_activation_jit()     # fvcore's activation count: the elements of an op's output


def _conv_and_activations(inputs, outputs) -> Counter:
    return conv_flop_jit(inputs, outputs) + Counter({ACTIVATIONS: _output_elements(inputs, outputs)})


def _linear_and_activations(inputs, outputs) -> Counter:
    return Counter({"linear": linear_flop_jit(inputs, outputs), ACTIVATIONS: _output_elements(inputs, outputs)})


# The layers ActivationCountAnalysis counts, as the builder emits them: their FLOPs and their outputs.
_LAYER_OPS = {"aten::_convolution": _conv_and_activations, "aten::linear": _linear_and_activations}
_ELEMENTWISE_OPS = {
    f"aten::{op}": _output_elements
    for op in ("silu", "silu_", "sigmoid", "sigmoid_", "relu", "relu_", "relu6", "hardtanh", "hardtanh_",
               "hardswish", "hardswish_", "mul", "mul_", "add", "add_", "div", "div_", "mean")
}
_ELEMENTWISE_OPS["aten::adaptive_avg_pool2d"] = elementwise_flop_counter(1, 0)
# Shape bookkeeping and the training-only dropout: no arithmetic at inference.
_FREE_OPS = {f"aten::{op}": None for op in ("batch_norm", "dropout", "dropout_", "flatten", "feature_dropout",
                                             "size", "view", "reshape", "empty", "bernoulli_")}


def _analysis(model: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    """FLOPs and activations of `model` on `x` in one fvcore trace, quiet: every op the builder emits is
    handled or free."""
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    return (FlopCountAnalysis(model, x).set_op_handle(**_LAYER_OPS, **_ELEMENTWISE_OPS, **_FREE_OPS)
            .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none"))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """A trace for counting on one thread: its feature maps are a few pixels, where a second thread gains
    nothing, and beside other work OpenMP's spinning threads made the traces several times slower (a
    frontier's planning, some 40 traces: 46 s with 2 threads, 12 s with 1, beside a running study on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class FlopCount:
    flops: int          # multiply-adds of convolutions and linear layers (the headline number)
    elementwise: int    # activation functions, SE mean and gate, residual adds, pooling
    activations: int    # output elements of convolutions and linear layers
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
    analysis = _analysis(model, torch.zeros(1, in_channels, resolution, resolution))
    with torch.no_grad():
        by_op = analysis.by_operator()
    activations = by_op[ACTIVATIONS]
    flops = sum(v for op, v in by_op.items() if op.startswith(_ARITHMETIC))
    return FlopCount(flops=int(flops), elementwise=int(sum(by_op.values()) - flops - activations),
                     activations=int(activations), params=count_params(model), resolution=resolution,
                     unhandled=tuple(sorted(analysis.unsupported_ops())))


@functools.lru_cache(maxsize=1024)
def _per_layer_counts(arch: NetworkSpec, in_channels: int,
                      num_classes: int) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """(parameters, ((stride level or -1 for constant, FLOPs per output position, activations per output
    position), ...)) of every convolution and linear layer.

    The blocks after the first of a stage are identical (same channels, stride 1), so the count comes from
    a trace of the network cut to at most two blocks a stage (`_traced_layers`), each second block's layers
    and parameters counted (repeats - 1) times: exact, a family's deepest member (10x B0's depth) costs the
    trace of a shallow one, and members that differ only in depth share one trace. This is what lets a
    search check every candidate's whole family."""
    repeats = [st.repeats for st in arch.stages]
    short = arch.replace(stages=tuple(dataclasses.replace(st, repeats=min(st.repeats, 2)) for st in arch.stages),
                         dropout=0.0, drop_connect=0.0, depth_mult=1.0)   # none changes a count; each varies
    params, layers = _traced_layers(short, in_channels, num_classes)

    def times(stage: int) -> int:
        return 1 if stage < 0 else repeats[stage] - 1

    return (sum(n * times(stage) for stage, n in params),
            tuple((level, f * times(stage), a * times(stage)) for stage, level, f, a in layers))


@functools.lru_cache(maxsize=1024)
def _traced_layers(short: NetworkSpec, in_channels: int,
                   num_classes: int) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int, int, int], ...]]:
    """(((stage, parameters), ...), ((stage, stride level or -1 for constant, FLOPs per output position,
    activations per output position), ...)) of a network of at most two blocks a stage, from one fvcore
    trace at twice the total stride, where every feature map is at least 2 px, so each layer's stride level
    reads off unambiguously and only squeeze-excite convolutions see 1 px. `stage` is the stage of a layer
    in a stage's second block, which stands for all its repeated blocks, and -1 for every other layer."""
    r_ref = short.resolution

    def stage_of(name: str) -> int:
        parts = name.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[0] == "stages" and parts[2] == "1" else -1

    with torch.device("meta"):     # counting needs shapes, not weights: skip initialising them
        model = build_model(short, num_classes=num_classes, in_channels=in_channels)
    model = model.to_empty(device="cpu").eval()
    sizes: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: sizes.__setitem__(name, int(out.shape[-1])))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    analysis = _analysis(model, torch.zeros(1, in_channels, r_ref, r_ref))
    with torch.no_grad(), _one_thread():
        by_module = analysis.by_module_and_operator()
    for h in hooks:
        h.remove()
    layers = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        activations = int(by_module[name][ACTIVATIONS])
        flops = int(sum(by_module[name].values())) - activations
        if isinstance(m, nn.Linear) or sizes[name] == 1:    # linear, or after global pooling (squeeze-excite)
            layers.append((stage_of(name), -1, flops, activations))
        else:
            area = sizes[name] ** 2
            layers.append((stage_of(name), round(math.log2(r_ref / sizes[name])), flops // area, activations // area))
    return tuple((stage_of(name), p.numel()) for name, p in model.named_parameters()), tuple(layers)


def _architecture(spec: NetworkSpec) -> NetworkSpec:
    """The spec with its resolution set to twice its total stride: one cache entry per architecture.
    The stride comes from the spec, not a built model, so a cache hit builds nothing."""
    return dataclasses.replace(spec, resolution=2 * spec.total_stride, name="arch")


def flops_at(spec: NetworkSpec, resolution: int, in_channels: int = 3, num_classes: int = 1000) -> int:
    """`count_flops(...).flops` at any resolution from one trace per architecture.

    A convolution's FLOPs are its per-position work times its output area, and with stride-2
    convolutions padded by k // 2 a map at stride level l has side ceil(r / 2^l); linear layers and
    squeeze-excite convolutions do not depend on r. So the count at r follows exactly from the per-layer
    counts of one trace. The resolution search of the coefficient search calls this many times per
    candidate; tests check it equals a direct count at odd resolutions.
    """
    _, layers = _per_layer_counts(_architecture(spec), in_channels, num_classes)
    return sum(f if level < 0 else f * math.ceil(resolution / 2 ** level) ** 2 for level, f, _ in layers)


def activations_at(spec: NetworkSpec, resolution: int, in_channels: int = 3, num_classes: int = 1000) -> int:
    """`count_flops(...).activations` (output elements of every convolution and linear layer) at any
    resolution, from the same trace as `flops_at` and rescaled the same way: a layer's outputs are its
    channels times its output area."""
    _, layers = _per_layer_counts(_architecture(spec), in_channels, num_classes)
    return sum(a if level < 0 else a * math.ceil(resolution / 2 ** level) ** 2 for level, _, a in layers)


def params_of(spec: NetworkSpec, in_channels: int = 3, num_classes: int = 1000) -> int:
    """Parameter count, from the same cached build as `flops_at`."""
    return _per_layer_counts(_architecture(spec), in_channels, num_classes)[0]
