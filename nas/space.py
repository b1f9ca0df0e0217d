"""Block-level search spaces: a base network plus per-stage choices (MnasNet-style).

A space file is a base-network file (docs/spaces.md) with a `choices:` section:

    choices:
      kernel: [3, 5, 7]          # depthwise (or fused) kernel
      expand: [1, 3, 4, 6]       # expansion ratio
      se: [0.0, 0.25]            # squeeze-excite ratio (0 = none)
      repeats: [-1, 0, 1]        # offsets from each stage's base repeats
      block: [mbconv]            # and/or fused_mbconv
      channels: [0.75, 1.0, 1.25]   # optional: multipliers of each stage's output channels
      fixed_stages: [0]          # optional: stages kept exactly as in the base

Every stage not fixed picks one value of each. A choice that cannot make a valid network at a stage
(a repeat offset that empties a stage, where its stride and channel change live) is dropped for that
stage when the space is loaded, so no trial is spent on it; `apply` rejects an explicit invalid
assignment with a message naming the stage and the fix. Fused-MBConv stages take no SE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from nas.errors import NasError
from nas.scaling import round_filters
from nas.spec import BLOCK_TYPES, NetworkSpec, read_yaml, resolve_space_path, spec_from_dict, validate
from nas.validation import is_int, is_number, require

CHOICE_KEYS = ("kernel", "expand", "se", "repeats", "block", "channels")


@dataclass(frozen=True)
class StageChoices:
    """The values one stage may take (absolute repeats and channels, valid at this stage)."""

    kernel: tuple[int, ...]
    expand: tuple[int, ...]
    se: tuple[float, ...]
    repeats: tuple[int, ...]
    block: tuple[str, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class BlockSpace:
    name: str
    base: NetworkSpec
    stages: tuple[StageChoices | None, ...]     # None: a fixed stage
    source: str = "<space>"

    @property
    def size(self) -> int:
        """How many distinct networks the space holds (fused stages count no SE variants)."""
        n = 1
        for st in self.stages:
            if st is None:
                continue
            per_block = sum(len(st.se) if b == "mbconv" else 1 for b in st.block)
            n *= len(st.kernel) * len(st.expand) * len(st.repeats) * len(st.channels) * per_block
        return n

    def sample(self, trial: optuna.Trial) -> NetworkSpec:
        """Draw one network; parameter names are s<stage>_<choice>."""
        picks: dict[str, Any] = {}
        for i, st in enumerate(self.stages):
            if st is None:
                continue
            for key in ("block", "kernel", "expand", "repeats", "channels"):
                values = getattr(st, key)
                picks[f"s{i}_{key}"] = trial.suggest_categorical(f"s{i}_{key}", list(values))
            if picks[f"s{i}_block"] == "mbconv":
                picks[f"s{i}_se"] = trial.suggest_categorical(f"s{i}_se", list(st.se))
        return self.apply(picks)

    def apply(self, picks: dict[str, Any]) -> NetworkSpec:
        """The network for an assignment {s<i>_<choice>: value}; unset choices keep the base's value."""
        unknown = [k for k in picks if not _known_pick(k, len(self.stages))]
        if unknown:
            raise NasError(f"choice '{unknown[0]}' is not known: use s<stage>_<{'|'.join(CHOICE_KEYS)}> "
                           f"with stage 0..{len(self.stages) - 1}")
        stages = []
        for i, base_st in enumerate(self.base.stages):
            get: Callable[..., Any] = lambda key, default, i=i: picks.get(f"s{i}_{key}", default)
            block = get("block", base_st.block)
            se = get("se", base_st.se if block == "mbconv" else 0.0)
            if block == "fused_mbconv" and se:
                raise NasError(f"stage {i}: fused_mbconv takes no squeeze-excite, but se {se} was chosen: "
                               f"choose se 0 or block mbconv")
            repeats = get("repeats", base_st.repeats)
            if repeats < 1:
                raise NasError(f"stage {i}: {repeats} repeats would remove the stage and the stride "
                               f"{base_st.stride} and channel change it carries: choose at least 1")
            stages.append(replace(base_st, block=block, kernel=get("kernel", base_st.kernel),
                                  expand=get("expand", base_st.expand), se=se, repeats=repeats,
                                  channels=get("channels", base_st.channels)))
        return validate(replace(self.base, stages=tuple(stages)), f"{self.source} (chosen network)")


def _known_pick(key: str, n_stages: int) -> bool:
    stage, _, choice = key.partition("_")
    return stage[:1] == "s" and stage[1:].isdigit() and int(stage[1:]) < n_stages and choice in CHOICE_KEYS


def load_space(name_or_path: str | Path) -> BlockSpace:
    """Read a block-level space; every choice is checked against what each stage allows."""
    path = resolve_space_path(name_or_path)
    d = read_yaml(path)
    src = str(path)
    base = spec_from_dict(d, source=src)
    raw = d.get("choices")
    if not isinstance(raw, dict):
        raise NasError(f"{src}: field 'choices' is missing: a block-level space lists per-stage choices "
                       f"(kernel, expand, se, repeats, block, channels); see docs/spaces.md")
    allowed = set(CHOICE_KEYS) | {"fixed_stages"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise NasError(f"{src}: field 'choices.{unknown[0]}' is not known: allowed are {', '.join(sorted(allowed))}")

    def values(key: str, ok, allowed_text: str) -> tuple | None:
        if key not in raw:
            return None
        v = raw[key]
        require(isinstance(v, list) and bool(v) and all(ok(x) for x in v), src, f"choices.{key}", v,
                f"a non-empty list of {allowed_text}")
        return tuple(dict.fromkeys(v))

    kernel = values("kernel", lambda x: is_int(x) and x % 2 == 1 and 1 <= x <= 11, "odd integers in 1..11")
    expand = values("expand", lambda x: is_int(x) and 1 <= x <= 12, "integers in 1..12")
    se = values("se", lambda x: is_number(x) and 0 <= x <= 1, "ratios in [0, 1]")
    offsets = values("repeats", is_int, "integer offsets from the base repeats, such as -1, 0, 1")
    block = values("block", lambda x: x in BLOCK_TYPES, f"block types ({', '.join(BLOCK_TYPES)})")
    channels = values("channels", lambda x: is_number(x) and x > 0, "positive multipliers of the stage's channels")
    fixed = raw.get("fixed_stages", [])
    require(isinstance(fixed, list) and all(is_int(i) and 0 <= i < len(base.stages) for i in fixed), src,
            "choices.fixed_stages", fixed, f"a list of stage indices 0..{len(base.stages) - 1}")

    stages: list[StageChoices | None] = []
    for i, st in enumerate(base.stages):
        if i in fixed:
            stages.append(None)
            continue
        reps = tuple(r for r in ((st.repeats + o for o in offsets) if offsets else (st.repeats,)) if r >= 1)
        if not reps:
            assert offsets is not None, "the base's repeats are at least 1, so only offsets can empty them"
            raise NasError(f"{src}: choices.repeats {list(offsets)} leave stage {i} ({st.repeats} repeats) with no "
                           f"block: add offset 0, or list the stage in choices.fixed_stages")
        chans = tuple(dict.fromkeys(round_filters(st.channels, m) for m in channels)) if channels else (st.channels,)
        stages.append(StageChoices(kernel=kernel or (st.kernel,), expand=expand or (st.expand,),
                                   se=se or (st.se,), repeats=reps, block=block or (st.block,), channels=chans))
    return BlockSpace(name=base.name, base=base, stages=tuple(stages), source=src)


def export_spec(spec: NetworkSpec, name: str, description: str) -> NetworkSpec:
    """A chosen network as a base-network file of its own (no choices): what scale and materialize take."""
    return replace(spec, name=name, description=description)

