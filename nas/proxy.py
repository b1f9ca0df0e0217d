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

import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.builder import build_model, zero_init_last_layers
from nas.data import Dataset, augment_batch, iterate_batches, resize_images
from nas.errors import NasError
from nas.spec import NetworkSpec

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "constant")

# Receives (epoch, validation accuracy); returning True stops the run (how Optuna pruning plugs in).
EpochCallback = Callable[[int, float], bool]


@dataclass(frozen=True)
class TrainConfig:
    """A proxy-training budget. Defaults are tuned for the bundled digits on 2 CPU cores."""

    epochs: int = 10
    steps: int | None = None          # total optimizer steps; overrides epochs when set
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9             # SGD and RMSprop
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    bn_momentum: float = 0.1          # the reference 0.01 leaves running statistics stale after a short run
    bn_recalibration: int = 8         # batches that re-estimate BN statistics before each evaluation (0 = off)
    zero_init: bool = True   # for models built from a spec; see builder.zero_init_last_layers
    crop_padding: int = 2             # random-crop padding in pixels at the training resolution (0 = off)
    flip: bool = False                # horizontal flips (off by default: digits are not mirror-symmetric)
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    channels_last: bool = True
    amp: str = "auto"                 # auto (bf16 on CUDA, off on CPU) | bf16 | off
    compile: bool = False             # torch.compile: worth it on GPU for long runs; minutes of compile on CPU
    threads: int | None = None        # CPU threads (default: all cores this process may use)
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.steps is None or self.steps >= 1, "steps", "an integer >= 1"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}"),
            (self.lr > 0 and math.isfinite(self.lr), "lr", "a number > 0"),
            (self.weight_decay >= 0, "weight_decay", "a number >= 0"),
            (self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}"),
            (self.warmup_epochs >= 0, "warmup_epochs", "a number >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "a number in [0, 1)"),
            (0 < self.bn_momentum <= 1, "bn_momentum", "a number in (0, 1]"),
            (self.bn_recalibration >= 0, "bn_recalibration", "an integer >= 0"),
            (self.crop_padding >= 0, "crop_padding", "an integer >= 0"),
            (self.amp in ("auto", "bf16", "off"), "amp", "auto, bf16 or off"),
            (self.threads is None or self.threads >= 1, "threads", "an integer >= 1"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                raise NasError(f"training setting {name} is {getattr(self, name)!r}: must be {allowed}")


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasError(f"device {name} asked for, but this torch build sees no CUDA GPU: use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise NasError(f"device {name!r} is not known: use auto, cpu, cuda or cuda:N") from None


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on batch-norm parameters and biases (one-dimensional tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
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
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads or default_threads())
    torch.manual_seed(cfg.seed)
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
        _run(model, data, cfg, device, resolution, callback, progress, result)
    except torch.OutOfMemoryError as e:
        result.status, result.reason = "oom", f"out of memory on {device}: {str(e).splitlines()[0]}"
    finally:
        result.wall_time = time.perf_counter() - start
        result.peak_memory_mb = _peak_memory_mb(device)
    return result


def _run(model: nn.Module, data: Dataset, cfg: TrainConfig, device: torch.device, resolution: int,
         callback: EpochCallback | None, progress: Callable[[str], None] | None, result: TrainResult) -> None:
    data = prepare_data(data, resolution, device, cfg.channels_last)
    model = model.to(device)
    for m in _batch_norms(model):
        m.momentum = cfg.bn_momentum
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, device)
    step_model = torch.compile(model) if cfg.compile else model
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
        step_model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for xb, yb in iterate_batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True,
                                      generator=generator, drop_last=True):
            if step >= total_steps:
                break
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
