"""A family as one plain-PyTorch module that needs no effnas: the hand-off to any training script.

The module is `standalone.py` beside this file, copied as it is, with its two placeholder lines replaced by
the family's members: each member's configuration, as plain data, under its name. Its layers and parameter
names are nas.builder's, so effnas's state dicts load into it (tests/test_export.py checks parity on real
families: parameter counts, and logits with effnas's weights loaded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError
from nas.spec import NetworkSpec

if TYPE_CHECKING:
    from nas.family import Member

TEMPLATE = Path(__file__).with_name("standalone.py")
_PLACEHOLDER = "NUM_CLASSES = 1000\nMEMBERS: dict[str, dict[str, Any]] = {}\n"
_STAGE_FIELDS = ("block", "expand", "kernel", "stride", "channels", "repeats", "se")


def member_config(phi: float, spec: NetworkSpec) -> dict[str, Any]:
    """One entry of the module's MEMBERS: what the module builds from (stages, stem, head, activation, dropout,
    drop-connect) and what the member is (phi, width and depth multipliers, the resolution it was scaled for)."""
    return {
        "phi": phi, "width": round(spec.width_mult, 4), "depth": round(spec.depth_mult, 4),
        "resolution": spec.resolution, "activation": spec.activation,
        "stem": spec.stem_channels, "stem_stride": spec.stem_stride, "head": spec.head_channels,
        "dropout": spec.dropout, "drop_connect": spec.drop_connect,
        "stages": [{f: getattr(s, f) for f in _STAGE_FIELDS} for s in spec.stages],
    }


def module_name(family: str) -> str:
    """The file stem a family's module is written under: its base network's name as a Python identifier
    (other characters become '_'), so that `from <name> import build` works."""
    name = re.sub(r"\W", "_", family, flags=re.ASCII)
    return f"_{name}" if name[:1].isdigit() else name


def module_source(members: Sequence[Member], num_classes: int = 1000) -> str:
    """The module's text: the template with `members` (and `num_classes`, build's default) written in."""
    names = [spec.name for _, spec in members]
    if not names:
        raise NasError("no family members to export: give at least one phi")
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise NasError(f"two members are named {twice}: give each phi once")
    template = TEMPLATE.read_text()
    assert template.count(_PLACEHOLDER) == 1, f"{TEMPLATE} lost its placeholder lines"
    table = "".join(f"    {_literal(spec.name)}: {_config_literal(member_config(phi, spec))},\n"
                    for phi, spec in members)
    filled = f"NUM_CLASSES = {num_classes}\nMEMBERS: dict[str, dict[str, Any]] = {{\n{table}}}\n"
    return template.replace(_PLACEHOLDER, filled)


def export_pytorch(members: Sequence[Member], path: str | Path, num_classes: int = 1000) -> Path:
    """Write `members` as one self-contained PyTorch module at `path` (a .py file: `build(name)` makes each
    member, MEMBERS holds their configurations; its docstring says how to train it and load weights).
    `num_classes` is `build`'s default classifier size; `path`'s folder is made when missing. Returns the path
    written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(module_source(members, num_classes))
    return path


def _literal(value: Any) -> str:
    """Python source for a str, int, float or bool (strings in double quotes, as the template writes them)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _config_literal(config: dict[str, Any], width: int = 110) -> str:
    """A member's configuration as readable source: its scalars over a line or two, one line per stage."""
    lines: list[str] = []
    for item in (f'"{k}": {_literal(v)},' for k, v in config.items() if k != "stages"):
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(item)
    stages = [f'    {{{", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in stage.items())}}},'
              for stage in config["stages"]]
    body = "".join(f"        {line}\n" for line in [*lines, '"stages": [', *stages, "],"])
    return f"{{\n{body}    }}"
