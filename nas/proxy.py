"""The short-training engine that scores every search candidate.

One loop, no framework. Speed comes from a few deliberate choices:
- the whole data set is resized once to the candidate's resolution and held on the device, and
  batches are index slices of it (no DataLoader, no per-step host-to-device copy);
- augmentation (random crop with padding, optional flip) runs on the device, vectorised;
- channels_last memory format (on 2 CPU cores it is the larger part of the engine's lead over a
  plain NCHW loop; see docs/benchmarks.md);
- on CUDA: bf16 autocast, a fused optimizer, optional torch.compile, and no host sync inside the
  step loop (the loss is summed on the device and read once per epoch).

Honesty: a NaN or infinite loss ends the run with status "diverged" and the reason, a CUDA
out-of-memory ends it with status "oom", and the callback can stop a run (status "stopped"); the
result always says which. Accuracy is measured on the validation split after every epoch.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas import sharing
from nas.builder import build_model, zero_init_last_layers
from nas.config import TrainConfig
from nas.data import Dataset, augment_batch, iterate_batches, resize_images
from nas.device import default_threads, resolve_device
from nas.spec import NetworkSpec

# Receives (epoch, validation accuracy); returning True stops the run (how Optuna pruning plugs in).
EpochCallback = Callable[[int, float], bool]


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    seconds: float
    images_per_sec: float


@dataclass
class TrainResult:
    status: str                       # ok | stopped | diverged | oom
    reason: str
    epochs: list[EpochResult] = field(default_factory=list)
    wall_time: float = 0.0
    train_images_per_sec: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"
    resolution: int = 0

    @property
    def final_acc(self) -> float:
        return self.epochs[-1].val_acc if self.epochs else float("nan")

    @property
    def best_acc(self) -> float:
        return max((e.val_acc for e in self.epochs), default=float("nan"))

    @property
    def accuracies(self) -> list[float]:
        return [e.val_acc for e in self.epochs]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(final_acc=self.final_acc, best_acc=self.best_acc)
        return d

    def summary(self, spec: NetworkSpec, dataset: str, params: int, flops: int) -> dict[str, object]:
        """One row for people and scripts: the network, its size and cost, and how training went."""
        return {
            "network": spec.name, "dataset": dataset, "resolution": spec.resolution, "width": spec.width_mult,
            "depth": spec.depth_mult, "params": params, "mflops": round(flops / 1e6, 2),
            "epochs": len(self.epochs), "final_acc": round(self.final_acc, 4), "best_acc": round(self.best_acc, 4),
            "train_img_s": round(self.train_images_per_sec, 1), "wall_s": round(self.wall_time, 1),
            "peak_mem_mb": round(self.peak_memory_mb, 1), "device": self.device, "status": self.status,
        }


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on batch-norm parameters and biases (one-dimensional tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    fast: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **fast)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fast)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=1e-3, foreach=True)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up, then cosine decay to zero (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory, not this run's alone.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int, batches: int,
                   autocast: torch.autocast | None = None, seed: int = 0) -> None:
    """Re-estimate batch-norm statistics for the current weights ("precise BN", as in pycls).

    Early in a short run the weights move faster than running averages follow, and eval-mode accuracy
    collapses to chance although the network has learned (B0 on digits: 10 % with running averages,
    94 % with recalibrated statistics after 2 epochs). A cumulative average over a few training batches,
    with only the batch norms in training mode (no stochastic depth, no dropout), fixes that. The
    batches are a fixed random sample, so class-ordered data sets give unbiased statistics too.
    """
    model.eval()
    norms = _batch_norms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    for i, (xb, _) in enumerate(iterate_batches(x, x, batch_size, shuffle=True, generator=generator)):
        if i == batches:
            break
        if autocast is not None:
            with autocast:
                model(xb)
        else:
            model(xb)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             autocast: torch.autocast | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on held-out data."""
    model.eval()
    correct = torch.zeros((), device=x.device)
    loss_sum = torch.zeros((), device=x.device)
    for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
        if autocast is not None:
            with autocast:
                logits = model(xb)
        else:
            logits = model(xb)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = len(y)
    return correct.item() / n, loss_sum.item() / n


def prepare_data(data: Dataset, resolution: int, device: torch.device, channels_last: bool) -> Dataset:
    """Resize once to the candidate's resolution and move everything to the device."""
    data = data.to(device)
    x_train, x_val = resize_images(data.x_train, resolution), resize_images(data.x_val, resolution)
    if channels_last:
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        x_val = x_val.contiguous(memory_format=torch.channels_last)
    return Dataset(name=data.name, x_train=x_train, y_train=data.y_train, x_val=x_val, y_val=data.y_val,
                   num_classes=data.num_classes, mean=data.mean, std=data.std)


def train(model_or_spec: nn.Module | NetworkSpec, data: Dataset, cfg: TrainConfig = TrainConfig(),
          resolution: int | None = None, callback: EpochCallback | None = None,
          progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train from scratch on `data` at `resolution` (default: the spec's) and validate every epoch."""
    device = resolve_device(cfg.device)
    threads = CpuThreads(cfg.threads if device.type == "cpu" else 0)
    torch.manual_seed(cfg.seed)
    model: nn.Module
    if isinstance(model_or_spec, NetworkSpec):
        resolution = resolution or model_or_spec.resolution
        model = build_model(model_or_spec, num_classes=data.num_classes, in_channels=data.in_channels)
        if cfg.zero_init:
            zero_init_last_layers(model)
    else:
        model = model_or_spec
        resolution = resolution or data.resolution
    result = TrainResult(status="ok", reason="", device=str(device), resolution=resolution)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        with threads.registered():
            _run(model, data, cfg, device, resolution, callback, progress, result, threads)
    except torch.OutOfMemoryError as e:
        result.status, result.reason = "oom", f"out of memory on {device}: {str(e).splitlines()[0]}"
    finally:
        result.wall_time = time.perf_counter() - start
        result.peak_memory_mb = _peak_memory_mb(device)
    return result


class CpuThreads:
    """The CPU threads of one training run: the count the user fixed, or (None) this run's share of the
    cores other work leaves free, among the nas training runs alive on the machine, re-read every few
    seconds (nas.sharing).
    0: not on the CPU, nothing to set."""

    RECHECK_S = 2.0

    def __init__(self, fixed: int | None) -> None:
        self.fixed, self.checked = fixed, -math.inf
        self.busy_elsewhere = sharing.BusyElsewhere()

    def registered(self) -> contextlib.AbstractContextManager[None]:
        return sharing.registered_trainer() if self.fixed is None else contextlib.nullcontext()

    def update(self) -> None:
        if self.fixed == 0 or time.monotonic() - self.checked < self.RECHECK_S:
            return
        self.checked = time.monotonic()
        wanted = self.fixed or sharing.fair_threads(default_threads(), self.busy_elsewhere())
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)


def _run(model: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device, resolution: int,
         callback: EpochCallback | None, progress: Callable[[str], None] | None, result: TrainResult,
         threads: CpuThreads) -> None:
    data = prepare_data(data, resolution, device, cfg.channels_last)
    model = model.to(device)
    for m in _batch_norms(model):
        m.momentum = cfg.bn_momentum
    if cfg.channels_last:
        # Module.to accepts memory_format at runtime; torch's stubs leave it out.
        model = cast(Callable[..., nn.Module], model.to)(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, device)
    # torch.compile of a Module returns an OptimizedModule (a Module); its stubs only say Callable.
    step_model = cast(nn.Module, torch.compile(model)) if cfg.compile else model
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else None
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    n_train = len(data.y_train)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    step, train_time, train_images = 0, 0.0, 0

    for epoch in range(1, epochs + 1):
        with sharing.training():   # a latency measurement elsewhere waits for this epoch (nas.sharing)
            step_model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            seen = 0
            for xb, yb in iterate_batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True,
                                          generator=generator, drop_last=True):
                if step >= total_steps:
                    break
                threads.update()
                if cfg.crop_padding or cfg.flip:
                    xb = augment_batch(xb, pad=cfg.crop_padding, flip=cfg.flip, generator=generator)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(step, total_steps, warmup, cfg.schedule)
                if autocast is not None:
                    with autocast:
                        logits = step_model(xb)
                else:
                    logits = step_model(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(yb)
                seen += len(yb)
                step += 1
            train_loss = loss_sum.item() / max(1, seen)   # the one host sync of the epoch
            seconds = time.perf_counter() - t0
            train_time, train_images = train_time + seconds, train_images + seen
            if not math.isfinite(train_loss):
                result.status = "diverged"
                result.reason = f"training loss became {train_loss} in epoch {epoch}: lower the learning rate"
                break
            if cfg.bn_recalibration:
                recalibrate_bn(model, data.x_train, cfg.batch_size, cfg.bn_recalibration, autocast, cfg.seed)
            val_acc, val_loss = evaluate(model, data.x_val, data.y_val, cfg.eval_batch_size, autocast)
        result.epochs.append(EpochResult(epoch, train_loss, val_loss, val_acc, seconds, seen / seconds))
        result.train_images_per_sec = train_images / train_time
        if progress:
            progress(f"epoch {epoch}/{epochs}  loss {train_loss:.3f}  val_acc {val_acc:.4f}  "
                     f"{seen / seconds:.0f} img/s")
        if callback is not None and callback(epoch, val_acc):
            result.status, result.reason = "stopped", f"stopped by callback after epoch {epoch}"
            break
