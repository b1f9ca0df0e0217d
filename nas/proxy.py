"""The short-training engine that scores every search candidate.

One loop, no framework. Speed comes from a few deliberate choices:
- the whole data set is resized once to the candidate's resolution and held on the device, and
  batches are index slices of it (no DataLoader, no per-step host-to-device copy);
- augmentation (random crop with padding, optional flip) runs on the device, vectorised;
- channels_last memory format (on 2 CPU cores it is the larger part of the engine's lead over a
  plain NCHW loop; see docs/benchmarks.md);
- on CUDA: bf16 autocast, a fused optimizer, the whole training step captured once as a CUDA graph
  and replayed (nas.steps), and no host sync inside the step loop (the loss is summed on the device
  and read once per epoch);
- the seeds of one candidate trained as one fused job where that pays (CUDA by default; nas.steps);
- data prepared once per resolution and kept for the next seeds and trials of the process.

Each result says where its wall time went (set-up, training steps, evaluation): `nas bench search`.

Honesty: a NaN or infinite loss ends the run with status "diverged" and the reason, a CUDA
out-of-memory ends it with status "oom", and the callback can stop a run (status "stopped"); the
result always says which. Accuracy is measured on the validation split after every epoch.

A run can also stop part-way through its schedule and keep its state, for a later run to continue where
it stopped (`Continuation`): budget racing's promoted candidates go on training instead of starting over.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import resource
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas import sharing
from nas.builder import build_model, zero_init_last_layers
from nas.config import TrainConfig
from nas.console import heartbeat
from nas.data import Dataset, augment_batch, iterate_batches, resize_images
from nas.device import cpu_threads, default_threads, resolve_device
from nas.memory import require_batch_memory
from nas.spec import NetworkSpec
from nas.statistics import pack_correct
from nas.steps import CapturedStep, EagerStep, Replicas, make_optimizer, set_lr

# Receives (epoch, validation accuracy); returning True stops the run (how Optuna pruning plugs in).
EpochCallback = Callable[[int, float], bool]


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_loss: float                   # NaN for an epoch not validated (TrainConfig.validate_each_epoch)
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
    # Where the wall time went: data and model set-up, training steps, evaluation (with BN recalibration).
    setup_seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    job_seeds: int = 1                # seeds trained together in this job (fused), sharing these times
    continued: bool = False           # it went on from a kept state (Continuation), its first epochs not trained here
    # Which validation images the last evaluation got right, one boolean each in the data's order.
    val_correct: torch.Tensor | None = field(default=None, repr=False)

    @property
    def final_acc(self) -> float:
        return self.epochs[-1].val_acc if self.epochs else float("nan")

    @property
    def best_acc(self) -> float:
        return max((e.val_acc for e in self.epochs if not math.isnan(e.val_acc)), default=float("nan"))

    @property
    def accuracies(self) -> list[float | None]:
        """Each epoch's validation accuracy, None where it was not validated (JSON has no NaN)."""
        return [None if math.isnan(e.val_acc) else e.val_acc for e in self.epochs]

    def packed_correct(self) -> str | None:
        """`val_correct` as the compact text a trial stores (nas.statistics.pack_correct)."""
        return None if self.val_correct is None else pack_correct(self.val_correct.cpu().numpy())

    def summary(self, spec: NetworkSpec, dataset: str, params: int, flops: int) -> dict[str, object]:
        """One row for people and scripts: the network, its size and cost, and how training went."""
        return {
            "network": spec.name, "dataset": dataset, "resolution": spec.resolution, "width": spec.width_mult,
            "depth": spec.depth_mult, "params": params, "mflops": round(flops / 1e6, 2),
            "epochs": len(self.epochs), "final_acc": round(self.final_acc, 4), "best_acc": round(self.best_acc, 4),
            "train_img_s": round(self.train_images_per_sec, 1), "wall_s": round(self.wall_time, 1),
            "peak_mem_mb": round(self.peak_memory_mb, 1), "device": self.device, "status": self.status,
        }


@dataclass(frozen=True)
class Continuation:
    """Train only the first `stop_epoch` epochs of the configured schedule (its learning rate still follows
    the whole schedule) and keep the state there in `folder`, as `save_as`; start from the state kept as
    `resume_from` when there is one. The continued run then ends exactly where one uninterrupted run of the
    same seeds would (on the CPU, with a fixed thread count; elsewhere up to floating-point order).

    A kept state is named by its job's seeds and checked against `tag` (what the runs depend on: a state
    kept under another tag, or unreadable, is not used). Without a usable state the run trains from the start
    of the schedule and says so in `TrainResult.reason`: the same result, at the full cost."""
    folder: Path
    stop_epoch: int
    save_as: str | None = None        # None: keep nothing (the last rung)
    resume_from: str | None = None    # None: train from the start
    tag: str = ""

    def path(self, name: str, seeds: Sequence[int]) -> Path:
        return self.folder / f"{name}-seed{'-'.join(str(s) for s in seeds)}.pt"

    def load(self, seeds: Sequence[int]) -> dict[str, Any] | None:
        """The state kept as `resume_from` for these seeds, on the CPU (loading moves it to the run's device);
        None when there is none to use."""
        if self.resume_from is None:
            return None
        try:
            state = torch.load(self.path(self.resume_from, seeds), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return None
        ok = isinstance(state, dict) and state.get("tag") == self.tag and state.get("seeds") == list(seeds)
        return state if ok else None

    def discard(self, name: str) -> None:
        """Remove the states kept as `name` (every job's) once nothing will continue them, and the folder
        once it is empty."""
        for path in self.folder.glob(f"{name}-seed*.pt"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()

    def save(self, seeds: Sequence[int], state: dict[str, Any]) -> None:
        """Written to a temporary file and renamed, so that a run killed while saving leaves no half a state."""
        if self.save_as is None:
            return
        path = self.path(self.save_as, seeds)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        torch.save(dict(state, tag=self.tag, seeds=list(seeds)), temporary)
        temporary.replace(path)


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
             autocast: torch.autocast | None = None) -> tuple[float, float, torch.Tensor]:
    """(accuracy, mean cross-entropy, which images it got right) on held-out data. The last, a boolean per
    image in the data's order, stays on the device: candidates scored on the same images are compared image
    by image (nas.statistics), and a run keeps only its final epoch's."""
    model.eval()
    right = []
    loss_sum = torch.zeros((), device=x.device)
    for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
        if autocast is not None:
            with autocast:
                logits = model(xb)
        else:
            logits = model(xb)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        right.append(logits.argmax(1) == yb)
    correct = torch.cat(right)
    n = len(y)
    return correct.sum().item() / n, loss_sum.item() / n, correct


_PREPARED: collections.OrderedDict[tuple, tuple[Dataset, Dataset]] = collections.OrderedDict()
PREPARED_KEPT = 2
"""Resized data sets a process keeps: the seeds and the trials of a worker that train at one resolution
(a race's extra seeds, a resumed candidate) resize and move the data once."""


def prepare_data(data: Dataset, resolution: int, device: torch.device, channels_last: bool) -> Dataset:
    """Resize once to the candidate's resolution and move everything to the device (kept for reuse)."""
    key = (id(data), resolution, str(device), channels_last)
    if key in _PREPARED and _PREPARED[key][0] is data:
        _PREPARED.move_to_end(key)
        return _PREPARED[key][1]
    on_device = data.to(device)
    x_train, x_val = resize_images(on_device.x_train, resolution), resize_images(on_device.x_val, resolution)
    if channels_last:
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        x_val = x_val.contiguous(memory_format=torch.channels_last)
    prepared = Dataset(name=data.name, x_train=x_train, y_train=on_device.y_train, x_val=x_val,
                       y_val=on_device.y_val, num_classes=data.num_classes, mean=data.mean, std=data.std)
    _PREPARED[key] = (data, prepared)
    while len(_PREPARED) > PREPARED_KEPT:
        _PREPARED.popitem(last=False)
    return prepared


def fuses_seeds(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the seeds of one candidate train as one fused job: on CUDA by default, where a small job is
    bound by kernel launches; not on the CPU, where fusing measured slower (docs/benchmarks.md)."""
    if cfg.compile:
        return False
    return cfg.fuse_seeds == "on" or (cfg.fuse_seeds == "auto" and device.type == "cuda")


def train(model_or_spec: nn.Module | NetworkSpec, data: Dataset, cfg: TrainConfig = TrainConfig(),
          resolution: int | None = None, callback: EpochCallback | None = None,
          progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train from scratch on `data` at `resolution` (default: the spec's) and validate every epoch."""
    return _train_together(model_or_spec, data, cfg, [cfg.seed], resolution, callback, progress)[0]


def train_seeds(spec: NetworkSpec, data: Dataset, cfg: TrainConfig, seeds: list[int], resolution: int | None = None,
                callback: EpochCallback | None = None, progress: Callable[[str], None] | None = None,
                continuation: Continuation | None = None) -> list[TrainResult]:
    """Train `spec` once per seed (each seed replaces cfg.seed: initialisation, data order, augmentation,
    dropout). Fused into one job when `fuses_seeds`, else one after another. `callback` sees the first
    seed's accuracy and its stop ends every seed. The list stops at the first seed that did not end "ok".
    With `continuation`, each job trains only part of the schedule, from a kept state where there is one."""
    if len(seeds) > 1 and fuses_seeds(cfg, resolve_device(cfg.device)):
        results = _train_together(spec, data, cfg, seeds, resolution, callback, progress, continuation=continuation)
    else:
        results = []
        for i, seed in enumerate(seeds):
            results.append(_train_together(spec, data, dataclasses.replace(cfg, seed=seed), [seed], resolution,
                                           callback if i == 0 else None, progress, (i, len(seeds)),
                                           continuation)[0])
            if results[-1].status != "ok":
                break
    bad = next((i for i, r in enumerate(results) if r.status != "ok"), None)
    return results if bad is None else results[:bad + 1]


def _train_together(model_or_spec: nn.Module | NetworkSpec, data: Dataset, cfg: TrainConfig, seeds: list[int],
                    resolution: int | None, callback: EpochCallback | None,
                    progress: Callable[[str], None] | None, job: tuple[int, int] = (0, 1),
                    continuation: Continuation | None = None) -> list[TrainResult]:
    """One training job of len(seeds) networks: a single network, or fused seeds (nas.steps); job i of n
    (`job`) of the run in hand, for its heartbeat (nas.console.heartbeat)."""
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads = CpuThreads(cfg.threads if device.type == "cpu" else 0)
    models: list[nn.Module] = []
    for seed in seeds:
        torch.manual_seed(seed)
        if isinstance(model_or_spec, NetworkSpec):
            model = build_model(model_or_spec, num_classes=data.num_classes, in_channels=data.in_channels)
            models.append(zero_init_last_layers(model) if cfg.zero_init else model)
        else:
            models.append(model_or_spec)
    resolution = resolution or (model_or_spec.resolution if isinstance(model_or_spec, NetworkSpec)
                                else data.resolution)
    if isinstance(model_or_spec, NetworkSpec):
        require_batch_memory(model_or_spec, resolution, cfg.batch_size * len(seeds), True, data.in_channels)
    if len(seeds) > 1:
        torch.manual_seed(seeds[0])   # fused seeds' dropout and stochastic depth draw from here
    results = [TrainResult(status="ok", reason="", device=str(device), resolution=resolution, job_seeds=len(seeds))
               for _ in seeds]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with threads.registered():
            _run(models, seeds, data, cfg, device, resolution, callback, progress, results, threads, start, job,
                 continuation)
    except torch.OutOfMemoryError as e:
        for r in results:
            r.status, r.reason = "oom", f"out of memory on {device}: {str(e).splitlines()[0]}"
    finally:
        wall, peak = time.perf_counter() - start, _peak_memory_mb(device)
        for r in results:
            r.wall_time, r.peak_memory_mb = wall, peak
    return results


class CpuThreads:
    """The CPU threads of one training run: the count the user fixed, or (None) this run's share of the
    cores other work leaves free, among the nas training runs alive on the machine, re-read every few
    seconds (nas.sharing).
    0: not on the CPU, nothing to set."""

    RECHECK_S = 2.0

    def __init__(self, fixed: int | None) -> None:
        self.fixed, self.checked = (cpu_threads(fixed) if fixed else fixed), -math.inf
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


def _batches(data: Dataset, cfg: TrainConfig, generators: list[torch.Generator]) -> Iterator[
        tuple[torch.Tensor, torch.Tensor]]:
    """Training batches, one pass: each seed's own order and augmentation from its own generator, stacked
    (k, B, ...) for fused seeds."""
    passes = [iterate_batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=g, drop_last=True)
              for g in generators]
    for batches in zip(*passes):
        xs = [augment_batch(xb, pad=cfg.crop_padding, flip=cfg.flip, generator=g) if cfg.crop_padding or cfg.flip
              else xb for (xb, _), g in zip(batches, generators)]
        if len(xs) == 1:
            yield xs[0], batches[0][1]
        else:
            yield torch.stack(xs), torch.stack([yb for _, yb in batches])


def _run(models: list[nn.Module], seeds: list[int], data: Dataset, cfg: TrainConfig, device: torch.device,
         resolution: int, callback: EpochCallback | None, progress: Callable[[str], None] | None,
         results: list[TrainResult], threads: CpuThreads, start: float, job: tuple[int, int],
         continuation: Continuation | None = None) -> None:
    data = prepare_data(data, resolution, device, cfg.channels_last)
    kept = continuation.load(seeds) if continuation else None
    if kept is not None:        # before Replicas stacks fused seeds' tensors
        for model, state in zip(models, kept["models"]):
            model.load_state_dict(state)
    for i, model in enumerate(models):
        model = model.to(device)
        for m in _batch_norms(model):
            m.momentum = cfg.bn_momentum
        if cfg.channels_last:
            # Module.to accepts memory_format at runtime; torch's stubs leave it out.
            model = cast(Callable[..., nn.Module], model.to)(memory_format=torch.channels_last)
        models[i] = model
    replicas = Replicas(models, compile=cfg.compile)
    capture = cfg.cuda_graphs and device.type == "cuda" and not cfg.compile
    optimizer = make_optimizer(replicas.params, cfg, device, capturable=capture)
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    # No cast cache: a captured graph must not hold casts made outside it, and training reads each weight once.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False) if use_bf16 else None
    eager = EagerStep(replicas, optimizer, autocast, cfg.label_smoothing)
    step_fn: EagerStep | CapturedStep = CapturedStep(eager, _warn_once(progress)) if capture else eager
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    if kept is not None:
        optimizer.load_state_dict(kept["optimizer"])
        for g, state in zip(generators, kept["generators"]):
            g.set_state(state)
        _set_rng(kept["rng"], device)
    # BN re-estimation sees bn_recalibration training batches' worth of images; on CUDA in eval-sized
    # batches, as fewer launches cost less there (the mean is the same, the variance estimate close).
    recal_images = cfg.bn_recalibration * cfg.batch_size
    recal_batch = cfg.batch_size if device.type == "cpu" else max(cfg.batch_size, min(cfg.eval_batch_size, recal_images))

    k = len(seeds)
    n_train = len(data.y_train)
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    step, train_time, train_images, eval_time = 0, 0.0, 0, 0.0
    first, last = 1, epochs
    if continuation is not None:
        last = min(epochs, continuation.stop_epoch)
        if kept is not None:
            first, step = kept["epoch"] + 1, kept["step"]
            for r, history in zip(results, kept["epochs"]):
                r.epochs, r.continued = [EpochResult(*e) for e in history], True
        elif continuation.resume_from is not None:
            for r in results:
                r.reason = (f"trained from the start: no usable state kept as {continuation.resume_from} in "
                            f"{continuation.folder}")
    of_seeds = f", seed {job[0] + 1} of {job[1]}" if job[1] > 1 else ""

    def doing() -> str:          # what a heartbeat says, read when it is shown
        return f"training: epoch {epoch}/{last}, step {step}/{last * steps_per_epoch}{of_seeds}"
    setup_time = time.perf_counter() - start

    for epoch in range(first, last + 1):
        with sharing.training():   # a latency measurement elsewhere waits for this epoch (nas.sharing)
            replicas.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros(k, device=device)
            seen = 0
            for xb, yb in _batches(data, cfg, generators):
                if step >= total_steps:
                    break
                threads.update()
                set_lr(optimizer, cfg.lr * lr_factor(step, total_steps, warmup, cfg.schedule))
                loss_sum += step_fn(xb, yb) * yb.shape[-1]
                seen += yb.shape[-1]
                step += 1
                heartbeat(doing, (job[0] + step / (last * steps_per_epoch)) / job[1])
            train_losses = [total / max(1, seen) for total in loss_sum.tolist()]   # the one host sync of the epoch
            seconds = time.perf_counter() - t0
            if isinstance(step_fn, CapturedStep):    # capturing is set-up, not training
                seconds -= step_fn.capture_seconds
                setup_time += step_fn.capture_seconds
                step_fn.capture_seconds = 0.0
            train_time, train_images = train_time + seconds, train_images + seen
            diverged = [i for i, loss in enumerate(train_losses) if not math.isfinite(loss)]
            t1 = time.perf_counter()
            scores = []
            validated = not diverged and (cfg.validate_each_epoch or epoch == last)
            if validated:
                for model, seed in zip(models, seeds):
                    if cfg.bn_recalibration:
                        recalibrate_bn(model, data.x_train, recal_batch, math.ceil(recal_images / recal_batch),
                                       autocast, seed)
                    scores.append(evaluate(model, data.x_val, data.y_val, cfg.eval_batch_size, autocast))
            eval_time += time.perf_counter() - t1
        for r in results:
            r.setup_seconds, r.train_seconds, r.eval_seconds = setup_time, train_time, eval_time
        if diverged:
            for i, r in enumerate(results):
                if i in diverged:
                    r.status = "diverged"
                    r.reason = f"training loss became {train_losses[i]} in epoch {epoch}: lower the learning rate"
                else:
                    r.status, r.reason = "stopped", f"seed {seeds[diverged[0]]} diverged in the same fused run"
            break
        for i, (r, loss) in enumerate(zip(results, train_losses)):
            val_acc, val_loss, correct = scores[i] if validated else (math.nan, math.nan, r.val_correct)
            r.epochs.append(EpochResult(epoch, loss, val_loss, val_acc, seconds, seen / seconds))
            r.train_images_per_sec = train_images / train_time
            r.val_correct = correct
        if progress:
            accs = " ".join(f"{acc:.4f}" for acc, _, _ in scores) if validated else "(validated after the last)"
            losses = " ".join(f"{loss:.3f}" for loss in train_losses)
            fused = f"  ({k} fused seeds)" if k > 1 else ""
            progress(f"epoch {epoch}/{last}  loss {losses}  val_acc {accs}  {k * seen / seconds:.0f} img/s{fused}")
        if callback is not None and validated and callback(epoch, scores[0][0]):
            for r in results:
                r.status, r.reason = "stopped", f"stopped by callback after epoch {epoch}"
            break
    if continuation is not None and all(r.status == "ok" for r in results) and results[0].epochs:
        continuation.save(seeds, {
            "epoch": results[0].epochs[-1].epoch, "step": step, "models": [m.state_dict() for m in models],
            "optimizer": optimizer.state_dict(), "generators": [g.get_state() for g in generators],
            "rng": _get_rng(device), "epochs": [[dataclasses.astuple(e) for e in r.epochs] for r in results]})


def _get_rng(device: torch.device) -> list[torch.Tensor]:
    """The global random state a run draws dropout and stochastic depth from (the CPU's, and the device's)."""
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])


def _set_rng(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


def _warn_once(progress: Callable[[str], None] | None) -> Callable[[str], None]:
    """Where a capture failure is told: the run's progress lines, else a Python warning."""
    def warn(message: str) -> None:
        if progress is not None:
            progress(f"warning: {message}")
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    return warn
