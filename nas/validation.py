"""The one way every loader checks its input: study files, training and latency settings, base networks,
block-level spaces and data sources.

A setting is a dataclass field whose allowed values sit beside it (`checked(default, rule)`), and a
`Rule` is a predicate with the words a user reads when it fails. `check_fields` runs the rules of a
dataclass (from `__post_init__`, so settings built on the command line get the same checks as settings
read from a file); `from_mapping` builds one from a YAML mapping and names the file and the field in the
one-line error. `require` is the same error for checks that do not fit a field rule.

Messages have one shape: "<source>: field '<field>' is <value>: must be <allowed>".

Beneath the fields: `read_yaml`, the one YAML loader of study, base-network and space files (it refuses
aliases, keys given twice, control characters and deep nesting in one line each), and the storage-URL
helpers (`masked_url`, `without_password`, `secret_free`) through which every printed or stored URL goes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml

from nas.errors import NasError

T = TypeVar("T")


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    allowed: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.ok(value))
        except TypeError:        # a comparison of a wrong type ("abc" >= 0): not allowed
            return False


class InvalidField(NasError):
    """A field that breaks its rule; loaders add the file (source) and the section (prefix)."""

    def __init__(self, field: str, value: Any, allowed: str, source: str | None = None) -> None:
        self.field, self.value, self.allowed, self.source = field, value, allowed, source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}field '{field}' is {_shown(value)}: must be {allowed}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require(ok: bool, source: str, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise InvalidField(field, value, allowed, source)


@contextmanager
def read_from(source: str, prefix: str) -> Iterator[None]:
    """Name the file and section of a setting that is refused where it is used rather than where it was read
    (a GPU this machine lacks): without a source, an InvalidField reads as the command-line option."""
    try:
        yield
    except InvalidField as e:
        if e.source is not None:
            raise
        raise InvalidField(f"{prefix}.{e.field}", e.value, e.allowed, source) from None


# ------------------------------------------------------------------------------------------ rules

def is_int(v: Any) -> bool:
    """A whole number (numpy's too), and not a boolean (YAML's `true` is not a count)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float, and not a boolean."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int | None = None, high: int | None = None, note: str = "") -> Rule:
    text = ("an integer" + (f" in {low}..{high}" if low is not None and high is not None
                            else f" >= {low}" if low is not None else f" <= {high}" if high is not None else ""))
    return Rule(lambda v: is_int(v) and (low is None or v >= low) and (high is None or v <= high),
                text + (f" ({note})" if note else ""))


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, note: str = "") -> Rule:
    """A finite number within [low, high] (either end open on request)."""
    def ok(v: Any) -> bool:
        if not is_number(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return high is None or (v < high if high_open else v <= high)

    if low is not None and high is not None:
        text = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"a number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        text = "a finite number"
    return Rule(ok, text + (f" ({note})" if note else ""))


def one_of(choices: Any) -> Rule:
    """One of a few words: a tuple of them, or a `Literal[...]` type."""
    words = tuple(get_args(choices)) or tuple(choices)
    return Rule(lambda v: isinstance(v, str) and v in words, f"one of {', '.join(map(str, words))}")


def optional(rule: Rule, absent: str = "unset") -> Rule:
    return Rule(lambda v: v is None or rule(v), f"{rule.allowed}, or {absent}")


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")


MAX_NAME_BYTES = 200
"""A name that becomes a file name leaves room for a suffix (.yaml, .onnx) under the usual 255-byte limit."""


def _is_file_name(v: Any) -> bool:
    return (isinstance(v, str) and 1 <= len(v.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
            and not v.startswith(".") and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in v))


FILE_NAME = Rule(_is_file_name, f"a file name: 1-{MAX_NAME_BYTES} bytes, no '/', '\\' or control characters, "
                                f"not starting with '.'")
"""A network's name: it names the files written for it (<name>.yaml, <name>.onnx) inside the folder asked for."""


def file_in(folder: Path, name: str, suffix: str, what: str = "network") -> Path:
    """`folder/<name><suffix>`, refused in one line unless `name` is a plain file name (FILE_NAME), so that no
    name read from a file or typed on the command line (`../../x`, `/etc/x`) writes outside `folder`. Every
    writer of a file named after a network goes through here."""
    if not FILE_NAME(name):
        raise NasError(f"{what} name {_shown(name)} cannot name a file in {folder}: it must be "
                       f"{FILE_NAME.allowed}; rename the {what}")
    return folder / f"{name}{suffix}"


def text(allow_empty: bool = True) -> Rule:
    return Rule(lambda v: isinstance(v, str) and (allow_empty or bool(v.strip())),
                "a string" if allow_empty else "a non-empty string")


# ------------------------------------------------------------------------------------ dataclasses

def checked(default: Any, rule: Rule) -> Any:
    """A dataclass field with a default and the rule its values must meet."""
    return dataclasses.field(default=default, metadata={"rule": rule})


def check_fields(obj: Any) -> None:
    """Raise InvalidField for the first field of `obj` that breaks its rule."""
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("rule")
        value = getattr(obj, f.name)
        if rule is not None and not rule(value):
            raise InvalidField(f.name, value, rule.allowed)


def from_mapping(cls: type[T], raw: Any, source: str, prefix: str, **nested: Any) -> T:
    """A dataclass from a mapping read from a file: unknown keys and broken rules become one-line errors
    naming the file and the field ('proxy.train.lr'); `nested` supplies sections built separately."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NasError(f"{source}: field '{prefix}' must be a mapping of settings, not {_shown(raw)}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}   # type: ignore[arg-type]
    unknown = sorted(set(map(str, raw)) - names - set(nested))
    if unknown:
        raise NasError(f"{source}: field '{prefix}.{unknown[0]}' is not known: allowed are "
                       f"{', '.join(sorted(names))}")
    try:
        return cls(**{**raw, **nested})
    except InvalidField as e:
        raise InvalidField(f"{prefix}.{e.field}", e.value, e.allowed, source) from None
    except NasError as e:
        raise NasError(f"{source}: in '{prefix}': {e}") from None


# ------------------------------------------------------------------------------------ YAML files

MAX_YAML_BYTES = 1 << 20
"""Study, network and space files are a few KiB; anything past 1 MiB is not one of them."""
MAX_YAML_DEPTH = 32
"""Nesting deeper than any effnas file needs (a space is 5 deep); far deeper would exhaust Python's stack."""


class _Refused(yaml.MarkedYAMLError):
    """A YAML construct effnas refuses, with the fix to tell the user."""

    def __init__(self, problem: str, mark: Any, fix: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what no effnas file needs and what would otherwise be read wrong or not at all:
    aliases (*name: a few nested ones expand into billions of values, "billion laughs"), a key given twice
    in one mapping (YAML would keep the last silently, even of a whole second `proxy:` section) and nesting
    past MAX_YAML_DEPTH (a RecursionError)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"alias *{event.anchor} is not allowed", event.start_mark, "write the value out in full")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _Refused(f"values nested more than {MAX_YAML_DEPTH} deep", self.peek_event().start_mark,
                               "no effnas file nests that deep: check the brackets")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in first:
                raise _Refused(f"key {_shown(key)} is given twice, first at line {first[key].line + 1}",
                               key_node.start_mark, "keep one of them")
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping (study, base-network and space files all come through here); anything that cannot
    be read as one becomes one line naming the file, the position where YAML gives one, and the fix."""
    try:
        if not path.is_file():
            raise NasError(f"{path}: not a regular file: give a study, network or space file (.yaml)")
        if path.stat().st_size > MAX_YAML_BYTES:
            raise NasError(f"{path}: {path.stat().st_size:,} bytes is not a study, network or space file "
                           f"(those are a few KiB; the limit is {MAX_YAML_BYTES:,})")
        text = path.read_text()
        data = yaml.load(text, Loader=_StrictLoader)   # noqa: S506 (a SafeLoader)
    except yaml.reader.ReaderError as e:      # a character YAML does not allow: control characters, NUL bytes
        line = text[:e.position].count("\n") + 1
        raise NasError(f"{path}: not valid YAML at line {line} (character #x{e.character:04x} is not allowed: "
                       f"control characters and NUL bytes cannot appear in YAML): remove it") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise NasError(f"{path}: not valid YAML{where} ({e.problem}): {getattr(e, 'fix', 'fix the syntax')}") \
            from None
    except yaml.YAMLError as e:
        raise NasError(f"{path}: not valid YAML ({str(e).splitlines()[0]}): fix the syntax") from None
    except RecursionError:
        raise NasError(f"{path}: nested too deeply to read: no effnas file nests more than {MAX_YAML_DEPTH} deep; "
                       f"check the brackets") from None
    except (OSError, UnicodeDecodeError) as e:
        raise NasError(f"{path}: cannot read the file ({e})") from None
    if not isinstance(data, dict):
        raise NasError(f"{path}: expected a YAML mapping of fields (name, stem, head, stages, ...), "
                       f"got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------ storage URLs
# A storage URL may hold a password: in its user part (postgresql://user:pw@host/db) or its query
# (?password=pw). Nothing effnas prints or stores holds it: printed URLs go through masked_url, stored
# definitions through without_password, and messages of database drivers through secret_free.

_QUERY_PASSWORD = re.compile(r"(?:^|[?&;])password=([^&;#]*)", re.IGNORECASE)


def password_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of a URL sit, as typed, valid URL or not: in the user part, from the ':' after the
    user name to the last '@' (a password may hold '@', '/' or '?'; `user:pw@host/db` typed without a scheme
    counts too), and each password=... of the query. A file path (sqlite:////path) has no user part."""
    scheme = url.find("://")
    start = scheme + 3 if scheme >= 0 else 0
    in_query = _QUERY_PASSWORD.search(url, start)
    query = in_query.start() if in_query else len(url)
    at = url.rfind("@", start, query)
    spans = []
    if at > start and url[start] != "/":
        colon = url.find(":", start, at)
        if colon >= 0:
            spans.append((colon + 1, at))
    return spans + [m.span(1) for m in _QUERY_PASSWORD.finditer(url, query)]


def masked_url(url: str) -> str:
    """A storage URL fit to print: every password in it, if any, replaced by ***. Tables, reports, progress
    lines and error messages show storage URLs only through this."""
    for begin, end in reversed(password_spans(url)):
        url = f"{url[:begin]}***{url[end:]}"
    return url


def without_password(url: str) -> str:
    """A storage URL fit to store (a study's definition): its passwords removed, with the ':' before one in
    the user part and the query parameter that held one."""
    for begin, end in reversed(password_spans(url)):
        if url[begin - 1] == ":":
            url = url[:begin - 1] + url[end:]
        else:       # ?password=pw&x=1 -> ?x=1; ?x=1&password=pw -> ?x=1
            name = url.rfind("password=", 0, begin)
            url = url[:name] + url[end + 1:] if url[end:end + 1] in ("&", ";") else url[:name - 1] + url[end:]
    return url


def secret_free(text: str, url: str) -> str:
    """`text` (a database driver's message) with the passwords of `url` replaced by ***: as typed,
    percent-decoded, and each part between '@'s (a driver that split the password at an '@' may quote the
    rest as a host name)."""
    from urllib.parse import unquote

    secrets = set()
    for begin, end in password_spans(url):
        for secret in (url[begin:end], unquote(url[begin:end])):
            secrets |= {secret, *(part for part in secret.split("@") if len(part) >= 3)}
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def is_file(path: Path) -> bool:
    """`path.is_file()` for a path a user typed: a name longer than the file system takes (ENAMETOOLONG) or
    one it cannot look at is not a file, where pathlib raises."""
    try:
        return path.is_file()
    except OSError:
        return False
