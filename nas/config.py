"""Settings: study definitions (studies/*.yaml), the proxy-training budget and the latency protocol.

Plain dataclasses with their allowed values beside each field (nas.validation), and nothing heavier than
PyYAML: `nas --help`, `nas scale show` and every loader read settings without importing torch, fvcore or
Optuna. Loading validates everything before any work and raises one-line NasErrors naming the file, the
field and what is allowed. The study-file format is in docs/search.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nas.errors import NasError
from nas.spec import resolve_space_path, space_file_has_choices
from nas.validation import (
    BOOLEAN,
    Rule,
    check_fields,
    checked,
    from_mapping,
    integer,
    is_file,
    is_number,
    masked_url,
    number,
    one_of,
    optional,
    read_yaml,
    require,
    text,
    without_password,
)

Optimizer = Literal["sgd", "adamw", "rmsprop"]
Schedule = Literal["cosine", "constant"]
Amp = Literal["auto", "bf16", "off"]
FuseSeeds = Literal["auto", "on", "off"]
Runtime = Literal["torch", "onnxruntime"]
Precision = Literal["fp32", "bf16"]
Predictor = Literal["measure", "table"]
Sampler = Literal["grid", "tpe", "gp", "random"]
ArchSampler = Literal["tpe", "nsga2", "random"]
Objective = Literal["reward", "pareto"]
Metric = Literal["accuracy", "flops", "latency"]
Cost = Literal["flops", "activations", "latency"]
RewardCost = Literal["flops", "latency"]    # the block-level reward's T is in MFLOPs or ms
PrunerType = Literal["median", "none"]
RungTraining = Literal["restart", "continue"]

RUNS_DIR = Path("runs")
MAX_GRID_POINTS = 10_000
"""Each grid point costs a few FLOP counts: 10,000 is already hours of enumeration."""
STUDIES_DIR = Path(__file__).resolve().parent / "studies"
"""Example study files shipped in the package: `nas scale run quickstart` finds studies/quickstart.yaml here."""

DEVICE = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
              "auto, cpu, cuda or cuda:N")


SEED = integer(0, 2**32 - 1, "the samplers' seeds are 32-bit")
"""Every seed a user gives: Optuna's samplers seed NumPy's RandomState, which refuses 2^32 and above (a
larger --seed was a traceback)."""
WORKERS = integer(1, 256, "worker processes; more than the cores or GPUs are cut to them")


@dataclass(frozen=True)
class TrainConfig:
    """A proxy-training budget. Defaults are tuned for the bundled digits on 2 CPU cores."""

    epochs: int = checked(10, integer(1))
    steps: int | None = checked(None, optional(integer(1)))   # total optimizer steps; overrides epochs
    batch_size: int = checked(64, integer(1))
    optimizer: Optimizer = checked("adamw", one_of(Optimizer))
    lr: float = checked(2e-3, number(0, 10, low_open=True))
    momentum: float = checked(0.9, number(0, 1, high_open=True))          # SGD and RMSprop
    weight_decay: float = checked(0.05, number(0, 10))
    schedule: Schedule = checked("cosine", one_of(Schedule))
    warmup_epochs: float = checked(1.0, number(0, 1000))
    label_smoothing: float = checked(0.1, number(0, 1, high_open=True))
    # The reference 0.01 leaves running statistics stale after a short run.
    bn_momentum: float = checked(0.1, number(0, 1, low_open=True))
    # Batches that re-estimate BN statistics before each evaluation (0 = off).
    bn_recalibration: int = checked(8, integer(0))
    # Validate after every epoch (the progress line's curve, the pruner) or only after the last, the one a
    # search scores: on the CPU each validation costs a fifth of an epoch's training (docs/training.md).
    validate_each_epoch: bool = checked(True, BOOLEAN)
    zero_init: bool = checked(True, BOOLEAN)          # for models built from a spec; see builder
    crop_padding: int = checked(2, integer(0, 64))   # random-crop padding in pixels (0 = off)
    flip: bool = checked(False, BOOLEAN)             # horizontal flips (digits are not mirror-symmetric)
    seed: int = checked(0, SEED)
    device: str = checked("auto", DEVICE)
    channels_last: bool = checked(True, BOOLEAN)
    amp: Amp = checked("auto", one_of(Amp))          # auto: bf16 on CUDA, off on CPU
    compile: bool = checked(False, BOOLEAN)          # torch.compile: minutes of compile on CPU
    # Capture the training step once as a CUDA graph and replay it (nas.steps); ignored off CUDA.
    cuda_graphs: bool = checked(True, BOOLEAN)
    # Train a candidate's seeds as one fused job (nas.steps): auto fuses on CUDA, where it pays.
    fuse_seeds: FuseSeeds = checked("auto", one_of(FuseSeeds))
    threads: int | None = checked(None, optional(integer(1), "unset for all cores"))
    eval_batch_size: int = checked(512, integer(1))

    def __post_init__(self) -> None:
        if isinstance(self.fuse_seeds, bool):    # YAML reads a bare on / off as true / false
            object.__setattr__(self, "fuse_seeds", "on" if self.fuse_seeds else "off")
        check_fields(self)


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: device, batch, warm-up and timed runs, threads, runtime."""

    device: str = checked("cpu", DEVICE)
    batch_size: int = checked(1, integer(1, 4096))
    warmup: int = checked(5, integer(0, 1000))
    repeats: int = checked(20, integer(3, 10_000))
    threads: int | None = checked(None, optional(integer(1), "unset for all cores"))
    channels_last: bool = checked(True, BOOLEAN)
    runtime: Runtime = checked("torch", one_of(Runtime))
    # How the model is served: bf16 weights and activations (the model cast with .to(bfloat16)), and on
    # CUDA the forward captured once as a CUDA graph and replayed (no per-kernel launch cost on the host).
    precision: Precision = checked("fp32", one_of(Precision))
    cuda_graph: bool = checked(False, BOOLEAN)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.runtime == "onnxruntime" and (self.device != "cpu" or self.precision != "fp32" or self.cuda_graph):
            raise NasError(f"runtime onnxruntime is timed in fp32 on the CPU here, not on {self.device} in "
                           f"{self.precision}{' with a CUDA graph' if self.cuda_graph else ''}: set device cpu and "
                           f"precision fp32 without a CUDA graph, or runtime torch")
        if self.cuda_graph and self.device == "cpu":
            raise no_cuda_graph_on("cpu")


def no_cuda_graph_on(device: str) -> NasError:
    """Captured replay asked of a device without CUDA (cpu, or auto on a machine without a GPU)."""
    return NasError(f"a CUDA graph replays CUDA kernels, and device {device} has none: set device cuda, or time "
                    f"without a CUDA graph (cuda_graph: false)")


LATENCY_ADDED = ("precision", "cuda_graph")
"""LatencySettings fields added after studies and tables were first stored: they count (in a study's
fingerprint, in measurement conditions) only away from their defaults, so stored figures stay comparable."""


def _coefficient_range(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(x) for x in v)
            and 1.0 <= v[0] <= v[1] <= 10.0)


COEFFICIENT_RANGE = Rule(_coefficient_range, "a range [low, high] with 1 <= low <= high <= 10")


@dataclass(frozen=True)
class ProxySettings:
    """What each candidate is trained on: data, and the (optionally down-scaled) phi = 0 network."""

    dataset: str = checked("digits", text(allow_empty=False))
    per_class: int | None = checked(None, optional(integer(1)))
    fraction: float | None = checked(None, optional(number(0, 1, low_open=True)))
    resolution: int = checked(32, integer(8, 1024))     # resolution of the phi = 0 proxy network
    width: float = checked(1.0, number(0, 10, low_open=True))   # down-scaling of the base (1 = itself)
    depth: float = checked(1.0, number(0, 10, low_open=True))
    stem_stride: int | None = checked(None, optional(Rule(lambda v: v in (1, 2) and not isinstance(v, bool),
                                                          "1 or 2"), "unset for the base's own"))
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        check_fields(self)


def rung_budgets(rungs: int, eta: int) -> list[float]:
    """The share of the study's training budget each rung trains: eta^-(rungs - 1), ..., eta^-1, 1."""
    return [float(eta) ** (r - rungs + 1) for r in range(rungs)]


def rung_epochs(epochs: int, rungs: int, eta: int) -> list[int]:
    """The epoch after which each rung stops when rungs continue one another's training (search.rung_training:
    continue): each rung's share of `epochs`, rounded to a whole epoch (at least one), so that a rung's state
    is kept at an epoch's end. Rungs that round to the same epoch are refused (study_from_dict)."""
    return [max(1, round(epochs * share)) for share in rung_budgets(rungs, eta)]


@dataclass(frozen=True)
class SearchSettings:
    sampler: Sampler = checked("grid", one_of(Sampler))
    # c in alpha * beta^2 * gamma^2 ~= c
    target: float = checked(2.0, number(1, 16, low_open=True, note="2 doubles the cost per phi"))
    # The measured cost ratio must fall within c * (1 +- tolerance).
    tolerance: float = checked(0.1, number(0, 1, low_open=True, high_open=True))
    cost: Cost = checked("flops", one_of(Cost))        # flops | activations | latency (hardware mode)
    alpha: tuple[float, float] = checked((1.0, 2.0), COEFFICIENT_RANGE)
    beta: tuple[float, float] = checked((1.0, 1.5), COEFFICIENT_RANGE)
    step: float = checked(0.1, number(0.001, 1))       # grid step of alpha and beta
    # Bayesian and random samplers: feasible trials to finish.
    trials: int = checked(20, integer(1, 100_000))
    seeds: int = checked(1, integer(1, 10))             # proxy runs per candidate; the score is their mean
    # Each candidate's family (phi = 1..family_phis) must cost target^phi within tolerance to be trained.
    family_phis: int = checked(7, integer(1, 16))
    # Racing (grid only): candidates still tied with the best train `seeds` more seeds a round, up to
    # max_seeds; the others stop (nas/search/racing.py).
    racing: bool = checked(False, BOOLEAN)
    max_seeds: int = checked(8, integer(1, 50))
    # Budget racing (grid only; successive halving, nas/search/racing.py): `rungs` budgets, eta^-(rungs-1) ..
    # eta^-1, 1 of proxy.train's; at each the best 1/eta, and those tied with the best, go on. 1: off.
    rungs: int = checked(1, integer(1, 4))
    eta: int = checked(3, integer(2, 8))
    # restart: each rung trains anew on its share of the schedule, compressed (a complete, annealed training);
    # continue: a promoted candidate continues its lower rung's training (the study's schedule, cut at each
    # rung's epoch), so reaching the last rung costs what a flat grid's run costs, and ends with its result.
    rung_training: RungTraining = checked("restart", one_of(RungTraining))
    latency: LatencySettings = LatencySettings()
    # cost: latency: time every candidate (measure), or predict it from a calibrated per-block lookup table
    # built once for the device (table; the family is still measured). latency_table: the table's file.
    predictor: Predictor = checked("measure", one_of(Predictor))
    latency_table: str | None = checked(None, optional(text(allow_empty=False),
                                                       "unset for runs/<name>/latency_table.json"))

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.predictor == "measure" or self.cost == "latency", "search", "predictor", self.predictor,
                "measure unless search.cost is latency (a lookup table predicts latency only)")
        if self.racing:
            require(self.sampler == "grid", "search", "racing", self.racing,
                    "false unless search.sampler is grid (a race needs the whole field of candidates)")
        if self.rungs > 1:
            require(self.sampler == "grid", "search", "rungs", self.rungs,
                    "1 unless search.sampler is grid (budget racing needs the whole field of candidates)")
            require(self.max_seeds > self.seeds, "search", "max_seeds", self.max_seeds,
                    f"more than search.seeds ({self.seeds}) when racing")
        for f in ("alpha", "beta"):   # [1, 2] from YAML and (1.0, 2.0) are one study (one fingerprint)
            object.__setattr__(self, f, tuple(float(x) for x in getattr(self, f)))
        points = self.grid_size
        require(self.sampler != "grid" or points <= MAX_GRID_POINTS, "search", "step", self.step,
                f"coarse enough for at most {MAX_GRID_POINTS:,} grid points (alpha {list(self.alpha)} x beta "
                f"{list(self.beta)} at this step is {points:,}): raise search.step or narrow the ranges")

    @property
    def grid_size(self) -> int:
        """Points of the alpha x beta grid, counted before any is enumerated."""
        def axis(lo: float, hi: float) -> int:
            return int((hi - lo) / self.step + 1e-9) + 1
        return axis(*self.alpha) * axis(*self.beta)


@dataclass(frozen=True)
class ConfirmSettings:
    """The confirmation of a coefficient search (nas scale confirm): its leaders retrained at a larger budget,
    to measure whether the proxy's ranking holds."""

    run: bool = checked(False, BOOLEAN)                 # as the last stage of nas scale run
    top: int = checked(4, integer(2, 50))               # the best `top` candidates, and every one tied with the best
    epochs: float = checked(3.0, number(1, 100, note="times proxy.train's training"))
    images: float = checked(2.0, number(1, 100, note="times the proxy's training images, as far as the data has them"))
    seeds: int = checked(2, integer(1, 10))
    phi: int = checked(1, integer(1, 2))                # retrain the phi = 1 proxy the search trained, or phi = 2

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class ArchSettings:
    """Block-level search: which objective, against which cost."""

    # reward: ACC * (COST/T)^w (MnasNet); pareto: several objectives at once
    objective: Objective = checked("reward", one_of(Objective))
    sampler: ArchSampler = checked("tpe", one_of(ArchSampler))   # tpe is multi-objective TPE under pareto
    # The reward's cost: flops (MFLOPs) or latency (ms) of the full-size network.
    cost: RewardCost = checked("flops", one_of(RewardCost))
    # T, in the cost's unit (EfficientNet-B0's search: 400 MFLOPs).
    target: float = checked(400.0, number(0, low_open=True, note="MFLOPs or ms"))
    w: float = checked(-0.07, number(high=0, note="MnasNet uses -0.07"))   # soft constraint exponent
    metrics: tuple[str, ...] = checked(("accuracy", "flops"), Rule(
        lambda v: isinstance(v, (list, tuple)) and len(v) >= 2 and "accuracy" in v and set(v) <= {"accuracy", "flops",
                                                                                          "latency"},
        "a list of 2 or 3 of accuracy, flops, latency, including accuracy"))
    trials: int = checked(20, integer(1, 100_000))
    seeds: int = checked(1, integer(1, 10))
    latency: LatencySettings = LatencySettings()

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "metrics", tuple(self.metrics))


@dataclass(frozen=True)
class PrunerSettings:
    type: PrunerType = checked("median", one_of(PrunerType))
    startup_trials: int = checked(3, integer(0))
    warmup_epochs: int = checked(1, integer(0))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class HeartbeatSettings:
    interval: int = checked(5, integer(1, 3600, note="seconds"))    # between a running trial's heartbeats
    grace: int = checked(20, integer(2, 86_400, note="seconds"))    # a trial silent this long is retried

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.grace > self.interval, "heartbeat", "grace", self.grace,
                "an integer larger than heartbeat.interval (seconds)")


STORAGE_URL = Rule(lambda v: isinstance(v, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", v) is not None
                   and not _in_memory(v),
                   "a database URL such as postgresql://user:pass@host/db or sqlite:////abs/path/study.db (not "
                   "sqlite:// alone: a study in memory is lost at exit)")


def _in_memory(url: str) -> bool:
    scheme, _, rest = url.partition("://")
    return scheme.lower().startswith("sqlite") and rest.partition("?")[0] in ("", "/", "/:memory:")


def check_storage_url(url: str) -> None:
    """Refuse, in one line that masks its password, a storage that is not a database URL or that keeps the study
    in memory (a study file's `storage` is refused at loading, in the words of its field)."""
    if isinstance(url, str) and _in_memory(url):
        raise NasError(f"storage '{masked_url(url)}' keeps the study in memory, where it is lost when nas exits and "
                       f"no other worker can reach it: give a file (sqlite:////abs/path/study.db), a postgresql:// "
                       f"URL, or no storage for runs/<name>/study.db")
    if not STORAGE_URL(url):
        raise NasError(f"storage '{masked_url(url)}' is not a database URL: give one such as "
                       f"postgresql://user:pass@host/db or sqlite:////abs/path/study.db, or no storage for "
                       f"runs/<name>/study.db")


STUDY_NAME = Rule(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", v) is not None,
                  "1-100 letters, digits, '-' and '_', starting with a letter or digit (it names runs/<name>)")


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
    # Worker processes `nas scale run|confirm|calibrate` and `nas arch run` start when --workers is not given,
    # cut to the machine's cores (or GPUs): how the study runs, not what it finds.
    workers: int = 1
    description: str = ""
    arch: ArchSettings | None = None     # set: a block-level search; unset: a coefficient search
    confirm: ConfirmSettings = ConfirmSettings()
    source: str = dataclasses.field(default="<study>", compare=False)

    @property
    def run_dir(self) -> Path:
        return RUNS_DIR / self.name

    def storage_url(self, override: str | None = None) -> str:
        url = override or self.storage
        return url if url else f"sqlite:///{self.run_dir / 'study.db'}"

    def to_dict(self) -> dict[str, Any]:
        """The definition as stored with a study: its storage URL without a password, which anyone who can read
        the study (optuna studies, optuna-dashboard) would otherwise see."""
        d = dataclasses.asdict(self)
        d.pop("source")
        if self.storage:
            d["storage"] = without_password(self.storage)
        return d

    def fingerprint(self) -> str:
        """What the search's results depend on; storage, workers, description, heartbeat and the confirmation (a
        study of its own beside the search) may change on resume."""
        d = self.to_dict()
        for key in ("storage", "workers", "description", "heartbeat", "confirm"):
            d.pop(key)
        # Settings added since studies were first stored count only away from their defaults, so a study
        # made before them keeps its fingerprint and resumes (racing's only when racing is on).
        if not self.search.racing:
            for key in ("racing", "max_seeds"):
                d["search"].pop(key)
        if self.search.rungs == 1:
            for key in ("rungs", "eta"):
                d["search"].pop(key)
        if self.search.rungs == 1 or self.search.rung_training == SearchSettings.rung_training:
            d["search"].pop("rung_training")
        if self.search.family_phis == SearchSettings.family_phis:
            d["search"].pop("family_phis")
        for key in ("cuda_graphs", "fuse_seeds"):
            if getattr(self.proxy.train, key) == getattr(TrainConfig, key):
                d["proxy"]["train"].pop(key)
        d["proxy"]["train"].pop("validate_each_epoch")   # the last epoch, the one scored, is always validated
        for key in ("predictor", "latency_table"):
            if getattr(self.search, key) == getattr(SearchSettings, key):
                d["search"].pop(key)
        for section in (d["search"], d["arch"] or {}):
            if "latency" in section:
                for key in LATENCY_ADDED:
                    if section["latency"][key] == getattr(LatencySettings, key):
                        section["latency"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ loading

_TOP_KEYS = {"name", "description", "space", "proxy", "search", "arch", "pruner", "heartbeat", "seed", "storage",
             "workers", "confirm"}


def resolve_study_path(name_or_path: str | Path) -> Path:
    """A study file: a path, or the name of an example shipped with the package (quickstart)."""
    p = Path(name_or_path)
    if is_file(p):
        return p
    packaged = STUDIES_DIR / f"{p.stem}.yaml"
    if p.suffix in ("", ".yaml", ".yml") and len(p.parts) == 1 and is_file(packaged):
        return packaged
    examples = ", ".join(sorted(f.stem for f in STUDIES_DIR.glob("*.yaml")))
    raise NasError(f"study file {name_or_path} does not exist: give the path to a YAML file, or the name of an "
                   f"example study ({examples})")


def is_example(name: str | Path) -> bool:
    """Whether `name` is the name of an example study shipped with the package (quickstart, cluttered)."""
    p = Path(name)
    return len(p.parts) == 1 and p.suffix == "" and is_file(STUDIES_DIR / f"{p}.yaml")


def is_study_file(name_or_path: str | Path) -> bool:
    """Whether a command's study argument names a file (or a packaged example) rather than a stored study."""
    p = Path(name_or_path)
    return p.suffix in (".yaml", ".yml") or is_file(p)


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study file (a path, or a packaged example's name)."""
    p = resolve_study_path(path)
    return study_from_dict(read_yaml(p), str(p))


def study_from_dict(d: dict[str, Any], src: str) -> StudyConfig:
    """Validate a study definition: a study file's content, or the copy stored with a study."""
    unknown = sorted(set(map(str, d)) - _TOP_KEYS)
    if unknown:
        raise NasError(f"{src}: field '{unknown[0]}' is not known: allowed are {', '.join(sorted(_TOP_KEYS))}")
    for required in ("name", "space"):
        if required not in d:
            raise NasError(f"{src}: field '{required}' is missing")
    name = d["name"]
    require(STUDY_NAME(name), src, "name", name, STUDY_NAME.allowed)
    require(isinstance(d["space"], str), src, "space", d["space"], "a base-network name or a YAML path")
    try:
        resolve_space_path(d["space"])   # an unknown space fails here, before any work
    except NasError as e:
        raise NasError(f"{src}: field 'space': {e}") from None
    description = d.get("description") or ""
    require(isinstance(description, str), src, "description", description, "a string")

    proxy_raw = dict(d.get("proxy") or {}) if isinstance(d.get("proxy"), dict) else d.get("proxy")
    train = from_mapping(TrainConfig, proxy_raw.pop("train", None) if isinstance(proxy_raw, dict) else None,
                         src, "proxy.train")
    proxy = from_mapping(ProxySettings, proxy_raw, src, "proxy", train=train)
    pruner = from_mapping(PrunerSettings, d.get("pruner"), src, "pruner")
    heartbeat = from_mapping(HeartbeatSettings, d.get("heartbeat"), src, "heartbeat")
    confirm = from_mapping(ConfirmSettings, d.get("confirm"), src, "confirm")
    seed = d.get("seed", 0)
    require(SEED(seed), src, "seed", seed, SEED.allowed)
    storage = d.get("storage")
    require(storage is None or STORAGE_URL(storage), src, "storage",
            masked_url(storage) if isinstance(storage, str) else storage,
            f"empty (a local file under runs/<name>/) or {STORAGE_URL.allowed}")
    workers = d.get("workers", 1)
    require(WORKERS(workers), src, "workers", workers, WORKERS.allowed)
    if d.get("arch") is not None:
        if "search" in d:
            raise NasError(f"{src}: fields 'search' and 'arch' exclude each other: 'search' defines a coefficient "
                           f"search (nas scale run), 'arch' a block-level search (nas arch run)")
        if not space_file_has_choices(d["space"]):
            raise NasError(f"{src}: field 'space' is {d['space']!r}, which has no 'choices': a block-level search "
                           f"needs a space such as quickstart_arch or mnasnet_b0")
        arch: ArchSettings | None = _section(ArchSettings, d["arch"], src, "arch")
        search = SearchSettings()
    else:
        arch = None
        search = _section(SearchSettings, d.get("search"), src, "search")
    if d.get("confirm") is not None and arch is not None:
        raise NasError(f"{src}: field 'confirm' confirms a coefficient search; a block-level search ('arch') has none")
    if not train.validate_each_epoch and pruner.type != "none":
        raise NasError(f"{src}: field 'proxy.train.validate_each_epoch' is false, which leaves the {pruner.type} "
                       f"pruner no epoch to judge before the last: set 'pruner: {{type: none}}' or validate each epoch")
    if search.rungs > 1 and search.rung_training == "continue":
        stops = rung_epochs(train.epochs, search.rungs, search.eta)
        require(train.steps is None, src, "proxy.train.steps", train.steps,
                "unset when search.rung_training is continue (rungs stop at epochs' ends: give proxy.train.epochs)")
        require(len(set(stops)) == len(stops), src, "proxy.train.epochs", train.epochs,
                f"enough epochs for {search.rungs} rungs at eta {search.eta} that continue one another (they would "
                f"stop after epochs {', '.join(map(str, stops))}): raise it, or lower search.rungs or search.eta")
    return StudyConfig(name=name, description=description, space=d["space"], proxy=proxy, search=search,
                       pruner=pruner, heartbeat=heartbeat, seed=seed, storage=storage, workers=workers, arch=arch,
                       confirm=confirm, source=src)


def _section(cls: type, raw: Any, src: str, prefix: str) -> Any:
    """A search section with a nested `latency` mapping."""
    if not isinstance(raw, dict):
        return from_mapping(cls, raw, src, prefix)
    raw = dict(raw)
    latency = from_mapping(LatencySettings, raw.pop("latency", None), src, f"{prefix}.latency")
    return from_mapping(cls, raw, src, prefix, latency=latency)
