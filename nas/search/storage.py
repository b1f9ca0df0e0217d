"""Where studies live: Optuna RDB storage (an SQLite file by default, PostgreSQL for many machines).

By default a study is the SQLite file runs/<name>/study.db, which several worker processes on one
machine share; any SQLAlchemy URL (postgresql://...) puts workers on many machines on one study.
Workers send a heartbeat; a trial whose worker died (kill -9, power loss) is failed once its
heartbeat is older than the grace period, and retried.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy import event

from nas.config import (
    RUNS_DIR,
    STUDY_NAME,
    HeartbeatSettings,
    StudyConfig,
    check_storage_url,
    is_example,
    is_study_file,
    load_study,
    study_from_dict,
)
from nas.errors import NasError
from nas.validation import is_file, password_spans, require, secret_free, without_password
from nas.validation import masked_url as masked  # every URL printed goes through it (the name callers use)

# Heartbeats and stale-trial retry are "experimental" in Optuna; effnas depends on them on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# A trial retried after its worker died carries the constraint its failed copy recorded (Optuna's
# RetryHeartbeatStaleTrialCallback copies it); the retry computes the same value, which Optuna keeps with a
# UserWarning naming its own source file. Nothing is lost: keep the warning off the user's screen.
warnings.filterwarnings("ignore", message="The constraint value is ignored because", category=UserWarning)


def driver_url(url: str) -> str:
    """The URL SQLAlchemy is given. `postgresql://` (as the docs write it) means psycopg 3 to SQLAlchemy 2.1,
    while effnas[postgres] installs psycopg2: a bare postgresql:// URL is pointed at psycopg2 when psycopg 3
    is not installed, so the documented form works with the documented extra. Explicit drivers are kept.
    A password typed with '@' in it (user:p@ss@host) is the one meant: its '@'s are percent-encoded, which
    SQLAlchemy would otherwise take for the end of the password."""
    for begin, end in password_spans(url)[:1]:
        if url[begin - 1] == ":":      # the user part's (password_spans lists it first)
            url = url[:begin] + url[begin:end].replace("@", "%40") + url[end:]
    bare = re.match(r"^postgres(?:ql)?://", url)
    if bare and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[bare.end():]
    return url


# Two processes creating the tables of a new database at once collide (PostgreSQL and SQLite say it
# differently); the second try finds them in place.
_CREATION_RACES = ("already exists", "UniqueViolation", "UNIQUE constraint failed: alembic_version")


def sqlite_file(url: str) -> Path | None:
    """The database file of an sqlite:/// URL (its query left out); None for other storages."""
    return Path(url[len("sqlite:///"):].partition("?")[0]) if url.startswith("sqlite:///") else None


def checkpoint_folder(config: StudyConfig) -> Path:
    """Where budget racing keeps the training states its promoted candidates continue from
    (search.rung_training: continue), <name>-checkpoints: beside an SQLite study's file, else in runs/<name>/
    under the current folder. A worker that finds no state there (another machine of a PostgreSQL
    study) trains the candidate from the start: the same result, at the full cost."""
    db = sqlite_file(config.storage_url())
    return (db.parent if db else config.run_dir) / f"{config.name}-checkpoints"


def open_storage(url: str, heartbeat: HeartbeatSettings | None = None) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (when given) and stale-trial retry."""
    check_storage_url(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite = sqlite_file(url)
    if sqlite:
        folder = sqlite.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise NasError(f"cannot create {folder} for the study's database ({e.strerror}): run from a writable "
                           f"directory, or give --storage sqlite:////writable/path/study.db") from None
        engine_kwargs["connect_args"] = {"timeout": 60}     # wait for other workers' writes, don't fail
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        kwargs = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace,
                      heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
    for attempt in range(4):
        try:
            storage = optuna.storages.RDBStorage(driver_url(url), engine_kwargs=engine_kwargs, **kwargs)
            break
        except (ImportError, ModuleNotFoundError) as e:
            raise NasError(f"storage {masked(url)}: a database driver is missing ({secret_free(str(e), url)}): for "
                           f"PostgreSQL install effnas[postgres] (psycopg2-binary)") from None
        except Exception as e:  # sqlalchemy's connection and URL errors
            if attempt < 3 and any(race in str(e) for race in _CREATION_RACES):
                time.sleep(0.5 + attempt)
                continue
            if "compatible with the table schema" in str(e) and "pip install -U optuna" in str(e):
                raise NasError(f"storage {masked(url)} cannot be opened: {_unknown_schema(url)}") from None
            raise NasError(f"storage {masked(url)} cannot be opened: {_first_line(e, url)}{_fix(url, e)}") from None
    if sqlite:
        _serialize_sqlite_transactions(storage.engine)
    return storage


def _first_line(e: BaseException, url: str) -> str:
    """The first line of a database error, without the password of `url` (drivers may quote parts of it)."""
    return secret_free(str(e).splitlines()[0], url) if str(e) else type(e).__name__


def _fix(url: str, e: BaseException) -> str:
    """What to do about a database that is not one (garbage pages, another file) or is damaged."""
    text = str(e)
    sqlite = sqlite_file(url)
    if sqlite and ("not a database" in text or "malformed" in text):
        return (f": {sqlite} is damaged or not a study database; restore it from a copy, or "
                f"move it away to start the study over")
    return ""


def _unknown_schema(url: str) -> str:
    """Why a database's tables are not ones this Optuna can use, and what to do. Optuna says "update Optuna"
    to any schema version it does not know; only a version named after a newer Optuna (vX.Y.Z.a) deserves
    that answer."""
    try:
        engine = sqlalchemy.create_engine(driver_url(url))
        try:
            with engine.connect() as connection:
                version = str(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar())
        finally:
            engine.dispose()
    except Exception:    # no version to read (no such table): the plain fact below
        version = "none"
    made_by = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(\.\w+)?", version)
    ours = tuple(int(p) for p in re.findall(r"\d+", optuna.__version__)[:3])
    if made_by and tuple(int(p) for p in made_by.groups()[:3]) > ours:
        return (f"its tables were made by a newer Optuna (schema {version}; this one is {optuna.__version__}): "
                f"upgrade Optuna (pip install -U optuna), or give another storage")
    return (f"its tables carry schema version '{version}', which no Optuna made: it is not a study database; "
            f"give another storage, or move it away")


def storage_failure(url: str, e: BaseException) -> NasError:
    """A database that opened but fails on reading (SQLite pages damaged past the header) or on the first write
    (read-only, full): one line."""
    return unwritable_failure(url, e, at_start=True) or \
        NasError(f"storage {masked(url)} cannot be read: {_first_line(e, url)}{_fix(url, e) or ''}")


# Database errors that no retry will fix: the study can be read (or not even that) but no longer written.
_UNWRITABLE = ("readonly database", "disk I/O error", "database or disk is full", "unable to open database",
               "read-only transaction", "No space left on device")


def unwritable_failure(url: str, e: BaseException, at_start: bool = False) -> NasError | None:
    """One line for a study database that can no longer be written (made read-only or immutable, disk full,
    gone) mid-run, or `at_start` of a run, found anywhere in the exception's chain; None for any other error.
    Optuna can bury the database's error under one of its own (an UnboundLocalError when reading back a
    trial it could not finish), so the whole chain is searched."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if any(s in str(link) for s in _UNWRITABLE):
            if at_start:
                return NasError(f"storage {masked(url)} cannot be written: {_first_line(link, url)}; make the "
                                f"database writable (permissions, free space, file attributes) and run the same "
                                f"command again")
            return NasError(f"storage {masked(url)} can no longer be written ({_first_line(link, url)}): finished "
                            f"trials are kept and the trial in progress will be retried; make the database writable "
                            f"again (permissions, free space, file attributes) and run the same command to resume")
        link = link.__cause__ or link.__context__
    return None


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
    sqlite = sqlite_file(url)
    if sqlite and not is_file(sqlite):     # reading creates nothing
        raise NasError(f"no study '{name}' in {masked(url)}: the file does not exist; check the path, or run the "
                       f"study first with nas scale run")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)), url
    except KeyError:
        raise NasError(f"no study '{name}' in {masked(url)}: check the name, or run it first with nas scale run") \
            from None
    except optuna.exceptions.StorageInternalError as e:
        raise storage_failure(url, e.__cause__ or e) from None


def find_study_config(name_or_path: str, storage: str | None = None) -> StudyConfig:
    """A study's definition from its file, or the copy stored with the study (given its name); an example's
    name (quickstart) that has no stored study here is the packaged example's file."""
    if is_study_file(name_or_path) or (storage is None and is_example(name_or_path)
                                       and not _stored_here(str(name_or_path))):
        config = load_study(name_or_path)
        return dataclasses.replace(config, storage=config.storage_url(storage))
    return stored_config(*load_stored_study(name_or_path, storage))


def _stored_here(name: str) -> bool:
    """Whether runs/<name>/study.db holds the study `name`: the file alone says too little, since a calibration
    run of an example that never ran keeps its study (<name>-calibrate) there, and its resume must still
    find the example's file."""
    db = RUNS_DIR / name / "study.db"
    if not is_file(db):
        return False
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return name in optuna.get_all_study_names(open_storage(f"sqlite:///{db}"))


def stored_config(study: optuna.Study, url: str) -> StudyConfig:
    """The definition stored with a study that nas created, typed and validated as a study file is, with the
    storage it was read from."""
    stored = study.user_attrs.get("config")
    if stored is None:
        raise NasError(f"study '{study.study_name}' in {masked(url)} was not created by nas: give its study file "
                       f"instead")
    stored = dict(stored)
    if stored.get("arch") is not None:
        stored.pop("search")          # stored with their defaults; a block-level study file has neither
        stored.pop("confirm", None)
    return dataclasses.replace(study_from_dict(stored, f"study '{study.study_name}' in {masked(url)}"), storage=url)


def clean_stored_definition(study: optuna.Study) -> None:
    """Remove the password from the storage URL of a study's stored definition (attribute "config"), where
    effnas before this check stored it whole: anyone who can read the study (optuna studies, optuna-dashboard)
    could read it there. Each run of a study does this as it resumes."""
    stored = study.user_attrs.get("config")
    if isinstance(stored, dict) and isinstance(stored.get("storage"), str):
        clean = without_password(stored["storage"])
        if clean != stored["storage"]:
            study.set_user_attr("config", {**stored, "storage": clean})


def find_study_storage(name_or_path: str, storage: str | None = None) -> tuple[str, str]:
    """(study name, storage URL) from a study name, a study file, or a name plus --storage."""
    if is_study_file(name_or_path):
        cfg = load_study(name_or_path)
        return cfg.name, cfg.storage_url(storage)
    require(STUDY_NAME(name_or_path), "the command line", "study", name_or_path,
            f"a study file (.yaml) or a study name: {STUDY_NAME.allowed}")
    if storage:
        return name_or_path, storage
    db = RUNS_DIR / name_or_path / "study.db"
    if not is_file(db):
        raise NasError(f"no study '{name_or_path}' under {RUNS_DIR}/: run 'nas scale run {name_or_path}' (a study "
                       f"file or an example's name) first, or give the study file or --storage URL")
    return name_or_path, f"sqlite:///{db}"


def fail_trials_without_heartbeat(storage: optuna.storages.BaseStorage, study: optuna.Study,
                                  older_than_s: float) -> list[int]:
    """Fail RUNNING trials that never recorded a heartbeat and started over `older_than_s` ago; returns
    their numbers. A worker killed between taking a trial and its first heartbeat leaves such a trial, and
    Optuna's stale-trial check skips trials without a heartbeat, so without this the study would wait on
    it forever. They fail without a reason, so the job re-queues their work (like a Ctrl-C'd trial).

    Reads Optuna 5's RDB tables (a private layout): with another storage, or another layout, it does nothing.
    """
    if not isinstance(storage, optuna.storages.RDBStorage):
        return []
    try:
        from datetime import timedelta

        from optuna.storages._rdb import models

        session = storage.scoped_session()
        try:
            now = session.execute(sqlalchemy.func.now()).scalar()
            now = now.replace(tzinfo=None) if now is not None else None
            study_id = storage.get_study_id_from_name(study.study_name)
            orphans: list[tuple[int, int]] = [(int(t.trial_id), int(t.number)) for t in
                       session.query(models.TrialModel)
                       .filter(models.TrialModel.state == TrialState.RUNNING)
                       .filter(models.TrialModel.study_id == study_id).all()
                       if now is not None and not t.heartbeats and t.datetime_start is not None
                       and now - t.datetime_start > timedelta(seconds=older_than_s)]
        finally:
            storage.scoped_session.remove()
    except (ImportError, AttributeError, sqlalchemy.exc.SQLAlchemyError):
        return []
    failed = []
    for trial_id, number in orphans:
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(number)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):   # finished meanwhile
            pass
    return failed
