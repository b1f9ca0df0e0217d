"""Benchmarks that print figures side by side with a reference measured in the same run.

`bench_proxy` times training steps of the proxy engine (`proxy.train`, the exact code path a search
trial runs) against a plain loop: fp32, NCHW, a standard DataLoader from host memory, default
optimizer, no compile. Both see the same network, data, batch size and thread count; the first epoch
of each is warm-up and the second is timed. The engine is also timed in NCHW, which splits its lead into
the memory format's share and the share of its loop and device-resident data.

`bench_search` runs a study's first trials as a search runs them (the job's own objective) and splits
each trial's wall time into the engine's set-up, training and evaluation and the search's own work, so a
change to either shows where it pays.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pandas as pd
import torch
import torch.nn.functional as F
from optuna.trial import FrozenTrial, TrialState
from torch.utils.data import DataLoader, TensorDataset

from nas.builder import build_model, zero_init_last_layers
from nas.config import StudyConfig, TrainConfig
from nas.data import Dataset, resize_images
from nas.device import cpu_threads, resolve_device
from nas.flops import count_flops
from nas.memory import image_bytes, require_memory
from nas.proxy import train_seeds
from nas.records import TrialRecord, records
from nas.sharing import BusyElsewhere, live_trainers
from nas.spec import NetworkSpec
from nas.validation import InvalidField


def synthetic_dataset(n: int, in_channels: int = 3, size: int = 32, num_classes: int = 10,
                      seed: int = 0) -> Dataset:
    """Random standardized images: throughput does not depend on what the pixels show."""
    require_memory(image_bytes(n, in_channels, size), f"{n} synthetic images at {size} px",
                   "time fewer images or a smaller resolution")
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


def _engine_images_per_sec(spec: NetworkSpec, data: Dataset, resolution: int, cfg: TrainConfig, seeds: int = 1,
                           **settings: object) -> float:
    """Training images per second of the engine's second epoch (the first warms up and captures), summed
    over `seeds` seeds trained together (fused when the settings say so)."""
    cfg = dataclasses.replace(cfg, epochs=2, steps=None, **settings)   # type: ignore[arg-type]
    runs = train_seeds(spec, data, cfg, list(range(seeds)), resolution=resolution)
    return seeds * runs[0].epochs[-1].images_per_sec


def bench_proxy(specs: Sequence[NetworkSpec], resolutions: Sequence[int], cfg: TrainConfig, images: int = 1024,
                seeds: int = 1, progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Images per second of training for each network and resolution: the engine (eager, and on CUDA its
    captured step), and with `seeds` > 1 that many seeds fused into one job, against the plain loop."""
    if not cfg.batch_size <= images <= 1_000_000:
        raise InvalidField("images", images, f"an integer from the batch size ({cfg.batch_size}) to 1000000 (images "
                                             f"per timed epoch)")
    if not 1 <= seeds <= 16:
        raise InvalidField("seeds", seeds, "an integer in 1..16 (seeds to fuse)")
    device = resolve_device(cfg.device)
    threads = cpu_threads(cfg.threads)
    torch.set_num_threads(threads)
    rows = []
    for spec in specs:
        for res in resolutions:
            data = synthetic_dataset(images, size=res)
            rate = functools.partial(_engine_images_per_sec, spec, data, res, cfg)
            say = progress or (lambda _: None)
            say(f"{spec.name} @ {res} px: engine ...")
            captured = rate(cuda_graphs=True) if device.type == "cuda" else None
            engine = rate(cuda_graphs=False)
            # The same engine in NCHW separates channels_last's share from the loop and data path's.
            engine_nchw = rate(cuda_graphs=False, channels_last=False)
            if seeds > 1:
                say(f"{spec.name} @ {res} px: {seeds} fused seeds ...")
            fused = rate(seeds=seeds, fuse_seeds="on") if seeds > 1 else None
            if progress:
                progress(f"{spec.name} @ {res} px: reference loop ...")
            reference = reference_images_per_sec(spec, data, res, cfg)
            best = max(engine, captured or 0.0)
            rows.append({
                "network": spec.name, "resolution": res, "batch": cfg.batch_size, "device": str(device),
                "threads": threads if device.type == "cpu" else None,
                "mflops": round(count_flops(spec, res, 3, 10).flops / 1e6, 1),
                "captured_img_s": None if captured is None else round(captured, 1),
                "engine_img_s": round(engine, 1), "engine_nchw_img_s": round(engine_nchw, 1),
                **({f"fused_x{seeds}_img_s": round(fused, 1), "fused_gain": round(fused / best, 2)}
                   if fused is not None else {}),
                "reference_img_s": round(reference, 1),
                "speedup": round(best / reference, 2),
            })
    return pd.DataFrame(rows)


def bench_search(cfg: StudyConfig, trials: int = 3,
                 progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, float]:
    """Where a search trial's time goes: run `cfg`'s search (coefficient or block-level) until `trials`
    candidates have trained, in a study held in memory so the study's own storage is never touched.

    One row per trial (a candidate the constraint rules out trains nothing and does not count towards
    `trials`), then the mean of the trained ones: set-up, training and evaluation as the training engine
    timed them (None where it did not), other = the rest of the trial's wall time (cost counting,
    candidate solving, recording). Each trial notes the load beside it: cores kept busy by other programs
    and other nas training runs, which make a figure slower than a quiet machine's. Also returns the
    seconds the study's set-up took (grid enumeration), once per study and in no trial."""
    if not 1 <= trials <= 100:
        raise InvalidField("trials", trials, "an integer in 1..100")
    from nas.search.arch import ArchJob
    from nas.search.runner import SearchJob, create_or_load
    from nas.search.scale import ScaleJob
    from nas.search.scoring import TrialFailed

    job: SearchJob = ArchJob(cfg) if cfg.arch is not None else ScaleJob(cfg)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = create_or_load(job, optuna.storages.InMemoryStorage(), "memory")
    t0 = time.perf_counter()
    job.prepare(study, progress or (lambda _: None))
    prepare_s = time.perf_counter() - t0
    run, busy = job.objective(), BusyElsewhere()
    load: dict[int, tuple[float, int]] = {}      # trial number -> (cores busy elsewhere, other nas trainers)

    def timed(trial: optuna.Trial) -> Any:
        busy()
        try:
            return run(trial)
        finally:
            load[trial.number] = (busy(), live_trainers())     # this trial's own training has ended

    def enough(study: optuna.Study, trial: FrozenTrial) -> None:
        r = TrialRecord.from_trial(trial)
        if progress and not r.skipped:
            progress(f"trial {trial.number} {r.state}: {job.describe(trial)}")
        # A trial that found no queued work: every grid point has run (racing's extra seeds, which a search
        # queues once its queue runs dry, are left out).
        if r.skipped or job.done(study) or sum(map(_trained, records(study, TrialRecord))) >= trials:
            study.stop()

    # A diverged or out-of-memory candidate is a trial like another; any other exception is a fault to show.
    study.optimize(timed, callbacks=[enough], catch=(TrialFailed,), gc_after_trial=False)
    ran = records(study, TrialRecord, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    rows = [_time_split(r, *load[r.number]) for r in ran]     # grid points left waiting are out
    trained = pd.DataFrame([row for row in rows if row["trained"]])
    if not trained.empty:
        mean = {c: round(pd.to_numeric(trained[c]).mean(), 2) for c in TIMES}
        rows.append({"trial": "mean", "state": "", "device": trained["device"].iloc[0], "trained": True, **mean,
                     "trials_per_hour": round(3600 / mean["wall_s"], 1) if mean["wall_s"] else None,
                     "busy_cores": trained["busy_cores"].max(), "other_trainers": trained["other_trainers"].max()})
    return pd.DataFrame(rows), prepare_s


TIMES = ("wall_s", "setup_s", "train_s", "eval_s", "other_s")


def _trained(r: TrialRecord) -> bool:
    return r.accuracy_per_epoch is not None        # written once the first seed has trained


def _time_split(r: TrialRecord, busy_cores: float, other_trainers: int) -> dict[str, Any]:
    """One trial's row: its wall time split, the parts the engine did not time left empty (trials before
    the engine timed them), so `other` is the wall time less the parts known."""
    wall, trained = r.wall_time or 0.0, _trained(r)
    parts = {"setup_s": r.setup_time, "train_s": r.train_time, "eval_s": r.eval_time}
    known = sum(v for v in parts.values() if v is not None)
    return {"trial": r.number, "state": r.state, "device": r.device, "trained": trained, "wall_s": round(wall, 2),
            **{k: None if v is None else round(v, 2) for k, v in parts.items()}, "other_s": round(wall - known, 2),
            "trials_per_hour": round(3600 / wall, 1) if trained and wall else None,
            "busy_cores": round(busy_cores, 2), "other_trainers": other_trainers}


def split_summary(table: pd.DataFrame, prepare_s: float) -> list[str]:
    """The lines under `nas bench search`'s table: the mean split in shares, the pace, and the load."""
    trials = table[table["trial"] != "mean"]
    lines = [f"study set-up before the first trial (a grid's enumeration), once per study: {prepare_s:.1f} s"]
    if len(trials) < len(table):
        mean = table.iloc[-1]
        if pd.isna(mean[["setup_s", "train_s", "eval_s"]]).all():
            split = "the training engine did not time set-up, training and evaluation: all of it is under other"
        else:
            split = ", ".join(f"{name} {mean[col] / mean['wall_s']:.0%}" for name, col in (
                ("set-up", "setup_s"), ("training", "train_s"), ("evaluation", "eval_s"), ("other", "other_s"))
                if pd.notna(mean[col]))
        lines.append(f"mean of {int(trials['trained'].sum())} trained trial(s) on {mean['device']}, "
                     f"{mean['wall_s']:.2f} s: {split}; {mean['trials_per_hour']:g} trials/hour on one worker")
    busy = trials[(trials["busy_cores"] >= BUSY_CORES) | (trials["other_trainers"] > 0)]
    if not busy.empty:
        lines.append(f"measured while the machine was busy (trial(s) {', '.join(map(str, busy['trial']))}: other "
                     f"programs kept up to {busy['busy_cores'].max():.1f} cores busy, up to "
                     f"{busy['other_trainers'].max()} other nas training run(s)): slower than on a quiet machine")
    return lines


BUSY_CORES = 0.5
"""Cores kept busy by other programs beside a trial from which its figure is noted as measured on a busy machine."""
