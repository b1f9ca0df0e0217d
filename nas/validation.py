"""The one way every loader checks its input: study files, training and latency settings, base networks,
block-level spaces and data sources.

A setting is a dataclass field whose allowed values sit beside it (`checked(default, rule)`), and a
`Rule` is a predicate with the words a user reads when it fails. `check_fields` runs the rules of a
dataclass (from `__post_init__`, so settings built on the command line get the same checks as settings
read from a file); `from_mapping` builds one from a YAML mapping and names the file and the field in the
one-line error. `require` is the same error for checks that do not fit a field rule.

Messages have one shape: "<source>: field '<field>' is <value>: must be <allowed>".
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

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
