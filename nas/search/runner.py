"""Running a search: one study in Optuna storage, any number of worker processes, safe to interrupt.

Protocol, shared by every kind of search (a `SearchJob`):
- The launching process creates the study (or loads it, refusing a study file that changed what the
  results depend on), and `job.prepare` enqueues work that must run (grid points) as WAITING trials.
  Optuna pops a WAITING trial atomically, so each enqueued point runs once however many workers ask.
- Each worker loops: fail trials whose heartbeat went silent (their copies are re-enqueued), stop when
  `job.done`, wait while only other workers' trials are running, else run one trial.
- On CUDA, worker i trains on GPU i mod n of the chosen GPUs (`nas.device.worker_device`).
- Ctrl-C or kill -9 loses no finished trial: they are in storage. A trial interrupted by Ctrl-C is
  recorded as failed without a reason and re-enqueued by `prepare` on the next run; one left RUNNING by
  a killed worker is failed after the heartbeat grace period and retried.
"""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from nas.config import StudyConfig
from nas.console import Progress, counting, stderr_progress
from nas.errors import ExitCode, NasError, SearchAborted
from nas.records import TrialRecord, record
from nas.search.storage import (
    clean_stored_definition,
    fail_trials_without_heartbeat,
    masked,
    open_storage,
    storage_failure,
    unwritable_failure,
)
from nas.validation import read_from

MAX_FAILURES_IN_A_ROW = 3

# The trial rules a study is created under, stored with it (study attribute "trial_rules", beside
# "created_by": the effnas version). Raise it when a change makes new trials no longer comparable with the
# old ones of a resumed study: how candidates are solved (equal-cost resolutions, the proxy, the family
# check, what makes a candidate infeasible), how seeds and budgets are raced, and what a trial records
# (nas.records). A study resumed under other rules keeps its finished trials and says so in one line.
# 0: studies created before the rules were recorded.
TRIAL_RULES = 1


class SearchJob(Protocol):
    config: StudyConfig

    # Read-only: jobs give these as class attributes or properties.
    @property
    def study_name(self) -> str: ...        # the Optuna study in the config's storage (a frontier beside its search)
    @property
    def needs_queue(self) -> bool: ...      # work comes only from enqueued trials (a grid): stop when they are done
    @property
    def directions(self) -> list[str]: ...  # one per objective value
    @property
    def unit(self) -> str: ...              # what progress lines count: "trials", "runs"

    def create_sampler(self, worker: int) -> optuna.samplers.BaseSampler: ...
    def create_pruner(self) -> optuna.pruners.BasePruner: ...
    def prepare(self, study: optuna.Study, progress: Callable[[str], None]) -> None: ...
    def done(self, study: optuna.Study) -> bool: ...
    def objective(self) -> Callable[[optuna.Trial], float | Sequence[float]]: ...
    def describe(self, trial: FrozenTrial) -> str: ...
    def work(self, study: optuna.Study) -> tuple[int, int | None]: ...   # (units finished, total as now known)


@dataclass
class SideJob:
    """A job whose study sits beside a search's (`<name>-<suffix>`, in its storage): a frontier, a confirmation,
    a calibration. Every run is queued (the sampler has nothing to choose) and trains its whole budget (no
    pruner); subclasses say what the runs are."""

    config: StudyConfig
    suffix: str = dataclasses.field(kw_only=True)
    directions = ["maximize"]
    needs_queue = True
    unit = "runs"

    @property
    def study_name(self) -> str:
        return f"{self.config.name}-{self.suffix}"

    def create_sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.config.seed + 1000 * worker)

    def create_pruner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()

    def work(self, study: optuna.Study) -> tuple[int, int | None]:
        return queued_work(study)


def counts_as_finished(t: FrozenTrial) -> bool:
    """Finished for good: complete, pruned, or failed for a reason of its own (not interrupted or killed)."""
    return TrialRecord.from_trial(t).finished_for_good


# ------------------------------------------------------------------------------- queued work
# A job whose work is a fixed list of items (grid points, frontier runs) enqueues each item as a WAITING
# trial carrying the item's key in a user attribute. Two launchers that enumerate new work at the same
# moment both enqueue it; `claim_queued` keeps each item trained once.

def queued_key(t: FrozenTrial, attr: str) -> tuple | None:
    value = t.user_attrs.get(attr)
    return tuple(value) if value else None


def enqueue_missing(study: optuna.Study, attr: str, items: list[tuple[tuple, dict]]) -> int:
    """Enqueue every (key, params) item that has no finished, waiting or running trial: all of them at
    first, the interrupted ones on resume. Returns how many were enqueued."""
    covered = {queued_key(t, attr) for t in study.get_trials(deepcopy=False)
               if counts_as_finished(t) or t.state in (TrialState.WAITING, TrialState.RUNNING)}
    missing = [(key, params) for key, params in items if key not in covered]
    for key, params in missing:
        study.enqueue_trial(params, user_attrs={attr: list(key)}, skip_if_exists=False)
    return len(missing)


def claim_queued(trial: optuna.Trial, attr: str) -> tuple:
    """The key of the queued item this trial runs. A trial that found no queued item (a race at the end),
    or whose item another trial owns (one finished for good, or one running with a lower number), steps
    aside as a SKIPPED pruned trial; an item whose trials all stepped aside is re-queued by `prepare`."""
    key = queued_key(trial, attr)      # type: ignore[arg-type]
    if key is None:
        record(trial, TrialRecord, skipped="no queued work left: another worker took the last item")
        raise optuna.TrialPruned()
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE,
                                                             TrialState.PRUNED, TrialState.FAIL)):
        if t.number == trial.number or queued_key(t, attr) != key:
            continue
        if counts_as_finished(t) or (t.state == TrialState.RUNNING and t.number < trial.number):
            record(trial, TrialRecord, skipped=f"{attr} {list(key)} already taken by trial {t.number}")
            raise optuna.TrialPruned()
    return key


def queued_work(study: optuna.Study) -> tuple[int, int]:
    """(finished, total) of a job whose work is queued: the total is what is finished, waiting or running,
    so it grows when a decision queues more (racing)."""
    outcomes = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    finished = sum(r.finished_for_good for r in outcomes)
    return finished, finished + sum(not r.skipped and r.state in ("waiting", "running") for r in outcomes)


def all_finished(study: optuna.Study, attr: str, keys: list[tuple]) -> bool:
    finished = {queued_key(t, attr) for t in study.get_trials(deepcopy=False) if counts_as_finished(t)}
    return all(k in finished for k in keys)


def create_or_load(job: SearchJob, storage: optuna.storages.BaseStorage, url: str, worker: int = 0) -> optuna.Study:
    cfg = job.config
    # Jobs set `directions` as a plain class attribute (list[str]); its values are "minimize"/"maximize".
    directions = cast("list[Literal['minimize', 'maximize']]", job.directions)
    study = optuna.create_study(study_name=job.study_name, storage=storage, directions=directions,
                                sampler=job.create_sampler(worker), pruner=job.create_pruner(),
                                load_if_exists=True)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        from nas import __version__

        study.set_user_attr("fingerprint", cfg.fingerprint())
        study.set_user_attr("config", cfg.to_dict())
        study.set_user_attr("kind", type(job).__name__)
        study.set_user_attr("created_by", __version__)
        study.set_user_attr("trial_rules", TRIAL_RULES)
    elif stored != cfg.fingerprint():
        start_over = (f"delete {cfg.run_dir} to start over" if url == cfg.storage_url(None) and not cfg.storage else
                      f"delete the study from that database to start over (optuna delete-study --study-name "
                      f"{job.study_name} --storage URL)")
        raise NasError(f"study '{job.study_name}' in {masked(url)} was run with a different definition than "
                       f"{cfg.source}: give the changed study a new name, or {start_over}")
    else:
        clean_stored_definition(study)
    return study


def built_from(cfg: StudyConfig) -> dict[str, str]:
    """Digests of what a study's results depend on beyond its file: the resolved base network (or
    block-level space) and the data. Comments and layout of the network file do not count."""
    import hashlib
    import json

    from nas.data import source_fingerprint
    from nas.spec import read_yaml, resolve_space_path

    network = json.dumps(read_yaml(resolve_space_path(cfg.space)), sort_keys=True, default=str)
    return {"space": hashlib.sha256(network.encode()).hexdigest()[:16],
            "data": source_fingerprint(cfg.proxy.dataset)}


def check_built_from(study: optuna.Study, now: dict[str, str], cfg: StudyConfig) -> None:
    """Record what the study is built from (`now`, from `built_from`) on its first run; refuse to resume on a
    changed network or data set, which would mix trials of two different problems in one ranking."""
    from nas.data import first_16_mib_fingerprint

    before = study.user_attrs.get("built_from")
    if before is None:          # a new study, or one made before effnas recorded this
        study.set_user_attr("built_from", now)
        return
    if before.get("data") != now["data"] and before.get("data") == first_16_mib_fingerprint(cfg.proxy.dataset):
        before = {**before, "data": now["data"]}    # recorded when only each file's first 16 MiB was hashed
        study.set_user_attr("built_from", before)
    changed = [what for what in ("space", "data") if before.get(what) != now[what]]
    if changed:
        what = {"space": f"the base network '{cfg.space}'", "data": f"the data set '{cfg.proxy.dataset}'"}
        raise NasError(f"study '{study.study_name}' was run on another version of "
                       f"{' and '.join(what[c] for c in changed)}: its finished trials do not compare with new ones; "
                       f"restore the old version, or give the study a new name (field 'name') to start a new one")


def worker_loop(job: SearchJob, storage_url: str, worker: int, progress: Progress, device: str) -> None:
    """Take trials until the job is done, training on `device` (`worker_device`: this worker's GPU, or the
    study's device), each finished trial a step of `progress` (counted from storage: `job.work`); a database
    that can no longer be written ends it with one line (Optuna's heartbeat thread, which meets it too, is
    kept from printing its own traceback)."""
    default_hook = threading.excepthook

    def quiet_storage_threads(args: Any) -> None:
        if unwritable_failure(storage_url, args.exc_value) is None:
            default_hook(args)

    threading.excepthook = quiet_storage_threads
    try:
        _take_trials(job, storage_url, worker, progress, device)
    except Exception as e:
        failure = unwritable_failure(storage_url, e)
        if failure is None:
            raise
        raise failure from None
    finally:
        threading.excepthook = default_hook


def training_on(job: SearchJob, device: str) -> SearchJob:
    """A copy of `job` whose trials train on `device`. The study is still opened with `job` itself: its
    fingerprint holds the study file's device, which a worker's GPU does not change."""
    cfg = job.config
    if device == cfg.proxy.train.device:
        return job
    moved = copy.copy(job)
    moved.config = dataclasses.replace(cfg, proxy=dataclasses.replace(
        cfg.proxy, train=dataclasses.replace(cfg.proxy.train, device=device)))
    return moved


def _take_trials(job: SearchJob, storage_url: str, worker: int, progress: Progress, device: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # each trial reports through `progress`
    if device.startswith("cuda:"):
        import torch
        # What follows the current device (streams, CUDA graphs, a latency device of plain "cuda") stays on
        # this worker's GPU too.
        torch.cuda.set_device(device)
    storage = open_storage(storage_url, job.config.heartbeat)
    study = create_or_load(job, storage, storage_url, worker)
    objective = training_on(job, device).objective()

    failures_in_a_row = 0

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures_in_a_row
        outcome = TrialRecord.from_trial(trial)
        if outcome.skipped:
            return
        done, total = job.work(study)
        progress.advance(f"trial {trial.number} {outcome.state}: {job.describe(trial)}", done=done, total=total)
        failures_in_a_row = failures_in_a_row + 1 if outcome.fail_traceback else 0
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
            raise SearchAborted(f"{failures_in_a_row} trials in a row raised an error, the last: "
                                f"{outcome.fail_reason}; its traceback is in the trial's "
                                f"'fail_traceback' attribute (nas scale show --format json)")

    waited_for: set[int] = set()
    # A trial whose worker died before its first heartbeat is never stale to Optuna: give it up after
    # well over any heartbeat delay a live worker has.
    orphan_age = max(3 * job.config.heartbeat.grace, 120)
    while True:
        fail_stale_trials(study)
        orphans = fail_trials_without_heartbeat(storage, study, orphan_age)
        if orphans:
            progress(f"trial(s) {orphans} never sent a heartbeat in {orphan_age} s: their "
                     f"worker died as it took them; failed, and their work queued again")
        if job.done(study):
            return
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if not waiting and job.needs_queue:
            if not running:
                job.prepare(study, progress)
                progress.total = job.work(study)[1]      # racing may have queued more
                if not any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
                    return
                continue
            new = {t.number for t in running} - waited_for
            if new:
                progress(f"waiting for trial(s) {sorted(new)} running elsewhere (a trial whose "
                         f"worker died is retried after {job.config.heartbeat.grace} s without heartbeat)")
                waited_for |= new
            time.sleep(job.config.heartbeat.interval)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[report], gc_after_trial=False)
        except optuna.exceptions.StorageInternalError as e:   # a lost race on a contended database: retry
            if unwritable_failure(storage_url, e):
                raise
            progress(f"storage busy ({str(e).splitlines()[0]}), retrying")
            time.sleep(1)


def _worker_main(job: SearchJob, storage_url: str, worker: int, device: str, errors: Any, loud: bool,
                 work: tuple[int, int | None], launched: float) -> None:
    """One of several worker processes. Each prints its own lines, "[worker i] ", with the study's counts read
    from storage (`work` as the launcher found it: finished before the launch, total), and the time since
    the launch (wall clock: `launched`, time.time() in the launcher); plain lines even on a terminal, where
    the bars of several processes would overwrite each other."""
    progress = counting(stderr_progress if loud else None, work[1], job.unit, done=work[0],
                        elapsed=time.time() - launched, live=False, prefix=f"[worker {worker}] ")
    _stop_with_the_launcher(worker)
    try:
        with progress:
            worker_loop(job, storage_url, worker, progress, device)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    except SearchAborted as e:
        stderr_progress(f"[worker {worker}] stopped: {e}")
        sys.exit(ExitCode.ABORTED)
    except NasError as e:      # the launcher says it once, for all workers
        errors.put(str(e))
        sys.exit(ExitCode.BAD_INPUT)


def _stop_with_the_launcher(worker: int) -> None:
    """Ctrl-C reaches a run's whole process group, but `kill PID` or kill -9 of the launcher alone would leave
    its workers training on, unseen, with nobody to report to. A worker whose launcher is gone stops as Ctrl-C
    would stop it: the trial in hand is failed, and retried when the same command runs again."""
    launcher = multiprocessing.parent_process()
    if launcher is None:
        return

    def watch() -> None:
        launcher.join()
        stderr_progress(f"[worker {worker}] the launcher is gone: stopping (run the same command to resume)")
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def check_workers(workers: int, gpus: Sequence[int], force: bool = False) -> None:
    """Workers beyond the cores (or, training on CUDA, the GPUs they train on: `gpus`) only slow each other
    down, and each one holds a copy of the data: refuse them unless forced."""
    if workers < 1:
        raise NasError(f"--workers {workers}: give 1 or more worker processes")
    from nas.device import default_threads

    if gpus:
        limit, what, more = len(gpus), f"trains on {len(gpus)} GPU(s)", "name more GPUs with --gpus, "
    else:
        limit, what, more = default_threads(), f"has {default_threads()} CPU cores", ""
    if workers > limit and not force:
        raise NasError(f"--workers {workers}: this machine {what}, and more workers than that only slow each "
                       f"other down: give --workers {limit} or fewer, {more}or add --force-workers")


def study_workers(asked: int | None, wanted: int, gpus: Sequence[int], force: bool = False) -> tuple[int, str | None]:
    """The worker processes a search starts: `asked` (--workers) as check_workers allows, else the study file's
    `wanted` (its `workers`) cut to the cores or GPUs, with the line that says so: a study written for a larger
    machine still runs on a smaller one."""
    if asked is not None:
        check_workers(asked, gpus, force)
        return asked, None
    from nas.device import default_threads

    limit, what = (len(gpus), "GPU(s) to train on") if gpus else (default_threads(), "CPU core(s)")
    if wanted <= limit:
        return wanted, None
    return limit, f"the study asks for {wanted} workers; this machine has {limit} {what}: starting {limit}"


def run_search(job: SearchJob, workers: int | None = None, storage_url: str | None = None,
               progress: Callable[[str], None] | None = stderr_progress, force_workers: bool = False,
               gpus: Sequence[int] | None = None) -> optuna.Study:
    """Create or resume the study, then run `workers` worker processes (None: the study's `workers`, cut to the
    machine; in this process when 1), worker i on
    GPU i mod n of `gpus` (default: every visible GPU) when the study trains on CUDA. Lines go to `progress`
    (stderr_progress: a live bar on a terminal; None: nothing), one per finished trial with the counts done/total
    and the time left (nas.console.Progress); trials finished before a resume count as done, not in the rate.

    Everything a worker would fail on at start (the data source, the storage) is checked here first, so a
    bad input is one line from the launcher, not one traceback per worker."""
    from nas.device import resolve_device, training_gpus, worker_device
    from nas.search.scoring import proxy_data

    device = job.config.proxy.train.device
    with read_from(job.config.source, "proxy.train"):
        gpus = training_gpus(device, gpus)
    if job.config.search.cost == "latency" and job.config.arch is None:
        with read_from(job.config.source, "search.latency"):
            resolve_device(job.config.search.latency.device)
    workers, cut = study_workers(workers, job.config.workers, gpus, force_workers)
    say = progress or (lambda _: None)
    if cut:
        say(cut)
    inputs = built_from(job.config)     # a missing data set or network fails here, before storage is made
    proxy_data(job.config)              # so does a data set that cannot be read or subset
    url = job.config.storage_url(storage_url)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, job.config.heartbeat)
    try:
        study = create_or_load(job, storage, url)
    except optuna.exceptions.StorageInternalError as e:
        raise storage_failure(url, e.__cause__ or e) from None
    check_built_from(study, inputs, job.config)
    done_before = sum(counts_as_finished(t) for t in study.get_trials(deepcopy=False))
    if done_before:
        say(f"resuming study '{job.study_name}' ({masked(url)}): {done_before} finished trials kept")
    attrs = study.user_attrs
    rules = attrs.get("trial_rules", 0)       # absent: a study from before the rules were recorded
    if rules != TRIAL_RULES:
        creator = (f"effnas {attrs['created_by']}" if "created_by" in attrs else
                   "an effnas that did not record its version")
        say(f"resuming study '{job.study_name}' created by {creator} under trial rules {rules} (now "
                 f"{TRIAL_RULES}): its finished trials are kept and new trials follow the current rules")
    from nas import __version__

    if (done_before or rules != TRIAL_RULES) and attrs.get("resumed_by") != __version__:
        study.set_user_attr("resumed_by", __version__)      # the effnas that last resumed it
    job.prepare(study, say)
    work = job.work(study)
    if workers == 1:
        with counting(progress, work[1], job.unit, done=work[0]) as tracker:
            worker_loop(job, url, 0, tracker, worker_device(0, device, gpus))
    else:
        ctx = multiprocessing.get_context("spawn")   # fresh interpreters: no forked torch thread pools
        errors = ctx.SimpleQueue()
        procs = [ctx.Process(target=_worker_main, args=(job, url, i, worker_device(i, device, gpus), errors,
                                                                progress is not None, work, time.time()),
                             name=f"nas-worker-{i}") for i in range(workers)]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.join(timeout=30)
            raise
        bad = {p.name: p.exitcode for p in procs if p.exitcode != 0}
        if bad and all(code == ExitCode.INTERRUPTED for code in bad.values()):
            raise KeyboardInterrupt
        if ExitCode.BAD_INPUT in bad.values():
            raise NasError(errors.get())
        if ExitCode.ABORTED in bad.values():
            raise SearchAborted("workers stopped after repeated trial errors (see above)")
        if bad:
            names = ', '.join(f'{n} (exit {c})' for n, c in bad.items())
            if not job.done(optuna.load_study(study_name=job.study_name, storage=storage)):
                raise SearchAborted(f"worker(s) {names} stopped unexpectedly (see above); finished trials are "
                                    f"kept: run the same command to resume")
            say(f"worker(s) {names} stopped unexpectedly; the others retried their trials and finished")
    return optuna.load_study(study_name=job.study_name, storage=storage)
