"""Typed network specs: the single source of a network's shape.

A base network is a YAML stage table (see docs/spaces.md). `load_spec` reads and validates it into a
frozen `NetworkSpec`; `scaling.scale` turns a base spec into a concrete, rounded member of a family;
`builder.build_model` turns any spec into a `torch.nn.Module`. Nothing outside this file knows the
YAML layout, and nothing outside the YAML files knows B0's shape.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import itertools
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import NasError
from nas.validation import FILE_NAME, is_int, is_number, read_yaml, require

BLOCK_TYPES = ("mbconv", "fused_mbconv")
MAX_RESOLUTION = 4096
"""Networks above this many pixels a side are refused before building (B7 is 600 px)."""
MAX_REPEATS = 1000
"""Blocks in one stage (B7's longest has 13): more is a typo that would build for minutes before failing."""
ACTIVATIONS = ("silu", "relu6", "relu", "hardswish")
SPACES_DIR = Path(str(importlib.resources.files("nas") / "spaces"))
"""Base networks and block-level spaces shipped in the package (search_spaces/ in a checkout points here)."""


@dataclass(frozen=True)
class StageSpec:
    """A run of `repeats` identical blocks; only the first one strides and changes channels."""

    block: str
    expand: int
    kernel: int
    stride: int
    channels: int
    repeats: int
    se: float = 0.0
    depth_scaled: bool = True


@dataclass(frozen=True)
class BlockSpec:
    """One concrete block, as the builder and the latency table see it."""

    block: str
    in_channels: int
    out_channels: int
    expand: int
    kernel: int
    stride: int
    se: float
    drop_connect: float
    stage: int


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: stem, stages, head and regularisation.

    `width_mult` and `depth_mult` record how a scaled member was derived from its base (1.0 for a base
    network); channels and repeats in `stages` are always the concrete, rounded values.
    """

    name: str
    stages: tuple[StageSpec, ...]
    stem_channels: int = 32
    stem_stride: int = 2
    stem_width_scaled: bool = True
    head_channels: int = 1280
    head_width_scaled: bool = True
    activation: str = "silu"
    drop_connect: float = 0.2
    dropout: float = 0.2
    resolution: int = 224
    width_mult: float = 1.0
    depth_mult: float = 1.0
    description: str = dataclasses.field(default="", compare=False)

    @property
    def is_scaled(self) -> bool:
        return self.width_mult != 1.0 or self.depth_mult != 1.0

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Total stride (stem stride times every stage stride so far) at the output of each stage.

        The one place the stride chain is computed: the builder, FLOP and latency code all read it here.
        A stage's output side is ceil(input side / its total stride)."""
        return tuple(itertools.accumulate((s.stride for s in self.stages), operator.mul,
                                          initial=self.stem_stride))[1:]

    @property
    def total_stride(self) -> int:
        return self.stage_strides[-1]

    def blocks(self) -> tuple[BlockSpec, ...]:
        """Expand the stage table into blocks, with the drop-connect rate growing linearly by index."""
        out, in_ch, index, total = [], self.stem_channels, 0, self.num_blocks
        for stage_index, st in enumerate(self.stages):
            for r in range(st.repeats):
                out.append(BlockSpec(
                    block=st.block, in_channels=in_ch, out_channels=st.channels, expand=st.expand,
                    kernel=st.kernel, stride=st.stride if r == 0 else 1, se=st.se,
                    drop_connect=self.drop_connect * index / total, stage=stage_index,
                ))
                in_ch, index = st.channels, index + 1
        return tuple(out)

    def replace(self, **changes: Any) -> NetworkSpec:
        return validate(dataclasses.replace(self, **changes), f"network {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The YAML layout (the inverse of `spec_from_dict`)."""
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d.update(resolution=self.resolution, activation=self.activation,
                 drop_connect=self.drop_connect, dropout=self.dropout)
        if self.is_scaled:
            d["scaled"] = {"width": self.width_mult, "depth": self.depth_mult}
        d["stem"] = {"channels": self.stem_channels, "stride": self.stem_stride,
                     "width_scaled": self.stem_width_scaled}
        d["head"] = {"channels": self.head_channels, "width_scaled": self.head_width_scaled}
        d["stages"] = [_stage_to_dict(s) for s in self.stages]
        return d

    def to_yaml(self) -> str:
        return _dump_yaml(self.to_dict())


def _stage_to_dict(s: StageSpec) -> dict[str, Any]:
    d = {"block": s.block, "expand": s.expand, "kernel": s.kernel, "stride": s.stride,
         "channels": s.channels, "repeats": s.repeats, "se": s.se}
    if not s.depth_scaled:
        d["depth_scaled"] = False
    return d


class _FlowStages(yaml.SafeDumper):
    """Writes each stage on one line, so a saved spec reads like the stage table it is."""

    def represent_dict(self, data: dict) -> Any:
        node = super().represent_dict(data)
        if "block" in data or set(data) <= {"channels", "stride", "width_scaled", "width", "depth"}:
            node.flow_style = True
        return node


_FlowStages.add_representer(dict, _FlowStages.represent_dict)


def _dump_yaml(d: dict[str, Any]) -> str:
    return yaml.dump(d, Dumper=_FlowStages, sort_keys=False, width=120)


# ---------------------------------------------------------------------------------------- loading

_TOP_KEYS = {"name", "description", "resolution", "activation", "drop_connect", "dropout", "stem", "head",
             "stages", "scaled", "choices"}   # choices: read by block-level search (nas.space), ignored here
_STAGE_KEYS = {"block", "expand", "kernel", "stride", "channels", "repeats", "se", "depth_scaled"}


def known_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the name of a packaged base network or space (with or without .yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for candidate in (SPACES_DIR / f"{name_or_path}.yaml", SPACES_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    if p.suffix in (".yaml", ".yml") or "/" in str(name_or_path):
        raise NasError(f"space file {name_or_path} does not exist: check the path")
    raise NasError(f"unknown search space '{name_or_path}': give a YAML file path or one of "
                   f"{', '.join(known_spaces())}")


def space_file_has_choices(name_or_path: str | Path) -> bool:
    """Whether a space file is a block-level space (it lists per-stage `choices`), not just a base network."""
    return "choices" in read_yaml(resolve_space_path(name_or_path))


def load_spec(name_or_path: str | Path) -> NetworkSpec:
    """Read and validate a base-network file; errors name the file, the field and what is allowed."""
    path = resolve_space_path(name_or_path)
    return spec_from_dict(read_yaml(path), source=str(path))


def spec_from_dict(d: dict[str, Any], source: str = "<spec>") -> NetworkSpec:
    def fail(field: str, msg: str) -> NasError:
        return NasError(f"{source}: field '{field}' {msg}")

    unknown = set(d) - _TOP_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"is not known: allowed fields are {', '.join(sorted(_TOP_KEYS))}")
    for required in ("name", "stem", "stages"):
        if required not in d:
            raise fail(required, "is missing")
    stem, head = d["stem"], d.get("head", {})
    for field, value in (("stem", stem), ("head", head)):
        if not isinstance(value, dict):
            raise fail(field, "must be a mapping such as {channels: 32, stride: 2}")
    stages_raw = d["stages"]
    if not isinstance(stages_raw, list) or not stages_raw:
        raise fail("stages", "must be a non-empty list of stages")
    stages = []
    for i, raw in enumerate(stages_raw):
        if not isinstance(raw, dict):
            raise fail(f"stages[{i}]", "must be a mapping such as {block: mbconv, expand: 6, kernel: 3, ...}")
        unknown = set(raw) - _STAGE_KEYS
        if unknown:
            raise fail(f"stages[{i}].{sorted(unknown)[0]}",
                       f"is not known: allowed are {', '.join(sorted(_STAGE_KEYS))}")
        missing = [k for k in ("block", "expand", "kernel", "stride", "channels", "repeats") if k not in raw]
        if missing:
            raise fail(f"stages[{i}].{missing[0]}", "is missing")
        stages.append(StageSpec(
            block=raw["block"], expand=raw["expand"], kernel=raw["kernel"], stride=raw["stride"],
            channels=raw["channels"], repeats=raw["repeats"], se=raw.get("se", 0.0),
            depth_scaled=raw.get("depth_scaled", True)))
    scaled = d.get("scaled", {})
    if not isinstance(scaled, dict):
        raise fail("scaled", "must be a mapping {width: W, depth: D}")
    spec = NetworkSpec(
        name=d["name"], description=d.get("description", ""), stages=tuple(stages),
        stem_channels=stem.get("channels", 32), stem_stride=stem.get("stride", 2),
        stem_width_scaled=stem.get("width_scaled", True),
        head_channels=head.get("channels", 1280), head_width_scaled=head.get("width_scaled", True),
        activation=d.get("activation", "silu"), drop_connect=d.get("drop_connect", 0.2),
        dropout=d.get("dropout", 0.2), resolution=d.get("resolution", 224),
        width_mult=scaled.get("width", 1.0), depth_mult=scaled.get("depth", 1.0))
    return validate(spec, source)


def validate(spec: NetworkSpec, source: str = "<spec>") -> NetworkSpec:
    """Check every field; raise NasError naming the first bad one and what is allowed."""
    def check(ok: bool, field: str, allowed: str, value: Any) -> None:
        require(ok, source, field, value, allowed)

    check(FILE_NAME(spec.name), "name", FILE_NAME.allowed, spec.name)
    check(spec.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}", spec.activation)
    for field in ("drop_connect", "dropout"):
        v = getattr(spec, field)
        check(is_number(v) and 0 <= v < 1, field, "a number in [0, 1)", v)
    check(is_int(spec.resolution) and 8 <= spec.resolution <= MAX_RESOLUTION, "resolution",
          f"an integer in 8..{MAX_RESOLUTION} (pixels a side)", spec.resolution)
    check(is_int(spec.stem_channels) and spec.stem_channels >= 1, "stem.channels", "an integer >= 1",
          spec.stem_channels)
    check(spec.stem_stride in (1, 2), "stem.stride", "1 or 2 (1 for small images)", spec.stem_stride)
    check(is_int(spec.head_channels) and spec.head_channels >= 1, "head.channels", "an integer >= 1",
          spec.head_channels)
    for field in ("stem_width_scaled", "head_width_scaled"):
        check(isinstance(getattr(spec, field), bool), field.replace("_", ".", 1), "true or false",
              getattr(spec, field))
    for field in ("width_mult", "depth_mult"):
        v = getattr(spec, field)
        check(is_number(v) and v > 0, f"scaled.{field.split('_')[0]}", "a number > 0", v)
    for i, st in enumerate(spec.stages):
        f = f"stages[{i}]"
        check(st.block in BLOCK_TYPES, f"{f}.block", f"one of {', '.join(BLOCK_TYPES)}", st.block)
        check(is_int(st.expand) and 1 <= st.expand <= 12, f"{f}.expand", "an integer in 1..12", st.expand)
        check(is_int(st.kernel) and st.kernel % 2 == 1 and 1 <= st.kernel <= 11, f"{f}.kernel",
              "an odd integer in 1..11", st.kernel)
        check(st.stride in (1, 2), f"{f}.stride", "1 or 2", st.stride)
        check(is_int(st.channels) and st.channels >= 1, f"{f}.channels", "an integer >= 1", st.channels)
        check(is_int(st.repeats) and 1 <= st.repeats <= MAX_REPEATS, f"{f}.repeats",
              f"an integer in 1..{MAX_REPEATS} (a stage with no block would drop its stride and channel change)",
              st.repeats)
        check(is_number(st.se) and 0 <= st.se <= 1, f"{f}.se", "a squeeze ratio in [0, 1] (0 = no SE)", st.se)
        check(isinstance(st.depth_scaled, bool), f"{f}.depth_scaled", "true or false", st.depth_scaled)
        if st.block == "fused_mbconv":
            check(st.se == 0, f"{f}.se", "0 for fused_mbconv (Fused-MBConv has no squeeze-excite)", st.se)
    return spec


def save_spec(spec: NetworkSpec, path: str | Path) -> Path:
    """Write `spec` as a base-network file, checked first as a loaded one is (its name included: `nas arch export
    --name ../x` is refused here, not when the file is read back)."""
    path = Path(path)
    validate(spec, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml())
    return path
