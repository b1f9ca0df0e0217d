"""One training step of the proxy engine: forward under autocast, loss, backward and optimizer step, for
one network or for k seeds of it fused into one, run eagerly or captured once as a CUDA graph.

Why fuse: a proxy network is small, and on a GPU one small training job is bound by launching kernels,
not by arithmetic. Training the k seeds of a candidate as one horizontally fused job (HFTA, Wang et al.,
MLSys 2021) launches each kernel once for all of them. `torch.func.vmap` over the k seeds' stacked
parameters does the fusing: its batching rules turn k convolutions into one grouped convolution, k batch
norms into one, k classifiers into one batched matmul. Each seed keeps its own weights, initialisation,
data order, augmentation, dropout masks (vmap's randomness="different") and optimizer state: the
optimizer's update is element-wise, so one optimizer over the stacked tensors is k optimizers.

Why capture: the eager step launches thousands of kernels (B0 on an H100: about 4,800, 55-65 ms a step at
any proxy size); replaying a captured CUDA graph launches them all at once (4-7x at proxy sizes,
../shared/GPU.md). The capture follows PyTorch's whole-network recipe (CUDA semantics, "Whole-network
capture"): warm-up steps on a side stream, gradients set to None before capture so that backward
allocates them from the graph's pool, static input buffers, a capturable optimizer whose learning rate is
a device tensor (so the schedule is a `fill_`, not a re-capture), autocast without its weight cache.
Randomness inside the graph (dropout, stochastic depth) draws from CUDA's default generator, which graphs
advance on every replay; cropping, flipping and batch order are drawn outside, before the copy into the
static buffers, so every replay sees new data.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from nas.config import TrainConfig

WARMUP_STEPS = 3
"""Eager steps before capture (PyTorch's recipe uses 3): they train for real and initialise lazy state."""


class Replicas:
    """k networks of one architecture trained as one. With k = 1 it is the network itself; with k > 1 the
    parameters and buffers live stacked (k, ...) and each network's own tensors are views of its slice,
    so evaluation and batch-norm recalibration can use each network as a plain module."""

    def __init__(self, models: list[nn.Module], compile: bool = False) -> None:
        self.models = models
        self.k = len(models)
        if self.k == 1:
            self.params: list[tuple[torch.Tensor, int]] = [(p, p.ndim) for p in models[0].parameters()]
            # torch.compile of a Module returns an OptimizedModule (a Module); its stubs only say Callable.
            self.forward = cast(nn.Module, torch.compile(models[0])) if compile else models[0]
            return
        params, buffers = stack_module_state(models)
        self.stacked_params: dict[str, torch.Tensor] = {n: p.detach().requires_grad_() for n, p in params.items()}
        self.stacked_buffers: dict[str, torch.Tensor] = buffers
        for i, model in enumerate(models):
            for name, p in model.named_parameters():
                p.data = self.stacked_params[name].detach()[i]
            for name in [n for n, _ in model.named_buffers()]:
                owner, _, attr = name.rpartition(".")
                model.get_submodule(owner).register_buffer(attr, buffers[name][i])
        self.template = _batchable(copy.deepcopy(models[0]).to("meta"))
        self.params = [(p, p.ndim - 1) for p in self.stacked_params.values()]

    def train(self, mode: bool = True) -> None:
        for m in (self.models if self.k == 1 else [self.template]):
            m.train(mode)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits: (B, classes) from (B, C, H, W) for one network, (k, B, classes) from (k, B, C, H, W)."""
        if self.k == 1:
            return self.forward(x)

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (xb,))

        return vmap(one, randomness="different")(self.stacked_params, self.stacked_buffers, x)


class _GlobalMean(nn.Module):
    """Global average pooling as a mean: vmap batches a mean, while adaptive pooling falls back to a loop
    over the seeds (torch warns of "a performance drop" for aten::as_strided_)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def _batchable(model: nn.Module) -> nn.Module:
    """The fused replicas' template with every global average pooling replaced by `_GlobalMean`."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, _GlobalMean())
    return model


def replica_losses(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy of each replica: shape (k,) for fused logits (k, B, classes), () for one network."""
    if y.dim() == 1:
        return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), label_smoothing=label_smoothing,
                             reduction="none")
    return losses.view(y.shape).mean(1)


def make_optimizer(params: Sequence[tuple[torch.Tensor, int]], cfg: TrainConfig, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; no weight decay on batch-norm parameters and biases (one-dimensional in
    each network). Capturable: the learning rate is a device tensor and the state stays on the device."""
    groups: list[dict[str, Any]] = [
        {"params": [p for p, ndim in params if ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p, ndim in params if ndim <= 1], "weight_decay": 0.0}]
    lr: float | torch.Tensor = cfg.lr
    # SGD keeps no step count: with a tensor learning rate it is capturable as it is.
    capture: dict[str, Any] = {"capturable": True} if capturable and cfg.optimizer != "sgd" else {}
    if capturable:
        lr = torch.tensor(cfg.lr, device=device)
        for g in groups:
            g["lr"] = lr.clone()
    if cfg.optimizer == "rmsprop":      # no fused RMSprop in torch
        return torch.optim.RMSprop(groups, lr=lr, momentum=cfg.momentum, eps=1e-3, foreach=True, **capture)
    fast: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True, **fast)
    return torch.optim.AdamW(groups, lr=lr, **fast, **capture)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place where it is a device tensor (a captured graph reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class EagerStep:
    """The step as plain PyTorch calls. Returns the detached per-replica losses, on the device."""

    def __init__(self, replicas: Replicas, optimizer: torch.optim.Optimizer, autocast: torch.autocast | None,
                 label_smoothing: float) -> None:
        self.replicas, self.optimizer, self.autocast = replicas, optimizer, autocast
        self.label_smoothing = label_smoothing

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self.body(x, y)

    def body(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, loss, backward and update, without clearing gradients (a captured graph's content)."""
        with self.autocast if self.autocast is not None else contextlib.nullcontext():
            logits = self.replicas(x)
        loss = replica_losses(logits, y, self.label_smoothing)
        loss.sum().backward()
        self.optimizer.step()
        return loss.detach()


class CapturedStep:
    """The eager step captured once as a CUDA graph after `WARMUP_STEPS` eager ones, then replayed. A capture
    that fails leaves the eager step in charge, with one warning that says why; training goes on."""

    def __init__(self, eager: EagerStep, warn: Callable[[str], None]) -> None:
        self.eager, self.warn = eager, warn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self.steps = 0
        self.capture_seconds = 0.0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        if self.graph is not None:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
            return self.static_loss
        if self.failed or self.steps <= WARMUP_STEPS:
            with self._side_stream():
                return self.eager(x, y)
        try:
            return self._capture(x, y)
        except Exception as e:   # whatever broke the capture, the eager step still trains
            self.failed, self.graph = True, None
            self.eager.optimizer.zero_grad(set_to_none=True)
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.warn(f"CUDA graph capture failed ({message}): training this network eagerly (slower)")
            return self.eager(x, y)

    def _side_stream(self) -> contextlib.AbstractContextManager[Any]:
        """Eager steps before capture run on a side stream, as the recipe asks (lazy initialisation off the
        capture's stream); after a failed capture the ordinary stream serves."""
        if self.failed or not torch.cuda.is_available():
            return contextlib.nullcontext()
        return _on_side_stream()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        self.static_x, self.static_y = x.clone(), y.clone()
        torch.cuda.synchronize()
        self.eager.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_loss = self.eager.body(self.static_x, self.static_y)
        graph.replay()   # capturing recorded this step without running it
        self.graph = graph
        self.capture_seconds = time.perf_counter() - t0
        return self.static_loss


@contextlib.contextmanager
def _on_side_stream() -> Iterator[None]:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream().wait_stream(side)
