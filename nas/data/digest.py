"""The digest of a data source: what a study records so that it refuses to resume on data that changed.

Every file of a source is hashed whole (SHA-256 in 1 MiB chunks: about 1 GB/s on one core with the
CPU's SHA instructions), so a change anywhere in a file counts, not only near its start. The digest covers
the files' names relative to the source, their sizes and their contents: renaming the folder or copying it
elsewhere keeps it. A bundled source is its name, and a generated one its generator's version and parameters.

Sources of CACHE_FROM_BYTES or more keep each file's digest in a cache file, so that resuming a study on a
large image folder reads only the files that changed: `<cache>/effnas/digests/<hash of the source's resolved
path>.json`, where <cache> is $XDG_CACHE_HOME or ~/.cache. An entry is used only while its file has the same
size, modification time and change time (nanoseconds); writing a file moves its change time, which no tool
can set back, so a rewritten file is hashed again even when its size and modification time are restored.
Deleting the cache costs one full read on the next run, nothing else; a cache that cannot be written
(read-only home) is skipped. Figures: docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from nas.data import cluttered
from nas.data.raw import ACCEPTED
from nas.errors import NasError

MAX_FILES = 200_000
"""Files of a folder that count; an image folder beyond this is not a proxy data set."""
CACHE_FROM_BYTES = 64 << 20
"""Sources smaller than this are hashed whole on every run (well under 0.1 s); larger ones use the cache."""
_CHUNK = 1 << 20


def source_fingerprint(source: str | os.PathLike[str]) -> str:
    """A short digest of what a data source is made of (the module's docstring says what counts)."""
    if isinstance(source, str) and source == "digits":
        return "digits"
    if isinstance(source, str) and source == cluttered.NAME:
        return cluttered.DEFAULT.fingerprint()
    path, files = _source_files(source)
    stats = [f.stat() for f in files]
    cache = _DigestCache(path) if sum(st.st_size for st in stats) >= CACHE_FROM_BYTES else None
    digest = hashlib.sha256()
    for f, st in zip(files, stats):
        name = f.relative_to(path).as_posix() if f != path else f.name
        contents = cache.digest(name, f, st) if cache else _file_digest(f)
        digest.update(f"{name}:{st.st_size}:{contents}\n".encode())
    if cache:
        cache.save()
    return digest.hexdigest()[:16]


def first_16_mib_fingerprint(source: str | os.PathLike[str]) -> str:
    """The digest effnas recorded before it hashed files whole: names, sizes and each file's first 16 MiB. A
    study that recorded it resumes when the source still gives it (the change it cannot see, past 16 MiB of a
    file, went unchecked then too), and records the whole-file digest from then on. Bundled sources kept theirs."""
    if isinstance(source, str) and source in ("digits", cluttered.NAME):
        return source_fingerprint(source)
    path, files = _source_files(source)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path) if f != path else f.name}:{f.stat().st_size}\n".encode())
        with f.open("rb") as handle:
            digest.update(handle.read(16 << 20))
    return digest.hexdigest()[:16]


def _source_files(source: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """(the source's path, its regular files in a fixed order): FIFOs and devices are not read."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NasError(f"no such file or directory: {path}; {ACCEPTED}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return path, files[:MAX_FILES]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as e:
        raise NasError(f"cannot read {path} ({e.strerror}): every file of a data set must be readable") from None
    return digest.hexdigest()[:32]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "effnas" / "digests"


class _DigestCache:
    """Per-file digests of one source, kept between runs; a file's entry holds while (size, mtime_ns,
    ctime_ns) are unchanged."""

    def __init__(self, source: Path) -> None:
        self.source = str(source.resolve())
        self.path = _cache_dir() / f"{hashlib.sha256(self.source.encode()).hexdigest()[:16]}.json"
        self.entries: dict[str, list] = {}
        self.used: dict[str, list] = {}
        try:
            stored = json.loads(self.path.read_text())
            if stored.get("source") == self.source:
                self.entries = dict(stored["files"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):   # none yet, or unreadable: rebuild
            pass

    def digest(self, name: str, f: Path, st: os.stat_result) -> str:
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        entry = self.entries.get(name)
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == key:
            self.used[name] = entry
            return str(entry[3])
        self.used[name] = [*key, _file_digest(f)]
        return str(self.used[name][3])

    def save(self) -> None:
        """Write the entries of this run's files (files gone from the source drop out), atomically."""
        if self.used == self.entries:
            return
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, suffix=".tmp", delete=False) as handle:
                tmp = Path(handle.name)
                json.dump({"source": self.source, "files": self.used}, handle)
            os.replace(tmp, self.path)
        except OSError:     # a cache that cannot be written costs the next run a full read, nothing else
            if tmp is not None:
                tmp.unlink(missing_ok=True)
