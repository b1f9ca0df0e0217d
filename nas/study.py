"""Study definitions (studies/*.yaml) and the Optuna storage they live in.

A study file names the base network, the proxy data and budget, the search (sampler, ranges or grid
step, constraint, tolerance, trials, seeds per candidate), the pruner, the seed and the storage. The
format is in docs/studies.md. Loading validates everything and raises one-line NasErrors naming the
file and the field.

Storage: by default an SQLite file runs/<name>/study.db, which several worker processes on one
machine share; any SQLAlchemy URL (postgresql://...) puts workers on many machines on one study.
Workers send a heartbeat; a trial whose worker died (kill -9, power loss) is failed once its
heartbeat is older than the grace period, and retried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import time
import warnings

import optuna
from sqlalchemy import event

from nas.errors import NasError
from nas.latency import LatencySettings
from nas.proxy import TrainConfig
from nas.spec import read_yaml, resolve_space_path

SAMPLERS = ("grid", "tpe", "gp", "random")
ARCH_SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("reward", "pareto")
METRICS = ("accuracy", "flops", "latency")
PRUNERS = ("median", "none")
COSTS = ("flops", "latency")
RUNS_DIR = Path("runs")

# Heartbeats and stale-trial retry are "experimental" in Optuna; effnas depends on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class ProxySettings:
    """What each candidate is trained on: data, and the (optionally down-scaled) phi = 0 network."""

    dataset: str = "digits"
    per_class: int | None = None
    fraction: float | None = None
    resolution: int = 32          # resolution of the phi = 0 proxy network
    width: float = 1.0            # down-scaling of the base for the proxy (1 = the base itself)
    depth: float = 1.0
    stem_stride: int | None = None
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "grid"
    target: float = 2.0           # c in alpha * beta^2 * gamma^2 ~= c
    tolerance: float = 0.1        # measured cost ratio must fall within c * (1 +- tolerance)
    cost: str = "flops"           # flops | latency (hardware mode)
    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    step: float = 0.1             # grid step of alpha and beta
    trials: int = 20              # Bayesian and random samplers: feasible trials to finish
    seeds: int = 1                # proxy runs per candidate; the score is their mean
    latency: LatencySettings = LatencySettings()


@dataclass(frozen=True)
class ArchSettings:
    """Block-level search: which objective, against which cost."""

    objective: str = "reward"     # reward: ACC * (COST/T)^w (MnasNet); pareto: several objectives at once
    sampler: str = "tpe"          # tpe | nsga2 | random (tpe is multi-objective TPE under pareto)
    cost: str = "flops"           # the reward's cost: flops (MFLOPs) or latency (ms) of the full-size network
    target: float = 400.0         # T, in the cost's unit (EfficientNet-B0's search: 400 MFLOPs)
    w: float = -0.07              # soft constraint exponent
    metrics: tuple[str, ...] = ("accuracy", "flops")   # pareto: maximize accuracy, minimize the others
    trials: int = 20
    seeds: int = 1
    latency: LatencySettings = LatencySettings()


@dataclass(frozen=True)
class PrunerSettings:
    type: str = "median"
    startup_trials: int = 3
    warmup_epochs: int = 1


@dataclass(frozen=True)
class HeartbeatSettings:
    interval: int = 5             # seconds between a running trial's heartbeats
    grace: int = 20               # a trial silent this long is failed and retried


@dataclass(frozen=True)
class StudyConfig:
    name: str
    space: str
    proxy: ProxySettings
    search: SearchSettings
    pruner: PrunerSettings
    heartbeat: HeartbeatSettings
    seed: int = 0
    storage: str | None = None
    description: str = ""
    arch: ArchSettings | None = None     # set: a block-level search; unset: a coefficient search
    source: str = dataclasses.field(default="<study>", compare=False)

    @property
    def run_dir(self) -> Path:
        return RUNS_DIR / self.name

    def storage_url(self, override: str | None = None) -> str:
        if override or self.storage:
            return override or self.storage  # type: ignore[return-value]
        return f"sqlite:///{self.run_dir / 'study.db'}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def fingerprint(self) -> str:
        """What the results depend on; storage, description and heartbeat may change on resume."""
        d = self.to_dict()
        for key in ("storage", "description", "heartbeat"):
            d.pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ loading

def _build(cls: type, raw: Any, source: str, prefix: str, nested: dict[str, Any] | None = None) -> Any:
    """A dataclass from a mapping; unknown keys and the dataclass's own checks become NasErrors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NasError(f"{source}: field '{prefix}' must be a mapping of settings")
    names = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise NasError(f"{source}: field '{prefix}.{unknown[0]}' is not known: allowed are {', '.join(sorted(names))}")
    values = dict(raw)
    values.update(nested or {})
    try:
        return cls(**values)
    except NasError as e:
        raise NasError(f"{source}: in '{prefix}': {e}") from None
    except TypeError as e:
        raise NasError(f"{source}: in '{prefix}': {e}") from None


def _check(ok: bool, source: str, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise NasError(f"{source}: field '{field}' is {value!r}: must be {allowed}")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _range(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) for x in v) and 1.0 <= v[0] <= v[1]


_TOP_KEYS = {"name", "description", "space", "proxy", "search", "arch", "pruner", "heartbeat", "seed", "storage"}


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file."""
    p = Path(path)
    if not p.is_file():
        raise NasError(f"study file {path} does not exist: give the path to a YAML file such as "
                       f"studies/quickstart.yaml")
    return study_from_dict(read_yaml(p), str(p))


def study_from_dict(d: dict[str, Any], src: str) -> StudyConfig:
    """Validate a study definition: a study file's content, or the copy stored with a study."""
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise NasError(f"{src}: field '{unknown[0]}' is not known: allowed are {', '.join(sorted(_TOP_KEYS))}")
    for required in ("name", "space"):
        if required not in d:
            raise NasError(f"{src}: field '{required}' is missing")
    name = d["name"]
    _check(isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum(), src, "name", name,
           "letters, digits, '-' and '_' (it names the folder runs/<name>)")
    try:
        resolve_space_path(d["space"])   # an unknown space fails here, before any work
    except NasError as e:
        raise NasError(f"{src}: field 'space': {e}") from None

    proxy_raw = dict(d.get("proxy") or {})
    train = _build(TrainConfig, proxy_raw.pop("train", None), src, "proxy.train")
    proxy = _build(ProxySettings, proxy_raw, src, "proxy", {"train": train})
    _check(isinstance(proxy.dataset, str), src, "proxy.dataset", proxy.dataset, "digits or a path")
    _check(_int(proxy.resolution) and proxy.resolution >= 8, src, "proxy.resolution", proxy.resolution,
           "an integer >= 8")
    for f in ("width", "depth"):
        _check(_num(getattr(proxy, f)) and getattr(proxy, f) > 0, src, f"proxy.{f}", getattr(proxy, f), "a number > 0")
    _check(proxy.stem_stride in (None, 1, 2), src, "proxy.stem_stride", proxy.stem_stride, "1 or 2")

    search_raw = dict(d.get("search") or {})
    latency = _build(LatencySettings, search_raw.pop("latency", None), src, "search.latency")
    for f in ("alpha", "beta"):
        if f in search_raw:
            _check(_range(search_raw[f]), src, f"search.{f}", search_raw[f], "a range [low, high] with 1 <= low <= high")
            search_raw[f] = tuple(float(x) for x in search_raw[f])
    search = _build(SearchSettings, search_raw, src, "search", {"latency": latency})
    _check(search.sampler in SAMPLERS, src, "search.sampler", search.sampler, f"one of {', '.join(SAMPLERS)}")
    _check(search.cost in COSTS, src, "search.cost", search.cost, f"one of {', '.join(COSTS)}")
    _check(_num(search.target) and search.target > 1, src, "search.target", search.target, "a number > 1 (2 doubles the cost per phi)")
    _check(_num(search.tolerance) and 0 < search.tolerance < 1, src, "search.tolerance", search.tolerance, "a number in (0, 1)")
    _check(_num(search.step) and 0 < search.step <= 1, src, "search.step", search.step, "a number in (0, 1]")
    _check(_int(search.trials) and search.trials >= 1, src, "search.trials", search.trials, "an integer >= 1")
    _check(_int(search.seeds) and 1 <= search.seeds <= 10, src, "search.seeds", search.seeds, "an integer in 1..10")

    pruner = _build(PrunerSettings, d.get("pruner"), src, "pruner")
    _check(pruner.type in PRUNERS, src, "pruner.type", pruner.type, f"one of {', '.join(PRUNERS)}")
    _check(_int(pruner.startup_trials) and pruner.startup_trials >= 0, src, "pruner.startup_trials",
           pruner.startup_trials, "an integer >= 0")
    _check(_int(pruner.warmup_epochs) and pruner.warmup_epochs >= 0, src, "pruner.warmup_epochs",
           pruner.warmup_epochs, "an integer >= 0")
    heartbeat = _build(HeartbeatSettings, d.get("heartbeat"), src, "heartbeat")
    _check(_int(heartbeat.interval) and heartbeat.interval >= 1, src, "heartbeat.interval", heartbeat.interval,
           "an integer >= 1 (seconds)")
    _check(_int(heartbeat.grace) and heartbeat.grace > heartbeat.interval, src, "heartbeat.grace", heartbeat.grace,
           "an integer larger than heartbeat.interval (seconds)")
    seed = d.get("seed", 0)
    _check(_int(seed) and seed >= 0, src, "seed", seed, "an integer >= 0")
    storage = d.get("storage")
    _check(storage is None or (isinstance(storage, str) and "://" in storage), src, "storage", storage,
           "empty (a local file under runs/<name>/) or a URL such as postgresql://user:pass@host/db")
    arch = _load_arch(d, src) if d.get("arch") is not None else None
    return StudyConfig(name=name, description=d.get("description", ""), space=str(d["space"]), proxy=proxy,
                       search=search, pruner=pruner, heartbeat=heartbeat, seed=seed, storage=storage, arch=arch,
                       source=src)


def _load_arch(d: dict[str, Any], src: str) -> ArchSettings:
    from nas.space import is_block_space

    if "search" in d:
        raise NasError(f"{src}: fields 'search' and 'arch' exclude each other: 'search' defines a coefficient "
                       f"search (nas scale run), 'arch' a block-level search (nas arch run)")
    if not is_block_space(d["space"]):
        raise NasError(f"{src}: field 'space' is {d['space']!r}, which has no 'choices': a block-level search "
                       f"needs a space such as quickstart_arch or mnasnet_b0")
    raw = dict(d.get("arch") or {})
    latency = _build(LatencySettings, raw.pop("latency", None), src, "arch.latency")
    if "metrics" in raw:
        _check(isinstance(raw["metrics"], list) and len(raw["metrics"]) >= 2 and "accuracy" in raw["metrics"]
               and set(raw["metrics"]) <= set(METRICS), src, "arch.metrics", raw["metrics"],
               f"a list of 2 or 3 of {', '.join(METRICS)}, including accuracy")
        raw["metrics"] = tuple(raw["metrics"])
    arch = _build(ArchSettings, raw, src, "arch", {"latency": latency})
    _check(arch.objective in OBJECTIVES, src, "arch.objective", arch.objective, f"one of {', '.join(OBJECTIVES)}")
    _check(arch.sampler in ARCH_SAMPLERS, src, "arch.sampler", arch.sampler, f"one of {', '.join(ARCH_SAMPLERS)}")
    _check(arch.cost in COSTS, src, "arch.cost", arch.cost, f"one of {', '.join(COSTS)}")
    _check(_num(arch.target) and arch.target > 0, src, "arch.target", arch.target, "a number > 0 (MFLOPs or ms)")
    _check(_num(arch.w) and arch.w <= 0, src, "arch.w", arch.w, "a number <= 0 (MnasNet uses -0.07)")
    _check(_int(arch.trials) and arch.trials >= 1, src, "arch.trials", arch.trials, "an integer >= 1")
    _check(_int(arch.seeds) and 1 <= arch.seeds <= 10, src, "arch.seeds", arch.seeds, "an integer in 1..10")
    return arch


# ------------------------------------------------------------------------------------------ storage

def open_storage(url: str, heartbeat: HeartbeatSettings | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (when given) and stale-trial retry."""
    engine_kwargs: dict[str, Any] = {}
    sqlite = url.startswith("sqlite:///")
    if sqlite:
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}     # wait for other workers' writes, don't fail
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
            break
        except (ImportError, ModuleNotFoundError) as e:
            raise NasError(f"storage {url}: a database driver is missing ({e}): for PostgreSQL install "
                           f"effnas[postgres] (psycopg2-binary)") from None
        except Exception as e:  # sqlalchemy's connection and URL errors
            # Two processes creating the tables of a new database at once collide; the second try
            # finds them in place.
            if attempt < 2 and ("already exists" in str(e) or "UniqueViolation" in str(e)):
                time.sleep(0.5 + attempt)
                continue
            raise NasError(f"storage {url} cannot be opened: {str(e).splitlines()[0]}") from None
    if sqlite:
        _serialize_sqlite_transactions(storage.engine)
    return storage


def _serialize_sqlite_transactions(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    pysqlite only opens a transaction at the first write, so Optuna's "is this queued trial still
    WAITING? then mark it RUNNING" runs its read outside the transaction, and two worker processes
    can both take the same queued trial. With BEGIN IMMEDIATE the read and the write are one atomic
    step (SQLAlchemy's documented recipe for pysqlite); other workers wait on the lock (timeout 60 s).
    """
    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()   # connections opened while the storage was created predate the listeners


def load_stored_study(name_or_path: str, storage: str | None = None) -> tuple[optuna.Study, str]:
    """(an existing study, its storage URL), from a name, a study file, or a name plus --storage."""
    name, url = find_study_storage(name_or_path, storage)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)), url
    except KeyError:
        raise NasError(f"no study '{name}' in {url}: check the name, or run it first with nas scale run") from None


def find_study_config(name_or_path: str, storage: str | None = None) -> StudyConfig:
    """A study's definition from its file, or the copy stored with the study (given its name)."""
    if Path(name_or_path).suffix in (".yaml", ".yml") or Path(name_or_path).is_file():
        _, url = find_study_storage(name_or_path, storage)
        return dataclasses.replace(load_study(name_or_path), storage=url)
    study, url = load_stored_study(name_or_path, storage)
    stored = study.user_attrs.get("config")
    if stored is None:
        raise NasError(f"study '{study.study_name}' in {url} was not created by nas: give its study file instead")
    if stored.get("arch") is not None:
        stored.pop("search")          # stored with its defaults; a block-level study file has none
    return dataclasses.replace(study_from_dict(stored, f"study '{study.study_name}' in {url}"), storage=url)


def find_study_storage(name_or_path: str, storage: str | None = None) -> tuple[str, str]:
    """(study name, storage URL) from a study name, a study file, or a name plus --storage."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        cfg = load_study(p)
        return cfg.name, cfg.storage_url(storage)
    if storage:
        return name_or_path, storage
    db = RUNS_DIR / name_or_path / "study.db"
    if not db.is_file():
        raise NasError(f"no study '{name_or_path}' under {RUNS_DIR}/: run 'nas scale run studies/{name_or_path}.yaml' "
                       f"first, or give the study file or --storage URL")
    return name_or_path, f"sqlite:///{db}"
